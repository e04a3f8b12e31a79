//! Self-healing with real processes: every worker agent is its own `herd worker start`
//! process with its own supplier account; one is killed with SIGKILL mid-job. The cluster
//! gets a replacement within the target, the job's next attempt completes on the healed
//! cluster, and every supplier is paid for exactly the seconds its device held its rank.

mod common;

use std::time::{Duration, Instant};

use common::*;
use herd_cli::client::Client;
use herd_core::{Address, Asset, ClusterKind, DeviceState, JobState, TaskState};
use herd_ledger::{AccountKey, Ledger};
use herd_proto::api::{CreateCluster, CreateJob};

/// The target: a replacement has joined within 30 s of the loss being detected.
const REPLACEMENT_TARGET: Duration = Duration::from_secs(30);
/// Each node costs $3.60 an hour (the suppliers' floor): one micro-dollar a millisecond.
const FLOOR: &str = "3.60";
/// What `new_account` deposits.
const START_BALANCE: i128 = 10_000_000_000;

fn usdc(ledger: &Ledger, key: &AccountKey) -> i128 {
    ledger.balance(key, Asset::Usdc)
}

/// A supplier's net earning for `ms` of a node at `node_hour` (the supplier's side pays
/// 0.25 % + 2 % in USDC).
fn net_earning(node_hour: i64, ms: i64) -> i128 {
    let gross = i128::from(node_hour) * i128::from(ms) / 3_600_000;
    gross - gross * 225 / 10_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_replaced_its_job_retried_and_every_second_billed_exactly() {
    let network = TestNetwork::start(0).await;
    let mut machines = Vec::new();
    for i in 0..5 {
        machines.push(WorkerProcess::start(&network, &format!("m{i}"), &["--floor-price", FLOOR]).await);
    }
    let (_, customer) = new_account(&network.url).await;
    let request = CreateCluster { nodes: 4, hours: Some(1), kind: Some(ClusterKind::Plain), ..Default::default() };
    let cluster = customer.create_cluster(&request).await.unwrap();
    let node_hour = cluster.nodes[0].node_hour_micros;
    assert!(cluster.nodes.iter().all(|n| n.node_hour_micros == node_hour), "{cluster:?}");
    let spare = machines.iter().find(|m| cluster.nodes.iter().all(|n| n.device_id != m.device)).unwrap().device.clone();

    let script = "echo attempt on rank $HERD_NODE_RANK; sleep 4; echo done on rank $HERD_NODE_RANK";
    let job = CreateJob {
        max_retries: 1,
        ..CreateJob::new(cluster.id.clone(), vec!["sh".into(), "-c".into(), script.into()])
    };
    let job = customer.create_job(&job).await.unwrap();
    eventually("every node to run the job", Duration::from_secs(20), || async {
        let job = customer.job(job.id.as_str()).await.ok()?;
        job.tasks.iter().all(|t| t.state == TaskState::Running).then_some(())
    })
    .await;

    // A second of work, proven by heartbeats (a device is paid up to its last heartbeat).
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // Rank 2's machine dies: SIGKILL, no goodbye.
    let lost = cluster.nodes.iter().find(|n| n.rank == 2).unwrap().device_id.clone();
    let victim = machines.iter_mut().find(|m| m.device == lost).unwrap();
    let lost_supplier = victim.supplier.clone();
    let killed = Instant::now();
    victim.kill_machine();
    let public = Client::new(&network.url, None);
    eventually("the loss to be detected", Duration::from_secs(10), || async {
        (public.device(lost.as_str()).await.ok()?.device.state == DeviceState::Offline).then_some(())
    })
    .await;
    let detected = killed.elapsed();
    let healed = eventually("a replacement to take rank 2", REPLACEMENT_TARGET, || async {
        let cluster = customer.cluster(cluster.id.as_str()).await.ok()?;
        let rank2 = cluster.nodes.iter().find(|n| n.rank == 2)?;
        (rank2.device_id == spare && rank2.device_state == DeviceState::Hired).then_some(cluster)
    })
    .await;
    let replaced = killed.elapsed() - detected;
    eprintln!("detected {detected:?} after the kill; replacement joined {replaced:?} after detection");
    assert!(healed.healing.is_none(), "whole again: {:?}", healed.healing);
    let departed = &healed.departed[0];
    assert_eq!((departed.rank, &departed.device_id), (2, &lost));
    assert!(departed.reason.starts_with("lost: the device went offline"), "{departed:?}");

    // The job lost a node; its second attempt runs on the healed cluster and completes.
    let (finished, lines) = follow_to_end(&customer, &job.id, Duration::from_secs(60)).await;
    assert_eq!(finished.state, JobState::Succeeded, "{finished:?}\n{lines:?}");
    assert_eq!((finished.attempt, finished.max_retries), (2, 1));
    assert!(finished.tasks.iter().all(|t| t.state == TaskState::Succeeded), "{:?}", finished.tasks);
    assert_eq!(finished.tasks[2].device_id, spare);
    assert!(lines.iter().any(|l| l == "herd: attempt 2 of 2 (the previous one lost a node)"), "{lines:?}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("done on rank")).count(), 4, "{lines:?}");

    customer.delete_cluster(cluster.id.as_str()).await.unwrap();
    let ended = customer.cluster(cluster.id.as_str()).await.unwrap();
    let end = ended.ended_at.unwrap().0;

    // Every supplier earned exactly its device's tenure (to rounding per posting): the lost
    // one up to its last heartbeat, the replacement from when it joined.
    let ledger = herd_cli::audit::replay_ledger(&public).await.unwrap();
    let tenure_ms = |device: &Address| -> i64 {
        if device == &lost {
            departed.left_at.0 - departed.joined_at.0
        } else {
            end - ended.nodes.iter().find(|n| &n.device_id == device).map_or(end, |n| n.joined_at.0)
        }
    };
    let mut earned_total = 0;
    for machine in &machines {
        let earned = usdc(&ledger, &AccountKey::User(machine.supplier.to_string())) - START_BALANCE;
        let expected = net_earning(node_hour, tenure_ms(&machine.device));
        eprintln!("{}: earned {earned}, expected {expected}", machine.device.short());
        assert!((earned - expected).abs() <= 20, "{} earned {earned}, its tenure is worth {expected}", machine.device);
        earned_total += earned;
    }
    let lost_earned = usdc(&ledger, &AccountKey::User(lost_supplier.to_string())) - START_BALANCE;
    assert!(lost_earned > 0, "the lost device is paid for the seconds it delivered");
    let customer_account = AccountKey::User(cluster.owner.to_string());
    let paid = START_BALANCE - usdc(&ledger, &customer_account);
    let fees = usdc(&ledger, &AccountKey::FeePool);
    assert_eq!(paid, earned_total + fees, "the customer paid the suppliers' earnings and the fees, nothing more");
    assert_eq!(ledger.open_pending().count(), 0);
    assert_eq!(usdc(&ledger, &AccountKey::Escrow(cluster.id.to_string())), 0);

    // Abandoning the lease cost the lost device reputation against a device that completed it.
    let lost_reputation = public.device(lost.as_str()).await.unwrap().device.reputation;
    let kept = ended.nodes.iter().find(|n| n.rank == 0).unwrap().device_id.clone();
    let kept_reputation = public.device(kept.as_str()).await.unwrap().device.reputation;
    assert!(lost_reputation + 100 <= kept_reputation, "lost {lost_reputation}, kept {kept_reputation}");
    network.coordinator.shutdown().await;
}
