//! Proof of compute: a device proves the throughput it claims by computing a seeded chain
//! of exact integer matrix products before a deadline, committing to it with Merkle roots,
//! then opening rows the verifier picks at random.
//!
//! The verifier side (`params`, `verifier`) is pure: no IO, no clock, randomness comes in
//! as seeds. The CPU solver (`solver`) runs on the device; a GPU solver would compute the
//! same chain (entries in [-8, 8] are exact in fp16, sums exact in fp32 accumulation).

pub mod chain;
pub mod merkle;
pub mod params;
mod prg;
pub mod solver;
pub mod verifier;
pub mod vram;

pub use chain::challenge_seed;
pub use merkle::Hash;
pub use params::{size, Claim, Params, Policy, Sizing};
pub use prg::Seed;
pub use solver::{solve, Solution, Stopped};
pub use verifier::{check, choose, Failure};

/// A row the verifier asks to see: `row` of checkpoint `checkpoint` (1-based; checkpoint
/// c is the chain after c·stride steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pick {
    pub checkpoint: u32,
    pub row: u32,
}

/// A device's answer to one pick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opening {
    pub pick: Pick,
    /// The row at the previous checkpoint; None for checkpoint 1 (the verifier derives
    /// the seeded start itself).
    pub start: Option<Vec<i8>>,
    pub start_path: Vec<Hash>,
    /// The unreduced product of each step from the previous checkpoint to this one.
    pub links: Vec<Vec<i32>>,
    pub end_path: Vec<Hash>,
}
