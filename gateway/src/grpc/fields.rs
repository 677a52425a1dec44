//! Request fields in and answer fields out, as every gRPC service reads and writes them.

use chrono::{DateTime, SecondsFormat, Utc};
use prost_types::value::Kind;
use serde_json::Value;
use tonic::Status;

use keel_domain::ids::TenantId;

use super::status::invalid_argument;

/// Parses a tenant id argument.
pub fn tenant_id(raw: &str) -> Result<TenantId, Status> {
    raw.trim().parse().map_err(|_| invalid_argument("invalid_tenant_id", "tenant_id is not a tenant id (tnt_…)"))
}

/// A protobuf `Value` as JSON. Integral numbers become integers (so that quotas and
/// whole-number flags stay integers); a missing value is an error.
pub fn json_value(value: Option<prost_types::Value>, field: &str) -> Result<Value, Status> {
    let kind =
        value.and_then(|v| v.kind).ok_or_else(|| invalid_argument("missing_value", &format!("{field} is required")))?;
    Ok(from_kind(kind))
}

/// A protobuf `Struct` as a JSON object.
pub fn json_object(object: prost_types::Struct) -> Value {
    from_kind(Kind::StructValue(object))
}

fn from_kind(kind: Kind) -> Value {
    match kind {
        Kind::NullValue(_) => Value::Null,
        Kind::BoolValue(b) => Value::Bool(b),
        Kind::NumberValue(n) if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 => Value::from(n as i64),
        Kind::NumberValue(n) => serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number),
        Kind::StringValue(s) => Value::String(s),
        Kind::ListValue(list) => Value::Array(list.values.into_iter().filter_map(|v| v.kind).map(from_kind).collect()),
        Kind::StructValue(object) => Value::Object(
            object.fields.into_iter().filter_map(|(k, v)| v.kind.map(|kind| (k, from_kind(kind)))).collect(),
        ),
    }
}

/// A time as answers carry it: RFC 3339, UTC, milliseconds.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_values_become_json_with_whole_numbers_as_integers() {
        let num = |n| Some(prost_types::Value { kind: Some(Kind::NumberValue(n)) });
        assert_eq!(json_value(num(500.0), "v").unwrap(), serde_json::json!(500));
        assert_eq!(json_value(num(0.5), "v").unwrap(), serde_json::json!(0.5));
        let list = prost_types::Value {
            kind: Some(Kind::ListValue(prost_types::ListValue {
                values: vec![prost_types::Value { kind: Some(Kind::StringValue("a".into())) }],
            })),
        };
        assert_eq!(json_value(Some(list), "v").unwrap(), serde_json::json!(["a"]));
        assert!(json_value(None, "v").is_err());
    }
}
