use clap::{Args, Subcommand};
use herd_core::money::format_usd;
use herd_core::{ClusterState, DeviceState};
use herd_proto::api::{Cluster, CreateCluster};

use super::request::RequestArgs;
use super::Context;
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
    Show { id: String },
    /// End the lease: free the devices and stop everything on them; the unused hold returns.
    Delete {
        id: String,
        /// Take the unused hold back as credits instead of the lease's asset.
        #[arg(long)]
        refund_in_credits: bool,
    },
    /// Extend a running cluster's lease.
    Extend {
        id: String,
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
}

pub fn print_cluster(cluster: &Cluster) {
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
    let offline = cluster.nodes.iter().filter(|n| n.device_state == DeviceState::Offline).count();
    if cluster.state == ClusterState::Running && offline > 0 {
        crate::outln!("degraded: {offline} of {} node(s) offline; their tasks were marked lost", cluster.nodes.len());
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
                format!("{}/h", format_usd(n.node_hour_micros)),
                if n.simulated { "simulated".into() } else { String::new() },
            ]
        })
        .collect();
    crate::outln!("{}", table(&["RANK", "DEVICE", "STATE", "COUNTRY", "ADDRESS", "PRICE", ""], &rows));
}

pub async fn run(context: &Context, command: ClusterCommand) -> anyhow::Result<i32> {
    // Bad flags are reported before anything else (such as a missing API key).
    let request = match &command {
        ClusterCommand::Create(args) => Some(match &args.quote {
            Some(quote_id) => CreateCluster { quote_id: Some(quote_id.clone()), ..Default::default() },
            None => args.request.to_request()?,
        }),
        _ => None,
    };
    let client = context.client()?;
    match command {
        ClusterCommand::Create(_) => {
            let request = request.expect("built above for create");
            let wait = spinner("reserving nodes", context.json);
            let created = client.create_cluster(&request).await;
            wait.finish_and_clear();
            let cluster = created?;
            if context.json {
                print_json(&cluster);
            } else {
                print_cluster(&cluster);
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
                print_cluster(&cluster);
            }
        }
        ClusterCommand::Delete { id, refund_in_credits } => {
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
