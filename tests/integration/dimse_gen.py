#!/usr/bin/python3
"""Deterministic test data for test_dimse_dcmtk.py: a small CT archive.

2 patients x 2 studies x 2 series x 5 instances of 64x64 16-bit images,
each study in its own transfer syntax (Implicit VR LE, Explicit VR LE,
Explicit VR BE, Deflated Explicit VR LE). The files are written by pydicom
in Explicit VR Little Endian and turned into the other syntaxes by
`pacsd convert --ts implicit|big|deflated`; pydicom reads each converted
file back and its pixel data must equal the generated array.

Also `bulk`: N tiny instances (no pixel data) of one series, for queries
with many matches (C-CANCEL).

generate(outdir, pacsd) -> Archive (entities with their attributes, the
computed query attributes, and each instance's file path and syntax).
Command line: dimse_gen.py OUTDIR [PACSD] writes the files and prints a
summary. Run with Debian's /usr/bin/python3 (pydicom 2.3, numpy).
"""
import concurrent.futures
import hashlib
import os
import subprocess
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
SYNTAXES = [("implicit", IMPLICIT_LE), ("explicit", EXPLICIT_LE), ("big", EXPLICIT_BE),
            ("deflated", DEFLATED_LE)]

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
IMPL_UID = "1.2.826.0.1.3680043.10.543.1"  # only in the generated meta group


def uid(*parts):
    """A deterministic 2.25 UID from a name."""
    h = hashlib.sha256(("pacsd-dimse-test:" + "/".join(map(str, parts))).encode()).digest()
    return "2.25." + str(int.from_bytes(h[:15], "big"))


PATIENTS = [
    {"PatientID": "DIMSE-PAT-1", "PatientName": "DOE^JOHN", "PatientBirthDate": "19700101",
     "PatientSex": "M"},
    {"PatientID": "DIMSE-PAT-2", "PatientName": "ROE^JANE^Q", "PatientBirthDate": "19851231",
     "PatientSex": "F"},
]

# patient index, attributes, syntax; series: (Modality, SOP class, description)
STUDIES = [
    (0, {"StudyDate": "20200115", "StudyTime": "083000", "AccessionNumber": "ACC001",
         "StudyID": "S1", "StudyDescription": "HEAD CT", "ReferringPhysicianName": "WHO^DR"},
     "implicit", [("CT", CT_STORAGE, "AXIAL 5MM"), ("OT", SC_STORAGE, "SCOUT CAPTURE")]),
    (0, {"StudyDate": "20200620", "StudyTime": "101530.250", "AccessionNumber": "ACC002",
         "StudyID": "S2", "StudyDescription": "CHEST CT", "ReferringPhysicianName": "HOUSE^G"},
     "explicit", [("CT", CT_STORAGE, "LUNG"), ("CT", CT_STORAGE, "MEDIASTINUM")]),
    (1, {"StudyDate": "20210310", "StudyTime": "143000", "AccessionNumber": "ACC003",
         "StudyID": "S3", "StudyDescription": "ABDOMEN CT", "ReferringPhysicianName": "WHO^DR"},
     "big", [("CT", CT_STORAGE, "PORTAL"), ("OT", SC_STORAGE, "DOSE REPORT")]),
    (1, {"StudyDate": "20211205", "StudyTime": "235959", "AccessionNumber": "ACC013",
         "StudyID": "S4", "StudyDescription": "PELVIS CT", "ReferringPhysicianName": "GREY^M"},
     "deflated", [("CT", CT_STORAGE, "ARTERIAL"), ("CT", CT_STORAGE, "VENOUS")]),
]
N_INSTANCES = 5
SIZE = 64


