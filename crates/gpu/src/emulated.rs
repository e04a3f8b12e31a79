//! A lane on the CPU with the GPU path's semantics: cuBLAS's column-major GemmEx with fp16
//! inputs decoded from their bits and f32 accumulation, then the reduce kernel's arithmetic.
//! It runs `pipeline` in tests exactly as a GPU would, so the host-side logic is checked
//! against herd-verify's CPU solver without a GPU.

use herd_verify::merkle::{leaf, Hash};

use crate::half::{decode, HALF_OF};
use crate::pipeline::Lane;
use crate::GpuError;

#[derive(Default)]
pub struct EmulatedLane {
    n: usize,
    b: Vec<u16>,
    x: Vec<u16>,
    product: Vec<f32>,
    reduced: Vec<i8>,
}

/// cublasGemmEx(OP_N, OP_N, m, n, k, 1, A, lda, B, ldb, 0, C, ldc), column-major: C[i + j·ldc]
/// = Σ_p A[i + p·lda] · B[p + j·ldb], fp16 inputs, f32 accumulation.
#[allow(clippy::too_many_arguments)]
pub fn gemm_col_major(
    m: usize,
    n: usize,
    k: usize,
    a: &[u16],
    lda: usize,
    b: &[u16],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
) {
    for j in 0..n {
        for i in 0..m {
            let mut sum = 0f32;
            for p in 0..k {
                sum += decode(a[i + p * lda]) * decode(b[p + j * ldb]);
            }
            c[i + j * ldc] = sum;
        }
    }
}

/// The reduce kernel, element by element (kernels.cu: herd_reduce).
pub fn reduce_like_the_kernel(product: f32) -> (u16, i8) {
    let v = product as i32;
    let r = ((v + 8) % 17 + 17) % 17 - 8;
    (HALF_OF[(r + 8) as usize], r as i8)
}

impl Lane for EmulatedLane {
    fn load(&mut self, b: &[u16], start: &[u16], n: usize) -> Result<(), GpuError> {
        self.n = n;
        self.b = b.to_vec();
        self.x = start.to_vec();
        self.product = vec![0.0; start.len()];
        self.reduced = vec![0; start.len()];
        Ok(())
    }

    fn step(&mut self) -> Result<(), GpuError> {
        let n = self.n;
        let rows = self.x.len() / n;
        // The same call CudaLane::step makes.
        gemm_col_major(n, rows, n, &self.b, n, &self.x, n, &mut self.product, n);
        for ((p, x), r) in self.product.iter().zip(&mut self.x).zip(&mut self.reduced) {
            (*x, *r) = reduce_like_the_kernel(*p);
        }
        Ok(())
    }

    fn leaves(&mut self, checkpoint: u32, first_row: u32) -> Result<Vec<Hash>, GpuError> {
        Ok(self
            .reduced
            .chunks(self.n)
            .enumerate()
            .map(|(i, row)| leaf(checkpoint, first_row + i as u32, row))
            .collect())
    }

    fn product(&mut self) -> Result<Vec<i32>, GpuError> {
        Ok(self.product.iter().map(|v| *v as i32).collect())
    }

    fn rows(&mut self) -> Result<Vec<i8>, GpuError> {
        Ok(self.reduced.clone())
    }
}
