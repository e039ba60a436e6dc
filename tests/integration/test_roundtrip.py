#!/usr/bin/python3
"""Round trip: files written by `pacsd convert` are read back identically by
pacsd, DCMTK and pydicom.

For every corpus file (dcmcompare.corpus_files) that `pacsd dump` parses,
and each target transfer syntax: implicit, explicit, big and deflated when
the pixel data is native or absent (plus the file's own syntax when that is
none of these), only the file's own syntax when the pixel data is
encapsulated:
 (i)   `pacsd dump` and `pacsd json` of the output equal those of the input
       (the data set; the meta group is pacsd's own);
 (ii)  DCMTK: `dcmftest` says it is a Part 10 file, and `dcmdump -dc`
       (no automatic correction; parse errors stop it, -E -Ep being the
       defaults) exits 0 with nothing on stderr beyond the warnings it
       already gives for the input;
 (iii) pydicom reads the output and its elements and values equal pydicom's
       reading of the input (dcmcompare.compare_trees);
 (iv)  converted to its own transfer syntax, the data set bytes (after the
       meta group; inflated for Deflated) equal the input's, except for the
       files in NOT_CANONICAL, whose input bytes are not what a conformant
       writer produces, for the reason given.
Differences that a target syntax forces (Implicit VR carries no VR) are in
ROUNDTRIP_DIFFERENCES with their reason, dcmdump warnings that an output may
add in DCMDUMP_WARNINGS, outputs pydicom cannot read (a pydicom limitation,
DCMTK reads them) in PYDICOM_CANNOT_READ; anything else fails.
Files pacsd must not write (no SOP Class UID anywhere, or a DICOMDIR whose
record offsets a rewrite would break) are in CANNOT_WRITE: converting them
must fail cleanly. Also: converting
encapsulated pixel data to Implicit VR fails with exit 1, one error line, and
no output file.

Options: -v prints accepted differences; FILTER arguments restrict the run
to corpus names containing them. Ends with "N passed, N failed".
"""
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dcmcompare as dc  # noqa: E402

def _stale_group_lengths(info):
    return bool(info.in_gl_errors)


def _implicit_under_explicit(info):
    return info.in_encoding == "implicit" and info.own != dc.IMPLICIT_LE


# name -> (why converting it to its own syntax cannot give the input's data
# set bytes, a check on the input that the reason holds)
NOT_CANONICAL = {
    "charset_files/chrJapMulti.dcm": (
        "stale group length (0010,0000) = 106, the group holds 190 bytes "
        "(the file was edited after writing); pacsd writes the true length",
        _stale_group_lengths),
    "charset_files/chrKoreanMulti.dcm": (
        "stale group lengths (0008,0000) = 392 and (0010,0000) = 106 where "
        "the groups hold 406 and 156 bytes; pacsd writes the true lengths",
        _stale_group_lengths),
    "test_files/693_J2KI.dcm": (
        "stale group lengths (0008,0000), (0028,0000) and (7FE0,0000) "
        "(105406: the size before compression); pacsd writes the true lengths",
        _stale_group_lengths),
    "test_files/SC_rgb_jpeg.dcm": (
        "the data set is encoded in Implicit VR although the meta group says "
        "JPEG Baseline (Explicit VR); pacsd reads it as Implicit VR (as "
        "pydicom does; dcmdump fails on it) and writes the declared syntax",
        _implicit_under_explicit),
}


# name -> why `pacsd convert` must refuse it (checked: exit 1, one line
# naming the input and the missing attribute, no output); a listed file
# that converts fails the test
CANNOT_WRITE = {
    "test_files/empty_charset_LEI.dcm": (
        "no meta group and no SOP Class/Instance UID in the data set: a Part 10 "
        "meta group needs (0002,0002) and (0002,0003) (Type 1)",
        r"SOP Class UID"),
    "test_files/meta_missing_tsyntax.dcm": (
        "Media Storage SOP Class UID in the meta group is empty and the data "
        "set has no SOP Class UID: nothing to put in (0002,0002)",
        r"SOP Class UID"),
    "test_files/nested_priv_SQ.dcm": (
        "Media Storage SOP Class UID in the meta group is empty and the data "
        "set has no SOP Class UID: nothing to put in (0002,0002)",
        r"SOP Class UID"),
}


