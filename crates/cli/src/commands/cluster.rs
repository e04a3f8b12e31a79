use std::time::Duration;

use clap::{Args, Subcommand};
use herd_core::money::format_usd;
use herd_core::{ClusterState, RayNodeState};
use herd_proto::api::{Cluster, CreateCluster, RayClusterState};

use super::request::RequestArgs;
use super::Context;
use crate::client::Client;
use crate::output::{human_ms, now_ms, print_json, spinner, table};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Reserve devices as a cluster (all nodes or none).
    Create(Box<CreateArgs>),
    /// Your clusters.
    List {
        /// Include terminated clusters.
        #[arg(long)]
        all: bool,
    },
    /// One cluster and its nodes.
    Show {
        /// The cluster's ID.
        id: String,
    },
    /// End the lease: free the devices and stop everything on them; the unused hold returns.
    Delete {
        /// The cluster's ID.
        id: String,
        /// Take the unused hold back as credits instead of the lease's asset.
        #[arg(long)]
        refund_in_credits: bool,
    },
    /// Extend a running cluster's lease.
    Extend {
        /// The cluster's ID.
        id: String,
        /// Hours to add to the lease (1..=720), held from your balance now.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=720))]
        hours: u32,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    request: RequestArgs,
    /// Create at the price of this quote (from `herd market quote`, valid 5 minutes).
    #[arg(long)]
    quote: Option<String>,
    /// `ray` (default): a Ray cluster across the nodes; `plain`: bare nodes for `herd job run`.
    #[arg(long = "type", value_parser = ["ray", "plain"])]
    kind: Option<String>,
    /// The Ray release (default: herd's tested one).
    #[arg(long)]
    ray_version: Option<String>,
    /// Return once the nodes are reserved, without waiting for Ray to be ready.
    #[arg(long)]
    no_wait: bool,
}

/// How long `cluster create` waits for Ray (the first cluster on a device installs Ray).
const RAY_READY_WAIT: Duration = Duration::from_secs(15 * 60);

/// A node failed this long (its restarts exhausted or its install broken) ends the wait.
const RAY_FAILED_FOR: Duration = Duration::from_secs(45);

