#!/usr/bin/python3
"""pacsd's DIMSE services against real DCMTK clients.

Every check runs a DCMTK tool (echoscu, storescu, findscu, movescu, getscu,
storescp) against a pacsd started here (harness.Pacsd), and looks at what
the tool reports (its debug log of the DIMSE messages, the files it
writes) and at what pacsd stored (the SQLite index data_dir/index.db and the
files data_dir/files/<k[0:2]>/<blob_key>).

 1. Association: C-ECHO; a wrong Called AE title is rejected (reason 7);
    with dicom.allowed_calling_aets set, another Calling AE is rejected
    (reason 3) and a listed one gets in.
 2. The pydicom corpus (dcmcompare.corpus_files) is stored with storescu,
    each file in its own transfer syntax (a storescu profile proposing each
    file's SOP class with exactly its syntax: JPEG, JPEG 2000, JPEG-LS, RLE,
    Deflated, Big Endian pass through untouched). Files sharing a SOP
    Instance UID go in successive associations ("rounds"), each checked
    before the next replaces it. Files that cannot be sent are listed in
    NOT_STORABLE and NOT_SENT with the reason; every other file must be
    acknowledged with 0x0000 and stored byte for byte: the stored data set
    equals what storescu put on the wire (captured by a bit-preserving
    storescp that receives the same association) and, except for the
    files DCMTK re-encodes on sending (listed in the output), the file's
    own data set; the index row's size, sha256, ds_offset and transfer
    syntax match the blob. Then one C-MOVE (a UID list of every corpus
    study) sends everything to a bit-preserving storescp: each instance
    arrives as stored, in its stored syntax.
 3. A generated archive (dimse_gen.py: 2 patients x 2 studies x 2 series x
    5 CT/SC instances, one study per syntax: Implicit LE, Explicit LE,
    Explicit BE, Deflated) is stored with storescu, one association per
    syntax; every data set is byte-identical to its file.
 4. C-FIND (findscu -X, answers read back with pydicom) in the Patient
    Root and Study Root models at every level, with single value,
    universal, wild card (* ?), case-insensitive PN, DA and TM ranges
    (a-b, a-, -b), UID lists and computed return keys, compared with the
    answers expected from the generated data; some also with identifiers
    and answers in Implicit LE, Big Endian and Deflated (-xi -xb -xd);
    non-ASCII names of charset_files come back in ISO_IR 192, also for a
    Latin-1 or UTF-8 query; bad identifiers get 0xA900.
 5. C-CANCEL: findscu --cancel 3 on a query with BULK matches ends with
    0xFE00 and fewer answers, movescu --cancel 3 with 0xFE00 and counts
    that add up; pacsd still serves.
 6. C-MOVE (movescu) to a bit-preserving DCMTK storescp at study, series
    and image level in both models: files identical to the originals,
    counts; an unknown destination gets 0xA801; a destination that is
    down gets a failure with sub-operation counts; a destination that
    does not accept the stored syntax (Deflated) gets the instances
    converted to a native syntax it took, with the same elements and
    values; bad identifiers (StudyInstanceUID=*, no level) get 0xA900.
 7. C-GET (getscu +B) at study and series level: files identical, counts;
    with getscu's default contexts (one context per class, Explicit LE
    first) an Implicit VR LE study comes back, converted.
 8. dicom.duplicates keep / reject (0x0111) / replace: one index row, its
    file present and holding the right copy.
 9. SIGTERM: exit status 0; after a restart everything is still there.

Data directories are on /dev/shm when it is writable (no fsync cost; set
DIMSE_TMPDIR to choose another place). Ends with "N passed, N failed".
Run with Debian's /usr/bin/python3; env PACSD (binary), PACSD_SOURCE.
Options: -v prints more detail.
"""
import collections
import concurrent.futures
import glob
import hashlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import zlib

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def _pick_tmpdir():
    d = os.environ.get("DIMSE_TMPDIR")
    if d:
        return d
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return None


tempfile.tempdir = _pick_tmpdir()

import pydicom  # noqa: E402

import dcmcompare as dc  # noqa: E402
import dimse_gen as gen  # noqa: E402
import harness as h  # noqa: E402

VERBOSE = "-v" in sys.argv[1:]
C = h.Checks()
WORK = tempfile.mkdtemp(prefix="dimse-dcmtk-")
BULK = 500

ST_SUCCESS, ST_PENDING, ST_CANCEL = 0x0000, 0xFF00, 0xFE00
ST_DUPLICATE = 0x0111
ST_IDENT_MISMATCH = 0xA900
ST_DEST_UNKNOWN = 0xA801

# Corpus files that hold no SOP Class UID / SOP Instance UID, so there is
# nothing to store them as (storescu refuses them itself); not sent.
NOT_STORABLE = {
    "charset_files/chrSQEncoding.dcm": "a sequence fragment, no SOP Class/Instance UID",
    "charset_files/chrSQEncoding1.dcm": "a sequence fragment, no SOP Class/Instance UID",
    "test_files/UN_sequence.dcm": "one UN sequence, no SOP Class/Instance UID",
    "test_files/dicomdirtests/DICOMDIR": "a DICOMDIR (media directory, not an instance)",
    "test_files/dicomdirtests/DICOMDIR-bigEnd": "a DICOMDIR (media directory, not an instance)",
    "test_files/dicomdirtests/DICOMDIR-empty.dcm": "a DICOMDIR (media directory, not an instance)",
    "test_files/dicomdirtests/DICOMDIR-implicit": "a DICOMDIR (media directory, not an instance)",
    "test_files/dicomdirtests/DICOMDIR-nooffset": "a DICOMDIR (media directory, not an instance)",
    "test_files/dicomdirtests/DICOMDIR-nopatient": "a DICOMDIR (media directory, not an instance)",
    "test_files/dicomdirtests/DICOMDIR-reordered": "a DICOMDIR (media directory, not an instance)",
    "test_files/dicomdirtests/TINY_ALPHA/DICOMDIR": "a DICOMDIR (media directory, not an instance)",
    "test_files/empty_charset_LEI.dcm": "a few elements, no SOP Class/Instance UID",
    "test_files/meta_missing_tsyntax.dcm": "a few elements, no SOP Class/Instance UID",
    "test_files/nested_priv_SQ.dcm": "a private sequence only, no SOP Class/Instance UID",
    "test_files/no_meta.dcm": "a few elements, no SOP Class/Instance UID",
    "test_files/no_meta_group_length.dcm": "a few elements, no SOP Class/Instance UID",
    "test_files/priv_SQ.dcm": "a private sequence only, no SOP Class/Instance UID",
}

# Corpus files with SOP UIDs that DCMTK's storescu cannot read, so they
# never reach pacsd: storescu must say so, and nothing may be stored from
# them.
NOT_SENT = {
    "test_files/MR_truncated.dcm":
        "deliberately truncated inside the pixel data; DCMTK refuses to read it",
    "test_files/rtplan_truncated.dcm":
        "deliberately truncated; DCMTK refuses to read it",
    "test_files/SC_rgb_jpeg.dcm":
        "Implicit VR data set under an Explicit VR syntax (JPEG Baseline); DCMTK misparses it",
    "test_files/rtdose_rle.dcm":
        "Implicit VR data set under RLE Lossless; DCMTK reads every element as UN "
        "and finds no SOP Instance UID",
    "test_files/rtdose_rle_1frame.dcm":
        "Implicit VR data set under RLE Lossless; DCMTK reads every element as UN "
        "and finds no SOP Instance UID",
}


def log(*a):
    if VERBOSE:
        print(*a, flush=True)


