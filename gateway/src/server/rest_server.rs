//! The REST server: the query API's router on its listener, until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use sqlx::PgPool;
use tokio::net::TcpListener;

use super::error::StartError;
use super::services::Services;
use super::tasks::Tasks;
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::rest::ready::ReadyCheck;
use crate::rest::router;
use crate::rest::state::AppState;

/// Serves the REST API on `listener` (in a task); readiness reads the relay and
/// projectors through `metrics`' probes.
pub async fn serve(
    listener: TcpListener,
    settings: &Arc<Settings>,
    pool: &PgPool,
    services: &Services,
    metrics: &Arc<Metrics>,
    tasks: &mut Tasks,
) -> Result<(), StartError> {
    let probes = &metrics.probes;
    let stream_key =
        Arc::new(keel_commands::secret::server_secret(pool, services.kek.as_ref(), "ofrep_stream_token").await?);
    let ready = Arc::new(ReadyCheck::new(pool.clone(), settings, probes.relay.clone(), probes.projectors.clone())?);
    tasks.spawn(ready.clone().probe_forever(tasks.stop.clone()));
    let app = router(AppState {
        pool: pool.clone(),
        auth: services.auth.clone(),
        ready,
        settings: settings.clone(),
        users: services.users.clone(),
        sessions: services.sessions.clone(),
        flags: services.flag_cache.clone(),
        stream_key,
        routing: services.routing.clone(),
        billing: services.billing.clone(),
        metrics: metrics.clone(),
        shutdown: tasks.stop.clone(),
        streams: services.streams.clone(),
        position_waiters: Arc::new(tokio::sync::Semaphore::new(settings.limits.max_position_waiters.max(1))),
        oidc_clients: keel_commands::oidc_clients::OidcClients::new(pool.clone()),
    });
    let mut stop = tasks.stop.clone();
    tasks.spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        });
        if let Err(err) = serve.await {
            tracing::error!(error = %err, "REST server failed");
        }
    });
    Ok(())
}
