//! Test support: an isolated database and topic per test on the services that
//! `make test` starts, and a Keel running in-process on ephemeral ports.
//!
//! A test that needs Postgres or Kafka fails (never skips) when they are missing.

use std::time::Duration;

pub mod bench;
pub mod logs;

use sha2::{Digest, Sha256};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use keel_gateway::config::Settings;
use keel_gateway::server::{self, Running, Workers};
use keel_projections::tenant_registry::TenantRegistry;

/// The runtime role tests connect as (row-level security applies to it).
pub const RUNTIME_ROLE: &str = "keel_it_app";

/// One test's database and topic.
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// Superuser URL of the test's own database (stands in for the migration role).
    pub owner_url: String,
    /// Runtime-role URL of the test's database.
    pub app_url: String,
    /// Broker address.
    pub brokers: String,
    /// The test's own event topic.
    pub topic: String,
    /// Partitions of that topic.
    pub partitions: i32,
    /// The test's own mailbox directory (one `.eml` file per message Keel sends).
    pub mailbox: std::path::PathBuf,
    /// The test's key-encryption key file (32 bytes, mode 600, in its own temp dir; ADR 0028).
    pub kek_file: std::path::PathBuf,
}

fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests with `make test`, which starts Postgres and the broker")
    })
}

fn with_database(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("database URL has a path");
    format!("{base}/{db}")
}

impl TestEnv {
    /// A fresh database (migrated) and topic on the test services.
    pub async fn new() -> Self {
        Self::with_partitions(4).await
    }

    /// Like [`TestEnv::new`] with `partitions` partitions.
    pub async fn with_partitions(partitions: i32) -> Self {
        Self::on(&required("KEEL_TEST_DATABASE_URL"), &required("KEEL_TEST_KAFKA_BROKERS"), partitions).await
    }

