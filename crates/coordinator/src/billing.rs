//! Per-second billing against lease holds.
//!
//! Creating a cluster places a pending transfer (a hold) from the customer to the lease's
//! escrow for price × hours plus the customer's fees. Every few seconds the metering step
//! posts what the lease consumed since the hold was placed, pays each node's supplier less
//! the supplier's fee, sends both fees to the fee pool, and opens a new hold for the rest, in
//! one atomic batch. When the lease ends, the last step posts the final seconds and the
//! remainder is released exactly.
//!
//! Each device is billed for its tenure of a rank: from when it joined to when it left — its
//! last heartbeat if it was lost (a replacement's tenure starts when it is leased), the
//! lease's end otherwise. A running lease is posted only up to the oldest last heartbeat of
//! its current nodes: a node that went silent holds the cursor back until it is declared lost
//! (then its tenure ends at that heartbeat), so no second after a loss is ever charged.
//!
//! The hold's id, `hold:{cluster}:{from_ms}`, is the metering cursor: it lives in the journal
//! with the money it describes, so a coordinator that stops at any point resumes from exactly
//! the last committed period — never charging a period twice, never skipping one.

use herd_core::money::{apply_bps, RESERVATION_FEE_BPS};
use herd_core::{Address, Asset, ClusterId, Micros};
use herd_ledger::{AccountKey, Transfer, TransferKind};

use crate::app::{now, App};
use crate::books::PostError;

/// A hold outlives its lease by this much before it expires on its own (a safety net: the
/// metering step normally releases it at the lease's end).
const HOLD_GRACE_MS: i64 = 3_600_000;
/// A running lease is metered once at least this much time has accrued…
const METER_PERIOD_MIN_MS: i64 = 1_000;
/// …and posted once what it consumed is material (1 cent, in minor units): fees are rounded
/// per posting, so posting fractions of a cent would round fees away. The hold guarantees the
/// funds in between; the lease's end always posts.
const POST_UNITS_MIN: u64 = 10_000;
const HOUR_MS: i128 = 3_600_000;
/// A hold whose cluster still does not exist after this long is released.
const ORPHAN_HOLD_AGE_MS: i64 = 60_000;

/// One device's tenure of one rank: billed (and its supplier paid) for the seconds it held
/// the rank and was up.
pub struct BillableNode {
    /// The lease epoch: unique per tenure, so a rank's successive devices are paid apart.
    pub epoch: i64,
    pub supplier: Address,
    pub node_hour_micros: Micros,
    pub joined_ms: i64,
    /// When the tenure ended: the device's last heartbeat when it was lost, the lease's end
    /// otherwise; None while it lasts.
    pub left_ms: Option<i64>,
    /// The device's last heartbeat (never before it joined).
    pub seen_ms: i64,
}

impl BillableNode {
    /// Milliseconds of `[from, until)` this tenure covers.
    fn overlap_ms(&self, from: i64, until: i64) -> i64 {
        let start = from.max(self.joined_ms);
        let end = self.left_ms.map_or(until, |left| left.min(until));
        (end - start).max(0)
    }
}

pub struct LeaseTerms {
    pub owner: Address,
    pub asset: Asset,
    pub running: bool,
    pub expires_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub nodes: Vec<BillableNode>,
}

/// USD micros in the lease's asset (minor units): 1:1 for USDC and credits, at the oracle
/// price for IO.
pub fn in_asset(usd_micros: i128, asset: Asset, io_price_micros: i64) -> u64 {
    let units = match asset {
        Asset::Usdc | Asset::Credits => usd_micros,
        Asset::Io => usd_micros * 1_000_000 / i128::from(io_price_micros.max(1)),
    };
    units.clamp(0, i128::from(u64::MAX)) as u64
}

fn customer_fee_bps(asset: Asset) -> i64 {
    RESERVATION_FEE_BPS + asset.payment_fee_bps()
}

fn fee(amount: u64, bps: i64) -> u64 {
    apply_bps(amount.min(i64::MAX as u64) as i64, bps).max(0) as u64
}

pub fn hold_id(cluster: &ClusterId, from_ms: i64) -> String {
    format!("hold:{cluster}:{from_ms}")
}

