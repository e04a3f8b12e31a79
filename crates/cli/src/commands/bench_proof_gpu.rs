//! `herd bench proof --gpu`: the GPU check. On a machine with NVIDIA GPUs, detect them through
//! NVML, load CUDA, then solve and verify a full-size admission proof and a full-size proof of
//! VRAM exactly as a worker would, and print the solve time, the achieved TFLOP/s, the share
//! of an hour the re-checks cost and the verifier's time. Exits 1 on any mismatch or missed
//! deadline, 2 when the machine has no usable GPU. Needs no network.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _};
use herd_core::catalog;
use herd_verify::vram::{check_vram, size_vram};
use herd_verify::{challenge_seed, check, choose, size, Claim, Policy};
use serde::Serialize;

use crate::commands::Context;
use crate::output::{print_json, table};

const DEVICE: &str = "gpu-check-device";

#[derive(Serialize)]
struct GpuCheck {
    gpus: Vec<String>,
    model: String,
    /// The admission proof of compute.
    rows: u32,
    n: u32,
    steps: u32,
    work_tflop: f64,
    solve_ms: f64,
    achieved_tflops: f64,
    expected_ms: u64,
    deadline_ms: u64,
    open_ms: f64,
    verify_ms: f64,
    /// The proof of VRAM.
    vram_gib_per_gpu: f64,
    fill_ms: f64,
    fill_deadline_ms: u64,
    walk_ms: f64,
    walk_expected_ms: u64,
    walk_deadline_ms: u64,
    vram_verify_ms: f64,
    /// Both proofs at the re-check rate (≤ 1.38 an hour), share of an hour.
    hour_share_percent: f64,
    passed: bool,
    problems: Vec<String>,
}

