//! Deterministic fault schedules and the invariants a healing network keeps under them.
//!
//! A schedule is a pure function of its seed: customers lease clusters and run jobs while
//! workers crash, are cut off and come back, and the coordinator itself dies and restarts.
//! The coordinator's own test drives its real code (store, reconcilers, healer, metering,
//! ledger) through a schedule and checks a snapshot of the resulting world against
//! [`check`] after every step; a failing seed is printed and replays exactly.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One thing that happens to the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Time passes: connected workers heartbeat and finish what is due, reconcilers tick.
    Advance { ms: u32 },
    /// A worker's machine dies: its connection drops and its tasks are gone.
    Crash { worker: usize },
    /// A worker is cut off: its connection drops, its tasks keep running unheard.
    Partition { worker: usize },
    /// A crashed or cut-off worker reconnects (reporting what it still runs).
    Reconnect { worker: usize },
    /// The coordinator is killed and restarted on its database.
    RestartCoordinator,
    /// A customer leases a cluster of this many nodes.
    Lease { nodes: u32 },
    /// A job on the n-th cluster leased so far (modulo their count) that runs this long.
    Submit { cluster: usize, max_retries: u32, run_ms: u32 },
    /// The n-th cluster leased so far (modulo their count) is released.
    Release { cluster: usize },
}

/// A reproducible schedule of `steps` steps for `workers` workers.
pub fn schedule(seed: u64, workers: usize, steps: usize) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..steps)
        .map(|_| match rng.gen_range(0..100) {
            0..=39 => Step::Advance { ms: rng.gen_range(100..=3_000) },
            40..=47 => Step::Crash { worker: rng.gen_range(0..workers) },
            48..=53 => Step::Partition { worker: rng.gen_range(0..workers) },
            54..=67 => Step::Reconnect { worker: rng.gen_range(0..workers) },
            68..=69 => Step::RestartCoordinator,
            70..=81 => Step::Lease { nodes: rng.gen_range(2..=10) },
            82..=95 => Step::Submit {
                cluster: rng.gen_range(0..64),
                max_retries: rng.gen_range(0..=2),
                run_ms: rng.gen_range(2_000..=60_000),
            },
            _ => Step::Release { cluster: rng.gen_range(0..64) },
        })
        .collect()
}

/// A device's tenure of a rank, as the database holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenure {
    pub epoch: i64,
    pub cluster: String,
    pub rank: u32,
    pub device: String,
    pub node_hour_micros: i64,
    pub joined_ms: i64,
    pub left_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub id: String,
    pub running: bool,
    pub created_ms: i64,
    pub ended_ms: Option<i64>,
    pub nodes_wanted: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub id: String,
    pub state: String,
    pub cluster: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub rank: u32,
    pub device: String,
    pub attempt: u32,
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    pub cluster: String,
    pub state: String,
    pub attempt: u32,
    pub max_retries: u32,
    pub waiting_retry: bool,
    pub tasks: Vec<Task>,
}

/// A posted transfer of the public journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub id: String,
    pub amount: u64,
}

/// What the checks look at: the database's devices, clusters, tenures and jobs, the
/// journal's transfers, and the ledger's balances, after a step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct World {
    pub now_ms: i64,
    pub devices: Vec<Device>,
    pub clusters: Vec<Cluster>,
    pub tenures: Vec<Tenure>,
    pub jobs: Vec<Job>,
    pub transfers: Vec<Transfer>,
    /// (account, asset) → balance; every asset sums to zero.
    pub balances: Vec<(String, String, i128)>,
    /// Ids of holds still pending.
    pub open_holds: Vec<String>,
}

