//! The pages people use in a browser (ADR 0026): sign-in, forgot password, reset
//! password, invitation and the signed-in page. Server-rendered HTML (askama templates in
//! `gateway/ui/templates`), one stylesheet (`gateway/ui/assets`), messages in English and
//! Japanese (`gateway/ui/i18n`), no JavaScript. Every action is a form posting to a
//! documented REST API; `csrf` guards every form post, `forms` gives the password APIs
//! their form-encoded answers (303 back to the page).

pub mod assets;
pub mod csrf;
pub mod forms;
pub mod i18n;
pub mod views;

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::rest::problem::Problem;
use crate::rest::state::AppState;
use i18n::Lang;

/// The pages' Content-Security-Policy: nothing but our own stylesheet and images; no
/// script at all; never framed. No `form-action`: Chrome applies it to the redirect
/// after a form post, which goes on to the client application's origin.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The cookie remembering the language chosen with the switcher.
const LANG_COOKIE: &str = "keel_lang";

/// The longest query value a page reads (an `interaction` blob is the longest); longer ones are ignored.
const MAX_QUERY_VALUE: usize = 4096;

/// The page routes and the stylesheet.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(views::home))
        .route("/login", get(views::login))
        .route("/forgot-password", get(views::forgot_password))
        .route("/reset-password", get(views::reset_password))
        .route("/invitation", get(views::invitation))
        .route("/assets/{file}", get(assets::serve))
        .layer(axum::middleware::from_fn(security_headers))
}

/// The person a Keel browser session cookie (`keel_session`) belongs to.
#[derive(Debug, Clone)]
pub struct SignedInUser {
    /// The e-mail address shown on the signed-in page.
    pub email: String,
}

/// Who is signed in with the request's Keel session cookie, if anyone (a cookie of an
/// ended session signs no one in).
pub async fn signed_in_user(state: &AppState, headers: &HeaderMap) -> Option<SignedInUser> {
    let session = crate::rest::oidc::live_session(state, headers).await.ok()??;
    let email = keel_commands::identity_queries::user_email(&state.pool, &session.user_id).await.ok()??;
    Some(SignedInUser { email })
}

/// Adds the browser security headers to every page (and `no-store`, unless the handler
/// chose a cache policy, as the stylesheet does).
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A page's query parameters: the first value of each, values over [`MAX_QUERY_VALUE`] ignored.
#[derive(Debug, Default)]
pub struct PageQuery(BTreeMap<String, String>);

impl PageQuery {
    /// The query of `uri` (a malformed query reads as empty).
    pub fn of(uri: &Uri) -> Self {
        let pairs: Vec<(String, String)> =
            uri.query().and_then(|q| serde_urlencoded::from_str(q).ok()).unwrap_or_default();
        let mut map = BTreeMap::new();
        for (key, value) in pairs {
            if value.len() <= MAX_QUERY_VALUE {
                map.entry(key).or_insert(value);
            }
        }
        Self(map)
    }

    /// A parameter's value, if present and not empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// Every parameter but `lang`, then `lang=<lang>`: the switcher's link.
    fn with_lang(&self, lang: Lang) -> String {
        let mut pairs: Vec<(&str, &str)> =
            self.0.iter().filter(|(k, _)| k.as_str() != "lang").map(|(k, v)| (k.as_str(), v.as_str())).collect();
        pairs.push(("lang", lang.code()));
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(key, value)| (key == name).then_some(value))
}

/// The page's language: the `lang` parameter, else the `keel_lang` cookie, else
/// `Accept-Language`, else English; and whether the parameter chose it.
pub fn language(query: &PageQuery, headers: &HeaderMap) -> (Lang, bool) {
    if let Some(lang) = query.get("lang").and_then(Lang::parse) {
        return (lang, true);
    }
    let chosen = cookie(headers, LANG_COOKIE).and_then(Lang::parse).or_else(|| {
        headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).and_then(Lang::from_accept_language)
    });
    (chosen.unwrap_or(Lang::En), false)
}

/// Whether cookies get `Secure` (the issuer is https).
pub fn secure(state: &AppState) -> bool {
    state.auth.tokens().issuer().starts_with("https://")
}

/// The issuer's origin (`scheme://host[:port]`), what a same-origin `Origin` header says.
pub fn issuer_origin(state: &AppState) -> &str {
    let issuer = state.auth.tokens().issuer();
    let rest = issuer.find("://").map_or(0, |i| i + 3);
    issuer[rest..].find('/').map_or(issuer, |end| &issuer[..rest + end])
}

/// A `Set-Cookie` for `name=value` on the whole site.
pub fn set_cookie(name: &str, value: &str, attributes: &str, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{name}={value}; Path=/; {attributes}{secure}")).ok()
}

/// A rendered page (200, HTML) with `cookies` set; a template error is a 500 problem.
pub fn html(rendered: Result<String, askama::Error>, cookies: Vec<HeaderValue>) -> Response {
    match rendered {
        Ok(body) => {
            let mut response =
                ([(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], body).into_response();
            for cookie in cookies {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(err) => Problem::internal(&err).into_response(),
    }
}

/// A 303 to `location` (a path of ours).
pub fn see_other(location: &str) -> Response {
    let mut response = axum::http::StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// `path` with `pairs` as its query (none if empty).
pub fn with_query(path: &str, pairs: &[(&str, &str)]) -> String {
    let pairs: Vec<&(&str, &str)> = pairs.iter().filter(|(_, v)| !v.is_empty()).collect();
    if pairs.is_empty() {
        return path.to_string();
    }
    format!("{path}?{}", serde_urlencoded::to_string(pairs).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; keel_csrf_x=2"));
        headers.append(header::COOKIE, HeaderValue::from_static("keel_csrf=abc"));
        assert_eq!(cookie(&headers, "keel_csrf"), Some("abc"));
        assert_eq!(cookie(&headers, "b"), None);
    }

    #[test]
    fn the_language_comes_from_the_query_then_the_cookie_then_the_header() {
        let uri: Uri = "/login?lang=ja&workspace=acme".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("en"));
        assert_eq!(language(&PageQuery::of(&uri), &headers), (Lang::Ja, true));
        let plain = PageQuery::of(&"/login".parse().unwrap());
        assert_eq!(language(&plain, &headers), (Lang::En, false));
        headers.insert(header::COOKIE, HeaderValue::from_static("keel_lang=ja"));
        assert_eq!(language(&plain, &headers), (Lang::Ja, false));
        assert_eq!(language(&plain, &HeaderMap::new()), (Lang::En, false));
    }

    #[test]
    fn the_switcher_keeps_every_other_parameter() {
        let query = PageQuery::of(&"/login?workspace=acme&lang=en&interaction=a%2Bb".parse().unwrap());
        assert_eq!(query.with_lang(Lang::Ja), "interaction=a%2Bb&workspace=acme&lang=ja");
        assert_eq!(with_query("/login", &[("a", ""), ("b", "x y")]), "/login?b=x+y");
        assert_eq!(with_query("/login", &[("a", "")]), "/login");
    }
}
