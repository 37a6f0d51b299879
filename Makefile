# zodan: see README.md. "make test" needs PostgreSQL 15 (Debian's
# postgresql-15 with contrib); "make test-e2e" and "make demo" also need a
# PostgreSQL with Spock: ZODAN_SPOCK_BINDIR, or else the one "make spock"
# builds (PostgreSQL $(SPOCK_PG) + Spock $(SPOCK_VERSION)) from the archives
# in ZODAN_SPOCK_SOURCES (default ../shared/spock-sources).
GO ?= go
E2E_TIMEOUT ?= 90m
SPOCK_PG ?= 15.18
SPOCK_VERSION ?= 5.0.11
# E2E_RUN selects end-to-end tests by name (go test -run), E2E_COUNT
# repeats them (a race that shows one time in five is still a bug).
E2E_RUN ?= .
# The newer release a rolling upgrade moves to (make test-upgrade).
NEXT_PG ?= 18.6
NEXT_SPOCK_VERSION ?= 6.0.0
E2E_COUNT ?= 1
# How long "make test" fuzzes the DSN parser and masker (go test -fuzztime).
FUZZ_TIME ?= 10s

# The bin directory of the Spock build to test against, built on demand.
SPOCK_BINDIR_CMD = $${ZODAN_SPOCK_BINDIR:-$$(tests/spockbuild/build-spock.sh $(SPOCK_PG) $(SPOCK_VERSION))}

.PHONY: all build test fuzz vet spock test-e2e test-upgrade test-upstream bench demo render snapshot clean

all: build

build:
	$(GO) build -o bin/ ./cmd/...

# staticcheck, at a pinned version (fetched by the go command).
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2

vet:
	$(GO) vet ./...
	$(GO) vet -tags e2e ./tests/...
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags e2e ./tests/...

# Unit and integration tests on plain PostgreSQL (no Spock needed).
test: vet fuzz
	$(GO) test -count=1 ./...

# The DSN parser against pgx's (libpq's rules), and the masker, each for
# $(FUZZ_TIME) beyond the seed corpus in internal/dsn/testdata.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseAgreesWithPgx$$' -fuzztime $(FUZZ_TIME) ./internal/dsn/
	$(GO) test -run '^$$' -fuzz '^FuzzMaskHidesPasswords$$' -fuzztime $(FUZZ_TIME) ./internal/dsn/

# Builds PostgreSQL $(SPOCK_PG) + Spock $(SPOCK_VERSION) into the cache (once)
# and prints its bin directory.
spock:
	@tests/spockbuild/build-spock.sh $(SPOCK_PG) $(SPOCK_VERSION)

# End-to-end tests against real Spock clusters. On failure the last lines
# printed are what the failed tests said (tests/e2e/with-digest.sh).
test-e2e:
	bindir="$(SPOCK_BINDIR_CMD)" && \
	ZODAN_SPOCK_BINDIR="$$bindir" tests/e2e/with-digest.sh $(GO) test -tags e2e -count=$(E2E_COUNT) -run '$(E2E_RUN)' -v -timeout $(E2E_TIMEOUT) ./tests/e2e/

# A cluster of PostgreSQL $(SPOCK_PG) + Spock $(SPOCK_VERSION) under write load
# meets a node of $(NEXT_PG) + Spock $(NEXT_SPOCK_VERSION) (built on demand, or
# ZODAN_SPOCK_NEXT_BINDIR), then loses an old node (TestRollingUpgrade).
test-upgrade:
	bindir="$(SPOCK_BINDIR_CMD)" && \
	next="$${ZODAN_SPOCK_NEXT_BINDIR:-$$(tests/spockbuild/build-spock.sh $(NEXT_PG) $(NEXT_SPOCK_VERSION))}" && \
	ZODAN_SPOCK_BINDIR="$$bindir" ZODAN_SPOCK_NEXT_BINDIR="$$next" tests/e2e/with-digest.sh $(GO) test -tags e2e -count=1 -run '^TestRollingUpgrade$$' -v -timeout $(E2E_TIMEOUT) ./tests/e2e/

# Spock's own TAP tests for Zodan (from the Spock archive), run against our
# psql script in place of upstream's (tests/upstream/run-tap.sh); e.g.
# make test-upstream UPSTREAM_TESTS="009 011".
UPSTREAM_TESTS ?=
test-upstream:
	bindir="$(SPOCK_BINDIR_CMD)" && ZODAN_SPOCK_BINDIR="$$bindir" tests/upstream/run-tap.sh $(SPOCK_PG) $(SPOCK_VERSION) $(UPSTREAM_TESTS)

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# add_node on this machine against real Spock (tests/bench/joinbench): rows
# to copy x cluster size before the join x write load, BENCH_RUNS runs each;
# prints a table of medians and writes bench-results/join.{json,svg,md}.
# BENCH_FLAGS passes more flags, e.g. BENCH_FLAGS="-timeline all" (go run
# ./tests/bench/joinbench -h lists them).
BENCH_SIZES ?= 0,1000000,5000000
BENCH_NODES ?= 1,3,5
BENCH_LOAD ?= none,steady
BENCH_RUNS ?= 3
BENCH_FLAGS ?=
.PHONY: bench-join
bench-join:
	bindir="$(SPOCK_BINDIR_CMD)" && \
	ZODAN_SPOCK_BINDIR="$$bindir" $(GO) run ./tests/bench/joinbench -sizes '$(BENCH_SIZES)' -nodes '$(BENCH_NODES)' \
	  -load '$(BENCH_LOAD)' -runs $(BENCH_RUNS) $(BENCH_FLAGS)

# A local 3-node cluster under write load gains a 4th node (ZODAN_SPOCK_BINDIR).
demo:
	bindir="$(SPOCK_BINDIR_CMD)" && ZODAN_SPOCK_BINDIR="$$bindir" $(GO) run ./tests/demo

# Regenerate the committed psql script.
render:
	$(GO) run ./cmd/zodan-install render --out dist/zodan.sql

# Freeze the procedures of zodan.Version (embed.go) as
# sql/snapshots/<version>/install.sql and record its checksum in
# internal/install/releases.go. An existing snapshot is a released one and
# is not rewritten: bump the version for a new release. FORCE=1 refreezes
# the newest release's, only while it has not shipped.
FORCE ?=
snapshot:
	$(GO) run ./internal/release/cmd/snapshot $(if $(FORCE),-force)

clean:
	rm -rf bin
