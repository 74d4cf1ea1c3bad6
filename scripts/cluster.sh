#!/usr/bin/env bash
# Run a local raftkv cluster: up [N], down, status.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
DATA=${RAFTKV_CLUSTER_DIR:-./data}
# Below the kernel's ephemeral port range (32768-60999 by default), where an
# outgoing connection can hold a port before a node binds it; clear of the
# other scripts' defaults (demo.sh 27151, bench.sh 27251, chaos.sh 27451).
BASE_PORT=${RAFTKV_BASE_PORT:-27051}
PROFILE=${RAFTKV_PROFILE:-release}

usage() {
  cat <<TXT
Usage: scripts/cluster.sh [--dir DIR] [--base-port PORT] [--debug] COMMAND

Commands:
  up [N]     build, start N nodes (default 3) on 127.0.0.1:PORT.., bootstrap node 1,
             add the others as voters with raft-admin, wait until all are voters;
             if a node does not come up, stops the nodes this up started and fails
  down       stop the nodes this script started (by their pid files)
  status     show each node's process and the cluster's status table
  kill ID    kill -9 node ID (no chance to flush or say goodbye)
  start ID   start node ID again from its data directory
  leader     print the leader's id

After starting a node, up and start wait until it prints the address it
bound ("listening on ADDR" in DIR/node-ID.out) and record that address in
DIR/node-ID.addr, used from then on. A node that exits instead (its port is
taken, its data directory is locked) fails the command with the error from its
log (DIR/node-ID.log). Signals go only to a process that is still the node its
pid file names: a raftkv-node with --data-dir DIR/node-ID (/proc/PID/cmdline);
a pid file naming anything else is reported and left alone.

With --tls, up makes a CA and certificates in DIR/certs (raft-admin certs:
ca, node for 127.0.0.1, admin) unless they exist, and every node serves
mutual TLS with them; the script's own raft-admin calls present the admin
certificate. A cluster made with --tls stays TLS for every later command
(DIR/tls marks it).

Options:
  --dir DIR         where node data, logs and pid files live (default ./data)
  --tls             (up) serve mutual TLS with certificates in DIR/certs
  --base-port PORT  port of node 1; node i listens on PORT+i-1 (default 27051)
  --debug           use debug binaries instead of release
  -h, --help        this help

Environment: RAFTKV_CLUSTER_DIR, RAFTKV_BASE_PORT, RAFTKV_PROFILE=release|debug,
RAFTKV_NODE_FLAGS (extra flags for every node).
TXT
}

TLS=0
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DATA=$2; shift 2 ;;
    --base-port) BASE_PORT=$2; shift 2 ;;
    --debug) PROFILE=debug; shift ;;
    --tls) TLS=1; shift ;;
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

# use_tls: every node this script starts serves mutual TLS with DIR/certs,
# and every raft-admin it runs presents the admin certificate (both read
# their RAFTKV_* environment variables).
use_tls() {
  local c="$DATA/certs"
  export RAFTKV_TLS_CERT="$c/node.crt" RAFTKV_TLS_KEY="$c/node.key" RAFTKV_TLS_CA="$c/ca.crt"
  export RAFTKV_CACERT="$c/ca.crt" RAFTKV_CERT="$c/admin.crt" RAFTKV_KEY="$c/admin.key"
}
[ -f "$DATA/tls" ] && use_tls

# make_certs: a CA, a node certificate for 127.0.0.1 and an admin one in
# DIR/certs, unless the CA is there already.
make_certs() {
  local c="$DATA/certs"
  if [ ! -f "$c/ca.crt" ]; then
    "$BIN/raft-admin" certs ca --dir "$c"
    "$BIN/raft-admin" certs issue --cn node --ip 127.0.0.1 --dns localhost --dir "$c"
    "$BIN/raft-admin" certs issue --cn admin --dir "$c"
  fi
  touch "$DATA/tls"
  use_tls
}

# pid_alive ID: node ID runs (its pid file names this cluster's raftkv-node ID).
pid_alive() { node_pid "$DATA" "$1" >/dev/null; }
node_gone() { ! pid_alive "$1"; }

addresses() {
  local list=() f
  for f in "$DATA"/node-*.addr; do [ -f "$f" ] && list+=("$(cat "$f")"); done
  (IFS=,; echo "${list[*]}")
}

# why_stopped LOG OFFSET: what a node wrote to LOG from byte OFFSET on: its
# error and causes if it reported one (not the backtrace), else its last lines.
why_stopped() {
  tail -c +"$(($2 + 1))" "$1" | awk '
    /^Error: / {error = ""; keep = 1}
    /^Stack backtrace:/ {keep = 0}
    keep && NF {error = error "  " $0 "\n"}
    {last[NR % 5] = $0} END {
      if (error != "") {printf "%s", error}
      else for (i = NR - 4; i <= NR; i++) if (i > 0) print "  " last[i % 5]
    }'
  echo "  (log: $1)"
}

