//! The journal: every applied transfer, in order, each entry committing to the previous
//! one's hash. Replaying it recomputes every balance; any edit, reordering or deletion
//! changes a hash, and `verify` names the first entry where the chain or a balance diverges.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ledger::{Ledger, Transfer};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// 1-based position in the journal.
    pub seq: u64,
    /// When the coordinator applied it (ms since the epoch, as it was told).
    pub at_ms: i64,
    pub transfer: Transfer,
    /// Hex SHA-256 of the previous entry (64 zeros for the first).
    pub prev_hash: String,
    pub hash: String,
}

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub fn entry_hash(seq: u64, at_ms: i64, transfer: &Transfer, prev_hash: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"herd-journal-v1\n");
    hasher.update(seq.to_be_bytes());
    hasher.update(at_ms.to_be_bytes());
    hasher.update(serde_json::to_vec(transfer).expect("transfers serialise"));
    hasher.update(prev_hash.as_bytes());
    herd_core::hex::encode(&hasher.finalize())
}

/// The head of the chain: where the next entry goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub seq: u64,
    pub head: String,
}

impl Default for Chain {
    fn default() -> Self {
        Chain { seq: 0, head: GENESIS_HASH.to_owned() }
    }
}

impl Chain {
    pub fn append(&mut self, at_ms: i64, transfer: Transfer) -> Entry {
        let seq = self.seq + 1;
        let hash = entry_hash(seq, at_ms, &transfer, &self.head);
        let entry = Entry { seq, at_ms, transfer, prev_hash: self.head.clone(), hash: hash.clone() };
        self.seq = seq;
        self.head = hash;
        entry
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("journal diverges at entry {seq}: {reason}")]
pub struct Divergence {
    pub seq: u64,
    pub reason: String,
}

/// Replays the journal from the start: checks every link and hash, and re-applies every
/// transfer (so an entry that could not have been applied is caught too). Returns the
/// rebuilt ledger and the chain head.
pub fn verify<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Result<(Ledger, Chain), Divergence> {
    let mut ledger = Ledger::new();
    let mut chain = Chain::default();
    extend(&mut ledger, &mut chain, entries)?;
    Ok((ledger, chain))
}

/// Continues a verified replay with the entries that follow `chain`'s head (another writer's
/// appends), checking each as [`verify`] does. On a divergence, `ledger` and `chain` hold the
/// entries before it: the caller rebuilds from the start rather than trust them.
pub fn extend<'a>(
    ledger: &mut Ledger,
    chain: &mut Chain,
    entries: impl IntoIterator<Item = &'a Entry>,
) -> Result<(), Divergence> {
    for entry in entries {
        let diverge = |reason: String| Divergence { seq: entry.seq, reason };
        if entry.seq != chain.seq + 1 {
            return Err(diverge(format!("expected entry {}, found {}", chain.seq + 1, entry.seq)));
        }
        if entry.prev_hash != chain.head {
            return Err(diverge("does not link to the previous entry's hash".into()));
        }
        if entry_hash(entry.seq, entry.at_ms, &entry.transfer, &entry.prev_hash) != entry.hash {
            return Err(diverge("its hash does not match its content".into()));
        }
        let applied =
            ledger.apply(std::slice::from_ref(&entry.transfer), entry.at_ms).map_err(|e| diverge(e.to_string()))?;
        if applied.is_empty() {
            return Err(diverge(format!("repeats transfer {}", entry.transfer.id)));
        }
        *chain = Chain { seq: entry.seq, head: entry.hash.clone() };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::tests::{single, user};
    use crate::ledger::AccountKey;

    fn journal() -> Vec<Entry> {
        let mut chain = Chain::default();
        vec![
            chain.append(1, single("a", AccountKey::Issuance, user("alice"), 500)),
            chain.append(2, single("b", user("alice"), user("bob"), 200)),
            chain.append(3, single("c", user("bob"), AccountKey::Burn, 50)),
        ]
    }

    #[test]
    fn an_intact_journal_replays_to_its_balances() {
        let entries = journal();
        let (ledger, chain) = verify(&entries).unwrap();
        assert_eq!(chain.seq, 3);
        assert_eq!(chain.head, entries[2].hash);
        assert_eq!(ledger.balance(&user("bob"), herd_core::Asset::Usdc), 150);
    }

    #[test]
    fn tampering_is_found_at_the_first_divergent_entry() {
        let mut edited = journal();
        edited[1].transfer.amount = 20;
        assert_eq!(verify(&edited).unwrap_err().seq, 2);

        let mut rehashed = journal();
        rehashed[1].transfer.amount = 20;
        rehashed[1].hash = entry_hash(2, 2, &rehashed[1].transfer, &rehashed[1].prev_hash);
        let error = verify(&rehashed).unwrap_err();
        assert_eq!((error.seq, error.reason.as_str()), (3, "does not link to the previous entry's hash"));

        let mut dropped = journal();
        dropped.remove(1);
        assert_eq!(verify(&dropped).unwrap_err().seq, 3);

        let mut overdrawn = journal();
        overdrawn[2].transfer.amount = 5_000;
        let mut chain = Chain { seq: 2, head: overdrawn[1].hash.clone() };
        overdrawn[2] = chain.append(3, overdrawn[2].transfer.clone());
        assert!(verify(&overdrawn).unwrap_err().reason.contains("available"), "a well-linked but impossible entry");
    }
}
