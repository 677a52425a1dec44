//! A small, ordered SQL migration runner. Each crate that owns tables ships its
//! numbered `.sql` files; `keel migrate` applies the ones not applied yet, in one
//! transaction, under an advisory lock, as the migration role.

use sqlx::PgPool;

/// One migration: a unique name and its SQL. `{runtime_role}` in the SQL is
/// replaced by the runtime role's name (for grants).
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Unique name, e.g. `commands/0001_event_store`.
    pub name: &'static str,
    /// The statements.
    pub sql: &'static str,
}

/// The write side's migrations, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration { name: "commands/0001_event_store", sql: include_str!("../sql/0001_event_store.sql") },
    Migration { name: "commands/0002_idempotency", sql: include_str!("../sql/0002_idempotency.sql") },
    Migration { name: "commands/0003_relay", sql: include_str!("../sql/0003_relay.sql") },
    Migration { name: "commands/0004_operator_credentials", sql: include_str!("../sql/0004_operator_credentials.sql") },
    Migration { name: "commands/0005_identity", sql: include_str!("../sql/0005_identity.sql") },
    Migration { name: "commands/0006_apps", sql: include_str!("../sql/0006_apps.sql") },
    Migration { name: "commands/0007_billing", sql: include_str!("../sql/0007_billing.sql") },
    Migration { name: "commands/0008_audit", sql: include_str!("../sql/0008_audit.sql") },
    Migration { name: "commands/0009_relay_parked", sql: include_str!("../sql/0009_relay_parked.sql") },
    Migration { name: "commands/0010_oidc_clients", sql: include_str!("../sql/0010_oidc_clients.sql") },
    Migration { name: "commands/0011_oidc", sql: include_str!("../sql/0011_oidc.sql") },
    Migration { name: "commands/0012_secrets_under_kek", sql: include_str!("../sql/0012_secrets_under_kek.sql") },
];

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The runtime role name is not a plain SQL identifier.
    #[error("runtime role must match [a-z_][a-z0-9_]*")]
    BadRoleName,
    /// The database refused a statement.
    #[error("migration {name} failed: {source}")]
    Sql {
        /// Which migration.
        name: String,
        /// The database error.
        source: sqlx::Error,
    },
}

/// Whether `name` is a plain lowercase SQL identifier (safe to splice into DDL).
pub fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

/// Applies every migration in `migrations` not applied yet; returns the names applied now.
pub async fn run(
    pool: &PgPool,
    migrations: &[Migration],
    runtime_role: &str,
) -> Result<Vec<&'static str>, MigrateError> {
    if !is_plain_identifier(runtime_role) {
        return Err(MigrateError::BadRoleName);
    }
    let sql_err = |name: &str| {
        let name = name.to_string();
        move |source| MigrateError::Sql { name: name.clone(), source }
    };
    let mut tx = pool.begin().await.map_err(sql_err("begin"))?;
    sqlx::query("SELECT pg_advisory_xact_lock(7242001)").execute(&mut *tx).await.map_err(sql_err("lock"))?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS keel_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&mut *tx)
    .await
    .map_err(sql_err("keel_migrations"))?;
    let mut applied = Vec::new();
    for m in migrations {
        let done: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM keel_migrations WHERE name = $1)")
            .bind(m.name)
            .fetch_one(&mut *tx)
            .await
            .map_err(sql_err(m.name))?;
        if done {
            continue;
        }
        let sql = m.sql.replace("{runtime_role}", runtime_role);
        sqlx::raw_sql(&sql).execute(&mut *tx).await.map_err(sql_err(m.name))?;
        sqlx::query("INSERT INTO keel_migrations (name) VALUES ($1)")
            .bind(m.name)
            .execute(&mut *tx)
            .await
            .map_err(sql_err(m.name))?;
        applied.push(m.name);
    }
    tx.commit().await.map_err(sql_err("commit"))?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(is_plain_identifier("keel_app"));
        assert!(!is_plain_identifier("keel-app"));
        assert!(!is_plain_identifier("x; DROP TABLE events"));
        assert!(!is_plain_identifier("1abc"));
    }
}
