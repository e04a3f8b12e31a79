//! The books: the in-memory `herd-ledger` state, rebuilt from the journal at start, and the
//! one path by which money moves — `App::post` applies a batch, chains and signs its entries,
//! and persists them before anyone sees the result. One lock orders the chain exactly as the
//! database does.

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey};
use herd_core::Address;
use herd_ledger::journal::{verify, Chain};
use herd_ledger::{Ledger, LedgerError, Transfer};
use tokio::sync::Mutex;

use crate::app::{now, App};
use crate::error::ApiError;
use crate::store::NewAudit;
use crate::store::{Alongside, SignedEntry, Store, StoreError};

/// Journal entries read per query while rebuilding.
const REPLAY_PAGE: u32 = 10_000;

pub struct Books {
    pub ledger: Ledger,
    chain: Chain,
}

pub struct SharedBooks {
    books: Mutex<Books>,
    key: SigningKey,
    /// Anyone can check the journal's signatures against this key.
    pub public_key: Address,
}

#[derive(Debug, thiserror::Error)]
pub enum BooksError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the journal does not verify: {0}")]
    Corrupt(#[from] herd_ledger::journal::Divergence),
    #[error(transparent)]
    Key(#[from] herd_keys::KeyError),
}

#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A single-use action's transfer was already applied: a replay.
    #[error("{0:?} was already carried out; a signed action is used once (sign a new one with a new id)")]
    Replayed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<PostError> for ApiError {
    fn from(error: PostError) -> ApiError {
        match error {
            PostError::Store(e) => e.into(),
            e @ PostError::Replayed(_) => ApiError { code: "replayed", ..ApiError::conflict(e.to_string()) },
            PostError::Ledger(LedgerError::InsufficientFunds { asset, available, needed, .. }) => ApiError {
                status: axum::http::StatusCode::CONFLICT,
                code: "insufficient_funds",
                message: format!(
                    "insufficient funds: this needs {}, {} available (deposit more, or pay in another asset)",
                    herd_core::money::format_amount(i128::from(needed), asset),
                    herd_core::money::format_amount(available.max(0), asset),
                ),
            },
            PostError::Ledger(e @ LedgerError::Invalid { .. }) => ApiError::bad_request(e.to_string()),
            PostError::Ledger(e) => ApiError::conflict(e.to_string()),
        }
    }
}

/// Where the ledger key of a database lives: beside the database file (mode 0600).
pub fn key_path_for(db_url: &str) -> Option<PathBuf> {
    let path = db_url.strip_prefix("sqlite://").or_else(|| db_url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next().unwrap_or(path);
    (!path.is_empty() && !path.contains(":memory:")).then(|| PathBuf::from(format!("{path}.ledger.key")))
}

/// Applies `tail` (entries after the books' head) to the books, verifying every link; if
/// they do not verify onto the head, rebuilds from the whole journal instead.
async fn catch_up(store: &Store, books: &mut Books, tail: &[SignedEntry]) -> Result<(), BooksError> {
    let Books { ledger, chain } = books;
    if let Err(divergence) = herd_ledger::journal::extend(ledger, chain, tail.iter().map(|e| &e.entry)) {
        tracing::warn!(%divergence, "the journal's new entries do not follow these books; rebuilding them");
        *books = replay(store).await?;
    }
    Ok(())
}

async fn replay(store: &Store) -> Result<Books, BooksError> {
    let mut entries = Vec::new();
    loop {
        let page = store.journal(entries.len() as u64, REPLAY_PAGE).await?;
        let done = page.len() < REPLAY_PAGE as usize;
        entries.extend(page.into_iter().map(|e| e.entry));
        if done {
            break;
        }
    }
    let (ledger, chain) = verify(&entries)?;
    Ok(Books { ledger, chain })
}

impl SharedBooks {
    /// Rebuilds the books from the journal (verifying every link) with the key at
    /// `key_path` (created if missing; ephemeral for in-memory databases).
    pub async fn load(store: &Store, key_path: Option<&Path>) -> Result<SharedBooks, BooksError> {
        let key = match key_path {
            Some(path) => herd_keys::load_or_create(path)?,
            None => SigningKey::generate(&mut rand::rngs::OsRng),
        };
        let books = replay(store).await?;
        tracing::info!(entries = books.chain.seq, head = %books.chain.head, "ledger rebuilt from the journal");
        Ok(SharedBooks { books: Mutex::new(books), public_key: herd_keys::address_of(&key), key })
    }

    /// A read of the books (balances, pending holds).
    pub async fn read<T>(&self, f: impl FnOnce(&Books) -> T) -> T {
        f(&*self.books.lock().await)
    }

    /// A secret for `purpose`, derived from the coordinator's ledger key (so it survives
    /// restarts with the key and needs no storage of its own).
    pub fn derive_secret(&self, purpose: &str) -> [u8; 32] {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        hash.update(b"herd-derived-secret-v1\n");
        hash.update(purpose.as_bytes());
        hash.update(b"\n");
        hash.update(self.key.to_bytes());
        hash.finalize().into()
    }

    pub async fn head(&self) -> Chain {
        self.books.lock().await.chain.clone()
    }

    /// Takes in what other writers (replicas) appended to the journal since this process's
    /// head, so reads here see their transfers too. Returns how many entries were new.
    pub async fn refresh(&self, store: &Store) -> Result<usize, BooksError> {
        let mut books = self.books.lock().await;
        let tail = store.journal(books.chain.seq, REPLAY_PAGE).await?;
        catch_up(store, &mut books, &tail).await?;
        Ok(tail.len())
    }
}

/// Signs a batch's last hash: each hash commits to every entry before it, so one signature
/// per batch vouches for the whole batch (and keeps signing off the per-transfer cost).
pub fn sign_batch(key: &SigningKey, entries: Vec<herd_ledger::journal::Entry>) -> Vec<SignedEntry> {
    let last = entries.len().saturating_sub(1);
    entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let signature = if i == last {
                bs58::encode(key.sign(entry.hash.as_bytes()).to_bytes()).into_string()
            } else {
                String::new()
            };
            SignedEntry { entry, signature }
        })
        .collect()
}

