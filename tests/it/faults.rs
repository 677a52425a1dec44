//! Suite 4, faults: during a command load, Keel's own process and Postgres are each
//! killed with SIGKILL and restarted, and the broker goes away for a minute.
//!
//! The test runs every service of its own, so it can kill them without touching other
//! tests: a Postgres cluster (initdb; `fsync = off` but `synchronous_commit = on`: a killed
//! server keeps what the OS has, as in production), a tansu broker and `keel serve` as a
//! child process (`KEEL_TEST_KEEL_BIN`, default the `keel` beside the test binaries' directory).
//!
//! The broker: tansu cannot survive SIGKILL here. Its memory storage forgets the log, and its
//! sqlite storage panics after a restart ("more or less than one row" in
//! `idempotent_message_check`, when the relay's idempotent producer resumes), then answers
//! nothing. So by default the broker is reached through a TCP proxy, and the fault cuts every
//! connection and refuses new ones for `KEEL_FAULT_BROKER_DOWN_SECS` (what Keel sees of a
//! killed broker); `KEEL_FAULT_BROKER_KILL=1` kills a sqlite-backed tansu instead (ADR 0023).
//!
//! Clients retry every failed command with the same idempotency key until it is answered.
//! Afterwards: no acknowledged command is missing from the events table or the read models,
//! no command's effect is there twice, every read model equals a rebuild by `keel replay`,
//! and `keel audit verify` accepts the trail.
//!
//! Knobs: `KEEL_FAULT_COMMANDS` (default 10,000), `KEEL_FAULT_CLIENTS` (16),
//! `KEEL_FAULT_BROKER_DOWN_SECS` (60), `KEEL_FAULT_BROKER_KILL` (unset).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use keel_gateway::proto::flag_service_client::FlagServiceClient;
use keel_gateway::proto::tenant_service_client::TenantServiceClient;
use keel_gateway::proto::{ChangePlanRequest, DefineFlagRequest, SetTenantFlagRequest};
use keel_tests::{RUNTIME_ROLE, TestEnv, eventually, wait_projected};
use serde_json::{Value, json};
use tokio::sync::{Mutex, watch};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use crate::broker_outage::Proxy;
use crate::support::{authed, domain, key, provision_request, pv};

