//! Clusters: a lease of whole devices, reserved atomically, visible only to their owner.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use herd_core::money::format_usd;
use herd_core::ray::{choose_head, validate_ray_version, RAY_VERSION_DEFAULT};
use herd_core::{Address, ClusterId, ClusterKind, ClusterState, Timestamp};
use herd_market::matching::Hardware;
use herd_proto::api::{Cluster, CreateCluster, ErrorBody, Quote};
use serde::{Deserialize, Serialize};

use super::parse_id;
use crate::actions;
use crate::app::{now, App};
use crate::auth::{random_entropy, ray_access_secret, Caller};
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use crate::store::NewCluster;

use super::market::{parse_request, price, quoted_nodes, refusal_error, Parsed, HOURS_MAX};

const HOUR_MS: i64 = 3_600_000;
/// Re-plans after losing a race for a device before giving up.
const PLAN_ATTEMPTS_MAX: u32 = 3;

/// Reserves devices for a new cluster (all nodes or none), at the market price or at the
/// price of a quote the caller obtained within the last 5 minutes.
#[utoipa::path(post, path = "/v1/clusters", request_body = CreateCluster, security(("api_key" = [])),
    responses((status = 201, body = Cluster), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "the quote_id names no valid quote of the caller's"),
        (status = 409, body = ErrorBody, description = "no capacity: the constraint that ran out and the nearest alternatives"),
        (status = 422, body = ErrorBody, description = "impossible here: what is allowed")))]
pub async fn create(
    State(app): State<App>,
    Caller(owner): Caller,
    ApiJson(body): ApiJson<CreateCluster>,
) -> ApiResult<(StatusCode, Json<Cluster>)> {
    let quote = match &body.quote_id {
        Some(id) => {
            let stored = app.store.quote(id, &owner, now()).await?.ok_or_else(|| {
                ApiError::not_found(format!("no valid quote {id:?}: quotes are single use and expire after 5 minutes"))
            })?;
            let request: CreateCluster = serde_json::from_str(&stored.request)
                .map_err(|e| crate::store::StoreError::Corrupt { what: "quotes.request", detail: e.to_string() })?;
            let quote: Quote = serde_json::from_str(&stored.quote)
                .map_err(|e| crate::store::StoreError::Corrupt { what: "quotes.quote", detail: e.to_string() })?;
            Some((request, quote))
        }
        None => None,
    };
    let quote_id = body.quote_id.clone();
    let body = quote.as_ref().map_or(body, |(request, _)| request.clone());
    let parsed = parse_request(&body)?;
    let ray_version = match body.kind.unwrap_or(ClusterKind::Ray) {
        ClusterKind::Plain => {
            if body.ray_version.is_some() {
                return Err(ApiError::bad_request("ray_version is only for clusters of kind ray"));
            }
            None
        }
        ClusterKind::Ray => {
            let version = body.ray_version.clone().unwrap_or_else(|| RAY_VERSION_DEFAULT.to_owned());
            validate_ray_version(&version).map_err(ApiError::bad_request)?;
            Some(version)
        }
    };
    if let Hardware::Gpu { models, per_node } = &parsed.request.hardware {
        let mut market = app.market.lock();
        for model in models {
            market.prices.record_demand(*model as usize, u64::from(*per_node) * u64::from(parsed.request.nodes));
        }
    }
    // Claim the quote first, so two requests cannot both redeem it; give it back if this
    // one fails.
    if let Some(id) = &quote_id {
        if !app.store.use_quote(id).await? {
            return Err(ApiError::conflict(format!("quote {id} was redeemed meanwhile")));
        }
    }
    let created = reserve(&app, &owner, &body, &parsed, ray_version.as_deref(), quote.as_ref().map(|(_, q)| q)).await;
    if created.is_err() {
        if let Some(id) = &quote_id {
            app.store.release_quote(id).await?;
        }
    }
    let cluster = created?;
    if let Err(error) = crate::overlay::sync(&app, &cluster.id).await {
        // The reconnect path re-sends it; the lease stands.
        tracing::error!(cluster = %cluster.id, %error, "could not set up the lease's overlay");
    }
    if let Err(error) = actions::sync_ray(&app, &cluster.id).await {
        // The reconnect path re-sends it; the lease stands.
        tracing::error!(cluster = %cluster.id, %error, "could not start the Ray head");
    }
    Ok((StatusCode::CREATED, Json(reveal(&app, cluster))))
}

