#!/usr/bin/env bash
# raftkv-node (and raft-admin) binaries for devices: the `device` profile
# (size-optimised, fat LTO, stripped, panic = abort), linked with Debian's
# cross compilers. Prints each binary's size and what it needs on the board.
#
# A target is built with the stable toolchain when rustup has its standard
# library. Where rustup cannot download armv7's (its server answers 404 on
# some machines), std is built from source with nightly's `-Z build-std`:
# static musl when musl for armhf is installed (musl-dev:armhf), else
# dynamic glibc (armv7-unknown-linux-gnueabihf) for Debian-based boards.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGETS="aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf"
INSTALL=0
CHECK=0
NIGHTLY=${RAFTKV_DEVICE_NIGHTLY:-nightly}
# musl for armhf as Debian's multiarch musl-dev:armhf installs it.
ARMHF_MUSL_LIB=/usr/lib/arm-linux-musleabihf
# The node's size budget on a device: 6 MiB stripped, TLS and metrics in.
MAX_NODE_BYTES=$((6 * 1024 * 1024))
# Exit status when a target cannot be built on this machine (no standard
# library for it and no way to build one), so that callers can skip it.
UNAVAILABLE=3

usage() {
  cat <<TXT
Usage: scripts/build-device.sh [--install] [--check] [--target TRIPLE]...

Builds raftkv-node and raft-admin with --profile device for each target
(default: $TARGETS) into target/TRIPLE/device/.

armv7 without a stable standard library (rustup target add fails): std is
built from source with '$NIGHTLY' (-Z build-std; needs its rust-src):
  armv7-unknown-linux-musleabihf  static musl, when musl for armhf is
                   installed ($ARMHF_MUSL_LIB, Debian's musl-dev:armhf);
                   else it falls back to:
  armv7-unknown-linux-gnueabihf   dynamic glibc (for Debian-based boards:
                   needs /lib/ld-linux-armhf.so.3 and the glibc version printed)
The triple actually built is recorded in target/device-builds/TRIPLE, where
scripts/device-smoke.sh finds it.

  --target TRIPLE  build only this target (repeat for more)
  --install        first install what is missing: the rustup target (or, for
                   armv7, nightly's rust-src), and Debian's cross compiler
                   (gcc-aarch64-linux-gnu, gcc-arm-linux-gnueabihf) and
                   musl-dev:armhf (adds dpkg's armhf architecture; needs root)
  --check          build nothing: print the way each target would be built,
                   or why it cannot be here
  --max-node-bytes N  fail if raftkv-node is larger (default $MAX_NODE_BYTES, 6 MiB)
  -h, --help       this help

Exit status: 0 built (or --check: buildable), 1 a build failed or is over
the budget, 2 bad usage, $UNAVAILABLE a target cannot be built on this machine
(its reason is the last line printed on stderr).
Environment: RAFTKV_DEVICE_NIGHTLY  the nightly toolchain for -Z build-std
(default nightly).
TXT
}

chosen=()
while [ $# -gt 0 ]; do
  case "$1" in
    --target) [ $# -ge 2 ] || { usage >&2; exit 2; }; chosen+=("$2"); shift 2 ;;
    --install) INSTALL=1; shift ;;
    --check) CHECK=1; shift ;;
    --max-node-bytes) [ $# -ge 2 ] || { usage >&2; exit 2; }; MAX_NODE_BYTES=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
[ ${#chosen[@]} -gt 0 ] && TARGETS="${chosen[*]}"

# cross_gcc TRIPLE: Debian's cross compiler for a Rust target triple.
cross_gcc() {
  case "$1" in
    aarch64-unknown-linux-musl) echo aarch64-linux-gnu ;;
    armv7-unknown-linux-musleabihf|armv7-unknown-linux-gnueabihf) echo arm-linux-gnueabihf ;;
    *) echo "no cross compiler known for $1" >&2; return 1 ;;
  esac
}

has_stable_std() { rustup target list --installed 2>/dev/null | grep -qx "$1"; }
has_nightly_src() { rustup component list --toolchain "$NIGHTLY" --installed 2>/dev/null | grep -qx rust-src; }
can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

# musl_armhf_missing GCC: what static musl armv7 still lacks here, or nothing.
# Rust's own armv7 musl standard library brings musl's start files, libc.a
# and libunwind.a; std built from source brings none of them, so they come
# from Debian's musl for armhf, and the unwinder from the cross gcc's
# libgcc_eh (only backtraces use it: the device profile aborts on panic).
musl_armhf_missing() {
  local f missing=()
  for f in crt1.o crti.o crtn.o libc.a; do
    [ -f "$ARMHF_MUSL_LIB/$f" ] || missing+=("$ARMHF_MUSL_LIB/$f")
  done
  command -v "$1-gcc" >/dev/null && [ -f "$("$1-gcc" -print-file-name=libgcc_eh.a)" ] \
    || missing+=("libgcc_eh.a of $1-gcc")
  [ ${#missing[@]} = 0 ] || echo "${missing[*]} (Debian's musl-dev:armhf)"
}

# first_error LOG: the first line of LOG that says what went wrong.
first_error() { grep -m 1 -iE 'error|404|could not|unable' "$1" 2>/dev/null || tail -n 1 "$1" 2>/dev/null || true; }

# install_for TRIPLE: --install's work for one target; notes what failed in
# the variables the build plan reads (stable_error, nightly_error).
stable_error=""
nightly_error=""
install_for() {
  local target=$1 gcc log
  gcc=$(cross_gcc "$target")
  log=$(mktemp)
  if ! has_stable_std "$target"; then
    rustup target add "$target" >"$log" 2>&1 || stable_error=$(first_error "$log")
  fi
  if [[ "$target" == armv7-* ]] && ! has_stable_std "$target" && ! has_nightly_src; then
    if rustup toolchain list | grep -q "^$NIGHTLY"; then
      rustup component add rust-src --toolchain "$NIGHTLY" >"$log" 2>&1 || nightly_error=$(first_error "$log")
    else
      rustup toolchain install "$NIGHTLY" --profile minimal --component rust-src >"$log" 2>&1 \
        || nightly_error=$(first_error "$log")
    fi
  fi
  rm -f "$log"
  if can_apt; then
    command -v "$gcc-gcc" >/dev/null || apt-get install -y -q "gcc-$gcc" >/dev/null || true
    if [ "$target" = armv7-unknown-linux-musleabihf ] && ! has_stable_std "$target" \
      && [ -n "$(musl_armhf_missing "$gcc")" ]; then
      # musl for armhf is a multiarch package: apt needs armhf's lists.
      if ! dpkg --print-foreign-architectures | grep -qx armhf; then
        dpkg --add-architecture armhf && { apt-get update -q >/dev/null || true; }
      fi
      apt-get install -y -q musl-dev:armhf >/dev/null 2>&1 \
        || echo "$target: could not install musl-dev:armhf; armv7 falls back to dynamic glibc" >&2
    fi
  fi
}

# plan TRIPLE: sets `way` (stable, build-std) and `built` (the triple cargo
# builds), or prints why TRIPLE cannot be built here and returns 1.
plan() {
  local target=$1 gcc missing why
  gcc=$(cross_gcc "$target")
  if ! command -v "$gcc-gcc" >/dev/null; then
    echo "$target: no $gcc-gcc (apt-get install gcc-$gcc, or --install)" >&2
    return 1
  fi
  way=stable; built=$target
  if has_stable_std "$target"; then return 0; fi
  why="rustup has no standard library for $target${stable_error:+ (rustup target add: $stable_error)}"
  if [[ "$target" != armv7-* ]]; then
    echo "$target: $why; run rustup target add $target, or --install" >&2
    return 1
  fi
  if ! has_nightly_src; then
    echo "$target: $why, and toolchain $NIGHTLY with rust-src, to build std from source, is not installed${nightly_error:+ ($nightly_error)}" >&2
    return 1
  fi
  way="build-std"
  if [ "$target" = armv7-unknown-linux-musleabihf ]; then
    missing=$(musl_armhf_missing "$gcc")
    if [ -n "$missing" ]; then
      echo "$target: no musl for armhf here, missing $missing: building dynamic glibc armv7-unknown-linux-gnueabihf instead" >&2
      built=armv7-unknown-linux-gnueabihf
    fi
  fi
}

# describe TRIPLE WAY: one line saying how TRIPLE is built.
describe() {
  local how
  case "$1" in
    *-musl*) how="static musl" ;;
    *) how="dynamic glibc" ;;
  esac
  case "$2" in
    stable) echo "$1: $how, stable toolchain with rustup's standard library" ;;
    *) echo "$1: $how, std built from source with $NIGHTLY (-Z build-std=std,panic_abort)" ;;
  esac
}

