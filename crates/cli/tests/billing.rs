//! Per-second billing against holds: what the customer pays is exactly what the suppliers
//! earn plus the fees, for the seconds the lease ran, across a coordinator restart too.

mod common;

use herd_core::ClusterKind;
use std::time::{Duration, Instant};

use common::*;
use herd_cli::client::Client;
use herd_core::Asset;
use herd_ledger::{AccountKey, Ledger};
use herd_proto::api::{Cluster, CreateCluster};

fn h100(nodes: u32, hours: Option<u32>) -> CreateCluster {
    CreateCluster {
        nodes,
        gpu: Some("H100".into()),
        gpus_per_node: Some(8),
        hours,
        kind: Some(ClusterKind::Plain),
        ..Default::default()
    }
}

/// A network whose supplier (the fixture's) runs `rigs` simulated 8×H100 machines.
async fn gpu_network(rigs: usize) -> (TestNetwork, Vec<Worker>) {
    let network = TestNetwork::start(0).await;
    let key = network.supplier_key.clone();
    let workers = (0..rigs)
        .map(|i| rig(&network, &key, &format!("rig-{i}"), "NVIDIA H100 80GB HBM3", 8, "US", (2000, 1500)))
        .collect();
    devices_in_state(&network.url, &network.supplier, herd_core::DeviceState::Ready, rigs).await;
    (network, workers)
}

/// The ledger, rebuilt from the public journal.
async fn books(url: &str) -> Ledger {
    herd_cli::audit::replay_ledger(&Client::new(url, None)).await.unwrap()
}

fn usdc(ledger: &Ledger, key: &AccountKey) -> i128 {
    ledger.balance(key, Asset::Usdc)
}

