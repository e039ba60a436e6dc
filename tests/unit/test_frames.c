/* Unit tests: the frame locator (dicom/frames), the Accept header parser
 * (http/accept) and the BulkDataURI rewriting of stored metadata
 * (archive/metadata). Encapsulated values are built here item by item, so
 * each rule of frames.h is exercised on bytes whose answer is known. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "archive/metadata.h"
#include "dicom/frames.h"
#include "http/accept.h"
#include "util/dynbuf.h"

/* --- building encapsulated values ----------------------------------------- */

static void put_item(struct dynbuf *b, uint16_t elem, const void *p, uint32_t len)
{
    uint8_t h[8] = { 0xfe, 0xff, (uint8_t)elem, (uint8_t)(elem >> 8), (uint8_t)len,
                     (uint8_t)(len >> 8), (uint8_t)(len >> 16), (uint8_t)(len >> 24) };
    assert_int_equal(dynbuf_append(b, h, 8), 0);
    if (len)
        assert_int_equal(dynbuf_append(b, p, len), 0);
}

static int mem_read(void *ctx, uint64_t pos, void *p, size_t n, struct pacs_err *err)
{
    const struct dynbuf *b = ctx;
    if (pos > b->len || n > b->len - pos)
        return pacs_err_set(err, PACS_ETRUNC, "past the end");
    memcpy(p, b->data + pos, n);
    return 0;
}

/* A JPEG-like fragment: SOI .. EOI (start/end chosen by the flags). */
static void jpeg_frag(uint8_t *f, size_t n, bool soi, bool eoi)
{
    memset(f, 0x11, n);
    if (soi) {
        f[0] = 0xff;
        f[1] = 0xd8;
    }
    if (eoi) {
        f[n - 2] = 0xff;
        f[n - 1] = 0xd9;
    }
}

static void scan_ok(struct dynbuf *b, struct dcm_encaps *e)
{
    struct pacs_err err = { 0 };
    int rc = dcm_encaps_scan(mem_read, b, 0, b->len, e, &err);
    if (rc)
        fail_msg("scan: %s", err.msg);
}

static void test_encaps_one_per_frame(void **state)
{
    (void)state;
    struct dynbuf b;
    struct dcm_encaps e;
    struct dcm_frame_map m;
    struct pacs_err err = { 0 };
    uint8_t f[3][10];
    dynbuf_init(&b, 0);
    put_item(&b, 0xe000, NULL, 0);
    for (int i = 0; i < 3; i++) {
        jpeg_frag(f[i], sizeof f[i], true, true);
        put_item(&b, 0xe000, f[i], sizeof f[i]);
    }
    put_item(&b, 0xe0dd, NULL, 0);
    scan_ok(&b, &e);
    assert_int_equal(e.n, 3);
    assert_int_equal(e.bot.len, 0);
    assert_int_equal(e.frags[0].off, 16);
    assert_int_equal(e.frags[1].off, 34);
    assert_true(e.frags[2].starts_image && e.frags[2].ends_image);
    assert_int_equal(dcm_encaps_frames(&e, NULL, 0, 3, &m, &err), 0);
    assert_int_equal(m.first[0], 0);
    assert_int_equal(m.first[1], 1);
    assert_int_equal(m.first[2], 2);
    assert_int_equal(m.first[3], 3);
    dcm_frame_map_free(&m);
    /* One frame: every fragment. */
    assert_int_equal(dcm_encaps_frames(&e, NULL, 0, 1, &m, &err), 0);
    assert_int_equal(m.first[0], 0);
    assert_int_equal(m.first[1], 3);
    dcm_frame_map_free(&m);
    /* More frames than fragments cannot be. */
    assert_int_equal(dcm_encaps_frames(&e, NULL, 0, 4, &m, &err), PACS_EINVAL);
    dcm_encaps_free(&e);
    dynbuf_free(&b);
}

/* Two frames in five fragments: by the Basic Offset Table, then (same
 * bytes, empty table) by the markers. */
