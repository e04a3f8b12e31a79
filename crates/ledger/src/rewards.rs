//! Hourly block rewards: the hour's emission, 95 % to GPU devices and 5 % to CPU devices,
//! shared among eligible devices in proportion to their score. Every unit is accounted for:
//! what no eligible device can take goes to the treasury, so a block always sums to its
//! emission.
//!
//! Eligibility (all required): ≥ 5 h continuous uptime, the minimum stake, passed verification
//! within the hour, connectivity tier above none.
//!
//! Score = reward multiplier (hundredths) × quantity × tier factor × hired bonus, where the
//! tier factor is Low 1.00, Medium 1.05, High 1.10, Ultra 1.20 and the hired bonus is 1.10.
//! CPU devices use multiplier 1.00 and quantity = cores.

use herd_core::ConnectivityTier;
use serde::{Deserialize, Serialize};

pub const GPU_SHARE_PERMILLE: u64 = 950;
pub const UPTIME_MIN_MS: i64 = 5 * 3_600_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub device: String,
    pub gpu: bool,
    /// Hundredths (H100 = 1000); CPU devices 100.
    pub multiplier_centi: u32,
    /// GPUs, or cores for CPU devices.
    pub quantity: u32,
    pub connectivity: ConnectivityTier,
    pub hired: bool,
    pub continuous_uptime_ms: i64,
    pub staked: u64,
    pub min_stake: u64,
    pub verified_this_hour: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ineligible {
    UptimeUnder5h,
    Understaked,
    NotVerifiedThisHour,
    NoConnectivity,
}

