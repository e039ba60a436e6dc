#!/usr/bin/python3
"""STOW-RS and QIDO-RS (docs/dicomweb.md) against a running pacsd.

STOW-RS
 - every file of pydicom's corpus, one part per request: stored (200, one
   ReferencedSOPSequence item with the file's UIDs and the instance's
   RetrieveURL; the stored file is byte for byte what was posted) or, for
   the files listed in EXPECTED_REFUSALS, refused (409, one
   FailedSOPSequence item whose FailureReason and ErrorComment match the
   list; nothing stored). The list must stay honest: a listed file that is
   stored fails the test, and so does an unlisted refusal.
 - the stored files again, many parts per request (200, items in part
   order), and with one refused file among them (202);
 - a generated CT archive (dimse_gen.py: 4 studies in 4 transfer
   syntaxes) to /studies/{study}, a study per request, bytes checked;
 - every status: 200, 202, 409, 400 (no boundary, no parts, truncated
   part, huge part headers, garbage, bad boundary), 415, 406, with their
   bodies; /studies/{study} with an instance of another study (0xA900);
   an instance over dicom.max_message_size (0xA700) on a second server
   that also rejects duplicates (0x0111). After each bad request the server
   still answers, the instance count is what it should be and files/tmp is
   empty (nothing half stored).
QIDO-RS
 - the six resources, keyword and tag attributes, single value, wildcard,
   range, UID list, includefield and includefield=all, limit/offset,
   limit=0, the 299 warnings, fuzzymatching, no match (200 []), bad
   parameters (400 naming the parameter), 406 by header and by accept=;
 - QIDO-RS and C-FIND (`pacsd find --json`) give the same answers (UIDs
   and key values) for the same queries.
Ends with "N passed, N failed".
"""
import http.client
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import warnings

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pydicom  # noqa: E402

import dcmcompare as dc  # noqa: E402
import dimse_gen as gen  # noqa: E402
from harness import PACSD, Checks, Pacsd  # noqa: E402

ST_A700, ST_A900, ST_C000, ST_DUP = 0xA700, 0xA900, 0xC000, 0x0111
DICOM_JSON = "application/dicom+json"
MP = 'multipart/related; type="application/dicom"; boundary=%s'
B = "pacsd-test-boundary-0123456789"

# Files of the corpus that ingest refuses (docs/ingest.md), by reason:
# FailureReason and a regex the ErrorComment must match.
NO_SOP_CLASS = [  # data sets without (0008,0016): DICOMDIRs, fragments
    "charset_files/chrSQEncoding.dcm",
    "charset_files/chrSQEncoding1.dcm",
    "test_files/UN_sequence.dcm",
    "test_files/dicomdirtests/DICOMDIR",
    "test_files/dicomdirtests/DICOMDIR-bigEnd",
    "test_files/dicomdirtests/DICOMDIR-empty.dcm",
    "test_files/dicomdirtests/DICOMDIR-implicit",
    "test_files/dicomdirtests/DICOMDIR-nopatient",
    "test_files/dicomdirtests/DICOMDIR-reordered",
    "test_files/dicomdirtests/TINY_ALPHA/DICOMDIR",
    "test_files/empty_charset_LEI.dcm",
    "test_files/meta_missing_tsyntax.dcm",
    "test_files/nested_priv_SQ.dcm",
    "test_files/no_meta_group_length.dcm",
    "test_files/priv_SQ.dcm",
    "test_files/rtdose_rle.dcm",
    "test_files/rtdose_rle_1frame.dcm",
]
MEDIA_UID_DIFFERS = [  # (0002,0003) differs from (0008,0018)
    "charset_files/chrJapMulti.dcm",
    "charset_files/chrJapMultiExplicitIR6.dcm",
    "test_files/badVR.dcm",
    "test_files/rtdose.dcm",
    "test_files/rtdose_1frame.dcm",
    "test_files/rtdose_expb.dcm",
    "test_files/rtdose_expb_1frame.dcm",
    "test_files/rtplan.dcm",
]
NO_META = [  # no file meta information: not a PS3.10 file
    "test_files/ExplVR_BigEndNoMeta.dcm",
    "test_files/ExplVR_LitEndNoMeta.dcm",
    "test_files/rtstruct.dcm",
]
EXPECTED_REFUSALS = {}
for _n in NO_SOP_CLASS:
    EXPECTED_REFUSALS[_n] = (0xA900, r"^part 1: the data set has no valid SOP Class UID")
for _n in MEDIA_UID_DIFFERS:
    EXPECTED_REFUSALS[_n] = (0xA900, r"^part 1: Media Storage SOP Instance UID \(0002,0003\) differs")
for _n in NO_META:
    EXPECTED_REFUSALS[_n] = (0xC000, r"^part 1: not a DICOM Part 10 file: no file meta")
