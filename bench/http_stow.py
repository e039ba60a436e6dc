#!/usr/bin/python3
"""STOW-RS throughput: pacsd beside Orthanc 1.10 + DICOMweb plugin, in one
run, on the same instances.

usage: http_stow.py [--n N] [--clients LIST] [--parts LIST] [--targets LIST]
                    [--quick]

Data: N (default 2,000) generated CT instances, 512x512x16, about 520 KB
each: the same files as bench/dimse_store.py (bench/gen_ct.py, seed 1,
cached in bench/.data/ct-N-seed1/).

For every mode (C concurrent clients x P parts per request; defaults
C in 1,4 and P in 1,100) and every target (default pacsd,orthanc): start
the target fresh and empty (harness: free loopback port, temporary
directory under $TMPDIR, so both write to the same filesystem), read every
file once (page cache), then C threads, each with one keep-alive
connection (http.client) and its own contiguous C-th of the files, POST
/dicom-web/studies with multipart/related; type="application/dicom"
bodies of P parts (each body built from the files just before its request;
Content-Length, no chunking, no compression). Timed from the first request
to the last answer. Every answer must be 200 (nothing failed); afterwards
the target must hold N instances (pacsd: sqlite3 on its index; Orthanc:
/statistics).

Prints, per mode and target, seconds, instances/s and MB/s, then the ratio
pacsd/Orthanc (throughput; > 1: pacsd is faster; the issue's target is 4).
--quick: N=100, parts 1 and 10. Progress goes to stderr.
Environment: PACSD (binary, default build/pacsd), TMPDIR.
Run with Debian's /usr/bin/python3.
"""
import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dimse_lib as L  # noqa: E402
import http_lib as H  # noqa: E402
from dimse_store import ct_files  # noqa: E402


def post_all(srv, base, files, parts):
    """POSTs files in bodies of `parts` parts over one connection; returns
    (instances acknowledged, [problems])."""
    conn = H.Conn(srv.http_port)
    done, problems = 0, []
    try:
        for i in range(0, len(files), parts):
            chunk = []
            for p in files[i:i + parts]:
                with open(p, "rb") as f:
                    chunk.append(f.read())
            body, ctype = H.multipart(chunk)
            st, hdrs, answer = conn.request("POST", base + "/studies", body=body,
                                            headers={"Content-Type": ctype,
                                                     "Accept": "application/dicom+json"})
            if st != 200:
                problems.append("POST of files %d..%d: HTTP %d: %s"
                                % (i, i + len(chunk) - 1, st, answer[:200]))
                if len(problems) > 3:
                    break
            else:
                done += len(chunk)
    except OSError as e:
        problems.append("connection: %s" % e)
    finally:
        conn.close()
    return done, problems


def one(target, files, clients, parts):
    srv, base = H.start(target)
    try:
        L.warm_cache(files)
        slices = L.split(files, clients)
        results = [None] * clients

        def worker(k):
            results[k] = post_all(srv, base, slices[k], parts)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        secs = time.perf_counter() - t0
        got = L.count(target, srv)
        alive = srv.alive()
    finally:
        srv.cleanup()
    problems = [p for _, probs in results for p in probs]
    if got != len(files):
        problems.append("%s holds %d instances, want %d" % (target, got, len(files)))
    if not alive:
        problems.append("%s exited during the run" % target)
    return secs, problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog=__doc__.split("\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=None, help="instances (default 2000; quick 100)")
    ap.add_argument("--clients", default="1,4", help="concurrent clients, comma list")
    ap.add_argument("--parts", default=None, help="parts per request (default 1,100; quick 1,10)")
    ap.add_argument("--targets", default="pacsd,orthanc")
    ap.add_argument("--quick", action="store_true", help="small sizes, to try the script")
    a = ap.parse_args()
    n = a.n or (100 if a.quick else 2000)
    parts_list = [int(x) for x in (a.parts or ("1,10" if a.quick else "1,100")).split(",")]
    clients_list = [int(x) for x in a.clients.split(",")]
    targets = [t for t in a.targets.split(",") if t]
    for t in targets:
        if t not in H.TARGETS:
            ap.error("unknown target %r" % t)
    for tool in [L.PACSD, "sqlite3"] + (["Orthanc"] if "orthanc" in targets else []):
        L.need(tool)
    files = ct_files(n)
    size = sum(os.path.getsize(f) for f in files)

    ctx0 = L.context()
    res, problems = {}, []
    for c in clients_list:
        for p in parts_list:
            for t in targets:
                L.log("stow: %s, %d client(s), %d part(s) per request..." % (t, c, p))
                secs, probs = one(t, files, c, p)
                res[(c, p, t)] = None if probs else secs
                L.log("  %.2f s%s" % (secs, "".join("\n  " + x for x in probs)))
                problems += ["stow[%d clients, %d parts] %s: %s" % (c, p, t, x) for x in probs]

    print("== http_stow (STOW-RS POST /dicom-web/studies; %d CT 512x512x16 instances, "
          "%.1f MB; keep-alive, one connection per client)" % (n, size / 1e6))
    print("command: %s" % H.command_line())
    print("stow context: %s at start, %s at end" % (ctx0, L.context().split(", ", 1)[1]))
    for c in clients_list:
        for p in parts_list:
            for t in targets:
                secs = res[(c, p, t)]
                if secs is None:
                    print("stow[%d client%s, %3d part%s/req] %-8s FAILED (see PROBLEM below)"
                          % (c, "s" if c > 1 else " ", p, "s" if p > 1 else " ", t + ":"))
                    continue
                print("stow[%d client%s, %3d part%s/req] %-8s %7.2f s  %7.1f inst/s  %7.1f MB/s"
                      % (c, "s" if c > 1 else " ", p, "s" if p > 1 else " ", t + ":", secs,
                         n / secs, size / 1e6 / secs))
            if res.get((c, p, "pacsd")) and res.get((c, p, "orthanc")):
                print("stow[%d client%s, %3d part%s/req] ratio pacsd/orthanc (throughput): %.2f"
                      % (c, "s" if c > 1 else " ", p, "s" if p > 1 else " ",
                         res[(c, p, "orthanc")] / res[(c, p, "pacsd")]))
    for x in problems:
        print("PROBLEM: " + x)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
