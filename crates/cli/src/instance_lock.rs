//! One herd process per data directory and per database file. A second `herd up` on a live
//! network's data dir would open the same database, mark the live network's devices offline
//! (they are connected to the other process) and degrade its clusters; a second agent on one
//! data dir would be one device key on two connections. Each such process takes an exclusive
//! `flock` on a lock file first and refuses to start, naming the holder, when it is taken.
//!
//! The kernel drops a flock when its holder dies however it dies, so a crashed process never
//! leaves a stale lock behind; the file's text (pid and command line) is only for the message.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Held for as long as the process runs what it locked.
pub struct InstanceLock {
    _lock: Flock<File>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{what} {} is in use by another herd process ({holder}); stop it first, or use another one", path.display())]
    Held { what: &'static str, path: PathBuf, holder: String },
    #[error("cannot lock {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

impl InstanceLock {
    /// The lock file inside a locked data directory.
    pub const FILE_NAME: &'static str = "herd.lock";

    /// Locks the data directory `dir` (creating it if needed).
    pub fn data_dir(dir: &Path) -> Result<InstanceLock, LockError> {
        std::fs::create_dir_all(dir).map_err(|source| LockError::Io { path: dir.to_path_buf(), source })?;
        InstanceLock::take("the data directory", dir, &dir.join(InstanceLock::FILE_NAME))
    }

    /// Locks the SQLite database at `url` (`sqlite://PATH`); other URLs (an in-memory
    /// database, a server database) lock nothing.
    pub fn database(url: &str) -> Result<Option<InstanceLock>, LockError> {
        let Some(path) = sqlite_file(url) else { return Ok(None) };
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        if let Some(parent) = lock_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| LockError::Io { path: parent.to_path_buf(), source })?;
        }
        InstanceLock::take("the database", &path, &lock_path).map(Some)
    }

    fn take(what: &'static str, named: &Path, lock_path: &Path) -> Result<InstanceLock, LockError> {
        let io = |source| LockError::Io { path: lock_path.to_path_buf(), source };
        let file = File::options().create(true).truncate(false).read(true).write(true).open(lock_path).map_err(io)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() { "its pid is not recorded".to_owned() } else { holder.to_owned() };
                return Err(LockError::Held { what, path: named.to_path_buf(), holder });
            }
            Err((_, errno)) => return Err(io(errno.into())),
        };
        lock.set_len(0).map_err(io)?;
        lock.rewind().map_err(io)?;
        write!(lock, "pid {}: {}", std::process::id(), command_line()).map_err(io)?;
        Ok(InstanceLock { _lock: lock })
    }
}

/// The file of a `sqlite://PATH[?options]` URL.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().collect();
    let mut line = args.join(" ");
    // The holder's command line is shown to whoever is refused; keep it one readable line.
    line.truncate(200);
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_data_dir_is_refused_naming_the_holder_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = InstanceLock::data_dir(dir.path()).unwrap();
        let error = InstanceLock::data_dir(dir.path()).err().unwrap().to_string();
        assert!(error.contains("is in use by another herd process"), "{error}");
        assert!(error.contains(&format!("pid {}", std::process::id())), "{error}");
        drop(first);
        InstanceLock::data_dir(dir.path()).unwrap();
    }

    #[test]
    fn only_sqlite_files_are_locked() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("herd.db").display());
        let _held = InstanceLock::database(&url).unwrap().unwrap();
        assert!(InstanceLock::database(&url).is_err());
        assert!(dir.path().join("herd.db.lock").exists());
        assert!(InstanceLock::database("sqlite::memory:").unwrap().is_none());
        assert!(InstanceLock::database("postgres://db/herd").unwrap().is_none());
    }
}
