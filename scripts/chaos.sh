#!/usr/bin/env bash
# hammer under repeated faults: kill -9 and restart of the leader or a random
# node, SIGSTOP/SIGCONT of the leader, leadership transfers. Ends with hammer's
# --verify and the linearizability check of the recorded history, and prints
# each fault with its measured unavailability window.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
DURATION=60
INTERVAL=5
CLIENTS=16
TARGET=raftkv
# Below the kernel's ephemeral port range (32768-60999 by default), clear of
# cluster.sh (27051), demo.sh (27151) and bench.sh (27251, etcd 27352-27364).
BASE_PORT=27451
DATA=""
KEEP=0
DISK_FAULTS=0
DISK_MB=512
BLKIO=/sys/fs/cgroup/blkio

usage() {
  cat <<TXT
Usage: scripts/chaos.sh [--duration SECONDS] [--interval SECONDS] [--clients N] [--long] [--dir DIR] [--keep]
                        [--target raftkv|etcd] [--disk-faults [--disk-mb MB]]

Starts a 3-node cluster on 127.0.0.1:$BASE_PORT-$((BASE_PORT + 2)), runs hammer (--verify --history)
and injects one fault every INTERVAL seconds: kill -9 of the leader or of a
random node (restarted two seconds later), SIGSTOP of the leader for 3 s (1 s
when INTERVAL is under 5; a hung leader keeps its connections open, so only
asking finds the new one), or a leadership transfer. At the end: each fault
with the longest window without a successful write that followed it, lost
acknowledged writes, and the linearizability verdict of the history (hammer
check).

A restart that fails (the node exits, e.g. its port is taken, or does not
answer in 30 s) does not end the run: it is reported and counted, and the node
is started again at each following interval instead of a new fault until it is
back. The summary lists every failed restart and any node still down.

  --duration SECONDS  length of the run (default 60)
  --interval SECONDS  time between faults (default 5)
  --clients N         hammer clients (default 16)
  --long              30 minutes, a fault every 30 s (at least 50 faults)
  --dir DIR           data, logs, history and report (default: a new temporary
                      directory, removed at the end unless --keep). A DIR you
                      name is never removed: it must be new, empty, or hold an
                      earlier chaos.sh run (marker file .raftkv-chaos), whose
                      files this run replaces; any other DIR is refused
  --keep              keep the temporary data directory
  --target T          the API hammer loads the cluster through: raftkv (the
                      default; writes go to the leader) or etcd (etcd's API,
                      each client on one node, so followers serve two writes
                      in three and propose them through the leader)
  --disk-faults       also disk faults (as root): each node's data directory is
                      its own ext4 filesystem on a loop device (--disk-mb,
                      default 512), and every second fault is a disk fault,
                      full and slow in turn. Full: a random node's filesystem
                      is filled to the last block until the node stops for
                      want of room (at most 15 s), 3 s more, then freed; the
                      node must answer again within 30 s with no restart, or
                      the run fails (status 3). Slow: a random node is held to
                      5 write IOPS (cgroup v1 blkio) for 3 s. Each line says
                      whether the fault bit. Refused, with the reason, where
                      root, losetup, mkfs.ext4, fallocate or blkio are missing

Exit status: 0 when hammer passed and every restart succeeded; 1 when hammer
reported a failure; 3 when hammer passed but a restart failed or a node did
not come back from a full disk by itself; 2 for bad
arguments or a --dir that is refused.
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
    --target) TARGET=$2; shift 2 ;;
    --disk-faults) DISK_FAULTS=1; shift ;;
    --disk-mb) DISK_MB=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
[[ "$TARGET" =~ ^(raftkv|etcd)$ ]] || { echo "--target is raftkv or etcd" >&2; exit 2; }
[[ "$DURATION" =~ ^[0-9]+$ && "$INTERVAL" =~ ^[0-9]+$ && "$INTERVAL" -ge 3 && "$DURATION" -gt "$INTERVAL" ]] \
  || { echo "--duration and --interval are whole seconds, interval >= 3, duration > interval" >&2; exit 2; }
