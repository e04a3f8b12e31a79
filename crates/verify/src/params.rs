//! How big a challenge is and how long a device may take, from what it claims.
//!
//! The work is a chain of `steps` products of a `rows`×`n` matrix with an `n`×`n` one
//! (2·rows·n² flops each), sized so an honest device of the claimed kind needs about the
//! policy's target time; the deadline adds a slack factor and a fixed allowance for the
//! network. A device with a fraction of the claimed throughput cannot commit in time.

use herd_core::catalog::GpuModel;

/// What a device says it is, for sizing its proof.
#[derive(Debug, Clone, Copy)]
pub enum Claim {
    Gpu {
        model: &'static GpuModel,
        count: u32,
    },
    Cpu {
        logical_cores: u32,
    },
    /// A simulated device (local and test networks only): a token-sized proof through the
    /// same protocol.
    Simulated,
}

impl Claim {
    /// How proofs name the claim: "1× H100", "2 CPU cores", "simulated".
    pub fn describe(self) -> String {
        match self {
            Claim::Gpu { model, count } => format!("{count}× {}", model.name),
            Claim::Cpu { logical_cores } => format!("{logical_cores} CPU cores"),
            Claim::Simulated => "simulated".into(),
        }
    }
}

/// Per-network settings. `target_ms` is what an honest device should spend per proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub target_ms: u64,
    /// The deadline is the expected time times this (300 = 3×) plus `allowance_ms`.
    pub slack_percent: u64,
    pub allowance_ms: u64,
    /// Rows opened per proof: a device that computed a fraction q of the rows passes with
    /// probability at most q^openings.
    pub openings: u32,
    /// What an honest GPU should spend on the proof of VRAM's walks (after its fill).
    pub vram_target_ms: u64,
    /// Share of each GPU's catalog memory the proof of VRAM fills (the rest is the CUDA
    /// context, the driver's reservations and the display).
    pub vram_fill_percent: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            target_ms: 10_000,
            slack_percent: 300,
            allowance_ms: 2_000,
            openings: 16,
            vram_target_ms: 4_000,
            vram_fill_percent: 90,
        }
    }
}

/// Share of the catalog's dense fp16 tensor peak a GPU is credited with on the proof's
/// GEMMs (fp16 in, fp32 accumulate, 4096 wide, thousands of rows): large GEMMs of this shape
/// run at 70–80 % of peak on Hopper (an 8192³ bf16 product ran at 788 of 989 TFLOP/s on an
/// H200 through PyTorch, as the lent machines' notes record; herd's own GEMMs are not yet
/// measured); 60 % leaves room for older cuBLAS and consumer cards' clocks.
pub const GEMM_EFFICIENCY_PERCENT: u128 = 60;
/// Share of the catalog's memory bandwidth a GPU gets streaming the chain between GEMMs
/// (the fp32 product read, the reduced fp16/int8 rows written) and on the VRAM proof's
/// random 64-byte reads (two 32-byte sectors each: well below streaming rates).
pub const STREAM_EFFICIENCY_PERCENT: u128 = 70;
pub const RANDOM_READ_EFFICIENCY_PERCENT: u128 = 40;
/// What every claimed logical core must at least sustain on the CPU solver (flop/s). Set
/// well below what the solver reaches (docs/BENCHMARKS.md) so that honest, busy and older
/// machines pass, while a machine claiming several times its cores does not.
pub const CPU_FLOPS_PER_CORE: u128 = 1_000_000_000;

/// Row width per kind: GPU proofs use wide GEMMs; CPU proofs keep the multiplier in cache.
pub const GPU_WIDTH: u32 = 4096;
pub const CPU_WIDTH: u32 = 256;
pub const SIMULATED_WIDTH: u32 = 64;

pub const CHECKPOINTS_MAX: u32 = 2048;
/// Steps between committed checkpoints at most; bounds an opening to STRIDE_MAX·n values.
pub const STRIDE_MAX: u32 = 16;
pub const STEPS_MAX: u32 = CHECKPOINTS_MAX * STRIDE_MAX;
pub const ROWS_MAX: u32 = 1 << 17;
pub const OPENINGS_MAX: u32 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Columns of every matrix, and the multiplier's size (a power of two).
    pub n: u32,
    /// Rows of the chained matrix (a power of two): the Merkle trees' leaf count.
    pub rows: u32,
    pub steps: u32,
    /// Steps between checkpoints; the device commits to every checkpoint's rows.
    pub stride: u32,
    pub openings: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid proof parameters: {0}")]
