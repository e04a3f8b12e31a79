//! herd's shared vocabulary.
//!
//! Architecture invariant: this crate does no IO and reads no clock. Time and randomness come
//! in as arguments, so everything here is deterministic and unit-testable.

pub mod catalog;
pub mod device;
pub mod geo;
pub mod hex;
pub mod id;
pub mod job;
pub mod limits;
pub mod money;
pub mod ray;
pub mod reputation;
pub mod tier;
pub mod time;
pub mod url;

pub use device::{CpuSpec, DeviceEvent, DeviceSpec, DeviceState, GpuSpec, GpuVendor};
pub use id::{Address, ClusterId, IdError, JobId};
pub use job::{ClusterKind, ClusterState, JobKind, JobState, RayNodeState, TaskState};
pub use limits::{JobLimits, TaskLimits};
pub use money::{Asset, Micros};
pub use tier::{ConnectivityTier, SecurityTier};
pub use time::Timestamp;
