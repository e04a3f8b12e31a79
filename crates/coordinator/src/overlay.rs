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
use herd_overlay::{plan, Authority, LighthouseConfig, Nebula};
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
    /// Lighthouses and relays the operator runs elsewhere (`herd operator overlay-lighthouse`
    /// writes their configurations): index (1..) and how workers reach it.
    pub extra_lighthouses: Vec<(usize, Vec<String>)>,
}

impl OverlayConfig {
    pub fn new(listen: SocketAddr) -> OverlayConfig {
        OverlayConfig {
            listen,
            public: Vec::new(),
            nebula: PathBuf::from(herd_overlay::NEBULA),
            extra_lighthouses: Vec::new(),
        }
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
        let ip = plan::lighthouse_address(0);
        let lighthouse = LighthouseConfig::signed(&authority, 0, listen, at);
        std::fs::create_dir_all(dir).map_err(|e| OverlayError::Lighthouse(format!("{}: {e}", dir.display())))?;
        let path = dir.join("lighthouse.yml");
        herd_overlay::config::write_private(&path, &lighthouse.render())
            .map_err(|e| OverlayError::Lighthouse(e.to_string()))?;
        let nebula = Nebula::start(&config.nebula, &path, "lighthouse");
        nebula.wait_up(LIGHTHOUSE_START_MAX).await.map_err(OverlayError::Lighthouse)?;
        let underlay =
            if config.public.is_empty() { vec![format!(":{}", listen.port())] } else { config.public.clone() };
        tracing::info!(%listen, ?underlay, extra = config.extra_lighthouses.len(), "overlay lighthouse and relay running");
        let mut lighthouses = vec![OverlayLighthouse { overlay_ip: ip.to_string(), underlay }];
        for (index, underlay) in &config.extra_lighthouses {
            lighthouses.push(OverlayLighthouse {
                overlay_ip: plan::lighthouse_address(*index).to_string(),
                underlay: underlay.clone(),
            });
        }
        Ok(Overlay {
            ca_pem: authority.cert_pem(),
            authority,
            lighthouses,
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

#[cfg(test)]
impl Overlay {
    /// A CA in memory and no lighthouse process (unit tests of the membership logic).
    pub fn for_tests() -> Overlay {
        let authority = Authority::create("herd-test", now().0 / 1000);
        let (_, status) = tokio::sync::watch::channel(herd_overlay::NebulaStatus::default());
        Overlay {
            ca_pem: authority.cert_pem(),
            authority,
            lighthouses: vec![OverlayLighthouse {
                overlay_ip: plan::lighthouse_address(0).to_string(),
                underlay: vec![":4242".into()],
            }],
            lighthouse_status: status,
            listen: "127.0.0.1:4242".parse().expect("an address"),
            lighthouse: std::sync::Mutex::new(None),
            generation_base: 1,
        }
    }
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

#[cfg(test)]
mod tests {
    use herd_core::{Address, ClusterId, Timestamp};
    use herd_overlay::Certificate;
    use herd_proto::worker::{OverlayAssignment, OverlaySupport, ServerMessage};
    use tokio::sync::mpsc::Receiver;
    use tokio::time::Instant;

    use super::*;
    use crate::test_support::{admit, hello, lease_with_job, temp_store};

    fn joined(outbox: &mut Receiver<ServerMessage>) -> Option<OverlayAssignment> {
        let mut last = None;
        while let Ok(message) = outbox.try_recv() {
            if let ServerMessage::JoinOverlay(assignment) = message {
                last = Some(assignment);
            }
        }
        last
    }

    async fn ready(store: &crate::store::Store, owner: &Address, seed: u8) -> Address {
        let device = Address::from_public_key(&[seed; 32]);
        admit(store, &herd_proto::worker::HelloPayload { simulated: false, ..hello(&device, owner) }).await;
        let key = herd_core::hex::encode(&herd_overlay::HostKey::generate().public());
        store.record_overlay_support(&device, Some(&OverlaySupport::Ready { public_key: key })).await.unwrap();
        device
    }

    /// A lease's certificates follow its life: signed for each member by the CA, renewed with
    /// the same address on extend (not blocklisted), re-signed and the old one blocklisted when
    /// an agent restarts with a new key, all revoked at the end; the block is free again.
    #[tokio::test]
    async fn a_leases_certificates_follow_its_membership() {
        let (_dir, store, url) = temp_store().await;
        let owner = Address::from_public_key(&[1; 32]);
        store.register_account(&owner, "hash", Timestamp(0)).await.unwrap();
        let (a, b) = (ready(&store, &owner, 2).await, ready(&store, &owner, 3).await);
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let market = crate::market::SharedMarket::load(&store, true).await.unwrap();
        let books = crate::books::SharedBooks::load(&store, None).await.unwrap();
        let config = crate::app::CoordinatorConfig::new(url, "127.0.0.1:0".parse().unwrap());
        let app = App::new(store.clone(), market, books, config, Some(Overlay::for_tests()), shutdown);
        let ca = app.overlay.as_ref().unwrap().authority.cert().details.public_key;
        let (_ca, mut a_out) = app.hub.attach(&a, Instant::now());
        let (_cb, mut b_out) = app.hub.attach(&b, Instant::now());

        let (cluster, _job) = lease_with_job(&store, &owner, &[(a.clone(), 1_000), (b.clone(), 1_000)], 0, now()).await;
        sync(&app, &cluster).await.unwrap();
        let (first_a, first_b) = (joined(&mut a_out).unwrap(), joined(&mut b_out).unwrap());
        assert_eq!((first_a.address.as_str(), first_b.address.as_str()), ("100.64.1.1/10", "100.64.1.2/10"));
        let cert = Certificate::from_pem(&first_a.cert).unwrap();
        cert.verify(&ca).unwrap();
        assert_eq!(cert.details.groups, vec![plan::lease_group(cluster.as_str())]);
        assert!(first_a.blocklist.is_empty());

        // In step already: the same assignment, nothing signed again.
        sync(&app, &cluster).await.unwrap();
        assert_eq!(joined(&mut a_out), Some(first_a.clone()));

        // Extended: renewed to the new end, same address, the old one not blocklisted.
        store.extend_cluster(&cluster, 3_600_000).await.unwrap().unwrap();
        sync(&app, &cluster).await.unwrap();
        let renewed = joined(&mut a_out).unwrap();
        let renewed_cert = Certificate::from_pem(&renewed.cert).unwrap();
        assert_eq!(renewed.address, first_a.address);
        assert_eq!(renewed_cert.details.not_after, cert.details.not_after + 3_600);
        assert!(renewed.blocklist.is_empty(), "a renewal revokes nothing");
        let renewed_b = joined(&mut b_out).unwrap();

        // b's agent restarted with a new key: a new certificate, the old one refused by a.
        let key = herd_core::hex::encode(&herd_overlay::HostKey::generate().public());
        store.record_overlay_support(&b, Some(&OverlaySupport::Ready { public_key: key })).await.unwrap();
        sync(&app, &cluster).await.unwrap();
        let b_again = joined(&mut b_out).unwrap();
        assert_eq!(b_again.address, first_b.address);
        let old_b = Certificate::from_pem(&renewed_b.cert).unwrap().fingerprint();
        assert_eq!(joined(&mut a_out).unwrap().blocklist, vec![old_b]);

        // The lease ends: everything is revoked, and block 1 is free for the next lease.
        store.terminate_cluster(&cluster, "test", now()).await.unwrap().unwrap();
        sync(&app, &cluster).await.unwrap();
        let ended = store.overlay_lease(&cluster, now()).await.unwrap().unwrap();
        assert!(ended.active.is_empty() && ended.blocklist.len() == 3, "{:?}", ended.blocklist);
        let next = ClusterId::from_entropy([42; 8]);
        let devices = [(a.clone(), 1_000), (b.clone(), 1_000)];
        let new = crate::store::NewCluster {
            id: &next,
            owner: &owner,
            hardware: "CPU",
            country: None,
            devices: &devices,
            price_per_hour_micros: 2_000,
            asset: herd_core::Asset::Usdc,
            request: r#"{"nodes": 2}"#,
            now: now(),
            expires_at: Timestamp(now().0 + 3_600_000),
            ray: None,
        };
        store.commit_cluster(&new).await.unwrap().unwrap();
        sync(&app, &next).await.unwrap();
        assert_eq!(joined(&mut a_out).unwrap().address, "100.64.1.1/10", "the ended lease's block is reused");
        drop(stop);
    }
}
