"""Shared helpers for the pydicom-based integration tests
(test_pydicom_corpus.py, test_roundtrip.py).

- corpus_files(): the pydicom test corpus, with the rule for skipping
  non-DICOM files.
- run_pacsd(): runs the pacsd binary and captures its output.
- py_tree() / json_tree(): turn a pydicom Dataset, or a DICOM JSON object
  (pacsd's or pydicom's), into one normalized form: a list of Elem (tag, VR,
  value), items of sequences being lists of Elem in turn.
- compare_trees(): element-level differences between two such forms, as Diff
  records naming the element path; compare_json(): differences between two
  DICOM JSON objects, member by member.
- AllowedDifferences: a named list of (explanation, predicate) that says
  which differences are expected; everything else is a failure.
- split_part10() / dataset_bytes(): a file's data set bytes after the meta
  group (inflated for Deflated); group_length_errors(): group lengths
  (gggg,0000) that do not match the bytes of their group.

Run with Debian's /usr/bin/python3 (python3-pydicom 2.3).
"""
import base64
import math
import os
import struct
import subprocess
import warnings

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

PYDICOM_DATA = os.path.dirname(pydicom.__file__) + "/data"
TEST_FILES = os.environ.get("PYDICOM_TEST_FILES", PYDICOM_DATA + "/test_files")
CHARSET_FILES = os.path.join(os.path.dirname(TEST_FILES), "charset_files")

# Files in the corpus directories that are not DICOM: documentation
# (README, README.txt, charset_files/FileInfo.txt), DICOM JSON fixtures
# (*.json), dcmdump text output (*.dump) and a gzip archive (zipMR.gz).
SKIP_SUFFIXES = (".txt", ".json", ".dump", ".gz")


def is_corpus_file(name):
    base = os.path.basename(name)
    return not base.startswith("README") and not base.endswith(SKIP_SUFFIXES)


def corpus_files():
    """Sorted (display name, absolute path): every file under test_files/
    (recursively) and charset_files/*.dcm, minus the non-DICOM ones."""
    out = []
    for dirpath, _, names in os.walk(TEST_FILES):
        for n in names:
            p = os.path.join(dirpath, n)
            if is_corpus_file(p):
                out.append(("test_files/" + os.path.relpath(p, TEST_FILES), p))
    if os.path.isdir(CHARSET_FILES):
        for n in os.listdir(CHARSET_FILES):
            if n.endswith(".dcm"):
                out.append(("charset_files/" + n, os.path.join(CHARSET_FILES, n)))
    return sorted(out)


def pacsd_binary():
    p = os.environ.get("PACSD")
    if not p:
        raise SystemExit("PACSD must name the pacsd binary")
    return p


def run_pacsd(*args, timeout=120):
    """Runs pacsd; returns CompletedProcess with bytes stdout/stderr."""
    return subprocess.run([pacsd_binary(), *args], capture_output=True, timeout=timeout)


def one_line_error(cp, path):
    """True if a failed run printed exactly one 'pacsd: PATH: ...' line."""
    err = cp.stderr.decode("utf-8", "replace")
    lines = err.splitlines()
    return (cp.returncode == 1 and len(lines) == 1 and err.endswith("\n")
            and lines[0].startswith("pacsd: %s: " % path)
            and len(lines[0]) > len("pacsd: %s: " % path))


def dcmread(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, force=True)


# ---------------------------------------------------------------------------
# The normalized form.

BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW",
              "US or SS or OW"}
SWAP_SIZE = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
INT_VRS = {"US", "SS", "UL", "SL", "SV", "UV", "US or SS"}
FLOAT_VRS = {"FL", "FD"}
TEXT_SINGLE = {"LT", "ST", "UT", "UR"}


