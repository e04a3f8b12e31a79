//! The journal table: appended in order, read back to rebuild balances and for history.

use herd_core::Timestamp;
use herd_ledger::journal::Entry;
use herd_ledger::AccountKey;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::{json_col, Store, StoreResult};

/// An entry and the coordinator's signature over its hash.
#[derive(Debug, Clone)]
pub struct SignedEntry {
    pub entry: Entry,
    pub signature: String,
}

fn key_json(key: &AccountKey) -> String {
    serde_json::to_string(key).expect("account keys serialise")
}

fn entry_from_row(row: &SqliteRow) -> StoreResult<SignedEntry> {
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

/// Appends entries inside the caller's transaction (so a caller can commit other state,
/// such as a billing cursor, atomically with them).
pub(crate) async fn append_entries(conn: &mut SqliteConnection, entries: &[SignedEntry]) -> StoreResult<()> {
    for SignedEntry { entry, signature } in entries {
        let t = &entry.transfer;
        sqlx::query(
            "INSERT INTO journal (seq, at, transfer_id, debit, credit, asset, amount, code, body, prev_hash, hash, signature)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(entry.seq as i64)
        .bind(entry.at_ms)
        .bind(&t.id)
        .bind(key_json(&t.debit))
        .bind(key_json(&t.credit))
        .bind(t.asset.as_str())
        .bind(t.amount as i64)
        .bind(&t.code)
        .bind(serde_json::to_string(t).expect("transfers serialise"))
        .bind(&entry.prev_hash)
        .bind(&entry.hash)
        .bind(signature)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

impl Store {
    pub async fn append_journal(&self, entries: &[SignedEntry]) -> StoreResult<()> {
        let mut tx = self.write.begin().await?;
        append_entries(&mut tx, entries).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Entries after `after_seq`, oldest first.
    pub async fn journal(&self, after_seq: u64, limit: u32) -> StoreResult<Vec<SignedEntry>> {
        let rows = sqlx::query("SELECT * FROM journal WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(after_seq as i64)
            .bind(limit)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// Entries that move money in or out of `account`, newest first.
    pub async fn journal_of(&self, account: &AccountKey, limit: u32) -> StoreResult<Vec<SignedEntry>> {
        let key = key_json(account);
        let rows = sqlx::query(
            "SELECT * FROM journal WHERE debit = ?1 UNION SELECT * FROM journal WHERE credit = ?1 ORDER BY seq DESC LIMIT ?2",
        )
        .bind(key)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    pub async fn journal_len(&self) -> StoreResult<(u64, Option<Timestamp>)> {
        let row = sqlx::query("SELECT COUNT(*), MAX(at) FROM journal").fetch_one(&self.read).await?;
        Ok((row.get::<i64, _>(0) as u64, row.get::<Option<i64>, _>(1).map(Timestamp)))
    }
}