/// The cluster and metering cursor a hold id names.
fn parse_hold(id: &str) -> Option<(ClusterId, i64)> {
    let mut parts = id.split(':');
    (parts.next()? == "hold").then_some(())?;
    let cluster = ClusterId::parse(parts.next()?).ok()?;
    let from = parts.next()?.parse().ok()?;
    Some((cluster, from))
}

fn hold(cluster: &ClusterId, owner: &Address, asset: Asset, id: String, amount: u64, expires_at_ms: i64) -> Transfer {
    Transfer {
        id,
        debit: AccountKey::User(owner.to_string()),
        credit: AccountKey::Escrow(cluster.to_string()),
        asset,
        amount,
        kind: TransferKind::Pending { expires_at_ms: expires_at_ms + HOLD_GRACE_MS },
        code: "lease-hold".into(),
    }
}

impl App {
    /// What a lease of `hours` at `price_per_hour_micros` holds, fees included, in `asset`.
    pub fn hold_amount(&self, price_per_hour_micros: Micros, hours: u32, asset: Asset) -> u64 {
        let base =
            in_asset(i128::from(price_per_hour_micros) * i128::from(hours), asset, self.oracle.io_price_micros());
        base + fee(base, customer_fee_bps(asset))
    }

    /// Places the initial hold of a new lease; fails (nothing held) if the balance is short.
    pub async fn open_lease_hold(
        &self,
        cluster: &ClusterId,
        owner: &Address,
        asset: Asset,
        amount: u64,
        from_ms: i64,
        expires_at_ms: i64,
    ) -> Result<(), PostError> {
        let transfer = hold(cluster, owner, asset, hold_id(cluster, from_ms), amount, expires_at_ms);
        self.post(&[transfer]).await.map(drop)
    }

    /// The open hold of a lease, if any.
    pub async fn lease_hold(&self, cluster: &ClusterId) -> Option<Transfer> {
        let escrow = AccountKey::Escrow(cluster.to_string());
        self.books.read(|books| books.ledger.open_pending().find(|t| t.credit == escrow).cloned()).await
    }

    /// Releases a hold entirely (a lease that could not be created).
    pub async fn void_hold(&self, hold: &Transfer) -> Result<(), PostError> {
        let void = Transfer {
            id: format!("void:{}", hold.id),
            amount: 0,
            kind: TransferKind::Void { pending_id: hold.id.clone() },
            code: "lease-release".into(),
            ..hold.clone()
        };
        self.post(&[void]).await.map(drop)
    }

    /// Adds `extra` to a lease's hold (an extension): the old hold is voided and a larger
    /// one placed, atomically.
    pub async fn grow_hold(&self, cluster: &ClusterId, extra: u64, expires_at_ms: i64) -> Result<(), PostError> {
        let Some(current) = self.lease_hold(cluster).await else { return Ok(()) };
        let Some((_, from)) = parse_hold(&current.id) else { return Ok(()) };
        let owner = match &current.debit {
            AccountKey::User(owner) => Address::parse(owner)
                .map_err(|e| herd_ledger::LedgerError::Invalid { index: 0, reason: e.to_string() })?,
            _ => return Ok(()),
        };
        let void = Transfer {
            id: format!("void:{}", current.id),
            amount: 0,
            kind: TransferKind::Void { pending_id: current.id.clone() },
            code: "lease-extend".into(),
            ..current.clone()
        };
        let id = format!("{}:x{expires_at_ms}", hold_id(cluster, from));
        let grown = hold(cluster, &owner, current.asset, id, current.amount + extra, expires_at_ms);
        self.post(&[void, grown]).await.map(drop)
    }

    /// Meters every lease that has an open hold. Idempotent and crash-safe (see the module).
    pub async fn meter_leases(&self) {
        let holds: Vec<Transfer> = self
            .books
            .read(|books| {
                books.ledger.open_pending().filter(|t| matches!(t.credit, AccountKey::Escrow(_))).cloned().collect()
            })
            .await;
        for hold in holds {
            if let Err(error) = self.meter(&hold, false).await.map(drop) {
                tracing::warn!(hold = %hold.id, %error, "metering failed; retrying next tick");
            }
        }
    }

