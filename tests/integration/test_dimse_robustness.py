#!/usr/bin/python3
"""DIMSE robustness: what pacsd answers to bad, hostile or merely unusual
peers, byte for byte, and that it keeps serving and loses nothing.

PDUs are built by hand (raw sockets + struct) so that every field can be
wrong; DCMTK's echoscu/storescu/findscu provide the valid traffic. For each
case the answer PS3.8 prescribes is asserted exactly:

- A-ASSOCIATE-RJ result/source/reason (PS3.8 9.3.4): called AE title not
  recognized 1/1/7, calling AE title not recognized 1/1/3 (allow-list),
  application context not supported 1/1/2, protocol version not supported
  1/2/2, no acceptable presentation context 1/1/1, and at the association
  limit 2/3/2 (transient, presentation-related, local limit exceeded);
- A-ABORT (PDU type 7) for malformed, unknown, oversized or unexpected PDUs
  (PS3.8 Table 9-10: Evt19 and out-of-state PDUs -> AA-1/AA-8), with source
  2 (service provider) and the reason where the state machine fixes it;
- the connection closed (and nothing sent) when a peer connects and says
  nothing, or trickles or stalls inside its A-ASSOCIATE-RQ (ARTIM runs
  until the whole RQ is in, AE-5/AE-6; then AA-2);
  an A-ABORT then close when an established peer stalls mid-PDU or idles;
- DIMSE level: a garbage command set, a command over 64 KiB, PDVs of a
  message on the wrong context or of the wrong kind abort; a C-STORE whose
  data set does not parse gets 0xC000, one over dicom.max_message_size
  0xA700, one whose command names another instance 0xA900, one on a
  context negotiated for another SOP class is refused, a C-FIND with a
  garbage identifier 0xC000 (none at all 0xA900), a C-MOVE to an unknown
  AE 0xA801, and the association goes on;
- unusual but valid traffic is served: commands in 1-byte or empty PDVs,
  command and data set in one PDU, PDUs of exactly the Maximum Length, a
  requestor Maximum Length of 32 (every PDU pacsd sends fits), 128
  presentation contexts, protocol version 3, 20 concurrent copies of one
  instance (one row, one file).

After every case echoscu must still succeed; at the end the instances
stored first (storescu) and those stored during the run are all in the
index (SQLite, read-only) with their files intact (SHA-256), findscu finds
them, no temporary file is left, and pacsd stops cleanly on SIGTERM with
no sanitizer report. A second pacsd takes 200 concurrent associations
(threads with a minimal raw C-ECHO/C-STORE client), a third one has
max_associations 4 for the limit.

Run with Debian's /usr/bin/python3; $PACSD names the binary. Options: -v
prints each case as it runs. Ends with "N passed, N failed".
"""
import hashlib
import os
import random
import socket
import sqlite3
import struct
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

VERBOSE = "-v" in sys.argv[1:]

APP_CTX = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"        # Secondary Capture Image Storage
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
UID_ROOT = "1.2.826.0.1.3680043.10.999"          # test UIDs

ARTIM_S, READ_S, IDLE_S = 2, 3, 5                # distinct, so each timer is seen
MAX_PDU = 16384                                  # what the main pacsd accepts
MAX_MESSAGE = 100000                             # its dicom.max_message_size

T_ASSOC_RQ, T_ASSOC_AC, T_ASSOC_RJ, T_PDATA, T_REL_RQ, T_REL_RP, T_ABORT = range(1, 8)

checks = h.Checks()


def log(msg):
    if VERBOSE:
        print(msg, flush=True)


# --- PDU building ----------------------------------------------------------

def pdu(ptype, body):
    return struct.pack(">BBI", ptype, 0, len(body)) + body


def item(itype, body):
    return struct.pack(">BBH", itype, 0, len(body)) + body


def assoc_rq(called="PACSD", calling="ROBUST", contexts=((1, VERIFICATION, (IMPLICIT,)),),
             version=1, app=APP_CTX, max_pdu=MAX_PDU, user_extra=b"", raw_body=False):
    """An A-ASSOCIATE-RQ PDU (or only its body with raw_body)."""
    body = struct.pack(">HH", version, 0) + called.ljust(16).encode() + \
        calling.ljust(16).encode() + bytes(32)
    body += item(0x10, app.encode())
    for pcid, asx, tss in contexts:
        sub = item(0x30, asx.encode()) + b"".join(item(0x40, t.encode()) for t in tss)
        body += item(0x20, bytes([pcid, 0, 0, 0]) + sub)
    ui = item(0x51, struct.pack(">I", max_pdu)) + item(0x52, (UID_ROOT + ".1").encode())
    body += item(0x50, ui + user_extra)
    return body if raw_body else pdu(T_ASSOC_RQ, body)


def pdv(pcid, command, last, data):
    mch = (1 if command else 0) | (2 if last else 0)
    return struct.pack(">IBB", len(data) + 2, pcid, mch) + data


def pdata(*pdvs):
    return pdu(T_PDATA, b"".join(pdvs))


def release_rq():
    return pdu(T_REL_RQ, bytes(4))


def release_rp():
    return pdu(T_REL_RP, bytes(4))


def abort_pdu(source=0, reason=0):
    return pdu(T_ABORT, bytes([0, 0, source, reason]))


# --- DIMSE (implicit VR little endian) -------------------------------------

def even(b, pad):
    return b + pad if len(b) % 2 else b


def elem(group, el, value):
    return struct.pack("<HHI", group, el, len(value)) + value


def us(v):
    return struct.pack("<H", v)


def ui(uid):
    return even(uid.encode(), b"\0")


def text(s):
    return even(s.encode(), b" ")


def command_set(fields):
    """fields: {element: bytes} of group 0000; adds the group length."""
    body = b"".join(elem(0, e, v) for e, v in sorted(fields.items()))
    return elem(0, 0, struct.pack("<I", len(body))) + body


def echo_rq(msg_id):
    return command_set({0x0002: ui(VERIFICATION), 0x0100: us(0x0030), 0x0110: us(msg_id),
                        0x0800: us(0x0101)})


def store_rq(msg_id, sop_class, sop_inst):
    return command_set({0x0002: ui(sop_class), 0x0100: us(0x0001), 0x0110: us(msg_id),
                        0x0700: us(0), 0x0800: us(0x0000), 0x1000: ui(sop_inst)})


def find_rq(msg_id, with_identifier=True):
    return command_set({0x0002: ui(STUDY_FIND), 0x0100: us(0x0020), 0x0110: us(msg_id),
                        0x0700: us(0), 0x0800: us(0x0000 if with_identifier else 0x0101)})


def move_rq(msg_id, dest):
    return command_set({0x0002: ui(STUDY_MOVE), 0x0100: us(0x0021), 0x0110: us(msg_id),
                        0x0600: text(dest), 0x0700: us(0), 0x0800: us(0x0000)})


def cancel_rq(msg_id):
    return command_set({0x0100: us(0x0FFF), 0x0120: us(msg_id), 0x0800: us(0x0101)})


def parse_command(b):
    out = {}
    pos = 0
    while pos + 8 <= len(b):
        g, e, n = struct.unpack_from("<HHI", b, pos)
        out[(g, e)] = b[pos + 8:pos + 8 + n]
        pos += 8 + n
    return out


