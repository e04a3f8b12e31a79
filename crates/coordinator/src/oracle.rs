//! The IO price in USD, for billing in IO, minting credits and buying back IO to burn.

/// USD micros per IO. A production oracle (an exchange feed, a TWAP) implements this; a
/// devnet uses a fixed, configured price.
pub trait PriceOracle: Send + Sync {
    fn io_price_micros(&self) -> i64;
}

pub struct FixedPrice(pub i64);

impl PriceOracle for FixedPrice {
    fn io_price_micros(&self) -> i64 {
        self.0
    }
}
