//! The agent's connection loop: dial out, authenticate with the device key, heartbeat, take
//! assignments; on any failure reconnect with capped exponential backoff and jitter.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use futures_util::{SinkExt, StreamExt};
use herd_core::{Address, DeviceSpec};
use herd_proto::signing::{device_endorsement_message, worker_hello_message};
use herd_proto::worker::{HelloPayload, ServerMessage, SignedHello, Throughput, WorkerMessage, FRAME_BYTES_MAX};
use herd_proto::WORKER_PROTOCOL_VERSION;
use rand::Rng;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::detect::{detect_machine, GpuProbe, LoadSampler};
use crate::overlay::Overlays;
use crate::prover::{Hardware, Prover};
use crate::ray::env::PythonEnvs;
use crate::ray::{RayNodes, Tunnels};
use crate::runtime::docker::{RuntimeError, DEFAULT_IMAGE};
use crate::runtime::{DockerRuntime, Runtime, Tasks};
use herd_keys::{self as keys, KeyError};

/// Task events queued while disconnected (see `Tasks`).
const EVENT_QUEUE_CAPACITY: usize = 1024;
/// Refusals that retrying cannot fix: the agent stops and says why.
const FATAL_REFUSALS: &[&str] = &[
    "bad_signature",
    "device_owned",
    "blocked",
    "protocol_version",
    "bad_spec",
    "bad_country",
    "unknown_owner",
    "no_consent",
    "bad_endorsement",
    "bad_pairing_code",
];

/// How the owner consents to this device joining their account (checked only when the
/// device first registers).
#[derive(Debug, Clone)]
pub enum OwnerConsent {
    /// The owner's account key is on this machine: it signs the device key.
    Key(SigningKey),
    /// A single-use code from `herd worker pair`.
    PairingCode(String),
    /// The device is already registered.
    None,
}

/// Which runtime runs tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// Docker when an engine is reachable, else process (with a warning).
    Auto,
    /// Local processes: development and trusted machines only.
    Process,
    /// Isolated containers; the agent refuses to start without an engine.
    Docker,
}

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub kind: RuntimeKind,
    /// The image tasks run in when their job names none.
    pub default_image: String,
    /// Image archives (`docker save` format) loaded into the engine at start.
    pub load_images: Vec<PathBuf>,
    /// Keep task containers off this host and its private networks (docker runtime); off
    /// only when the supplier says so (`--no-egress-policy`).
    pub egress_policy: bool,
    /// Local images customers may run besides herd's own (`--allow-image`).
    pub allowed_images: Vec<String>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            kind: RuntimeKind::Process,
            default_image: DEFAULT_IMAGE.into(),
            load_images: Vec::new(),
            egress_policy: true,
            allowed_images: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `http://HOST:PORT` of the coordinator, or several replicas' comma-separated (tried in
    /// turn when a session is lost).
    pub coordinator: String,
    /// Holds `device.key` and the jobs' working directories.
    pub data_dir: PathBuf,
    pub owner: Address,
    pub consent: OwnerConsent,
    /// ISO 3166-1 alpha-2, upper case.
    pub country: String,
    /// Where other nodes reach this device; default: the local address of the connection
    /// to the coordinator.
    pub advertise_addr: Option<String>,
    /// A simulated device reports this spec instead of the detected one and is marked
    /// simulated everywhere. Its tasks still run for real, as local processes.
    pub simulated: Option<DeviceSpec>,
    /// What detection found, when it is not asked of this machine: a real (not simulated)
    /// device with this spec. For tests of a machine whose NVML reports GPUs.
    pub detected: Option<DeviceSpec>,
    /// The supplier's floor, USD micros per GPU-hour (per node-hour for CPU-only machines);
    /// None: the catalog default.
    pub floor_micros: Option<i64>,
    /// A fixed throughput to report instead of measuring (simulated devices).
    pub throughput: Option<Throughput>,
    pub runtime: RuntimeConfig,
    /// Where managed Python environments for Ray live (one per Ray version); default
    /// `DATA_DIR/ray-envs`. Several agents on one machine may share it.
    pub ray_envs_dir: Option<PathBuf>,
    /// The interpreter Ray environments are made from.
    pub python: String,
    /// pip requirements every Ray node of this machine gets beside Ray (a deep-learning
    /// framework for RLlib, say), installed once into the managed environment.
    pub ray_packages: Vec<String>,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// The `nebula` program lease overlays run on (found on `PATH` by default).
    pub nebula: PathBuf,
}

