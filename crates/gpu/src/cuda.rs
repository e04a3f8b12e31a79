//! The CUDA backend: the lanes of `pipeline` and the proof of VRAM on real GPUs, through
//! cudarc with its libraries (libcuda, libcublas, libnvrtc) loaded at run time.
//!
//! This is the crate's one module with `unsafe`: kernel launches and cuBLAS calls are FFI.
//! Each block says what it relies on. Everything else about the GPU path (layout, row split,
//! fp16 encoding, the kernels' arithmetic) is checked on the CPU by the tests.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cudarc::cublas::{result as blas, sys as blas_sys, CudaBlas};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg,
};
use herd_verify::merkle::Hash;
use herd_verify::vram::{Key, VramParams, ITEM_WORDS};

use crate::pipeline::Lane;
use crate::GpuError;

/// What NVRTC compiles: the shared kernel source behind the CUDA prelude.
const PRELUDE: &str = r#"
#define KERNEL extern "C" __global__
#define DEVICE_FN __device__
#define THREAD_ID ((u64)blockIdx.x * blockDim.x + threadIdx.x)
#define THREAD_COUNT ((u64)gridDim.x * blockDim.x)
#define ATOMIC_INC(p) atomicAdd((p), 1u)
#define MULHI64(a, b) __umul64hi((a), (b))
"#;

fn driver(what: &str) -> impl Fn(cudarc::driver::DriverError) -> GpuError + '_ {
    move |e| GpuError::Cuda(format!("{what}: {e:?}"))
}

/// One GPU: its context, stream, cuBLAS handle and compiled kernels.
pub struct Gpu {
    pub ordinal: usize,
    pub uuid: String,
    pub name: String,
    stream: Arc<CudaStream>,
    blas: Arc<CudaBlas>,
    reduce: CudaFunction,
    leaves: CudaFunction,
    fill: CudaFunction,
    walk: CudaFunction,
}

