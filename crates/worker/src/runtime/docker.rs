//! The docker runtime: every task is a container, created through the engine API (bollard),
//! isolated by default and labelled so the agent only ever touches what it created.
//!
//! Isolation, in the order an attacker would meet it: no privileged mode; every capability
//! dropped; the engine's default seccomp profile; `no-new-privileges`; an unprivileged user;
//! a read-only root file system with a private `/tmp`; memory (no swap), CPU and process
//! limits from the lease; a bridge network per lease on this host; and exactly one host
//! mount, the task's working directory at `/work`. GPUs are passed through by UUID, only the
//! leased ones.

use std::collections::HashMap;
use std::path::Path;

use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig, Mount, MountType, NetworkCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ImportImageOptions, ListContainersOptions, ListNetworksOptions,
    LogsOptions, RemoveContainerOptions, StopContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use herd_core::{Address, ClusterId, JobId, TaskLimits};
use herd_proto::api::Stream;
use herd_proto::worker::{TaskAssignment, TaskExit, WorkerMessage};
use tokio::sync::{mpsc, watch, Mutex};

use super::output::{LineSplitter, OutputSink};
use super::{failed, task_env, TaskKey, OUTPUT_DRAIN_MAX, STOP_GRACE};

/// Every object herd creates carries these labels; nothing without them is ever touched.
pub const LABEL_MANAGED: &str = "io.herd.managed";
pub const LABEL_DEVICE: &str = "io.herd.device";
pub const LABEL_CLUSTER: &str = "io.herd.cluster";
pub const LABEL_JOB: &str = "io.herd.job";
pub const LABEL_RANK: &str = "io.herd.rank";
pub const LABEL_ATTEMPT: &str = "io.herd.attempt";

/// A lease's working area when the coordinator names no size (it predates sizes).
const DEFAULT_AREA_BYTES: u64 = 10 << 30;
/// The engine's option naming a bridge network's interface.
const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

/// The image tasks run in when their job names none (built by `deploy/images/build.sh`).
pub const DEFAULT_IMAGE: &str = "herd/base:bookworm";

pub mod egress;
mod images;
mod ray_node;
pub mod volume;
pub use ray_node::{RayContainerSpec, CONTAINER_SOCKETS_DIR, LABEL_RAY};
/// Where the task's working directory is mounted; also its HOME.
const WORK_DIR: &str = "/work";
/// The user tasks run as when the agent runs as root ("nobody").
const UNPRIVILEGED: (u32, u32) = (65534, 65534);
/// `/tmp` is a private tmpfs (the root is read-only); its size comes out of the memory limit.
const TMP_BYTES_MAX: u64 = 1 << 30;
/// Bounds the engine's log files of a long-running task (the coordinator keeps the output).
const LOG_FILE_BYTES: &str = "10m";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot reach the Docker engine: {0} (is it running, and may this user use its socket?)")]
    Unreachable(DockerError),
    #[error("cannot load the image archive {path}: {error}")]
    Load { path: String, error: String },
    #[error(transparent)]
    Egress(#[from] egress::EgressError),
}

/// What a lease holds on this host: its network and its working area.
#[derive(Default)]
struct LeaseNetwork {
    /// Tasks using it now.
    users: usize,
    /// The lease ended: the last user removes it.
    ended: bool,
    /// The working area's mount point and size, once mounted by this agent.
    volume: Option<(std::path::PathBuf, u64)>,
}

/// How the docker runtime runs customers' containers on this machine.
#[derive(Debug, Clone)]
pub struct DockerSettings {
    /// The image tasks run in when their job names none.
    pub default_image: String,
    /// A simulated device's GPUs are not real: nothing is passed through.
    pub simulated: bool,
    /// Keep task containers off this host and its networks (`egress`).
    pub egress_policy: bool,
    /// Local images customers may run besides herd's own (`images`).
    pub allowed_images: Vec<String>,
    /// Where leases' working areas live (`volume`).
    pub volumes_dir: std::path::PathBuf,
}