# A pause that ends before the next fault is due.
PAUSE_S=$(( INTERVAL >= 5 ? 3 : 1 ))
if [ "$DISK_FAULTS" = 1 ]; then
  [[ "$DISK_MB" =~ ^[0-9]+$ && "$DISK_MB" -ge 64 ]] || { echo "--disk-mb is a whole number of MB, at least 64" >&2; exit 2; }
  [ "$(id -u)" = 0 ] || { echo "--disk-faults needs root (loop devices, mounts, cgroups)" >&2; exit 2; }
  for tool in losetup mkfs.ext4 fallocate mount umount; do
    command -v "$tool" >/dev/null || { echo "--disk-faults needs $tool, which is not installed" >&2; exit 2; }
  done
  [ -f "$BLKIO/blkio.throttle.write_iops_device" ] \
    || { echo "--disk-faults needs the cgroup v1 blkio controller at $BLKIO, which this kernel lacks" >&2; exit 2; }
fi
# Only a directory this script created is ever removed.
CREATED=0
if [ -z "$DATA" ]; then
  DATA=$(mktemp -d /tmp/raftkv-chaos.XXXXXX)
  CREATED=1
else
  claim_dir "$DATA" chaos 'node-*' history.jsonl report.json hammer.err faults.tsv restarts.tsv || exit 2
  DATA=$(cd "$DATA" && pwd)
fi

cluster() { "$ROOT/scripts/cluster.sh" --dir "$DATA" --base-port "$BASE_PORT" "$@"; }
BIN="$ROOT/target/release"
HAMMER_PID=""
STOPPED_PID=""
STOPPED_NODE=""
cleanup() {
  if [ -n "$STOPPED_PID" ] && is_raftkv_node "$STOPPED_PID" "$DATA/node-$STOPPED_NODE"; then
    kill -CONT "$STOPPED_PID" 2>/dev/null || true
  fi
  # hammer is this shell's child, not yet waited for: its pid cannot have been reused.
  [ -n "$HAMMER_PID" ] && kill "$HAMMER_PID" 2>/dev/null || true
  cluster down >/dev/null 2>&1 || true
  remove_disks
  if [ "$CREATED" = 1 ] && [ "$KEEP" = 0 ]; then rm -rf "$DATA"
  else echo "data, logs, history and report kept in $DATA"; fi
}
LOOPS=()
CGROUP=""
# remove_disks: the loop filesystems and the cgroup of --disk-faults, if any.
remove_disks() {
  local i pid
  if [ -n "$CGROUP" ] && [ -d "$CGROUP" ]; then
    while read -r pid; do echo "$pid" >"$BLKIO/cgroup.procs" 2>/dev/null || true; done <"$CGROUP/cgroup.procs"
    rmdir "$CGROUP" 2>/dev/null || true
  fi
  for i in "${!LOOPS[@]}"; do
    umount "$DATA/node-$i" 2>/dev/null || true
    losetup -d "${LOOPS[i]}" 2>/dev/null || true
  done
}
trap cleanup EXIT

# Each node's data directory on a filesystem of its own, before the nodes start.
if [ "$DISK_FAULTS" = 1 ]; then
  for i in 1 2 3; do
    mountpoint -q "$DATA/node-$i" 2>/dev/null && { echo "$DATA/node-$i is already a mount point" >&2; exit 2; }
    truncate -s "${DISK_MB}M" "$DATA/disk-$i.img"
    mkfs.ext4 -q -F -m 0 "$DATA/disk-$i.img"
    LOOPS[i]=$(losetup --find --show "$DATA/disk-$i.img")
    mkdir -p "$DATA/node-$i"
    mount "${LOOPS[i]}" "$DATA/node-$i"
  done
  CGROUP="$BLKIO/raftkv-chaos-$$"
  mkdir -p "$CGROUP"
