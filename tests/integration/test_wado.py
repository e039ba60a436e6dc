#!/usr/bin/python3
"""WADO-RS and WADO-URI (docs/wado.md) against files stored over DIMSE.

pydicom's test files are stored with `pacsd store` (C-STORE), then fetched
over HTTP with http.client and checked against three references: the blob
under data_dir (the index names it), the file that was sent, and pydicom's
own reading of that file:
- instances at study, series and instance level: one part per instance,
  part headers (Content-Type with transfer-syntax, Content-Length), bytes
  identical to the blob and, past the meta group, to the file sent;
- transfer-syntax negotiation: stored syntax by default and for
  transfer-syntax=*, Explicit <-> Implicit VR transcoding (pydicom reads the
  result back: same elements, same pixels), 406 with a JSON error when one
  instance of a series cannot be converted, q values, a bad Accept (400);
- metadata at every level equals the JSON stored in the index, with each
  BulkDataURI made absolute, and every BulkDataURI resolves;
- frames of native single- and multi-frame images (Explicit, Implicit, Big
  Endian, Deflated, 1-bit) equal pydicom's pixel_array bytes; frames of RLE,
  JPEG and JPEG 2000 data equal pydicom.encaps.generate_pixel_data_frame,
  with their media types; a generated 3-frame JPEG of two fragments per
  frame, with and without a Basic Offset Table, gives its frames back; octet-stream for compressed frames only with
  transfer-syntax=*;
- bulk data with Range (206, suffix, open, 416, ignored invalid/multiple
  ranges), multipart bulk, nested bulk data (a waveform in a sequence);
- WADO-URI, with transcoding and its 400/404/406 answers;
- errors: unknown and malformed UIDs, path traversal (.., %2e%2e, encoded
  slashes), bad frame lists, bad Range, bad Accept: clear JSON 4xx, and the
  server still serves afterwards;
- a generated 42 MB study streams without pacsd's peak memory growing by
  more than 16 MiB;
- concurrent retrieves on 12 connections all complete.

Run with Debian's /usr/bin/python3; $PACSD names the binary. Ends with
"N passed, N failed".
"""
import glob
import http.client
import json
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import threading
import zlib

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

import warnings  # noqa: E402

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from pydicom.encaps import generate_pixel_data_frame  # noqa: E402

checks = h.Checks()
# pydicom complains about a non-conformant UID in one test file; not ours.
warnings.simplefilter("ignore", UserWarning)
PYDICOM = os.environ.get("PYDICOM_TEST_FILES",
                         "/usr/lib/python3/dist-packages/pydicom/data/test_files")
EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
DEFLATED = "1.2.840.10008.1.2.1.99"

# Distinct SOP instances; SC_rgb_* share one study and series (RLE, JPEG
# and Explicit VR LE instances side by side).
FILES = ["CT_small.dcm", "MR_small_bigendian.dcm", "rtdose.dcm", "SC_rgb_rle_2frame.dcm",
         "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_small_odd.dcm", "JPEG2000.dcm", "image_dfl.dcm",
         "waveform_ecg.dcm", "liver_1frame.dcm"]

pacs = h.Pacsd()
PORT = pacs.http_port


def get(path, headers=None, method="GET"):
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    finally:
        c.close()


def multipart(ctype, body):
    """Parts of a multipart/related body: [(headers dict, bytes)]."""
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    if not m:
        raise ValueError("no boundary in %r" % ctype)
    delim = b"--" + m.group(1).encode()
    if not body.startswith(delim + b"\r\n"):
        raise ValueError("body does not start with the delimiter")
    if not body.endswith(delim + b"--\r\n"):
        raise ValueError("body does not end with the close delimiter")
    chunks = body[len(delim) + 2:-(len(delim) + 4)].split(b"\r\n" + delim + b"\r\n")
    chunks[-1] = chunks[-1][:-2]  # the CRLF before the close delimiter
    parts = []
    for c in chunks:
        head, _, data = c.partition(b"\r\n\r\n")
        hd = {}
        for line in head.decode().split("\r\n"):
            k, _, v = line.partition(":")
            hd[k.strip().lower()] = v.strip()
        parts.append((hd, data))
    return parts


def is_json_error(status, hdrs, body, want):
    try:
        j = json.loads(body)
    except ValueError:
        return False
    return (status == want and hdrs.get("content-type") == "application/json"
            and j.get("status") == want and bool(j.get("error")))


