//! Billable usage reported by managed apps (ADR 0013).
//!
//! Usage is not an aggregate with a decision to load: each report is an immutable
//! fact, checked on its own ([`UsageInput::validate`]) and appended as one
//! `usage.recorded` event whose aggregate id is `<app id>:<event id>`. The event
//! store's primary key then makes `(app, event_id)` the idempotency key: a second
//! report with the same id conflicts on the row and is answered as a duplicate.
//!
//! Billing systems consume accepted usage as CloudEvents on `keel.billing.v1`
//! ([`BillingCloudEvent`], the published contract).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::aggregate::events;
use crate::error::{DomainError, ErrorKind};
use crate::ids::{AppId, TenantId};
use crate::tenant::TenantStatus;

#[cfg(test)]
mod tests;

/// The aggregate type of usage events in the event store.
pub const AGGREGATE_TYPE: &str = "usage";
/// Most events in one batch.
pub const MAX_BATCH: usize = 1000;
/// Most bytes of an event's `properties`, as compact JSON.
pub const MAX_PROPERTIES_BYTES: usize = 4096;
/// The largest quantity of one event (2^53 − 1: exact in every JSON parser).
pub const MAX_QUANTITY: i64 = 9_007_199_254_740_991;
/// Billing events are kept at least this many years (tax law, CON-DATA-003).
pub const RETENTION_YEARS: u32 = 5;

/// What an app reports, before it is checked. REST fills it from JSON
/// ([`UsageInput::from_json`]), gRPC from its typed message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UsageInput {
    /// The app's own id for the event (its idempotency key).
    pub event_id: String,
    /// The tenant the usage belongs to.
    pub tenant_id: String,
    /// What was used, e.g. `api.call` or `storage.gb_hours`.
    pub event_type: String,
    /// How much (an integer; missing is an error).
    pub quantity: Option<i64>,
    /// When the usage happened (missing is an error).
    pub timestamp: Option<DateTime<Utc>>,
    /// Free-form details (a JSON object).
    pub properties: Option<Value>,
}

/// The rules on when usage is late or too far in the future.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsagePolicy {
    /// Usage older than this when it arrives is kept but marked late.
    pub late_after: Duration,
    /// Usage more than this ahead of the server's clock is refused.
    pub max_future_skew: Duration,
}

impl Default for UsagePolicy {
    fn default() -> Self {
        Self { late_after: Duration::hours(48), max_future_skew: Duration::minutes(5) }
    }
}

/// A report that passed the checks.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidUsage {
    /// The app's id for the event.
    pub event_id: String,
    /// The tenant.
    pub tenant_id: TenantId,
    /// What was used.
    pub event_type: String,
    /// How much.
    pub quantity: i64,
    /// When.
    pub timestamp: DateTime<Utc>,
    /// Details.
    pub properties: Map<String, Value>,
}

/// Why one reported event was refused. The rest of its batch is unaffected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The event is not a JSON object.
    #[error("each event must be a JSON object")]
    NotAnObject,
    /// `event_id` is missing, empty, longer than 128 characters or has spaces or control characters.
    #[error("event_id must be 1 to 128 printable ASCII characters without spaces")]
    InvalidEventId,
    /// `tenant_id` is not a tenant id.
    #[error("tenant_id is not a tenant id (tnt_…)")]
    InvalidTenantId,
    /// `event_type` is not 1 to 100 of `A-Z a-z 0-9 . _ : -`, starting with a letter or digit.
    #[error("event_type must be 1 to 100 of A-Z a-z 0-9 . _ : - starting with a letter or digit")]
    InvalidEventType,
    /// `quantity` is missing, not an integer, negative or above 2^53 − 1.
    #[error("quantity must be an integer from 0 to 9007199254740991")]
    InvalidQuantity,
    /// `timestamp` is missing or not an RFC 3339 time.
    #[error("timestamp must be an RFC 3339 time")]
    InvalidTimestamp,
    /// `timestamp` is further ahead of Keel's clock than the allowed skew.
    #[error("timestamp is in the future")]
    TimestampInFuture,
    /// `properties` is not a JSON object, or is larger than 4 KiB.
    #[error("properties must be a JSON object of at most 4096 bytes")]
    InvalidProperties,
    /// No tenant has this id.
    #[error("no such tenant")]
    UnknownTenant,
    /// The tenant has been purged.
    #[error("the tenant has been purged")]
    TenantPurged,
    /// The app already reported a different event under this `event_id`.
    #[error("event_id was already used for a different event")]
    EventIdConflict,
}

