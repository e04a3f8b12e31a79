//! The public explorer: the network at a glance, devices, clusters, block rewards, staking
//! and the ledger. No sign-in; nothing owner-only is shown (hostnames, GPU UUIDs, Ray paths).

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use herd_core::money::format_usd;
use herd_core::{Address, Asset, ClusterId, DeviceState, Timestamp};
use herd_ledger::AccountKey;
use maud::{html, Markup};
use serde::Deserialize;

use super::charts::{bars, sparkline, uptime_by_day};
use super::{badge, device_link, io, layout, query, simulated_mark, time, Nav, Page, PageError, PageResult, PAGE_ROWS};
use crate::app::{now, App};
use crate::store::DeviceFilter;

/// Countries shown in the supply view (the rest are summed).
const COUNTRIES_SHOWN: usize = 60;
const UPTIME_DAYS: u32 = 30;
/// Block rewards listed on a device's page (a day of blocks).
const REWARDS_SHOWN: u32 = 24;

pub async fn overview(State(app): State<App>) -> PageResult {
    let census = app.store.census().await?;
    let by_state = census.by_state();
    let count = |state: &str| by_state.iter().filter(|(s, _)| s == state).map(|(_, n)| *n).sum::<u64>();
    let online = count("ready") + count("hired");
    let models = census.supply_by_model();
    let countries: Vec<_> = census.countries.iter().take(COUNTRIES_SHOWN).collect();
    let simulated = census.simulated;
    let running = app.store.running_cluster_count().await?;
    let prices = crate::api::market::price_rows(&app, &census.by_state_model);
    let histories: Vec<Vec<i64>> = {
        let market = app.market.lock();
        (0..herd_core::catalog::GPU_MODELS.len())
            .map(|model| market.prices.history(model).into_iter().map(|(_, price)| price).collect())
            .collect()
    };
    let (gpus, gpus_hired): (i64, i64) = models.iter().fold((0, 0), |(g, h), m| (g + m.gpus, h + m.gpus_hired));
    let body = html! {
        div data-refresh="10" {
            h1 { "The network" }
            div class="cards" {
                div class="card" { div class="value" { (online) } div class="label" { "devices online" } }
                div class="card" { div class="value" { (count("hired")) } div class="label" { "hired now" } }
                div class="card" { div class="value" { (gpus) } div class="label" { "GPUs online" } }
                div class="card" {
                    div class="value" { (format!("{:.1} %", if gpus > 0 { gpus_hired as f64 * 100.0 / gpus as f64 } else { 0.0 })) }
                    div class="label" { "GPU utilisation" }
                }
                div class="card" { div class="value" { (running) } div class="label" { "clusters running" } }
                div class="card" { div class="value" { (simulated) } div class="label" { "simulated devices " (simulated_mark()) } }
            }
            h2 { "Devices by state" }
            table {
                caption { "Every device the network knows, by its current state" }
                thead { tr { th scope="col" { "State" } th scope="col" class="num" { "Devices" } } }
                tbody {
                    @for (state, devices) in &by_state {
                        tr {
                            td { a href=(format!("/explorer/devices?state={state}")) { (badge(state)) } }
                            td class="num" { (devices) }
                        }
                    }
                }
            }
            h2 { "Market prices" }
            table {
                caption { "Per GPU-hour (CPU machines: per node-hour), with the last 24 hours" }
                thead { tr {
                    th scope="col" { "Model" } th scope="col" class="num" { "Online" } th scope="col" class="num" { "Hired" }
                    th scope="col" class="num" { "Utilisation" } th scope="col" class="num" { "Price" }
                    th scope="col" class="num" { "24 h" } th scope="col" { "Trend" }
                } }
                tbody {
                    @for (index, price) in prices.iter().enumerate() {
                        @if price.devices_online > 0 {
                            tr {
                                th scope="row" { a href=(format!("/explorer/devices?{}", query(&[("model", Some(price.model.clone()))]))) { (price.model) } }
                                td class="num" { (price.gpus_online) }
                                td class="num" { (price.gpus_hired) }
                                td class="num" { (format!("{:.1} %", price.utilisation_permille as f64 / 10.0)) }
                                td class="num" { (format_usd(price.price_micros)) }
                                td class="num" { (format_usd(price.change_24h_micros)) }
                                td { (sparkline(histories.get(index).map(Vec::as_slice).unwrap_or(&[]), 120, 24,
                                    &format!("{} price over the last 24 hours", price.model))) }
                            }
                        }
                    }
                }
            }
            h2 { "GPUs by model" }
            table {
                caption { "Online supply (ready or hired)" }
                thead { tr { th scope="col" { "Model" } th scope="col" class="num" { "Devices" } th scope="col" class="num" { "GPUs" } th scope="col" class="num" { "GPUs hired" } } }
                tbody {
                    @for model in &models {
                        tr { th scope="row" { (model.model) } td class="num" { (model.devices) } td class="num" { (model.gpus) } td class="num" { (model.gpus_hired) } }
                    }
                }
            }
            h2 { "Supply by country" }
            div class="map" role="list" aria-label="Devices by country" {
                @for country in countries {
                    a class="country" role="listitem" href=(format!("/explorer/devices?country={}", country.country)) {
                        strong { (country.country) } br;
                        span { (country.online) " online" } br;
                        span class="muted" { (country.gpus) " GPUs" }
                    }
                }
            }
        }
    };
    Ok(Page(layout("Overview", Nav::Overview, body)))
}