# start_node ID [FLAGS…]: starts node ID in the background, records its pid,
# waits until it prints the address it bound and records that address. Fails
# with the end of its log if the node exits first or prints nothing for 30 s.
start_node() {
  local i=$1; shift
  local port=$((BASE_PORT + i - 1)) pid address="" status=0 log_size=0
  [ -f "$DATA/node-$i.log" ] && log_size=$(wc -c <"$DATA/node-$i.log")
  # Made before the node starts: the background job opens it only when it
  # runs, and the wait below may read it first.
  : >"$DATA/node-$i.out"
  # shellcheck disable=SC2086
  "$BIN/raftkv-node" --id "$i" --listen "127.0.0.1:$port" --data-dir "$DATA/node-$i" \
    "$@" ${RAFTKV_NODE_FLAGS:-} >"$DATA/node-$i.out" 2>>"$DATA/node-$i.log" &
  pid=$!
  echo "$pid" >"$DATA/node-$i.pid"
  local deadline=$((SECONDS + 30))
  while true; do
    address=$(sed -n 's/^raftkv-node .* listening on //p' "$DATA/node-$i.out" | head -n 1)
    [ -n "$address" ] && break
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" || status=$?
      rm -f "$DATA/node-$i.pid"
      echo "node $i exited (status $status) instead of listening on 127.0.0.1:$port:" >&2
      why_stopped "$DATA/node-$i.log" "$log_size" >&2
      return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      rm -f "$DATA/node-$i.pid"
      echo "node $i printed no listening address within 30 s (stopped it):" >&2
      why_stopped "$DATA/node-$i.log" "$log_size" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "$address" >"$DATA/node-$i.addr"
}

kill_node() {
  local pid
  pid=$(node_pid "$DATA" "$1") || { echo "node $1 is not running" >&2; return 1; }
  kill -KILL "$pid"
  wait_until 10 "node $1 (pid $pid) is gone" node_gone "$1" || return 1
  rm -f "$DATA/node-$1.pid"
}

restart_node() {
  [ -d "$DATA/node-$1" ] || { echo "node $1 has no data in $DATA" >&2; return 1; }
  if pid_alive "$1"; then echo "node $1 is already running" >&2; return 1; fi
  start_node "$1" || exit 1
  wait_until 30 "node $1 answers" "$BIN/raft-admin" "$(cat "$DATA/node-$1.addr")" --timeout 1s state || exit 1
}

leader_id() {
  "$BIN/raft-admin" --endpoints "$(addresses)" --timeout 2s leader | cut -d' ' -f1
}

up() {
  local n=${1:-3}
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "N must be a positive number, not '$n'" >&2; exit 2; }
  mkdir -p "$DATA"
  local f id
  for f in "$DATA"/node-*.pid; do
    [ -f "$f" ] || continue
    id=$(basename "$f" .pid); id=${id#node-}
    if pid_alive "$id"; then echo "a cluster is already running from $DATA (scripts/cluster.sh down first)" >&2; exit 1; fi
  done
  build
  if [ "$TLS" = 1 ]; then make_certs; fi
  # From here on every node running from $DATA is one this up started.
  failed() { echo "cluster up failed; $(down)" >&2; exit 1; }
  local fresh=1
  [ -d "$DATA/node-1" ] && fresh=0
  for i in $(seq 1 "$n"); do
    if [ "$i" = 1 ]; then start_node 1 --bootstrap || failed; else start_node "$i" || failed; fi
  done
  local first
  first=$(cat "$DATA/node-1.addr")
  wait_until 30 "node 1 answers" "$BIN/raft-admin" "$first" --timeout 1s state || failed
  wait_until 30 "a leader is elected" "$BIN/raft-admin" --endpoints "$(addresses)" --timeout 1s leader || failed
  for i in $(seq 2 "$n"); do
    local address
    address=$(cat "$DATA/node-$i.addr")
    # grep reads it all: with -q it could close the pipe on raft-admin mid-output (pipefail).
    if [ $fresh = 1 ] || ! "$BIN/raft-admin" "$first" get_configuration | grep "^$i " >/dev/null; then
      "$BIN/raft-admin" --endpoints "$(addresses)" --timeout 30s add_voter "$i" "$address" || failed
    fi
  done
  "$BIN/raft-admin" --endpoints "$(addresses)" status
  echo "cluster of $n up: endpoints $(addresses) (data, logs and pids in $DATA)"
  if [ -f "$DATA/tls" ]; then
    echo "mutual TLS: CA $DATA/certs/ca.crt, admin certificate $DATA/certs/admin.crt"
  fi
}

down() {
  local stopped=0 f id pid other
  for f in "$DATA"/node-*.pid; do
    [ -f "$f" ] || continue
    id=$(basename "$f" .pid); id=${id#node-}
    # Only stop a process that is still the node we started.
    if pid=$(node_pid "$DATA" "$id"); then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do pid_alive "$id" || break; sleep 0.1; done
      if pid_alive "$id"; then kill -KILL "$pid" 2>/dev/null || true; fi
      stopped=$((stopped + 1))
    else
      pid=$(cat "$f" 2>/dev/null) || pid=""
      other=$(process_command "$pid")
      [ -z "$other" ] || echo "$f names pid $pid, now \`$other\`, not node $id of $DATA: left alone" >&2
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
    if pid_alive "${id#node-}"; then echo "$id: running (pid $(cat "$f")) at $(cat "$DATA/$id.addr")";
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