/// What the agent found of its own on the engine at start.
pub struct Found {
    pub key: TaskKey,
    pub cluster_id: ClusterId,
    pub container: String,
    /// None while it still runs.
    pub exit: Option<TaskExit>,
}

pub struct DockerRuntime {
    api: Docker,
    device: Address,
    default_image: String,
    /// A simulated device's GPUs are not real: nothing is passed through.
    simulated: bool,
    /// The networks of the leases this device holds: made for a lease's first task, kept
    /// between its jobs (making one costs more than starting a container), removed at its end.
    networks: Mutex<HashMap<ClusterId, LeaseNetwork>>,
    /// What keeps task containers off this host and its networks (None: the supplier opted
    /// out with `--no-egress-policy`).
    egress: Option<egress::EgressPolicy>,
    images: images::ImagePolicy,
    volumes: volume::LeaseVolumes,
}

impl DockerRuntime {
    pub async fn connect(device: Address, settings: DockerSettings) -> Result<Self, RuntimeError> {
        let DockerSettings { default_image, simulated, egress_policy, allowed_images, volumes_dir } = settings;
        let api = Docker::connect_with_local_defaults().map_err(RuntimeError::Unreachable)?;
        // The engine may be older than the client's API version; speak the engine's.
        let api = api.negotiate_version().await.map_err(RuntimeError::Unreachable)?;
        api.ping().await.map_err(RuntimeError::Unreachable)?;
        let egress = match egress_policy {
            true => Some(egress::EgressPolicy::install(&device).await?),
            false => {
                tracing::warn!("no egress policy: task containers can reach this host and its private networks");
                None
            }
        };
        let images = images::ImagePolicy::new(&default_image, allowed_images);
        let volumes = volume::LeaseVolumes::new(volumes_dir);
        Ok(DockerRuntime { api, device, default_image, simulated, networks: Mutex::default(), egress, images, volumes })
    }

