//! The docker runtime against the real engine: jobs in containers, limits that hold,
//! isolation from the host, restarts that touch only herd's own containers.

mod common;

use std::time::{Duration, Instant};

use common::docker::{
    base_image, containers_with, docker_ok, docker_worker, engine_available, herd_image, is_running, networks_with,
    ray_image, Cleanup, BASE_IMAGE, HERD_IMAGE,
};
use common::{devices_in_state, eventually, follow_to_end, new_account, start_agent, TestNetwork};
use herd_cli::client::Client;
use herd_core::{ClusterKind, ClusterState, DeviceState, JobKind, JobLimits, JobState, RayNodeState, TaskState};
use herd_proto::api::{Cluster, CreateCluster, CreateJob, Job, LogEvent, Stream};

fn cpu_cluster(nodes: u32) -> CreateCluster {
    CreateCluster { nodes, hours: Some(1), kind: Some(ClusterKind::Plain), ..Default::default() }
}

fn shell(cluster: &Cluster, script: &str) -> CreateJob {
    CreateJob::new(cluster.id.clone(), vec!["sh".into(), "-c".into(), script.into()])
}

/// Runs a job to its end; returns it with its output lines as (rank, stream, text).
async fn run_to_end(customer: &Client, job: &CreateJob) -> (Job, Vec<(u32, Stream, String)>) {
    let created = customer.create_job(job).await.unwrap();
    let mut lines = Vec::new();
    let finished = tokio::time::timeout(
        Duration::from_secs(60),
        customer.stream_logs(created.id.as_str(), true, 0, |event| {
            if let LogEvent::Line(line) = event {
                lines.push((line.rank, line.stream, line.text.clone()));
            }
        }),
    )
    .await
    .expect("the job ends within a minute")
    .unwrap()
    .expect("the stream ends with the job");
    (finished, lines)
}

