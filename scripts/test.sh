#!/usr/bin/env bash
# Builds everything and runs every test: the Rust workspace (unit, integration against an
# independent client, attacks by a hostile client, doc tests); the parsers under libFuzzer;
# the transport under 5 % and 10 % packet loss; a two-minute soak; the Node package, built from source the way
# `npm install` builds it; the Python package, installed with `pip install .`; the headless
# Chromium and Firefox suites against the Rust, Node and Python servers; the demo, the
# certificate commands and the examples; the prebuilt packages installed without cargo;
# and the benchmark harness in smoke mode.
#
#   scripts/test.sh           everything (about 30 minutes on 2 cores)
#   scripts/test.sh --quick   the loop for one change (a few minutes once built): the core's
#                             tests, then the Node and Python tests that need no browser
set -euo pipefail
cd "$(dirname "$0")/.."

# Every process this run starts inherits the marker; at the end none may be left.
FERROVIA_TEST_RUN="$$-$(date +%s%N)"
export FERROVIA_TEST_RUN

# The processes still carrying this run's marker, other than this script and the subshell
# running this function (the glob is expanded before the function starts any process).
leftovers() {
  local pid
  for env in /proc/[0-9]*/environ; do
    pid=${env#/proc/}
    pid=${pid%/environ}
    [ "$pid" = "$$" ] || [ "$pid" = "$BASHPID" ] && continue
    if tr '\0' '\n' 2>/dev/null < "$env" | grep -qx "FERROVIA_TEST_RUN=$FERROVIA_TEST_RUN"; then
      echo "$pid $(tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline")"
    fi
  done
}

# Fails the run if anything it started is still running 10 s after the last step.
check_leftovers() {
  local left=""
  for _ in $(seq 1 20); do
    left=$(leftovers)
    [ -z "$left" ] && { echo "== No process left behind"; return 0; }
    sleep 0.5
  done
  echo "processes this run started are still running:" >&2
  echo "$left" >&2
  return 1
}

if [ "${1:-}" = "--quick" ]; then
  [ -d node_modules/playwright-core ] || npm install --no-audit --no-fund
  echo "== Quick: the workspace's Rust tests (unit, integration against independent clients, attacks)"
  cargo test --workspace
  echo "== Quick: one browser (Chromium) against the Rust echo example"
  FERROVIA_BROWSERS=chromium node --test --test-concurrency=1 tests/browser/core.test.mjs
  echo "== Quick: the Node package without browsers"
  FERROVIA_BUILD_FROM_SOURCE=1 node bindings-node/scripts/install.js
  node --test --test-concurrency=1 tests/node/api.test.mjs tests/node/lifecycle.test.mjs \
    tests/node/tcp.test.mjs tests/node/readme-hostile.test.mjs tests/node/observability.test.mjs
  echo "== Quick: the Python package without browsers"
  bash scripts/test-python.sh --ignore=tests/python/test_browsers.py --ignore=tests/python/test_examples.py
  check_leftovers
  exit 0
fi

for tool in chromium firefox-esr nft ip curl redis-server nats-server; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || {
    echo "missing $tool: sudo apt-get install chromium firefox-esr nftables iproute2 curl redis-server nats-server" >&2
    exit 1
  }
done

# A full run builds each crate once: incremental state would only cost disk.
export CARGO_INCREMENTAL=0

echo "== Node package: npm install (builds the native module from source)"
# `npm install` rather than `npm ci`: the registry mirror lacks some platform packages
# that @napi-rs/cli lists as optional, which `npm ci` treats as a lockfile mismatch.
FERROVIA_BUILD_FROM_SOURCE=1 npm install --no-audit --no-fund

echo "== Rust workspace tests"
# One feature set for every debug build of the run: the scripts below build with
# `--workspace` too, so no crate is compiled twice.
cargo test --workspace
cargo build --workspace --bins --examples

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

check_leftovers
