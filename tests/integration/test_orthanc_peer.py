#!/usr/bin/python3
"""pacsd with Orthanc 1.10 (Debian) as its DICOM peer, both ways.

One pacsd (AE PACSD) and one Orthanc (AE ORTHANC) on loopback, each knowing
the other (pacsd's dicom.modalities, Orthanc's DicomModalities set through
PUT /modalities/PACSD once pacsd's port is known), plus DCMTK storescp in
bit-preserving mode (+B) as a wire oracle: it writes each data set exactly as
it came off the network.

1. Orthanc -> pacsd C-STORE: pydicom's CT_small, MR_small, JPEG2000 (JPEG
   2000), SC_rgb_jpeg_dcmtk (JPEG baseline, UTF-8), three charset files
   (Latin-1, Cyrillic, ISO 2022 Japanese), a generated 4-instance series, a
   generated series in Implicit VR LE, Explicit VR BE and Deflated, and a
   generated 1.2 MB instance are uploaded to Orthanc (REST POST /instances)
   and sent to pacsd by an Orthanc store job. Every
   instance is in pacsd's index (data_dir/index.db) with its transfer syntax,
   calling AE and a Part 10 file whose meta group names it, and the stored
   data set is byte-identical to what Orthanc put on the wire (the same job
   sent to storescp +B). It is also byte-identical to Orthanc's own copy
   (GET /instances/{id}/file), except where Orthanc's DCMTK sender re-encodes
   (DCMTK_REENCODES: dropped trailing padding, explicit sequence lengths);
   those data sets must still be element-for-element equal (pydicom).
   Deflated data sets are compared inflated wherever two writers meet.
2. Orthanc -> pacsd C-FIND (REST /modalities/PACSD/query): study, series,
   instance and patient levels, computed keys (ModalitiesInStudy,
   NumberOf...RelatedInstances), Orthanc's study -> series drill-down,
   person-name wildcards (one sent in Latin-1, Japanese and Cyrillic ones in
   UTF-8, Orthanc's /tools/default-encoding switched for each), date
   ranges, a UID list; the answers are compared with the files (pydicom).
3. pacsd -> Orthanc C-MOVE: the instances are deleted from Orthanc, then
   retrieved back by C-MOVE driven by Orthanc (a query answer's /retrieve,
   and /modalities/PACSD/move at study, series and instance level; patient
   level, which Orthanc sends on the Study Root model, may be refused);
   Orthanc holds every instance again, its data sets byte-identical to
   pacsd's stored ones. C-MOVE to storescp +B shows pacsd sends the stored
   data set bytes unchanged; C-MOVE to an unknown AE fails.
4. pacsd's SCU tools (pacsd echo|store|find|move|get, docs/cli.md) against
   Orthanc (which knows PACSD, so -aet PACSD may query and retrieve) and
   against pacsd itself (calling AE CLI): echo; store (the peer then holds
   the files, byte-identical); find, dump output and --json answers; move
   (Orthanc -> pacsd of a series pacsd did not have; pacsd -> storescp +B);
   get into --out DIR, uncompressed and compressed instances, each as
   stored. A tool `pacsd help` does not list is reported as SKIP (counted
   neither passed nor failed).
5. C-ECHO from Orthanc; an association to the wrong called AE is refused.

Env: PACSD (binary), PACSD_SOURCE. Options: -v prints notes. Ends with
"N passed, N failed"; exits 1 on any failure.
"""
import json
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import time
import urllib.error
import warnings

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dcmcompare as dc  # noqa: E402
import harness as h  # noqa: E402

import pydicom  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

VERBOSE = "-v" in sys.argv[1:]
START = time.time()
CHECKS = h.Checks()
CHARSETS = os.path.join(os.path.dirname(h.PYDICOM_FILES), "charset_files")

CORPUS = [
    os.path.join(h.PYDICOM_FILES, "CT_small.dcm"),
    os.path.join(h.PYDICOM_FILES, "MR_small.dcm"),
    os.path.join(h.PYDICOM_FILES, "JPEG2000.dcm"),
    os.path.join(h.PYDICOM_FILES, "SC_rgb_jpeg_dcmtk.dcm"),
    os.path.join(CHARSETS, "chrGerm.dcm"),
    os.path.join(CHARSETS, "chrRuss.dcm"),
    os.path.join(CHARSETS, "chrH31.dcm"),
]

# Files whose data set Orthanc (DCMTK) does not send as it holds it: a DIMSE
# sender from DCMTK writes explicit lengths for sequences and items and
# leaves out Data Set Trailing Padding (FFFC,FFFC) (dcmnet's defaults, also
# storescu's). What pacsd stores is checked byte for byte against the wire
# (storescp +B); against Orthanc's copy these must be equal element by
# element, ignoring the padding.
DCMTK_REENCODES = {
    "CT_small.dcm": "ends in Data Set Trailing Padding (FFFC,FFFC), not sent",
    "MR_small.dcm": "ends in Data Set Trailing Padding (FFFC,FFFC), not sent",
    "JPEG2000.dcm": "undefined-length sequences (0008,2112), (0008,9215), sent with "
                    "explicit lengths",
}

TRAILING_PADDING = 0xFFFCFFFC


def note(msg):
    if VERBOSE:
        print("note: " + msg, flush=True)


def skip(msg):
    print("SKIP: " + msg, flush=True)


def dcmread(path_or_bytes, **kw):
    import io
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, (bytes, bytearray)) \
        else path_or_bytes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(src, force=True, **kw)


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def ds_of(data):
    """Data set bytes (after the meta group) of a Part 10 file's bytes, or
    the bytes themselves when there is no meta group."""
    return dc.split_part10(data)[1]


def inflate(ds, ts):
    """Data set bytes with Deflated Explicit VR Little Endian undone."""
    import zlib
    return zlib.decompress(ds, -15) if ts == dc.DEFLATED_LE else ds


def plain_ds(data):
    """Data set bytes of a Part 10 file's bytes, inflated if Deflated: what
    two writers of the same data set agree on (deflate output may differ)."""
    ts, ds = dc.split_part10(data)
    return inflate(ds, ts)


def strip_padding(ds):
    """pydicom data set without Data Set Trailing Padding."""
    if TRAILING_PADDING in ds:
        del ds[TRAILING_PADDING]
    return ds


