//! The projector's exactly-once effect: crashes, redeliveries and rebuilds.

use std::time::Duration;

use keel_commands::bus::CommandContext;
use keel_commands::tenants::{ProvisionRequest, TenantCommands};
use keel_domain::envelope::Actor;
use keel_domain::ids::TenantId;
use keel_domain::tenant::TenantCommand;
use keel_gateway::server::Workers;
use keel_tests::{TestEnv, wait_projected};
use sqlx::PgPool;

fn ctx() -> CommandContext {
    CommandContext::new(Actor::system("test"), uuid::Uuid::now_v7().to_string(), uuid::Uuid::now_v7().to_string())
}

/// A workload: provision `tenants` tenants, then walk each through suspend /
/// reactivate / plan changes; returns the last position.
async fn workload(commands: &TenantCommands, prefix: &str, tenants: usize, rounds: usize) -> i64 {
    let mut ids = Vec::new();
    let mut last = 0;
    for t in 0..tenants {
        let domain = format!("{prefix}-{t}");
        let request = ProvisionRequest {
            name: domain.clone(),
            domain: domain.clone(),
            plan: "free".into(),
            owner_email: format!("o@{domain}.io"),
            industry: None,
            region: None,
        };
        let done = commands.provision(&ctx(), &request).await.expect("provision");
        last = last.max(done.position);
        ids.push(done.tenant_id.parse::<TenantId>().expect("id"));
    }
    for round in 0..rounds {
        for (i, id) in ids.iter().enumerate() {
            let command = match (round + i) % 3 {
                0 => TenantCommand::Suspend { reason: format!("round {round}") },
                1 => TenantCommand::Reactivate,
                _ => TenantCommand::ChangePlan {
                    plan: if round % 2 == 0 {
                        "pro".parse().expect("plan")
                    } else {
                        "enterprise".parse().expect("plan")
                    },
                },
            };
            if let Ok(done) = commands.execute(&ctx(), id, command).await {
                last = last.max(done.position);
            }
        }
    }
    last
}

async fn snapshot(owner: &PgPool) -> serde_json::Value {
    sqlx::query_scalar(
        "SELECT COALESCE(json_agg(t ORDER BY tenant_id), '[]'::json)::jsonb FROM rm_tenant_registry.tenants t",
    )
    .fetch_one(owner)
    .await
    .expect("snapshot")
}

#[tokio::test]
async fn a_relay_and_projector_killed_mid_stream_leave_the_same_read_model_as_a_clean_rebuild() {
    let env = TestEnv::new().await;
    let writer_pool = env.app_pool().await;
    let commands = TenantCommands::new(writer_pool.clone());
    let first = env.start_with(env.settings(), Workers { relay: true, projectors: true, sweeper: false }).await;

    let writing = {
        let commands = TenantCommands::new(writer_pool.clone());
        tokio::spawn(async move { workload(&commands, "crash", 40, 12).await })
    };
    // Let both workers get going, then kill them mid-stream.
    let started = keel_tests::eventually(Duration::from_secs(30), || async {
        first.registry.applied.load(std::sync::atomic::Ordering::Relaxed) > 50
    })
    .await;
    assert!(started, "the projector made progress before the crash");
    first.kill().await;

    // The relay republishes what it had not checkpointed; the projector resumes from its stored offsets.
    let second = env.start_with(env.settings(), Workers { relay: true, projectors: true, sweeper: false }).await;
    let last = writing.await.expect("workload").max(workload(&commands, "after", 5, 3).await);
    wait_projected(&writer_pool, "tenant_registry", &env.topic, last, Duration::from_secs(60)).await;

    let owner = env.owner_pool().await;
    let live = snapshot(&owner).await;
    assert_eq!(live.as_array().map(Vec::len), Some(45));

    // A clean rebuild from offset 0 (swapped in while the live projector runs) gives the same rows.
    let report = env.rebuild_registry().await;
    assert!(report.messages > 0);
    assert_eq!(snapshot(&owner).await, live, "the rebuilt read model equals the live one");

    // And the live projector keeps working on the swapped-in schema.
    let more = workload(&commands, "post-replay", 2, 1).await;
    wait_projected(&writer_pool, "tenant_registry", &env.topic, more, Duration::from_secs(30)).await;
    assert_eq!(snapshot(&owner).await.as_array().map(Vec::len), Some(47));
    second.stop().await;
}

#[tokio::test]
async fn events_the_relay_publishes_again_are_not_applied_twice() {
    let env = TestEnv::new().await;
    let keel = env.start_with(env.settings(), Workers { relay: true, projectors: true, sweeper: false }).await;
    let last = workload(&keel.tenants, "again", 10, 4).await;
    let pool = env.app_pool().await;
    wait_projected(&pool, "tenant_registry", &env.topic, last, Duration::from_secs(30)).await;
    let owner = env.owner_pool().await;
    let before = snapshot(&owner).await;
    let applied = keel.registry.applied.load(std::sync::atomic::Ordering::Relaxed);
    let published = keel.relay.published.load(std::sync::atomic::Ordering::Relaxed);
    keel.stop().await;

    // Rewind the relay: it publishes the whole history a second time.
    sqlx::query("DELETE FROM relay_checkpoint").execute(&owner).await.expect("rewind");
    let again = env.start_with(env.settings(), Workers { relay: true, projectors: true, sweeper: false }).await;
    let republished = keel_tests::eventually(Duration::from_secs(30), || async {
        again.relay.published.load(std::sync::atomic::Ordering::Relaxed) >= published
    })
    .await;
    assert!(republished, "the relay published the history again");
    wait_projected(&pool, "tenant_registry", &env.topic, last, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(again.registry.applied.load(std::sync::atomic::Ordering::Relaxed), 0, "no repeat was applied");
    assert!(applied > 0);
    assert_eq!(snapshot(&owner).await, before, "the read model did not change");
    again.stop().await;
}

#[tokio::test]
async fn two_instances_share_the_work_and_apply_each_event_exactly_once() {
    let env = TestEnv::new().await;
    let workers = Workers { relay: true, projectors: true, sweeper: false };
    let a = env.start_with(env.settings(), workers).await;
    let b = env.start_with(env.settings(), workers).await;
    let last = workload(&a.tenants, "pair", 30, 6).await;
    let pool = env.app_pool().await;
    wait_projected(&pool, "tenant_registry", &env.topic, last, Duration::from_secs(60)).await;

    let leaders = [&a, &b].iter().filter(|k| k.relay.leader.load(std::sync::atomic::Ordering::Relaxed)).count();
    assert_eq!(leaders, 1, "one relay leads, the other stands by");
    let owner = env.owner_pool().await;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'tenant'")
        .fetch_one(&owner)
        .await
        .expect("count");
    let applied = |k: &keel_gateway::server::Running| k.registry.applied.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(applied(&a) + applied(&b), events as u64, "every tenant event applied once, by one of the two");

    let live = snapshot(&owner).await;
    env.rebuild_registry().await;
    assert_eq!(snapshot(&owner).await, live);
    a.stop().await;
    b.stop().await;
}
