//! A Ray node in a container (docker runtime): the Ray image, the lease's limits, the same
//! lockdown as tasks — but the host's network, because a Ray node must be reachable by the
//! other nodes of its cluster on many ports it chooses itself (Ray's own container guidance
//! does the same). The dashboard still binds loopback only, reached through the tunnel.

use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, LogsOptions, StopContainerOptions, WaitContainerOptions,
};
use futures_util::{Stream, StreamExt};
use herd_core::{ClusterId, TaskLimits};

use super::{engine_message, labels, locked_down, DockerRuntime, UNPRIVILEGED};

/// Marks a Ray node's container (it has no job).
pub const LABEL_RAY: &str = "io.herd.ray";
/// Inside the container, private to it.
pub const CONTAINER_SOCKETS_DIR: &str = "/tmp/herd-ray-sockets";
const STOP_GRACE_SECS: i32 = 10;

/// What a Ray node's container is made of.
pub struct RayContainerSpec<'a> {
    pub cluster: &'a ClusterId,
    pub image: &'a str,
    /// After `ray`.
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub limits: &'a TaskLimits,
    pub object_store_bytes: u64,
}

impl DockerRuntime {
    fn ray_container_name(&self, cluster: &ClusterId) -> String {
        format!("herd-ray-{}-{}", cluster, self.device.short())
    }

    /// Creates and starts the node's container; its id.
    pub async fn start_ray_node(&self, spec: &RayContainerSpec<'_>) -> Result<String, String> {
        self.ensure_image(spec.image).await?;
        let name = self.ray_container_name(spec.cluster);
        // A container of this name is an earlier run's (the name carries this device).
        self.remove(&name).await;
        let body = ray_container_body(self, spec);
        let options = CreateContainerOptions { name: Some(name), ..Default::default() };
        let id = self
            .api
            .create_container(Some(options), body)
            .await
            .map_err(|e| format!("cannot create the Ray container: {}", engine_message(&e)))?
            .id;
        if let Err(error) = self.api.start_container(&id, None).await {
            self.remove(&id).await;
            return Err(format!("cannot start the Ray container: {}", engine_message(&error)));
        }
        Ok(id)
    }

    /// The container's output, line by line, from its start.
    pub fn ray_node_output(&self, id: &str) -> impl Stream<Item = String> + Send + 'static {
        let options = LogsOptions { follow: true, stdout: true, stderr: true, ..Default::default() };
        self.api.logs(id, Some(options)).filter_map(|chunk| async move {
            match chunk {
                Ok(output) => Some(String::from_utf8_lossy(&output.into_bytes()).into_owned()),
                Err(_) => None,
            }
        })
    }

    /// Waits for the container to end; how it ended.
    pub async fn wait_ray_node(&self, id: &str) -> String {
        let options = WaitContainerOptions { condition: "not-running".into() };
        let _ = self.api.wait_container(id, Some(options)).next().await;
        let exit = self.exit_of(id, false).await;
        match (exit.exit_code, exit.error) {
            (_, Some(error)) => error,
            (Some(code), None) => format!("exit code {code}"),
            (None, None) => "ended".into(),
        }
    }

    /// SIGTERM, SIGKILL after the grace, then removal.
    pub async fn stop_ray_node(&self, id: &str) {
        let options = StopContainerOptions { t: Some(STOP_GRACE_SECS), signal: None };
        if let Err(error) = self.api.stop_container(id, Some(options)).await {
            if !matches!(error, DockerError::DockerResponseServerError { status_code: 404 | 304, .. }) {
                tracing::warn!(container = id, error = %engine_message(&error), "could not stop a Ray container");
            }
        }
        self.remove(id).await;
    }

    /// Removes Ray containers an earlier run of this agent left: the coordinator re-assigns
    /// the nodes it still wants, and they start afresh.
    pub async fn remove_ray_leftovers(&self) -> Result<usize, DockerError> {
        let mut filter = self.own_filter();
        filter.get_mut("label").expect("own_filter filters on labels").push(format!("{LABEL_RAY}=node"));
        let options = ListContainersOptions { all: true, filters: Some(filter), ..Default::default() };
        let found = self.api.list_containers(Some(options)).await?;
        for container in &found {
            if let Some(id) = &container.id {
                self.remove(id).await;
            }
        }
        Ok(found.len())
    }
}

fn ray_container_body(runtime: &DockerRuntime, spec: &RayContainerSpec<'_>) -> ContainerCreateBody {
    let limits = spec.limits;
    let mut labels = labels(&runtime.device, spec.cluster);
    labels.insert(LABEL_RAY.into(), "node".into());
    // Ray's session files, job working directories and runtime_env installs live in /tmp.
    let tmp_bytes = limits.memory_bytes / 2;
    let host_config = HostConfig {
        // The object store lives in /dev/shm.
        shm_size: Some(i64::try_from(spec.object_store_bytes + (64 << 20)).unwrap_or(i64::MAX)),
        ..locked_down(limits, runtime.simulated, tmp_bytes, "host")
    };
    let mut cmd = vec!["ray".to_owned()];
    cmd.extend(spec.args.iter().cloned());
    ContainerCreateBody {
        image: Some(spec.image.to_owned()),
        cmd: Some(cmd),
        env: Some(spec.env.clone()),
        user: Some(format!("{}:{}", UNPRIVILEGED.0, UNPRIVILEGED.1)),
        working_dir: Some("/tmp".into()),
        labels: Some(labels),
        attach_stdin: Some(false),
        tty: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    }
}
