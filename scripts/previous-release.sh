#!/usr/bin/env bash
# Builds the previous release's node (0.1.0, commit PREVIOUS below) once and
# caches it, for the rolling-upgrade test; prints the binary's path as its
# last line.
#
#   scripts/previous-release.sh            build (or find) it
#   scripts/previous-release.sh --check    say whether it is built, build nothing
#
# The source comes from this repository's history (`git archive`); the build
# has its own target directory, so it never waits on, or disturbs, the
# workspace's. Exit status 3: it cannot be built here (a clone without that
# commit, no git), with the reason as the last line.
set -euo pipefail
cd "$(dirname "$0")/.."

# 0.1.0: the last release whose log entries are bincode of `Command`.
PREVIOUS=3ab590f04351019733171ed6c154792cdd44fdd6

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
check=false
case "${1:-}" in
  "") ;;
  --check) check=true ;;
  -h | --help) usage; exit 0 ;;
  *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
esac

cache="target/previous-release/$PREVIOUS"
binary="$cache/raftkv-node"
if [ -x "$binary" ]; then
  echo "$binary"
  exit 0
fi
if $check; then
  echo "not built yet: $binary"
  exit 1
fi
# One build at a time: the tests that need the binary run in parallel and
# each calls this script. A caller that waited finds the binary built.
mkdir -p target/previous-release
exec 9>target/previous-release/.lock
flock 9
if [ -x "$binary" ]; then
  echo "$binary"
  exit 0
fi
if ! command -v git >/dev/null || ! git rev-parse --git-dir >/dev/null 2>&1; then
  echo "cannot build the previous release: no git repository here"
  exit 3
fi
if ! git cat-file -e "$PREVIOUS^{commit}" 2>/dev/null; then
  echo "cannot build the previous release: commit $PREVIOUS is not in this clone (a shallow clone?)"
  exit 3
fi

source_dir="target/previous-release/src-$PREVIOUS"
rm -rf "$source_dir"
mkdir -p "$source_dir"
git archive "$PREVIOUS" | tar -x -C "$source_dir"
echo "building raftkv-node at ${PREVIOUS:0:12} (the previous release) in $source_dir" >&2
(
  cd "$source_dir"
  cargo build --locked -p raftkv-node --bin raftkv-node \
    --target-dir "$PWD/../target" >&2
)
mkdir -p "$cache"
cp "target/previous-release/target/debug/raftkv-node" "$binary.partial"
mv "$binary.partial" "$binary"
rm -rf "$source_dir"
echo "$binary"
