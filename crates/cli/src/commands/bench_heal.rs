//! `herd bench heal`: how fast a cluster heals. A coordinator with the production liveness
//! settings (heartbeats every 5 s, offline after 3 missed) and simulated CPU machines, all in
//! this process; a plain cluster loses a node's agent (it stops without a word) and the bench
//! times the detection (the device is offline) and the replacement (another device holds
//! the rank), against the targets: offline within 15 s, replaced within 30 s of detection.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use ed25519_dalek::SigningKey;
use herd_core::{Address, ClusterKind, CpuSpec, DeviceSpec, DeviceState};
use herd_proto::api::{CreateCluster, Deposit};
use herd_worker::AgentConfig;
use rand::rngs::OsRng;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Context;
use crate::client::Client;
use crate::credentials::sign_in;
use crate::output::{print_json, table};

const DETECTION_TARGET_MS: u64 = 15_000;
const REPLACEMENT_TARGET_MS: u64 = 30_000;
const POLL: Duration = Duration::from_millis(50);
const WAIT_MAX: Duration = Duration::from_secs(120);

#[derive(Debug, Args)]
pub struct HealArgs {
    /// Nodes lost and replaced, one after another.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    runs: u32,
    /// Nodes per cluster (one spare machine more is started).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=32))]
    nodes: u32,
}

#[derive(Debug, Serialize)]
struct Figures {
    nodes: u32,
    heartbeat_interval_ms: u64,
    offline_after_ms: u64,
    detection_ms: Vec<u64>,
    replacement_ms: Vec<u64>,
    detection_median_ms: u64,
    replacement_median_ms: u64,
    /// Median detection over its 15 s target, and median replacement over its 30 s target.
    detection_vs_target: f64,
    replacement_vs_target: f64,
}

struct Machine {
    config: AgentConfig,
    device: Address,
    stop: watch::Sender<bool>,
    agent: JoinHandle<Result<(), herd_worker::AgentError>>,
}

fn cpu_machine(name: &str) -> DeviceSpec {
    DeviceSpec {
        hostname: name.into(),
        os: "Linux".into(),
        arch: "x86_64".into(),
        cpu: CpuSpec { model: "simulated CPU".into(), physical_cores: 4, logical_cores: 8 },
        memory_bytes: 16 << 30,
        disk_bytes: 256 << 30,
        gpus: vec![],
    }
}

fn start_agent(config: &AgentConfig) -> (watch::Sender<bool>, JoinHandle<Result<(), herd_worker::AgentError>>) {
    let (stop, stop_rx) = watch::channel(false);
    (stop, tokio::spawn(herd_worker::run(config.clone(), stop_rx)))
}

fn median(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted[sorted.len() / 2]
}

async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("gave up waiting for {what} after {} s", WAIT_MAX.as_secs());
        }
        tokio::time::sleep(POLL).await;
    }
}

