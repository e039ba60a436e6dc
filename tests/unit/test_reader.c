/* Unit tests: the Part 10 reader (whole buffer and streaming) on hand-built
 * encodings, malformed input and limits, and on pydicom's test files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <cmocka.h>

#include "dicom/dump.h"
#include "dicom/reader.h"
#include "testutil.h"
#include "util/limits.h"

/* --- a tiny encoder for test inputs (independent of writer.c) ------------ */

struct enc {
    struct dynbuf b;
    bool be;
};

static void e_init(struct enc *e, bool be)
{
    dynbuf_init(&e->b, 0);
    e->be = be;
}

static void u16(struct enc *e, uint16_t v)
{
    uint8_t x[2] = { (uint8_t)v, (uint8_t)(v >> 8) };
    if (e->be) {
        x[0] = (uint8_t)(v >> 8);
        x[1] = (uint8_t)v;
    }
    assert_int_equal(dynbuf_append(&e->b, x, 2), 0);
}

static void u32(struct enc *e, uint32_t v)
{
    if (e->be) {
        u16(e, (uint16_t)(v >> 16));
        u16(e, (uint16_t)v);
    } else {
        u16(e, (uint16_t)v);
        u16(e, (uint16_t)(v >> 16));
    }
}

static void raw(struct enc *e, const void *p, size_t n)
{
    assert_int_equal(dynbuf_append(&e->b, p, n), 0);
}

static bool long_vr(const char *vr)
{
    return dcm_vr_long_length(dcm_vr_parse(vr));
}

/* Explicit VR element header + value. */
static void ex(struct enc *e, uint16_t g, uint16_t el, const char *vr, const void *v, uint32_t len)
{
    u16(e, g);
    u16(e, el);
    raw(e, vr, 2);
    if (long_vr(vr)) {
        u16(e, 0);
        u32(e, len);
    } else {
        u16(e, (uint16_t)len);
    }
    if (v && len != DCM_UNDEFINED_LENGTH)
        raw(e, v, len);
}

/* Implicit VR element header + value. */
static void im(struct enc *e, uint16_t g, uint16_t el, const void *v, uint32_t len)
{
    u16(e, g);
    u16(e, el);
    u32(e, len);
    if (v && len != DCM_UNDEFINED_LENGTH)
        raw(e, v, len);
}

static void item(struct enc *e, uint32_t len)
{
    u16(e, 0xfffe);
    u16(e, 0xe000);
    u32(e, len);
}

static void delim(struct enc *e, uint16_t el)
{
    u16(e, 0xfffe);
    u16(e, el);
    u32(e, 0);
}

/* Preamble, DICM and a meta group naming `ts`. */
static void part10_head(struct enc *e, const char *ts)
{
    uint8_t pre[128] = { 0 };
    raw(e, pre, sizeof pre);
    raw(e, "DICM", 4);
    struct enc m;
    e_init(&m, false);
    ex(&m, 0x0002, 0x0001, "OB", "\0\1", 2);
    size_t n = strlen(ts);
    char tsbuf[66] = { 0 };
    memcpy(tsbuf, ts, n);
    ex(&m, 0x0002, 0x0010, "UI", tsbuf, (uint32_t)(n + (n & 1)));
    ex(e, 0x0002, 0x0000, "UL", NULL, 4);
    u32(e, (uint32_t)m.b.len);
    raw(e, m.b.data, m.b.len);
    dynbuf_free(&m.b);
}

static int read_buf(const struct enc *e, const struct dcm_read_opts *o, struct dcm_file *f,
                    struct pacs_err *err)
{
    return dcm_read_part10(e->b.data, e->b.len, o, f, err);
}

static void assert_str_value(const struct dcm_ds *ds, uint32_t tag, const char *want)
{
    char buf[256];
    assert_int_equal(dcm_ds_get_str(ds, tag, 0, buf, sizeof buf), 0);
    assert_string_equal(buf, want);
}