impl AgentConfig {
    /// A worker owned by the holder of `owner_key`, which endorses the device.
    pub fn owned_by(
        coordinator: impl Into<String>,
        data_dir: PathBuf,
        owner_key: &SigningKey,
        country: impl Into<String>,
    ) -> Self {
        AgentConfig::new(
            coordinator,
            data_dir,
            keys::address_of(owner_key),
            OwnerConsent::Key(owner_key.clone()),
            country,
        )
    }

    pub fn new(
        coordinator: impl Into<String>,
        data_dir: PathBuf,
        owner: Address,
        consent: OwnerConsent,
        country: impl Into<String>,
    ) -> Self {
        AgentConfig {
            coordinator: coordinator.into(),
            data_dir,
            owner,
            consent,
            country: country.into(),
            advertise_addr: None,
            simulated: None,
            detected: None,
            floor_micros: None,
            throughput: None,
            runtime: RuntimeConfig::default(),
            ray_envs_dir: None,
            ray_packages: Vec::new(),
            python: "python3".into(),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            nebula: PathBuf::from(herd_overlay::NEBULA),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("the coordinator refused this device ({code}): {message}")]
    Refused { code: String, message: String },
    #[error("invalid coordinator URL {0:?}: expected http://HOST:PORT")]
    BadUrl(String),
    #[error("the owner key given is for {given}, not the owner {owner}")]
    WrongOwnerKey { given: Address, owner: Address },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("cannot list this device's containers and networks: {0}")]
    Survey(String),
}

/// Starts the configured runtime; a docker runtime first loads the configured images and
/// takes over the containers this device left running before a restart.
async fn start_runtime(
    config: &AgentConfig,
    device: &Address,
) -> Result<(Runtime, Vec<crate::runtime::docker::Found>), AgentError> {
    let wanted = &config.runtime;
    if wanted.kind == RuntimeKind::Process {
        return Ok((Runtime::Process, Vec::new()));
    }
    let settings = crate::runtime::docker::DockerSettings {
        default_image: wanted.default_image.clone(),
        simulated: config.simulated.is_some(),
        egress_policy: wanted.egress_policy,
        allowed_images: wanted.allowed_images.clone(),
        volumes_dir: config.data_dir.join("lease-volumes"),
    };
    let connected = DockerRuntime::connect(device.clone(), settings).await;
    let docker = match connected {
        Ok(docker) => docker,
        Err(error @ RuntimeError::Unreachable(_)) if wanted.kind == RuntimeKind::Auto => {
            tracing::warn!(%error, "no Docker engine: tasks run as local processes, without isolation");
            return Ok((Runtime::Process, Vec::new()));
        }
        Err(error) => return Err(error.into()),
    };
    for archive in &wanted.load_images {
        let loaded = docker.load_image(archive).await?;
        tracing::info!(archive = %archive.display(), ?loaded, "image archive loaded");
    }
    let found = docker.survey().await.map_err(|e| AgentError::Survey(e.to_string()))?;
    let running = found.iter().filter(|f| f.exit.is_none()).count();
    tracing::info!(running, exited = found.len() - running, "containers of this device found at start");
    docker.prune_networks().await.map_err(|e| AgentError::Survey(e.to_string()))?;
    Ok((Runtime::Docker(std::sync::Arc::new(docker)), found))
}