pub async fn run(context: &Context, target_ms: u64) -> anyhow::Result<i32> {
    let checked = tokio::task::spawn_blocking(move || measure(target_ms)).await?;
    let result = match checked {
        Ok(result) => result,
        Err(error) => {
            eprintln!("herd: GPU check: {error:#}");
            return Ok(2);
        }
    };
    if context.json {
        print_json(&result);
    } else {
        let cells = vec![
            vec!["GPUs".into(), result.gpus.join("; ")],
            vec![
                "compute chain".into(),
                format!("{}×{} · {} steps = {:.0} TFLOP", result.rows, result.n, result.steps, result.work_tflop),
            ],
            vec![
                "solve".into(),
                format!(
                    "{:.0} ms ({:.0} TFLOP/s); expected {} ms, deadline {} ms",
                    result.solve_ms, result.achieved_tflops, result.expected_ms, result.deadline_ms
                ),
            ],
            vec!["openings (recomputed)".into(), format!("{:.0} ms", result.open_ms)],
            vec!["verifier".into(), format!("{:.1} ms", result.verify_ms)],
            vec![
                "VRAM fill".into(),
                format!(
                    "{:.1} GiB per GPU in {:.0} ms (deadline {} ms)",
                    result.vram_gib_per_gpu, result.fill_ms, result.fill_deadline_ms
                ),
            ],
            vec![
                "VRAM walks".into(),
                format!(
                    "{:.0} ms; expected {} ms, deadline {} ms",
                    result.walk_ms, result.walk_expected_ms, result.walk_deadline_ms
                ),
            ],
            vec!["VRAM verifier".into(), format!("{:.1} ms", result.vram_verify_ms)],
            vec!["share of an hour".into(), format!("{:.2} %", result.hour_share_percent)],
        ];
        crate::outln!("{}", table(&["GPU CHECK", &result.model], &cells));
        for problem in &result.problems {
            eprintln!("herd: GPU check: {problem}");
        }
        crate::outln!("{}", if result.passed { "passed" } else { "FAILED" });
    }
    Ok(if result.passed { 0 } else { 1 })
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

fn measure(target_ms: u64) -> anyhow::Result<GpuCheck> {
    let probe = herd_worker::detect::GpuProbe::load();
    let specs = probe.specs();
    let first =
        specs.first().ok_or_else(|| anyhow!("NVML reports no NVIDIA GPU (is the driver loaded? try nvidia-smi)"))?;
    let model = catalog::lookup(&first.name).ok_or_else(|| {
        anyhow!("{} is not in herd's GPU catalog; known: {}", first.name, catalog::model_names().join(", "))
    })?;
    if specs.iter().any(|s| catalog::lookup(&s.name).map(|m| m.name) != Some(model.name)) {
        bail!("the GPUs are of several models; herd proves a device's GPUs as one model");
    }
    let uuids: Vec<String> = specs.iter().map(|s| s.uuid.clone()).collect();
    let gpus = herd_gpu::Gpus::open(&uuids).map_err(|reason| anyhow!(reason)).context("loading CUDA")?;
    let count = gpus.count() as u32;
    let policy = Policy { target_ms, ..Policy::default() };
    let never = AtomicBool::new(false);
    let mut problems = Vec::new();

    let claim = Claim::Gpu { model, count };
    let sizing = size(claim, &policy);
    let params = sizing.params;
    let seed = challenge_seed(DEVICE, b"gpu-check");
    let started = Instant::now();
    let chain = gpus.solve(&seed, &params, &never).context("solving the proof of compute")?;
    let solve_ms = ms(started);
    let secret = [11; 32];
    let picks = choose(&params, &secret);
    let started = Instant::now();
    let openings = chain.open(&picks).context("opening the proof of compute")?;
    let open_ms = ms(started);
    let started = Instant::now();
    if let Err(failure) = check(DEVICE, b"gpu-check", &params, chain.roots(), &picks, &openings, &secret) {
        problems.push(format!("the GPU's proof of compute does not verify: {failure}"));
    }
    let verify_ms = ms(started);
    if solve_ms > sizing.deadline_ms as f64 {
        problems.push(format!("the solve took {solve_ms:.0} ms, past its {} ms deadline", sizing.deadline_ms));
    }

    let vram = size_vram(Some(model), count, false, &policy).expect("a GPU claim has a proof of VRAM");
    let started = Instant::now();
    let fill = gpus.fill(&seed, &vram.params, &never).context("filling the proof of VRAM")?;
    let fill_ms = ms(started);
    let walk_nonce = [13; 32];
    let started = Instant::now();
    let wins = fill.search(&seed, &walk_nonce, &vram.params, &never).context("walking the proof of VRAM")?;
    let walk_ms = ms(started);
    drop(fill);
    let started = Instant::now();
    if let Err(failure) = check_vram(&seed, &walk_nonce, &vram.params, &wins) {
        problems.push(format!("the GPU's proof of VRAM does not verify: {failure}"));
    }
    let vram_verify_ms = ms(started);
    if fill_ms > vram.fill_deadline_ms as f64 {
        problems.push(format!("the fill took {fill_ms:.0} ms, past its {} ms deadline", vram.fill_deadline_ms));
    }
    if walk_ms > vram.walk_deadline_ms as f64 {
        problems.push(format!("the walks took {walk_ms:.0} ms, past their {} ms deadline", vram.walk_deadline_ms));
    }
    let busy_ms = solve_ms + open_ms + fill_ms + walk_ms;
    Ok(GpuCheck {
        gpus: gpus.describe(),
        model: format!("{count}× {}", model.name),
        rows: params.rows,
        n: params.n,
        steps: params.steps,
        work_tflop: params.flops() as f64 / 1e12,
        solve_ms,
        achieved_tflops: params.flops() as f64 / (solve_ms / 1e3) / 1e12,
        expected_ms: sizing.expected_ms,
        deadline_ms: sizing.deadline_ms,
        open_ms,
        verify_ms,
        vram_gib_per_gpu: vram.params.dataset_bytes() as f64 / (1u64 << 30) as f64,
        fill_ms,
        fill_deadline_ms: vram.fill_deadline_ms,
        walk_ms,
        walk_expected_ms: vram.walk_expected_ms,
        walk_deadline_ms: vram.walk_deadline_ms,
        vram_verify_ms,
        hour_share_percent: super::proof::hour_share_percent(busy_ms),
        passed: problems.is_empty(),
        problems,
    })
}
