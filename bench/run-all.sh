#!/bin/bash
# Runs every benchmark in bench/ and prints their summaries at the end:
#   bench/*.sh (except this script), each ending with its summary lines
#   after a "== name" header;
#   build/parse_bench (the in-process parser benchmark, bench/parse_bench.c,
#   built by `make`) when it exists, on a corpus file and a generated CT.
# Each benchmark measures pacsd and its peer in the same run and reports
# ratios; nothing is asserted. Env is passed through (PACSD, RUNS, ...).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${PYDICOM_TEST_FILES:-/usr/lib/python3/dist-packages/pydicom/data/test_files}
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
status=0

for script in "$ROOT"/bench/*.sh; do
    [ "$(basename "$script")" = run-all.sh ] && continue
    echo "--- running $(basename "$script")" >&2
    if ! bash "$script" >>"$LOG"; then
        echo "== $(basename "$script"): FAILED" >>"$LOG"
        status=1
    fi
done

PB=$ROOT/build/parse_bench
if [ -x "$PB" ]; then
    echo "--- running parse_bench" >&2
    CT=$(ls "$ROOT"/bench/.data/ct-*-seed1/ct_000000.dcm 2>/dev/null | head -1)
    if [ -z "$CT" ]; then
        "${PYTHON:-/usr/bin/python3}" "$ROOT/bench/gen_ct.py" "$ROOT/bench/.data/ct-1-seed1" 1 --seed 1
        CT=$ROOT/bench/.data/ct-1-seed1/ct_000000.dcm
    fi
    echo "== parse_bench (in-process parse up to Pixel Data)" >>"$LOG"
    for f in "$CORPUS/CT_small.dcm" "$CT"; do
        if out=$("$PB" "$f" 2>&1); then
            printf '%s: %s\n' "$(basename "$f")" "$out" >>"$LOG"
        else
            printf '%s: FAILED: %s\n' "$(basename "$f")" "$out" >>"$LOG"
            status=1
        fi
    done
else
    echo "(build/parse_bench not built: run make)" >&2
fi

echo
echo "===== bench summary ====="
cat "$LOG"
exit $status
