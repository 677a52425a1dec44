//! The tests' logs and the secrets they must never contain (suite 5 of issue 13).
//!
//! `make test` sets `KEEL_TEST_LOG_DIR` and `KEEL_TEST_SECRETS`: each test process writes its
//! tracing output (Keel runs in-process) to a file in that directory, and every password,
//! token, key secret and e-mail address the tests use is appended to the secrets file. After
//! the tests, `scripts/scan-logs.sh` fails if any log line contains one of them.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Shorter values are too common to scan for (they would match unrelated text).
const MIN_SECRET_LEN: usize = 8;

/// Sends this process's tracing output to the test writer (shown for failed tests) and, under
/// `make test`, to `$KEEL_TEST_LOG_DIR/<test binary>-<pid>.log`. Filter: `KEEL_LOG`, else
/// `info,keel=debug`. Idempotent.
pub fn init() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_env("KEEL_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,keel=debug"));
        let file = log_file("tracing")
            .map(|file| tracing_subscriber::fmt::layer().with_ansi(false).with_writer(Mutex::new(file)));
        let _ = tracing_subscriber::registry()
            .with(filter)
            // No colours in either: the layers share the span fields as first formatted.
            .with(tracing_subscriber::fmt::layer().with_ansi(false).with_test_writer())
            .with(file)
            .try_init();
    });
}

/// A new file `<name>-<pid>-<n>.log` in `$KEEL_TEST_LOG_DIR` (appended to), for the log of
/// something a test runs (a `keel` process, say); `None` outside `make test`.
pub fn log_file(name: &str) -> Option<std::fs::File> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = PathBuf::from(std::env::var_os("KEEL_TEST_LOG_DIR")?);
    std::fs::create_dir_all(&dir).expect("create the test log dir");
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("{name}-{}-{n}.log", std::process::id()));
    Some(std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("open a test log file"))
}

/// Keeps `output` (a child process's stderr, say) in the test logs, so it is scanned too.
pub fn keep(name: &str, output: &[u8]) {
    if let Some(mut file) = log_file(name) {
        file.write_all(output).expect("write a test log file");
    }
}

/// Registers `value` (a password, token, key secret or e-mail address the tests use) as
/// something no log may contain. Values shorter than 8 characters are not registered.
pub fn secret(value: &str) {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let value = value.trim();
    if value.len() < MIN_SECRET_LEN || value.contains('\n') {
        return;
    }
    let Some(path) = std::env::var_os("KEEL_TEST_SECRETS") else { return };
    let mut seen = SEEN.get_or_init(Default::default).lock().expect("secrets lock");
    if !seen.insert(value.to_string()) {
        return;
    }
    // One short write per line with O_APPEND: lines from parallel test processes do not mix.
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open the secrets list");
    file.write_all(format!("{value}\n").as_bytes()).expect("write the secrets list");
}
