//! The user's account key and API keys, under the config dir (`$HERD_CONFIG_DIR`, else the
//! platform's, e.g. `~/.config/herd`): `account.key` (Ed25519, mode 0600) and
//! `credentials.json` (API key per coordinator URL, mode 0600).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ed25519_dalek::{Signer, SigningKey};
use herd_core::Address;
use herd_proto::api::SignedChallenge;
use herd_proto::signing::{account_challenge_message, PURPOSE_LOGIN, PURPOSE_REGISTER};
use herd_worker::keys;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use crate::client::{Client, ClientError};

pub fn config_dir() -> PathBuf {
    match std::env::var_os("HERD_CONFIG_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => dirs::config_dir().unwrap_or_else(|| PathBuf::from(".")).join("herd"),
    }
}

pub fn data_dir() -> PathBuf {
    match std::env::var_os("HERD_DATA_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => dirs::data_dir().unwrap_or_else(|| PathBuf::from(".")).join("herd"),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credential {
    pub address: Address,
    pub api_key: String,
}

pub struct Credentials {
    dir: PathBuf,
}

impl Credentials {
    pub fn new(dir: PathBuf) -> Credentials {
        Credentials { dir }
    }

    pub fn at_default() -> Credentials {
        Credentials::new(config_dir())
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join("account.key")
    }

    fn file(&self) -> PathBuf {
        self.dir.join("credentials.json")
    }

    pub fn account_key(&self) -> anyhow::Result<Option<SigningKey>> {
        let path = self.key_path();
        if !path.exists() {
            return Ok(None);
        }
        Ok(Some(keys::load(&path)?))
    }

    pub fn account_key_or_create(&self) -> anyhow::Result<SigningKey> {
        Ok(keys::load_or_create(&self.key_path())?)
    }

    fn all(&self) -> anyhow::Result<BTreeMap<String, Credential>> {
        let path = self.file();
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub fn get(&self, coordinator: &str) -> anyhow::Result<Option<Credential>> {
        Ok(self.all()?.remove(coordinator.trim_end_matches('/')))
    }

    pub fn api_key(&self, coordinator: &str) -> anyhow::Result<String> {
        match self.get(coordinator)? {
            Some(credential) => Ok(credential.api_key),
            None => bail!("no API key for {coordinator}; run `herd account create` (or `herd account login`) first"),
        }
    }

    pub fn save(&self, coordinator: &str, credential: Credential) -> anyhow::Result<()> {
        let mut all = self.all()?;
        all.insert(coordinator.trim_end_matches('/').to_owned(), credential);
        write_private(&self.file(), serde_json::to_string_pretty(&all)?.as_bytes())
    }
}

/// Writes a secret file atomically (temp file of mode 0600, then rename).
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("credentials path has no parent")?;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let temp = path.with_extension("tmp");
    let _ = fs::remove_file(&temp);
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&temp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub fn sign_challenge(key: &SigningKey, purpose: &str, nonce: String) -> SignedChallenge {
    let address = keys::address_of(key);
    let message = account_challenge_message(purpose, address.as_str(), &nonce);
    SignedChallenge { address, nonce, signature: bs58::encode(key.sign(&message).to_bytes()).into_string() }
}

/// Registers the key's account (or, if it exists, logs in) and returns a fresh API key.
/// The bool says whether the account was newly registered.
pub async fn sign_in(client: &Client, key: &SigningKey) -> Result<(Credential, bool), ClientError> {
    let address = keys::address_of(key);
    let (purpose, registered) = match client.challenge(&address, PURPOSE_REGISTER).await {
        Ok(challenge) => (Some(challenge), true),
        Err(error) if error.status() == Some(StatusCode::CONFLICT) => (None, false),
        Err(error) => return Err(error),
    };
    let issued = match purpose {
        Some(challenge) => client.register(&sign_challenge(key, PURPOSE_REGISTER, challenge.nonce)).await?,
        None => {
            let challenge = client.challenge(&address, PURPOSE_LOGIN).await?;
            client.login(&sign_challenge(key, PURPOSE_LOGIN, challenge.nonce)).await?
        }
    };
    Ok((Credential { address: issued.address, api_key: issued.api_key }, registered))
}