fn text(lines: &[(u32, Stream, String)]) -> String {
    lines.iter().map(|(rank, _, text)| format!("[{rank}] {text}\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_in_a_locked_down_container_on_each_node() {
    if !engine_available("a_job_runs_in_a_locked_down_container_on_each_node") {
        return;
    }
    base_image();
    let network = TestNetwork::start(0).await;
    let workers = [start_agent(docker_worker(&network, "d0")), start_agent(docker_worker(&network, "d1"))];
    devices_in_state(&network.url, &network.supplier, DeviceState::Ready, 2).await;
    let (_, customer) = new_account(&network.url).await;
    let cluster = customer.create_cluster(&cpu_cluster(2)).await.unwrap();
    let _cleanup = Cleanup(cluster.nodes.iter().map(|n| format!("io.herd.device={}", n.device_id)).collect());

    let script = r#"echo "rank $HERD_NODE_RANK of $HERD_NODE_COUNT uid=$(id -u) home=$HOME pwd=$(pwd)"
        test -f /.dockerenv && echo in-a-container
        grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status
        touch /etc/probe 2>/dev/null || echo root-is-read-only
        echo written > /work/out.txt && cat /work/out.txt
        exit $((HERD_NODE_RANK * 3))"#;
    let (job, lines) = run_to_end(&customer, &shell(&cluster, script)).await;
    let output = text(&lines);
    for rank in 0..2 {
        for expected in [
            format!("[{rank}] rank {rank} of 2 uid=65534 home=/work pwd=/work"),
            format!("[{rank}] in-a-container"),
            format!("[{rank}] CapEff:\t0000000000000000"),
            // Dropped from the bounding set too, so not even a setuid binary regains any.
            format!("[{rank}] CapBnd:\t0000000000000000"),
            format!("[{rank}] NoNewPrivs:\t1"),
            format!("[{rank}] root-is-read-only"),
            format!("[{rank}] written"),
        ] {
            assert!(output.contains(&expected), "missing {expected:?} in:\n{output}");
        }
    }
    let exits: Vec<_> = job.tasks.iter().map(|t| (t.rank, t.state, t.exit_code)).collect();
    assert_eq!(exits, [(0, TaskState::Succeeded, Some(0)), (1, TaskState::Failed, Some(3))]);

    // Containers are removed when their task ends; the lease's network stays for its next
    // job and goes when the lease ends.
    let labels: Vec<String> = job.tasks.iter().map(|t| format!("io.herd.device={}", t.device_id)).collect();
    for label in &labels {
        eventually("the containers to be removed", Duration::from_secs(10), || async {
            containers_with(label).is_empty().then_some(())
        })
        .await;
        assert_eq!(networks_with(label).len(), 1, "one network per lease and device");
    }
    customer.delete_cluster(cluster.id.as_str()).await.unwrap();
    for label in &labels {
        eventually("the lease's networks to be removed", Duration::from_secs(10), || async {
            networks_with(label).is_empty().then_some(())
        })
        .await;
    }
    for worker in workers {
        worker.stop().await;
    }
    network.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_and_the_worker_keeps_heartbeating() {
    if !engine_available("limits_hold_and_the_worker_keeps_heartbeating") {
        return;
    }
    base_image();
    let network = TestNetwork::start(0).await;
    let worker = start_agent(docker_worker(&network, "d0"));
    devices_in_state(&network.url, &network.supplier, DeviceState::Ready, 1).await;
    let (_, customer) = new_account(&network.url).await;
    let cluster = customer.create_cluster(&cpu_cluster(1)).await.unwrap();
    let device = cluster.nodes[0].device_id.clone();
    let _cleanup = Cleanup(vec![format!("io.herd.device={device}")]);

    // A fork bomb stops at the lease's process limit (2 cores → 1024) and fails the job.
    let bomb = "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max; \
                i=0; while [ $i -lt 5000 ]; do sleep 30 & i=$((i+1)); \
                [ $((i % 100)) -eq 0 ] && echo spawned $i; done; echo spawned all";
    let started = Instant::now();
    let (job, lines) = run_to_end(&customer, &shell(&cluster, bomb)).await;
    let output = text(&lines);
    assert!(output.contains("[0] 1024\n"), "the container's pids limit is the lease's:\n{output}");
    assert!(output.contains("Cannot fork"), "the pids limit stops the bomb:\n{output}");
    let spawned = lines.iter().filter_map(|(_, _, l)| l.strip_prefix("spawned ")?.parse::<u32>().ok()).max();
    assert!(spawned.is_some_and(|n| (900..1024).contains(&n)), "stopped near 1024 processes: {spawned:?}");
    assert_eq!(job.state, JobState::Failed);
    eprintln!("fork bomb contained in {:?} after {spawned:?} processes", started.elapsed());

    // A memory hog is killed at the lease's memory limit (1 GiB machine → 512 MiB), with a
    // clear reason; and a job may ask for less than its lease.
    let (job, _) = run_to_end(&customer, &shell(&cluster, "tail /dev/zero")).await;
    assert_eq!(job.state, JobState::Failed);
    let error = job.tasks[0].error.clone().unwrap_or_default();
    assert_eq!(error, "out of memory: the task went over its 512 MiB memory limit and was killed");
    let small = CreateJob {
        limits: JobLimits { memory_bytes: Some(64 << 20), ..Default::default() },
        ..shell(&cluster, "tail /dev/zero")
    };
    let (job, _) = run_to_end(&customer, &small).await;
    assert!(job.tasks[0].error.as_deref().unwrap_or_default().contains("64 MiB"), "{:?}", job.tasks[0]);
    let greedy = CreateJob { limits: JobLimits { memory_bytes: Some(2 << 30), ..Default::default() }, ..small };
    let refused = customer.create_job(&greedy).await.unwrap_err().to_string();
    assert!(refused.contains("more than this lease gives"), "{refused}");

    // Throughout, the device kept heartbeating: it never went offline and is still hired.
    let client = Client::new(&network.url, None);
    let detail = client.device(device.as_str()).await.unwrap();
    assert_eq!(detail.device.state, DeviceState::Hired, "{}", detail.device.state_reason);
    let events = serde_json::to_string(&detail).unwrap();
    assert!(!events.contains("missed"), "no heartbeat was missed: {events}");

    // The host is out of reach: a canary file next to the job's directory cannot be read,
    // nothing can be mounted, and the only host path inside is the job's own directory.
    let canary_dir = network.dir.path().join("canary");
    std::fs::create_dir_all(&canary_dir).unwrap();
    let secret = format!("canary-{}", rand::random::<u64>());
    std::fs::write(canary_dir.join("secret"), &secret).unwrap();
    let probe = format!(
        "cat {canary}/secret 2>&1; cat /proc/1/root{canary}/secret 2>&1; \
         mkdir -p /tmp/m; mount -t tmpfs none /tmp/m 2>&1; echo mount-exit=$?; \
         mount --bind /work /tmp/m 2>&1; echo bind-exit=$?; \
         grep -c ' /work ' /proc/self/mountinfo",
        canary = canary_dir.display()
    );
    let (job, lines) = run_to_end(&customer, &shell(&cluster, &probe)).await;
    let output = text(&lines);
    assert!(!output.contains(&secret), "the canary leaked:\n{output}");
    assert!(output.contains("No such file or directory"), "{output}");
    assert!(!output.contains("mount-exit=0") && output.contains("mount-exit="), "{output}");
    assert!(!output.contains("bind-exit=0") && output.contains("bind-exit="), "{output}");
    assert_eq!(job.state, JobState::Succeeded, "{output}");

    worker.stop().await;
    network.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_adopts_its_containers_removes_its_orphans_and_nothing_else() {
    if !engine_available("a_restarted_worker_adopts_its_containers_removes_its_orphans_and_nothing_else") {
        return;
    }
    base_image();
    // Offline only after 5 s without a heartbeat (25 × 200 ms), so a quick restart keeps its
    // tasks, as it does with the production defaults (3 × 5 s).
    let network = TestNetwork::start_with(0, |config| config.missed_heartbeats_max = 25).await;
    let tag = format!("herd-test-{}", rand::random::<u32>());
    let _bystanders = Cleanup(vec![format!("io.herd.test={tag}")]);
    // Someone else's container, and one that claims to be another herd device's.
    let plain = docker_ok(&["run", "-d", "--label", &format!("io.herd.test={tag}"), BASE_IMAGE, "sleep", "300"]);
    let foreign = docker_ok(&[
        "run",
        "-d",
        "--label",
        &format!("io.herd.test={tag}"),
        "--label",
        "io.herd.managed=true",
        "--label",
        "io.herd.device=11111111111111111111111111111111",
        BASE_IMAGE,
        "sleep",
        "300",
    ]);

    // The worker runs as its own process, so a crash can be a real SIGKILL.
    let data_dir = network.dir.path().join("worker");
    let code = network.supplier_client.pairing_code().await.unwrap();
    let spawn = |consent: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_herd"));
        command
            .args(["worker", "start", "--coordinator", &network.url, "--runtime", "docker", "--owner"])
            .arg(network.supplier.as_str())
            .args(consent)
            .arg("--data-dir")
            .arg(&data_dir)
            .env("HERD_CONFIG_DIR", network.dir.path().join("config"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        command.spawn().unwrap()
    };
    let mut worker = spawn(&["--pairing-code", &code.code]);
    devices_in_state(&network.url, &network.supplier, DeviceState::Ready, 1).await;
    let (_, customer) = new_account(&network.url).await;
    let cluster = customer.create_cluster(&cpu_cluster(1)).await.unwrap();
    let device = cluster.nodes[0].device_id.clone();
    let ours = format!("io.herd.device={device}");
    let _cleanup = Cleanup(vec![ours.clone()]);

    let finishing =
        customer.create_job(&shell(&cluster, "echo first; sleep 6; echo adopted-and-finished")).await.unwrap();
    let orphan = customer.create_job(&shell(&cluster, "sleep 300")).await.unwrap();
    eventually("both containers to run", Duration::from_secs(20), || async {
        (containers_with(&ours).iter().filter(|c| is_running(c)).count() == 2).then_some(())
    })
    .await;

    // Crash the worker; while it is away the customer stops one job.
    worker.kill().unwrap();
    worker.wait().unwrap();
    customer.stop_job(&orphan.id).await.unwrap();
    let mut worker = spawn(&[]);

    let finished = eventually("the adopted job to finish", Duration::from_secs(30), || async {
        let job = customer.job(finishing.id.as_str()).await.ok()?;
        job.state.is_terminal().then_some(job)
    })
    .await;
    assert_eq!(finished.state, JobState::Succeeded, "{:?}", finished.tasks);
    let mut lines = Vec::new();
    customer
        .stream_logs(finishing.id.as_str(), false, 0, |e| {
            if let LogEvent::Line(line) = e {
                lines.push(line.text.clone());
            }
        })
        .await
        .unwrap();
    assert!(lines.contains(&"adopted-and-finished".to_string()), "output after the restart arrives: {lines:?}");
    let stopped = eventually("the orphan to be stopped", Duration::from_secs(30), || async {
        let job = customer.job(orphan.id.as_str()).await.ok()?;
        job.state.is_terminal().then_some(job)
    })
    .await;
    assert_eq!(stopped.state, JobState::Stopped);
    eventually("herd's containers to be gone", Duration::from_secs(20), || async {
        containers_with(&ours).is_empty().then_some(())
    })
    .await;
    assert!(is_running(&plain), "a container herd did not create is untouched");
    assert!(is_running(&foreign), "another device's container is untouched");

    let cluster = customer.delete_cluster(cluster.id.as_str()).await.unwrap();
    assert_eq!(cluster.state, ClusterState::Terminated);
    eventually("the lease's network to be gone", Duration::from_secs(20), || async {
        networks_with(&ours).is_empty().then_some(())
    })
    .await;
    let _ = worker.kill();
    let _ = worker.wait();
    network.stop().await;
}

/// The worker refuses to start with `--runtime docker` when it cannot reach an engine.
#[tokio::test]
async fn docker_without_an_engine_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(["worker", "start", "--coordinator", "http://127.0.0.1:9", "--runtime", "docker"])
        .args(["--owner", "11111111111111111111111111111111", "--data-dir"])
        .arg(dir.path())
        .env("DOCKER_HOST", format!("unix://{}/no-engine.sock", dir.path().display()))
        .env("HERD_CONFIG_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot reach the Docker engine"), "{stderr}");
}

/// Multi-host: a coordinator and four workers, each in its own container on a private Docker
/// network (each with its own address, as on separate machines). A 3-node cluster loses its
/// head host (rank 0, whose address every node is given) mid-job: the device is offline
/// within the heartbeat timeout, the spare host takes rank 0, and the job's second attempt
/// runs on the healed cluster around the new head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_head_host_is_replaced_and_the_job_recovers() {
    if !engine_available("a_stopped_head_host_is_replaced_and_the_job_recovers") {
        return;
    }
    herd_image();
    let tag = format!("{:08x}", rand::random::<u32>());
    let label = format!("io.herd.test={tag}");
    let _cleanup = Cleanup(vec![label.clone()]);
    let net = format!("herd-mh-{tag}");
    docker_ok(&["network", "create", "--label", &label, &net]);
    let run = |name: &str, alias: &str, args: &[&str]| {
        let mut command = vec!["run", "-d", "--label", &label, "--name", name, "--network", &net];
        command.extend(["--network-alias", alias]);
        if alias == "coordinator" {
            command.extend(["-p", "127.0.0.1::7700"]);
        }
        command.push(HERD_IMAGE);
        command.extend(args);
        docker_ok(&command)
    };
    let heartbeat_ms = 500;
    let timeout = Duration::from_millis(heartbeat_ms * 3);
    let coordinator = format!("herd-mh-{tag}-coordinator");
    run(
        &coordinator,
        "coordinator",
        &[
            "coordinator",
            "--db",
            "sqlite:///var/lib/herd/herd.db",
            "--listen",
            "0.0.0.0:7700",
            "--faucet",
            "--proof-target",
            "50ms",
            "--heartbeat-interval-ms",
            &heartbeat_ms.to_string(),
            "--missed-heartbeats",
            "3",
        ],
    );
    let published = docker_ok(&["port", &coordinator, "7700/tcp"]);
    let url = format!("http://{}", published.lines().next().unwrap());
    eventually("the coordinator to answer", Duration::from_secs(30), || async {
        Client::new(&url, None).health().await.ok()
    })
    .await;

    let (supplier_key, supplier) = new_account(&url).await;
    let owner = herd_worker::keys::address_of(&supplier_key);
    let mut workers = Vec::new();
    for i in 0..4 {
        let code = supplier.pairing_code().await.unwrap().code;
        let name = format!("herd-mh-{tag}-worker{i}");
        let id = run(
            &name,
            &format!("worker{i}"),
            &[
                "worker",
                "start",
                "--coordinator",
                "http://coordinator:7700",
                "--owner",
                owner.as_str(),
                "--pairing-code",
                &code,
                "--runtime",
                "process",
                "--country",
                "DE",
            ],
        );
        workers.push((name, id));
    }
    devices_in_state(&url, &owner, DeviceState::Ready, 4).await;

    let (_, customer) = new_account(&url).await;
    let cluster = customer.create_cluster(&cpu_cluster(3)).await.unwrap();
    let addresses: std::collections::BTreeSet<_> = cluster.nodes.iter().map(|n| n.address.clone()).collect();
    assert_eq!(addresses.len(), 3, "each node has its own address: {addresses:?}");
    let script = "echo node $HERD_NODE_RANK of $HERD_NODE_COUNT head $HERD_HEAD_ADDR; sleep 8; echo done";
    let job = customer.create_job(&CreateJob { max_retries: 1, ..shell(&cluster, script) }).await.unwrap();
    eventually("every node to run the job", Duration::from_secs(20), || async {
        let job = customer.job(job.id.as_str()).await.ok()?;
        job.tasks.iter().all(|t| t.state == TaskState::Running).then_some(())
    })
    .await;

    // Which container is rank 0, the head? The owner sees each device's hostname (the container's).
    let victim = &cluster.nodes[0];
    let devices = supplier.devices(&format!("owner={owner}")).await.unwrap();
    let hostname = devices.iter().find(|d| d.id == victim.device_id).unwrap().spec.hostname.clone();
    let (name, _) = workers.iter().find(|(_, id)| id.starts_with(&hostname)).expect("a container per device");
    let stopped_at = Instant::now();
    docker_ok(&["stop", "--time", "10", name]);
    let stop_took = stopped_at.elapsed();
    eventually("the stopped host's device to go offline", Duration::from_secs(30), || async {
        let device = supplier.device(victim.device_id.as_str()).await.ok()?;
        (device.device.state == DeviceState::Offline).then_some(())
    })
    .await;
    let offline_after = stopped_at.elapsed();
    eprintln!(
        "offline {offline_after:?} after `docker stop` (which took {stop_took:?}); heartbeat timeout {timeout:?}"
    );
    assert!(offline_after <= stop_took + timeout + Duration::from_secs(3), "offline within the heartbeat timeout");

    // The spare host takes rank 0; the job runs again around it and completes.
    let healed = eventually("a replacement head", Duration::from_secs(30), || async {
        let cluster = customer.cluster(cluster.id.as_str()).await.ok()?;
        let head = cluster.nodes.iter().find(|n| n.rank == 0)?;
        (head.device_id != victim.device_id && head.device_state == DeviceState::Hired).then_some(cluster)
    })
    .await;
    let new_head = healed.nodes.iter().find(|n| n.rank == 0).unwrap().address.clone();
    assert!(!addresses.contains(&new_head), "the spare host's own address: {new_head}");
    assert_eq!((healed.departed[0].rank, &healed.departed[0].device_id), (0, &victim.device_id));
    let (finished, lines) = follow_to_end(&customer, &job.id, Duration::from_secs(60)).await;
    assert_eq!((finished.state, finished.attempt), (JobState::Succeeded, 2), "{finished:?}\n{lines:?}");
    let second: Vec<&String> = lines.iter().skip_while(|l| !l.starts_with("herd: attempt 2")).collect();
    for rank in 0..3 {
        let expected = format!("node {rank} of 3 head {new_head}");
        assert!(second.iter().any(|l| **l == expected), "{expected:?} in {second:?}");
    }
    assert_eq!(second.iter().filter(|l| l.as_str() == "done").count(), 3, "{lines:?}");
    customer.delete_cluster(cluster.id.as_str()).await.unwrap();
}

/// The compose file in deploy/ is valid (running it is documented in deploy/README.md).
#[test]
fn the_compose_file_is_valid() {
    let compose = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/compose.yaml");
    let Ok(output) =
        std::process::Command::new("docker-compose").arg("-f").arg(&compose).args(["config", "-q"]).output()
    else {
        eprintln!("the_compose_file_is_valid: skipped (no docker-compose)");
        return;
    };
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// `--load-image`: an archive made by `docker save` is loaded through the engine API at start,
/// so a machine without a registry gets the images its jobs name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_loads_image_archives_at_start() {
    if !engine_available("a_worker_loads_image_archives_at_start") {
        return;
    }
    base_image();
    let network = TestNetwork::start(0).await;
    let image = format!("herd-test/loaded:{:08x}", rand::random::<u32>());
    // A one-file image is enough to show the load; it is removed again at the end.
    let context = network.dir.path().join("tiny");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("hello.txt"), "hello").unwrap();
    let tar = network.dir.path().join("tiny.tar");
    let status = std::process::Command::new("tar").arg("-C").arg(&context).arg("-cf").arg(&tar).arg(".").status();
    assert!(status.unwrap().success());
    docker_ok(&["import", tar.to_str().unwrap(), &image]);
    let archive = network.dir.path().join("image.tar");
    docker_ok(&["save", "-o", archive.to_str().unwrap(), &image]);
    docker_ok(&["rmi", &image]);

    let mut config = docker_worker(&network, "d0");
    config.runtime.load_images = vec![archive];
    let worker = start_agent(config);
    devices_in_state(&network.url, &network.supplier, DeviceState::Ready, 1).await;
    let inspected = docker_ok(&["image", "inspect", "-f", "{{.Id}}", &image]);
    assert!(inspected.starts_with("sha256:"), "{inspected}");
    docker_ok(&["rmi", &image]);
    worker.stop().await;
    network.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ray_cluster_on_docker_workers_runs_its_nodes_in_locked_down_containers() {
    if !engine_available("a_ray_cluster_on_docker_workers_runs_its_nodes_in_locked_down_containers") {
        return;
    }
    ray_image();
    let network = TestNetwork::start(0).await;
    let node = |name: &str| {
        let mut config = docker_worker(&network, name);
        // Ray's own processes need more than the 1 GiB the task tests give a node.
        config.simulated.as_mut().unwrap().memory_bytes = 4 << 30;
        start_agent(config)
    };
    let workers = [node("r0"), node("r1")];
    devices_in_state(&network.url, &network.supplier, DeviceState::Ready, 2).await;
    let (_, customer) = new_account(&network.url).await;
    let request = CreateCluster { nodes: 2, hours: Some(1), ..Default::default() };
    let cluster = customer.create_cluster(&request).await.unwrap();
    let labels: Vec<String> = cluster.nodes.iter().map(|n| format!("io.herd.device={}", n.device_id)).collect();
    let _cleanup = Cleanup(labels.clone());
    let cluster = eventually("the Ray cluster is ready", Duration::from_secs(180), || async {
        let cluster = customer.cluster(cluster.id.as_str()).await.unwrap();
        let failed = cluster.nodes.iter().filter_map(|n| n.ray.as_ref()).find(|r| r.state == RayNodeState::Failed);
        assert!(failed.is_none_or(|f| f.restarts < 3), "{failed:?}");
        (cluster.ray.as_ref().unwrap().state == herd_proto::api::RayClusterState::Ready).then_some(cluster)
    })
    .await;
    for label in &labels {
        let mine = containers_with(label);
        let ids: Vec<String> = containers_with("io.herd.ray=node").into_iter().filter(|id| mine.contains(id)).collect();
        assert_eq!(ids.len(), 1, "one Ray container per node ({label})");
        let inspected = docker_ok(&[
            "inspect",
            "--format",
            "{{.Config.Image}} {{.Config.User}} {{.HostConfig.NetworkMode}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}}",
            &ids[0],
        ]);
        assert_eq!(
            inspected.trim(),
            "herd/ray:2.40.0 65534:65534 host true [ALL] [no-new-privileges:true]",
            "the node's container"
        );
    }
    // A Ray job sees both nodes, and runs as nobody inside the image.
    let script =
        "import os, ray; ray.init(); print('nodes', len([n for n in ray.nodes() if n['Alive']]), 'uid', os.getuid())";
    let job = CreateJob {
        kind: JobKind::Ray,
        ..CreateJob::new(cluster.id.clone(), vec!["python".into(), "-c".into(), script.into()])
    };
    let created = customer.create_job(&job).await.unwrap();
    let mut output = String::new();
    let finished = tokio::time::timeout(
        Duration::from_secs(120),
        customer.stream_logs(created.id.as_str(), true, 0, |event| {
            if let LogEvent::Line(line) = event {
                output.push_str(&line.text);
                output.push('\n');
            }
        }),
    )
    .await
    .expect("the Ray job ends")
    .unwrap()
    .unwrap();
    assert_eq!(finished.state, JobState::Succeeded, "{output}");
    assert!(output.contains("nodes 2 uid 65534"), "{output}");
    // The lease ends: the node containers go.
    customer.delete_cluster(cluster.id.as_str()).await.unwrap();
    for label in &labels {
        eventually("the Ray containers to be removed", Duration::from_secs(30), || async {
            containers_with(label).is_empty().then_some(())
        })
        .await;
    }
    for worker in workers {
        worker.stop().await;
    }
    network.stop().await;
}

/// Tries each `host port` target from inside a container: `OPEN target answer` or
/// `REFUSED target` per line.
fn probe_script(targets: &[(String, u16)]) -> String {
    let mut script = String::from(
        r#"probe() {
            if out=$(timeout 4 bash -c "exec 3<>/dev/tcp/$1/$2 && head -n1 <&3" 2>/dev/null) && [ -n "$out" ]; then
                echo "OPEN $1:$2 $out"
            else
                echo "REFUSED $1:$2"
            fi
        }
        gw_hex=$(awk '$2=="00000000"{print $3}' /proc/net/route)
        gw=$(printf "%d.%d.%d.%d" 0x${gw_hex:6:2} 0x${gw_hex:4:2} 0x${gw_hex:2:2} 0x${gw_hex:0:2})
        "#,
    );
    for (host, port) in targets {
        script.push_str(&format!("probe {host} {port}\n"));
    }
    script
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_containers_reach_neither_the_suppliers_machine_nor_its_networks() {
    use common::fake_lan::{host_address, host_server, FakeLan, HOST_SECRET, LAN_ADDR, LAN_SECRET, METADATA_ADDR};
    if !engine_available("task_containers_reach_neither_the_suppliers_machine_nor_its_networks") {
        return;
    }
    base_image();
    let tag = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let label = format!("io.herd.test={tag}");
    let _lan = FakeLan::start(&tag);
    let port = host_server();
    let host = host_address();
    // A container of the supplier's own, publishing a port on every host address.
    let published = format!("herd-egress-{tag}");
    let perl = r#"$s = IO::Socket::INET->new(LocalPort => 8080, Listen => 5, ReuseAddr => 1) or die;
        while ($c = $s->accept) { print $c "published-secret\n"; close $c }"#;
    docker_ok(&[
        "run",
        "-d",
        "--label",
        &label,
        "--name",
        &published,
        "-p",
        "8080",
        BASE_IMAGE,
        "perl",
        "-MIO::Socket::INET",
        "-e",
        perl,
    ]);
    let _cleanup = Cleanup(vec![label.clone()]);
    let mapped = docker_ok(&["port", &published, "8080/tcp"]);
    let published_port: u16 = mapped.lines().next().unwrap().rsplit(':').next().unwrap().parse().unwrap();
    let published_ip =
        docker_ok(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", &published]);
    common::wait_until_serving(&format!("127.0.0.1:{published_port}"));

    let targets = vec![
        ("$gw".to_owned(), port),
        ("172.17.0.1".to_owned(), port),
        (host.clone(), port),
        (METADATA_ADDR.to_owned(), 80),
        (LAN_ADDR.to_owned(), 80),
        (host.clone(), published_port),
        (published_ip.clone(), 8080),
    ];
    let script = probe_script(&targets);

    // The supplier's own traffic is untouched: a plain container reaches all of it.
    let plain = docker_ok(&["run", "--rm", "--label", &label, BASE_IMAGE, "bash", "-c", &script]);
    for line in plain.lines() {
        assert!(line.starts_with("OPEN"), "a container outside herd should reach {line}\n{plain}");
    }

    let network = TestNetwork::start(0).await;
    let worker = start_agent(docker_worker(&network, "d0"));
    devices_in_state(&network.url, &network.supplier, DeviceState::Ready, 1).await;
    let device = network.supplier_client.devices(&format!("owner={}", network.supplier)).await.unwrap().remove(0);
    let (_, customer) = new_account(&network.url).await;
    let cluster = customer.create_cluster(&cpu_cluster(1)).await.unwrap();
    let _herd_cleanup = Cleanup(vec![format!("io.herd.device={}", device.id)]);
    let job = CreateJob::new(cluster.id.clone(), vec!["bash".into(), "-c".into(), script.clone()]);
    let (_, lines) = run_to_end(&customer, &job).await;
    let output = text(&lines);
    let refused = lines.iter().filter(|(_, _, line)| line.starts_with("REFUSED")).count();
    assert_eq!(refused, targets.len(), "every path must be refused:\n{output}");
    for secret in [HOST_SECRET, LAN_SECRET, "published-secret"] {
        assert!(!output.contains(secret), "{secret} leaked:\n{output}");
    }

    // The rules are the device's own, labelled; they go when the agent stops.
    let label_of = format!("herd-egress:{}", device.id.short());
    let rules = || {
        let v4 = std::process::Command::new("iptables").args(["-w", "5", "-S"]).output().unwrap();
        String::from_utf8_lossy(&v4.stdout).lines().filter(|l| l.contains(&label_of)).count()
    };
    assert!(rules() > 0, "the policy's rules carry the device's label");
    customer.delete_cluster(cluster.id.as_str()).await.unwrap();
    worker.stop().await;
    assert_eq!(rules(), 0, "no rule of this device is left after it stops");
    // The supplier's own paths still work after herd is gone.
    let after = docker_ok(&["run", "--rm", "--label", &label, BASE_IMAGE, "bash", "-c", &script]);
    assert!(after.lines().all(|l| l.starts_with("OPEN")), "{after}");
    network.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_cannot_fill_the_suppliers_disk_or_run_the_suppliers_images() {
    if !engine_available("a_lease_cannot_fill_the_suppliers_disk_or_run_the_suppliers_images") {
        return;
    }
    // The worker makes each lease's working area with mkfs.ext4 (e2fsprogs).
    common::install::apt_install(&["/sbin/mkfs.ext4"], &["e2fsprogs"]).expect("e2fsprogs installs");
    base_image();
    let tag = format!("{:08x}", rand::random::<u32>());
    // A private image of the supplier's: it must not run unless the supplier allows it.
    let private = format!("supplier-private-{tag}:1");
    docker_ok(&["tag", BASE_IMAGE, &private]);
    struct Untag(String);
    impl Drop for Untag {
        fn drop(&mut self) {
            let _ = common::docker::docker(&["rmi", &self.0]);
        }
    }
    let _untag = Untag(private.clone());

    let network = TestNetwork::start(0).await;
    // A machine whose disk leaves a lease about 200 MiB (the rest is the supplier's reserve).
    let mut small = docker_worker(&network, "small");
    small.simulated.as_mut().unwrap().disk_bytes = (1 << 30) + (200 << 20);
    let data_dir = small.data_dir.clone();
    let worker = start_agent(small);
    devices_in_state(&network.url, &network.supplier, DeviceState::Ready, 1).await;
    let device = network.supplier_client.devices(&format!("owner={}", network.supplier)).await.unwrap().remove(0);
    let _cleanup = Cleanup(vec![format!("io.herd.device={}", device.id)]);
    let (_, customer) = new_account(&network.url).await;
    let cluster = customer.create_cluster(&cpu_cluster(1)).await.unwrap();

    let fill = "df -m /work | tail -1; dd if=/dev/zero of=/work/fill bs=1M count=400 2>&1 | grep -v records; exit 3";
    let (job, lines) = run_to_end(&customer, &shell(&cluster, fill)).await;
    let output = text(&lines);
    assert!(output.contains("No space left on device"), "the task meets ENOSPC:\n{output}");
    let task = &job.tasks[0];
    assert_eq!(task.exit_code, Some(3));
    let error = task.error.as_deref().unwrap_or_default();
    assert!(error.contains("working area") && error.contains("is full"), "a clear job error: {error:?}");
    // What the host's disk holds for the lease is the area's size, not the 400 MiB written.
    let volumes = data_dir.join("lease-volumes");
    let used: u64 = std::fs::read_dir(&volumes)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "img"))
        .map(|e| std::os::unix::fs::MetadataExt::blocks(&e.metadata().unwrap()) * 512)
        .sum();
    assert!(used > 0 && used < 260 << 20, "the host holds {} MiB for the lease", used >> 20);

    let mut private_job = shell(&cluster, "echo private-image-ran");
    private_job.image = Some(private.clone());
    let (job, lines) = run_to_end(&customer, &private_job).await;
    let error = job.tasks[0].error.clone().unwrap_or_default();
    assert!(error.contains("may not run here") && error.contains("--allow-image"), "{error}\n{}", text(&lines));
    assert!(!text(&lines).contains("private-image-ran"));

    // Lease over: its working area is unmounted and deleted.
    customer.delete_cluster(cluster.id.as_str()).await.unwrap();
    eventually("the working area to go", Duration::from_secs(20), || async {
        let left = std::fs::read_dir(&volumes).map(|d| d.count()).unwrap_or(0);
        (left == 0).then_some(())
    })
    .await;
    worker.stop().await;
    devices_in_state(&network.url, &network.supplier, DeviceState::Offline, 1).await;

    // The supplier allows the image: now it runs.
    let mut allowing = docker_worker(&network, "allowing");
    allowing.runtime.allowed_images = vec![format!("supplier-private-{tag}")];
    let worker = start_agent(allowing);
    devices_in_state(&network.url, &network.supplier, DeviceState::Ready, 1).await;
    let cluster = customer.create_cluster(&cpu_cluster(1)).await.unwrap();
    let _cleanup_allowing = Cleanup(vec![format!("io.herd.device={}", cluster.nodes[0].device_id)]);
    let mut allowed_job = shell(&cluster, "echo private-image-ran");
    allowed_job.image = Some(private);
    let (job, lines) = run_to_end(&customer, &allowed_job).await;
    assert_eq!(job.tasks[0].exit_code, Some(0), "{:?}\n{}", job.tasks[0].error, text(&lines));
    assert!(text(&lines).contains("private-image-ran"));
    customer.delete_cluster(cluster.id.as_str()).await.unwrap();
    worker.stop().await;
    network.stop().await;
}