/// NVML's spelling of a CUDA device UUID: `GPU-` and 8-4-4-4-12 hex digits.
pub fn uuid_string(bytes: &[u8; 16]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("GPU-{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// Every CUDA device, kernels compiled once for all.
pub fn open_all() -> Result<Vec<Gpu>, GpuError> {
    let count = CudaContext::device_count().map_err(driver("counting CUDA devices"))?;
    let source = format!("{PRELUDE}\n{}", crate::KERNELS);
    let ptx = cudarc::nvrtc::compile_ptx(&source)
        .map_err(|e| GpuError::Cuda(format!("NVRTC could not compile herd's kernels: {e:?}")))?;
    (0..count as usize)
        .map(|ordinal| {
            let ctx = CudaContext::new(ordinal).map_err(driver("creating a CUDA context"))?;
            let raw = ctx.uuid().map_err(driver("reading a device UUID"))?;
            let bytes: [u8; 16] = raw.bytes.map(|b| b as u8);
            let name = ctx.name().map_err(driver("reading a device name"))?;
            let module = ctx.load_module(ptx.clone()).map_err(driver("loading herd's kernels"))?;
            let function = |name: &str| module.load_function(name).map_err(driver("finding a kernel"));
            let stream = ctx.default_stream();
            let blas = CudaBlas::new(stream.clone())
                .map_err(|e| GpuError::Cuda(format!("creating a cuBLAS handle: {e:?}")))?;
            Ok(Gpu {
                ordinal,
                uuid: uuid_string(&bytes),
                name,
                reduce: function("herd_reduce")?,
                leaves: function("herd_leaves")?,
                fill: function("herd_vram_fill")?,
                walk: function("herd_vram_walk")?,
                stream,
                blas: Arc::new(blas),
            })
        })
        .collect()
}

/// Enough blocks to fill the GPU with a grid-stride loop over `count` elements.
fn grid(count: u64) -> LaunchConfig {
    let blocks = count.div_ceil(256).clamp(1, 65_535) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

/// B, the rows (fp16), the product (fp32) and the reduced rows (int8).
type LaneBuffers<'a> = (&'a CudaSlice<u16>, &'a mut CudaSlice<u16>, &'a mut CudaSlice<f32>, &'a mut CudaSlice<i8>);

/// One GPU's share of the chain's rows, resident on the GPU.
pub struct CudaLane {
    gpu: Arc<Gpu>,
    n: usize,
    rows: usize,
    b: Option<CudaSlice<u16>>,
    x: Option<CudaSlice<u16>>,
    product: Option<CudaSlice<f32>>,
    reduced: Option<CudaSlice<i8>>,
    hashes: Option<CudaSlice<u8>>,
}

impl CudaLane {
    pub fn new(gpu: Arc<Gpu>) -> CudaLane {
        CudaLane { gpu, n: 0, rows: 0, b: None, x: None, product: None, reduced: None, hashes: None }
    }

    fn buffers(&mut self) -> Result<LaneBuffers<'_>, GpuError> {
        match (&self.b, &mut self.x, &mut self.product, &mut self.reduced) {
            (Some(b), Some(x), Some(p), Some(r)) => Ok((b, x, p, r)),
            _ => Err(GpuError::Cuda("the lane was used before it was loaded".into())),
        }
    }
}

impl Lane for CudaLane {
    fn load(&mut self, b: &[u16], start: &[u16], n: usize) -> Result<(), GpuError> {
        let stream = self.gpu.stream.clone();
        let alloc = driver("allocating GPU memory");
        self.n = n;
        self.rows = start.len() / n;
        self.b = Some(stream.clone_htod(b).map_err(driver("copying B to the GPU"))?);
        self.x = Some(stream.clone_htod(start).map_err(driver("copying the start rows to the GPU"))?);
        self.product = Some(stream.alloc_zeros::<f32>(start.len()).map_err(&alloc)?);
        self.reduced = Some(stream.alloc_zeros::<i8>(start.len()).map_err(&alloc)?);
        self.hashes = Some(stream.alloc_zeros::<u8>(32 * self.rows).map_err(&alloc)?);
        Ok(())
    }

    fn step(&mut self) -> Result<(), GpuError> {
        let (n, rows) = (self.n as i32, self.rows as i32);
        let gpu = self.gpu.clone();
        let stream = gpu.stream.clone();
        let (b, x, product, reduced) = self.buffers()?;
        // Row-major X (rows×n) times row-major B (n×n) is, read column-major, Bᵀ·Xᵀ: cuBLAS
        // computes C = A·B with A = B's buffer (n×n, ld n), B = X's buffer (n×rows, ld n) and
        // C = the product's buffer (n×rows, ld n) — i.e. the row-major rows×n product.
        // fp16 in, fp32 compute and out: tensor cores, every sum exact (|sum| < 2^24).
        let (alpha, beta) = (1.0f32, 0.0f32);
        {
            let (b_ptr, _b_sync) = b.device_ptr(&stream);
            let (x_ptr, _x_sync) = x.device_ptr(&stream);
            let (p_ptr, _p_sync) = product.device_ptr_mut(&stream);
            // SAFETY: the three buffers live on this lane's GPU and stream, sized n·n, rows·n
            // and rows·n by `load`, which is what m = n, n = rows, k = n with leading
            // dimensions n read and write; alpha and beta outlive the (stream-ordered) call.
            unsafe {
                blas::gemm_ex(
                    *gpu.blas.handle(),
                    blas_sys::cublasOperation_t::CUBLAS_OP_N,
                    blas_sys::cublasOperation_t::CUBLAS_OP_N,
                    n,
                    rows,
                    n,
                    (&alpha as *const f32).cast(),
                    b_ptr as *const _,
                    blas_sys::cudaDataType::CUDA_R_16F,
                    n,
                    x_ptr as *const _,
                    blas_sys::cudaDataType::CUDA_R_16F,
                    n,
                    (&beta as *const f32).cast(),
                    p_ptr as *mut _,
                    blas_sys::cudaDataType::CUDA_R_32F,
                    n,
                    blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
                )
            }
            .map_err(|e| GpuError::Cuda(format!("cublasGemmEx: {e:?}")))?;
        }
        let count = (rows as u64) * (n as u64);
        let mut launch = stream.launch_builder(&gpu.reduce);
        launch.arg(&*product).arg(x).arg(reduced).arg(&count);
        // SAFETY: herd_reduce(const float*, unsigned short*, signed char*, u64) reads and
        // writes `count` elements of buffers that hold exactly that many.
        unsafe { launch.launch(grid(count)) }.map_err(driver("launching herd_reduce"))?;
        Ok(())
    }

    fn leaves(&mut self, checkpoint: u32, first_row: u32) -> Result<Vec<Hash>, GpuError> {
        let gpu = self.gpu.clone();
        let stream = gpu.stream.clone();
        let (n, count) = (self.n as u32, self.rows as u32);
        let reduced = self.reduced.as_ref().ok_or_else(|| GpuError::Cuda("not loaded".into()))?;
        let hashes = self.hashes.as_mut().ok_or_else(|| GpuError::Cuda("not loaded".into()))?;
        let mut launch = stream.launch_builder(&gpu.leaves);
        launch.arg(reduced).arg(&n).arg(&count).arg(&checkpoint).arg(&first_row).arg(&mut *hashes);
        // SAFETY: herd_leaves reads `count` rows of n bytes and writes 32 bytes per row, the
        // sizes `load` allocated.
        unsafe { launch.launch(grid(u64::from(count))) }.map_err(driver("launching herd_leaves"))?;
        let bytes = stream.clone_dtoh(&*hashes).map_err(driver("copying leaf hashes back"))?;
        Ok(bytes.chunks_exact(32).map(|c| c.try_into().expect("32 bytes")).collect())
    }

    fn product(&mut self) -> Result<Vec<i32>, GpuError> {
        let stream = self.gpu.stream.clone();
        let product = self.product.as_ref().ok_or_else(|| GpuError::Cuda("not loaded".into()))?;
        let values = stream.clone_dtoh(product).map_err(driver("copying a product back"))?;
        Ok(values.into_iter().map(|v| v as i32).collect())
    }

    fn rows(&mut self) -> Result<Vec<i8>, GpuError> {
        let stream = self.gpu.stream.clone();
        let reduced = self.reduced.as_ref().ok_or_else(|| GpuError::Cuda("not loaded".into()))?;
        stream.clone_dtoh(reduced).map_err(driver("copying rows back"))
    }
}

/// One GPU's filled dataset of a proof of VRAM.
pub struct CudaDataset {
    gpu: Arc<Gpu>,
    data: CudaSlice<u32>,
}

/// Walks per launch: enough to keep every SM busy, few enough to check the stop flag often.
const WALKS_PER_LAUNCH: u64 = 1 << 24;

impl CudaDataset {
    pub fn fill(gpu: Arc<Gpu>, key: &Key, params: &VramParams, stop: &AtomicBool) -> Result<CudaDataset, GpuError> {
        let stream = gpu.stream.clone();
        let words = params.items as usize * ITEM_WORDS;
        // SAFETY: every word is written by herd_vram_fill below before any walk reads it.
        let mut data = unsafe { stream.alloc::<u32>(words) }.map_err(|e| GpuError::OutOfMemory {
            gpu: gpu.ordinal,
            bytes: params.dataset_bytes(),
            detail: format!("{e:?}"),
        })?;
        let key = stream.clone_htod(key.as_slice()).map_err(driver("copying a key"))?;
        let chunk = 1u64 << 26;
        let mut first = 0;
        while first < params.items {
            if stop.load(Ordering::Relaxed) {
                return Err(GpuError::Stopped);
            }
            let count = chunk.min(params.items - first);
            let mut launch = stream.launch_builder(&gpu.fill);
            launch.arg(&mut data).arg(&key).arg(&first).arg(&count).arg(&params.rounds);
            // SAFETY: herd_vram_fill writes items first..first+count, inside the allocation
            // of params.items items; it reads 8 words of key.
            unsafe { launch.launch(grid(count)) }.map_err(driver("launching herd_vram_fill"))?;
            stream.synchronize().map_err(driver("filling the dataset"))?;
            first += count;
        }
        Ok(CudaDataset { gpu, data })
    }

    /// Launches walks until `params.wins` have won.
    pub fn search(&self, walk_key: &Key, params: &VramParams, stop: &AtomicBool) -> Result<Vec<u64>, GpuError> {
        let gpu = &self.gpu;
        let stream = gpu.stream.clone();
        let key = stream.clone_htod(walk_key.as_slice()).map_err(driver("copying a key"))?;
        let max_found = params.wins;
        let mut found = stream.alloc_zeros::<u64>(max_found as usize).map_err(driver("allocating"))?;
        let mut count = stream.alloc_zeros::<u32>(1).map_err(driver("allocating"))?;
        let threshold = params.threshold();
        let mut first = 0u64;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Err(GpuError::Stopped);
            }
            let walks = WALKS_PER_LAUNCH;
            let mut launch = stream.launch_builder(&gpu.walk);
            launch
                .arg(&self.data)
                .arg(&params.items)
                .arg(&key)
                .arg(&first)
                .arg(&walks)
                .arg(&params.steps)
                .arg(&threshold)
                .arg(&mut found)
                .arg(&mut count)
                .arg(&max_found);
            // SAFETY: herd_vram_walk reads items below params.items (multiply-high of the
            // index), 8 words of key, and writes at most max_found slots of found.
            unsafe { launch.launch(grid(walks)) }.map_err(driver("launching herd_vram_walk"))?;
            let so_far = stream.clone_dtoh(&count).map_err(driver("reading the win count"))?[0];
            first += walks;
            if so_far >= max_found {
                let mut wins = stream.clone_dtoh(&found).map_err(driver("reading the wins"))?;
                wins.truncate(max_found as usize);
                return Ok(wins);
            }
        }
    }
}

