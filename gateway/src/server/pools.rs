//! The process's Postgres pools, within one connection budget
//! (`KEEL_DB_MAX_CONNECTIONS`, ADR 0021): the request pool (commands, queries, the
//! flag cache's listener, sweepers), the relaxed pool that every command service
//! shares for idempotency records and token rotation, and the workers' pool (relay
//! and projectors). Every connection carries `application_name` `keel:<pool>`, a
//! `statement_timeout` and an `idle_in_transaction_session_timeout`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use keel_commands::pools::Pools;

use super::Workers;
use crate::limits::LimitSettings;

/// The smallest budget a process runs with (a smaller setting is raised to it).
pub const MIN_BUDGET: u32 = 12;
/// How long a request waits for a connection before it fails (503).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How the connection budget is split among the pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The request pool.
    pub requests: u32,
    /// The relaxed pool the command services share.
    pub relaxed: u32,
    /// The workers' pool (the projectors' connections, and the relay's before it detaches one).
    pub workers: u32,
    /// The relay's leader connection, detached from the workers' pool (0 without a relay).
    pub relay: u32,
}

impl Budget {
    /// Splits `total` for a process running `workers`: the workers get what they use at
    /// most (one connection per projector, plus one; one for the relay), the relaxed pool
    /// a quarter of the rest, the request pool the remainder.
    pub fn split(total: u32, workers: Workers) -> Self {
        let total = total.max(MIN_BUDGET);
        let projectors = keel_projections::registry::READ_MODELS.len() as u32;
        let relay = u32::from(workers.relay);
        let pool = match (workers.projectors, workers.relay) {
            (true, _) => projectors + 1,
            (false, true) => 1,
            (false, false) => 0,
        };
        let rest = total - pool - relay;
        let relaxed = (rest / 4).max(2);
        Self { requests: rest - relaxed, relaxed, workers: pool, relay }
    }

    /// Every connection the process may hold.
    pub fn total(&self) -> u32 {
        self.requests + self.relaxed + self.workers + self.relay
    }
}

/// The pools of a process.
#[derive(Debug, Clone)]
pub struct ProcessPools {
    /// The request pool (durable commits).
    pub requests: PgPool,
    /// The relaxed pool (commits do not wait for the WAL flush).
    pub relaxed: PgPool,
    /// The relay's and the projectors' pool (relaxed, with the workers' statement timeout).
    pub workers: PgPool,
}

impl ProcessPools {
    /// What the command services write through.
    pub fn commands(&self) -> Pools {
        Pools::new(self.requests.clone(), self.relaxed.clone())
    }

    /// Closes every pool.
    pub async fn close(&self) {
        self.requests.close().await;
        self.relaxed.close().await;
        self.workers.close().await;
    }
}

/// Connects the request pool (at once, so a wrong URL fails start-up) and the others
/// (lazily), within `limits.db_max_connections`.
pub async fn connect(url: &str, limits: &LimitSettings, workers: Workers) -> Result<ProcessPools, sqlx::Error> {
    let budget = Budget::split(limits.db_max_connections, workers);
    let base = PgConnectOptions::from_str(url)?;
    let idle = limits.db_idle_in_transaction_timeout_ms.to_string();
    let request_statement = limits.db_statement_timeout_ms.to_string();
    let worker_statement = limits.db_worker_statement_timeout_ms.to_string();
    let options = |name: &str, statement: &str, relaxed: bool| {
        let mut set = vec![("statement_timeout", statement), ("idle_in_transaction_session_timeout", idle.as_str())];
        if relaxed {
            set.push(("synchronous_commit", "off"));
        }
        base.clone().application_name(&format!("keel:{name}")).options(set)
    };
    let pool = |max: u32| {
        PgPoolOptions::new()
            .max_connections(max.max(1))
            // No ping before every checkout: it doubles the round trips; a dead
            // connection shows as an error on its next query and is dropped then.
            .test_before_acquire(false)
            .acquire_timeout(ACQUIRE_TIMEOUT)
    };
    let requests = pool(budget.requests).connect_with(options("requests", &request_statement, false)).await?;
    let relaxed = pool(budget.relaxed).connect_lazy_with(options("relaxed", &request_statement, true));
    let workers = pool(budget.workers).connect_lazy_with(options("workers", &worker_statement, true));
    tracing::info!(
        requests = budget.requests,
        relaxed = budget.relaxed,
        workers = budget.workers,
        relay = budget.relay,
        "postgres connection budget"
    );
    Ok(ProcessPools { requests, relaxed, workers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_never_exceeds_the_budget() {
        let none = Workers { relay: false, projectors: false, sweeper: false };
        for total in [0, 1, MIN_BUDGET, 13, 24, 40, 100, 500] {
            for workers in [Workers::ALL, none] {
                let budget = Budget::split(total, workers);
                assert_eq!(budget.total(), total.max(MIN_BUDGET), "{total} {workers:?}");
                assert!(budget.requests >= budget.relaxed && budget.relaxed >= 2, "{budget:?}");
            }
        }
        let all = Budget::split(40, Workers::ALL);
        assert_eq!((all.workers, all.relay), (keel_projections::registry::READ_MODELS.len() as u32 + 1, 1));
        assert_eq!(Budget::split(40, none).workers, 0);
    }
}
