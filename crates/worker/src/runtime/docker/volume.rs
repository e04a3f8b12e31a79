//! Each lease's working area on this host: a sparse ext4 image of the lease's disk size,
//! loop-mounted, holding the `/work` of every task of the lease. A task that writes past it
//! gets ENOSPC inside its own file system; the host's disk is never filled through it. Works
//! on any host file system (no project quotas, no XFS): it needs root, `losetup`-capable
//! `mount` and `mkfs.ext4` (e2fsprogs), which every Linux distribution has.
//!
//! The image is sparse, so an idle lease costs nothing; its size is capped at creation by
//! what the host's disk can still give (keeping a reserve), so a full lease cannot push the
//! host over either.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

/// Kept free on the host's disk whatever the leases ask: this much or 5 %, whichever is more.
const HOST_RESERVE_BYTES: u64 = 1 << 30;
/// The smallest working area worth making.
const VOLUME_MIN_BYTES: u64 = 32 << 20;

pub struct LeaseVolumes {
    root: PathBuf,
}

async fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// Whether `path` is a mount point now (from the kernel's mount table).
fn is_mounted(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let shown = path.display().to_string();
    table.lines().any(|line| line.split(' ').nth(4) == Some(shown.as_str()))
}

/// (available, total) bytes of the file system holding `path`.
pub fn space(path: &Path) -> Option<(u64, u64)> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    let block = stat.fragment_size() as u64;
    Some((stat.blocks_available() as u64 * block, stat.blocks() as u64 * block))
}

impl LeaseVolumes {
    pub fn new(root: PathBuf) -> LeaseVolumes {
        LeaseVolumes { root }
    }

    fn image(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.img"))
    }

    fn mount_point(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The lease's working area, mounted (made on first use, at most `bytes`, owned by
    /// `owner`). Returns its mount point and size.
    pub async fn mount(&self, name: &str, bytes: u64, owner: (u32, u32)) -> Result<(PathBuf, u64), String> {
        let point = self.mount_point(name);
        if is_mounted(&point) {
            let size = space(&point).map_or(bytes, |(_, total)| total);
            return Ok((point, size));
        }
        tokio::fs::create_dir_all(&point).await.map_err(|e| format!("cannot create {}: {e}", point.display()))?;
        let (available, total) = space(&self.root).ok_or("cannot read the host disk's free space")?;
        let reserve = HOST_RESERVE_BYTES.max(total / 20);
        let size = bytes.min(available.saturating_sub(reserve));
        if size < VOLUME_MIN_BYTES {
            return Err(format!(
                "the host's disk has {} MiB free, too little for a lease's working area after the {} MiB reserve",
                available >> 20,
                reserve >> 20
            ));
        }
        let image = self.image(name);
        let file = std::fs::File::create(&image).map_err(|e| format!("cannot create {}: {e}", image.display()))?;
        file.set_len(size).map_err(|e| format!("cannot size {}: {e}", image.display()))?;
        drop(file);
        let image_text = image.display().to_string();
        let point_text = point.display().to_string();
        let root_owner = format!("root_owner={}:{}", owner.0, owner.1);
        run("mkfs.ext4", &["-q", "-F", "-m", "0", "-E", &root_owner, &image_text]).await?;
        if let Err(error) = run("mount", &["-o", "loop,nosuid,nodev", &image_text, &point_text]).await {
            let _ = std::fs::remove_file(&image);
            return Err(error);
        }
        Ok((point, size))
    }

    /// Unmounts and deletes the lease's working area (everything its tasks left in it).
    pub async fn remove(&self, name: &str) {
        let point = self.mount_point(name);
        if is_mounted(&point) {
            // Lazy: a process still holding a file cannot keep the lease's space alive.
            if let Err(error) = run("umount", &["-l", &point.display().to_string()]).await {
                tracing::warn!(%error, "could not unmount a lease's working area");
            }
        }
        let _ = tokio::fs::remove_dir(&point).await;
        match tokio::fs::remove_file(self.image(name)).await {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => tracing::warn!(%error, "could not remove a lease's working area image"),
        }
    }

    /// Removes every working area not named in `keep` (a crash's leftovers).
    pub async fn sweep(&self, keep: &[String]) {
        let Ok(mut entries) = tokio::fs::read_dir(&self.root).await else { return };
        let mut names = Vec::new();
        while let Ok(Some(entry)) = entries.next_entry().await {
            let file = entry.file_name().to_string_lossy().into_owned();
            let name = file.strip_suffix(".img").unwrap_or(&file).to_owned();
            if !keep.contains(&name) && !names.contains(&name) {
                names.push(name);
            }
        }
        for name in names {
            self.remove(&name).await;
        }
    }
}

/// Says so when a task's failure came from a full working area.
pub fn full_area_error(point: &Path, size: u64) -> Option<String> {
    let (available, _) = space(point)?;
    (available < (1 << 20)).then(|| {
        format!(
            "the lease's working area (/work, {} MiB on this node) is full: the task wrote past the lease's disk; \
             write less, or rent a device with more disk",
            size >> 20
        )
    })
}
