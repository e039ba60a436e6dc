#!/usr/bin/python3
"""gen_dict.py - generate src/dicom/dict_data.c (DICOM data dictionary and UID
registry tables) from the dictionary files of Debian's python3-pydicom.

Usage (from the source root, with Debian's python, not a pyenv one):
    /usr/bin/python3 tools/gen_dict.py -o src/dicom/dict_data.c
    /usr/bin/python3 tools/gen_dict.py --check src/dicom/dict_data.c
    /usr/bin/python3 tools/gen_dict.py > some/file.c

The pydicom files are parsed with `ast` (literal evaluation only), never
imported, so no pydicom code runs and the output depends only on the data.
Output is sorted and carries no timestamp: the same input gives the same bytes.
"""

import argparse
import ast
import os
import subprocess
import sys
import tempfile

DEFAULT_SRC = "/usr/lib/python3/dist-packages/pydicom"
DEB_PACKAGE = "python3-pydicom"

# PS3.5 table 6.2-1: every VR that dict.h / vr.h has a DCM_VR_xx code for.
KNOWN_VRS = set(
    "AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST "
    "SV TM UC UI UL UN UR US UT UV".split())

# pydicom UID type -> enum dcm_uid_type constant. Types not listed -> OTHER.
UID_TYPES = {
    "Transfer Syntax": "DCM_UID_TRANSFER_SYNTAX",
    "SOP Class": "DCM_UID_SOP_CLASS",
    "Meta SOP Class": "DCM_UID_META_SOP_CLASS",
    "Well-known SOP Instance": "DCM_UID_WELL_KNOWN_INSTANCE",
    "Well-known Printer SOP Instance": "DCM_UID_WELL_KNOWN_INSTANCE",
    "Well-known Print Queue SOP Instance": "DCM_UID_WELL_KNOWN_INSTANCE",
    "Well-known frame of reference": "DCM_UID_WELL_KNOWN_INSTANCE",
    "Synchronization Frame of Reference": "DCM_UID_WELL_KNOWN_INSTANCE",
    "Coding Scheme": "DCM_UID_CODING_SCHEME",
    "DICOM UIDs as a Coding Scheme": "DCM_UID_CODING_SCHEME",
    "Application Context Name": "DCM_UID_APPLICATION_CONTEXT",
}


def die(msg):
    sys.stderr.write("gen_dict.py: %s\n" % msg)
    sys.exit(1)


