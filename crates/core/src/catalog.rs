//! The GPU catalog: every model herd knows, with the figures the market and the reward
//! schedule need. Detection reports marketing names ("NVIDIA H100 80GB HBM3"); `lookup`
//! maps them to a catalog entry.

use crate::device::GpuVendor;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuModel {
    /// The canonical name users type (`--gpu H100`).
    pub name: &'static str,
    pub vendor: GpuVendor,
    pub vram_gib: u32,
    /// Dense FP16/BF16 tensor throughput, in TFLOPS (FP32 accumulation where the two differ).
    pub fp16_tflops: u32,
    /// Peak memory bandwidth, GB/s: what the proof of VRAM's walks are timed against.
    pub memory_gbps: u32,
    /// The host link's peak (PCIe), GB/s: what a card that keeps part of its claimed memory
    /// in host RAM fetches it at. Unified-memory machines (Apple) have no separate link.
    pub host_link_gbps: u32,
    /// Block-reward multiplier, in hundredths (H100 = 10.00 → 1000), so it stays an integer.
    pub reward_multiplier_centi: u32,
    /// The market's reference price per GPU-hour (USD micros) at balanced supply and demand,
    /// and the default floor for suppliers who set none.
    pub reference_price_micros: i64,
    /// Substrings (lowercase, spaces removed) that identify the model in a detected name.
    /// The first matching entry wins, so longer, more specific models come first.
    pub patterns: &'static [&'static str],
}

use GpuVendor::{Apple, Nvidia};

