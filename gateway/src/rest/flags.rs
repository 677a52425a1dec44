//! REST reads of a tenant's flag snapshot and entitlements. For operators, auditors and
//! apps both come from the gateway's flag cache; a tenant user's are computed from the
//! read model under its tenant's row-level security (ADR 0006), and so is any read with
//! `X-Keel-Min-Position`, once the model has reached that position (read-your-writes).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::json;

use keel_domain::access::{Action, Target};
use keel_domain::catalog::EntitlementKind;
use keel_domain::ids::TenantId;
use keel_projections::flag_snapshots::{self, FlagSnapshot};
use keel_projections::tenant_registry::Scope;

use super::extract::{Caller, MIN_POSITION_HEADER, Path, authorize_request, scope, wait_for_position};
use super::flag_cache::Served;
use super::openapi::{ApiDoc, errors, min_position, ok, problem};
use super::problem::Problem;
use super::routes::Routes;
use super::state::AppState;

/// The flag and entitlement routes.
pub fn routes() -> Routes {
    Routes::new()
        .route("/v1/tenants/{id}/flags", get(flags))
        .route("/v1/control-plane/tenants/{id}/entitlements", get(entitlements))
}

/// The flag and entitlement part of the OpenAPI document.
pub fn openapi(doc: &mut ApiDoc) {
    doc.schema::<FlagSnapshot>().schema::<Entitlements>();
    doc.operation("/v1/tenants/{id}/flags", "get", json!({
        "summary": "A tenant's flag snapshot: effective flags and entitlements, version and checksum (tenant users, operators, auditors, flags:read keys); ETag, If-None-Match gives 304; 422 tenant_suspended / tenant_pending_deletion, 410 tenant_purged",
        "parameters": [
            { "name": "id", "in": "path", "required": true, "schema": { "type": "string" } },
            { "name": "If-None-Match", "in": "header", "required": false, "schema": { "type": "string" } },
            min_position()
        ],
        "responses": errors([
            ("200", ok("FlagSnapshot")),
            ("304", json!({ "description": "Not modified" })),
            ("404", problem("No such tenant (or not visible to the caller)")),
            ("410", problem("tenant_purged")),
            ("422", problem("tenant_suspended or tenant_pending_deletion")),
        ])
    }));
    doc.operation("/v1/control-plane/tenants/{id}/entitlements", "get", json!({
        "summary": "A tenant's entitlements: plan grants and overrides, each with its source, who changed it and when",
        "parameters": [
            { "name": "id", "in": "path", "required": true, "schema": { "type": "string" } },
            min_position()
        ],
        "responses": errors([
            ("200", ok("Entitlements")),
            ("404", problem("No such tenant (or not visible to the caller)")),
            ("410", problem("tenant_purged")),
        ])
    }));
}

/// One entitlement as listed.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct EntitlementItem {
    /// The catalog key, e.g. `connectors.aws_discovery` or `seats`.
    pub key: String,
    /// `capability` or `quota`.
    pub kind: EntitlementKind,
    /// `true`/`false`, or a limit (`null` = unlimited).
    pub value: serde_json::Value,
    /// `plan` or `override`.
    pub source: String,
    /// Who made it so (`kind:id`).
    pub changed_by: Option<String>,
    /// When.
    pub changed_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A tenant's entitlements.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Entitlements {
    /// The tenant.
    pub tenant_id: String,
    /// Its plan.
    pub plan: Option<String>,
    /// The snapshot version (event position) they reflect.
    pub version: i64,
    /// The entitlements, by key.
    pub entitlements: Vec<EntitlementItem>,
}

/// The snapshot to answer with: the cache's, or the read model's at the asked position.
async fn snapshot_for(
    state: &AppState,
    headers: &HeaderMap,
    raw: &str,
    action: Action,
    principal: &keel_domain::access::Principal,
) -> Result<Arc<Served>, Problem> {
    let id: TenantId = raw.parse().map_err(|_| Problem::not_found())?;
    authorize_request(state, principal, action, Target { tenant: Some(&id), plan: None })?;
    let scope = scope(principal);
    // A tenant user's read runs under its tenant's row-level security, like every other
    // read; the platform-wide cache serves the platform's principals and apps.
    if matches!(scope, Scope::Platform) && !headers.contains_key(MIN_POSITION_HEADER) {
        return state.flags.get(id.as_str()).ok_or_else(Problem::not_found);
    }
    wait_for_position(state, headers, flag_snapshots::NAME).await?;
    let row = flag_snapshots::tenant_row(&state.pool, &scope, id.as_str()).await?.ok_or_else(Problem::not_found)?;
    let definitions = flag_snapshots::definitions(&state.pool).await?;
    Ok(Arc::new(Served::new(flag_snapshots::snapshot(&row, &definitions))))
}

fn refuse_inactive(snapshot: &FlagSnapshot) -> Result<(), Problem> {
    match snapshot.status.as_str() {
        "active" => Ok(()),
        "purged" => Err(Problem::new(StatusCode::GONE, "tenant_purged", "the tenant was deleted")),
        "suspended" => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "tenant_suspended",
            "the tenant is suspended; its flags are not served",
        )),
        "pending_deletion" => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "tenant_pending_deletion",
            "the tenant is being deleted; its flags are not served",
        )),
        _ => Err(Problem::not_found()),
    }
}

async fn flags(
    State(state): State<AppState>,
    Caller(principal): Caller,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Response, Problem> {
    let served = snapshot_for(&state, &headers, &raw, Action::ReadFlags, &principal).await?;
    refuse_inactive(&served.snapshot)?;
    let etag = HeaderValue::from_str(&served.etag).unwrap_or_else(|_| HeaderValue::from_static("\"\""));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().trim_start_matches("W/") == served.etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = Response::new(Body::from(served.rest_body.clone()));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    };
    response.headers_mut().insert(header::ETAG, etag);
    Ok(response)
}

async fn entitlements(
    State(state): State<AppState>,
    Caller(principal): Caller,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Json<Entitlements>, Problem> {
    let served = snapshot_for(&state, &headers, &raw, Action::ReadEntitlements, &principal).await?;
    let snapshot = &served.snapshot;
    if snapshot.status == "purged" {
        return Err(Problem::new(StatusCode::GONE, "tenant_purged", "the tenant was deleted"));
    }
    Ok(Json(Entitlements {
        tenant_id: snapshot.tenant_id.clone(),
        plan: snapshot.plan.clone(),
        version: snapshot.version,
        entitlements: entitlement_items(snapshot),
    }))
}

/// A snapshot's entitlements as listed, by key (pure; also used by `keel replay --tenant`).
pub fn entitlement_items(snapshot: &FlagSnapshot) -> Vec<EntitlementItem> {
    snapshot
        .entitlements
        .iter()
        .map(|(key, e)| EntitlementItem {
            key: key.clone(),
            kind: e.kind,
            value: e.value.clone(),
            source: e.source.clone(),
            changed_by: e.changed_by.clone(),
            changed_at: e.changed_at,
        })
        .collect()
}
