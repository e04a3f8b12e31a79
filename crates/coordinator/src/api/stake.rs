//! Staking: suppliers lock IO per device (a vault account in the ledger) to be eligible for
//! block rewards; withdrawing waits 14 days after a request and never while the device is hired.

use axum::extract::{Path, State};
use axum::Json;
use herd_core::money::parse_usd;
use herd_core::{Address, Asset, DeviceState, Timestamp};
use herd_ledger::staking::{may_withdraw, UNSTAKE_COOLDOWN_MS};
use herd_ledger::{AccountKey, Transfer, TransferKind};
use herd_proto::api::{AddStake, Device, ErrorBody, Slash, StakeStatus};

use super::parse_id;
use crate::app::{now, App};
use crate::auth::{random_token, Caller};
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::rate_limit::Origin;
use crate::store::{audit, Alongside, NewAudit};

async fn device(app: &App, id: &str) -> ApiResult<Device> {
    let id: Address = parse_id(id)?;
    app.store.device(&id).await?.ok_or_else(|| ApiError::not_found(format!("no device {id}")))
}

async fn owned_device(app: &App, caller: &Address, id: &str) -> ApiResult<Device> {
    let device = device(app, id).await?;
    if &device.owner != caller {
        return Err(ApiError::forbidden(format!("device {} belongs to another account", device.id)));
    }
    Ok(device)
}

fn vault(device: &Address) -> AccountKey {
    AccountKey::StakeVault(device.to_string())
}

async fn status(app: &App, device: &Device) -> ApiResult<StakeStatus> {
    let staked = app.books.read(|books| books.ledger.balance(&vault(&device.id), Asset::Io)).await;
    let minimum = crate::economy::device_min_stake(device.gpu_model.as_deref(), device.gpu_count);
    let requested = app.store.unstake_requested_at(&device.id).await?;
    Ok(StakeStatus {
        device_id: device.id.clone(),
        owner: device.owner.clone(),
        staked: staked.clamp(0, i128::from(i64::MAX)) as i64,
        min_stake: minimum as i64,
        meets_minimum: staked >= i128::from(minimum),
        unstake_requested_at: requested,
        withdrawable_at: requested.map(|t| Timestamp(t.0 + UNSTAKE_COOLDOWN_MS)),
    })
}

/// A device's stake and minimum (public).
#[utoipa::path(get, path = "/v1/stake/{device}", params(("device" = String, Path)),
    responses((status = 200, body = StakeStatus), (status = 404, body = ErrorBody)))]
