//! Several coordinator replicas on one PostgreSQL database (always PostgreSQL, whatever
//! `HERD_TEST_DB` says): one leads, any serves, money moved through either lands in one
//! unforked journal, the market of one sees devices that joined through the other, two
//! replicas placing at once never double-book a device, and when the leader goes the other
//! takes over within seconds.

mod common;

use std::time::{Duration, Instant};

use common::*;
use herd_cli::client::Client;
use herd_coordinator::{CoordinatorConfig, RunningCoordinator};
use herd_core::{Asset, DeviceState};
use herd_proto::api::{CreateCluster, Deposit};

fn replica_config(dir: &std::path::Path, bus: &herd_testkit::nats::NatsServer) -> CoordinatorConfig {
    let mut config = test_config(&dir.join("herd.db"), loopback());
    config.db_url = herd_testkit::postgres::database_for(&dir.join("herd.db"));
    config.key_dir = Some(dir.join("keys"));
    config.bus = Some(bus.url());
    config
}

async fn health(url: &str) -> herd_proto::api::Health {
    Client::new(url, None).health().await.expect("health")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_database_one_ledger_and_hand_over_leadership() {
    let dir = tempfile::tempdir().unwrap();
    let nats = herd_testkit::nats::NatsServer::start();
    let a: RunningCoordinator =
        herd_coordinator::start(replica_config(dir.path(), &nats)).await.expect("replica A starts");
    let b: RunningCoordinator =
        herd_coordinator::start(replica_config(dir.path(), &nats)).await.expect("replica B starts");
    let (url_a, url_b) = (a.url(), b.url());
    let (ha, hb) = (health(&url_a).await, health(&url_b).await);
    assert_eq!((ha.database.as_str(), hb.database.as_str()), ("postgres", "postgres"));
    assert!(ha.leader && !hb.leader, "the first replica leads, the second follows: {ha:?} {hb:?}");

    // Money moved through both replicas: one journal, no fork, each replica sees it all.
    let (_, alice_a) = new_account(&url_a).await;
    let alice_b = Client::new(&url_b, alice_a.api_key().map(str::to_owned));
    for (i, client) in [&alice_a, &alice_b, &alice_a, &alice_b].into_iter().enumerate() {
        let deposit = Deposit { asset: Asset::Usdc, amount: "1".into(), id: Some(format!("dep-{i}")) };
        client.deposit(&deposit).await.expect("deposit through either replica");
    }
    let usdc = |balances: Vec<herd_proto::api::WalletBalance>| {
        balances.into_iter().find(|b| b.asset == Asset::Usdc).map(|b| b.balance).unwrap_or_default()
    };
    // Each replica's books take in the other's entries (B posted last, so A follows B).
    eventually("both replicas' books to agree", Duration::from_secs(10), || async {
        let (on_a, on_b) = (usdc(alice_a.wallet().await.ok()?), usdc(alice_b.wallet().await.ok()?));
        (on_a == on_b).then_some(())
    })
    .await;

    // Devices join through B; A's market sees them and places on them; placements through
    // both replicas at once never take one device twice.
    let (supplier_key, _supplier) = new_account(&url_b).await;
    let supplier = herd_keys::address_of(&supplier_key);
    let network_b = TestNetworkView { url: url_b.clone(), dir: dir.path().to_path_buf() };
    let rigs: Vec<Worker> = (0..2).map(|i| network_b.rig(&supplier_key, &format!("rig-{i}"))).collect();
    devices_in_state(&url_b, &supplier, DeviceState::Ready, 2).await;
    let request = CreateCluster {
        nodes: 1,
        gpu: Some("H100".into()),
        gpus_per_node: Some(8),
        kind: Some(herd_core::ClusterKind::Plain),
        ..Default::default()
    };
    let (_, bob_b) = new_account(&url_b).await;
    let (carol_key, carol_a) = new_account(&url_a).await;
    let quote = eventually("A's market to see the devices that joined through B", Duration::from_secs(10), || async {
        carol_a.quote(&request).await.ok()
    })
    .await;
    assert_eq!(quote.nodes.len(), 1);
    let (x, y, z) = tokio::join!(
        carol_a.create_cluster(&request),
        bob_b.create_cluster(&request),
        carol_a.create_cluster(&request)
    );
    let won: Vec<_> = [x, y, z].into_iter().filter_map(Result::ok).collect();
    assert_eq!(won.len(), 2, "two machines, two winners across two replicas");
    assert_ne!(won[0].nodes[0].device_id, won[1].nodes[0].device_id, "never the same device twice");

    // A job on a lease made through A, whose device's socket is on B: the task reaches the
    // device over the bus, and its output streams to the customer through A.
    let on_a = won.iter().find(|c| c.owner == herd_keys::address_of(&carol_key)).expect("carol won one").clone();
    let job = carol_a
        .create_job(&herd_proto::api::CreateJob::new(on_a.id.clone(), vec!["echo".into(), "across replicas".into()]))
        .await
        .expect("a job through A");
    let (finished, lines) = follow_to_end(&carol_a, &job.id, Duration::from_secs(30)).await;
    assert_eq!(finished.state, herd_core::JobState::Succeeded, "{finished:?}");
    assert!(lines.iter().any(|l| l.contains("across replicas")), "{lines:?}");

    // The leader goes; the follower takes over within seconds.
    let gone = Instant::now();
    a.shutdown().await;
    eventually("replica B to lead", Duration::from_secs(10), || async { health(&url_b).await.leader.then_some(()) })
        .await;
    let handover = gone.elapsed();
    eprintln!("leadership moved {handover:?} after the leader stopped");

    // The journal verifies from the start (a fresh replica rebuilds the books from it), and
    // holds every deposit exactly once.
    let c = herd_coordinator::start(replica_config(dir.path(), &nats))
        .await
        .expect("a replica rebuilds and verifies the books");
    let alice_c = Client::new(&c.url(), alice_a.api_key().map(str::to_owned));
    assert_eq!(usdc(alice_c.wallet().await.unwrap()), usdc(alice_b.wallet().await.unwrap()));
    let history = alice_c.wallet_history().await.unwrap();
    for i in 0..4 {
        let id = format!("dep-{i}");
        let named = |e: &&herd_proto::api::JournalEntry| e.transfer["id"].as_str().is_some_and(|t| t.ends_with(&id));
        assert_eq!(history.iter().filter(named).count(), 1, "{id} once in the history");
    }
    for rig in rigs {
        rig.stop().await;
    }
    c.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_coordinator_needs_a_bus_and_sqlite_takes_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut alone = test_config(&dir.path().join("herd.db"), loopback());
    alone.db_url = herd_testkit::postgres::database_for(&dir.path().join("herd.db"));
    alone.key_dir = Some(dir.path().join("keys"));
    let first = herd_coordinator::start(alone.clone()).await.expect("the first coordinator starts");
    let second = herd_coordinator::start(alone).await.err().expect("a second one without a bus is refused");
    assert!(second.to_string().contains("--bus nats://"), "{second}");
    first.shutdown().await;

    let mut sqlite = test_config(&dir.path().join("other.db"), loopback());
    sqlite.db_url = format!("sqlite://{}", dir.path().join("other.db").display());
    sqlite.bus = Some("nats://127.0.0.1:1".into());
    let refused = herd_coordinator::start(sqlite).await.err().expect("SQLite with a bus is refused");
    assert!(refused.to_string().contains("needs --db postgres://"), "{refused}");
}

/// Enough of a network for `rig` to join supplier machines to one replica.
struct TestNetworkView {
    url: String,
    dir: std::path::PathBuf,
}

impl TestNetworkView {
    fn rig(&self, owner: &ed25519_dalek::SigningKey, name: &str) -> Worker {
        let mut config = herd_worker::AgentConfig::owned_by(&self.url, self.dir.join(name), owner, "US");
        config.simulated = Some(spec(Some("NVIDIA H100 80GB HBM3"), 8));
        config.throughput = Some(herd_proto::worker::Throughput { down_mbps: 1000, up_mbps: 1000 });
        config.advertise_addr = Some("127.0.0.1".into());
        start_agent(config)
    }
}
