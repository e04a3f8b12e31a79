//! The deterministic simulation: hundreds of simulated workers under a seeded fault schedule
//! (`herd_sim::chaos`) against the coordinator's real code — store, reconcilers, healer,
//! metering, ledger, the API handlers customers call and the handlers worker messages reach.
//! Workers are modelled where the socket would be: they read their outbox and answer with
//! the messages a real agent sends. Time and new ids come from the seed, so a run is a
//! function of its seed; every invariant of `herd_sim::chaos::check` is checked after every
//! step, and a failure names its seed (`HERD_SIM_SEED=N` replays it).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::{Path, State};
use herd_core::{Address, ClusterId, ClusterKind, JobId, Timestamp};
use herd_proto::api::{CreateCluster, CreateJob, Deposit};
use herd_proto::worker::{HelloPayload, ServerMessage, TaskExit, TaskReport, WorkerMessage};
use herd_sim::chaos::{self, Step, World};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::app::{simulation, App, CoordinatorConfig};
use crate::auth::Caller;
use crate::error::{ApiJson, ApiQuery};
use crate::rate_limit::Origin;
use crate::reconcile::{self, TickState};
use crate::store::Store;

const WORKERS: usize = 200;
const SUPPLIERS: usize = 20;
const STEPS: usize = 300;
/// Seeds run by default (each takes a few seconds); `HERD_SIM_SEED` runs just one.
const SEEDS: std::ops::RangeInclusive<u64> = 1..=3;
const START_MS: i64 = 1_800_000_000_000;
const HEARTBEAT_MS: i64 = 1_000;
/// The reconcilers tick at least this often while time advances.
const TICK_MS: i64 = 500;
/// Every device's floor, per node-hour: large enough that rounding is small against what a
/// tenure earns, small enough that a lease posts every few seconds rather than every tick.
const FLOOR_MICROS: i64 = 360_000;

enum Link {
    Up {
        connection: u64,
        outbox: mpsc::Receiver<ServerMessage>,
    },
    /// The machine died: it comes back with nothing.
    Crashed,
    /// Cut off: its tasks run on, unheard, and are reported when it comes back.
    Cut,
}

struct SimTask {
    ends_at: i64,
    exit: Option<TaskExit>,
}

struct SimWorker {
    hello: HelloPayload,
    link: Link,
    last_beat: i64,
    tasks: BTreeMap<(JobId, u32), SimTask>,
}

struct Sim {
    _dir: tempfile::TempDir,
    url: String,
    key_path: PathBuf,
    app: App,
    workers: Vec<SimWorker>,
    customer: Address,
    clusters: Vec<ClusterId>,
    run_ms: HashMap<JobId, u32>,
    /// The journal's transfers read so far (it only grows).
    transfers: Vec<chaos::Transfer>,
    now_ms: i64,
    base: Instant,
    ticks: TickState,
}

fn config(url: &str) -> CoordinatorConfig {
    let mut config = CoordinatorConfig::new(url, "127.0.0.1:0".parse().unwrap());
    config.heartbeat_interval = Duration::from_millis(HEARTBEAT_MS as u64);
    config.faucet = true;
    config.proof.simulated_allowed = true;
    config
}

async fn open_app(url: &str, key_path: &std::path::Path) -> App {
    let store = Store::open(url).await.unwrap();
    let market = crate::market::SharedMarket::load(&store, false).await.unwrap();
    let books = crate::books::SharedBooks::load(&store, Some(key_path)).await.unwrap();
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let app = App::new(store, market, books, config(url), None, shutdown);
    app.ensure_genesis().await.unwrap();
    app
}

fn address(seed: u64, kind: u8, n: usize) -> Address {
    let mut key = [kind; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(n as u64).to_le_bytes());
    Address::from_public_key(&key)
}

