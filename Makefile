# vmcrypt — see README.md. Targets: build test fuzz bench demo demo-mount dist peers install.
GO       ?= go
BIN      ?= bin/vmcrypt
FUZZTIME ?= 60s
# FUZZFLOOR: the slowest a fuzz target may run (execs/s) before make fuzz fails.
FUZZFLOOR ?= 1000
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
# The release targets: make test vets and builds every one of them.
TARGETS  := linux/amd64 linux/arm64 windows/amd64 windows/arm64 darwin/amd64 darwin/arm64

.PHONY: all build test cross peers fuzz bench demo demo-mount dist install clean

all: build

build:
	$(GO) build -ldflags '-X main.version=$(VERSION)' -o $(BIN) ./cmd/vmcrypt

install:
	$(GO) install -ldflags '-X main.version=$(VERSION)' ./cmd/vmcrypt

# peers installs the programs the tests compare against when they are
# missing; tests fail, never skip, without them.
peers:
	@bash scripts/peers.sh

test: peers cross
	$(GO) vet ./...
	$(GO) test -race -timeout 60m ./...

# cross vets and builds every package (tests included in vet) for every
# release target: no emulator, just the compiler.
cross:
	@set -e; for t in $(TARGETS); do \
	  echo "cross: $$t"; \
	  GOOS=$${t%/*} GOARCH=$${t#*/} $(GO) vet ./... ; \
	  GOOS=$${t%/*} GOARCH=$${t#*/} $(GO) build -o /dev/null ./... ; \
	done

# dist builds the release binaries, reproducible paths (-trimpath), the
# version stamped in: dist/vmcrypt-OS-ARCH[.exe] and SHA256SUMS.
dist:
	@set -e; rm -rf dist; mkdir -p dist; for t in $(TARGETS); do \
	  os=$${t%/*}; arch=$${t#*/}; ext=; [ $$os = windows ] && ext=.exe; \
	  echo "dist: vmcrypt-$$os-$$arch$$ext"; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/vmcrypt-$$os-$$arch$$ext ./cmd/vmcrypt; \
	done; cd dist && sha256sum vmcrypt-* > SHA256SUMS

# fuzz runs every fuzz target of every package for FUZZTIME each, prints
# each target's execs/s and fails below FUZZFLOOR.
fuzz:
	@GO=$(GO) FUZZTIME=$(FUZZTIME) FUZZFLOOR=$(FUZZFLOOR) bash scripts/fuzz.sh

# bench runs the benchmarks; peer comparisons are reported as ratios measured
# in the same run (metrics named x-vs-<peer>).
bench: peers build
	@bash scripts/bench.sh

demo: build
	@bash scripts/demo.sh $(BIN)
	@echo "Next: make demo-mount (needs root for FUSE): an encrypted VM's ext4 disk mounted read-only with vmcrypt mount, a guest file read with Sleuth Kit, no plaintext written."

# demo-mount: an ext4 guest file read through `vmcrypt mount` (FUSE: root).
demo-mount: build
	@bash scripts/demo-mount.sh $(BIN)

clean:
	rm -rf bin dist
