use clap::Subcommand;
use herd_proto::api::StakeStatus;

use super::{resolve_device, Context};
use crate::output::{print_json, table};

/// The device, named as every command names one: positionally, by its id or a unique prefix
/// of it (`--device` still works).
#[derive(Debug, clap::Args)]
pub struct DeviceArg {
    /// The device: its id, or the start of it as tables show it (e.g. 6viRPGJb).
    #[arg(value_name = "DEVICE", required_unless_present = "flag")]
    positional: Option<String>,
    #[arg(long = "device", value_name = "DEVICE", conflicts_with = "positional", hide = true)]
    flag: Option<String>,
}

impl DeviceArg {
    fn text(&self) -> &str {
        self.positional.as_deref().or(self.flag.as_deref()).expect("clap requires one")
    }
}

#[derive(Debug, Subcommand)]
pub enum StakeCommand {
    /// Stake IO from your wallet on one of your devices.
    Add {
        #[command(flatten)]
        device: DeviceArg,
        /// Decimal IO.
        #[arg(long)]
        amount: String,
    },
    /// Unstake: the first call starts the 14-day cooldown, a call after it returns the IO.
    Remove {
        #[command(flatten)]
        device: DeviceArg,
    },
    /// A device's stake against its minimum.
    Status {
        #[command(flatten)]
        device: DeviceArg,
    },
}

fn io(minor: i64) -> String {
    herd_core::money::format_amount(i128::from(minor), herd_core::Asset::Io)
}

fn print(status: &StakeStatus, json: bool) {
    if json {
        print_json(status);
        return;
    }
    let mut rows = vec![
        vec!["device".into(), status.device_id.to_string()],
        vec!["staked".into(), io(status.staked)],
        vec![
            "minimum".into(),
            format!("{} ({})", io(status.min_stake), if status.meets_minimum { "met" } else { "not met" }),
        ],
    ];
    if let (Some(requested), Some(withdrawable)) = (status.unstake_requested_at, status.withdrawable_at) {
        rows.push(vec!["unstake requested".into(), requested.to_string()]);
        rows.push(vec!["withdrawable from".into(), withdrawable.to_string()]);
    }
    crate::outln!("{}", table(&["STAKE", ""], &rows));
}

pub async fn run(context: &Context, command: StakeCommand) -> anyhow::Result<i32> {
    let anonymous = context.anonymous_client();
    let status = match command {
        StakeCommand::Add { device, amount } => {
            let device = resolve_device(&anonymous, device.text()).await?;
            context.client()?.add_stake(&device, &amount).await?
        }
        StakeCommand::Remove { device } => {
            let device = resolve_device(&anonymous, device.text()).await?;
            context.client()?.remove_stake(&device).await?
        }
        StakeCommand::Status { device } => {
            let device = resolve_device(&anonymous, device.text()).await?;
            context.client_or_anonymous().stake(&device).await?
        }
    };
    print(&status, context.json);
    Ok(0)
}
