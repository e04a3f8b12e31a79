//! Proof of VRAM: a device shows it holds the memory it claims, not just that it computes.
//!
//! Each GPU fills its memory with a dataset of 64-byte items derived from the challenge seed;
//! every item costs `rounds` ChaCha double rounds to make, and items are independent, so
//! none can be made faster than by doing those rounds. Only then does the coordinator send
//! a fresh walk nonce: the GPU runs walks, each `steps` reads of data-dependent items mixed
//! into a state, until it has found `wins` walks whose output falls under a threshold (a
//! proof of work whose cost is memory reads). The verifier recomputes only the winning walks,
//! making each item it touches itself.
//!
//! A GPU holding the whole dataset pays one HBM read per step. One holding a fraction f must,
//! for the other 1 − f of the steps, remake the item (`rounds` double rounds) or fetch it from
//! host memory over PCIe; both cost tens of HBM reads (ARCHITECTURE.md has the figures), so
//! it cannot find its wins before the deadline. Everything here is pure: the CPU solver, the
//! verifier and the CUDA kernels (herd-gpu) compute exactly these functions.

use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

use crate::prg::Seed;

/// Bytes per dataset item: sixteen 32-bit words.
pub const ITEM_BYTES: u64 = 64;
pub const ITEM_WORDS: usize = 16;

pub type Item = [u32; ITEM_WORDS];
/// A per-GPU key the dataset and the walks derive from.
pub type Key = [u32; 8];

/// Bounds on parameters that come over the wire.
pub const ROUNDS_MAX: u32 = 4096;
pub const STEPS_MAX: u32 = 4096;
pub const WINS_MAX: u32 = 64;
pub const GPUS_MAX: u32 = 16;
/// 256 GiB of items per GPU, more than any card has.
pub const ITEMS_MAX: u64 = (256 << 30) / ITEM_BYTES;

/// The size of one VRAM proof; every GPU of the device does the same with its own dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VramParams {
    /// GPUs that must answer (the device's claimed count).
    pub gpus: u32,
    /// Items in each GPU's dataset.
    pub items: u64,
    /// Double rounds that make one item.
    pub rounds: u32,
    /// Dependent reads per walk.
    pub steps: u32,
    /// A walk wins with probability 1/difficulty.
    pub difficulty: u64,
    /// Winning walks each GPU must send.
    pub wins: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid VRAM proof parameters: {0}")]
pub struct InvalidVramParams(String);

impl VramParams {
    pub fn dataset_bytes(&self) -> u64 {
        self.items * ITEM_BYTES
    }

    /// Walks one GPU runs on average to find its wins.
    pub fn expected_walks(&self) -> u64 {
        self.difficulty.saturating_mul(u64::from(self.wins))
    }

    /// A walk wins when its output's last two words, as a u64, fall below this.
    pub fn threshold(&self) -> u64 {
        u64::MAX / self.difficulty.max(1)
    }

    pub fn validate(&self) -> Result<(), InvalidVramParams> {
        let fail = |m: String| Err(InvalidVramParams(m));
        if !(1..=GPUS_MAX).contains(&self.gpus) {
            return fail(format!("gpus must be 1..={GPUS_MAX}, got {}", self.gpus));
        }
        if !(2..=ITEMS_MAX).contains(&self.items) {
            return fail(format!("items must be 2..={ITEMS_MAX}, got {}", self.items));
        }
        if !(1..=ROUNDS_MAX).contains(&self.rounds) {
            return fail(format!("rounds must be 1..={ROUNDS_MAX}, got {}", self.rounds));
        }
        if !(1..=STEPS_MAX).contains(&self.steps) {
            return fail(format!("steps must be 1..={STEPS_MAX}, got {}", self.steps));
        }
        if self.difficulty == 0 || self.difficulty > 1 << 40 {
            return fail(format!("difficulty must be 1..=2^40, got {}", self.difficulty));
        }
        if !(1..=WINS_MAX).contains(&self.wins) {
            return fail(format!("wins must be 1..={WINS_MAX}, got {}", self.wins));
        }
        Ok(())
    }
}

fn key_of(tag: &[u8], seed: &Seed, extra: &[u8], gpu: u32) -> Key {
    let digest = Sha256::new().chain_update(tag).chain_update(seed).chain_update(extra).chain_update(gpu.to_le_bytes());
    let digest = digest.finalize();
    std::array::from_fn(|i| u32::from_le_bytes(digest[4 * i..4 * i + 4].try_into().expect("4 bytes")))
}

