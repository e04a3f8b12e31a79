//! Messages on the worker socket (`/v1/worker/connect`), JSON text frames.
//!
//! Handshake: the coordinator sends `Challenge`; the worker answers `Hello` whose payload
//! (JSON of `HelloPayload`, carrying the nonce) is signed by the device key; the coordinator
//! answers `Welcome` or `Rejected` and closes. Then heartbeats and task events flow up,
//! assignments flow down.

use std::collections::BTreeMap;

use herd_core::{Address, ClusterId, DeviceSpec, JobId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::api::{Stream, Utilization};
use crate::proof::{ProofChallenge, VramChallenge, WireOpening};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Challenge {
        nonce: String,
        server_time: Timestamp,
    },
    Welcome {
        device_id: Address,
        heartbeat_interval_ms: u64,
    },
    Rejected {
        code: String,
        message: String,
    },
    StartTask(TaskAssignment),
    StopTask {
        job_id: JobId,
        /// Only this attempt (None: whichever runs).
        #[serde(default)]
        attempt: Option<u32>,
    },
    /// The lease ended: stop everything that belongs to the cluster.
    StopCluster {
        cluster_id: ClusterId,
    },
    /// A single-use token (valid a minute) for one throughput test against
    /// `/v1/worker/speedtest/{token}/…`; sent after the welcome and when asked.
    SpeedtestToken {
        token: String,
    },
    /// Prove the claimed hardware: compute and commit before the deadline.
    ProofChallenge(ProofChallenge),
    /// Open these (checkpoint, row) pairs of the committed chain.
    ProofOpen {
        challenge_id: String,
        picks: Vec<[u32; 2]>,
    },
    /// Prove the claimed GPU memory: fill it, then report `VramFilled`.
    VramChallenge(VramChallenge),
    /// Walk the filled datasets with this nonce (hex) and send each GPU's wins within
    /// `deadline_ms` of receiving it.
    VramWalk {
        challenge_id: String,
        walk_nonce: String,
        deadline_ms: u64,
    },
    /// Join (or stay in) a lease's overlay network with this certificate; sent again with a
    /// longer-lived certificate when the lease is extended and with a longer blocklist when
    /// a member is revoked. Comes before the lease's Ray node and tasks.
    JoinOverlay(OverlayAssignment),
    /// Run (or keep running) this device's Ray node of a Ray cluster.
    StartRayNode(RayNodeAssignment),
    /// An HTTP request for the Ray head's dashboard / job API, tunnelled to the head's agent:
    /// `TunnelOpen`, then the body in `TunnelData` chunks, then `TunnelEnd`.
    TunnelOpen(TunnelOpen),
    TunnelData {
        stream: u64,
        /// Base64 of at most `TUNNEL_CHUNK_BYTES`.
        data: String,
    },
    TunnelEnd {
        stream: u64,
    },
    /// The customer went away: drop the stream.
    TunnelAbort {
        stream: u64,
    },
}

/// Bytes of body per tunnel chunk (base64 makes a frame about 4/3 of it).
pub const TUNNEL_CHUNK_BYTES: usize = 128 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TunnelOpen {
    /// Chosen by the coordinator, unique per connection.
    pub stream: u64,
    pub cluster_id: ClusterId,
    pub method: String,
    /// Path and query on the head's dashboard, starting with `/`.
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// Set (to `websocket`, the one protocol relayed) when the customer asked to upgrade the
    /// connection: after a `101` answer, `TunnelData` flows both ways as raw bytes of the
    /// upgraded connection until either side sends `TunnelEnd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<String>,
}

/// This device's place in a lease's overlay network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverlayAssignment {
    pub cluster_id: ClusterId,
    /// The lease epoch of this device's tenure of its rank.
    pub epoch: i64,
    /// The node's overlay address with the network's prefix, `100.64.1.2/10`.
    pub address: String,
    /// The host certificate (PEM) for the public key this device sent in its hello.
    pub cert: String,
    /// The network's CA certificate (PEM).
    pub ca: String,
    /// Lighthouses and relays. An underlay address with an empty host (`:4242`) means the host
    /// this worker reaches the coordinator at.
    pub lighthouses: Vec<OverlayLighthouse>,
    /// The lease's certificate group: inbound traffic must carry it.
    pub group: String,
    /// Fingerprints of the lease's revoked certificates.
    pub blocklist: Vec<String>,
    /// Changes whenever a lighthouse/relay restarted: the node then restarts its nebula
    /// rather than wait out stale relay state (Nebula 1.6 takes ~30–50 s to notice).
    #[serde(default)]
    pub relay_generation: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverlayLighthouse {
    pub overlay_ip: String,
    pub underlay: Vec<String>,
}

