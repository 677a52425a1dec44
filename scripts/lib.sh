# shellcheck shell=bash
# Shared helpers for Keel's dev/test scripts. Source it, don't run it:
#   . "$(dirname "$0")/lib.sh"
#
# Knobs (environment):
#   KEEL_PROFILE      dev (default) or test: picks default ports and storage
#   KEEL_STATE_DIR    where pid files, logs, data and secrets live
#                     (default .keel for dev, .keel/test for test)
#   KEEL_PG_PORT      Postgres port        (dev 5432,  test 55432)
#   KEEL_BROKER_PORT  Kafka broker port    (dev 9092,  test 59092)
#   KEEL_TOOLS        where tansu is installed (default /opt/keel-tools as
#                     root, else ~/.local/share/keel-tools)
set -euo pipefail

KEEL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KEEL_PROFILE="${KEEL_PROFILE:-dev}"
if [ "$(id -u)" -eq 0 ]; then
  KEEL_TOOLS="${KEEL_TOOLS:-/opt/keel-tools}"
else
  KEEL_TOOLS="${KEEL_TOOLS:-${XDG_DATA_HOME:-$HOME/.local/share}/keel-tools}"
fi
TANSU_VERSION="${TANSU_VERSION:-0.6.0}"
TANSU_BIN="$KEEL_TOOLS/bin/tansu"

case "$KEEL_PROFILE" in
  dev)
    KEEL_STATE_DIR="${KEEL_STATE_DIR:-$KEEL_ROOT/.keel}"
    KEEL_PG_PORT="${KEEL_PG_PORT:-5432}"
    KEEL_BROKER_PORT="${KEEL_BROKER_PORT:-9092}"
    ;;
  test)
    KEEL_STATE_DIR="${KEEL_STATE_DIR:-$KEEL_ROOT/.keel/test}"
    KEEL_PG_PORT="${KEEL_PG_PORT:-55432}"
    KEEL_BROKER_PORT="${KEEL_BROKER_PORT:-59092}"
    ;;
  *)
    echo "[keel] error: KEEL_PROFILE must be dev or test, not '$KEEL_PROFILE'" >&2
    exit 2
    ;;
esac

# Make the state dir absolute: services are started from other directories.
mkdir -p "$KEEL_STATE_DIR"
KEEL_STATE_DIR="$(cd "$KEEL_STATE_DIR" && pwd)"
KEEL_LOG_DIR="$KEEL_STATE_DIR/logs"
mkdir -p "$KEEL_LOG_DIR"
export KEEL_PROFILE KEEL_STATE_DIR KEEL_PG_PORT KEEL_BROKER_PORT KEEL_TOOLS

# shellcheck disable=SC2034 # used by the scripts that source this file
KEEL_BIN="$KEEL_ROOT/target/release/keel"
# shellcheck disable=SC2034
KEEL_PID="$KEEL_STATE_DIR/keel.pid"

