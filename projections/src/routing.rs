//! The routing read model: every routing snapshot version (what edge routers fetch),
//! and per tenant its deployment target with the last fleet health report, from which
//! [`drift`] tells whether what agents see matches the registry. A purged tenant's
//! deployment row is removed.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use keel_domain::deployment::{self, DeploymentEvent};
use keel_domain::envelope::EventEnvelope;
use keel_domain::routing::{self, RoutingEntry, RoutingEvent};
use keel_domain::tenant;

use crate::read_model::{ReadModel, decode_payload, live_schema};
use crate::tenant_registry::{Scope, scoped};

/// The read model's name.
pub const NAME: &str = "routing";

/// A health report older than this is `stale`.
pub const STALE_AFTER_SECONDS: i64 = 300;

/// The routing read model.
#[derive(Debug, Default, Clone, Copy)]
pub struct RoutingModel;

/// One routing snapshot version.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct SnapshotRow {
    /// The version (1, 2, 3…).
    pub version: i64,
    /// The routes, sorted by domain. Their compact JSON, as served, is canonical: its
    /// SHA-256 is `checksum`.
    #[sqlx(json)]
    pub entries: Vec<RoutingEntry>,
    /// Hex SHA-256 of the entries' canonical JSON (also the `ETag`).
    pub checksum: String,
    /// When the entries were gathered (for a rollback: when it was made).
    pub generated_at: DateTime<Utc>,
    /// `published` or `rolled_back`.
    pub kind: String,
    /// For a rollback, the version whose entries it restored.
    pub rolled_back_to: Option<i64>,
    /// Position of its event.
    pub position: i64,
}

/// A tenant's deployment target and last health report.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct DeploymentRow {
    /// The tenant.
    pub tenant_id: String,
    /// Environment (absent until a target is set).
    pub environment: Option<String>,
    /// Cluster.
    pub cluster: Option<String>,
    /// Namespace.
    pub namespace: Option<String>,
    /// Where edge routers send the tenant's traffic.
    pub routing_target: Option<String>,
    /// `pending`, `deploying`, `active`, `failed` or `retired`.
    pub state: Option<String>,
    /// When the target was last set.
    pub updated_at: Option<DateTime<Utc>>,
    /// When the last health report arrived (absent until one does).
    pub last_report_at: Option<DateTime<Utc>>,
    /// Who sent it.
    pub last_report_agent: Option<String>,
    /// The routing target the agent saw (empty: none).
    pub observed_target: Option<String>,
    /// The state the agent saw.
    pub observed_state: Option<String>,
    /// Whether the deployment answered its health checks.
    pub healthy: Option<bool>,
    /// Position of the last event applied to this row.
    pub position: i64,
}

/// How what the fleet reports differs from the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Drift {
    /// The last report matches the registry.
    None,
    /// The agent sees another routing target.
    TargetMismatch,
    /// The agent sees another deployment state.
    StateMismatch,
    /// No agent has reported yet.
    Unreported,
    /// The last report is older than five minutes.
    Stale,
}

/// Compares a row's registry target and state with its last report (pure). The checks
/// are made in the order unreported, stale, target, state.
pub fn drift(row: &DeploymentRow, now: DateTime<Utc>) -> Drift {
    let Some(reported_at) = row.last_report_at else {
        return Drift::Unreported;
    };
    if now - reported_at > Duration::seconds(STALE_AFTER_SECONDS) {
        return Drift::Stale;
    }
    let registry_target = row.routing_target.as_deref().unwrap_or_default();
    if row.observed_target.as_deref().unwrap_or_default() != registry_target {
        return Drift::TargetMismatch;
    }
    if row.observed_state != row.state {
        return Drift::StateMismatch;
    }
    Drift::None
}

/// A tenant in the fleet view: its deployment row and its drift.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct TenantHealth {
    /// The deployment row.
    #[serde(flatten)]
    pub deployment: DeploymentRow,
    /// How the last report differs from the registry.
    pub drift: Drift,
}

/// What a tenant-keyed event changes in its deployment row.
#[derive(Debug, Clone, PartialEq)]
pub enum DeploymentChange {
    /// A deployment event.
    Event(DeploymentEvent),
    /// The tenant was purged: its row goes.
    Purged,
}

/// A decoded event.
#[derive(Debug, Clone)]
pub enum Change {
    /// A snapshot version was published or rolled back to.
    Snapshot(SnapshotRow),
    /// A tenant's deployment row changes.
    Deployment {
        /// The tenant.
        tenant_id: String,
        /// What changes.
        change: DeploymentChange,
        /// When.
        at: DateTime<Utc>,
        /// Its position.
        position: i64,
    },
}

