//! What the coordinator does after a committed change: tell the workers involved and wake
//! log followers. The database is the desired state; these messages drive reality towards it,
//! and a worker that misses one is resynchronised from the database when it reconnects.

use herd_core::{Address, ClusterId, TaskState};
use herd_proto::worker::{RayNodeReport, ServerMessage, TaskAssignment, TaskReport};

use crate::app::{now, App};
use crate::store::{DeviceTask, Loss, StoreResult};

/// Sends a newly created task to its worker; if the worker is away, it gets it on reconnect.
pub fn dispatch(app: &App, device: &Address, assignment: TaskAssignment) {
    if !app.hub.send(device, ServerMessage::StartTask(assignment)) {
        tracing::info!(%device, "worker not connected; the task starts when it reconnects");
    }
}

/// Reconciles a (re)connected worker's tasks with the database: adopts what still runs,
/// records what ended while it was away, restarts nothing, fails what it lost, sends what it
/// never received, and stops what it runs that is no longer wanted.
pub async fn adopt(app: &App, device: &Address, reports: &[TaskReport]) -> StoreResult<()> {
    let tasks = app.store.device_assignments(device, None).await?;
    let at = now();
    let current = |report: &TaskReport| {
        tasks.iter().any(|t| t.assignment.job_id == report.job_id && t.assignment.attempt == report.attempt)
    };
    // What is no longer wanted stops first (a lost device that was leased again may still run
    // an earlier attempt of a job it is now given again).
    for report in reports.iter().filter(|r| r.exited.is_none() && !current(r)) {
        let stop = ServerMessage::StopTask { job_id: report.job_id.clone(), attempt: Some(report.attempt) };
        app.hub.send(device, stop);
    }
    for DeviceTask { assignment, state, stop_requested } in &tasks {
        let (job, attempt) = (&assignment.job_id, assignment.attempt);
        match reports.iter().find(|r| &r.job_id == job && r.attempt == attempt) {
            Some(TaskReport { exited: Some(exit), .. }) => {
                app.store.task_exited(job, attempt, device, exit.exit_code, exit.error.as_deref(), at).await?;
                app.notify_job(job);
            }
            Some(_) => {
                if *state == TaskState::Pending {
                    app.store.task_started(job, attempt, device, at).await?;
                    app.notify_job(job);
                }
                // Stopped while the worker was away: the stop it missed is sent again.
                if *stop_requested {
                    app.hub.send(device, ServerMessage::StopTask { job_id: job.clone(), attempt: Some(attempt) });
                }
            }
            None if *state == TaskState::Running => {
                let error = "lost: the worker no longer runs this task (it restarted)";
                for (other, other_attempt) in
                    app.store.task_lost(job, attempt, device, error, at).await?.unwrap_or_default()
                {
                    crate::healer::stop_task(app, &other, job, other_attempt);
                }
                app.notify_job(job);
            }
            None if *stop_requested => {}
            None => dispatch(app, device, assignment.clone()),
        }
    }
    Ok(())
}

/// Acts on what losing a device changed: the other tasks of jobs that will be retried stop,
/// a Ray cluster whose head moved re-forms around the new head, followers of the affected
/// jobs wake, and a supplier who abandoned a hired lease is slashed (its reputation already
/// counted the interrupted lease).
pub async fn apply_loss(app: &App, device: &Address, loss: &Loss) -> StoreResult<()> {
    if let Some(epoch) = loss.abandoned_epoch {
        let id = format!("slash:abandoned:{epoch}");
        crate::slashing::slash(app, device, &id, app.config.abandon_slash_bps, "slash-abandoned-lease").await;
    }
    for (device, job, attempt) in &loss.stop_tasks {
        crate::healer::stop_task(app, device, job, *attempt);
    }
    for job in &loss.jobs {
        app.notify_job(job);
    }
    if let Some(cluster) = &loss.cluster {
        // The lost node's certificate is revoked: the others refuse it from now on.
        crate::overlay::sync(app, cluster).await?;
        if loss.head_moved {
            sync_ray(app, cluster).await?;
        }
    }
    Ok(())
}