static void test_encaps_bot_and_markers(void **state)
{
    (void)state;
    struct dynbuf b;
    struct dcm_encaps e;
    struct dcm_frame_map m;
    struct pacs_err err = { 0 };
    uint8_t fr[5][12];
    /* frame 1 = fragments 0,1,2; frame 2 = fragments 3,4; the second
     * fragment ends in FFD9 by chance but the next does not start an image. */
    jpeg_frag(fr[0], 12, true, false);
    jpeg_frag(fr[1], 12, false, true);
    jpeg_frag(fr[2], 12, false, true);
    fr[2][10] = 0xff; /* EOI then a pad byte */
    fr[2][11] = 0x00;
    fr[2][9] = 0xff;
    fr[2][10] = 0xd9;
    jpeg_frag(fr[3], 12, true, false);
    jpeg_frag(fr[4], 12, false, true);
    for (int with_bot = 1; with_bot >= 0; with_bot--) {
        dynbuf_init(&b, 0);
        uint8_t bot[8] = { 0, 0, 0, 0, 3 * 20, 0, 0, 0 };
        put_item(&b, 0xe000, bot, with_bot ? 8 : 0);
        for (int i = 0; i < 5; i++)
            put_item(&b, 0xe000, fr[i], 12);
        put_item(&b, 0xe0dd, NULL, 0);
        scan_ok(&b, &e);
        assert_int_equal(e.n, 5);
        assert_true(e.frags[2].ends_image);
        uint64_t *offs = NULL;
        size_t n_offs = 0;
        assert_int_equal(dcm_offset_table(b.data + e.bot.off, e.bot.len, 4, &offs, &n_offs, &err),
                         0);
        assert_int_equal(n_offs, with_bot ? 2 : 0);
        int rc = dcm_encaps_frames(&e, offs, n_offs, 2, &m, &err);
        if (rc)
            fail_msg("frames (bot %d): %s", with_bot, err.msg);
        assert_int_equal(m.first[0], 0);
        assert_int_equal(m.first[1], 3);
        assert_int_equal(m.first[2], 5);
        dcm_frame_map_free(&m);
        /* The markers give 2 frames, not 3: refused, not guessed. */
        if (!with_bot)
            assert_int_equal(dcm_encaps_frames(&e, NULL, 0, 3, &m, &err), PACS_EINVAL);
        free(offs);
        dcm_encaps_free(&e);
        dynbuf_free(&b);
    }
}

static void test_encaps_bad_offsets(void **state)
{
    (void)state;
    struct dynbuf b;
    struct dcm_encaps e;
    struct dcm_frame_map m;
    struct pacs_err err = { 0 };
    uint8_t f[4] = { 1, 2, 3, 4 };
    dynbuf_init(&b, 0);
    put_item(&b, 0xe000, NULL, 0);
    put_item(&b, 0xe000, f, 4);
    put_item(&b, 0xe000, f, 4);
    put_item(&b, 0xe0dd, NULL, 0);
    scan_ok(&b, &e);
    uint64_t not_at_item[2] = { 0, 7 }, not_zero[2] = { 12, 24 }, down[2] = { 12, 0 };
    assert_int_equal(dcm_encaps_frames(&e, not_at_item, 2, 2, &m, &err), PACS_EINVAL);
    assert_int_equal(dcm_encaps_frames(&e, not_zero, 2, 2, &m, &err), PACS_EINVAL);
    assert_int_equal(dcm_encaps_frames(&e, down, 2, 2, &m, &err), PACS_EINVAL);
    uint64_t ok[2] = { 0, 12 };
    assert_int_equal(dcm_encaps_frames(&e, ok, 2, 2, &m, &err), 0);
    assert_int_equal(m.first[1], 1);
    dcm_frame_map_free(&m);
    /* Entries for 1 frame but 2 declared. */
    assert_int_equal(dcm_encaps_frames(&e, ok, 1, 2, &m, &err), PACS_EINVAL);
    dcm_encaps_free(&e);
    dynbuf_free(&b);
}

static void test_encaps_malformed(void **state)
{
    (void)state;
    struct dynbuf b;
    struct dcm_encaps e;
    struct pacs_err err = { 0 };
    uint8_t f[4] = { 1, 2, 3, 4 };
    /* No delimiter. */
    dynbuf_init(&b, 0);
    put_item(&b, 0xe000, NULL, 0);
    put_item(&b, 0xe000, f, 4);
    assert_int_equal(dcm_encaps_scan(mem_read, &b, 0, b.len, &e, &err), PACS_ETRUNC);
    /* A fragment longer than the bytes left. */
    dynbuf_reset(&b);
    put_item(&b, 0xe000, NULL, 0);
    put_item(&b, 0xe000, f, 4);
    b.data[12] = 0x40;
    assert_int_equal(dcm_encaps_scan(mem_read, &b, 0, b.len, &e, &err), PACS_ETRUNC);
    /* Not an item tag. */
    dynbuf_reset(&b);
    put_item(&b, 0xe000, NULL, 0);
    put_item(&b, 0xe00d, f, 4);
    put_item(&b, 0xe0dd, NULL, 0);
    assert_int_equal(dcm_encaps_scan(mem_read, &b, 0, b.len, &e, &err), PACS_EINVAL);
    assert_non_null(strstr(err.msg, "FFFE,E00D"));
    /* A delimiter with a length. */
    dynbuf_reset(&b);
    put_item(&b, 0xe000, NULL, 0);
    put_item(&b, 0xe0dd, f, 4);
    assert_int_equal(dcm_encaps_scan(mem_read, &b, 0, b.len, &e, &err), PACS_EINVAL);
    /* Offset table with a bad length. */
    uint64_t *offs;
    size_t n;
    assert_int_equal(dcm_offset_table(f, 3, 4, &offs, &n, &err), PACS_EINVAL);
    dynbuf_free(&b);
}

