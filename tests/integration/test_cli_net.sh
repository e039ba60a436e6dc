#!/bin/bash
# The network tools (pacsd echo, store, find, move, get) against DCMTK peers
# started here on free loopback ports: storescp (echo, store, and the C-MOVE
# destination) and dcmqrscp (find, move, get; filled by DCMTK's storescu, so
# pacsd is checked against an independent archive). Received instances are
# compared byte for byte (data sets after the meta group) with what was sent
# or stored. Env (from ctest): PACSD, PACSD_SOURCE, PYDICOM_TEST_FILES.
# Ends with "N passed, N failed"; exits 1 on any failure.
set -u

PACSD=${PACSD:?PACSD must name the pacsd binary}
PACSD_SOURCE=${PACSD_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
CORPUS=${PYDICOM_TEST_FILES:-/usr/lib/python3/dist-packages/pydicom/data/test_files}
PY=/usr/bin/python3

for tool in storescp dcmqrscp storescu echoscu findscu; do
    if ! command -v "$tool" >/dev/null; then
        echo "FAIL - DCMTK's $tool is not installed (apt-get install dcmtk)"
        echo "0 passed, 1 failed"
        exit 1
    fi
done

T=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
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
    { echo "== pacsd $*"; cat "$T/err"; } >>"$T/all_err"
}
lines() { awk 'END { print NR }' "$1"; }
count() { grep -ac -- "$1" "$2"; }
uid_of() { # uid_of FILE KEYWORD
    $PY -c 'import sys, pydicom; print(pydicom.dcmread(sys.argv[1], stop_before_pixels=True, force=True).get(sys.argv[2], ""))' "$1" "$2"
}
# same_dataset SENT RECEIVED: the data set bytes (after the meta group) are
# equal; a Deflated data set of odd length is sent with one NUL of padding.
same_dataset() {
    $PY - "$1" "$2" <<'EOF'
import struct, sys
def ds(path):
    b = open(path, "rb").read()
    assert b[128:132] == b"DICM", path
    assert b[132:138] == b"\x02\x00\x00\x00UL", path
    glen = struct.unpack("<I", b[140:144])[0]
    return b[144 + glen:]
a, b = ds(sys.argv[1]), ds(sys.argv[2])
sys.exit(0 if b == a or (len(a) % 2 and b == a + b"\0") else 1)
EOF
}