/// Checks every invariant; the first broken one, said plainly.
pub fn check(world: &World) -> Result<(), String> {
    let clusters: BTreeMap<&str, &Cluster> = world.clusters.iter().map(|c| (c.id.as_str(), c)).collect();
    let current: Vec<&Tenure> = world.tenures.iter().filter(|t| t.left_ms.is_none()).collect();

    // No device in two leases, and the device table agrees with the tenures.
    let mut holders = BTreeSet::new();
    for tenure in &current {
        if !holders.insert(tenure.device.as_str()) {
            return Err(format!("device {} holds two ranks at once", tenure.device));
        }
        let cluster = clusters.get(tenure.cluster.as_str()).ok_or("a tenure of an unknown cluster")?;
        if !cluster.running {
            return Err(format!("cluster {} ended but rank {} is still held", cluster.id, tenure.rank));
        }
    }
    let mut ranks = BTreeSet::new();
    for tenure in &current {
        if !ranks.insert((tenure.cluster.as_str(), tenure.rank)) {
            return Err(format!("rank {} of {} has two holders", tenure.rank, tenure.cluster));
        }
    }
    for device in &world.devices {
        let held = current.iter().find(|t| t.device == device.id).map(|t| t.cluster.as_str());
        if device.cluster.as_deref() != held {
            return Err(format!("device {} says cluster {:?}, its tenures say {held:?}", device.id, device.cluster));
        }
        if held.is_some() && device.state != "hired" && device.state != "offline" {
            return Err(format!("device {} holds a rank but is {}", device.id, device.state));
        }
        if held.is_none() && device.state == "hired" {
            return Err(format!("device {} is hired by nothing", device.id));
        }
    }

    // Money: the ledger balances, ended leases are settled, no tenure is paid beyond the
    // seconds it held its rank, and an ended lease paid every one of them.
    let mut sums: BTreeMap<&str, i128> = BTreeMap::new();
    for (_, asset, balance) in &world.balances {
        *sums.entry(asset.as_str()).or_default() += balance;
    }
    if let Some((asset, sum)) = sums.iter().find(|(_, sum)| **sum != 0) {
        return Err(format!("the ledger does not balance in {asset}: {sum}"));
    }
    // Metering ids: `post:{cluster}:{from}` per posting, `pay:{cluster}:{from}:{epoch}` per tenure.
    let mut postings: BTreeMap<&str, i128> = BTreeMap::new();
    let mut pays: BTreeMap<(&str, i64), i128> = BTreeMap::new();
    for transfer in &world.transfers {
        let mut parts = transfer.id.split(':');
        match (parts.next(), parts.next(), parts.next(), parts.next().and_then(|e| e.parse::<i64>().ok())) {
            (Some("post"), Some(cluster), Some(_), None) => *postings.entry(cluster).or_default() += 1,
            (Some("pay"), Some(cluster), Some(_), Some(epoch)) => {
                *pays.entry((cluster, epoch)).or_default() += i128::from(transfer.amount)
            }
            _ => {}
        }
    }
    for cluster in world.clusters.iter().filter(|c| !c.running) {
        let escrow = format!("escrow:{}", cluster.id);
        if let Some((_, _, balance)) = world.balances.iter().find(|(account, _, b)| *account == escrow && *b != 0) {
            return Err(format!("ended cluster {} left {balance} in escrow", cluster.id));
        }
        if world.open_holds.iter().any(|h| h.starts_with(&format!("hold:{}:", cluster.id))) {
            return Err(format!("ended cluster {} still holds customer funds", cluster.id));
        }
    }
    for tenure in &world.tenures {
        let Some(cluster) = clusters.get(tenure.cluster.as_str()) else { continue };
        let paid = pays.get(&(cluster.id.as_str(), tenure.epoch)).copied().unwrap_or(0);
        let end = tenure.left_ms.or(cluster.ended_ms).unwrap_or(world.now_ms);
        let held_ms = i128::from((end - tenure.joined_ms).max(0));
        let worth = i128::from(tenure.node_hour_micros) * held_ms / 3_600_000;
        // Each posting rounds a node's pay and its fee down by under a unit each.
        let slack = 2 * postings.get(cluster.id.as_str()).copied().unwrap_or(0) + 2;
        if paid > worth + slack {
            return Err(format!(
                "tenure {} (rank {} of {}) was paid {paid} for {held_ms} ms worth {worth}",
                tenure.epoch, tenure.rank, cluster.id
            ));
        }
        // The supplier's side pays 2.25 % in fees (USDC) out of what it earned.
        let net = worth - worth * 225 / 10_000;
        if !cluster.running && paid + slack + worth / 1_000 < net {
            return Err(format!(
                "tenure {} (rank {} of {}) held its rank {held_ms} ms (net {net}) and was paid only {paid}",
                tenure.epoch, tenure.rank, cluster.id
            ));
        }
    }

    // Jobs: a task that runs is on its rank's current holder, attempts stay within what was
    // asked, and an ended cluster's jobs are all finished.
    for job in &world.jobs {
        let cluster = clusters.get(job.cluster.as_str()).ok_or("a job of an unknown cluster")?;
        if job.attempt > job.max_retries + 1 {
            return Err(format!("job {} is on attempt {} with {} retries", job.id, job.attempt, job.max_retries));
        }
        let finished = matches!(job.state.as_str(), "succeeded" | "failed" | "stopped");
        if !cluster.running && !finished {
            return Err(format!("job {} is {} on ended cluster {}", job.id, job.state, cluster.id));
        }
        if finished && job.waiting_retry {
            return Err(format!("job {} ended but waits for a retry", job.id));
        }
        for task in job.tasks.iter().filter(|t| t.state == "running" || t.state == "pending") {
            if task.attempt != job.attempt {
                return Err(format!("job {} runs attempt {} beside its attempt {}", job.id, task.attempt, job.attempt));
            }
            let holder = current.iter().find(|t| t.cluster == job.cluster && t.rank == task.rank);
            if holder.is_none_or(|h| h.device != task.device) {
                return Err(format!(
                    "job {} rank {} runs on {}, which does not hold the rank",
                    job.id, task.rank, task.device
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_is_a_function_of_its_seed() {
        assert_eq!(schedule(7, 100, 500), schedule(7, 100, 500));
        assert_ne!(schedule(7, 100, 500), schedule(8, 100, 500));
        let steps = schedule(7, 100, 2_000);
        assert!(steps.iter().any(|s| matches!(s, Step::RestartCoordinator)));
        assert!(steps.iter().any(|s| matches!(s, Step::Partition { .. })));
    }

    fn world() -> World {
        World {
            now_ms: 10_000,
            devices: vec![Device { id: "d1".into(), state: "hired".into(), cluster: Some("c1".into()) }],
            clusters: vec![Cluster { id: "c1".into(), running: true, created_ms: 0, ended_ms: None, nodes_wanted: 1 }],
            tenures: vec![Tenure {
                epoch: 1,
                cluster: "c1".into(),
                rank: 0,
                device: "d1".into(),
                node_hour_micros: 3_600_000,
                joined_ms: 0,
                left_ms: None,
            }],
            ..World::default()
        }
    }

    #[test]
    fn each_invariant_catches_its_violation() {
        assert_eq!(check(&world()), Ok(()));
        let mut twice = world();
        twice.tenures.push(Tenure { epoch: 2, cluster: "c1".into(), rank: 1, ..twice.tenures[0].clone() });
        assert!(check(&twice).unwrap_err().contains("holds two ranks"));
        let mut overpaid = world();
        overpaid.transfers.push(Transfer { id: "pay:c1:0:1".into(), amount: 10_100 });
        assert!(check(&overpaid).unwrap_err().contains("was paid 10100 for 10000 ms"));
        let mut ended = world();
        ended.clusters[0].running = false;
        ended.clusters[0].ended_ms = Some(10_000);
        ended.tenures[0].left_ms = Some(10_000);
        ended.devices[0] = Device { id: "d1".into(), state: "ready".into(), cluster: None };
        assert!(check(&ended).unwrap_err().contains("was paid only 0"), "a missing charge is caught");
        ended.transfers.push(Transfer { id: "pay:c1:0:1".into(), amount: 9_775 });
        assert_eq!(check(&ended), Ok(()));
        ended.balances.push(("escrow:c1".into(), "usdc".into(), 5));
        assert!(check(&ended).unwrap_err().contains("does not balance"));
    }
}
