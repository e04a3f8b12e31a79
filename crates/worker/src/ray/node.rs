//! Supervising one Ray node: provision its Python environment, run `ray start --block` in
//! its own process group, tell the coordinator when it is up, restart it (with backoff, a
//! bounded number of times) when it dies, and stop it — the whole process group — on request.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use herd_core::RayNodeState;
use herd_proto::worker::{RayNodeAssignment, RayNodeReport, WorkerMessage};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch, Notify};

use super::command::{start_args, Ports};
use super::dirs::{LeaseTemp, NodeDirs};
use super::env::PythonEnvs;
use crate::runtime::docker::{RayContainerSpec, CONTAINER_SOCKETS_DIR};
use crate::runtime::DockerRuntime;

/// How long a node may take from `ray start` to ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Restarts after crashes before the node is left failed (the coordinator then sees it).
pub const RESTARTS_MAX: u32 = 5;
const RESTART_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long a stopped node waits for its killed processes to be gone before it removes the
/// lease's temp dir (the last node of the lease on the machine removes it).
const LEASE_TEMP_PATIENCE: Duration = Duration::from_secs(5);
/// Output lines kept to explain a failure, and bytes kept of each.
const TAIL_LINES: usize = 20;
const TAIL_LINE_BYTES: usize = 400;
/// What `ray start` prints once the node has registered with the cluster.
const STARTED_LINE: &str = "Ray runtime started";

/// What the agent gives every node it supervises.
pub struct Context {
    pub envs: PythonEnvs,
    pub events: mpsc::Sender<WorkerMessage>,
    /// Every node's own directory goes under this one (`NAME/home` and `NAME/tmp` are its
    /// processes' HOME and TMPDIR; Ray's own temp dir is the lease's, see `dirs`): kept apart
    /// from the supplier's own files, and found again by the next start of the agent when
    /// this one was killed.
    pub nodes_dir: PathBuf,
    /// The supplier's environment variables Ray may see (proxies, CA bundles, pip's settings,
    /// which runtime_env `pip` installs need); everything else is withheld.
    pub passed_env: Vec<(OsString, OsString)>,
    /// What Ray is offered at most, whatever the lease says: a simulated device's claimed
    /// hardware does not exist, and Ray told of 128 CPUs or 512 GiB on a small machine starts
    /// a worker process per CPU and schedules work into memory that is not there.
    pub offer_max: Option<OfferMax>,
    /// Set on docker-runtime workers: nodes run in containers of the Ray image.
    pub docker: Option<Arc<DockerRuntime>>,
}

/// The real machine's size, for capping what a simulated device offers Ray.
#[derive(Debug, Clone, Copy)]
pub struct OfferMax {
    pub cpus: u32,
    pub memory_bytes: u64,
}

impl OfferMax {
    /// Ray's own default share of memory for the object store.
    const OBJECT_STORE_SHARE_PERCENT: u64 = 30;

    fn cap(&self, node: &mut RayNodeAssignment) {
        let r = &mut node.resources;
        r.num_cpus = r.num_cpus.min(self.cpus);
        r.memory_bytes = r.memory_bytes.min(self.memory_bytes);
        r.object_store_bytes =
            r.object_store_bytes.min(self.memory_bytes / 100 * Self::OBJECT_STORE_SHARE_PERCENT).min(r.memory_bytes);
        node.limits.cpu_millis = node.limits.cpu_millis.min(self.cpus * 1000);
        node.limits.memory_bytes = node.limits.memory_bytes.min(self.memory_bytes);
    }
}

/// The image a docker-runtime node runs, tagged with the Ray version
/// (`deploy/images/build.sh ray VERSION` builds it).
pub const RAY_IMAGE_REPOSITORY: &str = "herd/ray";

impl Context {
    pub fn passed_env_from_host() -> Vec<(OsString, OsString)> {
        const NAMES: &[&str] = &[
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
            "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "NO_PROXY",
            "http_proxy",
            "https_proxy",
            "no_proxy",
        ];
        std::env::vars_os()
            .filter(|(name, _)| {
                let name = name.to_string_lossy();
                NAMES.contains(&name.as_ref()) || name.starts_with("PIP_")
            })
            .collect()
    }
}

