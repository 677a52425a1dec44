//! The pages' static files, embedded in the binary and served at `/assets/<file>`. Pages
//! link them with a content hash in the query (`?v=`), so they are cached for a year.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::rest::problem::Problem;

/// The stylesheet.
const KEEL_CSS: &str = include_str!("../../ui/assets/keel.css");

/// The stylesheet's URL, with its content hash.
static CSS_HREF: LazyLock<String> = LazyLock::new(|| {
    let hash = hex::encode(Sha256::digest(KEEL_CSS.as_bytes()));
    format!("/assets/keel.css?v={}", &hash[..16])
});

/// The stylesheet's URL, as pages link it.
pub fn css_href() -> &'static str {
    &CSS_HREF
}

/// `GET /assets/{file}`.
pub async fn serve(Path(file): Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "keel.css" => (KEEL_CSS, "text/css; charset=utf-8"),
        _ => return Problem::not_found().into_response(),
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    response
}
