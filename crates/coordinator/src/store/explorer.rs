//! What the public explorer shows, aggregated in SQL (pages stay fast on a large network:
//! counts and sums, never every device).

use herd_core::{ClusterId, Timestamp};
use sqlx::Row;

use super::{parse_col, Store, StoreResult};

/// Online supply of one GPU model (`CPU` for CPU-only machines).
#[derive(Debug, Clone)]
pub struct ModelSupply {
    pub model: String,
    pub devices: i64,
    pub gpus: i64,
    pub gpus_hired: i64,
}

#[derive(Debug, Clone)]
pub struct CountrySupply {
    pub country: String,
    pub devices: i64,
    pub online: i64,
    pub gpus: i64,
}

/// A cluster as the explorer lists it (no owner-only fields).
#[derive(Debug, Clone)]
pub struct ClusterRow {
    pub id: ClusterId,
    pub state: String,
    pub kind: String,
    pub hardware: String,
    pub nodes: i64,
    pub price_per_hour_micros: i64,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub ended_at: Option<Timestamp>,
}

impl Store {
    pub async fn supply_by_model(&self) -> StoreResult<Vec<ModelSupply>> {
        let rows = sqlx::query(
            "SELECT COALESCE(gpu_model, 'CPU'), COUNT(*), SUM(gpu_count),
                SUM(CASE WHEN state = 'hired' THEN gpu_count ELSE 0 END)
             FROM devices WHERE state IN ('ready', 'hired') GROUP BY 1 ORDER BY 3 DESC, 2 DESC, 1",
        )
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .iter()
            .map(|r| ModelSupply { model: r.get(0), devices: r.get(1), gpus: r.get(2), gpus_hired: r.get(3) })
            .collect())
    }

    pub async fn supply_by_country(&self, limit: u32) -> StoreResult<Vec<CountrySupply>> {
        let rows = sqlx::query(
            "SELECT country, COUNT(*), SUM(state IN ('ready', 'hired')), SUM(gpu_count)
             FROM devices WHERE state != 'blocked' GROUP BY country ORDER BY 2 DESC, 1 LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .iter()
            .map(|r| CountrySupply { country: r.get(0), devices: r.get(1), online: r.get(2), gpus: r.get(3) })
            .collect())
    }

    pub async fn simulated_device_count(&self) -> StoreResult<i64> {
        Ok(sqlx::query("SELECT COUNT(*) FROM devices WHERE simulated").fetch_one(&self.read).await?.get(0))
    }

    /// Clusters, newest first, a page at a time.
    pub async fn cluster_rows(&self, limit: u32, offset: u32) -> StoreResult<Vec<ClusterRow>> {
        let rows = sqlx::query(
            "SELECT c.id, c.state, c.kind, c.hardware, c.price_per_hour_micros, c.created_at, c.expires_at, c.ended_at,
                (SELECT COUNT(*) FROM cluster_nodes n WHERE n.cluster_id = c.id AND n.leave_reason IS NULL)
             FROM clusters c ORDER BY c.created_at DESC, c.id LIMIT ? OFFSET ?",
        )
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ClusterRow {
                    id: parse_col("clusters.id", r.get(0))?,
                    state: r.get(1),
                    kind: r.get(2),
                    hardware: r.get(3),
                    price_per_hour_micros: r.get(4),
                    created_at: Timestamp(r.get(5)),
                    expires_at: Timestamp(r.get(6)),
                    ended_at: r.get::<Option<i64>, _>(7).map(Timestamp),
                    nodes: r.get(8),
                })
            })
            .collect()
    }

    pub async fn cluster_count(&self) -> StoreResult<i64> {
        Ok(sqlx::query("SELECT COUNT(*) FROM clusters").fetch_one(&self.read).await?.get(0))
    }

    pub async fn device_count(&self) -> StoreResult<i64> {
        Ok(sqlx::query("SELECT COUNT(*) FROM devices").fetch_one(&self.read).await?.get(0))
    }
}