/* --- native ---------------------------------------------------------------- */

static struct dcm_ds *image_ds(const char *rows, const char *cols, uint16_t bits,
                               const char *frames)
{
    struct dcm_ds *ds = dcm_ds_new();
    uint16_t r = (uint16_t)strtoul(rows, NULL, 10), c = (uint16_t)strtoul(cols, NULL, 10), spp = 1;
    assert_non_null(ds);
    assert_int_equal(dcm_ds_put(ds, DCM_TAG(0x0028, 0x0002), DCM_VR_US, &spp, 2, NULL), 0);
    if (frames)
        assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0028, 0x0008), DCM_VR_IS, frames), 0);
    assert_int_equal(dcm_ds_put(ds, DCM_TAG(0x0028, 0x0010), DCM_VR_US, &r, 2, NULL), 0);
    assert_int_equal(dcm_ds_put(ds, DCM_TAG(0x0028, 0x0011), DCM_VR_US, &c, 2, NULL), 0);
    assert_int_equal(dcm_ds_put(ds, DCM_TAG(0x0028, 0x0100), DCM_VR_US, &bits, 2, NULL), 0);
    return ds;
}

static void test_native_frames(void **state)
{
    (void)state;
    struct dcm_pixel_geom g;
    struct pacs_err err = { 0 };
    uint64_t off, len;
    unsigned shift;
    struct dcm_ds *ds = image_ds("4", "3", 16, "5");
    assert_int_equal(dcm_pixel_geom_from_ds(ds, &g, &err), 0);
    assert_int_equal(g.frames, 5);
    assert_int_equal(g.frame_bits, 4 * 3 * 16);
    assert_int_equal(dcm_native_frame(&g, 120, 2, &off, &len, &shift, &err), 0);
    assert_int_equal(off, 48);
    assert_int_equal(len, 24);
    assert_int_equal(shift, 0);
    assert_int_equal(dcm_native_frame(&g, 120, 5, &off, &len, &shift, &err), PACS_ENOTFOUND);
    /* A value one byte short of 5 frames. */
    assert_int_equal(dcm_native_frame(&g, 119, 0, &off, &len, &shift, &err), PACS_EINVAL);
    dcm_ds_free(ds);

    /* No NumberOfFrames: one frame. */
    ds = image_ds("2", "2", 8, NULL);
    assert_int_equal(dcm_pixel_geom_from_ds(ds, &g, &err), 0);
    assert_int_equal(g.frames, 1);
    dcm_ds_free(ds);

    /* BitsAllocated 12 is not a whole number of bytes per sample. */
    ds = image_ds("2", "2", 12, NULL);
    assert_int_equal(dcm_pixel_geom_from_ds(ds, &g, &err), PACS_EINVAL);
    dcm_ds_free(ds);

    /* Too many frames. */
    ds = image_ds("2", "2", 8, "99999999");
    assert_int_equal(dcm_pixel_geom_from_ds(ds, &g, &err), PACS_ELIMIT);
    dcm_ds_free(ds);
}