/// Fills in the owner-only access path of a Ray cluster (the store leaves it empty).
pub(super) fn reveal(app: &App, mut cluster: Cluster) -> Cluster {
    if let Some(ray) = &mut cluster.ray {
        ray.path = format!("/ray/{}/{}", cluster.id, ray_access_secret(app, &cluster.id));
    }
    cluster
}

/// Plans, takes and commits the devices (re-planning when the index was behind).
async fn reserve(
    app: &App,
    owner: &Address,
    body: &CreateCluster,
    parsed: &Parsed,
    ray_version: Option<&str>,
    quote: Option<&Quote>,
) -> ApiResult<Cluster> {
    let request_json = serde_json::to_string(body).expect("requests serialise");
    for _ in 0..PLAN_ATTEMPTS_MAX {
        // A new id per attempt: a stale plan voids its hold, and a retry within the same
        // millisecond under the same id would name the voided hold again (the ledger takes
        // a reused id as already done) and run the lease with no money held.
        let id = ClusterId::from_entropy(random_entropy());
        // Plan and take the devices in the index under one lock, so concurrent requests in
        // this coordinator never plan the same device; the database re-checks at commit.
        let nodes = {
            let mut guard = app.market.lock();
            let market = &mut *guard;
            let quoted_devices: Option<Vec<[u8; 32]>> =
                quote.map(|q| q.nodes.iter().map(|n| n.device_id.public_key_bytes()).collect());
            match quoted_devices.filter(|devices| market.index.reserve(devices).is_ok()) {
                // The quoted devices are still free: the quoted prices hold exactly.
                Some(_) => quote.map(|q| q.nodes.clone()).unwrap_or_default(),
                None => {
                    let placement = market.index.place(&parsed.request, &market.prices).map_err(refusal_error)?;
                    let nodes = quoted_nodes(&placement);
                    let fresh: i64 = nodes.iter().map(|n| n.node_hour_micros).sum();
                    if let Some(q) = quote {
                        if fresh > q.per_hour_micros {
                            return Err(ApiError::conflict(format!(
                                "quote {} can no longer be honoured: its devices were taken and the same request now costs {}/h instead of {}/h; ask for a new quote",
                                q.id,
                                format_usd(fresh),
                                format_usd(q.per_hour_micros)
                            )));
                        }
                    }
                    market.index.reserve(&placement.devices()).expect("planned under this lock");
                    nodes
                }
            }
        };
        let devices: Vec<(Address, i64)> = nodes.iter().map(|n| (n.device_id.clone(), n.node_hour_micros)).collect();
        let reputations: Vec<(u32, u16)> =
            nodes.iter().enumerate().map(|(rank, n)| (rank as u32, n.reputation)).collect();
        let head = choose_head(&reputations).unwrap_or(0);
        let priced =
            price(String::new(), Timestamp(0), parsed.request.hardware_label(), nodes, parsed.hours, parsed.asset);
        let at = now();
        let new = NewCluster {
            id: &id,
            owner,
            hardware: &priced.hardware,
            country: parsed.country.as_deref(),
            devices: &devices,
            price_per_hour_micros: priced.per_hour_micros,
            asset: parsed.asset,
            request: &request_json,
            now: at,
            expires_at: Timestamp(at.0 + i64::from(parsed.hours) * HOUR_MS),
            ray: ray_version.map(|version| (version, head)),
        };
        let planned: Vec<Address> = devices.iter().map(|(d, _)| d.clone()).collect();
        // Money first: without the hold there is no lease.
        let amount = app.hold_amount(priced.per_hour_micros, parsed.hours, parsed.asset);
        if let Err(error) = app.open_lease_hold(&id, owner, parsed.asset, amount, at.0, new.expires_at.0).await {
            app.sync_market(&planned).await;
            return Err(error.into());
        }
        let committed = app.store.commit_cluster(&new).await;
        if !matches!(committed, Ok(Ok(()))) {
            if let Some(hold) = app.lease_hold(&id).await {
                app.void_hold(&hold).await?;
            }
        }
        match committed {
            Ok(Ok(())) => {
                tracing::info!(cluster = %id, %owner, hardware = %priced.hardware, nodes = devices.len(),
                    per_hour = %format_usd(priced.per_hour_micros), "cluster created");
                return app.store.cluster(&id).await?.ok_or_else(|| ApiError::not_found("cluster vanished"));
            }
            Ok(Err(stale)) => {
                tracing::info!(device = %stale.device, "the index was behind the database; re-planning");
                app.sync_market(&planned).await;
            }
            Err(error) => {
                app.sync_market(&planned).await;
                return Err(error.into());
            }
        }
    }
    Err(ApiError::conflict("devices kept being taken by concurrent requests; retry"))
}

