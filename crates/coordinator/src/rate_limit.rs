//! Rate limits, token buckets in memory:
//! - on the endpoints that take credentials or create state for anonymous callers
//!   (challenges, registration, API keys, sign-in links, the console's sign-in forms), a
//!   tight bucket per client address (`WithinLimit`). Guessing a 256-bit key is hopeless
//!   anyway; this bounds what one client can make the coordinator do;
//! - on every `/v1` call, a generous bucket per API key and one per client address
//!   (`limit_api`), so no one caller (or key shared by many) can take the coordinator's time
//!   from the rest. Over either: 429 with `Retry-After`, as documented on every operation.
//!
//! Memory is bounded: at most `CLIENTS_MAX` buckets; once full, clients without a bucket share
//! one overflow bucket (so a flood from many addresses is still limited, never unbounded).
//! IPv6 clients are keyed by their /64, which one host usually has whole.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::RETRY_AFTER;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::app::{now, App};
use crate::error::ApiError;

const CLIENTS_MAX: usize = 65_536;
/// Where clients share a bucket once `CLIENTS_MAX` is reached.
const OVERFLOW: u64 = 0;

/// Requests a client may make at once (`burst`) and then per minute; `per_minute` 0 turns the
/// limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub burst: u32,
    pub per_minute: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit { burst: 30, per_minute: 30 }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Thousandths of a request, so refills need no floating point.
    tokens_milli: u64,
    updated_ms: i64,
}

/// Buckets by a 64-bit key: a client address (`client_key`) or an API key's hash.
#[derive(Debug, Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<u64, Bucket>>,
}

impl Limiter {
    /// Takes one request from the client's bucket: Err(seconds until one is available).
    pub fn take(&self, limit: RateLimit, client: IpAddr, now_ms: i64) -> Result<(), u64> {
        self.take_key(limit, client_key(client), now_ms)
    }

    /// `take` for any caller key (never 0: that is the shared overflow bucket).
    pub fn take_key(&self, limit: RateLimit, key: u64, now_ms: i64) -> Result<(), u64> {
        if limit.per_minute == 0 {
            return Ok(());
        }
        let capacity = u64::from(limit.burst.max(1)) * 1000;
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = key.max(1);
        let key = if buckets.len() >= CLIENTS_MAX && !buckets.contains_key(&key) {
            evict_full(&mut buckets, limit, capacity, now_ms);
            if buckets.len() >= CLIENTS_MAX {
                OVERFLOW
            } else {
                key
            }
        } else {
            key
        };
        let bucket = buckets.entry(key).or_insert(Bucket { tokens_milli: capacity, updated_ms: now_ms });
        *bucket = refilled(*bucket, limit, capacity, now_ms);
        if bucket.tokens_milli >= 1000 {
            bucket.tokens_milli -= 1000;
            Ok(())
        } else {
            let missing_milli = 1000 - bucket.tokens_milli;
            // per_minute requests a minute = per_minute milli-requests a 60 ms.
            let wait_ms = missing_milli * 60_000 / (u64::from(limit.per_minute) * 1000);
            Err(wait_ms.div_ceil(1000).max(1))
        }
    }
}

fn refilled(bucket: Bucket, limit: RateLimit, capacity: u64, now_ms: i64) -> Bucket {
    let elapsed_ms = (now_ms - bucket.updated_ms).max(0) as u64;
    let gained = elapsed_ms.saturating_mul(u64::from(limit.per_minute)) * 1000 / 60_000;
    Bucket { tokens_milli: (bucket.tokens_milli.saturating_add(gained)).min(capacity), updated_ms: now_ms }
}

/// Drops clients whose buckets have refilled: they are indistinguishable from new ones.
fn evict_full(buckets: &mut HashMap<u64, Bucket>, limit: RateLimit, capacity: u64, now_ms: i64) {
    buckets.retain(|_, bucket| refilled(*bucket, limit, capacity, now_ms).tokens_milli < capacity);
}

