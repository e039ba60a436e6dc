#!/usr/bin/python3
"""GET /metrics and the readiness limits (docs/metrics.md, docs/http.md).

One pacsd (dicom.max_associations 1), with Prometheus (Debian package)
scraping it every second from the start:
- /metrics answers text/plain; version=0.0.4 (gzip when asked) and
  `promtool check metrics` finds no problem, before and after traffic;
- after 2 C-ECHO, a C-STORE association with 2 files, a C-FIND, HTTP 404s,
  a 405 and health probes, the counters moved by exactly that much:
  DIMSE operations by type and status, associations by outcome and end,
  instances and bytes stored (= the growth of pacsd_storage_bytes), ingest
  and query duration counts, HTTP requests by route template ("unmatched"
  for the 404s and the 405: never the raw path) and status, durations;
  pacsd_storage_* reach the archive's totals (after their 5 s cache);
  build info, process figures;
- Prometheus' query API gives the same counter values as /metrics;
- with 511 idle HTTP connections open (the probe's makes 512), and with
  the one association slot held by a raw-socket association,
  /health/ready is 503 naming dicom.max_associations (and a second
  association is rejected); after its release, 200 again;
- SIGTERM while an association is open: /health/ready is 503 "shutting
  down" at once, while the association drains (liveness still 200); once
  it is released pacsd exits 0, with no sanitizer report.

Run with Debian's /usr/bin/python3; $PACSD names the binary. Ends with
"N passed, N failed".
"""
import gzip
import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

