//! `/v1/worker/connect`: the socket every worker dials out to.
//!
//! Handshake: a fresh nonce per connection; the worker signs its hello (which carries that
//! nonce) with its own device key. A hello captured from another connection carries another
//! nonce and is refused, so replays fail; a device stays bound to its first owner.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use herd_core::Address;
use herd_proto::signing::{device_endorsement_message, worker_hello_message};
use herd_proto::worker::{
    HelloPayload, OverlaySupport, ServerMessage, WorkerMessage, FRAME_BYTES_MAX, OUTPUT_LINES_PER_MESSAGE_MAX,
    OUTPUT_LINE_BYTES_MAX,
};
use herd_proto::WORKER_PROTOCOL_VERSION;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::actions;
use crate::api::validate_country;
use crate::app::{now, App};
use crate::auth::{hash_pairing_code, random_token, verify_signature};
use crate::metrics::labels;
use crate::proving::Reply;
use crate::store::HelloRefusal;
use crate::tunnel::{decode_chunk, TunnelEvent};

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const ADVERTISE_ADDR_LEN_MAX: usize = 255;
/// How long a closing connection waits for the worker's in-flight messages.
const SHUTDOWN_DRAIN_MAX: Duration = Duration::from_secs(2);
/// Database-bound messages queued per connection before reading the socket waits.
const HANDLER_QUEUE_CAPACITY: usize = 64;

pub async fn connect(State(app): State<App>, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .max_message_size(FRAME_BYTES_MAX)
        .max_frame_size(FRAME_BYTES_MAX)
        .on_upgrade(move |socket| session(app, socket))
}

struct Refusal {
    code: &'static str,
    message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal { code, message: message.into() }
}

fn encode(message: &ServerMessage) -> Message {
    Message::Text(serde_json::to_string(message).expect("server messages serialise").into())
}

async fn session(app: App, mut socket: WebSocket) {
    let tracker = app.clone();
    let _live = tracker.sessions.enter();
    match handshake(&app, &mut socket).await {
        Ok(hello) => {
            app.metrics.worker_sessions.get_or_create(&labels(&[("outcome", "accepted")])).inc();
            serve(app, socket, hello).await;
        }
        Err(refusal) => {
            app.metrics.worker_sessions.get_or_create(&labels(&[("outcome", refusal.code)])).inc();
            if let Some(suppressed) = app.log_limits.worker_refused.allow(now().0) {
                tracing::warn!(code = refusal.code, message = %refusal.message, suppressed, "worker refused");
            }
            let rejected = ServerMessage::Rejected { code: refusal.code.to_owned(), message: refusal.message };
            let _ = socket.send(encode(&rejected)).await;
            let _ = socket.send(Message::Close(None)).await;
        }
    }
}

