#!/usr/bin/env bash
# Runs every Caretaker test on a fresh Debian machine.
#
# 1. installs the real servers the tests start (mosquitto, influxd 1.x, VictoriaMetrics for the
#    InfluxDB v2 write API, pymodbus, socat) when they are missing;
# 2. checks formatting and clippy (warnings are errors);
# 3. runs the unit and integration tests (the integration tests start their own servers on free
#    loopback ports in temp dirs and stop them afterwards).
#
# Reuses $CARGO_TARGET_DIR when set (CI points it at a cache outside the clone).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v influxd >/dev/null 2>&1 || need+=(influxdb)
command -v influx >/dev/null 2>&1 || need+=(influxdb-client)
command -v victoria-metrics >/dev/null 2>&1 || need+=(victoria-metrics)
command -v socat >/dev/null 2>&1 || need+=(socat)
/usr/bin/python3 -c 'import pymodbus' >/dev/null 2>&1 || need+=(python3-pymodbus)
/usr/bin/python3 -c 'import serial' >/dev/null 2>&1 || need+=(python3-serial)

if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing test servers: ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq || echo "apt-get update failed; trying the install with the cached lists"
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian's packages may start their services on the default ports (1883, 8086, 8428) where
# policy-rc.d allows it. The tests never use those ports, so a running service does no harm.

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --quiet --all-targets -- -D warnings
echo "==> cargo test"
cargo test --quiet --all-targets -- "$@"
