//! `herd bench cluster`: how long from `cluster create` to a Ray cluster with every node
//! joined, against starting the same Ray nodes by hand (`ray start --head`, then
//! `ray start --address`) from the same Python environment, in the same run. The ratio is
//! what herd adds: reservation, messages to the agents, port choice, readiness reports.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use herd_core::ray::RAY_VERSION_DEFAULT;
use herd_proto::api::{CreateCluster, Deposit, RayClusterState};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::Context;
use crate::client::Client;
use crate::credentials::sign_in;
use crate::local::{LocalConfig, LocalNetwork};
use crate::output::{print_json, table};

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Clusters created (and Ray clusters started by hand) per side.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    runs: u32,
    /// Nodes per cluster (this machine and simulated devices, all running here).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(2..=8))]
    nodes: u32,
}

#[derive(Debug, Serialize)]
struct Figures {
    nodes: u32,
    runs: u32,
    herd_ms: Vec<u64>,
    by_hand_ms: Vec<u64>,
    herd_median_ms: u64,
    by_hand_median_ms: u64,
    ratio: f64,
}

const READY_MAX: Duration = Duration::from_secs(600);

pub async fn run(context: &Context, args: &ClusterArgs) -> anyhow::Result<i32> {
    let dir = std::env::temp_dir().join(format!("herd-bench-cluster-{}", std::process::id()));
    let mut config = LocalConfig::new(dir.clone(), "127.0.0.1:0".parse().expect("an address"));
    // This machine and simulated devices (the fleet's mix is mostly GPU rigs; enough of it
    // takes CPU clusters).
    config.sim_workers = args.nodes as usize * 3;
    let envs = config.ray_envs_dir.clone();
    let network = LocalNetwork::start(config).await?;
    let result = measure(context, &network.url(), &envs, args).await;
    network.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    let figures = result?;
    if context.json {
        print_json(&figures);
    } else {
        let ms = |v: &[u64]| v.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ");
        crate::outln!(
            "{}",
            table(
                &["", "RUNS (ms)", "MEDIAN (ms)"],
                &[
                    vec![
                        "herd cluster create → Ray ready".into(),
                        ms(&figures.herd_ms),
                        figures.herd_median_ms.to_string()
                    ],
                    vec!["ray start by hand".into(), ms(&figures.by_hand_ms), figures.by_hand_median_ms.to_string()],
                ],
            )
        );
        crate::outln!("{} nodes; overhead ratio herd / by hand: {:.2}×", figures.nodes, figures.ratio);
    }
    Ok(0)
}

async fn measure(context: &Context, url: &str, envs: &Path, args: &ClusterArgs) -> anyhow::Result<Figures> {
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let (credential, _) = sign_in(&Client::new(url, None), &key).await?;
    let client = Client::new(url, Some(credential.api_key));
    client.deposit(&Deposit { asset: herd_core::Asset::Usdc, amount: "1000".into(), id: None }).await?;
    let request = CreateCluster { nodes: args.nodes, hours: Some(1), ..Default::default() };
    // A first cluster installs Ray if this machine has never run it: not timed.
    if !context.json {
        eprintln!("warming up (the first Ray cluster on a machine installs Ray)…");
    }
    once_with_herd(&client, &request).await?;
    let bin = envs.join(RAY_VERSION_DEFAULT).join("bin");
    let (mut herd_ms, mut by_hand_ms) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        // Alternate the sides so drift on a noisy machine hits both.
        herd_ms.push(once_with_herd(&client, &request).await?);
        by_hand_ms.push(once_by_hand(&bin, args.nodes).await?);
    }
    let median = |v: &[u64]| {
        let mut sorted = v.to_vec();
        sorted.sort_unstable();
        sorted[sorted.len() / 2]
    };
    let (herd_median_ms, by_hand_median_ms) = (median(&herd_ms), median(&by_hand_ms));
    Ok(Figures {
        nodes: args.nodes,
        runs: args.runs,
        herd_ms,
        by_hand_ms,
        herd_median_ms,
        by_hand_median_ms,
        ratio: herd_median_ms as f64 / by_hand_median_ms.max(1) as f64,
    })
}

