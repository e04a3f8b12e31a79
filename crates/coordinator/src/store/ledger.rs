//! The journal table: appended in order, read back to rebuild balances and for history.

use herd_core::Timestamp;
use herd_ledger::journal::Entry;
use herd_ledger::AccountKey;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Row, Transaction};

use super::{json_col, Store, StoreError, StoreResult};

/// An entry and the coordinator's signature over its hash.
#[derive(Debug, Clone)]
pub struct SignedEntry {
    pub entry: Entry,
    pub signature: String,
}

/// The compact id history is indexed by: 8 bytes of SHA-256 over the account's JSON key.
pub(super) fn account_tag(key: &AccountKey) -> i64 {
    let digest = Sha256::digest(serde_json::to_vec(key).expect("account keys serialise"));
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

pub(super) fn entry_from_row(row: &AnyRow) -> StoreResult<SignedEntry> {
    Ok(SignedEntry {
        entry: Entry {
            seq: row.get::<i64, _>("seq") as u64,
            at_ms: row.get("at"),
            transfer: json_col("journal.body", row.get("body"))?,
            prev_hash: row.get("prev_hash"),
            hash: row.get("hash"),
        },
        signature: row.get("signature"),
    })
}

/// Rows per INSERT: 7 values each stays well under SQLite's 32,766 (and PostgreSQL's 65,535)
/// bound parameters, and
/// one statement per few hundred entries (not one per entry) is what makes batches cheap.
const ROWS_PER_INSERT: usize = 500;

/// Appends entries inside the caller's transaction (so a caller can commit other state,
/// such as a billing cursor, atomically with them).
pub(crate) async fn append_entries(conn: &mut AnyConnection, entries: &[SignedEntry]) -> StoreResult<()> {
    for chunk in entries.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO journal (seq, at, transfer_id, body, prev_hash, hash, signature) VALUES {}",
            super::value_rows(chunk.len(), 7)
        );
        let mut insert = sqlx::query(&sql);
        for SignedEntry { entry, signature } in chunk {
            let t = &entry.transfer;
            insert = insert
                .bind(entry.seq as i64)
                .bind(entry.at_ms)
                .bind(t.id.clone())
                .bind(serde_json::to_string(t).expect("transfers serialise"))
                .bind(entry.prev_hash.clone())
                .bind(entry.hash.clone())
                .bind(signature.clone());
        }
        insert.execute(&mut *conn).await?;
    }
    let mut pairs: Vec<(i64, i64)> = entries
        .iter()
        .flat_map(|e| {
            let seq = e.entry.seq as i64;
            [(account_tag(&e.entry.transfer.debit), seq), (account_tag(&e.entry.transfer.credit), seq)]
        })
        .collect();
    // Sorted across the batch, the index inserts walk the B-tree in order, not at random;
    // a transfer between an account and itself touches it once.
    pairs.sort_unstable();
    pairs.dedup();
    for chunk in pairs.chunks(ROWS_PER_INSERT * 3) {
        let sql = format!(
            "INSERT INTO journal_accounts (account, seq) VALUES {} ON CONFLICT DO NOTHING",
            super::value_rows(chunk.len(), 2)
        );
        let mut touches = sqlx::query(&sql);
        for (account, seq) in chunk {
            touches = touches.bind(*account).bind(*seq);
        }
        touches.execute(&mut *conn).await?;
    }
    Ok(())
}

/// State written in the same transaction as a batch's journal entries, so it is true exactly
/// when they are.
#[derive(Debug, Clone)]
pub enum Alongside {
    /// `economy[key] = value`.
    Marker { key: &'static str, value: i64 },
    /// A reward block for the explorer.
    Block { hour: i64, at: i64, emission: i64, paid: String, failed: String, to_treasury: i64 },
    /// The audit record of the action these entries carry out.
    Audit(super::NewAudit),
}

/// One append to the journal: a write transaction (serialized with every other writer, on
/// every replica) in which the writer first reads what others appended since its head, then
/// appends after it. [`JournalWrite::append`] checks that its first entry links to the
/// stored head, so two writers can never both extend the same head (a fork), whatever they
/// believe about each other; the primary key on `seq` refuses a second entry at a position.
pub struct JournalWrite {
    tx: Transaction<'static, Any>,
}

impl Store {
    pub async fn begin_journal_write(&self) -> StoreResult<JournalWrite> {
        Ok(JournalWrite { tx: self.begin_write().await? })
    }

