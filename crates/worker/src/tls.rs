//! TLS for everything that talks to a coordinator (the agent's WebSocket and speed test, the
//! CLI's API client): rustls with the ring provider, the Mozilla roots from `webpki-roots`,
//! plus the certificates in the PEM file `HERD_CA_CERT` names — a private network's own CA,
//! or a test's. One configuration, built once per process.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// Names a PEM file of extra trusted CA certificates.
pub const CA_CERT_ENV: &str = "HERD_CA_CERT";

#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the CA certificates in {path} ({CA_CERT_ENV}): {detail}")]
    CaFile { path: String, detail: String },
    #[error("{path} ({CA_CERT_ENV}) holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("TLS setup failed: {0}")]
    Setup(String),
}

/// The process's TLS client configuration (built on first use from `HERD_CA_CERT`).
pub fn client_config() -> Result<Arc<ClientConfig>, TlsError> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, TlsError>> = OnceLock::new();
    CONFIG.get_or_init(|| build(std::env::var_os(CA_CERT_ENV).as_deref().map(Path::new))).clone()
}

/// A configuration trusting the public roots and, if given, the PEM file's certificates.
pub fn build(extra_ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = extra_ca {
        let shown = path.display().to_string();
        let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect::<Result<_, _>>())
            .map_err(|e| TlsError::CaFile { path: shown.clone(), detail: e.to_string() })?;
        if certificates.is_empty() {
            return Err(TlsError::NoCertificate { path: shown });
        }
        for certificate in certificates {
            roots.add(certificate).map_err(|e| TlsError::CaFile { path: shown.clone(), detail: e.to_string() })?;
        }
    }
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// An HTTP client that speaks TLS with this configuration.
pub fn http_client(builder: reqwest::ClientBuilder) -> Result<reqwest::Client, TlsError> {
    let config = Arc::unwrap_or_clone(client_config()?);
    builder.use_preconfigured_tls(config).build().map_err(|e| TlsError::Setup(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_roots_are_trusted_and_a_bad_ca_file_is_a_clear_error() {
        assert!(build(None).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let error = build(Some(&missing)).unwrap_err().to_string();
        assert!(error.starts_with("cannot read the CA certificates in ") && error.contains("HERD_CA_CERT"), "{error}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        assert!(matches!(build(Some(&empty)), Err(TlsError::NoCertificate { .. })));
    }
}
