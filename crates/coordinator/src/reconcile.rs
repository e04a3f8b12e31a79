//! Background reconcilers: silent devices go offline, expired leases end. Each tick handles
//! a bounded batch, so a backlog drains over several ticks instead of stalling one.

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::actions;
use crate::app::{now, App};

const EXPIRED_PER_TICK_MAX: u32 = 100;

pub async fn run(app: App, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(app.config.reconcile_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if let Err(error) = mark_silent_devices_offline(&app).await {
            tracing::warn!(%error, "liveness reconcile failed; retrying next tick");
        }
        if let Err(error) = end_expired_leases(&app).await {
            tracing::warn!(%error, "expiry reconcile failed; retrying next tick");
        }
    }
}

async fn mark_silent_devices_offline(app: &App) -> crate::store::StoreResult<()> {
    let timeout = app.config.offline_after();
    let reason =
        format!("missed {} heartbeats ({} s without a word)", app.config.missed_heartbeats_max, timeout.as_secs_f64());
    for device in app.hub.take_stale(Instant::now(), timeout) {
        if app.store.mark_offline(&device, &reason, now()).await? {
            tracing::warn!(%device, %reason, "device offline");
        }
    }
    Ok(())
}

async fn end_expired_leases(app: &App) -> crate::store::StoreResult<()> {
    for cluster in app.store.expired_clusters(now(), EXPIRED_PER_TICK_MAX).await? {
        actions::terminate_cluster(app, &cluster, "lease expired").await?;
    }
    Ok(())
}
