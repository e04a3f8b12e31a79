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

/// Every device counted once: by (state, model) and by country, each from one scan of a
/// covering index.
#[derive(Debug, Clone, Default)]
pub struct Census {
    /// (GPU model or None for CPU-only, state, devices, GPUs).
    pub by_state_model: Vec<(Option<String>, String, u64, u64)>,
    /// Every country, most devices first.
    pub countries: Vec<CountrySupply>,
    pub simulated: i64,
}

impl Census {
    pub fn by_state(&self) -> Vec<(String, u64)> {
        let mut states: Vec<(String, u64)> = Vec::new();
        for (_, state, devices, _) in &self.by_state_model {
            match states.iter_mut().find(|(s, _)| s == state) {
                Some(entry) => entry.1 += devices,
                None => states.push((state.clone(), *devices)),
            }
        }
        states.sort();
        states
    }

    /// Online (ready or hired) supply per model, most GPUs first.
    pub fn supply_by_model(&self) -> Vec<ModelSupply> {
        let mut models: Vec<ModelSupply> = Vec::new();
        for (model, state, devices, gpus) in self.by_state_model.iter().filter(|r| r.1 == "ready" || r.1 == "hired") {
            let name = model.clone().unwrap_or_else(|| "CPU".into());
            let hired = if state == "hired" { *gpus as i64 } else { 0 };
            match models.iter_mut().find(|m| m.model == name) {
                Some(m) => {
                    m.devices += *devices as i64;
                    m.gpus += *gpus as i64;
                    m.gpus_hired += hired;
                }
                None => models.push(ModelSupply {
                    model: name,
                    devices: *devices as i64,
                    gpus: *gpus as i64,
                    gpus_hired: hired,
                }),
            }
        }
        models.sort_by(|a, b| b.gpus.cmp(&a.gpus).then(b.devices.cmp(&a.devices)).then(a.model.cmp(&b.model)));
        models
    }
}

impl Store {
    pub async fn census(&self) -> StoreResult<Census> {
        let rows = sqlx::query(
            "SELECT gpu_model, state, COUNT(*), CAST(SUM(gpu_count) AS BIGINT) FROM devices GROUP BY state, gpu_model",
        )
        .fetch_all(&self.read)
        .await?;
        let by_state_model = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get::<i64, _>(2).max(0) as u64, r.get::<i64, _>(3).max(0) as u64))
            .collect();
        let rows = sqlx::query(
            "SELECT country, COUNT(*), CAST(SUM(CASE WHEN state IN ('ready', 'hired') THEN 1 ELSE 0 END) AS BIGINT),
                    CAST(SUM(gpu_count) AS BIGINT), CAST(SUM(simulated) AS BIGINT)
             FROM devices WHERE state != 'blocked' GROUP BY country",
        )
        .fetch_all(&self.read)
        .await?;
        let mut countries: Vec<CountrySupply> = rows
            .iter()
            .map(|r| CountrySupply { country: r.get(0), devices: r.get(1), online: r.get(2), gpus: r.get(3) })
            .collect();
        countries.sort_by(|a, b| b.devices.cmp(&a.devices).then(a.country.cmp(&b.country)));
        let simulated = rows.iter().map(|r| r.get::<i64, _>(4)).sum();
        Ok(Census { by_state_model, countries, simulated })
    }

    /// Clusters, newest first, a page at a time.
    pub async fn cluster_rows(&self, limit: u32, offset: u32) -> StoreResult<Vec<ClusterRow>> {
        let rows = sqlx::query(
            "SELECT c.id, c.state, c.kind, c.hardware, c.price_per_hour_micros, c.created_at, c.expires_at, c.ended_at,
                (SELECT COUNT(*) FROM cluster_nodes n WHERE n.cluster_id = c.id AND n.leave_reason IS NULL)
             FROM clusters c ORDER BY c.created_at DESC, c.id LIMIT $1 OFFSET $2",
        )
        .bind(i64::from(limit))
        .bind(i64::from(offset))
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

/// A simulated machine to add in bulk (benchmarks of a large network).
pub struct ImportedDevice {
    pub id: herd_core::Address,
    pub owner: herd_core::Address,
    pub country: String,
    pub spec: herd_core::DeviceSpec,
}

impl Store {
    /// Adds simulated, admitted, ready devices in one transaction: a network of 100,000
    /// devices in seconds, for `herd bench explorer` (a real hello and proof per device
    /// would take an hour). Each gets its registration and admission events, as a real one.
    pub async fn import_simulated(&self, devices: &[ImportedDevice], now: Timestamp) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        for device in devices {
            let offer = device.spec.gpu_offer();
            sqlx::query(
                "INSERT INTO devices (id, owner, state, state_reason, admitted, admitted_claim, simulated, country,
                    gpu_model, gpu_count, spec, advertise_addr, last_heartbeat_at, created_at, cpu_cores, ram_gib)
                 VALUES ($1, $2, 'ready', 'imported for a benchmark', 1, $3, 1, $4, $5, $6, $7, '127.0.0.1', $8, $9, $10, $11)",
            )
            .bind(device.id.as_str())
            .bind(device.owner.as_str())
            .bind(device.spec.admission_claim(true))
            .bind(&device.country)
            .bind(offer.map(|(model, _)| model.name))
            .bind(i64::from(offer.map_or(0, |(_, gpus)| gpus)))
            .bind(serde_json::to_string(&device.spec).expect("a spec always serialises"))
            .bind(now.0)
            .bind(now.0)
            .bind(i64::from(device.spec.cpu.logical_cores))
            .bind((device.spec.memory_bytes >> 30) as i64)
            .execute(&mut *tx)
            .await?;
            for (from, to, reason) in
                [(None, "pending", "registered"), (Some("pending"), "ready", "imported for a benchmark")]
            {
                sqlx::query(
                    "INSERT INTO device_events (device_id, from_state, to_state, reason, at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(device.id.as_str())
                .bind(from)
                .bind(to)
                .bind(reason)
                .bind(now.0)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Rows per `IN (…)` query when looking devices up by id.
const LOOKUP_CHUNK: usize = 500;

impl Store {
    /// (id, GPU model, GPU count) of these devices (unknown ids are left out).
    pub async fn device_hardware(&self, ids: &[String]) -> StoreResult<Vec<(String, Option<String>, u32)>> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(LOOKUP_CHUNK) {
            // Only placeholders are formatted into the SQL; every id is bound.
            let sql = format!(
                "SELECT id, gpu_model, gpu_count FROM devices WHERE id IN ({})",
                super::placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(&self.read).await? {
                found.push((row.get(0), row.get(1), row.get::<i64, _>(2).max(0) as u32));
            }
        }
        Ok(found)
    }
}
