#!/usr/bin/python3
"""C-STORE throughput: DCMTK storescu sending generated CT instances to
pacsd, Orthanc and DCMTK storescp, in one run, on the same files.

usage: dimse_store.py [--n N] [--parallel K] [--rounds R] [--targets LIST]
                      [--max-pdu BYTES]

Data: N (default 2,000) 512x512 16-bit CT instances from bench/gen_ct.py
(seed 1), generated once into bench/.data/ct-N-seed1/ and reused.

For each mode -- 1 association (one storescu with every file), then K
parallel associations (K storescu processes, default 4, each sending a
contiguous K-th of the files, so each its own patients) -- and for each
target: start it fresh and empty (harness: free loopback port, temporary
directory under $TMPDIR, so every target writes to the same filesystem),
`sync`, read every file once (page cache), run storescu, time from the
first start to the last exit; check every storescu exited 0 and that the
target holds N instances (pacsd: sqlite3 on data_dir/index.db; Orthanc:
GET /statistics; storescp: files written); then time a `sync` (the data a
target acknowledged but did not flush: pacsd fsyncs the file, its
directory and its index before acknowledging, Orthanc fdatasyncs the file
only, storescp nothing).

Targets (comma list, default pacsd,orthanc,storescp): pacsd (default
configuration), orthanc (1.10, SQLite index), storescp (files only: the
ceiling for this client), pacsd-nofsync (pacsd under eatmydata: fsync is a
no-op, to separate the cost of durability from the rest; diagnostic only).
--max-pdu sets every target's receive PDU size (default: each one's own
default: pacsd 262144, Orthanc and storescp 16384).

With --rounds R (default 1) every mode and target is measured R times,
interleaved (round 1 of every target, then round 2, ...), and the median
is reported with the range. fsync latency on a shared virtual disk varies
from minute to minute; interleaving spreads that over every target.

Prints one line per mode and target, then the ratios (throughput of pacsd
over the other; > 1: pacsd is faster). Progress goes to stderr.
Environment: PACSD (binary, default build/pacsd under the source root),
TMPDIR. Run with Debian's /usr/bin/python3.
"""
import argparse
import glob
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dimse_lib as L  # noqa: E402


def ct_files(n):
    d = os.path.join(L.DATA, "ct-%d-seed1" % n)
    if not os.path.isfile(os.path.join(d, ".complete")):
        L.log("generating %d CT files into %s (once)..." % (n, d))
        subprocess.run(["rm", "-rf", d], check=True)
        subprocess.run([L.PY, os.path.join(L.ROOT, "bench", "gen_ct.py"), d, str(n),
                        "--seed", "1"], check=True)
        open(os.path.join(d, ".complete"), "w").close()
    files = sorted(glob.glob(os.path.join(d, "ct_*.dcm")))
    if len(files) != n:
        sys.exit("dimse_store: %s holds %d files, want %d (delete it)" % (d, len(files), n))
    return files


def timed_sync():
    t = time.perf_counter()
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - t


def one(target, files, k, max_pdu):
    kind = "pacsd" if target.startswith("pacsd") else target
    env = None
    if target == "pacsd-nofsync":
        env = {"LD_PRELOAD": " ".join(filter(None, [os.environ.get("LD_PRELOAD"),
                                                     "libeatmydata.so"]))}
    srv = L.start(kind, max_pdu, pacsd_env=env)
    try:
        timed_sync()
        L.warm_cache(files)
        secs, rcs, errs = L.storescu_parallel(srv, L.split(files, k))
        got = L.count(kind, srv)
        flush = timed_sync()
        alive = srv.alive()
    finally:
        srv.cleanup()
    problems = []
    for i, (rc, e) in enumerate(zip(rcs, errs)):
        if rc != 0:
            problems.append("storescu #%d exited %d: %s" % (i, rc, e.strip()[-300:]))
    if got != len(files):
        problems.append("%s holds %d instances, want %d" % (target, got, len(files)))
    if not alive:
        problems.append("%s exited during the run" % target)
    return secs, flush, problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--targets", default="pacsd,orthanc,storescp")
    ap.add_argument("--max-pdu", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=1)
    a = ap.parse_args()
    targets = [t for t in a.targets.split(",") if t]
    for t in targets:
        if t not in ("pacsd", "orthanc", "storescp", "pacsd-nofsync"):
            ap.error("unknown target %r" % t)
    for tool in [L.PACSD, "storescu", "storescp", "sqlite3", "sync"] + \
            (["Orthanc"] if "orthanc" in targets else []):
        L.need(tool)
    files = ct_files(a.n)
    size = sum(os.path.getsize(f) for f in files)
    modes = [1] + ([a.parallel] if a.parallel > 1 else [])

    ctx0 = L.context()
    runs, problems = {}, []
    for k in modes:
        for r in range(a.rounds):
            for t in targets:
                L.log("store: %s, %d association(s), round %d/%d..." % (t, k, r + 1, a.rounds))
                secs, flush, probs = one(t, files, k, a.max_pdu)
                runs.setdefault((k, t), []).append((secs, flush))
                L.log("  %.2f s (+ sync %.2f s)%s"
                      % (secs, flush, "".join("\n  " + p for p in probs)))
                problems += ["store[%d assoc] %s" % (k, p) for p in probs]
    res = {key: sorted(v)[(len(v) - 1) // 2] for key, v in runs.items()}

    def spread(key):
        v = sorted(s for s, _ in runs[key])
        return "" if len(v) < 2 else "  [%.2f..%.2f s]" % (v[0], v[-1])

    pdu = ("max PDU %d" % a.max_pdu) if a.max_pdu else "default max PDUs"
    ctx1 = L.context()
    print("== dimse_store (C-STORE, storescu -> target; %d CT 512x512x16 instances, %.1f MB, "
          "%s; %s)" % (a.n, size / 1e6, pdu,
                       "median of %d rounds" % a.rounds if a.rounds > 1 else "1 round"))
    print("store context: %s at start, %s at end" % (ctx0, ctx1.split(", ", 1)[1]))
    for k in modes:
        for t in targets:
            secs, flush = res[(k, t)]
            print("store[%d assoc] %-15s %7.2f s  %7.1f inst/s  %7.1f MB/s  (then sync %.2f s)%s"
                  % (k, t + ":", secs, a.n / secs, size / 1e6 / secs, flush, spread((k, t))))
        if "pacsd" in targets:
            p = res[(k, "pacsd")][0]
            ratios = ["pacsd/%s = %.2f" % (t, res[(k, t)][0] / p)
                      for t in targets if t != "pacsd"]
            if ratios:
                print("store[%d assoc] throughput ratios: %s" % (k, ", ".join(ratios)))
    for p in problems:
        print("PROBLEM: " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
