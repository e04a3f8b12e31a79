//! Proof-of-compute messages on the worker socket, and the public record of each proof.
//! Hashes travel as lowercase hex; rows as JSON integer arrays.

use herd_core::hex;
use herd_core::Timestamp;
use herd_verify::vram::VramParams;
use herd_verify::{Hash, Opening, Params, Pick};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A challenge (server → worker): compute the chain seeded by this nonce and the device's
/// key, and commit to its checkpoints within `deadline_ms` of receiving this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofChallenge {
    pub challenge_id: String,
    /// Hex; the seed is `herd_verify::challenge_seed(device key, nonce bytes)`.
    pub nonce: String,
    pub n: u32,
    pub rows: u32,
    pub steps: u32,
    pub stride: u32,
    pub openings: u32,
    pub deadline_ms: u64,
}

impl ProofChallenge {
    pub fn params(&self) -> Params {
        Params { n: self.n, rows: self.rows, steps: self.steps, stride: self.stride, openings: self.openings }
    }
}

/// A proof of VRAM (server → worker), after the compute proof passed: fill every GPU's
/// dataset (seeded by `herd_verify::challenge_seed(device key, nonce)`) and say so within
/// `fill_deadline_ms`; the walk nonce follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VramChallenge {
    pub challenge_id: String,
    pub nonce: String,
    pub gpus: u32,
    pub items: u64,
    pub rounds: u32,
    pub steps: u32,
    pub difficulty: u64,
    pub wins: u32,
    pub fill_deadline_ms: u64,
}

impl VramChallenge {
    pub fn params(&self) -> VramParams {
        VramParams {
            gpus: self.gpus,
            items: self.items,
            rounds: self.rounds,
            steps: self.steps,
            difficulty: self.difficulty,
            wins: self.wins,
        }
    }
}

/// One opened row (worker → server), see `herd_verify::Opening`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireOpening {
    pub checkpoint: u32,
    pub row: u32,
    #[serde(default)]
    pub start: Option<Vec<i8>>,
    pub start_path: Vec<String>,
    pub links: Vec<Vec<i32>>,
    pub end_path: Vec<String>,
}

pub fn encode_hashes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(|h| hex::encode(h)).collect()
}

/// None if any entry is not 64 hex digits.
pub fn decode_hashes(hashes: &[String]) -> Option<Vec<Hash>> {
    hashes.iter().map(|h| hex::decode_array::<32>(h)).collect()
}

impl From<&Opening> for WireOpening {
    fn from(opening: &Opening) -> Self {
        WireOpening {
            checkpoint: opening.pick.checkpoint,
            row: opening.pick.row,
            start: opening.start.clone(),
            start_path: encode_hashes(&opening.start_path),
            links: opening.links.clone(),
            end_path: encode_hashes(&opening.end_path),
        }
    }
}

impl WireOpening {
    /// None if a path hash is not hex.
    pub fn decode(self) -> Option<Opening> {
        Some(Opening {
            pick: Pick { checkpoint: self.checkpoint, row: self.row },
            start: self.start,
            start_path: decode_hashes(&self.start_path)?,
            links: self.links,
            end_path: decode_hashes(&self.end_path)?,
        })
    }
}

/// How a proof ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProofOutcome {
    Running,
    Passed,
    Failed,
    /// The worker said it cannot prove this hardware (e.g. no GPU solver built in).
    Declined,
    /// Interrupted (disconnect, coordinator restart); neither a pass nor a failure.
    Aborted,
}

impl ProofOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Declined => "declined",
            Self::Aborted => "aborted",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Running, Self::Passed, Self::Failed, Self::Declined, Self::Aborted]
            .into_iter()
            .find(|o| o.as_str() == text)
    }
}

/// One proof of compute, as `GET /v1/devices/{id}/verifications` shows it. Public: it names
/// the challenge, its size and timing, and the outcome with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Verification {
    pub id: String,
    pub device: herd_core::Address,
    /// `admission` (a new or changed device) or `recheck` (a random re-challenge).
    pub purpose: String,
    /// What was claimed, e.g. "1× H100", "2 CPU cores", "simulated".
    pub claim: String,
    pub n: u32,
    pub rows: u32,
    pub steps: u32,
    pub stride: u32,
    pub openings: u32,
    /// Floating-point operations the chain takes.
    pub work_gflop: u64,
    pub expected_ms: u64,
    pub deadline_ms: u64,
    pub issued_at: Timestamp,
    /// When the commitment arrived, if it did.
    pub committed_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub outcome: ProofOutcome,
    pub reason: Option<String>,
    /// Coordinator CPU time spent checking the openings, microseconds.
    pub verify_us: Option<u64>,
}
