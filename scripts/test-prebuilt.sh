#!/usr/bin/env bash
# Proves the prebuilt install path: builds the host's release artefacts (the npm main and
# linux-x64-gnu packages, the manylinux2014 wheel and the sdist, through
# scripts/release.sh --host), then, in a temporary directory whose PATH has no cargo,
# rustc or rustup:
#
#   - installs the two npm tarballs into a new Node project, checks the native module was
#     loaded from the platform package and nothing was compiled, runs the echo example and
#     completes a WebTransport echo with an independent client (aioquic);
#   - installs the wheel into a new virtualenv (no index, binary only) and does the same
#     with the Python echo example;
#   - installs the main npm tarball alone and the sdist alone, and checks both fail with
#     the message that tells the user to install Rust, without downloading a toolchain.
#
# Needs Node.js 20+, CPython 3.10+ and rustup; everything else it installs itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ART="$ROOT/target/prebuilt-test-artifacts"
TOOLS="${FERROVIA_RELEASE_TOOLS:-$ROOT/target/release-tools}"

started=$(date +%s)
bash scripts/release.sh --host --out "$ART"
echo "== release artefacts built in $(($(date +%s) - started)) s"

# The WebTransport client runs with the toolchain's Python; only the servers must do without.
"$TOOLS/bin/python" -m pip install --quiet --disable-pip-version-check aioquic==1.7.2

VERSION=$(node -p 'require("./package.json").version')
PLATFORM=linux-x64-gnu
[ "$(uname -m)" = x86_64 ] || PLATFORM=linux-arm64-gnu
MAIN_TGZ="$ART/ferrovia-$VERSION.tgz"
PLATFORM_TGZ="$ART/ferrovia-$PLATFORM-$VERSION.tgz"
WHEEL=$(ls "$ART"/ferrovia-"$VERSION"-cp310-abi3-*manylinux_2_17_"$(uname -m)"*.whl)
SDIST="$ART/ferrovia-$VERSION.tar.gz"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ferrovia-prebuilt.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

# The servers' PATH: links to node, npm and the shell npm runs install scripts with, then
# the new virtualenv's bin. Nothing a Rust build could use is reachable, whatever else this
# machine has installed.
mkdir -p "$WORK/bin"
for tool in node npm sh; do ln -s "$(command -v "$tool")" "$WORK/bin/$tool"; done
BASE_PYTHON=$(python3 -c 'import sys, os; print(os.path.join(sys.base_prefix, "bin", "python3"))')
"$BASE_PYTHON" -m venv "$WORK/venv"
CLEAN_PATH="$WORK/bin:$WORK/venv/bin"
# Also without the variables that would force a source build or pick another module.
CLEAN_ENV=(env -u CARGO -u CARGO_HOME -u RUSTUP_HOME -u RUSTUP_TOOLCHAIN -u RUSTC -u CARGO_TARGET_DIR
  -u FERROVIA_BUILD_FROM_SOURCE -u FERROVIA_NATIVE_PATH -u FERROVIA_CARGO_PROFILE
  -u MATURIN_NO_INSTALL_RUST PATH="$CLEAN_PATH" npm_config_cache="$WORK/npm-cache")
clean() { "${CLEAN_ENV[@]}" "$@"; }
for tool in cargo rustc rustup; do
  if found=$(clean /bin/sh -c "command -v $tool"); then fail "$tool is reachable in the test environment: $found"; fi
done
echo "== test environment: PATH=$CLEAN_PATH (no cargo, rustc or rustup)"

# Starts an echo server in the clean environment and echoes "$1" once it listens.
start_server() {
  local log="$1"; shift
  # Not through the clean() function: a backgrounded function is a subshell of its own, and
  # killing it would leave the server under it running. env execs the server, so $! is it.
  "${CLEAN_ENV[@]}" "$@" >"$log" 2>"$log.err" &
  PIDS+=($!)
  local pid=$! port=""
  for _ in $(seq 1 200); do
    port=$(sed -n 's/.*"event":"listening","port":\([0-9]*\).*/\1/p' "$log" | head -1)
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || fail "server exited: $(cat "$log.err")"
    sleep 0.1
  done
  [ -n "$port" ] || fail "server did not report listening: $(cat "$log.err")"
  SERVER_PORT=$port
}

