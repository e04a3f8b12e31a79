//! The customer console: clusters (created from a form with a live quote), their nodes, Ray
//! dashboard and jobs, job output, and the wallet. Every page is the signed-in account's
//! own; actions go through the same code as the JSON API, so they check and bill the same.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use herd_core::money::format_usd;
use herd_core::{Asset, ClusterKind, ClusterState, JobKind};
use herd_ledger::AccountKey;
use herd_proto::api::{Cluster, CreateCluster, Job, Quote};
use maud::{html, Markup};
use serde::Deserialize;

use super::explorer::{account, amount, departed_table, nodes_table};
use super::session::{CsrfForm, SignedIn};
use super::{badge, device_link, layout, time, Nav, Page, PageError, PageResult};
use crate::api;
use crate::app::App;
use crate::auth::Caller;
use crate::error::{ApiJson, ApiQuery};

/// Output lines shown on a job's page (the CLI has the whole log).
const LOG_LINES_SHOWN: u32 = 2000;
const HISTORY_ROWS: u32 = 100;
const JOBS_SHOWN: u32 = 200;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Home,
    Clusters,
    Jobs,
    Devices,
    Wallet,
}

/// A console page: the explorer's frame, the console's own menu and who is signed in.
pub fn console_page(title: &str, signed_in: &SignedIn, section: Section, body: Markup) -> Page {
    let links = [
        (Section::Home, "/console", "Overview"),
        (Section::Clusters, "/console/clusters", "Clusters"),
        (Section::Jobs, "/console/jobs", "Jobs"),
        (Section::Devices, "/console/devices", "My devices"),
        (Section::Wallet, "/console/wallet", "Wallet"),
    ];
    Page(layout(
        title,
        Nav::Console,
        html! {
            div class="console-bar" {
                nav aria-label="Console" {
                    ul {
                        @for (item, href, label) in links {
                            li {
                                @if item == section {
                                    a href=(href) aria-current="page" { (label) }
                                } @else {
                                    a href=(href) { (label) }
                                }
                            }
                        }
                    }
                }
                form method="post" action="/console/logout" class="inline" {
                    span class="muted" { "Signed in as " code title=(signed_in.address.as_str()) { (signed_in.address.short()) "…" } " " }
                    input type="hidden" name="csrf" value=(signed_in.csrf);
                    button type="submit" class="link" { "Sign out" }
                }
            }
            (body)
        },
    ))
}

fn caller(signed_in: &SignedIn) -> Caller {
    Caller(signed_in.address.clone())
}

pub async fn home(State(app): State<App>, signed_in: SignedIn) -> PageResult {
    let balances = api::wallet::balances(&app, &signed_in.address).await;
    let clusters = app.store.clusters_of(&signed_in.address, false, 200).await?;
    let account = app.store.account(&signed_in.address).await?;
    let devices = account.map_or(0, |a| a.devices);
    let body = html! {
        h1 { "Your account" }
        p { code { (signed_in.address) } }
        div class="cards" {
            @for balance in &balances {
                div class="card" {
                    div class="value" { (amount(balance.available.max(0) as u64, balance.asset)) }
                    div class="label" { (balance.asset.as_str().to_uppercase()) " available" }
                }
            }
            div class="card" { div class="value" { (clusters.len()) } div class="label" { "clusters running" } }
            div class="card" { div class="value" { (devices) } div class="label" { "devices supplied" } }
        }
        h2 { "Running clusters" }
        (cluster_table(&clusters))
        p { a class="button" href="/console/clusters/new" { "New cluster" } " " a href="/console/devices" { "Your devices and earnings" } }
    };
    Ok(console_page("Console", &signed_in, Section::Home, body))
}

