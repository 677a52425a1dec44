//! The pages (ADR 0026) over HTTP, as a browser without JavaScript uses them: every page
//! renders with its labels in English and Japanese, carries the security headers and loads
//! nothing from outside Keel; the e-mailed links open pages whose forms set the password
//! through the form-encoded APIs; expired and used links say so; CSRF refusals change
//! nothing. (Real-browser tests are in tests/browser.)

use std::time::Duration;

use keel_gateway::proto::InviteUserRequest;
use keel_tests::{TestEnv, eventually};
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::json;

use crate::support::{PASSWORD, Rest, authed, key, tenant_with_owner, user_client};

/// The pages' exact Content-Security-Policy.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; frame-ancestors 'none'";

/// A browser-like client: no redirects followed, cookies handled by hand.
struct Browser {
    base: String,
    http: reqwest::Client,
}

/// An answer: status, headers, body.
struct Page {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Page {
    /// The `keel_csrf` cookie this answer sets, else the hidden field's value.
    fn csrf(&self) -> String {
        let from_cookie = self.headers.get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|c| {
            c.strip_prefix("keel_csrf=").map(|rest| rest.split(';').next().unwrap_or_default().to_string())
        });
        let from_field = self.field("csrf");
        if let (Some(cookie), Some(field)) = (&from_cookie, &from_field) {
            assert_eq!(field, cookie, "the form repeats the cookie");
        }
        from_cookie.or(from_field).expect("a CSRF token")
    }

    /// The value of the hidden input `name`.
    fn field(&self, name: &str) -> Option<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker)? + marker.len();
        Some(self.body[start..].split('"').next()?.to_string())
    }

    fn location(&self) -> &str {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
}

impl Browser {
    fn new(keel: &keel_gateway::server::Running) -> Self {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        Self { base: format!("http://{}", keel.rest_addr), http }
    }

    /// GETs `path` (or a full URL) with extra `headers`.
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Page {
        let url = if path.starts_with("http") { path.to_string() } else { format!("{}{path}", self.base) };
        let mut request = self.http.get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        answer(request.send().await.expect("GET")).await
    }

    /// POSTs a form to `path` with the `keel_csrf` cookie `cookie` and extra `headers`.
    async fn post_form(
        &self,
        path: &str,
        form: &[(&str, &str)],
        cookie: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Page {
        let mut request = self.http.post(format!("{}{path}", self.base)).form(form);
        if let Some(cookie) = cookie {
            request = request.header("cookie", format!("keel_csrf={cookie}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        answer(request.send().await.expect("POST")).await
    }

    /// POSTs a form from one of our pages (same origin, with the page's token).
    async fn submit(&self, path: &str, form: &[(&str, &str)], csrf: &str) -> Page {
        let mut form = form.to_vec();
        form.push(("csrf", csrf));
        self.post_form(path, &form, Some(csrf), &[("origin", &self.base)]).await
    }
}

async fn answer(response: reqwest::Response) -> Page {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    Page { status, headers, body: response.text().await.unwrap_or_default() }
}

/// Asserts a page's status, headers and that it loads nothing from outside Keel.
fn assert_page(page: &Page, lang: &str) {
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    assert_eq!(page.header("content-security-policy"), CSP);
    assert_eq!(page.header("x-content-type-options"), "nosniff");
    assert_eq!(page.header("referrer-policy"), "no-referrer");
    assert_eq!(page.header("cache-control"), "no-store");
    assert_eq!(page.header("x-frame-options"), "DENY");
    assert!(page.body.contains(&format!("<html lang=\"{lang}\">")), "{}", page.body);
    for attribute in ["src=\"", "href=\"", "action=\""] {
        for (at, _) in page.body.match_indices(attribute) {
            let url = &page.body[at + attribute.len()..];
            assert!(url.starts_with('/') && !url.starts_with("//"), "not a Keel URL: {}", &url[..url.len().min(60)]);
        }
    }
    assert!(!page.body.contains("<script"), "no script");
    assert!(!page.body.contains("style=\""), "no inline style (the CSP would drop it)");
}

/// The latest link to `page` mailed to `to` (the mail is quoted-printable when lines are long).
async fn mailed_link(env: &TestEnv, to: &str, page: &str) -> String {
    let mut link = None;
    eventually(Duration::from_secs(5), || {
        link = mailed_links(env, to, page).pop();
        std::future::ready(link.is_some())
    })
    .await;
    let link = link.unwrap_or_else(|| panic!("no link to {page} mailed"));
    keel_tests::logs::secret(&link);
    link
}

fn mailed_links(env: &TestEnv, to: &str, page: &str) -> Vec<String> {
    let mut messages: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(&env.mailbox)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, std::fs::read_to_string(e.path()).ok()?)))
                .filter(|(_, text)| text.lines().any(|l| l.starts_with("To: ") && l.contains(to)))
                .collect()
        })
        .unwrap_or_default();
    messages.sort_by_key(|(at, _)| *at);
    messages
        .iter()
        .map(|(_, text)| text.replace("=\r\n", "").replace("=\n", "").replace("=3D", "="))
        .flat_map(|text| {
            text.lines().filter(|l| l.starts_with("http") && l.contains(page)).map(str::to_string).collect::<Vec<_>>()
        })
        .collect()
}

