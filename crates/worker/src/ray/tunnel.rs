//! The agent's end of the dashboard tunnel: requests the coordinator relays from the
//! customer are replayed against the head's dashboard on loopback, and the answer goes back
//! in chunks over the worker socket. The agent dials nothing but loopback here, so a head
//! behind NAT serves its dashboard without opening a port.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use herd_proto::worker::{TunnelOpen, WorkerMessage, TUNNEL_CHUNK_BYTES};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::RayNodes;

/// Request body chunks (or, upgraded, bytes from the customer) buffered per stream before the
/// stream is given up (the dashboard reads far faster than the socket delivers, so this is
/// never reached in practice).
const BODY_QUEUE_CHUNKS: usize = 64;
/// Streams open at once; more are refused with 503.
const STREAMS_MAX: usize = 64;
/// Headers that describe one hop, not the message (RFC 9110 §7.6.1).
pub(super) const HOP_BY_HOP: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host"];

struct Stream {
    body: Option<mpsc::Sender<Bytes>>,
    task: JoinHandle<()>,
}

#[derive(Clone)]
pub struct Tunnels {
    streams: Arc<Mutex<HashMap<u64, Stream>>>,
    events: mpsc::Sender<WorkerMessage>,
    client: reqwest::Client,
}

impl Tunnels {
    pub fn new(events: mpsc::Sender<WorkerMessage>) -> Tunnels {
        Tunnels { streams: Arc::default(), events, client: super::http_client() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Stream>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn open(&self, open: TunnelOpen, nodes: &RayNodes) {
        let stream = open.stream;
        let port = nodes.dashboard_port(&open.cluster_id);
        let mut streams = self.lock();
        let refusal = match port {
            _ if streams.len() >= STREAMS_MAX => Some("too many tunnelled requests at once"),
            None => Some("this device does not run that cluster's Ray head (or it is not up)"),
            Some(_) => None,
        };
        if let Some(reason) = refusal {
            let events = self.events.clone();
            tokio::spawn(async move { refuse(&events, stream, reason).await });
            return;
        }
        let (body, body_rx) = mpsc::channel(BODY_QUEUE_CHUNKS);
        let port = port.expect("checked");
        let task = if open.upgrade.is_some() {
            tokio::spawn(relay_upgrade(self.clone(), open, port, body_rx))
        } else {
            tokio::spawn(relay(self.clone(), self.client.clone(), open, port, body_rx))
        };
        streams.insert(stream, Stream { body: Some(body), task });
    }

    pub fn data(&self, stream: u64, data: &str) {
        let chunk = match BASE64.decode(data) {
            Ok(chunk) => chunk,
            Err(_) => return self.abort(stream),
        };
        let mut streams = self.lock();
        let Some(body) = streams.get_mut(&stream).and_then(|s| s.body.as_ref()) else { return };
        if body.try_send(Bytes::from(chunk)).is_err() {
            drop(streams);
            self.abort(stream);
        }
    }

    /// The request body is complete.
    pub fn end(&self, stream: u64) {
        if let Some(s) = self.lock().get_mut(&stream) {
            s.body = None;
        }
    }

    pub fn abort(&self, stream: u64) {
        if let Some(s) = self.lock().remove(&stream) {
            s.task.abort();
        }
    }

    fn finished(&self, stream: u64) {
        self.lock().remove(&stream);
    }
}

async fn refuse(events: &mpsc::Sender<WorkerMessage>, stream: u64, reason: &str) {
    let _ = events.send(WorkerMessage::TunnelResponse { stream, status: 503, headers: Vec::new() }).await;
    let _ = events.send(WorkerMessage::TunnelEnd { stream, error: Some(reason.to_owned()) }).await;
}

async fn relay(tunnels: Tunnels, client: reqwest::Client, open: TunnelOpen, port: u16, body: mpsc::Receiver<Bytes>) {
    let stream = open.stream;
    let events = tunnels.events.clone();
    let error = forward(&client, &events, open, port, body).await.err();
    let _ = events.send(WorkerMessage::TunnelEnd { stream, error }).await;
    tunnels.finished(stream);
}

async fn relay_upgrade(tunnels: Tunnels, open: TunnelOpen, port: u16, upstream: mpsc::Receiver<Bytes>) {
    let stream = open.stream;
    let events = tunnels.events.clone();
    let error = super::upgrade::forward(&events, open, port, upstream).await.err();
    let _ = events.send(WorkerMessage::TunnelEnd { stream, error }).await;
    tunnels.finished(stream);
}

async fn forward(
    client: &reqwest::Client,
    events: &mpsc::Sender<WorkerMessage>,
    open: TunnelOpen,
    port: u16,
    body: mpsc::Receiver<Bytes>,
) -> Result<(), String> {
    let stream = open.stream;
    let method = reqwest::Method::from_bytes(open.method.as_bytes()).map_err(|e| format!("bad method: {e}"))?;
    if !open.path.starts_with('/') {
        return Err("the path must start with /".into());
    }
    let mut request = client.request(method, format!("http://127.0.0.1:{port}{}", open.path));
    for (name, value) in &open.headers {
        if !HOP_BY_HOP.contains(&name.to_ascii_lowercase().as_str()) {
            request = request.header(name, value);
        }
    }
    let body = futures_util::stream::unfold(body, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok::<Bytes, std::io::Error>(chunk), rx))
    });
    let response = request.body(reqwest::Body::wrap_stream(body)).send().await.map_err(|e| super::error_chain(&e))?;
    let headers = response
        .headers()
        .iter()
        .filter(|(name, _)| !HOP_BY_HOP.contains(&name.as_str()))
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
        .collect();
    let status = response.status().as_u16();
    events.send(WorkerMessage::TunnelResponse { stream, status, headers }).await.map_err(|e| e.to_string())?;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("the dashboard's answer broke off: {}", super::error_chain(&e)))?;
        for piece in chunk.chunks(TUNNEL_CHUNK_BYTES) {
            let data = BASE64.encode(piece);
            events.send(WorkerMessage::TunnelData { stream, data }).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