# Never fails: a closed stderr must not abort a cleanup (see test.sh).
log() { printf '[keel] %s\n' "$*" >&2 || true; }
die() { printf '[keel] error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# Run a command as root: directly when we are root, else through sudo.
as_root() {
  if is_root; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root to run: $*"
  fi
}

apt_install() {
  log "installing with apt-get: $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# ensure_cmd COMMAND [DEBIAN_PACKAGE]
ensure_cmd() {
  command -v "$1" >/dev/null 2>&1 || apt_install "${2:-$1}"
}

# ensure_kek_file PATH: the development key-encryption key (ADR 0028), 32 random bytes,
# mode 600, created once and kept (losing it loses every stored secret).
ensure_kek_file() {
  local path="$1"
  [ -f "$path" ] && return 0
  mkdir -p "$(dirname "$path")"
  (umask 077 && head -c 32 /dev/urandom >"$path.tmp" && mv -f "$path.tmp" "$path")
  chmod 600 "$path"
  log "created the key-encryption key $path (mode 600; keep it: it unwraps every stored secret)"
}

# The SoftHSM2 PKCS#11 module: the tests run the PKCS#11 KEK provider against it.
SOFTHSM_MODULE="${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}"
ensure_softhsm() {
  if [ ! -f "$SOFTHSM_MODULE" ] || ! command -v softhsm2-util >/dev/null 2>&1; then
    apt_install softhsm2
  fi
  [ -f "$SOFTHSM_MODULE" ] || die "softhsm2 installed but $SOFTHSM_MODULE is missing"
}

# A random secret, hex only (safe inside URLs and SQL literals).
gen_secret() {
  if command -v openssl >/dev/null 2>&1; then
    openssl rand -hex 24
  else
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'
  fi
}

# True when something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# wait_until SECONDS DESCRIPTION COMMAND...: poll COMMAND until it succeeds.
# COMMAND exiting with 2 means "will never succeed" (e.g. the process died).
wait_until() {
  local timeout="$1" what="$2" deadline rc
  shift 2
  deadline=$((SECONDS + timeout))
  while true; do
    rc=0
    "$@" || rc=$?
    [ "$rc" -eq 0 ] && return 0
    if [ "$rc" -eq 2 ]; then
      log "gave up waiting for $what: the process exited"
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 0.5
  done
}

# pid_alive PIDFILE [NAME]: the pid file names a live process (whose command
# line contains NAME, to guard against a recycled pid).
pid_alive() {
  local pidfile="$1" name="${2:-}" pid
  [ -s "$pidfile" ] || return 1
  pid="$(cat "$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [ -n "$name" ]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$name" || return 1
  fi
}

# start_bg PIDFILE LOGFILE COMMAND...: start COMMAND detached in its own
# session, stdin from /dev/null and stdout/stderr appended to LOGFILE, so it
# holds none of the caller's file descriptors. setsid does not fork here (a
# script's background job is not a process-group leader), so $! is the pid
# of COMMAND itself.
start_bg() {
  local pidfile="$1" logfile="$2"
  shift 2
  setsid "$@" </dev/null >>"$logfile" 2>&1 &
  local pid=$! _
  echo "$pid" >"$pidfile"
  # Until the child has exec'd, /proc/PID/cmdline is still the forking shell's,
  # and pid_alive's name check would take the service for dead (and leave it
  # running, unstopped). Wait the few milliseconds that takes.
  for _ in $(seq 1 100); do
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$1" && return 0
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.02
  done
}

# stop_pid PIDFILE NAME [TIMEOUT]: SIGTERM, wait, then SIGKILL.
stop_pid() {
  local pidfile="$1" name="$2" timeout="${3:-30}" pid target deadline
  if ! pid_alive "$pidfile" "$name"; then
    rm -f "$pidfile"
    return 0
  fi
  pid="$(cat "$pidfile")"
  # start_bg made it a session (and process-group) leader: signal the whole
  # group so that children it may have spawned go too.
  target="$pid"
  if [ "$(ps -o pgid= -p "$pid" | tr -d ' ')" = "$pid" ]; then target="-$pid"; fi
  log "stopping $name (pid $pid)"
  kill -TERM -- "$target" 2>/dev/null || true
  deadline=$((SECONDS + timeout))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "$name did not stop within ${timeout}s, killing it"
      kill -KILL -- "$target" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$pidfile"
}

# Remove a state dir, including Postgres directories that live outside it
# (see pg_paths in postgres.sh: .keel/pg may be a symlink).
wipe_state_dir() {
  local dir="$1" link outside
  [ -d "$dir" ] || return 0
  for link in "$dir/pg" "$dir/pg-run"; do
    [ -L "$link" ] || continue
    outside="$(dirname "$(readlink -f "$link")")"
    case "$outside" in
      */keel-pg-*) rm -rf "$outside" ;;
    esac
  done
  rm -rf "$dir"
}

# Print the tail of a log file to stderr (for failures).
show_log() {
  local file="$1"
  [ -f "$file" ] || return 0
  log "last lines of $file:"
  tail -n 30 "$file" >&2 || true
}

# ---------------------------------------------------------------- tansu ---

# The tansu broker, with Keel's patch to its storage (scripts/tansu/), is installed
# into $KEEL_TOOLS once and reused while the stamp beside it names the same version
# and patch. A lock keeps two concurrent runs from building it twice.
TANSU_PATCH="$KEEL_ROOT/scripts/tansu/tansu-storage.patch"
TANSU_STAMP="$KEEL_TOOLS/tansu.patch.sha256"

tansu_current() {
  [ -x "$TANSU_BIN" ] && [ -f "$TANSU_STAMP" ] &&
    [ "$(cat "$TANSU_STAMP")" = "$TANSU_VERSION $(sha256sum "$TANSU_PATCH" | cut -d' ' -f1)" ]
}

ensure_tansu() {
  tansu_current && return 0
  command -v cargo >/dev/null 2>&1 || die "cargo is needed to install tansu"
  command -v git >/dev/null 2>&1 || die "git is needed to patch tansu"
  mkdir -p "$KEEL_TOOLS"
  local lock="$KEEL_TOOLS/.install.lock"
  (
    exec 9>"$lock"
    if ! flock -n 9; then
      log "another process is installing tansu; waiting for it"
      flock 9
    fi
    tansu_current || install_tansu
  )
  tansu_current || die "tansu install failed: $TANSU_BIN missing"
}

# Builds tansu $TANSU_VERSION from its published crate, with tansu-storage patched, into
# $KEEL_TOOLS (~10 minutes).
install_tansu() {
  local work registry v="$TANSU_VERSION"
  work="$(mktemp -d)"
  log "installing tansu $v (patched storage) into $KEEL_TOOLS (takes ~10 minutes)"
  # The two published crates, fetched without their dependencies.
  mkdir -p "$work/fetch/src"
  echo 'fn main() {}' >"$work/fetch/src/main.rs"
  cat >"$work/fetch/Cargo.toml" <<TOML
[package]
name = "keel-fetch-tansu"
version = "0.0.0"
edition = "2021"

[dependencies]
tansu = { version = "=$v", default-features = false }
tansu-storage = { version = "=$v", default-features = false }
TOML
  (cd "$work/fetch" && cargo fetch --quiet) || die "could not fetch the tansu crates"
  registry="${CARGO_HOME:-$HOME/.cargo}/registry/cache"
  for crate in tansu tansu-storage; do
    local file
    file="$(find "$registry" -name "$crate-$v.crate" | head -n 1)"
    [ -n "$file" ] || die "$crate-$v.crate not found under $registry"
    tar -xzf "$file" -C "$work"
  done
  (cd "$work/tansu-storage-$v" && git apply "$TANSU_PATCH") || die "the tansu-storage patch does not apply"
  # Build tansu with its own lock file, the patched storage taking the registry's place.
  printf '\n[patch.crates-io]\ntansu-storage = { path = "../tansu-storage-%s" }\n' "$v" >>"$work/tansu-$v/Cargo.toml"
  awk -v v="$v" '
    /^name = "tansu-storage"$/ { named = 1; print; next }
    named && $0 == "version = \"" v "\"" { strip = 1; named = 0; print; next }
    strip && (/^source = / || /^checksum = /) { next }
    { strip = 0; named = 0; print }' "$work/tansu-$v/Cargo.lock" >"$work/Cargo.lock"
  mv "$work/Cargo.lock" "$work/tansu-$v/Cargo.lock"
  CARGO_TARGET_DIR="$work/target" cargo install --locked --force --path "$work/tansu-$v" \
    --features dynostore,libsql --root "$KEEL_TOOLS" || die "building tansu failed"
  echo "$v $(sha256sum "$TANSU_PATCH" | cut -d' ' -f1)" >"$TANSU_STAMP"
  rm -rf "$work"
}

# ----------------------------------------------------------- schemathesis ---

# schemathesis (the REST fuzzing suite's tool, from PyPI) lives in its own virtualenv
# under $KEEL_TOOLS, one per pinned version.
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
SCHEMATHESIS_VENV="$KEEL_TOOLS/schemathesis-$SCHEMATHESIS_VERSION"
SCHEMATHESIS_BIN="$SCHEMATHESIS_VENV/bin/schemathesis"

ensure_schemathesis() {
  [ -x "$SCHEMATHESIS_BIN" ] && return 0
  ensure_cmd python3
  python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
  mkdir -p "$KEEL_TOOLS"
  (
    exec 9>"$KEEL_TOOLS/.schemathesis.lock"
    flock 9
    [ -x "$SCHEMATHESIS_BIN" ] && exit 0
    log "installing schemathesis $SCHEMATHESIS_VERSION into $SCHEMATHESIS_VENV"
    rm -rf "$SCHEMATHESIS_VENV"
    python3 -m venv "$SCHEMATHESIS_VENV" &&
      "$SCHEMATHESIS_VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" ||
      { rm -rf "$SCHEMATHESIS_VENV"; die "installing schemathesis failed"; }
  )
  [ -x "$SCHEMATHESIS_BIN" ] || die "schemathesis install failed: $SCHEMATHESIS_BIN missing"
}

# -------------------------------------------------------------- browser ---

# The browser tests (tests/browser/, driven from tests/it/browser*.rs) need Debian's Chromium
# (playwright-core launches /usr/bin/chromium; no browser is ever downloaded) and the npm
# project's node_modules, installed by `npm ci` from its package-lock.json when missing or when
# the lock file changed since (a stamp inside node_modules holds the lock file's digest).
CHROMIUM_BIN=/usr/bin/chromium
BROWSER_TESTS_DIR="$KEEL_ROOT/tests/browser"

ensure_chromium() {
  [ -x "$CHROMIUM_BIN" ] && return 0
  (
    exec 9>"/tmp/keel-chromium-install.lock"
    flock 9
    [ -x "$CHROMIUM_BIN" ] || apt_install chromium fonts-noto-cjk
  )
  [ -x "$CHROMIUM_BIN" ] || die "chromium install failed: $CHROMIUM_BIN missing"
}

# ensure_npm_project DIR: `npm ci` in DIR unless its node_modules matches its package-lock.json.
ensure_npm_project() {
  local dir="$1" stamp want
  stamp="$dir/node_modules/.keel-lock.sha256"
  want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
  ensure_cmd npm
  log "npm ci in $(basename "$dir")"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed in $dir"
  echo "$want" >"$stamp"
}

ensure_browser_tests() {
  ensure_chromium
  ensure_npm_project "$BROWSER_TESTS_DIR"
}