/* 1-bit frames of 3x3 pixels: 9 bits each, packed back to back. */
static void test_one_bit_frames(void **state)
{
    (void)state;
    struct dcm_pixel_geom g;
    struct pacs_err err = { 0 };
    uint64_t off, len;
    unsigned shift;
    struct dcm_ds *ds = image_ds("3", "3", 1, "3");
    assert_int_equal(dcm_pixel_geom_from_ds(ds, &g, &err), 0);
    assert_int_equal(g.frame_bits, 9);
    /* Pixel k of the whole value is bit k%8 of byte k/8. Frames: bits
     * 0-8 all ones, 9-17 alternating from 1, 18-26 zeros but the last. */
    uint8_t v[4] = { 0 };
    for (int k = 0; k < 27; k++) {
        int bit = k < 9 ? 1 : k < 18 ? ((k - 9) % 2 == 0) : (k == 26);
        if (bit)
            v[k / 8] |= (uint8_t)(1u << (k % 8));
    }
    uint8_t out[2];
    assert_int_equal(dcm_native_frame(&g, 4, 0, &off, &len, &shift, &err), 0);
    assert_int_equal(off, 0);
    assert_int_equal(len, 2);
    assert_int_equal(shift, 0);
    dcm_bits_extract(v + off, shift, 9, out);
    assert_int_equal(out[0], 0xff);
    assert_int_equal(out[1], 0x01);
    assert_int_equal(dcm_native_frame(&g, 4, 1, &off, &len, &shift, &err), 0);
    assert_int_equal(off, 1);
    assert_int_equal(shift, 1);
    assert_int_equal(len, 2);
    dcm_bits_extract(v + off, shift, 9, out);
    assert_int_equal(out[0], 0x55);
    assert_int_equal(out[1], 0x01);
    assert_int_equal(dcm_native_frame(&g, 4, 2, &off, &len, &shift, &err), 0);
    assert_int_equal(off, 2);
    assert_int_equal(shift, 2);
    dcm_bits_extract(v + off, shift, 9, out);
    assert_int_equal(out[0], 0x00);
    assert_int_equal(out[1], 0x01);
    dcm_ds_free(ds);
}

/* --- Accept ---------------------------------------------------------------- */

static void test_accept(void **state)
{
    (void)state;
    struct http_accept a;
    struct pacs_err err = { 0 };
    assert_int_equal(http_accept_parse(NULL, &a, &err), 0);
    assert_int_equal(a.n, 1);
    assert_string_equal(a.r[0].type, "*/*");

    assert_int_equal(
        http_accept_parse("application/dicom+json;q=0.5, Multipart/Related; "
                          "type=\"Application/DICOM\"; transfer-syntax=1.2.840.10008.1.2.1, "
                          "image/*;q=0, multipart/related;type=application/octet-stream;"
                          "transfer-syntax=*;q=0.9",
                          &a, &err),
        0);
    assert_int_equal(a.n, 3); /* q=0 dropped */
    assert_string_equal(a.r[0].type, "multipart/related");
    assert_string_equal(a.r[0].root_type, "application/dicom");
    assert_string_equal(a.r[0].transfer_syntax, "1.2.840.10008.1.2.1");
    assert_int_equal(a.r[0].q, 1000);
    assert_string_equal(a.r[1].root_type, "application/octet-stream");
    assert_string_equal(a.r[1].transfer_syntax, "*");
    assert_int_equal(a.r[1].q, 900);
    assert_string_equal(a.r[2].type, "application/dicom+json");
    assert_int_equal(a.r[2].q, 500);

    /* A comma inside a quoted value does not split. */
    assert_int_equal(http_accept_parse("a/b; x=\"1,2\", c/d", &a, &err), 0);
    assert_int_equal(a.n, 2);

    const char *bad[] = { "dicom", "a/b; q=2", "a/b; q=0.5x", "a/b; type=\"x",
                          "a/b; transfer-syntax=1..2", "a/b; transfer-syntax=abc", "*/b",
                          "a/b; =x", "/b" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (http_accept_parse(bad[i], &a, &err) != PACS_EINVAL)
            fail_msg("'%s' accepted", bad[i]);
        assert_int_equal(a.n, 0);
    }
    struct dynbuf many;
    dynbuf_init(&many, 0);
    for (int i = 0; i <= PACS_MAX_ACCEPT_RANGES; i++)
        assert_int_equal(dynbuf_puts(&many, "a/b,"), 0);
    assert_int_equal(http_accept_parse((const char *)many.data, &a, &err), PACS_ELIMIT);
    dynbuf_free(&many);

    assert_true(http_media_covers("*/*", "image/jpeg"));
    assert_true(http_media_covers("image/*", "image/jpeg"));
    assert_false(http_media_covers("image/*", "imagex/jpeg"));
    assert_true(http_media_covers("multipart/related", "multipart/related"));
    assert_false(http_media_covers("application/dicom", "application/dicom+json"));
}

