//! The database as the deterministic simulation's invariants see it (tests only).

use herd_sim::chaos::{Cluster, Device, Job, Task, Tenure};
use sqlx::Row;

use super::{Store, StoreResult};

impl Store {
    /// Devices, clusters, tenures and jobs, each in a stable order.
    pub async fn snapshot(&self) -> StoreResult<(Vec<Device>, Vec<Cluster>, Vec<Tenure>, Vec<Job>)> {
        let devices = sqlx::query("SELECT id, state, cluster_id FROM devices ORDER BY id")
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(|r| Device { id: r.get(0), state: r.get(1), cluster: r.get(2) })
            .collect();
        let clusters = sqlx::query("SELECT id, state, created_at, ended_at, nodes_wanted FROM clusters ORDER BY id")
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(|r| Cluster {
                id: r.get(0),
                running: r.get::<&str, _>(1) == "running",
                created_ms: r.get(2),
                ended_ms: r.get(3),
                nodes_wanted: r.get::<i64, _>(4) as u32,
            })
            .collect();
        let tenures = sqlx::query(
            "SELECT epoch, cluster_id, rank, device_id, node_hour_micros, joined_at, left_at
             FROM cluster_nodes ORDER BY epoch",
        )
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(|r| Tenure {
            epoch: r.get(0),
            cluster: r.get(1),
            rank: r.get::<i64, _>(2) as u32,
            device: r.get(3),
            node_hour_micros: r.get(4),
            joined_ms: r.get(5),
            left_ms: r.get(6),
        })
        .collect();
        let mut jobs = Vec::new();
        for row in sqlx::query(
            "SELECT id, cluster_id, state, attempt, max_retries, retry_wanted_at IS NOT NULL FROM jobs ORDER BY id",
        )
        .fetch_all(&self.read)
        .await?
        {
            let id: String = row.get(0);
            let tasks =
                sqlx::query("SELECT rank, device_id, attempt, state FROM job_tasks WHERE job_id = $1 ORDER BY rank")
                    .bind(&id)
                    .fetch_all(&self.read)
                    .await?
                    .iter()
                    .map(|t| Task {
                        rank: t.get::<i64, _>(0) as u32,
                        device: t.get(1),
                        attempt: t.get::<i64, _>(2) as u32,
                        state: t.get(3),
                    })
                    .collect();
            jobs.push(Job {
                id,
                cluster: row.get(1),
                state: row.get(2),
                attempt: row.get::<i64, _>(3) as u32,
                max_retries: row.get::<i64, _>(4) as u32,
                waiting_retry: super::flag(&row, 5),
                tasks,
            });
        }
        Ok((devices, clusters, tenures, jobs))
    }
}
