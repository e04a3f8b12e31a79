//! Proof of compute, the coordinator's side: who is challenged when, the conversation with
//! the worker, and what the verdict does (admit, block and slash, or try again later).
//!
//! One task per challenge. Replies arrive from the worker socket through `Proofs`, keyed by
//! challenge id and bound to the device and connection it was issued on, so a device can
//! neither answer another's challenge nor keep a challenge alive across a reconnect.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use herd_core::{Address, DeviceSpec, DeviceState, Timestamp};
use herd_proto::proof::{decode_hashes, ProofChallenge, ProofOutcome, VramChallenge, WireOpening};
use herd_proto::worker::ServerMessage;
use herd_verify::vram::VramSizing;
use herd_verify::{Claim, Policy};
use rand::rngs::OsRng;
use rand::{Rng, RngCore};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::{timeout_at, Instant, MissedTickBehavior};

use crate::app::{now, App};
use crate::auth::random_token;
use crate::metrics::labels;
use crate::store::{DueDevice, Finish, NewVerification, Verdict};

#[derive(Debug, Clone)]
pub struct ProofConfig {
    pub policy: Policy,
    /// After a pass, the next re-check comes at a random time between half and 95% of
    /// this, so every hour-long window holds at least one check of an idle device.
    pub recheck_interval: Duration,
    /// Simulated devices may join (with token-sized proofs): local and test networks only.
    pub simulated_allowed: bool,
    /// Share of a device's stake burned when it fails a proof, basis points.
    pub slash_bps: u32,
    /// Challenges in flight at once, network-wide. A challenge waiting on a silent device
    /// costs a task and a row, not CPU (verifying is bounded by `verifying`), so this is
    /// large: a flood of devices that never answer is swept in a few deadlines.
    pub concurrent_max: usize,
    /// Challenges in flight at once for one owner's devices; slots go to the owners with the
    /// fewest in flight first, so one owner's flood cannot starve another's devices.
    pub per_owner_max: usize,
    /// Challenges issued per scheduling pass (each is a database write and a message): a
    /// flood is challenged at a steady pace instead of in one burst that stalls the API.
    pub issued_per_pass: usize,
    /// After the commitment, how long the worker has to send every opening.
    pub openings_timeout: Duration,
    /// Deadlines missed in a row before a device is blocked (wrong answers block at once).
    pub strikes_max: u32,
    /// How long after a missed deadline, a decline or an interruption the device is
    /// challenged again.
    pub retry_after: Duration,
}

impl Default for ProofConfig {
    fn default() -> Self {
        ProofConfig {
            policy: Policy::default(),
            recheck_interval: Duration::from_secs(3600),
            simulated_allowed: false,
            slash_bps: 1000,
            concurrent_max: 4096,
            per_owner_max: 16,
            issued_per_pass: 128,
            openings_timeout: Duration::from_secs(30),
            strikes_max: 3,
            retry_after: Duration::from_secs(60),
        }
    }
}

/// What a worker sends back about a challenge.
#[derive(Debug)]
pub enum Reply {
    Commitment(Vec<String>),
    Opening(WireOpening),
    Declined(String),
    VramFilled,
    VramWins(Vec<Vec<u64>>),
}

struct Inflight {
    device: Address,
    owner: Address,
    connection: u64,
    replies: mpsc::Sender<Reply>,
}

/// Challenges in flight, and a bell that starts a scheduling pass early.
pub struct Proofs {
    inflight: Mutex<HashMap<String, Inflight>>,
    pub wake: Notify,
    /// Checks running at once: the coordinator's CPU, whatever number of challenges wait.
    verifying: tokio::sync::Semaphore,
    /// Verdicts on their way to the database, written in batches (`record_verdicts`).
    verdicts: mpsc::Sender<PendingVerdict>,
    verdicts_rx: Mutex<Option<mpsc::Receiver<PendingVerdict>>>,
}

/// A verdict waiting for its batch's commit, and who waits for the device's new state.
struct PendingVerdict {
    id: String,
    device: Address,
    verdict: Verdict,
    done: tokio::sync::oneshot::Sender<Result<Option<DeviceState>, String>>,
}

/// Verdicts written per transaction, at most.
const VERDICTS_PER_BATCH: usize = 512;

impl Default for Proofs {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (verdicts, verdicts_rx) = mpsc::channel(4 * VERDICTS_PER_BATCH);
        Proofs {
            inflight: Mutex::default(),
            wake: Notify::default(),
            verifying: tokio::sync::Semaphore::new(cores),
            verdicts,
            verdicts_rx: Mutex::new(Some(verdicts_rx)),
        }
    }
}

