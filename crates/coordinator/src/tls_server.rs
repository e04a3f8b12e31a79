//! Serving HTTPS directly (`--tls-cert`, `--tls-key`), for a network without a TLS proxy in
//! front: rustls (ring provider, TLS 1.2 and 1.3, HTTP/1.1 by ALPN) terminates each
//! connection and hands it to the same router as plain serving. Requests served this way
//! carry `X-Forwarded-Proto: https` (whatever the client sent), so the consoles' cookies are
//! `Secure` exactly as behind a proxy, and `ConnectInfo` for the rate limits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::HeaderValue;
use axum::Router;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

/// A TLS handshake that takes longer is dropped (a slow client must not hold a task).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate chain and private key files, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read the TLS certificate chain {path}: {detail}")]
    Cert { path: String, detail: String },
    #[error("cannot read the TLS private key {path}: {detail}")]
    Key { path: String, detail: String },
    #[error("the TLS certificate and key do not go together: {0}")]
    Config(String),
}

/// The server configuration from the files, checked before anything is served.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let shown = |path: &Path| path.display().to_string();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| TlsSetupError::Cert { path: shown(&files.cert), detail: e.to_string() })?;
    if chain.is_empty() {
        return Err(TlsSetupError::Cert { path: shown(&files.cert), detail: "no PEM certificate in it".into() });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| TlsSetupError::Key { path: shown(&files.key), detail: e.to_string() })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsSetupError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts connections until shutdown; each is served on its own task and, at shutdown,
/// finishes the request in flight.
pub async fn serve(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let mut stop = shutdown.clone();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => return,
        };
        let (acceptor, router, mut stop) = (acceptor.clone(), router.clone(), shutdown.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let mut request = request.map(axum::body::Body::new);
                request.extensions_mut().insert(ConnectInfo(peer));
                request.headers_mut().insert("x-forwarded-proto", HeaderValue::from_static("https"));
                router.clone().oneshot(request)
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stopped(&mut stop) => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
}

/// Resolves once shutdown is asked for (or the sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
