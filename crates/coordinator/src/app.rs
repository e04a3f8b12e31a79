//! Shared state of a running coordinator.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herd_core::{JobId, Timestamp};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{broadcast, watch, Notify};

use crate::books::SharedBooks;
use crate::hub::Hub;
use crate::market::SharedMarket;
use crate::metrics::Metrics;
use crate::oracle::{FixedPrice, PriceOracle};
use crate::proving::{ProofConfig, Proofs};
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// `sqlite://PATH` (created if missing) or `postgres://USER[:PASSWORD]@HOST[:PORT]/DB`.
    pub db_url: String,
    /// Where the coordinator's keys live (the ledger key that signs the journal, the overlay
    /// CA key), each mode 0600. Default: beside a SQLite file. A PostgreSQL network must name
    /// one: the keys outlive every process and every replica needs the same ones.
    pub key_dir: Option<std::path::PathBuf>,
    /// The NATS server replicas talk through (`nats://HOST:PORT`); only with PostgreSQL.
    pub bus: Option<String>,
    pub listen: SocketAddr,
    /// Told to every worker in its welcome.
    pub heartbeat_interval: Duration,
    /// A device is offline after this many intervals without a word from it.
    pub missed_heartbeats_max: u32,
    /// How often reconcilers look for silent devices and expired leases.
    pub reconcile_interval: Duration,
    /// A development network: `POST /v1/wallet/deposit` mints test funds (a faucet).
    pub faucet: bool,
    /// The IO price oracle (USD micros per IO); fixed on a devnet.
    pub io_price_micros: i64,
    /// Who receives the 500M IO minted at genesis (minor units); default: all to the treasury.
    /// The amounts must sum to exactly 500M IO.
    pub genesis_allocations: Vec<(herd_ledger::AccountKey, u64)>,
    /// SPL token mints payouts are requested in.
    pub usdc_mint: String,
    pub io_mint: String,
    /// Proof of compute: challenge sizes, re-checks, simulated devices, slashing.
    pub proof: ProofConfig,
    /// Share of a device's stake burned when it drops out of a hired lease, basis points
    /// (its reputation drops too).
    pub abandon_slash_bps: u32,
    /// Requests per client address on the credential endpoints (challenges, registration,
    /// API keys, sign-in links and forms).
    pub auth_rate_limit: crate::rate_limit::RateLimit,
    /// Every `/v1` call, per API key and per client address.
    pub api_rate_limits: crate::rate_limit::ApiRateLimits,
    /// Behind a reverse proxy: the client is the last address in `X-Forwarded-For`. Only
    /// when every request comes through that proxy (anyone else could claim any address).
    pub trust_forwarded_for: bool,
    /// Serve HTTPS with this certificate and key instead of plain HTTP.
    pub tls: Option<crate::tls_server::TlsFiles>,
    /// Run the lighthouse and relay and give every lease whose nodes can join it a private
    /// overlay network; None: nodes reach each other at their advertised addresses (a
    /// trusted LAN, or one machine).
    pub overlay: Option<crate::overlay::OverlayConfig>,
}

impl CoordinatorConfig {
    pub fn new(db_url: impl Into<String>, listen: SocketAddr) -> CoordinatorConfig {
        CoordinatorConfig {
            db_url: db_url.into(),
            key_dir: None,
            bus: None,
            listen,
            heartbeat_interval: Duration::from_secs(5),
            missed_heartbeats_max: 3,
            reconcile_interval: Duration::from_secs(1),
            faucet: false,
            genesis_allocations: vec![(herd_ledger::AccountKey::Treasury, herd_ledger::emission::GENESIS_SUPPLY)],
            io_price_micros: 2_000_000,
            usdc_mint: "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v".into(),
            io_mint: "BZLbGTNCSFfoth2GYDtwr7e4imWzpR5jqcUuGEwr646K".into(),
            proof: ProofConfig::default(),
            auth_rate_limit: Default::default(),
            api_rate_limits: Default::default(),
            trust_forwarded_for: false,
            tls: None,
            overlay: None,
            abandon_slash_bps: 100,
        }
    }

    /// Where the ledger key is (None: ephemeral, for in-memory test databases).
    pub fn ledger_key_path(&self) -> Option<std::path::PathBuf> {
        match &self.key_dir {
            Some(dir) => Some(dir.join("ledger.key")),
            None => crate::books::key_path_for(&self.db_url),
        }
    }

    /// Where the overlay CA key is (None: ephemeral).
    pub fn overlay_ca_key_path(&self) -> Option<std::path::PathBuf> {
        match &self.key_dir {
            Some(dir) => Some(dir.join("overlay-ca.key")),
            None => crate::overlay::ca_key_path(&self.db_url),
        }
    }

    pub fn offline_after(&self) -> Duration {
        self.heartbeat_interval * self.missed_heartbeats_max
    }
}

/// Job log/state change notices; followers re-read the database when woken, so a lagging
/// receiver loses nothing but a wake-up.
pub const JOB_EVENTS_CAPACITY: usize = 1024;