impl DomainError for Rejection {
    fn kind(&self) -> ErrorKind {
        match self {
            Rejection::UnknownTenant => ErrorKind::NotFound,
            Rejection::TenantPurged => ErrorKind::Gone,
            Rejection::EventIdConflict => ErrorKind::AlreadyExists,
            _ => ErrorKind::InvalidArgument,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Rejection::NotAnObject => "invalid_event",
            Rejection::InvalidEventId => "invalid_event_id",
            Rejection::InvalidTenantId => "invalid_tenant_id",
            Rejection::InvalidEventType => "invalid_event_type",
            Rejection::InvalidQuantity => "invalid_quantity",
            Rejection::InvalidTimestamp => "invalid_timestamp",
            Rejection::TimestampInFuture => "timestamp_in_future",
            Rejection::InvalidProperties => "invalid_properties",
            Rejection::UnknownTenant => "unknown_tenant",
            Rejection::TenantPurged => "tenant_purged",
            Rejection::EventIdConflict => "event_id_conflict",
        }
    }
}

/// Whether `raw` is a usable event id.
fn valid_event_id(raw: &str) -> bool {
    !raw.is_empty() && raw.len() <= 128 && raw.bytes().all(|b| b.is_ascii_graphic())
}

/// Whether `raw` is a usable event type.
pub fn valid_event_type(raw: &str) -> bool {
    raw.len() <= 100
        && raw.starts_with(|c: char| c.is_ascii_alphanumeric())
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

impl UsageInput {
    /// Reads one event of a REST body. Type errors are per field, so one bad event
    /// never fails the batch it came in.
    pub fn from_json(raw: &Value) -> Result<UsageInput, Rejection> {
        let map = raw.as_object().ok_or(Rejection::NotAnObject)?;
        let text = |key: &str| map.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
        let quantity = match map.get("quantity") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_i64().ok_or(Rejection::InvalidQuantity)?),
        };
        let timestamp = match map.get("timestamp") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_str()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.with_timezone(&Utc))
                    .ok_or(Rejection::InvalidTimestamp)?,
            ),
        };
        Ok(UsageInput {
            event_id: text("event_id"),
            tenant_id: text("tenant_id"),
            event_type: text("event_type"),
            quantity,
            timestamp,
            properties: map.get("properties").filter(|v| !v.is_null()).cloned(),
        })
    }

    /// The event id as given, if it could be one (to name the event in answers).
    pub fn named_id(&self) -> Option<&str> {
        valid_event_id(&self.event_id).then_some(self.event_id.as_str())
    }

    /// Checks everything that needs no lookup; `now` is the server's clock.
    pub fn validate(self, now: DateTime<Utc>, policy: &UsagePolicy) -> Result<ValidUsage, Rejection> {
        if !valid_event_id(&self.event_id) {
            return Err(Rejection::InvalidEventId);
        }
        let tenant_id: TenantId = self.tenant_id.trim().parse().map_err(|_| Rejection::InvalidTenantId)?;
        if !valid_event_type(&self.event_type) {
            return Err(Rejection::InvalidEventType);
        }
        let quantity = self.quantity.filter(|q| (0..=MAX_QUANTITY).contains(q)).ok_or(Rejection::InvalidQuantity)?;
        let timestamp = self.timestamp.ok_or(Rejection::InvalidTimestamp)?;
        if timestamp > now + policy.max_future_skew {
            return Err(Rejection::TimestampInFuture);
        }
        let properties = match self.properties {
            None => Map::new(),
            Some(Value::Object(map)) => map,
            Some(_) => return Err(Rejection::InvalidProperties),
        };
        if !properties.is_empty() && Value::Object(properties.clone()).to_string().len() > MAX_PROPERTIES_BYTES {
            return Err(Rejection::InvalidProperties);
        }
        Ok(ValidUsage {
            event_id: self.event_id,
            tenant_id,
            event_type: self.event_type,
            quantity,
            timestamp,
            properties,
        })
    }
}

impl ValidUsage {
    /// The event to record for `app`, given the tenant's status when it arrived
    /// (`None`: no such tenant) and whether its type is on the rollup allowlist.
    pub fn record(
        self,
        app_id: &AppId,
        tenant: Option<TenantStatus>,
        rollup: bool,
        now: DateTime<Utc>,
        policy: &UsagePolicy,
    ) -> Result<UsageEvent, Rejection> {
        let tenant_status = match tenant {
            None | Some(TenantStatus::Unprovisioned) => return Err(Rejection::UnknownTenant),
            Some(TenantStatus::Purged) => return Err(Rejection::TenantPurged),
            Some(status) => status,
        };
        Ok(UsageEvent::Recorded(UsageRecorded {
            late: self.timestamp < now - policy.late_after,
            tenant_id: self.tenant_id,
            app_id: app_id.clone(),
            event_id: self.event_id,
            event_type: self.event_type,
            quantity: self.quantity,
            timestamp: self.timestamp,
            properties: self.properties,
            received_at: now,
            tenant_status,
            rollup,
        }))
    }

    /// Whether `recorded` reports the same usage (a true duplicate, not a reused id).
    pub fn same_as(&self, recorded: &UsageRecorded) -> bool {
        self.tenant_id == recorded.tenant_id
            && self.event_type == recorded.event_type
            && self.quantity == recorded.quantity
            && self.timestamp == recorded.timestamp
            && self.properties == recorded.properties
    }
}

