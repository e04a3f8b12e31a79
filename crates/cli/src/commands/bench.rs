//! `herd bench …`: benchmarks that print figures (speed is measured here, never asserted in
//! timed tests). Everything runs on one thread, so the figures are per core.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use herd_market::index::MarketIndex;
use herd_market::matching::place_by_scan;
use herd_market::pricing::PriceBook;
use herd_sim::market::{pool, requests, Size};
use serde::Serialize;

use super::Context;

#[path = "bench_cluster.rs"]
mod cluster;
#[path = "bench_explorer.rs"]
mod explorer;
#[path = "bench_heal.rs"]
mod heal;
#[path = "bench_ledger.rs"]
mod ledger;
#[path = "bench_proof.rs"]
mod proof;
#[path = "bench_proof_gpu.rs"]
mod proof_gpu;
#[path = "bench_sybil.rs"]
pub mod sybil;
use crate::output::{print_json, table};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Placement speed and index memory on a simulated pool, against a naive full scan.
    Market(MarketArgs),
    /// Ledger transfers per second with durable (fsynced) SQLite commits: batched, and one
    /// transfer per transaction as the baseline, side by side.
    Ledger(LedgerArgs),
    /// Proof of compute: challenge sizes per claim, solving time on this CPU, and the
    /// coordinator's CPU per verification.
    Proof(ProofArgs),
    /// Ray clusters: `cluster create` to Ray ready on every node, against `ray start` of the
    /// same nodes by hand, side by side.
    Cluster(cluster::ClusterArgs),
    /// Self-healing: a node's agent stops without a word; the time until its device is
    /// offline and until a replacement holds its rank, against the 15 s and 30 s targets.
    Heal(heal::HealArgs),
    /// Explorer pages on a large simulated network (100,000 devices by default): time per
    /// page against the 200 ms target.
    Explorer(explorer::ExplorerArgs),
    /// A Sybil flood: thousands of fake 8× H100 devices that never answer a proof, spread over
    /// many owners, while honest CPU workers join: how long until the honest are ready, and
    /// the API's latency during the flood against its idle figure.
    Sybil(sybil::SybilArgs),
    /// The fake devices of `herd bench sybil`, in a process of their own.
    #[command(hide = true)]
    SybilSwarm(sybil::SwarmArgs),
}

#[derive(Debug, Args)]
pub struct ProofArgs {
    /// What an honest device should spend per proof, ms (the network's policy).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(10..=600_000))]
    target_ms: u64,
    /// The GPU check: solve and verify a full-size proof of compute and proof of VRAM on
    /// this machine's NVIDIA GPUs (exits 1 on a mismatch or a missed deadline, 2 without a
    /// usable GPU). See scripts/gpu-check.sh.
    #[arg(long)]
    gpu: bool,
}

#[derive(Debug, Args)]
pub struct LedgerArgs {
    /// Transfers in the batched run.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    transfers: u64,
    /// Transfers per batch (one database transaction, one signature).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch: u64,
    /// Transfers in the one-per-transaction baseline.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    single: u64,
    /// An empty database to measure instead of a temporary SQLite file (e.g. a fresh
    /// PostgreSQL database or schema: postgres://USER@HOST/DB?options[search_path]=SCHEMA).
    #[arg(long, value_name = "URL")]
    pub db: Option<String>,
}

