//! What the relay reports about itself, and the backlog seen from the database: for
//! `/readyz`, metrics and the system health API (ADR 0017).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// What the relay of this process reports. Shared (`Arc`) between the relay, which
/// writes it, and readers; every field can be read at any time without locking.
#[derive(Debug, Default)]
pub struct RelayStatus {
    /// The relay task is alive (as leader or standby).
    pub alive: AtomicBool,
    /// This process holds the relay lock.
    pub leader: AtomicBool,
    /// The last publish attempt reached the broker.
    pub broker_ok: AtomicBool,
    /// Events published since start.
    pub published: AtomicU64,
    /// Events parked since start: refused by the broker for good, recorded in
    /// `relay_parked` and skipped.
    pub parked: AtomicU64,
    /// When the leader last made progress (Unix ms; 0: never).
    last_progress_ms: AtomicI64,
    /// Since when the leader has been failing without progress (Unix ms; 0: it is not).
    failing_since_ms: AtomicI64,
}

impl RelayStatus {
    /// When the leader last made progress: published a batch, or found nothing to publish.
    pub fn last_progress(&self) -> Option<DateTime<Utc>> {
        from_ms(self.last_progress_ms.load(Ordering::Relaxed))
    }

    /// Since when the leader has been failing (retrying) without progress, if it is.
    pub fn failing_since(&self) -> Option<DateTime<Utc>> {
        from_ms(self.failing_since_ms.load(Ordering::Relaxed))
    }

    /// How long the leader has been failing without progress, as of `now` (zero if it is not).
    pub fn failing_for(&self, now: DateTime<Utc>) -> Duration {
        self.failing_since().and_then(|since| (now - since).to_std().ok()).unwrap_or_default()
    }

    /// Records progress: a failure streak, if any, ends.
    pub fn progressed(&self) {
        self.last_progress_ms.store(Utc::now().timestamp_millis(), Ordering::Relaxed);
        self.failing_since_ms.store(0, Ordering::Relaxed);
    }

    /// Records a failure; returns how long the streak has lasted.
    pub fn failed(&self) -> Duration {
        let now = Utc::now();
        let _ = self.failing_since_ms.compare_exchange(0, now.timestamp_millis(), Ordering::Relaxed, Ordering::Relaxed);
        self.failing_for(now)
    }
}

fn from_ms(ms: i64) -> Option<DateTime<Utc>> {
    (ms != 0).then(|| DateTime::from_timestamp_millis(ms)).flatten()
}

/// Most pending events [`backlog`] counts (the count stops there).
pub const BACKLOG_COUNT_CAP: i64 = 10_000;

/// The relay's backlog on a topic, whichever process runs the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Committed events not published yet (at most [`BACKLOG_COUNT_CAP`]).
    pub pending: i64,
    /// The position of the last published event (0: none yet).
    pub published_position: i64,
}

/// The backlog of the relay on `topic`: committed events beyond its checkpoint. It
/// counts events the relay cannot take yet too (behind a transaction left open),
/// because those hold it back just the same.
pub async fn backlog(pool: &PgPool, topic: &str) -> Result<Backlog, sqlx::Error> {
    let (pending, published_position): (i64, i64) = sqlx::query_as(
        "WITH cp AS (SELECT COALESCE(max(txid::text::bigint), 0) AS txid, COALESCE(max(position), 0) AS position
                     FROM relay_checkpoint WHERE topic = $1)
         SELECT (SELECT count(*) FROM (SELECT 1 FROM events, cp
                 WHERE (events.txid, events.position) > (cp.txid::text::xid8, cp.position) LIMIT $2) AS p),
                cp.position
         FROM cp",
    )
    .bind(topic)
    .bind(BACKLOG_COUNT_CAP)
    .fetch_one(pool)
    .await?;
    Ok(Backlog { pending, published_position })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_streak_starts_once_and_ends_with_progress() {
        let status = RelayStatus::default();
        assert_eq!((status.last_progress(), status.failing_since()), (None, None));
        status.failed();
        let since = status.failing_since().expect("failing");
        std::thread::sleep(Duration::from_millis(5));
        status.failed();
        assert_eq!(status.failing_since(), Some(since), "the streak keeps its start");
        status.progressed();
        assert_eq!(status.failing_since(), None);
        assert!(status.last_progress().is_some());
        assert_eq!(status.failing_for(Utc::now()), Duration::ZERO);
    }
}
