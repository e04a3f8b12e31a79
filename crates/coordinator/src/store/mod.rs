//! Durable state in SQLite (through sqlx). Architecture invariant: only this module writes SQL,
//! and every statement binds its values (no string-built queries with user input).
//!
//! Writes go through a pool of exactly one connection: SQLite has a single writer anyway, and
//! funnelling writes through one connection makes every multi-statement change (a cluster
//! reservation, a job's tasks) a serialized transaction — the "one committer" that rejects
//! stale placement plans. Reads use a separate pool and never block on writes (WAL).

mod accounts;
pub mod audit;
mod clusters;
mod devices;
mod earnings;
mod explorer;
mod healing;
mod jobs;
mod ledger;
mod market;
mod overlay;
mod payouts;
mod ray;
mod sessions;
#[cfg(test)]
mod snapshot;
mod verifications;

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Row;

pub use audit::NewAudit;
pub use clusters::{NewCluster, StalePlan, Terminated};
pub use devices::{DeviceFilter, HelloOutcome, HelloRefusal};
pub use earnings::{DeviceRewards, Income};
pub use explorer::{Census, ClusterRow, CountrySupply, ImportedDevice, ModelSupply};
pub use healing::{Loss, NotReplaced, Retry, Vacancy};
pub use jobs::{DeviceTask, NewJob};
pub use ledger::{Alongside, SignedEntry};
pub use market::{default_floor_micros, StoredQuote};
pub use overlay::{IssuedCert, OverlayLease, OverlayMember};
pub use ray::{RayJobUpdate, RayReportOutcome};
pub use verifications::{DueDevice, Finish, NewVerification, Verdict};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database holds an invalid value in {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
}

pub type StoreResult<T> = Result<T, StoreError>;

pub(crate) fn corrupt(what: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt { what, detail: detail.to_string() }
}

/// Parses a stored text column into a typed value, reporting corruption instead of panicking.
pub(crate) fn parse_col<T: FromStr>(what: &'static str, text: &str) -> StoreResult<T>
where
    T::Err: ToString,
{
    text.parse::<T>().map_err(|e| corrupt(what, e))
}

pub(crate) fn json_col<T: serde::de::DeserializeOwned>(what: &'static str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| corrupt(what, e))
}

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../../migrations/0001_init.sql")),
    (2, "pairing_codes", include_str!("../../migrations/0002_pairing_codes.sql")),
    (3, "market", include_str!("../../migrations/0003_market.sql")),
    (4, "ledger", include_str!("../../migrations/0004_ledger.sql")),
    (5, "payouts", include_str!("../../migrations/0005_payouts.sql")),
    (6, "stakes", include_str!("../../migrations/0006_stakes.sql")),
    (7, "economy", include_str!("../../migrations/0007_economy.sql")),
    (8, "verification", include_str!("../../migrations/0008_verification.sql")),
    (9, "job_images", include_str!("../../migrations/0009_job_images.sql")),
    (10, "ray", include_str!("../../migrations/0010_ray.sql")),
    (11, "healing", include_str!("../../migrations/0011_healing.sql")),
    (12, "explorer", include_str!("../../migrations/0012_explorer.sql")),
    (13, "web_sessions", include_str!("../../migrations/0013_web_sessions.sql")),
    (14, "owner_indexes", include_str!("../../migrations/0014_owner_indexes.sql")),
    (15, "admission_claims", include_str!("../../migrations/0015_admission_claims.sql")),
    (16, "audit_log", include_str!("../../migrations/0016_audit_log.sql")),
    (17, "proof_backoff", include_str!("../../migrations/0017_proof_backoff.sql")),
    (18, "overlay", include_str!("../../migrations/0018_overlay.sql")),
];

#[derive(Clone)]
pub struct Store {
    read: SqlitePool,
    write: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the database at `url` (`sqlite://PATH` or `sqlite::memory:`)
    /// and applies pending migrations.
    pub async fn open(url: &str) -> StoreResult<Store> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit the API acknowledged survives power loss, not just a crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            // Queuing for the one writer is the design, not a fault; under a flood every acquire
            // is slow, and one WARN line per request is itself a flood: debug only (the wait
            // shows in the API's latency and in /metrics).
            .acquire_slow_threshold(Duration::from_secs(10))
            .acquire_slow_level(log::LevelFilter::Debug)
            .connect_with(options.clone())
            .await?;
        migrate(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .acquire_slow_threshold(Duration::from_secs(10))
            .acquire_slow_level(log::LevelFilter::Debug)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Store { read, write })
    }

    /// Waits for in-flight statements and closes both pools; the WAL is checkpointed as the
    /// last connection closes.
    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }

    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }
}

async fn migrate(pool: &SqlitePool) -> StoreResult<()> {
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        .execute(pool)
        .await?;
    let applied: Vec<i64> =
        sqlx::query("SELECT version FROM schema_migrations").fetch_all(pool).await?.iter().map(|r| r.get(0)).collect();
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        let mut tx = pool.begin().await?;
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_migrations (version, name) VALUES (?, ?)")
            .bind(version)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version, name, "applied database migration");
    }
    Ok(())
}