    /// Like [`TestEnv::with_partitions`] on other services: the Postgres whose superuser
    /// URL is `admin_url` and the broker at `brokers` (e.g. private ones a test may kill).
    pub async fn on(admin_url: &str, brokers: &str, partitions: i32) -> Self {
        logs::init();
        let (admin_url, brokers) = (admin_url.to_string(), brokers.to_string());
        let admin =
            PgPoolOptions::new().max_connections(1).connect(&admin_url).await.expect("connect to test Postgres");
        let password = hex::encode(Sha256::digest(format!("{admin_url}/{RUNTIME_ROLE}").as_bytes()));
        sqlx::raw_sql(&format!(
            "DO $$ BEGIN
                 CREATE ROLE {RUNTIME_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '{password}';
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
             END $$"
        ))
        .execute(&admin)
        .await
        .expect("create runtime role");
        let db = format!("keel_it_{}", uuid::Uuid::new_v4().simple());
        sqlx::raw_sql(&format!("CREATE DATABASE {db}")).execute(&admin).await.expect("create test database");
        admin.close().await;

        let owner_url = with_database(&admin_url, &db);
        let app_url = {
            let (_, rest) = admin_url.split_once('@').expect("URL has credentials");
            with_database(&format!("postgres://{RUNTIME_ROLE}:{password}@{rest}"), &db)
        };
        let owner = PgPoolOptions::new().max_connections(2).connect(&owner_url).await.expect("connect as owner");
        sqlx::raw_sql(&format!("GRANT CONNECT, TEMP ON DATABASE {db} TO {RUNTIME_ROLE}"))
            .execute(&owner)
            .await
            .expect("grant");
        keel_commands::migrate::run(&owner, keel_commands::migrate::MIGRATIONS, RUNTIME_ROLE).await.expect("migrate");
        keel_projections::ensure_schemas(&owner, RUNTIME_ROLE).await.expect("read model schemas");
        owner.close().await;

        let topic = format!("keel.events.it.{}", uuid::Uuid::new_v4().simple());
        let billing = format!("{topic}.billing");
        keel_commands::kafka::ensure_topics(&brokers, &[&topic, &billing], partitions).await.expect("create topics");
        let mailbox = std::env::temp_dir().join(format!("keel-it-mail-{}", uuid::Uuid::new_v4().simple()));
        let kek_dir = std::env::temp_dir().join(format!("keel-it-kek-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&kek_dir).expect("KEK directory");
        let kek_file = kek_dir.join("kek");
        keel_commands::kek::LocalKeyFile::create(&kek_file).expect("KEK file");
        Self { owner_url, app_url, brokers, topic, partitions, mailbox, kek_file }
    }

    /// Settings for a Keel on this environment, on ephemeral ports.
    pub fn settings(&self) -> Settings {
        let mut settings = Settings::new(&self.app_url, &self.brokers);
        settings.rest_addr = ([127, 0, 0, 1], 0).into();
        settings.grpc_addr = ([127, 0, 0, 1], 0).into();
        settings.events_topic = self.topic.clone();
        settings.billing_topic = self.billing_topic();
        settings.partitions = self.partitions;
        settings.session_timeout_ms = 3000;
        settings.limits.db_max_connections = 28;
        // Generous: tests share two cores with a heavy neighbour now and then.
        settings.min_position_wait_ms = 30_000;
        settings.mailbox_dir = self.mailbox.clone();
        settings.audit_checkpoint_seconds = 1;
        settings.kek = keel_gateway::config::KekSettings::file(&self.kek_file);
        settings
    }

    /// `KEEL_KEK` for a `keel` child process of this environment.
    pub fn kek_setting(&self) -> String {
        format!("file:{}", self.kek_file.display())
    }

    /// The test's key-encryption key.
    pub fn kek(&self) -> keel_commands::kek::Kek {
        keel_gateway::config::KekSettings::file(&self.kek_file).open().expect("open the KEK")
    }

    /// The test's own billing topic (`keel.billing.v1` in production).
    pub fn billing_topic(&self) -> String {
        format!("{}.billing", self.topic)
    }

    /// The tokens starting with `prefix` in the messages sent to `to`, oldest message first.
    pub fn mailed_tokens(&self, to: &str, prefix: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.mailbox) else { return Vec::new() };
        let mut messages: Vec<(std::time::SystemTime, String)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, std::fs::read_to_string(e.path()).ok()?)))
            .filter(|(_, text)| text.lines().any(|l| l.starts_with("To: ") && l.contains(to)))
            .collect();
        messages.sort_by_key(|(at, _)| *at);
        messages
            .iter()
            .flat_map(|(_, text)| text.lines().filter(|l| l.starts_with(prefix)).map(|l| l.trim().to_string()))
            .inspect(|token| logs::secret(token))
            .collect()
    }

    /// The latest token starting with `prefix` mailed to `to`; panics if none arrives within 5 s.
    pub async fn mailed_token(&self, to: &str, prefix: &str) -> String {
        let mut found = None;
        eventually(Duration::from_secs(5), || {
            found = self.mailed_tokens(to, prefix).pop();
            std::future::ready(found.is_some())
        })
        .await;
        found.unwrap_or_else(|| panic!("no {prefix}… token mailed to {to}"))
    }

    /// Creates a platform user (what `keel operator create` does) and returns its id.
    pub async fn platform_user(&self, email: &str, password: &str, role: &str) -> String {
        logs::secret(email);
        logs::secret(password);
        let owner = self.owner_pool().await;
        let id = keel_gateway::auth::create_platform_user(&owner, email, password, role).await.expect("platform user");
        owner.close().await;
        id
    }

    /// Starts a Keel with every worker.
    pub async fn start(&self) -> Running {
        self.start_with(self.settings(), Workers::ALL).await
    }

    /// Starts a Keel that keeps no aggregate in memory, for a test that ages tokens by
    /// rewriting events behind Keel's back (a running Keel trusts the events it
    /// committed itself: ADR 0029).
    pub async fn start_reading_every_aggregate(&self) -> Running {
        let mut settings = self.settings();
        settings.limits.aggregate_cache_entries = 0;
        self.start_with(settings, Workers::ALL).await
    }

    /// Starts a Keel with `settings` and `workers`.
    pub async fn start_with(&self, settings: Settings, workers: Workers) -> Running {
        server::start(settings, workers).await.expect("start keel")
    }

    /// A pool of the migration role (bypasses row-level security).
    pub async fn owner_pool(&self) -> PgPool {
        PgPoolOptions::new().max_connections(4).connect(&self.owner_url).await.expect("connect as owner")
    }

    /// A pool of the runtime role.
    pub async fn app_pool(&self) -> PgPool {
        PgPoolOptions::new().max_connections(4).connect(&self.app_url).await.expect("connect as runtime role")
    }

    /// Rebuilds the tenant registry from offset 0 and swaps it in (what `keel replay` does).
    pub async fn rebuild_registry(&self) -> keel_projections::replay::ReplayReport {
        let owner = self.owner_pool().await;
        let settings =
            keel_projections::kafka::ConsumerSettings { brokers: self.brokers.clone(), session_timeout_ms: 3000 };
        let hidden = indicatif::ProgressBar::hidden();
        let report =
            keel_projections::replay::replay(&TenantRegistry, &owner, &settings, &self.topic, RUNTIME_ROLE, &hidden)
                .await
                .expect("replay");
        owner.close().await;
        report
    }

    /// Creates the bootstrap operator credential and returns the token.
    pub async fn operator_token(&self) -> String {
        let owner = self.owner_pool().await;
        let token =
            keel_gateway::auth::create_bootstrap_credential(&owner).await.expect("credential").expect("new credential");
        owner.close().await;
        logs::secret(&token);
        token
    }
}

/// Polls `check` every 20 ms until it is true or `timeout` passes; returns whether it became true.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until read model `name` has passed `position`; panics after `timeout`.
pub async fn wait_projected(pool: &PgPool, name: &str, topic: &str, position: i64, timeout: Duration) {
    let passed = eventually(timeout, || async {
        matches!(
            keel_gateway::rest::extract::has_passed(pool, name, topic, position).await,
            Ok(keel_gateway::rest::extract::Progress::Passed)
        )
    })
    .await;
    assert!(passed, "read model {name} did not reach position {position} within {timeout:?}");
}
