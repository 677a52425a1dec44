//! REST `GET /v1/control-plane/health/system` (FR-SYS-005), for operators and auditors:
//! each component's status — Postgres, the broker, the relay, each read model's
//! projector, mail — as readiness sees it, with the relay's and projectors' lag and
//! dead letters, and each API's requests, error rate and p50/p99 latency over the last
//! five minutes, from Keel's own counters (no monitoring stack needed).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::json;

use keel_domain::access::{Action, Target};

use super::extract::{Caller, authorize_request};
use super::openapi::{ApiDoc, errors, ok};
use super::problem::Problem;
use super::routes::Routes;
use super::state::AppState;
use crate::metrics::window::{ApiStats, WINDOW_MINUTES};

/// The system health route.
pub fn routes() -> Routes {
    Routes::new().route("/v1/control-plane/health/system", axum::routing::get(system))
}

/// The system health part of the OpenAPI document.
pub fn openapi(doc: &mut ApiDoc) {
    doc.schema::<SystemHealth>();
    doc.operation(
        "/v1/control-plane/health/system",
        "get",
        json!({
            "summary": "Each component's status, and each API's error rate and p50/p99 latency over the last five minutes (operators and auditors)",
            "responses": errors([("200", ok("SystemHealth"))])
        }),
    );
}

/// Up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Working.
    Up,
    /// Not working (or not running in this process).
    Down,
}

impl From<bool> for Status {
    fn from(up: bool) -> Self {
        if up { Status::Up } else { Status::Down }
    }
}

/// A dependency's status.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Component {
    /// Up or down.
    pub status: Status,
}

/// The relay's status and lag.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RelayHealth {
    /// Whether this process's relay task runs (as leader or standby).
    pub status: Status,
    /// Committed events not yet published (capped at 100000; null if unreadable).
    pub lag_events: Option<i64>,
    /// Age in seconds of the oldest unpublished event (0 when none waits; null if unreadable).
    pub lag_seconds: Option<f64>,
}

/// A read model's projector: status, lag and dead letters.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ProjectorHealth {
    /// Whether this process runs the projector.
    pub status: Status,
    /// Published messages not applied yet (null if unreadable).
    pub lag_events: Option<i64>,
    /// Parked events (null if unreadable).
    pub parked: Option<i64>,
}

/// Every component.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Components {
    /// Postgres answers.
    pub postgres: Component,
    /// The broker answers.
    pub broker: Component,
    /// The relay to the broker.
    pub relay: RelayHealth,
    /// Each read model's projector, by read model.
    pub projectors: BTreeMap<String, ProjectorHealth>,
    /// The SMTP server answers (or the mailbox directory exists).
    pub mail: Component,
}

/// The answer.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SystemHealth {
    /// `up` when every component is up.
    pub status: Status,
    /// When this was checked.
    pub checked_at: DateTime<Utc>,
    /// Each component.
    pub components: Components,
    /// The span the API statistics cover, in seconds.
    pub window_seconds: u64,
    /// Each API called in the window (this process's counters), by name.
    pub apis: Vec<ApiStats>,
}

async fn system(State(state): State<AppState>, Caller(principal): Caller) -> Result<Json<SystemHealth>, Problem> {
    authorize_request(&state, &principal, Action::ReadSystemHealth, Target::default())?;
    let probes = &state.metrics.probes;
    let (readiness, lag, mail) = tokio::join!(state.ready.check(), probes.relay_lag(), probes.mail_up());
    let mut projectors = BTreeMap::new();
    for (name, projector) in &readiness.projectors {
        let progress = match &lag {
            Some(lag) => probes.projector(name, lag).await,
            None => None,
        };
        projectors.insert(
            name.to_string(),
            ProjectorHealth {
                status: (projector.running && projector.stalled_seconds.is_none()).into(),
                lag_events: progress.map(|p| p.lag_events),
                parked: progress.map(|p| p.parked),
            },
        );
    }
    let relay_up = readiness.relay.running && readiness.relay.stalled_seconds.is_none();
    let components = Components {
        postgres: Component { status: readiness.postgres.into() },
        broker: Component { status: readiness.broker.into() },
        relay: RelayHealth {
            status: relay_up.into(),
            lag_events: lag.as_ref().map(|l| l.events),
            lag_seconds: lag.as_ref().map(|l| l.seconds),
        },
        projectors,
        mail: Component { status: mail.into() },
    };
    let all_up = readiness.postgres
        && readiness.broker
        && relay_up
        && mail
        && components.projectors.values().all(|p| p.status == Status::Up);
    Ok(Json(SystemHealth {
        status: all_up.into(),
        checked_at: Utc::now(),
        components,
        window_seconds: WINDOW_MINUTES * 60,
        apis: state.metrics.windows.stats(),
    }))
}
