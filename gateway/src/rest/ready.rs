//! Readiness (ADR 0017): what `/readyz` answers, from a probe that runs in the
//! background (a call never waits on the broker).
//!
//! What gates it: Postgres answers, the relay is not stalled, and no projector of this
//! process is stalled. The broker is reported but does not gate: commands need only
//! Postgres, so a gateway stays in the load balancer while the broker is away (and a
//! relay or projector held up by that outage does not gate either).
//!
//! The relay is stalled when committed events wait while the relay's checkpoint has
//! not moved for `KEEL_STALL_SECONDS` (seen from the database, so it holds whichever
//! process runs the relay, and whatever holds it back: a refused message, a
//! transaction left open); a projector is stalled when applying has failed for that long,
//! or when published events have waited that long while its stored offsets did not move
//! (a consumer that gets nothing: seen after a group session timed out mid-batch).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::watch;

use keel_commands::relay::RelayStatus;
use keel_projections::registry::ProjectorStatuses;

use crate::config::Settings;

/// What /readyz reports.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// Whether the process is ready (what the HTTP status says).
    pub ready: bool,
    /// Postgres answered `SELECT 1` at the last probe.
    pub postgres: bool,
    /// The broker answered a metadata request at the last probe (reported, not gating).
    pub broker: bool,
    /// The relay.
    pub relay: RelayReadiness,
    /// Each read model's projector in this process, by name.
    pub projectors: BTreeMap<&'static str, ProjectorReadiness>,
    /// Why the process is not ready (empty when it is).
    pub reasons: Vec<String>,
}

/// The relay, as readiness sees it.
#[derive(Debug, Clone, Serialize)]
pub struct RelayReadiness {
    /// The relay task runs in this process (as leader or standby).
    pub running: bool,
    /// This process holds the relay lock.
    pub leader: bool,
    /// Committed events not published yet, at the last probe (capped at 10,000).
    pub pending: i64,
    /// How long events have waited without the checkpoint moving, if they do.
    pub stalled_seconds: Option<u64>,
    /// Events this process's relay parked since start (refused by the broker for good).
    pub parked: u64,
}

/// A projector, as readiness sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectorReadiness {
    /// Its consumer loop runs in this process.
    pub running: bool,
    /// How long it has made no progress while work waits (applying fails, or published
    /// events wait), if that is the stall time or longer.
    pub stalled_seconds: Option<u64>,
    /// Events it parked since start.
    pub parked: u64,
}

/// The last probe's findings.
#[derive(Debug, Clone, Default)]
struct Probe {
    /// A probe has completed.
    done: bool,
    postgres: bool,
    broker: bool,
    pending: i64,
    /// When events started waiting without the checkpoint moving.
    waiting_since: Option<Instant>,
}

/// Checks the dependencies in the background and answers from the last probe.
pub struct ReadyCheck {
    pool: PgPool,
    kafka: Arc<BaseConsumer>,
    topic: String,
    relay: Arc<RelayStatus>,
    projectors: ProjectorStatuses,
    stall_after: Duration,
    every: Duration,
    probe: Mutex<Probe>,
}

impl ReadyCheck {
    /// A check of `pool`, the brokers and the relay's backlog on the events topic (as
    /// `settings` say), `relay` and the `projectors`. Call [`ReadyCheck::probe_forever`].
    pub fn new(
        pool: PgPool,
        settings: &Settings,
        relay: Arc<RelayStatus>,
        projectors: ProjectorStatuses,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let kafka: BaseConsumer = keel_commands::kafka::client_config(&settings.kafka_brokers)
            .set("socket.timeout.ms", "2000")
            .set("reconnect.backoff.max.ms", "1000")
            .create()?;
        Ok(Self {
            pool,
            kafka: Arc::new(kafka),
            topic: settings.events_topic.clone(),
            relay,
            projectors,
            stall_after: Duration::from_secs(settings.stall_seconds),
            every: Duration::from_millis(settings.ready_probe_ms.max(100)),
            probe: Mutex::new(Probe::default()),
        })
    }

