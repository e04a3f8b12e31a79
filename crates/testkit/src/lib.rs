//! Fixtures the test suites share (a dev-dependency only; nothing here is in a release
//! build): installing packages one installer at a time, and a database per test on the
//! backend the run asks for.
//!
//! `HERD_TEST_DB=postgres` runs a suite's store and API tests on PostgreSQL: each test gets
//! a fresh schema on one local server this crate starts (installing PostgreSQL if needed).
//! Unset or `sqlite`, they run on a SQLite file in the test's temporary directory.

pub mod install;
pub mod postgres;

use std::path::Path;

/// The backend the test run asks for (`HERD_TEST_DB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    Sqlite,
    Postgres,
}

/// What `HERD_TEST_DB` names; anything else than `sqlite`, `postgres` or unset is a mistake
/// in the test command, so it panics.
pub fn backend() -> TestBackend {
    match std::env::var("HERD_TEST_DB").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => TestBackend::Sqlite,
        Ok("postgres") => TestBackend::Postgres,
        Ok(other) => panic!("HERD_TEST_DB={other:?}: use sqlite or postgres"),
    }
}

/// The database of a test's directory `dir` on the run's backend: the SQLite file
/// `dir/herd.db`, or the PostgreSQL schema named after `dir` (created empty the first time).
/// The same directory gives the same database, so a test can restart a coordinator on it.
pub fn database_url(dir: &Path) -> String {
    database_url_for_file(&dir.join("herd.db"))
}

/// As [`database_url`], for a test that names its SQLite file.
pub fn database_url_for_file(file: &Path) -> String {
    match backend() {
        TestBackend::Sqlite => format!("sqlite://{}", file.display()),
        TestBackend::Postgres => postgres::database_for(file),
    }
}

pub mod nats;
