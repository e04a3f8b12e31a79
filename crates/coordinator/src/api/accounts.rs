//! Accounts are Ed25519 keys. Registering and obtaining API keys both require signing a
//! one-time challenge, so nobody can act for an address without its private key.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use herd_core::Timestamp;
use herd_proto::api::{
    Account, ApiKeyIssued, BrowserLink, Challenge, ChallengeRequest, ErrorBody, PairingCode, SignedChallenge,
};
use herd_proto::signing::{account_challenge_message, PURPOSE_BROWSER, PURPOSE_LOGIN, PURPOSE_REGISTER};

use crate::app::{now, App};
use crate::auth::{
    hash_login_code, hash_pairing_code, new_api_key, new_pairing_code, random_token, verify_signature, Caller,
};
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::rate_limit::{Origin, WithinLimit};
use crate::store::NewAudit;

const CHALLENGE_TTL_MS: i64 = 5 * 60 * 1000;
const PAIRING_CODE_TTL_MS: i64 = 15 * 60 * 1000;
const BROWSER_LINK_TTL_MS: i64 = 5 * 60 * 1000;
/// Unused, unexpired pairing codes one account may hold: enough to pair a rack at once.
const PAIRING_CODES_OPEN_MAX: u32 = 50;

/// A one-time nonce to sign with the account key (valid 5 minutes).
#[utoipa::path(post, path = "/v1/auth/challenge", request_body = ChallengeRequest,
    responses((status = 201, body = Challenge), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub async fn challenge(
    State(app): State<App>,
    _within_limit: WithinLimit,
    ApiJson(request): ApiJson<ChallengeRequest>,
) -> ApiResult<(StatusCode, Json<Challenge>)> {
    let exists = app.store.account_exists(&request.address).await?;
    match request.purpose.as_str() {
        PURPOSE_REGISTER if exists => {
            return Err(ApiError::conflict(format!("account {} already exists", request.address)))
        }
        PURPOSE_LOGIN | PURPOSE_BROWSER if !exists => {
            return Err(ApiError::not_found(format!("no account {}; register it first", request.address)))
        }
        PURPOSE_REGISTER | PURPOSE_LOGIN | PURPOSE_BROWSER => {}
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid purpose {other:?}: expected \"register\", \"login\" or \"browser\""
            )))
        }
    }
    let at = now();
    let nonce = random_token();
    let expires_at = Timestamp(at.0 + CHALLENGE_TTL_MS);
    app.store.create_challenge(&nonce, &request.address, &request.purpose, expires_at, at).await?;
    Ok((StatusCode::CREATED, Json(Challenge { nonce, expires_at })))
}

async fn check_signed(app: &App, signed: &SignedChallenge, purpose: &str) -> ApiResult<()> {
    let message = account_challenge_message(purpose, signed.address.as_str(), &signed.nonce);
    verify_signature(&signed.address, &message, &signed.signature)
        .map_err(|e| ApiError::unauthorized(e.to_string()))?;
    if !app.store.consume_challenge(&signed.nonce, &signed.address, purpose, now()).await? {
        return Err(ApiError::unauthorized("challenge unknown, expired or already used; request a new one"));
    }
    Ok(())
}