impl Ineligible {
    pub fn reason(self) -> &'static str {
        match self {
            Ineligible::UptimeUnder5h => "less than 5 h of continuous uptime",
            Ineligible::Understaked => "below the minimum stake",
            Ineligible::NotVerifiedThisHour => "no passed verification this hour",
            Ineligible::NoConnectivity => "connectivity tier none",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Block {
    pub emission: u64,
    /// (device, amount), largest first.
    pub paid: Vec<(String, u64)>,
    pub failed: Vec<(String, Ineligible)>,
    /// Emission no eligible device could take (an empty pool).
    pub to_treasury: u64,
}

fn eligibility(c: &Candidate) -> Result<(), Ineligible> {
    ineligibilities(c).first().map_or(Ok(()), |first| Err(*first))
}

/// Every reason the candidate cannot earn this block (empty: it can), in the order the
/// block reports the first one.
pub fn ineligibilities(c: &Candidate) -> Vec<Ineligible> {
    let checks = [
        (c.continuous_uptime_ms < UPTIME_MIN_MS, Ineligible::UptimeUnder5h),
        (c.staked < c.min_stake, Ineligible::Understaked),
        (!c.verified_this_hour, Ineligible::NotVerifiedThisHour),
        (c.connectivity == ConnectivityTier::None, Ineligible::NoConnectivity),
    ];
    checks.into_iter().filter(|(failed, _)| *failed).map(|(_, why)| why).collect()
}

fn tier_factor_permille(tier: ConnectivityTier) -> u128 {
    match tier {
        ConnectivityTier::None => 0,
        ConnectivityTier::Low => 1000,
        ConnectivityTier::Medium => 1050,
        ConnectivityTier::High => 1100,
        ConnectivityTier::Ultra => 1200,
    }
}

pub fn score(c: &Candidate) -> u128 {
    let hired = if c.hired { 1100 } else { 1000 };
    u128::from(c.multiplier_centi) * u128::from(c.quantity) * tier_factor_permille(c.connectivity) * hired
}

/// Splits `pool` in proportion to `scores`, exactly: floor shares, then the leftover units
/// one each to the largest remainders (ties to the earlier entry).
fn share(pool: u64, scores: &[u128]) -> Vec<u64> {
    let total: u128 = scores.iter().sum();
    if total == 0 {
        return vec![0; scores.len()];
    }
    let mut shares: Vec<u64> = Vec::with_capacity(scores.len());
    let mut remainders: Vec<(u128, usize)> = Vec::with_capacity(scores.len());
    for (i, s) in scores.iter().enumerate() {
        let exact = u128::from(pool) * s;
        shares.push((exact / total) as u64);
        remainders.push((exact % total, i));
    }
    let leftover = pool - shares.iter().sum::<u64>();
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in remainders.into_iter().take(leftover as usize) {
        shares[i] += 1;
    }
    shares
}

/// The block for one hour's `emission`.
pub fn block(emission: u64, candidates: &[Candidate]) -> Block {
    let gpu_pool = emission * GPU_SHARE_PERMILLE / 1000;
    let cpu_pool = emission - gpu_pool;
    let mut result = Block { emission, ..Block::default() };
    for (gpu, pool) in [(true, gpu_pool), (false, cpu_pool)] {
        let mut eligible = Vec::new();
        for c in candidates.iter().filter(|c| c.gpu == gpu) {
            match eligibility(c) {
                Ok(()) => eligible.push(c),
                Err(why) => result.failed.push((c.device.clone(), why)),
            }
        }
        if eligible.is_empty() {
            result.to_treasury += pool;
            continue;
        }
        let scores: Vec<u128> = eligible.iter().map(|c| score(c)).collect();
        for (c, amount) in eligible.iter().zip(share(pool, &scores)) {
            result.paid.push((c.device.clone(), amount));
        }
    }
    result.paid.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    result
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn candidate(device: &str, gpu: bool, multiplier_centi: u32, quantity: u32) -> Candidate {
        Candidate {
            device: device.into(),
            gpu,
            multiplier_centi,
            quantity,
            connectivity: ConnectivityTier::Low,
            hired: false,
            continuous_uptime_ms: UPTIME_MIN_MS,
            staked: 1,
            min_stake: 1,
            verified_this_hour: true,
        }
    }

    #[test]
    fn pools_split_95_5_and_shares_follow_scores() {
        let candidates =
            [candidate("h100", true, 1000, 8), candidate("4090", true, 125, 1), candidate("cpu", false, 100, 32)];
        let block = block(1_000_000, &candidates);
        let paid = |d: &str| block.paid.iter().find(|p| p.0 == d).unwrap().1;
        assert_eq!(paid("cpu"), 50_000);
        assert_eq!(paid("h100") + paid("4090"), 950_000);
        assert_eq!(paid("h100") / paid("4090"), 64, "8 × 10.00 vs 1 × 1.25");
        assert_eq!(block.to_treasury, 0);
    }

    #[test]
    fn ineligible_devices_are_listed_with_their_reason() {
        let mut young = candidate("young", true, 1000, 1);
        young.continuous_uptime_ms = UPTIME_MIN_MS - 1;
        let mut poor = candidate("poor", true, 1000, 1);
        poor.staked = 0;
        let mut unverified = candidate("unverified", true, 1000, 1);
        unverified.verified_this_hour = false;
        let mut offline = candidate("offline", true, 1000, 1);
        offline.connectivity = ConnectivityTier::None;
        let block = block(1_000, &[young, poor, unverified, offline]);
        let reasons: Vec<Ineligible> = block.failed.iter().map(|f| f.1).collect();
        assert_eq!(
            reasons,
            [
                Ineligible::UptimeUnder5h,
                Ineligible::Understaked,
                Ineligible::NotVerifiedThisHour,
                Ineligible::NoConnectivity
            ]
        );
        assert_eq!(block.to_treasury, 1_000, "nobody eligible: all to the treasury");
    }

    #[test]
    fn every_reason_a_device_cannot_earn_is_listed() {
        let mut nothing_right = candidate("new", true, 1000, 1);
        nothing_right.continuous_uptime_ms = 0;
        nothing_right.staked = 0;
        nothing_right.verified_this_hour = false;
        nothing_right.connectivity = ConnectivityTier::None;
        assert_eq!(ineligibilities(&nothing_right).len(), 4);
        let mut unstaked = candidate("unstaked", true, 1000, 1);
        unstaked.staked = 0;
        assert_eq!(ineligibilities(&unstaked), [Ineligible::Understaked]);
        assert!(ineligibilities(&candidate("fine", true, 1000, 1)).is_empty());
    }

    #[test]
    fn tiers_and_hiring_raise_the_score() {
        let base = candidate("a", true, 1000, 1);
        let mut hired_ultra = base.clone();
        hired_ultra.hired = true;
        hired_ultra.connectivity = ConnectivityTier::Ultra;
        assert_eq!(score(&hired_ultra) * 1000 / score(&base), 1320);
    }
}