    /// Meters one lease up to now (see the module on how far). `force` posts even an
    /// immaterial amount (just before the lease ends).
    /// Returns the amount released when the lease ended (0 otherwise).
    async fn meter(&self, current: &Transfer, force: bool) -> Result<u64, PostError> {
        let Some((cluster, from)) = parse_hold(&current.id) else { return Ok(0) };
        let Some(terms) = self.store.lease_terms(&cluster).await? else {
            // The hold is placed just before its cluster is committed: a young hold without a
            // cluster is one being created. Only an old one is an orphan (its creation failed
            // after the hold) and is released.
            if now().0 - from > ORPHAN_HOLD_AGE_MS {
                return self.void_hold(current).await.map(|()| 0);
            }
            return Ok(0);
        };
        let end = terms.ended_at_ms.unwrap_or(terms.expires_at_ms);
        let mut until = now().0.min(end).max(from);
        if terms.running {
            let horizon = terms.nodes.iter().filter(|n| n.left_ms.is_none()).map(|n| n.seen_ms).min();
            if let Some(horizon) = horizon {
                until = until.min(horizon).max(from);
            }
        }
        let ending = !terms.running || until >= end;
        // Nothing new to post: posting an empty period would close the hold and re-open it
        // under the same id (a no-op), releasing the rest of the lease's money.
        if !ending && until <= from {
            return Ok(0);
        }
        if !ending && !force && until - from < METER_PERIOD_MIN_MS {
            return Ok(0);
        }
        let asset = terms.asset;
        let escrow = AccountKey::Escrow(cluster.to_string());
        let supplier_fee_bps = RESERVATION_FEE_BPS + asset.payment_fee_bps();
        let mut pays: Vec<(i64, Address, u64)> = terms
            .nodes
            .iter()
            .map(|n| {
                let usd = i128::from(n.node_hour_micros) * i128::from(n.overlap_ms(from, until)) / HOUR_MS;
                (n.epoch, n.supplier.clone(), in_asset(usd, asset, self.oracle.io_price_micros()))
            })
            .filter(|p| p.2 > 0)
            .collect();
        let consumed: u64 = pays.iter().map(|p| p.2).sum();
        if !ending && !force && consumed < POST_UNITS_MIN {
            return Ok(0);
        }
        let mut customer_fee = fee(consumed, customer_fee_bps(asset));
        // A hold covers the whole lease; should rounding ever exceed it, pay what it holds.
        if consumed + customer_fee > current.amount {
            let scale =
                |v: u64| (u128::from(v) * u128::from(current.amount) / u128::from(consumed + customer_fee)) as u64;
            for pay in &mut pays {
                pay.2 = scale(pay.2);
            }
            customer_fee = scale(customer_fee);
        }
        let posted: u64 = pays.iter().map(|p| p.2).sum::<u64>() + customer_fee;
        let tag = format!("{cluster}:{from}");
        let mut batch = vec![Transfer {
            id: format!("post:{tag}"),
            amount: posted,
            kind: TransferKind::Post { pending_id: current.id.clone() },
            code: "lease-metering".into(),
            ..current.clone()
        }];
        let mut fees = customer_fee;
        for (epoch, supplier, pay) in pays.iter().filter(|p| p.2 > 0) {
            let supplier_fee = fee(*pay, supplier_fee_bps);
            fees += supplier_fee;
            batch.push(Transfer {
                id: format!("pay:{tag}:{epoch}"),
                debit: escrow.clone(),
                credit: AccountKey::User(supplier.to_string()),
                asset,
                amount: pay - supplier_fee,
                kind: TransferKind::Single,
                code: "lease-earning".into(),
            });
        }
        if fees > 0 {
            batch.push(Transfer {
                id: format!("fee:{tag}"),
                debit: escrow.clone(),
                credit: AccountKey::FeePool,
                asset,
                amount: fees,
                kind: TransferKind::Single,
                code: "fees".into(),
            });
        }
        let remaining = current.amount - posted;
        if !ending && remaining > 0 {
            batch.push(hold(&cluster, &terms.owner, asset, hold_id(&cluster, until), remaining, terms.expires_at_ms));
        }
        self.post(&batch).await?;
        Ok(if ending { remaining } else { 0 })
    }

    /// Bills a lease up to now while its nodes are attached (call just before it ends).
    pub async fn bill_until_now(&self, cluster: &ClusterId) {
        if let Some(hold) = self.lease_hold(cluster).await {
            if let Err(error) = self.meter(&hold, true).await.map(drop) {
                tracing::warn!(%cluster, %error, "could not bill the lease before its end");
            }
        }
    }

