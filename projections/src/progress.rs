//! Read-your-writes, the read side's half: has a read model applied every message up
//! to given offsets? (The write side's half — has the relay published a position, and
//! up to which offsets — is `keel_commands::relay::published_through`.)

use std::collections::HashMap;

use sqlx::PgPool;

use crate::read_model::live_schema;

/// Whether read model `name` has applied, on `topic`, every message up to `published`
/// (the last published offset per partition): its stored next offset is beyond it on
/// every partition.
pub async fn has_applied(
    pool: &PgPool,
    name: &str,
    topic: &str,
    published: &HashMap<i32, i64>,
) -> Result<bool, sqlx::Error> {
    let applied: HashMap<i32, i64> = sqlx::query_as::<_, (i32, i64)>(&format!(
        "SELECT partition, next_offset FROM {}._offsets WHERE topic = $1",
        live_schema(name)
    ))
    .bind(topic)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    Ok(published.iter().all(|(partition, last)| applied.get(partition).is_some_and(|next| next > last)))
}