async fn handshake(app: &App, socket: &mut WebSocket) -> Result<HelloPayload, Refusal> {
    let nonce = random_token();
    let challenge = ServerMessage::Challenge { nonce: nonce.clone(), server_time: now() };
    socket.send(encode(&challenge)).await.map_err(|e| refuse("io", e.to_string()))?;
    let first = tokio::time::timeout(HELLO_TIMEOUT, socket.recv())
        .await
        .map_err(|_| refuse("timeout", "no hello within 10 s"))?;
    let Some(Ok(Message::Text(text))) = first else {
        return Err(refuse("expected_hello", "the first message must be a hello (JSON text)"));
    };
    let Ok(WorkerMessage::Hello(signed)) = serde_json::from_str::<WorkerMessage>(&text) else {
        return Err(refuse("expected_hello", "the first message must be a hello"));
    };
    let hello: HelloPayload = serde_json::from_str(&signed.payload)
        .map_err(|e| refuse("bad_hello", format!("invalid hello payload: {e}")))?;
    verify_signature(&hello.device_key, &worker_hello_message(&signed.payload), &signed.signature)
        .map_err(|e| refuse("bad_signature", format!("hello signature refused: {e}")))?;
    if hello.nonce != nonce {
        return Err(refuse("stale_nonce", "the hello was signed for another connection's nonce (replayed?)"));
    }
    if hello.protocol_version != WORKER_PROTOCOL_VERSION {
        return Err(refuse(
            "protocol_version",
            format!(
                "worker protocol {} is not supported; this coordinator speaks {WORKER_PROTOCOL_VERSION}",
                hello.protocol_version
            ),
        ));
    }
    hello.spec.validate().map_err(|e| refuse("bad_spec", e.to_string()))?;
    validate_country(&hello.country).map_err(|e| refuse("bad_country", e.message))?;
    if hello.simulated && !app.config.proof.simulated_allowed {
        return Err(refuse(
            "simulated_refused",
            "this network admits only real devices (simulated ones join local and test networks)",
        ));
    }
    if hello.advertise_addr.is_empty() || hello.advertise_addr.len() > ADVERTISE_ADDR_LEN_MAX {
        return Err(refuse("bad_address", "advertise_addr must be 1..=255 bytes"));
    }
    let owner_known = app.store.account_exists(&hello.owner).await.map_err(|e| refuse("unavailable", e.to_string()))?;
    if !owner_known {
        return Err(refuse(
            "unknown_owner",
            format!("no account {}; the owner creates it with `herd account create`", hello.owner),
        ));
    }
    let registered = app.store.device(&hello.device_key).await.map_err(|e| refuse("unavailable", e.to_string()))?;
    if registered.is_none() {
        check_owner_consent(app, &hello).await?;
    }
    let outcome = app.store.device_hello(&hello, now()).await.map_err(|e| refuse("unavailable", e.to_string()))?;
    if outcome.is_ok() {
        let support = checked_overlay_support(hello.overlay.as_ref());
        app.store
            .record_overlay_support(&hello.device_key, support.as_ref())
            .await
            .map_err(|e| refuse("unavailable", e.to_string()))?;
    }
    app.sync_market(std::slice::from_ref(&hello.device_key)).await;
    match outcome {
        Ok(outcome) => {
            tracing::info!(device = %hello.device_key, state = %outcome.state, registered = outcome.registered,
                simulated = hello.simulated, "worker connected");
            Ok(hello)
        }
        Err(HelloRefusal::OwnedByOther) => {
            Err(refuse("device_owned", "this device key is bound to another account; a device cannot change owner"))
        }
        Err(HelloRefusal::Blocked(reason)) => Err(refuse("blocked", format!("device blocked: {reason}"))),
        Err(HelloRefusal::SimulatedChanged { claimed }) => {
            let (was, now) = if claimed { ("real", "simulated") } else { ("simulated", "real") };
            Err(refuse(
                "simulated_changed",
                format!(
                    "this device key registered as a {was} device and cannot become a {now} one; \
                     a {now} device joins with a new device key"
                ),
            ))
        }
    }
}

/// Longest reason a worker may give for not joining overlays (stored, shown to its owner).
const OVERLAY_REASON_LEN_MAX: usize = 512;

/// The overlay support a hello claims, with a malformed key taken as "cannot join" (the
/// device still works on single-node leases) and an over-long reason cut.
fn checked_overlay_support(claimed: Option<&OverlaySupport>) -> Option<OverlaySupport> {
    match claimed? {
        OverlaySupport::Ready { public_key } if herd_core::hex::decode_array::<32>(public_key).is_some() => {
            Some(OverlaySupport::Ready { public_key: public_key.to_ascii_lowercase() })
        }
        OverlaySupport::Ready { .. } => Some(OverlaySupport::Unavailable {
            reason: "the agent sent a malformed overlay key (expected 64 hex digits)".into(),
        }),
        OverlaySupport::Unavailable { reason } => {
            let mut reason = reason.clone();
            truncate_utf8(&mut reason, OVERLAY_REASON_LEN_MAX);
            Some(OverlaySupport::Unavailable { reason })
        }
    }
}

/// A device joins an account only with its owner's consent, so nobody can attach devices
/// (real or fake) to someone else's account: the owner's signature over the device key, or a
/// pairing code the owner issued.
async fn check_owner_consent(app: &App, hello: &HelloPayload) -> Result<(), Refusal> {
    if let Some(endorsement) = &hello.owner_endorsement {
        let message = device_endorsement_message(hello.owner.as_str(), hello.device_key.as_str());
        return verify_signature(&hello.owner, &message, endorsement)
            .map_err(|e| refuse("bad_endorsement", format!("owner endorsement refused: {e}")));
    }
    if let Some(code) = &hello.pairing_code {
        let used = app
            .store
            .consume_pairing_code(&hash_pairing_code(code), &hello.owner, now())
            .await
            .map_err(|e| refuse("unavailable", e.to_string()))?;
        return if used {
            Ok(())
        } else {
            Err(refuse("bad_pairing_code", "pairing code unknown, expired, already used or issued by another account"))
        };
    }
    Err(refuse(
        "no_consent",
        format!(
            "a new device needs its owner's consent: run the worker where the owner's account key is, \
             or pass a pairing code from `herd worker pair` (owner {})",
            hello.owner
        ),
    ))
}

