//! Browser sessions for the consoles. The session cookie holds 256 random bits (only their
//! hash is stored), is `HttpOnly` and `SameSite=Lax`, and `Secure` unless the browser talks
//! to the coordinator on a loopback address (browsers drop `Secure` cookies sent over plain
//! HTTP, and a local devnet has no TLS). Forms carry a CSRF token derived from the session
//! (HMAC under a key derived from the ledger key), and every POST must come from our own
//! origin when the browser says where it comes from.

use axum::extract::FromRequestParts;
use axum::http::header::{COOKIE, HOST, ORIGIN};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use herd_core::{Address, Timestamp};

use super::PageError;
use crate::app::{now, App};
use crate::auth::{hash_login_code, hmac_sha256, random_token, same_secret};

pub const COOKIE_NAME: &str = "herd_session";
const SESSION_TTL_MS: i64 = 7 * 24 * 3_600_000;

/// A signed-in browser. Pages that take it are console pages: without a valid session the
/// visitor is sent to the sign-in page (and brought back afterwards).
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub address: Address,
    /// Echoed by every form this session posts.
    pub csrf: String,
    token_hash: String,
}

impl SignedIn {
    /// Checks that a posted form came from one of our pages in this session: its origin (when
    /// the browser says) and its token.
    pub fn check_form(&self, headers: &HeaderMap, posted: &str) -> Result<(), PageError> {
        same_origin(headers)?;
        if same_secret(posted, &self.csrf) {
            Ok(())
        } else {
            Err(PageError::Forbidden(
                "the form is out of date (its security token does not match): reload the page and try again".into(),
            ))
        }
    }

    pub async fn end(self, app: &App) -> Result<(), PageError> {
        app.store.delete_session(&self.token_hash).await?;
        Ok(())
    }
}

fn csrf_for(app: &App, token: &str) -> String {
    herd_core::hex::encode(&hmac_sha256(&app.books.derive_secret("web-csrf"), token.as_bytes())[..16])
}

fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty() && value.len() <= 64)
}

/// Where a sign-in sends the visitor back to: only our own console pages.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path) if path.starts_with("/console") && !path.contains("//") && !path.contains('\\') => path.to_owned(),
        _ => "/console".to_owned(),
    }
}

/// A form whose only field is its security token (sign-out, terminate).
#[derive(Debug, serde::Deserialize)]
pub struct CsrfForm {
    pub csrf: String,
}

pub enum NotSignedIn {
    Redirect(String),
    Error(PageError),
}

impl IntoResponse for NotSignedIn {
    fn into_response(self) -> Response {
        match self {
            NotSignedIn::Redirect(next) => {
                Redirect::to(&format!("/console/login?next={}", herd_core::url::percent_encode(&next))).into_response()
            }
            NotSignedIn::Error(error) => error.into_response(),
        }
    }
}

impl FromRequestParts<App> for SignedIn {
    type Rejection = NotSignedIn;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        // After signing in, back to the page asked for; a form posted without a session has
        // nothing to come back to.
        let back = || {
            let next = match parts.method {
                axum::http::Method::GET => parts.uri.path_and_query().map_or("/console", |p| p.as_str()),
                _ => "/console",
            };
            NotSignedIn::Redirect(safe_next(Some(next)))
        };
        let Some(token) = session_token(&parts.headers) else { return Err(back()) };
        let token_hash = hash_login_code(token);
        match app.store.session_address(&token_hash, now()).await {
            Ok(Some(address)) => Ok(SignedIn { address, csrf: csrf_for(app, token), token_hash }),
            Ok(None) => Err(back()),
            Err(error) => Err(NotSignedIn::Error(error.into())),
        }
    }
}

/// The signed-in account, if any, for pages everyone may see (the header says who is in).
pub async fn signed_in(app: &App, headers: &HeaderMap) -> Option<Address> {
    let token = session_token(headers)?;
    app.store.session_address(&hash_login_code(token), now()).await.ok().flatten()
}

