//! This device's nodes on lease overlays: one supervised `nebula` per lease it holds, with a
//! TUN carrying its overlay address, inbound traffic from its lease's group only. Started on
//! `JoinOverlay` (before the lease's Ray node and tasks, which wait for it), reloaded when the
//! assignment changes (renewed certificate, longer blocklist), stopped on `StopCluster`, and
//! reported to the coordinator on every change (up, error, peers direct or relayed).
//!
//! The overlay key is made fresh by every run of the agent and lives only in memory and in
//! the node configurations (mode 0600, removed when the lease ends or the agent starts): a
//! restarted agent gets new certificates, and the old ones are revoked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_core::ClusterId;
use herd_overlay::{HostKey, Nebula, NodeConfig, Peer, PeerPath};
use herd_proto::worker::{OverlayAssignment, OverlayReport, OverlaySupport, WorkerMessage};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// How long a lease's Ray node or task waits for its overlay to come up.
pub const OVERLAY_UP_MAX: Duration = Duration::from_secs(60);

enum Support {
    Ready(HostKey),
    Unavailable(String),
}

struct Node {
    assignment: OverlayAssignment,
    nebula: Nebula,
    reporter: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
pub struct Overlays(Arc<Inner>);

struct Inner {
    program: PathBuf,
    dir: PathBuf,
    /// The host this worker reaches the coordinator at: lighthouses given as `:PORT` are there.
    coordinator_host: String,
    support: Support,
    events: mpsc::Sender<WorkerMessage>,
    nodes: Mutex<HashMap<ClusterId, Node>>,
}

impl Overlays {
    /// `simulated`: a simulated device shares the coordinator's machine and never joins.
    pub fn new(
        program: PathBuf,
        dir: PathBuf,
        coordinator: &str,
        simulated: bool,
        events: mpsc::Sender<WorkerMessage>,
    ) -> Overlays {
        remove_leftovers(&dir);
        let support = if simulated {
            Support::Unavailable("a simulated device runs on the coordinator's machine; it never joins overlays".into())
        } else {
            match herd_overlay::probe_node_support(&program) {
                Ok(()) => Support::Ready(HostKey::generate()),
                Err(reason) => {
                    tracing::warn!(%reason, "this device cannot join lease overlays; it is offered for single-node \
                        leases only");
                    Support::Unavailable(reason)
                }
            }
        };
        Overlays(Arc::new(Inner {
            program,
            dir,
            coordinator_host: host_of(coordinator),
            support,
            events,
            nodes: Mutex::new(HashMap::new()),
        }))
    }

