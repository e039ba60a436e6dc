#!/usr/bin/python3
"""dicomweb-client (npm, the DICOMweb client of OHIF and Slim; xhr2 as its
XMLHttpRequest in Node) against pacsd's DICOMweb routes.

usage: test_dicomweb_client.py [--server pacsd|orthanc]

The server (default pacsd; `orthanc` runs the same checks against Orthanc
1.10 with its DICOMweb plugin, to validate the test itself) is started
empty and given data over DIMSE with DCMTK storescu, so that the searches
and retrievals do not depend on STOW-RS:

  study 1 (patient DWC-1), series A: three native CT instances (CT_small);
           series B: a 2-frame RGB instance in RLE Lossless, the same one
           decompressed (native, 2 frames), a JPEG Baseline instance;
  study 2 (patient DWC-2): one native MR instance (MR_small).

Every file is a pydicom test file with new UIDs. tests/integration/
dicomweb_client/run.js then calls searchForStudies / searchForSeries /
searchForInstances (with queryParams), retrieveInstanceMetadata,
retrieveInstanceFrames (native and encapsulated), retrieveInstance and
storeInstances (then searchForInstances and retrieveInstance of what it
stored), and this script checks each answer against the files: UIDs and
counts, frame bytes (native: the frame's slice of Pixel Data; encapsulated:
the frame's fragments), instance bytes (equal to the stored file).

The npm packages (exact versions in dicomweb_client/package-lock.json) are
installed with `npm ci` into dicomweb_client/node_modules when missing or
installed from another lock file.
"""
import argparse
import hashlib
import io
import json
import os
import sqlite3
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

import pydicom  # noqa: E402
from pydicom.encaps import generate_pixel_data_frame  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT_DIR = os.path.join(HERE, "dicomweb_client")
STAMP = os.path.join(CLIENT_DIR, "node_modules", ".pacsd-lock-sha256")
RLE = "1.2.840.10008.1.2.5"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def npm_ci():
    """Installs the pinned packages unless node_modules came from this very
    package-lock.json (its digest is kept in a stamp file)."""
    with open(os.path.join(CLIENT_DIR, "package-lock.json"), "rb") as f:
        want = sha256(f.read())
    try:
        with open(STAMP) as f:
            if f.read().strip() == want:
                return
    except OSError:
        pass
    r = harness.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                    timeout=600, cwd=CLIENT_DIR)
    if r.returncode != 0:
        raise RuntimeError("npm ci failed (%d): %s%s" % (r.returncode, r.stdout, r.stderr))
    with open(STAMP, "w") as f:
        f.write(want + "\n")


class Inst:
    """One instance written for the test: path, UIDs, bytes, frames."""

    def __init__(self, path, ds):
        self.path = path
        self.study = ds.StudyInstanceUID
        self.series = ds.SeriesInstanceUID
        self.sop = ds.SOPInstanceUID
        self.ts = str(ds.file_meta.TransferSyntaxUID)
        with open(path, "rb") as f:
            self.bytes = f.read()
        self.pixels = ds.PixelData
        self.nframes = int(getattr(ds, "NumberOfFrames", 1) or 1)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            self.frames = list(generate_pixel_data_frame(ds.PixelData, self.nframes))
        else:
            size = len(ds.PixelData) // self.nframes
            self.frames = [ds.PixelData[i * size:(i + 1) * size] for i in range(self.nframes)]


