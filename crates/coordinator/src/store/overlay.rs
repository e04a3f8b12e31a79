//! The overlay's records: what each device says it can do, each lease's address block, and
//! every host certificate the CA signed (active, renewed or revoked).

use herd_core::{Address, ClusterId, Timestamp};
use herd_proto::worker::{OverlayReport, OverlaySupport};
use sqlx::Row;

use super::{parse_col, Store, StoreResult};

/// A current member of a lease, as the overlay sees it.
#[derive(Debug, Clone)]
pub struct OverlayMember {
    pub device: Address,
    pub rank: u32,
    pub epoch: i64,
    /// Hex X25519 key of the device's agent run; None: it cannot join.
    pub key: Option<String>,
}

/// An issued certificate.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    pub fingerprint: String,
    pub device: Address,
    pub epoch: i64,
    pub host: u32,
    pub address: String,
    pub public_key: String,
    pub cert: String,
    /// Unix ms.
    pub not_after: i64,
}

/// A lease's overlay state.
#[derive(Debug, Clone)]
pub struct OverlayLease {
    pub block: Option<u32>,
    pub running: bool,
    pub expires_at: Timestamp,
    pub members: Vec<OverlayMember>,
    /// Active certificates.
    pub active: Vec<IssuedCert>,
    /// Fingerprints of revoked certificates still within their validity.
    pub blocklist: Vec<String>,
}

