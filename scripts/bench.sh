#!/usr/bin/env bash
# The full benchmark run: builds every server under test in release mode, then runs every
# scenario against each of them RUNS times (servers interleaved within each run) with the
# load generator in its own process. Writes target/bench/<stamp>/results.jsonl (one
# record per server × scenario × run), results.md (the summary table) and machine.txt.
#
#   scripts/bench.sh                      # RUNS=3, every server that builds here
#   RUNS=5 BENCH_SERVERS=core,go scripts/bench.sh
#   BENCH_ONLY=bulk_single,latency scripts/bench.sh
#
# Servers: core (examples/rust/echo.rs; core2 is the same on two endpoints, only when named
# in BENCH_SERVERS), node (examples/node/echo.mjs), python
# (examples/python/echo.py), and the peers aioquic, go (webtransport-go) and wtransport
# from bench/peers/, all WebTransport; and the WebSocket-only peers tungstenite
# (tokio-tungstenite's echo server, bench/peers/tungstenite-echo), ws (Node's `ws` package,
# bench/peers/ws_echo.mjs) and websockets (Python's websockets library,
# bench/peers/websockets_echo.py). The core, Node and Python echoes also run the WebSocket
# and QMux scenarios; each server runs only the scenarios it can serve (its capabilities
# below). A server whose toolchain or package is missing is skipped and named.
#
# The HTTP scenarios (http1_json, http2_json, http3_json: GET /json, requests/s and
# latency) run against the core (`loadgen http-server`), the Node package
# (bench/servers/node_fetch.mjs) and the Python package hosting an ASGI app
# (bench/peers/asgi_json.py --with ferrovia), in the same columns as their echo servers;
# and the peers nodehttp2 (node:http2 with HTTP/1.1, bench/peers/node_http2.mjs), hono
# (Hono's fetch handler on @hono/node-server over node:http2, bench/peers/hono_node.mjs),
# uvicorn, hypercorn and granian (the same ASGI app, bench/peers/asgi_json.py). For example:
#
#   BENCH_ONLY=http1_json,http2_json,http3_json \
#     BENCH_SERVERS=core,node,nodehttp2,hono,python,uvicorn,granian scripts/bench.sh
set -uo pipefail
cd "$(dirname "$0")/.."

RUNS="${RUNS:-3}"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="target/bench/$stamp"
mkdir -p "$out"
peers="target/bench-peers"
mkdir -p "$peers"
servers=()
skipped=()

want() { [[ -z "${BENCH_SERVERS:-}" || ",$BENCH_SERVERS," == *",$1,"* ]]; }
# add NAME COMMAND [CAPABILITIES]: wt (WebTransport, the default), ws (WebSockets on /ws),
# qmux (QMux sessions on /echo), h1/h2/h3 (GET /json over HTTP/1.1, HTTP/2, HTTP/3),
# comma-separated. A name may be added twice with different capabilities (one column).
add() { servers+=(--server "$1[${3:-wt}]=$2"); }
skip() { skipped+=("$1: $2"); echo "bench: skipping $1: $2" >&2; }

set -e
cargo build --release -p ferrovia --example echo
cargo build --release -p ferrovia-bench --bin loadgen
set +e
add core "target/release/examples/echo --port 0 --host 127.0.0.1" wt,ws,qmux
add core "target/release/loadgen http-server --port 0 --host 127.0.0.1" h1,h2,h3
# core2: the same echo on two endpoints of one SO_REUSEPORT group, steered by connection ID
# (the scaling figures of docs/scaling.md). Only when BENCH_SERVERS names it.
if [[ ",${BENCH_SERVERS:-}," == *",core2,"* ]]; then
  add core2 "target/release/examples/echo --port 0 --host 127.0.0.1 --workers 2" wt
fi

if want node; then
  if [[ ! -f examples/node/echo.mjs ]]; then
    skip node "examples/node/echo.mjs does not exist"
  elif [[ -n "${BENCH_NO_BUILD:-}" ]] || npm run --silent build >"$out/build-node.log" 2>&1; then
    add node "node examples/node/echo.mjs --port 0 --host 127.0.0.1" wt,ws,qmux
    add node "node bench/servers/node_fetch.mjs --port 0 --host 127.0.0.1" h1,h2,h3
  else
    skip node "release build failed (see $out/build-node.log)"
  fi
