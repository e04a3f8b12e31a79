use clap::{Args, Subcommand};
use herd_proto::api::{Cluster, CreateCluster};

use super::{parse_country, Context};
use crate::output::{human_ms, now_ms, print_json, spinner, table};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Reserve devices as a cluster (all nodes or none).
    Create(CreateArgs),
    /// Your clusters.
    List {
        /// Include terminated clusters.
        #[arg(long)]
        all: bool,
    },
    /// One cluster and its nodes.
    Show { id: String },
    /// End the lease: free the devices and stop everything on them.
    Delete { id: String },
    /// Extend a running cluster's lease.
    Extend {
        id: String,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=720))]
        hours: u32,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("hardware").required(true).args(["gpu", "cpu"])))]
pub struct CreateArgs {
    /// GPU model from the catalog, e.g. H100, "RTX 4090", A100-80GB.
    #[arg(long)]
    gpu: Option<String>,
    /// CPU nodes (any machine; CPU-only machines first).
    #[arg(long)]
    cpu: bool,
    /// Number of nodes.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    nodes: u32,
    /// GPUs on each node (GPU clusters only).
    #[arg(long, requires = "gpu", value_parser = clap::value_parser!(u32).range(1..=64))]
    gpus_per_node: Option<u32>,
    /// Only devices in this country (ISO 3166-1 alpha-2).
    #[arg(long, value_parser = parse_country)]
    country: Option<String>,
    /// Lease length in hours.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=720))]
    hours: u32,
}

pub fn print_cluster(cluster: &Cluster) {
    crate::outln!("cluster {}  {}  {} × {}", cluster.id, cluster.state, cluster.nodes.len(), cluster.hardware);
    crate::outln!("created {}  expires {}", cluster.created_at, cluster.expires_at);
    if let Some(reason) = &cluster.end_reason {
        crate::outln!("ended: {reason}");
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
                if n.simulated { "simulated".into() } else { String::new() },
            ]
        })
        .collect();
    crate::outln!("{}", table(&["RANK", "DEVICE", "STATE", "COUNTRY", "ADDRESS", ""], &rows));
}

pub async fn run(context: &Context, command: ClusterCommand) -> anyhow::Result<i32> {
    let client = context.client()?;
    match command {
        ClusterCommand::Create(args) => {
            let request = CreateCluster {
                gpu: args.gpu,
                gpus_per_node: args.gpus_per_node,
                nodes: args.nodes,
                country: args.country,
                hours: Some(args.hours),
            };
            let wait = spinner(format!("reserving {} node(s)", args.nodes), context.json);
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
        ClusterCommand::Delete { id } => {
            let cluster = client.delete_cluster(&id).await?;
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
