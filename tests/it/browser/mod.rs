//! Browser and relying-party tests of the universal login (issue 14, ADR 0027).
//!
//! Each test starts a Keel whose public URL (the issuer) is `http://localhost:<port>` (a
//! WebAuthn relying party cannot be an IP address, and the cookies and origins the pages check
//! must be the ones the browser sees), sets up tenants, people and apps through the public
//! APIs and the `keel` CLI, then runs one scenario of `tests/browser/` with node: headless
//! Debian Chromium driven by playwright-core, and openid-client as the relying party. A
//! scenario that fails leaves a screenshot and the HTML of each open page in
//! `target/test-output/browser/<test>/`. A missing Chromium or npm install fails the test.

mod login;
mod mail_links;
mod relying_party;
mod smoke;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use keel_gateway::server::{Running, Workers};
use keel_tests::TestEnv;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::support::{PASSWORD, provision, tenant_client};

/// Where Debian's chromium package installs the browser (scripts/lib.sh `ensure_chromium`).
const CHROMIUM: &str = "/usr/bin/chromium";

/// Longest a scenario may run.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(180);

/// The npm project of the scenarios.
fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Where a test's screenshots go: `target/test-output/browser/<test>/` in the checkout.
fn output_dir(test: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-output/browser").join(test)
}

/// A port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("address").port()
}

/// A person who can sign in: the tenant's domain (the workspace), e-mail and password.
#[derive(Debug, Clone)]
pub struct Person {
    /// The tenant's id.
    pub tenant_id: String,
    /// The tenant's domain: what the Workspace input takes.
    pub workspace: String,
    /// The person's e-mail address.
    pub email: String,
    /// The person's password.
    pub password: String,
}

impl Person {
    /// The person as scenario parameters.
    pub fn params(&self) -> Value {
        json!({ "tenantId": self.tenant_id, "workspace": self.workspace, "email": self.email, "password": self.password })
    }
}

/// A managed app registered as an OIDC client.
#[derive(Debug, Clone)]
pub struct Client {
    /// Its client id (the app id).
    pub client_id: String,
    /// Its client secret, if confidential.
    pub client_secret: Option<String>,
}

/// A Keel at `http://localhost:<port>` for one browser test.
pub struct BrowserKeel {
    /// The test's environment (database, topic, mailbox).
    pub env: TestEnv,
    /// The running Keel.
    pub keel: Running,
    /// `http://localhost:<port>`: Keel's public URL, the issuer, the pages' origin.
    pub base: String,
    /// The bootstrap operator's token.
    pub operator: String,
    /// The test's name (its output directory).
    test: String,
}

impl BrowserKeel {
    /// Starts a Keel for test `test` whose issuer is `http://localhost:<port>`. Fails (never
    /// skips) when Chromium or the scenarios' node modules are missing.
    pub async fn start(test: &str) -> Self {
        Self::start_with(test, |_| {}).await
    }

    /// Like [`BrowserKeel::start`], with `adjust` applied to the settings first.
    pub async fn start_with(test: &str, adjust: impl FnOnce(&mut keel_gateway::config::Settings)) -> Self {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: `make test` installs Debian's chromium (scripts/lib.sh ensure_browser_tests)"
        );
        assert!(
            scenarios_dir().join("node_modules/playwright-core").exists(),
            "tests/browser/node_modules is missing: `make test` runs npm ci there (scripts/lib.sh ensure_browser_tests)"
        );
        let output = output_dir(test);
        let _ = std::fs::remove_dir_all(&output);
        let env = TestEnv::new().await;
        let port = free_port();
        let base = format!("http://localhost:{port}");
        let mut settings = env.settings();
        settings.rest_addr = ([127, 0, 0, 1], port).into();
        settings.public_url = Some(base.clone());
        adjust(&mut settings);
        let keel = env.start_with(settings, Workers::ALL).await;
        let operator = env.operator_token().await;
        Self { env, keel, base, operator, test: test.to_string() }
    }

    /// Provisions a tenant; returns (tenant id, domain, owner e-mail) with the owner invited.
    pub async fn invited_owner(&self, prefix: &str) -> (String, String, String) {
        let mut tenants = tenant_client(self.keel.grpc_addr).await;
        let domain = crate::support::domain(prefix);
        let tenant = provision(&mut tenants, &self.operator, &domain).await;
        let email = format!("owner@{domain}.example.com");
        keel_tests::logs::secret(&email);
        (tenant.tenant_id, domain, email)
    }

    /// A tenant whose owner has accepted the invitation (through the JSON API) with [`PASSWORD`].
    pub async fn person(&self, prefix: &str) -> Person {
        let (tenant_id, workspace, email, _) =
            crate::support::tenant_with_owner(&self.env, &self.keel, &self.operator, prefix).await;
        Person { tenant_id, workspace, email, password: PASSWORD.to_string() }
    }

    /// The latest link to `{base}{path}?token=…` mailed to `to` (within 5 s).
    pub async fn mailed_link(&self, to: &str, path: &str) -> String {
        let start = format!("{}{path}?token=", self.base);
        let mut found = None;
        keel_tests::eventually(Duration::from_secs(5), || {
            found = mailed_links(&self.env.mailbox, to, &start).pop();
            std::future::ready(found.is_some())
        })
        .await;
        let link = found.unwrap_or_else(|| panic!("no link starting {start} mailed to {to}"));
        keel_tests::logs::secret(link.rsplit_once('=').map_or(link.as_str(), |(_, token)| token));
        link
    }

    /// Registers a managed app as an OIDC client with `keel app register` (issue 14's contract:
    /// `--redirect-uri`, `--post-logout-redirect-uri`, `--confidential`; JSON with `app_id`, and
    /// `client_secret` once when confidential).
    pub fn register_client(
        &self,
        name: &str,
        redirect_uris: &[String],
        post_logout: &[String],
        confidential: bool,
    ) -> Client {
        let mut args = vec!["app".to_string(), "register".into(), "--name".into(), name.into()];
        args.extend(["--environment".into(), "production".into()]);
        for uri in redirect_uris {
            args.extend(["--redirect-uri".into(), uri.clone()]);
        }
        for uri in post_logout {
            args.extend(["--post-logout-redirect-uri".into(), uri.clone()]);
        }
        if confidential {
            args.push("--confidential".into());
        }
        let out = keel_cli(&self.env, &args);
        let client_id = out["app_id"].as_str().unwrap_or_else(|| panic!("no app_id in {out}")).to_string();
        let client_secret = out["client_secret"].as_str().map(str::to_string);
        if let Some(secret) = &client_secret {
            keel_tests::logs::secret(secret);
        }
        assert_eq!(client_secret.is_some(), confidential, "a client secret comes with --confidential only: {out}");
        Client { client_id, client_secret }
    }

    /// Runs scenario `tests/browser/<scenario>.mjs` with `params` (plus `keel` and `outputDir`);
    /// panics unless it passes; returns its `RESULT` object.
    pub async fn pass(&self, scenario: &str, params: Value) -> Value {
        let (ok, result, stderr) = self.run(scenario, params).await;
        assert!(
            ok,
            "browser scenario {scenario} failed (screenshots in {}):\n{stderr}",
            output_dir(&self.test).display()
        );
        result
    }

    /// Runs scenario `tests/browser/<scenario>.mjs`; returns (passed, RESULT object, stderr).
    pub async fn run(&self, scenario: &str, mut params: Value) -> (bool, Value, String) {
        params["keel"] = self.base.clone().into();
        params["outputDir"] = output_dir(&self.test).display().to_string().into();
        run_node(scenario, &params).await
    }
}