impl App {
    /// Applies a batch atomically and durably: in memory, chained, signed, then written in
    /// one database transaction. If the write fails, memory is rebuilt from the database, so
    /// memory never holds what the journal does not.
    pub async fn post(&self, batch: &[Transfer]) -> Result<Vec<SignedEntry>, PostError> {
        self.post_with(batch, &[]).await
    }

    /// `post`, writing `alongside` in the same database transaction as the entries.
    pub async fn post_with(&self, batch: &[Transfer], alongside: &[Alongside]) -> Result<Vec<SignedEntry>, PostError> {
        self.post_checked(batch, alongside, false).await
    }

    /// `post`, with the audit record of the action in the same transaction.
    pub async fn post_audited(&self, batch: &[Transfer], audit: NewAudit) -> Result<Vec<SignedEntry>, PostError> {
        self.post_checked(batch, &[Alongside::Audit(audit)], false).await
    }

    /// `post_with` for a single-use action: if any transfer id was already applied, nothing
    /// is posted and the answer is `Replayed` (where `post` would skip it as a retry). The
    /// check and the post hold the books' lock together, so two copies racing cannot both pass.
    pub async fn post_once(&self, batch: &[Transfer], alongside: &[Alongside]) -> Result<Vec<SignedEntry>, PostError> {
        self.post_checked(batch, alongside, true).await
    }

    async fn post_checked(
        &self,
        batch: &[Transfer],
        alongside: &[Alongside],
        once: bool,
    ) -> Result<Vec<SignedEntry>, PostError> {
        let shared = &self.books;
        let mut books = shared.books.lock().await;
        // The write transaction orders this post with every other writer's; first take in
        // what other replicas appended since this one's head.
        let mut write = self.store.begin_journal_write().await?;
        let tail = write.entries_after(books.chain.seq).await?;
        if !tail.is_empty() {
            catch_up(&self.store, &mut books, &tail).await.map_err(|error| match error {
                BooksError::Store(error) => PostError::Store(error),
                other => PostError::Store(crate::store::corrupt("journal", other)),
            })?;
        }
        if let Some(seen) = batch.iter().find(|t| once && books.ledger.has_applied(&t.id)) {
            return Err(PostError::Replayed(seen.id.clone()));
        }
        let at = now().0;
        let applied = books.ledger.apply(batch, at)?;
        let entries =
            sign_batch(&shared.key, applied.into_iter().map(|transfer| books.chain.append(at, transfer)).collect());
        let written = match write.append(&entries, alongside).await {
            Ok(()) => write.commit().await,
            Err(error) => Err(error),
        };
        if let Err(error) = written {
            tracing::error!(%error, "could not persist ledger entries; rebuilding the books from the journal");
            match replay(&self.store).await {
                Ok(rebuilt) => *books = rebuilt,
                Err(replay_error) => tracing::error!(%replay_error, "could not rebuild the books"),
            }
            return Err(error.into());
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_keys_live_beside_file_databases() {
        assert_eq!(
            key_path_for("sqlite:///var/lib/herd/herd.db"),
            Some(PathBuf::from("/var/lib/herd/herd.db.ledger.key"))
        );
        assert_eq!(key_path_for("sqlite://herd.db?mode=rwc"), Some(PathBuf::from("herd.db.ledger.key")));
        assert_eq!(key_path_for("sqlite::memory:"), None);
    }
}
