#!/usr/bin/python3
"""Generate tests/unit/charset_vectors.h: character-set test vectors whose
expected text comes from pydicom (the project's reference decoder).

Run with Debian's interpreter and package (python3-pydicom 2.3.1):

    /usr/bin/python3 tests/unit/gen_charset_vectors.py > tests/unit/charset_vectors.h

Two kinds of vectors:
- file vectors: every element using the Specific Character Set (PN LO SH LT
  ST UT UC), in every data set and sequence item, of every file in
  pydicom/data/charset_files/*.dcm, with the effective (inherited)
  Specific Character Set of its data set;
- synthetic vectors: hand-made raw values (sets and rules the files do not
  cover) run through pydicom's own element conversion.

Each vector holds the raw Specific Character Set bytes, the VR, the raw value
bytes exactly as stored (padding included) and pydicom's decoded value: for
PN str(PersonName), for several values their str joined with a backslash.
pydicom trims padding and drops empty trailing PN groups; test_charset.c
applies the same trimming to pacsd's output before comparing.
"""
import glob
import os
import sys
import warnings

import pydicom
from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement_from_raw, RawDataElement
from pydicom.multival import MultiValue
from pydicom.tag import Tag

CHARSET_VRS = ('PN', 'LO', 'SH', 'LT', 'ST', 'UT', 'UC')
FILES = '/usr/lib/python3/dist-packages/pydicom/data/charset_files/*.dcm'
SPEC_TAG = Tag(0x00080005)


def spec_list(raw_spec):
    """pydicom's reading of a raw (0008,0005) value."""
    if raw_spec is None:
        return None
    elem = DataElement_from_raw(
        RawDataElement(SPEC_TAG, 'CS', len(raw_spec), raw_spec, 0, True, True))
    value = elem.value
    if isinstance(value, MultiValue):
        return list(value)
    return value


def as_text(value):
    if isinstance(value, (list, MultiValue)):
        return '\\'.join(str(v) for v in value)
    return str(value)


def pydicom_decode(raw_spec, vr, raw):
    """Decode one raw value the way dcmread does."""
    encodings = convert_encodings(spec_list(raw_spec))
    tag = Tag(0x00100010) if vr == 'PN' else Tag(0x00104000)
    elem = DataElement_from_raw(
        RawDataElement(tag, vr, len(raw), raw, 0, True, True), encodings)
    return as_text(elem.value)


def raw_of(ds, tag):
    """The undecoded bytes of ds[tag] (reads it before any conversion)."""
    elem = ds._dict[tag]
    return getattr(elem, 'value', None) if isinstance(elem, RawDataElement) else None


def spec_bytes(ds):
    """The raw (0008,0005) of ds; dcmread has usually converted it already,
    so rebuild it from the values (padding is lost; synthetic vectors carry
    padded specs)."""
    raw = raw_of(ds, SPEC_TAG)
    if raw is not None:
        return raw
    value = ds[SPEC_TAG].value
    if isinstance(value, (list, MultiValue)):
        value = '\\'.join(value)
    return value.encode('ascii')


def walk(ds, spec, source, out, seen):
    if SPEC_TAG in ds._dict:
        spec = spec_bytes(ds)
    for tag in sorted(ds._dict.keys()):
        raw = raw_of(ds, tag)
        elem = ds[tag]
        if elem.VR == 'SQ':
            for k, item in enumerate(elem.value):
                walk(item, spec, '%s %s[%d]' % (source, elem.tag, k), out, seen)
            continue
        if elem.VR not in CHARSET_VRS or raw is None:
            continue
        key = (spec, elem.VR, raw)
        if key in seen:
            continue
        seen.add(key)
        out.append(('%s %s' % (source, elem.tag), spec, elem.VR, raw,
                    as_text(elem.value)))