class Archive:
    """What was generated. patients/studies/series/instances: lists of
    dicts of attribute keyword -> value (strings; computed attributes as
    ints, ModalitiesInStudy/SOPClassesInStudy as sets), each entity also
    holding the attributes of the levels above and a reference to its
    parent ('patient', 'study', 'series'). Instances also have 'path' (the
    file) and 'syntax' (its transfer syntax UID); studies their 'syntax'."""

    def __init__(self):
        self.patients, self.studies, self.series, self.instances = [], [], [], []

    def by_syntax(self, name):
        ts = dict(SYNTAXES)[name]
        return [i for i in self.instances if i["syntax"] == ts]


def _dataset(pat, st, inst_no, rng, study_uid, series_uid, sop_uid, series_no,
             sop_class, modality, series_desc):
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = st["StudyDate"]
    ds.SeriesDate = st["StudyDate"]
    ds.ContentDate = st["StudyDate"]
    ds.StudyTime = st["StudyTime"]
    ds.SeriesTime = st["StudyTime"]
    ds.ContentTime = st["StudyTime"]
    ds.AccessionNumber = st["AccessionNumber"]
    ds.Modality = modality
    ds.Manufacturer = "PACSD-TEST"
    ds.ReferringPhysicianName = st["ReferringPhysicianName"]
    ds.StudyDescription = st["StudyDescription"]
    ds.SeriesDescription = series_desc
    ds.PatientName = pat["PatientName"]
    ds.PatientID = pat["PatientID"]
    ds.PatientBirthDate = pat["PatientBirthDate"]
    ds.PatientSex = pat["PatientSex"]
    ds.SliceThickness = "5"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = st["StudyID"]
    ds.SeriesNumber = str(series_no)
    ds.InstanceNumber = str(inst_no)
    ds.ImagePositionPatient = ["-100", "-100", str(5 * inst_no)]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = uid("for", study_uid)
    ds.SliceLocation = str(5 * inst_no)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = SIZE
    ds.Columns = SIZE
    ds.PixelSpacing = ["0.5", "0.5"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    pixels = rng.integers(0, 4096, size=(SIZE, SIZE), dtype=np.uint16)
    ds.PixelData = pixels.astype("<u2").tobytes()
    return ds, pixels


def _write(ds, path):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPL_UID
    ds.file_meta = meta
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.preamble = b"\0" * 128
    ds.save_as(path, write_like_original=False)


def _convert(pacsd, src, dst, syntax):
    r = subprocess.run([pacsd, "convert", "--ts", syntax, src, dst], capture_output=True,
                       text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("pacsd convert --ts %s %s: %s" % (syntax, src, r.stderr.strip()))


def generate(outdir, pacsd, convert=True):
    """Writes the files under outdir/<syntax>/ and returns an Archive."""
    rng = np.random.default_rng(20240611)
    arc = Archive()
    work = os.path.join(outdir, "source")
    os.makedirs(work, exist_ok=True)
    pending = []  # (explicit path, final path, syntax name, pixels)
    pat_rows = []
    for p in PATIENTS:
        row = dict(p)
        row.update(NumberOfPatientRelatedStudies=0, NumberOfPatientRelatedSeries=0,
                   NumberOfPatientRelatedInstances=0)
        pat_rows.append(row)
    arc.patients = pat_rows
    for si, (pi, st, syntax, series) in enumerate(STUDIES):
        pat = pat_rows[pi]
        study_uid = uid("study", si)
        srow = {k: pat[k] for k in PATIENTS[0]}
        srow.update(st)
        srow.update(StudyInstanceUID=study_uid, ModalitiesInStudy=set(), SOPClassesInStudy=set(),
                    NumberOfStudyRelatedSeries=0, NumberOfStudyRelatedInstances=0,
                    syntax=dict(SYNTAXES)[syntax], patient=pat)
        arc.studies.append(srow)
        pat["NumberOfPatientRelatedStudies"] += 1
        os.makedirs(os.path.join(outdir, syntax), exist_ok=True)
        for sj, (modality, sop_class, desc) in enumerate(series):
            series_uid = uid("series", si, sj)
            ser = dict(srow)
            for k in ("ModalitiesInStudy", "SOPClassesInStudy", "NumberOfStudyRelatedSeries",
                      "NumberOfStudyRelatedInstances", "syntax", "patient"):
                ser.pop(k)
            ser.update(SeriesInstanceUID=series_uid, Modality=modality, SeriesNumber=str(sj + 1),
                       SeriesDescription=desc, NumberOfSeriesRelatedInstances=N_INSTANCES,
                       study=srow)
            arc.series.append(ser)
            srow["ModalitiesInStudy"].add(modality)
            srow["SOPClassesInStudy"].add(sop_class)
            srow["NumberOfStudyRelatedSeries"] += 1
            srow["NumberOfStudyRelatedInstances"] += N_INSTANCES
            pat["NumberOfPatientRelatedSeries"] += 1
            pat["NumberOfPatientRelatedInstances"] += N_INSTANCES
            for k in range(1, N_INSTANCES + 1):
                sop_uid = uid("instance", si, sj, k)
                ds, pixels = _dataset(pat, st, k, rng, study_uid, series_uid, sop_uid,
                                      sj + 1, sop_class, modality, desc)
                name = "s%d_%d_%d.dcm" % (si + 1, sj + 1, k)
                src = os.path.join(work, name)
                _write(ds, src)
                final = os.path.join(outdir, syntax, name)
                pending.append((src, final, syntax, pixels))
                inst = {kk: v for kk, v in ser.items() if kk != "study"}
                inst.update(SOPInstanceUID=sop_uid, SOPClassUID=sop_class,
                            InstanceNumber=str(k), path=final,
                            syntax=dict(SYNTAXES)[syntax], series=ser)
                arc.instances.append(inst)
    def finish(item):
        src, final, syntax, pixels = item
        if syntax == "explicit" or not convert:
            os.replace(src, final)
        else:
            _convert(pacsd, src, final, syntax)
            os.unlink(src)
        back = pydicom.dcmread(final)
        if back.file_meta.TransferSyntaxUID != dict(SYNTAXES)[syntax]:
            raise RuntimeError("%s: transfer syntax %s" % (final, back.file_meta.TransferSyntaxUID))
        if not np.array_equal(back.pixel_array, pixels):
            raise RuntimeError("%s: pixel data differs after conversion" % final)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(finish, pending))
    os.rmdir(work)
    return arc


BULK_PATIENT = {"PatientID": "DIMSE-BULK", "PatientName": "BULK^MANY"}


def bulk(outdir, n):
    """n tiny Secondary Capture instances without pixel data, one series
    of one study of patient DIMSE-BULK, Explicit VR LE. Returns
    (study uid, series uid, [paths])."""
    os.makedirs(outdir, exist_ok=True)
    study_uid, series_uid = uid("bulk-study"), uid("bulk-series")
    paths = []
    for k in range(1, n + 1):
        ds = Dataset()
        ds.SOPClassUID = SC_STORAGE
        ds.SOPInstanceUID = uid("bulk", k)
        ds.StudyDate = "20220202"
        ds.Modality = "OT"
        ds.PatientName = BULK_PATIENT["PatientName"]
        ds.PatientID = BULK_PATIENT["PatientID"]
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.InstanceNumber = str(k)
        p = os.path.join(outdir, "b%05d.dcm" % k)
        _write(ds, p)
        paths.append(p)
    return study_uid, series_uid, paths


def main():
    if len(sys.argv) < 2:
        raise SystemExit("usage: dimse_gen.py OUTDIR [PACSD]")
    pacsd = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("PACSD", "pacsd")
    arc = generate(sys.argv[1], pacsd)
    print("%d patients, %d studies, %d series, %d instances in %s" % (
        len(arc.patients), len(arc.studies), len(arc.series), len(arc.instances), sys.argv[1]))


if __name__ == "__main__":
    main()
