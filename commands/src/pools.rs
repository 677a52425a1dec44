//! The pools a command service writes through: durable commits for events and audit
//! records, and a relaxed pool (commits do not wait for the WAL flush) for what is
//! re-done after a crash (idempotency records, refresh-token rotation).

use sqlx::PgPool;

/// Connections in the relaxed pool that [`Pools::from`] adds beside a lone pool.
const OWN_RELAXED_CONNECTIONS: u32 = 4;

/// The durable and the relaxed pool of a command service.
#[derive(Debug, Clone)]
pub struct Pools {
    /// Commits wait for the WAL flush (events, audit records).
    pub durable: PgPool,
    /// Commits do not wait for the WAL flush (see [`crate::store::relaxed_pool`]).
    pub relaxed: PgPool,
}

impl From<PgPool> for Pools {
    /// `pool` with a small relaxed pool of its own beside it (tools and tests; a server
    /// shares one relaxed pool among its services, sized by its connection budget).
    fn from(pool: PgPool) -> Self {
        Self { relaxed: crate::store::relaxed_pool(&pool, OWN_RELAXED_CONNECTIONS), durable: pool }
    }
}
