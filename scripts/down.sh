#!/usr/bin/env bash
# `make down`: stop keel, the broker and Postgres. Data is kept.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stop_pid "$KEEL_PID" "$KEEL_BIN" 30
"$KEEL_ROOT/scripts/broker.sh" stop
"$KEEL_ROOT/scripts/postgres.sh" stop
log "stopped (data kept in ${KEEL_STATE_DIR#"$KEEL_ROOT"/}/)"
