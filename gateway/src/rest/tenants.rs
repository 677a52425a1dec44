//! REST `/v1/control-plane/tenants`: the tenant registry read model.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::json;

use keel_domain::access::{Action, Target};
use keel_domain::ids::TenantId;
use keel_domain::plan::Plan;
use keel_projections::tenant_registry::{self, ListFilter, TenantRow};

use super::extract::{Caller, Path, Query, authorize_request, scope, wait_for_position};
use super::openapi::{ApiDoc, errors, min_position, ok, problem};
use super::pagination::{encode_cursor, page_after, page_limit};
use super::problem::Problem;
use super::routes::Routes;
use super::state::AppState;

const STATUSES: [&str; 4] = ["active", "suspended", "pending_deletion", "purged"];

/// The tenant routes.
pub fn routes() -> Routes {
    Routes::new()
        .route("/v1/control-plane/tenants", get(list))
        .route("/v1/control-plane/tenants/{tenant_id}", get(get_one))
}

/// The tenant part of the OpenAPI document.
pub fn openapi(doc: &mut ApiDoc) {
    doc.schema::<TenantRow>().schema::<TenantPage>();
    doc.operation("/v1/control-plane/tenants", "get", json!({
        "summary": "List tenants (operators and auditors)",
        "parameters": [
            { "name": "status", "in": "query", "schema": { "type": "string", "enum": ["active", "suspended", "pending_deletion", "purged"] } },
            { "name": "plan", "in": "query", "schema": { "type": "string", "enum": ["free", "pro", "enterprise"] } },
            { "name": "cursor", "in": "query", "schema": { "type": "string" }, "description": "next_cursor of the previous page" },
            { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 200, "default": 50 } },
            min_position()
        ],
        "responses": errors([("200", ok("TenantPage"))])
    }));
    doc.operation("/v1/control-plane/tenants/{tenant_id}", "get", json!({
        "summary": "One tenant",
        "parameters": [
            { "name": "tenant_id", "in": "path", "required": true, "schema": { "type": "string", "pattern": "^tnt_[0-9a-z]{26}$" } },
            min_position()
        ],
        "responses": errors([
            ("200", ok("TenantRow")),
            ("404", problem("No such tenant (or not visible to the caller)")),
            ("410", problem("The tenant was purged")),
        ])
    }));
}

/// Query parameters of the list.
#[derive(Debug, Deserialize)]
pub struct ListParams {
    status: Option<String>,
    plan: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// A page of tenants.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct TenantPage {
    /// The tenants, oldest first.
    pub items: Vec<TenantRow>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    Caller(principal): Caller,
    headers: HeaderMap,
    Query(params): Query<ListParams>,
) -> Result<Json<TenantPage>, Problem> {
    authorize_request(&state, &principal, Action::ListTenants, Target::default())?;
    let status = match params.status.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) if STATUSES.contains(&s) => Some(s.to_string()),
        Some(_) => {
            return Err(Problem::bad_request(
                "invalid_status",
                "status must be one of active, suspended, pending_deletion, purged",
            ));
        }
    };
    let plan = match params.plan.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(p) => {
            Some(p.parse::<Plan>().map_err(|e| Problem::bad_request("invalid_plan", e.to_string()))?.to_string())
        }
    };
    let after = page_after(params.cursor.as_deref())?;
    let limit = page_limit(params.limit)?;
    wait_for_position(&state, &headers, tenant_registry::NAME).await?;
    let filter = ListFilter { status, plan, after, limit };
    let mut items = tenant_registry::list(&state.pool, &scope(&principal), &filter).await?;
    let next_cursor = (items.len() as i64 > limit).then(|| {
        items.truncate(limit as usize);
        encode_cursor(&items[items.len() - 1].tenant_id)
    });
    Ok(Json(TenantPage { items, next_cursor }))
}

async fn get_one(
    State(state): State<AppState>,
    Caller(principal): Caller,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Json<TenantRow>, Problem> {
    let id: TenantId = raw.parse().map_err(|_| Problem::not_found())?;
    authorize_request(&state, &principal, Action::ReadTenant, Target { tenant: Some(&id), plan: None })?;
    wait_for_position(&state, &headers, tenant_registry::NAME).await?;
    let row =
        tenant_registry::get(&state.pool, &scope(&principal), id.as_str()).await?.ok_or_else(Problem::not_found)?;
    if row.status == "purged" {
        return Err(Problem::new(StatusCode::GONE, "tenant_purged", "the tenant was deleted"));
    }
    Ok(Json(row))
}