/// Replies one challenge can queue: the commitment, every opening, one spare.
const REPLIES_MAX: usize = herd_verify::params::OPENINGS_MAX as usize + 2;

impl Proofs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Inflight>> {
        self.inflight.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a challenge; None if the device already has one in flight.
    fn begin(&self, id: &str, device: &DueDevice, connection: u64) -> Option<mpsc::Receiver<Reply>> {
        let mut inflight = self.lock();
        if inflight.values().any(|i| i.device == device.id) {
            return None;
        }
        let (replies, receiver) = mpsc::channel(REPLIES_MAX);
        let entry = Inflight { device: device.id.clone(), owner: device.owner.clone(), connection, replies };
        inflight.insert(id.to_owned(), entry);
        Some(receiver)
    }

    /// Challenges in flight per owner.
    fn in_flight_by_owner(&self) -> HashMap<Address, usize> {
        let mut counts = HashMap::new();
        for entry in self.lock().values() {
            *counts.entry(entry.owner.clone()).or_insert(0) += 1;
        }
        counts
    }

    fn end(&self, id: &str) {
        self.lock().remove(id);
    }

    pub fn in_flight(&self) -> usize {
        self.lock().len()
    }

    pub fn is_proving(&self, device: &Address) -> bool {
        self.lock().values().any(|i| &i.device == device)
    }

    /// Routes a worker's reply to its challenge. Refused (with why) if the challenge is
    /// unknown, finished, or was issued to another device or connection.
    pub fn deliver(&self, device: &Address, connection: u64, id: &str, reply: Reply) -> Result<(), String> {
        let inflight = self.lock();
        let Some(entry) = inflight.get(id) else {
            return Err(format!("no challenge {id} is open"));
        };
        if &entry.device != device || entry.connection != connection {
            return Err(format!("challenge {id} was not issued to this device on this connection"));
        }
        entry.replies.try_send(reply).map_err(|_| format!("too many replies to challenge {id}"))
    }

    /// The connection closed: its challenges end as aborted (their tasks see the channel close).
    pub fn connection_closed(&self, device: &Address, connection: u64) {
        self.lock().retain(|_, i| !(&i.device == device && i.connection == connection));
    }
}

/// Removes the challenge from `Proofs` however its task ends.
struct Registered {
    app: App,
    id: String,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.app.proofs.end(&self.id);
    }
}

pub fn claim_of(spec: &DeviceSpec, simulated: bool) -> Claim {
    if simulated {
        return Claim::Simulated;
    }
    match spec.gpu_offer() {
        Some((model, count)) => Claim::Gpu { model, count },
        None => Claim::Cpu { logical_cores: spec.cpu.logical_cores },
    }
}

/// The scheduler: every tick (or when woken), challenge the devices that are due.
pub async fn run(app: App, mut shutdown: watch::Receiver<bool>) {
    let verdicts = app.proofs.verdicts_rx.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(verdicts) = verdicts {
        tokio::spawn(record_verdicts(app.clone(), verdicts));
    }
    let mut tick = tokio::time::interval(app.config.reconcile_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = app.proofs.wake.notified() => {}
            _ = shutdown.changed() => return,
        }
        if let Err(error) = schedule(&app).await {
            tracing::warn!(%error, "proof scheduling failed; retrying next tick");
        }
    }
}

