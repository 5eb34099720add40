#!/usr/bin/env bash
# Starts Caretaker on the documented sample config (deploy/caretaker.toml), with a local mosquitto
# on 127.0.0.1:1883 and a local InfluxDB 1.x on 127.0.0.1:8086 started first if nothing listens there.
#
#   scripts/run-local.sh            # runs until Ctrl-C; servers it started are stopped on exit
#
# Then publish a reading and see it in InfluxDB:
#   mosquitto_pub -q 1 -t campus/main/2/room-2-17/telemetry -m '{"temperature":21.5,"humidity":40}'
#   influx -port 8086 -database caretaker -execute 'SELECT * FROM environment'
#
# Grafana on this setup (InfluxDB 1.x): the InfluxQL dashboards in deploy/grafana/influxql with an InfluxQL
# datasource of uid `caretaker-influxql` (database caretaker); docs/influxdb.md says which server takes which.
#
# State (spool, work orders, ...) goes to ${CARETAKER_STATE__DIR:-.caretaker-local} instead of /var/lib.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${CARETAKER_LOCAL_DIR:-$PWD/.caretaker-local}"
mkdir -p "$work"
export CARETAKER_STATE__DIR="${CARETAKER_STATE__DIR:-$work/state}"

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

need=()
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || need+=(mosquitto mosquitto-clients)
command -v influxd >/dev/null 2>&1 || need+=(influxdb influxdb-client)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "==> installing ${need[*]}"
  $sudo apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

if ! listening 1883; then
  mosq=/usr/sbin/mosquitto; [ -x "$mosq" ] || mosq=$(command -v mosquitto)
  printf 'listener 1883 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\n' \
    "$work" > "$work/mosquitto.conf"
  chmod 777 "$work"   # mosquitto drops root to its own user before writing persistence
  "$mosq" -c "$work/mosquitto.conf" </dev/null >"$work/mosquitto.log" 2>&1 &
  pids+=($!)
  echo "==> started mosquitto on 127.0.0.1:1883 (log: $work/mosquitto.log)"
fi
if ! listening 8086; then
  cat > "$work/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:8088"
[meta]
  dir = "$work/influxdb/meta"
[data]
  dir = "$work/influxdb/data"
  wal-dir = "$work/influxdb/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:8086"
  log-enabled = false
[monitor]
  store-enabled = false
CONF
  influxd run -config "$work/influxdb.conf" </dev/null >"$work/influxd.log" 2>&1 &
  pids+=($!)
  echo "==> started influxd on 127.0.0.1:8086 (log: $work/influxd.log)"
fi
for _ in $(seq 100); do listening 1883 && listening 8086 && break; sleep 0.1; done
curl -s -XPOST 'http://127.0.0.1:8086/query' --data-urlencode 'q=CREATE DATABASE caretaker' >/dev/null \
  || echo "warning: could not create database caretaker"

cargo build --release --quiet
"${CARGO_TARGET_DIR:-target}/release/caretaker" check --config deploy/caretaker.toml
echo "==> caretaker run --config deploy/caretaker.toml   (Ctrl-C to stop)"
"${CARGO_TARGET_DIR:-target}/release/caretaker" run --config deploy/caretaker.toml
