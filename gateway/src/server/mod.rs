//! One Keel process: gRPC command API, REST query API, relay, projectors and the
//! purge sweeper, sharing a Postgres pool. `start` wires them in named steps: the
//! pool, the workers (`workers`, `projectors`), the services both APIs share
//! (`services`), then the REST and gRPC servers (`rest_server`, `grpc_server`).

mod error;
mod grpc_server;
pub mod pools;
mod projectors;
mod rest_server;
mod services;
pub mod sweeper;
mod tasks;
mod workers;

pub use error::StartError;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use keel_commands::apps::AppCommands;
use keel_commands::relay::RelayStatus;
use keel_commands::tenants::TenantCommands;
use keel_commands::users::UserCommands;
use keel_projections::projector::ProjectorStatus;
use keel_projections::registry::ProjectorStatuses;

use crate::auth::tokens::TokenService;
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::metrics::probes::Probes;
use services::Services;
use tasks::Tasks;

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

/// A running Keel.
pub struct Running {
    /// Where REST listens.
    pub rest_addr: SocketAddr,
    /// Where gRPC listens.
    pub grpc_addr: SocketAddr,
    /// The relay's status.
    pub relay: Arc<RelayStatus>,
    /// Every read model's projector status, by name (registry order).
    pub projectors: ProjectorStatuses,
    /// The tenant registry projector's status (also in `projectors`).
    pub registry: Arc<ProjectorStatus>,
    /// The runtime pool (requests).
    pub pool: PgPool,
    /// Tenant commands (for in-process tools and tests).
    pub tenants: Arc<TenantCommands>,
    /// User commands (for in-process tools and tests).
    pub users: Arc<UserCommands>,
    /// Access tokens.
    pub tokens: Arc<TokenService>,
    /// Managed-app commands (for in-process tools and tests).
    pub apps: Arc<AppCommands>,
    /// The key-encryption key (for in-process tools and tests).
    pub kek: keel_commands::kek::Kek,
    pools: pools::ProcessPools,
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
        self.pools.close().await;
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
        self.pools.close().await;
    }

    /// A future that completes when a stop is asked for.
    pub fn stopped(&self) -> impl Future<Output = ()> + use<> {
        let mut rx = self.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }
}

/// Refuses to start on a database that `keel migrate` has not prepared.
async fn check_migrated(pool: &PgPool) -> Result<(), StartError> {
    if let Some(name) = keel_projections::registry::first_unmigrated(pool).await? {
        return Err(StartError::NotMigrated(name));
    }
    Ok(())
}

/// Starts a Keel process with `workers`.
pub async fn start(settings: Settings, workers: Workers) -> Result<Running, StartError> {
    let settings = Arc::new(settings);
    keel_commands::limits::configure(settings.message_limits()?);
    let kek = settings.kek.open()?;
    let pools = pools::connect(&settings.database_url, &settings.limits, workers).await?;
    let pool = pools.requests.clone();
    check_migrated(&pool).await?;
    keel_commands::wrapped_secrets::prepare(&pool, kek.as_ref()).await?;
    // Relay checkpoints and projector batches are re-done after a crash: no need to wait for the WAL flush.
    let relaxed = pools.workers.clone();
    let (shutdown, stop) = watch::channel(false);
    let mut tasks = Tasks { stop, handles: Vec::new() };

    let relay = workers::relay(&settings, &relaxed, workers.relay, &mut tasks);
    let projectors = projectors::start(&settings, &relaxed, workers.projectors, &mut tasks);

    let rest_listener = TcpListener::bind(settings.rest_addr).await?;
    let rest_addr = rest_listener.local_addr()?;
    let public_url = settings.public_url.clone().unwrap_or_else(|| format!("http://{rest_addr}"));
    let commands = pools.commands().keeping_aggregates(settings.limits.aggregate_cache_entries);
    let services = Services::start(&settings, &commands, &kek, &public_url, &mut tasks).await?;
    if workers.sweeper {
        workers::sweepers(&settings, &pool, &services, &mut tasks);
    }
    let metrics = Arc::new(Metrics::new(Probes {
        pool: pool.clone(),
        pools: vec![
            ("requests", pools.requests.clone()),
            ("relaxed", pools.relaxed.clone()),
            ("workers", pools.workers.clone()),
        ],
        relay: relay.clone(),
        projectors: projectors.clone(),
        passwords: services.passwords.clone(),
        mailer: services.mailer.clone(),
        topic: settings.events_topic.clone(),
    }));
    rest_server::serve(rest_listener, &settings, &pool, &services, &metrics, &mut tasks).await?;
    let grpc_addr = grpc_server::serve(&settings, &pool, &services, &metrics, &mut tasks).await?;

    tracing::info!(%rest_addr, %grpc_addr, brokers = %settings.kafka_brokers, "keel started");
    Ok(Running {
        rest_addr,
        grpc_addr,
        relay,
        registry: projectors.get(keel_projections::tenant_registry::NAME).expect("a registered read model").clone(),
        projectors,
        pool,
        tenants: services.tenants,
        users: services.users,
        tokens: services.tokens,
        apps: services.apps,
        kek: services.kek,
        pools,
        shutdown,
        tasks: tasks.handles,
    })
}
