//! Settings of `keel serve`, all from the environment (or flags).

use std::net::SocketAddr;
use std::time::Duration;

/// Everything a running Keel needs.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Postgres URL of the runtime role (row-level security applies to it).
    #[arg(long, env = "KEEL_DATABASE_URL")]
    pub database_url: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KEEL_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// Where the REST query API listens.
    #[arg(long, env = "KEEL_REST_ADDR", default_value = "127.0.0.1:8080")]
    pub rest_addr: SocketAddr,
    /// Where the gRPC command API listens.
    #[arg(long, env = "KEEL_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// The event topic.
    #[arg(long, env = "KEEL_EVENTS_TOPIC", default_value = "keel.events")]
    pub events_topic: String,
    /// Partitions of the event topic when Keel creates it.
    #[arg(long, env = "KEEL_KAFKA_PARTITIONS", default_value_t = 12)]
    pub partitions: i32,
    /// Kafka consumer-group session timeout.
    #[arg(long, env = "KEEL_KAFKA_SESSION_TIMEOUT_MS", default_value_t = 10_000)]
    pub session_timeout_ms: u32,
    /// How long a query with `X-Keel-Min-Position` waits before answering 503.
    #[arg(long, env = "KEEL_MIN_POSITION_WAIT_MS", default_value_t = 2_000)]
    pub min_position_wait_ms: u64,
    /// How often the purge sweeper looks for tenants past their grace period.
    #[arg(long, env = "KEEL_PURGE_SWEEP_SECONDS", default_value_t = 60)]
    pub purge_sweep_seconds: u64,
    /// Resource limits: connection budget, timeouts, concurrency, streams (ADR 0021).
    #[command(flatten)]
    pub limits: crate::limits::LimitSettings,
    /// Keel's public base URL: the tokens' issuer and the start of links in e-mails
    /// (default: `http://` and the REST address).
    #[arg(long, env = "KEEL_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The `aud` of access tokens.
    #[arg(long, env = "KEEL_TOKEN_AUDIENCE", default_value = "keel")]
    pub token_audience: String,
    /// Access-token lifetime: how long a stateless verifier may accept a revoked session's token.
    #[arg(long, env = "KEEL_ACCESS_TOKEN_TTL_SECONDS", default_value_t = 300)]
    pub access_token_ttl_seconds: i64,
    /// Longest session (refresh tokens die with it).
    #[arg(long, env = "KEEL_SESSION_TTL_HOURS", default_value_t = 720)]
    pub session_ttl_hours: i64,
    /// SMTP server URL (`smtp://host:port`, `smtps://user:pass@host`); without it mail goes to `mailbox_dir`.
    #[arg(long, env = "KEEL_SMTP_URL")]
    pub smtp_url: Option<String>,
    /// Directory of `.eml` files when no SMTP server is set (development and tests).
    #[arg(long, env = "KEEL_MAILBOX_DIR", default_value = ".keel/mailbox")]
    pub mailbox_dir: std::path::PathBuf,
    /// The sender of Keel's e-mails.
    #[arg(long, env = "KEEL_MAIL_FROM", default_value = "Keel <no-reply@keel.localhost>")]
    pub mail_from: String,
    /// Topic accepted usage is published to, as CloudEvents, for billing systems.
    #[arg(long, env = "KEEL_BILLING_TOPIC", default_value = "keel.billing.v1")]
    pub billing_topic: String,
    /// Usage that arrives more than this many hours after it happened is kept but marked late.
    #[arg(long, env = "KEEL_BILLING_LATE_AFTER_HOURS", default_value_t = 48)]
    pub billing_late_after_hours: i64,
    /// How often the heads of the audit chains that moved are signed (a checkpoint).
    #[arg(long, env = "KEEL_AUDIT_CHECKPOINT_SECONDS", default_value_t = 60)]
    pub audit_checkpoint_seconds: u64,
    /// Addresses of reverse proxies whose `X-Forwarded-For` is believed (comma-separated);
    /// brute-force protection then counts per real client address.
    #[arg(long, env = "KEEL_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// The broker's `message.max.bytes`: every size limit derives from it (ADR 0017).
    #[arg(long, env = "KEEL_KAFKA_MESSAGE_MAX_BYTES", default_value_t = keel_domain::limits::DEFAULT_MESSAGE_MAX_BYTES)]
    pub kafka_message_max_bytes: usize,
    /// A relay or projector that makes no progress this long while work waits is stalled (not ready).
    #[arg(long, env = "KEEL_STALL_SECONDS", default_value_t = 15)]
    pub stall_seconds: u64,
    /// How often readiness probes Postgres, the broker and the relay's backlog (in the background).
    #[arg(long, env = "KEEL_READY_PROBE_MS", default_value_t = 5_000)]
    pub ready_probe_ms: u64,
    /// Most password hashes queued or running at once; more answer 503 with `Retry-After`
    /// (default: what the hashing threads finish in 3 s).
    #[arg(long, env = "KEEL_HASH_QUEUE_CAPACITY")]
    pub hash_queue_capacity: Option<usize>,
    /// The key-encryption key every stored secret is wrapped under (ADR 0028).
    #[command(flatten)]
    pub kek: KekSettings,
    /// Days a KEK version stays current before it is rotated automatically.
    #[arg(long, env = "KEEL_KEK_ROTATION_DAYS", default_value_t = 365)]
    pub kek_rotation_days: u32,
    /// How often the KEK's age is checked (and an interrupted re-wrap finished).
    #[arg(long, env = "KEEL_KEK_CHECK_SECONDS", default_value_t = 3600)]
    pub kek_check_seconds: u64,
}

