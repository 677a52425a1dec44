use std::collections::BTreeMap;

use cqrs_es::test::TestFramework;
use serde_json::{Value, json};

use super::*;

type Given = TestFramework<Flag>;

fn define(flag_type: FlagType, default_value: Value, plans: &[(Plan, Value)]) -> FlagCommand {
    FlagCommand::Define {
        key: "checkout.new_flow".into(),
        flag_type,
        default_value,
        plan_defaults: plans.iter().cloned().collect(),
        description: " New checkout ".into(),
    }
}

fn defined(flag_type: FlagType, default_value: Value, plans: &[(Plan, Value)]) -> FlagEvent {
    FlagEvent::Defined {
        key: "checkout.new_flow".into(),
        flag_type,
        default_value,
        plan_defaults: plans.iter().cloned().collect::<BTreeMap<_, _>>(),
        description: "New checkout".into(),
    }
}

#[test]
fn a_flag_is_defined_with_its_defaults() {
    Given::with(())
        .given_no_previous_events()
        .when(define(FlagType::Boolean, json!(false), &[(Plan::Pro, json!(true))]))
        .then_expect_events(vec![defined(FlagType::Boolean, json!(false), &[(Plan::Pro, json!(true))])]);
}

#[test]
fn defaults_must_match_the_type() {
    Given::with(())
        .given_no_previous_events()
        .when(define(FlagType::Boolean, json!("yes"), &[]))
        .then_expect_error(FlagError::TypeMismatch);
    Given::with(())
        .given_no_previous_events()
        .when(define(FlagType::Number, json!(1), &[(Plan::Free, json!("1"))]))
        .then_expect_error(FlagError::TypeMismatch);
    Given::with(())
        .given_no_previous_events()
        .when(define(FlagType::Object, json!({ "a": [1] }), &[]))
        .then_expect_events(vec![defined(FlagType::Object, json!({ "a": [1] }), &[])]);
}

#[test]
fn redefining_changes_defaults_but_never_the_type() {
    let first = defined(FlagType::String, json!("a"), &[]);
    Given::with(())
        .given(vec![first.clone()])
        .when(define(FlagType::String, json!("b"), &[]))
        .then_expect_events(vec![defined(FlagType::String, json!("b"), &[])]);
    Given::with(())
        .given(vec![first.clone()])
        .when(define(FlagType::String, json!("a"), &[]))
        .then_expect_events(vec![]);
    Given::with(())
        .given(vec![first])
        .when(define(FlagType::Number, json!(1), &[]))
        .then_expect_error(FlagError::TypeChanged);
}

#[test]
fn keys_are_url_safe() {
    assert!(valid_key("checkout.new_flow-2"));
    assert!(!valid_key(""));
    assert!(!valid_key("Checkout"));
    assert!(!valid_key("a/b"));
    assert!(!valid_key(".hidden"));
    assert!(!valid_key(&"a".repeat(129)));
    let bad = FlagCommand::Define {
        key: "a b".into(),
        flag_type: FlagType::Boolean,
        default_value: json!(true),
        plan_defaults: BTreeMap::new(),
        description: String::new(),
    };
    Given::with(()).given_no_previous_events().when(bad).then_expect_error(FlagError::InvalidKey);
}

#[test]
fn types_have_wire_names_and_limits() {
    assert_eq!("JSON".parse::<FlagType>(), Ok(FlagType::Object));
    assert_eq!("bool".parse::<FlagType>(), Ok(FlagType::Boolean));
    assert_eq!("date".parse::<FlagType>(), Err(FlagError::InvalidType));
    assert!(!FlagType::String.accepts(&json!("x".repeat(MAX_VALUE_BYTES))));
    assert_eq!(serde_json::to_value(defined(FlagType::Number, json!(2), &[])).unwrap()["type"], "flag.defined");
}
