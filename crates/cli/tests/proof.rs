//! Proof of compute against honest and dishonest workers, over the real socket protocol,
//! with a real coordinator on a temp database.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::raw_worker::*;
use common::*;
use ed25519_dalek::SigningKey;
use herd_cli::client::Client;
use herd_core::{DeviceState, SecurityTier};
use herd_proto::proof::ProofOutcome;
use herd_proto::worker::ServerMessage;
use herd_worker::keys;
use rand::rngs::OsRng;

/// Keeps every core busy until dropped: proofs must pass on a loaded machine.
struct Load(Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>);

impl Load {
    fn start() -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                    }
                })
            })
            .collect();
        Load(stop, threads)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        for thread in self.1.drain(..) {
            let _ = thread.join();
        }
    }
}

async fn state_of(url: &str, device: &herd_core::Address) -> (DeviceState, String) {
    let detail = Client::new(url, None).device(device.as_str()).await.unwrap();
    (detail.device.state, detail.device.state_reason)
}

async fn wait_for_state(url: &str, device: &herd_core::Address, state: DeviceState) -> String {
    eventually(&format!("{device} to be {state}"), Duration::from_secs(20), || async {
        let (now, reason) = state_of(url, device).await;
        (now == state).then_some(reason)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_cpu_worker_under_load_proves_itself_and_is_rechecked() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir.path().join("herd.db"), loopback());
    config.proof.recheck_interval = Duration::from_millis(1500);
    let coordinator = herd_coordinator::start(config).await.unwrap();
    let url = coordinator.url();
    let (owner_key, _) = new_account(&url).await;
    let owner = keys::address_of(&owner_key);
    let load = Load::start();
    let worker = start_worker(&url, &dir.path().join("w"), &owner_key);
    devices_in_state(&url, &owner, DeviceState::Ready, 1).await;
    let client = Client::new(&url, None);
    let device = client.devices(&format!("owner={owner}")).await.unwrap().remove(0);
    assert_eq!(device.security, SecurityTier::Verified);
    let detail = client.device(device.id.as_str()).await.unwrap();
    assert!(detail.events[0].reason.starts_with("admitted: passed proof of compute"), "{:?}", detail.events[0]);

    // Re-checked at a random time within the interval, while staying ready.
    let proofs = eventually("a re-check", Duration::from_secs(20), || async {
        let proofs = client.verifications(device.id.as_str()).await.ok()?;
        proofs.iter().any(|p| p.purpose == "recheck" && p.outcome == ProofOutcome::Passed).then_some(proofs)
    })
    .await;
    drop(load);
    let admission = proofs.last().unwrap();
    assert_eq!((admission.purpose.as_str(), admission.outcome), ("admission", ProofOutcome::Passed));
    let cores = device.spec.cpu.logical_cores;
    assert_eq!(admission.claim, format!("{cores} CPU cores"));
    assert!(admission.committed_at.is_some() && admission.verify_us.is_some());
    assert!(admission.deadline_ms > admission.expected_ms, "the deadline leaves slack: {admission:?}");
    assert_eq!(client.device(device.id.as_str()).await.unwrap().device.state, DeviceState::Ready);
    worker.stop().await;
    coordinator.shutdown().await;
}

/// Serves proofs until the coordinator rejects the device (or 30 s pass: then None).
async fn until_rejected(socket: Socket, device: herd_core::Address, prover: Prover) -> Option<ServerMessage> {
    tokio::time::timeout(Duration::from_secs(30), serve_proofs(socket, device, prover)).await.ok().flatten()
}

/// A hand-written worker connects with `spec` (not marked simulated unless `simulated`).
async fn raw_device(
    url: &str,
    owner: &SigningKey,
    spec: Option<herd_core::DeviceSpec>,
    simulated: bool,
) -> (SigningKey, Socket) {
    let key = SigningKey::generate(&mut OsRng);
    let (socket, answer) = connect_with(url, |nonce| {
        let mut payload = hello(&key, owner, nonce);
        payload.simulated = simulated;
        if let Some(spec) = spec {
            payload.spec = spec;
        }
        signed(&key, &payload)
    })
    .await;
    assert!(matches!(answer, ServerMessage::Welcome { .. }), "{answer:?}");
    (key, socket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fake_h100_solving_on_the_cpu_misses_its_deadline_and_is_blocked() {
    let network = TestNetwork::start(0).await;
    let h100 = spec(Some("NVIDIA H100 80GB HBM3"), 1);
    let (key, socket) = raw_device(&network.url, &network.supplier_key, Some(h100), false).await;
    let device = keys::address_of(&key);
    let rejection = until_rejected(socket, device.clone(), Prover::Honest).await;
    let Some(ServerMessage::Rejected { code, message }) = rejection else { panic!("not rejected: {rejection:?}") };
    assert_eq!(code, "blocked");
    assert!(message.contains("no commitment within"), "{message}");
    let reason = wait_for_state(&network.url, &device, DeviceState::Blocked).await;
    assert!(reason.contains("an honest 1× H100 needs about"), "{reason}");
    assert!(reason.ends_with("(3 times in a row)"), "a missed deadline blocks only when it repeats: {reason}");
    let proofs = Client::new(&network.url, None).verifications(device.as_str()).await.unwrap();
    assert_eq!(proofs.len(), 3);
    assert!(proofs.iter().all(|p| p.claim == "1× H100" && p.outcome == ProofOutcome::Failed));
    assert!(proofs[0].committed_at.is_none());

    // And it cannot come back.
    let (_, answer) =
        connect_with(&network.url, |nonce| signed(&key, &hello(&key, &network.supplier_key, nonce))).await;
    assert_eq!(rejection_code(&answer), "blocked");
    network.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_rows_and_bad_merkle_paths_are_caught() {
    let network = TestNetwork::start(0).await;
    for (prover, expected) in [(Prover::WrongProduct, "is not the product"), (Prover::BadPath, "Merkle path")] {
        let (key, socket) = raw_device(&network.url, &network.supplier_key, None, true).await;
        let device = keys::address_of(&key);
        let rejection = until_rejected(socket, device.clone(), prover.clone()).await;
        assert!(matches!(rejection, Some(ServerMessage::Rejected { .. })), "{prover:?}: {rejection:?}");
        let reason = wait_for_state(&network.url, &device, DeviceState::Blocked).await;
        assert!(reason.contains(expected), "{prover:?}: {reason}");
    }
    network.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_devices_answer_is_refused() {
    let network = TestNetwork::start(0).await;
    let (honest_key, honest_socket) = raw_device(&network.url, &network.supplier_key, None, true).await;
    let honest = keys::address_of(&honest_key);
    let honest_task = tokio::spawn(serve_proofs(honest_socket, honest.clone(), Prover::Honest));
    wait_for_state(&network.url, &honest, DeviceState::Ready).await;

    // The copier computes what the honest device would answer to the copier's challenge.
    let (copier_key, copier_socket) = raw_device(&network.url, &network.supplier_key, None, true).await;
    let copier = keys::address_of(&copier_key);
    let rejection = until_rejected(copier_socket, copier.clone(), Prover::SeededFor(honest.clone())).await;
    assert!(matches!(rejection, Some(ServerMessage::Rejected { .. })), "{rejection:?}");
    let reason = wait_for_state(&network.url, &copier, DeviceState::Blocked).await;
    assert!(reason.contains("failed proof of compute"), "{reason}");
    assert_eq!(state_of(&network.url, &honest).await.0, DeviceState::Ready, "the honest device is untouched");
    honest_task.abort();
    network.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_never_answers_is_blocked_and_one_that_declines_waits() {
    let network = TestNetwork::start(0).await;
    let (key, socket) = raw_device(&network.url, &network.supplier_key, None, true).await;
    let device = keys::address_of(&key);
    let rejection = until_rejected(socket, device.clone(), Prover::Silent).await;
    assert!(matches!(rejection, Some(ServerMessage::Rejected { .. })), "{rejection:?}");
    wait_for_state(&network.url, &device, DeviceState::Blocked).await;

    let (key, socket) = raw_device(&network.url, &network.supplier_key, None, true).await;
    let device = keys::address_of(&key);
    let serving = tokio::spawn(serve_proofs(socket, device.clone(), Prover::Declines));
    let client = Client::new(&network.url, None);
    let proofs = eventually("a declined proof", Duration::from_secs(20), || async {
        let proofs = client.verifications(device.as_str()).await.ok()?;
        let declined = proofs.first().is_some_and(|p| p.outcome == ProofOutcome::Declined);
        declined.then_some(proofs)
    })
    .await;
    assert!(proofs[0].reason.as_deref().unwrap().contains("no GPU solver"), "{proofs:?}");
    let (state, reason) = state_of(&network.url, &device).await;
    assert_eq!(state, DeviceState::Pending, "declining is not failing: {reason}");
    assert!(reason.contains("the worker declined: no GPU solver"), "{reason}");
    serving.abort();
    network.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_reporting_one_gpu_uuid_are_both_flagged() {
    let network = TestNetwork::start(0).await;
    let machine = spec(Some("NVIDIA H100 80GB HBM3"), 2);
    let first = rig_with(&network, "first", machine.clone());
    devices_in_state(&network.url, &network.supplier, DeviceState::Ready, 1).await;
    let second = rig_with(&network, "second", machine);
    let client = Client::new(&network.url, None);
    let devices = eventually("both flagged", Duration::from_secs(20), || async {
        let devices = client.devices(&format!("owner={}", network.supplier)).await.ok()?;
        (devices.len() == 2 && devices.iter().all(|d| d.state_reason.starts_with("flagged: GPU"))).then_some(devices)
    })
    .await;
    assert!(devices.iter().all(|d| d.state == DeviceState::Pending), "neither is hireable");
    // UUIDs are shown only to the owner, so an impostor cannot copy them from the API.
    assert!(devices.iter().all(|d| d.spec.gpus.iter().all(|g| g.uuid.is_empty())));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let devices = client.devices(&format!("owner={}", network.supplier)).await.unwrap();
    assert!(devices.iter().all(|d| d.state == DeviceState::Pending), "and neither is proven while flagged");
    first.stop().await;
    second.stop().await;
    network.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_hardware_is_proven_again() {
    let network = TestNetwork::start(0).await;
    let machine = spec(Some("NVIDIA A100 80GB PCIe"), 2);
    let worker = rig_with(&network, "rig", machine.clone());
    devices_in_state(&network.url, &network.supplier, DeviceState::Ready, 1).await;
    worker.stop().await;
    let mut upgraded = machine;
    upgraded.gpus.push(spec(Some("NVIDIA A100 80GB PCIe"), 1).gpus.remove(0));
    let worker = rig_with(&network, "rig", upgraded);
    let client = Client::new(&network.url, None);
    let device = client.devices(&format!("owner={}", network.supplier)).await.unwrap().remove(0);
    eventually("a second admission proof", Duration::from_secs(20), || async {
        let proofs = client.verifications(device.id.as_str()).await.ok()?;
        let admissions = proofs.iter().filter(|p| p.purpose == "admission" && p.outcome == ProofOutcome::Passed);
        (admissions.count() == 2).then_some(())
    })
    .await;
    devices_in_state(&network.url, &network.supplier, DeviceState::Ready, 1).await;
    let detail = client.device(device.id.as_str()).await.unwrap();
    assert_eq!(detail.device.gpu_count, 3);
    worker.stop().await;
    network.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_short_of_its_memory_and_one_gpu_answering_for_eight_fail_the_proof_of_vram() {
    let network = TestNetwork::start(0).await;
    let eight = spec(Some("NVIDIA H100 80GB HBM3"), 8);
    for (prover, expected) in [
        (Prover::VramShort, "does not win: it did not read the challenge's dataset"),
        (Prover::OneGpuForAll, "expected winning walks from 8 GPUs, got 1"),
    ] {
        let (key, socket) = raw_device(&network.url, &network.supplier_key, Some(eight.clone()), true).await;
        let device = keys::address_of(&key);
        let rejection = until_rejected(socket, device.clone(), prover.clone()).await;
        assert!(matches!(rejection, Some(ServerMessage::Rejected { .. })), "{prover:?}: {rejection:?}");
        let reason = wait_for_state(&network.url, &device, DeviceState::Blocked).await;
        assert!(reason.contains("proof of VRAM") && reason.contains(expected), "{prover:?}: {reason}");
    }
    // The same claim answered honestly passes both proofs.
    let (key, socket) = raw_device(&network.url, &network.supplier_key, Some(eight), true).await;
    let device = keys::address_of(&key);
    let serving = tokio::spawn(serve_proofs(socket, device.clone(), Prover::Honest));
    let reason = wait_for_state(&network.url, &device, DeviceState::Ready).await;
    assert!(reason.contains("VRAM:") && reason.contains("on each of 8 GPUs"), "{reason}");
    serving.abort();
    network.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_nvml_sees_gpus_but_cuda_does_not_load_says_exactly_why() {
    let network = TestNetwork::start(0).await;
    let mut config = herd_worker::AgentConfig::owned_by(
        &network.url,
        network.dir.path().join("no-cuda"),
        &network.supplier_key,
        "US",
    );
    // A real (not simulated) H100 as NVML would report it, on this machine without CUDA.
    config.detected = Some(spec(Some("NVIDIA H100 80GB HBM3"), 1));
    config.advertise_addr = Some("127.0.0.1".into());
    let worker = start_agent(config);
    let client = Client::new(&network.url, None);
    let device = eventually("the device registers", Duration::from_secs(20), || async {
        client.devices(&format!("owner={}", network.supplier)).await.ok()?.pop().map(|d| d.id)
    })
    .await;
    let proofs = eventually("a declined proof", Duration::from_secs(30), || async {
        let proofs = client.verifications(device.as_str()).await.ok()?;
        proofs.first().is_some_and(|p| p.outcome == ProofOutcome::Declined).then_some(proofs)
    })
    .await;
    let reason = proofs[0].reason.clone().unwrap();
    assert!(reason.contains("this worker's GPUs cannot be proven: libcuda.so not found"), "{reason}");
    let (state, reason) = state_of(&network.url, &device).await;
    assert_eq!(state, DeviceState::Pending, "{reason}");
    assert!(reason.contains("libcuda.so not found (the NVIDIA driver)"), "{reason}");
    worker.stop().await;
    network.stop().await;
}

/// A simulated machine with a fixed spec, in the network's data dir under `name`.
fn rig_with(network: &TestNetwork, name: &str, machine: herd_core::DeviceSpec) -> Worker {
    let mut config =
        herd_worker::AgentConfig::owned_by(&network.url, network.dir.path().join(name), &network.supplier_key, "US");
    config.simulated = Some(machine);
    config.advertise_addr = Some("127.0.0.1".into());
    start_agent(config)
}
