//! `keel`: the control plane's one binary. The command tree is `keel_gateway::cli`.

use std::process::ExitCode;

/// mimalloc instead of glibc's allocator: a command allocates and frees many small
/// buffers (JSON, SQL arguments, protobuf), and glibc's malloc and free took about a
/// fifth of the process's CPU in the backbone benchmark's profile (issue 19).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
