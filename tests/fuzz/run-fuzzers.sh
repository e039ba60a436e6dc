#!/bin/sh
# Runs every libFuzzer target built in BUILD for SECONDS each, starting from
# the committed corpus. New inputs go to a scratch corpus (not the tree):
# minimise and copy the interesting ones into tests/fuzz/corpus/ by hand.
# Crash reproducers are left in BUILD/fuzz-artifacts/.
set -eu
build=${1:-build-fuzz}
seconds=${2:-60}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$build/fuzz-artifacts"
status=0
for bin in "$build"/tests/fuzz/fuzz_*; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin")
  scratch="$build/fuzz-corpus/$name"
  mkdir -p "$scratch"
  echo "== $name: ${seconds}s"
  if ! "$bin" -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$build/fuzz-artifacts/$name-" "$scratch" "$here/corpus/$name" 2>"$build/$name.log"; then
    status=1
    echo "$name: crash, see $build/$name.log and $build/fuzz-artifacts/"
  fi
  grep -E 'stat::number_of_executed_units|stat::new_units_added' "$build/$name.log" || true
done
exit $status