/// Creates a cluster, waits for Ray on every node, deletes it; the time to ready.
async fn once_with_herd(client: &Client, request: &CreateCluster) -> anyhow::Result<u64> {
    let started = Instant::now();
    let cluster = client.create_cluster(request).await?;
    loop {
        let current = client.cluster(cluster.id.as_str()).await?;
        if current.ray.as_ref().is_some_and(|r| r.state == RayClusterState::Ready) {
            break;
        }
        if started.elapsed() > READY_MAX {
            bail!("cluster {} was not ready within {} s", cluster.id, READY_MAX.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed().as_millis() as u64;
    client.delete_cluster(cluster.id.as_str()).await?;
    // Let the nodes stop before the next run starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(elapsed)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

fn ray(bin: &Path, home: &Path, args: &[String]) -> anyhow::Result<Child> {
    Command::new(bin.join("ray"))
        .args(args)
        .env("HOME", home)
        .env("RAY_USAGE_STATS_ENABLED", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {}", bin.join("ray").display()))
}

/// Reads `ray start`'s output until it says the node runs.
async fn started(child: &mut Child) -> anyhow::Result<()> {
    let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    while let Some(line) = lines.next_line().await? {
        if line.contains("Ray runtime started") {
            // Keep draining so the node never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok(());
        }
    }
    bail!("ray start ended before the node was up")
}

/// What a person would do: `ray start --head`, then `ray start --address` per other node,
/// with the same ports and resources herd uses; done when every node is up and the
/// dashboard answers (herd's readiness, too).
async fn once_by_hand(bin: &Path, nodes: u32) -> anyhow::Result<u64> {
    let home = std::env::temp_dir().join(format!("herd-bench-by-hand-{}", std::process::id()));
    std::fs::create_dir_all(&home)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()).to_string();
    let (gcs, dashboard) = (free_port()?, free_port()?);
    let common = |extra: &[String]| -> anyhow::Result<Vec<String>> {
        let mut args: Vec<String> =
            ["start", "--block", "--disable-usage-stats", "--node-ip-address", "127.0.0.1"].map(String::from).to_vec();
        args.extend(["--num-cpus".into(), cpus.clone(), "--object-store-memory".into(), (512u64 << 20).to_string()]);
        args.extend(["--dashboard-agent-listen-port".into(), free_port()?.to_string()]);
        args.extend_from_slice(extra);
        Ok(args)
    };
    let started_at = Instant::now();
    let head_args = common(&[
        "--head".into(),
        "--port".into(),
        gcs.to_string(),
        "--dashboard-host".into(),
        "127.0.0.1".into(),
        "--dashboard-port".into(),
        dashboard.to_string(),
        "--ray-client-server-port".into(),
        free_port()?.to_string(),
    ])?;
    let mut children = vec![ray(bin, &home, &head_args)?];
    let outcome = async {
        started(&mut children[0]).await?;
        let client = reqwest::Client::builder().user_agent("herd-bench").build()?;
        loop {
            let answered = client.get(format!("http://127.0.0.1:{dashboard}/api/version")).send().await;
            if answered.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for _ in 1..nodes {
            let mut child = ray(bin, &home, &common(&["--address".into(), format!("127.0.0.1:{gcs}")])?)?;
            let joined = started(&mut child).await;
            children.push(child);
            joined?;
        }
        anyhow::Ok(started_at.elapsed().as_millis() as u64)
    }
    .await;
    for child in &mut children {
        if let Some(pid) = child.id() {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        if let Some(pid) = child.id() {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
    let _ = std::fs::remove_dir_all(&home);
    tokio::time::sleep(Duration::from_secs(3)).await;
    outcome
}
