#!/usr/bin/env bash
# bench-delta.sh (make bench-delta): what a device downloads for an update,
# what the origin pays to build it, and how long it takes on a slow link,
# against the usual tools, on every release pair of the fixtures.
#
# For each pair OLD → NEW:
#   1. tools, on the two releases unpacked (no server running): Capstan's
#      patch build (delta/internal/deltabench: delta.Build with the origin's
#      config; the patch is applied and checked), C bsdiff, zstd -19 --long
#      --patch-from and xdelta3 -9 on the uncompressed tars (the tar recipe
#      of the fixtures' SOURCE.md), and every new or changed file (by
#      content) gzip -9'd on its own; sizes, and the smallest wall time and
#      peak RSS of BENCH_RUNS runs;
#   2. a real update, as a user would run it: `capstan dev`, OLD uploaded
#      (signed) and installed by `capstan device`, NEW uploaded, then
#      `capstan device --json` again: its "bytes" are everything the device
#      downloaded for the update, every request included;
#   3. `capstan bench --scenario slow-link` on the same pair: update time
#      over 1.6 Mbit/s / 150 ms for the device and for a Capgo plugin in
#      manifest mode (whose bytes, answer + files, are also reported).
# Prints three markdown tables; with --docs, also writes them into
# docs/benchmarks.md between <!-- bench-delta:start --> and <!-- bench-delta:end -->.
#
# Pairs: every folder of the fixtures (CAPSTAN_FIXTURES, default
# ../shared/fixtures beside the repository) with two or more zips gives its
# zips, in version order (sort -V), as consecutive pairs; a new fixture
# folder is picked up as it is. More pairs, zips or folders:
#   BENCH_PAIRS="old.zip:new.zip [label=old2/:new2/ …]"   or   --pair OLD:NEW (repeatable)
# Knobs (environment):
#   BENCH_FIXTURES=0   only the extra pairs
#   BENCH_RUNS=N       tool runs per measure, smallest time and RSS kept (default 3)
#   BENCH_LARGE=1      adds a synthetic 150 MB / 1,500-file pair (deltabench gen)
#   BENCH_SLOWLINK=0   skips step 3; BENCH_LINK_ARGS passes flags to it
#                      (default: the scenario's 1.6 Mbit/s, 0.75 Mbit/s, 150 ms)
#   BENCH_DOCS=1       lets --docs write the file even with extra pairs
#   CAPSTAN_BIN        a capstan binary to use (default: built into the temp dir)
#   KEEP_TMP=1         keeps the temp dir
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

DOCS=0
EXTRA=()
while [ $# -gt 0 ]; do
	case $1 in
	--docs) DOCS=1 ;;
	--pair) EXTRA+=("$2"); shift ;;
	--pair=*) EXTRA+=("${1#--pair=}") ;;
	*) echo "usage: scripts/bench-delta.sh [--docs] [--pair OLD:NEW]..." >&2; exit 2 ;;
	esac
	shift
done
for p in ${BENCH_PAIRS:-}; do EXTRA+=("$p"); done
RUNS=${BENCH_RUNS:-3}

log() { printf '\033[1mbench-delta:\033[0m [%3ds] %s\n' "$SECONDS" "$*" >&2; }
die() { log "$*"; exit 1; }

