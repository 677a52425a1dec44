//! Given events, when a command, then events (or an error).

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;

use super::*;

type Given = TestFramework<App>;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

fn app_id() -> AppId {
    "app_01jd0000000000000000000000".parse().unwrap()
}

fn key(n: u8) -> ApiKeyId {
    format!("key_01jd00000000000000000000{n:02}").parse().unwrap()
}

fn registered() -> AppEvent {
    AppEvent::Registered {
        app_id: app_id(),
        name: "Billing worker".into(),
        environment: "production".into(),
        client: ClientSettings::default(),
        client_secret_id: None,
        registered_at: t0(),
    }
}

fn update(name: &str, environment: &str) -> AppCommand {
    AppCommand::Update {
        name: name.into(),
        environment: environment.into(),
        redirect_uris: vec![],
        post_logout_redirect_uris: vec![],
        client_type: None,
        client_secret_id: None,
    }
}

fn scopes(list: &[Scope]) -> BTreeSet<Scope> {
    list.iter().copied().collect()
}

fn issue(n: u8, expires_at: Option<DateTime<Utc>>) -> AppCommand {
    AppCommand::IssueKey {
        key_id: key(n),
        prefix: format!("keel_ak_{n}"),
        secret_hash: format!("{n:064}"),
        scopes: scopes(&[Scope::FlagsRead]),
        expires_at,
        at: t0(),
    }
}

fn issued(n: u8) -> AppEvent {
    AppEvent::KeyIssued {
        key_id: key(n),
        prefix: format!("keel_ak_{n}"),
        secret_hash: format!("{n:064}"),
        scopes: scopes(&[Scope::FlagsRead]),
        expires_at: None,
        issued_at: t0(),
    }
}

#[test]
fn registers_with_normalized_fields_once() {
    let cmd = AppCommand::Register {
        app_id: app_id(),
        name: " Billing worker ".into(),
        environment: "Production".into(),
        client: ClientSettings::default(),
        client_secret_id: None,
        at: t0(),
    };
    Given::with(()).given_no_previous_events().when(cmd.clone()).then_expect_events(vec![registered()]);
    Given::with(()).given(vec![registered()]).when(cmd).then_expect_error(AppError::AlreadyRegistered);
}

#[test]
fn bad_names_and_environments_are_refused() {
    let register = |name: &str, env: &str| AppCommand::Register {
        app_id: app_id(),
        name: name.into(),
        environment: env.into(),
        client: ClientSettings::default(),
        client_secret_id: None,
        at: t0(),
    };
    Given::with(()).given_no_previous_events().when(register("", "prod")).then_expect_error(AppError::InvalidName);
    Given::with(())
        .given_no_previous_events()
        .when(register("Worker", "pro d"))
        .then_expect_error(AppError::InvalidEnvironment);
}

#[test]
fn an_unregistered_app_does_nothing() {
    Given::with(()).given_no_previous_events().when(AppCommand::Disable).then_expect_error(AppError::NotFound);
    Given::with(()).given_no_previous_events().when(issue(1, None)).then_expect_error(AppError::NotFound);
}

#[test]
fn updating_to_the_same_values_writes_nothing() {
    let same = update("Billing worker", "production");
    Given::with(()).given(vec![registered()]).when(same).then_expect_events(vec![]);
    let moved = update("Billing worker", "staging");
    Given::with(()).given(vec![registered()]).when(moved).then_expect_events(vec![AppEvent::Updated {
        name: "Billing worker".into(),
        environment: "staging".into(),
        client: None,
        client_secret_id: None,
    }]);
}

#[test]
fn disable_and_enable_toggle_and_refuse_repeats() {
    Given::with(()).given(vec![registered()]).when(AppCommand::Disable).then_expect_events(vec![AppEvent::Disabled {}]);
    Given::with(())
        .given(vec![registered(), AppEvent::Disabled {}])
        .when(AppCommand::Disable)
        .then_expect_error(AppError::Disabled);
    Given::with(())
        .given(vec![registered(), AppEvent::Disabled {}])
        .when(AppCommand::Enable)
        .then_expect_events(vec![AppEvent::Enabled {}]);
    Given::with(()).given(vec![registered()]).when(AppCommand::Enable).then_expect_error(AppError::NotDisabled);
}

