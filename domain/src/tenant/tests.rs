//! Given events, when a command, then events (or an error).

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::DomainEvent;
use cqrs_es::test::TestFramework;

use super::*;

type Given = TestFramework<Tenant>;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

fn id() -> TenantId {
    "tnt_01jd0000000000000000000000".parse().unwrap()
}

fn provisioned() -> TenantEvent {
    provisioned_with(None, None)
}

fn provisioned_with(industry: Option<&str>, region: Option<&str>) -> TenantEvent {
    TenantEvent::Provisioned {
        tenant_id: id(),
        name: "Acme".into(),
        domain: "acme".into(),
        plan: Plan::Pro,
        owner_email: "owner@acme.io".into(),
        industry: industry.map(Into::into),
        region: region.map(Into::into),
        provisioned_at: t0(),
    }
}

fn set_profile(industry: Option<&str>, region: Option<&str>) -> TenantCommand {
    TenantCommand::set_profile(industry, region).unwrap()
}

fn deletion_requested() -> TenantEvent {
    TenantEvent::DeletionRequested { requested_at: t0(), purge_after: t0() + Duration::days(30) }
}

#[test]
fn provisions_a_new_tenant_with_normalized_fields() {
    let cmd = ProvisionTenant::new(id(), " Acme ", "ACME", "Pro", "owner@ACME.io", t0()).unwrap();
    Given::with(())
        .given_no_previous_events()
        .when(TenantCommand::Provision(cmd))
        .then_expect_events(vec![provisioned()]);
}