class Elem:
    __slots__ = ("tag", "vr", "value", "raw_vr", "raw")

    def __init__(self, tag, vr, value, raw_vr=None, raw=None):
        self.tag = tag      # int
        self.vr = vr        # str
        self.value = value  # normalized, see norm_* below
        self.raw_vr = raw_vr  # pydicom only: VR as encoded (None: implicit)
        self.raw = raw      # pydicom only: value bytes as encoded (file order)

    def __repr__(self):
        return "Elem(%s %s %r)" % (tagstr(self.tag), self.vr, short(self.value))


def tagstr(tag):
    return "(%04X,%04X)" % (tag >> 16, tag & 0xFFFF)


def short(v, n=120):
    s = repr(v)
    return s if len(s) <= n else s[:n] + "...(%d chars)" % len(s)


def swap(b, size):
    """Byte-swaps b in words of size bytes (a trailing odd part is kept)."""
    if size <= 1:
        return b
    out = bytearray(b)
    whole = len(b) - len(b) % size
    for i in range(size):
        out[i:whole:size] = b[size - 1 - i:whole:size]
    return bytes(out)


def norm_float(x):
    if isinstance(x, float) and math.isnan(x):
        return "NaN"
    if isinstance(x, float) and math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def _as_list(v):
    if isinstance(v, (list, tuple, MultiValue)):
        return list(v)
    return [v]


def py_tree(ds, little_endian=None):
    """pydicom Dataset -> [Elem] in pydicom's (ascending tag) order.

    Values: SQ -> list of item lists; PN -> list of (alphabetic,
    ideographic, phonetic) strings; text -> list of str ('' for an empty
    value inside a multi-valued element); IS/DS -> numbers (or the text when
    it is not a number); US..UV -> ints; FL/FD -> floats ('NaN', 'Infinity');
    AT -> ints; binary VRs -> bytes in Little Endian order. An element
    without a value has value None. Group lengths are included."""
    if little_endian is None:
        little_endian = ds.is_little_endian if ds.is_little_endian is not None else True
    out = []
    for tag in sorted(ds.keys()):
        raw = ds._dict.get(tag)  # get_item() converts elements with no value
        raw_vr, raw_bytes = None, None
        if isinstance(raw, RawDataElement):
            raw_vr, raw_bytes = raw.VR, raw.value
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            e = ds[tag]
        out.append(Elem(int(tag), vr_str(e.VR), norm_py_value(e, little_endian), vr_str(raw_vr),
                        raw_bytes))
    return out


def norm_py_value(e, little_endian):
    vr, v = vr_str(e.VR), e.value
    if vr == "SQ":
        return [py_tree(item, little_endian) for item in v] if v else None
    if v is None:
        return None
    if vr in BINARY_VRS or isinstance(v, bytes):
        if len(v) == 0:
            return None
        if not little_endian:
            v = swap(v, SWAP_SIZE.get(vr, 1))
        return bytes(v)
    if isinstance(v, (str, PersonName)) and str(v) == "":
        return None
    vals = _as_list(v)
    if not vals:
        return None
    if vr == "PN":
        res = []
        for p in vals:
            comps = list(p.components) if isinstance(p, PersonName) else [str(p)]
            res.append(tuple((comps + ["", "", ""])[:3]))
        return res
    if vr == "AT":
        return [int(x) for x in vals]
    if vr in INT_VRS:
        return [int(x) for x in vals]
    if vr in FLOAT_VRS:
        return [norm_float(float(x)) for x in vals]
    if vr == "IS":
        return [_num_or_text(x, int) for x in vals]
    if vr == "DS":
        return [_num_or_text(x, float) for x in vals]
    return [("" if x is None else str(x)) for x in vals]


def _num_or_text(x, kind):
    if x is None or x == "":
        return ""
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return norm_float(kind(x)) if kind is float else int(x)
    try:
        return norm_float(kind(str(x).strip()))
    except ValueError:
        try:
            f = float(str(x).strip())
            return int(f) if kind is int and f.is_integer() else f
        except ValueError:
            return str(x)