/// Checks a settled lease: holds released, escrow empty, and customer = suppliers + fees.
fn assert_settled(ledger: &Ledger, cluster: &Cluster, customer_start: i128, supplier: &AccountKey) -> i128 {
    let customer = AccountKey::User(cluster.owner.to_string());
    assert_eq!(ledger.open_pending().count(), 0, "every hold is resolved");
    assert_eq!(usdc(ledger, &AccountKey::Escrow(cluster.id.to_string())), 0, "the escrow is empty");
    let paid = customer_start - usdc(ledger, &customer);
    let earned = usdc(ledger, supplier) - 10_000_000_000;
    let fees = usdc(ledger, &AccountKey::FeePool);
    assert_eq!(paid, earned + fees, "the customer paid exactly the suppliers' earnings and the fees");
    assert!(fees > 0 && earned > 0, "fees {fees}, earned {earned}");
    // The suppliers' side pays 0.25 % + 2 % (USDC) of their gross, the customer the same on top:
    // fees ≈ 4.5 % of what the suppliers earn net.
    assert!((fees * 1000 / earned - 46).abs() <= 2, "fees {fees} for earnings {earned}");
    paid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_billed_per_second_and_the_rest_released() {
    let (network, rigs) = gpu_network(2).await;
    let (_, customer) = new_account(&network.url).await;
    let started = Instant::now();
    let cluster = customer.create_cluster(&h100(2, Some(2))).await.unwrap();
    let held = customer.wallet().await.unwrap().into_iter().find(|b| b.asset == Asset::Usdc).unwrap();
    let expected_hold = cluster.price_per_hour_micros * 2;
    assert!(held.held >= expected_hold && held.held <= expected_hold * 10_226 / 10_000 + 1, "{held:?}");

    tokio::time::sleep(Duration::from_millis(2500)).await;
    customer.delete_cluster(cluster.id.as_str()).await.unwrap();
    let elapsed_ms = started.elapsed().as_millis() as i128;

    let ledger = books(&network.url).await;
    let supplier = AccountKey::User(network.supplier.to_string());
    let paid = assert_settled(&ledger, &cluster, 10_000_000_000, &supplier);
    // Billed for the seconds the lease ran (fees 2.25 % on top), never the whole 2 h hold.
    let cost = |ms: i128| i128::from(cluster.price_per_hour_micros) * ms / 3_600_000;
    let upper = cost(elapsed_ms) * 10_226 / 10_000 + 10;
    assert!(paid > 0 && paid <= upper, "paid {paid}, at most {upper} for {elapsed_ms} ms");
    assert!(paid >= cost(2_500), "at least the 2.5 s of sleep: {paid}");
    let wallet = customer.wallet().await.unwrap().into_iter().find(|b| b.asset == Asset::Usdc).unwrap();
    assert_eq!(
        (wallet.held, wallet.available as i128),
        (0, 10_000_000_000 - paid),
        "the remainder is released exactly"
    );
    for rig in rigs {
        rig.stop().await;
    }
    network.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_lease_neither_double_charges_nor_skips() {
    let (network, rigs) = gpu_network(1).await;
    let (_, customer) = new_account(&network.url).await;
    let started = Instant::now();
    let cluster = customer.create_cluster(&h100(1, None)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let TestNetwork { dir, coordinator, url, supplier, supplier_client, supplier_key, workers } = network;
    let addr = coordinator.addr();
    coordinator.shutdown().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let coordinator = herd_coordinator::start(test_config(&dir.path().join("herd.db"), addr)).await.unwrap();
    let network = TestNetwork { dir, coordinator, url, supplier, supplier_client, supplier_key, workers };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    customer.delete_cluster(cluster.id.as_str()).await.unwrap();
    let elapsed_ms = started.elapsed().as_millis() as i128;

    let ledger = books(&network.url).await;
    let paid = assert_settled(&ledger, &cluster, 10_000_000_000, &AccountKey::User(network.supplier.to_string()));
    let cost = |ms: i128| i128::from(cluster.price_per_hour_micros) * ms / 3_600_000;
    // The worker kept serving while the coordinator was away, so that time is billed, once.
    assert!(paid <= cost(elapsed_ms) * 10_226 / 10_000 + 10, "no period charged twice: {paid}");
    assert!(paid >= cost(3_500), "no period skipped: the 3.5 s of sleep and downtime: {paid}");
    for rig in rigs {
        rig.stop().await;
    }
    network.stop().await;
}

/// The coordinator as its own process, killed with SIGKILL mid-lease (no graceful anything),
/// then restarted on the same database: the journal is all that survives, and it is enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_coordinator_resumes_billing_exactly() {
    use std::process::{Child, Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let db = format!("sqlite://{}", dir.path().join("herd.db").display());
    let spawn = || -> Child {
        Command::new(env!("CARGO_BIN_EXE_herd"))
            .args([
                "coordinator",
                "--db",
                &db,
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--faucet",
                "--allow-simulated",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let up = || async {
        eventually("the coordinator to answer", Duration::from_secs(20), || async {
            Client::new(&url, None).health().await.ok().map(drop)
        })
        .await
    };
    let mut coordinator = spawn();
    up().await;
    let (supplier_key, _) = new_account(&url).await;
    let supplier = herd_keys::address_of(&supplier_key);
    let mut config = herd_worker::AgentConfig::owned_by(&url, dir.path().join("rig"), &supplier_key, "US");
    config.simulated = Some(spec(Some("NVIDIA H100 80GB HBM3"), 8));
    config.throughput = Some(herd_proto::worker::Throughput { down_mbps: 2000, up_mbps: 1500 });
    config.advertise_addr = Some("127.0.0.1".into());
    let machine = start_agent(config);
    devices_in_state(&url, &supplier, herd_core::DeviceState::Ready, 1).await;
    let (_, customer) = new_account(&url).await;
    let started = Instant::now();
    let cluster = customer.create_cluster(&h100(1, None)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;

    coordinator.kill().unwrap();
    coordinator.wait().unwrap();
    let mut coordinator = spawn();
    up().await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    customer.delete_cluster(cluster.id.as_str()).await.unwrap();
    let elapsed_ms = started.elapsed().as_millis() as i128;

    let ledger = books(&url).await;
    let paid = assert_settled(&ledger, &cluster, 10_000_000_000, &AccountKey::User(supplier.to_string()));
    let cost = |ms: i128| i128::from(cluster.price_per_hour_micros) * ms / 3_600_000;
    assert!(paid <= cost(elapsed_ms) * 10_226 / 10_000 + 10, "nothing charged twice: {paid}");
    assert!(paid >= cost(4_500), "nothing skipped: {paid}");
    herd_cli::audit::verify_ledger(&Client::new(&url, None)).await.unwrap();
    machine.stop().await;
    coordinator.kill().unwrap();
    coordinator.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unused_hold_can_come_back_as_credits() {
    let (network, rigs) = gpu_network(1).await;
    let (_, customer) = new_account(&network.url).await;
    let cluster = customer.create_cluster(&h100(1, Some(3))).await.unwrap();
    let held = customer.wallet().await.unwrap().into_iter().find(|b| b.asset == Asset::Usdc).unwrap().held;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    customer.delete_cluster_refunding_credits(cluster.id.as_str()).await.unwrap();
    let wallet = customer.wallet().await.unwrap();
    let of = |asset| wallet.iter().find(|b| b.asset == asset).unwrap().clone();
    let usdc = of(Asset::Usdc);
    assert_eq!(
        (usdc.held, i128::from(usdc.balance)),
        (0, 10_000_000_000 - i128::from(held)),
        "the whole hold left USDC"
    );
    let ledger = books(&network.url).await;
    let spent = i128::from(held) - i128::from(of(Asset::Credits).balance);
    let earned = usdc_of(&ledger, &network) + ledger.balance(&AccountKey::FeePool, Asset::Usdc);
    assert_eq!(spent, earned, "what was not spent came back as credits, 1:1 for USDC");
    assert!(of(Asset::Credits).balance > 0);
    for rig in rigs {
        rig.stop().await;
    }
    network.stop().await;
}

fn usdc_of(ledger: &Ledger, network: &TestNetwork) -> i128 {
    usdc(ledger, &AccountKey::User(network.supplier.to_string())) - 10_000_000_000
}

/// Two coordinator replicas as their own processes on one PostgreSQL database and one NATS
/// (always, whatever HERD_TEST_DB says); the leader, which holds the machine's socket, is
/// killed with SIGKILL mid-lease. The other takes leadership, the machine re-attaches to it
/// (it was given both replicas), billing resumes where the journal says — no second
/// charged twice or skipped — and the whole journal verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_replica_hands_over_and_billing_resumes_exactly() {
    use std::process::{Child, Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let nats = herd_testkit::nats::NatsServer::start();
    let db = herd_testkit::postgres::database_for(&dir.path().join("herd.db"));
    let keys = dir.path().join("keys").display().to_string();
    let port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (port_a, port_b) = (port(), port());
    let (url_a, url_b) = (format!("http://127.0.0.1:{port_a}"), format!("http://127.0.0.1:{port_b}"));
    let spawn = |port: u16| -> Child {
        Command::new(env!("CARGO_BIN_EXE_herd"))
            .args(["coordinator", "--db", &db, "--key-dir", &keys, "--bus", &nats.url()])
            .args(["--listen", &format!("127.0.0.1:{port}"), "--faucet", "--allow-simulated"])
            .args(["--heartbeat-interval-ms", "500"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let health = |url: String| async move { Client::new(&url, None).health().await.ok() };
    let mut a = spawn(port_a);
    eventually("replica A to lead", Duration::from_secs(20), || health(url_a.clone())).await;
    let mut b = spawn(port_b);
    let hb = eventually("replica B to answer", Duration::from_secs(20), || health(url_b.clone())).await;
    assert!(!hb.leader, "A leads, B follows");

    let (supplier_key, _) = new_account(&url_a).await;
    let supplier = herd_keys::address_of(&supplier_key);
    let both = format!("{url_a},{url_b}");
    let mut config = herd_worker::AgentConfig::owned_by(&both, dir.path().join("rig"), &supplier_key, "US");
    config.simulated = Some(spec(Some("NVIDIA H100 80GB HBM3"), 8));
    config.throughput = Some(herd_proto::worker::Throughput { down_mbps: 2000, up_mbps: 1500 });
    config.advertise_addr = Some("127.0.0.1".into());
    let machine = start_agent(config);
    devices_in_state(&url_a, &supplier, herd_core::DeviceState::Ready, 1).await;
    assert_eq!(health(url_a.clone()).await.unwrap().workers_connected, 1, "the machine is on A");
    let (_, customer_a) = new_account(&url_a).await;
    let customer_b = Client::new(&url_b, customer_a.api_key().map(str::to_owned));
    let started = Instant::now();
    let cluster = customer_a.create_cluster(&h100(1, None)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;

    a.kill().unwrap();
    let killed = Instant::now();
    a.wait().unwrap();
    eventually("replica B to lead", Duration::from_secs(15), || async {
        health(url_b.clone()).await.filter(|h| h.leader).map(drop)
    })
    .await;
    let leader_after = killed.elapsed();
    eventually("the machine to re-attach to B", Duration::from_secs(15), || async {
        health(url_b.clone()).await.filter(|h| h.workers_connected == 1).map(drop)
    })
    .await;
    let attached_after = killed.elapsed();
    eprintln!("after SIGKILL of the leader: B led in {leader_after:?}, the machine re-attached in {attached_after:?}");
    let device = Client::new(&url_b, None).device(cluster.nodes[0].device_id.as_str()).await.unwrap();
    assert_eq!(device.device.state, herd_core::DeviceState::Hired, "still on its lease, never marked offline");

    tokio::time::sleep(Duration::from_millis(2000)).await;
    customer_b.delete_cluster(cluster.id.as_str()).await.unwrap();
    let elapsed_ms = started.elapsed().as_millis() as i128;
    let ledger = books(&url_b).await;
    let paid = assert_settled(&ledger, &cluster, 10_000_000_000, &AccountKey::User(supplier.to_string()));
    let cost = |ms: i128| i128::from(cluster.price_per_hour_micros) * ms / 3_600_000;
    assert!(paid <= cost(elapsed_ms) * 10_226 / 10_000 + 10, "nothing charged twice: {paid}");
    assert!(paid >= cost(4_500), "nothing skipped: {paid}");
    herd_cli::audit::verify_ledger(&Client::new(&url_b, None)).await.unwrap();
    machine.stop().await;
    b.kill().unwrap();
    b.wait().unwrap();
}
