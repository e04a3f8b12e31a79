//! The resources one task may use on a leased device.
//!
//! A lease hires a whole device, but not all of its memory: the agent and the supplier's
//! operating system keep a reserve, so a customer's memory hog is killed inside its container
//! instead of taking the machine (and the heartbeats) down with it. A job may ask for less
//! than its lease gives (`JobLimits`), never more.

use serde::{Deserialize, Serialize};

use crate::DeviceSpec;

const MIB: u64 = 1 << 20;
/// Memory kept back from every lease: at least this much…
pub const MEMORY_RESERVE_MIN_BYTES: u64 = 512 * MIB;
/// …or this share of the machine, whichever is larger.
pub const MEMORY_RESERVE_PERCENT: u64 = 10;
/// The smallest memory limit a task can be given or ask for.
pub const MEMORY_MIN_BYTES: u64 = 16 * MIB;
/// Disk kept back from every lease for the supplier: at least this much…
pub const DISK_RESERVE_MIN_BYTES: u64 = 1 << 30;
/// …or this share of the device's disk, whichever is larger.
pub const DISK_RESERVE_PERCENT: u64 = 10;
/// The smallest working area a lease gets.
pub const DISK_MIN_BYTES: u64 = 64 * MIB;
/// Processes (and threads) per leased logical core: plenty for real workloads (Ray starts a
/// few dozen per core), and a fork bomb stops at it.
pub const PIDS_PER_CORE: u32 = 512;
pub const PIDS_MIN: u32 = 64;
pub const PIDS_MAX: u32 = 32_768;

/// What a task's container is limited to; the worker enforces it (cgroups, device requests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskLimits {
    /// CPU time in thousandths of a core (2000 = two cores' worth).
    pub cpu_millis: u32,
    pub memory_bytes: u64,
    pub pids_max: u32,
    /// Exactly these GPUs are passed through, by UUID; empty for none.
    #[serde(default)]
    pub gpu_uuids: Vec<String>,
    /// The lease's working area on the node (its tasks' `/work`, together); 0 from a
    /// coordinator that predates it (the worker then picks its own size).
    #[serde(default)]
    pub disk_bytes: u64,
}

/// Limits a job asks for, each at most what its lease gives; None takes the lease's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_max: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LimitError(String);

impl TaskLimits {
    /// Everything a lease of `spec` gives one task.
    pub fn of_lease(spec: &DeviceSpec) -> TaskLimits {
        let cores = spec.cpu.logical_cores.max(1);
        let reserve = (spec.memory_bytes / 100 * MEMORY_RESERVE_PERCENT).max(MEMORY_RESERVE_MIN_BYTES);
        TaskLimits {
            cpu_millis: cores.saturating_mul(1000),
            memory_bytes: spec.memory_bytes.saturating_sub(reserve).max(MEMORY_MIN_BYTES),
            pids_max: cores.saturating_mul(PIDS_PER_CORE).clamp(PIDS_MIN, PIDS_MAX),
            gpu_uuids: spec.gpus.iter().map(|g| g.uuid.clone()).collect(),
            disk_bytes: spec
                .disk_bytes
                .saturating_sub((spec.disk_bytes / 100 * DISK_RESERVE_PERCENT).max(DISK_RESERVE_MIN_BYTES))
                .max(DISK_MIN_BYTES),
        }
    }

    /// The lease's limits narrowed to what the job asks for; an error names the first limit
    /// the job asks more of than the lease gives.
    pub fn narrowed(self, job: &JobLimits) -> Result<TaskLimits, LimitError> {
        fn pick<T: PartialOrd + Copy + std::fmt::Display>(
            name: &str,
            lease: T,
            asked: Option<T>,
            shown: impl Fn(T) -> String,
        ) -> Result<T, LimitError> {
            match asked {
                Some(asked) if asked > lease => Err(LimitError(format!(
                    "{name} {} is more than this lease gives a node ({})",
                    shown(asked),
                    shown(lease)
                ))),
                Some(asked) => Ok(asked),
                None => Ok(lease),
            }
        }
        Ok(TaskLimits {
            cpu_millis: pick("cpus", self.cpu_millis, job.cpu_millis, |m| format!("{:.3}", f64::from(m) / 1000.0))?,
            memory_bytes: pick("memory", self.memory_bytes, job.memory_bytes, |b| format!("{} MiB", b / MIB))?,
            pids_max: pick("pids", self.pids_max, job.pids_max, |p| p.to_string())?,
            gpu_uuids: self.gpu_uuids,
            disk_bytes: self.disk_bytes,
        })
    }
}