def make_data(out):
    """Writes the test instances; returns (dict name -> Inst, UIDs)."""
    files = harness.PYDICOM_FILES
    st1, st2, st3 = generate_uid(), generate_uid(), generate_uid()
    se_a, se_b, se_c, se_d = generate_uid(), generate_uid(), generate_uid(), generate_uid()
    made = {}

    def write(name, src, patient, study, series, number, decompress=False):
        ds = pydicom.dcmread(os.path.join(files, src))
        if decompress:
            ds.decompress()
        ds.PatientID = patient
        ds.PatientName = "DWC^%s" % patient
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = number
        ds.SeriesNumber = {se_a: 1, se_b: 2, se_c: 1, se_d: 1}[series]
        ds.StudyID = "DWC"
        ds.AccessionNumber = "ACC-" + patient
        path = os.path.join(out, name + ".dcm")
        ds.save_as(path, write_like_original=False)
        made[name] = Inst(path, pydicom.dcmread(path))

    for i in range(3):
        write("ct%d" % (i + 1), "CT_small.dcm", "DWC-1", st1, se_a, i + 1)
    write("rle", "SC_rgb_rle_2frame.dcm", "DWC-1", st1, se_b, 1)
    write("native2", "SC_rgb_rle_2frame.dcm", "DWC-1", st1, se_b, 2, decompress=True)
    write("jpeg", "SC_rgb_jpeg_dcmtk.dcm", "DWC-1", st1, se_b, 3)
    write("mr", "MR_small.dcm", "DWC-2", st2, se_c, 1)
    write("stow", "MR_small.dcm", "DWC-3", st3, se_d, 1)  # sent by storeInstances only
    return made


def vals(obj, tag):
    """The Value list of one attribute of a DICOM JSON object ([] if none)."""
    return (obj or {}).get(tag, {}).get("Value", [])


def uids(result, tag):
    return sorted(str(v) for o in (result or []) for v in vals(o, tag))


