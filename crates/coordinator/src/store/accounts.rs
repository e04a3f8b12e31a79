//! Accounts, API keys (stored hashed) and the one-time challenges account keys sign.

use herd_core::{Address, Timestamp};
use herd_proto::api;
use sqlx::Row;

use super::{Store, StoreResult};

impl Store {
    /// Records a fresh challenge and drops expired ones, so the table stays bounded by the
    /// number issued within one validity window.
    pub async fn create_challenge(
        &self,
        nonce: &str,
        address: &Address,
        purpose: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM auth_challenges WHERE expires_at <= $1").bind(now.0).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO auth_challenges (nonce, address, purpose, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(nonce)
            .bind(address.as_str())
            .bind(purpose)
            .bind(expires_at.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks the challenge used; false if it is unknown, expired, for another address or
    /// purpose, or was used before (a replay).
    pub async fn consume_challenge(
        &self,
        nonce: &str,
        address: &Address,
        purpose: &str,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE auth_challenges SET used = 1
             WHERE nonce = $1 AND address = $2 AND purpose = $3 AND used = 0 AND expires_at > $4",
        )
        .bind(nonce)
        .bind(address.as_str())
        .bind(purpose)
        .bind(now.0)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Creates the account with its first API key in one transaction; false if it exists.
    pub async fn register_account(&self, address: &Address, key_hash: &str, now: Timestamp) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query("INSERT INTO accounts (address, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(address.as_str())
            .bind(now.0)
            .execute(&mut *tx)
            .await?;
        if inserted.rows_affected() == 0 {
            return Ok(false);
        }
        insert_api_key(&mut tx, address, key_hash, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn add_api_key(&self, address: &Address, key_hash: &str, now: Timestamp) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        insert_api_key(&mut tx, address, key_hash, now).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn address_for_api_key(&self, key_hash: &str) -> StoreResult<Option<Address>> {
        let row = sqlx::query("SELECT address FROM api_keys WHERE key_hash = $1")
            .bind(key_hash)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| super::parse_col("api_keys.address", r.get::<&str, _>(0))).transpose()
    }

    /// Records a pairing code (hashed) and drops expired ones.
    /// Issues a pairing code unless the owner already has `open_max` open (unused, unexpired)
    /// ones: false then, and nothing is written.
    pub async fn create_pairing_code(
        &self,
        code_hash: &str,
        owner: &Address,
        expires_at: Timestamp,
        now: Timestamp,
        open_max: u32,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM pairing_codes WHERE expires_at <= $1").bind(now.0).execute(&mut *tx).await?;
        let open: i64 = sqlx::query("SELECT COUNT(*) FROM pairing_codes WHERE owner = $1 AND used = 0")
            .bind(owner.as_str())
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        if open >= i64::from(open_max) {
            return Ok(false);
        }
        sqlx::query("INSERT INTO pairing_codes (code_hash, owner, expires_at) VALUES ($1, $2, $3)")
            .bind(code_hash)
            .bind(owner.as_str())
            .bind(expires_at.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Uses up a pairing code issued by `owner`; false if unknown, expired, someone else's
    /// or already used.
    pub async fn consume_pairing_code(&self, code_hash: &str, owner: &Address, now: Timestamp) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE pairing_codes SET used = 1 WHERE code_hash = $1 AND owner = $2 AND used = 0 AND expires_at > $3",
        )
        .bind(code_hash)
        .bind(owner.as_str())
        .bind(now.0)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn account_exists(&self, address: &Address) -> StoreResult<bool> {
        let row = sqlx::query("SELECT 1 FROM accounts WHERE address = $1")
            .bind(address.as_str())
            .fetch_optional(&self.read)
            .await?;
        Ok(row.is_some())
    }

    pub async fn account(&self, address: &Address) -> StoreResult<Option<api::Account>> {
        let row = sqlx::query(
            "SELECT created_at,
                (SELECT COUNT(*) FROM devices WHERE owner = a.address),
                (SELECT COUNT(*) FROM clusters WHERE owner = a.address AND state = 'running')
             FROM accounts a WHERE address = $1",
        )
        .bind(address.as_str())
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|r| api::Account {
            address: address.clone(),
            created_at: Timestamp(r.get(0)),
            devices: r.get::<i64, _>(1) as u64,
            clusters_running: r.get::<i64, _>(2) as u64,
        }))
    }
}

async fn insert_api_key(
    tx: &mut sqlx::AnyConnection,
    address: &Address,
    key_hash: &str,
    now: Timestamp,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO api_keys (key_hash, address, created_at) VALUES ($1, $2, $3)")
        .bind(key_hash)
        .bind(address.as_str())
        .bind(now.0)
        .execute(tx)
        .await?;
    Ok(())
}
