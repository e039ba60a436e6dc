#!/usr/bin/python3
"""The HTTP server's foundation and the health probes (docs/http.md).

One pacsd (log level debug, so every request is logged) answers, over
http.client and raw sockets:
- /health/live, /health/startup, /health/ready: 200 with JSON; HEAD too;
- readiness 503 naming the storage check while the store cannot commit,
  and 200 again once it can. How the store is broken, as root too: the
  first probe creates files/he/ (probe keys start "healthprobe", and the
  archive's hex keys never use that directory); the test replaces it with a
  plain file, so the probe's rename fails with ENOTDIR (chmod stops no
  root, and files/tmp cannot be swapped: the store holds it open), then
  puts the directory back;
- 404 JSON for an unknown path, 405 JSON with Allow for a wrong method,
  413 JSON for a body sent to a route that takes none, MHD's own 431 for
  headers over the limit (the server keeps serving);
- X-Request-Id echoed when sane, generated (16 hex digits) otherwise, and
  equal to the error body's request_id; the security headers; a Server
  header without a version;
- several requests on one keep-alive connection; 200 connections open at
  once, each answered; a client sending its headers a byte at a time does
  not hold up others (the inactivity timeout itself, 60 s, is too long to
  wait for here);
- one JSON log line per request (method, path, status, duration_ms,
  request_id), warn for a 5xx;
- SIGTERM with a keep-alive connection and a half-sent request open: exit 0
  within a few seconds, no sanitizer report.
gzip: a large JSON answer compressed when Accept-Encoding takes gzip (and
only then), a DICOM file never.
A second pacsd with http.header_timeout 2 and http.cors_origin set: a
client trickling its headers gets a 408 after ~2 s; CORS headers on every
response, and OPTIONS preflights answered 204 with the path's methods.
Also: http.enabled=false leaves the port closed, and an HTTP port in use
stops start-up with an error that names it.

Run with Debian's /usr/bin/python3; $PACSD names the binary. Ends with
"N passed, N failed".
"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

checks = h.Checks()
SECURITY = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def request(port, method, path, headers=None, body=None, conn=None):
    """One request; returns (status, {lowercased header: value}, body)."""
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        if conn is None:
            c.close()


def json_of(body):
    try:
        return json.loads(body)
    except ValueError:
        return None


def check_error(status, hdrs, body, want, what):
    checks.eq(status, want, what + ": status")
    checks.eq(hdrs.get("content-type"), "application/json", what + ": content type")
    j = json_of(body) or {}
    checks.eq(j.get("status"), want, what + ": status in the body")
    checks.ok(isinstance(j.get("error"), str) and j["error"], what + ": error message", body)
    checks.eq(j.get("request_id"), hdrs.get("x-request-id"), what + ": request_id = header")
    for k, v in SECURITY.items():
        checks.eq(hdrs.get(k), v, what + ": " + k)


def test_health(port):
    for path, want in (("/health/live", {"status": "ok"}),
                       ("/health/startup", {"status": "started"})):
        st, hd, body = request(port, "GET", path)
        checks.eq(st, 200, path)
        checks.eq(hd.get("content-type"), "application/json", path + " content type")
        checks.eq(json_of(body), want, path + " body")
    st, hd, body = request(port, "GET", "/health/ready")
    checks.eq(st, 200, "/health/ready")
    checks.eq(json_of(body), {"status": "ready", "checks": {"index": "ok", "storage": "ok"}},
              "/health/ready body")
    for path in ("/health/live", "/health/startup", "/health/ready"):
        st, hd, body = request(port, "HEAD", path)
        checks.eq((st, body), (200, b""), "HEAD " + path)
        checks.ok(int(hd.get("content-length", "0")) > 0, "HEAD %s: Content-Length" % path)


def test_headers(port):
    st, hd, body = request(port, "GET", "/health/live")
    for k, v in SECURITY.items():
        checks.eq(hd.get(k), v, "200: " + k)
    server = hd.get("server", "")
    checks.ok(not re.search(r"[0-9]", server), "Server header has no version", server)
    checks.ok("access-control-allow-origin" not in hd, "no CORS header by default")
    checks.ok(re.fullmatch(r"[0-9a-f]{16}", hd.get("x-request-id", "")),
              "request id generated", hd.get("x-request-id"))
    ids = {request(port, "GET", "/health/live")[1].get("x-request-id") for _ in range(20)}
    checks.eq(len(ids), 20, "generated request ids differ")

    st, hd, body = request(port, "GET", "/health/live", {"X-Request-Id": "trace-42.a:b_c"})
    checks.eq(hd.get("x-request-id"), "trace-42.a:b_c", "request id echoed")
    for bad in ("x" * 65, "a b", "<script>", "a\"b"):
        st, hd, body = request(port, "GET", "/health/live", {"X-Request-Id": bad})
        checks.ok(re.fullmatch(r"[0-9a-f]{16}", hd.get("x-request-id", "")),
                  "insane request id %r replaced" % bad[:10], hd.get("x-request-id"))
    st, hd, body = request(port, "GET", "/nope", {"X-Request-Id": "trace-404"})
    checks.eq((json_of(body) or {}).get("request_id"), "trace-404", "request id in error body")


def test_errors(port):
    for path in ("/nope", "/health", "/health/live/", "/health/live/x", "/", "//health/live"):
        st, hd, body = request(port, "GET", path)
        check_error(st, hd, body, 404, "GET " + path)
    for method in ("POST", "DELETE", "PUT"):
        st, hd, body = request(port, method, "/health/live", body=b"" if method != "DELETE" else None)
        check_error(st, hd, body, 405, method + " /health/live")
        checks.eq(hd.get("allow"), "GET, HEAD", method + ": Allow")
    st, hd, body = request(port, "GET", "/health/live", body=b"unexpected")
    check_error(st, hd, body, 413, "GET with a body")

    # Headers beyond the connection's memory: MHD's 431, then business as usual.
    s = socket.create_connection(("127.0.0.1", port), 10)
    s.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100000 + b"\r\n\r\n")
    got = b""
    try:
        while b"\r\n" not in got:
            part = s.recv(4096)
            if not part:
                break
            got += part
    except OSError:
        pass
    s.close()
    checks.ok(got.startswith(b"HTTP/1.1 431"), "oversized headers: 431", got[:40])
    checks.eq(request(port, "GET", "/health/live")[0], 200, "serving after a 431")


def test_keepalive(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    statuses = []
    socks = set()
    for path in ("/health/live", "/nope", "/health/ready", "/health/startup", "/health/live"):
        st, hd, body = request(port, "GET", path, conn=c)
        statuses.append(st)
        socks.add(id(c.sock))
        checks.ok(hd.get("connection", "").lower() != "close", "keep-alive after " + path)
    c.close()
    checks.eq(statuses, [200, 404, 200, 200, 200], "requests on one connection")
    checks.eq(len(socks), 1, "one socket for all of them")


def test_concurrent(port, n=200):
    barrier = threading.Barrier(n)
    results = [None] * n

    def one(i):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.connect()
            barrier.wait(30)  # every connection open before any request
            c.request("GET", "/health/live")
            r = c.getresponse()
            results[i] = (r.status, r.read())
            c.close()
        except Exception as e:  # noqa: BLE001 - reported below
            results[i] = repr(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    good = sum(1 for r in results if r == (200, b'{"status":"ok"}'))
    checks.eq(good, n, "%d concurrent connections answered" % n)
    bad = [r for r in results if r != (200, b'{"status":"ok"}')]
    if bad:
        print("  e.g. %r" % (bad[0],))


def test_slow_client(port):
    req = b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    s = socket.create_connection(("127.0.0.1", port), 10)
    worst = 0.0
    for i in range(4):  # four bytes, a second apart, others served meanwhile
        s.sendall(req[i:i + 1])
        t = time.time()
        st = request(port, "GET", "/health/live")[0]
        worst = max(worst, time.time() - t)
        checks.eq(st, 200, "request while a slow client trickles (%d)" % i)
        time.sleep(1)
    checks.ok(worst < 1.0, "others not held up by the slow client", "%.2f s" % worst)
    s.sendall(req[4:])
    got = s.recv(4096)
    s.close()
    checks.ok(got.startswith(b"HTTP/1.1 200"), "slow client answered when done", got[:30])


def recv_all(s, limit=10.0):
    s.settimeout(limit)
    got = b""
    try:
        while True:
            b = s.recv(4096)
            if not b:
                break
            got += b
    except (socket.timeout, ConnectionResetError):
        pass
    return got


def test_timeouts_and_cors():
    """http.header_timeout cuts a client trickling its headers with a 408;
    CORS headers and preflights when http.cors_origin is set."""
    p = h.Pacsd(config={"http": {"header_timeout": 2, "min_upload_rate": 1000,
                                 "cors_origin": "https://viewer.example"}})
    try:
        port = p.http_port
        h.wait_port(port, proc=p.p)
        # A byte a second: cut with a 408 after ~2 s, not when the headers end.
        s = socket.create_connection(("127.0.0.1", port), 10)
        t = time.time()
        req = b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n"
        cut = None
        for i in range(len(req)):
            try:
                s.sendall(req[i:i + 1])
            except OSError:
                cut = time.time() - t
                break
            s.settimeout(1.0)
            try:
                b = s.recv(4096)
            except socket.timeout:
                continue
            cut = time.time() - t
            got = b + recv_all(s, 2)
            break
        s.close()
        checks.ok(cut is not None and 1.5 < cut < 5.0, "trickled headers cut near 2 s",
                  "after %s s" % cut)
        checks.ok(got.startswith(b"HTTP/1.1 408 "), "408 for trickled headers", got[:40])
        body = json_of(got.split(b"\r\n\r\n", 1)[-1]) or {}
        checks.eq(body.get("status"), 408, "408 body status")
        checks.ok("http.header_timeout" in body.get("error", ""), "408 says why", body)
        # An idle keep-alive connection is closed the same way; a busy one is not.
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        st = request(port, "GET", "/health/live", conn=c)[0]
        checks.eq(st, 200, "keep-alive request before idling")
        time.sleep(1)
        st = request(port, "GET", "/health/live", conn=c)[0]
        checks.eq(st, 200, "keep-alive request within the header timeout")
        c.close()
        checks.eq(request(port, "GET", "/health/live")[0], 200, "serving after the cuts")

        # A body trickled below http.min_upload_rate: 408 once the grace
        # (http.header_timeout) is over, answered in mid-body.
        s = socket.create_connection(("127.0.0.1", port), 10)
        s.sendall(b"POST /dicom-web/studies HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                  b"Content-Type: multipart/related; type=\"application/dicom\"; boundary=b\r\n"
                  b"\r\n--b\r\n")
        t = time.time()
        got = b""
        while time.time() - t < 8 and not got:
            try:
                s.sendall(b"x")
            except OSError:
                break
            s.settimeout(0.5)
            try:
                got = s.recv(4096)
            except socket.timeout:
                pass
        got += recv_all(s, 2)
        s.close()
        checks.ok(got.startswith(b"HTTP/1.1 408 "), "408 for a trickled body", got[:40])
        body = json_of(got.split(b"\r\n\r\n", 1)[-1]) or {}
        checks.ok("http.min_upload_rate" in body.get("error", ""), "body 408 says why", body)
        checks.ok(2.0 < time.time() - t < 6.0, "trickled body cut after the grace",
                  "%.1f s" % (time.time() - t))
        checks.eq(request(port, "GET", "/health/live")[0], 200, "serving after the body cut")

        origin = {"Origin": "https://viewer.example"}
        st, hd, body = request(port, "GET", "/health/live", origin)
        checks.eq(hd.get("access-control-allow-origin"), "https://viewer.example", "CORS origin")
        checks.ok("Origin" in hd.get("vary", ""), "CORS: Vary Origin", hd.get("vary"))
        st, hd, body = request(port, "GET", "/nope", origin)
        checks.eq(hd.get("access-control-allow-origin"), "https://viewer.example",
                  "CORS origin on errors")
        st, hd, body = request(port, "OPTIONS", "/health/ready",
                               dict(origin, **{"Access-Control-Request-Method": "GET",
                                               "Access-Control-Request-Headers": "authorization"}))
        checks.eq(st, 204, "preflight: 204")
        checks.eq(hd.get("access-control-allow-methods"), "GET, HEAD, OPTIONS",
                  "preflight: methods")
        checks.eq(hd.get("access-control-allow-headers"), "authorization", "preflight: headers")
        checks.eq(request(port, "OPTIONS", "/nope", origin)[0], 404, "preflight of nothing: 404")
    finally:
        p.cleanup()


def test_compression(port):
    """gzip for large JSON answers when asked, never otherwise."""
    import gzip
    path = os.path.join(os.environ.get("PYDICOM_TEST_FILES",
                                       "/usr/lib/python3/dist-packages/pydicom/data/test_files"),
                        "CT_small.dcm")
    with open(path, "rb") as f:
        data = f.read()
    st, hd, body = request(port, "POST", "/instances", {"Content-Type": "application/dicom"}, data)
    checks.eq(st, 200, "upload for the compression checks")
    iid = (json_of(body) or {}).get("ID", "")
    url = "/instances/%s/tags" % iid
    st, hd, plain = request(port, "GET", url)
    checks.eq(st, 200, "tags without Accept-Encoding")
    checks.ok("content-encoding" not in hd, "not compressed unless asked")
    checks.ok(len(plain) > 1024, "tags answer is large enough to compress", len(plain))
    for ae in ("gzip", "deflate, gzip;q=0.5", "*"):
        st, hd, z = request(port, "GET", url, {"Accept-Encoding": ae})
        checks.eq(hd.get("content-encoding"), "gzip", "gzip for Accept-Encoding: " + ae)
        checks.ok("Accept-Encoding" in hd.get("vary", ""), "Vary: Accept-Encoding", hd.get("vary"))
        try:
            checks.eq(gzip.decompress(z), plain, "gzip body decompresses to the plain one")
        except OSError as e:
            checks.ok(False, "gzip body decompresses", str(e))
        checks.ok(len(z) < len(plain) / 2, "gzip shrinks JSON", "%d -> %d" % (len(plain), len(z)))
    for ae in ("gzip;q=0", "identity", "br"):
        st, hd, b = request(port, "GET", url, {"Accept-Encoding": ae})
        checks.ok("content-encoding" not in hd and b == plain, "no gzip for " + ae)
    st, hd, b = request(port, "GET", "/instances/%s/file" % iid, {"Accept-Encoding": "gzip"})
    checks.ok("content-encoding" not in hd and b == data, "DICOM files go as stored")


def test_readiness_failure(p):
    port = p.http_port
    files = os.path.join(p.data_dir, "files")
    probe_dir = os.path.join(files, "he")
    checks.eq(request(port, "GET", "/health/ready")[0], 200, "ready before breaking storage")
    checks.ok(os.path.isdir(probe_dir), "probe directory files/he exists")
    shutil.rmtree(probe_dir)
    with open(probe_dir, "w") as f:
        f.write("not a directory\n")
    st = body = hd = None
    end = time.time() + 5
    while time.time() < end:  # the last result is reused for a second
        st, hd, body = request(port, "GET", "/health/ready")
        if st == 503:
            break
        time.sleep(0.2)
    check_error(st, hd, body, 503, "ready with storage broken")
    j = json_of(body) or {}
    storage = (j.get("checks") or {}).get("storage", "")
    checks.ok(storage.startswith("error: "), "storage check names the failure", storage)
    checks.eq((j.get("checks") or {}).get("index"), "ok", "index check still ok")
    checks.ok("storage" in j.get("error", ""), "error names the storage check", j.get("error"))
    checks.eq(request(port, "GET", "/health/live")[0], 200, "live while unready")

    os.unlink(probe_dir)
    os.mkdir(probe_dir)
    end = time.time() + 5
    while time.time() < end:
        st, hd, body = request(port, "GET", "/health/ready")
        if st == 200:
            break
        time.sleep(0.2)
    checks.eq(st, 200, "ready again after the fix")
    checks.eq(os.listdir(probe_dir), [], "probe objects are deleted")
    checks.eq(os.listdir(os.path.join(files, "tmp")), [], "no probe temporaries left")


def test_log(p, rid):
    lines = []
    for line in p.output().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            pass
    mine = [l for l in lines if l.get("msg") == "http request" and l.get("request_id") == rid]
    checks.eq(len(mine), 1, "one log line for the request")
    if mine:
        l = mine[0]
        checks.eq((l.get("level"), l.get("method"), l.get("path"), l.get("status")),
                  ("debug", "GET", "/health/live", "200"), "request log fields")
        checks.ok(re.fullmatch(r"[0-9]+\.[0-9]+", l.get("duration_ms", "")), "duration_ms",
                  l.get("duration_ms"))
    warn = [l for l in lines if l.get("msg") == "http request" and l.get("status") == "503"]
    checks.ok(warn and all(l.get("level") == "warn" for l in warn), "5xx logged at warn")


def test_sigterm(p):
    port = p.http_port
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    st = request(port, "GET", "/health/live", conn=c)[0]
    checks.eq(st, 200, "keep-alive connection open")
    half = socket.create_connection(("127.0.0.1", port), 10)
    half.sendall(b"GET /health/li")
    time.sleep(0.2)
    t = time.time()
    rc = p.stop(signal.SIGTERM, timeout=15)
    took = time.time() - t
    checks.eq(rc, 0, "SIGTERM with HTTP connections open: exit status")
    checks.ok(took < 5, "stopped within seconds", "%.1f s" % took)
    out = p.output()
    checks.ok("Sanitizer" not in out and "runtime error" not in out, "no sanitizer report",
              out[-2000:])
    c.close()
    half.close()


def test_disabled_and_port_in_use():
    p = h.Pacsd(config={"http": {"enabled": False}})
    try:
        try:
            socket.create_connection(("127.0.0.1", p.http_port), 1).close()
            listening = True
        except OSError:
            listening = False
        checks.ok(not listening, "http.enabled=false: HTTP port closed")
    finally:
        p.cleanup()

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    tmp = tempfile.mkdtemp(prefix="pacsd-test-")
    try:
        cfg = os.path.join(tmp, "pacsd.json")
        with open(cfg, "w") as f:
            json.dump({"data_dir": os.path.join(tmp, "data"), "bind": "127.0.0.1",
                       "dicom": {"port": h.free_port()}, "http": {"port": port}}, f)
        r = h.run([h.PACSD, "serve", "--config", cfg], timeout=30)
        checks.eq(r.returncode, 1, "HTTP port in use: exit status")
        checks.ok("cannot listen on 127.0.0.1:%d (HTTP)" % port in r.stderr,
                  "HTTP port in use: message", r.stderr[-500:])
    finally:
        busy.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    t0 = time.time()
    p = h.Pacsd(config={"log": {"level": "debug"}})
    try:
        port = p.http_port
        h.wait_port(port, proc=p.p)
        test_health(port)
        test_headers(port)
        test_errors(port)
        test_keepalive(port)
        test_concurrent(port)
        test_slow_client(port)
        test_compression(port)
        test_readiness_failure(p)
        rid = "log-check-1"
        request(port, "GET", "/health/live", {"X-Request-Id": rid})
        time.sleep(0.2)  # the line is written when the request completes
        test_log(p, rid)
        test_sigterm(p)
    finally:
        p.cleanup()
    test_disabled_and_port_in_use()
    test_timeouts_and_cors()
    print("took %.1f s" % (time.time() - t0))
    checks.finish()


if __name__ == "__main__":
    main()