/// The node's state as last reported.
#[derive(Debug, Clone)]
pub struct Status {
    pub state: RayNodeState,
    pub detail: Option<String>,
    pub gcs_address: Option<String>,
    pub dashboard_port: Option<u16>,
    pub restarts: u32,
}

pub type SharedStatus = Arc<Mutex<Status>>;

pub fn report(node: &RayNodeAssignment, status: &Status) -> RayNodeReport {
    RayNodeReport {
        cluster_id: node.cluster_id.clone(),
        state: status.state,
        detail: status.detail.clone(),
        gcs_address: status.gcs_address.clone(),
        head_address: node.head_address.clone(),
        restarts: status.restarts,
        epoch: node.epoch,
    }
}

async fn set(ctx: &Context, node: &RayNodeAssignment, shared: &SharedStatus, change: impl FnOnce(&mut Status)) {
    let snapshot = {
        let mut status = shared.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut status);
        status.clone()
    };
    let _ = ctx.events.send(WorkerMessage::RayNode(report(node, &snapshot))).await;
}

enum Ended {
    Stopped,
    Crashed(String),
}

/// Runs the node until stopped, restarting it after crashes.
pub async fn supervise(
    ctx: Arc<Context>,
    node: RayNodeAssignment,
    node_ip: String,
    shared: SharedStatus,
    mut stop: watch::Receiver<bool>,
) {
    let bin = if ctx.docker.is_some() {
        // The image carries Ray; `launch` checks it is there.
        Ok(PathBuf::new())
    } else {
        let installing = format!("installing Ray {} (first use on this device)", node.version);
        set(&ctx, &node, &shared, |s| s.detail = Some(installing)).await;
        tokio::select! {
            bin = ctx.envs.ensure(&node.version) => bin,
            _ = stopped(&mut stop) => return,
        }
    };
    let bin = match bin {
        Ok(bin) => bin,
        Err(error) => {
            tracing::error!(cluster = %node.cluster_id, %error, "cannot provision Ray");
            set(&ctx, &node, &shared, |s| (s.state, s.detail) = (RayNodeState::Failed, Some(error))).await;
            return;
        }
    };
    let mut backoff = RESTART_BACKOFF_INITIAL;
    loop {
        match run_once(&ctx, &node, &node_ip, &bin, &shared, &mut stop).await {
            Ended::Stopped => {
                set(&ctx, &node, &shared, |s| {
                    (s.state, s.detail, s.gcs_address, s.dashboard_port) = (RayNodeState::Stopped, None, None, None)
                })
                .await;
                // Reported first: the clean-up may wait a moment for the killed processes.
                NodeDirs::remove(&ctx.nodes_dir, &node);
                let cluster = node.cluster_id.clone();
                let _ =
                    tokio::task::spawn_blocking(move || LeaseTemp::remove_unused(&cluster, LEASE_TEMP_PATIENCE)).await;
                return;
            }
            Ended::Crashed(detail) => {
                let restarts = shared.lock().unwrap_or_else(|p| p.into_inner()).restarts;
                tracing::warn!(cluster = %node.cluster_id, restarts, %detail, "Ray node ended");
                let give_up = restarts >= RESTARTS_MAX;
                set(&ctx, &node, &shared, |s| {
                    s.state = RayNodeState::Failed;
                    s.detail =
                        Some(if give_up { format!("{detail} (gave up after {restarts} restarts)") } else { detail });
                    (s.gcs_address, s.dashboard_port) = (None, None);
                })
                .await;
                if give_up {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopped(&mut stop) => return,
                }
                backoff = backoff.saturating_mul(2);
                set(&ctx, &node, &shared, |s| (s.state, s.restarts) = (RayNodeState::Starting, s.restarts + 1)).await;
            }
        }
    }
}

/// Where a node's Ray runs.
enum Launched {
    Process { child: Child, group: Option<Pid> },
    Container { docker: Arc<DockerRuntime>, id: String },
}

