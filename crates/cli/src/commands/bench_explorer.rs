//! `herd bench explorer`: how long every explorer and console page takes on a large network.
//! The network is simulated devices imported straight into a fresh database (a real hello and
//! proof per device would take an hour for 100,000), all of one supplier, plus a few real
//! leases; then each page is fetched several times over loopback and timed, against the
//! 200 ms target. Console pages are fetched signed in (customer and that supplier), through
//! the same one-time sign-in link `herd account login --browser` uses.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use ed25519_dalek::SigningKey;
use herd_coordinator::store::{ImportedDevice, Store};
use herd_core::{ClusterKind, Timestamp};
use herd_proto::api::{CreateCluster, Deposit};
use herd_proto::signing::PURPOSE_BROWSER;
use rand::rngs::OsRng;
use serde::Serialize;

use super::Context;
use crate::client::Client;
use crate::credentials::{sign_challenge, sign_in};
use crate::output::{print_json, table};

const TARGET_MS: f64 = 200.0;
/// Rows per import transaction.
const IMPORT_BATCH: usize = 10_000;

#[derive(Debug, Args)]
pub struct ExplorerArgs {
    /// Simulated devices on the network.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(10..=1_000_000))]
    devices: u64,
    /// Requests per page (after one untimed warm-up).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
}

#[derive(Debug, Serialize)]
struct PageFigure {
    page: String,
    median_ms: f64,
    max_ms: f64,
    bytes: usize,
}

#[derive(Debug, Serialize)]
struct Figures {
    devices: u64,
    import_s: f64,
    pages: Vec<PageFigure>,
    /// The slowest page's median over the 200 ms target.
    worst_vs_target: f64,
}

