//! Jobs, their per-node tasks and their output.

use std::collections::BTreeMap;

use herd_core::{
    Address, ClusterId, DeviceSpec, JobId, JobKind, JobLimits, JobState, TaskLimits, TaskState, Timestamp,
};
use herd_proto::api::{self, LogLine, Stream};
use herd_proto::worker::TaskAssignment;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{json_col, parse_col, Store, StoreResult};

pub struct NewJob<'a> {
    pub id: &'a JobId,
    pub cluster_id: &'a ClusterId,
    pub owner: &'a Address,
    pub command: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub image: Option<&'a str>,
    pub limits: &'a JobLimits,
    /// Each node's rank and device (none for a Ray job: Ray places it).
    pub nodes: &'a [(u32, Address)],
    pub now: Timestamp,
    pub kind: JobKind,
    pub max_retries: u32,
    /// Ray jobs: the runtime_env as JSON, kept to resubmit the job after a lost head.
    pub runtime_env: Option<&'a str>,
}

/// An unfinished task of a device, as the worker must run it.
pub struct DeviceTask {
    pub assignment: TaskAssignment,
    pub state: TaskState,
    /// The customer stopped the job; the worker may not have heard.
    pub stop_requested: bool,
}

/// Fails a device's unfinished tasks with `error`; returns the jobs they belong to (their
/// states are re-derived).
pub(super) async fn fail_device_tasks(
    conn: &mut AnyConnection,
    device: &Address,
    error: &str,
    now: Timestamp,
) -> StoreResult<Vec<JobId>> {
    let rows = sqlx::query(
        "UPDATE job_tasks SET state = 'failed', error = $1, finished_at = $2
         WHERE device_id = $3 AND state IN ('pending', 'running') RETURNING job_id",
    )
    .bind(error)
    .bind(now.0)
    .bind(device.as_str())
    .fetch_all(&mut *conn)
    .await?;
    let mut jobs = rows.iter().map(|r| parse_col("job_tasks.job_id", r.get(0))).collect::<StoreResult<Vec<JobId>>>()?;
    jobs.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    jobs.dedup();
    for job in &jobs {
        refresh_job_state(conn, job, now).await?;
    }
    Ok(jobs)
}

/// How a task attempt ended.
pub(super) struct TaskEnd<'a> {
    pub state: TaskState,
    pub exit_code: Option<i32>,
    pub error: Option<&'a str>,
}

/// Ends the device's unfinished task of that job attempt; false if there is none (it ended
/// already, or the report is of an attempt or a device that is not current).
pub(super) async fn end_task(
    conn: &mut AnyConnection,
    job: &JobId,
    attempt: u32,
    device: &Address,
    end: &TaskEnd<'_>,
    now: Timestamp,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE job_tasks SET state = $1, exit_code = $2, error = $3, finished_at = $4, started_at = COALESCE(started_at, $5)
         WHERE job_id = $6 AND device_id = $7 AND attempt = $8 AND state IN ('pending', 'running')",
    )
    .bind(end.state.as_str())
    .bind(end.exit_code)
    .bind(end.error)
    .bind(now.0)
    .bind(now.0)
    .bind(job.as_str())
    .bind(device.as_str())
    .bind(i64::from(attempt))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Ends the job's tasks that have not started (the worker may never have received them).
pub(super) async fn stop_pending_tasks(
    conn: &mut AnyConnection,
    job: &JobId,
    error: &str,
    now: Timestamp,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE job_tasks SET state = 'stopped', error = $1, finished_at = $2 WHERE job_id = $3 AND state = 'pending'",
    )
    .bind(error)
    .bind(now.0)
    .bind(job.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Re-derives a job's state from its tasks (the only source of truth) and stores it.
pub(super) async fn refresh_job_state(conn: &mut AnyConnection, job: &JobId, now: Timestamp) -> StoreResult<JobState> {
    let rows =
        sqlx::query("SELECT state FROM job_tasks WHERE job_id = $1").bind(job.as_str()).fetch_all(&mut *conn).await?;
    if rows.is_empty() {
        // A Ray job: Ray, not tasks, decides its state (see `update_ray_job`).
        let state: String =
            sqlx::query("SELECT state FROM jobs WHERE id = $1").bind(job.as_str()).fetch_one(&mut *conn).await?.get(0);
        return parse_col("jobs.state", &state);
    }
    let retrying: Option<i64> = sqlx::query("SELECT retry_wanted_at FROM jobs WHERE id = $1")
        .bind(job.as_str())
        .fetch_one(&mut *conn)
        .await?
        .get(0);
    if retrying.is_some() {
        // Waiting for its next attempt: the previous attempt's tasks ending changes nothing.
        return Ok(JobState::Pending);
    }
    let tasks = rows.iter().map(|r| parse_col("job_tasks.state", r.get(0))).collect::<StoreResult<Vec<TaskState>>>()?;
    let state = JobState::from_tasks(&tasks);
    sqlx::query(
        "UPDATE jobs SET state = $1, finished_at = CASE WHEN $2 THEN COALESCE(finished_at, $3) ELSE NULL END WHERE id = $4",
    )
    .bind(state.as_str())
    .bind(state.is_terminal())
    .bind(now.0)
    .bind(job.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(state)
}

fn stream_name(stream: Stream) -> &'static str {
    match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    }
}