async fn schedule(app: &App) -> crate::store::StoreResult<()> {
    let room =
        app.config.proof.concurrent_max.saturating_sub(app.proofs.in_flight()).min(app.config.proof.issued_per_pass);
    if room == 0 {
        return Ok(());
    }
    let per_owner = app.config.proof.per_owner_max.max(1);
    let candidates = (room * 2).min(8192) as u32;
    // Round-robin across owners already (`due_for_verification`), each owner's in-flight
    // challenges counted against its share.
    let due = app.store.due_for_verification(now(), candidates, per_owner as u32).await?;
    let mut by_owner = app.proofs.in_flight_by_owner();
    let mut started = 0;
    let mut issued: Vec<Issued> = Vec::new();
    for device in due {
        if started == room {
            break;
        }
        let owner_in_flight = by_owner.entry(device.owner.clone()).or_insert(0);
        if *owner_in_flight >= per_owner {
            continue;
        }
        if let Some(reason) = &device.flag_reason {
            app.store.requalify(&device.id, &format!("flagged: {reason}"), now()).await?;
            app.sync_market(std::slice::from_ref(&device.id)).await;
            continue;
        }
        let Some(connection) = app.hub.connection_id(&device.id) else { continue };
        if app.proofs.is_proving(&device.id) {
            continue;
        }
        if let Some(challenge) = issue(app, device, connection) {
            *owner_in_flight += 1;
            started += 1;
            issued.push(challenge);
        }
    }
    if issued.is_empty() {
        return Ok(());
    }
    // The pass's challenges are recorded in one transaction: one commit for a flood.
    let rows: Vec<NewVerification<'_>> = issued.iter().map(Issued::row).collect();
    if let Err(error) = app.store.begin_verifications(&rows, now()).await {
        tracing::error!(%error, challenges = issued.len(), "could not record challenges; retrying next pass");
        return Ok(()); // dropping `issued` unregisters them
    }
    drop(rows);
    let devices: Vec<Address> = issued.iter().map(|i| i.device.id.clone()).collect();
    app.sync_market(&devices).await;
    for challenge in issued {
        tokio::spawn(prove(app.clone(), challenge));
    }
    Ok(())
}

/// A challenge registered in `Proofs`, about to be recorded and sent.
struct Issued {
    device: DueDevice,
    id: String,
    nonce: [u8; 32],
    sizing: herd_verify::Sizing,
    /// GPU claims also prove their memory, after the compute chain passed.
    vram: Option<VramSizing>,
    purpose: &'static str,
    claim_text: String,
    claim_key: String,
    replies: mpsc::Receiver<Reply>,
    registered: Registered,
}

impl Issued {
    fn row(&self) -> NewVerification<'_> {
        NewVerification {
            id: &self.id,
            device: &self.device.id,
            purpose: self.purpose,
            claim: &self.claim_text,
            claim_key: &self.claim_key,
            params: self.sizing.params,
            expected_ms: self.sizing.expected_ms,
            deadline_ms: self.sizing.deadline_ms,
        }
    }
}

/// Sizes a challenge for the device and registers it (None if one is already in flight).
fn issue(app: &App, device: DueDevice, connection: u64) -> Option<Issued> {
    let claim = claim_of(&device.spec, device.simulated);
    let sizing = herd_verify::size(claim, &app.config.proof.policy);
    let purpose = if device.admitted && device.state == DeviceState::Ready { "recheck" } else { "admission" };
    let id = format!("poc-{}", random_token());
    let replies = app.proofs.begin(&id, &device, connection)?;
    let registered = Registered { app: app.clone(), id: id.clone() };
    let mut nonce = [0u8; 32];
    OsRng.fill_bytes(&mut nonce);
    let claim_key = device.spec.admission_claim(device.simulated);
    let vram = vram_sizing(&device.spec, device.simulated, &app.config.proof.policy);
    Some(Issued {
        device,
        id,
        nonce,
        sizing,
        vram,
        purpose,
        claim_text: claim.describe(),
        claim_key,
        replies,
        registered,
    })
}

/// One challenge (recorded already), from its sending to its verdict.
async fn prove(app: App, issued: Issued) {
    let Issued { device, id, nonce, sizing, vram, claim_text, mut replies, registered: _registered, .. } = issued;
    let params = sizing.params;
    let challenge = ProofChallenge {
        challenge_id: id.clone(),
        nonce: herd_core::hex::encode(&nonce),
        n: params.n,
        rows: params.rows,
        steps: params.steps,
        stride: params.stride,
        openings: params.openings,
        deadline_ms: sizing.deadline_ms,
    };
    let issued = Instant::now();
    let mut verdict = if app.hub.send(&device.id, ServerMessage::ProofChallenge(challenge)) {
        converse(&app, &device.id, &id, &nonce, &sizing, &claim_text, issued, &mut replies).await
    } else {
        Verdict::aborted("the device is not connected", app.config.proof.retry_after)
    };
    if let (Finish::Passed { .. }, Some(vram)) = (&verdict.finish, vram) {
        let memory = converse_vram(&app, &device.id, &id, &vram, &mut replies).await;
        verdict = match memory {
            Ok((report, verify_us)) => Verdict {
                reason: format!("{}; {report}", verdict.reason),
                verify_us: verdict.verify_us.map(|us| us + verify_us),
                ..verdict
            },
            Err(failed) => Verdict {
                committed_at: verdict.committed_at,
                reason: format!("proof of VRAM: {}", failed.reason),
                ..failed
            },
        };
    }
    conclude(&app, &device.id, &id, verdict).await;
}

