use clap::Subcommand;

use super::Context;
use crate::credentials::{sign_in, Credentials};
use crate::output::{print_json, spinner, table};

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create your account key (if needed), register it and store an API key.
    Create,
    /// Obtain a new API key for your existing account.
    Login,
    /// Show your account.
    Show,
}

pub async fn run(context: &Context, command: AccountCommand) -> anyhow::Result<i32> {
    match command {
        AccountCommand::Create | AccountCommand::Login => {
            let key = context.credentials.account_key_or_create()?;
            let wait = spinner(format!("signing in to {}", context.coordinator), context.json);
            let (credential, registered) = sign_in(&context.anonymous_client(), &key)
                .await
                .map_err(anyhow::Error::from)
                .inspect_err(|_| wait.finish_and_clear())?;
            wait.finish_and_clear();
            context.credentials.save(&context.coordinator, credential.clone())?;
            if context.json {
                print_json(&serde_json::json!({
                    "address": credential.address,
                    "registered": registered,
                    "key_file": Credentials::at_default().key_path(),
                }));
            } else {
                let verb = if registered { "registered" } else { "already registered; signed in" };
                crate::outln!("account {} {verb} at {}", credential.address, context.coordinator);
                crate::outln!("key: {} (keep it safe: it is your account)", context.credentials.key_path().display());
            }
        }
        AccountCommand::Show => {
            let account = context.client()?.account().await?;
            if context.json {
                print_json(&account);
            } else {
                let rows = vec![
                    vec!["address".into(), account.address.to_string()],
                    vec!["created".into(), account.created_at.to_string()],
                    vec!["devices supplied".into(), account.devices.to_string()],
                    vec!["clusters running".into(), account.clusters_running.to_string()],
                ];
                crate::outln!("{}", table(&["ACCOUNT", ""], &rows));
            }
        }
    }
    Ok(0)
}