def instance_ds(sop_inst, study, series, number=1, pixel_bytes=64):
    """A small Secondary Capture data set in Implicit VR LE (tags ascending)."""
    side = int(pixel_bytes ** 0.5)
    els = [
        (0x0008, 0x0016, ui(SC_STORAGE)),
        (0x0008, 0x0018, ui(sop_inst)),
        (0x0008, 0x0060, text("OT")),
        (0x0010, 0x0010, text("Robust^Raw")),
        (0x0010, 0x0020, text("ROBUST")),
        (0x0020, 0x000D, ui(study)),
        (0x0020, 0x000E, ui(series)),
        (0x0020, 0x0013, text(str(number))),
        (0x0028, 0x0002, us(1)),
        (0x0028, 0x0004, text("MONOCHROME2")),
        (0x0028, 0x0010, us(side)),
        (0x0028, 0x0011, us(side)),
        (0x0028, 0x0100, us(8)),
        (0x0028, 0x0101, us(8)),
        (0x0028, 0x0102, us(7)),
        (0x0028, 0x0103, us(0)),
        (0x7FE0, 0x0010, bytes((number + k) & 0xFF for k in range(side * side))),
    ]
    return b"".join(elem(g, e, v) for g, e, v in els)


# --- a minimal raw-socket requestor ----------------------------------------

class Closed(Exception):
    pass


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        try:
            k = s.recv(n - len(buf))
        except ConnectionResetError:
            raise Closed("reset")
        if not k:
            raise Closed("eof after %d of %d bytes" % (len(buf), n))
        buf += k
    return buf


def read_pdu(s, timeout=10.0):
    """('pdu', type, body) | ('closed', why) | ('timeout', None)."""
    s.settimeout(timeout)
    try:
        hdr = recv_exact(s, 6)
        ptype, _, n = struct.unpack(">BBI", hdr)
        if n > 1 << 24:
            return ("pdu", ptype, b"")
        return ("pdu", ptype, recv_exact(s, n))
    except Closed as e:
        return ("closed", str(e))
    except socket.timeout:
        return ("timeout", None)


def wait_closed(s, timeout=10.0):
    """True if the peer closes within timeout (whatever it sends first)."""
    end = time.time() + timeout
    try:
        while time.time() < end:
            s.settimeout(max(0.01, end - time.time()))
            if not s.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    except OSError:
        return True
    return False


def shutdown_wr(s):
    """Half-closes (the server may have closed already)."""
    try:
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), 10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def parse_ac(body):
    """{pcid: (result, ts)}, peer max PDU."""
    pcs, peer_max = {}, None
    pos = 68
    while pos + 4 <= len(body):
        t, _, n = struct.unpack_from(">BBH", body, pos)
        v = body[pos + 4:pos + 4 + n]
        if t == 0x21:
            ts = ""
            if len(v) >= 8 and v[4] == 0x40:
                (m,) = struct.unpack_from(">H", v, 6)
                ts = v[8:8 + m].rstrip(b"\0 ").decode()
            pcs[v[0]] = (v[2], ts)
        elif t == 0x50:
            p = 0
            while p + 4 <= len(v):
                st, _, sn = struct.unpack_from(">BBH", v, p)
                if st == 0x51 and sn == 4:
                    (peer_max,) = struct.unpack_from(">I", v, p + 4)
                p += 4 + sn
        pos += 4 + n
    return pcs, peer_max


class Assoc:
    """An association over a raw socket: enough of the requestor side for
    C-ECHO and C-STORE, plus access to the socket for abuse."""

    def __init__(self, port, contexts=((1, VERIFICATION, (IMPLICIT,)),), called="PACSD",
                 calling="ROBUST", max_pdu=MAX_PDU, timeout=30.0):
        self.s = connect(port)
        self.s.sendall(assoc_rq(called, calling, contexts, max_pdu=max_pdu))
        r = read_pdu(self.s, timeout)
        if r[0] != "pdu" or r[1] != T_ASSOC_AC:
            self.s.close()
            raise RuntimeError("association not accepted: %r" % (r[:2] if r[0] == "pdu" else r,))
        self.pcs, self.peer_max = parse_ac(r[2])
        self.msg_id = 0
        self.max_rx = 0  # longest P-DATA-TF body received

    def send_message(self, pcid, cmd, ds=None):
        """Sends a command (and data set), each PDU filled up to peer_max."""
        room = (self.peer_max or 1 << 20) - 6
        for command, data in ((True, cmd), (False, ds)):
            if data is None:
                continue
            chunks = [data[i:i + room] for i in range(0, len(data), room)] or [b""]
            for k, c in enumerate(chunks):
                self.s.sendall(pdata(pdv(pcid, command, k == len(chunks) - 1, c)))

    def recv_response(self, timeout=30.0):
        """The command set of the next DIMSE message (data sets skipped)."""
        cmd = b""
        while True:
            r = read_pdu(self.s, timeout)
            if r[0] != "pdu":
                raise Closed("no response: %s" % (r,))
            if r[1] != T_PDATA:
                raise Closed("%s instead of P-DATA" % pdu_desc(r[1], r[2]))
            self.max_rx = max(self.max_rx, len(r[2]))
            body, pos, done = r[2], 0, False
            while pos + 6 <= len(body):
                (n,) = struct.unpack_from(">I", body, pos)
                mch = body[pos + 5]
                if mch & 1:
                    cmd += body[pos + 6:pos + 4 + n]
                    done = done or bool(mch & 2)
                pos += 4 + n
            if done:
                return parse_command(cmd)

    def next_id(self):
        self.msg_id += 1
        return self.msg_id

    def echo(self, pcid=1):
        self.send_message(pcid, echo_rq(self.next_id()))
        c = self.recv_response()
        return struct.unpack("<H", c[(0, 0x0900)])[0]

    def status(self, pcid, cmd, ds=None):
        """Sends a message, returns the final status of its response(s)."""
        self.send_message(pcid, cmd, ds)
        while True:
            c = self.recv_response()
            st = struct.unpack("<H", c[(0, 0x0900)])[0]
            if st not in (0xFF00, 0xFF01):
                return st

    def store(self, pcid, sop_inst, ds, sop_class=SC_STORAGE):
        self.send_message(pcid, store_rq(self.next_id(), sop_class, sop_inst), ds)
        c = self.recv_response()
        return struct.unpack("<H", c[(0, 0x0900)])[0]

    def release(self, timeout=10.0):
        self.s.sendall(release_rq())
        r = read_pdu(self.s, timeout)
        ok = r[0] == "pdu" and r[1] == T_REL_RP
        self.s.close()
        return ok

    def close(self):
        self.s.close()


def pdu_desc(ptype, body):
    names = {1: "A-ASSOCIATE-RQ", 2: "A-ASSOCIATE-AC", 3: "A-ASSOCIATE-RJ", 4: "P-DATA-TF",
             5: "A-RELEASE-RQ", 6: "A-RELEASE-RP", 7: "A-ABORT"}
    if ptype in (T_ASSOC_RJ, T_ABORT) and len(body) == 4:
        return "%s %d/%d/%d" % (names[ptype], body[1], body[2], body[3])
    return names.get(ptype, "PDU type 0x%02x" % ptype)


