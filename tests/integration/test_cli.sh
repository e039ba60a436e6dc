#!/bin/bash
# CLI behaviour of the pacsd binary: version, usage, dump over good and bad
# files, one-line errors, raw data sets read with --ts, and `pacsd json`
# producing valid JSON. Env (from ctest): PACSD, PACSD_SOURCE,
# PYDICOM_TEST_FILES. Ends with "N passed, N failed"; exits 1 on any failure.
set -u

PACSD=${PACSD:?PACSD must name the pacsd binary}
PACSD_SOURCE=${PACSD_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
CORPUS=${PYDICOM_TEST_FILES:-/usr/lib/python3/dist-packages/pydicom/data/test_files}
PY=/usr/bin/python3
GOOD1=$CORPUS/CT_small.dcm
GOOD2=$CORPUS/MR_small.dcm
ENCAPS=$CORPUS/JPEG2000.dcm

T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok - $1"; }
nok() { fail=$((fail + 1)); echo "FAIL - $1"; }
check() { # check DESCRIPTION COMMAND...: passes when COMMAND succeeds
    local d=$1; shift
    if "$@"; then ok "$d"; else nok "$d"; fi
}
# run ARGS...: runs pacsd, leaving stdout in $T/out, stderr in $T/err, status in $rc
run() {
    "$PACSD" "$@" >"$T/out" 2>"$T/err"
    rc=$?
}
lines() { # number of lines in a file (a last line without newline counts)
    awk 'END { print NR }' "$1"
}

# --- version and usage ------------------------------------------------------
want_version=$(sed -n 's/^project(pacsd VERSION \([0-9.]*\).*/\1/p' "$PACSD_SOURCE/CMakeLists.txt")
run version
check "version exits 0" test "$rc" -eq 0
check "version prints 'pacsd $want_version'" test "$(cat "$T/out")" = "pacsd $want_version"

run
check "no arguments exits 0" test "$rc" -eq 0
check "no arguments prints usage on stdout" grep -q '^usage: pacsd COMMAND' "$T/out"
check "no arguments lists the commands" grep -qE '^  (dump|json|convert|version)' "$T/out"
check "no arguments prints nothing on stderr" test ! -s "$T/err"

run no-such-command
check "unknown command exits 2" test "$rc" -eq 2
check "unknown command names it on stderr" grep -q "unknown command 'no-such-command'" "$T/err"

# --- dump good bad good -------------------------------------------------------
head -c 3000 "$GOOD1" >"$T/bad.dcm" # cut inside an element
run dump "$GOOD1" "$T/bad.dcm" "$GOOD2"
check "dump good bad good exits 1" test "$rc" -eq 1
check "dump good bad good prints two files" \
    test "$(grep -c '^# Dicom-File-Format' "$T/out")" -eq 2
sop1=$($PY -c 'import sys,pydicom; print(pydicom.dcmread(sys.argv[1]).SOPInstanceUID)' "$GOOD1")
sop2=$($PY -c 'import sys,pydicom; print(pydicom.dcmread(sys.argv[1]).SOPInstanceUID)' "$GOOD2")
check "dump prints the first good file" grep -qF "[$sop1]" "$T/out"
check "dump prints the good file after the bad one" grep -qF "[$sop2]" "$T/out"
check "dump prints the good files in order" \
    test "$(grep -nF "[$sop1]" "$T/out" | head -1 | cut -d: -f1)" -lt \
         "$(grep -nF "[$sop2]" "$T/out" | head -1 | cut -d: -f1)"
check "dump gives exactly one error line" test "$(lines "$T/err")" -eq 1
check "the error line names the bad file with an offset" \
    grep -qE "^pacsd: $T/bad\.dcm: offset [0-9]+: .+" "$T/err"
# the dump of the good files equals their dumps alone
"$PACSD" dump "$GOOD1" "$GOOD2" >"$T/out2" 2>/dev/null
check "dump output of the good files is unaffected by the bad one" cmp -s "$T/out" "$T/out2"

# --- one-line errors: directory, empty file, missing file ----------------------
: >"$T/empty.dcm"
for what in directory empty missing; do
    case $what in
    directory) bad=$T ;;
    empty) bad=$T/empty.dcm ;;
    missing) bad=$T/missing.dcm ;;
    esac
    run dump "$bad"
    check "dump ($what): exits 1" test "$rc" -eq 1
    check "dump ($what): one error line naming it" \
        test "$(lines "$T/err")" -eq 1 -a "$(grep -cE "^pacsd: $bad: .+" "$T/err")" -eq 1
    check "dump ($what): nothing on stdout" test ! -s "$T/out"
