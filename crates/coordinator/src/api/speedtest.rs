//! Throughput tests for workers: a download and an upload of fixed size, each allowed once
//! per token (tokens come over the worker's authenticated socket). The coordinator times
//! the upload itself, so a worker cannot claim a faster uplink than it delivered.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use herd_proto::worker::{SPEEDTEST_DOWNLOAD_BYTES, SPEEDTEST_UPLOAD_BYTES};
use serde::Serialize;
use tokio::time::Instant;

use crate::app::App;
use crate::error::{ApiError, ApiResult};
use crate::hub::Direction;

const CHUNK_BYTES: usize = 64 * 1024;

fn spend(app: &App, token: &str, direction: Direction) -> ApiResult<herd_core::Address> {
    app.hub
        .spend_speedtest(token, direction, Instant::now())
        .ok_or_else(|| ApiError::unauthorized("speedtest token unknown, expired or already used"))
}

pub async fn download(State(app): State<App>, Path(token): Path<String>) -> ApiResult<Response> {
    spend(&app, &token, Direction::Download)?;
    let chunks = (SPEEDTEST_DOWNLOAD_BYTES as usize).div_ceil(CHUNK_BYTES);
    let chunk = Bytes::from(vec![0u8; CHUNK_BYTES]);
    let stream = futures_util::stream::iter((0..chunks).map(move |_| Ok::<_, Infallible>(chunk.clone())));
    Ok(([(CONTENT_TYPE, "application/octet-stream")], Body::from_stream(stream)).into_response())
}

#[derive(Serialize)]
pub struct Uploaded {
    bytes: u64,
    up_mbps: u32,
}

pub async fn upload(State(app): State<App>, Path(token): Path<String>, body: Body) -> ApiResult<Json<Uploaded>> {
    let device = spend(&app, &token, Direction::Upload)?;
    let started = Instant::now();
    let mut bytes = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("upload interrupted: {e}")))?;
        bytes += chunk.len() as u64;
        if bytes > SPEEDTEST_UPLOAD_BYTES {
            return Err(ApiError::bad_request(format!("an upload test sends at most {SPEEDTEST_UPLOAD_BYTES} bytes")));
        }
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-6);
    let up_mbps = ((bytes as f64 * 8.0 / 1e6) / seconds).min(f64::from(u32::MAX)) as u32;
    app.hub.record_upload(&device, up_mbps);
    Ok(Json(Uploaded { bytes, up_mbps }))
}