def expect_error(path, want, what, headers=None):
    st, hd, body = get(path, headers)
    checks.ok(is_json_error(st, hd, body, want), what, "%d %r" % (st, body[:200]))
    return body


# --- store ---------------------------------------------------------------------
paths = [os.path.join(PYDICOM, f) for f in FILES]
r = h.run([h.PACSD, "store", "-aec", pacs.aet, "127.0.0.1", str(pacs.port)] + paths)
checks.ok(r.returncode == 0, "pacsd store of the test files", r.stderr)

ds_of = {}
for f in FILES:
    d = pydicom.dcmread(os.path.join(PYDICOM, f))
    ds_of[f] = d
for f in FILES:
    checks.ok(sum(1 for g in FILES if ds_of[g].SOPInstanceUID == ds_of[f].SOPInstanceUID) == 1,
              "test files have distinct SOP instance UIDs: " + f)

db = sqlite3.connect("file:%s?mode=ro" % os.path.join(pacs.data_dir, "index.db"), uri=True)
rows = {}
for uid, key, ts, meta, off in db.execute(
        "SELECT sop_instance_uid, blob_key, transfer_syntax, metadata, ds_offset FROM instances"):
    rows[uid] = {"key": key, "ts": ts, "meta": meta, "ds_offset": off}
db.close()
checks.eq(len(rows), len(FILES), "instances in the index")


def blob(uid):
    key = rows[uid]["key"]
    found = glob.glob(os.path.join(pacs.data_dir, "files", "**", key), recursive=True)
    with open(found[0], "rb") as fp:
        return fp.read()


def url(f, tail=""):
    d = ds_of[f]
    return "/dicom-web/studies/%s/series/%s/instances/%s%s" % (
        d.StudyInstanceUID, d.SeriesInstanceUID, d.SOPInstanceUID, tail)


def file_dataset_bytes(path):
    """The bytes of a Part 10 file after its meta group."""
    with open(path, "rb") as fp:
        raw = fp.read()
    glen = int.from_bytes(raw[140:144], "little")
    return raw[144 + glen:]


# --- instances -----------------------------------------------------------------
for f in FILES:
    d = ds_of[f]
    uid = d.SOPInstanceUID
    st, hd, body = get(url(f))
    ok = checks.ok(st == 200, "instance %s: 200" % f, "%d %r" % (st, body[:200]))
    if not ok:
        continue
    ct = hd.get("content-type", "")
    checks.ok(ct.startswith('multipart/related; type="application/dicom"'),
              "instance %s: Content-Type" % f, ct)
    parts = multipart(ct, body)
    checks.eq(len(parts), 1, "instance %s: one part" % f)
    ph, data = parts[0]
    checks.eq(ph.get("content-type"), "application/dicom; transfer-syntax=" + rows[uid]["ts"],
              "instance %s: part Content-Type" % f)
    checks.eq(ph.get("content-length"), str(len(data)), "instance %s: part Content-Length" % f)
    checks.ok(data == blob(uid), "instance %s: bytes identical to the stored blob" % f)
    checks.eq(hd.get("content-length"), str(len(body)), "instance %s: response length" % f)
    if rows[uid]["ts"] == d.file_meta.TransferSyntaxUID:
        mine = data[rows[uid]["ds_offset"]:]
        sent = file_dataset_bytes(os.path.join(PYDICOM, f))
        if rows[uid]["ts"] == DEFLATED:  # the DIMSE path deflates anew: compare inflated
            mine, sent = zlib.decompress(mine, -15), zlib.decompress(sent, -15)
        checks.ok(mine == sent, "instance %s: data set identical to the file sent" % f)

# Series of three (RLE, JPEG, Explicit VR LE) and a study of one.
sc = ds_of["SC_rgb_rle_2frame.dcm"]
series_url = "/dicom-web/studies/%s/series/%s" % (sc.StudyInstanceUID, sc.SeriesInstanceUID)
st, hd, body = get(series_url)
parts = multipart(hd["content-type"], body) if st == 200 else []
got = sorted(pydicom.dcmread(pydicom.filebase.DicomBytesIO(p[1])).SOPInstanceUID for p in parts)
want = sorted(ds_of[f].SOPInstanceUID for f in FILES if f.startswith("SC_rgb"))
checks.eq(got, want, "series: every instance, once")
checks.ok(all(p[1] == blob(pydicom.dcmread(pydicom.filebase.DicomBytesIO(p[1])).SOPInstanceUID)
              for p in parts), "series: parts identical to their blobs")
