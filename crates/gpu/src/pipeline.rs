//! The host side of the GPU chain solver, whatever runs the lanes: the rows split over the
//! device's GPUs, the fp16 encoding of the inputs, the checkpoints' Merkle trees built from
//! the leaf hashes the GPUs compute, and the openings, recomputed on one GPU for just the
//! picked rows (storing every checkpoint of a 10-second H100 chain would take ~40 GB).
//!
//! `emulated::EmulatedLane` runs the same lane operations on the CPU with cuBLAS's and the
//! kernels' semantics, so the tests check this whole file against herd-verify's reference.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use herd_verify::chain::{multiplier, start_row};
use herd_verify::merkle::{Hash, Tree};
use herd_verify::{Opening, Params, Pick, Seed};

use crate::half::encode_all;
use crate::GpuError;

/// One GPU's part of a chain: a block of rows, stepped in place.
pub trait Lane: Send {
    /// B (n×n) and this lane's start rows (rows×n), both row-major fp16 bits.
    fn load(&mut self, b: &[u16], start: &[u16], n: usize) -> Result<(), GpuError>;
    /// One step: product = rows · B (fp32), rows = reduce(product).
    fn step(&mut self) -> Result<(), GpuError>;
    /// Leaf hashes of the current rows as checkpoint `checkpoint`, rows numbered from `first_row`.
    fn leaves(&mut self, checkpoint: u32, first_row: u32) -> Result<Vec<Hash>, GpuError>;
    /// The last step's unreduced product, row-major.
    fn product(&mut self) -> Result<Vec<i32>, GpuError>;
    /// The current (reduced) rows, row-major.
    fn rows(&mut self) -> Result<Vec<i8>, GpuError>;
}

/// Contiguous blocks of rows, one per lane, as even as the count allows (earlier lanes take
/// the remainder): every GPU of the device does its share, and all must answer.
pub fn split_rows(rows: u32, lanes: usize) -> Vec<Range<u32>> {
    let lanes = lanes.clamp(1, rows.max(1) as usize) as u32;
    let (base, extra) = (rows / lanes, rows % lanes);
    let mut start = 0;
    (0..lanes)
        .map(|i| {
            let len = base + u32::from(i < extra);
            let range = start..start + len;
            start += len;
            range
        })
        .collect()
}

/// A solved chain: the roots to commit to and every checkpoint's leaves, to answer openings.
pub struct Chain {
    seed: Seed,
    params: Params,
    /// leaves[c - 1]: the leaf hashes of checkpoint c, all rows.
    leaves: Vec<Vec<Hash>>,
    pub roots: Vec<Hash>,
}

fn start_rows(seed: &Seed, rows: impl Iterator<Item = u32>, n: usize) -> Vec<u16> {
    let values: Vec<i8> = rows.flat_map(|r| start_row(seed, r, n)).collect();
    encode_all(&values)
}

/// Runs the chain on `lanes` (one per GPU, each on its own thread) and builds the roots.
pub fn solve<L: Lane>(lanes: &mut [L], seed: &Seed, params: &Params, stop: &AtomicBool) -> Result<Chain, GpuError> {
    let n = params.n as usize;
    let b = encode_all(&multiplier(seed, n));
    let blocks = split_rows(params.rows, lanes.len());
    let per_lane: Vec<Result<Vec<Vec<Hash>>, GpuError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = lanes
            .iter_mut()
            .zip(&blocks)
            .map(|(lane, block)| {
                let b = &b;
                let block = block.clone();
                scope.spawn(move || -> Result<Vec<Vec<Hash>>, GpuError> {
                    lane.load(b, &start_rows(seed, block.clone(), n), n)?;
                    let mut leaves = Vec::with_capacity(params.checkpoints() as usize);
                    for step in 1..=params.steps {
                        if stop.load(Ordering::Relaxed) {
                            return Err(GpuError::Stopped);
                        }
                        lane.step()?;
                        if step % params.stride == 0 {
                            leaves.push(lane.leaves(step / params.stride, block.start)?);
                        }
                    }
                    Ok(leaves)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(GpuError::Cuda("a lane panicked".into()))))
            .collect()
    });
    let per_lane: Vec<Vec<Vec<Hash>>> = per_lane.into_iter().collect::<Result<_, _>>()?;
    // Checkpoint c's leaves, all lanes' blocks in row order.
    let leaves: Vec<Vec<Hash>> = (0..params.checkpoints() as usize)
        .map(|c| per_lane.iter().flat_map(|lane| lane[c].iter().copied()).collect())
        .collect();
    let roots = roots_in_parallel(&leaves);
    Ok(Chain { seed: *seed, params: *params, leaves, roots })
}

