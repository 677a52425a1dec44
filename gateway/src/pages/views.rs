//! The page handlers and what their templates show.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::response::Response;

use keel_domain::directory::PasswordPolicy;

use super::i18n::{Catalog, Lang};
use super::{PageQuery, csrf, html, language, see_other, with_query};
use crate::rest::state::AppState;

/// The error codes the sign-in page has a sentence for (`POST /v1/auth/session`'s).
pub const LOGIN_ERRORS: &[&str] = &[
    "invalid_credentials",
    "too_many_attempts",
    "tenant_suspended",
    "user_disabled",
    "overloaded",
    "unavailable",
    "interaction_expired",
    "workspace_mismatch",
    "invalid_request",
    "csrf",
];

/// The error codes the forgot-password page has a sentence for.
pub const FORGOT_ERRORS: &[&str] = &["too_many_attempts", "overloaded", "unavailable", "invalid_request", "csrf"];

/// The error codes the reset and invitation pages have a sentence for.
pub const SET_PASSWORD_ERRORS: &[&str] = &[
    "weak_password",
    "password_mismatch",
    "invitation_invalid",
    "invitation_expired",
    "reset_invalid",
    "reset_expired",
    "overloaded",
    "unavailable",
    "invalid_request",
    "csrf",
];

/// What every page shows: language, title, switcher, the error sentence, the CSRF token.
#[derive(Debug)]
pub struct Chrome {
    /// The page's language.
    pub lang: Lang,
    /// Its messages.
    pub t: &'static Catalog,
    /// The page title (also the `<h1>`).
    pub title: String,
    /// The stylesheet's URL.
    pub css: &'static str,
    /// The language switcher.
    pub languages: Vec<LangLink>,
    /// The sentence for the query's `error`, if any.
    pub error: Option<String>,
    /// The form's CSRF token (the `keel_csrf` cookie's value).
    pub csrf: String,
}

/// A link of the language switcher.
#[derive(Debug)]
pub struct LangLink {
    /// The language's tag.
    pub lang: &'static str,
    /// Its own name.
    pub name: &'static str,
    /// This page in that language.
    pub href: String,
    /// Whether it is the page's language.
    pub current: bool,
}

/// A page being answered: its chrome and the cookies to set.
struct Answer {
    chrome: Chrome,
    query: PageQuery,
    cookies: Vec<HeaderValue>,
}

impl Answer {
    /// The chrome of the page at `path` titled `title_key`, with the sentence for the query's
    /// `error` among `known` codes (any other code reads as a generic sentence).
    fn new(state: &AppState, headers: &HeaderMap, uri: &Uri, title_key: &str, known: &[&str]) -> Self {
        let query = PageQuery::of(uri);
        let (lang, chosen) = language(&query, headers);
        let t = lang.catalog();
        let secure = super::secure(state);
        let (csrf, csrf_cookie) = csrf::token_for(headers, secure);
        let mut cookies: Vec<HeaderValue> = csrf_cookie.into_iter().collect();
        if chosen {
            cookies.extend(super::set_cookie("keel_lang", lang.code(), "Max-Age=31536000; SameSite=Lax", secure));
        }
        let languages = Lang::ALL
            .into_iter()
            .map(|other| LangLink {
                lang: other.code(),
                name: other.name(),
                href: format!("{}?{}", uri.path(), query.with_lang(other)),
                current: other == lang,
            })
            .collect();
        let retry_after = query.get("retry_after").and_then(|s| s.parse::<u64>().ok());
        let error = query.get("error").map(|code| error_sentence(t, code, retry_after, known));
        let chrome = Chrome {
            lang,
            t,
            title: t.get(title_key).to_string(),
            css: super::assets::css_href(),
            languages,
            error,
            csrf,
        };
        Self { chrome, query, cookies }
    }
}

/// The sentence for error `code` (a generic one unless `code` is `known`), with the wait in
/// minutes or seconds when the code has one.
pub fn error_sentence(t: &Catalog, code: &str, retry_after: Option<u64>, known: &[&str]) -> String {
    if !known.contains(&code) {
        return t.get("error.generic").to_string();
    }
    match (code, retry_after) {
        ("too_many_attempts", Some(s)) if s >= 60 => t.with("error.too_many_attempts_minutes", "n", s.div_ceil(60)),
        ("too_many_attempts", Some(s)) if s > 0 => t.with("error.too_many_attempts_seconds", "n", s),
        ("overloaded", Some(s)) if s > 0 => t.with("error.overloaded_seconds", "n", s),
        _ => t.get(&format!("error.{code}")).to_string(),
    }
}

