//! Proofs of compute: the record of every challenge, the device's standing that follows
//! from it (admitted, blocked, next re-check), and the reputation pass.

use herd_core::device::DeviceEvent as Event;
use herd_core::reputation::{self, Record};
use herd_core::{Address, DeviceSpec, DeviceState, Timestamp};
use herd_proto::proof::{ProofOutcome, Verification};
use herd_verify::Params;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::devices::{apply_event, device_state, set_pending_reason};
use super::{json_col, parse_col, Store, StoreResult};

pub struct NewVerification<'a> {
    pub id: &'a str,
    pub device: &'a Address,
    pub purpose: &'a str,
    pub claim: &'a str,
    /// `DeviceSpec::admission_claim` of what the challenge was sized for; a pass admits the
    /// device for exactly this.
    pub claim_key: &'a str,
    pub params: Params,
    pub expected_ms: u64,
    pub deadline_ms: u64,
}

/// A device due for a proof, with what the challenge is sized from.
#[derive(Debug, Clone)]
pub struct DueDevice {
    pub id: Address,
    pub owner: Address,
    pub state: DeviceState,
    pub admitted: bool,
    pub flag_reason: Option<String>,
    pub simulated: bool,
    pub spec: DeviceSpec,
}

/// How a finished proof changes the device.
#[derive(Debug, Clone)]
pub enum Finish {
    Passed {
        next_check_at: Timestamp,
    },
    Failed,
    /// The deadline passed without a commitment: a strike. At `strikes_max` strikes in a
    /// row the device is blocked; until then it is challenged again at `retry_at` (a busy
    /// network or coordinator can delay an honest answer; a fake device misses every time).
    Missed {
        strikes_max: u32,
        retry_at: Timestamp,
    },
    /// Not a verdict: try again at `retry_at`.
    Inconclusive {
        outcome: ProofOutcome,
        retry_at: Timestamp,
    },
}

/// A challenge's result: what it does to the device, why, and its timings.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub finish: Finish,
    pub reason: String,
    pub committed_at: Option<Timestamp>,
    /// Coordinator CPU spent checking, if it got that far.
    pub verify_us: Option<u64>,
}

const COLUMNS: &str = "id, device_id, purpose, claim, n, row_count, steps, stride, openings, expected_ms, deadline_ms,
    issued_at, committed_at, finished_at, outcome, reason, verify_us";

fn verification_from_row(row: &AnyRow) -> StoreResult<Verification> {
    let params = Params {
        n: row.get::<i64, _>("n") as u32,
        rows: row.get::<i64, _>("row_count") as u32,
        steps: row.get::<i64, _>("steps") as u32,
        stride: row.get::<i64, _>("stride") as u32,
        openings: row.get::<i64, _>("openings") as u32,
    };
    let outcome: &str = row.get("outcome");
    Ok(Verification {
        id: row.get("id"),
        device: parse_col("verifications.device_id", row.get("device_id"))?,
        purpose: row.get("purpose"),
        claim: row.get("claim"),
        n: params.n,
        rows: params.rows,
        steps: params.steps,
        stride: params.stride,
        openings: params.openings,
        work_gflop: (params.flops() / 1_000_000_000).min(u128::from(u64::MAX)) as u64,
        expected_ms: row.get::<i64, _>("expected_ms") as u64,
        deadline_ms: row.get::<i64, _>("deadline_ms") as u64,
        issued_at: Timestamp(row.get("issued_at")),
        committed_at: row.get::<Option<i64>, _>("committed_at").map(Timestamp),
        finished_at: row.get::<Option<i64>, _>("finished_at").map(Timestamp),
        outcome: ProofOutcome::parse(outcome)
            .ok_or_else(|| super::corrupt("verifications.outcome", format!("unknown outcome {outcome:?}")))?,
        reason: row.get("reason"),
        verify_us: row.get::<Option<i64>, _>("verify_us").map(|us| us.max(0) as u64),
    })
}

/// Challenges kept per device (the explorer's proof history); older ones are deleted.
pub const VERIFICATIONS_KEPT: i64 = 100;
/// The longest wait between challenges of a device that keeps missing or declining.
const BACKOFF_MAX_MS: i64 = 3_600_000;

