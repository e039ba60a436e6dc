#!/usr/bin/python3
"""pacsd against pydicom over pydicom's own test corpus.

Files: every file under $PYDICOM_TEST_FILES (recursively, dicomdirtests/
included) and charset_files/*.dcm beside it, except the non-DICOM ones:
names starting with README, and names ending .txt (documentation), .json
(DICOM JSON fixtures), .dump (dcmdump text) or .gz (a gzip archive); see
dcmcompare.is_corpus_file.

For each file:
 (a) `pacsd dump` succeeds, or the file is in EXPECTED_REJECTIONS and pacsd
     fails with exit 1 and one line "pacsd: PATH: offset N: reason" whose
     reason matches the listed one. A listed file that parses fails the test
     (the list must stay honest).
 (b) For a file that parses: `pacsd json` agrees element by element with
     pydicom's dcmread(force=True): same tags in the same order, recursively
     into sequences; same VR; same values (text after character set
     decoding, numbers, binary bytes). ELEMENT_DIFFERENCES lists every
     accepted difference with its reason.
 (c) `pacsd json` equals pydicom's Dataset.to_json_dict() (default
     bulk_data_threshold and no bulk data handler: every binary value is
     inline) member by member, up to JSON_DIFFERENCES.
Also every allowed difference must still be needed somewhere in the corpus.

Options: -v prints every accepted difference; FILTER arguments restrict the
run to corpus names containing them (the "still needed" check is then off).
Ends with "N passed, N failed"; exits 1 on any failure.
"""
import json
import os
import re
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dcmcompare as dc  # noqa: E402

# name -> (why pacsd rejects it, regex the error's reason must match)
EXPECTED_REJECTIONS = {
    "test_files/MR_truncated.dcm": (
        "truncated: the file ends inside Pixel Data (a value of 8192 bytes "
        "with 8142 present); pydicom reads it with a short value",
        r"^offset \d+: element value needs 8192 bytes, only 8142 remain$"),
    "test_files/rtplan_truncated.dcm": (
        "truncated: the file ends inside a sequence (an element of 976 bytes "
        "with 719 present); pydicom silently stops at the end of the file",
        r"^offset \d+: element value needs 976 bytes, only 719 remain$"),
    "test_files/no_meta.dcm": (
        "no meta group and the data set starts one byte late (the first byte "
        "of tag (0008,0005) is missing), so the first element's tag reads "
        "(0820,0500) and its length 173228800 exceeds the file; pydicom with "
        "force=True reads that single garbage element and stops",
        r"^offset 0: element value needs 173228800 bytes, only \d+ remain$"),
    "test_files/dicomdirtests/DICOMDIR-nooffset": (
        "malformed: made from DICOMDIR by deleting the two zero-offset "
        "elements (0004,1400) and (0004,1420) of the last directory record "
        "(24 bytes) while fixing the sequence length but not the item length, "
        "so the last item claims 248 bytes where 224 remain in its sequence "
        "and in the file; pydicom and DCMTK end the item at the end of its "
        "sequence and read every element (pacsd rejects an item that "
        "overruns its sequence)",
        r"^offset \d+: item needs 248 bytes, only 224 remain$"),
}

# ---------------------------------------------------------------------------
# (b) accepted differences between `pacsd json` (Diff.a) and pydicom's
# elements (Diff.b). Diff.ctx is a Ctx: the file, and pydicom's elements by
# path with the VR and bytes as encoded (Elem.raw_vr, Elem.raw).


def _is_group_length(d):
    return d.kind == "missing" and d.tag is not None and d.tag & 0xFFFF == 0


def _ref(d):
    """pydicom's element (with raw_vr/raw) at the diff's path."""
    return d.ctx.flat.get(d.path)


def _un_kept(d):
    # pacsd says UN with the bytes as encoded; the file says UN explicitly.
    r = _ref(d)
    return (d.kind in ("vr", "value", "member") and _vr(d.a) == "UN" and r is not None
            and r.vr != "UN" and r.raw_vr == "UN" and _bytes(d.a) == (r.raw or None))


def _vr(e):
    return e.vr if e is not None else None


def _bytes(e):
    """An element's bytes: Elem value (compare_trees) or JSON member."""
    v = e.value
    if isinstance(v, dict):
        return dc._b64(v["InlineBinary"]) if "InlineBinary" in v else None
    return v if isinstance(v, bytes) else None


def _values(e):
    v = e.value
    return v.get("Value") if isinstance(v, dict) else v


def _component_spaces(d):
    # 'DERIVED \PRIMARY': pacsd strips each value, pydicom the whole element.
    a, b = _values(d.a), _values(d.b)
    if d.kind != "value" or not isinstance(a, list) or not isinstance(b, list) or len(a) < 2:
        return False
    if len(a) != len(b) or not all(isinstance(x, str) for x in a + b):
        return False
    return a != b and [x.strip(" ") for x in a] == [x.strip(" ") for x in b]