/* --- encodings ----------------------------------------------------------- */

static void test_explicit_le_part10(void **state)
{
    (void)state;
    struct enc e;
    e_init(&e, false);
    part10_head(&e, DCM_UID_EXPLICIT_LE);
    ex(&e, 0x0008, 0x0060, "CS", "CT", 2);
    ex(&e, 0x0010, 0x0010, "PN", "Doe^John", 8);
    ex(&e, 0x0028, 0x0010, "US", "\x00\x02", 2);
    ex(&e, 0x0029, 0x0010, "LO", "ACME 1.0", 8);
    ex(&e, 0x0029, 0x1001, "OB", "\x01\x02\x03\x04", 4);
    ex(&e, 0x7fe0, 0x0010, "OW", "\x01\x00\x02\x00", 4);
    struct dcm_file f;
    struct pacs_err err = { 0 };
    assert_int_equal(read_buf(&e, NULL, &f, &err), 0);
    assert_true(f.preamble);
    assert_string_equal(f.ts_uid, DCM_UID_EXPLICIT_LE);
    assert_int_equal(f.meta->n, 3);
    assert_int_equal(f.ds->n, 6);
    assert_str_value(f.ds, DCM_TAG(0x0010, 0x0010), "Doe^John");
    uint64_t rows;
    assert_int_equal(dcm_elem_uint(dcm_ds_find(f.ds, DCM_TAG(0x0028, 0x0010)), 0, &rows), 0);
    assert_int_equal(rows, 512);
    /* Private elements are kept verbatim with their creator. */
    const struct dcm_elem *p = dcm_ds_find(f.ds, DCM_TAG(0x0029, 0x1001));
    assert_int_equal(p->vr, DCM_VR_OB);
    assert_memory_equal(p->val, "\x01\x02\x03\x04", 4);
    assert_str_value(f.ds, DCM_TAG(0x0029, 0x0010), "ACME 1.0");
    /* Borrowed by default: values point into the input. */
    assert_true(p->val >= e.b.data && p->val < e.b.data + e.b.len);
    assert_int_equal(f.end_offset, e.b.len);
    dcm_file_free(&f);

    struct dcm_read_opts copy = { .copy_values = true };
    assert_int_equal(read_buf(&e, &copy, &f, &err), 0);
    p = dcm_ds_find(f.ds, DCM_TAG(0x0029, 0x1001));
    assert_false(p->val >= e.b.data && p->val < e.b.data + e.b.len);
    dcm_file_free(&f);
    dynbuf_free(&e.b);
}

static void test_implicit_le_vr_from_dictionary(void **state)
{
    (void)state;
    struct enc e;
    e_init(&e, false);
    im(&e, 0x0010, 0x0010, "Doe^Jane", 8);
    im(&e, 0x0028, 0x0103, "\x01\x00", 2);       /* PixelRepresentation = 1 */
    im(&e, 0x0028, 0x0106, "\xff\xff", 2);       /* US or SS -> SS */
    im(&e, 0x0029, 0x1010, "\x01\x02", 2);       /* private: UN */
    im(&e, 0x7fe0, 0x0010, "\x01\x00\x02\x00", 4); /* OB or OW -> OW */
    struct dcm_read_opts o = { .ts_uid = DCM_UID_IMPLICIT_LE };
    struct dcm_file f;
    struct pacs_err err = { 0 };
    assert_int_equal(read_buf(&e, &o, &f, &err), 0);
    assert_false(f.ts.explicit_vr);
    assert_int_equal(dcm_ds_find(f.ds, DCM_TAG(0x0010, 0x0010))->vr, DCM_VR_PN);
    const struct dcm_elem *sm = dcm_ds_find(f.ds, DCM_TAG(0x0028, 0x0106));
    assert_int_equal(sm->vr, DCM_VR_SS);
    int64_t v;
    assert_int_equal(dcm_elem_int(sm, 0, &v), 0);
    assert_int_equal(v, -1);
    assert_int_equal(dcm_ds_find(f.ds, DCM_TAG(0x0029, 0x1010))->vr, DCM_VR_UN);
    assert_int_equal(dcm_ds_find(f.ds, DCM_TAG_PIXEL_DATA)->vr, DCM_VR_OW);
    dcm_file_free(&f);

    /* Without --ts the encoding is detected from the first element. */
    assert_int_equal(read_buf(&e, NULL, &f, &err), 0);
    assert_string_equal(f.ts_uid, DCM_UID_IMPLICIT_LE);
    assert_false(f.preamble);
    assert_int_equal(f.meta->n, 0);
    dcm_file_free(&f);
    dynbuf_free(&e.b);
}

