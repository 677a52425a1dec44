//! The event store's global order and the relay's reading of it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use keel_commands::bus::CommandContext;
use keel_commands::relay::{Checkpoint, read_batch};
use keel_commands::tenants::{ProvisionRequest, TenantCommands};
use keel_domain::envelope::{Actor, EventEnvelope};
use keel_domain::ids::TenantId;
use keel_domain::tenant::TenantCommand;
use keel_gateway::server::Workers;
use keel_tests::{TestEnv, wait_projected};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

fn ctx() -> CommandContext {
    CommandContext::new(Actor::system("test"), uuid::Uuid::now_v7().to_string(), uuid::Uuid::now_v7().to_string())
}

async fn provision(commands: &TenantCommands, domain: &str) -> TenantId {
    let request = ProvisionRequest {
        name: domain.into(),
        domain: domain.into(),
        plan: "free".into(),
        owner_email: format!("o@{domain}.io"),
        industry: None,
        region: None,
    };
    commands.provision(&ctx(), &request).await.expect("provision").tenant_id.parse().expect("tenant id")
}

#[tokio::test]
async fn the_reader_never_skips_an_event_committed_late() {
    let env = TestEnv::new().await;
    let pool = env.app_pool().await;
    let commands = TenantCommands::new(pool.clone());

    // A writes first (lower position) but commits last.
    let mut slow = pool.begin().await.expect("begin");
    let late_id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('probe', 'p1', 1, 'probe.written', '1', '{}', $1)",
    )
    .bind(serde_json::json!({ "event_id": late_id.to_string(), "actor_type": "system", "actor_id": "test",
                              "occurred_at": "2026-01-01T00:00:00Z", "command_id": uuid::Uuid::now_v7().to_string() }))
    .execute(&mut *slow)
    .await
    .expect("insert");
    // B commits in between.
    provision(&commands, "between").await;

    let mut conn = pool.acquire().await.expect("conn");
    let early = read_batch(&mut conn, &Checkpoint::default(), 100).await.expect("read");
    assert!(early.is_empty(), "nothing may be read past an open transaction, got {} events", early.len());

    slow.commit().await.expect("commit");
    // Transaction ids are cluster-wide: another test's open transaction can hold the
    // horizon back for a moment, so read until it has passed.
    let mut all = Vec::new();
    for _ in 0..500 {
        all = read_batch(&mut conn, &Checkpoint::default(), 100).await.expect("read");
        if all.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(all.len(), 3, "the late event and both provisioning events");
    assert_eq!(all[0].event_id, late_id, "the late writer's event comes first in global order");
    let orders: Vec<(i64, i64)> = all.iter().map(EventEnvelope::order).collect();
    assert!(orders.windows(2).all(|w| w[0] < w[1]), "global order is strictly increasing: {orders:?}");
}

#[tokio::test]
async fn eight_concurrent_writers_and_ten_thousand_events_reach_kafka_once_in_tenant_order() {
    const WRITERS: usize = 8;
    const TENANTS_PER_WRITER: usize = 50;
    const TOGGLES: usize = 23; // 2 provisioning events + 23 = 25 events per tenant

    let env = TestEnv::with_partitions(6).await;
    let keel = env.start_with(env.settings(), Workers { relay: true, projectors: true, sweeper: false }).await;
    let pool = env.app_pool().await;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let commands = TenantCommands::new(pool.clone());
        writers.push(tokio::spawn(async move {
            let mut last = 0;
            for t in 0..TENANTS_PER_WRITER {
                let id = provision(&commands, &format!("w{w}-t{t}")).await;
                for i in 0..TOGGLES {
                    let command = if i % 2 == 0 {
                        TenantCommand::Suspend { reason: format!("r{i}") }
                    } else {
                        TenantCommand::Reactivate
                    };
                    last = last.max(commands.execute(&ctx(), &id, command).await.expect("toggle").position);
                }
            }
            last
        }));
    }
    let mut last = 0;
    for writer in writers {
        last = last.max(writer.await.expect("writer"));
    }
    let stored: Vec<(uuid::Uuid, String, i64)> =
        sqlx::query_as("SELECT event_id, aggregate_id, sequence FROM events").fetch_all(&pool).await.expect("events");
    assert_eq!(stored.len(), WRITERS * TENANTS_PER_WRITER * (2 + TOGGLES));
    assert!(stored.len() >= 10_000);

    // Read the topic back with a plain Kafka consumer.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("group.id", format!("verify-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..env.partitions {
        assignment.add_partition_offset(&env.topic, p, Offset::Beginning).expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    let mut seen: Vec<(i32, EventEnvelope)> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while seen.len() < stored.len() && std::time::Instant::now() < deadline {
        if let Ok(Ok(message)) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
            let envelope: EventEnvelope =
                serde_json::from_slice(message.payload().expect("payload")).expect("envelope");
            assert_eq!(message.key(), Some(envelope.key().as_bytes()), "message key is the tenant id");
            seen.push((message.partition(), envelope));
        }
    }
    assert_eq!(seen.len(), stored.len(), "every stored event reaches Kafka");
    let ids: HashSet<uuid::Uuid> = seen.iter().map(|(_, e)| e.event_id).collect();
    assert_eq!(ids.len(), seen.len(), "each event id exactly once");
    assert_eq!(ids, stored.iter().map(|(id, _, _)| *id).collect::<HashSet<_>>());

    // Per tenant: one partition, strictly increasing global order, gapless aggregate sequences.
    let mut partition_of: HashMap<String, i32> = HashMap::new();
    let mut last_order: HashMap<String, (i64, i64)> = HashMap::new();
    let mut last_sequence: HashMap<(String, String), i64> = HashMap::new();
    for (partition, event) in &seen {
        let tenant = event.key().to_string();
        assert_eq!(
            *partition_of.entry(tenant.clone()).or_insert(*partition),
            *partition,
            "tenant {tenant} in one partition"
        );
        if let Some(previous) = last_order.insert(tenant.clone(), event.order()) {
            assert!(previous < event.order(), "tenant {tenant} out of order");
        }
        let key = (event.aggregate_type.clone(), event.aggregate_id.clone());
        let previous = last_sequence.insert(key, event.sequence).unwrap_or(0);
        assert_eq!(event.sequence, previous + 1, "aggregate sequence without gaps");
    }

    // And the projector applied all of it: every tenant active (23 toggles end suspended).
    wait_projected(&pool, "tenant_registry", &env.topic, last, Duration::from_secs(60)).await;
    let owner = env.owner_pool().await;
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM rm_tenant_registry.tenants GROUP BY status")
            .fetch_all(&owner)
            .await
            .expect("registry");
    assert_eq!(statuses, vec![("suspended".to_string(), (WRITERS * TENANTS_PER_WRITER) as i64)]);
    keel.stop().await;
}