impl Store {
    pub async fn create_job(&self, new: &NewJob<'_>) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO jobs (id, cluster_id, owner, state, command, env, image, limits, created_at, kind,
                max_retries, runtime_env)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(new.id.as_str())
        .bind(new.cluster_id.as_str())
        .bind(new.owner.as_str())
        .bind(JobState::Pending.as_str())
        .bind(serde_json::to_string(new.command).expect("strings serialise"))
        .bind(serde_json::to_string(new.env).expect("strings serialise"))
        .bind(new.image)
        .bind(serde_json::to_string(new.limits).expect("limits serialise"))
        .bind(new.now.0)
        .bind(new.kind.as_str())
        .bind(i64::from(new.max_retries))
        .bind(new.runtime_env)
        .execute(&mut *tx)
        .await?;
        for (rank, device) in new.nodes {
            sqlx::query("INSERT INTO job_tasks (job_id, rank, device_id, state) VALUES ($1, $2, $3, 'pending')")
                .bind(new.id.as_str())
                .bind(i64::from(*rank))
                .bind(device.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn job(&self, id: &JobId) -> StoreResult<Option<api::Job>> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = $1").bind(id.as_str()).fetch_optional(&self.read).await?;
        match row {
            Some(row) => Ok(Some(self.job_from_row(&row).await?)),
            None => Ok(None),
        }
    }

    pub async fn jobs_of(
        &self,
        owner: &Address,
        cluster: Option<&ClusterId>,
        limit: u32,
    ) -> StoreResult<Vec<api::Job>> {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE owner = $1 AND ($2 IS NULL OR cluster_id = $3) ORDER BY created_at DESC LIMIT $4",
        )
        .bind(owner.as_str())
        .bind(cluster.map(|c| c.as_str()))
        .bind(cluster.map(|c| c.as_str()))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        let mut jobs = Vec::with_capacity(rows.len());
        for row in &rows {
            jobs.push(self.job_from_row(row).await?);
        }
        Ok(jobs)
    }