# glibc_needed BINARY GCC: the newest GLIBC_ symbol version BINARY asks for.
glibc_needed() {
  "$2-readelf" -V "$1" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1
}

status=0
unavailable=0
mkdir -p "$ROOT/target/device-builds"
for target in $TARGETS; do
  stable_error=""; nightly_error=""
  gcc=$(cross_gcc "$target") || { status=1; continue; }
  [ "$INSTALL" = 1 ] && install_for "$target"
  if ! plan "$target"; then
    unavailable=1; continue
  fi
  describe "$built" "$way" >&2
  [ "$CHECK" = 1 ] && continue

  # cc (for ring's C and assembly) and the final link both use Debian's
  # cross gcc; rustup's musl standard library brings musl's own start files
  # and libc.
  env_name=$(echo "$built" | tr 'a-z-' 'A-Z_')
  cc_name=$(echo "$built" | tr '-' '_')
  build=(env "CARGO_TARGET_${env_name}_LINKER=$gcc-gcc" "CC_${cc_name}=$gcc-gcc" "AR_${cc_name}=$gcc-ar")
  cargo=(cargo)
  if [ "$way" = build-std ]; then
    cargo=(cargo "+$NIGHTLY")
    std=(-Z "build-std=std,panic_abort")
    if [ "$built" = armv7-unknown-linux-musleabihf ]; then
      # Link against musl for armhf instead of the start files and libc that
      # rustup's standard library would have brought, with libgcc_eh as the
      # libunwind.a that std's unwind crate names.
      link_dir="$ROOT/target/$built/musl-link"
      mkdir -p "$link_dir"
      ln -sf "$("$gcc-gcc" -print-file-name=libgcc_eh.a)" "$link_dir/libunwind.a"
      build+=("CARGO_TARGET_${env_name}_RUSTFLAGS=-C link-self-contained=no -C link-arg=-B$ARMHF_MUSL_LIB -L native=$ARMHF_MUSL_LIB -L native=$link_dir")
    fi
  else
    std=()
  fi
  rm -f "$ROOT/target/device-builds/$target"
  echo "building $built…" >&2
  # The node on its own: its `device` feature (debug and trace logging
  # compiled out) reaches the libraries only when it is built alone.
  if ! (cd "$ROOT" && "${build[@]}" "${cargo[@]}" build -q --profile device --target "$built" "${std[@]}" \
    -p raftkv-node --features device \
    && "${build[@]}" "${cargo[@]}" build -q --profile device --target "$built" "${std[@]}" -p raft-admin); then
    echo "$built: the build failed" >&2
    status=1; continue
  fi
  for binary in raftkv-node raft-admin; do
    path="$ROOT/target/$built/device/$binary"
    printf '%s %s: %s bytes (%s MiB), %s\n' "$built" "$binary" "$(stat -c %s "$path")" \
      "$(awk -v b="$(stat -c %s "$path")" 'BEGIN {printf "%.2f", b / 1048576}')" \
      "$(file -b "$path" 2>/dev/null | cut -d, -f1-2 || true)"
  done
  node="$ROOT/target/$built/device/raftkv-node"
  case "$built" in
    *-gnu*)
      interpreter=$("$gcc-readelf" -l "$node" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
      echo "$built raftkv-node: dynamic glibc: needs $interpreter and glibc >= $(glibc_needed "$node" "$gcc" | sed 's/GLIBC_//') on the board"
      ;;
    *) echo "$built raftkv-node: static musl: needs nothing on the board but Linux" ;;
  esac
  echo "$built" >"$ROOT/target/device-builds/$target"
  node_bytes=$(stat -c %s "$node")
  if [ "$node_bytes" -gt "$MAX_NODE_BYTES" ]; then
    echo "$built: raftkv-node is $node_bytes bytes, over the device budget of $MAX_NODE_BYTES" >&2
    status=1
  fi
done
[ "$status" = 0 ] && [ "$unavailable" = 1 ] && exit $UNAVAILABLE
exit $status
