//! `keel schemas`: the JSON Schemas of the events.

use std::path::PathBuf;

use super::CliError;

/// Arguments of `keel schemas`.
#[derive(Debug, clap::Args)]
pub struct SchemasArgs {
    /// Directory.
    #[arg(long, default_value = "schemas")]
    out: PathBuf,
    /// Only check; exit non-zero if a file is missing or stale.
    #[arg(long)]
    check: bool,
}

/// Writes every event's schema to `--out`, or (`--check`) fails on a missing or stale file.
pub fn run(SchemasArgs { out, check }: SchemasArgs) -> Result<(), CliError> {
    let mut stale = Vec::new();
    for (name, schema) in keel_domain::schemas::all() {
        let path = out.join(name);
        let text = keel_domain::schemas::render(&schema);
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(path.display().to_string());
            }
        } else {
            std::fs::create_dir_all(&out).map_err(CliError::WriteSchemas)?;
            std::fs::write(&path, text).map_err(CliError::WriteSchemas)?;
            println!("wrote {}", path.display());
        }
    }
    if stale.is_empty() { Ok(()) } else { Err(CliError::StaleSchemas(stale)) }
}
