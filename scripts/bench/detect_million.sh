#!/usr/bin/env bash
# `caretaker detect` on a million-row CSV (5-minute readings, daily cycle, noise): wall time, release build.
# Reference measured in the same run: `wc -l` over the same file (the cost of merely reading it).
# usage: scripts/bench/detect_million.sh [ROWS]   (CARETAKER_BIN to skip the build)
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
rows="${1:-1000000}"
bin="${CARETAKER_BIN:-}"
if [ -z "$bin" ]; then
  (cd "$repo" && cargo build --release --quiet --bin caretaker)
  bin="${CARGO_TARGET_DIR:-$repo/target}/release/caretaker"
fi
dir="$(mktemp -d)"; trap 'rm -rf "$dir"' EXIT
awk -v n="$rows" 'BEGIN {
  srand(1); print "timestamp,value"; t = 1396310400
  for (i = 0; i < n; i++) {
    s = t + i * 300
    printf "%s,%.4f\n", strftime("%Y-%m-%d %H:%M:%S", s, 1), 50 + 20 * sin(6.283185307 * (s % 86400) / 86400) + 3 * rand()
  }
}' > "$dir/in.csv"
t0=$(date +%s.%N); wc -l "$dir/in.csv" >/dev/null; t1=$(date +%s.%N)
"$bin" --log-level warn detect --input "$dir/in.csv" --output "$dir/out.csv"
t2=$(date +%s.%N)
out_rows=$(($(wc -l < "$dir/out.csv") - 1))
[ "$out_rows" -eq "$rows" ] || { echo "expected $rows output rows, got $out_rows" >&2; exit 1; }
echo "$rows rows ($(du -h "$dir/in.csv" | cut -f1)): caretaker detect $(echo "$t2 - $t1" | bc) s;" \
     "reference wc -l $(echo "$t1 - $t0" | bc) s"