    async fn job_from_row(&self, row: &AnyRow) -> StoreResult<api::Job> {
        let id: JobId = parse_col("jobs.id", row.get("id"))?;
        let tasks = sqlx::query("SELECT * FROM job_tasks WHERE job_id = $1 ORDER BY rank")
            .bind(id.as_str())
            .fetch_all(&self.read)
            .await?;
        let tasks = tasks
            .iter()
            .map(|t| {
                Ok(api::Task {
                    rank: t.get::<i64, _>("rank") as u32,
                    device_id: parse_col("job_tasks.device_id", t.get("device_id"))?,
                    state: parse_col("job_tasks.state", t.get("state"))?,
                    exit_code: t.get::<Option<i64>, _>("exit_code").map(|c| c as i32),
                    error: t.get("error"),
                    started_at: t.get::<Option<i64>, _>("started_at").map(Timestamp),
                    finished_at: t.get::<Option<i64>, _>("finished_at").map(Timestamp),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(api::Job {
            cluster_id: parse_col("jobs.cluster_id", row.get("cluster_id"))?,
            owner: parse_col("jobs.owner", row.get("owner"))?,
            state: parse_col("jobs.state", row.get("state"))?,
            command: json_col("jobs.command", row.get("command"))?,
            image: row.get("image"),
            limits: json_col("jobs.limits", row.get("limits"))?,
            tasks,
            created_at: Timestamp(row.get("created_at")),
            finished_at: row.get::<Option<i64>, _>("finished_at").map(Timestamp),
            kind: parse_col("jobs.kind", row.get("kind"))?,
            message: row.get("message"),
            attempt: row.get::<i64, _>("attempt") as u32,
            max_retries: row.get::<i64, _>("max_retries") as u32,
            id,
        })
    }

    /// A Ray job's runtime_env as submitted.
    pub async fn job_runtime_env(&self, id: &JobId) -> StoreResult<Option<api::RayRuntimeEnv>> {
        let row = sqlx::query("SELECT runtime_env FROM jobs WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.read)
            .await?;
        match row.and_then(|r| r.get::<Option<String>, _>(0)) {
            Some(text) => Ok(Some(json_col("jobs.runtime_env", &text)?)),
            None => Ok(None),
        }
    }

    /// The extra environment a job was created with.
    pub async fn job_env(&self, id: &JobId) -> StoreResult<BTreeMap<String, String>> {
        let row =
            sqlx::query("SELECT env FROM jobs WHERE id = $1").bind(id.as_str()).fetch_optional(&self.read).await?;
        match row {
            Some(row) => json_col("jobs.env", row.get(0)),
            None => Ok(BTreeMap::new()),
        }
    }

    pub async fn job_owner(&self, id: &JobId) -> StoreResult<Option<Address>> {
        let row =
            sqlx::query("SELECT owner FROM jobs WHERE id = $1").bind(id.as_str()).fetch_optional(&self.read).await?;
        row.map(|r| parse_col("jobs.owner", r.get(0))).transpose()
    }

    pub async fn job_state(&self, id: &JobId) -> StoreResult<Option<JobState>> {
        let row =
            sqlx::query("SELECT state FROM jobs WHERE id = $1").bind(id.as_str()).fetch_optional(&self.read).await?;
        row.map(|r| parse_col("jobs.state", r.get(0))).transpose()
    }

    /// The worker confirmed it started the task. Only the device the task was assigned to
    /// can report on it, and only on the current attempt.
    pub async fn task_started(&self, job: &JobId, attempt: u32, device: &Address, now: Timestamp) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE job_tasks SET state = 'running', started_at = $1
             WHERE job_id = $2 AND device_id = $3 AND attempt = $4 AND state = 'pending'",
        )
        .bind(now.0)
        .bind(job.as_str())
        .bind(device.as_str())
        .bind(i64::from(attempt))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        refresh_job_state(&mut tx, job, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records how a task ended; false if it had already ended (reports are idempotent).
    pub async fn task_exited(
        &self,
        job: &JobId,
        attempt: u32,
        device: &Address,
        exit_code: Option<i32>,
        error: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let Some(row) = sqlx::query("SELECT stop_requested FROM jobs WHERE id = $1")
            .bind(job.as_str())
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(false);
        };
        let state = TaskState::from_exit(exit_code, super::flag(&row, 0));
        let end = TaskEnd { state, exit_code, error };
        if !end_task(&mut tx, job, attempt, device, &end, now).await? {
            return Ok(false);
        }
        refresh_job_state(&mut tx, job, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Appends output lines from the device that runs the task's current attempt; false if
    /// the device runs no such task (a stale attempt's or a lost device's output is dropped).
    pub async fn append_logs(
        &self,
        job: &JobId,
        attempt: u32,
        device: &Address,
        stream: Stream,
        lines: &[String],
        now: Timestamp,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        // Output precedes its task's exit report on the worker's queue, so a finished task
        // takes none: what arrives then is from a device that was declared lost.
        let Some(row) = sqlx::query(
            "SELECT rank FROM job_tasks
             WHERE job_id = $1 AND device_id = $2 AND attempt = $3 AND state IN ('pending', 'running')",
        )
        .bind(job.as_str())
        .bind(device.as_str())
        .bind(i64::from(attempt))
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(false);
        };
        let rank: i64 = row.get(0);
        for line in lines {
            sqlx::query("INSERT INTO job_logs (job_id, rank, stream, text, at) VALUES ($1, $2, $3, $4, $5)")
                .bind(job.as_str())
                .bind(rank)
                .bind(stream_name(stream))
                .bind(line)
                .bind(now.0)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub async fn logs_after(&self, job: &JobId, after_seq: i64, limit: u32) -> StoreResult<Vec<LogLine>> {
        let rows = sqlx::query(
            "SELECT seq, rank, stream, text, at FROM job_logs WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(job.as_str())
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(log_line).collect()
    }

    /// The job's last `limit` lines, oldest first.
    pub async fn logs_tail(&self, job: &JobId, limit: u32) -> StoreResult<Vec<LogLine>> {
        let rows = sqlx::query(
            "SELECT seq, rank, stream, text, at FROM job_logs WHERE job_id = $1 ORDER BY seq DESC LIMIT $2",
        )
        .bind(job.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter().rev().map(log_line).collect()
    }

    /// Asks the job to stop: tasks not yet started end now; returns the devices whose tasks
    /// may be running and must be told.
    pub async fn request_stop(&self, job: &JobId, now: Timestamp) -> StoreResult<Vec<Address>> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE jobs SET stop_requested = 1 WHERE id = $1").bind(job.as_str()).execute(&mut *tx).await?;
        let rows = sqlx::query("SELECT device_id FROM job_tasks WHERE job_id = $1 AND state IN ('pending', 'running')")
            .bind(job.as_str())
            .fetch_all(&mut *tx)
            .await?;
        let devices =
            rows.iter().map(|r| parse_col("job_tasks.device_id", r.get(0))).collect::<StoreResult<Vec<_>>>()?;
        stop_pending_tasks(&mut tx, job, "stopped before it started", now).await?;
        refresh_job_state(&mut tx, job, now).await?;
        tx.commit().await?;
        Ok(devices)
    }

    /// Unfinished tasks assigned to a device (only `job`'s, if given), with what the worker
    /// needs to run them: the task's limits are its lease's, narrowed by the job.
    pub async fn device_assignments(&self, device: &Address, job: Option<&JobId>) -> StoreResult<Vec<DeviceTask>> {
        let rows = sqlx::query(
            "SELECT t.job_id, t.rank, t.attempt, t.state, j.cluster_id, j.command, j.env, j.image, j.limits,
                j.stop_requested,
                (SELECT spec FROM devices WHERE id = t.device_id) AS spec,
                (SELECT nodes_wanted FROM clusters c WHERE c.id = j.cluster_id) AS node_count,
                (SELECT ray_gcs_address FROM clusters c WHERE c.id = j.cluster_id) AS ray_address,
                (SELECT COALESCE(
                    (SELECT o.address FROM overlay_certs o WHERE o.cluster_id = n.cluster_id AND o.device_id = n.device_id
                       AND o.epoch = n.epoch AND o.revoked_at IS NULL AND o.replaced_at IS NULL),
                    d.advertise_addr)
                  FROM cluster_nodes n JOIN devices d ON d.id = n.device_id
                  WHERE n.cluster_id = j.cluster_id AND n.rank = 0 AND n.left_at IS NULL) AS head_addr
             FROM job_tasks t JOIN jobs j ON j.id = t.job_id
             WHERE t.device_id = $1 AND t.state IN ('pending', 'running') AND ($2 IS NULL OR t.job_id = $3)
             ORDER BY j.created_at",
        )
        .bind(device.as_str())
        .bind(job.map(|j| j.as_str()))
        .bind(job.map(|j| j.as_str()))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let spec: DeviceSpec = json_col("devices.spec", r.get("spec"))?;
                let job_limits: JobLimits = json_col("jobs.limits", r.get("limits"))?;
                // Validated against every node when the job was created; a device whose
                // hardware shrank since then gets its lease's limits, not more.
                let lease = TaskLimits::of_lease(&spec);
                let limits = lease.clone().narrowed(&job_limits).unwrap_or(lease);
                let assignment = TaskAssignment {
                    job_id: parse_col("job_tasks.job_id", r.get("job_id"))?,
                    cluster_id: parse_col("jobs.cluster_id", r.get("cluster_id"))?,
                    rank: r.get::<i64, _>("rank") as u32,
                    node_count: r.get::<i64, _>("node_count") as u32,
                    head_addr: r.get::<Option<String>, _>("head_addr").unwrap_or_default(),
                    command: json_col("jobs.command", r.get("command"))?,
                    env: json_col("jobs.env", r.get("env"))?,
                    image: r.get("image"),
                    limits,
                    attempt: r.get::<i64, _>("attempt") as u32,
                    ray_address: r.get("ray_address"),
                };
                Ok(DeviceTask {
                    assignment,
                    state: parse_col("job_tasks.state", r.get("state"))?,
                    stop_requested: super::flag(r, "stop_requested"),
                })
            })
            .collect()
    }

    pub async fn job_counts_by_state(&self) -> StoreResult<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetch_all(&self.read).await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

fn log_line(r: &AnyRow) -> StoreResult<LogLine> {
    Ok(LogLine {
        seq: r.get(0),
        rank: r.get::<i64, _>(1) as u32,
        stream: if r.get::<&str, _>(2) == "stderr" { Stream::Stderr } else { Stream::Stdout },
        text: r.get(3),
        at: Timestamp(r.get(4)),
    })
}
