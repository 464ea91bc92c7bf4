#!/usr/bin/env bash
# bench-delta.sh: compare Capstan's patch with C bsdiff, zstd --patch-from and
# xdelta3 (each run on the uncompressed tar of the two bundles) and with
# gzip of the changed files, on each swagger-ui fixture pair. Prints one
# markdown table per pair: size, build time and peak memory, and ratios to
# C bsdiff. docs/benchmarks.md ("Delta engine") records a run and the method.
#
# Usage: scripts/bench-delta.sh [FIXTURE_DIR]
#   FIXTURE_DIR  holds www-5.34.0.zip, www-5.34.1.zip, www-5.35.0.zip
#                (default: $CAPSTAN_FIXTURES, then ../shared/fixtures/swagger-ui
#                beside the repository, then testdata/fixtures/swagger-ui)
#   BENCH_RUNS=N  runs each command N times and keeps the fastest (default 3)
#   BENCH_LARGE=1 also builds a synthetic 150 MB / 1,500-file bundle pair and
#                reports Capstan's build time and peak memory on it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tools: install what is missing (CI machines are fresh).
need=()
command -v bsdiff >/dev/null || need+=(bsdiff)
command -v zstd >/dev/null || need+=(zstd)
command -v xdelta3 >/dev/null || need+=(xdelta3)
command -v unzip >/dev/null || need+=(unzip)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
	echo "installing ${need[*]}" >&2
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	$sudo apt-get update -qq
	$sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

fix="${1:-${CAPSTAN_FIXTURES:-}}"
for d in "$fix" ../shared/fixtures/swagger-ui testdata/fixtures/swagger-ui; do
	if [ -n "$d" ] && [ -f "$d/www-5.34.0.zip" ]; then fix="$d"; break; fi
done
[ -f "$fix/www-5.34.0.zip" ] || { echo "fixtures not found; pass FIXTURE_DIR" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/deltabench" ./delta/internal/deltabench

# measure NAME OUTPUT CMD...: run CMD under /usr/bin/time BENCH_RUNS times
# (default 3) and append "name bytes min-seconds max-peakKB" to $tmp/rows.
# The minimum time is the least disturbed by other load on the machine.
measure() {
	local name="$1" out="$2" best="" peak=0 secs kb
	shift 2
	for _ in $(seq "${BENCH_RUNS:-3}"); do
		/usr/bin/time -f "%e %M" -o "$tmp/time" "$@" >/dev/null 2>"$tmp/err" || {
			echo "$name failed:" >&2; cat "$tmp/err" >&2; exit 1; }
		read -r secs kb <"$tmp/time"
		if [ -z "$best" ] || awk -v a="$secs" -v b="$best" 'BEGIN{exit !(a<b)}'; then best="$secs"; fi
		[ "$kb" -gt "$peak" ] && peak="$kb"
	done
	echo "$name|$(stat -c %s "$out")|$best|$peak" >>"$tmp/rows"
}

# unpack ZIP DIR [renamed]: unzip, optionally giving every file a
# content-hash name (name.<8 hex>.ext), as bundlers do.
unpack() {
	rm -rf "$2"; mkdir -p "$2"
	unzip -q "$1" -d "$2"
	if [ "${3:-}" = renamed ]; then
		(cd "$2" && find . -type f | while read -r f; do
			h=$(sha256sum "$f" | cut -c1-8)
			dir=$(dirname "$f"); name=$(basename "$f")
			if [[ $name == *.* ]]; then ext=".${name##*.}"; stem="${name%.*}"; else ext=""; stem="$name"; fi
			mv "$f" "$dir/$stem.$h$ext"
		done)
	fi
	# A reproducible tar: sorted names, no owners or times.
	tar -C "$2" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$2.tar" .
}

table() {
	local title="$1" from="$2" to="$3"
	: >"$tmp/rows"
	measure "Capstan patch" "$tmp/p.cap" "$tmp/deltabench" build -from "$from" -to "$to" -out "$tmp/p.cap"
	"$tmp/deltabench" apply -from "$from" -to "$to" -patch "$tmp/p.cap" >"$tmp/apply.json"
	measure "C bsdiff (tar)" "$tmp/p.bsdiff" bsdiff "$from.tar" "$to.tar" "$tmp/p.bsdiff"
	measure "zstd -19 --patch-from (tar)" "$tmp/p.zst" zstd -q -f -19 --patch-from="$from.tar" "$to.tar" -o "$tmp/p.zst"
	measure "xdelta3 -9 (tar)" "$tmp/p.xd3" xdelta3 -9 -e -f -s "$from.tar" "$to.tar" "$tmp/p.xd3"
	# Changed files, gzip -9 each: what file-level "delta" updaters send.
	cat >"$tmp/gz.sh" <<'GZ'
set -e
from="$1"; to="$2"; out="$3"; : >"$out"
cd "$to"
find . -type f | sort | while read -r f; do
	if ! cmp -s "$f" "$from/$f"; then gzip -9 -c "$f" >>"$out"; fi
done
GZ
	measure "changed files, gzip -9" "$tmp/p.gz" bash "$tmp/gz.sh" "$from" "$to" "$tmp/p.gz"

	echo
	echo "### $title"
	echo
	echo "| method | bytes | × C bsdiff | build s | × C bsdiff | peak RSS MB |"
	echo "|---|---:|---:|---:|---:|---:|"
	awk -F'|' '
		NR==FNR { if ($1=="C bsdiff (tar)") { b=$2; t=$3 } ; next }
		{ printf "| %s | %\047d | %.3f | %.2f | %.3f | %.0f |\n", $1, $2, $2/b, $3, $3/t, $4/1024 }
	' "$tmp/rows" "$tmp/rows"
	echo
	echo "Capstan apply (device side): $(sed -E 's/.*"ms":([0-9]+).*/\1/' "$tmp/apply.json") ms in process."
}

export LC_NUMERIC=en_US.UTF-8 2>/dev/null || true
echo "## Delta engine benchmark ($(date -u +%Y-%m-%d), $(nproc) cores, $(go version | cut -d' ' -f3), load $(cut -d' ' -f1-3 /proc/loadavg), best of ${BENCH_RUNS:-3})"
for pair in "5.34.0 5.34.1" "5.34.1 5.35.0"; do
	set -- $pair
	unpack "$fix/www-$1.zip" "$tmp/a"
	unpack "$fix/www-$2.zip" "$tmp/b"
	table "swagger-ui $1 → $2" "$tmp/a" "$tmp/b"
done
unpack "$fix/www-5.34.0.zip" "$tmp/a" renamed
unpack "$fix/www-5.34.1.zip" "$tmp/b" renamed
table "swagger-ui 5.34.0 → 5.34.1, every file renamed name.<content hash>.ext" "$tmp/a" "$tmp/b"

if [ "${BENCH_LARGE:-}" = 1 ]; then
	"$tmp/deltabench" gen -dir "$tmp/big" -files 1500 -mb 150
	/usr/bin/time -f "%e %M" -o "$tmp/time" "$tmp/deltabench" build -from "$tmp/big/a" -to "$tmp/big/b" -out "$tmp/big.cap" >"$tmp/big.json"
	read -r secs kb <"$tmp/time"
	echo
	echo "### Synthetic 150 MB, 1,500-file bundle (20 % of files edited and renamed)"
	echo
	echo "Capstan patch $(stat -c %s "$tmp/big.cap") B in ${secs} s, peak RSS $((kb / 1024)) MB"
	echo "(the bench process holds both bundles in memory, about 300 MB of that)."
fi