# Tools: install what is missing (CI machines are fresh).
need=()
for t in bsdiff zstd xdelta3 unzip jq; do command -v $t >/dev/null || need+=($t); done
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
	log "installing ${need[*]}"
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	($sudo apt-get update -qq && $sudo apt-get install -y -qq "${need[@]}") >/dev/null || die "cannot install ${need[*]}"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/capstan-bench-delta.XXXXXX")
DEV_PID=""
cleanup() {
	if [ -n "$DEV_PID" ]; then kill "$DEV_PID" 2>/dev/null || true; wait "$DEV_PID" 2>/dev/null || true; fi
	if [ "${KEEP_TMP:-}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

log "building deltabench and capstan"
go build -o "$TMP/deltabench" ./delta/internal/deltabench
BIN=${CAPSTAN_BIN:-}
if [ -z "$BIN" ]; then
	go build -o "$TMP/capstan" ./cmd/capstan
	BIN=$TMP/capstan
fi

# ---- the pairs: "label|old|new" lines in $TMP/pairs ----
: >"$TMP/pairs"
# stems NAME...: prints each zip name without ".zip" and without the prefix
# all of them share up to a "-" or "_" ("www-5.34.0.zip" → "5.34.0").
stems() {
	local prefix="${1%.zip}" n
	for n in "$@"; do
		n="${n%.zip}"
		while [ -n "$prefix" ] && [ "${n#"$prefix"}" = "$n" ]; do prefix="${prefix%?}"; done
	done
	while [ -n "$prefix" ] && [[ $prefix != *[-_] ]]; do prefix="${prefix%?}"; done
	for n in "$@"; do n="${n%.zip}"; echo "${n#"$prefix"}"; done
}
if [ "${BENCH_FIXTURES:-1}" != 0 ]; then
	FIX=${CAPSTAN_FIXTURES:-$ROOT/../shared/fixtures}
	[ -d "$FIX" ] || die "fixtures not found at $FIX (set CAPSTAN_FIXTURES, or BENCH_FIXTURES=0 with BENCH_PAIRS)"
	for d in "$FIX"/*/; do
		d=${d%/}
		mapfile -t zips < <(cd "$d" && ls -1 -- *.zip 2>/dev/null | sort -V)
		[ ${#zips[@]} -ge 2 ] || continue
		mapfile -t st < <(stems "${zips[@]}")
		for ((i = 0; i + 1 < ${#zips[@]}; i++)); do
			echo "$(basename "$d") ${st[i]} → ${st[i+1]}|$d/${zips[i]}|$d/${zips[i+1]}" >>"$TMP/pairs"
		done
	done
fi
for p in "${EXTRA[@]}"; do
	label=""
	if [[ $p == *=* ]]; then label=${p%%=*}; p=${p#*=}; fi
	old=${p%%:*}; new=${p#*:}
	[ -e "$old" ] && [ -e "$new" ] && [ "$old" != "$p" ] || die "pair $p: want OLD:NEW, two zips or folders that exist"
	[ -n "$label" ] || label="$(basename "${old%/}") → $(basename "${new%/}")"
	echo "$label|$(realpath "$old")|$(realpath "$new")" >>"$TMP/pairs"
done
if [ "${BENCH_LARGE:-}" = 1 ]; then
	log "generating the synthetic 150 MB / 1,500-file pair"
	"$TMP/deltabench" gen -dir "$TMP/large" -files 1500 -mb 150
	echo "synthetic 150 MB, 1,500 files (deltabench gen)|$TMP/large/a|$TMP/large/b" >>"$TMP/pairs"
fi
NPAIRS=$(wc -l <"$TMP/pairs")
[ "$NPAIRS" -gt 0 ] || die "no pair to measure"
log "$NPAIRS pairs: $(cut -d'|' -f1 "$TMP/pairs" | paste -sd ';' | sed 's/;/; /g')"

# unpack SRC DIR: a zip is unzipped into DIR, a folder copied; then a
# reproducible uncompressed tar DIR.tar (SOURCE.md's recipe).
unpack() {
	rm -rf "$2"; mkdir -p "$2"
	if [ -d "$1" ]; then cp -a "$1/." "$2/"; else unzip -q "$1" -d "$2"; fi
	tar --sort=name --mtime=2020-01-01 --owner=0 --group=0 -C "$2" -cf "$2.tar" .
}

# measure CMD...: run CMD under /usr/bin/time RUNS times; sets M_S and
# M_KB, the smallest wall time and the smallest peak RSS: the runs least
# disturbed by other load on the machine (a starved Go garbage collector
# lets the heap grow; C tools' peaks do not move).
measure() {
	local secs kb
	M_S="" M_KB=""
	for _ in $(seq "$RUNS"); do
		/usr/bin/time -f "%e %M" -o "$TMP/time" "$@" >"$TMP/out" 2>"$TMP/err" || {
			cat "$TMP/err" >&2; die "failed: $*"; }
		read -r secs kb <"$TMP/time"
		if [ -z "$M_S" ] || awk -v a="$secs" -v b="$M_S" 'BEGIN{exit !(a<b)}'; then M_S=$secs; fi
		if [ -z "$M_KB" ] || [ "$kb" -lt "$M_KB" ]; then M_KB=$kb; fi
	done
	return 0
}

# ---- phase 1: the tools, one pair at a time, nothing else running ----
i=0
while IFS='|' read -r label old new <&3; do
	i=$((i + 1))
	W=$TMP/p$i
	mkdir -p "$W"
	log "[$i/$NPAIRS] $label: tools"
	unpack "$old" "$W/a"
	unpack "$new" "$W/b"
	files=$(find "$W/b" -type f | wc -l)
	# New or changed files by content: what a file-level updater fetches.
	(cd "$W/a" && find . -type f -print0 | xargs -0 -r sha256sum) | cut -d' ' -f1 | sort -u >"$W/a.sums"
	(cd "$W/b" && find . -type f -print0 | xargs -0 -r sha256sum) | sort >"$W/b.sums"
	changed=0 gz=0
	while read -r sum path; do
		grep -qx "$sum" "$W/a.sums" && continue
		changed=$((changed + 1))
		gz=$((gz + $(gzip -9 -c "$W/b/${path#./}" | wc -c)))
	done <"$W/b.sums"
	measure "$TMP/deltabench" build -from "$W/a" -to "$W/b" -out "$W/p.cap"
	cap_s=$M_S cap_kb=$M_KB
	"$TMP/deltabench" apply -from "$W/a" -to "$W/b" -patch "$W/p.cap" >/dev/null || die "$label: the Capstan patch does not apply"
	measure bsdiff "$W/a.tar" "$W/b.tar" "$W/p.bsdiff"
	bs_s=$M_S bs_kb=$M_KB
	measure zstd -q -f -19 --long=31 --patch-from="$W/a.tar" "$W/b.tar" -o "$W/p.zst"
	zs_s=$M_S zs_kb=$M_KB
	measure xdelta3 -9 -e -f -s "$W/a.tar" "$W/b.tar" "$W/p.xd3"
	xd_s=$M_S xd_kb=$M_KB
	echo "$i|$label|$files|$changed|$(stat -c %s "$W/p.cap")|$(stat -c %s "$W/p.bsdiff")|$(stat -c %s "$W/p.zst")|$(stat -c %s "$W/p.xd3")|$gz|$cap_s|$cap_kb|$bs_s|$bs_kb|$zs_s|$zs_kb|$xd_s|$xd_kb" >>"$TMP/tools"
	rm -rf "$W/a" "$W/b" "$W/a.tar" "$W/b.tar" "$W"/p.*
done 3<"$TMP/pairs"

# ---- phase 2: real updates through capstan dev ----
log "starting capstan dev"
export CAPSTAN_ADMIN_KEY=bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
export CAPSTAN_API_KEY=$CAPSTAN_ADMIN_KEY
"$BIN" dev --data "$TMP/dev" --api 127.0.0.1:0 --edge 127.0.0.1:0 --gossip 127.0.0.1:0 >"$TMP/dev.log" 2>&1 &
DEV_PID=$!
for _ in $(seq 600); do
	grep -q '^capstan dev: origin API' "$TMP/dev.log" && break
	kill -0 "$DEV_PID" 2>/dev/null || { cat "$TMP/dev.log" >&2; die "capstan dev exited"; }
	sleep 0.1
done
line=$(grep '^capstan dev: origin API' "$TMP/dev.log") || { cat "$TMP/dev.log" >&2; die "capstan dev did not start"; }
API=$(echo "$line" | sed -E 's/.*origin API (http:[^,]*),.*/\1/')
EDGE=$(echo "$line" | sed -E 's/.*, edge (http:[^,]*),.*/\1/')
export CAPSTAN_SERVER=$API
"$BIN" keys gen --out "$TMP/release.key" >/dev/null
cat "$TMP/release.key.pub" "$TMP/dev/origin/origin.key.pub" >"$TMP/trust.pem"

# device DIR: one `capstan device` run as a user types it; prints its JSON.
device() {
	"$BIN" device --edge "$EDGE" --app "$APP" --channel production --dir "$1" --public-key "$TMP/trust.pem" --no-rank --json
}

i=0
while IFS='|' read -r label old new <&3; do
	i=$((i + 1))
	W=$TMP/p$i
	APP=bench.delta.p$i
	log "[$i/$NPAIRS] $label: capstan device"
	"$BIN" upload --app "$APP" --version 1.0.0 --channel production --sign-key "$TMP/release.key" --json "$old" >"$W/up0.json"
	r=$(device "$W/phone")
	[ "$(jq -r .to <<<"$r")" = 1.0.0 ] || die "$label: installing the old release: $r"
	"$BIN" upload --app "$APP" --version 1.0.1 --channel production --sign-key "$TMP/release.key" --json "$new" >"$W/up1.json"
	# A copy of the phone updates first, until it gets a patch: the origin
	# builds it when the channel moves, and a device that asks before it is
	# ready falls back to the whole bundle. The measured phone then updates
	# as any device would once the release is out.
	for try in $(seq 60); do
		rm -rf "$W/warm"; cp -a "$W/phone" "$W/warm"
		w=$(device "$W/warm")
		[ "$(jq -r .mode <<<"$w")" = full ] || [ "$(jq -r .mode <<<"$w")" = files ] || break
		log "  warm-up $try got mode $(jq -r .mode <<<"$w"), the patch is not built yet"
	done
	r=$(device "$W/phone")
	[ "$(jq -r .status <<<"$r")" = updated ] && [ "$(jq -r .to <<<"$r")" = 1.0.1 ] || die "$label: update: $r"
	dev_bytes=$(jq -r .bytes <<<"$r")
	dev_mode=$(jq -r .mode <<<"$r")
	slow="-|-|-|-|-|-|-"
	if [ "${BENCH_SLOWLINK:-1}" != 0 ]; then
		log "[$i/$NPAIRS] $label: slow link"
		# shellcheck disable=SC2086
		"$BIN" bench --scenario slow-link --edge "$EDGE" --app "$APP" --channel production --pairs 1.0.0:1.0.1 \
			--public-key "$TMP/trust.pem" ${BENCH_LINK_ARGS:-} --json "$W/slow.json" >"$W/slow.txt" 2>"$W/slow.log" ||
			{ cat "$W/slow.log" >&2; die "$label: slow link failed"; }
		cp "$W/slow.json" "$TMP/slow.json"
		slow=$(jq -r '.pairs[0] | [.capstan.seconds, .capstan.wire_down + .capstan.wire_up, .files.seconds,
			.files.wire_down + .files.wire_up, .files.files, .files.bytes, .capstan.mode] | map(tostring) | join("|")' "$W/slow.json")
	fi
	echo "$i|$dev_bytes|$dev_mode|$slow" >>"$TMP/device"
done 3<"$TMP/pairs"

# ---- the tables ----
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{
	echo "_Generated by \`make bench-delta\` ($(date -u '+%Y-%m-%d %H:%M UTC'), commit $COMMIT) on $(nproc) CPUs," \
		"load average $(cut -d' ' -f1 /proc/loadavg) at the end; tool times and peak RSS are the smallest of $RUNS runs._"
	if [ -f "$TMP/slow.json" ]; then
		jq -r '"_Slow link: \(.down_bps / 1e6) Mbit/s down, \(.up_bps / 1e6) Mbit/s up, \(.rtt_ms) ms round trip._"' "$TMP/slow.json"
	fi
	echo
	echo "#### What a device downloads for the update (bytes)"
	echo
	echo "| pair | files | new or changed | **Capstan device** | Capstan patch | C bsdiff | zstd -19 | xdelta3 -9 | changed files, gzip -9 each | Capgo manifest mode | device / min(bsdiff, zstd) |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	join -t'|' <(sort -t'|' -k1,1 "$TMP/tools") <(sort -t'|' -k1,1 "$TMP/device") | sort -t'|' -k1,1n |
		awk -F'|' '
		function c(n) { if (n !~ /^[0-9]+$/) return n; s = ""; while (n >= 1000) { s = sprintf(",%03d", n % 1000) s; n = int(n / 1000) } return n s }
		{ best = ($6 < $7) ? $6 : $7; mode = ($19 == "delta") ? "" : " (" $19 ")"
		  printf "| %s | %s | %s | **%s**%s | %s | %s | %s | %s | %s | %s | %.2f× |\n", $2, $3, $4, c($18), mode, c($5), c($6), c($7), c($8), c($9), c($25), $18 / best }'
	echo
	echo "#### What it costs to build (seconds, peak RSS)"
	echo
	echo "| pair | Capstan patch build | C bsdiff | Capstan / bsdiff | Capstan peak RSS | C bsdiff peak RSS | Capstan / bsdiff | zstd -19 | xdelta3 -9 |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
	sort -t'|' -k1,1n "$TMP/tools" | awk -F'|' '
		{ printf "| %s | %.2f s | %.2f s | %.2f× | %.0f MB | %.0f MB | %.2f× | %.2f s, %.0f MB | %.2f s, %.0f MB |\n",
			$2, $10, $12, ($12 > 0 ? $10 / $12 : 0), $11 / 1024, $13 / 1024, $11 / $13, $14, $15 / 1024, $16, $17 / 1024 }'
	if [ "${BENCH_SLOWLINK:-1}" != 0 ]; then
		echo
		echo "#### Update time on a slow link (\`capstan bench --scenario slow-link\`)"
		echo
		echo "| pair | Capstan device | bytes on the wire | Capgo manifest mode | bytes on the wire | files fetched | Capstan / Capgo |"
		echo "|---|---:|---:|---:|---:|---:|---:|"
		join -t'|' <(sort -t'|' -k1,1 "$TMP/tools" | cut -d'|' -f1,2) <(sort -t'|' -k1,1 "$TMP/device") | sort -t'|' -k1,1n |
			awk -F'|' '
			function c(n) { s = ""; while (n >= 1000) { s = sprintf(",%03d", n % 1000) s; n = int(n / 1000) } return n s }
			{ printf "| %s | %.2f s | %s | %.2f s | %s | %s | %.2f× |\n", $2, $5, c($6), $7, c($8), $9, $5 / $7 }'
	fi
} >"$TMP/tables.md"
cat "$TMP/tables.md"

if [ "$DOCS" = 1 ]; then
	if [ ${#EXTRA[@]} -gt 0 ] || [ "${BENCH_LARGE:-}" = 1 ] || [ "${BENCH_FIXTURES:-1}" = 0 ]; then
		if [ "${BENCH_DOCS:-}" != 1 ]; then
			log "extra pairs: docs/benchmarks.md left alone (BENCH_DOCS=1 writes it anyway)"
			exit 0
		fi
	fi
	doc=docs/benchmarks.md
	grep -q '<!-- bench-delta:start -->' "$doc" && grep -q '<!-- bench-delta:end -->' "$doc" || die "$doc lacks the bench-delta markers"
	awk -v f="$TMP/tables.md" '
		/<!-- bench-delta:start -->/ { print; while ((getline l < f) > 0) print l; skip = 1; next }
		/<!-- bench-delta:end -->/ { skip = 0 }
		!skip' "$doc" >"$TMP/doc.md"
	cp "$TMP/doc.md" "$doc"
	log "wrote the tables into $doc"
fi