    /// Loads images from an archive made by `docker save` (or `deploy/images/build.sh`), so a
    /// supplier without a registry can run them; returns what the engine said it loaded.
    pub async fn load_image(&self, path: &Path) -> Result<Vec<String>, RuntimeError> {
        let shown = path.display().to_string();
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| RuntimeError::Load { path: shown.clone(), error: e.to_string() })?;
        let body = tokio_util::io::ReaderStream::new(file);
        let options = ImportImageOptions { quiet: true, ..Default::default() };
        let mut progress = self.api.import_image_stream(options, body, None);
        let mut loaded = Vec::new();
        while let Some(info) = progress.next().await {
            let info = info.map_err(|e| RuntimeError::Load { path: shown.clone(), error: e.to_string() })?;
            if let Some(error) = info.error_detail.and_then(|d| d.message) {
                return Err(RuntimeError::Load { path: shown, error });
            }
            loaded.extend(info.stream.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()));
        }
        Ok(loaded)
    }

    /// Several devices may share one engine (a rig running several agents, or a test), so
    /// names carry the device as well as the lease.
    fn network_name(&self, cluster: &ClusterId) -> String {
        format!("herd-{}-{}", cluster, self.device.short())
    }

    fn container_name(&self, assignment: &TaskAssignment) -> String {
        let attempt = if assignment.attempt > 1 { format!("-a{}", assignment.attempt) } else { String::new() };
        format!("herd-{}{attempt}-{}-{}", assignment.job_id, assignment.rank, self.device.short())
    }

    /// A filter for this device's objects only.
    fn own_filter(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_MANAGED}=true"), format!("{LABEL_DEVICE}={}", self.device)],
        )])
    }

    /// Runs one task to its end. The working directory exists.
    pub async fn run_task(
        &self,
        events: &mpsc::Sender<WorkerMessage>,
        assignment: &TaskAssignment,
        dir: &Path,
        stop: watch::Receiver<bool>,
    ) -> TaskExit {
        let image = assignment.image.clone().unwrap_or_else(|| self.default_image.clone());
        let ready = match self.images.permits_local(&image) {
            true => self.ensure_image(&image).await,
            false => self.pull_for_job(&image).await,
        };
        if let Err(error) = ready {
            return failed(error);
        }
        let user = task_user();
        let (network, area, area_bytes) =
            match self.acquire_lease(&assignment.cluster_id, &assignment.limits, user).await {
                Ok(held) => held,
                Err(error) => return failed(format!("cannot set up the lease on this node: {error}")),
            };
        // The task's own /work, inside the lease's working area (its size is the lease's).
        let work = area.join(dir.file_name().unwrap_or_default());
        if let Err(error) = prepare_work_dir(&work, user) {
            self.release_network(&assignment.cluster_id).await;
            return failed(format!("cannot prepare the working directory: {error}"));
        }
        let body = container_body(&self.device, self.simulated, assignment, &work, &image, &network, user);
        let mut exit = self.create_and_follow(events, assignment, body, stop).await;
        if exit.exit_code != Some(0) && exit.error.is_none() {
            exit.error = volume::full_area_error(&area, area_bytes);
        }
        self.release_network(&assignment.cluster_id).await;
        exit
    }

    /// Pulls an image that is not one this machine runs from its own store, for this job:
    /// without credentials, so only what a registry gives anyone runs.
    async fn pull_for_job(&self, image: &str) -> Result<(), String> {
        self.pull(image).await.map_err(|message| images::refusal(image, &message))
    }

    async fn create_and_follow(
        &self,
        events: &mpsc::Sender<WorkerMessage>,
        assignment: &TaskAssignment,
        body: ContainerCreateBody,
        stop: watch::Receiver<bool>,
    ) -> TaskExit {
        let name = self.container_name(assignment);
        // A container with this name is a leftover of an earlier attempt if it is ours; one
        // that is not ours is never removed.
        match self.api.inspect_container(&name, None).await {
            Ok(found) => {
                let labels = found.config.and_then(|c| c.labels).unwrap_or_default();
                if labels.get(LABEL_DEVICE) != Some(&self.device.to_string()) {
                    return failed(format!("a container named {name} exists and herd did not create it"));
                }
                self.remove(&name).await;
            }
            Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(error) => return failed(format!("cannot inspect the container: {}", engine_message(&error))),
        }
        let options = CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
        let id = match self.api.create_container(Some(options), body).await {
            Ok(created) => created.id,
            Err(error) => return failed(format!("cannot create the container: {}", engine_message(&error))),
        };
        if let Err(error) = self.api.start_container(&id, None).await {
            self.remove(&id).await;
            return failed(format!("cannot start the container: {}", engine_message(&error)));
        }
        let key = TaskKey::of(assignment);
        let _ = events.send(WorkerMessage::TaskStarted { job_id: key.job_id.clone(), attempt: key.attempt }).await;
        self.follow(events, &key, &id, Since::Start, stop).await
    }

    /// Streams a running container's output until it exits or `stop` turns true, then
    /// removes it and says how it ended. Also used for containers adopted after a restart.
    pub async fn follow(
        &self,
        events: &mpsc::Sender<WorkerMessage>,
        task: &TaskKey,
        container: &str,
        since: Since,
        mut stop: watch::Receiver<bool>,
    ) -> TaskExit {
        let since = match since {
            Since::Start => 0,
            Since::Now => unix_now(),
        };
        let logs =
            tokio::spawn(forward_logs(self.api.clone(), container.to_owned(), events.clone(), task.clone(), since));
        let wait = async {
            let options = WaitContainerOptions { condition: "not-running".into() };
            // The engine reports a non-zero exit as an error here; the inspection below is
            // the one account of how the container ended.
            let _ = self.api.wait_container(container, Some(options)).next().await;
        };
        tokio::select! {
            _ = wait => {}
            _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                let options = StopContainerOptions { t: Some(STOP_GRACE.as_secs() as i32), signal: None };
                if let Err(error) = self.api.stop_container(container, Some(options)).await {
                    tracing::warn!(container, error = %engine_message(&error), "could not stop a container");
                }
            }
        }
        if tokio::time::timeout(OUTPUT_DRAIN_MAX, logs).await.is_err() {
            tracing::warn!(container, "the container's log stream did not end; some output may be lost");
        }
        let stopped = *stop.borrow();
        let exit = self.exit_of(container, stopped).await;
        self.remove(container).await;
        exit
    }

    async fn exit_of(&self, container: &str, stopped: bool) -> TaskExit {
        let inspected = match self.api.inspect_container(container, None).await {
            Ok(inspected) => inspected,
            Err(error) => return failed(format!("lost track of the container: {}", engine_message(&error))),
        };
        exit_of_inspected(inspected, stopped)
    }

    async fn remove(&self, container: &str) {
        let options = RemoveContainerOptions { force: true, v: true, link: false };
        match self.api.remove_container(container, Some(options)).await {
            Ok(()) => {}
            Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(error) => tracing::warn!(container, error = %engine_message(&error), "could not remove a container"),
        }
    }

    /// The image is on this machine, or pulled from a registry the engine can reach.
    async fn ensure_image(&self, image: &str) -> Result<(), String> {
        match self.api.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(error) => return Err(format!("cannot inspect image {image}: {}", engine_message(&error))),
        }
        self.pull(image).await.map_err(|message| {
            format!(
                "image {image} is not on this machine and could not be pulled ({message}); \
                 the supplier can build it with deploy/images/build.sh or load it with \
                 `herd worker start --load-image FILE`"
            )
        })
    }

    /// Pulls `image` from its registry without credentials; Err is the engine's message.
    async fn pull(&self, image: &str) -> Result<(), String> {
        let options = CreateImageOptions { from_image: Some(image.to_owned()), ..Default::default() };
        let mut pull = self.api.create_image(Some(options), None, None);
        while let Some(progress) = pull.next().await {
            let message = match progress {
                Ok(info) => info.error_detail.and_then(|d| d.message),
                Err(error) => Some(engine_message(&error)),
            };
            if let Some(message) = message {
                return Err(message);
            }
        }
        Ok(())
    }

    /// The lease's network and working area, made on its first task here; counts its users.
    /// Returns the network's name and the area's mount point and size.
    async fn acquire_lease(
        &self,
        cluster: &ClusterId,
        limits: &TaskLimits,
        user: (u32, u32),
    ) -> Result<(String, std::path::PathBuf, u64), String> {
        let name = self.network_name(cluster);
        let mut networks = self.networks.lock().await;
        if !networks.contains_key(cluster) {
            let bridge = self.ensure_network(&name, cluster).await?;
            self.guard(&bridge).await?;
        }
        let held = networks.entry(cluster.clone()).or_default();
        let (area, bytes) = match &held.volume {
            Some(volume) => volume.clone(),
            None => {
                let wanted = if limits.disk_bytes > 0 { limits.disk_bytes } else { DEFAULT_AREA_BYTES };
                let mounted = self.volumes.mount(&name, wanted, user).await.map_err(|e| {
                    format!("cannot make its working area ({e}); the docker runtime needs root, mount and mkfs.ext4")
                })?;
                held.volume = Some(mounted.clone());
                mounted
            }
        };
        held.users += 1;
        held.ended = false;
        Ok((name, area, bytes))
    }

    /// Creates the network unless it is there (old engines would create a second network of
    /// the same name, so it is looked up first); returns its bridge interface.
    async fn ensure_network(&self, name: &str, cluster: &ClusterId) -> Result<String, String> {
        match self.bridge_of(name).await {
            Ok(Some(bridge)) => return Ok(bridge),
            Ok(None) => {}
            Err(error) => return Err(engine_message(&error)),
        }
        let bridge = egress::bridge_name(name);
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".into()),
            labels: Some(labels(&self.device, cluster)),
            options: Some(HashMap::from([(BRIDGE_NAME_OPTION.to_owned(), bridge.clone())])),
            ..Default::default()
        };
        self.api.create_network(request).await.map_err(|e| engine_message(&e))?;
        Ok(bridge)
    }

    /// A network's bridge interface (None if there is no such network): the one herd named,
    /// or the engine's default name for networks made before it named them.
    async fn bridge_of(&self, network: &str) -> Result<Option<String>, DockerError> {
        let inspected = match self.api.inspect_network(network, None).await {
            Ok(inspected) => inspected,
            Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => return Ok(None),
            Err(error) => return Err(error),
        };
        let named = inspected.options.as_ref().and_then(|o| o.get(BRIDGE_NAME_OPTION)).cloned();
        let id = inspected.id.unwrap_or_default();
        Ok(Some(named.unwrap_or_else(|| format!("br-{}", &id[..id.len().min(12)]))))
    }

    /// Puts a lease bridge under the egress policy before any container joins it.
    async fn guard(&self, bridge: &str) -> Result<(), String> {
        match &self.egress {
            Some(egress) => egress.guard(bridge).await.map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    /// A task of the lease (started here or adopted) is done with the network.
    pub(super) async fn release_network(&self, cluster: &ClusterId) {
        let mut networks = self.networks.lock().await;
        let Some(network) = networks.get_mut(cluster) else { return };
        network.users = network.users.saturating_sub(1);
        if network.users == 0 && network.ended {
            networks.remove(cluster);
            self.remove_network(cluster).await;
        }
    }

    /// The lease ended: its network goes now, or with its last task.
    pub async fn end_lease(&self, cluster: &ClusterId) {
        let mut networks = self.networks.lock().await;
        match networks.get_mut(cluster) {
            Some(network) if network.users > 0 => network.ended = true,
            _ => {
                networks.remove(cluster);
                self.remove_network(cluster).await;
            }
        }
    }

    /// Removes the networks no task uses (at agent shutdown), and the egress chains once no
    /// network needs them.
    pub async fn remove_idle_networks(&self) {
        let mut networks = self.networks.lock().await;
        let idle: Vec<ClusterId> = networks.iter().filter(|(_, n)| n.users == 0).map(|(c, _)| c.clone()).collect();
        for cluster in idle {
            networks.remove(&cluster);
            self.remove_network(&cluster).await;
        }
        if let (Some(egress), true) = (&self.egress, networks.is_empty()) {
            egress.uninstall().await;
        }
    }

    async fn remove_network(&self, cluster: &ClusterId) {
        let name = self.network_name(cluster);
        // The jumps go first, so nothing of the network outlives it even if the agent dies
        // right after; if the engine keeps the network (something still attached), so do they.
        let bridge = self.bridge_of(&name).await.ok().flatten();
        if let (Some(egress), Some(bridge)) = (&self.egress, &bridge) {
            egress.unguard(bridge).await;
        }
        // No task uses the lease any more: its working area goes first, for the same reason.
        self.volumes.remove(&name).await;
        match self.api.remove_network(&name).await {
            Ok(()) | Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(error) => {
                tracing::warn!(network = name, error = %engine_message(&error), "could not remove a network");
                if let Some(bridge) = &bridge {
                    if let Err(error) = self.guard(bridge).await {
                        tracing::error!(network = name, %error, "a kept lease network has no egress policy");
                    }
                }
            }
        }
    }

    /// This device's containers left from before a restart: running ones to adopt, exited
    /// ones to report and remove. Containers without both labels are never listed.
    pub async fn survey(&self) -> Result<Vec<Found>, DockerError> {
        let options = ListContainersOptions { all: true, filters: Some(self.own_filter()), ..Default::default() };
        let mut found = Vec::new();
        for summary in self.api.list_containers(Some(options)).await? {
            let (Some(id), Some(labels)) = (summary.id, summary.labels) else { continue };
            let parsed = (
                labels.get(LABEL_JOB).and_then(|j| JobId::parse(j).ok()),
                labels.get(LABEL_CLUSTER).and_then(|c| ClusterId::parse(c).ok()),
            );
            if labels.contains_key(LABEL_RAY) {
                // A Ray node: `remove_ray_leftovers` deals with it.
                continue;
            }
            let (Some(job_id), Some(cluster_id)) = parsed else {
                tracing::warn!(container = id, "a herd container with unreadable labels; removing it");
                self.remove(&id).await;
                continue;
            };
            let inspected = self.api.inspect_container(&id, None).await?;
            let exit = if inspected.state.as_ref().and_then(|s| s.running) == Some(true) {
                self.networks.lock().await.entry(cluster_id.clone()).or_default().users += 1;
                None
            } else {
                let exit = exit_of_inspected(inspected, false);
                self.remove(&id).await;
                Some(exit)
            };
            let attempt = labels.get(LABEL_ATTEMPT).and_then(|a| a.parse().ok()).unwrap_or(1);
            found.push(Found { key: TaskKey { job_id, attempt }, cluster_id, container: id, exit });
        }
        Ok(found)
    }

    /// Removes this device's networks that no running task uses (the engine refuses to remove
    /// one with containers attached, which is then kept).
    /// The networks still in use keep (or regain) their egress jumps; a crash's leftover
    /// jumps go with their networks.
    pub async fn prune_networks(&self) -> Result<(), DockerError> {
        let options = ListNetworksOptions { filters: Some(self.own_filter()) };
        let in_use: Vec<String> = self.networks.lock().await.keys().map(|c| self.network_name(c)).collect();
        let mut kept_bridges = Vec::new();
        for network in self.api.list_networks(Some(options)).await? {
            let Some(name) = network.name else { continue };
            if in_use.contains(&name) {
                if let Some(bridge) = self.bridge_of(&name).await? {
                    if let Err(error) = self.guard(&bridge).await {
                        tracing::error!(network = name, %error, "an adopted lease network has no egress policy");
                    }
                    kept_bridges.push(bridge);
                }
                continue;
            }
            if let Err(error) = self.api.remove_network(&name).await {
                tracing::warn!(network = name, error = %engine_message(&error), "could not remove a stale network");
            }
        }
        if let Some(egress) = &self.egress {
            egress.sweep(&kept_bridges).await;
        }
        self.volumes.sweep(&in_use).await;
        Ok(())
    }
}

/// Everything about a task's container but its name: what isolates and limits it.
fn container_body(
    device: &Address,
    simulated: bool,
    assignment: &TaskAssignment,
    dir: &Path,
    image: &str,
    network: &str,
    (uid, gid): (u32, u32),
) -> ContainerCreateBody {
    let limits = &assignment.limits;
    let mut env: Vec<String> = task_env(assignment).map(|(k, v)| format!("{k}={v}")).collect();
    env.extend([format!("HOME={WORK_DIR}"), "LANG=C.UTF-8".to_owned()]);
    let mut labels = labels(device, &assignment.cluster_id);
    labels.insert(LABEL_JOB.into(), assignment.job_id.to_string());
    labels.insert(LABEL_RANK.into(), assignment.rank.to_string());
    labels.insert(LABEL_ATTEMPT.into(), assignment.attempt.to_string());
    let tmp_bytes = (limits.memory_bytes / 4).min(TMP_BYTES_MAX);
    let host_config = HostConfig {
        mounts: Some(vec![Mount {
            target: Some(WORK_DIR.into()),
            source: Some(dir.display().to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(false),
            ..Default::default()
        }]),
        ..locked_down(limits, simulated, tmp_bytes, network)
    };
    ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(assignment.command.clone()),
        env: Some(env),
        user: Some(format!("{uid}:{gid}")),
        working_dir: Some(WORK_DIR.into()),
        labels: Some(labels),
        attach_stdin: Some(false),
        tty: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    }
}
/// What every herd container gets, task or Ray node: no privileges, a read-only root with a
/// `/tmp` of `tmp_bytes`, the lease's memory (no swap), CPU, processes and exactly its GPUs,
/// bounded logs.
fn locked_down(limits: &TaskLimits, simulated: bool, tmp_bytes: u64, network: &str) -> HostConfig {
    // A simulated device's GPUs are not real: nothing is passed through.
    let gpus = (!simulated && !limits.gpu_uuids.is_empty()).then(|| {
        vec![DeviceRequest {
            driver: Some("nvidia".into()),
            device_ids: Some(limits.gpu_uuids.clone()),
            capabilities: Some(vec![vec!["gpu".into()]]),
            ..Default::default()
        }]
    });
    let memory = i64::try_from(limits.memory_bytes).unwrap_or(i64::MAX);
    HostConfig {
        privileged: Some(false),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges:true".into()]),
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([("/tmp".into(), format!("rw,nosuid,nodev,size={tmp_bytes},mode=1777"))])),
        memory: Some(memory),
        // Equal to memory: no swap, so the limit is a limit.
        memory_swap: Some(memory),
        nano_cpus: Some(i64::from(limits.cpu_millis) * 1_000_000),
        pids_limit: Some(i64::from(limits.pids_max)),
        network_mode: Some(network.to_owned()),
        device_requests: gpus,
        log_config: Some(bollard::models::HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([("max-size".into(), LOG_FILE_BYTES.into()), ("max-file".into(), "2".into())])),
        }),
        ..Default::default()
    }
}