static void test_explicit_be(void **state)
{
    (void)state;
    struct enc e;
    e_init(&e, false);
    part10_head(&e, DCM_UID_EXPLICIT_BE);
    e.be = true;
    ex(&e, 0x0008, 0x0060, "CS", "MR", 2);
    ex(&e, 0x0020, 0x5000, "AT", "\x00\x10\x00\x20", 4);
    ex(&e, 0x0028, 0x0010, "US", "\x01\x00\x00\x02", 4);
    ex(&e, 0x0028, 0x1052, "FD", "\x40\x09\x00\x00\x00\x00\x00\x00", 8); /* 3.125 */
    ex(&e, 0x7fe0, 0x0010, "OW", "\x12\x34", 2);
    struct dcm_file f;
    struct pacs_err err = { 0 };
    assert_int_equal(read_buf(&e, NULL, &f, &err), 0);
    assert_true(f.ts.big_endian);
    uint64_t u;
    const struct dcm_elem *us = dcm_ds_find(f.ds, DCM_TAG(0x0028, 0x0010));
    assert_int_equal(dcm_elem_uint(us, 0, &u), 0);
    assert_int_equal(u, 256);
    assert_int_equal(dcm_elem_uint(us, 1, &u), 0);
    assert_int_equal(u, 2);
    uint32_t tag;
    assert_int_equal(dcm_elem_tag(dcm_ds_find(f.ds, DCM_TAG(0x0020, 0x5000)), 0, &tag), 0);
    assert_int_equal(tag, DCM_TAG(0x0010, 0x0020));
    double d;
    assert_int_equal(dcm_elem_double(dcm_ds_find(f.ds, DCM_TAG(0x0028, 0x1052)), 0, &d), 0);
    assert_true(d == 3.125);
    /* OW is held little-endian. */
    assert_memory_equal(dcm_ds_find(f.ds, DCM_TAG_PIXEL_DATA)->val, "\x34\x12", 2);
    dcm_file_free(&f);
    dynbuf_free(&e.b);
}

static void test_sequences_nested(void **state)
{
    (void)state;
    struct enc e;
    e_init(&e, false);
    part10_head(&e, DCM_UID_EXPLICIT_LE);
    /* Undefined-length sequence, one undefined item holding a defined-length
     * sequence with one defined item; then a defined empty item. */
    ex(&e, 0x0008, 0x1140, "SQ", NULL, DCM_UNDEFINED_LENGTH);
    item(&e, DCM_UNDEFINED_LENGTH);
    ex(&e, 0x0008, 0x1150, "UI", "1.2.3\0", 6);
    ex(&e, 0x0040, 0xa730, "SQ", NULL, 8 + 14);
    item(&e, 14);
    ex(&e, 0x0040, 0xa010, "CS", "CONTAINS", 6); /* 8 + 6 = 14 bytes */
    delim(&e, 0xe00d);
    item(&e, 0);
    delim(&e, 0xe0dd);
    ex(&e, 0x0010, 0x0010, "PN", "X^Y ", 4);
    struct dcm_file f;
    struct pacs_err err = { 0 };
    assert_int_equal(read_buf(&e, NULL, &f, &err), 0);
    const struct dcm_elem *sq = dcm_ds_find(f.ds, DCM_TAG(0x0008, 0x1140));
    assert_true(sq->flags & DCM_EF_SEQ);
    assert_true(sq->flags & DCM_EF_UNDEF_LEN);
    assert_int_equal(sq->u.items.n, 2);
    const struct dcm_ds *it0 = sq->u.items.v[0];
    assert_true(it0->flags & DCM_EF_UNDEF_LEN);
    assert_ptr_equal(it0->parent, f.ds);
    const struct dcm_elem *inner = dcm_ds_find(it0, DCM_TAG(0x0040, 0xa730));
    assert_false(inner->flags & DCM_EF_UNDEF_LEN);
    assert_int_equal(inner->u.items.n, 1);
    assert_str_value(inner->u.items.v[0], DCM_TAG(0x0040, 0xa010), "CONTAI");
    assert_int_equal(sq->u.items.v[1]->n, 0);
    assert_str_value(f.ds, DCM_TAG(0x0010, 0x0010), "X^Y");
    dcm_file_free(&f);
    dynbuf_free(&e.b);
}

