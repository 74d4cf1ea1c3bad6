#!/usr/bin/env bash
# Static raftkv-node (and raft-admin) binaries for devices: the `device`
# profile (size-optimised, fat LTO, stripped, panic = abort) for musl
# targets, linked with Debian's cross compilers. Prints each binary's size.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGETS="aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf"
INSTALL=0
# The node's size budget on a device: 6 MiB stripped, TLS and metrics in.
MAX_NODE_BYTES=$((6 * 1024 * 1024))

usage() {
  cat <<TXT
Usage: scripts/build-device.sh [--install] [--target TRIPLE]...

Builds raftkv-node and raft-admin with --profile device for each target
(default: $TARGETS) into target/TRIPLE/device/.

  --target TRIPLE  build only this target (repeat for more)
  --install        first install what is missing: the rustup target, and
                   Debian's cross compiler (gcc-aarch64-linux-gnu,
                   gcc-arm-linux-gnueabihf; needs root)
  --max-node-bytes N  fail if raftkv-node is larger (default $MAX_NODE_BYTES, 6 MiB)
  -h, --help       this help
TXT
}

chosen=()
while [ $# -gt 0 ]; do
  case "$1" in
    --target) chosen+=("$2"); shift 2 ;;
    --install) INSTALL=1; shift ;;
    --max-node-bytes) MAX_NODE_BYTES=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
[ ${#chosen[@]} -gt 0 ] && TARGETS="${chosen[*]}"

# cross_gcc TRIPLE: Debian's cross compiler for a Rust target triple.
cross_gcc() {
  case "$1" in
    aarch64-unknown-linux-musl) echo aarch64-linux-gnu ;;
    armv7-unknown-linux-musleabihf) echo arm-linux-gnueabihf ;;
    *) echo "no cross compiler known for $1" >&2; return 1 ;;
  esac
}

status=0
for target in $TARGETS; do
  gcc=$(cross_gcc "$target")
  if [ "$INSTALL" = 1 ]; then
    rustup target list --installed | grep -qx "$target" || rustup target add "$target"
    command -v "$gcc-gcc" >/dev/null || apt-get install -y -q "gcc-$gcc" >/dev/null
  fi
  if ! rustup target list --installed | grep -qx "$target"; then
    echo "$target: the Rust standard library for it is not installed (rustup target add $target, or --install)" >&2
    status=1; continue
  fi
  if ! command -v "$gcc-gcc" >/dev/null; then
    echo "$target: no $gcc-gcc (apt-get install the cross compiler, or --install)" >&2
    status=1; continue
  fi
  # cc (for ring's C and assembly) and the final link both use Debian's
  # cross gcc; Rust brings musl's own start files and libc.
  env_name=$(echo "$target" | tr 'a-z-' 'A-Z_')
  cc_name=$(echo "$target" | tr '-' '_')
  echo "building $target…" >&2
  (cd "$ROOT" && env "CARGO_TARGET_${env_name}_LINKER=$gcc-gcc" "CC_${cc_name}=$gcc-gcc" "AR_${cc_name}=$gcc-ar" \
    cargo build -q --profile device --target "$target" -p raftkv-node -p raft-admin)
  for binary in raftkv-node raft-admin; do
    path="$ROOT/target/$target/device/$binary"
    printf '%s %s: %s bytes (%s MiB), %s\n' "$target" "$binary" "$(stat -c %s "$path")" \
      "$(awk -v b="$(stat -c %s "$path")" 'BEGIN {printf "%.2f", b / 1048576}')" \
      "$(file -b "$path" 2>/dev/null | cut -d, -f1-2 || true)"
  done
  node_bytes=$(stat -c %s "$ROOT/target/$target/device/raftkv-node")
  if [ "$node_bytes" -gt "$MAX_NODE_BYTES" ]; then
    echo "$target: raftkv-node is $node_bytes bytes, over the device budget of $MAX_NODE_BYTES" >&2
    status=1
  fi
done
exit $status
