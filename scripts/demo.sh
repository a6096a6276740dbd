#!/usr/bin/env bash
# The first command to run: builds what the demo needs and starts it.
#
#   ./scripts/demo.sh [--port PORT] [--host IP]
#
# It builds the Node package's native module from the Rust sources on the first run (and
# after they change), then starts the demo server on port 4433: the page on
# https://localhost:4433/ (TCP, and HTTP/3 on UDP) and its WebTransport endpoint on the same
# port, with a fresh self-signed certificate whose hash the page reads. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

need() {
  command -v "$1" >/dev/null 2>&1 || {
    echo "demo: $1 not found. $2" >&2
    exit 1
  }
}
need node "Install Node.js 20 or newer (https://nodejs.org)."
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 20 ]; then
  echo "demo: Node.js $(node --version) is too old; the demo needs 20 or newer." >&2
  exit 1
fi

# The demo needs only the package's native module (the page and servers use no npm
# dependencies). Build it with the package's own install step, the one `npm install` runs,
# when it is missing or older than the Rust sources, so a pull never runs a stale binary.
native="$(ls bindings-node/ferrovia.*.node 2>/dev/null | head -n 1 || true)"
if [ -z "$native" ] || [ -n "$(find core/src core/Cargo.toml bindings-node/src bindings-node/Cargo.toml Cargo.lock -newer "$native" -print -quit)" ]; then
  need cargo "The first run compiles the Rust core: install Rust from https://rustup.rs."
  echo "demo: building the native module (the first build takes a few minutes)..." >&2
  FERROVIA_BUILD_FROM_SOURCE=1 node bindings-node/scripts/install.js >&2
fi

exec node examples/demo/server.mjs "$@"
