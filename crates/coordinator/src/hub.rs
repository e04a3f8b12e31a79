//! The connected workers: one bounded outbox per device, and when each was last heard from.
//!
//! Liveness uses tokio's clock (`Instant`), so tests drive it with paused time. A device is
//! watched from its hello (or, after a coordinator restart, from start-up if the database
//! says it was online) until it is declared offline.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use herd_core::{Address, Timestamp};
use herd_proto::api::Utilization;
use herd_proto::worker::{ServerMessage, SPEEDTEST_RECEIPT_BYTES};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Messages queued for one worker. A worker that lets this fill up is disconnected rather
/// than buffered without bound; on reconnect it is sent its unfinished assignments again.
pub const OUTBOX_CAPACITY: usize = 256;

struct Connection {
    id: u64,
    outbox: mpsc::Sender<ServerMessage>,
}

#[derive(Default)]
struct Inner {
    next_connection_id: u64,
    connections: HashMap<Address, Connection>,
    last_seen: HashMap<Address, Instant>,
    /// The latest heartbeat of each device since the last flush (at most one per device).
    heartbeats: HashMap<Address, (Timestamp, Utilization)>,
    /// Outstanding throughput-test tokens (at most one per device).
    speedtests: HashMap<String, Speedtest>,
}

struct Speedtest {
    device: Address,
    expires: Instant,
    /// When the download began, once it has.
    download_started: Option<Instant>,
    /// The download's last bytes: the upload must present them, which proves the worker
    /// received the whole download before the coordinator stops its clock.
    receipt: [u8; SPEEDTEST_RECEIPT_BYTES],
    uploaded: bool,
}

/// A spent download: where the worker must prove it arrived.
pub struct DownloadStarted {
    pub device: Address,
    pub receipt: [u8; SPEEDTEST_RECEIPT_BYTES],
}

/// A spent upload: the device, and the downlink the coordinator timed (from the download's
/// first byte sent to the receipt's return).
pub struct UploadStarted {
    pub device: Address,
    pub down_mbps: u32,
}

/// How long `send_wait` waits for room in an outbox.
const SEND_WAIT_MAX: Duration = Duration::from_secs(10);

