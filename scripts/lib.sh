# shellcheck shell=bash
# Helpers shared by the scripts in this folder (sourced, not run).

# wait_until SECONDS DESCRIPTION COMMAND...: runs COMMAND every 0.2 s until it
# succeeds; after SECONDS prints "timed out waiting until DESCRIPTION" and
# returns 1 (callers add `|| exit 1`).
wait_until() {
  local limit=$1 what=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then echo "timed out waiting until $what" >&2; return 1; fi
    sleep 0.2
  done
}

# A pid file can outlive its process (a reboot, a crash) and its pid can be
# reused by anything, so no script signals a pid before checking that the
# process is still the one it started, from /proc/PID/cmdline.

# is_process PID PROGRAM [ARG...]: true when process PID runs PROGRAM (the last
# component of its argv[0]) and every ARG is one of its arguments. False for a
# pid that is gone or a zombie (whose command line is empty).
is_process() {
  local pid=$1 program=$2 want have args=()
  shift 2
  [[ "$pid" =~ ^[1-9][0-9]*$ ]] || return 1
  { mapfile -d '' -t args <"/proc/$pid/cmdline"; } 2>/dev/null || return 1
  [ ${#args[@]} -gt 0 ] && [ "${args[0]##*/}" = "$program" ] || return 1
  for want in "$@"; do
    for have in "${args[@]:1}"; do [ "$have" = "$want" ] && continue 2; done
    return 1
  done
}

# process_command PID: the command line of process PID, arguments separated by
# spaces; nothing for a pid that is gone or a zombie.
process_command() {
  local args=()
  [[ "$1" =~ ^[1-9][0-9]*$ ]] || return 0
  { mapfile -d '' -t args <"/proc/$1/cmdline"; } 2>/dev/null || return 0
  echo "${args[*]}"
}

# is_raftkv_node PID DIR: true when process PID is a raftkv-node whose
# --data-dir is DIR (a relative --data-dir taken from the process's working
# directory, both compared as absolute paths).
is_raftkv_node() {
  local pid=$1 dir=$2 args=() i data=""
  is_process "$pid" raftkv-node || return 1
  { mapfile -d '' -t args <"/proc/$pid/cmdline"; } 2>/dev/null || return 1
  for ((i = 1; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
      --data-dir) data=${args[i + 1]-} ;;
      --data-dir=*) data=${args[i]#--data-dir=} ;;
    esac
  done
  [ -n "$data" ] || return 1
  if [[ "$data" != /* ]]; then
    local cwd
    cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null) || return 1
    data="$cwd/$data"
  fi
  [ "$(realpath -m -- "$data")" = "$(realpath -m -- "$dir")" ]
}

# node_pid DATA ID: prints the pid of node ID of the cluster.sh cluster in DATA
# (from DATA/node-ID.pid) if that process is still this node: a raftkv-node
# with --data-dir DATA/node-ID. Fails otherwise.
node_pid() {
  local f="$1/node-$2.pid" pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f" 2>/dev/null) || return 1
  is_raftkv_node "$pid" "$1/node-$2" || return 1
  echo "$pid"
}

# claim_dir DIR NAME PREVIOUS...: readies DIR, a directory the user named, for
# a run of scripts/NAME.sh, which never deletes it: creates it if missing and
# writes the marker DIR/.raftkv-NAME in it. A DIR that holds that marker is a
# previous run of the same script: its PREVIOUS entries (glob patterns inside
# DIR) are removed first. Refuses (says why, returns 1) a DIR that holds
# anything else, and one from which a cluster.sh cluster still runs.
claim_dir() {
  local dir=$1 marker=".raftkv-$2" script="scripts/$2.sh" f id pattern
  shift 2
  if [ -e "$dir" ] && [ ! -d "$dir" ]; then echo "$dir is not a directory" >&2; return 1; fi
  mkdir -p "$dir"
  for f in "$dir"/node-*.pid; do
    [ -f "$f" ] || continue
    id=$(basename "$f" .pid); id=${id#node-}
    if node_pid "$dir" "$id" >/dev/null; then
      echo "node $id of a cluster in $dir is still running: stop it first (scripts/cluster.sh --dir $dir down)" >&2
      return 1
    fi
  done
  if [ -f "$dir/$marker" ]; then
    for pattern in "$@"; do
      # shellcheck disable=SC2086 # the pattern is a glob
      (cd "$dir" && rm -rf -- $pattern)
    done
  elif [ -n "$(ls -A "$dir")" ]; then
    echo "$dir is not empty and is no earlier $script run (no $marker in it): refusing to use it; name a new or empty directory" >&2
    return 1
  fi
  echo "$script run directory (written $(date -u +%FT%TZ)); the next run with --dir here replaces that run's files" >"$dir/$marker"
}

# start_etcd_member DIR BASE_PORT I: starts member eI of a 3-member etcd on
# loopback in the background (again, from DIR/etcd-I if it holds its data):
# peers on BASE_PORT+101.., clients on BASE_PORT+111.., its log appended to
# DIR/etcd-I.log. $! is its pid afterwards.
# positive FLAG VALUE: exits (status 2) unless VALUE is a positive whole number.
positive() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || { echo "$1 needs a positive whole number, not '$2'" >&2; exit 2; }; }

# stop_etcd_members PID...: SIGTERM to each that is still an etcd, then waits for all.
stop_etcd_members() {
  local pid
  for pid in "$@"; do
    if is_process "$pid" etcd; then kill "$pid" 2>/dev/null || true; fi
  done
  for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

start_etcd_member() {
  local dir=$1 base=$2 i=$3 j initial=""
  for j in 1 2 3; do initial+="e$j=http://127.0.0.1:$((base + 100 + j)),"; done
  etcd --name "e$i" --data-dir "$dir/etcd-$i" \
    --listen-client-urls "http://127.0.0.1:$((base + 110 + i))" \
    --advertise-client-urls "http://127.0.0.1:$((base + 110 + i))" \
    --listen-peer-urls "http://127.0.0.1:$((base + 100 + i))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((base + 100 + i))" \
    --initial-cluster "${initial%,}" --initial-cluster-state new >>"$dir/etcd-$i.log" 2>&1 &
}
