# zodan: see README.md. "make test" needs PostgreSQL 15 (Debian's
# postgresql-15 with contrib); "make test-e2e" and "make demo" also need a
# PostgreSQL with Spock, given as ZODAN_SPOCK_BINDIR.
GO ?= go
E2E_TIMEOUT ?= 90m

.PHONY: all build test vet test-e2e bench demo render clean

all: build

build:
	$(GO) build -o bin/ ./cmd/...

vet:
	$(GO) vet ./...
	$(GO) vet -tags e2e ./tests/...

# Unit and integration tests on plain PostgreSQL (no Spock needed).
test: vet
	$(GO) test -count=1 ./...

# End-to-end tests against real Spock clusters (ZODAN_SPOCK_BINDIR).
test-e2e:
	$(GO) test -tags e2e -count=1 -v -timeout $(E2E_TIMEOUT) ./tests/e2e/

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# A local 3-node cluster under write load gains a 4th node (ZODAN_SPOCK_BINDIR).
demo:
	$(GO) run ./tests/demo

# Regenerate the committed psql script.
render:
	$(GO) run ./cmd/zodan-install render --out dist/zodan.sql

clean:
	rm -rf bin
