//! The `ray start` command line for a node: exactly the leased resources, ports chosen by the
//! agent (several nodes, of one cluster or of several, may share a machine), the dashboard
//! and job API on loopback only (customers reach them through the coordinator's tunnel).

use std::net::TcpListener;

use herd_proto::worker::RayNodeAssignment;

/// The ports a node listens on. Ray picks unset ones itself by probing for a free port and
/// binding it later, which races with every process on the machine taking ephemeral ports —
/// including the Ray worker processes of another node starting next to it (a raylet that
/// loses the race dies with "bind: Address already in use"). The agent chooses them all, from
/// below the kernel's ephemeral range, holding each until all are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub gcs: u16,
    pub dashboard: u16,
    pub client_server: u16,
    pub dashboard_agent: u16,
    pub dashboard_agent_grpc: u16,
    pub node_manager: u16,
    pub object_manager: u16,
    pub metrics_export: u16,
    pub runtime_env_agent: u16,
}

/// Below Linux's default ephemeral range (32768–60999), above the well-known services.
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;
const PORT_TRIES_MAX: usize = 1_000;

impl Ports {
    pub fn pick() -> std::io::Result<Ports> {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        let mut held: Vec<TcpListener> = Vec::with_capacity(9);
        for _ in 0..PORT_TRIES_MAX {
            if held.len() == 9 {
                break;
            }
            if let Ok(listener) = TcpListener::bind(("0.0.0.0", rng.gen_range(PORT_RANGE))) {
                held.push(listener);
            }
        }
        if held.len() < 9 {
            return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "no free ports between 20000 and 32000"));
        }
        let port = |i: usize| held[i].local_addr().map(|a| a.port());
        Ok(Ports {
            gcs: port(0)?,
            dashboard: port(1)?,
            client_server: port(2)?,
            dashboard_agent: port(3)?,
            dashboard_agent_grpc: port(4)?,
            node_manager: port(5)?,
            object_manager: port(6)?,
            metrics_export: port(7)?,
            runtime_env_agent: port(8)?,
        })
    }
}

