#!/usr/bin/python3
"""Generate many small DICOM instances (header only, no pixel data) fast,
for index and query benchmarks.

usage: dimse_gen_small.py OUTDIR PATIENTS [--studies S] [--series R]
                          [--instances I] [--seed X]

Writes PATIENTS x S studies x R series x I instances (defaults 2 x 5 x 10:
100 instances a patient) as Part 10 files, Explicit VR Little Endian, about
700 bytes each: meta group, SOP Common, Patient, General Study, General
Series and General Image attributes (20 elements), no Pixel Data. The
elements are packed with struct, not pydicom: 100,000 files take seconds.
Each study is CT (CT Image Storage) or MR (MR Image Storage), alternating
by study, so ModalitiesInStudy has one value.

Files go to OUTDIR/dNNNN/ in chunks of 10 patients (1,000 files), so
storescu can take directories (+sd) instead of 100,000 arguments. UIDs are
under 2.25, derived from the seed and the instance's place: the same
arguments give the same bytes. OUTDIR/MANIFEST.tsv lists, per study:
patient ID, patient name, study UID, study date, modality, instances.

Run with Debian's /usr/bin/python3 (standard library only).
"""
import argparse
import hashlib
import os
import random
import struct
import sys

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPL_CLASS_UID = "2.25.74960482908700044557044491141079752637"
SOP = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4"}
FAMILY = ["SMITH", "JONES", "GARCIA", "MILLER", "DAVIS", "MARTIN", "MUELLER",
          "ROSSI", "DUBOIS", "TANAKA", "NOWAK", "SILVA", "OLSEN", "KOWALSKI"]
GIVEN = ["ANNA", "JOHN", "MARIA", "PETER", "LINA", "OMAR", "SARA", "JONAS",
         "ELENA", "YUKI", "PAUL", "NINA", "IVAN", "LUCIA"]
PER_DIR = 10  # patients per directory


def uid(seed, *parts):
    h = hashlib.sha256(("%s|" % seed + "|".join(map(str, parts))).encode()).digest()
    return "2.25." + str(int.from_bytes(h[:16], "big"))


def el(g, e, vr, value):
    """One Explicit VR Little Endian element (padded to even length)."""
    if isinstance(value, str):
        value = value.encode("latin-1")
        if len(value) % 2:
            value += b"\0" if vr == b"UI" else b" "
    if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT"):
        return struct.pack("<HH2sHI", g, e, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", g, e, vr, len(value)) + value


def part10(sop_class, sop_uid, body):
    meta = (el(2, 0x0001, b"OB", b"\0\1") + el(2, 0x0002, b"UI", sop_class) +
            el(2, 0x0003, b"UI", sop_uid) + el(2, 0x0010, b"UI", EXPLICIT_LE) +
            el(2, 0x0012, b"UI", IMPL_CLASS_UID) + el(2, 0x0013, b"SH", "PACSD_GEN_SMALL"))
    return (bytes(128) + b"DICM" + el(2, 0x0000, b"UL", struct.pack("<I", len(meta))) +
            meta + body)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("patients", type=int)
    ap.add_argument("--studies", type=int, default=2)
    ap.add_argument("--series", type=int, default=5)
    ap.add_argument("--instances", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if min(a.patients, a.studies, a.series, a.instances) < 1:
        ap.error("every count must be >= 1")
    os.makedirs(a.outdir, exist_ok=True)
    rng = random.Random(a.seed)
    manifest = ["patient_id\tpatient_name\tstudy_uid\tstudy_date\tmodality\tinstances"]
    n = 0
    for p in range(a.patients):
        d = os.path.join(a.outdir, "d%04d" % (p // PER_DIR))
        if p % PER_DIR == 0:
            os.makedirs(d, exist_ok=True)
        pid = "S%07d" % (1000000 + p)
        pname = "%s^%s" % (rng.choice(FAMILY), rng.choice(GIVEN))
        patient = (el(0x0010, 0x0010, b"PN", pname) + el(0x0010, 0x0020, b"LO", pid) +
                   el(0x0010, 0x0030, b"DA", "%04d%02d%02d" % (rng.randint(1930, 2015),
                                                               rng.randint(1, 12),
                                                               rng.randint(1, 28))) +
                   el(0x0010, 0x0040, b"CS", rng.choice("MF")))
        for s in range(a.studies):
            mod = "CT" if (p + s) % 2 == 0 else "MR"
            st_uid = uid(a.seed, "study", p, s)
            date = "20%02d%02d%02d" % (rng.randint(10, 24), rng.randint(1, 12), rng.randint(1, 28))
            study_a = (el(0x0008, 0x0020, b"DA", date) +
                       el(0x0008, 0x0030, b"TM", "%02d%02d%02d" % (rng.randint(7, 19),
                                                                  rng.randint(0, 59),
                                                                  rng.randint(0, 59))) +
                       el(0x0008, 0x0050, b"SH", "A%08d" % rng.randint(0, 99999999)) +
                       el(0x0008, 0x0060, b"CS", mod) +
                       el(0x0008, 0x0090, b"PN", rng.choice(["DR^HOUSE", "DR^WHO", ""])) +
                       el(0x0008, 0x1030, b"LO", "%s STUDY %d" % (mod, s + 1)))
            manifest.append("\t".join([pid, pname, st_uid, date, mod,
                                       str(a.series * a.instances)]))
            for r in range(a.series):
                se_uid = uid(a.seed, "series", p, s, r)
                for i in range(a.instances):
                    sop_uid = uid(a.seed, "sop", p, s, r, i)
                    body = (el(0x0008, 0x0005, b"CS", "ISO_IR 100") +
                            el(0x0008, 0x0016, b"UI", SOP[mod]) +
                            el(0x0008, 0x0018, b"UI", sop_uid) +
                            study_a +
                            el(0x0008, 0x103E, b"LO", "SERIES %d" % (r + 1)) +
                            patient +
                            el(0x0020, 0x000D, b"UI", st_uid) +
                            el(0x0020, 0x000E, b"UI", se_uid) +
                            el(0x0020, 0x0010, b"SH", str(s + 1)) +
                            el(0x0020, 0x0011, b"IS", str(r + 1)) +
                            el(0x0020, 0x0013, b"IS", str(i + 1)))
                    with open(os.path.join(d, "i%07d.dcm" % n), "wb") as f:
                        f.write(part10(SOP[mod], sop_uid, body))
                    n += 1
    with open(os.path.join(a.outdir, "MANIFEST.tsv"), "w") as f:
        f.write("\n".join(manifest) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
