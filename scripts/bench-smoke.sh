#!/usr/bin/env bash
# Smoke mode of the benchmark suite: seconds-long runs of every scenario that check the
# harness works (every scenario completes against every server, every figure parses).
# It measures nothing worth publishing; scripts/bench.sh does that.
#
# Servers: the core echo example (debug build, the one the test suite builds) and the
# aioquic peer (installed into a venv of its own). The core also runs the TCP scenarios
# (WebSocket echo, round trips and idle memory; QMux echo and round trips), which the
# WebTransport-only peers skip, and the HTTP scenarios (GET /json over HTTP/1.1, HTTP/2
# and HTTP/3 against `loadgen http-server`). The Node and Python echo examples join when
# named in BENCH_SMOKE_SERVERS (e.g. core,aioquic,node,python); a named server that cannot
# run fails the smoke. Their own test suites cover the bindings otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/bench-smoke
mkdir -p "$out"

cargo build --workspace --bins --examples

servers=(--server "core[wt,ws,qmux]=target/debug/examples/echo --port 0 --host 127.0.0.1"
  --server "core[h1,h2,h3]=target/debug/loadgen http-server --port 0 --host 127.0.0.1")
names=core

wanted="${BENCH_SMOKE_SERVERS:-core,aioquic}"
add() { # add NAME COMMAND
  if [[ ",$wanted," != *",$1,"* ]]; then
    return
  fi
  servers+=(--server "$1=$2")
  names+=",$1"
}

# The aioquic peer runs from a virtualenv of its own, so the smoke never changes the
# interpreter's global packages.
venv=target/bench-venv
if [[ ",$wanted," == *",aioquic,"* ]]; then
  if { [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"; } &&
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      -r bench/requirements.txt >"$out/pip.log" 2>&1; then
    add aioquic "$venv/bin/python bench/peers/aioquic_echo.py --port 0 --host 127.0.0.1"
  else
    # A server asked for must take part: a smoke run that quietly drops one proves nothing.
    echo "bench smoke: cannot install aioquic (see $out/pip.log)" >&2
    exit 1
  fi
fi
if [[ ",$wanted," == *",node,"* ]]; then
  node -e "require('./')" 2>/dev/null || {
    echo "bench smoke: the Node package is not built (npm install)" >&2
    exit 1
  }
  add node "node examples/node/echo.mjs --port 0 --host 127.0.0.1"
fi
# The Python package as scripts/test-python.sh installs it.
if [[ ",$wanted," == *",python,"* ]]; then
  .venv/bin/python -c 'import ferrovia._ferrovia' 2>/dev/null || {
    echo "bench smoke: the Python package is not installed in .venv (scripts/test-python.sh)" >&2
    exit 1
  }
  add python ".venv/bin/python examples/python/echo.py --port 0 --host 127.0.0.1"
fi

status=0
target/debug/loadgen --smoke --json "$out/results.jsonl" --markdown "$out/results.md" \
  "${servers[@]}" >"$out/stdout.txt" || status=$?
cat "$out/results.md"
python3 bench/check.py "$out/results.jsonl" "$names" \
  bulk_single,bulk_parallel,latency,datagrams,conns64_streams,conns64_datagrams,setup,idle_20,idle_60 \
  core=qmux_bulk_single,qmux_latency,ws_throughput,ws_latency,ws_idle_20,ws_idle_60,http1_json,http2_json,http3_json ||
  status=1
if [[ $status -ne 0 ]]; then
  echo "bench smoke: FAILED (log in $out/)" >&2
  exit 1
fi
echo "bench smoke: ok"