fn labels(device: &Address, cluster: &ClusterId) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_DEVICE.to_owned(), device.to_string()),
        (LABEL_CLUSTER.to_owned(), cluster.to_string()),
    ])
}

/// How an inspected container ended.
fn exit_of_inspected(inspected: bollard::models::ContainerInspectResponse, stopped: bool) -> TaskExit {
    let memory = inspected.host_config.and_then(|h| h.memory).unwrap_or(0);
    let state = inspected.state.unwrap_or_default();
    exit_from_state(state.exit_code, state.oom_killed.unwrap_or(false), state.error, memory, stopped)
}

/// How a container ended, in the words a customer needs.
fn exit_from_state(
    exit_code: Option<i64>,
    oom_killed: bool,
    error: Option<String>,
    memory_bytes: i64,
    stopped: bool,
) -> TaskExit {
    if oom_killed {
        return failed(format!(
            "out of memory: the task went over its {} MiB memory limit and was killed",
            memory_bytes >> 20
        ));
    }
    if let Some(error) = error.filter(|e| !e.is_empty()) {
        return failed(format!("the container failed: {error}"));
    }
    match exit_code {
        // 128 + n is how the engine reports death by signal n; a stop is SIGTERM or SIGKILL.
        Some(code @ (137 | 143)) if stopped => failed(format!("killed by signal {}", code - 128)),
        Some(code) => TaskExit { exit_code: Some(code as i32), error: None },
        None => failed("ended without an exit code".into()),
    }
}