impl Launched {
    /// Waits for the node to end on its own; how it ended. Nothing of it is left running.
    async fn ended(&mut self) -> String {
        match self {
            Launched::Process { child, group } => {
                let status = child.wait().await;
                // `--block` exits when any Ray process of the node dies; end the rest with it.
                signal(group.take(), Signal::SIGKILL);
                describe(status)
            }
            Launched::Container { docker, id } => {
                let how = docker.wait_ray_node(id).await;
                docker.stop_ray_node(id).await;
                how
            }
        }
    }

    /// Stops the node: SIGTERM (Ray shuts down cleanly), SIGKILL after the grace.
    async fn stop(&mut self) {
        match self {
            Launched::Process { child, group } => kill(group.take(), child).await,
            Launched::Container { docker, id } => docker.stop_ray_node(id).await,
        }
    }
}

/// A node dropped without `ended` or `stop` (its agent's runtime shut down under it, as at
/// the end of an in-process test) takes its whole process group with it: the child's
/// kill-on-drop reaches only the guard, and `ray start` and its services were left running,
/// re-parented to init. The group id cannot have been reused: its leader is not yet reaped.
impl Drop for Launched {
    fn drop(&mut self) {
        if let Launched::Process { group: Some(group), .. } = self {
            let _ = killpg(*group, Signal::SIGKILL);
        }
    }
}

