//! Holes an outside attack found, each held shut by a test that failed before its fix: what a
//! device must prove, single-use operator signatures, the connectivity tier's source.

mod common;

use std::time::Duration;

use common::raw_worker::*;
use common::*;
use ed25519_dalek::SigningKey;
use herd_cli::client::Client;
use herd_core::DeviceState;
use herd_proto::worker::ServerMessage;
use herd_worker::keys;
use rand::rngs::OsRng;

/// Connects `key`'s device with `spec`, marked simulated or not; the coordinator's answer.
async fn hello_as(
    url: &str,
    key: &SigningKey,
    owner: &SigningKey,
    spec: &herd_core::DeviceSpec,
    simulated: bool,
) -> (Socket, ServerMessage) {
    connect_with(url, |nonce| {
        let mut payload = hello(key, owner, nonce);
        payload.simulated = simulated;
        payload.spec = spec.clone();
        signed(key, &payload)
    })
    .await
}

async fn device_of(url: &str, key: &SigningKey) -> herd_proto::api::Device {
    Client::new(url, None).device(keys::address_of(key).as_str()).await.unwrap().device
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_device_cannot_come_back_as_a_real_one() {
    let network = TestNetwork::start(0).await;
    let key = SigningKey::generate(&mut OsRng);
    let dgx = spec(Some("NVIDIA H100 80GB HBM3"), 8);
    let (socket, answer) = hello_as(&network.url, &key, &network.supplier_key, &dgx, true).await;
    assert!(matches!(answer, ServerMessage::Welcome { .. }), "{answer:?}");
    let device = keys::address_of(&key);
    let serving = tokio::spawn(serve_proofs(socket, device.clone(), Prover::Honest));
    eventually("the simulated DGX to pass its token-sized proof", Duration::from_secs(20), || async {
        (device_of(&network.url, &key).await.state == DeviceState::Ready).then_some(())
    })
    .await;
    serving.abort();

    // The same key and spec, now saying it is real: refused, and nothing about it changes.
    let (_socket, answer) = hello_as(&network.url, &key, &network.supplier_key, &dgx, false).await;
    assert_eq!(rejection_code(&answer), "simulated_changed", "{answer:?}");
    let ServerMessage::Rejected { message, .. } = &answer else { unreachable!() };
    assert!(message.contains("registered as a simulated device") && message.contains("new device key"), "{message}");
    let after = device_of(&network.url, &key).await;
    assert!(after.simulated, "the device is still marked simulated: {after:?}");
    let listed = network.supplier_client.devices(&format!("owner={}", network.supplier)).await.unwrap();
    assert!(listed.iter().all(|d| d.simulated), "{listed:?}");
    network.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_is_bound_to_every_claimed_resource() {
    let network = TestNetwork::start(0).await;
    let key = SigningKey::generate(&mut OsRng);
    let machine = spec(None, 0);
    let (socket, answer) = hello_as(&network.url, &key, &network.supplier_key, &machine, true).await;
    assert!(matches!(answer, ServerMessage::Welcome { .. }), "{answer:?}");
    let device = keys::address_of(&key);
    let serving = tokio::spawn(serve_proofs(socket, device.clone(), Prover::Honest));
    eventually("admission", Duration::from_secs(20), || async {
        (device_of(&network.url, &key).await.state == DeviceState::Ready).then_some(())
    })
    .await;
    serving.abort();

    // Four times the memory, same cores and no GPU: the old proof vouches for none of it.
    let mut bigger = machine;
    bigger.memory_bytes *= 4;
    let (socket, answer) = hello_as(&network.url, &key, &network.supplier_key, &bigger, true).await;
    assert!(matches!(answer, ServerMessage::Welcome { .. }), "{answer:?}");
    let now = device_of(&network.url, &key).await;
    assert_eq!(now.state, DeviceState::Pending, "not hireable on the old proof: {now:?}");
    let serving = tokio::spawn(serve_proofs(socket, device.clone(), Prover::Declines));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(device_of(&network.url, &key).await.state, DeviceState::Pending, "a decline does not admit");
    serving.abort();
    network.stop().await;
}

fn ledger_key(network: &TestNetwork) -> SigningKey {
    herd_keys::load(&ledger_key_path(&network.dir.path().join("herd.db"))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_requests_are_signed_single_use_and_audited() {
    let mut network = TestNetwork::start(1).await;
    let operator = ledger_key(&network);
    let anonymous = Client::new(&network.url, None);
    let device = network.supplier_client.devices(&format!("owner={}", network.supplier)).await.unwrap().remove(0);
    let (credential, _) = herd_cli::credentials::sign_in(&anonymous, &SigningKey::generate(&mut OsRng)).await.unwrap();

    // No signature, a stranger's key, and a replay of a real request are all refused.
    let http = reqwest::Client::new();
    let audit_url = format!("{}/v1/audit", network.url);
    assert_eq!(http.get(&audit_url).send().await.unwrap().status().as_u16(), 401);
    let stranger = SigningKey::generate(&mut OsRng);
    let refused = anonymous.audit(&stranger, 0, 10, None).await.unwrap_err();
    assert_eq!(refused.status().unwrap().as_u16(), 403, "{refused}");
    let header = signed_operator_header(&operator, "GET", "/v1/audit?after=0&limit=10", b"");
    let url = format!("{audit_url}?after=0&limit=10");
    let first = http.get(&url).header("x-herd-operator", &header).send().await.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    let again = http.get(&url).header("x-herd-operator", &header).send().await.unwrap();
    assert_eq!(again.status().as_u16(), 409, "the same signed request twice");
    let other_path = http.get(format!("{audit_url}?after=0&limit=11")).header("x-herd-operator", &header);
    assert_eq!(other_path.send().await.unwrap().status().as_u16(), 403, "a signature covers its exact request");

    // Blocking takes the device off the network until the block is lifted.
    let blocked = anonymous.set_blocked(&operator, device.id.as_str(), true, "spoofed GPU").await.unwrap();
    assert_eq!(blocked.state, DeviceState::Blocked);
    let twice = anonymous.set_blocked(&operator, device.id.as_str(), true, "again").await.unwrap_err();
    assert_eq!(twice.status().unwrap().as_u16(), 409);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = device_of_id(&network.url, &device.id).await;
    assert_eq!(after.state, DeviceState::Blocked, "its reconnects are refused: {after:?}");
    assert!(after.state_reason.contains("spoofed GPU"), "{after:?}");
    let unblocked = anonymous.set_blocked(&operator, device.id.as_str(), false, "owner explained").await.unwrap();
    assert_eq!(unblocked.state, DeviceState::Offline);
    // A refused agent stopped and said why; its supplier starts it again.
    let refused = network.workers.remove(0).handle.await.unwrap().unwrap_err();
    assert!(refused.to_string().contains("spoofed GPU"), "the agent says why it stopped: {refused}");
    network.workers.push(start_worker(&network.url, &network.dir.path().join("w0"), &network.supplier_key));
    devices_in_state(&network.url, &network.supplier, DeviceState::Ready, 1).await;

    // The log has each action with its actor and origin, and never a secret.
    let log = anonymous.audit(&operator, 0, 1000, None).await.unwrap();
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    for expected in ["genesis", "account.create", "wallet.deposit", "device.block", "device.unblock"] {
        assert!(actions.contains(&expected), "{expected} missing from {actions:?}");
    }
    let block = log.iter().find(|e| e.action == "device.block").unwrap();
    assert_eq!((block.actor.as_str(), block.target.as_deref()), ("operator", Some(device.id.as_str())));
    assert_eq!(block.origin.as_deref(), Some("127.0.0.1"));
    let text = serde_json::to_string(&log).unwrap();
    assert!(actions.contains(&"api_key.create") || actions.iter().filter(|a| **a == "account.create").count() >= 2);
    assert!(!text.contains(&credential.api_key), "an API key leaked into the audit log");
    network.stop().await;
}

async fn device_of_id(url: &str, id: &herd_core::Address) -> herd_proto::api::Device {
    Client::new(url, None).device(id.as_str()).await.unwrap().device
}

fn signed_operator_header(key: &SigningKey, method: &str, path: &str, body: &[u8]) -> String {
    use ed25519_dalek::Signer;
    use sha2::Digest;
    let at = herd_cli::output::now_ms();
    let id = format!("test-{}", herd_core::hex::encode(&rand::random::<[u8; 8]>()));
    let digest = herd_core::hex::encode(&sha2::Sha256::digest(body));
    let message = herd_proto::signing::operator_request_message(method, path, &digest, at, &id);
    format!("{at}.{id}.{}", bs58::encode(key.sign(&message).to_bytes()).into_string())
}

/// Waits for the coordinator's speedtest token on a raw socket (answering nothing else).
async fn speedtest_token(socket: &mut Socket) -> String {
    loop {
        if let ServerMessage::SpeedtestToken { token } = next_server_message(socket).await {
            return token;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connectivity_tier_is_only_what_the_coordinator_measured() {
    use futures_util::SinkExt;
    use herd_proto::worker::{Throughput, WorkerMessage, SPEEDTEST_RECEIPT_HEADER, SPEEDTEST_UPLOAD_BYTES};
    use tokio_tungstenite::tungstenite::Message;

    let network = TestNetwork::start(0).await;
    let key = SigningKey::generate(&mut OsRng);
    let bragging = Throughput { down_mbps: 100_000, up_mbps: 100_000 };
    let (mut socket, answer) = connect_with(&network.url, |nonce| {
        let mut payload = hello(&key, &network.supplier_key, nonce);
        payload.simulated = false;
        payload.spec = spec(None, 0);
        payload.throughput = Some(bragging);
        signed(&key, &payload)
    })
    .await;
    assert!(matches!(answer, ServerMessage::Welcome { .. }), "{answer:?}");
    let claim = WorkerMessage::Throughput(bragging);
    socket.send(Message::Text(serde_json::to_string(&claim).unwrap().into())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let device = device_of(&network.url, &key).await;
    assert_eq!(device.connectivity.as_str(), "none", "a real device's word sets no tier: {device:?}");

    // The test itself: the upload must show the download's receipt, and comes after it.
    let token = speedtest_token(&mut socket).await;
    let base = format!("{}/v1/worker/speedtest/{token}", network.url);
    let http = reqwest::Client::new();
    let payload = vec![0u8; SPEEDTEST_UPLOAD_BYTES as usize];
    let early = http.post(format!("{base}/upload")).header(SPEEDTEST_RECEIPT_HEADER, "00".repeat(32));
    // (Refusals come before the body is read: they send none, or the refused connection breaks.)
    assert_eq!(early.send().await.unwrap().status().as_u16(), 401, "upload before download");
    let download = http.get(format!("{base}/download")).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(download.len() as u64, herd_proto::worker::SPEEDTEST_DOWNLOAD_BYTES);
    let forged = http.post(format!("{base}/upload")).header(SPEEDTEST_RECEIPT_HEADER, "00".repeat(32));
    assert_eq!(forged.send().await.unwrap().status().as_u16(), 401, "a guessed receipt");
    let receipt = herd_core::hex::encode(&download[download.len() - 32..]);
    let measured = http.post(format!("{base}/upload")).header(SPEEDTEST_RECEIPT_HEADER, &receipt);
    let measured = measured.body(payload).send().await.unwrap();
    assert_eq!(measured.status().as_u16(), 200);
    let figures: serde_json::Value = measured.json().await.unwrap();
    let device = device_of(&network.url, &key).await;
    assert_eq!(device.connectivity.as_str(), figures["tier"].as_str().unwrap(), "{figures}");
    let again = http.post(format!("{base}/upload")).header(SPEEDTEST_RECEIPT_HEADER, &receipt);
    assert_eq!(again.send().await.unwrap().status().as_u16(), 401, "a token is used once");
    network.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_key_and_address_is_rate_limited_and_pairing_codes_are_capped() {
    let network = TestNetwork::start_with(0, |config| {
        config.api_rate_limits.per_key = herd_coordinator::RateLimit { burst: 5, per_minute: 6 };
    })
    .await;
    let (_, other) = new_account(&network.url).await;
    let client = &network.supplier_client;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(client.account().await.err().and_then(|e| e.status()).map_or(200, |s| s.as_u16()));
    }
    // A burst of 5 (the sign-up's deposit took one): then refused, until the bucket refills.
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429, 429, 429]);
    let key_refused = client.account().await.unwrap_err();
    assert!(key_refused.to_string().contains("this API key"), "{key_refused}");
    assert!(other.account().await.is_ok(), "another key has its own bucket");
    let http = reqwest::Client::new();
    let raw = http.get(format!("{}/v1/wallet", network.url)).bearer_auth(api_key_of(&network)).send().await.unwrap();
    assert_eq!(raw.status().as_u16(), 429);
    assert!(raw.headers().get("retry-after").is_some(), "429 says when to come back");
    network.stop().await;

    // Pairing codes: an account holds at most 50 open ones.
    let network = TestNetwork::start(0).await;
    for _ in 0..50 {
        network.supplier_client.pairing_code().await.unwrap();
    }
    let capped = network.supplier_client.pairing_code().await.unwrap_err();
    assert_eq!(capped.status().unwrap().as_u16(), 429, "{capped}");
    network.stop().await;
}

/// The supplier's API key, as the test network's client holds it.
fn api_key_of(network: &TestNetwork) -> String {
    network.supplier_client.api_key().unwrap().to_owned()
}