/// Whether `email` can sign in with `password` through `POST /v1/auth/login`.
async fn signs_in(rest: &Rest, email: &str, password: &str, domain: &str) -> bool {
    rest.login(email, password, Some(domain)).await.0 == 200
}

/// Invites `email` as a user of the tenant; returns the mailed invitation link.
async fn invite(
    env: &TestEnv,
    keel: &keel_gateway::server::Running,
    tenant_id: &str,
    owner: &str,
    email: &str,
) -> String {
    keel_tests::logs::secret(email);
    let mut users = user_client(keel.grpc_addr).await;
    let request = InviteUserRequest {
        tenant_id: tenant_id.into(),
        email: email.into(),
        role: "user".into(),
        idempotency_key: key(),
    };
    users.invite_user(authed(request, owner)).await.expect("invite");
    mailed_link(env, email, "/invitation?token=").await
}

#[tokio::test]
async fn every_page_renders_its_labels_in_english_and_japanese_with_the_security_headers() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let browser = Browser::new(&keel);

    for path in
        ["/login", "/forgot-password", "/reset-password?token=keel_pwr_unknown", "/invitation?token=keel_inv_unknown"]
    {
        assert_page(&browser.get(path, &[]).await, "en");
        assert_page(&browser.get(path, &[("accept-language", "ja-JP,ja;q=0.9,en;q=0.5")]).await, "ja");
    }

    let login = browser.get("/login", &[]).await;
    for label in ["<label for=\"workspace\">Workspace</label>", "<label for=\"email\">Email</label>"] {
        assert!(login.body.contains(label), "{label}");
    }
    assert!(login.body.contains("<label for=\"password\">Password</label>"));
    assert!(login.body.contains("<button type=\"submit\">Sign in</button>"));
    assert!(login.body.contains("action=\"/v1/auth/session\""));
    assert!(login.body.contains("href=\"/forgot-password?lang=en\""), "{}", login.body);
    assert!(!login.body.contains("readonly"), "nothing named the workspace");
    let cookie = login.headers.get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>().join("\n");
    assert!(cookie.contains("HttpOnly; SameSite=Strict"), "{cookie}");
    let csrf = login.csrf();
    let again = browser.get("/login", &[("cookie", &format!("keel_csrf={csrf}"))]).await;
    assert!(again.headers.get(SET_COOKIE).is_none(), "a valid token is kept");
    assert_eq!(again.field("csrf").as_deref(), Some(csrf.as_str()));

    // Japanese by the switcher's `lang` (remembered in a cookie), then by that cookie.
    let ja = browser.get("/login?workspace=acme.example&lang=ja&interaction=abc", &[]).await;
    assert_page(&ja, "ja");
    for text in
        ["ワークスペース", "メールアドレス", "<label for=\"password\">パスワード</label>", ">サインイン</button>"]
    {
        assert!(ja.body.contains(text), "{text}: {}", ja.body);
    }
    assert!(ja.body.contains("value=\"acme.example\" maxlength=\"253\""), "{}", ja.body);
    assert!(ja.body.contains(" readonly>"), "the named workspace is read-only");
    assert_eq!(ja.field("interaction").as_deref(), Some("abc"));
    assert!(
        ja.body.contains("href=\"/login?interaction=abc&#38;workspace=acme.example&#38;lang=en\""),
        "switcher keeps the query"
    );
    let remembered = ja.headers.get_all(SET_COOKIE).iter().any(|v| v.to_str().unwrap().starts_with("keel_lang=ja;"));
    assert!(remembered, "the choice is remembered");
    let by_cookie = browser.get("/login", &[("cookie", "keel_lang=ja"), ("accept-language", "en")]).await;
    assert_page(&by_cookie, "ja");

    // Errors are sentences, announced; unknown codes are not echoed.
    let throttled = browser.get("/login?error=too_many_attempts&retry_after=120", &[]).await;
    assert!(throttled.body.contains("role=\"alert\" id=\"form-error\">Too many attempts. Try again in 2 minutes."));
    let throttled = browser.get("/login?error=too_many_attempts&retry_after=45&lang=ja", &[]).await;
    assert!(throttled.body.contains("45 秒後にもう一度お試しください"), "{}", throttled.body);
    let odd = browser.get("/login?error=%3Cb%3Ehi", &[]).await;
    assert!(odd.body.contains("Something went wrong") && !odd.body.contains("<b>hi"));
    let out = browser.get("/login?signed_out=1", &[]).await;
    assert!(out.body.contains("role=\"status\">You have signed out."));

    // Nobody is signed in without a Keel session: `/` sends to the sign-in page.
    let home = browser.get("/", &[]).await;
    assert_eq!((home.status, home.location()), (303, "/login"));

    // The stylesheet the pages link, cached for long (its URL changes with its content).
    let href = login.body.split("rel=\"stylesheet\" href=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let css = browser.get(&href, &[]).await;
    assert_eq!((css.status, css.header("content-type")), (200, "text/css; charset=utf-8"));
    assert!(css.header("cache-control").contains("max-age=31536000"));
    assert!(css.body.contains("@media"), "responsive");
    assert_eq!(browser.get("/assets/nope.js", &[]).await.status, 404);
    keel.stop().await;
}

