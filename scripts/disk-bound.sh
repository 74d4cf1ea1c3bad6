#!/usr/bin/env bash
# Disk use of a 3-node raftkv cluster under many writes over few keys: the
# data directories must stay bounded (snapshots and log compaction), however
# many writes go through. Prints each node's data directory size every 10 s
# during the run and at the end, against the live data size.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OPS=1000000
KEYS=1000
VALUE_SIZE=256
CLIENTS=64

usage() {
  cat <<TXT
Usage: scripts/disk-bound.sh [--ops N] [--keys N] [--value-size BYTES] [--clients N]

Starts 3 release nodes on loopback in a temporary directory (removed at the
end), runs hammer for --ops writes (default 1,000,000) over --keys keys
(default 1,000) of --value-size bytes (default 256), and reports the data
directories' sizes. Builds the release binaries first.
TXT
}

while [ $# -gt 0 ]; do
  case "$1" in
    --ops) OPS=$2; shift 2 ;;
    --keys) KEYS=$2; shift 2 ;;
    --value-size) VALUE_SIZE=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

cargo build --release --quiet -p raftkv-node -p raft-admin -p hammer --manifest-path "$ROOT/Cargo.toml"
BIN="$ROOT/target/release"
DIR=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

address_of() {
  local out=$1 address=""
  for _ in $(seq 100); do
    address=$(sed -n 's/.*listening on //p' "$out" | head -1)
    [ -n "$address" ] && break
    sleep 0.1
  done
  [ -n "$address" ] || { echo "node did not start: $(cat "$out")" >&2; exit 1; }
  echo "$address"
}

"$BIN/raftkv-node" --id 1 --listen 127.0.0.1:0 --data-dir "$DIR/d1" --bootstrap >"$DIR/out1" 2>"$DIR/err1" &
PIDS+=($!)
A1=$(address_of "$DIR/out1")
for id in 2 3; do
  "$BIN/raftkv-node" --id "$id" --listen 127.0.0.1:0 --data-dir "$DIR/d$id" --join "$A1" >"$DIR/out$id" 2>"$DIR/err$id" &
  PIDS+=($!)
done
A2=$(address_of "$DIR/out2")
A3=$(address_of "$DIR/out3")
ENDPOINTS="$A1,$A2,$A3"
for _ in $(seq 300); do
  voters=$("$BIN/raft-admin" --leader "$ENDPOINTS" get_configuration 2>/dev/null | grep -c Voter || true)
  [ "$voters" = 3 ] && break
  sleep 0.1
done
[ "$voters" = 3 ] || { echo "the cluster did not reach 3 voters" >&2; exit 1; }
echo "3 voters at $ENDPOINTS; $OPS writes of $VALUE_SIZE B over $KEYS keys, $CLIENTS clients"

size_kb() { du -sk "$1" | cut -f1; }
"$BIN/hammer" --endpoints "$ENDPOINTS" --clients "$CLIENTS" --ops "$OPS" --value-size "$VALUE_SIZE" \
  --keys "$KEYS" >"$DIR/hammer.txt" 2>&1 &
HAMMER=$!
MAX=0
while kill -0 "$HAMMER" 2>/dev/null; do
  sizes=""
  for id in 1 2 3; do
    kb=$(size_kb "$DIR/d$id")
    [ "$kb" -gt "$MAX" ] && MAX=$kb
    sizes="$sizes node $id ${kb} kB"
  done
  echo "$(date +%T)$sizes"
  sleep 10
done
wait "$HAMMER" || { echo "hammer failed:"; cat "$DIR/hammer.txt"; exit 1; } >&2
head -1 "$DIR/hammer.txt"
LIVE_KB=$(( (KEYS * (VALUE_SIZE + 16)) / 1024 ))
"$BIN/raft-admin" --leader "$ENDPOINTS" stats | grep -E "last_log_index|snapshot_index|keys" || true
for id in 1 2 3; do
  echo "node $id: data directory $(size_kb "$DIR/d$id") kB at the end"
done
echo "largest data directory during the run: $MAX kB; live data about $LIVE_KB kB ($KEYS keys)"