#[derive(Debug, Args)]
pub struct MarketArgs {
    /// Simulated devices in the supply index.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=20_000_000))]
    devices: u64,
    /// Requests in the stream.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    requests: u64,
    /// One request in this many is a 64–1,000-GPU cluster.
    #[arg(long, default_value_t = 200)]
    large_every: usize,
    /// Requests timed side by side against the naive scan (each scans the whole pool).
    #[arg(long, default_value_t = 200)]
    naive_requests: usize,
    /// The seed of the simulated fleet and requests (the same seed, the same run).
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// Resident memory of this process, from /proc (Linux); None elsewhere.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[derive(Serialize)]
struct Report {
    devices: u64,
    index_build_ms: u128,
    index_resident_bytes_per_device: Option<u64>,
    index_counted_bytes_per_device: u64,
    small_requests: usize,
    small_placed: usize,
    small_placements_per_sec: f64,
    small_p50_us: f64,
    small_p99_us: f64,
    large_requests: usize,
    large_placed: usize,
    large_gpus_max: u64,
    large_p50_ms: f64,
    large_p99_ms: f64,
    large_max_ms: f64,
    naive_requests: usize,
    naive_mean_us: f64,
    index_mean_us_same_requests: f64,
    speedup_vs_naive: f64,
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub async fn run(context: &Context, command: BenchCommand) -> anyhow::Result<i32> {
    let args = match command {
        BenchCommand::Market(args) => args,
        BenchCommand::Ledger(args) => return ledger::run(context, &args).await,
        BenchCommand::Proof(args) if args.gpu => return proof_gpu::run(context, args.target_ms).await,
        BenchCommand::Proof(args) => return proof::run(context, &args).await,
        BenchCommand::Cluster(args) => return cluster::run(context, &args).await,
        BenchCommand::Heal(args) => return heal::run(context, &args).await,
        BenchCommand::Explorer(args) => return explorer::run(context, &args).await,
        BenchCommand::Sybil(args) => return sybil::run(context, &args).await,
        BenchCommand::SybilSwarm(args) => return sybil::swarm(context, &args).await,
    };
    let report = tokio::task::spawn_blocking(move || bench_market(&args)).await?;
    if context.json {
        print_json(&report);
        return Ok(0);
    }
    let rows = vec![
        vec!["devices".into(), report.devices.to_string()],
        vec!["index build".into(), format!("{} ms", report.index_build_ms)],
        vec![
            "index memory per device".into(),
            format!(
                "{} bytes resident ({} counted)",
                report.index_resident_bytes_per_device.map_or("?".into(), |b| b.to_string()),
                report.index_counted_bytes_per_device
            ),
        ],
        vec![
            "≤ 8-GPU requests".into(),
            format!(
                "{} ({} placed): {:.0} placements/s, p50 {:.1} µs, p99 {:.1} µs",
                report.small_requests,
                report.small_placed,
                report.small_placements_per_sec,
                report.small_p50_us,
                report.small_p99_us
            ),
        ],
        vec![
            "64–1,000-GPU clusters".into(),
            format!(
                "{} ({} placed, up to {} GPUs): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                report.large_requests,
                report.large_placed,
                report.large_gpus_max,
                report.large_p50_ms,
                report.large_p99_ms,
                report.large_max_ms
            ),
        ],
        vec![
            "naive full scan, same requests".into(),
            format!(
                "{} requests: {:.1} µs mean vs {:.1} µs indexed — index {:.0}× faster",
                report.naive_requests,
                report.naive_mean_us,
                report.index_mean_us_same_requests,
                report.speedup_vs_naive
            ),
        ],
    ];
    crate::outln!("{}", table(&["MARKET BENCH (one core)", ""], &rows));
    Ok(0)
}

fn bench_market(args: &MarketArgs) -> Report {
    let devices = args.devices as usize;
    let offers = pool(args.seed, devices);
    let before = resident_bytes();
    let started = Instant::now();
    let mut index = MarketIndex::new();
    for offer in &offers {
        index.upsert(offer, true);
    }
    let index_build_ms = started.elapsed().as_millis();
    let resident = before.zip(resident_bytes()).map(|(b, a)| a.saturating_sub(b) / args.devices);
    drop(offers);
    let prices = PriceBook::new();
    let stream = requests(args.seed, args.requests as usize, args.large_every);

    // Keep the pool about two-thirds free: release the oldest leases as new ones are made.
    let mut leases: VecDeque<Vec<[u8; 32]>> = VecDeque::new();
    let keep_free = devices * 2 / 3;
    let (mut small, mut large) = (Vec::new(), Vec::new());
    let (mut small_placed, mut large_placed, mut large_gpus_max) = (0, 0, 0u64);
    for (size, request) in &stream {
        let started = Instant::now();
        let placed = index.place(request, &prices).ok().and_then(|p| {
            let keys = p.devices();
            index.reserve(&keys).ok().map(|()| keys)
        });
        let elapsed = started.elapsed();
        match size {
            Size::Small => small.push(elapsed),
            Size::Large => large.push(elapsed),
        }
        if let Some(keys) = placed {
            match size {
                Size::Small => small_placed += 1,
                Size::Large => {
                    large_placed += 1;
                    let gpus = request.nodes as u64 * 8;
                    large_gpus_max = large_gpus_max.max(gpus);
                }
            }
            leases.push_back(keys);
        }
        while index.free_count() < keep_free {
            let Some(oldest) = leases.pop_front() else { break };
            for key in oldest {
                index.set_free(&key, true);
            }
        }
    }

    // Side by side on the same state: the index and a scan of every device.
    let (mut naive_total, mut indexed_total) = (Duration::ZERO, Duration::ZERO);
    let naive: Vec<_> = stream.iter().filter(|(s, _)| *s == Size::Small).take(args.naive_requests).collect();
    for (_, request) in &naive {
        let started = Instant::now();
        let by_scan = place_by_scan(&index, request, &prices);
        naive_total += started.elapsed();
        let started = Instant::now();
        let by_index = index.place(request, &prices).ok();
        indexed_total += started.elapsed();
        assert_eq!(by_scan.is_some(), by_index.is_some(), "the index and the scan disagree");
    }

    let small_total: Duration = small.iter().sum();
    small.sort_unstable();
    large.sort_unstable();
    let naive_count = naive.len().max(1) as f64;
    Report {
        devices: args.devices,
        index_build_ms,
        index_resident_bytes_per_device: resident,
        index_counted_bytes_per_device: (index.approx_bytes() / devices.max(1)) as u64,
        small_requests: small.len(),
        small_placed,
        small_placements_per_sec: small.len() as f64 / small_total.as_secs_f64().max(1e-9),
        small_p50_us: micros(percentile(&small, 0.50)),
        small_p99_us: micros(percentile(&small, 0.99)),
        large_requests: large.len(),
        large_placed,
        large_gpus_max,
        large_p50_ms: micros(percentile(&large, 0.50)) / 1000.0,
        large_p99_ms: micros(percentile(&large, 0.99)) / 1000.0,
        large_max_ms: micros(large.last().copied().unwrap_or_default()) / 1000.0,
        naive_requests: naive.len(),
        naive_mean_us: micros(naive_total) / naive_count,
        index_mean_us_same_requests: micros(indexed_total) / naive_count,
        speedup_vs_naive: naive_total.as_secs_f64() / indexed_total.as_secs_f64().max(1e-9),
    }
}