/// Whether this worker can join lease overlays, told in every hello.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum OverlaySupport {
    /// Nebula, the TUN device and CAP_NET_ADMIN are there. `public_key`: hex of the X25519
    /// key this agent run made for its overlay certificates (the secret stays on the machine).
    Ready { public_key: String },
    /// What is missing and how to provide it; the device takes single-node leases only.
    Unavailable { reason: String },
}

/// How this device's overlay node is doing, sent on every change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverlayReport {
    pub cluster_id: ClusterId,
    pub epoch: i64,
    pub up: bool,
    pub error: Option<String>,
    pub restarts: u32,
    /// Each peer (overlay address) and how it is reached: `direct HOST:PORT` or
    /// `relayed via ADDRESS`.
    pub peers: Vec<(String, String)>,
}

/// This device's part of a Ray cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RayNodeAssignment {
    pub cluster_id: ClusterId,
    pub rank: u32,
    /// The Ray release, `X.Y.Z` (validated by the coordinator).
    pub version: String,
    /// None: this node is the head. Some: the head's GCS address (`HOST:PORT`) to join.
    pub head_address: Option<String>,
    pub resources: herd_core::ray::RayResources,
    /// What the node's container may use (docker runtime), as for tasks.
    #[serde(default)]
    pub limits: herd_core::TaskLimits,
    /// The lease epoch: this device's tenure of this rank (new for every device that takes
    /// a rank). Reports carry it back; one from an earlier tenure is refused.
    #[serde(default)]
    pub epoch: i64,
    /// The address the node runs on: its overlay address on a lease with an overlay network
    /// (the node starts once the overlay is up); None: the device's advertised address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_ip: Option<String>,
}

/// How a Ray node is doing, sent on every change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RayNodeReport {
    pub cluster_id: ClusterId,
    pub state: herd_core::RayNodeState,
    /// Why it failed, or what it is doing while starting.
    pub detail: Option<String>,
    /// The head's GCS address once it runs (head only).
    pub gcs_address: Option<String>,
    /// The head it joined (workers only), so a stale join is noticed after a head moves.
    pub head_address: Option<String>,
    /// Times the agent restarted this node after a crash.
    pub restarts: u32,
    /// The assignment's lease epoch.
    #[serde(default)]
    pub epoch: i64,
}

/// Bytes a throughput test moves each way (the coordinator refuses more).
pub const SPEEDTEST_DOWNLOAD_BYTES: u64 = 16 << 20;
pub const SPEEDTEST_UPLOAD_BYTES: u64 = 8 << 20;
/// The download's last bytes are a random receipt; the upload presents them (hex) in this
/// header, so the coordinator knows the whole download arrived when it stops its clock.
pub const SPEEDTEST_RECEIPT_BYTES: usize = 32;
pub const SPEEDTEST_RECEIPT_HEADER: &str = "x-herd-speedtest-receipt";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskAssignment {
    pub job_id: JobId,
    pub cluster_id: ClusterId,
    pub rank: u32,
    pub node_count: u32,
    pub head_addr: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// The container image (docker runtime); None: the worker's default image.
    #[serde(default)]
    pub image: Option<String>,
    /// What the task may use of the leased device.
    #[serde(default)]
    pub limits: herd_core::TaskLimits,
    /// Which run of the job this is (1, then one more per retry after a lost node). A task
    /// is (job, attempt): every report names both, and a report of an attempt that is not
    /// the current one is refused — a worker that was cut off cannot rewrite a retry.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// The cluster's Ray GCS (`HOST:PORT`) on a Ray cluster whose head runs: the task's
    /// `RAY_ADDRESS`, so a driver's `ray.init()` joins its own cluster and no other Ray on
    /// the machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ray_address: Option<String>,
}

