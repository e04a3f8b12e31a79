//! The market, as pure logic: the supply index (`index`), placement with explanations
//! (`matching`) and supply-and-demand prices (`pricing`).
//!
//! Architecture invariant: pure — no IO, no clock (time comes in as milliseconds), no
//! randomness. The coordinator keeps one `MarketIndex` in memory, plans from it, and commits
//! plans in a database transaction that re-checks every device, so a stale plan is rejected
//! rather than applied (Nomad's plan/commit split).

pub mod index;
pub mod matching;
pub mod pricing;
