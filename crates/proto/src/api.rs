//! REST bodies for `/v1`.

use std::collections::BTreeMap;

use herd_core::{Address, ClusterId, ClusterState, DeviceSpec, DeviceState, JobId, JobState, TaskState, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every error: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `not_found`, `unauthorized`, `forbidden`, `invalid_request`,
    /// `conflict`, `no_capacity`, `unprocessable`, `unavailable`, `internal`.
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
    pub workers_connected: u64,
}

// ---- accounts and authentication ----

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChallengeRequest {
    pub address: Address,
    /// `register` or `login`.
    pub purpose: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Challenge {
    pub nonce: String,
    pub expires_at: Timestamp,
}

/// A challenge signed with the account key (`signing::account_challenge_message`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SignedChallenge {
    pub address: Address,
    pub nonce: String,
    /// Base58 Ed25519 signature.
    pub signature: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyIssued {
    pub address: Address,
    /// Shown once; the coordinator keeps only its hash.
    pub api_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Account {
    pub address: Address,
    pub created_at: Timestamp,
    pub devices: u64,
    pub clusters_running: u64,
}

/// A single-use code that lets one new device join the issuing account.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PairingCode {
    pub code: String,
    pub owner: Address,
    pub expires_at: Timestamp,
}

// ---- devices ----

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Device {
    /// The device's public key (base58).
    pub id: Address,
    pub owner: Address,
    pub state: DeviceState,
    pub state_reason: String,
    /// Simulated devices exist only to explore the market; they are marked everywhere.
    pub simulated: bool,
    pub country: String,
    /// Catalog GPU model and count, if the device has GPUs herd knows.
    pub gpu_model: Option<String>,
    pub gpu_count: u32,
    pub spec: DeviceSpec,
    pub cluster_id: Option<ClusterId>,
    pub connected: bool,
    pub last_heartbeat_at: Option<Timestamp>,
    pub utilization: Option<Utilization>,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Utilization {
    /// Whole-machine CPU use, percent ×100 (integer, 0..=10000).
    pub cpu_centi_percent: u32,
    pub memory_used_bytes: u64,
    /// Per GPU, in device order: utilisation percent (0..=100).
    pub gpu_percent: Vec<u32>,
    pub tasks_running: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeviceEvent {
    pub from: Option<DeviceState>,
    pub to: DeviceState,
    pub reason: String,
    pub at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeviceDetail {
    pub device: Device,
    /// Most recent first, at most 100.
    pub events: Vec<DeviceEvent>,
}

// ---- clusters ----

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateCluster {
    /// A GPU model from the catalog (`H100`, `RTX 4090`, …); omit for a CPU cluster.
    pub gpu: Option<String>,
    /// GPUs on each node (default 1 for GPU clusters).
    pub gpus_per_node: Option<u32>,
    pub nodes: u32,
    /// ISO 3166-1 alpha-2 country code to pin the nodes to.
    pub country: Option<String>,
    /// Lease length in hours (1..=720, default 1).
    pub hours: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClusterNode {
    pub rank: u32,
    pub device_id: Address,
    pub device_state: DeviceState,
    pub country: String,
    pub address: String,
    pub simulated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Cluster {
    pub id: ClusterId,
    pub owner: Address,
    pub state: ClusterState,
    /// `CPU` or `G×MODEL` per node.
    pub hardware: String,
    pub country: Option<String>,
    pub nodes: Vec<ClusterNode>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub end_reason: Option<String>,
}

// ---- jobs ----

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateJob {
    pub cluster_id: ClusterId,
    /// Program and arguments, run without a shell on every node.
    pub command: Vec<String>,
    /// Extra environment for every node (names must be `[A-Z_][A-Z0-9_]*`, not `HERD_*`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Task {
    pub rank: u32,
    pub device_id: Address,
    pub state: TaskState,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub id: JobId,
    pub cluster_id: ClusterId,
    pub owner: Address,
    pub state: JobState,
    pub command: Vec<String>,
    pub tasks: Vec<Task>,
    pub created_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    /// Monotonic per coordinator; pass it as `after` to resume.
    pub seq: i64,
    pub rank: u32,
    pub stream: Stream,
    pub text: String,
    pub at: Timestamp,
}

/// One line of the NDJSON log stream (`GET /v1/jobs/{id}/logs`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum LogEvent {
    Line(LogLine),
    /// Last event of a stream that followed the job to its end.
    End {
        job: Job,
    },
}
