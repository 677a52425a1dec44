//! Every event's type is one name, read three ways: the tag its schema (serde's view of
//! the enum) gives it, the `type` it is serialized with, and its `event_type()`.

use std::collections::BTreeSet;

use cqrs_es::DomainEvent;
use serde_json::{Map, Value, json};

use crate::app::AppEvent;
use crate::audit::AuditEvent;
use crate::deployment::DeploymentEvent;
use crate::directory::DirectoryEvent;
use crate::flag::FlagEvent;
use crate::ids::{ApiKeyId, AppId, SessionId, TenantId, UserId};
use crate::login_guard::LoginGuardEvent;
use crate::rollup_allowlist::RollupAllowlistEvent;
use crate::routing::RoutingEvent;
use crate::session::SessionEvent;
use crate::tenant::TenantEvent;
use crate::tenant_config::TenantConfigEvent;
use crate::tenant_domain::TenantDomainEvent;
use crate::usage::UsageEvent;

/// For each variant of `E`: a sample built from the variant's schema reads back as an
/// `E` whose `event_type()` and serialized `type` are the schema's tag. The tags checked.
fn check<E: DomainEvent + schemars::JsonSchema>() -> Vec<String> {
    let schema = schemars::schema_for!(E).to_value();
    let variants = schema["oneOf"].as_array().expect("an event enum's schema is one of its variants");
    variants
        .iter()
        .map(|variant| {
            let tag = variant["properties"]["type"]["const"].as_str().expect("a variant's tag").to_string();
            let sample = sample(variant, &schema["$defs"]);
            let event: E = serde_json::from_value(sample.clone()).unwrap_or_else(|e| panic!("{tag}: {e}: {sample}"));
            assert_eq!(event.event_type(), tag);
            assert_eq!(serde_json::to_value(&event).expect("serializes")["type"], tag);
            tag
        })
        .collect()
}

/// A value that satisfies `schema` (`defs`: where its `$ref`s point).
fn sample(schema: &Value, defs: &Value) -> Value {
    if let Some(value) = schema.get("const") {
        return value.clone();
    }
    if let Some(first) = schema.get("enum").and_then(|values| values.get(0)) {
        return first.clone();
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let option = options.iter().find(|o| o["type"] != "null").unwrap_or(&options[0]);
            return sample(option, defs);
        }
    }
    let mut object = match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.trim_start_matches("#/$defs/");
            let referred = id(name).unwrap_or_else(|| sample(&defs[name], defs));
            match referred {
                Value::Object(fields) => fields,
                other => return other,
            }
        }
        None => Map::new(),
    };
    let kind = match &schema["type"] {
        Value::Array(kinds) => kinds.iter().find(|k| *k != "null").cloned().unwrap_or(Value::Null),
        kind => kind.clone(),
    };
    match kind.as_str() {
        Some("object") => {
            for (field, field_schema) in schema["properties"].as_object().into_iter().flatten() {
                object.insert(field.clone(), sample(field_schema, defs));
            }
            Value::Object(object)
        }
        Some("array") => json!([]),
        Some("string") => match schema["format"].as_str() {
            Some("date-time") => json!("2026-01-01T12:00:00Z"),
            Some("uuid") => json!("00000000-0000-0000-0000-000000000001"),
            _ => json!("x"),
        },
        Some("integer" | "number") => json!(1),
        Some("boolean") => json!(true),
        _ if !object.is_empty() => Value::Object(object),
        _ => Value::Null,
    }
}

/// A sample of the id type named `name` in a schema, if it is one.
fn id(name: &str) -> Option<Value> {
    let ulid = ulid::Ulid::nil();
    let id = match name {
        "TenantId" => TenantId::from_ulid(ulid).to_string(),
        "UserId" => UserId::from_ulid(ulid).to_string(),
        "SessionId" => SessionId::from_ulid(ulid).to_string(),
        "AppId" => AppId::from_ulid(ulid).to_string(),
        "ApiKeyId" => ApiKeyId::from_ulid(ulid).to_string(),
        _ => return None,
    };
    Some(Value::String(id))
}

#[test]
fn every_event_type_is_its_serde_tag() {
    let checked = [
        check::<AppEvent>(),
        check::<TenantEvent>(),
        check::<TenantDomainEvent>(),
        check::<DirectoryEvent>(),
        check::<SessionEvent>(),
        check::<LoginGuardEvent>(),
        check::<FlagEvent>(),
        check::<TenantConfigEvent>(),
        check::<DeploymentEvent>(),
        check::<RoutingEvent>(),
        check::<UsageEvent>(),
        check::<RollupAllowlistEvent>(),
        check::<AuditEvent>(),
    ];
    let event_schemas = super::all().iter().filter(|(file, _)| file.ends_with(".events.v1.json")).count();
    assert_eq!(checked.len(), event_schemas, "every published event enum is checked");
    let tags = checked.concat();
    assert_eq!(tags.iter().collect::<BTreeSet<_>>().len(), tags.len(), "no two events share a type");
    assert!(checked.iter().all(|tags| !tags.is_empty()));
}
