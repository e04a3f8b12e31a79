//! Self-healing in the database: a lost device leaves its rank (its tenure ends at its last
//! heartbeat), a replacement takes the rank, and jobs that lost a node wait for the cluster to
//! be whole again to run their next attempt. Each step is one transaction.

use herd_core::device::DeviceEvent as Event;
use herd_core::ray::choose_head;
use herd_core::{Address, ClusterId, DeviceState, JobId, Micros, Timestamp};
use sqlx::{AnyConnection, Row};

use super::clusters::{insert_node, Tenure};
use super::devices::apply_event;
use super::{parse_col, Store, StoreResult};

/// What losing a device changed, for the caller to act on.
#[derive(Debug, Default)]
pub struct Loss {
    /// Jobs whose state changed (wake their followers).
    pub jobs: Vec<JobId>,
    /// Tasks of jobs that will be retried, still running on other devices: stop them.
    pub stop_tasks: Vec<(Address, JobId, u32)>,
    /// The running cluster the device held a rank of (it now has a vacancy).
    pub cluster: Option<ClusterId>,
    /// The cluster's Ray head moved to another node (every node must rejoin it).
    pub head_moved: bool,
    /// The lease epoch of the tenure the device abandoned.
    pub abandoned_epoch: Option<i64>,
}

/// A rank of a running cluster without a current holder.
#[derive(Debug, Clone)]
pub struct Vacancy {
    pub cluster: ClusterId,
    pub rank: u32,
    /// The cluster's request (JSON `CreateCluster`), to find a device that satisfies it.
    pub request: String,
    /// What the rank's last holder cost: a replacement may not cost more.
    pub node_hour_micros: Micros,
    /// The suppliers and countries of the current nodes (for co-location).
    pub suppliers: Vec<Address>,
    pub countries: Vec<String>,
    /// When a search last failed (the healer waits before searching again).
    pub tried_at: Option<Timestamp>,
}

/// Why a replacement was not committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReplaced {
    /// The device was taken (or went away) since the plan: plan again.
    Stale,
    /// The cluster ended or the rank was filled meanwhile: nothing to do.
    Moot,
}

/// A job waiting for its next attempt whose cluster is whole again.
#[derive(Debug, Clone)]
pub struct Retry {
    pub job: JobId,
    pub cluster: ClusterId,
    /// The attempt about to start.
    pub attempt: u32,
}

/// Ends a lost device's tenure in the running cluster it is leased to: at its last heartbeat
/// (billing stops there), the device released (so a device that comes back is not in the
/// cluster twice, and cannot be replaced twice), the rank left for the healer. A lost Ray head
/// hands the head to the best surviving node at once, and the Ray jobs it ran are retried or
/// failed. Runs inside `mark_offline`'s transaction.
pub(super) async fn lose_tenure(
    conn: &mut AnyConnection,
    device: &Address,
    reason: &str,
    now: Timestamp,
    loss: &mut Loss,
) -> StoreResult<()> {
    let Some(row) = sqlx::query(
        "SELECT n.epoch, n.cluster_id, n.rank, n.ray_head, n.ray_state IS NOT NULL AS ray, n.joined_at,
            d.last_heartbeat_at
         FROM cluster_nodes n JOIN clusters c ON c.id = n.cluster_id JOIN devices d ON d.id = n.device_id
         WHERE n.device_id = $1 AND n.left_at IS NULL AND c.state = 'running'",
    )
    .bind(device.as_str())
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(());
    };
    let epoch: i64 = row.get("epoch");
    let cluster: ClusterId = parse_col("cluster_nodes.cluster_id", row.get("cluster_id"))?;
    let rank: i64 = row.get("rank");
    let joined: i64 = row.get("joined_at");
    let left = row.get::<Option<i64>, _>("last_heartbeat_at").unwrap_or(joined).clamp(joined, now.0.max(joined));
    let why = format!("lost: the device went offline ({reason})");
    sqlx::query(
        "UPDATE cluster_nodes SET left_at = $1, leave_reason = $2,
            ray_state = CASE WHEN ray_state IS NULL THEN NULL ELSE 'failed' END,
            ray_detail = CASE WHEN ray_state IS NULL THEN NULL ELSE $3 END
         WHERE epoch = $4",
    )
    .bind(left)
    .bind(&why)
    .bind(&why)
    .bind(epoch)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE devices SET cluster_id = NULL WHERE id = $1").bind(device.as_str()).execute(&mut *conn).await?;
    let released = format!("released from cluster {cluster}: rank {rank} goes to a replacement");
    apply_event(conn, device, DeviceState::Offline, Event::Release, &released, now).await?;
    sqlx::query("UPDATE clusters SET healing = $1, heal_tried_at = NULL WHERE id = $2")
        .bind(format!("rank {rank} was lost ({reason}); finding a replacement"))
        .bind(cluster.as_str())
        .execute(&mut *conn)
        .await?;
    if super::flag(&row, "ray") && super::flag(&row, "ray_head") {
        loss.head_moved = move_ray_head(conn, &cluster).await?;
        lose_ray_jobs(conn, &cluster, now, loss).await?;
    }
    loss.cluster = Some(cluster);
    loss.abandoned_epoch = Some(epoch);
    Ok(())
}

