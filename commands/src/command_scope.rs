//! The scope of one running command (task-local, ADR 0016): the audit record that
//! commits in the same transaction as each of the command's appends, and the highest
//! position those appends got, so that neither costs a round trip of its own.
//!
//! The gateway opens the scope around a command ([`audited`]); the event store reads it
//! when it appends ([`record_for`], [`note_commit`]). A command that appends to several
//! aggregates (provisioning claims the domain, then provisions the tenant, then invites
//! the owner) commits one record with each append, each listing what that append changed:
//! no change is ever committed without its record.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use cqrs_es::persist::SerializedEvent;
use serde_json::Value;

use keel_domain::audit::AuditInput;
use keel_domain::envelope::keys;

/// How many of an append's events its audit record lists (a bulk ingestion lists its first ones).
const CHANGES_LISTED: usize = 20;

tokio::task_local! {
    static SCOPE: Arc<CommandScope>;
}

/// What a command's appends committed, known once it ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Committed {
    /// How many appends committed the command's audit record with their events.
    pub audited_appends: usize,
    /// The highest log position the command's appends got (0 if it appended nothing).
    pub position: i64,
}

#[derive(Debug)]
struct CommandScope {
    record: AuditInput,
    committed: Mutex<Committed>,
}

/// Runs `command` in a scope whose every append commits `record` (a success, completed
/// with what the append changed) in the append's own transaction.
pub async fn audited<F: Future>(record: AuditInput, command: F) -> (F::Output, Committed) {
    let scope = Arc::new(CommandScope { record, committed: Mutex::default() });
    let output = SCOPE.scope(scope.clone(), command).await;
    let committed = *scope.committed.lock().unwrap_or_else(PoisonError::into_inner);
    (output, committed)
}

/// The audit record to commit with `events`, when a command scope is running: its
/// record, listing what `events` change, and filed under the events' tenant when the
/// record names none (provisioning is recorded in the new tenant's chain).
pub(crate) fn record_for(events: &[SerializedEvent]) -> Option<AuditInput> {
    SCOPE
        .try_with(|scope| {
            let mut record = scope.record.clone();
            if record.tenant_id.is_none()
                && let Some(tenant) = events.iter().find_map(|e| e.metadata.get(keys::TENANT_ID)?.as_str())
            {
                record.resource = format!("tenant/{tenant}");
                record.tenant_id = Some(tenant.to_string());
            }
            let changes = events.iter().take(CHANGES_LISTED).map(change).collect();
            record.metadata.insert("changes".into(), Value::Array(changes));
            record
        })
        .ok()
}

/// Notes a committed append of the running command (if any): its highest position and
/// whether its audit record committed with it.
pub(crate) fn note_commit(position: i64, audited: bool) {
    let _ = SCOPE.try_with(|scope| {
        let mut committed = scope.committed.lock().unwrap_or_else(PoisonError::into_inner);
        committed.position = committed.position.max(position);
        committed.audited_appends += usize::from(audited);
    });
}

/// The highest position the running command's appends got so far, if it appended.
pub fn position() -> Option<i64> {
    SCOPE
        .try_with(|scope| scope.committed.lock().unwrap_or_else(PoisonError::into_inner).position)
        .ok()
        .filter(|position| *position > 0)
}

/// One event as an audit record lists it: `{event_type, aggregate, payload}`, the
/// payload carrying previous values where they matter (e.g. `from`/`to`).
fn change(event: &SerializedEvent) -> Value {
    let mut payload = event.payload.clone();
    if let Some(map) = payload.as_object_mut() {
        map.remove("type");
    }
    serde_json::json!({
        "event_type": event.event_type,
        "aggregate": format!("{}/{}", event.aggregate_type, event.aggregate_id),
        "payload": payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> AuditInput {
        AuditInput {
            timestamp: chrono::Utc::now(),
            tenant_id: None,
            actor_type: "operator".into(),
            actor_id: "op".into(),
            action: "tenant.provision".into(),
            resource: "platform".into(),
            outcome: keel_domain::audit::Outcome::Success,
            reason: None,
            source: "keel".into(),
            source_event_id: None,
            metadata: serde_json::Map::new(),
        }
    }

    fn event(tenant: Option<&str>) -> SerializedEvent {
        SerializedEvent {
            aggregate_id: "t1".into(),
            sequence: 1,
            aggregate_type: "tenant".into(),
            event_type: "tenant.provisioned".into(),
            event_version: "1".into(),
            payload: serde_json::json!({ "type": "tenant.provisioned", "plan": "pro" }),
            metadata: serde_json::json!({ "tenant_id": tenant }),
        }
    }

    #[tokio::test]
    async fn outside_a_scope_nothing_is_recorded() {
        assert!(record_for(&[event(Some("t1"))]).is_none());
        note_commit(5, true);
        assert_eq!(position(), None);
    }

    #[tokio::test]
    async fn an_append_in_a_scope_gets_the_record_with_its_changes_and_tenant() {
        let ((record, position_inside), committed) = audited(input(), async {
            let record = record_for(&[event(Some("t1"))]).expect("a record");
            note_commit(7, true);
            note_commit(3, false);
            (record, position())
        })
        .await;
        assert_eq!(record.tenant_id.as_deref(), Some("t1"));
        assert_eq!(record.resource, "tenant/t1");
        assert_eq!(record.metadata["changes"][0]["aggregate"], "tenant/t1");
        assert_eq!(record.metadata["changes"][0]["payload"], serde_json::json!({ "plan": "pro" }));
        assert_eq!(position_inside, Some(7));
        assert_eq!(committed, Committed { audited_appends: 1, position: 7 });
    }

    #[tokio::test]
    async fn a_record_naming_its_tenant_keeps_it() {
        let mut named = input();
        named.tenant_id = Some("t2".into());
        let (record, _) = audited(named, async { record_for(&[event(Some("t1"))]) }).await;
        assert_eq!(record.expect("a record").tenant_id.as_deref(), Some("t2"));
    }
}