/// Arguments after `ray`. `node_ip` is the address other nodes reach this one at; the node's
/// raylet and plasma store sockets go in `sockets` (a directory of its own: Ray's own choice
/// of socket names in a shared session directory races when nodes start side by side).
pub fn start_args(node: &RayNodeAssignment, node_ip: &str, ports: &Ports, sockets: &std::path::Path) -> Vec<String> {
    let r = &node.resources;
    let mut args: Vec<String> = vec![
        "start".into(),
        // In the foreground: the agent owns the process, sees it die, and stops it.
        "--block".into(),
        "--disable-usage-stats".into(),
        "--log-color".into(),
        "false".into(),
        "--node-ip-address".into(),
        node_ip.into(),
        "--num-cpus".into(),
        r.num_cpus.to_string(),
        "--num-gpus".into(),
        r.num_gpus.to_string(),
        "--memory".into(),
        r.memory_bytes.to_string(),
        "--object-store-memory".into(),
        r.object_store_bytes.to_string(),
        "--dashboard-agent-listen-port".into(),
        ports.dashboard_agent.to_string(),
        "--dashboard-agent-grpc-port".into(),
        ports.dashboard_agent_grpc.to_string(),
        "--node-manager-port".into(),
        ports.node_manager.to_string(),
        "--object-manager-port".into(),
        ports.object_manager.to_string(),
        "--metrics-export-port".into(),
        ports.metrics_export.to_string(),
        "--runtime-env-agent-port".into(),
        ports.runtime_env_agent.to_string(),
        // Worker processes bind ports the OS gives them: Ray's default range (10002–19999)
        // is shared by every node on a machine and its picks race.
        "--min-worker-port".into(),
        "0".into(),
        "--max-worker-port".into(),
        "0".into(),
        "--raylet-socket-name".into(),
        sockets.join("raylet").display().to_string(),
        "--plasma-store-socket-name".into(),
        sockets.join("plasma").display().to_string(),
    ];
    if !r.custom.is_empty() {
        args.push("--resources".into());
        args.push(serde_json::to_string(&r.custom).expect("a map of numbers serialises"));
    }
    match &node.head_address {
        None => args.extend([
            "--head".into(),
            "--port".into(),
            ports.gcs.to_string(),
            "--include-dashboard".into(),
            "true".into(),
            "--dashboard-host".into(),
            "127.0.0.1".into(),
            "--dashboard-port".into(),
            ports.dashboard.to_string(),
            "--ray-client-server-port".into(),
            ports.client_server.to_string(),
        ]),
        Some(head) => args.extend(["--address".into(), head.clone()]),
    }
    args
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use herd_core::ray::RayResources;
    use herd_core::ClusterId;

    use super::*;

    fn node(head_address: Option<&str>) -> RayNodeAssignment {
        RayNodeAssignment {
            cluster_id: ClusterId::from_entropy([1; 8]),
            rank: 0,
            version: "2.40.0".into(),
            head_address: head_address.map(Into::into),
            resources: RayResources {
                num_cpus: 8,
                num_gpus: 2,
                memory_bytes: 10 << 30,
                object_store_bytes: 4 << 30,
                custom: BTreeMap::from([("herd-gpu:RTX-4090".to_owned(), 2)]),
            },
            limits: Default::default(),
            epoch: 1,
            node_ip: None,
        }
    }

    fn value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
        args.iter().position(|a| a == flag).map(|i| args[i + 1].as_str())
    }

    const PORTS: Ports = Ports {
        gcs: 40001,
        dashboard: 40002,
        client_server: 40003,
        dashboard_agent: 40004,
        dashboard_agent_grpc: 40005,
        node_manager: 40006,
        object_manager: 40007,
        metrics_export: 40008,
        runtime_env_agent: 40009,
    };

    #[test]
    fn the_head_offers_its_lease_and_keeps_the_dashboard_on_loopback() {
        let args = start_args(&node(None), "10.0.0.5", &PORTS, std::path::Path::new("/tmp/s"));
        assert!(args.contains(&"--head".to_owned()) && args.contains(&"--block".to_owned()));
        assert_eq!(value(&args, "--num-cpus"), Some("8"));
        assert_eq!(value(&args, "--num-gpus"), Some("2"));
        assert_eq!(value(&args, "--memory"), Some("10737418240"));
        assert_eq!(value(&args, "--object-store-memory"), Some("4294967296"));
        assert_eq!(value(&args, "--resources"), Some(r#"{"herd-gpu:RTX-4090":2}"#));
        assert_eq!(value(&args, "--node-ip-address"), Some("10.0.0.5"));
        assert_eq!(value(&args, "--dashboard-host"), Some("127.0.0.1"));
        assert_eq!(value(&args, "--port"), Some("40001"));
        assert_eq!(value(&args, "--dashboard-port"), Some("40002"));
        assert_eq!(value(&args, "--address"), None);
    }

    #[test]
    fn a_worker_joins_the_head_and_opens_no_dashboard() {
        let args = start_args(&node(Some("10.0.0.5:40001")), "10.0.0.6", &PORTS, std::path::Path::new("/tmp/s"));
        assert_eq!(value(&args, "--address"), Some("10.0.0.5:40001"));
        assert!(!args.contains(&"--head".to_owned()));
        assert_eq!(value(&args, "--dashboard-port"), None);
        assert_eq!(value(&args, "--dashboard-agent-listen-port"), Some("40004"), "no clash with a head on this host");
        assert_eq!(value(&args, "--raylet-socket-name"), Some("/tmp/s/raylet"));
        assert_eq!(value(&args, "--plasma-store-socket-name"), Some("/tmp/s/plasma"));
    }

    #[test]
    fn picked_ports_are_distinct_and_outside_the_ephemeral_range() {
        let p = Ports::pick().unwrap();
        let mut all = [
            p.gcs,
            p.dashboard,
            p.client_server,
            p.dashboard_agent,
            p.dashboard_agent_grpc,
            p.node_manager,
            p.object_manager,
            p.metrics_export,
            p.runtime_env_agent,
        ];
        all.sort();
        assert!(all.windows(2).all(|w| w[0] != w[1]), "{p:?}");
        assert!(all.iter().all(|port| PORT_RANGE.contains(port)), "{p:?}");
    }
}
