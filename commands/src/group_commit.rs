//! Group commit (ADR 0029): the appends of concurrent commands commit together, so one
//! transaction, a handful of statements and one WAL flush serve many commands.
//!
//! A command's append (its events, its audit record) goes into a queue. A few committer
//! tasks each take what is queued (up to [`MAX_BATCH`]) and commit it in one durable
//! transaction: the audit chains locked in chain order, every event in one statement,
//! the write-side indexes, every audit record in one statement. Each command waits for
//! its own answer. If the batch fails (a lost optimistic-concurrency race, a refused
//! index row), nothing of it is committed and each append is re-run alone, so every
//! command gets exactly the answer it would have got alone.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use cqrs_es::persist::SerializedEvent;
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};

use keel_domain::audit::AuditInput;

use crate::audit;
use crate::identity_index::IdentityIndex;
use crate::key_index::ApiKeyIndex;
use crate::oidc_clients::OidcClientIndex;
use crate::rollup_allowlist_index::RollupAllowlistIndex;
use crate::write_index::WriteSideIndex;

/// The write-side indexes, updated in the transaction that appends the events they
/// fold, in this order. Adding an index is one entry here.
/// (`OidcClientIndex` follows `ApiKeyIndex`: its rows refer to `auth_apps`.)
pub const WRITE_SIDE_INDEXES: (IdentityIndex, ApiKeyIndex, OidcClientIndex, RollupAllowlistIndex) =
    (IdentityIndex, ApiKeyIndex, OidcClientIndex, RollupAllowlistIndex);

/// Most appends in one transaction.
const MAX_BATCH: usize = 128;
/// Committer tasks (transactions in flight at once).
const COMMITTERS: usize = 4;
/// Appends waiting for a committer before a command waits to queue its own.
const QUEUE: usize = 4096;

/// The append of all a batch's events in one statement. Postgres assigns the positions;
/// the primary key refuses a stale sequence.
const APPEND: &str =
    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[])
     RETURNING aggregate_type, aggregate_id, sequence, position";

/// One command's append: its events and the audit record committed with them.
#[derive(Debug)]
pub struct Append {
    /// The events, in sequence order.
    pub events: Vec<SerializedEvent>,
    /// The audit record that commits with them, if the command is audited.
    pub record: Option<AuditInput>,
}

struct Queued {
    append: Append,
    answer: oneshot::Sender<Result<i64, sqlx::Error>>,
}

/// The queue of appends and its committers (started on the first append).
#[derive(Clone)]
pub struct GroupCommit {
    pool: PgPool,
    queue: Arc<OnceLock<mpsc::Sender<Queued>>>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// Group commit on `pool` (commits wait for the WAL flush).
    pub fn new(pool: PgPool) -> Self {
        Self { pool, queue: Arc::default() }
    }

    /// The pool appends commit on.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Commits `append` (with others queued at the same time); returns the highest
    /// position its events got.
    pub async fn append(&self, append: Append) -> Result<i64, sqlx::Error> {
        let queue = self.queue.get_or_init(|| self.start());
        let (answer, answered) = oneshot::channel();
        queue.send(Queued { append, answer }).await.map_err(|_| sqlx::Error::PoolClosed)?;
        answered.await.map_err(|_| sqlx::Error::PoolClosed)?
    }

    fn start(&self) -> mpsc::Sender<Queued> {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..COMMITTERS {
            tokio::spawn(committer(self.pool.clone(), receiver.clone()));
        }
        sender
    }
}

/// Takes what is queued and commits it, until every sender is gone.
async fn committer(pool: PgPool, receiver: Arc<Mutex<mpsc::Receiver<Queued>>>) {
    loop {
        let mut batch = Vec::new();
        {
            let mut receiver = receiver.lock().await;
            if receiver.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
        }
        let appends: Vec<&Append> = batch.iter().map(|q| &q.append).collect();
        match commit(&pool, &appends).await {
            Ok(positions) => {
                for (queued, position) in batch.into_iter().zip(positions) {
                    let _ = queued.answer.send(Ok(position));
                }
            }
            Err(err) if batch.len() == 1 => {
                let _ = batch.pop().map(|queued| queued.answer.send(Err(err)));
            }
            Err(_) => {
                // Each alone: exactly the answer it would have had without the others.
                for queued in batch {
                    let outcome = commit(&pool, &[&queued.append]).await.map(|p| p[0]);
                    let _ = queued.answer.send(outcome);
                }
            }
        }
    }
}

/// Commits `appends` in one transaction; returns each one's highest position.
async fn commit(pool: &PgPool, appends: &[&Append]) -> Result<Vec<i64>, sqlx::Error> {
    let events: Vec<&SerializedEvent> = appends.iter().flat_map(|a| &a.events).collect();
    let records: Vec<&AuditInput> = appends.iter().filter_map(|a| a.record.as_ref()).collect();
    let insert = sqlx::query_as::<_, (String, String, i64, i64)>(APPEND)
        .bind(events.iter().map(|e| e.aggregate_type.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.aggregate_id.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.sequence as i64).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.event_version.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| &e.payload).collect::<Vec<_>>())
        .bind(events.iter().map(|e| &e.metadata).collect::<Vec<_>>());
    let indexed = events.iter().any(|e| WRITE_SIDE_INDEXES.affects(e));
    let rows = if records.is_empty() && !indexed {
        // One statement is its own transaction: one round trip.
        insert.fetch_all(pool).await?
    } else {
        let mut tx = pool.begin().await?;
        audit::lock_chains(&mut tx, records.iter().copied()).await?;
        let rows = insert.fetch_all(&mut *tx).await?;
        if indexed {
            for event in &events {
                WRITE_SIDE_INDEXES.apply(&mut tx, event).await?;
            }
        }
        audit::append_in(&mut tx, records.into_iter().cloned().collect()).await?;
        tx.commit().await?;
        rows
    };
    let positions: HashMap<(&str, &str, i64), i64> = rows
        .iter()
        .map(|(kind, id, sequence, position)| ((kind.as_str(), id.as_str(), *sequence), *position))
        .collect();
    Ok(appends
        .iter()
        .map(|append| {
            append
                .events
                .iter()
                .filter_map(|e| positions.get(&(e.aggregate_type.as_str(), e.aggregate_id.as_str(), e.sequence as i64)))
                .copied()
                .max()
                .unwrap_or(0)
        })
        .collect())
}