def json_tree(obj):
    """DICOM JSON object -> [Elem] in member order (same value forms as
    py_tree; InlineBinary decoded; BulkDataURI kept as ('BulkDataURI', uri))."""
    out = []
    for key, m in obj.items():
        out.append(Elem(int(key, 16), m.get("vr"), norm_json_value(m)))
    return out


def norm_json_value(m):
    vr = m.get("vr")
    if "InlineBinary" in m:
        ib = m["InlineBinary"]
        if isinstance(ib, list):  # pydicom accepts an array of one string
            ib = "".join(ib)
        b = base64.b64decode(ib, validate=True)
        return b if b else None
    if "BulkDataURI" in m:
        return ("BulkDataURI", m["BulkDataURI"])
    if "Value" not in m:
        return None
    vals = m["Value"]
    if vr == "SQ":
        return [json_tree(it if it is not None else {}) for it in vals] if vals else None
    if not vals:
        return None
    if vr == "PN":
        res = []
        for p in vals:
            if p is None:
                p = {}
            res.append(tuple((p.get(k) or "") for k in ("Alphabetic", "Ideographic", "Phonetic")))
        return res
    if vr == "AT":
        return [int(x, 16) for x in vals]
    if vr in INT_VRS or vr in FLOAT_VRS or vr in ("IS", "DS"):
        res = []
        for x in vals:
            if x is None:
                res.append("" if vr in ("IS", "DS") else None)
            elif isinstance(x, str):
                if vr in ("IS", "DS"):
                    res.append(_num_or_text(x, int if vr == "IS" else float))
                else:
                    res.append({"NaN": "NaN", "Infinity": "Infinity",
                                "-Infinity": "-Infinity"}.get(x, _strnum(x)))
            elif vr in FLOAT_VRS or vr == "DS":
                res.append(norm_float(float(x)))
            else:
                res.append(x)
        return res
    return [("" if x is None else x) for x in vals]


def _strnum(x):
    try:
        return int(x)
    except ValueError:
        return x


# ---------------------------------------------------------------------------
# Differences.

class Diff:
    """One difference between element trees a (pacsd) and b (reference).
    kind: 'missing' (only in b), 'extra' (only in a), 'vr', 'value',
    'items' (number of items). path: '(0008,1140)[0].(0008,1150)'."""
    __slots__ = ("kind", "path", "tag", "a", "b", "depth", "ctx")
    # what a and b are called in messages; test_roundtrip's (iii) sets
    # ("output", "input") on its Ctx
    LABELS = ("pacsd", "reference")

    def __init__(self, kind, path, tag, a, b, depth, ctx):
        self.kind, self.path, self.tag, self.a, self.b = kind, path, tag, a, b
        self.depth, self.ctx = depth, ctx

    def __str__(self):
        la, lb = getattr(self.ctx, "labels", None) or self.LABELS
        what = {"missing": "only in " + lb, "extra": "only in " + la}.get(self.kind)
        if what:
            e = self.b if self.kind == "missing" else self.a
            return "%s %s: %s (%s)" % (self.kind, self.path, what, e)
        if self.kind == "vr":
            return "vr %s: %s %s, %s %s" % (self.path, la, self.a.vr, lb, self.b.vr)
        return "%s %s %s: %s %s, %s %s" % (
            self.kind, self.path, self.b.vr if self.b else "", la, short(self.a.value),
            lb, short(self.b.value))