#[derive(Debug, Deserialize)]
pub struct DeviceQuery {
    state: Option<String>,
    model: Option<String>,
    country: Option<String>,
    tier: Option<String>,
    page: Option<u32>,
}

fn blank_is_none(value: &Option<String>) -> Option<String> {
    value.as_ref().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

pub async fn devices(State(app): State<App>, Query(filters): Query<DeviceQuery>) -> PageResult {
    let state = match blank_is_none(&filters.state) {
        Some(text) => Some(text.parse::<DeviceState>().map_err(|e| PageError::BadRequest(e.to_string()))?),
        None => None,
    };
    let model = blank_is_none(&filters.model).filter(|m| m != "CPU");
    let tier = blank_is_none(&filters.tier);
    if let Some(tier) = &tier {
        tier.parse::<herd_core::ConnectivityTier>().map_err(|e| PageError::BadRequest(e.to_string()))?;
    }
    let page = filters.page.unwrap_or(0).min(100_000);
    let filter = DeviceFilter {
        state,
        gpu_model: model.clone(),
        country: blank_is_none(&filters.country).map(|c| c.to_ascii_uppercase()),
        owner: None,
        id_prefix: None,
        connectivity: tier.clone(),
        limit: PAGE_ROWS + 1,
        offset: page * PAGE_ROWS,
    };
    let mut rows = app.store.list_devices(&filter).await?;
    let more = rows.len() > PAGE_ROWS as usize;
    rows.truncate(PAGE_ROWS as usize);
    let keep = |page: u32| {
        query(&[
            ("state", blank_is_none(&filters.state)),
            ("model", model.clone()),
            ("country", filter.country.clone()),
            ("tier", tier.clone()),
            ("page", Some(page.to_string())),
        ])
    };
    let body = html! {
        h1 { "Devices" }
        form class="filters" method="get" action="/explorer/devices" {
            label { "State" select name="state" {
                option value="" { "any" }
                @for state in ["pending", "ready", "hired", "offline", "blocked"] {
                    option value=(state) selected[filters.state.as_deref() == Some(state)] { (state) }
                }
            } }
            label { "GPU model" input name="model" value=[model.as_deref()] placeholder="H100"; }
            label { "Country" input name="country" value=[filter.country.as_deref()] placeholder="US" size="4"; }
            label { "Connectivity tier" select name="tier" {
                option value="" { "any" }
                @for t in ["none", "low", "medium", "high", "ultra"] {
                    option value=(t) selected[tier.as_deref() == Some(t)] { (t) }
                }
            } }
            button type="submit" { "Filter" }
        }
        table {
            caption { "Page " (page + 1) }
            thead { tr {
                th scope="col" { "Device" } th scope="col" { "State" } th scope="col" { "Hardware" }
                th scope="col" { "Country" } th scope="col" { "Tier" } th scope="col" class="num" { "Reputation" }
                th scope="col" class="num" { "Floor" } th scope="col" {}
            } }
            tbody {
                @for device in &rows {
                    tr {
                        td { (device_link(&device.id)) }
                        td { (badge(device.state.as_str())) }
                        td { (hardware(device)) }
                        td { (device.country) }
                        td { (device.connectivity.to_string()) }
                        td class="num" { (device.reputation) }
                        td class="num" { (format_usd(device.floor_micros)) }
                        td { @if device.simulated { (simulated_mark()) } }
                    }
                }
            }
        }
        @if rows.is_empty() { p class="muted" { "No device matches." } }
        div class="pages" {
            @if page > 0 { a href=(format!("/explorer/devices?{}", keep(page - 1))) rel="prev" { "← previous" } }
            @if more { a href=(format!("/explorer/devices?{}", keep(page + 1))) rel="next" { "next →" } }
        }
    };
    Ok(Page(layout("Devices", Nav::Devices, body)))
}

fn hardware(device: &herd_proto::api::Device) -> String {
    match &device.gpu_model {
        Some(model) => format!("{}× {model}", device.gpu_count),
        None => format!("CPU, {} cores", device.spec.cpu.logical_cores),
    }
}

pub async fn device(State(app): State<App>, Path(id): Path<String>) -> PageResult {
    let id: Address = id.parse().map_err(|_| PageError::NotFound(format!("no device {id}")))?;
    let mut device = app.store.device(&id).await?.ok_or_else(|| PageError::NotFound(format!("no device {id}")))?;
    // Public: what only the owner sees stays hidden.
    device.spec.hostname.clear();
    for gpu in &mut device.spec.gpus {
        gpu.uuid.clear();
    }
    let events = app.store.device_events(&id, 2_000).await?;
    let verifications = app.store.verifications(&id, 20).await?;
    let vault = AccountKey::StakeVault(id.to_string());
    let staked = app.books.read(|b| b.ledger.balance(&vault, Asset::Io)).await;
    let transactions = app.store.journal_of(&vault, 50).await?;
    let rewards = app.store.device_block_rewards(&device.owner, &id, REWARDS_SHOWN).await?;
    let now_ms = now().0;
    let online = |state: DeviceState| matches!(state, DeviceState::Ready | DeviceState::Hired);
    // Events come newest first; the chart wants them oldest first.
    let mut changes: Vec<(i64, bool)> = events.iter().map(|e| (e.at.0, online(e.to))).collect();
    changes.reverse();
    let before = events.last().and_then(|e| e.from).is_some_and(online);
    let uptime = uptime_by_day(&changes, before, now_ms, UPTIME_DAYS);
    let body = html! {
        h1 { "Device " code { (id.short()) "…" } " " (badge(device.state.as_str())) @if device.simulated { " " (simulated_mark()) } }
        p class="muted" { code { (id) } }
        table {
            caption { "What it is" }
            tbody {
                tr { th scope="row" { "Hardware" } td { (hardware(&device)) } }
                tr { th scope="row" { "CPU" } td { (device.spec.cpu.model) ", " (device.spec.cpu.logical_cores) " threads" } }
                tr { th scope="row" { "Memory" } td { (device.spec.memory_bytes >> 30) " GiB" } }
                tr { th scope="row" { "Country" } td { (device.country) } }
                tr { th scope="row" { "Owner" } td { code { (device.owner) } } }
                tr { th scope="row" { "State" } td { (badge(device.state.as_str())) " " (device.state_reason) } }
                tr { th scope="row" { "Connectivity / security" } td { (device.connectivity.to_string()) " / " (device.security.to_string()) } }
                tr { th scope="row" { "Reputation" } td { (device.reputation) " / 1000" } }
                tr { th scope="row" { "Floor price" } td { (format_usd(device.floor_micros)) @if device.gpu_model.is_some() { " per GPU-hour" } @else { " per node-hour" } } }
                tr { th scope="row" { "Staked" } td { (io(staked)) } }
                @if let Some(cluster) = &device.cluster_id {
                    tr { th scope="row" { "Leased to" } td { a href=(format!("/explorer/clusters/{cluster}")) { (cluster) } } }
                }
            }
        }
        h2 { "Uptime, last " (UPTIME_DAYS) " days" }
        (bars(&uptime, 600, 60, &format!("share of each of the last {UPTIME_DAYS} days this device was online")))
        h2 { "Proofs of compute" }
        table {
            thead { tr { th scope="col" { "Issued" } th scope="col" { "Purpose" } th scope="col" { "Claim" } th scope="col" { "Outcome" } th scope="col" { "Why" } } }
            tbody {
                @for v in &verifications {
                    tr { td { (time(v.issued_at)) } td { (v.purpose) } td { (v.claim) } td { (badge(v.outcome.as_str())) } td { (v.reason.as_deref().unwrap_or("")) } }
                }
            }
        }
        @if verifications.is_empty() { p class="muted" { "No proof yet." } }
        h2 { "State changes" }
        table {
            thead { tr { th scope="col" { "When" } th scope="col" { "From" } th scope="col" { "To" } th scope="col" { "Why" } } }
            tbody {
                @for event in events.iter().take(20) {
                    tr {
                        td { (time(event.at)) }
                        td { @if let Some(from) = event.from { (badge(from.as_str())) } }
                        td { (badge(event.to.as_str())) }
                        td { (event.reason) }
                    }
                }
            }
        }
        h2 { "Block rewards" }
        @if rewards.is_empty() {
            p class="muted" { "No block rewards yet." }
        } @else {
            table {
                caption { "The latest " (rewards.len()) " hourly blocks that paid this device" }
                thead { tr { th scope="col" { "Block (hour ending)" } th scope="col" class="num" { "Reward" } } }
                tbody {
                    @for (at, units) in &rewards {
                        tr { td { (time(*at)) } td class="num" { (io(i128::from(*units))) } }
                    }
                }
            }
        }
        h2 { "Stake transactions" }
        (entries(&transactions))
    };
    Ok(Page(layout("Device", Nav::Devices, body)))
}

fn entries(entries: &[crate::store::SignedEntry]) -> Markup {
    html! {
        @if entries.is_empty() {
            p class="muted" { "None." }
        } @else {
            table {
                thead { tr { th scope="col" class="num" { "#" } th scope="col" { "When" } th scope="col" { "What" } th scope="col" { "From" } th scope="col" { "To" } th scope="col" class="num" { "Amount" } } }
                tbody {
                    @for e in entries {
                        tr {
                            td class="num" { (e.entry.seq) }
                            td { (time(Timestamp(e.entry.at_ms))) }
                            td { (e.entry.transfer.code) }
                            td { (account(&e.entry.transfer.debit)) }
                            td { (account(&e.entry.transfer.credit)) }
                            td class="num" { (amount(e.entry.transfer.amount, e.entry.transfer.asset)) }
                        }
                    }
                }
            }
        }
    }
}

/// A cluster's current nodes; their addresses only for the owner's view.
pub(super) fn nodes_table(nodes: &[herd_proto::api::ClusterNode], owner_view: bool) -> Markup {
    html! {
        table {
            thead { tr {
                th scope="col" class="num" { "Rank" } th scope="col" { "Device" } th scope="col" { "State" } th scope="col" { "Country" }
                @if owner_view { th scope="col" { "Address" } }
                th scope="col" class="num" { "Per hour" } th scope="col" { "Since" } th scope="col" {}
            } }
            tbody {
                @for node in nodes {
                    tr {
                        td class="num" { (node.rank) }
                        td { (device_link(&node.device_id)) }
                        td { (badge(node.device_state.as_str())) }
                        td { (node.country) }
                        @if owner_view { td { code { (node.address) } } }
                        td class="num" { (format_usd(node.node_hour_micros)) }
                        td { (time(node.joined_at)) }
                        td { @if node.simulated { (simulated_mark()) } }
                    }
                }
            }
        }
    }
}

/// The devices that held a rank of the cluster and were replaced (nothing when none were).
pub(super) fn departed_table(departed: &[herd_proto::api::DepartedNode]) -> Markup {
    html! {
        @if !departed.is_empty() {
            h2 { "Replaced nodes" }
            table {
                thead { tr { th scope="col" class="num" { "Rank" } th scope="col" { "Device" } th scope="col" { "Joined" } th scope="col" { "Left" } th scope="col" { "Why" } } }
                tbody {
                    @for node in departed {
                        tr { td class="num" { (node.rank) } td { (device_link(&node.device_id)) } td { (time(node.joined_at)) } td { (time(node.left_at)) } td { (node.reason) } }
                    }
                }
            }
        }
    }
}

pub(super) fn amount(units: u64, asset: Asset) -> String {
    herd_core::money::format_amount(i128::from(units), asset)
}

pub(super) fn account(key: &AccountKey) -> Markup {
    match key {
        AccountKey::User(address) => html! { code title=(address) { (address.get(..8).unwrap_or(address)) "…" } },
        AccountKey::Escrow(cluster) => {
            html! { a href=(format!("/explorer/clusters/{cluster}")) { "escrow " (cluster) } }
        }
        AccountKey::StakeVault(device) => {
            html! { a href=(format!("/explorer/devices/{device}")) { "stake of " code { (device.get(..8).unwrap_or(device)) "…" } } }
        }
        other => html! { (serde_json::to_string(other).unwrap_or_default().trim_matches('"')) },
    }
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    page: Option<u32>,
}

pub async fn clusters(State(app): State<App>, Query(q): Query<PageQuery>) -> PageResult {
    let page = q.page.unwrap_or(0).min(100_000);
    let mut rows = app.store.cluster_rows(PAGE_ROWS + 1, page * PAGE_ROWS).await?;
    let more = rows.len() > PAGE_ROWS as usize;
    rows.truncate(PAGE_ROWS as usize);
    let total = app.store.cluster_count().await?;
    let body = html! {
        h1 { "Clusters" }
        p class="muted" { (total) " leased so far." }
        table {
            thead { tr {
                th scope="col" { "Cluster" } th scope="col" { "State" } th scope="col" { "Kind" } th scope="col" { "Hardware" }
                th scope="col" class="num" { "Nodes" } th scope="col" class="num" { "Per hour" } th scope="col" { "Created" } th scope="col" class="num" { "Hours" }
            } }
            tbody {
                @for c in &rows {
                    tr {
                        td { a href=(format!("/explorer/clusters/{}", c.id)) { (c.id) } }
                        td { (badge(&c.state)) }
                        td { (c.kind) }
                        td { (c.hardware) }
                        td class="num" { (c.nodes) }
                        td class="num" { (format_usd(c.price_per_hour_micros)) }
                        td { (time(c.created_at)) }
                        td class="num" { (format!("{:.2}", (c.ended_at.unwrap_or(c.expires_at).0 - c.created_at.0) as f64 / 3_600_000.0)) }
                    }
                }
            }
        }
        div class="pages" {
            @if page > 0 { a href=(format!("/explorer/clusters?page={}", page - 1)) rel="prev" { "← previous" } }
            @if more { a href=(format!("/explorer/clusters?page={}", page + 1)) rel="next" { "next →" } }
        }
    };
    Ok(Page(layout("Clusters", Nav::Clusters, body)))
}

pub async fn cluster(State(app): State<App>, Path(id): Path<String>) -> PageResult {
    let id: ClusterId = id.parse().map_err(|_| PageError::NotFound(format!("no cluster {id}")))?;
    let cluster = app.store.cluster(&id).await?.ok_or_else(|| PageError::NotFound(format!("no cluster {id}")))?;
    let transactions = app.store.journal_of(&AccountKey::Escrow(id.to_string()), 100).await?;
    let hours = (cluster.ended_at.unwrap_or(cluster.expires_at).0 - cluster.created_at.0) as f64 / 3_600_000.0;
    let body = html! {
        h1 { "Cluster " (cluster.id) " " (badge(cluster.state.as_str())) }
        table {
            tbody {
                tr { th scope="row" { "Kind" } td { (cluster.kind.as_str()) @if let Some(ray) = &cluster.ray { " (Ray " (ray.version) ", " (ray.state.as_str()) ")" } } }
                tr { th scope="row" { "Hardware" } td { (cluster.nodes.len()) " × " (cluster.hardware) } }
                tr { th scope="row" { "Price" } td { (format_usd(cluster.price_per_hour_micros)) " per hour, in " (cluster.asset.as_str().to_uppercase()) } }
                tr { th scope="row" { "Created" } td { (time(cluster.created_at)) } }
                tr { th scope="row" { @if cluster.ended_at.is_some() { "Ended" } @else { "Expires" } } td { (time(cluster.ended_at.unwrap_or(cluster.expires_at))) " (" (format!("{hours:.2}")) " h)" } }
                @if let Some(reason) = &cluster.end_reason { tr { th scope="row" { "Why it ended" } td { (reason) } } }
                @if let Some(healing) = &cluster.healing { tr { th scope="row" { "Healing" } td { (healing) } } }
            }
        }
        h2 { "Nodes" }
        (nodes_table(&cluster.nodes, false))
        (departed_table(&cluster.departed))
        h2 { "Transactions" }
        (entries(&transactions))
    };
    Ok(Page(layout("Cluster", Nav::Clusters, body)))
}

/// (hour, at, emission, paid JSON, failed JSON, to treasury) as the store keeps a block.
type Block = (i64, i64, i64, String, String, i64);

fn block_counts(block: &Block) -> (usize, usize) {
    let count = |json: &str| serde_json::from_str::<Vec<serde_json::Value>>(json).map_or(0, |v| v.len());
    (count(&block.3), count(&block.4))
}

pub async fn rewards(State(app): State<App>) -> PageResult {
    let blocks = app.store.reward_blocks(200).await?;
    let body = html! {
        h1 { "Block rewards" }
        p { "Every hour's emission is split among the devices that earned it; the others are listed with the reason. " a href="/explorer/rewards.csv" download { "Download CSV" } }
        table {
            thead { tr { th scope="col" { "Block (hour)" } th scope="col" class="num" { "Emission" } th scope="col" class="num" { "Paid devices" } th scope="col" class="num" { "Not paid" } th scope="col" class="num" { "To the treasury" } } }
            tbody {
                @for block in &blocks {
                    @let (paid, failed) = block_counts(block);
                    tr {
                        td { (time(Timestamp(block.1))) }
                        td class="num" { (io(i128::from(block.2))) }
                        td class="num" { (paid) }
                        td class="num" { (failed) }
                        td class="num" { (io(i128::from(block.5))) }
                    }
                }
            }
        }
        @if blocks.is_empty() { p class="muted" { "No block yet: the first is produced at the end of the first full hour." } }
    };
    Ok(Page(layout("Block rewards", Nav::Rewards, body)))
}

pub async fn rewards_csv(State(app): State<App>) -> Result<Response, PageError> {
    let blocks = app.store.reward_blocks(100_000).await?;
    let mut csv = String::from("hour,at,emission_units,paid_devices,not_paid_devices,to_treasury_units\n");
    for block in &blocks {
        let (paid, failed) = block_counts(block);
        csv.push_str(&format!("{},{},{},{paid},{failed},{}\n", block.0, Timestamp(block.1), block.2, block.5));
    }
    let disposition = "attachment; filename=\"herd-block-rewards.csv\"";
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8"), (header::CONTENT_DISPOSITION, disposition)], csv)
        .into_response())
}