fi

# Python servers run from a virtualenv of their own, so the run never changes the
# interpreter's global packages or a developer's .venv.
venv=target/bench-venv
PY="$venv/bin/python"
if want python || want aioquic || want websockets || want uvicorn || want hypercorn || want granian; then
  [[ -x "$PY" ]] || python3 -m venv "$venv"
  "$PY" -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt \
    >"$out/build-pip.log" 2>&1 || skip pip "pip install -r bench/requirements.txt failed (see $out/build-pip.log)"
fi

if want python; then
  if [[ ! -f examples/python/echo.py ]]; then
    skip python "examples/python/echo.py does not exist"
  elif [[ -n "${BENCH_NO_BUILD:-}" ]] ||
    "$PY" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps . \
      >"$out/build-python.log" 2>&1; then
    # `pip install .` builds the extension with maturin in release mode.
    add python "$PY examples/python/echo.py --port 0 --host 127.0.0.1" wt,ws,qmux
    add python "$PY bench/peers/asgi_json.py --with ferrovia --port 0 --host 127.0.0.1" h1,h2,h3
  else
    skip python "release build failed (see $out/build-python.log)"
  fi
fi

if want aioquic; then
  if "$PY" -c 'import aioquic' 2>/dev/null; then
    add aioquic "$PY bench/peers/aioquic_echo.py --port 0 --host 127.0.0.1"
  else
    skip aioquic "aioquic is not installed in $venv"
  fi
fi

if want websockets; then
  if "$PY" -c 'import websockets, cryptography' 2>/dev/null; then
    add websockets "$PY bench/peers/websockets_echo.py --port 0 --host 127.0.0.1" ws
  else
    skip websockets "websockets (or cryptography) is not installed in $venv"
  fi
fi

# uvicorn and Hypercorn host the same ASGI app as the Python package's HTTP server above.
if want uvicorn; then
  if "$PY" -c 'import uvicorn, cryptography' 2>/dev/null; then
    add uvicorn "$PY bench/peers/asgi_json.py --with uvicorn --port 0 --host 127.0.0.1" h1
  else
    skip uvicorn "uvicorn (or cryptography) is not installed in $venv"
  fi
fi

if want hypercorn; then
  if ! "$PY" -c 'import hypercorn, cryptography' 2>/dev/null; then
    skip hypercorn "hypercorn (or cryptography) is not installed in $venv"
  elif "$PY" -c 'import aioquic' 2>/dev/null; then
    add hypercorn "$PY bench/peers/asgi_json.py --with hypercorn --port 0 --host 127.0.0.1" h1,h2,h3
  else
    # Hypercorn serves HTTP/3 through aioquic only.
    add hypercorn "$PY bench/peers/asgi_json.py --with hypercorn --port 0 --host 127.0.0.1" h1,h2
  fi
fi

# Granian runs its own worker process with the app on asyncio (no uvloop or rloop here).
if want granian; then
  if "$PY" -c 'import granian, cryptography' 2>/dev/null; then
    add granian "$PY bench/peers/asgi_json.py --with granian --port 0 --host 127.0.0.1" h1,h2
  else
    skip granian "granian (or cryptography) is not installed in $venv"
  fi
fi

# Hono on @hono/node-server (devDependencies): a fetch handler on Node's own server.
if want hono; then
  if ! command -v node >/dev/null; then
    skip hono "no Node"
  elif node -e "import('@hono/node-server').then(() => import('hono'))" 2>/dev/null; then
    add hono "node bench/peers/hono_node.mjs --port 0 --host 127.0.0.1" h1,h2
  else
    skip hono "hono or @hono/node-server is not installed (npm install)"
  fi
fi

# Node's own HTTP/2 server (with HTTP/1.1), the HTTP peer of the Node package.
if want nodehttp2; then
  if command -v node >/dev/null; then
    add nodehttp2 "node bench/peers/node_http2.mjs --port 0 --host 127.0.0.1" h1,h2
  else
    skip nodehttp2 "no Node"
  fi