/// Ends a lease; None if the cluster was not running, else the amount of its hold released.
pub async fn terminate_cluster(app: &App, cluster: &ClusterId, reason: &str) -> StoreResult<Option<u64>> {
    // Bill the last seconds while the nodes are still attached, then end the lease.
    app.bill_until_now(cluster).await;
    let Some(terminated) = app.store.terminate_cluster(cluster, reason, now()).await? else {
        return Ok(None);
    };
    for device in &terminated.devices {
        app.hub.send(device, ServerMessage::StopCluster { cluster_id: cluster.clone() });
    }
    app.sync_market(&terminated.devices).await;
    if let Err(error) = crate::overlay::sync(app, cluster).await {
        tracing::error!(%cluster, %error, "could not revoke the ended lease's overlay certificates");
    }
    let released = app.settle_lease(cluster).await;
    for job in &terminated.jobs {
        app.notify_job(job);
    }
    tracing::info!(%cluster, reason, devices = terminated.devices.len(), "cluster terminated");
    Ok(Some(released))
}

/// Sends every node of a Ray cluster the Ray node it should run (workers only once the head
/// runs and they have an address to join). Re-sending is harmless: the agent keeps a node
/// that already runs as assigned.
pub async fn sync_ray(app: &App, cluster: &ClusterId) -> StoreResult<()> {
    for (device, assignment) in app.store.ray_assignments(cluster).await? {
        if let Some(assignment) = assignment {
            if !app.hub.send(&device, ServerMessage::StartRayNode(assignment)) {
                tracing::info!(%device, %cluster, "worker not connected; its Ray node starts when it reconnects");
            }
        }
    }
    Ok(())
}

/// Reconciles a (re)connected worker's Ray nodes: the node of the Ray cluster it is leased
/// to is (re)assigned — kept if it still runs as assigned — and any other is stopped.
pub async fn adopt_ray(app: &App, device: &Address, reports: &[RayNodeReport]) -> StoreResult<()> {
    let current = app.store.device_ray_cluster(device).await?;
    for report in reports {
        if Some(&report.cluster_id) == current.as_ref() {
            record_ray_report(app, device, report).await?;
        } else {
            app.hub.send(device, ServerMessage::StopCluster { cluster_id: report.cluster_id.clone() });
        }
    }
    if let Some(cluster) = current {
        let mine = app.store.ray_assignments(&cluster).await?.into_iter().find(|(d, _)| d == device);
        if let Some((_, Some(assignment))) = mine {
            app.hub.send(device, ServerMessage::StartRayNode(assignment));
        }
    }
    Ok(())
}

