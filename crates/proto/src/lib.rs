//! Wire formats. Architecture invariant: only this crate defines what crosses the network —
//! the REST bodies (`api`), the worker socket messages (`worker`) and what gets signed
//! (`signing`). Both ends depend on it, so they cannot drift apart.

pub mod api;
pub mod fuzzing;
pub mod proof;
pub mod signing;
pub mod worker;

/// The protocol version a worker announces; the coordinator refuses other major versions.
/// 4: GPU devices also prove their memory (`VramChallenge`, `VramWalk`, `VramFilled`, `VramWins`).
/// 5: each lease's private overlay network (`overlay` in the hello, `JoinOverlay`,
/// `OverlayStatus`, Ray nodes' `node_ip`).
pub const WORKER_PROTOCOL_VERSION: u32 = 5;
