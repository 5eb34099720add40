#!/usr/bin/env bash
# Runs every Caretaker test on a fresh Debian machine.
#
# 1. installs the real servers the tests start (mosquitto, influxd 1.x, VictoriaMetrics for the
#    InfluxDB v2 write API, pymodbus with its serial extras, socat, chromium + chromium-driver for the
#    console's browser test) when they are missing;
# 2. checks the module layout (no import cycle, layers one way), formatting and clippy (warnings are errors);
# 3. runs the unit and integration tests (the integration tests start their own servers on free
#    loopback ports in temp dirs and stop them afterwards).
#
# What is "missing" is decided by what the tests really use, not by a package's name: each entry
# below pairs a check with the Debian package that satisfies it. The Python check imports the
# Modbus fixture itself (tests/fixtures/modbus_server.py), so every module it loads is checked:
# Debian's python3-pymodbus imports serial_asyncio when pymodbus.server loads, but does not
# depend on python3-serial-asyncio, so `import pymodbus` alone succeeds on a machine where the
# fixture cannot start.
#
#   scripts/test.sh               # everything
#   scripts/test.sh --deps-only   # only install and check the test servers
#   scripts/test.sh NAME          # extra arguments go to the test binaries (a name filter, ...)
#
# Reuses $CARGO_TARGET_DIR when set (CI points it at a cache outside the clone).
# scripts/fresh-check.sh removes these packages first and runs this script, to prove the path.
set -euo pipefail
cd "$(dirname "$0")/.."

# check (a shell command that succeeds when the need is met) | Debian package
deps=(
  "command -v mosquitto || test -x /usr/sbin/mosquitto|mosquitto"
  "command -v mosquitto_pub|mosquitto-clients"
  "command -v prometheus-alertmanager|prometheus-alertmanager"
  # promtool checks deploy/prometheus/caretaker-alerts.yaml (tests/it/dashboards.rs)
  "command -v promtool|prometheus"
  "command -v influxd|influxdb"
  "command -v influx|influxdb-client"
  "command -v victoria-metrics|victoria-metrics"
  "command -v socat|socat"
  # the HTTPS API test makes its own CA and server certificate
  "command -v openssl|openssl"
  # the web console's real-browser test (tests/it/console.rs): headless Chromium over WebDriver
  "command -v chromium|chromium"
  "command -v chromedriver|chromium-driver"
  "/usr/bin/python3 -c 'import serial'|python3-serial"
  "/usr/bin/python3 -c 'import serial_asyncio'|python3-serial-asyncio"
  "/usr/bin/python3 -c 'import pymodbus'|python3-pymodbus"
  # every import of the Modbus fixture, exactly as the tests load it (its main is guarded)
  "/usr/bin/python3 -c 'import sys; sys.path.insert(0, \"tests/fixtures\"); import modbus_server'|python3-pymodbus"
  # the e-mail target's SMTP server (tests/fixtures/smtp_server.py: aiosmtpd with STARTTLS), every import as loaded
  "/usr/bin/python3 -c 'import sys; sys.path.insert(0, \"tests/fixtures\"); import smtp_server'|python3-aiosmtpd"
  # the Sparkplug B edge node (tests/fixtures/sparkplug: npm sparkplug-client, installed by the test itself)
  "command -v node|nodejs"
  "command -v npm|npm"
  # PyPI packages the tests use (tests/fixtures/requirements.txt) go into a venv made by python3 -m venv
  "/usr/bin/python3 -c 'import ensurepip, venv'|python3-venv"
)
missing() {
  local entry
  for entry in "${deps[@]}"; do
    bash -c "${entry%|*}" >/dev/null 2>&1 || echo "${entry##*|}"
  done | sort -u
}

mapfile -t need < <(missing)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing test servers: ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq || echo "apt-get update failed; trying the install with the cached lists"
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Check again: a package that installs but does not give what the tests import is an error here,
  # named, not five Modbus test failures later.
  failed=0
  for entry in "${deps[@]}"; do
    if ! out=$(bash -c "${entry%|*}" 2>&1); then
      echo "test prerequisite still missing after installing ${entry##*|}: ${entry%|*}" >&2
      echo "$out" | tail -3 >&2
      failed=1
    fi
  done
  [ "$failed" -eq 0 ] || exit 1
fi
# PyPI packages (pinned in tests/fixtures/requirements.txt) live in a venv outside the clone, rebuilt when
# that file changes; the tests find its interpreter through CARETAKER_TEST_VENV (tests/it/support.rs venv_python).
export CARETAKER_TEST_VENV="${CARETAKER_TEST_VENV:-$HOME/.cache/caretaker/test-venv}"
req=tests/fixtures/requirements.txt
if [ -s "$req" ] && ! cmp -s "$req" "$CARETAKER_TEST_VENV/requirements.txt"; then
  echo "==> PyPI test packages into $CARETAKER_TEST_VENV: $(grep -v '^#' "$req" | xargs)"
  rm -rf "$CARETAKER_TEST_VENV"
  /usr/bin/python3 -m venv "$CARETAKER_TEST_VENV"
  "$CARETAKER_TEST_VENV/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  cp "$req" "$CARETAKER_TEST_VENV/requirements.txt"
fi
if [ "${1:-}" = "--deps-only" ]; then
  echo "==> test prerequisites present"
  exit 0
fi
# Debian's packages may start their services on the default ports (1883, 8086, 8428) where
# policy-rc.d allows it. The tests never use those ports, so a running service does no harm.

echo "==> module layout: no import cycle, imports run down the layers (scripts/check-layers.py)"
python3 scripts/check-layers.py --self-test
python3 scripts/check-layers.py
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --quiet --all-targets -- -D warnings
echo "==> cargo test"
cargo test --quiet --all-targets -- "$@"
echo "==> the production build (no default features: no embedded demo broker) compiles and says it has no demo"
# Same target dir (the dependencies are shared; only caretaker itself builds twice); the default binary is
# restored after, so target/debug/caretaker keeps its demo.
cargo build --quiet --no-default-features --bin caretaker
nodemo_bin="${CARGO_TARGET_DIR:-target}/debug/caretaker"
set +e
nodemo_err=$("$nodemo_bin" demo --for 1s 2>&1 >/dev/null)
nodemo_code=$?
set -e
cargo build --quiet --bin caretaker
if [ "$nodemo_code" -ne 1 ] || ! printf '%s' "$nodemo_err" | grep -q "built without the demo"; then
  echo "caretaker demo in a no-demo build: exit $nodemo_code, said: $nodemo_err" >&2
  exit 1
fi