async fn serve(app: App, socket: WebSocket, hello: HelloPayload) {
    let device = hello.device_key.clone();
    let (connection, mut outbox) = app.hub.attach(&device, Instant::now());
    let (mut sink, mut inbox) = socket.split();
    let welcome = ServerMessage::Welcome {
        device_id: device.clone(),
        heartbeat_interval_ms: app.config.heartbeat_interval.as_millis() as u64,
    };
    if sink.send(encode(&welcome)).await.is_err() {
        app.hub.detach(&device, connection);
        return;
    }
    connected(&app, &device, &hello).await;
    // Messages that wait on the database are handled in order by their own task, so a busy
    // database never delays reading the socket: liveness and proof replies (timed against a
    // deadline) are taken as they arrive.
    let (to_handler, mut handler_queue) = mpsc::channel::<WorkerMessage>(HANDLER_QUEUE_CAPACITY);
    let handler = tokio::spawn({
        let (app, device) = (app.clone(), device.clone());
        async move {
            while let Some(message) = handler_queue.recv().await {
                handle(&app, &device, message).await;
            }
        }
    });
    let mut shutdown = app.shutdown.clone();
    loop {
        tokio::select! {
            incoming = inbox.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    app.hub.touch(&device, Instant::now());
                    if let Err(error) = dispatch(&app, &device, connection, &text, &to_handler).await {
                        tracing::warn!(%device, %error, "bad message from worker; closing");
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => app.hub.touch(&device, Instant::now()),
            },
            outgoing = outbox.recv() => match outgoing {
                Some(message) => {
                    if sink.send(encode(&message)).await.is_err() {
                        break;
                    }
                }
                // Replaced by a newer connection, or declared offline.
                None => break,
            },
            _ = shutdown.changed() => {
                let frame = CloseFrame { code: 1001, reason: "coordinator shutting down".into() };
                let _ = sink.send(Message::Close(Some(frame))).await;
                // What the worker sent before it saw our close arrives before its close
                // reply: apply it, so a graceful restart loses no output or exit report.
                let drain = async {
                    while let Some(Ok(message)) = inbox.next().await {
                        match message {
                            Message::Text(text) => {
                                let _ = dispatch(&app, &device, connection, &text, &to_handler).await;
                            }
                            Message::Close(_) => break,
                            _ => {}
                        }
                    }
                };
                let _ = tokio::time::timeout(SHUTDOWN_DRAIN_MAX, drain).await;
                break;
            }
        }
    }
    drop(to_handler);
    let _ = handler.await;
    app.hub.detach(&device, connection);
    app.proofs.connection_closed(&device, connection);
    tracing::info!(%device, "worker disconnected");
}

/// A worker's session began: what it holds is reconciled with the database, and it is
/// offered a throughput test and (if due) a proof.
pub(crate) async fn connected(app: &App, device: &Address, hello: &HelloPayload) {
    // The overlay first: a lease's tasks and Ray node start on it.
    if let Err(error) = crate::overlay::adopt(app, device).await {
        tracing::error!(%device, %error, "could not bring the worker's overlay in step");
    }
    if let Err(error) = actions::adopt(app, device, &hello.tasks).await {
        tracing::error!(%device, %error, "could not reconcile the worker's tasks");
    }
    if let Err(error) = actions::adopt_ray(app, device, &hello.ray_nodes).await {
        tracing::error!(%device, %error, "could not reconcile the worker's Ray nodes");
    }
    offer_speedtest(app, device);
    app.proofs.wake.notify_one();
}

/// Takes one message off the socket: what needs no database is applied now, the rest is
/// queued for the connection's handler (waiting for room keeps memory bounded).
async fn dispatch(
    app: &App,
    device: &Address,
    connection: u64,
    text: &str,
    handler: &mpsc::Sender<WorkerMessage>,
) -> Result<(), String> {
    let message: WorkerMessage = serde_json::from_str(text).map_err(|e| format!("undecodable message: {e}"))?;
    match message {
        WorkerMessage::Heartbeat { utilization } => {
            app.metrics.heartbeats.inc();
            app.hub.heartbeat(device, now(), utilization);
        }
        WorkerMessage::ProofCommitment { challenge_id, roots } => {
            deliver_proof(app, device, connection, &challenge_id, Reply::Commitment(roots));
        }
        WorkerMessage::ProofOpening { challenge_id, opening } => {
            deliver_proof(app, device, connection, &challenge_id, Reply::Opening(opening));
        }
        WorkerMessage::ProofDeclined { challenge_id, reason } => {
            deliver_proof(app, device, connection, &challenge_id, Reply::Declined(reason));
        }
        WorkerMessage::VramFilled { challenge_id } => {
            deliver_proof(app, device, connection, &challenge_id, Reply::VramFilled);
        }
        WorkerMessage::VramWins { challenge_id, wins } => {
            deliver_proof(app, device, connection, &challenge_id, Reply::VramWins(wins));
        }
        WorkerMessage::TunnelResponse { stream, status, headers } => {
            app.tunnels.deliver(device, stream, TunnelEvent::Head { status, headers });
        }
        WorkerMessage::TunnelData { stream, data } => {
            let event = match decode_chunk(&data) {
                Some(bytes) => TunnelEvent::Data(bytes),
                None => TunnelEvent::End(Some("undecodable chunk from the worker".into())),
            };
            app.tunnels.deliver(device, stream, event);
        }
        WorkerMessage::TunnelEnd { stream, error } => app.tunnels.deliver(device, stream, TunnelEvent::End(error)),
        WorkerMessage::Hello(_) => return Err("hello after the handshake".into()),
        other => handler.send(other).await.map_err(|_| "the connection's handler stopped".to_owned())?,
    }
    Ok(())
}