ELEMENT_DIFFERENCES = {
    "group_length": (
        "Group length elements (gggg,0000) are left out of DICOM JSON "
        "(PS3.18 F.2.2); pydicom keeps them in the data set",
        _is_group_length),
    "un_kept": (
        "An element encoded with explicit VR UN stays UN in pacsd (as in "
        "DCMTK); pydicom replaces the VR by its dictionary's "
        "(config.replace_un_with_known_vr, its private dictionary for private "
        "tags) and decodes the value; pacsd's bytes equal the bytes encoded",
        _un_kept),
    "component_spaces": (
        "In a multi-valued text element pacsd strips the padding spaces of "
        "each value ('DERIVED \\PRIMARY' gives 'DERIVED'; PS3.5 6.2: "
        "leading/trailing spaces are not significant), pydicom strips only "
        "the end of the whole element",
        _component_spaces),
}

# ---------------------------------------------------------------------------
# (c) accepted differences between `pacsd json` (Diff.a) and pydicom's
# to_json_dict (Diff.b); Diff.a/b values are the JSON members.


def _empty_in_multi(d):
    a, b = _values(d.a), _values(d.b)
    if d.kind != "value" or not isinstance(a, list) or not isinstance(b, list):
        return False
    return (None in a and len(a) == len(b)
            and all((x is None and y == "") or dc.json_values_equal(x, y)
                    for x, y in zip(a, b)))


def _be_binary(d):
    # same bytes once pydicom's big-endian words are swapped
    if d.kind != "value" or not d.ctx.big_endian:
        return False
    a, b = _bytes(d.a), _bytes(d.b)
    size = dc.SWAP_SIZE.get(d.a.vr)
    return a is not None and size and a != b and dc.swap(b, size) == a


def _invalid_dropped(d):
    return (d.kind == "extra" and d.path in d.ctx.json_dropped
            and all(isinstance(x, str) for x in d.a.value.get("Value", [])))


def _empty_sq(d):
    return (d.kind == "member" and d.a.vr == "SQ" and d.b.vr == "SQ"
            and "Value" not in d.a.value and d.b.value.get("Value") == [])


JSON_DIFFERENCES = {
    "group_length": (
        "Group length elements (gggg,0000) are left out (PS3.18 F.2.2); "
        "pydicom's to_json_dict writes them",
        _is_group_length),
    "un_kept": ELEMENT_DIFFERENCES["un_kept"],
    "component_spaces": ELEMENT_DIFFERENCES["component_spaces"],
    "empty_value_null": (
        "An empty value inside a multi-valued element (e.g. the first value "
        "of Specific Character Set '\\ISO 2022 IR 87') is null in pacsd "
        "(PS3.18 F.2.5), \"\" in pydicom",
        _empty_in_multi),
    "big_endian_inline_binary": (
        "InlineBinary of OW/OF/OL/OD/OV read from a Big Endian file: pacsd "
        "writes the Little Endian bytes (json.h), pydicom the bytes as they "
        "are in the file",
        _be_binary),
    "invalid_number_dropped": (
        "pydicom's to_json_dict raises on an IS/DS value that is not a "
        "number (badVR.dcm: IS '1A'); the test then calls it with "
        "suppress_invalid_tags=True, which drops the element; pacsd writes "
        "the text as a JSON string, which F.2.3 allows",
        _invalid_dropped),
    "empty_sequence": (
        "A sequence with no items has no \"Value\" in pacsd (an empty "
        "attribute, F.2.5); pydicom writes \"Value\": []",
        _empty_sq),
}


class Ctx:
    """What the predicates may look at besides the two elements."""

    def __init__(self, name, ds, ref_tree):
        self.name = name
        self.big_endian = not ds.is_little_endian
        self.flat = dc.flatten(ref_tree)
        self.json_dropped = set()

    def __repr__(self):
        return self.name


# ---------------------------------------------------------------------------


class Report:
    def __init__(self, verbose):
        self.passed = 0
        self.failed = 0
        self.verbose = verbose

    def ok(self, msg, details=()):
        self.passed += 1
        print("ok - " + msg)
        if self.verbose:
            for d in details:
                print("    " + d)

    def fail(self, msg, details=()):
        self.failed += 1
        print("FAIL - " + msg)
        for d in details:
            print("    " + d)


def describe(bad, limit=25):
    lines = [str(d) for d in bad[:limit]]
    if len(bad) > limit:
        lines.append("... %d more" % (len(bad) - limit))
    return lines


def pydicom_json(ds):
    """pydicom's to_json_dict; pydicom raises on values it cannot convert
    (e.g. IS '1A'), in which case those elements are dropped
    (suppress_invalid_tags) and listed."""
    import logging
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    try:
        return ds.to_json_dict(), set()
    except Exception:
        out = ds.to_json_dict(suppress_invalid_tags=True)
        # top-level elements pydicom dropped (it only drops at the top level
        # of the data set it is called on; items are converted inside it)
        dropped = {dc.tagstr(int(t)) for t in ds.keys() if "%08X" % int(t) not in out}
        return out, dropped


