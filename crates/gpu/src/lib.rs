//! The GPU solvers: proof of compute (the chain's products on tensor cores through cuBLAS,
//! reduction and leaf hashing in NVRTC-compiled kernels, every GPU of the device taking its
//! share of the rows) and proof of VRAM (each GPU fills and walks its own dataset).
//!
//! CUDA is loaded at run time (cudarc's dynamic loading): building needs no toolkit, driver
//! or GPU, and a machine without them gets a precise reason from `Gpus::open`.

mod cuda;
pub mod emulated;
pub mod half;
pub mod pipeline;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use herd_verify::merkle::Hash;
use herd_verify::vram::{dataset_key, walk_key, VramParams};
use herd_verify::{Opening, Params, Pick, Seed};

/// The kernels' source, shared by NVRTC and the tests' C compiler.
pub const KERNELS: &str = include_str!("kernels.cu");

pub use cuda::uuid_string;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    #[error("CUDA: {0}")]
    Cuda(String),
    #[error("GPU {gpu} cannot hold the {bytes}-byte dataset: {detail}")]
    OutOfMemory { gpu: usize, bytes: u64, detail: String },
    #[error("the proof is for {wanted} GPUs; this worker drives {driven}")]
    GpuCount { wanted: u32, driven: usize },
    #[error("stopped")]
    Stopped,
}

/// The GPUs this process drives, in the order NVML reported their UUIDs.
pub struct Gpus {
    gpus: Vec<Arc<cuda::Gpu>>,
}

impl Gpus {
    /// Loads the driver, cuBLAS and NVRTC, compiles the kernels, and finds a CUDA device for
    /// every UUID NVML reported. Err says exactly what is missing.
    pub fn open(uuids: &[String]) -> Result<Gpus, String> {
        cuda::probe_libraries()?;
        let all = cuda::open_all().map_err(|e| e.to_string())?;
        let mut all: Vec<Option<cuda::Gpu>> = all.into_iter().map(Some).collect();
        let mut gpus = Vec::with_capacity(uuids.len());
        for uuid in uuids {
            let found = all.iter_mut().find(|g| g.as_ref().is_some_and(|g| g.uuid.eq_ignore_ascii_case(uuid)));
            match found.and_then(Option::take) {
                Some(gpu) => gpus.push(Arc::new(gpu)),
                None => {
                    return Err(format!(
                        "NVML reports GPU {uuid} but CUDA does not see it (CUDA_VISIBLE_DEVICES hides it, or the driver and NVML disagree)"
                    ))
                }
            }
        }
        if gpus.is_empty() {
            return Err("no GPUs to prove".into());
        }
        Ok(Gpus { gpus })
    }

    pub fn count(&self) -> usize {
        self.gpus.len()
    }

    /// "0: NVIDIA H100 80GB HBM3 (GPU-…)" per GPU.
    pub fn describe(&self) -> Vec<String> {
        self.gpus.iter().map(|g| format!("{}: {} ({})", g.ordinal, g.name, g.uuid)).collect()
    }

    /// Solves a proof of compute over every GPU.
    pub fn solve(&self, seed: &Seed, params: &Params, stop: &AtomicBool) -> Result<GpuChain, GpuError> {
        let mut lanes: Vec<cuda::CudaLane> = self.gpus.iter().map(|g| cuda::CudaLane::new(g.clone())).collect();
        let chain = pipeline::solve(&mut lanes, seed, params, stop)?;
        Ok(GpuChain { chain, opener: self.gpus[0].clone() })
    }

    /// Fills every GPU's dataset of a proof of VRAM, all GPUs at once.
    pub fn fill(&self, seed: &Seed, params: &VramParams, stop: &AtomicBool) -> Result<VramFill, GpuError> {
        if params.gpus as usize != self.gpus.len() {
            return Err(GpuError::GpuCount { wanted: params.gpus, driven: self.gpus.len() });
        }
        let datasets = std::thread::scope(|scope| {
            let workers: Vec<_> = self
                .gpus
                .iter()
                .enumerate()
                .map(|(i, gpu)| {
                    let key = dataset_key(seed, i as u32);
                    scope.spawn(move || cuda::CudaDataset::fill(gpu.clone(), &key, params, stop))
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|_| Err(GpuError::Cuda("a fill panicked".into()))))
                .collect::<Vec<_>>()
        });
        Ok(VramFill { datasets: datasets.into_iter().collect::<Result<_, _>>()? })
    }
}

pub struct GpuChain {
    chain: pipeline::Chain,
    opener: Arc<cuda::Gpu>,
}

impl GpuChain {
    pub fn roots(&self) -> &[Hash] {
        &self.chain.roots
    }

    pub fn params(&self) -> Params {
        self.chain.params()
    }

    pub fn open(&self, picks: &[Pick]) -> Result<Vec<Opening>, GpuError> {
        self.chain.open(&mut cuda::CudaLane::new(self.opener.clone()), picks)
    }
}

/// Every GPU's dataset, filled and resident until dropped.
pub struct VramFill {
    datasets: Vec<cuda::CudaDataset>,
}

impl VramFill {
    /// Each GPU's winning walks, the GPUs walking at once.
    pub fn search(
        &self,
        seed: &Seed,
        walk_nonce: &[u8; 32],
        params: &VramParams,
        stop: &AtomicBool,
    ) -> Result<Vec<Vec<u64>>, GpuError> {
        std::thread::scope(|scope| {
            let workers: Vec<_> = self
                .datasets
                .iter()
                .enumerate()
                .map(|(i, data)| {
                    let key = walk_key(seed, walk_nonce, i as u32);
                    scope.spawn(move || data.search(&key, params, stop))
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|_| Err(GpuError::Cuda("a walk panicked".into()))))
                .collect()
        })
    }
}