def answer(s, timeout=10.0):
    """What the server answers: 'RJ r/s/x', 'ABORT s/x', 'closed', 'timeout', or
    another PDU's name; then whether it closed the connection afterwards."""
    r = read_pdu(s, timeout)
    if r[0] == "closed":
        return "closed", True
    if r[0] == "timeout":
        return "timeout", False
    ptype, body = r[1], r[2]
    if ptype == T_ASSOC_RJ and len(body) == 4:
        what = "RJ %d/%d/%d" % (body[1], body[2], body[3])
    elif ptype == T_ABORT and len(body) == 4:
        what = "ABORT %d/%d" % (body[2], body[3])
    else:
        what = pdu_desc(ptype, body)
    return what, wait_closed(s, timeout)


# --- the cases ---------------------------------------------------------------

class Ctx:
    pass


ctx = Ctx()


def echoscu_ok(port, what):
    r = h.run(["echoscu", "-to", "10", "-aec", "PACSD", "127.0.0.1", str(port)], timeout=30)
    return checks.ok(r.returncode == 0, "%s: echoscu afterwards" % what, r.stderr.strip()[-300:])


def after(what):
    checks.ok(ctx.pacsd.alive(), "%s: pacsd still running" % what)
    echoscu_ok(ctx.pacsd.port, what)


def expect_answer(what, send, want, close_wait=10.0, timeout=10.0, shut_wr=False):
    """Connects, sends the bytes, and checks the answer and the close."""
    log("case: " + what)
    s = connect(ctx.pacsd.port)
    try:
        s.sendall(send)
        if shut_wr:
            shutdown_wr(s)
        got, closed = answer(s, timeout)
    except (BrokenPipeError, ConnectionResetError) as e:
        got, closed = "closed (%s)" % e.__class__.__name__, True
    finally:
        s.close()
    log("  -> %s" % got)
    if isinstance(want, (list, tuple, set)):
        checks.ok(got in want, what, "got %r, want one of %r" % (got, sorted(want)))
    else:
        checks.eq(got, want, what)
    checks.ok(closed, "%s: server closes the connection" % what)
    after(what)
    return got


def case_rejections():
    p = ctx.pacsd.port
    expect_answer("called AE title not recognized", assoc_rq(called="NOTPACSD"), "RJ 1/1/7")
    expect_answer("calling AE title not in the allow-list", assoc_rq(calling="INTRUDER"),
                  "RJ 1/1/3")
    expect_answer("unsupported application context", assoc_rq(app="1.2.840.10008.3.1.1.2"),
                  "RJ 1/1/2")
    expect_answer("protocol version 0", assoc_rq(version=0), "RJ 1/2/2")
    expect_answer("protocol version 2 (bit 0 clear)", assoc_rq(version=2), "RJ 1/2/2")
    expect_answer("only an unknown abstract syntax",
                  assoc_rq(contexts=((1, "1.2.3.4.5.6.7", (IMPLICIT,)),)), "RJ 1/1/1")
    expect_answer("only a query class in a transfer syntax it cannot take",
                  assoc_rq(contexts=((1, STUDY_FIND, ("1.2.840.10008.1.2.4.50",)),)), "RJ 1/1/1")
    expect_answer("two unknown abstract syntaxes",
                  assoc_rq(contexts=((1, "1.2.3.4.5.6.7", (IMPLICIT,)),
                                     (3, "1.2.3.4.5.6.8", (IMPLICIT, EXPLICIT)))), "RJ 1/1/1")
    # The precedence PS3.8 leaves open is pacsd's: version before names.
    expect_answer("version 0 and wrong called AE", assoc_rq(version=0, called="OTHER"),
                  "RJ 1/2/2")
    # Version 3 has bit 0 set: accepted (PS3.8 9.3.2: other bits reserved).
    log("case: protocol version 3")
    try:
        s = connect(p)
        s.sendall(assoc_rq(version=3))
        r = read_pdu(s)
        checks.ok(r[0] == "pdu" and r[1] == T_ASSOC_AC, "protocol version 3 is accepted",
                  r[:2] if r[0] != "pdu" else pdu_desc(r[1], r[2]))
        s.sendall(release_rq())
        r = read_pdu(s)
        checks.ok(r[0] == "pdu" and r[1] == T_REL_RP, "protocol version 3: release")
        s.close()
    except OSError as e:
        checks.ok(False, "protocol version 3", e)
    after("protocol version 3")


def case_malformed_rq():
    good = assoc_rq(raw_body=True)
    # the application context item claims more bytes than the PDU holds
    bad_item = bytearray(good)
    struct.pack_into(">H", bad_item, 68 + 2, 0x4000)
    expect_answer("A-ASSOCIATE-RQ: item length past the end", pdu(T_ASSOC_RQ, bytes(bad_item)),
                  "ABORT 2/6")
    # a presentation context whose sub-item length overruns the context
    bad_sub = bytearray(good)
    pc_at = 68 + 4 + len(APP_CTX)
    struct.pack_into(">H", bad_sub, pc_at + 8 + 2, 0x0200)
    expect_answer("A-ASSOCIATE-RQ: sub-item longer than its context",
                  pdu(T_ASSOC_RQ, bytes(bad_sub)), "ABORT 2/6")
    # truncated: the PDU ends in the middle of the presentation context item
    expect_answer("A-ASSOCIATE-RQ: truncated inside an item",
                  pdu(T_ASSOC_RQ, good[:pc_at + 10]), "ABORT 2/6")
    # shorter than the 68-byte fixed part
    expect_answer("A-ASSOCIATE-RQ: shorter than its fixed part", pdu(T_ASSOC_RQ, good[:40]),
                  STA2_ABORT)
    # no presentation context at all
    no_pc = struct.pack(">HH", 1, 0) + b"PACSD".ljust(16) + b"ROBUST".ljust(16) + bytes(32) + \
        item(0x10, APP_CTX.encode()) + item(0x50, item(0x51, struct.pack(">I", MAX_PDU)))
    expect_answer("A-ASSOCIATE-RQ: no presentation context", pdu(T_ASSOC_RQ, no_pc), "ABORT 2/6")
    # a presentation context without transfer syntax
    expect_answer("A-ASSOCIATE-RQ: context without transfer syntax",
                  assoc_rq(contexts=((1, VERIFICATION, ()),)), "ABORT 2/6")
    # an even presentation context ID
    expect_answer("A-ASSOCIATE-RQ: even presentation context ID",
                  assoc_rq(contexts=((2, VERIFICATION, (IMPLICIT,)),)), "ABORT 2/6")
    # an unknown item type at PDU level
    expect_answer("A-ASSOCIATE-RQ: unknown item type",
                  pdu(T_ASSOC_RQ, good + item(0x77, b"xx")), "ABORT 2/6")
    # a called AE title of spaces only
    expect_answer("A-ASSOCIATE-RQ: blank called AE title", assoc_rq(called=" " * 16),
                  {"ABORT 2/6", "RJ 1/1/7"})
    # the A-ASSOCIATE-RQ length over pacsd's 64 KiB limit: refused on the header
    expect_answer("A-ASSOCIATE-RQ: longer than 64 KiB",
                  struct.pack(">BBI", T_ASSOC_RQ, 0, 1 << 20) + good,
                  STA2_ABORT)


