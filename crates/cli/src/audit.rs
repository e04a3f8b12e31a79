//! An independent check of a coordinator's public ledger: download the journal, check every
//! batch signature, hash and link, replay every transfer, and confirm each asset sums to zero.
//! Nothing here trusts the coordinator beyond the data it serves.

use anyhow::{anyhow, bail, Context as _};
use ed25519_dalek::{Signature, VerifyingKey};
use herd_core::{Address, Asset};
use herd_ledger::journal::{verify, Entry};
use herd_proto::api::JournalEntry;
use serde::Serialize;

use crate::client::Client;

#[derive(Debug, Clone, Serialize)]
pub struct LedgerReport {
    pub entries: u64,
    pub head: String,
    pub signer: Address,
    pub accounts: usize,
}

/// The journal up to entry `until` (the published head; later entries wait for the next run).
async fn download(client: &Client, until: u64) -> anyhow::Result<Vec<JournalEntry>> {
    const PAGE: u32 = 1000;
    let mut entries: Vec<JournalEntry> = Vec::new();
    loop {
        let after = entries.last().map_or(0, |e| e.seq);
        let page = client.journal(after, PAGE).await?;
        let done = page.len() < PAGE as usize;
        entries.extend(page.into_iter().take_while(|e| e.seq <= until));
        if done || entries.last().is_some_and(|e| e.seq >= until) {
            entries.truncate(until as usize);
            return Ok(entries);
        }
    }
}

/// The ledger rebuilt from the coordinator's public journal (chain checked, signatures not:
/// `verify_ledger` does both).
pub async fn replay_ledger(client: &Client) -> anyhow::Result<herd_ledger::Ledger> {
    let head = client.ledger_head().await?;
    let entries = download(client, head.entries).await?;
    let parsed = entries
        .into_iter()
        .map(|e| {
            let transfer = serde_json::from_value(e.transfer)?;
            Ok(Entry { seq: e.seq, at_ms: e.at_ms, transfer, prev_hash: e.prev_hash, hash: e.hash })
        })
        .collect::<anyhow::Result<Vec<Entry>>>()?;
    Ok(verify(&parsed).map_err(|d| anyhow!("first divergence at entry {}: {}", d.seq, d.reason))?.0)
}

/// Verifies the whole journal; the error names the first divergent entry.
pub async fn verify_ledger(client: &Client) -> anyhow::Result<LedgerReport> {
    let head = client.ledger_head().await?;
    let entries = download(client, head.entries).await?;
    let key = VerifyingKey::from_bytes(&head.public_key.public_key_bytes())
        .context("the ledger key is not a valid Ed25519 key")?;
    let mut parsed: Vec<Entry> = Vec::with_capacity(entries.len());
    for e in &entries {
        let transfer = serde_json::from_value(e.transfer.clone())
            .with_context(|| format!("entry {}: the transfer does not parse", e.seq))?;
        // Each batch's last entry is signed; its hash covers every entry before it.
        let last = e.seq == head.entries;
        if !e.signature.is_empty() || last {
            let mut signature = [0u8; 64];
            let signed = matches!(bs58::decode(&e.signature).onto(&mut signature), Ok(64))
                && key.verify_strict(e.hash.as_bytes(), &Signature::from_bytes(&signature)).is_ok();
            if !signed {
                bail!("first divergence at entry {}: its signature does not verify against {}", e.seq, head.public_key);
            }
        }
        parsed.push(Entry {
            seq: e.seq,
            at_ms: e.at_ms,
            transfer,
            prev_hash: e.prev_hash.clone(),
            hash: e.hash.clone(),
        });
    }
    let (ledger, chain) = verify(&parsed).map_err(|d| anyhow!("first divergence at entry {}: {}", d.seq, d.reason))?;
    if chain.seq != head.entries || chain.head != head.head {
        bail!(
            "the journal ends at entry {} ({}) but the published head is entry {} ({})",
            chain.seq,
            chain.head,
            head.entries,
            head.head
        );
    }
    for asset in Asset::ALL {
        let total: i128 = ledger.accounts().filter(|((_, a), _)| *a == asset).map(|(_, s)| s.balance()).sum();
        if total != 0 {
            bail!("{asset} does not sum to zero across accounts ({total})");
        }
    }
    Ok(LedgerReport {
        entries: chain.seq,
        head: chain.head,
        signer: head.public_key,
        accounts: ledger.accounts().count(),
    })
}
