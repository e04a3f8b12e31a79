//! Server-rendered pages: the public explorer at `/` and `/explorer/…`. Templates are maud
//! (compiled in, every value escaped), one stylesheet, charts as inline SVG, and one small
//! script that refreshes the overview; no JS build step. Pages read aggregates and pages of
//! rows from the store, never the whole network.

mod charts;
mod explorer;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use herd_core::{Address, Timestamp};
use maud::{html, Markup, DOCTYPE};

use crate::app::App;
use crate::store::StoreError;

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
    Store(StoreError),
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

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Devices,
    Clusters,
    Rewards,
    Staking,
    Ledger,
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