impl Verdict {
    fn failed(reason: impl Into<String>) -> Verdict {
        Verdict { finish: Finish::Failed, reason: reason.into(), committed_at: None, verify_us: None }
    }

    fn aborted(reason: impl Into<String>, retry_after: Duration) -> Verdict {
        Verdict::inconclusive(ProofOutcome::Aborted, reason.into(), retry_after)
    }

    /// The worker said it cannot prove this hardware: neither a pass nor a failure.
    fn declined(reason: &str, retry_after: Duration) -> Verdict {
        Verdict::inconclusive(ProofOutcome::Declined, format!("the worker declined: {reason}"), retry_after)
    }

    fn inconclusive(outcome: ProofOutcome, reason: String, retry_after: Duration) -> Verdict {
        let retry_at = Timestamp(now().0 + retry_after.as_millis() as i64);
        Verdict { finish: Finish::Inconclusive { outcome, retry_at }, reason, committed_at: None, verify_us: None }
    }

    /// A deadline passed: a strike, which blocks only when it repeats.
    fn missed(reason: String, config: &ProofConfig) -> Verdict {
        let retry_at = Timestamp(now().0 + config.retry_after.as_millis() as i64);
        Verdict {
            finish: Finish::Missed { strikes_max: config.strikes_max, retry_at },
            reason,
            committed_at: None,
            verify_us: None,
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn converse(
    app: &App,
    device: &Address,
    id: &str,
    nonce: &[u8; 32],
    sizing: &herd_verify::Sizing,
    claim: &str,
    issued: Instant,
    replies: &mut mpsc::Receiver<Reply>,
) -> Verdict {
    let deadline = issued + Duration::from_millis(sizing.deadline_ms);
    let retry_after = app.config.proof.retry_after;
    let roots = match timeout_at(deadline, replies.recv()).await {
        Err(_) => {
            let reason = format!(
                "no commitment within the {} ms deadline; an honest {claim} needs about {} ms",
                sizing.deadline_ms, sizing.expected_ms
            );
            return Verdict::missed(reason, &app.config.proof);
        }
        Ok(None) => return Verdict::aborted("the device disconnected during the proof", retry_after),
        Ok(Some(Reply::Declined(reason))) => return Verdict::declined(&reason, retry_after),
        Ok(Some(Reply::Opening(_) | Reply::VramFilled | Reply::VramWins(_))) => {
            return Verdict::failed("a reply arrived before the commitment")
        }
        Ok(Some(Reply::Commitment(roots))) => roots,
    };
    let committed_ms = issued.elapsed().as_millis() as u64;
    let committed_at = Some(now());
    let Some(roots) = decode_hashes(&roots) else {
        return Verdict::failed("a committed root is not 64 hex digits");
    };
    let mut secret = [0u8; 32];
    OsRng.fill_bytes(&mut secret);
    let picks = herd_verify::choose(&sizing.params, &secret);
    let asked = ServerMessage::ProofOpen {
        challenge_id: id.to_owned(),
        picks: picks.iter().map(|p| [p.checkpoint, p.row]).collect(),
    };
    if !app.hub.send(device, asked) {
        return Verdict::aborted("the device disconnected during the proof", retry_after);
    }
    let openings_deadline = Instant::now() + app.config.proof.openings_timeout;
    let mut openings = Vec::with_capacity(picks.len());
    while openings.len() < picks.len() {
        match timeout_at(openings_deadline, replies.recv()).await {
            Err(_) => {
                return Verdict::failed(format!(
                    "sent {} of {} openings within {} s",
                    openings.len(),
                    picks.len(),
                    app.config.proof.openings_timeout.as_secs()
                ))
            }
            Ok(None) => return Verdict::aborted("the device disconnected during the proof", retry_after),
            Ok(Some(Reply::Opening(wire))) => match wire.decode() {
                Some(opening) => openings.push(opening),
                None => return Verdict::failed("an opening's Merkle path is not hex"),
            },
            Ok(Some(Reply::Declined(reason))) => return Verdict::failed(format!("gave up after committing: {reason}")),
            Ok(Some(Reply::Commitment(_))) => return Verdict::failed("a second commitment"),
            Ok(Some(Reply::VramFilled | Reply::VramWins(_))) => {
                return Verdict::failed("a proof of VRAM reply before the compute proof ended")
            }
        }
    }
    let (device_key, params) = (device.to_string(), sizing.params);
    let nonce = *nonce;
    let Ok(_verifying) = app.proofs.verifying.acquire().await else {
        return Verdict::aborted("the coordinator is stopping", retry_after);
    };
    let checked = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let result = herd_verify::check(&device_key, &nonce, &params, &roots, &picks, &openings, &secret);
        (result, started.elapsed().as_micros() as u64)
    })
    .await;
    match checked {
        Ok((Ok(()), verify_us)) => {
            let interval = app.config.proof.recheck_interval.as_millis() as i64;
            let next = now().0 + OsRng.gen_range(interval / 2..=interval * 95 / 100).max(1);
            Verdict {
                finish: Finish::Passed { next_check_at: Timestamp(next) },
                reason: format!("{claim}: committed in {committed_ms} ms of {} allowed", sizing.deadline_ms),
                committed_at,
                verify_us: Some(verify_us),
            }
        }
        Ok((Err(failure), verify_us)) => {
            Verdict { committed_at, verify_us: Some(verify_us), ..Verdict::failed(failure.to_string()) }
        }
        Err(error) => Verdict::aborted(format!("the verifier stopped: {error}"), retry_after),
    }
}

/// The proof of VRAM a device's hardware calls for: GPU claims (token-sized for simulated
/// devices that list GPUs), none for CPUs.
fn vram_sizing(spec: &DeviceSpec, simulated: bool, policy: &Policy) -> Option<VramSizing> {
    if simulated {
        return herd_verify::vram::size_vram(None, spec.gpus.len() as u32, true, policy);
    }
    let (model, count) = spec.gpu_offer()?;
    herd_verify::vram::size_vram(Some(model), count, false, policy)
}

/// The proof of VRAM, after the compute chain passed: fill, walk, check the wins. Ok is a
/// line for the verdict's reason and the verifier's µs; Err is the verdict that ends it.
async fn converse_vram(
    app: &App,
    device: &Address,
    id: &str,
    sizing: &VramSizing,
    replies: &mut mpsc::Receiver<Reply>,
) -> Result<(String, u64), Verdict> {
    let retry_after = app.config.proof.retry_after;
    let missed = |reason: String| Verdict::missed(reason, &app.config.proof);
    let params = sizing.params;
    let mut nonce = [0u8; 32];
    OsRng.fill_bytes(&mut nonce);
    let challenge = VramChallenge {
        challenge_id: id.to_owned(),
        nonce: herd_core::hex::encode(&nonce),
        gpus: params.gpus,
        items: params.items,
        rounds: params.rounds,
        steps: params.steps,
        difficulty: params.difficulty,
        wins: params.wins,
        fill_deadline_ms: sizing.fill_deadline_ms,
    };
    let gib = params.dataset_bytes() as f64 / f64::from(1u32 << 30);
    if !app.hub.send(device, ServerMessage::VramChallenge(challenge)) {
        return Err(Verdict::aborted("the device disconnected during the proof", retry_after));
    }
    let started = Instant::now();
    match timeout_at(started + Duration::from_millis(sizing.fill_deadline_ms), replies.recv()).await {
        Err(_) => {
            return Err(missed(format!(
                "{gib:.1} GiB per GPU not filled within the {} ms deadline",
                sizing.fill_deadline_ms
            )))
        }
        Ok(None) => return Err(Verdict::aborted("the device disconnected during the proof", retry_after)),
        Ok(Some(Reply::VramFilled)) => {}
        // A fill declined (e.g. the GPUs' memory is in use) is retried, like a declined chain.
        Ok(Some(Reply::Declined(reason))) => return Err(Verdict::declined(&reason, retry_after)),
        Ok(Some(_)) => return Err(Verdict::failed("a reply out of order: the fill report was expected")),
    }
    let fill_ms = started.elapsed().as_millis() as u64;
    let mut walk_nonce = [0u8; 32];
    OsRng.fill_bytes(&mut walk_nonce);
    let walk = ServerMessage::VramWalk {
        challenge_id: id.to_owned(),
        walk_nonce: herd_core::hex::encode(&walk_nonce),
        deadline_ms: sizing.walk_deadline_ms,
    };
    if !app.hub.send(device, walk) {
        return Err(Verdict::aborted("the device disconnected during the proof", retry_after));
    }
    let walked = Instant::now();
    let wins = match timeout_at(walked + Duration::from_millis(sizing.walk_deadline_ms), replies.recv()).await {
        Err(_) => {
            return Err(missed(format!(
            "no winning walks within the {} ms deadline; an honest card holding {gib:.1} GiB per GPU needs about {} ms",
            sizing.walk_deadline_ms, sizing.walk_expected_ms
        )))
        }
        Ok(None) => return Err(Verdict::aborted("the device disconnected during the proof", retry_after)),
        Ok(Some(Reply::VramWins(wins))) => wins,
        Ok(Some(Reply::Declined(reason))) => return Err(Verdict::failed(format!("gave up after filling: {reason}"))),
        Ok(Some(_)) => return Err(Verdict::failed("a reply out of order: the winning walks were expected")),
    };
    let walk_ms = walked.elapsed().as_millis() as u64;
    let seed = herd_verify::challenge_seed(device.as_str(), &nonce);
    let Ok(_verifying) = app.proofs.verifying.acquire().await else {
        return Err(Verdict::aborted("the coordinator is stopping", retry_after));
    };
    let checked = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let result = herd_verify::vram::check_vram(&seed, &walk_nonce, &params, &wins);
        (result, started.elapsed().as_micros() as u64)
    })
    .await;
    match checked {
        Ok((Ok(()), verify_us)) => Ok((
            format!(
                "VRAM: {gib:.1} GiB on each of {} GPUs filled in {fill_ms} ms, walked in {walk_ms} ms of {} allowed",
                params.gpus, sizing.walk_deadline_ms
            ),
            verify_us,
        )),
        Ok((Err(failure), verify_us)) => {
            Err(Verdict { verify_us: Some(verify_us), ..Verdict::failed(failure.to_string()) })
        }
        Err(error) => Err(Verdict::aborted(format!("the verifier stopped: {error}"), retry_after)),
    }
}

