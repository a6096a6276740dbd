"""Reads h2spec's JUnit report and judges it against the listed exceptions.

    python3 tests/conformance/h2spec_summary.py REPORT.xml EXCEPTIONS.txt

Each test is named as h2spec's command line names it: `http2/6.5/1`, `generic/3.2/1`,
`hpack/4.2/1` (the section's package, then the test's place in it). EXCEPTIONS.txt lists
the tests allowed to fail, one per line, `ID  reason` (`#` starts a comment); every
exception is explained in docs/testing.md. Prints `h2spec: N passed, M failed` (skipped
and excepted counted apart), each failure with h2spec's message, and exceptions that
passed (stale). Exits 1 when a test outside the list failed or the report is missing.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET


def load_exceptions(path: str) -> dict[str, str]:
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                test_id, _, reason = line.partition(" ")
                out[test_id] = reason.strip()
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    report, exceptions_path = argv
    exceptions = load_exceptions(exceptions_path)
    try:
        root = ET.parse(report).getroot()
    except (OSError, ET.ParseError) as e:
        print(f"h2spec: no readable report at {report}: {e}")
        return 1
    passed, skipped = 0, 0
    failed: list[tuple[str, str, str, str]] = []
    excepted: list[tuple[str, str, str, str]] = []
    seen = set()
    for suite in root.iter("testsuite"):
        package = suite.get("package") or suite.get("name") or "?"
        for n, case in enumerate(suite.findall("testcase"), start=1):
            test_id = f"{package}/{n}"
            seen.add(test_id)
            title = f"{suite.get('name', '')}: {case.get('classname', '')}".strip()
            problem = case.find("failure")
            if problem is None:
                problem = case.find("error")
            if case.find("skipped") is not None:
                skipped += 1
            elif problem is None:
                passed += 1
            else:
                message = " ".join(((problem.get("message") or "") + " " + (problem.text or "")).split())
                entry = (test_id, title, message, exceptions.get(test_id, ""))
                (excepted if test_id in exceptions else failed).append(entry)
    total = passed + len(failed) + len(excepted) + skipped
    if total == 0:
        print(f"h2spec: the report {report} holds no tests")
        return 1
    print(
        f"h2spec: {passed} passed, {len(failed)} failed"
        f" ({len(excepted)} failed as excepted, {skipped} skipped, {total} in all)"
    )
    for test_id, title, message, _ in failed:
        print(f"  FAILED {test_id} {title}\n    {message}")
    for test_id, title, message, reason in excepted:
        print(f"  excepted {test_id} {title}\n    {message}\n    why: {reason}")
    stale = sorted(set(exceptions) - {e[0] for e in excepted})
    for test_id in stale:
        state = "passed" if test_id in seen else "was not run"
        print(f"  exception {test_id} {state}: remove it from {exceptions_path} and docs/testing.md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
