//! The billing ledger read model (ADR 0013): every accepted usage event, plus totals
//! per tenant × event type × hour and day, for the usage API and the export.
//!
//! Totals are added up from exactly the rows this batch inserted (`RETURNING`), so the
//! raw events and the totals can never disagree, whatever is delivered twice.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use keel_domain::envelope::EventEnvelope;
use keel_domain::usage::{AGGREGATE_TYPE, RETENTION_YEARS, UsageEvent, UsageRecorded};

use crate::read_model::{ReadModel, decode_payload, live_schema};
use crate::tenant_registry::{Scope, scoped};

/// The read model's name.
pub const NAME: &str = "billing_ledger";

/// The billing ledger.
#[derive(Debug, Default, Clone, Copy)]
pub struct BillingLedger;

/// A usage event with where it sits in the log.
#[derive(Debug, Clone)]
pub struct Change {
    recorded: UsageRecorded,
    keel_event_id: Uuid,
    txid: i64,
    position: i64,
}

const INSERT: &str = "WITH ins AS (
    INSERT INTO {schema}.usage_events (tenant_id, app_id, event_id, event_type, quantity, occurred_at, received_at,
                                       late, tenant_status, properties, keel_event_id, txid, position, retain_until)
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::timestamptz[],
                         $7::timestamptz[], $8::bool[], $9::text[], $10::jsonb[], $11::uuid[], $12::bigint[],
                         $13::bigint[], $14::timestamptz[])
    ON CONFLICT DO NOTHING
    RETURNING tenant_id, event_type, occurred_at, quantity
), hourly AS (
    INSERT INTO {schema}.usage_hourly AS t (tenant_id, bucket, event_type, quantity, events)
    SELECT tenant_id, date_trunc('hour', occurred_at, 'UTC'), event_type, sum(quantity), count(*) FROM ins GROUP BY 1, 2, 3
    ON CONFLICT (tenant_id, bucket, event_type)
        DO UPDATE SET quantity = t.quantity + EXCLUDED.quantity, events = t.events + EXCLUDED.events
)
INSERT INTO {schema}.usage_daily AS t (tenant_id, bucket, event_type, quantity, events)
SELECT tenant_id, date_trunc('day', occurred_at, 'UTC'), event_type, sum(quantity), count(*) FROM ins GROUP BY 1, 2, 3
ON CONFLICT (tenant_id, bucket, event_type)
    DO UPDATE SET quantity = t.quantity + EXCLUDED.quantity, events = t.events + EXCLUDED.events";

impl ReadModel for BillingLedger {
    type Change = Change;

    fn name(&self) -> &'static str {
        NAME
    }

    fn ddl(&self) -> &'static str {
        include_str!("../sql/billing_ledger.sql")
    }

    fn decode(&self, event: &EventEnvelope) -> Result<Option<Change>, String> {
        if event.aggregate_type != AGGREGATE_TYPE {
            return Ok(None);
        }
        let UsageEvent::Recorded(recorded) = decode_payload(event)?;
        Ok(Some(Change { recorded, keel_event_id: event.event_id, txid: event.txid, position: event.position }))
    }

    async fn apply(&self, tx: &mut PgConnection, schema: &str, changes: Vec<Change>) -> Result<(), sqlx::Error> {
        if changes.is_empty() {
            return Ok(());
        }
        let r = |f: fn(&Change) -> String| changes.iter().map(f).collect::<Vec<_>>();
        let retain = |c: &Change| c.recorded.received_at + chrono::Months::new(12 * RETENTION_YEARS);
        sqlx::query(&INSERT.replace("{schema}", schema))
            .bind(r(|c| c.recorded.tenant_id.to_string()))
            .bind(r(|c| c.recorded.app_id.to_string()))
            .bind(r(|c| c.recorded.event_id.clone()))
            .bind(r(|c| c.recorded.event_type.clone()))
            .bind(changes.iter().map(|c| c.recorded.quantity).collect::<Vec<_>>())
            .bind(changes.iter().map(|c| c.recorded.timestamp).collect::<Vec<_>>())
            .bind(changes.iter().map(|c| c.recorded.received_at).collect::<Vec<_>>())
            .bind(changes.iter().map(|c| c.recorded.late).collect::<Vec<_>>())
            .bind(r(|c| c.recorded.tenant_status.as_str().to_string()))
            .bind(changes.iter().map(|c| serde_json::Value::Object(c.recorded.properties.clone())).collect::<Vec<_>>())
            .bind(changes.iter().map(|c| c.keel_event_id).collect::<Vec<_>>())
            .bind(changes.iter().map(|c| c.txid).collect::<Vec<_>>())
            .bind(changes.iter().map(|c| c.position).collect::<Vec<_>>())
            .bind(changes.iter().map(retain).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

/// The width of a usage bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// One hour (UTC).
    Hour,
    /// One day (UTC).
    Day,
}

impl Granularity {
    fn table(self) -> &'static str {
        match self {
            Granularity::Hour => "usage_hourly",
            Granularity::Day => "usage_daily",
        }
    }
}