impl Store {
    /// Records what a (re)connected device told about the overlay in its hello.
    pub async fn record_overlay_support(&self, device: &Address, support: Option<&OverlaySupport>) -> StoreResult<()> {
        let (key, unavailable) = match support {
            Some(OverlaySupport::Ready { public_key }) => (Some(public_key.as_str()), None),
            Some(OverlaySupport::Unavailable { reason }) => (None, Some(reason.as_str())),
            None => (None, Some("the agent predates overlay networks; upgrade it to join multi-node leases")),
        };
        sqlx::query("UPDATE devices SET overlay_key = $1, overlay_unavailable = $2 WHERE id = $3")
            .bind(key)
            .bind(unavailable)
            .bind(device.as_str())
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Whether a lease goes on an overlay: it has several nodes and every one can join
    /// (real devices with a key; simulated ones share the coordinator's machine and never
    /// join). A single node has nobody to reach: it runs without a TUN.
    pub async fn lease_can_join_overlay(&self, cluster: &ClusterId) -> StoreResult<bool> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS nodes, CAST(SUM(CASE WHEN d.overlay_key IS NOT NULL AND d.simulated = 0 THEN 1 ELSE 0 END) AS BIGINT) AS joinable
             FROM cluster_nodes n JOIN devices d ON d.id = n.device_id
             JOIN clusters c ON c.id = n.cluster_id
             WHERE n.cluster_id = $1 AND n.left_at IS NULL AND c.nodes_wanted > 1",
        )
        .bind(cluster.as_str())
        .fetch_one(&self.read)
        .await?;
        let nodes: i64 = row.get("nodes");
        Ok(nodes > 0 && row.get::<Option<i64>, _>("joinable") == Some(nodes))
    }

    /// Gives a running lease the lowest free address block (kept if it has one); None when
    /// the lease is not running or every block is taken.
    pub async fn assign_overlay_block(&self, cluster: &ClusterId, max_block: u32) -> StoreResult<Option<u32>> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT overlay_block, state FROM clusters WHERE id = $1")
            .bind(cluster.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Ok(None) };
        if let Some(block) = row.get::<Option<i64>, _>("overlay_block") {
            return Ok(Some(block as u32));
        }
        if row.get::<&str, _>("state") != "running" {
            return Ok(None);
        }
        // The first gap in the running leases' blocks.
        let taken: Vec<i64> = sqlx::query_scalar(
            "SELECT overlay_block FROM clusters WHERE state = 'running' AND overlay_block IS NOT NULL
             ORDER BY overlay_block",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut block = 1i64;
        for used in taken {
            if used == block {
                block += 1;
            } else if used > block {
                break;
            }
        }
        if block > i64::from(max_block) {
            return Ok(None);
        }
        sqlx::query("UPDATE clusters SET overlay_block = $1 WHERE id = $2")
            .bind(block)
            .bind(cluster.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(block as u32))
    }

    pub async fn overlay_lease(&self, cluster: &ClusterId, now: Timestamp) -> StoreResult<Option<OverlayLease>> {
        let Some(row) = sqlx::query("SELECT overlay_block, state, expires_at FROM clusters WHERE id = $1")
            .bind(cluster.as_str())
            .fetch_optional(&self.read)
            .await?
        else {
            return Ok(None);
        };
        let members = sqlx::query(
            "SELECT n.device_id, n.rank, n.epoch, d.overlay_key
             FROM cluster_nodes n JOIN devices d ON d.id = n.device_id
             WHERE n.cluster_id = $1 AND n.left_at IS NULL ORDER BY n.rank",
        )
        .bind(cluster.as_str())
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(|r| {
            Ok(OverlayMember {
                device: parse_col("cluster_nodes.device_id", r.get("device_id"))?,
                rank: r.get::<i64, _>("rank") as u32,
                epoch: r.get("epoch"),
                key: r.get("overlay_key"),
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
        let active = sqlx::query(
            "SELECT fingerprint, device_id, epoch, host, address, public_key, cert, not_after FROM overlay_certs
             WHERE cluster_id = $1 AND revoked_at IS NULL AND replaced_at IS NULL ORDER BY host",
        )
        .bind(cluster.as_str())
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(|r| {
            Ok(IssuedCert {
                fingerprint: r.get("fingerprint"),
                device: parse_col("overlay_certs.device_id", r.get("device_id"))?,
                epoch: r.get("epoch"),
                host: r.get::<i64, _>("host") as u32,
                address: r.get("address"),
                public_key: r.get("public_key"),
                cert: r.get("cert"),
                not_after: r.get("not_after"),
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
        let blocklist: Vec<String> = sqlx::query_scalar(
            "SELECT fingerprint FROM overlay_certs WHERE cluster_id = $1 AND revoked_at IS NOT NULL AND not_after > $2
             ORDER BY revoked_at",
        )
        .bind(cluster.as_str())
        .bind(now.0)
        .fetch_all(&self.read)
        .await?;
        Ok(Some(OverlayLease {
            block: row.get::<Option<i64>, _>("overlay_block").map(|b| b as u32),
            running: row.get::<&str, _>("state") == "running",
            expires_at: Timestamp(row.get("expires_at")),
            members,
            active,
            blocklist,
        }))
    }

    /// The next host number of a lease's block (addresses are never reused within a lease).
    pub async fn next_overlay_host(&self, cluster: &ClusterId) -> StoreResult<u32> {
        let max: Option<i64> = sqlx::query_scalar("SELECT MAX(host) FROM overlay_certs WHERE cluster_id = $1")
            .bind(cluster.as_str())
            .fetch_one(&self.write)
            .await?;
        Ok(max.unwrap_or(0) as u32 + 1)
    }

    /// Records a new certificate; `retire` (an earlier certificate of the same node) is
    /// revoked (`revoke`: blocklisted) or replaced (renewed, not blocklisted) in the same
    /// transaction.
    pub async fn issue_overlay_cert(
        &self,
        cluster: &ClusterId,
        cert: &IssuedCert,
        retire: Option<(&str, bool)>,
        now: Timestamp,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        if let Some((fingerprint, revoke)) = retire {
            let column = if revoke { "revoked_at" } else { "replaced_at" };
            sqlx::query(&format!("UPDATE overlay_certs SET {column} = $1 WHERE fingerprint = $2"))
                .bind(now.0)
                .bind(fingerprint)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO overlay_certs (fingerprint, cluster_id, device_id, epoch, host, address, public_key, cert,
                not_after, issued_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&cert.fingerprint)
        .bind(cluster.as_str())
        .bind(cert.device.as_str())
        .bind(cert.epoch)
        .bind(i64::from(cert.host))
        .bind(&cert.address)
        .bind(&cert.public_key)
        .bind(&cert.cert)
        .bind(cert.not_after)
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Revokes these certificates (members that left, or the whole lease at its end).
    pub async fn revoke_overlay_certs(&self, fingerprints: &[String], now: Timestamp) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        for fingerprint in fingerprints {
            sqlx::query("UPDATE overlay_certs SET revoked_at = $1 WHERE fingerprint = $2 AND revoked_at IS NULL")
                .bind(now.0)
                .bind(fingerprint)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Stores a node's report on its overlay (only for its active certificate's tenure).
    pub async fn record_overlay_report(&self, device: &Address, report: &OverlayReport) -> StoreResult<bool> {
        let text = serde_json::to_string(report).expect("reports serialise");
        let done = sqlx::query(
            "UPDATE overlay_certs SET up = $1, report = $2
             WHERE cluster_id = $3 AND device_id = $4 AND epoch = $5 AND revoked_at IS NULL AND replaced_at IS NULL",
        )
        .bind(i64::from(report.up))
        .bind(text)
        .bind(report.cluster_id.as_str())
        .bind(device.as_str())
        .bind(report.epoch)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn running_overlay_leases(&self) -> StoreResult<Vec<ClusterId>> {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM clusters WHERE state = 'running' AND overlay_block IS NOT NULL")
                .fetch_all(&self.read)
                .await?;
        ids.iter().map(|id| parse_col("clusters.id", id)).collect()
    }

    /// The running lease a device holds, if it is on an overlay.
    pub async fn device_overlay_lease(&self, device: &Address) -> StoreResult<Option<ClusterId>> {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT c.id FROM devices d JOIN clusters c ON c.id = d.cluster_id
             WHERE d.id = $1 AND c.state = 'running' AND c.overlay_block IS NOT NULL",
        )
        .bind(device.as_str())
        .fetch_optional(&self.read)
        .await?;
        id.map(|id| parse_col("clusters.id", &id)).transpose()
    }
}