fi

(cd "$ROOT" && cargo build --release -q -p raftkv-node -p raft-admin -p hammer)
cluster up 3 >/dev/null
# The addresses the nodes printed when they bound their ports.
ENDPOINTS=$(cat "$DATA/node-1.addr" "$DATA/node-2.addr" "$DATA/node-3.addr" | paste -sd, -)
echo "cluster up at $ENDPOINTS; hammer ($TARGET's API) for ${DURATION}s with a fault every ${INTERVAL}s"
QUOTA=$("$BIN/raft-admin" --leader "multi:///$ENDPOINTS" alarm list 2>/dev/null | sed -n 's/^store: .* of \([0-9]*\) bytes.*/\1/p')
echo "size quota the nodes chose: ${QUOTA:-unknown} bytes$([ "$DISK_FAULTS" = 1 ] && echo "; data directories on ${DISK_MB} MB filesystems")"

"$BIN/hammer" --target "$TARGET" --endpoints "$ENDPOINTS" --clients "$CLIENTS" --duration "${DURATION}s" --keys 10000 \
  --verify --history "$DATA/history.jsonl" --json >"$DATA/report.json" 2>"$DATA/hammer.err" &
HAMMER_PID=$!
START=$(date +%s.%N)
: >"$DATA/faults.tsv"
: >"$DATA/restarts.tsv"
now() { python3 -c "import time; print(f'{time.time() - $START:.2f}')"; }

