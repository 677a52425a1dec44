//! The JSON Schemas in `schemas/` are the contract; they must match the code.

#[test]
fn schemas_in_the_repository_are_current() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    for (name, schema) in keel_domain::schemas::all() {
        let on_disk = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        assert_eq!(
            on_disk,
            keel_domain::schemas::render(&schema),
            "schemas/{name} is stale: run `cargo run -p keel-gateway --bin keel -- schemas`"
        );
    }
}

#[test]
fn the_envelope_schema_names_every_envelope_field() {
    let (_, envelope) = keel_domain::schemas::all().into_iter().next().expect("envelope schema");
    let required: Vec<&str> =
        envelope["required"].as_array().expect("required").iter().filter_map(|v| v.as_str()).collect();
    for field in [
        "event_id",
        "position",
        "txid",
        "event_type",
        "schema_version",
        "occurred_at",
        "actor",
        "correlation_id",
        "causation_id",
        "payload",
    ] {
        assert!(required.contains(&field), "{field} missing from the envelope schema");
    }
}
