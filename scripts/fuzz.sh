#!/usr/bin/env bash
# Runs every Fuzz* target of every package for $FUZZTIME (default 60s) each.
set -euo pipefail
FUZZTIME=${FUZZTIME:-60s}
fail=0
for pkg in $(go list ./...); do
  for t in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
    echo "== $pkg $t ($FUZZTIME)"
    if ! go test -run '^$' -fuzz "^${t}\$" -fuzztime "$FUZZTIME" "$pkg"; then
      fail=1
    fi
  done
done
exit $fail
