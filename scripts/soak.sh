#!/usr/bin/env bash
# Soak test: scripts/soak.sh [MINUTES]   (default 2)
#
# Runs one Ferrovia server process (`loadgen soak-server`) and a churning client
# (`loadgen soak`, web-transport-quinn and plain quinn, tokio-tungstenite and the qmux crate
# on the TCP side) against it for MINUTES. The churn mixes, at 20 operations a second
# (SOAK_RATE), sessions that echo streams both ways and datagrams and then close with a
# code; sessions whose client vanishes mid-transfer without a packet; QUIC connections that
# never ask for a session; CONNECTs answered 403 (by the application) or 404 (by the
# server); plain WebSockets and QMux sessions over TLS on TCP that echo and close with a
# code; and WebSocket clients that drop their connection mid-message or go silent until
# the server closes them. See bench/loadgen/src/soak.rs.
#
# The server samples its resident memory (VmRSS), open sessions, open connections and open
# file descriptors every 5 s; the script prints a row at start and each minute. After the
# client stops the script waits 15 s (the server closes silent connections after 5 s and
# sessionless ones after 2 s) and takes a last sample. The run is flat, and the script exits 0, when:
#   - the client saw no failure (every echo intact, every refusal the expected status,
#     every sessionless connection closed by the server);
#   - sessions and connections are back to 0;
#   - open descriptors are within 5 of the first sample (one UDP socket serves every
#     connection, so any growth is a leak);
#   - RSS is flat: the median of the last minute's samples (one every 5 s), and the RSS
#     after the stop, are at most 1.25 x the baseline + 8 MiB, where the baseline is the
#     median of the samples from 30 to 60 s (after warm-up: the allocator has reached the
#     working set of this mix within 30 s). The working set is bounded by the client's
#     concurrency (at most 48 operations at once, each up to a few MiB of stream
#     buffers, an abandoned connection's for 5 s), so later minutes differ from the
#     baseline only by where the churn lands and by fragmentation: single samples swing
#     by up to 2x when several abandoned connections linger at once, medians of a minute
#     by a few percent. 25% covers that; 8 MiB covers fixed costs that come late (a timer
#     wheel growing, thread-local caches). A leak of 400 bytes per operation (72,000 an
#     hour) exceeds the bound within the hour-long run; the 2-minute run catches only
#     gross leaks.
#
# Logs land in target/soak/. Exit status: 0 flat, 1 not flat or the client failed,
# 2 usage.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes="${1:-2}"
[[ "$minutes" =~ ^[1-9][0-9]*$ ]] || {
  echo "usage: scripts/soak.sh [MINUTES]" >&2
  exit 2
}
rate="${SOAK_RATE:-20}"
command -v python3 >/dev/null || {
  echo "soak: python3 is missing (it reads the server's JSON samples)" >&2
  exit 1
}

out=target/soak
mkdir -p "$out"
cargo build --workspace --bins --examples
# A private copy: a rebuild of target/debug/loadgen during a long soak must not matter.
bin="$out/loadgen-$$"
cp target/debug/loadgen "$bin"
log="$out/server-$$.jsonl"
client_log="$out/client-$$.json"
report="$out/report-$$.py"

"$bin" soak-server --every 5 >"$log" 2>"$out/server-$$.err" &
server=$!
tailer=
cleanup() {
  [[ -z "$tailer" ]] || kill "$tailer" 2>/dev/null || true
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -f "$bin" "$report"
}
trap cleanup EXIT

for _ in $(seq 200); do
  [[ -s "$log" ]] && break
  kill -0 "$server" 2>/dev/null || {
    echo "soak: the server exited at once:" >&2
    cat "$out/server-$$.err" >&2
    exit 1
  }
  sleep 0.1