# Evt19 or an unexpected PDU in Sta2 is AA-1, "Send A-ABORT PDU (service-user
# source)" in PS3.8 Table 9-9; pacsd sends the service-provider source with
# the reason (unexpected-PDU). Either is the A-ABORT PS3.8 asks for.
STA2_ABORT = {"ABORT 0/0", "ABORT 2/1", "ABORT 2/2", "ABORT 2/6"}


def case_unknown_and_early_pdus():
    for t in (0x00, 0x08, 0x55, 0xFF):
        expect_answer("unknown PDU type 0x%02x before association" % t, pdu(t, bytes(4)),
                      STA2_ABORT)
    expect_answer("P-DATA-TF before association",
                  pdata(pdv(1, True, True, echo_rq(1))), STA2_ABORT)
    expect_answer("A-RELEASE-RQ before association", release_rq(), STA2_ABORT)
    expect_answer("A-ASSOCIATE-AC from the requestor", pdu(T_ASSOC_AC, assoc_rq(raw_body=True)),
                  STA2_ABORT)
    # an A-ABORT in Sta2: AA-2, the connection is closed without an answer
    expect_answer("A-ABORT before association", abort_pdu(), "closed")


def established(what, contexts=((1, VERIFICATION, (IMPLICIT,)),), port=None):
    try:
        return Assoc(port or ctx.pacsd.port, contexts)
    except (OSError, RuntimeError, Closed) as e:
        checks.ok(False, "%s: association" % what, e)
        return None


def in_assoc(what, send, want, check_first_echo=True, shut_wr=False):
    """Establishes an association, checks it works, sends the bytes,
    checks the answer and the close."""
    log("case: " + what)
    a = established(what)
    if not a:
        return None
    got = None
    try:
        if check_first_echo:
            checks.eq(a.echo(), 0, "%s: C-ECHO before" % what)
        a.s.sendall(send)
        if shut_wr:
            shutdown_wr(a.s)
        got, closed = answer(a.s)
        log("  -> %s" % got)
        if isinstance(want, (set, list, tuple)):
            checks.ok(got in want, what, "got %r, want one of %r" % (got, sorted(want)))
        else:
            checks.eq(got, want, what)
        checks.ok(closed, "%s: server closes the connection" % what)
    except (OSError, Closed) as e:
        checks.ok(False, what, e)
    finally:
        a.close()
    after(what)
    return got


def case_established_state():
    # PS3.8 Table 9-10, Sta6: A-ASSOCIATE-RQ/AC/RJ and A-RELEASE-RP are
    # unexpected (AA-8: A-ABORT, source provider, reason unexpected-PDU).
    in_assoc("A-ASSOCIATE-RQ again after the AC", assoc_rq(), "ABORT 2/2")
    in_assoc("A-ASSOCIATE-AC in Sta6", pdu(T_ASSOC_AC, assoc_rq(raw_body=True)), "ABORT 2/2")
    in_assoc("A-ASSOCIATE-RJ in Sta6", pdu(T_ASSOC_RJ, bytes([0, 1, 1, 1])), "ABORT 2/2")
    in_assoc("A-RELEASE-RP without A-RELEASE-RQ", release_rp(), "ABORT 2/2")
    # Evt19: unrecognized PDU -> AA-8 with reason unrecognized-PDU
    in_assoc("unknown PDU type 0x09 in Sta6", pdu(0x09, bytes(4)), "ABORT 2/1")
    # invalid PDU parameter values
    in_assoc("A-RELEASE-RQ of 6 bytes", pdu(T_REL_RQ, bytes(6)), "ABORT 2/6")
    in_assoc("P-DATA-TF with no PDV", pdu(T_PDATA, b""), "ABORT 2/6")
    in_assoc("P-DATA-TF whose PDV runs past the PDU",
             pdu(T_PDATA, struct.pack(">IBB", 100, 1, 3) + b"abcd"), "ABORT 2/6")
    in_assoc("P-DATA-TF with a PDV of length 1",
             pdu(T_PDATA, struct.pack(">IB", 1, 1)), "ABORT 2/6")
    in_assoc("P-DATA-TF on presentation context 0",
             pdata(pdv(0, True, True, echo_rq(9))), "ABORT 2/6")
    # An A-ABORT from the peer: the association just ends (AA-3).
    in_assoc("A-ABORT from the peer in Sta6", abort_pdu(0, 0), "closed")
    # The peer releases in the middle of a command: nothing to answer yet.
    in_assoc("A-RELEASE-RQ inside a command",
             pdata(pdv(1, True, False, echo_rq(5)[:10])) + release_rq(),
             {"ABORT 0/0", "ABORT 2/2"})


def case_oversized():
    # PS3.8 D.1: the receiver's Maximum Length bounds the P-DATA-TF length.
    in_assoc("P-DATA-TF longer than the negotiated maximum",
             struct.pack(">BBI", T_PDATA, 0, MAX_PDU + 1) + pdv(1, True, True, echo_rq(7)),
             "ABORT 2/6")
    in_assoc("P-DATA-TF of 4 GiB - 1", struct.pack(">BBI", T_PDATA, 0, 0xFFFFFFFF),
             "ABORT 2/6")
    in_assoc("A-RELEASE-RQ of 1 MiB", struct.pack(">BBI", T_REL_RQ, 0, 1 << 20), "ABORT 2/6")


def case_truncated_then_close():
    p = ctx.pacsd.port
    rq = assoc_rq()
    for what, data in (("3 bytes of a header", rq[:3]),
                       ("an A-ASSOCIATE-RQ cut in half", rq[:len(rq) // 2]),
                       ("a header announcing 1 MiB", struct.pack(">BBI", 1, 0, 1 << 20))):
        log("case: truncated, then close: " + what)
        s = connect(p)
        s.sendall(data)
        s.close()
        time.sleep(0.1)
        after("truncated, then close: " + what)
    # Established, then a P-DATA-TF cut short and the connection closed.
    log("case: P-DATA-TF cut short")
    a = established("P-DATA-TF cut short")
    if a:
        a.s.sendall(pdata(pdv(1, True, True, echo_rq(1)))[:15])
        a.close()
        time.sleep(0.1)
        after("P-DATA-TF cut short, then close")
    # A C-STORE whose data set stops half-way: nothing may be stored.
    log("case: C-STORE cut short")
    a = established("C-STORE cut short", contexts=((1, SC_STORAGE, (IMPLICIT,)),))
    if a:
        uid = UID_ROOT + ".7.1"
        ds = instance_ds(uid, UID_ROOT + ".7", UID_ROOT + ".7.0", pixel_bytes=4096)
        a.s.sendall(pdata(pdv(1, True, True, store_rq(1, SC_STORAGE, uid))))
        a.s.sendall(pdata(pdv(1, False, False, ds[:len(ds) // 2])))
        time.sleep(0.2)
        a.close()
        time.sleep(0.3)
        after("C-STORE cut short, then close")
        ctx.must_be_absent.append(uid)


def case_random_bytes():
    for seed in range(1, 9):
        rnd = random.Random(seed)
        data = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 3000)))
        # shut_wr: a random header announcing a long body must not make the
        # case wait for the read timeout.
        expect_answer("random bytes (seed %d, %d bytes) before association" % (seed, len(data)),
                      data, STA2_ABORT | {"closed"}, shut_wr=True)
    for seed in range(11, 15):
        rnd = random.Random(seed)
        data = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 3000)))
        in_assoc("random bytes (seed %d, %d bytes) in Sta6" % (seed, len(data)), data,
                 {"ABORT 2/1", "ABORT 2/2", "ABORT 2/6", "ABORT 0/0", "closed"},
                 shut_wr=True)
    # random bytes inside a well-formed P-DATA-TF command PDV
    for seed in range(21, 25):
        rnd = random.Random(seed)
        data = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 400)))
        in_assoc("random command set (seed %d) in a valid PDV" % seed,
                 pdata(pdv(1, True, True, data)), {"ABORT 0/0", "ABORT 2/2", "ABORT 2/6"})


