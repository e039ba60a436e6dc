#!/usr/bin/python3
"""WADO-RS throughput: pacsd beside Orthanc 1.10 + DICOMweb plugin and beside
`cat` of the same files (the ceiling), in one run.

usage: http_wado.py [--series-size S] [--runs R] [--targets LIST] [--quick]

Data: one patient, 2 studies x 2 series x S (default 50) generated CT
instances, 512x512x16, about 520 KB each (bench/gen_ct.py, seed 1, cached
in bench/.data/ct-<4S>-wado-seed1/): a series is S instances, a study 2S.

For each target (default pacsd,orthanc; started fresh and empty, data under
$TMPDIR): load the 4S instances over DIMSE (storescu, one association), then
over one keep-alive connection (http.client), with
Accept: multipart/related; type="application/dicom"; transfer-syntax=*
(the stored syntax, Explicit VR Little Endian, so no server transcodes):
  series -- GET /dicom-web/studies/{st}/series/{se}, one untimed warm-up
            and R (default 5) timed runs;
  study  -- GET /dicom-web/studies/{st}, the same.
Each answer must be 200 and hold S (2S) parts; in the warm-up, every part
must parse as DICOM and the SOP Instance UIDs must be the series' (study's).
Timed from sending the request to the end of the body; MB/s counts the DICOM
bytes of the parts.

cat: `cat FILES > /dev/null` of the generated files of the same series
(study), page cache warm, R runs: how fast this machine reads those bytes
at all.

Prints the median MB/s (and range) per target and what, the ratios
pacsd/Orthanc and pacsd/cat. --quick: S=5, R=3.
Environment: PACSD (binary, default build/pacsd), TMPDIR.
Run with Debian's /usr/bin/python3.
"""
import argparse
import io
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dimse_lib as L  # noqa: E402
import http_lib as H  # noqa: E402

import pydicom  # noqa: E402

ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def wado_data(series_size):
    n = 4 * series_size
    d = os.path.join(L.DATA, "ct-%d-wado-seed1" % n)
    if not os.path.isfile(os.path.join(d, ".complete")):
        L.log("generating %d CT files into %s (once)..." % (n, d))
        subprocess.run(["rm", "-rf", d], check=True)
        subprocess.run([L.PY, os.path.join(L.ROOT, "bench", "gen_ct.py"), d, str(n),
                        "--patients", "1", "--studies-per-patient", "2",
                        "--series-per-study", "2", "--seed", "1"], check=True)
        open(os.path.join(d, ".complete"), "w").close()
    rows = []
    with open(os.path.join(d, "MANIFEST.tsv")) as f:
        next(f)
        for line in f:
            name, _pid, st, se, sop = line.rstrip("\n").split("\t")
            rows.append((os.path.join(d, name), st, se, sop))
    if len(rows) != n:
        sys.exit("http_wado: %s lists %d files, want %d (delete it)" % (d, len(rows), n))
    return rows


def fetch(conn, path):
    t = time.perf_counter()
    st, hdrs, body = conn.request("GET", path, headers={"Accept": ACCEPT})
    secs = time.perf_counter() - t
    if st != 200:
        raise H.HttpError("GET %s: HTTP %d: %s" % (path, st, body[:200]))
    return secs, H.split_multipart(hdrs.get("content-type"), body)


def measure(conn, path, want_sops, runs):
    """(sorted [(seconds, bytes)], problem or None)."""
    try:
        _, parts = fetch(conn, path)
        got = sorted(pydicom.dcmread(io.BytesIO(p), stop_before_pixels=True).SOPInstanceUID
                     for p in parts)
        if got != sorted(want_sops):
            return [], "GET %s: %d parts, SOP UIDs differ from the %d wanted" % (
                path, len(parts), len(want_sops))
        out = []
        for _ in range(runs):
            secs, parts = fetch(conn, path)
            if len(parts) != len(want_sops):
                return [], "GET %s: %d parts, want %d" % (path, len(parts), len(want_sops))
            out.append((secs, sum(len(p) for p in parts)))
        return sorted(out), None
    except (OSError, H.HttpError, pydicom.errors.InvalidDicomError) as e:
        return [], str(e)


