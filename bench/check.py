"""Checks a load generator JSON log: every server ran every scenario and every figure parses.

    python3 bench/check.py RESULTS.jsonl SERVER[,SERVER…] RECORD[,RECORD…] [SERVER=RECORD[,RECORD…] …]

Every SERVER must have a successful record of each RECORD; a trailing SERVER=RECORDS
argument asks that one server for more (the scenarios only it can run, such as the
WebSocket and QMux ones on the core). Exits non-zero, naming what is missing or broken,
otherwise prints one line per server.
"""

import json
import math
import sys


def main() -> int:
    path, servers, names = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(",")
    extra = {}
    for arg in sys.argv[4:]:
        server, _, more = arg.partition("=")
        extra.setdefault(server, []).extend(more.split(","))
    seen = {}
    problems = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"line {n}: not JSON ({e})")
                continue
            key = (rec.get("server"), rec.get("scenario"))
            if not rec.get("ok"):
                problems.append(f"{key[0]} {key[1]}: failed: {rec.get('error', '?').splitlines()[0]}")
                continue
            figures = {k: v for k, v in rec.items() if k not in ("server", "scenario", "run", "mode", "ok")}
            bad = [k for k, v in figures.items() if not isinstance(v, (int, float)) or not math.isfinite(v)]
            if not figures or bad:
                problems.append(f"{key[0]} {key[1]}: figures missing or not numbers: {bad or 'none'}")
                continue
            seen[key] = figures
    for server in servers + [s for s in extra if s not in servers]:
        wanted = (names if server in servers else []) + extra.get(server, [])
        missing = [name for name in wanted if (server, name) not in seen]
        if missing:
            problems.append(f"{server}: no successful record for {', '.join(missing)}")
        else:
            print(f"{server}: {len(wanted)} scenarios ok")
    for p in problems:
        print(f"bench smoke: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