ct_ds = ds_of["CT_small.dcm"]
st, hd, body = get("/dicom-web/studies/%s" % ct_ds.StudyInstanceUID)
parts = multipart(hd["content-type"], body) if st == 200 else []
checks.ok(len(parts) == 1 and parts[0][1] == blob(ct_ds.SOPInstanceUID), "study: its instance")
st, hd, body = get("/dicom-web/studies/%s" % sc.StudyInstanceUID)
parts = multipart(hd["content-type"], body) if st == 200 else []
checks.eq(len(parts), 3, "study of three instances: three parts")
st, hd, body = get(url("CT_small.dcm"), method="HEAD")
checks.ok(st == 200 and body == b"" and hd.get("content-type", "").startswith("multipart/"),
          "HEAD instance: headers, no body", "%d" % st)

# --- transfer syntax negotiation -------------------------------------------------
for acc in ['multipart/related; type="application/dicom"; transfer-syntax=*', "*/*",
            'multipart/related; type="application/dicom"',
            'application/dicom+json, multipart/related; type="application/dicom";q=0.5']:
    st, hd, body = get(url("rtdose.dcm"), {"Accept": acc})
    parts = multipart(hd["content-type"], body) if st == 200 else []
    checks.ok(len(parts) == 1 and parts[0][0]["content-type"].endswith("=" + IMPLICIT)
              and parts[0][1] == blob(ds_of["rtdose.dcm"].SOPInstanceUID),
              "Accept %r: stored syntax, stored bytes" % acc, "%d %r" % (st, body[:200]))


def check_transcoded(f, ts):
    acc = 'multipart/related; type="application/dicom"; transfer-syntax=' + ts
    st, hd, body = get(url(f), {"Accept": acc})
    if not checks.ok(st == 200, "transcode %s to %s: 200" % (f, ts), "%d %r" % (st, body[:300])):
        return
    checks.ok("transfer-syntax=" + ts in hd["content-type"], "transcode %s: response type" % f,
              hd["content-type"])
    # A converted instance's size is known only once converted: chunked.
    checks.ok(hd.get("transfer-encoding") == "chunked" and "content-length" not in hd,
              "transcode %s: chunked" % f, hd)
    parts = multipart(hd["content-type"], body)
    ph, data = parts[0]
    checks.eq(ph.get("content-type"), "application/dicom; transfer-syntax=" + ts,
              "transcode %s: part type" % f)
    got = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
    orig = ds_of[f]
    checks.eq(got.file_meta.TransferSyntaxUID, ts, "transcode %s: meta TransferSyntaxUID" % f)
    checks.eq(got.is_implicit_VR, ts == IMPLICIT, "transcode %s: VR encoding" % f)
    checks.ok(np.array_equal(got.pixel_array, orig.pixel_array), "transcode %s: same pixels" % f)
    same = all(got[e.tag].value == e.value for e in orig if e.tag != 0x7FE00010)
    checks.ok(same and len(got) == len(orig), "transcode %s: same elements" % f)


check_transcoded("rtdose.dcm", EXPLICIT)
check_transcoded("CT_small.dcm", IMPLICIT)
body = expect_error(series_url, 406, "series with a JPEG instance, Explicit VR LE asked: 406",
                    {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax='
                     + EXPLICIT})
checks.ok(b"cannot convert" in body, "406 says why", body)
expect_error(url("CT_small.dcm"), 406, "instance as application/json: 406",
             {"Accept": "application/json"})
expect_error(url("CT_small.dcm"), 406, "instance as multipart of image/jpeg: 406",
             {"Accept": 'multipart/related; type="image/jpeg"'})
