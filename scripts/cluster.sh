#!/usr/bin/env bash
# Run a local raftkv cluster: up [N], down, status.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
DATA=${RAFTKV_CLUSTER_DIR:-./data}
BASE_PORT=${RAFTKV_BASE_PORT:-50051}
PROFILE=${RAFTKV_PROFILE:-release}

usage() {
  cat <<TXT
Usage: scripts/cluster.sh [--dir DIR] [--base-port PORT] [--debug] COMMAND

Commands:
  up [N]     build, start N nodes (default 3) on 127.0.0.1:PORT.., bootstrap node 1,
             add the others as voters with raft-admin, wait until all are voters
  down       stop the nodes this script started (by their pid files)
  status     show each node's process and the cluster's status table
  kill ID    kill -9 node ID (no chance to flush or say goodbye)
  start ID   start node ID again from its data directory
  leader     print the leader's id

Options:
  --dir DIR         where node data, logs and pid files live (default ./data)
  --base-port PORT  port of node 1; node i listens on PORT+i-1 (default 50051)
  --debug           use debug binaries instead of release
  -h, --help        this help

Environment: RAFTKV_CLUSTER_DIR, RAFTKV_BASE_PORT, RAFTKV_PROFILE=release|debug,
RAFTKV_NODE_FLAGS (extra flags for every node).
TXT
}

args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DATA=$2; shift 2 ;;
    --base-port) BASE_PORT=$2; shift 2 ;;
    --debug) PROFILE=debug; shift ;;
    -h|--help) usage; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done
set -- "${args[@]+"${args[@]}"}"
[ $# -ge 1 ] || { usage >&2; exit 2; }
command=$1; shift

BIN="$ROOT/target/$PROFILE"
build() {
  local flag=()
  [ "$PROFILE" = release ] && flag=(--release)
  (cd "$ROOT" && cargo build "${flag[@]}" -q -p raftkv-node -p raft-admin)
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

addresses() {
  local list=() f
  for f in "$DATA"/node-*.addr; do [ -f "$f" ] && list+=("$(cat "$f")"); done
  (IFS=,; echo "${list[*]}")
}

# start_node ID [FLAGS…]: starts node ID in the background, recording its pid and address.
start_node() {
  local i=$1; shift
  local port=$((BASE_PORT + i - 1))
  # shellcheck disable=SC2086
  "$BIN/raftkv-node" --id "$i" --listen "127.0.0.1:$port" --data-dir "$DATA/node-$i" \
    "$@" ${RAFTKV_NODE_FLAGS:-} >"$DATA/node-$i.out" 2>>"$DATA/node-$i.log" &
  echo $! >"$DATA/node-$i.pid"
  echo "127.0.0.1:$port" >"$DATA/node-$i.addr"
}

kill_node() {
  local f="$DATA/node-$1.pid"
  pid_alive "$f" || { echo "node $1 is not running" >&2; return 1; }
  kill -KILL "$(cat "$f")"
  wait "$(cat "$f")" 2>/dev/null || true
  rm -f "$f"
}

restart_node() {
  local f="$DATA/node-$1.pid"
  [ -d "$DATA/node-$1" ] || { echo "node $1 has no data in $DATA" >&2; return 1; }
  if pid_alive "$f"; then echo "node $1 is already running" >&2; return 1; fi
  start_node "$1"
  wait_until 30 "node $1 answers" "$BIN/raft-admin" "$(cat "$DATA/node-$1.addr")" --timeout 1s state || exit 1
}

leader_id() {
  "$BIN/raft-admin" --endpoints "$(addresses)" --timeout 2s leader | cut -d' ' -f1
}

up() {
  local n=${1:-3}
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "N must be a positive number, not '$n'" >&2; exit 2; }
  mkdir -p "$DATA"
  for f in "$DATA"/node-*.pid; do
    if pid_alive "$f"; then echo "a cluster is already running from $DATA (scripts/cluster.sh down first)" >&2; exit 1; fi
  done
  build
  local fresh=1
  [ -d "$DATA/node-1" ] && fresh=0
  for i in $(seq 1 "$n"); do
    if [ "$i" = 1 ]; then start_node 1 --bootstrap; else start_node "$i"; fi
  done
  local first="127.0.0.1:$BASE_PORT"
  wait_until 30 "node 1 answers" "$BIN/raft-admin" "$first" --timeout 1s state || exit 1
  wait_until 30 "a leader is elected" "$BIN/raft-admin" --endpoints "$(addresses)" --timeout 1s leader || exit 1
  for i in $(seq 2 "$n"); do
    local address="127.0.0.1:$((BASE_PORT + i - 1))"
    if [ $fresh = 1 ] || ! "$BIN/raft-admin" "$first" get_configuration | grep -q "^$i "; then
      "$BIN/raft-admin" --endpoints "$(addresses)" --timeout 30s add_voter "$i" "$address"
    fi
  done
  "$BIN/raft-admin" --endpoints "$(addresses)" status
  echo "cluster of $n up: endpoints $(addresses) (data, logs and pids in $DATA)"
}

down() {
  local stopped=0 f pid
  for f in "$DATA"/node-*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    # Only stop a process that is still the node we started.
    if kill -0 "$pid" 2>/dev/null && grep -q raftkv-node "/proc/$pid/cmdline" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
      stopped=$((stopped + 1))
    fi
    rm -f "$f"
  done
  echo "stopped $stopped node(s)"
}

status() {
  local f id
  for f in "$DATA"/node-*.pid; do
    [ -f "$f" ] || { echo "no cluster started from $DATA"; return 1; }
    id=$(basename "$f" .pid)
    if pid_alive "$f"; then echo "$id: running (pid $(cat "$f")) at $(cat "$DATA/$id.addr")";
    else echo "$id: not running"; fi
  done
  [ -x "$BIN/raft-admin" ] && "$BIN/raft-admin" --endpoints "$(addresses)" status
}

case "$command" in
  up) up "$@" ;;
  down) down ;;
  status) status ;;
  kill) [ $# -eq 1 ] || { echo "kill needs a node id" >&2; exit 2; }; kill_node "$1" ;;
  start) [ $# -eq 1 ] || { echo "start needs a node id" >&2; exit 2; }; restart_node "$1" ;;
  leader) leader_id ;;
  *) echo "unknown command '$command'" >&2; usage >&2; exit 2 ;;
esac