impl JobLimits {
    /// Bounds that hold whatever the lease: a limit too small to start anything is a mistake.
    pub fn validate(&self) -> Result<(), LimitError> {
        if self.cpu_millis.is_some_and(|m| m < 10) {
            return Err(LimitError("cpus must be at least 0.01".into()));
        }
        if self.memory_bytes.is_some_and(|b| b < MEMORY_MIN_BYTES) {
            return Err(LimitError(format!("memory must be at least {} MiB", MEMORY_MIN_BYTES / MIB)));
        }
        if self.pids_max.is_some_and(|p| p < 8) {
            return Err(LimitError("pids must be at least 8".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::tests::spec_with;

    fn spec(cores: u32, memory_gib: u64, gpus: usize) -> DeviceSpec {
        spec_with(cores, memory_gib << 30, &vec!["H100"; gpus])
    }

    #[test]
    fn a_lease_keeps_a_memory_reserve_and_passes_every_gpu() {
        let big = TaskLimits::of_lease(&spec(32, 256, 2));
        assert_eq!(big.cpu_millis, 32_000);
        assert_eq!(big.memory_bytes, (256u64 << 30) - (256u64 << 30) / 100 * 10);
        assert_eq!(big.pids_max, 32 * PIDS_PER_CORE);
        assert_eq!(big.gpu_uuids, ["GPU-0", "GPU-1"]);
        let small = TaskLimits::of_lease(&spec(2, 1, 0));
        assert_eq!(small.memory_bytes, (1 << 30) - MEMORY_RESERVE_MIN_BYTES, "the 512 MiB floor wins");
        assert_eq!(small.pids_max, 1024);
        assert!(small.gpu_uuids.is_empty());
        let disk = |bytes: u64| TaskLimits::of_lease(&DeviceSpec { disk_bytes: bytes, ..spec(2, 1, 0) }).disk_bytes;
        assert_eq!(disk(1 << 40), (1 << 40) - (1u64 << 40) / 100 * 10, "10 % kept back");
        assert_eq!(disk(4 << 30), 3 << 30, "the 1 GiB floor wins");
        assert_eq!(disk(512 * MIB), DISK_MIN_BYTES, "never below the minimum");
    }

    #[test]
    fn a_job_narrows_but_never_widens() {
        let lease = TaskLimits::of_lease(&spec(4, 16, 0));
        let narrowed = lease
            .clone()
            .narrowed(&JobLimits { memory_bytes: Some(256 * MIB), pids_max: Some(100), cpu_millis: None })
            .unwrap();
        assert_eq!((narrowed.memory_bytes, narrowed.pids_max, narrowed.cpu_millis), (256 * MIB, 100, 4000));
        let error = lease.narrowed(&JobLimits { cpu_millis: Some(8000), ..Default::default() }).unwrap_err();
        assert_eq!(error.to_string(), "cpus 8.000 is more than this lease gives a node (4.000)");
    }

    #[test]
    fn tiny_limits_are_refused() {
        assert!(JobLimits { memory_bytes: Some(MIB), ..Default::default() }.validate().is_err());
        assert!(JobLimits { pids_max: Some(2), ..Default::default() }.validate().is_err());
        assert!(JobLimits { cpu_millis: Some(1), ..Default::default() }.validate().is_err());
        assert!(JobLimits::default().validate().is_ok());
    }
}
