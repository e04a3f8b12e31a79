//! The operator's authority: requests signed with the ledger key. Two forms, both single-use:
//!
//! - actions whose body is itself signed (a slash, a payout confirmation) carry their own id
//!   in the signed text; the id is recorded (the ledger's transfer id, the audit log's
//!   `action_id`) and a second use is refused with 409;
//! - other operator endpoints take `X-Herd-Operator: <at_ms>.<id>.<signature>` over the
//!   method, path, query and body (`signing::operator_request_message`). Each id is accepted
//!   once, only within `WINDOW` of its time and never from before this process started, so a
//!   captured request cannot be replayed, not even across a restart (the ids seen are kept in
//!   memory for exactly that window).

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::app::{now, App};
use crate::error::ApiError;

/// How far a signed request's time may be from the coordinator's clock.
pub const WINDOW_MS: i64 = 120_000;
/// Ids remembered at once; beyond it operator requests are refused until old ones expire
/// (an operator makes a few requests a minute, never thousands).
const SEEN_MAX: usize = 10_000;
const BODY_BYTES_MAX: usize = 64 * 1024;

/// A single-use id: 8 to 64 of `A-Z a-z 0-9 - _` (long enough to be unique when random).
pub fn check_action_id(id: &str) -> Result<(), ApiError> {
    let fits = (8..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if fits {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "id {id:?} is not a valid single-use id: 8 to 64 letters, digits, '-' or '_' (a random UUID works)"
        )))
    }
}

/// The ids of operator requests seen within the window, and when this process started.
pub struct Nonces {
    started_ms: i64,
    seen: Mutex<HashMap<String, i64>>,
}

impl Default for Nonces {
    fn default() -> Self {
        Nonces { started_ms: now().0, seen: Mutex::default() }
    }
}

impl Nonces {
    /// Accepts `id` signed at `at_ms` once; the refusal says why.
    fn accept(&self, id: &str, at_ms: i64, now_ms: i64) -> Result<(), ApiError> {
        if (at_ms - now_ms).abs() > WINDOW_MS {
            return Err(ApiError::unauthorized(format!(
                "operator request signed at {at_ms} ms, {} s from this coordinator's clock (at most {} s): \
                 check the clock, and sign each request just before sending it",
                (at_ms - now_ms).abs() / 1000,
                WINDOW_MS / 1000
            )));
        }
        if at_ms < self.started_ms {
            return Err(ApiError::unauthorized(
                "operator request signed before this coordinator started; sign it again",
            ));
        }
        let mut seen = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        seen.retain(|_, at| *at + WINDOW_MS >= now_ms);
        if seen.contains_key(id) {
            return Err(ApiError {
                code: "replayed",
                ..ApiError::conflict(format!("operator request {id} was already used"))
            });
        }
        if seen.len() >= SEEN_MAX {
            return Err(ApiError::too_many_requests("too many operator requests at once; try again in a minute"));
        }
        seen.insert(id.to_owned(), at_ms);
        Ok(())
    }
}

/// A request the operator signed: its one-time id and signature (for the audit log).
#[derive(Debug, Clone)]
pub struct Operator {
    pub id: String,
    pub signature: String,
}

fn verify(
    app: &App,
    method: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Operator, ApiError> {
    let header = headers.get(herd_proto::signing::OPERATOR_HEADER).and_then(|v| v.to_str().ok()).ok_or_else(|| {
        ApiError::unauthorized("operator endpoint: sign the request with the ledger key (X-Herd-Operator)")
    })?;
    let malformed = || ApiError::unauthorized("X-Herd-Operator must be <at_ms>.<id>.<base58 signature>");
    let mut parts = header.splitn(3, '.');
    let (Some(at), Some(id), Some(signature)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(malformed());
    };
    let at_ms: i64 = at.parse().map_err(|_| malformed())?;
    check_action_id(id).map_err(|e| ApiError::unauthorized(e.message))?;
    let digest = herd_core::hex::encode(&Sha256::digest(body));
    let message = herd_proto::signing::operator_request_message(method, path_and_query, &digest, at_ms, id);
    crate::auth::verify_signature(&app.books.public_key, &message, signature)
        .map_err(|e| ApiError::forbidden(format!("operator signature refused (sign with the ledger key): {e}")))?;
    app.operator_nonces.accept(id, at_ms, now().0)?;
    Ok(Operator { id: id.to_owned(), signature: signature.to_owned() })
}

fn path_and_query(parts: &Parts) -> &str {
    parts.uri.path_and_query().map_or("/", |p| p.as_str())
}

impl FromRequestParts<App> for Operator {
    type Rejection = ApiError;

    /// For requests without a body (GET): the signature covers an empty body.
    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        verify(app, parts.method.as_str(), path_and_query(parts), &parts.headers, &[])
    }
}

/// A JSON body the operator signed, with the signature's id.
pub struct OperatorJson<T>(pub Operator, pub T);

impl<T: DeserializeOwned> FromRequest<App> for OperatorJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &App) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(body, BODY_BYTES_MAX).await.map_err(|_| {
            ApiError::bad_request(format!("an operator request body is at most {BODY_BYTES_MAX} bytes"))
        })?;
        let operator = verify(app, parts.method.as_str(), path_and_query(&parts), &parts.headers, &bytes)?;
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::unprocessable(format!("invalid request body: {e}")))?;
        Ok(OperatorJson(operator, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_single_use_within_the_window_and_never_from_before_the_start() {
        let nonces = Nonces { started_ms: 1_000_000, seen: Mutex::default() };
        let now = 1_050_000;
        assert!(nonces.accept("abcdefgh", now - 1_000, now).is_ok());
        let again = nonces.accept("abcdefgh", now - 1_000, now).unwrap_err();
        assert_eq!(again.status, axum::http::StatusCode::CONFLICT);
        assert!(nonces.accept("abcdefgi", now - WINDOW_MS - 1, now).is_err(), "too old");
        assert!(nonces.accept("abcdefgj", now + WINDOW_MS + 1, now).is_err(), "from the future");
        assert!(nonces.accept("abcdefgk", 999_999, now).is_err(), "signed before the start");
    }

    #[test]
    fn action_ids_are_checked() {
        assert!(check_action_id("0f8e2b1c-uuid-like").is_ok());
        for bad in ["short", "has space in it", "semi;colon-id", &"x".repeat(65)] {
            assert!(check_action_id(bad).is_err(), "{bad}");
        }
    }
}
