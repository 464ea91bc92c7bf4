#!/usr/bin/env bash
# profile-edge.sh: CPU and allocation profiles of the edge under load, one per
# request a device makes (the rows of ../shared/tools/perfkit and `make
# bench-edge`).
#
# Starts `capstan dev --pprof` on loopback (Capgo rate limit off, as perfkit
# runs it), uploads swagger-ui 5.34.0 and 5.34.1 signed, then for each row
# runs wrk against the edge and meanwhile takes a CPU profile and an
# allocation profile (the allocations of that window only) from the
# profiling listener. Writes OUT/<row>.cpu.pprof and OUT/<row>.allocs.pprof
# and prints the top functions of each.
#
# Knobs (environment): SECS (8, wrk seconds per row), CONNS (50), THREADS (1),
# OUT (bench-out/profiles), ROWS (all six), CAPSTAN_FIXTURES.
set -euo pipefail
ROOT=$(git rev-parse --show-toplevel)
cd "$ROOT"
FIX=${CAPSTAN_FIXTURES:-$ROOT/../shared/fixtures}/swagger-ui
SECS=${SECS:-8}
CONNS=${CONNS:-50}
THREADS=${THREADS:-1}
OUT=${OUT:-$ROOT/bench-out/profiles}
ROWS=${ROWS:-check_uptodate check_update patch full zip capgo_updates}
BIN=$ROOT/bin/capstan
log() { printf '\033[1mprofile:\033[0m [%3ds] %s\n' "$SECONDS" "$*" >&2; }
die() { log "$*"; exit 1; }
command -v wrk >/dev/null || die "wrk is needed (apt-get install wrk)"
go build -o "$BIN" ./cmd/capstan
mkdir -p "$OUT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/capstan-profile.XXXXXX")
DEV_PID=""
cleanup() {
	[ -n "$DEV_PID" ] && kill "$DEV_PID" 2>/dev/null && wait "$DEV_PID" 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT

export CAPSTAN_ADMIN_KEY=profile-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
export CAPSTAN_API_KEY=$CAPSTAN_ADMIN_KEY
"$BIN" dev --data "$TMP/data" --api 127.0.0.1:0 --edge 127.0.0.1:0 --gossip 127.0.0.1:0 --capgo-rate -1 --pprof 127.0.0.1:0 >"$TMP/dev.log" 2>&1 &
DEV_PID=$!
for _ in $(seq 1 200); do grep -q 'capstan dev: origin API' "$TMP/dev.log" && break; sleep 0.1; done
API=$(grep -o 'capstan dev: origin API [^,]*' "$TMP/dev.log" | awk '{print $NF}')
EDGE=$(grep -o ', edge [^,]*' "$TMP/dev.log" | head -1 | awk '{print $NF}')
PPROF=$(grep -o 'msg="pprof listening" addr=[^ ]*' "$TMP/dev.log" | sed 's/.*addr=//')
[ -n "$API" ] && [ -n "$EDGE" ] && [ -n "$PPROF" ] || die "capstan dev did not start: $(cat "$TMP/dev.log")"
export CAPSTAN_SERVER=$API

"$BIN" keys gen --out "$TMP/release.key" >/dev/null
up() { "$BIN" upload --app perf --version "$1" --channel production --sign-key "$TMP/release.key" --json "$FIX/www-$1.zip" | sed -n 's/.*"id": *"\([0-9a-f]*\)".*/\1/p'; }
ID0=$(up 5.34.0)
ID1=$(up 5.34.1)
[ -n "$ID0" ] && [ -n "$ID1" ] || die "upload failed"
ZERO=$(printf '0%.0s' $(seq 1 64))
# The origin builds patches in the background when a channel moves: wait for
# them, so that no build competes for the CPU with what is profiled.
for pair in "$ZERO/$ID0" "$ZERO/$ID1" "$ID0/$ID1"; do
	curl -fsS --max-time 600 -H "Authorization: Bearer $CAPSTAN_API_KEY" -o /dev/null "$API/v1/patches/$pair" || die "patch $pair"
done
CAPGO='{"platform":"android","device_id":"0b6c2a9e-8d1f-4c5e-9a7b-2f4e6d8c1a3b","app_id":"perf","custom_id":"","version_build":"5.0.0","version_code":"500","version_os":"14","version_name":"5.34.0","plugin_version":"8.51.14","is_emulator":false,"is_prod":true,"defaultChannel":""}'
printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n' "'$CAPGO'" >"$TMP/post.lua"

# url ROW: the URL of a row, waiting until the edge serves it.
url() {
	local u
	case $1 in
	check_uptodate) u="$EDGE/v1/check?app=perf&device=dev-1&current=$ID1&version=5.34.1" ;;
	check_update) u="$EDGE/v1/check?app=perf&device=dev-1&current=$ID0&version=5.34.0" ;;
	patch) u="$EDGE/v1/patches/$ID0/$ID1" ;;
	full) u="$EDGE/v1/patches/$ZERO/$ID1" ;;
	zip) u=$(curl -fsS -X POST -H 'Content-Type: application/json' -d "$CAPGO" "$EDGE/updates" | sed -n 's/.*"url":"\([^"]*\)".*/\1/p') ;;
	capgo_updates) u="$EDGE/updates" ;;
	*) die "unknown row $1" ;;
	esac
	[ -n "$u" ] || die "no URL for $1"
	for _ in $(seq 1 300); do
		if [ "$1" = capgo_updates ]; then
			curl -fsS -X POST -d "$CAPGO" "$u" | grep -q '"url"' && break
		elif [ "$1" = check_update ]; then
			curl -fsS "$u" | grep -q '"update"' && break
		else
			curl -fsS -o /dev/null "$u" && break
		fi
		sleep 0.2
	done
	echo "$u"
}