static void test_un_undefined_length_is_implicit_sequence(void **state)
{
    (void)state;
    struct enc e;
    e_init(&e, false);
    part10_head(&e, DCM_UID_EXPLICIT_LE);
    ex(&e, 0x0009, 0x0010, "LO", "PRIV", 4);
    ex(&e, 0x0009, 0x1001, "UN", NULL, DCM_UNDEFINED_LENGTH);
    item(&e, DCM_UNDEFINED_LENGTH);
    im(&e, 0x0008, 0x0100, "ABC ", 4); /* implicit inside */
    delim(&e, 0xe00d);
    delim(&e, 0xe0dd);
    ex(&e, 0x0010, 0x0020, "LO", "ID", 2);
    struct dcm_file f;
    struct pacs_err err = { 0 };
    assert_int_equal(read_buf(&e, NULL, &f, &err), 0);
    const struct dcm_elem *un = dcm_ds_find(f.ds, DCM_TAG(0x0009, 0x1001));
    assert_int_equal(un->vr, DCM_VR_UN);
    assert_true(un->flags & DCM_EF_UN_SEQ);
    assert_int_equal(un->u.items.n, 1);
    const struct dcm_elem *cv = dcm_ds_find(un->u.items.v[0], DCM_TAG(0x0008, 0x0100));
    assert_int_equal(cv->vr, DCM_VR_SH);
    assert_str_value(f.ds, DCM_TAG(0x0010, 0x0020), "ID");
    dcm_file_free(&f);
    dynbuf_free(&e.b);
}

static void test_encapsulated_pixel_data(void **state)
{
    (void)state;
    struct enc e;
    e_init(&e, false);
    part10_head(&e, "1.2.840.10008.1.2.4.50");
    ex(&e, 0x0028, 0x0010, "US", "\x02\x00", 2);
    ex(&e, 0x7fe0, 0x0010, "OB", NULL, DCM_UNDEFINED_LENGTH);
    item(&e, 4);
    u32(&e, 0);
    item(&e, 6);
    raw(&e, "\xff\xd8\x01\x02\xff\xd9", 6);
    item(&e, 2);
    raw(&e, "\xab\xcd", 2);
    delim(&e, 0xe0dd);
    struct dcm_file f;
    struct pacs_err err = { 0 };
    assert_int_equal(read_buf(&e, NULL, &f, &err), 0);
    assert_true(f.ts.encapsulated);
    const struct dcm_elem *px = dcm_ds_find(f.ds, DCM_TAG_PIXEL_DATA);
    assert_true(px->flags & DCM_EF_ENCAPS);
    assert_int_equal(px->u.frags.n, 3);
    assert_int_equal(px->u.frags.v[0].len, 4);
    assert_int_equal(px->u.frags.v[1].len, 6);
    assert_memory_equal(px->u.frags.v[2].data, "\xab\xcd", 2);
    dcm_file_free(&f);
    dynbuf_free(&e.b);
}

