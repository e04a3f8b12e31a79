//! Restarting the coordinator loses nothing: leases, devices and running jobs carry on, and
//! workers reconnect by themselves.

mod common;

use std::time::Duration;

use common::*;
use herd_core::{ClusterKind, ClusterState, DeviceState, JobState};
use herd_proto::api::{CreateCluster, CreateJob, LogEvent};
use herd_worker::keys;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_restart_mid_lease_keeps_clusters_devices_and_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("herd.db");
    let coordinator = start_coordinator(&db, loopback()).await;
    let addr = coordinator.addr();
    let url = coordinator.url();
    let (supplier_key, _) = new_account(&url).await;
    let supplier = keys::address_of(&supplier_key);
    let workers = [
        start_worker(&url, &dir.path().join("w0"), &supplier_key),
        start_worker(&url, &dir.path().join("w1"), &supplier_key),
    ];
    devices_in_state(&url, &supplier, DeviceState::Ready, 2).await;

    let (_, customer) = new_account(&url).await;
    let request = CreateCluster { nodes: 2, hours: Some(2), kind: Some(ClusterKind::Plain), ..Default::default() };
    let cluster = customer.create_cluster(&request).await.unwrap();
    // Runs across the restart: its start, its end and its late output must all be kept.
    let script = "echo before; sleep 2; echo after";
    let job = customer
        .create_job(&CreateJob::new(cluster.id.clone(), vec!["sh".into(), "-c".into(), script.into()]))
        .await
        .unwrap();
    eventually("both tasks to run", Duration::from_secs(10), || async {
        let job = customer.job(job.id.as_str()).await.ok()?;
        (job.state == JobState::Running && job.tasks.iter().all(|t| t.started_at.is_some())).then_some(())
    })
    .await;

    coordinator.shutdown().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let coordinator = start_coordinator(&db, addr).await;
    assert_eq!(coordinator.url(), url);

    // The same key still works, the lease is intact, and both workers come back hired.
    let after = customer.cluster(cluster.id.as_str()).await.unwrap();
    assert_eq!(after.state, ClusterState::Running);
    assert_eq!(after.expires_at, cluster.expires_at);
    let nodes: Vec<_> = after.nodes.iter().map(|n| n.device_id.clone()).collect();
    let before: Vec<_> = cluster.nodes.iter().map(|n| n.device_id.clone()).collect();
    assert_eq!(nodes, before);
    let client = herd_cli::client::Client::new(&url, None);
    eventually("both workers to reconnect", Duration::from_secs(15), || async {
        let devices = client.devices(&format!("owner={supplier}")).await.ok()?;
        devices.iter().all(|d| d.connected && d.state == DeviceState::Hired).then_some(())
    })
    .await;

    // The job was adopted, not restarted: it finishes once, with all its output.
    let mut lines = Vec::new();
    let finished = customer
        .stream_logs(job.id.as_str(), true, 0, |event| {
            if let LogEvent::Line(line) = event {
                lines.push(format!("{}:{}", line.rank, line.text));
            }
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(finished.state, JobState::Succeeded, "{finished:?}");
    lines.sort();
    assert_eq!(lines, ["0:after", "0:before", "1:after", "1:before"]);

    customer.delete_cluster(cluster.id.as_str()).await.unwrap();
    devices_in_state(&url, &supplier, DeviceState::Ready, 2).await;
    for worker in workers {
        worker.stop().await;
    }
    coordinator.shutdown().await;
}
