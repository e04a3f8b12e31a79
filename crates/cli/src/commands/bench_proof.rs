//! `herd bench proof`: what proof of compute costs. For each claim: the challenge's size,
//! the device's solving time on this machine's CPU (where a CPU can solve it), and the
//! coordinator's CPU per verification, measured on the real verifier. GPU-sized checks are
//! measured against a prover that computes only the rows the verifier will open (the
//! verifier's cost does not depend on the rest) — which is also why picks stay secret
//! until the device has committed.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use herd_core::catalog;
use herd_verify::chain::{challenge_seed, multiplier, reduce_row, row_times, start_row};
use herd_verify::merkle::{leaf, Hash, Tree};
use herd_verify::{check, choose, size, solve, Claim, Opening, Params, Pick, Policy};
use serde::Serialize;

use super::ProofArgs;
use crate::commands::Context;
use crate::output::{print_json, table};

const DEVICE: &str = "bench-device";
const NONCE: &[u8] = b"bench-nonce";

#[derive(Serialize)]
struct Row {
    claim: String,
    n: u32,
    rows: u32,
    steps: u32,
    stride: u32,
    work_gflop: f64,
    expected_ms: u64,
    deadline_ms: u64,
    /// Solving on this machine's CPU (None: not attempted, a CPU cannot).
    solve_ms: Option<f64>,
    /// Share of an hour spent proving at the re-check rate (≤ 1.38 proofs an hour).
    hour_share_percent: Option<f64>,
    verify_ms: f64,
    /// The coordinator's CPU checking the proof of VRAM's wins (GPU claims).
    vram_verify_ms: Option<f64>,
}

pub async fn run(context: &Context, args: &ProofArgs) -> anyhow::Result<i32> {
    let policy = Policy { target_ms: args.target_ms, ..Policy::default() };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cores = threads as u32;
    let rows = tokio::task::spawn_blocking(move || {
        let mut rows = vec![measure_solved(Claim::Cpu { logical_cores: cores }, &policy, threads)];
        rows.push(measure_solved(Claim::Simulated, &policy, threads));
        for model in ["RTX 4090", "H100"] {
            let claim = Claim::Gpu { model: catalog::lookup(model).expect("a catalog model"), count: 1 };
            rows.push(measure_verifier_only(claim, &policy));
        }
        let claim = Claim::Gpu { model: catalog::lookup("H100").expect("a catalog model"), count: 8 };
        rows.push(measure_verifier_only(claim, &policy));
        rows
    })
    .await?;
    if context.json {
        print_json(&rows);
        return Ok(0);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.claim.clone(),
                format!("{}×{} · {} steps / {}", r.rows, r.n, r.steps, r.stride),
                format!("{:.0}", r.work_gflop),
                format!("{} / {}", r.expected_ms, r.deadline_ms),
                r.solve_ms.map_or("—".into(), |ms| format!("{ms:.0} ms")),
                r.hour_share_percent.map_or("—".into(), |p| format!("{p:.2} %")),
                format!("{:.1} ms", r.verify_ms),
                r.vram_verify_ms.map_or("—".into(), |ms| format!("{ms:.1} ms")),
            ]
        })
        .collect();
    let header = [
        "CLAIM",
        "CHAIN (rows×n · steps / stride)",
        "GFLOP",
        "EXPECTED / DEADLINE ms",
        "SOLVE (this CPU)",
        "OF AN HOUR",
        "VERIFY (coordinator CPU)",
        "VRAM VERIFY",
    ];
    crate::outln!("{}", table(&header, &cells));
    crate::outln!(
        "target {} ms per proof; {threads} CPU threads; verify = B·r once + 16 openings; \
         VRAM verify = every GPU's 16 winning walks recomputed",
        args.target_ms
    );
    Ok(0)
}

/// The share of an hour proofs taking `busy_ms` each cost at the re-check rate: re-checks come
/// at half to 95 % of an hour after each pass, so at most ~1.38 an hour.
pub(super) fn hour_share_percent(busy_ms: f64) -> f64 {
    busy_ms / 0.725 / 3_600_000.0 * 100.0
}

fn row(claim: Claim, policy: &Policy, solve_ms: Option<f64>, verify: Duration) -> Row {
    let sizing = size(claim, policy);
    let p = sizing.params;
    Row {
        claim: match claim {
            Claim::Cpu { .. } => format!("{} (this machine)", claim.describe()),
            _ => claim.describe(),
        },
        n: p.n,
        rows: p.rows,
        steps: p.steps,
        stride: p.stride,
        work_gflop: p.flops() as f64 / 1e9,
        expected_ms: sizing.expected_ms,
        deadline_ms: sizing.deadline_ms,
        solve_ms,
        hour_share_percent: solve_ms.map(hour_share_percent),
        verify_ms: verify.as_secs_f64() * 1e3,
        vram_verify_ms: None,
    }
}

