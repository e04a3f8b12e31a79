//! A coordinator reached over TLS, as production runs it (behind a TLS-terminating proxy):
//! the CLI speaks HTTPS and the agent dials `wss://`, trusting a private CA through
//! `HERD_CA_CERT`; without it the same certificate is refused.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use common::*;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};

/// A CA and a certificate it signed for `localhost` and 127.0.0.1.
struct Certificates {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn certificates() -> Certificates {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "herd test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let key = rcgen::KeyPair::generate().unwrap();
    let certificate = params.signed_by(&key, &ca, &ca_key).unwrap();
    Certificates {
        ca_pem: ca.pem(),
        cert_pem: certificate.pem(),
        key_pem: key.serialize_pem(),
        chain: vec![certificate.der().clone()],
        key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    }
}

/// Terminates TLS on a loopback port and forwards each connection to `backend` (what nginx
/// or a cloud load balancer does in front of a coordinator); returns the port.
async fn tls_proxy(
    backend: std::net::SocketAddr,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> u16 {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut plain) = TcpStream::connect(backend).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

fn herd(config: &Path, ca: Option<&Path>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herd"));
    command.args(args).env("HERD_CONFIG_DIR", config).env_remove("HERD_COORDINATOR").env_remove("HERD_CA_CERT");
    if let Some(ca) = ca {
        command.env("HERD_CA_CERT", ca);
    }
    command.output().expect("herd runs")
}

fn ok(output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&output.stderr));
    stdout
}

struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Everything a customer and a supplier do, over `url` (HTTPS), trusting `ca`: refused without
/// the CA, then an account, funds, an agent dialling wss:// until its device is ready, a
/// cluster, a job's output, the cluster's end.
async fn use_over_tls(dir: &Path, url: &str, ca_file: &Path) {
    let config = dir.join("config");
    // Without the private CA the certificate is not trusted, and the CLI says so.
    let refused = herd(&config, None, &["--coordinator", url, "account", "create"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("certificate") && stderr.contains("UnknownIssuer"), "{stderr}");
    // A bad CA file is a clear error, not a silent fallback.
    let bad = herd(&config, Some(&dir.join("nope.pem")), &["--coordinator", url, "market", "prices"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot read the CA certificates in"));

    let ca = Some(ca_file);
    let account: serde_json::Value =
        serde_json::from_str(&ok(herd(&config, ca, &["--coordinator", url, "--json", "account", "create"]))).unwrap();
    let owner = account["address"].as_str().unwrap().to_owned();
    ok(herd(&config, ca, &["--coordinator", url, "wallet", "deposit", "--amount", "10"]));

    // The agent dials wss:// (and runs its speed test over HTTPS) with the same CA.
    let _agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_herd"))
            .args(["worker", "start", "--coordinator", url, "--runtime", "process", "--advertise-addr", "127.0.0.1"])
            .arg("--data-dir")
            .arg(dir.join("worker"))
            .env("HERD_CONFIG_DIR", &config)
            .env("HERD_CA_CERT", ca_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    eventually("the agent's device ready", std::time::Duration::from_secs(30), || async {
        let listed = herd(&config, ca, &["--coordinator", url, "--json", "market", "devices", "--state", "ready"]);
        let devices: serde_json::Value = serde_json::from_slice(&listed.stdout).ok()?;
        devices.as_array()?.iter().any(|d| d["owner"] == owner.as_str()).then_some(())
    })
    .await;

    let cluster: serde_json::Value = serde_json::from_str(&ok(herd(
        &config,
        ca,
        &["--coordinator", url, "--json", "cluster", "create", "--cpu", "--nodes", "1", "--type", "plain"],
    )))
    .unwrap();
    let cluster = cluster["id"].as_str().unwrap().to_owned();
    let output =
        ok(herd(&config, ca, &["--coordinator", url, "job", "run", "--cluster", &cluster, "--", "echo", "over-tls"]));
    assert!(output.contains("over-tls"), "{output}");
    ok(herd(&config, ca, &["--coordinator", url, "cluster", "delete", &cluster]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_and_the_agent_reach_a_coordinator_behind_a_tls_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = start_coordinator(&dir.path().join("herd.db"), loopback()).await;
    let certificates = certificates();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &certificates.ca_pem).unwrap();
    let port = tls_proxy(coordinator.addr(), certificates.chain, certificates.key).await;
    use_over_tls(dir.path(), &format!("https://localhost:{port}"), &ca).await;
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_serves_https_itself() {
    let dir = tempfile::tempdir().unwrap();
    let certificates = certificates();
    let (ca, cert, key) = (dir.path().join("ca.pem"), dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&ca, &certificates.ca_pem).unwrap();
    std::fs::write(&cert, &certificates.cert_pem).unwrap();
    std::fs::write(&key, &certificates.key_pem).unwrap();
    // A key that is not the certificate's stops the start with a clear error.
    let mut mismatched = test_config(&dir.path().join("other.db"), loopback());
    std::fs::write(dir.path().join("other-key.pem"), rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
    mismatched.tls = Some(herd_coordinator::TlsFiles { cert: cert.clone(), key: dir.path().join("other-key.pem") });
    let error = herd_coordinator::start(mismatched).await.err().expect("refused").to_string();
    assert!(error.contains("do not go together"), "{error}");

    let mut config = test_config(&dir.path().join("herd.db"), loopback());
    config.tls = Some(herd_coordinator::TlsFiles { cert, key });
    let coordinator = herd_coordinator::start(config).await.unwrap();
    let url = coordinator.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    use_over_tls(dir.path(), &url, &ca).await;
    // Plain HTTP to the HTTPS port gets nowhere.
    let plain = reqwest::get(url.replace("https://", "http://") + "/v1/health").await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    coordinator.shutdown().await;
}
