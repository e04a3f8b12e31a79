//! Clusters: a lease of whole devices, reserved atomically, visible only to their owner.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use herd_core::{catalog, Address, ClusterId, ClusterState, Timestamp};
use herd_market::{first_fit, ClusterRequest, Hardware, NoCapacity};
use herd_proto::api::{Cluster, CreateCluster, ErrorBody};
use serde::{Deserialize, Serialize};

use super::{parse_id, validate_country};
use crate::actions;
use crate::app::{now, App};
use crate::auth::{random_entropy, Caller};
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use crate::store::NewCluster;

pub const NODES_MAX: u32 = 64;
pub const GPUS_PER_NODE_MAX: u32 = 64;
pub const HOURS_MAX: u32 = 720;
const HOUR_MS: i64 = 3_600_000;
/// Ready devices considered per request; the placement index narrows them first.
const OFFERS_MAX: u32 = 10_000;
/// Re-plans after losing a race for a device before giving up.
const PLAN_ATTEMPTS_MAX: u32 = 3;

fn validate(request: &CreateCluster) -> ApiResult<ClusterRequest> {
    if request.nodes == 0 || request.nodes > NODES_MAX {
        return Err(ApiError::bad_request(format!("nodes must be 1..={NODES_MAX}, got {}", request.nodes)));
    }
    if let Some(country) = &request.country {
        validate_country(country)?;
    }
    if let Some(hours) = request.hours {
        if hours == 0 || hours > HOURS_MAX {
            return Err(ApiError::bad_request(format!("hours must be 1..={HOURS_MAX}, got {hours}")));
        }
    }
    let hardware = match &request.gpu {
        Some(name) => {
            let model = catalog::lookup(name).ok_or_else(|| {
                ApiError::unprocessable(format!(
                    "unknown GPU model {name:?}; known models: {}",
                    catalog::model_names().join(", ")
                ))
            })?;
            let per_node = request.gpus_per_node.unwrap_or(1);
            if per_node == 0 || per_node > GPUS_PER_NODE_MAX {
                return Err(ApiError::bad_request(format!(
                    "gpus_per_node must be 1..={GPUS_PER_NODE_MAX}, got {per_node}"
                )));
            }
            Hardware::Gpu { model: model.name, per_node }
        }
        None if request.gpus_per_node.is_some() => {
            return Err(ApiError::bad_request("gpus_per_node needs a GPU model (gpu); omit both for a CPU cluster"))
        }
        None => Hardware::Cpu,
    };
    Ok(ClusterRequest { hardware, nodes: request.nodes, country: request.country.clone() })
}

/// Reserves devices for a new cluster (all nodes or none).
#[utoipa::path(post, path = "/v1/clusters", request_body = CreateCluster, security(("api_key" = [])),
    responses((status = 201, body = Cluster), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "no capacity: says what is ready"), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(app): State<App>,
    Caller(owner): Caller,
    ApiJson(body): ApiJson<CreateCluster>,
) -> ApiResult<(StatusCode, Json<Cluster>)> {
    let request = validate(&body)?;
    let gpu_model = match &request.hardware {
        Hardware::Gpu { model, .. } => Some(*model),
        Hardware::Cpu => None,
    };
    let hardware = request.hardware.to_string();
    let id = ClusterId::from_entropy(random_entropy());
    for _ in 0..PLAN_ATTEMPTS_MAX {
        let offers = app.store.ready_offers(gpu_model, request.country.as_deref(), OFFERS_MAX).await?;
        let plan = match first_fit(&request, &offers) {
            Ok(plan) => plan,
            Err(shortfall) => {
                let available = app.store.availability().await?;
                return Err(ApiError::no_capacity(NoCapacity::new(&request, shortfall, available).to_string()));
            }
        };
        let devices: Vec<Address> = plan.device_ids.iter().map(|d| parse_id(d)).collect::<ApiResult<_>>()?;
        let at = now();
        let hours = i64::from(body.hours.unwrap_or(1));
        let new = NewCluster {
            id: &id,
            owner: &owner,
            hardware: &hardware,
            country: request.country.as_deref(),
            devices: &devices,
            now: at,
            expires_at: Timestamp(at.0 + hours * HOUR_MS),
        };
        match app.store.commit_cluster(&new).await? {
            Ok(()) => {
                tracing::info!(cluster = %id, %owner, %hardware, nodes = devices.len(), "cluster created");
                let cluster = app.store.cluster(&id).await?.ok_or_else(|| ApiError::not_found("cluster vanished"))?;
                return Ok((StatusCode::CREATED, Json(cluster)));
            }
            Err(stale) => tracing::info!(device = %stale.device, "placement raced another request; re-planning"),
        }
    }
    Err(ApiError::conflict("devices kept being taken by concurrent requests; retry"))
}

