//! The audit trail read model (ADR 0014): each audit record exactly as written, with
//! its hash, for the audit views and the CSV export; and the signed checkpoints.
//! Append-only: the runtime role may insert and read, never update or delete.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use keel_domain::audit::{AGGREGATE_TYPE, AuditEntry, AuditEvent, CHECKPOINT_AGGREGATE, Checkpoint};
use keel_domain::envelope::EventEnvelope;

use crate::read_model::{ReadModel, decode_payload, live_schema};
use crate::tenant_registry::{Scope, scoped};

/// The read model's name.
pub const NAME: &str = "audit_trail";

/// The audit trail.
#[derive(Debug, Default, Clone, Copy)]
pub struct AuditTrail;

/// A record or a checkpoint, with its log position.
#[derive(Debug, Clone)]
pub enum Change {
    /// An audit record.
    Record(Box<AuditEntry>, i64),
    /// A signed checkpoint.
    Checkpoint(Checkpoint, i64),
}

impl ReadModel for AuditTrail {
    type Change = Change;

    fn name(&self) -> &'static str {
        NAME
    }

    fn ddl(&self) -> &'static str {
        include_str!("../sql/audit_trail.sql")
    }

    fn decode(&self, event: &EventEnvelope) -> Result<Option<Change>, String> {
        if event.aggregate_type != AGGREGATE_TYPE && event.aggregate_type != CHECKPOINT_AGGREGATE {
            return Ok(None);
        }
        Ok(Some(match decode_payload::<AuditEvent>(event)? {
            AuditEvent::Recorded(entry) => Change::Record(Box::new(entry), event.position),
            AuditEvent::CheckpointSigned(checkpoint) => Change::Checkpoint(checkpoint, event.position),
        }))
    }

    async fn apply(&self, tx: &mut PgConnection, schema: &str, changes: Vec<Change>) -> Result<(), sqlx::Error> {
        let mut records = Vec::new();
        let mut checkpoints = Vec::new();
        for change in changes {
            match change {
                Change::Record(entry, position) => records.push((entry, position)),
                Change::Checkpoint(checkpoint, position) => checkpoints.push((checkpoint, position)),
            }
        }
        if !records.is_empty() {
            let r = |f: fn(&AuditEntry) -> String| records.iter().map(|(e, _)| f(e)).collect::<Vec<_>>();
            let o = |f: fn(&AuditEntry) -> Option<String>| records.iter().map(|(e, _)| f(e)).collect::<Vec<_>>();
            sqlx::query(&format!(
                "INSERT INTO {schema}.records (chain, seq, id, occurred_at, tenant_id, actor_type, actor_id, action,
                                               resource, outcome, reason, record, hash, position)
                 SELECT c, s, i, t::timestamptz, tn, at, ai, a, r, o, re, rec, h, p
                 FROM UNNEST($1::text[], $2::bigint[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[],
                             $8::text[], $9::text[], $10::text[], $11::text[], $12::jsonb[], $13::text[], $14::bigint[])
                     AS u(c, s, i, t, tn, at, ai, a, r, o, re, rec, h, p)
                 ON CONFLICT DO NOTHING"
            ))
            .bind(r(|e| e.record.chain.clone()))
            .bind(records.iter().map(|(e, _)| e.record.seq).collect::<Vec<_>>())
            .bind(records.iter().map(|(e, _)| e.record.id).collect::<Vec<_>>())
            .bind(r(|e| e.record.timestamp.clone()))
            .bind(o(|e| e.record.tenant_id.clone()))
            .bind(r(|e| e.record.actor_type.clone()))
            .bind(r(|e| e.record.actor_id.clone()))
            .bind(r(|e| e.record.action.clone()))
            .bind(r(|e| e.record.resource.clone()))
            .bind(r(|e| e.record.outcome.as_str().to_string()))
            .bind(o(|e| e.record.reason.clone()))
            .bind(records.iter().map(|(e, _)| serde_json::to_value(&e.record).unwrap_or_default()).collect::<Vec<_>>())
            .bind(r(|e| e.hash.clone()))
            .bind(records.iter().map(|(_, p)| *p).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        if !checkpoints.is_empty() {
            sqlx::query(&format!(
                "INSERT INTO {schema}.checkpoints (number, checkpoint, position)
                 SELECT * FROM UNNEST($1::bigint[], $2::jsonb[], $3::bigint[]) ON CONFLICT DO NOTHING"
            ))
            .bind(checkpoints.iter().map(|(c, _)| c.number).collect::<Vec<_>>())
            .bind(checkpoints.iter().map(|(c, _)| serde_json::to_value(c).unwrap_or_default()).collect::<Vec<_>>())
            .bind(checkpoints.iter().map(|(_, p)| *p).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}

/// The `WHERE` of [`AuditFilter`], binding `$1` to `$7` in its fields' order.
const FILTERED: &str = "WHERE ($1::text IS NULL OR tenant_id = $1) AND ($2::text IS NULL OR actor_id = $2)
           AND ($3::text IS NULL OR action = $3) AND ($4::text IS NULL OR resource = $4)
           AND ($5::text IS NULL OR outcome = $5)
           AND ($6::timestamptz IS NULL OR occurred_at >= $6) AND ($7::timestamptz IS NULL OR occurred_at < $7)";

/// Filters of the audit views (all optional).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this tenant's records.
    pub tenant_id: Option<String>,
    /// Only this actor's.
    pub actor_id: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only this resource.
    pub resource: Option<String>,
    /// Only `success` or `failure`.
    pub outcome: Option<String>,
    /// At or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Before this time.
    pub to: Option<DateTime<Utc>>,
    /// Only records after this id (the cursor).
    pub after: Option<uuid::Uuid>,
}

/// One record as listed: the hashed record and its hash.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ListedRecord {
    /// The record (every field its hash covers).
    pub record: serde_json::Value,
    /// Its hash.
    pub hash: String,
}

/// Binds `filter` to [`FILTERED`]'s `$1`…`$7`.
fn bind_filter<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    filter: &'q AuditFilter,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(&filter.tenant_id)
        .bind(&filter.actor_id)
        .bind(&filter.action)
        .bind(&filter.resource)
        .bind(&filter.outcome)
        .bind(filter.from)
        .bind(filter.to)
}

/// Up to `limit` records matching `filter`, oldest first (by id, a UUIDv7).
pub async fn page(
    pool: &PgPool,
    scope: &Scope,
    filter: &AuditFilter,
    limit: i64,
) -> Result<Vec<(uuid::Uuid, ListedRecord)>, sqlx::Error> {
    let mut tx = scoped(pool, scope).await?;
    crate::read_model::prefer_index_order(&mut tx).await?;
    let sql = format!(
        "SELECT id, record, hash FROM {}.records {FILTERED}
           AND ($8::uuid IS NULL OR id > $8)
         ORDER BY id LIMIT $9",
        live_schema(NAME)
    );
    let rows: Vec<(uuid::Uuid, serde_json::Value, String)> =
        bind_filter(sqlx::query_as(&sql), filter).bind(filter.after).bind(limit).fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(|(id, record, hash)| (id, ListedRecord { record, hash })).collect())
}

