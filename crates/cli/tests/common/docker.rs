//! Docker fixtures: the real engine, images built by `deploy/images/build.sh`, and cleanup
//! of everything a test created. The docker CLI is used for the test's own set-up (the
//! worker itself talks to the engine API).
//!
//! These tests need a running engine. Where there is none (a laptop without Docker), set
//! `HERD_SKIP_DOCKER_TESTS=1` and they pass after saying they were skipped; CI never sets it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use herd_core::{CpuSpec, DeviceSpec};
use herd_worker::{AgentConfig, RuntimeConfig, RuntimeKind};

use super::TestNetwork;

pub const BASE_IMAGE: &str = "herd/base:bookworm";
pub const HERD_IMAGE: &str = "herd/herd:dev";

/// False (after saying so) when the developer opted out; panics if the engine is missing
/// otherwise, so CI cannot silently skip.
pub fn engine_available(test: &str) -> bool {
    if std::env::var_os("HERD_SKIP_DOCKER_TESTS").is_some_and(|v| v == "1") {
        eprintln!("{test}: skipped (HERD_SKIP_DOCKER_TESTS=1)");
        return false;
    }
    let info = docker(&["info", "--format", "{{.ServerVersion}}"]);
    assert!(
        info.status.success(),
        "{test} needs a running Docker engine (or HERD_SKIP_DOCKER_TESTS=1): {}",
        String::from_utf8_lossy(&info.stderr)
    );
    true
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Test binaries run in parallel; the build script also locks across processes.
static BUILDS: Mutex<()> = Mutex::new(());

fn build(args: &[&str]) {
    let _one_at_a_time = BUILDS.lock().unwrap_or_else(|p| p.into_inner());
    let output =
        Command::new("bash").arg(repo_root().join("deploy/images/build.sh")).args(args).output().expect("bash runs");
    assert!(
        output.status.success(),
        "deploy/images/build.sh {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The base image tasks run in (built once per machine, about a minute).
pub fn base_image() {
    build(&["base"]);
}

/// The Ray image docker-runtime Ray nodes run (built once per machine, a few minutes).
pub fn ray_image() {
    build(&["ray"]);
}

/// The herd image with this build's binary (rebuilt each run: the binary changes).
pub fn herd_image() {
    let binary = env!("CARGO_BIN_EXE_herd");
    let _one_at_a_time = BUILDS.lock().unwrap_or_else(|p| p.into_inner());
    let output = Command::new("bash")
        .arg(repo_root().join("deploy/images/build.sh"))
        .args(["herd", binary])
        .output()
        .expect("bash runs");
    assert!(output.status.success(), "building {HERD_IMAGE} failed:\n{}", String::from_utf8_lossy(&output.stderr));
}

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().expect("the docker CLI runs")
}

/// Runs a docker command that must succeed; returns its trimmed stdout.
pub fn docker_ok(args: &[&str]) -> String {
    let output = docker(args);
    assert!(output.status.success(), "docker {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// IDs of containers (all states) matching a label filter like `io.herd.device=…`.
pub fn containers_with(label: &str) -> Vec<String> {
    let out = docker_ok(&["ps", "-aq", "--no-trunc", "--filter", &format!("label={label}")]);
    out.lines().map(str::to_owned).collect()
}

pub fn networks_with(label: &str) -> Vec<String> {
    let out = docker_ok(&["network", "ls", "-q", "--filter", &format!("label={label}")]);
    out.lines().map(str::to_owned).collect()
}

pub fn is_running(container: &str) -> bool {
    let output = docker(&["inspect", "-f", "{{.State.Running}}", container]);
    output.status.success() && String::from_utf8_lossy(&output.stdout).trim() == "true"
}

/// Removes containers and networks carrying `label` when dropped, even if the test failed.
pub struct Cleanup(pub Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for label in &self.0 {
            let containers = containers_with(label);
            if !containers.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(containers.iter().map(String::as_str));
                let _ = docker(&args);
            }
            for network in networks_with(label) {
                let _ = docker(&["network", "rm", &network]);
            }
        }
    }
}

/// A simulated 2-core, 1 GiB machine running tasks in containers: its lease gives a task
/// 512 MiB (the rest is the supplier's reserve) and 1024 processes.
pub fn docker_worker(network: &TestNetwork, name: &str) -> AgentConfig {
    let mut config = AgentConfig::owned_by(&network.url, network.dir.path().join(name), &network.supplier_key, "US");
    config.simulated = Some(DeviceSpec {
        cpu: CpuSpec { model: "test".into(), physical_cores: 2, logical_cores: 2 },
        memory_bytes: 1 << 30,
        ..super::spec(None, 0)
    });
    config.advertise_addr = Some("127.0.0.1".into());
    config.runtime = RuntimeConfig { kind: RuntimeKind::Docker, ..Default::default() };
    config
}