/// Writes verdicts in batches: whatever is waiting (up to `VERDICTS_PER_BATCH`) goes in one
/// transaction, so a flood's deadlines expiring together cost one commit, not thousands.
async fn record_verdicts(app: App, mut verdicts: mpsc::Receiver<PendingVerdict>) {
    let mut batch = Vec::with_capacity(VERDICTS_PER_BATCH);
    while verdicts.recv_many(&mut batch, VERDICTS_PER_BATCH).await > 0 {
        let rows: Vec<(String, Address, Verdict)> =
            batch.iter().map(|p| (p.id.clone(), p.device.clone(), p.verdict.clone())).collect();
        match app.store.finish_verifications(&rows, now()).await {
            Ok(states) => {
                for (pending, state) in batch.drain(..).zip(states) {
                    let _ = pending.done.send(Ok(state));
                }
            }
            Err(error) => {
                let error = error.to_string();
                for pending in batch.drain(..) {
                    let _ = pending.done.send(Err(error.clone()));
                }
            }
        }
    }
}

async fn conclude(app: &App, device: &Address, id: &str, verdict: Verdict) {
    let outcome = match &verdict.finish {
        Finish::Passed { .. } => "passed",
        Finish::Failed | Finish::Missed { .. } => "failed",
        Finish::Inconclusive { outcome, .. } => outcome.as_str(),
    };
    app.metrics.proofs.get_or_create(&labels(&[("outcome", outcome)])).inc();
    let (done, state) = tokio::sync::oneshot::channel();
    let pending = PendingVerdict { id: id.to_owned(), device: device.clone(), verdict: verdict.clone(), done };
    let state = match app.proofs.verdicts.send(pending).await {
        Ok(()) => state.await.unwrap_or_else(|_| Err("the verdict writer stopped".into())),
        Err(_) => Err("the verdict writer stopped".into()),
    };
    app.sync_market(std::slice::from_ref(device)).await;
    let blocked = match state {
        Ok(Some(state)) => {
            tracing::info!(%device, challenge = id, outcome, %state, reason = %verdict.reason,
                verify_us = verdict.verify_us, "proof of compute finished");
            state == DeviceState::Blocked
        }
        Ok(None) => false,
        Err(error) => {
            tracing::error!(%error, %device, "could not record a proof's verdict");
            false
        }
    };
    if blocked {
        let message = format!("device blocked: failed proof of compute: {}", verdict.reason);
        app.hub.send(device, ServerMessage::Rejected { code: "blocked".into(), message });
        app.hub.disconnect(device);
        let id = format!("slash:{id}");
        crate::slashing::slash(app, device, &id, app.config.proof.slash_bps, "slash-failed-verification").await;
    }
}
