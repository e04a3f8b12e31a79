use clap::Subcommand;
use herd_proto::api::StakeStatus;

use super::Context;
use crate::output::{print_json, table};

#[derive(Debug, Subcommand)]
pub enum StakeCommand {
    /// Stake IO from your wallet on one of your devices.
    Add {
        #[arg(long)]
        device: String,
        /// Decimal IO.
        #[arg(long)]
        amount: String,
    },
    /// Unstake: the first call starts the 14-day cooldown, a call after it returns the IO.
    Remove {
        #[arg(long)]
        device: String,
    },
    /// A device's stake against its minimum.
    Status {
        #[arg(long)]
        device: String,
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
    let status = match command {
        StakeCommand::Add { device, amount } => context.client()?.add_stake(&device, &amount).await?,
        StakeCommand::Remove { device } => context.client()?.remove_stake(&device).await?,
        StakeCommand::Status { device } => context.client_or_anonymous().stake(&device).await?,
    };
    print(&status, context.json);
    Ok(0)
}
