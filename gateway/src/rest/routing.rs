//! REST `/v1/control-plane/routing` and `/v1/control-plane/health`: routing snapshots
//! for edge routers (with `ETag`), the fleet's health and drift per tenant (the routing
//! read model), and the health-report command for fleet agents holding a `fleet:write`
//! API key (a command mirror of `RoutingService.ReportHealth`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

use keel_commands::bus::CommandContext;
use keel_commands::idempotency::MAX_KEY_LEN;
use keel_commands::routing::ReportRequest;
use keel_domain::access::{Action, Target};
use keel_domain::ids::TenantId;
use keel_projections::routing::{self, FleetFilter, SnapshotRow, TenantHealth};

use super::extract::{Caller, CorrelationId, Path, Query, authorize_request, wait_for_position};
use super::openapi::{ApiDoc, body, errors, min_position, ok, problem};
use super::pagination::{encode_cursor, page_after, page_limit};
use super::problem::Problem;
use super::routes::Routes;
use super::state::AppState;
use crate::auth::agent_of;

/// The header carrying a REST command's idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The routing and fleet-health routes.
pub fn routes() -> Routes {
    Routes::new()
        .route("/v1/control-plane/routing/snapshots/latest", get(latest))
        .route("/v1/control-plane/routing/snapshots/{version}", get(by_version))
        .route("/v1/control-plane/health/tenants", get(fleet))
        .route("/v1/control-plane/health/reports", post(report))
}

/// The routing and fleet-health part of the OpenAPI document.
pub fn openapi(doc: &mut ApiDoc) {
    doc.schema::<SnapshotRow>()
        .schema::<FleetHealthPage>()
        .schema::<HealthReportBody>()
        .schema::<HealthReportAccepted>();
    doc.operation("/v1/control-plane/routing/snapshots/latest", "get", json!({
        "summary": "The newest routing snapshot (operators, auditors, fleet:write keys); ETag is its quoted checksum",
        "parameters": [
            { "name": "If-None-Match", "in": "header", "required": false, "schema": { "type": "string" } },
            min_position()
        ],
        "responses": errors([
            ("200", ok("SnapshotRow")),
            ("304", json!({ "description": "Not modified (If-None-Match names the current checksum)" })),
            ("404", problem("No snapshot published yet")),
        ])
    }));
    doc.operation(
        "/v1/control-plane/routing/snapshots/{version}",
        "get",
        json!({
            "summary": "One routing snapshot version",
            "parameters": [
                { "name": "version", "in": "path", "required": true, "schema": { "type": "integer", "minimum": 1 } },
                { "name": "If-None-Match", "in": "header", "required": false, "schema": { "type": "string" } },
                min_position()
            ],
            "responses": errors([
                ("200", ok("SnapshotRow")),
                ("304", json!({ "description": "Not modified" })),
                ("404", problem("No such version")),
            ])
        }),
    );
    doc.operation("/v1/control-plane/health/tenants", "get", json!({
        "summary": "Deployment state, last fleet report and drift per tenant (operators and auditors)",
        "parameters": [
            { "name": "cursor", "in": "query", "schema": { "type": "string" }, "description": "next_cursor of the previous page" },
            { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 200, "default": 50 } },
            min_position()
        ],
        "responses": errors([("200", ok("FleetHealthPage"))])
    }));
    doc.operation("/v1/control-plane/health/reports", "post", json!({
        "summary": "A fleet agent's health report (API keys with fleet:write; operators give agent_id)",
        "parameters": [
            { "name": "Idempotency-Key", "in": "header", "required": false, "schema": { "type": "string", "maxLength": 255 } }
        ],
        "requestBody": body("HealthReportBody"),
        "responses": errors([
            ("200", ok("HealthReportAccepted")),
            ("404", problem("No such tenant")),
        ])
    }));
}

/// Query parameters of the fleet view.
#[derive(Debug, Deserialize)]
pub struct FleetParams {
    cursor: Option<String>,
    limit: Option<i64>,
}

/// A page of the fleet view.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct FleetHealthPage {
    /// Tenants with a deployment target or a health report, by id.
    pub items: Vec<TenantHealth>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A health report from a fleet agent.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct HealthReportBody {
    /// The tenant whose deployment was observed.
    pub tenant_id: String,
    /// The reporting agent; ignored for API keys (the agent is the key's app), required for operators.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// The routing target the agent sees in use; empty if none.
    #[serde(default)]
    pub observed_target: String,
    /// `pending`, `deploying`, `active`, `failed` or `retired`.
    pub observed_state: String,
    /// Whether the deployment answers its health checks.
    pub healthy: bool,
}