#[tokio::test]
async fn the_mailed_links_open_pages_whose_forms_set_the_password() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let (tenant_id, domain, _, owner) = tenant_with_owner(&env, &keel, &operator, "pages").await;
    let (browser, rest) = (Browser::new(&keel), Rest::new(keel.rest_addr));
    let email = format!("ann@{domain}.example.com");

    // The invitation link → the page with the policy → the form → 303 → signed in.
    let link = invite(&env, &keel, &tenant_id, &owner, &email).await;
    assert!(link.starts_with(&format!("{}/invitation?token=keel_inv_", browser.base)), "{link}");
    let token = link.split("token=").nth(1).unwrap().to_string();
    assert_eq!(env.mailed_tokens(&email, "keel_inv_"), vec![token.clone()], "the token is on a line of its own");
    let page = browser.get(&link, &[]).await;
    assert_page(&page, "en");
    assert!(page.body.contains("at least 12 characters"), "the policy: {}", page.body);
    assert!(page.body.contains("<label for=\"password\">Password</label>"));
    assert!(page.body.contains("<label for=\"confirm\">Confirm password</label>"));
    assert!(page.body.contains("action=\"/v1/auth/invitations/accept\""));
    let csrf = page.csrf();
    let accept = "/v1/auth/invitations/accept";

    let other = "another horse battery staple";
    keel_tests::logs::secret(other);
    let mismatch =
        browser.submit(accept, &[("token", &token), ("password", PASSWORD), ("confirm", other)], &csrf).await;
    assert_eq!(mismatch.status, 303);
    assert_eq!(mismatch.location(), format!("/invitation?token={token}&error=password_mismatch"));
    let weak = browser
        .submit(accept, &[("token", &token), ("password", "short"), ("confirm", "short"), ("lang", "ja")], &csrf)
        .await;
    assert_eq!(weak.location(), format!("/invitation?token={token}&lang=ja&error=weak_password"));
    let shown = browser.get(weak.location(), &[]).await;
    assert!(shown.body.contains("パスワードが下記の条件を満たしていません。"), "{}", shown.body);
    assert!(!signs_in(&rest, &email, PASSWORD, &domain).await, "refusals changed nothing");

    let done = browser.submit(accept, &[("token", &token), ("password", PASSWORD), ("confirm", PASSWORD)], &csrf).await;
    assert_eq!((done.status, done.location()), (303, "/invitation?done=1"));
    let done_page = browser.get(done.location(), &[]).await;
    assert!(done_page.body.contains("Your account is active."), "{}", done_page.body);
    assert!(signs_in(&rest, &email, PASSWORD, &domain).await, "the new user signs in");
    let used = browser.get(&link, &[]).await;
    assert_page(&used, "en");
    assert!(used.body.contains("This invitation link is not valid, or it was used already."), "{}", used.body);
    assert!(used.body.contains("Ask the person who invited you") && !used.body.contains("<form"), "{}", used.body);

    // Forgot password → the reset link → the page → the form → the new password works.
    let forgot = browser.get(&format!("/forgot-password?workspace={domain}"), &[]).await;
    assert_page(&forgot, "en");
    assert!(forgot.body.contains("action=\"/v1/auth/password-reset\""));
    let csrf = forgot.csrf();
    let form = [("workspace", domain.as_str()), ("email", email.as_str())];
    let asked = browser.submit("/v1/auth/password-reset", &form, &csrf).await;
    assert_eq!((asked.status, asked.location()), (303, format!("/forgot-password?workspace={domain}&done=1").as_str()));
    let nobody = [("workspace", domain.as_str()), ("email", "nobody@example.com")];
    let same = browser.submit("/v1/auth/password-reset", &nobody, &csrf).await;
    assert_eq!(same.location(), asked.location(), "the same answer whether or not the account exists");
    assert!(browser.get(asked.location(), &[]).await.body.contains("Check your mail"));

    let link = mailed_link(&env, &email, "/reset-password?token=").await;
    assert!(link.starts_with(&format!("{}/reset-password?token=keel_pwr_", browser.base)), "{link}");
    let token = link.split("token=").nth(1).unwrap().to_string();
    assert_eq!(env.mailed_token(&email, "keel_pwr_").await, token);
    let page = browser.get(&format!("{link}&lang=ja"), &[]).await;
    assert_page(&page, "ja");
    assert!(page.body.contains("<label for=\"confirm\">パスワード（確認）</label>"), "{}", page.body);
    let new_password = "a brand new horse battery";
    keel_tests::logs::secret(new_password);
    let confirm = "/v1/auth/password-reset/confirm";
    let form = [("token", token.as_str()), ("password", new_password), ("confirm", new_password), ("lang", "ja")];
    let done = browser.submit(confirm, &form, &page.csrf()).await;
    assert_eq!((done.status, done.location()), (303, "/reset-password?lang=ja&done=1"));
    assert!(signs_in(&rest, &email, new_password, &domain).await, "the new password works");
    assert!(!signs_in(&rest, &email, PASSWORD, &domain).await, "the old one does not");
    let used = browser.get(&link, &[]).await;
    assert!(used.body.contains("This reset link is not valid, or it was used already."));
    assert!(used.body.contains("href=\"/forgot-password?lang=en\""), "the next step: {}", used.body);

    // The JSON answers are unchanged.
    let (status, body) =
        rest.post("/v1/auth/password-reset/confirm", json!({ "token": token, "password": PASSWORD })).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("reset_invalid")), "{body}");
    keel.stop().await;
}

