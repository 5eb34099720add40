#!/usr/bin/env bash
# Scores `caretaker detect` on NAB data with nab_score.py (standard, reward-low-FP, reward-low-FN profiles).
#
# usage: scripts/eval/nab.sh [NAB_DIR] [-- extra `caretaker detect` args, e.g. --detector level --set refractory=300]
#   NAB_DIR   folder with data/<category>/<name>.csv and windows.json (default: ../shared/data/nab-dev,
#             relative to the repo). The scorer is looked up as $NAB_SCORE, NAB_DIR/../../tools/nab_score.py,
#             or ../shared/tools/nab_score.py.
# env: CARETAKER_BIN   the binary to run (default: build target/release/caretaker with cargo)
#      RESULTS         where to write the result files (default: a temp dir, removed at exit)
#      NAB_ARGS        extra arguments for nab_score.py (e.g. "--per-file" or "--json")
# Every file is scored with the same general parameters: nothing is chosen per file.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
nab="$repo/../shared/data/nab-dev"
if [ $# -gt 0 ] && [ "$1" != "--" ]; then nab="$1"; shift; fi
[ "${1:-}" = "--" ] && shift
nab="$(cd "$nab" && pwd)" || { echo "no NAB data at $nab" >&2; exit 2; }
[ -f "$nab/windows.json" ] || { echo "$nab/windows.json missing" >&2; exit 2; }

score="${NAB_SCORE:-}"
for c in "$nab/../../tools/nab_score.py" "$repo/../shared/tools/nab_score.py"; do
  [ -n "$score" ] && break
  [ -f "$c" ] && score="$c"
done
[ -n "$score" ] && [ -f "$score" ] || { echo "nab_score.py not found (set NAB_SCORE)" >&2; exit 2; }

bin="${CARETAKER_BIN:-}"
if [ -z "$bin" ]; then
  (cd "$repo" && cargo build --release --quiet --bin caretaker)
  bin="${CARGO_TARGET_DIR:-$repo/target}/release/caretaker"
fi

if [ -n "${RESULTS:-}" ]; then
  out="$RESULTS"; mkdir -p "$out"
else
  out="$(mktemp -d)"; trap 'rm -rf "$out"' EXIT
fi

start=$(date +%s.%N)
n=0
while IFS= read -r f; do
  rel="${f#"$nab/data/"}"
  mkdir -p "$out/$(dirname "$rel")"
  "$bin" --log-level warn detect --input "$f" --output "$out/$rel" "$@"
  n=$((n + 1))
done < <(find "$nab/data" -name '*.csv' | sort)
end=$(date +%s.%N)
echo "scored $n files in $(echo "$end - $start" | bc) s with: caretaker detect $*" >&2

python3 "$score" --data "$nab/data" --labels "$nab/windows.json" "$out" ${NAB_ARGS:-}
