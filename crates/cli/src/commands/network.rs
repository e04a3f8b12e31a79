//! `herd up`, `herd demo` and `herd coordinator`: running a network.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use herd_coordinator::CoordinatorConfig;
use herd_core::JobState;
use herd_proto::api::{CreateCluster, CreateJob, Deposit, LogEvent};

use super::{parse_country, Context};
use crate::client::Client;
use crate::credentials::{data_dir, sign_in};
use crate::instance_lock::InstanceLock;
use crate::local::{LocalConfig, LocalNetwork};
use crate::output::{print_json, spinner};

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where the network lives: database, keys, every device's job and Ray directories
    /// (default: the user's data dir). One network per data dir: a second is refused. Ray's
    /// managed Python environments are shared by all networks of this user, since installing
    /// Ray takes a while: HERD_RAY_ENVS_DIR moves them (e.g. into the data dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address the coordinator serves the API, the web pages and worker sockets on.
    #[arg(long, default_value = "127.0.0.1:7700")]
    listen: SocketAddr,
    /// Simulated supplier devices to add (clearly marked simulated everywhere).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=5000))]
    sim_workers: u32,
    /// Country of this machine's device.
    #[arg(long, env = "HERD_COUNTRY", default_value = "US", value_parser = parse_country)]
    country: String,
    /// What runs this machine's tasks: `process` (the default here), `docker` (isolated
    /// containers in herd/base:bookworm; build it with deploy/images/build.sh base), or
    /// `auto` (docker when an engine is reachable, else process).
    #[arg(long, value_enum, default_value = "process")]
    runtime: super::worker::Runtime,
    /// Do not run the overlay lighthouse (by default it runs when `nebula` is installed, so
    /// multi-node leases of real machines that join get a private network).
    #[arg(long)]
    no_overlay: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo network lives (default: `demo` under the user's data dir; reset each run).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to serve on; if it is taken, a free port is used.
    #[arg(long, default_value = "127.0.0.1:7700")]
    listen: SocketAddr,
    /// Simulated supplier devices beside this machine (clearly marked simulated everywhere).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    sim_workers: u32,
    /// Stop the network and exit after the job instead of leaving it running.
    #[arg(long)]
    exit: bool,
}

#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    /// Database URL: sqlite://PATH (created if missing; one coordinator) or
    /// postgres://USER[:PASSWORD]@HOST[:PORT]/DB (production; needs --key-dir).
    #[arg(long, env = "HERD_DB", default_value = "sqlite://herd.db")]
    db: String,
    /// Directory of the coordinator's keys (ledger signing key, overlay CA), mode 0600,
    /// created if missing. Default: beside a SQLite database; required with PostgreSQL, and
    /// the same keys on every replica.
    #[arg(long, env = "HERD_KEY_DIR", value_name = "DIR")]
    key_dir: Option<std::path::PathBuf>,
    /// NATS server the replicas of one network talk through (nats://HOST:PORT): run several
    /// coordinators on one PostgreSQL database behind a load balancer. Without it, a second
    /// coordinator on the database is refused.
    #[arg(long, env = "HERD_BUS", value_name = "URL")]
    bus: Option<String>,
    /// Address to serve the API, the web pages and worker sockets on.
    #[arg(long, env = "HERD_LISTEN", default_value = "127.0.0.1:7700")]
    listen: SocketAddr,
    /// Heartbeat interval told to workers, in milliseconds.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    heartbeat_interval_ms: u64,
    /// A development network: `herd wallet deposit` mints test funds (never in production).
    #[arg(long)]
    faucet: bool,
    /// The IO price oracle for this network, USD per IO (a fixed price; devnets and tests).
    #[arg(long, default_value = "2.00", value_parser = herd_core::money::parse_usd)]
    io_price: i64,
    /// A genesis allocation, ADDRESS=IO (repeatable; they must sum to 500,000,000 IO). Default:
    /// all to the treasury. Only the first start of a database mints.
    #[arg(long = "genesis", value_parser = parse_allocation)]
    genesis: Vec<(herd_ledger::AccountKey, u64)>,
    /// Missed heartbeats before a device is offline.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    missed_heartbeats: u32,
    /// Admit simulated devices (with token-sized proofs of compute): devnets and tests only.
    #[arg(long)]
    allow_simulated: bool,
    /// How long an honest device should spend on one proof of compute (e.g. 10s, 500ms);
    /// challenges are sized from it and the claimed hardware.
    #[arg(long, default_value = "10s", value_parser = parse_proof_target)]
    proof_target: Duration,
    /// Requests per minute (and at once) each client address may make to the sign-in and
    /// registration endpoints; 0 turns the limit off.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    auth_rate_limit: u32,
    /// Requests per minute each API key may make to the whole API (each client address
    /// gets 2.5 times as many); bursts of a tenth of it. 0 turns these limits off.
    #[arg(long, default_value_t = 6000, value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    api_rate_limit: u32,
    /// Behind a reverse proxy that every request passes through: take the client's address
    /// from the last `X-Forwarded-For` entry (otherwise all clients look like the proxy).
    #[arg(long)]
    trust_forwarded_for: bool,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key) instead of plain HTTP.
    #[arg(long, requires = "tls_key", value_name = "PEM")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "PEM")]
    tls_key: Option<std::path::PathBuf>,
    /// Run the overlay lighthouse and relay on this UDP address (e.g. 0.0.0.0:4242): every
    /// multi-node lease of devices that can join gets its own private network (Nebula).
    /// Without it, nodes reach each other at their advertised addresses (a trusted LAN).
    #[arg(long, env = "HERD_OVERLAY_LISTEN", value_name = "ADDR")]
    overlay_listen: Option<SocketAddr>,
    /// How workers reach the lighthouse, HOST:PORT (repeatable; default: the host they reach
    /// the coordinator at, with --overlay-listen's port).
    #[arg(long = "overlay-public", requires = "overlay_listen", value_name = "HOST:PORT")]
    overlay_public: Vec<String>,
    /// The Nebula program the lighthouse runs on.
    #[arg(long, env = "HERD_NEBULA", default_value = "nebula")]
    nebula: PathBuf,
    /// Another lighthouse and relay the operator runs (configured with `herd operator
    /// overlay-lighthouse`), INDEX=HOST:PORT (repeatable): every node also uses it.
    #[arg(long = "overlay-lighthouse", requires = "overlay_listen", value_parser = parse_lighthouse,
          value_name = "INDEX=HOST:PORT")]
    overlay_lighthouses: Vec<(usize, Vec<String>)>,
}