pub struct InvalidParams(String);

impl Params {
    pub fn checkpoints(&self) -> u32 {
        self.steps / self.stride
    }

    pub fn flops(&self) -> u128 {
        2 * u128::from(self.steps) * u128::from(self.rows) * u128::from(self.n) * u128::from(self.n)
    }

    /// Bounds parameters that came over the wire before a device allocates for them.
    pub fn validate(&self) -> Result<(), InvalidParams> {
        let fail = |m: String| Err(InvalidParams(m));
        if !self.n.is_power_of_two() || !(SIMULATED_WIDTH..=GPU_WIDTH).contains(&self.n) {
            return fail(format!("n must be a power of two in {SIMULATED_WIDTH}..={GPU_WIDTH}, got {}", self.n));
        }
        if !self.rows.is_power_of_two() || self.rows < self.n || self.rows > ROWS_MAX {
            return fail(format!("rows must be a power of two in n..={ROWS_MAX}, got {}", self.rows));
        }
        if self.stride == 0 || self.stride > STRIDE_MAX {
            return fail(format!("stride must be 1..={STRIDE_MAX}, got {}", self.stride));
        }
        if self.steps == 0 || self.steps % self.stride != 0 || self.checkpoints() > CHECKPOINTS_MAX {
            return fail(format!("steps must be a positive multiple of stride, at most {CHECKPOINTS_MAX} checkpoints"));
        }
        if self.openings == 0 || self.openings > OPENINGS_MAX {
            return fail(format!("openings must be 1..={OPENINGS_MAX}, got {}", self.openings));
        }
        Ok(())
    }
}

/// A challenge's size and time limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    pub params: Params,
    /// The throughput credited to the claim, flop/s.
    pub claimed_flops: u128,
    /// How long an honest device of the claimed kind needs.
    pub expected_ms: u64,
    /// When the commitment must have arrived, from the challenge's issue.
    pub deadline_ms: u64,
}

/// The throughput a claim is sized by: for GPUs, the GEMM rate the catalog's tensor peak
/// gives (each GPU takes its share of the rows; the rows split evenly).
pub fn claimed_flops(claim: Claim) -> u128 {
    match claim {
        Claim::Gpu { model, count } => {
            u128::from(model.fp16_tflops) * 1_000_000_000_000 * u128::from(count.max(1)) * GEMM_EFFICIENCY_PERCENT / 100
        }
        Claim::Cpu { logical_cores } => u128::from(logical_cores.max(1)) * CPU_FLOPS_PER_CORE,
        // A token: what one slow core does in the target time, capped below.
        Claim::Simulated => CPU_FLOPS_PER_CORE,
    }
}

/// Bytes a GPU moves through memory per chain step and row, besides the GEMM's own reads:
/// the fp32 product read back (4 per entry), the fp16 next input and int8 row written (3).
const GPU_STREAM_BYTES_PER_ENTRY: u128 = 7;

/// How long an honest device of the claim needs for `params`, in ms: for GPUs the GEMMs at
/// the credited tensor rate plus the reduction's memory traffic at the credited bandwidth.
pub fn expected_ms(claim: Claim, params: &Params) -> u64 {
    let gemm_ms = params.flops() * 1000 / claimed_flops(claim).max(1);
    let stream_ms = match claim {
        Claim::Gpu { model, count } => {
            let bytes =
                u128::from(params.steps) * u128::from(params.rows) * u128::from(params.n) * GPU_STREAM_BYTES_PER_ENTRY;
            let bandwidth =
                u128::from(model.memory_gbps) * 1_000_000_000 * u128::from(count.max(1)) * STREAM_EFFICIENCY_PERCENT
                    / 100;
            bytes * 1000 / bandwidth.max(1)
        }
        _ => 0,
    };
    (gemm_ms + stream_ms).min(u128::from(u64::MAX)) as u64
}