/// `GET /login`.
#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    /// The chrome.
    pub c: Chrome,
    /// The opaque authorization request being served (empty if none).
    pub interaction: String,
    /// The workspace (tenant domain) to prefill.
    pub workspace: String,
    /// Whether the application named the workspace (then it is read-only).
    pub workspace_locked: bool,
    /// Whether to say the person signed out.
    pub signed_out: bool,
    /// The forgot-password link (carrying the workspace and language).
    pub forgot_href: String,
    /// This page without the workspace (to fix a workspace carried back after an error).
    pub change_workspace_href: String,
}

/// `GET /forgot-password`.
#[derive(Template)]
#[template(path = "forgot.html")]
pub struct ForgotPage {
    /// The chrome.
    pub c: Chrome,
    /// The workspace to prefill.
    pub workspace: String,
    /// Whether the request was sent (then the page says to check the mail).
    pub done: bool,
    /// The sign-in link.
    pub login_href: String,
}

/// Where a mailed token stands, as a set-password page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    /// It can be used: the form.
    Usable,
    /// It expired: say so and offer the next step.
    Expired,
    /// Unknown, used or superseded: say so and offer the next step.
    Invalid,
    /// The password was set.
    Done,
}

/// The message keys of a set-password page (reset or invitation).
#[derive(Debug)]
pub struct SetPasswordTexts {
    /// The title.
    pub title: &'static str,
    /// The sentence above the form, if any.
    pub intro: Option<&'static str>,
    /// The submit button.
    pub submit: &'static str,
    /// After success.
    pub done: &'static str,
    /// An expired link.
    pub expired: &'static str,
    /// An unknown or used link.
    pub invalid: &'static str,
    /// The next step after an expired or used link.
    pub next: &'static str,
}

/// The reset page's messages.
const RESET_TEXTS: SetPasswordTexts = SetPasswordTexts {
    title: "reset.title",
    intro: None,
    submit: "reset.submit",
    done: "reset.done",
    expired: "reset.expired",
    invalid: "reset.invalid",
    next: "reset.next",
};

/// The invitation page's messages.
const INVITATION_TEXTS: SetPasswordTexts = SetPasswordTexts {
    title: "invitation.title",
    intro: Some("invitation.intro"),
    submit: "invitation.submit",
    done: "invitation.done",
    expired: "invitation.expired",
    invalid: "invitation.invalid",
    next: "invitation.next",
};

/// `GET /reset-password` and `GET /invitation`.
#[derive(Template)]
#[template(path = "set_password.html")]
pub struct SetPasswordPage {
    /// The chrome.
    pub c: Chrome,
    /// Where the token stands.
    pub state: TokenState,
    /// The page's messages.
    pub texts: &'static SetPasswordTexts,
    /// The policy's rules, in words.
    pub policy: Vec<String>,
    /// The API the form posts to.
    pub action: &'static str,
    /// The mailed token (a hidden field).
    pub token: String,
    /// The next step's link after an expired or used token (none: the words say what to do).
    pub next_href: Option<String>,
    /// The sign-in link.
    pub login_href: String,
}

impl SetPasswordPage {
    /// The ids describing the password input: the policy and the error, when shown.
    pub fn described_by(&self) -> String {
        let ids = [(!self.policy.is_empty(), "policy"), (self.c.error.is_some(), "form-error")];
        ids.iter().filter(|(shown, _)| *shown).map(|(_, id)| *id).collect::<Vec<_>>().join(" ")
    }
}

/// `GET /` when signed in.
#[derive(Template)]
#[template(path = "home.html")]
pub struct HomePage {
    /// The chrome.
    pub c: Chrome,
    /// "Signed in as …".
    pub signed_in_as: String,
}

/// `GET /`: the signed-in page, or 303 to `/login`.
pub async fn home(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let Some(user) = super::signed_in_user(&state, &headers).await else {
        let query = PageQuery::of(&uri);
        return see_other(&with_query("/login", &[("lang", query.get("lang").unwrap_or_default())]));
    };
    let answer = Answer::new(&state, &headers, &uri, "home.title", &[]);
    let signed_in_as = answer.chrome.t.with("home.signed_in_as", "who", &user.email);
    html(HomePage { c: answer.chrome, signed_in_as }.render(), answer.cookies)
}