/// Makes the best surviving node the Ray head (reputation, then rank) and has every node
/// start again around it; false if no node survives (the replacement will be the head).
async fn move_ray_head(conn: &mut AnyConnection, cluster: &ClusterId) -> StoreResult<bool> {
    let survivors = sqlx::query(
        "SELECT n.rank, d.reputation FROM cluster_nodes n JOIN devices d ON d.id = n.device_id
         WHERE n.cluster_id = $1 AND n.left_at IS NULL",
    )
    .bind(cluster.as_str())
    .fetch_all(&mut *conn)
    .await?;
    let candidates: Vec<(u32, u16)> =
        survivors.iter().map(|r| (r.get::<i64, _>(0) as u32, r.get::<i64, _>(1).clamp(0, 1000) as u16)).collect();
    sqlx::query("UPDATE clusters SET ray_gcs_address = NULL WHERE id = $1")
        .bind(cluster.as_str())
        .execute(&mut *conn)
        .await?;
    let Some(head) = choose_head(&candidates) else { return Ok(false) };
    sqlx::query(
        "UPDATE cluster_nodes SET ray_head = CASE WHEN rank = $1 THEN 1 ELSE 0 END, ray_state = 'starting',
            ray_detail = 'the head was lost: re-forming the Ray cluster around rank ' || $2
         WHERE cluster_id = $3 AND left_at IS NULL",
    )
    .bind(i64::from(head))
    .bind(i64::from(head))
    .bind(cluster.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// A lost head takes Ray's state with it (GCS: jobs, actors, objects): every unfinished Ray
/// job of the cluster is retried on the re-formed cluster if it has retries left, else failed.
async fn lose_ray_jobs(
    conn: &mut AnyConnection,
    cluster: &ClusterId,
    now: Timestamp,
    loss: &mut Loss,
) -> StoreResult<()> {
    let rows = sqlx::query(
        "SELECT id FROM jobs WHERE cluster_id = $1 AND kind = 'ray' AND state IN ('pending', 'running')
           AND retry_wanted_at IS NULL",
    )
    .bind(cluster.as_str())
    .fetch_all(&mut *conn)
    .await?;
    for row in &rows {
        let job: JobId = parse_col("jobs.id", row.get(0))?;
        want_retry(conn, &job, "the Ray head node was lost", now).await?;
        loss.jobs.push(job);
    }
    Ok(())
}

/// A job lost a node: if it has retries left (and was not stopped), its next attempt waits for
/// the cluster to heal, and its tasks on other devices are stopped (returned); otherwise it
/// ends failed. Returns whether it will be retried.
pub(super) async fn want_retry(conn: &mut AnyConnection, job: &JobId, what: &str, now: Timestamp) -> StoreResult<bool> {
    let Some(row) = sqlx::query("SELECT attempt, max_retries, stop_requested FROM jobs WHERE id = $1")
        .bind(job.as_str())
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(false);
    };
    let (attempt, max_retries): (i64, i64) = (row.get(0), row.get(1));
    let stopped = super::flag(&row, 2);
    if stopped || attempt > max_retries {
        let message = if stopped {
            format!("{what}; the job was being stopped")
        } else if max_retries == 0 {
            format!("{what}; no retries were asked for (--max-retries)")
        } else {
            format!("{what}; all {max_retries} retries used")
        };
        // A command job's state follows its tasks; a Ray job's ends here.
        sqlx::query(
            "UPDATE jobs SET message = $1,
                state = CASE WHEN kind = 'ray' THEN 'failed' ELSE state END,
                finished_at = CASE WHEN kind = 'ray' THEN COALESCE(finished_at, $2) ELSE finished_at END
             WHERE id = $3",
        )
        .bind(message)
        .bind(now.0)
        .bind(job.as_str())
        .execute(&mut *conn)
        .await?;
        return Ok(false);
    }
    let message = format!(
        "{what}: attempt {} of {} starts when the cluster has all its nodes again",
        attempt + 1,
        max_retries + 1
    );
    sqlx::query(
        "UPDATE jobs SET state = 'pending', message = $1, retry_wanted_at = $2, finished_at = NULL WHERE id = $3",
    )
    .bind(message)
    .bind(now.0)
    .bind(job.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// The job's unfinished tasks are stopped for a retry: those not started end now, the
/// devices of the running ones are returned to be told.
pub(super) async fn stop_for_retry(
    conn: &mut AnyConnection,
    job: &JobId,
    now: Timestamp,
) -> StoreResult<Vec<(Address, u32)>> {
    let running = sqlx::query("SELECT device_id, attempt FROM job_tasks WHERE job_id = $1 AND state = 'running'")
        .bind(job.as_str())
        .fetch_all(&mut *conn)
        .await?;
    super::jobs::stop_pending_tasks(conn, job, "stopped: the job restarts after a lost node", now).await?;
    running.iter().map(|r| Ok((parse_col("job_tasks.device_id", r.get(0))?, r.get::<i64, _>(1) as u32))).collect()
}

impl Store {
    /// Ranks of running clusters that have no current holder, at most `limit`.
    pub async fn vacancies(&self, limit: u32) -> StoreResult<Vec<Vacancy>> {
        let clusters = sqlx::query(
            "SELECT c.id, c.request, c.nodes_wanted, c.heal_tried_at FROM clusters c
             WHERE c.state = 'running'
               AND (SELECT COUNT(*) FROM cluster_nodes n WHERE n.cluster_id = c.id AND n.left_at IS NULL) < c.nodes_wanted
             ORDER BY c.created_at LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        let mut vacancies = Vec::new();
        for row in &clusters {
            let cluster: ClusterId = parse_col("clusters.id", row.get("id"))?;
            let current = sqlx::query(
                "SELECT n.rank, d.owner, d.country FROM cluster_nodes n JOIN devices d ON d.id = n.device_id
                 WHERE n.cluster_id = $1 AND n.left_at IS NULL",
            )
            .bind(cluster.as_str())
            .fetch_all(&self.read)
            .await?;
            let held: Vec<i64> = current.iter().map(|r| r.get(0)).collect();
            let suppliers =
                current.iter().map(|r| parse_col("devices.owner", r.get(1))).collect::<StoreResult<Vec<Address>>>()?;
            let countries: Vec<String> = current.iter().map(|r| r.get(2)).collect();
            for rank in (0..row.get::<i64, _>("nodes_wanted")).filter(|r| !held.contains(r)) {
                let price: Option<i64> = sqlx::query(
                    "SELECT node_hour_micros FROM cluster_nodes WHERE cluster_id = $1 AND rank = $2 ORDER BY epoch DESC LIMIT 1",
                )
                .bind(cluster.as_str())
                .bind(rank)
                .fetch_optional(&self.read)
                .await?
                .map(|r| r.get(0));
                vacancies.push(Vacancy {
                    cluster: cluster.clone(),
                    rank: rank as u32,
                    request: row.get::<Option<String>, _>("request").unwrap_or_else(|| "{}".into()),
                    node_hour_micros: price.unwrap_or(0),
                    suppliers: suppliers.clone(),
                    countries: countries.clone(),
                    tried_at: row.get::<Option<i64>, _>("heal_tried_at").map(Timestamp),
                });
            }
        }
        Ok(vacancies)
    }

    /// Gives a vacant rank to `device`, which must still be ready and unleased. A Ray
    /// cluster without a head (every node was lost) gets its head back this way.
    pub async fn commit_replacement(
        &self,
        vacancy: &Vacancy,
        device: &Address,
        node_hour_micros: Micros,
        now: Timestamp,
    ) -> StoreResult<Result<i64, NotReplaced>> {
        let mut tx = self.begin_write().await?;
        let cluster = sqlx::query(
            "SELECT c.kind, c.nodes_wanted,
                EXISTS (SELECT 1 FROM cluster_nodes n WHERE n.cluster_id = c.id AND n.rank = $1 AND n.left_at IS NULL),
                EXISTS (SELECT 1 FROM cluster_nodes n WHERE n.cluster_id = c.id AND n.ray_head = 1 AND n.left_at IS NULL)
             FROM clusters c WHERE c.id = $2 AND c.state = 'running'",
        )
        .bind(i64::from(vacancy.rank))
        .bind(vacancy.cluster.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(cluster) = cluster else { return Ok(Err(NotReplaced::Moot)) };
        if super::flag(&cluster, 2) {
            return Ok(Err(NotReplaced::Moot));
        }
        let taken =
            sqlx::query("UPDATE devices SET cluster_id = $1 WHERE id = $2 AND state = 'ready' AND cluster_id IS NULL")
                .bind(vacancy.cluster.as_str())
                .bind(device.as_str())
                .execute(&mut *tx)
                .await?;
        if taken.rows_affected() != 1 {
            return Ok(Err(NotReplaced::Stale));
        }
        let reason = format!("leased to cluster {} (replacing rank {})", vacancy.cluster, vacancy.rank);
        apply_event(&mut tx, device, DeviceState::Ready, Event::Lease, &reason, now).await?;
        let ray = cluster.get::<&str, _>(0) == "ray";
        let head = ray && !super::flag(&cluster, 3);
        let tenure = Tenure { cluster: &vacancy.cluster, rank: vacancy.rank, device, node_hour_micros };
        let epoch = insert_node(&mut tx, &tenure, ray, head, now).await?;
        let held: i64 = sqlx::query("SELECT COUNT(*) FROM cluster_nodes WHERE cluster_id = $1 AND left_at IS NULL")
            .bind(vacancy.cluster.as_str())
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        let wanted: i64 = cluster.get(1);
        let healing = (held < wanted).then(|| format!("{} of {wanted} nodes; finding replacements", held));
        sqlx::query("UPDATE clusters SET healing = $1, heal_tried_at = NULL WHERE id = $2")
            .bind(healing)
            .bind(vacancy.cluster.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Ok(epoch))
    }

    /// Records a search for a replacement that found none (the customer sees why).
    pub async fn heal_deferred(&self, cluster: &ClusterId, why: &str, now: Timestamp) -> StoreResult<()> {
        sqlx::query("UPDATE clusters SET healing = $1, heal_tried_at = $2 WHERE id = $3 AND state = 'running'")
            .bind(why)
            .bind(now.0)
            .bind(cluster.as_str())
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Command jobs waiting for a retry whose previous attempt has fully ended and whose
    /// cluster has all its nodes again; Ray jobs waiting for a retry whose cluster runs.
    pub async fn due_retries(&self, limit: u32) -> StoreResult<Vec<Retry>> {
        let rows = sqlx::query(
            "SELECT j.id, j.cluster_id, j.attempt FROM jobs j JOIN clusters c ON c.id = j.cluster_id
             WHERE j.retry_wanted_at IS NOT NULL AND c.state = 'running'
               AND NOT EXISTS (SELECT 1 FROM job_tasks t WHERE t.job_id = j.id AND t.state IN ('pending', 'running'))
               AND (j.kind = 'ray'
                    OR (SELECT COUNT(*) FROM cluster_nodes n WHERE n.cluster_id = c.id AND n.left_at IS NULL) = c.nodes_wanted)
             ORDER BY j.retry_wanted_at LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Retry {
                    job: parse_col("jobs.id", r.get(0))?,
                    cluster: parse_col("jobs.cluster_id", r.get(1))?,
                    attempt: r.get::<i64, _>(2) as u32 + 1,
                })
            })
            .collect()
    }

    /// Starts a command job's next attempt: each task goes to its rank's current holder,
    /// pending again. Returns the devices to send the tasks to; None if the retry is no
    /// longer due (stopped, already started, the cluster short again).
    pub async fn start_retry(&self, retry: &Retry, now: Timestamp) -> StoreResult<Option<Vec<Address>>> {
        let mut tx = self.begin_write().await?;
        let due = sqlx::query(
            "SELECT j.max_retries FROM jobs j JOIN clusters c ON c.id = j.cluster_id
             WHERE j.id = $1 AND j.attempt = $2 AND j.retry_wanted_at IS NOT NULL AND c.state = 'running'
               AND NOT EXISTS (SELECT 1 FROM job_tasks t WHERE t.job_id = j.id AND t.state IN ('pending', 'running'))
               AND (SELECT COUNT(*) FROM cluster_nodes n WHERE n.cluster_id = c.id AND n.left_at IS NULL) = c.nodes_wanted",
        )
        .bind(retry.job.as_str())
        .bind(i64::from(retry.attempt) - 1)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(due) = due else { return Ok(None) };
        let max_retries: i64 = due.get(0);
        let rows = sqlx::query(
            "UPDATE job_tasks SET attempt = $1, state = 'pending', exit_code = NULL, error = NULL, started_at = NULL,
                finished_at = NULL,
                device_id = (SELECT n.device_id FROM cluster_nodes n
                             WHERE n.cluster_id = $2 AND n.rank = job_tasks.rank AND n.left_at IS NULL)
             WHERE job_id = $3 RETURNING rank, device_id",
        )
        .bind(i64::from(retry.attempt))
        .bind(retry.cluster.as_str())
        .bind(retry.job.as_str())
        .fetch_all(&mut *tx)
        .await?;
        // In rank order (RETURNING promises no order).
        let mut ranked = rows
            .iter()
            .map(|r| Ok((r.get::<i64, _>(0), parse_col("job_tasks.device_id", r.get(1))?)))
            .collect::<StoreResult<Vec<(i64, Address)>>>()?;
        ranked.sort_by_key(|(rank, _)| *rank);
        let devices: Vec<Address> = ranked.into_iter().map(|(_, device)| device).collect();
        let message = format!("attempt {} of {} (the previous one lost a node)", retry.attempt, max_retries + 1);
        sqlx::query(
            "UPDATE jobs SET attempt = $1, state = 'pending', message = $2, retry_wanted_at = NULL, finished_at = NULL
             WHERE id = $3",
        )
        .bind(i64::from(retry.attempt))
        .bind(&message)
        .bind(retry.job.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO job_logs (job_id, rank, stream, text, at) VALUES ($1, 0, 'stderr', $2, $3)")
            .bind(retry.job.as_str())
            .bind(format!("herd: {message}"))
            .bind(now.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(devices))
    }

    /// A Ray job was resubmitted to its re-formed cluster as `attempt`.
    pub async fn ray_retry_submitted(&self, retry: &Retry) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET attempt = $1, state = 'pending', retry_wanted_at = NULL, finished_at = NULL,
                message = 'attempt ' || $2 || ' of ' || (max_retries + 1) || ' (resubmitted after a lost node)'
             WHERE id = $3 AND attempt = $4 AND retry_wanted_at IS NOT NULL",
        )
        .bind(i64::from(retry.attempt))
        .bind(i64::from(retry.attempt))
        .bind(retry.job.as_str())
        .bind(i64::from(retry.attempt) - 1)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A task its worker no longer runs (the agent restarted and lost it) ends failed; its
    /// job is retried like one that lost its node, if it may be. Returns the other tasks to
    /// stop for the retry; None if the task had already ended.
    pub async fn task_lost(
        &self,
        job: &JobId,
        attempt: u32,
        device: &Address,
        error: &str,
        now: Timestamp,
    ) -> StoreResult<Option<Vec<(Address, u32)>>> {
        let mut tx = self.begin_write().await?;
        let end = super::jobs::TaskEnd { state: herd_core::TaskState::Failed, exit_code: None, error: Some(error) };
        if !super::jobs::end_task(&mut tx, job, attempt, device, &end, now).await? {
            return Ok(None);
        }
        let mut stop = Vec::new();
        if want_retry(&mut tx, job, "a node lost its task (its worker restarted)", now).await? {
            stop = stop_for_retry(&mut tx, job, now).await?;
        } else {
            super::jobs::refresh_job_state(&mut tx, job, now).await?;
        }
        tx.commit().await?;
        Ok(Some(stop))
    }

    /// Stops a job that waits for its next attempt (nothing of it runs); false if it does
    /// not wait.
    pub async fn stop_waiting_retry(&self, job: &JobId, now: Timestamp) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'stopped', stop_requested = 1, retry_wanted_at = NULL, finished_at = $1,
                message = 'stopped while it waited to be retried'
             WHERE id = $2 AND retry_wanted_at IS NOT NULL",
        )
        .bind(now.0)
        .bind(job.as_str())
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    #[cfg(test)]
    pub async fn mark_retry_wanted_for_tests(&self, job: &JobId) {
        let mut tx = self.begin_write().await.unwrap();
        assert!(want_retry(&mut tx, job, "a test lost a node", Timestamp(0)).await.unwrap());
        tx.commit().await.unwrap();
    }

    /// A Ray job's failure coincided with a lost node: retried if it has retries left.
    pub async fn ray_job_lost_node(&self, job: &JobId, what: &str, now: Timestamp) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let retried = want_retry(&mut tx, job, what, now).await?;
        tx.commit().await?;
        Ok(retried)
    }

    /// Whether a node of the cluster was lost after `since` (a Ray job that failed then may
    /// have failed because of it).
    pub async fn node_lost_since(&self, cluster: &ClusterId, since: Timestamp) -> StoreResult<bool> {
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM cluster_nodes WHERE cluster_id = $1 AND leave_reason IS NOT NULL AND left_at >= $2)",
        )
        .bind(cluster.as_str())
        .bind(since.0)
        .fetch_one(&self.read)
        .await?;
        Ok(super::flag(&row, 0))
    }
}

