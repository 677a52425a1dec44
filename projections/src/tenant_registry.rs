//! The tenant registry read model: one row per tenant with its lifecycle state,
//! for operators and (their own row) tenant users.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use keel_domain::envelope::EventEnvelope;
use keel_domain::tenant::{AGGREGATE_TYPE, TenantEvent, TenantStatus};

use crate::read_model::{ReadModel, decode_payload, live_schema};

/// The read model's name.
pub const NAME: &str = "tenant_registry";

/// The tenant registry.
#[derive(Debug, Default, Clone, Copy)]
pub struct TenantRegistry;

/// One registry entry.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct TenantRow {
    /// Tenant id.
    pub tenant_id: String,
    /// Display name (cleared on purge).
    pub name: Option<String>,
    /// Domain (cleared on purge).
    pub domain: Option<String>,
    /// Plan.
    pub plan: String,
    /// Industry slug, e.g. `fintech` (kept on purge: not personal data).
    pub industry: Option<String>,
    /// Region slug, e.g. `ap-northeast-1` (kept on purge).
    pub region: Option<String>,
    /// `active`, `suspended`, `pending_deletion` or `purged`.
    pub status: String,
    /// Why it was suspended, while suspended.
    pub suspended_reason: Option<String>,
    /// When deletion was requested, while pending.
    pub deletion_requested_at: Option<DateTime<Utc>>,
    /// End of the grace period, while pending.
    pub purge_after: Option<DateTime<Utc>>,
    /// When it was provisioned.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Position of the last event applied to this row.
    pub version: i64,
}

/// A decoded tenant event with what the fold needs from its envelope.
#[derive(Debug, Clone)]
pub struct Change {
    tenant_id: String,
    event: TenantEvent,
    at: DateTime<Utc>,
    position: i64,
}

/// Applies one event to a row (pure; `None` = no row yet).
pub fn fold(row: Option<TenantRow>, change: &Change) -> Option<TenantRow> {
    let mut row = match (&change.event, row) {
        (TenantEvent::Provisioned { tenant_id, name, domain, plan, industry, region, provisioned_at, .. }, _) => {
            TenantRow {
                tenant_id: tenant_id.to_string(),
                name: Some(name.clone()),
                domain: Some(domain.clone()),
                plan: plan.as_str().to_string(),
                industry: industry.clone(),
                region: region.clone(),
                status: TenantStatus::Active.as_str().to_string(),
                suspended_reason: None,
                deletion_requested_at: None,
                purge_after: None,
                created_at: *provisioned_at,
                updated_at: *provisioned_at,
                version: change.position,
            }
        }
        (_, None) => return None,
        (_, Some(row)) => row,
    };
    match &change.event {
        TenantEvent::Provisioned { .. } => {}
        TenantEvent::Suspended { reason } => {
            row.status = TenantStatus::Suspended.as_str().into();
            row.suspended_reason = Some(reason.clone());
        }
        TenantEvent::Reactivated {} => {
            row.status = TenantStatus::Active.as_str().into();
            row.suspended_reason = None;
        }
        TenantEvent::PlanChanged { to, .. } => row.plan = to.as_str().into(),
        TenantEvent::ProfileChanged { industry, region } => {
            row.industry = industry.clone();
            row.region = region.clone();
        }
        TenantEvent::DeletionRequested { requested_at, purge_after } => {
            row.status = TenantStatus::PendingDeletion.as_str().into();
            row.deletion_requested_at = Some(*requested_at);
            row.purge_after = Some(*purge_after);
        }
        TenantEvent::Restored { status } => {
            row.status = status.as_str().into();
            row.deletion_requested_at = None;
            row.purge_after = None;
        }
        TenantEvent::Purged { .. } => {
            row.status = TenantStatus::Purged.as_str().into();
            row.name = None;
            row.domain = None;
            row.suspended_reason = None;
        }
    }
    row.updated_at = change.at;
    row.version = change.position;
    Some(row)
}

const COLUMNS: &str = "tenant_id, name, domain, plan, industry, region, status, suspended_reason, deletion_requested_at, purge_after, created_at, updated_at, version";

impl ReadModel for TenantRegistry {
    type Change = Change;

