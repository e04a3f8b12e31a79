//! What a supplier has earned, summed in SQL over the journal entries that touch their
//! account (the journal is the record; these are read-only views of it).

use herd_core::{Address, Asset, Timestamp};
use herd_ledger::AccountKey;
use sqlx::Row;

use super::ledger::account_tag;
use super::{parse_col, Store, StoreResult};

/// Money that came into an account for one reason (`code`) in one asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Income {
    pub code: String,
    pub asset: Asset,
    pub total: i64,
    pub entries: i64,
}

/// One device's block rewards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRewards {
    pub device: String,
    pub total: i64,
    pub blocks: i64,
    pub last_at: Timestamp,
}

/// Entries crediting `owner`, as a join over the account's journal index. The `json_extract`
/// check keeps out entries of another account whose 64-bit tag collides.
const CREDITED_TO: &str = "FROM journal_accounts a JOIN journal j ON j.seq = a.seq
     WHERE a.account = ?1 AND json_extract(j.body, '$.credit.kind') = 'user' AND json_extract(j.body, '$.credit.id') = ?2";

impl Store {
    /// Everything paid into `owner`'s account, by reason and asset.
    pub async fn income_of(&self, owner: &Address) -> StoreResult<Vec<Income>> {
        let rows = sqlx::query(&format!(
            "SELECT json_extract(j.body, '$.code') AS code, json_extract(j.body, '$.asset') AS asset,
                    SUM(json_extract(j.body, '$.amount')), COUNT(*) {CREDITED_TO} GROUP BY 1, 2 ORDER BY 1, 2"
        ))
        .bind(account_tag(&AccountKey::User(owner.to_string())))
        .bind(owner.as_str())
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Income {
                    code: r.get("code"),
                    asset: parse_col("journal.body.asset", r.get("asset"))?,
                    total: r.get(2),
                    entries: r.get(3),
                })
            })
            .collect()
    }

    /// Block rewards paid for each of `owner`'s devices (reward ids are `reward:HOUR:DEVICE`).
    pub async fn block_rewards_by_device(&self, owner: &Address) -> StoreResult<Vec<DeviceRewards>> {
        let rows = sqlx::query(&format!(
            "SELECT substr(j.transfer_id, 8 + instr(substr(j.transfer_id, 8), ':')) AS device,
                    SUM(json_extract(j.body, '$.amount')), COUNT(*), MAX(j.at)
             {CREDITED_TO} AND j.transfer_id LIKE 'reward:%' AND json_extract(j.body, '$.code') = 'block-reward'
             GROUP BY 1"
        ))
        .bind(account_tag(&AccountKey::User(owner.to_string())))
        .bind(owner.as_str())
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .iter()
            .map(|r| DeviceRewards {
                device: r.get(0),
                total: r.get(1),
                blocks: r.get(2),
                last_at: Timestamp(r.get(3)),
            })
            .collect())
    }

    /// The device's latest block rewards: (hour's end, amount), newest first.
    pub async fn device_block_rewards(
        &self,
        owner: &Address,
        device: &Address,
        limit: u32,
    ) -> StoreResult<Vec<(Timestamp, i64)>> {
        let rows = sqlx::query(&format!(
            "SELECT j.at, json_extract(j.body, '$.amount')
             {CREDITED_TO} AND j.transfer_id LIKE 'reward:%:' || ?3 AND json_extract(j.body, '$.code') = 'block-reward'
             ORDER BY j.seq DESC LIMIT ?4"
        ))
        .bind(account_tag(&AccountKey::User(owner.to_string())))
        .bind(owner.as_str())
        .bind(device.as_str())
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(|r| (Timestamp(r.get(0)), r.get(1))).collect())
    }
}