fn first_attempt() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMessage {
    Hello(SignedHello),
    Heartbeat {
        utilization: Utilization,
    },
    TaskStarted {
        job_id: JobId,
        #[serde(default = "first_attempt")]
        attempt: u32,
    },
    TaskOutput {
        job_id: JobId,
        #[serde(default = "first_attempt")]
        attempt: u32,
        stream: Stream,
        lines: Vec<String>,
    },
    /// `exit_code` is None when the process was killed by a signal or never started.
    TaskExited {
        job_id: JobId,
        #[serde(default = "first_attempt")]
        attempt: u32,
        exit_code: Option<i32>,
        error: Option<String>,
    },
    /// A new throughput measurement (at registration and daily).
    Throughput(Throughput),
    /// Asks for a fresh speedtest token (the daily re-test).
    SpeedtestWanted,
    /// The Merkle roots of every checkpoint, hex, in order.
    ProofCommitment {
        challenge_id: String,
        roots: Vec<String>,
    },
    /// One opened row; one message per pick, in the order asked, so frames stay small.
    ProofOpening {
        challenge_id: String,
        opening: WireOpening,
    },
    /// Every GPU's dataset of a proof of VRAM is in memory; ready for the walk nonce.
    VramFilled {
        challenge_id: String,
    },
    /// Each GPU's winning walks, GPU by GPU in the order the device reported its GPUs.
    VramWins {
        challenge_id: String,
        wins: Vec<Vec<u64>>,
    },
    /// The worker cannot answer (e.g. it has GPUs but no GPU solver built in).
    ProofDeclined {
        challenge_id: String,
        reason: String,
    },
    RayNode(RayNodeReport),
    OverlayStatus(OverlayReport),
    /// The head dashboard's answer to a tunnelled request, then its body in `TunnelData`
    /// chunks and a `TunnelEnd`.
    TunnelResponse {
        stream: u64,
        status: u16,
        headers: Vec<(String, String)>,
    },
    TunnelData {
        stream: u64,
        data: String,
    },
    TunnelEnd {
        stream: u64,
        /// Set when the stream broke (the dashboard unreachable, the body cut short).
        error: Option<String>,
    },
}

/// Download and upload throughput in Mbit/s; the coordinator derives the connectivity tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throughput {
    pub down_mbps: u32,
    pub up_mbps: u32,
}

/// `payload` is the JSON text of a `HelloPayload`; the signature covers exactly those bytes
/// (`signing::worker_hello_message`), so nothing is re-serialised before verification.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedHello {
    pub payload: String,
    pub signature: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HelloPayload {
    pub protocol_version: u32,
    pub nonce: String,
    pub device_key: Address,
    /// The supplier account this device belongs to; fixed at first registration.
    pub owner: Address,
    pub country: String,
    pub simulated: bool,
    /// Where other nodes of a cluster reach this device (`HERD_HEAD_ADDR`).
    pub advertise_addr: String,
    pub agent_version: String,
    pub spec: DeviceSpec,
    /// The supplier's floor, USD micros per GPU-hour (per node-hour for CPU-only machines);
    /// None: the catalog default.
    #[serde(default)]
    pub floor_micros: Option<i64>,
    /// Measured throughput to the coordinator, if the worker has measured it.
    #[serde(default)]
    pub throughput: Option<Throughput>,
    /// The owner's consent, needed only when a device registers: their signature over
    /// `signing::device_endorsement_message` (base58) when the worker runs where the
    /// owner's key is, or else a pairing code the owner issued.
    #[serde(default)]
    pub owner_endorsement: Option<String>,
    #[serde(default)]
    pub pairing_code: Option<String>,
    /// Every task the agent still holds, so a reconnect (or a coordinator restart) adopts
    /// running work instead of restarting it.
    pub tasks: Vec<TaskReport>,
    /// Every Ray node the agent runs, so a reconnect keeps them instead of restarting them.
    #[serde(default)]
    pub ray_nodes: Vec<RayNodeReport>,
    /// None: an agent that predates overlays (single-node leases only).
    #[serde(default)]
    pub overlay: Option<OverlaySupport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    pub job_id: JobId,
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// None while running.
    pub exited: Option<TaskExit>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskExit {
    pub exit_code: Option<i32>,
    pub error: Option<String>,
}

/// Frames larger than this are refused by both ends.
pub const FRAME_BYTES_MAX: usize = 1 << 20;
/// Output lines per `TaskOutput` message and bytes per line, so one frame stays bounded.
pub const OUTPUT_LINES_PER_MESSAGE_MAX: usize = 256;
pub const OUTPUT_LINE_BYTES_MAX: usize = 2048;
