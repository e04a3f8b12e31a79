//! The supplier console: the account's devices, each with exactly why it is or is not
//! earning block rewards right now (judged by the same rules as the hourly block), what
//! they earned (job pay and block rewards), what was slashed, and payouts.

use std::collections::HashMap;

use axum::extract::{Query, State};
use herd_core::{Asset, DeviceState, Timestamp};
use herd_ledger::rewards::{ineligibilities, Candidate, Ineligible, UPTIME_MIN_MS};
use herd_proto::api::Device;
use maud::html;
use serde::Deserialize;

use super::console::{console_page, payouts_table, Section};
use super::explorer::amount;
use super::session::SignedIn;
use super::{badge, device_link, io, simulated_mark, time, PageError, PageResult};
use crate::app::{now, App};

/// Devices per page.
const DEVICES_SHOWN: u32 = 500;
const SLASHES_SHOWN: u32 = 100;

/// Whether a device earns block rewards now, and if not, every reason why.
enum Earning {
    Yes { hired: bool },
    No(Vec<String>),
}

fn duration(ms: i64) -> String {
    let minutes = ms.max(0) / 60_000;
    format!("{} h {:02} min", minutes / 60, minutes % 60)
}

fn reason(why: Ineligible, candidate: &Candidate, device: &Device, at: Timestamp) -> String {
    match why {
        Ineligible::UptimeUnder5h => format!(
            "{}: online for {} of the 5 h needed (eligible from {} UTC if it stays online)",
            why.reason(),
            duration(candidate.continuous_uptime_ms),
            Timestamp(at.0 + UPTIME_MIN_MS - candidate.continuous_uptime_ms)
                .to_string()
                .replace('T', " ")
                .trim_end_matches('Z')
        ),
        Ineligible::Understaked => format!(
            "{}: {} staked of {}; to earn, run: herd stake add --device {} --amount {}",
            why.reason(),
            io(i128::from(candidate.staked)),
            io(i128::from(candidate.min_stake)),
            device.id,
            io(i128::from(candidate.min_stake - candidate.staked.min(candidate.min_stake))).trim_end_matches(" IO"),
        ),
        Ineligible::NotVerifiedThisHour => {
            format!("{}: its next proof of compute is due within the hour", why.reason())
        }
        Ineligible::NoConnectivity => {
            format!("{}: the bandwidth test found too little (or has not run): check the network", why.reason())
        }
    }
}

fn earning_now(device: &Device, candidate: Option<&Candidate>, at: Timestamp) -> Earning {
    if device.simulated {
        return Earning::No(vec!["a simulated device: it never earns".into()]);
    }
    match device.state {
        DeviceState::Blocked => return Earning::No(vec![format!("blocked: {}", device.state_reason)]),
        DeviceState::Pending => {
            return Earning::No(vec![format!("pending verification: {}", device.state_reason)]);
        }
        DeviceState::Offline => {
            let since = device.last_heartbeat_at.map(|t| t.to_string().replace('T', " ")).unwrap_or_default();
            return Earning::No(vec![format!("offline (last heard {since}): start its agent again")]);
        }
        _ => {}
    }
    let Some(candidate) = candidate else {
        return Earning::No(vec![format!("{}: {}", device.state.as_str(), device.state_reason)]);
    };
    let reasons = ineligibilities(candidate);
    if reasons.is_empty() {
        Earning::Yes { hired: device.state == DeviceState::Hired }
    } else {
        Earning::No(reasons.into_iter().map(|why| reason(why, candidate, device, at)).collect())
    }
}

fn income_total(income: &[crate::store::Income], code: &str, asset: Asset) -> i64 {
    income.iter().filter(|i| i.code == code && i.asset == asset).map(|i| i.total).sum()
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    page: Option<String>,
}

