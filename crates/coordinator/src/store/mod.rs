//! Durable state in SQLite or PostgreSQL (through sqlx's `Any` driver). Architecture
//! invariant: only this module writes SQL, and every statement binds its values (no
//! string-built queries with user input).
//!
//! One query set serves both backends: placeholders are `$N` (SQLite reads them as numbered
//! parameters, PostgreSQL natively), integers are `BIGINT`/`INTEGER` read as i64, flags are
//! 0/1 integers, JSON is text. Where the dialects differ (JSON paths, string functions) the
//! query asks [`Store::backend`] and the two texts sit side by side.
//!
//! Multi-statement changes (a cluster reservation, a job's tasks) run as serialized
//! transactions — the "one committer" that rejects stale placement plans. On SQLite that is
//! the write pool of exactly one connection (SQLite has one writer anyway); on PostgreSQL,
//! where several coordinator replicas write to one database, [`Store::begin_write`] takes one
//! transaction-scoped advisory lock first, so the same check-then-write sequences stay
//! serialized across replicas. Reads use a separate pool and never block on writes.

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

use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Executor, Row, Transaction};

pub use audit::NewAudit;
pub use clusters::{NewCluster, StalePlan, Terminated};
pub use devices::{DeviceFilter, HelloOutcome, HelloRefusal};
pub use earnings::{DeviceRewards, Income};
pub use explorer::{Census, ClusterRow, CountrySupply, ImportedDevice, ModelSupply};
pub use healing::{Loss, NotReplaced, Retry, Vacancy};
pub use jobs::{DeviceTask, NewJob};
pub use ledger::{Alongside, JournalWrite, SignedEntry};
pub use market::{default_floor_micros, StoredQuote};
pub use overlay::{IssuedCert, OverlayLease, OverlayMember};
pub use ray::{RayJobUpdate, RayReportOutcome};
pub use verifications::{DueDevice, Finish, NewVerification, Verdict};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl(String),
    #[error(
        "refused a fork of the ledger's journal: entry {seq} does not follow the stored head (entry {head}); \
         another writer appended first"
    )]
    Fork { seq: u64, head: u64 },
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

/// A truth value read from a row: a stored 0/1 flag (both backends store flags as integers)
/// or a computed condition (`EXISTS …`, `x IS NULL`: an integer on SQLite, a boolean on
/// PostgreSQL). NULL reads as false.
pub(crate) fn flag<I: sqlx::ColumnIndex<sqlx::any::AnyRow> + Copy>(row: &sqlx::any::AnyRow, column: I) -> bool {
    match row.try_get::<Option<bool>, _>(column) {
        Ok(value) => value.unwrap_or(false),
        Err(_) => row.get::<Option<i64>, _>(column).is_some_and(|v| v != 0),
    }
}

