//! What the in-memory market index is built from, per-model load for prices, and quotes.

use herd_core::catalog::{self, CPU_CORE_HOUR_MICROS};
use herd_core::{Address, ConnectivityTier, Micros, SecurityTier, Timestamp};
use herd_market::index::{DeviceOffer, CPU_ONLY};
use herd_market::pricing::ModelLoad;
use herd_proto::worker::Throughput;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{parse_col, Store, StoreResult};

/// Default floor: half the catalog reference per GPU-hour (so an idle market still pays above
/// it), or the reference core-hour price × cores for CPU-only machines.
pub fn default_floor_micros(gpu_model: Option<&str>, cpu_cores: u32) -> Micros {
    match gpu_model.and_then(catalog::lookup) {
        Some(model) => model.reference_price_micros / 2,
        None => Micros::from(cpu_cores.max(1)) * CPU_CORE_HOUR_MICROS,
    }
}

/// `multi_node` needs the one bind parameter: whether the network runs lease overlays.
const OFFER_COLUMNS: &str =
    "id, owner, state, gpu_model, gpu_count, country, connectivity, security, reputation, cpu_cores, ram_gib, floor_micros,
     ($1 = 0 OR simulated = 1 OR overlay_key IS NOT NULL) AS multi_node";

/// A device row as the market sees it, and whether it is free (ready) now.
fn offer_from_row(row: &AnyRow) -> StoreResult<(DeviceOffer, bool)> {
    let id: Address = parse_col("devices.id", row.get("id"))?;
    let owner: Address = parse_col("devices.owner", row.get("owner"))?;
    let gpu_model: Option<&str> = row.get("gpu_model");
    let cpu_cores = row.get::<i64, _>("cpu_cores").clamp(0, i64::from(u16::MAX)) as u16;
    let country: &str = row.get("country");
    let floor = row
        .get::<Option<i64>, _>("floor_micros")
        .unwrap_or_else(|| default_floor_micros(gpu_model, u32::from(cpu_cores)));
    let offer = DeviceOffer {
        key: id.public_key_bytes(),
        supplier: owner.public_key_bytes(),
        model: gpu_model.and_then(catalog::lookup).map_or(CPU_ONLY, catalog::model_index),
        gpu_count: row.get::<i64, _>("gpu_count").clamp(0, 255) as u8,
        country: country.as_bytes().try_into().unwrap_or(*b"ZZ"),
        connectivity: parse_col::<ConnectivityTier>("devices.connectivity", row.get("connectivity"))?,
        security: parse_col::<SecurityTier>("devices.security", row.get("security"))?,
        reputation: row.get::<i64, _>("reputation").clamp(0, 1000) as u16,
        cpu_cores,
        ram_gib: row.get::<i64, _>("ram_gib").clamp(0, i64::from(u16::MAX)) as u16,
        floor_micros: floor.clamp(0, Micros::from(u32::MAX)) as u32,
        multi_node: super::flag(row, "multi_node"),
    };
    Ok((offer, row.get::<&str, _>("state") == "ready"))
}

/// A stored quote, as its owner may redeem it.
pub struct StoredQuote {
    pub request: String,
    pub quote: String,
}

impl Store {
    /// Every device that can ever be leased (blocked ones cannot), for building the index.
    /// `overlay`: the network runs lease overlays (devices that cannot join one take
    /// single-node leases only).
    pub async fn market_offers(&self, overlay: bool) -> StoreResult<Vec<(DeviceOffer, bool)>> {
        // In id order: the index breaks ties by insertion order, and a replay must place alike.
        let sql = format!("SELECT {OFFER_COLUMNS} FROM devices WHERE state != 'blocked' ORDER BY id");
        let rows = sqlx::query(&sql).bind(i64::from(overlay)).fetch_all(&self.read).await?;
        rows.iter().map(offer_from_row).collect()
    }

    /// One device as the market sees it (None if unknown or blocked).
    pub async fn market_offer(&self, id: &Address, overlay: bool) -> StoreResult<Option<(DeviceOffer, bool)>> {
        let sql = format!("SELECT {OFFER_COLUMNS} FROM devices WHERE id = $2 AND state != 'blocked'");
        let row = sqlx::query(&sql).bind(i64::from(overlay)).bind(id.as_str()).fetch_optional(&self.read).await?;
        row.as_ref().map(offer_from_row).transpose()
    }

    /// Online (ready or hired) and hired GPUs per catalog model.
    pub async fn model_loads(&self) -> StoreResult<Vec<ModelLoad>> {
        let rows = sqlx::query(
            "SELECT gpu_model, state, CAST(SUM(gpu_count) AS BIGINT) FROM devices
             WHERE gpu_model IS NOT NULL AND state IN ('ready', 'hired') GROUP BY gpu_model, state",
        )
        .fetch_all(&self.read)
        .await?;
        let mut loads = vec![ModelLoad::default(); catalog::GPU_MODELS.len()];
        for row in &rows {
            let Some(model) = catalog::lookup(row.get(0)) else { continue };
            let load = &mut loads[catalog::model_index(model) as usize];
            let gpus = row.get::<i64, _>(2).max(0) as u64;
            load.online_gpus += gpus;
            if row.get::<&str, _>(1) == "hired" {
                load.hired_gpus += gpus;
            }
        }
        Ok(loads)
    }

