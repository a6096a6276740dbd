#!/usr/bin/env bash
# Standard conformance suites against the Node and Python packages (docs/testing.md):
#
#   - Autobahn|Testsuite's fuzzingclient (RFC 6455, and RFC 7692 compression in 12.* and
#     13.*: every case) against the plain WebSocket echo of tests/conformance/ws-echo.mjs
#     (Node) and tests/conformance/ws_echo.py (Python), over wss:// on their TLS TCP port;
#   - h2spec (RFC 7540/9113, HPACK) over TLS against the Node server's TCP port, where its
#     `fetch` handler answers ordinary requests.
#
#   bash scripts/conformance.sh [autobahn] [h2spec]     (default: both)
#
# Installs the tools into target/conformance/ when missing: Autobahn under Python 2.7.18
# from pyenv (versions pinned in tests/conformance/autobahn-requirements.txt), h2spec with
# `go install`. Needs the built packages: the Node module (bindings-node/*.node, from
# `npm install`) and the Python package in .venv (scripts/test-python.sh), or
# FERROVIA_PYTHON naming another interpreter that imports ferrovia.
#
# Environment: FERROVIA_CONFORMANCE_SERVERS ("node python"), AUTOBAHN_CASES (JSON list
# of case patterns; default: every case of 1.* to 10.*, and of the compression cases 12.*
# and 13.* the smallest message of each of their 12 negotiation and data sets plus five
# larger ones: their 216 cases send 1000 messages each and take 12 minutes against one
# server, Python 2's client being the slow side; '["*"]' runs all 517),
# FERROVIA_CONFORMANCE_PLAIN=1 (Autobahn over ws:// to
# a TCP side without TLS, `behindTlsProxy`, instead of wss://).
#
# Reports: target/conformance/reports/ (Autobahn's HTML and JSON per server, h2spec's
# JUnit XML); server and tool logs beside them. Every process started here runs in a
# process group of its own and is killed on exit, however the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/conformance
REPORTS=$OUT/reports
PY27=${FERROVIA_PY27:-$HOME/.pyenv/versions/2.7.18/bin/python}
PYTHON=${FERROVIA_PYTHON:-$ROOT/.venv/bin/python}
SERVERS=${FERROVIA_CONFORMANCE_SERVERS:-node python}
COMPRESSION_SAMPLE='"12.1.1", "12.2.1", "12.3.1", "12.4.1", "12.5.1", "12.1.18", "12.2.10", "12.5.9",
  "13.1.1", "13.2.1", "13.3.1", "13.4.1", "13.5.1", "13.6.1", "13.7.1", "13.3.9", "13.7.9"'
AUTOBAHN_DEFAULT='["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*", '"$COMPRESSION_SAMPLE"']'
AUTOBAHN_CASES=${AUTOBAHN_CASES:-$AUTOBAHN_DEFAULT}
AUTOBAHN_TIMEOUT=${AUTOBAHN_TIMEOUT:-1800}
H2SPEC_VERSION=v2.2.1+incompatible

suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(autobahn h2spec)
for s in "${suites[@]}"; do
  case "$s" in autobahn | h2spec) ;; *) echo "unknown suite $s (autobahn, h2spec)" >&2; exit 2 ;; esac