fn parse_lighthouse(text: &str) -> Result<(usize, Vec<String>), String> {
    let (index, address) = text.split_once('=').ok_or_else(|| format!("expected INDEX=HOST:PORT, got {text:?}"))?;
    let index: usize = index.parse().map_err(|_| format!("the lighthouse index must be 1..=15, got {index:?}"))?;
    if !(1..herd_overlay::plan::MAX_LIGHTHOUSES).contains(&index) {
        return Err(format!("the lighthouse index must be 1..=15 (0 is the coordinator's own), got {index}"));
    }
    if address.rsplit_once(':').is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err()) {
        return Err(format!("expected HOST:PORT after {index}=, got {address:?}"));
    }
    Ok((index, vec![address.to_owned()]))
}

fn parse_proof_target(text: &str) -> Result<Duration, String> {
    let target = humantime::parse_duration(text).map_err(|e| format!("{e} (expected e.g. 10s or 500ms)"))?;
    if target < Duration::from_millis(10) || target > Duration::from_secs(600) {
        return Err(format!("the proof target must be 10ms..=10m, got {text}"));
    }
    Ok(target)
}

fn parse_allocation(text: &str) -> Result<(herd_ledger::AccountKey, u64), String> {
    let (who, amount) = text.split_once('=').ok_or_else(|| format!("expected ADDRESS=IO, got {text:?}"))?;
    let account = match who {
        "treasury" => herd_ledger::AccountKey::Treasury,
        address => {
            herd_ledger::AccountKey::User(herd_core::Address::parse(address).map_err(|e| e.to_string())?.to_string())
        }
    };
    let amount = herd_core::money::parse_usd(amount)?;
    Ok((account, amount as u64))
}

/// SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

