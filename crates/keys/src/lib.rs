//! Ed25519 key files: one key per device, per account (the CLI) and per coordinator (it signs
//! the ledger journal), stored as base58
//! text in a file of mode 0600 inside a directory of mode 0700. A key file that others can
//! read is refused, as ssh does.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use herd_core::Address;
use rand::rngs::OsRng;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write key file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("key file {path} is accessible by other users (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("key file {path} does not hold a base58 Ed25519 secret key")]
    Malformed { path: PathBuf },
}

pub fn address_of(key: &SigningKey) -> Address {
    Address::from_public_key(key.verifying_key().as_bytes())
}

pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
    let metadata = fs::metadata(path).map_err(|source| KeyError::Read { path: path.into(), source })?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions { path: path.into(), mode });
    }
    let text = fs::read_to_string(path).map_err(|source| KeyError::Read { path: path.into(), source })?;
    let mut secret = [0u8; 32];
    match bs58::decode(text.trim()).onto(&mut secret) {
        Ok(32) => Ok(SigningKey::from_bytes(&secret)),
        _ => Err(KeyError::Malformed { path: path.into() }),
    }
}

/// Loads the key at `path`, creating a new random one (mode 0600) if there is none.
pub fn load_or_create(path: &Path) -> Result<SigningKey, KeyError> {
    if path.exists() {
        return load(path);
    }
    let key = SigningKey::generate(&mut OsRng);
    write_new(path, &key)?;
    Ok(key)
}

fn write_new(path: &Path, key: &SigningKey) -> Result<(), KeyError> {
    let write_err = |source| KeyError::Write { path: path.into(), source };
    if let Some(parent) = path.parent() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(parent).map_err(write_err)?;
    }
    // create_new: never clobber a key that appeared meanwhile; the mode applies at creation,
    // so the secret is never readable by others, not even briefly.
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(write_err)?;
    let text = bs58::encode(key.to_bytes()).into_string();
    file.write_all(text.as_bytes()).and_then(|_| file.sync_all()).map_err(write_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/device.key");
        let key = load_or_create(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(load_or_create(&path).unwrap().to_bytes(), key.to_bytes());
    }

    #[test]
    fn readable_or_garbled_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.key");
        load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(load(&path), Err(KeyError::Permissions { mode: 0o644, .. })));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, "not a key").unwrap();
        assert!(matches!(load(&path), Err(KeyError::Malformed { .. })));
    }
}
