#!/usr/bin/env bash
# A follower wiped and re-added under write load catches up by snapshot:
# how long the transfer takes, the leader's and the follower's peak RSS
# meanwhile, and the longest write gap clients saw.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FILL_SECONDS=60
LOAD_SECONDS=60
BASE_PORT=28751
KEEP=""

usage() {
  cat <<TXT
Usage: scripts/snapshot-transfer.sh [--fill-seconds N] [--load-seconds N] [--base-port PORT] [--keep]

Starts a 3-node cluster (scripts/cluster.sh, release build) in a temporary
directory, fills it with hammer (64 write-only clients, 1 KiB values over
200,000 keys, --fill-seconds, default 60: about 140 MiB of live data), then
starts a write load of 16 clients (--load-seconds, default 60) on the leader
and the other follower. Five seconds in, one follower is removed, killed,
its data directory wiped, started empty and added back as a voter: it can
only catch up by snapshot. Prints the transfer time (add_voter until it is a
caught-up voter), the peak RSS of the leader and of that follower sampled
every 200 ms from the removal until the load ends, and hammer's longest
write gap and failed writes. Stops everything it started; --keep keeps the
directory (the nodes' logs) and prints where it is.
TXT
}

while [ $# -gt 0 ]; do
  case $1 in
    --fill-seconds) FILL_SECONDS=$2; shift 2 ;;
    --load-seconds) LOAD_SECONDS=$2; shift 2 ;;
    --base-port) BASE_PORT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

DIR=$(mktemp -d /tmp/raftkv-transfer.XXXXXX)
BIN="$ROOT/target/release"
cluster() { "$ROOT/scripts/cluster.sh" --dir "$DIR" --base-port "$BASE_PORT" "$@"; }
SAMPLER=""
cleanup() {
  if [ -n "$SAMPLER" ]; then kill "$SAMPLER" 2>/dev/null || true; fi
  cluster down >/dev/null 2>&1 || true
  if [ -n "$KEEP" ]; then echo "kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

echo "starting a 3-node cluster…"
cluster up 3 >/dev/null
addr() { cat "$DIR/node-$1.addr"; }
pid_of() { cat "$DIR/node-$1.pid"; }
ALL="$(addr 1),$(addr 2),$(addr 3)"
echo "filling: 64 clients, 1 KiB values over 200,000 keys, ${FILL_SECONDS} s…"
"$BIN/hammer" --endpoints "$ALL" --clients 64 --read-ratio 0 --value-size 1024 --keys 200000 \
  --duration "${FILL_SECONDS}s" --json >"$DIR/fill.json"
LEADER=$(cluster leader)
FOLLOWER=3; [ "$LEADER" = 3 ] && FOLLOWER=2
OTHER=$(( 6 - LEADER - FOLLOWER ))
echo "leader $LEADER; wiping and re-adding follower $FOLLOWER under a 16-client write load…"
"$BIN/hammer" --endpoints "$(addr "$LEADER"),$(addr "$OTHER")" --clients 16 --read-ratio 0 \
  --value-size 1024 --keys 200000 --duration "${LOAD_SECONDS}s" --allow-outage --json >"$DIR/load.json" &
LOAD=$!
sleep 5
"$BIN/raft-admin" --endpoints "$ALL" --timeout 30s remove_server "$FOLLOWER" >/dev/null
OLD_PID=$(pid_of "$FOLLOWER")
cluster kill "$FOLLOWER" >/dev/null
while kill -0 "$OLD_PID" 2>/dev/null; do sleep 0.05; done
rm -rf "${DIR:?}/node-$FOLLOWER"
# Started by hand: cluster.sh start refuses an empty data directory.
"$BIN/raftkv-node" --id "$FOLLOWER" --listen "$(addr "$FOLLOWER")" --data-dir "$DIR/node-$FOLLOWER" \
  >"$DIR/node-$FOLLOWER.out" 2>>"$DIR/node-$FOLLOWER.log" &
echo $! >"$DIR/node-$FOLLOWER.pid"
for _ in $(seq 100); do grep -q "listening on" "$DIR/node-$FOLLOWER.out" && break; sleep 0.1; done
LEADER_PID=$(pid_of "$LEADER"); FOLLOWER_PID=$(pid_of "$FOLLOWER")
: >"$DIR/rss"
( while true; do
    echo "$(awk '/VmRSS/ {print $2}' "/proc/$LEADER_PID/status" 2>/dev/null || echo 0) $(awk '/VmRSS/ {print $2}' "/proc/$FOLLOWER_PID/status" 2>/dev/null || echo 0)" >>"$DIR/rss"
    sleep 0.2
  done ) &
SAMPLER=$!
START=$(date +%s.%N)
"$BIN/raft-admin" --endpoints "$(addr "$LEADER"),$(addr "$OTHER")" --timeout 600s add_voter "$FOLLOWER" "$(addr "$FOLLOWER")" >/dev/null
END=$(date +%s.%N)
wait "$LOAD"
kill "$SAMPLER"; SAMPLER=""
SNAPSHOT=$(grep -h "snapshot installed" "$DIR/node-$FOLLOWER.log" | tail -1 | grep -o 'bytes=[0-9]*' || true)
echo
echo "transfer: add_voter took $(echo "$END - $START" | bc) s (${SNAPSHOT:-no snapshot installed})"
echo "peak RSS while it ran: leader $(sort -n -k1 "$DIR/rss" | tail -1 | awk '{printf "%.1f", $1/1024}') MiB, follower $(sort -n -k2 "$DIR/rss" | tail -1 | awk '{printf "%.1f", $2/1024}') MiB"
jq -r '"load: \(.by_kind.put.count) writes, \(.by_kind.put.throughput | floor) writes/s, p99 \(.by_kind.put.p99_ms) ms, longest write gap \(.longest_write_gap_ms) ms, failed writes \([.errors[]] | add // 0)"' "$DIR/load.json"
"$BIN/raft-admin" --endpoints "$ALL" status
