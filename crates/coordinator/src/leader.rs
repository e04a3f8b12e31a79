//! Which replica does the work that must happen once: marking silent devices offline,
//! ending expired leases, healing, metering, hourly rewards and buyback, reputation aging.
//! Every replica serves requests and worker sockets; the leader is the one holding the
//! database's leader lock (a PostgreSQL session advisory lock: when the leader dies, its
//! session ends and the lock with it, and the next replica to try takes over within one
//! reconcile interval). On SQLite the one coordinator is always the leader.
//!
//! Leadership is an efficiency, not the safety: the work it guards is written through
//! serialized transactions that re-check their conditions (a device already offline is not
//! marked again, a posted period is not posted twice, the journal refuses a fork), so two
//! replicas that both believe they lead for a moment do nothing twice.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use tokio::sync::Mutex;

use crate::store::{LeaderLock, Store};

#[derive(Default)]
pub struct Leadership {
    lock: Mutex<Option<LeaderLock>>,
    leading: AtomicBool,
    /// When this replica took the lock (ms since the epoch).
    since_ms: AtomicI64,
}

impl Leadership {
    /// Keeps or takes the leader lock; whether this replica leads now.
    pub async fn refresh(&self, store: &Store) -> bool {
        let mut lock = self.lock.lock().await;
        if let Some(held) = lock.as_mut() {
            if !held.still_held().await {
                tracing::warn!("lost the leader lock (its database session ended)");
                *lock = None;
            }
        }
        if lock.is_none() {
            match store.try_leader_lock().await {
                Ok(Some(taken)) => {
                    tracing::info!("this replica is the leader now");
                    self.since_ms.store(crate::app::now().0, Ordering::Relaxed);
                    *lock = Some(taken);
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "could not try the leader lock")
                }
            }
        }
        let leading = lock.is_some();
        self.leading.store(leading, Ordering::Relaxed);
        leading
    }

    /// Gives the lock up (shutting down): its session closes, so another replica can take
    /// it at its next try.
    pub async fn release(&self) {
        if let Some(held) = self.lock.lock().await.take() {
            held.close().await;
        }
        self.leading.store(false, Ordering::Relaxed);
    }

    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// How long this replica has led, in ms (0 when it does not).
    pub fn led_for_ms(&self) -> i64 {
        if !self.is_leader() {
            return 0;
        }
        crate::app::now().0 - self.since_ms.load(Ordering::Relaxed)
    }
}
