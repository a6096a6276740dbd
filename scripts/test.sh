#!/usr/bin/env bash
# Builds everything and runs every test: the Rust core (unit, integration against an
# independent client, doc tests), then the headless Chromium and Firefox suites.
set -euo pipefail
cd "$(dirname "$0")/.."

for browser in chromium firefox-esr; do
  command -v "$browser" >/dev/null || {
    echo "missing $browser: sudo apt-get install chromium firefox-esr" >&2
    exit 1
  }
done

npm ci --no-audit --no-fund
cargo test --workspace
cargo build -p ferrovia --example echo
node --test --test-concurrency=1 tests/browser/