pub async fn show(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<StakeStatus>> {
    let device = device(&app, &id).await?;
    Ok(Json(status(&app, &device).await?))
}

/// Stakes IO from the owner's wallet on one of their devices.
#[utoipa::path(post, path = "/v1/stake/{device}", params(("device" = String, Path)), request_body = AddStake,
    security(("api_key" = [])),
    responses((status = 200, body = StakeStatus), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn add(
    State(app): State<App>,
    Caller(owner): Caller,
    Origin(origin): Origin,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AddStake>,
) -> ApiResult<Json<StakeStatus>> {
    let device = owned_device(&app, &owner, &id).await?;
    let amount = parse_usd(&body.amount).map_err(ApiError::bad_request)? as u64;
    let transfer = Transfer {
        id: format!("stake:{}", random_token()),
        debit: AccountKey::User(owner.to_string()),
        credit: vault(&device.id),
        asset: Asset::Io,
        amount,
        kind: TransferKind::Single,
        code: "stake".into(),
    };
    let audit = NewAudit::new(owner.as_str(), "stake.add", Some(device.id.to_string()))
        .detail(serde_json::json!({ "amount_io": body.amount }))
        .origin(origin);
    app.post_audited(&[transfer], audit).await?;
    Ok(Json(status(&app, &device).await?))
}

/// Unstakes: the first call starts the 14-day cooldown; once it has passed (and the device is
/// not hired) the next call returns the whole stake to the owner's wallet.
#[utoipa::path(post, path = "/v1/stake/{device}/remove", params(("device" = String, Path)), security(("api_key" = [])),
    responses((status = 200, body = StakeStatus), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn remove(
    State(app): State<App>,
    Caller(owner): Caller,
    Origin(origin): Origin,
    Path(id): Path<String>,
) -> ApiResult<Json<StakeStatus>> {
    let device = owned_device(&app, &owner, &id).await?;
    let at = now();
    let Some(requested) = app.store.unstake_requested_at(&device.id).await? else {
        app.store.request_unstake(&device.id, at).await?;
        return Ok(Json(status(&app, &device).await?));
    };
    let hired = device.state == DeviceState::Hired || device.cluster_id.is_some();
    may_withdraw(hired, Some(requested.0), at.0).map_err(|e| ApiError::conflict(e.to_string()))?;
    let staked = app.books.read(|books| books.ledger.balance(&vault(&device.id), Asset::Io)).await;
    if staked > 0 {
        let transfer = Transfer {
            id: format!("unstake:{}:{}", device.id, requested.0),
            debit: vault(&device.id),
            credit: AccountKey::User(owner.to_string()),
            asset: Asset::Io,
            amount: staked as u64,
            kind: TransferKind::Single,
            code: "unstake".into(),
        };
        let audit = NewAudit::new(owner.as_str(), "stake.remove", Some(device.id.to_string()))
            .detail(serde_json::json!({ "amount_minor": staked }))
            .origin(origin);
        app.post_audited(&[transfer], audit).await?;
    }
    app.store.clear_unstake(&device.id).await?;
    Ok(Json(status(&app, &device).await?))
}

const SLASH_REASONS: [&str; 3] = ["spoofing", "failed-verification", "abandoned-lease"];

/// The operator slashes a stake (spoofing, failed verification, abandoning a hired lease):
/// the IO moves from the device's vault to the burn account.
#[utoipa::path(post, path = "/v1/stake/{device}/slash", params(("device" = String, Path)), request_body = Slash,
    responses((status = 200, body = StakeStatus), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn slash(
    State(app): State<App>,
    Path(id): Path<String>,
    Origin(origin): Origin,
    ApiJson(body): ApiJson<Slash>,
) -> ApiResult<Json<StakeStatus>> {
    let device = device(&app, &id).await?;
    if !SLASH_REASONS.contains(&body.reason.as_str()) {
        return Err(ApiError::bad_request(format!(
            "unknown reason {:?}: expected {}",
            body.reason,
            SLASH_REASONS.join(", ")
        )));
    }
    crate::operator::check_action_id(&body.id)?;
    let message = herd_proto::signing::slash_message(&body.id, device.id.as_str(), &body.reason, &body.amount);
    crate::auth::verify_signature(&app.books.public_key, &message, &body.operator_signature)
        .map_err(|e| ApiError::forbidden(format!("operator signature refused (sign with the ledger key): {e}")))?;
    let amount = parse_usd(&body.amount).map_err(ApiError::bad_request)? as u64;
    let action_id = format!("slash:{}", body.id);
    let transfer = Transfer {
        id: action_id.clone(),
        debit: vault(&device.id),
        credit: AccountKey::Burn,
        asset: Asset::Io,
        amount,
        kind: TransferKind::Single,
        code: format!("slash-{}", body.reason),
    };
    let audit = NewAudit::new(audit::OPERATOR, "stake.slash", Some(device.id.to_string()))
        .detail(serde_json::json!({ "id": body.id, "reason": body.reason, "amount_io": body.amount }))
        .origin(origin)
        .signed(&body.operator_signature, Some(action_id.clone()));
    app.post_once(&[transfer], &[Alongside::Audit(audit)]).await?;
    tracing::warn!(device = %device.id, id = %body.id, reason = %body.reason, amount = %body.amount, "stake slashed");
    Ok(Json(status(&app, &device).await?))
}
