#!/usr/bin/python3
"""QIDO-RS latency and HTTP request rate over a large index: pacsd beside
Orthanc 1.10 + DICOMweb plugin, in one run, on the same instances and the
same queries.

usage: http_qido.py [--instances N] [--queries Q] [--listing-runs R]
                    [--listing-limit M] [--wrk-seconds S] [--parallel K]
                    [--targets LIST] [--seed X] [--quick]

Data: N (default 100,000) small instances without pixel data from
bench/dimse_gen_small.py (N/100 patients x 2 studies x 5 series x 10
instances), generated once into bench/.data/small-N-seed1/ and reused: the
same data and loading as bench/dimse_find.py.

For each target (default pacsd,orthanc; started fresh and empty, data under
$TMPDIR):
  load     -- C-STORE every instance with K (default 4) parallel storescu
              processes (DIMSE, so the index does not depend on STOW-RS);
              checks the instance count. Nothing is cached across runs: each
              target starts empty.
  studies  -- one keep-alive connection (http.client), W=10 untimed
              warm-up queries, then Q (default 1,000) GET
              /dicom-web/studies?PatientID=<a random existing patient>
              (Accept: application/dicom+json), each timed from sending the
              request to the end of the body. Every answer must list
              exactly the patient's two studies (from the generator's
              manifest). The sequence depends only on --seed.
  listing  -- R (default 20) GET /dicom-web/instances?limit=M (M default
              2,000): each answer must hold M distinct SOP Instance UIDs.
  wrk      -- wrk -t2 -c8 -d S s (default 10) on the liveness probe
              (pacsd: /health/live; Orthanc has none: /system, its
              nearest), then on /dicom-web/studies?PatientID=<one patient>:
              requests/s and wrk's p50/p99. S=0 skips it.

Prints p50, p90, p99, max per target, the listing's p50 and p99, wrk's
requests/s, and the ratios (Orthanc's latency over pacsd's, pacsd's
requests/s over Orthanc's; > 1: pacsd is faster; the issue's target for
QIDO is 10). --quick: N=2,000, Q=100, R=5, S=3.
Environment: PACSD (binary, default build/pacsd), TMPDIR.
Run with Debian's /usr/bin/python3.
"""
import argparse
import json
import os
import random
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dimse_lib as L  # noqa: E402
import http_lib as H  # noqa: E402
from dimse_find import PER_PATIENT, small_data  # noqa: E402

ACCEPT = "application/dicom+json"
STUDY_UID, SOP_UID = "0020000D", "00080018"


def uids(answer, tag):
    return [v for o in answer for v in o.get(tag, {}).get("Value", [])]


def studies_queries(srv, base, pids, warmup, studies):
    conn = H.Conn(srv.http_port)
    lat, bad = [], []
    try:
        for i, pid in enumerate(pids):
            path = base + "/studies?PatientID=" + urllib.parse.quote(pid)
            t = time.perf_counter()
            st, _, body = conn.request("GET", path, headers={"Accept": ACCEPT})
            dt = time.perf_counter() - t
            if i >= warmup:
                lat.append(dt)
            if st != 200:
                bad.append("%s: HTTP %d %s" % (path, st, body[:200]))
                continue
            got = sorted(uids(json.loads(body), STUDY_UID))
            if got != sorted(studies[pid]):
                bad.append("%s: studies %s, want %s" % (path, got, sorted(studies[pid])))
    except OSError as e:
        bad.append("query %d of %d: %s" % (len(lat) + 1, len(pids), e))
    finally:
        conn.close()
    return sorted(lat), bad


def listing(srv, base, runs, limit, n):
    conn = H.Conn(srv.http_port)
    want = min(limit, n)
    lat, bad = [], []
    path = base + "/instances?limit=%d" % limit
    try:
        for _ in range(runs):
            t = time.perf_counter()
            st, _, body = conn.request("GET", path, headers={"Accept": ACCEPT})
            lat.append(time.perf_counter() - t)
            if st != 200:
                bad.append("%s: HTTP %d %s" % (path, st, body[:200]))
                continue
            got = uids(json.loads(body), SOP_UID)
            if len(got) != want or len(set(got)) != want:
                bad.append("%s: %d results (%d distinct), want %d"
                           % (path, len(got), len(set(got)), want))
    except OSError as e:
        bad.append("%s: %s" % (path, e))
    finally:
        conn.close()
    return sorted(lat), bad


