//! Browser sessions and one-time sign-in links, both stored as hashes of their secrets.

use herd_core::{Address, Timestamp};
use sqlx::Row;

use super::{parse_col, Store, StoreResult};

impl Store {
    /// Records a session and drops expired ones, so the table stays bounded by the sessions
    /// alive at once.
    pub async fn create_session(
        &self,
        token_hash: &str,
        address: &Address,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM web_sessions WHERE expires_at <= $1").bind(now.0).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO web_sessions (token_hash, address, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(token_hash)
            .bind(address.as_str())
            .bind(now.0)
            .bind(expires_at.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The account signed in with this session, if it exists and has not expired.
    pub async fn session_address(&self, token_hash: &str, now: Timestamp) -> StoreResult<Option<Address>> {
        let row = sqlx::query("SELECT address FROM web_sessions WHERE token_hash = $1 AND expires_at > $2")
            .bind(token_hash)
            .bind(now.0)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| parse_col("web_sessions.address", r.get::<&str, _>(0))).transpose()
    }

    pub async fn delete_session(&self, token_hash: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM web_sessions WHERE token_hash = $1").bind(token_hash).execute(&self.write).await?;
        Ok(())
    }

    /// Records a sign-in link (hashed) and drops expired ones.
    pub async fn create_login_link(
        &self,
        code_hash: &str,
        address: &Address,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM login_links WHERE expires_at <= $1").bind(now.0).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO login_links (code_hash, address, expires_at) VALUES ($1, $2, $3)")
            .bind(code_hash)
            .bind(address.as_str())
            .bind(expires_at.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whose link this is, without using it up (the confirmation page shows the address).
    pub async fn login_link_address(&self, code_hash: &str, now: Timestamp) -> StoreResult<Option<Address>> {
        let row = sqlx::query("SELECT address FROM login_links WHERE code_hash = $1 AND used = 0 AND expires_at > $2")
            .bind(code_hash)
            .bind(now.0)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| parse_col("login_links.address", r.get::<&str, _>(0))).transpose()
    }

    /// Uses the link up; its account, or None if it is unknown, expired or was used before.
    pub async fn consume_login_link(&self, code_hash: &str, now: Timestamp) -> StoreResult<Option<Address>> {
        let row = sqlx::query(
            "UPDATE login_links SET used = 1 WHERE code_hash = $1 AND used = 0 AND expires_at > $2 RETURNING address",
        )
        .bind(code_hash)
        .bind(now.0)
        .fetch_optional(&self.write)
        .await?;
        row.map(|r| parse_col("login_links.address", r.get::<&str, _>(0))).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::temp_store;

    async fn account(store: &Store) -> Address {
        let address: Address = "4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D16QAtJm5ZAz".parse().unwrap();
        assert!(store.register_account(&address, "key-hash", Timestamp(0)).await.unwrap());
        address
    }

    #[tokio::test]
    async fn sessions_expire_and_end() {
        let (_dir, store, _) = temp_store().await;
        let address = account(&store).await;
        store.create_session("s1", &address, Timestamp(1_000), Timestamp(0)).await.unwrap();
        assert_eq!(store.session_address("s1", Timestamp(999)).await.unwrap(), Some(address.clone()));
        assert_eq!(store.session_address("s1", Timestamp(1_000)).await.unwrap(), None, "expired");
        assert_eq!(store.session_address("s2", Timestamp(0)).await.unwrap(), None, "unknown");
        store.create_session("s3", &address, Timestamp(5_000), Timestamp(2_000)).await.unwrap();
        store.delete_session("s3").await.unwrap();
        assert_eq!(store.session_address("s3", Timestamp(2_001)).await.unwrap(), None, "signed out");
    }

    #[tokio::test]
    async fn a_login_link_works_once_and_not_after_it_expires() {
        let (_dir, store, _) = temp_store().await;
        let address = account(&store).await;
        store.create_login_link("l1", &address, Timestamp(1_000), Timestamp(0)).await.unwrap();
        assert_eq!(store.login_link_address("l1", Timestamp(10)).await.unwrap(), Some(address.clone()));
        assert_eq!(
            store.login_link_address("l1", Timestamp(10)).await.unwrap(),
            Some(address.clone()),
            "looking does not use it"
        );
        assert_eq!(store.consume_login_link("l1", Timestamp(10)).await.unwrap(), Some(address.clone()));
        assert_eq!(store.consume_login_link("l1", Timestamp(11)).await.unwrap(), None, "single use");
        store.create_login_link("l2", &address, Timestamp(1_000), Timestamp(0)).await.unwrap();
        assert_eq!(store.consume_login_link("l2", Timestamp(1_000)).await.unwrap(), None, "expired");
    }
}