/// The retry time for the `in_row`-th miss or decline in a row: the base wait doubled for
/// each earlier one, at most an hour.
fn backed_off(now: Timestamp, retry_at: Timestamp, in_row: i64) -> i64 {
    let base = (retry_at.0 - now.0).max(1_000);
    let doublings = (in_row - 1).clamp(0, 12) as u32;
    now.0 + base.saturating_mul(1 << doublings).min(BACKOFF_MAX_MS.max(base))
}

/// The coordinator blocked a device on a proof's verdict: the audit log says so.
async fn audit_block(
    conn: &mut AnyConnection,
    device: &Address,
    verification: &str,
    why: &str,
    now: Timestamp,
) -> StoreResult<()> {
    let entry = super::NewAudit::new(super::audit::COORDINATOR, "device.block", Some(device.to_string()))
        .detail(serde_json::json!({ "reason": why, "verification": verification }));
    super::audit::record(conn, &entry, now).await
}

/// What the device claims now (`DeviceSpec::admission_claim` of its stored spec).
async fn current_claim(conn: &mut AnyConnection, id: &Address) -> StoreResult<String> {
    let row =
        sqlx::query("SELECT spec, simulated FROM devices WHERE id = $1").bind(id.as_str()).fetch_one(conn).await?;
    let spec: DeviceSpec = json_col("devices.spec", row.get("spec"))?;
    Ok(spec.admission_claim(super::flag(&row, "simulated")))
}

/// What a challenge was sized for (None for challenges from before claims were recorded).
async fn proven_claim(conn: &mut AnyConnection, verification: &str) -> StoreResult<Option<String>> {
    let row =
        sqlx::query("SELECT claim_key FROM verifications WHERE id = $1").bind(verification).fetch_one(conn).await?;
    Ok(row.get("claim_key"))
}

/// Recomputes one device's reputation from its stored record.
pub(super) async fn refresh_reputation(conn: &mut AnyConnection, id: &Address) -> StoreResult<()> {
    let row = sqlx::query(
        "SELECT uptime_ppm, verifications_passed, verifications_failed, leases_completed, leases_interrupted
         FROM devices WHERE id = $1",
    )
    .bind(id.as_str())
    .fetch_one(&mut *conn)
    .await?;
    let score = reputation::score(&record_from_row(&row));
    sqlx::query("UPDATE devices SET reputation = $1 WHERE id = $2")
        .bind(i64::from(score))
        .bind(id.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

fn record_from_row(row: &AnyRow) -> Record {
    let count = |column: &str| row.get::<i64, _>(column).clamp(0, i64::from(u32::MAX)) as u32;
    Record {
        uptime_ppm: count("uptime_ppm"),
        verifications_passed: count("verifications_passed"),
        verifications_failed: count("verifications_failed"),
        leases_completed: count("leases_completed"),
        leases_interrupted: count("leases_interrupted"),
    }
}

/// One challenge's row, and a ready device proving itself for admission back to pending.
async fn begin_one(tx: &mut AnyConnection, new: &NewVerification<'_>, now: Timestamp) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO verifications (id, device_id, purpose, claim, claim_key, n, row_count, steps, stride,
            openings, expected_ms, deadline_ms, issued_at, outcome)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'running')",
    )
    .bind(new.id)
    .bind(new.device.as_str())
    .bind(new.purpose)
    .bind(new.claim)
    .bind(new.claim_key)
    .bind(i64::from(new.params.n))
    .bind(i64::from(new.params.rows))
    .bind(i64::from(new.params.steps))
    .bind(i64::from(new.params.stride))
    .bind(i64::from(new.params.openings))
    .bind(new.expected_ms as i64)
    .bind(new.deadline_ms as i64)
    .bind(now.0)
    .execute(&mut *tx)
    .await?;
    // A device's record is bounded: only its latest challenges are kept.
    sqlx::query(
        "DELETE FROM verifications WHERE device_id = $1 AND id NOT IN
            (SELECT id FROM verifications WHERE device_id = $1 ORDER BY issued_at DESC, id LIMIT $2)",
    )
    .bind(new.device.as_str())
    .bind(VERIFICATIONS_KEPT)
    .execute(&mut *tx)
    .await?;
    if new.purpose == "admission" && device_state(&mut *tx, new.device).await? == Some(DeviceState::Ready) {
        apply_event(&mut *tx, new.device, DeviceState::Ready, Event::Requalify, "proving its hardware again", now)
            .await?;
    }
    Ok(())
}