pub async fn coordinator(args: CoordinatorArgs) -> anyhow::Result<i32> {
    let mut config = CoordinatorConfig::new(args.db, args.listen);
    config.key_dir = args.key_dir;
    config.bus = args.bus;
    config.heartbeat_interval = Duration::from_millis(args.heartbeat_interval_ms);
    config.missed_heartbeats_max = args.missed_heartbeats;
    config.faucet = args.faucet;
    config.io_price_micros = args.io_price;
    config.proof.simulated_allowed = args.allow_simulated;
    config.proof.policy.target_ms = args.proof_target.as_millis() as u64;
    config.auth_rate_limit =
        herd_coordinator::RateLimit { burst: args.auth_rate_limit, per_minute: args.auth_rate_limit };
    config.api_rate_limits = herd_coordinator::ApiRateLimits::per_key_per_minute(args.api_rate_limit);
    config.trust_forwarded_for = args.trust_forwarded_for;
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls = Some(herd_coordinator::TlsFiles { cert, key });
    }
    if !args.genesis.is_empty() {
        config.genesis_allocations = args.genesis;
    }
    if let Some(listen) = args.overlay_listen {
        config.overlay = Some(herd_coordinator::OverlayConfig {
            listen,
            public: args.overlay_public,
            nebula: args.nebula,
            extra_lighthouses: args.overlay_lighthouses,
        });
    }
    let _db_lock = InstanceLock::database(&config.db_url)?;
    let db_url = config.db_url.clone();
    let bus_url = config.bus.clone();
    let coordinator = herd_coordinator::start(config).await?;
    eprintln!("herd coordinator serving {} (Ctrl-C to stop)", coordinator.url());
    eprintln!("database: {} {}", coordinator.backend().name(), herd_coordinator::store::redact_url(&db_url));
    match &bus_url {
        Some(bus) => eprintln!("bus: {bus} (a replica; leader now: {})", coordinator.is_leader()),
        None => eprintln!("bus: none (the only coordinator on this database)"),
    }
    match coordinator.overlay_listen() {
        Some(addr) => eprintln!("overlay lighthouse and relay on UDP {addr}"),
        None => eprintln!(
            "overlay off: nodes reach each other at their advertised addresses (--overlay-listen turns it on)"
        ),
    }
    wait_for_signal().await;
    eprintln!("shutting down…");
    coordinator.shutdown().await;
    Ok(0)
}

pub async fn up(context: &Context, args: UpArgs) -> anyhow::Result<i32> {
    let mut config = LocalConfig::new(args.data_dir.unwrap_or_else(data_dir), args.listen);
    config.sim_workers = args.sim_workers as usize;
    config.country = args.country;
    config.local_runtime = args.runtime.into();
    config.overlay = !args.no_overlay;
    let wait = spinner(format!("starting a local network with {} simulated device(s)", args.sim_workers), context.json);
    let network = LocalNetwork::start(config.clone()).await;
    wait.finish_and_clear();
    let network = network?;
    announce(context, &network, &config);
    wait_for_signal().await;
    eprintln!("shutting down…");
    network.shutdown().await;
    Ok(0)
}

fn announce(context: &Context, network: &LocalNetwork, config: &LocalConfig) {
    if context.json {
        print_json(&serde_json::json!({
            "url": network.url(),
            "devices": network.devices,
            "supplier": network.supplier,
            "data_dir": config.data_dir,
        }));
        return;
    }
    crate::outln!("herd is up at {}", network.url());
    crate::outln!(
        "  devices: {} ({} simulated), owned by supplier {}",
        network.devices,
        config.sim_workers,
        network.supplier
    );
    crate::outln!("  data:    {}", config.data_dir.display());
    match network.overlay_listen() {
        Some(addr) => {
            crate::outln!("  overlay: lighthouse and relay on UDP {addr} (multi-node leases of real machines)")
        }
        None if config.overlay => crate::outln!("  overlay: off — {}", herd_overlay::INSTALL_HINT),
        None => crate::outln!("  overlay: off (--no-overlay)"),
    }
    crate::outln!("  API:     {}/v1/openapi.json   metrics: {}/metrics", network.url(), network.url());
    crate::outln!(
        "  web:     {}/ (explorer)   {}/console (sign in: herd account login --browser)",
        network.url(),
        network.url()
    );
    crate::outln!("try: export HERD_COORDINATOR={}", network.url());
    crate::outln!("     herd account create && herd market devices && herd cluster create --cpu --nodes 2");
    crate::outln!("Ctrl-C stops the network.");
}

/// The demo's workload: the batch-inference example, shipped inside the binary.
const BATCH_INFERENCE_EXAMPLE: &str = include_str!("../../../../examples/batch-inference/main.py");

