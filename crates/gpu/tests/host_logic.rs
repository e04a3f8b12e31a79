//! The GPU path's host-side logic, run with emulated lanes, against herd-verify's CPU solver:
//! the same roots, openings the real verifier accepts, whatever the number of GPUs.

use std::sync::atomic::AtomicBool;

use herd_gpu::emulated::{gemm_col_major, EmulatedLane};
use herd_gpu::half::encode_all;
use herd_gpu::pipeline;
use herd_verify::chain::{multiplier, row_times, start_row};
use herd_verify::{challenge_seed, check, choose, solve, Params};

const PARAMS: Params = Params { n: 64, rows: 128, steps: 12, stride: 4, openings: 16 };

#[test]
fn the_cublas_call_computes_the_row_major_product() {
    let seed = [7; 32];
    let n = 64;
    let b = multiplier(&seed, n);
    let x: Vec<i8> = (0..3).flat_map(|r| start_row(&seed, r, n)).collect();
    let mut product = vec![0f32; 3 * n];
    // Exactly the arguments CudaLane::step passes: m = n, n = rows, k = n, all ld = n.
    gemm_col_major(n, 3, n, &encode_all(&b), n, &encode_all(&x), n, &mut product, n);
    for r in 0..3 {
        let mut expected = vec![0i32; n];
        row_times(&x[r * n..(r + 1) * n], &b, &mut expected);
        let got: Vec<i32> = product[r * n..(r + 1) * n].iter().map(|v| *v as i32).collect();
        assert_eq!(got, expected, "row {r}");
    }
}

#[test]
fn any_number_of_gpus_commits_to_the_cpu_solvers_roots_and_opens_what_the_verifier_accepts() {
    let seed = challenge_seed("device-gpu", b"nonce");
    let reference = solve(&seed, &PARAMS, 2, &AtomicBool::new(false)).unwrap();
    for gpus in [1, 2, 3, 8] {
        let mut lanes: Vec<EmulatedLane> = (0..gpus).map(|_| EmulatedLane::default()).collect();
        let chain = pipeline::solve(&mut lanes, &seed, &PARAMS, &AtomicBool::new(false)).unwrap();
        assert_eq!(chain.roots, reference.roots, "{gpus} GPUs");
        let picks = choose(&PARAMS, &[gpus as u8; 32]);
        let openings = chain.open(&mut EmulatedLane::default(), &picks).unwrap();
        let expected: Vec<_> = picks.iter().map(|p| reference.open(*p)).collect();
        assert_eq!(openings, expected, "{gpus} GPUs open as the reference does");
        check("device-gpu", b"nonce", &PARAMS, &chain.roots, &picks, &openings, &[gpus as u8; 32]).unwrap();
    }
}

#[test]
fn a_stop_ends_the_solve() {
    let stop = AtomicBool::new(true);
    let mut lanes = vec![EmulatedLane::default()];
    assert!(pipeline::solve(&mut lanes, &[1; 32], &PARAMS, &stop).is_err());
}
