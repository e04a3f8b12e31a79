//! HTTP over the worker socket: a customer's request for a Ray cluster's dashboard or job API
//! is relayed to the agent running the cluster's head, which replays it on loopback; the
//! answer comes back in chunks. Nothing of the cluster listens publicly, and a head behind
//! NAT is reachable because its agent dialled out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use axum::body::{Body, Bytes};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use futures_util::{Stream, StreamExt};
use herd_core::{Address, ClusterId};
use herd_proto::worker::{ServerMessage, TunnelOpen, TUNNEL_CHUNK_BYTES};
use tokio::sync::mpsc;

use crate::app::App;
use crate::error::{ApiError, ApiResult};

/// Response chunks buffered per stream; a customer that reads slower than this loses the
/// stream rather than making the coordinator buffer without bound.
const EVENTS_PER_STREAM: usize = 256;
/// How long the head may take to start answering.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Request bodies larger than this are refused (Ray's own package limit is 100 MiB).
pub const REQUEST_BYTES_MAX: usize = 128 << 20;

#[derive(Debug)]
pub enum TunnelEvent {
    Head { status: u16, headers: Vec<(String, String)> },
    Data(Bytes),
    End(Option<String>),
}

struct Route {
    device: Address,
    events: mpsc::Sender<TunnelEvent>,
}

#[derive(Default)]
pub struct Tunnels {
    next_stream: AtomicU64,
    routes: Mutex<HashMap<u64, Route>>,
}

impl Tunnels {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Route>> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open(&self, device: &Address) -> (u64, mpsc::Receiver<TunnelEvent>) {
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed) + 1;
        let (events, receiver) = mpsc::channel(EVENTS_PER_STREAM);
        self.lock().insert(stream, Route { device: device.clone(), events });
        (stream, receiver)
    }

    fn close(&self, stream: u64) {
        self.lock().remove(&stream);
    }

    /// Hands a worker's message to the stream's waiting request. Only the device the stream
    /// was opened to may answer it; a stream whose customer cannot keep up is dropped.
    pub fn deliver(&self, device: &Address, stream: u64, event: TunnelEvent) {
        let mut routes = self.lock();
        let Some(route) = routes.get(&stream).filter(|r| &r.device == device) else { return };
        if route.events.try_send(event).is_err() {
            tracing::warn!(%device, stream, "tunnel stream backed up or gone; dropping it");
            routes.remove(&stream);
        }
    }
}

/// Decodes a worker's base64 chunk (None for garbage, which ends the stream).
pub fn decode_chunk(data: &str) -> Option<Bytes> {
    BASE64.decode(data).ok().map(Bytes::from)
}

/// One request to relay: where, and what.
pub struct Relay {
    pub device: Address,
    pub cluster: ClusterId,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// `websocket` when the customer asked to upgrade the connection.
    pub upgrade: Option<String>,
}

/// The head's answer: its status and headers, then its body as it arrives.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

/// Closes the stream when the request or its answer's body is dropped, telling the worker
/// to stop if it had not finished.
struct StreamGuard {
    app: App,
    device: Address,
    stream: u64,
    finished: bool,
}

impl StreamGuard {
    /// The worker finished the stream: nothing to abort.
    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.app.tunnels.close(self.stream);
        if !self.finished {
            self.app.hub.send(&self.device, ServerMessage::TunnelAbort { stream: self.stream });
        }
    }
}

async fn send(app: &App, device: &Address, message: ServerMessage) -> ApiResult<()> {
    if app.hub.send_wait(device, message).await {
        Ok(())
    } else {
        Err(ApiError::unavailable("the head's worker disconnected; retry in a few seconds"))
    }
}

/// Opens a stream to the relay's device: the guard closes it however the request ends.
async fn open(app: &App, relay: Relay) -> ApiResult<(u64, mpsc::Receiver<TunnelEvent>, StreamGuard)> {
    let (stream, events) = app.tunnels.open(&relay.device);
    let guard = StreamGuard { app: app.clone(), device: relay.device.clone(), stream, finished: false };
    let open = TunnelOpen {
        stream,
        cluster_id: relay.cluster,
        method: relay.method,
        path: relay.path,
        headers: relay.headers,
        upgrade: relay.upgrade,
    };
    send(app, &relay.device, ServerMessage::TunnelOpen(open)).await?;
    Ok((stream, events, guard))
}

/// Relays one request with `body` and waits for the answer's head.
pub async fn relay<S, E>(app: &App, relay: Relay, body: S) -> ApiResult<Answer>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let device = relay.device.clone();
    let (stream, mut events, mut guard) = open(app, relay).await?;
    let mut body = body;
    let mut sent = 0usize;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("the request body broke off: {e}")))?;
        sent += chunk.len();
        if sent > REQUEST_BYTES_MAX {
            return Err(ApiError::too_large(format!("request bodies are limited to {} MiB", REQUEST_BYTES_MAX >> 20)));
        }
        send_bytes(app, &device, stream, &chunk).await?;
    }
    send(app, &device, ServerMessage::TunnelEnd { stream }).await?;
    let (status, headers) = answer_head(&mut events, &mut guard).await?;
    Ok(Answer { status, headers, body: body_of(events, guard) })
}

