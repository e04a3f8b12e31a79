//! `herd bench sybil`: a Sybil flood against proof of compute. A coordinator with production
//! rules (no simulated devices) runs in this process; thousands of fake devices connect over
//! real WebSockets, spread over many owner accounts, each claiming an 8× H100 machine and
//! never answering a challenge; then honest CPU workers (real agents, real proofs) join. The
//! bench times until every honest device is proven and ready, and compares the API's latency
//! during the flood with its idle figure, side by side in one run.
//!
//! The credential endpoints' per-address limits are off here: one process plays an attacker
//! who would use many addresses. Everything else is as a real network runs it.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use ed25519_dalek::{Signer, SigningKey};
use futures_util::{SinkExt, StreamExt};
use herd_core::{Address, CpuSpec, DeviceSpec, DeviceState, GpuSpec, GpuVendor};
use herd_proto::signing::{device_endorsement_message, worker_hello_message};
use herd_proto::worker::{HelloPayload, ServerMessage, SignedHello, WorkerMessage};
use rand::rngs::OsRng;
use serde::Serialize;
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use super::Context;
use crate::client::Client;
use crate::credentials::sign_in;
use crate::output::{print_json, table};

#[derive(Debug, Clone, Args)]
pub struct SybilArgs {
    /// Fake devices in the flood.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub fakes: u64,
    /// Owner accounts the fakes are spread over.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub owners: u64,
    /// Honest CPU workers that join during the flood.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=200))]
    pub honest: u64,
    /// What an honest device spends per proof, ms (the network's policy).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub proof_target_ms: u64,
    /// Give up waiting for the honest devices after this many seconds.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(10..=3600))]
    pub wait_s: u64,
    /// The `herd` binary that runs the fakes in processes of their own (default: this one).
    #[arg(skip)]
    pub swarm_binary: Option<std::path::PathBuf>,
}

/// `herd bench sybil-swarm` (hidden): the fake devices, run in a process of their own so the
/// coordinator is measured from outside (and each process holds only its half of the
/// sockets). Prints `welcomed=N challenged=M` lines until its stdin closes.
#[derive(Debug, Clone, Args)]
pub struct SwarmArgs {
    /// Fake devices this process runs.
    #[arg(long)]
    pub fakes: u64,
    /// A file of the owners' secret keys, hex, one a line (mode 0600).
    #[arg(long)]
    pub owners_file: std::path::PathBuf,
    /// How often each fake heartbeats, ms.
    #[arg(long)]
    pub heartbeat_ms: u64,
}

/// Fakes per swarm process: each holds one socket per fake.
const FAKES_PER_PROCESS: u64 = 4000;

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub requests: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The slowest request of each kind sampled (`SAMPLED`), ms.
    pub max_by_request_ms: Vec<(String, f64)>,
}

/// One honest join: with or without the flood.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// Fake devices connected and welcomed, and how long connecting them all took.
    pub fakes_connected: usize,
    pub fakes_connect_ms: u64,
    /// From the honest workers' start until every one of them was ready.
    pub honest_ready_ms: u64,
    /// Each honest device's wait, sorted.
    pub honest_ready_each_ms: Vec<u64>,
    /// Challenges the fakes received and left unanswered while the honest joined.
    pub fake_challenges: usize,
    /// The API before the honest workers started, and while they joined.
    pub api_before: Latency,
    pub api_during: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub fakes: u64,
    pub owners: u64,
    pub honest: u64,
    /// The same honest join on a quiet network, then under the flood, side by side.
    pub baseline: Phase,
    pub flood: Phase,
    /// Under the flood over without it: the honest devices' wait, and the API's p99 while
    /// they joined (the target: at most 2).
    pub honest_ready_ratio: f64,
    pub p99_ratio: f64,
}

fn gpu_box(key: &SigningKey) -> DeviceSpec {
    let device = bs58::encode(key.verifying_key().as_bytes()).into_string();
    DeviceSpec {
        hostname: "dgx".into(),
        os: "Linux".into(),
        arch: "x86_64".into(),
        cpu: CpuSpec { model: "EPYC 9654".into(), physical_cores: 96, logical_cores: 192 },
        memory_bytes: 2 << 40,
        disk_bytes: 30 << 40,
        gpus: (0..8)
            .map(|i| GpuSpec {
                vendor: GpuVendor::Nvidia,
                name: "NVIDIA H100 80GB HBM3".into(),
                uuid: format!("GPU-{device}-{i}"),
                vram_bytes: 80 << 30,
                driver_version: Some("550.54".into()),
                cuda_version: Some("12.4".into()),
            })
            .collect(),
    }
}

