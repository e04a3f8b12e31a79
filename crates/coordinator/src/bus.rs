//! The bus between coordinator replicas: NATS (`--bus nats://…`). Any replica accepts API
//! calls and worker sockets, so a message for a device whose socket is on another replica
//! (start or stop a task, a proof challenge, a certificate) is published on
//! `herd.device.<device>` and delivered by the replica that holds the socket; a job's new
//! output or state is announced on `herd.jobs` so log followers on every replica wake. The
//! database stays the truth: a lost wake-up costs a follower one poll, and a message for a
//! device nobody holds is lost exactly as it is for a disconnected device on one machine.
//!
//! Every replica subscribes to all device subjects and keeps those of its own sockets
//! (simple and enough for a handful of replicas; a subscription per connected device is the
//! step when the fan-out matters). Outgoing messages leave through one queue and one task,
//! so two messages to one device arrive in the order they were sent.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use herd_core::{Address, JobId};
use herd_proto::worker::ServerMessage;
use tokio::sync::{mpsc, watch};

use crate::app::App;

const DEVICE_SUBJECTS: &str = "herd.device.*";
const JOB_SUBJECT: &str = "herd.jobs";
/// Messages waiting to be published; beyond it a send fails as to a full outbox.
const OUTGOING_CAPACITY: usize = 8_192;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to the bus at {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error("the bus is unreachable: {0}")]
    Unreachable(String),
}

/// A connection to the bus; cloned freely.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    outgoing: mpsc::Sender<(String, Bytes)>,
}

impl Bus {
    /// Connects and starts the publisher; `run` delivers what arrives.
    pub async fn connect(url: &str) -> Result<(Bus, mpsc::Receiver<(String, Bytes)>), BusError> {
        let client = async_nats::ConnectOptions::new()
            .name("herd-coordinator")
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| BusError::Connect { url: url.to_string(), detail: e.to_string() })?;
        let (outgoing, queue) = mpsc::channel(OUTGOING_CAPACITY);
        Ok((Bus { client, outgoing }, queue))
    }

    /// Queues `message` for `device`'s socket, wherever it is; false if the queue is full.
    pub fn send_to_device(&self, device: &Address, message: &ServerMessage) -> bool {
        let payload = serde_json::to_vec(message).expect("server messages serialise");
        self.outgoing.try_send((format!("herd.device.{device}"), payload.into())).is_ok()
    }

    /// Tells every replica that `job` has news (output or a state change).
    pub fn announce_job(&self, job: &JobId) {
        let _ = self.outgoing.try_send((JOB_SUBJECT.to_string(), Bytes::from(job.to_string())));
    }

    /// A round trip to the server.
    pub async fn ping(&self) -> Result<Duration, BusError> {
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(2), self.client.flush())
            .await
            .map_err(|_| BusError::Unreachable("no answer within 2 s".into()))?
            .map_err(|e| BusError::Unreachable(e.to_string()))?;
        Ok(started.elapsed())
    }
}

/// Publishes the queue in order and delivers what other replicas publish, until shutdown.
pub async fn run(app: App, mut queue: mpsc::Receiver<(String, Bytes)>, mut shutdown: watch::Receiver<bool>) {
    let Some(bus) = app.bus.get().cloned() else { return };
    let subscribe = async {
        let devices = bus.client.subscribe(DEVICE_SUBJECTS).await?;
        let jobs = bus.client.subscribe(JOB_SUBJECT).await?;
        Ok::<_, async_nats::SubscribeError>((devices, jobs))
    };
    let (mut devices, mut jobs) = match subscribe.await {
        Ok(subscriptions) => subscriptions,
        Err(error) => {
            tracing::error!(%error, "cannot subscribe on the bus; messages for this replica's devices will not arrive");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            Some((subject, payload)) = queue.recv() => {
                if let Err(error) = bus.client.publish(subject, payload).await {
                    tracing::warn!(%error, "could not publish on the bus");
                }
            }
            Some(message) = devices.next() => deliver_to_device(&app, &message),
            Some(message) = jobs.next() => {
                if let Ok(job) = std::str::from_utf8(&message.payload).unwrap_or_default().parse::<JobId>() {
                    app.wake_job_followers(&job);
                }
            }
        }
    }
}

fn deliver_to_device(app: &App, message: &async_nats::Message) {
    let Some(device) = message.subject.as_str().strip_prefix("herd.device.") else { return };
    let Ok(device) = device.parse::<Address>() else { return };
    // Only the replica holding the socket delivers; the others (the sender too) skip it.
    if !app.hub.is_connected(&device) {
        return;
    }
    match serde_json::from_slice::<ServerMessage>(&message.payload) {
        Ok(server_message) => {
            app.hub.send_local(&device, server_message);
        }
        Err(error) => tracing::warn!(%device, %error, "an unreadable message on the bus"),
    }
}
