//! REST `/healthz` and `/readyz`: liveness, and readiness (`ready.rs`: Postgres
//! answers and neither the relay nor a projector is stalled; the broker is reported).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::openapi::ApiDoc;
use super::routes::Routes;
use super::state::AppState;

/// The health routes.
pub fn routes() -> Routes {
    Routes::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

/// The health part of the OpenAPI document.
pub fn openapi(doc: &mut ApiDoc) {
    doc.operation(
        "/healthz",
        "get",
        json!({ "summary": "Liveness", "security": [], "responses": { "200": { "description": "Alive" } } }),
    );
    doc.operation(
        "/readyz",
        "get",
        json!({ "summary": "Readiness: Postgres answers and neither the relay nor a projector is stalled (the broker is reported, not gating)", "security": [],
        "responses": { "200": { "description": "Ready" }, "503": { "description": "Not ready" } } }),
    );
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let readiness = state.ready.check().await;
    let status = if readiness.ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(readiness)).into_response()
}