async fn launch(
    ctx: &Context,
    node: &RayNodeAssignment,
    node_ip: &str,
    bin: &Path,
    ports: &Ports,
    tail: &Tail,
    started: &Arc<Notify>,
) -> Result<(Launched, Option<RemoveOnDrop>), String> {
    let mut offered = node.clone();
    if let Some(max) = &ctx.offer_max {
        max.cap(&mut offered);
    }
    if let Some(docker) = &ctx.docker {
        let args = start_args(&offered, node_ip, ports, Path::new(CONTAINER_SOCKETS_DIR));
        let mut env: Vec<String> =
            ctx.passed_env.iter().map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy())).collect();
        env.extend(["HOME=/tmp".into(), "LANG=C.UTF-8".into(), "RAY_USAGE_STATS_ENABLED=0".into()]);
        let image = format!("{RAY_IMAGE_REPOSITORY}:{}", node.version);
        let spec = RayContainerSpec {
            cluster: &node.cluster_id,
            image: &image,
            args,
            env,
            limits: &offered.limits,
            object_store_bytes: offered.resources.object_store_bytes,
        };
        let id = docker.start_ray_node(&spec).await?;
        let output = docker.ray_node_output(&id);
        let (tail, started) = (tail.clone(), started.clone());
        tokio::spawn(async move {
            futures_util::pin_mut!(output);
            while let Some(chunk) = output.next().await {
                for line in chunk.lines() {
                    record(line.to_owned(), &tail, &started);
                }
            }
        });
        return Ok((Launched::Container { docker: docker.clone(), id }, None));
    }
    let dirs = NodeDirs::create(&ctx.nodes_dir, node)?;
    let mut path = OsString::from(bin);
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()));
    // Short (unix socket paths are limited to 107 bytes) and private to this run.
    let sockets = std::env::temp_dir().join(format!("herd-ray-{:016x}", rand::random::<u64>()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&sockets)
        .map_err(|e| format!("cannot create {}: {e}", sockets.display()))?;
    let sockets_guard = RemoveOnDrop(sockets.clone());
    let (program, leading) = dying_with_the_agent(&bin.join("ray"));
    let mut command = Command::new(program);
    command
        .args(leading)
        .args(start_args(&offered, node_ip, ports, &sockets))
        .env_clear()
        .envs(ctx.passed_env.iter().cloned())
        .env("PATH", path)
        .env("HOME", &dirs.home)
        .env("TMPDIR", &dirs.tmp)
        .env("LANG", "C.UTF-8")
        .env("RAY_USAGE_STATS_ENABLED", "0")
        .current_dir(&dirs.home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // Ray's default temp dir, /tmp/ray, is shared by every Ray on the machine: its
    // `ray_current_cluster` file names whichever head started last, and drivers and job
    // supervisors that read it joined another customer's cluster. Each lease has its own
    // (worker nodes take the head's from the cluster), and every process of the node is
    // told its own cluster's address.
    match &node.head_address {
        None => {
            let temp = LeaseTemp::create(&node.cluster_id, node.epoch)?;
            command.arg("--temp-dir").arg(temp.ray_dir()).env("RAY_TMPDIR", temp.path());
            command.env("RAY_ADDRESS", format!("{node_ip}:{}", ports.gcs));
        }
        Some(head) => {
            LeaseTemp::prepare_parent()?;
            command.env("RAY_ADDRESS", head);
        }
    }
    let mut child = command.spawn().map_err(|e| format!("cannot run {}: {e}", bin.join("ray").display()))?;
    let group = child.id().map(|pid| Pid::from_raw(pid as i32));
    tokio::spawn(follow(child.stdout.take(), tail.clone(), started.clone()));
    tokio::spawn(follow(child.stderr.take(), tail.clone(), started.clone()));
    Ok((Launched::Process { child, group }, Some(sockets_guard)))
}

type Tail = Arc<Mutex<VecDeque<String>>>;

async fn run_once(
    ctx: &Context,
    node: &RayNodeAssignment,
    node_ip: &str,
    bin: &Path,
    shared: &SharedStatus,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let ports = match Ports::pick() {
        Ok(ports) => ports,
        Err(error) => return Ended::Crashed(format!("no free ports: {error}")),
    };
    let is_head = node.head_address.is_none();
    let tail: Tail = Arc::new(Mutex::new(VecDeque::new()));
    let started = Arc::new(Notify::new());
    let (mut launched, _sockets) = match launch(ctx, node, node_ip, bin, &ports, &tail, &started).await {
        Ok(launched) => launched,
        Err(error) => return Ended::Crashed(error),
    };
    let crashed = |what: String| {
        let lines: Vec<String> = tail.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        Ended::Crashed(if lines.is_empty() { what } else { format!("{what}: {}", lines.join(" | ")) })
    };
    let ready = async {
        if is_head {
            wait_for_dashboard(ports.dashboard).await
        } else {
            started.notified().await
        }
    };
    tokio::select! {
        outcome = tokio::time::timeout(READY_TIMEOUT, ready) => {
            if outcome.is_err() {
                launched.stop().await;
                return crashed(format!("not ready within {} s", READY_TIMEOUT.as_secs()));
            }
        }
        how = launched.ended() => return crashed(format!("ray start exited ({how})")),
        _ = stopped(stop) => {
            launched.stop().await;
            return Ended::Stopped;
        }
    }
    let gcs_address = is_head.then(|| format!("{node_ip}:{}", ports.gcs));
    tracing::info!(cluster = %node.cluster_id, head = is_head, gcs = ?gcs_address, "Ray node running");
    set(ctx, node, shared, |s| {
        s.state = RayNodeState::Running;
        s.detail = None;
        s.gcs_address = gcs_address;
        s.dashboard_port = is_head.then_some(ports.dashboard);
    })
    .await;
    tokio::select! {
        how = launched.ended() => crashed(format!("ray exited ({how})")),
        _ = stopped(stop) => {
            launched.stop().await;
            Ended::Stopped
        }
    }
}

/// Resolves once a stop is asked for (without holding the watch's lock across awaits).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// `util-linux`'s `setpriv`, which every Debian-like system has: it sets the parent-death
/// signal and execs the command (the workspace forbids the `unsafe` a `pre_exec` would need).
const SETPRIV: &str = "/usr/bin/setpriv";

/// The guard between the agent and `ray start --block`, leader of the node's process group:
/// on SIGHUP (the agent died: `setpriv --pdeathsig HUP`) it kills the whole group at once;
/// on SIGTERM (the agent stops the node) it passes the signal on and waits for Ray's clean
/// shutdown; otherwise it exits with Ray's status.
const GUARD_SCRIPT: &str = r#""$@" & pid=$!
trap 'kill -KILL 0' HUP
trap 'kill -TERM "$pid" 2>/dev/null' TERM
wait "$pid"; status=$?
while kill -0 "$pid" 2>/dev/null; do wait "$pid"; status=$?; done
exit "$status""#;

/// The program and leading arguments that run `program` so that the node dies with the
/// agent, however the agent dies: a `kill -9`'d agent used to leave its Ray node joined to the
/// cluster, where it kept running the customer's work after its rank went to another device.
/// `ray start --block` alone is not enough to watch: the raylet's own children (dashboard and
/// runtime-env agents) outlive it, so the guard kills the node's whole process group. Where
/// `setpriv` is missing the agent's next start still kills what was left under its nodes
/// directory.
fn dying_with_the_agent(program: &Path) -> (PathBuf, Vec<OsString>) {
    let guarded: Vec<OsString> = vec!["sh".into(), "-c".into(), GUARD_SCRIPT.into(), "sh".into(), program.into()];
    if Path::new(SETPRIV).exists() {
        let mut args: Vec<OsString> = vec!["--pdeathsig".into(), "HUP".into(), "--".into()];
        args.extend(guarded);
        (PathBuf::from(SETPRIV), args)
    } else {
        (PathBuf::from("sh"), guarded[1..].to_vec())
    }
}

/// Removes a run's socket directory when the run ends, however it ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(error) => format!("lost track of it: {error}"),
    }
}