fn cluster_table(clusters: &[Cluster]) -> Markup {
    html! {
        @if clusters.is_empty() {
            p class="muted" { "No clusters yet." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Cluster" } th scope="col" { "State" } th scope="col" { "Kind" }
                    th scope="col" { "Hardware" } th scope="col" class="num" { "Nodes" }
                    th scope="col" class="num" { "Per hour" } th scope="col" { "Ends" }
                } }
                tbody {
                    @for cluster in clusters {
                        tr {
                            td { a href=(format!("/console/clusters/{}", cluster.id)) { (cluster.id) } }
                            td { (badge(cluster.state.as_str())) @if cluster.healing.is_some() { " " (badge("healing")) } }
                            td { (cluster.kind.as_str()) }
                            td { (cluster.hardware) }
                            td class="num" { (cluster.nodes.len()) }
                            td class="num" { (format_usd(cluster.price_per_hour_micros)) }
                            td { (time(cluster.ended_at.unwrap_or(cluster.expires_at))) }
                        }
                    }
                }
            }
        }
    }
}

pub async fn clusters(State(app): State<App>, signed_in: SignedIn) -> PageResult {
    let clusters = app.store.clusters_of(&signed_in.address, true, 200).await?;
    let body = html! {
        h1 { "Clusters" }
        p { a class="button" href="/console/clusters/new" { "New cluster" } }
        (cluster_table(&clusters))
    };
    Ok(console_page("Clusters", &signed_in, Section::Clusters, body))
}

/// The cluster form as posted: text fields, checked here so a mistake is shown next to the
/// form with what was typed kept.
#[derive(Debug, Default, Deserialize)]
pub struct ClusterForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    nodes: String,
    #[serde(default)]
    gpu: String,
    #[serde(default)]
    gpus_per_node: String,
    #[serde(default)]
    country: String,
    #[serde(default)]
    hours: String,
    #[serde(default)]
    asset: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    max_price: String,
}

fn whole_number(field: &str, text: &str, default: Option<u32>) -> Result<Option<u32>, String> {
    match text.trim() {
        "" => Ok(default),
        text => text.parse().map(Some).map_err(|_| format!("{field} must be a whole number, got {text:?}")),
    }
}

