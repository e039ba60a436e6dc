"""Shared helpers of the HTTP benchmarks (bench/http_stow.py, http_qido.py,
http_wado.py): the servers (pacsd, and Orthanc 1.10 with its DICOMweb
plugin, both started by tests/integration/harness.py on free loopback
ports), a keep-alive HTTP/1.1 client over http.client, the multipart/related
writer and reader of DICOMweb, and wrk.

Every client sends the same headers to both servers, and never
Accept-Encoding (no compression on either side).

Run with Debian's /usr/bin/python3.
"""
import http.client
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dimse_lib as L  # noqa: E402  (resolves $PACSD, imports the harness)

harness = L.harness
TARGETS = ("pacsd", "orthanc")


def command_line():
    """The command line as typed, for the header of each result table."""
    return " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], L.ROOT)] + sys.argv[1:])


def start(kind):
    """A fresh, empty server; returns (server, DICOMweb base path). pacsd
    with its default configuration (log at warn); Orthanc with the DICOMweb
    plugin, C-FIND allowed (for loading checks), everything else as the
    harness sets it (SQLite index, no compression)."""
    if kind == "pacsd":
        return harness.Pacsd(config={"log": {"level": "warn"}}), "/dicom-web"
    if kind == "orthanc":
        return harness.Orthanc(dicomweb=True, extra={"DicomAlwaysAllowFind": True}), "/dicom-web"
    raise ValueError(kind)


def liveness_path(kind):
    """pacsd's liveness probe; Orthanc has none, /system is its nearest
    (a small JSON answer that touches no index)."""
    return "/health/live" if kind == "pacsd" else "/system"


class HttpError(Exception):
    pass


class Conn:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1:port. request()
    returns (status, headers as a lower-case dict, body bytes); it
    reconnects once if the server had closed an idle connection."""

    def __init__(self, port, timeout=600):
        self.port = port
        self.timeout = timeout
        self.c = None

    def _connect(self):
        self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        self.c.connect()
        # Python's http.client sends headers and body in separate writes;
        # without TCP_NODELAY a small body waits for the delayed ACK.
        self.c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def request(self, method, path, body=None, headers=None):
        for attempt in (0, 1):
            if self.c is None:
                self._connect()
            try:
                self.c.request(method, path, body=body, headers=headers or {})
                r = self.c.getresponse()
                data = r.read()
                hdrs = {k.lower(): v for k, v in r.getheaders()}
                if hdrs.get("connection", "").lower() == "close":
                    self.close()
                return r.status, hdrs, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self):
        if self.c is not None:
            self.c.close()
            self.c = None


def get_json(conn, path):
    st, h, body = conn.request("GET", path, headers={"Accept": "application/dicom+json"})
    if st == 204:
        return []
    if st != 200:
        raise HttpError("GET %s: HTTP %d: %s" % (path, st, body[:300]))
    return json.loads(body)


# --- multipart/related ---------------------------------------------------------

def multipart(parts, content_type="application/dicom"):
    """(body, Content-Type header) of a multipart/related message with one
    part per item of parts (bytes)."""
    boundary = "pacsd-bench-" + uuid.uuid4().hex
    chunks = []
    for p in parts:
        chunks.append(b"--%s\r\nContent-Type: %s\r\n\r\n" % (boundary.encode(),
                                                             content_type.encode()))
        chunks.append(p)
        chunks.append(b"\r\n")
    chunks.append(b"--%s--\r\n" % boundary.encode())
    return b"".join(chunks), 'multipart/related; type="%s"; boundary=%s' % (content_type,
                                                                             boundary)


_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.I)


def split_multipart(content_type, body):
    """The part bodies of a multipart/related answer (RFC 2046: parts are
    separated by CRLF--boundary; the first may start the body)."""
    m = _BOUNDARY.search(content_type or "")
    if not m:
        raise HttpError("no boundary in Content-Type %r" % content_type)
    delim = b"--" + m.group(1).encode()
    body = b"\r\n" + body
    pieces = body.split(b"\r\n" + delim)
    parts = []
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            break
        head, sep, data = piece.partition(b"\r\n\r\n")
        if not sep:
            raise HttpError("a part without a header end")
        parts.append(data)
    return parts


# --- DIMSE loading (so that queries and retrieves do not depend on STOW) -------

# --- wrk -----------------------------------------------------------------------

WRK = "/usr/bin/wrk"


def wrk(port, path, seconds, threads=2, connections=8, accept=None):
    """wrk -t -c -d on one URL; returns (requests/s, {status class: count}
    problems text or None). Non-2xx answers are reported by wrk as
    'Non-2xx or 3xx responses: N'."""
    cmd = [WRK, "-t%d" % threads, "-c%d" % connections, "-d%ds" % seconds, "--latency"]
    if accept:
        cmd += ["-H", "Accept: %s" % accept]
    cmd.append("http://127.0.0.1:%d%s" % (port, path))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    out = r.stdout
    m = re.search(r"Requests/sec:\s*([0-9.]+)", out)
    p50 = re.search(r"^\s*50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s*99%\s+(\S+)", out, re.M)
    bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    errs = re.search(r"Socket errors:.*", out)
    problem = None
    if r.returncode != 0 or not m:
        problem = "wrk exited %d: %s%s" % (r.returncode, out[-300:], r.stderr[-300:])
    elif bad:
        problem = "%s non-2xx answers" % bad.group(1)
    return (float(m.group(1)) if m else float("nan"),
            p50.group(1) if p50 else "?", p99.group(1) if p99 else "?",
            (errs.group(0) if errs else ""), problem)


def timed(fn, *a):
    t = time.perf_counter()
    v = fn(*a)
    return time.perf_counter() - t, v