DICOMDIR_REASON = (
    "a DICOMDIR: its records hold byte offsets from the start of the file "
    "((0004,1200), (0004,1202), (0004,1400), (0004,1420)); pacsd's meta group "
    "has another length, so a rewritten DICOMDIR would point into the wrong "
    "places: pacsd refuses it, naming the reason)")
for _n in ("DICOMDIR", "DICOMDIR-bigEnd", "DICOMDIR-empty.dcm", "DICOMDIR-implicit",
           "DICOMDIR-nopatient", "DICOMDIR-reordered", "TINY_ALPHA/DICOMDIR"):
    CANNOT_WRITE["test_files/dicomdirtests/" + _n] = (DICOMDIR_REASON, r"a DICOMDIR cannot be rewritten")

# (name, target UID) -> why pydicom cannot read pacsd's output; checked to
# still fail in pydicom and to pass (ii) (DCMTK reads it)
PYDICOM_CANNOT_READ = {
    ("test_files/UN_sequence.dcm", dc.EXPLICIT_BE): (
        "a UN of undefined length holds items encoded in Implicit VR Little "
        "Endian in every transfer syntax (PS3.5 6.2.2, CP-246), as pacsd "
        "writes them; pydicom 2.3 reads them as big endian in a Big Endian "
        "file and fails (DCMTK reads them)"),
}


def _tag_private(tag):
    return (tag >> 16) & 1 == 1


def _in_le_bytes(ctx, path):
    """The input element's value bytes as encoded, in Little Endian order."""
    e = ctx.in_flat.get(path)
    if e is None or e.raw is None:
        return None
    raw = bytes(e.raw)
    if ctx.in_big:
        raw = dc.swap(raw, dc.SWAP_SIZE.get(e.raw_vr, NUM_SIZE.get(e.raw_vr, 1)))
    return raw or None


NUM_SIZE = {"US": 2, "SS": 2, "AT": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "SV": 8, "UV": 8}


def _out_bytes(d):
    """Output element bytes: from a JSON member (i) or a pydicom Elem (iii)."""
    v = d.a.value
    if isinstance(v, dict):
        return dc._b64(v["InlineBinary"]) if "InlineBinary" in v else None
    if d.ctx.out_flat is not None:
        e = d.ctx.out_flat.get(d.path)
        return (bytes(e.raw) or None) if e is not None and e.raw is not None else None
    return None


def _pixel_ob_to_ow(d):
    return (d.kind == "vr" and d.ctx.target == dc.IMPLICIT_LE and d.a.vr == "OW"
            and d.b.vr == "OB" and (d.tag == 0x7FE00010 or d.tag >> 16 & 0xFF01 == 0x6000
                                    and d.tag & 0xFFFF == 0x3000))


def _vr_lost_implicit(d):
    return (d.kind in ("vr", "value", "member") and d.ctx.target == dc.IMPLICIT_LE
            and d.tag is not None and _tag_private(d.tag) and d.a is not None
            and d.b is not None and d.a.vr != d.b.vr
            and _out_bytes(d) == _in_le_bytes(d.ctx, d.path))


def _un_big_endian(d):
    e = d.ctx.in_flat.get(d.path)
    return (d.kind == "value" and d.ctx.target == dc.EXPLICIT_BE and e is not None
            and e.raw_vr == "UN" and d.ctx.out_flat is not None
            and _out_bytes(d) == (bytes(e.raw) or None))


def _group_length(d):
    return (d.kind == "value" and d.tag is not None and d.tag & 0xFFFF == 0
            and d.ctx.out_gl_ok)


def _pydicom_private_gl(d):
    return (d.kind == "vr" and d.ctx.target == dc.IMPLICIT_LE and d.ctx.out_flat is not None
            and _tag_private(d.tag) and d.tag & 0xFFFF == 0 and d.a.vr == "UN"
            and d.b.vr == "UL")