/// One verdict applied to its challenge and device (see `Store::finish_verification`).
async fn finish_one(
    tx: &mut AnyConnection,
    id: &str,
    device: &Address,
    verdict: &Verdict,
    now: Timestamp,
) -> StoreResult<Option<DeviceState>> {
    let Verdict { finish, reason, committed_at, verify_us } = verdict;
    let reason = reason.as_str();
    let outcome = match finish {
        Finish::Passed { .. } => ProofOutcome::Passed,
        Finish::Failed | Finish::Missed { .. } => ProofOutcome::Failed,
        Finish::Inconclusive { outcome, .. } => *outcome,
    };
    let updated = sqlx::query(
        "UPDATE verifications SET outcome = $1, reason = $2, committed_at = $3, finished_at = $4, verify_us = $5
         WHERE id = $6 AND outcome = 'running'",
    )
    .bind(outcome.as_str())
    .bind(reason)
    .bind(committed_at.map(|t| t.0))
    .bind(now.0)
    .bind(verify_us.map(|us| us as i64))
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(None); // already closed (e.g. aborted by a restart)
    }
    let Some(mut state) = device_state(&mut *tx, device).await? else {
        return Ok(None);
    };
    let claim_now = current_claim(&mut *tx, device).await?;
    match finish {
        Finish::Passed { .. } if proven_claim(&mut *tx, id).await?.as_deref() != Some(claim_now.as_str()) => {
            // The device claims something else than what this challenge was sized for
            // (it reconnected with other hardware meanwhile): the pass vouches for nothing.
            sqlx::query("UPDATE devices SET next_verification_at = NULL WHERE id = $1")
                .bind(device.as_str())
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE verifications SET outcome = 'aborted', reason = $1 WHERE id = $2")
                .bind("the device's claim changed while it was proving")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        Finish::Passed { next_check_at } => {
            sqlx::query(
                "UPDATE devices SET admitted = 1, admitted_claim = $1, verified_at = $2, next_verification_at = $3,
                    verifications_passed = verifications_passed + 1, deadline_strikes = 0, inconclusive_in_row = 0,
                    security = CASE WHEN simulated = 1 THEN 'any' WHEN security = 'datacenter' THEN 'datacenter'
                                    ELSE 'verified' END
                 WHERE id = $4",
            )
            .bind(&claim_now)
            .bind(now.0)
            .bind(next_check_at.0)
            .bind(device.as_str())
            .execute(&mut *tx)
            .await?;
            if state == DeviceState::Pending {
                let why = format!("admitted: passed proof of compute ({reason})");
                state = apply_event(&mut *tx, device, state, Event::Admit, &why, now).await?;
            }
        }
        Finish::Missed { strikes_max, retry_at } => {
            let row = sqlx::query(
                "UPDATE devices SET deadline_strikes = deadline_strikes + 1,
                    verifications_failed = verifications_failed + 1
                 WHERE id = $1 RETURNING deadline_strikes",
            )
            .bind(device.as_str())
            .fetch_one(&mut *tx)
            .await?;
            let strikes: i64 = row.get(0);
            // Each miss in a row doubles the wait: a device that cannot answer in time
            // does not take proof slots from those that can.
            sqlx::query("UPDATE devices SET next_verification_at = $1 WHERE id = $2")
                .bind(backed_off(now, *retry_at, strikes))
                .bind(device.as_str())
                .execute(&mut *tx)
                .await?;
            if strikes >= i64::from(*strikes_max) {
                sqlx::query(
                    "UPDATE devices SET admitted = 0, next_verification_at = NULL, security = 'any' WHERE id = $1",
                )
                .bind(device.as_str())
                .execute(&mut *tx)
                .await?;
                let why = format!("failed proof of compute: {reason} ({strikes} times in a row)");
                state = apply_event(&mut *tx, device, state, Event::Block, &why, now).await?;
                audit_block(&mut *tx, device, id, &why, now).await?;
            } else {
                let why = format!("awaiting proof of compute: {reason} (strike {strikes} of {strikes_max})");
                set_pending_reason(&mut *tx, device, state, &why).await?;
            }
        }
        Finish::Failed => {
            sqlx::query(
                "UPDATE devices SET admitted = 0, next_verification_at = NULL, security = 'any',
                    verifications_failed = verifications_failed + 1
                 WHERE id = $1",
            )
            .bind(device.as_str())
            .execute(&mut *tx)
            .await?;
            let why = format!("failed proof of compute: {reason}");
            state = apply_event(&mut *tx, device, state, Event::Block, &why, now).await?;
            audit_block(&mut *tx, device, id, &why, now).await?;
        }
        Finish::Inconclusive { retry_at, .. } => {
            let row = sqlx::query(
                "UPDATE devices SET inconclusive_in_row = inconclusive_in_row + 1 WHERE id = $1
                 RETURNING inconclusive_in_row",
            )
            .bind(device.as_str())
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("UPDATE devices SET next_verification_at = $1 WHERE id = $2")
                .bind(backed_off(now, *retry_at, row.get(0)))
                .bind(device.as_str())
                .execute(&mut *tx)
                .await?;
            set_pending_reason(&mut *tx, device, state, &format!("awaiting proof of compute: {reason}")).await?;
        }
    }
    refresh_reputation(&mut *tx, device).await?;
    Ok(Some(state))
}

