"""Shared helpers of the DIMSE benchmarks (bench/dimse_store.py,
bench/dimse_find.py): the binary under test, the servers (started by
tests/integration/harness.py on free loopback ports, in temporary
directories under $TMPDIR, all on one filesystem), parallel storescu runs,
instance counts in each server, and a minimal C-FIND SCU over a raw socket
that times each query of one association.

Run with Debian's /usr/bin/python3.
"""
import os
import socket
import struct
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "bench", ".data")

# The binary: $PACSD, default build/pacsd relative to the source root. The
# harness reads $PACSD when imported, so it is resolved before the import.
PACSD = os.path.abspath(os.path.join(ROOT, os.environ.get("PACSD", "build/pacsd")))
os.environ["PACSD"] = PACSD
os.environ.setdefault("PACSD_SOURCE", ROOT)
# Nagle's algorithm plus delayed ACKs cost DCMTK ~40 ms per message; the
# harness sets it too, for DCMTK tools and Orthanc.
os.environ["TCP_NODELAY"] = "1"
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import harness  # noqa: E402

PY = "/usr/bin/python3"
CALLING_AET = "BENCHSCU"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def need(tool):
    if not (os.path.isabs(tool) and os.access(tool, os.X_OK)) and \
            subprocess.run(["sh", "-c", "command -v '%s'" % tool],
                           capture_output=True).returncode != 0:
        sys.exit("%s: %s not found" % (os.path.basename(sys.argv[0]), tool))


def context():
    """What else the machine was doing: CPUs and the 1-minute load average
    (the measurements are only comparable within one run)."""
    return "%d CPUs, load average %.1f" % (os.cpu_count() or 0, os.getloadavg()[0])


def warm_cache(paths):
    """Reads every file once (as `cat FILES > /dev/null`), so that each
    target's run starts with the data in the page cache."""
    n = 0
    for p in paths:
        with open(p, "rb") as f:
            while True:
                b = f.read(1 << 20)
                if not b:
                    break
                n += len(b)
    return n


# --- servers -----------------------------------------------------------------

def start(kind, max_pdu=None, pacsd_env=None):
    """Starts a fresh, empty server: 'pacsd', 'orthanc' or 'storescp'.
    max_pdu (bytes) overrides each one's default receive PDU size."""
    if kind == "pacsd":
        cfg = {"log": {"level": "warn"}}
        if max_pdu:
            cfg["dicom"] = {"max_pdu_length": max_pdu}
        return harness.Pacsd(config=cfg, env=pacsd_env)
    if kind == "orthanc":
        # C-FIND from an AE not listed in DicomModalities is refused unless
        # DicomAlwaysAllowFind (C-STORE is allowed by default).
        extra = {"DicomAlwaysAllowFind": True}
        if max_pdu:
            extra["MaximumPduLength"] = max_pdu
        return harness.Orthanc(extra=extra)
    if kind == "storescp":
        return harness.StoreSCP(extra=("-pdu", str(max_pdu)) if max_pdu else ())
    raise ValueError(kind)


def count(kind, srv):
    """Instances the server holds now."""
    if kind == "pacsd":
        r = harness.run(["sqlite3", os.path.join(srv.data_dir, "index.db"),
                         "SELECT count(*) FROM instances"], check=True)
        return int(r.stdout.strip())
    if kind == "orthanc":
        return int(srv.rest("GET", "/statistics")["CountInstances"])
    if kind == "storescp":
        return len(os.listdir(srv.out))
    raise ValueError(kind)


def storescu_parallel(srv, groups, extra=(), progress=None):
    """Runs one storescu per group (a list of file or directory arguments),
    all at once, each over one association; waits for all. Returns
    (seconds from the first start to the last exit, [exit status],
    [stderr text]). progress(): called every 10 s while they run."""
    procs, errs = [], []
    t0 = time.perf_counter()
    for g in groups:
        err = open(os.path.join(srv.tmp, "storescu-%d.err" % len(procs)), "w+")
        errs.append(err)
        procs.append(subprocess.Popen(
            ["storescu", "-aet", CALLING_AET, "-aec", srv.aet, *extra,
             "127.0.0.1", str(srv.port), *g],
            stdout=subprocess.DEVNULL, stderr=err))
    stop = threading.Event()
    if progress:
        def tick():
            while not stop.wait(10):
                try:
                    progress(time.perf_counter() - t0)
                except Exception as e:  # a progress line is not worth a crash
                    log("  (progress: %s)" % e)
        th = threading.Thread(target=tick, daemon=True)
        th.start()
    rcs = [p.wait() for p in procs]
    secs = time.perf_counter() - t0
    stop.set()
    texts = []
    for e in errs:
        e.seek(0)
        texts.append(e.read())
        e.close()
    return secs, rcs, texts