/// The checkpoints' trees are independent: built on every core.
fn roots_in_parallel(leaves: &[Vec<Hash>]) -> Vec<Hash> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(leaves.len().max(1));
    let per_thread = leaves.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = leaves
            .chunks(per_thread)
            .map(|chunk| scope.spawn(move || chunk.iter().map(|l| Tree::new(l.clone()).root()).collect::<Vec<_>>()))
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("hashing threads do not panic")).collect()
    })
}

impl Chain {
    pub fn params(&self) -> Params {
        self.params
    }

    /// Openings of `picks`, recomputing only the picked rows on `lane` from the seeded start:
    /// a picks×n chain up to the last picked checkpoint (memory-bound, a fraction of the solve).
    pub fn open<L: Lane>(&self, lane: &mut L, picks: &[Pick]) -> Result<Vec<Opening>, GpuError> {
        let n = self.params.n as usize;
        let stride = self.params.stride;
        let rows: Vec<u32> = picks.iter().map(|p| p.row).collect();
        let b = encode_all(&multiplier(&self.seed, n));
        lane.load(&b, &start_rows(&self.seed, rows.iter().copied(), n), n)?;
        let last = picks.iter().map(|p| p.checkpoint).max().unwrap_or(0) * stride;
        let mut starts: Vec<Option<Vec<i8>>> = vec![None; picks.len()];
        let mut links: Vec<Vec<Vec<i32>>> = vec![Vec::new(); picks.len()];
        for step in 1..=last {
            // The rows as they stand before this step are checkpoint (step - 1) / stride's.
            if (step - 1) % stride == 0 && step > 1 {
                let current = lane.rows()?;
                for (i, pick) in picks.iter().enumerate() {
                    if pick.checkpoint == (step - 1) / stride + 1 {
                        starts[i] = Some(current[i * n..(i + 1) * n].to_vec());
                    }
                }
            }
            lane.step()?;
            let wanted: Vec<usize> =
                (0..picks.len()).filter(|&i| step.div_ceil(stride) == picks[i].checkpoint).collect();
            if !wanted.is_empty() {
                let product = lane.product()?;
                for i in wanted {
                    links[i].push(product[i * n..(i + 1) * n].to_vec());
                }
            }
        }
        picks
            .iter()
            .zip(starts.into_iter().zip(links))
            .map(|(pick, (start, links))| {
                let c = pick.checkpoint as usize;
                let row = pick.row as usize;
                let start_path = if c == 1 { Vec::new() } else { Tree::new(self.leaves[c - 2].clone()).proof(row) };
                let end_path = Tree::new(self.leaves[c - 1].clone()).proof(row);
                Ok(Opening { pick: *pick, start: if c == 1 { None } else { start }, start_path, links, end_path })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_split_into_contiguous_blocks_that_cover_all() {
        for (rows, lanes) in [(8192, 8), (8192, 3), (64, 1), (4, 8), (100, 7)] {
            let blocks = split_rows(rows, lanes);
            assert_eq!(blocks.first().unwrap().start, 0);
            assert_eq!(blocks.last().unwrap().end, rows);
            assert!(blocks.windows(2).all(|w| w[0].end == w[1].start));
            let (min, max) =
                blocks.iter().fold((u32::MAX, 0), |(lo, hi), b| (lo.min(b.len() as u32), hi.max(b.len() as u32)));
            assert!(max - min <= 1, "{rows} over {lanes}: {blocks:?}");
            assert_eq!(blocks.len(), lanes.min(rows as usize));
        }
    }
}
