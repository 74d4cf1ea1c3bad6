#!/usr/bin/env bash
# etcd's own load check, `etcdctl check perf`, against a 3-node raftkv cluster
# and a 3-member etcd on the same machine, one after the other, each fresh.
# Prints each run's verdict lines and a one-line summary per system.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
LOADS="m"
BASE_PORT=27551
SYSTEMS="raftkv etcd"

usage() {
  cat <<TXT
Usage: scripts/check-perf.sh [--load "s m l xl"] [--only raftkv|etcd] [--base-port PORT]

Runs 'etcdctl check perf --load=LOAD' (etcd's etcdctl, Debian's etcd-client)
against a fresh 3-node raftkv cluster (release build, default settings) and a
fresh 3-member etcd (Debian's etcd-server, default settings), in turn, for
each LOAD (default: m). Each run takes about a minute, plus the cleanup of
what check perf wrote.

check perf --load=l and xl open one connection per client to every endpoint
(500 and 1,000 clients): the raftkv nodes get RAFTKV_MAX_CONNECTIONS=2048
for them, past the default 256.

  --load LIST       loads to run, of s m l xl (default m)
  --only SYSTEM     run only raftkv or only etcd
  --base-port PORT  first port used (default 27551; raftkv on PORT..PORT+2,
                    etcd on PORT+101.. and PORT+111..)
TXT
}

while [ $# -gt 0 ]; do
  case "$1" in
    --load) LOADS=$2; shift 2 ;;
    --only) SYSTEMS=$2; shift 2 ;;
    --base-port) BASE_PORT=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
for load in $LOADS; do
  case "$load" in s|m|l|xl) ;; *) echo "unknown load '$load' (s, m, l or xl)" >&2; exit 2 ;; esac
done
for system in $SYSTEMS; do
  case "$system" in raftkv|etcd) ;; *) echo "unknown system '$system' (raftkv or etcd)" >&2; exit 2 ;; esac
done
command -v etcdctl >/dev/null || { echo "needs etcdctl: apt-get install etcd-client" >&2; exit 1; }
if [[ " $SYSTEMS " == *" etcd "* ]]; then
  command -v etcd >/dev/null || { echo "needs etcd: apt-get install etcd-server" >&2; exit 1; }
fi

DIR=$(mktemp -d /tmp/raftkv-check-perf.XXXXXX)
ETCD_PIDS=()
cluster() { "$ROOT/scripts/cluster.sh" --dir "$DIR/raftkv" --base-port "$BASE_PORT" "$@"; }
stop_etcd() {
  stop_etcd_members "${ETCD_PIDS[@]}"
  ETCD_PIDS=()
}
cleanup() {
  cluster down >/dev/null 2>&1 || true
  stop_etcd
  rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

(cd "$ROOT" && cargo build --release -q -p raftkv-node -p raft-admin)

# check LABEL ENDPOINTS LOAD: one check perf run, its output kept and summed up.
check() {
  local label=$1 endpoints=$2 load=$3 out="$DIR/$1-$3.txt" started=$SECONDS
  echo "== $label, check perf --load=$load"
  ETCDCTL_API=3 etcdctl --endpoints "$endpoints" check perf --load="$load" >"$out" 2>&1 || true
  # Progress bars redraw with carriage returns: keep the verdict lines.
  tr '\r' '\n' <"$out" | grep -E '^(PASS|FAIL|Slowest|Stddev|Throughput|Error|error)' || cat "$out"
  echo "-- $label --load=$load: $(tr '\r' '\n' <"$out" | grep -E '^(PASS|FAIL)$' | tail -n 1), \
$(tr '\r' '\n' <"$out" | grep -oE '[0-9]+ writes/s' | head -n 1), $((SECONDS - started)) s in all"
}

for load in $LOADS; do
  for system in $SYSTEMS; do
    case $system in
      raftkv)
        connections=256
        case $load in l|xl) connections=2048 ;; esac
        RAFTKV_MAX_CONNECTIONS=$connections cluster up 3 >/dev/null
        endpoints=$(cat "$DIR/raftkv/node-1.addr" "$DIR/raftkv/node-2.addr" "$DIR/raftkv/node-3.addr" | paste -sd, -)
        check "raftkv (max connections $connections)" "$endpoints" "$load"
        cluster down >/dev/null
        rm -rf "$DIR/raftkv"
        ;;
      etcd)
        for i in 1 2 3; do
          start_etcd_member "$DIR" "$BASE_PORT" "$i"
          ETCD_PIDS+=($!)
        done
        endpoints="127.0.0.1:$((BASE_PORT + 111)),127.0.0.1:$((BASE_PORT + 112)),127.0.0.1:$((BASE_PORT + 113))"
        etcd_healthy() { ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1; }
        wait_until 60 "etcd answers on every member" etcd_healthy || exit 1
        check "etcd $(etcd --version | sed -n 's/^etcd Version: *//p')" "$endpoints" "$load"
        stop_etcd
        rm -rf "$DIR"/etcd-*
        ;;
    esac
  done
done