/// Applies one change to a tenant's deployment row (pure; `None` = no row).
pub fn fold(
    row: Option<DeploymentRow>,
    tenant_id: &str,
    change: &DeploymentChange,
    at: DateTime<Utc>,
    position: i64,
) -> Option<DeploymentRow> {
    let event = match change {
        DeploymentChange::Purged => return None,
        DeploymentChange::Event(event) => event,
    };
    let mut row = row.unwrap_or_else(|| DeploymentRow {
        tenant_id: tenant_id.to_string(),
        environment: None,
        cluster: None,
        namespace: None,
        routing_target: None,
        state: None,
        updated_at: None,
        last_report_at: None,
        last_report_agent: None,
        observed_target: None,
        observed_state: None,
        healthy: None,
        position,
    });
    match event {
        DeploymentEvent::TargetSet { environment, cluster, namespace, routing_target, state } => {
            row.environment = Some(environment.clone());
            row.cluster = Some(cluster.clone());
            row.namespace = Some(namespace.clone());
            row.routing_target = Some(routing_target.clone());
            row.state = Some(state.as_str().to_string());
            row.updated_at = Some(at);
        }
        DeploymentEvent::HealthReported { agent_id, observed_target, observed_state, healthy, reported_at } => {
            row.last_report_at = Some(*reported_at);
            row.last_report_agent = Some(agent_id.clone());
            row.observed_target = Some(observed_target.clone());
            row.observed_state = Some(observed_state.as_str().to_string());
            row.healthy = Some(*healthy);
        }
    }
    row.position = position;
    Some(row)
}

const SNAPSHOT_COLUMNS: &str = "version, entries, checksum, generated_at, kind, rolled_back_to, position";
const DEPLOYMENT_COLUMNS: &str = "tenant_id, environment, cluster, namespace, routing_target, state, updated_at, \
     last_report_at, last_report_agent, observed_target, observed_state, healthy, position";

/// The snapshot row of a routing event.
fn snapshot_row(event: RoutingEvent, position: i64) -> Result<SnapshotRow, String> {
    let version = |v: u64| i64::try_from(v).map_err(|_| format!("routing version {v} out of range"));
    Ok(match event {
        RoutingEvent::SnapshotPublished { version: v, entries, generated_at, checksum } => SnapshotRow {
            version: version(v)?,
            entries,
            checksum,
            generated_at,
            kind: "published".into(),
            rolled_back_to: None,
            position,
        },
        RoutingEvent::SnapshotRolledBack { version: v, to_version, entries, checksum, generated_at, .. } => {
            SnapshotRow {
                version: version(v)?,
                entries,
                checksum,
                generated_at,
                kind: "rolled_back".into(),
                rolled_back_to: Some(version(to_version)?),
                position,
            }
        }
    })
}

impl ReadModel for RoutingModel {
    type Change = Change;