/// Where the key-encryption key is (ADR 0028). Keel refuses to start without one.
#[derive(Clone, Default, clap::Args)]
pub struct KekSettings {
    /// `file:/path/to/kek` (32 bytes, mode 600; development) or
    /// `pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=keel;label=keel-kek`.
    #[arg(long = "kek", env = "KEEL_KEK")]
    pub kek: Option<String>,
    /// The PKCS#11 user PIN (set it in the environment, not on the command line).
    #[arg(long = "kek-pin", env = "KEEL_KEK_PIN", hide_env_values = true)]
    pub kek_pin: Option<String>,
}

impl std::fmt::Debug for KekSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KekSettings").field("kek", &self.kek).finish_non_exhaustive()
    }
}

impl KekSettings {
    /// The local key file at `path`.
    pub fn file(path: &std::path::Path) -> Self {
        Self { kek: Some(format!("file:{}", path.display())), kek_pin: None }
    }

    /// Opens the KEK (refusing a key file others may read).
    pub fn open(&self) -> Result<keel_commands::kek::Kek, keel_commands::kek::KekError> {
        keel_commands::kek::open(self.kek.as_deref(), self.kek_pin.as_deref())
    }
}

impl Settings {
    /// Settings for a database and broker, with default addresses.
    pub fn new(database_url: &str, kafka_brokers: &str) -> Self {
        Self {
            database_url: database_url.to_string(),
            kafka_brokers: kafka_brokers.to_string(),
            rest_addr: ([127, 0, 0, 1], 8080).into(),
            grpc_addr: ([127, 0, 0, 1], 50051).into(),
            events_topic: "keel.events".into(),
            partitions: 12,
            session_timeout_ms: 10_000,
            min_position_wait_ms: 2_000,
            purge_sweep_seconds: 60,
            limits: crate::limits::LimitSettings::default(),
            public_url: None,
            token_audience: "keel".into(),
            access_token_ttl_seconds: 300,
            session_ttl_hours: 720,
            smtp_url: None,
            mailbox_dir: ".keel/mailbox".into(),
            mail_from: "Keel <no-reply@keel.localhost>".into(),
            trusted_proxies: Vec::new(),
            billing_topic: keel_commands::relay::BILLING_TOPIC.into(),
            billing_late_after_hours: 48,
            audit_checkpoint_seconds: 60,
            kafka_message_max_bytes: keel_domain::limits::DEFAULT_MESSAGE_MAX_BYTES,
            stall_seconds: 15,
            ready_probe_ms: 5_000,
            hash_queue_capacity: None,
            kek: KekSettings::default(),
            kek_rotation_days: 365,
            kek_check_seconds: 3600,
        }
    }

    /// The size limits, derived from the broker's message limit.
    pub fn message_limits(&self) -> Result<keel_domain::limits::Limits, keel_domain::limits::MessageLimitTooSmall> {
        keel_domain::limits::Limits::new(self.kafka_message_max_bytes)
    }

    /// Where mail goes.
    pub fn mail_transport(&self) -> keel_commands::mail::MailTransport {
        match &self.smtp_url {
            Some(url) => keel_commands::mail::MailTransport::Smtp(url.clone()),
            None => keel_commands::mail::MailTransport::Mailbox(self.mailbox_dir.clone()),
        }
    }

    /// The rules on late and future usage.
    pub fn usage_policy(&self) -> keel_domain::usage::UsagePolicy {
        keel_domain::usage::UsagePolicy {
            late_after: chrono::Duration::hours(self.billing_late_after_hours.max(0)),
            ..Default::default()
        }
    }

    /// The read-your-writes wait bound.
    pub fn min_position_wait(&self) -> Duration {
        Duration::from_millis(self.min_position_wait_ms)
    }
}
