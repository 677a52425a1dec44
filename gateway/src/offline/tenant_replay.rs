//! `keel replay --tenant T --until TIME`: one tenant's state as it was at a moment,
//! rebuilt from the event log alone (Kafka or an export), for auditors. No database.
//!
//! It folds the log with the read models' own pure functions, so it shows what they
//! showed: the registry entry ([`tenant_registry::fold`]), the users and roles (the
//! [`Directory`] aggregate's `apply`, as `ListUsers` lists them), the flag snapshot
//! ([`flag_snapshots::fold`] and [`flag_snapshots::snapshot`], flag definitions
//! included) and the entitlements ([`entitlement_items`]).
//!
//! What is applied, per Kafka key (the tenant's own, and `platform` for flag
//! definitions):
//! - the prefix of the key's events the fold uses (tenant, tenant_config, directory,
//!   flag), in log order, that ends before its first such event with `occurred_at`
//!   after `until`. Within a key, `occurred_at` follows log order
//!   except between commands that raced, and a prefix is a state the read models
//!   really went through;
//! - without republished repeats: an event at or below the key's last applied
//!   `(txid, position)` is dropped, as projectors do (ADR 0003);
//! - an event a read model cannot decode is parked, with every later event of the
//!   same key for that model, as the projector parks it; the document lists it under
//!   `parked`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::ControlFlow;

use chrono::{DateTime, SubsecRound, Utc};
use cqrs_es::Aggregate;
use indicatif::ProgressBar;
use serde::Serialize;

use keel_domain::directory::{self, Directory, DirectoryEvent};
use keel_domain::envelope::{EventEnvelope, PLATFORM_KEY};
use keel_domain::tenant::{self, TenantStatus};
use keel_domain::{flag, tenant_config};
use keel_projections::ReadModel;
use keel_projections::flag_snapshots::{self, DefinitionRow, FlagSnapshot, FlagSnapshots, TenantFlagsRow};
use keel_projections::read_model::decode_payload;
use keel_projections::tenant_registry::{self, TenantRegistry, TenantRow};

use super::event_log::{self, LogError, LogSource};
use crate::rest::flags::{EntitlementItem, entitlement_items};

/// One user of the tenant, as `ListUsers` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayedUser {
    /// The user.
    pub user_id: String,
    /// The e-mail address.
    pub email: String,
    /// `owner`, `admin` or `user`.
    pub role: String,
    /// `invited`, `active` or `disabled`.
    pub status: String,
}

/// An event a read model could not apply (so it, and every later event of its key for
/// that model, were left out, as the projector parks them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParkedEvent {
    /// `tenant_registry`, `flag_snapshots` or `directory`.
    pub model: String,
    /// The event's position.
    pub position: i64,
    /// Its type.
    pub event_type: String,
    /// Why it could not be applied.
    pub reason: String,
}

/// A tenant's state at a moment.
#[derive(Debug, Serialize)]
pub struct ReplayedTenant {
    /// The tenant.
    pub tenant_id: String,
    /// The moment.
    pub until: DateTime<Utc>,
    /// The position of the last event applied (0 if none).
    pub position: i64,
    /// The registry entry (`GET /v1/control-plane/tenants/{id}`; times to the
    /// microsecond, as stored), or `None` before provisioning.
    pub registry: Option<TenantRow>,
    /// Its users, by id (empty once the tenant is purged, as sign-in forgets them).
    pub users: Vec<ReplayedUser>,
    /// Its flag snapshot (`GET /v1/tenants/{id}/flags`), or `None` while the flag read
    /// model has no row for it.
    pub flags: Option<FlagSnapshot>,
    /// Its entitlements (`GET /v1/control-plane/tenants/{id}/entitlements`).
    pub entitlements: Vec<EntitlementItem>,
    /// Events left out because a read model could not apply them (omitted if none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parked: Vec<ParkedEvent>,
}

/// Where a key's events stand in the fold.
#[derive(Debug, Default)]
struct KeyState {
    /// The `(txid, position)` of the last event of the key seen within the prefix.
    applied: Option<(i64, i64)>,
    /// An event after `until` was seen: the rest of the key is left out.
    ended: bool,
}

