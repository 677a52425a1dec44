#!/usr/bin/env bash
# Supply chain check of `make test`: `cargo deny --offline check` (advisories, licenses,
# bans, sources) against deny.toml.
#
# The RustSec advisory database cannot be cloned here: a snapshot is read from
# KEEL_ADVISORY_DB_SNAPSHOT (default ../shared/advisory-db/advisory-db.tar.gz beside the
# checkout, else the copy of that snapshot kept in scripts/advisory-db/, 2026-08-21) and unpacked under $KEEL_STATE_DIR/advisory-dbs, where deny.toml's db-path
# ($KEEL_ADVISORY_DB) points. A missing snapshot fails the check; it is never skipped.
# cargo-deny $CARGO_DENY_VERSION is installed into $KEEL_TOOLS once (~4 minutes).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CARGO_DENY_VERSION="${CARGO_DENY_VERSION:-0.20.2}"
CARGO_DENY_BIN="$KEEL_TOOLS/bin/cargo-deny"
SNAPSHOT="${KEEL_ADVISORY_DB_SNAPSHOT:-$KEEL_ROOT/../shared/advisory-db/advisory-db.tar.gz}"
if [ -z "${KEEL_ADVISORY_DB_SNAPSHOT:-}" ] && [ ! -f "$SNAPSHOT" ]; then
  SNAPSHOT="$KEEL_ROOT/scripts/advisory-db/advisory-db.tar.gz"
fi
# The folder name cargo-deny gives its clone of the default database URL.
DB_FOLDER="advisory-db-3157b0e258782691"

cargo_deny_current() {
  [ -x "$CARGO_DENY_BIN" ] && [ "$("$CARGO_DENY_BIN" --version 2>/dev/null)" = "cargo-deny $CARGO_DENY_VERSION" ]
}

ensure_cargo_deny() {
  cargo_deny_current && return 0
  mkdir -p "$KEEL_TOOLS"
  (
    exec 9>"$KEEL_TOOLS/.cargo-deny.lock"
    flock 9
    cargo_deny_current && exit 0
    log "installing cargo-deny $CARGO_DENY_VERSION into $KEEL_TOOLS (takes ~4 minutes)"
    work="$(mktemp -d)"
    CARGO_TARGET_DIR="$work" cargo install --locked --force cargo-deny --version "$CARGO_DENY_VERSION" \
      --root "$KEEL_TOOLS" || die "installing cargo-deny failed"
    rm -rf "$work"
  )
  cargo_deny_current || die "cargo-deny $CARGO_DENY_VERSION missing from $CARGO_DENY_BIN"
}

[ -f "$SNAPSHOT" ] || die "no advisory database snapshot at $SNAPSHOT: cargo deny cannot check advisories
  offline without it (set KEEL_ADVISORY_DB_SNAPSHOT to the advisory-db.tar.gz to use)"
ensure_cargo_deny

KEEL_ADVISORY_DB="$KEEL_STATE_DIR/advisory-dbs"
rm -rf "$KEEL_ADVISORY_DB"
mkdir -p "$KEEL_ADVISORY_DB"
tar -xzf "$SNAPSHOT" -C "$KEEL_ADVISORY_DB" || die "could not unpack $SNAPSHOT"
[ -d "$KEEL_ADVISORY_DB/advisory-db" ] || die "$SNAPSHOT holds no advisory-db/ folder"
mv "$KEEL_ADVISORY_DB/advisory-db" "$KEEL_ADVISORY_DB/$DB_FOLDER"
export KEEL_ADVISORY_DB

cd "$KEEL_ROOT"
# --offline keeps cargo-deny from fetching the database; the crates come from cargo's cache.
cargo fetch --quiet
"$CARGO_DENY_BIN" --offline check advisories licenses bans sources
