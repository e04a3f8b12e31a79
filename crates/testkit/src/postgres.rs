//! One PostgreSQL server for every test on this machine, and a fresh schema per test.
//!
//! The server runs from a data directory under /tmp, listens on loopback only, trusts local
//! connections (it holds nothing but test data) and skips fsync (a crash loses only tests'
//! rows). The first test that needs it installs PostgreSQL (apt), creates the directory and
//! starts the server, all under the suite's install lock, so parallel test processes share
//! one server; later tests find it running. It outlives the test run, like a developer's
//! local database; `pg_ctl -D /tmp/herd-test-postgres/data stop` ends it.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sqlx::Connection;

/// Where the test server lives.
pub const ROOT: &str = "/tmp/herd-test-postgres";
/// Its loopback port (unusual, so a developer's own server on 5432 is never touched).
pub const PORT: u16 = 55432;
/// The superuser the test databases belong to.
pub const USER: &str = "herd";

/// `postgres://herd@127.0.0.1:55432/postgres` with the test schema as the search path.
pub fn url_for_schema(schema: &str) -> String {
    format!("{}?options[search_path]={schema}", server_url())
}

/// The test server's URL (its default database, public schema).
pub fn server_url() -> String {
    format!("postgres://{USER}@127.0.0.1:{PORT}/postgres")
}

/// The schema standing for `file` on the test server (started if needed), created empty the
/// first time; its URL. Tests' files are in fresh temporary directories, so each test has a
/// schema of its own, and a test that reopens its file reopens its schema.
pub fn database_for(file: &Path) -> String {
    ensure_server();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    file.hash(&mut hasher);
    let schema = format!("t_{:016x}", hasher.finish());
    let url = server_url();
    let create = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
    // Its own runtime on its own thread: callers may be inside a runtime (async tests).
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        runtime.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&url)
                .await
                .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL at {url}: {e}"));
            sqlx::raw_sql(&create).execute(&mut conn).await.expect("CREATE SCHEMA");
            conn.close().await.ok();
        })
    })
    .join()
    .expect("creating the test schema");
    url_for_schema(&schema)
}

/// Starts the server once per process (and once per machine: later processes find it up).
pub fn ensure_server() {
    static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = STARTED.get_or_init(start_server) {
        panic!("the test PostgreSQL server cannot start: {e}");
    }
}

fn start_server() -> Result<(), String> {
    if accepting() {
        return Ok(());
    }
    // Installing takes the suite's install lock itself (and re-checks after waiting), so it
    // comes before this function takes the lock: flock is per open file, and a second lock
    // of the same file by this process would wait for itself.
    if binaries().is_none() {
        // pg_createcluster comes with the server packages (postgresql-common), not the client.
        crate::install::apt_install(&["/usr/bin/pg_createcluster"], &["postgresql"])?;
    }
    let bin = binaries().ok_or("apt-get installed postgresql but there is no /usr/lib/postgresql/*/bin/initdb")?;
    let _one_starter = crate::install::install_lock();
    if accepting() {
        return Ok(());
    }
    let root = Path::new(ROOT);
    let data = root.join("data");
    std::fs::create_dir_all(root).map_err(|e| format!("{ROOT}: {e}"))?;
    let owner = server_user();
    if let Some(user) = &owner {
        run(Command::new("chown").args([user, ROOT]))?;
    }
    if !data.join("PG_VERSION").exists() {
        let _ = std::fs::remove_dir_all(&data);
        run(as_owner(&owner, &bin.join("initdb")).args([
            "-D",
            &data.display().to_string(),
            "-U",
            USER,
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        ]))?;
    }
    let options = format!(
        "-p {PORT} -c listen_addresses=127.0.0.1 -k {ROOT} -c fsync=off -c synchronous_commit=off \
         -c full_page_writes=off -c max_connections=400 -c shared_buffers=64MB"
    );
    run(as_owner(&owner, &bin.join("pg_ctl")).args([
        "-D",
        &data.display().to_string(),
        "-l",
        &root.join("server.log").display().to_string(),
        "-o",
        &options,
        "-w",
        "-t",
        "60",
        "start",
    ]))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !accepting() {
        if Instant::now() > deadline {
            return Err(format!("started, but nothing accepts on 127.0.0.1:{PORT} (see {ROOT}/server.log)"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn accepting() -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], PORT).into(), Duration::from_millis(200)).is_ok()
}

/// The newest installed PostgreSQL's bin directory.
fn binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user the
/// package creates; otherwise as whoever runs the tests.
fn server_user() -> Option<String> {
    nix::unistd::Uid::effective().is_root().then(|| "postgres".to_string())
}

fn as_owner(owner: &Option<String>, program: &Path) -> Command {
    match owner {
        Some(user) => {
            let mut command = Command::new("runuser");
            command.args(["-u", user, "--"]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
