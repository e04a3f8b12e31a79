//! Every lease gets its own private overlay network, built on Nebula (the engine: per-host
//! certificates, lighthouses for discovery, UDP hole punching, relays, a firewall by
//! certificate group). This crate is herd's side of it, with no knowledge of leases' storage:
//!
//! - [`cert`]: Nebula's v1 certificate format (protobuf, Ed25519-signed), written here so the
//!   coordinator signs in-process — no `nebula-cert` binary, no CA key on a command line;
//! - [`authority`]: the coordinator's CA (key file 0600 beside the database) and host signing;
//! - [`plan`]: the overlay's address plan (a /24 per lease inside one /10);
//! - [`config`]: the node and lighthouse configurations `nebula` reads;
//! - [`process`]: `nebula` started, watched (up, peers direct or relayed), reloaded, restarted
//!   on exit and killed with its parent.

pub mod authority;
pub mod cert;
pub mod config;
pub mod plan;
pub mod process;

pub use authority::{Authority, AuthorityError};
pub use cert::{Certificate, CertificateError, Details, HostKey};
pub use config::{LighthouseConfig, NodeConfig, Peer};
pub use process::{probe_node_support, Nebula, NebulaStatus, PeerPath};

/// The program, found on `PATH` (Debian/Ubuntu: `apt-get install nebula`).
pub const NEBULA: &str = "nebula";

/// What to tell someone whose machine has no `nebula`.
pub const INSTALL_HINT: &str = "install Nebula (Debian/Ubuntu: `apt-get install nebula`; elsewhere a release from \
     https://github.com/slackhq/nebula/releases) to join multi-node leases";
