//! What the benchmarks share: the release `keel` binary run as its own process on a
//! test environment, and latency statistics.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{TestEnv, eventually};

/// A `keel serve` child process; killed when dropped.
pub struct Keel {
    child: Child,
    /// Its REST port.
    pub rest_port: u16,
    /// Its gRPC port.
    pub grpc_port: u16,
}

impl Drop for Keel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Keel {
    /// Starts `target/release/keel serve` on `env` (a Postgres connection budget of `pool_size`) and
    /// waits until it is ready. Mail goes to the environment's mailbox.
    pub async fn start(env: &TestEnv, pool_size: &str) -> Self {
        let (rest_port, grpc_port) = (free_port(), free_port());
        // KEEL_BENCH_BINARY runs another build (e.g. an experiment) against the same bench.
        let binary = std::env::var_os("KEEL_BENCH_BINARY")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/keel"));
        let child = Command::new(&binary)
            .arg("serve")
            .env("KEEL_DATABASE_URL", &env.app_url)
            .env("KEEL_KEK", env.kek_setting())
            .env("KEEL_KAFKA_BROKERS", &env.brokers)
            .env("KEEL_EVENTS_TOPIC", &env.topic)
            .env("KEEL_BILLING_TOPIC", env.billing_topic())
            .env("KEEL_KAFKA_PARTITIONS", env.partitions.to_string())
            .env("KEEL_REST_ADDR", format!("127.0.0.1:{rest_port}"))
            .env("KEEL_GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
            .env("KEEL_KAFKA_SESSION_TIMEOUT_MS", "3000")
            .env("KEEL_DB_MAX_CONNECTIONS", pool_size)
            .env("KEEL_MAILBOX_DIR", &env.mailbox)
            .env("KEEL_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("run {} (build it with `cargo build --release -p keel-gateway`): {e}", binary.display())
            });
        let keel = Self { child, rest_port, grpc_port };
        let http = reqwest::Client::new();
        let ready = eventually(Duration::from_secs(60), || async {
            http.get(format!("http://127.0.0.1:{rest_port}/readyz")).send().await.is_ok_and(|r| r.status().is_success())
        })
        .await;
        assert!(ready, "keel became ready");
        keel
    }

    /// A line of `/proc/<pid>/status` (e.g. `VmHWM`) in MiB.
    pub fn memory_mib(&self, field: &str) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with(field)).map(str::to_string))
            .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
            .unwrap_or(0.0)
            / 1024.0
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its peak resident memory (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
            .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
            .unwrap_or(0.0)
            / 1024.0
    }
}

/// Switches the test Postgres to durable commits (`fsync`, `synchronous_commit`), as in production.
pub async fn durable_commits(owner: &sqlx::PgPool) {
    for setting in
        ["ALTER SYSTEM SET fsync = on", "ALTER SYSTEM SET synchronous_commit = on", "SELECT pg_reload_conf()"]
    {
        sqlx::query(setting).execute(owner).await.expect("durable commits");
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port()
}

/// The `p` quantile (0..=1) of sorted latencies.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// `message` with `authorization: Bearer <token>`.
pub fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    crate::logs::secret(token);
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    request
}

/// Drops a run's database and topics (benchmarks write gigabytes).
pub async fn drop_run(env: &TestEnv) {
    let db = env.owner_url.rsplit_once('/').expect("database").1.to_string();
    if let Ok(admin_url) = std::env::var("KEEL_TEST_DATABASE_URL")
        && let Ok(admin) = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&admin_url).await
    {
        if let Err(err) = sqlx::raw_sql(&format!("DROP DATABASE {db} WITH (FORCE)")).execute(&admin).await {
            eprintln!("drop database {db}: {err}");
        }
        admin.close().await;
    }
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: Result<AdminClient<DefaultClientContext>, _> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &env.brokers).create();
    if let Ok(admin) = admin {
        let billing = env.billing_topic();
        let _ = admin.delete_topics(&[env.topic.as_str(), billing.as_str()], &AdminOptions::new()).await;
    }
}

/// Which way a figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// A rate: more is better.
    Higher,
    /// A latency or a memory size: less is better.
    Lower,
}

/// Records a figure for `make bench`'s closing table (`scripts/bench-table.py`, beside
/// `tests/benches/baseline.tsv`): one line appended to the file `KEEL_BENCH_FIGURES`
/// names, if it is set.
pub fn figure(name: &str, value: f64, unit: &str, better: Better) {
    use std::io::Write;
    let Some(path) = std::env::var_os("KEEL_BENCH_FIGURES") else { return };
    let better = match better {
        Better::Higher => "higher",
        Better::Lower => "lower",
    };
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("the figures file");
    writeln!(file, "{name}\t{value:.2}\t{unit}\t{better}").expect("write a figure");
}

/// Milliseconds as a number.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