    fn name(&self) -> &'static str {
        NAME
    }

    fn ddl(&self) -> &'static str {
        include_str!("../sql/tenant_registry.sql")
    }

    fn decode(&self, event: &EventEnvelope) -> Result<Option<Change>, String> {
        if event.aggregate_type != AGGREGATE_TYPE {
            return Ok(None);
        }
        let tenant_event: TenantEvent = decode_payload(event)?;
        Ok(Some(Change {
            tenant_id: event.aggregate_id.clone(),
            event: tenant_event,
            at: event.occurred_at,
            position: event.position,
        }))
    }

    async fn apply(&self, tx: &mut PgConnection, schema: &str, changes: Vec<Change>) -> Result<(), sqlx::Error> {
        if changes.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = changes.iter().map(|c| c.tenant_id.clone()).collect();
        let mut rows: HashMap<String, TenantRow> = sqlx::query_as::<_, TenantRow>(&format!(
            "SELECT {COLUMNS} FROM {schema}.tenants WHERE tenant_id = ANY($1)"
        ))
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| (r.tenant_id.clone(), r))
        .collect();
        let mut touched = Vec::new();
        for change in &changes {
            if let Some(row) = fold(rows.remove(&change.tenant_id), change) {
                rows.insert(change.tenant_id.clone(), row);
                touched.push(change.tenant_id.clone());
            }
        }
        touched.sort();
        touched.dedup();
        let rows: Vec<&TenantRow> = touched.iter().filter_map(|id| rows.get(id)).collect();
        sqlx::query(&format!(
            "INSERT INTO {schema}.tenants ({COLUMNS})
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                                  $8::text[], $9::timestamptz[], $10::timestamptz[], $11::timestamptz[],
                                  $12::timestamptz[], $13::bigint[])
             ON CONFLICT (tenant_id) DO UPDATE SET
                 name = EXCLUDED.name, domain = EXCLUDED.domain, plan = EXCLUDED.plan,
                 industry = EXCLUDED.industry, region = EXCLUDED.region, status = EXCLUDED.status,
                 suspended_reason = EXCLUDED.suspended_reason, deletion_requested_at = EXCLUDED.deletion_requested_at,
                 purge_after = EXCLUDED.purge_after, updated_at = EXCLUDED.updated_at, version = EXCLUDED.version"
        ))
        .bind(rows.iter().map(|r| r.tenant_id.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.name.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.domain.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.plan.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.industry.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.region.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.status.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.suspended_reason.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.deletion_requested_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.purge_after).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.version).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// Who a registry query runs for; Postgres row-level security enforces it.
#[derive(Debug, Clone)]
pub enum Scope {
    /// Operators and auditors: every tenant.
    Platform,
    /// A tenant's own users: that tenant only.
    Tenant(String),
}

/// Filters for listing.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this status.
    pub status: Option<String>,
    /// Only this plan.
    pub plan: Option<String>,
    /// Only ids after this one (the cursor).
    pub after: Option<String>,
    /// Page size.
    pub limit: i64,
}

/// A transaction whose queries run in `scope` (row-level security applies).
pub async fn scoped(pool: &PgPool, scope: &Scope) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    match scope {
        Scope::Platform => sqlx::query("SELECT set_config('keel.scope', 'platform', true)").execute(&mut *tx).await?,
        Scope::Tenant(id) => {
            sqlx::query("SELECT set_config('keel.tenant_id', $1, true)").bind(id).execute(&mut *tx).await?
        }
    };
    Ok(tx)
}

/// One tenant, if visible in `scope`.
pub async fn get(pool: &PgPool, scope: &Scope, tenant_id: &str) -> Result<Option<TenantRow>, sqlx::Error> {
    let mut tx = scoped(pool, scope).await?;
    let row = sqlx::query_as(&format!("SELECT {COLUMNS} FROM {}.tenants WHERE tenant_id = $1", live_schema(NAME)))
        .bind(tenant_id)
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(row)
}

/// A page of tenants visible in `scope`, ordered by id (creation order); fetches one
/// extra row so the caller knows whether there is a next page.
pub async fn list(pool: &PgPool, scope: &Scope, filter: &ListFilter) -> Result<Vec<TenantRow>, sqlx::Error> {
    let mut tx = scoped(pool, scope).await?;
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM {}.tenants
         WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR plan = $2)
           AND ($3::text IS NULL OR tenant_id > $3)
         ORDER BY tenant_id LIMIT $4",
        live_schema(NAME)
    ))
    .bind(&filter.status)
    .bind(&filter.plan)
    .bind(&filter.after)
    .bind(filter.limit + 1)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// Tenants whose deletion grace period has ended (for the purge sweeper).
