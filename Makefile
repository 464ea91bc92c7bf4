# Capstan — see README.md. Every target works on a fresh clone.
GO      ?= go
BIN     := bin/capstan
PKGS    := ./...
# staticcheck is pinned and run through the module proxy, so lint works on a fresh machine.
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2

JS      := clients/capacitor

.PHONY: build dev test test-js bench-capacitor test-short bench bench-origins bench-delta bench-edge bench-regions profile-edge lint fuzz tidy-check clean

build:
	$(GO) build -o $(BIN) ./cmd/capstan

# The main job: an origin and one edge in one process on an embedded store.
# DEV_FLAGS passes flags, e.g. make dev DEV_FLAGS="--api 127.0.0.1:8070 --edge 127.0.0.1:8080".
DEV_FLAGS ?=
dev: build
	./$(BIN) dev $(DEV_FLAGS)

# Every test, with the race detector. End-to-end tests build bin/capstan.
test: build
	$(GO) test -race -count=1 -timeout 20m $(PKGS)
	# The delta fixture cases (patch sizes on the real bundles) skip under
	# -race, where the suffix-array scan is ~15x slower: run them plainly.
	$(GO) test -count=1 -timeout 10m ./delta/
	# Allocation bounds (testing.AllocsPerRun) and the edge's hot paths on the
	# real bundles run without the race detector, which changes what
	# allocates and makes patch builds ~15x slower.
	$(GO) test -count=1 -timeout 10m -run 'Allocs|HotPath' ./edge/ ./capgo/
	bash scripts/fuzz.sh 5s
	$(MAKE) test-js

# The TypeScript Capacitor client (clients/capacitor): type check, build, then
# node --test against a real capstan dev (differential test against the Go
# applier on every fixture pair, the client end to end, headless Chromium),
# then builds the example app.
# Dependencies come from the lockfile (npm ci) when node_modules is missing.
test-js: build
	cd $(JS) && { test -d node_modules || npm ci --no-audit --no-fund; } && npx tsc --noEmit -p . && npm test
	# The example app builds against the client as it is (vite build).
	cd examples/capacitor-app && { test -d node_modules || npm ci --no-audit --no-fund; } && npm run build

# The client's budgets (docs/benchmarks.md): its size, the vite-vue patch
# applied in headless Chromium, and its bytes against the Go device's.
bench-capacitor: build
	cd $(JS) && { test -d node_modules || npm ci --no-audit --no-fund; } && node bench/budgets.mjs

test-short:
	$(GO) test -short -count=1 $(PKGS)

bench: build
	bash scripts/bench.sh

# Every fixture pair: device bytes through capstan dev + capstan device, the
# patch, C bsdiff, zstd, xdelta3, file-level sizes, build cost and the slow
# link; writes the tables into docs/benchmarks.md. BENCH_PAIRS="old:new …"
# adds pairs (see the script's header).
bench-delta:
	bash scripts/bench-delta.sh --docs

# Uploads and patch builds per minute with 1 and 3 origins on PostgreSQL + S3
# (and one embedded origin for reference); starts its own servers.
bench-origins: build
	bash scripts/bench-origins.sh

bench-regions: build
	./$(BIN) bench --regions default --devices 30 --base ../shared/fixtures/swagger-ui/www-5.34.0.zip --target ../shared/fixtures/swagger-ui/www-5.34.1.zip

# The edge against nginx serving the same bytes, as the acceptance harness
# (../shared/tools/perfkit) prints it: one row per request a device makes.
bench-edge: build
	bash scripts/bench-edge.sh

# CPU and allocation profiles of the edge for each request a device makes
# (capstan dev --pprof under wrk); writes bench-out/profiles.
profile-edge:
	bash scripts/profile-edge.sh

# Fuzz every parser for FUZZTIME each (default 60s); CI runs them briefly in `make test` via the seed corpus.
FUZZTIME ?= 60s
fuzz:
	bash scripts/fuzz.sh $(FUZZTIME)

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet $(PKGS)
	$(STATICCHECK) $(PKGS)

# Fails when go.mod/go.sum drift from the code.
tidy-check:
	$(GO) mod tidy -diff

clean:
	rm -rf bin