fi

# The `ws` package is one of the repository's devDependencies (npm install).
if want ws; then
  if ! command -v node >/dev/null; then
    skip ws "no Node"
  elif node -e "require.resolve('ws')" 2>/dev/null; then
    add ws "node bench/peers/ws_echo.mjs --port 0 --host 127.0.0.1" ws
  else
    skip ws "the ws package is not installed (npm install)"
  fi
fi

if want go; then
  if ! command -v go >/dev/null; then
    skip go "no Go toolchain"
  elif (cd bench/peers/go-echo && go build -o "../../../$peers/go-echo" .) >"$out/build-go.log" 2>&1; then
    add go "$peers/go-echo --port 0 --host 127.0.0.1"
  else
    skip go "go build failed (see $out/build-go.log)"
  fi
fi

if want wtransport; then
  if CARGO_TARGET_DIR="$peers/cargo" cargo build --release \
    --manifest-path bench/peers/wtransport-echo/Cargo.toml >"$out/build-wtransport.log" 2>&1; then
    add wtransport "$peers/cargo/release/wtransport-echo --port 0 --host 127.0.0.1"
  else
    skip wtransport "cargo build failed (see $out/build-wtransport.log)"
  fi
fi

if want tungstenite; then
  if CARGO_TARGET_DIR="$peers/cargo" cargo build --release \
    --manifest-path bench/peers/tungstenite-echo/Cargo.toml >"$out/build-tungstenite.log" 2>&1; then
    add tungstenite "$peers/cargo/release/tungstenite-echo --port 0 --host 127.0.0.1" ws
  else
    skip tungstenite "cargo build failed (see $out/build-tungstenite.log)"
  fi
fi

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- core bindings-node bindings-python python examples 2>/dev/null || echo ' (+ uncommitted changes)')"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') × $(nproc)"
  echo "memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "kernel: $(uname -r)"
  echo "rustc: $(rustc --version)"
  echo "node: $(node --version 2>/dev/null)"
  echo "python: $([[ -x "$PY" ]] && "$PY" --version 2>&1)"
  echo "go: $(go version 2>/dev/null)"
  echo "aioquic: $("$PY" -c 'import aioquic; print(aioquic.__version__)' 2>/dev/null)"
  echo "websockets (peer): $("$PY" -c 'import websockets; print(websockets.__version__)' 2>/dev/null)"
  echo "uvicorn (peer): $("$PY" -c 'import uvicorn, httptools; print(uvicorn.__version__, "httptools", httptools.__version__)' 2>/dev/null)"
  echo "hypercorn (peer): $("$PY" -c 'import importlib.metadata as m; print(m.version("hypercorn"))' 2>/dev/null)"
  echo "granian (peer): $("$PY" -c 'import granian; print(granian.__version__)' 2>/dev/null)"
  echo "hono (peer): $(node -e "console.log(require('./node_modules/hono/package.json').version, '@hono/node-server', require('./node_modules/@hono/node-server/package.json').version)" 2>/dev/null)"
  echo "ws (peer): $(node -p "require('ws/package.json').version" 2>/dev/null)"
  echo "tokio-tungstenite (peer): $(grep -A1 '^name = "tokio-tungstenite"$' bench/peers/tungstenite-echo/Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')"
  echo "load before: $(cat /proc/loadavg)"
  for s in "${skipped[@]}"; do echo "skipped $s"; done
} >"$out/machine.txt"

only=()
[[ -n "${BENCH_ONLY:-}" ]] && only=(--only "$BENCH_ONLY")
target/release/loadgen --runs "$RUNS" "${only[@]}" --json "$out/results.jsonl" \
  --markdown "$out/results.md" "${servers[@]}" | tee "$out/stdout.txt"
status=${PIPESTATUS[0]}
echo "load after: $(cat /proc/loadavg)" >>"$out/machine.txt"
cat "$out/machine.txt"
echo "bench: results in $out/ (loadgen exit $status)"
exit "$status"