done
run dump "$T" "$T/empty.dcm" "$T/missing.dcm" "$GOOD1"
check "three bad files and a good one: three error lines, exit 1" \
    test "$rc" -eq 1 -a "$(lines "$T/err")" -eq 3
check "three bad files and a good one: the good one printed" grep -qF "[$sop1]" "$T/out"

# --- raw data set read with --ts ----------------------------------------------
run convert --ts implicit "$GOOD1" "$T/implicit.dcm"
check "convert to implicit succeeds" test "$rc" -eq 0
# strip preamble, DICM and the meta group (its length is in (0002,0000))
$PY - "$T/implicit.dcm" "$T/raw.bin" <<'EOF'
import struct, sys
b = open(sys.argv[1], "rb").read()
assert b[128:132] == b"DICM" and b[132:136] == b"\x02\x00\x00\x00" and b[136:138] == b"UL"
glen = struct.unpack("<I", b[140:144])[0]
open(sys.argv[2], "wb").write(b[144 + glen:])
EOF
check "raw implicit data set written" test -s "$T/raw.bin"
run dump --ts 1.2.840.10008.1.2 "$T/raw.bin"
check "dump --ts 1.2.840.10008.1.2 raw exits 0" test "$rc" -eq 0
check "dump --ts of a raw data set says there is no meta group" \
    test "$(grep -c '^(0002,' "$T/out")" -eq 0
# Elements of the data set section must equal those of the Part 10 file.
sed -n '/^# Dicom-Data-Set/,$p' "$T/out" | grep -v '^#' >"$T/raw.elems"
"$PACSD" dump "$T/implicit.dcm" | sed -n '/^# Dicom-Data-Set/,$p' | grep -v '^#' >"$T/p10.elems"
check "raw data set dumps the same elements as the Part 10 file" \
    test -s "$T/raw.elems" -a "$(cmp -s "$T/raw.elems" "$T/p10.elems"; echo $?)" = 0
check "raw data set has the SOP Instance UID" grep -qF "[$sop1]" "$T/raw.elems"
run dump --ts implicit "$T/raw.bin"
check "dump --ts implicit (short name) reads the raw data set" test "$rc" -eq 0
run dump --ts 1.2.840.10008.1.2.2 "$T/raw.bin"
check "dump --ts big-endian of an implicit LE data set fails with one line" \
    test "$rc" -eq 1 -a "$(lines "$T/err")" -eq 1

# --- json ----------------------------------------------------------------------
run json "$GOOD1"
check "json exits 0" test "$rc" -eq 0
check "json prints one line" test "$(lines "$T/out")" -eq 1
check "json output is valid JSON (python3 -m json.tool)" \
    $PY -m json.tool "$T/out" "$T/out.pretty"
check "json has SOP Instance UID as a DICOM JSON element" \
    $PY -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["00080018"]=={"vr":"UI","Value":[sys.argv[2]]}, d["00080018"]' "$T/out" "$sop1"
check "json has no meta group" \
    $PY -c 'import json,sys; d=json.load(open(sys.argv[1])); assert not [k for k in d if k.startswith("0002")]' "$T/out"
run json "$GOOD1" "$T/bad.dcm" "$GOOD2"
check "json good bad good exits 1 with one error line" \
    test "$rc" -eq 1 -a "$(lines "$T/err")" -eq 1
check "json good bad good prints one valid object per good file" \
    $PY -c '
import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert len(lines) == 2, len(lines)
for l in lines:
    assert isinstance(json.loads(l), dict)' "$T/out"
run json --pretty "$GOOD2"
check "json --pretty is valid JSON over several lines" \
    test "$rc" -eq 0 -a "$(lines "$T/out")" -gt 10
check "json --pretty parses" $PY -m json.tool "$T/out" /dev/null
run json --ts 1.2.840.10008.1.2 "$T/raw.bin"
check "json --ts reads the raw data set" test "$rc" -eq 0
"$PACSD" json "$T/implicit.dcm" >"$T/p10.json" 2>/dev/null
check "json of the raw data set equals that of the Part 10 file" \
    test -s "$T/out" -a "$(cmp -s "$T/out" "$T/p10.json"; echo $?)" = 0

# --- convert error path ----------------------------------------------------------
run convert --ts implicit "$ENCAPS" "$T/never.dcm"
check "convert encapsulated -> implicit exits 1" test "$rc" -eq 1
check "convert encapsulated -> implicit: one error line naming the input" \
    test "$(lines "$T/err")" -eq 1 -a "$(grep -cF "pacsd: $ENCAPS: " "$T/err")" -eq 1
check "convert encapsulated -> implicit leaves no output file" \
    test -z "$(ls "$T" | grep never)"
run convert "$GOOD1"
check "convert with one argument exits 2" test "$rc" -eq 2

echo "$pass passed, $fail failed"
test "$fail" -eq 0
