use herd_core::{Address, Timestamp};
use herd_proto::api::Payout;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{parse_col, Store, StoreResult};

fn payout_from_row(row: &AnyRow) -> StoreResult<Payout> {
    Ok(Payout {
        id: row.get("id"),
        owner: parse_col("payouts.owner", row.get("owner"))?,
        asset: parse_col("payouts.asset", row.get("asset"))?,
        amount: row.get("amount"),
        recipient: row.get("recipient"),
        url: row.get("url"),
        state: row.get("state"),
        tx_signature: row.get("tx_signature"),
        created_at: Timestamp(row.get("created_at")),
        settled_at: row.get::<Option<i64>, _>("settled_at").map(Timestamp),
    })
}

impl Store {
    pub async fn insert_payout(&self, payout: &Payout, reference: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO payouts (id, owner, asset, amount, recipient, reference, url, state, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&payout.id)
        .bind(payout.owner.as_str())
        .bind(payout.asset.as_str())
        .bind(payout.amount)
        .bind(&payout.recipient)
        .bind(reference)
        .bind(&payout.url)
        .bind(&payout.state)
        .bind(payout.created_at.0)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub async fn payout(&self, id: &str) -> StoreResult<Option<Payout>> {
        let row = sqlx::query("SELECT * FROM payouts WHERE id = $1").bind(id).fetch_optional(&self.read).await?;
        row.as_ref().map(payout_from_row).transpose()
    }

    pub async fn payouts_of(&self, owner: &Address, limit: u32) -> StoreResult<Vec<Payout>> {
        let rows = sqlx::query("SELECT * FROM payouts WHERE owner = $1 ORDER BY created_at DESC LIMIT $2")
            .bind(owner.as_str())
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(payout_from_row).collect()
    }

    /// Marks a pending payout settled; false if it was not pending.
    pub async fn settle_payout(&self, id: &str, tx_signature: &str, now: Timestamp) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE payouts SET state = 'settled', tx_signature = $1, settled_at = $2 WHERE id = $3 AND state = 'pending'",
        )
        .bind(tx_signature)
        .bind(now.0)
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Store {
    /// Starts (or keeps) a device's unstake cooldown; returns when it was requested.
    pub async fn request_unstake(&self, device: &Address, now: Timestamp) -> StoreResult<Timestamp> {
        sqlx::query("INSERT INTO unstake_requests (device_id, requested_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(device.as_str())
            .bind(now.0)
            .execute(&self.write)
            .await?;
        Ok(self.unstake_requested_at(device).await?.unwrap_or(now))
    }

    pub async fn unstake_requested_at(&self, device: &Address) -> StoreResult<Option<Timestamp>> {
        let row = sqlx::query("SELECT requested_at FROM unstake_requests WHERE device_id = $1")
            .bind(device.as_str())
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| Timestamp(r.get(0))))
    }

    pub async fn clear_unstake(&self, device: &Address) -> StoreResult<()> {
        sqlx::query("DELETE FROM unstake_requests WHERE device_id = $1")
            .bind(device.as_str())
            .execute(&self.write)
            .await?;
        Ok(())
    }
}
