//! The device side on the CPU: compute the chain, commit to every checkpoint, answer the
//! openings. Threads split the rows (each row's chain is independent); a stop flag, set by
//! the worker when the deadline passes, ends the work early.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::chain::{multiplier, reduce_row, row_times, start_row};
use crate::merkle::{leaf, Hash, Tree};
use crate::params::Params;
use crate::prg::Seed;
use crate::{Opening, Pick};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stopped before the proof was complete")]
pub struct Stopped;

/// A computed chain: the roots to commit to, and what is kept to answer openings.
pub struct Solution {
    params: Params,
    seed: Seed,
    multiplier: Vec<i8>,
    /// Checkpoints 0 (the start) ..= C, each rows×n, row-major.
    checkpoints: Vec<Vec<i8>>,
    pub roots: Vec<Hash>,
}

pub fn solve(seed: &Seed, params: &Params, threads: usize, stop: &AtomicBool) -> Result<Solution, Stopped> {
    let n = params.n as usize;
    let rows = params.rows as usize;
    let b = multiplier(seed, n);
    let mut current: Vec<i8> = (0..rows).flat_map(|i| start_row(seed, i as u32, n)).collect();
    let mut checkpoints = vec![current.clone()];
    let mut roots = Vec::with_capacity(params.checkpoints() as usize);
    let threads = threads.clamp(1, rows);
    let rows_per_thread = rows.div_ceil(threads);
    for step in 1..=params.steps {
        let mut next = vec![0i8; rows * n];
        let finished = std::thread::scope(|scope| {
            let workers: Vec<_> = current
                .chunks(rows_per_thread * n)
                .zip(next.chunks_mut(rows_per_thread * n))
                .map(|(input, output)| {
                    let b = &b;
                    scope.spawn(move || {
                        let mut product = vec![0i32; n];
                        for (row_in, row_out) in input.chunks(n).zip(output.chunks_mut(n)) {
                            if stop.load(Ordering::Relaxed) {
                                return false;
                            }
                            row_times(row_in, b, &mut product);
                            reduce_row(&product, row_out);
                        }
                        true
                    })
                })
                .collect();
            workers.into_iter().all(|w| w.join().expect("solver threads do not panic"))
        });
        if !finished {
            return Err(Stopped);
        }
        current = next;
        if step % params.stride == 0 {
            let checkpoint = step / params.stride;
            roots.push(tree(checkpoint, &current, n).root());
            checkpoints.push(current.clone());
        }
    }
    Ok(Solution { params: *params, seed: *seed, multiplier: b, checkpoints, roots })
}

fn tree(checkpoint: u32, matrix: &[i8], n: usize) -> Tree {
    Tree::new(matrix.chunks(n).enumerate().map(|(i, row)| leaf(checkpoint, i as u32, row)).collect())
}

impl Solution {
    pub fn params(&self) -> Params {
        self.params
    }

    /// The opening of one row at one checkpoint: the row at the previous checkpoint (with
    /// its Merkle path, unless that is the seeded start), every unreduced product between,
    /// and the path of the row at the checkpoint itself.
    pub fn open(&self, pick: Pick) -> Opening {
        let n = self.params.n as usize;
        let (c, i) = (pick.checkpoint as usize, pick.row as usize);
        let before = &self.checkpoints[c - 1];
        let mut row = before[i * n..(i + 1) * n].to_vec();
        let (start, start_path) = if c == 1 {
            debug_assert_eq!(row, start_row(&self.seed, pick.row, n));
            (None, Vec::new())
        } else {
            (Some(row.clone()), tree(pick.checkpoint - 1, before, n).proof(i))
        };
        let mut links = Vec::with_capacity(self.params.stride as usize);
        for _ in 0..self.params.stride {
            let mut product = vec![0i32; n];
            row_times(&row, &self.multiplier, &mut product);
            reduce_row(&product, &mut row);
            links.push(product);
        }
        let end_path = tree(pick.checkpoint, &self.checkpoints[c], n).proof(i);
        Opening { pick, start, start_path, links, end_path }
    }
}