def timed(what, s, want, lo, hi, timeout):
    t0 = time.time()
    got, closed = answer(s, timeout)
    dt = time.time() - t0
    checks.eq(got, want, what)
    checks.ok(closed, "%s: closed" % what)
    checks.ok(lo <= dt <= hi, "%s: after %.1f s (expected %.1f..%.1f)" % (what, dt, lo, hi))
    s.close()
    after(what)


def case_timeouts():
    p = ctx.pacsd.port
    # Sta2, nothing sent: ARTIM expires -> AA-2, closed without a PDU.
    log("case: silent peer")
    s = connect(p)
    timed("connect and send nothing (ARTIM %d s)" % ARTIM_S, s, "closed",
          ARTIM_S - 0.5, ARTIM_S + 2.5, 20)
    # Sta2, an A-ASSOCIATE-RQ trickled a byte at a time: ARTIM runs from the
    # connection until the whole RQ is in (AE-5 starts it, AE-6 stops it), so
    # a slow peer cannot hold an association slot past it.
    log("case: trickled A-ASSOCIATE-RQ")
    s = connect(p)
    rq = assoc_rq()
    t0, closed = time.time(), False
    for b in rq:
        try:
            s.send(bytes([b]))
        except OSError:
            closed = True
            break
        if wait_closed(s, 0.5):
            closed = True
            break
        if time.time() - t0 > ARTIM_S + 4:
            break
    dt = time.time() - t0
    s.close()
    checks.ok(closed and dt <= ARTIM_S + 2.5, "A-ASSOCIATE-RQ trickled one byte per 0.5 s: "
              "closed when ARTIM (%d s) expires" % ARTIM_S,
              "closed after %.1f s" % dt if closed else "still open after %.1f s" % dt)
    after("trickled A-ASSOCIATE-RQ")
    # Sta2, stalled inside the A-ASSOCIATE-RQ: the read timeout, then closed.
    log("case: stall inside A-ASSOCIATE-RQ")
    s = connect(p)
    s.sendall(assoc_rq()[:30])
    timed("stall inside an A-ASSOCIATE-RQ (ARTIM %d s / read timeout %d s)" % (ARTIM_S, READ_S),
          s, "closed", min(ARTIM_S, READ_S) - 0.5, max(ARTIM_S, READ_S) + 2.5, 20)
    # Sta6, stalled inside a P-DATA-TF: A-ABORT, then closed.
    log("case: stall inside P-DATA-TF")
    a = established("stall inside P-DATA-TF")
    if a:
        a.s.sendall(pdata(pdv(1, True, True, echo_rq(1)))[:20])
        timed("stall inside a P-DATA-TF (read timeout %d s)" % READ_S, a.s, "ABORT 0/0",
              READ_S - 0.5, READ_S + 2.5, 20)
    # Sta6, idle between messages: A-ABORT after idle_timeout.
    log("case: idle association")
    a = established("idle association")
    if a:
        checks.eq(a.echo(), 0, "idle association: C-ECHO first")
        timed("idle association (idle timeout %d s)" % IDLE_S, a.s, "ABORT 0/0",
              IDLE_S - 0.5, IDLE_S + 2.5, 20)


def case_dimse():
    p = ctx.pacsd.port
    garbage = [
        ("random bytes", bytes(random.Random(99).getrandbits(8) for _ in range(64))),
        ("an element running past the end", elem(0, 0x0100, us(0x30))[:6] + b"\xff\xff"),
        ("no Command Field", command_set({0x0002: ui(VERIFICATION), 0x0110: us(1),
                                          0x0800: us(0x0101)})),
        ("an unknown Command Field", command_set({0x0002: ui(VERIFICATION), 0x0100: us(0x0FF0),
                                                  0x0110: us(1), 0x0800: us(0x0101)})),
        ("a group 0008 element before the command", elem(8, 0x16, ui(SC_STORAGE)) + echo_rq(1)),
    ]
    for what, cmd in garbage:
        in_assoc("garbage command set: " + what, pdata(pdv(1, True, True, cmd)),
                 {"ABORT 0/0", "ABORT 2/2", "ABORT 2/6"})
    in_assoc("data set fragment where a command is expected",
             pdata(pdv(1, False, True, b"\x08\x00\x16\x00\x00\x00\x00\x00")),
             {"ABORT 0/0", "ABORT 2/2", "ABORT 2/6"})
    in_assoc("command on a presentation context that was not proposed",
             pdata(pdv(3, True, True, echo_rq(1))), {"ABORT 0/0", "ABORT 2/2", "ABORT 2/6"})
    # a command set that never ends: cut at DIMSE_MAX_CMD_LEN (64 KiB)
    endless = b"".join(pdata(pdv(1, True, False, bytes(8000))) for _ in range(10))
    in_assoc("command set over 64 KiB", endless, {"ABORT 0/0", "ABORT 2/6"})
    # inside a C-STORE: a data set PDV on another context, a command PDV
    # inside the data set; nothing may be stored
    two = ((1, VERIFICATION, (IMPLICIT,)), (3, SC_STORAGE, (IMPLICIT,)))
    for k, (what, bad) in enumerate((
            ("data set PDV on another context", pdv(1, False, True, b"\0" * 8)),
            ("command PDV inside the data set", pdv(3, True, True, echo_rq(2))))):
        log("case: C-STORE, " + what)
        uid = "%s.8.20.%d" % (UID_ROOT, k)
        ds = instance_ds(uid, UID_ROOT + ".8", UID_ROOT + ".8.0", pixel_bytes=1024)
        try:
            a = Assoc(ctx.pacsd.port, two)
            a.s.sendall(pdata(pdv(3, True, True, store_rq(1, SC_STORAGE, uid))) +
                        pdata(pdv(3, False, False, ds[:200])) + pdata(bad))
            got, closed = answer(a.s)
            a.close()
            checks.ok(got in ("ABORT 0/0", "ABORT 2/2", "ABORT 2/6"), "C-STORE, " + what, got)
            checks.ok(closed, "C-STORE, %s: closed" % what)
        except (OSError, RuntimeError) as e:
            checks.ok(False, "C-STORE, " + what, e)
        ctx.must_be_absent.append(uid)
        after("C-STORE, " + what)

    # C-STORE with a data set that does not parse: 0xC000, then the
    # association goes on (echo, store, release on the same association).
    log("case: C-STORE garbage data sets")
    a = established("C-STORE garbage", contexts=((1, VERIFICATION, (IMPLICIT,)),
                                                 (3, SC_STORAGE, (IMPLICIT,))))
    if a:
        study, series = UID_ROOT + ".8", UID_ROOT + ".8.0"
        try:
            bad_sets = [
                ("an element longer than the data set",
                 elem(8, 0x16, ui(SC_STORAGE))[:8] + b"1.2.840"),
                ("random bytes", bytes(random.Random(7).getrandbits(8) for _ in range(300))),
                ("a UI element of undefined length", elem(8, 0x16, ui(SC_STORAGE)) +
                 struct.pack("<HHI", 8, 0x18, 0xFFFFFFFF) + ui(UID_ROOT)),
                ("zero bytes", bytes(100)),
                ("3 bytes", b"\x08\x00\x16"),
            ]
            for k, (what, ds) in enumerate(bad_sets):
                uid = "%s.8.9.%d" % (UID_ROOT, k)
                st = a.store(3, uid, ds)
                checks.eq("0x%04X" % st, "0xC000", "C-STORE with garbage data set (%s)" % what)
                ctx.must_be_absent.append(uid)
                checks.eq(a.echo(1), 0, "C-STORE garbage (%s): C-ECHO on the same association"
                          % what)
            # the command names another instance than the data set: 0xA900
            uid = UID_ROOT + ".8.1"
            st = a.store(3, UID_ROOT + ".8.2", instance_ds(uid, study, series))
            checks.eq("0x%04X" % st, "0xA900", "C-STORE whose command and data set disagree")
            ctx.must_be_absent += [uid, UID_ROOT + ".8.2"]
            # and a good one, in PDUs of exactly the negotiated maximum
            uid = UID_ROOT + ".8.3"
            ds = instance_ds(uid, study, series, 3, pixel_bytes=200 * 200)
            checks.eq(a.peer_max, MAX_PDU, "the AC announces dicom.max_pdu_length")
            st = a.store(3, uid, ds)
            checks.eq(st, 0, "C-STORE in PDUs of exactly the maximum length after garbage")
            ctx.must_be_present.append(uid)
            checks.ok(a.release(), "C-STORE garbage: release")
        except (OSError, Closed) as e:
            checks.ok(False, "C-STORE garbage data set", e)
        finally:
            a.close()
        after("C-STORE with garbage data sets")