ROUNDTRIP_DIFFERENCES = {
    "pixel_ob_to_ow": (
        "Implicit VR: Pixel Data (and Overlay Data) are OW by definition "
        "(PS3.5 A.1); an 8-bit OB read from Explicit VR is written with the "
        "same bytes and reads back as OW, in pacsd and in pydicom",
        _pixel_ob_to_ow),
    "vr_lost_implicit": (
        "Implicit VR carries no VR: a private element reads back as UN in "
        "pacsd (no private dictionary) and with whatever VR pydicom's private "
        "dictionary gives; the bytes are those of the input",
        _vr_lost_implicit),
    "un_big_endian": (
        "A UN element is bytes of unknown structure and is written verbatim "
        "in Big Endian too; pydicom replaces UN by its dictionary VR "
        "(replace_un_with_known_vr) and decodes those bytes as big endian "
        "numbers, which they never were; the bytes are those of the input",
        _un_big_endian),
    "group_length": (
        "pacsd recomputes group lengths (gggg,0000) for the encoding written "
        "(they differ between Implicit and Explicit VR, and some inputs hold "
        "stale values); every group length in the output is checked to be "
        "exact",
        _group_length),
    "pydicom_private_group_length": (
        "pydicom reads a private group length (gggg,0000) written in Implicit "
        "VR as UN (it looks private tags up in its private dictionary only); "
        "pacsd and DCMTK read UL (PS3.5 7.2)",
        _pydicom_private_gl),
}

# dcmdump warnings on an output that the input did not cause, accepted for
# the target syntax given: (target UID, regex, why)
DCMDUMP_WARNINGS = [
    (dc.IMPLICIT_LE,
     r"^W: Found element \([0-9a-f]{4},[0-9a-f]{4}\) with VR UN and undefined length, "
     r"reading a sequence with transfer syntax LittleEndianImplicit \(CP-246\)$",
     "a private sequence of undefined length written in Implicit VR: DCMTK "
     "does not know the tag and notes that it reads the value as a sequence "
     "(CP-246), which is all Implicit VR can say about a private sequence"),
]


class Ctx:
    def __init__(self, name, target, info):
        self.name, self.target = name, target
        self.in_flat = info.in_flat
        self.in_big = info.in_encoding == "big"
        self.out_flat = None
        self.out_gl_ok = False
        self.labels = None

    def __repr__(self):
        return "%s -> %s" % (self.name, self.target)


class Info:
    """What the test knows of one input."""

    def __init__(self, name, path, own, targets):
        self.name, self.path, self.own, self.targets = name, path, own, targets
        self.in_flat = {}
        self.in_encoding = None
        self.in_gl_errors = []


def encoding_of(dump_text):
    """implicit / explicit / big, from the data set's "# Used TransferSyntax"
    line of a `pacsd dump` (pacsd detects what the bytes really are)."""
    lines = dump_text.splitlines()
    try:
        line = lines[lines.index("# Dicom-Data-Set") + 1]
    except (ValueError, IndexError):
        return None
    if "Implicit" in line:
        return "implicit"
    return "big" if "Big Endian" in line else "explicit"


def gl_errors(path, encoding):
    _, data = dc.dataset_bytes(path)
    return dc.group_length_errors(data, encoding != "implicit", encoding != "big")


def normalize_dump(lines, tags, implicit):
    """Masks what legitimately changes with the encoding: the lengths of
    sequences and items with explicit length, group length values, the
    lines of elements whose differences were accepted (by tag), and, when
    Implicit VR was written, the VR of private elements (a private sequence
    read as UN from Explicit VR reads back as SQ)."""
    out = []
    for l in lines:
        m = re.match(r"\s*\(([0-9a-f]{4}),([0-9a-f]{4})\) ", l)
        if m and (int(m.group(1), 16) << 16 | int(m.group(2), 16)) in tags:
            continue
        if "with explicit length" in l:
            l = re.sub(r"#\s*\d*,", "#,", l)
        if m and m.group(2) == "0000":
            l = re.sub(r"UL \d+\s+#\s*\d+,", "UL #,", l)
        if m and implicit and int(m.group(1), 16) & 1:
            l = l[:m.end()] + "??" + l[m.end() + 2:]
        out.append(l)
    return out


