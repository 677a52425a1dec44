#!/usr/bin/env bash
# Secrets and personal data in logs (suite 5 of issue 13): fails when a log line contains a
# password, token, key secret or e-mail address the tests registered (tests/src/logs.rs).
#
#   scripts/scan-logs.sh SECRETS_FILE DIR...   scan every file under DIR... for the lines of
#                                              SECRETS_FILE (case-insensitive); list file:line
#                                              with the secret masked; exit 1 on any finding
#   scripts/scan-logs.sh --self-test           plant a secret in a scratch log and check that
#                                              the scan finds it (so the scan is not vacuous)
set -euo pipefail

# "abcd…(32 chars)": enough to find the test that used it, not enough to use it.
mask() { awk '{ printf "%s…(%d chars)", substr($0, 1, 4), length($0) }'; }

scan() {
  local secrets="$1" findings
  shift
  [ -s "$secrets" ] || { echo "[keel] error: no secrets registered in $secrets: the scan would prove nothing" >&2; return 2; }
  # -a: a log with a stray binary byte is still read as text; -o: only the secret, which
  # is masked before it is printed.
  findings="$(grep -rnoaiF -f "$secrets" -- "$@" || true)"
  [ -z "$findings" ] && return 0
  echo "[keel] error: $(wc -l <<<"$findings") log line(s) contain a test secret or e-mail address:" >&2
  while IFS= read -r finding; do
    local file="${finding%%:*}" rest="${finding#*:}"
    printf '  %s:%s: %s\n' "$file" "${rest%%:*}" "$(printf '%s' "${rest#*:}" | mask)" >&2
  done <<<"$(head -n 50 <<<"$findings")"
  return 1
}

self_test() {
  local dir rc=0 out
  dir="$(mktemp -d)"
  trap 'rm -rf "$dir"' RETURN
  printf 'keel_pw_planted_0123456789\nowner@planted.example.com\n' >"$dir/secrets.list"
  mkdir -p "$dir/logs"
  printf 'a clean line\n' >"$dir/logs/clean.log"
  scan "$dir/secrets.list" "$dir/logs" 2>/dev/null || { echo "[keel] error: scan self-test: a clean log was flagged" >&2; return 1; }
  printf 'line one\nlogin failed for OWNER@planted.example.com\ntoken=keel_pw_planted_0123456789 end\n' >"$dir/logs/leaky.log"
  out="$(scan "$dir/secrets.list" "$dir/logs" 2>&1)" || rc=$?
  if [ "$rc" -ne 1 ] || ! grep -qi "leaky.log:2: owne…" <<<"$out" || ! grep -q "leaky.log:3: keel…" <<<"$out"; then
    echo "[keel] error: scan self-test: the planted secrets were not reported (rc $rc): $out" >&2
    return 1
  fi
  if grep -qi "planted_0123456789\|planted.example.com" <<<"$out"; then
    echo "[keel] error: scan self-test: the report shows a secret in clear" >&2
    return 1
  fi
}

if [ "${1:-}" = "--self-test" ]; then
  self_test
else
  [ "$#" -ge 2 ] || { echo "usage: $0 SECRETS_FILE DIR... | --self-test" >&2; exit 2; }
  scan "$@"
fi