checks = h.Checks()
FILES = [os.path.join(h.PYDICOM_FILES, f) for f in ("CT_small.dcm", "MR_small.dcm")]
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def get(port, path, headers=None, method="GET"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, body


def parse(text):
    """{(name, ((label, value), ...)): float} of every sample line."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            raise ValueError("bad sample line %r" % line)
        labels = tuple(sorted(LABEL.findall(m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def scrape(port):
    st, hd, body = get(port, "/metrics")
    checks.eq(st, 200, "/metrics status")
    checks.eq(hd.get("content-type"), CONTENT_TYPE, "/metrics content type")
    text = body.decode("utf-8")
    return text, parse(text)


def val(m, name, **labels):
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def promtool(text, what):
    r = subprocess.run(["/usr/bin/promtool", "check", "metrics"], input=text,
                       capture_output=True, text=True, timeout=60)
    checks.ok(r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(),
              "promtool check metrics: " + what, (r.returncode, r.stdout, r.stderr))


def dcmtk(args):
    r = h.run(args, timeout=60)
    checks.ok(r.returncode == 0, " ".join(args[:1]) + " succeeds", r.stdout + r.stderr)


# --- a raw A-ASSOCIATE, to hold an association open ------------------------

def _item(t, body):
    return struct.pack(">BBH", t, 0, len(body)) + body


def associate(port, aet="PACSD"):
    """An association for Verification; returns (socket, PDU type answered)."""
    body = struct.pack(">HH", 1, 0) + aet.ljust(16).encode() + b"HOLDER".ljust(16) + bytes(32)
    body += _item(0x10, b"1.2.840.10008.3.1.1.1")
    body += _item(0x20, bytes([1, 0, 0, 0]) + _item(0x30, b"1.2.840.10008.1.1") +
                  _item(0x40, b"1.2.840.10008.1.2"))
    body += _item(0x50, _item(0x51, struct.pack(">I", 16384)) +
                  _item(0x52, b"1.2.826.0.1.3680043.10.999.7"))
    s = socket.create_connection(("127.0.0.1", port), 10)
    s.sendall(struct.pack(">BBI", 1, 0, len(body)) + body)
    s.settimeout(10)
    hdr = b""
    while len(hdr) < 6:
        k = s.recv(6 - len(hdr))
        if not k:
            return s, None
        hdr += k
    ptype, _, n = struct.unpack(">BBI", hdr)
    while n:
        n -= len(s.recv(min(n, 65536)))
    return s, ptype


def release(s):
    s.sendall(struct.pack(">BBI", 5, 0, 4) + bytes(4))
    s.settimeout(10)
    try:
        s.recv(10)  # A-RELEASE-RP
    except OSError:
        pass
    s.close()


def ready(port):
    st, _, body = get(port, "/health/ready")
    try:
        j = json.loads(body)
    except ValueError:
        j = {}
    return st, j


def wait_for(cond, timeout):
    """cond() until it is true; a connection refused or reset meanwhile
    (the server at its connection limit, closing the threads of
    connections just closed) counts as not yet."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            v = cond()
        except ConnectionError:
            v = None
        if v:
            return v
        time.sleep(0.1)
    return cond()


# --- Prometheus --------------------------------------------------------------

class Prometheus(h.Proc):
    def __init__(self, target_port):
        self.tmp = tempfile.mkdtemp(prefix="pacsd-prom-")
        self.port = h.free_port()
        cfg = os.path.join(self.tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: pacsd\n    static_configs:\n"
                    "      - targets: ['127.0.0.1:%d']\n" % target_port)
        super().__init__(["/usr/bin/prometheus", "--config.file=" + cfg,
                          "--storage.tsdb.path=" + os.path.join(self.tmp, "tsdb"),
                          "--web.listen-address=127.0.0.1:%d" % self.port,
                          "--log.level=warn"], self.tmp)

    def query(self, q):
        st, _, body = get(self.port, "/api/v1/query?query=" + urllib.parse.quote(q))
        if st != 200:
            return None
        res = json.loads(body)["data"]["result"]
        return float(res[0]["value"][1]) if res else None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def main():
    t_start = time.time()
    p = h.Pacsd(config={"dicom": {"max_associations": 1, "shutdown_timeout": 20}})
    prom = Prometheus(p.http_port)
    try:
        run_checks(p, prom, t_start)
    finally:
        prom.cleanup()
        p.cleanup()
    checks.finish()


def run_checks(p, prom, t_start):
    port, hp = p.port, p.http_port
    text0, m0 = scrape(hp)
    promtool(text0, "at start")
    checks.ok(text0.startswith("# HELP ") and text0.endswith("\n"), "exposition shape")
    version = h.run([h.PACSD, "version"]).stdout.split()[-1]
    checks.eq(val(m0, "pacsd_build_info", version=version), 1.0, "pacsd_build_info{version}")
    checks.ok(abs(val(m0, "process_start_time_seconds") - t_start) < 10,
              "process_start_time_seconds is when pacsd started",
              (val(m0, "process_start_time_seconds"), t_start))
    checks.ok(val(m0, "process_open_fds") > 3 and
              val(m0, "process_max_fds") >= val(m0, "process_open_fds"), "process fds")
    checks.ok(val(m0, "process_resident_memory_bytes") > 1e6, "process RSS")
    checks.ok(("process_cpu_seconds_total", ()) in m0, "process CPU")
    checks.eq(val(m0, "pacsd_dicom_associations_limit"), 1.0, "associations limit gauge")
    checks.eq(val(m0, "pacsd_http_connections_limit"), 512.0, "connections limit gauge")
    checks.ok(val(m0, "pacsd_http_connections") >= 1, "open connections include the scrape")
    checks.eq(val(m0, "pacsd_storage_instances"), 0.0, "empty archive: no instances")
    # Zero series exist before their first event (rate() needs them).
    checks.ok(("pacsd_dimse_operations_total",
               (("operation", "C-GET"), ("status", "failure"))) in m0, "zero series exported")

    # gzip on request (Prometheus asks for it).
    st, hd, body = get(hp, "/metrics", {"Accept-Encoding": "gzip"})
    checks.eq(hd.get("content-encoding"), "gzip", "/metrics gzip")
    checks.ok(gzip.decompress(body).startswith(b"# HELP "), "/metrics gzip body")

    # Traffic.
    echo = ["echoscu", "-aec", "PACSD", "127.0.0.1", str(port)]
    dcmtk(echo)
    dcmtk(echo)
    dcmtk(["storescu", "-aec", "PACSD", "127.0.0.1", str(port)] + FILES)
    dcmtk(["findscu", "-S", "-aec", "PACSD", "-k", "QueryRetrieveLevel=STUDY",
           "-k", "StudyInstanceUID", "127.0.0.1", str(port)])
    for _ in range(3):
        get(hp, "/no/such/path")
    get(hp, "/nope-%d" % os.getpid())
    get(hp, "/health/live", method="POST")
    get(hp, "/health/live")
    get(hp, "/health/live")
    # The storage gauges are cached 5 s: wait for them to see both files.
    text1, m1 = wait_for(lambda: (lambda t: t if val(t[1], "pacsd_storage_instances") == 2
                                  else None)(scrape(hp)), 10) or scrape(hp)
    promtool(text1, "after traffic")

    def delta(name, **labels):
        return val(m1, name, **labels) - val(m0, name, **labels)

    dimse = "pacsd_dimse_operations_total"
    checks.eq(delta(dimse, operation="C-ECHO", status="success"), 2, "C-ECHO success +2")
    checks.eq(delta(dimse, operation="C-STORE", status="success"), 2, "C-STORE success +2")
    checks.eq(delta(dimse, operation="C-FIND", status="success"), 1, "C-FIND success +1")
    checks.eq(delta(dimse, operation="C-STORE", status="failure"), 0, "no C-STORE failure")
    checks.eq(delta("pacsd_dicom_associations_total", outcome="accepted"), 4,
              "associations accepted +4")
    checks.eq(delta("pacsd_dicom_associations_total", outcome="rejected"), 0, "none rejected")
    checks.eq(delta("pacsd_dicom_associations_ended_total", how="released"), 4,
              "associations released +4")
    checks.eq(val(m1, "pacsd_dicom_associations_active"), 0.0, "no association active")
    checks.eq(delta("pacsd_ingest_instances_total", outcome="stored"), 2, "instances stored +2")
    stored_bytes = delta("pacsd_ingest_bytes_total")
    checks.ok(stored_bytes > 2000, "bytes stored", stored_bytes)
    checks.eq(val(m1, "pacsd_storage_bytes"), stored_bytes, "storage bytes = bytes ingested")
    checks.eq(val(m1, "pacsd_storage_instances"), 2.0, "storage instances")
    checks.eq(val(m1, "pacsd_storage_studies"), 2.0, "storage studies")
    checks.eq(delta("pacsd_ingest_duration_seconds_count"), 2, "ingest durations +2")
    checks.ok(delta("pacsd_ingest_duration_seconds_sum") > 0, "ingest duration sum grows")
    checks.eq(val(m1, "pacsd_ingest_duration_seconds_bucket", le="+Inf"),
              val(m1, "pacsd_ingest_duration_seconds_count"), "+Inf bucket = count")
    checks.eq(delta("pacsd_query_duration_seconds_count", level="study"), 1,
              "study query duration +1")
    req = "pacsd_http_requests_total"
    checks.eq(delta(req, method="GET", route="unmatched", status="404"), 4, "404s +4")
    checks.eq(delta(req, method="POST", route="unmatched", status="405"), 1, "405 +1")
    checks.eq(delta(req, method="GET", route="/health/live", status="200"), 2, "live +2")
    checks.ok(delta(req, method="GET", route="/metrics", status="200") >= 2, "metrics scrapes")
    checks.ok(not any("no/such" in str(k) or "nope" in str(k) for k in m1),
              "raw paths never become labels")
    checks.eq(delta("pacsd_http_request_duration_seconds_count", method="GET",
                    route="/health/live"), 2, "live durations +2")
    checks.eq(val(m1, "pacsd_metrics_dropped_updates_total"), 0.0, "nothing dropped")

    # Prometheus reads the same counters.
    up = wait_for(lambda: prom.query('up{job="pacsd"}') == 1.0, 30)
    checks.ok(up, "Prometheus scrapes pacsd (up == 1)", prom.output()[-2000:])
    for q, want in (
            ('pacsd_dimse_operations_total{operation="C-STORE",status="success"}',
             val(m1, dimse, operation="C-STORE", status="success")),
            ('pacsd_ingest_instances_total{outcome="stored"}',
             val(m1, "pacsd_ingest_instances_total", outcome="stored")),
            ('pacsd_http_requests_total{method="GET",route="unmatched",status="404"}',
             val(m1, req, method="GET", route="unmatched", status="404"))):
        got = wait_for(lambda: (lambda v: v if v == want else None)(prom.query(q)), 15)
        checks.eq(got, want, "Prometheus query " + q)

    # Readiness at the HTTP connection limit: 511 idle connections and the
    # probe's own make 512. Prometheus' keep-alive connection would count
    # too: it is stopped first.
    prom.stop()
    alone = wait_for(lambda: val(scrape(hp)[1], "pacsd_http_connections") == 1.0, 10)
    checks.ok(alone, "only the scrape's own connection is open")
    idle = [socket.create_connection(("127.0.0.1", hp), 10) for _ in range(511)]
    try:
        st, j = wait_for(lambda: (lambda r_: r_ if r_[0] == 503 else None)(ready(hp)), 5) or \
            ready(hp)
        checks.eq(st, 503, "not ready at the HTTP connection limit")
        checks.ok("HTTP connections at the limit: 512" in j.get("checks", {}).get("limits", ""),
                  "the reason names the HTTP connections", j)
    finally:
        for s in idle:
            s.close()
    st, _ = wait_for(lambda: (lambda r_: r_ if r_[0] == 200 else None)(ready(hp)), 10) or \
        ready(hp)
    checks.eq(st, 200, "ready again once connections close")

    # Readiness at the association limit.
    st, j = ready(hp)
    checks.eq(st, 200, "ready before the limit")
    holder, ptype = associate(port)
    checks.eq(ptype, 2, "raw association accepted (A-ASSOCIATE-AC)")
    st, j = ready(hp)
    checks.eq(st, 503, "not ready with every association slot in use")
    checks.ok("dicom.max_associations" in j.get("error", "") and
              "dicom.max_associations" in j.get("checks", {}).get("limits", ""),
              "the reason names dicom.max_associations", j)
    checks.eq(j.get("checks", {}).get("index"), "ok", "index still ok at the limit")
    _, m2 = scrape(hp)
    checks.eq(val(m2, "pacsd_dicom_associations_active"), 1.0, "one association active")
    r = h.run(echo, timeout=60)
    checks.ok(r.returncode != 0, "a second association is refused", r.stdout + r.stderr)
    _, m3 = scrape(hp)
    checks.eq(val(m3, "pacsd_dicom_associations_total", outcome="rejected") -
              val(m2, "pacsd_dicom_associations_total", outcome="rejected"), 1,
              "associations rejected +1")
    release(holder)
    st, _ = wait_for(lambda: (lambda r_: r_ if r_[0] == 200 else None)(ready(hp)), 10) or \
        ready(hp)
    checks.eq(st, 200, "ready again after the release")

    # SIGTERM while an association drains: not ready at once.
    holder, ptype = associate(port)
    checks.eq(ptype, 2, "association before SIGTERM")
    t0 = time.time()
    p.p.send_signal(signal.SIGTERM)
    # (The held association alone makes readiness 503 for its limit: wait
    # for the shutdown reason.)
    got = wait_for(lambda: (lambda r_: r_ if r_[1].get("error") == "shutting down" else None)(
        ready(hp)), 5)
    checks.ok(got and got[1].get("error") == "shutting down",
              "503 shutting down right after SIGTERM", got)
    checks.ok(time.time() - t0 < 5, "within 5 s of SIGTERM")
    checks.ok(p.alive(), "still draining the association")
    checks.eq(get(hp, "/health/live")[0], 200, "live while draining")
    release(holder)
    try:
        rc = p.p.wait(15)
    except subprocess.TimeoutExpired:
        rc = None
    checks.eq(rc, 0, "exit 0 after the drain")
    out = p.output()
    checks.ok("AddressSanitizer" not in out and "runtime error" not in out,
              "no sanitizer report", out[-3000:])


if __name__ == "__main__":
    main()