def dump_dataset(text):
    """The data set part of a `pacsd dump`, without the transfer syntax line."""
    lines = text.splitlines()
    try:
        start = lines.index("# Dicom-Data-Set")
    except ValueError:
        return None
    return [l for l in lines[start + 1:] if not l.startswith("# Used TransferSyntax")]


def run(cmd):
    return subprocess.run(cmd, capture_output=True, timeout=300)


def own_syntax(ds):
    ts = getattr(ds, "file_meta", None) and ds.file_meta.get("TransferSyntaxUID")
    if ts:
        return str(ts)
    if ds.is_implicit_VR:
        return dc.IMPLICIT_LE
    return dc.EXPLICIT_LE if ds.is_little_endian else dc.EXPLICIT_BE


def encapsulated(ds):
    raw = ds._dict.get(0x7FE00010)
    if raw is None:
        return False
    return getattr(raw, "length", 0) == 0xFFFFFFFF or getattr(raw, "is_undefined_length", False)


def dcmdump_warnings(cp, path):
    return [l.replace(path, "FILE") for l in cp.stderr.decode("utf-8", "replace").splitlines()]


def work_one(name, path, targets, tmp):
    """Subprocess part for one input: runs converts and readers, returns a
    dict of raw results (the main thread compares them)."""
    res = {"in_dump": run([dc.pacsd_binary(), "dump", path]),
           "in_json": run([dc.pacsd_binary(), "json", path]),
           "in_dcmdump": run(["dcmdump", "-dc", path]),
           "out": {}}
    for label, ts in targets:
        out = os.path.join(tmp, "%s.%s.dcm" % (name.replace("/", "_"), label))
        r = {"path": out, "convert": run([dc.pacsd_binary(), "convert", "--ts", ts, path, out])}
        if r["convert"].returncode == 0:
            r["dump"] = run([dc.pacsd_binary(), "dump", out])
            r["json"] = run([dc.pacsd_binary(), "json", out])
            r["dcmftest"] = run(["dcmftest", out])
            r["dcmdump"] = run(["dcmdump", "-dc", out])
        res["out"][label] = r
    return res


class Report:
    def __init__(self, verbose):
        self.passed = self.failed = 0
        self.verbose = verbose

    def check(self, ok, msg, details=(), show_details=False):
        if ok:
            self.passed += 1
            print("ok - " + msg)
        else:
            self.failed += 1
            print("FAIL - " + msg)
        if not ok or (self.verbose and show_details):
            for d in details:
                print("    " + str(d))


def _used(used):
    if not used:
        return ""
    return " (allowed: %s)" % ", ".join("%s x%d" % kv for kv in sorted(used.items()))


def main(argv):
    verbose = "-v" in argv
    filters = [a for a in argv if not a.startswith("-")]
    rep = Report(verbose)
    allowed = dc.AllowedDifferences(ROUNDTRIP_DIFFERENCES)
    files = [(n, p) for n, p in dc.corpus_files() if not filters or any(f in n for f in filters)]
    tmp = tempfile.mkdtemp(prefix="pacsd-roundtrip-")

    # Which files, which targets (pydicom says what the input holds).
    infos = []
    for name, path in files:
        cp = dc.run_pacsd("dump", path)
        if cp.returncode != 0:
            print("# %s: skipped, pacsd rejects it (see test_pydicom_corpus)" % name)
            continue
        ds = dc.dcmread(path)
        own = own_syntax(ds)
        if encapsulated(ds):
            targets = [("own", own)]
        else:
            targets = list(dc.NATIVE_SYNTAXES.items())
            if own not in dc.NATIVE_SYNTAXES.values():
                targets.append(("own", own))
        info = Info(name, path, own, targets)
        info.in_encoding = encoding_of(cp.stdout.decode("utf-8", "replace"))
        infos.append(info)
    if not infos:
        rep.check(False, "no corpus file parses")

    workers = max(2, os.cpu_count() or 2)
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        futs = [ex.submit(work_one, i.name, i.path, i.targets, tmp) for i in infos]
        for info, fut in zip(infos, futs):
            check_file(rep, allowed, info, fut.result())

    # The error path: encapsulated pixel data cannot become native.
    src = os.path.join(dc.TEST_FILES, "JPEG2000.dcm")
    out = os.path.join(tmp, "never.dcm")
    cp = dc.run_pacsd("convert", "--ts", "implicit", src, out)
    rep.check(dc.one_line_error(cp, src) and not os.path.exists(out)
              and not [f for f in os.listdir(tmp) if f.startswith("never")],
              "convert encapsulated JPEG2000.dcm -> implicit: exit 1, one error line, no output",
              [cp.returncode, cp.stderr.decode("utf-8", "replace")])

    if not filters:
        for rule in allowed.unused():
            rep.check(False, "ROUNDTRIP_DIFFERENCES[%r] is never needed: remove it" % rule)
        for label, names in (("NOT_CANONICAL", NOT_CANONICAL), ("CANNOT_WRITE", CANNOT_WRITE)):
            for n in names:
                if n not in {i.name for i in infos}:
                    rep.check(False, "%s[%r] is not a corpus file that parses" % (label, n))
    if verbose:
        for rule, (why, _) in allowed.rules.items():
            print("# %s (%d): %s" % (rule, allowed.hits[rule], why))
    subprocess.run(["rm", "-rf", tmp])
    print("%d passed, %d failed" % (rep.passed, rep.failed))
    return 1 if rep.failed else 0


