//! A job's working directory as a Ray package: a zip of the directory's files (at its top
//! level, as Ray unpacks them), built deterministically — sorted names, fixed times — so the
//! same files give the same content-addressed name and are uploaded once.

use std::io::{Cursor, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

/// Ray refuses larger packages.
pub const PACKAGE_BYTES_MAX: usize = 100 << 20;
/// Not part of a job: version control, caches, local virtualenvs.
const SKIPPED_DIRS: &[&str] = &[".git", ".hg", "__pycache__", ".venv", "venv", ".mypy_cache", ".pytest_cache"];
const FILES_MAX: usize = 20_000;

pub struct Package {
    /// `_ray_pkg_<sha256 prefix>.zip`.
    pub name: String,
    pub bytes: Vec<u8>,
    pub files: usize,
}

impl Package {
    /// The runtime_env `working_dir` value once uploaded.
    pub fn uri(&self) -> String {
        format!("gcs://{}", self.name)
    }
}

pub fn package_dir(dir: &Path) -> anyhow::Result<Package> {
    if !dir.is_dir() {
        bail!("--working-dir {} is not a directory", dir.display());
    }
    let mut files = Vec::new();
    collect(dir, dir, &mut files)?;
    files.sort();
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let mut total = 0usize;
    for relative in &files {
        let path = dir.join(relative);
        let data = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        total += data.len();
        if total > PACKAGE_BYTES_MAX {
            bail!(
                "the working directory holds more than {} MiB; Ray packages are limited to that (keep data elsewhere)",
                PACKAGE_BYTES_MAX >> 20
            );
        }
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .last_modified_time(DateTime::default())
            .unix_permissions(mode);
        let name = relative.to_str().with_context(|| format!("{} is not valid UTF-8", relative.display()))?;
        zip.start_file(name, options)?;
        zip.write_all(&data)?;
    }
    let bytes = zip.finish()?.into_inner();
    let hash = herd_core::hex::encode(&Sha256::digest(&bytes));
    Ok(Package { name: format!("_ray_pkg_{}.zip", &hash[..32]), bytes, files: files.len() })
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() {
            if !SKIPPED_DIRS.iter().any(|s| entry.file_name() == *s) {
                collect(root, &path, files)?;
            }
        } else if kind.is_file() {
            if files.len() == FILES_MAX {
                bail!("the working directory holds more than {FILES_MAX} files");
            }
            files.push(path.strip_prefix(root).expect("under the root").to_path_buf());
        }
        // Symbolic links and special files are left out: they may point outside the directory.
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_files_make_the_same_package_and_skips_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.py"), "print('hi')\n").unwrap();
        std::fs::create_dir_all(dir.path().join("lib/__pycache__")).unwrap();
        std::fs::write(dir.path().join("lib/util.py"), "X = 1\n").unwrap();
        std::fs::write(dir.path().join("lib/__pycache__/util.pyc"), "junk").unwrap();
        let first = package_dir(dir.path()).unwrap();
        let second = package_dir(dir.path()).unwrap();
        assert_eq!(first.name, second.name, "deterministic");
        assert_eq!(first.files, 2);
        assert!(first.name.starts_with("_ray_pkg_") && first.name.ends_with(".zip") && first.name.len() == 45);
        let archive = zip::ZipArchive::new(Cursor::new(first.bytes)).unwrap();
        let names: Vec<&str> = archive.file_names().collect();
        assert!(names.contains(&"main.py") && names.contains(&"lib/util.py"), "{names:?}");
        std::fs::write(dir.path().join("main.py"), "print('changed')\n").unwrap();
        assert_ne!(package_dir(dir.path()).unwrap().name, first.name);
    }

    #[test]
    fn a_missing_directory_is_a_clear_error() {
        let error = package_dir(Path::new("/nonexistent/dir")).err().unwrap().to_string();
        assert!(error.contains("is not a directory"), "{error}");
    }
}