/// `$from, $from+1, …` (n placeholders) for an `IN (…)` list; only placeholders are ever
/// formatted into SQL, every value is bound.
pub(crate) fn placeholders(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// `($1, $2), ($3, $4), …`: the VALUES of a multi-row INSERT of `rows` rows of `columns`.
pub(crate) fn value_rows(rows: usize, columns: usize) -> String {
    (0..rows).map(|r| format!("({})", placeholders(r * columns + 1, columns))).collect::<Vec<_>>().join(", ")
}

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a database URL names.
    pub fn of_url(url: &str) -> StoreResult<Backend> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(url)))
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// `url` with any password replaced by `***`, for logs and messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    // The user info ends at the last '@' before any query: a password may itself hold
    // '@' or '/' (unencoded), and must not leak either way.
    let (address, query) = rest.split_once('?').map_or((rest, None), |(a, q)| (a, Some(q)));
    match address.rsplit_once('@') {
        Some((userinfo, host_and_path)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let query = query.map(|q| format!("?{q}")).unwrap_or_default();
            format!("{scheme}://{user}:***@{host_and_path}{query}")
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show_in_urls() {
        for (url, shown) in [
            ("postgres://herd:s3cret@db/herd", "postgres://herd:***@db/herd"),
            ("postgres://herd:s3cret@db:5432", "postgres://herd:***@db:5432"),
            ("postgres://herd:a/b@c@db/herd?sslmode=require", "postgres://herd:***@db/herd?sslmode=require"),
            ("postgres://herd@db/herd", "postgres://herd@db/herd"),
            ("sqlite:///var/lib/herd/herd.db", "sqlite:///var/lib/herd/herd.db"),
        ] {
            assert_eq!(redact_url(url), shown);
        }
    }

    #[test]
    fn urls_name_their_backend_and_others_are_refused() {
        assert_eq!(Backend::of_url("sqlite://herd.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of_url("postgresql://h/db").unwrap(), Backend::Postgres);
        let refused = Backend::of_url("mysql://u:pw@h/db").unwrap_err().to_string();
        assert!(refused.contains("mysql://u:***@h/db") && refused.contains("sqlite://PATH"), "{refused}");
    }

    #[test]
    fn placeholders_number_rows_of_values() {
        assert_eq!(placeholders(3, 2), "$3, $4");
        assert_eq!(value_rows(2, 2), "($1, $2), ($3, $4)");
    }
}

const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
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

/// PostgreSQL starts at SQLite's version 18 in one file; later versions pair up.
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] =
    &[(18, "schema", include_str!("../../migrations/postgres/0018_schema.sql"))];

/// Advisory locks are per database, and several herd networks may share one database in
/// schemas of their own (tests do): each lock is keyed by the schema too.
const LOCK_SPACE: &str = "hashtext(current_schema())";
/// The advisory lock every PostgreSQL write transaction takes first.
const WRITE_LOCK: &str = "hashtext('herd-write')";

#[derive(Clone)]
pub struct Store {
    read: AnyPool,
    write: AnyPool,
    backend: Backend,
    /// For connections of their own (the leader lock's session).
    url: std::sync::Arc<str>,
}

/// The advisory lock whose holder is the leader replica (session-scoped: it goes with the
/// holder's connection, so a replica that dies loses it at once).
const LEADER_LOCK: &str = "hashtext('herd-leader')";

/// Leadership held on a connection of its own (PostgreSQL), or by being the only process on
/// the database (SQLite: the database file's lock keeps a second coordinator out).
pub enum LeaderLock {
    Sole,
    Session(sqlx::AnyConnection),
}

impl LeaderLock {
    /// Ends the lock's session (PostgreSQL releases session locks with it).
    pub async fn close(self) {
        if let LeaderLock::Session(conn) = self {
            use sqlx::Connection;
            let _ = conn.close().await;
        }
    }

    /// Whether the lock is still held: its session still answers.
    pub async fn still_held(&mut self) -> bool {
        match self {
            LeaderLock::Sole => true,
            LeaderLock::Session(conn) => sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok(),
        }
    }
}

impl Store {
    /// Opens the database at `url` (`sqlite://PATH`, created if missing, or
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB`) and applies pending migrations.
    pub async fn open(url: &str) -> StoreResult<Store> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let (write, read) = match backend {
            Backend::Sqlite => open_sqlite(url).await?,
            Backend::Postgres => open_postgres(url).await?,
        };
        let store = Store { read, write, backend, url: url.into() };
        store.migrate().await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Tries to become the leader replica: None while another replica holds the lock.
    pub async fn try_leader_lock(&self) -> StoreResult<Option<LeaderLock>> {
        if self.backend == Backend::Sqlite {
            return Ok(Some(LeaderLock::Sole));
        }
        use sqlx::Connection;
        let mut conn = sqlx::AnyConnection::connect(&self.url).await?;
        let sql = format!("SELECT pg_try_advisory_lock({LOCK_SPACE}, {LEADER_LOCK})");
        let taken = flag(&sqlx::query(&sql).fetch_one(&mut conn).await?, 0);
        if taken {
            Ok(Some(LeaderLock::Session(conn)))
        } else {
            conn.close().await.ok();
            Ok(None)
        }
    }

    /// Starts a write transaction that is serialized with every other one, on this process
    /// and (PostgreSQL) on every replica sharing the database.
    pub(crate) async fn begin_write(&self) -> StoreResult<Transaction<'static, Any>> {
        let mut tx = self.write.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query(&format!("SELECT pg_advisory_xact_lock({LOCK_SPACE}, {WRITE_LOCK})")).execute(&mut *tx).await?;
        }
        Ok(tx)
    }

    /// Waits for in-flight statements and closes both pools (SQLite checkpoints its WAL as
    /// the last connection closes).
    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }

    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        tx.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL)")
            .await?;
        let applied: Vec<i64> = sqlx::query("SELECT version FROM schema_migrations")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let migrations = match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS,
            Backend::Postgres => POSTGRES_MIGRATIONS,
        };
        for (version, name, sql) in migrations {
            if applied.contains(version) {
                continue;
            }
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)")
                .bind(version)
                .bind(name)
                .execute(&mut *tx)
                .await?;
            tracing::info!(version, name, backend = self.backend.name(), "applied database migration");
        }
        // One transaction (PostgreSQL's DDL is transactional; the advisory lock keeps two
        // replicas starting at once from both migrating).
        tx.commit().await?;
        Ok(())
    }
}

fn pool_options(max: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(30))
        // Queuing for the writer is the design, not a fault; under a flood every acquire is
        // slow, and one WARN line per request is itself a flood: debug only (the wait shows in
        // the API's latency and in /metrics).
        .acquire_slow_threshold(Duration::from_secs(10))
        .acquire_slow_level(log::LevelFilter::Debug)
}

async fn open_sqlite(url: &str) -> StoreResult<(AnyPool, AnyPool)> {
    // Settings go in per connection: WAL (readers never block the writer), FULL sync (a commit
    // the API acknowledged survives power loss, not just a crash), foreign keys, and a busy
    // wait instead of an immediate "database is locked".
    const PRAGMAS: &str =
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;";
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let with_mode = |mode: &str| {
        let rest: Vec<&str> =
            query.into_iter().flat_map(|q| q.split('&')).filter(|p| !p.starts_with("mode=")).collect();
        let mut params = vec![format!("mode={mode}")];
        params.extend(rest.iter().map(|p| p.to_string()));
        format!("{base}?{}", params.join("&"))
    };
    let memory = url.contains(":memory:");
    let write = pool_options(1)
        .min_connections(1)
        .after_connect(|conn, _| Box::pin(async move { conn.execute(PRAGMAS).await.map(|_| ()) }))
        .connect(&if memory { url.to_string() } else { with_mode("rwc") })
        .await?;
    let read = pool_options(4)
        .after_connect(|conn, _| {
            Box::pin(
                async move { conn.execute("PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;").await.map(|_| ()) },
            )
        })
        .connect(&if memory { url.to_string() } else { with_mode("ro") })
        .await?;
    Ok((write, read))
}

async fn open_postgres(url: &str) -> StoreResult<(AnyPool, AnyPool)> {
    // One writer per replica, as on SQLite: a process's writes commit in the order it makes
    // them (the reconcilers, metering and the heartbeat writer rely on that), and the
    // advisory lock orders transactions across replicas.
    let write = pool_options(1).connect(url).await?;
    let read = pool_options(8).connect(url).await?;
    Ok((write, read))
}