expect_error(url("CT_small.dcm"), 400, "malformed Accept: 400", {"Accept": "dicom"})
expect_error(url("CT_small.dcm"), 400, "bad transfer-syntax in Accept: 400",
             {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1..2'})

# --- metadata ----------------------------------------------------------------------
base = "http://127.0.0.1:%d" % PORT


def absolute(f, stored_json):
    """The stored JSON with its BulkDataURIs made absolute."""
    prefix = base + url(f, "/")

    def walk(o):
        if isinstance(o, dict):
            return {k: (prefix + v if k == "BulkDataURI" and v.startswith("bulk/") else walk(v))
                    for k, v in o.items()}
        if isinstance(o, list):
            return [walk(x) for x in o]
        return o
    return walk(json.loads(stored_json))


for f in FILES:
    uid = ds_of[f].SOPInstanceUID
    st, hd, body = get(url(f, "/metadata"), {"Host": "127.0.0.1:%d" % PORT})
    if not checks.ok(st == 200, "metadata %s: 200" % f, "%d %r" % (st, body[:200])):
        continue
    checks.eq(hd.get("content-type"), "application/dicom+json", "metadata %s: type" % f)
    got = json.loads(body)
    checks.ok(isinstance(got, list) and len(got) == 1 and got[0] == absolute(f, rows[uid]["meta"]),
              "metadata %s: the stored JSON with absolute BulkDataURIs" % f)
    uris = re.findall(r'"BulkDataURI":\s*"([^"]+)"', body.decode())
    checks.ok(len(uris) > 0, "metadata %s: has BulkDataURIs" % f)
    for u in uris:
        checks.ok(u.startswith(base + url(f, "/bulk/")), "metadata %s: URI %s is absolute" % (f, u))
        st, hd, bb = get(u[len(base):])
        checks.ok(st == 200 and len(bb) > 0, "metadata %s: %s resolves" % (f, u[len(base):]),
                  "%d %r" % (st, bb[:200]))

st, hd, body = get(series_url + "/metadata")
got = json.loads(body) if st == 200 else []
checks.eq(sorted(x["00080018"]["Value"][0] for x in got), want, "series metadata: 3 instances")
st, hd, body = get("/dicom-web/studies/%s/metadata" % ct_ds.StudyInstanceUID,
                   {"Accept": "application/dicom+json"})
checks.ok(st == 200 and len(json.loads(body)) == 1, "study metadata", "%d" % st)
expect_error(url("CT_small.dcm", "/metadata"), 406, "metadata as XML: 406",
             {"Accept": "application/dicom+xml"})

# --- frames ------------------------------------------------------------------------


def native_frames(d):
    """Each frame as pydicom decodes it, in little-endian bytes."""
    arr = d.pixel_array
    n = int(d.get("NumberOfFrames", 1) or 1)
    if d.BitsAllocated == 1:
        flat = np.packbits(arr.astype(np.uint8).ravel(), bitorder="little").tobytes()
        size = d.Rows * d.Columns * d.SamplesPerPixel
        assert size % 8 == 0
        return [flat[i * size // 8:(i + 1) * size // 8] for i in range(n)]
    arr = arr.astype(arr.dtype.newbyteorder("<"))
    return [arr[i].tobytes() for i in range(n)] if n > 1 else [arr.tobytes()]


def frames_ok(f, lst, ctype, ts, acc=None):
    d = ds_of[f]
    st, hd, body = get(url(f, "/frames/" + ",".join(map(str, lst))),
                       {"Accept": acc} if acc else None)
    if not checks.ok(st == 200, "frames %s %s: 200" % (f, lst), "%d %r" % (st, body[:300])):
        return
    checks.ok(('type="%s"' % ctype) in hd["content-type"], "frames %s: response type" % f,
              hd["content-type"])
    parts = multipart(hd["content-type"], body)
    if ctype == "application/octet-stream" and not d.file_meta.TransferSyntaxUID.is_compressed:
        ref = native_frames(d)
    else:
        n = int(d.get("NumberOfFrames", 1) or 1)
        ref = list(generate_pixel_data_frame(d.PixelData, n))
    checks.eq(len(parts), len(lst), "frames %s: one part per frame" % f)
    for (ph, data), k in zip(parts, lst):
        checks.eq(ph.get("content-type"), "%s; transfer-syntax=%s" % (ctype, ts),
                  "frames %s #%d: part type" % (f, k))
        checks.ok(data == ref[k - 1], "frames %s #%d: bytes equal pydicom's frame" % (f, k),
                  "%d vs %d bytes" % (len(data), len(ref[k - 1])))


frames_ok("CT_small.dcm", [1], "application/octet-stream", EXPLICIT)
frames_ok("rtdose.dcm", [1, 3, 15, 2], "application/octet-stream", EXPLICIT)
frames_ok("MR_small_bigendian.dcm", [1], "application/octet-stream", EXPLICIT)
frames_ok("image_dfl.dcm", [1], "application/octet-stream", EXPLICIT)
frames_ok("liver_1frame.dcm", [1], "application/octet-stream", EXPLICIT)
frames_ok("SC_rgb_small_odd.dcm", [1], "application/octet-stream", EXPLICIT,
          'multipart/related; type="application/octet-stream"')
frames_ok("SC_rgb_rle_2frame.dcm", [2, 1], "image/dicom-rle", "1.2.840.10008.1.2.5")
frames_ok("SC_rgb_jpeg_dcmtk.dcm", [1], "image/jpeg", "1.2.840.10008.1.2.4.50")
frames_ok("JPEG2000.dcm", [1], "image/jp2", "1.2.840.10008.1.2.4.91",
          'multipart/related; type="image/jp2"')
frames_ok("SC_rgb_rle_2frame.dcm", [1, 2], "application/octet-stream", "1.2.840.10008.1.2.5",
          'multipart/related; type="application/octet-stream"; transfer-syntax=*')
frames_ok("rtdose.dcm", [5], "application/octet-stream", IMPLICIT,
          'multipart/related; type="application/octet-stream"; transfer-syntax=' + IMPLICIT)
expect_error(url("SC_rgb_rle_2frame.dcm", "/frames/1"), 406,
             "compressed frames as plain octet-stream: 406",
             {"Accept": 'multipart/related; type="application/octet-stream"'})
expect_error(url("CT_small.dcm", "/frames/1"), 406, "native frames as image/jpeg: 406",
             {"Accept": 'multipart/related; type="image/jpeg"'})
for bad in ["0", "1,,2", "a", "1-3", "-1", "1,", ",1", "1.5", "9999999999", "1%2C2x"]:
    expect_error(url("rtdose.dcm", "/frames/" + bad), 400, "frame list %r: 400" % bad)
expect_error(url("rtdose.dcm", "/frames/16"), 404, "frame 16 of 15: 404")
expect_error(url("rtdose.dcm", "/frames/1,16"), 404, "frames 1,16 of 15: 404")
expect_error(url("waveform_ecg.dcm", "/frames/1"), 404, "frames of an instance without pixels")

# Generated multi-frame JPEG, two fragments per frame, with and without a
# Basic Offset Table: frames found by the table, then by the JPEG markers.
jp = ds_of["SC_rgb_jpeg_dcmtk.dcm"]
jframe = next(generate_pixel_data_frame(jp.PixelData, 1))
jframes = [jframe, bytes(jframe), bytes(jframe)]
gen = tempfile.mkdtemp(prefix="wado-jpeg-")
gen_ds = {}
gen_series = pydicom.uid.generate_uid()
for has_bot in (True, False):
    d = pydicom.dcmread(os.path.join(PYDICOM, "SC_rgb_jpeg_dcmtk.dcm"))
    d.SeriesInstanceUID = gen_series
    d.SOPInstanceUID = pydicom.uid.generate_uid()
    d.file_meta.MediaStorageSOPInstanceUID = d.SOPInstanceUID
    d.NumberOfFrames = 3
    d.PixelData = pydicom.encaps.encapsulate(jframes, fragments_per_frame=2, has_bot=has_bot)
    d["PixelData"].is_undefined_length = True
    path = os.path.join(gen, "bot%d.dcm" % has_bot)
    d.save_as(path)
    gen_ds[has_bot] = d
r = h.run([h.PACSD, "store", "-aec", pacs.aet, "127.0.0.1", str(pacs.port), gen])
checks.ok(r.returncode == 0, "store of generated multi-frame JPEG", r.stderr)
want_frame = jframe + (b"\0" if len(jframe) % 2 else b"")
for has_bot, d in gen_ds.items():
    u = "/dicom-web/studies/%s/series/%s/instances/%s/frames/3,1,2" % (
        d.StudyInstanceUID, d.SeriesInstanceUID, d.SOPInstanceUID)
    st, hd, body = get(u)
    parts = multipart(hd["content-type"], body) if st == 200 else []
    checks.ok(len(parts) == 3 and all(p[1] == want_frame for p in parts)
              and all(p[0]["content-type"].startswith("image/jpeg") for p in parts),
              "JPEG frames, 2 fragments each, %s offset table" % ("with" if has_bot else "no"),
              "%d %r" % (st, body[:200]))
shutil.rmtree(gen, ignore_errors=True)

# --- bulk data ---------------------------------------------------------------------
ct_pixels = ds_of["CT_small.dcm"].PixelData
N = len(ct_pixels)
bulk = url("CT_small.dcm", "/bulk/7FE00010")
st, hd, body = get(bulk)
checks.ok(st == 200 and body == ct_pixels and hd.get("content-type") == "application/octet-stream"
          and hd.get("accept-ranges") == "bytes", "bulk Pixel Data: the value", "%d" % st)
for rng, first, last in [("bytes=0-99", 0, 99), ("bytes=-10", N - 10, N - 1),
                         ("bytes=100-", 100, N - 1), ("bytes=10-999999", 10, N - 1),
                         ("bytes=-999999", 0, N - 1)]:
    st, hd, body = get(bulk, {"Range": rng})
    checks.ok(st == 206 and body == ct_pixels[first:last + 1]
              and hd.get("content-range") == "bytes %d-%d/%d" % (first, last, N),
              "Range %s: 206 and the bytes" % rng, "%d %r" % (st, hd.get("content-range")))
for rng in ["bytes=%d-" % N, "bytes=%d-%d" % (N + 5, N + 9), "bytes=-0"]:
    st, hd, body = get(bulk, {"Range": rng})
    checks.ok(is_json_error(st, hd, body, 416) and hd.get("content-range") == "bytes */%d" % N,
              "Range %s: 416" % rng, "%d %r" % (st, body[:100]))
for rng in ["bytes=5-2", "bytes=0-1,4-5", "items=0-1", "bytes=x-y"]:
    st, hd, body = get(bulk, {"Range": rng})
    checks.ok(st == 200 and body == ct_pixels, "Range %s ignored: 200 whole value" % rng, st)
st, hd, body = get(bulk, {"Accept": 'multipart/related; type="application/octet-stream"'})
parts = multipart(hd["content-type"], body) if st == 200 else []
checks.ok(len(parts) == 1 and parts[0][1] == ct_pixels
          and parts[0][0]["content-type"] == "application/octet-stream",
          "bulk as multipart: one part", st)
expect_error(bulk, 406, "bulk as image/png: 406", {"Accept": "image/png"})
# Big Endian stored pixels come back little endian.
mr = ds_of["MR_small_bigendian.dcm"]
st, hd, body = get(url("MR_small_bigendian.dcm", "/bulk/7FE00010"))
checks.ok(st == 200 and body == mr.pixel_array.astype("<i2").tobytes(),
          "bulk of Big Endian pixels: little endian", st)
# Encapsulated Pixel Data: its frames.
st, hd, body = get(url("SC_rgb_rle_2frame.dcm", "/bulk/7FE00010"))
parts = multipart(hd["content-type"], body) if st == 200 else []
rle = list(generate_pixel_data_frame(ds_of["SC_rgb_rle_2frame.dcm"].PixelData, 2))
checks.ok([p[1] for p in parts] == rle, "bulk of encapsulated Pixel Data: its frames", st)
# Nested: the waveform samples inside WaveformSequence.
wf = ds_of["waveform_ecg.dcm"].WaveformSequence
st, hd, body = get(url("waveform_ecg.dcm", "/bulk/54000100/0/54001010"))
checks.ok(st == 200 and body == wf[0].WaveformData, "nested bulk data: waveform item 0", st)
st, hd, body = get(url("waveform_ecg.dcm", "/bulk/54000100/1/54001010"), {"Range": "bytes=0-3"})
checks.ok(st == 206 and body == wf[1].WaveformData[:4], "nested bulk data with Range", st)
expect_error(url("waveform_ecg.dcm", "/bulk/54000100/7/54001010"), 404, "bulk: no such item")
expect_error(url("CT_small.dcm", "/bulk/7FE00011"), 404, "bulk: no such element")
expect_error(url("CT_small.dcm", "/bulk/ZZ"), 400, "bulk: not a tag")
expect_error(url("waveform_ecg.dcm", "/bulk/54000100/01/54001010"), 400, "bulk: bad item index")

# --- WADO-URI ----------------------------------------------------------------------


def wado_uri(f, **extra):
    d = ds_of[f]
    q = {"requestType": "WADO", "studyUID": d.StudyInstanceUID,
         "seriesUID": d.SeriesInstanceUID, "objectUID": d.SOPInstanceUID}
    q.update(extra)
    q = {k: v for k, v in q.items() if v is not None}
    return "/wado?" + "&".join("%s=%s" % (k, v.replace("/", "%2F").replace("+", "%2B"))
                               for k, v in q.items())


for ct in ["application/dicom", None, "application/dicom,image/jpeg;q=0.5"]:
    st, hd, body = get(wado_uri("CT_small.dcm", contentType=ct))
    checks.ok(st == 200 and hd.get("content-type") == "application/dicom"
              and body == blob(ct_ds.SOPInstanceUID), "WADO-URI contentType=%s" % ct, st)
st, hd, body = get(wado_uri("rtdose.dcm", contentType="application/dicom",
                            transferSyntax=EXPLICIT))
got = pydicom.dcmread(pydicom.filebase.DicomBytesIO(body)) if st == 200 else None
checks.ok(got is not None and got.file_meta.TransferSyntaxUID == EXPLICIT
          and np.array_equal(got.pixel_array, ds_of["rtdose.dcm"].pixel_array),
          "WADO-URI transferSyntax: transcoded", st)
st, hd, body = get(wado_uri("rtdose.dcm", transferSyntax=IMPLICIT))
checks.ok(st == 200 and body == blob(ds_of["rtdose.dcm"].SOPInstanceUID),
          "WADO-URI transferSyntax = stored: stored bytes", st)
expect_error(wado_uri("SC_rgb_jpeg_dcmtk.dcm", transferSyntax=EXPLICIT), 406,
             "WADO-URI: JPEG to Explicit VR LE: 406")
expect_error(wado_uri("CT_small.dcm", contentType="image/jpeg"), 406, "WADO-URI image/jpeg: 406")
for k in ["studyUID", "seriesUID", "objectUID"]:
    b = expect_error(wado_uri("CT_small.dcm", **{k: None}), 400, "WADO-URI without %s: 400" % k)
    checks.ok(k.encode() in b, "WADO-URI: the error names %s" % k, b)
    expect_error(wado_uri("CT_small.dcm", **{k: "1.2.abc"}), 400, "WADO-URI bad %s: 400" % k)
expect_error(wado_uri("CT_small.dcm", requestType="WADOX"), 400, "WADO-URI requestType: 400")
expect_error(wado_uri("CT_small.dcm", requestType=None), 400, "WADO-URI no requestType: 400")
expect_error(wado_uri("CT_small.dcm", anonymize="yes"), 400, "WADO-URI anonymize: 400")
expect_error(wado_uri("CT_small.dcm", objectUID="1.2.3.4"), 404, "WADO-URI unknown object: 404")
expect_error(wado_uri("CT_small.dcm", contentType="nonsense"), 400, "WADO-URI bad contentType")

# --- errors ------------------------------------------------------------------------
s = ct_ds.StudyInstanceUID
expect_error("/dicom-web/studies/1.2.3.4", 404, "unknown study: 404")
expect_error("/dicom-web/studies/%s/series/1.2.3" % s, 404, "unknown series: 404")
expect_error(url("CT_small.dcm").rsplit("/", 1)[0] + "/1.2.3", 404, "unknown instance: 404")
expect_error("/dicom-web/studies/1.2.3.4/metadata", 404, "metadata of unknown study: 404")
for bad in ["abc", "1..2", ".1.2", "1.2.", "1" * 65, "1.2%20", "%2e%2e"]:
    expect_error("/dicom-web/studies/%s" % bad, 400, "study UID %r: 400" % bad)
    expect_error("/dicom-web/studies/%s/series/%s/instances/%s/metadata" % (s, bad, "1.2"), 400,
                 "series UID %r in metadata: 400" % bad)
for trav in ["/dicom-web/studies/../../index.db", "/dicom-web/studies/%2e%2e%2f%2e%2e%2findex.db",
             "/dicom-web/studies/1.2%2F..%2F..", url("CT_small.dcm", "/bulk/..%2F..%2Findex.db"),
             url("CT_small.dcm", "/bulk/%2e%2e/%2e%2e/x"),
             "/dicom-web/studies/%s/series/..%%2F..%%2F..%%2Fetc%%2Fpasswd" % s]:
    st, hd, body = get(trav)
    checks.ok(st in (400, 404) and is_json_error(st, hd, body, st) and b"SQLite" not in body
              and b"root:" not in body, "path traversal %s: 400/404 JSON" % trav,
              "%d %r" % (st, body[:100]))

# A 42 MB study streams: pacsd's peak memory grows by far less than that.
big = tempfile.mkdtemp(prefix="wado-big-")
big_study, big_series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
for i in range(40):
    d = pydicom.dcmread(os.path.join(PYDICOM, "CT_small.dcm"))
    d.StudyInstanceUID, d.SeriesInstanceUID = big_study, big_series
    d.SOPInstanceUID = pydicom.uid.generate_uid()
    d.file_meta.MediaStorageSOPInstanceUID = d.SOPInstanceUID
    d.Rows, d.Columns = 512, 1024
    d.PixelData = os.urandom(512 * 1024 * 2)
    d.save_as(os.path.join(big, "%02d.dcm" % i))
r = h.run([h.PACSD, "store", "-aec", pacs.aet, "127.0.0.1", str(pacs.port), big])
checks.ok(r.returncode == 0, "store of a generated 40 MB study", r.stderr)


def peak_kib():
    with open("/proc/%d/status" % pacs.p.pid) as fp:
        return int(next(ln for ln in fp if ln.startswith("VmHWM")).split()[1])


before = peak_kib()
c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
c.request("GET", "/dicom-web/studies/" + big_study)
resp = c.getresponse()
total = 0
while True:
    chunk = resp.read(1 << 16)
    if not chunk:
        break
    total += len(chunk)
c.close()
grown = peak_kib() - before
checks.ok(resp.status == 200 and total > 40 * 1024 * 1024, "generated study retrieved",
          "%d, %d bytes" % (resp.status, total))
checks.ok(grown < 16 * 1024, "a %d MB study streamed with %d KiB more peak memory"
          % (total >> 20, grown))
shutil.rmtree(big, ignore_errors=True)

# Concurrent retrieves (a thread per connection): every answer complete.
jobs = [(url("rtdose.dcm", "/frames/2,4"), None), (series_url, None),
        (url("SC_rgb_rle_2frame.dcm", "/frames/1"), None), (bulk, {"Range": "bytes=10-20"}),
        (url("MR_small_bigendian.dcm", "/frames/1"), None)]
reference = [get(p, hd_)[2] for p, hd_ in jobs]
results = []


def worker(k):
    for i in range(6):
        p, hd_ = jobs[(k + i) % len(jobs)]
        st_, _, body_ = get(p, hd_)
        ref = reference[(k + i) % len(jobs)]
        # Boundaries differ per response: compare the part bytes.
        if st_ in (200, 206) and body_.startswith(b"--"):
            results.append(len(body_) == len(ref))
        else:
            results.append(st_ in (200, 206) and body_ == ref)


threads = [threading.Thread(target=worker, args=(k,)) for k in range(12)]
for t in threads:
    t.start()
for t in threads:
    t.join()
checks.ok(len(results) == 72 and all(results), "72 concurrent retrieves, all complete",
          "%d of %d" % (sum(results), len(results)))

# Native YBR_FULL_422: two samples a pixel (Cb and Cr shared by two
# pixels), so a frame is Rows x Columns x 2 bytes, the stored value.
ybr_path = os.path.join(PYDICOM, "SC_ybr_full_422_uncompressed.dcm")
with open(ybr_path, "rb") as fp:
    ybr_bytes = fp.read()
c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
c.request("POST", "/instances", body=ybr_bytes, headers={"Content-Type": "application/dicom"})
checks.eq(c.getresponse().status, 200, "YBR_FULL_422 file stored")
c.close()
ybr = pydicom.dcmread(ybr_path)
ybr_url = "/dicom-web/studies/%s/series/%s/instances/%s" % (
    ybr.StudyInstanceUID, ybr.SeriesInstanceUID, ybr.SOPInstanceUID)
st, hd, body = get(ybr_url + "/frames/1")
parts = multipart(hd.get("content-type", ""), body) if st == 200 else []
checks.ok(len(parts) == 1 and parts[0][1] == ybr.PixelData,
          "YBR_FULL_422 frame: the stored 2-samples-a-pixel bytes", "%d %s" % (st, body[:200]))
st, hd, body = get(ybr_url + "/bulk/7FE00010", {"Accept": "application/octet-stream"})
checks.ok(st == 200 and body == ybr.PixelData, "YBR_FULL_422 pixel bulk data", st)

# accept= replaces the Accept header (PS3.18 8.3.3.1).
st, hd, body = get(url("CT_small.dcm", "/metadata?accept=application/json"),
                   {"Accept": "application/dicom+json"})
checks.eq((st, hd.get("content-type")), (200, "application/json"), "metadata with accept=")
st, hd, body = get(url("CT_small.dcm", "/metadata?accept=text/html"))
checks.eq(st, 406, "metadata with accept=text/html: 406")

# Still serving after all that.
st, hd, body = get(url("CT_small.dcm"))
parts = multipart(hd["content-type"], body) if st == 200 else []
checks.ok(len(parts) == 1 and parts[0][1] == blob(ct_ds.SOPInstanceUID), "still serving")
checks.ok(pacs.alive(), "pacsd alive")
pacs.stop()
log = pacs.output()
checks.ok("runtime error" not in log and "AddressSanitizer" not in log, "no sanitizer report",
          log[-2000:])
pacs.cleanup()
checks.finish()
