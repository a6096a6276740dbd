#!/usr/bin/env bash
# Runs the packet-loss tests (core/tests/loss.rs) on a lossy network: for each loss rate
# (5% and 10% unless FERROVIA_LOSS_PERCENTS says otherwise) a fresh network namespace whose
# loopback drops that share of UDP packets at random, by an nftables rule
# (`numgen random mod 100 < N drop` on the input hook). The kernel here has no netem; nftables needs no
# module beyond nf_tables.
#
# Needs root (network namespaces) and the `ip` and `nft` commands (Debian: iproute2,
# nftables). It fails, never skips, when any of that is missing.
#
# The test binary is built first, outside the namespace, and then run directly inside it.
# Each namespace is deleted on exit, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

percents="${FERROVIA_LOSS_PERCENTS:-5 10}"

fail() {
  echo "test-loss: $*" >&2
  exit 1
}

[[ $(id -u) -eq 0 ]] || fail "must run as root (it creates network namespaces and nftables rules)"
command -v ip >/dev/null || fail "the ip command is missing: apt-get install iproute2"
command -v nft >/dev/null || fail "the nft command is missing: apt-get install nftables"
command -v python3 >/dev/null || fail "python3 is missing (it reads cargo's JSON output)"

echo "== building the loss tests"
bin=$(cargo test --workspace --test loss --no-run --message-format=json |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "loss" and m.get("executable"):
        print(m["executable"])
')
[[ -x "$bin" ]] || fail "cargo did not report the loss test binary"

namespaces=()
cleanup() {
  for ns in "${namespaces[@]}"; do
    ip netns delete "$ns" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for percent in $percents; do
  ns="ferrovia-loss-$$-$percent"
  namespaces+=("$ns")
  echo "== ${percent}% UDP loss on loopback (namespace $ns)"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  # Loopback passes a UDP GSO batch (up to dozens of QUIC packets) as one buffer, and the
  # receiver takes it whole through UDP GRO, so a rule would drop whole batches at once.
  # With at most one segment per buffer, the stack splits every batch before it reaches
  # loopback and the rule sees (and drops) single packets.
  ip -n "$ns" link set lo gso_max_segs 1
  # The drop sits on the input hook, which each loopback packet crosses exactly once. (On
  # the output hook the sender would learn of the drop: sendmsg fails with EPERM, which no
  # real network does.) The first rule counts every UDP packet so the real rate can be
  # printed.
  ip netns exec "$ns" nft -f - <<EOF
table inet ferrovia_loss {
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "lo" meta l4proto udp counter
    iifname "lo" meta l4proto udp numgen random mod 100 < $percent counter drop
  }
}
EOF
  ip netns exec "$ns" nft list chain inet ferrovia_loss input >/dev/null ||
    fail "the drop rule is not in place in $ns"
  started=$SECONDS
  (cd core && ip netns exec "$ns" env FERROVIA_LOSS_PERCENT="$percent" \
    "$bin" --ignored --test-threads=1 --nocapture) || fail "loss tests failed at ${percent}% loss"
  counters=$(ip netns exec "$ns" nft list chain inet ferrovia_loss input |
    grep -o 'packets [0-9]*' | awk '{print $2}' | paste -sd' ')
  read -r seen dropped <<<"$counters"
  echo "== ${percent}%: passed in $((SECONDS - started)) s; the rule dropped $dropped of $seen UDP packets" \
    "($(awk -v d="$dropped" -v s="$seen" 'BEGIN { printf "%.2f", 100 * d / s }')%)"
  ip netns delete "$ns"
done
echo "test-loss: ok"