/// `GET /login`.
pub async fn login(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let answer = Answer::new(&state, &headers, &uri, "login.title", LOGIN_ERRORS);
    let query = &answer.query;
    let workspace = query.get("workspace").filter(|w| w.len() <= 253).unwrap_or_default().to_string();
    let lang = answer.chrome.lang.code();
    let page = LoginPage {
        interaction: query.get("interaction").unwrap_or_default().to_string(),
        workspace_locked: !workspace.is_empty(),
        signed_out: query.get("signed_out") == Some("1"),
        forgot_href: with_query("/forgot-password", &[("workspace", &workspace), ("lang", lang)]),
        change_workspace_href: with_query(
            "/login",
            &[("interaction", query.get("interaction").unwrap_or_default()), ("lang", lang)],
        ),
        workspace,
        c: answer.chrome,
    };
    html(page.render(), answer.cookies)
}

/// `GET /forgot-password`.
pub async fn forgot_password(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let answer = Answer::new(&state, &headers, &uri, "forgot.title", FORGOT_ERRORS);
    let query = &answer.query;
    let workspace = query.get("workspace").filter(|w| w.len() <= 253).unwrap_or_default().to_string();
    let done = query.get("done") == Some("1");
    let mut chrome = answer.chrome;
    if done {
        chrome.title = chrome.t.get("forgot.done_title").to_string();
    }
    let login_href = with_query("/login", &[("workspace", &workspace), ("lang", chrome.lang.code())]);
    html(ForgotPage { c: chrome, workspace, done, login_href }.render(), answer.cookies)
}

/// `GET /reset-password?token=…`.
pub async fn reset_password(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    set_password_page(&state, &headers, &uri, &RESET_TEXTS).await
}

/// `GET /invitation?token=…`.
pub async fn invitation(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    set_password_page(&state, &headers, &uri, &INVITATION_TEXTS).await
}

/// A set-password page: the token's state (read as `POST /v1/auth/password-policy` does)
/// and, while it is usable, the policy and the form.
async fn set_password_page(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
    texts: &'static SetPasswordTexts,
) -> Response {
    let answer = Answer::new(state, headers, uri, texts.title, SET_PASSWORD_ERRORS);
    let reset = std::ptr::eq(texts, &RESET_TEXTS);
    let (prefix, action) = if reset {
        (keel_commands::users::RESET_TOKEN_PREFIX, "/v1/auth/password-reset/confirm")
    } else {
        (keel_commands::users::INVITATION_TOKEN_PREFIX, "/v1/auth/invitations/accept")
    };
    let query = &answer.query;
    let lang = answer.chrome.lang.code();
    let token = query.get("token").unwrap_or_default().trim().to_string();
    let mut chrome = answer.chrome;
    let (token_state, policy) = if query.get("done") == Some("1") {
        (TokenState::Done, None)
    } else if !token.starts_with(prefix) || token.len() > 128 {
        (TokenState::Invalid, None)
    } else {
        match state.users.token_password_policy(&token).await {
            Ok(policy) => (TokenState::Usable, Some(policy)),
            Err(err) if err.code.ends_with("_expired") => (TokenState::Expired, None),
            Err(err) if err.code.ends_with("_invalid") => (TokenState::Invalid, None),
            // The policy cannot be read now: the form still works, the API checks the policy.
            Err(err) => {
                chrome.error = Some(error_sentence(chrome.t, &err.code, Some(1), SET_PASSWORD_ERRORS));
                (TokenState::Usable, None)
            }
        }
    };
    if token_state != TokenState::Usable {
        // The page says why already.
        chrome.error = None;
    }
    let page = SetPasswordPage {
        policy: policy.map(|p| policy_rules(chrome.t, &p)).unwrap_or_default(),
        state: token_state,
        texts,
        action,
        token,
        next_href: reset.then(|| with_query("/forgot-password", &[("lang", lang)])),
        login_href: with_query("/login", &[("lang", lang)]),
        c: chrome,
    };
    html(page.render(), answer.cookies)
}

