#!/usr/bin/env bash
# Runs every benchmark once. Benchmarks that compare with a peer (qemu-img,
# openssl) time both in the same run and report the ratio as x-vs-<peer>.
set -euo pipefail
go test -run '^$' -bench "${BENCH:-.}" -benchtime "${BENCHTIME:-1x}" -timeout 60m ./... | grep -v '^ok\|no test files'
