//! The IO emission schedule: 300M IO over 240 months, month 1 = 3,333,333 IO, each month
//! × 0.989849, the last month absorbing rounding so the total is exactly 300M. Amounts are
//! in IO minor units (10⁻⁶ IO).

/// Minor units per IO (6 decimals, like USDC and credits).
pub const IO: u64 = 1_000_000;
pub const SUPPLY_CAP: u64 = 800_000_000 * IO;
pub const GENESIS_SUPPLY: u64 = 500_000_000 * IO;
pub const EMISSION_TOTAL: u64 = 300_000_000 * IO;
pub const EMISSION_MONTHS: u32 = 240;
pub const FIRST_MONTH: u64 = 3_333_333 * IO;
/// The monthly decay, as a ratio of integers: 0.989849.
const DECAY_NUM: u128 = 989_849;
const DECAY_DEN: u128 = 1_000_000;
/// Hours in an emission month (30 days).
pub const HOURS_PER_MONTH: u64 = 720;

/// Emission of each month (index 0 = month 1), summing to exactly `EMISSION_TOTAL`.
pub fn schedule() -> Vec<u64> {
    let mut months = Vec::with_capacity(EMISSION_MONTHS as usize);
    let mut amount = u128::from(FIRST_MONTH);
    for _ in 0..EMISSION_MONTHS - 1 {
        months.push(amount as u64);
        amount = amount * DECAY_NUM / DECAY_DEN;
    }
    let emitted: u64 = months.iter().sum();
    months.push(EMISSION_TOTAL - emitted);
    months
}

/// Emission of month `month` (0-based) spread over its hours: equal parts, the remainder
/// going one unit at a time to the first hours, so the hours sum to the month exactly.
pub fn hourly(month_amount: u64, hour_of_month: u64) -> u64 {
    let base = month_amount / HOURS_PER_MONTH;
    let remainder = month_amount % HOURS_PER_MONTH;
    base + u64::from(hour_of_month < remainder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_emits_exactly_300m_and_decays() {
        let months = schedule();
        assert_eq!(months.len(), 240);
        assert_eq!(months.iter().sum::<u64>(), EMISSION_TOTAL);
        assert_eq!(months[0], 3_333_333 * IO);
        assert_eq!(months[1], 3_333_333 * IO * 989_849 / 1_000_000);
        assert!(months.windows(2).take(238).all(|w| w[1] < w[0]), "decays every month");
        assert!(months[239] > 0, "the last month absorbs rounding, positively");
        assert_eq!(GENESIS_SUPPLY + EMISSION_TOTAL, SUPPLY_CAP);
    }

    #[test]
    fn hours_sum_to_their_month() {
        for month in [schedule()[0], schedule()[239], 7, 719, 721] {
            assert_eq!((0..HOURS_PER_MONTH).map(|h| hourly(month, h)).sum::<u64>(), month);
        }
    }
}
