#!/usr/bin/env bash
# Runs every Fuzz* target of every package for $FUZZTIME (default 60s) each,
# prints each target's executions per second (total execs / elapsed, from
# go's last status line), and fails a target below $FUZZFLOOR execs/s
# (default 1000): a target that runs a few inputs explores nothing. A
# package whose tests do not compile is a failure, never a silent skip. New
# interesting inputs are minimised for at most $FUZZMINIMIZE (default 5s).
set -uo pipefail
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-60s}
FUZZFLOOR=${FUZZFLOOR:-1000}
FUZZMINIMIZE=${FUZZMINIMIZE:-5s}
failed=()
report=()
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
    log=$(mktemp)
    if ! $GO test -run '^$' -fuzz "^${t}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINIMIZE" "$pkg" 2>&1 | tee "$log"; then
      failed+=("$pkg $t")
    fi
    # "fuzz: elapsed: 10s, execs: 81990 (7028/sec), ..."
    rate=$(grep -o 'elapsed: [0-9]*s, execs: [0-9]*' "$log" | tail -1 | awk '{gsub("s,","",$2); if ($2 > 0) printf "%d", $4 / $2; else print 0}')
    rm -f "$log"
    rate=${rate:-0}
    report+=("$(printf '%10s execs/s  %s %s' "$rate" "${pkg#github.com/vmcrypt/vmcrypt/}" "$t")")
    if [ "$rate" -lt "$FUZZFLOOR" ]; then
      failed+=("$pkg $t: $rate execs/s, below the floor of $FUZZFLOOR")
    fi
  done
done
echo
echo "fuzz: $n targets"
printf '%s\n' "${report[@]}"
echo "fuzz: ${#failed[@]} failed"
for f in "${failed[@]}"; do echo "  FAILED: $f"; done
[ ${#failed[@]} -eq 0 ]