/// Multipliers for H100, H200, B200, A100-80GB, RTX 4090 and Apple M4 Max are the network's
/// published figures (MISSION.md); the others are herd's interpolation by throughput.
pub const GPU_MODELS: &[GpuModel] = &[
    GpuModel {
        name: "B200",
        vendor: Nvidia,
        vram_gib: 192,
        fp16_tflops: 2250,
        memory_gbps: 8000,
        host_link_gbps: 64,
        reward_multiplier_centi: 3000,
        reference_price_micros: 5_500_000,
        patterns: &["b200"],
    },
    GpuModel {
        name: "H200",
        vendor: Nvidia,
        vram_gib: 141,
        fp16_tflops: 989,
        memory_gbps: 4800,
        host_link_gbps: 64,
        reward_multiplier_centi: 1200,
        reference_price_micros: 3_800_000,
        patterns: &["h200"],
    },
    GpuModel {
        name: "H100",
        vendor: Nvidia,
        vram_gib: 80,
        fp16_tflops: 989,
        memory_gbps: 3350,
        host_link_gbps: 64,
        reward_multiplier_centi: 1000,
        reference_price_micros: 2_500_000,
        patterns: &["h100"],
    },
    GpuModel {
        name: "A100-80GB",
        vendor: Nvidia,
        vram_gib: 80,
        fp16_tflops: 312,
        memory_gbps: 2039,
        host_link_gbps: 32,
        reward_multiplier_centi: 500,
        reference_price_micros: 1_600_000,
        patterns: &["a100-sxm4-80gb", "a10080gb", "a100-pcie-80gb", "a100-80gb"],
    },
    GpuModel {
        name: "A100-40GB",
        vendor: Nvidia,
        vram_gib: 40,
        fp16_tflops: 312,
        memory_gbps: 1555,
        host_link_gbps: 32,
        reward_multiplier_centi: 400,
        reference_price_micros: 1_200_000,
        patterns: &["a100"],
    },
    GpuModel {
        name: "L40S",
        vendor: Nvidia,
        vram_gib: 48,
        fp16_tflops: 362,
        memory_gbps: 864,
        host_link_gbps: 32,
        reward_multiplier_centi: 300,
        reference_price_micros: 1_000_000,
        patterns: &["l40s"],
    },
    GpuModel {
        name: "RTX 6000 Ada",
        vendor: Nvidia,
        vram_gib: 48,
        fp16_tflops: 364,
        memory_gbps: 960,
        host_link_gbps: 32,
        reward_multiplier_centi: 250,
        reference_price_micros: 900_000,
        patterns: &["rtx6000ada"],
    },
    GpuModel {
        name: "A6000",
        vendor: Nvidia,
        vram_gib: 48,
        fp16_tflops: 155,
        memory_gbps: 768,
        host_link_gbps: 32,
        reward_multiplier_centi: 150,
        reference_price_micros: 600_000,
        patterns: &["rtxa6000", "a6000"],
    },
    GpuModel {
        name: "RTX 4090",
        vendor: Nvidia,
        vram_gib: 24,
        fp16_tflops: 165,
        memory_gbps: 1008,
        host_link_gbps: 32,
        reward_multiplier_centi: 125,
        reference_price_micros: 450_000,
        patterns: &["rtx4090", "4090"],
    },
    GpuModel {
        name: "RTX 4080",
        vendor: Nvidia,
        vram_gib: 16,
        fp16_tflops: 97,
        memory_gbps: 717,
        host_link_gbps: 32,
        reward_multiplier_centi: 80,
        reference_price_micros: 300_000,
        patterns: &["rtx4080", "4080"],
    },
    GpuModel {
        name: "RTX 3090",
        vendor: Nvidia,
        vram_gib: 24,
        fp16_tflops: 71,
        memory_gbps: 936,
        host_link_gbps: 32,
        reward_multiplier_centi: 70,
        reference_price_micros: 250_000,
        patterns: &["rtx3090", "3090"],
    },
    GpuModel {
        name: "A10",
        vendor: Nvidia,
        vram_gib: 24,
        fp16_tflops: 125,
        memory_gbps: 600,
        host_link_gbps: 32,
        reward_multiplier_centi: 80,
        reference_price_micros: 400_000,
        patterns: &["a10g", "a10"],
    },
    GpuModel {
        name: "L4",
        vendor: Nvidia,
        vram_gib: 24,
        fp16_tflops: 121,
        memory_gbps: 300,
        host_link_gbps: 32,
        reward_multiplier_centi: 60,
        reference_price_micros: 350_000,
        patterns: &["l4"],
    },
    GpuModel {
        name: "V100",
        vendor: Nvidia,
        vram_gib: 32,
        fp16_tflops: 125,
        memory_gbps: 900,
        host_link_gbps: 16,
        reward_multiplier_centi: 60,
        reference_price_micros: 350_000,
        patterns: &["v100"],
    },
    GpuModel {
        name: "T4",
        vendor: Nvidia,
        vram_gib: 16,
        fp16_tflops: 65,
        memory_gbps: 320,
        host_link_gbps: 16,
        reward_multiplier_centi: 30,
        reference_price_micros: 150_000,
        patterns: &["teslat4", "t4"],
    },
    GpuModel {
        name: "Apple M4 Max",
        vendor: Apple,
        vram_gib: 128,
        fp16_tflops: 34,
        memory_gbps: 546,
        host_link_gbps: 546,
        reward_multiplier_centi: 150,
        reference_price_micros: 400_000,
        patterns: &["m4max"],
    },
    GpuModel {
        name: "Apple M2 Ultra",
        vendor: Apple,
        vram_gib: 192,
        fp16_tflops: 27,
        memory_gbps: 800,
        host_link_gbps: 800,
        reward_multiplier_centi: 120,
        reference_price_micros: 350_000,
        patterns: &["m2ultra"],
    },
];

fn normalise(name: &str) -> String {
    name.to_lowercase()
        .replace("nvidia", "")
        .replace("geforce", "")
        .replace("apple", "")
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '_')
        .collect()
}

/// Reference price of one CPU core-hour (USD micros), for CPU-only nodes.
pub const CPU_CORE_HOUR_MICROS: i64 = 10_000;

/// The position of a model in `GPU_MODELS` (a compact key for indexes).
pub fn model_index(model: &GpuModel) -> u8 {
    GPU_MODELS.iter().position(|m| m.name == model.name).expect("catalog models come from the catalog") as u8
}

/// The catalog entry for a detected or typed GPU name, if herd knows the model.
pub fn lookup(name: &str) -> Option<&'static GpuModel> {
    let wanted = normalise(name);
    if wanted.is_empty() {
        return None;
    }
    GPU_MODELS
        .iter()
        .find(|m| normalise(m.name) == wanted)
        .or_else(|| GPU_MODELS.iter().find(|m| m.patterns.iter().any(|p| wanted.contains(p))))
}