/// The usage of one event type in one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct UsageTotal {
    /// The bucket's start (UTC).
    pub bucket: DateTime<Utc>,
    /// The usage event type.
    pub event_type: String,
    /// The summed quantity.
    pub quantity: i128,
    /// How many events.
    pub events: i64,
}

/// `tenant_id`'s totals in buckets starting in `[from, to)`, by bucket and event type.
pub async fn totals(
    pool: &PgPool,
    scope: &Scope,
    tenant_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    granularity: Granularity,
) -> Result<Vec<UsageTotal>, sqlx::Error> {
    let mut tx = scoped(pool, scope).await?;
    let rows: Vec<(DateTime<Utc>, String, String, i64)> = sqlx::query_as(&format!(
        "SELECT bucket, event_type, quantity::text, events FROM {}.{}
         WHERE tenant_id = $1 AND bucket >= $2 AND bucket < $3 ORDER BY bucket, event_type",
        live_schema(NAME),
        granularity.table()
    ))
    .bind(tenant_id)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(|(bucket, event_type, quantity, events)| UsageTotal {
            bucket,
            event_type,
            quantity: quantity.parse().unwrap_or_default(),
            events,
        })
        .collect())
}

/// One raw usage event as exported.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct LedgerEvent {
    /// The tenant.
    pub tenant_id: String,
    /// The reporting app.
    pub app_id: String,
    /// The app's event id.
    pub event_id: String,
    /// What was used.
    pub event_type: String,
    /// How much.
    pub quantity: i64,
    /// When the usage happened.
    #[serde(rename = "timestamp")]
    pub occurred_at: DateTime<Utc>,
    /// When Keel accepted it.
    pub received_at: DateTime<Utc>,
    /// It arrived after the late window.
    pub late: bool,
    /// The tenant's status when it arrived.
    pub tenant_status: String,
    /// The app's details.
    pub properties: serde_json::Value,
    /// Keel's id of the stored event (the same as in `keel.events` and `keel.billing.v1`).
    pub keel_event_id: Uuid,
    /// Keel's log position.
    pub position: i64,
    /// The writing transaction (with `position`, the log order; the cursor).
    #[serde(skip)]
    pub txid: i64,
}

/// An export's range: the tenant, usage times `[from, to)`, and the log order after
/// `after` and up to `upto` (inclusive).
#[derive(Debug, Clone)]
pub struct ExportRange {
    /// The tenant.
    pub tenant_id: String,
    /// Usage at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Usage before this time.
    pub to: Option<DateTime<Utc>>,
    /// Only events after this `(txid, position)`.
    pub after: (i64, i64),
    /// Only events up to this `(txid, position)`.
    pub upto: (i64, i64),
}

/// The log order of `tenant_id`'s newest ledger event (where an export started now ends).
pub async fn newest(pool: &PgPool, scope: &Scope, tenant_id: &str) -> Result<Option<(i64, i64)>, sqlx::Error> {
    let mut tx = scoped(pool, scope).await?;
    let row = sqlx::query_as(&format!(
        "SELECT txid, position FROM {}.usage_events WHERE tenant_id = $1 ORDER BY txid DESC, position DESC LIMIT 1",
        live_schema(NAME)
    ))
    .bind(tenant_id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row)
}

/// The next up to `limit` events of `range`, in log order.
pub async fn page(
    pool: &PgPool,
    scope: &Scope,
    range: &ExportRange,
    limit: i64,
) -> Result<Vec<LedgerEvent>, sqlx::Error> {
    let mut tx = scoped(pool, scope).await?;
    crate::read_model::prefer_index_order(&mut tx).await?;
    let rows = sqlx::query_as(&format!(
        "SELECT tenant_id, app_id, event_id, event_type, quantity, occurred_at, received_at, late, tenant_status,
                properties, keel_event_id, position, txid
         FROM {}.usage_events
         WHERE tenant_id = $1 AND (txid, position) > ($2, $3) AND (txid, position) <= ($4, $5)
           AND ($6::timestamptz IS NULL OR occurred_at >= $6) AND ($7::timestamptz IS NULL OR occurred_at < $7)
         ORDER BY txid, position LIMIT $8",
        live_schema(NAME)
    ))
    .bind(&range.tenant_id)
    .bind(range.after.0)
    .bind(range.after.1)
    .bind(range.upto.0)
    .bind(range.upto.1)
    .bind(range.from)
    .bind(range.to)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}
