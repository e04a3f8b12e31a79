//! Double-entry accounts per asset with TigerBeetle's rules: every movement is a transfer
//! between two accounts of one asset; batches apply atomically; a pending transfer reserves
//! funds until it is posted (fully or partly), voided or expires; ids make retries safe.

use std::collections::HashMap;

use herd_core::Asset;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Whose money it is. System accounts are singletons per asset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum AccountKey {
    /// A customer's or supplier's balance (account address).
    User(String),
    /// Funds held for a lease (cluster id).
    Escrow(String),
    /// IO staked for a device (device id).
    StakeVault(String),
    FeePool,
    Treasury,
    EmissionPool,
    RewardPool,
    Burn,
    /// Where minted units come from (genesis, faucet, credits); its negative balance is the
    /// amount minted.
    Issuance,
    /// The outside world: deposits come from it, withdrawals go to it.
    External,
}

impl AccountKey {
    /// Only the issuer and the outside world may go below zero; every other account's debits
    /// can never exceed its credits.
    pub fn may_go_negative(&self) -> bool {
        matches!(self, AccountKey::Issuance | AccountKey::External)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub debits_posted: u64,
    pub credits_posted: u64,
    pub debits_pending: u64,
    pub credits_pending: u64,
}

impl Account {
    pub fn balance(&self) -> i128 {
        i128::from(self.credits_posted) - i128::from(self.debits_posted)
    }