done
read -r port hash < <(head -1 "$log" | python3 -c '
import json, sys
m = json.load(sys.stdin)
print(m["port"], m["certificateHash"])')

# Reads the server's samples (one every 5 s): `live` prints one row per minute as they
# come; `final LOG MINUTES` prints the table and checks that the run is flat.
cat >"$report" <<'EOF'
import json, statistics, sys

def samples(lines):
    for line in lines:
        if '"sample"' in line:
            yield json.loads(line)

def mib(kib):
    return kib / 1024

def row(name, at, rss):
    # at: the sample that ends the period; rss: the RSS samples of the period (KiB).
    lo, med, hi = min(rss), statistics.median(rss), max(rss)
    return (f"| {name} | {at['t']:.0f} | {mib(med):.1f} | {mib(lo):.1f}–{mib(hi):.1f} | {at['sessions']} "
            f"| {at['connections']} | {at['fds']} | {at['accepted']} | {at['closed_with_code']} "
            f"| {at['closed_by_connection']} | {at['rejected']} |")

HEADER = ("| sample | t (s) | RSS median (MiB) | RSS range | sessions | connections | fds | accepted "
          "| closed with code | ended with connection | rejected 403 |\n"
          "| --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |")

def minutes_of(rows, until):
    # Rows grouped by minute: minute k holds the samples with (k-1)*60 < t <= k*60.
    out = {}
    for r in rows:
        if 0 < r["t"] <= until + 2.5:
            out.setdefault(int((r["t"] - 2.5) // 60) + 1, []).append(r)
    return out

if sys.argv[1] == "live":
    minute, rss = 1, []
    print(HEADER, flush=True)
    for r in samples(sys.stdin):
        if r["t"] < 2.5:
            print(row("start", r, [r["rss_kib"]]), flush=True)
            continue
        rss.append(r["rss_kib"])
        if r["t"] >= minute * 60 - 2.5:
            print(row(f"minute {minute}", r, rss), flush=True)
            minute, rss = minute + 1, []
    sys.exit(0)

log, minutes = sys.argv[2], int(sys.argv[3])
rows = list(samples(open(log)))
start, end = rows[0], rows[-1]
by_minute = minutes_of(rows[:-1], minutes * 60)
if sorted(by_minute)[:minutes] != list(range(1, minutes + 1)):
    sys.exit(f"soak: samples missing: minutes {sorted(by_minute)} of {minutes}")
print(HEADER)
print(row("start", start, [start["rss_kib"]]))
for k in range(1, minutes + 1):
    print(row(f"minute {k}", by_minute[k][-1], [r["rss_kib"] for r in by_minute[k]]))
print(row("15 s after stop", end, [end["rss_kib"]]))
print()
med = {k: statistics.median(r["rss_kib"] for r in by_minute[k]) for k in range(1, minutes + 1)}
# The baseline leaves out the first 30 s, while the churn ramps up to its working set.
baseline = statistics.median(r["rss_kib"] for r in by_minute[1] if r["t"] > 32.5)
bound = 1.25 * baseline + 8 * 1024
max_fds = max(r["fds"] for r in rows)
checks = [
    (end["sessions"] == 0, f"sessions at the end: {end['sessions']} (want 0)"),
    (end["connections"] == 0, f"connections at the end: {end['connections']} (want 0)"),
    (end["fds"] <= start["fds"] + 5,
     f"descriptors: {start['fds']} at start, {end['fds']} at the end, at most {max_fds} (want the end within +5)"),
    (med[minutes] <= bound,
     f"RSS median of minute {minutes}: {mib(med[minutes]):.1f} MiB, bound 1.25 x {mib(baseline):.1f} (median of 30-60 s) + 8 = {mib(bound):.1f} MiB"),
    (end["rss_kib"] <= bound, f"RSS after the stop: {mib(end['rss_kib']):.1f} MiB, bound {mib(bound):.1f} MiB"),
    (end["closed_with_code"] > 0 and end["closed_by_connection"] > 0 and end["rejected"] > 0,
     f"the mix ran: {end['closed_with_code']} sessions closed with a code, "
     f"{end['closed_by_connection']} ended with their connection, {end['rejected']} rejected with 403"),
]
failed = False
for ok, text in checks:
    print(("ok   " if ok else "FAIL ") + text)
    failed |= not ok
sys.exit(1 if failed else 0)
EOF

echo "soak: ${minutes} min against pid $server on 127.0.0.1:$port, $rate operations/s; logs in $out/"
# One row per minute as the samples come.
tail -n +2 -f --pid="$server" "$log" | python3 -u "$report" live &
tailer=$!
client_status=0
"$bin" soak --port "$port" --hash "$hash" --seconds $((minutes * 60)) --rate "$rate" \
  >"$client_log" || client_status=$?
echo "soak: client done (status $client_status): $(cat "$client_log")"
echo "soak: waiting 15 s for abandoned and sessionless connections to time out"
sleep 15
before=$(grep -c '"sample"' "$log")
kill -USR1 "$server"
for _ in $(seq 100); do
  [[ $(grep -c '"sample"' "$log") -gt $before ]] && break
  sleep 0.1
done
kill "$server"
wait "$server" 2>/dev/null || true
wait "$tailer" 2>/dev/null || true
tailer=

echo
verdict=0
python3 "$report" final "$log" "$minutes" || verdict=1
if [[ $client_status -ne 0 ]]; then
  echo "FAIL the client reported failures (see above and $client_log)"
  verdict=1
fi
if [[ $verdict -ne 0 ]]; then
  echo "soak: NOT FLAT" >&2
  exit 1
fi
echo "soak: flat"
