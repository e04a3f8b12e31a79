//! Authentication and authorisation: every request carries its own key, every account sees
//! only its own things, and workers prove their device key on a fresh nonce.

mod common;

use herd_core::ClusterKind;
use std::time::Duration;

use common::raw_worker::*;
use common::*;
use ed25519_dalek::SigningKey;
use herd_cli::client::Client;
use herd_cli::credentials::sign_challenge;
use herd_core::DeviceState;
use herd_proto::api::{CreateCluster, CreateJob};
use herd_proto::signing::PURPOSE_REGISTER;
use herd_proto::worker::ServerMessage;
use herd_worker::keys;
use rand::rngs::OsRng;

fn status(error: herd_cli::client::ClientError) -> u16 {
    error.status().expect("an API error").as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_need_a_key_and_see_only_their_own_things() {
    let network = TestNetwork::start(1).await;
    let url = network.url.clone();

    assert_eq!(status(Client::new(&url, None).clusters(false).await.unwrap_err()), 401);
    assert_eq!(status(Client::new(&url, Some("herd_forged".into())).clusters(false).await.unwrap_err()), 401);
    assert_eq!(status(Client::new(&url, Some("Basic abc".into())).account().await.unwrap_err()), 401);

    let (_, alice) = new_account(&url).await;
    let (_, bob) = new_account(&url).await;
    let request = CreateCluster { nodes: 1, kind: Some(ClusterKind::Plain), ..Default::default() };
    let cluster = alice.create_cluster(&request).await.unwrap();
    let job = alice.create_job(&CreateJob::new(cluster.id.clone(), vec!["true".into()])).await.unwrap();

    assert_eq!(status(bob.cluster(cluster.id.as_str()).await.unwrap_err()), 403);
    assert_eq!(status(bob.delete_cluster(cluster.id.as_str()).await.unwrap_err()), 403);
    assert_eq!(status(bob.extend_cluster(cluster.id.as_str(), 1).await.unwrap_err()), 403);
    assert_eq!(status(bob.job(job.id.as_str()).await.unwrap_err()), 403);
    assert_eq!(status(bob.stop_job(&job.id).await.unwrap_err()), 403);
    assert_eq!(status(bob.stream_logs(job.id.as_str(), false, 0, |_| {}).await.unwrap_err()), 403);
    let foreign_job = CreateJob::new(cluster.id.clone(), vec!["id".into()]);
    assert_eq!(status(bob.create_job(&foreign_job).await.unwrap_err()), 403);
    assert!(bob.clusters(true).await.unwrap().is_empty());
    assert!(bob.jobs(None).await.unwrap().is_empty());
    assert_eq!(alice.clusters(false).await.unwrap().len(), 1);
    assert_eq!(alice.cluster(cluster.id.as_str()).await.unwrap().id, cluster.id, "the owner still can");

    // Devices are public, but a machine's hostname is shown only to the device's owner.
    let query = format!("owner={}", network.supplier);
    let seen_by = |client: Client| {
        let query = query.clone();
        async move { client.devices(&query).await.unwrap().remove(0).spec.hostname }
    };
    assert_eq!(seen_by(Client::new(&url, None)).await, "");
    assert_eq!(seen_by(alice.clone()).await, "");
    assert!(!seen_by(network.supplier_client.clone()).await.is_empty());
    let forged = Client::new(&url, Some("herd_forged".into()));
    assert_eq!(status(forged.devices("").await.unwrap_err()), 401, "a bad key is refused even where none is needed");

    network.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_challenges_need_the_key_and_work_once() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = start_coordinator(&dir.path().join("herd.db"), loopback()).await;
    let client = Client::new(&coordinator.url(), None);
    let key = SigningKey::generate(&mut OsRng);
    let address = keys::address_of(&key);

    let challenge = client.challenge(&address, PURPOSE_REGISTER).await.unwrap();
    let impostor = SigningKey::generate(&mut OsRng);
    let mut forged = sign_challenge(&impostor, PURPOSE_REGISTER, challenge.nonce.clone());
    forged.address = address.clone();
    assert_eq!(status(client.register(&forged).await.unwrap_err()), 401, "signed by the wrong key");

    let signed = sign_challenge(&key, PURPOSE_REGISTER, challenge.nonce);
    let issued = client.register(&signed).await.unwrap();
    assert!(issued.api_key.starts_with("herd_"));
    assert_eq!(status(client.register(&signed).await.unwrap_err()), 401, "a used challenge is refused");
    assert_eq!(status(client.challenge(&address, PURPOSE_REGISTER).await.unwrap_err()), 409);
    assert_eq!(status(client.challenge(&address, "steal").await.unwrap_err()), 400);
    coordinator.shutdown().await;
}

/// Connects, reads the challenge, and sends what `make_hello` builds from the nonce.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_handshakes_are_bound_to_key_nonce_and_owner() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = start_coordinator(&dir.path().join("herd.db"), loopback()).await;
    let url = coordinator.url();
    let (owner_key, _) = new_account(&url).await;
    let owner = keys::address_of(&owner_key);
    let device = SigningKey::generate(&mut OsRng);

    // Signed by a key other than the device key it claims.
    let thief = SigningKey::generate(&mut OsRng);
    let (_, answer) = connect_with(&url, |nonce| signed(&thief, &hello(&device, &owner_key, nonce))).await;
    assert_eq!(rejection_code(&answer), "bad_signature");

    // A valid hello, captured and replayed on a new connection (whose nonce differs).
    let mut captured = None;
    let (socket, answer) = connect_with(&url, |nonce| {
        let hello = signed(&device, &hello(&device, &owner_key, nonce));
        captured = Some(hello.clone());
        hello
    })
    .await;
    assert!(matches!(answer, ServerMessage::Welcome { .. }), "{answer:?}");
    drop(socket);
    let (_, answer) = connect_with(&url, |_| captured.unwrap()).await;
    assert_eq!(rejection_code(&answer), "stale_nonce");

    // The device stays bound to its first owner.
    let (other_key, _) = new_account(&url).await;
    let (_, answer) = connect_with(&url, |nonce| signed(&device, &hello(&device, &other_key, nonce))).await;
    assert_eq!(rejection_code(&answer), "device_owned");

    // Owners must exist.
    let nobody = SigningKey::generate(&mut OsRng);
    let newcomer = SigningKey::generate(&mut OsRng);
    let (_, answer) = connect_with(&url, |nonce| signed(&newcomer, &hello(&newcomer, &nobody, nonce))).await;
    assert_eq!(rejection_code(&answer), "unknown_owner");

    // Invalid specs are refused before anything is stored.
    let (_, answer) = connect_with(&url, |nonce| {
        let mut payload = hello(&newcomer, &owner_key, nonce);
        payload.spec.cpu.logical_cores = 0;
        signed(&newcomer, &payload)
    })
    .await;
    assert_eq!(rejection_code(&answer), "bad_spec");
    let client = Client::new(&url, None);
    assert_eq!(client.devices(&format!("owner={owner}")).await.unwrap().len(), 1, "only the accepted device");
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_worker_goes_offline_and_a_chatty_one_stays_ready() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = start_coordinator(&dir.path().join("herd.db"), loopback()).await;
    let url = coordinator.url();
    let (owner_key, _) = new_account(&url).await;
    let owner = keys::address_of(&owner_key);
    let live = start_worker(&url, &dir.path().join("live"), &owner_key);

    // A worker that completes the handshake and then never heartbeats.
    let silent = SigningKey::generate(&mut OsRng);
    let (_socket, answer) = connect_with(&url, |nonce| signed(&silent, &hello(&silent, &owner_key, nonce))).await;
    assert!(matches!(answer, ServerMessage::Welcome { .. }));
    let client = Client::new(&url, None);
    let silent_id = keys::address_of(&silent);
    // It answers no proof of compute, so it is never admitted.
    assert_eq!(client.device(silent_id.as_str()).await.unwrap().device.state, DeviceState::Pending);

    // Offline after 3 missed intervals (600 ms here), even though its socket is still open.
    devices_in_state(&url, &owner, DeviceState::Offline, 1).await;
    let detail = client.device(silent_id.as_str()).await.unwrap();
    assert_eq!(detail.device.state, DeviceState::Offline);
    assert!(detail.events[0].reason.contains("missed 3 heartbeats"), "{:?}", detail.events[0]);
    let states: Vec<_> = detail.events.iter().rev().map(|e| e.to).collect();
    assert_eq!(states, [DeviceState::Pending, DeviceState::Offline]);

    // The real worker heartbeats, so it is still ready well past the timeout.
    tokio::time::sleep(HEARTBEAT * 5).await;
    let devices = client.devices(&format!("owner={owner}&state=ready")).await.unwrap();
    assert_eq!(devices.len(), 1);
    assert!(devices[0].utilization.is_some(), "heartbeats carry utilisation");
    live.stop().await;
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_devices_join_an_account_only_with_its_owners_consent() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = start_coordinator(&dir.path().join("herd.db"), loopback()).await;
    let url = coordinator.url();
    let (owner_key, owner_client) = new_account(&url).await;
    let owner = keys::address_of(&owner_key);
    let (_, stranger_client) = new_account(&url).await;

    let unendorsed = |device: &SigningKey, nonce: &str| {
        let mut payload = hello(device, &owner_key, nonce);
        payload.owner_endorsement = None;
        payload
    };
    let device = SigningKey::generate(&mut OsRng);
    let (_, answer) = connect_with(&url, |nonce| signed(&device, &unendorsed(&device, nonce))).await;
    assert_eq!(rejection_code(&answer), "no_consent", "nobody can attach devices to someone else's account");

    let impostor = SigningKey::generate(&mut OsRng);
    let (_, answer) = connect_with(&url, |nonce| {
        let mut payload = hello(&device, &impostor, nonce);
        payload.owner = owner.clone();
        signed(&device, &payload)
    })
    .await;
    assert_eq!(rejection_code(&answer), "bad_endorsement");

    // A pairing code works once, and only for the account that issued it.
    let code = owner_client.pairing_code().await.unwrap();
    let foreign = stranger_client.pairing_code().await.unwrap();
    let with_code = |device: &SigningKey, code: &str, nonce: &str| {
        let mut payload = unendorsed(device, nonce);
        payload.pairing_code = Some(code.to_uppercase());
        signed(device, &payload)
    };
    let (_, answer) = connect_with(&url, |nonce| with_code(&device, &foreign.code, nonce)).await;
    assert_eq!(rejection_code(&answer), "bad_pairing_code");
    let (socket, answer) = connect_with(&url, |nonce| with_code(&device, &code.code, nonce)).await;
    assert!(matches!(answer, ServerMessage::Welcome { .. }), "{answer:?}");
    drop(socket);
    let second = SigningKey::generate(&mut OsRng);
    let (_, answer) = connect_with(&url, |nonce| with_code(&second, &code.code, nonce)).await;
    assert_eq!(rejection_code(&answer), "bad_pairing_code", "single use");

    // Once registered, the device reconnects without consent again.
    let (_, answer) = connect_with(&url, |nonce| signed(&device, &unendorsed(&device, nonce))).await;
    assert!(matches!(answer, ServerMessage::Welcome { .. }), "{answer:?}");

    // The real agent: a pairing code admits it; without consent it stops and says why.
    let code = owner_client.pairing_code().await.unwrap();
    let consent = herd_worker::OwnerConsent::PairingCode(code.code);
    let paired =
        start_agent(herd_worker::AgentConfig::new(&url, dir.path().join("paired"), owner.clone(), consent, "US"));
    let client = Client::new(&url, None);
    // (The hand-written device above proves nothing, so only the real agent becomes ready.)
    eventually("the paired agent to be ready", Duration::from_secs(10), || async {
        let devices = client.devices(&format!("owner={owner}&state=ready")).await.ok()?;
        (devices.len() == 1).then_some(())
    })
    .await;
    paired.stop().await;
    let refused = start_agent(herd_worker::AgentConfig::new(
        &url,
        dir.path().join("refused"),
        owner.clone(),
        herd_worker::OwnerConsent::None,
        "US",
    ));
    let error = refused.handle.await.unwrap().unwrap_err();
    assert!(error.to_string().contains("herd worker pair"), "{error}");
    coordinator.shutdown().await;
}
