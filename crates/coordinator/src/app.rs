//! Shared state of a running coordinator.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herd_core::{JobId, Timestamp};
use tokio::sync::{broadcast, watch};

use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// `sqlite://PATH` (created if missing).
    pub db_url: String,
    pub listen: SocketAddr,
    /// Told to every worker in its welcome.
    pub heartbeat_interval: Duration,
    /// A device is offline after this many intervals without a word from it.
    pub missed_heartbeats_max: u32,
    /// How often reconcilers look for silent devices and expired leases.
    pub reconcile_interval: Duration,
}

impl CoordinatorConfig {
    pub fn new(db_url: impl Into<String>, listen: SocketAddr) -> CoordinatorConfig {
        CoordinatorConfig {
            db_url: db_url.into(),
            listen,
            heartbeat_interval: Duration::from_secs(5),
            missed_heartbeats_max: 3,
            reconcile_interval: Duration::from_secs(1),
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
    pub hub: Hub,
    pub config: CoordinatorConfig,
    pub job_events: broadcast::Sender<JobId>,
    pub metrics: Metrics,
    pub shutdown: watch::Receiver<bool>,
}

#[derive(Clone)]
pub struct App(Arc<AppInner>);

impl App {
    pub fn new(store: Store, config: CoordinatorConfig, shutdown: watch::Receiver<bool>) -> App {
        let (job_events, _) = broadcast::channel(JOB_EVENTS_CAPACITY);
        App(Arc::new(AppInner { store, hub: Hub::default(), config, job_events, metrics: Metrics::new(), shutdown }))
    }

    pub fn notify_job(&self, job: &JobId) {
        // No receivers is fine: nobody is following.
        let _ = self.job_events.send(job.clone());
    }
}

impl Deref for App {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// The coordinator's one reading of the wall clock (for stored timestamps).
pub fn now() -> Timestamp {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp(since_epoch.as_millis() as i64)
}
