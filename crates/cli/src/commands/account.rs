use clap::Subcommand;

use super::Context;
use herd_proto::signing::PURPOSE_BROWSER;
use herd_worker::keys;

use crate::credentials::{sign_challenge, sign_in, Credentials};
use crate::output::{print_json, spinner, table};

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create your account key (if needed), register it and store an API key.
    Create,
    /// Obtain a new API key for your existing account.
    Login {
        /// Instead, print a one-time link (valid 5 minutes) that signs a browser in to the
        /// web console as this account; the account key never leaves this machine.
        #[arg(long)]
        browser: bool,
        /// With --browser: also open the link in this machine's browser (xdg-open, or open
        /// on macOS).
        #[arg(long, requires = "browser")]
        open: bool,
    },
    /// Show your account.
    Show,
}

pub async fn run(context: &Context, command: AccountCommand) -> anyhow::Result<i32> {
    match command {
        AccountCommand::Login { browser: true, open } => {
            let key = context.credentials.account_key()?.ok_or_else(|| {
                anyhow::anyhow!(
                    "no account key at {}: run `herd account create` first",
                    context.credentials.key_path().display()
                )
            })?;
            let client = context.anonymous_client();
            let challenge = client.challenge(&keys::address_of(&key), PURPOSE_BROWSER).await?;
            let link = client.browser_link(&sign_challenge(&key, PURPOSE_BROWSER, challenge.nonce)).await?;
            let url = format!("{}{}", context.coordinator.trim_end_matches('/'), link.path);
            if context.json {
                print_json(&serde_json::json!({ "address": link.address, "url": url, "expires_at": link.expires_at }));
            } else {
                crate::outln!("Open this link in your browser to sign in as {}:", link.address);
                crate::outln!("  {url}");
                crate::outln!(
                    "It works once, until {} (5 minutes). Anyone with it can sign in as you: do not share it.",
                    link.expires_at
                );
            }
            if open {
                open_in_browser(&url)?;
            }
        }
        AccountCommand::Create | AccountCommand::Login { browser: false, .. } => {
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

/// Hands the link to the desktop's opener. The link is printed first, so a machine without a
/// browser still has it.
fn open_in_browser(url: &str) -> anyhow::Result<()> {
    let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
    let status = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| anyhow::anyhow!("cannot run {opener} to open the link ({e}): open it yourself"))?;
    if !status.success() {
        anyhow::bail!("{opener} could not open the link ({status}): open it yourself");
    }
    Ok(())
}