# Three free loopback ports: the kernel picks them, then they are released.
read -r P_SCP P_QR P_CLOSED < <($PY -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')

# Peers. TCP_NODELAY=1: DCMTK otherwise keeps Nagle on and each response
# waits for our delayed ACK (~40 ms a message).
mkdir -p "$T/scp" "$T/qr/db"
TCP_NODELAY=1 storescp -aet STORESCP --promiscuous --bit-preserving +xa -od "$T/scp" \
    "$P_SCP" >"$T/storescp.log" 2>&1 &
PIDS+=($!)
cat >"$T/qr/dcmqrscp.cfg" <<EOF
NetworkTCPPort  = $P_QR
MaxPDUSize      = 16384
MaxAssociations = 16
HostTable BEGIN
storescp = (STORESCP, 127.0.0.1, $P_SCP)
HostTable END
VendorTable BEGIN
VendorTable END
AETable BEGIN
QRSCP   $T/qr/db   RW (200, 1024mb)   ANY
AETable END
EOF
TCP_NODELAY=1 dcmqrscp -c "$T/qr/dcmqrscp.cfg" "$P_QR" >"$T/dcmqrscp.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do
    echoscu -aec STORESCP 127.0.0.1 "$P_SCP" 2>/dev/null &&
        echoscu -aec QRSCP 127.0.0.1 "$P_QR" 2>/dev/null && break
    sleep 0.1
done

CT=$CORPUS/CT_small.dcm
MR=$CORPUS/MR_small.dcm
QR_FILES=("$CT" "$MR" "$CORPUS/rtplan.dcm" "$CORPUS/rtstruct.dcm")
TCP_NODELAY=1 storescu -aec QRSCP 127.0.0.1 "$P_QR" "${QR_FILES[@]}" >"$T/storescu.log" 2>&1
check "dcmqrscp filled by storescu" test "$(ls "$T/qr/db" | grep -c '\.dcm$')" -eq 4
CT_STUDY=$(uid_of "$CT" StudyInstanceUID)
CT_SERIES=$(uid_of "$CT" SeriesInstanceUID)
CT_SOP=$(uid_of "$CT" SOPInstanceUID)
MR_SOP=$(uid_of "$MR" SOPInstanceUID)
MR_PID=$(uid_of "$MR" PatientID)
N_STUDIES=$(for f in "${QR_FILES[@]}"; do uid_of "$f" StudyInstanceUID; done | sort -u | wc -l)
N_PATIENTS=$(for f in "${QR_FILES[@]}"; do uid_of "$f" PatientID; done | sort -u | wc -l)
SCP=(-aec STORESCP 127.0.0.1 "$P_SCP")
QR=(-aec QRSCP 127.0.0.1 "$P_QR")

# --- echo -----------------------------------------------------------------------
run echo "${SCP[@]}"
check "echo: exit 0, nothing printed" test "$rc" -eq 0 -a ! -s "$T/out" -a ! -s "$T/err"
run echo -v --repeat 3 "${SCP[@]}"
check "echo --repeat 3 -v: three C-ECHOs reported" \
    test "$rc" -eq 0 -a "$(count 'C-ECHO [0-9]: status 0x0000' "$T/err")" -eq 3
run echo 127.0.0.1 "$P_CLOSED"
check "echo to a closed port: exit 2, one line 'pacsd echo: ...'" \
    test "$rc" -eq 2 -a "$(lines "$T/err")" -eq 1 -a "$(count '^pacsd echo: ' "$T/err")" -eq 1
run echo -aec NOT-QRSCP 127.0.0.1 "$P_QR"
check "echo with a called AE title the peer rejects: exit 2, 'rejected'" \
    test "$rc" -eq 2 -a "$(count 'rejected' "$T/err")" -eq 1
run echo 127.0.0.1
check "echo without PORT: exit 2" test "$rc" -eq 2
run echo -aet 12345678901234567 "${SCP[@]}"
check "echo with a 17-character AE title: exit 2" test "$rc" -eq 2

# --- store ------------------------------------------------------------------------
run store "${SCP[@]}" "$CT" "$MR"
check "store two files: exit 0" test "$rc" -eq 0
check "store two files: summary '2 stored, 0 warnings, 0 failed'" \
    grep -qx '2 stored, 0 warnings, 0 failed' "$T/err"
check "store: CT data set received byte for byte" same_dataset "$CT" "$T/scp/CT.$CT_SOP"
check "store: MR data set received byte for byte" same_dataset "$MR" "$T/scp/MR.$MR_SOP"

# each file in its own transfer syntax, sent as stored (no transcoding)
for f in MR_small_implicit.dcm MR_small_bigendian.dcm JPEG2000.dcm image_dfl.dcm rtplan.dcm; do
    rm -f "$T"/scp/*
    run store "${SCP[@]}" "$CORPUS/$f"
    got=$(ls "$T/scp" | head -1)
    check "store $f: exit 0, received byte for byte" \
        test "$rc" -eq 0 -a -n "$got" -a "$(same_dataset "$CORPUS/$f" "$T/scp/$got"; echo $?)" = 0
done

# a directory: non-DICOM files and DICOMDIRs are skipped with a note
mkdir -p "$T/dir/sub"
cp "$CT" "$T/dir/a.dcm"
cp "$MR" "$T/dir/sub/b.dcm"
cp "$CORPUS/README.txt" "$T/dir/README.txt"
cp "$CORPUS/dicomdirtests/DICOMDIR" "$T/dir/sub/DICOMDIR"
rm -f "$T"/scp/*
run store "${SCP[@]}" "$T/dir"
check "store DIR: exit 0, 2 stored" test "$rc" -eq 0 -a "$(count '^2 stored, 0 warnings, 0 failed$' "$T/err")" -eq 1
check "store DIR: README and DICOMDIR skipped with a note each" \
    test "$(count '^pacsd store: .*: skipped: ' "$T/err")" -eq 2
run store --no-recurse "${SCP[@]}" "$T/dir"
check "store --no-recurse DIR: 1 stored" grep -qx '1 stored, 0 warnings, 0 failed' "$T/err"
run store "${SCP[@]}" "$T/dir/README.txt" "$CT"
check "store a named non-DICOM file: exit 1, 1 stored, 1 failed" \
    test "$rc" -eq 1 -a "$(count '^1 stored, 0 warnings, 1 failed$' "$T/err")" -eq 1
run store "${SCP[@]}" "$T/missing.dcm"
check "store a missing file: exit 1" test "$rc" -eq 1
run store 127.0.0.1 "$P_CLOSED" "$CT" "$MR"
check "store to a closed port: exit 2, 2 failed" \
    test "$rc" -eq 2 -a "$(count '2 failed' "$T/err")" -eq 1
run store "${QR[@]}" "$CORPUS/JPEG2000.dcm"
check "store in a syntax the peer did not accept: exit 1, said" \
    test "$rc" -eq 1 -a "$(count 'did not accept' "$T/err")" -eq 1

# more (SOP class, transfer syntax) pairs than an association carries
$PY - "$CT" "$T/gen" <<'EOF'
import os, sys, pydicom
ds = pydicom.dcmread(sys.argv[1])
os.makedirs(sys.argv[2])
for i in range(140):
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.826.0.1.3680043.9.7433.%d" % (i % 135 + 1)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.9.7434.%d" % i
    ds.save_as(os.path.join(sys.argv[2], "f%03d.dcm" % i))
EOF
rm -f "$T"/scp/*
run store -v "${SCP[@]}" "$T/gen"
check "store 140 files of 135 classes: all stored" \
    test "$rc" -eq 0 -a "$(count '^140 stored, 0 warnings, 0 failed$' "$T/err")" -eq 1
check "store 135 classes: two associations (128 contexts at most each)" \
    test "$(count ': association PACSD -> STORESCP' "$T/err")" -eq 2
check "store 135 classes: 140 files received" test "$(ls "$T/scp" | wc -l)" -eq 140
rm -f "$T"/scp/*
run store -v --parallel 4 "${SCP[@]}" "$T/gen"
check "store --parallel 4: all stored" grep -qx '140 stored, 0 warnings, 0 failed' "$T/err"
check "store --parallel 4: 4 associations per batch" \
    test "$(count ': association PACSD -> STORESCP' "$T/err")" -eq 8
check "store --parallel 4: 140 files received" test "$(ls "$T/scp" | wc -l)" -eq 140
bad=0
for f in "$T"/gen/f00*.dcm; do
    s=$(uid_of "$f" SOPInstanceUID)
    same_dataset "$f" "$(ls "$T"/scp/*"$s" | head -1)" || bad=1
done
check "store --parallel 4: data sets received byte for byte" test "$bad" -eq 0

# --- find -------------------------------------------------------------------------
run find "${QR[@]}" -L STUDY -k StudyInstanceUID -k PatientName
check "find STUDY (study root): exit 0, one answer per study" \
    test "$rc" -eq 0 -a "$(count '^# Dicom-Data-Set' "$T/out")" -eq "$N_STUDIES"
TCP_NODELAY=1 findscu -S -aec QRSCP 127.0.0.1 "$P_QR" -k QueryRetrieveLevel=STUDY \
    -k StudyInstanceUID >/dev/null 2>"$T/findscu.err"
check "find STUDY: as many answers as DCMTK's findscu" \
    test "$(count 'Find Response: [0-9]* (Pending)' "$T/findscu.err")" -eq "$N_STUDIES"
check "find answers are dumps with the CT study UID" grep -qF "[$CT_STUDY]" "$T/out"
run find "${QR[@]}" -P -L PATIENT -k PatientID -k PatientName
check "find PATIENT (patient root): one answer per patient" \
    test "$rc" -eq 0 -a "$(count '^# Dicom-Data-Set' "$T/out")" -eq "$N_PATIENTS"
run find "${QR[@]}" -L SERIES -k StudyInstanceUID="$CT_STUDY" -k SeriesInstanceUID -k Modality
check "find SERIES of the CT study: one CT series" \
    test "$rc" -eq 0 -a "$(count '^# Dicom-Data-Set' "$T/out")" -eq 1 -a "$(count "\[$CT_SERIES\]" "$T/out")" -eq 1
check "find SERIES: Modality CT" grep -q 'CS \[CT\]' "$T/out"
run find "${QR[@]}" -L IMAGE -k StudyInstanceUID="$CT_STUDY" -k "(0020,000e)=$CT_SERIES" -k 00080018
check "find IMAGE by tags: the CT instance" \
    test "$rc" -eq 0 -a "$(count "\[$CT_SOP\]" "$T/out")" -eq 1
run find "${QR[@]}" -P -L STUDY -k PatientID="$MR_PID" -k StudyInstanceUID
check "find STUDY in the patient root: the MR patient's study" \
    test "$rc" -eq 0 -a "$(count '^# Dicom-Data-Set' "$T/out")" -eq 1
run find "${QR[@]}" -L STUDY -k 'PatientName=Compressed*' -k StudyInstanceUID --json
check "find --json: a JSON array of the two matching studies" $PY -c '
import json, sys
a = json.load(open(sys.argv[1]))
assert isinstance(a, list) and len(a) == 2, a
assert sys.argv[2] in [d["0020000D"]["Value"][0] for d in a]' "$T/out" "$CT_STUDY"
run find "${QR[@]}" -L STUDY -k PatientName=NOBODY --json
check "find --json without matches: []" test "$rc" -eq 0 -a "$(cat "$T/out")" = "[]"
# The peer may have sent every answer before it sees the C-CANCEL: the
# final status is then success, and the answers after the first are dropped.
run find -v "${QR[@]}" -L STUDY -k StudyInstanceUID --cancel-after 1
check "find --cancel-after 1: exit 0, one answer printed, cancelled or done" \
    test "$rc" -eq 0 -a "$(count '^# Dicom-Data-Set' "$T/out")" -eq 1 \
    -a "$(count 'C-FIND: status 0x\(FE00\|0000\)' "$T/err")" -eq 1
run find "${QR[@]}" -L STUDY -k NoSuchKeyword
check "find with an unknown keyword: exit 2, named" \
    test "$rc" -eq 2 -a "$(count 'NoSuchKeyword' "$T/err")" -ge 1
run find "${QR[@]}" -k PatientName
check "find without a level: exit 2" test "$rc" -eq 2
run find "${QR[@]}" -L IMAGE -k SOPInstanceUID
check "find IMAGE without the study and series: failure status, exit 1" \
    test "$rc" -eq 1 -a "$(count 'C-FIND failed: status 0x' "$T/err")" -eq 1

# --- move -------------------------------------------------------------------------
rm -f "$T"/scp/*
run move "${QR[@]}" --dest STORESCP -L STUDY -k StudyInstanceUID="$CT_STUDY"
check "move the CT study: exit 0, 'completed 1, failed 0, warning 0'" \
    test "$rc" -eq 0 -a "$(count '^completed 1, failed 0, warning 0$' "$T/err")" -eq 1
check "move: the CT instance reached storescp" test -f "$T/scp/CT.$CT_SOP"
rm -f "$T"/scp/*
run move "${QR[@]}" --dest STORESCP -P -L PATIENT -k PatientID="$MR_PID"
check "move the MR patient (patient root): exit 0, the MR instance arrived" \
    test "$rc" -eq 0 -a -f "$T/scp/MR.$MR_SOP"
run move "${QR[@]}" --dest NOWHERE -L STUDY -k StudyInstanceUID="$CT_STUDY"
check "move to an unknown destination: exit 1, status 0xA801" \
    test "$rc" -eq 1 -a "$(count '0xA801' "$T/err")" -eq 1
run move "${QR[@]}" -L STUDY -k StudyInstanceUID="$CT_STUDY"
check "move without --dest: exit 2" test "$rc" -eq 2

# --- get --------------------------------------------------------------------------
run get "${QR[@]}" --out "$T/got" -L STUDY -k StudyInstanceUID="$CT_STUDY"
check "get the CT study: exit 0, completed 1" \
    test "$rc" -eq 0 -a "$(count '^completed 1, failed 0, warning 0$' "$T/err")" -eq 1
check "get: written as DIR/<SOPInstanceUID>.dcm" test -f "$T/got/$CT_SOP.dcm"
check "get: nothing else left in DIR" test "$(ls -A "$T/got" | wc -l)" -eq 1
check "get: data set equals dcmqrscp's copy byte for byte" \
    same_dataset "$(grep -l "$CT_SOP" "$T"/qr/db/*.dcm)" "$T/got/$CT_SOP.dcm"
check "get: DCMTK reads the file" sh -c 'dcmdump "$1" >/dev/null' sh "$T/got/$CT_SOP.dcm"
run dump "$T/got/$CT_SOP.dcm"
check "get: meta group names the syntax, the class and the peer" \
    test "$(count '(0002,0010) UI =ExplicitVRLittleEndian\|(0002,0010) UI =ImplicitVRLittleEndian' "$T/out")" -eq 1 \
    -a "$(count '(0002,0002) UI =CTImageStorage' "$T/out")" -eq 1 -a "$(count '(0002,0016) AE \[QRSCP\]' "$T/out")" -eq 1
run get "${QR[@]}" --out "$T/all" -P -L PATIENT -k PatientID
check "get every patient: exit 0, 4 files" \
    test "$rc" -eq 0 -a "$(ls "$T/all" | grep -c '\.dcm$')" -eq 4
# an instance we cannot write is answered with a failure, the rest still come
mkdir -p "$T/ref/.$CT_SOP.part"
run get "${QR[@]}" --out "$T/ref" -P -L PATIENT -k PatientID
check "get with one instance unwritable: exit 1, 3 received, 1 refused" \
    test "$rc" -eq 1 -a "$(count '^received 3 into .*, refused 1$' "$T/err")" -eq 1
check "get with one instance unwritable: the peer counted it failed" \
    grep -q '^completed 3, failed 1, warning 0$' "$T/err"
run get "${QR[@]}" -L STUDY -k StudyInstanceUID="$CT_STUDY"
check "get without --out: exit 2" test "$rc" -eq 2
run get "${QR[@]}" --out "$T/x" --sop-class NoSuchStorage -L STUDY -k StudyInstanceUID
check "get --sop-class with an unknown keyword: exit 2" test "$rc" -eq 2

# --- usage and sanitizers ----------------------------------------------------------
for tool in echo store find move get; do
    run "$tool" --help
    check "$tool --help: exit 0, usage on stdout" \
        test "$rc" -eq 0 -a "$(count "^usage: pacsd $tool" "$T/out")" -eq 1
done
run help
check "pacsd help lists the network tools" test "$(grep -cE '^  (echo|store|find|move|get) ' "$T/out")" -eq 5
check "no sanitizer report in any run" test "$(grep -c 'Sanitizer' "$T/all_err")" -eq 0

echo "$pass passed, $fail failed"
test "$fail" -eq 0
