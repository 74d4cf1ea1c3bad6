#!/usr/bin/env bash
# Benchmarks of a local 3-node raftkv cluster, all measured by hammer: the
# full matrix (the default); raftkv against a local 3-member etcd and against
# the gRPC ceiling, alternating within each round (--vs-etcd); the write gap
# of a kill -9 of the leader and of a leadership transfer (--failover); what
# raftkv and etcd become under a long write load over many keys (--growth).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
COMMAND_LINE="scripts/bench.sh$(printf ' %q' "$@")"
SECONDS_PER_CELL=""
CLIENTS_LIST="1 16 64 256"
JSON=0
KEEP=0
MATRIX=0
VS_ETCD=0
FAILOVER=0
GROWTH=0
TLS=0
ROUNDS=2
FAILOVER_ROUNDS=5
# Below the kernel's ephemeral port range (32768-60999 by default): a fixed
# port inside it can be held by some outgoing connection when a server binds it.
BASE_PORT=27251

usage() {
  cat <<TXT
Usage: scripts/bench.sh [--matrix] [--vs-etcd] [--failover] [--seconds N] [--rounds N]
                        [--failover-rounds N] [--clients "1 16 64 256"] [--tls] [--json] [--keep]
       scripts/bench.sh --growth [--seconds N] [--tls] [--json] [--keep]

Every figure comes from hammer (256-byte values, 10,000 keys, linearizable
reads; --growth has its own load) against servers on loopback that share this
machine's cores with it. Builds the release binaries first.

  --matrix        the full matrix (the default when none of --vs-etcd,
                  --failover and --growth is given): a fresh 3-node raftkv
                  cluster, for every client count write-only, 50/50 and
                  read-only cells of 10 s; with --vs-etcd the same matrix
                  runs against etcd afterwards
  --vs-etcd       one table: raftkv, raftkv through its etcd API (hammer's
                  etcd target, clients spread over every member; plain text
                  only), etcd (Debian's etcd-server, 3 members,
                  default settings) and the gRPC ceiling (hammer noop-server:
                  etcd's KV.Put/Range answered at once, nothing stored), with
                  ratios. Rows: writes/s at 64 and at 1 client, linearizable
                  reads/s at 64 clients, write p99 at 64 clients, and the CPU
                  time one write at 64 clients cost the leader and, on
                  average, a follower (from /proc, around each cell); the failover
                  rows only with --failover too. Cells of 8 s, medians of
                  --rounds rounds; within a round every measure runs against
                  raftkv, its etcd API, etcd, the ceiling in turn
  --failover      kill -9 of the leader under load (16 clients, write-only),
                  raftkv and etcd alternating, --failover-rounds rounds: the
                  median and every value of the write gap that begins at
                  the kill: the longest of hammer's gaps (--gap-threshold
                  10ms, default call timeout 2 s) that lies inside the run
                  and begins from 1 s before the kill to 0.5 s after it. A
                  round counts only if the leader before differs from the
                  leader after and there is such a gap (for raftkv, ending
                  at the new leader's first write). The round's line also
                  names the longest gap of the whole run.
                  The killed node is restarted and caught up between rounds.
                  Also a leadership transfer per round (raftkv only): the write
                  gap that ends at the new leader's first write ("< 10" when
                  it is under the threshold). And the leader paused (SIGSTOP,
                  then SIGCONT) for 3 s and for 6 s, raftkv and etcd
                  alternating: a hung leader keeps its connections open, so
                  clients learn of the new one only by asking. Counted like a
                  kill; the paused node resumes as a follower
  --growth        data growth, raftkv and etcd side by side, on their own (not
                  with the other modes: it needs clusters that nothing else
                  has written to): hammer with 64 clients, write-only, 1 KiB
                  values over 200,000 keys, 90 s (--seconds), one run against
                  fresh 3-node raftkv, then, once raftkv is stopped, against
                  fresh 3-member etcd, both with default settings (named in
                  the report: raftkv's size quota; etcd's backend quota
                  and auto-compaction). Rows: writes/s over the run and over
                  its first and last 20 s (a third of the run each when it is
                  shorter than 60 s), write p99 / p99.9 / max, hammer's longest
                  write gap, failed writes, the peak RSS of any member (VmHWM)
                  and member 1's data directory at the end (du -sb)
  --seconds N     length of each throughput cell (default 10 for the matrix,
                  8 for --vs-etcd), or of each --growth run (default 90;
                  e.g. 15 for a smoke check)
  --rounds N      rounds of the --vs-etcd table (default 2)
  --failover-rounds N  rounds of --failover (default 5)
  --clients LIST  client counts of the matrix (default "1 16 64 256")
  --tls           the raftkv cluster serves mutual TLS (cluster.sh up --tls);
                  hammer and raft-admin present the admin certificate. etcd
                  and the ceiling stay plain text
  --json          one JSON document on stdout (progress on stderr)
  --keep          keep the data directory: logs and every hammer report

Also reports each raftkv node's resident memory idle and after the throughput
runs. Needs python3, jq and, for --vs-etcd, --failover and --growth, etcd
(etcd-server is installed with apt-get when missing).
TXT
}

while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) positive "$1" "${2-}"; SECONDS_PER_CELL=$2; shift 2 ;;
    --rounds) positive "$1" "${2-}"; ROUNDS=$2; shift 2 ;;
    --failover-rounds) positive "$1" "${2-}"; FAILOVER_ROUNDS=$2; shift 2 ;;
    --clients) CLIENTS_LIST=${2-}; shift 2 ;;
    --json) JSON=1; shift ;;
    --keep) KEEP=1; shift ;;
    --tls) TLS=1; shift ;;
    --matrix) MATRIX=1; shift ;;
    --vs-etcd) VS_ETCD=1; shift ;;
    --failover) FAILOVER=1; shift ;;
    --growth) GROWTH=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
if [ "$GROWTH" = 1 ] && [ $(( MATRIX || VS_ETCD || FAILOVER )) = 1 ]; then
  echo "--growth runs on its own: the other modes would run on clusters it filled, or fill them before it" >&2
  exit 2
fi
if [ "$VS_ETCD" = 0 ] && [ "$FAILOVER" = 0 ] && [ "$GROWTH" = 0 ]; then MATRIX=1; fi
MATRIX_SECONDS=${SECONDS_PER_CELL:-10}
COMPARE_SECONDS=${SECONDS_PER_CELL:-8}
GROWTH_SECONDS=${SECONDS_PER_CELL:-90}
NEED_ETCD=$(( VS_ETCD || FAILOVER || GROWTH ))

log() { if [ "$JSON" = 1 ]; then echo "$@" >&2; else echo "$@"; fi; }
need() { command -v "$1" >/dev/null || { echo "bench.sh needs $1 ($2)" >&2; exit 1; }; }
need python3 "apt-get install python3"
need jq "apt-get install jq"
if [ "$NEED_ETCD" = 1 ]; then
  if ! command -v etcd >/dev/null; then
    log "installing etcd-server…"
    apt-get install -y -q etcd-server >/dev/null
  fi
  need etcdctl "apt-get install etcd-client"
