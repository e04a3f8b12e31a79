//! Ray clusters on leased devices: which Ray versions are accepted, what each node offers
//! Ray (exactly what its lease gives), and which node is the head.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{DeviceSpec, TaskLimits};

/// The Ray version a cluster gets when its request names none (the one herd's Ray image is
/// built with and the examples are tested against).
pub const RAY_VERSION_DEFAULT: &str = "2.40.0";
/// Ray's plasma store refuses to start with less than this.
const OBJECT_STORE_MIN_BYTES: u64 = 80 << 20;
/// The object store's share of a node's memory (Ray's own default).
const OBJECT_STORE_PERCENT: u64 = 30;
/// Simulated devices claim hardware they do not have; their object stores are kept small so
/// several of them fit on one real machine.
const SIMULATED_OBJECT_STORE_MAX_BYTES: u64 = 512 << 20;
/// The custom resource each GPU of a node carries, named after its catalog model, so a task
/// can ask for a model: `@ray.remote(resources={"herd-gpu:H100": 1})`.
pub const GPU_MODEL_RESOURCE_PREFIX: &str = "herd-gpu:";

/// A release number `X.Y.Z` (digits only): it becomes part of a pip requirement and a path,
/// so nothing else is accepted.
pub fn validate_ray_version(version: &str) -> Result<(), String> {
    let parts: Vec<&str> = version.split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit());
    if parts.len() == 3 && parts.iter().all(numeric) && parts[0] != "0" && parts[0] != "1" {
        Ok(())
    } else {
        Err(format!("invalid Ray version {version:?}: expected a release like {RAY_VERSION_DEFAULT} (Ray 2 or later)"))
    }
}

/// What one node offers Ray: the lease's cores, GPUs and memory, nothing more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RayResources {
    pub num_cpus: u32,
    /// Real GPUs only: a simulated device's GPUs do not exist, so Ray is not told of them.
    pub num_gpus: u32,
    pub memory_bytes: u64,
    pub object_store_bytes: u64,
    /// `herd-gpu:MODEL` → GPU count.
    #[serde(default)]
    pub custom: BTreeMap<String, u32>,
}

impl RayResources {
    pub fn of_lease(spec: &DeviceSpec, simulated: bool) -> RayResources {
        let limits = TaskLimits::of_lease(spec);
        let mut object_store = (limits.memory_bytes / 100 * OBJECT_STORE_PERCENT).max(OBJECT_STORE_MIN_BYTES);
        if simulated {
            object_store = object_store.min(SIMULATED_OBJECT_STORE_MAX_BYTES);
        }
        let mut custom = BTreeMap::new();
        let mut num_gpus = 0;
        if !simulated {
            num_gpus = spec.gpus.len() as u32;
            if let Some((model, count)) = spec.gpu_offer() {
                custom.insert(format!("{GPU_MODEL_RESOURCE_PREFIX}{}", model.name.replace(' ', "-")), count);
            }
        }
        RayResources {
            num_cpus: (limits.cpu_millis / 1000).max(1),
            num_gpus,
            memory_bytes: limits.memory_bytes.saturating_sub(object_store),
            object_store_bytes: object_store,
            custom,
        }
    }
}

/// The head is the most reliable node (highest reputation; the lower rank on a tie, so the
/// choice is deterministic). `nodes` is (rank, reputation); None when empty.
pub fn choose_head(nodes: &[(u32, u16)]) -> Option<u32> {
    nodes.iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0))).map(|(rank, _)| *rank)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::tests::spec_with;

    #[test]
    fn versions_are_plain_releases() {
        assert!(validate_ray_version("2.40.0").is_ok());
        assert!(validate_ray_version("2.9.3").is_ok());
        for bad in ["", "2.40", "2.40.0rc1", "1.13.0", "2.40.0; rm -rf /", "../2.40.0", "2..0", "2.40.0.1"] {
            assert!(validate_ray_version(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_node_offers_ray_exactly_its_lease() {
        let spec = spec_with(16, 64 << 30, &["NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 4090"]);
        let limits = TaskLimits::of_lease(&spec);
        let ray = RayResources::of_lease(&spec, false);
        assert_eq!(ray.num_cpus, 16);
        assert_eq!(ray.num_gpus, 2);
        assert_eq!(ray.memory_bytes + ray.object_store_bytes, limits.memory_bytes, "heap + object store = the lease");
        assert_eq!(ray.custom.get("herd-gpu:RTX-4090"), Some(&2), "{:?}", ray.custom);
    }

    #[test]
    fn simulated_gpus_are_not_offered_to_ray() {
        let spec = spec_with(8, 256 << 30, &["NVIDIA H100 80GB HBM3"]);
        let ray = RayResources::of_lease(&spec, true);
        assert_eq!((ray.num_gpus, ray.custom.len()), (0, 0));
        assert_eq!(ray.object_store_bytes, SIMULATED_OBJECT_STORE_MAX_BYTES);
    }

    #[test]
    fn small_nodes_keep_a_working_object_store() {
        let ray = RayResources::of_lease(&spec_with(1, 600 << 20, &[]), false);
        assert_eq!(ray.object_store_bytes, OBJECT_STORE_MIN_BYTES);
        assert_eq!(ray.num_cpus, 1);
    }

    #[test]
    fn the_head_is_the_most_reputable_node() {
        assert_eq!(choose_head(&[(0, 500), (1, 900), (2, 900)]), Some(1));
        assert_eq!(choose_head(&[(0, 700), (1, 600)]), Some(0));
        assert_eq!(choose_head(&[]), None);
    }
}