/// Up to `limit` records of `filter` in chain order (chain, then place), after the
/// `(chain, seq)` cursor: the export's order, in which each chain can be verified.
pub async fn chain_page(
    pool: &PgPool,
    scope: &Scope,
    filter: &AuditFilter,
    after: &(String, i64),
    limit: i64,
) -> Result<Vec<(String, i64, ListedRecord)>, sqlx::Error> {
    let mut tx = scoped(pool, scope).await?;
    crate::read_model::prefer_index_order(&mut tx).await?;
    let sql = format!(
        "SELECT chain, seq, record, hash FROM {}.records {FILTERED}
           AND (chain, seq) > ($8, $9)
         ORDER BY chain, seq LIMIT $10",
        live_schema(NAME)
    );
    let rows: Vec<(String, i64, serde_json::Value, String)> =
        bind_filter(sqlx::query_as(&sql), filter).bind(&after.0).bind(after.1).bind(limit).fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(|(c, s, record, hash)| (c, s, ListedRecord { record, hash })).collect())
}

/// Every signed checkpoint, oldest first (platform scope).
pub async fn checkpoints(pool: &PgPool) -> Result<Vec<Checkpoint>, sqlx::Error> {
    let mut tx = scoped(pool, &Scope::Platform).await?;
    let rows: Vec<serde_json::Value> =
        sqlx::query_scalar(&format!("SELECT checkpoint FROM {}.checkpoints ORDER BY number", live_schema(NAME)))
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(rows.into_iter().filter_map(|v| serde_json::from_value(v).ok()).collect())
}
