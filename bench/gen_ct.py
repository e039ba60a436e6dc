#!/usr/bin/python3
"""Generate N distinct 512x512 16-bit CT instances (Explicit VR Little Endian).

usage: gen_ct.py OUTDIR N [--patients P] [--studies-per-patient S]
                          [--series-per-study R] [--seed X]

Each file carries a realistic CT header (~100 elements: SOP Common, Patient,
General Study, Patient Study, General Series, Frame of Reference, General
Equipment, General Image, Image Plane, Image Pixel, CT Image, VOI LUT, with
a few code sequences) and 512 KiB of pixel data: an elliptical body phantom
per series with organs whose size varies along the slice position, plus
per-instance noise, so every instance differs.

The N instances are spread evenly and in order over P patients x S studies
x R series. UIDs live under the 2.25 root (PS3.5 B.2) and are derived from
the seed and the instance's place, so the same arguments always give the
same bytes. Files are written flat as OUTDIR/ct_NNNNNN.dcm (sorted order is
generation order); a manifest OUTDIR/MANIFEST.tsv lists file, patient ID,
study, series and SOP instance UIDs for tests that need them.

Needs Debian's python3-pydicom and python3-numpy (run with /usr/bin/python3).
"""
import argparse
import hashlib
import os
import random
import sys

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
IMPL_CLASS_UID = "2.25.74960482908700044557044491141079752637"
ROWS = COLS = 512

FAMILY = ["SMITH", "JONES", "GARCIA", "MILLER", "DAVIS", "MARTIN", "MUELLER",
          "ROSSI", "DUBOIS", "TANAKA", "NOWAK", "SILVA", "OLSEN", "KOWALSKI"]
GIVEN = ["ANNA", "JOHN", "MARIA", "PETER", "LINA", "OMAR", "SARA", "JONAS",
         "ELENA", "YUKI", "PAUL", "NINA", "IVAN", "LUCIA"]
BODY_PARTS = [("CHEST", "CT CHEST W CONTRAST"), ("ABDOMEN", "CT ABDOMEN PELVIS"),
              ("HEAD", "CT HEAD WO CONTRAST")]


def uid(seed, *parts):
    """A 2.25 UID from a 128-bit hash of the seed and the parts."""
    h = hashlib.sha256(("%s|" % seed + "|".join(map(str, parts))).encode()).digest()
    return "2.25." + str(int.from_bytes(h[:16], "big"))


def code_item(value, scheme, meaning):
    it = Dataset()
    it.CodeValue = value
    it.CodingSchemeDesignator = scheme
    it.CodeMeaning = meaning
    return it


def phantom(rng):
    """A body-shaped phantom in stored values (HU + 1024), uint16."""
    y, x = np.ogrid[:ROWS, :COLS]
    cy, cx = ROWS / 2 + rng.uniform(-10, 10), COLS / 2 + rng.uniform(-10, 10)
    ay, ax = rng.uniform(150, 190), rng.uniform(200, 240)
    img = np.zeros((ROWS, COLS), np.int32)  # air: -1024 HU -> 0
    body = ((y - cy) / ay) ** 2 + ((x - cx) / ax) ** 2 <= 1
    img[body] = 1024 + 40  # soft tissue
    ring = body & (((y - cy) / (ay - 12)) ** 2 + ((x - cx) / (ax - 12)) ** 2 > 1)
    img[ring] = 1024 - 100  # fat
    spine = ((y - (cy + ay * 0.6)) / 22) ** 2 + ((x - cx) / 20) ** 2 <= 1
    img[spine] = 1024 + 700  # bone
    return img


def organs(img, rng_vals, z):
    """Adds two 'lungs' whose radius depends on the slice position."""
    y, x = np.ogrid[:ROWS, :COLS]
    r = 50 + 30 * np.sin(z / 40.0)
    for cx in (COLS / 2 - 90, COLS / 2 + 90):
        m = ((y - ROWS / 2 + 10) / (r * 1.4)) ** 2 + ((x - cx) / r) ** 2 <= 1
        img[m] = 1024 - 850 + rng_vals
    return img