/// The number flag every `SetTenantFlag` of the load sets.
const FLAG: &str = "fault-counter";
/// Each client's tenants.
const TENANTS_PER_CLIENT: usize = 4;
/// The plans a tenant cycles through (each change differs from the current plan).
const PLANS: [&str; 3] = ["enterprise", "free", "pro"];

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port()
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs `program args…` (as the OS user postgres when we are root: the server refuses root).
fn as_pg(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// The directory of the PostgreSQL server binaries (as `scripts/postgres.sh` finds them).
fn pg_bin() -> PathBuf {
    let on_path = Command::new("sh").args(["-c", "command -v pg_ctl"]).output().ok().filter(|o| o.status.success());
    if let Some(found) = on_path {
        let path = PathBuf::from(String::from_utf8_lossy(&found.stdout).trim());
        let real = std::fs::canonicalize(&path).unwrap_or(path);
        if let Some(dir) = real.parent().filter(|d| d.join("initdb").exists()) {
            return dir.to_path_buf();
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.sort_by_key(|d| d.parent().and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok()).unwrap_or(0));
    dirs.into_iter()
        .rfind(|d| d.join("pg_ctl").exists() && d.join("initdb").exists())
        .expect("PostgreSQL server binaries (pg_ctl, initdb): run the tests with `make test`, which installs them")
}

/// A Postgres cluster of this test's own.
struct PrivatePostgres {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    admin_url: String,
}

impl PrivatePostgres {
    fn start(dir: &Path) -> Self {
        let bin = pg_bin();
        let root = dir.join("pg");
        let data = root.join("data");
        std::fs::create_dir_all(&data).expect("pg dir");
        let password = key().replace('-', "");
        let pwfile = root.join("pw");
        std::fs::write(&pwfile, &password).expect("pwfile");
        let superuser = if is_root() { "postgres".to_string() } else { whoami() };
        if is_root() {
            let chown = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&root).status();
            assert!(chown.is_ok_and(|s| s.success()), "chown the private Postgres dir");
            // The postgres user must reach the directory.
            let _ = Command::new("chmod").arg("755").arg(dir).status();
        }
        let port = free_port();
        let log = root.join("postgres.log");
        let initdb = as_pg(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", &superuser, "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8"])
            .args(["--locale=C", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run initdb");
        assert!(initdb.success(), "initdb of the private Postgres");
        let conf = [
            "listen_addresses = '127.0.0.1'".to_string(),
            format!("port = {port}"),
            "unix_socket_directories = ''".into(),
            "max_connections = 300".into(),
            // A killed server loses nothing the OS page cache holds: only commits that did
            // not wait for their WAL write (synchronous_commit = off) may be lost.
            "fsync = off".into(),
            "synchronous_commit = on".into(),
        ];
        let path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&path).expect("postgresql.conf");
        text.push_str(&format!("\n{}\n", conf.join("\n")));
        std::fs::write(&path, text).expect("postgresql.conf");
        let admin_url = format!("postgres://{superuser}:{password}@127.0.0.1:{port}/postgres");
        let pg = Self { bin, data, log, port, admin_url };
        pg.pg_ctl_start();
        pg
    }

    fn pg_ctl_start(&self) {
        let started = as_pg(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60", "start"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run pg_ctl");
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(started.success(), "private Postgres on port {} started: {log}", self.port);
    }

    /// The postmaster's pid (its process group holds every server process).
    fn postmaster(&self) -> Option<i32> {
        std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?.lines().next()?.trim().parse().ok()
    }

    /// SIGKILL to every server process, then waits until they are gone.
    async fn kill(&self) {
        let pid = self.postmaster().expect("postmaster.pid");
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
        let gone = eventually(Duration::from_secs(30), || async {
            !Command::new("kill")
                .args(["-0", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .await;
        assert!(gone, "the killed Postgres processes are gone");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = as_pg(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn whoami() -> String {
    Command::new("id").arg("-un").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).expect("id")
}

/// A tansu broker of this test's own, behind a proxy the test can cut; with `kill`, storing
/// its log in sqlite under `dir` so that it can be killed and restarted instead.
struct PrivateBroker {
    dir: PathBuf,
    port: u16,
    proxy_port: u16,
    kill: bool,
    child: Option<Child>,
    proxy: Option<Proxy>,
}

impl PrivateBroker {
    async fn start(dir: &Path, kill: bool) -> Self {
        let dir = dir.join("broker");
        std::fs::create_dir_all(&dir).expect("broker dir");
        let port = free_port();
        let proxy_port = if kill { port } else { free_port() };
        let mut broker = Self { dir, port, proxy_port, kill, child: None, proxy: None };
        broker.spawn().await;
        if !kill {
            broker.proxy = Some(Proxy::start(proxy_port, port).await);
        }
        broker
    }

    async fn spawn(&mut self) {
        let bin = std::env::var("KEEL_TANSU_BIN").expect("KEEL_TANSU_BIN is not set: run the tests with `make test`");
        let (url, advertised) =
            (format!("tcp://127.0.0.1:{}", self.port), format!("tcp://127.0.0.1:{}", self.proxy_port));
        let storage = if self.kill { "sqlite://broker.db" } else { "memory://tansu/" };
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("broker.log")).expect("log");
        let child = Command::new(bin)
            .current_dir(&self.dir)
            .args(["broker", "--cluster-id", "keel-it-faults", "--listener-url", &url])
            .args(["--advertised-listener-url", &advertised, "--storage-engine", storage])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let port = self.port;
        let up = eventually(Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        assert!(up, "private broker listens on {port}");
    }

    /// Takes the broker away: SIGKILL, or every connection cut and new ones refused.
    async fn down(&mut self) {
        if self.kill {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        } else if let Some(proxy) = self.proxy.take() {
            proxy.cut().await;
        }
    }

    /// Brings it back.
    async fn up(&mut self) {
        if self.kill {
            self.spawn().await;
        } else {
            self.proxy = Some(Proxy::start(self.proxy_port, self.port).await);
        }
    }

    /// Where clients connect.
    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.proxy_port)
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `keel` binary: `KEEL_TEST_KEEL_BIN`, or the one beside the test binaries' directory.
fn keel_bin() -> PathBuf {
    let bin = std::env::var_os("KEEL_TEST_KEEL_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let exe = std::env::current_exe().expect("test binary");
        exe.parent().and_then(|deps| deps.parent()).expect("target dir").join("keel")
    });
    assert!(bin.exists(), "{} is missing: run the tests with `make test` or set KEEL_TEST_KEEL_BIN", bin.display());
    bin
}

/// `keel serve` as a child process on fixed ports (clients reconnect after a restart).
struct KeelProcess {
    env: TestEnv,
    log: PathBuf,
    rest_port: u16,
    grpc_port: u16,
    child: Option<Child>,
}

impl KeelProcess {
    async fn start(env: &TestEnv, dir: &Path) -> Self {
        let mut keel = Self {
            env: env.clone(),
            log: dir.join("keel.log"),
            rest_port: free_port(),
            grpc_port: free_port(),
            child: None,
        };
        keel.restart().await;
        keel
    }

    async fn restart(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("keel log");
        let env = &self.env;
        let child = Command::new(keel_bin())
            .arg("serve")
            .env("KEEL_STATE_DIR", "/nonexistent")
            .env_remove("KEEL_MIGRATION_DATABASE_URL")
            .env("KEEL_DATABASE_URL", &env.app_url)
            .env("KEEL_KEK", env.kek_setting())
            .env("KEEL_KAFKA_BROKERS", &env.brokers)
            .env("KEEL_EVENTS_TOPIC", &env.topic)
            .env("KEEL_BILLING_TOPIC", env.billing_topic())
            .env("KEEL_KAFKA_PARTITIONS", env.partitions.to_string())
            .env("KEEL_REST_ADDR", format!("127.0.0.1:{}", self.rest_port))
            .env("KEEL_GRPC_ADDR", format!("127.0.0.1:{}", self.grpc_port))
            .env("KEEL_KAFKA_SESSION_TIMEOUT_MS", "3000")
            .env("KEEL_MAILBOX_DIR", &env.mailbox)
            .env("KEEL_AUDIT_CHECKPOINT_SECONDS", "5")
            .env("KEEL_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("run keel serve");
        self.child = Some(child);
        let (http, url) = (reqwest::Client::new(), format!("http://127.0.0.1:{}/readyz", self.rest_port));
        let ready = eventually(Duration::from_secs(60), || async {
            http.get(&url).send().await.is_ok_and(|r| r.status().is_success())
        })
        .await;
        assert!(ready, "keel became ready (log {})", self.log.display());
    }

    /// SIGKILL.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Panics if the process ended by itself.
    fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("keel started");
        let status = child.try_wait().expect("wait");
        assert!(status.is_none(), "keel exited by itself ({status:?}); log {}", self.log.display());
    }

    fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    fn rest_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.rest_port)
    }
}

impl Drop for KeelProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One command of the load.
#[derive(Debug, Clone)]
enum Kind {
    /// Provision the client's tenant number `slot`.
    Provision { slot: usize, domain: String },
    /// Change tenant `slot`'s plan.
    ChangePlan { slot: usize, plan: &'static str },
    /// Set tenant `slot`'s counter flag to `value`.
    SetFlag { slot: usize, value: i64 },
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// Succeeded: the position of its last event.
    Acked(i64),
    /// A retry was refused by a precondition (its first attempt had done it).
    Refused(String),
}

#[derive(Debug, Clone)]
struct Outcome {
    key: String,
    kind: Kind,
    tenant_id: String,
    answer: Answer,
}

/// An event a command wrote: (aggregate type, aggregate id, event type).
type Effect = (String, String, String);

/// What the clients share.
struct Load {
    url: String,
    token: String,
    /// How many of its commands each client may run so far.
    released: watch::Receiver<usize>,
    answered: AtomicUsize,
    retries: Mutex<BTreeMap<String, usize>>,
    outcomes: Mutex<Vec<Outcome>>,
}

fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Aborted
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal
            | Code::ResourceExhausted
    )
}

/// Client `client`'s commands: provision its tenants, then alternate plan changes and flag
/// values over them.
fn commands_of(client: usize, count: usize) -> Vec<(String, Kind)> {
    (0..count)
        .map(|k| {
            let slot = k % TENANTS_PER_CLIENT;
            let kind = if k < TENANTS_PER_CLIENT {
                Kind::Provision { slot, domain: domain(&format!("fault{client}x{slot}")) }
            } else if (k / TENANTS_PER_CLIENT) % 2 == 1 {
                let changes = (k / TENANTS_PER_CLIENT) / 2;
                Kind::ChangePlan { slot, plan: PLANS[changes % PLANS.len()] }
            } else {
                Kind::SetFlag { slot, value: (client * 1_000_000 + k) as i64 }
            };
            (key(), kind)
        })
        .collect()
}

async fn client(load: Arc<Load>, commands: Vec<(String, Kind)>) {
    let channel: Channel = Endpoint::from_shared(load.url.clone())
        .expect("url")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(20))
        .connect_lazy();
    let mut tenants = TenantServiceClient::new(channel.clone());
    let mut flags = FlagServiceClient::new(channel);
    let mut ids: Vec<String> = Vec::new();
    let mut released = load.released.clone();
    for (k, (key, kind)) in commands.into_iter().enumerate() {
        released.wait_for(|r| k < *r).await.expect("load driver");
        let mut pause = Duration::from_millis(50);
        let answer = loop {
            let sent = match &kind {
                Kind::Provision { domain, .. } => {
                    let request = keel_gateway::proto::ProvisionTenantRequest {
                        idempotency_key: key.clone(),
                        ..provision_request(domain)
                    };
                    tenants.provision_tenant(authed(request, &load.token)).await.map(|r| {
                        let r = r.into_inner();
                        (Some(r.tenant_id), r.position)
                    })
                }
                Kind::ChangePlan { slot, plan } => {
                    let request = ChangePlanRequest {
                        tenant_id: ids[*slot].clone(),
                        plan: plan.to_string(),
                        idempotency_key: key.clone(),
                    };
                    tenants.change_plan(authed(request, &load.token)).await.map(|r| (None, r.into_inner().position))
                }
                Kind::SetFlag { slot, value } => {
                    let request = SetTenantFlagRequest {
                        tenant_id: ids[*slot].clone(),
                        key: FLAG.into(),
                        value: Some(pv(json!(value))),
                        idempotency_key: key.clone(),
                    };
                    flags.set_tenant_flag(authed(request, &load.token)).await.map(|r| (None, r.into_inner().position))
                }
            };
            match sent {
                Ok((tenant, position)) => {
                    if let Some(tenant) = tenant {
                        ids.push(tenant);
                    }
                    break Answer::Acked(position);
                }
                Err(status) if transient(status.code()) => {
                    *load.retries.lock().await.entry(format!("{:?}", status.code())).or_default() += 1;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(status) if status.code() == Code::FailedPrecondition && !matches!(kind, Kind::Provision { .. }) => {
                    break Answer::Refused(crate::support::error_code(&status));
                }
                Err(status) => panic!("{kind:?} (key {key}) refused: {status:?}"),
            }
        };
        let slot = match &kind {
            Kind::Provision { slot, .. } | Kind::ChangePlan { slot, .. } | Kind::SetFlag { slot, .. } => *slot,
        };
        let outcome = Outcome { key, tenant_id: ids[slot].clone(), kind, answer };
        load.outcomes.lock().await.push(outcome);
        load.answered.fetch_add(1, Ordering::Relaxed);
    }
}

/// Waits until `count` commands are answered.
async fn answered(load: &Load, count: usize, what: &str) {
    let reached =
        eventually(Duration::from_secs(180), || std::future::ready(load.answered.load(Ordering::Relaxed) >= count))
            .await;
    assert!(reached, "{what}: only {} of {count} commands answered", load.answered.load(Ordering::Relaxed));
}

/// Every table of every read model, as sorted JSON rows; but the runtime's bookkeeping, which
/// depends on how messages fell into batches: offsets, dead letters (none here) and per-tenant
/// marks (a live projector stores no mark for a batch it ignores whole; a rebuild's batches differ).
async fn read_models(owner: &sqlx::PgPool) -> BTreeMap<String, String> {
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema::text, table_name::text FROM information_schema.tables
         WHERE table_schema LIKE 'rm\\_%' AND table_schema NOT LIKE '%\\_\\_%'
           AND table_name NOT IN ('_offsets', '_parked', '_applied') AND table_type = 'BASE TABLE'",
    )
    .fetch_all(owner)
    .await
    .expect("tables");
    let mut shown = BTreeMap::new();
    for (schema, table) in tables {
        let rows: String = sqlx::query_scalar(&format!(
            "SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY to_jsonb(t)::text), '[]')::text FROM {schema}.{table} t"
        ))
        .fetch_one(owner)
        .await
        .expect("rows");
        shown.insert(format!("{schema}.{table}"), rows);
    }
    shown
}

/// Runs `keel args…` against the test's database and broker: (success, stdout, stderr).
async fn keel_cli(env: &TestEnv, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(keel_bin())
        .args(args)
        .env("KEEL_STATE_DIR", "/nonexistent")
        .env_remove("KEEL_DATABASE_URL")
        .env("KEEL_MIGRATION_DATABASE_URL", &env.owner_url)
        .env("KEEL_KEK", env.kek_setting())
        .env("KEEL_RUNTIME_ROLE", RUNTIME_ROLE)
        .env("KEEL_KAFKA_BROKERS", &env.brokers)
        .env("KEEL_EVENTS_TOPIC", &env.topic)
        .output()
        .await
        .expect("run keel");
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status.success(), text(output.stdout), text(output.stderr))
}

async fn max_position(owner: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events").fetch_one(owner).await.expect("max position")
}

#[tokio::test]
async fn no_acknowledged_command_is_lost_or_doubled_when_keel_postgres_and_the_broker_fail() {
    let started = Instant::now();
    let total = knob("KEEL_FAULT_COMMANDS", 10_000);
    let clients = knob("KEEL_FAULT_CLIENTS", 16).max(1);
    let broker_down = Duration::from_secs(knob("KEEL_FAULT_BROKER_DOWN_SECS", 60) as u64);
    let per_client = (total / clients).max(TENANTS_PER_CLIENT + 2);
    let dir = std::env::temp_dir().join(format!("keel-faults-{}", key()));
    std::fs::create_dir_all(&dir).expect("dir");

    let pg = PrivatePostgres::start(&dir);
    let broker_kill = std::env::var_os("KEEL_FAULT_BROKER_KILL").is_some_and(|v| !v.is_empty() && v != "0");
    let mut broker = PrivateBroker::start(&dir, broker_kill).await;
    let env = TestEnv::on(&pg.admin_url, &broker.brokers(), 4).await;
    let owner = env.owner_pool().await;
    let token = env.operator_token().await;
    let mut keel = KeelProcess::start(&env, &dir).await;
    let channel = Endpoint::from_shared(keel.grpc_url()).expect("url").connect().await.expect("connect");
    let define = DefineFlagRequest {
        key: FLAG.into(),
        r#type: "number".into(),
        default_value: Some(pv(json!(0))),
        plan_defaults: Default::default(),
        description: "counts the fault suite's commands".into(),
        idempotency_key: key(),
    };
    FlagServiceClient::new(channel).define_flag(authed(define, &token)).await.expect("define flag");

    // The load, released a quarter at a time: each fault strikes halfway through a quarter.
    let (release, released) = watch::channel(0usize);
    let load = Arc::new(Load {
        url: keel.grpc_url(),
        token: token.clone(),
        released,
        answered: AtomicUsize::new(0),
        retries: Mutex::new(BTreeMap::new()),
        outcomes: Mutex::new(Vec::new()),
    });
    let mut running = tokio::task::JoinSet::new();
    for c in 0..clients {
        running.spawn(client(load.clone(), commands_of(c, per_client)));
    }
    let sent = per_client * clients;
    let quarter = |q: usize| per_client * q / 4;
    let halfway = |q: usize| clients * (quarter(q - 1) + quarter(q)) / 2;
    let mut faults = Vec::new();

    release.send_replace(quarter(1));
    answered(&load, halfway(1), "before killing keel").await;
    keel.kill();
    faults.push(format!("keel killed at {} answered ({:?})", load.answered.load(Ordering::Relaxed), started.elapsed()));
    eprintln!("fault suite: {}", faults.last().expect("fault"));
    keel.restart().await;

    release.send_replace(quarter(2));
    answered(&load, halfway(2), "before killing the broker").await;
    broker.down().await;
    let at_outage = load.answered.load(Ordering::Relaxed);
    let how = if broker_kill { "killed" } else { "cut off" };
    faults.push(format!("broker {how} at {at_outage} answered, down {broker_down:?} ({:?})", started.elapsed()));
    eprintln!("fault suite: {}", faults.last().expect("fault"));
    release.send_replace(quarter(3));
    tokio::time::sleep(broker_down).await;
    let during_outage = load.answered.load(Ordering::Relaxed) - at_outage;
    keel.assert_running();
    assert!(during_outage > 0, "commands are accepted while the broker is down");
    broker.up().await;

    answered(&load, halfway(3), "before killing Postgres").await;
    pg.kill().await;
    faults.push(format!(
        "postgres killed at {} answered ({:?})",
        load.answered.load(Ordering::Relaxed),
        started.elapsed()
    ));
    eprintln!("fault suite: {}", faults.last().expect("fault"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.pg_ctl_start();

    release.send_replace(per_client);
    answered(&load, sent, "after the faults").await;
    while let Some(done) = running.join_next().await {
        done.expect("a client failed");
    }
    keel.assert_running();
    let load_done = started.elapsed();

    // Everything reaches every read model (the relay and projectors recovered).
    let models = keel_projections::registry::names();
    let mut last = max_position(&owner).await;
    for _ in 0..3 {
        for model in &models {
            wait_projected(&owner, model, &env.topic, last, Duration::from_secs(120)).await;
        }
        // Keel keeps signing audit checkpoints: stop it, then make sure nothing came after.
        keel.kill();
        let now = max_position(&owner).await;
        if now == last {
            break;
        }
        last = now;
        keel.restart().await;
    }
    assert_eq!(max_position(&owner).await, last, "keel stopped with every event projected");

    // Lost and doubled, from the events table: each key's events, by aggregate and type.
    let outcomes = load.outcomes.lock().await.clone();
    assert_eq!(outcomes.len(), sent);
    // Each attempt is audited on its own, so the audit trail's records are left out here.
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT metadata->>'idempotency_key', aggregate_type, aggregate_id, event_type FROM events
         WHERE metadata ? 'idempotency_key' AND aggregate_type <> 'audit'",
    )
    .fetch_all(&owner)
    .await
    .expect("events");
    let mut by_key: HashMap<String, Vec<Effect>> = HashMap::new();
    for (key, kind, id, event) in rows {
        by_key.entry(key).or_default().push((kind, id, event));
    }
    let acked: Vec<&Outcome> = outcomes.iter().filter(|o| matches!(o.answer, Answer::Acked(_))).collect();
    let refused: Vec<&Outcome> = outcomes.iter().filter(|o| matches!(o.answer, Answer::Refused(_))).collect();
    let lost: Vec<&Outcome> = acked.iter().copied().filter(|o| !by_key.contains_key(&o.key)).collect();
    let doubled: Vec<(&String, &Vec<Effect>)> =
        by_key.iter().filter(|(_, events)| events.iter().collect::<HashSet<_>>().len() < events.len()).collect();
    // A refused retry is one whose first attempt did it: its effect must be there (once).
    let refused_without_effect: Vec<&Outcome> =
        refused.iter().copied().filter(|o| !by_key.contains_key(&o.key)).collect();
    let retries = load.retries.lock().await.clone();
    eprintln!(
        "fault suite: {sent} commands sent, {} acknowledged, {} refused as repeats {:?}, {} lost, {} doubled; \
         retries {retries:?}; {} answered while the broker was down; faults: {faults:?}; load took {load_done:?}",
        acked.len(),
        refused.len(),
        refused.iter().map(|o| &o.answer).collect::<Vec<_>>(),
        lost.len(),
        doubled.len(),
        during_outage,
    );
    assert!(lost.is_empty(), "acknowledged but not in the events table: {lost:?}");
    assert!(doubled.is_empty(), "effects doubled: {doubled:?}");
    assert!(refused_without_effect.is_empty(), "refused without an earlier effect: {refused_without_effect:?}");

    // Each tenant's read-model state is its last command's.
    let mut plans: HashMap<&str, &str> = HashMap::new();
    let mut values: HashMap<&str, i64> = HashMap::new();
    for outcome in &outcomes {
        match &outcome.kind {
            Kind::Provision { .. } => {
                plans.insert(&outcome.tenant_id, "pro");
            }
            Kind::ChangePlan { plan, .. } => {
                plans.insert(&outcome.tenant_id, plan);
            }
            Kind::SetFlag { value, .. } => {
                values.insert(&outcome.tenant_id, *value);
            }
        }
    }
    let registry: HashMap<String, String> =
        sqlx::query_as::<_, (String, String)>("SELECT tenant_id, plan FROM rm_tenant_registry.tenants")
            .fetch_all(&owner)
            .await
            .expect("registry")
            .into_iter()
            .collect();
    assert_eq!(registry.len(), clients * TENANTS_PER_CLIENT, "one tenant per provisioning");
    for (tenant, plan) in &plans {
        assert_eq!(registry.get(*tenant).map(String::as_str), Some(*plan), "tenant {tenant}'s plan");
    }
    let flag_values: HashMap<String, Value> =
        sqlx::query_as::<_, (String, Value)>("SELECT tenant_id, flag_values->$1 FROM rm_flag_snapshots.tenant_flags")
            .bind(FLAG)
            .fetch_all(&owner)
            .await
            .expect("flags")
            .into_iter()
            .collect();
    for (tenant, value) in &values {
        let shown = flag_values.get(*tenant).cloned().unwrap_or_default();
        assert_eq!(shown.as_f64(), Some(*value as f64), "tenant {tenant}'s flag: {shown}");
    }
    let parked: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM rm_tenant_registry._parked) + (SELECT count(*) FROM rm_flag_snapshots._parked)
              + (SELECT count(*) FROM rm_audit_trail._parked) + (SELECT count(*) FROM rm_routing._parked)
              + (SELECT count(*) FROM rm_billing_ledger._parked) + (SELECT count(*) FROM rm_billing_rollups._parked)",
    )
    .fetch_one(&owner)
    .await
    .expect("parked");
    assert_eq!(parked, 0, "no event parked");

    // Every read model equals a clean rebuild by `keel replay`.
    let live = read_models(&owner).await;
    assert!(live.len() >= models.len(), "{:?}", live.keys());
    for model in &models {
        let (ok, out, err) = keel_cli(&env, &["replay", model]).await;
        assert!(ok, "keel replay {model}: {out} {err}");
    }
    let rebuilt = read_models(&owner).await;
    for (table, rows) in &live {
        assert!(rebuilt.get(table) == Some(rows), "{table} differs from its rebuild by keel replay");
    }
    assert_eq!(live.len(), rebuilt.len());

    // The audit trail verifies.
    keel.restart().await;
    let keys = reqwest::get(keel.rest_url("/v1/audit/keys")).await.expect("GET keys").text().await.expect("keys");
    keel.kill();
    let keys_file = dir.join("keys.json");
    std::fs::write(&keys_file, keys).expect("keys");
    let (ok, out, err) = keel_cli(&env, &["audit", "verify", "--keys", keys_file.to_str().expect("UTF-8")]).await;
    assert!(ok, "keel audit verify: {out} {err}");
    let report: Value = serde_json::from_str(&out).expect("verify report");
    assert!(report["records"].as_u64().unwrap_or(0) >= acked.len() as u64, "{report}");
    eprintln!(
        "fault suite: 3 faults survived (keel killed, broker down {broker_down:?}, postgres killed); read models equal their replay; \
         audit verify: {report}; total {:?}",
        started.elapsed()
    );
    owner.close().await;
    drop(keel);
    drop(broker);
    drop(pg);
    let _ = std::fs::remove_dir_all(&dir);
}
