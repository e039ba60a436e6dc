#!/usr/bin/python3
"""Orthanc 1.10 with its DICOMweb plugin (Debian orthanc-dicomweb 1.7) as a
DICOMweb *client* of pacsd: Orthanc sends a study to pacsd by STOW-RS,
queries it through QIDO-RS, reads its metadata and retrieves it back with
WADO-RS.

usage: test_orthanc_dicomweb.py [--server pacsd|orthanc]

Orthanc ("the client") is configured with DicomWeb.Servers {"pacsd":
[http://127.0.0.1:PORT/dicom-web/]}. Steps:

  1. a generated study (patient ODW-1, 2 series x 4 CT instances, 64x64,
     Explicit VR Little Endian) is uploaded to the client (REST POST
     /instances);
  2. POST /dicom-web/servers/pacsd/stow {"Resources": [study],
     "Synchronous": true}; the server then holds the 8 instances, each
     byte for byte as uploaded (pacsd: its index and blob files;
     Orthanc: /instances/{id}/file);
  3. POST /dicom-web/servers/pacsd/qido for /studies?PatientID=,
     /studies/{s}/series and /studies/{s}/series/{se}/instances, and
     POST .../get for /studies/{s}/metadata: UIDs and counts;
  4. the study is deleted from the client and fetched back with POST
     .../retrieve {"Resources": [{"Study": s}]}: the client holds the 8
     instances again, byte for byte as first uploaded; then one series only.

--server orthanc puts a second Orthanc with the DICOMweb plugin in pacsd's
place, to validate the test itself.
"""
import argparse
import hashlib
import os
import sqlite3
import sys
import tempfile
import urllib.error

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

import numpy as np  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PATIENT = "ODW-1"
SERIES, PER_SERIES = 2, 4


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def make_study(out):
    """Writes the study; returns (study UID, {series UID: [SOP UIDs]},
    {SOP UID: file bytes})."""
    rng = np.random.default_rng(4)
    study = generate_uid()
    series, files = {}, {}
    for s in range(SERIES):
        se = generate_uid()
        series[se] = []
        for i in range(PER_SERIES):
            sop = generate_uid()
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CT_STORAGE
            meta.MediaStorageSOPInstanceUID = sop
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID, ds.SOPInstanceUID = CT_STORAGE, sop
            ds.PatientName, ds.PatientID = "Web^Orthanc", PATIENT
            ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, se
            ds.StudyDate, ds.StudyTime, ds.StudyID = "20260101", "120000", "ODW"
            ds.AccessionNumber, ds.ReferringPhysicianName = "ACC-ODW", ""
            ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", s + 1, i + 1
            ds.SeriesDescription = "series %d" % (s + 1)
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.Rows = ds.Columns = 64
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
            ds.PixelRepresentation = 0
            ds.PixelData = rng.integers(0, 4096, (64, 64), dtype=np.uint16).tobytes()
            path = os.path.join(out, "odw_%d_%d.dcm" % (s, i))
            ds.save_as(path, write_like_original=False)
            with open(path, "rb") as f:
                files[sop] = f.read()
            series[se].append(sop)
    return study, series, files


def value(obj, tag):
    """One attribute's first value from DICOM JSON, as PS3.18 writes it
    ({"Value": [v]}) or as the plugin's /qido reformats it ({"Value": v})."""
    v = (obj or {}).get(tag, {}).get("Value")
    if isinstance(v, list):
        return v[0] if v else None
    return v


def server_files(kind, srv):
    """{SOP UID: bytes} of everything the server holds."""
    out = {}
    if kind == "pacsd":
        db = sqlite3.connect("file:%s?mode=ro" % os.path.join(srv.data_dir, "index.db"),
                             uri=True)
        try:
            rows = db.execute("SELECT sop_instance_uid, blob_key FROM instances").fetchall()
        finally:
            db.close()
        for sop, key in rows:
            with open(os.path.join(srv.data_dir, "files", key[:2], key), "rb") as f:
                out[sop] = f.read()
        return out
    return orthanc_files(srv)


def orthanc_files(o):
    out = {}
    for iid in o.rest("GET", "/instances"):
        sop = o.rest("GET", "/instances/%s" % iid)["MainDicomTags"]["SOPInstanceUID"]
        out[sop] = o.rest("GET", "/instances/%s/file" % iid)
    return out


