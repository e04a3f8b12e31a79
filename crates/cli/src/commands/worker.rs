use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use herd_core::Address;
use herd_worker::{keys, AgentConfig, OwnerConsent, RuntimeConfig, RuntimeKind};

use super::{parse_country, Context};
use crate::credentials::data_dir;
use crate::output::print_json;

#[derive(Debug, Subcommand)]
// Parsed once per process: the size of the variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum WorkerCommand {
    /// Issue a single-use pairing code (15 minutes) for adding a device from a machine that
    /// does not hold your account key.
    Pair,
    /// Run the worker agent for this machine until Ctrl-C.
    Start {
        /// The supplier account that earns from this device (default: your account).
        #[arg(long)]
        owner: Option<String>,
        /// A code from `herd worker pair`, run by the owner; needed when the owner's account
        /// key is not on this machine and the device is new.
        #[arg(long, requires = "owner")]
        pairing_code: Option<String>,
        /// Where the device is (ISO 3166-1 alpha-2).
        #[arg(long, env = "HERD_COUNTRY", default_value = "US", value_parser = parse_country)]
        country: String,
        /// What runs customers' tasks: `docker` (isolated containers; the default when an
        /// engine is reachable) or `process` (local processes, for development).
        #[arg(long, value_enum, default_value = "auto")]
        runtime: Runtime,
        /// The image tasks run in when their job names none (docker runtime).
        #[arg(long, env = "HERD_DEFAULT_IMAGE", default_value = herd_worker::DEFAULT_IMAGE)]
        image: String,
        /// Load an image archive (`docker save` format) into the engine before starting, for
        /// machines without a registry (repeatable).
        #[arg(long = "load-image")]
        load_images: Vec<PathBuf>,
        /// Let task containers reach this host and its private networks (your LAN, cloud
        /// metadata, other containers). By default a firewall policy herd owns refuses all of
        /// it and needs root or CAP_NET_ADMIN; turn it off only where herd may not manage it.
        #[arg(long)]
        no_egress_policy: bool,
        /// A local image customers' jobs may run besides herd's own (repeatable): a name
        /// with its tag, a repository for all its tags, or `prefix*`. Other images run only
        /// as pulled from their registry for the job.
        #[arg(long = "allow-image", value_name = "IMAGE")]
        allowed_images: Vec<String>,
        /// Holds the device key and jobs' working directories.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Your floor price in USD per GPU-hour (per node-hour for a CPU-only machine); the
        /// market never offers the device below it. Default: half the catalog reference.
        #[arg(long, value_parser = herd_core::money::parse_usd)]
        floor_price: Option<i64>,
        /// Address other nodes use to reach this device (default: the local address of the
        /// connection to the coordinator).
        #[arg(long)]
        advertise_addr: Option<String>,
        /// Where Ray's managed Python environments live, one per Ray version (default:
        /// DATA_DIR/ray-envs); workers on one machine may share it.
        #[arg(long, env = "HERD_RAY_ENVS_DIR")]
        ray_envs_dir: Option<PathBuf>,
        /// The Python 3 interpreter Ray environments are made from.
        #[arg(long, env = "HERD_PYTHON", default_value = "python3")]
        python: String,
        /// A pip requirement every Ray node of this machine gets beside Ray, installed once
        /// (repeatable), e.g. `--ray-package tensorflow-cpu --ray-package tf-keras` for RLlib.
        #[arg(long = "ray-package", value_name = "REQUIREMENT")]
        ray_packages: Vec<String>,
        /// The Nebula program lease overlays run on. Without it (or without /dev/net/tun and
        /// CAP_NET_ADMIN) the device takes single-node leases only, and says why.
        #[arg(long, env = "HERD_NEBULA", default_value = "nebula")]
        nebula: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Runtime {
    /// Docker when an engine is reachable, else process.
    Auto,
    /// Tasks run as local processes (development; no isolation beyond a clean environment).
    Process,
    /// Tasks run in isolated containers through the Docker engine API.
    Docker,
}

impl From<Runtime> for RuntimeKind {
    fn from(runtime: Runtime) -> RuntimeKind {
        match runtime {
            Runtime::Auto => RuntimeKind::Auto,
            Runtime::Process => RuntimeKind::Process,
            Runtime::Docker => RuntimeKind::Docker,
        }
    }
}

pub async fn run(context: &Context, command: WorkerCommand) -> anyhow::Result<i32> {
    let (
        owner,
        pairing_code,
        country,
        dir,
        advertise_addr,
        floor_price,
        runtime,
        ray_envs_dir,
        python,
        ray_packages,
        nebula,
    ) = match command {
        WorkerCommand::Pair => return pair(context).await,
        WorkerCommand::Start {
            owner,
            pairing_code,
            country,
            runtime,
            image,
            load_images,
            no_egress_policy,
            allowed_images,
            data_dir,
            advertise_addr,
            floor_price,
            ray_envs_dir,
            python,
            ray_packages,
            nebula,
        } => {
            let runtime = RuntimeConfig {
                kind: runtime.into(),
                default_image: image,
                load_images,
                egress_policy: !no_egress_policy,
                allowed_images,
            };
            (
                owner,
                pairing_code,
                country,
                data_dir,
                advertise_addr,
                floor_price,
                runtime,
                ray_envs_dir,
                python,
                ray_packages,
                nebula,
            )
        }
    };
    let account_key = context.credentials.account_key()?;
    let owner = match owner {
        Some(owner) => Address::parse(&owner)?,
        None => keys::address_of(
            account_key
                .as_ref()
                .context("no --owner given and no account on this machine; run `herd account create` first")?,
        ),
    };
    let consent = match (pairing_code, account_key) {
        (Some(code), _) => OwnerConsent::PairingCode(code),
        (None, Some(key)) if keys::address_of(&key) == owner => OwnerConsent::Key(key),
        // An already registered device needs no consent; a new one is refused with advice.
        (None, _) => OwnerConsent::None,
    };
    let data_dir = dir.unwrap_or_else(|| data_dir().join("worker"));
    // One agent per data dir: two would be one device key on two connections.
    let _lock = crate::instance_lock::InstanceLock::data_dir(&data_dir)?;
    let mut config = AgentConfig::new(&context.coordinator, data_dir, owner, consent, country);
    config.advertise_addr = advertise_addr;
    config.floor_micros = floor_price;
    config.ray_envs_dir = ray_envs_dir;
    config.python = python;
    config.ray_packages = ray_packages;
    config.runtime = runtime;
    config.nebula = nebula;
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

async fn pair(context: &Context) -> anyhow::Result<i32> {
    let code = context.client()?.pairing_code().await?;
    if context.json {
        print_json(&code);
    } else {
        crate::outln!("pairing code {} (single use, valid until {})", code.code, code.expires_at);
        crate::outln!("on the new machine run:");
        crate::outln!(
            "  herd worker start --coordinator {} --owner {} --pairing-code {}",
            context.coordinator,
            code.owner,
            code.code
        );
    }
    Ok(0)
}
