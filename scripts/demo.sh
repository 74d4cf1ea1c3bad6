#!/usr/bin/env bash
# raftkv's main job in one command: a 3-node cluster under load, a leadership
# transfer and a leader crash during the run, and the measured cost of each.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=30
CLIENTS=16
BASE_PORT=50151
DATA=""
KEEP=0

usage() {
  cat <<TXT
Usage: scripts/demo.sh [--duration SECONDS] [--clients N] [--base-port PORT] [--dir DIR] [--keep]

Builds release binaries, starts 3 nodes on 127.0.0.1:PORT.., bootstraps node 1,
adds nodes 2 and 3 with raft-admin add_voter, runs hammer in the background,
transfers leadership at 1/4 of the run and kill -9s (then restarts) the leader
at 1/2, then prints hammer's report (with the windows without writes), a chart
(demo.svg in the data dir) and raft-admin status, and stops everything it started.

  --duration SECONDS  length of the load run (default 30)
  --clients N         hammer clients (default 16)
  --base-port PORT    port of node 1 (default 50151)
  --dir DIR           data, logs, report (default: a new temporary directory)
  --keep              keep the data directory
TXT
}

while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --base-port) BASE_PORT=$2; shift 2 ;;
    --dir) DATA=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
[[ "$DURATION" =~ ^[0-9]+$ ]] && [ "$DURATION" -ge 8 ] || { echo "--duration must be a whole number of seconds, at least 8" >&2; exit 2; }
if [ -z "$DATA" ]; then DATA=$(mktemp -d /tmp/raftkv-demo.XXXXXX); else mkdir -p "$DATA"; fi

cluster() { "$ROOT/scripts/cluster.sh" --dir "$DATA" --base-port "$BASE_PORT" "$@"; }
BIN="$ROOT/target/release"
HAMMER_PID=""
cleanup() {
  [ -n "$HAMMER_PID" ] && kill "$HAMMER_PID" 2>/dev/null || true
  cluster down >/dev/null 2>&1 || true
  if [ "$KEEP" = 0 ]; then rm -rf "$DATA"; else echo "data, logs and report kept in $DATA"; fi
}
trap cleanup EXIT

echo "== building release binaries"
(cd "$ROOT" && cargo build --release -q -p raftkv-node -p raft-admin -p hammer)

echo "== starting 3 nodes, bootstrapping node 1, adding 2 and 3 as voters"
cluster up 3
ENDPOINTS=$(IFS=,; echo "127.0.0.1:$BASE_PORT,127.0.0.1:$((BASE_PORT + 1)),127.0.0.1:$((BASE_PORT + 2))")

echo "== hammer: $CLIENTS clients for ${DURATION}s (verify every acknowledged write at the end)"
"$BIN/hammer" --endpoints "$ENDPOINTS" --clients "$CLIENTS" --duration "${DURATION}s" \
  --verify --plot "$DATA/demo.svg" --json >"$DATA/report.json" 2>"$DATA/hammer.err" &
HAMMER_PID=$!
START=$SECONDS

sleep $((DURATION / 4))
echo "== t=$((SECONDS - START))s: leadership_transfer"
"$BIN/raft-admin" --leader "multi:///$ENDPOINTS" leadership_transfer

sleep $((DURATION / 4))
LEADER=$(cluster leader)
echo "== t=$((SECONDS - START))s: kill -9 the leader (node $LEADER)"
cluster kill "$LEADER"
sleep 2
echo "== t=$((SECONDS - START))s: restart node $LEADER"
cluster start "$LEADER"

echo "== waiting for hammer to finish"
set +e
wait "$HAMMER_PID"
HAMMER_STATUS=$?
set -e
HAMMER_PID=""

echo
echo "== hammer report"
python3 - "$DATA/report.json" <<'PY' || cat "$DATA/report.json"
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{r['operations']} operations in {r['elapsed_s']:.1f}s: {r['throughput']:.0f} ops/s")
for kind, k in r['by_kind'].items():
    print(f"  {kind}: p50 {k['p50_ms']:.2f} ms  p90 {k['p90_ms']:.2f} ms  p99 {k['p99_ms']:.2f} ms  p99.9 {k['p999_ms']:.2f} ms  max {k['max_ms']:.2f} ms")
print("errors:", r['errors'] or "none", " retries:", r['retries'] or "none", " unknown outcomes:", r['unknown_outcomes'])
print(f"longest window with no successful write: {r['longest_write_gap_ms']:.0f} ms")
for g in r['write_gaps']:
    print(f"  no write for {g['length_ms']:.0f} ms from t={g['start_s']:.2f}s")
print("per second (ops, p99 ms):", " ".join(f"{p['ops']}/{p['p99_ms']:.0f}" for p in r['timeline']))
v = r.get('verify') or {}
print(f"lost acknowledged writes: {v.get('lost_acknowledged_writes')} (of {v.get('keys_checked')} keys checked)")
PY
echo "chart: $DATA/demo.svg"
echo
echo "== raft-admin status"
"$BIN/raft-admin" --endpoints "$ENDPOINTS" status || true
if [ "$HAMMER_STATUS" != 0 ]; then
  echo "hammer failed (exit $HAMMER_STATUS):" >&2
  cat "$DATA/hammer.err" >&2
  exit 1
fi
