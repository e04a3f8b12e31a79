//! Clusters: committing a placement plan atomically, reading, extending and terminating.

use herd_core::device::DeviceEvent as Event;
use herd_core::{
    Address, Asset, ClusterId, ClusterKind, ClusterState, DeviceState, JobId, Micros, RayNodeState, TaskState,
    Timestamp,
};
use herd_proto::api;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::devices::apply_event;
use super::jobs::refresh_job_state;
use super::{parse_col, Store, StoreResult};

/// A plan named a device that is no longer ready (another request took it first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StalePlan {
    pub device: Address,
}

/// What terminating a cluster released, so the caller can tell workers and log followers.
#[derive(Debug, Clone, Default)]
pub struct Terminated {
    pub devices: Vec<Address>,
    pub jobs: Vec<JobId>,
}

pub struct NewCluster<'a> {
    pub id: &'a ClusterId,
    pub owner: &'a Address,
    pub hardware: &'a str,
    pub country: Option<&'a str>,
    /// In rank order, each with what it costs per hour.
    pub devices: &'a [(Address, Micros)],
    pub price_per_hour_micros: Micros,
    pub asset: Asset,
    /// The request as JSON, kept for replacements and audits.
    pub request: &'a str,
    pub now: Timestamp,
    pub expires_at: Timestamp,
    /// Ray clusters: the Ray version and the head's rank.
    pub ray: Option<(&'a str, u32)>,
}

/// A device taking a rank of a cluster.
pub(super) struct Tenure<'a> {
    pub cluster: &'a ClusterId,
    pub rank: u32,
    pub device: &'a Address,
    pub node_hour_micros: Micros,
}

/// Records a device's tenure of a rank; returns its lease epoch.
pub(super) async fn insert_node(
    conn: &mut AnyConnection,
    tenure: &Tenure<'_>,
    ray: bool,
    head: bool,
    now: Timestamp,
) -> StoreResult<i64> {
    let row = sqlx::query(
        "INSERT INTO cluster_nodes (cluster_id, rank, device_id, node_hour_micros, ray_head, ray_state, joined_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING epoch",
    )
    .bind(tenure.cluster.as_str())
    .bind(i64::from(tenure.rank))
    .bind(tenure.device.as_str())
    .bind(tenure.node_hour_micros)
    .bind(i64::from(head))
    .bind(ray.then_some(RayNodeState::Starting.as_str()))
    .bind(now.0)
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.get(0))
}

