//! The device side of proof of compute and proof of VRAM: solve a challenge before its
//! deadline (on the CPU for CPUs and simulated devices, on every GPU through herd-gpu for
//! real GPUs), commit, then open the rows the coordinator picks; fill the GPUs' datasets,
//! then walk them when the walk nonce comes. One challenge at a time; a new one stops the old.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_core::Address;
use herd_gpu::{GpuChain, Gpus, VramFill};
use herd_proto::proof::{encode_hashes, ProofChallenge, VramChallenge, WireOpening};
use herd_proto::worker::WorkerMessage;
use herd_verify::vram::{Dataset, VramParams};
use herd_verify::{Pick, Seed, Solution};
use tokio::sync::mpsc;

/// What solves this device's proofs.
#[derive(Clone)]
pub enum Hardware {
    Cpu,
    Gpu(Arc<Gpus>),
}

/// A solved chain, waiting for its picks.
enum Solved {
    Cpu(Arc<Solution>),
    Gpu(Arc<GpuChain>),
}

impl Solved {
    fn params(&self) -> herd_verify::Params {
        match self {
            Solved::Cpu(s) => s.params(),
            Solved::Gpu(s) => s.params(),
        }
    }

    fn open(&self, picks: &[Pick]) -> Result<Vec<herd_verify::Opening>, String> {
        match self {
            Solved::Cpu(s) => Ok(picks.iter().map(|p| s.open(*p)).collect()),
            Solved::Gpu(s) => s.open(picks).map_err(|e| e.to_string()),
        }
    }
}

/// Every GPU's dataset of a proof of VRAM, waiting for the walk nonce.
struct Filled {
    seed: Seed,
    params: VramParams,
    datasets: Datasets,
}

enum Datasets {
    /// Simulated devices: in host memory, on the CPU.
    Host(Vec<Dataset>),
    /// Real GPUs: in their memory.
    Gpu(VramFill),
}

struct Current {
    challenge_id: String,
    stop: Arc<AtomicBool>,
    solution: Option<Arc<Solved>>,
    vram: Option<Arc<Filled>>,
}

#[derive(Default)]
pub struct Prover {
    current: Mutex<Option<Current>>,
}

/// Stops `stop` when `deadline` passes.
fn arm(stop: &Arc<AtomicBool>, deadline: Duration) {
    let stop = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(deadline).await;
        stop.store(true, Ordering::Relaxed);
    });
}

fn send(events: mpsc::Sender<WorkerMessage>, message: WorkerMessage) {
    tokio::spawn(async move {
        let _ = events.send(message).await;
    });
}

impl Prover {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes `id` the challenge in progress, stopping whatever ran before.
    fn begin(&self, id: &str) -> Arc<AtomicBool> {
        let stop = Arc::new(AtomicBool::new(false));
        let current = Current { challenge_id: id.to_owned(), stop: stop.clone(), solution: None, vram: None };
        if let Some(previous) = self.lock().replace(current) {
            previous.stop.store(true, Ordering::Relaxed);
        }
        stop
    }

    /// Runs `update` on the current challenge if it is still `id` (false: superseded).
    fn update(&self, id: &str, update: impl FnOnce(&mut Current)) -> bool {
        match self.lock().as_mut() {
            Some(c) if c.challenge_id == id => {
                update(c);
                true
            }
            _ => false,
        }
    }

    /// Declines the challenge if `refusal` says so or its nonce is not hex; otherwise makes it
    /// the one in progress, stopped when `deadline_ms` passes, and returns its seed.
    fn start(
        &self,
        id: &str,
        device: &Address,
        nonce: &str,
        refusal: Option<String>,
        deadline_ms: u64,
        events: &mpsc::Sender<WorkerMessage>,
    ) -> Option<(Seed, Arc<AtomicBool>)> {
        let nonce = herd_core::hex::decode_array::<32>(nonce);
        let refusal = refusal.or_else(|| nonce.is_none().then(|| "the nonce is not 64 hex digits".into()));
        if let Some(reason) = refusal {
            self.decline(id.to_owned(), reason, events.clone());
            return None;
        }
        let seed = herd_verify::challenge_seed(device.as_str(), &nonce.expect("checked above"));
        let stop = self.begin(id);
        arm(&stop, Duration::from_millis(deadline_ms));
        Some((seed, stop))
    }

