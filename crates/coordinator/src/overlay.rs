//! The coordinator's side of lease overlays: it is the network's certificate authority, runs
//! the lighthouse and relay (a `nebula` with no TUN), and keeps every lease's members in step
//! with the database — a certificate for each current node, the lease's revoked ones on every
//! member's blocklist — by (re)sending `JoinOverlay`. Like the Ray messages, re-sending is
//! harmless: the agent rewrites its configuration and reloads only what changed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use herd_core::{Address, ClusterId};
use herd_overlay::authority::HostRequest;
use herd_overlay::{plan, Authority, HostKey, LighthouseConfig, Nebula};
use herd_proto::worker::{OverlayAssignment, OverlayLighthouse, ServerMessage};

use crate::app::{now, App};
use crate::store::{IssuedCert, StoreResult};

/// Certificates outlive their lease's end by this much, so an extension made at the last
/// moment never finds the network already cut.
const CERT_GRACE_MS: i64 = 3_600_000;
/// A lighthouse that is not up by then does not start the coordinator.
const LIGHTHOUSE_START_MAX: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct OverlayConfig {
    /// Where the lighthouse and relay listen (UDP); port 0 picks a free one.
    pub listen: SocketAddr,
    /// How workers reach it (`HOST:PORT`, several for a real network). Empty: the host each
    /// worker reaches the coordinator at, with the listening port.
    pub public: Vec<String>,
    /// The `nebula` program.
    pub nebula: PathBuf,
}

impl OverlayConfig {
    pub fn new(listen: SocketAddr) -> OverlayConfig {
        OverlayConfig { listen, public: Vec::new(), nebula: PathBuf::from(herd_overlay::NEBULA) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error(transparent)]
    Authority(#[from] herd_overlay::AuthorityError),
    #[error("the overlay lighthouse cannot start: {0}")]
    Lighthouse(String),
}

pub struct Overlay {
    authority: Authority,
    ca_pem: String,
    lighthouses: Vec<OverlayLighthouse>,
    /// Taken at shutdown (`stop`); dropping it kills the lighthouse too.
    lighthouse: std::sync::Mutex<Option<Nebula>>,
    pub lighthouse_status: tokio::sync::watch::Receiver<herd_overlay::NebulaStatus>,
    pub listen: SocketAddr,
    /// Random per start of the lighthouse, plus its restarts: see `relay_generation`.
    generation_base: u64,
}

/// Where the overlay CA of a database lives: beside the database file (mode 0600); None for
/// an in-memory database (its CA lives as long as the process).
pub fn ca_key_path(db_url: &str) -> Option<PathBuf> {
    crate::books::key_path_for(db_url)
        .map(|ledger| PathBuf::from(ledger.display().to_string().replace(".ledger.key", ".overlay-ca.key")))
}

impl Overlay {
    /// Loads (or makes) the CA and starts the lighthouse; its working files go in `dir`.
    pub async fn start(config: &OverlayConfig, ca_key: Option<&Path>, dir: &Path) -> Result<Overlay, OverlayError> {
        let at = now().0 / 1000;
        let authority = match ca_key {
            Some(path) => Authority::load_or_create(path, "herd", at)?,
            None => Authority::create("herd", at),
        };
        let listen = match config.listen.port() {
            0 => free_udp_port(config.listen).map_err(|e| OverlayError::Lighthouse(e.to_string()))?,
            _ => config.listen,
        };
        let key = HostKey::generate();
        let ip = plan::lighthouse_address(0);
        let cert = authority.sign_host(&HostRequest {
            name: "lighthouse-0",
            ip,
            prefix: plan::PREFIX,
            groups: vec!["lighthouse".into()],
            public_key: key.public(),
            not_before: at - herd_overlay::authority::CLOCK_SKEW_SECS,
            not_after: i64::MAX,
        });
        let lighthouse = LighthouseConfig {
            ca_pem: authority.cert_pem(),
            cert_pem: cert.to_pem(),
            key_pem: key.private_pem(),
            listen,
            blocklist: Vec::new(),
        };
        std::fs::create_dir_all(dir).map_err(|e| OverlayError::Lighthouse(format!("{}: {e}", dir.display())))?;
        let path = dir.join("lighthouse.yml");
        write_private(&path, &lighthouse.render()).map_err(|e| OverlayError::Lighthouse(e.to_string()))?;
        let nebula = Nebula::start(&config.nebula, &path, "lighthouse");
        nebula.wait_up(LIGHTHOUSE_START_MAX).await.map_err(OverlayError::Lighthouse)?;
        let underlay =
            if config.public.is_empty() { vec![format!(":{}", listen.port())] } else { config.public.clone() };
        tracing::info!(%listen, ?underlay, "overlay lighthouse and relay running");
        Ok(Overlay {
            ca_pem: authority.cert_pem(),
            authority,
            lighthouses: vec![OverlayLighthouse { overlay_ip: ip.to_string(), underlay }],
            lighthouse_status: nebula.status(),
            lighthouse: std::sync::Mutex::new(Some(nebula)),
            listen,
            generation_base: rand::random::<u64>() >> 1,
        })
    }
}

impl Overlay {
    /// Stops the lighthouse and relay (the coordinator is shutting down): a stopped
    /// coordinator must not keep relaying, whoever still holds the app.
    pub async fn stop(&self) {
        let lighthouse = self.lighthouse.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(lighthouse) = lighthouse {
            lighthouse.stop().await;
        }
    }

    /// Changes when the lighthouse restarted (or the coordinator did).
    pub fn relay_generation(&self) -> u64 {
        self.generation_base + u64::from(self.lighthouse_status.borrow().restarts)
    }
}

/// After the lighthouse/relay restarted, every overlay lease's nodes are told to restart
/// their nebula: Nebula 1.6 otherwise keeps relaying through state the restarted relay lost,
/// and traffic between relayed nodes stays cut for tens of seconds.
pub async fn after_relay_restart(app: &App, seen: &mut u64) -> StoreResult<()> {
    let Some(overlay) = &app.overlay else { return Ok(()) };
    let generation = overlay.relay_generation();
    if *seen == generation {
        return Ok(());
    }
    let first = *seen == 0;
    *seen = generation;
    if first {
        return Ok(());
    }
    let clusters = app.store.running_overlay_leases().await?;
    tracing::info!(leases = clusters.len(), "the overlay relay restarted; its leases' nodes restart their nebula");
    for cluster in clusters {
        sync(app, &cluster).await?;
    }
    Ok(())
}

/// Writes a file only its owner can read (it holds a private key).
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())
}