    fn name(&self) -> &'static str {
        NAME
    }

    fn ddl(&self) -> &'static str {
        include_str!("../sql/routing.sql")
    }

    fn decode(&self, event: &EventEnvelope) -> Result<Option<Change>, String> {
        let change = match event.aggregate_type.as_str() {
            routing::AGGREGATE_TYPE => {
                return Ok(Some(Change::Snapshot(snapshot_row(decode_payload(event)?, event.position)?)));
            }
            deployment::AGGREGATE_TYPE => DeploymentChange::Event(decode_payload(event)?),
            tenant::AGGREGATE_TYPE if event.event_type == "tenant.purged" => DeploymentChange::Purged,
            _ => return Ok(None),
        };
        Ok(Some(Change::Deployment {
            tenant_id: event.aggregate_id.clone(),
            change,
            at: event.occurred_at,
            position: event.position,
        }))
    }

    async fn apply(&self, tx: &mut PgConnection, schema: &str, changes: Vec<Change>) -> Result<(), sqlx::Error> {
        let mut snapshots: BTreeMap<i64, SnapshotRow> = BTreeMap::new();
        let mut tenant_ids: Vec<String> = Vec::new();
        for change in &changes {
            match change {
                Change::Snapshot(row) => {
                    snapshots.insert(row.version, row.clone());
                }
                Change::Deployment { tenant_id, .. } => tenant_ids.push(tenant_id.clone()),
            }
        }
        if !snapshots.is_empty() {
            let rows: Vec<&SnapshotRow> = snapshots.values().collect();
            let entries = rows
                .iter()
                .map(|r| serde_json::to_value(&r.entries))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            // A version is immutable: a repeat of its event changes nothing.
            sqlx::query(&format!(
                "INSERT INTO {schema}.snapshots ({SNAPSHOT_COLUMNS})
                 SELECT * FROM UNNEST($1::bigint[], $2::jsonb[], $3::text[], $4::timestamptz[], $5::text[],
                                      $6::bigint[], $7::bigint[])
                 ON CONFLICT (version) DO NOTHING"
            ))
            .bind(rows.iter().map(|r| r.version).collect::<Vec<_>>())
            .bind(entries)
            .bind(rows.iter().map(|r| r.checksum.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.generated_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.kind.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.rolled_back_to).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.position).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        if tenant_ids.is_empty() {
            return Ok(());
        }
        tenant_ids.sort();
        tenant_ids.dedup();
        let mut rows: HashMap<String, DeploymentRow> = sqlx::query_as::<_, DeploymentRow>(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM {schema}.deployments WHERE tenant_id = ANY($1)"
        ))
        .bind(&tenant_ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| (r.tenant_id.clone(), r))
        .collect();
        for change in changes {
            if let Change::Deployment { tenant_id, change, at, position } = change
                && let Some(row) = fold(rows.remove(&tenant_id), &tenant_id, &change, at, position)
            {
                rows.insert(tenant_id, row);
            }
        }
        let gone: Vec<String> = tenant_ids.iter().filter(|id| !rows.contains_key(*id)).cloned().collect();
        if !gone.is_empty() {
            sqlx::query(&format!("DELETE FROM {schema}.deployments WHERE tenant_id = ANY($1)"))
                .bind(gone)
                .execute(&mut *tx)
                .await?;
        }
        let rows: Vec<&DeploymentRow> = tenant_ids.iter().filter_map(|id| rows.get(id)).collect();
        if rows.is_empty() {
            return Ok(());
        }
        sqlx::query(&format!(
            "INSERT INTO {schema}.deployments ({DEPLOYMENT_COLUMNS})
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                  $7::timestamptz[], $8::timestamptz[], $9::text[], $10::text[], $11::text[],
                                  $12::boolean[], $13::bigint[])
             ON CONFLICT (tenant_id) DO UPDATE SET
                 environment = EXCLUDED.environment, cluster = EXCLUDED.cluster, namespace = EXCLUDED.namespace,
                 routing_target = EXCLUDED.routing_target, state = EXCLUDED.state, updated_at = EXCLUDED.updated_at,
                 last_report_at = EXCLUDED.last_report_at, last_report_agent = EXCLUDED.last_report_agent,
                 observed_target = EXCLUDED.observed_target, observed_state = EXCLUDED.observed_state,
                 healthy = EXCLUDED.healthy, position = EXCLUDED.position"
        ))
        .bind(rows.iter().map(|r| r.tenant_id.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.environment.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.cluster.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.namespace.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.routing_target.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.state.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.last_report_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.last_report_agent.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.observed_target.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.observed_state.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.healthy).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.position).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// Paging of the fleet view.
#[derive(Debug, Clone, Default)]
pub struct FleetFilter {
    /// Only tenants after this id (the cursor).
    pub after: Option<String>,
    /// Page size.
    pub limit: i64,
}

/// The newest snapshot version, if any was published.
pub async fn latest(pool: &PgPool) -> Result<Option<SnapshotRow>, sqlx::Error> {
    let mut tx = scoped(pool, &Scope::Platform).await?;
    let row = sqlx::query_as(&format!(
        "SELECT {SNAPSHOT_COLUMNS} FROM {}.snapshots ORDER BY version DESC LIMIT 1",
        live_schema(NAME)
    ))
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row)
}

