//! The device side of proof of compute: solve a challenge on the CPU before its deadline,
//! commit, then open the rows the coordinator picks. One challenge at a time; a new one
//! stops the old.
//!
//! GPUs are proven by a GPU solver computing the same chain. This build has none, so a
//! worker with real GPUs declines GPU challenges (and stays pending, with that reason)
//! rather than fail them on the CPU and be blocked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_core::Address;
use herd_proto::proof::{encode_hashes, ProofChallenge, VramChallenge, WireOpening};
use herd_proto::worker::WorkerMessage;
use herd_verify::vram::{Dataset, VramParams};
use herd_verify::{Pick, Solution};
use tokio::sync::mpsc;

struct Current {
    challenge_id: String,
    stop: Arc<AtomicBool>,
    solution: Option<Arc<Solution>>,
    /// A filled proof of VRAM, waiting for its walk nonce.
    vram: Option<Arc<Filled>>,
}

/// Every GPU's dataset of a proof of VRAM, with the seed it was made from.
pub struct Filled {
    seed: herd_verify::Seed,
    params: VramParams,
    datasets: Datasets,
}

enum Datasets {
    /// Simulated devices: in host memory, on the CPU.
    Host(Vec<Dataset>),
    /// Real GPUs: in their memory.
    Gpu(herd_gpu::VramFill),
}

#[derive(Default)]
pub struct Prover {
    current: Mutex<Option<Current>>,
}

impl Prover {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts solving `challenge` for `device`; replies go to `events`. `can_prove` is false
    /// when the claim needs hardware this build cannot drive (then the worker declines).
    pub fn challenge(
        self: &Arc<Self>,
        challenge: ProofChallenge,
        device: &Address,
        can_prove: Result<(), String>,
        events: mpsc::Sender<WorkerMessage>,
    ) {
        let id = challenge.challenge_id.clone();
        let params = challenge.params();
        let refusal = can_prove.err().or_else(|| params.validate().err().map(|e| e.to_string())).or_else(|| {
            herd_core::hex::decode_array::<32>(&challenge.nonce)
                .is_none()
                .then(|| "the nonce is not 64 hex digits".into())
        });
        if let Some(reason) = refusal {
            tracing::warn!(challenge = %id, %reason, "declining a proof of compute");
            tokio::spawn(async move {
                let _ = events.send(WorkerMessage::ProofDeclined { challenge_id: id, reason }).await;
            });
            return;
        }
        let nonce = herd_core::hex::decode_array::<32>(&challenge.nonce).expect("checked above");
        let seed = herd_verify::challenge_seed(device.as_str(), &nonce);
        let stop = Arc::new(AtomicBool::new(false));
        if let Some(previous) =
            self.lock().replace(Current { challenge_id: id.clone(), stop: stop.clone(), solution: None, vram: None })
        {
            previous.stop.store(true, Ordering::Relaxed);
        }
        let deadline = Duration::from_millis(challenge.deadline_ms);
        let timer_stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            timer_stop.store(true, Ordering::Relaxed);
        });
        let prover = self.clone();
        tokio::spawn(async move {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let started = tokio::time::Instant::now();
            let solve_stop = stop.clone();
            let solved =
                tokio::task::spawn_blocking(move || herd_verify::solve(&seed, &params, threads, &solve_stop)).await;
            let solution = match solved {
                Ok(Ok(solution)) => Arc::new(solution),
                Ok(Err(_)) => {
                    tracing::warn!(challenge = %id, "proof of compute not finished before its deadline");
                    return;
                }
                Err(error) => {
                    tracing::error!(challenge = %id, %error, "the solver failed");
                    return;
                }
            };
            tracing::info!(challenge = %id, elapsed_ms = started.elapsed().as_millis() as u64, n = params.n,
                steps = params.steps, "proof of compute solved; committing");
            let roots = encode_hashes(&solution.roots);
            {
                let mut current = prover.lock();
                match current.as_mut() {
                    Some(c) if c.challenge_id == id => c.solution = Some(solution),
                    _ => return, // superseded
                }
            }
            let _ = events.send(WorkerMessage::ProofCommitment { challenge_id: id, roots }).await;
        });
    }

    /// Answers the coordinator's picks, one message per opening.
    pub fn open(&self, challenge_id: String, picks: Vec<[u32; 2]>, events: mpsc::Sender<WorkerMessage>) {
        let solution = {
            let mut current = self.lock();
            match current.as_ref() {
                Some(c) if c.challenge_id == challenge_id => {
                    let solution = c.solution.clone();
                    *current = None;
                    solution
                }
                _ => None,
            }
        };
        let Some(solution) = solution else {
            tracing::warn!(challenge = %challenge_id, "asked to open a proof this worker does not hold");
            return;
        };
        let params = solution.params();
        tokio::task::spawn_blocking(move || {
            for [checkpoint, row] in picks {
                if checkpoint == 0 || checkpoint > params.checkpoints() || row >= params.rows {
                    tracing::warn!(checkpoint, row, "asked to open a row outside the proof");
                    return;
                }
                let opening = WireOpening::from(&solution.open(Pick { checkpoint, row }));
                let message = WorkerMessage::ProofOpening { challenge_id: challenge_id.clone(), opening };
                if events.blocking_send(message).is_err() {
                    return;
                }
            }
        });
    }
}