/// Registers an account (proving possession of its key) and returns its first API key.
#[utoipa::path(post, path = "/v1/accounts", request_body = SignedChallenge,
    responses((status = 201, body = ApiKeyIssued), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn register(
    State(app): State<App>,
    _within_limit: WithinLimit,
    Origin(origin): Origin,
    ApiJson(signed): ApiJson<SignedChallenge>,
) -> ApiResult<(StatusCode, Json<ApiKeyIssued>)> {
    check_signed(&app, &signed, PURPOSE_REGISTER).await?;
    let (api_key, hash) = new_api_key();
    if !app.store.register_account(&signed.address, &hash, now()).await? {
        return Err(ApiError::conflict(format!("account {} already exists", signed.address)));
    }
    let audit = NewAudit::new(signed.address.as_str(), "account.create", Some(signed.address.to_string()))
        .origin(origin)
        .signed(&signed.signature, None);
    app.store.audit(&audit, now()).await?;
    tracing::info!(address = %signed.address, "account registered");
    Ok((StatusCode::CREATED, Json(ApiKeyIssued { address: signed.address, api_key })))
}

/// Issues a new API key for an existing account.
#[utoipa::path(post, path = "/v1/auth/api-keys", request_body = SignedChallenge,
    responses((status = 201, body = ApiKeyIssued), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn login(
    State(app): State<App>,
    _within_limit: WithinLimit,
    Origin(origin): Origin,
    ApiJson(signed): ApiJson<SignedChallenge>,
) -> ApiResult<(StatusCode, Json<ApiKeyIssued>)> {
    check_signed(&app, &signed, PURPOSE_LOGIN).await?;
    let (api_key, hash) = new_api_key();
    app.store.add_api_key(&signed.address, &hash, now()).await?;
    let audit = NewAudit::new(signed.address.as_str(), "api_key.create", Some(signed.address.to_string()))
        .origin(origin)
        .signed(&signed.signature, None);
    app.store.audit(&audit, now()).await?;
    Ok((StatusCode::CREATED, Json(ApiKeyIssued { address: signed.address, api_key })))
}

/// A one-time link (valid 5 minutes) that signs a browser in to the consoles as the account
/// whose key signed the challenge: `herd account login --browser`.
#[utoipa::path(post, path = "/v1/auth/browser-links", request_body = SignedChallenge,
    responses((status = 201, body = BrowserLink), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn browser_link(
    State(app): State<App>,
    _within_limit: WithinLimit,
    Origin(origin): Origin,
    ApiJson(signed): ApiJson<SignedChallenge>,
) -> ApiResult<(StatusCode, Json<BrowserLink>)> {
    check_signed(&app, &signed, PURPOSE_BROWSER).await?;
    let code = random_token();
    let at = now();
    let expires_at = Timestamp(at.0 + BROWSER_LINK_TTL_MS);
    app.store.create_login_link(&hash_login_code(&code), &signed.address, expires_at, at).await?;
    let audit = NewAudit::new(signed.address.as_str(), "browser_link.create", Some(signed.address.to_string()))
        .origin(origin)
        .signed(&signed.signature, None);
    app.store.audit(&audit, at).await?;
    Ok((
        StatusCode::CREATED,
        Json(BrowserLink { address: signed.address, path: format!("/console/login/{code}"), expires_at }),
    ))
}

/// The calling account.
#[utoipa::path(get, path = "/v1/account", security(("api_key" = [])),
    responses((status = 200, body = Account), (status = 401, body = ErrorBody)))]
pub async fn me(State(app): State<App>, Caller(address): Caller) -> ApiResult<Json<Account>> {
    let account = app.store.account(&address).await?.ok_or_else(|| ApiError::not_found("account not found"))?;
    Ok(Json(account))
}

/// A single-use code (valid 15 minutes) that lets one new device join the caller's account
/// from a machine that does not hold the account key.
#[utoipa::path(post, path = "/v1/pairing-codes", security(("api_key" = [])),
    responses((status = 201, body = PairingCode), (status = 401, body = ErrorBody)))]
pub async fn pairing_code(
    State(app): State<App>,
    Caller(owner): Caller,
    Origin(origin): Origin,
) -> ApiResult<(StatusCode, Json<PairingCode>)> {
    let code = new_pairing_code();
    let at = now();
    let expires_at = Timestamp(at.0 + PAIRING_CODE_TTL_MS);
    if !app.store.create_pairing_code(&hash_pairing_code(&code), &owner, expires_at, at, PAIRING_CODES_OPEN_MAX).await?
    {
        return Err(ApiError::too_many_requests(format!(
            "{PAIRING_CODES_OPEN_MAX} pairing codes of this account are open: use one, or wait for one to expire \
             (they last 15 minutes)"
        )));
    }
    let audit = NewAudit::new(owner.as_str(), "pairing_code.create", Some(owner.to_string())).origin(origin);
    app.store.audit(&audit, at).await?;
    Ok((StatusCode::CREATED, Json(PairingCode { code, owner, expires_at })))
}
