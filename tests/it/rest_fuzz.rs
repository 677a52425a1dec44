//! Suite 1: schema-driven fuzzing of every operation in `/v1/openapi.json` with
//! schemathesis (installed by `make test`, see scripts/lib.sh): no 5xx, no answer the
//! document does not describe (status, content type, headers, body), and a rejected
//! request changes nothing.

use std::process::Command;

use keel_tests::TestEnv;

use crate::support::{domain, provision, tenant_client};

/// The checks every answer must pass.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";

/// Runs schemathesis (one worker: CPython 3.11's parser is not thread-safe under
/// schemathesis' coverage phase) against the Keel at `base` with `args`; returns (passed, output).
async fn schemathesis(base: &str, token: &str, args: &[&str]) -> (bool, String) {
    let bin = std::env::var("KEEL_SCHEMATHESIS_BIN")
        .expect("KEEL_SCHEMATHESIS_BIN is not set: run the tests with `make test`, which installs schemathesis");
    assert!(std::path::Path::new(&bin).is_file(), "schemathesis is missing at {bin}");
    // Its cache of failures goes to a directory of its own, not into the checkout.
    let dir = std::env::temp_dir().join(format!("keel-schemathesis-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("schemathesis directory");
    let mut command = Command::new(bin);
    command
        .current_dir(&dir)
        .arg("run")
        .arg(format!("{base}/v1/openapi.json"))
        .args(["--url", base, "--checks", CHECKS, "--workers", "1", "--seed", "13", "--no-color"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--suppress-health-check", "all", "--request-timeout", "10"])
        .args(args)
        .args(["--generation-database", "none"])
        .env("NO_COLOR", "1");
    let output = tokio::task::spawn_blocking(move || command.output()).await.expect("join").expect("run schemathesis");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let _ = std::fs::remove_dir_all(&dir);
    // A request it could not complete (e.g. a body cut off mid-stream) is an error, which
    // schemathesis reports without failing: it fails here.
    let errored = text.lines().any(|l| l.contains(" errored") || l.contains("Runtime Error"));
    (output.status.success() && !errored, text)
}

/// Events that are effects of a command (audit records, checkpoints and the login guard's
/// counts of refused sign-ins are what a refusal is meant to leave).
async fn effects(env: &TestEnv) -> i64 {
    let owner = env.owner_pool().await;
    let count = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type NOT IN ('audit', 'audit_checkpoint', 'login_guard')",
    )
    .fetch_one(&owner)
    .await
    .expect("count events");
    owner.close().await;
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_only_what_its_document_says() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let token = env.operator_token().await;
    let mut tenants = tenant_client(keel.grpc_addr).await;
    provision(&mut tenants, &token, &domain("fuzz")).await;
    let base = format!("http://{}", keel.rest_addr);

    // Invalid input only: every request is refused, and refusals leave no effect.
    let before = effects(&env).await;
    let (passed, output) =
        schemathesis(&base, &token, &["--mode", "negative", "--max-examples", "15", "--max-time", "60"]).await;
    println!("{output}");
    assert!(passed, "schemathesis found failures on invalid input:\n{output}");
    assert_eq!(effects(&env).await, before, "a rejected request changed something");

    // Valid and invalid input, every phase.
    let (passed, output) = schemathesis(&base, &token, &["--max-examples", "25", "--max-time", "90"]).await;
    println!("{output}");
    assert!(passed, "schemathesis found failures:\n{output}");
    keel.stop().await;
}
