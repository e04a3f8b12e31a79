//! The audit log: one row per privileged or money-moving action, append-only (the schema's
//! triggers refuse updates and deletes). Callers write it in the same transaction as the
//! action where the action is a database write, so neither exists without the other.

use herd_core::Timestamp;
use herd_proto::api::AuditEntry;
use sqlx::{AnyConnection, Row};

use super::{Store, StoreResult};

/// Who acted, when no account did.
pub const OPERATOR: &str = "operator";
pub const COORDINATOR: &str = "coordinator";

/// An action to record. `detail` must never hold a secret (keys, tokens, codes): amounts,
/// reasons and ids only.
#[derive(Debug, Clone)]
pub struct NewAudit {
    pub actor: String,
    pub action: &'static str,
    pub target: Option<String>,
    pub detail: serde_json::Value,
    pub origin: Option<String>,
    pub signature: Option<String>,
    /// The single-use id of an operator-signed action; a second row with it is refused.
    pub action_id: Option<String>,
}

impl NewAudit {
    pub fn new(actor: impl Into<String>, action: &'static str, target: Option<String>) -> NewAudit {
        NewAudit {
            actor: actor.into(),
            action,
            target,
            detail: serde_json::Value::Object(Default::default()),
            origin: None,
            signature: None,
            action_id: None,
        }
    }

    pub fn detail(mut self, detail: serde_json::Value) -> NewAudit {
        self.detail = detail;
        self
    }

    pub fn origin(mut self, origin: Option<String>) -> NewAudit {
        self.origin = origin;
        self
    }

    pub fn signed(mut self, signature: &str, action_id: Option<String>) -> NewAudit {
        self.signature = Some(signature.to_owned());
        self.action_id = action_id;
        self
    }
}

pub(super) async fn record(conn: &mut AnyConnection, entry: &NewAudit, now: Timestamp) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_log (at, actor, action, target, detail, origin, signature, action_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(now.0)
    .bind(&entry.actor)
    .bind(entry.action)
    .bind(entry.target.as_deref())
    .bind(entry.detail.to_string())
    .bind(entry.origin.as_deref())
    .bind(entry.signature.as_deref())
    .bind(entry.action_id.as_deref())
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// Records an action that is not itself a database write of ours (or whose write already
    /// happened elsewhere).
    pub async fn audit(&self, entry: &NewAudit, now: Timestamp) -> StoreResult<()> {
        let mut conn = self.write.acquire().await?;
        record(&mut conn, entry, now).await
    }

    /// Entries after `after` (by sequence), oldest first; optionally only those on `target`.
    pub async fn audit_entries(&self, after: i64, limit: u32, target: Option<&str>) -> StoreResult<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, target, detail, origin, signature FROM audit_log
             WHERE seq > $1 AND ($2 IS NULL OR target = $2) ORDER BY seq LIMIT $3",
        )
        .bind(after)
        .bind(target)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    seq: row.get("seq"),
                    at: Timestamp(row.get("at")),
                    actor: row.get("actor"),
                    action: row.get("action"),
                    target: row.get("target"),
                    detail: super::json_col("audit_log.detail", row.get("detail"))?,
                    origin: row.get("origin"),
                    signature: row.get("signature"),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::temp_store;

    #[tokio::test]
    async fn the_log_is_append_only_and_action_ids_are_single_use() {
        let (_dir, store, _) = temp_store().await;
        let entry = NewAudit::new(OPERATOR, "stake.slash", Some("dev".into()))
            .detail(serde_json::json!({ "amount_io": "1" }))
            .signed("sig", Some("slash:one".into()));
        store.audit(&entry, Timestamp(1)).await.unwrap();
        assert!(store.audit(&entry, Timestamp(2)).await.is_err(), "the same action id twice");
        for sql in ["UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"] {
            let refused = sqlx::query(sql).execute(&store.write).await.unwrap_err();
            assert!(refused.to_string().contains("append-only"), "{sql}: {refused}");
        }
        let entries = store.audit_entries(0, 10, Some("dev")).await.unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].actor.as_str(), entries[0].signature.as_deref()), (OPERATOR, Some("sig")));
    }
}
