//! REST bodies for `/v1`.

use std::collections::BTreeMap;

use herd_core::{
    Address, Asset, ClusterId, ClusterKind, ClusterState, ConnectivityTier, DeviceSpec, DeviceState, JobId, JobKind,
    JobState, Micros, RayNodeState, SecurityTier, TaskState, Timestamp,
};
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
    /// Worker sockets on this replica.
    pub workers_connected: u64,
    /// `sqlite` or `postgres`.
    #[serde(default)]
    pub database: String,
    /// Whether this replica does the once-only work (always true on SQLite).
    #[serde(default)]
    pub leader: bool,
    /// Round trip of a trivial query to the database, milliseconds.
    #[serde(default)]
    pub database_ms: f64,
    /// Round trip to the bus between replicas, milliseconds (absent without one).
    #[serde(default)]
    pub bus_ms: Option<f64>,
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

/// A one-time link that signs a browser in to the consoles as the account.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BrowserLink {
    pub address: Address,
    /// The path to open on the coordinator (`/console/login/…`): single use.
    pub path: String,
    pub expires_at: Timestamp,
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
    pub connectivity: ConnectivityTier,
    pub security: SecurityTier,
    pub reputation: u16,
    /// The supplier's floor, USD micros per GPU-hour (per node-hour for CPU-only machines).
    pub floor_micros: Micros,
    pub connected: bool,
    pub last_heartbeat_at: Option<Timestamp>,
    pub utilization: Option<Utilization>,
    pub created_at: Timestamp,
    /// Why the device cannot join lease overlays (it takes single-node leases only, where
    /// the network runs overlays); None: it can (or never said).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay_unavailable: Option<String>,
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

/// A cluster request, as JSON, as a YAML spec file (`herd cluster create -f`), or as flags.
/// Every field but `nodes` is optional; unknown fields are refused so typos are caught.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCluster {
    /// Number of nodes (whole machines).
    pub nodes: u32,
    /// A GPU model from the catalog (`H100`, `RTX 4090`, …). Omit it, and the constraints
    /// below, for a CPU cluster.
    #[serde(default)]
    pub gpu: Option<String>,
    /// Instead of a model: any catalog model with at least this much memory per GPU…
    #[serde(default)]
    pub min_vram_gib: Option<u32>,
    /// …and at least this FP16 throughput per GPU…
    #[serde(default)]
    pub min_tflops: Option<u32>,
    /// …from this vendor (`nvidia`, `amd`, `apple`).
    #[serde(default)]
    pub vendor: Option<String>,
    /// GPUs on each node (default 1 for GPU clusters).
    #[serde(default)]
    pub gpus_per_node: Option<u32>,
    /// Minimum CPU cores and RAM per node.
    #[serde(default)]
    pub cpu_cores: Option<u32>,
    #[serde(default)]
    pub ram_gib: Option<u32>,
    /// Allowed countries (ISO 3166-1 alpha-2); `country` is a one-country shorthand.
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub countries: Vec<String>,
    /// Allowed regions (`europe`, `north-america`, …), added to the allowed countries.
    #[serde(default)]
    pub regions: Vec<String>,
    #[serde(default)]
    pub deny_countries: Vec<String>,
    /// Minimum connectivity tier: none, low, medium, high, ultra.
    #[serde(default)]
    pub connectivity: Option<ConnectivityTier>,
    /// Minimum security tier: any, verified, datacenter.
    #[serde(default)]
    pub security: Option<SecurityTier>,
    /// Minimum device reputation, 0..=1000.
    #[serde(default)]
    pub min_reputation: Option<u16>,
    /// `anywhere` (default), `same-country` or `same-supplier`.
    #[serde(default)]
    pub colocation: Option<String>,
    /// Price ceiling in USD per GPU-hour (per node-hour for CPU clusters), e.g. "2.50".
    #[serde(default)]
    pub max_price_per_gpu_hour: Option<String>,
    /// Lease length in hours (1..=720, default 1).
    #[serde(default)]
    pub hours: Option<u32>,
    /// Payment asset: usdc (+2 % fee), io or credits.
    #[serde(default)]
    pub asset: Option<Asset>,
    /// `false` for a request that may wait for cheaper capacity (no urgency premium).
    #[serde(default)]
    pub start_now: Option<bool>,
    /// Create at the price of this quote (while it is valid).
    #[serde(default)]
    pub quote_id: Option<String>,
    /// `ray` (default): a Ray cluster across the nodes; `plain`: bare nodes for `herd job run`.
    #[serde(default)]
    pub kind: Option<ClusterKind>,
    /// The Ray release for a `ray` cluster (default: herd's tested one).
    #[serde(default)]
    pub ray_version: Option<String>,
}

