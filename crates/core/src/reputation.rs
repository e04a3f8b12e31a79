//! A device's reputation (0..=1000), which the market ranks and filters by:
//!
//! - 500 × uptime: an exponentially weighted moving average of being online (ready or
//!   hired), half-life 24 h, so a week of steady service outweighs a bad afternoon;
//! - 300 × verification record: (passed + 1) / (passed + 4·failed + 2), so a new device
//!   starts at half and each failure weighs as much as four passes;
//! - 200 × lease record: (completed + 1) / (completed + 2·interrupted + 1), where an
//!   interrupted lease is one the device dropped out of while hired.

pub const REPUTATION_MAX: u16 = 1000;
pub const UPTIME_HALF_LIFE_MS: i64 = 24 * 3_600_000;
const PPM: f64 = 1_000_000.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Record {
    /// Uptime EWMA, parts per million.
    pub uptime_ppm: u32,
    pub verifications_passed: u32,
    pub verifications_failed: u32,
    pub leases_completed: u32,
    pub leases_interrupted: u32,
}

pub fn score(record: &Record) -> u16 {
    let uptime = f64::from(record.uptime_ppm.min(PPM as u32)) / PPM;
    let (passed, failed) = (f64::from(record.verifications_passed), f64::from(record.verifications_failed));
    let verification = (passed + 1.0) / (passed + 4.0 * failed + 2.0);
    let (completed, interrupted) = (f64::from(record.leases_completed), f64::from(record.leases_interrupted));
    let leases = (completed + 1.0) / (completed + 2.0 * interrupted + 1.0);
    let total = 500.0 * uptime + 300.0 * verification + 200.0 * leases;
    (total.round() as u16).min(REPUTATION_MAX)
}

/// The uptime EWMA after `elapsed_ms` spent online or not.
pub fn decay_uptime(uptime_ppm: u32, online: bool, elapsed_ms: i64) -> u32 {
    let keep = 0.5f64.powf(elapsed_ms.max(0) as f64 / UPTIME_HALF_LIFE_MS as f64);
    let target = if online { PPM } else { 0.0 };
    let next = f64::from(uptime_ppm) * keep + target * (1.0 - keep);
    next.round().clamp(0.0, PPM) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_device_starts_in_the_middle_and_earns_its_way_up() {
        let new = score(&Record::default());
        assert_eq!(new, 350, "no uptime yet, half the verification weight, full lease weight");
        let proven =
            Record { uptime_ppm: 1_000_000, verifications_passed: 20, leases_completed: 10, ..Record::default() };
        assert!(score(&proven) > 950);
        let failed = Record { verifications_failed: 1, ..proven };
        assert!(score(&failed) < score(&proven) - 40, "one failure costs a lot");
        let flaky = Record { leases_interrupted: 5, ..proven };
        assert!(score(&flaky) < score(&proven) - 80);
    }

    #[test]
    fn uptime_moves_half_way_in_a_half_life() {
        assert_eq!(decay_uptime(0, true, UPTIME_HALF_LIFE_MS), 500_000);
        assert_eq!(decay_uptime(1_000_000, false, UPTIME_HALF_LIFE_MS), 500_000);
        assert_eq!(decay_uptime(400_000, true, 0), 400_000);
        assert!(decay_uptime(0, true, 60_000) > 0, "a minute online counts");
    }
}
