//! Ray nodes this agent runs, one per Ray cluster its device is leased to, and the tunnel
//! that carries the customer's dashboard / job API requests to a head.

mod command;
mod dirs;
pub mod env;
mod node;
mod tunnel;
mod upgrade;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_core::{ClusterId, RayNodeState};
use herd_proto::worker::{RayNodeAssignment, RayNodeReport};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use node::{Context, OfferMax};
pub use tunnel::Tunnels;

/// Lease temp dirs on this machine that nothing runs in any more (killed runs leave them).
pub fn remove_unused_lease_temp_dirs() {
    dirs::LeaseTemp::remove_all_unused();
}

/// Ray's dashboard refuses requests without a User-Agent. No idle connections are kept: a
/// tunnelled body is a stream, which cannot be re-sent when a pooled loopback connection
/// turns out to have been closed by the dashboard meanwhile.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("herd-worker/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(0)
        .build()
        .expect("a plain HTTP client builds")
}

/// An error with its causes, for messages that travel back to the customer.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// How long stopping every node may take at shutdown.
const STOP_ALL_MAX: Duration = Duration::from_secs(20);

struct Node {
    assignment: RayNodeAssignment,
    stop: watch::Sender<bool>,
    status: node::SharedStatus,
    task: JoinHandle<()>,
}

#[derive(Clone)]
pub struct RayNodes {
    nodes: Arc<Mutex<HashMap<ClusterId, Node>>>,
    ctx: Arc<Context>,
}

impl RayNodes {
    pub fn new(ctx: Context) -> RayNodes {
        RayNodes { nodes: Arc::default(), ctx: Arc::new(ctx) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClusterId, Node>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the node, or keeps it if it already runs as assigned (a re-sent assignment
    /// after a reconnect); a changed assignment (a new head to join) replaces it.
    pub fn start(&self, assignment: RayNodeAssignment, node_ip: String) {
        let mut nodes = self.lock();
        let previous = match nodes.remove(&assignment.cluster_id) {
            Some(node) if node.assignment == assignment && !node.task.is_finished() => {
                let status = node.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let events = self.ctx.events.clone();
                let report = node::report(&node.assignment, &status);
                tokio::spawn(async move { events.send(herd_proto::worker::WorkerMessage::RayNode(report)).await });
                nodes.insert(assignment.cluster_id.clone(), node);
                return;
            }
            Some(node) => {
                let _ = node.stop.send(true);
                Some(node.task)
            }
            None => None,
        };
        let status = Arc::new(Mutex::new(node::Status {
            state: RayNodeState::Starting,
            detail: None,
            gcs_address: None,
            dashboard_port: None,
            restarts: 0,
        }));
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn({
            let (ctx, assignment, status) = (self.ctx.clone(), assignment.clone(), status.clone());
            async move {
                if let Some(previous) = previous {
                    let _ = previous.await;
                }
                node::supervise(ctx, assignment, node_ip, status, stop_rx).await;
            }
        });
        tracing::info!(cluster = %assignment.cluster_id, head = assignment.head_address.is_none(), "starting Ray node");
        nodes.insert(assignment.cluster_id.clone(), Node { assignment, stop, status, task });
    }

    /// Stops the cluster's node (its whole process group); the node reports `stopped`.
    pub fn stop(&self, cluster: &ClusterId) {
        if let Some(node) = self.lock().remove(cluster) {
            let _ = node.stop.send(true);
        }
    }

    pub async fn stop_all(&self) {
        let nodes: Vec<Node> = self.lock().drain().map(|(_, node)| node).collect();
        for node in &nodes {
            let _ = node.stop.send(true);
        }
        let all = futures_util::future::join_all(nodes.into_iter().map(|n| n.task));
        if tokio::time::timeout(STOP_ALL_MAX, all).await.is_err() {
            tracing::warn!("Ray nodes still stopping at shutdown");
        }
    }

    /// Every node's state, for the hello after a reconnect.
    pub fn reports(&self) -> Vec<RayNodeReport> {
        self.lock()
            .values()
            .map(|n| node::report(&n.assignment, &n.status.lock().unwrap_or_else(|p| p.into_inner())))
            .collect()
    }

    /// The local dashboard port of the cluster's head, if this agent runs it and it is up.
    pub fn dashboard_port(&self, cluster: &ClusterId) -> Option<u16> {
        self.lock().get(cluster).and_then(|n| n.status.lock().unwrap_or_else(|p| p.into_inner()).dashboard_port)
    }
}