impl Store {
    /// Records a new challenge. A ready device proving itself for admission (its hardware
    /// changed) goes back to pending first, so it is not hired meanwhile.
    pub async fn begin_verification(&self, new: &NewVerification<'_>, now: Timestamp) -> StoreResult<()> {
        self.begin_verifications(std::slice::from_ref(new), now).await
    }

    /// `begin_verification` for a scheduling pass's challenges, in one transaction (one
    /// commit, however many: a flood is challenged without a write per device).
    pub async fn begin_verifications(&self, news: &[NewVerification<'_>], now: Timestamp) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        for new in news {
            begin_one(&mut tx, new, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Closes a challenge (with when its commitment arrived, if it did) and applies its
    /// consequence to the device, in one transaction:
    /// a pass admits it (and schedules the next re-check), a failure blocks it, anything
    /// else leaves it as it was until the retry time. Returns the device's new state.
    pub async fn finish_verification(
        &self,
        id: &str,
        device: &Address,
        verdict: &Verdict,
        now: Timestamp,
    ) -> StoreResult<Option<DeviceState>> {
        let mut tx = self.begin_write().await?;
        let state = finish_one(&mut tx, id, device, verdict, now).await?;
        tx.commit().await?;
        Ok(state)
    }

    /// `finish_verification` for many verdicts in one transaction; the states in order.
    pub async fn finish_verifications(
        &self,
        verdicts: &[(String, Address, Verdict)],
        now: Timestamp,
    ) -> StoreResult<Vec<Option<DeviceState>>> {
        let mut tx = self.begin_write().await?;
        let mut states = Vec::with_capacity(verdicts.len());
        for (id, device, verdict) in verdicts {
            states.push(finish_one(&mut tx, id, device, verdict, now).await?);
        }
        tx.commit().await?;
        Ok(states)
    }

    /// At start-up: challenges a previous run left open can no longer be answered.
    pub async fn abort_running_verifications(&self, now: Timestamp) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE verifications SET outcome = 'aborted', reason = 'the coordinator restarted', finished_at = $1
             WHERE outcome = 'running'",
        )
        .bind(now.0)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected())
    }

