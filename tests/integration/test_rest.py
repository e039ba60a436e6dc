#!/usr/bin/python3
"""The Orthanc-compatible REST API (docs/rest.md), beside a real Orthanc 1.10.

One pacsd and one Orthanc get the same files (pydicom's test files and a
small generated study), through POST /instances on both:
- resource ids equal Orthanc's at every level (POST answers, lists,
  details, parents and children, /tools/lookup, /tools/find, /changes);
- JSON shapes: the same keys for the same resource; MainDicomTags values
  equal wherever both have a value (pacsd omits values that are empty in
  the file, and has no series-level ImageOrientationPatient: docs/rest.md);
  /tags and /simplified-tags have the same tags, names and types as
  Orthanc's, string values equal (numbers compared as numbers);
- /statistics counts and sizes equal; /instances/{id}/file is the uploaded
  file byte for byte;
- DELETE at each level: RemainingAncestor equal to Orthanc's, rows and
  files (data_dir/files) gone, Deleted changes logged;
- /changes pages with since/limit, Done and Last, and is the same after a
  restart;
- errors: unknown ids 404, bad JSON 400, bad parameters 400, a bad upload
  400 with nothing stored, an upload over dicom.max_message_size 413;
  dicom.duplicates=keep answers AlreadyStored;
- /app/explorer.html with its Content-Security-Policy;
- POST /instances of every file of the pydicom corpus: 200 (and the same
  bytes back) or 400, and a 400 stores nothing;
- pacsd exits 0 with no sanitizer report.

Run with Debian's /usr/bin/python3; $PACSD names the binary. Ends with
"N passed, N failed".
"""
import glob
import http.client
import io
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Checks, Orthanc, Pacsd  # noqa: E402

import pydicom  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

CORPUS = os.environ.get("PYDICOM_TEST_FILES",
                        "/usr/lib/python3/dist-packages/pydicom/data/test_files")
FILES = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm", "test-SR.dcm"]
LEVELS = ["patients", "studies", "series", "instances"]

c = Checks()


def request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    conn.close()
    return r.status, hdrs, data


def jrequest(port, method, path, body=None):
    if body is not None and not isinstance(body, (bytes, bytearray)):
        body = json.dumps(body).encode()
    st, hdrs, data = request(port, method, path, body)
    try:
        return st, json.loads(data) if data else None
    except ValueError:
        return st, data


def read(name):
    with open(os.path.join(CORPUS, name), "rb") as f:
        return f.read()


def generated_study():
    """Two series of CT_small copies in one new study: 3 + 1 instances."""
    ds = pydicom.dcmread(os.path.join(CORPUS, "CT_small.dcm"))
    ds.PatientID = "REST-GEN"
    ds.StudyInstanceUID = generate_uid()
    out = []
    for series, n in ((generate_uid(), 3), (generate_uid(), 1)):
        for k in range(n):
            ds.SeriesInstanceUID = series
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.InstanceNumber = k + 1
            b = io.BytesIO()
            ds.save_as(b, write_like_original=True)
            out.append(b.getvalue())
    return out


def blob_files(p):
    n = 0
    for root, dirs, files in os.walk(os.path.join(p.data_dir, "files")):
        rel = os.path.relpath(root, os.path.join(p.data_dir, "files"))
        if rel.split(os.sep)[0] in ("tmp", "he"):
            continue
        n += len(files)
    return n


def same_number(a, b):
    try:
        return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(a)))
    except ValueError:
        return False


def values_match(a, b):
    if a == b:
        return True
    if isinstance(a, str) and isinstance(b, str):
        pa, pb = a.split("\\"), b.split("\\")
        return len(pa) == len(pb) and all(x == y or same_number(x, y) for x, y in zip(pa, pb))
    return False


def private(key):
    return "," in key and int(key.split(",")[0], 16) % 2 == 1


# Orthanc shows only the first value of a multi-valued AT; pacsd's metadata
# is UTF-8, so a converted file says ISO_IR 192 (docs/rest.md).
TAGS_DIFFER = {"0028,0009", "FrameIncrementPointer", "0008,0005", "SpecificCharacterSet"}


