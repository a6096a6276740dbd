"""Single-stream echo throughput through the Python API, next to the Rust core, in one run.

    .venv/bin/python bench/python_throughput.py [--runs 3] [--skip-build]

The load generator (bench/loadgen, a web-transport-quinn client in its own process) sends
256 MiB through one bidirectional stream to two echo servers in turn, interleaved run by
run: the core's echo example (examples/rust/echo.rs) and the Python package's
(examples/python/echo.py, which echoes with ``async for chunk in reader`` /
``writer.write`` / ``await writer.drain()``). The ratio of the two is what the Python layer
costs. The core's in-process figure (``cargo run --release -p ferrovia --example
throughput``) is measured in the same run for reference (docs/benchmarks.md).

The Python server is the installed ``ferrovia`` package of the interpreter running this
script (``pip install .`` builds it in release mode). Prints a JSON summary on its last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str]) -> str:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout


def records(stdout: str) -> list[dict[str, Any]]:
    out = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mib", type=int, default=256, help="MiB for the in-process core figure")
    parser.add_argument("--skip-build", action="store_true")
    args = parser.parse_args()

    if not args.skip_build:
        run(["cargo", "build", "--release", "-p", "ferrovia", "--example", "echo", "--example", "throughput"])
        run(["cargo", "build", "--release", "-p", "ferrovia-bench", "--bin", "loadgen"])

    echo_py = ROOT / "examples" / "python" / "echo.py"
    loadgen_out = run(
        [
            str(ROOT / "target" / "release" / "loadgen"),
            "--only",
            "bulk_single",
            "--runs",
            str(args.runs),
            "--server",
            f"core={ROOT / 'target' / 'release' / 'examples' / 'echo'} --port 0 --host 127.0.0.1",
            "--server",
            f"python={sys.executable} {echo_py} --port 0 --host 127.0.0.1",
        ]
    )
    by_server: dict[str, list[float]] = {}
    for r in records(loadgen_out):
        if r.get("scenario") == "bulk_single" and r.get("ok"):
            by_server.setdefault(r["server"], []).append(float(r["mib_per_s"]))

    inproc_out = run([str(ROOT / "target" / "release" / "examples" / "throughput"), str(args.mib), str(args.runs)])
    inproc = [float(r["mib_per_s"]) for r in records(inproc_out)]

    core = by_server.get("core", [])
    python = by_server.get("python", [])
    if not core or not python:
        sys.exit(f"missing results: core={core} python={python}\n{loadgen_out}")
    summary = {
        "scenario": "bulk_single (256 MiB echoed through one bidi stream, loadgen client)",
        "core_echo_mib_per_s": core,
        "python_echo_mib_per_s": python,
        "python_vs_core_median": round(statistics.median(python) / statistics.median(core), 3),
        "core_in_process_mib_per_s": inproc,
        "python_vs_core_in_process_median": round(statistics.median(python) / statistics.median(inproc), 3),
    }
    print(f"core echo (Rust example):    {', '.join(f'{v:.1f}' for v in core)} MiB/s")
    print(f"python echo (ferrovia pkg):  {', '.join(f'{v:.1f}' for v in python)} MiB/s")
    print(f"core in-process (throughput): {', '.join(f'{v:.1f}' for v in inproc)} MiB/s")
    print(f"python / core (medians): {summary['python_vs_core_median']:.2f}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