/// The aggregate id of `app`'s event `event_id`: the idempotency key in the event store.
pub fn aggregate_id(app_id: &AppId, event_id: &str) -> String {
    format!("{app_id}:{event_id}")
}

events! {
    /// A usage event as stored in the log.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
    pub enum UsageEvent {
        /// An app reported usage and Keel accepted it.
        RECORDED = "usage.recorded" => Recorded(UsageRecorded),
    }
}

impl UsageEvent {
    /// The tenant it belongs to.
    pub fn tenant_id(&self) -> &TenantId {
        match self {
            UsageEvent::Recorded(r) => &r.tenant_id,
        }
    }
}

/// Accepted usage: what the app reported plus what Keel knew when it arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UsageRecorded {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The app that reported it.
    pub app_id: AppId,
    /// The app's id for the event; unique per app.
    pub event_id: String,
    /// What was used.
    pub event_type: String,
    /// How much.
    pub quantity: i64,
    /// When the usage happened (the app's clock).
    pub timestamp: DateTime<Utc>,
    /// The app's details.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub properties: Map<String, Value>,
    /// When Keel accepted it.
    pub received_at: DateTime<Utc>,
    /// It arrived later than the late window after it happened.
    pub late: bool,
    /// The tenant's status when it arrived (`active`, `suspended` or `pending_deletion`).
    pub tenant_status: TenantStatus,
    /// Its type was on the rollup allowlist when it arrived (internal operations only).
    #[serde(default)]
    pub rollup: bool,
}

/// The CloudEvents `specversion` Keel publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum SpecVersion {
    /// CloudEvents 1.0.
    #[serde(rename = "1.0")]
    V1,
}

/// The CloudEvents `type` of billing events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum BillingEventType {
    /// Usage a managed app reported and Keel accepted.
    #[serde(rename = "io.keel.billing.usage.v1")]
    Usage,
}

/// The media type of `data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum DataContentType {
    /// JSON.
    #[serde(rename = "application/json")]
    Json,
}

/// One message on `keel.billing.v1` (key: the tenant id): a CloudEvents 1.0 event in
/// structured JSON mode. `source` + `id` identify the usage for good: a consumer that
/// sees the pair again (Keel publishes at least once) drops the repeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(title = "keel.billing.v1")]
#[serde(deny_unknown_fields)]
pub struct BillingCloudEvent {
    /// Always `1.0`.
    pub specversion: SpecVersion,
    /// The app's event id (unique within `source`).
    pub id: String,
    /// The reporting app: `/keel/apps/<app id>`.
    pub source: String,
    /// Always `io.keel.billing.usage.v1`.
    #[serde(rename = "type")]
    pub event_type: BillingEventType,
    /// The tenant id.
    pub subject: TenantId,
    /// When the usage happened.
    pub time: DateTime<Utc>,
    /// Always `application/json`.
    pub datacontenttype: DataContentType,
    /// The usage.
    pub data: BillingData,
}

/// The usage a billing CloudEvent carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BillingData {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The reporting app.
    pub app_id: AppId,
    /// The app's event id.
    pub event_id: String,
    /// What was used.
    pub event_type: String,
    /// How much.
    pub quantity: i64,
    /// When the usage happened.
    pub timestamp: DateTime<Utc>,
    /// The app's details.
    pub properties: Map<String, Value>,
    /// When Keel accepted it.
    pub received_at: DateTime<Utc>,
    /// It arrived after the late window.
    pub late: bool,
    /// The tenant's status when it arrived.
    pub tenant_status: TenantStatus,
    /// Keel's id of the stored event.
    pub keel_event_id: Uuid,
    /// Keel's log position of the stored event.
    pub position: i64,
}

impl BillingCloudEvent {
    /// The published form of `recorded`, stored as event `keel_event_id` at `position`.
    pub fn new(recorded: &UsageRecorded, keel_event_id: Uuid, position: i64) -> Self {
        Self {
            specversion: SpecVersion::V1,
            id: recorded.event_id.clone(),
            source: format!("/keel/apps/{}", recorded.app_id),
            event_type: BillingEventType::Usage,
            subject: recorded.tenant_id.clone(),
            time: recorded.timestamp,
            datacontenttype: DataContentType::Json,
            data: BillingData {
                tenant_id: recorded.tenant_id.clone(),
                app_id: recorded.app_id.clone(),
                event_id: recorded.event_id.clone(),
                event_type: recorded.event_type.clone(),
                quantity: recorded.quantity,
                timestamp: recorded.timestamp,
                properties: recorded.properties.clone(),
                received_at: recorded.received_at,
                late: recorded.late,
                tenant_status: recorded.tenant_status,
                keel_event_id,
                position,
            },
        }
    }
}
