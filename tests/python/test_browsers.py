"""The headless Chromium and Firefox conformance suite (tests/browser/), run against the
Python echo example instead of the Rust one: the same page-side checks, through the
Python package."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _node_suite(target: str, env: dict[str, str], timeout: float) -> tuple[str, dict[str, str]]:
    """Runs a Node test file or folder that drives the browsers; returns its output and the
    counts of its summary, after checking it exited 0."""
    node = shutil.which("node")
    assert node is not None, "node is needed to drive the browsers (see README prerequisites)"
    assert (ROOT / "node_modules" / "playwright-core").is_dir(), "run `npm ci` at the repository root"
    proc = subprocess.run(
        [node, "--test", "--test-concurrency=1", target],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    summary = dict(re.findall(r"^# (tests|pass|fail|cancelled|skipped) (\d+)$", output, re.M))
    assert proc.returncode == 0, output[-8000:]
    return output, summary


def test_browser_suite_passes_against_the_python_echo_server() -> None:
    output, summary = _node_suite(
        "tests/browser/",
        {"FERROVIA_ECHO_BIN": sys.executable, "FERROVIA_ECHO_ARGS": f"{ROOT / 'examples' / 'python' / 'echo.py'} --port 0"},
        900,
    )
    assert int(summary.get("fail", "1")) == 0, output[-8000:]
    assert int(summary.get("skipped", "0")) == 0, output[-8000:]
    # Both browsers ran: every test exists once per browser.
    assert int(summary.get("pass", "0")) >= 80, output[-8000:]
    for browser in ("chromium", "firefox"):
        assert re.search(rf"^\s*ok \d+ - {browser}\b", output, re.M), output[-8000:]


def test_the_python_quick_start_in_chromium_and_firefox() -> None:
    """examples/python/quickstart.py through tests/node/quickstart.test.mjs: its page in both
    browsers, natively and with UDP blocked, a wrong token, an oversized message, SIGTERM."""
    quickstart = f"{sys.executable} {ROOT / 'examples' / 'python' / 'quickstart.py'}"
    output, summary = _node_suite("tests/node/quickstart.test.mjs", {"FERROVIA_QUICKSTART": quickstart}, 300)
    assert summary.get("fail") == "0" and summary.get("skipped") == "0", output[-8000:]
    assert int(summary.get("pass", "0")) == 4, output[-8000:]
    assert "quick start: quickstart.py" in output, output[-8000:]
