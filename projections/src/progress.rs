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
    let applied = next_offsets(pool, name, topic).await?;
    Ok(published.iter().all(|(partition, last)| applied.get(partition).is_some_and(|next| next > last)))
}

/// Read model `name`'s next offset to apply on `topic`, per partition (a partition it
/// has never applied a message of is absent).
pub async fn next_offsets(pool: &PgPool, name: &str, topic: &str) -> Result<HashMap<i32, i64>, sqlx::Error> {
    let rows = sqlx::query_as::<_, (i32, i64)>(&format!(
        "SELECT partition, next_offset FROM {}._offsets WHERE topic = $1",
        live_schema(name)
    ))
    .bind(topic)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// How many published messages read model `name` has not applied yet: per partition,
/// those from its next offset up to `published` (the last published offset).
pub fn messages_behind(published: &HashMap<i32, i64>, next: &HashMap<i32, i64>) -> i64 {
    published.iter().map(|(partition, last)| (last + 1 - next.get(partition).copied().unwrap_or(0)).max(0)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_published_messages_not_applied_on_each_partition() {
        let published = HashMap::from([(0, 9), (1, 4), (2, 0)]);
        assert_eq!(messages_behind(&published, &HashMap::from([(0, 10), (1, 2), (2, 1)])), 3);
        assert_eq!(messages_behind(&published, &HashMap::from([(0, 10)])), 5 + 1, "unseen partitions count whole");
        assert_eq!(messages_behind(&HashMap::new(), &HashMap::from([(0, 3)])), 0);
    }
}