/// Applies a worker's report on its Ray node: when the head comes up (or moves), the other
/// nodes are sent the address to join; a node that joined an old head is sent the new one.
pub async fn record_ray_report(app: &App, device: &Address, report: &RayNodeReport) -> StoreResult<()> {
    let Some(outcome) = app.store.record_ray_report(device, report).await? else {
        tracing::info!(%device, cluster = %report.cluster_id, "Ray report for a lease the device no longer holds");
        return Ok(());
    };
    if let Some(gcs) = &outcome.gcs_changed {
        tracing::info!(cluster = %outcome.cluster, gcs = ?gcs, "Ray head address changed");
        if gcs.is_some() {
            sync_ray(app, &outcome.cluster).await?;
        }
    } else if outcome.stale_join {
        let mine = app.store.ray_assignments(&outcome.cluster).await?.into_iter().find(|(d, _)| d == device);
        if let Some((_, Some(assignment))) = mine {
            app.hub.send(device, ServerMessage::StartRayNode(assignment));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use herd_core::{Asset, Timestamp};
    use herd_proto::worker::TaskExit;
    use tokio::time::Instant;

    use super::*;
    use crate::test_support::{admitted_device, lease_with_job, temp_store, test_app};

    /// A device that drops out of a hired lease loses 1 % of its stake, once per tenure.
    #[tokio::test]
    async fn abandoning_a_hired_lease_is_slashed_once() {
        use herd_ledger::{AccountKey, Transfer, TransferKind};

        let (_dir, store, url) = temp_store().await;
        let (app, _stop) = test_app(&store, url).await;
        app.ensure_genesis().await.unwrap();
        let device = Address::from_public_key(&[5; 32]);
        let vault = AccountKey::StakeVault(device.to_string());
        let stake = Transfer {
            id: "stake:test".into(),
            debit: AccountKey::Treasury,
            credit: vault.clone(),
            asset: Asset::Io,
            amount: 1_000_000_000,
            kind: TransferKind::Single,
            code: "stake".into(),
        };
        app.post(&[stake]).await.unwrap();
        let loss = crate::store::Loss { abandoned_epoch: Some(7), ..Default::default() };
        apply_loss(&app, &device, &loss).await.unwrap();
        apply_loss(&app, &device, &loss).await.unwrap();
        let staked = app.books.read(|b| b.ledger.balance(&vault, Asset::Io)).await;
        assert_eq!(staked, 990_000_000, "1 % burned, the same offence not twice");
        let idle = crate::store::Loss::default();
        apply_loss(&app, &device, &idle).await.unwrap();
        assert_eq!(app.books.read(|b| b.ledger.balance(&vault, Asset::Io)).await, 990_000_000);
    }

    /// A worker that was cut off comes back still running attempt 1 of a job whose attempt 2
    /// it now holds (it was leased back into the cluster): the old attempt is stopped first,
    /// then the current one is sent; its report of the old attempt's exit changes nothing.
    #[tokio::test]
    async fn a_returning_worker_stops_a_stale_attempt_and_gets_the_current_one() {
        let (_dir, store, url) = temp_store().await;
        let owner = Address::from_public_key(&[1; 32]);
        let device = Address::from_public_key(&[2; 32]);
        store.register_account(&owner, "hash", Timestamp(0)).await.unwrap();
        admitted_device(&store, &device, &owner).await;
        let (app, _stop) = test_app(&store, url).await;
        let at = now();
        let (cluster, job) = lease_with_job(&store, &owner, &[(device.clone(), 1_000)], 1, at).await;
        // Attempt 1 was lost; attempt 2 waits on the device as a pending task.
        store.task_started(&job, 1, &device, at).await.unwrap();
        store.task_exited(&job, 1, &device, None, Some("lost"), at).await.unwrap();
        let retry = crate::store::Retry { job: job.clone(), cluster: cluster.clone(), attempt: 2 };
        store.mark_retry_wanted_for_tests(&job).await;
        store.start_retry(&retry, at).await.unwrap().unwrap();

        let (_connection, mut outbox) = app.hub.attach(&device, Instant::now());
        let stale_running = TaskReport { job_id: job.clone(), attempt: 1, exited: None };
        adopt(&app, &device, &[stale_running]).await.unwrap();
        let first = outbox.try_recv().unwrap();
        assert!(
            matches!(first, ServerMessage::StopTask { ref job_id, attempt: Some(1) } if job_id == &job),
            "{first:?}"
        );
        let second = outbox.try_recv().unwrap();
        assert!(matches!(second, ServerMessage::StartTask(ref a) if a.job_id == job && a.attempt == 2), "{second:?}");

        let stale_exit = TaskExit { exit_code: Some(0), error: None };
        let stale = TaskReport { job_id: job.clone(), attempt: 1, exited: Some(stale_exit) };
        adopt(&app, &device, &[stale]).await.unwrap();
        let shown = store.job(&job).await.unwrap().unwrap();
        assert_eq!(
            (shown.state, shown.attempt),
            (herd_core::JobState::Pending, 2),
            "attempt 1's exit is not attempt 2's"
        );
    }
}
