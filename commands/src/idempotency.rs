//! Idempotency keys: a retry of a command returns the first result and never
//! makes a second effect (ADR 0007).
//!
//! The first request inserts a `pending` row with its fingerprint and a lease.
//! When it finishes, its response (or its refusal) is stored. A retry with the
//! same key and fingerprint gets the stored outcome; one that arrives while the
//! first is running waits for it; a different fingerprint is refused. A lease that
//! runs out (the first request's process died) is taken over by the retry, which
//! reuses the resource id the first one chose.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::bus::{CommandError, Failure};

/// How long a running request holds its key before a retry may take over.
const LEASE_SECONDS: i32 = 30;
/// How long a retry waits for a running first request before giving up.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(10);
/// Longest accepted key.
pub const MAX_KEY_LEN: usize = 255;

/// The idempotency store.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pool: PgPool,
}

/// How long a key is remembered: a retry later than this is a new request.
pub const RETENTION_HOURS: i32 = 24;

/// Forgets keys older than [`RETENTION_HOURS`]; returns how many.
pub async fn purge_expired(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let purged = sqlx::query("DELETE FROM command_idempotency WHERE created_at < now() - make_interval(hours => $1)")
        .bind(RETENTION_HOURS)
        .execute(pool)
        .await?;
    Ok(purged.rows_affected())
}

/// The fingerprint of a request: SHA-256 over its parts.
pub fn fingerprint(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

#[derive(sqlx::FromRow)]
struct Row {
    request_hash: String,
    state: String,
    resource_id: Option<String>,
    response: Option<Value>,
    lease_expired: bool,
}

impl Idempotency {
    /// The store on `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Runs `op` once per (`scope`, `key`). `op` gets the resource id to use:
    /// `candidate` the first time, the first attempt's choice on a takeover.
    pub async fn run<T, F, Fut>(
        &self,
        scope: &str,
        key: &str,
        request_hash: &str,
        candidate: &str,
        op: F,
    ) -> Result<T, CommandError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<T, CommandError>>,
    {
        let key = key.trim();
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(CommandError::new(
                Failure::InvalidArgument,
                "invalid_idempotency_key",
                format!("idempotency_key is required (1 to {MAX_KEY_LEN} characters)"),
            ));
        }
        let resource_id = self.acquire(scope, key, request_hash, candidate).await?;
        let resource_id = match resource_id {
            Acquired::Run(id) => id,
            Acquired::Done(stored) => return decode(stored),
        };
        let outcome = op(resource_id).await;
        match &outcome {
            Err(err) if err.is_transient() => self.release(scope, key).await,
            Ok(value) => self.finish(scope, key, serde_json::json!({ "ok": value })).await,
            Err(err) => self.finish(scope, key, serde_json::json!({ "err": err })).await,
        }
        outcome
    }

    async fn acquire(&self, scope: &str, key: &str, hash: &str, candidate: &str) -> Result<Acquired, CommandError> {
        let db = |e: sqlx::Error| CommandError::unavailable(&e);
        let inserted = sqlx::query(
            "INSERT INTO command_idempotency (scope, key, request_hash, state, resource_id, locked_until)
             VALUES ($1, $2, $3, 'pending', $4, now() + make_interval(secs => $5))
             ON CONFLICT (scope, key) DO NOTHING",
        )
        .bind(scope)
        .bind(key)
        .bind(hash)
        .bind(candidate)
        .bind(LEASE_SECONDS)
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        if inserted == 1 {
            return Ok(Acquired::Run(candidate.to_string()));
        }
        let deadline = tokio::time::Instant::now() + WAIT_FOR_FIRST;
        loop {
            let row: Option<Row> = sqlx::query_as(
                "SELECT request_hash, state, resource_id, response, locked_until < now() AS lease_expired
                 FROM command_idempotency WHERE scope = $1 AND key = $2",
            )
            .bind(scope)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
            let Some(row) = row else {
                // The first attempt failed transiently and released the key: start afresh.
                return Box::pin(self.acquire(scope, key, hash, candidate)).await;
            };
            if row.request_hash != hash {
                return Err(CommandError::new(
                    Failure::InvalidArgument,
                    "idempotency_key_reused",
                    "this idempotency_key was used for a different request",
                ));
            }
            if row.state == "done" {
                return Ok(Acquired::Done(row.response.unwrap_or(Value::Null)));
            }
            if row.lease_expired {
                let taken = sqlx::query(
                    "UPDATE command_idempotency SET locked_until = now() + make_interval(secs => $3)
                     WHERE scope = $1 AND key = $2 AND state = 'pending' AND locked_until < now()",
                )
                .bind(scope)
                .bind(key)
                .bind(LEASE_SECONDS)
                .execute(&self.pool)
                .await
                .map_err(db)?
                .rows_affected();
                if taken == 1 {
                    return Ok(Acquired::Run(row.resource_id.unwrap_or_else(|| candidate.to_string())));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CommandError::new(
                    Failure::Aborted,
                    "request_in_progress",
                    "a request with this idempotency_key is still in progress; retry",
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn finish(&self, scope: &str, key: &str, response: Value) {
        let result =
            sqlx::query("UPDATE command_idempotency SET state = 'done', response = $3 WHERE scope = $1 AND key = $2")
                .bind(scope)
                .bind(key)
                .bind(response)
                .execute(&self.pool)
                .await;
        if let Err(err) = result {
            // The effect happened; a retry after the lease will take over and find it done.
            tracing::warn!(error = %err, "could not record an idempotent response");
        }
    }

    async fn release(&self, scope: &str, key: &str) {
        let result = sqlx::query("DELETE FROM command_idempotency WHERE scope = $1 AND key = $2 AND state = 'pending'")
            .bind(scope)
            .bind(key)
            .execute(&self.pool)
            .await;
        if let Err(err) = result {
            tracing::warn!(error = %err, "could not release an idempotency key");
        }
    }
}

enum Acquired {
    Run(String),
    Done(Value),
}

fn decode<T: DeserializeOwned>(stored: Value) -> Result<T, CommandError> {
    let corrupt = || CommandError::new(Failure::Internal, "internal", "internal error");
    if let Some(err) = stored.get("err") {
        return Err(serde_json::from_value(err.clone()).map_err(|_| corrupt())?);
    }
    let ok = stored.get("ok").cloned().ok_or_else(corrupt)?;
    serde_json::from_value(ok).map_err(|_| corrupt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_separate_their_parts() {
        assert_ne!(fingerprint(&["ab", "c"]), fingerprint(&["a", "bc"]));
        assert_eq!(fingerprint(&["a", "b"]), fingerprint(&["a", "b"]));
    }

    #[test]
    fn decodes_stored_outcomes() {
        let ok: Result<i64, _> = decode(serde_json::json!({ "ok": 7 }));
        assert_eq!(ok, Ok(7));
        let err = CommandError::new(Failure::NotFound, "tenant_not_found", "tenant not found");
        let stored: Result<i64, _> = decode(serde_json::json!({ "err": err }));
        assert_eq!(stored, Err(err));
    }
}
