#!/usr/bin/env bash
# Proves the test command on a fresh machine: removes every Debian package scripts/test.sh would
# install (and what only they pulled in), then runs scripts/test.sh, which must install them again
# and pass. It changes the machine's packages, so it asks for --yes.
#
#   scripts/fresh-check.sh --yes [test args...]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" != "--yes" ]; then
  echo "usage: scripts/fresh-check.sh --yes [test args]  (removes the test servers' Debian packages first)" >&2
  exit 2
fi
shift
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
# The packages test.sh names, read from its own table so the two cannot drift.
# openssl stays: purging it takes ca-certificates (and with them apt's and npm's HTTPS) along; test.sh still
# installs it where a minimal image lacks it.
mapfile -t pkgs < <(sed -n '/^deps=(/,/^)/p' scripts/test.sh | grep -o '|[a-z0-9.+-]*"$' | tr -d '|"' | sort -u |
  grep -vx 'openssl')
installed=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 && installed+=("$p")
done
if [ ${#installed[@]} -gt 0 ]; then
  echo "==> removing: ${installed[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get purge -y -qq "${installed[@]}" >/dev/null
  $sudo apt-get autoremove -y -qq >/dev/null
fi
for p in "${pkgs[@]}"; do
  if dpkg -s "$p" >/dev/null 2>&1; then echo "still installed: $p" >&2; exit 1; fi
done
# and the venv of PyPI test packages, which test.sh must make again
rm -rf "${CARETAKER_TEST_VENV:-$HOME/.cache/caretaker/test-venv}"
echo "==> none of ${pkgs[*]} is installed; running scripts/test.sh"
exec bash scripts/test.sh "$@"
