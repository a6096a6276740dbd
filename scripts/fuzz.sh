#!/usr/bin/env bash
# Fuzzes every parser a peer reaches (fuzz/fuzz_targets/) with cargo-fuzz and libFuzzer.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Builds all targets once, then runs each for SECONDS (default 20), one after the other.
# Fails if any target crashes, panics, leaks, times out on an input or runs out of memory;
# the input that did it is kept under fuzz/artifacts/<target>/.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2
# One input taking this long is a hang, not a slow parser: every target is linear.
TIMEOUT_SECS=10
RSS_LIMIT_MB=2048

secs=${1:-20}
shift || true
cd "$(dirname "$0")/.."

if ! cargo +nightly --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    cargo install cargo-fuzz --locked --force --version "$CARGO_FUZZ_VERSION"
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

build_start=$SECONDS
cargo +nightly fuzz build
echo "built ${#targets[@]} targets in $((SECONDS - build_start)) s"

# New inputs libFuzzer finds go to the first corpus directory: a scratch one, so that the
# checked-in seeds under fuzz/corpus/ stay as they are.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t" "fuzz/corpus/$t"
    log="$scratch/$t.log"
    echo "== $t: ${secs} s"
    status=ok
    if ! cargo +nightly fuzz run "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -timeout="$TIMEOUT_SECS" -rss_limit_mb="$RSS_LIMIT_MB" \
        -print_final_stats=1 >"$log" 2>&1; then
        status=FAILED
        failed+=("$t")
        # The report from the panic or sanitizer message on: the input, the command that
        # reproduces it; stack frames left out (fuzz/artifacts/<target>.log keeps them).
        awk '/panicked at|ERROR: |ALARM: |deadly signal/ { on = 1 }
             on && !/^[[:space:]]*#[0-9]+[[:space:]]/ && !/^[[:space:]]+(at |[0-9]+: )/' \
            "$log" | head -n 60
        mkdir -p fuzz/artifacts && cp "$log" "fuzz/artifacts/$t.log"
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [ -z "$execs" ]; then
        execs=$(grep -oE '^#[0-9]+' "$log" | tail -n 1 | tr -d '#' || true)
    fi
    last=$(grep -E '^#[0-9]+.* cov: ' "$log" | tail -n 1 || true)
    cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
    ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
    summary+=("$(printf '%-10s %-7s %12s %7s %7s' "$t" "$status" "${execs:-?}" "${cov:-?}" "${ft:-?}")")
done

echo
printf '%-10s %-7s %12s %7s %7s\n' target result executions cov ft
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]} (inputs in fuzz/artifacts/)"
    exit 1
fi