def compare_tags(ours, theirs, what, simplified=False):
    """Same tags, names, types; values equal as text or as numbers. Orthanc
    names private tags from its private dictionaries, pacsd does not (it
    keys them "gggg,eeee"): in the simplified format only public tags are
    compared."""
    if simplified:
        c.eq(sorted(k for k in ours if not private(k)),
             sorted(k for k in theirs if k in ours), what + ": same public tags")
    else:
        c.eq(sorted(ours), sorted(theirs), what + ": same tags")
    bad = []
    for k in set(ours) & set(theirs):
        if k in TAGS_DIFFER:
            continue
        a, b = ours[k], theirs[k]
        if not simplified and private(k):
            a = dict(a, Name=b.get("Name"))
        if simplified:
            if isinstance(a, list) and isinstance(b, list):
                if len(a) != len(b):
                    bad.append(k)
                continue
            if not values_match(a, b):
                bad.append((k, a, b))
            continue
        if a.get("Name") != b.get("Name") or a.get("Type") != b.get("Type"):
            bad.append((k, a.get("Name"), a.get("Type"), b.get("Name"), b.get("Type")))
        elif a["Type"] == "String" and not values_match(a["Value"], b["Value"]):
            bad.append((k, a["Value"], b["Value"]))
        elif a["Type"] == "Sequence" and len(a["Value"]) != len(b["Value"]):
            bad.append((k, "items", len(a["Value"]), len(b["Value"])))
    c.ok(not bad, what + ": same names, types, values", bad[:5])


# Series-level ImageOrientationPatient is an instance-level main tag in
# pacsd's index (docs/rest.md).
NOT_AT_LEVEL = {"Series": {"ImageOrientationPatient"}}


def compare_entity(ours, theirs, what):
    c.eq(sorted(ours), sorted(theirs), what + ": same keys")
    for k in ("ID", "Type", "ParentPatient", "ParentStudy", "ParentSeries", "FileSize",
              "IndexInSeries", "ExpectedNumberOfInstances", "Status"):
        if k in theirs:
            c.eq(ours.get(k), theirs[k], "%s: %s" % (what, k))
    for k in ("Studies", "Series", "Instances"):
        if k in theirs:
            c.eq(sorted(ours.get(k) or []), sorted(theirs[k]), "%s: %s" % (what, k))
    for tk in ("MainDicomTags", "PatientMainDicomTags"):
        if tk not in theirs:
            continue
        mt, ot = ours.get(tk, {}), theirs[tk]
        skip = NOT_AT_LEVEL.get(theirs.get("Type"), set()) if tk == "MainDicomTags" else set()
        want = {k for k, v in ot.items() if v != "" and k not in skip}
        c.ok(want <= set(mt), "%s: %s has Orthanc's non-empty tags" % (what, tk),
             sorted(want - set(mt)))
        c.ok(set(mt) <= set(ot), "%s: %s has no tag Orthanc lacks" % (what, tk),
             sorted(set(mt) - set(ot)))
        diff = [(k, mt[k], ot[k]) for k in set(mt) & set(ot) if not values_match(mt[k], ot[k])]
        c.ok(not diff, "%s: %s values" % (what, tk), diff)


