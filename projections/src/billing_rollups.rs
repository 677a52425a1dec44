//! Cross-tenant usage rollups for internal operations (ADR 0013): per minute and per
//! hour, usage totals by event type × plan × industry × region.
//!
//! Only usage stamped `rollup` at ingestion (its type was on the allowlist) counts.
//! The tenant attributes come from the tenant's own events, which share the usage's
//! partition, so each usage event is counted with its tenant's plan, industry and
//! region as of its place in the log, and a rebuild gives the same totals. Postgres
//! row-level security keeps every row from tenant scopes and auditors.

use std::collections::HashMap;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use keel_domain::envelope::EventEnvelope;
use keel_domain::tenant::{self, TenantEvent};
use keel_domain::usage::{self, UsageEvent};

use crate::read_model::{ReadModel, decode_payload, live_schema};

/// The read model's name.
pub const NAME: &str = "billing_rollups";

/// The rollups.
#[derive(Debug, Default, Clone, Copy)]
pub struct BillingRollups;

/// A tenant's breakdown attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Dims {
    /// The plan.
    pub plan: String,
    /// The industry ('' if unknown).
    pub industry: String,
    /// The region ('' if unknown).
    pub region: String,
}

/// What one relevant event changes.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A tenant's attributes are now these (plan changes keep the others).
    Tenant {
        /// The tenant.
        tenant_id: String,
        /// New plan, if it changed.
        plan: Option<String>,
        /// New industry and region, if they changed.
        profile: Option<(String, String)>,
    },
    /// Allowlisted usage.
    Usage {
        /// The tenant.
        tenant_id: String,
        /// The usage event type.
        event_type: String,
        /// How much.
        quantity: i64,
        /// When it happened.
        timestamp: DateTime<Utc>,
    },
}

/// A rollup cell: bucket × event type × dims.
type Cell = (DateTime<Utc>, String, Dims);

/// Totals to add, per cell: (quantity, events).
pub type Deltas = HashMap<Cell, (i128, i64)>;

/// Folds `changes` in order over `dims` (updated in place); returns the minute and
/// hour deltas. Pure.
pub fn fold(dims: &mut HashMap<String, Dims>, changes: &[Change]) -> (Deltas, Deltas) {
    let mut minutes = Deltas::new();
    let mut hours = Deltas::new();
    for change in changes {
        match change {
            Change::Tenant { tenant_id, plan, profile } => {
                let entry = dims.entry(tenant_id.clone()).or_default();
                if let Some(plan) = plan {
                    entry.plan = plan.clone();
                }
                if let Some((industry, region)) = profile {
                    (entry.industry, entry.region) = (industry.clone(), region.clone());
                }
            }
            Change::Usage { tenant_id, event_type, quantity, timestamp } => {
                let d = dims.get(tenant_id).cloned().unwrap_or(Dims { plan: "unknown".into(), ..Dims::default() });
                for (deltas, width) in [(&mut minutes, TimeDelta::minutes(1)), (&mut hours, TimeDelta::hours(1))] {
                    let bucket = timestamp.duration_trunc(width).unwrap_or(*timestamp);
                    let cell = deltas.entry((bucket, event_type.clone(), d.clone())).or_default();
                    cell.0 += i128::from(*quantity);
                    cell.1 += 1;
                }
            }
        }
    }
    (minutes, hours)
}

impl ReadModel for BillingRollups {
    type Change = Change;

