//! Operator credentials (`operator_credentials`): the bootstrap operator token that
//! `make up` creates on first start, stored as a hash, until an operator account
//! exists. The gateway hashes presented tokens; this module owns the table.

use sqlx::PgPool;

/// The id of the operator whose active credential has `token_hash`, if any.
pub async fn operator_id(pool: &PgPool, token_hash: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM operator_credentials WHERE token_hash = $1 AND revoked_at IS NULL")
        .bind(token_hash)
        .fetch_optional(pool)
        .await
}

/// Retires the bootstrap credential (once an operator account exists); returns
/// whether it was still active.
pub async fn retire_bootstrap(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let retired = sqlx::query(
        "UPDATE operator_credentials SET revoked_at = now(), retired_reason = 'operator_created'
         WHERE kind = 'bootstrap' AND revoked_at IS NULL",
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(retired > 0)
}

/// Stores the bootstrap credential with `token_hash` unless one exists; returns
/// whether it was stored now.
pub async fn create_bootstrap(owner: &PgPool, token_hash: &str) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO operator_credentials (id, kind, token_hash) VALUES ('op_bootstrap', 'bootstrap', $1)
         ON CONFLICT DO NOTHING",
    )
    .bind(token_hash)
    .execute(owner)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}