pub(crate) async fn handle(app: &App, device: &Address, message: WorkerMessage) {
    let at = now();
    let result = match message {
        WorkerMessage::TaskStarted { job_id, attempt } => {
            let changed = app.store.task_started(&job_id, attempt, device, at).await;
            app.notify_job(&job_id);
            changed.map(drop)
        }
        WorkerMessage::TaskOutput { job_id, attempt, stream, mut lines } => {
            lines.truncate(OUTPUT_LINES_PER_MESSAGE_MAX);
            for line in &mut lines {
                truncate_utf8(line, OUTPUT_LINE_BYTES_MAX);
            }
            let stored = app.store.append_logs(&job_id, attempt, device, stream, &lines, at).await;
            app.notify_job(&job_id);
            stored.map(drop)
        }
        WorkerMessage::TaskExited { job_id, attempt, exit_code, error } => {
            let changed = app.store.task_exited(&job_id, attempt, device, exit_code, error.as_deref(), at).await;
            if matches!(changed, Ok(false)) {
                tracing::info!(%device, job = %job_id, attempt, "exit report for a task that is not current; ignored");
            }
            app.notify_job(&job_id);
            changed.map(drop)
        }
        WorkerMessage::SpeedtestWanted => {
            offer_speedtest(app, device);
            Ok(())
        }
        WorkerMessage::RayNode(report) => actions::record_ray_report(app, device, &report).await,
        WorkerMessage::OverlayStatus(report) => {
            let recorded = app.store.record_overlay_report(device, &report).await;
            if let (Some(error), Ok(true)) = (&report.error, &recorded) {
                tracing::warn!(%device, cluster = %report.cluster_id, %error, up = report.up, "overlay node reports a problem");
            }
            recorded.map(drop)
        }
        WorkerMessage::Throughput(throughput) => {
            // A real device's tier is only what the coordinator timed (api::speedtest); only
            // a simulated one, whose every claim is made up anyway, declares its figures.
            let declared = app.store.record_declared_throughput(device, throughput).await;
            if matches!(declared, Ok(Some(_))) {
                app.sync_market(std::slice::from_ref(device)).await;
            }
            declared.map(|tier| match tier {
                Some(tier) => tracing::info!(%device, %tier, ?throughput, "simulated connectivity declared"),
                None => tracing::debug!(%device, ?throughput, "the worker's own throughput figures (not used)"),
            })
        }
        // Applied by `dispatch` before anything is queued.
        WorkerMessage::Heartbeat { .. }
        | WorkerMessage::ProofCommitment { .. }
        | WorkerMessage::ProofOpening { .. }
        | WorkerMessage::ProofDeclined { .. }
        | WorkerMessage::VramFilled { .. }
        | WorkerMessage::VramWins { .. }
        | WorkerMessage::TunnelResponse { .. }
        | WorkerMessage::TunnelData { .. }
        | WorkerMessage::TunnelEnd { .. }
        | WorkerMessage::Hello(_) => Ok(()),
    };
    // A database hiccup is the coordinator's problem, not the worker's: log and carry on.
    if let Err(error) = result {
        tracing::error!(%device, %error, "could not record a worker message");
    }
}

/// A reply to a challenge that is not this connection's is dropped (and logged): replaying
/// another device's answer, or answering after a reconnect, proves nothing.
fn deliver_proof(app: &App, device: &Address, connection: u64, challenge_id: &str, reply: Reply) {
    if let Err(refused) = app.proofs.deliver(device, connection, challenge_id, reply) {
        if let Some(suppressed) = app.log_limits.proof_reply_refused.allow(now().0) {
            tracing::warn!(%device, %refused, suppressed, "proof reply refused");
        }
    }
}

fn offer_speedtest(app: &App, device: &Address) {
    let receipt: [u8; herd_proto::worker::SPEEDTEST_RECEIPT_BYTES] = rand::random();
    let token = app.hub.issue_speedtest(device, random_token(), receipt, Instant::now());
    app.hub.send(device, ServerMessage::SpeedtestToken { token });
}

fn truncate_utf8(text: &mut String, bytes_max: usize) {
    if text.len() > bytes_max {
        let mut cut = bytes_max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
}