/// A fresh private directory for the example's files.
fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("herd-demo-{}-{}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

pub async fn demo(context: &Context, args: DemoArgs) -> anyhow::Result<i32> {
    let dir = args.data_dir.unwrap_or_else(|| data_dir().join("demo"));
    // Locked before the reset: a demo still running there keeps its network.
    let lock = InstanceLock::data_dir(&dir)?;
    reset_dir(&dir, &[InstanceLock::FILE_NAME])?;
    let mut config = LocalConfig::new(dir, args.listen);
    config.sim_workers = args.sim_workers as usize;
    let say = |text: String| {
        if !context.json {
            crate::outln!("{text}");
        }
    };

    let wait = spinner("starting a local network", context.json);
    // A taken port is found before anything else is opened: try a free one instead.
    if std::net::TcpListener::bind(config.listen).is_err() {
        config.listen.set_port(0);
    }
    let started = LocalNetwork::start_locked(config.clone(), lock).await;
    wait.finish_and_clear();
    let network = started?;
    let url = network.url();
    say(format!("1. network up at {url}: this machine + {} simulated device(s)", args.sim_workers));

    let result = demo_steps(context, &url, &say).await;
    let code = match result {
        Ok(code) => code,
        Err(error) => {
            network.shutdown().await;
            return Err(error);
        }
    };
    if args.exit {
        network.shutdown().await;
        return Ok(code);
    }
    say(format!("\nThe network keeps running at {url}. Try:"));
    say(format!("  export HERD_COORDINATOR={url}"));
    say("  herd cluster list; herd cluster show <ID>; herd job submit --cluster <ID> --working-dir examples/tuning -- python main.py".into());
    say(format!("  explorer: {url}/   console: herd account login --browser (prints a one-time sign-in link)"));
    say("Ctrl-C stops it.".into());
    wait_for_signal().await;
    network.shutdown().await;
    Ok(code)
}

/// Empties `dir` but for the entries named in `keep`.
fn reset_dir(dir: &std::path::Path, keep: &[&str]) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("cannot read the demo data dir {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read the demo data dir {}", dir.display()))?;
        if keep.iter().any(|name| entry.file_name() == *name) {
            continue;
        }
        let path = entry.path();
        let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.with_context(|| format!("cannot reset the demo data dir: cannot remove {}", path.display()))?;
    }
    Ok(())
}

async fn demo_steps(context: &Context, url: &str, say: &impl Fn(String)) -> anyhow::Result<i32> {
    let key = context.credentials.account_key_or_create()?;
    let (credential, _) = sign_in(&Client::new(url, None), &key).await?;
    context.credentials.save(url, credential.clone())?;
    say(format!("2. account {} signed in (key: {})", credential.address, context.credentials.key_path().display()));
    let client = Client::new(url, Some(credential.api_key));
    let funds = Deposit { asset: herd_core::Asset::Usdc, amount: "100".into(), id: None };
    client.deposit(&funds).await?;
    say("   100 test USDC deposited from the devnet faucet".into());

    let cluster = client.create_cluster(&CreateCluster { nodes: 2, hours: Some(1), ..Default::default() }).await?;
    say(format!(
        "3. Ray cluster {} reserved: {} nodes at {}/h",
        cluster.id,
        cluster.nodes.len(),
        herd_core::money::format_usd(cluster.price_per_hour_micros)
    ));
    for node in &cluster.nodes {
        let kind = if node.simulated { "simulated device" } else { "this machine" };
        let role = if node.ray.as_ref().is_some_and(|r| r.head) { "Ray head" } else { "Ray worker" };
        say(format!("     rank {}  {}  {}  {role}  ({kind})", node.rank, node.device_id.short(), node.country));
    }
    let started = std::time::Instant::now();
    let cluster = super::cluster::wait_for_ray(&client, cluster, context.json).await?;
    let access = cluster.ray.as_ref().map(|r| r.path.clone()).unwrap_or_default();
    say(format!("4. Ray ready on both nodes in {:.1} s; dashboard {url}{access}/", started.elapsed().as_secs_f64()));

    let workdir = tempfile_dir()?;
    std::fs::write(workdir.join("main.py"), BATCH_INFERENCE_EXAMPLE).context("cannot write the example")?;
    let package = crate::package::package_dir(&workdir)?;
    client.upload_ray_package(&access, &package.name, package.bytes.clone()).await?;
    let _ = std::fs::remove_dir_all(&workdir);
    let request = CreateJob {
        kind: herd_core::JobKind::Ray,
        runtime_env: Some(herd_proto::api::RayRuntimeEnv { working_dir: Some(package.uri()), pip: Vec::new() }),
        ..CreateJob::new(cluster.id.clone(), vec!["python".into(), "main.py".into()])
    };
    let job = client.create_job(&request).await?;
    say(format!("5. Ray job {} (examples/batch-inference: Ray Data map_batches) output:", job.id));
    let job = client
        .stream_logs(job.id.as_str(), true, 0, |event| match event {
            LogEvent::Line(line) if !context.json => crate::outln!("     {}", line.text),
            _ => {}
        })
        .await?
        .context("the log stream ended before the job did")?;
    say(format!(
        "6. job {} {}{}",
        job.id,
        job.state,
        job.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
    ));
    if context.json {
        print_json(&serde_json::json!({ "url": url, "cluster": cluster, "job": job }));
    }
    Ok(if job.state == JobState::Succeeded { 0 } else { 1 })
}
