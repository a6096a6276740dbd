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


def test_browser_suite_passes_against_the_python_echo_server() -> None:
    node = shutil.which("node")
    assert node is not None, "node is needed to drive the browsers (see README prerequisites)"
    assert (ROOT / "node_modules" / "playwright-core").is_dir(), "run `npm ci` at the repository root"
    env = dict(os.environ)
    env["FERROVIA_ECHO_BIN"] = sys.executable
    env["FERROVIA_ECHO_ARGS"] = f"{ROOT / 'examples' / 'python' / 'echo.py'} --port 0"
    proc = subprocess.run(
        [node, "--test", "--test-concurrency=1", "tests/browser/"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = proc.stdout + proc.stderr
    summary = dict(re.findall(r"^# (tests|pass|fail|cancelled|skipped) (\d+)$", output, re.M))
    assert proc.returncode == 0, output[-8000:]
    assert int(summary.get("fail", "1")) == 0, output[-8000:]
    assert int(summary.get("skipped", "0")) == 0, output[-8000:]
    # Both browsers ran: every test exists once per browser.
    assert int(summary.get("pass", "0")) >= 80, output[-8000:]
    for browser in ("chromium", "firefox"):
        assert re.search(rf"^\s*ok \d+ - {browser}\b", output, re.M), output[-8000:]


def test_the_python_quick_start_in_chromium_and_firefox() -> None:
    """examples/python/quickstart.py through tests/node/quickstart.test.mjs: its page in both
    browsers, natively and with UDP blocked, a wrong token, an oversized message, SIGTERM."""
    node = shutil.which("node")
    assert node is not None, "node is needed to drive the browsers (see README prerequisites)"
    env = dict(os.environ)
    env["FERROVIA_QUICKSTART"] = f"{sys.executable} {ROOT / 'examples' / 'python' / 'quickstart.py'}"
    proc = subprocess.run(
        [node, "--test", "--test-concurrency=1", "tests/node/quickstart.test.mjs"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    summary = dict(re.findall(r"^# (tests|pass|fail|cancelled|skipped) (\d+)$", output, re.M))
    assert proc.returncode == 0, output[-8000:]
    assert summary.get("fail") == "0" and summary.get("skipped") == "0", output[-8000:]
    assert int(summary.get("pass", "0")) == 4, output[-8000:]
    assert "quick start: quickstart.py" in output, output[-8000:]