def split(items, k):
    """k contiguous, near-equal slices (each sender gets its own patients)."""
    n = len(items)
    return [items[i * n // k:(i + 1) * n // k] for i in range(k)]


def percentile(sorted_vals, q):
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, int(-(-q * len(sorted_vals) // 100)) - 1))
    return sorted_vals[k]


# --- a minimal C-FIND SCU ------------------------------------------------------
# PS3.8 upper layer (A-ASSOCIATE, P-DATA-TF, A-RELEASE) and PS3.7 C-FIND, one
# presentation context (Study Root Q/R FIND, Implicit VR Little Endian), so
# that each query of one association can be timed on its own.

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
APP_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPL_CLASS = "2.25.306173584219457425305329587428375810263"


class DimseError(Exception):
    pass


def _item(t, payload):
    return struct.pack(">BBH", t, 0, len(payload)) + payload


def _uid(s):
    b = s.encode()
    return b + b"\0" if len(b) % 2 else b


def elem(group, el, value):
    """One Implicit VR Little Endian element; value: bytes, str (padded with
    a space, or NUL for UIDs by the caller) or int (US)."""
    if isinstance(value, int):
        value = struct.pack("<H", value)
    elif isinstance(value, str):
        value = value.encode("latin-1")
        if len(value) % 2:
            value += b" "
    return struct.pack("<HHI", group, el, len(value)) + value


def parse_implicit(buf):
    """Top-level elements of an Implicit VR LE data set -> {(g, e): bytes}.
    Stops at an undefined length (no sequences are expected here)."""
    out, off = {}, 0
    while off + 8 <= len(buf):
        g, e, n = struct.unpack_from("<HHI", buf, off)
        off += 8
        if n == 0xFFFFFFFF or off + n > len(buf):
            break
        out[(g, e)] = bytes(buf[off:off + n])
        off += n
    return out


def text(v):
    return v.rstrip(b"\0 ").decode("latin-1") if v is not None else None


class FindSCU:
    def __init__(self, host, port, called, calling=CALLING_AET, timeout=120):
        self.sock = socket.create_connection((host, port), timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rbuf = bytearray()
        self.msg_id = 0
        self.pc_id = 1
        self.peer_max = 0
        self._associate(called, calling)

    # -- PDUs
    def _recv_exact(self, n):
        while len(self.rbuf) < n:
            b = self.sock.recv(max(65536, n - len(self.rbuf)))
            if not b:
                raise DimseError("connection closed by peer")
            self.rbuf += b
        out = bytes(self.rbuf[:n])
        del self.rbuf[:n]
        return out

    def _read_pdu(self):
        t, _, n = struct.unpack(">BBI", self._recv_exact(6))
        return t, self._recv_exact(n)

    def _associate(self, called, calling):
        pc = _item(0x20, bytes([self.pc_id, 0, 0, 0]) +
                   _item(0x30, STUDY_ROOT_FIND.encode()) + _item(0x40, IMPLICIT_LE.encode()))
        ui = _item(0x50, _item(0x51, struct.pack(">I", 262144)) +
                   _item(0x52, IMPL_CLASS.encode()) + _item(0x55, b"PACSD_BENCH"))
        body = (struct.pack(">HH", 1, 0) + called.ljust(16).encode() +
                calling.ljust(16).encode() + bytes(32) +
                _item(0x10, APP_CONTEXT.encode()) + pc + ui)
        self.sock.sendall(struct.pack(">BBI", 0x01, 0, len(body)) + body)
        t, p = self._read_pdu()
        if t != 0x02:
            raise DimseError("association not accepted (PDU type 0x%02x: %s)" % (t, p[:16].hex()))
        off = 68
        accepted = False
        while off + 4 <= len(p):
            it, _, n = struct.unpack_from(">BBH", p, off)
            v = p[off + 4:off + 4 + n]
            if it == 0x21 and v[0] == self.pc_id and v[2] == 0:
                accepted = True
            elif it == 0x50:
                o = 0
                while o + 4 <= len(v):
                    st, _, sn = struct.unpack_from(">BBH", v, o)
                    if st == 0x51 and sn == 4:
                        self.peer_max = struct.unpack_from(">I", v, o + 4)[0]
                    o += 4 + sn
            off += 4 + n
        if not accepted:
            raise DimseError("Study Root FIND / Implicit VR LE not accepted")

    def _send_pdv(self, data, is_command):
        # PDVs no longer than the peer's maximum PDU (0: unlimited).
        chunk = (self.peer_max - 6) if self.peer_max else len(data) or 1
        off = 0
        out = bytearray()
        while True:
            part = data[off:off + chunk]
            off += len(part)
            last = off >= len(data)
            mch = (1 if is_command else 0) | (2 if last else 0)
            pdv = struct.pack(">IBB", len(part) + 2, self.pc_id, mch) + part
            out += struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv
            if last:
                break
        self.sock.sendall(out)

    def _read_message(self):
        """-> (command dict, data set bytes or None)."""
        cmd, data = bytearray(), bytearray()
        cmd_done = False
        want_data = None
        while True:
            t, p = self._read_pdu()
            if t == 0x07:
                raise DimseError("A-ABORT from peer (source %d reason %d)" % (p[2], p[3]))
            if t != 0x04:
                raise DimseError("unexpected PDU type 0x%02x" % t)
            off = 0
            while off + 6 <= len(p):
                n, _, mch = struct.unpack_from(">IBB", p, off)
                frag = p[off + 6:off + 4 + n]
                off += 4 + n
                if mch & 1:
                    cmd += frag
                    if mch & 2:
                        cmd_done = True
                        c = parse_implicit(cmd)
                        dst = struct.unpack("<H", c.get((0, 0x0800), b"\x01\x01"))[0]
                        want_data = dst != 0x0101
                        if not want_data:
                            return c, None
                else:
                    data += frag
                    if mch & 2 and cmd_done:
                        return parse_implicit(cmd), bytes(data)

    def find(self, identifier, level_uid=STUDY_ROOT_FIND):
        """One C-FIND; returns (final status, [identifier dicts])."""
        self.msg_id = (self.msg_id % 65535) + 1
        body = (elem(0, 0x0002, _uid(level_uid)) + elem(0, 0x0100, 0x0020) +
                elem(0, 0x0110, self.msg_id) + elem(0, 0x0700, 0) + elem(0, 0x0800, 0x0000))
        cmd = elem(0, 0x0000, struct.pack("<I", len(body))) + body
        self._send_pdv(cmd, True)
        self._send_pdv(identifier, False)
        matches = []
        while True:
            c, d = self._read_message()
            status = struct.unpack("<H", c.get((0, 0x0900), b"\xff\xff"))[0]
            if status in (0xFF00, 0xFF01):
                if d is not None:
                    matches.append(parse_implicit(d))
                continue
            return status, matches

    def close(self):
        self.sock.close()

    def release(self):
        try:
            self.sock.sendall(struct.pack(">BBI", 0x05, 0, 4) + bytes(4))
            t, _ = self._read_pdu()
            if t != 0x06:
                raise DimseError("expected A-RELEASE-RP, got PDU type 0x%02x" % t)
        finally:
            self.sock.close()


def study_query(patient_id):
    """Study-level identifier: PatientID=<id>, returning StudyInstanceUID,
    StudyDate, PatientName, NumberOfStudyRelatedInstances and
    ModalitiesInStudy (elements in ascending tag order)."""
    return (elem(0x0008, 0x0020, b"") + elem(0x0008, 0x0052, "STUDY") +
            elem(0x0008, 0x0061, b"") + elem(0x0010, 0x0010, b"") +
            elem(0x0010, 0x0020, patient_id) + elem(0x0020, 0x000D, b"") +
            elem(0x0020, 0x1208, b""))


def load_parallel(kind, srv, groups, n, extra=()):
    """storescu of every group at once (storescu_parallel), then checks the
    count. Returns (seconds, [problems])."""
    last = [0.0, 0]

    def progress(el):
        c = count(kind, srv)
        rate = (c - last[1]) / (el - last[0]) if el > last[0] else 0
        last[0], last[1] = el, c
        log("  %s: %d/%d stored after %.0f s (%.0f inst/s now)" % (kind, c, n, el, rate))

    secs, rcs, errs = storescu_parallel(srv, [g for g in groups if g], extra=extra,
                                          progress=progress)
    problems = ["load: storescu #%d exited %d: %s" % (i, rc, e.strip()[-300:])
                for i, (rc, e) in enumerate(zip(rcs, errs)) if rc != 0]
    got = count(kind, srv)
    if got != n:
        problems.append("load: %s holds %d instances, want %d" % (kind, got, n))
    return secs, problems