RESTART_FAILURES=0
DOWN=""  # nodes whose restart failed, " 1 3 ": started again at each interval
# restart NODE: starts NODE again; if that fails, reports and counts it, and
# marks NODE down so that the next intervals retry it.
restart() {
  local t out
  t=$(now)
  if out=$(cluster start "$1" 2>&1); then
    DOWN=${DOWN// $1 / }
    return 0
  fi
  RESTART_FAILURES=$((RESTART_FAILURES + 1))
  [[ "$DOWN" == *" $1 "* ]] || DOWN="${DOWN:- }$1 "
  out=$(echo "$out" | { grep -v '^ *(log: ' || true; } | sed 's/^ *//' | paste -sd' ' - | cut -c1-300)
  printf '%s\tnode %s\t%s\n' "$t" "$1" "$out" >>"$DATA/restarts.tsv"
  echo "  $t s: restart of node $1 failed (will retry): $out" >&2
  return 1
}
restart_when_down() {  # node id
  sleep 2
  restart "$1" || true
}
# fault_failed KIND NODE: a fault that could not be injected; a node found not
# running is marked down, to be started again.
fault_failed() {
  echo "$(now)	$1-failed	node $2" >>"$DATA/faults.tsv"
  if ! node_pid "$DATA" "$2" >/dev/null && [[ "$DOWN" != *" $2 "* ]]; then DOWN="${DOWN:- }$2 "; fi
}

DISK_FAILURES=0
# device_numbers NODE: major:minor of NODE's loop device.
device_numbers() { cat "/sys/class/block/$(basename "${LOOPS[$1]}")/dev"; }
# throttled_writes NODE: writes to NODE's disk the cgroup has counted.
throttled_writes() {
  awk -v dev="$(device_numbers "$1")" '$1 == dev && $2 == "Write" {n += $3} END {print n + 0}' \
    "$CGROUP/blkio.throttle.io_serviced"
}
# answers NODE: whether NODE answers a status call.
answers() { "$BIN/raft-admin" "$(cat "$DATA/node-$1.addr")" --timeout 1s state >/dev/null 2>&1; }

# disk_full NODE: fills NODE's filesystem until the node stops for want of
# room (15 s at most), keeps it full 3 s more, frees it, and waits up to 30 s
# for the node to answer again by itself.
disk_full() {
  local node=$1 t log_size free waited=0 hit="" back=""
  t=$(now)
  log_size=$(wc -c <"$DATA/node-$node.log")
  free=$(df -B1 --output=avail "$DATA/node-$node" | tail -n 1 | tr -d ' ')
  fallocate -l "$free" "$DATA/node-$node/filler" 2>/dev/null || true
  dd if=/dev/zero of="$DATA/node-$node/filler-rest" bs=64k 2>/dev/null || true
  while [ "$waited" -lt 150 ]; do
    if tail -c +"$((log_size + 1))" "$DATA/node-$node.log" | grep -q "the disk is full"; then hit=1; break; fi
    sleep 0.1; waited=$((waited + 1))
  done
  [ -n "$hit" ] && sleep 3
  rm -f "$DATA/node-$node/filler" "$DATA/node-$node/filler-rest"
  local freed
  freed=$(python3 -c "import time; print(time.time())")
  for _ in $(seq 1 300); do
    if answers "$node"; then back=$(python3 -c "import time; print(f'{time.time() - $freed:.1f}')"); break; fi
    sleep 0.1
  done
  if [ -z "$hit" ]; then
    echo "$t	disk-full	node $node: not hit (the node never ran out of room)" >>"$DATA/faults.tsv"
  elif [ -n "$back" ]; then
    echo "$t	disk-full	node $node: stopped after $((waited / 10)) s, back ${back} s after the room returned" >>"$DATA/faults.tsv"
  else
    DISK_FAILURES=$((DISK_FAILURES + 1))
    echo "$t	disk-full	node $node: NOT back 30 s after the room returned" >>"$DATA/faults.tsv"
  fi
}

# disk_slow NODE LEADER: holds NODE to 5 write IOPS for 3 s.
disk_slow() {
  local node=$1 leader=$2 t pid before dev
  pid=$(node_pid "$DATA" "$node") || { fault_failed disk-slow "$node"; return; }
  dev=$(device_numbers "$node")
  t=$(now)
  echo "$dev 5" >"$CGROUP/blkio.throttle.write_iops_device"
  echo "$pid" >"$CGROUP/cgroup.procs"
  before=$(throttled_writes "$node")
  sleep 3
  echo "$dev 0" >"$CGROUP/blkio.throttle.write_iops_device"
  echo "$pid" >"$BLKIO/cgroup.procs" 2>/dev/null || true
  echo "$t	disk-slow	node $node$([ "$node" = "$leader" ] && echo ' (leader)') at 5 write IOPS for 3 s: $(( $(throttled_writes "$node") - before )) writes throttled" >>"$DATA/faults.tsv"
}

FAULTS=0
while true; do
  sleep "$INTERVAL"
  python3 -c "import sys; sys.exit(0 if $(now) + 3 < $DURATION else 1)" || break
  if [ -n "${DOWN// /}" ]; then
    # A node is down after a failed restart: start it again instead of a new fault.
    for node in $DOWN; do restart "$node" || true; done
    if [ -n "${DOWN// /}" ]; then detail="node(s)${DOWN% } still down after a failed restart"
    else detail="a node restarted on retry"; fi
    echo "$(now)	skipped	$detail" >>"$DATA/faults.tsv"
    echo "  $(tail -n 1 "$DATA/faults.tsv")"
    continue
  fi
  leader=$(cluster leader 2>/dev/null || true)
  [ -n "$leader" ] || { echo "$(now)	no-leader	-" >>"$DATA/faults.tsv"; continue; }
  FAULTS=$((FAULTS + 1))
  if [ "$DISK_FAULTS" = 1 ] && [ $((FAULTS % 2)) = 0 ]; then
    if [ $((FAULTS % 4)) = 0 ]; then disk_full $((RANDOM % 3 + 1)); else disk_slow $((RANDOM % 3 + 1)) "$leader"; fi
    echo "  $(tail -n 1 "$DATA/faults.tsv")"
    continue
  fi
  case $((RANDOM % 4)) in
    0) t=$(now)
       if cluster kill "$leader"; then
         echo "$t	kill-leader	node $leader" >>"$DATA/faults.tsv"; restart_when_down "$leader"
       else fault_failed kill "$leader"; fi ;;
    1) victim=$((RANDOM % 3 + 1)); t=$(now)
       if cluster kill "$victim"; then
         echo "$t	kill-node	node $victim$([ "$victim" = "$leader" ] && echo ' (leader)')" >>"$DATA/faults.tsv"
         restart_when_down "$victim"
       else fault_failed kill "$victim"; fi ;;
    2) if STOPPED_PID=$(node_pid "$DATA" "$leader"); then
         STOPPED_NODE=$leader; t=$(now); kill -STOP "$STOPPED_PID"
         echo "$t	pause-leader	node $leader for ${PAUSE_S}s" >>"$DATA/faults.tsv"; sleep "$PAUSE_S"
         kill -CONT "$STOPPED_PID"; STOPPED_PID=""
       else STOPPED_PID=""; fault_failed pause "$leader"; fi ;;
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