/// One fake device: connects, says hello as an 8× H100 endorsed by `owner`, heartbeats, and
/// never answers a challenge. Counts its welcome and the challenges it ignores.
async fn fake_device(
    permit: tokio::sync::OwnedSemaphorePermit,
    socket_url: String,
    owner: Arc<SigningKey>,
    heartbeat: Duration,
    welcomed: Arc<AtomicUsize>,
    challenged: Arc<AtomicUsize>,
    mut stop: watch::Receiver<bool>,
) {
    let key = SigningKey::generate(&mut OsRng);
    let Ok((mut socket, _)) = tokio_tungstenite::connect_async(&socket_url).await else { return };
    let nonce = loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMessage>(&text) {
                Ok(ServerMessage::Challenge { nonce, .. }) => break nonce,
                _ => continue,
            },
            Some(Ok(_)) => continue,
            _ => return,
        }
    };
    let device = Address::parse(&bs58::encode(key.verifying_key().as_bytes()).into_string()).expect("an address");
    let owner_address = Address::parse(&bs58::encode(owner.verifying_key().as_bytes()).into_string()).expect("ok");
    let endorsement = owner.sign(&device_endorsement_message(owner_address.as_str(), device.as_str()));
    let payload = HelloPayload {
        protocol_version: herd_proto::WORKER_PROTOCOL_VERSION,
        nonce,
        device_key: device,
        owner: owner_address,
        country: "US".into(),
        simulated: false,
        advertise_addr: "127.0.0.1".into(),
        agent_version: "sybil".into(),
        spec: gpu_box(&key),
        floor_micros: None,
        throughput: None,
        owner_endorsement: Some(bs58::encode(endorsement.to_bytes()).into_string()),
        pairing_code: None,
        tasks: vec![],
        ray_nodes: vec![],
        overlay: None,
    };
    let payload = serde_json::to_string(&payload).expect("a hello serialises");
    let signature = bs58::encode(key.sign(&worker_hello_message(&payload)).to_bytes()).into_string();
    let hello = WorkerMessage::Hello(SignedHello { payload, signature });
    let text = |message: &WorkerMessage| Message::Text(serde_json::to_string(message).expect("serialises").into());
    if socket.send(text(&hello)).await.is_err() {
        return;
    }
    // Connected: the next fake may start connecting.
    drop(permit);
    let mut beat = tokio::time::interval(heartbeat);
    loop {
        tokio::select! {
            _ = beat.tick() => {
                let heartbeat = WorkerMessage::Heartbeat { utilization: Default::default() };
                if socket.send(text(&heartbeat)).await.is_err() {
                    return;
                }
            }
            message = socket.next() => match message {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMessage>(&text) {
                    Ok(ServerMessage::Welcome { .. }) => { welcomed.fetch_add(1, Ordering::Relaxed); }
                    Ok(ServerMessage::ProofChallenge(_)) => { challenged.fetch_add(1, Ordering::Relaxed); }
                    Ok(ServerMessage::Rejected { .. }) => return,
                    _ => {}
                },
                Some(Ok(_)) => {}
                _ => return,
            },
            _ = stop.changed() => return,
        }
    }
}

/// What each round of API samples calls: a user's and the explorer's requests.
const SAMPLED: [&str; 5] = ["/v1/health", "/v1/market/prices", "/v1/devices?limit=50", "/", "quote"];

