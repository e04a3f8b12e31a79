//! The coordinator side. After the device has committed to its roots, the verifier picks
//! rows at random and checks each opening: Merkle paths against the roots, and every step
//! of the row's chain with Freivalds' check: D·r = C·(B·r) for a secret random vector r.
//! B·r costs O(n²) once per proof; each step then costs O(n), so verifying is cheap
//! whatever the size of the chain, and needs no GPU.

use crate::chain::{challenge_seed, start_row};
use crate::merkle::{self, leaf, Hash};
use crate::params::Params;
use crate::prg::{fill_row, pick, reduce, secret_vector, Matrix, Seed};
use crate::{Opening, Pick};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("expected {expected} checkpoint roots, got {got}")]
    RootCount { expected: usize, got: usize },
    #[error("expected {expected} openings, got {got}")]
    OpeningCount { expected: usize, got: usize },
    #[error("opening {index} answers checkpoint {got_checkpoint} row {got_row}, not the one asked")]
    WrongPick { index: usize, got_checkpoint: u32, got_row: u32 },
    #[error("checkpoint {checkpoint} row {row}: {what}")]
    Malformed { checkpoint: u32, row: u32, what: String },
    #[error("checkpoint {checkpoint} row {row}: the Merkle path does not lead to the committed root")]
    BadPath { checkpoint: u32, row: u32 },
    #[error("checkpoint {checkpoint} row {row}: step {step} is not the product of the previous row and B")]
    WrongProduct { checkpoint: u32, row: u32, step: u32 },
}

/// Which rows to open: `params.openings` picks (checkpoint, row) drawn from the verifier's
/// secret randomness, which the device cannot know when it commits.
pub fn choose(params: &Params, secret: &Seed) -> Vec<Pick> {
    (0..params.openings)
        .map(|k| {
            let index = pick(secret, k, u64::from(params.checkpoints()) * u64::from(params.rows));
            Pick {
                checkpoint: (index / u64::from(params.rows)) as u32 + 1,
                row: (index % u64::from(params.rows)) as u32,
            }
        })
        .collect()
}

/// Checks a device's answer to the challenge (`device`, `nonce`): its roots and its
/// openings of `picks`. `secret` is the verifier's own randomness (never sent).
pub fn check(
    device: &str,
    nonce: &[u8],
    params: &Params,
    roots: &[Hash],
    picks: &[Pick],
    openings: &[Opening],
    secret: &Seed,
) -> Result<(), Failure> {
    let expected = params.checkpoints() as usize;
    if roots.len() != expected {
        return Err(Failure::RootCount { expected, got: roots.len() });
    }
    if openings.len() != picks.len() {
        return Err(Failure::OpeningCount { expected: picks.len(), got: openings.len() });
    }
    for (index, (opening, pick)) in openings.iter().zip(picks).enumerate() {
        if opening.pick != *pick {
            return Err(Failure::WrongPick {
                index,
                got_checkpoint: opening.pick.checkpoint,
                got_row: opening.pick.row,
            });
        }
    }
    let seed = challenge_seed(device, nonce);
    let n = params.n as usize;
    let r = secret_vector(secret, n);
    let br = multiplier_times(&seed, &r);
    for opening in openings {
        check_opening(&seed, params, roots, &r, &br, opening)?;
    }
    Ok(())
}

/// B·r, one seeded row of B at a time (O(n) memory). Exact in i64: |B| ≤ 8, r < 2^32 and
/// n ≤ 2^12 bound each sum by 2^47. This is the verifier's one O(n²) step.
fn multiplier_times(seed: &Seed, r: &[i64]) -> Vec<i128> {
    let n = r.len();
    let mut row = vec![0i8; n];
    (0..n)
        .map(|k| {
            fill_row(seed, Matrix::Multiplier, k as u32, &mut row);
            let sum: i64 = row.iter().zip(r).map(|(b, r)| i64::from(*b) * r).sum();
            i128::from(sum)
        })
        .collect()
}

fn check_opening(
    seed: &Seed,
    params: &Params,
    roots: &[Hash],
    r: &[i64],
    br: &[i128],
    opening: &Opening,
) -> Result<(), Failure> {
    let Pick { checkpoint, row } = opening.pick;
    let n = params.n as usize;
    let rows = params.rows as usize;
    let malformed = |what: &str| Failure::Malformed { checkpoint, row, what: what.to_owned() };
    let mut current = match (&opening.start, checkpoint) {
        (None, 1) if opening.start_path.is_empty() => start_row(seed, row, n),
        (Some(start), c) if c > 1 => {
            if start.len() != n || start.iter().any(|v| !(-8..=8).contains(v)) {
                return Err(malformed("the starting row has the wrong length or values outside [-8, 8]"));
            }
            let root = &roots[c as usize - 2];
            if !merkle::verify(root, leaf(c - 1, row, start), row as usize, rows, &opening.start_path) {
                return Err(Failure::BadPath { checkpoint: c - 1, row });
            }
            start.clone()
        }
        _ => return Err(malformed("a starting row is sent exactly when the checkpoint is after the first")),
    };
    if opening.links.len() != params.stride as usize {
        return Err(malformed("one unreduced product per step between checkpoints is expected"));
    }
    for (step, product) in opening.links.iter().enumerate() {
        if product.len() != n {
            return Err(malformed("a product has the wrong length"));
        }
        let lhs: i128 = product.iter().zip(r).map(|(d, r)| i128::from(*d) * i128::from(*r)).sum();
        let rhs: i128 = current.iter().zip(br).map(|(c, br)| i128::from(*c) * br).sum();
        if lhs != rhs {
            return Err(Failure::WrongProduct { checkpoint, row, step: step as u32 + 1 });
        }
        for (c, d) in current.iter_mut().zip(product) {
            *c = reduce(*d);
        }
    }
    let root = &roots[checkpoint as usize - 1];
    if !merkle::verify(root, leaf(checkpoint, row, &current), row as usize, rows, &opening.end_path) {
        return Err(Failure::BadPath { checkpoint, row });
    }
    Ok(())
}