class Gen:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        nr = np.random.default_rng(a.seed)
        # A noise pool; each instance takes a window at its own offset.
        self.noise = nr.integers(-20, 21, ROWS * COLS * 4, dtype=np.int32)
        self.patients = []
        for p in range(a.patients):
            r = self.rng
            birth = "%04d%02d%02d" % (r.randint(1930, 2015), r.randint(1, 12), r.randint(1, 28))
            self.patients.append({
                "name": "%s^%s" % (r.choice(FAMILY), r.choice(GIVEN)),
                "id": "P%06d" % (100000 + p),
                "birth": birth,
                "sex": r.choice("MF"),
                "weight": "%.1f" % r.uniform(45, 110),
                "size": "%.2f" % r.uniform(1.50, 1.95),
            })

    def study(self, p, s):
        r = random.Random("%s|study|%d|%d" % (self.a.seed, p, s))
        part = r.choice(BODY_PARTS)
        return {
            "uid": uid(self.a.seed, "study", p, s),
            "date": "20%02d%02d%02d" % (r.randint(10, 24), r.randint(1, 12), r.randint(1, 28)),
            "time": "%02d%02d%02d.%03d" % (r.randint(7, 19), r.randint(0, 59), r.randint(0, 59),
                                          r.randint(0, 999)),
            "acc": "A%08d" % r.randint(0, 99999999),
            "id": str(s + 1),
            "part": part,
            "ref": r.choice(["DR^HOUSE", "DR^WHO", "DR^ZHIVAGO", ""]),
        }

    def series(self, p, s, se):
        r = random.Random("%s|series|%d|%d|%d" % (self.a.seed, p, s, se))
        return {
            "uid": uid(self.a.seed, "series", p, s, se),
            "for": uid(self.a.seed, "for", p, s),
            "number": str(se + 1),
            "thick": r.choice(["0.625", "1.25", "2.5", "5"]),
            "kvp": r.choice(["100", "120", "140"]),
            "kernel": r.choice(["STANDARD", "BONE", "LUNG", "SOFT"]),
            "z0": r.uniform(-400, -100),
            "phantom": phantom(r),
        }

    def instance(self, idx, pat, st, se, inum):
        a = self.a
        z = se["z0"] + inum * float(se["thick"])
        sop = uid(a.seed, "sop", idx)
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceCreationDate = st["date"]
        ds.InstanceCreationTime = st["time"]
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = sop
        ds.StudyDate = st["date"]
        ds.SeriesDate = st["date"]
        ds.AcquisitionDate = st["date"]
        ds.ContentDate = st["date"]
        ds.StudyTime = st["time"]
        ds.SeriesTime = st["time"]
        ds.AcquisitionTime = st["time"]
        ds.ContentTime = st["time"]
        ds.AccessionNumber = st["acc"]
        ds.Modality = "CT"
        ds.Manufacturer = "PACSD BENCH"
        ds.InstitutionName = "General Hospital"
        ds.InstitutionAddress = "1 Main Street"
        ds.ReferringPhysicianName = st["ref"]
        ds.StationName = "CTSCAN01"
        ds.StudyDescription = st["part"][1]
        ds.ProcedureCodeSequence = Sequence([code_item("CTCHAB", "99LOCAL", st["part"][1])])
        ds.SeriesDescription = "AXIAL %s %s" % (se["thick"], se["kernel"])
        ds.InstitutionalDepartmentName = "RADIOLOGY"
        ds.PerformingPhysicianName = "TECH^ONE"
        ds.OperatorsName = "TECH^TWO"
        ds.ManufacturerModelName = "BenchScan 64"
        ds.ReferencedImageSequence = Sequence()
        ds.PatientName = pat["name"]
        ds.PatientID = pat["id"]
        ds.IssuerOfPatientID = "PACSD"
        ds.PatientBirthDate = pat["birth"]
        ds.PatientSex = pat["sex"]
        ds.OtherPatientIDs = pat["id"] + "X"
        ds.PatientAge = "%03dY" % max(0, int(st["date"][:4]) - int(pat["birth"][:4]))
        ds.PatientSize = pat["size"]
        ds.PatientWeight = pat["weight"]
        ds.PatientComments = ""
        ds.ContrastBolusAgent = "IOHEXOL" if st["part"][0] != "HEAD" else ""
        ds.BodyPartExamined = st["part"][0]
        ds.ScanOptions = "HELICAL MODE"
        ds.SliceThickness = se["thick"]
        ds.KVP = se["kvp"]
        ds.DataCollectionDiameter = "500"
        ds.DeviceSerialNumber = "SN0001"
        ds.SoftwareVersions = ["1.0", "pacsd-bench"]
        ds.ProtocolName = st["part"][1]
        ds.ReconstructionDiameter = "360"
        ds.DistanceSourceToDetector = "949.075"
        ds.DistanceSourceToPatient = "541"
        ds.GantryDetectorTilt = "0"
        ds.TableHeight = "160"
        ds.RotationDirection = "CW"
        ds.ExposureTime = "500"
        ds.XRayTubeCurrent = str(200 + inum % 50)
        ds.Exposure = str(100 + inum % 25)
        ds.FilterType = "BODY FILTER"
        ds.GeneratorPower = "48"
        ds.FocalSpots = "0.7"
        ds.ConvolutionKernel = se["kernel"]
        ds.PatientPosition = "FFS"
        ds.RevolutionTime = 0.5
        ds.SingleCollimationWidth = 0.625
        ds.TotalCollimationWidth = 40.0
        ds.TableSpeed = 78.75
        ds.TableFeedPerRotation = 39.375
        ds.SpiralPitchFactor = 0.984
        ds.CTDIvol = 8 + (inum % 7) * 0.25
        phantom_item = Dataset()
        phantom_item.CodeValue = "113691"
        phantom_item.CodingSchemeDesignator = "DCM"
        phantom_item.CodeMeaning = "IEC Body Dosimetry Phantom"
        ds.CTDIPhantomTypeCodeSequence = Sequence([phantom_item])
        ds.StudyInstanceUID = st["uid"]
        ds.SeriesInstanceUID = se["uid"]
        ds.StudyID = st["id"]
        ds.SeriesNumber = se["number"]
        ds.AcquisitionNumber = "1"
        ds.InstanceNumber = str(inum + 1)
        ds.PatientOrientation = ["L", "P"]
        ds.ImagePositionPatient = ["-180", "-180", "%.3f" % z]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.FrameOfReferenceUID = se["for"]
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = "%.3f" % z
        ds.ImageComments = "pacsd bench instance %d" % idx
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ROWS
        ds.Columns = COLS
        ds.PixelSpacing = ["0.703125", "0.703125"]
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PixelPaddingValue = 0
        ds.BurnedInAnnotation = "NO"
        ds.WindowCenter = ["40", "-600"]
        ds.WindowWidth = ["400", "1500"]
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenterWidthExplanation = ["WINDOW1", "WINDOW2"]
        ds.LossyImageCompression = "00"
        ds.IrradiationEventUID = uid(a.seed, "irr", idx)
        # Pixels: the series phantom, organs at this z, and noise.
        img = se["phantom"].copy()
        organs(img, 0, z)
        off = (idx * 7919) % (self.noise.size - ROWS * COLS)
        img += self.noise[off:off + ROWS * COLS].reshape(ROWS, COLS)
        np.clip(img, 0, 4095, out=img)
        ds.PixelData = img.astype("<u2").tobytes()

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = IMPL_CLASS_UID
        meta.ImplementationVersionName = "PACSD_GEN_CT"
        ds.file_meta = meta
        ds.is_little_endian = True
        ds.is_implicit_VR = False
        return ds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("n", type=int)
    ap.add_argument("--patients", type=int, default=20)
    ap.add_argument("--studies-per-patient", type=int, default=2)
    ap.add_argument("--series-per-study", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.n < 1 or a.patients < 1 or a.studies_per_patient < 1 or a.series_per_study < 1:
        ap.error("N, --patients, --studies-per-patient and --series-per-study must be >= 1")
    os.makedirs(a.outdir, exist_ok=True)
    g = Gen(a)
    nseries = a.patients * a.studies_per_patient * a.series_per_study
    manifest = []
    cur_key, st, se, inum = None, None, None, 0
    for i in range(a.n):
        # Instance i belongs to series k; series are numbered patient-major.
        k = i * nseries // a.n
        p, rest = divmod(k, a.studies_per_patient * a.series_per_study)
        s, r = divmod(rest, a.series_per_study)
        if (p, s, r) != cur_key:
            if cur_key is None or cur_key[:2] != (p, s):
                st = g.study(p, s)
            se = g.series(p, s, r)
            cur_key, inum = (p, s, r), 0
        ds = g.instance(i, g.patients[p], st, se, inum)
        inum += 1
        name = "ct_%06d.dcm" % i
        dcmwrite(os.path.join(a.outdir, name), ds, write_like_original=False)
        manifest.append("\t".join([name, g.patients[p]["id"], st["uid"], se["uid"],
                                   ds.SOPInstanceUID]))
    with open(os.path.join(a.outdir, "MANIFEST.tsv"), "w") as f:
        f.write("file\tpatient_id\tstudy_uid\tseries_uid\tsop_uid\n")
        f.write("\n".join(manifest) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