/// Waits until the cluster's Ray is ready, showing progress; an error if its head fails.
pub async fn wait_for_ray(client: &Client, cluster: Cluster, json: bool) -> anyhow::Result<Cluster> {
    let progress = spinner("starting Ray", json);
    let deadline = tokio::time::Instant::now() + RAY_READY_WAIT;
    let mut cluster = cluster;
    let mut failed_since = std::collections::HashMap::new();
    loop {
        let Some(ray) = &cluster.ray else { return Ok(cluster) };
        match ray.state {
            RayClusterState::Ready => {
                progress.finish_and_clear();
                return Ok(cluster);
            }
            RayClusterState::Down if cluster.state != ClusterState::Running => {
                progress.finish_and_clear();
                anyhow::bail!(
                    "cluster {} ended before Ray was ready: {}",
                    cluster.id,
                    cluster.end_reason.unwrap_or_default()
                );
            }
            RayClusterState::Down | RayClusterState::Degraded => {
                // A crashed node is restarted with backoff; one failed for long is given up.
                let now = tokio::time::Instant::now();
                for node in &cluster.nodes {
                    let failed = node.ray.as_ref().filter(|r| r.state == RayNodeState::Failed);
                    match failed {
                        None => {
                            failed_since.remove(&node.rank);
                        }
                        Some(ray) => {
                            let since = *failed_since.entry(node.rank).or_insert(now);
                            if now.duration_since(since) >= RAY_FAILED_FOR {
                                progress.finish_and_clear();
                                anyhow::bail!(
                                    "Ray failed on node {} of cluster {}: {} (the lease stands: fix and retry, or `herd cluster delete {}`)",
                                    node.rank,
                                    cluster.id,
                                    ray.detail.clone().unwrap_or_default(),
                                    cluster.id
                                );
                            }
                        }
                    }
                }
            }
            RayClusterState::Starting => {}
        }
        let doing = cluster.nodes.iter().find_map(|n| n.ray.as_ref().and_then(|r| r.detail.clone()));
        progress.set_message(format!(
            "starting Ray {}: {}/{} nodes ready{}",
            ray.version,
            ray.nodes_ready,
            cluster.nodes.len(),
            doing.map(|d| format!(" ({d})")).unwrap_or_default()
        ));
        if tokio::time::Instant::now() >= deadline {
            progress.finish_and_clear();
            anyhow::bail!(
                "Ray was not ready within {} minutes; see `herd cluster show {}`",
                RAY_READY_WAIT.as_secs() / 60,
                cluster.id
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster = client.cluster(cluster.id.as_str()).await?;
    }
}

pub fn print_cluster(cluster: &Cluster, coordinator: &str) {
    crate::outln!(
        "cluster {}  {}  {} × {}  {}/h in {}",
        cluster.id,
        cluster.state,
        cluster.nodes.len(),
        cluster.hardware,
        format_usd(cluster.price_per_hour_micros),
        cluster.asset
    );
    crate::outln!("created {}  expires {}", cluster.created_at, cluster.expires_at);
    if let Some(reason) = &cluster.end_reason {
        crate::outln!("ended: {reason}");
    }
    if cluster.state == ClusterState::Running {
        if let Some(healing) = &cluster.healing {
            crate::outln!("healing: {healing}");
        }
    }
    if let Some(ray) = &cluster.ray {
        crate::outln!(
            "ray {}  {}  {}/{} node(s) ready",
            ray.version,
            ray.state.as_str(),
            ray.nodes_ready,
            cluster.nodes.len()
        );
        if cluster.state == ClusterState::Running && !ray.path.is_empty() {
            crate::outln!("dashboard  {coordinator}{}/", ray.path);
            crate::outln!("job api    {coordinator}{}  (also for `ray job submit --address`)", ray.path);
        }
    }
    let rows: Vec<Vec<String>> = cluster
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.rank.to_string(),
                n.device_id.to_string(),
                n.device_state.to_string(),
                n.country.clone(),
                n.address.clone(),
                n.overlay.as_ref().map_or(String::new(), |o| {
                    let state = match (&o.error, o.up) {
                        (Some(error), false) => format!("down: {error}"),
                        (_, true) => "up".into(),
                        (None, false) => "joining".into(),
                    };
                    format!("{} {state}", o.address)
                }),
                format!("{}/h", format_usd(n.node_hour_micros)),
                n.ray.as_ref().map_or(String::new(), |r| {
                    let role = if r.head { "head" } else { "worker" };
                    let restarts = if r.restarts > 0 { format!(", {} restart(s)", r.restarts) } else { String::new() };
                    let detail = r.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
                    format!("{role} {}{restarts}{detail}", r.state)
                }),
                if n.simulated { "simulated".into() } else { String::new() },
            ]
        })
        .collect();
    crate::outln!(
        "{}",
        table(&["RANK", "DEVICE", "STATE", "COUNTRY", "ADDRESS", "OVERLAY", "PRICE", "RAY", ""], &rows)
    );
    // How each node reaches its peers on the lease's private network.
    let paths: Vec<Vec<String>> = cluster
        .nodes
        .iter()
        .filter_map(|n| n.overlay.as_ref().map(|o| (n.rank, o)))
        .flat_map(|(rank, o)| {
            o.peers.iter().map(move |(peer, path)| vec![rank.to_string(), peer.clone(), path.clone()])
        })
        .collect();
    if !paths.is_empty() {
        crate::outln!("overlay paths:\n{}", table(&["RANK", "PEER", "PATH"], &paths));
    }
    if !cluster.departed.is_empty() {
        let rows: Vec<Vec<String>> = cluster
            .departed
            .iter()
            .map(|n| {
                let billed_ms = (n.left_at.0 - n.joined_at.0).max(0);
                vec![
                    n.rank.to_string(),
                    n.device_id.to_string(),
                    format!("{:.0} s", billed_ms as f64 / 1000.0),
                    n.reason.clone(),
                ]
            })
            .collect();
        crate::outln!("replaced:\n{}", table(&["RANK", "DEVICE", "BILLED", "WHY"], &rows));
    }
}

