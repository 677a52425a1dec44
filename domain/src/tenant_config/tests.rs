use cqrs_es::test::TestFramework;
use serde_json::json;

use super::*;

type Given = TestFramework<TenantConfig>;

fn set(value: Value) -> TenantConfigCommand {
    TenantConfigCommand::SetFlag { key: "beta".into(), flag_type: FlagType::Boolean, value }
}

#[test]
fn a_flag_value_must_match_the_type_and_repeats_are_no_ops() {
    let set_true = TenantConfigEvent::FlagSet { key: "beta".into(), value: json!(true) };
    Given::with(()).given_no_previous_events().when(set(json!(true))).then_expect_events(vec![set_true.clone()]);
    Given::with(())
        .given_no_previous_events()
        .when(set(json!("true")))
        .then_expect_error(TenantConfigError::TypeMismatch);
    Given::with(()).given(vec![set_true.clone()]).when(set(json!(true))).then_expect_events(vec![]);
    Given::with(())
        .given(vec![set_true.clone()])
        .when(TenantConfigCommand::ClearFlag { key: "beta".into() })
        .then_expect_events(vec![TenantConfigEvent::FlagCleared { key: "beta".into() }]);
    Given::with(())
        .given_no_previous_events()
        .when(TenantConfigCommand::ClearFlag { key: "beta".into() })
        .then_expect_events(vec![]);
}

#[test]
fn overrides_follow_the_catalog() {
    let over = |key: &str, value: Value| TenantConfigCommand::OverrideEntitlement { key: key.into(), value };
    Given::with(())
        .given_no_previous_events()
        .when(over("seats", json!(500)))
        .then_expect_events(vec![TenantConfigEvent::EntitlementOverridden { key: "seats".into(), value: json!(500) }]);
    Given::with(()).given_no_previous_events().when(over("connectors.aws_discovery", json!(true))).then_expect_events(
        vec![TenantConfigEvent::EntitlementOverridden { key: "connectors.aws_discovery".into(), value: json!(true) }],
    );
    Given::with(())
        .given_no_previous_events()
        .when(over("seats", json!(true)))
        .then_expect_error(TenantConfigError::InvalidEntitlementValue);
    Given::with(())
        .given_no_previous_events()
        .when(over("warp.drive", json!(true)))
        .then_expect_error(TenantConfigError::UnknownEntitlement);
    Given::with(())
        .given(vec![TenantConfigEvent::EntitlementOverridden { key: "seats".into(), value: json!(null) }])
        .when(TenantConfigCommand::ClearEntitlementOverride { key: "seats".into() })
        .then_expect_events(vec![TenantConfigEvent::EntitlementOverrideCleared { key: "seats".into() }]);
}
