//! The market as the coordinator runs it: the pure index and price book from `herd-market`,
//! kept in memory behind one lock and re-read from the database for every device whose state
//! changes. The database stays the truth; the index is a cache that placement reads in
//! microseconds instead of querying SQL per request.

use std::sync::{Mutex, MutexGuard};

use herd_core::Address;
use herd_market::index::MarketIndex;
use herd_market::pricing::PriceBook;

use crate::app::{now, App};
use crate::store::{Store, StoreResult};

pub struct Market {
    pub index: MarketIndex,
    pub prices: PriceBook,
    /// When prices last moved (ms); they move at most once a minute.
    pub prices_updated_ms: i64,
}

pub struct SharedMarket(Mutex<Market>);

impl SharedMarket {
    /// Builds the index from every leasable device and starts prices from current load.
    /// `overlay`: the network runs lease overlays, so multi-node leases take only devices
    /// that can join one.
    pub async fn load(store: &Store, overlay: bool) -> StoreResult<SharedMarket> {
        let mut index = MarketIndex::new();
        for (offer, free) in store.market_offers(overlay).await? {
            index.upsert(&offer, free);
        }
        let mut prices = PriceBook::new();
        let at = now().0;
        prices.update(at, &store.model_loads().await?);
        Ok(SharedMarket(Mutex::new(Market { index, prices, prices_updated_ms: at })))
    }

    /// Rebuilds the index from the database (devices another replica changed), keeping
    /// prices. The index is swapped whole, so a plan never sees half of it.
    pub async fn reload(&self, store: &Store, overlay: bool) -> StoreResult<()> {
        let mut index = MarketIndex::new();
        for (offer, free) in store.market_offers(overlay).await? {
            index.upsert(&offer, free);
        }
        self.lock().index = index;
        Ok(())
    }

    pub fn lock(&self) -> MutexGuard<'_, Market> {
        // A panic while holding the lock leaves a consistent index (each call is atomic
        // with respect to it); keep serving.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl App {
    /// Re-reads these devices from the database into the market index. Call after any change
    /// to a device's state or offer; a failure leaves the index stale for those devices,
    /// which placement detects at commit (the database re-checks every device).
    pub async fn sync_market(&self, devices: &[Address]) {
        for device in devices {
            match self.store.market_offer(device, self.overlay.is_some()).await {
                Ok(Some((offer, free))) => self.market.lock().index.upsert(&offer, free),
                Ok(None) => {
                    self.market.lock().index.set_free(&device.public_key_bytes(), false);
                }
                // Shutting down: the database closed under the last disconnects; nothing to keep.
                Err(crate::store::StoreError::Sqlx(sqlx::Error::PoolClosed)) => return,
                Err(error) => tracing::warn!(%device, %error, "could not refresh the market index"),
            }
        }
    }

    /// Moves prices with the current load, at most once a minute.
    pub async fn update_prices(&self) -> StoreResult<()> {
        const MINUTE_MS: i64 = 60_000;
        let at = now().0;
        if at - self.market.lock().prices_updated_ms < MINUTE_MS {
            return Ok(());
        }
        let loads = self.store.model_loads().await?;
        let mut market = self.market.lock();
        market.prices.update(at, &loads);
        market.prices_updated_ms = at;
        Ok(())
    }
}
