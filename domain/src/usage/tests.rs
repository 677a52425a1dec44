use chrono::TimeZone;
use serde_json::json;

use super::*;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
}

fn tenant() -> &'static str {
    "tnt_01jd0000000000000000000001"
}

fn app() -> AppId {
    "app_01jd0000000000000000000001".parse().unwrap()
}

fn report() -> Value {
    json!({
        "event_id": "evt-1",
        "tenant_id": tenant(),
        "event_type": "api.call",
        "quantity": 3,
        "timestamp": "2026-11-22T11:59:00Z",
        "properties": { "region": "eu" }
    })
}

fn check(raw: Value) -> Result<ValidUsage, Rejection> {
    UsageInput::from_json(&raw)?.validate(now(), &UsagePolicy::default())
}

fn with(key: &str, value: Value) -> Value {
    let mut raw = report();
    raw[key] = value;
    raw
}

#[test]
fn a_well_formed_report_is_valid() {
    let usage = check(report()).unwrap();
    assert_eq!((usage.event_id.as_str(), usage.quantity, usage.tenant_id.as_str()), ("evt-1", 3, tenant()));
    assert_eq!(usage.properties["region"], "eu");
}

#[test]
fn each_field_is_checked_with_its_own_reason() {
    let cases = [
        (json!([1]), Rejection::NotAnObject),
        (with("event_id", json!("")), Rejection::InvalidEventId),
        (with("event_id", json!("has space")), Rejection::InvalidEventId),
        (with("event_id", json!("x".repeat(129))), Rejection::InvalidEventId),
        (with("tenant_id", json!("acme")), Rejection::InvalidTenantId),
        (with("event_type", json!("-x")), Rejection::InvalidEventType),
        (with("event_type", json!("a b")), Rejection::InvalidEventType),
        (with("quantity", json!(1.5)), Rejection::InvalidQuantity),
        (with("quantity", json!("3")), Rejection::InvalidQuantity),
        (with("quantity", json!(-1)), Rejection::InvalidQuantity),
        (with("quantity", json!(MAX_QUANTITY as u64 + 1)), Rejection::InvalidQuantity),
        (with("quantity", Value::Null), Rejection::InvalidQuantity),
        (with("timestamp", json!("yesterday")), Rejection::InvalidTimestamp),
        (with("timestamp", Value::Null), Rejection::InvalidTimestamp),
        (with("timestamp", json!("2026-11-22T12:06:00Z")), Rejection::TimestampInFuture),
        (with("properties", json!([1, 2])), Rejection::InvalidProperties),
        (with("properties", json!({ "blob": "x".repeat(MAX_PROPERTIES_BYTES) })), Rejection::InvalidProperties),
    ];
    for (raw, expected) in cases {
        assert_eq!(check(raw.clone()), Err(expected.clone()), "{raw}");
    }
}

#[test]
fn small_clock_skew_is_tolerated() {
    assert!(check(with("timestamp", json!("2026-11-22T12:04:00Z"))).is_ok());
}

#[test]
fn old_usage_is_kept_and_marked_late() {
    let policy = UsagePolicy::default();
    let old = check(with("timestamp", json!("2026-11-19T12:00:00Z"))).unwrap();
    let UsageEvent::Recorded(r) = old.record(&app(), Some(TenantStatus::Active), false, now(), &policy).unwrap();
    assert!(r.late);
    let fresh = check(report()).unwrap();
    let UsageEvent::Recorded(r) = fresh.record(&app(), Some(TenantStatus::Active), false, now(), &policy).unwrap();
    assert!(!r.late);
    assert_eq!(r.received_at, now());
}

#[test]
fn the_late_window_is_configurable() {
    let policy = UsagePolicy { late_after: Duration::minutes(1), ..UsagePolicy::default() };
    let usage = check(report()).unwrap();
    assert!(usage.clone().record(&app(), Some(TenantStatus::Active), false, now(), &policy).is_ok());
    let UsageEvent::Recorded(r) =
        usage.record(&app(), Some(TenantStatus::Active), false, now() + Duration::minutes(5), &policy).unwrap();
    assert!(r.late);
}

#[test]
fn usage_of_a_suspended_tenant_is_recorded_and_marked() {
    let usage = check(report()).unwrap();
    let UsageEvent::Recorded(r) =
        usage.record(&app(), Some(TenantStatus::Suspended), true, now(), &UsagePolicy::default()).unwrap();
    assert_eq!((r.tenant_status, r.rollup), (TenantStatus::Suspended, true));
}

#[test]
fn unknown_and_purged_tenants_are_refused() {
    let usage = check(report()).unwrap();
    let policy = UsagePolicy::default();
    assert_eq!(usage.clone().record(&app(), None, false, now(), &policy), Err(Rejection::UnknownTenant));
    assert_eq!(usage.record(&app(), Some(TenantStatus::Purged), false, now(), &policy), Err(Rejection::TenantPurged));
}

#[test]
fn a_duplicate_is_the_same_usage_and_a_reused_id_is_not() {
    let usage = check(report()).unwrap();
    let UsageEvent::Recorded(recorded) =
        usage.clone().record(&app(), Some(TenantStatus::Active), false, now(), &UsagePolicy::default()).unwrap();
    assert!(usage.same_as(&recorded));
    let other = check(with("quantity", json!(4))).unwrap();
    assert!(!other.same_as(&recorded));
}

#[test]
fn the_stored_event_round_trips_with_its_type_tag() {
    let usage = check(report()).unwrap();
    let event = usage.record(&app(), Some(TenantStatus::Active), false, now(), &UsagePolicy::default()).unwrap();
    let json = serde_json::to_value(&event).unwrap();
    assert_eq!(json["type"], RECORDED);
    assert_eq!(serde_json::from_value::<UsageEvent>(json).unwrap(), event);
}

#[test]
fn the_cloud_event_names_app_tenant_and_usage_time() {
    let usage = check(report()).unwrap();
    let UsageEvent::Recorded(r) =
        usage.record(&app(), Some(TenantStatus::Active), false, now(), &UsagePolicy::default()).unwrap();
    let id = Uuid::now_v7();
    let event = serde_json::to_value(BillingCloudEvent::new(&r, id, 42)).unwrap();
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["id"], "evt-1");
    assert_eq!(event["source"], format!("/keel/apps/{}", app()));
    assert_eq!(event["type"], "io.keel.billing.usage.v1");
    assert_eq!(event["subject"], tenant());
    assert_eq!(event["time"], "2026-11-22T11:59:00Z");
    assert_eq!(event["data"]["quantity"], 3);
    assert_eq!(event["data"]["keel_event_id"], id.to_string());
}
