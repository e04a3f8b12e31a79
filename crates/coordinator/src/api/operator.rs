//! The operator's endpoints: the audit log, and blocking or unblocking a device. Every call
//! is signed with the ledger key over the whole request and single-use (`crate::operator`).

use axum::extract::{Path, State};
use axum::Json;
use herd_proto::api::{AuditEntry, Device, DeviceBlock, ErrorBody};
use herd_proto::worker::ServerMessage;
use serde::Deserialize;

use super::parse_id;
use crate::actions;
use crate::app::{now, App};
use crate::error::{ApiError, ApiQuery, ApiResult};
use crate::operator::{Operator, OperatorJson};
use crate::rate_limit::Origin;
use crate::store::{audit, NewAudit};

const PAGE_MAX: u32 = 1000;
const REASON_LEN_MAX: usize = 200;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries after this sequence number (default 0: from the start).
    after: Option<i64>,
    /// Page size, 1..=1000 (default 100).
    limit: Option<u32>,
    /// Only entries about this device, payout, account or cluster id.
    target: Option<String>,
}

/// The audit log, oldest first (operator only: `X-Herd-Operator` signed with the ledger key).
#[utoipa::path(get, path = "/v1/audit", params(AuditQuery), security(("operator" = [])),
    responses((status = 200, body = Vec<AuditEntry>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn list(
    State(app): State<App>,
    _operator: Operator,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=PAGE_MAX).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be 1..={PAGE_MAX}, got {limit}")));
    }
    let after = query.after.unwrap_or(0).max(0);
    Ok(Json(app.store.audit_entries(after, limit, query.target.as_deref()).await?))
}

fn checked_reason(body: &DeviceBlock) -> ApiResult<&str> {
    let reason = body.reason.trim();
    if reason.is_empty() || reason.chars().count() > REASON_LEN_MAX {
        return Err(ApiError::bad_request(format!("reason must be 1 to {REASON_LEN_MAX} characters")));
    }
    Ok(reason)
}

async fn device_now(app: &App, id: &herd_core::Address) -> ApiResult<Json<Device>> {
    let device = app.store.device(id).await?.ok_or_else(|| ApiError::not_found(format!("no device {id}")))?;
    Ok(Json(device))
}

/// Blocks or unblocks in the store with the signed request's audit entry; 409 if it already
/// was so, 404 if there is no such device.
async fn set_blocked(
    app: &App,
    id: &herd_core::Address,
    blocked: bool,
    reason: &str,
    operator: &Operator,
    origin: Option<String>,
) -> ApiResult<()> {
    let action = if blocked { "device.block" } else { "device.unblock" };
    let audit = NewAudit::new(audit::OPERATOR, action, Some(id.to_string()))
        .detail(serde_json::json!({ "reason": reason, "request": operator.id }))
        .origin(origin)
        .signed(&operator.signature, Some(format!("operator:{}", operator.id)));
    match app.store.operator_set_blocked(id, blocked, reason, &audit, now()).await? {
        Some(true) => Ok(()),
        Some(false) if blocked => Err(ApiError::conflict(format!("device {id} is already blocked"))),
        Some(false) => Err(ApiError::conflict(format!("device {id} is not blocked"))),
        None => Err(ApiError::not_found(format!("no device {id}"))),
    }
}

/// Blocks a device: what it runs is lost (its lease heals elsewhere), it is disconnected, and
/// it cannot connect again until unblocked.
#[utoipa::path(post, path = "/v1/operator/devices/{id}/block", params(("id" = String, Path)),
    request_body = DeviceBlock, security(("operator" = [])),
    responses((status = 200, body = Device), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn block(
    State(app): State<App>,
    Path(id): Path<String>,
    Origin(origin): Origin,
    OperatorJson(operator, body): OperatorJson<DeviceBlock>,
) -> ApiResult<Json<Device>> {
    let id: herd_core::Address = parse_id(&id)?;
    let reason = checked_reason(&body)?;
    if app.store.device(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("no device {id}")));
    }
    let why = format!("blocked by the operator: {reason}");
    if let Some(loss) = app.store.mark_offline(&id, &why, now()).await? {
        actions::apply_loss(&app, &id, &loss).await?;
    }
    set_blocked(&app, &id, true, reason, &operator, origin).await?;
    app.hub.send(&id, ServerMessage::Rejected { code: "blocked".into(), message: why });
    app.hub.disconnect(&id);
    app.sync_market(std::slice::from_ref(&id)).await;
    tracing::warn!(device = %id, %reason, "device blocked by the operator");
    device_now(&app, &id).await
}

/// Lifts a block: the device may connect again and proves itself from scratch.
#[utoipa::path(post, path = "/v1/operator/devices/{id}/unblock", params(("id" = String, Path)),
    request_body = DeviceBlock, security(("operator" = [])),
    responses((status = 200, body = Device), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn unblock(
    State(app): State<App>,
    Path(id): Path<String>,
    Origin(origin): Origin,
    OperatorJson(operator, body): OperatorJson<DeviceBlock>,
) -> ApiResult<Json<Device>> {
    let id: herd_core::Address = parse_id(&id)?;
    let reason = checked_reason(&body)?;
    set_blocked(&app, &id, false, reason, &operator, origin).await?;
    app.sync_market(std::slice::from_ref(&id)).await;
    tracing::info!(device = %id, %reason, "device unblocked by the operator");
    device_now(&app, &id).await
}
