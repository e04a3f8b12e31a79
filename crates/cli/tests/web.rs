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
    if let Err(error) = install::apt_install(&[CHROMIUM, CHROMEDRIVER], &["chromium", "chromium-driver"]) {
        panic!(
            "Chromium and chromedriver are missing and could not be installed: {error} \
             (install `chromium chromium-driver`, or set HERD_SKIP_BROWSER_TESTS=1 to skip)"
        );
    }
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
    // One device staked fully (8 × H100: 200 IO × 10.00 × 8), one only partly.
    let funds = herd_proto::api::Deposit { asset: herd_core::Asset::Io, amount: "20000".into(), id: None };
    network.supplier_client.deposit(&funds).await.unwrap();
    let staked = |rank: usize| cluster.nodes[rank].device_id.to_string();
    let full = network.supplier_client.add_stake(&staked(0), "16000").await.unwrap();
    assert!(full.meets_minimum);
    network.supplier_client.add_stake(&staked(1), "10").await.unwrap();

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
    let staking = visit(&browser, &base, "/explorer/staking", "Staking", "explorer-staking").await;
    assert!(staking.contains("16,010.00 IO") && staking.contains("staked in total"), "{staking}");
    assert!(staking.contains("1\nfully staked"), "one of the two stakes meets its minimum: {staking}");
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

