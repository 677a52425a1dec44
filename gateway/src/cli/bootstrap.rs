//! `keel bootstrap-token`: the first operator credential.

use std::path::{Path, PathBuf};

use super::CliError;
use super::args::MigrationDbArgs;

/// Arguments of `keel bootstrap-token`.
#[derive(Debug, clap::Args)]
pub struct BootstrapArgs {
    #[command(flatten)]
    db: MigrationDbArgs,
    /// Where to write the token (mode 600).
    #[arg(long)]
    out: PathBuf,
    /// Do not print the token (only write it), e.g. where stdout ends up in logs.
    #[arg(long)]
    quiet: bool,
}

/// Creates the bootstrap credential if none exists, writes it to `--out` and prints it once.
pub async fn run(args: BootstrapArgs) -> Result<(), CliError> {
    let BootstrapArgs { db, out, quiet } = args;
    let pool = db.connect().await?;
    match crate::auth::create_bootstrap_credential(&pool).await? {
        Some(token) => {
            write_secret(&out, &token).map_err(|source| CliError::WriteSecret { path: out.clone(), source })?;
            if !quiet {
                println!("{token}");
            }
            eprintln!("bootstrap operator credential created and written to {}", out.display());
        }
        None => eprintln!("a bootstrap operator credential exists already (see {})", out.display()),
    }
    Ok(())
}

/// Writes `secret` and a newline to `path` (mode 600), creating its directory.
fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    writeln!(file, "{secret}")
}
