//! Read models by name, for `keel replay` and `keel dlq`: the registry's entries.

use keel_projections::registry::{self, RegisteredReadModel};

use super::CliError;

/// The registered read model named `name`; an unknown name is [`CliError::UnknownReadModel`].
pub fn by_name(name: &str) -> Result<&'static dyn RegisteredReadModel, CliError> {
    registry::by_name(name)
        .map_err(|_| CliError::UnknownReadModel { name: name.to_string(), known: registry::names().join(", ") })
}
