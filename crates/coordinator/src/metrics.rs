//! Prometheus metrics at `/metrics`. Counters are updated as things happen; gauges that
//! describe the database (devices by state, jobs by state) are read at scrape time.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<Labels, Counter>,
    pub heartbeats: Counter,
    pub worker_sessions: Family<Labels, Counter>,
    pub workers_connected: Gauge,
    pub devices: Family<Labels, Gauge>,
    pub jobs: Family<Labels, Gauge>,
    pub clusters_running: Gauge,
    pub proofs: Family<Labels, Counter>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("herd");
        let metrics = Metrics {
            http_requests: Family::default(),
            heartbeats: Counter::default(),
            worker_sessions: Family::default(),
            workers_connected: Gauge::default(),
            devices: Family::default(),
            jobs: Family::default(),
            clusters_running: Gauge::default(),
            proofs: Family::default(),
            registry: Registry::default(),
        };
        registry.register("http_requests", "HTTP requests by method, route and status", metrics.http_requests.clone());
        registry.register("worker_heartbeats", "Heartbeats received from workers", metrics.heartbeats.clone());
        registry.register("worker_handshakes", "Worker handshakes by outcome", metrics.worker_sessions.clone());
        registry.register("workers_connected", "Workers connected now", metrics.workers_connected.clone());
        registry.register("devices", "Devices by state", metrics.devices.clone());
        registry.register("jobs", "Jobs by state", metrics.jobs.clone());
        registry.register("clusters_running", "Clusters running now", metrics.clusters_running.clone());
        registry.register("proofs", "Proofs of compute by outcome", metrics.proofs.clone());
        Metrics { registry, ..metrics }
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}
