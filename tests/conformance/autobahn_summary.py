"""Reads Autobahn|Testsuite fuzzingclient reports and judges them.

    python3 tests/conformance/autobahn_summary.py [--expect N] NAME=DIR/index.json ...

For each NAME prints `autobahn NAME: N passed, M failed` (with the count of each
behaviour). A case passes when its behaviour is OK, NON-STRICT or INFORMATIONAL; anything
else (FAILED, NO_CLOSE, UNIMPLEMENTED, ...) fails and is listed with the report's
`result` and closing-behaviour text; compression (12.* and 13.*) counts like any other
case. `--expect N` also fails a report that holds a different number
of cases (a run cut short). Exits 1 on any failure.
"""

from __future__ import annotations

import json
import os
import sys

PASS = {"OK", "NON-STRICT", "INFORMATIONAL"}


def case_key(case_id: str) -> tuple[int, ...]:
    return tuple(int(p) for p in case_id.split("."))


def judge(name: str, index_path: str, expect: int | None) -> bool:
    if not os.path.exists(index_path):
        print(f"autobahn {name}: no report at {index_path}")
        return False
    with open(index_path, encoding="utf-8") as f:
        index = json.load(f)
    if len(index) != 1:
        print(f"autobahn {name}: expected one agent in {index_path}, found {sorted(index)}")
        return False
    (agent, cases), = index.items()
    counts: dict[str, int] = {}
    failed = []
    for case_id in sorted(cases, key=case_key):
        entry = cases[case_id]
        behavior = entry.get("behavior")
        counts[behavior] = counts.get(behavior, 0) + 1
        if behavior not in PASS:
            failed.append(case_id)
    passed = len(cases) - len(failed)
    detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print(f"autobahn {name}: {passed} passed, {len(failed)} failed ({detail})")
    ok = not failed
    if expect is not None and len(cases) != expect:
        print(f"  expected {expect} cases, the report holds {len(cases)}")
        ok = False
    for case_id in failed:
        entry = cases[case_id]
        report = {}
        path = os.path.join(os.path.dirname(index_path), entry.get("reportfile", ""))
        if entry.get("reportfile") and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                report = json.load(f)
        print(
            f"  {case_id}: behavior {entry.get('behavior')}, close {entry.get('behaviorClose')}"
            f" (remote close code {entry.get('remoteCloseCode')})"
        )
        if report.get("description"):
            print(f"    case: {' '.join(report['description'].split())}")
        if report.get("result"):
            print(f"    result: {report['result']}")
        if report.get("resultClose"):
            print(f"    close: {report['resultClose']}")
    return ok


def main(argv: list[str]) -> int:
    expect = None
    if len(argv) >= 2 and argv[0] == "--expect":
        expect = int(argv[1])
        argv = argv[2:]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    ok = True
    for arg in argv:
        name, sep, path = arg.partition("=")
        if not sep:
            print(f"expected NAME=PATH, got {arg!r}", file=sys.stderr)
            return 2
        ok = judge(name, path, expect) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