/// A full honest proof on this CPU, then the verifier on it.
fn measure_solved(claim: Claim, policy: &Policy, threads: usize) -> Row {
    let params = size(claim, policy).params;
    let seed = challenge_seed(DEVICE, NONCE);
    let started = Instant::now();
    let solution = solve(&seed, &params, threads, &AtomicBool::new(false)).expect("nothing stops it");
    let solved = started.elapsed();
    let secret = [7; 32];
    let picks = choose(&params, &secret);
    let openings: Vec<Opening> = picks.iter().map(|p| solution.open(*p)).collect();
    let verify = time_check(&params, &solution.roots, &picks, &openings, &secret);
    row(claim, policy, Some(solved.as_secs_f64() * 1e3), verify)
}

/// The verifier on a GPU-sized challenge, against a prover that computed only the opened rows.
fn measure_verifier_only(claim: Claim, policy: &Policy) -> Row {
    // The verifier's work grows with n and the stride, not the step count: keep 4 checkpoints.
    let full = size(claim, policy).params;
    let params = Params { steps: full.stride * 4, ..full };
    let secret = [9; 32];
    let picks = choose(&params, &secret);
    let (roots, openings) = partial_proof(&params, &picks);
    let verify = time_check(&params, &roots, &picks, &openings, &secret);
    Row { vram_verify_ms: Some(time_vram_check(claim, policy)), ..row(claim, policy, None, verify) }
}

/// The proof of VRAM's verifier on the claim's full-size walks. Its cost does not depend on
/// the dataset's size (the verifier makes each item it reads), so the wins are found on a
/// small dataset with the claim's rounds, steps and win count.
fn time_vram_check(claim: Claim, policy: &Policy) -> f64 {
    use herd_verify::vram::{check_vram, size_vram, solve_vram, VramParams};
    let Claim::Gpu { model, count } = claim else { return 0.0 };
    let full = size_vram(Some(model), count, false, policy).expect("a GPU claim has a proof of VRAM").params;
    let params = VramParams { items: 4096, difficulty: 4, ..full };
    let seed = challenge_seed(DEVICE, NONCE);
    let wins = solve_vram(&seed, &[5; 32], &params, &AtomicBool::new(false)).expect("nothing stops it");
    let started = Instant::now();
    check_vram(&seed, &[5; 32], &params, &wins).expect("the bench's proof of VRAM is valid");
    started.elapsed().as_secs_f64() * 1e3
}

fn time_check(params: &Params, roots: &[Hash], picks: &[Pick], openings: &[Opening], secret: &[u8; 32]) -> Duration {
    let started = Instant::now();
    check(DEVICE, NONCE, params, roots, picks, openings, secret).expect("the bench's proof is valid");
    started.elapsed()
}

/// Roots whose opened leaves are real (every other leaf is a placeholder), and the openings.
fn partial_proof(params: &Params, picks: &[Pick]) -> (Vec<Hash>, Vec<Opening>) {
    let n = params.n as usize;
    let seed = challenge_seed(DEVICE, NONCE);
    let b = multiplier(&seed, n);
    let checkpoints = params.checkpoints() as usize;
    // Each picked row's chain: its value at every checkpoint, and its unreduced products.
    let mut leaves = vec![vec![[0u8; 32]; params.rows as usize]; checkpoints + 1];
    let mut chains = Vec::new();
    for pick in picks {
        let mut row = start_row(&seed, pick.row, n);
        let mut at_checkpoints = vec![row.clone()];
        let mut products = Vec::new();
        let mut product = vec![0i32; n];
        for step in 1..=params.steps {
            row_times(&row, &b, &mut product);
            reduce_row(&product, &mut row);
            products.push(product.clone());
            if step % params.stride == 0 {
                let c = (step / params.stride) as usize;
                leaves[c][pick.row as usize] = leaf(c as u32, pick.row, &row);
                at_checkpoints.push(row.clone());
            }
        }
        chains.push((at_checkpoints, products));
    }
    let trees: Vec<Tree> = leaves.into_iter().skip(1).map(Tree::new).collect();
    let roots = trees.iter().map(Tree::root).collect();
    let openings = picks
        .iter()
        .zip(&chains)
        .map(|(pick, (at, products))| {
            let c = pick.checkpoint as usize;
            let stride = params.stride as usize;
            Opening {
                pick: *pick,
                start: (c > 1).then(|| at[c - 1].clone()),
                start_path: if c > 1 { trees[c - 2].proof(pick.row as usize) } else { Vec::new() },
                links: products[(c - 1) * stride..c * stride].to_vec(),
                end_path: trees[c - 1].proof(pick.row as usize),
            }
        })
        .collect();
    (roots, openings)
}
