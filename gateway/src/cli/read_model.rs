//! Read models by name, for `keel replay` and `keel dlq`.

use super::CliError;

/// Runs `$body` with `$model` bound to the read model named `$name` (one arm per read
/// model); an unknown name is [`CliError::UnknownReadModel`].
macro_rules! with_read_model {
    ($name:expr, |$model:ident| $body:expr) => {
        match $name {
            keel_projections::tenant_registry::NAME => {
                let $model = &keel_projections::tenant_registry::TenantRegistry;
                $body
            }
            keel_projections::routing::NAME => {
                let $model = &keel_projections::routing::RoutingModel;
                $body
            }
            keel_projections::flag_snapshots::NAME => {
                let $model = &keel_projections::flag_snapshots::FlagSnapshots;
                $body
            }
            keel_projections::billing_ledger::NAME => {
                let $model = &keel_projections::billing_ledger::BillingLedger;
                $body
            }
            keel_projections::billing_rollups::NAME => {
                let $model = &keel_projections::billing_rollups::BillingRollups;
                $body
            }
            keel_projections::audit_trail::NAME => {
                let $model = &keel_projections::audit_trail::AuditTrail;
                $body
            }
            other => Err($crate::cli::read_model::unknown(other)),
        }
    };
}
pub(crate) use with_read_model;

/// Refuses a read model name this build does not know.
pub fn known(name: &str) -> Result<(), CliError> {
    with_read_model!(name, |_model| Ok(()))
}

/// The error for a read model name this build does not know.
pub fn unknown(name: &str) -> CliError {
    CliError::UnknownReadModel { name: name.to_string(), known: keel_projections::READ_MODELS.join(", ") }
}