#[cfg(test)]
mod tests {
    use herd_core::{JobState, TaskState};

    use super::*;
    use crate::test_support::{admitted_device, hello, lease_with_job, temp_store};

    fn key(n: u8) -> Address {
        Address::from_public_key(&[n; 32])
    }

    /// The whole life of a lost node in the database: its tenure ends at its last heartbeat,
    /// its late reports are refused, the job waits, the replacement takes the rank, the
    /// retry runs there, and the device that comes back is neither in the cluster nor
    /// replaced a second time.
    #[tokio::test]
    async fn a_lost_node_is_replaced_once_and_its_late_reports_are_refused() {
        let (_dir, store, _) = temp_store().await;
        let owner = key(1);
        store.register_account(&owner, "hash", Timestamp(0)).await.unwrap();
        let (d0, d1, d2) = (key(10), key(11), key(12));
        for device in [&d0, &d1, &d2] {
            admitted_device(&store, device, &owner).await;
        }
        let t0 = Timestamp(1_000_000);
        let (cluster, job) = lease_with_job(&store, &owner, &[(d0.clone(), 1_000), (d1.clone(), 2_000)], 1, t0).await;
        for device in [&d0, &d1] {
            assert!(store.task_started(&job, 1, device, t0).await.unwrap());
        }
        let last_beat = Timestamp(t0.0 + 5_000);
        store.record_heartbeats(&[(d1.clone(), last_beat, Default::default())]).await.unwrap();

        let loss = store.mark_offline(&d1, "test", Timestamp(t0.0 + 20_000)).await.unwrap().unwrap();
        assert_eq!(loss.cluster.as_ref(), Some(&cluster));
        assert_eq!(loss.jobs, std::slice::from_ref(&job));
        assert_eq!(loss.stop_tasks, [(d0.clone(), job.clone(), 1)], "the survivor's task stops for the retry");
        let shown = store.cluster(&cluster).await.unwrap().unwrap();
        assert_eq!(shown.nodes.iter().map(|n| n.rank).collect::<Vec<_>>(), [0]);
        assert_eq!(shown.departed[0].left_at, last_beat, "billed to its last heartbeat, not to its detection");
        assert!(shown.healing.unwrap().starts_with("rank 1 was lost"));
        assert_eq!(store.device(&d1).await.unwrap().unwrap().cluster_id, None, "released");

        // The lost device's late words change nothing.
        assert!(!store.task_exited(&job, 1, &d1, Some(0), None, t0).await.unwrap());
        assert!(!store.append_logs(&job, 1, &d1, api_stream(), &["late".into()], t0).await.unwrap());
        let waiting = store.job(&job).await.unwrap().unwrap();
        assert_eq!(waiting.state, JobState::Pending);
        assert!(waiting.message.unwrap().contains("attempt 2 of 2 starts when"), "the customer is told");
        assert!(store.due_retries(10).await.unwrap().is_empty(), "rank 0 still runs the first attempt");
        assert!(store.task_exited(&job, 1, &d0, None, Some("stopped"), t0).await.unwrap());
        assert_eq!(store.job(&job).await.unwrap().unwrap().state, JobState::Pending, "still waiting for a node");
        assert!(store.due_retries(10).await.unwrap().is_empty(), "the cluster is not whole yet");

        let vacancies = store.vacancies(10).await.unwrap();
        assert_eq!(vacancies.len(), 1);
        let vacancy = &vacancies[0];
        assert_eq!((vacancy.rank, vacancy.node_hour_micros), (1, 2_000), "no dearer than the lost node");
        let at = Timestamp(t0.0 + 21_000);
        let epoch = store.commit_replacement(vacancy, &d2, 1_500, at).await.unwrap().unwrap();
        assert_eq!(store.commit_replacement(vacancy, &d0, 1_500, at).await.unwrap(), Err(NotReplaced::Moot));
        let healed = store.cluster(&cluster).await.unwrap().unwrap();
        assert!(healed.healing.is_none());
        assert_eq!(healed.nodes[1].device_id, d2);
        assert_eq!(healed.nodes[1].joined_at, at, "billed from when it joined");

        let retries = store.due_retries(10).await.unwrap();
        assert_eq!((retries.len(), retries[0].attempt), (1, 2));
        let started = store.start_retry(&retries[0], at).await.unwrap().unwrap();
        assert_eq!(started, [d0.clone(), d2.clone()]);
        assert!(store.start_retry(&retries[0], at).await.unwrap().is_none(), "started once");
        assert!(!store.task_started(&job, 1, &d0, at).await.unwrap(), "attempt 1 is over");
        assert!(store.task_started(&job, 2, &d2, at).await.unwrap());
        let tasks = store.device_assignments(&d2, Some(&job)).await.unwrap();
        assert_eq!((tasks[0].assignment.attempt, tasks[0].state), (2, TaskState::Running));

        // The lost device comes back: ready, in no cluster; losing it again replaces nothing.
        store.device_hello(&hello(&d1, &owner), at).await.unwrap().unwrap();
        assert_eq!(store.device(&d1).await.unwrap().unwrap().state, herd_core::DeviceState::Ready);
        let again = store.mark_offline(&d1, "flapping", at).await.unwrap().unwrap();
        assert!(again.cluster.is_none() && again.abandoned_epoch.is_none());
        assert!(store.vacancies(10).await.unwrap().is_empty(), "not replaced twice");
        assert!(epoch > 2, "a new tenure has a new epoch");
    }

    fn api_stream() -> herd_proto::api::Stream {
        herd_proto::api::Stream::Stdout
    }
}
