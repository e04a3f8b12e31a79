//! A worker written by hand on the raw socket protocol: what an attacker would write. Tests
//! use it to send what the real agent never would.

use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use futures_util::{SinkExt, StreamExt};
use herd_proto::signing::{device_endorsement_message, worker_hello_message};
use herd_proto::worker::{HelloPayload, ServerMessage, SignedHello, WorkerMessage};
use herd_worker::keys;
use tokio_tungstenite::tungstenite::Message;

pub type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub fn socket_url(http: &str) -> String {
    format!("{}/v1/worker/connect", http.replace("http://", "ws://"))
}

pub async fn next_server_message(socket: &mut Socket) -> ServerMessage {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await.expect("a message in time") {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

/// A hello from `key`'s device for `owner`, endorsed by the owner's key.
pub fn hello(key: &SigningKey, owner: &SigningKey, nonce: &str) -> HelloPayload {
    let device = keys::address_of(key);
    let owner_address = keys::address_of(owner);
    let endorsement = owner.sign(&device_endorsement_message(owner_address.as_str(), device.as_str()));
    HelloPayload {
        owner_endorsement: Some(bs58::encode(endorsement.to_bytes()).into_string()),
        pairing_code: None,
        floor_micros: None,
        throughput: None,
        protocol_version: herd_proto::WORKER_PROTOCOL_VERSION,
        nonce: nonce.into(),
        device_key: device,
        owner: owner_address,
        country: "DE".into(),
        simulated: true,
        advertise_addr: "127.0.0.1".into(),
        agent_version: "test".into(),
        spec: unique_gpus(herd_sim::fleet(7, 1).remove(0).spec, key),
        tasks: vec![],
        ray_nodes: vec![],
        overlay: None,
    }
}

pub fn signed(key: &SigningKey, payload: &HelloPayload) -> SignedHello {
    let payload = serde_json::to_string(payload).unwrap();
    let signature = bs58::encode(key.sign(&worker_hello_message(&payload)).to_bytes()).into_string();
    SignedHello { payload, signature }
}

pub async fn connect_with(url: &str, make_hello: impl FnOnce(&str) -> SignedHello) -> (Socket, ServerMessage) {
    let (mut socket, _) = tokio_tungstenite::connect_async(socket_url(url)).await.unwrap();
    let ServerMessage::Challenge { nonce, .. } = next_server_message(&mut socket).await else { panic!("no challenge") };
    let hello = WorkerMessage::Hello(make_hello(&nonce));
    socket.send(Message::Text(serde_json::to_string(&hello).unwrap().into())).await.unwrap();
    let answer = next_server_message(&mut socket).await;
    (socket, answer)
}

pub fn rejection_code(message: &ServerMessage) -> &str {
    match message {
        ServerMessage::Rejected { code, .. } => code,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// The same simulated machine with GPU UUIDs of its own (one UUID on two devices flags both).
pub fn unique_gpus(mut spec: herd_core::DeviceSpec, key: &SigningKey) -> herd_core::DeviceSpec {
    let device = keys::address_of(key);
    for (i, gpu) in spec.gpus.iter_mut().enumerate() {
        gpu.uuid = format!("GPU-{device}-{i}");
    }
    spec
}

/// What a hand-written prover does to its answers.
#[derive(Debug, Clone)]
pub enum Prover {
    Honest,
    /// Proves its compute, but holds half the VRAM it claims: reads past it fold back.
    VramShort,
    /// Proves its compute, but answers the proof of VRAM for its first GPU only.
    OneGpuForAll,
    /// Adds 17 to one unreduced product: the same residue, a wrong product.
    WrongProduct,
    /// Flips a bit of one Merkle path.
    BadPath,
    /// Computes the chain seeded for another device's key (a copied answer).
    SeededFor(herd_core::Address),
    /// Never answers.
    Silent,
    /// Says it cannot prove this hardware.
    Declines,
}

/// Serves the socket like a worker (heartbeats every 100 ms) and answers proof challenges
/// with `prover`, until the coordinator rejects or closes. Returns the rejection, if any.
pub async fn serve_proofs(mut socket: Socket, device: herd_core::Address, prover: Prover) -> Option<ServerMessage> {
    use herd_proto::proof::{encode_hashes, WireOpening};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let stop = Arc::new(AtomicBool::new(false));
    let mut solution: Option<(String, Arc<herd_verify::Solution>)> = None;
    type Held = (
        herd_verify::Seed,
        herd_verify::vram::VramParams,
        herd_verify::vram::VramParams,
        Vec<herd_verify::vram::Dataset>,
    );
    let mut vram: Option<Held> = None;
    let mut heartbeat = tokio::time::interval(Duration::from_millis(100));
    let send = |message: WorkerMessage| Message::Text(serde_json::to_string(&message).unwrap().into());
    let outcome = loop {
        let message = tokio::select! {
            _ = heartbeat.tick() => {
                let beat = WorkerMessage::Heartbeat { utilization: Default::default() };
                if socket.send(send(beat)).await.is_err() {
                    break None;
                }
                continue;
            }
            message = socket.next() => message,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            _ => break None,
        };
        match serde_json::from_str::<ServerMessage>(&text).unwrap() {
            ServerMessage::ProofChallenge(challenge) => {
                if matches!(prover, Prover::Silent) {
                    continue;
                }
                if matches!(prover, Prover::Declines) {
                    let reason = "no GPU solver in this build".to_owned();
                    let declined = WorkerMessage::ProofDeclined { challenge_id: challenge.challenge_id, reason };
                    socket.send(send(declined)).await.unwrap();
                    continue;
                }
                let nonce = herd_core::hex::decode_array::<32>(&challenge.nonce).unwrap();
                let key = match &prover {
                    Prover::SeededFor(other) => other.clone(),
                    _ => device.clone(),
                };
                let seed = herd_verify::challenge_seed(key.as_str(), &nonce);
                let params = challenge.params();
                let solving_stop = stop.clone();
                let mut solving =
                    tokio::task::spawn_blocking(move || herd_verify::solve(&seed, &params, 2, &solving_stop));
                // Keep heartbeating while the CPU grinds; a rejection ends the grind.
                let solved = loop {
                    tokio::select! {
                        solved = &mut solving => break solved.unwrap(),
                        _ = heartbeat.tick() => {
                            let beat = WorkerMessage::Heartbeat { utilization: Default::default() };
                            let _ = socket.send(send(beat)).await;
                        }
                        message = socket.next() => match message {
                            Some(Ok(Message::Text(text))) => {
                                if let Ok(rejected @ ServerMessage::Rejected { .. }) = serde_json::from_str(&text) {
                                    stop.store(true, Ordering::Relaxed);
                                    return Some(rejected);
                                }
                            }
                            Some(Ok(_)) => {}
                            _ => {
                                stop.store(true, Ordering::Relaxed);
                                return None;
                            }
                        },
                    }
                };
                let Ok(solved) = solved else { break None };
                let roots = encode_hashes(&solved.roots);
                let id = challenge.challenge_id.clone();
                solution = Some((id.clone(), Arc::new(solved)));
                socket.send(send(WorkerMessage::ProofCommitment { challenge_id: id, roots })).await.unwrap();
            }
            ServerMessage::ProofOpen { challenge_id, picks } => {
                let (_, solved) = solution.take().expect("a commitment was sent");
                for (index, [checkpoint, row]) in picks.into_iter().enumerate() {
                    let mut opening = WireOpening::from(&solved.open(herd_verify::Pick { checkpoint, row }));
                    if index == 0 {
                        match prover {
                            Prover::WrongProduct => opening.links[0][0] += 17,
                            Prover::BadPath => {
                                let hash = &mut opening.end_path[0];
                                let flipped = if hash.starts_with('0') { "1" } else { "0" };
                                hash.replace_range(0..1, flipped);
                            }
                            _ => {}
                        }
                    }
                    let reply = WorkerMessage::ProofOpening { challenge_id: challenge_id.clone(), opening };
                    socket.send(send(reply)).await.unwrap();
                }
            }
            ServerMessage::VramChallenge(challenge) => {
                use herd_verify::vram::{Dataset, VramParams};
                let nonce = herd_core::hex::decode_array::<32>(&challenge.nonce).unwrap();
                let seed = herd_verify::challenge_seed(device.as_str(), &nonce);
                let params = challenge.params();
                let held = match prover {
                    Prover::VramShort => VramParams { items: params.items / 2, ..params },
                    _ => params,
                };
                let gpus = if matches!(prover, Prover::OneGpuForAll) { 1 } else { params.gpus };
                let never = AtomicBool::new(false);
                let sets: Vec<Dataset> =
                    (0..gpus).map(|gpu| Dataset::fill(&seed, gpu, &held, &never).unwrap()).collect();
                vram = Some((seed, params, held, sets));
                let filled = WorkerMessage::VramFilled { challenge_id: challenge.challenge_id };
                socket.send(send(filled)).await.unwrap();
            }
            ServerMessage::VramWalk { challenge_id, walk_nonce, .. } => {
                let (seed, params, held, sets) = vram.take().expect("a fill was reported");
                let walk_nonce = herd_core::hex::decode_array::<32>(&walk_nonce).unwrap();
                let wins = sets
                    .iter()
                    .enumerate()
                    .map(|(gpu, data)| short_search(&seed, &walk_nonce, gpu as u32, &params, &held, data))
                    .collect();
                socket.send(send(WorkerMessage::VramWins { challenge_id, wins })).await.unwrap();
            }
            rejected @ ServerMessage::Rejected { .. } => break Some(rejected),
            _ => {}
        }
    };
    stop.store(true, Ordering::Relaxed);
    outcome
}

/// Searches a dataset that may hold fewer items than the proof claims (`held`): a read of an
/// item it lacks folds onto one it has, as a card short of memory would have to fake it.
fn short_search(
    seed: &herd_verify::Seed,
    walk_nonce: &[u8; 32],
    gpu: u32,
    params: &herd_verify::vram::VramParams,
    held: &herd_verify::vram::VramParams,
    data: &herd_verify::vram::Dataset,
) -> Vec<u64> {
    use herd_verify::vram::{item, walk, walk_key, wins};
    if held == params {
        return data.search(seed, walk_nonce, gpu, params, &std::sync::atomic::AtomicBool::new(false)).unwrap();
    }
    let key = walk_key(seed, walk_nonce, gpu);
    let mut found = Vec::new();
    let mut w = 0;
    while found.len() < params.wins as usize {
        let out = walk(&key, w, params, |i| item(data.key(), i % held.items, held.rounds));
        if wins(&out, params) {
            found.push(w);
        }
        w += 1;
    }
    found
}