def case_valid_edges():
    """Unusual but valid traffic is served; limits give their status."""
    study, series = UID_ROOT + ".9", UID_ROOT + ".9.0"
    ctxs = ((1, VERIFICATION, (IMPLICIT,)), (3, SC_STORAGE, (EXPLICIT, IMPLICIT)))
    log("case: valid edges")
    a = established("valid edges", contexts=ctxs)
    if not a:
        return
    try:
        checks.eq(a.pcs.get(3), (0, EXPLICIT), "storage context: the requestor's first "
                  "transfer syntax is accepted")
        # a command in 1-byte PDVs, one PDU each
        cmd = echo_rq(a.next_id())
        for i in range(len(cmd)):
            a.s.sendall(pdata(pdv(1, True, i == len(cmd) - 1, cmd[i:i + 1])))
        st = a.recv_response()
        checks.eq(struct.unpack("<H", st[(0, 0x0900)])[0], 0, "C-ECHO sent as 1-byte PDVs")
        # a command in several PDVs of one PDU, with empty PDVs among them
        cmd = echo_rq(a.next_id())
        a.s.sendall(pdata(pdv(1, True, False, b""), pdv(1, True, False, cmd[:9]),
                          pdv(1, True, False, b""), pdv(1, True, True, cmd[9:])))
        st = a.recv_response()
        checks.eq(struct.unpack("<H", st[(0, 0x0900)])[0], 0,
                  "C-ECHO in several PDVs of one PDU, some empty")
        # elements after the command group (DCMTK-based SCPs append some to
        # responses) end the command set: tolerated
        a.send_message(1, echo_rq(a.next_id()) + elem(8, 0x16, ui(SC_STORAGE)))
        st = a.recv_response()
        checks.eq(struct.unpack("<H", st[(0, 0x0900)])[0], 0,
                  "C-ECHO with an element after the command group")
        # command and the whole data set in one PDU (on an Implicit VR
        # context, the encoding instance_ds writes)
        uid = UID_ROOT + ".9.1"
        ds = instance_ds(uid, study, series, 1)
        a2 = Assoc(ctx.pacsd.port, ((1, SC_STORAGE, (IMPLICIT,)),))
        a2.s.sendall(pdata(pdv(1, True, True, store_rq(1, SC_STORAGE, uid)),
                           pdv(1, False, False, ds[:100]), pdv(1, False, False, b""),
                           pdv(1, False, True, ds[100:])))
        st = a2.recv_response()
        checks.eq(struct.unpack("<H", st[(0, 0x0900)])[0], 0,
                  "C-STORE: command and data set PDVs in one PDU")
        ctx.must_be_present.append(uid)
        # a data set over dicom.max_message_size: 0xA700, the association goes on
        uid = UID_ROOT + ".9.2"
        big = instance_ds(uid, study, series, 2, pixel_bytes=400 * 400)
        checks.ok(len(big) > MAX_MESSAGE, "test data: over max_message_size")
        checks.eq("0x%04X" % a2.store(1, uid, big), "0xA700",
                  "C-STORE larger than dicom.max_message_size")
        ctx.must_be_absent.append(uid)
        uid = UID_ROOT + ".9.3"
        checks.eq(a2.store(1, uid, instance_ds(uid, study, series, 3)), 0,
                  "C-STORE after one over the size limit")
        ctx.must_be_present.append(uid)
        checks.ok(a2.release(), "valid edges: release")
        a.close()
    except (OSError, Closed, RuntimeError) as e:
        checks.ok(False, "valid edges", e)
    finally:
        a.close()
    after("valid edges")

    # A small Maximum Length from the requestor: every P-DATA-TF pacsd sends
    # stays within it (PS3.8 D.1).
    log("case: requestor max PDU 32")
    try:
        a = Assoc(ctx.pacsd.port, max_pdu=32)
        checks.eq(a.echo(), 0, "C-ECHO with a requestor Maximum Length of 32")
        checks.ok(0 < a.max_rx <= 32, "every P-DATA-TF within the requestor's 32 bytes",
                  "longest %d" % a.max_rx)
        checks.ok(a.release(), "max PDU 32: release")
    except (OSError, Closed, RuntimeError) as e:
        checks.ok(False, "requestor max PDU 32", e)
    after("requestor max PDU 32")

    # 128 presentation contexts (IDs 1..255): the most PS3.8 allows.
    log("case: 128 presentation contexts")
    many = tuple((2 * i + 1, VERIFICATION if i == 127 else "%s.%d" % (UID_ROOT, i),
                  (IMPLICIT,)) for i in range(128))
    try:
        a = Assoc(ctx.pacsd.port, contexts=many)
        checks.eq(len(a.pcs), 128, "128 presentation contexts answered")
        checks.eq(a.pcs.get(255), (0, IMPLICIT), "context 255 accepted")
        checks.eq(sorted({r for r, _ in a.pcs.values()}), [0, 3],
                  "unknown abstract syntaxes: result 3")
        checks.eq(a.echo(255), 0, "C-ECHO on context 255")
        checks.ok(a.release(), "128 contexts: release")
    except (OSError, Closed, RuntimeError) as e:
        checks.ok(False, "128 presentation contexts", e)
    after("128 presentation contexts")

    # A C-STORE on a context negotiated for Verification: the command's SOP
    # class is not the context's abstract syntax (PS3.7 9.1): refused, with
    # 0x0122 or an abort, and nothing stored.
    log("case: C-STORE on the Verification context")
    uid = UID_ROOT + ".9.4"
    a = established("C-STORE on the Verification context")
    if a:
        try:
            a.send_message(1, store_rq(a.next_id(), SC_STORAGE, uid),
                           instance_ds(uid, study, series, 4))
            try:
                c = a.recv_response()
                got = "0x%04X" % struct.unpack("<H", c[(0, 0x0900)])[0]
            except Closed as e:
                got = str(e)
            checks.ok(got == "0x0122" or "A-ABORT" in got or "closed" in got,
                      "C-STORE on the Verification context is refused", "got %s" % got)
        except OSError as e:
            checks.ok(False, "C-STORE on the Verification context", e)
        finally:
            a.close()
        ctx.must_be_absent.append(uid)
        after("C-STORE on the Verification context")


