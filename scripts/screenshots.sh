#!/usr/bin/env bash
# Refreshes the console screenshots committed in docs/img/ (README): runs the real-browser test
# (tests/it/console.rs: headless Chromium, the real daemon, a real mosquitto) with CARETAKER_SCREENSHOTS set, which
# copies the pages it visits into docs/img/console-*.png. Needs what scripts/test.sh installs (chromium,
# chromium-driver, mosquitto); for readable Chinese text, a CJK font (Debian: fonts-wqy-microhei).
set -euo pipefail
cd "$(dirname "$0")/.."
CARETAKER_SCREENSHOTS=docs/img cargo test --test it console:: -- --nocapture
ls -l docs/img/console-*.png
