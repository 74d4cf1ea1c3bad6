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