impl Store {
    /// Applies a placement plan in one transaction. Every device must still be ready and
    /// unleased; otherwise nothing is written and the caller re-plans.
    pub async fn commit_cluster(&self, new: &NewCluster<'_>) -> StoreResult<Result<(), StalePlan>> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO clusters (id, owner, state, hardware, country, created_at, expires_at,
                price_per_hour_micros, asset, request, kind, ray_version, nodes_wanted)
             VALUES ($1, $2, 'running', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(new.id.as_str())
        .bind(new.owner.as_str())
        .bind(new.hardware)
        .bind(new.country)
        .bind(new.now.0)
        .bind(new.expires_at.0)
        .bind(new.price_per_hour_micros)
        .bind(new.asset.as_str())
        .bind(new.request)
        .bind(if new.ray.is_some() { ClusterKind::Ray } else { ClusterKind::Plain }.as_str())
        .bind(new.ray.map(|(version, _)| version))
        .bind(new.devices.len() as i64)
        .execute(&mut *tx)
        .await?;
        let reason = format!("leased to cluster {}", new.id);
        for (rank, (device, node_hour)) in new.devices.iter().enumerate() {
            let taken = sqlx::query(
                "UPDATE devices SET cluster_id = $1 WHERE id = $2 AND state = 'ready' AND cluster_id IS NULL",
            )
            .bind(new.id.as_str())
            .bind(device.as_str())
            .execute(&mut *tx)
            .await?;
            if taken.rows_affected() != 1 {
                return Ok(Err(StalePlan { device: device.clone() }));
            }
            apply_event(&mut tx, device, DeviceState::Ready, Event::Lease, &reason, new.now).await?;
            let head = new.ray.is_some_and(|(_, head)| head as usize == rank);
            let tenure = Tenure { cluster: new.id, rank: rank as u32, device, node_hour_micros: *node_hour };
            insert_node(&mut tx, &tenure, new.ray.is_some(), head, new.now).await?;
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    pub async fn cluster(&self, id: &ClusterId) -> StoreResult<Option<api::Cluster>> {
        let row =
            sqlx::query("SELECT * FROM clusters WHERE id = $1").bind(id.as_str()).fetch_optional(&self.read).await?;
        match row {
            Some(row) => Ok(Some(self.cluster_from_row(&row).await?)),
            None => Ok(None),
        }
    }

    /// The owner's clusters, newest first; terminated ones only when asked.
    pub async fn clusters_of(
        &self,
        owner: &Address,
        include_terminated: bool,
        limit: u32,
    ) -> StoreResult<Vec<api::Cluster>> {
        let rows = sqlx::query(
            "SELECT * FROM clusters WHERE owner = $1 AND ($2 OR state = 'running') ORDER BY created_at DESC LIMIT $3",
        )
        .bind(owner.as_str())
        .bind(include_terminated)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        let mut clusters = Vec::with_capacity(rows.len());
        for row in &rows {
            clusters.push(self.cluster_from_row(row).await?);
        }
        Ok(clusters)
    }

    async fn cluster_from_row(&self, row: &AnyRow) -> StoreResult<api::Cluster> {
        let id: ClusterId = parse_col("clusters.id", row.get("id"))?;
        // A rank's current holder (or its holder when the lease ended) has no leave reason;
        // the devices it replaced have one.
        let rows = sqlx::query(
            "SELECT n.rank, n.device_id, n.node_hour_micros, n.ray_head, n.ray_state, n.ray_detail, n.ray_restarts,
                n.joined_at, n.left_at, n.leave_reason, d.state, d.country, d.advertise_addr, d.simulated,
                o.address AS overlay_address, o.up AS overlay_up, o.report AS overlay_report
             FROM cluster_nodes n JOIN devices d ON d.id = n.device_id
             LEFT JOIN overlay_certs o ON o.cluster_id = n.cluster_id AND o.device_id = n.device_id
                AND o.epoch = n.epoch AND o.revoked_at IS NULL AND o.replaced_at IS NULL
             WHERE n.cluster_id = $1 ORDER BY n.rank, n.epoch",
        )
        .bind(id.as_str())
        .fetch_all(&self.read)
        .await?;
        let (departed, current): (Vec<_>, Vec<_>) =
            rows.iter().partition(|n| n.get::<Option<&str>, _>("leave_reason").is_some());
        let departed = departed
            .iter()
            .map(|n| {
                Ok(api::DepartedNode {
                    rank: n.get::<i64, _>("rank") as u32,
                    device_id: parse_col("cluster_nodes.device_id", n.get("device_id"))?,
                    node_hour_micros: n.get("node_hour_micros"),
                    joined_at: Timestamp(n.get("joined_at")),
                    left_at: Timestamp(n.get::<Option<i64>, _>("left_at").unwrap_or_default()),
                    reason: n.get::<Option<String>, _>("leave_reason").unwrap_or_default(),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let nodes = current
            .iter()
            .map(|n| {
                Ok(api::ClusterNode {
                    rank: n.get::<i64, _>("rank") as u32,
                    device_id: parse_col("cluster_nodes.device_id", n.get("device_id"))?,
                    device_state: parse_col("devices.state", n.get("state"))?,
                    country: n.get("country"),
                    address: n.get("advertise_addr"),
                    simulated: super::flag(n, "simulated"),
                    overlay: node_overlay(n),
                    node_hour_micros: n.get("node_hour_micros"),
                    ray: match n.get::<Option<&str>, _>("ray_state") {
                        Some(state) => Some(api::RayNodeStatus {
                            head: super::flag(n, "ray_head"),
                            state: parse_col("cluster_nodes.ray_state", state)?,
                            detail: n.get("ray_detail"),
                            restarts: n.get::<i64, _>("ray_restarts") as u32,
                        }),
                        None => None,
                    },
                    joined_at: Timestamp(n.get("joined_at")),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let kind: ClusterKind = parse_col("clusters.kind", row.get("kind"))?;
        let ray = match kind {
            ClusterKind::Plain => None,
            ClusterKind::Ray => {
                let states: Vec<(bool, RayNodeState)> =
                    nodes.iter().filter_map(|n| n.ray.as_ref().map(|r| (r.head, r.state))).collect();
                let cluster_state: ClusterState = parse_col("clusters.state", row.get("state"))?;
                Some(api::RayAccess {
                    version: row.get::<Option<String>, _>("ray_version").unwrap_or_default(),
                    state: if cluster_state == ClusterState::Running {
                        api::RayClusterState::of_nodes(&states)
                    } else {
                        api::RayClusterState::Down
                    },
                    nodes_ready: states.iter().filter(|(_, s)| *s == RayNodeState::Running).count() as u32,
                    // Filled in by the API, which holds the secret.
                    path: String::new(),
                })
            }
        };
        Ok(api::Cluster {
            kind,
            ray,
            owner: parse_col("clusters.owner", row.get("owner"))?,
            state: parse_col("clusters.state", row.get("state"))?,
            hardware: row.get("hardware"),
            country: row.get("country"),
            nodes,
            price_per_hour_micros: row.get("price_per_hour_micros"),
            asset: parse_col("clusters.asset", row.get("asset"))?,
            created_at: Timestamp(row.get("created_at")),
            expires_at: Timestamp(row.get("expires_at")),
            ended_at: row.get::<Option<i64>, _>("ended_at").map(Timestamp),
            end_reason: row.get("end_reason"),
            healing: row.get("healing"),
            departed,
            id,
        })
    }

    pub async fn cluster_owner(&self, id: &ClusterId) -> StoreResult<Option<(Address, ClusterState)>> {
        let row = sqlx::query("SELECT owner, state FROM clusters WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| Ok((parse_col("clusters.owner", r.get(0))?, parse_col("clusters.state", r.get(1))?))).transpose()
    }

    /// Pushes a running cluster's end out by `add_ms`; None if it is not running.
    pub async fn extend_cluster(&self, id: &ClusterId, add_ms: i64) -> StoreResult<Option<Timestamp>> {
        let row = sqlx::query(
            "UPDATE clusters SET expires_at = expires_at + $1 WHERE id = $2 AND state = 'running' RETURNING expires_at",
        )
        .bind(add_ms)
        .bind(id.as_str())
        .fetch_optional(&self.write)
        .await?;
        Ok(row.map(|r| Timestamp(r.get(0))))
    }

    /// Ends the lease: frees its devices and stops its unfinished tasks, in one transaction.
    /// None if the cluster is unknown or already terminated.
    pub async fn terminate_cluster(
        &self,
        id: &ClusterId,
        reason: &str,
        now: Timestamp,
    ) -> StoreResult<Option<Terminated>> {
        let mut tx = self.begin_write().await?;
        let ended = sqlx::query(
            "UPDATE clusters SET state = 'terminated', ended_at = $1, end_reason = $2 WHERE id = $3 AND state = 'running'",
        )
        .bind(now.0)
        .bind(reason)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        if ended.rows_affected() == 0 {
            return Ok(None);
        }
        let mut terminated = Terminated::default();
        let devices = sqlx::query("SELECT id, state FROM devices WHERE cluster_id = $1")
            .bind(id.as_str())
            .fetch_all(&mut *tx)
            .await?;
        let release_reason = format!("released from cluster {id}: {reason}");
        for row in &devices {
            let device: Address = parse_col("devices.id", row.get(0))?;
            let state: DeviceState = parse_col("devices.state", row.get(1))?;
            sqlx::query("UPDATE devices SET cluster_id = NULL WHERE id = $1")
                .bind(device.as_str())
                .execute(&mut *tx)
                .await?;
            apply_event(&mut tx, &device, state, Event::Release, &release_reason, now).await?;
            terminated.devices.push(device);
        }
        let jobs = sqlx::query("SELECT id FROM jobs WHERE cluster_id = $1 AND state IN ('pending', 'running')")
            .bind(id.as_str())
            .fetch_all(&mut *tx)
            .await?;
        let task_error = format!("cluster terminated: {reason}");
        for row in &jobs {
            let job: JobId = parse_col("jobs.id", row.get(0))?;
            // A job waiting to be retried ends with the lease, as it stands.
            sqlx::query("UPDATE jobs SET retry_wanted_at = NULL WHERE id = $1")
                .bind(job.as_str())
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE job_tasks SET state = $1, error = $2, finished_at = $3
                 WHERE job_id = $4 AND state IN ('pending', 'running')",
            )
            .bind(TaskState::Stopped.as_str())
            .bind(&task_error)
            .bind(now.0)
            .bind(job.as_str())
            .execute(&mut *tx)
            .await?;
            refresh_job_state(&mut tx, &job, now).await?;
            terminated.jobs.push(job);
        }
        // Ray jobs have no tasks: they end with the cluster that runs them.
        sqlx::query(
            "UPDATE jobs SET state = 'stopped', message = $1, finished_at = $2, retry_wanted_at = NULL
             WHERE cluster_id = $3 AND kind = 'ray' AND state IN ('pending', 'running')",
        )
        .bind(&task_error)
        .bind(now.0)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE cluster_nodes SET ray_state = 'stopped', ray_detail = NULL WHERE cluster_id = $1 AND ray_state IS NOT NULL")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        // Every current tenure ends with the lease (no leave reason: they were not replaced).
        sqlx::query("UPDATE cluster_nodes SET left_at = $1 WHERE cluster_id = $2 AND left_at IS NULL")
            .bind(now.0)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE clusters SET ray_gcs_address = NULL, healing = NULL WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(terminated))
    }

    /// What metering needs to know about a lease: its terms, every tenure of its ranks
    /// (replaced devices included: their seconds may not all be posted yet), and how far
    /// every current node is known to have been up.
    pub async fn lease_terms(&self, id: &ClusterId) -> StoreResult<Option<crate::billing::LeaseTerms>> {
        let Some(row) = sqlx::query("SELECT owner, asset, state, expires_at, ended_at FROM clusters WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.read)
            .await?
        else {
            return Ok(None);
        };
        let nodes = sqlx::query(
            "SELECT n.epoch, n.node_hour_micros, n.joined_at, n.left_at, d.owner, d.last_heartbeat_at
             FROM cluster_nodes n JOIN devices d ON d.id = n.device_id WHERE n.cluster_id = $1 ORDER BY n.epoch",
        )
        .bind(id.as_str())
        .fetch_all(&self.read)
        .await?;
        let nodes = nodes
            .iter()
            .map(|n| {
                let joined_ms: i64 = n.get("joined_at");
                Ok(crate::billing::BillableNode {
                    epoch: n.get("epoch"),
                    supplier: parse_col("devices.owner", n.get("owner"))?,
                    node_hour_micros: n.get("node_hour_micros"),
                    joined_ms,
                    left_ms: n.get("left_at"),
                    seen_ms: n.get::<Option<i64>, _>("last_heartbeat_at").unwrap_or(joined_ms).max(joined_ms),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Some(crate::billing::LeaseTerms {
            owner: parse_col("clusters.owner", row.get("owner"))?,
            asset: parse_col("clusters.asset", row.get("asset"))?,
            running: row.get::<&str, _>("state") == "running",
            expires_at_ms: row.get("expires_at"),
            ended_at_ms: row.get("ended_at"),
            nodes,
        }))
    }

    pub async fn expired_clusters(&self, now: Timestamp, limit: u32) -> StoreResult<Vec<ClusterId>> {
        let rows = sqlx::query("SELECT id FROM clusters WHERE state = 'running' AND expires_at <= $1 LIMIT $2")
            .bind(now.0)
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|r| parse_col("clusters.id", r.get(0))).collect()
    }

    pub async fn running_cluster_count(&self) -> StoreResult<i64> {
        Ok(sqlx::query("SELECT COUNT(*) FROM clusters WHERE state = 'running'").fetch_one(&self.read).await?.get(0))
    }
}

/// A node's overlay columns as the API shows them.
fn node_overlay(row: &AnyRow) -> Option<api::NodeOverlay> {
    let address: String = row.get::<Option<String>, _>("overlay_address")?;
    let report: Option<herd_proto::worker::OverlayReport> =
        row.get::<Option<&str>, _>("overlay_report").and_then(|text| serde_json::from_str(text).ok());
    Some(api::NodeOverlay {
        address,
        up: super::flag(row, "overlay_up"),
        error: report.as_ref().and_then(|r| r.error.clone()),
        restarts: report.as_ref().map_or(0, |r| r.restarts),
        peers: report.map(|r| r.peers).unwrap_or_default(),
    })
}