/// Runs the CLI with its own config directory; its stdout.
fn herd_cli(config: &std::path::Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(args)
        .env("HERD_CONFIG_DIR", config)
        .env_remove("HERD_COORDINATOR")
        .output()
        .expect("herd runs");
    assert!(output.status.success(), "herd {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn main_text(browser: &Browser) -> String {
    browser.find(Locator::Css("main")).await.unwrap().text().await.unwrap()
}

/// The page's main text once it contains `needle` (a click's navigation may still be on its way).
async fn wait_for_text(browser: &Browser, needle: &str) -> String {
    eventually(&format!("{needle:?} on the page"), Duration::from_secs(15), || async {
        let text = browser.find(Locator::Css("main")).await.ok()?.text().await.ok()?;
        text.contains(needle).then_some(text)
    })
    .await
}

async fn wait_for_path(browser: &Browser, path: &str) {
    eventually(&format!("the browser at {path}"), Duration::from_secs(15), || async {
        (browser.current_url().await.ok()?.path() == path).then_some(())
    })
    .await
}

async fn shot(browser: &Browser, name: &str) {
    std::fs::write(screenshots().join(format!("{name}.png")), browser.screenshot().await.unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consoles_sign_in_create_a_cluster_and_explain_earnings() {
    if !browser_available() {
        return;
    }
    let network = TestNetwork::start(0).await;
    let base = network.url.clone();
    let mut rigs = Vec::new();
    for (i, country) in ["US", "DE", "FR"].iter().enumerate() {
        rigs.push(rig(
            &network,
            &network.supplier_key,
            &format!("rig-{i}"),
            "NVIDIA H100 80GB HBM3",
            8,
            country,
            (2000, 1500),
        ));
    }
    devices_in_state(&base, &network.supplier, herd_core::DeviceState::Ready, 3).await;
    // A customer; a second API key of theirs is what they paste into the browser.
    let (customer_key, customer) = new_account(&base).await;
    let (credential, _) =
        herd_cli::credentials::sign_in(&herd_cli::client::Client::new(&base, None), &customer_key).await.unwrap();

    let (_driver, browser) = browser().await;
    // Signed out, a console page sends the visitor to sign in, and back afterwards.
    browser.goto(&format!("{base}/console/clusters")).await.unwrap();
    let url = browser.current_url().await.unwrap();
    assert_eq!(url.path(), "/console/login", "signed-out visitors cannot reach console pages");
    assert_eq!(url.query(), Some("next=%2Fconsole%2Fclusters"));
    shot(&browser, "console-sign-in").await;
    for path in ["/console", "/console/devices", "/console/wallet", "/console/clusters/new"] {
        let response = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let status = response.get(format!("{base}{path}")).send().await.unwrap().status();
        assert_eq!(status.as_u16(), 303, "{path} without a session");
    }

    let key_field = browser.find(Locator::Id("api_key")).await.unwrap();
    key_field.send_keys("herd_not-a-real-key").await.unwrap();
    browser.find(Locator::Css("form[action='/console/login'] button")).await.unwrap().click().await.unwrap();
    wait_for_text(&browser, "Unknown API key").await;
    browser.find(Locator::Id("api_key")).await.unwrap().send_keys(&credential.api_key).await.unwrap();
    browser.find(Locator::Css("form[action='/console/login'] button")).await.unwrap().click().await.unwrap();
    wait_for_path(&browser, "/console/clusters").await;
    let cookie = browser.get_named_cookie("herd_session").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true), "scripts cannot read the session");
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Lax)");

    // A cluster from the form: the live quote appears while filling it in.
    browser.find(Locator::LinkText("New cluster")).await.unwrap().click().await.unwrap();
    let nodes = browser.find(Locator::Id("nodes")).await.unwrap();
    nodes.clear().await.unwrap();
    nodes.send_keys("2").await.unwrap();
    browser.find(Locator::Css("#gpu option[value='H100']")).await.unwrap().click().await.unwrap();
    browser.find(Locator::Id("gpus_per_node")).await.unwrap().send_keys("8").await.unwrap();
    browser.find(Locator::Css("#kind option[value='plain']")).await.unwrap().click().await.unwrap();
    let quote = eventually("the live quote", Duration::from_secs(10), || async {
        let text = browser.find(Locator::Id("quote")).await.ok()?.text().await.ok()?;
        text.contains("2 × 8×H100").then_some(text)
    })
    .await;
    assert!(quote.contains("per hour") && quote.contains("reservation fee"), "{quote}");
    shot(&browser, "console-new-cluster").await;
    browser.find(Locator::Css("button[value='create']")).await.unwrap().click().await.unwrap();
    let page = wait_for_text(&browser, "Cluster cl-").await;
    assert!(page.contains("running"), "{page}");
    let clusters = customer.clusters(false).await.unwrap();
    assert_eq!(clusters.len(), 1, "the form created exactly one cluster");
    let cluster = &clusters[0];
    assert_eq!(cluster.nodes.len(), 2);
    shot(&browser, "console-cluster").await;
    browser
        .find(Locator::Css("nav[aria-label='Console'] a[href='/console/clusters']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_path(&browser, "/console/clusters").await;
    wait_for_text(&browser, cluster.id.as_str()).await;

    // A job's output, and the wallet's record of the hold.
    let job = customer
        .create_job(&herd_proto::api::CreateJob {
            cluster_id: cluster.id.clone(),
            command: vec!["sh".into(), "-c".into(), "echo hello from the console".into()],
            env: Default::default(),
            image: None,
            limits: Default::default(),
            kind: herd_core::JobKind::Command,
            runtime_env: None,
            max_retries: 0,
        })
        .await
        .unwrap();
    browser.goto(&format!("{base}/console/jobs/{}", job.id)).await.unwrap();
    // The command itself is on the page too: wait for the output lines, one from each node.
    eventually("a line of output from each node", Duration::from_secs(15), || async {
        let text = browser.find(Locator::Css("pre.log")).await.ok()?.text().await.ok()?;
        (text.contains("[0] hello from the console") && text.contains("[1] hello from the console")).then_some(())
    })
    .await;
    let jobs = visit(&browser, &base, "/console/jobs", "Jobs", "console-jobs").await;
    assert!(jobs.contains(job.id.as_str()) && jobs.contains(cluster.id.as_str()), "{jobs}");
    let wallet = visit(&browser, &base, "/console/wallet", "Wallet", "console-wallet").await;
    assert!(wallet.contains("lease-hold") && wallet.contains("faucet"), "{wallet}");

    // Forms only work from our pages: another origin, or a missing token, is refused.
    let session = format!("herd_session={}", cookie.value());
    let post = |origin: &'static str, body: &'static str| {
        let url = format!("{base}/console/clusters/{}/terminate", cluster.id);
        let session = session.clone();
        async move {
            reqwest::Client::new()
                .post(url)
                .header("cookie", session)
                .header("origin", origin)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(post("http://evil.example", "csrf=x").await, 403);
    assert_eq!(post("null", "csrf=x").await, 403);
    let origin: &'static str = Box::leak(base.clone().into_boxed_str());
    assert_eq!(post(origin, "csrf=wrong").await, 403);
    assert_eq!(customer.clusters(false).await.unwrap().len(), 1, "still running");

    // Terminating from the cluster's page asks first, then ends the lease.
    browser.goto(&format!("{base}/console/clusters/{}", cluster.id)).await.unwrap();
    browser.find(Locator::Css("button.danger")).await.unwrap().click().await.unwrap();
    let question = browser.get_alert_text().await.unwrap();
    assert!(question.contains(cluster.id.as_str()), "{question}");
    browser.accept_alert().await.unwrap();
    let ended = wait_for_text(&browser, "Ended").await;
    assert!(ended.contains("terminated") && ended.contains("deleted by its owner"), "{ended}");
    assert!(customer.clusters(false).await.unwrap().is_empty(), "the lease ended");

    // Sign out: the session is gone on the server too.
    browser.find(Locator::Css("form[action='/console/logout'] button")).await.unwrap().click().await.unwrap();
    wait_for_path(&browser, "/explorer").await;
    let status = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{base}/console"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 303, "a signed-out session is refused");

    // A supplier signs in with the one-time link from the CLI and sees why their new device
    // is not earning yet.
    let config = network.dir.path().join("supplier-cli");
    herd_cli(&config, &["--coordinator", &base, "account", "create"]);
    let supplier_key = herd_keys::load(&config.join("account.key")).unwrap();
    let supplier = herd_keys::address_of(&supplier_key);
    let worker = start_worker(&base, &network.dir.path().join("supplier-worker"), &supplier_key);
    devices_in_state(&base, &supplier, herd_core::DeviceState::Ready, 1).await;
    // `--open` hands the link to the desktop's opener: a stand-in xdg-open records it.
    let bin = network.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let opened = network.dir.path().join("opened");
    let opener = bin.join("xdg-open");
    std::fs::write(&opener, format!("#!/bin/sh\necho \"$1\" > {}\n", opened.display())).unwrap();
    std::fs::set_permissions(&opener, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let output = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(["--coordinator", &base, "--json", "account", "login", "--browser", "--open"])
        .env("HERD_CONFIG_DIR", &config)
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let link: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let link = link["url"].as_str().unwrap().to_owned();
    assert_eq!(std::fs::read_to_string(&opened).unwrap().trim(), link, "the opener got the link");
    assert!(link.starts_with(&format!("{base}/console/login/")), "{link}");
    browser.goto(&link).await.unwrap();
    let confirm = main_text(&browser).await;
    assert!(confirm.contains(supplier.as_str()), "the link says whose account it is: {confirm}");
    browser.find(Locator::Css("main form button")).await.unwrap().click().await.unwrap();
    wait_for_path(&browser, "/console").await;
    let devices = visit(&browser, &base, "/console/devices", "Your devices", "console-devices").await;
    assert!(devices.contains("not earning"), "{devices}");
    assert!(devices.contains("less than 5 h of continuous uptime"), "{devices}");
    assert!(devices.contains("below the minimum stake") && devices.contains("herd stake add"), "{devices}");
    browser.goto(&format!("{base}/console/devices?page=two")).await.unwrap();
    wait_for_text(&browser, "page must be a whole number").await;
    // The link was used up.
    browser.goto(&link).await.unwrap();
    wait_for_text(&browser, "unknown, expired or already used").await;

    browser.close().await.unwrap();
    worker.stop().await;
    customer.delete_cluster(cluster.id.as_str()).await.unwrap();
    for rig in rigs {
        rig.stop().await;
    }
    network.stop().await;
}