python3 - "$DATA/report.json" "$DATA/faults.tsv" "$CHECK" "$DATA/restarts.tsv" "$DOWN" <<'PY'
import json, sys, statistics
r = json.load(open(sys.argv[1]))
faults = [l.rstrip("\n").split("\t") for l in open(sys.argv[2]) if l.strip()]
restarts = [l.rstrip("\n").split("\t") for l in open(sys.argv[4]) if l.strip()]
down = sys.argv[5].split()
# Rows that are no fault: an interval without a leader, or without a fault
# because a node was down, or a fault that could not be injected.
not_faults = lambda kind: kind in ("no-leader", "skipped") or kind.endswith("-failed")
gaps = r["write_gaps"]
print(f"\n{'fault':<14} {'t (s)':>7} {'window (ms)':>12}  detail")
windows = []
for t, kind, detail in faults:
    t = float(t)
    near = [g["length_ms"] for g in gaps if t - 0.5 <= g["start_s"] <= t + 2.5]
    w = max(near) if near and not not_faults(kind) else None
    if w is not None:
        windows.append(w)
    print(f"{kind:<14} {t:>7.2f} {('-' if w is None else f'{w:.0f}'):>12}  {detail}")
injected = sum(not not_faults(kind) for _, kind, _ in faults)
print(f"\nfaults: {injected} ({len(faults) - injected} intervals without one); windows over {len(windows)} faults with a gap >= threshold")
if windows:
    q = sorted(windows)
    print(f"unavailability p50 {statistics.median(q):.0f} ms, p99 {q[min(len(q)-1, int(len(q)*0.99))]:.0f} ms, max {q[-1]:.0f} ms")
print(f"operations {r['operations']}, {r['throughput']:.0f} ops/s, unknown outcomes {r['unknown_outcomes']}, errors {r['errors']}")
v = r.get("verify") or {}
print(f"lost acknowledged writes: {v.get('lost_acknowledged_writes')}")
print(f"linearizability: {sys.argv[3]}")
print(f"failed restarts: {len(restarts)}" + (f"; still down at the end: node(s) {', '.join(down)}" if down else ""))
for t, node, why in restarts:
    print(f"  {float(t):>7.2f} s  {node}: {why}")
PY
[ "$HAMMER_STATUS" = 0 ] || { echo "hammer reported a failure:" >&2; cat "$DATA/hammer.err" >&2; exit 1; }
if [ "$DISK_FAILURES" -gt 0 ]; then
  echo "$DISK_FAILURES node(s) did not come back by themselves from a full disk (listed above)" >&2
  exit 3
fi
if [ "$RESTART_FAILURES" -gt 0 ]; then
  echo "$RESTART_FAILURES restart(s) failed during the run (listed above)" >&2
  exit 3
fi