impl Sim {
    async fn start(seed: u64) -> Sim {
        simulation::set_now(Some(START_MS));
        simulation::set_entropy(Some(StdRng::seed_from_u64(seed)));
        // On tmpfs where there is one: fsync is the cost of a commit, not what is tested.
        let dir = match std::path::Path::new("/dev/shm").is_dir() {
            true => tempfile::tempdir_in("/dev/shm").unwrap(),
            false => tempfile::tempdir().unwrap(),
        };
        let url = herd_testkit::database_url(dir.path());
        let key_path = dir.path().join("ledger.key");
        let app = open_app(&url, &key_path).await;
        let at = Timestamp(START_MS);
        let suppliers: Vec<Address> = (0..SUPPLIERS).map(|n| address(seed, 1, n)).collect();
        for supplier in &suppliers {
            app.store.register_account(supplier, &format!("key-of-{supplier}"), at).await.unwrap();
        }
        let customer = address(seed, 2, 0);
        app.store.register_account(&customer, &format!("key-of-{customer}"), at).await.unwrap();
        let deposit = Deposit { asset: herd_core::Asset::Usdc, amount: "100000".into(), id: Some("sim".into()) };
        let _ =
            crate::api::wallet::deposit(State(app.clone()), Caller(customer.clone()), Origin(None), ApiJson(deposit))
                .await
                .unwrap();
        let mut workers = Vec::with_capacity(WORKERS);
        for n in 0..WORKERS {
            let device = address(seed, 3, n);
            let hello = HelloPayload {
                floor_micros: Some(FLOOR_MICROS),
                ..crate::test_support::hello(&device, &suppliers[n % SUPPLIERS])
            };
            crate::test_support::admit(&app.store, &hello).await;
            workers.push(SimWorker { hello, link: Link::Crashed, last_beat: 0, tasks: BTreeMap::new() });
        }
        let mut sim = Sim {
            _dir: dir,
            url,
            key_path,
            app,
            workers,
            customer,
            clusters: Vec::new(),
            run_ms: HashMap::new(),
            transfers: Vec::new(),
            now_ms: START_MS,
            base: Instant::now(),
            ticks: TickState::default(),
        };
        for worker in 0..WORKERS {
            sim.connect(worker).await;
        }
        sim
    }

    fn instant(&self) -> Instant {
        self.base + Duration::from_millis((self.now_ms - START_MS) as u64)
    }

    /// The worker (re)connects the way the socket does: hello, then reconciliation.
    async fn connect(&mut self, worker: usize) {
        let at = self.instant();
        let app = self.app.clone();
        let state = &mut self.workers[worker];
        state.hello.tasks = state
            .tasks
            .iter()
            .map(|((job_id, attempt), task)| TaskReport {
                job_id: job_id.clone(),
                attempt: *attempt,
                exited: task.exit.clone(),
            })
            .collect();
        // Reported exits are forgotten once delivered, as the agent does.
        state.tasks.retain(|_, task| task.exit.is_none());
        let device = state.hello.device_key.clone();
        if app.store.device_hello(&state.hello, crate::app::now()).await.unwrap().is_err() {
            return;
        }
        app.sync_market(std::slice::from_ref(&device)).await;
        let (connection, outbox) = app.hub.attach(&device, at);
        state.link = Link::Up { connection, outbox };
        state.last_beat = self.now_ms;
        let hello = state.hello.clone();
        crate::worker_socket::connected(&app, &device, &hello).await;
        self.pump(worker).await;
    }

