#!/usr/bin/env bash
# A fixed benchmark matrix against a local 3-node raftkv cluster (and, with
# --vs-etcd, against a local 3-member etcd), measured by the same client.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECONDS_PER_CELL=10
CLIENTS_LIST="1 16 64 256"
JSON=0
VS_ETCD=0
BASE_PORT=50251

usage() {
  cat <<TXT
Usage: scripts/bench.sh [--seconds N] [--clients "1 16 64 256"] [--json] [--vs-etcd]

Runs hammer against a fresh local 3-node cluster for every cell of the matrix
  clients: 1, 16, 64, 256   workload: write-only, 50/50 read/write, read-only
with 256-byte values and linearizable reads, and prints one table (or, with
--json, one JSON document). Also reports each node's resident memory idle and
after the run. With --vs-etcd it also starts a 3-member etcd on loopback
(Debian's etcd-server; installed with apt-get when missing) and runs the same
matrix against it through hammer --target etcd.

  --seconds N     length of each cell (default 10)
  --clients LIST  client counts (default "1 16 64 256")
  --json          machine-readable output
  --vs-etcd       compare with etcd
TXT
}

while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_PER_CELL=$2; shift 2 ;;
    --clients) CLIENTS_LIST=$2; shift 2 ;;
    --json) JSON=1; shift ;;
    --vs-etcd) VS_ETCD=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

DATA=$(mktemp -d /tmp/raftkv-bench.XXXXXX)
BIN="$ROOT/target/release"
ETCD_PIDS=()
cleanup() {
  "$ROOT/scripts/cluster.sh" --dir "$DATA/raftkv" --base-port "$BASE_PORT" down >/dev/null 2>&1 || true
  for pid in "${ETCD_PIDS[@]+"${ETCD_PIDS[@]}"}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$DATA"
}
trap cleanup EXIT

log() { [ "$JSON" = 1 ] && echo "$@" >&2 || echo "$@"; }

log "building release binaries…"
(cd "$ROOT" && cargo build --release -q -p raftkv-node -p raft-admin -p hammer)

rss() { ps -o rss= -p "$1" 2>/dev/null | awk '{printf "%.1f", $1/1024}'; }

# run_matrix TARGET ENDPOINTS: one JSON line per cell into $DATA/results.jsonl
run_matrix() {
  local target=$1 endpoints=$2 clients workload ratio
  for clients in $CLIENTS_LIST; do
    for workload in write mixed read; do
      case $workload in write) ratio=0 ;; mixed) ratio=0.5 ;; read) ratio=1 ;; esac
      log "  $target: $clients clients, $workload…"
      "$BIN/hammer" --target "$target" --endpoints "$endpoints" --clients "$clients" \
        --duration "${SECONDS_PER_CELL}s" --value-size 256 --keys 10000 --read-ratio "$ratio" \
        --json >"$DATA/cell.json" 2>"$DATA/cell.err" || { cat "$DATA/cell.err" >&2; exit 1; }
      python3 - "$DATA/cell.json" "$target" "$clients" "$workload" >>"$DATA/results.jsonl" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
k = r["by_kind"]
cell = {"target": sys.argv[2], "clients": int(sys.argv[3]), "workload": sys.argv[4],
        "ops_per_s": round(r["throughput"]),
        "write_ops_per_s": round(k.get("put", {}).get("throughput", 0)),
        "read_ops_per_s": round(k.get("get", {}).get("throughput", 0)),
        "write_p50_ms": k.get("put", {}).get("p50_ms"), "write_p99_ms": k.get("put", {}).get("p99_ms"),
        "read_p50_ms": k.get("get", {}).get("p50_ms"), "read_p99_ms": k.get("get", {}).get("p99_ms"),
        "errors": sum(r["errors"].values())}
print(json.dumps(cell))
PY
    done
  done
}

: >"$DATA/results.jsonl"
log "starting a 3-node raftkv cluster…"
"$ROOT/scripts/cluster.sh" --dir "$DATA/raftkv" --base-port "$BASE_PORT" up 3 >/dev/null
RAFTKV_ENDPOINTS="127.0.0.1:$BASE_PORT,127.0.0.1:$((BASE_PORT + 1)),127.0.0.1:$((BASE_PORT + 2))"
sleep 2
IDLE_RSS=()
for i in 1 2 3; do IDLE_RSS+=("$(rss "$(cat "$DATA/raftkv/node-$i.pid")")"); done
run_matrix raftkv "$RAFTKV_ENDPOINTS"
LOAD_RSS=()
for i in 1 2 3; do LOAD_RSS+=("$(rss "$(cat "$DATA/raftkv/node-$i.pid")")"); done

if [ "$VS_ETCD" = 1 ]; then
  if ! command -v etcd >/dev/null; then
    log "installing etcd-server…"
    apt-get install -y -q etcd-server >/dev/null
  fi
  log "starting a 3-member etcd on loopback…"
  CLUSTER=""
  for i in 1 2 3; do CLUSTER+="e$i=http://127.0.0.1:$((BASE_PORT + 100 + i)),"; done
  for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$DATA/etcd-$i" \
      --listen-client-urls "http://127.0.0.1:$((BASE_PORT + 110 + i))" \
      --advertise-client-urls "http://127.0.0.1:$((BASE_PORT + 110 + i))" \
      --listen-peer-urls "http://127.0.0.1:$((BASE_PORT + 100 + i))" \
      --initial-advertise-peer-urls "http://127.0.0.1:$((BASE_PORT + 100 + i))" \
      --initial-cluster "${CLUSTER%,}" --initial-cluster-state new >"$DATA/etcd-$i.log" 2>&1 &
    ETCD_PIDS+=($!)
  done
  ETCD_ENDPOINTS="127.0.0.1:$((BASE_PORT + 111)),127.0.0.1:$((BASE_PORT + 112)),127.0.0.1:$((BASE_PORT + 113))"
  for _ in $(seq 1 100); do
    "$BIN/hammer" --target etcd --endpoints "$ETCD_ENDPOINTS" --ops 1 --json >/dev/null 2>&1 && break
    sleep 0.2
  done
  run_matrix etcd "$ETCD_ENDPOINTS"
fi

python3 - "$DATA/results.jsonl" "$JSON" "${IDLE_RSS[*]}" "${LOAD_RSS[*]}" "$(nproc)" <<'PY'
import json, sys
cells = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
idle, load = sys.argv[3].split(), sys.argv[4].split()
memory = {"idle_rss_mb": [float(x) for x in idle], "after_load_rss_mb": [float(x) for x in load]}
if sys.argv[2] == "1":
    print(json.dumps({"cores": int(sys.argv[5]), "cells": cells, "raftkv_memory": memory}, indent=2))
    sys.exit()
def f(v): return "-" if v is None else f"{v:.2f}"
print(f"\n{'target':<7} {'clients':>7} {'workload':<8} {'ops/s':>8} {'writes/s':>9} {'reads/s':>8} {'w p50':>7} {'w p99':>7} {'r p50':>7} {'r p99':>7} {'errors':>6}")
for c in cells:
    print(f"{c['target']:<7} {c['clients']:>7} {c['workload']:<8} {c['ops_per_s']:>8} {c['write_ops_per_s']:>9} {c['read_ops_per_s']:>8} "
          f"{f(c['write_p50_ms']):>7} {f(c['write_p99_ms']):>7} {f(c['read_p50_ms']):>7} {f(c['read_p99_ms']):>7} {c['errors']:>6}")
print(f"\nraftkv node RSS: idle {', '.join(idle)} MB; after the matrix {', '.join(load)} MB ({sys.argv[5]} cores)")
PY