/// Whether the browser reached us on a loopback address (a local devnet without TLS).
fn loopback_host(headers: &HeaderMap) -> bool {
    let host = headers.get(HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    matches!(name, "localhost" | "127.0.0.1" | "[::1]") || name.starts_with("127.")
}

/// Whether the browser came over TLS (directly or through a proxy that says so).
pub fn over_tls(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) == Some("https")
}

/// Whether cookies set for this browser can be kept: a non-loopback address over plain HTTP
/// drops `Secure` cookies, and the sign-in page says so.
pub fn cookies_work(headers: &HeaderMap) -> bool {
    loopback_host(headers) || over_tls(headers)
}

/// Refuses a POST that a browser says came from another site.
pub fn same_origin(headers: &HeaderMap) -> Result<(), PageError> {
    let Some(origin) = headers.get(ORIGIN) else { return Ok(()) };
    let host = headers.get(HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let origin = origin.to_str().unwrap_or("");
    let ours = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == Some(host);
    if ours {
        Ok(())
    } else {
        Err(PageError::Forbidden(format!("a form from another site ({origin}) may not act on this one")))
    }
}

/// Opens a session for `address`: the `Set-Cookie` header to send.
pub async fn start(app: &App, address: &Address, headers: &HeaderMap) -> Result<HeaderValue, PageError> {
    let token = random_token();
    let at = now();
    app.store.create_session(&hash_login_code(&token), address, Timestamp(at.0 + SESSION_TTL_MS), at).await?;
    tracing::info!(%address, "console session started");
    Ok(cookie(&token, SESSION_TTL_MS / 1000, headers))
}

/// The header that makes the browser forget its session.
pub fn cleared(headers: &HeaderMap) -> HeaderValue {
    cookie("", 0, headers)
}

fn cookie(value: &str, max_age_s: i64, headers: &HeaderMap) -> HeaderValue {
    let secure = if loopback_host(headers) && !over_tls(headers) { "" } else { "; Secure" };
    HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={value}; Path=/; Max-Age={max_age_s}; HttpOnly; SameSite=Lax{secure}"
    ))
    .expect("cookie values are base58")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "theme=dark; herd_session=abc123; x=1")]);
        assert_eq!(session_token(&h), Some("abc123"));
        assert_eq!(session_token(&headers(&[("cookie", "herd_sessionx=1")])), None);
        assert_eq!(session_token(&headers(&[("cookie", "herd_session=")])), None);
    }

    #[test]
    fn sign_in_only_returns_to_console_pages() {
        assert_eq!(safe_next(Some("/console/clusters?x=1")), "/console/clusters?x=1");
        assert_eq!(safe_next(Some("https://evil.example/console")), "/console");
        assert_eq!(safe_next(Some("/console//evil.example")), "/console");
        assert_eq!(safe_next(None), "/console");
    }

    #[test]
    fn cookies_are_secure_except_on_loopback_without_tls() {
        let local = cookie("t", 10, &headers(&[("host", "127.0.0.1:7700")]));
        assert!(!local.to_str().unwrap().contains("Secure"));
        assert!(local.to_str().unwrap().contains("HttpOnly; SameSite=Lax"));
        let public = cookie("t", 10, &headers(&[("host", "herd.example.org")]));
        assert!(public.to_str().unwrap().ends_with("; Secure"));
        let proxied = cookie("t", 10, &headers(&[("host", "localhost:7700"), ("x-forwarded-proto", "https")]));
        assert!(proxied.to_str().unwrap().ends_with("; Secure"));
        assert!(!cookies_work(&headers(&[("host", "192.168.1.5:7700")])));
    }

    #[test]
    fn posts_from_other_origins_are_refused() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:7700"), ("origin", "http://127.0.0.1:7700")])).is_ok());
        assert!(same_origin(&headers(&[("host", "127.0.0.1:7700")])).is_ok(), "non-browser clients send none");
        assert!(same_origin(&headers(&[("host", "127.0.0.1:7700"), ("origin", "http://evil.example")])).is_err());
        assert!(same_origin(&headers(&[("host", "127.0.0.1:7700"), ("origin", "null")])).is_err());
    }
}
