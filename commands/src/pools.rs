//! The pools a command service writes through: durable commits for events and audit
//! records, and a relaxed pool (commits do not wait for the WAL flush) for what is
//! re-done after a crash (idempotency records, refresh-token rotation); and the group
//! commit that every append of the durable pool goes through (ADR 0029).

use sqlx::PgPool;

use crate::group_commit::GroupCommit;

/// Connections in the relaxed pool that [`Pools::from`] adds beside a lone pool.
const OWN_RELAXED_CONNECTIONS: u32 = 4;

/// The durable and the relaxed pool of a command service.
#[derive(Debug, Clone)]
pub struct Pools {
    /// Commits wait for the WAL flush (events, audit records).
    pub durable: PgPool,
    /// Commits do not wait for the WAL flush (see [`crate::store::relaxed_pool`]).
    pub relaxed: PgPool,
    /// The queue that commits concurrent appends together on `durable`.
    pub group_commit: GroupCommit,
    /// Aggregates each command framework keeps in memory (0: every command loads its
    /// aggregate from the store; [`crate::aggregate_cache`]).
    pub aggregate_cache_entries: usize,
}

impl Pools {
    /// The pools of a command service, with one group commit on `durable` and the
    /// default aggregate cache.
    pub fn new(durable: PgPool, relaxed: PgPool) -> Self {
        Self {
            group_commit: GroupCommit::new(durable.clone()),
            durable,
            relaxed,
            aggregate_cache_entries: crate::aggregate_cache::DEFAULT_ENTRIES,
        }
    }

    /// These pools with frameworks that keep `entries` aggregates each.
    pub fn keeping_aggregates(self, entries: usize) -> Self {
        Self { aggregate_cache_entries: entries, ..self }
    }
}

impl From<PgPool> for Pools {
    /// `pool` with a small relaxed pool of its own beside it (tools and tests; a server
    /// shares one relaxed pool among its services, sized by its connection budget).
    fn from(pool: PgPool) -> Self {
        let relaxed = crate::store::relaxed_pool(&pool, OWN_RELAXED_CONNECTIONS);
        Self::new(pool, relaxed)
    }
}