    /// Settles a lease that ended: posts what remains to post and releases the rest; returns
    /// the amount released (in the lease's asset).
    pub async fn settle_lease(&self, cluster: &ClusterId) -> u64 {
        let Some(hold) = self.lease_hold(cluster).await else { return 0 };
        match self.meter(&hold, true).await {
            Ok(released) => released,
            Err(error) => {
                tracing::warn!(%cluster, %error, "could not settle the lease; the next metering tick retries");
                0
            }
        }
    }

    /// Pays a refund in credits instead of the lease's asset: the released amount goes to the
    /// treasury and the same USD value is minted as credits to the customer, atomically.
    pub async fn refund_in_credits(
        &self,
        cluster: &ClusterId,
        owner: &Address,
        asset: Asset,
        released: u64,
    ) -> Result<(), PostError> {
        if released == 0 || asset == Asset::Credits {
            return Ok(());
        }
        let usd = match asset {
            Asset::Io => (u128::from(released) * self.oracle.io_price_micros().max(0) as u128 / 1_000_000) as u64,
            Asset::Usdc | Asset::Credits => released,
        };
        let user = AccountKey::User(owner.to_string());
        let batch = [
            Transfer {
                id: format!("refund-swap:{cluster}"),
                debit: user.clone(),
                credit: AccountKey::Treasury,
                asset,
                amount: released,
                kind: TransferKind::Single,
                code: "refund-to-credits".into(),
            },
            Transfer {
                id: format!("refund-credits:{cluster}"),
                debit: AccountKey::Issuance,
                credit: user,
                asset: Asset::Credits,
                amount: usd,
                kind: TransferKind::Single,
                code: "refund-in-credits".into(),
            },
        ];
        self.post(&batch).await.map(drop)
    }

    /// Voids holds that outlived their lease's grace (normally metering releases them first).
    pub async fn expire_holds(&self) {
        let expired: Vec<Transfer> = self
            .books
            .read(|books| {
                let ids = books.ledger.expired(now().0);
                books.ledger.open_pending().filter(|t| ids.contains(&t.id)).cloned().collect()
            })
            .await;
        for hold in expired {
            if let Err(error) = self.void_hold(&hold).await {
                tracing::warn!(hold = %hold.id, %error, "could not release an expired hold");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_ids_carry_the_metering_cursor() {
        let cluster = ClusterId::from_entropy([3; 8]);
        assert_eq!(parse_hold(&hold_id(&cluster, 1234)), Some((cluster.clone(), 1234)));
        assert_eq!(parse_hold(&format!("{}:x99", hold_id(&cluster, 5))), Some((cluster, 5)));
        assert_eq!(parse_hold("post:cl-x:1"), None);
    }

    #[test]
    fn a_tenure_is_billed_only_for_the_part_of_a_period_it_covers() {
        let node = |joined_ms, left_ms| BillableNode {
            epoch: 1,
            supplier: Address::from_public_key(&[1; 32]),
            node_hour_micros: 3_600_000,
            joined_ms,
            left_ms,
            seen_ms: joined_ms,
        };
        assert_eq!(node(0, None).overlap_ms(1_000, 5_000), 4_000, "held all along");
        assert_eq!(node(2_000, None).overlap_ms(1_000, 5_000), 3_000, "a replacement from when it joined");
        assert_eq!(node(0, Some(1_500)).overlap_ms(1_000, 5_000), 500, "a lost node to its last heartbeat");
        assert_eq!(node(0, Some(900)).overlap_ms(1_000, 5_000), 0, "gone before the period");
        assert_eq!(node(6_000, None).overlap_ms(1_000, 5_000), 0, "joined after it");
    }

    #[test]
    fn io_is_converted_at_the_oracle_price() {
        assert_eq!(in_asset(5_000_000, Asset::Usdc, 2_000_000), 5_000_000);
        assert_eq!(in_asset(5_000_000, Asset::Io, 2_000_000), 2_500_000, "$5 at $2/IO is 2.5 IO");
        assert_eq!(in_asset(-1, Asset::Credits, 1), 0);
    }
}
