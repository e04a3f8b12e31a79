use clap::Subcommand;

use super::{parse_country, Context};
use crate::client::query_string;
use crate::output::{print_json, table};

#[derive(Debug, Subcommand)]
pub enum MarketCommand {
    /// Devices on the network (public).
    Devices {
        /// pending, ready, hired, offline or blocked.
        #[arg(long)]
        state: Option<String>,
        /// GPU model, e.g. H100.
        #[arg(long)]
        gpu: Option<String>,
        #[arg(long, value_parser = parse_country)]
        country: Option<String>,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
}

fn gib(bytes: u64) -> String {
    format!("{} GiB", bytes >> 30)
}

pub async fn run(context: &Context, command: MarketCommand) -> anyhow::Result<i32> {
    match command {
        MarketCommand::Devices { state, gpu, country, limit } => {
            let query = query_string(&[
                ("state", state),
                ("gpu", gpu),
                ("country", country),
                ("limit", Some(limit.to_string())),
            ]);
            let devices = context.client_or_anonymous().devices(&query).await?;
            if context.json {
                print_json(&devices);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = devices
                .iter()
                .map(|d| {
                    vec![
                        d.id.short().to_owned(),
                        d.state.to_string(),
                        d.gpu_model.as_ref().map_or("CPU".into(), |m| format!("{}×{m}", d.gpu_count)),
                        format!("{} cores", d.spec.cpu.logical_cores),
                        gib(d.spec.memory_bytes),
                        d.country.clone(),
                        if d.simulated { "simulated".into() } else { String::new() },
                    ]
                })
                .collect();
            crate::outln!("{}", table(&["DEVICE", "STATE", "GPUS", "CPU", "MEMORY", "COUNTRY", ""], &rows));
        }
    }
    Ok(0)
}
