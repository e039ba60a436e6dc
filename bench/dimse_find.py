#!/usr/bin/python3
"""C-FIND latency over a large index: pacsd and Orthanc, in one run, on the
same instances and the same queries.

usage: dimse_find.py [--instances N] [--queries Q] [--parallel K]
                     [--targets LIST] [--warmup W] [--seed X]

Data: N (default 100,000) small instances without pixel data from
bench/dimse_gen_small.py (N/100 patients x 2 studies x 5 series x 10
instances; CT or MR by study), generated once into
bench/.data/small-N-seed1/ and reused.

For each target (default pacsd,orthanc; started fresh and empty by the
integration harness on loopback, data under $TMPDIR):
  load   -- C-STORE every instance with K (default 4) parallel storescu
            processes, one association each (progress every 10 s on
            stderr); checks the exit statuses and the target's instance
            count (pacsd: sqlite3 on data_dir/index.db; Orthanc:
            /statistics). Reported as seconds and instances/s.
  query  -- one association (a minimal C-FIND SCU in bench/dimse_lib.py:
            Study Root FIND, Implicit VR LE), W untimed warm-up queries,
            then Q (default 1,000) study-level queries, each PatientID=<a
            random existing patient> returning StudyInstanceUID, StudyDate,
            PatientName, NumberOfStudyRelatedInstances, ModalitiesInStudy.
            Each query is timed from sending the request to receiving the
            final response (time.perf_counter). Every answer is checked
            against the generator's manifest (the patient's studies, 50
            instances each, the modality, the date).
The query sequence depends only on the seed, so both targets get the same
queries. Prints p50, p90, p99 and max latency per target and the ratios
(Orthanc's latency over pacsd's; > 1: pacsd is faster).

Environment: PACSD (binary, default build/pacsd under the source root),
TMPDIR. Run with Debian's /usr/bin/python3.
"""
import argparse
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dimse_lib as L  # noqa: E402

PER_PATIENT = 100  # 2 studies x 5 series x 10 instances


def small_data(patients):
    n = patients * PER_PATIENT
    d = os.path.join(L.DATA, "small-%d-seed1" % n)
    if not os.path.isfile(os.path.join(d, ".complete")):
        L.log("generating %d small instances into %s (once)..." % (n, d))
        subprocess.run(["rm", "-rf", d], check=True)
        t = time.perf_counter()
        subprocess.run([L.PY, os.path.join(L.ROOT, "bench", "dimse_gen_small.py"), d,
                        str(patients), "--seed", "1"], check=True)
        open(os.path.join(d, ".complete"), "w").close()
        L.log("  %.1f s" % (time.perf_counter() - t))
    dirs = sorted(os.path.join(d, x) for x in os.listdir(d) if x.startswith("d"))
    studies = {}
    with open(os.path.join(d, "MANIFEST.tsv")) as f:
        next(f)
        for line in f:
            pid, name, st, date, mod, cnt = line.rstrip("\n").split("\t")
            studies.setdefault(pid, {})[st] = (name, date, mod, int(cnt))
    return n, dirs, studies


def check(pid, status, matches, studies):
    """None, or what is wrong with one answer."""
    if status != 0:
        return "final status 0x%04x" % status
    want = studies[pid]
    got = {}
    for m in matches:
        st = L.text(m.get((0x0020, 0x000D)))
        got[st] = (L.text(m.get((0x0010, 0x0010))), L.text(m.get((0x0008, 0x0020))),
                   L.text(m.get((0x0008, 0x0061))), L.text(m.get((0x0020, 0x1208))))
    if set(got) != set(want):
        return "%d matches %s, want studies %s" % (len(matches), sorted(got), sorted(want))
    for st, (name, date, mod, cnt) in want.items():
        g = got[st]
        if g != (name, date, mod, str(cnt)):
            return "study %s: got (name, date, modalities, instances) %r, want %r" % (
                st, g, (name, date, mod, str(cnt)))
    return None


def query(srv, pids, warmup, studies):
    scu = L.FindSCU("127.0.0.1", srv.port, srv.aet)
    lat, bad = [], []
    try:
        for i, pid in enumerate(pids):
            ident = L.study_query(pid)
            t = time.perf_counter()
            status, matches = scu.find(ident)
            dt = time.perf_counter() - t
            if i >= warmup:
                lat.append(dt)
            why = check(pid, status, matches, studies)
            if why:
                bad.append("PatientID=%s: %s" % (pid, why))
    except (OSError, L.DimseError) as e:
        scu.close()
        bad.append("query %d of %d: %s" % (len(lat) + 1, len(pids), e))
        return sorted(lat), bad
    scu.release()
    return sorted(lat), bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--instances", type=int, default=100000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--targets", default="pacsd,orthanc")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    targets = [t for t in a.targets.split(",") if t]
    for t in targets:
        if t not in ("pacsd", "orthanc"):
            ap.error("unknown target %r" % t)
    for tool in [L.PACSD, "storescu", "sqlite3"] + (["Orthanc"] if "orthanc" in targets else []):
        L.need(tool)
    n, dirs, studies = small_data(max(1, a.instances // PER_PATIENT))
    rng = random.Random(a.seed)
    pool = sorted(studies)
    pids = [rng.choice(pool) for _ in range(a.warmup + a.queries)]

    ctx0 = L.context()
    res, problems = {}, []
    for t in targets:
        srv = L.start(t)
        try:
            L.log("find: loading %d instances into %s (%d associations)..." % (n, t, a.parallel))
            load_s, probs = L.load_parallel(t, srv, L.split(dirs, a.parallel), n, ("+sd",))
            L.log("  %.1f s" % load_s)
            problems += ["%s %s" % (t, p) for p in probs]
            L.log("find: %d queries (+%d warm-up) on %s..." % (a.queries, a.warmup, t))
            lat, bad = query(srv, pids, a.warmup, studies)
            if not srv.alive():
                problems.append("%s exited during the run" % t)
        finally:
            srv.cleanup()
        if bad:
            problems.append("%s: %d of %d answers wrong, first: %s"
                            % (t, len(bad), len(pids), bad[0]))
        res[t] = (load_s, lat)

    print("== dimse_find (C-FIND study level by PatientID, one association; index of %d "
          "instances: %d patients x 2 studies x 5 series x 10)" % (n, n // PER_PATIENT))
    print("find context: %s at start, %s at end" % (ctx0, L.context().split(", ", 1)[1]))
    for t in targets:
        load_s, lat = res[t]
        ms = [x * 1000 for x in lat]
        print("find %-7s load %7.1f s (%6.1f inst/s, %d assoc); %d queries: p50 %6.2f ms  "
              "p90 %6.2f ms  p99 %6.2f ms  max %6.2f ms  mean %6.2f ms"
              % (t + ":", load_s, n / load_s, a.parallel, len(ms), L.percentile(ms, 50),
                 L.percentile(ms, 90), L.percentile(ms, 99), ms[-1] if ms else float("nan"),
                 sum(ms) / len(ms) if ms else float("nan")))
    if "pacsd" in res and "orthanc" in res:
        p, o = res["pacsd"][1], res["orthanc"][1]
        print("find ratios orthanc/pacsd: p50 latency %.2f, p99 latency %.2f; load throughput "
              "pacsd/orthanc %.2f" % (L.percentile(o, 50) / L.percentile(p, 50),
                                      L.percentile(o, 99) / L.percentile(p, 99),
                                      res["orthanc"][0] / res["pacsd"][0]))
    for p in problems:
        print("PROBLEM: " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
