//! The healer (one step per reconcile tick): a rank whose device was lost gets a replacement
//! that satisfies the cluster's original request at no more than the lost node cost, and a
//! job that lost a node starts its next attempt once its cluster is whole again.

use herd_core::money::format_usd;
use herd_core::Address;
use herd_market::matching::Colocation;
use herd_proto::api::CreateCluster;
use herd_proto::worker::ServerMessage;

use crate::actions;
use crate::api::market::parse_request;
use crate::app::{now, App};
use crate::store::{NotReplaced, Retry, StoreResult, Vacancy};

const VACANCIES_PER_TICK_MAX: u32 = 32;
const RETRIES_PER_TICK_MAX: u32 = 32;
/// After a search found nothing, wait this long before searching again: capacity changes
/// slowly and every search holds the market lock.
const SEARCH_AGAIN_AFTER_MS: i64 = 5_000;
/// Re-plans after losing a race for a device.
const PLAN_ATTEMPTS_MAX: u32 = 3;

pub async fn heal(app: &App) -> StoreResult<()> {
    for vacancy in app.store.vacancies(VACANCIES_PER_TICK_MAX).await? {
        if vacancy.tried_at.is_some_and(|at| now().0 - at.0 < SEARCH_AGAIN_AFTER_MS) {
            continue;
        }
        replace(app, &vacancy).await?;
    }
    for retry in app.store.due_retries(RETRIES_PER_TICK_MAX).await? {
        match app.store.job(&retry.job).await? {
            Some(job) if job.kind == herd_core::JobKind::Ray => resubmit(app, retry),
            Some(_) => start_retry(app, &retry).await?,
            None => {}
        }
    }
    Ok(())
}

/// Resubmits a Ray job off the reconcile loop (Ray's job API may take seconds to answer a
/// head that just started), at most once at a time per job.
fn resubmit(app: &App, retry: Retry) {
    let fresh = app.resubmitting.lock().unwrap_or_else(|p| p.into_inner()).insert(retry.job.clone());
    if !fresh {
        return;
    }
    let app = app.clone();
    tokio::spawn(async move {
        if let Err(error) = crate::api::ray::resubmit(&app, &retry).await {
            tracing::warn!(job = %retry.job, %error, "could not resubmit the Ray job; retrying next tick");
        }
        app.resubmitting.lock().unwrap_or_else(|p| p.into_inner()).remove(&retry.job);
    });
}

/// Finds, takes and commits one replacement for a vacant rank, or records why there is none.
async fn replace(app: &App, vacancy: &Vacancy) -> StoreResult<()> {
    let request: CreateCluster = match serde_json::from_str(&vacancy.request) {
        Ok(request) => request,
        Err(error) => {
            let why =
                format!("rank {} cannot be replaced: the cluster's request is unreadable ({error})", vacancy.rank);
            return app.store.heal_deferred(&vacancy.cluster, &why, now()).await;
        }
    };
    let lease_nodes = request.nodes;
    let mut parsed = match parse_request(&CreateCluster { nodes: 1, ..request }) {
        Ok(parsed) => parsed,
        Err(error) => {
            let why = format!("rank {} cannot be replaced: {}", vacancy.rank, error.message);
            return app.store.heal_deferred(&vacancy.cluster, &why, now()).await;
        }
    };
    // One node joins the others: it must sit with them where the request asked for that.
    match parsed.request.colocation {
        Colocation::Anywhere => {}
        Colocation::SameCountry => {
            if let Some(country) = vacancy.countries.first().and_then(|c| <[u8; 2]>::try_from(c.as_bytes()).ok()) {
                parsed.request.location.allow = Some(vec![country]);
            }
        }
        Colocation::SameSupplier => {
            parsed.request.supplier = vacancy.suppliers.first().map(Address::public_key_bytes);
        }
    }
    parsed.request.colocation = Colocation::Anywhere;
    // The replacement joins the others: it must be able to reach them.
    parsed.request.multi_node = lease_nodes > 1;
    for _ in 0..PLAN_ATTEMPTS_MAX {
        let planned = {
            let mut guard = app.market.lock();
            let market = &mut *guard;
            match market.index.place(&parsed.request, &market.prices) {
                Ok(placement) => {
                    let node = placement.nodes.into_iter().next().expect("one node was asked for");
                    if node.node_hour_micros > vacancy.node_hour_micros {
                        Err(format!(
                            "the cheapest replacement costs {}/h, more than the {}/h agreed for this node",
                            format_usd(node.node_hour_micros),
                            format_usd(vacancy.node_hour_micros)
                        ))
                    } else {
                        market.index.reserve(&[node.device]).expect("planned under this lock");
                        Ok(node)
                    }
                }
                Err(refusal) => Err(refusal.to_string()),
            }
        };
        let node = match planned {
            Ok(node) => node,
            Err(why) => {
                let note = format!(
                    "degraded: rank {} has no device; waiting for a replacement ({why}); only live nodes are billed",
                    vacancy.rank
                );
                tracing::info!(cluster = %vacancy.cluster, rank = vacancy.rank, %why, "no replacement yet");
                return app.store.heal_deferred(&vacancy.cluster, &note, now()).await;
            }
        };
        let device = Address::from_public_key(&node.device);
        let committed = app.store.commit_replacement(vacancy, &device, node.node_hour_micros, now()).await;
        app.sync_market(std::slice::from_ref(&device)).await;
        match committed? {
            Ok(epoch) => {
                tracing::info!(cluster = %vacancy.cluster, rank = vacancy.rank, %device, epoch,
                    per_hour = %format_usd(node.node_hour_micros), "replacement node leased");
                crate::overlay::sync(app, &vacancy.cluster).await?;
                return actions::sync_ray(app, &vacancy.cluster).await;
            }
            Err(NotReplaced::Moot) => return Ok(()),
            Err(NotReplaced::Stale) => {
                tracing::info!(%device, "the index was behind the database; re-planning the replacement");
            }
        }
    }
    Ok(())
}

/// Starts a command job's next attempt on its cluster's current nodes.
async fn start_retry(app: &App, retry: &Retry) -> StoreResult<()> {
    let Some(devices) = app.store.start_retry(retry, now()).await? else { return Ok(()) };
    tracing::info!(job = %retry.job, attempt = retry.attempt, "job retried after a lost node");
    for device in &devices {
        for task in app.store.device_assignments(device, Some(&retry.job)).await? {
            actions::dispatch(app, device, task.assignment);
        }
    }
    app.notify_job(&retry.job);
    Ok(())
}

/// Stops a task of a job attempt on a device (used when a job is about to be retried).
pub fn stop_task(app: &App, device: &Address, job: &herd_core::JobId, attempt: u32) {
    app.hub.send(device, ServerMessage::StopTask { job_id: job.clone(), attempt: Some(attempt) });
}