#[tokio::test]
async fn processes_with_their_own_aggregate_caches_never_decide_on_stale_state() {
    let env = TestEnv::new().await;
    let pool = env.app_pool().await;
    let (a, b) = (TenantCommands::new(pool.clone()), TenantCommands::new(pool.clone()));
    let id = provision(&a, "coherent").await;
    let suspend = || TenantCommand::Suspend { reason: "x".into() };
    a.execute(&ctx(), &id, suspend()).await.expect("a suspends (a caches: suspended)");
    b.execute(&ctx(), &id, TenantCommand::Reactivate).await.expect("b reactivates (b caches: active)");
    // a's cache is stale (suspended): its refusal would be wrong; the true state is active.
    a.execute(&ctx(), &id, suspend()).await.expect("a suspends again, decided on fresh state");
    // b's cache is stale (active): a commit from it conflicts and is retried on fresh state.
    b.execute(&ctx(), &id, TenantCommand::Reactivate).await.expect("b reactivates, decided on fresh state");
    // A true refusal stays a refusal.
    let refused = b.execute(&ctx(), &id, TenantCommand::Reactivate).await.expect_err("already active");
    assert_eq!(refused.code, "tenant_not_suspended");
    let sequences: Vec<i64> =
        sqlx::query_scalar("SELECT sequence FROM events WHERE aggregate_id = $1 ORDER BY sequence")
            .bind(id.as_str())
            .fetch_all(&pool)
            .await
            .expect("events");
    assert_eq!(sequences, vec![1, 2, 3, 4, 5], "provisioned, then four lifecycle events, no gaps or repeats");
}

/// An event of aggregate `test/<id>` at `sequence`, with its own event id.
fn test_event(id: &str, sequence: usize) -> cqrs_es::persist::SerializedEvent {
    cqrs_es::persist::SerializedEvent {
        aggregate_id: id.into(),
        sequence,
        aggregate_type: "test".into(),
        event_type: "test.happened".into(),
        event_version: "1".into(),
        payload: serde_json::json!({ "type": "test.happened" }),
        metadata: serde_json::json!({ "event_id": uuid::Uuid::now_v7().to_string() }),
    }
}

#[tokio::test]
async fn concurrent_appends_share_transactions_and_a_lost_race_fails_only_its_own_append() {
    use keel_commands::group_commit::{Append, GroupCommit};
    let env = TestEnv::new().await;
    let pool = env.app_pool().await;
    let group = GroupCommit::new(pool.clone());
    // 200 appends on their own aggregates, and two that race for the same sequence.
    let mut ids: Vec<String> = (0..200).map(|i| format!("a{i}")).collect();
    ids.extend(["raced".to_string(), "raced".to_string()]);
    let appends = ids.iter().map(|id| {
        let group = group.clone();
        let events = vec![test_event(id, 1), test_event(id, 2)];
        async move { group.append(Append { events, record: None }).await }
    });
    let outcomes = futures::future::join_all(appends).await;

    let (won, lost): (Vec<_>, Vec<_>) = outcomes.iter().zip(&ids).partition(|(outcome, _)| outcome.is_ok());
    assert_eq!(won.len(), 201, "every append but one of the racing pair commits");
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].1, "raced");
    let lost_race = lost[0].0.as_ref().expect_err("lost");
    assert!(
        matches!(lost_race, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505")),
        "the loser gets the primary key's refusal, exactly as alone: {lost_race}"
    );
    // Each append's answer is the position of its own last event.
    let stored: HashMap<String, (i64, i64)> = sqlx::query_as::<_, (String, i64, i64)>(
        "SELECT aggregate_id, max(position), count(*) FROM events WHERE aggregate_type = 'test' GROUP BY aggregate_id",
    )
    .fetch_all(&pool)
    .await
    .expect("events")
    .into_iter()
    .map(|(id, position, count)| (id, (position, count)))
    .collect();
    for (outcome, id) in won {
        assert_eq!(stored[id], (*outcome.as_ref().expect("won"), 2), "{id}: its position, both its events");
    }
    let transactions: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT txid::text) FROM events WHERE aggregate_type = 'test'")
            .fetch_one(&pool)
            .await
            .expect("transactions");
    assert!(transactions < 201, "201 appends committed in {transactions} transactions: they were grouped");
}
