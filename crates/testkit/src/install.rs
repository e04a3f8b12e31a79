//! Installing what a test needs from the machine's package manager, once, one installer at a
//! time. Test binaries run in parallel (cargo runs each binary's tests on threads, nextest
//! runs tests as processes), and two `apt-get` runs at once fail on dpkg's lock: every
//! installer of the suite — these apt installs and `deploy/images/build.sh` (debootstrap,
//! image builds) — takes the same file lock first, and re-checks after waiting, so a package
//! another test installed meanwhile is not installed again.
//!
//! Python packages are not installed here: the worker provisions Ray into its managed
//! environment itself (its own lock per Ray version, `herd_worker::ray::env`), into a venv
//! that no other installer touches; test tools from PyPI go in venvs of their own (the CLI
//! suite's `pip_tool`, under this same lock).

use std::fs::File;
use std::path::Path;
use std::process::Command;

use nix::fcntl::{Flock, FlockArg};

/// The one lock every installer of the test suite takes (also read by
/// `deploy/images/build.sh`).
pub const INSTALL_LOCK: &str = "/tmp/herd-install.lock";

/// Holds the suite's install lock until dropped (blocks until it is free).
pub fn install_lock() -> Flock<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(INSTALL_LOCK)
        .unwrap_or_else(|e| panic!("cannot open {INSTALL_LOCK}: {e}"));
    Flock::lock(file, FlockArg::LockExclusive).unwrap_or_else(|(_, e)| panic!("cannot lock {INSTALL_LOCK}: {e}"))
}

/// Makes sure each of `files` exists, installing the Debian `packages` that provide them if
/// one is missing. Err says what failed, for the test's message.
pub fn apt_install(files: &[&str], packages: &[&str]) -> Result<(), String> {
    let present = || files.iter().all(|f| Path::new(f).exists());
    if present() {
        return Ok(());
    }
    let _one_installer = install_lock();
    // Another test may have installed them while this one waited.
    if present() {
        return Ok(());
    }
    apt(&["update", "-qq"])?;
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend_from_slice(packages);
    apt(&install)?;
    if present() {
        Ok(())
    } else {
        Err(format!("apt-get installed {} but {} is still missing", packages.join(" "), files.join(" or ")))
    }
}

fn apt(args: &[&str]) -> Result<(), String> {
    // The lock above orders the suite's installers; the timeout waits out anyone else on the
    // machine (unattended upgrades) instead of failing at once.
    let output = Command::new("apt-get")
        .args(["-o", "DPkg::Lock::Timeout=600"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .map_err(|e| format!("cannot run apt-get (is this a Debian or Ubuntu machine?): {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "apt-get {} failed ({}; root or passwordless sudo is needed): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    ))
}
