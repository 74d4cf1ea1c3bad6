#!/usr/bin/env bash
# Smoke test of a device build under qemu-user: the aarch64 raftkv-node
# (from scripts/build-device.sh) starts a one-node cluster on 127.0.0.1,
# this machine's raft-admin writes a key through it and reads it back, and
# the node stops cleanly on SIGTERM.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
TARGET=${1:-aarch64-unknown-linux-musl}
case "$TARGET" in
  aarch64-*) QEMU=qemu-aarch64 ;;
  armv7-*) QEMU=qemu-arm ;;
  -h|--help) echo "Usage: scripts/device-smoke.sh [TARGET] (default aarch64-unknown-linux-musl)"; exit 0 ;;
  *) echo "no qemu-user binary known for $TARGET" >&2; exit 2 ;;
esac
NODE="$ROOT/target/$TARGET/device/raftkv-node"
[ -x "$NODE" ] || { echo "no $NODE: run scripts/build-device.sh --target $TARGET first" >&2; exit 2; }
command -v "$QEMU" >/dev/null || { echo "no $QEMU: apt-get install qemu-user" >&2; exit 2; }
(cd "$ROOT" && cargo build -q -p raft-admin)
ADMIN="$ROOT/target/debug/raft-admin"

DIR=$(mktemp -d /tmp/raftkv-device-smoke.XXXXXX)
PID=""
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -KILL "$PID" 2>/dev/null || true; fi
  rm -rf "$DIR"
}
trap cleanup EXIT

"$QEMU" "$NODE" --id 1 --listen 127.0.0.1:0 --data-dir "$DIR/data" --bootstrap \
  >"$DIR/node.out" 2>"$DIR/node.log" &
PID=$!
listening() { grep -q 'listening on' "$DIR/node.out"; }
wait_until 60 "the $TARGET node listens" listening || { cat "$DIR/node.log" >&2; exit 1; }
ADDRESS=$(sed -n 's/^raftkv-node .* listening on //p' "$DIR/node.out" | head -n 1)
wait_until 60 "the $TARGET node leads" "$ADMIN" "$ADDRESS" --timeout 2s leader || { cat "$DIR/node.log" >&2; exit 1; }
"$ADMIN" "$ADDRESS" put device-smoke "written on $TARGET" >/dev/null
value=$("$ADMIN" "$ADDRESS" get device-smoke)
[ "$value" = "written on $TARGET" ] || { echo "read back '$value'" >&2; exit 1; }
kill -TERM "$PID"
status=0
wait "$PID" || status=$?
PID=""
[ "$status" = 0 ] || { echo "the node exited with $status on SIGTERM" >&2; cat "$DIR/node.log" >&2; exit 1; }
echo "device smoke test passed: $TARGET raftkv-node under $QEMU served a write and a read, stopped cleanly"
