#!/usr/bin/env bash
# The first command to run: builds what the demo needs and starts it.
#
#   ./scripts/demo.sh [--port UDP_PORT] [--http-port TCP_PORT]
#
# It installs the Node package's dependencies and builds its native module (`npm ci`, which
# compiles the Rust code on the first run), then starts the demo server: a page on
# http://localhost:8080/ and the WebTransport endpoint on UDP 4433 with a fresh self-signed
# certificate whose hash the page already knows. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

need() {
  command -v "$1" >/dev/null 2>&1 || {
    echo "demo: $1 not found. $2" >&2
    exit 1
  }
}
need node "Install Node.js 20 or newer (https://nodejs.org)."
need npm "It ships with Node.js (https://nodejs.org)."
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 20 ]; then
  echo "demo: Node.js $(node --version) is too old; the demo needs 20 or newer." >&2
  exit 1
fi

# The native module is the only build product; rebuild when it is missing or older than
# the Rust sources, so a pull never runs a stale binary.
native="$(ls bindings-node/ferrovia.*.node 2>/dev/null | head -n 1 || true)"
stale=""
if [ -n "$native" ] && [ -n "$(find core/src bindings-node/src -newer "$native" -name '*.rs' -print -quit)" ]; then
  stale=yes
fi
if [ ! -d node_modules/@napi-rs ] || [ -z "$native" ]; then
  need cargo "The first run compiles the Rust core: install Rust from https://rustup.rs."
  echo "demo: installing and building (npm ci; compiling takes a few minutes the first time)..." >&2
  FERROVIA_BUILD_FROM_SOURCE=1 npm ci --no-audit --no-fund >&2
elif [ -n "$stale" ]; then
  need cargo "Rebuilding the native module needs Rust: https://rustup.rs."
  echo "demo: the Rust sources changed; rebuilding the native module..." >&2
  FERROVIA_BUILD_FROM_SOURCE=1 node bindings-node/scripts/install.js >&2
fi

exec node examples/demo/server.mjs "$@"