pub fn size(claim: Claim, policy: &Policy) -> Sizing {
    let flops = claimed_flops(claim);
    let n = match claim {
        Claim::Gpu { .. } => GPU_WIDTH,
        Claim::Cpu { .. } => CPU_WIDTH,
        Claim::Simulated => SIMULATED_WIDTH,
    };
    // The chain's rate with the memory traffic counted: a step moves 7 bytes per 2n flops.
    let rate = match claim {
        Claim::Gpu { model, count } => {
            let bandwidth =
                u128::from(model.memory_gbps) * 1_000_000_000 * u128::from(count.max(1)) * STREAM_EFFICIENCY_PERCENT
                    / 100;
            let per_entry = 2 * u128::from(n) * bandwidth;
            flops * per_entry / (per_entry + GPU_STREAM_BYTES_PER_ENTRY * flops).max(1)
        }
        _ => flops,
    };
    let work = rate * u128::from(policy.target_ms) / 1000;
    let per_row_step = 2 * u128::from(n) * u128::from(n);
    // GPUs get at least 1024 rows each: narrower GEMMs leave tensor cores idle.
    let mut rows = match claim {
        Claim::Gpu { count, .. } => (1024 * count.max(1)).next_power_of_two().clamp(n, ROWS_MAX),
        _ => n,
    };
    let steps_for = |rows: u32| (work / (per_row_step * u128::from(rows))).max(2);
    while steps_for(rows) > u128::from(STEPS_MAX) && rows < ROWS_MAX {
        rows *= 2;
    }
    let mut steps = steps_for(rows).min(u128::from(STEPS_MAX)) as u32;
    if let Claim::Simulated = claim {
        steps = 2;
    }
    let stride = steps.div_ceil(CHECKPOINTS_MAX).next_power_of_two().min(STRIDE_MAX);
    let steps = steps.div_ceil(stride) * stride;
    let params = Params { n, rows, steps, stride, openings: policy.openings.clamp(1, OPENINGS_MAX) };
    let expected_ms = expected_ms(claim, &params);
    let deadline_ms = expected_ms.saturating_mul(policy.slack_percent) / 100 + policy.allowance_ms;
    Sizing { params, claimed_flops: flops, expected_ms, deadline_ms }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_core::catalog;

    #[test]
    fn an_h100_gets_about_the_target_and_a_cpu_could_not_finish() {
        let policy = Policy::default();
        let h100 = size(Claim::Gpu { model: catalog::lookup("H100").unwrap(), count: 1 }, &policy);
        h100.params.validate().unwrap();
        assert_eq!(h100.params.n, GPU_WIDTH);
        assert!((8_000..=12_000).contains(&h100.expected_ms), "{h100:?}");
        // Ten times the CPU floor on 64 cores still needs days for an H100's proof.
        let cpu_seconds = h100.params.flops() / (64 * 10 * CPU_FLOPS_PER_CORE);
        assert!(cpu_seconds > 10 * u128::from(h100.deadline_ms) / 1000, "{cpu_seconds} s");
    }

    #[test]
    fn bigger_claims_get_more_rows_not_more_checkpoints() {
        let policy = Policy::default();
        let b200 = size(Claim::Gpu { model: catalog::lookup("B200").unwrap(), count: 8 }, &policy);
        b200.params.validate().unwrap();
        assert!(b200.params.rows > b200.params.n);
        assert!(b200.params.checkpoints() <= CHECKPOINTS_MAX);
        assert!((8_000..=12_000).contains(&b200.expected_ms), "{b200:?}");
    }

    #[test]
    fn cpu_claims_scale_with_cores_and_small_targets_stay_valid() {
        let policy = Policy { target_ms: 50, ..Policy::default() };
        for cores in [1, 2, 16, 256] {
            let sizing = size(Claim::Cpu { logical_cores: cores }, &policy);
            sizing.params.validate().unwrap();
            assert!(sizing.params.steps >= 2);
        }
        let two = size(Claim::Cpu { logical_cores: 2 }, &Policy::default());
        let sixteen = size(Claim::Cpu { logical_cores: 16 }, &Policy::default());
        assert!(sixteen.params.flops() >= 7 * two.params.flops());
        let sim = size(Claim::Simulated, &Policy::default());
        assert_eq!((sim.params.n, sim.params.steps), (SIMULATED_WIDTH, 2));
    }

    #[test]
    fn hostile_parameters_are_refused() {
        let good = Params { n: 256, rows: 256, steps: 4, stride: 2, openings: 16 };
        good.validate().unwrap();
        for bad in [
            Params { n: 300, ..good },
            Params { n: 1 << 20, ..good },
            Params { rows: 128, ..good },
            Params { rows: 1 << 30, ..good },
            Params { stride: 0, ..good },
            Params { steps: 5, ..good },
            Params { steps: STEPS_MAX * 2, stride: STRIDE_MAX, ..good },
            Params { openings: 0, ..good },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