/// Whether each CUDA library loads, in the order they are needed; Err names the first that
/// does not and what to do. A library found under a name but missing symbols herd's bindings
/// expect (another CUDA major version) is reported as such, not as a crash.
pub fn probe_libraries() -> Result<(), String> {
    let major = if cfg!(feature = "cuda-12") && !cfg!(feature = "cuda-13") { 12 } else { 13 };
    let check = |present: fn() -> bool, file: &str, what: &str, fix: &str| -> Result<(), String> {
        match std::panic::catch_unwind(present) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("{file} not found ({what}); {fix}")),
            Err(_) => Err(format!(
                "{file} was found but lacks functions this build needs: it is not CUDA {major}'s ({what}); {fix}"
            )),
        }
    };
    // SAFETY (the three closures): is_culib_present only dlopens candidate names and looks up
    // symbols; it runs no library code beyond the loader's constructors.
    check(
        || unsafe { cudarc::driver::sys::is_culib_present() },
        "libcuda.so",
        "the NVIDIA driver",
        "install the NVIDIA driver (580 or newer) and, in a container, run with the NVIDIA container toolkit (--gpus all)",
    )?;
    check(
        || unsafe { cudarc::cublas::sys::is_culib_present() },
        &format!("libcublas.so.{major}"),
        "cuBLAS, for the proof's matrix products",
        &format!("install cuBLAS {major} (apt: libcublas-{major}-0, or pip: nvidia-cublas) and add its lib directory to LD_LIBRARY_PATH"),
    )?;
    check(
        || unsafe { cudarc::nvrtc::sys::is_culib_present() },
        &format!("libnvrtc.so.{major}"),
        "NVRTC, which compiles herd's kernels",
        &format!("install NVRTC {major} (apt: cuda-nvrtc-{major}-0, or pip: nvidia-cuda-nvrtc) and add its lib directory to LD_LIBRARY_PATH"),
    )
}