enum SessionEnd {
    Refused { code: String, message: String },
    Disconnected(String),
    Shutdown,
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The first of the coordinator URLs (the overlay's lighthouse host and throughput tests
/// use it).
fn primary_coordinator(coordinators: &str) -> &str {
    coordinators.split(',').next().unwrap_or(coordinators).trim()
}

fn socket_url(coordinator: &str) -> Result<String, AgentError> {
    let base = coordinator.trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("http://") {
        Ok(format!("ws://{rest}/v1/worker/connect"))
    } else if let Some(rest) = base.strip_prefix("https://") {
        Ok(format!("wss://{rest}/v1/worker/connect"))
    } else {
        Err(AgentError::BadUrl(coordinator.to_owned()))
    }
}

/// The delay before reconnect attempt `attempt` (0-based): exponential, capped, with "equal
/// jitter" (half fixed, half random) so a fleet that lost its coordinator does not return
/// in lockstep.
pub fn backoff_delay(attempt: u32, initial: Duration, max: Duration, random_unit: f64) -> Duration {
    let exponential = initial.saturating_mul(1u32 << attempt.min(16));
    let capped = exponential.min(max);
    capped / 2 + capped.mul_f64(random_unit.clamp(0.0, 1.0) / 2.0)
}

/// Runs the agent until `shutdown` turns true or the coordinator refuses the device for a
/// reason retrying cannot fix.
pub async fn run(config: AgentConfig, mut shutdown: watch::Receiver<bool>) -> Result<(), AgentError> {
    // Several coordinator replicas: a comma-separated list, tried in turn after each lost
    // session (or one load-balanced URL).
    let urls = config.coordinator.split(',').map(|url| socket_url(url.trim())).collect::<Result<Vec<_>, _>>()?;
    let mut replica = 0usize;
    let key = keys::load_or_create(&config.data_dir.join("device.key"))?;
    let gpus = if config.simulated.is_some() { GpuProbe::none() } else { GpuProbe::load() };
    let spec = match (&config.simulated, &config.detected) {
        (Some(spec), _) | (None, Some(spec)) => spec.clone(),
        (None, None) => detect_machine(&config.data_dir, &gpus),
    };
    let gpu_solver = match (&config.simulated, spec.gpu_offer()) {
        (None, Some(_)) => GpuSolver::open(&spec).await,
        _ => GpuSolver::NotNeeded,
    };
    let device = keys::address_of(&key);
    let (owner_endorsement, pairing_code) = match &config.consent {
        OwnerConsent::Key(owner_key) => {
            let given = keys::address_of(owner_key);
            if given != config.owner {
                return Err(AgentError::WrongOwnerKey { given, owner: config.owner.clone() });
            }
            let message = device_endorsement_message(config.owner.as_str(), device.as_str());
            (Some(bs58::encode(owner_key.sign(&message).to_bytes()).into_string()), None)
        }
        OwnerConsent::PairingCode(code) => (None, Some(code.clone())),
        OwnerConsent::None => (None, None),
    };
    let consent = Consent { owner_endorsement, pairing_code };
    tracing::info!(%device, owner = %config.owner, gpus = spec.gpus.len(), simulated = config.simulated.is_some(),
        "worker agent starting");
    let (events, mut event_queue) = mpsc::channel(EVENT_QUEUE_CAPACITY);
    let (runtime, found) = start_runtime(&config, &device).await?;
    match &runtime {
        Runtime::Docker(docker) => {
            let removed = docker.remove_ray_leftovers().await.map_err(|e| AgentError::Survey(e.to_string()))?;
            if removed > 0 {
                tracing::info!(
                    removed,
                    "Ray node containers of an earlier run removed; the coordinator re-assigns them"
                );
            }
        }
        Runtime::Process => {
            let killed = crate::runtime::process::kill_leftovers(&config.data_dir.join("jobs"));
            if killed > 0 {
                tracing::warn!(
                    killed,
                    "task processes an earlier run left behind were killed; the coordinator retries them"
                );
            }
        }
    }
    tracing::info!(runtime = runtime.name(), "task runtime ready");
    // Ray nodes an earlier run left behind (it was killed before it could stop them) are no
    // longer this device's: their ranks were given to others, or are started again below.
    let ray_nodes_dir = config.data_dir.join("ray-nodes");
    let killed = crate::runtime::process::kill_leftovers(&ray_nodes_dir);
    if killed > 0 {
        tracing::warn!(killed, "Ray node processes an earlier run left behind were killed");
    }
    let _ = std::fs::remove_dir_all(&ray_nodes_dir);
    crate::ray::remove_unused_lease_temp_dirs();
    let ray_context = crate::ray::Context {
        envs: PythonEnvs::new(
            config.ray_envs_dir.clone().unwrap_or_else(|| config.data_dir.join("ray-envs")),
            config.python.clone(),
        )
        .with_packages(config.ray_packages.clone()),
        events: events.clone(),
        nodes_dir: ray_nodes_dir.clone(),
        passed_env: crate::ray::Context::passed_env_from_host(),
        // A simulated device's claimed cores do not exist: Ray would start a worker process
        // per claimed core on this real machine.
        offer_max: config.simulated.as_ref().map(|_| crate::ray::OfferMax {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            memory_bytes: crate::detect::machine_memory_bytes(),
        }),
        docker: match &runtime {
            Runtime::Docker(docker) => Some(docker.clone()),
            Runtime::Process => None,
        },
    };
    let ray = RayNodes::new(ray_context);
    let overlay = Overlays::new(
        config.nebula.clone(),
        config.data_dir.join("overlay"),
        primary_coordinator(&config.coordinator),
        config.simulated.is_some(),
        events.clone(),
    );
    let tunnels = Tunnels::new(events.clone());
    let tasks = Tasks::new(config.data_dir.join("jobs"), events, runtime);
    tasks.adopt(found);
    let measured = Arc::new(Mutex::new(None));
    let prover = Arc::new(Prover::default());
    let mut session = Session {
        device: &device,
        prover: &prover,
        gpu_solver: &gpu_solver,
        config: &config,
        url: &urls[0],
        key: &key,
        spec: &spec,
        tasks: &tasks,
        ray: &ray,
        overlay: &overlay,
        tunnels: &tunnels,
        gpus: &gpus,
        consent: &consent,
        measured: &measured,
    };
    let mut attempt = 0u32;
    let result = loop {
        let (end, welcomed) = session.run(&mut event_queue, &mut shutdown).await;
        if welcomed {
            attempt = 0;
        }
        let end_was_refusal = matches!(end, SessionEnd::Refused { .. });
        match end {
            SessionEnd::Shutdown => break Ok(()),
            SessionEnd::Refused { code, message } if FATAL_REFUSALS.contains(&code.as_str()) => {
                break Err(AgentError::Refused { code, message });
            }
            SessionEnd::Refused { code, message } => tracing::warn!(%code, %message, "coordinator refused; retrying"),
            SessionEnd::Disconnected(reason) => tracing::warn!(%reason, "disconnected from the coordinator"),
        }
        let delay = backoff_delay(attempt, config.backoff_initial, config.backoff_max, rand::thread_rng().gen());
        attempt = attempt.saturating_add(1);
        tracing::info!(delay_ms = delay.as_millis() as u64, attempt, "reconnecting");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => break Ok(()),
        }
        if urls.len() > 1 && !end_was_refusal {
            replica = (replica + 1) % urls.len();
            tracing::info!(coordinator = %urls[replica], "trying the next coordinator replica");
        }
        session = Session { url: &urls[replica], ..session };
    };
    tasks.stop_all().await;
    ray.stop_all().await;
    overlay.stop_all().await;
    tracing::info!(%device, "worker agent stopped");
    result
}

/// The IP other Ray nodes reach this one at: the advertised address, resolved if it is a name.
async fn node_ip(advertise_addr: &str) -> Result<String, String> {
    if advertise_addr.parse::<std::net::IpAddr>().is_ok() {
        return Ok(advertise_addr.to_owned());
    }
    let mut addresses = tokio::net::lookup_host((advertise_addr, 0))
        .await
        .map_err(|e| format!("cannot resolve the advertised address {advertise_addr:?}: {e}"))?;
    addresses
        .find(|a| a.is_ipv4())
        .map(|a| a.ip().to_string())
        .ok_or_else(|| format!("the advertised address {advertise_addr:?} has no IPv4 address"))
}

/// What the hello carries as the owner's consent.
struct Consent {
    owner_endorsement: Option<String>,
    pairing_code: Option<String>,
}

/// The last throughput measurement and when it was taken.
type Measured = Arc<Mutex<Option<(tokio::time::Instant, Throughput)>>>;

/// How often a device re-measures its throughput.
const THROUGHPUT_RETEST: Duration = Duration::from_secs(24 * 3600);

/// What proves this device's GPUs: loaded once at start.
enum GpuSolver {
    /// A CPU-only or simulated device.
    NotNeeded,
    Cuda(Arc<herd_gpu::Gpus>),
    /// The device has GPUs this worker cannot drive, and why.
    Unavailable(String),
}

impl GpuSolver {
    async fn open(spec: &DeviceSpec) -> GpuSolver {
        if spec.gpus.iter().any(|g| g.vendor != herd_core::GpuVendor::Nvidia) {
            return GpuSolver::Unavailable(
                "herd proves GPUs through CUDA; only NVIDIA GPUs can be proven by this build".into(),
            );
        }
        let uuids: Vec<String> = spec.gpus.iter().map(|g| g.uuid.clone()).collect();
        // Loading the libraries and compiling the kernels takes a moment: off the runtime.
        match tokio::task::spawn_blocking(move || herd_gpu::Gpus::open(&uuids)).await {
            Ok(Ok(gpus)) => {
                tracing::info!(gpus = ?gpus.describe(), "CUDA loaded; GPU proofs run on these GPUs");
                GpuSolver::Cuda(Arc::new(gpus))
            }
            Ok(Err(reason)) => {
                tracing::warn!(%reason, "this worker's GPUs cannot be proven; the device stays pending");
                GpuSolver::Unavailable(reason)
            }
            Err(error) => GpuSolver::Unavailable(format!("loading CUDA failed: {error}")),
        }
    }
}

struct Session<'a> {
    device: &'a Address,
    prover: &'a Arc<Prover>,
    gpu_solver: &'a GpuSolver,
    consent: &'a Consent,
    measured: &'a Measured,
    config: &'a AgentConfig,
    url: &'a str,
    key: &'a SigningKey,
    spec: &'a DeviceSpec,
    tasks: &'a Tasks,
    ray: &'a RayNodes,
    overlay: &'a Overlays,
    tunnels: &'a Tunnels,
    gpus: &'a GpuProbe,
}

