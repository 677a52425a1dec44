//! Anonymous refusals in the audit trail, bounded (ADR 0018). A caller without a valid
//! credential can repeat a refused request at will; each used to append a durable
//! record, on the chain of whichever tenant it named, under that chain's head lock.
//! Here, per window (a minute): the first refusal of each (client network, action,
//! reason) is recorded at once, the identical ones after it are only counted and
//! recorded as one summary record when the window closes, and past a number of distinct
//! keys per window refusals are only counted (one summary for all of them). Every
//! record goes to the platform chain: a tenant the caller named is kept as unverified
//! context (`claimed_tenant_id`), never as the record's tenant.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use keel_commands::audit::AuditLog;
use keel_domain::audit::AuditInput;
use serde_json::Value;

/// The metadata key of a tenant an unauthenticated caller named (unverified).
pub const CLAIMED_TENANT_KEY: &str = "claimed_tenant_id";

/// Default window: refusals are coalesced per minute.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Default bound on distinct (network, action, reason) keys recorded per window.
pub const DEFAULT_MAX_KEYS: usize = 500;

/// What identifies "the same refusal again": the client's network (hashed), the action
/// and the reason.
type Key = (String, String, String);

/// The refusals of the current window.
#[derive(Debug)]
struct Window {
    started: Instant,
    /// The first record of each key and how many identical refusals followed it.
    seen: HashMap<Key, (AuditInput, u64)>,
    /// Refusals not recorded at all because the window had `max_keys` keys already.
    dropped: u64,
}

impl Window {
    fn new() -> Self {
        Self { started: Instant::now(), seen: HashMap::new(), dropped: 0 }
    }
}

/// Records anonymous refusals, coalesced and bounded: at most `2 × max_keys + 1`
/// records per window and gateway, all on the platform chain.
#[derive(Debug)]
pub struct AnonymousRefusals {
    audit: AuditLog,
    window: Duration,
    max_keys: usize,
    current: Mutex<Window>,
}

/// A record for the platform chain: a tenant it names becomes unverified context.
pub fn unverified(mut input: AuditInput) -> AuditInput {
    if let Some(tenant) = input.tenant_id.take() {
        input.metadata.insert(CLAIMED_TENANT_KEY.into(), tenant.into());
    }
    input.resource = "platform".into();
    input
}

impl AnonymousRefusals {
    /// Refusals written to `audit`, coalesced per `window`, at most `max_keys` keys each.
    pub fn new(audit: AuditLog, window: Duration, max_keys: usize) -> Self {
        Self { audit, window, max_keys, current: Mutex::new(Window::new()) }
    }

    /// Records (or counts) the refusal of an unauthenticated request. Closes the window
    /// first if it is over.
    pub async fn record(&self, input: AuditInput) {
        let input = unverified(input);
        let address = input.metadata.get("client_address").and_then(Value::as_str).and_then(|a| a.parse().ok());
        let key = (
            keel_commands::throttle::address_key(address),
            input.action.clone(),
            input.reason.clone().unwrap_or_default(),
        );
        let (closed, first) = {
            let Ok(mut current) = self.current.lock() else { return };
            let closed =
                (current.started.elapsed() >= self.window).then(|| std::mem::replace(&mut *current, Window::new()));
            let first = if let Some((_, repeated)) = current.seen.get_mut(&key) {
                *repeated += 1;
                None
            } else if current.seen.len() >= self.max_keys {
                current.dropped += 1;
                None
            } else {
                current.seen.insert(key, (input.clone(), 0));
                Some(input)
            };
            (closed, first)
        };
        let mut records = closed.map(|w| self.summaries(w)).unwrap_or_default();
        records.extend(first);
        self.append(records).await;
    }

    /// Closes the current window: writes its summaries.
    pub async fn flush(&self) {
        let closed = match self.current.lock() {
            Ok(mut current) => std::mem::replace(&mut *current, Window::new()),
            Err(_) => return,
        };
        let records = self.summaries(closed);
        self.append(records).await;
    }

    /// Closes the window every period until `stop`, then once more.
    pub async fn run(self: std::sync::Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.window);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => self.flush().await,
                _ = stop.changed() => break,
            }
        }
        self.flush().await;
    }

    /// The summary records of a closed window.
    fn summaries(&self, window: Window) -> Vec<AuditInput> {
        let seconds = window.started.elapsed().as_secs();
        let mut records: Vec<AuditInput> = window
            .seen
            .into_values()
            .filter(|(_, repeated)| *repeated > 0)
            .map(|(mut first, repeated)| {
                first.timestamp = chrono::Utc::now();
                first.metadata.insert("repeated".into(), repeated.into());
                first.metadata.insert("window_seconds".into(), seconds.into());
                first
            })
            .collect();
        if window.dropped > 0 {
            let metadata = serde_json::Map::from_iter([
                ("dropped".to_string(), Value::from(window.dropped)),
                ("window_seconds".to_string(), seconds.into()),
            ]);
            records.push(AuditInput {
                timestamp: chrono::Utc::now(),
                tenant_id: None,
                actor_type: "anonymous".into(),
                actor_id: String::new(),
                action: "audit.coalesce".into(),
                resource: "platform".into(),
                outcome: keel_domain::audit::Outcome::Failure,
                reason: Some("too_many_refusals".into()),
                source: "keel".into(),
                source_event_id: None,
                metadata,
            });
        }
        records
    }

    async fn append(&self, records: Vec<AuditInput>) {
        if records.is_empty() {
            return;
        }
        if let Err(err) = self.audit.append(records).await {
            tracing::error!(error = %err, "audit records of anonymous refusals not written");
        }
    }
}
