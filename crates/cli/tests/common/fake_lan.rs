//! Stand-ins for what a supplier's machine can reach, made by the test itself and removed
//! when dropped: a network namespace holding a LAN address and the cloud metadata address
//! (routed from this host through a veth pair, so no test packet ever leaves the machine),
//! and a server of the supplier's own on every host address.

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

/// What each stand-in server answers, so a test tells who it reached.
pub const LAN_SECRET: &str = "lan-secret";
pub const HOST_SECRET: &str = "host-secret";
/// The LAN address and the metadata address inside the namespace.
pub const LAN_ADDR: &str = "10.231.7.5";
pub const METADATA_ADDR: &str = "169.254.169.254";

fn sh(command: &str) {
    let status = Command::new("sh").args(["-c", command]).status().expect("sh runs");
    assert!(status.success(), "`{command}` failed");
}

pub struct FakeLan {
    ns: String,
    veth: String,
    server: Child,
}

impl FakeLan {
    /// Both addresses serve `LAN_SECRET` on port 80.
    pub fn start(tag: &str) -> FakeLan {
        super::install::apt_install(&["/sbin/ip"], &["iproute2"]).expect("iproute2 installs");
        let ns = format!("herd-lan-{tag}");
        let (veth, peer) = (format!("hl{tag}"), format!("hp{tag}"));
        sh(&format!("ip netns add {ns}"));
        sh(&format!("ip link add {veth} type veth peer name {peer} && ip link set {peer} netns {ns}"));
        sh(&format!("ip addr add 10.231.7.1/32 dev {veth} && ip link set {veth} up"));
        sh(&format!(
            "ip netns exec {ns} sh -c 'ip link set lo up && ip link set {peer} up \
             && ip addr add {LAN_ADDR}/32 dev {peer} && ip addr add {METADATA_ADDR}/32 dev {peer} \
             && ip route add default dev {peer}'"
        ));
        // `replace`: a run killed before its clean-up may have left the routes behind.
        sh(&format!("ip route replace {LAN_ADDR}/32 dev {veth} && ip route replace {METADATA_ADDR}/32 dev {veth}"));
        let server = Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-c"])
            .arg(format!(
                "import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                 s.bind(('0.0.0.0', 80)); s.listen(16)\n\
                 while True:\n    c, _ = s.accept(); c.sendall(b'{LAN_SECRET}\\n'); c.close()\n"
            ))
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 runs in the namespace");
        let lan = FakeLan { ns, veth, server };
        super::wait_until_serving(&format!("{LAN_ADDR}:80"));
        lan
    }
}

impl Drop for FakeLan {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("sh")
            .args(["-c", &format!("ip link del {} 2>/dev/null; ip netns del {} 2>/dev/null", self.veth, self.ns)])
            .status();
    }
}

/// A server of the supplier's on 0.0.0.0 (every address of this host), answering
/// `HOST_SECRET`; runs until the test process ends. Returns its port.
pub fn host_server() -> u16 {
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(format!("{HOST_SECRET}\n").as_bytes());
        }
    });
    port
}

/// This host's address on its default route (found without sending anything).
pub fn host_address() -> String {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    socket.connect("203.0.113.1:9").unwrap();
    socket.local_addr().unwrap().ip().to_string()
}
