# vmcrypt — see README.md. Targets: build test fuzz bench demo peers.
GO       ?= go
BIN      ?= bin/vmcrypt
FUZZTIME ?= 60s

.PHONY: all build test peers fuzz bench demo clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/vmcrypt

# peers installs the programs the tests compare against (qemu-img, keytool,
# openssl, bzip2) when they are missing; tests fail, never skip, without them.
peers:
	@bash scripts/peers.sh

test: peers
	$(GO) vet ./...
	$(GO) test -race -timeout 60m ./...

# fuzz runs every fuzz target of every package for FUZZTIME each.
fuzz:
	@GO=$(GO) FUZZTIME=$(FUZZTIME) bash scripts/fuzz.sh

# bench runs the benchmarks; peer comparisons are reported as ratios measured
# in the same run (metrics named x-vs-<peer>).
bench: peers build
	@bash scripts/bench.sh

demo: build
	@bash scripts/demo.sh $(BIN)

clean:
	rm -rf bin
