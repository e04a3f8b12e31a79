//! The operator's commands, signed with the coordinator's ledger key: the audit log,
//! blocking and unblocking devices, slashing a stake. Every request carries a fresh id, so
//! the coordinator accepts it once.

use std::path::PathBuf;

use clap::Subcommand;
use herd_proto::api::{AuditEntry, Slash};

use super::{resolve_device, Context};
use crate::output::{print_json, table};

/// The ledger key file: beside the coordinator's database (`herd.db.ledger.key`).
#[derive(Debug, clap::Args)]
pub struct LedgerKeyArg {
    /// The coordinator's ledger key file (beside its database: herd.db.ledger.key).
    #[arg(long, env = "HERD_LEDGER_KEY", value_name = "PATH")]
    ledger_key: PathBuf,
}

impl LedgerKeyArg {
    fn load(&self) -> anyhow::Result<ed25519_dalek::SigningKey> {
        Ok(herd_keys::load(&self.ledger_key)?)
    }
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Privileged and money-moving actions, oldest first: who, what, when, from where.
    List {
        /// Entries after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// How many entries (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Only entries about this device, payout, account or cluster id.
        #[arg(long, value_name = "ID")]
        target: Option<String>,
        #[command(flatten)]
        key: LedgerKeyArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Block a device: it is disconnected, what it runs is lost, and it cannot connect again.
    Block {
        /// The device: its id or a unique prefix of it.
        device: String,
        /// Why (shown to its owner).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        key: LedgerKeyArg,
    },
    /// Lift a block: the device may connect again and proves itself from scratch.
    Unblock {
        /// The device: its id or a unique prefix of it.
        device: String,
        /// Why the block is lifted.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        key: LedgerKeyArg,
    },
    /// Burn part of a device's stake (spoofing, failed-verification, abandoned-lease).
    Slash {
        /// The device: its id or a unique prefix of it.
        device: String,
        /// spoofing, failed-verification or abandoned-lease.
        #[arg(long)]
        reason: String,
        /// Decimal IO to burn (at most what is staked).
        #[arg(long)]
        amount: String,
        /// A unique id for this slash (default: a random one); the same id is refused twice.
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        key: LedgerKeyArg,
    },
    /// Write the configuration of another overlay lighthouse and relay (run it elsewhere with
    /// `nebula -config FILE`), signed by the network's overlay CA; then give the coordinator
    /// `--overlay-lighthouse INDEX=HOST:PORT`. Works offline, from the CA key file.
    OverlayLighthouse {
        /// The overlay CA key (beside the database: `herd.db.overlay-ca.key`).
        #[arg(long, value_name = "PATH")]
        ca_key: std::path::PathBuf,
        /// Which lighthouse: 1 to 15 (0 is the coordinator's own); its overlay address is
        /// 100.64.0.(INDEX+1).
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..16))]
        index: u8,
        /// Where it listens (UDP).
        #[arg(long, default_value = "0.0.0.0:4242")]
        listen: std::net::SocketAddr,
        /// The configuration file to write (mode 0600: it holds the lighthouse's key).
        #[arg(long, value_name = "FILE")]
        out: std::path::PathBuf,
    },
}

fn print_entries(entries: &[AuditEntry]) {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                e.at.to_string(),
                e.actor.clone(),
                e.action.clone(),
                e.target.clone().unwrap_or_default(),
                e.origin.clone().unwrap_or_default(),
                if e.detail.as_object().is_some_and(|o| o.is_empty()) { String::new() } else { e.detail.to_string() },
            ]
        })
        .collect();
    crate::outln!("{}", table(&["SEQ", "AT", "ACTOR", "ACTION", "TARGET", "FROM", "DETAIL"], &rows));
}

pub async fn audit(context: &Context, command: AuditCommand) -> anyhow::Result<i32> {
    let AuditCommand::List { after, limit, target, key } = command;
    let entries = context.anonymous_client().audit(&key.load()?, after, limit, target.as_deref()).await?;
    if context.json {
        print_json(&entries);
    } else if entries.is_empty() {
        crate::outln!("no audit entries after {after}");
    } else {
        print_entries(&entries);
    }
    Ok(0)
}

pub async fn run(context: &Context, command: OperatorCommand) -> anyhow::Result<i32> {
    let client = context.anonymous_client();
    match command {
        OperatorCommand::OverlayLighthouse { ca_key, index, listen, out } => {
            if listen.port() == 0 {
                anyhow::bail!("--listen needs a port: nodes are told where the lighthouse is, so it cannot move");
            }
            let authority = herd_overlay::Authority::load(&ca_key)?;
            let now = crate::output::now_ms() / 1000;
            let config = herd_overlay::LighthouseConfig::signed(&authority, usize::from(index), listen, now);
            herd_overlay::config::write_private(&out, &config.render())
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
            let address = herd_overlay::plan::lighthouse_address(usize::from(index));
            crate::outln!("wrote {} (lighthouse {index}, overlay address {address}, UDP {listen})", out.display());
            crate::outln!("run it:   nebula -config {}", out.display());
            crate::outln!("then:     herd coordinator … --overlay-lighthouse {index}=PUBLIC_HOST:{}", listen.port());
            Ok(0)
        }
        OperatorCommand::Block { device, reason, key } => {
            let id = resolve_device(&client, &device).await?;
            let changed = client.set_blocked(&key.load()?, &id, true, &reason).await?;
            report(context, &changed, "blocked")
        }
        OperatorCommand::Unblock { device, reason, key } => {
            let id = resolve_device(&client, &device).await?;
            let changed = client.set_blocked(&key.load()?, &id, false, &reason).await?;
            report(
                context,
                &changed,
                "unblocked; its agent (which stopped when blocked) may start again and proves the device anew",
            )
        }
        OperatorCommand::Slash { device, reason, amount, id, key } => {
            let device = resolve_device(&client, &device).await?;
            let id = id.unwrap_or_else(|| format!("slash-{}", herd_core::hex::encode(&rand::random::<[u8; 12]>())));
            let message = herd_proto::signing::slash_message(&id, &device, &reason, &amount);
            let signature = ed25519_dalek::Signer::sign(&key.load()?, &message);
            let slash = Slash {
                id: id.clone(),
                reason,
                amount,
                operator_signature: bs58::encode(signature.to_bytes()).into_string(),
            };
            let status = client.slash(&device, &slash).await?;
            if context.json {
                print_json(&status);
            } else {
                crate::outln!(
                    "slash {id}: device {device} now has {} staked",
                    herd_core::money::format_amount(i128::from(status.staked), herd_core::Asset::Io)
                );
            }
            Ok(0)
        }
    }
}

fn report(context: &Context, device: &herd_proto::api::Device, what: &str) -> anyhow::Result<i32> {
    if context.json {
        print_json(device);
    } else {
        crate::outln!("device {} {what} (state: {})", device.id, device.state);
    }
    Ok(0)
}
