//! Fixtures for the coordinator's unit tests: a store with admitted devices, an app over it.

use herd_core::{Address, DeviceState};
use herd_proto::worker::HelloPayload;

use crate::app::{now, App, CoordinatorConfig};
use crate::store::Store;

/// A fresh store on the run's backend (`HERD_TEST_DB`): a SQLite file in a temporary
/// directory (kept alive by the returned directory) or a new PostgreSQL schema; with its URL.
pub async fn temp_store() -> (tempfile::TempDir, Store, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = herd_testkit::database_url(dir.path());
    let store = Store::open(&url).await.unwrap();
    (dir, store, url)
}

/// An app over `store` with its market and books loaded (the sender keeps it running).
pub async fn test_app(store: &Store, url: String) -> (App, tokio::sync::watch::Sender<bool>) {
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let market = crate::market::SharedMarket::load(store, false).await.unwrap();
    let books = crate::books::SharedBooks::load(store, None).await.unwrap();
    let config = CoordinatorConfig::new(url, "127.0.0.1:0".parse().unwrap());
    (App::new(store.clone(), market, books, config, None, shutdown), stop)
}

/// Registers a device and admits it the way a passed proof of compute does.
pub async fn admitted_device(store: &Store, device: &Address, owner: &Address) {
    admit(store, &hello(device, owner)).await;
}

/// Registers the device of `hello` and admits it the way a passed proof of compute does.
pub async fn admit(store: &Store, hello: &HelloPayload) {
    let device = &hello.device_key;
    store.device_hello(hello, now()).await.unwrap().unwrap();
    let id = format!("poc-{device}");
    let params = herd_verify::Params { n: 64, rows: 64, steps: 2, stride: 1, openings: 1 };
    let claim_key = hello.spec.admission_claim(hello.simulated);
    let new = crate::store::NewVerification {
        id: &id,
        device,
        purpose: "admission",
        claim: "simulated",
        claim_key: &claim_key,
        params,
        expected_ms: 1,
        deadline_ms: 1,
    };
    store.begin_verification(&new, now()).await.unwrap();
    let passed = crate::store::Verdict {
        finish: crate::store::Finish::Passed { next_check_at: herd_core::Timestamp(now().0 + 3_600_000) },
        reason: "test".into(),
        committed_at: None,
        verify_us: Some(1),
    };
    let state = store.finish_verification(&id, device, &passed, now()).await.unwrap();
    assert_eq!(state, Some(DeviceState::Ready));
}

pub fn hello(device: &Address, owner: &Address) -> HelloPayload {
    HelloPayload {
        protocol_version: herd_proto::WORKER_PROTOCOL_VERSION,
        nonce: "n".into(),
        device_key: device.clone(),
        owner: owner.clone(),
        country: "FR".into(),
        simulated: true,
        advertise_addr: "127.0.0.1".into(),
        agent_version: "test".into(),
        spec: herd_core::DeviceSpec {
            hostname: "h".into(),
            os: "Linux".into(),
            arch: "x86_64".into(),
            cpu: herd_core::CpuSpec { model: "cpu".into(), physical_cores: 1, logical_cores: 2 },
            memory_bytes: 1 << 30,
            disk_bytes: 1 << 30,
            gpus: vec![],
        },
        owner_endorsement: None,
        pairing_code: None,
        floor_micros: None,
        throughput: None,
        tasks: vec![],
        ray_nodes: vec![],
        overlay: None,
    }
}

/// A plain lease of `devices` (device, price per hour) by `owner` from `at` for an hour, and a
/// command job on every node with `max_retries`.
pub async fn lease_with_job(
    store: &Store,
    owner: &Address,
    devices: &[(Address, i64)],
    max_retries: u32,
    at: herd_core::Timestamp,
) -> (herd_core::ClusterId, herd_core::JobId) {
    let cluster = herd_core::ClusterId::from_entropy([devices.len() as u8; 8]);
    let new = crate::store::NewCluster {
        id: &cluster,
        owner,
        hardware: "CPU",
        country: None,
        devices,
        price_per_hour_micros: devices.iter().map(|d| d.1).sum(),
        asset: herd_core::Asset::Usdc,
        request: &format!(r#"{{"nodes": {}}}"#, devices.len()),
        now: at,
        expires_at: herd_core::Timestamp(at.0 + 3_600_000),
        ray: None,
    };
    store.commit_cluster(&new).await.unwrap().unwrap();
    let job = herd_core::JobId::from_entropy([devices.len() as u8 + 100; 8]);
    let nodes: Vec<(u32, Address)> = devices.iter().enumerate().map(|(rank, d)| (rank as u32, d.0.clone())).collect();
    let (command, env) = (vec!["true".to_owned()], std::collections::BTreeMap::new());
    let new_job = crate::store::NewJob {
        id: &job,
        cluster_id: &cluster,
        owner,
        command: &command,
        env: &env,
        image: None,
        limits: &herd_core::JobLimits::default(),
        nodes: &nodes,
        now: at,
        kind: herd_core::JobKind::Command,
        max_retries,
        runtime_env: None,
    };
    store.create_job(&new_job).await.unwrap();
    (cluster, job)
}
