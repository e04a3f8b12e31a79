//! Takes the coordinator's throughput test (download then upload of fixed size), at
//! registration and daily. The coordinator times both directions itself and sets the tier
//! from its own figures: the download ends with a random receipt the upload must present, so
//! the coordinator's downlink clock stops only once every byte arrived. What this side
//! measures is for the supplier's logs only.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use herd_core::tier::mbps;
use herd_proto::worker::{
    Throughput, SPEEDTEST_RECEIPT_BYTES as RECEIPT_BYTES, SPEEDTEST_RECEIPT_HEADER as RECEIPT_HEADER,
    SPEEDTEST_UPLOAD_BYTES,
};

/// A test that takes longer than this is abandoned (and retried at the next token).
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

pub async fn measure(coordinator: &str, token: &str) -> Result<Throughput, String> {
    let client =
        crate::tls::http_client(reqwest::Client::builder().timeout(TEST_TIMEOUT)).map_err(|e| e.to_string())?;
    let base = format!("{}/v1/worker/speedtest/{token}", coordinator.trim_end_matches('/'));

    let started = Instant::now();
    let response = client.get(format!("{base}/download")).send().await.map_err(|e| e.to_string())?;
    let response = response.error_for_status().map_err(|e| e.to_string())?;
    let mut body = response.bytes_stream();
    let mut bytes = 0u64;
    // The last bytes of the download are its receipt.
    let mut tail: Vec<u8> = Vec::with_capacity(2 * RECEIPT_BYTES);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        bytes += chunk.len() as u64;
        tail.extend_from_slice(&chunk[chunk.len().saturating_sub(RECEIPT_BYTES)..]);
        let excess = tail.len().saturating_sub(RECEIPT_BYTES);
        tail.drain(..excess);
    }
    let down_mbps = mbps(bytes, started.elapsed());
    if tail.len() < RECEIPT_BYTES {
        return Err(format!("the download was {bytes} bytes, too short to hold its receipt"));
    }

    let payload = vec![0u8; SPEEDTEST_UPLOAD_BYTES as usize];
    let started = Instant::now();
    let response = client
        .post(format!("{base}/upload"))
        .header(RECEIPT_HEADER, herd_core::hex::encode(&tail))
        .body(payload)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    response.error_for_status().map_err(|e| e.to_string())?;
    let up_mbps = mbps(SPEEDTEST_UPLOAD_BYTES, started.elapsed());
    Ok(Throughput { down_mbps, up_mbps })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn megabits_per_second() {
        assert_eq!(mbps(125_000_000, Duration::from_secs(1)), 1000);
        assert_eq!(mbps(16 << 20, Duration::from_millis(100)), 1342);
        assert_eq!(mbps(0, Duration::ZERO), 0);
    }
}