def literal_assignments(path, names):
    """The literal values assigned to `names` at module level in `path`."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for t in targets:
            if isinstance(t, ast.Name) and t.id in names:
                found[t.id] = ast.literal_eval(value)
    missing = [n for n in names if n not in found]
    if missing:
        die("%s: no literal %s" % (path, ", ".join(missing)))
    return found


def deb_version(src):
    """Debian package version when src is the Debian install, else None."""
    if os.path.realpath(src) != os.path.realpath(DEFAULT_SRC):
        return None
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", DEB_PACKAGE],
            capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return out or None


def cstr(s):
    """A C string literal for s (UTF-8 bytes; octal escapes outside ASCII;
    '?' escaped so no trigraph can form)."""
    out = ['"']
    for b in s.encode("utf-8"):
        if b in (0x22, 0x5C):
            out.append("\\" + chr(b))
        elif b == 0x3F:
            out.append("\\?")
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append("\\%03o" % b)
    out.append('"')
    return "".join(out)


def parse_vrs(vr, where):
    """'US or SS or OW' -> ['US', 'SS', 'OW'] padded with 'NONE' to 3."""
    if vr == "NONE":
        return ["NONE"] * 3
    parts = [p.strip() for p in vr.split(" or ")]
    if not 1 <= len(parts) <= 3 or any(p not in KNOWN_VRS for p in parts):
        die("%s: unsupported VR %r" % (where, vr))
    return parts + ["NONE"] * (3 - len(parts))


def repeater_tag_mask(key):
    """'60xx3000' -> (0x60003000, 0xff00ffff): each 'x' is a free nibble."""
    if len(key) != 8:
        die("repeater key %r is not 8 characters" % key)
    tag = mask = 0
    for ch in key.lower():
        tag <<= 4
        mask <<= 4
        if ch == "x":
            continue
        if ch not in "0123456789abcdef":
            die("repeater key %r: bad character %r" % (key, ch))
        tag |= int(ch, 16)
        mask |= 0xF
    return tag, mask


def check_ascii_keyword(kw, where):
    if not all(c.isascii() and (c.isalnum() or c == "_") for c in kw):
        die("%s: keyword %r is not ASCII alphanumeric" % (where, kw))


def emit_index(out, name, idx):
    out.append("static const uint16_t %s[%d] = {" % (name, len(idx)))
    for i in range(0, len(idx), 12):
        out.append("    " + ", ".join(str(v) for v in idx[i:i + 12]) + ",")
    out.append("};")


def generate(src):
    dict_py = os.path.join(src, "_dicom_dict.py")
    uid_py = os.path.join(src, "_uid_dict.py")
    d = literal_assignments(dict_py, ["DicomDictionary", "RepeatersDictionary"])
    u = literal_assignments(uid_py, ["UID_dictionary"])
    ver = literal_assignments(os.path.join(src, "_version.py"),
                              ["__version__", "__dicom_version__"])
    tags, reps, uids = d["DicomDictionary"], d["RepeatersDictionary"], u["UID_dictionary"]

    # Exact tags.
    entries = []
    for tag in sorted(tags):
        vr, vm, name, retired, kw = tags[tag]
        where = "tag %08x" % tag
        if not 0 <= tag <= 0xFFFFFFFF:
            die("%s out of range" % where)
        if (tag >> 16) & 1:
            die("%s: odd (private) group in the public table" % where)
        if retired not in ("", "Retired"):
            die("%s: retired field %r" % (where, retired))
        check_ascii_keyword(kw, where)
        entries.append((tag, parse_vrs(vr, where), 1 if retired else 0, kw, name, vm))
    if len(entries) >= 0xFFFF:
        die("too many tags for a uint16_t keyword index")

    # Repeating groups.
    repeaters = []
    for key in sorted(reps, key=lambda k: repeater_tag_mask(k)):
        vr, vm, name, retired, kw = reps[key]
        where = "repeater %s" % key
        tag, mask = repeater_tag_mask(key)
        if retired not in ("", "Retired"):
            die("%s: retired field %r" % (where, retired))
        if not kw:
            die("%s: no keyword" % where)
        check_ascii_keyword(kw, where)
        repeaters.append((tag, mask, parse_vrs(vr, where), 1 if retired else 0, kw, name, vm, key))
    # Non-overlapping masks make the linear scan order irrelevant.
    for i, a in enumerate(repeaters):
        for b in repeaters[i + 1:]:
            if (a[0] ^ b[0]) & a[1] & b[1] == 0:
                die("repeaters %s and %s overlap" % (a[7], b[7]))

    kws = [e[3] for e in entries if e[3]] + [r[4] for r in repeaters]
    dup = sorted({k for k in kws if kws.count(k) > 1})
    if dup:
        die("duplicate keywords: %s" % ", ".join(dup))
    kw_index = sorted((i for i, e in enumerate(entries) if e[3]),
                      key=lambda i: entries[i][3].encode())

    # UIDs.
    uid_rows = []
    for uid in sorted(uids, key=lambda s: s.encode()):
        name, typ, _info, retired, kw = uids[uid]
        where = "UID %s" % uid
        if not uid or len(uid) > 64 or any(c not in "0123456789." for c in uid):
            die("%s: not a valid UID" % where)
        check_ascii_keyword(kw, where)
        ret = 1 if (retired == "Retired" or "Retired" in name) else 0
        uid_rows.append((uid, kw, name, UID_TYPES.get(typ, "DCM_UID_OTHER"), ret))
    ukws = [r[1] for r in uid_rows if r[1]]
    dup = sorted({k for k in ukws if ukws.count(k) > 1})
    if dup:
        die("duplicate UID keywords: %s" % ", ".join(dup))
    uid_kw_index = sorted((i for i, r in enumerate(uid_rows) if r[1]),
                          key=lambda i: uid_rows[i][1].encode())

    deb = deb_version(src)
    origin = ("Debian package %s %s (pydicom %s, DICOM %s)" %
              (DEB_PACKAGE, deb, ver["__version__"], ver["__dicom_version__"])
              if deb else
              "pydicom %s (DICOM %s) in %s" %
              (ver["__version__"], ver["__dicom_version__"], src))

    out = []
    out.append("/* dict_data.c - DICOM data dictionary and UID registry tables.")
    out.append(" *")
    out.append(" * generated, do not edit: written by tools/gen_dict.py from")
    out.append(" * %s," % origin)
    out.append(" * files pydicom/_dicom_dict.py and pydicom/_uid_dict.py.")
    out.append(" * Regenerate: /usr/bin/python3 tools/gen_dict.py -o src/dicom/dict_data.c")
    out.append(" * Counts: %d tags, %d repeating-group entries, %d UIDs."
               % (len(entries), len(repeaters), len(uid_rows)))
    out.append(" */")
    out.append('#include "dicom/dict.h"')
    out.append('#include "dicom/vr.h"')
    out.append("")
    out.append("/* E: exact tag; R: repeating group (tag with x digits zero, mask);")
    out.append(" * arguments: VRs (first = default), retired, keyword, name, VM. */")
    out.append("#define V(a, b, c) {DCM_VR_##a, DCM_VR_##b, DCM_VR_##c}")
    out.append("#define E(t, a, b, c, r, k, n, m) {t, 0xffffffffu, V(a, b, c), r, k, n, m}")
    out.append("#define R(t, x, a, b, c, r, k, n, m) {t, x, V(a, b, c), r, k, n, m}")
    out.append("#define U(u, k, n, t, r) {u, k, n, DCM_UID_##t, r}")
    out.append("")

    out.append("/* Tags alone, for a cache-friendly binary search. */")
    out.append("static const uint32_t tags[%d] = {" % len(entries))
    for i in range(0, len(entries), 8):
        out.append("    " + ", ".join("0x%08x" % e[0] for e in entries[i:i + 8]) + ",")
    out.append("};")
    out.append("")
    out.append("static const struct dcm_dict_entry entries[%d] = {" % len(entries))
    for tag, vrs, ret, kw, name, vm in entries:
        out.append("    E(0x%08x, %s, %s, %s, %d, %s, %s, %s)," %
                   (tag, vrs[0], vrs[1], vrs[2], ret, cstr(kw), cstr(name), cstr(vm)))
    out.append("};")
    out.append("")
    emit_index(out, "kw_index", kw_index)
    out.append("")
    out.append("/* Repeating groups; x digits are free nibbles, e.g. (60xx,3000) is tag")
    out.append(" * 0x60003000 mask 0xff00ffff. Sorted by tag; masks never overlap. */")
    out.append("static const struct dcm_dict_entry repeaters[%d] = {" % len(repeaters))
    for tag, mask, vrs, ret, kw, name, vm, key in repeaters:
        out.append("    R(0x%08x, 0x%08x, %s, %s, %s, %d, %s, %s, %s), /* %s */" %
                   (tag, mask, vrs[0], vrs[1], vrs[2], ret, cstr(kw), cstr(name),
                    cstr(vm), key))
    out.append("};")
    out.append("")
    out.append("static const struct dcm_uid_entry uids[%d] = {" % len(uid_rows))
    for uid, kw, name, typ, ret in uid_rows:
        out.append("    U(%s, %s, %s, %s, %d)," %
                   (cstr(uid), cstr(kw), cstr(name), typ[len("DCM_UID_"):], ret))
    out.append("};")
    out.append("")
    emit_index(out, "uid_kw_index", uid_kw_index)
    out.append("")
    out.append("const struct dcm_dict_tables dcm_dict_tables = {")
    out.append("    tags, entries, %d, kw_index, %d, repeaters, %d, uids, %d, uid_kw_index, %d,"
               % (len(entries), len(kw_index), len(repeaters), len(uid_rows), len(uid_kw_index)))
    out.append("};")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", default=DEFAULT_SRC,
                    help="directory holding pydicom's _dicom_dict.py, _uid_dict.py, _version.py")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("-o", "--output", help="write here (atomically) instead of stdout")
    g.add_argument("--check", metavar="FILE",
                   help="exit 1 if FILE differs from what would be generated")
    args = ap.parse_args()

    text = generate(args.src)
    if args.check:
        with open(args.check, encoding="utf-8") as f:
            if f.read() != text:
                die("%s is out of date; regenerate it" % args.check)
        return
    if not args.output:
        sys.stdout.write(text)
        return
    d = os.path.dirname(os.path.abspath(args.output))
    fd, tmp = tempfile.mkstemp(prefix=".gen_dict.", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, args.output)
    except BaseException:
        os.unlink(tmp)
        raise


if __name__ == "__main__":
    main()
