//! Managed Python environments, one per Ray version: `ROOT/VERSION/` is a venv with
//! `ray[…]==VERSION` installed (`ROOT/VERSION-HASH/` when the supplier adds packages every
//! node of the machine gets, e.g. a deep-learning framework for RLlib: installed once per
//! machine instead of once per job and node). Provisioned on first use, then reused by every cluster (and
//! by every agent that shares ROOT: a file lock makes concurrent provisioning wait instead
//! of installing twice). A marker file written last means "complete"; anything without it
//! is a leftover of an interrupted install and is removed first.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::fcntl::{Flock, FlockArg};
use tokio::process::Command;

/// The Ray extras every managed environment has: the dashboard and job API (`default`) and
/// the AI libraries customers run (Data, Train, Tune). RLlib needs a deep-learning framework
/// (a large download), so jobs that want it add it with `--pip`.
pub const RAY_EXTRAS: &str = "default,data,train,tune";
const READY_MARKER: &str = ".herd-ready";
/// Lines of a failed install's output kept for the error.
const ERROR_TAIL_LINES: usize = 12;

#[derive(Debug, Clone)]
pub struct PythonEnvs {
    root: PathBuf,
    /// The interpreter venvs are made from (`python3` on PATH unless configured).
    python: String,
    /// pip requirements installed beside Ray, resolved together with it.
    packages: Vec<String>,
}

impl PythonEnvs {
    pub fn new(root: PathBuf, python: String) -> PythonEnvs {
        PythonEnvs { root, python, packages: Vec::new() }
    }

    pub fn with_packages(mut self, packages: Vec<String>) -> PythonEnvs {
        self.packages = packages;
        self
    }

    /// The environment's directory name: the version, and a digest of the added packages.
    fn name(&self, version: &str) -> String {
        if self.packages.is_empty() {
            return version.to_owned();
        }
        // FNV-1a: a stable cache key (not a security boundary: the supplier chose the list).
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self.packages.join("\n").bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        format!("{version}-{hash:016x}")
    }

    /// The environment's `bin/` for `version` (already validated as `X.Y.Z`), installing it
    /// if needed. The error is for the customer to read: what failed and its last output.
    pub async fn ensure(&self, version: &str) -> Result<PathBuf, String> {
        let name = self.name(version);
        let dir = self.root.join(&name);
        let bin = dir.join("bin");
        if dir.join(READY_MARKER).exists() {
            return Ok(bin);
        }
        std::fs::create_dir_all(&self.root)
            .map_err(|e| format!("cannot create the Python environments directory {}: {e}", self.root.display()))?;
        let lock_path = self.root.join(format!("{name}.lock"));
        let _lock = tokio::task::spawn_blocking(move || lock(&lock_path))
            .await
            .map_err(|e| format!("the environment lock task failed: {e}"))??;
        // Someone else may have finished while this waited for the lock.
        if dir.join(READY_MARKER).exists() {
            return Ok(bin);
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| format!("cannot remove the incomplete environment {}: {e}", dir.display()))?;
        }
        let started = std::time::Instant::now();
        tracing::info!(version, dir = %dir.display(), "installing Ray into a managed Python environment");
        run(Command::new(&self.python).arg("-m").arg("venv").arg(&dir), "create the virtualenv").await?;
        let mut requirements = vec![format!("ray[{RAY_EXTRAS}]=={version}")];
        requirements.extend(self.packages.iter().cloned());
        run(
            Command::new(bin.join("python"))
                .args(["-m", "pip", "install", "--disable-pip-version-check", "--quiet"])
                .args(&requirements),
            &format!("pip install {}", requirements.join(" ")),
        )
        .await?;
        std::fs::write(dir.join(READY_MARKER), requirements.join("\n").as_bytes())
            .map_err(|e| format!("cannot mark the environment complete: {e}"))?;
        tracing::info!(version, seconds = started.elapsed().as_secs(), "Ray installed");
        Ok(bin)
    }
}

fn lock(path: &Path) -> Result<Flock<File>, String> {
    let file = File::create(path).map_err(|e| format!("cannot open the lock {}: {e}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| format!("cannot lock {}: {e}", path.display()))
}

async fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot {what}: {e} (is Python 3 with venv installed?)"))?;
    if output.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(ERROR_TAIL_LINES)..].join("\n");
    Err(format!("cannot {what} ({}): {tail}", output.status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_complete_environment_is_reused_without_installing() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("2.40.0")).unwrap();
        std::fs::write(root.path().join("2.40.0").join(READY_MARKER), "x").unwrap();
        // An interpreter that does not exist proves nothing is run.
        let envs = PythonEnvs::new(root.path().into(), "/nonexistent/python".into());
        assert_eq!(envs.ensure("2.40.0").await.unwrap(), root.path().join("2.40.0/bin"));
    }

    #[test]
    fn added_packages_make_an_environment_of_their_own() {
        let envs = PythonEnvs::new("/envs".into(), "python3".into());
        assert_eq!(envs.name("2.40.0"), "2.40.0");
        let rl = envs.clone().with_packages(vec!["tensorflow-cpu==2.21.0".into()]);
        let other = envs.with_packages(vec!["torch==2.5.1".into()]);
        assert!(rl.name("2.40.0").starts_with("2.40.0-"));
        assert_ne!(rl.name("2.40.0"), other.name("2.40.0"));
        assert_eq!(rl.name("2.40.0"), rl.name("2.40.0"), "stable");
    }

    #[tokio::test]
    async fn a_failed_install_says_what_failed_and_leaves_no_marker() {
        let root = tempfile::tempdir().unwrap();
        let envs = PythonEnvs::new(root.path().into(), "/nonexistent/python".into());
        let error = envs.ensure("2.40.0").await.unwrap_err();
        assert!(error.contains("cannot create the virtualenv"), "{error}");
        assert!(!root.path().join("2.40.0").join(READY_MARKER).exists());
    }
}
