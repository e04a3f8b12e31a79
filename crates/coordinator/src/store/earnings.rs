//! What a supplier has earned, summed in SQL over the journal entries that touch their
//! account (the journal is the record; these are read-only views of it).

use herd_core::{Address, Asset, Timestamp};
use herd_ledger::AccountKey;
use sqlx::any::{Any, AnyArguments};
use sqlx::query::Query;
use sqlx::Row;

use super::ledger::account_tag;
use super::{parse_col, Backend, Store, StoreResult};

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

/// An account's journal entries, through its index.
const ACCOUNT_ENTRIES: &str = "FROM journal_accounts a JOIN journal j ON j.seq = a.seq";

/// The text at `path` (dot-separated, a constant) in a journal entry's JSON body.
fn field(backend: Backend, path: &str) -> String {
    match backend {
        Backend::Sqlite => format!("json_extract(j.body, '$.{path}')"),
        Backend::Postgres => format!("(j.body::jsonb #>> '{{{}}}')", path.replace('.', ",")),
    }
}

/// An entry's amount, as an integer.
fn amount(backend: Backend) -> String {
    format!("CAST({} AS BIGINT)", field(backend, "amount"))
}

/// Entries crediting the user `$2` (tag `$1`); the body check keeps out entries of another
/// account whose 64-bit tag collides.
fn credited_to(backend: Backend) -> String {
    format!("a.account = $1 AND {} = 'user' AND {} = $2", field(backend, "credit.kind"), field(backend, "credit.id"))
}

/// A reward id's device: what follows `reward:HOUR:`.
fn reward_device(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "substr(j.transfer_id, 8 + instr(substr(j.transfer_id, 8), ':'))",
        Backend::Postgres => "split_part(j.transfer_id, ':', 3)",
    }
}

/// A pay id's tenure epoch: the number after its last colon (`pay:…:EPOCH`). SQLite's nested
/// `replace`/`rtrim` takes what follows the last colon; PostgreSQL's pattern yields NULL (no
/// join) for an id without one.
fn pay_epoch(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => {
            "CAST(replace(j.transfer_id, rtrim(j.transfer_id, replace(j.transfer_id, ':', '')), '') AS INTEGER)"
        }
        Backend::Postgres => "CAST(substring(j.transfer_id from ':([0-9]+)$') AS BIGINT)",
    }
}

