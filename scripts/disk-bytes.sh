#!/usr/bin/env bash
# Bytes written to disk per acknowledged write: a fresh 3-node raftkv
# cluster (and, with --vs-etcd, a fresh 3-member etcd) under a write-only
# hammer load, the sectors the data directory's disk wrote (/proc/diskstats)
# around it, divided by the writes hammer had acknowledged.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
CLIENTS_LIST="64 1"
SECONDS_PER_CELL=10
VS_ETCD=0
# Clear of the other scripts' defaults (cluster.sh 27051, demo.sh 27151,
# bench.sh 27251, ab.sh 27351, chaos.sh 27451).
BASE_PORT=27551

usage() {
  cat <<TXT
Usage: scripts/disk-bytes.sh [--clients "64 1"] [--seconds N] [--vs-etcd]

For each client count: a fresh 3-node raftkv cluster under hammer (write-only,
256-byte values over 10,000 keys, N seconds, 10 by default), then, with
--vs-etcd, a fresh 3-member etcd (Debian's etcd-server) under the same load.
Prints the bytes the disk holding the data directory (under /tmp) wrote
while the load ran, per write hammer had acknowledged, for all three members
together. Anything else writing to that disk meanwhile is counted too: run
it on an otherwise quiet machine. Builds this tree's release binaries first.
TXT
}

while [ $# -gt 0 ]; do
  case "$1" in
    --clients) CLIENTS_LIST=${2-}; shift 2 ;;
    --seconds) positive "$1" "${2-}"; SECONDS_PER_CELL=$2; shift 2 ;;
    --vs-etcd) VS_ETCD=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
for c in $CLIENTS_LIST; do positive --clients "$c"; done
command -v jq >/dev/null || { echo "disk-bytes.sh needs jq (apt-get install jq)" >&2; exit 1; }
if [ "$VS_ETCD" = 1 ]; then
  command -v etcd >/dev/null || { echo "--vs-etcd needs etcd (apt-get install etcd-server)" >&2; exit 1; }
  command -v etcdctl >/dev/null || { echo "--vs-etcd needs etcdctl (apt-get install etcd-client)" >&2; exit 1; }
fi

DATA=$(mktemp -d /tmp/raftkv-disk-bytes.XXXXXX)
BIN="$ROOT/target/release"
ETCD_PID=()
cluster() { "$ROOT/scripts/cluster.sh" --dir "$DATA/raftkv" --base-port "$BASE_PORT" "$@"; }
stop_etcd() {
  stop_etcd_members "${ETCD_PID[@]}"
  ETCD_PID=()
}
cleanup() {
  stop_etcd
  cluster down >/dev/null 2>&1 || true
  rm -rf "$DATA"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The disk the data directory is on, as /proc/diskstats names it.
SOURCE=$(findmnt -n -o SOURCE --target "$DATA" | sed 's/\[.*//')
DISK=$(basename "$(readlink -f "$SOURCE")")
if ! awk -v d="$DISK" '$3 == d { found = 1 } END { exit !found }' /proc/diskstats; then
  echo "$DATA is on '$SOURCE', which is not a disk in /proc/diskstats (tmpfs, overlay?): nothing to measure" >&2
  exit 1
fi
sectors_written() { awk -v d="$DISK" '$3 == d { print $10 }' /proc/diskstats; }

echo "building release binaries…"
(cd "$ROOT" && cargo build --release -q -p raftkv-node -p raft-admin -p hammer)

# measure NAME CLIENTS ENDPOINTS HAMMER_ARGS...: one load, one line.
measure() {
  local name=$1 clients=$2 endpoints=$3; shift 3
  local before after writes
  before=$(sectors_written)
  "$BIN/hammer" --endpoints "$endpoints" "$@" --clients "$clients" --read-ratio 0 \
    --value-size 256 --keys 10000 --duration "${SECONDS_PER_CELL}s" --json >"$DATA/hammer.json"
  after=$(sectors_written)
  writes=$(jq '.operations' "$DATA/hammer.json")
  [ "$writes" -gt 0 ] || { echo "$name: hammer acknowledged no write" >&2; exit 1; }
  printf '%-7s %3s clients  %8d writes  %8d bytes per write (all members; disk %s)\n' \
    "$name" "$clients" "$writes" $(( (after - before) * 512 / writes )) "$DISK"
}

for clients in $CLIENTS_LIST; do
  cluster up 3 >/dev/null
  endpoints=$(cat "$DATA/raftkv/node-1.addr" "$DATA/raftkv/node-2.addr" "$DATA/raftkv/node-3.addr" | paste -sd, -)
  voters=$("$BIN/raft-admin" --leader "multi:///$endpoints" --json get_configuration \
    | jq '[.servers[] | select(.suffrage == "Voter")] | length')
  [ "$voters" = 3 ] || { echo "the raftkv cluster has $voters voters, not 3" >&2; exit 1; }
  measure raftkv "$clients" "$endpoints"
  cluster down >/dev/null
  rm -rf "$DATA/raftkv"

  if [ "$VS_ETCD" = 1 ]; then
    for i in 1 2 3; do start_etcd_member "$DATA" "$BASE_PORT" "$i"; ETCD_PID[i]=$!; done
    endpoints="127.0.0.1:$((BASE_PORT + 111)),127.0.0.1:$((BASE_PORT + 112)),127.0.0.1:$((BASE_PORT + 113))"
    etcd_ready() { ETCDCTL_API=3 etcdctl --endpoints="$endpoints" --command-timeout=2s endpoint health >/dev/null 2>&1; }
    wait_until 60 "etcd's 3 members are healthy" etcd_ready || exit 1
    measure etcd "$clients" "$endpoints" --target etcd
    stop_etcd
    rm -rf "$DATA"/etcd-*
  fi
done
