//! The arithmetic of the chain, shared by the solver and the verifier:
//! C_0 = A (seeded), C_s = reduce(C_{s-1} · B) with B seeded, every product exact.

use crate::prg::{fill_row, reduce, Matrix, Seed};

/// The seed of a challenge, bound to the device that must answer it: another device's
/// answer was computed from other matrices and fails.
pub fn challenge_seed(device: &str, nonce: &[u8]) -> Seed {
    use sha2::{Digest, Sha256};
    Sha256::new()
        .chain_update(b"herd/poc/v1/seed")
        .chain_update((device.len() as u64).to_le_bytes())
        .chain_update(device.as_bytes())
        .chain_update(nonce)
        .finalize()
        .into()
}

pub fn start_row(seed: &Seed, row: u32, n: usize) -> Vec<i8> {
    let mut out = vec![0; n];
    fill_row(seed, Matrix::Start, row, &mut out);
    out
}

/// The multiplier B, row-major.
pub fn multiplier(seed: &Seed, n: usize) -> Vec<i8> {
    let mut b = vec![0; n * n];
    for (k, row) in b.chunks_mut(n).enumerate() {
        fill_row(seed, Matrix::Multiplier, k as u32, row);
    }
    b
}

/// `row · B` before reduction, into `out` (length n). Loops over B's rows so the inner
/// loop is a contiguous multiply-add the compiler vectorises.
pub fn row_times(row: &[i8], b: &[i8], out: &mut [i32]) {
    let n = out.len();
    out.fill(0);
    for (k, &c) in row.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let c = i32::from(c);
        for (acc, &bkj) in out.iter_mut().zip(&b[k * n..(k + 1) * n]) {
            *acc += c * i32::from(bkj);
        }
    }
}

pub fn reduce_row(product: &[i32], out: &mut [i8]) {
    for (o, &p) in out.iter_mut().zip(product) {
        *o = reduce(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_times_matches_the_textbook_product() {
        let seed = [9; 32];
        let n = 64;
        let b = multiplier(&seed, n);
        let a = start_row(&seed, 5, n);
        let mut fast = vec![0; n];
        row_times(&a, &b, &mut fast);
        for (j, value) in fast.iter().enumerate() {
            let slow: i32 = (0..n).map(|k| i32::from(a[k]) * i32::from(b[k * n + j])).sum();
            assert_eq!(*value, slow);
        }
    }

    #[test]
    fn seeds_are_bound_to_the_device() {
        assert_ne!(challenge_seed("deviceA", b"nonce"), challenge_seed("deviceB", b"nonce"));
        assert_ne!(challenge_seed("ab", b"c"), challenge_seed("a", b"bc"), "no ambiguity at the boundary");
    }
}
