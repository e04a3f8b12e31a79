//! What a device is (its hardware, as detected by the worker) and the states it moves through.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::catalog::{self, GpuModel};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum GpuVendor {
    Nvidia,
    Amd,
    Apple,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GpuSpec {
    pub vendor: GpuVendor,
    /// The name the driver reports, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    pub uuid: String,
    pub vram_bytes: u64,
    pub driver_version: Option<String>,
    pub cuda_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CpuSpec {
    pub model: String,
    pub physical_cores: u32,
    pub logical_cores: u32,
}

/// A machine as its worker detected it. Untrusted input: `validate` bounds every field
/// before the coordinator stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceSpec {
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub cpu: CpuSpec,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub gpus: Vec<GpuSpec>,
}

pub const GPUS_PER_DEVICE_MAX: usize = 64;
const TEXT_LEN_MAX: usize = 256;
const LOGICAL_CORES_MAX: u32 = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid device spec: {0}")]
pub struct SpecError(String);

impl DeviceSpec {
    pub fn validate(&self) -> Result<(), SpecError> {
        let texts =
            [("hostname", &self.hostname), ("os", &self.os), ("arch", &self.arch), ("cpu model", &self.cpu.model)];
        for (field, text) in texts {
            if text.len() > TEXT_LEN_MAX {
                return Err(SpecError(format!("{field} is longer than {TEXT_LEN_MAX} bytes")));
            }
        }
        if self.cpu.logical_cores == 0 || self.cpu.logical_cores > LOGICAL_CORES_MAX {
            return Err(SpecError(format!(
                "cpu.logical_cores must be 1..={LOGICAL_CORES_MAX}, got {}",
                self.cpu.logical_cores
            )));
        }
        if self.cpu.physical_cores > self.cpu.logical_cores {
            return Err(SpecError("cpu.physical_cores exceeds cpu.logical_cores".into()));
        }
        if self.memory_bytes == 0 {
            return Err(SpecError("memory_bytes must be positive".into()));
        }
        if self.gpus.len() > GPUS_PER_DEVICE_MAX {
            return Err(SpecError(format!("at most {GPUS_PER_DEVICE_MAX} GPUs per device, got {}", self.gpus.len())));
        }
        for gpu in &self.gpus {
            if gpu.name.len() > TEXT_LEN_MAX || gpu.uuid.len() > TEXT_LEN_MAX {
                return Err(SpecError("gpu name or uuid is longer than 256 bytes".into()));
            }
        }
        Ok(())
    }

    /// What an admission proof vouches for: whether the device is simulated (that decides the
    /// proof's size) and every resource it claims: CPU cores, memory (whole GiB, so a kernel's
    /// reserve moving by a few pages does not count), each GPU's name, UUID and VRAM. An
    /// admission is bound to this text; when it changes, the device proves itself again.
    pub fn admission_claim(&self, simulated: bool) -> String {
        let mut gpus: Vec<String> =
            self.gpus.iter().map(|g| format!("{}={}:{}GiB", g.name, g.uuid, g.vram_bytes >> 30)).collect();
        gpus.sort();
        format!(
            "simulated={simulated};cores={};memory={}GiB;gpus=[{}]",
            self.cpu.logical_cores,
            self.memory_bytes >> 30,
            gpus.join(",")
        )
    }

    /// The catalog model of this device's GPUs and how many of them it has. A machine with
    /// mixed GPUs is offered as its most numerous known model.
    pub fn gpu_offer(&self) -> Option<(&'static GpuModel, u32)> {
        let mut counts: Vec<(&'static GpuModel, u32)> = Vec::new();
        for model in self.gpus.iter().filter_map(|g| catalog::lookup(&g.name)) {
            match counts.iter_mut().find(|(m, _)| m.name == model.name) {
                Some((_, n)) => *n += 1,
                None => counts.push((model, 1)),
            }
        }
        counts.into_iter().max_by_key(|(_, n)| *n)
    }
}

/// Device lifecycle. Every change is recorded with its time and reason (uptime and rewards
/// are computed from that record later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DeviceState {
    /// Registered, not yet admitted: not hireable.
    Pending,
    /// Online and free to lease.
    Ready,
    /// Online and part of a cluster.
    Hired,
    /// Missed heartbeats or disconnected.
    Offline,
    /// Refused by the network (with a reason); only an operator lifts it.
    Blocked,
}

impl DeviceState {
    pub const ALL: [DeviceState; 5] = [Self::Pending, Self::Ready, Self::Hired, Self::Offline, Self::Blocked];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ready => "ready",
            Self::Hired => "hired",
            Self::Offline => "offline",
            Self::Blocked => "blocked",
        }
    }

    /// The next state after `event`, or an error naming the impossible transition.
    pub fn next(self, event: DeviceEvent) -> Result<DeviceState, InvalidTransition> {
        use DeviceEvent as E;
        use DeviceState as S;
        let next = match (self, event) {
            (_, E::Block) => Some(S::Blocked),
            // The operator lifts a block: the device proves itself again when it reconnects.
            (S::Blocked, E::Unblock) => Some(S::Offline),
            (S::Blocked, _) => None,
            (S::Pending, E::Admit) => Some(S::Ready),
            // Changed hardware or a flag: not hireable until it proves itself again.
            (S::Ready | S::Pending, E::Requalify) => Some(S::Pending),
            (S::Ready, E::Lease) => Some(S::Hired),
            (S::Hired, E::Release) => Some(S::Ready),
            // A lease can end while its device is away; the device stays offline.
            (S::Offline, E::Release) => Some(S::Offline),
            (S::Pending | S::Ready | S::Hired, E::Disconnect) => Some(S::Offline),
            (S::Offline, E::Reconnect { admitted, leased }) => Some(match (admitted, leased) {
                (false, _) => S::Pending,
                (true, true) => S::Hired,
                (true, false) => S::Ready,
            }),
            _ => None,
        };
        next.ok_or(InvalidTransition { from: self, event })
    }
}