    /// What the hello says.
    pub fn support(&self) -> OverlaySupport {
        match &self.0.support {
            Support::Ready(key) => OverlaySupport::Ready { public_key: herd_core::hex::encode(&key.public()) },
            Support::Unavailable(reason) => OverlaySupport::Unavailable { reason: reason.clone() },
        }
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, HashMap<ClusterId, Node>> {
        self.0.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins (or updates this device's node on) a lease's overlay.
    pub fn join(&self, assignment: OverlayAssignment) {
        let Support::Ready(key) = &self.0.support else {
            tracing::error!(cluster = %assignment.cluster_id, "asked to join an overlay this device cannot join");
            return;
        };
        let cluster = assignment.cluster_id.clone();
        let mut nodes = self.nodes();
        if let Some(node) = nodes.get(&cluster) {
            if node.assignment == assignment {
                return;
            }
            // The same tenure, address and lighthouses: a renewed certificate or a longer
            // blocklist, which nebula re-reads on SIGHUP (anything else restarts it).
            if node.assignment.epoch == assignment.epoch
                && node.assignment.address == assignment.address
                && node.assignment.lighthouses == assignment.lighthouses
                && node.assignment.relay_generation == assignment.relay_generation
            {
                match self.write_config(&assignment, key) {
                    Ok(_) => {
                        node.nebula.reload();
                        tracing::info!(%cluster, blocklisted = assignment.blocklist.len(), "overlay node reloaded");
                    }
                    Err(error) => tracing::error!(%cluster, %error, "cannot rewrite the overlay configuration"),
                }
                if let Some(node) = nodes.get_mut(&cluster) {
                    node.assignment = assignment;
                }
                return;
            }
        }
        if let Some(old) = nodes.remove(&cluster) {
            old.reporter.abort();
            drop(old.nebula);
        }
        let path = match self.write_config(&assignment, key) {
            Ok(path) => path,
            Err(error) => {
                tracing::error!(%cluster, %error, "cannot write the overlay configuration");
                return;
            }
        };
        tracing::info!(%cluster, address = %assignment.address, "joining the lease's overlay");
        let nebula = Nebula::start(&self.0.program, &path, &format!("lease {cluster}"));
        let reporter = tokio::spawn(report(nebula.status(), assignment.clone(), self.0.events.clone()));
        nodes.insert(cluster, Node { assignment, nebula, reporter });
    }

    fn write_config(&self, assignment: &OverlayAssignment, key: &HostKey) -> std::io::Result<PathBuf> {
        let lighthouses = assignment
            .lighthouses
            .iter()
            .filter_map(|l| {
                let underlay = l
                    .underlay
                    .iter()
                    .map(|a| match a.strip_prefix(':') {
                        Some(port) => format!("{}:{port}", self.0.coordinator_host),
                        None => a.clone(),
                    })
                    .collect();
                Some(Peer { overlay_ip: l.overlay_ip.parse().ok()?, underlay })
            })
            .collect();
        let config = NodeConfig {
            ca_pem: assignment.ca.clone(),
            cert_pem: assignment.cert.clone(),
            key_pem: key.private_pem(),
            blocklist: assignment.blocklist.clone(),
            lighthouses,
            tun_dev: tun_name(&assignment.cluster_id),
            inbound_group: assignment.group.clone(),
        };
        std::fs::create_dir_all(&self.0.dir)?;
        let path = self.0.dir.join(format!("{}.yml", assignment.cluster_id));
        herd_overlay::config::write_private(&path, &config.render())?;
        Ok(path)
    }

    /// Leaves a lease's overlay (the lease ended): nebula stops, its TUN and file go.
    pub async fn leave(&self, cluster: &ClusterId) {
        let node = self.nodes().remove(cluster);
        if let Some(node) = node {
            node.reporter.abort();
            node.nebula.stop().await;
            let _ = std::fs::remove_file(self.0.dir.join(format!("{cluster}.yml")));
            tracing::info!(%cluster, "left the lease's overlay");
        }
    }

    /// The address a lease's work runs on: Ok(None) when this device has no node on the
    /// lease's overlay (a lease without one), Ok(Some(ip)) once it is up; Err why it did not
    /// come up in time.
    pub async fn ready_address(&self, cluster: &ClusterId) -> Result<Option<String>, String> {
        let (status, address) = {
            let nodes = self.nodes();
            let Some(node) = nodes.get(cluster) else { return Ok(None) };
            (node.nebula.status(), node.assignment.address.clone())
        };
        let mut waiting = status.clone();
        let came_up = matches!(tokio::time::timeout(OVERLAY_UP_MAX, waiting.wait_for(|s| s.up)).await, Ok(Ok(_)));
        let ip = address.split('/').next().unwrap_or_default().to_owned();
        match came_up {
            true => Ok(Some(ip)),
            false => Err(format!(
                "the lease's overlay did not come up within {}s: {}",
                OVERLAY_UP_MAX.as_secs(),
                status.borrow().error.clone().unwrap_or_else(|| "no error logged".into())
            )),
        }
    }

    /// Whether this device still holds a node on the lease's overlay.
    pub fn joined(&self, cluster: &ClusterId) -> bool {
        self.nodes().contains_key(cluster)
    }

    pub async fn stop_all(&self) {
        let clusters: Vec<ClusterId> = self.nodes().keys().cloned().collect();
        for cluster in clusters {
            self.leave(&cluster).await;
        }
    }
}

/// Sends a report on every change of the node's status.
async fn report(
    mut status: tokio::sync::watch::Receiver<herd_overlay::NebulaStatus>,
    assignment: OverlayAssignment,
    events: mpsc::Sender<WorkerMessage>,
) {
    loop {
        let report = {
            let now = status.borrow_and_update();
            OverlayReport {
                cluster_id: assignment.cluster_id.clone(),
                epoch: assignment.epoch,
                up: now.up,
                error: now.error.clone(),
                restarts: now.restarts,
                peers: now
                    .peers
                    .iter()
                    .filter(|(ip, _)| !assignment.lighthouses.iter().any(|l| l.overlay_ip == ip.to_string()))
                    .map(|(ip, path)| {
                        let how = match path {
                            PeerPath::Direct { addr } => format!("direct {addr}"),
                            PeerPath::Relayed { relay: Some(relay) } => format!("relayed via {relay}"),
                            PeerPath::Relayed { relay: None } => "relayed".to_owned(),
                        };
                        (ip.to_string(), how)
                    })
                    .collect(),
            }
        };
        if events.send(WorkerMessage::OverlayStatus(report)).await.is_err() || status.changed().await.is_err() {
            return;
        }
    }
}

/// A TUN name per lease (at most 15 bytes), so two leases' nodes never collide.
fn tun_name(cluster: &ClusterId) -> String {
    let digest = Sha256::digest(cluster.as_str().as_bytes());
    format!("herd{}", &herd_core::hex::encode(&digest)[..8])
}

fn host_of(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6).to_owned();
    }
    authority.rsplit_once(':').map_or(authority, |(host, _)| host).to_owned()
}

/// A killed agent's nebula dies with it (parent-death signal); where that could not be set,
/// any nebula still running on this device's configurations is killed here, and the files
/// (holding the last run's key) removed.
fn remove_leftovers(dir: &Path) {
    let marker = dir.display().to_string();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains("nebula") && cmdline.contains(&marker) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                tracing::warn!(pid, "a nebula an earlier run left behind was killed");
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lighthouses_on_the_coordinators_host_and_tun_names() {
        assert_eq!(host_of("http://10.9.0.1:7700"), "10.9.0.1");
        assert_eq!(host_of("https://herd.example/"), "herd.example");
        assert_eq!(host_of("http://[::1]:7700"), "::1");
        let name = tun_name(&ClusterId::from_entropy([1; 8]));
        assert!(name.len() <= 15 && name.starts_with("herd"), "{name}");
    }
}