async fn recv(socket: &mut Socket) -> Result<ServerMessage, String> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text)
                    .map_err(|e| format!("undecodable message from the coordinator: {e}"))
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(format!(
                    "closed by the coordinator{}",
                    frame.map(|f| format!(": {}", f.reason)).unwrap_or_default()
                ))
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(error.to_string()),
            None => return Err("connection closed".into()),
        }
    }
}

async fn send(socket: &mut Socket, message: &WorkerMessage) -> Result<(), String> {
    let text = serde_json::to_string(message).expect("worker messages serialise");
    socket.send(Message::Text(text.into())).await.map_err(|e| e.to_string())
}

impl Session<'_> {
    /// One connection, from dialling to its end; the bool says whether it was welcomed.
    async fn run(
        &mut self,
        event_queue: &mut mpsc::Receiver<WorkerMessage>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> (SessionEnd, bool) {
        let mut ws_config = WebSocketConfig::default();
        ws_config.max_message_size = Some(FRAME_BYTES_MAX);
        ws_config.max_frame_size = Some(FRAME_BYTES_MAX);
        // wss:// needs our TLS configuration (public roots plus HERD_CA_CERT); ws:// none.
        let connector = match self.url.starts_with("wss://").then(crate::tls::client_config).transpose() {
            Ok(config) => config.map(tokio_tungstenite::Connector::Rustls),
            Err(error) => return (SessionEnd::Disconnected(error.to_string()), false),
        };
        let connecting = tokio_tungstenite::connect_async_tls_with_config(self.url, Some(ws_config), false, connector);
        let mut socket = match connecting.await {
            Ok((socket, _)) => socket,
            Err(error) => return (SessionEnd::Disconnected(format!("cannot reach {}: {error}", self.url)), false),
        };
        let (heartbeat_interval, advertise_addr) = match self.handshake(&mut socket).await {
            Ok(welcomed) => welcomed,
            Err(end) => return (end, false),
        };
        tracing::info!(url = self.url, "connected to the coordinator");
        let mut heartbeat = tokio::time::interval(heartbeat_interval);
        let mut retest = tokio::time::interval_at(tokio::time::Instant::now() + THROUGHPUT_RETEST, THROUGHPUT_RETEST);
        let mut sampler = self.config.simulated.is_none().then(LoadSampler::new);
        loop {
            tokio::select! {
                _ = heartbeat.tick() => {
                    let tasks_running = self.tasks.running_count();
                    let utilization = match &mut sampler {
                        Some(sampler) => sampler.sample(self.gpus, tasks_running),
                        None => herd_proto::api::Utilization { tasks_running, ..Default::default() },
                    };
                    if let Err(error) = send(&mut socket, &WorkerMessage::Heartbeat { utilization }).await {
                        return (SessionEnd::Disconnected(error), true);
                    }
                }
                _ = retest.tick() => {
                    if let Err(error) = send(&mut socket, &WorkerMessage::SpeedtestWanted).await {
                        return (SessionEnd::Disconnected(error), true);
                    }
                }
                Some(event) = event_queue.recv() => {
                    if let Err(error) = send(&mut socket, &event).await {
                        return (SessionEnd::Disconnected(error), true);
                    }
                }
                message = recv(&mut socket) => match message {
                    Ok(message) => self.apply(message, &advertise_addr).await,
                    Err(reason) => return (SessionEnd::Disconnected(reason), true),
                },
                _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {
                    let _ = socket.close(None).await;
                    return (SessionEnd::Shutdown, true);
                }
            }
        }
    }

    /// The heartbeat interval and the address this device advertised.
    async fn handshake(&self, socket: &mut Socket) -> Result<(Duration, String), SessionEnd> {
        let nonce = match recv(socket).await.map_err(SessionEnd::Disconnected)? {
            ServerMessage::Challenge { nonce, .. } => nonce,
            ServerMessage::Rejected { code, message } => return Err(SessionEnd::Refused { code, message }),
            other => return Err(SessionEnd::Disconnected(format!("expected a challenge, got {other:?}"))),
        };
        let advertise_addr = self.config.advertise_addr.clone().unwrap_or_else(|| match socket.get_ref() {
            MaybeTlsStream::Plain(tcp) => {
                tcp.local_addr().map(|a| a.ip().to_string()).unwrap_or_else(|_| "127.0.0.1".into())
            }
            _ => "127.0.0.1".into(),
        });
        let payload = HelloPayload {
            protocol_version: WORKER_PROTOCOL_VERSION,
            nonce,
            device_key: keys::address_of(self.key),
            owner: self.config.owner.clone(),
            country: self.config.country.clone(),
            simulated: self.config.simulated.is_some(),
            advertise_addr: advertise_addr.clone(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            spec: self.spec.clone(),
            floor_micros: self.config.floor_micros,
            throughput: self.config.throughput.or_else(|| self.last_measurement().map(|(_, t)| t)),
            owner_endorsement: self.consent.owner_endorsement.clone(),
            pairing_code: self.consent.pairing_code.clone(),
            tasks: self.tasks.reports(),
            ray_nodes: self.ray.reports(),
            overlay: Some(self.overlay.support()),
        };
        let payload = serde_json::to_string(&payload).expect("a hello serialises");
        let signature = bs58::encode(self.key.sign(&worker_hello_message(&payload)).to_bytes()).into_string();
        send(socket, &WorkerMessage::Hello(SignedHello { payload, signature }))
            .await
            .map_err(SessionEnd::Disconnected)?;
        match recv(socket).await.map_err(SessionEnd::Disconnected)? {
            ServerMessage::Welcome { heartbeat_interval_ms, .. } => {
                Ok((Duration::from_millis(heartbeat_interval_ms.max(100)), advertise_addr))
            }
            ServerMessage::Rejected { code, message } => Err(SessionEnd::Refused { code, message }),
            other => Err(SessionEnd::Disconnected(format!("expected a welcome, got {other:?}"))),
        }
    }

    async fn apply(&self, message: ServerMessage, advertise_addr: &str) {
        match message {
            ServerMessage::StartTask(assignment) => {
                tracing::info!(job = %assignment.job_id, rank = assignment.rank, attempt = assignment.attempt,
                    "starting task");
                if !self.overlay.joined(&assignment.cluster_id) {
                    self.tasks.start(assignment);
                    return;
                }
                // A task of a lease on the overlay starts once this node's overlay is up.
                let (overlay, tasks) = (self.overlay.clone(), self.tasks.clone());
                tokio::spawn(async move {
                    if let Err(error) = overlay.ready_address(&assignment.cluster_id).await {
                        tracing::error!(job = %assignment.job_id, %error, "starting the task without the overlay");
                    }
                    if overlay.joined(&assignment.cluster_id) {
                        tasks.start(assignment);
                    }
                });
            }
            ServerMessage::StopTask { job_id, attempt } => {
                tracing::info!(job = %job_id, ?attempt, "stopping task");
                self.tasks.stop(&job_id, attempt);
            }
            ServerMessage::StopCluster { cluster_id } => {
                tracing::info!(cluster = %cluster_id, "lease ended; stopping its tasks");
                self.ray.stop(&cluster_id);
                self.tasks.stop_cluster(&cluster_id).await;
                self.overlay.leave(&cluster_id).await;
            }
            ServerMessage::JoinOverlay(assignment) => self.overlay.join(assignment),
            ServerMessage::StartRayNode(assignment) if assignment.node_ip.is_some() => {
                // On the lease's overlay: the node runs on its overlay address once it is up.
                let (overlay, ray) = (self.overlay.clone(), self.ray.clone());
                tokio::spawn(async move {
                    match overlay.ready_address(&assignment.cluster_id).await {
                        Ok(Some(ip)) => ray.start(assignment, ip),
                        Ok(None) => tracing::warn!(cluster = %assignment.cluster_id,
                            "a Ray node for an overlay this device has not joined (it will be sent again)"),
                        Err(error) => {
                            tracing::error!(cluster = %assignment.cluster_id, %error, "cannot start the Ray node")
                        }
                    }
                });
            }
            ServerMessage::StartRayNode(assignment) => match node_ip(advertise_addr).await {
                Ok(ip) => self.ray.start(assignment, ip),
                Err(error) => tracing::error!(%error, "cannot start a Ray node"),
            },
            ServerMessage::TunnelOpen(open) => self.tunnels.open(open, self.ray),
            ServerMessage::TunnelData { stream, data } => self.tunnels.data(stream, &data),
            ServerMessage::TunnelEnd { stream } => self.tunnels.end(stream),
            ServerMessage::TunnelAbort { stream } => self.tunnels.abort(stream),
            ServerMessage::SpeedtestToken { token } => self.measure_throughput(token),
            ServerMessage::ProofChallenge(challenge) => {
                tracing::info!(challenge = %challenge.challenge_id, n = challenge.n, steps = challenge.steps,
                    deadline_ms = challenge.deadline_ms, "proof of compute requested");
                match self.hardware() {
                    Ok(hardware) => self.prover.challenge(challenge, self.device, hardware, self.tasks.events()),
                    Err(reason) => self.prover.decline(challenge.challenge_id, reason, self.tasks.events()),
                }
            }
            ServerMessage::ProofOpen { challenge_id, picks } => {
                self.prover.open(challenge_id, picks, self.tasks.events());
            }
            ServerMessage::VramChallenge(challenge) => {
                tracing::info!(challenge = %challenge.challenge_id, gpus = challenge.gpus,
                    gib_per_gpu = challenge.params().dataset_bytes() >> 30, "proof of VRAM requested");
                match self.hardware() {
                    Ok(hardware) => self.prover.vram_challenge(challenge, self.device, hardware, self.tasks.events()),
                    Err(reason) => self.prover.decline(challenge.challenge_id, reason, self.tasks.events()),
                }
            }
            ServerMessage::VramWalk { challenge_id, walk_nonce, deadline_ms } => {
                self.prover.vram_walk(challenge_id, &walk_nonce, deadline_ms, self.tasks.events());
            }
            ServerMessage::Rejected { code, message } => {
                // The connection closes next; the reconnect's hello is refused with the reason.
                tracing::error!(%code, %message, "the coordinator refused this device");
            }
            other => tracing::warn!(?other, "unexpected message after the handshake"),
        }
    }

    /// What solves this device's proofs: GPUs need the GPU solver (a CPU cannot meet a
    /// GPU's deadline, so a worker whose CUDA does not load declines, with the reason).
    fn hardware(&self) -> Result<Hardware, String> {
        match self.gpu_solver {
            GpuSolver::NotNeeded => Ok(Hardware::Cpu),
            GpuSolver::Cuda(gpus) => Ok(Hardware::Gpu(gpus.clone())),
            GpuSolver::Unavailable(reason) => Err(format!("this worker's GPUs cannot be proven: {reason}")),
        }
    }

    fn last_measurement(&self) -> Option<(tokio::time::Instant, Throughput)> {
        *self.measured.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reports throughput: a simulated device its configured figures; a real one measures,
    /// unless it did so within the last day.
    fn measure_throughput(&self, token: String) {
        let events = self.tasks.events();
        if let Some(throughput) = self.config.simulated.as_ref().and(self.config.throughput) {
            tokio::spawn(async move {
                let _ = events.send(WorkerMessage::Throughput(throughput)).await;
            });
            return;
        }
        let due = self.last_measurement().is_none_or(|(at, _)| at.elapsed() >= THROUGHPUT_RETEST);
        if !due {
            return;
        }
        let coordinator = primary_coordinator(&self.config.coordinator).to_owned();
        let measured = self.measured.clone();
        tokio::spawn(async move {
            match crate::throughput::measure(&coordinator, &token).await {
                Ok(throughput) => {
                    tracing::info!(?throughput, "throughput measured");
                    *measured.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((tokio::time::Instant::now(), throughput));
                    let _ = events.send(WorkerMessage::Throughput(throughput)).await;
                }
                Err(error) => tracing::warn!(%error, "throughput test failed; retrying with the next token"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let (initial, max) = (Duration::from_millis(500), Duration::from_secs(30));
        assert_eq!(backoff_delay(0, initial, max, 0.0), Duration::from_millis(250));
        assert_eq!(backoff_delay(0, initial, max, 1.0), Duration::from_millis(500));
        assert_eq!(backoff_delay(3, initial, max, 1.0), Duration::from_secs(4));
        assert_eq!(backoff_delay(30, initial, max, 1.0), max, "capped");
        assert_eq!(backoff_delay(30, initial, max, 0.0), max / 2, "jitter never drops below half");
    }

    #[test]
    fn coordinator_urls_map_to_the_socket() {
        assert_eq!(socket_url("http://127.0.0.1:7700/").unwrap(), "ws://127.0.0.1:7700/v1/worker/connect");
        assert_eq!(socket_url("https://herd.example/").unwrap(), "wss://herd.example/v1/worker/connect");
        assert!(socket_url("127.0.0.1:7700").is_err());
    }
}