pub async fn devices(State(app): State<App>, signed_in: SignedIn, Query(query): Query<PageQuery>) -> PageResult {
    let owner = &signed_in.address;
    let at = now();
    let page: u32 = match query.page.as_deref() {
        None | Some("") => 0,
        Some(text) => {
            text.parse().map_err(|_| PageError::BadRequest(format!("page must be a whole number, got {text:?}")))?
        }
    };
    let offset = page.checked_mul(DEVICES_SHOWN).ok_or_else(|| PageError::BadRequest(format!("no page {page}")))?;
    let devices = app.store.owned_devices(owner, DEVICES_SHOWN, offset).await?;
    let owned = app.store.account(owner).await?.map_or(0, |a| a.devices);
    let more = u64::from(offset) + (devices.len() as u64) < owned;
    let mut candidates = HashMap::new();
    for device in app.store.reward_candidates(at.0, Some(owner)).await? {
        let id = device.id.clone();
        candidates.insert(id, app.reward_candidate(device, at.0).await);
    }
    let rewards: HashMap<String, crate::store::DeviceRewards> =
        app.store.block_rewards_by_device(owner).await?.into_iter().map(|r| (r.device.clone(), r)).collect();
    let income = app.store.income_of(owner).await?;
    let mut job_pay: HashMap<String, Vec<(Asset, i64)>> = HashMap::new();
    for (device, asset, total) in app.store.job_earnings_by_device(owner).await? {
        job_pay.entry(device).or_default().push((asset, total));
    }
    let ids: Vec<_> = devices.iter().map(|d| d.id.clone()).collect();
    let (slashes, slashed) = app.store.slashes_of(&ids, SLASHES_SHOWN).await?;
    let payouts = app.store.payouts_of(owner, 20).await?;
    // Over all the owner's devices, not just this page: the block judges every candidate.
    let earning = candidates.values().filter(|c| ineligibilities(c).is_empty()).count();

    let body = html! {
        h1 { "Your devices" }
        div class="cards" {
            div class="card" { div class="value" { (owned) } div class="label" { "devices" } }
            div class="card" { div class="value" { (earning) } div class="label" { "earning block rewards now" } }
            @for asset in Asset::ALL {
                @let pay = income_total(&income, "lease-earning", asset);
                @if pay > 0 {
                    div class="card" { div class="value" { (amount(pay as u64, asset)) } div class="label" { "job earnings (" (asset.as_str().to_uppercase()) ")" } }
                }
            }
            div class="card" { div class="value" { (io(i128::from(income_total(&income, "block-reward", Asset::Io)))) } div class="label" { "block rewards" } }
            div class="card" {
                div class="value" { (io(i128::from(slashed))) }
                div class="label" { "slashed" @if more || page > 0 { " (this page's devices)" } }
            }
        }
        @if owned > devices.len() as u64 {
            nav class="pages" aria-label="Pages" {
                span class="muted" { "Devices " (offset + 1) "–" (u64::from(offset) + devices.len() as u64) " of " (owned) }
                @if page > 0 { a href=(format!("/console/devices?page={}", page - 1)) rel="prev" { "← previous" } }
                @if more { a href=(format!("/console/devices?page={}", page + 1)) rel="next" { "next →" } }
            }
        }
        @if devices.is_empty() {
            p { "No devices yet. On each machine: " code { "herd worker start --coordinator URL" } " (with your account key, or a pairing code from " code { "herd worker pair" } ")." }
        } @else {
            table class="devices-status" {
                caption { "Each device as this hour's block judges it (eligibility: 5 h uptime, the minimum stake, a passed proof of compute this hour, connectivity above none)" }
                thead { tr {
                    th scope="col" { "Device" } th scope="col" { "Hardware" } th scope="col" { "State" }
                    th scope="col" { "Block rewards now" } th scope="col" class="num" { "Lease pay" }
                    th scope="col" class="num" { "Block rewards" }
                } }
                tbody {
                    @for device in &devices {
                        @let status = earning_now(device, candidates.get(device.id.as_str()), at);
                        tr {
                            td { (device_link(&device.id)) @if device.simulated { " " (simulated_mark()) } }
                            td { @if let Some(model) = &device.gpu_model { (device.gpu_count) "× " (model) } @else { (device.spec.cpu.logical_cores) " cores" } }
                            td {
                                (badge(device.state.as_str()))
                                // Where the network runs lease overlays, a device that cannot
                                // join one is offered for single-node leases only: say why.
                                @if let (Some(why), true, false) = (&device.overlay_unavailable, app.overlay.is_some(), device.simulated) {
                                    br; small class="muted" { "single-node leases only: " (why) }
                                }
                            }
                            td {
                                @match &status {
                                    Earning::Yes { hired } => {
                                        span class="ok" { "earning" }
                                        @if *hired { " — and paid for its lease" }
                                    }
                                    Earning::No(reasons) => {
                                        span class="not-earning" { "not earning" }
                                        ul class="reasons" { @for why in reasons { li { (why) } } }
                                    }
                                }
                            }
                            td class="num" {
                                @match job_pay.get(device.id.as_str()) {
                                    Some(pays) => { @for (asset, total) in pays { (amount((*total).max(0) as u64, *asset)) br; } }
                                    None => "—",
                                }
                            }
                            td class="num" {
                                @if let Some(r) = rewards.get(device.id.as_str()) {
                                    (io(i128::from(r.total))) br; small class="muted" { (r.blocks) " blocks, last " (time(r.last_at)) }
                                } @else { "—" }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Earnings" }
        @if income.is_empty() {
            p class="muted" { "Nothing paid in yet: leases pay per second of a device's use, block rewards every hour." }
        } @else {
        table {
            caption { "Everything paid into your account, by reason" }
            thead { tr { th scope="col" { "Reason" } th scope="col" class="num" { "Entries" } th scope="col" class="num" { "Total" } } }
            tbody {
                @for i in &income {
                    tr { td { (i.code) } td class="num" { (i.entries) } td class="num" { (amount(i.total.max(0) as u64, i.asset)) } }
                }
            }
        }
        }
        h2 { "Slashes" }
        @if slashes.is_empty() {
            p class="muted" { "None: no stake of yours has been slashed." }
        } @else {
            table {
                thead { tr { th scope="col" { "When" } th scope="col" { "Device" } th scope="col" { "Why" } th scope="col" class="num" { "Burned" } } }
                tbody {
                    @for (device, e) in &slashes {
                        tr { td { (time(Timestamp(e.entry.at_ms))) } td { (device_link(device)) } td { (e.entry.transfer.code) } td class="num" { (io(i128::from(e.entry.transfer.amount))) } }
                    }
                }
            }
        }
        h2 { "Payouts" }
        (payouts_table(&payouts))
    };
    Ok(console_page("Your devices", &signed_in, Section::Devices, body))
}
