//! The REST query API: one file per resource — each exporting its routes and its part
//! of the OpenAPI document — and what they share: the state (`state`), extractors and
//! helpers (`extract`), paging (`pagination`), problem documents (`problem`), the
//! OpenAPI builder (`openapi`) and the flag cache (`flag_cache`). This module only
//! composes the resources into one router and one document. It reads read models
//! only (and records usage, audit records and health reports).

pub mod audit;
pub mod auth;
pub mod billing;
pub mod extract;
pub mod flag_cache;
pub mod flags;
pub mod health;
pub mod health_system;
pub mod limits;
pub mod metrics;
pub mod ofrep;
pub mod openapi;
pub mod pagination;
pub mod problem;
pub mod ready;
pub mod routes;
pub mod routing;
pub mod state;
pub mod tenants;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tracing::Instrument;

use extract::{CORRELATION_HEADER, CorrelationId};
use openapi::ApiDoc;
use problem::Problem;
use routes::Routes;
use state::AppState;

/// Where the OpenAPI document is served.
const OPENAPI_PATH: &str = "/v1/openapi.json";

/// A resource: its routes, and its part of the OpenAPI document.
type Resource = (fn() -> Routes, fn(&mut ApiDoc));

/// Every resource.
const RESOURCES: [Resource; 10] = [
    (health::routes, health::openapi),
    (metrics::routes, metrics::openapi),
    (health_system::routes, health_system::openapi),
    (auth::routes, auth::openapi),
    (tenants::routes, tenants::openapi),
    (flags::routes, flags::openapi),
    (ofrep::routes, ofrep::openapi),
    (routing::routes, routing::openapi),
    (billing::routes, billing::openapi),
    (audit::routes, audit::openapi),
];

/// The REST router.
pub fn router(state: AppState) -> Router {
    // `start` refuses settings without valid limits.
    let body_limit = state.settings.limits().unwrap_or_default().request_body_bytes();
    Router::new()
        .route(OPENAPI_PATH, get(|| async { Json(document()) }))
        .merge(health::routes())
        .merge(tenants::routes())
        .merge(auth::routes())
        .merge(flags::routes())
        .merge(routing::routes())
        .merge(billing::routes())
        .merge(audit::routes())
        .merge(health_system::routes())
        .merge(metrics::routes())
        .fallback(|| async { Problem::not_found() })
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(limits::too_large_as_problem))
        .layer(axum::middleware::from_fn(correlation))
        // The hot path: no per-request span or log line.
        .merge(ofrep::routes())
        // Outermost, on every route (each knows its template then) and the fallback.
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::record))
        .with_state(state)
}

/// `GET /v1/openapi.json`: the REST API described as OpenAPI 3.1, gathered from the
/// resources' parts.
pub fn document() -> Value {
    let mut doc = ApiDoc::new();
    doc.operation(
        OPENAPI_PATH,
        "get",
        json!({ "summary": "This document", "security": [], "responses": { "200": { "description": "OpenAPI 3.1" } } }),
    );
    for (_, part) in RESOURCES {
        part(&mut doc);
    }
    doc.finish()
}

/// Takes or creates the correlation id, runs the request in a span carrying it,
/// echoes it in the response and writes it into problem documents.
async fn correlation(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    request.extensions_mut().insert(CorrelationId(id.clone()));
    let span =
        tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), correlation_id = %id);
    async move {
        let mut response = next.run(request).await;
        tracing::info!(status = response.status().as_u16(), "request served");
        if let Ok(value) = HeaderValue::from_str(&id) {
            response.headers_mut().insert(CORRELATION_HEADER, value);
        }
        let is_problem = response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v == "application/problem+json");
        if !is_problem {
            return response;
        }
        let (parts, body) = response.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
            return Response::from_parts(parts, Body::empty());
        };
        let mut doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if let Some(map) = doc.as_object_mut() {
            map.insert("correlation_id".into(), id.clone().into());
        }
        let mut parts = parts;
        parts.headers.remove(header::CONTENT_LENGTH);
        Response::from_parts(parts, Body::from(serde_json::to_vec(&doc).unwrap_or_default()))
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use axum::routing::{MethodFilter, on};

    use super::*;

    const METHODS: [(&str, MethodFilter); 5] = [
        ("get", MethodFilter::GET),
        ("post", MethodFilter::POST),
        ("put", MethodFilter::PUT),
        ("patch", MethodFilter::PATCH),
        ("delete", MethodFilter::DELETE),
    ];

    /// Whether `router` routes `method` of `path`: axum refuses (panics) to route it twice.
    fn routes_method(router: &Router<AppState>, path: &str, method: MethodFilter) -> bool {
        let probe = router.clone();
        catch_unwind(AssertUnwindSafe(|| probe.route(path, on(method, || async {})))).is_err()
    }

    #[test]
    fn each_resource_documents_exactly_the_operations_it_routes() {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let mut mismatches = Vec::new();
        for (routes, part) in RESOURCES {
            let routes = routes();
            let mut doc = ApiDoc::new();
            part(&mut doc);
            let documented: BTreeSet<(String, String)> = doc.operations().into_iter().collect();
            let paths: Vec<&str> = routes.paths().to_vec();
            let router = Router::from(routes);
            let mut routed = BTreeSet::new();
            for path in paths {
                for (name, method) in METHODS {
                    if routes_method(&router, path, method) {
                        routed.insert((path.to_string(), name.to_string()));
                    }
                }
            }
            mismatches.extend(routed.symmetric_difference(&documented).cloned());
        }
        std::panic::set_hook(hook);
        assert!(mismatches.is_empty(), "routed but not documented, or documented but not routed: {mismatches:?}");
    }

    #[test]
    fn the_document_lists_every_routed_path() {
        let doc = document();
        let documented: BTreeSet<&str> = doc["paths"].as_object().expect("paths").keys().map(String::as_str).collect();
        let mut routed: BTreeSet<&str> = RESOURCES.iter().flat_map(|(routes, _)| routes().paths().to_vec()).collect();
        routed.insert(OPENAPI_PATH);
        assert_eq!(routed, documented);
        assert_eq!(doc["openapi"], "3.1.0");
    }
}
