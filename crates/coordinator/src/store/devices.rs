//! Devices: registration on hello, heartbeats, state changes (each one recorded), listings.

use herd_core::device::DeviceEvent as Event;
use herd_core::{Address, ConnectivityTier, DeviceSpec, DeviceState, Timestamp};
use herd_proto::api;
use herd_proto::worker::HelloPayload;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{json_col, parse_col, Store, StoreResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloOutcome {
    pub state: DeviceState,
    pub registered: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloRefusal {
    OwnedByOther,
    Blocked(String),
    /// The hello says `simulated: claimed`; the device registered the other way. A simulated
    /// device proved only a token-sized challenge: it can never become a real one.
    SimulatedChanged {
        claimed: bool,
    },
}

#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    pub state: Option<DeviceState>,
    pub gpu_model: Option<String>,
    pub country: Option<String>,
    pub owner: Option<Address>,
    /// The connectivity tier (`none`, `low`, … `ultra`).
    pub connectivity: Option<String>,
    /// Devices whose id starts with this (a short id as tables show it).
    pub id_prefix: Option<String>,
    pub limit: u32,
    pub offset: u32,
}

const DEVICE_COLUMNS: &str = "id, owner, state, state_reason, simulated, country, gpu_model, gpu_count, spec, \
     cluster_id, utilization, last_heartbeat_at, created_at, connectivity, security, reputation, floor_micros, cpu_cores, \
     overlay_unavailable";

fn device_from_row(row: &AnyRow) -> StoreResult<api::Device> {
    let cluster_id: Option<String> = row.get("cluster_id");
    let utilization: Option<String> = row.get("utilization");
    Ok(api::Device {
        id: parse_col("devices.id", row.get("id"))?,
        owner: parse_col("devices.owner", row.get("owner"))?,
        state: parse_col("devices.state", row.get("state"))?,
        state_reason: row.get("state_reason"),
        simulated: super::flag(row, "simulated"),
        country: row.get("country"),
        gpu_model: row.get("gpu_model"),
        gpu_count: row.get::<i64, _>("gpu_count") as u32,
        spec: json_col("devices.spec", row.get("spec"))?,
        cluster_id: cluster_id.map(|c| parse_col("devices.cluster_id", &c)).transpose()?,
        connectivity: parse_col("devices.connectivity", row.get("connectivity"))?,
        security: parse_col("devices.security", row.get("security"))?,
        reputation: row.get::<i64, _>("reputation").clamp(0, 1000) as u16,
        floor_micros: row.get::<Option<i64>, _>("floor_micros").unwrap_or_else(|| {
            super::default_floor_micros(row.get("gpu_model"), row.get::<i64, _>("cpu_cores") as u32)
        }),
        connected: false,
        last_heartbeat_at: row.get::<Option<i64>, _>("last_heartbeat_at").map(Timestamp),
        utilization: utilization.map(|u| json_col("devices.utilization", &u)).transpose()?,
        created_at: Timestamp(row.get("created_at")),
        overlay_unavailable: row.get("overlay_unavailable"),
    })
}

/// Applies `event` to the device's current state and records the change; a transition the
/// state machine forbids is skipped (and logged) rather than written.
pub(super) async fn apply_event(
    conn: &mut AnyConnection,
    id: &Address,
    from: DeviceState,
    event: Event,
    reason: &str,
    now: Timestamp,
) -> StoreResult<DeviceState> {
    let to = match from.next(event) {
        Ok(to) => to,
        Err(refused) => {
            tracing::warn!(device = %id, %refused, "state change refused");
            return Ok(from);
        }
    };
    if to != from {
        record_state(conn, id, Some(from), to, reason, now).await?;
    }
    // The lease record behind reputation: a lease ends either released or dropped.
    let counter = match (from, to) {
        (DeviceState::Hired, DeviceState::Ready) => Some("leases_completed"),
        (DeviceState::Hired, DeviceState::Offline | DeviceState::Blocked) => Some("leases_interrupted"),
        _ => None,
    };
    if let Some(counter) = counter {
        let sql = format!("UPDATE devices SET {counter} = {counter} + 1 WHERE id = $1");
        sqlx::query(&sql).bind(id.as_str()).execute(&mut *conn).await?;
        super::verifications::refresh_reputation(conn, id).await?;
    }
    Ok(to)
}

pub(super) async fn record_state(
    conn: &mut AnyConnection,
    id: &Address,
    from: Option<DeviceState>,
    to: DeviceState,
    reason: &str,
    now: Timestamp,
) -> StoreResult<()> {
    sqlx::query("UPDATE devices SET state = $1, state_reason = $2 WHERE id = $3")
        .bind(to.as_str())
        .bind(reason)
        .bind(id.as_str())
        .execute(&mut *conn)
        .await?;
    sqlx::query("INSERT INTO device_events (device_id, from_state, to_state, reason, at) VALUES ($1, $2, $3, $4, $5)")
        .bind(id.as_str())
        .bind(from.map(|s| s.as_str()))
        .bind(to.as_str())
        .bind(reason)
        .bind(now.0)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Stores the GPU UUIDs the device reports and flags it (and any other device reporting one
/// of them) while a UUID is reported twice: one physical GPU cannot be two devices. Blocked
/// devices do not count, so an operator clears a flag by blocking the impostor.
async fn record_gpus(
    conn: &mut AnyConnection,
    id: &Address,
    spec: &herd_core::DeviceSpec,
    now: Timestamp,
) -> StoreResult<()> {
    sqlx::query("DELETE FROM device_gpus WHERE device_id = $1").bind(id.as_str()).execute(&mut *conn).await?;
    let mut clash: Option<(String, String)> = None;
    for gpu in spec.gpus.iter().filter(|g| !g.uuid.is_empty()) {
        sqlx::query("INSERT INTO device_gpus (uuid, device_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(&gpu.uuid)
            .bind(id.as_str())
            .execute(&mut *conn)
            .await?;
        let others = sqlx::query(
            "SELECT g.device_id FROM device_gpus g JOIN devices d ON d.id = g.device_id
             WHERE g.uuid = $1 AND g.device_id != $2 AND d.state != 'blocked'",
        )
        .bind(&gpu.uuid)
        .bind(id.as_str())
        .fetch_all(&mut *conn)
        .await?;
        for other in &others {
            let other: Address = parse_col("device_gpus.device_id", other.get(0))?;
            flag(conn, &other, &format!("GPU {} is also reported by device {id}", gpu.uuid), now).await?;
            clash.get_or_insert((gpu.uuid.clone(), other.to_string()));
        }
    }
    match clash {
        Some((uuid, other)) => flag(conn, id, &format!("GPU {uuid} is also reported by device {other}"), now).await,
        None => {
            sqlx::query("UPDATE devices SET flag_reason = NULL WHERE id = $1")
                .bind(id.as_str())
                .execute(&mut *conn)
                .await?;
            Ok(())
        }
    }
}

/// The device's current state, if it exists.
pub(super) async fn device_state(conn: &mut AnyConnection, id: &Address) -> StoreResult<Option<DeviceState>> {
    let row = sqlx::query("SELECT state FROM devices WHERE id = $1").bind(id.as_str()).fetch_optional(conn).await?;
    row.map(|r| parse_col("devices.state", r.get(0))).transpose()
}

/// Says why a pending device is still pending (other states keep their own reason).
pub(super) async fn set_pending_reason(
    conn: &mut AnyConnection,
    id: &Address,
    state: DeviceState,
    reason: &str,
) -> StoreResult<()> {
    if state == DeviceState::Pending {
        sqlx::query("UPDATE devices SET state_reason = $1 WHERE id = $2")
            .bind(reason)
            .bind(id.as_str())
            .execute(conn)
            .await?;
    }
    Ok(())
}

async fn flag(conn: &mut AnyConnection, id: &Address, reason: &str, now: Timestamp) -> StoreResult<()> {
    sqlx::query("UPDATE devices SET flag_reason = $1, admitted = 0, state_reason = $2 WHERE id = $3")
        .bind(reason)
        .bind(format!("flagged: {reason}"))
        .bind(id.as_str())
        .execute(&mut *conn)
        .await?;
    if device_state(conn, id).await? == Some(DeviceState::Ready) {
        let why = format!("flagged: {reason}");
        apply_event(conn, id, DeviceState::Ready, Event::Requalify, &why, now).await?;
    }
    Ok(())
}

impl Store {
    /// Registers a device on its first authenticated hello, or refreshes what it reports and
    /// brings it back online. A device stays bound to the owner it first registered with.
    pub async fn device_hello(
        &self,
        hello: &HelloPayload,
        now: Timestamp,
    ) -> StoreResult<Result<HelloOutcome, HelloRefusal>> {
        let id = &hello.device_key;
        let offer = hello.spec.gpu_offer();
        let spec = serde_json::to_string(&hello.spec).expect("a spec always serialises");
        let claim = hello.spec.admission_claim(hello.simulated);
        let mut tx = self.begin_write().await?;
        let existing = sqlx::query(
            "SELECT owner, state, state_reason, admitted, admitted_claim, cluster_id, simulated FROM devices WHERE id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let registered = existing.is_none();
        let (mut state, admitted, leased) = match existing {
            None => {
                sqlx::query(
                    "INSERT INTO devices (id, owner, state, state_reason, simulated, country, gpu_model, gpu_count,
                        spec, advertise_addr, last_heartbeat_at, created_at)
                     VALUES ($1, $2, 'pending', 'registered', $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(id.as_str())
                .bind(hello.owner.as_str())
                .bind(i64::from(hello.simulated))
                .bind(&hello.country)
                .bind(offer.map(|(m, _)| m.name))
                .bind(i64::from(offer.map_or(0, |(_, n)| n)))
                .bind(&spec)
                .bind(&hello.advertise_addr)
                .bind(now.0)
                .bind(now.0)
                .execute(&mut *tx)
                .await?;
                record_state(&mut tx, id, None, DeviceState::Pending, "registered", now).await?;
                (DeviceState::Pending, false, false)
            }
            Some(row) => {
                let owner: &str = row.get("owner");
                if owner != hello.owner.as_str() {
                    return Ok(Err(HelloRefusal::OwnedByOther));
                }
                let mut state: DeviceState = parse_col("devices.state", row.get("state"))?;
                if state == DeviceState::Blocked {
                    return Ok(Err(HelloRefusal::Blocked(row.get("state_reason"))));
                }
                if super::flag(&row, "simulated") != hello.simulated {
                    return Ok(Err(HelloRefusal::SimulatedChanged { claimed: hello.simulated }));
                }
                sqlx::query(
                    "UPDATE devices SET country = $1, gpu_model = $2, gpu_count = $3, spec = $4,
                        advertise_addr = $5, last_heartbeat_at = $6
                     WHERE id = $7",
                )
                .bind(&hello.country)
                .bind(offer.map(|(m, _)| m.name))
                .bind(i64::from(offer.map_or(0, |(_, n)| n)))
                .bind(&spec)
                .bind(&hello.advertise_addr)
                .bind(now.0)
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
                let leased = row.get::<Option<String>, _>("cluster_id").is_some();
                let mut admitted = super::flag(&row, "admitted");
                let proven: Option<String> = row.get("admitted_claim");
                if admitted && proven.as_deref() != Some(claim.as_str()) {
                    // What the last proof vouched for is not what the device claims now.
                    sqlx::query(
                        "UPDATE devices SET admitted = 0, admitted_claim = NULL, next_verification_at = NULL
                         WHERE id = $1",
                    )
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await?;
                    admitted = false;
                    if state == DeviceState::Ready {
                        state = apply_event(&mut tx, id, state, Event::Requalify, "hardware changed", now).await?;
                    }
                }
                (state, admitted, leased)
            }
        };
        // Only a simulated device may declare its link; a real one's tier is what the
        // coordinator measured (`api::speedtest`), and until then the lowest.
        let declared = hello.throughput.filter(|_| hello.simulated);
        let connectivity = declared.map(|t| ConnectivityTier::from_measurement(t.down_mbps, t.up_mbps));
        sqlx::query(
            "UPDATE devices SET cpu_cores = $1, ram_gib = $2, floor_micros = $3,
                connectivity = COALESCE($4, connectivity), down_mbps = COALESCE($5, down_mbps),
                up_mbps = COALESCE($6, up_mbps)
             WHERE id = $7",
        )
        .bind(i64::from(hello.spec.cpu.logical_cores))
        .bind((hello.spec.memory_bytes >> 30) as i64)
        .bind(hello.floor_micros)
        .bind(connectivity.map(|c| c.as_str()))
        .bind(declared.map(|t| i64::from(t.down_mbps)))
        .bind(declared.map(|t| i64::from(t.up_mbps)))
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        if state == DeviceState::Offline {
            state = apply_event(&mut tx, id, state, Event::Reconnect { admitted, leased }, "reconnected", now).await?;
        }
        // Admission is proof of compute's decision (`finish_verification`), never the hello's.
        record_gpus(&mut tx, id, &hello.spec, now).await?;
        tx.commit().await?;
        Ok(Ok(HelloOutcome { state, registered }))
    }

    /// The operator blocks a device (after `mark_offline` has handled what it was running) or
    /// lifts its block. Either way it loses its admission and its strikes: a blocked device
    /// cannot connect, an unblocked one is offline until it reconnects and proves itself from
    /// scratch. Audited in the same transaction. None if there is no such device; Some(false)
    /// if it already was (or was not) blocked.
    pub async fn operator_set_blocked(
        &self,
        id: &Address,
        blocked: bool,
        reason: &str,
        audit: &super::NewAudit,
        now: Timestamp,
    ) -> StoreResult<Option<bool>> {
        let mut tx = self.begin_write().await?;
        let Some(state) = device_state(&mut tx, id).await? else { return Ok(None) };
        if (state == DeviceState::Blocked) == blocked {
            return Ok(Some(false));
        }
        sqlx::query(
            "UPDATE devices SET admitted = 0, admitted_claim = NULL, next_verification_at = NULL, deadline_strikes = 0
             WHERE id = $1",
        )
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        let (event, why) = match blocked {
            true => (Event::Block, format!("blocked by the operator: {reason}")),
            false => (Event::Unblock, format!("unblocked by the operator: {reason}")),
        };
        apply_event(&mut tx, id, state, event, &why, now).await?;
        super::audit::record(&mut tx, audit, now).await?;
        tx.commit().await?;
        Ok(Some(true))
    }

    /// Stores the latest heartbeat of many devices in one transaction (the hub batches them,
    /// so heartbeats cost one commit per flush, not one per device).
    pub async fn record_heartbeats(&self, beats: &[(Address, Timestamp, api::Utilization)]) -> StoreResult<()> {
        if beats.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for (id, at, utilization) in beats {
            let utilization = serde_json::to_string(utilization).expect("utilization always serialises");
            sqlx::query("UPDATE devices SET last_heartbeat_at = $1, utilization = $2 WHERE id = $3")
                .bind(at.0)
                .bind(utilization)
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Online devices whose last stored heartbeat is older than `cutoff` (at most `limit`).
    pub async fn silent_devices(&self, cutoff: Timestamp, limit: u32) -> StoreResult<Vec<Address>> {
        let rows = sqlx::query(
            "SELECT id FROM devices WHERE state IN ('pending', 'ready', 'hired')
               AND COALESCE(last_heartbeat_at, created_at) < $1 ORDER BY id LIMIT $2",
        )
        .bind(cutoff.0)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| parse_col("devices.id", r.get(0))).collect()
    }

    /// Marks an online device offline (None if it was not online), in one transaction: the
    /// tasks it was running fail (their jobs are retried when they have retries left), and
    /// its tenure of a running cluster's rank ends at its last heartbeat, the rank left for
    /// the healer. A worker that comes back later is told to stop what it still runs.
    pub async fn mark_offline(
        &self,
        id: &Address,
        reason: &str,
        now: Timestamp,
    ) -> StoreResult<Option<super::healing::Loss>> {
        let mut tx = self.begin_write().await?;
        let Some(state) = device_state(&mut tx, id).await? else {
            return Ok(None);
        };
        if !matches!(state, DeviceState::Pending | DeviceState::Ready | DeviceState::Hired) {
            return Ok(None);
        }
        apply_event(&mut tx, id, state, Event::Disconnect, reason, now).await?;
        let lost_tasks = format!("lost: the device went offline ({reason})");
        let jobs = super::jobs::fail_device_tasks(&mut tx, id, &lost_tasks, now).await?;
        let mut loss = super::healing::Loss { jobs, ..Default::default() };
        let what = format!("a node was lost (its device went offline: {reason})");
        for job in &loss.jobs {
            if super::healing::want_retry(&mut tx, job, &what, now).await? {
                for (device, attempt) in super::healing::stop_for_retry(&mut tx, job, now).await? {
                    loss.stop_tasks.push((device, job.clone(), attempt));
                }
            }
        }
        super::healing::lose_tenure(&mut tx, id, reason, now, &mut loss).await?;
        tx.commit().await?;
        Ok(Some(loss))
    }

    /// Devices the database believes are online; the coordinator watches them for heartbeats
    /// after a restart.
    pub async fn online_device_ids(&self) -> StoreResult<Vec<Address>> {
        let rows = sqlx::query("SELECT id FROM devices WHERE state IN ('pending', 'ready', 'hired')")
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|r| parse_col("devices.id", r.get(0))).collect()
    }

    /// One page of an owner's devices, oldest first: read through the owner's index, so a late
    /// page of a large fleet skips index entries, not table rows.
    pub async fn owned_devices(&self, owner: &Address, limit: u32, offset: u32) -> StoreResult<Vec<api::Device>> {
        let sql =
            format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE owner = $1 ORDER BY created_at, id LIMIT $2 OFFSET $3");
        let rows = sqlx::query(&sql)
            .bind(owner.as_str())
            .bind(i64::from(limit))
            .bind(i64::from(offset))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(device_from_row).collect()
    }

    pub async fn list_devices(&self, filter: &DeviceFilter) -> StoreResult<Vec<api::Device>> {
        let sql = format!(
            "SELECT {DEVICE_COLUMNS} FROM devices
             WHERE ($1 IS NULL OR state = $1) AND ($2 IS NULL OR gpu_model = $2)
               AND ($3 IS NULL OR country = $3) AND ($4 IS NULL OR owner = $4) AND ($7 IS NULL OR connectivity = $7)
               AND ($8 IS NULL OR (id >= $8 AND id < $8 || '~'))
             ORDER BY created_at, id LIMIT $5 OFFSET $6"
        );
        let rows = sqlx::query(&sql)
            .bind(filter.state.map(|s| s.as_str()))
            .bind(filter.gpu_model.as_deref())
            .bind(filter.country.as_deref())
            .bind(filter.owner.as_ref().map(|o| o.as_str()))
            .bind(i64::from(filter.limit))
            .bind(i64::from(filter.offset))
            .bind(filter.connectivity.as_deref())
            // Ids are base58: every character sorts below '~', so the prefix is a key range.
            .bind(filter.id_prefix.as_deref())
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(device_from_row).collect()
    }

    /// The hardware a device last reported.
    pub async fn device_spec(&self, id: &Address) -> StoreResult<Option<DeviceSpec>> {
        let row =
            sqlx::query("SELECT spec FROM devices WHERE id = $1").bind(id.as_str()).fetch_optional(&self.read).await?;
        row.map(|r| json_col("devices.spec", r.get(0))).transpose()
    }

    pub async fn device(&self, id: &Address) -> StoreResult<Option<api::Device>> {
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1");
        let row = sqlx::query(&sql).bind(id.as_str()).fetch_optional(&self.read).await?;
        row.as_ref().map(device_from_row).transpose()
    }

    pub async fn device_events(&self, id: &Address, limit: u32) -> StoreResult<Vec<api::DeviceEvent>> {
        let rows = sqlx::query(
            "SELECT from_state, to_state, reason, at FROM device_events WHERE device_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(id.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(api::DeviceEvent {
                    from: r.get::<Option<&str>, _>(0).map(|s| parse_col("device_events.from_state", s)).transpose()?,
                    to: parse_col("device_events.to_state", r.get(1))?,
                    reason: r.get(2),
                    at: Timestamp(r.get(3)),
                })
            })
            .collect()
    }

    pub async fn device_counts_by_state(&self) -> StoreResult<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM devices GROUP BY state").fetch_all(&self.read).await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
