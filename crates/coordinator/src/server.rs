//! Starting and stopping a coordinator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::app::{App, CoordinatorConfig};
use crate::books::SharedBooks;
use crate::market::SharedMarket;
use crate::store::{Store, StoreError};
use crate::{api, reconcile};

/// How long shutdown waits for in-flight requests and sockets to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the database {url}")]
    Database { url: String, source: StoreError },
    #[error(
        "a PostgreSQL network needs a key directory (--key-dir): the ledger key that signs the journal must \
         outlive this process, and every replica needs the same one"
    )]
    NoKeyDir,
    #[error("a SQLite network is one coordinator: --bus (replicas) needs --db postgres://…")]
    BusNeedsPostgres,
    #[error(
        "another coordinator runs on this database (it holds the leader lock); replicas talk through NATS: \
         start every replica with --bus nats://HOST:PORT"
    )]
    AnotherCoordinator,
    #[error(transparent)]
    Bus(#[from] crate::bus::BusError),
    #[error("cannot create the key directory {dir}")]
    KeyDir { dir: PathBuf, source: std::io::Error },
    #[error("cannot open the ledger of {url}")]
    Books { url: String, source: crate::books::BooksError },
    #[error("cannot mint the genesis supply: {0}")]
    Genesis(String),
    #[error("cannot listen on {addr}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] crate::tls_server::TlsSetupError),
    #[error(transparent)]
    Overlay(#[from] crate::overlay::OverlayError),
}

pub struct RunningCoordinator {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    reconciler: JoinHandle<()>,
    prover: JoinHandle<()>,
    app: App,
}

/// The key directory, created private (0700) if missing.
fn create_key_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Opens the database, binds the listener and starts serving and reconciling.
pub async fn start(config: CoordinatorConfig) -> Result<RunningCoordinator, StartError> {
    // A bad certificate or key stops the start before anything is opened.
    let tls = config.tls.as_ref().map(crate::tls_server::server_config).transpose()?;
    let shown_url = crate::store::redact_url(&config.db_url);
    let backend = crate::store::Backend::of_url(&config.db_url)
        .map_err(|source| StartError::Database { url: shown_url.clone(), source })?;
    if backend == crate::store::Backend::Postgres && config.key_dir.is_none() {
        return Err(StartError::NoKeyDir);
    }
    if backend == crate::store::Backend::Sqlite && config.bus.is_some() {
        return Err(StartError::BusNeedsPostgres);
    }
    let bus = match &config.bus {
        Some(url) => Some(crate::bus::Bus::connect(url).await?),
        None => None,
    };
    if let Some(dir) = &config.key_dir {
        create_key_dir(dir).map_err(|source| StartError::KeyDir { dir: dir.clone(), source })?;
    }
    let store =
        Store::open(&config.db_url).await.map_err(|source| StartError::Database { url: shown_url.clone(), source })?;
    let listener =
        TcpListener::bind(config.listen).await.map_err(|source| StartError::Listen { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen { addr: config.listen, source })?;
    let market = SharedMarket::load(&store, config.overlay.is_some())
        .await
        .map_err(|source| StartError::Database { url: shown_url.clone(), source })?;
    let key_path = config.ledger_key_path();
    let books = SharedBooks::load(&store, key_path.as_deref())
        .await
        .map_err(|source| StartError::Books { url: shown_url.clone(), source })?;
    let overlay = match &config.overlay {
        Some(overlay_config) => {
            let ca_key = config.overlay_ca_key_path();
            // Working files (the lighthouse's configuration) beside the database, else in a
            // directory of this process's own.
            let dir = match &ca_key {
                Some(key) => PathBuf::from(format!("{}.d", key.display())),
                None => std::env::temp_dir().join(format!("herd-overlay-{}", std::process::id())),
            };
            Some(crate::overlay::Overlay::start(overlay_config, ca_key.as_deref(), &dir).await?)
        }
        None => None,
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let app = App::new(store.clone(), market, books, config, overlay, shutdown_rx.clone());
    // Lead from the start where nobody else does (the reconcile loop keeps trying). Without a
    // bus, a second coordinator on the database could not reach the first one's devices.
    let leading = app.leadership.refresh(&store).await;
    let bus_queue = match bus {
        Some((bus, queue)) => {
            app.hub.use_bus(bus.clone());
            let _ = app.bus.set(bus);
            Some(queue)
        }
        None if !leading => {
            store.close().await;
            return Err(StartError::AnotherCoordinator);
        }
        None => None,
    };
    // After a restart, devices the database says are online get one timeout to reconnect.
    let online =
        store.online_device_ids().await.map_err(|source| StartError::Database { url: shown_url.clone(), source })?;
    for device in &online {
        app.hub.watch(device, Instant::now());
    }
    app.ensure_genesis().await.map_err(|e| StartError::Genesis(e.to_string()))?;
    // Challenges open when the last run stopped cannot be answered any more.
    app.store
        .abort_running_verifications(crate::app::now())
        .await
        .map_err(|source| StartError::Database { url: shown_url.clone(), source })?;
    let router = api::router(app.clone());
    let mut server_shutdown = shutdown_rx.clone();
    let server = tokio::spawn(async move {
        if let Some(tls) = tls {
            return crate::tls_server::serve(listener, tls, router, server_shutdown).await;
        }
        let serving = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = server_shutdown.wait_for(|stop| *stop).await;
            });
        if let Err(error) = serving.await {
            tracing::error!(%error, "HTTP server failed");
        }
    });
    if let Some(queue) = bus_queue {
        tokio::spawn(crate::bus::run(app.clone(), queue, shutdown_rx.clone()));
    }
    let prover = tokio::spawn(crate::proving::run(app.clone(), shutdown_rx.clone()));
    let reconciler = tokio::spawn(reconcile::run(app.clone(), shutdown_rx));
    tracing::info!(%addr, devices_watched = online.len(), "coordinator listening");
    Ok(RunningCoordinator { addr, shutdown, server, reconciler, prover, app })
}

impl RunningCoordinator {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the overlay lighthouse and relay listen, when the network runs one.
    pub fn overlay_listen(&self) -> Option<SocketAddr> {
        self.app.overlay.as_ref().map(|o| o.listen)
    }

    /// Whether this replica does the once-only work now.
    pub fn is_leader(&self) -> bool {
        self.app.leadership.is_leader()
    }

    /// The database backend this coordinator runs on.
    pub fn backend(&self) -> crate::store::Backend {
        self.app.store.backend()
    }

    pub fn url(&self) -> String {
        let scheme = if self.app.config.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Graceful stop: workers are told, in-flight requests finish (up to a grace period),
    /// then the database is closed cleanly.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if tokio::time::timeout(SHUTDOWN_GRACE, self.server).await.is_err() {
            tracing::warn!("requests still running after the grace period; closing anyway");
        }
        if tokio::time::timeout(SHUTDOWN_GRACE, self.app.sessions.wait_idle()).await.is_err() {
            tracing::warn!("worker sessions still open after the grace period; closing anyway");
        }
        let _ = self.reconciler.await;
        let _ = self.prover.await;
        if let Some(overlay) = &self.app.overlay {
            overlay.stop().await;
        }
        // Another replica takes over now, not when the last clone of the app is dropped.
        self.app.leadership.release().await;
        self.app.store.close().await;
        tracing::info!("coordinator stopped");
    }
}
