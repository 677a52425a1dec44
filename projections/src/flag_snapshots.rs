//! The flag snapshot read model: flag definitions and each tenant's plan, status, own
//! flag values and entitlement overrides, from which [`snapshot`] computes what a
//! tenant sees: every flag's effective value and every entitlement with its source.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};

use keel_domain::catalog::{EntitlementKind, catalog};
use keel_domain::envelope::EventEnvelope;
use keel_domain::flag::{self, FlagEvent};
use keel_domain::plan::Plan;
use keel_domain::tenant::{self, TenantEvent, TenantStatus};
use keel_domain::tenant_config::{self, TenantConfigEvent};

use crate::read_model::{ReadModel, decode_payload, live_schema};
use crate::tenant_registry::{Scope, scoped};

/// The read model's name.
pub const NAME: &str = "flag_snapshots";
/// The NOTIFY channel of changed snapshots (payload: a tenant id, or `*` for all).
pub const CHANNEL: &str = "keel_flags";

/// The flag snapshot read model.
#[derive(Debug, Default, Clone, Copy)]
pub struct FlagSnapshots;

/// A flag definition row.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DefinitionRow {
    /// The key.
    pub key: String,
    /// `boolean`, `string`, `number` or `object`.
    pub flag_type: String,
    /// The default.
    pub default_value: Value,
    /// Plan name → default.
    pub plan_defaults: Value,
    /// What it is for.
    pub description: String,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Position of its last event.
    pub position: i64,
}

/// A tenant's row.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TenantFlagsRow {
    /// The tenant.
    pub tenant_id: String,
    /// Its plan (unknown until its provisioning is seen).
    pub plan: Option<String>,
    /// `active`, `suspended`, `pending_deletion`, `purged` (or `unknown`).
    pub status: String,
    /// Who set the current plan.
    pub plan_changed_by: Option<String>,
    /// When.
    pub plan_changed_at: Option<DateTime<Utc>>,
    /// Flag key → the tenant's own value.
    pub flag_values: Value,
    /// Entitlement key → `{value, changed_by, changed_at}`.
    pub overrides: Value,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
    /// Position of its last event.
    pub position: i64,
}

/// What a tenant event changes in its row.
#[derive(Debug, Clone, PartialEq)]
pub enum TenantChange {
    /// Provisioned on a plan.
    Provisioned(String),
    /// Moved to another plan.
    Plan(String),
    /// Its lifecycle status changed.
    Status(String),
    /// A flag value was set.
    FlagSet(String, Value),
    /// A flag value was dropped.
    FlagCleared(String),
    /// An entitlement was overridden.
    Overridden(String, Value),
    /// An override was dropped.
    OverrideCleared(String),
}

/// A decoded event.
#[derive(Debug, Clone)]
pub enum Change {
    /// A flag was (re)defined.
    Definition(DefinitionRow),
    /// A tenant's row changes.
    Tenant {
        /// The tenant.
        tenant_id: String,
        /// What changes.
        change: TenantChange,
        /// Who caused it (`kind:id`).
        actor: String,
        /// When.
        at: DateTime<Utc>,
        /// Its position.
        position: i64,
    },
}

/// Applies one change to a tenant's row (pure; creates the row if missing).
pub fn fold(
    row: Option<TenantFlagsRow>,
    tenant_id: &str,
    change: &TenantChange,
    actor: &str,
    at: DateTime<Utc>,
    position: i64,
) -> TenantFlagsRow {
    let mut row = row.unwrap_or_else(|| TenantFlagsRow {
        tenant_id: tenant_id.to_string(),
        plan: None,
        status: "unknown".into(),
        plan_changed_by: None,
        plan_changed_at: None,
        flag_values: json!({}),
        overrides: json!({}),
        updated_at: at,
        position,
    });
    let object = |v: &mut Value| {
        if !v.is_object() {
            *v = json!({});
        }
        v.as_object_mut().map(std::mem::take).unwrap_or_default()
    };
    match change {
        TenantChange::Provisioned(plan) | TenantChange::Plan(plan) => {
            if matches!(change, TenantChange::Provisioned(_)) {
                row.status = TenantStatus::Active.as_str().into();
            }
            row.plan = Some(plan.clone());
            row.plan_changed_by = Some(actor.to_string());
            row.plan_changed_at = Some(at);
        }
        TenantChange::Status(status) => row.status = status.clone(),
        TenantChange::FlagSet(key, value) => {
            let mut values = object(&mut row.flag_values);
            values.insert(key.clone(), value.clone());
            row.flag_values = Value::Object(values);
        }
        TenantChange::FlagCleared(key) => {
            let mut values = object(&mut row.flag_values);
            values.remove(key);
            row.flag_values = Value::Object(values);
        }
        TenantChange::Overridden(key, value) => {
            let mut overrides = object(&mut row.overrides);
            overrides.insert(key.clone(), json!({ "value": value, "changed_by": actor, "changed_at": at }));
            row.overrides = Value::Object(overrides);
        }
        TenantChange::OverrideCleared(key) => {
            let mut overrides = object(&mut row.overrides);
            overrides.remove(key);
            row.overrides = Value::Object(overrides);
        }
    }
    row.updated_at = at;
    row.position = position;
    row
}