/// Runs a swarm (the hidden subcommand) until stdin closes.
pub async fn swarm(context: &Context, args: &SwarmArgs) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(&args.owners_file).context("the owners file")?;
    let owners: Vec<Arc<SigningKey>> = text
        .lines()
        .filter_map(|line| herd_core::hex::decode_array::<32>(line.trim()))
        .map(|bytes| Arc::new(SigningKey::from_bytes(&bytes)))
        .collect();
    if owners.is_empty() {
        bail!("no owner keys in {}", args.owners_file.display());
    }
    let socket_url = format!("{}/v1/worker/connect", context.coordinator.replace("http://", "ws://"));
    let (_stop, stop_rx) = watch::channel(false);
    let counts = spawn_fakes(&socket_url, &owners, args.fakes, Duration::from_millis(args.heartbeat_ms), stop_rx);
    let reporter = async {
        loop {
            crate::outln!(
                "welcomed={} challenged={}",
                counts.0.load(Ordering::Relaxed),
                counts.1.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    // The parent holds our stdin: when it goes (or dies), so do we.
    let stdin_closed = tokio::task::spawn_blocking(|| {
        use std::io::Read as _;
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
    });
    tokio::select! {
        _ = reporter => {}
        _ = stdin_closed => {}
    }
    Ok(0)
}

/// Spawns `fakes` fake devices (256 connecting at a time); their (welcomed, challenged) counts.
fn spawn_fakes(
    socket_url: &str,
    owners: &[Arc<SigningKey>],
    fakes: u64,
    heartbeat: Duration,
    stop: watch::Receiver<bool>,
) -> (Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let welcomed = Arc::new(AtomicUsize::new(0));
    let challenged = Arc::new(AtomicUsize::new(0));
    let connecting = Arc::new(Semaphore::new(256));
    let (socket_url, owners) = (socket_url.to_owned(), owners.to_vec());
    let counts = (welcomed.clone(), challenged.clone());
    tokio::spawn(async move {
        for i in 0..fakes as usize {
            let permit = connecting.clone().acquire_owned().await.expect("never closed");
            let (url, owner) = (socket_url.clone(), owners[i % owners.len()].clone());
            let (welcomed, challenged, stop) = (welcomed.clone(), challenged.clone(), stop.clone());
            tokio::spawn(fake_device(permit, url, owner, heartbeat, welcomed, challenged, stop));
        }
    });
    counts
}

/// Swarm processes running the fakes; their counts summed. Killed when dropped.
struct Swarm {
    children: Vec<tokio::process::Child>,
    counts: Vec<Arc<(AtomicUsize, AtomicUsize)>>,
}

impl Swarm {
    async fn start(
        binary: &Path,
        url: &str,
        owners_file: &Path,
        fakes: u64,
        heartbeat: Duration,
    ) -> anyhow::Result<Swarm> {
        use tokio::io::AsyncBufReadExt;
        let mut swarm = Swarm { children: Vec::new(), counts: Vec::new() };
        let mut left = fakes;
        while left > 0 {
            let here = left.min(FAKES_PER_PROCESS);
            left -= here;
            let mut child = tokio::process::Command::new(binary)
                .args(["--coordinator", url, "bench", "sybil-swarm", "--fakes", &here.to_string()])
                .arg("--owners-file")
                .arg(owners_file)
                .args(["--heartbeat-ms", &heartbeat.as_millis().to_string()])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", binary.display()))?;
            let counts = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
            let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
            let shared = counts.clone();
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    let field = |name: &str| {
                        line.split_whitespace().find_map(|f| f.strip_prefix(name)).and_then(|v| v.parse().ok())
                    };
                    if let (Some(w), Some(c)) = (field("welcomed="), field("challenged=")) {
                        shared.0.store(w, Ordering::Relaxed);
                        shared.1.store(c, Ordering::Relaxed);
                    }
                }
            });
            swarm.children.push(child);
            swarm.counts.push(counts);
        }
        Ok(swarm)
    }

    fn welcomed(&self) -> usize {
        self.counts.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
    }

    fn challenged(&self) -> usize {
        self.counts.iter().map(|c| c.1.load(Ordering::Relaxed)).sum()
    }

    async fn stop(mut self) {
        for child in &mut self.children {
            let _ = child.kill().await;
        }
    }
}