def main(argv):
    verbose = "-v" in argv
    filters = [a for a in argv if not a.startswith("-")]
    rep = Report(verbose)
    elem_allowed = dc.AllowedDifferences(ELEMENT_DIFFERENCES)
    json_allowed = dc.AllowedDifferences(JSON_DIFFERENCES)
    files = [(n, p) for n, p in dc.corpus_files() if not filters or any(f in n for f in filters)]
    if not files:
        rep.fail("no corpus files found under %s" % dc.TEST_FILES)
    names = {n for n, _ in files}
    if not filters:
        for n in EXPECTED_REJECTIONS:
            if n not in names:
                rep.fail("%s: on EXPECTED_REJECTIONS but not in the corpus" % n)

    for name, path in files:
        # (a) parse or reject -------------------------------------------------
        cp = dc.run_pacsd("dump", path)
        if name in EXPECTED_REJECTIONS:
            why, pattern = EXPECTED_REJECTIONS[name]
            err = cp.stderr.decode("utf-8", "replace").rstrip("\n")
            prefix = "pacsd: %s: " % path
            reason = err[len(prefix):] if err.startswith(prefix) else err
            if cp.returncode == 0:
                rep.fail("%s: (a) on EXPECTED_REJECTIONS but pacsd parses it" % name)
            elif not dc.one_line_error(cp, path) or not re.search(pattern, reason):
                rep.fail("%s: (a) rejected, but not with one line matching %r" % (name, pattern),
                         [err[:500]])
            else:
                rep.ok("%s: (a) rejected as expected: %s" % (name, reason), [why])
            continue
        if cp.returncode != 0 or cp.stderr or b"# Dicom-Data-Set" not in cp.stdout:
            rep.fail("%s: (a) pacsd dump failed (exit %d)" % (name, cp.returncode),
                     [cp.stderr.decode("utf-8", "replace")[:500]])
            continue
        rep.ok("%s: (a) parses" % name)

        # (b) elements against pydicom ------------------------------------------
        cj = dc.run_pacsd("json", path)
        try:
            if cj.returncode != 0 or cj.stderr:
                raise ValueError("exit %d: %s" % (cj.returncode, cj.stderr.decode(
                    "utf-8", "replace")[:300]))
            text = cj.stdout.decode("utf-8")
            if text.count("\n") != 1 or not text.endswith("\n"):
                raise ValueError("expected one line of JSON")
            pj = json.loads(text)
        except (ValueError, UnicodeDecodeError) as e:
            rep.fail("%s: (b) pacsd json failed: %s" % (name, e))
            rep.fail("%s: (c) pacsd json failed" % name)
            continue
        ds = dc.dcmread(path)
        ref = dc.py_tree(ds)
        ctx = Ctx(name, ds, ref)
        diffs = dc.compare_trees(dc.json_tree(pj), ref, ctx=ctx)
        bad, used = dc.judge(diffs, elem_allowed)
        n = count_elems(ref)
        if bad:
            rep.fail("%s: (b) %d unexplained element differences with pydicom" % (name, len(bad)),
                     describe(bad))
        else:
            rep.ok("%s: (b) %d elements agree with pydicom%s" % (name, n, _used(used)),
                   [str(d) for d in diffs])

        # (c) JSON against pydicom's to_json_dict --------------------------------------
        ds = dc.dcmread(path)
        try:
            ref_json, ctx.json_dropped = pydicom_json(ds)
        except Exception as e:  # pydicom itself cannot write this data set
            rep.fail("%s: (c) pydicom's to_json_dict failed: %r" % (name, e))
            continue
        diffs = dc.compare_json(pj, ref_json, ctx=ctx)
        bad, used = dc.judge(diffs, json_allowed)
        if bad:
            rep.fail("%s: (c) %d unexplained JSON differences with pydicom" % (name, len(bad)),
                     describe(bad))
        else:
            rep.ok("%s: (c) JSON equals pydicom's%s" % (name, _used(used)),
                   [str(d) for d in diffs])

    if not filters:
        for label, allowed in (("ELEMENT_DIFFERENCES", elem_allowed),
                               ("JSON_DIFFERENCES", json_allowed)):
            for rule in allowed.unused():
                rep.fail("%s[%r] is never needed: remove it" % (label, rule))
    if verbose:
        for label, allowed in (("ELEMENT_DIFFERENCES", elem_allowed),
                               ("JSON_DIFFERENCES", json_allowed)):
            print("# %s:" % label)
            for rule, (why, _) in allowed.rules.items():
                print("#   %s (%d): %s" % (rule, allowed.hits[rule], why))
    print("%d passed, %d failed" % (rep.passed, rep.failed))
    return 1 if rep.failed else 0


def _used(used):
    if not used:
        return ""
    return " (allowed: %s)" % ", ".join("%s x%d" % kv for kv in sorted(used.items()))


def count_elems(tree):
    n = 0
    for e in tree:
        n += 1
        if dc.is_items(e.value):
            for it in e.value:
                n += count_elems(it)
    return n


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
