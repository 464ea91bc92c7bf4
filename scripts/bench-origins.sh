#!/usr/bin/env bash
# make bench-origins: uploads per minute and patches built per minute with 1
# and 3 origins on a shared PostgreSQL + S3 store (and one origin on its
# embedded store for reference). Starts the servers (scripts/test-services.sh)
# unless CAPSTAN_TEST_POSTGRES and CAPSTAN_TEST_S3 are already set.
# BENCH_DURATION (default 15s) is the upload phase of each setup.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CAPSTAN_TEST_POSTGRES:-}" ] || [ -z "${CAPSTAN_TEST_S3:-}" ]; then
  eval "$(bash scripts/test-services.sh start)"
  trap 'bash scripts/test-services.sh stop "$CAPSTAN_TEST_SERVICES"' EXIT
fi
export CAPSTAN_REQUIRE_SERVICES=1 CAPSTAN_BENCH_ORIGINS=1
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
go test -count=1 -timeout 30m -run '^TestBenchOrigins$' -v ./cmd/capstan/ | grep -v '^=== \|^--- \|^PASS\|^ok ' || true
