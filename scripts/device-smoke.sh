#!/usr/bin/env bash
# Smoke test of a device build under qemu-user: the raftkv-node that
# scripts/build-device.sh built for TARGET (aarch64 or armv7) starts a
# one-node cluster on 127.0.0.1, this machine's raft-admin writes a key
# through it and reads it back, and the node stops cleanly on SIGTERM.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
TARGET=${1:-aarch64-unknown-linux-musl}
case "$TARGET" in
  -h|--help)
    cat <<TXT
Usage: scripts/device-smoke.sh [TARGET] (default aarch64-unknown-linux-musl)

Runs target/TRIPLE/device/raftkv-node under qemu-user, where TRIPLE is the
triple scripts/build-device.sh --target TARGET built (armv7 may have been
built as dynamic glibc, armv7-unknown-linux-gnueabihf, instead of musl). A
glibc binary runs with the cross glibc of Debian's gcc-arm-linux-gnueabihf
(or gcc-aarch64-linux-gnu) as its root: qemu -L, or \$QEMU_LD_PREFIX if set.
TXT
    exit 0 ;;
esac
# The triple actually built for TARGET, as build-device.sh recorded it.
BUILT=$TARGET
if [ -f "$ROOT/target/device-builds/$TARGET" ]; then
  BUILT=$(cat "$ROOT/target/device-builds/$TARGET")
fi
case "$BUILT" in
  aarch64-*) QEMU=qemu-aarch64; GNU_ROOT=/usr/aarch64-linux-gnu ;;
  armv7-*) QEMU=qemu-arm; GNU_ROOT=/usr/arm-linux-gnueabihf ;;
  *) echo "no qemu-user binary known for $BUILT" >&2; exit 2 ;;
esac
NODE="$ROOT/target/$BUILT/device/raftkv-node"
[ -x "$NODE" ] || { echo "no $NODE: run scripts/build-device.sh --target $TARGET first" >&2; exit 2; }
command -v "$QEMU" >/dev/null || { echo "no $QEMU: apt-get install qemu-user" >&2; exit 2; }
RUN=("$QEMU")
KIND="static musl"
case "$BUILT" in
  *-gnu*)
    # A dynamic glibc binary needs its loader and libc: qemu takes them from
    # the cross toolchain's root, as a board takes them from its /lib.
    PREFIX=${QEMU_LD_PREFIX:-$GNU_ROOT}
    [ -d "$PREFIX/lib" ] || { echo "no $PREFIX/lib for the dynamic glibc $BUILT node: install its cross glibc or set QEMU_LD_PREFIX" >&2; exit 2; }
    RUN=("$QEMU" -L "$PREFIX")
    KIND="dynamic glibc, libraries from $PREFIX"
    ;;
esac
(cd "$ROOT" && cargo build -q -p raft-admin)
ADMIN="$ROOT/target/debug/raft-admin"

DIR=$(mktemp -d /tmp/raftkv-device-smoke.XXXXXX)
PID=""
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -KILL "$PID" 2>/dev/null || true; fi
  rm -rf "$DIR"
}
trap cleanup EXIT

"${RUN[@]}" "$NODE" --id 1 --listen 127.0.0.1:0 --data-dir "$DIR/data" --bootstrap \
  >"$DIR/node.out" 2>"$DIR/node.log" &
PID=$!
listening() { grep -q 'listening on' "$DIR/node.out"; }
wait_until 60 "the $BUILT node listens" listening || { cat "$DIR/node.log" >&2; exit 1; }
ADDRESS=$(sed -n 's/^raftkv-node .* listening on //p' "$DIR/node.out" | head -n 1)
wait_until 60 "the $BUILT node leads" "$ADMIN" "$ADDRESS" --timeout 2s leader || { cat "$DIR/node.log" >&2; exit 1; }
"$ADMIN" "$ADDRESS" put device-smoke "written on $BUILT" >/dev/null
value=$("$ADMIN" "$ADDRESS" get device-smoke)
[ "$value" = "written on $BUILT" ] || { echo "read back '$value'" >&2; exit 1; }
kill -TERM "$PID"
status=0
wait "$PID" || status=$?
PID=""
[ "$status" = 0 ] || { echo "the node exited with $status on SIGTERM" >&2; cat "$DIR/node.log" >&2; exit 1; }
echo "device smoke test passed: $BUILT raftkv-node ($KIND) under $QEMU served a write and a read, stopped cleanly"
