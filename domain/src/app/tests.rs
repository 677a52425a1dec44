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

fn secret(n: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(n)
}

fn client(redirect: &[&str], logout: &[&str], client_type: ClientType) -> ClientSettings {
    ClientSettings {
        redirect_uris: redirect.iter().map(|u| u.to_string()).collect(),
        post_logout_redirect_uris: logout.iter().map(|u| u.to_string()).collect(),
        client_type,
    }
}

fn register_client(client: ClientSettings, client_secret_id: Option<uuid::Uuid>) -> AppCommand {
    AppCommand::Register {
        app_id: app_id(),
        name: "Billing worker".into(),
        environment: "production".into(),
        client,
        client_secret_id,
        at: t0(),
    }
}

fn registered_client(client: ClientSettings, client_secret_id: Option<uuid::Uuid>) -> AppEvent {
    AppEvent::Registered {
        app_id: app_id(),
        name: "Billing worker".into(),
        environment: "production".into(),
        client,
        client_secret_id,
        registered_at: t0(),
    }
}

fn update_client(redirect: &[&str], client_type: Option<ClientType>, secret_id: Option<uuid::Uuid>) -> AppCommand {
    AppCommand::Update {
        name: "Billing worker".into(),
        environment: "production".into(),
        redirect_uris: redirect.iter().map(|u| u.to_string()).collect(),
        post_logout_redirect_uris: vec![],
        client_type,
        client_secret_id: secret_id,
    }
}

#[test]
fn redirect_uris_are_https_or_loopback_http_without_fragment_or_user_info() {
    for good in [
        "https://app.example.com/callback",
        "https://app.example.com",
        "https://app.example.com:8443/cb?x=1&y=2",
        "https://xn--bcher-kva.example/cb",
        "http://localhost:3000/callback",
        "http://LOCALHOST/cb",
        "http://127.0.0.1:8080/cb",
        "http://[::1]:8080/cb",
        "http://[::1]",
    ] {
        assert!(is_acceptable_uri(good), "{good} should be accepted");
    }
    let long = format!("https://app.example.com/{}", "a".repeat(MAX_URI_LEN));
    for bad in [
        "",
        "app.example.com/callback",
        "/callback",
        "ftp://app.example.com/cb",
        "com.example.app:/callback",
        "javascript:alert(1)",
        "http://app.example.com/callback",
        "http://localhost.evil.com/cb",
        "http://127.0.0.1.evil.com/cb",
        "http://[::2]/cb",
        "https://app.example.com/cb#fragment",
        "https://app.example.com/cb#",
        "https://user:pass@app.example.com/cb",
        "https://evil.com@app.example.com/cb",
        "https://*.example.com/cb",
        "https://app.example.com/cb with space",
        "https://app.example.com/\u{e9}",
        "https:///cb",
        "https://:443/cb",
        "https://app.example.com:/cb",
        "https://app.example.com:99999/cb",
        "https://app..example.com/cb",
        "https://app.example.com\\@evil.com/cb",
        "HTTPS://app.example.com/cb",
        long.as_str(),
    ] {
        assert!(!is_acceptable_uri(bad), "{bad} should be refused");
    }
}

#[test]
fn registers_a_public_client_with_its_uris_duplicates_dropped() {
    let given = client(
        &["https://a.example.com/cb", "http://localhost:3000/cb", "https://a.example.com/cb"],
        &["https://a.example.com/bye"],
        ClientType::Public,
    );
    let kept = client(
        &["https://a.example.com/cb", "http://localhost:3000/cb"],
        &["https://a.example.com/bye"],
        ClientType::Public,
    );
    // A public client keeps no secret, even if one is offered.
    Given::with(())
        .given_no_previous_events()
        .when(register_client(given, Some(secret(1))))
        .then_expect_events(vec![registered_client(kept, None)]);
}

#[test]
fn a_confidential_client_is_registered_with_a_secret_id_only() {
    let settings = client(&["https://a.example.com/cb"], &[], ClientType::Confidential);
    Given::with(())
        .given_no_previous_events()
        .when(register_client(settings.clone(), Some(secret(1))))
        .then_expect_events(vec![registered_client(settings.clone(), Some(secret(1)))]);
    Given::with(())
        .given_no_previous_events()
        .when(register_client(settings, None))
        .then_expect_error(AppError::SecretRequired);
}