pub async fn run(context: &Context, args: &ExplorerArgs) -> anyhow::Result<i32> {
    let dir = std::env::temp_dir().join(format!("herd-bench-explorer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).context("bench directory")?;
    let db = format!("sqlite://{}", dir.join("herd.db").display());
    let result = measure(&db, args).await;
    let _ = std::fs::remove_dir_all(&dir);
    let figures = result?;
    if context.json {
        print_json(&figures);
    } else {
        let rows: Vec<Vec<String>> = figures
            .pages
            .iter()
            .map(|p| {
                vec![p.page.clone(), format!("{:.1}", p.median_ms), format!("{:.1}", p.max_ms), p.bytes.to_string()]
            })
            .collect();
        crate::outln!("{}", table(&["PAGE", "MEDIAN (ms)", "MAX (ms)", "BYTES"], &rows));
        crate::outln!(
            "{} simulated devices (imported in {:.1} s); slowest page {:.2}× the {TARGET_MS} ms target",
            figures.devices,
            figures.import_s,
            figures.worst_vs_target
        );
    }
    Ok(0)
}

async fn measure(db: &str, args: &ExplorerArgs) -> anyhow::Result<Figures> {
    // The network: a supplier with every simulated machine, imported in batches.
    let supplier_key = SigningKey::generate(&mut OsRng);
    let supplier = herd_worker::keys::address_of(&supplier_key);
    let imported = Instant::now();
    {
        let store = Store::open(db).await.context("opening the database")?;
        let at = Timestamp(now_ms());
        store.register_account(&supplier, &format!("bench-{supplier}"), at).await?;
        let fleet = herd_sim::fleet(7, args.devices as usize);
        for (batch, machines) in fleet.chunks(IMPORT_BATCH).enumerate() {
            let devices: Vec<ImportedDevice> = machines
                .iter()
                .enumerate()
                .map(|(i, machine)| {
                    let n = (batch * IMPORT_BATCH + i) as u64;
                    let mut key = [9u8; 32];
                    key[..8].copy_from_slice(&n.to_le_bytes());
                    ImportedDevice {
                        id: herd_core::Address::from_public_key(&key),
                        owner: supplier.clone(),
                        country: machine.country.clone(),
                        spec: machine.spec.clone(),
                    }
                })
                .collect();
            store.import_simulated(&devices, at).await?;
        }
        store.close().await;
    }
    let import_s = imported.elapsed().as_secs_f64();
    let mut config = herd_coordinator::CoordinatorConfig::new(db, "127.0.0.1:0".parse().expect("an address"));
    config.faucet = true;
    config.proof.simulated_allowed = true;
    let coordinator = herd_coordinator::start(config).await.context("starting the coordinator")?;
    let url = coordinator.url();
    let result = time_pages(&url, &supplier_key, args).await;
    coordinator.shutdown().await;
    let pages = result?;
    let worst = pages.iter().map(|p| p.median_ms).fold(0.0, f64::max);
    Ok(Figures { devices: args.devices, import_s, pages, worst_vs_target: worst / TARGET_MS })
}

/// A console session for the key's account: the `Cookie` header to send.
async fn session(url: &str, key: &SigningKey) -> anyhow::Result<String> {
    let public = Client::new(url, None);
    let challenge = public.challenge(&herd_worker::keys::address_of(key), PURPOSE_BROWSER).await?;
    let link = public.browser_link(&sign_challenge(key, PURPOSE_BROWSER, challenge.nonce)).await?;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let response = http.post(format!("{url}{}", link.path)).send().await?;
    let cookie = response
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|c| c.to_str().ok())
        .and_then(|c| c.split(';').next())
        .context("the sign-in link set no session cookie")?;
    Ok(cookie.to_owned())
}

async fn time_pages(url: &str, supplier_key: &SigningKey, args: &ExplorerArgs) -> anyhow::Result<Vec<PageFigure>> {
    let public = Client::new(url, None);
    let customer_key = SigningKey::generate(&mut OsRng);
    let (credential, _) = sign_in(&public, &customer_key).await.context("customer account")?;
    let customer = Client::new(url, Some(credential.api_key));
    let funds = Deposit { asset: herd_core::Asset::Usdc, amount: "100000".into(), id: None };
    customer.deposit(&funds).await.context("customer funds")?;
    let mut cluster = None;
    for _ in 0..5 {
        let request = CreateCluster {
            nodes: 4,
            gpu: Some("RTX 4090".into()),
            hours: Some(1),
            kind: Some(ClusterKind::Plain),
            ..Default::default()
        };
        cluster = Some(customer.create_cluster(&request).await.context("leasing a cluster")?);
    }
    let cluster = cluster.expect("five leases");
    let device = cluster.nodes[0].device_id.clone();
    let customer_session = session(url, &customer_key).await?;
    let supplier_session = session(url, supplier_key).await?;
    let pages = [
        ("/explorer".to_owned(), None),
        ("/explorer/devices".to_owned(), None),
        ("/explorer/devices?state=ready&model=H100&country=US".to_owned(), None),
        ("/explorer/devices?tier=none&page=500".to_owned(), None),
        (format!("/explorer/devices/{device}"), None),
        ("/explorer/clusters".to_owned(), None),
        (format!("/explorer/clusters/{}", cluster.id), None),
        ("/explorer/rewards".to_owned(), None),
        ("/explorer/staking".to_owned(), None),
        ("/explorer/ledger".to_owned(), None),
        ("/console".to_owned(), Some(&customer_session)),
        ("/console/clusters".to_owned(), Some(&customer_session)),
        (format!("/console/clusters/{}", cluster.id), Some(&customer_session)),
        ("/console/wallet".to_owned(), Some(&customer_session)),
        ("/console/devices".to_owned(), Some(&supplier_session)),
        (format!("/console/devices?page={}", args.devices.saturating_sub(1) / 500), Some(&supplier_session)),
    ];
    // No redirects: a console page that sent us to sign in must fail, not time the sign-in page.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let mut figures = Vec::new();
    for (page, session) in pages {
        let mut times = Vec::new();
        let mut bytes = 0;
        for run in 0..=args.runs {
            let started = Instant::now();
            let mut request = http.get(format!("{url}{page}"));
            if let Some(cookie) = session {
                request = request.header(reqwest::header::COOKIE, cookie.as_str());
            }
            let response = request.send().await?;
            anyhow::ensure!(response.status().is_success(), "{page}: {}", response.status());
            bytes = response.bytes().await?.len();
            if run > 0 {
                times.push(started.elapsed());
            }
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        figures.push(PageFigure {
            page,
            median_ms: ms(times[times.len() / 2]),
            max_ms: ms(*times.last().expect("at least one run")),
            bytes,
        });
    }
    Ok(figures)
}

#[allow(clippy::disallowed_methods)] // the bench's one reading of the wall clock
fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as i64
}
