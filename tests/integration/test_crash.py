#!/usr/bin/python3
"""Crash safety: kill -9 pacsd while storescu is sending, restart it on the
same data directory, and check that nothing acknowledged was lost.

500 small instances (pydicom, deterministic UIDs, 8x8 pixels) are sent by
DCMTK's storescu in one association. `storescu -v` logs "Sending file: F"
before each C-STORE and "Received Store Response (Success)" when its answer
arrives; storescu sends one instance at a time, so each success belongs to
the file named last. When the Nth success has been read, pacsd gets
SIGKILL (after a small delay that differs per round, so the kill lands at
different points of the next store: receiving, committing, answering). The
rest of storescu's output is still read: every success it printed was sent
by pacsd before it died.

After each kill, before the restart, the files on disk are listed (committed
blobs and temporaries in files/tmp). pacsd is restarted on the same
directory (harness Pacsd.restart) and then:
- every instance storescu saw acknowledged is in the index (SQLite) and its
  file is there with the SHA-256 and size the index holds;
- no index row lacks its file, and every file left belongs to a row;
- files/tmp is empty, the start-up log says how many temporaries it removed
  (as many as were there) and "archive: N blobs checked, M orphans removed"
  with N the committed files found before the restart and M those no row
  named;
- pacsd serves (echoscu).
Five rounds resend the same 500 instances (so later rounds also replace
stored copies, dicom.duplicates = replace) with kills at different counts;
a last round sends all 500 to the end and finds them all. pacsd must exit 0
on SIGTERM with no sanitizer report.

Run with Debian's /usr/bin/python3; $PACSD names the binary. -v prints the
rounds. Ends with "N passed, N failed".
"""
import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

VERBOSE = "-v" in sys.argv[1:]
N = 500
UID_ROOT = "1.2.826.0.1.3680043.10.998"
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
# (acknowledgements seen before the kill, delay after reading the Nth one)
ROUNDS = ((37, 0.0), (211, 0.003), (389, 0.010), (120, 0.0015), (300, 0.006))

checks = h.Checks()


def log(msg):
    if VERBOSE:
        print(msg, flush=True)