done
want() { local s; for s in "${suites[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }

mkdir -p "$OUT/bin" "$REPORTS"

# --- process groups: everything started below is `setsid`, so its pid is its group ----
groups=()
stop_group() {
  local pg=$1 i
  kill -TERM -- "-$pg" 2>/dev/null || return 0
  for i in $(seq 1 30); do
    pgrep -g "$pg" >/dev/null || return 0
    sleep 0.1
  done
  kill -KILL -- "-$pg" 2>/dev/null || true
  sleep 0.2
}
cleanup() {
  local rc=$? pg left=""
  for pg in "${groups[@]}"; do stop_group "$pg"; done
  for pg in "${groups[@]}"; do
    if pgrep -g "$pg" >/dev/null; then left+=" $(pgrep -g "$pg" | tr '\n' ' ')"; fi
  done
  if [ -n "$left" ]; then
    echo "conformance: processes still running after cleanup:$left" >&2
    [ "$rc" -ne 0 ] || rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts "$@" in a new process group, output to $LOG_BASE.{out,err}; sets $started_pid.
start() {
  local log=$1
  shift
  setsid "$@" >"$log.out" 2>"$log.err" </dev/null &
  started_pid=$!
  groups+=("$started_pid")
}

# --- tools ------------------------------------------------------------------------------
install_autobahn() {
  local dir=$OUT/autobahn
  if [ -x "$dir/bin/wstest" ] && PYTHONPATH=$dir "$PY27" -c 'import autobahntestsuite' 2>/dev/null; then
    return
  fi
  [ -x "$PY27" ] || { echo "conformance: Python 2.7 not found at $PY27 (pyenv install 2.7.18, or set FERROVIA_PY27)" >&2; exit 1; }
  echo "== installing Autobahn|Testsuite into $dir"
  rm -rf "$dir"
  "$PY27" -m pip install --disable-pip-version-check -q --target "$dir" \
    -r tests/conformance/autobahn-requirements.txt 2>&1 | grep -v -i 'deprecation' || true
  # zope.interface is installed without the namespace package's __init__ under --target.
  touch "$dir/zope/__init__.py"
  PYTHONPATH=$dir "$PY27" -c 'import autobahntestsuite' ||
    { echo "conformance: Autobahn|Testsuite did not install" >&2; exit 1; }
}

install_h2spec() {
  [ -x "$OUT/bin/h2spec" ] && return
  echo "== installing h2spec $H2SPEC_VERSION into $OUT/bin"
  GOBIN=$OUT/bin go install "github.com/summerwind/h2spec/cmd/h2spec@$H2SPEC_VERSION"
}

# --- servers ----------------------------------------------------------------------------
# Starts a conformance server and waits for its {"port":...} line; sets $server_port
# (UDP) and $server_tcp_port.
start_server() {
  local name=$1 i line
  shift
  local log=$REPORTS/server-$name
  start "$log" "$@"
  local pid=$started_pid
  for i in $(seq 1 300); do
    line=$(head -n 1 "$log.out" 2>/dev/null || true)
    if [ -n "$line" ]; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "conformance: the $name server exited before listening:" >&2
      cat "$log.err" >&2
      exit 1
    fi
    sleep 0.1
  done
  [ -n "$line" ] || { echo "conformance: the $name server printed no port within 30 s" >&2; cat "$log.err" >&2; exit 1; }
  server_port=$(node -e 'const j = JSON.parse(process.argv[1]); console.log(j.port)' "$line")
  server_tcp_port=$(node -e 'const j = JSON.parse(process.argv[1]); console.log(j.tcpPort)' "$line")
  server_pid=$pid
}

# The WebSocket echo of package $1, with --behind-tls-proxy when FERROVIA_CONFORMANCE_PLAIN=1.
start_echo() {
  local extra=()
  [ "${FERROVIA_CONFORMANCE_PLAIN:-}" = 1 ] && extra=(--behind-tls-proxy)
  case "$1" in
    node) start_server node node tests/conformance/ws-echo.mjs "${extra[@]}" ;;
    python) start_server python "$PYTHON" tests/conformance/ws_echo.py "${extra[@]}" ;;
  esac
}

failed=0
summaries=()

