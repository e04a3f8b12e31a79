//! Devices are public (the explorer shows them all), and so is every proof of compute. Nothing
//! secret is stored with them; the machine's hostname (personal) and its GPU UUIDs (which an
//! impostor could copy to get an honest device flagged) are shown only to the device's owner.

use axum::extract::{Path, State};
use axum::Json;
use herd_core::{Address, DeviceState};
use herd_proto::api::{Device, DeviceDetail, ErrorBody};
use herd_proto::proof::Verification;
use serde::Deserialize;

use super::{parse_id, validate_country};
use crate::app::App;
use crate::auth::MaybeCaller;
use crate::error::{ApiError, ApiQuery, ApiResult};
use crate::store::DeviceFilter;

const PAGE_MAX: u32 = 1000;

/// Fills in what the database does not know (the live connection) and hides what only the
/// owner should see.
fn present(app: &App, viewer: &Option<Address>, device: &mut Device) {
    device.connected = app.hub.is_connected(&device.id);
    if viewer.as_ref() != Some(&device.owner) {
        device.spec.hostname.clear();
        for gpu in &mut device.spec.gpus {
            gpu.uuid.clear();
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeviceQuery {
    /// pending, ready, hired, offline or blocked
    state: Option<String>,
    /// A catalog GPU model, e.g. `H100`.
    gpu: Option<String>,
    country: Option<String>,
    owner: Option<String>,
    /// Devices whose id starts with this (at least 4 base58 characters): a short id as the
    /// CLI's tables and the explorer show it.
    id_prefix: Option<String>,
    /// Page size, 1..=1000 (default 100).
    limit: Option<u32>,
    offset: Option<u32>,
}

/// Devices on the network, oldest first.
#[utoipa::path(get, path = "/v1/devices", params(DeviceQuery),
    responses((status = 200, body = Vec<Device>), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(app): State<App>,
    MaybeCaller(viewer): MaybeCaller,
    ApiQuery(query): ApiQuery<DeviceQuery>,
) -> ApiResult<Json<Vec<Device>>> {
    let state = query.state.as_deref().map(str::parse::<DeviceState>).transpose().map_err(ApiError::bad_request)?;
    let gpu_model = match query.gpu.as_deref() {
        Some(name) => Some(herd_core::catalog::resolve_one(name).map_err(ApiError::bad_request)?.name.to_owned()),
        None => None,
    };
    if let Some(country) = &query.country {
        validate_country(country)?;
    }
    let owner = query.owner.as_deref().map(parse_id::<Address>).transpose()?;
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > PAGE_MAX {
        return Err(ApiError::bad_request(format!("limit must be 1..={PAGE_MAX}, got {limit}")));
    }
    let filter = DeviceFilter {
        state,
        gpu_model,
        country: query.country,
        owner,
        connectivity: None,
        id_prefix: query.id_prefix.map(valid_prefix).transpose()?,
        limit,
        offset: query.offset.unwrap_or(0),
    };
    let mut devices = app.store.list_devices(&filter).await?;
    for device in &mut devices {
        present(&app, &viewer, device);
    }
    Ok(Json(devices))
}

/// Base58 only (what an id can start with), 4..=64 characters.
fn valid_prefix(prefix: String) -> ApiResult<String> {
    const BASE58: &str = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    if !(4..=64).contains(&prefix.len()) || !prefix.chars().all(|c| BASE58.contains(c)) {
        return Err(ApiError::bad_request(format!(
            "id_prefix {prefix:?} must be 4 to 64 base58 characters (a device id's beginning)"
        )));
    }
    Ok(prefix)
}

/// One device with its recent state changes.
#[utoipa::path(get, path = "/v1/devices/{id}", params(("id" = String, Path, description = "device public key (base58)")),
    responses((status = 200, body = DeviceDetail), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(app): State<App>,
    MaybeCaller(viewer): MaybeCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<DeviceDetail>> {
    let id: Address = parse_id(&id)?;
    let mut device = app.store.device(&id).await?.ok_or_else(|| ApiError::not_found(format!("no device {id}")))?;
    present(&app, &viewer, &mut device);
    let events = app.store.device_events(&id, 100).await?;
    Ok(Json(DeviceDetail { device, events }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VerificationQuery {
    /// How many, most recent first: 1..=1000 (default 100).
    limit: Option<u32>,
}

/// A device's proofs of compute, most recent first: each challenge's size, deadline, timing,
/// outcome and reason. Public.
#[utoipa::path(get, path = "/v1/devices/{id}/verifications",
    params(("id" = String, Path, description = "device public key (base58)"), VerificationQuery),
    responses((status = 200, body = Vec<Verification>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn verifications(
    State(app): State<App>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<VerificationQuery>,
) -> ApiResult<Json<Vec<Verification>>> {
    let id: Address = parse_id(&id)?;
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > PAGE_MAX {
        return Err(ApiError::bad_request(format!("limit must be 1..={PAGE_MAX}, got {limit}")));
    }
    if app.store.device(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("no device {id}")));
    }
    Ok(Json(app.store.verifications(&id, limit).await?))
}