/// A password policy's rules, in words.
pub fn policy_rules(t: &Catalog, policy: &PasswordPolicy) -> Vec<String> {
    let mut rules = vec![t.with("policy.min_length", "n", policy.min_length)];
    for (required, key) in [
        (policy.require_lowercase, "policy.lowercase"),
        (policy.require_uppercase, "policy.uppercase"),
        (policy.require_digit, "policy.digit"),
        (policy.require_symbol, "policy.symbol"),
    ] {
        if required {
            rules.push(t.get(key).to_string());
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chrome(lang: Lang, error: Option<&str>) -> Chrome {
        Chrome {
            lang,
            t: lang.catalog(),
            title: lang.catalog().get("login.title").into(),
            css: "/assets/keel.css",
            languages: Vec::new(),
            error: error.map(str::to_string),
            csrf: "tok".into(),
        }
    }

    #[test]
    fn every_error_code_has_a_sentence_in_both_languages() {
        for lang in Lang::ALL {
            for code in LOGIN_ERRORS.iter().chain(FORGOT_ERRORS).chain(SET_PASSWORD_ERRORS) {
                assert!(lang.catalog().has(&format!("error.{code}")), "{lang}: error.{code}");
            }
        }
        let t = Lang::En.catalog();
        assert_eq!(
            error_sentence(t, "too_many_attempts", Some(61), LOGIN_ERRORS),
            "Too many attempts. Try again in 2 minutes."
        );
        assert_eq!(
            error_sentence(t, "too_many_attempts", Some(30), LOGIN_ERRORS),
            "Too many attempts. Try again in 30 seconds."
        );
        assert_eq!(error_sentence(t, "<script>", None, LOGIN_ERRORS), t.get("error.generic"));
        let ja = Lang::Ja.catalog();
        assert_eq!(
            error_sentence(ja, "too_many_attempts", Some(120), LOGIN_ERRORS),
            "試行回数が多すぎます。2 分後にもう一度お試しください。"
        );
    }

    #[test]
    fn every_page_renders_in_both_languages_without_missing_messages() {
        for lang in Lang::ALL {
            let login = LoginPage {
                c: chrome(lang, Some("x")),
                interaction: "i".into(),
                workspace: "acme".into(),
                workspace_locked: true,
                signed_out: true,
                forgot_href: "/forgot-password".into(),
                change_workspace_href: "/login".into(),
            }
            .render()
            .unwrap();
            let forgot = ForgotPage {
                c: chrome(lang, None),
                workspace: String::new(),
                done: false,
                login_href: "/login".into(),
            }
            .render()
            .unwrap();
            let mut pages = vec![login, forgot];
            for state in [TokenState::Usable, TokenState::Expired, TokenState::Invalid, TokenState::Done] {
                for texts in [&RESET_TEXTS, &INVITATION_TEXTS] {
                    let page = SetPasswordPage {
                        c: chrome(lang, None),
                        state,
                        texts,
                        policy: policy_rules(lang.catalog(), &PasswordPolicy::default()),
                        action: "/v1/auth/password-reset/confirm",
                        token: "keel_pwr_x".into(),
                        next_href: Some("/forgot-password".into()),
                        login_href: "/login".into(),
                    };
                    pages.push(page.render().unwrap());
                }
            }
            let home = HomePage { c: chrome(lang, None), signed_in_as: "who".into() }.render().unwrap();
            pages.push(home);
            for page in &pages {
                assert!(page.contains(&format!("<html lang=\"{lang}\">")), "{page}");
                // A missing message shows as its dotted key.
                for section in ["common.", "login.", "forgot.", "reset.", "invitation.", "policy.", "home.", "error."] {
                    let key_shown = page.match_indices(section).any(|(at, _)| {
                        page[at + section.len()..].starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                    });
                    assert!(!key_shown, "{lang}: a message key is shown: {page}");
                }
                assert!(!page.contains("<script"), "{page}");
            }
        }
    }

    #[test]
    fn the_login_page_locks_a_named_workspace_and_escapes_what_it_echoes() {
        let page = LoginPage {
            c: chrome(Lang::En, None),
            interaction: "\"><script>".into(),
            workspace: "acme".into(),
            workspace_locked: true,
            signed_out: false,
            forgot_href: "/forgot-password?workspace=acme".into(),
            change_workspace_href: "/login".into(),
        }
        .render()
        .unwrap();
        assert!(page.contains("value=\"acme\" maxlength=\"253\""), "{page}");
        assert!(page.contains(" readonly>"), "{page}");
        assert!(!page.contains("\"><script>"), "{page}");
        assert!(page.contains("<label for=\"workspace\">Workspace</label>"));
        assert!(page.contains("<button type=\"submit\">Sign in</button>"));
    }
}
