//! Background reconcilers: heartbeats are flushed in one batch, silent devices go offline,
//! expired leases end, clusters that lost a node are healed. Each tick handles a bounded batch, so a backlog drains over several
//! ticks instead of stalling one.

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::actions;
use crate::app::{now, App};

const EXPIRED_PER_TICK_MAX: u32 = 100;
const SILENT_PER_TICK_MAX: u32 = 1_000;

pub async fn run(app: App, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(app.config.reconcile_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut state = TickState::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => {
                flush_heartbeats(&app).await;
                return;
            }
        }
        self::tick(&app, Instant::now(), &mut state).await;
    }
}

/// What the reconcilers remember between ticks.
#[derive(Default)]
pub(crate) struct TickState {
    reputations_aged: Option<Instant>,
    /// The overlay relay generation last acted on.
    relay_generation: u64,
}

/// One pass of every reconciler, as of `at`. Every replica stores its workers' heartbeats
/// and takes in what the others wrote; the leader alone does the once-only work.
pub(crate) async fn tick(app: &App, at: Instant, state: &mut TickState) {
    flush_heartbeats(app).await;
    let leader = app.leadership.refresh(&app.store).await;
    if app.replicated() {
        follow_other_replicas(app).await;
    }
    if let Err(error) = app.update_prices().await {
        tracing::warn!(%error, "price update failed; retrying next tick");
    }
    if !leader {
        // The leader judges silence from the heartbeats every replica stores.
        let _ = app.hub.take_stale(at, app.config.offline_after());
        return;
    }
    if let Err(error) = mark_silent_devices_offline(app, at).await {
        tracing::warn!(%error, "liveness reconcile failed; retrying next tick");
    }
    if let Err(error) = end_expired_leases(app).await {
        tracing::warn!(%error, "expiry reconcile failed; retrying next tick");
    }
    if let Err(error) = crate::healer::heal(app).await {
        tracing::warn!(%error, "healing failed; retrying next tick");
    }
    if let Err(error) = crate::overlay::after_relay_restart(app, &mut state.relay_generation).await {
        tracing::warn!(%error, "overlay relay restart handling failed; retrying next tick");
    }
    app.meter_leases().await;
    app.expire_holds().await;
    if let Err(error) = app.run_economy().await {
        tracing::warn!(%error, "reward or buyback run failed; retrying next tick");
    }
    if state.reputations_aged.is_none_or(|aged| at.duration_since(aged) >= REPUTATION_INTERVAL) {
        state.reputations_aged = Some(at);
        match app.store.age_reputations(now()).await {
            Ok(changed) => app.sync_market(&changed).await,
            Err(error) => tracing::warn!(%error, "reputation pass failed; retrying next pass"),
        }
    }
}

/// How often uptime is aged into every device's reputation (a full pass over the devices).
const REPUTATION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Another replica may have moved money or changed devices: take in the journal's new
/// entries and the devices' current offers (the commit's re-check in SQL keeps a stale plan
/// safe either way; this keeps plans from going stale).
async fn follow_other_replicas(app: &App) {
    if let Err(error) = app.books.refresh(&app.store).await {
        tracing::warn!(%error, "could not take in other replicas' ledger entries");
    }
    if let Err(error) = app.market.reload(&app.store, app.overlay.is_some()).await {
        tracing::warn!(%error, "could not reload the market from the database");
    }
}

async fn flush_heartbeats(app: &App) {
    let beats = app.hub.take_heartbeats();
    if let Err(error) = app.store.record_heartbeats(&beats).await {
        // Only the displayed utilisation is lost; liveness lives in the hub.
        tracing::warn!(%error, devices = beats.len(), "could not store heartbeats");
    }
}

async fn mark_silent_devices_offline(app: &App, at: Instant) -> crate::store::StoreResult<()> {
    let timeout = app.config.offline_after();
    let reason =
        format!("missed {} heartbeats ({} s without a word)", app.config.missed_heartbeats_max, timeout.as_secs_f64());
    let mut silent = app.hub.take_stale(at, timeout);
    if app.replicated() {
        // Replicas: a device's socket may be on another replica, whose hub this one cannot
        // see; the heartbeats all of them store are the shared view.
        // A new leader (or a restarted one) first gives every device one timeout to be heard,
        // as the hub does after a restart.
        let timeout_ms = timeout.as_millis() as i64;
        silent = match app.leadership.led_for_ms() >= timeout_ms {
            true => app.store.silent_devices(herd_core::Timestamp(now().0 - timeout_ms), SILENT_PER_TICK_MAX).await?,
            false => Vec::new(),
        };
    }
    for device in silent {
        if let Some(loss) = app.store.mark_offline(&device, &reason, now()).await? {
            tracing::warn!(%device, %reason, lost_tasks = loss.jobs.len(), cluster = ?loss.cluster, "device offline");
            actions::apply_loss(app, &device, &loss).await?;
        }
        app.sync_market(std::slice::from_ref(&device)).await;
    }
    Ok(())
}