#[test]
fn keys_need_scopes_a_future_expiry_and_an_enabled_app() {
    Given::with(()).given(vec![registered()]).when(issue(1, None)).then_expect_events(vec![issued(1)]);
    let no_scopes = match issue(1, None) {
        AppCommand::IssueKey { key_id, prefix, secret_hash, expires_at, at, .. } => {
            AppCommand::IssueKey { key_id, prefix, secret_hash, scopes: BTreeSet::new(), expires_at, at }
        }
        other => other,
    };
    Given::with(()).given(vec![registered()]).when(no_scopes).then_expect_error(AppError::NoScopes);
    Given::with(()).given(vec![registered()]).when(issue(1, Some(t0()))).then_expect_error(AppError::InvalidExpiry);
    Given::with(())
        .given(vec![registered(), AppEvent::Disabled {}])
        .when(issue(1, None))
        .then_expect_error(AppError::Disabled);
    Given::with(()).given(vec![registered(), issued(1)]).when(issue(1, None)).then_expect_error(AppError::KeyExists);
}

#[test]
fn an_app_holds_at_most_twenty_active_keys() {
    let mut history = vec![registered()];
    history.extend((1..=20).map(issued));
    Given::with(()).given(history.clone()).when(issue(21, None)).then_expect_error(AppError::TooManyKeys);
    history.push(AppEvent::KeyRevoked { key_id: key(3), revoked_at: t0() });
    Given::with(()).given(history).when(issue(21, None)).then_expect_events(vec![issued(21)]);
}

#[test]
fn revoking_is_final_and_repeatable() {
    let revoke = AppCommand::RevokeKey { key_id: key(1), at: t0() };
    let revoked = AppEvent::KeyRevoked { key_id: key(1), revoked_at: t0() };
    Given::with(()).given(vec![registered(), issued(1)]).when(revoke.clone()).then_expect_events(vec![revoked.clone()]);
    Given::with(()).given(vec![registered(), issued(1), revoked]).when(revoke.clone()).then_expect_events(vec![]);
    Given::with(()).given(vec![registered()]).when(revoke).then_expect_error(AppError::KeyNotFound);
}

#[test]
fn a_key_is_active_until_revoked_or_expired() {
    let key = ApiKey {
        prefix: "keel_ak_x".into(),
        secret_hash: "0".repeat(64),
        scopes: scopes(&[Scope::BillingWrite]),
        expires_at: Some(t0() + Duration::days(1)),
        revoked: false,
    };
    assert!(key.is_active(t0()));
    assert!(!key.is_active(t0() + Duration::days(1)));
    assert!(!ApiKey { revoked: true, ..key.clone() }.is_active(t0()));
    assert!(ApiKey { expires_at: None, ..key }.is_active(t0() + Duration::days(9999)));
}

#[test]
fn scopes_have_wire_names() {
    assert_eq!("Flags:Read".parse::<Scope>(), Ok(Scope::FlagsRead));
    assert_eq!("fleet:write".parse::<Scope>(), Ok(Scope::FleetWrite));
    assert_eq!("flags:write".parse::<Scope>(), Err(AppError::InvalidScope));
    let json = serde_json::to_value(issued(1)).unwrap();
    assert_eq!(json["type"], "app.key_issued");
    assert_eq!(json["scopes"], serde_json::json!(["flags:read"]));
}

#[test]
fn denials_are_recorded_for_known_keys_even_on_a_disabled_app() {
    let record = |count| AppCommand::RecordDenials {
        key_id: key(1),
        reason: "app_disabled".into(),
        count,
        first_at: t0(),
        last_at: t0() + Duration::seconds(2),
    };
    let denied = AppEvent::AccessDenied {
        key_id: key(1),
        reason: "app_disabled".into(),
        count: 3,
        first_at: t0(),
        last_at: t0() + Duration::seconds(2),
    };
    Given::with(())
        .given(vec![registered(), issued(1), AppEvent::Disabled {}])
        .when(record(3))
        .then_expect_events(vec![denied]);
    Given::with(()).given(vec![registered(), issued(1)]).when(record(0)).then_expect_events(vec![]);
    Given::with(()).given(vec![registered()]).when(record(1)).then_expect_error(AppError::KeyNotFound);
}
