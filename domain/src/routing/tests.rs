//! Given events, when a command, then events (or an error).

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::DomainEvent;
use cqrs_es::test::TestFramework;

use super::*;

type Given = TestFramework<Routing>;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

fn entry(n: u8, domain: &str, target: &str) -> RoutingEntry {
    RoutingEntry {
        domain: domain.into(),
        target: target.into(),
        tenant_id: format!("tnt_01jd00000000000000000000{n:02}").parse().unwrap(),
    }
}

fn published(version: u64, entries: Vec<RoutingEntry>) -> RoutingEvent {
    RoutingEvent::SnapshotPublished {
        version,
        checksum: checksum(&entries),
        entries,
        generated_at: t0() + Duration::minutes(version as i64),
    }
}

fn acme() -> RoutingEntry {
    entry(1, "acme", "acme.eu-1.internal:8443")
}

fn globex() -> RoutingEntry {
    entry(2, "globex.example.com", "https://edge.us-2.internal/globex")
}

#[test]
fn the_checksum_is_the_sha256_of_the_canonical_json() {
    assert_eq!(checksum(&[]), "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945");
    assert_eq!(
        serde_json::to_string(&[acme()]).unwrap(),
        r#"[{"domain":"acme","target":"acme.eu-1.internal:8443","tenant_id":"tnt_01jd0000000000000000000001"}]"#
    );
    assert_eq!(checksum(&[acme()]), "323ab0a0dfbdc993306c802d81205f479d0d1ebc9f3229c3236af025d525fa50");
}

#[test]
fn the_first_publish_is_version_one_with_entries_sorted_by_domain() {
    let raw = vec![entry(2, "Globex.Example.com", "HTTPS://Edge.US-2.internal/globex"), acme()];
    Given::with(())
        .given_no_previous_events()
        .when(RoutingCommand::Publish { entries: raw, generated_at: t0() + Duration::minutes(1) })
        .then_expect_events(vec![published(1, vec![acme(), globex()])]);
}

#[test]
fn an_empty_publish_is_allowed() {
    Given::with(())
        .given(vec![published(1, vec![acme()])])
        .when(RoutingCommand::Publish { entries: vec![], generated_at: t0() + Duration::minutes(2) })
        .then_expect_events(vec![published(2, vec![])]);
}

#[test]
fn versions_follow_the_newest_including_rollbacks() {
    let rolled_back = RoutingEvent::SnapshotRolledBack {
        version: 3,
        from_version: 2,
        to_version: 1,
        entries: vec![acme()],
        checksum: checksum(&[acme()]),
        generated_at: t0(),
    };
    Given::with(())
        .given(vec![published(1, vec![acme()]), published(2, vec![acme(), globex()]), rolled_back])
        .when(RoutingCommand::Publish { entries: vec![globex()], generated_at: t0() + Duration::minutes(4) })
        .then_expect_events(vec![published(4, vec![globex()])]);
}

#[test]
fn a_rollback_is_a_new_version_with_the_earlier_entries() {
    let at = t0() + Duration::hours(1);
    Given::with(())
        .given(vec![published(1, vec![acme()]), published(2, vec![acme(), globex()])])
        .when(RoutingCommand::Rollback { to_version: 1, at })
        .then_expect_events(vec![RoutingEvent::SnapshotRolledBack {
            version: 3,
            from_version: 2,
            to_version: 1,
            entries: vec![acme()],
            checksum: checksum(&[acme()]),
            generated_at: at,
        }]);
}

#[test]
fn a_rollback_needs_a_known_version_other_than_the_current() {
    let history = vec![published(1, vec![acme()]), published(2, vec![globex()])];
    for to_version in [0, 3] {
        Given::with(())
            .given(history.clone())
            .when(RoutingCommand::Rollback { to_version, at: t0() })
            .then_expect_error(RoutingError::VersionNotFound);
    }
    Given::with(())
        .given(history)
        .when(RoutingCommand::Rollback { to_version: 2, at: t0() })
        .then_expect_error(RoutingError::VersionCurrent);
    Given::with(())
        .given_no_previous_events()
        .when(RoutingCommand::Rollback { to_version: 1, at: t0() })
        .then_expect_error(RoutingError::VersionNotFound);
    assert_eq!(RoutingError::VersionNotFound.code(), "routing_version_not_found");
    assert_eq!(RoutingError::VersionCurrent.code(), "routing_version_current");
    assert_eq!(RoutingError::VersionCurrent.kind(), ErrorKind::FailedPrecondition);
}

#[test]
fn entries_must_be_valid_and_domains_unique() {
    let publish = |entries| RoutingCommand::Publish { entries, generated_at: t0() };
    Given::with(())
        .given_no_previous_events()
        .when(publish(vec![entry(1, "ac me", "acme.io")]))
        .then_expect_error(RoutingError::InvalidEntry);
    Given::with(())
        .given_no_previous_events()
        .when(publish(vec![entry(1, "acme", "acme io")]))
        .then_expect_error(RoutingError::InvalidEntry);
    Given::with(())
        .given_no_previous_events()
        .when(publish(vec![entry(1, "acme", "a.io"), entry(2, "ACME", "b.io")]))
        .then_expect_error(RoutingError::DuplicateDomain);
}

#[test]
fn event_types_match_the_serialized_tag() {
    let event = published(1, vec![acme()]);
    let json = serde_json::to_value(&event).unwrap();
    assert_eq!(json["type"], event.event_type());
    assert_eq!(serde_json::from_value::<RoutingEvent>(json).unwrap(), event);
}

#[test]
fn fingerprints_ignore_times_and_entry_order() {
    let publish =
        |entries, minutes| RoutingCommand::Publish { entries, generated_at: t0() + Duration::minutes(minutes) };
    assert_eq!(publish(vec![acme(), globex()], 0).fingerprint(), publish(vec![globex(), acme()], 5).fingerprint());
    assert_ne!(publish(vec![acme()], 0).fingerprint(), publish(vec![globex()], 0).fingerprint());
    assert_eq!(
        RoutingCommand::Rollback { to_version: 1, at: t0() }.fingerprint(),
        RoutingCommand::Rollback { to_version: 1, at: t0() + Duration::hours(1) }.fingerprint()
    );
}
