//! A customer as the CLI is one: an account with its own config directory (credentials
//! saved where `herd` looks) and funds, running the `herd` binary.

use std::process::{Command, Output};

use herd_cli::client::Client;
use herd_cli::credentials::{sign_in, Credentials};

pub struct Customer {
    pub config: tempfile::TempDir,
    pub url: String,
    pub client: Client,
}

impl Customer {
    pub async fn new(url: &str) -> Customer {
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let (credential, _) = sign_in(&Client::new(url, None), &key).await.unwrap();
        let config = tempfile::tempdir().unwrap();
        Credentials::new(config.path().to_path_buf()).save(url, credential.clone()).unwrap();
        let client = Client::new(url, Some(credential.api_key));
        let funds = herd_proto::api::Deposit { asset: herd_core::Asset::Usdc, amount: "1000".into(), id: None };
        client.deposit(&funds).await.unwrap();
        Customer { config, url: url.to_owned(), client }
    }

    /// `herd ARGS…` as this customer, off the async runtime.
    pub async fn herd(&self, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_herd"));
        command.args(args).env("HERD_CONFIG_DIR", self.config.path()).env("HERD_COORDINATOR", &self.url);
        tokio::task::spawn_blocking(move || command.output().expect("herd runs")).await.unwrap()
    }
}
