#!/usr/bin/env bash
# A/B write throughput of raftkv builds: for each round and client count,
# one fresh 3-node cluster per variant, the variants in turn (A/B/C, A/B/C),
# all loaded by this tree's hammer. Prints one line per cell (with the CPU
# time each write cost the leader and, on average, a follower), then the
# median of each variant and its ratio to the first.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
ROUNDS=3
SECONDS_PER_CELL=8
CLIENTS_LIST="64 1"
VALUE_SIZE=256
KEYS=10000
BASE_PORT=27351
TARGET=raftkv

usage() {
  cat <<TXT
Usage: scripts/ab.sh [--rounds N] [--seconds N] [--clients "64 1"]
                     [--value-size BYTES] [--keys N] [--target raftkv|etcd] VARIANT...

A VARIANT is LABEL=DIR (the directory holding that build's raftkv-node) or
LABEL=DIR+tls (the same build serving mutual TLS, with certificates made by
this tree's raft-admin). Write-only hammer cells, 256-byte values over 10,000
keys by default. Builds this tree's release binaries first (hammer, raft-admin).

--target etcd loads the nodes through etcd's API instead of raftkv's
(hammer --target etcd, each client on one node: two in three calls are
forwarded to the leader, as with etcd's own clients); raftkv (the default)
sends every write to the leader.

The load of bench.sh --growth, where the store's size matters (each cell
starts from an empty cluster):
  scripts/ab.sh --seconds 90 --clients 64 --value-size 1024 --keys 200000 A=... B=...

Example, the working tree against an older build:
  git worktree add /tmp/before HEAD~3
  (cd /tmp/before && cargo build --release -p raftkv-node)
  scripts/ab.sh before=/tmp/before/target/release now=target/release tls=target/release+tls
TXT
}

variants=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) positive "$1" "${2-}"; ROUNDS=$2; shift 2 ;;
    --seconds) positive "$1" "${2-}"; SECONDS_PER_CELL=$2; shift 2 ;;
    --clients) CLIENTS_LIST=${2-}; shift 2 ;;
    --value-size) positive "$1" "${2-}"; VALUE_SIZE=$2; shift 2 ;;
    --keys) positive "$1" "${2-}"; KEYS=$2; shift 2 ;;
    --target)
      case "${2-}" in raftkv|etcd) TARGET=$2 ;; *) echo "--target is raftkv or etcd, not '${2-}'" >&2; exit 2 ;; esac
      shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *=*) variants+=("$1"); shift ;;
    *) echo "unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