def check_file(rep, allowed, info, res):
    name, path = info.name, info.path
    in_dump = dump_dataset(res["in_dump"].stdout.decode("utf-8", "replace"))
    try:
        in_json = json.loads(res["in_json"].stdout)
    except ValueError:
        in_json = None
    in_ds = dc.dcmread(path)
    in_tree = dc.py_tree(in_ds)
    info.in_flat = dc.flatten(in_tree)
    in_warn = set(dcmdump_warnings(res["in_dcmdump"], path))
    _, in_bytes = dc.dataset_bytes(path)
    try:
        info.in_gl_errors = gl_errors(path, info.in_encoding)
    except ValueError as e:
        info.in_gl_errors = ["cannot walk the input: %s" % e]

    for label, ts in info.targets:
        r = res["out"][label]
        what = "%s -> %s" % (name, label if label != "own" else "own syntax " + ts)
        conv = r["convert"]
        if name in CANNOT_WRITE:
            why, rx = CANNOT_WRITE[name]
            err = conv.stderr.decode("utf-8", "replace")
            rep.check(dc.one_line_error(conv, path) and re.search(rx, err)
                      and not os.path.exists(r["path"]),
                      "%s: refused as expected: %s" % (what, why),
                      ["exit %d" % conv.returncode, err,
                       "on CANNOT_WRITE: expected exit 1, one line matching %r, no output" % rx])
            continue
        if conv.returncode != 0 or conv.stderr:
            rep.check(False, "%s: pacsd convert failed" % what,
                      [conv.returncode, conv.stderr.decode("utf-8", "replace")])
            continue
        out = r["path"]
        ctx = Ctx(name, ts, info)
        out_encoding = {dc.IMPLICIT_LE: "implicit", dc.EXPLICIT_BE: "big"}.get(ts, "explicit")
        try:
            errs = gl_errors(out, out_encoding)
        except ValueError as e:
            errs = ["cannot walk the output: %s" % e]
        ctx.out_gl_ok = not errs

        # (i) pacsd reads back the same data set --------------------------------
        out_dump = dump_dataset(r["dump"].stdout.decode("utf-8", "replace"))
        try:
            out_json = json.loads(r["json"].stdout)
        except ValueError:
            out_json = None
        problems = ["group length %s is %d, its group holds %d bytes" % (dc.tagstr(t), x, y)
                    if isinstance(t, int) else str(t) for t, x, y in
                    [(e if isinstance(e, tuple) else (e, 0, 0)) for e in errs]]
        meta_ts, _ = dc.dataset_bytes(out)
        if meta_ts != ts:
            problems.append("the output's meta group says transfer syntax %s" % meta_ts)
        if encoding_of(r["dump"].stdout.decode("utf-8", "replace")) != out_encoding:
            problems.append("pacsd reads the output's data set as %s" % encoding_of(
                r["dump"].stdout.decode("utf-8", "replace")))
        if r["dump"].returncode or r["dump"].stderr or out_dump is None:
            problems.append("pacsd dump of the output failed: %s" % r["dump"].stderr[:300])
        if r["json"].returncode or out_json is None or in_json is None:
            problems.append("pacsd json of the input or output failed")
        used = {}
        diffs = []
        if not problems:
            diffs = dc.compare_json(out_json, in_json, ctx=ctx)
            bad, used = dc.judge(diffs, allowed)
            problems += [str(d) for d in bad[:20]]
            if not bad and out_dump != in_dump:
                tags = {d.tag for d in diffs if d.tag is not None}
                imp = ts == dc.IMPLICIT_LE
                if normalize_dump(out_dump, tags, imp) != normalize_dump(in_dump, tags, imp):
                    problems.append("dump differs:")
                    problems += _first_diff(normalize_dump(in_dump, tags, imp),
                                            normalize_dump(out_dump, tags, imp))
        rep.check(not problems, "%s: (i) pacsd dump and json equal the input's%s"
                  % (what, _used(used)), problems or [str(d) for d in diffs], show_details=True)

        # (ii) DCMTK ------------------------------------------------------------------
        ft = r["dcmftest"].stdout.decode("utf-8", "replace").strip()
        warn = set(dcmdump_warnings(r["dcmdump"], out))
        new_warn = sorted(w for w in warn - in_warn
                          if not any(t == ts and re.search(rx, w) for t, rx, _ in DCMDUMP_WARNINGS))
        dcmtk_ok = (ft == "yes: " + out and r["dcmftest"].returncode == 0
                    and r["dcmdump"].returncode == 0 and not new_warn)
        rep.check(dcmtk_ok,
                  "%s: (ii) dcmftest and dcmdump accept it" % what,
                  [ft, "dcmdump exit %d" % r["dcmdump"].returncode] + new_warn[:10])

        # (iii) pydicom reads back the same elements ---------------------------------
        try:
            out_tree = dc.py_tree(dc.dcmread(out))
        except Exception as e:  # pydicom cannot read it at all
            why = PYDICOM_CANNOT_READ.get((name, ts))
            rep.check(why is not None and dcmtk_ok,
                      "%s: (iii) pydicom cannot read the output: %r%s"
                      % (what, e, " (expected: %s)" % why if why else ""))
            out_tree = None
        if out_tree is not None and (name, ts) in PYDICOM_CANNOT_READ:
            rep.check(False, "%s: (iii) on PYDICOM_CANNOT_READ but pydicom reads it: "
                      "remove the entry" % what)
        if out_tree is not None:
            ctx.out_flat = dc.flatten(out_tree)
            ctx.labels = ("output", "input")
            diffs = dc.compare_trees(out_tree, in_tree, ctx=ctx)
            bad, used = dc.judge(diffs, allowed)
            rep.check(not bad, "%s: (iii) pydicom reads the same elements%s" % (what, _used(used)),
                      [str(d) for d in (bad[:20] if bad else diffs)], show_details=True)

        # (iv) own syntax: byte-identical data set ------------------------------------------
        if ts == info.own:
            _, out_bytes = dc.dataset_bytes(out)
            if name in NOT_CANONICAL:
                why, holds = NOT_CANONICAL[name]
                rep.check(out_bytes != in_bytes and holds(info),
                          "%s: (iv) data set bytes differ as expected: %s" % (what, why),
                          ["NOT_CANONICAL's reason does not hold or the bytes are identical: "
                           "fix the entry"])
            else:
                rep.check(out_bytes == in_bytes,
                          "%s: (iv) data set byte-identical to the input's (%d bytes)"
                          % (what, len(in_bytes)), _first_byte_diff(in_bytes, out_bytes))


def _first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return ["line %d: input  %s" % (i, x), "line %d: output %s" % (i, y)]
    return ["input %d lines, output %d lines" % (len(a), len(b))]


def _first_byte_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return ["first difference at data set offset %d (0x%x): input %s, output %s"
                    % (i, i, a[i:i + 16].hex(), b[i:i + 16].hex())]
    return ["input %d bytes, output %d bytes" % (len(a), len(b))]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
