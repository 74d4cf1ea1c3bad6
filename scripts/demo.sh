#!/usr/bin/env bash
# raftkv's main job in one command: a 3-node cluster under load, a leadership
# transfer and a leader crash during the run, and the measured cost of each.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
DURATION=30
CLIENTS=16
# Below the kernel's ephemeral port range (32768-60999 by default), clear of
# cluster.sh (27051), bench.sh (27251, etcd 27352-27364) and chaos.sh (27451).
BASE_PORT=27151
DATA=""
OUT="$ROOT/demo-out"
KEEP=0
TOP=0

usage() {
  cat <<TXT
Usage: scripts/demo.sh [--duration SECONDS] [--clients N] [--base-port PORT] [--dir DIR] [--out DIR] [--keep] [--top]

Builds release binaries, starts 3 nodes on 127.0.0.1:PORT.., bootstraps node 1,
adds nodes 2 and 3 with raft-admin add_voter, runs hammer in the background,
transfers leadership at 1/4 of the run and kill -9s (then restarts) the leader
at 1/2, then prints hammer's report (with the windows without writes and the
leader changes) and raft-admin status, and stops everything it started. The
report (report.txt, report.json) and the chart (demo.svg) stay in the --out
directory.

  --duration SECONDS  length of the load run (default 30)
  --clients N         hammer clients (default 16)
  --base-port PORT    port of node 1 (default 27151)
  --dir DIR           node data and logs (default: a new temporary directory,
                      removed at the end unless --keep). A DIR you name is
                      never removed: it must be new, empty, or hold an earlier
                      demo.sh run (marker file .raftkv-demo), whose files this
                      run replaces; any other DIR is refused
  --out DIR           report and chart (default: demo-out/ at the repo root);
                      only its report.json, report.txt and demo.svg are replaced
  --keep              keep the temporary data directory
  --top               watch the run live with raft-admin top (roles, terms,
                      replication, writes per second, and each election with
                      how long it took) instead of the step-by-step log, which
                      goes to DIR/events.log and is printed after the run

If the restart of the killed leader fails, the demo goes on without it (two
nodes keep the quorum), says so, and exits with status 1 after the report.
TXT
}

while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --base-port) BASE_PORT=$2; shift 2 ;;
    --dir) DATA=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --top) TOP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
[[ "$DURATION" =~ ^[0-9]+$ ]] && [ "$DURATION" -ge 8 ] || { echo "--duration must be a whole number of seconds, at least 8" >&2; exit 2; }
# Only a directory this script created is ever removed.
CREATED=0
if [ -z "$DATA" ]; then
  DATA=$(mktemp -d /tmp/raftkv-demo.XXXXXX)
  CREATED=1
else
  claim_dir "$DATA" demo 'node-*' hammer.err events.log killed || exit 2
  DATA=$(cd "$DATA" && pwd)
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# Nothing from an earlier run may pass for this one's.
rm -f "$OUT/report.json" "$OUT/report.txt" "$OUT/demo.svg"

cluster() { "$ROOT/scripts/cluster.sh" --dir "$DATA" --base-port "$BASE_PORT" "$@"; }
BIN="$ROOT/target/release"
HAMMER_PID=""
EVENTS_PID=""
cleanup() {
  # hammer and the events are this shell's children, not yet waited for:
  # their pids cannot have been reused.
  [ -n "$EVENTS_PID" ] && kill "$EVENTS_PID" 2>/dev/null || true
  [ -n "$HAMMER_PID" ] && kill "$HAMMER_PID" 2>/dev/null || true
  cluster down >/dev/null 2>&1 || true
  if [ "$CREATED" = 1 ] && [ "$KEEP" = 0 ]; then rm -rf "$DATA"; else echo "node data and logs kept in $DATA"; fi
}
trap cleanup EXIT

echo "== building release binaries"
(cd "$ROOT" && cargo build --release -q -p raftkv-node -p raft-admin -p hammer)

echo "== starting 3 nodes, bootstrapping node 1, adding 2 and 3 as voters"
cluster up 3
# The addresses the nodes printed when they bound their ports.
ENDPOINTS=$(cat "$DATA/node-1.addr" "$DATA/node-2.addr" "$DATA/node-3.addr" | paste -sd, -)

echo "== hammer: $CLIENTS clients for ${DURATION}s, holding 4 leases of 5s alive (verify every acknowledged write at the end)"
"$BIN/hammer" --endpoints "$ENDPOINTS" --clients "$CLIENTS" --duration "${DURATION}s" \
  --leases 4 --lease-ttl 5s \
  --verify --plot "$OUT/demo.svg" --json >"$OUT/report.json" 2>"$DATA/hammer.err" &
HAMMER_PID=$!
START=$SECONDS

# The faults, at a quarter and at half of the run; exits 1 if the killed
# leader did not come back.
faults() {
  sleep $((DURATION / 4))
  echo "== t=$((SECONDS - START))s: leadership_transfer"
  "$BIN/raft-admin" --leader "multi:///$ENDPOINTS" leadership_transfer

  sleep $((DURATION / 4))
  local leader
  leader=$(cluster leader)
  echo "== t=$((SECONDS - START))s: kill -9 the leader (node $leader)"
  echo "$leader" >"$DATA/killed"
  cluster kill "$leader"
  sleep 2
  echo "== t=$((SECONDS - START))s: restart node $leader"
  cluster start "$leader" || { echo "== node $leader did not come back: the run goes on with two nodes" >&2; return 1; }
}

RESTART_FAILED=0
if [ "$TOP" = 1 ]; then
  faults >"$DATA/events.log" 2>&1 &
  EVENTS_PID=$!
  # Four refreshes a second until hammer's run is over.
  "$BIN/raft-admin" --endpoints "$ENDPOINTS" top --interval 250ms --count $(((DURATION + 2) * 4)) || true
  wait "$EVENTS_PID" || RESTART_FAILED=1
  EVENTS_PID=""
  echo
  cat "$DATA/events.log"
else
  faults || RESTART_FAILED=1
fi
LEADER=$(cat "$DATA/killed" 2>/dev/null || echo "?")

echo "== waiting for hammer to finish"
set +e
wait "$HAMMER_PID"
HAMMER_STATUS=$?
set -e
HAMMER_PID=""

echo
echo "== hammer report"
# hammer renders its own JSON report: the same text it prints without --json.
if "$BIN/hammer" report "$OUT/report.json" >"$OUT/report.txt"; then
  cat "$OUT/report.txt"
  echo
  echo "report: $OUT/report.txt (JSON: $OUT/report.json)"
  if [ -f "$OUT/demo.svg" ]; then echo "chart:  $OUT/demo.svg"; fi
else
  rm -f "$OUT/report.txt"
fi
echo
echo "== raft-admin status"
"$BIN/raft-admin" --endpoints "$ENDPOINTS" status || true
if [ "$HAMMER_STATUS" != 0 ]; then
  echo "hammer failed (exit $HAMMER_STATUS):" >&2
  cat "$DATA/hammer.err" >&2
  exit 1
fi
if [ "$RESTART_FAILED" = 1 ]; then
  echo "the restart of node $LEADER failed (why: above)" >&2
  exit 1
fi
