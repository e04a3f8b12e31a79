//! The market through the API: quotes that hold their price, atomic reservation under
//! concurrent requests, refusals that explain themselves, prices that follow supply.

mod common;

use std::time::Duration;

use common::*;
use ed25519_dalek::SigningKey;
use herd_core::{Asset, ClusterKind, ConnectivityTier, DeviceState};
use herd_proto::api::CreateCluster;

fn h100(nodes: u32, per_node: u32) -> CreateCluster {
    CreateCluster {
        nodes,
        gpu: Some("H100".into()),
        gpus_per_node: Some(per_node),
        kind: Some(ClusterKind::Plain),
        ..Default::default()
    }
}

async fn market_network() -> (TestNetwork, SigningKey, Vec<Worker>) {
    let network = TestNetwork::start(0).await;
    let (supplier_key, _) = new_account(&network.url).await;
    let rigs = vec![
        rig(&network, &supplier_key, "us-1", "NVIDIA H100 80GB HBM3", 8, "US", (2000, 1500)),
        rig(&network, &supplier_key, "us-2", "NVIDIA H100 80GB HBM3", 8, "US", (150, 20)),
        rig(&network, &supplier_key, "jp-1", "NVIDIA H100 80GB HBM3", 4, "JP", (900, 700)),
    ];
    let supplier = herd_worker::keys::address_of(&supplier_key);
    devices_in_state(&network.url, &supplier, DeviceState::Ready, 3).await;
    (network, supplier_key, rigs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quote_holds_its_price_once_and_breaks_out_fees() {
    let (network, _, rigs) = market_network().await;
    let (_, customer) = new_account(&network.url).await;
    let request = CreateCluster { hours: Some(10), asset: Some(Asset::Usdc), ..h100(1, 8) };
    let quote = customer.quote(&request).await.unwrap();
    assert_eq!(quote.nodes.len(), 1);
    assert_eq!(quote.nodes[0].gpus, 8);
    assert_eq!(quote.per_hour_micros, quote.nodes[0].unit_price_micros * 8);
    assert_eq!(quote.subtotal_micros, quote.per_hour_micros * 10);
    assert_eq!(quote.reservation_fee_micros, (quote.subtotal_micros * 25 + 5_000) / 10_000);
    assert_eq!(quote.payment_fee_micros, (quote.subtotal_micros * 200 + 5_000) / 10_000);
    assert_eq!(quote.total_micros, quote.subtotal_micros + quote.reservation_fee_micros + quote.payment_fee_micros);

    let redeem = CreateCluster { quote_id: Some(quote.id.clone()), ..Default::default() };
    let cluster = customer.create_cluster(&redeem).await.unwrap();
    assert_eq!(cluster.price_per_hour_micros, quote.per_hour_micros);
    assert_eq!(cluster.nodes[0].device_id, quote.nodes[0].device_id, "the quoted device was still free");
    let again = customer.create_cluster(&redeem).await.unwrap_err();
    assert_eq!(again.status().unwrap().as_u16(), 404, "a quote is single use: {again}");

    let (_, stranger) = new_account(&network.url).await;
    let other = stranger.quote(&h100(1, 1)).await.unwrap();
    let foreign = CreateCluster { quote_id: Some(other.id), ..Default::default() };
    assert_eq!(customer.create_cluster(&foreign).await.unwrap_err().status().unwrap().as_u16(), 404);
    for rig in rigs {
        rig.stop().await;
    }
    network.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_get_the_same_device() {
    let (network, _, rigs) = market_network().await;
    let (_, alice) = new_account(&network.url).await;
    let (_, bob) = new_account(&network.url).await;
    // Two 8-GPU machines: three concurrent requests for one each.
    let request = h100(1, 8);
    let (a, b, c) =
        tokio::join!(alice.create_cluster(&request), bob.create_cluster(&request), alice.create_cluster(&request));
    let won: Vec<_> = [a, b, c].into_iter().filter_map(Result::ok).collect();
    assert_eq!(won.len(), 2, "two machines, two winners");
    assert_ne!(won[0].nodes[0].device_id, won[1].nodes[0].device_id);
    let client = herd_cli::client::Client::new(&network.url, None);
    let hired = client.devices("state=hired").await.unwrap();
    assert_eq!(hired.len(), 2);
    for rig in rigs {
        rig.stop().await;
    }
    network.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_explain_and_tiers_filter() {
    let (network, _, rigs) = market_network().await;
    let (_, customer) = new_account(&network.url).await;

    let in_japan = CreateCluster { country: Some("JP".into()), ..h100(1, 8) };
    let error = customer.create_cluster(&in_japan).await.unwrap_err();
    assert_eq!(error.status().unwrap().as_u16(), 409);
    let text = error.to_string();
    assert!(text.starts_with("no 1 × 8×H100 in JP: 0 free after the location filter"), "{text}");
    assert!(text.contains("8×H100 elsewhere: 2 in US"), "{text}");
    assert!(text.contains("1 × 4×H100 in JP"), "{text}");

    let error = customer.create_cluster(&h100(1, 16)).await.unwrap_err();
    assert_eq!(error.status().unwrap().as_u16(), 422);
    assert!(error.to_string().contains("at most 8"), "{error}");

    // The slow US machine (150/20 Mbit/s: low) is skipped for a high-tier request.
    let fast = CreateCluster { connectivity: Some(ConnectivityTier::High), ..h100(2, 8) };
    let error = customer.create_cluster(&fast).await.unwrap_err();
    assert!(error.to_string().contains("1 free after the connectivity-tier filter"), "{error}");
    let one_fast = CreateCluster { connectivity: Some(ConnectivityTier::High), ..h100(1, 8) };
    let cluster = customer.create_cluster(&one_fast).await.unwrap();
    let device =
        herd_cli::client::Client::new(&network.url, None).device(cluster.nodes[0].device_id.as_str()).await.unwrap();
    assert_eq!(device.device.connectivity, ConnectivityTier::Ultra);

    let ceiling = CreateCluster { max_price_per_gpu_hour: Some("0.01".into()), ..h100(1, 4) };
    let error = customer.create_cluster(&ceiling).await.unwrap_err();
    assert!(error.to_string().contains("price ceiling"), "{error}");
    for rig in rigs {
        rig.stop().await;
    }
    network.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prices_show_supply_and_use() {
    let (network, _, rigs) = market_network().await;
    let (_, customer) = new_account(&network.url).await;
    let client = herd_cli::client::Client::new(&network.url, None);
    let h100_row = |prices: Vec<herd_proto::api::MarketPrice>| prices.into_iter().find(|p| p.model == "H100").unwrap();
    let before = h100_row(client.market_prices().await.unwrap());
    assert_eq!((before.devices_online, before.devices_idle, before.gpus_online), (3, 3, 20));
    assert!(before.price_micros > 0);
    customer.create_cluster(&h100(1, 8)).await.unwrap();
    let after = eventually("the lease to show in prices", Duration::from_secs(5), || async {
        let row = h100_row(client.market_prices().await.ok()?);
        (row.devices_hired == 1).then_some(row)
    })
    .await;
    assert_eq!((after.gpus_hired, after.utilisation_permille), (8, 400));
    for rig in rigs {
        rig.stop().await;
    }
    network.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_workers_measure_their_connectivity() {
    let network = TestNetwork::start(1).await;
    let client = herd_cli::client::Client::new(&network.url, None);
    let device = eventually("the throughput test", Duration::from_secs(20), || async {
        let device = client.devices("").await.ok()?.remove(0);
        (device.connectivity != ConnectivityTier::None).then_some(device)
    })
    .await;
    // Loopback is far faster than any tier threshold.
    assert!(device.connectivity >= ConnectivityTier::Medium, "{:?}", device.connectivity);
    // Tokens are single use per direction.
    let reused = reqwest::get(format!("{}/v1/worker/speedtest/not-a-token/download", network.url)).await.unwrap();
    assert_eq!(reused.status().as_u16(), 401);
    network.stop().await;
}