    /// Probes now, then every interval, until `shutdown` fires.
    pub async fn probe_forever(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut last_position = None;
        let mut moved_at = Instant::now();
        loop {
            let postgres = tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&self.pool))
                .await
                .is_ok_and(|r| r.is_ok());
            let consumer = self.kafka.clone();
            let broker =
                tokio::task::spawn_blocking(move || consumer.fetch_metadata(None, Duration::from_secs(2)).is_ok())
                    .await
                    .unwrap_or(false);
            let backlog = tokio::time::timeout(
                Duration::from_secs(2),
                keel_commands::relay_status::backlog(&self.pool, &self.topic),
            )
            .await
            .ok()
            .and_then(Result::ok);
            self.observe_projectors(broker).await;
            {
                let mut probe = self.probe.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                probe.done = true;
                probe.postgres = postgres;
                probe.broker = broker;
                if let Some(backlog) = backlog {
                    let now = Instant::now();
                    if last_position != Some(backlog.published_position) {
                        last_position = Some(backlog.published_position);
                        moved_at = now;
                    }
                    probe.pending = backlog.pending;
                    probe.waiting_since = match (backlog.pending, probe.waiting_since) {
                        (0, _) => None,
                        (_, None) => Some(now),
                        (_, Some(since)) => Some(since.max(moved_at)),
                    };
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.every) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Tells each projector's status how far its read model is behind what the relay
    /// published (nothing waits while the broker is away: an outage is not a stall).
    async fn observe_projectors(&self, broker: bool) {
        let published = if broker {
            bounded(keel_commands::relay_lag::published_offsets(&self.pool, &self.topic)).await
        } else {
            None
        };
        for (name, status) in self.projectors.iter() {
            if let Some(next) = bounded(keel_projections::progress::next_offsets(&self.pool, name, &self.topic)).await {
                status.observe(published.as_ref(), &next);
            }
        }
    }

    /// Readiness as of the last probe.
    pub async fn check(&self) -> Readiness {
        let probe = self.probe.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let now = chrono::Utc::now();
        let mut reasons = Vec::new();
        if !probe.done {
            reasons.push("not probed yet".to_string());
        } else if !probe.postgres {
            reasons.push("postgres does not answer".to_string());
        }
        let relay_stalled = probe.waiting_since.map(|since| since.elapsed()).filter(|w| *w >= self.stall_after);
        if let Some(waited) = relay_stalled
            && probe.broker
        {
            reasons.push(format!(
                "relay stalled: {} events wait and nothing was published for {} s",
                probe.pending,
                waited.as_secs()
            ));
        }
        let mut projectors = BTreeMap::new();
        for (name, status) in self.projectors.iter() {
            let stalled = status.stalled_for(now).filter(|s| *s >= self.stall_after);
            if let Some(stalled) = stalled {
                let why = if status.failing_since().is_some() {
                    "applying has failed"
                } else {
                    "published events wait and its read model has not moved"
                };
                reasons.push(format!("projector {name} stalled: {why} for {} s", stalled.as_secs()));
            }
            projectors.insert(
                name,
                ProjectorReadiness {
                    running: status.running.load(Ordering::Relaxed),
                    stalled_seconds: stalled.map(|s| s.as_secs()),
                    parked: status.parked.load(Ordering::Relaxed),
                },
            );
        }
        Readiness {
            ready: reasons.is_empty(),
            postgres: probe.postgres,
            broker: probe.broker,
            relay: RelayReadiness {
                running: self.relay.alive.load(Ordering::Relaxed),
                leader: self.relay.leader.load(Ordering::Relaxed),
                pending: probe.pending,
                stalled_seconds: relay_stalled.map(|s| s.as_secs()),
                parked: self.relay.parked.load(Ordering::Relaxed),
            },
            projectors,
            reasons,
        }
    }
}

/// `read`'s answer, or `None` if it fails or takes longer than 2 s.
async fn bounded<T>(read: impl Future<Output = Result<T, sqlx::Error>>) -> Option<T> {
    tokio::time::timeout(Duration::from_secs(2), read).await.ok().and_then(Result::ok)
}

impl Readiness {
    /// Whether the process is ready.
    pub fn ready(&self) -> bool {
        self.ready
    }
}
