//! Deterministic expansion of a 32-byte seed into matrix entries.
//!
//! Each row gets its own stream (SHA-256 of the seed, a domain tag and the row index), so
//! the verifier derives any single row in O(n) without generating the rest. SplitMix64
//! expands the stream: it is not cryptographic, and need not be, because the seed itself
//! is unpredictable until the challenge is issued.

use sha2::{Digest, Sha256};

/// The small prime the chain reduces by; entries live in [-8, 8].
pub const MODULUS: i32 = 17;
const HALF: i32 = MODULUS / 2;

pub type Seed = [u8; 32];

/// Which matrix a row stream belongs to.
#[derive(Debug, Clone, Copy)]
pub enum Matrix {
    Start,
    Multiplier,
}

impl Matrix {
    fn tag(self) -> &'static [u8] {
        match self {
            Matrix::Start => b"herd/poc/v1/start",
            Matrix::Multiplier => b"herd/poc/v1/multiplier",
        }
    }
}

struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn stream(seed: &Seed, matrix: Matrix, row: u32) -> SplitMix64 {
    let digest = Sha256::new().chain_update(matrix.tag()).chain_update(seed).chain_update(row.to_le_bytes()).finalize();
    SplitMix64(u64::from_le_bytes(digest[..8].try_into().expect("a digest has 8 bytes")))
}

/// A random byte's entry: byte mod 17, centred (a table, so generating B stays cheap for
/// the verifier, whose one O(n²) step it is).
const ENTRY_OF_BYTE: [i8; 256] = {
    let mut table = [0i8; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = (byte as i32 % MODULUS - HALF) as i8;
        byte += 1;
    }
    table
};

/// Fills `out` with row `row` of `matrix`: entries uniform (to within 1/256) in [-8, 8].
pub fn fill_row(seed: &Seed, matrix: Matrix, row: u32, out: &mut [i8]) {
    let mut rng = stream(seed, matrix, row);
    for chunk in out.chunks_mut(8) {
        let bytes = rng.next().to_le_bytes();
        for (entry, byte) in chunk.iter_mut().zip(bytes) {
            *entry = ENTRY_OF_BYTE[usize::from(byte)];
        }
    }
}

/// The reduction between steps: the centred residue mod 17, so values stay in [-8, 8] and
/// every product stays exact in fp32 accumulation (|sum| ≤ 64·n < 2^24 for n ≤ 2^18).
pub fn reduce(x: i32) -> i8 {
    (x + HALF).rem_euclid(MODULUS) as i8 - HALF as i8
}

/// A vector of secret random multipliers for Freivalds' check, from the verifier's seed.
pub fn secret_vector(seed: &Seed, n: usize) -> Vec<i64> {
    let mut rng = stream(seed, Matrix::Multiplier, u32::MAX);
    (0..n).map(|_| (rng.next() >> 32) as i64).collect()
}

/// A uniform index below `bound` (bound > 0), from the verifier's seed and a counter.
pub fn pick(seed: &Seed, counter: u32, bound: u64) -> u64 {
    let digest = Sha256::new().chain_update(b"herd/poc/v1/pick").chain_update(seed).chain_update(counter.to_le_bytes());
    let digest = digest.finalize();
    // 128 random bits reduced mod bound: bias below 2^-64 for any u64 bound.
    let wide = u128::from_le_bytes(digest[..16].try_into().expect("a digest has 16 bytes"));
    (wide % u128::from(bound)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduce_centres_residues() {
        assert_eq!(reduce(0), 0);
        assert_eq!(reduce(8), 8);
        assert_eq!(reduce(9), -8);
        assert_eq!(reduce(-9), 8);
        assert_eq!(reduce(17 * 1000 + 3), 3);
        for x in -100_000..100_000 {
            let r = reduce(x);
            assert!((-8..=8).contains(&r));
            assert_eq!((x - i32::from(r)).rem_euclid(MODULUS), 0);
        }
    }

    #[test]
    fn rows_are_deterministic_bounded_and_seed_bound() {
        let mut a = vec![0i8; 100];
        let mut b = vec![0i8; 100];
        fill_row(&[1; 32], Matrix::Start, 3, &mut a);
        fill_row(&[1; 32], Matrix::Start, 3, &mut b);
        assert_eq!(a, b);
        assert!(a.iter().all(|v| (-8..=8).contains(v)));
        fill_row(&[2; 32], Matrix::Start, 3, &mut b);
        assert_ne!(a, b, "another seed, another row");
        fill_row(&[1; 32], Matrix::Multiplier, 3, &mut b);
        assert_ne!(a, b, "another matrix, another row");
    }

    #[test]
    fn picks_stay_below_the_bound() {
        for counter in 0..1000 {
            assert!(pick(&[7; 32], counter, 13) < 13);
        }
    }
}
