//! The verifier against honest and dishonest provers, in-process.

use std::sync::atomic::AtomicBool;

use herd_verify::{challenge_seed, check, choose, solve, Failure, Params};

const DEVICE: &str = "device-a";
const NONCE: &[u8] = b"nonce-1";
const PARAMS: Params = Params { n: 64, rows: 64, steps: 8, stride: 2, openings: 16 };

fn honest() -> (herd_verify::Solution, Vec<herd_verify::Pick>, Vec<herd_verify::Opening>) {
    let seed = challenge_seed(DEVICE, NONCE);
    let solution = solve(&seed, &PARAMS, 2, &AtomicBool::new(false)).unwrap();
    let picks = choose(&PARAMS, &[42; 32]);
    let openings = picks.iter().map(|p| solution.open(*p)).collect();
    (solution, picks, openings)
}

#[test]
fn an_honest_proof_passes() {
    let (solution, picks, openings) = honest();
    assert_eq!(solution.roots.len(), 4);
    check(DEVICE, NONCE, &PARAMS, &solution.roots, &picks, &openings, &[42; 32]).unwrap();
}

#[test]
fn a_wrong_value_anywhere_in_an_opening_fails() {
    let (solution, picks, openings) = honest();
    let mut tampered = openings.clone();
    tampered[3].links[0][5] += 17; // same residue, wrong product: only Freivalds sees it
    let err = check(DEVICE, NONCE, &PARAMS, &solution.roots, &picks, &tampered, &[42; 32]).unwrap_err();
    assert!(matches!(err, Failure::WrongProduct { .. }), "{err}");

    let mut tampered = openings.clone();
    let last = tampered[0].links.len() - 1;
    tampered[0].links[last][0] += 1; // changes the reduced row at the checkpoint too
    assert!(check(DEVICE, NONCE, &PARAMS, &solution.roots, &picks, &tampered, &[42; 32]).is_err());

    let mut tampered = openings.clone();
    tampered[1].end_path[0][0] ^= 1;
    let err = check(DEVICE, NONCE, &PARAMS, &solution.roots, &picks, &tampered, &[42; 32]).unwrap_err();
    assert!(matches!(err, Failure::BadPath { .. }), "{err}");
}

#[test]
fn rows_computed_from_a_wrong_start_fail() {
    // A prover that skipped the work and committed to made-up rows: its roots are consistent
    // with its own rows, but the chain does not start from the seeded matrix.
    let seed = challenge_seed(DEVICE, b"some other nonce");
    let fake = solve(&seed, &PARAMS, 2, &AtomicBool::new(false)).unwrap();
    let picks = choose(&PARAMS, &[42; 32]);
    let openings: Vec<_> = picks.iter().map(|p| fake.open(*p)).collect();
    let err = check(DEVICE, NONCE, &PARAMS, &fake.roots, &picks, &openings, &[42; 32]).unwrap_err();
    assert!(matches!(err, Failure::WrongProduct { .. } | Failure::BadPath { .. }), "{err}");
}

#[test]
fn another_devices_answer_fails() {
    let (solution, picks, openings) = honest();
    let err = check("device-b", NONCE, &PARAMS, &solution.roots, &picks, &openings, &[42; 32]).unwrap_err();
    assert!(matches!(err, Failure::WrongProduct { .. } | Failure::BadPath { .. }), "{err}");
}

#[test]
fn answering_other_rows_or_too_few_fails() {
    let (solution, picks, openings) = honest();
    let others = choose(&PARAMS, &[43; 32]);
    let wrong: Vec<_> = others.iter().map(|p| solution.open(*p)).collect();
    assert!(matches!(
        check(DEVICE, NONCE, &PARAMS, &solution.roots, &picks, &wrong, &[42; 32]),
        Err(Failure::WrongPick { .. })
    ));
    assert!(matches!(
        check(DEVICE, NONCE, &PARAMS, &solution.roots, &picks, &openings[1..], &[42; 32]),
        Err(Failure::OpeningCount { .. })
    ));
    assert!(matches!(
        check(DEVICE, NONCE, &PARAMS, &solution.roots[1..], &picks, &openings, &[42; 32]),
        Err(Failure::RootCount { .. })
    ));
}

#[test]
fn a_prover_that_computed_only_half_the_rows_is_caught() {
    // It commits to correct rows for the even half and garbage for the rest; 16 openings
    // miss every garbage row with probability 2^-16. Over 20 challenges, all fail.
    let seed = challenge_seed(DEVICE, NONCE);
    let solution = solve(&seed, &PARAMS, 2, &AtomicBool::new(false)).unwrap();
    let mut caught = 0;
    for secret in 0..20u8 {
        let picks = choose(&PARAMS, &[secret; 32]);
        let openings: Vec<_> = picks
            .iter()
            .map(|p| {
                let mut opening = solution.open(*p);
                if p.row % 2 == 1 {
                    opening.links.iter_mut().for_each(|l| l.iter_mut().for_each(|v| *v += 1));
                }
                opening
            })
            .collect();
        caught +=
            usize::from(check(DEVICE, NONCE, &PARAMS, &solution.roots, &picks, &openings, &[secret; 32]).is_err());
    }
    assert_eq!(caught, 20);
}

#[test]
fn a_stop_flag_ends_the_work() {
    let seed = challenge_seed(DEVICE, NONCE);
    let big = Params { n: 1024, rows: 1024, steps: 64, stride: 16, openings: 16 };
    assert!(solve(&seed, &big, 2, &AtomicBool::new(true)).is_err());
}
