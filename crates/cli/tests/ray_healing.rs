//! A Ray cluster loses its head machine: the agent and every Ray process of it are
//! SIGKILLed. Without the customer doing anything, the surviving node becomes the head, a
//! replacement is leased from the spare machine and joins it, and a Ray job submitted with
//! `max_retries` is resubmitted to the re-formed cluster and completes.

mod common;

use std::time::{Duration, Instant};

use common::{
    eventually, follow_to_end, new_account, processes_with_home, shared_ray_envs, TestNetwork, WorkerProcess,
};
use herd_core::{JobKind, JobState};
use herd_proto::api::{CreateCluster, CreateJob, RayClusterState};

/// The first run installs Ray (about a minute); later runs find it.
const RAY_READY_MAX: Duration = Duration::from_secs(600);

/// Waits for two live Ray nodes, works a while, and says how many nodes it ran with.
const JOB: &str = "import ray, time
ray.init()
alive = lambda: sum(1 for n in ray.nodes() if n['Alive'])
deadline = time.time() + 120
while alive() < 2 and time.time() < deadline:
    time.sleep(1)
time.sleep(8)
print('finished with', alive(), 'nodes')";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ray_cluster_survives_losing_its_head() {
    let network = TestNetwork::start(0).await;
    let envs = shared_ray_envs();
    let envs = envs.to_str().unwrap();
    let mut machines = Vec::new();
    for i in 0..3 {
        machines.push(WorkerProcess::start(&network, &format!("m{i}"), &["--ray-envs-dir", envs]).await);
    }
    let (_, customer) = new_account(&network.url).await;
    let cluster = customer.create_cluster(&CreateCluster { nodes: 2, hours: Some(1), ..Default::default() }).await;
    let cluster = cluster.unwrap();
    // Ready with two nodes, after `departed` devices left it.
    let ready = |wanted: &'static str, departed: usize| {
        let (customer, id) = (&customer, cluster.id.clone());
        async move {
            eventually(wanted, RAY_READY_MAX, || async {
                let cluster = customer.cluster(id.as_str()).await.ok()?;
                let ray = cluster.ray.as_ref()?;
                let whole = ray.state == RayClusterState::Ready && ray.nodes_ready == 2 && cluster.nodes.len() == 2;
                (whole && cluster.departed.len() == departed).then_some(cluster)
            })
            .await
        }
    };
    let cluster = ready("the Ray cluster to be ready", 0).await;
    let head = cluster.nodes.iter().find(|n| n.ray.as_ref().is_some_and(|r| r.head)).unwrap().clone();
    let survivor = cluster.nodes.iter().find(|n| n.device_id != head.device_id).unwrap().device_id.clone();
    let spare = machines.iter().find(|m| cluster.nodes.iter().all(|n| n.device_id != m.device)).unwrap();
    let spare = spare.device.clone();

    let request = CreateJob {
        kind: JobKind::Ray,
        max_retries: 1,
        ..CreateJob::new(cluster.id.clone(), vec!["python".into(), "-c".into(), JOB.into()])
    };
    let job = customer.create_job(&request).await.unwrap();
    eventually("the job to run", Duration::from_secs(120), || async {
        (customer.job(job.id.as_str()).await.ok()?.state == JobState::Running).then_some(())
    })
    .await;

    // The head's machine dies mid-job.
    let killed = Instant::now();
    machines.iter_mut().find(|m| m.device == head.device_id).unwrap().kill_machine();
    let healed = ready("the cluster to re-form without its head", 1).await;
    let reformed = killed.elapsed();
    let new_head = healed.nodes.iter().find(|n| n.ray.as_ref().is_some_and(|r| r.head)).unwrap();
    assert_eq!(new_head.device_id, survivor, "the surviving node took the head at once");
    assert!(healed.nodes.iter().any(|n| n.device_id == spare), "the spare replaced the lost head: {healed:?}");
    assert_eq!(healed.departed.len(), 1);
    assert_eq!((healed.departed[0].rank, &healed.departed[0].device_id), (head.rank, &head.device_id));
    assert!(healed.healing.is_none(), "{:?}", healed.healing);

    let (finished, lines) = follow_to_end(&customer, &job.id, Duration::from_secs(300)).await;
    eprintln!("re-formed {reformed:?} after the head died; job ended {:?} after", killed.elapsed());
    assert_eq!(finished.state, JobState::Succeeded, "{finished:?}\n{lines:?}");
    assert_eq!(finished.attempt, 2, "{finished:?}");
    assert!(lines.iter().any(|l| l == "finished with 2 nodes"), "{lines:?}");

    customer.delete_cluster(cluster.id.as_str()).await.unwrap();
    for machine in &machines {
        let home = machine.data_dir.join("ray-nodes");
        eventually("the Ray node's processes end", Duration::from_secs(30), || async {
            processes_with_home(&home).is_empty().then_some(())
        })
        .await;
    }
    network.coordinator.shutdown().await;
}
