//! The login page in a browser: Japanese, the 429 message, CSRF, keyboard-only use at 375 px.

use serde_json::json;

use super::{BrowserKeel, free_port};

#[tokio::test]
async fn the_login_page_speaks_japanese_to_a_japanese_browser() {
    let keel = BrowserKeel::start("the_login_page_speaks_japanese_to_a_japanese_browser").await;
    let person = keel.person("ja").await;
    let result = keel.pass("japanese", json!({ "person": person.params() })).await;
    assert_eq!(result["lang"], "ja");
    keel.keel.stop().await;
}

#[tokio::test]
async fn repeated_wrong_passwords_on_the_login_page_end_in_the_429_message() {
    let keel = BrowserKeel::start("repeated_wrong_passwords_on_the_login_page_end_in_the_429_message").await;
    let person = keel.person("throttle").await;
    let result = keel.pass("throttled", json!({ "person": person.params() })).await;
    let after = result["throttledAfter"].as_u64().expect("throttledAfter");
    // The account lock of ADR 0018: five refusals, then 429.
    assert!((2..=12).contains(&after), "throttled after {after} attempts");
    assert!(result["retryAfter"].as_u64().is_some_and(|s| (1..=900).contains(&s)), "{result}");
    keel.keel.stop().await;
}

#[tokio::test]
async fn a_sign_in_form_posted_from_another_origin_changes_nothing() {
    let keel = BrowserKeel::start("a_sign_in_form_posted_from_another_origin_changes_nothing").await;
    let person = keel.person("csrf").await;
    let result = keel.pass("csrf", json!({ "person": person.params(), "rpPort": free_port() })).await;
    assert_eq!(result["refused"], 3);
    keel.keel.stop().await;
}

#[tokio::test]
async fn a_person_signs_in_with_the_keyboard_alone_on_a_375_px_screen() {
    let keel = BrowserKeel::start("a_person_signs_in_with_the_keyboard_alone_on_a_375_px_screen").await;
    let person = keel.person("keys").await;
    let result = keel.pass("keyboard", json!({ "person": person.params() })).await;
    assert!(result["tabs"].as_u64().is_some(), "{result}");
    keel.keel.stop().await;
}
