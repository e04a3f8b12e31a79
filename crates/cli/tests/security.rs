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