async fn end_expired_leases(app: &App) -> crate::store::StoreResult<()> {
    for cluster in app.store.expired_clusters(now(), EXPIRED_PER_TICK_MAX).await? {
        actions::terminate_cluster(app, &cluster, "lease expired").await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use herd_core::{Address, DeviceState};

    use super::*;
    use crate::store::Store;
    use crate::test_support::{admitted_device, test_app};

    /// The liveness reconciler on paused time: 3 missed 5 s heartbeats and the device is
    /// offline, with the reason recorded; a heartbeat just before the deadline saves it.
    #[tokio::test(flavor = "current_thread")]
    async fn silent_devices_go_offline_after_three_missed_heartbeats() {
        let dir = tempfile::tempdir().unwrap();
        let url = herd_testkit::database_url(dir.path());
        let store = Store::open(&url).await.unwrap();
        let (owner, quiet, chatty) = (
            Address::from_public_key(&[1; 32]),
            Address::from_public_key(&[2; 32]),
            Address::from_public_key(&[3; 32]),
        );
        assert!(store.register_account(&owner, "hash", now()).await.unwrap());
        for device in [&quiet, &chatty] {
            admitted_device(&store, device, &owner).await;
        }
        let (app, _stop) = test_app(&store, url).await;

        // Open the read pool's connection before pausing: a connect under paused time would
        // let tokio jump to sqlx's acquire timeout while the connect waits on its thread.
        assert_eq!(store.device(&quiet).await.unwrap().unwrap().state, DeviceState::Ready);
        tokio::time::pause();
        // While a query waits on SQLite's thread the runtime is idle, and paused time would
        // jump to the next timer — sqlx's 30 s acquire timeout. A 1 ms ticker keeps each
        // such jump to a millisecond.
        let ticker = tokio::spawn(async {
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        let (_c1, _rx1) = app.hub.attach(&quiet, Instant::now());
        let (_c2, _rx2) = app.hub.attach(&chatty, Instant::now());
        let state = |id: Address| {
            let store = store.clone();
            async move { store.device(&id).await.unwrap().unwrap().state }
        };

        tokio::time::advance(Duration::from_secs(14)).await;
        app.hub.touch(&chatty, Instant::now());
        mark_silent_devices_offline(&app, Instant::now()).await.unwrap();
        assert_eq!(state(quiet.clone()).await, DeviceState::Ready, "14 s is within 3 × 5 s");

        tokio::time::advance(Duration::from_secs(2)).await;
        mark_silent_devices_offline(&app, Instant::now()).await.unwrap();
        assert_eq!(state(quiet.clone()).await, DeviceState::Offline);
        assert_eq!(state(chatty.clone()).await, DeviceState::Ready, "it spoke 2 s ago");
        assert!(!app.hub.is_connected(&quiet), "its connection is dropped");
        let events = store.device_events(&quiet, 10).await.unwrap();
        assert_eq!(events[0].reason, "missed 3 heartbeats (15 s without a word)");
        ticker.abort();
    }

    #[tokio::test]
    async fn expired_leases_end_and_free_their_devices() {
        let dir = tempfile::tempdir().unwrap();
        let url = herd_testkit::database_url(dir.path());
        let store = Store::open(&url).await.unwrap();
        let (owner, device) = (Address::from_public_key(&[1; 32]), Address::from_public_key(&[2; 32]));
        store.register_account(&owner, "hash", now()).await.unwrap();
        admitted_device(&store, &device, &owner).await;
        let (app, _stop) = test_app(&store, url).await;
        let (expired, current) =
            (herd_core::ClusterId::from_entropy([1; 8]), herd_core::ClusterId::from_entropy([2; 8]));
        let at = now();
        let devices = [(device.clone(), 1_000_000)];
        let lease = |id, expires_at| crate::store::NewCluster {
            id,
            owner: &owner,
            hardware: "CPU",
            country: None,
            devices: &devices,
            price_per_hour_micros: 1_000_000,
            asset: herd_core::Asset::Io,
            request: "{}",
            now: at,
            expires_at,
            ray: None,
        };
        store.commit_cluster(&lease(&expired, herd_core::Timestamp(at.0 - 1))).await.unwrap().unwrap();
        let stale = store.commit_cluster(&lease(&current, herd_core::Timestamp(at.0 + 3_600_000))).await.unwrap();
        assert_eq!(
            stale,
            Err(crate::store::StalePlan { device: device.clone() }),
            "a hired device cannot be leased twice"
        );
        assert_eq!(store.device(&device).await.unwrap().unwrap().state, DeviceState::Hired);

        end_expired_leases(&app).await.unwrap();
        let cluster = store.cluster(&expired).await.unwrap().unwrap();
        assert_eq!(cluster.state, herd_core::ClusterState::Terminated);
        assert_eq!(cluster.end_reason.as_deref(), Some("lease expired"));
        let freed = store.device(&device).await.unwrap().unwrap();
        assert_eq!((freed.state, freed.cluster_id), (DeviceState::Ready, None));
        assert!(store.cluster(&current).await.unwrap().is_none(), "the refused plan left nothing behind");
    }
}
