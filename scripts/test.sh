#!/usr/bin/env bash
# Builds everything and runs every test: the Rust core (unit, integration against an
# independent client, doc tests), the Node package (built from source the way `npm install`
# builds it), and the headless Chromium and Firefox suites against the Rust and Node servers.
set -euo pipefail
cd "$(dirname "$0")/.."

for browser in chromium firefox-esr; do
  command -v "$browser" >/dev/null || {
    echo "missing $browser: sudo apt-get install chromium firefox-esr" >&2
    exit 1
  }
done

echo "== Node package: npm ci (builds the native module from source)"
FERROVIA_BUILD_FROM_SOURCE=1 npm ci --no-audit --no-fund

echo "== Rust workspace tests"
cargo test --workspace
cargo build -p ferrovia --example echo

echo "== Browser suite against the Rust echo example, Node API and browser suites"
node --test --test-concurrency=1 tests/browser/ tests/node/

echo "== Browser suite against the Node echo example"
FERROVIA_ECHO_BIN="$(command -v node)" FERROVIA_ECHO_ARGS="examples/node/echo.mjs --port 0" \
  node --test --test-concurrency=1 tests/browser/