def ms(v):
    return "%8.2f ms" % (v * 1000)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog=__doc__.split("\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=None, help="default 100000 (quick 2000)")
    ap.add_argument("--queries", type=int, default=None, help="default 1000 (quick 100)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--listing-runs", type=int, default=None, help="default 20 (quick 5)")
    ap.add_argument("--listing-limit", type=int, default=2000)
    ap.add_argument("--wrk-seconds", type=int, default=None, help="default 10 (quick 3); 0: none")
    ap.add_argument("--parallel", type=int, default=4, help="storescu processes for the load")
    ap.add_argument("--targets", default="pacsd,orthanc")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="small sizes, to try the script")
    a = ap.parse_args()
    q = a.quick
    n_want = a.instances or (2000 if q else 100000)
    nq = a.queries or (100 if q else 1000)
    runs = a.listing_runs or (5 if q else 20)
    wrk_s = a.wrk_seconds if a.wrk_seconds is not None else (3 if q else 10)
    targets = [t for t in a.targets.split(",") if t]
    for t in targets:
        if t not in H.TARGETS:
            ap.error("unknown target %r" % t)
    for tool in [L.PACSD, "storescu", "sqlite3"] + (["Orthanc"] if "orthanc" in targets else []) \
            + ([H.WRK] if wrk_s else []):
        L.need(tool)
    n, dirs, studies_meta = small_data(max(1, n_want // PER_PATIENT))
    studies = {pid: list(v) for pid, v in studies_meta.items()}
    rng = random.Random(a.seed)
    pool = sorted(studies)
    pids = [rng.choice(pool) for _ in range(a.warmup + nq)]
    wrk_pid = pool[len(pool) // 2]

    ctx0 = L.context()
    res, problems = {}, []
    for t in targets:
        srv, base = H.start(t)
        r = {}
        try:
            L.log("qido: loading %d instances into %s over DIMSE (%d associations)..."
                  % (n, t, a.parallel))
            r["load"], probs = L.load_parallel(t, srv, L.split(dirs, a.parallel), n, ("+sd",))
            problems += ["%s %s" % (t, p) for p in probs]
            L.log("  %.1f s" % r["load"])
            L.log("qido: %d /studies?PatientID queries (+%d warm-up) on %s..." % (nq, a.warmup, t))
            r["studies"], bad = studies_queries(srv, base, pids, a.warmup, studies)
            if bad:  # a wrong answer's latency is no measurement
                problems.append("%s studies: %d of %d answers wrong, first: %s"
                                % (t, len(bad), len(pids), bad[0]))
                r["studies"] = []
            L.log("qido: %d x /instances?limit=%d on %s..." % (runs, a.listing_limit, t))
            r["listing"], bad = listing(srv, base, runs, a.listing_limit, n)
            if bad:
                problems.append("%s listing: %d of %d wrong, first: %s"
                                % (t, len(bad), runs, bad[0]))
                r["listing"] = []
            if wrk_s:
                for name, path, acc in (("live", H.liveness_path(t), None),
                                        ("qido", base + "/studies?PatientID=" +
                                         urllib.parse.quote(wrk_pid), ACCEPT)):
                    L.log("qido: wrk %d s on %s %s..." % (wrk_s, t, path))
                    rps, p50, p99, errs, prob = H.wrk(srv.http_port, path, wrk_s, accept=acc)
                    if prob:
                        problems.append("%s wrk %s: %s" % (t, path, prob))
                    else:
                        r["wrk-" + name] = (rps, p50, p99, errs, path)
            if not srv.alive():
                problems.append("%s exited during the run" % t)
        finally:
            srv.cleanup()
        res[t] = r

    print("== http_qido (QIDO-RS over an index of %d instances: %d patients x 2 studies x 5 "
          "series x 10, loaded over DIMSE; keep-alive, one connection)" % (n, n // PER_PATIENT))
    print("command: %s" % H.command_line())
    print("qido context: %s at start, %s at end" % (ctx0, L.context().split(", ", 1)[1]))
    for t in targets:
        r = res[t]
        lat = r.get("studies", [])
        if not lat:
            print("qido studies?PatientID %-8s FAILED (see PROBLEM below)" % (t + ":"))
        else:
            print("qido studies?PatientID %-8s %d queries: p50 %s  p90 %s  p99 %s  max %s  "
                  "(load %.1f s, %.0f inst/s)"
                  % (t + ":", len(lat), ms(L.percentile(lat, 50)), ms(L.percentile(lat, 90)),
                     ms(L.percentile(lat, 99)), ms(lat[-1]), r["load"], n / r["load"]))
        lst = r.get("listing", [])
        if not lst:
            print("qido instances?limit=%d %-8s FAILED" % (a.listing_limit, t + ":"))
        else:
            print("qido instances?limit=%d %-8s %d runs: p50 %s  p99 %s"
                  % (a.listing_limit, t + ":", len(lst), ms(L.percentile(lst, 50)),
                     ms(L.percentile(lst, 99))))
        for name in ("live", "qido"):
            if "wrk-" + name in r:
                rps, p50, p99, errs, path = r["wrk-" + name]
                print("wrk %-5s %-8s %9.0f req/s  p50 %s  p99 %s  %s  (%s)"
                      % (name, t + ":", rps, p50, p99, errs, path))
    if "pacsd" in res and "orthanc" in res:
        p, o = res["pacsd"], res["orthanc"]
        out = []
        if p.get("studies") and o.get("studies"):
            out.append("studies p50 %.2f, p99 %.2f" % (
                L.percentile(o["studies"], 50) / L.percentile(p["studies"], 50),
                L.percentile(o["studies"], 99) / L.percentile(p["studies"], 99)))
        if p.get("listing") and o.get("listing"):
            out.append("instances listing p50 %.2f, p99 %.2f" % (
                L.percentile(o["listing"], 50) / L.percentile(p["listing"], 50),
                L.percentile(o["listing"], 99) / L.percentile(p["listing"], 99)))
        if out:
            print("qido latency ratios orthanc/pacsd: " + "; ".join(out))
        rates = ["%s %.2f" % (name, p["wrk-" + name][0] / o["wrk-" + name][0])
                 for name in ("live", "qido") if "wrk-" + name in p and "wrk-" + name in o]
        if rates:
            print("wrk requests/s ratios pacsd/orthanc: " + ", ".join(rates))
    for x in problems:
        print("PROBLEM: " + x)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
