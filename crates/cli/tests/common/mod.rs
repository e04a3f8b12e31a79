//! Shared fixtures: a coordinator on a temp SQLite file (or, with HERD_TEST_DB=postgres, a
//! PostgreSQL schema of its own) and loopback port, real worker agents
//! in-process, and accounts signed in with real keys.

#![allow(dead_code)]

pub mod customer;
pub mod docker;
pub mod fake_lan;
pub mod install;
pub mod netns;
pub mod raw_worker;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use herd_cli::client::Client;
use herd_cli::credentials::sign_in;
use herd_coordinator::{CoordinatorConfig, RunningCoordinator};
use herd_core::{Address, CpuSpec, DeviceSpec, DeviceState, GpuSpec, GpuVendor};
use herd_proto::worker::Throughput;
use herd_worker::AgentConfig;
use rand::rngs::OsRng;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const HEARTBEAT: Duration = Duration::from_millis(200);

pub fn test_config(db: &Path, listen: SocketAddr) -> CoordinatorConfig {
    // `db` names a SQLite file; on a PostgreSQL run (HERD_TEST_DB=postgres) it names the
    // test's schema, and the keys live beside where the file would be.
    let mut config = CoordinatorConfig::new(herd_testkit::database_url_for_file(db), listen);
    if herd_testkit::backend() == herd_testkit::TestBackend::Postgres {
        config.key_dir = db.parent().map(|dir| dir.join("keys"));
    }
    config.heartbeat_interval = HEARTBEAT;
    config.reconcile_interval = Duration::from_millis(50);
    config.faucet = true;
    config.proof.simulated_allowed = true;
    config.proof.policy.target_ms = 50;
    config.proof.policy.vram_target_ms = 50;
    config.proof.policy.allowance_ms = 1_000;
    config.proof.retry_after = Duration::from_millis(100);
    config
}

/// The ledger key of the coordinator on `db` (the operator's key in these tests).
pub fn ledger_key_path(db: &Path) -> std::path::PathBuf {
    test_config(db, loopback()).ledger_key_path().expect("a test database has a ledger key file")
}

/// Runs `sql` on the test database `db` behind the coordinator's back (tampering, moving
/// time), on whichever backend the run uses.
pub async fn run_sql_behind_its_back(db: &Path, sql: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&herd_testkit::database_url_for_file(db)).await.unwrap();
    sqlx::raw_sql(sql).execute(&pool).await.unwrap();
    pool.close().await;
}

pub async fn start_coordinator(db: &Path, listen: SocketAddr) -> RunningCoordinator {
    herd_coordinator::start(test_config(db, listen)).await.expect("coordinator starts")
}

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A new account, registered with a fresh key; returns the key and an authenticated client.
pub async fn new_account(url: &str) -> (SigningKey, Client) {
    let key = SigningKey::generate(&mut OsRng);
    let anonymous = Client::new(url, None);
    let (credential, registered) = sign_in(&anonymous, &key).await.expect("sign in");
    assert!(registered);
    let client = anonymous.with_api_key(credential.api_key);
    // Fund it from the devnet faucet (networks without one refuse; that is fine here).
    let funds = herd_proto::api::Deposit { asset: herd_core::Asset::Usdc, amount: "10000".into(), id: None };
    let _ = client.deposit(&funds).await;
    (key, client)
}

pub struct Worker {
    pub stop: watch::Sender<bool>,
    pub handle: JoinHandle<Result<(), herd_worker::AgentError>>,
}

impl Worker {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.handle.await.unwrap().unwrap();
    }
}

/// A real worker agent (detected hardware, process runtime), endorsed by its owner's key,
/// with fast reconnects.
/// Where the tests' workers keep Ray's managed Python environment: shared by every test and
/// every run, so Ray is installed (by the worker itself) once per build directory.
pub fn shared_ray_envs() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ray-envs")
}

pub fn start_worker(url: &str, data_dir: &Path, owner: &SigningKey) -> Worker {
    start_agent(AgentConfig::owned_by(url, data_dir.to_path_buf(), owner, "US"))
}

