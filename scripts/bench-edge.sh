#!/usr/bin/env bash
# make bench-edge: the edge against nginx serving the same bytes, as the
# acceptance harness measures it: builds ../shared/tools/perfkit (beside the
# repository) and runs it against this checkout's bin/capstan with the small
# settings, printing perfkit's table (check up to date, check with an
# update, the patch, the full stream, the Capgo zip, Capgo POST /updates)
# and the device update line.
#
# Knobs (environment): PERFKIT (the perfkit source folder), PERF_ARGS
# (perfkit flags, default "-t 1 -c 50 -d 3 -device-runs 11 -bench-devices 0"),
# CAPSTAN_FIXTURES (default ../shared/fixtures). On a 2-core machine the
# servers share the cores with wrk: only gross differences show. The figures
# that count come from a quiet many-core machine (see perfkit's README).
set -euo pipefail
ROOT=$(git rev-parse --show-toplevel)
cd "$ROOT"
PERFKIT=${PERFKIT:-$ROOT/../shared/tools/perfkit}
FIX=${CAPSTAN_FIXTURES:-$ROOT/../shared/fixtures}/swagger-ui
PERF_ARGS=${PERF_ARGS:-"-t 1 -c 50 -d 3 -device-runs 11 -bench-devices 0"}
log() { printf '\033[1mbench-edge:\033[0m %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
[ -f "$PERFKIT/main.go" ] || die "perfkit not found in $PERFKIT (set PERFKIT)"
[ -f "$FIX/www-5.34.0.zip" ] && [ -f "$FIX/www-5.34.1.zip" ] || die "swagger-ui fixtures not found in $FIX (set CAPSTAN_FIXTURES)"
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
	log "installing nginx and wrk"
	(apt-get update -qq && apt-get install -y -qq nginx wrk) >/dev/null 2>&1 || die "cannot install nginx and wrk (apt-get)"
fi
TMP=$(mktemp -d "${TMPDIR:-/tmp}/capstan-bench-edge.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
go build -o "$ROOT/bin/capstan" ./cmd/capstan
(cd "$PERFKIT" && go build -o "$TMP/perfkit" .)
mkdir -p "$TMP/fixtures"
cp "$FIX/www-5.34.0.zip" "$FIX/www-5.34.1.zip" "$TMP/fixtures/"
log "perfkit $PERF_ARGS ($(nproc) CPUs, load average $(cut -d' ' -f1 /proc/loadavg))"
# shellcheck disable=SC2086 # PERF_ARGS is a list of flags
"$TMP/perfkit" -capstan "$ROOT/bin/capstan" -nginx "$(command -v nginx)" -wrk "$(command -v wrk)" -fix "$TMP/fixtures" -work "$TMP/work" $PERF_ARGS
