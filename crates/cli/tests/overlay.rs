//! Leases across machines that cannot reach each other: four real worker agents, each in a
//! network namespace whose only link is to this host (where the coordinator and its Nebula
//! lighthouse/relay run), like four homes behind NAT. A 2-node Ray cluster forms over its
//! private overlay (relayed), a job's nodes talk TCP on their overlay addresses, another
//! lease's node and the underlay are refused, and a replaced node's certificate is revoked.
//! Needs root, `/dev/net/tun`, and Nebula (installed here with apt if missing).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::customer::Customer;
use common::netns::NatHost;
use common::{eventually, new_account, shared_ray_envs, test_config};
use herd_cli::client::Client;
use herd_core::{Address, ClusterKind, DeviceState, JobState, RayNodeState};
use herd_proto::api::{Cluster, CreateCluster, CreateJob, RayClusterState};

const RAY_READY_MAX: Duration = Duration::from_secs(600);

/// The NAT hosts cannot reach PyPI: Ray is installed into the shared environment from here.
async fn ray_installed() {
    let envs = herd_worker::PythonEnvs::new(shared_ray_envs(), "python3".into());
    envs.ensure(herd_core::ray::RAY_VERSION_DEFAULT).await.expect("Ray installs");
}

fn nebula_installed() {
    common::install::apt_install(&["/usr/bin/nebula"], &["nebula"]).expect("nebula installs");
    common::install::apt_install(&["/bin/ping"], &["iputils-ping"]).expect("ping installs");
}

/// A `herd worker start` agent (process runtime) inside a NAT host, paired to its own
/// supplier account.
struct Machine {
    host: NatHost,
    device: Address,
    data_dir: PathBuf,
    agent: Option<Child>,
}

impl Machine {
    async fn start(url_port: u16, dir: &Path, tag: &str, subnet: u8, extra: &[&str]) -> Machine {
        Machine::launch(url_port, dir, tag, subnet, extra, &[]).await
    }

    /// As `start`, with the agent run under `wrapper` (e.g. `setpriv … --`).
    async fn start_wrapped(url_port: u16, dir: &Path, tag: &str, subnet: u8, wrapper: &[&str]) -> Machine {
        Machine::launch(url_port, dir, tag, subnet, &[], wrapper).await
    }