[ ${#variants[@]} -ge 1 ] || { usage >&2; exit 2; }
for v in "${variants[@]}"; do
  dir=${v#*=}; dir=${dir%+tls}
  [ -x "$dir/raftkv-node" ] || { echo "no raftkv-node in $dir (variant $v)" >&2; exit 2; }
done

(cd "$ROOT" && cargo build --release -q -p hammer -p raft-admin)
BIN="$ROOT/target/release"
WORK=$(mktemp -d /tmp/raftkv-ab.XXXXXX)
PIDS=()
down() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
trap 'down; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

C="$WORK/certs"
"$BIN/raft-admin" certs ca --dir "$C" >/dev/null
"$BIN/raft-admin" certs issue --cn node --ip 127.0.0.1 --dir "$C" >/dev/null
"$BIN/raft-admin" certs issue --cn admin --dir "$C" >/dev/null
NODE_TLS=(--tls-cert "$C/node.crt" --tls-key "$C/node.key" --tls-ca "$C/ca.crt")
CLIENT_TLS=(--cacert "$C/ca.crt" --cert "$C/admin.crt" --key "$C/admin.key")
ENDPOINTS="127.0.0.1:$BASE_PORT,127.0.0.1:$((BASE_PORT + 1)),127.0.0.1:$((BASE_PORT + 2))"

# up DIR DATA TLS: a 3-node cluster of DIR's raftkv-node with three voters.
up() {
  local dir=$1 data=$2 tls=$3 i node_tls=() client=()
  if [ "$tls" = 1 ]; then node_tls=("${NODE_TLS[@]}"); client=("${CLIENT_TLS[@]}"); fi
  for i in 1 2 3; do
    local first=()
    [ "$i" = 1 ] && first=(--bootstrap)
    "$dir/raftkv-node" --id "$i" --listen "127.0.0.1:$((BASE_PORT + i - 1))" --data-dir "$data/node-$i" \
      "${first[@]}" "${node_tls[@]}" >"$data/node-$i.out" 2>"$data/node-$i.log" &
    PIDS+=($!)
  done
  wait_until 30 "node 1 leads" "$BIN/raft-admin" "${client[@]}" "127.0.0.1:$BASE_PORT" --timeout 1s leader
  for i in 2 3; do
    "$BIN/raft-admin" "${client[@]}" "127.0.0.1:$BASE_PORT" --timeout 60s \
      add_voter "$i" "127.0.0.1:$((BASE_PORT + i - 1))" >/dev/null
  done
  local voters
  voters=$("$BIN/raft-admin" "${client[@]}" --leader "multi:///$ENDPOINTS" --json get_configuration \
    | jq '[.servers[] | select(.suffrage == "Voter")] | length')
  [ "$voters" = 3 ] || { echo "the cluster has $voters voters, not 3" >&2; exit 1; }
}

# CPU time (user + system, clock ticks) a process has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))

echo "round label clients writes_per_s write_p99_ms leader_cpu_us_per_write follower_cpu_us_per_write"
: >"$WORK/cells"
for round in $(seq 1 "$ROUNDS"); do
  for clients in $CLIENTS_LIST; do
    for v in "${variants[@]}"; do
      label=${v%%=*} dir=${v#*=} tls=0
      if [ "${dir%+tls}" != "$dir" ]; then tls=1; dir=${dir%+tls}; fi
      data="$WORK/$round-$label-$clients"
      mkdir -p "$data"
      up "$dir" "$data" "$tls"
      client=()
      [ "$tls" = 1 ] && client=("${CLIENT_TLS[@]}")
      # Node 1 bootstrapped the cluster and leads it through the cell.
      before=(); for pid in "${PIDS[@]}"; do before+=("$(cpu_ticks "$pid")"); done
      "$BIN/hammer" --target "$TARGET" --endpoints "$ENDPOINTS" "${client[@]}" --clients "$clients" \
        --duration "${SECONDS_PER_CELL}s" --read-ratio 0 --value-size "$VALUE_SIZE" --keys "$KEYS" --json \
        >"$data/report.json" 2>"$data/hammer.err" \
        || { echo "hammer failed on $label:" >&2; cat "$data/hammer.err" >&2; exit 1; }
      used=(); for i in 0 1 2; do used+=($(($(cpu_ticks "${PIDS[$i]}") - before[i]))); done
      writes=$(jq '.by_kind.put.count' "$data/report.json")
      cpu="$((used[0] * TICK_US / writes)) $(((used[1] + used[2]) * TICK_US / 2 / writes))"
      line="$round $label $clients $(jq -r '"\(.by_kind.put.throughput | round) \(.by_kind.put.p99_ms)"' "$data/report.json") $cpu"
      echo "$line" | tee -a "$WORK/cells"
      down
      rm -rf "$data"
    done
  done
done

echo
echo "medians over $ROUNDS rounds (ratio to ${variants[0]%%=*}):"
for clients in $CLIENTS_LIST; do
  awk -v c="$clients" -v first="${variants[0]%%=*}" '
    $3 == c { n[$2]++; v[$2, n[$2]] = $4; lc[$2, n[$2]] = $6; fc[$2, n[$2]] = $7
              if (!($2 in seen)) { seen[$2] = 1; order[++k] = $2 } }
    function median(l) { return median_of(v, l) }
    function median_of(x, l,   i, j, t, a, m) {
      m = n[l]; for (i = 1; i <= m; i++) a[i] = x[l, i]
      for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
      return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
    }
    END {
      base = median(first)
      for (i = 1; i <= k; i++) printf "  %3d clients  %-10s %8.0f writes/s  %.2fx   CPU per write: leader %.0f us, follower %.0f us\n", c, order[i], median(order[i]), median(order[i]) / base, median_of(lc, order[i]), median_of(fc, order[i])
    }' "$WORK/cells"
done
