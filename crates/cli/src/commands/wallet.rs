//! `herd wallet …` and `herd ledger …`: balances, the devnet faucet, history, and an
//! independent check of the public ledger.

use clap::Subcommand;
use herd_core::money::format_usd;
use herd_core::{Asset, Timestamp};
use herd_proto::api::{ConfirmPayout, Deposit, JournalEntry, Payout, Withdraw};

use super::Context;
use crate::audit;
use crate::output::{print_json, spinner, table};

#[derive(Debug, Subcommand)]
pub enum WalletCommand {
    /// Balances per asset: total, held by leases, available.
    Balance,
    /// Devnet faucet: mint test funds to your account.
    Deposit {
        /// What to deposit: usdc, io or credits.
        #[arg(long, value_parser = str::parse::<Asset>, default_value = "usdc")]
        asset: Asset,
        /// Decimal amount, e.g. 100 or 12.5.
        #[arg(long)]
        amount: String,
    },
    /// Ledger entries that moved your money, newest first.
    History,
    /// Withdraw to a Solana address: held until the operator confirms the transfer.
    Withdraw {
        /// What to withdraw: usdc, io or credits.
        #[arg(long, value_parser = str::parse::<Asset>, default_value = "usdc")]
        asset: Asset,
        /// Decimal amount, e.g. 25 or 12.5.
        #[arg(long)]
        amount: String,
        /// Solana address (base58 Ed25519 public key).
        #[arg(long)]
        to: String,
    },
    /// Your withdrawals and their state.
    Payouts,
    /// Burn IO to mint credits (USD-pegged) at the oracle price.
    Credits {
        /// Decimal IO to burn.
        #[arg(long)]
        io: String,
    },
    /// Operator: confirm a payout was sent, signing with the coordinator's ledger key.
    ConfirmPayout {
        /// The payout's ID (`herd wallet withdraw` printed it).
        id: String,
        /// The Solana transaction signature that paid it.
        #[arg(long)]
        tx: String,
        /// The ledger key file (beside the database: herd.db.ledger.key).
        #[arg(long)]
        ledger_key: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// The public chain head and the key that signs it.
    Head,
    /// Download the whole journal, check every hash, link and signature, and recompute every
    /// balance from scratch; report the first divergence.
    Verify,
}

/// Amounts are minor units (10⁻⁶) of their asset, shown in its units.
fn amount(asset: Asset, minor: i64) -> String {
    herd_core::money::format_amount(i128::from(minor), asset)
}

/// What became of each hold in the history: its amount and the entries that settled it.
#[derive(Default)]
struct Holds {
    amounts: std::collections::HashMap<String, u64>,
    outcome: std::collections::HashMap<String, &'static str>,
}

impl Holds {
    fn of(entries: &[JournalEntry]) -> Holds {
        let mut holds = Holds::default();
        for entry in entries {
            let t = &entry.transfer;
            let id = t["id"].as_str().unwrap_or_default().to_owned();
            let pending = t["kind"]["pending_id"].as_str().unwrap_or_default().to_owned();
            match t["kind"]["type"].as_str() {
                Some("pending") => {
                    holds.amounts.insert(id, t["amount"].as_u64().unwrap_or(0));
                }
                Some("post") => {
                    holds.outcome.insert(pending, "posted");
                }
                Some("void") => {
                    holds.outcome.insert(pending, "voided");
                }
                _ => {}
            }
        }
        holds
    }
}

/// One history row: what happened in words, and amounts as they moved: a hold says whether it
/// is still pending, a settlement says what it released, a release shows the hold it freed.
fn describe(entry: &JournalEntry, holds: &Holds) -> Vec<String> {
    let t = &entry.transfer;
    let key = |field: &str| {
        let account = &t[field];
        match account["id"].as_str() {
            Some(id) => format!("{}:{}", account["kind"].as_str().unwrap_or("?"), &id[..id.len().min(10)]),
            None => account["kind"].as_str().unwrap_or("?").to_owned(),
        }
    };
    let asset: Asset = t["asset"].as_str().and_then(|a| a.parse().ok()).unwrap_or_default();
    let moved = t["amount"].as_i64().unwrap_or(0);
    let id = t["id"].as_str().unwrap_or_default();
    let pending = t["kind"]["pending_id"].as_str().unwrap_or_default();
    let held = holds.amounts.get(pending).map(|a| *a as i64);
    let code = t["code"].as_str().unwrap_or("");
    let (what, shown, note) = match t["kind"]["type"].as_str() {
        Some("pending") => {
            (format!("{code} (hold)"), moved, holds.outcome.get(id).copied().unwrap_or("pending").to_owned())
        }
        Some("post") => {
            let released = held.map(|h| format!("; {} released", amount(asset, h - moved))).unwrap_or_default();
            (format!("{code} (settled)"), moved, format!("posted{released}"))
        }
        Some("void") => (format!("{code} (released)"), held.unwrap_or(0), "voided: the hold is free again".into()),
        _ => (code.to_owned(), moved, String::new()),
    };
    vec![
        entry.seq.to_string(),
        Timestamp(entry.at_ms).to_string(),
        what,
        key("debit"),
        key("credit"),
        amount(asset, shown),
        note,
    ]
}

fn print_payouts(payouts: &[Payout]) {
    let rows: Vec<Vec<String>> = payouts
        .iter()
        .map(|p| {
            vec![
                p.id.clone(),
                p.state.clone(),
                amount(p.asset, p.amount),
                p.recipient.clone(),
                p.created_at.to_string(),
                p.tx_signature.clone().unwrap_or_default(),
            ]
        })
        .collect();
    crate::outln!("{}", table(&["ID", "STATE", "AMOUNT", "TO", "CREATED", "TX"], &rows));
}

pub async fn wallet(context: &Context, command: WalletCommand) -> anyhow::Result<i32> {
    if let WalletCommand::ConfirmPayout { id, tx, ledger_key } = &command {
        let key = herd_keys::load(ledger_key)?;
        let message = herd_proto::signing::payout_confirmation_message(id, tx);
        let operator_signature = bs58::encode(ed25519_dalek::Signer::sign(&key, &message).to_bytes()).into_string();
        let confirm = ConfirmPayout { tx_signature: tx.clone(), operator_signature };
        let payout = context.anonymous_client().confirm_payout(id, &confirm).await?;
        if context.json {
            print_json(&payout);
        } else {
            crate::outln!("payout {} settled by transaction {}", payout.id, tx);
        }
        return Ok(0);
    }
    let client = context.client()?;
    match command {
        WalletCommand::ConfirmPayout { .. } => unreachable!("handled above"),
        WalletCommand::Withdraw { asset, amount: value, to } => {
            let payout = client.withdraw(&Withdraw { asset, amount: value, to }).await?;
            if context.json {
                print_json(&payout);
            } else {
                crate::outln!(
                    "payout {} of {} held until the transfer is confirmed",
                    payout.id,
                    amount(payout.asset, payout.amount)
                );
                crate::outln!("Solana Pay request: {}", payout.url);
            }
        }
        WalletCommand::Credits { io } => {
            let minted = client.mint_credits(&io).await?;
            if context.json {
                print_json(&minted);
            } else {
                crate::outln!(
                    "burned {} and minted {} at {} per IO",
                    amount(Asset::Io, minted.io_burned),
                    amount(Asset::Credits, minted.credits_minted),
                    format_usd(minted.io_price_micros)
                );
            }
        }
        WalletCommand::Payouts => {
            let payouts = client.payouts().await?;
            if context.json {
                print_json(&payouts);
            } else {
                print_payouts(&payouts);
            }
        }
        WalletCommand::Balance => {
            let balances = client.wallet().await?;
            if context.json {
                print_json(&balances);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = balances
                .iter()
                .map(|b| {
                    vec![
                        b.asset.to_string(),
                        amount(b.asset, b.balance),
                        amount(b.asset, b.held),
                        amount(b.asset, b.available),
                    ]
                })
                .collect();
            crate::outln!("{}", table(&["ASSET", "BALANCE", "HELD", "AVAILABLE"], &rows));
        }
        WalletCommand::Deposit { asset, amount: value } => {
            let minor = herd_core::money::parse_usd(&value).map_err(|_| {
                anyhow::anyhow!(
                    "invalid amount {value:?}: expected a positive decimal with at most 6 decimals, like 12.5"
                )
            })?;
            let entry = client.deposit(&Deposit { asset, amount: value, id: None }).await?;
            if context.json {
                print_json(&entry);
            } else {
                crate::outln!("deposited {} from the devnet faucet (ledger entry {})", amount(asset, minor), entry.seq);
            }
        }
        WalletCommand::History => {
            let entries = client.wallet_history().await?;
            if context.json {
                print_json(&entries);
                return Ok(0);
            }
            let holds = Holds::of(&entries);
            let rows: Vec<Vec<String>> = entries.iter().map(|e| describe(e, &holds)).collect();
            crate::outln!("{}", table(&["SEQ", "AT", "WHAT", "FROM", "TO", "AMOUNT", "STATE"], &rows));
        }
    }
    Ok(0)
}

pub async fn ledger(context: &Context, command: LedgerCommand) -> anyhow::Result<i32> {
    let client = context.anonymous_client();
    match command {
        LedgerCommand::Head => {
            let head = client.ledger_head().await?;
            if context.json {
                print_json(&head);
            } else {
                crate::outln!("entries {}\nhead    {}\nsigner  {}", head.entries, head.head, head.public_key);
            }
            Ok(0)
        }
        LedgerCommand::Verify => {
            let wait = spinner("downloading and checking the journal", context.json);
            let report = audit::verify_ledger(&client).await;
            wait.finish_and_clear();
            let report = report?;
            if context.json {
                print_json(&report);
            } else {
                crate::outln!("ledger verified: {} entries, every hash, link and signature checks out", report.entries);
                crate::outln!("head {} signed by {}", report.head, report.signer);
                crate::outln!(
                    "balances of {} accounts recomputed from the journal; every asset sums to zero (balances + burned = minted)",
                    report.accounts
                );
            }
            Ok(0)
        }
    }
}