pub struct AppInner {
    pub store: Store,
    pub oracle: Box<dyn PriceOracle>,
    pub market: SharedMarket,
    pub books: SharedBooks,
    /// Worker sessions in progress; shutdown waits for them before closing the database.
    pub sessions: SessionTracker,
    pub hub: Hub,
    pub tunnels: crate::tunnel::Tunnels,
    pub proofs: Proofs,
    pub config: CoordinatorConfig,
    pub job_events: broadcast::Sender<JobId>,
    pub metrics: Metrics,
    pub shutdown: watch::Receiver<bool>,
    /// Ray jobs being resubmitted now (each runs off the reconcile loop, once).
    pub resubmitting: std::sync::Mutex<std::collections::HashSet<JobId>>,
    pub limiter: crate::rate_limit::Limiter,
    pub api_limiters: crate::rate_limit::ApiLimiters,
    pub log_limits: crate::rate_limit::LogLimits,
    /// Operator request ids seen lately (each is single-use).
    pub operator_nonces: crate::operator::Nonces,
    /// The overlay CA and lighthouse, when the network runs one.
    pub overlay: Option<crate::overlay::Overlay>,
    /// Whether this replica does the once-only work now.
    pub leadership: crate::leader::Leadership,
    /// The other replicas (`--bus`); None for a coordinator alone on its database.
    pub bus: std::sync::OnceLock<crate::bus::Bus>,
}

#[derive(Clone)]
pub struct App(Arc<AppInner>);

impl App {
    pub fn new(
        store: Store,
        market: SharedMarket,
        books: SharedBooks,
        config: CoordinatorConfig,
        overlay: Option<crate::overlay::Overlay>,
        shutdown: watch::Receiver<bool>,
    ) -> App {
        let (job_events, _) = broadcast::channel(JOB_EVENTS_CAPACITY);
        App(Arc::new(AppInner {
            oracle: Box::new(FixedPrice(config.io_price_micros)),
            store,
            market,
            books,
            sessions: SessionTracker::default(),
            hub: Hub::default(),
            tunnels: Default::default(),
            proofs: Proofs::default(),
            config,
            job_events,
            metrics: Metrics::new(),
            shutdown,
            resubmitting: Default::default(),
            limiter: Default::default(),
            api_limiters: Default::default(),
            log_limits: Default::default(),
            operator_nonces: Default::default(),
            overlay,
            leadership: Default::default(),
            bus: Default::default(),
        }))
    }

    /// A job has new output or a new state: wakes its followers here and on every replica.
    pub fn notify_job(&self, job: &JobId) {
        self.wake_job_followers(job);
        if let Some(bus) = self.bus.get() {
            bus.announce_job(job);
        }
    }

    /// Wakes this replica's followers of `job`.
    pub fn wake_job_followers(&self, job: &JobId) {
        // No receivers is fine: nobody is following.
        let _ = self.job_events.send(job.clone());
    }

    /// Whether other replicas may share the database (there is a bus to them).
    pub fn replicated(&self) -> bool {
        self.bus.get().is_some()
    }
}

impl Deref for App {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// The coordinator's one reading of the wall clock (for stored timestamps).
#[allow(clippy::disallowed_methods)] // the one marked place
pub fn now() -> Timestamp {
    #[cfg(test)]
    if let Some(ms) = simulation::NOW.with(std::cell::Cell::get) {
        return Timestamp(ms);
    }
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp(since_epoch.as_millis() as i64)
}

/// Counts live worker sessions. Upgraded WebSockets outlive the HTTP server's graceful
/// shutdown, so the coordinator waits on this before it closes the database under them.
#[derive(Default)]
pub struct SessionTracker {
    live: AtomicUsize,
    idle: Notify,
}

pub struct SessionGuard<'a>(&'a SessionTracker);

impl SessionTracker {
    pub fn enter(&self) -> SessionGuard<'_> {
        self.live.fetch_add(1, Ordering::SeqCst);
        SessionGuard(self)
    }

    pub async fn wait_idle(&self) {
        loop {
            let idle = self.idle.notified();
            if self.live.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Hooks of the deterministic simulation (tests only): the clock and the entropy of new ids
/// come from the simulation on the thread that runs it (a current-thread runtime), and from
/// the system everywhere else.
#[cfg(test)]
pub mod simulation {
    use std::cell::{Cell, RefCell};

    use rand::rngs::StdRng;

    thread_local! {
        pub(crate) static NOW: Cell<Option<i64>> = const { Cell::new(None) };
        pub(crate) static ENTROPY: RefCell<Option<StdRng>> = const { RefCell::new(None) };
    }

    pub fn set_now(ms: Option<i64>) {
        NOW.with(|now| now.set(ms));
    }

    pub fn set_entropy(rng: Option<StdRng>) {
        ENTROPY.with(|entropy| *entropy.borrow_mut() = rng);
    }
}
