//! JSON Schemas of the event envelope and every event payload, generated with
//! schemars; `keel schemas` writes them to `schemas/`, a test checks they are fresh.

use schemars::schema_for;
use serde_json::Value;

use crate::app::AppEvent;
use crate::directory::DirectoryEvent;
use crate::envelope::EventEnvelope;
use crate::login_guard::LoginGuardEvent;
use crate::session::SessionEvent;
use crate::tenant::TenantEvent;
use crate::tenant_domain::TenantDomainEvent;

/// (file name, schema) of every published schema.
pub fn all() -> Vec<(&'static str, Value)> {
    vec![
        ("keel.events.envelope.v1.json", schema_for!(EventEnvelope).to_value()),
        ("app.events.v1.json", schema_for!(AppEvent).to_value()),
        ("tenant.events.v1.json", schema_for!(TenantEvent).to_value()),
        ("tenant_domain.events.v1.json", schema_for!(TenantDomainEvent).to_value()),
        ("directory.events.v1.json", schema_for!(DirectoryEvent).to_value()),
        ("session.events.v1.json", schema_for!(SessionEvent).to_value()),
        ("login_guard.events.v1.json", schema_for!(LoginGuardEvent).to_value()),
        ("flag.events.v1.json", schema_for!(crate::flag::FlagEvent).to_value()),
        ("tenant_config.events.v1.json", schema_for!(crate::tenant_config::TenantConfigEvent).to_value()),
        ("deployment.events.v1.json", schema_for!(crate::deployment::DeploymentEvent).to_value()),
        ("routing.events.v1.json", schema_for!(crate::routing::RoutingEvent).to_value()),
        ("usage.events.v1.json", schema_for!(crate::usage::UsageEvent).to_value()),
        ("rollup_allowlist.events.v1.json", schema_for!(crate::rollup_allowlist::RollupAllowlistEvent).to_value()),
        ("keel.billing.v1.json", schema_for!(crate::usage::BillingCloudEvent).to_value()),
        ("audit.events.v1.json", schema_for!(crate::audit::AuditEvent).to_value()),
    ]
}

/// A schema as it is written to disk (pretty, with a trailing newline).
pub fn render(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests;