def run_client(url, ops, tmp):
    plan = os.path.join(tmp, "plan.json")
    with open(plan, "w") as f:
        json.dump({"url": url, "ops": ops}, f)
    r = harness.run(["node", os.path.join(CLIENT_DIR, "run.js"), plan], timeout=300)
    if r.returncode != 0:
        raise RuntimeError("run.js failed (%d): %s" % (r.returncode, r.stderr[-2000:]))
    return json.loads(r.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", choices=("pacsd", "orthanc"),
                    default=os.environ.get("DICOMWEB_SERVER", "pacsd"))
    a = ap.parse_args()
    c = harness.Checks()
    npm_ci()
    tmp = tempfile.mkdtemp(prefix="dwc-")
    d = make_data(tmp)
    if a.server == "pacsd":
        srv = harness.Pacsd()
        url = "http://127.0.0.1:%d/dicom-web" % srv.http_port
    else:
        srv = harness.Orthanc(dicomweb=True)
        url = srv.dicomweb_url()
    try:
        # storescu proposes uncompressed syntaxes only unless told; one run
        # per stored transfer syntax, so that each file goes as it is.
        for opts, names in (((), ("ct1", "ct2", "ct3", "native2", "mr")),
                            (("-xr",), ("rle",)), (("-xy",), ("jpeg",))):
            r = harness.run(["storescu", *opts, "-aec", srv.aet, "127.0.0.1", str(srv.port),
                             *[d[k].path for k in names]])
            if not c.eq(r.returncode, 0, "storescu %s of %s to %s" % (" ".join(opts), names,
                                                                    a.server)):
                print(r.stdout + r.stderr)
        ct1, rle, nat, jpg, mr, stow = (d[k] for k in
                                         ("ct1", "rle", "native2", "jpeg", "mr", "stow"))
        ops = [
            {"id": "studies_pid", "method": "searchForStudies",
             "options": {"queryParams": {"PatientID": "DWC-1"}}},
            {"id": "studies_wild", "method": "searchForStudies",
             "options": {"queryParams": {"PatientID": "DWC-*"}}},
            {"id": "studies_none", "method": "searchForStudies",
             "options": {"queryParams": {"PatientID": "NOBODY"}}},
            {"id": "series", "method": "searchForSeries",
             "options": {"studyInstanceUID": ct1.study}},
            {"id": "series_ct", "method": "searchForSeries",
             "options": {"studyInstanceUID": ct1.study, "queryParams": {"Modality": "CT"}}},
            {"id": "inst_series", "method": "searchForInstances",
             "options": {"studyInstanceUID": ct1.study, "seriesInstanceUID": ct1.series}},
            {"id": "inst_limit", "method": "searchForInstances",
             "options": {"studyInstanceUID": ct1.study, "seriesInstanceUID": ct1.series,
                         "queryParams": {"limit": "2"}}},
            {"id": "inst_study", "method": "searchForInstances",
             "options": {"studyInstanceUID": ct1.study}},
            {"id": "inst_pid", "method": "searchForInstances",
             "options": {"queryParams": {"PatientID": "DWC-2"}}},
            {"id": "meta", "method": "retrieveInstanceMetadata",
             "options": {"studyInstanceUID": ct1.study, "seriesInstanceUID": ct1.series,
                         "sopInstanceUID": ct1.sop}},
            {"id": "frames_ct", "method": "retrieveInstanceFrames",
             "options": {"studyInstanceUID": ct1.study, "seriesInstanceUID": ct1.series,
                         "sopInstanceUID": ct1.sop, "frameNumbers": [1]}},
            {"id": "frames_native2", "method": "retrieveInstanceFrames",
             "options": {"studyInstanceUID": nat.study, "seriesInstanceUID": nat.series,
                         "sopInstanceUID": nat.sop, "frameNumbers": [2, 1]}},
            # dicomweb-client names RLE image/x-dicom-rle (the name before
            # PS3.18 registered image/dicom-rle) and can ask for no other.
            {"id": "frames_rle", "method": "retrieveInstanceFrames",
             "options": {"studyInstanceUID": rle.study, "seriesInstanceUID": rle.series,
                         "sopInstanceUID": rle.sop, "frameNumbers": [2],
                         "mediaTypes": [{"mediaType": "image/x-dicom-rle",
                                         "transferSyntaxUID": RLE}]}},
            # What OHIF asks for: any syntax, as octet-stream.
            {"id": "frames_rle_any", "method": "retrieveInstanceFrames",
             "options": {"studyInstanceUID": rle.study, "seriesInstanceUID": rle.series,
                         "sopInstanceUID": rle.sop, "frameNumbers": [1, 2],
                         "mediaTypes": [{"mediaType": "application/octet-stream",
                                         "transferSyntaxUID": "*"}]}},
            {"id": "frames_jpeg", "method": "retrieveInstanceFrames",
             "options": {"studyInstanceUID": jpg.study, "seriesInstanceUID": jpg.series,
                         "sopInstanceUID": jpg.sop, "frameNumbers": [1],
                         "mediaTypes": [{"mediaType": "image/jpeg",
                                         "transferSyntaxUID": JPEG_BASELINE}]}},
            {"id": "instance_ct", "method": "retrieveInstance",
             "options": {"studyInstanceUID": ct1.study, "seriesInstanceUID": ct1.series,
                         "sopInstanceUID": ct1.sop}},
            # Not retrieveInstance of the JPEG instance: dicomweb-client
            # 0.11.3 throws on any mediaTypes given to retrieveInstance
            # ("Media type application/ is not supported"), and without them
            # it asks for application/dicom with no transfer-syntax, which
            # PS3.18 reads as Explicit VR Little Endian (a transcoding).
            {"id": "store", "method": "storeInstances", "options": {"files": [stow.path]}},
            {"id": "after_store", "method": "searchForInstances",
             "options": {"queryParams": {"SOPInstanceUID": stow.sop}}},
            {"id": "after_store_studies", "method": "searchForStudies",
             "options": {"queryParams": {"PatientID": "DWC-*"}}},
            {"id": "instance_stored", "method": "retrieveInstance",
             "options": {"studyInstanceUID": stow.study, "seriesInstanceUID": stow.series,
                         "sopInstanceUID": stow.sop}},
        ]
        res = run_client(url, ops, tmp)
        stored = {k: stored_file(a.server, srv, d[k].sop) for k in ("ct1", "jpeg", "stow")}
        check(c, res, d, stored)
        c.ok(srv.alive(), "%s still running after the client" % a.server)
    finally:
        srv.cleanup()
        subprocess.run(["rm", "-rf", tmp])
    print("server: %s (%s)" % (a.server, url))
    c.finish()