/// The key of GPU `gpu`'s dataset: each GPU fills its own, so one card cannot answer for two.
pub fn dataset_key(seed: &Seed, gpu: u32) -> Key {
    key_of(b"herd/vram/v1/dataset", seed, &[], gpu)
}

/// The key of GPU `gpu`'s walks, from the nonce sent after the fill.
pub fn walk_key(seed: &Seed, walk_nonce: &[u8; 32], gpu: u32) -> Key {
    key_of(b"herd/vram/v1/walk", seed, walk_nonce, gpu)
}

/// "expand 32-byte k", ChaCha's constants.
const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

#[inline(always)]
fn quarter(s: &mut Item, a: usize, b: usize, c: usize, d: usize) {
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(16);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(12);
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(8);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(7);
}

/// One ChaCha double round (a column round, then a diagonal round).
#[inline(always)]
pub fn double_round(s: &mut Item) {
    quarter(s, 0, 4, 8, 12);
    quarter(s, 1, 5, 9, 13);
    quarter(s, 2, 6, 10, 14);
    quarter(s, 3, 7, 11, 15);
    quarter(s, 0, 5, 10, 15);
    quarter(s, 1, 6, 11, 12);
    quarter(s, 2, 7, 8, 13);
    quarter(s, 3, 4, 9, 14);
}

fn initial(key: &Key, counter: u64, domain: u32) -> Item {
    let mut s = [0u32; ITEM_WORDS];
    s[..4].copy_from_slice(&SIGMA);
    s[4..12].copy_from_slice(key);
    s[12] = counter as u32;
    s[13] = (counter >> 32) as u32;
    s[14] = domain;
    s
}

const ITEM_DOMAIN: u32 = 1;
const WALK_DOMAIN: u32 = 2;

/// Item `index` of a dataset: `rounds` double rounds of ChaCha's block function on
/// (key, index), with the final feed-forward that makes the map one-way.
pub fn item(key: &Key, index: u64, rounds: u32) -> Item {
    let input = initial(key, index, ITEM_DOMAIN);
    let mut s = input;
    for _ in 0..rounds {
        double_round(&mut s);
    }
    for (word, start) in s.iter_mut().zip(input) {
        *word = word.wrapping_add(start);
    }
    s
}

/// The item a walk reads next: a 64-bit word of its state mapped onto 0..items by a
/// multiply-high (no modulo bias worth the name, and one instruction on a GPU).
#[inline(always)]
pub fn next_index(state: &Item, items: u64) -> u64 {
    let word = u64::from(state[0]) | (u64::from(state[1]) << 32);
    ((u128::from(word) * u128::from(items)) >> 64) as u64
}

/// The value a walk's output is judged by (its last two words).
pub fn score(state: &Item) -> u64 {
    u64::from(state[14]) | (u64::from(state[15]) << 32)
}

/// Walk `walk` of a GPU: `steps` times, read the item the state points at, xor it in, mix.
/// `read` returns dataset items (from memory on a device; made on the fly by the verifier).
pub fn walk(walk_key: &Key, walk: u64, params: &VramParams, mut read: impl FnMut(u64) -> Item) -> Item {
    let mut s = initial(walk_key, walk, WALK_DOMAIN);
    double_round(&mut s);
    for _ in 0..params.steps {
        let value = read(next_index(&s, params.items));
        for (word, v) in s.iter_mut().zip(value) {
            *word ^= v;
        }
        double_round(&mut s);
    }
    s
}