EXPECTED_REFUSALS.update({
    "test_files/MR_truncated.dcm": (0xC000, r"input ends inside Pixel Data \(8192 bytes announced"),
    "test_files/rtplan_truncated.dcm": (0xC000, r"input ends inside an element \(719 bytes"),
    "test_files/no_meta.dcm": (0xC000, r"offset 0: input ends inside an element"),
    "test_files/dicomdirtests/DICOMDIR-nooffset": (0xC000, r"item needs 248 bytes, only 224 remain"),
})

checks = Checks()


# --- HTTP helpers -----------------------------------------------------------

def request(srv, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=120)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read(), r.headers
    finally:
        c.close()


def multipart(parts, boundary=B):
    """parts: (content type or None, bytes) -> body."""
    out = b""
    for ct, data in parts:
        out += b"\r\n--" + boundary.encode() + b"\r\n"
        if ct is not None:
            out += b"Content-Type: " + ct.encode() + b"\r\n"
        out += b"\r\n" + data
    return out + b"\r\n--" + boundary.encode() + b"--\r\n"


def stow(srv, parts, study=None, ctype=None, accept=None, raw=None):
    path = "/dicom-web/studies" + ("/" + study if study else "")
    headers = {"Content-Type": ctype or MP % B}
    if accept:
        headers["Accept"] = accept
    st, hdrs, body, _ = request(srv, "POST", path, raw if raw is not None else multipart(parts),
                                headers)
    try:
        j = json.loads(body) if body else None
    except ValueError:
        j = None
    return st, hdrs, j


def seq(j, tag):
    return (j or {}).get(tag, {}).get("Value", [])


def val(item, tag):
    v = item.get(tag, {}).get("Value")
    return v[0] if v else None


def qido(srv, path, params=None, accept=None):
    q = ("?" + urllib.parse.urlencode(params, doseq=True)) if params else ""
    headers = {"Accept": accept} if accept else {}
    st, hdrs, body, raw = request(srv, "GET", "/dicom-web" + path + q, headers=headers)
    try:
        j = json.loads(body) if body else None
    except ValueError:
        j = None
    return st, hdrs, j, raw


# --- archive state ------------------------------------------------------------

def db(srv):
    return sqlite3.connect("file:%s?mode=ro" % os.path.join(srv.data_dir, "index.db"), uri=True)


def count(srv):
    with db(srv) as c:
        return c.execute("SELECT count(*) FROM instances").fetchone()[0]


def stored_bytes(srv, sop_uid):
    with db(srv) as c:
        row = c.execute("SELECT blob_key FROM instances WHERE sop_instance_uid = ?",
                        (sop_uid,)).fetchone()
    if not row:
        return None
    with open(os.path.join(srv.data_dir, "files", row[0][:2], row[0]), "rb") as f:
        return f.read()


def temps(srv):
    d = os.path.join(srv.data_dir, "files", "tmp")
    return os.listdir(d) if os.path.isdir(d) else []


def still_fine(srv, what, n_before, n_added=0):
    st = request(srv, "GET", "/health/live")[0]
    checks.eq(st, 200, "%s: the server still serves" % what)
    checks.eq(count(srv), n_before + n_added, "%s: instance count" % what)
    checks.eq(temps(srv), [], "%s: nothing left in files/tmp" % what)


def error_is(st, j, status, pattern, what):
    checks.eq(st, status, "%s: status" % what)
    ok = isinstance(j, dict) and j.get("status") == status and \
        re.search(pattern, j.get("error", "")) is not None
    checks.ok(ok, "%s: error body matches %r" % (what, pattern), j)


# --- STOW-RS ----------------------------------------------------------------

def file_uids(path):
    ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
    return str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", "")), \
        str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesInstanceUID", ""))


def check_referenced(srv, item, path, data, what):
    cls, inst, study, series = file_uids(path)
    checks.eq((val(item, "00081150"), val(item, "00081155")), (cls, inst), what + ": UIDs")
    want = "http://127.0.0.1:%d/dicom-web/studies/%s/series/%s/instances/%s" % (
        srv.http_port, study, series, inst)
    checks.eq(val(item, "00081190"), want, what + ": RetrieveURL")
    checks.ok(stored_bytes(srv, inst) == data, what + ": stored bytes equal the posted file")