def compare_trees(a, b, ctx=None, path="", depth=0):
    """Differences between [Elem] a (pacsd) and b (reference), matching
    elements by tag and checking that both list them in the same order.
    ctx is passed through to each Diff (the file being compared)."""
    diffs = []
    bt = {e.tag: e for e in b}
    at = {e.tag: e for e in a}
    for e in b:
        if e.tag not in at:
            diffs.append(Diff("missing", path + tagstr(e.tag), e.tag, None, e, depth, ctx))
    for e in a:
        if e.tag not in bt:
            diffs.append(Diff("extra", path + tagstr(e.tag), e.tag, e, None, depth, ctx))
    common_a = [e.tag for e in a if e.tag in bt]
    common_b = [e.tag for e in b if e.tag in at]
    if common_a != common_b:
        diffs.append(Diff("order", path or "(root)", None,
                          Elem(0, "", common_a), Elem(0, "", common_b), depth, ctx))
    for ea in a:
        eb = bt.get(ea.tag)
        if eb is None:
            continue
        p = path + tagstr(ea.tag)
        if ea.vr != eb.vr:
            diffs.append(Diff("vr", p, ea.tag, ea, eb, depth, ctx))
        if is_items(ea.value) and is_items(eb.value):
            ia, ib = ea.value, eb.value
            if len(ia) != len(ib):
                diffs.append(Diff("items", p, ea.tag, ea, eb, depth, ctx))
            for i, (xa, xb) in enumerate(zip(ia, ib)):
                diffs += compare_trees(xa, xb, ctx, "%s[%d]." % (p, i), depth + 1)
        elif not values_equal(ea.value, eb.value):
            diffs.append(Diff("value", p, ea.tag, ea, eb, depth, ctx))
    return diffs


def is_items(v):
    """A normalized SQ value: a non-empty list of item lists."""
    return isinstance(v, list) and len(v) > 0 and isinstance(v[0], list)


def values_equal(x, y):
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(values_equal(p, q) for p, q in zip(x, y))
    if isinstance(x, tuple) and isinstance(y, tuple):
        return x == y
    if isinstance(x, bool) or isinstance(y, bool):
        return x == y
    if isinstance(x, (int, float)) and isinstance(y, (int, float)):
        return x == y
    if isinstance(x, str) and isinstance(y, str):
        return str(x) == str(y)
    return type(x) is type(y) and x == y


class AllowedDifferences:
    """Named expected differences: name -> (explanation, predicate(diff)).
    classify() returns the name of the first rule that accepts a diff, or
    None; used() says which rules matched at least once."""

    def __init__(self, rules):
        self.rules = rules
        self.hits = {name: 0 for name in rules}

    def classify(self, d):
        for name, (_, pred) in self.rules.items():
            try:
                ok = pred(d)
            except Exception:  # a predicate that cannot judge says no
                ok = False
            if ok:
                self.hits[name] += 1
                return name
        return None

    def unused(self):
        return [n for n, c in self.hits.items() if c == 0]


def judge(diffs, allowed):
    """Splits diffs into (unexplained, {rule: count}) by the allowed list."""
    bad, used = [], {}
    for d in diffs:
        rule = allowed.classify(d)
        if rule is None:
            bad.append(d)
        else:
            used[rule] = used.get(rule, 0) + 1
    return bad, used