pub async fn run(context: &Context, command: ClusterCommand) -> anyhow::Result<i32> {
    // Bad flags are reported before anything else (such as a missing API key).
    let request = match &command {
        ClusterCommand::Create(args) => {
            let mut request = match &args.quote {
                Some(quote_id) => CreateCluster { quote_id: Some(quote_id.clone()), ..Default::default() },
                None => args.request.to_request()?,
            };
            if let Some(kind) = &args.kind {
                request.kind = Some(kind.parse().map_err(anyhow::Error::msg)?);
            }
            if args.ray_version.is_some() {
                request.ray_version = args.ray_version.clone();
            }
            Some(request)
        }
        _ => None,
    };
    let client = context.client()?;
    match command {
        ClusterCommand::Create(args) => {
            let request = request.expect("built above for create");
            let wait = spinner("reserving nodes", context.json);
            let created = client.create_cluster(&request).await;
            wait.finish_and_clear();
            let mut cluster = created?;
            if !context.json {
                eprintln!("cluster {} reserved: {} node(s)", cluster.id, cluster.nodes.len());
            }
            if !args.no_wait {
                cluster = wait_for_ray(&client, cluster, context.json).await?;
            }
            if context.json {
                print_json(&cluster);
            } else {
                print_cluster(&cluster, client.base());
            }
        }
        ClusterCommand::List { all } => {
            let clusters = client.clusters(all).await?;
            if context.json {
                print_json(&clusters);
            } else if clusters.is_empty() {
                crate::outln!("no clusters; create one with `herd cluster create --cpu --nodes 2`");
            } else {
                let now = now_ms();
                let rows: Vec<Vec<String>> = clusters
                    .iter()
                    .map(|c| {
                        vec![
                            c.id.to_string(),
                            c.state.to_string(),
                            format!("{} × {}", c.nodes.len(), c.hardware),
                            c.country.clone().unwrap_or_else(|| "any".into()),
                            human_ms(c.ended_at.map_or(now, |t| t.0) - c.created_at.0),
                            c.expires_at.to_string(),
                        ]
                    })
                    .collect();
                crate::outln!("{}", table(&["ID", "STATE", "NODES", "COUNTRY", "AGE", "EXPIRES"], &rows));
            }
        }
        ClusterCommand::Show { id } => {
            let cluster = client.cluster(&id).await?;
            if context.json {
                print_json(&cluster);
            } else {
                print_cluster(&cluster, client.base());
            }
        }
        ClusterCommand::Delete { id, refund_in_credits } => {
            let before = client.cluster(&id).await?;
            if before.state == ClusterState::Terminated {
                // Deleting again changes nothing: say so instead of claiming a release.
                if context.json {
                    print_json(&before);
                } else {
                    let when = before.ended_at.map(|t| format!(" at {t}")).unwrap_or_default();
                    crate::outln!("cluster {} was already terminated{when}; nothing to release", before.id);
                }
                return Ok(0);
            }
            let cluster = if refund_in_credits {
                client.delete_cluster_refunding_credits(&id).await?
            } else {
                client.delete_cluster(&id).await?
            };
            if context.json {
                print_json(&cluster);
            } else {
                crate::outln!("cluster {} terminated; {} device(s) released", cluster.id, cluster.nodes.len());
            }
        }
        ClusterCommand::Extend { id, hours } => {
            let cluster = client.extend_cluster(&id, hours).await?;
            if context.json {
                print_json(&cluster);
            } else {
                crate::outln!("cluster {} now expires {}", cluster.id, cluster.expires_at);
            }
        }
    }
    Ok(0)
}