# (label, spec, VR, raw): only cases where pacsd means to agree with pydicom;
# the deliberate differences are hand-written tests in test_charset.c.
SYNTHETIC = [
    ('ISO_IR 100 all bytes', b'ISO_IR 100', 'LT', bytes(range(0x80, 0x100))),
    ('ISO_IR 101 all bytes', b'ISO_IR 101', 'LT', bytes(range(0x80, 0x100))),
    ('ISO_IR 109 all bytes', b'ISO_IR 109', 'LT', bytes(range(0x80, 0x100))),
    ('ISO_IR 110 all bytes', b'ISO_IR 110', 'LT', bytes(range(0x80, 0x100))),
    ('ISO_IR 144 all bytes', b'ISO_IR 144', 'LT', bytes(range(0x80, 0x100))),
    ('ISO_IR 127 all bytes', b'ISO_IR 127', 'LT', bytes(range(0x80, 0x100))),
    ('ISO_IR 126 all bytes', b'ISO_IR 126', 'LT', bytes(range(0x80, 0x100))),
    ('ISO_IR 138 all bytes', b'ISO_IR 138', 'LT', bytes(range(0x80, 0x100))),
    ('ISO_IR 148 all bytes', b'ISO_IR 148', 'LT', bytes(range(0x80, 0x100))),
    ('ISO_IR 166 all bytes', b'ISO_IR 166', 'LT', bytes(range(0x80, 0x100))),
    ('ISO_IR 13 katakana', b'ISO_IR 13', 'PN', bytes(range(0xa1, 0xe0))),
    ('ISO_IR 13 Shift_JIS kanji', b'ISO_IR 13', 'PN', b'\x88\x9f\x88\xa0^\xb1\xb2'),
    ('default repertoire, high bytes', None, 'PN', b'Buc^J\xe9r\xf4me'),
    ('empty spec, high bytes', b'', 'LO', b'J\xe9r\xf4me'),
    ('unknown term falls back', b'ISO_IR 999', 'PN', b'J\xe9r\xf4me'),
    ('unknown word falls back', b'KLINGON ', 'LO', b'J\xe9r\xf4me'),
    ('misspelled ISO IR 144', b'ISO IR 144', 'PN', b'\xbb\xee\xda'),
    ('misspelled ISO_IR_144', b'ISO_IR_144', 'PN', b'\xbb\xee\xda'),
    ('misspelled ISO-2022-IR-149', b'\\ISO_2022_IR_149', 'PN',
     b'\x1b$)C\xb1\xe8\xc8\xf1\xc1\xdf'),
    ('ISO_IR 192 invalid bytes', b'ISO_IR 192', 'LT',
     b'a\xff\xc3(\xe2\x82b\xf0\x9f\x98\x80\xed\xa0\x80\xc0\xaf\xf4\x90\x80\x80'
     b'\xe0\x80\xaf\xf0\x9f\x98z\xc3'),
    ('ISO_IR 192 multi-valued', b'ISO_IR 192 ', 'LO', b'\xc3\xa9t\xc3\xa9\\h\xc3\xa4 '),
    ('GB18030 two and four bytes', b'GB18030', 'LT',
     b'\xcd\xf5 \x81\x30\x81\x30 \x95\x32\x82\x36 \x81\x5c'),
    ('GBK trail byte 0x5C', b'GBK', 'LT', b'\xcd\xf5\x81\x5c'),
    ('ISO 2022 IR 58 as value 1', b'ISO 2022 IR 58', 'PN', b'\xd5\xc5^\xd0\xa1\xb6\xab'),
    ('ISO 2022 IR 149 as value 1', b'ISO 2022 IR 149', 'PN', b'\xb1\xe8\xc8\xf1\xc1\xdf'),
    ('JIS X 0212', b'\\ISO 2022 IR 87\\ISO 2022 IR 159', 'PN',
     b'\x1b$(D0!\x1b(B^\x1b$B;3\x1b(B=\x1b$(D0!D!\x1b(B'),
    ('IR 13 + IR 87 romaji and katakana', b'ISO 2022 IR 13\\ISO 2022 IR 87', 'LO',
     b'\xd4\xcf\xc0\xde \x1b$B;3ED\x1b(J abc\\\xb1\x1b$B$\x22\x1b(J'),
    ('KS X 1001 reset at ^', b'\\ISO 2022 IR 149', 'PN',
     b'\x1b$)C\xc8\xab^\xc8\xab'),
    ('G1 reset at CR LF in LT', b'ISO 2022 IR 100\\ISO 2022 IR 144', 'LT',
     b'\xe9\x1b-L\xbb\r\n\xe9\x1b-L\xbb\t\xe9\x0c\xe9'),
    ('G1 reset at backslash in LO', b'ISO 2022 IR 100\\ISO 2022 IR 144', 'LO',
     b'\x1b-L\xbb\xee\\\xe9\\\x1b-L\xbb'),
    ('G1 reset at = and ^ in PN', b'ISO 2022 IR 100\\ISO 2022 IR 144', 'PN',
     b'\x1b-L\xbb=\xe9^\x1b-L\xbb^\xe9'),
    ('G0 reset at backslash in LO', b'\\ISO 2022 IR 87', 'LO',
     b'\x1b$B;3ED\x1b(B\\abc\\\x1b$B$d\x1b(B'),
    ('Greek by escape', b'ISO 2022 IR 6\\ISO 2022 IR 126', 'SH',
     b'Dion \x1b-F\xc4\xe9\xef\xed'),
    ('Thai by escape', b'ISO 2022 IR 6\\ISO 2022 IR 166', 'LO', b'abc \x1b-T\xa1\xa2\xa3'),
    ('Hebrew and Arabic by escape', b'ISO 2022 IR 138\\ISO 2022 IR 127', 'UT',
     b'\xf9\xf8 \x1b-G\xc7\xc8 \x1b-H\xe3\xe1'),
    ('Latin-2,3,4 by escape', b'ISO 2022 IR 100\\ISO 2022 IR 101\\ISO 2022 IR 109\\ISO 2022 IR 110',
     'ST', b'\xe9\x1b-B\xb1\x1b-C\xa1\x1b-D\xa2\x1b-A\xe9'),
    ('Turkish', b'ISO_IR 148', 'PN', b'\xd0\xdd\xde^\xf0\xfd\xfe'),
    ('UC multi-valued Latin-1', b'ISO_IR 100', 'UC', b'caf\xe9\\na\xefve  '),
    ('padding NULs', b'ISO_IR 100', 'SH', b'\xe9t\xe9\x00'),
]


