//! One Keel process: gRPC command API, REST query API, relay, projectors and the
//! purge sweeper, sharing a Postgres pool.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower_http::cors::{AllowOrigin, CorsLayer};

use keel_commands::apps::AppCommands;
use keel_commands::mail::Mailer;
use keel_commands::passwords::Passwords;
use keel_commands::relay::{Relay, RelayConfig, RelayStatus};
use keel_commands::sessions::Sessions;
use keel_commands::tenants::TenantCommands;
use keel_commands::throttle::ThrottlePolicy;
use keel_commands::users::UserCommands;
use keel_projections::flag_snapshots::FlagSnapshots;
use keel_projections::kafka::ConsumerSettings;
use keel_projections::projector::{Projector, ProjectorStatus};
use keel_projections::tenant_registry::TenantRegistry;

use crate::auth::Authenticator;
use crate::config::Settings;
use crate::flag_cache::FlagCache;
use crate::grpc_apps::AppApi;
use crate::grpc_billing::BillingApi;
use crate::grpc_flags::FlagApi;
use crate::grpc_routing::RoutingApi;
use crate::grpc_tenants::TenantApi;
use crate::grpc_users::UserApi;
use crate::proto::app_service_server::AppServiceServer;
use crate::proto::billing_service_server::BillingServiceServer;
use crate::proto::flag_service_server::FlagServiceServer;
use crate::proto::routing_service_server::RoutingServiceServer;
use crate::proto::tenant_service_server::TenantServiceServer;
use crate::proto::user_service_server::UserServiceServer;
use crate::ready::ReadyCheck;
use crate::rest::{AppState, router};
use crate::tokens::TokenService;

/// Which background workers this process runs.
#[derive(Debug, Clone, Copy)]
pub struct Workers {
    /// The relay to Kafka.
    pub relay: bool,
    /// The projectors.
    pub projectors: bool,
    /// The purge sweeper and the audit checkpoint signer.
    pub sweeper: bool,
}

impl Workers {
    /// Everything.
    pub const ALL: Workers = Workers { relay: true, projectors: true, sweeper: true };
}

/// Why the process could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Postgres could not be reached.
    #[error("postgres: {0}")]
    Database(#[from] sqlx::Error),
    /// The Kafka client could not be configured.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A listener could not be bound.
    #[error("listen: {0}")]
    Listen(#[from] std::io::Error),
    /// gRPC reflection could not be set up.
    #[error("reflection: {0}")]
    Reflection(String),
    /// The mailer could not be set up.
    #[error("mail: {0}")]
    Mail(keel_commands::mail::MailError),
    /// The database has not been migrated (a read model's schema is missing).
    #[error("read model {0} has no schema yet: run `keel migrate` first")]
    NotMigrated(&'static str),
}

/// A running Keel.
pub struct Running {
    /// Where REST listens.
    pub rest_addr: SocketAddr,
    /// Where gRPC listens.
    pub grpc_addr: SocketAddr,
    /// The relay's status.
    pub relay: Arc<RelayStatus>,
    /// The tenant registry projector's status.
    pub registry: Arc<ProjectorStatus>,
    /// The flag snapshot projector's status.
    pub flag_snapshots: Arc<ProjectorStatus>,
    /// The routing projector's status.
    pub routing: Arc<ProjectorStatus>,
    /// The billing ledger projector's status.
    pub billing_ledger: Arc<ProjectorStatus>,
    /// The billing rollups projector's status.
    pub billing_rollups: Arc<ProjectorStatus>,
    /// The runtime pool.
    pub pool: PgPool,
    /// Tenant commands (for in-process tools and tests).
    pub tenants: Arc<TenantCommands>,
    /// User commands (for in-process tools and tests).
    pub users: Arc<UserCommands>,
    /// Access tokens.
    pub tokens: Arc<TokenService>,
    /// Managed-app commands (for in-process tools and tests).
    pub apps: Arc<AppCommands>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops everything and waits (bounded) for the tasks to end.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        self.pool.close().await;
    }

    /// Ends every task at once, wherever it is (as a crash would): open
    /// transactions roll back, unacknowledged publishes are forgotten.
    pub async fn kill(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        self.pool.close().await;
    }

    /// A future that completes when a stop is asked for.
    pub fn stopped(&self) -> impl Future<Output = ()> + use<> {
        let mut rx = self.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }
}

/// Signs a checkpoint of the audit chains that moved, every `every`, until shutdown.
async fn checkpoints(pool: PgPool, every: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        match keel_commands::audit::sign_checkpoint(&pool).await {
            Ok(Some(number)) => tracing::debug!(number, "audit checkpoint signed"),
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "audit checkpoint failed; retrying"),
        }
    }
}

/// Connects the runtime pool.
pub async fn connect(settings: &Settings) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(settings.db_pool_size)
        // No ping before every checkout: it doubles the round trips; a dead
        // connection shows as an error on its next query and is dropped then.
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&settings.database_url)
        .await
}

