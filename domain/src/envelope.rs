//! The event envelope: what every stored event carries besides its payload, and
//! the JSON document the relay publishes to Kafka (`keel.events`).

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The Kafka key of events that belong to no tenant (platform-level events).
pub const PLATFORM_KEY: &str = "platform";

/// Who caused a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActorType {
    /// A tenant user.
    User,
    /// A platform operator (or the bootstrap operator credential).
    Operator,
    /// A platform auditor.
    Auditor,
    /// A managed application, by API key.
    App,
    /// Keel itself (schedulers, process managers).
    System,
}

impl ActorType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorType::User => "user",
            ActorType::Operator => "operator",
            ActorType::Auditor => "auditor",
            ActorType::App => "app",
            ActorType::System => "system",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::User, Self::Operator, Self::Auditor, Self::App, Self::System].into_iter().find(|a| a.as_str() == s)
    }
}

/// The actor of a change: its type and id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Actor {
    /// What kind of actor.
    #[serde(rename = "type")]
    pub kind: ActorType,
    /// The actor's id (user id, operator id, app id, or a system component name).
    pub id: String,
}

impl Actor {
    /// Keel itself, acting as the named component.
    pub fn system(component: &str) -> Self {
        Self { kind: ActorType::System, id: component.to_string() }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.id)
    }
}

/// The metadata stored with each event (postgres-es keeps it as a string map).
/// `event_id` is filled per event when the events are persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMetadata {
    /// The tenant the event belongs to; `None` for platform-level events.
    pub tenant_id: Option<String>,
    /// Who caused it.
    pub actor: Actor,
    /// Ties together everything done for one external request.
    pub correlation_id: String,
    /// The id of the command (or event) that directly caused this event.
    pub causation_id: String,
    /// The id of the command that produced the event.
    pub command_id: Uuid,
    /// When the command was accepted.
    pub occurred_at: DateTime<Utc>,
    /// The caller's idempotency key (lets a retry recognise its own earlier effect).
    pub idempotency_key: Option<String>,
}

/// Metadata keys as stored by postgres-es.
pub mod keys {
    /// UUIDv7 of the event.
    pub const EVENT_ID: &str = "event_id";
    /// Tenant id, or absent for platform events.
    pub const TENANT_ID: &str = "tenant_id";
    /// Actor type.
    pub const ACTOR_TYPE: &str = "actor_type";
    /// Actor id.
    pub const ACTOR_ID: &str = "actor_id";
    /// Correlation id.
    pub const CORRELATION_ID: &str = "correlation_id";
    /// Causation id.
    pub const CAUSATION_ID: &str = "causation_id";
    /// Command id.
    pub const COMMAND_ID: &str = "command_id";
    /// RFC 3339 time.
    pub const OCCURRED_AT: &str = "occurred_at";
    /// The caller's idempotency key.
    pub const IDEMPOTENCY_KEY: &str = "idempotency_key";
}

impl EventMetadata {
    /// The metadata as the string map cqrs-es stores.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::from([
            (keys::ACTOR_TYPE.to_string(), self.actor.kind.as_str().to_string()),
            (keys::ACTOR_ID.to_string(), self.actor.id.clone()),
            (keys::CORRELATION_ID.to_string(), self.correlation_id.clone()),
            (keys::CAUSATION_ID.to_string(), self.causation_id.clone()),
            (keys::COMMAND_ID.to_string(), self.command_id.to_string()),
            (keys::OCCURRED_AT.to_string(), self.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        ]);
        if let Some(tenant) = &self.tenant_id {
            map.insert(keys::TENANT_ID.to_string(), tenant.clone());
        }
        if let Some(key) = &self.idempotency_key {
            map.insert(keys::IDEMPOTENCY_KEY.to_string(), key.clone());
        }
        map
    }
}

/// One event as published to Kafka: the value of every `keel.events` message.
/// The message key is `tenant_id` (or `platform`); headers repeat `event_id`,
/// `event_type` and `schema_version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventEnvelope {
    /// UUIDv7, unique across all events.
    pub event_id: Uuid,
    /// The tenant the event belongs to; absent for platform-level events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Position in the event store (what commands return; use it with `X-Keel-Min-Position`).
    pub position: i64,
    /// The committing transaction id; the global order is (`txid`, `position`).
    pub txid: i64,
    /// Aggregate type, e.g. `tenant`.
    pub aggregate_type: String,
    /// Aggregate id, e.g. a tenant id.
    pub aggregate_id: String,
    /// Sequence of the event within its aggregate, from 1.
    pub sequence: i64,
    /// Event type, e.g. `tenant.suspended`.
    pub event_type: String,
    /// Schema version of the payload.
    pub schema_version: String,
    /// When the command that produced the event was accepted.
    pub occurred_at: DateTime<Utc>,
    /// Who caused it.
    pub actor: Actor,
    /// Ties together everything done for one external request.
    pub correlation_id: String,
    /// The command or event that directly caused this event.
    pub causation_id: String,
    /// The event's own fields (see the per-aggregate schemas).
    pub payload: serde_json::Value,
}

impl EventEnvelope {
    /// The Kafka message key: the tenant id, or [`PLATFORM_KEY`].
    pub fn key(&self) -> &str {
        self.tenant_id.as_deref().unwrap_or(PLATFORM_KEY)
    }

    /// The global order of the event.
    pub fn order(&self) -> (i64, i64) {
        (self.txid, self.position)
    }
}
