//! Throughput tests for workers: a download and an upload of fixed size, each allowed once
//! per token (tokens come over the worker's authenticated socket). The coordinator times both
//! directions itself and is the only source of a device's connectivity tier:
//! - the downlink from the download's first byte to the upload's arrival, which must carry
//!   the random receipt the download ended with (so every byte had arrived);
//! - the uplink from the upload's first byte to its last.
//!
//! A worker can make its link look slower than it is, never faster.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use herd_proto::worker::{
    Throughput, SPEEDTEST_DOWNLOAD_BYTES, SPEEDTEST_RECEIPT_BYTES, SPEEDTEST_RECEIPT_HEADER, SPEEDTEST_UPLOAD_BYTES,
};
use serde::Serialize;
use tokio::time::Instant;

use crate::app::App;
use crate::error::{ApiError, ApiResult};

const CHUNK_BYTES: usize = 64 * 1024;

fn unknown_token() -> ApiError {
    ApiError::unauthorized("speedtest token unknown, expired or already used")
}

pub async fn download(State(app): State<App>, Path(token): Path<String>) -> ApiResult<Response> {
    let started = app.hub.start_speedtest_download(&token, Instant::now()).ok_or_else(unknown_token)?;
    let total = SPEEDTEST_DOWNLOAD_BYTES as usize;
    let zeros = total - SPEEDTEST_RECEIPT_BYTES;
    let chunk = Bytes::from(vec![0u8; CHUNK_BYTES]);
    let sizes = (0..zeros.div_ceil(CHUNK_BYTES)).map(move |i| (zeros - i * CHUNK_BYTES).min(CHUNK_BYTES));
    let body = sizes
        .map(move |size| chunk.slice(..size))
        .chain(std::iter::once(Bytes::copy_from_slice(&started.receipt)))
        .map(Ok::<_, Infallible>);
    let stream = futures_util::stream::iter(body);
    Ok(([(CONTENT_TYPE, "application/octet-stream")], Body::from_stream(stream)).into_response())
}

#[derive(Serialize)]
pub struct Measured {
    bytes: u64,
    down_mbps: u32,
    up_mbps: u32,
    tier: String,
}

pub async fn upload(
    State(app): State<App>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Measured>> {
    let arrived = Instant::now();
    let receipt = headers
        .get(SPEEDTEST_RECEIPT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(herd_core::hex::decode_array::<SPEEDTEST_RECEIPT_BYTES>)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "the upload presents the download's last 32 bytes, hex, in {SPEEDTEST_RECEIPT_HEADER}"
            ))
        })?;
    let started = app.hub.start_speedtest_upload(&token, &receipt, arrived).map_err(ApiError::unauthorized)?;
    let clock = Instant::now();
    let mut bytes = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("upload interrupted: {e}")))?;
        bytes += chunk.len() as u64;
        if bytes > SPEEDTEST_UPLOAD_BYTES {
            return Err(ApiError::bad_request(format!("an upload test sends at most {SPEEDTEST_UPLOAD_BYTES} bytes")));
        }
    }
    if bytes < SPEEDTEST_UPLOAD_BYTES {
        return Err(ApiError::bad_request(format!("an upload test sends {SPEEDTEST_UPLOAD_BYTES} bytes, got {bytes}")));
    }
    let up_mbps = herd_core::tier::mbps(bytes, clock.elapsed());
    let measured = Throughput { down_mbps: started.down_mbps, up_mbps };
    let tier = app.store.record_throughput(&started.device, measured).await?;
    app.sync_market(std::slice::from_ref(&started.device)).await;
    tracing::info!(device = %started.device, %tier, ?measured, "connectivity measured by the coordinator");
    Ok(Json(Measured { bytes, down_mbps: measured.down_mbps, up_mbps, tier: tier.to_string() }))
}
