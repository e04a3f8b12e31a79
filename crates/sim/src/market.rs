//! Seeded market workloads for `herd bench market`: a realistic pool of device offers and a
//! mixed stream of requests. Pure: the same seed gives the same pool and stream.

use herd_core::catalog::{self, GPU_MODELS};
use herd_core::{ConnectivityTier, SecurityTier};
use herd_market::index::{DeviceOffer, CPU_ONLY};
use herd_market::matching::{Colocation, Hardware, Location, Request};
use herd_market::pricing::QuoteTerms;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::pick;

/// (model name or CPU, weight, GPUs per machine choices)
const POOL_MIX: &[(Option<&str>, u32, &[u8])] = &[
    (None, 15, &[0]),
    (Some("RTX 4090"), 28, &[1, 2, 4, 8]),
    (Some("RTX 3090"), 12, &[1, 2, 4]),
    (Some("A100-80GB"), 10, &[4, 8]),
    (Some("H100"), 12, &[1, 2, 4, 8]),
    (Some("L40S"), 6, &[2, 4, 8]),
    (Some("A6000"), 5, &[1, 2, 4]),
    (Some("T4"), 5, &[1, 4]),
    (Some("Apple M4 Max"), 4, &[1]),
    (Some("H200"), 3, &[8]),
];

const COUNTRY_MIX: &[(&[u8; 2], u32)] = &[
    (b"US", 28),
    (b"DE", 9),
    (b"FR", 5),
    (b"GB", 6),
    (b"NL", 4),
    (b"PL", 2),
    (b"JP", 6),
    (b"KR", 4),
    (b"SG", 5),
    (b"IN", 7),
    (b"CN", 3),
    (b"BR", 5),
    (b"CA", 5),
    (b"AU", 3),
    (b"AE", 2),
    (b"ZA", 1),
    (b"MX", 2),
    (b"AR", 1),
    (b"TH", 1),
    (b"VN", 1),
];

const TIER_MIX: &[(ConnectivityTier, u32)] = &[
    (ConnectivityTier::None, 5),
    (ConnectivityTier::Low, 30),
    (ConnectivityTier::Medium, 30),
    (ConnectivityTier::High, 25),
    (ConnectivityTier::Ultra, 10),
];

const SECURITY_MIX: &[(SecurityTier, u32)] =
    &[(SecurityTier::Any, 30), (SecurityTier::Verified, 60), (SecurityTier::Datacenter, 10)];

fn model_id(name: &str) -> u8 {
    catalog::model_index(catalog::lookup(name).expect("mix models are in the catalog"))
}

/// `count` device offers with realistic model, country, tier and price mixes.
pub fn pool(seed: u64, count: usize) -> Vec<DeviceOffer> {
    let mut rng = StdRng::seed_from_u64(seed);
    let suppliers = (count / 20).max(1) as u64;
    (0..count)
        .map(|i| {
            let (model, _, gpus) = pick(&mut rng, POOL_MIX, |m| m.1);
            let model = model.map_or(CPU_ONLY, model_id);
            let gpu_count = gpus[rng.gen_range(0..gpus.len())];
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(i as u64).to_le_bytes());
            key[8..16].copy_from_slice(&seed.to_le_bytes());
            let mut supplier = [0u8; 32];
            supplier[..8].copy_from_slice(&rng.gen_range(0..suppliers).to_le_bytes());
            let cpu_cores = [8u16, 16, 32, 64][rng.gen_range(0..4)];
            let reference = if model == CPU_ONLY {
                i64::from(cpu_cores) * catalog::CPU_CORE_HOUR_MICROS
            } else {
                GPU_MODELS[model as usize].reference_price_micros
            };
            DeviceOffer {
                key,
                supplier,
                model,
                gpu_count,
                country: *pick(&mut rng, COUNTRY_MIX, |c| c.1).0,
                connectivity: pick(&mut rng, TIER_MIX, |t| t.1).0,
                security: pick(&mut rng, SECURITY_MIX, |s| s.1).0,
                reputation: rng.gen_range(300..=1000),
                cpu_cores,
                ram_gib: cpu_cores * 4,
                floor_micros: (reference * rng.gen_range(60..120) / 100) as u32,
                multi_node: true,
            }
        })
        .collect()
}

/// Whether a request in the stream is a small job (≤ 8 GPUs) or a large cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Small,
    Large,
}

/// A mixed request stream: mostly 1–8 GPU requests, with 64–1,000-GPU clusters mixed in
/// (1 in `large_every`).
pub fn requests(seed: u64, count: usize, large_every: usize) -> Vec<(Size, Request)> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let gpu_models: Vec<&(Option<&str>, u32, &[u8])> = POOL_MIX.iter().filter(|m| m.0.is_some()).collect();
    (0..count)
        .map(|i| {
            let large = large_every > 0 && i % large_every == large_every - 1;
            let model = model_id(pick(&mut rng, &gpu_models, |m| m.1).0.expect("GPU models only"));
            let (size, per_node, nodes) = if large {
                let gpus = rng.gen_range(64..=1000u32);
                (Size::Large, 8u8, gpus.div_ceil(8))
            } else {
                let per_node = [1u8, 1, 2, 4, 8][rng.gen_range(0..5)];
                (Size::Small, per_node, 1)
            };
            let pinned = !large && rng.gen_bool(0.3);
            let request = Request {
                hardware: Hardware::Gpu { models: vec![model], per_node },
                nodes,
                cpu_cores_min: 0,
                ram_gib_min: 0,
                location: Location {
                    allow: pinned.then(|| vec![*pick(&mut rng, COUNTRY_MIX, |c| c.1).0]),
                    deny: vec![],
                    label: String::new(),
                },
                connectivity_min: if rng.gen_bool(0.2) { ConnectivityTier::Medium } else { ConnectivityTier::None },
                security_min: if rng.gen_bool(0.3) { SecurityTier::Verified } else { SecurityTier::Any },
                reputation_min: if rng.gen_bool(0.1) { 600 } else { 0 },
                colocation: Colocation::Anywhere,
                price_ceiling_micros: None,
                terms: QuoteTerms { hours: rng.gen_range(1..48), start_now: true },
                supplier: None,
                multi_node: nodes > 1,
            };
            (size, request)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_and_streams_are_seeded_and_mixed() {
        assert_eq!(pool(3, 100), pool(3, 100));
        let offers = pool(3, 2000);
        let cpu = offers.iter().filter(|o| o.model == CPU_ONLY).count();
        assert!((150..450).contains(&cpu), "{cpu}");
        assert!(offers.iter().all(|o| o.floor_micros > 0));
        let stream = requests(3, 1000, 50);
        assert_eq!(stream.iter().filter(|(s, _)| *s == Size::Large).count(), 20);
        assert!(stream.iter().all(|(_, r)| r.nodes >= 1 && r.nodes <= 125));
    }
}
