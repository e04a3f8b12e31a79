//! A whole herd network in one process: a coordinator on embedded SQLite, a worker for this
//! machine, and optionally simulated suppliers. Used by `herd up`, `herd demo` and tests.

use crate::instance_lock::InstanceLock;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use herd_coordinator::{CoordinatorConfig, RunningCoordinator};
use herd_core::{Address, DeviceState};
use herd_worker::{keys, AgentConfig, AgentError, RuntimeKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::credentials::sign_in;

/// Seed of the simulated fleet, so every `herd up --sim-workers N` shows the same network.
pub const SIM_FLEET_SEED: u64 = 42;

#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub sim_workers: usize,
    pub local_worker: bool,
    pub country: String,
    pub heartbeat_interval: Duration,
    /// What runs this machine's tasks (simulated devices always use processes).
    pub local_runtime: RuntimeKind,
    /// Ray's managed Python environments, shared by every device of the network (and kept
    /// across networks: installing Ray takes a while).
    pub ray_envs_dir: PathBuf,
    /// Run the overlay lighthouse when `nebula` is installed.
    pub overlay: bool,
}

impl LocalConfig {
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> LocalConfig {
        LocalConfig {
            data_dir,
            listen,
            sim_workers: 0,
            local_worker: true,
            country: "US".into(),
            heartbeat_interval: Duration::from_secs(5),
            local_runtime: RuntimeKind::Process,
            ray_envs_dir: std::env::var_os("HERD_RAY_ENVS_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| crate::credentials::data_dir().join("ray-envs")),
            overlay: false,
        }
    }
}

pub struct LocalNetwork {
    coordinator: RunningCoordinator,
    /// The supplier account that owns this machine's and the simulated devices.
    pub supplier: Address,
    pub devices: usize,
    workers: Vec<JoinHandle<Result<(), AgentError>>>,
    stop_workers: watch::Sender<bool>,
    /// This process owns the data dir and its database while the network runs.
    _locks: (InstanceLock, Option<InstanceLock>),
}

impl LocalNetwork {
    pub async fn start(config: LocalConfig) -> anyhow::Result<LocalNetwork> {
        let lock = InstanceLock::data_dir(&config.data_dir)?;
        LocalNetwork::start_locked(config, lock).await
    }

    /// As `start`, in a data dir this process has already locked.
    pub async fn start_locked(config: LocalConfig, data_dir_lock: InstanceLock) -> anyhow::Result<LocalNetwork> {
        let db_url = format!("sqlite://{}", config.data_dir.join("herd.db").display());
        let db_lock = InstanceLock::database(&db_url)?;
        let mut coordinator_config = CoordinatorConfig::new(db_url, config.listen);
        coordinator_config.heartbeat_interval = config.heartbeat_interval;
        // A local network is a development network: it has a faucet.
        coordinator_config.faucet = true;
        // …whose simulated devices join with token proofs, and whose real one proves itself
        // in a fraction of a second (a production network asks for ~10 s).
        coordinator_config.proof.simulated_allowed = true;
        coordinator_config.proof.policy.target_ms = 300;
        coordinator_config.proof.retry_after = Duration::from_secs(2);
        // Loopback-friendly: any free UDP port on every address, told to workers as the host
        // they reach the coordinator at.
        let nebula = std::path::Path::new(herd_overlay::NEBULA);
        if config.overlay && herd_overlay::process::find_program(nebula).is_some() {
            let listen = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0);
            coordinator_config.overlay = Some(herd_coordinator::OverlayConfig::new(listen));
        }
        let coordinator = match herd_coordinator::start(coordinator_config.clone()).await {
            // The overlay is optional on one machine: a nebula that cannot run does not stop
            // the network, it only leaves multi-node leases of real machines without one.
            Err(herd_coordinator::StartError::Overlay(error)) => {
                tracing::warn!(%error, "the overlay lighthouse cannot start; running without lease overlays");
                coordinator_config.overlay = None;
                herd_coordinator::start(coordinator_config).await?
            }
            started => started?,
        };
        let url = coordinator.url();

        let supplier_key = keys::load_or_create(&config.data_dir.join("supplier.key"))?;
        let (supplier, _) = sign_in(&Client::new(&url, None), &supplier_key).await?;
        let supplier = supplier.address;

        let (stop_workers, stop_rx) = watch::channel(false);
        let mut agents = Vec::new();
        if config.local_worker {
            // The supplier key is local, so it endorses every device it runs.
            let mut agent =
                AgentConfig::owned_by(&url, config.data_dir.join("local-worker"), &supplier_key, &config.country);
            agent.runtime.kind = config.local_runtime;
            agent.ray_envs_dir = Some(config.ray_envs_dir.clone());
            agents.push(agent);
        }
        for (index, device) in herd_sim::fleet(SIM_FLEET_SEED, config.sim_workers).into_iter().enumerate() {
            let dir = config.data_dir.join("sim").join(index.to_string());
            let mut agent = AgentConfig::owned_by(&url, dir, &supplier_key, device.country);
            agent.simulated = Some(device.spec);
            let (down_mbps, up_mbps) = device.throughput_mbps;
            agent.throughput = Some(herd_proto::worker::Throughput { down_mbps, up_mbps });
            agent.advertise_addr = Some("127.0.0.1".into());
            agent.ray_envs_dir = Some(config.ray_envs_dir.clone());
            agents.push(agent);
        }
        let devices = agents.len();
        let workers = agents.into_iter().map(|agent| tokio::spawn(herd_worker::run(agent, stop_rx.clone()))).collect();
        let network =
            LocalNetwork { coordinator, supplier, devices, workers, stop_workers, _locks: (data_dir_lock, db_lock) };
        // Registration is one durable commit per device: allow for large simulated fleets.
        network.wait_until_ready(Duration::from_secs(30) + Duration::from_millis(20) * devices as u32).await?;
        Ok(network)
    }

    /// Where the overlay lighthouse listens, when it runs.
    pub fn overlay_listen(&self) -> Option<SocketAddr> {
        self.coordinator.overlay_listen()
    }

    pub fn url(&self) -> String {
        self.coordinator.url()
    }

    /// Waits until every device of this network is ready or hired.
    async fn wait_until_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        const PAGE: usize = 1000;
        let client = Client::new(&self.url(), None);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut online = 0;
            for offset in (0..self.devices).step_by(PAGE) {
                let query = format!("owner={}&limit={PAGE}&offset={offset}", self.supplier);
                let devices = client.devices(&query).await?;
                online += devices.iter().filter(|d| matches!(d.state, DeviceState::Ready | DeviceState::Hired)).count();
            }
            if online >= self.devices {
                return Ok(());
            }
            if self.workers.iter().any(|w| w.is_finished()) {
                bail!("a worker stopped while starting; run with RUST_LOG=info to see why");
            }
            if tokio::time::Instant::now() > deadline {
                bail!("only {online} of {} devices came online within {}s", self.devices, timeout.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the workers (their tasks end), then the coordinator, cleanly.
    pub async fn shutdown(self) {
        let _ = self.stop_workers.send(true);
        for worker in self.workers {
            match worker.await {
                Ok(Err(error)) => tracing::warn!(%error, "worker ended with an error"),
                Err(error) => tracing::warn!(%error, "worker task failed"),
                Ok(Ok(())) => {}
            }
        }
        self.coordinator.shutdown().await;
    }
}
