//! The rollup allowlist index (ADR 0013): the usage event types that billing rolls
//! up across tenants, folded from allowlist events inside the transaction that
//! appends them, so that a batch recorded after the command commits sees the change.

use chrono::{DateTime, Utc};
use cqrs_es::persist::SerializedEvent;
use serde_json::Value;
use sqlx::PgConnection;

use keel_domain::envelope::keys;
use keel_domain::rollup_allowlist::{self, RollupAllowlistEvent};

use crate::write_index::{WriteSideIndex, decode};

/// The rollup allowlist index: `billing_rollup_allowlist`.
#[derive(Debug, Clone, Copy)]
pub struct RollupAllowlistIndex;

impl WriteSideIndex for RollupAllowlistIndex {
    fn affects(&self, event: &SerializedEvent) -> bool {
        event.aggregate_type == rollup_allowlist::AGGREGATE_TYPE
    }

    async fn apply(&self, tx: &mut PgConnection, event: &SerializedEvent) -> Result<(), sqlx::Error> {
        if !self.affects(event) {
            return Ok(());
        }
        let meta = |key: &str| event.metadata.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
        match decode::<RollupAllowlistEvent>(event)? {
            RollupAllowlistEvent::Allowed { event_type } => {
                let at: DateTime<Utc> = meta(keys::OCCURRED_AT).parse().unwrap_or_else(|_| Utc::now());
                sqlx::query(
                    "INSERT INTO billing_rollup_allowlist (event_type, added_by, added_at) VALUES ($1, $2, $3)
                     ON CONFLICT (event_type) DO NOTHING",
                )
                .bind(event_type)
                .bind(format!("{}:{}", meta(keys::ACTOR_TYPE), meta(keys::ACTOR_ID)))
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            RollupAllowlistEvent::Disallowed { event_type } => {
                sqlx::query("DELETE FROM billing_rollup_allowlist WHERE event_type = $1")
                    .bind(event_type)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        Ok(())
    }
}
