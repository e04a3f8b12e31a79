//! Ray clusters: each node's Ray node as its worker reports it, the head's GCS address that
//! the other nodes join, and Ray jobs' states as Ray reports them.

use herd_core::ray::RayResources;
use herd_core::{Address, ClusterId, JobId, JobState, RayNodeState, Timestamp};
use herd_proto::worker::{RayNodeAssignment, RayNodeReport};
use sqlx::Row;

use super::{json_col, parse_col, Store, StoreResult};

/// What a worker's report changed, so the caller can tell the other nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RayReportOutcome {
    pub cluster: ClusterId,
    pub head: bool,
    /// The head's address changed (Some(new), or None when the head went down).
    pub gcs_changed: Option<Option<String>>,
    /// A worker reports having joined a head that is not the current one.
    pub stale_join: bool,
}

/// Ray's word on a job.
pub struct RayJobUpdate<'a> {
    pub state: JobState,
    pub message: Option<&'a str>,
}

impl Store {
    /// The Ray node each node of a running Ray cluster should run, in rank order; a worker
    /// node's assignment is None until the head runs (it has nothing to join yet).
    pub async fn ray_assignments(&self, cluster: &ClusterId) -> StoreResult<Vec<(Address, Option<RayNodeAssignment>)>> {
        let rows = sqlx::query(
            "SELECT n.epoch, n.rank, n.device_id, n.ray_head, c.ray_version, c.ray_gcs_address, d.spec, d.simulated,
                c.overlay_block, (SELECT o.address FROM overlay_certs o
                   WHERE o.cluster_id = n.cluster_id AND o.device_id = n.device_id AND o.epoch = n.epoch
                     AND o.revoked_at IS NULL AND o.replaced_at IS NULL) AS overlay_address
             FROM cluster_nodes n JOIN clusters c ON c.id = n.cluster_id JOIN devices d ON d.id = n.device_id
             WHERE n.cluster_id = $1 AND n.left_at IS NULL AND c.state = 'running' AND c.kind = 'ray'
               AND d.cluster_id = c.id
             ORDER BY n.rank",
        )
        .bind(cluster.as_str())
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                let device: Address = parse_col("cluster_nodes.device_id", row.get("device_id"))?;
                let head = super::flag(row, "ray_head");
                let gcs: Option<String> = row.get("ray_gcs_address");
                if !head && gcs.is_none() {
                    return Ok((device, None));
                }
                // On an overlay lease a node runs on its overlay address: none yet, no node yet.
                let overlay_address: Option<String> = row.get("overlay_address");
                if row.get::<Option<i64>, _>("overlay_block").is_some() && overlay_address.is_none() {
                    return Ok((device, None));
                }
                let spec: herd_core::DeviceSpec = json_col("devices.spec", row.get("spec"))?;
                let assignment = RayNodeAssignment {
                    cluster_id: cluster.clone(),
                    rank: row.get::<i64, _>("rank") as u32,
                    version: row.get::<Option<String>, _>("ray_version").unwrap_or_default(),
                    head_address: if head { None } else { gcs },
                    resources: RayResources::of_lease(&spec, super::flag(row, "simulated")),
                    limits: herd_core::TaskLimits::of_lease(&spec),
                    epoch: row.get("epoch"),
                    node_ip: overlay_address,
                };
                Ok((device, Some(assignment)))
            })
            .collect()
    }

    /// The running Ray cluster the device is leased to, if any.
    pub async fn device_ray_cluster(&self, device: &Address) -> StoreResult<Option<ClusterId>> {
        let row = sqlx::query(
            "SELECT c.id FROM devices d JOIN clusters c ON c.id = d.cluster_id
             WHERE d.id = $1 AND c.state = 'running' AND c.kind = 'ray'",
        )
        .bind(device.as_str())
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| parse_col("clusters.id", r.get(0))).transpose()
    }

    /// Records a worker's report on its Ray node. None if the device is not (or no longer)
    /// a node of that running Ray cluster: the report is stale and ignored.
    pub async fn record_ray_report(
        &self,
        device: &Address,
        report: &RayNodeReport,
    ) -> StoreResult<Option<RayReportOutcome>> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT n.ray_head, c.ray_gcs_address, n.epoch FROM cluster_nodes n
             JOIN clusters c ON c.id = n.cluster_id JOIN devices d ON d.id = n.device_id
             WHERE n.cluster_id = $1 AND n.device_id = $2 AND n.left_at IS NULL AND c.state = 'running'
               AND c.kind = 'ray' AND d.cluster_id = c.id",
        )
        .bind(report.cluster_id.as_str())
        .bind(device.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let epoch: i64 = row.get(2);
        // A report from an earlier tenure (a device that was lost, then leased back into the
        // same cluster) describes a node that is no longer wanted.
        if report.epoch != 0 && report.epoch != epoch {
            return Ok(None);
        }
        let head = super::flag(&row, 0);
        let current_gcs: Option<String> = row.get(1);
        let stale_join = !head && report.head_address.is_some() && report.head_address != current_gcs;
        // A stale join is not recorded as running: the node must rejoin the current head.
        let state =
            if stale_join && report.state == RayNodeState::Running { RayNodeState::Starting } else { report.state };
        sqlx::query("UPDATE cluster_nodes SET ray_state = $1, ray_detail = $2, ray_restarts = $3 WHERE epoch = $4")
            .bind(state.as_str())
            .bind(report.detail.as_deref())
            .bind(i64::from(report.restarts))
            .bind(epoch)
            .execute(&mut *tx)
            .await?;
        let mut gcs_changed = None;
        if head {
            let gcs = if report.state == RayNodeState::Running { report.gcs_address.clone() } else { None };
            if gcs != current_gcs {
                sqlx::query("UPDATE clusters SET ray_gcs_address = $1 WHERE id = $2")
                    .bind(gcs.as_deref())
                    .bind(report.cluster_id.as_str())
                    .execute(&mut *tx)
                    .await?;
                gcs_changed = Some(gcs);
            }
        }
        tx.commit().await?;
        Ok(Some(RayReportOutcome { cluster: report.cluster_id.clone(), head, gcs_changed, stale_join }))
    }

    /// The device running the cluster's head, while the cluster runs.
    pub async fn ray_head(&self, cluster: &ClusterId) -> StoreResult<Option<(Address, RayNodeState)>> {
        let row = sqlx::query(
            "SELECT n.device_id, n.ray_state FROM cluster_nodes n JOIN clusters c ON c.id = n.cluster_id
             WHERE n.cluster_id = $1 AND n.ray_head = 1 AND n.left_at IS NULL AND c.state = 'running' AND c.kind = 'ray'",
        )
        .bind(cluster.as_str())
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| {
            Ok((
                parse_col("cluster_nodes.device_id", r.get(0))?,
                parse_col("cluster_nodes.ray_state", r.get::<Option<&str>, _>(1).unwrap_or("starting"))?,
            ))
        })
        .transpose()
    }

    /// Stores Ray's state of a Ray job; a job already finished keeps its end.
    pub async fn update_ray_job(&self, job: &JobId, update: &RayJobUpdate<'_>, now: Timestamp) -> StoreResult<()> {
        sqlx::query(
            "UPDATE jobs SET state = $1, message = $2,
                finished_at = CASE WHEN $3 THEN COALESCE(finished_at, $4) ELSE NULL END
             WHERE id = $5 AND kind = 'ray' AND state IN ('pending', 'running') AND retry_wanted_at IS NULL",
        )
        .bind(update.state.as_str())
        .bind(update.message)
        .bind(update.state.is_terminal())
        .bind(now.0)
        .bind(job.as_str())
        .execute(&self.write)
        .await?;
        Ok(())
    }
}