/// The outcome of a health report.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct HealthReportAccepted {
    /// Position of the report's event (for `X-Keel-Min-Position`).
    pub position: i64,
}

/// The entity tag of a snapshot: its quoted checksum.
pub fn etag(checksum: &str) -> String {
    format!("\"{checksum}\"")
}

/// Whether `If-None-Match` names `etag` (or `*`); weak tags compare by their value.
pub fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// A snapshot with its `ETag`, or `304 Not Modified` if the caller holds it already.
fn snapshot_response(headers: &HeaderMap, row: SnapshotRow) -> Response {
    let tag = etag(&row.checksum);
    let mut response =
        if not_modified(headers, &tag) { StatusCode::NOT_MODIFIED.into_response() } else { Json(row).into_response() };
    if let Ok(value) = HeaderValue::from_str(&tag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    // Routers revalidate every time (cheaply, with If-None-Match).
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn latest(
    State(state): State<AppState>,
    Caller(principal): Caller,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    authorize_request(&state, &principal, Action::ReadRouting, Target::default())?;
    wait_for_position(&state, &headers, routing::NAME).await?;
    let row = routing::latest(&state.pool).await?.ok_or_else(Problem::not_found)?;
    Ok(snapshot_response(&headers, row))
}

async fn by_version(
    State(state): State<AppState>,
    Caller(principal): Caller,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Response, Problem> {
    let version: i64 = raw.parse().ok().filter(|v| *v >= 1).ok_or_else(Problem::not_found)?;
    authorize_request(&state, &principal, Action::ReadRouting, Target::default())?;
    wait_for_position(&state, &headers, routing::NAME).await?;
    let row = routing::by_version(&state.pool, version).await?.ok_or_else(Problem::not_found)?;
    Ok(snapshot_response(&headers, row))
}

async fn fleet(
    State(state): State<AppState>,
    Caller(principal): Caller,
    headers: HeaderMap,
    Query(params): Query<FleetParams>,
) -> Result<Json<FleetHealthPage>, Problem> {
    authorize_request(&state, &principal, Action::ReadFleetHealth, Target::default())?;
    let after = page_after(params.cursor.as_deref())?;
    let limit = page_limit(params.limit)?;
    wait_for_position(&state, &headers, routing::NAME).await?;
    let filter = FleetFilter { after, limit };
    let mut items = routing::fleet_health(&state.pool, &filter, chrono::Utc::now()).await?;
    let next_cursor = (items.len() as i64 > limit).then(|| {
        items.truncate(limit as usize);
        encode_cursor(&items[items.len() - 1].deployment.tenant_id)
    });
    Ok(Json(FleetHealthPage { items, next_cursor }))
}

async fn report(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Extension(CorrelationId(correlation)): Extension<CorrelationId>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<HealthReportAccepted>, Problem> {
    let req: HealthReportBody = serde_json::from_slice(&body)
        .map_err(|_| Problem::bad_request("invalid_body", "the body is not the expected JSON"))?;
    let tenant: TenantId = req
        .tenant_id
        .trim()
        .parse()
        .map_err(|_| Problem::bad_request("invalid_tenant_id", "tenant_id is not a tenant id (tnt_…)"))?;
    authorize_request(&state, &principal, Action::ReportHealth, Target { tenant: Some(&tenant), plan: None })?;
    // A retry with the same Idempotency-Key records nothing twice; without one, every request is a new report.
    let key = match headers.get(IDEMPOTENCY_HEADER) {
        Some(value) => value
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN)
            .ok_or_else(|| {
                Problem::bad_request(
                    "invalid_idempotency_key",
                    format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible characters"),
                )
            })?
            .to_string(),
        None => uuid::Uuid::now_v7().to_string(),
    };
    let ctx = CommandContext::new(principal.actor(), correlation, key);
    let report = ReportRequest {
        agent_id: agent_of(&principal, req.agent_id.as_deref().unwrap_or_default()),
        observed_target: req.observed_target,
        observed_state: req.observed_state,
        healthy: req.healthy,
    };
    let done = state.routing.report_health(&ctx, &tenant, &report).await?;
    Ok(Json(HealthReportAccepted { position: done.position }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn if_none_match(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, value.parse().unwrap());
        headers
    }

    #[test]
    fn if_none_match_names_the_checksum() {
        let tag = etag("abc");
        assert_eq!(tag, "\"abc\"");
        assert!(not_modified(&if_none_match("\"abc\""), &tag));
        assert!(not_modified(&if_none_match("\"x\", W/\"abc\""), &tag));
        assert!(not_modified(&if_none_match("*"), &tag));
        assert!(!not_modified(&if_none_match("\"abd\""), &tag));
        assert!(!not_modified(&HeaderMap::new(), &tag));
    }
}
