//! The configurations `nebula` reads, rendered as YAML. Certificates and the host key are
//! inline (PEM), so one file — written mode 0600 — is everything a node needs.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A lighthouse (and relay) as nodes reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub overlay_ip: Ipv4Addr,
    /// Its underlay addresses, `HOST:PORT`.
    pub underlay: Vec<String>,
}

/// A lease node: a TUN with its overlay address, inbound traffic from its lease's group only.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// Fingerprints of certificates to refuse (revoked members of the lease).
    pub blocklist: Vec<String>,
    pub lighthouses: Vec<Peer>,
    /// The TUN's name (at most 15 bytes).
    pub tun_dev: String,
    /// The group inbound traffic must carry: the lease's.
    pub inbound_group: String,
}

/// The coordinator's lighthouse and relay: no TUN (it needs no privilege, and no lease node
/// can reach anything of the coordinator's through the overlay), only the UDP socket.
#[derive(Debug, Clone)]
pub struct LighthouseConfig {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub listen: std::net::SocketAddr,
    pub blocklist: Vec<String>,
}

fn any_rule() -> Value {
    json!({"port": "any", "proto": "any", "host": "any"})
}

impl NodeConfig {
    pub fn render(&self) -> String {
        let static_hosts: serde_json::Map<String, Value> =
            self.lighthouses.iter().map(|l| (l.overlay_ip.to_string(), json!(l.underlay))).collect();
        let lighthouse_ips: Vec<String> = self.lighthouses.iter().map(|l| l.overlay_ip.to_string()).collect();
        let config = json!({
            "pki": {
                "ca": self.ca_pem, "cert": self.cert_pem, "key": self.key_pem,
                "blocklist": self.blocklist,
                // Tunnels to a peer whose certificate is blocklisted or expired are torn down,
                // not kept until they idle out.
                "disconnect_invalid": true,
            },
            "static_host_map": static_hosts,
            "lighthouse": {"am_lighthouse": false, "interval": 10, "hosts": lighthouse_ips},
            // Port 0: any free port (several nodes may share a public address behind NAT).
            "listen": {"host": "0.0.0.0", "port": 0},
            "punchy": {"punch": true, "respond": true},
            "relay": {"relays": lighthouse_ips, "am_relay": false, "use_relays": true},
            "tun": {"disabled": false, "dev": self.tun_dev, "mtu": 1300},
            "logging": {"level": "info", "format": "json"},
            "firewall": {
                "conntrack": {"tcp_timeout": "12m", "udp_timeout": "3m", "default_timeout": "10m"},
                "outbound": [any_rule()],
                "inbound": [{"port": "any", "proto": "any", "group": self.inbound_group}],
            },
        });
        serde_yaml::to_string(&config).expect("a JSON value renders as YAML")
    }
}

impl LighthouseConfig {
    /// Lighthouse `index`'s configuration with a fresh key and a certificate from `authority`
    /// (valid from `now`, Unix seconds, for the CA's life).
    pub fn signed(authority: &crate::Authority, index: usize, listen: std::net::SocketAddr, now: i64) -> Self {
        let key = crate::HostKey::generate();
        let name = format!("lighthouse-{index}");
        let cert = authority.sign_host(&crate::authority::HostRequest {
            name: &name,
            ip: crate::plan::lighthouse_address(index),
            prefix: crate::plan::PREFIX,
            groups: vec!["lighthouse".into()],
            public_key: key.public(),
            not_before: now - crate::authority::CLOCK_SKEW_SECS,
            not_after: i64::MAX,
        });
        LighthouseConfig {
            ca_pem: authority.cert_pem(),
            cert_pem: cert.to_pem(),
            key_pem: key.private_pem(),
            listen,
            blocklist: Vec::new(),
        }
    }

    pub fn render(&self) -> String {
        let config = json!({
            "pki": {"ca": self.ca_pem, "cert": self.cert_pem, "key": self.key_pem, "blocklist": self.blocklist},
            "static_host_map": {},
            "lighthouse": {"am_lighthouse": true, "interval": 10},
            "listen": {"host": self.listen.ip().to_string(), "port": self.listen.port()},
            "punchy": {"punch": true, "respond": true},
            "relay": {"am_relay": true, "use_relays": false},
            "tun": {"disabled": true},
            "logging": {"level": "info", "format": "json"},
            "firewall": {"outbound": [any_rule()], "inbound": []},
        });
        serde_yaml::to_string(&config).expect("a JSON value renders as YAML")
    }
}

/// Writes a configuration (it holds a private key) to a file only its owner can read,
/// replacing any earlier one.
pub fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())
}
