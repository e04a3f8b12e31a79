//! The whole path on loopback: coordinator + two real worker agents + the client.

mod common;

use std::time::Duration;

use common::*;
use herd_core::{ClusterKind, ClusterState, DeviceState, JobState, TaskState};
use herd_proto::api::{CreateCluster, CreateJob, LogEvent, Stream};

fn cpu_cluster(nodes: u32) -> CreateCluster {
    CreateCluster { nodes, hours: Some(1), kind: Some(ClusterKind::Plain), ..Default::default() }
}

fn job(cluster: &herd_proto::api::Cluster, script: &str) -> CreateJob {
    CreateJob {
        env: [("GREETING".to_string(), "hello".to_string())].into(),
        ..CreateJob::new(cluster.id.clone(), vec!["sh".into(), "-c".into(), script.into()])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_node_job_runs_streams_and_frees_its_devices() {
    let network = TestNetwork::start(2).await;
    let (url, supplier) = (network.url.clone(), network.supplier.clone());

    let (_, customer) = new_account(&url).await;
    let cluster = customer.create_cluster(&cpu_cluster(2)).await.unwrap();
    assert_eq!(cluster.nodes.len(), 2);
    assert_eq!(cluster.state, ClusterState::Running);
    devices_in_state(&url, &supplier, DeviceState::Hired, 2).await;

    let script =
        "echo \"rank $HERD_NODE_RANK of $HERD_NODE_COUNT says $GREETING\"; echo oops >&2; exit $((HERD_NODE_RANK * 7))";
    let created = customer.create_job(&job(&cluster, script)).await.unwrap();
    let mut lines = Vec::new();
    let finished = customer
        .stream_logs(created.id.as_str(), true, 0, |event| {
            if let LogEvent::Line(line) = event {
                lines.push((line.rank, line.stream, line.text.clone()));
            }
        })
        .await
        .unwrap()
        .expect("the stream ends with the job");

    lines.sort_by_key(|line| (line.0, line.2.clone()));
    assert_eq!(
        lines,
        vec![
            (0, Stream::Stderr, "oops".to_string()),
            (0, Stream::Stdout, "rank 0 of 2 says hello".to_string()),
            (1, Stream::Stderr, "oops".to_string()),
            (1, Stream::Stdout, "rank 1 of 2 says hello".to_string()),
        ]
    );
    assert_eq!(finished.state, JobState::Failed, "rank 1 exits 7");
    let exits: Vec<_> = finished.tasks.iter().map(|t| (t.rank, t.state, t.exit_code)).collect();
    assert_eq!(exits, [(0, TaskState::Succeeded, Some(0)), (1, TaskState::Failed, Some(7))]);

    // Stored logs replay without following, and resume after a sequence number.
    let mut replayed = 0;
    customer
        .stream_logs(created.id.as_str(), false, 0, |e| replayed += matches!(e, LogEvent::Line(_)) as usize)
        .await
        .unwrap();
    assert_eq!(replayed, 4);

    let deleted = customer.delete_cluster(cluster.id.as_str()).await.unwrap();
    assert_eq!(deleted.state, ClusterState::Terminated);
    devices_in_state(&url, &supplier, DeviceState::Ready, 2).await;
    let again = customer.delete_cluster(cluster.id.as_str()).await.unwrap();
    assert_eq!(again.state, ClusterState::Terminated, "delete is idempotent");

    network.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_job_and_deleting_its_cluster_end_the_processes() {
    let network = TestNetwork::start(1).await;
    let (url, supplier) = (network.url.clone(), network.supplier.clone());
    let (_, customer) = new_account(&url).await;
    let cluster = customer.create_cluster(&cpu_cluster(1)).await.unwrap();

    let long = customer.create_job(&job(&cluster, "echo started; sleep 60")).await.unwrap();
    eventually("the job to start", Duration::from_secs(10), || async {
        let job = customer.job(long.id.as_str()).await.ok()?;
        (job.state == JobState::Running).then_some(())
    })
    .await;
    let stopped = customer.stop_job(&long.id).await.unwrap();
    assert!(!stopped.state.is_terminal() || stopped.state == JobState::Stopped);
    let end = customer.stream_logs(long.id.as_str(), true, 0, |_| {}).await.unwrap().unwrap();
    assert_eq!(end.state, JobState::Stopped);
    assert!(end.tasks[0].error.as_deref().unwrap_or_default().contains("signal"));

    let orphan = customer.create_job(&job(&cluster, "sleep 60")).await.unwrap();
    eventually("the second job to start", Duration::from_secs(10), || async {
        (customer.job(orphan.id.as_str()).await.ok()?.state == JobState::Running).then_some(())
    })
    .await;
    customer.delete_cluster(cluster.id.as_str()).await.unwrap();
    let job = customer.job(orphan.id.as_str()).await.unwrap();
    assert_eq!(job.state, JobState::Stopped, "deleting the cluster stops its jobs");
    devices_in_state(&url, &supplier, DeviceState::Ready, 1).await;
    eventually("the job's directory to be removed", Duration::from_secs(10), || async {
        (!network.dir.path().join("w0/jobs").join(orphan.id.as_str()).exists()).then_some(())
    })
    .await;

    network.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_cannot_be_served_say_why() {
    let network = TestNetwork::start(1).await;
    let url = network.url.clone();
    let (_, customer) = new_account(&url).await;

    let error = customer.create_cluster(&cpu_cluster(3)).await.unwrap_err();
    assert_eq!(error.status().map(|s| s.as_u16()), Some(409));
    assert!(error.to_string().contains("no 3 × CPU: 1 free device(s) of that hardware on the network"), "{error}");

    let unknown = CreateCluster { gpu: Some("Voodoo".into()), ..cpu_cluster(1) };
    let error = customer.create_cluster(&unknown).await.unwrap_err();
    assert_eq!(error.status().map(|s| s.as_u16()), Some(422));
    assert!(error.to_string().contains("known models: B200, H200, H100"), "{error}");

    let error = customer.create_cluster(&CreateCluster { nodes: 0, ..cpu_cluster(1) }).await.unwrap_err();
    assert_eq!(error.status().map(|s| s.as_u16()), Some(400));
    let error =
        customer.create_cluster(&CreateCluster { country: Some("usa".into()), ..cpu_cluster(1) }).await.unwrap_err();
    assert!(error.to_string().contains("ISO 3166-1"), "{error}");

    let error = customer.cluster("cl-0000000000").await.unwrap_err();
    assert_eq!(error.status().map(|s| s.as_u16()), Some(404));
    let error = customer.job("not-an-id").await.unwrap_err();
    assert_eq!(error.status().map(|s| s.as_u16()), Some(400));

    // Malformed bodies get herd's error format, not a bare 4xx.
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/clusters"))
        .header("content-type", "application/json")
        .body("{\"nodes\": \"many\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401, "authentication comes before the body");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");

    network.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_openapi_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = start_coordinator(&dir.path().join("herd.db"), loopback()).await;
    let url = coordinator.url();
    let client = herd_cli::client::Client::new(&url, None);
    assert_eq!(client.health().await.unwrap().status, "ok");

    let openapi: serde_json::Value =
        reqwest::get(format!("{url}/v1/openapi.json")).await.unwrap().json().await.unwrap();
    for path in [
        "/v1/clusters",
        "/v1/clusters/{id}",
        "/v1/jobs/{id}/logs",
        "/v1/devices",
        "/v1/accounts",
        "/v1/auth/browser-links",
    ] {
        assert!(openapi["paths"].get(path).is_some(), "{path} is documented");
    }
    assert!(openapi["components"]["schemas"].get("Cluster").is_some());

    let metrics = reqwest::get(format!("{url}/metrics")).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("herd_http_requests_total{method=\"GET\",route=\"/v1/openapi.json\",status=\"200\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("herd_workers_connected 0"));

    let missing = reqwest::get(format!("{url}/v1/nope")).await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    coordinator.shutdown().await;
}

/// A node that stops heartbeating mid-job is offline after 3 missed heartbeats; its task fails
/// as lost (the job asked for no retries: it does not wait forever) while the other node's
/// task finishes; without spare capacity the cluster stays degraded and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_lost_mid_job_fails_its_task_and_the_job_ends() {
    let mut network = TestNetwork::start(2).await;
    let (url, supplier) = (network.url.clone(), network.supplier.clone());
    let (_, customer) = new_account(&url).await;
    let cluster = customer.create_cluster(&cpu_cluster(2)).await.unwrap();
    let created = customer.create_job(&job(&cluster, "echo up; sleep 3; echo finished")).await.unwrap();
    eventually("both tasks to run", Duration::from_secs(10), || async {
        let job = customer.job(created.id.as_str()).await.ok()?;
        job.tasks.iter().all(|t| t.state == TaskState::Running).then_some(())
    })
    .await;

    // Rank 1's agent vanishes without a word (its process keeps running, unheard).
    let lost_device = cluster.nodes[1].device_id.clone();
    let index = (0..2)
        .find(|i| {
            let key = herd_worker::keys::load_or_create(&network.dir.path().join(format!("w{i}/device.key"))).unwrap();
            herd_worker::keys::address_of(&key) == lost_device
        })
        .unwrap();
    network.workers.remove(index).handle.abort();

    let finished = eventually("the job to end", Duration::from_secs(15), || async {
        let job = customer.job(created.id.as_str()).await.ok()?;
        job.state.is_terminal().then_some(job)
    })
    .await;
    assert_eq!(finished.state, JobState::Failed);
    let lost = &finished.tasks[1];
    assert_eq!(lost.state, TaskState::Failed);
    let error = lost.error.as_deref().unwrap_or_default();
    assert!(error.starts_with("lost: the device went offline (missed 3 heartbeats"), "{error}");
    assert_eq!(finished.tasks[0].state, TaskState::Succeeded);
    assert!(finished.message.as_deref().unwrap_or_default().contains("no retries were asked for"), "{finished:?}");
    // The lost device left its rank (billed up to its last heartbeat); with no spare device on
    // the network the cluster stays short and says so.
    let cluster = eventually("the cluster to say it waits for capacity", Duration::from_secs(10), || async {
        let cluster = customer.cluster(cluster.id.as_str()).await.ok()?;
        cluster.healing.as_deref().is_some_and(|h| h.starts_with("degraded: rank 1 has no device")).then_some(cluster)
    })
    .await;
    assert_eq!(cluster.nodes.iter().map(|n| n.rank).collect::<Vec<_>>(), [0]);
    let departed = &cluster.departed[0];
    assert_eq!((departed.rank, &departed.device_id), (1, &lost_device));
    assert!(departed.reason.starts_with("lost: the device went offline"), "{departed:?}");
    assert!(departed.left_at.0 >= departed.joined_at.0);
    devices_in_state(&url, &supplier, DeviceState::Offline, 1).await;
    network.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_endpoints_are_rate_limited_per_client() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir.path().join("herd.db"), loopback());
    config.auth_rate_limit = herd_coordinator::RateLimit { burst: 3, per_minute: 6 };
    let coordinator = herd_coordinator::start(config).await.unwrap();
    let url = coordinator.url();
    let http = reqwest::Client::new();
    let challenge = |forwarded: Option<&'static str>| {
        let mut request = http.post(format!("{url}/v1/auth/challenge")).json(
            &serde_json::json!({"address": "4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D16QAtJm5ZAz", "purpose": "register"}),
        );
        if let Some(address) = forwarded {
            request = request.header("x-forwarded-for", address);
        }
        async move { request.send().await.unwrap() }
    };
    for _ in 0..3 {
        assert_eq!(challenge(None).await.status().as_u16(), 201);
    }
    let limited = challenge(None).await;
    assert_eq!(limited.status().as_u16(), 429);
    assert_eq!(limited.headers()["retry-after"], "10", "6 a minute: the next in 10 s");
    let body: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // The console's sign-in form shares the budget and says so in a page.
    let form = http
        .post(format!("{url}/console/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("api_key=herd_x")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status().as_u16(), 429);
    assert!(form.text().await.unwrap().contains("too many sign-in requests"));
    // Other endpoints are not limited, and an untrusted X-Forwarded-For changes nothing.
    assert_eq!(http.get(format!("{url}/v1/health")).send().await.unwrap().status().as_u16(), 200);
    assert_eq!(challenge(Some("203.0.113.9")).await.status().as_u16(), 429);
    coordinator.shutdown().await;

    // Behind a trusted proxy, each forwarded client has its own budget.
    let mut config = test_config(&dir.path().join("herd.db"), loopback());
    config.auth_rate_limit = herd_coordinator::RateLimit { burst: 1, per_minute: 1 };
    config.trust_forwarded_for = true;
    let coordinator = herd_coordinator::start(config).await.unwrap();
    let url = coordinator.url();
    let ask = |client: &'static str| {
        http.post(format!("{url}/v1/auth/challenge"))
            .header("x-forwarded-for", format!("198.51.100.1, {client}"))
            .json(
                &serde_json::json!({"address": "4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D16QAtJm5ZAz", "purpose": "register"}),
            )
            .send()
    };
    assert_eq!(ask("203.0.113.1").await.unwrap().status().as_u16(), 201);
    assert_eq!(ask("203.0.113.1").await.unwrap().status().as_u16(), 429);
    assert_eq!(ask("203.0.113.2").await.unwrap().status().as_u16(), 201);
    coordinator.shutdown().await;
}
