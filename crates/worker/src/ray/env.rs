//! Managed Python environments, one per Ray version: `ROOT/VERSION/` is a venv with
//! `ray[…]==VERSION` installed. Provisioned on first use, then reused by every cluster (and
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
}

impl PythonEnvs {
    pub fn new(root: PathBuf, python: String) -> PythonEnvs {
        PythonEnvs { root, python }
    }

    /// The environment's `bin/` for `version` (already validated as `X.Y.Z`), installing it
    /// if needed. The error is for the customer to read: what failed and its last output.
    pub async fn ensure(&self, version: &str) -> Result<PathBuf, String> {
        let dir = self.root.join(version);
        let bin = dir.join("bin");
        if dir.join(READY_MARKER).exists() {
            return Ok(bin);
        }
        std::fs::create_dir_all(&self.root)
            .map_err(|e| format!("cannot create the Python environments directory {}: {e}", self.root.display()))?;
        let lock_path = self.root.join(format!("{version}.lock"));
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
        let requirement = format!("ray[{RAY_EXTRAS}]=={version}");
        run(
            Command::new(bin.join("python"))
                .args(["-m", "pip", "install", "--disable-pip-version-check", "--quiet"])
                .arg(&requirement),
            &format!("pip install {requirement:?}"),
        )
        .await?;
        std::fs::write(dir.join(READY_MARKER), requirement.as_bytes())
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

    #[tokio::test]
    async fn a_failed_install_says_what_failed_and_leaves_no_marker() {
        let root = tempfile::tempdir().unwrap();
        let envs = PythonEnvs::new(root.path().into(), "/nonexistent/python".into());
        let error = envs.ensure("2.40.0").await.unwrap_err();
        assert!(error.contains("cannot create the virtualenv"), "{error}");
        assert!(!root.path().join("2.40.0").join(READY_MARKER).exists());
    }
}
