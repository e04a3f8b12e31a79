//! The coordinator's overlay CA: an Ed25519 key (PEM, mode 0600, refused if others can read
//! it, like every herd key) and its self-signed Nebula CA certificate beside it. Made at the
//! first start; every later start, and every replica reading the same files, signs with the
//! same CA, so certificates issued before a restart stay valid.

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;

use crate::cert::{pem_decode, pem_encode, Certificate, CertificateError, Details, ED25519_PRIVATE_BANNER};

/// How long the CA is valid; hosts' certificates never outlive it.
pub const CA_VALIDITY_SECS: i64 = 10 * 365 * 24 * 3600;
/// Host certificates start this long before they are signed, for clocks a little behind.
pub const CLOCK_SKEW_SECS: i64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("the overlay CA key {path} is accessible by other users (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path}: {source}")]
    Malformed { path: PathBuf, source: CertificateError },
    #[error("the overlay CA certificate {cert} is not signed by the key {key}")]
    Mismatch { cert: PathBuf, key: PathBuf },
}

pub struct Authority {
    key: SigningKey,
    cert: Certificate,
}

/// What a host certificate is for.
#[derive(Debug, Clone)]
pub struct HostRequest<'a> {
    pub name: &'a str,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub groups: Vec<String>,
    pub public_key: [u8; 32],
    pub not_before: i64,
    pub not_after: i64,
}

impl Authority {
    /// Loads the CA at `key_path` (certificate at `key_path` + `.crt`… see `cert_path`),
    /// creating both if neither exists. `now` is Unix seconds.
    pub fn load_or_create(key_path: &Path, name: &str, now: i64) -> Result<Authority, AuthorityError> {
        let cert_path = cert_path(key_path);
        if !key_path.exists() && !cert_path.exists() {
            let authority = Authority::create(name, now);
            write_new(key_path, &authority.key_pem(), 0o600)?;
            write_new(&cert_path, &authority.cert_pem(), 0o644)?;
            return Ok(authority);
        }
        Authority::load(key_path)
    }

    /// Loads the CA at `key_path` (its certificate beside it); an error if either is missing.
    pub fn load(key_path: &Path) -> Result<Authority, AuthorityError> {
        let cert_path = cert_path(key_path);
        let mode = fs::metadata(key_path)
            .map_err(|source| AuthorityError::Read { path: key_path.into(), source })?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(AuthorityError::Permissions { path: key_path.into(), mode });
        }
        let read =
            |path: &Path| fs::read_to_string(path).map_err(|source| AuthorityError::Read { path: path.into(), source });
        let malformed = |path: &Path| {
            let path = path.to_path_buf();
            move |source| AuthorityError::Malformed { path, source }
        };
        let key_bytes = pem_decode(ED25519_PRIVATE_BANNER, &read(key_path)?).map_err(malformed(key_path))?;
        let seed: [u8; 32] = key_bytes
            .get(..32)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| malformed(key_path)(CertificateError::Malformed("key length")))?;
        let key = SigningKey::from_bytes(&seed);
        let cert = Certificate::from_pem(&read(&cert_path)?).map_err(malformed(&cert_path))?;
        if cert.details.public_key != key.verifying_key().to_bytes() || cert.verify(&cert.details.public_key).is_err() {
            return Err(AuthorityError::Mismatch { cert: cert_path, key: key_path.into() });
        }
        Ok(Authority { key, cert })
    }

    /// A fresh CA (not written anywhere).
    pub fn create(name: &str, now: i64) -> Authority {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let details = Details {
            name: name.into(),
            ips: Vec::new(),
            groups: Vec::new(),
            not_before: now - CLOCK_SKEW_SECS,
            not_after: now + CA_VALIDITY_SECS,
            public_key: key.verifying_key().to_bytes(),
            is_ca: true,
            issuer: None,
        };
        let cert = Certificate::sign(details, &key);
        Authority { key, cert }
    }

    /// A host certificate; its validity is cut to the CA's (Nebula refuses one that outlives
    /// its CA).
    pub fn sign_host(&self, request: &HostRequest<'_>) -> Certificate {
        let details = Details {
            name: request.name.into(),
            ips: vec![(request.ip, request.prefix)],
            groups: request.groups.clone(),
            not_before: request.not_before.max(self.cert.details.not_before),
            not_after: request.not_after.min(self.cert.details.not_after),
            public_key: request.public_key,
            is_ca: false,
            issuer: Some(self.cert.fingerprint_bytes()),
        };
        Certificate::sign(details, &self.key)
    }

    pub fn cert(&self) -> &Certificate {
        &self.cert
    }

    pub fn cert_pem(&self) -> String {
        self.cert.to_pem()
    }

    /// Go's `ed25519.PrivateKey` layout: seed then public key.
    fn key_pem(&self) -> String {
        let mut bytes = self.key.to_bytes().to_vec();
        bytes.extend_from_slice(self.key.verifying_key().as_bytes());
        pem_encode(ED25519_PRIVATE_BANNER, &bytes)
    }
}

/// Where the CA certificate lives beside its key: `X.key` → `X.crt`, else `X` + `.crt`.
pub fn cert_path(key_path: &Path) -> PathBuf {
    match key_path.extension() {
        Some(ext) if ext == "key" => key_path.with_extension("crt"),
        _ => PathBuf::from(format!("{}.crt", key_path.display())),
    }
}

/// Writes a file that must not exist yet, with `mode` from its creation on.
pub fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), AuthorityError> {
    let error = |source| AuthorityError::Write { path: path.into(), source };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(error)?;
    }
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(error)?;
    file.write_all(text.as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_made_once_kept_private_and_signs_hosts_within_its_life() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("herd.db.overlay-ca.key");
        let first = Authority::load_or_create(&key, "herd", 1_000_000).unwrap();
        assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        let again = Authority::load_or_create(&key, "herd", 2_000_000).unwrap();
        assert_eq!(first.cert(), again.cert(), "a restart keeps the CA");

        let request = HostRequest {
            name: "d",
            ip: Ipv4Addr::new(100, 64, 1, 2),
            prefix: 10,
            groups: vec!["lease-x".into()],
            public_key: [3; 32],
            not_before: 0,
            not_after: i64::MAX,
        };
        let host = again.sign_host(&request);
        host.verify(&first.cert().details.public_key).unwrap();
        assert_eq!(host.details.issuer, Some(first.cert().fingerprint_bytes()));
        assert_eq!(host.details.not_after, first.cert().details.not_after, "cut to the CA's life");

        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Authority::load_or_create(&key, "herd", 0),
            Err(AuthorityError::Permissions { mode: 0o644, .. })
        ));
    }
}
