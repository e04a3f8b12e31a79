//! Signing in without passwords: paste an API key, or open the one-time link that
//! `herd account login --browser` obtains by signing a challenge with the account key.

use axum::extract::{Path, Query, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;

use super::session::{self, CsrfForm, SignedIn};
use super::{layout, Nav, Page, PageError};
use crate::app::{now, App};
use crate::auth::{hash_api_key, hash_login_code, API_KEY_PREFIX};
use crate::rate_limit::WithinLimit;

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

pub async fn form(State(app): State<App>, headers: HeaderMap, Query(query): Query<NextQuery>) -> Response {
    let next = session::safe_next(query.next.as_deref());
    if session::signed_in(&app, &headers).await.is_some() {
        return Redirect::to(&next).into_response();
    }
    Page(login_page(&next, None, &headers)).into_response()
}

fn login_page(next: &str, error: Option<&str>, headers: &HeaderMap) -> Markup {
    layout(
        "Sign in",
        Nav::Console,
        html! {
            h1 { "Sign in to the console" }
            @if !session::cookies_work(headers) {
                p class="error" role="alert" {
                    "This coordinator is reached over plain HTTP on a public address: browsers keep the session cookie only \
                     over HTTPS. Put the coordinator behind TLS (a reverse proxy that sets X-Forwarded-Proto: https)."
                }
            }
            div class="columns" {
                section {
                    h2 { "With an API key" }
                    form method="post" action="/console/login" class="stacked" {
                        input type="hidden" name="next" value=(next);
                        label for="api_key" { "API key" }
                        input id="api_key" name="api_key" type="password" autocomplete="off" required
                            placeholder="herd_…" aria-describedby="api_key_help";
                        p id="api_key_help" class="muted" {
                            "The key " code { "herd account create" } " stored in your config directory (credentials.json). \
                             It is sent once; the browser keeps only a session cookie."
                        }
                        @if let Some(error) = error {
                            p class="error" role="alert" { (error) }
                        }
                        button type="submit" { "Sign in" }
                    }
                }
                section {
                    h2 { "With your account key" }
                    p { "On a machine that holds your account key, run" }
                    pre { code { "herd account login --browser" } }
                    p { "and open the one-time link it prints (valid 5 minutes, single use). No key leaves that machine." }
                }
            }
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct ApiKeyForm {
    api_key: String,
    next: Option<String>,
}

pub async fn with_api_key(
    State(app): State<App>,
    _within_limit: WithinLimit,
    headers: HeaderMap,
    Form(form): Form<ApiKeyForm>,
) -> Result<Response, PageError> {
    session::same_origin(&headers)?;
    let next = session::safe_next(form.next.as_deref());
    let key = form.api_key.trim();
    let refuse = |message: &str| {
        let mut response = Page(login_page(&next, Some(message), &headers)).into_response();
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        response
    };
    if !key.starts_with(API_KEY_PREFIX) || key.len() > 128 {
        return Ok(refuse("That is not an API key: herd API keys start with herd_."));
    }
    let Some(address) = app.store.address_for_api_key(&hash_api_key(key)).await? else {
        return Ok(refuse("Unknown API key: check it, or get a new one with `herd account login`."));
    };
    let cookie = session::start(&app, &address, &headers).await?;
    Ok(([(SET_COOKIE, cookie)], Redirect::to(&next)).into_response())
}

/// The link's landing page: says whose account it signs in to and asks to confirm, so a link
/// someone else sent cannot silently sign a browser in to their account, and a link preview
/// cannot use it up.
pub async fn confirm_link(State(app): State<App>, Path(code): Path<String>) -> Result<Page, PageError> {
    let address = app.store.login_link_address(&hash_login_code(&code), now()).await?.ok_or_else(link_gone)?;
    Ok(Page(layout(
        "Sign in",
        Nav::Console,
        html! {
            h1 { "Sign in to the console" }
            p { "This one-time link signs this browser in as account" }
            p { code { (address) } }
            p class="muted" { "Continue only if you ran " code { "herd account login --browser" } " yourself, just now." }
            form method="post" action=(format!("/console/login/{code}")) {
                button type="submit" { "Sign in as " (address.short()) "…" }
            }
        },
    )))
}

fn link_gone() -> PageError {
    PageError::NotFound(
        "this sign-in link is unknown, expired or already used: run `herd account login --browser` again".into(),
    )
}

pub async fn with_link(
    State(app): State<App>,
    _within_limit: WithinLimit,
    headers: HeaderMap,
    Path(code): Path<String>,
) -> Result<Response, PageError> {
    session::same_origin(&headers)?;
    let address = app.store.consume_login_link(&hash_login_code(&code), now()).await?.ok_or_else(link_gone)?;
    let cookie = session::start(&app, &address, &headers).await?;
    Ok(([(SET_COOKIE, cookie)], Redirect::to("/console")).into_response())
}

pub async fn logout(
    State(app): State<App>,
    headers: HeaderMap,
    signed_in: SignedIn,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    signed_in.check_form(&headers, &form.csrf)?;
    signed_in.end(&app).await?;
    Ok(([(SET_COOKIE, session::cleared(&headers))], Redirect::to("/explorer")).into_response())
}