for row in $ROWS; do
	u=$(url "$row")
	script=()
	[ "$row" = capgo_updates ] && script=(-s "$TMP/post.lua")
	log "$row: wrk -t$THREADS -c$CONNS -d${SECS}s with CPU and allocation profiles"
	wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" --latency "${script[@]}" "$u" >"$OUT/$row.wrk.txt" 2>&1 &
	WRK=$!
	sleep 1
	curl -fsS -o "$OUT/$row.allocs.pprof" "${PPROF}allocs?seconds=$((SECS - 2))" &
	curl -fsS -o "$OUT/$row.cpu.pprof" "${PPROF}profile?seconds=$((SECS - 2))"
	wait $! 2>/dev/null || true
	wait "$WRK"
	grep -E 'Requests/sec|Non-2xx' "$OUT/$row.wrk.txt" >&2 || true
done
curl -fsS -o "$OUT/mutex.pprof" "${PPROF}mutex"
curl -fsS -o "$OUT/heap.pprof" "${PPROF}heap"
grep VmHWM "/proc/$DEV_PID/status" | sed 's/^/capstan dev peak RSS: /' >&2

for row in $ROWS; do
	echo "== $row: CPU (cumulative, top 25)"
	go tool pprof -top -cum -nodecount=25 "$BIN" "$OUT/$row.cpu.pprof" 2>/dev/null | tail -n +6
	echo "== $row: allocated bytes (top 12)"
	go tool pprof -top -sample_index=alloc_space -nodecount=12 "$BIN" "$OUT/$row.allocs.pprof" 2>/dev/null | tail -n +6
	echo "== $row: allocated objects (top 12)"
	go tool pprof -top -sample_index=alloc_objects -nodecount=12 "$BIN" "$OUT/$row.allocs.pprof" 2>/dev/null | tail -n +6
done
echo "== lock contention over the whole run (top 15)"
go tool pprof -top -nodecount=15 "$BIN" "$OUT/mutex.pprof" 2>/dev/null | tail -n +6
echo "profiles in $OUT (go tool pprof -http=: bin/capstan $OUT/<row>.cpu.pprof)"