pub fn start_agent(mut config: AgentConfig) -> Worker {
    config.backoff_initial = Duration::from_millis(50);
    config.backoff_max = Duration::from_millis(300);
    let (stop, stop_rx) = watch::channel(false);
    Worker { stop, handle: tokio::spawn(herd_worker::run(config, stop_rx)) }
}

/// Polls `check` until it returns Some, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until `count` devices of `owner` are in `state`.
pub async fn devices_in_state(url: &str, owner: &Address, state: DeviceState, count: usize) {
    let client = Client::new(url, None);
    let query = format!("owner={owner}");
    eventually(&format!("{count} device(s) {state}"), Duration::from_secs(20), || async {
        let devices = client.devices(&query).await.ok()?;
        (devices.iter().filter(|d| d.state == state).count() == count).then_some(())
    })
    .await
}

/// A coordinator on a temp database and loopback port, a supplier account, and `workers`
/// real worker agents owned by it, all ready.
pub struct TestNetwork {
    pub dir: tempfile::TempDir,
    pub coordinator: RunningCoordinator,
    pub url: String,
    pub supplier: Address,
    /// Signed in as the supplier.
    pub supplier_client: Client,
    pub supplier_key: SigningKey,
    pub workers: Vec<Worker>,
}

impl TestNetwork {
    pub async fn start(workers: usize) -> TestNetwork {
        TestNetwork::start_with(workers, |_| {}).await
    }

    /// As `start`, with the coordinator's configuration adjusted first.
    pub async fn start_with(workers: usize, adjust: impl FnOnce(&mut CoordinatorConfig)) -> TestNetwork {
        TestNetwork::start_configured(workers, adjust, |_| {}).await
    }

    /// As `start`, with the coordinator's and each worker's configuration adjusted first.
    pub async fn start_configured(
        workers: usize,
        adjust: impl FnOnce(&mut CoordinatorConfig),
        adjust_agent: impl Fn(&mut AgentConfig),
    ) -> TestNetwork {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(&dir.path().join("herd.db"), loopback());
        adjust(&mut config);
        let coordinator = herd_coordinator::start(config).await.expect("coordinator starts");
        let url = coordinator.url();
        let (supplier_key, supplier_client) = new_account(&url).await;
        let supplier = herd_worker::keys::address_of(&supplier_key);
        let workers: Vec<Worker> = (0..workers)
            .map(|i| {
                let mut agent = AgentConfig::owned_by(&url, dir.path().join(format!("w{i}")), &supplier_key, "US");
                adjust_agent(&mut agent);
                start_agent(agent)
            })
            .collect();
        devices_in_state(&url, &supplier, DeviceState::Ready, workers.len()).await;
        TestNetwork { dir, coordinator, url, supplier, supplier_client, supplier_key, workers }
    }

    pub async fn stop(self) {
        for worker in self.workers {
            worker.stop().await;
        }
        self.coordinator.shutdown().await;
    }
}