/// Starts a Keel process with `workers`.
pub async fn start(settings: Settings, workers: Workers) -> Result<Running, StartError> {
    let settings = Arc::new(settings);
    let pool = connect(&settings).await?;
    let registry_schema = keel_projections::read_model::live_schema(keel_projections::tenant_registry::NAME);
    let migrated: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(&registry_schema)
        .fetch_one(&pool)
        .await?;
    if !migrated {
        return Err(StartError::NotMigrated(keel_projections::tenant_registry::NAME));
    }
    // Relay checkpoints and projector batches are re-done after a crash: no need to wait for the WAL flush.
    let relaxed = keel_commands::store::relaxed_pool(&pool, 8);
    let (shutdown, rx) = watch::channel(false);
    let mut tasks = Vec::new();

    let relay_status = Arc::new(RelayStatus::default());
    if workers.relay {
        let config = RelayConfig {
            topic: settings.events_topic.clone(),
            billing_topic: Some(settings.billing_topic.clone()),
            ..RelayConfig::default()
        };
        let relay = Relay::new(relaxed.clone(), settings.kafka_brokers.clone(), config, relay_status.clone())
            .creating_topic(settings.partitions);
        tasks.push(tokio::spawn(relay.run(rx.clone())));
    }

    let registry = Arc::new(ProjectorStatus::default());
    let flag_status = Arc::new(ProjectorStatus::default());
    let routing_status = Arc::new(ProjectorStatus::default());
    let ledger_status = Arc::new(ProjectorStatus::default());
    let rollups_status = Arc::new(ProjectorStatus::default());
    if workers.projectors {
        let consumer = ConsumerSettings {
            brokers: settings.kafka_brokers.clone(),
            session_timeout_ms: settings.session_timeout_ms,
        };
        let projector = Projector::new(
            Arc::new(TenantRegistry),
            relaxed.clone(),
            consumer.clone(),
            settings.events_topic.clone(),
            registry.clone(),
        );
        tasks.push(tokio::spawn(projector.run(rx.clone())));
        let projector = Projector::new(
            Arc::new(FlagSnapshots),
            relaxed.clone(),
            consumer.clone(),
            settings.events_topic.clone(),
            flag_status.clone(),
        );
        tasks.push(tokio::spawn(projector.run(rx.clone())));
        let projector = Projector::new(
            Arc::new(keel_projections::routing::RoutingModel),
            relaxed.clone(),
            consumer.clone(),
            settings.events_topic.clone(),
            routing_status.clone(),
        );
        tasks.push(tokio::spawn(projector.run(rx.clone())));
        let projector = Projector::new(
            Arc::new(keel_projections::billing_ledger::BillingLedger),
            relaxed.clone(),
            consumer.clone(),
            settings.events_topic.clone(),
            ledger_status.clone(),
        );
        tasks.push(tokio::spawn(projector.run(rx.clone())));
        let projector = Projector::new(
            Arc::new(keel_projections::billing_rollups::BillingRollups),
            relaxed.clone(),
            consumer.clone(),
            settings.events_topic.clone(),
            rollups_status.clone(),
        );
        tasks.push(tokio::spawn(projector.run(rx.clone())));
        let projector = Projector::new(
            Arc::new(keel_projections::audit_trail::AuditTrail),
            relaxed.clone(),
            consumer.clone(),
            settings.events_topic.clone(),
            Arc::new(ProjectorStatus::default()),
        );
        tasks.push(tokio::spawn(projector.run(rx.clone())));
    }

    let rest_listener = TcpListener::bind(settings.rest_addr).await?;
    let rest_addr = rest_listener.local_addr()?;
    let public_url = settings.public_url.clone().unwrap_or_else(|| format!("http://{rest_addr}"));
    let passwords = Passwords::per_core();
    let mailer = Mailer::new(&settings.mail_from, &settings.mail_transport()).map_err(StartError::Mail)?;
    let users = Arc::new(UserCommands::new(pool.clone(), passwords.clone(), Some(mailer), &public_url));
    let sessions = Arc::new(
        Sessions::new(
            pool.clone(),
            passwords,
            chrono::Duration::hours(settings.session_ttl_hours.max(1)),
            ThrottlePolicy::default(),
        )
        .await?,
    );
    let tokens = Arc::new(
        TokenService::new(
            pool.clone(),
            &public_url,
            &settings.token_audience,
            chrono::Duration::seconds(settings.access_token_ttl_seconds.clamp(10, 3600)),
        )
        .await?,
    );
    tasks.push(tokio::spawn(tokens.clone().run(rx.clone())));
    let tenants = Arc::new(TenantCommands::new(pool.clone()).inviting_owners(users.clone()));
    if workers.sweeper {
        let every = Duration::from_secs(settings.purge_sweep_seconds.max(1));
        tasks.push(tokio::spawn(crate::sweeper::run(pool.clone(), tenants.clone(), every, rx.clone())));
    }

    let auth = Arc::new(Authenticator::new(pool.clone(), tokens.clone()));
    if workers.sweeper {
        let every = Duration::from_secs(settings.audit_checkpoint_seconds.max(1));
        tasks.push(tokio::spawn(checkpoints(pool.clone(), every, rx.clone())));
    }
    let apps = Arc::new(AppCommands::new(pool.clone()).await?);
    auth.api_keys().refresh().await?;
    tasks.push(tokio::spawn(auth.api_keys().clone().run(apps.clone(), rx.clone())));
    let routing_commands = Arc::new(keel_commands::routing::RoutingCommands::new(pool.clone()));
    let flag_commands = Arc::new(keel_commands::flags::FlagCommands::new(pool.clone()));
    let billing = Arc::new(keel_commands::billing::BillingCommands::new(pool.clone(), settings.usage_policy()));
    let flags = Arc::new(FlagCache::new(pool.clone()));
    flags.reload().await?;
    tasks.push(tokio::spawn(flags.clone().run(rx.clone())));
    let stream_key = Arc::new(keel_commands::secret::server_secret(&pool, "ofrep_stream_token").await?);
    let ready = Arc::new(ReadyCheck::new(pool.clone(), &settings.kafka_brokers, relay_status.clone())?);

    let app = router(AppState {
        pool: pool.clone(),
        auth: auth.clone(),
        ready,
        settings: settings.clone(),
        users: users.clone(),
        sessions: sessions.clone(),
        flags,
        stream_key,
        routing: routing_commands.clone(),
        billing: billing.clone(),
        shutdown: rx.clone(),
    });
    let mut stop = rx.clone();
    tasks.push(tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let serve = axum::serve(rest_listener, app).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        });
        if let Err(err) = serve.await {
            tracing::error!(error = %err, "REST server failed");
        }
    }));

    let grpc_listener = TcpListener::bind(settings.grpc_addr).await?;
    let grpc_addr = grpc_listener.local_addr()?;
    // Small request/response messages: never wait for Nagle.
    let incoming = tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<TenantServiceServer<TenantApi>>().await;
    health.set_serving::<UserServiceServer<UserApi>>().await;
    health.set_serving::<AppServiceServer<AppApi>>().await;
    health.set_serving::<FlagServiceServer<FlagApi>>().await;
    health.set_serving::<RoutingServiceServer<RoutingApi>>().await;
    health.set_serving::<BillingServiceServer<BillingApi>>().await;
    let reflection = |builder: tonic_reflection::server::Builder<'static>| {
        builder.register_encoded_file_descriptor_set(crate::proto::DESCRIPTOR)
    };
    let reflection_v1 = reflection(tonic_reflection::server::Builder::configure())
        .build_v1()
        .map_err(|e| StartError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection(tonic_reflection::server::Builder::configure())
        .build_v1alpha()
        .map_err(|e| StartError::Reflection(e.to_string()))?;
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_methods([axum::http::Method::POST, axum::http::Method::OPTIONS])
        .allow_headers(tower_http::cors::Any)
        .expose_headers(
            ["grpc-status", "grpc-message", "grpc-status-details-bin", "x-correlation-id", "x-keel-error-code"]
                .map(axum::http::HeaderName::from_static),
        );
    let api = TenantApi::new(tenants.clone(), auth.clone());
    let app_api = AppApi::new(apps.clone(), auth.clone());
    let flag_api = FlagApi::new(flag_commands, auth.clone());
    let routing_api = RoutingApi::new(routing_commands.clone(), auth.clone());
    let billing_api = BillingApi::new(billing, auth.clone());
    let audit_auth = auth.clone();
    let user_api = UserApi::new(users.clone(), sessions, auth, pool.clone());
    let mut stop = rx.clone();
    tasks.push(tokio::spawn(async move {
        let serve = tonic::transport::Server::builder()
            .accept_http1(true)
            .layer(tower::util::MapRequestLayer::new(crate::grpc::stamp_peer))
            .layer(crate::grpc::AuditRefusals::new(audit_auth))
            .layer(cors)
            .layer(tonic_web::GrpcWebLayer::new())
            .add_service(TenantServiceServer::new(api))
            .add_service(UserServiceServer::new(user_api))
            .add_service(AppServiceServer::new(app_api))
            .add_service(FlagServiceServer::new(flag_api))
            .add_service(RoutingServiceServer::new(routing_api))
            .add_service(BillingServiceServer::new(billing_api))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|s| *s).await;
            });
        if let Err(err) = serve.await {
            tracing::error!(error = %err, "gRPC server failed");
        }
    }));

    tracing::info!(%rest_addr, %grpc_addr, brokers = %settings.kafka_brokers, "keel started");
    Ok(Running {
        rest_addr,
        grpc_addr,
        relay: relay_status,
        registry,
        flag_snapshots: flag_status,
        routing: routing_status,
        billing_ledger: ledger_status,
        billing_rollups: rollups_status,
        pool,
        tenants,
        users,
        tokens,
        apps,
        shutdown,
        tasks,
    })
}