pub async fn staking(State(app): State<App>) -> PageResult {
    let mut vaults: Vec<(String, i128)> = app
        .books
        .read(|b| {
            b.ledger
                .accounts()
                .filter_map(|((key, asset), account)| match key {
                    AccountKey::StakeVault(device) if *asset == Asset::Io && account.balance() > 0 => {
                        Some((device.clone(), account.balance()))
                    }
                    _ => None,
                })
                .collect()
        })
        .await;
    vaults.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let total: i128 = vaults.iter().map(|(_, v)| v).sum();
    let ids: Vec<String> = vaults.iter().map(|(device, _)| device.clone()).collect();
    let minimums: std::collections::HashMap<String, u64> = app
        .store
        .device_hardware(&ids)
        .await?
        .into_iter()
        .map(|(id, model, count)| (id, crate::economy::device_min_stake(model.as_deref(), count)))
        .collect();
    let full = |device: &str, staked: i128| minimums.get(device).is_some_and(|min| staked >= i128::from(*min));
    let fully_staked = vaults.iter().filter(|(device, staked)| full(device, *staked)).count();
    let body = html! {
        h1 { "Staking" }
        div class="cards" {
            div class="card" { div class="value" { (io(total)) } div class="label" { "staked in total" } }
            div class="card" { div class="value" { (vaults.len()) } div class="label" { "devices with a stake" } }
            div class="card" { div class="value" { (fully_staked) } div class="label" { "fully staked (the minimum for their hardware)" } }
        }
        table {
            caption { "The largest stakes" }
            thead { tr { th scope="col" { "Device" } th scope="col" class="num" { "Staked" } th scope="col" class="num" { "Minimum" } th scope="col" { "Fully staked" } } }
            tbody {
                @for (device, staked) in vaults.iter().take(100) {
                    tr {
                        td { a href=(format!("/explorer/devices/{device}")) { code { (device.get(..8).unwrap_or(device)) "…" } } }
                        td class="num" { (io(*staked)) }
                        td class="num" { @if let Some(min) = minimums.get(device) { (io(i128::from(*min))) } }
                        td { @if full(device, *staked) { span class="ok" { "yes" } } @else { "no" } }
                    }
                }
            }
        }
    };
    Ok(Page(layout("Staking", Nav::Staking, body)))
}

pub async fn ledger(State(app): State<App>) -> PageResult {
    let head = app.books.head().await;
    let first = head.seq.saturating_sub(50);
    let mut latest = app.store.journal(first, 50).await?;
    latest.reverse();
    let body = html! {
        h1 { "The ledger" }
        p { "Every movement of money is an entry of a public, hash-chained journal signed by the coordinator. "
            "Anyone can check it: " code { "herd ledger verify" } " downloads it, checks every hash, link and signature, and recomputes every balance." }
        table {
            tbody {
                tr { th scope="row" { "Entries" } td { (head.seq) } }
                tr { th scope="row" { "Chain head" } td { code { (head.head) } } }
                tr { th scope="row" { "Verified" } td { "at start, entry by entry, by this coordinator (it refuses to start on a tampered journal)" } }
            }
        }
        h2 { "Latest entries" }
        (entries(&latest))
    };
    Ok(Page(layout("Ledger", Nav::Ledger, body)))
}
