#!/usr/bin/env bash
# Local Kafka-protocol broker for Keel (tansu), listening on 127.0.0.1 only.
#
#   scripts/broker.sh start | stop | status
#
# Storage: sqlite file $KEEL_STATE_DIR/broker/keel.db for the dev profile
# (survives restarts), memory for the test profile; override with
# KEEL_BROKER_STORAGE (a tansu --storage-engine URL; sqlite paths are
# relative to $KEEL_STATE_DIR/broker). Pid file $KEEL_STATE_DIR/broker.pid,
# log $KEEL_STATE_DIR/logs/broker.log.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BROKER_DIR="$KEEL_STATE_DIR/broker"
BROKER_PID="$KEEL_STATE_DIR/broker.pid"
BROKER_LOG="$KEEL_LOG_DIR/broker.log"
BROKER_URL="tcp://127.0.0.1:$KEEL_BROKER_PORT"
if [ "$KEEL_PROFILE" = test ]; then
  KEEL_BROKER_STORAGE="${KEEL_BROKER_STORAGE:-memory://tansu/}"
else
  KEEL_BROKER_STORAGE="${KEEL_BROKER_STORAGE:-sqlite://keel.db}"
fi

cmd_start() {
  if pid_alive "$BROKER_PID" tansu; then
    log "broker already running (pid $(cat "$BROKER_PID")) on 127.0.0.1:$KEEL_BROKER_PORT"
    return 0
  fi
  ensure_tansu
  if port_open "$KEEL_BROKER_PORT"; then
    die "port $KEEL_BROKER_PORT is already taken by another process"
  fi
  mkdir -p "$BROKER_DIR"
  log "starting broker on 127.0.0.1:$KEEL_BROKER_PORT, storage $KEEL_BROKER_STORAGE (log $BROKER_LOG)"
  # Run from the broker dir: tansu resolves sqlite:// paths against its cwd.
  (
    cd "$BROKER_DIR"
    start_bg "$BROKER_PID" "$BROKER_LOG" "$TANSU_BIN" broker \
      --cluster-id keel \
      --listener-url "$BROKER_URL" \
      --advertised-listener-url "$BROKER_URL" \
      --storage-engine "$KEEL_BROKER_STORAGE"
  )
  if ! wait_until 30 "broker on port $KEEL_BROKER_PORT" broker_up; then
    show_log "$BROKER_LOG"
    stop_pid "$BROKER_PID" tansu 5
    die "broker did not start"
  fi
  log "broker ready on 127.0.0.1:$KEEL_BROKER_PORT"
}

broker_up() {
  pid_alive "$BROKER_PID" tansu || return 2
  port_open "$KEEL_BROKER_PORT"
}

cmd_stop() {
  stop_pid "$BROKER_PID" tansu 20
}

cmd_status() {
  if pid_alive "$BROKER_PID" tansu; then
    echo "broker: running (pid $(cat "$BROKER_PID")) on 127.0.0.1:$KEEL_BROKER_PORT"
  else
    echo "broker: stopped"
    return 1
  fi
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