#[tokio::test]
async fn a_form_without_the_pages_token_or_from_another_site_changes_nothing() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let (tenant_id, domain, _, owner) = tenant_with_owner(&env, &keel, &operator, "csrf").await;
    let (browser, rest) = (Browser::new(&keel), Rest::new(keel.rest_addr));
    let email = format!("bob@{domain}.example.com");
    let link = invite(&env, &keel, &tenant_id, &owner, &email).await;
    let token = link.split("token=").nth(1).unwrap().to_string();
    let csrf = browser.get(&link, &[]).await.csrf();
    let accept = "/v1/auth/invitations/accept";
    let fields = [("token", token.as_str()), ("password", PASSWORD), ("confirm", PASSWORD)];
    let with = |csrf: &'static str| {
        let mut form = fields.to_vec();
        form.push(("csrf", csrf));
        form
    };
    let leaked: &'static str = Box::leak(csrf.clone().into_boxed_str());
    let ours = browser.base.clone();

    let refusals = [
        ("no cookie, no field", browser.post_form(accept, &fields, None, &[]).await),
        ("no cookie", browser.post_form(accept, &with(leaked), None, &[]).await),
        ("a wrong field", browser.post_form(accept, &with("x".repeat(43).leak()), Some(&csrf), &[]).await),
        (
            "another site",
            browser.post_form(accept, &with(leaked), Some(&csrf), &[("origin", "https://evil.example")]).await,
        ),
        (
            "cross-site fetch",
            browser.post_form(accept, &with(leaked), Some(&csrf), &[("sec-fetch-site", "cross-site")]).await,
        ),
    ];
    for (case, answer) in &refusals {
        assert_eq!(answer.status, 403, "{case}: {}", answer.body);
        assert_eq!(answer.header("content-type"), "application/problem+json", "{case}");
        let problem: serde_json::Value = serde_json::from_str(&answer.body).expect("problem");
        assert_eq!(problem["code"], "csrf", "{case}");
    }
    // From our own page with a stale token: back to the page with a sentence and a fresh form.
    let stale =
        browser.post_form(accept, &with("y".repeat(43).leak()), Some(&csrf), &[("origin", ours.as_str())]).await;
    assert_eq!((stale.status, stale.location()), (303, format!("/invitation?token={token}&error=csrf").as_str()));
    let shown = browser.get(stale.location(), &[]).await;
    assert!(shown.body.contains("This form has expired."), "{}", shown.body);
    let multipart = format!(
        "--b\r\ncontent-disposition: form-data; name=\"token\"\r\n\r\n{token}\r\n--b\r\ncontent-disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n--b--\r\n"
    );
    let response = browser
        .http
        .post(format!("{}{accept}", browser.base))
        .header("cookie", format!("keel_csrf={csrf}"))
        .header("content-type", "multipart/form-data; boundary=b")
        .body(multipart)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403, "multipart is refused");
    let plain = browser
        .http
        .post(format!("{}{accept}", browser.base))
        .header("content-type", "text/plain")
        .header("origin", "https://evil.example")
        .body(json!({ "token": token, "password": PASSWORD }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 403, "a cross-site text/plain body is refused");

    // Nothing changed: the invitation is still open, the user cannot sign in.
    let (status, body) = rest.post("/v1/auth/password-policy", json!({ "token": token })).await;
    assert_eq!(status, 200, "the invitation is still usable: {body}");
    assert_eq!(body["password_policy"]["min_length"], 12);
    assert!(!signs_in(&rest, &email, PASSWORD, &domain).await);
    // JSON is not a form: unaffected.
    let (status, body) = rest.post(accept, json!({ "token": token, "password": PASSWORD })).await;
    assert_eq!(status, 200, "{body}");
    assert!(signs_in(&rest, &email, PASSWORD, &domain).await);
    keel.stop().await;
}

