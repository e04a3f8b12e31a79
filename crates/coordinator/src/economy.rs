//! Token economics run by the coordinator: genesis, hourly block rewards and buyback-and-burn.
//! The rules are `herd-ledger`'s; this module gathers the inputs and posts the results, each
//! batch with a marker in the same transaction so no hour is paid twice or skipped.

use herd_core::catalog;
use herd_core::{Asset, ConnectivityTier};
use herd_ledger::emission::{self, EMISSION_TOTAL, GENESIS_SUPPLY, HOURS_PER_MONTH};
use herd_ledger::rewards::{self, Candidate};
use herd_ledger::staking::min_stake;
use herd_ledger::{AccountKey, Transfer, TransferKind};

use crate::app::{now, App};
use crate::books::PostError;
use crate::store::Alongside;

const HOUR_MS: i64 = 3_600_000;
/// Hours of rewards or buybacks caught up per tick after downtime (bounded work per tick).
const HOURS_PER_TICK_MAX: i64 = 24;
const GENESIS_AT: &str = "genesis_at";
const REWARDED_THROUGH: &str = "rewarded_through_hour";
const BOUGHT_BACK_THROUGH: &str = "bought_back_through_hour";

fn single(id: String, debit: AccountKey, credit: AccountKey, asset: Asset, amount: u64, code: &str) -> Transfer {
    Transfer { id, debit, credit, asset, amount, kind: TransferKind::Single, code: code.into() }
}

impl App {
    /// Mints the genesis supply once: the 300M emission pool and the genesis allocations
    /// (500M; to the treasury unless configured otherwise).
    pub async fn ensure_genesis(&self) -> Result<(), PostError> {
        if self.store.economy_marker(GENESIS_AT).await?.is_some() {
            return Ok(());
        }
        let allocations = &self.config.genesis_allocations;
        let total: u128 = allocations.iter().map(|(_, amount)| u128::from(*amount)).sum();
        if total != u128::from(GENESIS_SUPPLY) {
            let reason = format!(
                "genesis allocations sum to {total}, not the 500M IO genesis supply ({GENESIS_SUPPLY} minor units)"
            );
            return Err(herd_ledger::LedgerError::Invalid { index: 0, reason }.into());
        }
        let io = |id: String, credit, amount| single(id, AccountKey::Issuance, credit, Asset::Io, amount, "genesis");
        let mut batch = vec![io("genesis:emission-pool".into(), AccountKey::EmissionPool, EMISSION_TOTAL)];
        for (i, (account, amount)) in allocations.iter().enumerate() {
            batch.push(io(format!("genesis:allocation:{i}"), account.clone(), *amount));
        }
        let audit = crate::store::NewAudit::new(crate::store::audit::COORDINATOR, "genesis", None).detail(
            serde_json::json!({ "emission_pool": EMISSION_TOTAL, "allocations": allocations.len(), "supply": GENESIS_SUPPLY }),
        );
        let alongside = [Alongside::Marker { key: GENESIS_AT, value: now().0 }, Alongside::Audit(audit)];
        self.post_with(&batch, &alongside).await.map(drop)
    }

    /// Runs whatever economics are due: reward blocks and buybacks for finished hours.
    pub async fn run_economy(&self) -> Result<(), PostError> {
        let Some(genesis) = self.store.economy_marker(GENESIS_AT).await? else { return Ok(()) };
        let finished = (now().0 - genesis) / HOUR_MS; // hours fully elapsed
        let rewarded = self.store.economy_marker(REWARDED_THROUGH).await?.unwrap_or(-1);
        for hour in (rewarded + 1..finished).take(HOURS_PER_TICK_MAX as usize) {
            self.reward_hour(hour, genesis).await?;
        }
        let bought = self.store.economy_marker(BOUGHT_BACK_THROUGH).await?.unwrap_or(-1);
        if bought + 1 < finished {
            self.buyback(finished - 1).await?;
        }
        Ok(())
    }

    async fn reward_hour(&self, hour: i64, genesis: i64) -> Result<(), PostError> {
        let month = (hour / HOURS_PER_MONTH as i64) as usize;
        let emission =
            emission::schedule().get(month).map_or(0, |m| emission::hourly(*m, hour as u64 % HOURS_PER_MONTH));
        let at = genesis + (hour + 1) * HOUR_MS;
        let mut candidates = Vec::new();
        let mut owners = std::collections::HashMap::new();
        for device in self.store.reward_candidates(at, None).await? {
            owners.insert(device.id.clone(), device.owner.clone());
            candidates.push(self.reward_candidate(device, at).await);
        }
        let block = rewards::block(emission, &candidates);
        let mut batch: Vec<Transfer> = block
            .paid
            .iter()
            .filter(|(_, amount)| *amount > 0)
            .map(|(device, amount)| {
                let owner = owners.get(device).cloned().unwrap_or_default();
                single(
                    format!("reward:{hour}:{device}"),
                    AccountKey::EmissionPool,
                    AccountKey::User(owner),
                    Asset::Io,
                    *amount,
                    "block-reward",
                )
            })
            .collect();
        if block.to_treasury > 0 {
            batch.push(single(
                format!("reward:{hour}:treasury"),
                AccountKey::EmissionPool,
                AccountKey::Treasury,
                Asset::Io,
                block.to_treasury,
                "block-unallocated",
            ));
        }
        let failed: Vec<(String, &str)> = block.failed.iter().map(|(d, why)| (d.clone(), why.reason())).collect();
        let alongside = [
            Alongside::Marker { key: REWARDED_THROUGH, value: hour },
            Alongside::Block {
                hour,
                at,
                emission: emission as i64,
                paid: serde_json::to_string(&block.paid).expect("blocks serialise"),
                failed: serde_json::to_string(&failed).expect("blocks serialise"),
                to_treasury: block.to_treasury as i64,
            },
        ];
        self.post_with(&batch, &alongside).await.map(drop)
    }

