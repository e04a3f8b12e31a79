//! The coordinator: HTTP API, worker sockets, reconcilers and the database.
//!
//! Architecture invariant: only this crate knows SQL (in `store`), and it applies what the
//! pure crates (`herd-market`, `herd-ledger`, `herd-verify`) decide.

mod actions;
mod api;
mod app;
mod auth;
mod billing;
pub mod books;
mod bus;
mod economy;
mod error;
mod healer;
mod hub;
mod leader;
mod market;
mod metrics;
mod operator;
mod oracle;
mod overlay;
pub mod proving;
mod rate_limit;
mod reconcile;
mod server;
mod settlement;
#[cfg(test)]
mod simulation;
mod slashing;
pub mod store;
#[cfg(test)]
mod test_support;
mod tls_server;
mod tunnel;
mod web;
mod worker_socket;

pub use app::CoordinatorConfig;
pub use overlay::OverlayConfig;
pub use proving::ProofConfig;
pub use rate_limit::{ApiRateLimits, RateLimit};
pub use server::{start, RunningCoordinator, StartError};
pub use tls_server::TlsFiles;
