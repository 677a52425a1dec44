//! Dead letters: listing parked events and retrying them in order, per tenant.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use keel_domain::envelope::EventEnvelope;

use crate::read_model::{ReadModel, live_schema, swap_lock_key};

/// A parked event, without its body.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ParkedEvent {
    /// Row id (order of parking).
    pub id: i64,
    /// Tenant (Kafka key).
    pub tenant_id: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub kafka_offset: i64,
    /// Event id, if the envelope could be read.
    pub event_id: Option<String>,
    /// Event type, if the envelope could be read.
    pub event_type: Option<String>,
    /// Why it was parked.
    pub error: String,
    /// Retries so far.
    pub attempts: i32,
    /// When.
    pub parked_at: DateTime<Utc>,
}

/// What a retry did for one tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RetryOutcome {
    /// Events applied and removed from the dead letters.
    pub applied: usize,
    /// Events still parked.
    pub still_parked: usize,
}

/// Parked events of read model `name`, optionally for one tenant.
pub async fn list(pool: &PgPool, name: &str, tenant: Option<&str>) -> Result<Vec<ParkedEvent>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('keel.scope', 'platform', true)").execute(&mut *tx).await?;
    let rows = sqlx::query_as(&format!(
        "SELECT id, tenant_id, partition, kafka_offset, event_id, event_type, error, attempts, parked_at
         FROM {}._parked WHERE ($1::text IS NULL OR tenant_id = $1) ORDER BY id",
        live_schema(name)
    ))
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// How many events read model `name` holds parked.
pub async fn count(pool: &PgPool, name: &str) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('keel.scope', 'platform', true)").execute(&mut *tx).await?;
    let parked =
        sqlx::query_scalar(&format!("SELECT count(*) FROM {}._parked", live_schema(name))).fetch_one(&mut *tx).await?;
    tx.commit().await?;
    Ok(parked)
}

/// Discards one parked event for good (an operator decided it can never apply).
/// Events held behind it stay parked until retried. Returns whether it existed.
pub async fn discard(pool: &PgPool, name: &str, id: i64) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('keel.scope', 'platform', true)").execute(&mut *tx).await?;
    let deleted = sqlx::query(&format!("DELETE FROM {}._parked WHERE id = $1", live_schema(name)))
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(deleted == 1)
}

/// Retries a tenant's parked events in order: those that now apply are applied and
/// removed; at the first that still fails, it and the rest stay parked.
pub async fn retry<R: ReadModel>(pool: &PgPool, model: &R, tenant: &str) -> Result<RetryOutcome, sqlx::Error> {
    let schema = live_schema(model.name());
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)").bind(swap_lock_key(model.name())).execute(&mut *tx).await?;
    sqlx::query("SELECT set_config('keel.scope', 'platform', true)").execute(&mut *tx).await?;
    let parked: Vec<(i64, Vec<u8>)> = sqlx::query_as(&format!(
        "SELECT id, message FROM {schema}._parked WHERE tenant_id = $1 ORDER BY id FOR UPDATE"
    ))
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    let mark: Option<(i64, i64)> =
        sqlx::query_as(&format!("SELECT txid, position FROM {schema}._applied WHERE tenant_id = $1"))
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
    let mut changes = Vec::new();
    let mut done = Vec::new();
    let mut last = mark;
    let mut failure = None;
    for (id, message) in &parked {
        let decoded = serde_json::from_slice::<EventEnvelope>(message)
            .map_err(|e| format!("malformed envelope: {e}"))
            .and_then(|env| {
                let repeat = last.is_some_and(|m| env.order() <= m);
                let change = if repeat { None } else { model.decode(&env)? };
                Ok((env.order(), repeat, change))
            });
        match decoded {
            Ok((order, repeat, change)) => {
                changes.extend(change);
                if !repeat {
                    last = Some(order);
                }
                done.push(*id);
            }
            Err(error) => {
                failure = Some((*id, error));
                break;
            }
        }
    }
    model.apply(&mut tx, &schema, changes).await?;
    if let (Some((txid, position)), true) = (last, last != mark) {
        sqlx::query(&format!(
            "INSERT INTO {schema}._applied (tenant_id, txid, position) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id) DO UPDATE SET txid = EXCLUDED.txid, position = EXCLUDED.position"
        ))
        .bind(tenant)
        .bind(txid)
        .bind(position)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(&format!("DELETE FROM {schema}._parked WHERE id = ANY($1)")).bind(&done).execute(&mut *tx).await?;
    if let Some((id, error)) = failure {
        sqlx::query(&format!("UPDATE {schema}._parked SET attempts = attempts + 1, error = $2 WHERE id = $1"))
            .bind(id)
            .bind(error)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(RetryOutcome { applied: done.len(), still_parked: parked.len() - done.len() })
}
