//! The `herd` command line, and the pieces tests reuse: the API client, credentials, and a
//! whole local network in one process.

pub mod audit;
pub mod client;
pub mod commands;
pub mod config_file;
pub mod credentials;
pub mod instance_lock;
pub mod local;
pub mod output;
pub mod package;
