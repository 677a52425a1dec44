//! How far the relay is behind the event store (for `/metrics` and the system health
//! API): the events committed but not yet published, the age of the oldest of them,
//! and the last offset the relay published on each partition (what projectors are
//! measured against).

use std::collections::HashMap;

use sqlx::PgPool;

/// The most unpublished events counted: beyond it the count says "at least this many",
/// so a scrape stays cheap however far behind the relay is.
pub const COUNT_CAP: i64 = 100_000;

/// The relay's distance from the newest commit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RelayLag {
    /// Committed events not yet published (at most [`COUNT_CAP`]).
    pub events: i64,
    /// Seconds since the oldest unpublished event occurred (0 when none is waiting).
    pub seconds: f64,
    /// Partition → offset of the last message the relay published there.
    pub published_offsets: HashMap<i32, i64>,
}

/// Where the relay publishing to `topic` stands against the event store.
pub async fn relay_lag(pool: &PgPool, topic: &str) -> Result<RelayLag, sqlx::Error> {
    let (events, seconds): (i64, f64) = sqlx::query_as(
        "SELECT count(*)::bigint,
                GREATEST(COALESCE(EXTRACT(EPOCH FROM now() - min(occurred_at)), 0), 0)::float8
         FROM (SELECT (metadata ->> 'occurred_at')::timestamptz AS occurred_at
               FROM events
               WHERE (txid, position) > (
                   COALESCE((SELECT txid FROM relay_checkpoint WHERE topic = $1), '0'::xid8),
                   COALESCE((SELECT position FROM relay_checkpoint WHERE topic = $1), 0))
               ORDER BY events.txid, events.position
               LIMIT $2) AS behind",
    )
    .bind(topic)
    .bind(COUNT_CAP)
    .fetch_one(pool)
    .await?;
    let published_offsets = published_offsets(pool, topic).await?;
    Ok(RelayLag { events, seconds, published_offsets })
}

/// The last offset the relay published on `topic`, per partition (one small read).
pub async fn published_offsets(pool: &PgPool, topic: &str) -> Result<HashMap<i32, i64>, sqlx::Error> {
    let offsets: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT offsets FROM relay_checkpoint WHERE topic = $1")
            .bind(topic)
            .fetch_optional(pool)
            .await?;
    let offsets: HashMap<String, i64> = offsets.and_then(|o| serde_json::from_value(o).ok()).unwrap_or_default();
    Ok(offsets.into_iter().filter_map(|(p, o)| Some((p.parse().ok()?, o))).collect())
}
