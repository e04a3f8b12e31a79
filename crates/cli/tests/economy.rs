//! Token economics over hours, with the genesis moved back in time so hours have passed:
//! hourly reward blocks that sum to their emission, and buyback-and-burn of fees.

mod common;

use std::time::Duration;

use common::*;
use herd_cli::client::Client;
use herd_core::Asset;
use herd_ledger::emission::{self, EMISSION_TOTAL, GENESIS_SUPPLY};
use herd_ledger::{AccountKey, Ledger};

async fn books(url: &str) -> Ledger {
    herd_cli::audit::replay_ledger(&Client::new(url, None)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hourly_blocks_emit_on_schedule_and_fees_are_bought_back_and_burned() {
    let network = TestNetwork::start(0).await;
    let key = network.supplier_key.clone();
    let machine = rig(&network, &key, "rig", "NVIDIA H100 80GB HBM3", 8, "US", (2000, 1500));
    devices_in_state(&network.url, &network.supplier, herd_core::DeviceState::Ready, 1).await;
    let (_, customer) = new_account(&network.url).await;
    // A short lease on an 8×H100 machine puts fees in the fee pool.
    let request = herd_proto::api::CreateCluster {
        nodes: 1,
        gpu: Some("H100".into()),
        gpus_per_node: Some(8),
        kind: Some(herd_core::ClusterKind::Plain),
        ..Default::default()
    };
    let cluster = customer.create_cluster(&request).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    customer.delete_cluster(cluster.id.as_str()).await.unwrap();
    let before = books(&network.url).await;
    assert_eq!(before.balance(&AccountKey::EmissionPool, Asset::Io), i128::from(EMISSION_TOTAL));
    assert_eq!(before.balance(&AccountKey::Treasury, Asset::Io), i128::from(GENESIS_SUPPLY));
    let fees = before.balance(&AccountKey::FeePool, Asset::Usdc);
    assert!(fees > 0, "the lease paid fees");

    // Three hours pass (the genesis is moved back), then the coordinator runs them.
    let TestNetwork { dir, coordinator, url, supplier, supplier_client, supplier_key, workers } = network;
    let addr = coordinator.addr();
    coordinator.shutdown().await;
    let db = dir.path().join("herd.db");
    run_sql_behind_its_back(&db, "UPDATE economy SET value = value - 3 * 3600000 WHERE key = 'genesis_at'").await;
    let coordinator = herd_coordinator::start(test_config(&db, addr)).await.unwrap();
    let network = TestNetwork { dir, coordinator, url, supplier, supplier_client, supplier_key, workers };
    let client = Client::new(&network.url, None);
    let blocks = eventually("three reward blocks", Duration::from_secs(10), || async {
        let blocks = client.reward_blocks().await.ok()?;
        (blocks.len() == 3).then_some(blocks)
    })
    .await;

    let month_one = emission::schedule()[0];
    for block in &blocks {
        assert_eq!(block.emission as u64, emission::hourly(month_one, block.hour as u64));
        let paid: u64 = block.paid.iter().map(|p| p.1).sum();
        assert_eq!(paid + block.to_treasury as u64, block.emission as u64, "a block sums to its emission");
        // No device has passed proof of compute yet, so none is eligible.
        assert!(block.paid.is_empty());
        assert!(block
            .failed
            .iter()
            .all(|(_, why)| why.contains("uptime") || why.contains("stake") || why.contains("verification")));
    }
    let after = eventually("the buyback", Duration::from_secs(10), || async {
        let ledger = books(&network.url).await;
        (ledger.balance(&AccountKey::FeePool, Asset::Usdc) == 0).then_some(ledger)
    })
    .await;
    let emitted: i128 = blocks.iter().map(|b| i128::from(b.emission)).sum();
    assert_eq!(after.balance(&AccountKey::EmissionPool, Asset::Io), i128::from(EMISSION_TOTAL) - emitted);
    let to_treasury_usdc = after.balance(&AccountKey::Treasury, Asset::Usdc);
    let bought = fees - to_treasury_usdc;
    assert!(bought >= to_treasury_usdc, "at least half of the fees buy IO back: {bought} of {fees}");
    assert_eq!(after.balance(&AccountKey::Burn, Asset::Io), bought * 1_000_000 / 2_000_000, "burned at $2.00 per IO");
    for asset in Asset::ALL {
        let total: i128 = after.accounts().filter(|((_, a), _)| *a == asset).map(|(_, s)| s.balance()).sum();
        assert_eq!(total, 0, "balances + burned = minted in {asset}");
    }
    herd_cli::audit::verify_ledger(&client).await.unwrap();
    machine.stop().await;
    network.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genesis_allocations_must_sum_to_the_genesis_supply() {
    let dir = tempfile::tempdir().unwrap();
    let investor = herd_keys::address_of(&ed25519_dalek::SigningKey::from_bytes(&[4; 32]));
    let mut config = test_config(&dir.path().join("a.db"), loopback());
    config.genesis_allocations = vec![(AccountKey::Treasury, 1)];
    let refused = herd_coordinator::start(config).await.err().expect("a wrong total is refused");
    assert!(refused.to_string().contains("genesis allocations sum to 1"), "{refused}");

    let mut config = test_config(&dir.path().join("b.db"), loopback());
    let quarter = GENESIS_SUPPLY / 4;
    config.genesis_allocations =
        vec![(AccountKey::User(investor.to_string()), quarter), (AccountKey::Treasury, GENESIS_SUPPLY - quarter)];
    let coordinator = herd_coordinator::start(config).await.unwrap();
    let ledger = books(&coordinator.url()).await;
    assert_eq!(ledger.balance(&AccountKey::User(investor.to_string()), Asset::Io), i128::from(quarter));
    assert_eq!(
        ledger.balance(&AccountKey::Issuance, Asset::Io),
        -i128::from(GENESIS_SUPPLY + EMISSION_TOTAL),
        "800M minted"
    );
    coordinator.shutdown().await;
}