    pub fn decline(&self, challenge_id: String, reason: String, events: mpsc::Sender<WorkerMessage>) {
        tracing::warn!(challenge = %challenge_id, %reason, "declining a proof");
        send(events, WorkerMessage::ProofDeclined { challenge_id, reason });
    }

    /// Starts solving `challenge` for `device`; replies go to `events`.
    pub fn challenge(
        self: &Arc<Self>,
        challenge: ProofChallenge,
        device: &Address,
        hardware: Hardware,
        events: mpsc::Sender<WorkerMessage>,
    ) {
        let id = challenge.challenge_id.clone();
        let params = challenge.params();
        let refusal = params.validate().err().map(|e| e.to_string());
        let Some((seed, stop)) = self.start(&id, device, &challenge.nonce, refusal, challenge.deadline_ms, &events)
        else {
            return;
        };
        let prover = self.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let solve_stop = stop.clone();
            let solved = tokio::task::spawn_blocking(move || match hardware {
                Hardware::Cpu => {
                    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                    herd_verify::solve(&seed, &params, threads, &solve_stop)
                        .map(|s| Solved::Cpu(Arc::new(s)))
                        .map_err(|e| e.to_string())
                }
                Hardware::Gpu(gpus) => {
                    gpus.solve(&seed, &params, &solve_stop).map(|s| Solved::Gpu(Arc::new(s))).map_err(|e| e.to_string())
                }
            })
            .await;
            let solution = match solved {
                Ok(Ok(solution)) => Arc::new(solution),
                Ok(Err(error)) if stop.load(Ordering::Relaxed) => {
                    tracing::warn!(challenge = %id, %error, "proof of compute not finished before its deadline");
                    return;
                }
                Ok(Err(error)) => return prover.decline(id, format!("the solver failed: {error}"), events),
                Err(error) => return prover.decline(id, format!("the solver failed: {error}"), events),
            };
            tracing::info!(challenge = %id, elapsed_ms = started.elapsed().as_millis() as u64, n = params.n,
                rows = params.rows, steps = params.steps, "proof of compute solved; committing");
            let roots = match solution.as_ref() {
                Solved::Cpu(s) => encode_hashes(&s.roots),
                Solved::Gpu(s) => encode_hashes(s.roots()),
            };
            if prover.update(&id, |c| c.solution = Some(solution)) {
                let _ = events.send(WorkerMessage::ProofCommitment { challenge_id: id, roots }).await;
            }
        });
    }

    /// Answers the coordinator's picks, one message per opening.
    pub fn open(&self, challenge_id: String, picks: Vec<[u32; 2]>, events: mpsc::Sender<WorkerMessage>) {
        let mut solution = None;
        self.update(&challenge_id, |c| solution = c.solution.take());
        let Some(solution) = solution else {
            tracing::warn!(challenge = %challenge_id, "asked to open a proof this worker does not hold");
            return;
        };
        let params = solution.params();
        tokio::task::spawn_blocking(move || {
            let mut asked = Vec::with_capacity(picks.len());
            for [checkpoint, row] in picks {
                if checkpoint == 0 || checkpoint > params.checkpoints() || row >= params.rows {
                    tracing::warn!(checkpoint, row, "asked to open a row outside the proof");
                    return;
                }
                asked.push(Pick { checkpoint, row });
            }
            let openings = match solution.open(&asked) {
                Ok(openings) => openings,
                Err(reason) => {
                    let _ = events.blocking_send(WorkerMessage::ProofDeclined { challenge_id, reason });
                    return;
                }
            };
            for opening in &openings {
                let message = WorkerMessage::ProofOpening {
                    challenge_id: challenge_id.clone(),
                    opening: WireOpening::from(opening),
                };
                if events.blocking_send(message).is_err() {
                    return;
                }
            }
        });
    }

    /// Fills every GPU's dataset, then reports `VramFilled`.
    pub fn vram_challenge(
        self: &Arc<Self>,
        challenge: VramChallenge,
        device: &Address,
        hardware: Hardware,
        events: mpsc::Sender<WorkerMessage>,
    ) {
        let id = challenge.challenge_id.clone();
        let params = challenge.params();
        let refusal = params.validate().err().map(|e| e.to_string()).or_else(|| {
            // A host-memory fill is for token-sized (simulated) proofs only; a GPU fill checks
            // the GPU count itself (`Gpus::fill`).
            let host_bytes = params.dataset_bytes().saturating_mul(u64::from(params.gpus));
            (matches!(hardware, Hardware::Cpu) && host_bytes > 1 << 30)
                .then(|| "a CPU-only worker cannot hold a full-size proof of VRAM".into())
        });
        let Some((seed, stop)) =
            self.start(&id, device, &challenge.nonce, refusal, challenge.fill_deadline_ms, &events)
        else {
            return;
        };
        let prover = self.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let fill_stop = stop.clone();
            let filled = tokio::task::spawn_blocking(move || match hardware {
                Hardware::Cpu => (0..params.gpus)
                    .map(|gpu| Dataset::fill(&seed, gpu, &params, &fill_stop))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Datasets::Host)
                    .map_err(|e| e.to_string()),
                Hardware::Gpu(gpus) => {
                    gpus.fill(&seed, &params, &fill_stop).map(Datasets::Gpu).map_err(|e| e.to_string())
                }
            })
            .await;
            let datasets = match filled {
                Ok(Ok(datasets)) => datasets,
                Ok(Err(error)) if stop.load(Ordering::Relaxed) => {
                    tracing::warn!(challenge = %id, %error, "proof of VRAM not filled before its deadline");
                    return;
                }
                Ok(Err(error)) => return prover.decline(id, format!("the GPUs could not be filled: {error}"), events),
                Err(error) => return prover.decline(id, format!("the fill failed: {error}"), events),
            };
            tracing::info!(challenge = %id, elapsed_ms = started.elapsed().as_millis() as u64, gpus = params.gpus,
                bytes_per_gpu = params.dataset_bytes(), "proof of VRAM filled; waiting for the walk nonce");
            let filled = Arc::new(Filled { seed, params, datasets });
            if prover.update(&id, |c| c.vram = Some(filled)) {
                let _ = events.send(WorkerMessage::VramFilled { challenge_id: id }).await;
            }
        });
    }

    /// Walks the filled datasets with `walk_nonce` and sends each GPU's wins.
    pub fn vram_walk(
        self: &Arc<Self>,
        challenge_id: String,
        walk_nonce: &str,
        deadline_ms: u64,
        events: mpsc::Sender<WorkerMessage>,
    ) {
        // The fill's deadline timer may have fired already: the walk gets a stop of its own,
        // which a newer challenge sets as it would the fill's.
        let walk_stop = Arc::new(AtomicBool::new(false));
        let mut filled = None;
        self.update(&challenge_id, |c| {
            filled = c.vram.take();
            c.stop = walk_stop.clone();
        });
        let Some(filled) = filled else {
            tracing::warn!(challenge = %challenge_id, "asked to walk a proof of VRAM this worker has not filled");
            return;
        };
        let Some(walk_nonce) = herd_core::hex::decode_array::<32>(walk_nonce) else {
            return self.decline(challenge_id, "the walk nonce is not 64 hex digits".into(), events);
        };
        arm(&walk_stop, Duration::from_millis(deadline_ms));
        let prover = self.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let search_stop = walk_stop.clone();
            let searched = tokio::task::spawn_blocking(move || {
                let Filled { seed, params, datasets } = &*filled;
                match datasets {
                    Datasets::Host(sets) => sets
                        .iter()
                        .enumerate()
                        .map(|(gpu, data)| data.search(seed, &walk_nonce, gpu as u32, params, &search_stop))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| e.to_string()),
                    Datasets::Gpu(fill) => {
                        fill.search(seed, &walk_nonce, params, &search_stop).map_err(|e| e.to_string())
                    }
                }
            })
            .await;
            match searched {
                Ok(Ok(wins)) => {
                    tracing::info!(challenge = %challenge_id, elapsed_ms = started.elapsed().as_millis() as u64,
                        "proof of VRAM walked; sending the wins");
                    let _ = events.send(WorkerMessage::VramWins { challenge_id, wins }).await;
                }
                Ok(Err(error)) if walk_stop.load(Ordering::Relaxed) => {
                    tracing::warn!(challenge = %challenge_id, %error, "proof of VRAM not walked before its deadline");
                }
                Ok(Err(error)) => prover.decline(challenge_id, format!("the walk failed: {error}"), events),
                Err(error) => prover.decline(challenge_id, format!("the walk failed: {error}"), events),
            }
        });
    }
}