    /// Devices to challenge now: pending ones (not flagged) whose retry time has come, and
    /// ready ones due a re-check or needing re-admission. Never hired ones. At most
    /// `per_owner` of each owner, interleaved across owners (every owner's first, then every
    /// owner's second, …; ties in random order), so one owner's thousands of devices cannot
    /// push another owner's few out of the first `limit`.
    pub async fn due_for_verification(
        &self,
        now: Timestamp,
        limit: u32,
        per_owner: u32,
    ) -> StoreResult<Vec<DueDevice>> {
        let rows = sqlx::query(
            "SELECT id, owner, state, admitted, flag_reason, simulated, spec FROM (
                SELECT id, owner, state, admitted, flag_reason, simulated, spec, next_verification_at,
                    ROW_NUMBER() OVER (PARTITION BY owner ORDER BY next_verification_at, id) AS owner_rank
                FROM devices
                WHERE (state = 'pending' AND flag_reason IS NULL
                       AND (next_verification_at IS NULL OR next_verification_at <= $1))
                   OR (state = 'ready' AND (admitted = 0 OR next_verification_at IS NULL OR next_verification_at <= $1))
             ) AS ranked
             WHERE owner_rank <= $3
             ORDER BY owner_rank, next_verification_at, RANDOM() LIMIT $2",
        )
        .bind(now.0)
        .bind(i64::from(limit))
        .bind(i64::from(per_owner))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DueDevice {
                    id: parse_col("devices.id", r.get("id"))?,
                    owner: parse_col("devices.owner", r.get("owner"))?,
                    state: parse_col("devices.state", r.get("state"))?,
                    admitted: super::flag(r, "admitted"),
                    flag_reason: r.get("flag_reason"),
                    simulated: super::flag(r, "simulated"),
                    spec: json_col("devices.spec", r.get("spec"))?,
                })
            })
            .collect()
    }

    /// A ready device that may not stay hireable (flagged): back to pending with the reason.
    pub async fn requalify(&self, id: &Address, reason: &str, now: Timestamp) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        if let Some(state) = device_state(&mut tx, id).await? {
            apply_event(&mut tx, id, state, Event::Requalify, reason, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Most recent first.
    pub async fn verifications(&self, device: &Address, limit: u32) -> StoreResult<Vec<Verification>> {
        let sql =
            format!("SELECT {COLUMNS} FROM verifications WHERE device_id = $1 ORDER BY issued_at DESC, id LIMIT $2");
        let rows = sqlx::query(&sql).bind(device.as_str()).bind(i64::from(limit)).fetch_all(&self.read).await?;
        rows.iter().map(verification_from_row).collect()
    }

    /// The reputation pass: ages every device's uptime EWMA by the time since its last pass
    /// (online = ready or hired) and recomputes its score. Returns the devices whose score
    /// changed, for the market index.
    pub async fn age_reputations(&self, now: Timestamp) -> StoreResult<Vec<Address>> {
        let rows = sqlx::query(
            "SELECT id, state, reputation, reputation_at, created_at, uptime_ppm, verifications_passed,
                verifications_failed, leases_completed, leases_interrupted
             FROM devices WHERE state != 'blocked'",
        )
        .fetch_all(&self.read)
        .await?;
        let mut changed = Vec::new();
        let mut tx = self.begin_write().await?;
        for row in &rows {
            let since = row.get::<Option<i64>, _>("reputation_at").unwrap_or_else(|| row.get("created_at"));
            let online = matches!(row.get::<&str, _>("state"), "ready" | "hired");
            let mut record = record_from_row(row);
            record.uptime_ppm = reputation::decay_uptime(record.uptime_ppm, online, now.0 - since);
            let score = reputation::score(&record);
            sqlx::query("UPDATE devices SET uptime_ppm = $1, reputation = $2, reputation_at = $3 WHERE id = $4")
                .bind(i64::from(record.uptime_ppm))
                .bind(i64::from(score))
                .bind(now.0)
                .bind(row.get::<&str, _>("id"))
                .execute(&mut *tx)
                .await?;
            if i64::from(score) != row.get::<i64, _>("reputation") {
                changed.push(parse_col("devices.id", row.get("id"))?);
            }
        }
        tx.commit().await?;
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misses_and_declines_in_a_row_double_the_wait_up_to_an_hour() {
        let now = Timestamp(1_000_000);
        let retry = Timestamp(now.0 + 60_000);
        let waits: Vec<i64> = (1..=8).map(|n| backed_off(now, retry, n) - now.0).collect();
        assert_eq!(waits[..4], [60_000, 120_000, 240_000, 480_000]);
        assert_eq!(*waits.last().unwrap(), BACKOFF_MAX_MS, "capped");
    }
}
