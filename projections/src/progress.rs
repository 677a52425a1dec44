//! Read-your-writes: has a read model applied everything up to a position?
//!
//! A command returns the position of its last event. That event has passed a read
//! model once (1) the relay has published it — its checkpoint is at or beyond the
//! event's global order, and records, per partition, the offset of the last
//! message published — and (2) the read model's stored next offset is beyond that
//! offset on every partition.

use std::collections::HashMap;

use sqlx::PgPool;

use crate::read_model::live_schema;

/// Where a read model stands relative to a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Everything up to the position is applied.
    Passed,
    /// Not yet.
    Pending,
    /// No event has this position.
    UnknownPosition,
}

/// Whether read model `name` has passed `position` (events published to `topic`).
pub async fn has_passed(pool: &PgPool, name: &str, topic: &str, position: i64) -> Result<Progress, sqlx::Error> {
    if position <= 0 {
        return Ok(Progress::Passed);
    }
    let Some(txid) = sqlx::query_scalar::<_, i64>("SELECT txid::text::bigint FROM events WHERE position = $1")
        .bind(position)
        .fetch_optional(pool)
        .await?
    else {
        return Ok(Progress::UnknownPosition);
    };
    let checkpoint: Option<(i64, i64, serde_json::Value)> =
        sqlx::query_as("SELECT txid::text::bigint, position, offsets FROM relay_checkpoint WHERE topic = $1")
            .bind(topic)
            .fetch_optional(pool)
            .await?;
    let Some((cp_txid, cp_position, offsets)) = checkpoint else {
        return Ok(Progress::Pending);
    };
    if (cp_txid, cp_position) < (txid, position) {
        return Ok(Progress::Pending);
    }
    let published: HashMap<String, i64> = serde_json::from_value(offsets).unwrap_or_default();
    let applied: HashMap<i32, i64> = sqlx::query_as::<_, (i32, i64)>(&format!(
        "SELECT partition, next_offset FROM {}._offsets WHERE topic = $1",
        live_schema(name)
    ))
    .bind(topic)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    let caught_up = published.iter().all(|(partition, last)| {
        partition.parse::<i32>().ok().and_then(|p| applied.get(&p)).is_some_and(|next| next > last)
    });
    Ok(if caught_up { Progress::Passed } else { Progress::Pending })
}
