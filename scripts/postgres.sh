#!/usr/bin/env bash
# Local PostgreSQL for Keel: one server per state dir, owned by the OS user
# postgres (the server refuses to run as root).
#
#   scripts/postgres.sh start    init (first time), start, create roles + db
#   scripts/postgres.sh stop     fast shutdown, data kept
#   scripts/postgres.sh status
#   scripts/postgres.sh psql     superuser psql over the unix socket
#
# Layout under $KEEL_STATE_DIR: pg/ (data), pg-run/ (unix socket),
# logs/postgres.log, db.env (mode 600: the connection URLs with the generated
# passwords). Roles: keel_owner (owns database keel, used for migrations),
# keel_app (runtime: LOGIN, CONNECT, no superuser, no BYPASSRLS); with
# KEEL_PROFILE=test also keel_test (SUPERUSER, for tests that create
# databases). TCP is 127.0.0.1 only, with scram-sha-256; the unix socket
# accepts only the OS user postgres (peer auth).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DB_ENV="$KEEL_STATE_DIR/db.env"
PG_LOG="$KEEL_LOG_DIR/postgres.log"

if is_root; then
  PG_SUPERUSER=postgres
  AS_PG=(runuser -u postgres --)
else
  PG_SUPERUSER="$(id -un)"
  AS_PG=()
fi

# Run a command as the Postgres OS user, from a directory it can read.
as_pg() { (cd / && "${AS_PG[@]}" "$@"); }

find_pg_bin() {
  local dir
  if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
    PG_BIN="$(dirname "$(readlink -f "$(command -v pg_ctl)")")"
    return 0
  fi
  dir="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  if [ -n "$dir" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/initdb" ]; then
    PG_BIN="$dir"
    return 0
  fi
  return 1
}

ensure_postgres_installed() {
  if ! find_pg_bin; then
    # Debian's package would otherwise create and start a cluster on 5432.
    as_root mkdir -p /etc/postgresql-common/createcluster.d
    echo 'create_main_cluster = false' |
      as_root tee /etc/postgresql-common/createcluster.d/keel.conf >/dev/null
    apt_install postgresql-15 || apt_install postgresql
    find_pg_bin || die "PostgreSQL server binaries not found after install"
  fi
  PSQL="$PG_BIN/psql"
  [ -x "$PSQL" ] || PSQL="$(command -v psql)" || die "psql not found"
  if is_root && ! id postgres >/dev/null 2>&1; then
    log "creating OS user postgres"
    useradd --system --user-group --home-dir /var/lib/postgresql \
      --shell /bin/bash postgres
  fi
}

# Sets PGDATA_DIR and PG_RUN_DIR. They live in the state dir unless the
# postgres user cannot reach it (e.g. a checkout under /root) or the socket
# path would be too long; then they go to /var/tmp and the state dir holds
# symlinks to them. With "create", makes the directories.
pg_paths() {
  local create="${1:-}" outside
  if [ -L "$KEEL_STATE_DIR/pg" ]; then
    PGDATA_DIR="$(readlink -f "$KEEL_STATE_DIR/pg")"
    PG_RUN_DIR="$(readlink -f "$KEEL_STATE_DIR/pg-run")"
  else
    PGDATA_DIR="$KEEL_STATE_DIR/pg"
    PG_RUN_DIR="$KEEL_STATE_DIR/pg-run"
    if [ "$create" = create ] && [ ! -e "$PGDATA_DIR" ] &&
      { [ "${#PG_RUN_DIR}" -gt 80 ] || ! as_pg test -x "$KEEL_STATE_DIR"; }; then
      outside="/var/tmp/keel-pg-$(printf '%s' "$KEEL_STATE_DIR" | sha256sum | cut -c1-12)"
      log "postgres cannot use $KEEL_STATE_DIR directly; using $outside"
      mkdir -p "$outside/data" "$outside/run"
      chmod 755 "$outside"
      ln -sfn "$outside/data" "$KEEL_STATE_DIR/pg"
      ln -sfn "$outside/run" "$KEEL_STATE_DIR/pg-run"
      PGDATA_DIR="$outside/data"
      PG_RUN_DIR="$outside/run"
    fi
  fi
  if [ "$create" = create ]; then
    mkdir -p "$PGDATA_DIR" "$PG_RUN_DIR"
    if is_root; then chown postgres:postgres "$PGDATA_DIR" "$PG_RUN_DIR"; fi
    chmod 700 "$PGDATA_DIR" "$PG_RUN_DIR"
  fi
}

pg_running() {
  [ -f "$PGDATA_DIR/PG_VERSION" ] &&
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1
}

pg_psql() {
  as_pg "$PSQL" -X -q -v ON_ERROR_STOP=1 -h "$PG_RUN_DIR" -p "$KEEL_PG_PORT" \
    -U "$PG_SUPERUSER" -d postgres "$@"
}

pg_init() {
  [ -s "$PGDATA_DIR/PG_VERSION" ] && return 0
  if [ -n "$(ls -A "$PGDATA_DIR")" ]; then
    log "removing incomplete data dir $PGDATA_DIR"
    find "$PGDATA_DIR" -mindepth 1 -delete
  fi
  local nosync=()
  if [ "$KEEL_PROFILE" = test ]; then nosync=(--no-sync); fi
  log "initdb $PGDATA_DIR"
  if ! as_pg "$PG_BIN/initdb" -D "$PGDATA_DIR" -U "$PG_SUPERUSER" \
    --auth-local=peer --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C "${nosync[@]}" >>"$PG_LOG" 2>&1; then
    show_log "$PG_LOG"
    die "initdb failed"
  fi
  echo "include_if_exists = 'keel.conf'" >>"$PGDATA_DIR/postgresql.conf"
}