static void test_range(void **state)
{
    (void)state;
    uint64_t a = 7, b = 7;
    struct {
        const char *h;
        int want;
        uint64_t first, last;
    } cases[] = {
        {"bytes=0-99", 1, 0, 99},       {"bytes=-10", 1, 990, 999},
        {"bytes=100-", 1, 100, 999},    {"bytes=10-5000", 1, 10, 999},
        {"bytes=-5000", 1, 0, 999},     {"BYTES=1-1", 1, 1, 1},
        {" bytes=999-999", 1, 999, 999}, {"bytes=1000-", -1, 0, 0},
        {"bytes=-0", -1, 0, 0},         {"bytes=5-2", 0, 0, 0},
        {"bytes=0-1,4-5", 0, 0, 0},     {"items=0-1", 0, 0, 0},
        {"bytes=x-y", 0, 0, 0},         {"bytes=5", 0, 0, 0},
        {"bytes=-", 0, 0, 0},           {"bytes=1-2x", 0, 0, 0},
        {"bytes=99999999999999999999999-", 0, 0, 0},
    };
    assert_int_equal(http_range_parse(NULL, 1000, &a, &b), 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = http_range_parse(cases[i].h, 1000, &a, &b);
        if (got != cases[i].want)
            fail_msg("'%s': %d, want %d", cases[i].h, got, cases[i].want);
        if (got == 1 && (a != cases[i].first || b != cases[i].last))
            fail_msg("'%s': %llu-%llu", cases[i].h, (unsigned long long)a,
                     (unsigned long long)b);
    }
    assert_int_equal(http_range_parse("bytes=0-", 0, &a, &b), -1);
}

static void test_frame_list(void **state)
{
    (void)state;
    uint64_t *v;
    size_t n;
    assert_int_equal(http_frame_list_parse("3,1,3,999999999", &v, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(v[0], 3);
    assert_int_equal(v[1], 1);
    assert_int_equal(v[3], 999999999);
    free(v);
    const char *bad[] = { "", "0", "1,,2", ",1", "1,", "a", "1-3", "-1", " 1", "1.5",
                          "1000000000", "01x" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (http_frame_list_parse(bad[i], &v, &n) != PACS_EINVAL)
            fail_msg("'%s' accepted", bad[i]);
}

/* --- metadata rewriting ------------------------------------------------------ */

static int prefix_bulk(void *ctx, const char *study, const char *series, const char *instance,
                       const char *rel, struct dynbuf *out)
{
    (void)ctx;
    return dynbuf_printf(out, "http://x/%s/%s/%s/%s", study, series, instance, rel);
}

static void test_metadata_rewrite(void **state)
{
    (void)state;
    struct dynbuf out;
    struct pacs_err err = { 0 };
    const char *in =
        "{\"00081030\":{\"vr\":\"LO\",\"Value\":[\"\\\"BulkDataURI\\\":\\\"bulk/1\"]},"
        "\"00091010\":{\"vr\":\"LO\",\"Value\":[\"BulkDataURI\"]},"
        "\"7FE00010\":{\"vr\":\"OW\",\"BulkDataURI\" : \"bulk/7FE00010\"}}";
    const char *want =
        "{\"00081030\":{\"vr\":\"LO\",\"Value\":[\"\\\"BulkDataURI\\\":\\\"bulk/1\"]},"
        "\"00091010\":{\"vr\":\"LO\",\"Value\":[\"BulkDataURI\"]},"
        "\"7FE00010\":{\"vr\":\"OW\",\"BulkDataURI\" : \"http://x/1/2/3/bulk/7FE00010\"}}";
    dynbuf_init(&out, 0);
    assert_int_equal(metadata_rewrite(in, strlen(in), prefix_bulk, NULL, "1", "2", "3", &out,
                                      &err),
                     0);
    assert_string_equal((const char *)out.data, want);
    dynbuf_reset(&out);
    assert_int_equal(metadata_rewrite("{\"a", 3, prefix_bulk, NULL, "1", "2", "3", &out, &err),
                     PACS_EINVAL);
    dynbuf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encaps_one_per_frame),
        cmocka_unit_test(test_encaps_bot_and_markers),
        cmocka_unit_test(test_encaps_bad_offsets),
        cmocka_unit_test(test_encaps_malformed),
        cmocka_unit_test(test_native_frames),
        cmocka_unit_test(test_one_bit_frames),
        cmocka_unit_test(test_accept),
        cmocka_unit_test(test_range),
        cmocka_unit_test(test_frame_list),
        cmocka_unit_test(test_metadata_rewrite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
