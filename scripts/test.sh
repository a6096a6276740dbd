#!/usr/bin/env bash
# Builds everything and runs every test: the Rust workspace (unit, integration against an
# independent client, attacks by a hostile client, doc tests); the parsers under libFuzzer;
# the transport under 5 % and 10 % packet loss; a two-minute soak; the Node package, built from source the way
# `npm install` builds it; the Python package, installed with `pip install .`; the headless
# Chromium and Firefox suites against the Rust, Node and Python servers; the demo, the
# certificate commands and the examples; the prebuilt packages installed without cargo;
# and the benchmark harness in smoke mode.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in chromium firefox-esr nft ip curl redis-server nats-server; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || {
    echo "missing $tool: sudo apt-get install chromium firefox-esr nftables iproute2 curl redis-server nats-server" >&2
    exit 1
  }
done

echo "== Node package: npm install (builds the native module from source)"
# `npm install` rather than `npm ci`: the registry mirror lacks some platform packages
# that @napi-rs/cli lists as optional, which `npm ci` treats as a lockfile mismatch.
FERROVIA_BUILD_FROM_SOURCE=1 npm install --no-audit --no-fund

echo "== Rust workspace tests"
cargo test --workspace
cargo build -p ferrovia --examples

echo "== Fuzzing: every parser a peer reaches, 10 s each (cargo-fuzz, nightly)"
bash scripts/fuzz.sh 10

echo "== Packet loss: 5 % and 10 % on a network namespace's loopback (needs root and nft)"
bash scripts/test-loss.sh

echo "== Load balancer: two fleet members behind nftables routing by QUIC-LB connection ID (namespaces)"
bash scripts/test-lb.sh

echo "== Soak: two minutes of session churn; RSS, sessions, connections and fds come back flat"
bash scripts/soak.sh 2

echo "== Browser suite against the Rust echo example; Node API and browser suites"
node --test --test-concurrency=1 tests/browser/ tests/node/

echo "== Browser suite against the Node echo example"
FERROVIA_ECHO_BIN="$(command -v node)" FERROVIA_ECHO_ARGS="examples/node/echo.mjs --port 0" \
  node --test --test-concurrency=1 tests/browser/

echo "== Python package: pip install . into .venv, mypy --strict, pytest (aioquic, browsers)"
bash scripts/test-python.sh

echo "== Conformance: Autobahn|Testsuite against the Node and Python WebSocket echo; h2spec against the Node server"
bash scripts/conformance.sh

echo "== Demo, cert command and examples (Node, Rust, Python) in Chromium and Firefox"
FERROVIA_PYTHON="$PWD/.venv/bin/python" node --test --test-concurrency=1 tests/demo/

echo "== The demo served from Python"
FERROVIA_DEMO_CMD="$PWD/.venv/bin/python examples/demo/server.py" \
  node --test --test-concurrency=1 tests/demo/demo.test.mjs

echo "== Prebuilt artefacts: host npm packages and wheel installed and run without cargo"
bash scripts/test-prebuilt.sh

echo "== Benchmark harness, smoke mode"
bash scripts/bench-smoke.sh
