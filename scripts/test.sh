#!/usr/bin/env bash
# `make test`: the whole check suite, against services of its own.
#
# Wipes .keel/test, runs cargo fmt --check, clippy, cargo deny (scripts/supply-chain.sh) and the
# import-cycle check, starts a throwaway
# Postgres (127.0.0.1:55432) and broker (127.0.0.1:59092, memory storage),
# then runs the tests (cargo nextest if installed, else cargo test) with:
#   KEEL_TEST_DATABASE_URL   superuser URL (role keel_test) to create databases
#   KEEL_TEST_KAFKA_BROKERS  127.0.0.1:59092
#   KEEL_SCHEMATHESIS_BIN    schemathesis (scripts/lib.sh installs it into a venv under $KEEL_TOOLS)
# It also installs Debian's chromium and tests/browser's node modules (the browser tests),
# and Debian's softhsm2 (KEEL_TEST_SOFTHSM_MODULE: the PKCS#11 key-encryption key's tests).
# After the tests, scripts/scan-logs.sh fails if any log holds a secret or e-mail the tests used.
# Every service it started is stopped on exit; the exit code is the result.
#
# KEEL_TEST_CMD='some command' replaces the cargo steps (to test this script).
set -euo pipefail
# Never inherit a dev setup's state dir (it gets wiped) or ports; two checkouts testing
# side by side give each its own ports with KEEL_TEST_PG_PORT / KEEL_TEST_BROKER_PORT.
unset KEEL_STATE_DIR KEEL_BROKER_STORAGE
KEEL_PG_PORT="${KEEL_TEST_PG_PORT:-55432}"
KEEL_BROKER_PORT="${KEEL_TEST_BROKER_PORT:-59092}"
export KEEL_PROFILE=test
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCRIPTS="$KEEL_ROOT/scripts"

stop_services() {
  "$SCRIPTS/broker.sh" stop || true
  "$SCRIPTS/postgres.sh" stop || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # Quietly, so the test runner's summary stays the last thing printed (and
  # so a reader of our output that has gone away cannot interrupt this).
  mkdir -p "$KEEL_LOG_DIR" 2>/dev/null || true
  stop_services >>"$KEEL_LOG_DIR/teardown.log" 2>&1
  exit "$rc"
}

# Leftovers of an interrupted run go first, then its state.
stop_services
wipe_state_dir "$KEEL_STATE_DIR"
mkdir -p "$KEEL_LOG_DIR"

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cd "$KEEL_ROOT"

if [ -z "${KEEL_TEST_CMD:-}" ]; then
  log "cargo fmt --check"
  cargo fmt --all -- --check
  log "cargo clippy"
  cargo clippy --workspace --all-targets -- -D warnings
  log "cargo deny check (advisories, licenses, bans, sources)"
  "$SCRIPTS/supply-chain.sh"
  log "no import cycle inside any crate"
  for crate in domain commands projections gateway tests; do
    python3 "$SCRIPTS/module-cycles.py" "$crate/src" >/dev/null || python3 "$SCRIPTS/module-cycles.py" "$crate/src"
  done
fi

"$SCRIPTS/postgres.sh" start
"$SCRIPTS/broker.sh" start

KEEL_TEST_DATABASE_URL="$(grep '^KEEL_TEST_DATABASE_URL=' "$KEEL_STATE_DIR/db.env" | cut -d= -f2-)"
export KEEL_TEST_DATABASE_URL
export KEEL_TEST_KAFKA_BROKERS="127.0.0.1:$KEEL_BROKER_PORT"
# Tests that stop and restart a broker run a private one with this binary.
export KEEL_TANSU_BIN="$TANSU_BIN"
# The PKCS#11 key-encryption key is tested against SoftHSM2 (tokens in each test's temp dir).
ensure_softhsm
export KEEL_TEST_SOFTHSM_MODULE="$SOFTHSM_MODULE"
# The REST fuzzing suite runs schemathesis (installed from PyPI on first use).
ensure_schemathesis
export KEEL_SCHEMATHESIS_BIN="$SCHEMATHESIS_BIN"

# CLI tests run the `keel` binary itself; the OFREP SDK test runs a stock OpenFeature SDK.
cargo build -p keel-gateway --bin keel
(cd "$SCRIPTS/../tests/ofrep-sdk" && npm ci --no-audit --no-fund --loglevel=error)
# The browser tests (tests/it/browser) drive Debian's Chromium from the tests/browser npm project.
ensure_browser_tests

# Each test process logs to a file here, and lists every password, token, key secret and
# e-mail address it uses in KEEL_TEST_SECRETS; no log may contain one (scan-logs.sh below).
export KEEL_TEST_LOG_DIR="$KEEL_LOG_DIR/tests"
export KEEL_TEST_SECRETS="$KEEL_STATE_DIR/secrets.list"

tests_rc=0
if [ -n "${KEEL_TEST_CMD:-}" ]; then
  log "running KEEL_TEST_CMD: $KEEL_TEST_CMD"
  bash -c "$KEEL_TEST_CMD" || tests_rc=$?
elif cargo nextest --version >/dev/null 2>&1; then
  log "cargo nextest run --workspace"
  cargo nextest run --workspace --no-fail-fast || tests_rc=$?
else
  log "cargo test --workspace (cargo-nextest not installed)"
  cargo test --workspace --no-fail-fast || tests_rc=$?
fi

log "no test secret or e-mail address in any log"
"$SCRIPTS/scan-logs.sh" --self-test
if [ -s "$KEEL_TEST_SECRETS" ] || [ -z "${KEEL_TEST_CMD:-}" ]; then
  "$SCRIPTS/scan-logs.sh" "$KEEL_TEST_SECRETS" "$KEEL_LOG_DIR"
else
  log "(KEEL_TEST_CMD registered no secret: nothing to scan for)"
fi
exit "$tests_rc"