/// The fold of one tenant's state over the log (pure: feed it every record in log
/// order with [`TenantFold::apply`], then [`TenantFold::finish`]).
#[derive(Debug)]
pub struct TenantFold {
    tenant_id: String,
    until: DateTime<Utc>,
    keys: HashMap<String, KeyState>,
    position: i64,
    registry: Option<TenantRow>,
    directory: Directory,
    flags: Option<TenantFlagsRow>,
    definitions: BTreeMap<String, DefinitionRow>,
    /// (model, key) pairs parked.
    blocked: BTreeSet<(&'static str, String)>,
    parked: Vec<ParkedEvent>,
}

const DIRECTORY: &str = "directory";

/// The aggregates the fold reads. Only their events decide where a key ends: audit
/// records, usage and the like carry their own times (an app's timestamp, a record
/// built after its command) and say nothing about the state.
const FOLDED: [&str; 4] =
    [tenant::AGGREGATE_TYPE, tenant_config::AGGREGATE_TYPE, directory::AGGREGATE_TYPE, flag::AGGREGATE_TYPE];

impl TenantFold {
    /// An empty fold of `tenant_id` up to `until` (inclusive).
    pub fn new(tenant_id: &str, until: DateTime<Utc>) -> Self {
        Self {
            tenant_id: tenant_id.to_string(),
            until,
            keys: HashMap::new(),
            position: 0,
            registry: None,
            directory: Directory::default(),
            flags: None,
            definitions: BTreeMap::new(),
            blocked: BTreeSet::new(),
            parked: Vec::new(),
        }
    }

    /// Folds the next record of the log (`key` is its Kafka key); returns whether it
    /// changed the state.
    pub fn apply(&mut self, key: &str, event: &EventEnvelope) -> bool {
        let own = key == self.tenant_id;
        if !own && key != PLATFORM_KEY && event.aggregate_type != flag::AGGREGATE_TYPE {
            return false;
        }
        if !FOLDED.contains(&event.aggregate_type.as_str()) {
            return false;
        }
        let state = self.keys.entry(key.to_string()).or_default();
        if state.ended || state.applied.is_some_and(|last| event.order() <= last) {
            return false;
        }
        if event.occurred_at > self.until {
            state.ended = true;
            return false;
        }
        state.applied = Some(event.order());
        let mine = own && event.aggregate_id == self.tenant_id;
        let applied = match event.aggregate_type.as_str() {
            tenant::AGGREGATE_TYPE if mine => self.apply_registry(key, event) | self.apply_flags(key, event),
            tenant_config::AGGREGATE_TYPE if mine => self.apply_flags(key, event),
            directory::AGGREGATE_TYPE if mine => self.apply_directory(key, event),
            flag::AGGREGATE_TYPE => self.apply_flags(key, event),
            _ => false,
        };
        if applied {
            self.position = self.position.max(event.position);
        }
        applied
    }

    fn park(&mut self, model: &'static str, key: &str, event: &EventEnvelope, reason: String) -> bool {
        self.blocked.insert((model, key.to_string()));
        self.parked.push(ParkedEvent {
            model: model.to_string(),
            position: event.position,
            event_type: event.event_type.clone(),
            reason,
        });
        false
    }

    fn is_blocked(&self, model: &'static str, key: &str) -> bool {
        self.blocked.contains(&(model, key.to_string()))
    }

    fn apply_registry(&mut self, key: &str, event: &EventEnvelope) -> bool {
        if self.is_blocked(tenant_registry::NAME, key) {
            return false;
        }
        match TenantRegistry.decode(event) {
            Ok(Some(change)) => match tenant_registry::fold(self.registry.take(), &change) {
                Some(row) => {
                    self.registry = Some(row);
                    true
                }
                None => false,
            },
            Ok(None) => false,
            Err(reason) => self.park(tenant_registry::NAME, key, event, reason),
        }
    }

    fn apply_flags(&mut self, key: &str, event: &EventEnvelope) -> bool {
        if self.is_blocked(flag_snapshots::NAME, key) {
            return false;
        }
        match FlagSnapshots.decode(event) {
            Ok(Some(flag_snapshots::Change::Definition(row))) => {
                self.definitions.insert(row.key.clone(), row);
                true
            }
            Ok(Some(flag_snapshots::Change::Tenant { tenant_id, change, actor, at, position }))
                if tenant_id == self.tenant_id =>
            {
                let row = flag_snapshots::fold(self.flags.take(), &tenant_id, &change, &actor, at, position);
                self.flags = Some(row);
                true
            }
            Ok(_) => false,
            Err(reason) => self.park(flag_snapshots::NAME, key, event, reason),
        }
    }

