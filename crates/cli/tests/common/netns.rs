//! Machines behind NAT, made by the test and removed when dropped: each is a network
//! namespace joined to this host by its own veth pair and nothing else. It reaches the host
//! (where the coordinator and its lighthouse listen) at its link's host address, and has no
//! route anywhere else — not to the other "machines", whose addresses are on other links —
//! which is what two homes behind NAT look like to each other.

use std::process::Command;

pub fn sh(command: &str) {
    let output = Command::new("sh").args(["-c", command]).output().expect("sh runs");
    assert!(output.status.success(), "`{command}` failed: {}", String::from_utf8_lossy(&output.stderr));
}

pub fn sh_ok(command: &str) -> bool {
    Command::new("sh").args(["-c", command]).output().is_ok_and(|o| o.status.success())
}

pub struct NatHost {
    pub ns: String,
    veth: String,
    /// This host's address on the link (what the machine dials).
    pub host_addr: String,
    /// The machine's own address on the link.
    pub addr: String,
}

impl NatHost {
    /// `subnet` (0..=255) picks the link's 10.235.SUBNET.0/24; unique per machine of a run.
    pub fn start(tag: &str, subnet: u8) -> NatHost {
        super::install::apt_install(&["/sbin/ip"], &["iproute2"]).expect("iproute2 installs");
        let ns = format!("herd-nat-{tag}");
        let (veth, peer) = (format!("hn{tag}"), format!("hm{tag}"));
        let (host_addr, addr) = (format!("10.235.{subnet}.1"), format!("10.235.{subnet}.2"));
        // A run killed before its clean-up may have left them behind.
        let _ = sh_ok(&format!("ip netns del {ns} 2>/dev/null; ip link del {veth} 2>/dev/null"));
        sh(&format!("ip netns add {ns}"));
        sh(&format!("ip link add {veth} type veth peer name {peer} && ip link set {peer} netns {ns}"));
        sh(&format!("ip addr add {host_addr}/24 dev {veth} && ip link set {veth} up"));
        sh(&format!(
            "ip netns exec {ns} sh -c 'ip link set lo up && ip addr add {addr}/24 dev {peer} && ip link set {peer} up'"
        ));
        NatHost { ns, veth, host_addr, addr }
    }

    /// A direct link to `other` (one LAN, 10.236.SUBNET.0/24), beside each one's link here.
    pub fn link_to(&self, other: &NatHost, subnet: u8) {
        let (a, b) = (format!("{}l", self.veth), format!("{}l", other.veth));
        sh(&format!("ip link add {a} netns {} type veth peer name {b} netns {}", self.ns, other.ns));
        sh(&format!(
            "ip netns exec {} sh -c 'ip addr add 10.236.{subnet}.1/24 dev {a} && ip link set {a} up'",
            self.ns
        ));
        sh(&format!(
            "ip netns exec {} sh -c 'ip addr add 10.236.{subnet}.2/24 dev {b} && ip link set {b} up'",
            other.ns
        ));
    }

    /// The machine's address on a LAN made by `link_to`, if it has one.
    pub fn lan_addr(&self) -> Option<String> {
        let output = self.command("ip").args(["-4", "-o", "addr", "show"]).output().ok()?;
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .find(|w| w.starts_with("10.236."))
            .map(|a| a.split('/').next().unwrap_or(a).to_owned())
    }

    /// `ip netns exec NS` followed by `program`.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns, program]);
        command
    }

    /// Runs a shell command inside; true if it succeeded.
    pub fn run_ok(&self, script: &str) -> bool {
        self.command("sh").args(["-c", script]).output().is_ok_and(|o| o.status.success())
    }
}

impl Drop for NatHost {
    fn drop(&mut self) {
        let _ = sh_ok(&format!(
            "for p in $(ip netns pids {ns}); do kill -9 $p; done; ip netns del {ns}; ip link del {veth}",
            ns = self.ns,
            veth = self.veth
        ));
    }
}