fi

DATA=$(mktemp -d /tmp/raftkv-bench.XXXXXX)
BIN="$ROOT/target/release"
ETCD_PID=()    # by member number, 1-3
NOOP_PID=""
HAMMER_PID=""
cluster() { "$ROOT/scripts/cluster.sh" --dir "$DATA/raftkv" --base-port "$BASE_PORT" "$@"; }
# With --tls, what hammer and raft-admin present to the raftkv nodes.
TLS_FLAGS=()
if [ "$TLS" = 1 ]; then
  TLS_FLAGS=(--cacert "$DATA/raftkv/certs/ca.crt" --cert "$DATA/raftkv/certs/admin.crt"
    --key "$DATA/raftkv/certs/admin.key")
fi
admin() { "$BIN/raft-admin" "${TLS_FLAGS[@]}" "$@"; }
# stop PID PROGRAM [ARG...]: SIGTERM, then SIGKILL if it is still there after
# 10 s (an etcd leader spends a while handing over leadership before it exits).
# Signals PID only while it is still PROGRAM with those ARGs (is_process in
# lib.sh), never a process that took over the pid of one that exited.
stop() {
  local pid=$1; shift
  if is_process "$pid" "$@"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do is_process "$pid" "$@" || break; sleep 0.1; done
    if is_process "$pid" "$@"; then kill -KILL "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
  fi
}
cleanup() {
  local i
  if [ -n "$HAMMER_PID" ]; then stop "$HAMMER_PID" hammer; fi
  if [ -n "$NOOP_PID" ]; then stop "$NOOP_PID" hammer noop-server; fi
  for i in "${!ETCD_PID[@]}"; do stop "${ETCD_PID[i]}" etcd --data-dir "$DATA/etcd-$i"; done
  cluster down >/dev/null 2>&1 || true
  if [ "$KEEP" = 1 ]; then echo "data, logs and hammer reports kept in $DATA" >&2; else rm -rf "$DATA"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building release binaries…"
(cd "$ROOT" && cargo build --release -q -p raftkv-node -p raft-admin -p hammer)

rss() { ps -o rss= -p "$1" 2>/dev/null | awk '{printf "%.1f", $1/1024}'; }
node_rss() { local i sizes=(); for i in 1 2 3; do sizes+=("$(rss "$(cat "$DATA/raftkv/node-$i.pid")")"); done; echo "${sizes[*]}"; }
# rss_settled: no node's resident memory moves by 100 kB or more (the 0.1 MB
# the report shows) over one second.
rss_settled() {
  local i pid before=() after=()
  for i in 1 2 3; do pid=$(cat "$DATA/raftkv/node-$i.pid"); before+=("$(ps -o rss= -p "$pid")"); done
  sleep 1
  for i in 1 2 3; do pid=$(cat "$DATA/raftkv/node-$i.pid"); after+=("$(ps -o rss= -p "$pid")"); done
  for i in 0 1 2; do
    [ -n "${before[i]// /}" ] && [ -n "${after[i]// /}" ] || return 1
    [ $(( after[i] - before[i] )) -lt 100 ] && [ $(( before[i] - after[i] )) -lt 100 ] || return 1
  done
}

# hammer_run OUT ARGS...: one hammer run whose JSON report goes to OUT; stops the script if it fails.
hammer_run() {
  local out=$1; shift
  "$BIN/hammer" "$@" --json >"$out" 2>"$out.err" \
    || { echo "hammer $* failed:" >&2; cat "$out.err" >&2; exit 1; }
}
# hammer_cell OUT ARGS...: hammer_run with the load of the matrix and the --vs-etcd table.
hammer_cell() { local out=$1; shift; hammer_run "$out" "$@" --value-size 256 --keys 10000; }

# --- raftkv -------------------------------------------------------------------

log "starting a 3-node raftkv cluster…"
if [ "$TLS" = 1 ]; then cluster up 3 --tls >/dev/null; else cluster up 3 >/dev/null; fi
# The addresses the nodes printed when they bound their ports.
RAFTKV_ENDPOINTS=$(cat "$DATA/raftkv/node-1.addr" "$DATA/raftkv/node-2.addr" "$DATA/raftkv/node-3.addr" | paste -sd, -)

# Three voters, every node answering and none behind the leader.
raftkv_ready() {
  admin --leader "multi:///$RAFTKV_ENDPOINTS" --timeout 2s --json get_configuration \
    | jq -e '[.servers[] | select(.suffrage == "Voter")] | length == 3' >/dev/null || return 1
  admin --endpoints "$RAFTKV_ENDPOINTS" --timeout 2s --json status \
    | jq -e '[.endpoints[] | select(.error == null and .lag == 0)] | length == 3' >/dev/null
}
wait_until 60 "the raftkv cluster has 3 caught-up voters" raftkv_ready || exit 1
# Idle memory once start-up allocations are over: a bounded wait for it to settle.
wait_until 20 "the raftkv nodes' memory settles" rss_settled || log "measuring the idle RSS anyway"
IDLE_RSS=$(node_rss)

# --- etcd and the gRPC ceiling -------------------------------------------------

ETCD_ENDPOINTS="127.0.0.1:$((BASE_PORT + 111)),127.0.0.1:$((BASE_PORT + 112)),127.0.0.1:$((BASE_PORT + 113))"
# start_etcd I: starts member I (again, from its data directory if it has one).
start_etcd() {
  start_etcd_member "$DATA" "$BASE_PORT" "$1"
  ETCD_PID[$1]=$!
}
etcdctl_on() { ETCDCTL_API=3 etcdctl --dial-timeout=1s --command-timeout=2s --endpoints="$1" "${@:2}"; }
# etcd_leader ENDPOINTS: the member number of the leader, as the members that
# answer see it (the member whose own id is the leader id it reports).
etcd_leader() {
  local endpoint
  endpoint=$(etcdctl_on "$1" endpoint status -w json 2>/dev/null \
    | jq -r '.[] | select(.Status.header.member_id == .Status.leader) | .Endpoint' | head -n 1) || true
  if [ -n "$endpoint" ]; then echo $(( ${endpoint##*:} - BASE_PORT - 110 )); fi
}
# Three members, all answering, one leader they agree on, none behind.
etcd_ready() {
  etcdctl_on "$ETCD_ENDPOINTS" member list -w json | jq -e '.members | length == 3' >/dev/null || return 1
  etcdctl_on "$ETCD_ENDPOINTS" endpoint status -w json | jq -e 'length == 3
    and ([.[].Status.leader] | unique | length == 1) and .[0].Status.leader != 0
    and ([.[].Status.raftAppliedIndex] | max - min <= 10)' >/dev/null
}

if [ "$NEED_ETCD" = 1 ]; then
  log "starting a 3-member etcd on loopback…"
  for i in 1 2 3; do start_etcd "$i"; done
  wait_until 60 "etcd has 3 members and a leader" etcd_ready || exit 1
fi
if [ "$VS_ETCD" = 1 ]; then
  "$BIN/hammer" noop-server --listen 127.0.0.1:0 >"$DATA/noop.addr" 2>"$DATA/noop.err" &
  NOOP_PID=$!
  wait_until 10 "hammer noop-server prints its address" test -s "$DATA/noop.addr" || exit 1
  NOOP_ENDPOINT=$(head -n 1 "$DATA/noop.addr")
fi

# --- what ran -------------------------------------------------------------------

# raftkv_default FLAG: the node's default for FLAG, from its --help.
raftkv_default() {
  "$BIN/raftkv-node" --help | awk -v flag="$1" '$1 == flag {found = 1}
    found && /\[default:/ {gsub(/.*\[default: |\].*/, ""); print; exit}'
}
# etcd_default FLAG: etcd's default for FLAG, from its --help.
etcd_default() { etcd --help 2>&1 | awk -v flag="$1" '$1 == flag {gsub(/\047/, "", $2); print $2; exit}'; }

changed=$(git -C "$ROOT" status --porcelain -- node proto admin-cli hammer Cargo.toml Cargo.lock 2>/dev/null \
  | awk '{print $2}' | cut -d/ -f1 | sort -u | paste -sd, -) || changed=""
REVISION="commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
[ -n "$changed" ] && REVISION+=" with uncommitted changes in $changed"
# Anything else that loads the machine makes every figure lower: say so.
OTHERS=$(pgrep -a -f 'raftkv-node|etcd --name|hammer ' | grep -v -F "$DATA" | grep -v "^${NOOP_PID:-none} " \
  | grep -c . || true)
jq -n --arg command "$COMMAND_LINE" --arg cores "$(nproc)" \
  --arg cpu "$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)" \
  --arg memory "$(free -g | awk '/^Mem:/ {print $2 " GiB"}')" --arg kernel "$(uname -r)" \
  --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" --arg others "$OTHERS" \
  --arg raftkv "$REVISION" --arg hammer "$("$BIN/hammer" --version)" \
  --arg etcd "$( [ "$NEED_ETCD" = 1 ] && etcd --version | sed -n 's/^etcd Version: *//p' || echo '')" \
  --arg disk "$(df -T "$DATA" | awk 'NR == 2 {print $2}')" \
  --arg raftkv_timing "heartbeat $(raftkv_default --heartbeat-ms) ms, election timeout $(raftkv_default \
      --election-timeout-min-ms)-$(raftkv_default --election-timeout-max-ms) ms" \
  --arg etcd_timing "$( [ "$NEED_ETCD" = 1 ] && echo "heartbeat $(etcd_default --heartbeat-interval) ms, \
election timeout $(etcd_default --election-timeout) ms, pre-vote $(etcd_default --pre-vote)")" \
  --arg raftkv_storage "snapshot after $(raftkv_default --snapshot-after) entries keeping $(raftkv_default \
      --snapshot-keep), sled cache $(raftkv_default --cache-mb) MB, size quota $(admin --leader \
      "multi:///$RAFTKV_ENDPOINTS" --json alarm list 2>/dev/null | jq -r '.quota_bytes // "unknown"') bytes${RAFTKV_NODE_FLAGS:+; \
RAFTKV_NODE_FLAGS=$RAFTKV_NODE_FLAGS}" \
  --arg etcd_storage "$( [ "$NEED_ETCD" = 1 ] && echo "quota-backend-bytes $(etcd_default --quota-backend-bytes), \
auto-compaction-retention $(etcd_default --auto-compaction-retention), snapshot-count $(etcd_default --snapshot-count)")" \
  --arg tls "$([ "$TLS" = 1 ] && echo "mutual TLS" || echo "plain text")" \
  --arg raftkv_voters "$(admin --leader "multi:///$RAFTKV_ENDPOINTS" --json get_configuration \
      | jq -r '[.servers[] | select(.suffrage == "Voter") | .id] | map(tostring) | join(",")')" \
  --arg etcd_members "$( [ "$NEED_ETCD" = 1 ] && etcdctl_on "$ETCD_ENDPOINTS" member list -w json \
      | jq -r '[.members[].name] | sort | join(",")' || echo '')" \
  '$ARGS.named' >"$DATA/meta.json"

# --- the matrix -----------------------------------------------------------------

# run_matrix TARGET ENDPOINTS: one JSON line per cell into $DATA/matrix.jsonl
run_matrix() {
  local target=$1 endpoints=$2 clients workload ratio report
  for clients in $CLIENTS_LIST; do
    for workload in write mixed read; do
      case $workload in write) ratio=0 ;; mixed) ratio=0.5 ;; read) ratio=1 ;; esac
      log "  $target: $clients clients, $workload…"
      report="$DATA/matrix-$target-$clients-$workload.json"
      local tls=()
      [ "$target" = raftkv ] && tls=("${TLS_FLAGS[@]}")
      hammer_cell "$report" --target "$target" --endpoints "$endpoints" --clients "$clients" \
        --duration "${MATRIX_SECONDS}s" --read-ratio "$ratio" "${tls[@]}"
      jq -c --arg target "$target" --argjson clients "$clients" --arg workload "$workload" '.by_kind as $k
        | {target: $target, clients: $clients, workload: $workload, ops_per_s: (.throughput | round),
           write_ops_per_s: ($k.put.throughput // 0 | round), read_ops_per_s: ($k.get.throughput // 0 | round),
           write_p50_ms: $k.put.p50_ms, write_p99_ms: $k.put.p99_ms,
           read_p50_ms: $k.get.p50_ms, read_p99_ms: $k.get.p99_ms, errors: ([.errors[]] | add // 0)}' \
        "$report" >>"$DATA/matrix.jsonl"
    done
  done
}

: >"$DATA/matrix.jsonl"
: >"$DATA/compare.jsonl"
: >"$DATA/failover.jsonl"
if [ "$MATRIX" = 1 ]; then
  log "matrix, ${MATRIX_SECONDS} s per cell:"
  run_matrix raftkv "$RAFTKV_ENDPOINTS"
  if [ "$VS_ETCD" = 1 ]; then run_matrix etcd "$ETCD_ENDPOINTS"; fi
fi

# --- raftkv, etcd and the ceiling, alternating ----------------------------------

# CPU time (user + system, clock ticks) a process has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))
# member_pids TARGET: sets PIDS to TARGET's three members, the leader first
# (none for the ceiling, or when the leader is not known).
member_pids() {
  local leader i pid
  PIDS=()
  case $1 in
    raftkv | raftkv-etcd)
      leader=$(cluster leader) || return 0
      for i in "$leader" 1 2 3; do
        [ "${#PIDS[@]}" -gt 0 ] && [ "$i" = "$leader" ] && continue
        pid=$(node_pid "$DATA/raftkv" "$i") || { PIDS=(); return 0; }
        PIDS+=("$pid")
      done ;;
    etcd)
      leader=$(etcd_leader "$ETCD_ENDPOINTS")
      [ -n "$leader" ] || return 0
      PIDS+=("${ETCD_PID[leader]}")
      for i in 1 2 3; do [ "$i" != "$leader" ] && PIDS+=("${ETCD_PID[i]}"); done ;;
  esac
  return 0
}

if [ "$VS_ETCD" = 1 ]; then
  log "raftkv / etcd / gRPC ceiling, ${COMPARE_SECONDS} s per cell, rounds: $ROUNDS"
  for round in $(seq 1 "$ROUNDS"); do
    for measure in write-64 write-1 read-64; do
      clients=${measure#*-}
      ratio=0; [ "${measure%-*}" = read ] && ratio=1
      for target in raftkv raftkv-etcd etcd ceiling; do
        case $target in
          raftkv) flags=(--endpoints "$RAFTKV_ENDPOINTS" "${TLS_FLAGS[@]}") ;;
          # etcd's API on the same raftkv cluster, clients spread over every
          # member as etcd's are (hammer's etcd target speaks plain text).
          raftkv-etcd) [ "$TLS" = 1 ] && continue; flags=(--target etcd --endpoints "$RAFTKV_ENDPOINTS") ;;
          etcd) flags=(--target etcd --endpoints "$ETCD_ENDPOINTS") ;;
          # The ceiling stores nothing: a read there measures no read.
          ceiling) [ "$ratio" = 1 ] && continue; flags=(--target etcd --endpoints "$NOOP_ENDPOINT") ;;
        esac
        log "  round $round/$ROUNDS: $target, ${measure%-*}-only, clients=$clients…"
        report="$DATA/compare-$round-$measure-$target.json"
        member_pids "$target"
        before=(); for pid in "${PIDS[@]}"; do before+=("$(cpu_ticks "$pid")"); done
        hammer_cell "$report" "${flags[@]}" --clients "$clients" --duration "${COMPARE_SECONDS}s" \
          --read-ratio "$ratio"
        used=(); for i in "${!PIDS[@]}"; do used+=($(($(cpu_ticks "${PIDS[i]}") - before[i]))); done
        jq -c --argjson round "$round" --arg measure "$measure" --arg target "$target" \
          --argjson used "[$(IFS=,; echo "${used[*]}")]" --argjson tick_us "$TICK_US" \
          '(.by_kind.put.count // 0) as $writes
          | {round: $round, measure: $measure, target: $target, writes_per_s: .by_kind.put.throughput,
            reads_per_s: .by_kind.get.throughput, write_p99_ms: .by_kind.put.p99_ms,
            errors: ([.errors[]] | add // 0),
            leader_cpu_us_per_write: (if $writes > 0 and ($used | length) == 3
              then $used[0] * $tick_us / $writes else null end),
            follower_cpu_us_per_write: (if $writes > 0 and ($used | length) == 3
              then ($used[1] + $used[2]) * $tick_us / 2 / $writes else null end)}' \
          "$report" >>"$DATA/compare.jsonl"
        # Lets what a run leaves behind (flushes, log purges) settle before the next one.
        sleep 1
      done
    done
  done
fi
if [ "$MATRIX" = 1 ] || [ "$VS_ETCD" = 1 ]; then LOAD_RSS=$(node_rss); LOAD_RSS_AFTER="the throughput runs"; fi

# --- failover -------------------------------------------------------------------

# The load of a failover round, and when the fault comes: late enough that the
# run is steady, early enough that etcd (election timeout 1 s) is back well
# before the end, so the gap lies inside the run. Gaps from 10 ms up are
# listed, so the report names the longest one even when a failover is quick.
FAILOVER_LOAD=(--clients 16 --read-ratio 0 --gap-threshold 10ms --allow-outage)
KILL_RUN_S=6
TRANSFER_RUN_S=4
FAULT_AT_S=2
PAUSES_S="3 6"
# A paused run lasts until etcd's gap (up to ~2 s after the resume) is over.
PAUSE_TAIL_S=4

# Checks a round's hammer report (the input) and prints one JSON line for failover.jsonl.
# KIND kill|transfer, TARGET, ROUND, BEFORE (leader id), AFTER (leader id for
# etcd; raftkv's comes from hammer's leader_changes), FAULT_S (seconds after
# hammer was started), STATUS (hammer's exit code), TOOL_STATUS and TOOL_OUTPUT
# (raft-admin's exit code and last line).
read -r -d '' EVALUATE <<'JQ' || true
def abs: if . < 0 then -. else . end;
def node_id: .leader_id // ((.address | split(":") | .[1] | tonumber) - $base + 1);
def ends_at($t): ((.start_s + .length_ms / 1000) - $t | abs) <= 0.05;
(.leader_changes // []) as $changes
| ($changes | map(select(node_id != $before)) | .[0]) as $change
| (if $target == "raftkv" then ($change | if . == null then null else node_id end) else $after end) as $new
| .longest_write_gap_ms as $longest
| ([.write_gaps[] | select(.edge == "" and .start_s >= $fault_s - 1 and .start_s <= $fault_s + 0.5)]
   | max_by(.length_ms)) as $gap
| ([.write_gaps[] | select(.edge == "" and $change != null and ends_at($change.at_s))]
   | max_by(.length_ms)) as $change_gap
| [ if $status != 0 then "hammer exited with \($status)" else empty end,
    if $tool_status != 0 then "raft-admin leadership_transfer failed" else empty end,
    if .ended_in_outage then "the run ended in an outage" else empty end,
    if $before == null then "no leader before the fault" else empty end,
    if $target == "raftkv" and ($changes[0] | if . == null then null else node_id end) != $before
      then "hammer's first leader was not \($before)" else empty end,
    if $new == null or $new == $before then "no other leader after the fault" else empty end,
    if $kind == "kill" or $kind == "pause" then
      if $gap == null
        then "no write gap of \(.gap_threshold_ms) ms or more began at the \($kind) (~\($fault_s) s)"
      elif $target == "raftkv" and $change != null and ($gap | ends_at($change.at_s) | not)
        then "the gap that began at the \($kind) did not end at the new leader's first write"
      else empty end
    else empty end
  ] as $problems
| { kind: $kind, target: $target, round: $round, leader_before: $before, leader_after: $new,
    fault_at_s: $fault_s, longest_gap_ms: $longest, gap_start_s: $gap.start_s,
    gap_ms: (if $kind == "transfer" then $change_gap.length_ms else $gap.length_ms end),
    threshold_ms: .gap_threshold_ms, tool_output: $tool_output,
    leaders_seen: [$changes[] | {at_s: (.at_s * 1000 | round / 1000), id: node_id}],
    valid: ($problems | length == 0), problems: $problems }
JQ

# record_round REPORT KIND TARGET ROUND BEFORE AFTER FAULT_MS STATUS TOOL_STATUS TOOL_OUTPUT [EXTRA]
# (EXTRA: a JSON object of fields the line also gets)
record_round() {
  local report=$1 extra=${11:-'{}'}; shift
  if ! jq -e .by_kind "$report" >/dev/null 2>&1; then
    jq -nc --arg kind "$1" --arg target "$2" --argjson round "$3" --arg why "$(tail -n 1 "$report.err")" \
      --argjson extra "$extra" \
      '{kind: $kind, target: $target, round: $round, valid: false, problems: ["hammer failed: \($why)"]} + $extra' \
      >>"$DATA/failover.jsonl"
    return
  fi
  jq -c --arg kind "$1" --arg target "$2" --argjson round "$3" --argjson before "${4:-null}" \
    --argjson after "${5:-null}" --argjson fault_s "$(awk -v ms="$6" 'BEGIN {print ms / 1000}')" \
    --argjson status "$7" --argjson tool_status "$8" --arg tool_output "$9" --argjson base "$BASE_PORT" \
    --argjson extra "$extra" "$EVALUATE + \$extra" "$report" >>"$DATA/failover.jsonl"
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# start_load REPORT TARGET SECONDS [HAMMER FLAGS…]: hammer in the background,
# its JSON report into REPORT; sets HAMMER_PID and STARTED_MS.
start_load() {
  local report=$1 target=$2 seconds=$3; shift 3
  local endpoints=$RAFTKV_ENDPOINTS tls=("${TLS_FLAGS[@]}")
  [ "$target" = etcd ] && endpoints=$ETCD_ENDPOINTS && tls=()
  STARTED_MS=$(now_ms)
  "$BIN/hammer" --target "$target" --endpoints "$endpoints" "${FAILOVER_LOAD[@]}" --duration "${seconds}s" \
    --value-size 256 --keys 10000 --json "${tls[@]}" "$@" >"$report" 2>"$report.err" &
  HAMMER_PID=$!
}
# finish_load: waits for hammer; sets LOAD_STATUS to its exit code.
finish_load() {
  LOAD_STATUS=0
  wait "$HAMMER_PID" || LOAD_STATUS=$?
  HAMMER_PID=""
}

kill_round() {
  local target=$1 round=$2 before after="" fault_ms
  if [ "$target" = raftkv ]; then
    wait_until 60 "the raftkv cluster has 3 caught-up voters" raftkv_ready || exit 1
    before=$(cluster leader)
  else
    wait_until 60 "etcd has 3 caught-up members" etcd_ready || exit 1
    before=$(etcd_leader "$ETCD_ENDPOINTS")
    if [ -z "$before" ]; then
      jq -nc --argjson round "$round" '{kind: "kill", target: "etcd", round: $round, valid: false,
        problems: ["no etcd member said it leads"]}' >>"$DATA/failover.jsonl"
      return
    fi
  fi
  start_load "$DATA/failover-$round-kill-$target.json" "$target" "$KILL_RUN_S"
  sleep "$FAULT_AT_S"
  fault_ms=$(( $(now_ms) - STARTED_MS ))
  if [ "$target" = raftkv ]; then
    cluster kill "$before"
  else
    # Only the member this script started: the pid of one that died may be reused.
    if is_process "${ETCD_PID[before]}" etcd --data-dir "$DATA/etcd-$before"; then
      kill -KILL "${ETCD_PID[before]}"
    else
      log "  etcd member $before had exited before the kill"
    fi
    wait "${ETCD_PID[before]}" 2>/dev/null || true
  fi
  finish_load
  if [ "$target" = raftkv ]; then
    cluster start "$before" >/dev/null
  else
    local alive=() i
    for i in 1 2 3; do [ "$i" != "$before" ] && alive+=("127.0.0.1:$((BASE_PORT + 110 + i))"); done
    after=$(etcd_leader "$(IFS=,; echo "${alive[*]}")")
    start_etcd "$before"
  fi
  record_round "$DATA/failover-$round-kill-$target.json" kill "$target" "$round" "$before" "$after" \
    "$fault_ms" "$LOAD_STATUS" 0 ""
}

# pause_round TARGET ROUND SECONDS: the leader stopped (SIGSTOP) for SECONDS
# under load, then resumed; it stays a member and catches up as a follower.
pause_round() {
  local target=$1 round=$2 pause=$3 before after="" fault_ms pid report
  if [ "$target" = raftkv ]; then
    wait_until 60 "the raftkv cluster has 3 caught-up voters" raftkv_ready || exit 1
    before=$(cluster leader)
    pid=$(node_pid "$DATA/raftkv" "$before") || { echo "raftkv node $before is not running" >&2; exit 1; }
  else
    wait_until 60 "etcd has 3 caught-up members" etcd_ready || exit 1
    before=$(etcd_leader "$ETCD_ENDPOINTS")
    pid=${ETCD_PID[before]-}
    if [ -z "$before" ] || ! is_process "$pid" etcd --data-dir "$DATA/etcd-$before"; then
      jq -nc --argjson round "$round" --argjson pause "$pause" '{kind: "pause", target: "etcd", round: $round,
        pause_s: $pause, valid: false, problems: ["no running etcd member said it leads"]}' >>"$DATA/failover.jsonl"
      return
    fi
  fi
  report="$DATA/failover-$round-pause$pause-$target.json"
  start_load "$report" "$target" "$((FAULT_AT_S + pause + PAUSE_TAIL_S))"
  sleep "$FAULT_AT_S"
  fault_ms=$(( $(now_ms) - STARTED_MS ))
  kill -STOP "$pid"
  sleep "$pause"
  if [ "$target" = etcd ]; then
    local alive=() i
    for i in 1 2 3; do [ "$i" != "$before" ] && alive+=("127.0.0.1:$((BASE_PORT + 110 + i))"); done
    after=$(etcd_leader "$(IFS=,; echo "${alive[*]}")")
  fi
  kill -CONT "$pid"
  finish_load
  record_round "$report" pause "$target" "$round" "$before" "$after" "$fault_ms" "$LOAD_STATUS" 0 "" \
    "{\"pause_s\": $pause}"
}

transfer_round() {
  local round=$1 before fault_ms tool_status=0
  wait_until 60 "the raftkv cluster has 3 caught-up voters" raftkv_ready || exit 1
  before=$(cluster leader)
  start_load "$DATA/failover-$round-transfer-raftkv.json" raftkv "$TRANSFER_RUN_S"
  sleep "$FAULT_AT_S"
  fault_ms=$(( $(now_ms) - STARTED_MS ))
  admin --leader "multi:///$RAFTKV_ENDPOINTS" leadership_transfer >"$DATA/transfer.out" 2>&1 \
    || tool_status=$?
  finish_load
  record_round "$DATA/failover-$round-transfer-raftkv.json" transfer raftkv "$round" "$before" "" \
    "$fault_ms" "$LOAD_STATUS" "$tool_status" \
    "$(tail -n 1 "$DATA/transfer.out")"
}

if [ "$FAILOVER" = 1 ]; then
  log "failover: kill -9 of the leader (raftkv, etcd), a leadership transfer (raftkv), the leader paused $PAUSES_S s (raftkv, etcd), rounds: $FAILOVER_ROUNDS"
  for round in $(seq 1 "$FAILOVER_ROUNDS"); do
    for target in raftkv etcd; do
      kill_round "$target" "$round"
      log "  round $round/$FAILOVER_ROUNDS: kill the $target leader: $(tail -n 1 "$DATA/failover.jsonl" \
        | jq -r '"\(.leader_before) -> \(.leader_after), gap \(.gap_ms) ms" + (if .valid then "" else " INVALID: " + (.problems | join("; ")) end)')"
    done
    transfer_round "$round"
    log "  round $round/$FAILOVER_ROUNDS: transfer raftkv leadership: $(tail -n 1 "$DATA/failover.jsonl" \
      | jq -r '"\(.leader_before) -> \(.leader_after), gap \(.gap_ms // "< \(.threshold_ms)") ms" + (if .valid then "" else " INVALID: " + (.problems | join("; ")) end)')"
    for pause in $PAUSES_S; do
      for target in raftkv etcd; do
        pause_round "$target" "$round" "$pause"
        log "  round $round/$FAILOVER_ROUNDS: pause the $target leader ${pause} s: $(tail -n 1 "$DATA/failover.jsonl" \
          | jq -r '"\(.leader_before) -> \(.leader_after), gap \(.gap_ms) ms" + (if .valid then "" else " INVALID: " + (.problems | join("; ")) end)')"
      done
    done
  done
fi

# --- data growth ----------------------------------------------------------------

# The load: many clients writing 1 KiB values over a key space large enough
# that the store keeps growing through the run. A run that ends with a member
# refusing writes (etcd past its quota) is reported, not aborted.
GROWTH_LOAD=(--clients 64 --read-ratio 0 --value-size 1024 --keys 200000 --allow-outage)
# The windows compared for a trend: the first and the last 20 s, or a third of
# a shorter run each.
GROWTH_WINDOW_S=$(( GROWTH_SECONDS / 3 < 20 ? GROWTH_SECONDS / 3 : 20 ))
[ "$GROWTH_WINDOW_S" -ge 1 ] || GROWTH_WINDOW_S=1

# peak_rss_kb PID: the most memory PID has held resident since it started
# (VmHWM), in kB; nothing for a process that is gone.
peak_rss_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || true; }

# growth_run TARGET: the data-growth load against TARGET's three members, then
# every member's peak RSS and data directory size; one JSON line into growth.jsonl.
growth_run() {
  local target=$1 report="$DATA/growth-$1.json" endpoints flags=() pids=() dirs=() pid i leader
  local peaks=() sizes=() gone=()
  if [ "$target" = raftkv ]; then
    wait_until 60 "the raftkv cluster has 3 caught-up voters" raftkv_ready || exit 1
    endpoints=$RAFTKV_ENDPOINTS; flags=("${TLS_FLAGS[@]}")
    for i in 1 2 3; do
      pid=$(node_pid "$DATA/raftkv" "$i") || { echo "raftkv node $i is not running" >&2; exit 1; }
      pids+=("$pid"); dirs+=("$DATA/raftkv/node-$i")
    done
  else
    wait_until 60 "etcd has 3 caught-up members" etcd_ready || exit 1
    endpoints=$ETCD_ENDPOINTS; flags=(--target etcd)
    for i in 1 2 3; do pids+=("${ETCD_PID[i]}"); dirs+=("$DATA/etcd-$i"); done
  fi
  log "  $target: ${GROWTH_SECONDS} s…"
  hammer_run "$report" --endpoints "$endpoints" "${flags[@]}" "${GROWTH_LOAD[@]}" --duration "${GROWTH_SECONDS}s"
  # Which member led at the end: its data directory may differ from the others'.
  if [ "$target" = raftkv ]; then leader=$(cluster leader 2>/dev/null) || leader=""
  else leader=$(etcd_leader "$ETCD_ENDPOINTS"); fi
  [[ "$leader" =~ ^[1-9][0-9]*$ ]] || leader=""
  for i in 0 1 2; do
    peaks+=("$(peak_rss_kb "${pids[i]}")")
    [ -n "${peaks[i]}" ] || { peaks[i]=null; gone+=("$((i + 1))"); }
    sizes+=("$(du -sb "${dirs[i]}" | cut -f1)")
  done
  jq -c --arg target "$target" --argjson duration "$GROWTH_SECONDS" --argjson window "$GROWTH_WINDOW_S" \
    --argjson leader "${leader:-null}" \
    --argjson peak_rss_kb "[$(IFS=,; echo "${peaks[*]}")]" --argjson data_dir_bytes "[$(IFS=,; echo "${sizes[*]}")]" \
    --argjson exited "[$(IFS=,; echo "${gone[*]}")]" '
    def rate(w): if (w | length) == 0 then null else (w | add) / (w | length) end;
    (.elapsed_s | floor) as $full
    | .longest_write_gap_ms as $longest
    | (.timeline | map({key: (.second | tostring), value: .writes}) | from_entries) as $by_second
    | [range(0; $full) | $by_second[tostring] // 0] as $writes
    | ([.write_gaps[] | select(.length_ms == $longest)] | .[0]) as $gap
    | { target: $target, duration_s: $duration, elapsed_s: .elapsed_s, leader_at_end: $leader,
        writes: (.by_kind.put.count // 0),
        writes_per_s: (.by_kind.put.throughput // 0), window_s: $window,
        first_window_writes_per_s: rate($writes[:$window]), last_window_writes_per_s: rate($writes[-$window:]),
        write_p99_ms: .by_kind.put.p99_ms, write_p999_ms: .by_kind.put.p999_ms, write_max_ms: .by_kind.put.max_ms,
        longest_write_gap_ms: $longest,
        longest_write_gap_start_s: $gap.start_s, longest_write_gap_edge: $gap.edge,
        failed_writes: ([.errors[]] | add // 0), ended_in_outage: .ended_in_outage,
        peak_rss_kb: $peak_rss_kb, data_dir_bytes: $data_dir_bytes, exited_members: $exited }' \
    "$report" >>"$DATA/growth.jsonl"
}

: >"$DATA/growth.jsonl"
if [ "$GROWTH" = 1 ]; then
  log "data growth: 64 clients, write-only, 1 KiB values over 200,000 keys, ${GROWTH_SECONDS} s per target"
  growth_run raftkv
  LOAD_RSS=$(node_rss); LOAD_RSS_AFTER="the data-growth run"
  # What raftkv does after the load (snapshots, log purges) would take cores from etcd's run.
  cluster down >/dev/null
  growth_run etcd
fi

if [ -z "${LOAD_RSS-}" ]; then LOAD_RSS=$(node_rss); LOAD_RSS_AFTER="the failover rounds (killed nodes restarted)"; fi

# --- the report -----------------------------------------------------------------

python3 - "$DATA" "$JSON" "$IDLE_RSS" "$LOAD_RSS" "$LOAD_RSS_AFTER" <<'PY'
import json, math, statistics, sys
data, as_json, idle, load = sys.argv[1], sys.argv[2] == "1", sys.argv[3].split(), sys.argv[4].split()
lines = lambda name: [json.loads(l) for l in open(f"{data}/{name}") if l.strip()]
meta, matrix, compare, failover = json.load(open(f"{data}/meta.json")), lines("matrix.jsonl"), lines("compare.jsonl"), lines("failover.jsonl")
growth = {g["target"]: g for g in lines("growth.jsonl")}
memory = {"idle_rss_mb": [float(x) for x in idle], "after_load_rss_mb": [float(x) for x in load], "after": sys.argv[5]}

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

def bounded_median(gaps, threshold=10):
    """The median of transfer gaps, where None is a gap under the threshold
    (hammer does not list those): a number, or "< 10" / "≤ N" when it rests
    on gaps known only to be under the threshold."""
    if not gaps:
        return None
    high = statistics.median([threshold if g is None else g for g in gaps])
    low = statistics.median([0 if g is None else g for g in gaps])
    if high == low:
        return high
    return f"< {threshold}" if high == threshold else f"≤ {high:.0f}"

# The table's throughput and latency rows: (label, measure, field of compare.jsonl).
ROWS = [("writes/s, 64 clients", "write-64", "writes_per_s"), ("writes/s, 1 client", "write-1", "writes_per_s"),
        ("linearizable reads/s, 64 clients", "read-64", "reads_per_s"), ("write p99 ms, 64 clients", "write-64", "write_p99_ms"),
        ("leader CPU µs per write, 64 clients", "write-64", "leader_cpu_us_per_write"),
        ("follower CPU µs per write, 64 clients", "write-64", "follower_cpu_us_per_write")]
def quotient(a, b):
    """a / b to two places; None where either is missing or not a number."""
    if a is None or not b or isinstance(a, str) or isinstance(b, str):
        return None
    return round(a / b, 2)

def ratios(row):
    """The table's ratio columns of a row, by name."""
    return {"raftkv/etcd": quotient(row.get("raftkv"), row.get("etcd")),
            "raftkv/ceiling": quotient(row.get("raftkv"), row.get("ceiling")),
            "etcd API/raftkv": quotient(row.get("raftkv-etcd"), row.get("raftkv"))}

table = []
if compare:
    for label, measure, field in ROWS:
        cells = {t: [c.get(field) for c in compare if c["measure"] == measure and c["target"] == t and c.get(field) is not None]
                 for t in ("raftkv", "raftkv-etcd", "etcd", "ceiling")}
        table.append({"measure": label, **{t: median(v) for t, v in cells.items()}, "rounds": cells})
kills = {t: [r for r in failover if r["kind"] == "kill" and r["target"] == t] for t in ("raftkv", "etcd")}
transfers = [r for r in failover if r["kind"] == "transfer"]
if failover:
    rounds = max(r["round"] for r in failover)
    table.append({"measure": "failover: write gap ms, kill -9 of the leader, 16 clients",
                  **{t: median([r["gap_ms"] for r in kills[t] if r["valid"]]) for t in kills}, "ceiling": None,
                  "valid_rounds": {t: sum(r["valid"] for r in kills[t]) for t in kills}, "rounds": rounds})
    for pause in sorted({r["pause_s"] for r in failover if r["kind"] == "pause"}):
        paused = {t: [r for r in failover if r["kind"] == "pause" and r["pause_s"] == pause and r["target"] == t]
                  for t in ("raftkv", "etcd")}
        table.append({"measure": f"failover: write gap ms, leader paused {pause} s, 16 clients",
                      **{t: median([r["gap_ms"] for r in paused[t] if r["valid"]]) for t in paused}, "ceiling": None,
                      "valid_rounds": {t: sum(r["valid"] for r in paused[t]) for t in paused}, "rounds": rounds})
    gaps = [r["gap_ms"] for r in transfers if r["valid"]]
    table.append({"measure": "leadership transfer: write gap ms, 16 clients", "raftkv": bounded_median(gaps),
                  "etcd": None, "ceiling": None, "valid_rounds": {"raftkv": len(gaps)}, "rounds": rounds})

for row in table:
    row["ratios"] = ratios(row)

if as_json:
    print(json.dumps({"cores": int(meta["cores"]), "run": meta, "cells": matrix, "comparison": table,
                      "failover_rounds": failover, "growth": list(growth.values()), "raftkv_memory": memory}, indent=2))
    sys.exit()

print(f"\ncommand: {meta['command']}")
print(f"machine: {meta['cores']} cores ({meta['cpu']}), {meta['memory']}, Linux {meta['kernel']}; load average "
      f"{meta['load']} before measuring; {meta['others']} other raftkv/etcd/hammer processes running; data on {meta['disk']}")
print(f"raftkv:  {meta['raftkv']}, release build; 3 nodes on loopback ({meta['tls']}, voters {meta['raftkv_voters']}), "
      f"node defaults ({meta['raftkv_timing']})")
if meta["etcd"]:
    print(f"etcd:    {meta['etcd']} (Debian etcd-server), 3 members on loopback ({meta['etcd_members']}), "
          f"defaults ({meta['etcd_timing']}); hammer spreads clients over all members")
    if compare:
        print("ceiling: hammer noop-server: etcd's KV.Put/Range answered at once, nothing stored, TCP_NODELAY")
if compare:
    print("etcd API: hammer's etcd target against the raftkv cluster, clients spread over every member "
          "(raftkv's own target sends writes to the leader)")
if matrix or compare or failover:
    print(f"client:  {meta['hammer']}, 256-byte values, 10,000 keys, linearizable reads, call timeout 2 s; "
          "same machine as the servers")

def f(v, digits=0):
    return "–" if v is None else v if isinstance(v, str) else f"{v:,.{digits}f}"

if matrix:
    g = lambda v: "-" if v is None else f"{v:.2f}"
    print(f"\n{'target':<7} {'clients':>7} {'workload':<8} {'ops/s':>8} {'writes/s':>9} {'reads/s':>8} {'w p50':>7} {'w p99':>7} {'r p50':>7} {'r p99':>7} {'errors':>6}")
    for c in matrix:
        print(f"{c['target']:<7} {c['clients']:>7} {c['workload']:<8} {c['ops_per_s']:>8} {c['write_ops_per_s']:>9} {c['read_ops_per_s']:>8} "
              f"{g(c['write_p50_ms']):>7} {g(c['write_p99_ms']):>7} {g(c['read_p50_ms']):>7} {g(c['read_p99_ms']):>7} {c['errors']:>6}")

if table:
    shown = lambda q: "–" if q is None else f"{q:.2f}"
    print("\n| measure | raftkv | raftkv, etcd API | etcd | gRPC ceiling | raftkv/etcd | raftkv/ceiling | etcd API/raftkv |"
          "\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in table:
        digits = 1 if "p99" in row["measure"] else 0
        q = row["ratios"]
        print(f"| {row['measure']} | {f(row['raftkv'], digits)} | {f(row.get('raftkv-etcd'), digits)} | {f(row['etcd'], digits)} "
              f"| {f(row['ceiling'], digits)} | {shown(q['raftkv/etcd'])} | {shown(q['raftkv/ceiling'])} "
              f"| {shown(q['etcd API/raftkv'])} |")
    if compare:
        print(f"\nmedians over rounds: {max(c['round'] for c in compare)}; every round: raftkv, raftkv's etcd API, etcd, ceiling in turn for each measure. Each round's values:")
        for row in table:
            if any(w in row["measure"] for w in ("writes/s", "reads/s", "p99", "CPU")):
                digits = 1 if "p99" in row["measure"] else 0
                print(f"  {row['measure']}: " + "; ".join(f"{t} {', '.join(f(v, digits) for v in vs)}" for t, vs in row["rounds"].items() if vs))
        errors = sum(c["errors"] for c in compare)
        print(f"  errors in these cells: {errors}")

if failover:
    print("\nfailover rounds (leader before -> after; gap in ms; * = not counted):")
    for r in failover:
        gap = r.get("gap_ms")
        gap = f"< {r['threshold_ms']:.0f}" if gap is None and r["valid"] else f(gap)
        what = {"kill": "kill -9 of the leader", "transfer": "leadership transfer"}.get(r["kind"]) \
            or f"leader paused {r.get('pause_s')} s"
        mark = " " if r["valid"] else "*"
        line = f" {mark}round {r['round']} {r['target']:<6} {what:<22} {r.get('leader_before')} -> {r.get('leader_after')}: {gap:>6}"
        if r["kind"] == "transfer":
            line += f"  (longest gap of the run {f(r.get('longest_gap_ms'))}; raft-admin: {r.get('tool_output')})"
        elif r.get("longest_gap_ms") not in (None, r.get("gap_ms")):
            line += f"  (longest gap of the run {f(r.get('longest_gap_ms'))})"
        if not r["valid"]:
            seen = ", ".join(f"{c['id']} at {c['at_s']} s" for c in r.get("leaders_seen", []))
            line += "  NOT COUNTED: " + "; ".join(r["problems"]) + (f" (hammer saw leaders {seen})" if seen else "")
        print(line)
    for t, rs in kills.items():
        values = sorted(r["gap_ms"] for r in rs if r["valid"])
        print(f"kill -9 of the {t} leader: median {f(median(values))} ms over {len(values)} valid of {len(rs)} rounds; all: {', '.join(f(v) for v in values)}")
    at_deadline = [r for r in kills["etcd"] if r["valid"] and 2000 <= r["gap_ms"] < 2050]
    if at_deadline:
        print(f"  {len(at_deadline)} of the etcd gaps end at hammer's 2 s call timeout: a write sent to an etcd follower "
              "while there is no leader waits for the client's deadline even after a new leader is elected, so those "
              "gaps measure the client's timeout rather than etcd's election")
    gaps = [r["gap_ms"] for r in transfers if r["valid"]]
    shown = ", ".join("< 10" if g is None else f(g) for g in sorted(gaps, key=lambda g: g or 0))
    print(f"raftkv leadership transfer: median {f(bounded_median(gaps))} ms over {len(gaps)} valid of {len(transfers)} rounds; all: {shown}")

if growth:
    quota = meta["etcd_storage"].replace("quota-backend-bytes 0,", "quota-backend-bytes 0 (the default quota, 2 GiB),")
    quota = quota.replace("auto-compaction-retention 0,", "auto-compaction-retention 0 (off: every revision is kept),")
    first = next(iter(growth.values()))
    window = first["window_s"]
    print(f"client:  {meta['hammer']}, 64 clients, write-only, 1 KiB values over 200,000 keys (uniformly random), "
          f"{first['duration_s']} s per target (until the last client stopped: "
          + ", ".join(f"{t} {g['elapsed_s']:.1f} s" for t, g in growth.items())
          + "), call timeout 2 s; same machine as the servers")
    print("growth:  one run each, raftkv first; raftkv is stopped before etcd's run, etcd idled through raftkv's")
    print(f"raftkv storage: {meta['raftkv_storage']}")
    print(f"etcd storage:   {quota}")
    mib = lambda v: None if v is None else v / 2**20
    def cell(t, *fields, digits=0, sep=" / "):
        g = growth.get(t)
        return "–" if g is None else sep.join(f(g[x], digits) for x in fields)
    def peak(t):
        g = growth.get(t)
        known = [v for v in (g or {}).get("peak_rss_kb", []) if v is not None]
        return max(known) / 1024 if known else None
    rows = [("writes/s, whole run", lambda t: cell(t, "writes_per_s"), "writes_per_s"),
            (f"writes/s, first {window} s -> last {window} s",
             lambda t: cell(t, "first_window_writes_per_s", "last_window_writes_per_s", sep=" -> "), None),
            ("write p99 / p99.9 / max ms", lambda t: cell(t, "write_p99_ms", "write_p999_ms", "write_max_ms", digits=1), None),
            ("longest write gap ms", lambda t: cell(t, "longest_write_gap_ms"), "longest_write_gap_ms"),
            ("failed writes", lambda t: cell(t, "failed_writes"), None),
            ("peak RSS of any member MiB (VmHWM)", lambda t: f(peak(t), 1), "peak"),
            ("data directory of member 1 at the end MiB (du -sb)",
             lambda t: "–" if t not in growth else f(mib(growth[t]["data_dir_bytes"][0]), 1), "dir")]
    def value(t, key):
        g = growth.get(t)
        if g is None:
            return None
        return peak(t) if key == "peak" else g["data_dir_bytes"][0] if key == "dir" else g[key]
    ratio = lambda a, b: "–" if a is None or not b else f"{a / b:.2f}"
    print("\n| data growth | raftkv | etcd | raftkv/etcd |\n|---|---:|---:|---:|")
    for label, show, key in rows:
        print(f"| {label} | {show('raftkv')} | {show('etcd')} | "
              f"{ratio(value('raftkv', key), value('etcd', key)) if key else '–'} |")
    for t, g in growth.items():
        written = g["writes"]
        distinct = 200000 * (1 - math.exp(-written / 200000))
        edge = {"start": ", the start of the run", "end": ", to the end of the run"}.get(g["longest_write_gap_edge"], "")
        gap_at = "" if g["longest_write_gap_start_s"] is None else f" (from {g['longest_write_gap_start_s']:.1f} s{edge})"
        print(f"{t}: {written:,} writes acknowledged, ~{distinct:,.0f} distinct keys expected "
              f"(~{distinct * 1024 / 2**20:,.0f} MiB of values); longest write gap {f(g['longest_write_gap_ms'])} ms{gap_at}; "
              f"peak RSS per member {', '.join(f(None if v is None else v / 1024, 1) for v in g['peak_rss_kb'])} MiB; "
              f"data directories {', '.join(f(mib(v), 1) for v in g['data_dir_bytes'])} MiB (members 1-3; "
              f"member {f(g['leader_at_end'])} led at the end)"
              + ("; ENDED IN AN OUTAGE" if g["ended_in_outage"] else "")
              + (f"; members {g['exited_members']} EXITED during the run" if g["exited_members"] else ""))

print(f"\nraftkv node RSS: idle {', '.join(idle)} MB; after {sys.argv[5]} {', '.join(load)} MB")
PY