impl fmt::Display for DeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeviceState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeviceState::ALL.into_iter().find(|state| state.as_str() == s).ok_or_else(|| {
            format!("unknown device state {s:?}: expected one of pending, ready, hired, offline, blocked")
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceEvent {
    Admit,
    Requalify,
    Lease,
    Release,
    Disconnect,
    Reconnect { admitted: bool, leased: bool },
    Block,
    Unblock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("device cannot go from {from} on {event:?}")]
pub struct InvalidTransition {
    pub from: DeviceState,
    pub event: DeviceEvent,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A machine with `cores` logical cores, `memory_bytes` of RAM and the named GPUs.
    pub fn spec_with(cores: u32, memory_bytes: u64, gpus: &[&str]) -> DeviceSpec {
        DeviceSpec {
            cpu: CpuSpec { model: "c".into(), physical_cores: cores, logical_cores: cores },
            memory_bytes,
            ..spec_with_gpus(gpus)
        }
    }

    pub fn spec_with_gpus(names: &[&str]) -> DeviceSpec {
        DeviceSpec {
            hostname: "box".into(),
            os: "Linux".into(),
            arch: "x86_64".into(),
            cpu: CpuSpec { model: "EPYC".into(), physical_cores: 8, logical_cores: 16 },
            memory_bytes: 64 << 30,
            disk_bytes: 1 << 40,
            gpus: names
                .iter()
                .enumerate()
                .map(|(i, n)| GpuSpec {
                    vendor: GpuVendor::Nvidia,
                    name: (*n).into(),
                    uuid: format!("GPU-{i}"),
                    vram_bytes: 80 << 30,
                    driver_version: None,
                    cuda_version: None,
                })
                .collect(),
        }
    }

    #[test]
    fn lifecycle_follows_the_documented_path() {
        use DeviceEvent as E;
        let s = DeviceState::Pending.next(E::Admit).unwrap();
        assert_eq!(s, DeviceState::Ready);
        let s = s.next(E::Lease).unwrap();
        assert_eq!(s, DeviceState::Hired);
        let s = s.next(E::Disconnect).unwrap();
        assert_eq!(s, DeviceState::Offline);
        assert_eq!(s.next(E::Reconnect { admitted: true, leased: true }).unwrap(), DeviceState::Hired);
        assert_eq!(s.next(E::Reconnect { admitted: true, leased: false }).unwrap(), DeviceState::Ready);
        assert_eq!(s.next(E::Reconnect { admitted: false, leased: false }).unwrap(), DeviceState::Pending);
        assert_eq!(s.next(E::Release).unwrap(), DeviceState::Offline);
    }

    #[test]
    fn impossible_transitions_are_refused() {
        use DeviceEvent as E;
        assert!(DeviceState::Pending.next(E::Lease).is_err(), "pending devices are not hireable");
        assert!(DeviceState::Hired.next(E::Requalify).is_err(), "a lease is never broken to re-verify");
        assert!(DeviceState::Hired.next(E::Lease).is_err(), "no device in two leases");
        assert!(DeviceState::Offline.next(E::Lease).is_err());
        assert!(DeviceState::Blocked.next(E::Reconnect { admitted: true, leased: false }).is_err());
        assert_eq!(DeviceState::Hired.next(E::Block).unwrap(), DeviceState::Blocked);
        assert_eq!(DeviceState::Blocked.next(E::Unblock).unwrap(), DeviceState::Offline);
        assert!(DeviceState::Ready.next(E::Unblock).is_err(), "only a blocked device is unblocked");
    }

    #[test]
    fn state_names_round_trip() {
        for state in DeviceState::ALL {
            assert_eq!(state.as_str().parse::<DeviceState>().unwrap(), state);
        }
        assert!("busy".parse::<DeviceState>().is_err());
    }

    #[test]
    fn gpu_offer_counts_the_main_model() {
        let spec = spec_with_gpus(&["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3", "NVIDIA T4"]);
        let (model, count) = spec.gpu_offer().unwrap();
        assert_eq!((model.name, count), ("H100", 2));
        assert!(spec_with_gpus(&[]).gpu_offer().is_none());
    }

    #[test]
    fn validation_bounds_untrusted_specs() {
        let mut spec = spec_with_gpus(&["H100"]);
        assert!(spec.validate().is_ok());
        spec.hostname = "x".repeat(1000);
        assert!(spec.validate().is_err());
        let mut spec = spec_with_gpus(&[]);
        spec.cpu.logical_cores = 0;
        assert!(spec.validate().unwrap_err().to_string().contains("logical_cores"));
        let spec = spec_with_gpus(&["T4"; 65]);
        assert!(spec.validate().is_err());
    }
}