fn optional(text: &str) -> Option<String> {
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

impl ClusterForm {
    /// The API request this form asks for; the API's own checks run on it afterwards.
    fn request(&self) -> Result<CreateCluster, String> {
        let asset = match self.asset.as_str() {
            "" => None,
            text => Some(text.parse::<Asset>().map_err(|_| format!("pay with usdc, io or credits, not {text:?}"))?),
        };
        let kind = match self.kind.as_str() {
            "" | "ray" => ClusterKind::Ray,
            "plain" => ClusterKind::Plain,
            other => return Err(format!("kind must be ray or plain, not {other:?}")),
        };
        Ok(CreateCluster {
            nodes: whole_number("nodes", &self.nodes, Some(1))?.unwrap_or(1),
            gpu: optional(&self.gpu).filter(|g| g != "cpu"),
            gpus_per_node: whole_number("GPUs per node", &self.gpus_per_node, None)?,
            country: optional(&self.country).map(|c| c.to_uppercase()),
            hours: whole_number("hours", &self.hours, Some(1))?,
            asset,
            kind: Some(kind),
            max_price_per_gpu_hour: optional(&self.max_price),
            ..CreateCluster::default()
        })
    }
}

pub async fn new_cluster(signed_in: SignedIn) -> PageResult {
    let form = ClusterForm { nodes: "1".into(), hours: "1".into(), ..ClusterForm::default() };
    Ok(cluster_form_page(&signed_in, &form, None, None))
}

fn cluster_form_page(signed_in: &SignedIn, form: &ClusterForm, quote: Option<Markup>, error: Option<&str>) -> Page {
    let selected = |value: &str, current: &str| value == current;
    let body = html! {
        h1 { "New cluster" }
        form id="cluster-form" method="post" action="/console/clusters" class="stacked" data-quote="/console/quote" {
            input type="hidden" name="csrf" value=(signed_in.csrf);
            div class="fields" {
                div {
                    label for="nodes" { "Nodes" }
                    input id="nodes" name="nodes" type="number" min="1" max="64" value=(form.nodes) required;
                }
                div {
                    label for="gpu" { "GPU" }
                    select id="gpu" name="gpu" {
                        option value="cpu" selected[selected("cpu", &form.gpu) || form.gpu.is_empty()] { "None (CPU nodes)" }
                        @for model in herd_core::catalog::GPU_MODELS {
                            option value=(model.name) selected[selected(model.name, &form.gpu)] { (model.name) " (" (model.vram_gib) " GiB)" }
                        }
                    }
                }
                div {
                    label for="gpus_per_node" { "GPUs per node" }
                    input id="gpus_per_node" name="gpus_per_node" type="number" min="1" max="16" value=(form.gpus_per_node) placeholder="1";
                }
                div {
                    label for="hours" { "Hours" }
                    input id="hours" name="hours" type="number" min="1" max="720" value=(form.hours) required;
                }
                div {
                    label for="country" { "Country" }
                    input id="country" name="country" type="text" maxlength="2" value=(form.country) placeholder="any" aria-describedby="country_help";
                    small id="country_help" class="muted" { "ISO code, e.g. DE" }
                }
                div {
                    label for="max_price" { "Max $ per GPU-hour" }
                    input id="max_price" name="max_price" type="text" inputmode="decimal" value=(form.max_price) placeholder="market";
                }
                div {
                    label for="asset" { "Pay with" }
                    select id="asset" name="asset" {
                        option value="credits" selected[selected("credits", &form.asset)] { "Credits" }
                        option value="usdc" selected[selected("usdc", &form.asset) || form.asset.is_empty()] { "USDC (+2 %)" }
                        option value="io" selected[selected("io", &form.asset)] { "IO" }
                    }
                }
                div {
                    label for="kind" { "Cluster" }
                    select id="kind" name="kind" {
                        option value="ray" selected[form.kind != "plain"] { "Ray" }
                        option value="plain" selected[form.kind == "plain"] { "Plain nodes" }
                    }
                }
            }
            div id="quote" class="quote" aria-live="polite" {
                @if let Some(quote) = quote { (quote) } @else { p class="muted" { "The price appears here as you fill in the form." } }
            }
            @if let Some(error) = error {
                p class="error" role="alert" { (error) }
            }
            div class="actions" {
                button type="submit" name="action" value="quote" class="secondary" { "Quote" }
                button type="submit" name="action" value="create" { "Create cluster" }
            }
        }
    };
    console_page("New cluster", signed_in, Section::Clusters, body)
}

fn quote_view(quote: &Quote) -> Markup {
    html! {
        p class="quote-total" {
            strong { (format_usd(quote.total_micros)) } " for " (quote.hours) " h"
            " · " (format_usd(quote.per_hour_micros)) " per hour · " (quote.nodes.len()) " × " (quote.hardware)
        }
        p class="muted" {
            "Nodes " (format_usd(quote.subtotal_micros)) " + reservation fee " (format_usd(quote.reservation_fee_micros))
            " + payment fee " (format_usd(quote.payment_fee_micros)) ", paid in " (quote.asset.as_str().to_uppercase())
            ". Billed per second; what is not used comes back."
        }
        table class="compact" {
            thead { tr { th scope="col" { "Device" } th scope="col" { "Country" } th scope="col" { "Tier" } th scope="col" class="num" { "Reputation" } th scope="col" class="num" { "Per hour" } } }
            tbody {
                @for node in &quote.nodes {
                    tr {
                        td { (device_link(&node.device_id)) }
                        td { (node.country) }
                        td { (node.connectivity.as_str()) }
                        td class="num" { (node.reputation) }
                        td class="num" { (format_usd(node.node_hour_micros)) }
                    }
                }
            }
        }
    }
}

/// What the form as it is now would cost: the market's placement, priced; nothing is held.
/// Err: the status and message to show next to the form.
fn estimate(app: &App, form: &ClusterForm) -> Result<Quote, (StatusCode, String)> {
    let request = form.request().map_err(|message| (StatusCode::BAD_REQUEST, message))?;
    api::market::estimate(app, &request, String::new()).map_err(|e| (e.status, e.message))
}

/// The quote for the form as it is now, as a fragment the page script puts in place.
/// Nothing is held: creating the cluster prices it again.
pub async fn live_quote(
    State(app): State<App>,
    headers: HeaderMap,
    signed_in: SignedIn,
    Form(form): Form<ClusterForm>,
) -> Result<Response, PageError> {
    signed_in.check_form(&headers, &form.csrf)?;
    let fragment = match estimate(&app, &form) {
        Ok(quote) => quote_view(&quote),
        Err((_, message)) => html! { p class="error" { (message) } },
    };
    Ok(([(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")], fragment.into_string()).into_response())
}

pub async fn create_cluster(
    State(app): State<App>,
    headers: HeaderMap,
    signed_in: SignedIn,
    Form(form): Form<ClusterForm>,
) -> Result<Response, PageError> {
    signed_in.check_form(&headers, &form.csrf)?;
    let refuse = |status: StatusCode, message: &str| {
        let mut response = cluster_form_page(&signed_in, &form, None, Some(message)).into_response();
        *response.status_mut() = status;
        Ok(response)
    };
    if form.action == "quote" {
        return match estimate(&app, &form) {
            Ok(quote) => Ok(cluster_form_page(&signed_in, &form, Some(quote_view(&quote)), None).into_response()),
            Err((status, message)) => refuse(status, &message),
        };
    }
    let request = match form.request() {
        Ok(request) => request,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, &message),
    };
    match api::clusters::create(State(app.clone()), caller(&signed_in), ApiJson(request)).await {
        Ok((_, cluster)) => Ok(Redirect::to(&format!("/console/clusters/{}", cluster.0.id)).into_response()),
        Err(error) if error.status.is_client_error() => refuse(error.status, &error.message),
        Err(error) => Err(error.into()),
    }
}

pub async fn cluster(State(app): State<App>, signed_in: SignedIn, Path(id): Path<String>) -> PageResult {
    let cluster = api::clusters::owned_cluster(&app, &signed_in.address, &id).await?;
    let jobs = app.store.jobs_of(&signed_in.address, Some(&cluster.id), 50).await?;
    let running = cluster.state == ClusterState::Running;
    let body = html! {
        div data-refresh=[running.then_some("5")] {
            h1 { "Cluster " (cluster.id) }
            p { (badge(cluster.state.as_str())) " " (cluster.kind.as_str()) " · " (cluster.nodes.len()) " × " (cluster.hardware)
                " · " (format_usd(cluster.price_per_hour_micros)) " per hour in " (cluster.asset.as_str().to_uppercase()) }
            table class="facts" {
                tr { th scope="row" { "Created" } td { (time(cluster.created_at)) } }
                @if let Some(ended) = cluster.ended_at {
                    tr { th scope="row" { "Ended" } td { (time(ended)) " — " (cluster.end_reason.as_deref().unwrap_or("")) } }
                } @else {
                    tr { th scope="row" { "Lease ends" } td { (time(cluster.expires_at)) } }
                }
                @if let Some(healing) = &cluster.healing {
                    tr { th scope="row" { "Healing" } td { (healing) } }
                }
                @if let Some(ray) = &cluster.ray {
                    tr { th scope="row" { "Ray" } td { (ray.version) " · " (badge(ray.state.as_str())) " · " (ray.nodes_ready) " of " (cluster.nodes.len()) " nodes ready" } }
                    @if running {
                        tr { th scope="row" { "Dashboard" } td {
                            a href=(format!("{}/", ray.path)) target="_blank" rel="noopener noreferrer" { "Open the Ray dashboard" }
                            " " span class="muted" { "(the link is your cluster's secret address; also for " code { "ray job submit --address" } ")" }
                        } }
                    }
                }
            }
            h2 { "Nodes" }
            (nodes_table(&cluster.nodes, true))
            (departed_table(&cluster.departed))
            h2 { "Jobs" }
            @if jobs.is_empty() {
                p class="muted" { "No jobs yet. Run one with " code { "herd job " (if cluster.kind == ClusterKind::Ray { "submit" } else { "run" }) " --cluster " (cluster.id) " -- CMD" } "." }
            } @else {
                (job_table(&jobs))
            }
            @if running {
                form method="post" action=(format!("/console/clusters/{}/terminate", cluster.id)) class="danger-zone"
                    data-confirm=(format!("Terminate {}? Everything running on it stops.", cluster.id)) {
                    input type="hidden" name="csrf" value=(signed_in.csrf);
                    button type="submit" class="danger" { "Terminate the cluster" }
                    span class="muted" { " Ends the lease now; the unused hold comes back." }
                }
            }
        }
    };
    Ok(console_page(&format!("Cluster {}", cluster.id), &signed_in, Section::Clusters, body))
}

/// The account's jobs on every cluster, newest first.
pub async fn jobs(State(app): State<App>, signed_in: SignedIn) -> PageResult {
    let jobs = app.store.jobs_of(&signed_in.address, None, JOBS_SHOWN).await?;
    let running = jobs.iter().any(|job| !job.state.is_terminal());
    let body = html! {
        div data-refresh=[running.then_some("5")] {
            h1 { "Jobs" }
            @if jobs.is_empty() {
                p class="muted" { "No jobs yet. Create a cluster, then " code { "herd job run --cluster ID -- CMD" } " (or " code { "herd job submit" } " for Ray)." }
            } @else {
                (job_table(&jobs))
                @if jobs.len() as u32 == JOBS_SHOWN { p class="muted" { "The latest " (JOBS_SHOWN) " jobs; each cluster's page lists its own." } }
            }
        }
    };
    Ok(console_page("Jobs", &signed_in, Section::Jobs, body))
}

fn job_table(jobs: &[Job]) -> Markup {
    html! {
        table {
            thead { tr { th scope="col" { "Job" } th scope="col" { "Cluster" } th scope="col" { "State" } th scope="col" { "Kind" } th scope="col" { "Command" } th scope="col" { "Created" } } }
            tbody {
                @for job in jobs {
                    tr {
                        td { a href=(format!("/console/jobs/{}", job.id)) { (job.id) } }
                        td { a href=(format!("/console/clusters/{}", job.cluster_id)) { (job.cluster_id) } }
                        td { (badge(job.state.as_str())) }
                        td { (job.kind.as_str()) }
                        td { code { (job.command.join(" ")) } }
                        td { (time(job.created_at)) }
                    }
                }
            }
        }
    }
}

pub async fn terminate(
    State(app): State<App>,
    headers: HeaderMap,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    signed_in.check_form(&headers, &form.csrf)?;
    let query = api::clusters::DeleteQuery { refund: None };
    let cluster = api::clusters::delete(State(app), caller(&signed_in), Path(id), ApiQuery(query)).await?;
    Ok(Redirect::to(&format!("/console/clusters/{}", cluster.0.id)).into_response())
}

pub async fn job(State(app): State<App>, signed_in: SignedIn, Path(id): Path<String>) -> PageResult {
    let job = api::jobs::owned_job(&app, &signed_in.address, &id).await?;
    let output: Vec<(Option<u32>, bool, String)> = match job.kind {
        JobKind::Command => app
            .store
            .logs_tail(&job.id, LOG_LINES_SHOWN)
            .await?
            .into_iter()
            .map(|line| (Some(line.rank), line.stream == herd_proto::api::Stream::Stderr, line.text))
            .collect(),
        JobKind::Ray => {
            let text = api::ray::output(&app, &job).await;
            let lines: Vec<&str> = text.lines().collect();
            let skip = lines.len().saturating_sub(LOG_LINES_SHOWN as usize);
            lines[skip..].iter().map(|line| (None, false, (*line).to_owned())).collect()
        }
    };
    let running = !job.state.is_terminal();
    let body = html! {
        div data-refresh=[running.then_some("2")] {
            h1 { "Job " (job.id) }
            p { (badge(job.state.as_str())) " " (job.kind.as_str()) " job on "
                a href=(format!("/console/clusters/{}", job.cluster_id)) { (job.cluster_id) }
                @if job.max_retries > 0 { " · attempt " (job.attempt) " of at most " (job.max_retries + 1) } }
            table class="facts" {
                tr { th scope="row" { "Command" } td { code { (job.command.join(" ")) } } }
                tr { th scope="row" { "Created" } td { (time(job.created_at)) } }
                @if let Some(finished) = job.finished_at { tr { th scope="row" { "Finished" } td { (time(finished)) } } }
                @if let Some(message) = &job.message { tr { th scope="row" { "Why" } td { (message) } } }
            }
            h2 { "Output" }
            @if output.is_empty() {
                p class="muted" { @if running { "No output yet; this page follows it." } @else { "The job printed nothing." } }
            } @else {
                pre class="log" {
                    @for (rank, stderr, text) in &output {
                        @if let Some(rank) = rank { span class="rank" { "[" (rank) "] " } }
                        @if *stderr { span class="stderr" { (text) } } @else { (text) }
                        "\n"
                    }
                }
                p class="muted" { "The last " (LOG_LINES_SHOWN) " lines at most; " code { "herd job logs " (job.id) } " has them all." }
            }
        }
    };
    Ok(console_page(&format!("Job {}", job.id), &signed_in, Section::Jobs, body))
}

pub async fn wallet(State(app): State<App>, signed_in: SignedIn) -> PageResult {
    let balances = api::wallet::balances(&app, &signed_in.address).await;
    let me = AccountKey::User(signed_in.address.to_string());
    let history = app.store.journal_of(&me, HISTORY_ROWS).await?;
    let payouts = app.store.payouts_of(&signed_in.address, 50).await?;
    let body = html! {
        h1 { "Wallet" }
        table {
            caption { "Balances (held: set aside for running leases and pending payouts)" }
            thead { tr { th scope="col" { "Asset" } th scope="col" class="num" { "Balance" } th scope="col" class="num" { "Held" } th scope="col" class="num" { "Available" } } }
            tbody {
                @for b in &balances {
                    tr {
                        td { (b.asset.as_str().to_uppercase()) }
                        td class="num" { (amount(b.balance.max(0) as u64, b.asset)) }
                        td class="num" { (amount(b.held.max(0) as u64, b.asset)) }
                        td class="num" { (amount(b.available.max(0) as u64, b.asset)) }
                    }
                }
            }
        }
        h2 { "History" }
        @if history.is_empty() {
            p class="muted" { "Nothing yet. On a devnet, " code { "herd wallet deposit 100" } " adds test funds." }
        } @else {
            table {
                caption { "The latest " (HISTORY_ROWS) " ledger entries that move your money" }
                thead { tr { th scope="col" { "When" } th scope="col" { "What" } th scope="col" { "With" } th scope="col" class="num" { "Amount" } } }
                tbody {
                    @for e in &history {
                        @let t = &e.entry.transfer;
                        @let incoming = t.credit == me;
                        tr {
                            td { (time(herd_core::Timestamp(e.entry.at_ms))) }
                            td { (t.code) }
                            td { (account(if incoming { &t.debit } else { &t.credit })) }
                            td class=(if incoming { "num in" } else { "num out" }) { (if incoming { "+" } else { "−" }) (amount(t.amount, t.asset)) }
                        }
                    }
                }
            }
        }
        h2 { "Payouts" }
        (payouts_table(&payouts))
    };
    Ok(console_page("Wallet", &signed_in, Section::Wallet, body))
}

/// The account's payouts, or how to ask for one.
pub fn payouts_table(payouts: &[herd_proto::api::Payout]) -> Markup {
    html! {
        @if payouts.is_empty() {
            p class="muted" { "No payouts yet: " code { "herd wallet withdraw AMOUNT --asset io --to SOLANA_ADDRESS" } " asks for one." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Requested" } th scope="col" { "State" } th scope="col" class="num" { "Amount" }
                    th scope="col" { "To" } th scope="col" { "Settled" }
                } }
                tbody {
                    @for p in payouts {
                        tr {
                            td { (time(p.created_at)) } td { (badge(&p.state)) }
                            td class="num" { (amount(p.amount.max(0) as u64, p.asset)) }
                            td { code { (p.recipient) } }
                            td { @if let Some(at) = p.settled_at { (time(at)) } @else { "—" } }
                        }
                    }
                }
            }
        }
    }
}
