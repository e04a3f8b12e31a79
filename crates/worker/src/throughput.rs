//! Measures this machine's throughput to the coordinator (download then upload of fixed
//! size), at registration and daily; the coordinator derives the connectivity tier.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use herd_proto::worker::{Throughput, SPEEDTEST_UPLOAD_BYTES};

/// A test that takes longer than this is abandoned (and retried at the next token).
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

fn mbps(bytes: u64, elapsed: Duration) -> u32 {
    let megabits = bytes as f64 * 8.0 / 1e6;
    (megabits / elapsed.as_secs_f64().max(1e-6)).min(f64::from(u32::MAX)) as u32
}

pub async fn measure(coordinator: &str, token: &str) -> Result<Throughput, String> {
    let client =
        crate::tls::http_client(reqwest::Client::builder().timeout(TEST_TIMEOUT)).map_err(|e| e.to_string())?;
    let base = format!("{}/v1/worker/speedtest/{token}", coordinator.trim_end_matches('/'));

    let started = Instant::now();
    let response = client.get(format!("{base}/download")).send().await.map_err(|e| e.to_string())?;
    let response = response.error_for_status().map_err(|e| e.to_string())?;
    let mut body = response.bytes_stream();
    let mut bytes = 0u64;
    while let Some(chunk) = body.next().await {
        bytes += chunk.map_err(|e| e.to_string())?.len() as u64;
    }
    let down_mbps = mbps(bytes, started.elapsed());

    let payload = vec![0u8; SPEEDTEST_UPLOAD_BYTES as usize];
    let started = Instant::now();
    let response = client.post(format!("{base}/upload")).body(payload).send().await.map_err(|e| e.to_string())?;
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
