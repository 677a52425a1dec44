//! What `/metrics` and the system health API read of the process, each through one
//! small function: the relay's lag, each projector's lag and dead letters, the
//! password-hashing queue, the connection pools and the mail transport.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sqlx::PgPool;

use keel_commands::mail::Mailer;
use keel_commands::passwords::Passwords;
use keel_commands::relay::RelayStatus;
use keel_commands::relay_lag::{RelayLag, relay_lag};
use keel_projections::registry::ProjectorStatuses;

/// The longest a probe of Postgres or the mail server may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One read model's projector, as the store shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectorProgress {
    /// Published messages it has not applied yet.
    pub lag_events: i64,
    /// Events it holds parked (dead letters).
    pub parked: i64,
}

/// A connection pool's use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolUsage {
    /// The pool's name (`runtime`, `workers`).
    pub name: &'static str,
    /// Open connections.
    pub size: u32,
    /// Open connections not in use.
    pub idle: usize,
    /// The most connections it may open.
    pub max: u32,
}

/// The parts of a running process that metrics and health read.
pub struct Probes {
    /// The runtime pool (reads the relay checkpoint, offsets and dead letters).
    pub pool: PgPool,
    /// Every connection pool of the process, by name.
    pub pools: Vec<(&'static str, PgPool)>,
    /// The relay's status.
    pub relay: Arc<RelayStatus>,
    /// Each read model's projector status.
    pub projectors: ProjectorStatuses,
    /// The password-hashing threads.
    pub passwords: Passwords,
    /// Outgoing mail.
    pub mailer: Mailer,
    /// The events topic.
    pub topic: String,
}

impl Probes {
    /// How far the relay is behind the newest commit.
    pub async fn relay_lag(&self) -> Option<RelayLag> {
        bounded(relay_lag(&self.pool, &self.topic)).await
    }

    /// Whether this process's relay task runs (as leader or standby).
    pub fn relay_alive(&self) -> bool {
        self.relay.alive.load(Ordering::Relaxed)
    }

    /// Read model `name`'s lag behind what the relay published (`lag`) and its dead letters.
    pub async fn projector(&self, name: &str, lag: &RelayLag) -> Option<ProjectorProgress> {
        let next = bounded(keel_projections::progress::next_offsets(&self.pool, name, &self.topic)).await?;
        let parked = bounded(keel_projections::dead_letters::count(&self.pool, name)).await?;
        let lag_events = keel_projections::progress::messages_behind(&lag.published_offsets, &next);
        Some(ProjectorProgress { lag_events, parked })
    }

    /// Hashes and verifications waiting for a hashing thread.
    pub fn hashing_queue_depth(&self) -> usize {
        self.passwords.queue_depth()
    }

    /// Each pool's use.
    pub fn pool_usage(&self) -> Vec<PoolUsage> {
        self.pools
            .iter()
            .map(|(name, pool)| PoolUsage {
                name,
                size: pool.size(),
                idle: pool.num_idle(),
                max: pool.options().get_max_connections(),
            })
            .collect()
    }

    /// Whether mail can go out.
    pub async fn mail_up(&self) -> bool {
        tokio::time::timeout(PROBE_TIMEOUT, self.mailer.reachable()).await.unwrap_or(false)
    }
}

/// `read`'s answer, or `None` if it fails or takes longer than [`PROBE_TIMEOUT`].
async fn bounded<T>(read: impl Future<Output = Result<T, sqlx::Error>>) -> Option<T> {
    match tokio::time::timeout(PROBE_TIMEOUT, read).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "a metrics probe failed");
            None
        }
        Err(_) => {
            tracing::warn!("a metrics probe timed out");
            None
        }
    }
}