# Settings that follow the script (port, socket dir) are rewritten each start.
pg_write_conf() {
  {
    echo "# Written by scripts/postgres.sh at every start; edit the script instead."
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $KEEL_PG_PORT"
    echo "unix_socket_directories = '$PG_RUN_DIR'"
    echo "password_encryption = 'scram-sha-256'"
    if [ "$KEEL_PROFILE" = test ]; then
      echo "# Throwaway test server: speed over durability."
      echo "fsync = off"
      echo "synchronous_commit = off"
      echo "full_page_writes = off"
      echo "max_connections = 200"
      echo "# Benchmarks read when each projector transaction committed."
      echo "track_commit_timestamp = on"
    fi
    if [ -n "${KEEL_PG_STATEMENTS:-}" ]; then
      echo "# Profiling (KEEL_PG_STATEMENTS=1): what each statement costs, in pg_stat_statements."
      echo "shared_preload_libraries = 'pg_stat_statements'"
    fi
  } >"$PGDATA_DIR/keel.conf"
  if is_root; then chown postgres:postgres "$PGDATA_DIR/keel.conf"; fi
}

# password_from_env_file VAR ROLE: the password inside VAR's URL in db.env.
password_from_env_file() {
  local line pw
  line="$(grep "^$1=" "$DB_ENV" 2>/dev/null | head -n 1 || true)"
  pw="${line#*://"$2":}"
  pw="${pw%%@*}"
  if [[ "$pw" =~ ^[0-9a-f]{16,}$ ]]; then echo "$pw"; else gen_secret; fi
}

# Create roles and database (idempotent) and (re)write db.env. Passwords are
# generated once and then kept in db.env, which is the source of truth.
pg_setup_roles() {
  local owner_pw app_pw test_pw base="127.0.0.1:$KEEL_PG_PORT"
  owner_pw="$(password_from_env_file KEEL_MIGRATION_DATABASE_URL keel_owner)"
  app_pw="$(password_from_env_file KEEL_DATABASE_URL keel_app)"
  test_pw="$(password_from_env_file KEEL_TEST_DATABASE_URL keel_test)"

  pg_psql <<SQL
SELECT 'CREATE ROLE keel_owner'
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'keel_owner') \gexec
ALTER ROLE keel_owner WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
  NOREPLICATION NOBYPASSRLS PASSWORD '$owner_pw';
SELECT 'CREATE ROLE keel_app'
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'keel_app') \gexec
ALTER ROLE keel_app WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
  NOREPLICATION NOBYPASSRLS PASSWORD '$app_pw';
SELECT 'CREATE DATABASE keel OWNER keel_owner'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'keel') \gexec
ALTER DATABASE keel OWNER TO keel_owner;
REVOKE ALL ON DATABASE keel FROM PUBLIC;
GRANT CONNECT ON DATABASE keel TO keel_app;
SQL

  if [ "$KEEL_PROFILE" = test ]; then
    pg_psql <<SQL
SELECT 'CREATE ROLE keel_test'
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'keel_test') \gexec
ALTER ROLE keel_test WITH LOGIN SUPERUSER PASSWORD '$test_pw';
SQL
  fi

  (
    umask 077
    {
      echo "# Written by scripts/postgres.sh. Secret: never commit or share."
      echo "KEEL_DATABASE_URL=postgres://keel_app:$app_pw@$base/keel"
      echo "KEEL_MIGRATION_DATABASE_URL=postgres://keel_owner:$owner_pw@$base/keel"
      if [ "$KEEL_PROFILE" = dev ]; then
        # The key-encryption key (ADR 0028): a file outside the database, made by up.sh.
        echo "KEEL_KEK=file:$KEEL_STATE_DIR/kek"
      fi
      if [ "$KEEL_PROFILE" = test ]; then
        echo "KEEL_TEST_DATABASE_URL=postgres://keel_test:$test_pw@$base/postgres"
      fi
    } >"$DB_ENV.tmp"
    mv -f "$DB_ENV.tmp" "$DB_ENV"
  )
  chmod 600 "$DB_ENV"
}

cmd_start() {
  ensure_postgres_installed
  pg_paths create
  if pg_running; then
    log "postgres already running (data $PGDATA_DIR)"
  else
    pg_init
    pg_write_conf
    if port_open "$KEEL_PG_PORT"; then
      die "port $KEEL_PG_PORT is already taken by another process"
    fi
    log "starting postgres on 127.0.0.1:$KEEL_PG_PORT (log $PG_LOG)"
    # Detached (own session), output to the log file, so the server holds
    # none of the caller's file descriptors.
    if ! (cd / && setsid "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" \
      -w -t 60 start) </dev/null >>"$PG_LOG" 2>&1; then
      show_log "$PG_LOG"
      die "postgres did not start"
    fi
  fi
  pg_setup_roles
  log "postgres ready on 127.0.0.1:$KEEL_PG_PORT (URLs in $DB_ENV)"
}

cmd_stop() {
  find_pg_bin || return 0
  pg_paths
  if pg_running; then
    log "stopping postgres (data $PGDATA_DIR)"
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t 60 stop >>"$PG_LOG" 2>&1 ||
      as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m immediate -w -t 30 stop >>"$PG_LOG" 2>&1
  fi
}

cmd_status() {
  find_pg_bin || { echo "postgres: not installed"; return 1; }
  pg_paths
  if pg_running; then
    echo "postgres: running on 127.0.0.1:$KEEL_PG_PORT (data $PGDATA_DIR)"
  else
    echo "postgres: stopped"
    return 1
  fi
}

cmd_psql() {
  ensure_postgres_installed
  pg_paths
  pg_psql "$@"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  psql) shift; cmd_psql "$@" ;;
  *) echo "usage: $0 start|stop|status|psql [psql args]" >&2; exit 2 ;;
esac