/// The address a client is limited by: IPv4 as is, IPv6 by its /64.
fn client_address_key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let segments = v6.segments();
                IpAddr::V6(Ipv6Addr::new(segments[0], segments[1], segments[2], segments[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

fn hash64(bytes: &[u8]) -> u64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

fn client_key(client: IpAddr) -> u64 {
    hash64(client_address_key(client).to_string().as_bytes())
}

/// Who is calling: the peer, or — behind a proxy the coordinator is told to trust — the last
/// address that proxy appended to `X-Forwarded-For`.
fn client_address(parts: &Parts, trust_forwarded_for: bool) -> Option<IpAddr> {
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
    if trust_forwarded_for {
        if let Some(forwarded) = last_forwarded(&parts.headers) {
            return Some(forwarded);
        }
    }
    peer
}

fn last_forwarded(headers: &HeaderMap) -> Option<IpAddr> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .next_back()
        .and_then(|last| last.trim().parse().ok())
}

/// A request within its client's budget for credential endpoints. Handlers that take it are
/// limited; over the limit the answer is 429 with `Retry-After` (a page for the console).
pub struct WithinLimit;

pub struct OverLimit {
    retry_after_s: u64,
    page: bool,
}

impl IntoResponse for OverLimit {
    fn into_response(self) -> Response {
        let message = format!("too many sign-in requests from your address; try again in {} s", self.retry_after_s);
        too_many(message, self.retry_after_s, self.page)
    }
}

/// 429 with `Retry-After`: herd's JSON error, or a page for the console.
fn too_many(message: String, retry_after_s: u64, page: bool) -> Response {
    let mut response = if page {
        crate::web::too_many_requests(&message)
    } else {
        ApiError { status: StatusCode::TOO_MANY_REQUESTS, code: "rate_limited", message }.into_response()
    };
    response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(retry_after_s));
    response
}

impl FromRequestParts<App> for WithinLimit {
    type Rejection = OverLimit;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        // Without a peer address (a router driven directly, as in unit tests) nothing is limited.
        let Some(client) = client_address(parts, app.config.trust_forwarded_for) else { return Ok(WithinLimit) };
        match app.limiter.take(app.config.auth_rate_limit, client, now().0) {
            Ok(()) => Ok(WithinLimit),
            Err(retry_after_s) => {
                if let Some(suppressed) = app.log_limits.rate_limited.allow(now().0) {
                    tracing::warn!(%client, path = parts.uri.path(), suppressed, "rate limited");
                }
                Err(OverLimit { retry_after_s, page: parts.uri.path().starts_with("/console") })
            }
        }
    }
}

/// The limits on every `/v1` call: per API key, and per client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiRateLimits {
    pub per_key: RateLimit,
    pub per_address: RateLimit,
}

impl Default for ApiRateLimits {
    /// Generous: 100 requests a second per key, 250 per address, bursts of six seconds'
    /// worth; a client polling a cluster every 25 ms stays below. What it stops is one
    /// caller taking the coordinator's whole time (thousands a second).
    fn default() -> Self {
        ApiRateLimits::per_key_per_minute(6000)
    }
}

impl ApiRateLimits {
    /// `per_minute` for each API key (bursts of a tenth of it), two and a half times that
    /// for each client address (several keys behind one address, a console and its CLI).
    pub fn per_key_per_minute(per_minute: u32) -> ApiRateLimits {
        let burst = (per_minute / 10).max(1);
        ApiRateLimits {
            per_key: RateLimit { burst, per_minute },
            per_address: RateLimit { burst: burst.saturating_mul(5) / 2, per_minute: per_minute.saturating_mul(5) / 2 },
        }
    }
}

/// Buckets of the `/v1` limits (separate from the credential endpoints' buckets).
#[derive(Debug, Default)]
pub struct ApiLimiters {
    by_key: Limiter,
    by_address: Limiter,
}

/// Middleware over `/v1`: each call takes one token from its API key's bucket (if it
/// carries one) and one from its address's; either empty answers 429 with `Retry-After`.
/// The worker protocol is not limited here (each device has one socket; its messages are
/// bounded there).
pub async fn limit_api(
    axum::extract::State(app): axum::extract::State<App>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    if !path.starts_with("/v1/") || path.starts_with("/v1/worker/") {
        return next.run(request).await;
    }
    let limits = app.config.api_rate_limits;
    let at = now().0;
    let bearer = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let by_key = bearer.map(|key| app.api_limiters.by_key.take_key(limits.per_key, hash64(key.as_bytes()), at));
    let (parts, body) = request.into_parts();
    let client = client_address(&parts, app.config.trust_forwarded_for);
    let by_address = client.map(|ip| app.api_limiters.by_address.take(limits.per_address, ip, at));
    let refused = match (by_key, by_address) {
        (Some(Err(wait)), _) => Some(("this API key", wait)),
        (_, Some(Err(wait))) => Some(("your address", wait)),
        _ => None,
    };
    if let Some((who, retry_after_s)) = refused {
        if let Some(suppressed) = app.log_limits.rate_limited.allow(at) {
            tracing::warn!(client = ?client, path = parts.uri.path(), who, suppressed, "API rate limited");
        }
        let message = format!("too many requests from {who}; try again in {retry_after_s} s");
        return too_many(message, retry_after_s, false);
    }
    next.run(axum::extract::Request::from_parts(parts, body)).await
}

/// At most `LINES` log lines of one kind per `WINDOW_MS`, then one line saying how many
/// were left out: a flood of refusals must not become a flood of WARN lines.
#[derive(Debug, Default)]
pub struct LogLimiter {
    state: Mutex<(i64, u32, u64)>,
}

impl LogLimiter {
    const LINES: u32 = 10;
    const WINDOW_MS: i64 = 10_000;