/// The user tasks run as, owning their working directory: an agent running as root hands it
/// to "nobody"; an unprivileged agent (rootless Docker) keeps its own user.
/// Who tasks run as: "nobody" when the agent is root, else the agent's own user.
fn task_user() -> (u32, u32) {
    let (uid, gid) = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
    if uid == 0 {
        UNPRIVILEGED
    } else {
        (uid, gid)
    }
}

fn prepare_work_dir(dir: &Path, (uid, gid): (u32, u32)) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
}

/// The engine's own message, without bollard's wrapping.
fn engine_message(error: &DockerError) -> String {
    match error {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// Where a followed container's output starts.
pub enum Since {
    /// All of it: a container this agent just started.
    Start,
    /// From now: an adopted container, whose earlier output was delivered before the restart
    /// (what it printed while no agent ran stays in the engine's log, not in the job's).
    Now,
}

#[allow(clippy::disallowed_methods)] // the engine's `since` is wall-clock seconds
fn unix_now() -> i32 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i32::try_from(now.as_secs()).unwrap_or(i32::MAX)
}

async fn forward_logs(api: Docker, container: String, events: mpsc::Sender<WorkerMessage>, task: TaskKey, since: i32) {
    let options = LogsOptions { follow: true, stdout: true, stderr: true, since, ..Default::default() };
    let mut logs = api.logs(&container, Some(options));
    let stdout = OutputSink::new(events.clone(), task.clone(), Stream::Stdout);
    let stderr = OutputSink::new(events, task, Stream::Stderr);
    let (mut out_lines, mut err_lines) = (LineSplitter::default(), LineSplitter::default());
    while let Some(chunk) = logs.next().await {
        let sent = match chunk {
            Ok(bollard::container::LogOutput::StdOut { message }) => stdout.send(out_lines.push(&message)).await,
            Ok(bollard::container::LogOutput::StdErr { message }) => stderr.send(err_lines.push(&message)).await,
            Ok(_) => true,
            Err(error) => {
                tracing::debug!(container, %error, "log stream ended");
                break;
            }
        };
        if !sent {
            return;
        }
    }
    stdout.send(out_lines.finish().into_iter().collect()).await;
    stderr.send(err_lines.finish().into_iter().collect()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_core::TaskLimits;
    use std::collections::BTreeMap;

    fn assignment(gpus: &[&str]) -> TaskAssignment {
        TaskAssignment {
            job_id: JobId::from_entropy([7; 8]),
            cluster_id: ClusterId::from_entropy([8; 8]),
            rank: 1,
            node_count: 2,
            head_addr: "10.0.0.1".into(),
            command: vec!["python3".into(), "train.py".into()],
            env: BTreeMap::from([("EPOCHS".to_string(), "3".to_string())]),
            image: None,
            limits: TaskLimits {
                cpu_millis: 1500,
                memory_bytes: 512 << 20,
                pids_max: 100,
                gpu_uuids: gpus.iter().map(|g| g.to_string()).collect(),
                disk_bytes: 1 << 30,
            },
            attempt: 1,
            ray_address: None,
        }
    }

    fn device() -> Address {
        Address::parse("11111111111111111111111111111111").unwrap()
    }

    #[test]
    fn containers_are_locked_down_and_limited_by_the_lease() {
        let job = assignment(&["GPU-a", "GPU-b"]);
        let body = container_body(&device(), false, &job, Path::new("/data/jobs/j"), "img:1", "net", (65534, 65534));
        let host = body.host_config.as_ref().unwrap();
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.cap_drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert!(host.cap_add.is_none());
        assert_eq!(host.security_opt.as_deref(), Some(&["no-new-privileges:true".to_string()][..]));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!((host.memory, host.memory_swap), (Some(512 << 20), Some(512 << 20)));
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        assert_eq!(host.pids_limit, Some(100));
        assert_eq!(host.network_mode.as_deref(), Some("net"));
        let mounts = host.mounts.as_ref().unwrap();
        assert_eq!(mounts.len(), 1, "the working directory is the only host mount");
        assert_eq!(mounts[0].source.as_deref(), Some("/data/jobs/j"));
        assert!(host.binds.is_none() && host.volumes_from.is_none());
        let gpus = &host.device_requests.as_ref().unwrap()[0];
        assert_eq!(gpus.device_ids.as_deref(), Some(&["GPU-a".to_string(), "GPU-b".to_string()][..]));
        assert_eq!(body.user.as_deref(), Some("65534:65534"));
        let labels = body.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_MANAGED], "true");
        assert_eq!(labels[LABEL_DEVICE], "11111111111111111111111111111111");
        assert_eq!(labels[LABEL_JOB], job.job_id.to_string());
        let env = body.env.as_ref().unwrap();
        assert!(env.contains(&"EPOCHS=3".to_string()) && env.contains(&"HERD_NODE_RANK=1".to_string()));
        assert!(env.contains(&"HOME=/work".to_string()));
    }

    #[test]
    fn simulated_gpus_and_cpu_leases_pass_no_devices() {
        let body = container_body(&device(), true, &assignment(&["GPU-a"]), Path::new("/d"), "i", "n", (1, 1));
        assert!(body.host_config.unwrap().device_requests.is_none());
        let body = container_body(&device(), false, &assignment(&[]), Path::new("/d"), "i", "n", (1, 1));
        assert!(body.host_config.unwrap().device_requests.is_none());
    }

    #[test]
    fn exits_say_what_happened() {
        let oom = exit_from_state(Some(137), true, None, 256 << 20, false);
        assert_eq!(oom.error.unwrap(), "out of memory: the task went over its 256 MiB memory limit and was killed");
        assert_eq!(exit_from_state(Some(3), false, None, 0, false).exit_code, Some(3));
        assert_eq!(exit_from_state(Some(137), false, None, 0, true).error.unwrap(), "killed by signal 9");
        assert_eq!(exit_from_state(Some(137), false, None, 0, false).exit_code, Some(137));
        assert!(exit_from_state(Some(127), false, Some("exec: not found".into()), 0, false).error.is_some());
    }
}
