//! Poison events are parked per tenant without stopping other tenants, and can be retried.

use std::time::Duration;

use keel_domain::envelope::{Actor, ActorType, EventEnvelope};
use keel_gateway::server::Workers;
use keel_projections::dead_letters;
use keel_projections::tenant_registry::{self, Scope, TenantRegistry};
use keel_tests::{TestEnv, eventually};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

fn envelope(tenant: &str, position: i64, event_type: &str, payload: serde_json::Value) -> EventEnvelope {
    EventEnvelope {
        event_id: uuid::Uuid::now_v7(),
        tenant_id: Some(tenant.to_string()),
        position,
        txid: 1,
        aggregate_type: "tenant".into(),
        aggregate_id: tenant.into(),
        sequence: position,
        event_type: event_type.into(),
        schema_version: "1".into(),
        occurred_at: "2026-01-01T00:00:00Z".parse().expect("time"),
        actor: Actor { kind: ActorType::System, id: "test".into() },
        correlation_id: "c".into(),
        causation_id: "c".into(),
        payload,
    }
}

fn provisioned(tenant: &str, domain: &str, position: i64) -> EventEnvelope {
    envelope(
        tenant,
        position,
        "tenant.provisioned",
        serde_json::json!({ "type": "tenant.provisioned", "tenant_id": tenant, "name": domain, "domain": domain,
                            "plan": "free", "owner_email": "o@x.io", "provisioned_at": "2026-01-01T00:00:00Z" }),
    )
}

#[tokio::test]
async fn a_poison_event_parks_its_tenant_only_and_can_be_retried() {
    let env = TestEnv::new().await;
    let keel = env.start_with(env.settings(), Workers { relay: false, projectors: true, sweeper: false }).await;
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", &env.brokers).create().expect("producer");
    let poisoned = "tnt_01jd0000000000000000000001";
    let healthy = "tnt_01jd0000000000000000000002";
    let messages = [
        envelope(poisoned, 1, "tenant.exploded", serde_json::json!({ "type": "tenant.exploded" })),
        provisioned(poisoned, "poisoned", 2),
        provisioned(healthy, "healthy", 3),
    ];
    for m in &messages {
        let payload = serde_json::to_vec(m).expect("json");
        producer
            .send(FutureRecord::to(&env.topic).key(m.key()).payload(&payload), Duration::from_secs(5))
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }
    let pool = env.app_pool().await;
    let healthy_applied = eventually(Duration::from_secs(30), || async {
        tenant_registry::get(&pool, &Scope::Platform, healthy).await.ok().flatten().is_some()
    })
    .await;
    assert!(healthy_applied, "the healthy tenant is projected despite the poison event");

    let parked = dead_letters::list(&pool, tenant_registry::NAME, Some(poisoned)).await.expect("list");
    assert_eq!(parked.len(), 2, "the poison event and the event held behind it");
    assert_eq!(parked[0].event_type.as_deref(), Some("tenant.exploded"));
    assert!(parked[0].error.contains("tenant.exploded"), "error says why: {}", parked[0].error);
    assert!(tenant_registry::get(&pool, &Scope::Platform, poisoned).await.expect("get").is_none());

    // Retrying cannot fix a poison event: everything stays parked, the attempt is counted.
    let outcome = dead_letters::retry(&pool, &TenantRegistry, poisoned).await.expect("retry");
    assert_eq!((outcome.applied, outcome.still_parked), (0, 2));
    assert_eq!(dead_letters::list(&pool, tenant_registry::NAME, Some(poisoned)).await.expect("list")[0].attempts, 1);

    // An operator discards it; the held event then applies on retry.
    assert!(dead_letters::discard(&pool, tenant_registry::NAME, parked[0].id).await.expect("discard"));
    let outcome = dead_letters::retry(&pool, &TenantRegistry, poisoned).await.expect("retry");
    assert_eq!((outcome.applied, outcome.still_parked), (1, 0));
    let row = tenant_registry::get(&pool, &Scope::Platform, poisoned).await.expect("get").expect("row");
    assert_eq!(row.domain.as_deref(), Some("poisoned"));
    assert!(dead_letters::list(&pool, tenant_registry::NAME, None).await.expect("list").is_empty());
    keel.stop().await;
}
