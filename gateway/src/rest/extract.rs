//! What REST handlers share: the caller and the correlation id as extractors, the
//! authorization check with its audited refusals, read-your-writes, and the parsing of
//! bodies and parameters. No resource borrows a helper from another.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use keel_commands::relay::{Published, published_through};
use keel_domain::access::Principal;
use keel_projections::progress::has_applied;
use keel_projections::tenant_registry::Scope;

use super::problem::Problem;
use super::state::AppState;

/// The header a caller sets to read its own write.
pub const MIN_POSITION_HEADER: &str = "x-keel-min-position";
/// The correlation id header.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// The request's correlation id, as the middleware chose it (and echoes it).
#[derive(Debug, Clone)]
pub struct CorrelationId(pub String);

/// The authenticated caller of a REST request.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        match state.auth.authenticate(header).await {
            Ok(principal) => Ok(Caller(principal)),
            Err(err) => {
                tracing::info!(error = %err, "unauthenticated request");
                Err(err.into())
            }
        }
    }
}

/// Query parameters, like axum's `Query`, but a malformed query string (a repeated
/// parameter, a number that is not one, a NUL) is a `400 invalid_query` problem document.
#[derive(Debug, Clone)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // No text Keel stores or filters on holds a NUL (Postgres text cannot).
        if parts.uri.query().is_some_and(|q| q.contains("%00")) {
            return Err(Problem::bad_request("invalid_query", "a query parameter holds a NUL character"));
        }
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(params)) => Ok(Query(params)),
            Err(_) => Err(Problem::bad_request(
                "invalid_query",
                "the query string is malformed: a parameter is repeated or not of its type",
            )),
        }
    }
}

/// Path parameters, like axum's `Path`, but a segment that does not decode (not
/// UTF-8 once percent-decoded) is a `400 invalid_path` problem document.
#[derive(Debug, Clone)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(params)) => Ok(Path(params)),
            Err(_) => Err(Problem::bad_request("invalid_path", "a path segment is not valid UTF-8")),
        }
    }
}

/// `authorize` for REST: an app refused for a scope its key lacks gets `403 missing_scope`,
/// and the refusal is recorded (audited).
pub fn authorize_request(
    state: &AppState,
    principal: &Principal,
    action: keel_domain::access::Action,
    target: keel_domain::access::Target<'_>,
) -> Result<(), Problem> {
    keel_domain::access::authorize(principal, action, target).map_err(|denied| {
        audit_denial(state, principal, action, target, denied);
        denied_problem(state, principal, denied)
    })
}

/// Records a refused REST request in the audit trail (in the background: the refusal
/// is answered at once).
fn audit_denial(
    state: &AppState,
    principal: &Principal,
    action: keel_domain::access::Action,
    target: keel_domain::access::Target<'_>,
    denied: keel_domain::access::Denied,
) {
    let actor = principal.actor();
    let tenant_id = target.tenant.map(|t| t.to_string());
    let reason = match denied {
        keel_domain::access::Denied::Hidden => "cross_tenant",
        keel_domain::access::Denied::NotPermitted => "permission_denied",
    };
    let input = keel_domain::audit::AuditInput {
        timestamp: chrono::Utc::now(),
        resource: tenant_id.as_ref().map_or_else(|| "platform".to_string(), |t| format!("tenant/{t}")),
        tenant_id,
        actor_type: actor.kind.as_str().into(),
        actor_id: actor.id,
        action: keel_domain::audit::action_of(&format!("{action:?}")),
        outcome: keel_domain::audit::Outcome::Failure,
        reason: Some(reason.into()),
        source: "keel".into(),
        source_event_id: None,
        metadata: serde_json::Map::from_iter([("api".to_string(), "rest".into())]),
    };
    let auth = state.auth.clone();
    tokio::spawn(async move {
        if let Err(err) = auth.audit().append(vec![input]).await {
            tracing::error!(error = %err, "audit record of a refusal not written");
        }
    });
}

