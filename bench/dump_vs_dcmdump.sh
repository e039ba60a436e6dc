#!/bin/bash
# pacsd dump against DCMTK's dcmdump, whole-process time, in one run on the
# same files:
#   corpus: the pydicom test files that both tools read without error
#   ct:     2,000 generated 512x512 16-bit CT instances (bench/gen_ct.py),
#           generated once into bench/.data/ct-2000-seed1/ and reused
# Each tool is run once with all files as arguments (hyperfine, 1 warm-up,
# 5 runs, output to /dev/null), then once per file in a shell loop over the
# corpus and over the first 200 CT files (process start-up dominates there).
# Prints "dump[SET]: pacsd X ms, dcmdump Y ms, ratio Y/X = Z" lines; hyperfine
# JSON goes to bench/.data/results/. Numbers are measured, never asserted.
#
# env: PACSD (default build/pacsd, the release build, built by `make` when
#      absent), DCMDUMP (default dcmdump), RUNS (5), CT_N (2000),
#      LOOP_CT_N (200), NO_LOOP=1 to skip the per-file loops.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=$ROOT/bench/.data
PY=/usr/bin/python3
RUNS=${RUNS:-5}
CT_N=${CT_N:-2000}
LOOP_CT_N=${LOOP_CT_N:-200}
DCMDUMP=${DCMDUMP:-dcmdump}
CORPUS=${PYDICOM_TEST_FILES:-/usr/lib/python3/dist-packages/pydicom/data/test_files}
CHARSETS=$(dirname "$CORPUS")/charset_files

if [ -z "${PACSD:-}" ]; then
    PACSD=$ROOT/build/pacsd
    if [ ! -x "$PACSD" ]; then
        echo "building the release binary (make)..." >&2
        make -C "$ROOT" >/dev/null
    fi
fi
for tool in "$PACSD" "$DCMDUMP" hyperfine; do
    command -v "$tool" >/dev/null || { echo "dump_vs_dcmdump: $tool not found" >&2; exit 2; }
done
mkdir -p "$DATA/results"

# --- the corpus: files both tools read, as symlinks in one directory --------
# Same rule as tests/integration/test_pydicom_corpus.py: skip README*, *.txt,
# *.json, *.dump, *.gz (documentation, JSON fixtures, dcmdump text, gzip).
LINKS=$DATA/corpus
rm -rf "$LINKS"
mkdir -p "$LINKS"
n=0
while IFS= read -r -d '' f; do
    case $(basename "$f") in README* | *.txt | *.json | *.dump | *.gz) continue ;; esac
    if "$PACSD" dump "$f" >/dev/null 2>&1 && "$DCMDUMP" -q "$f" >/dev/null 2>&1; then
        n=$((n + 1))
        ln -s "$f" "$LINKS/$(printf '%04d' $n)_$(basename "$f")"
    fi
done < <(find "$CORPUS" "$CHARSETS" -type f -print0 | sort -z)
CORPUS_N=$n
CORPUS_BYTES=$(du -sLb "$LINKS" | cut -f1)

# --- generated CT files, cached ----------------------------------------------
CT=$DATA/ct-$CT_N-seed1
if [ ! -f "$CT/.complete" ]; then
    echo "generating $CT_N CT files into $CT (once)..." >&2
    rm -rf "$CT"
    "$PY" "$ROOT/bench/gen_ct.py" "$CT" "$CT_N" --seed 1
    touch "$CT/.complete"
fi
CT_BYTES=$(du -sb "$CT" | cut -f1)
LOOPCT=$DATA/ct-loop-$LOOP_CT_N
rm -rf "$LOOPCT"
mkdir -p "$LOOPCT"
ct_files=("$CT"/*.dcm)
for f in "${ct_files[@]:0:$LOOP_CT_N}"; do ln -s "$f" "$LOOPCT/$(basename "$f")"; done

# --- measure -------------------------------------------------------------------
# bench NAME PACSD_CMD DCMDUMP_CMD: one hyperfine run holding both commands.
summary=()
bench() {
    local name=$1 pc=$2 dc=$3 json=$DATA/results/dump-$1.json
    hyperfine --style basic --warmup 1 --runs "$RUNS" --export-json "$json" \
        -n pacsd "$pc" -n dcmdump "$dc" >&2
    summary+=("$("$PY" - "$json" "$name" <<'EOF'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
p, d = r["pacsd"]["mean"] * 1e3, r["dcmdump"]["mean"] * 1e3
print("dump[%s]: pacsd %.1f ms, dcmdump %.1f ms, ratio Y/X = %.2f"
      % (sys.argv[2], p, d, d / p))
EOF
)")
}

echo "corpus: $CORPUS_N files, $CORPUS_BYTES bytes; ct: $CT_N files, $CT_BYTES bytes" >&2
bench corpus "$PACSD dump $LINKS/* >/dev/null" "$DCMDUMP $LINKS/* >/dev/null"
bench ct "$PACSD dump $CT/*.dcm >/dev/null" "$DCMDUMP $CT/*.dcm >/dev/null"
if [ -z "${NO_LOOP:-}" ]; then
    loop_runs=$(( RUNS < 3 ? RUNS : 3 ))
    RUNS=$loop_runs bench corpus-per-file \
        "for f in $LINKS/*; do $PACSD dump \$f; done >/dev/null" \
        "for f in $LINKS/*; do $DCMDUMP \$f; done >/dev/null"
    RUNS=$loop_runs bench "ct$LOOP_CT_N-per-file" \
        "for f in $LOOPCT/*; do $PACSD dump \$f; done >/dev/null" \
        "for f in $LOOPCT/*; do $DCMDUMP \$f; done >/dev/null"
fi

echo "== dump_vs_dcmdump: $CORPUS_N corpus files, $CT_N CT files; pacsd=$PACSD; $($DCMDUMP --version | head -1)"
printf '%s\n' "${summary[@]}"
