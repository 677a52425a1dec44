//! Commands keep succeeding while the broker is unreachable; the relay catches up
//! when it returns.
//!
//! The test runs a broker of its own, advertised behind a TCP proxy the test
//! controls: cutting the proxy drops every connection and refuses new ones, which
//! is what Keel sees when a broker goes down. (tansu 0.6's sqlite storage cannot
//! yet be restarted under this load, so the broker process itself stays up.)

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use keel_gateway::server::Workers;
use keel_tests::{TestEnv, eventually, wait_projected};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

use crate::support::{domain, provision, tenant_client};

pub(crate) fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port()
}

/// A broker of this test's own, on `port`, advertised at `advertised`.
pub(crate) struct PrivateBroker(Child);

impl PrivateBroker {
    pub(crate) fn start(port: u16, advertised: u16) -> Self {
        let bin = std::env::var("KEEL_TANSU_BIN").expect("KEEL_TANSU_BIN is not set: run the tests with `make test`");
        let child = Command::new(bin)
            .args(["broker", "--cluster-id", "keel-it-outage"])
            .args(["--listener-url", &format!("tcp://127.0.0.1:{port}")])
            .args(["--advertised-listener-url", &format!("tcp://127.0.0.1:{advertised}")])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        Self(child)
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Forwards `port` to `upstream` until cut.
pub(crate) struct Proxy {
    tasks: JoinSet<()>,
}

impl Proxy {
    pub(crate) async fn start(port: u16, upstream: u16) -> Self {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("reuseaddr");
        socket.bind(([127, 0, 0, 1], port).into()).expect("bind proxy");
        let listener = socket.listen(128).expect("listen");
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self { tasks }
    }

    /// Drops every connection and stops listening.
    pub(crate) async fn cut(mut self) {
        self.tasks.shutdown().await;
    }
}

#[tokio::test]
async fn commands_accepted_while_the_broker_is_down_are_projected_after_it_returns() {
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

    proxy.cut().await;
    let mut last = 0;
    for i in 0..20 {
        last = provision(&mut client, &token, &domain(&format!("outage{i}"))).await.position;
    }
    let down = eventually(Duration::from_secs(60), || async {
        !keel.relay.broker_ok.load(std::sync::atomic::Ordering::Relaxed)
    })
    .await;
    assert!(down, "the relay noticed the broker is gone");
    let owner = env.owner_pool().await;
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM rm_tenant_registry.tenants")
            .fetch_one(&owner)
            .await
            .expect("count")
    };
    assert_eq!(count().await, 1, "nothing reaches the read model while the broker is away");

    let _proxy = Proxy::start(proxy_port, broker_port).await;
    wait_projected(&keel.pool, "tenant_registry", &env.topic, last, Duration::from_secs(90)).await;
    assert_eq!(count().await, 21);
    keel.stop().await;
}