    fn apply_directory(&mut self, key: &str, event: &EventEnvelope) -> bool {
        if self.is_blocked(DIRECTORY, key) {
            return false;
        }
        match decode_payload::<DirectoryEvent>(event) {
            Ok(directory_event) => {
                self.directory.apply(directory_event);
                true
            }
            Err(reason) => self.park(DIRECTORY, key, event, reason),
        }
    }

    /// The state reached.
    pub fn finish(self) -> ReplayedTenant {
        let purged = self.registry.as_ref().is_some_and(|r| r.status == TenantStatus::Purged.as_str());
        let users = if purged {
            Vec::new()
        } else {
            self.directory
                .users()
                .map(|(id, user)| ReplayedUser {
                    user_id: id.to_string(),
                    email: user.email.clone(),
                    role: user.role.as_str().to_string(),
                    status: user.status.as_str().to_string(),
                })
                .collect()
        };
        let definitions: Vec<DefinitionRow> = self.definitions.into_values().collect();
        let flags = self.flags.as_ref().map(|row| flag_snapshots::snapshot(row, &definitions));
        let entitlements = flags.as_ref().map(entitlement_items).unwrap_or_default();
        ReplayedTenant {
            tenant_id: self.tenant_id,
            until: self.until,
            position: self.position,
            registry: self.registry.map(as_stored),
            users,
            flags,
            entitlements,
            parked: self.parked,
        }
    }
}

/// The row with its times to the microsecond, as Postgres keeps them (some come from
/// payloads, with nanoseconds).
fn as_stored(mut row: TenantRow) -> TenantRow {
    row.created_at = row.created_at.trunc_subsecs(6);
    row.updated_at = row.updated_at.trunc_subsecs(6);
    row.deletion_requested_at = row.deletion_requested_at.map(|t| t.trunc_subsecs(6));
    row.purge_after = row.purge_after.map(|t| t.trunc_subsecs(6));
    row
}

/// Rebuilds `tenant_id`'s state at `until` from the whole log of `source`, advancing
/// `progress` (see [`event_log::read`]).
pub async fn replay_tenant(
    source: &LogSource,
    tenant_id: &str,
    until: DateTime<Utc>,
    progress: &ProgressBar,
) -> Result<ReplayedTenant, LogError> {
    let mut fold = TenantFold::new(tenant_id, until);
    event_log::read::<(), _>(source, progress, |record| {
        fold.apply(&record.key, &record.envelope);
        ControlFlow::Continue(())
    })
    .await?;
    Ok(fold.finish())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::{Value, json};

    use super::*;

    const T: &str = "tnt_01jd0000000000000000000000";
    const U: &str = "usr_01jd0000000000000000000000";

    fn at(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(s)
    }

    /// An event at position `p` (committed in transaction `p`, at second `p`).
    fn event(p: i64, tenant: Option<&str>, aggregate: (&str, &str), event_type: &str, payload: Value) -> EventEnvelope {
        EventEnvelope {
            event_id: uuid::Uuid::now_v7(),
            tenant_id: tenant.map(str::to_string),
            position: p,
            txid: p,
            aggregate_type: aggregate.0.into(),
            aggregate_id: aggregate.1.into(),
            sequence: p,
            event_type: event_type.into(),
            schema_version: "1".into(),
            occurred_at: at(p),
            actor: keel_domain::envelope::Actor::system("test"),
            correlation_id: "c".into(),
            causation_id: "c".into(),
            payload,
        }
    }

    fn log() -> Vec<EventEnvelope> {
        let provisioned = json!({ "tenant_id": T, "name": "Acme", "domain": "acme", "plan": "pro",
            "owner_email": "o@acme.io", "provisioned_at": at(1) });
        let token = json!({ "hash": "00", "expires_at": at(100) });
        vec![
            event(1, Some(T), ("tenant", T), "tenant.provisioned", provisioned),
            event(
                2,
                None,
                ("flag", "beta"),
                "flag.defined",
                json!({ "key": "beta", "flag_type": "boolean",
                "default_value": false, "plan_defaults": { "pro": true }, "description": "" }),
            ),
            event(
                3,
                Some(T),
                ("directory", T),
                "user.invited",
                json!({ "user_id": U, "email": "a@acme.io",
                "role": "user", "invitation": token, "invited_at": at(3) }),
            ),
            event(4, Some(T), ("tenant_config", T), "tenant_config.flag_set", json!({ "key": "beta", "value": false })),
            event(5, Some(T), ("tenant", T), "tenant.plan_changed", json!({ "from": "pro", "to": "free" })),
            event(
                6,
                Some(T),
                ("directory", T),
                "user.role_changed",
                json!({ "user_id": U, "from": "user", "to": "admin" }),
            ),
        ]
    }

    fn fold_until(events: &[EventEnvelope], until: i64) -> ReplayedTenant {
        let mut fold = TenantFold::new(T, at(until));
        for e in events {
            fold.apply(e.key(), e);
        }
        fold.finish()
    }

    #[test]
    fn the_state_at_a_moment_leaves_out_what_came_after() {
        let state = fold_until(&log(), 4);
        assert_eq!(state.position, 4);
        let registry = state.registry.unwrap();
        assert_eq!((registry.plan.as_str(), registry.version), ("pro", 1));
        assert_eq!(state.users.iter().map(|u| u.role.as_str()).collect::<Vec<_>>(), ["user"]);
        let flags = state.flags.unwrap();
        assert_eq!((flags.flags["beta"].value.clone(), flags.version), (json!(false), 4));
        assert_eq!(state.entitlements.iter().find(|e| e.key == "connectors.aws_discovery").unwrap().value, json!(true));

        let later = fold_until(&log(), 10);
        assert_eq!((later.registry.unwrap().plan.as_str(), later.position), ("free", 6));
        assert_eq!(later.users[0].role, "admin");
    }

    #[test]
    fn before_provisioning_there_is_nothing() {
        let state = fold_until(&log(), 0);
        assert_eq!((state.position, state.registry.is_none(), state.flags.is_none()), (0, true, true));
        assert!(state.users.is_empty() && state.entitlements.is_empty());
    }

    #[test]
    fn republished_repeats_and_other_tenants_change_nothing() {
        let mut events = log();
        let repeat = events[0].clone();
        events.push(repeat);
        let mut other = events[4].clone();
        other.tenant_id = Some("tnt_01jd0000000000000000000001".into());
        other.aggregate_id = "tnt_01jd0000000000000000000001".into();
        other.position = 7;
        other.txid = 7;
        events.push(other);
        let state = fold_until(&events, 10);
        let registry = state.registry.unwrap();
        assert_eq!((registry.plan.as_str(), registry.version, state.position), ("free", 5, 6));
    }

    #[test]
    fn a_key_stops_at_its_first_event_after_the_moment() {
        let mut events = log();
        // Accepted before the moment but committed after an event accepted after it.
        events[4].occurred_at = at(9);
        events[5].occurred_at = at(2);
        let state = fold_until(&events, 4);
        assert_eq!(state.users[0].role, "user");
    }

    #[test]
    fn records_that_carry_their_own_time_do_not_end_a_key() {
        // An audit record written after the moment lands before a role change accepted
        // before it (at second 6, position 7).
        let mut events = log();
        let mut role_change = events.pop().unwrap();
        let mut audit = event(6, Some(T), ("audit", T), "audit.recorded", json!({}));
        audit.occurred_at = at(9);
        (role_change.position, role_change.txid) = (7, 7);
        events.extend([audit, role_change]);
        let state = fold_until(&events, 6);
        assert_eq!((state.users[0].role.as_str(), state.position), ("admin", 7));
    }

    #[test]
    fn an_event_a_model_cannot_read_is_parked_with_the_rest_of_its_key() {
        let mut events = log();
        events[4].payload = json!({ "to": "platinum" });
        let state = fold_until(&events, 10);
        assert_eq!(state.registry.unwrap().plan, "pro");
        assert_eq!(
            state.parked.iter().map(|p| (p.model.as_str(), p.position)).collect::<Vec<_>>(),
            [("tenant_registry", 5), ("flag_snapshots", 5)]
        );
        assert_eq!(state.users[0].role, "admin", "other models go on");
    }
}
