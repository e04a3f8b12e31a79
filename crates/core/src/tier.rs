//! Connectivity and security tiers: what a device offers and a request may require.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Measured network throughput class. Thresholds are (download, upload) in Mbit/s:
/// Low 100/10, Medium 400/300, High 800/600, Ultra 1600/1200; below Low is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ConnectivityTier {
    #[default]
    None,
    Low,
    Medium,
    High,
    Ultra,
}

impl ConnectivityTier {
    pub const ALL: [ConnectivityTier; 5] = [Self::None, Self::Low, Self::Medium, Self::High, Self::Ultra];

    /// (download, upload) Mbit/s a device must reach for the tier.
    pub fn thresholds_mbps(self) -> (u32, u32) {
        match self {
            Self::None => (0, 0),
            Self::Low => (100, 10),
            Self::Medium => (400, 300),
            Self::High => (800, 600),
            Self::Ultra => (1600, 1200),
        }
    }

    /// The highest tier whose thresholds both measurements reach.
    pub fn from_measurement(down_mbps: u32, up_mbps: u32) -> ConnectivityTier {
        Self::ALL
            .into_iter()
            .rev()
            .find(|tier| {
                let (down, up) = tier.thresholds_mbps();
                down_mbps >= down && up_mbps >= up
            })
            .unwrap_or(Self::None)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Ultra => "ultra",
        }
    }
}

/// Megabits per second for `bytes` moved in `elapsed` (saturating; a zero duration counts
/// as a microsecond).
pub fn mbps(bytes: u64, elapsed: std::time::Duration) -> u32 {
    let megabits = bytes as f64 * 8.0 / 1e6;
    (megabits / elapsed.as_secs_f64().max(1e-6)).min(f64::from(u32::MAX)) as u32
}

/// How much a device is trusted: `verified` passed proof of compute; `datacenter` is also
/// operated in an attested data centre.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SecurityTier {
    #[default]
    Any,
    Verified,
    Datacenter,
}

impl SecurityTier {
    pub const ALL: [SecurityTier; 3] = [Self::Any, Self::Verified, Self::Datacenter];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::Verified => "verified",
            Self::Datacenter => "datacenter",
        }
    }
}

macro_rules! text_enum {
    ($name:ident, $what:literal, $allowed:literal) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .into_iter()
                    .find(|t| t.as_str().eq_ignore_ascii_case(s))
                    .ok_or_else(|| format!(concat!("unknown ", $what, " {:?}: expected one of ", $allowed), s))
            }
        }
    };
}

text_enum!(ConnectivityTier, "connectivity", "none, low, medium, high, ultra");
text_enum!(SecurityTier, "security", "any, verified, datacenter");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurements_map_to_the_published_tiers() {
        use ConnectivityTier::*;
        assert_eq!(ConnectivityTier::from_measurement(50, 50), None);
        assert_eq!(ConnectivityTier::from_measurement(100, 10), Low);
        assert_eq!(ConnectivityTier::from_measurement(500, 200), Low, "upload holds it back");
        assert_eq!(ConnectivityTier::from_measurement(400, 300), Medium);
        assert_eq!(ConnectivityTier::from_measurement(1000, 700), High);
        assert_eq!(ConnectivityTier::from_measurement(10_000, 10_000), Ultra);
        assert!(Ultra > High && High > Medium && Medium > Low && Low > None);
    }

    #[test]
    fn tiers_parse_and_order() {
        assert_eq!("VERIFIED".parse::<SecurityTier>().unwrap(), SecurityTier::Verified);
        assert!(SecurityTier::Datacenter > SecurityTier::Verified);
        assert!("gold".parse::<SecurityTier>().unwrap_err().contains("any, verified, datacenter"));
        assert_eq!("high".parse::<ConnectivityTier>().unwrap(), ConnectivityTier::High);
    }
}
