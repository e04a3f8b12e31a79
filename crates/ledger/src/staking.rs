//! Staking rules: how much IO a device must stake to earn block rewards, and when a stake
//! may be withdrawn.

use crate::emission::IO;

/// Minimum stake per device: 200 IO × max(1, multiplier) × processors.
pub fn min_stake(multiplier_centi: u32, processors: u32) -> u64 {
    200 * IO * u64::from(multiplier_centi.max(100)) / 100 * u64::from(processors.max(1))
}

/// An unstake request waits 14 days before the IO can leave the vault.
pub const UNSTAKE_COOLDOWN_MS: i64 = 14 * 24 * 3_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UnstakeRefused {
    #[error("the device is hired: unstaking waits until its lease ends")]
    Hired,
    #[error("the 14-day cooldown ends at {until_ms} (ms since the epoch)")]
    CoolingDown { until_ms: i64 },
    #[error("no unstake was requested; request one first (the 14-day cooldown starts then)")]
    NotRequested,
}

/// Whether a stake whose withdrawal was requested at `requested_at_ms` may leave now.
pub fn may_withdraw(hired: bool, requested_at_ms: Option<i64>, now_ms: i64) -> Result<(), UnstakeRefused> {
    if hired {
        return Err(UnstakeRefused::Hired);
    }
    let requested = requested_at_ms.ok_or(UnstakeRefused::NotRequested)?;
    let until_ms = requested + UNSTAKE_COOLDOWN_MS;
    if now_ms < until_ms {
        return Err(UnstakeRefused::CoolingDown { until_ms });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_stakes_follow_the_published_rule() {
        assert_eq!(min_stake(1000, 8), 200 * 10 * 8 * IO, "8 × H100: 16,000 IO");
        assert_eq!(min_stake(125, 1), 250 * IO, "RTX 4090: 200 × 1.25");
        assert_eq!(min_stake(30, 16), 200 * 16 * IO, "multipliers below 1 count as 1");
    }

    #[test]
    fn unstaking_waits_for_the_lease_and_the_cooldown() {
        assert_eq!(may_withdraw(true, Some(0), UNSTAKE_COOLDOWN_MS), Err(UnstakeRefused::Hired));
        assert_eq!(may_withdraw(false, None, 0), Err(UnstakeRefused::NotRequested));
        assert_eq!(
            may_withdraw(false, Some(5), 10),
            Err(UnstakeRefused::CoolingDown { until_ms: 5 + UNSTAKE_COOLDOWN_MS })
        );
        assert_eq!(may_withdraw(false, Some(5), 5 + UNSTAKE_COOLDOWN_MS), Ok(()));
    }
}