impl Store {
    /// Everything paid into `owner`'s account, by reason and asset.
    pub async fn income_of(&self, owner: &Address) -> StoreResult<Vec<Income>> {
        let b = self.backend();
        let rows = sqlx::query(&format!(
            "SELECT {} AS code, {} AS asset, CAST(SUM({}) AS BIGINT), COUNT(*)
             {ACCOUNT_ENTRIES} WHERE {} GROUP BY 1, 2 ORDER BY 1, 2",
            field(b, "code"),
            field(b, "asset"),
            amount(b),
            credited_to(b)
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
        let b = self.backend();
        let rows = sqlx::query(&format!(
            "SELECT {} AS device, CAST(SUM({}) AS BIGINT), COUNT(*), MAX(j.at)
             {ACCOUNT_ENTRIES} WHERE {} AND j.transfer_id LIKE 'reward:%' AND {} = 'block-reward'
             GROUP BY 1",
            reward_device(b),
            amount(b),
            credited_to(b),
            field(b, "code")
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

    /// Lease pay received for each of `owner`'s devices, per asset: pay ids end in the tenure's
    /// epoch (`pay:…:EPOCH`), and the tenure names the device.
    pub async fn job_earnings_by_device(&self, owner: &Address) -> StoreResult<Vec<(String, Asset, i64)>> {
        let b = self.backend();
        let rows = sqlx::query(&format!(
            "SELECT cn.device_id, {} AS asset, CAST(SUM({}) AS BIGINT)
             {ACCOUNT_ENTRIES} JOIN cluster_nodes cn ON cn.epoch = {}
             WHERE {} AND {} = 'lease-earning' AND j.transfer_id LIKE 'pay:%'
             GROUP BY 1, 2",
            field(b, "asset"),
            amount(b),
            pay_epoch(b),
            credited_to(b),
            field(b, "code")
        ))
        .bind(account_tag(&AccountKey::User(owner.to_string())))
        .bind(owner.as_str())
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| Ok((r.get(0), parse_col("journal.body.asset", r.get("asset"))?, r.get(2)))).collect()
    }

    /// Stake burned from these devices' vaults (slashes): the latest `limit`, newest first,
    /// and the total of all of them. One query over the vaults' journal index; the debit's
    /// id keeps out another vault whose tag collides.
    pub async fn slashes_of(
        &self,
        devices: &[Address],
        limit: u32,
    ) -> StoreResult<(Vec<(Address, super::SignedEntry)>, i64)> {
        if devices.is_empty() {
            return Ok((Vec::new(), 0));
        }
        // Only placeholders are formatted into the SQL; every value is bound.
        let b = self.backend();
        let n = devices.len();
        let from = format!(
            "FROM journal_accounts a JOIN journal j ON j.seq = a.seq
             WHERE a.account IN ({}) AND {} = 'burn' AND {} = 'stake_vault' AND {} IN ({})",
            super::placeholders(1, n),
            field(b, "credit.kind"),
            field(b, "debit.kind"),
            field(b, "debit.id"),
            super::placeholders(n + 1, n)
        );
        fn bind_all<'q>(sql: &'q str, devices: &[Address]) -> Query<'q, Any, AnyArguments<'q>> {
            let mut query = sqlx::query(sql);
            for device in devices {
                query = query.bind(account_tag(&AccountKey::StakeVault(device.to_string())));
            }
            for device in devices {
                query = query.bind(device.as_str().to_owned());
            }
            query
        }
        let total_sql = format!("SELECT CAST(COALESCE(SUM({}), 0) AS BIGINT) {from}", amount(b));
        let total: i64 = bind_all(&total_sql, devices).fetch_one(&self.read).await?.get(0);
        let rows_sql = format!("SELECT j.* {from} ORDER BY j.seq DESC LIMIT ${}", 2 * n + 1);
        let rows = bind_all(&rows_sql, devices).bind(i64::from(limit)).fetch_all(&self.read).await?;
        let mut slashes = Vec::new();
        for row in &rows {
            let entry = super::ledger::entry_from_row(row)?;
            if let AccountKey::StakeVault(vault) = &entry.entry.transfer.debit {
                slashes.push((parse_col("journal.body.debit", vault)?, entry));
            }
        }
        Ok((slashes, total))
    }

    /// The device's latest block rewards: (hour's end, amount), newest first.
    pub async fn device_block_rewards(
        &self,
        owner: &Address,
        device: &Address,
        limit: u32,
    ) -> StoreResult<Vec<(Timestamp, i64)>> {
        let b = self.backend();
        let rows = sqlx::query(&format!(
            "SELECT j.at, {}
             {ACCOUNT_ENTRIES} WHERE {} AND j.transfer_id LIKE 'reward:%:' || $3 AND {} = 'block-reward'
             ORDER BY j.seq DESC LIMIT $4",
            amount(b),
            credited_to(b),
            field(b, "code")
        ))
        .bind(account_tag(&AccountKey::User(owner.to_string())))
        .bind(owner.as_str())
        .bind(device.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(|r| (Timestamp(r.get(0)), r.get(1))).collect())
    }
}

#[cfg(test)]
mod tests {
    use herd_ledger::{Transfer, TransferKind};

    use super::*;
    use crate::test_support::{temp_store, test_app};

    fn transfer(id: &str, debit: AccountKey, credit: AccountKey, asset: Asset, amount: u64, code: &str) -> Transfer {
        Transfer { id: id.into(), debit, credit, asset, amount, kind: TransferKind::Single, code: code.into() }
    }

    #[tokio::test]
    async fn income_is_summed_by_reason_and_block_rewards_by_device() {
        let (_dir, store, url) = temp_store().await;
        let (app, _stop) = test_app(&store, url).await;
        app.ensure_genesis().await.unwrap();
        let owner: Address = "4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D16QAtJm5ZAz".parse().unwrap();
        let other: Address = "7U3sTTjfMk12eQ5p2XAwpL4NJRbRrBkwc5YdytAxQX2a".parse().unwrap();
        let (device_a, device_b) = (Address::from_public_key(&[1; 32]), Address::from_public_key(&[2; 32]));
        let (a, b) = (device_a.as_str(), device_b.as_str());
        let me = AccountKey::User(owner.to_string());
        let batch = [
            transfer(&format!("reward:1:{a}"), AccountKey::EmissionPool, me.clone(), Asset::Io, 5, "block-reward"),
            transfer(&format!("reward:2:{a}"), AccountKey::EmissionPool, me.clone(), Asset::Io, 7, "block-reward"),
            transfer(&format!("reward:2:{b}"), AccountKey::EmissionPool, me.clone(), Asset::Io, 11, "block-reward"),
            transfer(
                &format!("reward:2:{a}x"),
                AccountKey::EmissionPool,
                AccountKey::User(other.to_string()),
                Asset::Io,
                13,
                "block-reward",
            ),
            transfer("fund", AccountKey::Issuance, AccountKey::User(other.to_string()), Asset::Usdc, 1000, "faucet"),
            transfer("pay:1", AccountKey::User(other.to_string()), me.clone(), Asset::Usdc, 300, "lease-earning"),
            transfer("pay:2", AccountKey::User(other.to_string()), me.clone(), Asset::Usdc, 200, "lease-earning"),
            // Money going out is not income.
            transfer("out", me.clone(), AccountKey::Burn, Asset::Io, 1, "burn-for-credits"),
            transfer("stake", me.clone(), AccountKey::StakeVault(a.into()), Asset::Io, 20, "stake"),
            transfer("slash:1", AccountKey::StakeVault(a.into()), AccountKey::Burn, Asset::Io, 3, "slash-abandoned"),
            transfer("slash:2", AccountKey::StakeVault(a.into()), AccountKey::Burn, Asset::Io, 2, "slash-proof"),
        ];
        app.post(&batch).await.unwrap();

        let income = store.income_of(&owner).await.unwrap();
        let total = |code: &str, asset: Asset| {
            income.iter().find(|i| i.code == code && i.asset == asset).map(|i| (i.total, i.entries))
        };
        assert_eq!(total("block-reward", Asset::Io), Some((23, 3)));
        assert_eq!(total("lease-earning", Asset::Usdc), Some((500, 2)));
        assert_eq!(total("burn-for-credits", Asset::Io), None);

        let mut by_device = store.block_rewards_by_device(&owner).await.unwrap();
        by_device.sort_by(|x, y| x.device.cmp(&y.device));
        let summary: Vec<(&str, i64, i64)> = by_device.iter().map(|r| (r.device.as_str(), r.total, r.blocks)).collect();
        assert_eq!(summary, [(a, 12, 2), (b, 11, 1)]);

        let device = device_a.clone();
        let history = store.device_block_rewards(&owner, &device, 24).await.unwrap();
        assert_eq!(history.iter().map(|(_, amount)| *amount).collect::<Vec<_>>(), [7, 5], "newest first, only its own");
        assert!(store.device_block_rewards(&other, &device, 24).await.unwrap().is_empty());

        let devices = [device.clone(), device_b.clone()];
        let (slashes, total) = store.slashes_of(&devices, 1).await.unwrap();
        assert_eq!(total, 5, "every slash counts in the total");
        assert_eq!(slashes.len(), 1, "the list is limited");
        assert_eq!((&slashes[0].0, slashes[0].1.entry.transfer.code.as_str()), (&device, "slash-proof"));
        assert_eq!(store.slashes_of(&devices[1..], 10).await.unwrap().1, 0);
    }

    #[tokio::test]
    async fn lease_pay_is_attributed_to_the_device_of_its_tenure() {
        let (_dir, store, url) = temp_store().await;
        let (app, _stop) = test_app(&store, url).await;
        let supplier: Address = "4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D16QAtJm5ZAz".parse().unwrap();
        let customer: Address = "7U3sTTjfMk12eQ5p2XAwpL4NJRbRrBkwc5YdytAxQX2a".parse().unwrap();
        let (first, second) = (Address::from_public_key(&[1; 32]), Address::from_public_key(&[2; 32]));
        for (account, key) in [(&supplier, "k1"), (&customer, "k2")] {
            assert!(store.register_account(account, key, Timestamp(0)).await.unwrap());
        }
        for device in [&first, &second] {
            crate::test_support::admitted_device(&store, device, &supplier).await;
        }
        let at = crate::app::now();
        crate::test_support::lease_with_job(&store, &customer, &[(first.clone(), 10), (second.clone(), 10)], 0, at)
            .await;
        // A fresh database: the two tenures are epochs 1 and 2, in rank order.
        let me = AccountKey::User(supplier.to_string());
        let them = AccountKey::User(customer.to_string());
        let batch = [
            transfer("fund", AccountKey::Issuance, them.clone(), Asset::Usdc, 1000, "faucet"),
            transfer("pay:cl-a:0:1", them.clone(), me.clone(), Asset::Usdc, 300, "lease-earning"),
            transfer("pay:cl-a:0:2", them.clone(), me.clone(), Asset::Usdc, 200, "lease-earning"),
            transfer("pay:cl-a:60000:1", them.clone(), me.clone(), Asset::Usdc, 50, "lease-earning"),
            // Not lease pay: ignored.
            transfer("gift:1", them.clone(), me.clone(), Asset::Usdc, 7, "gift"),
        ];
        app.post(&batch).await.unwrap();
        let mut earned = store.job_earnings_by_device(&supplier).await.unwrap();
        earned.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(earned, [(first.to_string(), Asset::Usdc, 350), (second.to_string(), Asset::Usdc, 200)]);
        assert!(store.job_earnings_by_device(&customer).await.unwrap().is_empty());
    }
}