# --- Autobahn|Testsuite -----------------------------------------------------------------
run_autobahn() {
  local name=$1 scheme=wss
  [ "${FERROVIA_CONFORMANCE_PLAIN:-}" = 1 ] && scheme=ws
  start_echo "$name"
  local dir=$REPORTS/autobahn-$name
  rm -rf "$dir"
  mkdir -p "$dir"
  cat >"$dir/spec.json" <<EOF
{
  "outdir": "$dir/servers",
  "servers": [{ "agent": "ferrovia-$name", "url": "$scheme://127.0.0.1:$server_tcp_port/" }],
  "cases": $AUTOBAHN_CASES,
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
EOF
  echo "== Autobahn|Testsuite fuzzingclient against the $name echo ($scheme://127.0.0.1:$server_tcp_port/)"
  local t0=$SECONDS rc=0
  start "$dir/wstest" env PYTHONPATH="$OUT/autobahn" timeout "$AUTOBAHN_TIMEOUT" \
    "$PY27" "$OUT/autobahn/bin/wstest" -m fuzzingclient -s "$dir/spec.json"
  wait "$started_pid" || rc=$?
  local took=$((SECONDS - t0))
  if [ "$rc" -ne 0 ]; then
    echo "conformance: wstest exited with $rc after ${took}s; last lines of $dir/wstest.out and .err:" >&2
    tail -n 20 "$dir/wstest.out" "$dir/wstest.err" >&2 || true
  fi
  local expect=()
  [ "$AUTOBAHN_CASES" = '["*"]' ] && expect=(--expect 517)
  [ "$AUTOBAHN_CASES" = "$AUTOBAHN_DEFAULT" ] && expect=(--expect 318)
  local summary
  summary=$(python3 tests/conformance/autobahn_summary.py "${expect[@]}" "$name=$dir/servers/index.json") || rc=1
  echo "$summary"
  summaries+=("$(echo "$summary" | head -n 1) in ${took}s")
  [ "$rc" -eq 0 ] || failed=1
  stop_group "$server_pid"
  if grep -q -i 'panic\|uncaught\|Traceback' "$REPORTS/server-$name.err"; then
    echo "conformance: the $name server logged errors (see $REPORTS/server-$name.err):" >&2
    grep -i -m 5 -A 3 'panic\|uncaught\|Traceback' "$REPORTS/server-$name.err" >&2
    failed=1
  fi
}

# --- h2spec -----------------------------------------------------------------------------
run_h2spec() {
  start_server node-h2 node tests/conformance/ws-echo.mjs
  local xml=$REPORTS/h2spec.xml
  rm -f "$xml"
  echo "== h2spec over TLS against the Node server's fetch handler (127.0.0.1:$server_tcp_port)"
  local t0=$SECONDS rc=0
  start "$REPORTS/h2spec" "$OUT/bin/h2spec" -t -k -h 127.0.0.1 -p "$server_tcp_port" --timeout 2 -j "$xml"
  wait "$started_pid" || rc=$?
  local took=$((SECONDS - t0)) summary
  rc=0
  summary=$(python3 tests/conformance/h2spec_summary.py "$xml" tests/conformance/h2spec-exceptions.txt) || rc=1
  echo "$summary"
  summaries+=("$(echo "$summary" | head -n 1) in ${took}s")
  [ "$rc" -eq 0 ] || { failed=1; echo "h2spec's own output: $REPORTS/h2spec.out" >&2; }
  stop_group "$server_pid"
}

# --- run --------------------------------------------------------------------------------
[ -n "$(ls bindings-node/*.node 2>/dev/null)" ] ||
  { echo "conformance: no bindings-node/*.node: build the Node package first (npm install)" >&2; exit 1; }
if want autobahn && [[ " $SERVERS " == *" python "* ]]; then
  "$PYTHON" -c 'import ferrovia' ||
    { echo "conformance: $PYTHON cannot import ferrovia: run scripts/test-python.sh first" >&2; exit 1; }
fi

if want autobahn; then
  install_autobahn
  for name in $SERVERS; do run_autobahn "$name"; done
fi
if want h2spec; then
  install_h2spec
  run_h2spec
fi

echo "== conformance summary"
printf '%s\n' "${summaries[@]}"
exit "$failed"