    /// What can still be debited: the balance less pending debits.
    pub fn available(&self) -> i128 {
        self.balance() - i128::from(self.debits_pending)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TransferKind {
    /// Moves the amount now.
    Single,
    /// Reserves the amount until posted, voided or `expires_at_ms`.
    Pending { expires_at_ms: i64 },
    /// Settles a pending transfer: `amount` of it moves (≤ the pending amount), the rest is
    /// released.
    Post { pending_id: String },
    /// Releases a pending transfer entirely.
    Void { pending_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Chosen by the client (≤ 128 bytes); a retry with the same id and body is a no-op.
    pub id: String,
    pub debit: AccountKey,
    pub credit: AccountKey,
    pub asset: Asset,
    /// Minor units (10⁻⁶). For `Void`, ignored (0).
    pub amount: u64,
    pub kind: TransferKind,
    /// Why (e.g. `lease-hold`, `metering`, `fee`, `reward`), for history and audits.
    pub code: String,
}

impl Transfer {
    fn digest(&self) -> [u8; 32] {
        Sha256::digest(serde_json::to_vec(self).expect("transfers serialise")).into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("transfer {index}: id {id:?} was used for a different transfer")]
    IdConflict { index: usize, id: String },
    #[error(
        "transfer {index}: {account:?} needs {}, {} available",
        herd_core::money::format_amount(i128::from(*needed), *asset),
        herd_core::money::format_amount(*available, *asset)
    )]
    InsufficientFunds { index: usize, account: AccountKey, asset: Asset, available: i128, needed: u64 },
    #[error("transfer {index}: invalid: {reason}")]
    Invalid { index: usize, reason: String },
    #[error("transfer {index}: pending transfer {pending_id:?} {problem}")]
    Pending { index: usize, pending_id: String, problem: &'static str },
}

impl LedgerError {
    /// A retry with a different body: the API's 409.
    pub fn is_conflict(&self) -> bool {
        matches!(self, LedgerError::IdConflict { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PendingStatus {
    Open,
    Posted,
    Voided,
}

#[derive(Debug, Clone)]
struct PendingState {
    transfer: Transfer,
    expires_at_ms: i64,
    status: PendingStatus,
}

const ID_BYTES_MAX: usize = 128;
const CODE_BYTES_MAX: usize = 64;

#[derive(Debug, Clone, Default)]
pub struct Ledger {
    accounts: HashMap<(AccountKey, Asset), Account>,
    /// Every applied transfer id and the digest of its body (for idempotency).
    applied: HashMap<String, [u8; 32]>,
    pending: HashMap<String, PendingState>,
}

/// A batch's changes before they are committed (read-through over the ledger).
#[derive(Default)]
struct Overlay {
    accounts: HashMap<(AccountKey, Asset), Account>,
    applied: HashMap<String, [u8; 32]>,
    pending: HashMap<String, PendingState>,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    pub fn account(&self, key: &AccountKey, asset: Asset) -> Account {
        self.accounts.get(&(key.clone(), asset)).copied().unwrap_or_default()
    }

    pub fn balance(&self, key: &AccountKey, asset: Asset) -> i128 {
        self.account(key, asset).balance()
    }

    pub fn accounts(&self) -> impl Iterator<Item = (&(AccountKey, Asset), &Account)> {
        self.accounts.iter()
    }

    /// Whether a transfer with this id was applied (ids of single-use actions are checked
    /// with this before they post, so a replay is refused rather than skipped).
    pub fn has_applied(&self, id: &str) -> bool {
        self.applied.contains_key(id)
    }

    pub fn pending_status(&self, id: &str) -> Option<PendingStatus> {
        self.pending.get(id).map(|p| p.status)
    }

    /// Open pending transfers that reached their expiry (the caller voids them).
    pub fn expired(&self, now_ms: i64) -> Vec<String> {
        let mut ids: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.status == PendingStatus::Open && p.expires_at_ms <= now_ms)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Open pending transfers and their amounts.
    pub fn open_pending(&self) -> impl Iterator<Item = &Transfer> {
        self.pending.values().filter(|p| p.status == PendingStatus::Open).map(|p| &p.transfer)
    }

    /// Applies a batch atomically: all transfers or none. Returns the transfers that took
    /// effect (retries of already applied ids are skipped), in order, for the journal.
    pub fn apply(&mut self, batch: &[Transfer], now_ms: i64) -> Result<Vec<Transfer>, LedgerError> {
        let mut overlay = Overlay::default();
        let mut effective = Vec::with_capacity(batch.len());
        for (index, transfer) in batch.iter().enumerate() {
            let digest = transfer.digest();
            let seen = overlay.applied.get(&transfer.id).or_else(|| self.applied.get(&transfer.id));
            match seen {
                Some(d) if *d == digest => continue,
                Some(_) => return Err(LedgerError::IdConflict { index, id: transfer.id.clone() }),
                None => {}
            }
            self.apply_one(&mut overlay, index, transfer, now_ms)?;
            overlay.applied.insert(transfer.id.clone(), digest);
            effective.push(transfer.clone());
        }
        self.accounts.extend(overlay.accounts);
        self.applied.extend(overlay.applied);
        self.pending.extend(overlay.pending);
        Ok(effective)
    }

    fn read(&self, overlay: &Overlay, key: &AccountKey, asset: Asset) -> Account {
        overlay.accounts.get(&(key.clone(), asset)).copied().unwrap_or_else(|| self.account(key, asset))
    }

    fn apply_one(&self, overlay: &mut Overlay, index: usize, t: &Transfer, now_ms: i64) -> Result<(), LedgerError> {
        let invalid = |reason: &str| LedgerError::Invalid { index, reason: reason.to_owned() };
        if t.id.is_empty() || t.id.len() > ID_BYTES_MAX {
            return Err(invalid("id must be 1..=128 bytes"));
        }
        if t.code.len() > CODE_BYTES_MAX {
            return Err(invalid("code must be at most 64 bytes"));
        }
        if t.debit == t.credit {
            return Err(invalid("debit and credit accounts are the same"));
        }
        let mut debit = self.read(overlay, &t.debit, t.asset);
        let mut credit = self.read(overlay, &t.credit, t.asset);
        match &t.kind {
            TransferKind::Single | TransferKind::Pending { .. } => {
                if t.amount == 0 {
                    return Err(invalid("amount must be positive"));
                }
                if !t.debit.may_go_negative() && debit.available() < i128::from(t.amount) {
                    return Err(LedgerError::InsufficientFunds {
                        index,
                        account: t.debit.clone(),
                        asset: t.asset,
                        available: debit.available(),
                        needed: t.amount,
                    });
                }
                if let TransferKind::Pending { expires_at_ms } = t.kind {
                    debit.debits_pending += t.amount;
                    credit.credits_pending += t.amount;
                    let state = PendingState { transfer: t.clone(), expires_at_ms, status: PendingStatus::Open };
                    overlay.pending.insert(t.id.clone(), state);
                } else {
                    debit.debits_posted += t.amount;
                    credit.credits_posted += t.amount;
                }
            }
            TransferKind::Post { pending_id } | TransferKind::Void { pending_id } => {
                let posting = matches!(t.kind, TransferKind::Post { .. });
                let problem = |problem| LedgerError::Pending { index, pending_id: pending_id.clone(), problem };
                let mut state = overlay
                    .pending
                    .get(pending_id)
                    .or_else(|| self.pending.get(pending_id))
                    .cloned()
                    .ok_or_else(|| problem("does not exist"))?;
                match state.status {
                    PendingStatus::Posted => return Err(problem("was already posted")),
                    PendingStatus::Voided => return Err(problem("was already voided")),
                    PendingStatus::Open => {}
                }
                if posting && state.expires_at_ms <= now_ms {
                    return Err(problem("has expired"));
                }
                let held = &state.transfer;
                if held.debit != t.debit || held.credit != t.credit || held.asset != t.asset {
                    return Err(problem("is between other accounts or in another asset"));
                }
                if posting && t.amount > held.amount {
                    return Err(problem("holds less than the amount posted"));
                }
                debit.debits_pending -= held.amount;
                credit.credits_pending -= held.amount;
                if posting {
                    debit.debits_posted += t.amount;
                    credit.credits_posted += t.amount;
                }
                state.status = if posting { PendingStatus::Posted } else { PendingStatus::Voided };
                overlay.pending.insert(pending_id.clone(), state);
            }
        }
        overlay.accounts.insert((t.debit.clone(), t.asset), debit);
        overlay.accounts.insert((t.credit.clone(), t.asset), credit);
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn user(name: &str) -> AccountKey {
        AccountKey::User(name.into())
    }

    pub fn single(id: &str, debit: AccountKey, credit: AccountKey, amount: u64) -> Transfer {
        Transfer {
            id: id.into(),
            debit,
            credit,
            asset: Asset::Usdc,
            amount,
            kind: TransferKind::Single,
            code: "test".into(),
        }
    }

    fn funded() -> Ledger {
        let mut ledger = Ledger::new();
        ledger.apply(&[single("mint", AccountKey::Issuance, user("alice"), 1_000)], 0).unwrap();
        ledger
    }

    #[test]
    fn balances_never_go_negative_and_batches_are_atomic() {
        let mut ledger = funded();
        let overdraw = single("t1", user("alice"), user("bob"), 1_001);
        assert!(matches!(ledger.apply(&[overdraw], 0), Err(LedgerError::InsufficientFunds { .. })));
        let batch = [single("t2", user("alice"), user("bob"), 600), single("t3", user("alice"), user("bob"), 600)];
        assert!(ledger.apply(&batch, 0).is_err());
        assert_eq!(ledger.balance(&user("alice"), Asset::Usdc), 1_000, "nothing of the failed batch applied");
        assert_eq!(ledger.balance(&user("bob"), Asset::Usdc), 0);
        assert_eq!(ledger.balance(&AccountKey::Issuance, Asset::Usdc), -1_000);
    }

    #[test]
    fn retries_are_idempotent_and_reused_ids_conflict() {
        let mut ledger = funded();
        let pay = single("pay-1", user("alice"), user("bob"), 100);
        assert_eq!(ledger.apply(std::slice::from_ref(&pay), 0).unwrap().len(), 1);
        assert_eq!(ledger.apply(std::slice::from_ref(&pay), 0).unwrap().len(), 0, "a retry changes nothing");
        assert_eq!(ledger.balance(&user("bob"), Asset::Usdc), 100);
        let different = single("pay-1", user("alice"), user("bob"), 101);
        assert!(ledger.apply(&[different], 0).unwrap_err().is_conflict());
    }

    #[test]
    fn holds_reserve_then_post_partly_or_void_or_expire() {
        let mut ledger = funded();
        let hold = Transfer {
            kind: TransferKind::Pending { expires_at_ms: 1_000 },
            ..single("hold", user("alice"), AccountKey::Escrow("cl".into()), 700)
        };
        ledger.apply(&[hold], 0).unwrap();
        assert_eq!(ledger.account(&user("alice"), Asset::Usdc).available(), 300);
        let spend = single("spend", user("alice"), user("bob"), 400);
        assert!(ledger.apply(&[spend], 0).is_err(), "held funds cannot be spent twice");
        let post = Transfer {
            kind: TransferKind::Post { pending_id: "hold".into() },
            ..single("post", user("alice"), AccountKey::Escrow("cl".into()), 250)
        };
        ledger.apply(&[post], 10).unwrap();
        assert_eq!(ledger.balance(&user("alice"), Asset::Usdc), 750, "the unposted 450 is released");
        assert_eq!(ledger.account(&user("alice"), Asset::Usdc).available(), 750);
        assert_eq!(ledger.pending_status("hold"), Some(PendingStatus::Posted));
        let again = Transfer {
            kind: TransferKind::Void { pending_id: "hold".into() },
            ..single("void", user("alice"), AccountKey::Escrow("cl".into()), 0)
        };
        assert!(ledger.apply(&[again], 10).is_err(), "resolved once");

        let hold = Transfer {
            kind: TransferKind::Pending { expires_at_ms: 100 },
            ..single("hold-2", user("alice"), AccountKey::Escrow("cl".into()), 500)
        };
        ledger.apply(&[hold], 20).unwrap();
        assert_eq!(ledger.expired(99), Vec::<String>::new());
        assert_eq!(ledger.expired(100), ["hold-2"]);
        let late = Transfer {
            kind: TransferKind::Post { pending_id: "hold-2".into() },
            ..single("late", user("alice"), AccountKey::Escrow("cl".into()), 1)
        };
        assert!(ledger.apply(&[late], 100).is_err(), "an expired hold cannot be posted");
        let void = Transfer {
            kind: TransferKind::Void { pending_id: "hold-2".into() },
            ..single("expire:hold-2", user("alice"), AccountKey::Escrow("cl".into()), 0)
        };
        ledger.apply(&[void], 100).unwrap();
        assert_eq!(ledger.account(&user("alice"), Asset::Usdc).available(), 750);
    }
}