    /// (gpu model or None for CPU-only, state, devices, GPUs) for online devices.
    pub async fn market_summary(&self) -> StoreResult<Vec<(Option<String>, String, u64, u64)>> {
        let rows = sqlx::query(
            "SELECT gpu_model, state, COUNT(*), CAST(SUM(gpu_count) AS BIGINT) FROM devices
             WHERE state IN ('ready', 'hired') GROUP BY gpu_model, state",
        )
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get::<i64, _>(2).max(0) as u64, r.get::<i64, _>(3).max(0) as u64))
            .collect())
    }

    /// Real (not simulated), unblocked devices that may earn the block ending at `at` (the end
    /// of the hour), with when each last came online (None if it is not online now); only
    /// `owner`'s when given.
    pub async fn reward_candidates(
        &self,
        at: i64,
        owner: Option<&Address>,
    ) -> StoreResult<Vec<crate::economy::RewardCandidate>> {
        // With an owner the query walks that owner's real devices in their index, without one
        // every real device; the two texts differ only in that clause.
        const SELECT: &str = "SELECT d.id, d.owner, d.gpu_model, d.gpu_count, d.cpu_cores, d.connectivity, d.state,
                (SELECT MAX(e.at) FROM device_events e
                  WHERE e.device_id = d.id AND (e.from_state IS NULL OR e.from_state IN ('offline', 'pending'))) AS online_since,
                EXISTS (SELECT 1 FROM verifications v WHERE v.device_id = d.id AND v.outcome = 'passed'
                        AND v.finished_at >= $1 - 3600000 AND v.finished_at < $1) AS verified_this_hour
             FROM devices d WHERE d.simulated = 0 AND d.state != 'blocked'";
        let rows = match owner {
            Some(owner) => {
                sqlx::query(&format!("{SELECT} AND d.owner = $2"))
                    .bind(at)
                    .bind(owner.as_str())
                    .fetch_all(&self.read)
                    .await?
            }
            None => sqlx::query(SELECT).bind(at).fetch_all(&self.read).await?,
        };
        rows.iter()
            .map(|r| {
                let state: &str = r.get("state");
                let online = matches!(state, "ready" | "hired");
                Ok(crate::economy::RewardCandidate {
                    id: r.get("id"),
                    owner: r.get("owner"),
                    gpu_model: r.get("gpu_model"),
                    gpu_count: r.get::<i64, _>("gpu_count").max(0) as u32,
                    cpu_cores: r.get::<i64, _>("cpu_cores").max(0) as u32,
                    connectivity: parse_col("devices.connectivity", r.get("connectivity"))?,
                    hired: state == "hired",
                    online_since_ms: r.get::<Option<i64>, _>("online_since").filter(|_| online),
                    verified_this_hour: super::flag(r, "verified_this_hour"),
                })
            })
            .collect()
    }

    /// A simulated device's declared throughput (None, and nothing written, for a real one).
    pub async fn record_declared_throughput(
        &self,
        id: &Address,
        throughput: Throughput,
    ) -> StoreResult<Option<ConnectivityTier>> {
        self.set_throughput(id, throughput, true).await
    }

    /// What the coordinator measured of a device's link, and the tier that follows.
    pub async fn record_throughput(&self, id: &Address, throughput: Throughput) -> StoreResult<ConnectivityTier> {
        Ok(self.set_throughput(id, throughput, false).await?.unwrap_or(ConnectivityTier::None))
    }

    async fn set_throughput(
        &self,
        id: &Address,
        throughput: Throughput,
        simulated_only: bool,
    ) -> StoreResult<Option<ConnectivityTier>> {
        let tier = ConnectivityTier::from_measurement(throughput.down_mbps, throughput.up_mbps);
        let done = sqlx::query(
            "UPDATE devices SET connectivity = $1, down_mbps = $2, up_mbps = $3 WHERE id = $4 AND ($5 = 0 OR simulated = 1)",
        )
        .bind(tier.as_str())
        .bind(i64::from(throughput.down_mbps))
        .bind(i64::from(throughput.up_mbps))
        .bind(id.as_str())
        .bind(i64::from(simulated_only))
        .execute(&self.write)
        .await?;
        Ok((done.rows_affected() == 1).then_some(tier))
    }

    pub async fn create_quote(
        &self,
        id: &str,
        owner: &Address,
        request: &str,
        quote: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM quotes WHERE expires_at <= $1").bind(now.0).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO quotes (id, owner, request, quote, expires_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(id)
            .bind(owner.as_str())
            .bind(request)
            .bind(quote)
            .bind(expires_at.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The owner's unexpired, unused quote; using it is `use_quote`, after the cluster exists.
    pub async fn quote(&self, id: &str, owner: &Address, now: Timestamp) -> StoreResult<Option<StoredQuote>> {
        let row = sqlx::query(
            "SELECT request, quote FROM quotes WHERE id = $1 AND owner = $2 AND used = 0 AND expires_at > $3",
        )
        .bind(id)
        .bind(owner.as_str())
        .bind(now.0)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|r| StoredQuote { request: r.get(0), quote: r.get(1) }))
    }

    /// Makes a claimed quote usable again (its cluster could not be created).
    pub async fn release_quote(&self, id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE quotes SET used = 0 WHERE id = $1").bind(id).execute(&self.write).await?;
        Ok(())
    }

    /// Marks a quote used; false if it was used meanwhile (each quote creates one cluster).
    pub async fn use_quote(&self, id: &str) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE quotes SET used = 1 WHERE id = $1 AND used = 0").bind(id).execute(&self.write).await?;
        Ok(done.rows_affected() == 1)
    }
}