/// A flag's effective value for a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct EvaluatedFlag {
    /// The value.
    pub value: Value,
    /// `boolean`, `string`, `number` or `object`.
    #[serde(rename = "type")]
    pub flag_type: String,
    /// Where it comes from: `tenant`, `plan` or `default`.
    pub source: String,
}

/// An entitlement of a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Entitlement {
    /// `capability` or `quota`.
    pub kind: EntitlementKind,
    /// `true`/`false`, or a limit (`null` = unlimited).
    pub value: Value,
    /// `plan` or `override`.
    pub source: String,
    /// Who made it so (`kind:id`): who set the plan, or who overrode it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_by: Option<String>,
    /// When.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_at: Option<DateTime<Utc>>,
}

/// What a tenant sees: its flags and entitlements, versioned and checksummed.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct FlagSnapshot {
    /// The tenant.
    pub tenant_id: String,
    /// Its plan.
    pub plan: Option<String>,
    /// Its status (flags are served only while `active`).
    pub status: String,
    /// The position of the newest event the snapshot reflects.
    pub version: i64,
    /// SHA-256 (hex) of the canonical JSON of `flags` and `entitlements`.
    pub checksum: String,
    /// Flag key → effective value.
    pub flags: BTreeMap<String, EvaluatedFlag>,
    /// Entitlement key → value and source.
    pub entitlements: BTreeMap<String, Entitlement>,
}

/// Computes a tenant's snapshot from its row and the flag definitions (pure).
pub fn snapshot(row: &TenantFlagsRow, definitions: &[DefinitionRow]) -> FlagSnapshot {
    let plan = row.plan.as_deref().and_then(|p| p.parse::<Plan>().ok());
    let mut flags = BTreeMap::new();
    let mut version = row.position;
    for def in definitions {
        version = version.max(def.position);
        let own = row.flag_values.get(&def.key);
        let by_plan = plan.and_then(|p| def.plan_defaults.get(p.as_str()));
        let (value, source) = match (own, by_plan) {
            (Some(v), _) => (v.clone(), "tenant"),
            (None, Some(v)) => (v.clone(), "plan"),
            (None, None) => (def.default_value.clone(), "default"),
        };
        flags.insert(def.key.clone(), EvaluatedFlag { value, flag_type: def.flag_type.clone(), source: source.into() });
    }
    let mut entitlements = BTreeMap::new();
    for (key, (kind, granted)) in catalog().grants(plan.unwrap_or(Plan::Free)) {
        let entitlement = match row.overrides.get(&key) {
            Some(o) => Entitlement {
                kind,
                value: o.get("value").cloned().unwrap_or(Value::Null),
                source: "override".into(),
                changed_by: o.get("changed_by").and_then(Value::as_str).map(str::to_string),
                changed_at: o.get("changed_at").and_then(|v| serde_json::from_value(v.clone()).ok()),
            },
            None => Entitlement {
                kind,
                value: granted,
                source: "plan".into(),
                changed_by: row.plan_changed_by.clone(),
                changed_at: row.plan_changed_at,
            },
        };
        entitlements.insert(key, entitlement);
    }
    let content = json!({ "flags": flags, "entitlements": entitlements });
    let checksum = hex::encode(Sha256::digest(content.to_string().as_bytes()));
    FlagSnapshot {
        tenant_id: row.tenant_id.clone(),
        plan: row.plan.clone(),
        status: row.status.clone(),
        version,
        checksum,
        flags,
        entitlements,
    }
}