def main():
    p = Pacsd()
    o = Orthanc()
    P, O = p.http_port, o.http_port

    # --- /system, /app/explorer.html ---------------------------------------------
    st, ours = jrequest(P, "GET", "/system")
    _, theirs = jrequest(O, "GET", "/system")
    c.eq(st, 200, "/system")
    c.eq(sorted(ours), sorted(theirs), "/system: Orthanc's keys")
    c.eq((ours["Name"], ours["DicomAet"], ours["DicomPort"], ours["HttpPort"]),
         ("pacsd", p.aet, p.port, P), "/system: values")
    c.eq(ours["DatabaseVersion"], 2, "/system: index schema version")
    st, hdrs, body = request(P, "GET", "/app/explorer.html")
    c.eq(st, 200, "explorer.html")
    c.ok(hdrs.get("content-type", "").startswith("text/html"), "explorer.html: text/html")
    csp = hdrs.get("content-security-policy", "")
    c.ok("default-src 'none'" in csp and "frame-ancestors 'none'" in csp,
         "explorer.html: strict CSP", csp)
    c.ok(b"/tools/find" in body, "explorer.html lists the API")

    # --- uploads: the same ids as Orthanc ------------------------------------------
    blobs = {name: read(name) for name in FILES}
    gen = generated_study()
    uploads = list(blobs.values()) + gen
    ids = []
    for k, data in enumerate(uploads):
        st, ours = jrequest(P, "POST", "/instances", data)
        _, theirs = jrequest(O, "POST", "/instances", data)
        c.eq(st, 200, "POST /instances #%d" % k)
        if st != 200:
            print(ours)
            continue
        c.eq(sorted(ours), sorted(theirs), "POST #%d: keys" % k)
        for key in ("ID", "ParentPatient", "ParentStudy", "ParentSeries", "Path", "Status"):
            c.eq(ours.get(key), theirs.get(key), "POST #%d: %s equals Orthanc's" % (k, key))
        ids.append(ours["ID"])
    st, again = jrequest(P, "POST", "/instances", blobs["CT_small.dcm"])
    c.eq((st, again["Status"], again["ID"]), (200, "Success", ids[0]),
         "POST again replaces (dicom.duplicates=replace)")

    # --- statistics, lists -----------------------------------------------------------
    _, ours = jrequest(P, "GET", "/statistics")
    _, theirs = jrequest(O, "GET", "/statistics")
    c.eq(ours, theirs, "/statistics equals Orthanc's")
    for lvl in LEVELS:
        _, ours = jrequest(P, "GET", "/" + lvl)
        _, theirs = jrequest(O, "GET", "/" + lvl)
        c.eq(sorted(ours), sorted(theirs), "/%s ids equal Orthanc's" % lvl)
        _, page = jrequest(P, "GET", "/%s?since=1&limit=2" % lvl)
        c.eq(page, ours[1:3], "/%s?since=1&limit=2" % lvl)
        _, ours_x = jrequest(P, "GET", "/%s?expand" % lvl)
        _, theirs_x = jrequest(O, "GET", "/%s?expand" % lvl)
        c.eq([e["ID"] for e in ours_x], ours, "/%s?expand: same order as the ids" % lvl)
        byid = {e["ID"]: e for e in theirs_x}
        for e in ours_x:
            compare_entity(e, byid[e["ID"]], "/%s?expand %s" % (lvl, e["ID"][:8]))
            st, one = jrequest(P, "GET", "/%s/%s" % (lvl, e["ID"]))
            c.eq(st, 200, "GET /%s/{id}" % lvl)
            if lvl != "instances":
                one.pop("IsStable", None), e.pop("IsStable", None)
            c.eq(one, e, "GET /%s/{id} equals its ?expand entry" % lvl)
        st, _ = jrequest(P, "GET", "/%s?limit=x" % lvl)
        c.eq(st, 400, "/%s?limit=x -> 400" % lvl)

    # --- file and tags -----------------------------------------------------------------
    for k, data in enumerate(uploads[:len(FILES)]):
        st, hdrs, body = request(P, "GET", "/instances/%s/file" % ids[k])
        c.eq((st, hdrs.get("content-type")), (200, "application/dicom"), "file #%d" % k)
        c.ok(body == data, "file #%d: the uploaded bytes" % k, "%d vs %d" % (len(body), len(data)))
        _, ours = jrequest(P, "GET", "/instances/%s/tags" % ids[k])
        _, theirs = jrequest(O, "GET", "/instances/%s/tags" % ids[k])
        compare_tags(ours, theirs, "tags %s" % FILES[k])
        _, ours = jrequest(P, "GET", "/instances/%s/simplified-tags" % ids[k])
        _, theirs = jrequest(O, "GET", "/instances/%s/simplified-tags" % ids[k])
        compare_tags(ours, theirs, "simplified-tags %s" % FILES[k], simplified=True)
        _, simp = jrequest(P, "GET", "/instances/%s/tags?simplify" % ids[k])
        c.eq(simp, ours, "tags?simplify equals simplified-tags")

    # --- lookup, find ------------------------------------------------------------------
    ct = pydicom.dcmread(io.BytesIO(blobs["CT_small.dcm"]), stop_before_pixels=True)
    for uid in (ct.PatientID, ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID):
        st, ours = jrequest(P, "POST", "/tools/lookup", uid.encode())
        _, theirs = jrequest(O, "POST", "/tools/lookup", uid.encode())
        c.eq((st, ours), (200, theirs), "/tools/lookup %s" % uid)
    st, ours = jrequest(P, "POST", "/tools/lookup", b"1.2.3.4.5.nothing")
    c.eq((st, ours), (200, []), "/tools/lookup of an unknown UID")
    st, _ = jrequest(P, "POST", "/tools/lookup", b"")
    c.eq(st, 400, "/tools/lookup without a body -> 400")

    finds = [
        {"Level": "Study", "Query": {"PatientName": "CompressedSamples*"}},
        {"Level": "Series", "Query": {"Modality": "CT"}},
        {"Level": "Instance", "Query": {}},
        {"Level": "Patient", "Query": {"PatientID": "REST-GEN"}},
        {"Level": "Study", "Query": {"StudyDate": "20040101-20041231"}},
        {"Level": "Instance", "Query": {"0020,000e": ct.SeriesInstanceUID}},
    ]
    for q in finds:
        st, ours = jrequest(P, "POST", "/tools/find", q)
        _, theirs = jrequest(O, "POST", "/tools/find", q)
        c.eq(st, 200, "/tools/find %s" % json.dumps(q))
        c.eq(sorted(ours or []), sorted(theirs), "/tools/find %s equals Orthanc's" % json.dumps(q))
        qx = dict(q, Expand=True)
        _, ours_x = jrequest(P, "POST", "/tools/find", qx)
        _, theirs_x = jrequest(O, "POST", "/tools/find", qx)
        byid = {e["ID"]: e for e in theirs_x}
        c.eq(sorted(e["ID"] for e in ours_x), sorted(byid), "/tools/find Expand ids")
        for e in ours_x:
            if e["ID"] in byid:
                compare_entity(e, byid[e["ID"]], "find Expand %s" % e["ID"][:8])
    _, all_inst = jrequest(P, "POST", "/tools/find", {"Level": "Instance", "Query": {}})
    _, lim = jrequest(P, "POST", "/tools/find",
                      {"Level": "Instance", "Query": {}, "Limit": 2, "Since": 1})
    c.eq(lim, all_inst[1:3], "/tools/find Limit and Since")
    for bad in (b"{bad", b"[]", json.dumps({"Level": "Nope", "Query": {}}).encode(),
                json.dumps({"Level": "Study"}).encode(),
                json.dumps({"Level": "Study", "Query": {"NoSuchKeyword": "x"}}).encode(),
                json.dumps({"Level": "Study", "Query": {"PatientName": 3}}).encode(),
                json.dumps({"Level": "Study", "Query": {}, "Limit": "x"}).encode()):
        st, err = jrequest(P, "POST", "/tools/find", bad)
        c.ok(st == 400 and isinstance(err, dict) and "error" in err,
             "/tools/find %r -> 400 JSON" % bad[:40], (st, err))

    # --- changes ---------------------------------------------------------------------------
    _, ours = jrequest(P, "GET", "/changes?limit=10000")
    _, theirs = jrequest(O, "GET", "/changes?limit=10000")
    key = lambda ch: (ch["ChangeType"], ch["ResourceType"], ch["ID"], ch["Path"])  # noqa: E731
    n = len(theirs["Changes"])
    c.eq([key(x) for x in ours["Changes"][:n]], [key(x) for x in theirs["Changes"]],
         "/changes: the same changes as Orthanc, in the same order")
    # The replaced CT_small: pacsd logs a NewInstance, Orthanc nothing.
    c.eq([key(x)[:3] for x in ours["Changes"][n:]], [("NewInstance", "Instance", ids[0])],
         "/changes: a replaced instance is a NewInstance")
    c.eq(sorted(ours["Changes"][0]), sorted(theirs["Changes"][0]), "/changes: entry keys")
    c.eq((ours["Done"], ours["Last"]), (True, ours["Changes"][-1]["Seq"]), "/changes Done, Last")
    seqs = [x["Seq"] for x in ours["Changes"]]
    c.ok(seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "/changes: increasing Seq")
    _, page = jrequest(P, "GET", "/changes?since=%d&limit=3" % seqs[1])
    c.eq(([x["Seq"] for x in page["Changes"]], page["Done"], page["Last"]),
         (seqs[2:5], False, seqs[4]), "/changes since/limit page")
    _, empty = jrequest(P, "GET", "/changes?since=%d" % (seqs[-1] + 100))
    c.eq((empty["Changes"], empty["Done"], empty["Last"]), ([], True, seqs[-1]),
         "/changes past the end")
    for bad in ("limit=0", "limit=abc", "since=-1", "limit=10001"):
        st, _ = jrequest(P, "GET", "/changes?" + bad)
        c.eq(st, 400, "/changes?%s -> 400" % bad)

    # --- errors ---------------------------------------------------------------------------
    for method, path in (("GET", "/instances/nope"), ("GET", "/studies/nope"),
                         ("GET", "/instances/nope/file"), ("GET", "/instances/nope/tags"),
                         ("GET", "/instances/nope/simplified-tags"),
                         ("DELETE", "/series/nope"), ("GET", "/patients/" + ids[0])):
        st, err = jrequest(P, method, path)
        c.ok(st == 404 and isinstance(err, dict) and err.get("status") == 404,
             "%s %s -> 404 JSON" % (method, path), (st, err))
    _, before = jrequest(P, "GET", "/statistics")
    files_before = blob_files(p)
    for name, body in (("garbage", b"garbage"), ("empty", b""),
                       ("truncated", blobs["CT_small.dcm"][:3000])):
        st, err = jrequest(P, "POST", "/instances", body)
        c.ok(st == 400 and isinstance(err, dict) and "error" in err,
             "POST /instances %s -> 400 JSON" % name, (st, err))
    _, after = jrequest(P, "GET", "/statistics")
    c.eq(after, before, "bad uploads store nothing (index)")
    c.eq(blob_files(p), files_before, "bad uploads store nothing (files)")

    # --- delete at each level ---------------------------------------------------------------
    gen_ids = ids[len(FILES):]
    _, inst0 = jrequest(P, "GET", "/instances/" + gen_ids[0])
    _, series0 = jrequest(P, "GET", "/series/" + inst0["ParentSeries"])
    _, study = jrequest(P, "GET", "/studies/" + series0["ParentStudy"])
    last_before = jrequest(P, "GET", "/changes?limit=10000")[1]["Last"]
    files0 = blob_files(p)

    def delete_both(path, what):
        st, ours = jrequest(P, "DELETE", path)
        _, theirs = jrequest(O, "DELETE", path)
        c.eq((st, ours), (200, theirs), "DELETE %s: RemainingAncestor as Orthanc's" % what)
        st, _ = jrequest(P, "GET", path)
        c.eq(st, 404, "DELETE %s: gone" % what)
        st, _ = jrequest(P, "DELETE", path)
        c.eq(st, 404, "DELETE %s again -> 404" % what)
        return ours

    r = delete_both("/instances/" + gen_ids[0], "an instance")
    c.eq(r["RemainingAncestor"]["Type"], "Series", "instance: the series remains")
    c.eq(blob_files(p), files0 - 1, "instance: its file is gone")
    r = delete_both("/series/" + inst0["ParentSeries"], "a series")
    c.eq(r["RemainingAncestor"]["Type"], "Study", "series: the study remains")
    c.eq(blob_files(p), files0 - 3, "series: its files are gone")
    r = delete_both("/studies/" + study["ID"], "a study")
    c.eq(r["RemainingAncestor"], None, "study: its patient had no other study")
    c.eq(blob_files(p), files0 - 4, "study: its files are gone")
    st, _ = jrequest(P, "GET", "/patients/" + study["ParentPatient"])
    c.eq(st, 404, "the emptied patient is gone too")
    series1 = jrequest(P, "GET", "/instances/" + ids[1])[1]["ParentSeries"]
    study1 = jrequest(P, "GET", "/series/" + series1)[1]["ParentStudy"]
    patient1 = jrequest(P, "GET", "/studies/" + study1)[1]["ParentPatient"]
    r = delete_both("/patients/" + patient1, "a patient")
    c.eq(r["RemainingAncestor"], None, "patient: nothing remains")
    _, ours = jrequest(P, "GET", "/statistics")
    _, theirs = jrequest(O, "GET", "/statistics")
    c.eq(ours, theirs, "/statistics after deletes equals Orthanc's")
    _, ch = jrequest(P, "GET", "/changes?since=%d&limit=10000" % last_before)
    deleted = [(x["ResourceType"], x["ID"]) for x in ch["Changes"] if x["ChangeType"] == "Deleted"]
    c.ok(("Instance", gen_ids[0]) in deleted and ("Series", inst0["ParentSeries"]) in deleted
         and ("Study", study["ID"]) in deleted and ("Patient", study["ParentPatient"]) in deleted,
         "Deleted changes for each removed resource", deleted)
    c.eq(len(deleted), 1 + 3 + 3 + 5, "one Deleted change per removed row")

    # --- the change log survives a restart ------------------------------------------------
    _, log1 = jrequest(P, "GET", "/changes?limit=10000")
    c.eq(p.stop(), 0, "pacsd stops cleanly before the restart")
    p.restart()
    _, log2 = jrequest(P, "GET", "/changes?limit=10000")
    c.eq(log2, log1, "/changes is the same after a restart")
    st, again = jrequest(P, "POST", "/instances", gen[0])
    _, log3 = jrequest(P, "GET", "/changes?since=%d" % log1["Last"])
    c.ok(st == 200 and log3["Changes"] and log3["Changes"][0]["Seq"] > log1["Last"],
         "after a restart, new changes continue the sequence")
    o.cleanup()

    # --- upload limit and duplicate policy ---------------------------------------------------
    q = Pacsd(config={"dicom": {"max_message_size": 20000, "duplicates": "keep"}})
    Q = q.http_port
    st, err = jrequest(Q, "POST", "/instances", blobs["CT_small.dcm"])
    c.ok(st == 413 and isinstance(err, dict) and "error" in err,
         "POST over dicom.max_message_size -> 413 JSON", (st, err))
    ds = pydicom.dcmread(os.path.join(CORPUS, "CT_small.dcm"))
    del ds.PixelData
    b = io.BytesIO()
    ds.save_as(b, write_like_original=True)
    small = b.getvalue()
    st1, r1 = jrequest(Q, "POST", "/instances", small)
    st2, r2 = jrequest(Q, "POST", "/instances", small)
    c.eq((st1, r1.get("Status"), st2, r2.get("Status"), r2.get("ID")),
         (200, "Success", 200, "AlreadyStored", ids[0]), "dicom.duplicates=keep: AlreadyStored")
    _, qs = jrequest(Q, "GET", "/statistics")
    c.eq((qs["CountInstances"], blob_files(q)), (1, 1), "the limit and the kept copy: one file")
    q.cleanup()

    # --- the pydicom corpus -----------------------------------------------------------------
    stored = refused = 0
    for path in sorted(glob.glob(os.path.join(CORPUS, "*.dcm"))):
        data = open(path, "rb").read()
        if len(data) > 8 * 1024 * 1024:
            continue
        _, before = jrequest(P, "GET", "/statistics")
        files_before = blob_files(p)
        st, body = jrequest(P, "POST", "/instances", data)
        name = os.path.basename(path)
        if st == 200:
            stored += 1
            st2, _, got = request(P, "GET", "/instances/%s/file" % body["ID"])
            c.ok(st2 == 200 and got == data, "corpus %s: stored bytes" % name)
        else:
            refused += 1
            c.ok(st == 400 and isinstance(body, dict) and "error" in body,
                 "corpus %s: 400 JSON" % name, (st, body))
            _, after = jrequest(P, "GET", "/statistics")
            c.ok(after == before and blob_files(p) == files_before,
                 "corpus %s: refused, nothing stored" % name)
    c.ok(stored > 20 and refused > 3, "corpus: %d stored, %d refused" % (stored, refused))
    for name in ("no_meta.dcm", "MR_truncated.dcm"):
        st, _ = jrequest(P, "POST", "/instances", read(name))
        c.eq(st, 400, "corpus %s -> 400" % name)
    rc = p.stop()
    log = p.output()
    c.eq(rc, 0, "pacsd exits 0 on SIGTERM")
    c.ok("Sanitizer" not in log and "runtime error" not in log, "no sanitizer report",
         log[-2000:])
    p.cleanup()
    c.finish()


if __name__ == "__main__":
    main()