/// Every GPU in a test gets its own UUID: one UUID on two devices flags both.
static UUID_SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn spec(gpu: Option<&str>, gpus: usize) -> DeviceSpec {
    DeviceSpec {
        hostname: "rig".into(),
        os: "Linux".into(),
        arch: "x86_64".into(),
        cpu: CpuSpec { model: "EPYC".into(), physical_cores: 16, logical_cores: 32 },
        memory_bytes: 256 << 30,
        disk_bytes: 2 << 40,
        gpus: (0..gpus)
            .map(|i| GpuSpec {
                vendor: GpuVendor::Nvidia,
                name: gpu.unwrap_or_default().into(),
                uuid: format!("GPU-{}-{i}", UUID_SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
                vram_bytes: 80 << 30,
                driver_version: None,
                cuda_version: None,
            })
            .collect(),
    }
}

/// A simulated GPU machine (it runs tasks for real, as local processes).
pub fn rig(
    network: &TestNetwork,
    owner: &SigningKey,
    name: &str,
    gpu: &str,
    gpus: usize,
    country: &str,
    mbps: (u32, u32),
) -> Worker {
    let mut config = AgentConfig::owned_by(&network.url, network.dir.path().join(name), owner, country);
    config.simulated = Some(spec(Some(gpu), gpus));
    config.throughput = Some(Throughput { down_mbps: mbps.0, up_mbps: mbps.1 });
    config.advertise_addr = Some("127.0.0.1".into());
    start_agent(config)
}

/// Processes whose HOME is `dir` or under it (an agent's Ray nodes: `DATA/ray-nodes`; its
/// tasks: `DATA/jobs`): pid and command line.
pub fn processes_with_home(dir: &Path) -> Vec<(u32, String)> {
    let exact = format!("HOME={}", dir.display());
    let under = format!("{exact}/");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        if environ.split(|b| *b == 0).any(|var| var == exact.as_bytes() || var.starts_with(under.as_bytes())) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    found
}

/// A worker agent as its own `herd worker start` process, paired to a supplier account of
/// its own, so it can die for real (SIGKILL) and each device's earnings are its supplier's.
pub struct WorkerProcess {
    pub supplier: Address,
    pub device: Address,
    pub data_dir: std::path::PathBuf,
    pub process: std::process::Child,
}

impl WorkerProcess {
    /// Starts the agent (process runtime) with `args` added; returns once its device is ready.
    pub async fn start(network: &TestNetwork, name: &str, args: &[&str]) -> WorkerProcess {
        let (key, client) = new_account(&network.url).await;
        let supplier = herd_keys::address_of(&key);
        let code = client.pairing_code().await.unwrap();
        let data_dir = network.dir.path().join(name);
        let process = std::process::Command::new(env!("CARGO_BIN_EXE_herd"))
            .args(["worker", "start", "--coordinator", &network.url, "--runtime", "process", "--owner"])
            .arg(supplier.as_str())
            .args(["--pairing-code", &code.code, "--advertise-addr", "127.0.0.1"])
            .args(args)
            .arg("--data-dir")
            .arg(&data_dir)
            .env("HERD_CONFIG_DIR", network.dir.path().join("config"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        devices_in_state(&network.url, &supplier, DeviceState::Ready, 1).await;
        let device = Client::new(&network.url, None).devices(&format!("owner={supplier}")).await.unwrap()[0].id.clone();
        WorkerProcess { supplier, device, data_dir, process }
    }

    /// The machine dies: SIGKILL to the agent and to every process it started with HOME
    /// under its data directory (what a power cut does to a machine). Its Ray node must go
    /// with the agent by itself: the test fails if the node outlives it.
    pub fn kill_machine(&mut self) {
        self.process.kill().unwrap();
        self.process.wait().unwrap();
        let ray = self.data_dir.join("ray-nodes");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            // Ray's own processes: `ray start` and its guard, GCS, raylet, its agents and
            // workers (all run from Ray's package). A Ray job's driver runs in a session of
            // its own, as Ray starts it, and goes with the rest of the machine below.
            let left: Vec<_> = processes_with_home(&ray)
                .into_iter()
                .filter(|(_, c)| c.contains("site-packages/ray/") || c.contains("/bin/ray start"))
                .collect();
            if left.is_empty() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the killed agent's Ray node kept running: {left:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        for (pid, _) in processes_with_home(&self.data_dir) {
            let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Follows a job's log to its end (at most `timeout`): the job as it ended and the text of
/// every line, in order.
pub async fn follow_to_end(
    customer: &Client,
    job: &herd_core::JobId,
    timeout: Duration,
) -> (herd_proto::api::Job, Vec<String>) {
    let mut lines = Vec::new();
    let finished = tokio::time::timeout(
        timeout,
        customer.stream_logs(job.as_str(), true, 0, |event| {
            if let herd_proto::api::LogEvent::Line(line) = event {
                lines.push(line.text.clone());
            }
        }),
    )
    .await
    .expect("the job ends in time")
    .unwrap()
    .expect("the stream ends with the job");
    (finished, lines)
}

/// Waits (up to 10 s) until something accepts TCP connections at `addr`.
pub fn wait_until_serving(addr: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(std::time::Instant::now() < deadline, "nothing serves {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