/// The cluster, if the caller owns it (404 if unknown, 403 if someone else's).
pub(super) async fn owned_cluster(app: &App, caller: &Address, id: &str) -> ApiResult<Cluster> {
    let id: ClusterId = parse_id(id)?;
    let cluster = app.store.cluster(&id).await?.ok_or_else(|| ApiError::not_found(format!("no cluster {id}")))?;
    if &cluster.owner != caller {
        return Err(ApiError::forbidden(format!("cluster {id} belongs to another account")));
    }
    Ok(cluster)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// Include terminated clusters.
    all: Option<bool>,
}

/// The caller's clusters, newest first.
#[utoipa::path(get, path = "/v1/clusters", params(ListQuery), security(("api_key" = [])),
    responses((status = 200, body = Vec<Cluster>), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(app): State<App>,
    Caller(owner): Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<Cluster>>> {
    Ok(Json(app.store.clusters_of(&owner, query.all.unwrap_or(false), 200).await?))
}

#[utoipa::path(get, path = "/v1/clusters/{id}", params(("id" = String, Path)), security(("api_key" = [])),
    responses((status = 200, body = Cluster), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn show(State(app): State<App>, Caller(owner): Caller, Path(id): Path<String>) -> ApiResult<Json<Cluster>> {
    Ok(Json(owned_cluster(&app, &owner, &id).await?))
}

/// Ends the lease: devices are freed and everything on them is stopped. Idempotent.
#[utoipa::path(delete, path = "/v1/clusters/{id}", params(("id" = String, Path)), security(("api_key" = [])),
    responses((status = 200, body = Cluster), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(State(app): State<App>, Caller(owner): Caller, Path(id): Path<String>) -> ApiResult<Json<Cluster>> {
    let cluster = owned_cluster(&app, &owner, &id).await?;
    actions::terminate_cluster(&app, &cluster.id, "deleted by its owner").await?;
    let cluster = app.store.cluster(&cluster.id).await?.ok_or_else(|| ApiError::not_found("cluster vanished"))?;
    Ok(Json(cluster))
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Extend {
    /// Hours to add, 1..=720.
    pub hours: u32,
}

/// Extends a running cluster's lease.
#[utoipa::path(post, path = "/v1/clusters/{id}/extend", params(("id" = String, Path)), request_body = Extend,
    security(("api_key" = [])),
    responses((status = 200, body = Cluster), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn extend(
    State(app): State<App>,
    Caller(owner): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Extend>,
) -> ApiResult<Json<Cluster>> {
    if body.hours == 0 || body.hours > HOURS_MAX {
        return Err(ApiError::bad_request(format!("hours must be 1..={HOURS_MAX}, got {}", body.hours)));
    }
    let cluster = owned_cluster(&app, &owner, &id).await?;
    if cluster.state != ClusterState::Running {
        return Err(ApiError::conflict(format!(
            "cluster {} is {}; only running clusters can be extended",
            cluster.id, cluster.state
        )));
    }
    app.store
        .extend_cluster(&cluster.id, i64::from(body.hours) * HOUR_MS)
        .await?
        .ok_or_else(|| ApiError::conflict(format!("cluster {} ended meanwhile", cluster.id)))?;
    Ok(Json(app.store.cluster(&cluster.id).await?.ok_or_else(|| ApiError::not_found("cluster vanished"))?))
}
