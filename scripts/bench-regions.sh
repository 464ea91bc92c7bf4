#!/usr/bin/env bash
# The regions benchmark: an origin and three edges 5, 40 and 120 ms away
# (network namespaces with tc netem where the machine allows it, else
# delaying proxies), DEVICES devices that rank the fleet against DEVICES
# devices that each use one edge picked at random. Prints the share of
# updates served by the nearest edge and the latencies of both.
#
#   scripts/bench-regions.sh [DEVICES] [JSON-FILE]
#
# As root, edges run in namespaces (iproute2: apt-get install -y iproute2);
# CAPSTAN_BENCH_NETNS=0 forces loopback. Needs ../shared/fixtures beside
# the repository (swagger-ui bundles).
set -euo pipefail
cd "$(dirname "$0")/.."
devices="${1:-30}"
json="${2:-}"
if [[ -n "$json" && "$json" != /* ]]; then json="$PWD/$json"; fi
CAPSTAN_BENCH_REGIONS=1 CAPSTAN_BENCH_DEVICES="$devices" CAPSTAN_BENCH_JSON="$json" \
	go test -count=1 -run '^TestBenchmarkRegions$' -v -timeout 20m ./bench/regions |
	sed -n '/regions benchmark/,/^---/p' | sed '$d'