def call(c, o, method, path, body, what):
    """A REST call on the client Orthanc; None (and a failed check) on an
    HTTP error."""
    try:
        return o.rest(method, path, body)
    except urllib.error.HTTPError as e:
        c.ok(False, what, "HTTP %d: %s" % (e.code, e.read()[:500]))
    except OSError as e:
        c.ok(False, what, e)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", choices=("pacsd", "orthanc"),
                    default=os.environ.get("DICOMWEB_SERVER", "pacsd"))
    a = ap.parse_args()
    c = harness.Checks()
    tmp = tempfile.mkdtemp(prefix="odw-")
    study, series, files = make_study(tmp)
    if a.server == "pacsd":
        srv = harness.Pacsd()
        base = "http://127.0.0.1:%d/dicom-web/" % srv.http_port
    else:
        srv = harness.Orthanc(aet="SERVER", dicomweb=True)
        base = srv.dicomweb_url() + "/"
    cli = harness.Orthanc(aet="CLIENT", dicomweb_servers={"pacsd": base})
    api = "/dicom-web/servers/pacsd"
    try:
        c.eq(cli.rest("GET", api), ["get", "retrieve", "stow", "wado", "qido"],
             "the plugin lists the pacsd server's operations")
        # 1. upload
        ids = set()
        for sop, data in sorted(files.items()):
            r = cli.rest("POST", "/instances", data)
            c.eq(r.get("Status"), "Success", "upload %s to the client" % sop)
            ids.add(r.get("ParentStudy"))
        c.eq(len(ids), 1, "one study in the client")
        study_id = ids.pop()

        # 2. STOW-RS to the server
        r = call(c, cli, "POST", api + "/stow", {"Resources": [study_id], "Synchronous": True},
                 "stow to %s" % a.server)
        if r is not None:
            c.eq(str(r.get("InstancesCount")), str(len(files)), "stow: InstancesCount")
        held = server_files(a.server, srv)
        c.eq(sorted(held), sorted(files), "%s holds the study's instances" % a.server)
        for sop, data in files.items():
            if sop in held:
                c.eq(sha256(held[sop]), sha256(data),
                     "%s holds %s byte for byte" % (a.server, sop))

        # 3. QIDO-RS and metadata through the client
        r = call(c, cli, "POST", api + "/qido",
                 {"Uri": "/studies", "Arguments": {"PatientID": PATIENT}}, "qido /studies")
        if r is not None:
            c.eq([value(x, "0020000D") for x in r], [study], "qido /studies?PatientID: the study")
            c.eq([value(x, "00100020") for x in r], [PATIENT], "qido /studies: PatientID")
        r = call(c, cli, "POST", api + "/qido",
                 {"Uri": "/studies", "Arguments": {"PatientID": "NOT-" + PATIENT}},
                 "qido /studies (no match)")
        if r is not None:
            c.eq(r, [], "qido /studies?PatientID of nobody: empty")
        r = call(c, cli, "POST", api + "/qido", {"Uri": "/studies/%s/series" % study},
                 "qido /series")
        if r is not None:
            c.eq(sorted(value(x, "0020000E") for x in r), sorted(series), "qido series of the study")
            c.eq(sorted(value(x, "00080060") for x in r), ["CT"] * SERIES, "qido series: Modality")
        for se, sops in series.items():
            r = call(c, cli, "POST", api + "/qido",
                     {"Uri": "/studies/%s/series/%s/instances" % (study, se)}, "qido /instances")
            if r is not None:
                c.eq(sorted(value(x, "00080018") for x in r), sorted(sops),
                     "qido instances of series %s" % se)
        r = call(c, cli, "POST", api + "/get", {"Uri": "/studies/%s/metadata" % study},
                 "get /studies/{s}/metadata")
        if r is not None:
            c.eq(sorted(value(x, "00080018") for x in r), sorted(files), "metadata: every instance")
            c.eq(sorted({value(x, "00100020") for x in r}), [PATIENT], "metadata: PatientID")
            c.eq(sorted({value(x, "00280010") for x in r}), [64], "metadata: Rows")

        # 4. WADO-RS back into the client
        call(c, cli, "DELETE", "/studies/%s" % study_id, None, "delete the study from the client")
        c.eq(cli.rest("GET", "/instances"), [], "client empty after DELETE")
        r = call(c, cli, "POST", api + "/retrieve",
                 {"Resources": [{"Study": study}], "Synchronous": True}, "retrieve the study")
        if r is not None:
            c.eq(str(r.get("ReceivedInstancesCount")), str(len(files)),
                 "retrieve study: ReceivedInstancesCount")
        back = orthanc_files(cli)
        c.eq(sorted(back), sorted(files), "client holds the study again")
        for sop, data in files.items():
            if sop in back:
                c.eq(sha256(back[sop]), sha256(data), "retrieved %s byte for byte" % sop)
        if back:
            call(c, cli, "DELETE", "/studies/%s" % study_id, None, "delete the retrieved study")
        se, sops = sorted(series.items())[0]
        r = call(c, cli, "POST", api + "/retrieve",
                 {"Resources": [{"Study": study, "Series": se}], "Synchronous": True},
                 "retrieve one series")
        if r is not None:
            c.eq(str(r.get("ReceivedInstancesCount")), str(PER_SERIES),
                 "retrieve series: ReceivedInstancesCount")
        back = orthanc_files(cli)
        c.eq(sorted(back), sorted(sops), "client holds that series only")
        c.ok(srv.alive(), "%s still running" % a.server)
    finally:
        cli.cleanup()
        srv.cleanup()
        harness.run(["rm", "-rf", tmp])
    print("server: %s (%s)" % (a.server, base))
    c.finish()


if __name__ == "__main__":
    main()