/// How long a speedtest token may wait before its test starts.
pub const SPEEDTEST_TOKEN_TTL: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Hub {
    inner: Mutex<Inner>,
    /// Other replicas, for devices whose socket is not here.
    bus: std::sync::OnceLock<crate::bus::Bus>,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves only plain maps behind; keep serving.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a new connection for `device`, replacing (and so closing) an older one.
    pub fn attach(&self, device: &Address, now: Instant) -> (u64, mpsc::Receiver<ServerMessage>) {
        let (outbox, receiver) = mpsc::channel(OUTBOX_CAPACITY);
        let mut inner = self.lock();
        inner.next_connection_id += 1;
        let id = inner.next_connection_id;
        inner.connections.insert(device.clone(), Connection { id, outbox });
        inner.last_seen.insert(device.clone(), now);
        (id, receiver)
    }

    /// Removes the connection if it is still the current one for `device`.
    pub fn detach(&self, device: &Address, connection_id: u64) {
        let mut inner = self.lock();
        if inner.connections.get(device).is_some_and(|c| c.id == connection_id) {
            inner.connections.remove(device);
        }
    }

    pub fn touch(&self, device: &Address, now: Instant) {
        if let Some(seen) = self.lock().last_seen.get_mut(device) {
            *seen = now;
        }
    }

    /// Keeps the latest heartbeat until the next `take_heartbeats`.
    pub fn heartbeat(&self, device: &Address, at: Timestamp, utilization: Utilization) {
        self.lock().heartbeats.insert(device.clone(), (at, utilization));
    }

    pub fn take_heartbeats(&self) -> Vec<(Address, Timestamp, Utilization)> {
        self.lock().heartbeats.drain().map(|(device, (at, utilization))| (device, at, utilization)).collect()
    }

    /// A fresh single-use token for one throughput test by `device` (replacing older ones).
    pub fn issue_speedtest(
        &self,
        device: &Address,
        token: String,
        receipt: [u8; SPEEDTEST_RECEIPT_BYTES],
        now: Instant,
    ) -> String {
        let mut inner = self.lock();
        inner.speedtests.retain(|_, t| &t.device != device && t.expires > now);
        let test = Speedtest {
            device: device.clone(),
            expires: now + SPEEDTEST_TOKEN_TTL,
            download_started: None,
            receipt,
            uploaded: false,
        };
        inner.speedtests.insert(token.clone(), test);
        token
    }

    /// Starts a token's download (once): the device and the receipt the download ends with.
    pub fn start_speedtest_download(&self, token: &str, now: Instant) -> Option<DownloadStarted> {
        let mut inner = self.lock();
        let test = inner.speedtests.get_mut(token).filter(|t| t.expires > now && t.download_started.is_none())?;
        test.download_started = Some(now);
        Some(DownloadStarted { device: test.device.clone(), receipt: test.receipt })
    }

    /// Starts a token's upload (once, after its download) if `receipt` is the download's:
    /// the token is used up and the downlink is timed up to now.
    pub fn start_speedtest_upload(&self, token: &str, receipt: &[u8], now: Instant) -> Result<UploadStarted, String> {
        let mut inner = self.lock();
        let Some(test) = inner.speedtests.get_mut(token).filter(|t| t.expires > now && !t.uploaded) else {
            return Err("speedtest token unknown, expired or already used".into());
        };
        let Some(started) = test.download_started else {
            return Err("download first: the upload presents the download's receipt".into());
        };
        if receipt != test.receipt.as_slice() {
            return Err("the receipt is not the one the download ended with (download all of it first)".into());
        }
        test.uploaded = true;
        let device = test.device.clone();
        let bytes = herd_proto::worker::SPEEDTEST_DOWNLOAD_BYTES;
        let down_mbps = herd_core::tier::mbps(bytes, now.duration_since(started));
        inner.speedtests.remove(token);
        Ok(UploadStarted { device, down_mbps })
    }

    /// Starts watching a device the database believes is online (used at start-up).
    pub fn watch(&self, device: &Address, now: Instant) {
        self.lock().last_seen.entry(device.clone()).or_insert(now);
    }

    /// Sends what this hub cannot deliver through the bus to the other replicas.
    pub fn use_bus(&self, bus: crate::bus::Bus) {
        let _ = self.bus.set(bus);
    }

    /// Queues a message; false if the device is not connected (here, or on another replica
    /// when there is a bus: then it is handed to the bus) or its outbox is full (then the
    /// connection is dropped so the worker reconnects and resynchronises).
    pub fn send(&self, device: &Address, message: ServerMessage) -> bool {
        if !self.is_connected(device) {
            if let Some(bus) = self.bus.get() {
                return bus.send_to_device(device, &message);
            }
        }
        self.send_local(device, message)
    }

    /// Queues a message for a socket on this replica only.
    pub fn send_local(&self, device: &Address, message: ServerMessage) -> bool {
        let mut inner = self.lock();
        let Some(connection) = inner.connections.get(device) else {
            return false;
        };
        match connection.outbox.try_send(message) {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%device, %error, "worker outbox unavailable; dropping the connection");
                inner.connections.remove(device);
                false
            }
        }
    }

    /// Queues a message, waiting (up to `SEND_WAIT_MAX`) for room: for bulk streams such as
    /// tunnelled request bodies, which must not be dropped. False if the device is gone.
    pub async fn send_wait(&self, device: &Address, message: ServerMessage) -> bool {
        let Some(outbox) = self.lock().connections.get(device).map(|c| c.outbox.clone()) else {
            return false;
        };
        matches!(tokio::time::timeout(SEND_WAIT_MAX, outbox.send(message)).await, Ok(Ok(())))
    }

    /// The current connection's id, if the device is connected.
    pub fn connection_id(&self, device: &Address) -> Option<u64> {
        self.lock().connections.get(device).map(|c| c.id)
    }

    /// Drops the device's connection (its session ends once queued messages are sent).
    pub fn disconnect(&self, device: &Address) {
        self.lock().connections.remove(device);
    }

    pub fn is_connected(&self, device: &Address) -> bool {
        self.lock().connections.contains_key(device)
    }

    pub fn connected_count(&self) -> usize {
        self.lock().connections.len()
    }

    /// Devices not heard from within `timeout`: they stop being watched and lose their
    /// connection, if any. The caller records them offline.
    pub fn take_stale(&self, now: Instant, timeout: Duration) -> Vec<Address> {
        let mut inner = self.lock();
        let mut stale: Vec<Address> = inner
            .last_seen
            .iter()
            .filter(|(_, seen)| now.duration_since(**seen) > timeout)
            .map(|(d, _)| d.clone())
            .collect();
        // In a stable order, so what follows (replacements) does not depend on hashing.
        stale.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        for device in &stale {
            inner.last_seen.remove(device);
            inner.connections.remove(device);
        }
        stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(n: u8) -> Address {
        Address::from_public_key(&[n; 32])
    }

    #[tokio::test(start_paused = true)]
    async fn silent_devices_become_stale_after_the_timeout() {
        let hub = Hub::default();
        let timeout = Duration::from_secs(15);
        let (_id, _rx) = hub.attach(&device(1), Instant::now());
        hub.watch(&device(2), Instant::now());
        tokio::time::advance(Duration::from_secs(10)).await;
        hub.touch(&device(1), Instant::now());
        assert!(hub.take_stale(Instant::now(), timeout).is_empty());
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(hub.take_stale(Instant::now(), timeout), vec![device(2)]);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(hub.take_stale(Instant::now(), timeout), vec![device(1)]);
        assert!(!hub.is_connected(&device(1)), "a stale device loses its connection");
        assert!(hub.take_stale(Instant::now(), timeout).is_empty(), "reported once");
    }

    #[tokio::test]
    async fn a_new_connection_replaces_the_old_one() {
        let hub = Hub::default();
        let (first, mut first_rx) = hub.attach(&device(1), Instant::now());
        let (_second, mut second_rx) = hub.attach(&device(1), Instant::now());
        assert!(first_rx.recv().await.is_none(), "the replaced connection's outbox closes");
        hub.detach(&device(1), first);
        assert!(hub.is_connected(&device(1)), "detaching a replaced connection keeps the new one");
        assert!(hub.send(&device(1), ServerMessage::Rejected { code: "x".into(), message: "y".into() }));
        assert!(second_rx.recv().await.is_some());
    }
}
