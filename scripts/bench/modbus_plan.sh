#!/usr/bin/env bash
# Modbus benchmark: requests per poll cycle for every shipped profile (optimal planner vs one request per point
# vs contiguous-only merging, with the 9600-baud RTU line time each costs), then decode and planner throughput
# (criterion) with a same-run reference. Results are described in docs/modbus.md ("Benchmarks").
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo bench --bench modbus -- --warm-up-time 1 --measurement-time 3 "$@"
