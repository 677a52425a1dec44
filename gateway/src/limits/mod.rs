//! Resource limits (ADR 0021): no caller can stall or exhaust a Keel process. The
//! settings (`LimitSettings`), the REST middleware and the gRPC layer that time out
//! requests and shed load beyond a concurrency limit (`rest`, `grpc`), and the caps on
//! long-lived streams per caller and in all (`streams`). The connection budget is
//! split among the pools in `server::pools`.

pub mod grpc;
pub mod rest;
pub mod streams;

use std::time::Duration;

/// The limits of one process, all from the environment (or flags).
#[derive(Debug, Clone, clap::Args)]
pub struct LimitSettings {
    /// Postgres connections this process opens at most, all its pools together.
    #[arg(long, env = "KEEL_DB_MAX_CONNECTIONS", default_value_t = 40)]
    pub db_max_connections: u32,
    /// `statement_timeout` of the connections that serve requests.
    #[arg(long, env = "KEEL_DB_STATEMENT_TIMEOUT_MS", default_value_t = 10_000)]
    pub db_statement_timeout_ms: u64,
    /// `statement_timeout` of the relay's and the projectors' connections (larger batches).
    #[arg(long, env = "KEEL_DB_WORKER_STATEMENT_TIMEOUT_MS", default_value_t = 60_000)]
    pub db_worker_statement_timeout_ms: u64,
    /// `idle_in_transaction_session_timeout` of every connection.
    #[arg(long, env = "KEEL_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", default_value_t = 5_000)]
    pub db_idle_in_transaction_timeout_ms: u64,
    /// How long a REST request or gRPC call may take before it is answered 503 / DEADLINE_EXCEEDED
    /// (long-lived streams are exempt).
    #[arg(long, env = "KEEL_REQUEST_TIMEOUT_MS", default_value_t = 15_000)]
    pub request_timeout_ms: u64,
    /// Requests in progress at once, per API (REST, gRPC); beyond it they are shed
    /// (503 + Retry-After / UNAVAILABLE), never queued.
    #[arg(long, env = "KEEL_MAX_CONCURRENT_REQUESTS", default_value_t = 512)]
    pub max_concurrent_requests: usize,
    /// gRPC calls in progress at once on one connection (HTTP/2 multiplexes many).
    #[arg(long, env = "KEEL_GRPC_CONCURRENCY_PER_CONNECTION", default_value_t = 64)]
    pub grpc_concurrency_per_connection: usize,
    /// Long-lived streams (SSE, `IngestEvents`) open at once in all.
    #[arg(long, env = "KEEL_MAX_STREAMS", default_value_t = 10_000)]
    pub max_streams: usize,
    /// Long-lived streams open at once per caller (user, operator, API key); beyond it 429.
    #[arg(long, env = "KEEL_MAX_STREAMS_PER_CALLER", default_value_t = 2_000)]
    pub max_streams_per_caller: usize,
    /// How often an open stream re-checks its caller's credential (revoked key, ended session).
    #[arg(long, env = "KEEL_STREAM_RECHECK_MS", default_value_t = 5_000)]
    pub stream_recheck_ms: u64,
    /// Requests waiting for `X-Keel-Min-Position` at once; beyond it 503 + Retry-After.
    #[arg(long, env = "KEEL_MAX_POSITION_WAITERS", default_value_t = 128)]
    pub max_position_waiters: usize,
    /// Aggregates each command framework keeps in memory, so a command loads its
    /// aggregate without a query (ADR 0029); 0 keeps none.
    #[arg(long, env = "KEEL_AGGREGATE_CACHE_ENTRIES", default_value_t = keel_commands::aggregate_cache::DEFAULT_ENTRIES)]
    pub aggregate_cache_entries: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            db_max_connections: 40,
            db_statement_timeout_ms: 10_000,
            db_worker_statement_timeout_ms: 60_000,
            db_idle_in_transaction_timeout_ms: 5_000,
            request_timeout_ms: 15_000,
            max_concurrent_requests: 512,
            grpc_concurrency_per_connection: 64,
            max_streams: 10_000,
            max_streams_per_caller: 2_000,
            stream_recheck_ms: 5_000,
            max_position_waiters: 128,
            aggregate_cache_entries: keel_commands::aggregate_cache::DEFAULT_ENTRIES,
        }
    }
}

impl LimitSettings {
    /// The request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.max(1))
    }

    /// How often open streams re-check their credential.
    pub fn stream_recheck(&self) -> Duration {
        Duration::from_millis(self.stream_recheck_ms.max(10))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        limits: LimitSettings,
    }

    #[test]
    fn the_defaults_are_the_flags_defaults() {
        let parsed = Cli::parse_from(["keel"]).limits;
        assert_eq!(format!("{parsed:?}"), format!("{:?}", LimitSettings::default()));
    }
}