def case_dimse_services():
    """Bad requests to the query/retrieve services get their failure status
    and the association goes on; concurrent copies of one instance leave
    one row and one file (dicom.duplicates = replace)."""
    log("case: query/retrieve failures")
    ctxs = ((1, VERIFICATION, (IMPLICIT,)), (3, STUDY_FIND, (IMPLICIT,)),
            (5, STUDY_MOVE, (IMPLICIT,)))
    a = established("query/retrieve failures", contexts=ctxs)
    if a:
        try:
            checks.eq("0x%04X" % a.status(3, find_rq(a.next_id()), b"garbage-garbage!"),
                      "0xC000", "C-FIND with an identifier that does not parse")
            checks.eq("0x%04X" % a.status(3, find_rq(a.next_id(), False)), "0xA900",
                      "C-FIND without an identifier")
            ident = elem(8, 0x52, text("STUDY")) + elem(0x20, 0x0D, ui(UID_ROOT + ".1"))
            checks.eq("0x%04X" % a.status(5, move_rq(a.next_id(), "NOWHERE"), ident), "0xA801",
                      "C-MOVE to an unknown destination")
            a.send_message(3, cancel_rq(99))  # names no running operation: ignored
            checks.eq(a.echo(), 0, "C-ECHO after failed queries and a stray C-CANCEL")
            checks.ok(a.release(), "query/retrieve failures: release")
        except (OSError, Closed, KeyError) as e:
            checks.ok(False, "query/retrieve failures", e)
        finally:
            a.close()
        after("query/retrieve failures")

    log("case: 20 concurrent copies of one instance")
    uid = UID_ROOT + ".10.1"
    barrier = threading.Barrier(20, timeout=30)
    statuses, lock = [], threading.Lock()

    def worker(i):
        st = "error"
        try:
            b = Assoc(ctx.pacsd.port, ((1, SC_STORAGE, (IMPLICIT,)),))
            ds = instance_ds(uid, UID_ROOT + ".10", UID_ROOT + ".10.0", i)
            barrier.wait()
            st = b.store(1, uid, ds)
            b.release()
        except Exception as e:  # noqa: BLE001
            st = str(e)
        with lock:
            statuses.append(st)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    checks.eq(statuses, [0] * 20, "20 concurrent copies of one instance: all stored (replace)")
    ctx.must_be_present.append(uid)
    after("20 concurrent copies of one instance")


# --- many associations ------------------------------------------------------

def case_concurrent(n=200):
    log("case: %d concurrent associations" % n)
    srv = h.Pacsd(config={"dicom": {"max_associations": n + 50, "artim_timeout": 30,
                                     "read_timeout": 30, "idle_timeout": 120},
                          "log": {"level": "warn"}})
    ctx.others.append(srv)
    contexts = ((1, VERIFICATION, (IMPLICIT,)), (3, SC_STORAGE, (IMPLICIT,)))
    study = UID_ROOT + ".20"
    lock = threading.Lock()
    state = {"up": 0, "peak": 0, "errors": [], "ok": 0}
    all_up = threading.Event()

    def worker(i):
        a = None
        try:
            a = Assoc(srv.port, contexts, timeout=60)
            with lock:
                state["up"] += 1
                state["peak"] = max(state["peak"], state["up"])
                if state["up"] == n:
                    all_up.set()
            if a.echo(1) != 0:
                raise RuntimeError("C-ECHO failed")
            all_up.wait(30)   # every association open at once
            uid = "%s.%d.1" % (study, i)
            st = a.store(3, uid, instance_ds(uid, study, "%s.%d" % (study, i), i))
            if st != 0:
                raise RuntimeError("C-STORE status 0x%04X" % st)
            if a.echo(1) != 0:
                raise RuntimeError("second C-ECHO failed")
            with lock:
                state["up"] -= 1
            if not a.release():
                raise RuntimeError("no A-RELEASE-RP")
            with lock:
                state["ok"] += 1
        except Exception as e:  # noqa: BLE001 - any failure is the finding
            with lock:
                state["errors"].append("%d: %s" % (i, e))
        finally:
            if a:
                a.close()

    t0 = time.time()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    dt = time.time() - t0
    log("  %d associations in %.1f s, peak %d open at once" % (n, dt, state["peak"]))
    checks.eq(state["ok"], n, "%d concurrent associations (echo + store + echo + release) "
              "all succeed" % n)
    checks.ok(not state["errors"], "%d concurrent associations: no errors" % n,
              "; ".join(state["errors"][:5]))
    checks.eq(state["peak"], n, "all %d associations were open at the same time" % n)
    checks.ok(srv.alive(), "concurrent: pacsd still running")
    echoscu_ok(srv.port, "after %d concurrent associations" % n)
    uids = ["%s.%d.1" % (study, i) for i in range(n)]
    verify_stored(srv, uids, [], "concurrent stores")
    stop_clean(srv, "concurrent server")