def mkdir(name):
    d = os.path.join(WORK, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def read_ds(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, force=True, **kw)


def sent_uid(path):
    """(SOP Instance UID, data set bytes inflated) of a received file."""
    ds = read_ds(path, stop_before_pixels=True)
    return str(ds.SOPInstanceUID), dc.dataset_bytes(path)[1]


# ---------------------------------------------------------------------------
# DCMTK output

def dimse_messages(text, kind=None):
    """The INCOMING DIMSE messages of a DCMTK tool's debug log (-d), as
    dicts of 'Message Type', 'DIMSE Status' (int), '... Suboperations'
    (int or None), 'Affected SOP Instance UID' ...; kind filters on the
    message type ('C-FIND RSP')."""
    out, cur = [], None
    for line in text.splitlines():
        if "INCOMING DIMSE MESSAGE" in line:
            cur = {}
            continue
        if cur is None:
            continue
        if "END DIMSE MESSAGE" in line:
            if kind is None or cur.get("Message Type") == kind:
                out.append(cur)
            cur = None
            continue
        m = re.match(r"D: ([A-Za-z][A-Za-z ]*?)\s+: (.*)$", line)
        if not m:
            continue
        key, val = m.group(1), m.group(2).strip()
        if key == "DIMSE Status":
            val = int(val.split(":")[0], 16)
        elif key.endswith("Suboperations"):
            val = None if val == "none" else int(val)
        cur[key] = val
    return out


def final_status(msgs):
    return msgs[-1]["DIMSE Status"] if msgs else None


def reject_reason(text):
    m = re.search(r"Reason: (.*)", text)
    return m.group(1).strip() if m else None


# ---------------------------------------------------------------------------
# pacsd's index and files

class Index:
    def __init__(self, pacsd):
        self.data_dir = pacsd.data_dir

    def rows(self, sql, args=()):
        db = sqlite3.connect(os.path.join(self.data_dir, "index.db"), timeout=30)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def instance(self, uid):
        return self.rows("SELECT blob_key, ds_offset, size, sha256, transfer_syntax "
                         "FROM instances WHERE sop_instance_uid = ?", (uid,))

    def blob_path(self, key):
        return os.path.join(self.data_dir, "files", key[0:2], key)

    def blob_files(self):
        out = []
        for dirpath, dirs, names in os.walk(os.path.join(self.data_dir, "files")):
            if os.path.relpath(dirpath, os.path.join(self.data_dir, "files")).split(os.sep)[0] \
                    == "tmp":
                continue
            out += [os.path.join(dirpath, n) for n in names]
        return out

    def check(self, uid, want_ds, want_ts, what):
        """The one row for uid, its blob, and the blob's data set (inflated)
        == want_ds. Returns True when all hold."""
        rows = self.instance(uid)
        if not C.eq(len(rows), 1, "%s: index rows for %s" % (what, uid)):
            return False
        key, off, size, sha, ts = rows[0]
        path = self.blob_path(key)
        if not C.ok(os.path.isfile(path), "%s: blob %s exists" % (what, path)):
            return False
        with open(path, "rb") as f:
            data = f.read()
        ok = C.eq(len(data), size, "%s: index size = blob size" % what)
        ok &= C.eq(hashlib.sha256(data).hexdigest(), sha, "%s: index sha256 = blob's" % what)
        blob_ts, ds = dc.split_part10(data)
        ok &= C.eq(off, len(data) - len(ds), "%s: ds_offset is where the data set starts" % what)
        ok &= C.eq(blob_ts, want_ts, "%s: blob meta transfer syntax" % what)
        ok &= C.eq(ts, want_ts, "%s: index transfer syntax" % what)
        if blob_ts == dc.DEFLATED_LE:
            try:
                ds = zlib.decompress(ds, -15)
            except zlib.error as e:
                return C.ok(False, "%s: stored deflated data set inflates" % what, e)
        ok &= C.ok(ds == want_ds, "%s: stored data set bytes equal the sent ones" % what,
                   first_difference(ds, want_ds) if ds != want_ds else "")
        return ok


def first_difference(a, b):
    n = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
    return "lengths %d / %d, first difference at %d: %r vs %r" % (
        len(a), len(b), n, a[n:n + 16], b[n:n + 16])


def sanitizer_clean(p, what):
    out = p.output()
    bad = [l for l in out.splitlines()
           if "AddressSanitizer" in l or "runtime error:" in l or "LeakSanitizer" in l]
    C.ok(not bad, "%s: no sanitizer reports in pacsd's log" % what, "\n".join(bad[:5]))


# ---------------------------------------------------------------------------
# DCMTK tools

def aec(p):
    return ["-aec", p.aet, "127.0.0.1", str(p.port)]


def run(args, timeout=300):
    """Runs a DCMTK tool; its output decoded as UTF-8 with replacement
    (it may print values in other character sets)."""
    r = subprocess.run(args, capture_output=True, timeout=timeout)
    r.stdout = r.stdout.decode("utf-8", "replace")
    r.stderr = r.stderr.decode("utf-8", "replace")
    return r


def storescu(p, files, opts=(), aet="STORESCU"):
    """Runs storescu -d; returns (CompletedProcess, {SOP UID: status})."""
    r = run(["storescu", "-d", "-nh", "-aet", aet, *opts, *aec(p), *files])
    st = {m.get("Affected SOP Instance UID"): m["DIMSE Status"]
          for m in dimse_messages(r.stdout + r.stderr, "C-STORE RSP")}
    return r, st


def storescu_profile(pairs, path):
    """A storescu configuration proposing each (SOP class, syntax) pair as a
    presentation context of its own; the profile is called 'Exact'."""
    tss = sorted({t for _, t in pairs})
    lines = ["[[TransferSyntaxes]]"]
    for i, t in enumerate(tss):
        lines += ["[TS%d]" % i, "TransferSyntax1 = %s" % t]
    lines += ["[[PresentationContexts]]", "[Exact]"]
    for j, (c, t) in enumerate(sorted(pairs)):
        lines.append("PresentationContext%d = %s\\TS%d" % (j + 1, c, tss.index(t)))
    lines += ["[[Profiles]]", "[Exact]", "PresentationContexts = Exact"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return ["-xf", path, "Exact"]


def findscu(p, model, keys, extra=(), aet="FINDSCU"):
    """findscu -X: returns (status list of the C-FIND RSPs, [datasets], output)."""
    out = tempfile.mkdtemp(dir=WORK, prefix="find-")
    args = ["findscu", "-d", "-aet", aet, "-" + model, "-X", "-od", out, *extra]
    for k, v in keys.items():
        if isinstance(v, bytes):  # a value in another character set
            args += ["-k", k.encode() + b"=" + v]
        else:
            args += ["-k", k if v is None else "%s=%s" % (k, v)]
    r = run(args + aec(p))
    text = r.stdout + r.stderr
    msgs = dimse_messages(text, "C-FIND RSP")
    answers = [read_ds(f) for f in sorted(glob.glob(os.path.join(out, "rsp*.dcm")))]
    shutil.rmtree(out, ignore_errors=True)
    return [m["DIMSE Status"] for m in msgs], answers, text


def movescu(p, model, keys, dest, aet="MOVESCU", extra=()):
    args = ["movescu", "-d", "-aet", aet, "-" + model, "-aem", dest, *extra]
    for k, v in keys.items():
        args += ["-k", "%s=%s" % (k, v)]
    r = run(args + aec(p))
    text = r.stdout + r.stderr
    return dimse_messages(text, "C-MOVE RSP"), text


def getscu(p, model, keys, outdir, opts=(), aet="GETSCU"):
    args = ["getscu", "-d", "+B", "-aet", aet, "-" + model, "-od", outdir, *opts]
    for k, v in keys.items():
        args += ["-k", "%s=%s" % (k, v)]
    r = run(args + aec(p))
    text = r.stdout + r.stderr
    return dimse_messages(text, "C-GET RSP"), text


def echo(p, aet="ECHOSCU", called=None):
    r = run(["echoscu", "-v", "-aet", aet, "-aec", called or p.aet, "127.0.0.1", str(p.port)])
    return r.returncode, r.stdout + r.stderr


def check_serving(p, what):
    rc, text = echo(p)
    C.eq(rc, 0, "%s: pacsd still answers C-ECHO" % what)
    C.ok(p.alive(), "%s: pacsd is running" % what)


# ---------------------------------------------------------------------------
# 1. association

def test_association():
    p = h.Pacsd(aet="PACSD")
    rc, text = echo(p)
    C.eq(rc, 0, "echoscu: C-ECHO succeeds")
    C.ok("Received Echo Response (Success)" in text, "echoscu: success response", text[-300:])
    rc, text = echo(p, called="WRONG")
    C.ok(rc != 0, "echoscu -aec WRONG: fails")
    C.ok("Association Rejected" in text and "Rejected Permanent" in text,
         "echoscu -aec WRONG: association rejected permanently", text[-300:])
    C.eq(reject_reason(text), "Called AE Title Not Recognized", "echoscu -aec WRONG: reason")
    sanitizer_clean(p, "association")
    p.cleanup()

    p = h.Pacsd(aet="GATED", config={"dicom": {"allowed_calling_aets": ["GOODSCU", "OTHER"]}})
    rc, text = echo(p, aet="GOODSCU")
    C.eq(rc, 0, "allowed_calling_aets: a listed Calling AE gets in")
    rc, text = echo(p, aet="BADSCU")
    C.ok(rc != 0 and "Association Rejected" in text,
         "allowed_calling_aets: an unlisted Calling AE is rejected", text[-300:])
    C.eq(reject_reason(text), "Calling AE Title Not Recognized",
         "allowed_calling_aets: rejection reason")
    rc, text = echo(p, aet="goodscu")
    C.ok(rc != 0, "allowed_calling_aets: AE titles are case-sensitive (goodscu rejected)")
    rc, _ = echo(p, aet="OTHER")
    C.eq(rc, 0, "allowed_calling_aets: the second listed AE gets in after rejections")
    sanitizer_clean(p, "allow-list")
    p.cleanup()


# ---------------------------------------------------------------------------
# 2. the pydicom corpus

def own_syntax(path, ds):
    ts = dc.split_part10(open(path, "rb").read())[0]
    if ts:
        return ts
    if ds.is_implicit_VR:
        return dc.IMPLICIT_LE
    return dc.EXPLICIT_LE if ds.is_little_endian else dc.EXPLICIT_BE


def corpus_plan():
    """(storable [(name, path, class, instance, syntax)], names without UIDs)."""
    storable, no_uids = [], []
    for name, path in dc.corpus_files():
        try:
            ds = read_ds(path, stop_before_pixels=True)
        except Exception:  # unreadable: treated as having no UIDs
            no_uids.append(name)
            continue
        cls, inst = ds.get("SOPClassUID"), ds.get("SOPInstanceUID")
        if not cls or not inst:
            no_uids.append(name)
            continue
        storable.append((name, path, str(cls), str(inst), own_syntax(path, ds)))
    return storable, no_uids


def test_corpus(p):
    storable, no_uids = corpus_plan()
    print("corpus: %d files with SOP UIDs; not sent: %d without SOP UIDs (NOT_STORABLE), %d "
          "DCMTK cannot read (NOT_SENT)" % (len(storable), len(no_uids), len(NOT_SENT)), flush=True)
    for n, why in sorted(NOT_STORABLE.items()) + sorted(NOT_SENT.items()):
        log("  not sent: %s: %s" % (n, why))
    C.eq(sorted(no_uids), sorted(NOT_STORABLE), "corpus: the files without SOP UIDs are "
         "exactly those listed in NOT_STORABLE")
    names = {s[0] for s in storable}
    C.eq(sorted(n for n in NOT_SENT if n not in names), [],
         "corpus: every NOT_SENT file is in the corpus with SOP UIDs")

    # Rounds: each holds at most one file per SOP Instance UID.
    by_uid = collections.defaultdict(list)
    for s in storable:
        by_uid[s[3]].append(s)
    rounds = []
    for group in by_uid.values():
        for i, s in enumerate(group):
            while len(rounds) <= i:
                rounds.append([])
            rounds[i].append(s)

    ref = h.StoreSCP(aet="REFSCP", extra=("+B", "+xa"))
    idx = Index(p)
    acked = reencoded = 0
    reencoded_names = []
    ts_seen = collections.Counter()
    stored_last = {}  # uid -> (name, data set bytes) of the last acknowledged copy
    for k, rnd in enumerate(rounds):
        cfg = storescu_profile({(s[2], s[4]) for s in rnd},
                               os.path.join(WORK, "round%d.cfg" % k))
        for f in glob.glob(os.path.join(ref.out, "*")):
            os.unlink(f)
        files = [s[1] for s in rnd]
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            fut_ref = pool.submit(run, ["storescu", "-nh", *cfg, "-aec", ref.aet, "127.0.0.1",
                                        str(ref.port), *files])
            r, status = storescu(p, files, cfg)
            fut_ref.result()
        text = r.stdout + r.stderr
        wire = {}
        for f in glob.glob(os.path.join(ref.out, "*")):
            uid, ds = sent_uid(f)
            wire[uid] = ds
        for name, path, cls, uid, ts in rnd:
            what = "corpus round %d %s" % (k + 1, name)
            if name in NOT_SENT:
                C.ok(any(l.startswith("E:") and path in l for l in text.splitlines()),
                     "%s: storescu reports that it cannot send it (%s)" % (what, NOT_SENT[name]))
                C.ok(uid not in status, "%s: nothing stored from it" % what)
                continue
            if not C.eq(status.get(uid), ST_SUCCESS, "%s: C-STORE status" % what):
                continue
            acked += 1
            ts_seen[ts] += 1
            if not C.ok(uid in wire, "%s: the reference storescp received it" % what):
                continue
            file_ds = dc.dataset_bytes(path)[1]
            if wire[uid] != file_ds:
                reencoded += 1
                reencoded_names.append(name)
            if idx.check(uid, wire[uid], ts, what):
                stored_last[uid] = (name, wire[uid])
    # After all rounds: the last copy of each UID is the one stored
    # (dicom.duplicates = replace).
    for uid, (name, ds) in sorted(stored_last.items()):
        rows = idx.instance(uid)
        if C.eq(len(rows), 1, "corpus: one row for %s at the end" % name):
            with open(idx.blob_path(rows[0][0]), "rb") as f:
                blob_ts, got = dc.split_part10(f.read())
            if blob_ts == dc.DEFLATED_LE:
                got = zlib.decompress(got, -15)
            C.ok(got == ds, "corpus: %s (the last copy of its SOP Instance UID sent) is the "
                 "one kept at the end" % name)
    n_rows = idx.rows("SELECT COUNT(*) FROM instances")[0][0]
    C.eq(n_rows, len([u for u in by_uid if any(s[0] not in NOT_SENT for s in by_uid[u])]),
         "corpus: index rows = distinct SOP Instance UIDs sent")
    compressed = {t for t in ts_seen if t not in (dc.IMPLICIT_LE, dc.EXPLICIT_LE,
                                                   dc.EXPLICIT_BE, dc.DEFLATED_LE)}
    C.ok(len(compressed) >= 5, "corpus: compressed syntaxes went through untouched",
         sorted(compressed))
    print("corpus: %d files acknowledged in %d rounds, %d syntaxes (%s); %d re-encoded by "
          "DCMTK on sending (stored as received): %s" % (
              acked, len(rounds), len(ts_seen), ", ".join(sorted(ts_seen)), reencoded,
              ", ".join(n.split("/")[-1] for n in reencoded_names)), flush=True)
    ref.cleanup()


def test_corpus_move(p, scp):
    """Every stored corpus instance, moved in one C-MOVE (a UID list of all
    studies) to a bit-preserving storescp that accepts every syntax, arrives
    as stored: compressed syntaxes pass through untouched both ways."""
    idx = Index(p)
    studies = [r[0] for r in idx.rows("SELECT study_instance_uid FROM studies")]
    stored = {}
    for uid, key, ts in idx.rows("SELECT sop_instance_uid, blob_key, transfer_syntax "
                                 "FROM instances"):
        with open(idx.blob_path(key), "rb") as f:
            blob_ts, ds = dc.split_part10(f.read())
        if blob_ts == dc.DEFLATED_LE:
            ds = zlib.decompress(ds, -15)
        stored[uid] = (ds, ts)
    for f in scp.files():
        os.unlink(f)
    msgs, text = movescu(p, "S", {"QueryRetrieveLevel": "STUDY",
                                  "StudyInstanceUID": "\\".join(studies)}, scp.aet)
    what = "C-MOVE of the whole corpus (%d studies, %d instances)" % (len(studies), len(stored))
    C.eq(final_status(msgs), ST_SUCCESS, what + ": final status")
    if msgs:
        C.eq(counts(msgs[-1]), (len(stored), 0, 0), what + ": completed/failed/warning")
    got = received(scp.files())
    C.eq(sorted(got), sorted(stored), what + ": instances received")
    for uid in sorted(set(got) & set(stored)):
        C.ok(got[uid][0] == stored[uid][0], "%s: %s arrives as stored" % (what, uid),
             first_difference(got[uid][0], stored[uid][0]))
        C.eq(str(got[uid][1]), stored[uid][1], "%s: %s in its stored syntax" % (what, uid))


def test_charsets(p):
    """Non-ASCII patient names come back in UTF-8 (ISO_IR 192)."""
    want = {}
    for name, path in dc.corpus_files():
        if not name.startswith("charset_files/") or name in NOT_STORABLE:
            continue
        ds = read_ds(path, stop_before_pixels=True)
        want[str(ds.PatientID)] = (name, str(ds.PatientName))
    for pid, (name, pn) in sorted(want.items()):
        st, ans, _ = findscu(p, "P", {"QueryRetrieveLevel": "PATIENT", "PatientID": pid,
                                      "PatientName": None})
        what = "charset %s (%s)" % (name, pid)
        if not C.eq(len(ans), 1, what + ": one answer"):
            continue
        a = ans[0]
        C.eq(str(a.get("PatientName", "")), pn, what + ": PatientName decoded")
        non_ascii = any(ord(c) > 127 for c in pn)
        C.eq(str(a.get("SpecificCharacterSet", "")) if non_ascii else "",
             "ISO_IR 192" if non_ascii else "",
             what + ": SpecificCharacterSet")
        if non_ascii:
            raw = a.get_item(0x00100010).value
            raw = raw if isinstance(raw, bytes) else raw.encode()
            try:
                text = raw.rstrip(b" ").decode("utf-8")
            except UnicodeDecodeError as e:
                text = e
            # pydicom's str() drops empty trailing component groups ("=")
            C.eq(text.rstrip("=") if isinstance(text, str) else text, pn.rstrip("="),
                 what + ": the value's bytes are UTF-8")
    # A Latin-1 identifier (bytes on findscu's command line) gets UTF-8 answers.
    st, ans, _ = findscu(p, "P", {"SpecificCharacterSet": "ISO_IR 100",
                                  "QueryRetrieveLevel": "PATIENT",
                                  "PatientName": "Äneas^Rüdiger".encode("latin-1"),
                                  "PatientID": None})
    C.eq([(str(a.PatientID), str(a.PatientName), str(a.get("SpecificCharacterSet")))
          for a in ans], [("SCSGERM", "Äneas^Rüdiger", "ISO_IR 192")],
         "charset: Latin-1 query PatientName=Äneas^Rüdiger answered in UTF-8")
    utf8 = {"SpecificCharacterSet": "ISO_IR 192"}
    for value, ids in (("Äneas^Rüdiger", {"SCSGERM"}), ("Buc^J?r?me", {"SCSFREN"}),
                       ("wang^xiaodong*", {"X1EXAMPLE", "X2EXAMPLE"}),
                       ("Люкceмбypг", {"SCSRUSS"})):
        keys = dict(utf8, QueryRetrieveLevel="PATIENT", PatientName=value, PatientID=None)
        st, ans, _ = findscu(p, "P", keys)
        C.eq(sorted(str(a.PatientID) for a in ans), sorted(ids),
             "charset: UTF-8 query PatientName=%s" % value)
        C.eq(st[-1:], [ST_SUCCESS], "charset: UTF-8 query %s status" % value)


def test_sigterm_while_storing(p, paths):
    """SIGTERM while storescu is sending BULK files: no new association is
    accepted, the running one finishes (dicom.shutdown_timeout is 30 s),
    pacsd exits 0, and after a restart every acknowledged instance is there,
    byte for byte."""
    idx = Index(p)
    before = idx.rows("SELECT COUNT(*) FROM instances")[0][0]
    log_path = os.path.join(WORK, "storescu-sigterm.log")
    with open(log_path, "wb") as logf:  # not a pipe: storescu must never block on it
        proc = subprocess.Popen(["storescu", "-d", "-nh", *aec(p), *paths],
                                stdout=logf, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while proc.poll() is None and time.time() < deadline and \
            idx.rows("SELECT COUNT(*) FROM instances")[0][0] < before + 20:
        time.sleep(0.02)
    running = proc.poll() is None
    p.p.send_signal(signal.SIGTERM)
    rc, text = echo(p)
    C.ok(rc != 0, "SIGTERM while storing: no new association accepted", text[-200:])
    proc.wait(timeout=120)
    with open(log_path, "rb") as f:
        out = f.read().decode("utf-8", "replace")
    rc = p.stop(timeout=60)
    C.eq(rc, 0, "SIGTERM while storing: pacsd exits with status 0")
    C.ok(running, "SIGTERM while storing: storescu was still sending when SIGTERM came")
    status = {m.get("Affected SOP Instance UID"): m["DIMSE Status"]
              for m in dimse_messages(out, "C-STORE RSP")}
    acked = [u for u, st in status.items() if st == ST_SUCCESS]
    C.eq(len(acked), len(paths), "SIGTERM while storing: the running association finished "
         "(every file acknowledged)")
    p.restart()
    by_uid = {read_ds(f, stop_before_pixels=True).SOPInstanceUID: f for f in paths}
    bad = [u for u in acked if len(idx.instance(u)) != 1]
    C.eq(bad, [], "SIGTERM while storing: every acknowledged instance is in the index after "
         "a restart")
    for u in acked[:: max(1, len(acked) // 20)]:
        idx.check(u, dc.dataset_bytes(by_uid[u])[1], dc.EXPLICIT_LE,
                  "SIGTERM while storing, after restart")


def test_cancel(p, scp, study):
    keys = {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": study, "SOPInstanceUID": None}
    st, ans, text = findscu(p, "S", keys, extra=("--cancel", "3"))
    C.eq(st[-1:], [ST_CANCEL], "cancel: final status 0xFE00 after findscu --cancel 3")
    C.ok(3 <= len(ans) < BULK, "cancel: fewer answers than the %d matches" % BULK, len(ans))
    C.ok(all(s == ST_PENDING for s in st[:-1]), "cancel: the answers before it are pending")
    check_serving(p, "after C-CANCEL")
    st, ans, _ = findscu(p, "S", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study,
                                  "NumberOfStudyRelatedInstances": None})
    C.ok(len(ans) == 1 and str(ans[0].get("NumberOfStudyRelatedInstances")) == str(BULK),
         "cancel: pacsd answers a query afterwards", [str(a) for a in ans][:1])
    st, ans, _ = findscu(p, "S", keys)
    C.eq(len(ans), BULK, "cancel: the same query without cancel gives every match")

    # C-MOVE cancelled after 3 pending responses.
    for f in scp.files():
        os.unlink(f)
    msgs, text = movescu(p, "S", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study},
                         scp.aet, extra=("--cancel", "3"))
    C.eq(final_status(msgs), ST_CANCEL, "cancel: C-MOVE final status 0xFE00 after movescu "
         "--cancel 3")
    if msgs:
        m = msgs[-1]
        done, failed, warn = counts(m)
        remaining = m.get("Remaining Suboperations")
        C.ok(remaining is not None and done is not None and done < BULK,
             "cancel: C-MOVE stopped early and says how many remain", (remaining, done))
        if remaining is not None and done is not None:
            C.eq(done + (failed or 0) + (warn or 0) + remaining, BULK,
                 "cancel: C-MOVE completed + failed + warning + remaining")
            time.sleep(0.2)  # storescp writes the last file after answering
            C.eq(len(scp.files()), done, "cancel: the storescp got the completed ones")
        for f in scp.files():
            os.unlink(f)
    check_serving(p, "after C-MOVE cancel")


# ---------------------------------------------------------------------------
# 3. the generated archive

SYNTAX_OPT = {"implicit": "-xi", "explicit": "-xe", "big": "-xb", "deflated": "-xd"}


def test_store_generated(p, arc):
    idx = Index(p)
    for name, ts in gen.SYNTAXES:
        insts = arc.by_syntax(name)
        r, status = storescu(p, [i["path"] for i in insts], (SYNTAX_OPT[name],))
        C.eq(len(dimse_messages(r.stdout + r.stderr, "C-STORE RSP")), len(insts),
             "generated %s: one association, one response per file" % name)
        for i in insts:
            what = "generated %s %s" % (name, os.path.basename(i["path"]))
            if C.eq(status.get(i["SOPInstanceUID"]), ST_SUCCESS, what + ": C-STORE status"):
                idx.check(i["SOPInstanceUID"], dc.dataset_bytes(i["path"])[1], ts, what)
    counts = [idx.rows("SELECT COUNT(*) FROM %s" % t)[0][0]
              for t in ("patients", "studies", "series", "instances")]
    C.eq(counts, [len(arc.patients), len(arc.studies), len(arc.series), len(arc.instances)],
         "generated: index rows per level")


# ---------------------------------------------------------------------------
# 4. C-FIND

UNIQUE = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID",
          "IMAGE": "SOPInstanceUID"}
SETS = {"ModalitiesInStudy", "SOPClassesInStudy"}
COUNTS = {"NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
          "NumberOfPatientRelatedInstances", "NumberOfStudyRelatedSeries",
          "NumberOfStudyRelatedInstances", "NumberOfSeriesRelatedInstances"}


def attr(e, kw):
    """An attribute of a generated entity or of the entities above it."""
    while e is not None:
        if kw in e:
            return e[kw]
        e = e.get("series") or e.get("study") or e.get("patient")
    raise KeyError(kw)


def answer_value(a, kw):
    if kw not in a:
        return None
    v = a.get(kw)
    if kw in SETS:
        return set(str(x) for x in v) if isinstance(v, (list, pydicom.multival.MultiValue)) \
            else {str(v)} if v else set()
    if kw in COUNTS:
        try:
            return int(v)
        except (TypeError, ValueError):
            return v
    return str(v) if v is not None else ""


def entities(arc, level):
    return {"PATIENT": arc.patients, "STUDY": arc.studies, "SERIES": arc.series,
            "IMAGE": arc.instances}[level]


def query_cases(arc):
    """(model, level, {keyword: value or None}, expected predicate)."""
    S, E = arc.studies, arc.series
    uid = lambda e: e[UNIQUE["STUDY"]]  # noqa: E731
    p1, p2 = arc.patients[0]["PatientID"], arc.patients[1]["PatientID"]
    all_pat = ["PatientName", "PatientBirthDate", "PatientSex", "NumberOfPatientRelatedStudies",
               "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances"]
    all_study = ["StudyDate", "StudyTime", "AccessionNumber", "StudyID", "StudyDescription",
                 "ReferringPhysicianName", "ModalitiesInStudy", "SOPClassesInStudy",
                 "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"]
    all_series = ["Modality", "SeriesNumber", "SeriesDescription",
                  "NumberOfSeriesRelatedInstances"]
    ret = lambda kws: {k: None for k in kws}  # noqa: E731
    c = []

    def q(model, level, keys, pred, returns=()):
        d = {"QueryRetrieveLevel": level}
        d.update(ret(returns))
        d.update(keys)  # a matching key is returned too
        c.append((model, level, d, pred))

    # Patient Root, PATIENT
    q("P", "PATIENT", {"PatientID": None}, lambda e: True, all_pat)
    q("P", "PATIENT", {"PatientID": p2}, lambda e: e["PatientID"] == p2, all_pat)
    q("P", "PATIENT", {"PatientName": "doe^j*"}, lambda e: e["PatientName"] == "DOE^JOHN")
    q("P", "PATIENT", {"PatientName": "roe^jane^q"}, lambda e: e["PatientName"] == "ROE^JANE^Q")
    q("P", "PATIENT", {"PatientName": "DOE"}, lambda e: False)
    q("P", "PATIENT", {"PatientID": "DIMSE-PAT-?"}, lambda e: True, ["PatientName"])
    q("P", "PATIENT", {"PatientID": "*-1"}, lambda e: e["PatientID"] == p1)
    q("P", "PATIENT", {"PatientID": "dimse-pat-1"}, lambda e: False)
    q("P", "PATIENT", {"PatientBirthDate": "19800101-"},
      lambda e: e["PatientBirthDate"] >= "19800101", ["PatientBirthDate"])
    q("P", "PATIENT", {"PatientBirthDate": "-19751231"},
      lambda e: e["PatientBirthDate"] <= "19751231")
    q("P", "PATIENT", {"PatientSex": "F"}, lambda e: e["PatientSex"] == "F")
    # Patient Root, STUDY / SERIES / IMAGE
    q("P", "STUDY", {"PatientID": p1, "StudyDate": "20200101-20201231"},
      lambda e: attr(e, "PatientID") == p1 and "2020" <= e["StudyDate"] < "2021", all_study)
    q("P", "STUDY", {"PatientID": p2, "StudyInstanceUID": None},
      lambda e: attr(e, "PatientID") == p2, all_study + ["NumberOfPatientRelatedInstances"])
    q("P", "STUDY", {"StudyInstanceUID": None}, lambda e: True, ["PatientID"])
    st = S[2]
    q("P", "SERIES", {"PatientID": p2, "StudyInstanceUID": uid(st), "Modality": "CT"},
      lambda e, st=st: e["study"] is st and e["Modality"] == "CT", all_series)
    q("P", "SERIES", {"PatientID": p1, "StudyInstanceUID": uid(S[0]), "SeriesInstanceUID": None},
      lambda e: e["study"] is S[0], all_series + ["NumberOfStudyRelatedInstances"])
    se = E[3]
    q("P", "IMAGE", {"PatientID": attr(se, "PatientID"), "StudyInstanceUID": uid(se["study"]),
                     "SeriesInstanceUID": se["SeriesInstanceUID"]},
      lambda e, se=se: e["series"] is se, ["InstanceNumber", "SOPClassUID"])
    q("P", "IMAGE", {"PatientID": p1, "InstanceNumber": "2"},
      lambda e: attr(e, "PatientID") == p1 and e["InstanceNumber"] == "2", ["InstanceNumber"])
    # Study Root, STUDY
    q("S", "STUDY", {"StudyDate": "20210310"}, lambda e: e["StudyDate"] == "20210310", all_study)
    q("S", "STUDY", {"StudyDate": "20200601-20211231"},
      lambda e: "20200601" <= e["StudyDate"] <= "20211231", ["StudyDate"])
    q("S", "STUDY", {"StudyDate": "20210101-"}, lambda e: e["StudyDate"] >= "20210101")
    q("S", "STUDY", {"StudyDate": "-20200620"}, lambda e: e["StudyDate"] <= "20200620")
    q("S", "STUDY", {"StudyDate": None}, lambda e: True, all_study + all_pat)
    q("S", "STUDY", {"StudyTime": "080000-120000"},
      lambda e: "080000" <= e["StudyTime"] <= "120000", ["StudyTime"])
    q("S", "STUDY", {"StudyTime": "-0900"}, lambda e: e["StudyTime"] < "090000")
    q("S", "STUDY", {"StudyTime": "1430-"}, lambda e: e["StudyTime"] >= "1430")
    q("S", "STUDY", {"StudyTime": "101530.250"}, lambda e: e["StudyTime"] == "101530.250")
    q("S", "STUDY", {"StudyInstanceUID": "%s\\%s" % (uid(S[0]), uid(S[3]))},
      lambda e: e is S[0] or e is S[3], ["AccessionNumber"])
    q("S", "STUDY", {"AccessionNumber": "ACC00?"}, lambda e: e["AccessionNumber"][:5] == "ACC00")
    q("S", "STUDY", {"AccessionNumber": "ACC*3"}, lambda e: e["AccessionNumber"].endswith("3"))
    q("S", "STUDY", {"AccessionNumber": "acc001"}, lambda e: False)
    q("S", "STUDY", {"PatientName": "doe^j*"}, lambda e: attr(e, "PatientName") == "DOE^JOHN",
      ["PatientName", "PatientID"])
    q("S", "STUDY", {"ReferringPhysicianName": "who^dr"},
      lambda e: e["ReferringPhysicianName"] == "WHO^DR", ["ReferringPhysicianName"])
    q("S", "STUDY", {"StudyDescription": "*CT", "StudyDate": "2021*"},
      lambda e: False)  # DA takes no wild cards: "2021*" matches no date
    q("S", "STUDY", {"StudyDescription": "?HEST*"}, lambda e: e["StudyDescription"] == "CHEST CT")
    q("S", "STUDY", {"ModalitiesInStudy": "OT"}, lambda e: "OT" in e["ModalitiesInStudy"],
      ["ModalitiesInStudy", "NumberOfStudyRelatedSeries"])
    q("S", "STUDY", {"StudyID": "S4", "PatientID": p2}, lambda e: e["StudyID"] == "S4",
      ["NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries"])
    # Study Root, SERIES
    q("S", "SERIES", {"StudyInstanceUID": uid(S[1])}, lambda e: e["study"] is S[1],
      all_series + ["StudyDate"])
    q("S", "SERIES", {"Modality": "OT"}, lambda e: e["Modality"] == "OT", all_series)
    q("S", "SERIES", {"SeriesDescription": "*CAPTURE"},
      lambda e: e["SeriesDescription"].endswith("CAPTURE"))
    q("S", "SERIES", {"SeriesInstanceUID": "%s\\%s\\%s" % tuple(x["SeriesInstanceUID"]
                                                               for x in (E[0], E[5], E[7]))},
      lambda e: e is E[0] or e is E[5] or e is E[7], ["NumberOfSeriesRelatedInstances"])
    q("S", "SERIES", {"SeriesNumber": "2", "StudyDate": "20200101-20201231"},
      lambda e: e["SeriesNumber"] == "2" and attr(e, "StudyDate") < "2021", ["SeriesNumber"])
    # Study Root, IMAGE
    se = E[6]
    q("S", "IMAGE", {"StudyInstanceUID": uid(se["study"]),
                     "SeriesInstanceUID": se["SeriesInstanceUID"]},
      lambda e, se=se: e["series"] is se, ["SOPClassUID", "InstanceNumber"])
    picks = [arc.instances[i] for i in (0, 17, 39)]
    q("S", "IMAGE", {"SOPInstanceUID": "\\".join(i["SOPInstanceUID"] for i in picks)},
      lambda e: any(e is i for i in picks), ["SOPClassUID"])
    q("S", "IMAGE", {"InstanceNumber": "3"}, lambda e: e["InstanceNumber"] == "3",
      ["InstanceNumber", "SeriesInstanceUID"])
    q("S", "IMAGE", {"SOPClassUID": gen.SC_STORAGE, "StudyDate": "-20200131"},
      lambda e: e["SOPClassUID"] == gen.SC_STORAGE and attr(e, "StudyDate") <= "20200131",
      ["NumberOfStudyRelatedInstances"])
    return c


def test_find(p, arc):
    cases = query_cases(arc)
    # Identifiers and answers in each syntax pacsd accepts for C-FIND: a
    # patient, a patient root study and a study root study query.
    some = [c for c in cases if c[2].get("PatientID") == arc.patients[1]["PatientID"]][:1] + \
        [c for c in cases if c[2].get("StudyDate") == "20200101-20201231"][:1] + \
        [c for c in cases if c[2].get("StudyDate") == "20200601-20211231"][:1]
    for opt in ("-xi", "-xb", "-xd"):
        for model, level, keys, pred in some:
            run_find_case(p, arc, model, level, keys, pred, (opt,))
    for model, level, keys, pred in cases:
        run_find_case(p, arc, model, level, keys, pred)


def run_find_case(p, arc, model, level, keys, pred, extra=()):
    shown = {k: v for k, v in keys.items() if v is not None and k != "QueryRetrieveLevel"}
    what = "C-FIND %s%s %s %s" % (" ".join(extra) + " " if extra else "",
                                 {"P": "patient root", "S": "study root"}[model], level,
                                 " ".join("%s=%s" % kv for kv in shown.items()) or "*")
    st, ans, text = findscu(p, model, keys, extra)
    expected = [e for e in entities(arc, level) if pred(e)]
    C.eq(st[-1:], [ST_SUCCESS], what + ": final status")
    C.ok(all(s == ST_PENDING for s in st[:-1]), what + ": pending for each answer")
    ukey = UNIQUE[level]
    got = sorted(answer_value(a, ukey) or "" for a in ans)
    if not C.eq(got, sorted(e[ukey] for e in expected), what + ": matches"):
        return
    by = {e[ukey]: e for e in expected}
    for a in ans:
        e = by[str(a.get(ukey))]
        C.eq(str(a.get("QueryRetrieveLevel", "")), level, what + ": QueryRetrieveLevel")
        C.ok("SpecificCharacterSet" not in a, what + ": an all-ASCII answer has no "
             "SpecificCharacterSet", a.get("SpecificCharacterSet"))
        for kw, v in keys.items():
            if kw in ("QueryRetrieveLevel", ukey):
                continue
            want = attr(e, kw)
            C.eq(answer_value(a, kw), want if kw in SETS | COUNTS else str(want),
                 "%s: %s of %s" % (what, kw, e[ukey]))


def test_find_errors(p):
    """Bad identifiers: failure statuses, and pacsd carries on."""
    for model, keys, why in (
            ("S", {"PatientName": "DOE^JOHN"}, "no QueryRetrieveLevel"),
            ("S", {"QueryRetrieveLevel": "PATIENT", "PatientID": None},
             "PATIENT level in the Study Root model"),
            ("S", {"QueryRetrieveLevel": "STUDY", "Modality": None},
             "a SERIES key in a STUDY query"),
            ("P", {"QueryRetrieveLevel": "WARD", "PatientID": None}, "an unknown level"),
            ("S", {"QueryRetrieveLevel": "STUDY", "StudyDate": "2020-2021-2022"},
             "a malformed date range")):
        st, ans, text = findscu(p, model, keys)
        C.eq(st, [ST_IDENT_MISMATCH], "C-FIND with %s: status 0xA900 and no answers" % why)
        C.eq(len(ans), 0, "C-FIND with %s: no answers written" % why)
        C.ok("Find response with error status" in text or "Failed" in text or "Error" in text,
             "C-FIND with %s: findscu reports the failure" % why)
    check_serving(p, "after bad C-FIND identifiers")


# ---------------------------------------------------------------------------
# 6. C-MOVE and 7. C-GET

def received(files):
    out = {}
    for f in files:
        uid, ds = sent_uid(f)
        out[uid] = (ds, read_ds(f, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    return out


def check_received(got, insts, what):
    C.eq(sorted(got), sorted(i["SOPInstanceUID"] for i in insts), what + ": instances received")
    for i in insts:
        if i["SOPInstanceUID"] in got:
            ds, ts = got[i["SOPInstanceUID"]]
            want = dc.dataset_bytes(i["path"])[1]
            C.ok(ds == want, "%s: %s byte-identical" % (what, os.path.basename(i["path"])),
                 first_difference(ds, want) if ds != want else "")
            C.eq(str(ts), i["syntax"], "%s: %s sent in its stored syntax" % (
                what, os.path.basename(i["path"])))


def check_converted(files, insts, what):
    """Instances pacsd converted to another native syntax on the way out:
    each one arrives once, in a native syntax, with the same elements and
    values as its original (pydicom's reading; an Implicit VR original's
    Pixel Data has the dictionary's 'OB or OW')."""
    got = {}
    for f in files:
        ds = read_ds(f)
        got[str(ds.SOPInstanceUID)] = ds
    C.eq(sorted(got), sorted(i["SOPInstanceUID"] for i in insts), what + ": instances received")
    for i in insts:
        ds = got.get(i["SOPInstanceUID"])
        if ds is None:
            continue
        name = os.path.basename(i["path"])
        C.ok(str(ds.file_meta.TransferSyntaxUID) in dict(gen.SYNTAXES).values(),
             "%s: %s in a native syntax" % (what, name), ds.file_meta.TransferSyntaxUID)
        diffs = [d for d in dc.compare_trees(dc.py_tree(ds), dc.py_tree(read_ds(i["path"])))
                 if not (d.kind == "vr" and d.tag == 0x7FE00010)]
        C.eq([str(d) for d in diffs], [], "%s: %s has the original's elements and values" % (
            what, name))


def counts(msg):
    return tuple(msg.get(k) for k in ("Completed Suboperations", "Failed Suboperations",
                                      "Warning Suboperations"))


def move_keys(level, model, insts):
    i0 = insts[0]
    keys = {"QueryRetrieveLevel": level}
    if model == "P":
        keys["PatientID"] = attr(i0, "PatientID")
    keys["StudyInstanceUID"] = attr(i0, "StudyInstanceUID")
    if level in ("SERIES", "IMAGE"):
        keys["SeriesInstanceUID"] = "\\".join(sorted({i["SeriesInstanceUID"] for i in insts}))
    if level == "IMAGE":
        keys["SOPInstanceUID"] = "\\".join(i["SOPInstanceUID"] for i in insts)
    return keys


def test_move(p, arc, scp, plain):
    S, E = arc.studies, arc.series
    study_insts = lambda s: [i for i in arc.instances if i["series"]["study"] is s]  # noqa
    series_insts = lambda se: [i for i in arc.instances if i["series"] is se]  # noqa
    cases = [
        ("S", "STUDY", study_insts(S[1])),
        ("P", "STUDY", study_insts(S[0])),
        ("S", "SERIES", series_insts(E[4])),
        ("P", "SERIES", series_insts(E[7])),
        ("S", "IMAGE", [arc.instances[30], arc.instances[33]]),
        ("P", "IMAGE", [arc.instances[2]]),
    ]
    for model, level, insts in cases:
        what = "C-MOVE %s %s (%d, %s)" % ({"P": "patient root", "S": "study root"}[model], level,
                                         len(insts), insts[0]["syntax"])
        for f in scp.files():
            os.unlink(f)
        msgs, text = movescu(p, model, move_keys(level, model, insts), scp.aet)
        C.eq(final_status(msgs), ST_SUCCESS, what + ": final status")
        if msgs:
            C.eq(counts(msgs[-1]), (len(insts), 0, 0), what + ": completed/failed/warning")
        pend = [m for m in msgs[:-1] if m["DIMSE Status"] == ST_PENDING]
        C.eq(len(pend), len(insts) - 1, what + ": a pending response per sub-operation but "
             "the last")
        check_received(received(scp.files()), insts, what)

    keys = move_keys("STUDY", "S", study_insts(S[2]))
    msgs, text = movescu(p, "S", keys, "NOWHERE")
    C.eq(final_status(msgs), ST_DEST_UNKNOWN, "C-MOVE to an unknown AE: status 0xA801")
    for f in scp.files():
        os.unlink(f)
    msgs, text = movescu(p, "S", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "*"},
                         scp.aet)
    C.eq(final_status(msgs), ST_IDENT_MISMATCH, "C-MOVE with StudyInstanceUID=*: status 0xA900")
    msgs, text = movescu(p, "S", {"StudyInstanceUID": attr(S[2], "StudyInstanceUID")}, scp.aet)
    C.eq(final_status(msgs), ST_IDENT_MISMATCH, "C-MOVE without QueryRetrieveLevel: status 0xA900")
    C.eq(scp.files(), [], "C-MOVE with bad identifiers: nothing sent")

    n = len(study_insts(S[2]))
    msgs, text = movescu(p, "S", keys, "DOWN")
    st = final_status(msgs)
    C.ok(st is not None and st >> 12 in (0xA, 0xC), "C-MOVE to a destination that is down: "
         "failure status", "0x%04X" % st if st is not None else text[-400:])
    if msgs:
        C.eq(counts(msgs[-1]), (0, n, 0), "C-MOVE to a destination that is down: sub-operation "
             "counts (completed, failed, warning) in the final response (PS3.4 C.4.2.1.7)")
    check_serving(p, "after C-MOVE to a destination that is down")

    # A peer that accepts only the uncompressed syntaxes (no Deflated),
    # asked for a Deflated study: pacsd converts (a lossless re-encoding).
    for f in plain.files():
        os.unlink(f)
    insts = study_insts(S[3])
    msgs, text = movescu(p, "S", move_keys("STUDY", "S", insts), plain.aet)
    C.ok("Odd Fragment Length" not in text and "Move Request Failed" not in text,
         "C-MOVE of a Deflated study to a storescp without Deflated: movescu reads the final "
         "response", "\n".join(l for l in text.splitlines() if l.startswith("E:"))[:400])
    st = final_status(msgs)
    C.ok(st is not None and st != ST_PENDING, "C-MOVE of a Deflated study to a storescp "
         "without Deflated: final status received", "0x%04X" % st if st is not None else None)
    C.eq(st, ST_SUCCESS, "C-MOVE of a Deflated study to a storescp without Deflated: "
         "final status")
    if msgs and st != ST_PENDING:
        C.eq(counts(msgs[-1]), (len(insts), 0, 0), "C-MOVE of a Deflated study to a storescp "
             "without Deflated: completed/failed/warning")
    check_converted(plain.files(), insts, "C-MOVE of a Deflated study to a storescp without "
                    "Deflated")
    check_serving(p, "after C-MOVE to a peer without the stored syntax")


def test_get(p, arc, label="C-GET", defaults=True):
    S, E = arc.studies, arc.series
    study_insts = lambda s: [i for i in arc.instances if i["series"]["study"] is s]  # noqa
    series_insts = lambda se: [i for i in arc.instances if i["series"] is se]  # noqa
    cases = [  # (model, level, instances, getscu options)
        ("S", "STUDY", study_insts(S[1]), ()),
        ("P", "SERIES", series_insts(E[4]), ("+xb",)),
        ("S", "STUDY", study_insts(S[3]), ("+xd",)),
        ("P", "STUDY", study_insts(S[1]), ()),
        ("S", "SERIES", series_insts(E[3]), ()),
    ]
    for model, level, insts, opts in cases:
        what = "%s %s %s (%d, %s%s)" % (label, {"P": "patient root", "S": "study root"}[model],
                                        level, len(insts), insts[0]["syntax"],
                                        ", getscu " + " ".join(opts) if opts else "")
        out = mkdir("get")
        msgs, text = getscu(p, model, move_keys(level, model, insts), out, opts)
        C.eq(final_status(msgs), ST_SUCCESS, what + ": final status")
        if msgs:
            C.eq(counts(msgs[-1]), (len(insts), 0, 0), what + ": completed/failed/warning")
        check_received(received(glob.glob(os.path.join(out, "*"))), insts, what)
    # getscu's default proposes Explicit LE, Explicit BE and Implicit LE in
    # one context per SOP class: an Implicit VR study (what most modalities
    # send) must still come back.
    if not defaults:
        return
    insts = study_insts(S[0])
    out = mkdir("get")
    msgs, text = getscu(p, "S", move_keys("STUDY", "S", insts), out)
    what = "%s study root STUDY of an Implicit VR LE study, getscu defaults" % label
    C.eq(final_status(msgs), ST_SUCCESS, what + ": final status")
    if msgs:
        C.eq(counts(msgs[-1]), (len(insts), 0, 0), what + ": completed/failed/warning")
    check_converted(glob.glob(os.path.join(out, "*")), insts, what)
    check_serving(p, "after C-GET")


# ---------------------------------------------------------------------------
# 8. duplicates

def test_duplicates(arc):
    first = arc.by_syntax("explicit")[0]
    uid = first["SOPInstanceUID"]
    ds = read_ds(first["path"])
    ds.PatientName = "DOE^JOHN^SECOND"
    ds.ImageComments = "the second copy"
    ds.PixelData = bytes(len(ds.PixelData))
    second = os.path.join(mkdir("dup"), "second.dcm")
    ds.save_as(second, write_like_original=True)
    want = {"a": dc.dataset_bytes(first["path"])[1], "b": dc.dataset_bytes(second)[1]}
    C.ok(want["a"] != want["b"], "duplicates: the two copies differ")
    for policy, status2, kept in (("keep", ST_SUCCESS, "a"), ("reject", ST_DUPLICATE, "a"),
                                  ("replace", ST_SUCCESS, "b")):
        p = h.Pacsd(config={"dicom": {"duplicates": policy}})
        idx = Index(p)
        r1, st1 = storescu(p, [first["path"]], ("-xe",))
        r2, st2 = storescu(p, [second], ("-xe",))
        what = "duplicates=%s" % policy
        C.eq(st1.get(uid), ST_SUCCESS, what + ": first store succeeds")
        C.eq(st2.get(uid), status2, what + ": second store status")
        if policy == "reject":
            C.ok("0x0111" in r2.stdout + r2.stderr, what + ": storescu shows 0x0111",
                 (r2.stdout + r2.stderr)[-300:])
        idx.check(uid, want[kept], dc.EXPLICIT_LE, what + " (%s copy kept)" %
                  ("first" if kept == "a" else "second"))
        C.eq(idx.rows("SELECT COUNT(*) FROM instances")[0][0], 1, what + ": one instance row")
        C.eq(len(idx.blob_files()), 1, what + ": one blob file (no leftover)")
        st, ans, _ = findscu(p, "S", {"QueryRetrieveLevel": "IMAGE", "SOPInstanceUID": uid,
                                      "PatientName": None})
        C.eq([str(a.get("PatientName")) for a in ans],
             ["DOE^JOHN" if kept == "a" else "DOE^JOHN^SECOND"],
             what + ": C-FIND sees the kept copy")
        sanitizer_clean(p, what)
        p.cleanup()


# ---------------------------------------------------------------------------
# 9. SIGTERM and restart

def test_restart(p, arc):
    idx = Index(p)
    rc = p.stop(signal.SIGTERM)
    C.eq(rc, 0, "SIGTERM: pacsd exits with status 0")
    sanitizer_clean(p, "generated archive before restart")
    p.restart()
    check_serving(p, "after restart")
    st, ans, _ = findscu(p, "S", {"QueryRetrieveLevel": "IMAGE", "SOPInstanceUID": None,
                                  "StudyInstanceUID": None})
    C.eq(sorted(str(a.SOPInstanceUID) for a in ans),
         sorted(i["SOPInstanceUID"] for i in arc.instances),
         "restart: C-FIND finds every instance")
    for i in arc.instances:
        idx.check(i["SOPInstanceUID"], dc.dataset_bytes(i["path"])[1], i["syntax"],
                  "restart %s" % os.path.basename(i["path"]))
    st, ans, _ = findscu(p, "P", {"QueryRetrieveLevel": "PATIENT", "PatientID": None,
                                  "NumberOfPatientRelatedInstances": None})
    C.eq(sorted((str(a.PatientID), int(a.NumberOfPatientRelatedInstances)) for a in ans),
         sorted((e["PatientID"], e["NumberOfPatientRelatedInstances"]) for e in arc.patients),
         "restart: patients and their instance counts")
    test_get(p, arc, "C-GET after restart", defaults=False)


# ---------------------------------------------------------------------------

def main():
    t0 = time.time()
    if not shutil.which("storescu"):
        raise SystemExit("DCMTK tools are not installed")
    arc = gen.generate(mkdir("gen"), h.PACSD)
    log("generated in %.1fs" % (time.time() - t0))

    sections = []

    def timed(name, fn, *a):
        """Runs a section; an exception is one failed check, and the rest
        of the sections still run."""
        t = time.time()
        try:
            fn(*a)
        except Exception:
            C.ok(False, "section %s raised" % name, traceback.format_exc())
        sections.append("%s %.1fs" % (name, time.time() - t))

    def corpus_server():
        bulk_scp = h.StoreSCP(aet="BULKSCP", extra=("+B", "+xa"))
        a = h.Pacsd(aet="PACSD", modalities={
            "BULKSCP": {"host": "127.0.0.1", "port": bulk_scp.port}})
        C.eq(sorted(r[0] for r in Index(a).rows(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN "
            "('patients', 'studies', 'series', 'instances')")),
            ["instances", "patients", "series", "studies"], "index: the four level tables exist")
        cols = {r[1] for r in Index(a).rows("PRAGMA table_info(instances)")}
        C.ok({"sop_instance_uid", "blob_key", "ds_offset", "size", "sha256",
              "transfer_syntax"} <= cols, "index: instances has the columns this test reads",
             sorted(cols))
        timed("corpus", test_corpus, a)
        timed("corpus move", test_corpus_move, a, bulk_scp)
        timed("charsets", test_charsets, a)
        study, _, paths = gen.bulk(mkdir("bulk"), BULK)
        timed("sigterm while storing", test_sigterm_while_storing, a, paths)
        timed("cancel", test_cancel, a, bulk_scp, study)
        sanitizer_clean(a, "corpus server")
        a.cleanup()
        bulk_scp.cleanup()

    def generated_server():
        scp = h.StoreSCP(aet="STORESCP", extra=("+B", "+xa"))
        plain = h.StoreSCP(aet="PLAINSCP", extra=("+B",))
        b = h.Pacsd(aet="PACSD", modalities={
            "STORESCP": {"host": "127.0.0.1", "port": scp.port},
            "plain-peer": {"aet": "PLAINSCP", "host": "127.0.0.1", "port": plain.port},
            "DOWN": {"host": "127.0.0.1", "port": h.free_port()},
        })
        timed("store", test_store_generated, b, arc)
        timed("find", test_find, b, arc)
        timed("find errors", test_find_errors, b)
        timed("move", test_move, b, arc, scp, plain)
        timed("get", test_get, b, arc)
        timed("restart", test_restart, b, arc)
        sanitizer_clean(b, "generated archive")
        b.cleanup()
        scp.cleanup()
        plain.cleanup()

    timed("association", test_association)
    timed("corpus server", corpus_server)  # corpus, character sets, SIGTERM, C-CANCEL
    timed("generated server", generated_server)  # store, find, move, get, restart
    timed("duplicates", test_duplicates, arc)
    print("sections: " + ", ".join(sections) + "; total %.1fs" % (time.time() - t0), flush=True)
    C.finish()


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
