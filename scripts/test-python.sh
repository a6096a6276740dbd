#!/usr/bin/env bash
# Builds and tests the Python package the way a user installs it: a virtualenv at .venv
# (created on first use, reused after), `pip install .` from this checkout, then the pytest
# suites (aioquic client in-process, headless Chromium and Firefox through the Python echo
# example) and `mypy --strict` on the typed examples.
#
#   scripts/test-python.sh [extra pytest arguments]
#
# Needs CPython >= 3.10, Rust, Node.js 20 and the browsers listed in the README.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install --quiet --disable-pip-version-check \
  maturin==1.16.0 pytest==9.2.0 pytest-asyncio==1.5.0 aioquic==1.7.2 mypy==2.4.1 websockets==15.0.1 uvicorn==0.54.0 starlette==1.10.0 \
  "httpx[http2]==0.28.1" redis==8.1.0 nats-py==2.16.0

# The browser suite is driven from Node; its packages come from the lockfile.
if [ ! -d node_modules/playwright-core ] || [ ! -d node_modules/puppeteer-core ]; then
  npm install --no-audit --no-fund
fi

# The real install path. maturin builds into the workspace's target/, so an unchanged
# checkout does not recompile the Rust dependencies.
"$PY" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps .

"$PY" -m mypy --strict python/ferrovia examples/python/echo.py examples/python/hello.py \
  examples/python/chat.py examples/python/gamestate.py examples/python/upload.py examples/demo/server.py \
  examples/python/starlette_app.py examples/python/quickstart.py bench/python_throughput.py
"$PY" -m pytest tests/python "$@"