/// One node of a quote or a cluster, with its price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuotedNode {
    pub device_id: Address,
    pub country: String,
    pub connectivity: ConnectivityTier,
    pub security: SecurityTier,
    pub reputation: u16,
    /// Catalog model, or null for a CPU-only machine.
    pub gpu_model: Option<String>,
    /// Nodes are whole machines: all the device's GPUs.
    pub gpus: u32,
    /// USD micros per GPU-hour (per node-hour for CPU-only machines).
    pub unit_price_micros: Micros,
    pub node_hour_micros: Micros,
}

/// The exact price of a request before it is created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Quote {
    pub id: String,
    pub expires_at: Timestamp,
    pub hardware: String,
    pub nodes: Vec<QuotedNode>,
    pub hours: u32,
    pub asset: Asset,
    /// All amounts in USD micros (10⁻⁶ $).
    pub per_hour_micros: Micros,
    pub subtotal_micros: Micros,
    /// 0.25 % reservation fee.
    pub reservation_fee_micros: Micros,
    /// +2 % when paying in USDC; 0 in IO or credits.
    pub payment_fee_micros: Micros,
    pub total_micros: Micros,
}

/// The market for one GPU model (or CPU-only machines).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MarketPrice {
    /// Catalog model; "CPU" for CPU-only machines.
    pub model: String,
    pub devices_online: u64,
    pub devices_hired: u64,
    pub devices_idle: u64,
    pub gpus_online: u64,
    pub gpus_hired: u64,
    /// Hired ÷ online GPUs, per mille.
    pub utilisation_permille: u64,
    /// Market price per GPU-hour (USD micros); CPU: reference per core-hour.
    pub price_micros: Micros,
    pub change_24h_micros: Micros,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClusterNode {
    pub rank: u32,
    pub device_id: Address,
    pub device_state: DeviceState,
    pub country: String,
    pub address: String,
    pub simulated: bool,
    /// What this node costs per hour (USD micros).
    pub node_hour_micros: Micros,
    /// This node's Ray node (Ray clusters only).
    #[serde(default)]
    pub ray: Option<RayNodeStatus>,
    /// When this device took this rank (billing for it starts here).
    pub joined_at: Timestamp,
    /// Its place on the lease's overlay network (leases on one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<NodeOverlay>,
}

/// A node on its lease's overlay network, as its agent last reported it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodeOverlay {
    /// Its overlay address (every other node of the lease reaches it there, on any port).
    pub address: String,
    pub up: bool,
    pub error: Option<String>,
    /// Times its agent restarted `nebula`.
    pub restarts: u32,
    /// Each peer it has a tunnel with: overlay address and `direct HOST:PORT` or
    /// `relayed via ADDRESS`.
    pub peers: Vec<(String, String)>,
}

/// A device that held a rank of the cluster and no longer does (it was lost and replaced,
/// or the lease ended): billed from `joined_at` to `left_at`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DepartedNode {
    pub rank: u32,
    pub device_id: Address,
    pub node_hour_micros: Micros,
    pub joined_at: Timestamp,
    pub left_at: Timestamp,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RayNodeStatus {
    pub head: bool,
    pub state: RayNodeState,
    pub detail: Option<String>,
    pub restarts: u32,
}

/// A Ray cluster's state as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RayClusterState {
    /// Nodes are being provisioned and started.
    Starting,
    /// Every node runs and has joined the head.
    Ready,
    /// The head runs but some node does not.
    Degraded,
    /// The head is not running (it failed, or the lease ended).
    Down,
}

impl RayClusterState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Degraded => "degraded",
            Self::Down => "down",
        }
    }

    /// The whole from its nodes: (is head, state) each.
    pub fn of_nodes(nodes: &[(bool, RayNodeState)]) -> RayClusterState {
        let head = nodes.iter().find(|(head, _)| *head).map(|(_, s)| *s);
        match head {
            Some(RayNodeState::Running) if nodes.iter().all(|(_, s)| *s == RayNodeState::Running) => Self::Ready,
            Some(RayNodeState::Running) if nodes.iter().any(|(_, s)| *s == RayNodeState::Starting) => Self::Starting,
            Some(RayNodeState::Running) => Self::Degraded,
            Some(RayNodeState::Starting) => Self::Starting,
            _ => Self::Down,
        }
    }
}