    fn name(&self) -> &'static str {
        NAME
    }

    fn ddl(&self) -> &'static str {
        include_str!("../sql/billing_rollups.sql")
    }

    fn decode(&self, event: &EventEnvelope) -> Result<Option<Change>, String> {
        if event.aggregate_type == usage::AGGREGATE_TYPE {
            let UsageEvent::Recorded(r) = decode_payload(event)?;
            return Ok(r.rollup.then(|| Change::Usage {
                tenant_id: r.tenant_id.to_string(),
                event_type: r.event_type,
                quantity: r.quantity,
                timestamp: r.timestamp,
            }));
        }
        if event.aggregate_type != tenant::AGGREGATE_TYPE {
            return Ok(None);
        }
        let tenant_id = event.aggregate_id.clone();
        let profile = |i: Option<String>, r: Option<String>| Some((i.unwrap_or_default(), r.unwrap_or_default()));
        Ok(match decode_payload::<TenantEvent>(event)? {
            TenantEvent::Provisioned { plan, industry, region, .. } => {
                Some(Change::Tenant { tenant_id, plan: Some(plan.as_str().into()), profile: profile(industry, region) })
            }
            TenantEvent::PlanChanged { to, .. } => {
                Some(Change::Tenant { tenant_id, plan: Some(to.as_str().into()), profile: None })
            }
            TenantEvent::ProfileChanged { industry, region } => {
                Some(Change::Tenant { tenant_id, plan: None, profile: profile(industry, region) })
            }
            _ => None,
        })
    }

    async fn apply(&self, tx: &mut PgConnection, schema: &str, changes: Vec<Change>) -> Result<(), sqlx::Error> {
        if changes.is_empty() {
            return Ok(());
        }
        sqlx::query("SELECT set_config('keel.platform_role', 'projector', true)").execute(&mut *tx).await?;
        let ids: Vec<String> = changes
            .iter()
            .map(|c| match c {
                Change::Tenant { tenant_id, .. } | Change::Usage { tenant_id, .. } => tenant_id.clone(),
            })
            .collect();
        let mut dims: HashMap<String, Dims> = sqlx::query_as::<_, (String, String, String, String)>(&format!(
            "SELECT tenant_id, plan, industry, region FROM {schema}.tenant_dims WHERE tenant_id = ANY($1)"
        ))
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(id, plan, industry, region)| (id, Dims { plan, industry, region }))
        .collect();
        let (minutes, hours) = fold(&mut dims, &changes);
        let touched: Vec<(&String, &Dims)> = dims
            .iter()
            .filter(|(id, _)| changes.iter().any(|c| matches!(c, Change::Tenant { tenant_id, .. } if tenant_id == *id)))
            .collect();
        if !touched.is_empty() {
            sqlx::query(&format!(
                "INSERT INTO {schema}.tenant_dims (tenant_id, plan, industry, region)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[])
                 ON CONFLICT (tenant_id) DO UPDATE
                     SET plan = EXCLUDED.plan, industry = EXCLUDED.industry, region = EXCLUDED.region"
            ))
            .bind(touched.iter().map(|(id, _)| id.to_string()).collect::<Vec<_>>())
            .bind(touched.iter().map(|(_, d)| d.plan.clone()).collect::<Vec<_>>())
            .bind(touched.iter().map(|(_, d)| d.industry.clone()).collect::<Vec<_>>())
            .bind(touched.iter().map(|(_, d)| d.region.clone()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        for (table, deltas) in [("rollup_minute", minutes), ("rollup_hour", hours)] {
            if deltas.is_empty() {
                continue;
            }
            let cells: Vec<(Cell, (i128, i64))> = deltas.into_iter().collect();
            sqlx::query(&format!(
                "INSERT INTO {schema}.{table} AS t (bucket, event_type, plan, industry, region, quantity, events)
                 SELECT b, e, p, i, r, q::numeric, n
                 FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[])
                     AS u(b, e, p, i, r, q, n)
                 ON CONFLICT (bucket, event_type, plan, industry, region)
                     DO UPDATE SET quantity = t.quantity + EXCLUDED.quantity, events = t.events + EXCLUDED.events"
            ))
            .bind(cells.iter().map(|((b, _, _), _)| *b).collect::<Vec<_>>())
            .bind(cells.iter().map(|((_, e, _), _)| e.clone()).collect::<Vec<_>>())
            .bind(cells.iter().map(|((_, _, d), _)| d.plan.clone()).collect::<Vec<_>>())
            .bind(cells.iter().map(|((_, _, d), _)| d.industry.clone()).collect::<Vec<_>>())
            .bind(cells.iter().map(|((_, _, d), _)| d.region.clone()).collect::<Vec<_>>())
            .bind(cells.iter().map(|(_, (q, _))| q.to_string()).collect::<Vec<_>>())
            .bind(cells.iter().map(|(_, (_, n))| *n).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}

/// The width of a rollup bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// One minute.
    Minute,
    /// One hour.
    Hour,
}

/// One rollup row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct RollupRow {
    /// The bucket's start (UTC).
    pub bucket: DateTime<Utc>,
    /// The usage event type.
    pub event_type: String,
    /// The plan.
    pub plan: String,
    /// The industry, if known.
    pub industry: Option<String>,
    /// The region, if known.
    pub region: Option<String>,
    /// The summed quantity.
    pub quantity: i128,
    /// How many events.
    pub events: i64,
}

/// A rollup row as stored ('' for unknown; the sum as text, it may exceed 64 bits).
#[derive(sqlx::FromRow)]
struct StoredRow {
    bucket: DateTime<Utc>,
    event_type: String,
    plan: String,
    industry: String,
    region: String,
    quantity: String,
    events: i64,
}

/// Whose rollup query this is; the database admits only operators (row-level security).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// A platform operator.
    Operator,
    /// Any other platform reader (auditors): sees no rows.
    OtherPlatform,
}