def case_limit(limit=4):
    log("case: association limit %d" % limit)
    srv = h.Pacsd(config={"dicom": {"max_associations": limit, "artim_timeout": ARTIM_S,
                                     "read_timeout": READ_S, "idle_timeout": 60}})
    ctx.others.append(srv)
    held = []
    try:
        # the harness's probe connection may still hold a slot for a moment
        end = time.time() + 5
        while len(held) < limit:
            try:
                held.append(Assoc(srv.port))
            except RuntimeError:
                if time.time() > end:
                    raise
                time.sleep(0.1)
        checks.eq(len(held), limit, "limit %d: %d associations accepted" % (limit, limit))
        for i in range(2):
            s = connect(srv.port)
            s.sendall(assoc_rq())
            got, closed = answer(s)
            s.close()
            checks.eq(got, "RJ 2/3/2", "association %d over a limit of %d: local limit "
                      "exceeded" % (limit + 1 + i, limit))
            checks.ok(closed, "over the limit: closed after the RJ")
        for a in held:
            checks.eq(a.echo(), 0, "limit: the held associations still work")
        checks.ok(held.pop().release(), "limit: release one")
        # the slot frees once the server thread ends (it waits for our close)
        ok, end = False, time.time() + 10
        while not ok and time.time() < end:
            try:
                a = Assoc(srv.port)
                held.append(a)
                ok = True
            except RuntimeError:
                time.sleep(0.1)
        checks.ok(ok, "limit: a new association once one was released")
    except (OSError, RuntimeError, Closed) as e:
        checks.ok(False, "association limit", e)
    finally:
        for a in held:
            a.close()
    checks.ok(srv.alive(), "limit: pacsd still running")
    time.sleep(0.3)
    echoscu_ok(srv.port, "limit server")
    stop_clean(srv, "limit server")


# --- what is stored ----------------------------------------------------------

def index_rows(srv):
    db = sqlite3.connect("file:%s/index.db?mode=ro" % srv.data_dir, uri=True, timeout=30)
    try:
        return {r[0]: (r[1], r[2], r[3]) for r in
                db.execute("SELECT sop_instance_uid, blob_key, sha256, size FROM instances")}
    finally:
        db.close()


def blob_path(srv, key):
    return os.path.join(srv.data_dir, "files", key[0:2], key)


def verify_stored(srv, present, absent, what):
    rows = index_rows(srv)
    missing = [u for u in present if u not in rows]
    checks.ok(not missing, "%s: every acknowledged instance is in the index" % what,
              "%d missing, e.g. %s" % (len(missing), missing[:3]))
    bad = []
    for u in present:
        if u not in rows:
            continue
        key, sha, size = rows[u]
        try:
            with open(blob_path(srv, key), "rb") as f:
                data = f.read()
        except OSError as e:
            bad.append("%s: %s" % (u, e))
            continue
        if hashlib.sha256(data).hexdigest() != sha or len(data) != size:
            bad.append("%s: file does not match its index row" % u)
    checks.ok(not bad, "%s: files present and intact (SHA-256, size)" % what, bad[:3])
    stray = [u for u in absent if u in rows]
    checks.ok(not stray, "%s: refused or unfinished instances are not indexed" % what, stray)
    files_dir = os.path.join(srv.data_dir, "files")
    on_disk = set()
    for root, _, names in os.walk(files_dir):
        rel = os.path.relpath(root, files_dir)
        if rel not in (".", "tmp") and rel.count(os.sep) == 0:  # files/<k0k1>/<key>
            on_disk.update(names)
    row_keys = {k for k, _, _ in rows.values()}
    checks.ok(on_disk == row_keys, "%s: one file per index row, no stray files" % what,
              "%d files without a row, %d rows without a file"
              % (len(on_disk - row_keys), len(row_keys - on_disk)))
    tmp = os.path.join(srv.data_dir, "files", "tmp")
    left = os.listdir(tmp) if os.path.isdir(tmp) else []
    checks.ok(not left, "%s: no temporary file left" % what, left[:5])


def stop_clean(srv, what):
    rc = srv.stop()
    checks.eq(rc, 0, "%s: exits 0 on SIGTERM" % what)
    out = srv.output()
    bad = [ln for ln in out.splitlines()
           if "Sanitizer" in ln or "runtime error:" in ln or "SUMMARY:" in ln]
    checks.ok(not bad, "%s: no sanitizer report" % what, "\n".join(bad[:10]))


def store_initial():
    """Five instances through storescu; returns their SOP Instance UIDs."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    d = tempfile.mkdtemp(prefix="robust-in-")
    ctx.tmpdirs.append(d)
    uids, paths = [], []
    study, series = UID_ROOT + ".1", UID_ROOT + ".1.1"
    for i in range(5):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SC_STORAGE
        meta.MediaStorageSOPInstanceUID = "%s.%d" % (series, i + 1)
        meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        path = os.path.join(d, "i%d.dcm" % i)
        ds = FileDataset(path, {}, file_meta=meta, preamble=bytes(128))
        ds.SOPClassUID = SC_STORAGE
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID = "Robust^Initial", "ROBUST0"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.Modality, ds.InstanceNumber = "OT", i + 1
        ds.Rows = ds.Columns = 8
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        ds.PixelData = bytes((i * 7 + k) & 0xFF for k in range(64))
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)
        uids.append(ds.SOPInstanceUID)
        paths.append(path)
    r = h.run(["storescu", "-aec", "PACSD", "127.0.0.1", str(ctx.pacsd.port), *paths], timeout=60)
    checks.ok(r.returncode == 0, "storescu of the initial instances", r.stderr[-500:])
    return study, series, uids


def findscu_uids(port, study, series):
    d = tempfile.mkdtemp(prefix="robust-find-")
    ctx.tmpdirs.append(d)
    r = h.run(["findscu", "-S", "-aec", "PACSD", "-X", "-od", d,
               "-k", "QueryRetrieveLevel=IMAGE", "-k", "StudyInstanceUID=" + study,
               "-k", "SeriesInstanceUID=" + series, "-k", "SOPInstanceUID",
               "127.0.0.1", str(port)], timeout=60)
    if r.returncode != 0:
        return None, r.stderr[-500:]
    import pydicom
    found = set()
    for f in os.listdir(d):
        found.add(str(pydicom.dcmread(os.path.join(d, f)).SOPInstanceUID))
    return found, ""


def main():
    ctx.tmpdirs, ctx.others = [], []
    ctx.must_be_present, ctx.must_be_absent = [], []
    t0 = time.time()
    ctx.pacsd = h.Pacsd(config={"dicom": {
        "artim_timeout": ARTIM_S, "read_timeout": READ_S, "idle_timeout": IDLE_S,
        "max_associations": 250, "max_pdu_length": MAX_PDU, "max_message_size": MAX_MESSAGE,
        "allowed_calling_aets": ["ROBUST", "ECHOSCU", "STORESCU", "FINDSCU"]}})
    try:
        study, series, initial = store_initial()
        for case in (case_rejections, case_malformed_rq, case_unknown_and_early_pdus,
                     case_established_state, case_oversized, case_truncated_then_close,
                     case_random_bytes, case_dimse, case_dimse_services, case_valid_edges,
                     case_timeouts):
            case()
        log("checking what is stored")
        found, why = findscu_uids(ctx.pacsd.port, study, series)
        checks.ok(found is not None and set(initial) <= found,
                  "findscu finds every instance stored at the start",
                  why or sorted(set(initial) - (found or set())))
        verify_stored(ctx.pacsd, initial + ctx.must_be_present, ctx.must_be_absent,
                      "main server")
        stop_clean(ctx.pacsd, "main server")
        case_limit()
        case_concurrent()
    finally:
        for p in [ctx.pacsd] + ctx.others:
            p.cleanup()
        import shutil
        for d in ctx.tmpdirs:
            shutil.rmtree(d, ignore_errors=True)
    log("%.1f s" % (time.time() - t0))
    checks.finish()


if __name__ == "__main__":
    main()