#[test]
fn validation_names_the_bad_field() {
    let bad = |name, domain, plan, email| ProvisionTenant::new(id(), name, domain, plan, email, t0()).unwrap_err();
    assert_eq!(bad("", "acme", "pro", "o@acme.io"), TenantError::InvalidName);
    assert_eq!(bad("Acme", "ac me", "pro", "o@acme.io"), TenantError::InvalidDomain);
    assert_eq!(bad("Acme", "acme", "gold", "o@acme.io"), TenantError::InvalidPlan);
    assert_eq!(bad("Acme", "acme", "pro", "nobody"), TenantError::InvalidOwnerEmail);
    assert_eq!(TenantError::InvalidDomain.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn provisions_with_a_normalized_profile() {
    let cmd = ProvisionTenant::new(id(), "Acme", "acme", "pro", "owner@acme.io", t0())
        .and_then(|p| p.with_profile(Some(" FinTech "), Some("AP-Northeast-1")))
        .unwrap();
    Given::with(())
        .given_no_previous_events()
        .when(TenantCommand::Provision(cmd))
        .then_expect_events(vec![provisioned_with(Some("fintech"), Some("ap-northeast-1"))]);
}

#[test]
fn profile_validation_names_the_bad_field() {
    let provision = |industry, region| {
        ProvisionTenant::new(id(), "Acme", "acme", "pro", "owner@acme.io", t0())
            .unwrap()
            .with_profile(industry, region)
            .unwrap_err()
    };
    assert_eq!(provision(Some("fin tech"), None), TenantError::InvalidIndustry);
    assert_eq!(provision(None, Some("-eu")), TenantError::InvalidRegion);
    assert_eq!(provision(Some(""), None), TenantError::InvalidIndustry);
    assert_eq!(TenantCommand::set_profile(Some("fin_tech"), None).unwrap_err(), TenantError::InvalidIndustry);
    assert_eq!(TenantCommand::set_profile(None, Some(&"r".repeat(65))).unwrap_err(), TenantError::InvalidRegion);
    assert_eq!(TenantError::InvalidIndustry.code(), "invalid_industry");
    assert_eq!(TenantError::InvalidRegion.code(), "invalid_region");
    assert_eq!(TenantError::InvalidRegion.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn cannot_provision_twice() {
    let cmd = ProvisionTenant::new(id(), "Acme", "acme", "pro", "owner@acme.io", t0()).unwrap();
    Given::with(())
        .given(vec![provisioned()])
        .when(TenantCommand::Provision(cmd))
        .then_expect_error(TenantError::AlreadyProvisioned);
}

#[test]
fn unknown_tenant_is_not_found() {
    Given::with(()).given_no_previous_events().when(TenantCommand::Reactivate).then_expect_error(TenantError::NotFound);
}

#[test]
fn suspends_an_active_tenant() {
    Given::with(())
        .given(vec![provisioned()])
        .when(TenantCommand::Suspend { reason: " unpaid ".into() })
        .then_expect_events(vec![TenantEvent::Suspended { reason: "unpaid".into() }]);
}

#[test]
fn a_suspended_tenant_cannot_be_suspended_again() {
    let err = Given::with(())
        .given(vec![provisioned(), TenantEvent::Suspended { reason: "x".into() }])
        .when(TenantCommand::Suspend { reason: "again".into() })
        .inspect_result()
        .unwrap_err();
    assert_eq!(err, TenantError::NotActive);
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
}

#[test]
fn reactivates_only_a_suspended_tenant() {
    Given::with(())
        .given(vec![provisioned(), TenantEvent::Suspended { reason: "x".into() }])
        .when(TenantCommand::Reactivate)
        .then_expect_events(vec![TenantEvent::Reactivated {}]);
    Given::with(())
        .given(vec![provisioned()])
        .when(TenantCommand::Reactivate)
        .then_expect_error(TenantError::NotSuspended);
}

#[test]
fn changes_plan_but_not_to_the_same_one() {
    Given::with(())
        .given(vec![provisioned()])
        .when(TenantCommand::ChangePlan { plan: Plan::Enterprise })
        .then_expect_events(vec![TenantEvent::PlanChanged { from: Plan::Pro, to: Plan::Enterprise }]);
    Given::with(())
        .given(vec![provisioned()])
        .when(TenantCommand::ChangePlan { plan: Plan::Pro })
        .then_expect_error(TenantError::SamePlan);
}

#[test]
fn sets_the_whole_profile_and_none_clears() {
    Given::with(())
        .given(vec![provisioned()])
        .when(set_profile(Some("fintech"), Some("eu-west-1")))
        .then_expect_events(vec![TenantEvent::ProfileChanged {
            industry: Some("fintech".into()),
            region: Some("eu-west-1".into()),
        }]);
    Given::with(())
        .given(vec![provisioned_with(Some("fintech"), Some("eu-west-1"))])
        .when(set_profile(Some("health"), None))
        .then_expect_events(vec![TenantEvent::ProfileChanged { industry: Some("health".into()), region: None }]);
}

#[test]
fn a_suspended_tenant_can_change_its_profile() {
    Given::with(())
        .given(vec![provisioned(), TenantEvent::Suspended { reason: "x".into() }])
        .when(set_profile(None, Some("us-east-1")))
        .then_expect_events(vec![TenantEvent::ProfileChanged { industry: None, region: Some("us-east-1".into()) }]);
}

#[test]
fn setting_the_same_profile_is_refused() {
    Given::with(())
        .given(vec![provisioned_with(Some("fintech"), None)])
        .when(set_profile(Some(" FINTECH"), None))
        .then_expect_error(TenantError::SameProfile);
    Given::with(())
        .given(vec![provisioned()])
        .when(set_profile(None, None))
        .then_expect_error(TenantError::SameProfile);
    let err = Given::with(())
        .given(vec![
            provisioned(),
            TenantEvent::ProfileChanged { industry: Some("retail".into()), region: Some("eu-west-1".into()) },
        ])
        .when(set_profile(Some("retail"), Some("eu-west-1")))
        .inspect_result()
        .unwrap_err();
    assert_eq!((err.kind(), err.code()), (ErrorKind::FailedPrecondition, "same_profile"));
}

#[test]
fn deletion_starts_a_thirty_day_grace() {
    Given::with(())
        .given(vec![provisioned()])
        .when(TenantCommand::RequestDeletion { at: t0() })
        .then_expect_events(vec![deletion_requested()]);
}

#[test]
fn nothing_but_restore_or_purge_while_deletion_is_pending() {
    for cmd in [
        TenantCommand::Suspend { reason: String::new() },
        TenantCommand::Reactivate,
        TenantCommand::ChangePlan { plan: Plan::Free },
        set_profile(Some("fintech"), None),
        TenantCommand::RequestDeletion { at: t0() },
    ] {
        Given::with(())
            .given(vec![provisioned(), deletion_requested()])
            .when(cmd)
            .then_expect_error(TenantError::DeletionPending);
    }
}

#[test]
fn restore_returns_to_the_status_before_deletion() {
    Given::with(())
        .given(vec![provisioned(), TenantEvent::Suspended { reason: "x".into() }, deletion_requested()])
        .when(TenantCommand::Restore { at: t0() + Duration::days(29) })
        .then_expect_events(vec![TenantEvent::Restored { status: TenantStatus::Suspended }]);
}

#[test]
fn restore_is_refused_after_the_grace_period() {
    Given::with(())
        .given(vec![provisioned(), deletion_requested()])
        .when(TenantCommand::Restore { at: t0() + Duration::days(30) })
        .then_expect_error(TenantError::GraceEnded);
}

#[test]
fn purge_waits_for_the_end_of_grace() {
    Given::with(())
        .given(vec![provisioned(), deletion_requested()])
        .when(TenantCommand::Purge { at: t0() + Duration::days(29) })
        .then_expect_error(TenantError::GraceNotEnded);
    let at = t0() + Duration::days(30);
    Given::with(())
        .given(vec![provisioned(), deletion_requested()])
        .when(TenantCommand::Purge { at })
        .then_expect_events(vec![TenantEvent::Purged { purged_at: at }]);
}

#[test]
fn a_purged_tenant_is_gone_for_every_command() {
    let purged = TenantEvent::Purged { purged_at: t0() + Duration::days(31) };
    for cmd in [
        TenantCommand::Reactivate,
        TenantCommand::Restore { at: t0() },
        TenantCommand::Suspend { reason: String::new() },
        set_profile(Some("fintech"), Some("eu-west-1")),
    ] {
        Given::with(())
            .given(vec![provisioned(), deletion_requested(), purged.clone()])
            .when(cmd)
            .then_expect_error(TenantError::Purged);
    }
}

#[test]
fn purge_requires_a_deletion_request() {
    Given::with(())
        .given(vec![provisioned()])
        .when(TenantCommand::Purge { at: t0() + Duration::days(100) })
        .then_expect_error(TenantError::NotPendingDeletion);
}

#[test]
fn event_types_match_the_serialized_tag() {
    let event = provisioned();
    let json = serde_json::to_value(&event).unwrap();
    assert_eq!(json["type"], event.event_type());
    assert_eq!(serde_json::from_value::<TenantEvent>(json).unwrap(), event);
}

#[test]
fn events_without_a_profile_still_decode_and_profiles_round_trip() {
    let stored = serde_json::json!({
        "type": "tenant.provisioned",
        "tenant_id": "tnt_01jd0000000000000000000000",
        "name": "Acme",
        "domain": "acme",
        "plan": "pro",
        "owner_email": "owner@acme.io",
        "provisioned_at": "2026-01-01T12:00:00Z",
    });
    assert_eq!(serde_json::from_value::<TenantEvent>(stored.clone()).unwrap(), provisioned());
    assert_eq!(serde_json::to_value(provisioned()).unwrap(), stored, "no profile fields when there is no profile");
    let changed = TenantEvent::ProfileChanged { industry: Some("fintech".into()), region: None };
    let json = serde_json::to_value(&changed).unwrap();
    assert_eq!(json, serde_json::json!({ "type": "tenant.profile_changed", "industry": "fintech", "region": null }));
    assert_eq!(json["type"], changed.event_type());
    assert_eq!(serde_json::from_value::<TenantEvent>(json).unwrap(), changed);
}

#[test]
fn fingerprints_ignore_when_a_command_was_sent() {
    let later = t0() + Duration::hours(1);
    assert_eq!(
        TenantCommand::RequestDeletion { at: t0() }.fingerprint(),
        TenantCommand::RequestDeletion { at: later }.fingerprint()
    );
    assert_ne!(
        TenantCommand::Suspend { reason: "a".into() }.fingerprint(),
        TenantCommand::Suspend { reason: "b".into() }.fingerprint()
    );
    assert_ne!(set_profile(Some("a"), None).fingerprint(), set_profile(None, Some("a")).fingerprint());
}