    /// Some(lines suppressed since the last one allowed) when a line may be written now.
    pub fn allow(&self, now_ms: i64) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (window_start, written, suppressed) = &mut *state;
        if now_ms - *window_start >= Self::WINDOW_MS {
            *window_start = now_ms;
            *written = 0;
        }
        if *written < Self::LINES {
            *written += 1;
            Some(std::mem::take(suppressed))
        } else {
            *suppressed += 1;
            None
        }
    }
}

/// The log limiters of the kinds of line an attacker can cause at will.
#[derive(Debug, Default)]
pub struct LogLimits {
    pub rate_limited: LogLimiter,
    pub worker_refused: LogLimiter,
    pub proof_reply_refused: LogLimiter,
}

/// Where a request came from (the client address, as the rate limits see it), for the audit log.
pub struct Origin(pub Option<String>);

impl FromRequestParts<App> for Origin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        Ok(Origin(client_address(parts, app.config.trust_forwarded_for).map(|ip| ip.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LIMIT: RateLimit = RateLimit { burst: 3, per_minute: 6 };

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_burst_then_the_steady_rate() {
        let limiter = Limiter::default();
        for _ in 0..3 {
            assert_eq!(limiter.take(LIMIT, ip("10.0.0.1"), 0), Ok(()));
        }
        assert_eq!(limiter.take(LIMIT, ip("10.0.0.1"), 0), Err(10), "6 a minute: one every 10 s");
        assert_eq!(limiter.take(LIMIT, ip("10.0.0.2"), 0), Ok(()), "another client has its own bucket");
        assert_eq!(limiter.take(LIMIT, ip("10.0.0.1"), 4_000), Err(6));
        assert_eq!(limiter.take(LIMIT, ip("10.0.0.1"), 10_000), Ok(()));
        assert_eq!(limiter.take(LIMIT, ip("10.0.0.1"), 10_000), Err(10));
        // A long pause refills to the burst, no further.
        for _ in 0..3 {
            assert_eq!(limiter.take(LIMIT, ip("10.0.0.1"), 3_600_000), Ok(()));
        }
        assert!(limiter.take(LIMIT, ip("10.0.0.1"), 3_600_000).is_err());
    }

    #[test]
    fn log_lines_are_limited_per_window_and_say_what_was_left_out() {
        let limiter = LogLimiter::default();
        let allowed = (0..100).filter(|_| limiter.allow(0).is_some()).count();
        assert_eq!(allowed, LogLimiter::LINES as usize);
        assert_eq!(limiter.allow(LogLimiter::WINDOW_MS), Some(90), "the next window's first line counts the rest");
    }

    #[test]
    fn zero_per_minute_turns_it_off() {
        let limiter = Limiter::default();
        let off = RateLimit { burst: 1, per_minute: 0 };
        for _ in 0..100 {
            assert_eq!(limiter.take(off, ip("10.0.0.1"), 0), Ok(()));
        }
    }

    #[test]
    fn an_ipv6_slash_64_is_one_client() {
        let limiter = Limiter::default();
        for host in 1..=3 {
            assert_eq!(limiter.take(LIMIT, ip(&format!("2001:db8:1:2::{host}")), 0), Ok(()));
        }
        assert!(limiter.take(LIMIT, ip("2001:db8:1:2:ffff::9"), 0).is_err());
        assert_eq!(limiter.take(LIMIT, ip("2001:db8:1:3::1"), 0), Ok(()));
        assert_eq!(client_address_key(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
    }

    #[test]
    fn memory_is_bounded_and_a_flood_shares_one_bucket() {
        let limiter = Limiter::default();
        for n in 0..CLIENTS_MAX as u32 {
            assert_eq!(limiter.take(LIMIT, IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)), 0), Ok(()));
        }
        let newcomers: Vec<_> = (0..5u32).map(|n| IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + n))).collect();
        let admitted = newcomers.iter().filter(|ip| limiter.take(LIMIT, **ip, 0).is_ok()).count();
        assert_eq!(admitted, 3, "new clients share the overflow bucket's burst");
        assert!(limiter.buckets.lock().unwrap().len() <= CLIENTS_MAX + 1);
        // Once the others have refilled, they are evicted and a newcomer gets its own bucket.
        assert_eq!(limiter.take(LIMIT, ip("12.0.0.1"), 60_000), Ok(()));
        assert!(limiter.buckets.lock().unwrap().len() < 10);
    }

    #[test]
    fn forwarded_for_is_read_from_its_last_hop() {
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1, 2.2.2.2"));
        headers.append("x-forwarded-for", HeaderValue::from_static("3.3.3.3"));
        assert_eq!(last_forwarded(&headers), Some(ip("3.3.3.3")));
        assert_eq!(last_forwarded(&HeaderMap::new()), None);
    }
}