/// How to reach a Ray cluster: only through the coordinator, with the cluster's own secret
/// in the path (give it only to people who may run code on the cluster).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RayAccess {
    pub version: String,
    pub state: RayClusterState,
    pub nodes_ready: u32,
    /// `/ray/{cluster}/{secret}`, relative to the coordinator: the Ray dashboard is there,
    /// and it is the address for Ray's own job SDK and CLI (`ray job submit --address`).
    pub path: String,
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
    /// USD micros per hour for the whole cluster, as agreed at creation.
    pub price_per_hour_micros: Micros,
    pub asset: Asset,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub end_reason: Option<String>,
    pub kind: ClusterKind,
    /// Ray clusters only.
    #[serde(default)]
    pub ray: Option<RayAccess>,
    /// While the cluster is short of nodes: what was lost and what herd is doing about it
    /// (finding a replacement, or waiting for capacity within the agreed price).
    #[serde(default)]
    pub healing: Option<String>,
    /// Devices that held a rank and were replaced, oldest first (running clusters).
    #[serde(default)]
    pub departed: Vec<DepartedNode>,
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
    /// Container image for workers with the docker runtime (default: the worker's base
    /// image); `name:tag` or `registry/name:tag`. Process-runtime workers ignore it.
    #[serde(default)]
    pub image: Option<String>,
    /// Less than the lease gives each node (memory, CPU, processes); omitted: all of it.
    #[serde(default)]
    pub limits: herd_core::JobLimits,
    /// `command` (default): the command runs on every node. `ray`: a Ray job on a Ray
    /// cluster; the command is its entrypoint, run by Ray on the head.
    #[serde(default)]
    pub kind: JobKind,
    /// Ray jobs: the job's runtime environment.
    #[serde(default)]
    pub runtime_env: Option<RayRuntimeEnv>,
    /// How many times herd starts the job again when a node it ran on is lost (or, for a
    /// Ray job, the head is lost), once the cluster has healed. A job that fails by itself
    /// is not retried. At most `JOB_RETRIES_MAX`.
    #[serde(default)]
    pub max_retries: u32,
}

/// The most `max_retries` a job may ask for.
pub const JOB_RETRIES_MAX: u32 = 10;

impl CreateJob {
    /// `command` on every node, with no extra environment, the default image and the lease's limits.
    pub fn new(cluster_id: ClusterId, command: Vec<String>) -> CreateJob {
        CreateJob {
            cluster_id,
            command,
            env: BTreeMap::new(),
            image: None,
            limits: Default::default(),
            kind: JobKind::Command,
            runtime_env: None,
            max_retries: 0,
        }
    }
}

/// The subset of Ray's runtime_env herd passes on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RayRuntimeEnv {
    /// A package already uploaded to the cluster (`gcs://_ray_pkg_….zip`).
    #[serde(default)]
    pub working_dir: Option<String>,
    /// pip requirements installed for the job on every node that runs it.
    #[serde(default)]
    pub pip: Vec<String>,
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
    pub image: Option<String>,
    pub limits: herd_core::JobLimits,
    pub tasks: Vec<Task>,
    pub created_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    #[serde(default)]
    pub kind: JobKind,
    /// What happened: Ray's last word on a Ray job (why it failed, …), or why herd is
    /// retrying the job.
    #[serde(default)]
    pub message: Option<String>,
    /// 1 for the first run; each retry after a lost node adds one.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    #[serde(default)]
    pub max_retries: u32,
}

fn first_attempt() -> u32 {
    1
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

// ---- wallet and ledger ----

/// One asset of an account's wallet, in minor units (10⁻⁶).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WalletBalance {
    pub asset: Asset,
    pub balance: i64,
    /// Reserved by holds (running leases, pending withdrawals).
    pub held: i64,
    pub available: i64,
}