def generate(d):
    """N Part 10 files in d; returns {path: SOP Instance UID}, in send order."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    out = {}
    for i in range(N):
        study = "%s.%d" % (UID_ROOT, 1 + i // 100)            # 5 studies
        series = "%s.%d" % (study, 1 + (i // 20) % 5)         # of 5 series
        uid = "%s.%d" % (series, 1 + i)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SC_STORAGE
        meta.MediaStorageSOPInstanceUID = uid
        meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        path = os.path.join(d, "i%03d.dcm" % i)
        ds = FileDataset(path, {}, file_meta=meta, preamble=bytes(128))
        ds.SOPClassUID = SC_STORAGE
        ds.SOPInstanceUID = uid
        ds.PatientName = "Crash^Test%d" % (i // 100)
        ds.PatientID = "CRASH%d" % (i // 100)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.StudyDate, ds.Modality, ds.InstanceNumber = "20260101", "OT", i + 1
        ds.Rows = ds.Columns = 8
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        ds.PixelData = bytes((i * 13 + k) & 0xFF for k in range(64))
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)
        out[path] = uid
    return out


def storescu(port, files, kill_after=None, delay=0.0, pacsd=None):
    """Runs storescu -v over files; kills pacsd after kill_after successes.
    Returns (acknowledged UIDs, failures seen, exit status, killed)."""
    p = subprocess.Popen(["storescu", "-v", "-nh", "-to", "30", "-ta", "30", "-td", "30",
                          "-aec", "PACSD", "127.0.0.1", str(port), *files],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    acked, failed, current, killed = [], [], None, False
    for line in p.stdout:
        m = re.search(r"Sending file: (.*\S)", line)
        if m:
            current = m.group(1)
            continue
        m = re.search(r"Received Store Response \((.*)\)", line)
        if m:
            if m.group(1) == "Success" and current:
                acked.append(current)
            else:
                failed.append((current, m.group(1)))
            current = None
            if kill_after and not killed and len(acked) >= kill_after:
                if delay:
                    time.sleep(delay)
                pacsd.kill9()
                killed = True
    rc = p.wait(120)
    return acked, failed, rc, killed


def walk_blobs(files_dir):
    """Committed blob keys (files/<k0k1>/<key>) and temporaries."""
    keys, temps = set(), []
    for root, dirs, names in os.walk(files_dir):
        rel = os.path.relpath(root, files_dir)
        if rel == "tmp" or rel.startswith("tmp" + os.sep):
            temps += names
            continue
        if rel != "." and rel.count(os.sep) == 0:
            keys.update(names)
    return keys, temps


def index_rows(data_dir):
    db = sqlite3.connect("file:%s/index.db?mode=ro" % data_dir, uri=True, timeout=30)
    try:
        return {r[0]: (r[1], r[2], r[3]) for r in
                db.execute("SELECT sop_instance_uid, blob_key, sha256, size FROM instances")}
    finally:
        db.close()


def blob_path(data_dir, key):
    return os.path.join(data_dir, "files", key[0:2], key)


def check_store(srv, acked_uids, what):
    """The invariants after a restart: acknowledged means indexed and intact;
    rows and files match one to one; no temporaries."""
    rows = index_rows(srv.data_dir)
    missing = sorted(u for u in acked_uids if u not in rows)
    checks.ok(not missing, "%s: every acknowledged instance is in the index (%d)"
              % (what, len(acked_uids)), "%d missing, e.g. %s" % (len(missing), missing[:3]))
    bad, lacking = [], []
    for uid, (key, sha, size) in rows.items():
        try:
            with open(blob_path(srv.data_dir, key), "rb") as f:
                data = f.read()
        except OSError:
            lacking.append(uid)
            continue
        if hashlib.sha256(data).hexdigest() != sha or len(data) != size:
            bad.append(uid)
    checks.ok(not lacking, "%s: no index row lacks its file" % what, lacking[:3])
    checks.ok(not bad, "%s: every file matches its row's SHA-256 and size" % what, bad[:3])
    keys, temps = walk_blobs(os.path.join(srv.data_dir, "files"))
    row_keys = {k for k, _, _ in rows.values()}
    checks.ok(keys == row_keys, "%s: every file on disk belongs to a row" % what,
              "%d files without a row" % len(keys - row_keys))
    checks.ok(not temps, "%s: files/tmp is empty" % what, temps[:5])
    return rows


def echo_ok(port, what):
    r = h.run(["echoscu", "-to", "10", "-aec", "PACSD", "127.0.0.1", str(port)], timeout=30)
    checks.ok(r.returncode == 0, "%s: echoscu" % what, r.stderr[-300:])


def main():
    t0 = time.time()
    gen_dir = tempfile.mkdtemp(prefix="crash-in-")
    srv = None
    try:
        files = generate(gen_dir)
        paths = list(files)
        log("generated %d instances in %.1f s" % (N, time.time() - t0))
        srv = h.Pacsd(config={"dicom": {"duplicates": "replace"}})
        acked_all = set()
        for rnd, (kill_after, delay) in enumerate(ROUNDS, 1):
            what = "round %d (kill after %d acks)" % (rnd, kill_after)
            t1 = time.time()
            acked, failed, rc, killed = storescu(srv.port, paths, kill_after, delay, srv)
            log("%s: %d acknowledged, %d failures, storescu exit %d, %.1f s"
                % (what, len(acked), len(failed), rc, time.time() - t1))
            checks.ok(killed, "%s: pacsd killed mid-transfer" % what,
                      "only %d acknowledgements" % len(acked))
            checks.ok(len(acked) < N, "%s: the kill interrupted storescu" % what,
                      "all %d acknowledged" % len(acked))
            checks.eq(failed, [], "%s: no failure status before the kill" % what)
            acked_all.update(files[f] for f in acked)

            keys_before, temps_before = walk_blobs(os.path.join(srv.data_dir, "files"))
            offset = os.path.getsize(srv.log_path)
            srv.restart()
            echo_ok(srv.port, what + ", restarted")
            with open(srv.log_path, "rb") as f:
                f.seek(offset)
                start_log = f.read().decode("utf-8", "replace")
            rows = check_store(srv, acked_all, what)
            row_keys = {k for k, _, _ in rows.values()}
            m = re.search(r"archive: (\d+) blobs checked, (\d+) orphans removed", start_log)
            checks.ok(m is not None, "%s: start-up logs its orphan check" % what)
            if m:
                checks.eq(int(m.group(1)), len(keys_before),
                          "%s: blobs checked = committed files before the restart" % what)
                checks.eq(int(m.group(2)), len(keys_before - row_keys),
                          "%s: orphans removed = files no row named" % what)
            m = re.search(r"removed (\d+) temporary files", start_log)
            checks.eq(int(m.group(1)) if m else 0, len(temps_before),
                      "%s: temporaries removed at start-up, as logged" % what)
            log("  before restart: %d files, %d temporaries; %d rows; orphans %d"
                % (len(keys_before), len(temps_before), len(rows), len(keys_before - row_keys)))

        # A last, uninterrupted round: everything arrives.
        acked, failed, rc, _ = storescu(srv.port, paths)
        checks.eq((len(acked), failed, rc), (N, [], 0), "final round: all %d stored" % N)
        check_store(srv, set(files.values()), "final round")
        checks.eq(len(index_rows(srv.data_dir)), N, "final round: %d instances indexed" % N)

        rc = srv.stop()
        checks.eq(rc, 0, "pacsd exits 0 on SIGTERM")
        bad = [ln for ln in srv.output().splitlines()
               if "Sanitizer" in ln or "runtime error:" in ln or "SUMMARY:" in ln]
        checks.ok(not bad, "no sanitizer report", "\n".join(bad[:10]))
    finally:
        if srv:
            srv.cleanup()
        shutil.rmtree(gen_dir, ignore_errors=True)
    log("%.1f s" % (time.time() - t0))
    checks.finish()


if __name__ == "__main__":
    main()