/// Rollup rows with buckets in `[from, to)`, optionally of one event type, read as `reader`.
pub async fn rows(
    pool: &PgPool,
    reader: Reader,
    width: Width,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    event_type: Option<&str>,
) -> Result<Vec<RollupRow>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let role = if reader == Reader::Operator { "operator" } else { "auditor" };
    sqlx::query("SELECT set_config('keel.scope', 'platform', true), set_config('keel.platform_role', $1, true)")
        .bind(role)
        .execute(&mut *tx)
        .await?;
    let table = if width == Width::Minute { "rollup_minute" } else { "rollup_hour" };
    let rows: Vec<StoredRow> = sqlx::query_as(&format!(
        "SELECT bucket, event_type, plan, industry, region, quantity::text AS quantity, events FROM {}.{table}
         WHERE bucket >= $1 AND bucket < $2 AND ($3::text IS NULL OR event_type = $3)
         ORDER BY bucket, event_type, plan, industry, region",
        live_schema(NAME)
    ))
    .bind(from)
    .bind(to)
    .bind(event_type)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let known = |s: String| (!s.is_empty()).then_some(s);
    Ok(rows
        .into_iter()
        .map(|r| RollupRow {
            bucket: r.bucket,
            event_type: r.event_type,
            plan: r.plan,
            industry: known(r.industry),
            region: known(r.region),
            quantity: r.quantity.parse().unwrap_or_default(),
            events: r.events,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(minute: u32, second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 10, minute, second).unwrap()
    }

    fn used(quantity: i64, at: DateTime<Utc>) -> Change {
        Change::Usage { tenant_id: "t1".into(), event_type: "api.call".into(), quantity, timestamp: at }
    }

    #[test]
    fn usage_counts_with_the_dims_in_force_at_its_place_in_the_log() {
        let mut dims = HashMap::new();
        let changes = vec![
            Change::Tenant {
                tenant_id: "t1".into(),
                plan: Some("free".into()),
                profile: Some(("fintech".into(), "eu".into())),
            },
            used(2, at(1, 10)),
            used(3, at(1, 50)),
            Change::Tenant { tenant_id: "t1".into(), plan: Some("pro".into()), profile: None },
            used(5, at(2, 0)),
        ];
        let (minutes, hours) = fold(&mut dims, &changes);
        let free = Dims { plan: "free".into(), industry: "fintech".into(), region: "eu".into() };
        let pro = Dims { plan: "pro".into(), ..free.clone() };
        assert_eq!(minutes[&(at(1, 0), "api.call".to_string(), free.clone())], (5, 2));
        assert_eq!(minutes[&(at(2, 0), "api.call".to_string(), pro.clone())], (5, 1));
        assert_eq!(hours[&(at(0, 0), "api.call".to_string(), free)], (5, 2));
        assert_eq!(hours[&(at(0, 0), "api.call".to_string(), pro.clone())], (5, 1));
        assert_eq!(dims["t1"], pro);
    }

    #[test]
    fn usage_of_a_tenant_without_dims_is_counted_under_unknown() {
        let mut dims = HashMap::new();
        let (minutes, _) = fold(&mut dims, &[used(1, at(0, 0))]);
        let unknown = Dims { plan: "unknown".into(), ..Dims::default() };
        assert_eq!(minutes[&(at(0, 0), "api.call".to_string(), unknown)], (1, 1));
    }
}
