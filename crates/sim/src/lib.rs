//! Simulated suppliers, so the market can be explored without hardware.
//!
//! A fleet is a pure function of its seed: the same seed gives the same machines, models and
//! countries everywhere, so a failing run can be replayed.

pub mod chaos;
pub mod market;

use herd_core::catalog;
use herd_core::{CpuSpec, DeviceSpec, GpuSpec, GpuVendor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, PartialEq)]
pub struct SimDevice {
    pub spec: DeviceSpec,
    pub country: String,
    /// Simulated (download, upload) Mbit/s, spread over the connectivity tiers.
    pub throughput_mbps: (u32, u32),
}

/// (catalog model or None for CPU-only, weight, GPUs per machine choices)
const MIX: &[(Option<&str>, u32, &[u32])] = &[
    (None, 20, &[0]),
    (Some("RTX 4090"), 26, &[1, 2, 4]),
    (Some("RTX 3090"), 12, &[1, 2]),
    (Some("A100-80GB"), 8, &[4, 8]),
    (Some("H100"), 8, &[1, 8]),
    (Some("L40S"), 6, &[2, 4]),
    (Some("A6000"), 5, &[1, 2]),
    (Some("T4"), 5, &[1, 4]),
    (Some("Apple M4 Max"), 6, &[1]),
    (Some("H200"), 2, &[8]),
];

const COUNTRIES: &[(&str, u32)] = &[
    ("US", 30),
    ("DE", 12),
    ("FR", 7),
    ("GB", 7),
    ("JP", 8),
    ("KR", 5),
    ("SG", 6),
    ("IN", 8),
    ("BR", 6),
    ("CA", 6),
    ("NL", 5),
];

pub(crate) fn pick<'a, T>(rng: &mut StdRng, items: &'a [T], weight: impl Fn(&T) -> u32) -> &'a T {
    let total: u32 = items.iter().map(&weight).sum();
    let mut roll = rng.gen_range(0..total);
    for item in items {
        let w = weight(item);
        if roll < w {
            return item;
        }
        roll -= w;
    }
    unreachable!("roll is below the total weight")
}

/// `count` simulated machines. Every fourth is CPU-only, so small CPU clusters always fit.
pub fn fleet(seed: u64, count: usize) -> Vec<SimDevice> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|index| {
            let (model, _, gpu_counts) = if index % 4 == 3 { &MIX[0] } else { pick(&mut rng, MIX, |m| m.1) };
            let gpu_count = gpu_counts[rng.gen_range(0..gpu_counts.len())];
            let country = pick(&mut rng, COUNTRIES, |c| c.1).0.to_owned();
            let logical_cores = [8u32, 16, 32, 64, 128][rng.gen_range(0..5)];
            let gpus = model
                .and_then(catalog::lookup)
                .map(|m| {
                    let vendor = m.vendor;
                    (0..gpu_count)
                        .map(|g| GpuSpec {
                            vendor,
                            name: if vendor == GpuVendor::Nvidia {
                                format!("NVIDIA {}", m.name)
                            } else {
                                m.name.to_owned()
                            },
                            uuid: format!("GPU-sim-{seed:x}-{index}-{g}"),
                            vram_bytes: u64::from(m.vram_gib) << 30,
                            driver_version: (vendor == GpuVendor::Nvidia).then(|| "550.54.15".to_owned()),
                            cuda_version: (vendor == GpuVendor::Nvidia).then(|| "12.4".to_owned()),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let spec = DeviceSpec {
                hostname: format!("sim-{index}"),
                os: if model.is_some_and(|m| m.starts_with("Apple")) { "macOS 15".into() } else { "Linux".into() },
                arch: if model.is_some_and(|m| m.starts_with("Apple")) { "aarch64".into() } else { "x86_64".into() },
                cpu: CpuSpec { model: "Simulated CPU".into(), physical_cores: logical_cores / 2, logical_cores },
                memory_bytes: u64::from(logical_cores) * (8 << 30),
                disk_bytes: 2 << 40,
                gpus,
            };
            let throughput_mbps = [(150, 20), (500, 350), (900, 700), (2000, 1500)][rng.gen_range(0..4)];
            SimDevice { spec, country, throughput_mbps }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_fleet() {
        assert_eq!(fleet(42, 50), fleet(42, 50));
        assert_ne!(fleet(42, 50), fleet(43, 50));
    }

    #[test]
    fn fleet_is_valid_and_mixed() {
        let devices = fleet(7, 200);
        assert!(devices.iter().all(|d| d.spec.validate().is_ok()));
        let cpu_only = devices.iter().filter(|d| d.spec.gpus.is_empty()).count();
        assert!(cpu_only >= 50, "every fourth device is CPU-only, got {cpu_only}");
        let models: std::collections::BTreeSet<_> =
            devices.iter().filter_map(|d| d.spec.gpu_offer()).map(|(m, _)| m.name).collect();
        assert!(models.len() >= 6, "a realistic mix, got {models:?}");
        let countries: std::collections::BTreeSet<_> = devices.iter().map(|d| d.country.as_str()).collect();
        assert!(countries.len() >= 6);
    }

    #[test]
    fn every_simulated_gpu_is_in_the_catalog() {
        for device in fleet(1, 100) {
            for gpu in &device.spec.gpus {
                assert!(catalog::lookup(&gpu.name).is_some(), "{}", gpu.name);
            }
        }
    }
}