/// The cluster, if the caller owns it (404 if unknown, 403 if someone else's).
pub(crate) async fn owned_cluster(app: &App, caller: &Address, id: &str) -> ApiResult<Cluster> {
    let id: ClusterId = parse_id(id)?;
    let cluster = app.store.cluster(&id).await?.ok_or_else(|| ApiError::not_found(format!("no cluster {id}")))?;
    if &cluster.owner != caller {
        return Err(ApiError::forbidden(format!("cluster {id} belongs to another account")));
    }
    Ok(reveal(app, cluster))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
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
    let clusters = app.store.clusters_of(&owner, query.all.unwrap_or(false), 200).await?;
    Ok(Json(clusters.into_iter().map(|c| reveal(&app, c)).collect()))
}

#[utoipa::path(get, path = "/v1/clusters/{id}", params(("id" = String, Path)), security(("api_key" = [])),
    responses((status = 200, body = Cluster), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn show(State(app): State<App>, Caller(owner): Caller, Path(id): Path<String>) -> ApiResult<Json<Cluster>> {
    Ok(Json(owned_cluster(&app, &owner, &id).await?))
}

/// Ends the lease: devices are freed and everything on them is stopped. Idempotent.
#[utoipa::path(delete, path = "/v1/clusters/{id}", params(("id" = String, Path), DeleteQuery), security(("api_key" = [])),
    responses((status = 200, body = Cluster), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(app): State<App>,
    Caller(owner): Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<DeleteQuery>,
) -> ApiResult<Json<Cluster>> {
    let in_credits = match query.refund.as_deref() {
        None | Some("asset") => false,
        Some("credits") => true,
        Some(other) => return Err(ApiError::bad_request(format!("refund must be asset or credits, got {other:?}"))),
    };
    let cluster = owned_cluster(&app, &owner, &id).await?;
    let released = actions::terminate_cluster(&app, &cluster.id, "deleted by its owner").await?;
    if let (true, Some(released)) = (in_credits, released) {
        app.refund_in_credits(&cluster.id, &owner, cluster.asset, released).await?;
    }
    let cluster = app.store.cluster(&cluster.id).await?.ok_or_else(|| ApiError::not_found("cluster vanished"))?;
    Ok(Json(reveal(&app, cluster)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// How the unused hold comes back: `asset` (default, the lease's asset) or `credits`.
    pub(crate) refund: Option<String>,
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
    let extra = app.hold_amount(cluster.price_per_hour_micros, body.hours, cluster.asset);
    let expires_at = cluster.expires_at.0 + i64::from(body.hours) * HOUR_MS;
    app.grow_hold(&cluster.id, extra, expires_at).await?;
    app.store
        .extend_cluster(&cluster.id, i64::from(body.hours) * HOUR_MS)
        .await?
        .ok_or_else(|| ApiError::conflict(format!("cluster {} ended meanwhile", cluster.id)))?;
    // Certificates are renewed to the new end (same addresses, nothing restarts).
    if let Err(error) = crate::overlay::sync(&app, &cluster.id).await {
        tracing::error!(cluster = %cluster.id, %error, "could not renew the lease's overlay certificates");
    }
    let cluster = app.store.cluster(&cluster.id).await?.ok_or_else(|| ApiError::not_found("cluster vanished"))?;
    Ok(Json(reveal(&app, cluster)))
}