def same_elements(a_bytes, b_bytes):
    """Differences (list of str) between two Part 10 files' data sets,
    element by element, Data Set Trailing Padding ignored."""
    ta = dc.py_tree(strip_padding(dcmread(a_bytes)))
    tb = dc.py_tree(strip_padding(dcmread(b_bytes)))
    return [str(d) for d in dc.compare_trees(ta, tb)]


def first_diff(a, b):
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return "lengths %d, %d; first difference at byte %d" % (len(a), len(b), i)
    return "lengths %d, %d; one is a prefix of the other" % (len(a), len(b))


def rest_error(o, method, path, body=None):
    """HTTP status of a REST call expected to fail (None if it succeeded)."""
    try:
        o.rest(method, path, body)
        return None
    except urllib.error.HTTPError as e:
        return e.code


# ---------------------------------------------------------------------------
# Test data.

def make_series(outdir, tag, n, patient_name, patient_id, study_date, modality="CT",
                series_number=7, syntaxes=(), size=8):
    """n uncompressed instances (size x size pixels) of one new study and
    series written by pydicom: explicit lengths, no group lengths, in
    Explicit VR Little Endian or the transfer syntax syntaxes[i - 1];
    returns their paths."""
    study, series = generate_uid(), generate_uid()
    frame = generate_uid()
    paths = []
    for i in range(1, n + 1):
        ts = syntaxes[i - 1] if i <= len(syntaxes) else ExplicitVRLittleEndian
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ts
        ds = Dataset()
        ds.file_meta = meta
        ds.is_little_endian = ts != dc.EXPLICIT_BE
        ds.is_implicit_VR = ts == dc.IMPLICIT_LE
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyDate = study_date
        ds.SeriesDate = study_date
        ds.StudyTime = "101500"
        ds.AccessionNumber = "ACC-" + tag
        ds.Modality = modality
        ds.Manufacturer = "pacsd tests"
        ds.ReferringPhysicianName = "Ref^Doctor"
        ds.StudyDescription = "generated " + tag
        ds.SeriesDescription = "series " + tag
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.StudyID = tag
        ds.SeriesNumber = series_number
        ds.InstanceNumber = i
        ds.FrameOfReferenceUID = frame
        ds.ImagePositionPatient = [0, 0, float(i)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = size
        ds.Columns = size
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PixelData = bytes((i * 7 + k) & 0xFF for k in range(size * size * 2))
        ds["PixelData"].VR = "OW"
        p = os.path.join(outdir, "%s_%d.dcm" % (tag, i))
        ds.save_as(p, write_like_original=False)
        paths.append(p)
    return paths


class Inst:
    """One test instance: its source file and what pydicom reads there."""

    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(path)
        self.data = read_bytes(path)
        ds = dcmread(path, stop_before_pixels=True)
        self.sop = str(ds.SOPInstanceUID)
        self.sop_class = str(ds.SOPClassUID)
        self.study = str(ds.StudyInstanceUID)
        self.series = str(ds.SeriesInstanceUID)
        self.ts = str(ds.file_meta.TransferSyntaxUID)
        self.ds = ds
        self.orthanc_id = None


def pn_text(v):
    """A PN as Orthanc's JSON shows it: the three groups joined by '=',
    empty trailing groups dropped."""
    if v is None:
        return ""
    groups = [v.alphabetic or "", v.ideographic or "", v.phonetic or ""]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def attr(ds, keyword):
    v = ds.get(keyword)
    if v is None or v == "":
        return ""
    if keyword.endswith("Name") and hasattr(v, "alphabetic"):
        return pn_text(v)
    if isinstance(v, pydicom.multival.MultiValue):
        return "\\".join(str(x) for x in v)
    return str(v)


# ---------------------------------------------------------------------------
# pacsd's side.

class PacsdView:
    """Reads pacsd's SQLite index and stored files."""

    def __init__(self, p):
        self.p = p

    def db(self):
        con = sqlite3.connect("file:%s?mode=ro" % os.path.join(self.p.data_dir, "index.db"),
                              uri=True, timeout=10)
        return con

    def rows(self):
        """{sop: (transfer_syntax, blob_key, size, ds_offset, remote_aet)}."""
        with self.db() as con:
            return {r[0]: r[1:] for r in con.execute(
                "SELECT sop_instance_uid, transfer_syntax, blob_key, size, ds_offset,"
                " remote_aet FROM instances")}

    def count(self):
        with self.db() as con:
            return con.execute("SELECT count(*) FROM instances").fetchone()[0]

    def file(self, sop):
        row = self.rows().get(sop)
        if row is None:
            return None
        key = row[1]
        return read_bytes(os.path.join(self.p.data_dir, "files", key[0:2], key))

    def dataset(self, sop):
        """Stored data set bytes (from ds_offset), or None."""
        row = self.rows().get(sop)
        data = self.file(sop)
        if data is None:
            return None
        return data[row[3]:]


# ---------------------------------------------------------------------------
# Orthanc's side.

def orthanc_ids(o):
    return set(o.rest("GET", "/instances"))


def orthanc_file(o, oid):
    return o.rest("GET", "/instances/%s/file" % oid)


def query(o, level, keys, modality="PACSD"):
    """Orthanc C-FIND SCU; returns (query id, [simplified answers]), or
    (None, []) after recording a failure when Orthanc reports an error
    (pacsd answered with a failure status)."""
    try:
        q = o.rest("POST", "/modalities/%s/query" % modality, {"Level": level, "Query": keys})
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", "replace")[:300]
        CHECKS.ok(False, "2: Orthanc C-FIND %s %s failed (HTTP %d)" % (level, keys, e.code),
                  detail)
        return None, []
    answers = o.rest("GET", "/queries/%s/answers?expand&simplify" % q["ID"])
    return q["ID"], answers


def wire_datasets(scp):
    """{sop: data set bytes} of what storescp +B received."""
    out = {}
    for f in scp.files():
        data = read_bytes(f)
        ds = dcmread(data, stop_before_pixels=True)
        out[str(ds.SOPInstanceUID)] = ds_of(data)
    return out


def wait_for(pred, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


# ---------------------------------------------------------------------------
# 1. Orthanc sends to pacsd.

def part1_store(o, pv, wire, insts):
    for it in insts:
        it.orthanc_id = o.rest("POST", "/instances", it.data)["ID"]
    CHECKS.eq(len(orthanc_ids(o)), len(insts), "1: Orthanc holds every uploaded file")

    ids = [it.orthanc_id for it in insts]
    job = o.rest("POST", "/modalities/PACSD/store", {"Resources": ids, "Synchronous": True})
    CHECKS.eq((job.get("InstancesCount"), job.get("FailedInstancesCount")), (len(insts), 0),
              "1: Orthanc store job to PACSD: instances sent, failed")
    job = o.rest("POST", "/modalities/WIRE/store", {"Resources": ids, "Synchronous": True})
    CHECKS.eq(job.get("FailedInstancesCount"), 0, "1: Orthanc store job to storescp +B")
    wait_for(lambda: len(wire.files()) >= len(insts))
    on_wire = wire_datasets(wire)

    rows = pv.rows()
    CHECKS.eq(sorted(s for s in rows), sorted(it.sop for it in insts),
              "1: pacsd's index holds exactly the instances Orthanc sent")
    reencoded = []
    for it in insts:
        row = rows.get(it.sop)
        if row is None:
            continue
        ts, _, size, off, remote = row
        CHECKS.eq(ts, it.ts, "1: %s: stored transfer syntax" % it.name)
        CHECKS.eq(remote, "ORTHANC", "1: %s: remote_aet" % it.name)
        stored_file = pv.file(it.sop)
        CHECKS.eq(len(stored_file), size, "1: %s: index size = file size" % it.name)
        meta = dcmread(stored_file, stop_before_pixels=True).file_meta
        CHECKS.eq((str(meta.get("MediaStorageSOPInstanceUID")), str(meta.get("TransferSyntaxUID")),
                   str(meta.get("SourceApplicationEntityTitle", "")).strip()),
                  (it.sop, it.ts, "ORTHANC"),
                  "1: %s: stored meta group (SOP instance, transfer syntax, source AE)" % it.name)
        stored = pv.dataset(it.sop)
        CHECKS.eq(stored, ds_of(stored_file), "1: %s: ds_offset points at the data set" % it.name)
        sent = on_wire.get(it.sop)
        if CHECKS.ok(sent is not None, "1: %s: storescp +B received it" % it.name):
            CHECKS.ok(stored == sent, "1: %s: stored data set byte-identical to what Orthanc "
                      "sent" % it.name, first_diff(stored, sent) if stored != sent else "")
        held = plain_ds(orthanc_file(o, it.orthanc_id))
        stored = inflate(stored, ts)
        if it.name in DCMTK_REENCODES:
            reencoded.append(it.name)
            CHECKS.ok(stored != held, "1: %s: listed in DCMTK_REENCODES but Orthanc sent its "
                      "copy unchanged; remove it from the list" % it.name)
            diffs = same_elements(stored_file, orthanc_file(o, it.orthanc_id))
            CHECKS.ok(not diffs, "1: %s: stored data set equals Orthanc's copy element by "
                      "element" % it.name, "; ".join(diffs[:5]))
        else:
            CHECKS.ok(stored == held, "1: %s: stored data set byte-identical to Orthanc's "
                      "copy" % it.name, first_diff(stored, held) if stored != held else "")
    note("re-encoded by Orthanc's sender (checked element-wise against Orthanc's copy): %s"
         % ", ".join(reencoded))


# ---------------------------------------------------------------------------
# 2. Orthanc queries pacsd.

def part2_find(o, insts, gen):
    studies = {}
    for it in insts:
        studies.setdefault(it.study, []).append(it)

    # Study level, UTF-8 so that every name survives Orthanc's conversion.
    o.rest("PUT", "/tools/default-encoding", b"Utf8")
    _, ans = query(o, "Study", {"PatientName": "*", "StudyDate": "", "PatientID": "",
                                "AccessionNumber": "", "StudyDescription": "",
                                "ModalitiesInStudy": "", "NumberOfStudyRelatedSeries": "",
                                "NumberOfStudyRelatedInstances": ""})
    got = {a.get("StudyInstanceUID"): a for a in ans}
    CHECKS.eq(len(ans), len(studies), "2: study level: one answer per study")
    CHECKS.eq(sorted(got), sorted(studies), "2: study level: the stored study UIDs")
    for uid, its in studies.items():
        a = got.get(uid)
        if a is None:
            continue
        ds = its[0].ds
        want = {"PatientName": attr(ds, "PatientName"), "StudyDate": attr(ds, "StudyDate"),
                "PatientID": attr(ds, "PatientID"),
                "AccessionNumber": attr(ds, "AccessionNumber"),
                "StudyDescription": attr(ds, "StudyDescription"),
                "ModalitiesInStudy": "\\".join(sorted({attr(i.ds, "Modality") for i in its})),
                "NumberOfStudyRelatedSeries": str(len({i.series for i in its})),
                "NumberOfStudyRelatedInstances": str(len(its)),
                "QueryRetrieveLevel": "STUDY"}
        have = {k: a.get(k) for k in want}
        CHECKS.eq(have, want, "2: study level answer for %s" % its[0].name)

    # Series level (Orthanc needs the study UID), with computed count.
    g = gen[0]
    _, ans = query(o, "Series", {"StudyInstanceUID": g.study, "SeriesInstanceUID": "",
                                 "Modality": "", "SeriesNumber": "", "SeriesDescription": "",
                                 "NumberOfSeriesRelatedInstances": ""})
    CHECKS.eq([(a.get("SeriesInstanceUID"), a.get("Modality"), a.get("SeriesNumber"),
                a.get("SeriesDescription"), a.get("NumberOfSeriesRelatedInstances"),
                a.get("StudyInstanceUID"), a.get("QueryRetrieveLevel")) for a in ans],
              [(g.series, "CT", "7", attr(g.ds, "SeriesDescription"), str(len(gen)), g.study,
                "SERIES")], "2: series level answers of the generated study")

    # Orthanc's drill-down (its Explorer's path): a study answer's series.
    qid, ans = query(o, "Study", {"StudyInstanceUID": g.study})
    if qid and CHECKS.eq(len(ans), 1, "2: query for the generated study"):
        sub = o.rest("POST", "/queries/%s/answers/0/query-series" % qid, {})
        ans = o.rest("GET", "/queries/%s/answers?expand&simplify" % sub["ID"])
        CHECKS.eq([a.get("SeriesInstanceUID") for a in ans], [g.series],
                  "2: /answers/0/query-series lists the study's series")

    # Instance level (study and series UIDs given).
    _, ans = query(o, "Instance", {"StudyInstanceUID": g.study, "SeriesInstanceUID": g.series,
                                   "SOPInstanceUID": "", "InstanceNumber": "",
                                   "SOPClassUID": ""})
    CHECKS.eq(sorted((a.get("SOPInstanceUID"), a.get("InstanceNumber"), a.get("SOPClassUID"))
                     for a in ans),
              sorted((i.sop, attr(i.ds, "InstanceNumber"), i.sop_class) for i in gen),
              "2: instance level answers of the generated series")
    _, ans = query(o, "Instance", {"StudyInstanceUID": g.study, "SeriesInstanceUID": g.series,
                                   "SOPInstanceUID": "", "InstanceNumber": "3"})
    CHECKS.eq([a.get("SOPInstanceUID") for a in ans],
              [i.sop for i in gen if attr(i.ds, "InstanceNumber") == "3"],
              "2: instance level, InstanceNumber=3")

    # Patient level (Patient Root).
    _, ans = query(o, "Patient", {"PatientID": "GEN*", "PatientName": "",
                                  "PatientBirthDate": "", "NumberOfPatientRelatedStudies": ""})
    CHECKS.eq([(a.get("PatientID"), a.get("PatientName"), a.get("PatientBirthDate"),
                a.get("NumberOfPatientRelatedStudies")) for a in ans],
              [(attr(g.ds, "PatientID"), attr(g.ds, "PatientName"), "19700101", "1")],
              "2: patient level, PatientID=GEN*")

    # Person-name wildcards: ASCII, a Latin-1 query (Orthanc's default
    # encoding), a Japanese one in UTF-8.
    def pn_query(pattern, encoding, expect_names, what):
        o.rest("PUT", "/tools/default-encoding", encoding.encode())
        _, ans = query(o, "Study", {"PatientName": pattern, "StudyInstanceUID": ""})
        want = sorted({i.study for i in insts if i.name in expect_names})
        CHECKS.eq(sorted(a.get("StudyInstanceUID") for a in ans), want,
                  "2: PatientName=%s (%s) %s" % (pattern, encoding, what))
        return ans
    pn_query("CompressedSamples^*", "Utf8", {"CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm"},
             "matches the three CompressedSamples studies")
    pn_query("*^?T1", "Utf8", {"CT_small.dcm"}, "('?' one character)")
    ans = pn_query("Äneas*", "Latin1", {"chrGerm.dcm"}, "Latin-1 query")
    CHECKS.eq([a.get("PatientName") for a in ans], ["Äneas^Rüdiger"],
              "2: Latin-1 query: name decoded by Orthanc from pacsd's answer")
    ans = pn_query("*山田*", "Utf8", {"chrH31.dcm"}, "Japanese ideographic group")
    CHECKS.eq([a.get("PatientName") for a in ans], ["Yamada^Tarou=山田^太郎=やまだ^たろう"],
              "2: ISO 2022 name answered whole")
    pn_query("Люк*", "Utf8", {"chrRuss.dcm"}, "Cyrillic")
    pn_query("Nobody*", "Utf8", set(), "matches nothing")

    # Date ranges, computed and indexed keys with values, UID list.
    def study_query(keys, pred, what):
        keys = dict(keys, StudyInstanceUID="")
        _, ans = query(o, "Study", keys)
        want = sorted({i.study for i in insts if pred(i)})
        CHECKS.eq(sorted(a.get("StudyInstanceUID") for a in ans), want, "2: study query " + what)
    study_query({"StudyDate": "20040101-20041231"},
                lambda i: "20040101" <= attr(i.ds, "StudyDate") <= "20041231",
                "StudyDate=20040101-20041231")
    study_query({"StudyDate": "20240103-"}, lambda i: attr(i.ds, "StudyDate") >= "20240103",
                "StudyDate=20240103- (open range)")
    study_query({"StudyDate": "-20040120"},
                lambda i: "" < attr(i.ds, "StudyDate") <= "20040120",
                "StudyDate=-20040120 (open range)")
    study_query({"ModalitiesInStudy": "MR"}, lambda i: attr(i.ds, "Modality") == "MR",
                "ModalitiesInStudy=MR")
    study_query({"ReferringPhysicianName": "Ref*"},
                lambda i: attr(i.ds, "ReferringPhysicianName").startswith("Ref"),
                "ReferringPhysicianName=Ref*")
    study_query({"AccessionNumber": "ACC-TSX"},
                lambda i: attr(i.ds, "AccessionNumber") == "ACC-TSX", "AccessionNumber=ACC-TSX")
    two = sorted(studies)[:2]
    _, ans = query(o, "Study", {"StudyInstanceUID": "\\".join(two)})
    CHECKS.eq(sorted(a.get("StudyInstanceUID") for a in ans), two, "2: StudyInstanceUID list")


# ---------------------------------------------------------------------------
# 3. Orthanc retrieves from pacsd by C-MOVE.

def part3_move(o, pv, insts, gen, move_scp):
    for it in insts:
        o.rest("DELETE", "/instances/%s" % it.orthanc_id)
    CHECKS.eq(len(orthanc_ids(o)), 0, "3: Orthanc empty after DELETE")

    def have():
        return orthanc_ids(o)

    # (a) a query answer's /retrieve (CT study).
    ct = next(i for i in insts if i.name == "CT_small.dcm")
    qid, ans = query(o, "Study", {"StudyInstanceUID": ct.study})
    if CHECKS.eq(len(ans), 1, "3: query for the CT study"):
        r = o.rest("POST", "/queries/%s/answers/0/retrieve" % qid,
                   {"TargetAet": "ORTHANC", "Synchronous": True})
        note("retrieve answer: %s" % r)
        CHECKS.ok(ct.orthanc_id in have(), "3: CT study back in Orthanc after /retrieve")

    # (b) series level: two of the generated series' instances' series.
    g = gen[0]
    o.rest("POST", "/modalities/PACSD/move", {
        "Level": "Series", "Resources": [{"StudyInstanceUID": g.study,
                                          "SeriesInstanceUID": g.series}],
        "TargetAet": "ORTHANC", "Synchronous": True})
    CHECKS.eq(sorted(i.orthanc_id for i in gen if i.orthanc_id in have()),
              sorted(i.orthanc_id for i in gen), "3: series-level C-MOVE: the whole series")

    # (c) instance level: one instance.
    mr = next(i for i in insts if i.name == "MR_small.dcm")
    o.rest("POST", "/modalities/PACSD/move", {
        "Level": "Instance", "Resources": [{"StudyInstanceUID": mr.study,
                                            "SeriesInstanceUID": mr.series,
                                            "SOPInstanceUID": mr.sop}],
        "TargetAet": "ORTHANC", "Synchronous": True})
    CHECKS.ok(mr.orthanc_id in have(), "3: instance-level C-MOVE")

    # (c2) patient level. Orthanc 1.10 sends it on the Study Root MOVE SOP
    # class, which has no PATIENT level: pacsd may refuse it (0xA900, as
    # docs/query.md says) or serve it as Patient Root; either is fine, but a
    # refusal must leave the patient's instances where they were.
    ge = next(i for i in insts if i.name == "chrGerm.dcm")
    code = rest_error(o, "POST", "/modalities/PACSD/move", {
        "Level": "Patient", "Resources": [{"PatientID": attr(ge.ds, "PatientID")}],
        "TargetAet": "ORTHANC", "Synchronous": True})
    if code is None:
        CHECKS.ok(ge.orthanc_id in have(), "3: patient-level C-MOVE (served as Patient Root)")
    else:
        CHECKS.ok(ge.orthanc_id not in have(), "3: patient-level C-MOVE refused, nothing sent")
        note("patient-level C-MOVE from Orthanc (PATIENT on Study Root) refused: HTTP %s" % code)

    # (d) study level, several studies in one job.
    rest = sorted({i.study for i in insts if i.orthanc_id not in have()})
    o.rest("POST", "/modalities/PACSD/move", {
        "Level": "Study", "Resources": [{"StudyInstanceUID": s} for s in rest],
        "TargetAet": "ORTHANC", "Synchronous": True})
    now = have()
    CHECKS.eq(sorted(now), sorted(i.orthanc_id for i in insts),
              "3: Orthanc holds every instance again after the moves")

    for it in insts:
        if it.orthanc_id not in now:
            continue
        got = orthanc_file(o, it.orthanc_id)
        stored = inflate(pv.dataset(it.sop), it.ts)
        CHECKS.ok(plain_ds(got) == stored, "3: %s: Orthanc's received data set byte-identical "
                  "to pacsd's stored one" % it.name,
                  first_diff(plain_ds(got), stored) if plain_ds(got) != stored else "")
        if it.name not in DCMTK_REENCODES:
            CHECKS.ok(plain_ds(got) == plain_ds(it.data), "3: %s: byte-identical to the "
                      "original file's data set" % it.name)
        else:
            diffs = same_elements(got, it.data)
            CHECKS.ok(not diffs, "3: %s: equal to the original element by element" % it.name,
                      "; ".join(diffs[:5]))
        meta = dcmread(got, stop_before_pixels=True).file_meta
        CHECKS.eq(str(meta.TransferSyntaxUID), it.ts, "3: %s: transfer syntax kept" % it.name)

    # (e) C-MOVE to storescp +B: pacsd sends its stored bytes unchanged.
    o.rest("POST", "/modalities/PACSD/move", {
        "Level": "Study", "Resources": [{"StudyInstanceUID": s}
                                        for s in sorted({i.study for i in insts})],
        "TargetAet": "MOVESCP", "Synchronous": True})
    wait_for(lambda: len(move_scp.files()) >= len(insts))
    sent = wire_datasets(move_scp)
    CHECKS.eq(sorted(sent), sorted(i.sop for i in insts), "3: C-MOVE to storescp: every instance")
    for it in insts:
        if it.sop in sent:
            CHECKS.ok(sent[it.sop] == pv.dataset(it.sop), "3: %s: pacsd sent its stored data "
                      "set bytes unchanged" % it.name)

    # (f) unknown destination: pacsd refuses (0xA801), Orthanc's job fails.
    code = rest_error(o, "POST", "/modalities/PACSD/move", {
        "Level": "Study", "Resources": [{"StudyInstanceUID": ct.study}],
        "TargetAet": "NOSUCHAE", "Synchronous": True})
    CHECKS.ok(code is not None and code >= 400, "3: C-MOVE to an unknown AE fails",
              "HTTP %s" % code)


# ---------------------------------------------------------------------------
# 4. pacsd's own SCU tools.

TOOLS = ("echo", "store", "find", "move", "get")


def listed_tools():
    r = h.run([h.PACSD, "help"], timeout=30)
    out = r.stdout
    return {t for t in TOOLS if re.search(r"^\s+%s(\s|$)" % t, out, re.M)}


def pacsd_tool(*args, timeout=120):
    r = h.run([h.PACSD, *args], timeout=timeout)
    if VERBOSE:
        print("$ pacsd %s -> %d\n%s%s" % (" ".join(args), r.returncode, r.stdout[-2000:],
                                         r.stderr[-2000:]), flush=True)
    return r


def brief(r):
    return "exit %d; stdout %r; stderr %r" % (r.returncode, r.stdout[-400:], r.stderr[-400:])


def files_under(d):
    out = []
    for root, _, names in os.walk(d):
        out += [os.path.join(root, n) for n in names]
    return sorted(out)


def datasets_in(d):
    """{sop: data set bytes} of every DICOM file under d."""
    res = {}
    for f in files_under(d):
        data = read_bytes(f)
        try:
            ds = dcmread(data, stop_before_pixels=True)
            res[str(ds.SOPInstanceUID)] = ds_of(data)
        except Exception:
            continue
    return res


def json_answers(r):
    """The answers of `pacsd find --json` (a DICOM JSON array), [] after
    recording a failure if the output is not that."""
    try:
        v = json.loads(r.stdout)
        if isinstance(v, list):
            return v
    except ValueError:
        pass
    CHECKS.ok(False, "4: pacsd find --json prints a JSON array", brief(r))
    return []


def jval(obj, tag):
    """First value of a DICOM JSON attribute: PN as its Alphabetic[=Ideographic
    [=Phonetic]] text, None when absent or empty."""
    m = obj.get(tag) or {}
    vals = m.get("Value") or []
    if not vals:
        return None
    v = vals[0]
    if isinstance(v, dict):
        groups = [v.get(k) or "" for k in ("Alphabetic", "Ideographic", "Phonetic")]
        while groups and not groups[-1]:
            groups.pop()
        return "=".join(groups)
    return v


def get_check(o, pv, tmp, aet, aec, host, port, level, what, subjects, extra):
    """pacsd get of the subjects' studies (level STUDY) or instances (IMAGE)
    into a new directory: exit 0, exactly those instances written, each
    data set identical to pacsd's stored one (and to Orthanc's copy when o
    is given; Orthanc's copies are those it received back from pacsd)."""
    peer = "Orthanc" if o else "pacsd"
    out = tempfile.mkdtemp(prefix="get-", dir=tmp)
    if level == "STUDY":
        idents = [["-k", "StudyInstanceUID=" + s] for s in sorted({i.study for i in subjects})]
    else:
        idents = [["-k", "StudyInstanceUID=" + i.study, "-k", "SeriesInstanceUID=" + i.series,
                   "-k", "SOPInstanceUID=" + i.sop] for i in subjects]
    for keys in idents:
        r = pacsd_tool("get", "-aet", aet, "-aec", aec, "-L", level, *keys, "--out", out,
                       *extra, host, port)
        CHECKS.eq(r.returncode, 0, "4: pacsd get from %s (%s): %s" % (peer, what, brief(r)))
    got = datasets_in(out)
    CHECKS.eq(sorted(got), sorted(i.sop for i in subjects),
              "4: pacsd get from %s (%s): the instances written to --out" % (peer, what))
    for it in subjects:
        if it.sop not in got:
            continue
        f = os.path.join(out, it.sop + ".dcm")
        CHECKS.ok(os.path.exists(f), "4: pacsd get: file named <SOPInstanceUID>.dcm", f)
        if os.path.exists(f):
            meta = dcmread(f, stop_before_pixels=True).file_meta
            CHECKS.eq(str(meta.get("TransferSyntaxUID")), it.ts,
                      "4: pacsd get from %s (%s): %s in its stored transfer syntax"
                      % (peer, what, it.name))
        stored = pv.dataset(it.sop)
        CHECKS.ok(got[it.sop] == stored, "4: pacsd get from %s (%s): %s identical to pacsd's "
                  "stored data set" % (peer, what, it.name),
                  first_diff(got[it.sop], stored) if got[it.sop] != stored else "")
        if o is not None:
            held = ds_of(orthanc_file(o, it.orthanc_id))
            CHECKS.ok(got[it.sop] == held, "4: pacsd get from Orthanc (%s): %s identical to "
                      "Orthanc's copy" % (what, it.name))


def part4_tools(o, p, pv, tmp, insts, cli_orthanc, cli_pacsd, scp):
    tools = listed_tools()
    missing = [t for t in TOOLS if t not in tools]
    if missing:
        skip("pacsd %s: not listed by `pacsd help` yet (src/cli_net.c is being written); "
             "part 4 checks for %s not run" % ("|".join(missing), ", ".join(missing)))
    if not tools:
        return
    oh, op = "127.0.0.1", str(o.port)
    ph, pp = "127.0.0.1", str(p.port)
    # The CLIO series reaches Orthanc only through pacsd store.
    in_orthanc = insts + (cli_orthanc if "store" in tools else [])

    # --- against Orthanc ---------------------------------------------------
    if "echo" in tools:
        r = pacsd_tool("echo", "-aet", "PACSD", "-aec", "ORTHANC", oh, op)
        CHECKS.eq(r.returncode, 0, "4: pacsd echo to Orthanc: " + brief(r))
        r = pacsd_tool("echo", "-aet", "PACSD", "-aec", "ORTHANC", oh, str(h.free_port()))
        CHECKS.eq(r.returncode, 2, "4: pacsd echo to a closed port exits 2: " + brief(r))

    if "store" in tools:
        before = orthanc_ids(o)
        r = pacsd_tool("store", "-aet", "PACSD", "-aec", "ORTHANC", oh, op,
                       *[i.path for i in cli_orthanc])
        CHECKS.eq(r.returncode, 0, "4: pacsd store to Orthanc: " + brief(r))
        ids = {}
        for it in cli_orthanc:
            found = o.rest("POST", "/tools/lookup", it.sop.encode())
            ids[it.sop] = found[0]["ID"] if found else None
        CHECKS.ok(all(ids.values()), "4: Orthanc has every file pacsd store sent",
                  [i.name for i in cli_orthanc if not ids[i.sop]])
        CHECKS.eq(len(orthanc_ids(o) - before), len(cli_orthanc),
                  "4: pacsd store: Orthanc gained exactly those instances")
        for it in cli_orthanc:
            if ids[it.sop]:
                got = ds_of(orthanc_file(o, ids[it.sop]))
                CHECKS.ok(got == ds_of(it.data), "4: pacsd store: %s byte-identical in "
                          "Orthanc" % it.name)

    if "find" in tools:
        # Orthanc holds the moved-back corpus and the CLI series stored above.
        every = sorted({i.study for i in in_orthanc})
        r = pacsd_tool("find", "-aet", "PACSD", "-aec", "ORTHANC", "-L", "STUDY",
                       "-k", "PatientName=*", "-k", "StudyInstanceUID", "-k", "StudyDate",
                       oh, op)
        CHECKS.eq(r.returncode, 0, "4: pacsd find at Orthanc: " + brief(r))
        CHECKS.ok(all(u in r.stdout for u in every),
                  "4: pacsd find at Orthanc prints every study UID",
                  [u for u in every if u not in r.stdout])
        r = pacsd_tool("find", "-aet", "PACSD", "-aec", "ORTHANC", "-L", "STUDY", "--json",
                       "-k", "PatientName", "-k", "StudyInstanceUID", "-k", "StudyDate",
                       "-k", "PatientID", oh, op)
        answers = json_answers(r)
        CHECKS.eq(sorted(jval(a, "0020000D") for a in answers), every,
                  "4: pacsd find --json at Orthanc: one answer per study")
        by_study = {i.study: i for i in in_orthanc}
        for a in answers:
            it = by_study.get(jval(a, "0020000D"))
            if it is None:
                continue
            CHECKS.eq((jval(a, "00100010"), jval(a, "00080020"), jval(a, "00100020")),
                      (attr(it.ds, "PatientName") or None, attr(it.ds, "StudyDate") or None,
                       attr(it.ds, "PatientID") or None),
                      "4: pacsd find --json at Orthanc: PatientName, StudyDate, PatientID of "
                      "%s" % it.name)
        g = cli_orthanc[0]
        r = pacsd_tool("find", "-aet", "PACSD", "-aec", "ORTHANC", "-L", "STUDY", "--json",
                       "-k", "PatientID=" + attr(g.ds, "PatientID"), "-k", "StudyInstanceUID",
                       oh, op)
        CHECKS.eq([jval(a, "0020000D") for a in json_answers(r)], [g.study],
                  "4: pacsd find at Orthanc with PatientID: only that study")

    if "move" in tools and "store" in tools:
        g = cli_orthanc[0]
        CHECKS.ok(all(pv.rows().get(i.sop) is None for i in cli_orthanc),
                  "4: before pacsd move: pacsd does not have the CLI series")
        r = pacsd_tool("move", "-aet", "PACSD", "-aec", "ORTHANC", "--dest", "PACSD",
                       "-L", "STUDY", "-k", "StudyInstanceUID=" + g.study, oh, op)
        CHECKS.eq(r.returncode, 0, "4: pacsd move from Orthanc to PACSD: " + brief(r))
        rows = pv.rows()
        CHECKS.ok(all(rows.get(i.sop) for i in cli_orthanc),
                  "4: pacsd move: pacsd now has every instance of the study")
        for it in cli_orthanc:
            if rows.get(it.sop):
                CHECKS.ok(pv.dataset(it.sop) == ds_of(it.data),
                          "4: pacsd move: %s byte-identical in pacsd" % it.name)
        r = pacsd_tool("move", "-aet", "PACSD", "-aec", "ORTHANC", "--dest", "NOSUCHAE",
                       "-L", "STUDY", "-k", "StudyInstanceUID=" + g.study, oh, op)
        CHECKS.eq(r.returncode, 1, "4: pacsd move to a destination Orthanc does not know "
                  "exits 1: " + brief(r))

    if "get" in tools:
        # The default offer has one context per storage class, uncompressed
        # syntaxes first (the acceptor picks one per context), so compressed
        # instances are asked for with --ts (docs/cli.md): they then arrive
        # as stored, neither transcoded by Orthanc nor refused.
        by = {i.name: i for i in insts}
        for what, subjects, extra in (
                ("uncompressed", [by["CT_small.dcm"]] +
                 [i for i in insts if i.name.startswith("GEN_")], []),
                ("JPEG baseline, --ts", [by["SC_rgb_jpeg_dcmtk.dcm"]],
                 ["--ts", "1.2.840.10008.1.2.4.50"]),
                ("JPEG 2000, --ts", [by["JPEG2000.dcm"]], ["--ts", "1.2.840.10008.1.2.4.91"])):
            get_check(o, pv, tmp, "PACSD", "ORTHANC", oh, op, "STUDY", what, subjects, extra)

    # --- against pacsd itself ----------------------------------------------
    if "echo" in tools:
        r = pacsd_tool("echo", "-aet", "CLI", "-aec", "PACSD", ph, pp)
        CHECKS.eq(r.returncode, 0, "4: pacsd echo to pacsd: " + brief(r))
        r = pacsd_tool("echo", "-aet", "CLI", "-aec", "WRONG", ph, pp)
        CHECKS.ok(r.returncode != 0, "4: pacsd echo to pacsd with a wrong called AE fails",
                  brief(r))

    if "store" in tools:
        r = pacsd_tool("store", "-aet", "CLI", "-aec", "PACSD", ph, pp,
                       *[i.path for i in cli_pacsd])
        CHECKS.eq(r.returncode, 0, "4: pacsd store to pacsd: " + brief(r))
        rows = pv.rows()
        for it in cli_pacsd:
            ok = CHECKS.ok(rows.get(it.sop) is not None, "4: pacsd store to pacsd: %s indexed"
                           % it.name)
            if ok:
                CHECKS.ok(pv.dataset(it.sop) == ds_of(it.data),
                          "4: pacsd store to pacsd: %s byte-identical" % it.name)
                CHECKS.eq(rows[it.sop][4], "CLI", "4: pacsd store to pacsd: %s calling AE"
                          % it.name)

    if "find" in tools:
        held = insts + ([i for i in cli_pacsd] if "store" in tools else []) + \
            (cli_orthanc if {"move", "store"} <= tools else [])
        want = sorted({i.study for i in held})
        r = pacsd_tool("find", "-aet", "CLI", "-aec", "PACSD", "-L", "STUDY",
                       "-k", "StudyInstanceUID", "-k", "PatientName", ph, pp)
        CHECKS.eq(r.returncode, 0, "4: pacsd find at pacsd: " + brief(r))
        CHECKS.ok(all(u in r.stdout for u in want), "4: pacsd find at pacsd prints every "
                  "study UID", [u for u in want if u not in r.stdout])
        r = pacsd_tool("find", "-aet", "CLI", "-aec", "PACSD", "-L", "STUDY", "--json",
                       "-k", "StudyInstanceUID", "-k", "PatientName", ph, pp)
        answers = json_answers(r)
        CHECKS.eq(sorted(jval(a, "0020000D") for a in answers), want,
                  "4: pacsd find --json at pacsd: one answer per study")
        by_study = {i.study: i for i in held}
        CHECKS.eq(sorted(jval(a, "00100010") or "" for a in answers),
                  sorted(attr(by_study[s].ds, "PatientName") for s in want),
                  "4: pacsd find --json at pacsd: patient names (all character sets)")
        if "store" in tools:  # the CLIP series is in pacsd
            c = cli_pacsd[0]
            r = pacsd_tool("find", "-aet", "CLI", "-aec", "PACSD", "-L", "SERIES", "--json",
                           "-k", "StudyInstanceUID=" + c.study, "-k", "SeriesInstanceUID",
                           "-k", "NumberOfSeriesRelatedInstances", ph, pp)
            CHECKS.eq([(jval(a, "0020000E"), jval(a, "00201209")) for a in json_answers(r)],
                      [(c.series, len(cli_pacsd))], "4: pacsd find at pacsd, series level")
            r = pacsd_tool("find", "-aet", "CLI", "-aec", "PACSD", "-L", "IMAGE", "--json",
                           "-k", "StudyInstanceUID=" + c.study,
                           "-k", "SeriesInstanceUID=" + c.series,
                           "-k", "SOPInstanceUID", "-k", "InstanceNumber", ph, pp)
            CHECKS.eq(sorted((jval(a, "00080018"), jval(a, "00200013")) for a in json_answers(r)),
                      sorted((i.sop, int(attr(i.ds, "InstanceNumber"))) for i in cli_pacsd),
                      "4: pacsd find at pacsd, image level")

    if "move" in tools and "store" in tools:
        c = cli_pacsd[0]
        r = pacsd_tool("move", "-aet", "CLI", "-aec", "PACSD", "--dest", "MOVESCP2",
                       "-L", "SERIES", "-k", "StudyInstanceUID=" + c.study,
                       "-k", "SeriesInstanceUID=" + c.series, ph, pp)
        CHECKS.eq(r.returncode, 0, "4: pacsd move at pacsd to storescp: " + brief(r))
        wait_for(lambda: len(scp.files()) >= len(cli_pacsd))
        sent = wire_datasets(scp)
        CHECKS.eq(sorted(sent), sorted(i.sop for i in cli_pacsd),
                  "4: pacsd move at pacsd: storescp received the series")
        for it in cli_pacsd:
            if it.sop in sent:
                CHECKS.ok(sent[it.sop] == ds_of(it.data),
                          "4: pacsd move at pacsd: %s byte-identical" % it.name)

    if "get" in tools:
        by = {i.name: i for i in insts}
        for what, level, subjects, extra in (
                ("uncompressed instance", "IMAGE", [by["CT_small.dcm"]], []),
                ("study", "STUDY", cli_pacsd if "store" in tools else [], []),
                ("JPEG 2000 instance, --ts", "IMAGE", [by["JPEG2000.dcm"]],
                 ["--ts", "1.2.840.10008.1.2.4.91"])):
            get_check(None, pv, tmp, "CLI", "PACSD", ph, pp, level, what, subjects, extra)


# ---------------------------------------------------------------------------
# 5. C-ECHO.

def part5_echo(o):
    r = o.rest("POST", "/modalities/PACSD/echo", {})
    CHECKS.ok(r == {} or r == b"", "5: Orthanc C-ECHO to pacsd", r)
    code = rest_error(o, "POST", "/modalities/WRONGAET/echo", {})
    CHECKS.ok(code is not None and code >= 400,
              "5: Orthanc C-ECHO to pacsd with a wrong called AE is refused", "HTTP %s" % code)


# ---------------------------------------------------------------------------

def main():
    tmp = tempfile.mkdtemp(prefix="orthanc-peer-")
    procs = []
    try:
        gen_paths = make_series(tmp, "GEN", 4, "Generated^Series", "GEN001", "20240102")
        cli_o_paths = make_series(tmp, "CLIO", 3, "Cli^Orthanc", "CLIO01", "20240103", "MR", 3)
        cli_p_paths = make_series(tmp, "CLIP", 2, "Cli^Pacsd", "CLIP01", "20240104", "OT", 5)
        # other transfer syntaxes, and one instance of 1.2 MB (many PDUs)
        tsx_paths = make_series(tmp, "TSX", 3, "Syntax^Test", "TSX001", "20240105", "MR", 2,
                                syntaxes=[dc.IMPLICIT_LE, dc.EXPLICIT_BE, dc.DEFLATED_LE])
        big_paths = make_series(tmp, "BIG", 1, "Big^Image", "BIG001", "20240106", "CT", 1,
                                size=768)
        insts = [Inst(p) for p in CORPUS + gen_paths + tsx_paths + big_paths]
        gen = insts[len(CORPUS):len(CORPUS) + len(gen_paths)]
        cli_orthanc = [Inst(p) for p in cli_o_paths]
        cli_pacsd = [Inst(p) for p in cli_p_paths]

        wire = h.StoreSCP(aet="WIRE", extra=["+B", "+xa"])
        procs.append(wire)
        move_scp = h.StoreSCP(aet="MOVESCP", extra=["+B", "+xa"])
        procs.append(move_scp)
        move_scp2 = h.StoreSCP(aet="MOVESCP2", extra=["+B", "+xa"])
        procs.append(move_scp2)
        o = h.Orthanc(modalities={"WIRE": ["WIRE", "127.0.0.1", wire.port]})
        procs.append(o)
        p = h.Pacsd(modalities={
            "ORTHANC": {"host": "127.0.0.1", "port": o.port},
            "MOVESCP": {"host": "127.0.0.1", "port": move_scp.port},
            "MOVESCP2": {"host": "127.0.0.1", "port": move_scp2.port}})
        procs.append(p)
        o.rest("PUT", "/modalities/PACSD", {"AET": "PACSD", "Host": "127.0.0.1",
                                             "Port": p.port})
        o.rest("PUT", "/modalities/WRONGAET", {"AET": "NOTPACSD", "Host": "127.0.0.1",
                                                "Port": p.port})
        pv = PacsdView(p)
        note("started in %.1f s" % (time.time() - START))

        steps = [("5 echo", lambda: part5_echo(o)),
                 ("1 store", lambda: part1_store(o, pv, wire, insts)),
                 ("2 find", lambda: part2_find(o, insts, gen)),
                 ("3 move", lambda: part3_move(o, pv, insts, gen, move_scp)),
                 ("4 tools", lambda: part4_tools(o, p, pv, tmp, insts, cli_orthanc, cli_pacsd,
                                                 move_scp2))]
        for name, fn in steps:
            t = time.time()
            try:
                fn()
            except Exception as e:  # a crash in one part fails it, the rest still run
                import traceback
                traceback.print_exc()
                CHECKS.ok(False, "part %s raised %s: %s" % (name, type(e).__name__, e))
            note("part %s: %.1f s" % (name, time.time() - t))

        CHECKS.ok(p.alive(), "pacsd still running at the end")
        status = p.stop()
        CHECKS.eq(status, 0, "pacsd exits 0 on SIGTERM")
        out = p.output()
        asan = [ln for ln in out.splitlines() if "Sanitizer" in ln or "runtime error" in ln]
        CHECKS.ok(not asan, "no sanitizer reports in pacsd's log", "; ".join(asan[:3]))
        if CHECKS.failed:
            print("--- pacsd log (tail) ---\n" + "\n".join(out.splitlines()[-40:]), flush=True)
    finally:
        for pr in reversed(procs):
            try:
                pr.cleanup()
            except Exception:
                pass
        shutil.rmtree(tmp, ignore_errors=True)
    note("total %.1f s" % (time.time() - START))
    CHECKS.finish()


if __name__ == "__main__":
    main()