/// Relays a request to upgrade the connection (a WebSocket: Ray's log tailing). When the head
/// switches protocols, the customer's upgraded connection and the head's are spliced through
/// the stream until either side closes; any other answer is relayed as usual.
pub async fn relay_upgrade(app: &App, relay: Relay, upgrade: hyper::upgrade::OnUpgrade) -> ApiResult<Answer> {
    let device = relay.device.clone();
    let (stream, mut events, mut guard) = open(app, relay).await?;
    let (status, headers) = answer_head(&mut events, &mut guard).await?;
    if status != 101 {
        return Ok(Answer { status, headers, body: body_of(events, guard) });
    }
    let app = app.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        splice(&app, &device, stream, hyper_util::rt::TokioIo::new(upgraded), events, guard).await;
    });
    Ok(Answer { status, headers, body: Body::empty() })
}

/// Copies the customer's upgraded connection to the stream and the stream's data back, until
/// the head's side ends (or either side broke). The customer closing its side only half-closes
/// the head's.
async fn splice(
    app: &App,
    device: &Address,
    stream: u64,
    io: impl tokio::io::AsyncRead + tokio::io::AsyncWrite,
    mut events: mpsc::Receiver<TunnelEvent>,
    guard: StreamGuard,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut reader, mut writer) = tokio::io::split(io);
    let mut buffer = vec![0u8; TUNNEL_CHUNK_BYTES];
    let mut upstream_open = true;
    loop {
        tokio::select! {
            read = reader.read(&mut buffer), if upstream_open => match read {
                Ok(0) | Err(_) => {
                    upstream_open = false;
                    if !app.hub.send_wait(device, ServerMessage::TunnelEnd { stream }).await {
                        return;
                    }
                }
                Ok(n) => {
                    if send_bytes(app, device, stream, &buffer[..n]).await.is_err() {
                        return;
                    }
                }
            },
            event = events.recv() => match event {
                Some(TunnelEvent::Data(bytes)) => {
                    if writer.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Some(TunnelEvent::End(_)) => {
                    let _ = writer.shutdown().await;
                    break;
                }
                Some(TunnelEvent::Head { .. }) | None => return,
            },
        }
    }
    guard.finish();
}

async fn send_bytes(app: &App, device: &Address, stream: u64, bytes: &[u8]) -> ApiResult<()> {
    for piece in bytes.chunks(TUNNEL_CHUNK_BYTES) {
        let data = BASE64.encode(piece);
        send(app, device, ServerMessage::TunnelData { stream, data }).await?;
    }
    Ok(())
}

/// Waits for the answer's status and headers.
async fn answer_head(
    events: &mut mpsc::Receiver<TunnelEvent>,
    guard: &mut StreamGuard,
) -> ApiResult<(u16, Vec<(String, String)>)> {
    let head = tokio::time::timeout(RESPONSE_TIMEOUT, events.recv()).await.map_err(|_| {
        ApiError::unavailable(format!("the Ray head did not answer within {} s", RESPONSE_TIMEOUT.as_secs()))
    })?;
    match head {
        Some(TunnelEvent::Head { status, headers }) => Ok((status, headers)),
        Some(TunnelEvent::End(error)) => {
            guard.finished = true;
            Err(ApiError::unavailable(format!(
                "the Ray head could not answer: {}",
                error.unwrap_or_else(|| "no response".into())
            )))
        }
        Some(TunnelEvent::Data(_)) | None => Err(ApiError::unavailable("the tunnel to the Ray head broke; retry")),
    }
}

/// The answer's body as it arrives; the stream closes when the body is dropped.
fn body_of(events: mpsc::Receiver<TunnelEvent>, guard: StreamGuard) -> Body {
    let body = futures_util::stream::unfold((events, guard), |(mut events, mut guard)| async move {
        match events.recv().await {
            Some(TunnelEvent::Data(bytes)) => Some((Ok(bytes), (events, guard))),
            Some(TunnelEvent::End(None)) => {
                guard.finish();
                None
            }
            Some(TunnelEvent::End(Some(error))) => {
                guard.finished = true;
                Some((Err(std::io::Error::other(error)), (events, guard)))
            }
            Some(TunnelEvent::Head { .. }) | None => {
                Some((Err(std::io::Error::other("the tunnel to the Ray head broke")), (events, guard)))
            }
        }
    });
    // After an error item the stream would be polled again; fuse it so it ends there.
    let body = body.scan(false, |failed, item: Result<Bytes, std::io::Error>| {
        let out = if *failed { None } else { Some(item) };
        if let Some(Err(_)) = &out {
            *failed = true;
        }
        futures_util::future::ready(out)
    });
    Body::from_stream(body)
}

/// Relays a small request and collects the whole answer (for herd's own calls to the Ray
/// job API).
pub async fn call(app: &App, relay_to: Relay, body: Vec<u8>, answer_bytes_max: usize) -> ApiResult<(u16, Bytes)> {
    let body = futures_util::stream::iter([Ok::<Bytes, std::convert::Infallible>(Bytes::from(body))]);
    let answer = relay(app, relay_to, body).await?;
    let mut collected = Vec::new();
    let mut stream = answer.body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::unavailable(format!("the Ray head's answer broke off: {e}")))?;
        if collected.len() + chunk.len() > answer_bytes_max {
            return Err(ApiError::unavailable(format!(
                "the Ray head's answer is larger than {} MiB",
                answer_bytes_max >> 20
            )));
        }
        collected.extend_from_slice(&chunk);
    }
    Ok((answer.status, Bytes::from(collected)))
}