echo "== npm: install the main and $PLATFORM tarballs into a new project"
APP="$WORK/node-app"
mkdir -p "$APP"
(cd "$APP" && clean npm init -y >/dev/null &&
  clean npm install --no-audit --no-fund --foreground-scripts "$PLATFORM_TGZ" "$MAIN_TGZ") 2>&1 |
  tee "$WORK/npm-install.log"
grep -q 'building the native module' "$WORK/npm-install.log" && fail "npm install compiled the native module"
compgen -G "$APP/node_modules/ferrovia/bindings-node/*.node" >/dev/null &&
  fail "a native module appeared inside node_modules/ferrovia: $(ls "$APP"/node_modules/ferrovia/bindings-node/*.node)"
[ -e "$APP/node_modules/ferrovia/target" ] && fail "a cargo target directory appeared in node_modules/ferrovia"
native=$(cd "$APP" && clean node "$ROOT/tests/prebuilt/native-origin.cjs")
[ "$native" = "$APP/node_modules/ferrovia-$PLATFORM/ferrovia.$PLATFORM.node" ] ||
  fail "ferrovia loaded $native, not the $PLATFORM package's module"
echo "native module: ${native#"$WORK"/}"

cp examples/node/echo.mjs "$APP/echo.mjs"
start_server "$WORK/node-server.log" node "$APP/echo.mjs" --port 0 --host 127.0.0.1
"$TOOLS/bin/python" tests/prebuilt/echo_client.py "$SERVER_PORT" "Node server from the npm tarballs"

echo "== Python: install the wheel into a new virtualenv (no index, binary only)"
clean "$WORK/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  --no-index --only-binary :all: "$WHEEL"
ext=$(cd "$WORK" && clean "$WORK/venv/bin/python" -c 'import ferrovia._ferrovia as m; print(m.__file__)')
case "$ext" in
  "$WORK/venv/lib/"*/site-packages/ferrovia/_ferrovia.abi3.so) echo "extension: ${ext#"$WORK"/}" ;;
  *) fail "ferrovia imported its extension from $ext, not the virtualenv" ;;
esac
cp examples/python/echo.py "$WORK/echo.py"
start_server "$WORK/python-server.log" "$WORK/venv/bin/python" "$WORK/echo.py" --port 0 --host 127.0.0.1
"$TOOLS/bin/python" tests/prebuilt/echo_client.py "$SERVER_PORT" "Python server from the wheel"

echo "== No prebuilt match: the main npm tarball alone asks for Rust"
BARE="$WORK/node-bare"
mkdir -p "$BARE"
if (cd "$BARE" && clean npm init -y >/dev/null &&
  clean npm install --no-audit --no-fund --foreground-scripts "$MAIN_TGZ") >"$WORK/npm-bare.log" 2>&1; then
  fail "npm install without a platform package and without cargo succeeded"
fi
grep -q 'cargo was not found to build one from source' "$WORK/npm-bare.log" ||
  fail "npm install did not say cargo is missing: $(cat "$WORK/npm-bare.log")"
grep 'ferrovia:' "$WORK/npm-bare.log" | head -3

echo "== No prebuilt match: the sdist asks for Rust and downloads no toolchain"
"$BASE_PYTHON" -m venv "$WORK/venv-sdist"
if clean HOME="$WORK/home" "$WORK/venv-sdist/bin/python" -m pip install --disable-pip-version-check \
  "$SDIST" >"$WORK/pip-sdist.log" 2>&1; then
  fail "pip install of the sdist without cargo succeeded"
fi
grep -q "needs Rust's \`cargo\`" "$WORK/pip-sdist.log" ||
  fail "pip did not say cargo is missing: $(cat "$WORK/pip-sdist.log")"
grep -qi 'puccinialin\|installing into a temporary directory' "$WORK/pip-sdist.log" &&
  fail "the sdist build tried to install Rust"
[ -e "$WORK/home/.cache/puccinialin" ] && fail "a Rust toolchain was downloaded"
grep -A2 'ferrovia: no prebuilt wheel' "$WORK/pip-sdist.log"

echo "== prebuilt install tests passed in $(($(date +%s) - started)) s"