/// Times `rounds` rounds of the API calls a user and the explorer make: (which, ms).
async fn sample_api(url: &str, customer: &Client, rounds: usize) -> Vec<(usize, f64)> {
    let http = reqwest::Client::new();
    let quote = herd_proto::api::CreateCluster { nodes: 1, hours: Some(1), ..Default::default() };
    let mut samples = Vec::with_capacity(rounds * SAMPLED.len());
    for _ in 0..rounds {
        for (which, path) in SAMPLED.iter().enumerate() {
            let started = Instant::now();
            if *path == "quote" {
                let _ = customer.quote(&quote).await;
            } else if let Ok(response) = http.get(format!("{url}{path}")).send().await {
                let _ = response.bytes().await;
            }
            samples.push((which, started.elapsed().as_secs_f64() * 1000.0));
        }
    }
    samples
}

fn latency(samples: Vec<(usize, f64)>) -> Latency {
    let max_by_request_ms = SAMPLED
        .iter()
        .enumerate()
        .map(|(which, path)| {
            let slowest = samples.iter().filter(|(w, _)| *w == which).map(|(_, ms)| *ms).fold(0.0, f64::max);
            (path.to_string(), slowest)
        })
        .collect();
    let mut all: Vec<f64> = samples.into_iter().map(|(_, ms)| ms).collect();
    all.sort_by(f64::total_cmp);
    let at = |q: f64| all.get(((all.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0.0);
    Latency { requests: all.len(), p50_ms: at(0.5), p99_ms: at(0.99), max_by_request_ms }
}

async fn account(url: &str) -> anyhow::Result<(SigningKey, Client)> {
    let key = SigningKey::generate(&mut OsRng);
    let anonymous = Client::new(url, None);
    let (credential, _) = sign_in(&anonymous, &key).await?;
    Ok((key, anonymous.with_api_key(credential.api_key)))
}

/// Runs the honest join twice, without and with the flood; `dir` holds each run's data.
pub async fn flood(args: &SybilArgs, dir: &Path) -> anyhow::Result<Figures> {
    let baseline = join(args, &dir.join("baseline"), 0).await.context("the quiet run")?;
    let flood = join(args, &dir.join("flood"), args.fakes).await.context("the flood")?;
    let honest_ready_ratio = flood.honest_ready_ms as f64 / (baseline.honest_ready_ms as f64).max(1.0);
    let p99_ratio = flood.api_during.p99_ms / baseline.api_during.p99_ms.max(0.001);
    Ok(Figures {
        fakes: args.fakes,
        owners: args.owners,
        honest: args.honest,
        baseline,
        flood,
        honest_ready_ratio,
        p99_ratio,
    })
}

/// Samples taken while the honest join, at least (rounds of `SAMPLED`).
const ROUNDS_DURING_MIN: usize = 40;

/// A fresh network; `fakes` fake devices connect first, then the honest workers join.
async fn join(args: &SybilArgs, dir: &Path, fakes: u64) -> anyhow::Result<Phase> {
    std::fs::create_dir_all(dir).context("the run's directory")?;
    let listen = "127.0.0.1:0".parse().expect("an address");
    let mut config =
        herd_coordinator::CoordinatorConfig::new(format!("sqlite://{}", dir.join("herd.db").display()), listen);
    config.faucet = true;
    config.proof.policy.target_ms = args.proof_target_ms;
    config.proof.retry_after = Duration::from_secs(60);
    config.auth_rate_limit = herd_coordinator::RateLimit { burst: 1, per_minute: 0 };
    let heartbeat = config.heartbeat_interval;
    let coordinator = herd_coordinator::start(config).await.context("starting the coordinator")?;
    let url = coordinator.url();
    let (_, customer) = account(&url).await?;
    let mut owners = Vec::new();
    for _ in 0..args.owners.min(fakes.max(1)) {
        owners.push(Arc::new(account(&url).await?.0));
    }
    let (honest_key, honest_client) = account(&url).await?;
    let honest_owner = Address::parse(&bs58::encode(honest_key.verifying_key().as_bytes()).into_string())?;

    let owners_file = dir.join("owners.keys");
    let keys: String = owners.iter().map(|k| herd_core::hex::encode(&k.to_bytes()) + "\n").collect();
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&owners_file)?;
        file.write_all(keys.as_bytes()).context("the owners file")?;
    }
    let binary = match &args.swarm_binary {
        Some(binary) => binary.clone(),
        None => std::env::current_exe().context("this program's path")?,
    };
    let started = Instant::now();
    let swarm = Swarm::start(&binary, &url, &owners_file, fakes, heartbeat).await?;
    let connect_deadline = Instant::now() + Duration::from_secs(args.wait_s);
    while swarm.welcomed() < fakes as usize && Instant::now() < connect_deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fakes_connect_ms = started.elapsed().as_millis() as u64;
    let fakes_connected = swarm.welcomed();
    let _ = sample_api(&url, &customer, 10).await; // warm up
    let before = sample_api(&url, &customer, 60).await;

    // The honest workers join while the fakes hold the network's attention.
    let honest_started = Instant::now();
    let mut agents = Vec::new();
    for i in 0..args.honest {
        let mut agent = herd_worker::AgentConfig::owned_by(&url, dir.join(format!("honest-{i}")), &honest_key, "DE");
        agent.advertise_addr = Some("127.0.0.1".into());
        let (stop, stop_rx) = watch::channel(false);
        agents.push((stop, tokio::spawn(herd_worker::run(agent, stop_rx))));
    }
    let mut during = Vec::new();
    let mut ready_at: std::collections::HashMap<Address, u64> = Default::default();
    let wait_deadline = honest_started + Duration::from_secs(args.wait_s);
    while ready_at.len() < args.honest as usize || during.len() < ROUNDS_DURING_MIN * SAMPLED.len() {
        during.extend(sample_api(&url, &customer, 1).await);
        if ready_at.len() < args.honest as usize {
            let devices = honest_client.devices(&format!("owner={honest_owner}&limit=1000")).await?;
            for device in devices.iter().filter(|d| d.state == DeviceState::Ready) {
                ready_at.entry(device.id.clone()).or_insert_with(|| honest_started.elapsed().as_millis() as u64);
            }
        }
        if Instant::now() > wait_deadline {
            swarm.stop().await;
            bail!("only {} of {} honest devices were ready after {} s", ready_at.len(), args.honest, args.wait_s);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut each: Vec<u64> = ready_at.into_values().collect();
    each.sort_unstable();
    let honest_ready_ms = each.last().copied().unwrap_or(0);
    let fake_challenges = swarm.challenged();

    for (stop, agent) in agents {
        let _ = stop.send(true);
        let _ = agent.await;
    }
    swarm.stop().await;
    coordinator.shutdown().await;
    Ok(Phase {
        fakes_connected,
        fakes_connect_ms,
        honest_ready_ms,
        honest_ready_each_ms: each,
        fake_challenges,
        api_before: latency(before),
        api_during: latency(during),
    })
}

pub async fn run(context: &Context, args: &SybilArgs) -> anyhow::Result<i32> {
    let dir = std::env::temp_dir().join(format!("herd-bench-sybil-{}", std::process::id()));
    std::fs::create_dir_all(&dir).context("bench directory")?;
    let figures = flood(args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    let figures = figures?;
    if context.json {
        print_json(&figures);
        return Ok(0);
    }
    let (quiet, flood) = (&figures.baseline, &figures.flood);
    let api = |l: &Latency| format!("{:.2} / {:.2} ms ({} requests)", l.p50_ms, l.p99_ms, l.requests);
    let rows = vec![
        vec![
            "fake devices (8× H100, never answering)".into(),
            "none".into(),
            format!("{} over {} owners", figures.fakes, figures.owners),
        ],
        vec![
            "fakes connected".into(),
            "-".into(),
            format!("{} in {} ms", flood.fakes_connected, flood.fakes_connect_ms),
        ],
        vec![
            format!("all {} honest CPU workers ready", figures.honest),
            format!("{} ms", quiet.honest_ready_ms),
            format!("{} ms ({:.2}×)", flood.honest_ready_ms, figures.honest_ready_ratio),
        ],
        vec!["challenges the fakes ignored meanwhile".into(), "-".into(), flood.fake_challenges.to_string()],
        vec!["API p50 / p99 before the join".into(), api(&quiet.api_before), api(&flood.api_before)],
        vec!["API p50 / p99 during the join".into(), api(&quiet.api_during), api(&flood.api_during)],
        vec!["p99 during, flood / quiet (target ≤ 2)".into(), "-".into(), format!("{:.2}", figures.p99_ratio)],
    ];
    crate::outln!("{}", table(&["", "QUIET NETWORK", "UNDER THE FLOOD"], &rows));
    Ok(0)
}
