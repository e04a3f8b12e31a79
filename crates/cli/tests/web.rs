//! The explorer in a real browser: headless Chromium driven through chromedriver (WebDriver)
//! against a running network with simulated suppliers and a leased cluster. Every page
//! renders with the network's data, links lead where they say, and a screenshot of each page
//! is written to `target/tmp/screenshots/` (the CI's artifacts).
//!
//! The browser comes from Debian (`chromium`, `chromium-driver`); the test installs them when
//! they are missing and it may (root with apt). `HERD_SKIP_BROWSER_TESTS=1` is the only way to
//! skip it, and it says so.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use herd_core::ClusterKind;
use herd_proto::api::CreateCluster;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Installs Debian's Chromium and its driver if they are missing; false if the test must skip.
fn browser_available() -> bool {
    if std::env::var_os("HERD_SKIP_BROWSER_TESTS").is_some() {
        eprintln!("HERD_SKIP_BROWSER_TESTS is set: skipping the browser test");
        return false;
    }
    if std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists() {
        return true;
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get").args(args).env("DEBIAN_FRONTEND", "noninteractive").status().is_ok_and(|s| s.success())
    };
    assert!(
        apt(&["update", "-qq"]) && apt(&["install", "-y", "-qq", "chromium", "chromium-driver"]),
        "Chromium and chromedriver are missing and could not be installed with apt-get \
         (install `chromium chromium-driver`, or set HERD_SKIP_BROWSER_TESTS=1 to skip)"
    );
    true
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn browser() -> (Driver, Browser) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver(driver);
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let client = eventually("chromedriver to accept a session", Duration::from_secs(30), || async {
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities.clone())
            .connect(&url)
            .await
            .ok()
    })
    .await;
    (driver, client)
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Opens `path`, checks its heading, saves a screenshot, returns the page's text.
async fn visit(browser: &Browser, base: &str, path: &str, heading: &str, shot: &str) -> String {
    browser.goto(&format!("{base}{path}")).await.unwrap();
    let h1 = browser.find(Locator::Css("h1")).await.unwrap().text().await.unwrap();
    assert!(h1.starts_with(heading), "{path}: heading {h1:?}, expected {heading:?}");
    let png = browser.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{shot}.png")), png).unwrap();
    browser.find(Locator::Css("main")).await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explorer_shows_the_network_in_a_real_browser() {
    if !browser_available() {
        return;
    }
    let network = TestNetwork::start(0).await;
    let key = network.supplier_key.clone();
    let mut rigs = Vec::new();
    for (i, (gpu, country)) in
        [("NVIDIA H100 80GB HBM3", "US"), ("NVIDIA H100 80GB HBM3", "DE"), ("NVIDIA GeForce RTX 4090", "JP")]
            .iter()
            .enumerate()
    {
        rigs.push(rig(&network, &key, &format!("rig-{i}"), gpu, 8, country, (2000, 1500)));
    }
    devices_in_state(&network.url, &network.supplier, herd_core::DeviceState::Ready, 3).await;
    let (_, customer) = new_account(&network.url).await;
    let request = CreateCluster {
        nodes: 2,
        gpu: Some("H100".into()),
        gpus_per_node: Some(8),
        hours: Some(2),
        kind: Some(ClusterKind::Plain),
        ..Default::default()
    };
    let cluster = customer.create_cluster(&request).await.unwrap();

    let (_driver, browser) = browser().await;
    let base = network.url.clone();
    let overview = visit(&browser, &base, "/explorer", "The network", "explorer-overview").await;
    assert!(overview.contains("devices online"), "{overview}");
    assert!(overview.contains("H100"), "market prices list the model: {overview}");
    assert!(overview.contains("simulated devices"), "{overview}");

    let devices = visit(&browser, &base, "/explorer/devices", "Devices", "explorer-devices").await;
    assert_eq!(devices.matches("simulated").count(), 3, "every simulated device is marked: {devices}");
    // Filtering by state through the form keeps the two hired devices.
    browser.goto(&format!("{base}/explorer/devices?state=hired")).await.unwrap();
    let rows = browser.find_all(Locator::Css("main tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 2);

    // A device's page, reached by its link.
    browser.find(Locator::Css("main tbody tr a")).await.unwrap().click().await.unwrap();
    let device = browser.find(Locator::Css("main")).await.unwrap().text().await.unwrap();
    assert!(device.contains("Leased to") && device.contains(cluster.id.as_str()), "{device}");
    assert!(device.contains("Proofs of compute") && device.contains("passed"), "{device}");
    std::fs::write(screenshots().join("explorer-device.png"), browser.screenshot().await.unwrap()).unwrap();

    let clusters = visit(&browser, &base, "/explorer/clusters", "Clusters", "explorer-clusters").await;
    assert!(clusters.contains(cluster.id.as_str()), "{clusters}");
    browser.find(Locator::LinkText(cluster.id.as_str())).await.unwrap().click().await.unwrap();
    let page = browser.find(Locator::Css("main")).await.unwrap().text().await.unwrap();
    assert!(page.contains("2 × 8×H100") && page.contains("Transactions"), "{page}");
    assert!(page.contains("lease-hold"), "the hold is a public transaction: {page}");
    std::fs::write(screenshots().join("explorer-cluster.png"), browser.screenshot().await.unwrap()).unwrap();

    visit(&browser, &base, "/explorer/rewards", "Block rewards", "explorer-rewards").await;
    visit(&browser, &base, "/explorer/staking", "Staking", "explorer-staking").await;
    let ledger = visit(&browser, &base, "/explorer/ledger", "The ledger", "explorer-ledger").await;
    assert!(ledger.contains("Chain head") && ledger.contains("faucet"), "{ledger}");

    // An unknown device is a page that says so, with a 404.
    browser.goto(&format!("{base}/explorer/devices/11111111111111111111111111111111")).await.unwrap();
    let missing = browser.find(Locator::Css("main")).await.unwrap().text().await.unwrap();
    assert!(missing.contains("404") && missing.contains("no device"), "{missing}");
    let status = reqwest::get(format!("{base}/explorer/devices/nope")).await.unwrap().status();
    assert_eq!(status.as_u16(), 404);
    let bad = reqwest::get(format!("{base}/explorer/devices?state=sleeping")).await.unwrap();
    assert_eq!(bad.status().as_u16(), 400);

    browser.close().await.unwrap();
    customer.delete_cluster(cluster.id.as_str()).await.unwrap();
    for rig in rigs {
        rig.stop().await;
    }
    network.stop().await;
}
