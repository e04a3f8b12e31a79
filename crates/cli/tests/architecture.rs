//! Architecture invariant (ARCHITECTURE.md): the pure crates do no IO and read no clock.
//! They may not depend on the async runtime, the database, HTTP or the file system, and
//! their sources may not name the clock or the file system.

use std::fs;
use std::path::{Path, PathBuf};

const PURE_CRATES: &[&str] = &["core", "market", "sim", "ledger", "verify"];
const FORBIDDEN_DEPENDENCIES: &[&str] = &["tokio", "sqlx", "axum", "reqwest", "hyper", "tokio-tungstenite", "sysinfo"];
const FORBIDDEN_SOURCE: &[&str] =
    &["std::fs", "SystemTime", "Instant::now", "std::net", "std::process", "thread_rng", "OsRng", "std::env"];

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn pure_crates_do_no_io_and_read_no_clock() {
    for name in PURE_CRATES {
        let dir = crates_dir().join(name);
        let manifest = fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let dependencies = manifest.split("[dependencies]").nth(1).unwrap_or("");
        let dependencies = dependencies.split("\n[").next().unwrap_or("");
        for line in dependencies.lines() {
            let dependency = line.split(['=', '.', ' ']).next().unwrap_or("").trim();
            assert!(!FORBIDDEN_DEPENDENCIES.contains(&dependency), "herd-{name} depends on {dependency}");
        }
        let mut files = Vec::new();
        rust_files(&dir.join("src"), &mut files);
        assert!(!files.is_empty());
        for file in files {
            let source = fs::read_to_string(&file).unwrap();
            for forbidden in FORBIDDEN_SOURCE {
                assert!(!source.contains(forbidden), "{} names {forbidden}", file.display());
            }
        }
    }
}

#[test]
fn only_the_coordinator_writes_sql() {
    for name in ["core", "market", "sim", "ledger", "verify", "proto", "worker", "cli", "overlay", "gpu", "keys"] {
        let mut files = Vec::new();
        rust_files(&crates_dir().join(name).join("src"), &mut files);
        for file in files {
            let source = fs::read_to_string(&file).unwrap();
            for keyword in ["sqlx::", "SELECT ", "INSERT INTO", "UPDATE devices"] {
                assert!(!source.contains(keyword), "{} contains {keyword:?}", file.display());
            }
        }
    }
}
