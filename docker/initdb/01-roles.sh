#!/usr/bin/env bash
# Run by the postgres image on its first start (empty data volume) only.
# Creates the roles and database of Keel's env contract:
#   keel_owner  LOGIN, owns database keel (keel migrate runs as it)
#   keel_app    LOGIN, CONNECT only, no superuser, no BYPASSRLS (keel serve)
# Passwords come from the environment; psql's \getenv keeps them out of argv.
set -euo pipefail
: "${KEEL_OWNER_PASSWORD:?KEEL_OWNER_PASSWORD must be set}"
: "${KEEL_APP_PASSWORD:?KEEL_APP_PASSWORD must be set}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres <<'SQL'
\getenv owner_pw KEEL_OWNER_PASSWORD
\getenv app_pw KEEL_APP_PASSWORD
CREATE ROLE keel_owner WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
  NOREPLICATION NOBYPASSRLS PASSWORD :'owner_pw';
CREATE ROLE keel_app WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
  NOREPLICATION NOBYPASSRLS PASSWORD :'app_pw';
CREATE DATABASE keel OWNER keel_owner;
REVOKE ALL ON DATABASE keel FROM PUBLIC;
GRANT CONNECT ON DATABASE keel TO keel_app;
SQL