/// Snapshot version `version`, if it exists.
pub async fn by_version(pool: &PgPool, version: i64) -> Result<Option<SnapshotRow>, sqlx::Error> {
    let mut tx = scoped(pool, &Scope::Platform).await?;
    let row =
        sqlx::query_as(&format!("SELECT {SNAPSHOT_COLUMNS} FROM {}.snapshots WHERE version = $1", live_schema(NAME)))
            .bind(version)
            .fetch_optional(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(row)
}

/// A page of tenants with a deployment target or a health report, ordered by id, with
/// their drift as of `now`; fetches one extra row so the caller knows whether there is
/// a next page.
pub async fn fleet_health(
    pool: &PgPool,
    filter: &FleetFilter,
    now: DateTime<Utc>,
) -> Result<Vec<TenantHealth>, sqlx::Error> {
    let mut tx = scoped(pool, &Scope::Platform).await?;
    let rows: Vec<DeploymentRow> = sqlx::query_as(&format!(
        "SELECT {DEPLOYMENT_COLUMNS} FROM {}.deployments
         WHERE ($1::text IS NULL OR tenant_id > $1) ORDER BY tenant_id LIMIT $2",
        live_schema(NAME)
    ))
    .bind(&filter.after)
    .bind(filter.limit + 1)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(|deployment| TenantHealth { drift: drift(&deployment, now), deployment }).collect())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use keel_domain::deployment::DeploymentState;

    use super::*;

    const TENANT: &str = "tnt_01jd0000000000000000000000";

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap()
    }

    fn target_set(state: DeploymentState) -> DeploymentChange {
        DeploymentChange::Event(DeploymentEvent::TargetSet {
            environment: "production".into(),
            cluster: "eu-1".into(),
            namespace: "acme".into(),
            routing_target: "acme.eu-1.internal:8443".into(),
            state,
        })
    }

    fn reported(target: &str, state: DeploymentState, at: DateTime<Utc>) -> DeploymentChange {
        DeploymentChange::Event(DeploymentEvent::HealthReported {
            agent_id: "app_1".into(),
            observed_target: target.into(),
            observed_state: state,
            healthy: true,
            reported_at: at,
        })
    }

    #[test]
    fn a_target_creates_an_unreported_row() {
        let row = fold(None, TENANT, &target_set(DeploymentState::Active), t0(), 3).unwrap();
        assert_eq!((row.state.as_deref(), row.updated_at, row.position), (Some("active"), Some(t0()), 3));
        assert_eq!(drift(&row, t0()), Drift::Unreported);
    }

    #[test]
    fn reports_are_compared_with_the_registry() {
        let at = t0() + Duration::minutes(1);
        let row = fold(None, TENANT, &target_set(DeploymentState::Active), t0(), 3);
        let row = fold(row, TENANT, &reported("acme.eu-1.internal:8443", DeploymentState::Active, at), at, 4).unwrap();
        assert_eq!((row.last_report_agent.as_deref(), row.healthy, row.position), (Some("app_1"), Some(true), 4));
        assert_eq!(row.updated_at, Some(t0()));
        assert_eq!(drift(&row, at), Drift::None);
        assert_eq!(drift(&row, at + Duration::seconds(STALE_AFTER_SECONDS + 1)), Drift::Stale);
        let row = fold(Some(row), TENANT, &reported("old.internal", DeploymentState::Active, at), at, 5).unwrap();
        assert_eq!(drift(&row, at), Drift::TargetMismatch);
        let row =
            fold(Some(row), TENANT, &reported("acme.eu-1.internal:8443", DeploymentState::Failed, at), at, 6).unwrap();
        assert_eq!(drift(&row, at), Drift::StateMismatch);
    }

    #[test]
    fn a_report_without_a_target_is_drift() {
        let row = fold(None, TENANT, &reported("", DeploymentState::Pending, t0()), t0(), 2).unwrap();
        assert_eq!((row.routing_target.as_deref(), row.state.as_deref()), (None, None));
        assert_eq!(drift(&row, t0()), Drift::StateMismatch);
        let row = fold(None, TENANT, &reported("acme.io", DeploymentState::Active, t0()), t0(), 2).unwrap();
        assert_eq!(drift(&row, t0()), Drift::TargetMismatch);
    }

    #[test]
    fn a_purge_removes_the_row() {
        let row = fold(None, TENANT, &target_set(DeploymentState::Active), t0(), 3);
        assert_eq!(fold(row, TENANT, &DeploymentChange::Purged, t0(), 4), None);
    }

    #[test]
    fn snapshot_rows_keep_the_rollback_target() {
        let event = RoutingEvent::SnapshotRolledBack {
            version: 3,
            from_version: 2,
            to_version: 1,
            entries: vec![],
            checksum: routing::checksum(&[]),
            generated_at: t0(),
        };
        let row = snapshot_row(event, 9).unwrap();
        assert_eq!((row.version, row.kind.as_str(), row.rolled_back_to, row.position), (3, "rolled_back", Some(1), 9));
    }

    #[test]
    fn only_routing_deployment_and_purge_events_are_decoded() {
        let envelope = |aggregate_type: &str, event_type: &str, payload: serde_json::Value| EventEnvelope {
            event_id: uuid::Uuid::now_v7(),
            tenant_id: Some(TENANT.into()),
            position: 7,
            txid: 1,
            aggregate_type: aggregate_type.into(),
            aggregate_id: TENANT.into(),
            sequence: 1,
            event_type: event_type.into(),
            schema_version: "1".into(),
            occurred_at: t0(),
            actor: keel_domain::envelope::Actor::system("test"),
            correlation_id: "c".into(),
            causation_id: "c".into(),
            payload,
        };
        let model = RoutingModel;
        let suspended = envelope("tenant", "tenant.suspended", serde_json::json!({ "reason": "x" }));
        assert!(model.decode(&suspended).unwrap().is_none());
        let purged = envelope("tenant", "tenant.purged", serde_json::json!({ "purged_at": t0() }));
        assert!(matches!(
            model.decode(&purged).unwrap(),
            Some(Change::Deployment { change: DeploymentChange::Purged, .. })
        ));
        let broken = envelope("deployment", "deployment.target_set", serde_json::json!({ "cluster": 1 }));
        assert!(model.decode(&broken).is_err());
    }
}
