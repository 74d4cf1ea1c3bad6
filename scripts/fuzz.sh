#!/usr/bin/env bash
# A long fuzz campaign over what a node decodes from the network (gRPC
# requests, Raft messages and their checks, snapshot data, certificate
# names): the test suite's fuzz targets with many more inputs each, in a
# release build. Prints how many inputs each target tried; exits non-zero on
# the first input that panics (proptest prints it, shrunk).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CASES=200000

usage() {
  cat <<TXT
Usage: scripts/fuzz.sh [--cases N]

  --cases N   inputs per fuzz target (default 200000; the test suite uses 2000)
  -h, --help  this help
TXT
}

while [ $# -gt 0 ]; do
  case "$1" in
    --cases) CASES=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
[[ "$CASES" =~ ^[1-9][0-9]*$ ]] || { echo "--cases must be a positive number" >&2; exit 2; }

cd "$ROOT"
export RAFTKV_FUZZ_CASES=$CASES
started=$SECONDS
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# run WHAT TARGET FILTER [TEST-ARGS…]: one cargo test run, its fuzz lines
# shown, its verdict kept.
run() {
  local what=$1 target=$2 filter=$3; shift 3
  if ! cargo test --release -q -p raftkv-node "$target" -- "$filter" --nocapture --test-threads 1 "$@" >"$log" 2>&1; then
    cat "$log" >&2
    echo "fuzzing $what failed: an input panicked (shown above, shrunk)" >&2
    exit 1
  fi
  grep -E '^fuzz ' "$log" || true
}
# The decoders and checks (the live-node test is left to the test suite),
# then the certificate reader.
run "the decoders" "--test=node" test_fuzz:: --skip live_node
run "the certificate reader" --lib security::certificate
echo "fuzzing done in $((SECONDS - started)) s: $CASES inputs per target, none panicked"