#[tokio::test]
async fn expired_links_say_so_and_offer_the_next_step() {
    let env = TestEnv::new().await;
    let keel = env.start_reading_every_aggregate().await;
    let operator = env.operator_token().await;
    let (tenant_id, domain, owner_email, owner) = tenant_with_owner(&env, &keel, &operator, "expired").await;
    let (browser, rest) = (Browser::new(&keel), Rest::new(keel.rest_addr));

    let email = format!("carol@{domain}.example.com");
    let link = invite(&env, &keel, &tenant_id, &owner, &email).await;
    let token = link.split("token=").nth(1).unwrap().to_string();
    age(&env, &tenant_id, "user.invited", "invitation").await;
    let page = browser.get(&link, &[]).await;
    assert_page(&page, "en");
    assert!(page.body.contains("This invitation has expired."), "{}", page.body);
    assert!(page.body.contains("Ask the person who invited you to send a new invitation."));
    assert!(!page.body.contains("<form"), "no form for an expired link");
    let ja = browser.get(&format!("{link}&lang=ja"), &[]).await;
    assert!(ja.body.contains("この招待は有効期限が切れています。"), "{}", ja.body);
    let (status, body) = rest.post("/v1/auth/password-policy", json!({ "token": token })).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("invitation_expired")), "{body}");

    let (status, _) = rest.post("/v1/auth/password-reset", json!({ "email": owner_email, "tenant": domain })).await;
    assert_eq!(status, 202);
    let link = mailed_link(&env, &owner_email, "/reset-password?token=").await;
    age(&env, &tenant_id, "user.password_reset_requested", "reset").await;
    let page = browser.get(&link, &[]).await;
    assert!(page.body.contains("This reset link has expired."), "{}", page.body);
    assert!(page.body.contains("<a href=\"/forgot-password?lang=en\">Ask for a new link</a>"), "{}", page.body);
    // Posting the old form anyway: back to the page, which says the same.
    let token = link.split("token=").nth(1).unwrap().to_string();
    let csrf = page.csrf();
    let form = [("token", token.as_str()), ("password", PASSWORD), ("confirm", PASSWORD)];
    let refused = browser.submit("/v1/auth/password-reset/confirm", &form, &csrf).await;
    assert_eq!(refused.location(), format!("/reset-password?token={token}&error=reset_expired"));
    keel.stop().await;
}

/// Moves the expiry of the tenant's pending tokens of events `event_type` (field `field`) to the past.
async fn age(env: &TestEnv, tenant_id: &str, event_type: &str, field: &str) {
    let owner = env.owner_pool().await;
    sqlx::query(&format!(
        "UPDATE events SET payload = jsonb_set(payload, '{{{field},expires_at}}', '\"2020-01-01T00:00:00Z\"')
         WHERE aggregate_type = 'directory' AND aggregate_id = $1 AND event_type = $2"
    ))
    .bind(tenant_id)
    .bind(event_type)
    .execute(&owner)
    .await
    .expect("age the tokens");
    owner.close().await;
}