    /// At least half of the fee pool buys IO at the oracle price and burns it; the rest goes
    /// to the treasury. One batch per hour, covering every asset.
    /// A device as the block ending at `at` judges it (its stake read from the books).
    /// Its minimum stake is `device_min_stake`.
    pub async fn reward_candidate(&self, device: RewardCandidate, at: i64) -> Candidate {
        let model = device.gpu_model.as_deref().and_then(catalog::lookup);
        let staked = self.books.read(|b| b.ledger.balance(&AccountKey::StakeVault(device.id.clone()), Asset::Io)).await;
        let (multiplier, quantity) = match model {
            Some(m) => (m.reward_multiplier_centi, device.gpu_count.max(1)),
            None => (100, device.cpu_cores.max(1)),
        };
        Candidate {
            device: device.id,
            gpu: model.is_some(),
            multiplier_centi: multiplier,
            quantity,
            connectivity: device.connectivity,
            hired: device.hired,
            continuous_uptime_ms: device.online_since_ms.map_or(0, |since| at - since),
            staked: staked.clamp(0, i128::from(u64::MAX)) as u64,
            min_stake: device_min_stake(device.gpu_model.as_deref(), device.gpu_count),
            verified_this_hour: device.verified_this_hour,
        }
    }

    async fn buyback(&self, hour: i64) -> Result<(), PostError> {
        let price = self.oracle.io_price_micros().max(1);
        let pool: Vec<(Asset, u64)> = self
            .books
            .read(|b| {
                Asset::ALL
                    .into_iter()
                    .map(|a| (a, b.ledger.balance(&AccountKey::FeePool, a).clamp(0, i128::from(u64::MAX)) as u64))
                    .collect()
            })
            .await;
        let mut batch = Vec::new();
        for (asset, balance) in pool.into_iter().filter(|(_, b)| *b > 0) {
            let burn_share = balance.div_ceil(2);
            let tag = format!("{hour}:{asset}");
            if asset == Asset::Io {
                batch.push(single(
                    format!("burn:{tag}"),
                    AccountKey::FeePool,
                    AccountKey::Burn,
                    asset,
                    burn_share,
                    "fee-burn",
                ));
            } else {
                let io = (u128::from(burn_share) * 1_000_000 / price as u128) as u64;
                batch.push(single(
                    format!("buyback:{tag}"),
                    AccountKey::FeePool,
                    AccountKey::External,
                    asset,
                    burn_share,
                    "buyback",
                ));
                if io > 0 {
                    batch.push(single(
                        format!("burn:{tag}"),
                        AccountKey::External,
                        AccountKey::Burn,
                        Asset::Io,
                        io,
                        "buyback-burn",
                    ));
                }
            }
            if balance > burn_share {
                batch.push(single(
                    format!("treasury:{tag}"),
                    AccountKey::FeePool,
                    AccountKey::Treasury,
                    asset,
                    balance - burn_share,
                    "fees-to-treasury",
                ));
            }
        }
        self.post_with(&batch, &[Alongside::Marker { key: BOUGHT_BACK_THROUGH, value: hour }]).await.map(drop)
    }
}

/// The stake a device needs to earn block rewards: by its GPUs' reward multiplier and count;
/// a CPU machine as one processor at multiplier 1.
pub fn device_min_stake(gpu_model: Option<&str>, gpu_count: u32) -> u64 {
    match gpu_model.and_then(catalog::lookup) {
        Some(model) => min_stake(model.reward_multiplier_centi, gpu_count.max(1)),
        None => min_stake(100, 1),
    }
}

/// A device as the reward run sees it.
pub struct RewardCandidate {
    pub id: String,
    pub owner: String,
    pub gpu_model: Option<String>,
    pub gpu_count: u32,
    pub cpu_cores: u32,
    pub connectivity: ConnectivityTier,
    pub hired: bool,
    /// When it last came online (None: not online now).
    pub online_since_ms: Option<i64>,
    /// Passed a proof of compute during the hour.
    pub verified_this_hour: bool,
}