#[test]
fn bad_or_too_many_uris_are_refused() {
    let bad = client(&["https://a.example.com/cb#x"], &[], ClientType::Public);
    Given::with(())
        .given_no_previous_events()
        .when(register_client(bad, None))
        .then_expect_error(AppError::InvalidRedirectUris);
    let bad_logout = client(&[], &["http://a.example.com/bye"], ClientType::Public);
    Given::with(())
        .given_no_previous_events()
        .when(register_client(bad_logout, None))
        .then_expect_error(AppError::InvalidPostLogoutRedirectUris);
    let many: Vec<String> = (0..=MAX_URIS).map(|n| format!("https://a.example.com/cb/{n}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    Given::with(())
        .given_no_previous_events()
        .when(register_client(client(&many, &[], ClientType::Public), None))
        .then_expect_error(AppError::InvalidRedirectUris);
    Given::with(())
        .given_no_previous_events()
        .when(register_client(client(&many[..MAX_URIS], &[], ClientType::Public), None))
        .then_expect_events(vec![registered_client(client(&many[..MAX_URIS], &[], ClientType::Public), None)]);
    Given::with(())
        .given(vec![registered()])
        .when(update_client(&["https://a.example.com/cb", "https://u@a.example.com/cb"], None, None))
        .then_expect_error(AppError::InvalidRedirectUris);
}

#[test]
fn updating_client_settings_replaces_the_lists_and_keeps_the_type_unless_named() {
    let public = client(&["https://a.example.com/cb"], &[], ClientType::Public);
    Given::with(())
        .given(vec![registered()])
        .when(update_client(&["https://a.example.com/cb"], None, None))
        .then_expect_events(vec![AppEvent::Updated {
            name: "Billing worker".into(),
            environment: "production".into(),
            client: Some(public.clone()),
            client_secret_id: None,
        }]);
    Given::with(())
        .given(vec![registered_client(public, None)])
        .when(update_client(&["https://a.example.com/cb"], Some(ClientType::Public), None))
        .then_expect_events(vec![]);
    let confidential = client(&["https://a.example.com/cb"], &[], ClientType::Confidential);
    Given::with(())
        .given(vec![registered_client(confidential.clone(), Some(secret(1)))])
        .when(update_client(&["https://a.example.com/cb"], None, Some(secret(2))))
        .then_expect_events(vec![]);
}

#[test]
fn becoming_confidential_takes_a_secret_and_becoming_public_drops_it() {
    let confidential = client(&[], &[], ClientType::Confidential);
    Given::with(())
        .given(vec![registered()])
        .when(update_client(&[], Some(ClientType::Confidential), None))
        .then_expect_error(AppError::SecretRequired);
    Given::with(())
        .given(vec![registered()])
        .when(update_client(&[], Some(ClientType::Confidential), Some(secret(1))))
        .then_expect_events(vec![AppEvent::Updated {
            name: "Billing worker".into(),
            environment: "production".into(),
            client: Some(confidential.clone()),
            client_secret_id: Some(secret(1)),
        }]);
    let mut app = App::default();
    for event in [
        registered_client(confidential, Some(secret(1))),
        AppEvent::Updated {
            name: "Billing worker".into(),
            environment: "production".into(),
            client: Some(client(&[], &[], ClientType::Public)),
            client_secret_id: None,
        },
    ] {
        cqrs_es::Aggregate::apply(&mut app, event);
    }
    assert_eq!(app.client.client_type, ClientType::Public);
    assert_eq!(app.client_secret_id, None);
}

#[test]
fn only_a_confidential_client_rotates_its_secret() {
    let rotate = |n| AppCommand::RotateClientSecret { secret_id: secret(n), at: t0() };
    let confidential = registered_client(client(&[], &[], ClientType::Confidential), Some(secret(1)));
    Given::with(())
        .given(vec![confidential.clone()])
        .when(rotate(2))
        .then_expect_events(vec![AppEvent::ClientSecretRotated { secret_id: secret(2), rotated_at: t0() }]);
    // A retry with the secret already in force changes nothing.
    Given::with(()).given(vec![confidential.clone()]).when(rotate(1)).then_expect_events(vec![]);
    // A disabled app may rotate (a leaked secret is replaced before the app is enabled again).
    Given::with(())
        .given(vec![confidential, AppEvent::Disabled {}])
        .when(rotate(2))
        .then_expect_events(vec![AppEvent::ClientSecretRotated { secret_id: secret(2), rotated_at: t0() }]);
    Given::with(()).given(vec![registered()]).when(rotate(2)).then_expect_error(AppError::PublicClient);
    Given::with(()).given_no_previous_events().when(rotate(2)).then_expect_error(AppError::NotFound);
}

#[test]
fn events_from_before_clients_still_load_as_public_clients_without_uris() {
    let old_registered = serde_json::json!({
        "type": "app.registered",
        "app_id": "app_01jd0000000000000000000000",
        "name": "Billing worker",
        "environment": "production",
        "registered_at": "2026-01-01T12:00:00Z"
    });
    let old_updated = serde_json::json!({ "type": "app.updated", "name": "Billing worker", "environment": "staging" });
    let registered: AppEvent = serde_json::from_value(old_registered).unwrap();
    assert_eq!(registered, self::registered());
    let updated: AppEvent = serde_json::from_value(old_updated).unwrap();
    assert_eq!(
        updated,
        AppEvent::Updated {
            name: "Billing worker".into(),
            environment: "staging".into(),
            client: None,
            client_secret_id: None
        }
    );
    let json = serde_json::to_value(registered_client(
        client(&["https://a.example.com/cb"], &[], ClientType::Confidential),
        Some(secret(7)),
    ))
    .unwrap();
    assert_eq!(json["client"]["client_type"], "confidential");
    assert_eq!(json["client_secret_id"], secret(7).to_string());
}