/// Runs `node <scenario>.mjs` in tests/browser with `params` on stdin: (passed, RESULT, stderr).
async fn run_node(scenario: &str, params: &Value) -> (bool, Value, String) {
    let mut child = tokio::process::Command::new("node")
        .arg(format!("{scenario}.mjs"))
        .current_dir(scenarios_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node (make test installs it)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(params.to_string().as_bytes()).await.expect("write the scenario's parameters");
    drop(stdin);
    let output = tokio::time::timeout(SCENARIO_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("browser scenario {scenario} did not finish within {SCENARIO_TIMEOUT:?}"))
        .expect("node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let result = stdout
        .lines()
        .find_map(|line| line.strip_prefix("RESULT "))
        .map(|json| serde_json::from_str(json).expect("RESULT is JSON"))
        .unwrap_or(Value::Null);
    let passed = output.status.success() && !result.is_null();
    (passed, result, format!("{stderr}{stdout}"))
}

/// Every link starting with `start` in the messages mailed to `to`, oldest first.
fn mailed_links(mailbox: &Path, to: &str, start: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(mailbox) else { return Vec::new() };
    let mut messages: Vec<(std::time::SystemTime, String)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, std::fs::read_to_string(e.path()).ok()?)))
        .map(|(at, text)| (at, readable(&text)))
        .filter(|(_, text)| text.lines().any(|l| l.starts_with("To: ") && l.contains(to)))
        .collect();
    messages.sort_by_key(|(at, _)| *at);
    messages
        .iter()
        .flat_map(|(_, text)| {
            text.lines()
                .filter_map(|line| line.find(start).map(|at| &line[at..]))
                .map(|link| link.split_whitespace().next().unwrap_or_default().trim_end_matches(['.', ',', '>']))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The message as a mail client shows it: a quoted-printable body (lettre's choice for
/// lines over 76 characters, such as a link with its token) decoded.
fn readable(eml: &str) -> String {
    if !eml.to_ascii_lowercase().contains("content-transfer-encoding: quoted-printable") {
        return eml.to_string();
    }
    let joined = eml.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs the `keel` CLI (built by `make test` beside the test binaries) as the migration role;
/// returns its JSON output. Panics if it fails.
pub fn keel_cli(env: &TestEnv, args: &[String]) -> Value {
    let exe = std::env::current_exe().expect("test binary");
    let bin = exe.parent().and_then(|deps| deps.parent()).expect("target dir").join("keel");
    assert!(bin.exists(), "{} is missing: run the tests with `make test` (it builds the keel binary)", bin.display());
    let output = std::process::Command::new(&bin)
        .args(args)
        .env("KEEL_MIGRATION_DATABASE_URL", &env.owner_url)
        .env("KEEL_KEK", env.kek_setting())
        .output()
        .expect("run keel");
    keel_tests::logs::keep("keel-cli", &output.stderr);
    assert!(output.status.success(), "keel {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("JSON out")
}