def c_string(data):
    """A C string literal (octal escapes, so a following digit is safe)."""
    out = []
    for b in data:
        if b in (0x22, 0x5c, 0x3f) or b < 0x20 or b >= 0x7f:
            out.append('\\%03o' % b)
        else:
            out.append(chr(b))
    return '"' + ''.join(out) + '"'


def main():
    warnings.simplefilter('ignore')
    vectors = []
    files = sorted(glob.glob(FILES))
    if not files:
        sys.exit('no pydicom charset files under ' + FILES)
    for path in files:
        ds = pydicom.dcmread(path)
        walk(ds, None, os.path.basename(path), vectors, set())
    nfile = len(vectors)
    for label, spec, vr, raw in SYNTHETIC:
        vectors.append(('synthetic: ' + label, spec, vr, raw,
                        pydicom_decode(spec, vr, raw)))

    w = sys.stdout.write
    w('/* charset_vectors.h - GENERATED by tests/unit/gen_charset_vectors.py from\n'
      ' * pydicom %s (python3-pydicom) and its data/charset_files: do not edit.\n'
      ' * %d vectors from %d files, %d synthetic. expected = pydicom\'s decoded\n'
      ' * value (str; several values joined with a backslash). */\n'
      % (pydicom.__version__, nfile, len(files), len(SYNTHETIC)))
    w('#define CHARSET_VECTOR_COUNT %d\n\n' % len(vectors))
    w('static const struct charset_vector charset_vectors[] = {\n')
    for source, spec, vr, raw, expected in vectors:
        enc = expected.encode('utf-8')
        w('    {%s,\n     %s, %d, %s,\n     %s, %d,\n     %s, %d},\n' % (
            c_string(source.encode()),
            'NULL' if spec is None else c_string(spec),
            0 if spec is None else len(spec),
            "DCM_VR('%s', '%s')" % (vr[0], vr[1]),
            c_string(raw), len(raw), c_string(enc), len(enc)))
    w('};\n')


if __name__ == '__main__':
    main()
