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

/// A kind of machine that really exists with this GPU: (GPUs, CPU, logical cores, physical
/// cores, memory GiB). A gaming PC has one or two consumer cards and a desktop CPU; an 8×H100
/// is a DGX-class server with two Xeons and 2 TiB; an Apple laptop's memory is unified.
type Profile = (u32, &'static str, u32, u32, u64);

/// (catalog model or None for CPU-only, weight, the machines it comes in)
const MIX: &[(Option<&str>, u32, &[Profile])] = &[
    (
        None,
        20,
        &[
            (0, "AMD Ryzen 7 5700X", 16, 8, 32),
            (0, "AMD Ryzen 9 7950X", 32, 16, 64),
            (0, "AMD EPYC 7313", 32, 16, 128),
            (0, "AMD EPYC 7543", 64, 32, 256),
        ],
    ),
    (
        Some("RTX 4090"),
        26,
        &[
            (1, "AMD Ryzen 9 7950X", 32, 16, 64),
            (1, "Intel Core i9-13900K", 32, 24, 64),
            (2, "AMD Ryzen Threadripper 7960X", 48, 24, 128),
            (4, "AMD EPYC 7443P", 48, 24, 256),
        ],
    ),
    (Some("RTX 3090"), 12, &[(1, "AMD Ryzen 9 5950X", 32, 16, 64), (2, "Intel Core i9-12900K", 24, 16, 128)]),
    (Some("A100-80GB"), 8, &[(4, "AMD EPYC 7543", 64, 32, 512), (8, "AMD EPYC 7742", 256, 128, 2048)]),
    (
        Some("H100"),
        8,
        &[(1, "Intel Xeon Platinum 8480+", 26, 26, 225), (8, "Intel Xeon Platinum 8480C", 224, 112, 2048)],
    ),
    (Some("L40S"), 6, &[(2, "AMD EPYC 9354", 64, 32, 256), (4, "AMD EPYC 9354", 64, 32, 512)]),
    (
        Some("A6000"),
        5,
        &[(1, "AMD Ryzen Threadripper PRO 5955WX", 32, 16, 128), (2, "Intel Xeon w7-2495X", 48, 24, 256)],
    ),
    (Some("T4"), 5, &[(1, "Intel Xeon Platinum 8259CL", 8, 4, 32), (4, "Intel Xeon Platinum 8259CL", 48, 24, 192)]),
    (Some("Apple M4 Max"), 6, &[(1, "Apple M4 Max", 16, 16, 64), (1, "Apple M4 Max", 16, 16, 128)]),
    (Some("H200"), 2, &[(8, "Intel Xeon Platinum 8568Y+", 192, 96, 2048)]),
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
            let (model, _, profiles) = if index % 4 == 3 { &MIX[0] } else { pick(&mut rng, MIX, |m| m.1) };
            let (gpu_count, cpu_model, logical_cores, physical_cores, memory_gib) =
                profiles[rng.gen_range(0..profiles.len())];
            let country = pick(&mut rng, COUNTRIES, |c| c.1).0.to_owned();
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
                cpu: CpuSpec { model: cpu_model.into(), physical_cores, logical_cores },
                memory_bytes: memory_gib << 30,
                // Big servers carry more disk.
                disk_bytes: if memory_gib >= 512 { 8 << 40 } else { 2 << 40 },
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
    fn machines_look_like_real_ones_of_their_gpu() {
        for device in fleet(3, 400) {
            let spec = &device.spec;
            let gib = spec.memory_bytes >> 30;
            assert!(spec.cpu.physical_cores <= spec.cpu.logical_cores, "{spec:?}");
            match spec.gpus.first().map(|g| g.name.as_str()) {
                Some("Apple M4 Max") => assert!(spec.cpu.logical_cores == 16 && gib <= 128, "{spec:?}"),
                Some("NVIDIA RTX 4090" | "NVIDIA RTX 3090") => {
                    assert!(spec.cpu.logical_cores <= 48 && gib <= 256, "{spec:?}")
                }
                Some("NVIDIA H100" | "NVIDIA H200") if spec.gpus.len() == 8 => assert!(gib >= 1024, "{spec:?}"),
                _ => assert!(gib <= 2048, "{spec:?}"),
            }
        }
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