def compare_json(a, b, ctx=None, path="", depth=0):
    """Differences between two DICOM JSON objects as parsed by json.loads:
    a (pacsd) and b (reference). Unlike compare_trees nothing is normalized
    (null and "" differ, as do 0.1 and 0.10000000149011612), except that
    numbers compare by value (1 == 1.0) and InlineBinary by decoded bytes.
    Diff.a / Diff.b are Elem(tag, vr, member dict)."""
    diffs = []

    def el(k, m):
        return Elem(int(k, 16), m.get("vr") if isinstance(m, dict) else None, m)
    for k, m in b.items():
        if k not in a:
            diffs.append(Diff("missing", path + _jtag(k), int(k, 16), None, el(k, m), depth, ctx))
    for k, m in a.items():
        if k not in b:
            diffs.append(Diff("extra", path + _jtag(k), int(k, 16), el(k, m), None, depth, ctx))
    ka = [k for k in a if k in b]
    kb = [k for k in b if k in a]
    if ka != kb:
        diffs.append(Diff("order", path or "(root)", None, Elem(0, "", ka), Elem(0, "", kb),
                          depth, ctx))
    for k in ka:
        ma, mb = a[k], b[k]
        p = path + _jtag(k)
        ea, eb = el(k, ma), el(k, mb)
        if ma.get("vr") != mb.get("vr"):
            diffs.append(Diff("vr", p, ea.tag, ea, eb, depth, ctx))
        members_a = set(ma) - {"vr"}
        members_b = set(mb) - {"vr"}
        if members_a != members_b:
            diffs.append(Diff("member", p, ea.tag, ea, eb, depth, ctx))
            continue
        if "InlineBinary" in ma:
            if _b64(ma["InlineBinary"]) != _b64(mb["InlineBinary"]):
                diffs.append(Diff("value", p, ea.tag, ea, eb, depth, ctx))
        elif "BulkDataURI" in ma:
            if ma["BulkDataURI"] != mb["BulkDataURI"]:
                diffs.append(Diff("value", p, ea.tag, ea, eb, depth, ctx))
        elif "Value" in ma:
            va, vb = ma["Value"], mb["Value"]
            if ma.get("vr") == "SQ" and mb.get("vr") == "SQ":
                if len(va) != len(vb):
                    diffs.append(Diff("items", p, ea.tag, ea, eb, depth, ctx))
                for i, (ia, ib) in enumerate(zip(va, vb)):
                    diffs += compare_json(ia or {}, ib or {}, ctx, "%s[%d]." % (p, i), depth + 1)
            elif not json_values_equal(va, vb):
                diffs.append(Diff("value", p, ea.tag, ea, eb, depth, ctx))
    return diffs


def _jtag(k):
    return "(%s,%s)" % (k[:4].upper(), k[4:].upper())


def _b64(s):
    if isinstance(s, list):
        s = "".join(s)
    return base64.b64decode(s)


def json_values_equal(x, y):
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(json_values_equal(p, q) for p, q in zip(x, y))
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(json_values_equal(x[k], y[k]) for k in x)
    if isinstance(x, bool) or isinstance(y, bool):
        return x is y
    if isinstance(x, (int, float)) and isinstance(y, (int, float)):
        return x == y or (x != x and y != y)
    if isinstance(x, str) and isinstance(y, str):  # pydicom's UID is a str
        return str(x) == str(y)
    return type(x) is type(y) and x == y


def flatten(tree, path="", out=None):
    """{path: Elem} for every element of a tree, paths as in Diff.path."""
    if out is None:
        out = {}
    for e in tree:
        p = path + tagstr(e.tag)
        out[p] = e
        if is_items(e.value):
            for i, it in enumerate(e.value):
                flatten(it, "%s[%d]." % (p, i), out)
    return out


def vr_str(vr):
    """pydicom 2.3's VR is a str Enum whose str() is 'VR.LO'; give 'LO'."""
    return getattr(vr, "value", vr)


# ---------------------------------------------------------------------------
# Part 10 files as bytes.

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
NATIVE_SYNTAXES = {"implicit": IMPLICIT_LE, "explicit": EXPLICIT_LE, "big": EXPLICIT_BE,
                   "deflated": DEFLATED_LE}
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
             b"UT", b"UV"}


def split_part10(data):
    """(transfer syntax UID from the meta group or None, data set bytes):
    skips the preamble and "DICM" when present and every (0002,xxxx)
    element at the start (Explicit VR Little Endian; a meta element whose VR
    is not two letters is taken as Implicit VR)."""
    pos = 132 if len(data) >= 132 and data[128:132] == b"DICM" else 0
    ts = None
    while pos + 8 <= len(data):
        group, elem = struct.unpack_from("<HH", data, pos)
        if group != 2:
            break
        vr = data[pos + 4:pos + 6]
        if vr.isalpha() and vr.isupper():
            if vr in _LONG_VRS:
                length = struct.unpack_from("<I", data, pos + 8)[0]
                hdr = 12
            else:
                length = struct.unpack_from("<H", data, pos + 6)[0]
                hdr = 8
        else:
            length = struct.unpack_from("<I", data, pos + 4)[0]
            hdr = 8
        if elem == 0x0010:
            ts = data[pos + hdr:pos + hdr + length].rstrip(b"\0 ").decode("ascii", "replace")
        pos += hdr + length
    return ts, data[pos:]