def test_corpus(srv):
    stored, refused = [], []
    for name, path in dc.corpus_files():
        with open(path, "rb") as f:
            data = f.read()
        before = count(srv)
        st, hdrs, j = stow(srv, [("application/dicom", data)])
        ref, failed = seq(j, "00081199"), seq(j, "00081198")
        if name in EXPECTED_REFUSALS:
            reason, pattern = EXPECTED_REFUSALS[name]
            checks.eq(st, 409, "%s: refused with 409" % name)
            ok = len(failed) == 1 and not ref and val(failed[0], "00081197") == reason and \
                re.search(pattern, val(failed[0], "00000902") or "")
            checks.ok(ok, "%s: FailedSOPSequence item with 0x%04X /%s/" % (name, reason, pattern),
                      j)
            checks.eq(count(srv), before, "%s: nothing stored" % name)
            refused.append(name)
            continue
        if not checks.eq(st, 200, "%s: stored" % name):
            print("   ", json.dumps(failed))
            continue
        checks.eq(hdrs.get("content-type"), DICOM_JSON, "%s: Content-Type" % name)
        checks.ok(len(ref) == 1 and not failed, "%s: one ReferencedSOPSequence item" % name, j)
        if ref:
            check_referenced(srv, ref[0], path, data, name)
        study = file_uids(path)[2]
        checks.eq(val(j, "00081190"), "http://127.0.0.1:%d/dicom-web/studies/%s" % (
            srv.http_port, study), "%s: study RetrieveURL" % name)
        stored.append((name, path, data))
    checks.eq(sorted(refused), sorted(EXPECTED_REFUSALS), "the refused files are the listed ones")
    checks.eq(temps(srv), [], "corpus: nothing left in files/tmp")
    return stored


def test_many_parts(srv, stored, refused_path):
    # Later files may replace earlier ones with the same SOP Instance UID
    # (dicom.duplicates replace): keep the last of each for the bytes check.
    last = {}
    for name, path, data in stored:
        last[file_uids(path)[1]] = (name, path, data)
    files = list(last.values())
    st, _, j = stow(srv, [("application/dicom", d) for _, _, d in files])
    ref = seq(j, "00081199")
    checks.eq(st, 200, "many parts: 200")
    checks.eq(len(ref), len(files), "many parts: one item per part")
    checks.eq(val(j, "00081190") is None, True, "many parts of several studies: study RetrieveURL empty")
    for item, (name, path, data) in zip(ref, files):
        check_referenced(srv, item, path, data, "many parts: " + name)
    # The same body chunked in small pieces: the parser sees parts split
    # anywhere, delimiters included.
    body = multipart([("application/dicom", d) for _, _, d in files[:10]])
    chunks = (body[i:i + 997] for i in range(0, len(body), 997))
    c = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=120)
    c.request("POST", "/dicom-web/studies", body=chunks, headers={"Content-Type": MP % B},
              encode_chunked=True)
    r = c.getresponse()
    j = json.loads(r.read())
    c.close()
    checks.eq((r.status, len(seq(j, "00081199"))), (200, 10), "chunked request body: 10 stored")
    with open(refused_path, "rb") as f:
        bad = f.read()
    before = count(srv)
    parts = [("application/dicom", files[0][2]), ("application/dicom", bad),
             (None, files[1][2])]  # no Content-Type: the type parameter
    st, _, j = stow(srv, parts)
    checks.eq(st, 202, "stored + refused: 202")
    checks.eq(len(seq(j, "00081199")), 2, "stored + refused: 2 referenced")
    failed = seq(j, "00081198")
    checks.ok(len(failed) == 1 and val(failed[0], "00081197") == ST_C000 and
              (val(failed[0], "00000902") or "").startswith("part 2: "),
              "stored + refused: the second part failed with 0xC000", failed)
    still_fine(srv, "stored + refused", before)

    # Parts are finished several at a time: the answer still lists them in
    # part order, failures interleaved.
    parts, want_ok = [], []
    for k, (name, path, data) in enumerate(files[:24]):
        parts.append(("application/dicom", data))
        want_ok.append(file_uids(path)[1])
        parts.append(("text/plain", b"x" * k))
    st, _, j = stow(srv, parts)
    checks.eq(st, 202, "48 interleaved parts: 202")
    checks.eq([val(i, "00081155") for i in seq(j, "00081199")], want_ok,
              "interleaved parts: referenced in part order")
    checks.eq([(val(i, "00000902") or "").split(":")[0] for i in seq(j, "00081198")],
              ["part %d" % (2 * k + 2) for k in range(24)],
              "interleaved parts: failures in part order")
    still_fine(srv, "interleaved parts", before)


def test_generated(srv, arc):
    by_study = {}
    for inst in arc.instances:
        by_study.setdefault(inst["StudyInstanceUID"], []).append(inst)
    for study, insts in by_study.items():
        datas = []
        for inst in insts:
            with open(inst["path"], "rb") as f:
                datas.append(f.read())
        st, _, j = stow(srv, [("application/dicom", d) for d in datas], study=study)
        ref = seq(j, "00081199")
        checks.eq(st, 200, "generated study %s: 200" % study)
        checks.eq(len(ref), len(insts), "generated study: all referenced")
        checks.eq(val(j, "00081190"), "http://127.0.0.1:%d/dicom-web/studies/%s" % (
            srv.http_port, study), "generated study: RetrieveURL of the study")
        for item, inst, data in zip(ref, insts, datas):
            check_referenced(srv, item, inst["path"], data, "generated " + os.path.basename(
                inst["path"]))
    # One instance per request, again (replaces: same bytes).
    for inst in arc.instances[:5]:
        with open(inst["path"], "rb") as f:
            data = f.read()
        st, _, j = stow(srv, [("application/dicom", data)])
        checks.eq(st, 200, "generated, one per request: 200")
        ref = seq(j, "00081199")
        if ref:
            check_referenced(srv, ref[0], inst["path"], data, "generated, one per request")