pub async fn due_for_purge(pool: &PgPool, now: DateTime<Utc>, limit: i64) -> Result<Vec<String>, sqlx::Error> {
    let mut tx = scoped(pool, &Scope::Platform).await?;
    let ids = sqlx::query_scalar(&format!(
        "SELECT tenant_id FROM {}.tenants WHERE status = 'pending_deletion' AND purge_after <= $1 ORDER BY purge_after LIMIT $2",
        live_schema(NAME)
    ))
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use keel_domain::plan::Plan;

    use super::*;

    fn change(event: TenantEvent, position: i64) -> Change {
        Change {
            tenant_id: "tnt_01jd0000000000000000000000".into(),
            event,
            at: Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(position),
            position,
        }
    }

    fn provisioned() -> Change {
        change(
            TenantEvent::Provisioned {
                tenant_id: "tnt_01jd0000000000000000000000".parse().unwrap(),
                name: "Acme".into(),
                domain: "acme".into(),
                plan: Plan::Pro,
                owner_email: "o@acme.io".into(),
                industry: Some("fintech".into()),
                region: None,
                provisioned_at: Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap(),
            },
            1,
        )
    }

    #[test]
    fn provisioning_creates_an_active_row() {
        let row = fold(None, &provisioned()).unwrap();
        assert_eq!((row.status.as_str(), row.plan.as_str(), row.version), ("active", "pro", 1));
    }

    #[test]
    fn events_before_provisioning_make_no_row() {
        assert_eq!(fold(None, &change(TenantEvent::Reactivated {}, 2)), None);
    }

    #[test]
    fn lifecycle_updates_status_and_version() {
        let row = fold(None, &provisioned());
        let row = fold(row, &change(TenantEvent::Suspended { reason: "unpaid".into() }, 5)).unwrap();
        assert_eq!(
            (row.status.as_str(), row.suspended_reason.as_deref(), row.version),
            ("suspended", Some("unpaid"), 5)
        );
        let row = fold(Some(row), &change(TenantEvent::Reactivated {}, 6)).unwrap();
        assert_eq!((row.status.as_str(), row.suspended_reason.as_deref()), ("active", None));
        let row = fold(Some(row), &change(TenantEvent::PlanChanged { from: Plan::Pro, to: Plan::Free }, 7)).unwrap();
        assert_eq!(row.plan, "free");
    }

    #[test]
    fn the_profile_comes_from_provisioning_and_is_replaced_whole() {
        let row = fold(None, &provisioned()).unwrap();
        assert_eq!((row.industry.as_deref(), row.region.as_deref()), (Some("fintech"), None));
        let changed = TenantEvent::ProfileChanged { industry: None, region: Some("eu-west-1".into()) };
        let row = fold(Some(row), &change(changed, 4)).unwrap();
        assert_eq!((row.industry.as_deref(), row.region.as_deref(), row.version), (None, Some("eu-west-1"), 4));
        assert_eq!(row.updated_at, change(TenantEvent::Reactivated {}, 4).at);
    }

    #[test]
    fn a_profile_change_before_provisioning_makes_no_row() {
        let changed = TenantEvent::ProfileChanged { industry: Some("retail".into()), region: None };
        assert_eq!(fold(None, &change(changed, 2)), None);
    }

    #[test]
    fn purge_clears_names_but_keeps_a_tombstone_and_the_profile() {
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        let row = fold(None, &provisioned());
        let changed = TenantEvent::ProfileChanged { industry: Some("retail".into()), region: Some("us-east-1".into()) };
        let row = fold(row, &change(changed, 7));
        let row = fold(row, &change(TenantEvent::DeletionRequested { requested_at: at, purge_after: at }, 8));
        let row = fold(row, &change(TenantEvent::Purged { purged_at: at }, 9)).unwrap();
        assert_eq!((row.status.as_str(), row.name, row.domain), ("purged", None, None));
        assert_eq!((row.industry.as_deref(), row.region.as_deref()), (Some("retail"), Some("us-east-1")));
    }
}
