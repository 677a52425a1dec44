//! `keel`: the control plane's one binary. The command tree is `keel_gateway::cli`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = keel_gateway::cli::parse();
    match keel_gateway::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("keel: {error}");
            ExitCode::FAILURE
        }
    }
}