pub fn wins(state: &Item, params: &VramParams) -> bool {
    score(state) < params.threshold()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VramFailure {
    #[error("expected winning walks from {expected} GPUs, got {got}")]
    GpuCount { expected: u32, got: usize },
    #[error("GPU {gpu}: expected {expected} winning walks, got {got}")]
    WinCount { gpu: u32, expected: u32, got: usize },
    #[error("GPU {gpu}: walk {walk} is sent twice")]
    Repeated { gpu: u32, walk: u64 },
    #[error("GPU {gpu}: walk {walk} does not win: it did not read the challenge's dataset")]
    NotAWin { gpu: u32, walk: u64 },
}

/// Checks every GPU's winning walks by recomputing them, each item made from the seed.
/// Costs `gpus · wins · steps · rounds` double rounds, whatever the dataset's size.
pub fn check_vram(
    seed: &Seed,
    walk_nonce: &[u8; 32],
    params: &VramParams,
    wins_by_gpu: &[Vec<u64>],
) -> Result<(), VramFailure> {
    if wins_by_gpu.len() != params.gpus as usize {
        return Err(VramFailure::GpuCount { expected: params.gpus, got: wins_by_gpu.len() });
    }
    for (gpu, found) in wins_by_gpu.iter().enumerate() {
        let gpu = gpu as u32;
        if found.len() != params.wins as usize {
            return Err(VramFailure::WinCount { gpu, expected: params.wins, got: found.len() });
        }
        let mut sorted = found.clone();
        sorted.sort_unstable();
        if let Some(pair) = sorted.windows(2).find(|p| p[0] == p[1]) {
            return Err(VramFailure::Repeated { gpu, walk: pair[0] });
        }
        let (dataset, walks) = (dataset_key(seed, gpu), walk_key(seed, walk_nonce, gpu));
        for &w in found {
            let out = walk(&walks, w, params, |index| item(&dataset, index, params.rounds));
            if !wins(&out, params) {
                return Err(VramFailure::NotAWin { gpu, walk: w });
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stopped before the VRAM proof was complete")]
pub struct VramStopped;

/// The CPU solver (simulated devices, tests, and the reference the GPU kernels are checked
/// against): one GPU's dataset in host memory.
pub struct Dataset {
    key: Key,
    items: Vec<Item>,
}

impl Dataset {
    pub fn fill(seed: &Seed, gpu: u32, params: &VramParams, stop: &AtomicBool) -> Result<Dataset, VramStopped> {
        let key = dataset_key(seed, gpu);
        let mut items = Vec::with_capacity(params.items as usize);
        for index in 0..params.items {
            if index % 4096 == 0 && stop.load(Ordering::Relaxed) {
                return Err(VramStopped);
            }
            items.push(item(&key, index, params.rounds));
        }
        Ok(Dataset { key, items })
    }

    pub fn key(&self) -> &Key {
        &self.key
    }

    /// This GPU's first `params.wins` winning walks, counting from walk 0.
    pub fn search(
        &self,
        seed: &Seed,
        walk_nonce: &[u8; 32],
        gpu: u32,
        params: &VramParams,
        stop: &AtomicBool,
    ) -> Result<Vec<u64>, VramStopped> {
        let walks = walk_key(seed, walk_nonce, gpu);
        let mut found = Vec::with_capacity(params.wins as usize);
        let mut w = 0u64;
        while found.len() < params.wins as usize {
            if w % 256 == 0 && stop.load(Ordering::Relaxed) {
                return Err(VramStopped);
            }
            let out = walk(&walks, w, params, |index| self.items[index as usize]);
            if wins(&out, params) {
                found.push(w);
            }
            w += 1;
        }
        Ok(found)
    }
}

/// Solves a whole VRAM proof on the CPU, GPU by GPU (what a simulated device does).
pub fn solve_vram(
    seed: &Seed,
    walk_nonce: &[u8; 32],
    params: &VramParams,
    stop: &AtomicBool,
) -> Result<Vec<Vec<u64>>, VramStopped> {
    (0..params.gpus)
        .map(|gpu| Dataset::fill(seed, gpu, params, stop)?.search(seed, walk_nonce, gpu, params, stop))
        .collect()
}

/// Double rounds per item. Remaking an item then costs 512 · 96 ≈ 49,000 integer operations:
/// ≈ 2.9 ns at an H100's ≈ 17 T int32 op/s, ≈ 1.2 ns at an RTX 4090's ≈ 41 T — against an
/// honest HBM/GDDR read of 33–160 ps. On data-centre cards fetching from host memory is the
/// cheat's cheaper path; on the 4090 remaking is (ARCHITECTURE.md has both and the bounds).
pub const ROUNDS: u32 = 512;
/// Reads per walk and wins per GPU: the verifier recomputes `WINS · STEPS` items per GPU.
pub const STEPS: u32 = 64;
pub const WINS: u32 = 16;
/// Integer op/s the fill deadline assumes, per GPU: below any CUDA card herd knows, since
/// the fill's time is not what the proof rests on (the walk's is).
const FILL_INT_OPS_PER_S: u128 = 5_000_000_000_000;
/// Integer operations per double round (8 quarter rounds of 4 adds, 4 xors, 4 rotates).
pub const OPS_PER_DOUBLE_ROUND: u128 = 96;

/// A proof of VRAM's size and time limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VramSizing {
    pub params: VramParams,
    /// From the challenge until the device reports its datasets filled.
    pub fill_deadline_ms: u64,
    /// From the walk nonce until the wins arrive.
    pub walk_expected_ms: u64,
    pub walk_deadline_ms: u64,
}

/// The proof of VRAM for `count` GPUs of `model` (None for a CPU claim); `simulated`
/// devices get a token-sized one through the same protocol.
pub fn size_vram(
    model: Option<&herd_core::catalog::GpuModel>,
    count: u32,
    simulated: bool,
    policy: &crate::Policy,
) -> Option<VramSizing> {
    use crate::params::RANDOM_READ_EFFICIENCY_PERCENT;
    if count == 0 {
        return None;
    }
    let gpus = count.min(GPUS_MAX);
    if simulated {
        let params = VramParams { gpus, items: 4096, rounds: 8, steps: 16, difficulty: 16, wins: 4 };
        let allowance = policy.allowance_ms;
        return Some(VramSizing {
            params,
            fill_deadline_ms: allowance,
            walk_expected_ms: 1,
            walk_deadline_ms: allowance,
        });
    }
    let model = model?;
    let bytes = u128::from(model.vram_gib) * (1 << 30) * u128::from(policy.vram_fill_percent.min(100)) / 100;
    let items = (bytes / u128::from(ITEM_BYTES)).clamp(2, u128::from(ITEMS_MAX)) as u64;
    let read_rate = u128::from(model.memory_gbps) * 1_000_000_000 * RANDOM_READ_EFFICIENCY_PERCENT / 100;
    let reads_in_target = read_rate * u128::from(policy.vram_target_ms) / 1000 / u128::from(ITEM_BYTES);
    let difficulty = (reads_in_target / u128::from(WINS * STEPS)).clamp(1, 1 << 40) as u64;
    let params = VramParams { gpus, items, rounds: ROUNDS, steps: STEPS, difficulty, wins: WINS };
    let walk_expected_ms = walk_ms(&params, read_rate);
    let fill_ops = u128::from(items) * u128::from(ROUNDS) * OPS_PER_DOUBLE_ROUND;
    let fill_ms = (fill_ops * 1000 / FILL_INT_OPS_PER_S).min(u128::from(u32::MAX)) as u64;
    Some(VramSizing {
        params,
        fill_deadline_ms: 2 * fill_ms + policy.allowance_ms,
        walk_expected_ms,
        walk_deadline_ms: walk_expected_ms.saturating_mul(policy.slack_percent) / 100 + policy.allowance_ms,
    })
}

/// How long one GPU's walks take at `bytes_per_s` of item reads.
fn walk_ms(params: &VramParams, bytes_per_s: u128) -> u64 {
    let reads = u128::from(params.expected_walks()) * u128::from(params.steps);
    (reads * u128::from(ITEM_BYTES) * 1000 / bytes_per_s.max(1)).min(u128::from(u64::MAX)) as u64
}

/// What a card of model `actual` could do posing as `claimed`, under herd's model: the
/// compute chain at the actual card's rates, and the walks with the share of the claimed
/// dataset the actual card can hold read from its memory and the rest fetched over its host
/// link at peak. It leaves out remaking items, which is cheaper than fetching on consumer
/// cards (see `ROUNDS`); ARCHITECTURE.md's table counts both.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impersonation {
    /// The actual card's time over the deadline, for the compute chain and for the walks
    /// (≤ 1: it can make the deadline).
    pub compute_over_deadline: f64,
    pub walk_over_deadline: f64,
    /// The share of the claimed dataset the actual card can hold.
    pub held: f64,
}

impl Impersonation {
    pub fn passes(&self) -> bool {
        self.compute_over_deadline <= 1.0 && self.walk_over_deadline <= 1.0
    }
}

/// The share of a card's memory a proof can use: all but the CUDA context and reservations.
const USABLE_PERCENT: f64 = 97.0;

pub fn impersonation(
    actual: &'static herd_core::catalog::GpuModel,
    claimed: &'static herd_core::catalog::GpuModel,
    policy: &crate::Policy,
) -> Impersonation {
    use crate::params::{expected_ms, size, Claim, RANDOM_READ_EFFICIENCY_PERCENT};
    let sizing = size(Claim::Gpu { model: claimed, count: 1 }, policy);
    let compute_ms = expected_ms(Claim::Gpu { model: actual, count: 1 }, &sizing.params) as f64;
    let vram = size_vram(Some(claimed), 1, false, policy).expect("a GPU claim has a proof of VRAM");
    let dataset = vram.params.dataset_bytes() as f64;
    let held = (f64::from(actual.vram_gib) * (1u64 << 30) as f64 * USABLE_PERCENT / 100.0 / dataset).min(1.0);
    let local = f64::from(actual.memory_gbps) * 1e9 * RANDOM_READ_EFFICIENCY_PERCENT as f64 / 100.0;
    let remote = f64::from(actual.host_link_gbps) * 1e9;
    let reads = vram.params.expected_walks() as f64 * f64::from(vram.params.steps);
    let seconds_per_read = held * ITEM_BYTES as f64 / local + (1.0 - held) * ITEM_BYTES as f64 / remote;
    Impersonation {
        compute_over_deadline: compute_ms / sizing.deadline_ms as f64,
        walk_over_deadline: reads * seconds_per_read * 1000.0 / vram.walk_deadline_ms as f64,
        held,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: VramParams = VramParams { gpus: 2, items: 4096, rounds: 8, steps: 16, difficulty: 8, wins: 4 };

    #[test]
    fn chacha_double_rounds_match_the_rfc_7539_block_function() {
        // RFC 7539 §2.3.2: ten double rounds plus the feed-forward.
        let key: Key = std::array::from_fn(|i| {
            u32::from_le_bytes([4 * i as u8, 4 * i as u8 + 1, 4 * i as u8 + 2, 4 * i as u8 + 3])
        });
        let mut s = [0u32; 16];
        s[..4].copy_from_slice(&SIGMA);
        s[4..12].copy_from_slice(&key);
        s[12] = 1;
        s[13] = 0x0900_0000;
        s[14] = 0x4a00_0000;
        s[15] = 0;
        let input = s;
        for _ in 0..10 {
            double_round(&mut s);
        }
        for (w, i) in s.iter_mut().zip(input) {
            *w = w.wrapping_add(i);
        }
        assert_eq!(s[0], 0xe4e7_f110);
        assert_eq!(s[15], 0x4e3c_50a2);
    }

    #[test]
    fn an_honest_device_passes_and_its_wins_are_exactly_checked() {
        let stop = AtomicBool::new(false);
        let seed = [3; 32];
        let nonce = [5; 32];
        let wins = solve_vram(&seed, &nonce, &SMALL, &stop).unwrap();
        check_vram(&seed, &nonce, &SMALL, &wins).unwrap();

        let err = check_vram(&seed, &[6; 32], &SMALL, &wins).unwrap_err();
        assert!(matches!(err, VramFailure::NotAWin { .. }), "another nonce, other wins: {err}");
        assert!(matches!(check_vram(&seed, &nonce, &SMALL, &wins[..1]), Err(VramFailure::GpuCount { .. })));
        let mut repeated = wins.clone();
        repeated[1][1] = repeated[1][0];
        assert!(matches!(check_vram(&seed, &nonce, &SMALL, &repeated), Err(VramFailure::Repeated { gpu: 1, .. })));
        let mut short = wins.clone();
        short[0].pop();
        assert!(matches!(check_vram(&seed, &nonce, &SMALL, &short), Err(VramFailure::WinCount { gpu: 0, .. })));
    }

    #[test]
    fn one_gpus_dataset_cannot_answer_for_another() {
        let stop = AtomicBool::new(false);
        let (seed, nonce) = ([3; 32], [5; 32]);
        let first = Dataset::fill(&seed, 0, &SMALL, &stop).unwrap();
        let wins = first.search(&seed, &nonce, 0, &SMALL, &stop).unwrap();
        // GPU 0's walks on GPU 0's data, claimed for GPU 1 too.
        let err = check_vram(&seed, &nonce, &SMALL, &[wins.clone(), wins]).unwrap_err();
        assert!(matches!(err, VramFailure::NotAWin { gpu: 1, .. }), "{err}");
    }

    #[test]
    fn a_dataset_smaller_than_claimed_gives_walks_that_do_not_win() {
        // A card holding half the items and folding the rest onto them.
        let stop = AtomicBool::new(false);
        let (seed, nonce) = ([3; 32], [5; 32]);
        let half = VramParams { items: SMALL.items / 2, ..SMALL };
        let data = Dataset::fill(&seed, 0, &half, &stop).unwrap();
        let walks = walk_key(&seed, &nonce, 0);
        let mut found = Vec::new();
        let mut w = 0;
        while found.len() < SMALL.wins as usize {
            let out = walk(&walks, w, &SMALL, |i| data.items[(i % half.items) as usize]);
            if wins(&out, &SMALL) {
                found.push(w);
            }
            w += 1;
        }
        let err = check_vram(&seed, &nonce, &VramParams { gpus: 1, ..SMALL }, &[found]).unwrap_err();
        assert!(matches!(err, VramFailure::NotAWin { .. }), "{err}");
    }

    #[test]
    fn walks_use_every_part_of_the_dataset() {
        let params = VramParams { items: 1000, ..SMALL };
        let mut seen = vec![0u32; 1000];
        let walks = walk_key(&[1; 32], &[2; 32], 0);
        for w in 0..200 {
            walk(&walks, w, &params, |i| {
                seen[i as usize] += 1;
                [i as u32; 16]
            });
        }
        // 3,200 reads over 1,000 items: every tenth of the range is read.
        for tenth in seen.chunks(100) {
            assert!(tenth.iter().sum::<u32>() > 200, "{tenth:?}");
        }
    }

    #[test]
    fn full_size_proofs_fill_the_card_and_stay_inside_the_bounds() {
        let policy = crate::Policy::default();
        for model in herd_core::catalog::GPU_MODELS {
            let sizing = size_vram(Some(model), 8, false, &policy).unwrap();
            sizing.params.validate().unwrap();
            let gib = sizing.params.dataset_bytes() as f64 / (1u64 << 30) as f64;
            assert!((gib / f64::from(model.vram_gib) - 0.9).abs() < 0.01, "{}: {gib} GiB", model.name);
            assert!((3_000..=5_000).contains(&sizing.walk_expected_ms), "{}: {sizing:?}", model.name);
            assert!(sizing.fill_deadline_ms < 120_000, "{}: {sizing:?}", model.name);
        }
        assert!(size_vram(None, 0, false, &policy).is_none(), "a CPU has no proof of VRAM");
        let token = size_vram(None, 2, true, &policy).unwrap();
        assert_eq!(token.params.gpus, 2);
    }

    #[test]
    fn the_cards_the_issue_names_cannot_pass_as_bigger_ones_and_honest_ones_pass() {
        use herd_core::catalog::lookup;
        let policy = crate::Policy::default();
        let card = |name| lookup(name).unwrap();
        for model in herd_core::catalog::GPU_MODELS.iter().filter(|m| m.vendor == herd_core::GpuVendor::Nvidia) {
            let honest = impersonation(model, model, &policy);
            assert!(honest.passes(), "an honest {} passes: {honest:?}", model.name);
            assert!(
                honest.walk_over_deadline < 0.5 && honest.compute_over_deadline < 0.5,
                "{}: {honest:?}",
                model.name
            );
        }
        for (actual, claimed) in [("RTX 4090", "H100"), ("A100-40GB", "A100-80GB"), ("H100", "H200"), ("H200", "B200")]
        {
            let cheat = impersonation(card(actual), card(claimed), &policy);
            assert!(!cheat.passes(), "{actual} as {claimed}: {cheat:?}");
        }
    }

    #[test]
    fn parameters_from_the_wire_are_bounded() {
        SMALL.validate().unwrap();
        for bad in [
            VramParams { gpus: 0, ..SMALL },
            VramParams { items: ITEMS_MAX + 1, ..SMALL },
            VramParams { rounds: 0, ..SMALL },
            VramParams { steps: STEPS_MAX + 1, ..SMALL },
            VramParams { difficulty: 0, ..SMALL },
            VramParams { wins: 0, ..SMALL },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