def test_statuses(srv, good_path, other_study_path):
    with open(good_path, "rb") as f:
        good = f.read()
    with open(other_study_path, "rb") as f:
        other = f.read()
    good_study = file_uids(good_path)[2]
    n = count(srv)

    # 409: nothing stored.
    st, _, j = stow(srv, [("text/plain", b"hello")])
    failed = seq(j, "00081198")
    checks.eq(st, 409, "text/plain part only: 409")
    checks.ok(len(failed) == 1 and val(failed[0], "00081197") == ST_C000 and
              "text/plain" in (val(failed[0], "00000902") or ""),
              "text/plain part: FailedSOPSequence 0xC000 naming the type", j)
    checks.ok("00081199" not in j, "409: no ReferencedSOPSequence", j)
    still_fine(srv, "text/plain part", n)

    st, _, j = stow(srv, [("application/dicom", b"\0" * 300 + b"not dicom at all")])
    failed = seq(j, "00081198")
    checks.eq(st, 409, "non-DICOM bytes as application/dicom: 409")
    checks.ok(len(failed) == 1 and val(failed[0], "00081197") == ST_C000,
              "non-DICOM bytes: 0xC000", j)
    still_fine(srv, "non-DICOM bytes", n)

    # /studies/{study}: another study's instance is not stored.
    st, _, j = stow(srv, [("application/dicom", other)], study=good_study)
    failed = seq(j, "00081198")
    checks.eq(st, 409, "study mismatch: 409")
    checks.ok(len(failed) == 1 and val(failed[0], "00081197") == ST_A900 and
              good_study in (val(failed[0], "00000902") or ""),
              "study mismatch: 0xA900 naming the study", j)
    checks.eq(val(failed[0], "00081155") if failed else None, file_uids(other_study_path)[1],
              "study mismatch: the item names the instance")
    still_fine(srv, "study mismatch", n)
    st, _, j = stow(srv, [("application/dicom", good), ("application/dicom", other)],
                    study=good_study)
    checks.eq(st, 202, "study mismatch beside a match: 202")
    checks.eq((len(seq(j, "00081199")), len(seq(j, "00081198"))), (1, 1),
              "study mismatch beside a match: 1 stored, 1 failed")
    checks.eq(val(j, "00081190"), "http://127.0.0.1:%d/dicom-web/studies/%s" % (
        srv.http_port, good_study), "/studies/{study}: RetrieveURL of the study")
    still_fine(srv, "study mismatch beside a match", n)

    # Accept.
    st, hdrs, j = stow(srv, [("application/dicom", good)], accept="application/json")
    checks.eq((st, hdrs.get("content-type")), (200, "application/json"),
              "Accept: application/json gives application/json")
    st, _, j = stow(srv, [("application/dicom", good)], accept="application/dicom+xml")
    error_is(st, j, 406, "application/dicom\\+xml", "Accept: application/dicom+xml")
    still_fine(srv, "406", n)
    # Refused on its headers with a body of many pieces still to come: the
    # body is read and dropped, then the answer comes.
    big = multipart([("application/dicom", good)] * 300)
    st, _, j = stow(srv, None, accept="application/dicom+xml", raw=big)
    error_is(st, j, 406, ".", "406 with a %d-byte body" % len(big))
    st, _, j = stow(srv, None, ctype="application/octet-stream", raw=big)
    error_is(st, j, 415, "application/octet-stream", "415 with a large body")
    still_fine(srv, "refusals with large bodies", n)

    # 415.
    for ct, what in (("application/dicom", "a single application/dicom body"),
                     ('multipart/related; type="application/dicom+json"; boundary=' + B,
                      "type=application/dicom+json"),
                     ("multipart/related; boundary=" + B, "no type parameter"),
                     ("multipart/mixed; boundary=" + B, "multipart/mixed"),
                     ("text/plain", "text/plain")):
        st, _, j = stow(srv, [("application/dicom", good)], ctype=ct)
        error_is(st, j, 415, ".", "415 for " + what)
        still_fine(srv, "415 for " + what, n)
    st, _, body, _ = request(srv, "POST", "/dicom-web/studies", multipart([(None, good)]), {})
    checks.eq(st, 415, "no Content-Type: 415")

    # 400: malformed bodies.
    body = multipart([("application/dicom", good)])
    cases = [
        ("no boundary", 'multipart/related; type="application/dicom"', body,
         r"boundary"),
        ("bad boundary", 'multipart/related; type="application/dicom"; boundary="a b "', body,
         r"boundary"),
        ("no parts", MP % B, b"--" + B.encode() + b"--\r\n", r"no parts"),
        ("empty body", MP % B, b"", r"no multipart boundary delimiter"),
        ("garbage", MP % B, os.urandom(5000), r"."),
        ("truncated part", MP % B, body[:len(body) // 2], r"part 1"),
        ("huge part headers", MP % B,
         b"--" + B.encode() + b"\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n" + good +
         b"\r\n--" + B.encode() + b"--\r\n", r"header"),
        ("bare LF in part headers", MP % B,
         b"--" + B.encode() + b"\nContent-Type: application/dicom\n\n" + good +
         b"\r\n--" + B.encode() + b"--\r\n", r"."),
    ]
    for what, ct, raw, pattern in cases:
        st, _, j = stow(srv, None, ctype=ct, raw=raw)
        error_is(st, j, 400, pattern, "400 for " + what)
        still_fine(srv, "400 for " + what, n)

    # A client that goes away mid-part: what it sent of that part is
    # dropped, nothing is left in files/tmp, the server goes on.
    body = multipart([("application/dicom", good), ("application/dicom", other),
                      ("application/dicom", good)])
    sock = socket.create_connection(("127.0.0.1", srv.http_port))
    sock.sendall(("POST /dicom-web/studies HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"
                  "Content-Length: %d\r\n\r\n" % (MP % B, len(body))).encode())
    sock.sendall(body[:len(body) - len(good) // 2])
    time.sleep(0.5)
    sock.close()
    for _ in range(50):
        if not temps(srv):
            break
        time.sleep(0.1)
    still_fine(srv, "client gone mid-part", n)

    # A body broken after a whole part: that part stays stored and is named.
    other_inst = file_uids(other_study_path)[1]
    with db(srv) as c:
        had_other = c.execute("SELECT count(*) FROM instances WHERE sop_instance_uid = ?",
                              (other_inst,)).fetchone()[0]
    broken = multipart([("application/dicom", other), ("application/dicom", good)])
    cut = broken.index(b"--" + B.encode(), 10) + len(good) // 2
    st, _, j = stow(srv, None, raw=broken[:cut])
    error_is(st, j, 400, r"part 2", "400 for a body cut inside part 2")
    checks.ok(isinstance(j, dict) and j.get("stored") == 1 and
              j.get("stored_instances") == [other_inst],
              "cut body: the stored part is listed", j)
    still_fine(srv, "cut body", n, 0 if had_other else 1)


def test_limits(arc, corpus):
    """A server with a small dicom.max_message_size that rejects duplicates."""
    small = [p for p in (i["path"] for i in arc.instances) if os.path.getsize(p) < 20000]
    srv = Pacsd(config={"dicom": {"max_message_size": 20000, "duplicates": "reject"}})
    try:
        big_path = max((p for _, p, _ in corpus), key=os.path.getsize)
        with open(big_path, "rb") as f:
            big = f.read()
        with open(small[0], "rb") as f:
            ok = f.read()
        st, _, j = stow(srv, [("application/dicom", big), ("application/dicom", ok)])
        failed, ref = seq(j, "00081198"), seq(j, "00081199")
        checks.eq(st, 202, "oversized part beside a small one: 202")
        checks.ok(len(failed) == 1 and val(failed[0], "00081197") == ST_A700 and
                  "20000" in (val(failed[0], "00000902") or ""),
                  "oversized part: 0xA700 naming the limit", j)
        checks.eq(len(ref), 1, "the part after the oversized one is stored")
        still_fine(srv, "oversized part", 0, 1)
        st, _, j = stow(srv, [("application/dicom", ok)])
        failed = seq(j, "00081198")
        checks.eq(st, 409, "duplicate with dicom.duplicates reject: 409")
        checks.ok(len(failed) == 1 and val(failed[0], "00081197") == ST_DUP,
                  "duplicate: FailureReason 0x0111", j)
        still_fine(srv, "duplicate", 0, 1)
    finally:
        srv.cleanup()


def test_accepted(arc):
    """What the archive stores whatever the door: a SOP class outside
    dicom.storage_sop_classes fails with 0x0122, a private transfer syntax
    with 0xC122; nothing of either is stored."""
    mr = "1.2.840.10008.5.1.4.1.1.4"
    srv = Pacsd(config={"dicom": {"storage_sop_classes": [mr]}})
    try:
        with open(arc.instances[0]["path"], "rb") as f:
            ct = f.read()
        st, _, j = stow(srv, [("application/dicom", ct)])
        failed = seq(j, "00081198")
        checks.eq(st, 409, "SOP class outside dicom.storage_sop_classes: 409")
        checks.ok(len(failed) == 1 and val(failed[0], "00081197") == 0x0122 and
                  "storage_sop_classes" in (val(failed[0], "00000902") or ""),
                  "SOP class not accepted: FailureReason 0x0122 naming the setting", j)
        still_fine(srv, "class not accepted", 0)
    finally:
        srv.cleanup()
    srv = Pacsd()
    try:
        explicit = b"1.2.840.10008.1.2.1\0"
        files = [i["path"] for i in arc.instances]
        data = None
        for p in files:
            with open(p, "rb") as f:
                b = f.read()
            if explicit in b[:1024]:
                data = b.replace(explicit, b"1.2.3.4.5.6.7.8.9.0\0", 1)
                break
        checks.ok(data is not None, "an Explicit VR LE file to make private")
        for bad in ("%FF", "1.2.x", "1" * 65):
            st, _, j = stow(srv, [("application/dicom", ct)], study=bad)
            checks.eq(st, 400, "STOW to /studies/%s: 400" % bad)
        still_fine(srv, "bad study UIDs", 0)
        st, _, j = stow(srv, [("application/dicom", data or b"")])
        failed = seq(j, "00081198")
        checks.eq(st, 409, "private transfer syntax: 409")
        checks.ok(len(failed) == 1 and val(failed[0], "00081197") == 0xC122,
                  "private transfer syntax: FailureReason 0xC122", j)
        still_fine(srv, "private transfer syntax", 0)
    finally:
        srv.cleanup()


# --- QIDO-RS ----------------------------------------------------------------

def uids(answers, tag):
    return sorted(val(a, tag) for a in answers or [])


def test_qido(srv, arc):
    base = "http://127.0.0.1:%d/dicom-web" % srv.http_port
    s1, s2, s3, s4 = (s["StudyInstanceUID"] for s in arc.studies)
    pat1 = {"PatientID": "DIMSE-PAT-1"}

    st, hdrs, j, _ = qido(srv, "/studies", pat1)
    checks.eq((st, hdrs.get("content-type")), (200, DICOM_JSON), "/studies: 200 dicom+json")
    checks.eq(uids(j, "0020000D"), sorted([s1, s2]), "/studies?PatientID: the patient's studies")
    for a in j or []:
        study = val(a, "0020000D")
        checks.eq(val(a, "00081190"), base + "/studies/" + study, "/studies: RetrieveURL")
        checks.eq(val(a, "00201208"), 10, "/studies: NumberOfStudyRelatedInstances")
        checks.ok("00080052" not in a, "/studies: no QueryRetrieveLevel")
    checks.eq(uids(qido(srv, "/studies", {"00100020": "DIMSE-PAT-1"})[2], "0020000D"),
              sorted([s1, s2]), "attribute by tag")
    checks.eq(uids(qido(srv, "/studies", {"PatientName": "doe*", "PatientID": "DIMSE-*"})[2], "0020000D"),
              sorted([s1, s2]), "wildcard, PN ignoring case")
    checks.eq(uids(qido(srv, "/studies", {"PatientID": "DIMSE-PAT-?"})[2], "0020000D"),
              sorted([s1, s2, s3, s4]), "wildcard ?")
    checks.eq(uids(qido(srv, "/studies", {"PatientID": "DIMSE-PAT-*",
                                          "StudyDate": "20200101-20201231"})[2], "0020000D"),
              sorted([s1, s2]), "date range")
    checks.eq(uids(qido(srv, "/studies", {"StudyInstanceUID": s1 + "," + s3})[2], "0020000D"),
              sorted([s1, s3]), "UID list with commas")
    checks.eq(uids(qido(srv, "/studies", {"StudyInstanceUID": [s2, s4]})[2], "0020000D"),
              sorted([s2, s4]), "UID list by repetition")

    series = [s for s in arc.series if s["study"]["StudyInstanceUID"] == s1]
    st, _, j, _ = qido(srv, "/studies/%s/series" % s1)
    checks.eq(uids(j, "0020000E"), sorted(s["SeriesInstanceUID"] for s in series),
              "/studies/{s}/series")
    for a in j or []:
        checks.eq(val(a, "00081190"), "%s/studies/%s/series/%s" % (base, s1, val(a, "0020000E")),
                  "/series: RetrieveURL")
    st, _, j, _ = qido(srv, "/series", {"Modality": "OT", "PatientID": "DIMSE-PAT-*",
                                        "includefield": "Manufacturer"})
    want = sorted(s["SeriesInstanceUID"] for s in arc.series if s["Modality"] == "OT")
    checks.eq(uids(j, "0020000E"), want, "/series?Modality=OT")
    checks.ok(all(val(a, "00080070") == "PACSD-TEST" for a in j or []),
              "includefield=Manufacturer returned", j)
    checks.ok(all(val(a, "0020000D") for a in j or []), "/series has the study attributes")

    se = series[0]["SeriesInstanceUID"]
    st, _, j, _ = qido(srv, "/studies/%s/series/%s/instances" % (s1, se))
    insts = sorted(i["SOPInstanceUID"] for i in arc.instances if i["SeriesInstanceUID"] == se)
    checks.eq(uids(j, "00080018"), insts, "/studies/{s}/series/{se}/instances")
    for a in j or []:
        checks.eq(val(a, "00081190"), "%s/studies/%s/series/%s/instances/%s" % (
            base, s1, se, val(a, "00080018")), "/instances: RetrieveURL")
        checks.eq(val(a, "00280010"), 64, "instance answers have Rows")
    checks.eq(len(qido(srv, "/studies/%s/instances" % s1)[2] or []), 10,
              "/studies/{s}/instances")
    j = qido(srv, "/instances", {"PatientID": "DIMSE-PAT-2", "Modality": "CT"})[2]
    checks.eq(len(j or []), 15, "/instances?PatientID&Modality (relational)")
    one = insts[0]
    j = qido(srv, "/instances", {"SOPInstanceUID": one, "includefield": "all"})[2] or [{}]
    checks.ok(val(j[0], "00180050") == 5 and "00200032" in j[0],
              "includefield=all returns stored attributes", j)

    # limit and offset.
    everything = uids(qido(srv, "/instances", pat1)[2], "00080018")
    checks.eq(len(everything), 20, "/instances of patient 1")
    pages = []
    for off in range(0, 20, 6):
        pages += uids(qido(srv, "/instances", dict(pat1, limit=6, offset=off))[2], "00080018")
    checks.eq(sorted(pages), everything, "pages of 6 cover all 20 answers without overlap")
    checks.eq(len(qido(srv, "/instances", dict(pat1, limit=5, offset=18))[2] or []), 2,
              "offset near the end")
    st, _, j, _ = qido(srv, "/studies", dict(pat1, limit=0))
    checks.eq((st, j), (200, []), "limit=0: 200 []")
    st, hdrs, j, raw = qido(srv, "/studies", dict(pat1, limit=20000))
    warnings = raw.get_all("Warning") or []
    checks.ok(st == 200 and any("maximum" in w for w in warnings),
              "limit above the maximum: 299 Warning", warnings)
    st, hdrs, j, raw = qido(srv, "/studies", dict(pat1, fuzzymatching="true"))
    warnings = raw.get_all("Warning") or []
    checks.ok(st == 200 and any(w.startswith("299 ") and "fuzzymatching" in w for w in warnings),
              "fuzzymatching=true: 299 Warning", warnings)
    checks.eq(uids(j, "0020000D"), sorted([s1, s2]), "fuzzymatching=true still matches")
    st, hdrs, j, raw = qido(srv, "/studies", pat1)
    checks.eq(raw.get_all("Warning"), None, "no Warning on an ordinary answer")
    st, hdrs, body, _ = request(srv, "HEAD", "/dicom-web/studies?PatientID=DIMSE-PAT-1")
    checks.eq((st, hdrs.get("content-type"), body), (200, DICOM_JSON, b""), "HEAD on QIDO")

    # No match.
    for path, params in (("/studies", {"PatientID": "NOBODY"}),
                         ("/studies/1.2.3.4/series", None),
                         ("/studies/1.2.3.4/series/1.2.3.5/instances", None)):
        st, hdrs, j, _ = qido(srv, path, params)
        checks.eq((st, j, hdrs.get("content-type")), (200, [], DICOM_JSON),
                  "no match on %s: 200 []" % path)

    # Errors.
    for path, params, name in (
            ("/studies", {"PatientNam": "x"}, "PatientNam"),
            ("/studies", {"limit": "-1"}, "limit"),
            ("/studies", {"offset": "x"}, "offset"),
            ("/studies", {"foo": "1"}, "foo"),
            ("/studies", {"StudyDate": "2020-"}, "StudyDate"),
            ("/studies", {"includefield": "PatientNam"}, "includefield"),
            ("/studies", {"SOPInstanceUID": "1.2"}, "SOPInstanceUID"),
            ("/studies", {"fuzzymatching": "yes"}, "fuzzymatching"),
            ("/studies/%s/series" % s1, {"StudyInstanceUID": s1}, "StudyInstanceUID")):
        st, _, j, _ = qido(srv, path, params)
        error_is(st, j, 400, "^" + re.escape(name) + ": ", "bad parameter %s" % name)
    st, _, j, _ = qido(srv, "/studies", pat1, accept="application/dicom+xml")
    error_is(st, j, 406, "application/dicom\\+xml", "QIDO Accept: application/dicom+xml")
    st, _, j, _ = qido(srv, "/studies", dict(pat1, accept="application/dicom+xml"))
    error_is(st, j, 406, ".", "QIDO accept= parameter excluding JSON")
    st, _, j, _ = qido(srv, "/studies", dict(pat1, accept="application/dicom+json"),
                       accept="text/html")
    checks.eq(st, 200, "accept= takes precedence over the Accept header")
    for acc, want in (("application/json", "application/json"), ("*/*", DICOM_JSON),
                      ("application/dicom+json, application/json;q=0.5", DICOM_JSON),
                      ("text/html, application/json", "application/json")):
        st, hdrs, j, _ = qido(srv, "/studies", pat1, accept=acc)
        checks.eq((st, hdrs.get("content-type")), (200, want), "Accept: %s" % acc)
    st, _, j, _ = qido(srv, "/studies", pat1, accept="application/dicom+json;q=0")
    checks.eq(st, 406, "q=0 excludes the only acceptable type")


def cfind(srv, level, keys):
    args = [PACSD, "find", "127.0.0.1", str(srv.port), "-aec", srv.aet, "-L", level, "--json"]
    for k, v in keys:
        args += ["-k", k if v is None else "%s=%s" % (k, v)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("pacsd find: %s" % r.stderr)
    return json.loads(r.stdout) if r.stdout.strip() else []


def norm(a, tag):
    v = (a.get(tag) or {}).get("Value")
    if v is None:
        return None
    return tuple(x.get("Alphabetic") if isinstance(x, dict) else x for x in v)


def test_qido_vs_cfind(srv):
    # (level, QIDO path, matching keys, keys compared, key tag of the answer)
    cases = [
        ("STUDY", "/studies", {"PatientID": "DIMSE-PAT-*"},
         ["StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "PatientName",
          "PatientID", "StudyID", "ModalitiesInStudy", "NumberOfStudyRelatedInstances",
          "NumberOfStudyRelatedSeries", "ReferringPhysicianName"]),
        ("STUDY", "/studies", {"PatientName": "roe*", "StudyDate": "20210101-"},
         ["StudyInstanceUID", "StudyDate", "PatientName"]),
        ("STUDY", "/studies", {},
         ["StudyInstanceUID", "PatientID", "StudyDate", "NumberOfStudyRelatedInstances"]),
        ("SERIES", "/series", {"PatientID": "DIMSE-PAT-1", "Modality": "CT"},
         ["StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber",
          "SeriesDescription", "NumberOfSeriesRelatedInstances"]),
        ("SERIES", "/series", {"SeriesDescription": "*AL*"},
         ["SeriesInstanceUID", "SeriesDescription", "Modality"]),
        ("IMAGE", "/instances", {"PatientID": "DIMSE-PAT-2", "InstanceNumber": "3"},
         ["SOPInstanceUID", "SOPClassUID", "InstanceNumber", "SeriesInstanceUID"]),
        ("IMAGE", "/instances", {"AccessionNumber": "ACC00?"},
         ["SOPInstanceUID", "InstanceNumber", "StudyInstanceUID"]),
    ]
    for level, path, match, compare in cases:
        params = dict(match)
        params["includefield"] = ",".join(k for k in compare if k not in match)
        st, _, qj, _ = qido(srv, path, params)
        keys = [(k, match.get(k)) for k in compare] + \
            [(k, v) for k, v in match.items() if k not in compare]
        fj = cfind(srv, level, keys)
        tags = [pydicom.datadict.tag_for_keyword(k) for k in compare]
        tags = ["%08X" % t for t in tags]
        qs = sorted(tuple(norm(a, t) for t in tags) for a in qj or [])
        fs = sorted(tuple(norm(a, t) for t in tags) for a in fj)
        what = "QIDO %s %s vs C-FIND" % (path, match)
        checks.ok(st == 200 and len(qs) > 0, what + ": some answers", (st, qj))
        checks.eq(qs, fs, what)


def main():
    warnings.simplefilter("ignore")  # pydicom on the corpus's odd files
    work = tempfile.mkdtemp(prefix="stow-qido-")
    arc = gen.generate(os.path.join(work, "gen"), PACSD)
    srv = Pacsd()
    try:
        corpus = test_corpus(srv)
        refused_path = dict(dc.corpus_files())["test_files/no_meta.dcm"]
        test_many_parts(srv, corpus, refused_path)
        test_generated(srv, arc)
        other = [i for i in arc.instances
                 if i["StudyInstanceUID"] == arc.studies[2]["StudyInstanceUID"]][0]
        test_statuses(srv, arc.instances[0]["path"], other["path"])
        test_limits(arc, corpus)
        test_accepted(arc)
        test_qido(srv, arc)
        test_qido_vs_cfind(srv)
    finally:
        srv.cleanup()
        subprocess.run(["rm", "-rf", work])
    checks.finish()


if __name__ == "__main__":
    main()