pub async fn run(context: &Context, args: &HealArgs) -> anyhow::Result<i32> {
    let dir: PathBuf = std::env::temp_dir().join(format!("herd-bench-heal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).context("bench directory")?;
    let mut config = herd_coordinator::CoordinatorConfig::new(
        format!("sqlite://{}", dir.join("herd.db").display()),
        "127.0.0.1:0".parse().expect("an address"),
    );
    config.faucet = true;
    config.proof.simulated_allowed = true;
    let (heartbeat, offline_after) = (config.heartbeat_interval, config.offline_after());
    let coordinator = herd_coordinator::start(config).await.context("starting the coordinator")?;
    let result = measure(&coordinator.url(), &dir, args).await;
    coordinator.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    let (detection_ms, replacement_ms) = result?;
    let figures = Figures {
        nodes: args.nodes,
        heartbeat_interval_ms: heartbeat.as_millis() as u64,
        offline_after_ms: offline_after.as_millis() as u64,
        detection_median_ms: median(&detection_ms),
        replacement_median_ms: median(&replacement_ms),
        detection_vs_target: median(&detection_ms) as f64 / DETECTION_TARGET_MS as f64,
        replacement_vs_target: median(&replacement_ms) as f64 / REPLACEMENT_TARGET_MS as f64,
        detection_ms,
        replacement_ms,
    };
    if context.json {
        print_json(&figures);
    } else {
        let ms = |v: &[u64]| v.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ");
        let rows = [
            vec![
                "agent gone → device offline".into(),
                ms(&figures.detection_ms),
                figures.detection_median_ms.to_string(),
                format!("{DETECTION_TARGET_MS} ({:.2}×)", figures.detection_vs_target),
            ],
            vec![
                "offline → replacement holds the rank".into(),
                ms(&figures.replacement_ms),
                figures.replacement_median_ms.to_string(),
                format!("{REPLACEMENT_TARGET_MS} ({:.4}×)", figures.replacement_vs_target),
            ],
        ];
        crate::outln!("{}", table(&["", "RUNS (ms)", "MEDIAN (ms)", "TARGET (ms)"], &rows));
        crate::outln!(
            "{}-node cluster; heartbeats every {} ms, offline after {} ms of silence",
            figures.nodes,
            figures.heartbeat_interval_ms,
            figures.offline_after_ms
        );
    }
    Ok(0)
}

async fn measure(url: &str, dir: &std::path::Path, args: &HealArgs) -> anyhow::Result<(Vec<u64>, Vec<u64>)> {
    let public = Client::new(url, None);
    let supplier_key = SigningKey::generate(&mut OsRng);
    sign_in(&public, &supplier_key).await.context("supplier account")?;
    let customer_key = SigningKey::generate(&mut OsRng);
    let (credential, _) = sign_in(&public, &customer_key).await.context("customer account")?;
    let customer = Client::new(url, Some(credential.api_key));
    let funds = Deposit { asset: herd_core::Asset::Usdc, amount: "10000".into(), id: None };
    customer.deposit(&funds).await.context("customer funds")?;

    let mut machines = Vec::new();
    for n in 0..=args.nodes {
        let name = format!("machine-{n}");
        let mut config = AgentConfig::owned_by(url, dir.join(&name), &supplier_key, "US");
        config.simulated = Some(cpu_machine(&name));
        config.advertise_addr = Some("127.0.0.1".into());
        let device =
            herd_worker::keys::address_of(&herd_worker::keys::load_or_create(&config.data_dir.join("device.key"))?);
        let (stop, agent) = start_agent(&config);
        machines.push(Machine { config, device, stop, agent });
    }
    for machine in &machines {
        wait_for("every machine to be ready", async || {
            let device = public.device(machine.device.as_str()).await.ok()?;
            (device.device.state == DeviceState::Ready).then_some(())
        })
        .await?;
    }

    let (mut detection_ms, mut replacement_ms) = (Vec::new(), Vec::new());
    for run in 0..args.runs {
        let request =
            CreateCluster { nodes: args.nodes, hours: Some(1), kind: Some(ClusterKind::Plain), ..Default::default() };
        let cluster = customer.create_cluster(&request).await.context("creating the cluster")?;
        let rank = run % args.nodes;
        let lost = cluster.nodes.iter().find(|n| n.rank == rank).expect("every rank").device_id.clone();
        let machine = machines.iter_mut().find(|m| m.device == lost).expect("a machine per device");
        // The agent stops without a word: no goodbye, no more heartbeats.
        machine.agent.abort();
        let gone = Instant::now();
        wait_for("the loss to be detected", async || {
            let device = public.device(lost.as_str()).await.ok()?;
            (device.device.state == DeviceState::Offline).then_some(())
        })
        .await?;
        let detected = gone.elapsed();
        wait_for("a replacement", async || {
            let cluster = customer.cluster(cluster.id.as_str()).await.ok()?;
            let holder = cluster.nodes.iter().find(|n| n.rank == rank)?;
            (holder.device_id != lost && holder.device_state == DeviceState::Hired).then_some(())
        })
        .await?;
        let replaced = gone.elapsed() - detected;
        detection_ms.push(detected.as_millis() as u64);
        replacement_ms.push(replaced.as_millis() as u64);
        customer.delete_cluster(cluster.id.as_str()).await.context("ending the cluster")?;
        // The machine comes back for the next run.
        let (stop, agent) = start_agent(&machine.config);
        (machine.stop, machine.agent) = (stop, agent);
        wait_for("the machine to be back", async || {
            let device = public.device(lost.as_str()).await.ok()?;
            (device.device.state == DeviceState::Ready).then_some(())
        })
        .await?;
    }
    for machine in machines {
        let _ = machine.stop.send(true);
        let _ = machine.agent.await;
    }
    Ok((detection_ms, replacement_ms))
}
