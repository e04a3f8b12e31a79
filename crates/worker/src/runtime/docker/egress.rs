//! The egress policy of task containers: customer code reaches the public internet (and the
//! lease's own containers), never the supplier's machine or networks.
//!
//! Refused, whatever the routing table says: every address of this host (the lease bridge's
//! gateway, `docker0`, the LAN address, loopback), RFC 1918, CGNAT, link-local (cloud
//! metadata at 169.254.169.254), multicast and reserved ranges, other Docker networks (they
//! live in those ranges; a port another container publishes is DNATed to one), and all IPv6
//! (lease networks have no IPv6; this also covers ULA and link-local).
//!
//! The rules live in chains of this device's own (`HERD-OUT-<device>` for forwarded traffic,
//! jumped to from Docker's `DOCKER-USER`; `HERD-IN-<device>` for traffic to the host itself,
//! jumped to from `INPUT`), with one pair of jumps per lease bridge, each labelled with a
//! comment naming the device. Nothing else is ever touched: every rule herd deletes is one it
//! finds by its own label. The chains are refilled atomically (`iptables-restore --noflush`)
//! at start; jumps are added before a lease's first container starts and removed with the
//! lease's network; the chains go when the agent stops.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// IPv4 destinations no task container may open a connection to (besides this host's own
/// addresses, which `HERD-IN` refuses).
pub const REFUSED_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot install the egress policy of task containers: {0}. It keeps customer code off this machine and its \
     networks, so the docker runtime needs it: run the agent as root (or with CAP_NET_ADMIN) on a host where \
     Docker manages iptables, or, knowing that containers may then reach your LAN, pass --no-egress-policy"
)]
pub struct EgressError(pub String);

/// This device's egress chains and the label on every rule it adds.
#[derive(Debug, Clone)]
pub struct EgressPolicy {
    out_chain: String,
    in_chain: String,
    label: String,
}

async fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<String, String> {
    let mut command = Command::new(program);
    command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    command.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = command.spawn().map_err(|e| format!("cannot run {program}: {e}"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).await.map_err(|e| format!("{program}: {e}"))?;
    }
    let output = child.wait_with_output().await.map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// `iptables` (or `ip6tables`), waiting for the xtables lock other programs may hold.
async fn xtables(v6: bool, args: &[&str]) -> Result<String, String> {
    let program = if v6 { "ip6tables" } else { "iptables" };
    let mut full = vec!["-w", "5"];
    full.extend_from_slice(args);
    run(program, &full, None).await
}

impl EgressPolicy {
    /// Creates (or refills) this device's chains. Fails if the firewall cannot be managed.
    pub async fn install(device: &herd_core::Address) -> Result<EgressPolicy, EgressError> {
        let tag = device.short();
        let policy = EgressPolicy {
            out_chain: format!("HERD-OUT-{tag}"),
            in_chain: format!("HERD-IN-{tag}"),
            label: format!("herd-egress:{tag}"),
        };
        xtables(false, &["-S", "DOCKER-USER"]).await.map_err(|e| {
            EgressError(format!(
                "Docker's DOCKER-USER chain is not there ({e}); is the engine running with iptables on?"
            ))
        })?;
        run("iptables-restore", &["-w", "5", "--noflush"], Some(&policy.v4_ruleset())).await.map_err(EgressError)?;
        // IPv6: lease networks have none, but the bridge has link-local addresses.
        if let Err(error) = run("ip6tables-restore", &["-w", "5", "--noflush"], Some(&policy.v6_ruleset())).await {
            tracing::warn!(%error, "no IPv6 firewall: lease networks have no IPv6 routes, link-local aside");
        }
        Ok(policy)
    }

    /// The chains' contents (declaring a chain in `--noflush` mode empties it first, so the
    /// refill is atomic).
    fn v4_ruleset(&self) -> String {
        let (out, inp, label) = (&self.out_chain, &self.in_chain, &self.label);
        let mut rules = vec![
            "*filter".to_owned(),
            format!(":{out} - [0:0]"),
            format!(":{inp} - [0:0]"),
            format!("-A {out} -m conntrack --ctstate ESTABLISHED,RELATED -m comment --comment {label} -j RETURN"),
        ];
        for range in REFUSED_V4 {
            rules.push(format!(
                "-A {out} -d {range} -m comment --comment {label} -j REJECT --reject-with icmp-admin-prohibited"
            ));
        }
        rules.extend([
            format!("-A {inp} -m conntrack --ctstate ESTABLISHED,RELATED -m comment --comment {label} -j RETURN"),
            format!("-A {inp} -m comment --comment {label} -j REJECT --reject-with icmp-admin-prohibited"),
            "COMMIT".to_owned(),
        ]);
        rules.join("\n") + "\n"
    }

    fn v6_ruleset(&self) -> String {
        let (out, inp, label) = (&self.out_chain, &self.in_chain, &self.label);
        [
            "*filter".to_owned(),
            format!(":{out} - [0:0]"),
            format!(":{inp} - [0:0]"),
            format!("-A {out} -m comment --comment {label} -j REJECT --reject-with icmp6-adm-prohibited"),
            format!("-A {inp} -m comment --comment {label} -j REJECT --reject-with icmp6-adm-prohibited"),
            "COMMIT".to_owned(),
        ]
        .join("\n")
            + "\n"
    }

    /// The jumps that put one lease bridge under the policy: (table chain, rule) for IPv4 and
    /// IPv6. Traffic between the lease's own containers (in and out of the same bridge) stays
    /// allowed.
    fn jumps(&self, bridge: &str) -> Vec<(bool, &'static str, Vec<String>)> {
        let label = format!("{}:{bridge}", self.label);
        let rule = |extra: &[&str], target: &str| {
            let mut rule: Vec<String> = vec!["-i".into(), bridge.into()];
            rule.extend(extra.iter().map(|s| s.to_string()));
            rule.extend(["-m".into(), "comment".into(), "--comment".into(), label.clone(), "-j".into(), target.into()]);
            rule
        };
        vec![
            // Inserted in this order at position 1: the bridge-local RETURN ends up first.
            (false, "DOCKER-USER", rule(&[], &self.out_chain)),
            (false, "DOCKER-USER", rule(&["-o", bridge], "RETURN")),
            (false, "INPUT", rule(&[], &self.in_chain)),
            (true, "FORWARD", rule(&[], &self.out_chain)),
            (true, "INPUT", rule(&[], &self.in_chain)),
        ]
    }

    /// Puts a lease bridge under the policy (idempotent). Called before the lease's first
    /// container starts on it.
    pub async fn guard(&self, bridge: &str) -> Result<(), EgressError> {
        for (v6, chain, rule) in self.jumps(bridge) {
            let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
            let mut check = vec!["-C", chain];
            check.extend(&rule);
            if xtables(v6, &check).await.is_ok() {
                continue;
            }
            let mut insert = vec!["-I", chain, "1"];
            insert.extend(&rule);
            match xtables(v6, &insert).await {
                Ok(_) => {}
                Err(error) if v6 => tracing::debug!(%error, "no IPv6 rule for a lease bridge"),
                Err(error) => return Err(EgressError(error)),
            }
        }
        Ok(())
    }

    /// Takes a lease bridge's jumps out (its network is gone).
    pub async fn unguard(&self, bridge: &str) {
        for (v6, chain, rule) in self.jumps(bridge) {
            let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
            let mut delete = vec!["-D", chain];
            delete.extend(&rule);
            // Repeated in case an older agent added a rule twice.
            while xtables(v6, &delete).await.is_ok() {}
        }
    }

    /// The bridges this device has jumps for (from the rules' labels).
    pub async fn guarded(&self) -> Vec<String> {
        let prefix = format!("{}:", self.label);
        let mut bridges = Vec::new();
        for (v6, chain) in [(false, "DOCKER-USER"), (false, "INPUT"), (true, "FORWARD"), (true, "INPUT")] {
            let Ok(rules) = xtables(v6, &["-S", chain]).await else { continue };
            for rule in rules.lines() {
                let Some(at) = rule.find(&prefix) else { continue };
                // `-S` quotes a comment: `--comment "herd-egress:TAG:BRIDGE"`.
                let bridge: String =
                    rule[at + prefix.len()..].chars().take_while(|c| !c.is_whitespace() && *c != '"').collect();
                if !bridges.contains(&bridge) {
                    bridges.push(bridge);
                }
            }
        }
        bridges
    }

    /// Removes the jumps of bridges not in `keep` (leftovers of a crash).
    pub async fn sweep(&self, keep: &[String]) {
        for bridge in self.guarded().await {
            if !keep.contains(&bridge) {
                self.unguard(&bridge).await;
            }
        }
    }

    /// Removes every jump and both chains (the agent stops with no lease network left).
    pub async fn uninstall(&self) {
        self.sweep(&[]).await;
        for v6 in [false, true] {
            for chain in [&self.out_chain, &self.in_chain] {
                let _ = xtables(v6, &["-F", chain]).await;
                let _ = xtables(v6, &["-X", chain]).await;
            }
        }
    }
}

/// A lease bridge's interface name (at most 15 bytes): unique per network name, so rules can
/// name it before the network exists.
pub fn bridge_name(network: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(network.as_bytes());
    format!("herd{}", &herd_core::hex::encode(&digest)[..11])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> EgressPolicy {
        EgressPolicy {
            out_chain: "HERD-OUT-abc".into(),
            in_chain: "HERD-IN-abc".into(),
            label: "herd-egress:abc".into(),
        }
    }

    #[test]
    fn the_ruleset_refuses_every_private_range_after_established_traffic() {
        let rules = policy().v4_ruleset();
        let lines: Vec<&str> = rules.lines().collect();
        assert_eq!(lines[0], "*filter");
        assert!(lines[3].contains("ESTABLISHED,RELATED") && lines[3].ends_with("-j RETURN"), "{rules}");
        for range in ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "224.0.0.0/4"]
        {
            assert!(rules.contains(&format!("-A HERD-OUT-abc -d {range} ")), "{range} missing");
        }
        assert!(rules.contains("-A HERD-IN-abc -m comment --comment herd-egress:abc -j REJECT"), "{rules}");
        assert_eq!(lines.last(), Some(&"COMMIT"));
    }

    #[test]
    fn bridge_names_fit_an_interface_name_and_differ_per_network() {
        let a = bridge_name("herd-c1-dev");
        assert_eq!(a.len(), 15);
        assert_ne!(a, bridge_name("herd-c2-dev"));
        let jumps = policy().jumps(&a);
        assert_eq!(jumps[1].2[..4], ["-i".to_owned(), a.clone(), "-o".to_owned(), a.clone()]);
        assert!(jumps.iter().all(|(_, _, rule)| rule.contains(&format!("herd-egress:abc:{a}"))));
    }
}
