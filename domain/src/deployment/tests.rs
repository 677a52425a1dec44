//! Given events, when a command, then events (or an error).

use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::DomainEvent;
use cqrs_es::test::TestFramework;

use super::*;

type Given = TestFramework<Deployment>;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

fn target(state: &str) -> DeploymentTarget {
    DeploymentTarget::new(" Production ", "EU-1", "acme", "https://Acme.EU-1.internal:8443/app", state).unwrap()
}

fn target_set(state: DeploymentState) -> DeploymentEvent {
    DeploymentEvent::TargetSet {
        environment: "production".into(),
        cluster: "eu-1".into(),
        namespace: "acme".into(),
        routing_target: "https://acme.eu-1.internal:8443/app".into(),
        state,
    }
}

#[test]
fn sets_a_normalized_target() {
    Given::with(())
        .given_no_previous_events()
        .when(DeploymentCommand::SetTarget(target("Deploying")))
        .then_expect_events(vec![target_set(DeploymentState::Deploying)]);
}

#[test]
fn an_unchanged_target_writes_nothing() {
    Given::with(())
        .given(vec![target_set(DeploymentState::Active)])
        .when(DeploymentCommand::SetTarget(target("active")))
        .then_expect_events(vec![]);
}

#[test]
fn a_state_change_is_a_new_target_event() {
    Given::with(())
        .given(vec![target_set(DeploymentState::Deploying)])
        .when(DeploymentCommand::SetTarget(target("active")))
        .then_expect_events(vec![target_set(DeploymentState::Active)]);
}

#[test]
fn validation_names_the_bad_field() {
    let bad = |env, cluster, ns, target, state| DeploymentTarget::new(env, cluster, ns, target, state).unwrap_err();
    assert_eq!(bad("2prod", "eu-1", "acme", "acme.io", "active"), DeploymentError::InvalidEnvironment);
    assert_eq!(bad("prod", "-eu", "acme", "acme.io", "active"), DeploymentError::InvalidCluster);
    assert_eq!(bad("prod", "eu-1", "ac.me", "acme.io", "active"), DeploymentError::InvalidNamespace);
    assert_eq!(bad("prod", "eu-1", "acme", "acme io", "active"), DeploymentError::InvalidRoutingTarget);
    assert_eq!(bad("prod", "eu-1", "acme", "acme.io", "running"), DeploymentError::InvalidState);
    assert_eq!(DeploymentError::InvalidState.code(), "invalid_deployment_state");
    assert_eq!(DeploymentError::InvalidCluster.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn labels_are_dns_labels() {
    assert_eq!(label(" EU-1 ").as_deref(), Some("eu-1"));
    for bad in ["", "-a", "a-", "a_b", "a.b", &"a".repeat(64)] {
        assert_eq!(label(bad), None, "{bad}");
    }
}

#[test]
fn routing_targets_are_hosts_with_ports_or_urls() {
    assert_eq!(routing_target("Acme.Internal").as_deref(), Some("acme.internal"));
    assert_eq!(routing_target("10.0.0.7:8080").as_deref(), Some("10.0.0.7:8080"));
    assert_eq!(routing_target("HTTPS://Edge.io/A?b=C").as_deref(), Some("https://edge.io/A?b=C"));
    assert_eq!(routing_target("h2c://svc.ns:80").as_deref(), Some("h2c://svc.ns:80"));
    let long = format!("{}.io", vec!["a".repeat(63); 4].join("."));
    for bad in [
        "",
        "acme io",
        "acme.io:0",
        "acme.io:65536",
        "acme.io:",
        "acme.io/path",
        "https://",
        "https://user@acme.io",
        "://acme.io",
        "1http://acme.io",
        "acme..io",
        "acme.io.",
        long.as_str(),
    ] {
        assert_eq!(routing_target(bad), None, "{bad}");
    }
}

#[test]
fn every_health_report_is_recorded() {
    let report = HealthReport::new("app_01", "acme.eu-1.internal:8443", "ACTIVE", true, t0()).unwrap();
    let reported = DeploymentEvent::HealthReported {
        agent_id: "app_01".into(),
        observed_target: "acme.eu-1.internal:8443".into(),
        observed_state: DeploymentState::Active,
        healthy: true,
        reported_at: t0(),
    };
    Given::with(())
        .given(vec![target_set(DeploymentState::Active), reported.clone()])
        .when(DeploymentCommand::ReportHealth(report.clone()))
        .then_expect_events(vec![reported.clone()]);
    // A report for a tenant with no target yet is recorded too (the fleet view shows the drift).
    Given::with(())
        .given_no_previous_events()
        .when(DeploymentCommand::ReportHealth(report))
        .then_expect_events(vec![reported]);
}

#[test]
fn a_health_report_may_see_no_target() {
    let report = HealthReport::new("edge-7", "  ", "failed", false, t0()).unwrap();
    assert_eq!(report.observed_target, "");
    let bad = |agent, target, state| HealthReport::new(agent, target, state, true, t0()).unwrap_err();
    assert_eq!(bad("", "acme.io", "active"), DeploymentError::InvalidAgentId);
    assert_eq!(bad("a b", "acme.io", "active"), DeploymentError::InvalidAgentId);
    assert_eq!(bad("edge-7", "acme io", "active"), DeploymentError::InvalidObservedTarget);
    assert_eq!(bad("edge-7", "acme.io", "gone"), DeploymentError::InvalidObservedState);
}

#[test]
fn event_types_match_the_serialized_tag() {
    for event in [
        target_set(DeploymentState::Pending),
        DeploymentEvent::HealthReported {
            agent_id: "a".into(),
            observed_target: String::new(),
            observed_state: DeploymentState::Retired,
            healthy: false,
            reported_at: t0(),
        },
    ] {
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], event.event_type());
        assert_eq!(serde_json::from_value::<DeploymentEvent>(json).unwrap(), event);
    }
}

#[test]
fn fingerprints_ignore_when_a_report_was_sent() {
    let at = |h| HealthReport::new("edge", "acme.io", "active", true, t0() + chrono::Duration::hours(h)).unwrap();
    assert_eq!(
        DeploymentCommand::ReportHealth(at(0)).fingerprint(),
        DeploymentCommand::ReportHealth(at(1)).fingerprint()
    );
    assert_ne!(
        DeploymentCommand::SetTarget(target("active")).fingerprint(),
        DeploymentCommand::SetTarget(target("failed")).fingerprint()
    );
}
