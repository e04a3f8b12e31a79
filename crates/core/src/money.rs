//! Money: integer minor units, never floats. Prices are in USD micros (10⁻⁶ $), which keeps
//! per-second amounts of cheap GPUs exact enough; fees are in basis points.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// USD in millionths of a dollar.
pub type Micros = i64;

pub const MICROS_PER_USD: Micros = 1_000_000;

/// 0.25% reservation fee, charged to the customer (and, at settlement, to the supplier).
pub const RESERVATION_FEE_BPS: i64 = 25;
/// Paying (or being paid) in USDC adds 2%; IO and credits add nothing.
pub const USDC_FEE_BPS: i64 = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Asset {
    #[default]
    Usdc,
    Io,
    Credits,
}

impl Asset {
    pub const ALL: [Asset; 3] = [Self::Usdc, Self::Io, Self::Credits];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Usdc => "usdc",
            Self::Io => "io",
            Self::Credits => "credits",
        }
    }

    /// The extra fee for settling in this asset.
    pub fn payment_fee_bps(self) -> i64 {
        match self {
            Self::Usdc => USDC_FEE_BPS,
            Self::Io | Self::Credits => 0,
        }
    }
}

impl fmt::Display for Asset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Asset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown asset {s:?}: expected one of usdc, io, credits"))
    }
}

/// `amount × bps / 10_000`, rounded half up (fees are never rounded away to nothing).
pub fn apply_bps(amount: Micros, bps: i64) -> Micros {
    let wide = i128::from(amount) * i128::from(bps);
    ((wide + 5_000) / 10_000) as Micros
}

/// Exact decimal USD ("2.5", "0.45") to micros; no floats anywhere near money.
pub fn parse_usd(text: &str) -> Result<Micros, String> {
    let bad = || format!("invalid price {text:?}: expected USD with at most 6 decimals, like 2.50");
    let (whole, fraction) = text.trim().trim_start_matches('$').split_once('.').unwrap_or((text.trim(), ""));
    if whole.is_empty() && fraction.is_empty() || fraction.len() > 6 {
        return Err(bad());
    }
    let digits = |s: &str| s.is_empty() || s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(fraction) {
        return Err(bad());
    }
    let whole: i64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
    let fraction: i64 = if fraction.is_empty() { 0 } else { format!("{fraction:0<6}").parse().map_err(|_| bad())? };
    whole.checked_mul(1_000_000).and_then(|w| w.checked_add(fraction)).filter(|v| *v > 0).ok_or_else(bad)
}

/// `$5,606.90`, `$0.000123`: USD micros for people (see `format_decimal`).
pub fn format_usd(amount: Micros) -> String {
    let sign = if amount < 0 { "-" } else { "" };
    format!("{sign}${}", format_decimal(amount.unsigned_abs().into()))
}

/// `5,606.90 USDC`, `12.5 IO`, `3.00 credits`: an amount of an asset, in its units.
pub fn format_amount(amount: i128, asset: Asset) -> String {
    let sign = if amount < 0 { "-" } else { "" };
    let unit = match asset {
        Asset::Usdc => "USDC",
        Asset::Io => "IO",
        Asset::Credits => "credits",
    };
    format!("{sign}{} {unit}", format_decimal(amount.unsigned_abs()))
}

/// Minor units (10⁻⁶) as a decimal with thousands separators and at least two decimals: the
/// digits beyond the cents appear only when they are not zero, so per-second amounts stay
/// exact and whole amounts read as money (`1,250.00`, `0.000417`).
pub fn format_decimal(minor: u128) -> String {
    let whole = (minor / 1_000_000).to_string();
    let mut grouped = String::with_capacity(whole.len() + whole.len() / 3);
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let fraction = format!("{:06}", minor % 1_000_000);
    let fraction = fraction.trim_end_matches('0');
    format!("{grouped}.{fraction:0<2}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_read_as_money_in_their_units_and_stay_exact() {
        assert_eq!(format_usd(5_606_899_200), "$5,606.8992");
        assert_eq!(format_usd(97_450_000), "$97.45");
        assert_eq!(format_usd(0), "$0.00");
        assert_eq!(format_usd(417), "$0.000417");
        assert_eq!(format_usd(-1_500_000), "-$1.50");
        assert_eq!(format_usd(1_234_567_000_000), "$1,234,567.00");
        assert_eq!(format_amount(5_606_900_000, Asset::Usdc), "5,606.90 USDC");
        assert_eq!(format_amount(12_500_000, Asset::Io), "12.50 IO");
        assert_eq!(format_amount(3_000_000, Asset::Credits), "3.00 credits");
        assert_eq!(format_decimal(100_000), "0.10");
    }

    #[test]
    fn usd_parses_exactly() {
        assert_eq!(parse_usd("2.50"), Ok(2_500_000));
        assert_eq!(parse_usd("$0.45"), Ok(450_000));
        assert_eq!(parse_usd("3"), Ok(3_000_000));
        assert_eq!(parse_usd(".000001"), Ok(1));
        for bad in ["", "abc", "1.2345678", "-1", "0", "1.2.3", "1e3"] {
            assert!(parse_usd(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fees_are_exact_in_basis_points() {
        assert_eq!(apply_bps(10_000_000, RESERVATION_FEE_BPS), 25_000);
        assert_eq!(apply_bps(10_000_000, USDC_FEE_BPS), 200_000);
        assert_eq!(apply_bps(1, RESERVATION_FEE_BPS), 0);
        assert_eq!(apply_bps(200, RESERVATION_FEE_BPS), 1, "half rounds up");
        assert_eq!(Asset::Io.payment_fee_bps(), 0);
        assert_eq!(Asset::Usdc.payment_fee_bps(), 200);
    }

    #[test]
    fn usd_formats_for_people() {
        assert_eq!(format_usd(2_500_000), "$2.50");
        assert_eq!(format_usd(-1), "-$0.000001");
    }
}
