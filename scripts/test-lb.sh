#!/usr/bin/env bash
# Runs core/tests/lb.rs: two Ferrovia fleet members behind a load balancer that routes QUIC
# by connection ID, built from network namespaces, veth pairs and nftables on this machine.
#
#   client ns              load-balancer ns                        server ns
#   10.77.1.2  --veth--  10.77.1.1 (VIP, routes by CID)    --veth--  10.77.2.2 member 1
#                        10.77.1.10 (VIP, 4-tuple hash only)         10.77.2.3 member 2
#                        10.77.2.1
#
# The balancer DNATs: a short-header packet (first bit 0) goes to the member whose server
# ID sits in the byte after the connection ID's first octet (UDP payload byte 2); anything
# else (long headers: the handshake, whose connection ID the client chose) goes by a hash
# of the source address and port. conntrack keeps a flow on its first choice, so only a
# new 4-tuple (a client that moved) is routed afresh, as in a stateless QUIC-LB balancer.
#
# Needs root and the ip and nft commands (Debian: iproute2, nftables); it fails, never
# skips, without them. Everything it creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
  echo "test-lb: $*" >&2
  exit 1
}

[[ $(id -u) -eq 0 ]] || fail "must run as root (it creates network namespaces and nftables rules)"
command -v ip >/dev/null || fail "the ip command is missing: apt-get install iproute2"
command -v nft >/dev/null || fail "the nft command is missing: apt-get install nftables"
command -v python3 >/dev/null || fail "python3 is missing (it reads cargo's JSON output)"

echo "== building the load-balancer tests and the fleet example"
# `--workspace` keeps the feature set of the workspace's own test build: nothing recompiles.
artefacts=$(cargo test --workspace --test lb --no-run --message-format=json &&
  cargo build --workspace --bins --examples --message-format=json)
read -r test_bin fleet_bin < <(python3 -c '
import json, sys
found = {}
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        found[m["target"]["name"]] = m["executable"]
print(found.get("lb", ""), found.get("fleet", ""))
' <<<"$artefacts")
[[ -x "$test_bin" && -x "$fleet_bin" ]] || fail "cargo did not report the lb test and fleet example binaries"

tag=$$
cl="ferrovia-lb-client-$tag"
lb="ferrovia-lb-$tag"
sv="ferrovia-lb-servers-$tag"
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for ns in "$cl" "$lb" "$sv"; do ip netns delete "$ns" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for ns in "$cl" "$lb" "$sv"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
# veth names are per namespace once moved, but are created in the root namespace first:
# the tag keeps parallel runs apart (15 characters at most).
ip link add "flc$tag" netns "$cl" type veth peer name "flb$tag" netns "$lb"
ip link add "fls$tag" netns "$sv" type veth peer name "flr$tag" netns "$lb"
ip -n "$cl" addr add 10.77.1.2/24 dev "flc$tag"
ip -n "$lb" addr add 10.77.1.1/24 dev "flb$tag"
ip -n "$lb" addr add 10.77.1.10/24 dev "flb$tag"
ip -n "$lb" addr add 10.77.2.1/24 dev "flr$tag"
ip -n "$sv" addr add 10.77.2.2/24 dev "fls$tag"
ip -n "$sv" addr add 10.77.2.3/24 dev "fls$tag"
for link in "$cl flc$tag" "$lb flb$tag" "$lb flr$tag" "$sv fls$tag"; do
  read -r ns dev <<<"$link"
  ip -n "$ns" link set "$dev" up
done
ip -n "$cl" route add default via 10.77.1.1
ip -n "$sv" route add default via 10.77.2.1
ip netns exec "$lb" sysctl -qw net.ipv4.ip_forward=1

ip netns exec "$lb" nft -f - <<'EOF'
table ip ferrovia_lb {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    # Short header: the member named by the connection ID's server-ID byte.
    ip daddr 10.77.1.1 udp dport 4433 @th,64,1 0 counter dnat to @th,80,8 map { 1 : 10.77.2.2, 2 : 10.77.2.3 }
    # Long header, or a server ID no member has: a hash of the 4-tuple.
    ip daddr 10.77.1.1 udp dport 4433 counter dnat to jhash ip saddr . udp sport mod 2 map { 0 : 10.77.2.2, 1 : 10.77.2.3 }
    # The same members behind a balancer that knows nothing of QUIC.
    ip daddr 10.77.1.10 udp dport 4433 counter dnat to jhash ip saddr . udp sport mod 2 map { 0 : 10.77.2.2, 1 : 10.77.2.3 }
  }
}
EOF

# Starts member $1 (server ID and last address byte - 1) and records its pid and hash.
start_member() {
  local id=$1 out="$work/member-$1.log"
  ip netns exec "$sv" "$fleet_bin" --host "10.77.2.$((id + 1))" --port 4433 --server-id "$id" \
    --names 10.77.1.1,10.77.1.10 --fleet-secret "ferrovia-lb-test-secret-of-32-bytes" >>"$out" 2>&1 &
  pids[id - 1]=$!
  for _ in $(seq 100); do
    [[ $(grep -c '"listening"' "$out") -ge ${2:-1} ]] && break
    kill -0 "${pids[id - 1]}" 2>/dev/null || { cat "$out" >&2; fail "member $id exited"; }
    sleep 0.1
  done
  hashes[id - 1]=$(grep -o '"certificateHash":"[0-9a-f]*"' "$out" | tail -1 | cut -d'"' -f4)
  [[ -n ${hashes[id - 1]} ]] || { cat "$out" >&2; fail "member $id did not report listening"; }
}
echo "== starting fleet members 1 and 2"
hashes=()
start_member 1
start_member 2

failed() {
  ip netns exec "$lb" nft list table ip ferrovia_lb >&2
  for id in 1 2; do echo "-- member $id" >&2; cat "$work/member-$id.log" >&2; done
  fail "$1"
}
in_client() {
  (cd core && ip netns exec "$cl" env \
    FERROVIA_LB_VIP=10.77.1.1:4433 \
    FERROVIA_LB_TUPLE_VIP=10.77.1.10:4433 \
    FERROVIA_LB_HASHES="$(IFS=,; echo "${hashes[*]}")" \
    FERROVIA_LB_PIDS="1=${pids[0]},2=${pids[1]}" \
    "$test_bin" --ignored --test-threads=1 --nocapture "$@")
}
started=$SECONDS
in_client --exact sessions_survive_address_changes_behind_a_connection_id_load_balancer ||
  failed "sessions did not survive address changes"
# A deploy: the member holding a session gets SIGTERM, drains and exits; then it starts
# again with the same server ID and fleet secret.
in_client --exact a_restarting_member_finishes_its_sessions_without_losing_a_message ||
  failed "the restart test failed"
stopped=$(grep -l '"drained","clean":true' "$work"/member-*.log) ||
  failed "no member reports a clean drain after SIGTERM"
id=$(basename "$stopped" .log)
id=${id#member-}
echo "== member $id drained and exited; starting it again"
start_member "$id" 2
# Last: it leaves a broken session behind on one member until its idle timeout.
in_client --exact without_connection_id_routing_an_address_change_breaks_sessions ||
  failed "a balancer hashing 4-tuples did not break a moving session"
echo "== passed in $((SECONDS - started)) s; rule counters (by CID, by hash, hash-only VIP):" \
  "$(ip netns exec "$lb" nft list chain ip ferrovia_lb prerouting | grep -o 'packets [0-9]*' | awk '{print $2}' | paste -sd' ')"
echo "test-lb: ok"
