#!/usr/bin/env bash
# hammer under repeated faults: kill -9 and restart of the leader or a random
# node, SIGSTOP/SIGCONT of the leader, leadership transfers. Ends with hammer's
# --verify and the linearizability check of the recorded history, and prints
# each fault with its measured unavailability window.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=60
INTERVAL=5
CLIENTS=16
BASE_PORT=50351
DATA=""
KEEP=0

usage() {
  cat <<TXT
Usage: scripts/chaos.sh [--duration SECONDS] [--interval SECONDS] [--clients N] [--long] [--dir DIR] [--keep]

Starts a 3-node cluster, runs hammer (--verify --history) and injects one fault
every INTERVAL seconds: kill -9 of the leader or of a random node (restarted
two seconds later), SIGSTOP of the leader for longer than the election timeout,
or a leadership transfer. At the end: each fault with the longest window
without a successful write that followed it, lost acknowledged writes, and the
linearizability verdict of the history (hammer check).

  --duration SECONDS  length of the run (default 60)
  --interval SECONDS  time between faults (default 5)
  --clients N         hammer clients (default 16)
  --long              30 minutes, a fault every 30 s (at least 50 faults)
  --dir DIR           data, logs, history and report (default: a new temporary directory)
  --keep              keep the data directory
TXT
}

while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --interval) INTERVAL=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --long) DURATION=1800; INTERVAL=30; shift ;;
    --dir) DATA=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
[[ "$DURATION" =~ ^[0-9]+$ && "$INTERVAL" =~ ^[0-9]+$ && "$INTERVAL" -ge 3 && "$DURATION" -gt "$INTERVAL" ]] \
  || { echo "--duration and --interval are whole seconds, interval >= 3, duration > interval" >&2; exit 2; }
if [ -z "$DATA" ]; then DATA=$(mktemp -d /tmp/raftkv-chaos.XXXXXX); else mkdir -p "$DATA"; fi

cluster() { "$ROOT/scripts/cluster.sh" --dir "$DATA" --base-port "$BASE_PORT" "$@"; }
BIN="$ROOT/target/release"
HAMMER_PID=""
STOPPED_PID=""
cleanup() {
  [ -n "$STOPPED_PID" ] && kill -CONT "$STOPPED_PID" 2>/dev/null || true
  [ -n "$HAMMER_PID" ] && kill "$HAMMER_PID" 2>/dev/null || true
  cluster down >/dev/null 2>&1 || true
  if [ "$KEEP" = 0 ]; then rm -rf "$DATA"; else echo "data, logs, history and report kept in $DATA"; fi
}
trap cleanup EXIT

(cd "$ROOT" && cargo build --release -q -p raftkv-node -p raft-admin -p hammer)
cluster up 3 >/dev/null
ENDPOINTS="127.0.0.1:$BASE_PORT,127.0.0.1:$((BASE_PORT + 1)),127.0.0.1:$((BASE_PORT + 2))"
echo "cluster up at $ENDPOINTS; hammer for ${DURATION}s with a fault every ${INTERVAL}s"

"$BIN/hammer" --endpoints "$ENDPOINTS" --clients "$CLIENTS" --duration "${DURATION}s" --keys 10000 \
  --verify --history "$DATA/history.jsonl" --json >"$DATA/report.json" 2>"$DATA/hammer.err" &
HAMMER_PID=$!
START=$(date +%s.%N)
: >"$DATA/faults.tsv"
now() { python3 -c "import time; print(f'{time.time() - $START:.2f}')"; }

restart_when_down() {  # node id
  sleep 2
  cluster start "$1" >/dev/null 2>&1 || echo "warning: node $1 did not come back" >&2
}

while true; do
  sleep "$INTERVAL"
  python3 -c "import sys; sys.exit(0 if $(now) + 3 < $DURATION else 1)" || break
  leader=$(cluster leader 2>/dev/null || true)
  [ -n "$leader" ] || { echo "$(now)	no-leader	-" >>"$DATA/faults.tsv"; continue; }
  case $((RANDOM % 4)) in
    0) t=$(now); cluster kill "$leader"; echo "$t	kill-leader	node $leader" >>"$DATA/faults.tsv"; restart_when_down "$leader" ;;
    1) victim=$((RANDOM % 3 + 1)); t=$(now); cluster kill "$victim"
       echo "$t	kill-node	node $victim$([ "$victim" = "$leader" ] && echo ' (leader)')" >>"$DATA/faults.tsv"; restart_when_down "$victim" ;;
    2) STOPPED_PID=$(cat "$DATA/node-$leader.pid"); t=$(now); kill -STOP "$STOPPED_PID"
       echo "$t	pause-leader	node $leader for 1s" >>"$DATA/faults.tsv"; sleep 1; kill -CONT "$STOPPED_PID"; STOPPED_PID="" ;;
    3) t=$(now); "$BIN/raft-admin" --leader "multi:///$ENDPOINTS" leadership_transfer >/dev/null 2>&1 || true
       echo "$t	transfer	from node $leader" >>"$DATA/faults.tsv" ;;
  esac
  echo "  $(tail -n 1 "$DATA/faults.tsv")"
done

set +e
wait "$HAMMER_PID"; HAMMER_STATUS=$?
set -e
HAMMER_PID=""
CHECK="not run"
if "$BIN/hammer" check --help >/dev/null 2>&1; then
  CHECK=$("$BIN/hammer" check "$DATA/history.jsonl" 2>&1 | tail -n 1) || true
fi

python3 - "$DATA/report.json" "$DATA/faults.tsv" "$CHECK" <<'PY'
import json, sys, statistics
r = json.load(open(sys.argv[1]))
faults = [l.rstrip("\n").split("\t") for l in open(sys.argv[2]) if l.strip()]
gaps = r["write_gaps"]
print(f"\n{'fault':<14} {'t (s)':>7} {'window (ms)':>12}  detail")
windows = []
for t, kind, detail in faults:
    t = float(t)
    near = [g["length_ms"] for g in gaps if t - 0.5 <= g["start_s"] <= t + 2.5]
    w = max(near) if near else None
    if w is not None and kind != "no-leader":
        windows.append(w)
    print(f"{kind:<14} {t:>7.2f} {('-' if w is None else f'{w:.0f}'):>12}  {detail}")
print(f"\nfaults: {len(faults)}; windows over {len(windows)} faults with a gap >= threshold")
if windows:
    q = sorted(windows)
    print(f"unavailability p50 {statistics.median(q):.0f} ms, p99 {q[min(len(q)-1, int(len(q)*0.99))]:.0f} ms, max {q[-1]:.0f} ms")
print(f"operations {r['operations']}, {r['throughput']:.0f} ops/s, unknown outcomes {r['unknown_outcomes']}, errors {r['errors']}")
v = r.get("verify") or {}
print(f"lost acknowledged writes: {v.get('lost_acknowledged_writes')}")
print(f"linearizability: {sys.argv[3]}")
PY
[ "$HAMMER_STATUS" = 0 ] || { echo "hammer reported a failure:" >&2; cat "$DATA/hammer.err" >&2; exit 1; }
