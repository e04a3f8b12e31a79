use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use herd_proto::api::Health;
use utoipa::OpenApi;

use super::ApiDoc;
use crate::app::App;
use crate::error::{ApiError, ApiResult};
use crate::metrics::labels;

/// Liveness and readiness: the database answers.
#[utoipa::path(get, path = "/v1/health", responses((status = 200, body = Health), (status = 503, body = herd_proto::api::ErrorBody)))]
pub async fn health(State(app): State<App>) -> ApiResult<Json<Health>> {
    let started = std::time::Instant::now();
    app.store.ping().await.map_err(|_| ApiError::unavailable("database unavailable"))?;
    let database_ms = started.elapsed().as_secs_f64() * 1_000.0;
    let bus_ms = match app.bus.get() {
        Some(bus) => Some(
            bus.ping().await.map_err(|e| ApiError::unavailable(format!("bus unavailable: {e}")))?.as_secs_f64()
                * 1_000.0,
        ),
        None => None,
    };
    Ok(Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        workers_connected: app.hub.connected_count() as u64,
        database: app.store.backend().name().into(),
        leader: app.leadership.is_leader(),
        database_ms,
        bus_ms,
    }))
}

pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

pub async fn metrics(State(app): State<App>) -> ApiResult<Response> {
    app.metrics.workers_connected.set(app.hub.connected_count() as i64);
    for (state, count) in app.store.device_counts_by_state().await? {
        app.metrics.devices.get_or_create(&labels(&[("state", &state)])).set(count);
    }
    for (state, count) in app.store.job_counts_by_state().await? {
        app.metrics.jobs.get_or_create(&labels(&[("state", &state)])).set(count);
    }
    app.metrics.clusters_running.set(app.store.running_cluster_count().await?);
    Ok(([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], app.metrics.render())
        .into_response())
}