/// The dashboard answers once the head is usable (GCS, raylet and the job API are up).
async fn wait_for_dashboard(port: u16) {
    let client = super::http_client();
    let url = format!("http://127.0.0.1:{port}/api/version");
    loop {
        let answered = client.get(&url).timeout(Duration::from_secs(2)).send().await;
        if answered.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn follow(pipe: Option<impl AsyncRead + Unpin>, tail: Tail, started: Arc<Notify>) {
    let Some(pipe) = pipe else { return };
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        record(line, &tail, &started);
    }
}

/// Keeps the last lines of a node's output (to explain a failure) and notices the line that
/// says it has joined.
fn record(mut line: String, tail: &Tail, started: &Notify) {
    tracing::debug!(target: "herd_worker::ray::output", "{line}");
    if line.contains(STARTED_LINE) {
        started.notify_one();
    }
    if line.trim().is_empty() {
        return;
    }
    if line.len() > TAIL_LINE_BYTES {
        let mut cut = TAIL_LINE_BYTES;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
    }
    let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
    if tail.len() == TAIL_LINES {
        tail.pop_front();
    }
    tail.push_back(line);
}

fn signal(group: Option<Pid>, signal: Signal) {
    if let Some(group) = group {
        // ESRCH (already gone) is the expected end of a race with a normal exit.
        let _ = killpg(group, signal);
    }
}

/// SIGTERM to the node's process group (Ray shuts down cleanly), SIGKILL after the grace.
async fn kill(group: Option<Pid>, child: &mut tokio::process::Child) {
    signal(group, Signal::SIGTERM);
    if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
        tracing::warn!("Ray node did not stop within the grace period; killing it");
    }
    signal(group, Signal::SIGKILL);
    let _ = child.wait().await;
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use herd_core::ray::RayResources;
    use herd_core::ClusterId;

    use super::*;

    #[test]
    fn a_simulated_claim_is_offered_to_ray_at_most_at_the_real_machines_size() {
        let mut node = RayNodeAssignment {
            cluster_id: ClusterId::from_entropy([1; 8]),
            rank: 0,
            version: "2.40.0".into(),
            head_address: None,
            resources: RayResources {
                num_cpus: 128,
                num_gpus: 8,
                memory_bytes: 512 << 30,
                object_store_bytes: 150 << 30,
                custom: BTreeMap::new(),
            },
            limits: herd_core::TaskLimits {
                cpu_millis: 128_000,
                memory_bytes: 512 << 30,
                pids_max: 512,
                gpu_uuids: vec![],
                disk_bytes: 1 << 40,
            },
            epoch: 1,
            node_ip: None,
        };
        OfferMax { cpus: 2, memory_bytes: 23 << 30 }.cap(&mut node);
        let r = &node.resources;
        assert_eq!((r.num_cpus, r.memory_bytes), (2, 23 << 30));
        assert!(r.object_store_bytes <= (23u64 << 30) * 3 / 10, "{}", r.object_store_bytes);
        assert_eq!((node.limits.cpu_millis, node.limits.memory_bytes), (2000, 23 << 30));
        assert_eq!(r.num_gpus, 8, "simulated GPUs stay (Ray only counts them)");
    }
}