    /// The worker reads what the coordinator sent and answers as an agent does.
    async fn pump(&mut self, worker: usize) {
        loop {
            let message = match &mut self.workers[worker].link {
                Link::Up { outbox, .. } => outbox.try_recv(),
                _ => return,
            };
            let message = match message {
                Ok(message) => message,
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    // The coordinator dropped the connection: the agent dials again.
                    self.workers[worker].link = Link::Cut;
                    return Box::pin(self.connect(worker)).await;
                }
            };
            let device = self.workers[worker].hello.device_key.clone();
            match message {
                ServerMessage::StartTask(assignment) => {
                    let key = (assignment.job_id.clone(), assignment.attempt);
                    if self.workers[worker].tasks.contains_key(&key) {
                        continue;
                    }
                    let run_ms = i64::from(self.run_ms.get(&assignment.job_id).copied().unwrap_or(1_000));
                    self.workers[worker].tasks.insert(key, SimTask { ends_at: self.now_ms + run_ms, exit: None });
                    let started = WorkerMessage::TaskStarted { job_id: assignment.job_id, attempt: assignment.attempt };
                    crate::worker_socket::handle(&self.app, &device, started).await;
                }
                ServerMessage::StopTask { job_id, attempt } => {
                    let stopping: Vec<(JobId, u32)> = self.workers[worker]
                        .tasks
                        .keys()
                        .filter(|(job, a)| job == &job_id && attempt.is_none_or(|wanted| wanted == *a))
                        .cloned()
                        .collect();
                    for key in stopping {
                        self.exit(worker, key, None, Some("stopped")).await;
                    }
                }
                ServerMessage::StopCluster { cluster_id } => {
                    // The sim's tasks carry no cluster; the coordinator stops each task it
                    // still wants stopped, so ending them all here is what an agent does.
                    let _ = cluster_id;
                    let all: Vec<(JobId, u32)> = self.workers[worker].tasks.keys().cloned().collect();
                    for key in all {
                        self.exit(worker, key, None, Some("stopped: the lease ended")).await;
                    }
                }
                _ => {}
            }
        }
    }

    async fn exit(&mut self, worker: usize, key: (JobId, u32), code: Option<i32>, error: Option<&str>) {
        let device = self.workers[worker].hello.device_key.clone();
        self.workers[worker].tasks.remove(&key);
        let exited =
            WorkerMessage::TaskExited { job_id: key.0, attempt: key.1, exit_code: code, error: error.map(Into::into) };
        crate::worker_socket::handle(&self.app, &device, exited).await;
    }

    async fn advance(&mut self, ms: u32) {
        let end = self.now_ms + i64::from(ms);
        while self.now_ms < end {
            self.now_ms = (self.now_ms + TICK_MS).min(end);
            simulation::set_now(Some(self.now_ms));
            let at = self.instant();
            for worker in 0..self.workers.len() {
                let up = matches!(self.workers[worker].link, Link::Up { .. });
                let due: Vec<(JobId, u32)> = self.workers[worker]
                    .tasks
                    .iter()
                    .filter(|(_, t)| t.exit.is_none() && t.ends_at <= self.now_ms)
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in due {
                    if up {
                        self.exit(worker, key, Some(0), None).await;
                    } else if matches!(self.workers[worker].link, Link::Cut) {
                        let task = self.workers[worker].tasks.get_mut(&key).expect("listed");
                        task.exit = Some(TaskExit { exit_code: Some(0), error: None });
                    }
                }
                if up && self.now_ms - self.workers[worker].last_beat >= HEARTBEAT_MS {
                    let device = self.workers[worker].hello.device_key.clone();
                    self.app.hub.touch(&device, at);
                    self.app.hub.heartbeat(&device, Timestamp(self.now_ms), Default::default());
                    self.workers[worker].last_beat = self.now_ms;
                }
                self.pump(worker).await;
            }
            reconcile::tick(&self.app, at, &mut self.ticks).await;
            self.pump_all().await;
        }
    }

    async fn pump_all(&mut self) {
        for worker in 0..self.workers.len() {
            self.pump(worker).await;
        }
    }

    fn drop_link(&mut self, worker: usize, crashed: bool) {
        let device = self.workers[worker].hello.device_key.clone();
        if let Link::Up { connection, .. } = self.workers[worker].link {
            self.app.hub.detach(&device, connection);
        }
        if crashed {
            self.workers[worker].tasks.clear();
            self.workers[worker].link = Link::Crashed;
        } else if matches!(self.workers[worker].link, Link::Up { .. }) {
            self.workers[worker].link = Link::Cut;
        }
    }

    /// The coordinator is killed: nothing of it survives but its database. The new one
    /// watches every device the database says is online, and connected agents dial again.
    async fn restart_coordinator(&mut self) {
        self.app.store.close().await;
        self.app = open_app(&self.url, &self.key_path).await;
        self.ticks = TickState::default();
        let at = self.instant();
        for device in self.app.store.online_device_ids().await.unwrap() {
            self.app.hub.watch(&device, at);
        }
        self.app.store.abort_running_verifications(crate::app::now()).await.unwrap();
        for worker in 0..self.workers.len() {
            if matches!(self.workers[worker].link, Link::Up { .. }) {
                self.workers[worker].link = Link::Cut;
                self.connect(worker).await;
            }
        }
    }

    async fn apply(&mut self, step: &Step) {
        let (app, caller) = (self.app.clone(), Caller(self.customer.clone()));
        match *step {
            Step::Advance { ms } => self.advance(ms).await,
            Step::Crash { worker } => self.drop_link(worker, true),
            Step::Partition { worker } => self.drop_link(worker, false),
            Step::Reconnect { worker } => {
                if !matches!(self.workers[worker].link, Link::Up { .. }) {
                    self.connect(worker).await;
                }
            }
            Step::RestartCoordinator => self.restart_coordinator().await,
            Step::Lease { nodes } => {
                let request =
                    CreateCluster { nodes, hours: Some(2), kind: Some(ClusterKind::Plain), ..Default::default() };
                // No capacity is an answer, not a failure.
                if let Ok((_, cluster)) = crate::api::clusters::create(State(app), caller, ApiJson(request)).await {
                    self.clusters.push(cluster.0.id);
                }
                self.pump_all().await;
            }
            Step::Submit { cluster, max_retries, run_ms } => {
                let Some(id) = self.clusters.get(cluster % self.clusters.len().max(1)).cloned() else { return };
                let request = CreateJob { max_retries, ..CreateJob::new(id, vec!["simulated-work".into()]) };
                if let Ok((_, job)) = crate::api::jobs::create(State(app), caller, ApiJson(request)).await {
                    self.run_ms.insert(job.0.id, run_ms);
                }
                self.pump_all().await;
            }
            Step::Release { cluster } => {
                let Some(id) = self.clusters.get(cluster % self.clusters.len().max(1)).cloned() else { return };
                let query = crate::api::clusters::DeleteQuery { refund: None };
                let _ = crate::api::clusters::delete(State(app), caller, Path(id.to_string()), ApiQuery(query)).await;
                self.pump_all().await;
            }
        }
    }

    async fn world(&mut self) -> World {
        let (devices, clusters, tenures, jobs) = self.app.store.snapshot().await.unwrap();
        loop {
            let entries = self.app.store.journal(self.transfers.len() as u64, 1_000).await.unwrap();
            if entries.is_empty() {
                break;
            }
            self.transfers.extend(
                entries
                    .iter()
                    .map(|e| chaos::Transfer { id: e.entry.transfer.id.clone(), amount: e.entry.transfer.amount }),
            );
        }
        let mut transfers = self.transfers.clone();
        transfers.sort_by(|a, b| a.id.cmp(&b.id));
        let (balances, open_holds) = self
            .app
            .books
            .read(|books| {
                let mut balances: Vec<(String, String, i128)> = books
                    .ledger
                    .accounts()
                    .map(|((key, asset), account)| (account_name(key), asset.as_str().to_owned(), account.balance()))
                    .collect();
                balances.sort();
                let mut holds: Vec<String> = books.ledger.open_pending().map(|t| t.id.clone()).collect();
                holds.sort();
                (balances, holds)
            })
            .await;
        World { now_ms: self.now_ms, devices, clusters, tenures, jobs, transfers, balances, open_holds }
    }
}