def cat_runs(files, runs):
    size = sum(os.path.getsize(f) for f in files)
    L.warm_cache(files)
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)
        out.append((time.perf_counter() - t, size))
    return sorted(out)


def mbps(runs):
    v = sorted(b / 1e6 / s for s, b in runs)
    return v[(len(v) - 1) // 2], v[0], v[-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog=__doc__.split("\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series-size", type=int, default=None, help="default 50 (quick 5)")
    ap.add_argument("--runs", type=int, default=None, help="default 5 (quick 3)")
    ap.add_argument("--targets", default="pacsd,orthanc")
    ap.add_argument("--quick", action="store_true", help="small sizes, to try the script")
    a = ap.parse_args()
    s = a.series_size or (5 if a.quick else 50)
    runs = a.runs or (3 if a.quick else 5)
    targets = [t for t in a.targets.split(",") if t]
    for t in targets:
        if t not in H.TARGETS:
            ap.error("unknown target %r" % t)
    for tool in [L.PACSD, "storescu", "sqlite3", "cat"] + \
            (["Orthanc"] if "orthanc" in targets else []):
        L.need(tool)
    rows = wado_data(s)
    st = rows[0][1]
    se = rows[0][2]
    series_rows = [r for r in rows if r[2] == se]
    study_rows = [r for r in rows if r[1] == st]
    if len(series_rows) != s or len(study_rows) != 2 * s:
        sys.exit("http_wado: unexpected layout: series of %d, study of %d"
                 % (len(series_rows), len(study_rows)))
    what = {"series": ("/studies/%s/series/%s" % (st, se), series_rows),
            "study": ("/studies/%s" % st, study_rows)}

    ctx0 = L.context()
    res, problems = {}, []
    for k, (_, rs) in what.items():
        res[("cat", k)] = cat_runs([r[0] for r in rs], runs)
    for t in targets:
        srv, base = H.start(t)
        try:
            L.log("wado: loading %d instances into %s over DIMSE..." % (len(rows), t))
            _, probs = L.load_parallel(t, srv, [[r[0] for r in rows]], len(rows))
            problems += ["%s %s" % (t, p) for p in probs]
            conn = H.Conn(srv.http_port)
            for k, (path, rs) in what.items():
                L.log("wado: %s %s, %d runs..." % (t, k, runs))
                out, prob = measure(conn, base + path, [r[3] for r in rs], runs)
                res[(t, k)] = out
                if prob:
                    problems.append("%s %s: %s" % (t, k, prob))
            conn.close()
            if not srv.alive():
                problems.append("%s exited during the run" % t)
        finally:
            srv.cleanup()

    print("== http_wado (WADO-RS, one keep-alive connection, Accept %s; series of %d and "
          "study of %d CT 512x512x16 instances; median of %d runs [range])"
          % (ACCEPT, s, 2 * s, runs))
    print("command: %s" % H.command_line())
    print("wado context: %s at start, %s at end" % (ctx0, L.context().split(", ", 1)[1]))
    for k in what:
        for t in targets + ["cat"]:
            out = res.get((t, k))
            if not out:
                print("wado %-6s %-8s FAILED (see PROBLEM below)" % (k, t + ":"))
                continue
            med, lo, hi = mbps(out)
            print("wado %-6s %-8s %8.1f MB/s  [%.1f..%.1f]  (%.1f MB, median %.3f s)"
                  % (k, t + ":", med, lo, hi, out[0][1] / 1e6, out[(len(out) - 1) // 2][0]))
        if res.get(("pacsd", k)):
            p = mbps(res[("pacsd", k)])[0]
            ratios = ["pacsd/%s %.2f" % (t, p / mbps(res[(t, k)])[0])
                      for t in [x for x in targets if x != "pacsd"] + ["cat"] if res.get((t, k))]
            print("wado %-6s throughput ratios: %s" % (k, ", ".join(ratios)))
    for x in problems:
        print("PROBLEM: " + x)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
