#!/usr/bin/env bash
# Runs every Fuzz* target of every package for $FUZZTIME (default 60s) each,
# then prints which failed. A package whose tests do not compile is a failure,
# never a silent skip. New interesting inputs are minimised for at most
# $FUZZMINIMIZE (default 5s): the default (60s) stalls short runs.
set -uo pipefail
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-60s}
FUZZMINIMIZE=${FUZZMINIMIZE:-5s}
failed=()
n=0
for pkg in $($GO list ./...); do
  if ! list=$($GO test -list '^Fuzz' "$pkg" 2>&1); then
    echo "== $pkg: tests do not build:"; echo "$list"
    failed+=("$pkg (build)")
    continue
  fi
  for t in $(grep '^Fuzz' <<<"$list" || true); do
    n=$((n + 1))
    echo "== $pkg $t ($FUZZTIME)"
    if ! $GO test -run '^$' -fuzz "^${t}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINIMIZE" "$pkg"; then
      failed+=("$pkg $t")
    fi
  done
done
echo
echo "fuzz: $n targets, ${#failed[@]} failed"
for f in "${failed[@]}"; do echo "  FAILED: $f"; done
[ ${#failed[@]} -eq 0 ]
