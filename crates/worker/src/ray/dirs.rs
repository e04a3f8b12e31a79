//! Where a Ray node keeps its files. Nothing is shared between leases: two customers' Ray
//! clusters on one machine used to share Ray's default `/tmp/ray`, whose
//! `ray_current_cluster` names whichever head started last (drivers joined the other
//! customer's cluster), and whose session directories held both clusters' runtime
//! environments.
//!
//! - `NodeDirs`: the node's HOME and TMPDIR, under the agent's data dir, one per tenure of a
//!   rank (`CLUSTER-eEPOCH-rRANK`). The agent's next start finds processes a killed run left
//!   by their HOME.
//! - `LeaseTemp`: Ray's temp dir (sessions, logs, sockets, runtime environments) for the
//!   lease, `/tmp/herd-ray/CLUSTER-eEPOCH` with the head's epoch. Ray 2.x takes a worker
//!   node's temp dir from its head (`ray start --temp-dir` is refused on workers), so the
//!   path must mean the same on every machine: it lives under `/tmp`, never under a data dir
//!   that exists only on the head's machine.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use herd_core::ClusterId;
use herd_proto::worker::RayNodeAssignment;

pub struct NodeDirs {
    pub home: PathBuf,
    pub tmp: PathBuf,
}

impl NodeDirs {
    fn root(nodes_dir: &Path, node: &RayNodeAssignment) -> PathBuf {
        nodes_dir.join(format!("{}-e{}-r{}", node.cluster_id, node.epoch, node.rank))
    }

    /// Creates them (private to the agent's user); a restart of the node keeps them.
    pub fn create(nodes_dir: &Path, node: &RayNodeAssignment) -> Result<NodeDirs, String> {
        let root = NodeDirs::root(nodes_dir, node);
        let dirs = NodeDirs { home: root.join("home"), tmp: root.join("tmp") };
        for dir in [&dirs.home, &dirs.tmp] {
            private_dir(dir)?;
        }
        Ok(dirs)
    }

    /// Removes them once the node has stopped for good.
    pub fn remove(nodes_dir: &Path, node: &RayNodeAssignment) {
        remove(&NodeDirs::root(nodes_dir, node));
    }
}

/// Shared by every lease's temp dir on this machine; private to the agent's user (Ray makes
/// the directories it creates inside world-writable).
const LEASES_TEMP_ROOT: &str = "/tmp/herd-ray";

pub struct LeaseTemp(PathBuf);

impl LeaseTemp {
    fn path_of(cluster: &ClusterId, head_epoch: i64) -> PathBuf {
        Path::new(LEASES_TEMP_ROOT).join(format!("{cluster}-e{head_epoch}"))
    }

    /// The head's: created for its tenure.
    pub fn create(cluster: &ClusterId, head_epoch: i64) -> Result<LeaseTemp, String> {
        LeaseTemp::prepare_parent()?;
        let dir = LeaseTemp::path_of(cluster, head_epoch);
        private_dir(&dir)?;
        Ok(LeaseTemp(dir))
    }

    /// Makes sure the root exists and is this user's alone, before a worker node's Ray
    /// creates its head's directory in it. A root that another user made first (to read or
    /// plant files in Ray's sessions) is refused.
    pub fn prepare_parent() -> Result<(), String> {
        let root = Path::new(LEASES_TEMP_ROOT);
        private_dir(root)?;
        let meta = std::fs::symlink_metadata(root).map_err(|e| format!("cannot inspect {LEASES_TEMP_ROOT}: {e}"))?;
        let me = nix::unistd::geteuid().as_raw();
        if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o077 != 0 {
            return Err(format!(
                "{LEASES_TEMP_ROOT} must be a directory of this user (uid {me}) that nobody else can enter, \
                 but it is owned by uid {} with mode {:o}; remove it",
                meta.uid(),
                meta.mode() & 0o7777
            ));
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// What `ray start --temp-dir` gets (`RAY_TMPDIR` + `/ray`, where Ray's own readers of
    /// the temp dir look when they are not told).
    pub fn ray_dir(&self) -> PathBuf {
        self.0.join("ray")
    }

    /// Removes the cluster's temp dirs on this machine that no process uses any more (another
    /// node of the same lease on this machine — simulated devices — may still run in one).
    /// Processes of a node just killed take a moment to be gone: waits up to `patience` for
    /// them, then leaves what is still in use to the last node that stops.
    pub fn remove_unused(cluster: &ClusterId, patience: std::time::Duration) {
        LeaseTemp::remove_unused_matching(&format!("{cluster}-e"), patience);
    }

    /// At the agent's start: every lease's temp dir that nothing runs in (left by a killed
    /// run of this or another agent on the machine).
    pub fn remove_all_unused() {
        LeaseTemp::remove_unused_matching("", std::time::Duration::ZERO);
    }

    fn remove_unused_matching(prefix: &str, patience: std::time::Duration) {
        const RETRY: std::time::Duration = std::time::Duration::from_millis(100);
        let deadline = std::time::Instant::now() + patience;
        loop {
            let Ok(entries) = std::fs::read_dir(LEASES_TEMP_ROOT) else { return };
            let mut busy = false;
            for entry in entries.flatten() {
                if !entry.file_name().to_string_lossy().starts_with(prefix) {
                    continue;
                }
                if in_use(&entry.path()) {
                    busy = true;
                } else {
                    remove(&entry.path());
                }
            }
            if !busy || std::time::Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(RETRY);
        }
    }
}

/// Whether a process runs with `dir` in its command line (every Ray process of a node names
/// its session directory there).
fn in_use(dir: &Path) -> bool {
    let needle = dir.as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    entries.flatten().any(|entry| {
        entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit())
            && std::fs::read(entry.path().join("cmdline"))
                .is_ok_and(|cmd| cmd.windows(needle.len()).any(|w| w == needle))
    })
}

fn private_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

fn remove(dir: &Path) {
    if let Err(error) = std::fs::remove_dir_all(dir) {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), %error, "cannot remove a stopped Ray node's directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_lease_and_head_tenure_has_its_own_temp_dir_and_it_goes_when_unused() {
        let cluster = ClusterId::from_entropy(rand::random());
        let first = LeaseTemp::create(&cluster, 7).unwrap();
        let other = LeaseTemp::create(&ClusterId::from_entropy(rand::random()), 7).unwrap();
        assert_ne!(first.path(), other.path());
        assert_ne!(first.path(), LeaseTemp::path_of(&cluster, 8));
        assert!(first.ray_dir().starts_with(first.path()));
        let mode = std::fs::metadata(LEASES_TEMP_ROOT).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // A process that names the directory keeps it.
        // (`; :` keeps the shell, whose argv names the directory, from exec'ing sleep.)
        let mut user = std::process::Command::new("sh").args(["-c", "sleep 30; :"]).arg(first.path()).spawn().unwrap();
        let started = std::time::Instant::now();
        while !in_use(first.path()) {
            assert!(started.elapsed() < std::time::Duration::from_secs(5), "the shell never started");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        LeaseTemp::remove_unused(&cluster, std::time::Duration::ZERO);
        assert!(first.path().exists());
        user.kill().unwrap();
        user.wait().unwrap();
        LeaseTemp::remove_unused(&cluster, std::time::Duration::from_secs(5));
        assert!(!first.path().exists());
        assert!(other.path().exists(), "another lease's stays");
        let _ = std::fs::remove_dir_all(other.path());
    }
}
