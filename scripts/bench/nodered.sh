#!/usr/bin/env bash
# Caretaker side by side with Node-RED 4 (issue 15): installs node-red@4 and node-red-contrib-influxdb 0.7.0 into
# a cache dir outside the repo (NODERED_DIR, default ~/.cache/caretaker/nodered), then runs nodered.py (method in
# its docstring and in BENCHMARKS.md). Needs mosquitto, mosquitto-clients, influxdb (1.x) and Node.js 20.
# usage: scripts/bench/nodered.sh [N]
set -euo pipefail
dir="${NODERED_DIR:-$HOME/.cache/caretaker/nodered}"
if [ ! -f "$dir/node_modules/node-red/red.js" ] || [ ! -d "$dir/node_modules/node-red-contrib-influxdb" ]; then
  mkdir -p "$dir"
  [ -f "$dir/package.json" ] || echo '{"name":"caretaker-nodered-bench","private":true}' > "$dir/package.json"
  # node-red 5.x refuses to start on Node 20; 0.7.0 is the influxdb node measured here.
  (cd "$dir" && npm install --no-audit --no-fund --fetch-retries=0 node-red@4 node-red-contrib-influxdb@0.7.0)
fi
export NODERED_DIR="$dir"
exec python3 "$(dirname "$0")/nodered.py" "$@"
