#!/bin/bash
# Runs every benchmark in bench/ and prints their summaries at the end:
#   bench/*.sh (except this script), each ending with its summary lines
#   after a "== name" header;
#   bench/dimse_store.py and bench/dimse_find.py (DICOM network: C-STORE
#   and C-FIND against Orthanc and storescp) unless NO_DIMSE=1;
#   bench/http_stow.py, http_qido.py, http_wado.py (DICOMweb against
#   Orthanc + its DICOMweb plugin, wrk) unless NO_HTTP=1;
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

# DICOM network benchmarks (Python, DCMTK storescu/storescp, Orthanc):
# bench/dimse_*.py print their summaries on stdout. DIMSE_FIND_N scales the
# C-FIND index (default 100000 instances; loading Orthanc takes minutes),
# DIMSE_STORE_ROUNDS the C-STORE rounds (default 3); NO_DIMSE=1 skips both.
if [ -z "${NO_DIMSE:-}" ]; then
    for py in dimse_store.py dimse_find.py; do
        args=()
        [ $py = dimse_store.py ] && args=(--rounds "${DIMSE_STORE_ROUNDS:-3}")
        [ $py = dimse_find.py ] && args=(--instances "${DIMSE_FIND_N:-100000}")
        echo "--- running $py" >&2
        if ! "${PYTHON:-/usr/bin/python3}" "$ROOT/bench/$py" "${args[@]}" >>"$LOG"; then
            echo "== $py: FAILED" >>"$LOG"
            status=1
        fi
    done
fi

# HTTP benchmarks (DICOMweb, Python http.client, wrk, Orthanc + DICOMweb
# plugin): bench/http_*.py print their summaries on stdout. HTTP_QIDO_N
# scales the QIDO index (default 100000 instances); NO_HTTP=1 skips them;
# HTTP_QUICK=1 runs them in --quick mode (small sizes).
if [ -z "${NO_HTTP:-}" ]; then
    for py in http_stow.py http_qido.py http_wado.py; do
        args=()
        [ -n "${HTTP_QUICK:-}" ] && args+=(--quick)
        [ $py = http_qido.py ] && [ -n "${HTTP_QIDO_N:-}" ] && args+=(--instances "$HTTP_QIDO_N")
        echo "--- running $py ${args[*]}" >&2
        if ! "${PYTHON:-/usr/bin/python3}" "$ROOT/bench/$py" "${args[@]}" >>"$LOG"; then
            echo "== $py: FAILED" >>"$LOG"
            status=1
        fi
    done
fi

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
