use clap::Subcommand;

use herd_core::money::format_usd;

use super::request::RequestArgs;
use super::{parse_country, Context};
use crate::client::query_string;
use crate::output::{print_json, table};

#[derive(Debug, Subcommand)]
pub enum MarketCommand {
    /// Current prices per GPU model: supply, use, price, 24 h change.
    Prices,
    /// The exact price of a request before creating it (held 5 minutes).
    Quote(RequestArgs),
    /// Devices on the network (public).
    Devices {
        /// pending, ready, hired, offline or blocked.
        #[arg(long)]
        state: Option<String>,
        /// GPU model, e.g. H100.
        #[arg(long)]
        gpu: Option<String>,
        /// Only devices in this country (ISO code, e.g. US).
        #[arg(long, value_parser = parse_country)]
        country: Option<String>,
        /// At most this many devices (1..=1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// A device's proofs of compute, most recent first (public).
    Proofs {
        /// The device: its id, or the start of it as tables show it (e.g. 6viRPGJb).
        device: String,
    },
}

/// What a price is per: GPU models are priced per GPU-hour, CPU machines per node-hour.
fn per_unit(cpu: bool) -> &'static str {
    if cpu {
        "node-h"
    } else {
        "GPU-h"
    }
}

fn gib(bytes: u64) -> String {
    format!("{} GiB", bytes >> 30)
}

pub async fn run(context: &Context, command: MarketCommand) -> anyhow::Result<i32> {
    match command {
        MarketCommand::Prices => {
            let prices = context.anonymous_client().market_prices().await?;
            if context.json {
                print_json(&prices);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = prices
                .iter()
                .filter(|p| p.devices_online > 0)
                .map(|p| {
                    vec![
                        p.model.clone(),
                        p.devices_online.to_string(),
                        p.devices_hired.to_string(),
                        p.gpus_online.to_string(),
                        format!("{:.1} %", p.utilisation_permille as f64 / 10.0),
                        // The CPU row is the reference price of one core-hour.
                        format!("{}/{}", format_usd(p.price_micros), if p.model == "CPU" { "core-h" } else { "GPU-h" }),
                        format!(
                            "{}{}",
                            if p.change_24h_micros >= 0 { "+" } else { "" },
                            format_usd(p.change_24h_micros)
                        ),
                    ]
                })
                .collect();
            crate::outln!("{}", table(&["MODEL", "DEVICES", "HIRED", "GPUS", "USE", "PRICE", "24H"], &rows));
        }
        MarketCommand::Quote(args) => {
            let quote = context.client()?.quote(&args.to_request()?).await?;
            if context.json {
                print_json(&quote);
                return Ok(0);
            }
            crate::outln!(
                "quote {} for {} × {}, valid until {}",
                quote.id,
                quote.nodes.len(),
                quote.hardware,
                quote.expires_at
            );
            let rows: Vec<Vec<String>> = quote
                .nodes
                .iter()
                .map(|n| {
                    vec![
                        n.device_id.short().to_owned(),
                        n.gpu_model.as_ref().map_or("CPU".into(), |m| format!("{}×{m}", n.gpus)),
                        n.country.clone(),
                        n.connectivity.to_string(),
                        n.security.to_string(),
                        n.reputation.to_string(),
                        format!("{}/h", format_usd(n.node_hour_micros)),
                    ]
                })
                .collect();
            crate::outln!(
                "{}",
                table(&["DEVICE", "GPUS", "COUNTRY", "TIER", "SECURITY", "REPUTATION", "PRICE"], &rows)
            );
            let lines = vec![
                vec!["per hour".into(), format_usd(quote.per_hour_micros)],
                vec![format!("× {} h", quote.hours), format_usd(quote.subtotal_micros)],
                vec!["reservation fee 0.25 %".into(), format_usd(quote.reservation_fee_micros)],
                vec![format!("payment fee ({})", quote.asset), format_usd(quote.payment_fee_micros)],
                vec!["total".into(), format_usd(quote.total_micros)],
            ];
            crate::outln!("{}", table(&["", ""], &lines));
            crate::outln!("create it with: herd cluster create --quote {}", quote.id);
        }
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
                        d.connectivity.to_string(),
                        d.security.to_string(),
                        d.reputation.to_string(),
                        format!("{}/{}", format_usd(d.floor_micros), per_unit(d.gpu_model.is_none())),
                        if d.simulated { "simulated".into() } else { String::new() },
                    ]
                })
                .collect();
            let header =
                ["DEVICE", "STATE", "GPUS", "CPU", "MEMORY", "COUNTRY", "TIER", "SECURITY", "REP", "FLOOR", ""];
            crate::outln!("{}", table(&header, &rows));
        }
        MarketCommand::Proofs { device } => {
            let client = context.anonymous_client();
            let device = super::resolve_device(&client, &device).await?;
            let proofs = client.verifications(&device).await?;
            if context.json {
                print_json(&proofs);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = proofs
                .iter()
                .map(|p| {
                    let took = p.committed_at.map_or("—".into(), |c| format!("{} ms", c.0 - p.issued_at.0));
                    vec![
                        p.issued_at.to_string(),
                        p.purpose.clone(),
                        p.claim.clone(),
                        format!("{}×{} · {}", p.rows, p.n, p.steps),
                        format!("{took} / {} ms", p.deadline_ms),
                        p.outcome.as_str().to_owned(),
                        p.reason.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            let header = ["ISSUED", "PURPOSE", "CLAIM", "CHAIN", "COMMITTED / DEADLINE", "OUTCOME", "REASON"];
            crate::outln!("{}", table(&header, &rows));
        }
    }
    Ok(0)
}