fn free_udp_port(listen: SocketAddr) -> std::io::Result<SocketAddr> {
    std::net::UdpSocket::bind(listen)?.local_addr()
}

/// Brings a lease's overlay in step with its membership: gives it a block when it first
/// needs one, signs a certificate for each current member that lacks a valid one, revokes
/// those of members that left, and sends every member its assignment with the blocklist.
/// Leases of devices that cannot all join (simulated, or without Nebula) stay off the
/// overlay: their nodes use their advertised addresses, as single-node leases do.
pub async fn sync(app: &App, cluster: &ClusterId) -> StoreResult<()> {
    let Some(overlay) = &app.overlay else { return Ok(()) };
    let at = now();
    let Some(lease) = app.store.overlay_lease(cluster, at).await? else { return Ok(()) };
    let block = match lease.block {
        Some(block) => block,
        None if lease.running && app.store.lease_can_join_overlay(cluster).await? => {
            match app.store.assign_overlay_block(cluster, plan::MAX_BLOCK).await? {
                Some(block) => block,
                None => {
                    tracing::error!(%cluster, "every overlay address block is taken; this lease runs without one");
                    return Ok(());
                }
            }
        }
        None => return Ok(()),
    };
    if !lease.running {
        let all: Vec<String> = lease.active.iter().map(|c| c.fingerprint.clone()).collect();
        return app.store.revoke_overlay_certs(&all, at).await;
    }
    let not_after_ms = lease.expires_at.0 + CERT_GRACE_MS;
    let group = plan::lease_group(cluster.as_str());
    let mut next_host = None;
    let mut changed = false;
    for member in &lease.members {
        let Some(key_hex) = &member.key else {
            tracing::warn!(%cluster, device = %member.device, "a member of an overlay lease has no overlay key; \
                it cannot join until its agent reports one");
            continue;
        };
        let Some(public_key) = herd_core::hex::decode_array::<32>(key_hex) else { continue };
        let current = lease.active.iter().find(|c| c.device == member.device && c.epoch == member.epoch);
        let (host, retire) = match current {
            // Certificates carry whole seconds.
            Some(cert) if cert.public_key == *key_hex && cert.not_after / 1000 >= not_after_ms / 1000 => continue,
            // Renewal (the lease was extended): same key, same address, the old one not blocked.
            Some(cert) if cert.public_key == *key_hex => (cert.host, Some((cert.fingerprint.as_str(), false))),
            // The agent restarted with a new key: the old certificate is revoked.
            Some(cert) => (cert.host, Some((cert.fingerprint.as_str(), true))),
            None => {
                let host = match next_host {
                    Some(host) => host,
                    None => app.store.next_overlay_host(cluster).await?,
                };
                next_host = Some(host + 1);
                (host, None)
            }
        };
        let Some(ip) = plan::lease_address(block, host) else {
            tracing::error!(%cluster, host, "the lease's overlay block is full; the node cannot join");
            continue;
        };
        let cert = overlay.authority.sign_host(&HostRequest {
            name: member.device.as_str(),
            ip,
            prefix: plan::PREFIX,
            groups: vec![group.clone()],
            public_key,
            not_before: at.0 / 1000 - herd_overlay::authority::CLOCK_SKEW_SECS,
            not_after: not_after_ms / 1000,
        });
        let issued = IssuedCert {
            fingerprint: cert.fingerprint(),
            device: member.device.clone(),
            epoch: member.epoch,
            host,
            address: ip.to_string(),
            public_key: key_hex.clone(),
            cert: cert.to_pem(),
            not_after: cert.details.not_after * 1000,
        };
        app.store.issue_overlay_cert(cluster, &issued, retire, at).await?;
        tracing::info!(%cluster, device = %member.device, rank = member.rank, address = %ip, "overlay certificate issued");
        changed = true;
    }
    // Members that left (lost, replaced) are revoked: every remaining member refuses them.
    let leavers: Vec<String> = lease
        .active
        .iter()
        .filter(|c| !lease.members.iter().any(|m| m.device == c.device && m.epoch == c.epoch))
        .map(|c| c.fingerprint.clone())
        .collect();
    if !leavers.is_empty() {
        app.store.revoke_overlay_certs(&leavers, at).await?;
        tracing::info!(%cluster, revoked = leavers.len(), "overlay certificates of departed nodes revoked");
    }
    let lease = if changed || !leavers.is_empty() {
        match app.store.overlay_lease(cluster, at).await? {
            Some(lease) => lease,
            None => return Ok(()),
        }
    } else {
        lease
    };
    for cert in &lease.active {
        let assignment = OverlayAssignment {
            cluster_id: cluster.clone(),
            epoch: cert.epoch,
            address: format!("{}/{}", cert.address, plan::PREFIX),
            cert: cert.cert.clone(),
            ca: overlay.ca_pem.clone(),
            lighthouses: overlay.lighthouses.clone(),
            group: group.clone(),
            blocklist: lease.blocklist.clone(),
            relay_generation: overlay.relay_generation(),
        };
        if !app.hub.send(&cert.device, ServerMessage::JoinOverlay(assignment)) {
            tracing::info!(device = %cert.device, %cluster, "worker not connected; it joins the overlay when it reconnects");
        }
    }
    Ok(())
}

/// A (re)connected worker: the overlay lease it holds is brought in step (its agent may have
/// restarted with a new key) and it gets its assignment before its Ray node and tasks.
pub async fn adopt(app: &App, device: &Address) -> StoreResult<()> {
    if app.overlay.is_none() {
        return Ok(());
    }
    match app.store.device_overlay_lease(device).await? {
        Some(cluster) => sync(app, &cluster).await,
        None => Ok(()),
    }
}