    pub async fn append_journal(&self, entries: &[SignedEntry], alongside: &[Alongside]) -> StoreResult<()> {
        let mut write = self.begin_journal_write().await?;
        write.append(entries, alongside).await?;
        write.commit().await
    }
}

impl JournalWrite {
    /// Entries after `seq`, oldest first (empty when this writer is at the head).
    pub async fn entries_after(&mut self, seq: u64) -> StoreResult<Vec<SignedEntry>> {
        let rows = sqlx::query("SELECT * FROM journal WHERE seq > $1 ORDER BY seq")
            .bind(seq as i64)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(entry_from_row).collect()
    }

    pub async fn commit(self) -> StoreResult<()> {
        self.tx.commit().await?;
        Ok(())
    }

    pub async fn append(&mut self, entries: &[SignedEntry], alongside: &[Alongside]) -> StoreResult<()> {
        let tx = &mut self.tx;
        if let Some(first) = entries.first() {
            let head = sqlx::query("SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut **tx)
                .await?;
            let (head_seq, head_hash) = match &head {
                Some(row) => (row.get::<i64, _>(0) as u64, row.get::<String, _>(1)),
                None => (0, herd_ledger::journal::GENESIS_HASH.to_owned()),
            };
            if first.entry.seq != head_seq + 1 || first.entry.prev_hash != head_hash {
                return Err(StoreError::Fork { seq: first.entry.seq, head: head_seq });
            }
        }
        append_entries(tx, entries).await?;
        for item in alongside {
            match item {
                Alongside::Marker { key, value } => {
                    sqlx::query("INSERT INTO economy (key, value) VALUES ($1, $2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
                        .bind(key)
                        .bind(value)
                        .execute(&mut **tx)
                        .await?;
                }
                Alongside::Block { hour, at, emission, paid, failed, to_treasury } => {
                    sqlx::query(
                        "INSERT INTO reward_blocks (hour, at, emission, paid, failed, to_treasury) VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(hour)
                    .bind(at)
                    .bind(emission)
                    .bind(paid)
                    .bind(failed)
                    .bind(to_treasury)
                    .execute(&mut **tx)
                    .await?;
                }
                Alongside::Audit(entry) => {
                    super::audit::record(tx, entry, crate::app::now()).await?;
                }
            }
        }
        Ok(())
    }
}

impl Store {
    pub async fn economy_marker(&self, key: &str) -> StoreResult<Option<i64>> {
        let row = sqlx::query("SELECT value FROM economy WHERE key = $1").bind(key).fetch_optional(&self.read).await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Reward blocks, newest first: (hour, at, emission, paid JSON, failed JSON, to treasury).
    pub async fn reward_blocks(&self, limit: u32) -> StoreResult<Vec<(i64, i64, i64, String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT hour, at, emission, paid, failed, to_treasury FROM reward_blocks ORDER BY hour DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))).collect())
    }

    /// Entries after `after_seq`, oldest first.
    pub async fn journal(&self, after_seq: u64, limit: u32) -> StoreResult<Vec<SignedEntry>> {
        let rows = sqlx::query("SELECT * FROM journal WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after_seq as i64)
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// Entries that move money in or out of `account`, newest first.
    pub async fn journal_of(&self, account: &AccountKey, limit: u32) -> StoreResult<Vec<SignedEntry>> {
        let rows = sqlx::query(
            "SELECT j.* FROM journal_accounts a JOIN journal j ON j.seq = a.seq
             WHERE a.account = $1 ORDER BY a.seq DESC LIMIT $2",
        )
        .bind(account_tag(account))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        // The tag is a hash: keep only entries that really touch the account.
        let entries = rows.iter().map(entry_from_row).collect::<StoreResult<Vec<_>>>()?;
        Ok(entries
            .into_iter()
            .filter(|e| &e.entry.transfer.debit == account || &e.entry.transfer.credit == account)
            .collect())
    }

    pub async fn journal_len(&self) -> StoreResult<(u64, Option<Timestamp>)> {
        let row = sqlx::query("SELECT COUNT(*), MAX(at) FROM journal").fetch_one(&self.read).await?;
        Ok((row.get::<i64, _>(0) as u64, row.get::<Option<i64>, _>(1).map(Timestamp)))
    }
}