/// The problem for a refused authorization (see [`authorize_request`]).
pub fn denied_problem(state: &AppState, principal: &Principal, denied: keel_domain::access::Denied) -> Problem {
    match denied {
        keel_domain::access::Denied::NotPermitted if matches!(principal, Principal::App { .. }) => {
            state.auth.api_keys().note_missing_scope(principal);
            Problem::new(StatusCode::FORBIDDEN, "missing_scope", "this API key lacks the scope this needs")
        }
        other => Problem::from(other),
    }
}

/// Where a read model stands relative to a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Everything up to the position is applied.
    Passed,
    /// Not yet.
    Pending,
    /// No event has this position.
    UnknownPosition,
}

/// Whether read model `read_model` has passed `position` (events published to `topic`):
/// the relay has published it, and the model has applied every message up to there.
pub async fn has_passed(
    pool: &sqlx::PgPool,
    read_model: &str,
    topic: &str,
    position: i64,
) -> Result<Progress, sqlx::Error> {
    if position <= 0 {
        return Ok(Progress::Passed);
    }
    Ok(match published_through(pool, topic, position).await? {
        Published::UnknownPosition => Progress::UnknownPosition,
        Published::NotYet => Progress::Pending,
        Published::Through(offsets) if has_applied(pool, read_model, topic, &offsets).await? => Progress::Passed,
        Published::Through(_) => Progress::Pending,
    })
}

/// Read-your-writes: if the request carries `X-Keel-Min-Position: N`, waits (bounded)
/// until read model `read_model` has applied everything up to position N. A request
/// that must wait takes one of the waiters' places (none free: 503 at once); it holds
/// no database connection between its checks.
pub async fn wait_for_position(state: &AppState, headers: &HeaderMap, read_model: &str) -> Result<(), Problem> {
    let Some(raw) = headers.get(MIN_POSITION_HEADER) else {
        return Ok(());
    };
    let position: i64 = raw.to_str().ok().and_then(|s| s.trim().parse().ok()).filter(|p| *p >= 0).ok_or_else(|| {
        Problem::bad_request("invalid_min_position", "X-Keel-Min-Position must be a position (a non-negative integer)")
    })?;
    let deadline = tokio::time::Instant::now() + state.settings.min_position_wait();
    let mut pause = Duration::from_millis(2);
    let mut place = None;
    loop {
        match has_passed(&state.pool, read_model, &state.settings.events_topic, position).await? {
            Progress::Passed => return Ok(()),
            Progress::UnknownPosition => {
                return Err(Problem::bad_request("unknown_position", "no event has this position"));
            }
            Progress::Pending if tokio::time::Instant::now() >= deadline => {
                return Err(Problem::unavailable(
                    "position_not_reached",
                    "the read model has not reached this position yet; retry",
                    1,
                ));
            }
            Progress::Pending => {
                if place.is_none() {
                    place = Some(state.position_waiters.try_acquire().map_err(|_| {
                        Problem::unavailable(
                            "too_many_waiters",
                            "too many requests are waiting for a position; retry",
                            1,
                        )
                    })?);
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(25));
            }
        }
    }
}

/// A JSON request body, or `400 invalid_body`.
pub fn json_body(body: &axum::body::Bytes) -> Result<serde_json::Value, Problem> {
    serde_json::from_slice(body).map_err(|_| Problem::bad_request("invalid_body", "the body is not JSON"))
}

/// An optional RFC 3339 query parameter `name` (empty = absent), or `400 invalid_<name>`.
pub fn time_param(raw: Option<&str>, name: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, Problem> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&chrono::Utc)))
            .map_err(|_| Problem::bad_request(&format!("invalid_{name}"), format!("{name} must be an RFC 3339 time"))),
    }
}

/// The rows `principal` may read: every tenant's, or its own tenant's only.
pub fn scope(principal: &Principal) -> Scope {
    match principal {
        // An app reaches a read only through `authorize`, which limits it to its key's scopes.
        Principal::Operator { .. } | Principal::Auditor { .. } | Principal::App { .. } => Scope::Platform,
        Principal::TenantUser { tenant_id, .. } => Scope::Tenant(tenant_id.to_string()),
    }
}
