//! `keel serve`: runs everything until Ctrl-C, SIGTERM or a worker stops.

use crate::config::Settings;
use crate::server::{self, Workers};

use super::CliError;

/// Starts the APIs and workers and stops them on Ctrl-C, SIGTERM or when one stops.
pub async fn run(settings: Settings) -> Result<(), CliError> {
    let running = server::start(settings, Workers::ALL).await?;
    let stopped = running.stopped();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate() => {}
        _ = stopped => {}
    }
    tracing::info!("stopping");
    running.stop().await;
    Ok(())
}

/// Resolves on SIGTERM (never, if the signal cannot be watched).
async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