def dataset_bytes(path):
    """(transfer syntax UID or None, data set bytes, inflated if Deflated)."""
    import zlib
    with open(path, "rb") as f:
        ts, ds = split_part10(f.read())
    if ts == DEFLATED_LE:
        ds = zlib.decompress(ds, -15)
    return ts, ds


def walk_top_level(data, explicit=True, little=True):
    """[(tag, offset, header length, value length incl. delimiters)] of the
    top-level elements of a data set's bytes. Undefined lengths are followed
    through items to their delimiter (items of a UN of undefined length are
    Implicit VR Little Endian, PS3.5 6.2.2). Raises ValueError on bytes it
    cannot walk."""
    out = []
    pos = 0
    while pos < len(data):
        tag, hdr, vlen, vr = _header(data, pos, explicit, little)
        if vlen == 0xFFFFFFFF:
            end = _skip_undefined(data, pos + hdr, explicit and vr != b"UN",
                                  little or vr == b"UN")
            size = end - (pos + hdr)
        else:
            size = vlen
        if pos + hdr + size > len(data):
            raise ValueError("element %s at %d runs past the end" % (tagstr(tag), pos))
        out.append((tag, pos, hdr, size))
        pos += hdr + size
    return out


def _header(data, pos, explicit, little):
    e = "<" if little else ">"
    if pos + 8 > len(data):
        raise ValueError("truncated header at %d" % pos)
    group, elem = struct.unpack_from(e + "HH", data, pos)
    tag = group << 16 | elem
    if group == 0xFFFE:  # item / delimiters: always 4-byte length
        return tag, 8, struct.unpack_from(e + "I", data, pos + 4)[0], None
    if not explicit:
        return tag, 8, struct.unpack_from(e + "I", data, pos + 4)[0], None
    vr = data[pos + 4:pos + 6]
    if vr in _LONG_VRS:
        return tag, 12, struct.unpack_from(e + "I", data, pos + 8)[0], vr
    return tag, 8, struct.unpack_from(e + "H", data, pos + 6)[0], vr


def _skip_undefined(data, pos, explicit, little):
    """Offset just after the Sequence Delimitation Item that ends the
    undefined-length value starting at pos."""
    while True:
        tag, hdr, vlen, _ = _header(data, pos, explicit, little)
        if tag == 0xFFFEE0DD:
            return pos + 8
        if tag != 0xFFFEE000:
            raise ValueError("expected an item at %d, found %s" % (pos, tagstr(tag)))
        pos += 8
        if vlen != 0xFFFFFFFF:
            pos += vlen
            continue
        while True:  # an undefined-length item: elements up to its delimiter
            t, h, l, v = _header(data, pos, explicit, little)
            if t == 0xFFFEE00D:
                pos += 8
                break
            if l == 0xFFFFFFFF:
                pos = _skip_undefined(data, pos + h, explicit and v != b"UN",
                                      little or v == b"UN")
            else:
                pos += h + l
        if pos > len(data):
            raise ValueError("item runs past the end")


def group_length_errors(data, explicit=True, little=True):
    """[(tag, stated, actual)] for each top-level group length (gggg,0000)
    whose value is not the byte count of the rest of its group."""
    elems = walk_top_level(data, explicit, little)
    errors = []
    for i, (tag, pos, hdr, size) in enumerate(elems):
        if tag & 0xFFFF or size != 4:
            continue
        stated = struct.unpack_from("<I" if little else ">I", data, pos + hdr)[0]
        actual = sum(h + s for t, _, h, s in elems[i + 1:] if t >> 16 == tag >> 16)
        if stated != actual:
            errors.append((tag, stated, actual))
    return errors