/// The models a name a person typed means: its canonical name or a listed alias (spaces,
/// case, `NVIDIA`/`GeForce`/`Apple` aside: `h100`, `4090`, `GeForce RTX 4090`), or a family
/// that several models share (`A100`: A100-80GB and A100-40GB). Anything else is an error that
/// names what exists, rather than a guess: `H200X` is not an H200.
pub fn resolve(name: &str) -> Result<Vec<&'static GpuModel>, String> {
    let wanted = normalise(name);
    let unknown = || {
        let hint = lookup(name).map(|m| format!(" (did you mean {}?)", m.name)).unwrap_or_default();
        format!("unknown GPU model {name:?}{hint}; known models: {}", model_names().join(", "))
    };
    if wanted.is_empty() {
        return Err(unknown());
    }
    if let Some(model) = GPU_MODELS.iter().find(|m| normalise(m.name) == wanted) {
        return Ok(vec![model]);
    }
    let family: Vec<&GpuModel> =
        GPU_MODELS.iter().filter(|m| normalise(m.name).starts_with(&format!("{wanted}-"))).collect();
    if family.len() > 1 {
        return Ok(family);
    }
    GPU_MODELS.iter().find(|m| m.patterns.contains(&wanted.as_str())).map(|m| vec![m]).ok_or_else(unknown)
}

/// Exactly one model for a typed name; a family is an error that lists its models.
pub fn resolve_one(name: &str) -> Result<&'static GpuModel, String> {
    match resolve(name)?.as_slice() {
        [model] => Ok(model),
        family => Err(format!(
            "{name:?} names several models: {}; pick one",
            family.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Canonical names, for "allowed values" in error messages.
pub fn model_names() -> Vec<&'static str> {
    GPU_MODELS.iter().map(|m| m.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_names_are_exact_names_aliases_or_families_never_guesses() {
        let names = |typed: &str| resolve(typed).map(|ms| ms.iter().map(|m| m.name).collect::<Vec<_>>());
        assert_eq!(names("H100").unwrap(), ["H100"]);
        assert_eq!(names("nvidia h100").unwrap(), ["H100"]);
        assert_eq!(names("4090").unwrap(), ["RTX 4090"]);
        assert_eq!(names("GeForce RTX 4090").unwrap(), ["RTX 4090"]);
        assert_eq!(names("a100-80gb").unwrap(), ["A100-80GB"]);
        assert_eq!(names("M4 Max").unwrap(), ["Apple M4 Max"]);
        let family = names("A100").unwrap();
        assert!(family.contains(&"A100-80GB") && family.contains(&"A100-40GB"), "{family:?}");
        let error = names("H200X").unwrap_err();
        assert!(
            error.starts_with("unknown GPU model \"H200X\" (did you mean H200?); known models: B200, H200"),
            "{error}"
        );
        assert!(names("H100-SXM-whatever").unwrap_err().contains("did you mean H100?"));
        assert!(names("").is_err());
        assert!(resolve_one("A100").unwrap_err().contains("names several models: A100-80GB, A100-40GB"));
        assert_eq!(resolve_one("T4").unwrap().name, "T4");
    }

    #[test]
    fn detected_names_map_to_models() {
        let cases = [
            ("NVIDIA H100 80GB HBM3", "H100"),
            ("NVIDIA H100 PCIe", "H100"),
            ("NVIDIA H200", "H200"),
            ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
            ("NVIDIA A100-SXM4-40GB", "A100-40GB"),
            ("NVIDIA GeForce RTX 4090", "RTX 4090"),
            ("rtx 4090", "RTX 4090"),
            ("Tesla T4", "T4"),
            ("NVIDIA A10G", "A10"),
            ("NVIDIA L40S", "L40S"),
            ("NVIDIA L4", "L4"),
            ("Apple M4 Max", "Apple M4 Max"),
        ];
        for (detected, expected) in cases {
            assert_eq!(lookup(detected).map(|m| m.name), Some(expected), "{detected}");
        }
        assert_eq!(lookup("Voodoo 3"), None);
        assert_eq!(lookup(""), None);
    }

    #[test]
    fn every_model_has_a_positive_reference_price_and_an_index() {
        for (i, model) in GPU_MODELS.iter().enumerate() {
            assert!(model.reference_price_micros > 0, "{}", model.name);
            assert_eq!(model_index(model) as usize, i);
        }
        assert!(GPU_MODELS.len() < 256, "model indexes fit in a byte");
    }

    #[test]
    fn published_multipliers_hold() {
        let m = |n| lookup(n).unwrap().reward_multiplier_centi;
        assert_eq!((m("H100"), m("H200"), m("B200")), (1000, 1200, 3000));
        assert_eq!((m("A100-80GB"), m("RTX 4090"), m("Apple M4 Max")), (500, 125, 150));
    }
}
