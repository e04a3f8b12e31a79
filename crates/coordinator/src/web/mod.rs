//! Server-rendered pages: the public explorer at `/` and `/explorer/…`, and the signed-in
//! consoles at `/console/…` (customer: clusters, jobs, wallet; supplier: devices and
//! earnings). Templates are maud (compiled in, every value escaped), one stylesheet, charts
//! as inline SVG, and one small script (live refresh, the live quote); no JS build step.
//! Pages read aggregates and pages of rows from the store, never the whole network.

mod charts;
mod console;
mod explorer;
mod session;
mod signin;
mod supplier;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use herd_core::{Address, Timestamp};
use maud::{html, Markup, DOCTYPE};

use crate::app::App;
use crate::store::StoreError;

/// IO tokens in minor units (10⁻⁶).
pub fn io(units: i128) -> String {
    herd_core::money::format_amount(units, herd_core::Asset::Io)
}

/// Rows per page of a long list.
pub const PAGE_ROWS: u32 = 50;

pub fn router() -> Router<App> {
    Router::new()
        .route("/", get(explorer::overview))
        .route("/explorer", get(explorer::overview))
        .route("/explorer/devices", get(explorer::devices))
        .route("/explorer/devices/{id}", get(explorer::device))
        .route("/explorer/clusters", get(explorer::clusters))
        .route("/explorer/clusters/{id}", get(explorer::cluster))
        .route("/explorer/rewards", get(explorer::rewards))
        .route("/explorer/rewards.csv", get(explorer::rewards_csv))
        .route("/explorer/staking", get(explorer::staking))
        .route("/explorer/ledger", get(explorer::ledger))
        .route("/console/login", get(signin::form).post(signin::with_api_key))
        .route("/console/login/{code}", get(signin::confirm_link).post(signin::with_link))
        .route("/console/logout", post(signin::logout))
        .route("/console", get(console::home))
        .route("/console/clusters", get(console::clusters).post(console::create_cluster))
        .route("/console/clusters/new", get(console::new_cluster))
        .route("/console/quote", post(console::live_quote))
        .route("/console/clusters/{id}", get(console::cluster))
        .route("/console/clusters/{id}/terminate", post(console::terminate))
        .route("/console/jobs", get(console::jobs))
        .route("/console/jobs/{id}", get(console::job))
        .route("/console/wallet", get(console::wallet))
        .route("/console/devices", get(supplier::devices))
        .route("/static/herd.css", get(stylesheet))
        .route("/static/refresh.js", get(script))
}

/// An HTML page; only our own styles and scripts may run in it.
pub struct Page(Markup);

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut response = (StatusCode::OK, self.0.into_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
        );
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        response
    }
}

/// A page that could not be shown: said in a page, with the right status.
pub enum PageError {
    NotFound(String),
    BadRequest(String),
    Forbidden(String),
    /// An API call made for the page failed: its status and message.
    Api(crate::error::ApiError),
    Store(StoreError),
}

impl From<crate::error::ApiError> for PageError {
    fn from(error: crate::error::ApiError) -> Self {
        PageError::Api(error)
    }
}

impl From<StoreError> for PageError {
    fn from(error: StoreError) -> Self {
        PageError::Store(error)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            PageError::NotFound(message) => (StatusCode::NOT_FOUND, message),
            PageError::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
            PageError::Forbidden(message) => (StatusCode::FORBIDDEN, message),
            PageError::Api(error) if error.status.is_server_error() => {
                tracing::error!(message = %error.message, "a console page failed");
                (error.status, "something went wrong on the server; try again in a moment".to_owned())
            }
            PageError::Api(error) => (error.status, error.message),
            PageError::Store(error) => {
                tracing::error!(%error, "a page could not read the database");
                (StatusCode::SERVICE_UNAVAILABLE, "the database is busy; try again in a moment".to_owned())
            }
        };
        let body = layout(
            status.canonical_reason().unwrap_or("Error"),
            Nav::None,
            html! { h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) } p { (message) } },
        );
        let mut response = Page(body).into_response();
        *response.status_mut() = status;
        response
    }
}

pub type PageResult = Result<Page, PageError>;

/// The page for a client over its rate limit (the caller adds `Retry-After`).
pub fn too_many_requests(message: &str) -> Response {
    let body = layout("Too many requests", Nav::None, html! { h1 { "429 Too Many Requests" } p { (message) } });
    let mut response = Page(body).into_response();
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    response
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Devices,
    Clusters,
    Rewards,
    Staking,
    Ledger,
    Console,
    None,
}

pub fn layout(title: &str, current: Nav, body: Markup) -> Markup {
    let links = [
        (Nav::Overview, "/explorer", "Overview"),
        (Nav::Devices, "/explorer/devices", "Devices"),
        (Nav::Clusters, "/explorer/clusters", "Clusters"),
        (Nav::Rewards, "/explorer/rewards", "Block rewards"),
        (Nav::Staking, "/explorer/staking", "Staking"),
        (Nav::Ledger, "/explorer/ledger", "Ledger"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · herd explorer" }
                link rel="stylesheet" href="/static/herd.css";
                script src="/static/refresh.js" defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header {
                    a class="brand" href="/explorer" { "herd" }
                    nav aria-label="Explorer" {
                        ul {
                            @for (nav, href, label) in links {
                                li {
                                    @if nav == current {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                            li class="console-link" {
                                @if current == Nav::Console {
                                    a href="/console" aria-current="page" { "Console" }
                                } @else {
                                    a href="/console" { "Console" }
                                }
                            }
                        }
                    }
                }
                main id="main" { (body) }
                footer { p { "An open, decentralized GPU cloud. " a href="/v1/openapi.json" { "API" } " · " a href="/metrics" { "metrics" } } }
            }
        }
    }
}

/// A device id, linked, shortened for tables (the full key is the link's title).
pub fn device_link(id: &Address) -> Markup {
    html! { a href=(format!("/explorer/devices/{id}")) title=(id.as_str()) { code { (id.short()) "…" } } }
}

pub fn time(at: Timestamp) -> Markup {
    html! { time datetime=(at.to_string()) { (at.to_string().replace('T', " ").trim_end_matches('Z')) " UTC" } }
}

/// A state as a badge whose colour comes from the stylesheet.
pub fn badge(state: &str) -> Markup {
    html! { span class=(format!("badge {state}")) { (state) } }
}

pub fn simulated_mark() -> Markup {
    html! { span class="badge simulated" title="a simulated device: it exists to explore the market and never earns" { "simulated" } }
}

async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=300")], STYLESHEET)
        .into_response()
}

async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "max-age=300")], SCRIPT)
        .into_response()
}

const STYLESHEET: &str = include_str!("herd.css");
const SCRIPT: &str = include_str!("refresh.js");

/// `&`-joined query parameters for links that keep a list's filters.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let encoded: Vec<String> = pairs
        .iter()
        .filter_map(|(key, value)| {
            value.as_ref().filter(|v| !v.is_empty()).map(|v| format!("{key}={}", herd_core::url::percent_encode(v)))
        })
        .collect();
    encoded.join("&")
}
