//! Subcommands. Each module owns one noun; all share `Context` (coordinator URL, `--json`).

mod account;
pub mod bench;
mod cluster;
mod job;
mod market;
mod network;
mod operator;
pub mod request;
mod stake;
mod wallet;
mod worker;

use clap::{Parser, Subcommand};

use crate::client::Client;
use crate::credentials::Credentials;

pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:7700";

#[derive(Debug, Parser)]
#[command(name = "herd", version, about = "herd — an open, decentralized GPU cloud", propagate_version = true)]
pub struct Cli {
    /// The coordinator's URL (optional: the default is a local network's).
    #[arg(long, global = true, value_name = "URL", env = "HERD_COORDINATOR", default_value = DEFAULT_COORDINATOR)]
    pub coordinator: String,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log format for long-running commands (logs go to stderr; filter with RUST_LOG).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Settings file (TOML; default: config.toml in the config directory, when it exists).
    /// Flags and HERD_… variables win over it.
    #[arg(long, global = true, env = "HERD_CONFIG_FILE", value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a local network in one process: coordinator + a worker for this machine.
    Up(network::UpArgs),
    /// Start a local network, create an account and a cluster, and run a real job on it.
    Demo(network::DemoArgs),
    /// Run a coordinator.
    Coordinator(network::CoordinatorArgs),
    /// Supply this machine to a network.
    #[command(subcommand)]
    Worker(worker::WorkerCommand),
    /// Your account: keys and API keys.
    #[command(subcommand)]
    Account(account::AccountCommand),
    /// What the network offers.
    #[command(subcommand)]
    Market(market::MarketCommand),
    /// Rent devices as clusters.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Run commands on clusters.
    #[command(subcommand)]
    Job(job::JobCommand),
    /// Your balances, the devnet faucet and your ledger history.
    #[command(subcommand)]
    Wallet(wallet::WalletCommand),
    /// The public ledger: its head, and an independent verification of the whole journal.
    #[command(subcommand)]
    Ledger(wallet::LedgerCommand),
    /// Stake IO on your devices (needed for block rewards).
    #[command(subcommand)]
    Stake(stake::StakeCommand),
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Operator: the audit log of privileged and money-moving actions.
    #[command(subcommand)]
    Audit(operator::AuditCommand),
    /// Operator: block or unblock devices, slash stakes (signed with the ledger key).
    #[command(subcommand)]
    Operator(operator::OperatorCommand),
}

pub struct Context {
    pub coordinator: String,
    pub json: bool,
    pub credentials: Credentials,
}

impl Context {
    pub fn anonymous_client(&self) -> Client {
        Client::new(&self.coordinator, None)
    }

    /// Signed in if this user has a key for the coordinator (owners see more of their own
    /// devices), anonymous otherwise.
    pub fn client_or_anonymous(&self) -> Client {
        match self.credentials.get(&self.coordinator) {
            Ok(Some(credential)) => Client::new(&self.coordinator, Some(credential.api_key)),
            _ => self.anonymous_client(),
        }
    }

    /// A client with this user's API key for the coordinator.
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(&self.coordinator, Some(self.credentials.api_key(&self.coordinator)?)))
    }
}

/// Runs a command; the exit code is returned so `job run` can fail when a node failed.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let context = Context { coordinator: cli.coordinator, json: cli.json, credentials: Credentials::at_default() };
    match cli.command {
        Command::Up(args) => network::up(&context, args).await,
        Command::Demo(args) => network::demo(&context, args).await,
        Command::Coordinator(args) => network::coordinator(args).await,
        Command::Worker(command) => worker::run(&context, command).await,
        Command::Account(command) => account::run(&context, command).await,
        Command::Market(command) => market::run(&context, command).await,
        Command::Cluster(command) => cluster::run(&context, command).await,
        Command::Job(command) => job::run(&context, command).await,
        Command::Bench(command) => bench::run(&context, command).await,
        Command::Wallet(command) => wallet::wallet(&context, command).await,
        Command::Stake(command) => stake::run(&context, command).await,
        Command::Ledger(command) => wallet::ledger(&context, command).await,
        Command::Audit(command) => operator::audit(&context, command).await,
        Command::Operator(command) => operator::run(&context, command).await,
    }
}

/// A device's full id from what a person typed: the id itself, or a unique prefix of it (as
/// git and docker take short ids).
pub async fn resolve_device(client: &Client, text: &str) -> anyhow::Result<String> {
    if herd_core::Address::parse(text).is_ok() {
        return Ok(text.to_owned());
    }
    let matches = client.devices(&format!("id_prefix={}&limit=3", herd_core::url::percent_encode(text))).await?;
    match matches.as_slice() {
        [] => anyhow::bail!("no device id starts with {text:?} (see `herd market devices`)"),
        [device] => Ok(device.id.to_string()),
        several => anyhow::bail!(
            "{text:?} is the start of several device ids ({}…); give more characters",
            several.iter().map(|d| d.id.to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// ISO 3166-1 alpha-2, normalised to upper case (clap value parser).
pub fn parse_country(text: &str) -> Result<String, String> {
    if text.len() == 2 && text.bytes().all(|b| b.is_ascii_alphabetic()) {
        Ok(text.to_ascii_uppercase())
    } else {
        Err(format!("expected a two-letter ISO 3166-1 country code such as US or DE, got {text:?}"))
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every flag and argument a user can see says what it is: `--help` with an empty line
    /// next to a flag is a question the tool leaves to its user.
    #[test]
    fn every_visible_argument_has_help() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "herd", &mut missing);
        assert!(missing.is_empty(), "arguments without help:\n{}", missing.join("\n"));
    }
}