def stored_file(kind, srv, sop):
    """The bytes the server holds for one instance (over DIMSE the receiver
    writes its own File Meta Information, so these are the reference for
    retrieveInstance, not the file storescu read), or None."""
    if kind == "pacsd":
        db = sqlite3.connect("file:%s?mode=ro" % os.path.join(srv.data_dir, "index.db"),
                             uri=True)
        try:
            row = db.execute("SELECT blob_key FROM instances WHERE sop_instance_uid = ?",
                             (sop,)).fetchone()
        finally:
            db.close()
        if not row:
            return None
        with open(os.path.join(srv.data_dir, "files", row[0][:2], row[0]), "rb") as f:
            return f.read()
    found = srv.rest("POST", "/tools/lookup", sop.encode())
    ids = [x["ID"] for x in found if x.get("Type") == "Instance"]
    return srv.rest("GET", "/instances/%s/file" % ids[0]) if ids else None


def check(c, res, d, stored):
    ct1, rle, nat, jpg, mr, stow = (d[k] for k in ("ct1", "rle", "native2", "jpeg", "mr", "stow"))
    st_uid, pid, ser_uid, sop_uid, nframes = "0020000D", "00100020", "0020000E", "00080018", \
        "00280008"

    def get(op):
        r = res.get(op, {"ok": False, "error": "not run"})
        if not c.ok(r.get("ok"), "%s answered" % op, "%s (HTTP %s)" % (r.get("error"),
                                                                     r.get("status"))):
            return None
        return r["result"]

    r = get("studies_pid")
    if r is not None:
        c.eq(uids(r, st_uid), [ct1.study], "searchForStudies PatientID=DWC-1: study UIDs")
        c.eq(uids(r, pid), ["DWC-1"], "searchForStudies PatientID=DWC-1: PatientID")
        c.eq([vals(o, "00201208") for o in r], [[6]],
             "searchForStudies: NumberOfStudyRelatedInstances of study 1")
        c.eq([vals(o, "00201206") for o in r], [[2]],
             "searchForStudies: NumberOfStudyRelatedSeries of study 1")
    r = get("studies_wild")
    if r is not None:
        c.eq(uids(r, st_uid), sorted([ct1.study, mr.study]),
             "searchForStudies PatientID=DWC-*: both studies")
    r = get("studies_none")
    if r is not None:
        c.eq(r, [], "searchForStudies PatientID=NOBODY: no match")
    r = get("series")
    if r is not None:
        c.eq(uids(r, ser_uid), sorted([ct1.series, rle.series]), "searchForSeries: both series")
    r = get("series_ct")
    if r is not None:
        c.eq(uids(r, ser_uid), [ct1.series], "searchForSeries Modality=CT")
        c.eq([vals(o, "00080060") for o in r], [["CT"]], "searchForSeries Modality=CT: Modality")
    r = get("inst_series")
    if r is not None:
        c.eq(uids(r, sop_uid), sorted(d["ct%d" % i].sop for i in (1, 2, 3)),
             "searchForInstances of series A")
    r = get("inst_limit")
    if r is not None:
        got = uids(r, sop_uid)
        c.ok(len(got) == 2 and set(got) <= {d["ct%d" % i].sop for i in (1, 2, 3)},
             "searchForInstances limit=2: two of series A", got)
    r = get("inst_study")
    if r is not None:
        c.eq(uids(r, sop_uid), sorted(d[k].sop for k in ("ct1", "ct2", "ct3", "rle", "native2",
                                                        "jpeg")),
             "searchForInstances of study 1")
        by_sop = {vals(o, sop_uid)[0]: o for o in r if vals(o, sop_uid)}
        c.eq(vals(by_sop.get(rle.sop), nframes), [2],
             "searchForInstances: NumberOfFrames of the 2-frame instance")
    r = get("inst_pid")
    if r is not None:
        c.eq(uids(r, sop_uid), [mr.sop], "searchForInstances PatientID=DWC-2 (all studies)")
        c.eq(uids(r, st_uid), [mr.study], "searchForInstances PatientID=DWC-2: StudyInstanceUID")

    r = get("meta")
    if r is not None:
        c.eq(len(r), 1, "retrieveInstanceMetadata: one object")
        m = r[0] if r else {}
        c.eq(vals(m, sop_uid), [ct1.sop], "metadata: SOPInstanceUID")
        c.eq(vals(m, st_uid), [ct1.study], "metadata: StudyInstanceUID")
        c.eq(vals(m, "00280010"), [128], "metadata: Rows")
        c.eq(vals(m, "00280100"), [16], "metadata: BitsAllocated")
        c.eq(vals(m, "00100010"), [{"Alphabetic": "DWC^DWC-1"}], "metadata: PatientName")
        px = m.get("7FE00010", {})
        c.ok(px.get("vr") in ("OW", "OB") and ("BulkDataURI" in px or "InlineBinary" in px),
             "metadata: Pixel Data as BulkDataURI or InlineBinary", px)

    def frames(op, want, what):
        r = get(op)
        if r is None:
            return
        c.eq([p["bytes"] for p in r], [len(f) for f in want], "%s: part sizes" % what)
        c.eq([p["sha256"] for p in r], [sha256(f) for f in want], "%s: frame bytes" % what)

    frames("frames_ct", [ct1.frames[0]], "retrieveInstanceFrames native CT frame 1")
    frames("frames_native2", [nat.frames[1], nat.frames[0]],
           "retrieveInstanceFrames native RGB frames 2,1")
    frames("frames_rle", [rle.frames[1]], "retrieveInstanceFrames RLE frame 2 (encapsulated)")
    frames("frames_jpeg", [jpg.frames[0]], "retrieveInstanceFrames JPEG frame 1 (encapsulated)")
    frames("frames_rle_any", rle.frames,
           "retrieveInstanceFrames RLE frames 1,2 as octet-stream, transfer-syntax=*")

    for key in ("ct1", "jpeg"):
        if c.ok(stored[key] is not None, "server holds %s" % key):
            c.eq(pydicom.dcmread(io.BytesIO(stored[key])).PixelData, d[key].pixels,
                 "%s as stored: Pixel Data as sent over DIMSE" % key)
    r = get("instance_ct")
    if r is not None and stored["ct1"] is not None:
        c.eq((r.get("bytes"), r.get("sha256")), (len(stored["ct1"]), sha256(stored["ct1"])),
             "retrieveInstance ct1: bytes equal the stored file")

    r = get("store")
    if r is not None:
        refs = vals(r, "00081199")
        c.eq([vals(x, "00081155") for x in refs], [[stow.sop]],
             "storeInstances: ReferencedSOPSequence names the stored instance")
        c.eq(vals(r, "00081198"), [], "storeInstances: no FailedSOPSequence")
    r = get("after_store")
    if r is not None:
        c.eq(uids(r, sop_uid), [stow.sop], "searchForInstances finds the stored instance")
        c.eq(uids(r, st_uid), [stow.study], "stored instance: StudyInstanceUID")
    r = get("after_store_studies")
    if r is not None:
        c.eq(uids(r, st_uid), sorted([ct1.study, mr.study, stow.study]),
             "searchForStudies PatientID=DWC-* after the store: three studies")
    r = get("instance_stored")
    if r is not None:
        c.eq((r.get("bytes"), r.get("sha256")), (len(stow.bytes), sha256(stow.bytes)),
             "retrieveInstance of the stored instance: bytes equal the sent file")
    c.eq(stored["stow"] and sha256(stored["stow"]), sha256(stow.bytes),
         "the server holds the STOW-RS file byte for byte (SHA-256)")


if __name__ == "__main__":
    main()