/// A development network's faucet: mints test funds to the caller.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Deposit {
    pub asset: Asset,
    /// Decimal amount, at most 6 decimals (e.g. "250" or "12.5").
    pub amount: String,
    /// Idempotency key: a retry with the same id deposits once.
    #[serde(default)]
    pub id: Option<String>,
}

/// The public head of the ledger's hash chain and the key that signs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LedgerHead {
    pub entries: u64,
    pub head: String,
    /// The coordinator's ledger key (base58 Ed25519): every entry's hash is signed by it.
    pub public_key: Address,
}

/// One journal entry, exactly as hashed and signed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JournalEntry {
    pub seq: u64,
    pub at_ms: i64,
    /// The transfer: id, debit, credit, asset, amount, kind, code.
    #[schema(value_type = Object)]
    pub transfer: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
    pub signature: String,
}

/// A withdrawal to a Solana address.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Withdraw {
    /// usdc or io (credits stay on herd).
    pub asset: Asset,
    /// Decimal amount, at most 6 decimals.
    pub amount: String,
    /// The recipient: a Solana address (base58 Ed25519 public key).
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Payout {
    pub id: String,
    pub owner: Address,
    pub asset: Asset,
    /// Minor units (10⁻⁶).
    pub amount: i64,
    pub recipient: String,
    /// The Solana Pay transfer request that settles it.
    pub url: String,
    /// `pending` until the transfer's signature is confirmed, then `settled`.
    pub state: String,
    pub tx_signature: Option<String>,
    pub created_at: Timestamp,
    pub settled_at: Option<Timestamp>,
}

/// The operator's confirmation that a payout was sent: the Solana transaction signature,
/// and the ledger key's signature over `herd-payout-confirm-v1\n{id}\n{tx_signature}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmPayout {
    pub tx_signature: String,
    pub operator_signature: String,
}

/// A device's stake (IO, minor units).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StakeStatus {
    pub device_id: Address,
    pub owner: Address,
    pub staked: i64,
    /// 200 IO × max(1, multiplier) × processors.
    pub min_stake: i64,
    pub meets_minimum: bool,
    pub unstake_requested_at: Option<Timestamp>,
    /// When a requested unstake may be withdrawn (14 days after the request).
    pub withdrawable_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddStake {
    /// Decimal IO, at most 6 decimals.
    pub amount: String,
}

/// Burns IO to mint credits at the oracle price.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MintCredits {
    /// Decimal IO to burn.
    pub io: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreditsMinted {
    pub io_burned: i64,
    pub credits_minted: i64,
    /// USD micros per IO used.
    pub io_price_micros: i64,
}

/// One hour's block rewards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RewardBlock {
    /// Hours since genesis.
    pub hour: i64,
    pub at: Timestamp,
    /// IO minor units emitted this hour.
    pub emission: i64,
    /// (device, IO minor units), largest first.
    pub paid: Vec<(String, u64)>,
    /// (device, why it was not eligible).
    pub failed: Vec<(String, String)>,
    /// Emission no eligible device could take.
    pub to_treasury: i64,
}

/// The operator slashes a device's stake: the IO is burned.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Slash {
    /// The operator's unique id for this slash (8 to 64 letters, digits, `-` or `_`): a slash
    /// is carried out once; the same id again is refused with 409.
    pub id: String,
    /// `spoofing`, `failed-verification` or `abandoned-lease`.
    pub reason: String,
    /// Decimal IO (at most what is staked).
    pub amount: String,
    /// The ledger key's signature over
    /// `herd-slash-v2\nid={id}\ndevice={device}\nreason={reason}\namount={amount}`.
    pub operator_signature: String,
}

/// One privileged or money-moving action, as the audit log keeps it (append-only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: Timestamp,
    /// Who: an account address, `operator` (the ledger key) or `coordinator` (itself).
    pub actor: String,
    /// What, e.g. `stake.slash`, `payout.confirm`, `device.block`, `api_key.create`.
    pub action: String,
    /// On what: a device, payout, account or cluster id.
    pub target: Option<String>,
    /// The action's particulars (amounts, reasons); never a secret.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    /// The client address the request came from, when it came over HTTP.
    pub origin: Option<String>,
    /// The signature that authorised it, when one did (base58).
    pub signature: Option<String>,
}

/// The operator blocks a device (it can no longer connect or be hired) or lifts a block.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceBlock {
    /// Why, shown to the device's owner (1 to 200 characters).
    pub reason: String,
}
