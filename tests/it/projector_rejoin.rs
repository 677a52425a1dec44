//! A projector held up in Postgres while its consumer-group session times out (the
//! broker cut off for longer than the session) catches up once Postgres lets it go.
//!
//! What the fault suite saw: the broker came back, Postgres died moments later, the
//! projectors' sessions timed out ("Unknown member") while they retried a batch,
//! and some never moved again.

use std::time::Duration;

use keel_gateway::server::Workers;
use keel_tests::{TestEnv, eventually, wait_projected};
use sqlx::Connection as _;
use tokio::net::TcpStream;

use crate::broker_outage::{PrivateBroker, Proxy, free_port};
use crate::support::{domain, provision, tenant_client};

#[tokio::test]
async fn a_projector_stuck_in_postgres_across_a_session_timeout_catches_up() {
    let env = TestEnv::new().await;
    let (broker_port, proxy_port) = (free_port(), free_port());
    let _broker = PrivateBroker::start(broker_port, proxy_port);
    let proxy = Proxy::start(proxy_port, broker_port).await;
    let up =
        eventually(Duration::from_secs(20), || async { TcpStream::connect(("127.0.0.1", broker_port)).await.is_ok() })
            .await;
    assert!(up, "private broker listens");
    let mut settings = env.settings();
    settings.kafka_brokers = format!("127.0.0.1:{proxy_port}");
    let keel = env.start_with(settings, Workers { relay: true, projectors: true, sweeper: false }).await;
    let token = env.operator_token().await;
    let mut client = tenant_client(keel.grpc_addr).await;
    let first = provision(&mut client, &token, &domain("before")).await;
    wait_projected(&keel.pool, "tenant_registry", &env.topic, first.position, Duration::from_secs(60)).await;

    // Hold the read model's offsets: its next batch waits in Postgres, and its consumer is not polled.
    let mut owner = sqlx::PgConnection::connect(&env.owner_url).await.expect("owner");
    let mut lock = owner.begin().await.expect("begin");
    sqlx::query("LOCK TABLE rm_tenant_registry._offsets IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let held = provision(&mut client, &token, &domain("held")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The group session (3 s in tests) times out while the broker is away.
    proxy.cut().await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let _proxy = Proxy::start(proxy_port, broker_port).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    lock.rollback().await.expect("release");

    let after = provision(&mut client, &token, &domain("after")).await;
    assert!(after.position > held.position);
    wait_projected(&keel.pool, "tenant_registry", &env.topic, after.position, Duration::from_secs(60)).await;
    keel.stop().await;
}