static void test_deflated(void **state)
{
    (void)state;
    struct enc body;
    e_init(&body, false);
    for (int i = 0; i < 50; i++) {
        char v[10];
        snprintf(v, sizeof v, "VAL%05d", i);
        ex(&body, 0x0011, (uint16_t)(0x1000 + i), "LO", v, 8);
    }
    ex(&body, 0x0011, 0x0010, "LO", "DEFLATE ", 8); /* out of order: sorted on read */
    uint8_t z[8192];
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    assert_int_equal(deflateInit2(&zs, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
    zs.next_in = body.b.data;
    zs.avail_in = (uInt)body.b.len;
    zs.next_out = z;
    zs.avail_out = sizeof z;
    assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
    size_t zlen = sizeof z - zs.avail_out;
    deflateEnd(&zs);

    struct enc e;
    e_init(&e, false);
    part10_head(&e, DCM_UID_DEFLATED_LE);
    size_t head = e.b.len;
    raw(&e, z, zlen);
    struct dcm_file f;
    struct pacs_err err = { 0 };
    assert_int_equal(read_buf(&e, NULL, &f, &err), 0);
    assert_true(f.ts.deflated);
    assert_int_equal(f.ds->n, 51);
    assert_str_value(f.ds, DCM_TAG(0x0011, 0x1031), "VAL00049");
    assert_int_equal(f.ds->el[0].tag, DCM_TAG(0x0011, 0x0010));
    dcm_file_free(&f);

    /* Cut the deflate stream short: a clear truncation error. */
    assert_int_equal(dcm_read_part10(e.b.data, head + zlen / 2, NULL, &f, &err), PACS_ETRUNC);
    assert_non_null(strstr(err.msg, "deflated"));
    dynbuf_free(&e.b);
    dynbuf_free(&body.b);
}

static void test_stop_at_pixel_data(void **state)
{
    (void)state;
    struct enc e;
    e_init(&e, false);
    part10_head(&e, DCM_UID_EXPLICIT_LE);
    ex(&e, 0x0028, 0x0010, "US", "\x02\x00", 2);
    size_t px_at = e.b.len;
    ex(&e, 0x7fe0, 0x0010, "OW", NULL, 1000000); /* value absent: truncated */
    struct dcm_read_opts o = { .stop_tag = DCM_TAG_PIXEL_DATA };
    struct dcm_file f;
    struct pacs_err err = { 0 };
    assert_int_equal(read_buf(&e, &o, &f, &err), 0);
    assert_true(f.stopped);
    assert_int_equal(f.end_offset, px_at);
    assert_null(dcm_ds_find(f.ds, DCM_TAG_PIXEL_DATA));
    dcm_file_free(&f);
    /* Reading everything sees the truncation. */
    assert_int_equal(read_buf(&e, NULL, &f, &err), PACS_ETRUNC);
    dynbuf_free(&e.b);
}

static void test_mislabelled_implicit(void **state)
{
    (void)state;
    /* Meta says Explicit VR, the data set is Implicit (a known writer bug). */
    struct enc e;
    e_init(&e, false);
    part10_head(&e, DCM_UID_EXPLICIT_LE);
    im(&e, 0x0008, 0x0060, "CT", 2);
    im(&e, 0x0010, 0x0010, "Doe^John", 8);
    struct dcm_file f;
    struct pacs_err err = { 0 };
    assert_int_equal(read_buf(&e, NULL, &f, &err), 0);
    assert_false(f.ts.explicit_vr);
    assert_str_value(f.ds, DCM_TAG(0x0010, 0x0010), "Doe^John");
    dcm_file_free(&f);
    dynbuf_free(&e.b);
}

/* --- malformed input ------------------------------------------------------ */

static void expect_error(struct enc *e, const char *ts, int code, const char *needle)
{
    struct dcm_read_opts o = { .ts_uid = ts };
    struct dcm_file f;
    struct pacs_err err = { 0 };
    int rc = read_buf(e, &o, &f, &err);
    if (rc != code || !strstr(err.msg, needle))
        fail_msg("want %d '%s', got %d '%s'", code, needle, rc, err.msg);
    assert_non_null(strstr(err.msg, "offset "));
    assert_null(f.ds); /* nothing left to free on error */
    dynbuf_free(&e->b);
}

static void test_errors(void **state)
{
    (void)state;
    struct enc e;

    e_init(&e, false);
    ex(&e, 0x0010, 0x0010, "PN", NULL, 20);
    raw(&e, "short", 5);
    expect_error(&e, DCM_UID_EXPLICIT_LE, PACS_ETRUNC, "offset 0: element value needs 20 bytes");

    e_init(&e, false);
    ex(&e, 0x0008, 0x0060, "CS", "CT", 2);
    raw(&e, "\x10\x00\x10\x00pn\x02\x00XY", 10);
    expect_error(&e, DCM_UID_EXPLICIT_LE, PACS_EINVAL, "offset 10: element (0010,0010) has invalid VR");

    e_init(&e, false);
    item(&e, 0);
    expect_error(&e, DCM_UID_EXPLICIT_LE, PACS_EINVAL, "outside a sequence");

    e_init(&e, false);
    ex(&e, 0x0008, 0x1140, "SQ", NULL, 16);
    item(&e, 8);
    ex(&e, 0x0008, 0x1150, "UI", "1.2.3.4.5.6.", 12); /* overruns the item */
    expect_error(&e, DCM_UID_EXPLICIT_LE, PACS_EINVAL, "overruns its enclosing item");

    e_init(&e, false);
    ex(&e, 0x0008, 0x0060, "CS", "CT", 2);
    ex(&e, 0x0008, 0x0060, "CS", "MR", 2);
    expect_error(&e, DCM_UID_EXPLICIT_LE, PACS_EINVAL, "duplicate element (0008,0060)");

    e_init(&e, false);
    ex(&e, 0x0008, 0x0060, "UT", NULL, DCM_UNDEFINED_LENGTH);
    expect_error(&e, DCM_UID_EXPLICIT_LE, PACS_EINVAL, "has undefined length");

    e_init(&e, false);
    ex(&e, 0x7fe0, 0x0010, "OB", NULL, DCM_UNDEFINED_LENGTH);
    item(&e, DCM_UNDEFINED_LENGTH);
    expect_error(&e, "1.2.840.10008.1.2.4.50", PACS_EINVAL, "fragment with undefined length");

    e_init(&e, false);
    ex(&e, 0x0008, 0x1140, "SQ", NULL, DCM_UNDEFINED_LENGTH);
    ex(&e, 0x0008, 0x1150, "UI", "1.2.", 4);
    expect_error(&e, DCM_UID_EXPLICIT_LE, PACS_EINVAL, "expected an item (FFFE,E000)");

    /* Nesting beyond the limit. */
    e_init(&e, false);
    for (int i = 0; i <= PACS_MAX_SEQ_DEPTH; i++) {
        ex(&e, 0x0008, 0x1140, "SQ", NULL, DCM_UNDEFINED_LENGTH);
        item(&e, DCM_UNDEFINED_LENGTH);
    }
    expect_error(&e, DCM_UID_EXPLICIT_LE, PACS_ELIMIT, "nested deeper");

    /* A huge declared length costs nothing: rejected before allocation. */
    e_init(&e, false);
    ex(&e, 0x7fe0, 0x0010, "OB", NULL, 0xfffffff0u);
    expect_error(&e, DCM_UID_EXPLICIT_LE, PACS_ETRUNC, "needs 4294967280 bytes");

    e_init(&e, false);
    raw(&e, "\x08\x00", 2);
    expect_error(&e, DCM_UID_EXPLICIT_LE, PACS_ETRUNC, "element tag");

    struct dcm_file f;
    struct pacs_err err = { 0 };
    struct dcm_read_opts bad = { .ts_uid = "1.2.x" };
    assert_int_equal(dcm_read_part10((const uint8_t *)"", 0, &bad, &f, &err), PACS_EINVAL);
    assert_non_null(strstr(err.msg, "transfer syntax"));
}

/* --- streaming ----------------------------------------------------------- */

static int stream_all(const uint8_t *p, size_t n, size_t chunk, const struct dcm_read_opts *o,
                      struct dcm_file *f, struct pacs_err *err, size_t *fed)
{
    struct dcm_stream *s = dcm_stream_new(o);
    assert_non_null(s);
    int rc = 0;
    size_t off = 0;
    while (off < n) {
        size_t c = chunk < n - off ? chunk : n - off;
        size_t used;
        rc = dcm_stream_feed(s, p + off, c, &used, err);
        if (rc < 0)
            break;
        off += used;
        if (rc == 1)
            break;
    }
    if (fed)
        *fed = off;
    if (rc >= 0)
        rc = dcm_stream_finish(s, f, err);
    dcm_stream_free(s);
    return rc;
}

static char *dump_of(const struct dcm_file *f)
{
    struct dynbuf d;
    dynbuf_init(&d, 0);
    assert_int_equal(dcm_dump_file(f, NULL, &d), 0);
    return dynbuf_take(&d, NULL);
}

static void test_stream_stop_reports_used(void **state)
{
    (void)state;
    struct enc e;
    e_init(&e, false);
    part10_head(&e, DCM_UID_EXPLICIT_LE);
    ex(&e, 0x0010, 0x0010, "PN", "A^B ", 4);
    size_t px_at = e.b.len;
    static uint8_t pixels[5000];
    ex(&e, 0x7fe0, 0x0010, "OW", pixels, sizeof pixels);
    struct dcm_read_opts o = { .stop_tag = DCM_TAG_PIXEL_DATA };
    struct dcm_file f;
    struct pacs_err err = { 0 };
    size_t fed;
    assert_int_equal(stream_all(e.b.data, e.b.len, 1000, &o, &f, &err, &fed), 0);
    assert_true(f.stopped);
    /* Everything before Pixel Data was taken, nothing after it. */
    assert_int_equal(fed, px_at);
    assert_int_equal(f.end_offset, px_at);
    assert_str_value(f.ds, DCM_TAG(0x0010, 0x0010), "A^B");
    dcm_file_free(&f);

    /* Truncated input: the stream says so at finish. */
    assert_int_equal(stream_all(e.b.data, e.b.len - 10, 333, NULL, &f, &err, NULL), PACS_ETRUNC);
    assert_non_null(strstr(err.msg, "input ends inside an element"));
    dynbuf_free(&e.b);
}

/* A raw data set in a transfer syntax named by the caller, as a DIMSE
 * P-DATA stream delivers it: streamed in small chunks it reads as the whole
 * buffer does, with and without a stop tag. */
static void test_stream_raw_dataset(void **state)
{
    (void)state;
    struct enc e;
    e_init(&e, false);
    im(&e, 0x0008, 0x0018, "1.2.3.4\0", 8);
    im(&e, 0x0008, 0x1140, NULL, DCM_UNDEFINED_LENGTH);
    item(&e, DCM_UNDEFINED_LENGTH);
    im(&e, 0x0008, 0x1150, "1.2\0", 4);
    delim(&e, 0xe00d);
    delim(&e, 0xe0dd);
    im(&e, 0x0010, 0x0010, "Doe^Jane", 8);
    static uint8_t px[3000];
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (uint8_t)i;
    im(&e, 0x7fe0, 0x0010, px, sizeof px);
    struct dcm_read_opts o = { .ts_uid = DCM_UID_IMPLICIT_LE };
    struct dcm_file whole, streamed;
    struct pacs_err err = { 0 };
    assert_int_equal(read_buf(&e, &o, &whole, &err), 0);
    char *want = dump_of(&whole);
    const size_t chunks[] = { 1, 5, 64, 100000 };
    for (int k = 0; k < 4; k++) {
        assert_int_equal(stream_all(e.b.data, e.b.len, chunks[k], &o, &streamed, &err, NULL), 0);
        assert_string_equal(streamed.ts_uid, DCM_UID_IMPLICIT_LE);
        char *got = dump_of(&streamed);
        assert_string_equal(got, want);
        assert_memory_equal(dcm_ds_find(streamed.ds, DCM_TAG_PIXEL_DATA)->val, px, sizeof px);
        free(got);
        dcm_file_free(&streamed);
    }
    struct dcm_read_opts head = { .ts_uid = DCM_UID_IMPLICIT_LE, .stop_tag = DCM_TAG_PIXEL_DATA };
    size_t fed;
    assert_int_equal(stream_all(e.b.data, e.b.len, 7, &head, &streamed, &err, &fed), 0);
    assert_true(streamed.stopped);
    /* Reading stopped at the Pixel Data tag; up to 3 bytes of it may have
     * been taken by the call before the one that saw the whole tag. */
    size_t px_at = e.b.len - 8 - sizeof px;
    assert_int_equal(streamed.end_offset, px_at);
    assert_true(fed >= px_at && fed <= px_at + 3);
    assert_int_equal(streamed.ds->n, 3);
    dcm_file_free(&streamed);
    free(want);
    dcm_file_free(&whole);
    dynbuf_free(&e.b);
}

struct stream_check {
    unsigned parsed;
};

/* One pydicom test file: streamed in chunks of 1, 7 and 4096 bytes, the
 * result (or the failure) equals the whole-buffer read. */
static void stream_vs_whole(const char *name, const uint8_t *buf, size_t len, void *ctx)
{
    struct stream_check *c = ctx;
    struct dcm_file whole;
    struct pacs_err err = { 0 };
    int a = dcm_read_part10(buf, len, NULL, &whole, &err);
    char *want = a == 0 ? dump_of(&whole) : NULL;
    c->parsed += a == 0;
    static const size_t chunks[] = { 1, 7, 4096 };
    for (int k = 0; k < 3; k++) {
        if (chunks[k] == 1 && len > 300000)
            continue; /* byte-at-a-time on the big ones only costs time */
        struct dcm_file s;
        int b = stream_all(buf, len, chunks[k], NULL, &s, &err, NULL);
        if ((a == 0) != (b == 0))
            fail_msg("%s chunk %zu: whole %d, stream %d (%s)", name, chunks[k], a, b, err.msg);
        if (b == 0) {
            char *got = dump_of(&s);
            if (strcmp(want, got) != 0)
                fail_msg("%s chunk %zu: streamed data set differs", name, chunks[k]);
            free(got);
            dcm_file_free(&s);
        }
    }
    free(want);
    if (a == 0)
        dcm_file_free(&whole);
}

static void test_stream_equals_whole_on_corpus(void **state)
{
    (void)state;
    struct stream_check c = { 0 };
    unsigned files = test_each_pydicom_file(stream_vs_whole, &c);
    assert_true(files > 50);
    assert_true(c.parsed > 50);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_explicit_le_part10),
        cmocka_unit_test(test_implicit_le_vr_from_dictionary),
        cmocka_unit_test(test_explicit_be),
        cmocka_unit_test(test_sequences_nested),
        cmocka_unit_test(test_un_undefined_length_is_implicit_sequence),
        cmocka_unit_test(test_encapsulated_pixel_data),
        cmocka_unit_test(test_deflated),
        cmocka_unit_test(test_stop_at_pixel_data),
        cmocka_unit_test(test_mislabelled_implicit),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_stream_stop_reports_used),
        cmocka_unit_test(test_stream_raw_dataset),
        cmocka_unit_test(test_stream_equals_whole_on_corpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
