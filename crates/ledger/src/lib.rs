//! Money and rewards, correct to the last minor unit.
//!
//! Architecture invariant: pure — no IO, no clock (time comes in as milliseconds). The
//! coordinator persists what this crate decides: the journal entries `Ledger::apply` returns.
//!
//! - `ledger`: double-entry accounts per asset, atomic batches, two-phase transfers (pending →
//!   post / void / expire) and idempotent ids, in the manner of TigerBeetle;
//! - `journal`: the hash chain over applied transfers and its verification;
//! - `emission`, `rewards`, `staking`: the IO token's schedule, hourly block rewards and stakes.

pub mod emission;
pub mod journal;
pub mod ledger;
pub mod rewards;
pub mod staking;

pub use ledger::{Account, AccountKey, Ledger, LedgerError, Transfer, TransferKind};