const DEFINITION_COLUMNS: &str = "key, flag_type, default_value, plan_defaults, description, updated_at, position";
const TENANT_COLUMNS: &str =
    "tenant_id, plan, status, plan_changed_by, plan_changed_at, flag_values, overrides, updated_at, position";

impl ReadModel for FlagSnapshots {
    type Change = Change;

    fn name(&self) -> &'static str {
        NAME
    }

    fn ddl(&self) -> &'static str {
        include_str!("../sql/flag_snapshots.sql")
    }

    fn decode(&self, event: &EventEnvelope) -> Result<Option<Change>, String> {
        let change = match event.aggregate_type.as_str() {
            flag::AGGREGATE_TYPE => {
                let FlagEvent::Defined { key, flag_type, default_value, plan_defaults, description } =
                    decode_payload(event)?;
                return Ok(Some(Change::Definition(DefinitionRow {
                    key,
                    flag_type: flag_type.as_str().into(),
                    default_value,
                    plan_defaults: serde_json::to_value(plan_defaults).map_err(|e| e.to_string())?,
                    description,
                    updated_at: event.occurred_at,
                    position: event.position,
                })));
            }
            tenant::AGGREGATE_TYPE => match decode_payload::<TenantEvent>(event)? {
                TenantEvent::Provisioned { plan, .. } => TenantChange::Provisioned(plan.as_str().into()),
                TenantEvent::PlanChanged { to, .. } => TenantChange::Plan(to.as_str().into()),
                TenantEvent::Suspended { .. } => TenantChange::Status(TenantStatus::Suspended.as_str().into()),
                TenantEvent::Reactivated {} => TenantChange::Status(TenantStatus::Active.as_str().into()),
                TenantEvent::DeletionRequested { .. } => {
                    TenantChange::Status(TenantStatus::PendingDeletion.as_str().into())
                }
                TenantEvent::Restored { status } => TenantChange::Status(status.as_str().into()),
                TenantEvent::Purged { .. } => TenantChange::Status(TenantStatus::Purged.as_str().into()),
                TenantEvent::ProfileChanged { .. } => return Ok(None),
            },
            tenant_config::AGGREGATE_TYPE => match decode_payload::<TenantConfigEvent>(event)? {
                TenantConfigEvent::FlagSet { key, value } => TenantChange::FlagSet(key, value),
                TenantConfigEvent::FlagCleared { key } => TenantChange::FlagCleared(key),
                TenantConfigEvent::EntitlementOverridden { key, value } => TenantChange::Overridden(key, value),
                TenantConfigEvent::EntitlementOverrideCleared { key } => TenantChange::OverrideCleared(key),
            },
            _ => return Ok(None),
        };
        Ok(Some(Change::Tenant {
            tenant_id: event.aggregate_id.clone(),
            change,
            actor: event.actor.to_string(),
            at: event.occurred_at,
            position: event.position,
        }))
    }

    async fn apply(&self, tx: &mut PgConnection, schema: &str, changes: Vec<Change>) -> Result<(), sqlx::Error> {
        let mut definitions: BTreeMap<String, DefinitionRow> = BTreeMap::new();
        let mut tenant_ids: Vec<String> = Vec::new();
        for change in &changes {
            match change {
                Change::Definition(row) => {
                    definitions.insert(row.key.clone(), row.clone());
                }
                Change::Tenant { tenant_id, .. } => tenant_ids.push(tenant_id.clone()),
            }
        }
        tenant_ids.sort();
        tenant_ids.dedup();
        let mut notify: Vec<String> = tenant_ids.clone();
        if !definitions.is_empty() {
            notify.push("*".into());
            let rows: Vec<&DefinitionRow> = definitions.values().collect();
            sqlx::query(&format!(
                "INSERT INTO {schema}.flag_definitions ({DEFINITION_COLUMNS})
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::jsonb[], $4::jsonb[], $5::text[],
                                      $6::timestamptz[], $7::bigint[])
                 ON CONFLICT (key) DO UPDATE SET flag_type = EXCLUDED.flag_type,
                     default_value = EXCLUDED.default_value, plan_defaults = EXCLUDED.plan_defaults,
                     description = EXCLUDED.description, updated_at = EXCLUDED.updated_at, position = EXCLUDED.position"
            ))
            .bind(rows.iter().map(|r| r.key.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.flag_type.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.default_value.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.plan_defaults.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.description.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.position).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        if !tenant_ids.is_empty() {
            let mut rows: HashMap<String, TenantFlagsRow> = sqlx::query_as::<_, TenantFlagsRow>(&format!(
                "SELECT {TENANT_COLUMNS} FROM {schema}.tenant_flags WHERE tenant_id = ANY($1)"
            ))
            .bind(&tenant_ids)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|r| (r.tenant_id.clone(), r))
            .collect();
            for change in changes {
                if let Change::Tenant { tenant_id, change, actor, at, position } = change {
                    let row = fold(rows.remove(&tenant_id), &tenant_id, &change, &actor, at, position);
                    rows.insert(tenant_id, row);
                }
            }
            let rows: Vec<&TenantFlagsRow> = tenant_ids.iter().filter_map(|id| rows.get(id)).collect();
            sqlx::query(&format!(
                "INSERT INTO {schema}.tenant_flags ({TENANT_COLUMNS})
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                                      $6::jsonb[], $7::jsonb[], $8::timestamptz[], $9::bigint[])
                 ON CONFLICT (tenant_id) DO UPDATE SET plan = EXCLUDED.plan, status = EXCLUDED.status,
                     plan_changed_by = EXCLUDED.plan_changed_by, plan_changed_at = EXCLUDED.plan_changed_at,
                     flag_values = EXCLUDED.flag_values, overrides = EXCLUDED.overrides,
                     updated_at = EXCLUDED.updated_at, position = EXCLUDED.position"
            ))
            .bind(rows.iter().map(|r| r.tenant_id.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.plan.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.status.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.plan_changed_by.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.plan_changed_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.flag_values.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.overrides.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.position).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        // Delivered on commit, in commit order; only the live schema's gateways listen.
        if schema == live_schema(NAME) {
            sqlx::query("SELECT pg_notify($1, t) FROM UNNEST($2::text[]) AS t")
                .bind(CHANNEL)
                .bind(&notify)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }
}

/// Every flag definition (definitions are platform configuration, readable by all).
pub async fn definitions(pool: &PgPool) -> Result<Vec<DefinitionRow>, sqlx::Error> {
    let mut tx = scoped(pool, &Scope::Platform).await?;
    let rows = sqlx::query_as(&format!(
        "SELECT {DEFINITION_COLUMNS} FROM {}.flag_definitions ORDER BY key",
        live_schema(NAME)
    ))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// Tenant rows: all of them (`None`), or the listed ones (for the gateways' cache).
pub async fn tenants(pool: &PgPool, only: Option<&[String]>) -> Result<Vec<TenantFlagsRow>, sqlx::Error> {
    let mut tx = scoped(pool, &Scope::Platform).await?;
    let rows = sqlx::query_as(&format!(
        "SELECT {TENANT_COLUMNS} FROM {}.tenant_flags WHERE $1::text[] IS NULL OR tenant_id = ANY($1)",
        live_schema(NAME)
    ))
    .bind(only)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// One tenant's row, if visible in `scope` (row-level security applies: a tenant scope
/// sees its own row only, whatever `tenant_id` asks for).
pub async fn tenant_row(pool: &PgPool, scope: &Scope, tenant_id: &str) -> Result<Option<TenantFlagsRow>, sqlx::Error> {
    let mut tx = scoped(pool, scope).await?;
    let row = sqlx::query_as(&format!(
        "SELECT {TENANT_COLUMNS} FROM {}.tenant_flags WHERE tenant_id = $1",
        live_schema(NAME)
    ))
    .bind(tenant_id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row)
}

/// The newest position in the model (0 if empty).
pub async fn newest_position(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let mut tx = scoped(pool, &Scope::Platform).await?;
    let newest: Option<i64> = sqlx::query_scalar(&format!(
        "SELECT GREATEST((SELECT max(position) FROM {0}.flag_definitions), (SELECT max(position) FROM {0}.tenant_flags))",
        live_schema(NAME)
    ))
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(newest.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    const T: &str = "tnt_01jd0000000000000000000000";

    fn at(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(s)
    }

    fn def(key: &str, default: Value, plans: Value, position: i64) -> DefinitionRow {
        DefinitionRow {
            key: key.into(),
            flag_type: "boolean".into(),
            default_value: default,
            plan_defaults: plans,
            description: String::new(),
            updated_at: at(0),
            position,
        }
    }

    fn row(changes: &[TenantChange]) -> TenantFlagsRow {
        let mut row = None;
        for (i, change) in changes.iter().enumerate() {
            row = Some(fold(row, T, change, "operator:op_1", at(i as i64), 10 + i as i64));
        }
        row.unwrap()
    }

    #[test]
    fn a_tenant_value_beats_its_plan_default_which_beats_the_default() {
        let defs = [
            def("a", json!(false), json!({ "pro": true }), 3),
            def("b", json!(false), json!({ "free": true }), 4),
            def("c", json!(false), json!({}), 5),
        ];
        let row = row(&[TenantChange::Provisioned("pro".into()), TenantChange::FlagSet("c".into(), json!(true))]);
        let snap = snapshot(&row, &defs);
        let got: Vec<(&str, &Value, &str)> =
            snap.flags.iter().map(|(k, f)| (k.as_str(), &f.value, f.source.as_str())).collect();
        assert_eq!(
            got,
            vec![("a", &json!(true), "plan"), ("b", &json!(false), "default"), ("c", &json!(true), "tenant")]
        );
        assert_eq!((snap.status.as_str(), snap.version), ("active", 11));
    }

    #[test]
    fn the_version_follows_the_newest_event_and_the_checksum_the_content() {
        let row = row(&[TenantChange::Provisioned("free".into())]);
        let old = snapshot(&row, &[def("a", json!(false), json!({}), 3)]);
        let newer_def = snapshot(&row, &[def("a", json!(false), json!({}), 99)]);
        assert_eq!((newer_def.version, &newer_def.checksum), (99, &old.checksum));
        let changed = snapshot(&row, &[def("a", json!(true), json!({}), 100)]);
        assert_ne!(changed.checksum, old.checksum);
    }

    #[test]
    fn entitlements_come_from_the_plan_unless_overridden() {
        let row =
            row(&[TenantChange::Provisioned("free".into()), TenantChange::Overridden("seats".into(), json!(500))]);
        let snap = snapshot(&row, &[]);
        let seats = &snap.entitlements["seats"];
        assert_eq!((seats.value.clone(), seats.source.as_str()), (json!(500), "override"));
        assert_eq!(seats.changed_by.as_deref(), Some("operator:op_1"));
        assert_eq!(seats.changed_at, Some(at(1)));
        let aws = &snap.entitlements["connectors.aws_discovery"];
        assert_eq!((aws.value.clone(), aws.source.as_str()), (json!(false), "plan"));
        let upgraded = fold(Some(row), T, &TenantChange::Plan("pro".into()), "user:usr_1", at(5), 20);
        let snap = snapshot(&upgraded, &[]);
        assert_eq!(snap.entitlements["connectors.aws_discovery"].value, json!(true));
        assert_eq!(snap.entitlements["connectors.aws_discovery"].changed_by.as_deref(), Some("user:usr_1"));
        let cleared = fold(Some(upgraded), T, &TenantChange::OverrideCleared("seats".into()), "op", at(6), 21);
        assert_eq!(snapshot(&cleared, &[]).entitlements["seats"].value, json!(50));
    }

    #[test]
    fn lifecycle_changes_only_the_status() {
        let row = row(&[
            TenantChange::Provisioned("pro".into()),
            TenantChange::FlagSet("a".into(), json!(true)),
            TenantChange::Status("suspended".into()),
        ]);
        assert_eq!(row.status, "suspended");
        assert_eq!(row.flag_values, json!({ "a": true }));
        let cleared = fold(Some(row), T, &TenantChange::FlagCleared("a".into()), "op", at(9), 30);
        assert_eq!(cleared.flag_values, json!({}));
    }
}