fn account_name(key: &herd_ledger::AccountKey) -> String {
    match key {
        herd_ledger::AccountKey::Escrow(cluster) => format!("escrow:{cluster}"),
        other => serde_json::to_string(other).expect("account keys serialise"),
    }
}

/// Runs one seed; the final world, or the first broken invariant with its step.
async fn run(seed: u64) -> Result<World, String> {
    let mut sim = Sim::start(seed).await;
    let steps = chaos::schedule(seed, WORKERS, STEPS);
    for (index, step) in steps.iter().enumerate() {
        sim.apply(step).await;
        chaos::check(&sim.world().await).map_err(|broken| format!("step {index} ({step:?}): {broken}"))?;
    }
    // Everyone comes back, every lease ends: every job is finished and every lease settled.
    for worker in 0..WORKERS {
        sim.apply(&Step::Reconnect { worker }).await;
    }
    for cluster in 0..sim.clusters.len() {
        sim.apply(&Step::Release { cluster }).await;
    }
    sim.advance(5_000).await;
    let world = sim.world().await;
    chaos::check(&world).map_err(|broken| format!("after the end: {broken}"))?;
    if let Some(job) = world.jobs.iter().find(|j| !matches!(j.state.as_str(), "succeeded" | "failed" | "stopped")) {
        return Err(format!("after the end: job {} is still {}", job.id, job.state));
    }
    simulation::set_now(None);
    simulation::set_entropy(None);
    Ok(world)
}

#[tokio::test(flavor = "current_thread")]
async fn the_network_heals_under_seeded_faults_and_every_invariant_holds() {
    let seeds: Vec<u64> = match std::env::var("HERD_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("HERD_SIM_SEED is a number")],
        Err(_) => SEEDS.collect(),
    };
    let mut summaries = Vec::new();
    let mut first = None;
    for &seed in &seeds {
        let world = match run(seed).await {
            Ok(world) => world,
            Err(broken) => panic!("seed {seed} broke an invariant at {broken}\nreplay: HERD_SIM_SEED={seed} cargo test -p herd-coordinator the_network_heals"),
        };
        let ended_at = |id: &str| world.clusters.iter().find(|c| c.id == id).and_then(|c| c.ended_ms);
        let replaced =
            world.tenures.iter().filter(|t| t.left_ms.is_some() && t.left_ms != ended_at(&t.cluster)).count();
        let retried = world.jobs.iter().filter(|j| j.attempt > 1).count();
        summaries.push(format!(
            "seed {seed}: {} clusters, {} tenures ({replaced} lost and replaced), {} jobs ({retried} retried), {} transfers",
            world.clusters.len(),
            world.tenures.len(),
            world.jobs.len(),
            world.transfers.len()
        ));
        first.get_or_insert(world);
    }
    eprintln!("{}", summaries.join("\n"));
    // The same seed replays exactly.
    let again = run(seeds[0]).await.unwrap();
    assert!(first.as_ref() == Some(&again), "seed {} did not replay exactly", seeds[0]);
}
