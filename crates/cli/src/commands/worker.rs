use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use herd_core::Address;
use herd_worker::{keys, AgentConfig};

use super::{parse_country, Context};
use crate::credentials::data_dir;

#[derive(Debug, Subcommand)]
pub enum WorkerCommand {
    /// Run the worker agent for this machine until Ctrl-C.
    Start {
        /// The supplier account that earns from this device (default: your account).
        #[arg(long)]
        owner: Option<String>,
        /// Where the device is (ISO 3166-1 alpha-2).
        #[arg(long, env = "HERD_COUNTRY", default_value = "US", value_parser = parse_country)]
        country: String,
        #[arg(long, value_enum, default_value = "process")]
        runtime: Runtime,
        /// Holds the device key and jobs' working directories.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Address other nodes use to reach this device (default: the local address of the
        /// connection to the coordinator).
        #[arg(long)]
        advertise_addr: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Runtime {
    /// Tasks run as local processes (development; no isolation beyond a clean environment).
    Process,
}

pub async fn run(context: &Context, command: WorkerCommand) -> anyhow::Result<i32> {
    let WorkerCommand::Start { owner, country, runtime: Runtime::Process, data_dir: dir, advertise_addr } = command;
    let owner = match owner {
        Some(owner) => Address::parse(&owner)?,
        None => {
            let key = context
                .credentials
                .account_key()?
                .context("no --owner given and no account on this machine; run `herd account create` first")?;
            keys::address_of(&key)
        }
    };
    let data_dir = dir.unwrap_or_else(|| data_dir().join("worker"));
    let mut config = AgentConfig::new(&context.coordinator, data_dir, owner, country);
    config.advertise_addr = advertise_addr;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut agent = tokio::spawn(herd_worker::run(config, stop_rx));
    tokio::select! {
        result = &mut agent => {
            result??;
            return Ok(0);
        }
        _ = super::network::wait_for_signal() => {}
    }
    let _ = stop.send(true);
    agent.await??;
    Ok(0)
}