    async fn launch(url_port: u16, dir: &Path, tag: &str, subnet: u8, extra: &[&str], wrapper: &[&str]) -> Machine {
        let host = NatHost::start(tag, subnet);
        let url = format!("http://{}:{url_port}", host.host_addr);
        let (key, client) = new_account(&url).await;
        let supplier = herd_keys::address_of(&key);
        let code = client.pairing_code().await.unwrap();
        let data_dir = dir.join(tag);
        // Kept after the run (the temp dir is not), for whoever reads a failure.
        let logs = Path::new(env!("CARGO_TARGET_TMPDIR")).join("overlay-logs");
        std::fs::create_dir_all(&logs).unwrap();
        let log = std::fs::File::create(logs.join(format!("{tag}.log"))).unwrap();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = host.command(program);
                command.args(args).arg(env!("CARGO_BIN_EXE_herd"));
                command
            }
            None => host.command(env!("CARGO_BIN_EXE_herd")),
        };
        let agent = command
            .args(["worker", "start", "--coordinator", &url, "--runtime", "process", "--owner", supplier.as_str()])
            .args(["--pairing-code", &code.code])
            .arg("--ray-envs-dir")
            .arg(shared_ray_envs())
            .arg("--data-dir")
            .arg(&data_dir)
            .args(extra)
            .env("HERD_CONFIG_DIR", dir.join("config"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        common::devices_in_state(&url, &supplier, DeviceState::Ready, 1).await;
        let device = Client::new(&url, None).devices(&format!("owner={supplier}")).await.unwrap()[0].id.clone();
        Machine { host, device, data_dir, agent: Some(agent) }
    }

    /// The machine's agent dies (SIGKILL); its nebula and Ray node go with it.
    fn kill_agent(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            agent.kill().unwrap();
            agent.wait().unwrap();
        }
    }

    /// Average round trip of 20 pings, ms.
    fn rtt_ms(&self, address: &str) -> f64 {
        let output = self.host.command("ping").args(["-q", "-c", "20", "-i", "0.05", address]).output().unwrap();
        let output = text(&output.stdout);
        // rtt min/avg/max/mdev = 0.151/0.276/0.361/0.090 ms
        let stats = output.lines().find(|l| l.contains("min/avg/max")).unwrap_or_else(|| panic!("{output}"));
        stats.split('=').nth(1).unwrap().trim().split('/').nth(1).unwrap().parse().unwrap()
    }

    /// MB/s of 64 MiB sent over TCP from this machine to `server` listening at `address`.
    fn tcp_mb_per_s(&self, server: &Machine, address: &str) -> f64 {
        let sink = format!(
            "import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('{address}', 47200)); s.listen(1); c, _ = s.accept()\n\
             while c.recv(1 << 20): pass\n"
        );
        let mut sink = server.host.command("python3").args(["-c", &sink]).spawn().unwrap();
        let send = format!(
            "import socket, time\nfor _ in range(100):\n    try:\n        c = socket.create_connection(('{address}', 47200), timeout=2); break\n    \
             except OSError: time.sleep(0.1)\nblock = b'x' * (1 << 20); t = time.time()\n\
             for _ in range(64): c.sendall(block)\nc.shutdown(socket.SHUT_WR); c.recv(1); print(64 / (time.time() - t))\n"
        );
        let output = self.host.command("python3").args(["-c", &send]).output().unwrap();
        let _ = sink.wait();
        text(&output.stdout).trim().parse().unwrap_or_else(|_| panic!("{}", text(&output.stderr)))
    }

    fn ping(&self, address: &str) -> bool {
        self.host.run_ok(&format!("ping -c 1 -W 1 {address} >/dev/null"))
    }

    /// TCP connect within 2 s.
    fn connects(&self, address: &str, port: u16) -> bool {
        self.host.run_ok(&format!(
            "python3 -c 'import socket; socket.create_connection((\"{address}\", {port}), timeout=2)'"
        ))
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.kill_agent();
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn overlay_address(cluster: &Cluster, device: &Address) -> String {
    let node = cluster.nodes.iter().find(|n| &n.device_id == device).expect("a node of the cluster");
    node.overlay.as_ref().unwrap_or_else(|| panic!("no overlay on {node:?}")).address.clone()
}

/// Every node's overlay is up and sees `peers` peers.
async fn overlay_up(client: &Client, id: &str, peers: usize) -> Cluster {
    eventually("every node's overlay is up", Duration::from_secs(60), || async {
        let cluster = client.cluster(id).await.unwrap();
        cluster
            .nodes
            .iter()
            .all(|n| n.overlay.as_ref().is_some_and(|o| o.up && o.peers.len() >= peers))
            .then_some(cluster)
    })
    .await
}

/// Milliseconds until `from` first pings `address` (at most `max`).
fn first_ping_ms(from: &Machine, address: &str, max: Duration) -> Option<u128> {
    let start = Instant::now();
    while start.elapsed() < max {
        if from.ping(address) {
            return Some(start.elapsed().as_millis());
        }
    }
    None
}

/// Kills the lighthouse's nebula (the coordinator's supervisor starts it again).
fn kill_lighthouse(dir: &Path) {
    let marker = dir.display().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("lighthouse.yml") && cmdline.contains(&marker) && !cmdline.contains("setpriv") {
            let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_across_machines_with_no_route_between_them_get_private_overlays() {
    nebula_installed();
    ray_installed().await;
    let logs = Path::new(env!("CARGO_TARGET_TMPDIR")).join("overlay-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let coordinator_log = std::fs::File::create(logs.join("coordinator.log")).unwrap();
    let _ = tracing_subscriber::fmt()
        .with_writer(std::sync::Mutex::new(coordinator_log))
        .with_ansi(false)
        .with_env_filter("info")
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir.path().join("herd.db"), "0.0.0.0:0".parse().unwrap());
    // Healing waits this long before it replaces a silent node.
    config.missed_heartbeats_max = 10;
    config.overlay = Some(herd_coordinator::OverlayConfig::new("0.0.0.0:0".parse().unwrap()));
    let coordinator = herd_coordinator::start(config).await.expect("the coordinator and its lighthouse start");
    let port = coordinator.addr().port();
    let restart_config = {
        let mut config = test_config(&dir.path().join("herd.db"), format!("0.0.0.0:{port}").parse().unwrap());
        config.missed_heartbeats_max = 10;
        config.overlay = Some(herd_coordinator::OverlayConfig::new("0.0.0.0:0".parse().unwrap()));
        config
    };
    let tag = format!("{}", std::process::id() % 10_000);
    let mut machines = Vec::new();
    for i in 0..4u8 {
        machines.push(Machine::start(port, dir.path(), &format!("{tag}{i}"), 10 + i, &[]).await);
    }
    let url = format!("http://127.0.0.1:{port}");
    let customer = Customer::new(&url).await;

    // Lease A: a 2-node Ray cluster across two machines that cannot reach each other.
    let lease_started = Instant::now();
    let request = CreateCluster { nodes: 2, hours: Some(1), ..Default::default() };
    let a = customer.client.create_cluster(&request).await.unwrap();
    let a_id = a.id.to_string();
    let a_up = overlay_up(&customer.client, &a_id, 0).await;
    let overlay_ms = lease_started.elapsed().as_millis();
    let ray = eventually("the Ray cluster is ready", RAY_READY_MAX, || async {
        let cluster = customer.client.cluster(&a_id).await.unwrap();
        let failed = cluster.nodes.iter().filter_map(|n| n.ray.as_ref()).find(|r| r.state == RayNodeState::Failed);
        assert!(failed.is_none_or(|f| !f.detail.as_deref().unwrap_or("").starts_with("cannot")), "{failed:?}");
        (cluster.ray.as_ref().unwrap().state == RayClusterState::Ready).then_some(cluster)
    })
    .await;
    let ray_ms = lease_started.elapsed().as_millis();

    let member = |cluster: &Cluster, i: usize| {
        machines.iter().position(|m| m.device == cluster.nodes[i].device_id).expect("one of the machines")
    };
    let (a0, a1) = (member(&a_up, 0), member(&a_up, 1));
    let (addr0, addr1) = (overlay_address(&a_up, &machines[a0].device), overlay_address(&a_up, &machines[a1].device));
    let a_rank1 = a_up.nodes[1].rank;
    assert!(addr0.starts_with("100.6") && addr1.starts_with("100.6") && addr0 != addr1, "{addr0} {addr1}");
    assert!(!machines[a0].ping(&machines[a1].host.addr), "the underlay has no route between them");
    let first_ping = first_ping_ms(&machines[a0], &addr1, Duration::from_secs(20));
    assert!(first_ping.is_some() && machines[a1].ping(&addr0), "the overlay carries them");
    // Each node reports how it reaches the other: with no route between them, via the relay.
    let a_seen = overlay_up(&customer.client, &a_id, 1).await;
    let paths: Vec<&String> =
        a_seen.nodes.iter().flat_map(|n| &n.overlay.as_ref().unwrap().peers).map(|(_, p)| p).collect();
    assert!(paths.iter().all(|p| p.starts_with("relayed")), "no route, so relayed: {paths:?}");
    // The owner sees addresses and paths; the public explorer shows none of it.
    let shown = customer.herd(&["cluster", "show", &a_id]).await;
    let shown = text(&shown.stdout);
    assert!(shown.contains(&format!("{addr0} up")) && shown.contains("relayed"), "{shown}");
    let page = reqwest::get(format!("{url}/explorer/clusters/{a_id}")).await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(!page.contains("100.64.") && !page.contains("relayed"), "the explorer shows no overlay: {page}");

    assert_eq!(ray.kind, ClusterKind::Ray);
    // The two machines lease B will get share a LAN: their overlay goes direct.
    let free: Vec<usize> = (0..machines.len()).filter(|i| ![a0, a1].contains(i)).collect();
    machines[free[0]].host.link_to(&machines[free[1]].host, 20);

    // A Ray job of the test's own sees both nodes, on their overlay addresses.
    let script =
        "import ray, json\nray.init()\nips = sorted(n['NodeManagerAddress'] for n in ray.nodes() if n['Alive'])\n\
                  print('RESULT ' + json.dumps(ips))\n";
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("main.py"), script).unwrap();
    let submitted = customer
        .herd(&[
            "job",
            "submit",
            "--cluster",
            &a_id,
            "--working-dir",
            work.path().to_str().unwrap(),
            "--",
            "python",
            "main.py",
        ])
        .await;
    let stdout = text(&submitted.stdout);
    assert!(submitted.status.success(), "{stdout}\n{}", text(&submitted.stderr));
    let line = stdout.lines().rev().find_map(|l| l.strip_prefix("RESULT ")).unwrap_or_else(|| panic!("{stdout}"));
    let mut expected = vec![addr0.clone(), addr1.clone()];
    expected.sort();
    assert_eq!(serde_json::from_str::<Vec<String>>(line).unwrap(), expected, "Ray runs on the overlay");

    // A job on both nodes: rank 1 reaches rank 0 over TCP at HERD_HEAD_ADDR, its overlay address.
    let talk = "import os, socket, time\n\
        rank, head = int(os.environ['HERD_NODE_RANK']), os.environ['HERD_HEAD_ADDR']\n\
        if rank == 0:\n    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n    \
        s.bind((head, 47123)); s.listen(1); s.settimeout(60); c, peer = s.accept()\n    \
        print('rank0 got', c.recv(64).decode(), 'from', peer[0])\n\
        else:\n    for _ in range(200):\n        try:\n            c = socket.create_connection((head, 47123), timeout=2); break\n        \
        except OSError:\n            time.sleep(0.2)\n    c.sendall(b'hello-over-the-overlay'); print('rank1 sent to', head)\n";
    let job = CreateJob::new(a.id.clone(), vec!["python3".into(), "-c".into(), talk.into()]);
    let job = customer.client.create_job(&job).await.unwrap();
    let (finished, lines) = common::follow_to_end(&customer.client, &job.id, Duration::from_secs(120)).await;
    assert_eq!(finished.state, JobState::Succeeded, "{lines:?}");
    let head = ray.nodes.iter().find(|n| n.ray.as_ref().is_some_and(|r| r.head)).expect("a head");
    let head_addr = overlay_address(&a_up, &head.device_id);
    let head_machine = machines.iter().position(|m| m.device == head.device_id).unwrap();
    let other_machine = if head_machine == a0 { a1 } else { a0 };
    // Ray's head listens on its overlay address (or on all addresses): a port of it.
    let listening = machines[head_machine].host.command("ss").args(["-ltnH"]).output().unwrap();
    let listening = text(&listening.stdout);
    let gcs_port: u16 = listening
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter(|local| local.starts_with(&format!("{head_addr}:")) || local.starts_with("0.0.0.0:"))
        .find_map(|local| local.rsplit(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("nothing of Ray listens on {head_addr}: {listening}"));
    assert!(machines[other_machine].connects(&head_addr, gcs_port), "lease A's nodes reach each other on any port");
    assert!(lines.iter().any(|l| l.starts_with("rank0 got hello-over-the-overlay from 100.6")), "{lines:?}");
    assert!(lines.iter().any(|l| l == &format!("rank1 sent to {head_addr}")), "{lines:?}");

    // Lease B, on the other two machines: its nodes are refused by lease A's (ping and TCP).
    let request = CreateCluster { nodes: 2, hours: Some(1), kind: Some(ClusterKind::Plain), ..Default::default() };
    let b = customer.client.create_cluster(&request).await.unwrap();
    let b_up = overlay_up(&customer.client, b.id.as_str(), 0).await;
    let (b0, b1) = (member(&b_up, 0), member(&b_up, 1));
    assert!(![a0, a1].contains(&b0) && ![a0, a1].contains(&b1));
    let b_addr1 = overlay_address(&b_up, &machines[b1].device);
    assert!(
        first_ping_ms(&machines[b0], &b_addr1, Duration::from_secs(20)).is_some(),
        "lease B's nodes reach each other"
    );
    assert!(!machines[b0].ping(&addr0) && !machines[b0].ping(&addr1), "another lease cannot ping lease A");
    assert!(!machines[b0].connects(&head_addr, gcs_port), "nor reach lease A's Ray head over TCP");
    assert!(!machines[a0].ping(&b_addr1), "nor the other way round");
    let b_seen = overlay_up(&customer.client, b.id.as_str(), 1).await;
    let b_paths: Vec<&String> =
        b_seen.nodes.iter().flat_map(|n| &n.overlay.as_ref().unwrap().peers).map(|(_, p)| p).collect();
    assert!(b_paths.iter().any(|p| p.starts_with("direct 10.236.20.")), "on one LAN, direct: {b_paths:?}");

    // Figures: round trips and TCP throughput, relayed (lease A) and direct (lease B) on the
    // overlay against the underlay link they ride on.
    let lan_peer = machines[b1].host.lan_addr().expect("b1 is on the LAN");
    let figures = [
        ("overlay relayed", &machines[a0], addr1.clone(), &machines[a1]),
        ("overlay direct", &machines[b0], b_addr1.clone(), &machines[b1]),
        ("underlay LAN", &machines[b0], lan_peer.clone(), &machines[b1]),
    ];
    let mut measured = Vec::new();
    for (what, from, to, server) in figures {
        let rtt = from.rtt_ms(&to);
        let mbps = from.tcp_mb_per_s(server, &to);
        measured.push(format!("{what}: rtt {rtt:.3} ms, tcp {mbps:.0} MB/s"));
    }
    eprintln!("FIGURES paths: {}", measured.join("; "));

    // The relay restarts: how long until lease A's nodes talk again.
    kill_lighthouse(dir.path());
    let recovery = first_ping_ms(&machines[a0], &addr1, Duration::from_secs(150));
    assert!(recovery.is_some(), "traffic through the relay came back after its restart");

    // The coordinator restarts (its lighthouse with it, on a new port): the CA and every
    // certificate stay, the nodes rejoin on the same addresses.
    coordinator.shutdown().await;
    let restarted = Instant::now();
    let coordinator = herd_coordinator::start(restart_config).await.expect("the coordinator restarts");
    let after = first_ping_ms(&machines[a0], &addr1, Duration::from_secs(60));
    assert!(after.is_some(), "lease A's nodes talk again after a coordinator restart");
    let rejoined = overlay_up(&customer.client, &a_id, 0).await;
    assert_eq!(overlay_address(&rejoined, &machines[a0].device), addr0, "the same certificate and address");
    let coordinator_restart_ms = restarted.elapsed().as_millis();

    // Revocation: lease B ends (two machines free up), lease A's rank-1 machine dies and is
    // replaced; the dead machine's certificate (its configuration is still on its disk) no
    // longer reaches the lease.
    customer.client.delete_cluster(b.id.as_str()).await.unwrap();
    let lost = a1;
    let old_config = machines[lost].data_dir.join("overlay").join(format!("{a_id}.yml"));
    let old_config = std::fs::read_to_string(&old_config).expect("the dead node's overlay configuration");
    machines[lost].kill_agent();
    let healed = eventually("rank 1 is replaced", Duration::from_secs(120), || async {
        let cluster = customer.client.cluster(&a_id).await.unwrap();
        let node = cluster.nodes.iter().find(|n| n.rank == a_rank1)?;
        (node.device_id != machines[lost].device && node.overlay.as_ref().is_some_and(|o| o.up)).then_some(cluster)
    })
    .await;
    let replacement = healed.nodes.iter().find(|n| n.rank == a_rank1).unwrap();
    let new_addr = replacement.overlay.as_ref().unwrap().address.clone();
    assert_ne!(new_addr, addr1, "a replacement takes a new address");
    let rejoin = machines.iter().position(|m| m.device == replacement.device_id).unwrap();
    assert!(first_ping_ms(&machines[rejoin], &addr0, Duration::from_secs(30)).is_some(), "the replacement joined");
    // The dead machine comes back with its old certificate and key.
    let path = dir.path().join("revoked.yml");
    herd_overlay::config::write_private(&path, &old_config).unwrap();
    let mut revoked = machines[lost]
        .host
        .command("nebula")
        .arg("-config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let reached = first_ping_ms(&machines[lost], &addr0, Duration::from_secs(10));
    let _ = revoked.kill();
    let _ = revoked.wait();
    assert!(reached.is_none(), "a revoked certificate no longer reaches the lease");

    eprintln!(
        "FIGURES overlay: lease→overlay up {overlay_ms} ms, first ping {} ms, lease→Ray ready {ray_ms} ms, \
         relay restart → traffic {} ms, coordinator restart → traffic {coordinator_restart_ms} ms",
        first_ping.unwrap(),
        recovery.unwrap()
    );
    drop(machines);
    coordinator.shutdown().await;
}

/// A machine without Nebula, and one whose agent lacks CAP_NET_ADMIN, say exactly why and
/// are offered for single-node leases only; with both, a 2-node lease is refused with the
/// reason, a 1-node one runs. And an operator's second lighthouse, configured from the CA key,
/// is accepted by Nebula.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_that_cannot_join_an_overlay_say_why_and_take_single_node_leases() {
    nebula_installed();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir.path().join("herd.db"), "0.0.0.0:0".parse().unwrap());
    config.overlay = Some(herd_coordinator::OverlayConfig::new("0.0.0.0:0".parse().unwrap()));
    let coordinator = herd_coordinator::start(config).await.expect("the coordinator and its lighthouse start");
    let port = coordinator.addr().port();
    let tag = format!("{}", std::process::id() % 10_000);
    let no_nebula =
        Machine::start(port, dir.path(), &format!("{tag}x"), 30, &["--nebula", "/nonexistent/nebula"]).await;
    let no_cap = Machine::start_wrapped(
        port,
        dir.path(),
        &format!("{tag}y"),
        31,
        &["setpriv", "--bounding-set", "-net_admin", "--inh-caps", "-net_admin", "--"],
    )
    .await;
    let url = format!("http://127.0.0.1:{port}");
    // Another lighthouse and relay, configured offline from the CA key, runs with real Nebula.
    let extra = dir.path().join("lighthouse-1.yml");
    let free_udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let ca_key = dir.path().join("herd.db.overlay-ca.key");
    let wrote = std::process::Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(["operator", "overlay-lighthouse", "--index", "1", "--listen", &free_udp, "--ca-key"])
        .arg(&ca_key)
        .arg("--out")
        .arg(&extra)
        .output()
        .unwrap();
    assert!(wrote.status.success(), "{}", text(&wrote.stderr));
    assert!(text(&wrote.stdout).contains("100.64.0.2"), "{}", text(&wrote.stdout));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&extra).unwrap().permissions().mode() & 0o777, 0o600);
    let lighthouse = herd_overlay::Nebula::start(Path::new("nebula"), &extra, "extra lighthouse");
    lighthouse.wait_up(Duration::from_secs(15)).await.expect("nebula accepts the lighthouse's certificate");
    lighthouse.stop().await;
    let public = Client::new(&url, None);
    let missing =
        public.device(no_nebula.device.as_str()).await.unwrap().device.overlay_unavailable.unwrap_or_default();
    assert!(
        missing.contains("/nonexistent/nebula not found") && missing.contains("apt-get install nebula"),
        "{missing}"
    );
    let uncapped = public.device(no_cap.device.as_str()).await.unwrap().device.overlay_unavailable.unwrap_or_default();
    assert!(uncapped.contains("CAP_NET_ADMIN"), "{uncapped}");

    let customer = Customer::new(&url).await;
    let two = CreateCluster { nodes: 2, hours: Some(1), kind: Some(ClusterKind::Plain), ..Default::default() };
    let refused = customer.client.create_cluster(&two).await.unwrap_err().to_string();
    assert!(refused.contains("join a multi-node lease"), "{refused}");
    let one = CreateCluster { nodes: 1, hours: Some(1), kind: Some(ClusterKind::Plain), ..Default::default() };
    let single = customer.client.create_cluster(&one).await.unwrap();
    assert!(single.nodes[0].overlay.is_none(), "a single node runs without an overlay");
    let job = customer
        .client
        .create_job(&CreateJob::new(single.id.clone(), vec!["echo".into(), "alone".into()]))
        .await
        .unwrap();
    let (finished, lines) = common::follow_to_end(&customer.client, &job.id, Duration::from_secs(60)).await;
    assert_eq!((finished.state, lines), (JobState::Succeeded, vec!["alone".to_owned()]));
    drop((no_nebula, no_cap));
    coordinator.shutdown().await;
}
