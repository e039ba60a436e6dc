/* Unit tests: the DICOM JSON Model writer and reader (src/dicom/json.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dicom/json.h"
#include "testutil.h"
#include "dicom/reader.h"
#include "util/limits.h"

/* --- helpers --------------------------------------------------------------- */

static struct dcm_ds *new_ds(void)
{
    struct dcm_ds *ds = dcm_ds_new();
    assert_non_null(ds);
    return ds;
}

static void put_raw(struct dcm_ds *ds, uint32_t tag, uint16_t vr, const void *v, uint32_t n)
{
    assert_int_equal(dcm_ds_put(ds, tag, vr, v, n, NULL), 0);
}

static void put_str(struct dcm_ds *ds, uint32_t tag, uint16_t vr, const char *s)
{
    assert_int_equal(dcm_ds_put_str(ds, tag, vr, s), 0);
}

/* The compact JSON of ds, as a malloc'd string. */
static char *to_json(const struct dcm_ds *ds, const struct dcm_json_opts *o)
{
    struct dynbuf out;
    struct pacs_err err = { 0 };
    dynbuf_init(&out, 0);
    int rc = dcm_json_write(ds, o, &out, &err);
    if (rc)
        fail_msg("dcm_json_write: %s", err.msg);
    char *s = dynbuf_take(&out, NULL);
    assert_non_null(s);
    return s;
}

static void expect_json(const struct dcm_ds *ds, const char *want)
{
    char *got = to_json(ds, NULL);
    if (strcmp(got, want) != 0)
        fail_msg("JSON differs\n got: %s\nwant: %s", got, want);
    free(got);
}

static struct dcm_ds *from_json(const char *text)
{
    struct dcm_ds *ds = NULL;
    struct pacs_err err = { 0 };
    int rc = dcm_json_read(text, strlen(text), &ds, &err);
    if (rc)
        fail_msg("dcm_json_read: %s\n  input: %s", err.msg, text);
    assert_non_null(ds);
    return ds;
}

/* The raw value of `tag` equals want[0..n). */
static void expect_raw(const struct dcm_ds *ds, uint32_t tag, uint16_t vr, const void *want,
                         size_t n)
{
    const struct dcm_elem *e = dcm_ds_find(ds, tag);
    if (!e)
        fail_msg("tag %08X missing", (unsigned)tag);
    assert_int_equal(e->vr, vr);
    if (e->len != n || (n && memcmp(e->val, want, n) != 0))
        fail_msg("tag %08X: value of %u bytes differs from the %zu expected (\"%.*s\")",
                 (unsigned)tag, e->len, n, (int)n, (const char *)want);
}

static void expect_read_error(const char *text, int code, const char *msg_part)
{
    struct dcm_ds *ds = (struct dcm_ds *)1;
    struct pacs_err err = { 0 };
    int rc = dcm_json_read(text, strlen(text), &ds, &err);
    if (rc == 0)
        fail_msg("accepted: %s", text);
    assert_null(ds);
    assert_int_equal(err.code, rc);
    if (code)
        assert_int_equal(rc, code);
    if (!strstr(err.msg, msg_part))
        fail_msg("message \"%s\" lacks \"%s\" (input %s)", err.msg, msg_part, text);
}

/* Write -> read -> write gives the same text (compact and pretty). */
static void expect_round_trip(const struct dcm_ds *ds)
{
    for (int pretty = 0; pretty < 2; pretty++) {
        struct dcm_json_opts o = { .pretty = pretty };
        char *a = to_json(ds, &o);
        struct dcm_ds *back = from_json(a);
        char *b = to_json(back, &o);
        if (strcmp(a, b) != 0)
            fail_msg("round trip differs\nfirst:  %s\nsecond: %s", a, b);
        dcm_ds_free(back);
        free(a);
        free(b);
    }
}

/* --- writer: one test per family of VRs ----------------------------------- */

static void test_write_string_vrs(void **state)
{
    (void)state;
    struct dcm_ds *ds = new_ds();
    put_str(ds, DCM_TAG(0x0008, 0x0005), DCM_VR_CS, "ISO_IR 192");
    put_str(ds, DCM_TAG(0x0008, 0x0008), DCM_VR_CS, "ORIGINAL\\PRIMARY ");
    put_str(ds, DCM_TAG(0x0008, 0x0018), DCM_VR_UI, "1.2.3");
    put_str(ds, DCM_TAG(0x0008, 0x0020), DCM_VR_DA, "20240101");
    put_str(ds, DCM_TAG(0x0008, 0x0030), DCM_VR_TM, "101010.5");
    put_str(ds, DCM_TAG(0x0008, 0x002a), DCM_VR_DT, "20240101101010+0100");
    put_str(ds, DCM_TAG(0x0008, 0x0054), DCM_VR_AE, " STORESCP ");
    put_str(ds, DCM_TAG(0x0008, 0x0080), DCM_VR_LO, "  Hôpital \"Nord\"");
    put_str(ds, DCM_TAG(0x0008, 0x0050), DCM_VR_SH, "A1\\B2");
    put_str(ds, DCM_TAG(0x0008, 0x0081), DCM_VR_ST, "line1\r\nline2\ttab\\x  ");
    put_str(ds, DCM_TAG(0x0008, 0x0120), DCM_VR_UR, "http://x/y?a=b ");
    put_str(ds, DCM_TAG(0x0010, 0x1010), DCM_VR_AS, "042Y");
    put_str(ds, DCM_TAG(0x0010, 0x4000), DCM_VR_LT, "  keeps leading spaces");
    put_str(ds, DCM_TAG(0x0018, 0x9361), DCM_VR_UC, "u1\\u2");
    put_str(ds, DCM_TAG(0x0040, 0xa160), DCM_VR_UT, "\x01\x1f control");
    expect_json(ds,
        "{\"00080005\":{\"vr\":\"CS\",\"Value\":[\"ISO_IR 192\"]},"
        "\"00080008\":{\"vr\":\"CS\",\"Value\":[\"ORIGINAL\",\"PRIMARY\"]},"
        "\"00080018\":{\"vr\":\"UI\",\"Value\":[\"1.2.3\"]},"
        "\"00080020\":{\"vr\":\"DA\",\"Value\":[\"20240101\"]},"
        "\"0008002A\":{\"vr\":\"DT\",\"Value\":[\"20240101101010+0100\"]},"
        "\"00080030\":{\"vr\":\"TM\",\"Value\":[\"101010.5\"]},"
        "\"00080050\":{\"vr\":\"SH\",\"Value\":[\"A1\",\"B2\"]},"
        "\"00080054\":{\"vr\":\"AE\",\"Value\":[\"STORESCP\"]},"
        "\"00080080\":{\"vr\":\"LO\",\"Value\":[\"Hôpital \\\"Nord\\\"\"]},"
        "\"00080081\":{\"vr\":\"ST\",\"Value\":[\"line1\\r\\nline2\\ttab\\\\x\"]},"
        "\"00080120\":{\"vr\":\"UR\",\"Value\":[\"http://x/y?a=b\"]},"
        "\"00101010\":{\"vr\":\"AS\",\"Value\":[\"042Y\"]},"
        "\"00104000\":{\"vr\":\"LT\",\"Value\":[\"  keeps leading spaces\"]},"
        "\"00189361\":{\"vr\":\"UC\",\"Value\":[\"u1\",\"u2\"]},"
        "\"0040A160\":{\"vr\":\"UT\",\"Value\":[\"\\u0001\\u001f control\"]}}");
    expect_round_trip(ds);
    dcm_ds_free(ds);
}

static void test_write_ds_is(void **state)
{
    (void)state;
    struct dcm_ds *ds = new_ds();
    put_str(ds, DCM_TAG(0x0018, 0x0050), DCM_VR_DS, "+1.5\\.5\\1.\\007.50\\-0\\1E3\\ 2 ");
    /* Not numbers: kept as JSON strings (F.2.3 allows it). */
    put_str(ds, DCM_TAG(0x0018, 0x0088), DCM_VR_DS, "1e400\\abc\\1,5");
    /* More digits than a double holds: all kept, as a real. */
    put_str(ds, DCM_TAG(0x0018, 0x1310), DCM_VR_DS, "12345678901234567890");
    put_str(ds, DCM_TAG(0x0020, 0x0013), DCM_VR_IS, "007\\+5\\-3\\1.0\\1.5\\x");
    put_str(ds, DCM_TAG(0x0020, 0x0011), DCM_VR_IS, "99999999999999999");
    expect_json(ds,
        "{\"00180050\":{\"vr\":\"DS\",\"Value\":[1.5,0.5,1,7.5,-0.0,1000,2]},"
        "\"00180088\":{\"vr\":\"DS\",\"Value\":[\"1e400\",\"abc\",\"1,5\"]},"
        "\"00181310\":{\"vr\":\"DS\",\"Value\":[12345678901234567890.0]},"
        "\"00200011\":{\"vr\":\"IS\",\"Value\":[\"99999999999999999\"]},"
        "\"00200013\":{\"vr\":\"IS\",\"Value\":[7,5,-3,1,\"1.5\",\"x\"]}}");
    dcm_ds_free(ds);

    /* Precision: the shortest text of the same double, else all digits. */
    ds = new_ds();
    put_str(ds, DCM_TAG(0x0028, 0x0030), DCM_VR_DS, "0.661468\\-158.135803\\1.23456789012e-5");
    expect_json(ds, "{\"00280030\":{\"vr\":\"DS\",\"Value\":[0.661468,-158.135803,"
                    "1.23456789012e-05]}}");
    expect_round_trip(ds);
    dcm_ds_free(ds);
}

static void test_write_binary_numbers(void **state)
{
    (void)state;
    struct dcm_ds *ds = new_ds();
    const uint8_t us[] = { 0x00, 0x02, 0xff, 0xff };
    const uint8_t ss[] = { 0xff, 0xff, 0x00, 0x80 };
    const uint8_t ul[] = { 0xff, 0xff, 0xff, 0xff };
    const uint8_t sl[] = { 0x00, 0x00, 0x00, 0x80 };
    float fl[2] = { 0.3f, -2.5f };
    double fd[4] = { 0.1, 1e300, 0, 0 };
    fd[2] = NAN;
    fd[3] = -INFINITY;
    int64_t sv[3] = { -9007199254740991LL, -9007199254740992LL, INT64_MAX };
    uint64_t uv[2] = { 9007199254740991ULL, UINT64_MAX };
    const uint8_t at[] = { 0x10, 0x00, 0x10, 0x00, 0xe0, 0x7f, 0x10, 0x00 };
    put_raw(ds, DCM_TAG(0x0028, 0x0010), DCM_VR_US, us, sizeof us);
    put_raw(ds, DCM_TAG(0x0028, 0x0106), DCM_VR_SS, ss, sizeof ss);
    put_raw(ds, DCM_TAG(0x0028, 0x0108), DCM_VR_UL, ul, sizeof ul);
    put_raw(ds, DCM_TAG(0x0018, 0x6020), DCM_VR_SL, sl, sizeof sl);
    put_raw(ds, DCM_TAG(0x0018, 0x9089), DCM_VR_FL, fl, sizeof fl);
    put_raw(ds, DCM_TAG(0x0018, 0x9087), DCM_VR_FD, fd, sizeof fd);
    put_raw(ds, DCM_TAG(0x0011, 0x1001), DCM_VR_SV, sv, sizeof sv);
    put_raw(ds, DCM_TAG(0x0011, 0x1002), DCM_VR_UV, uv, sizeof uv);
    put_raw(ds, DCM_TAG(0x0020, 0x9165), DCM_VR_AT, at, sizeof at);
    /* A trailing partial value is ignored. */
    put_raw(ds, DCM_TAG(0x0028, 0x0011), DCM_VR_US, us, 3);
    expect_json(ds,
        "{\"00111001\":{\"vr\":\"SV\",\"Value\":[-9007199254740991,\"-9007199254740992\","
        "\"9223372036854775807\"]},"
        "\"00111002\":{\"vr\":\"UV\",\"Value\":[9007199254740991,\"18446744073709551615\"]},"
        "\"00186020\":{\"vr\":\"SL\",\"Value\":[-2147483648]},"
        "\"00189087\":{\"vr\":\"FD\",\"Value\":[0.1,1e+300,\"NaN\",\"-Infinity\"]},"
        "\"00189089\":{\"vr\":\"FL\",\"Value\":[0.30000001192092896,-2.5]},"
        "\"00209165\":{\"vr\":\"AT\",\"Value\":[\"00100010\",\"7FE00010\"]},"
        "\"00280010\":{\"vr\":\"US\",\"Value\":[512,65535]},"
        "\"00280011\":{\"vr\":\"US\",\"Value\":[512]},"
        "\"00280106\":{\"vr\":\"SS\",\"Value\":[-1,-32768]},"
        "\"00280108\":{\"vr\":\"UL\",\"Value\":[4294967295]}}");
    dcm_ds_remove(ds, DCM_TAG(0x0028, 0x0011));
    expect_round_trip(ds);
    dcm_ds_free(ds);
}

static void test_write_binary_vrs(void **state)
{
    (void)state;
    struct dcm_ds *ds = new_ds();
    put_raw(ds, DCM_TAG(0x0009, 0x1001), DCM_VR_OB, "M", 1);
    put_raw(ds, DCM_TAG(0x0009, 0x1002), DCM_VR_OB, "Ma", 2);
    put_raw(ds, DCM_TAG(0x0009, 0x1003), DCM_VR_UN, "Man", 3);
    put_raw(ds, DCM_TAG(0x0009, 0x1004), DCM_VR_OW, "\x01\x02\x03\x04", 4);
    put_raw(ds, DCM_TAG(0x0009, 0x1005), DCM_VR_OF, "\0\0\x80\x3f", 4);
    put_raw(ds, DCM_TAG(0x0009, 0x1006), DCM_VR_OL, "\xff\xff\xff\xff", 4);
    put_raw(ds, DCM_TAG(0x0009, 0x1007), DCM_VR_OD, "\0\0\0\0\0\0\xf0\x3f", 8);
    put_raw(ds, DCM_TAG(0x0009, 0x1008), DCM_VR_OV, "\x01\0\0\0\0\0\0\0", 8);
    put_raw(ds, DCM_TAG(0x0009, 0x1009), DCM_VR_OB, NULL, 0);
    /* A VR pacsd does not know is written as UN. */
    put_raw(ds, DCM_TAG(0x0009, 0x100a), DCM_VR('Z', 'Z'), "ab", 2);
    /* Private creator and group length (left out, F.2.2). */
    put_str(ds, DCM_TAG(0x0009, 0x0010), DCM_VR_LO, "ACME 1.0");
    put_raw(ds, DCM_TAG(0x0009, 0x0000), DCM_VR_UL, "\x10\0\0\0", 4);
    expect_json(ds,
        "{\"00090010\":{\"vr\":\"LO\",\"Value\":[\"ACME 1.0\"]},"
        "\"00091001\":{\"vr\":\"OB\",\"InlineBinary\":\"TQ==\"},"
        "\"00091002\":{\"vr\":\"OB\",\"InlineBinary\":\"TWE=\"},"
        "\"00091003\":{\"vr\":\"UN\",\"InlineBinary\":\"TWFu\"},"
        "\"00091004\":{\"vr\":\"OW\",\"InlineBinary\":\"AQIDBA==\"},"
        "\"00091005\":{\"vr\":\"OF\",\"InlineBinary\":\"AACAPw==\"},"
        "\"00091006\":{\"vr\":\"OL\",\"InlineBinary\":\"/////w==\"},"
        "\"00091007\":{\"vr\":\"OD\",\"InlineBinary\":\"AAAAAAAA8D8=\"},"
        "\"00091008\":{\"vr\":\"OV\",\"InlineBinary\":\"AQAAAAAAAAA=\"},"
        "\"00091009\":{\"vr\":\"OB\"},"
        "\"0009100A\":{\"vr\":\"UN\",\"InlineBinary\":\"YWI=\"}}");
    dcm_ds_free(ds);
}

static void test_pn_groups(void **state)
{
    (void)state;
    struct dcm_ds *ds = new_ds();
    put_str(ds, DCM_TAG(0x0008, 0x0005), DCM_VR_CS, "ISO_IR 192");
    put_str(ds, DCM_TAG(0x0010, 0x0010), DCM_VR_PN,
            "Yamada^Tarou=\xe5\xb1\xb1\xe7\x94\xb0^\xe5\xa4\xaa\xe9\x83\x8e="
            "\xe3\x82\x84\xe3\x81\xbe\xe3\x81\xa0^\xe3\x81\x9f\xe3\x82\x8d\xe3\x81\x86");
    /* Empty groups are left out, an empty value is null. */
    put_str(ds, DCM_TAG(0x0008, 0x0090), DCM_VR_PN, "=Ideo\\Doe^John^^Dr\\\\A==P\\==");
    put_str(ds, DCM_TAG(0x0008, 0x1050), DCM_VR_PN, "");
    expect_json(ds,
        "{\"00080005\":{\"vr\":\"CS\",\"Value\":[\"ISO_IR 192\"]},"
        "\"00080090\":{\"vr\":\"PN\",\"Value\":[{\"Ideographic\":\"Ideo\"},"
        "{\"Alphabetic\":\"Doe^John^^Dr\"},null,{\"Alphabetic\":\"A\",\"Phonetic\":\"P\"},null]},"
        "\"00081050\":{\"vr\":\"PN\"},"
        "\"00100010\":{\"vr\":\"PN\",\"Value\":[{\"Alphabetic\":\"Yamada^Tarou\","
        "\"Ideographic\":\"\xe5\xb1\xb1\xe7\x94\xb0^\xe5\xa4\xaa\xe9\x83\x8e\","
        "\"Phonetic\":\"\xe3\x82\x84\xe3\x81\xbe\xe3\x81\xa0^\xe3\x81\x9f\xe3\x82\x8d\xe3\x81\x86\"}]}}");
    expect_round_trip(ds);
    dcm_ds_free(ds);

    /* Reading: groups joined with '=', trailing empty ones dropped; a plain
     * string is accepted too. */
    ds = from_json("{\"00100010\":{\"vr\":\"PN\",\"Value\":[{\"Phonetic\":\"P\",\"Alphabetic\":\"A\"},"
                   "{\"Alphabetic\":\"B\",\"Ideographic\":\"\"},null,\"Plain^Name\",{}]}}");
    expect_raw(ds, DCM_TAG(0x0010, 0x0010), DCM_VR_PN, "A==P\\B\\\\Plain^Name\\ ", 20);
    dcm_ds_free(ds);
}

static void test_charset_decode(void **state)
{
    (void)state;
    struct dcm_ds *ds = new_ds();
    put_str(ds, DCM_TAG(0x0008, 0x0005), DCM_VR_CS, "ISO_IR 100");
    put_str(ds, DCM_TAG(0x0010, 0x0010), DCM_VR_PN, "M\xfcller^J\xfcrgen");
    put_str(ds, DCM_TAG(0x0010, 0x4000), DCM_VR_LT, "Stra\xdf" "e \xa7 5");
    /* Default-repertoire VRs read bytes >= 0x80 as ISO 8859-1 (pydicom). */
    put_str(ds, DCM_TAG(0x0008, 0x0060), DCM_VR_CS, "\xe9t\xe9");
    /* An item inherits the root's character set. */
    struct dcm_elem *seq;
    struct dcm_ds *item;
    assert_int_equal(dcm_ds_put_seq(ds, DCM_TAG(0x0040, 0xa730), &seq), 0);
    assert_int_equal(dcm_seq_add_item(ds, seq, &item), 0);
    put_str(item, DCM_TAG(0x0040, 0xa075), DCM_VR_PN, "G\xf6" "del");
    expect_json(ds,
        "{\"00080005\":{\"vr\":\"CS\",\"Value\":[\"ISO_IR 100\"]},"
        "\"00080060\":{\"vr\":\"CS\",\"Value\":[\"\xc3\xa9t\xc3\xa9\"]},"
        "\"00100010\":{\"vr\":\"PN\",\"Value\":[{\"Alphabetic\":\"M\xc3\xbcller^J\xc3\xbcrgen\"}]},"
        "\"00104000\":{\"vr\":\"LT\",\"Value\":[\"Stra\xc3\x9f" "e \xc2\xa7 5\"]},"
        "\"0040A730\":{\"vr\":\"SQ\",\"Value\":[{\"0040A075\":{\"vr\":\"PN\","
        "\"Value\":[{\"Alphabetic\":\"G\xc3\xb6" "del\"}]}}]}}");

    /* Read back: UTF-8 text, (0008,0005) now ISO_IR 192; CS back to Latin-1. */
    char *text = to_json(ds, NULL);
    struct dcm_ds *back = from_json(text);
    expect_raw(back, DCM_TAG(0x0008, 0x0005), DCM_VR_CS, "ISO_IR 192", 10);
    expect_raw(back, DCM_TAG(0x0010, 0x0010), DCM_VR_PN, "M\xc3\xbcller^J\xc3\xbcrgen ", 16);
    expect_raw(back, DCM_TAG(0x0008, 0x0060), DCM_VR_CS, "\xe9t\xe9 ", 4);
    char *again = to_json(back, NULL);
    assert_non_null(strstr(again, "\"M\xc3\xbcller^J\xc3\xbcrgen\""));
    assert_non_null(strstr(again, "\"G\xc3\xb6" "del\""));
    free(again);
    free(text);
    dcm_ds_free(back);
    dcm_ds_free(ds);

    /* All-ASCII text keeps the declared character set. */
    ds = from_json("{\"00080005\":{\"vr\":\"CS\",\"Value\":[\"ISO_IR 100\"]},"
                   "\"00100010\":{\"vr\":\"PN\",\"Value\":[{\"Alphabetic\":\"Doe\"}]}}");
    expect_raw(ds, DCM_TAG(0x0008, 0x0005), DCM_VR_CS, "ISO_IR 100", 10);
    dcm_ds_free(ds);
    /* Non-ASCII without a declared set adds ISO_IR 192; items that declare
     * their own set get it too. */
    ds = from_json("{\"0040A730\":{\"vr\":\"SQ\",\"Value\":[{\"00080005\":{\"vr\":\"CS\","
                   "\"Value\":[\"ISO_IR 144\"]},\"0040A160\":{\"vr\":\"UT\",\"Value\":[\"\xd0\x96\"]}}]}}");
    expect_raw(ds, DCM_TAG(0x0008, 0x0005), DCM_VR_CS, "ISO_IR 192", 10);
    const struct dcm_elem *sq = dcm_ds_find(ds, DCM_TAG(0x0040, 0xa730));
    assert_non_null(sq);
    assert_int_equal(sq->u.items.n, 1);
    expect_raw(sq->u.items.v[0], DCM_TAG(0x0008, 0x0005), DCM_VR_CS, "ISO_IR 192", 10);
    dcm_ds_free(ds);
    /* Invalid UTF-8 in a UTF-8 data set becomes U+FFFD: the output is JSON. */
    ds = new_ds();
    put_str(ds, DCM_TAG(0x0008, 0x0005), DCM_VR_CS, "ISO_IR 192");
    put_str(ds, DCM_TAG(0x0010, 0x0010), DCM_VR_PN, "A\xff" "B");
    expect_json(ds, "{\"00080005\":{\"vr\":\"CS\",\"Value\":[\"ISO_IR 192\"]},"
                    "\"00100010\":{\"vr\":\"PN\",\"Value\":[{\"Alphabetic\":\"A\xef\xbf\xbd" "B\"}]}}");
    dcm_ds_free(ds);
}

static void test_sequences_nested(void **state)
{
    (void)state;
    struct dcm_ds *ds = new_ds();
    struct dcm_elem *s1, *s2, *empty;
    struct dcm_ds *i1, *i2, *i3, *i4;
    assert_int_equal(dcm_ds_put_seq(ds, DCM_TAG(0x0008, 0x1140), &s1), 0);
    assert_int_equal(dcm_seq_add_item(ds, s1, &i1), 0);
    put_str(i1, DCM_TAG(0x0008, 0x1150), DCM_VR_UI, "1.2.840.10008.5.1.4.1.1.2");
    assert_int_equal(dcm_ds_put_seq(i1, DCM_TAG(0x0040, 0xa730), &s2), 0);
    assert_int_equal(dcm_seq_add_item(i1, s2, &i2), 0);
    put_str(i2, DCM_TAG(0x0040, 0xa040), DCM_VR_CS, "TEXT");
    assert_int_equal(dcm_seq_add_item(i1, s2, &i3), 0); /* an empty item */
    assert_int_equal(dcm_seq_add_item(ds, s1, &i4), 0);
    put_str(i4, DCM_TAG(0x0008, 0x1155), DCM_VR_UI, "1.2.3.4");
    assert_int_equal(dcm_ds_put_seq(ds, DCM_TAG(0x0008, 0x1111), &empty), 0);
    expect_json(ds,
        "{\"00081111\":{\"vr\":\"SQ\"},"
        "\"00081140\":{\"vr\":\"SQ\",\"Value\":["
        "{\"00081150\":{\"vr\":\"UI\",\"Value\":[\"1.2.840.10008.5.1.4.1.1.2\"]},"
        "\"0040A730\":{\"vr\":\"SQ\",\"Value\":[{\"0040A040\":{\"vr\":\"CS\",\"Value\":[\"TEXT\"]}},{}]}},"
        "{\"00081155\":{\"vr\":\"UI\",\"Value\":[\"1.2.3.4\"]}}]}}");
    expect_round_trip(ds);

    /* Pretty output has the layout of Python's json.dumps(indent=2). */
    struct dcm_json_opts o = { .pretty = true };
    char *p = to_json(ds, &o);
    const char *want =
        "{\n"
        "  \"00081111\": {\n"
        "    \"vr\": \"SQ\"\n"
        "  },\n"
        "  \"00081140\": {\n"
        "    \"vr\": \"SQ\",\n"
        "    \"Value\": [\n"
        "      {\n"
        "        \"00081150\": {\n"
        "          \"vr\": \"UI\",\n"
        "          \"Value\": [\n"
        "            \"1.2.840.10008.5.1.4.1.1.2\"\n"
        "          ]\n"
        "        },\n"
        "        \"0040A730\": {\n"
        "          \"vr\": \"SQ\",\n"
        "          \"Value\": [\n"
        "            {\n"
        "              \"0040A040\": {\n"
        "                \"vr\": \"CS\",\n"
        "                \"Value\": [\n"
        "                  \"TEXT\"\n"
        "                ]\n"
        "              }\n"
        "            },\n"
        "            {}\n"
        "          ]\n"
        "        }\n"
        "      },\n"
        "      {\n"
        "        \"00081155\": {\n"
        "          \"vr\": \"UI\",\n"
        "          \"Value\": [\n"
        "            \"1.2.3.4\"\n"
        "          ]\n"
        "        }\n"
        "      }\n"
        "    ]\n"
        "  }\n"
        "}";
    if (strcmp(p, want) != 0)
        fail_msg("pretty output differs:\n%s", p);
    free(p);
    dcm_ds_free(ds);

    /* A UN element holding items (UN of undefined length) is written SQ. */
    ds = new_ds();
    assert_int_equal(dcm_ds_put_seq(ds, DCM_TAG(0x0009, 0x1010), &s1), 0);
    s1->vr = DCM_VR_UN;
    s1->flags |= DCM_EF_UN_SEQ;
    assert_int_equal(dcm_seq_add_item(ds, s1, &i1), 0);
    put_str(i1, DCM_TAG(0x0010, 0x0020), DCM_VR_LO, "ID");
    expect_json(ds, "{\"00091010\":{\"vr\":\"SQ\",\"Value\":[{\"00100020\":{\"vr\":\"LO\","
                    "\"Value\":[\"ID\"]}}]}}");
    dcm_ds_free(ds);
}

static void test_empty_values(void **state)
{
    (void)state;
    struct dcm_ds *ds = new_ds();
    put_str(ds, DCM_TAG(0x0008, 0x0020), DCM_VR_DA, "");
    put_str(ds, DCM_TAG(0x0008, 0x0050), DCM_VR_SH, "    ");
    put_str(ds, DCM_TAG(0x0008, 0x0060), DCM_VR_CS, "\\");
    put_str(ds, DCM_TAG(0x0018, 0x0050), DCM_VR_DS, "1\\\\2");
    put_str(ds, DCM_TAG(0x0020, 0x0013), DCM_VR_IS, " \\3");
    put_str(ds, DCM_TAG(0x0008, 0x0018), DCM_VR_UI, "1.2\\\\3.4");
    put_raw(ds, DCM_TAG(0x0028, 0x0010), DCM_VR_US, NULL, 0);
    put_raw(ds, DCM_TAG(0x0020, 0x9165), DCM_VR_AT, NULL, 0);
    put_str(ds, DCM_TAG(0x0010, 0x4000), DCM_VR_LT, " ");
    expect_json(ds,
        "{\"00080018\":{\"vr\":\"UI\",\"Value\":[\"1.2\",null,\"3.4\"]},"
        "\"00080020\":{\"vr\":\"DA\"},"
        "\"00080050\":{\"vr\":\"SH\"},"
        "\"00080060\":{\"vr\":\"CS\",\"Value\":[null,null]},"
        "\"00104000\":{\"vr\":\"LT\"},"
        "\"00180050\":{\"vr\":\"DS\",\"Value\":[1,null,2]},"
        "\"00200013\":{\"vr\":\"IS\",\"Value\":[null,3]},"
        "\"00209165\":{\"vr\":\"AT\"},"
        "\"00280010\":{\"vr\":\"US\"}}");
    expect_round_trip(ds);
    dcm_ds_free(ds);

    /* Reading: no Value, empty Value, [""] and [null] are all empty. */
    ds = from_json("{\"00100010\":{\"vr\":\"PN\"},\"00100020\":{\"vr\":\"LO\",\"Value\":[]},"
                   "\"00100030\":{\"vr\":\"DA\",\"Value\":[\"\"]},"
                   "\"00100040\":{\"vr\":\"CS\",\"Value\":[null]},"
                   "\"00081111\":{\"vr\":\"SQ\",\"Value\":[]},"
                   "\"00280010\":{\"vr\":\"US\",\"Value\":[]},"
                   "\"00100050\":{\"vr\":\"LO\",\"Value\":[\"a\",null,\"b\"]}}");
    expect_raw(ds, DCM_TAG(0x0010, 0x0010), DCM_VR_PN, "", 0);
    expect_raw(ds, DCM_TAG(0x0010, 0x0020), DCM_VR_LO, "", 0);
    expect_raw(ds, DCM_TAG(0x0010, 0x0030), DCM_VR_DA, "", 0);
    expect_raw(ds, DCM_TAG(0x0010, 0x0040), DCM_VR_CS, "", 0);
    expect_raw(ds, DCM_TAG(0x0028, 0x0010), DCM_VR_US, "", 0);
    expect_raw(ds, DCM_TAG(0x0010, 0x0050), DCM_VR_LO, "a\\\\b", 4);
    const struct dcm_elem *sq = dcm_ds_find(ds, DCM_TAG(0x0008, 0x1111));
    assert_non_null(sq);
    assert_true(sq->flags & DCM_EF_SEQ);
    assert_int_equal(sq->u.items.n, 0);
    dcm_ds_free(ds);
}

/* --- binary values, bulk data ------------------------------------------------ */

static void test_inline_binary(void **state)
{
    (void)state;
    /* Every length mod 3, and every byte value. */
    uint8_t bytes[259];
    for (size_t i = 0; i < sizeof bytes; i++)
        bytes[i] = (uint8_t)(i * 7 + 3);
    for (uint32_t n = 0; n < 9; n++) {
        struct dcm_ds *ds = new_ds();
        put_raw(ds, DCM_TAG(0x0009, 0x1001), DCM_VR_OB, bytes, n ? 250 + n : 0);
        char *text = to_json(ds, NULL);
        struct dcm_ds *back = from_json(text);
        expect_raw(back, DCM_TAG(0x0009, 0x1001), DCM_VR_OB, bytes, n ? 250 + n : 0);
        free(text);
        dcm_ds_free(back);
        dcm_ds_free(ds);
    }
    /* An array of one string is accepted (the F.4 example, pydicom). */
    struct dcm_ds *ds = from_json("{\"00091001\":{\"vr\":\"OW\",\"InlineBinary\":[\"AQIDBA==\"]}}");
    expect_raw(ds, DCM_TAG(0x0009, 0x1001), DCM_VR_OW, "\x01\x02\x03\x04", 4);
    dcm_ds_free(ds);
    /* A length the VR does not allow (3 bytes of OW, 2 of OD) is kept
     * verbatim, as the Part 10 reader keeps it, so that what pacsd reads
     * from a file and serves as JSON reads back. */
    ds = from_json("{\"00091001\":{\"vr\":\"OW\",\"InlineBinary\":\"AAAA\"},"
                   "\"00091002\":{\"vr\":\"OD\",\"InlineBinary\":\"AQI=\"}}");
    expect_raw(ds, DCM_TAG(0x0009, 0x1001), DCM_VR_OW, "\0\0\0", 3);
    expect_raw(ds, DCM_TAG(0x0009, 0x1002), DCM_VR_OD, "\x01\x02", 2);
    dcm_ds_free(ds);
}

struct bulk_ctx {
    unsigned calls;
};

static bool bulk_cb(void *ctx, const struct dcm_ds *ds, const struct dcm_elem *e,
                    struct dynbuf *uri)
{
    struct bulk_ctx *c = ctx;
    (void)ds;
    c->calls++;
    if (e->tag == DCM_TAG_PIXEL_DATA || e->len > 8) {
        char buf[64];
        int n = snprintf(buf, sizeof buf, "https://pacs/bulk/%08X", (unsigned)e->tag);
        assert_true(n > 0 && (size_t)n < sizeof buf);
        assert_int_equal(dynbuf_append(uri, buf, (size_t)n), 0);
        return true;
    }
    /* Appending and then declining: the text must be discarded. */
    assert_int_equal(dynbuf_puts(uri, "junk"), 0);
    return false;
}

static void test_bulk_uri_callback(void **state)
{
    (void)state;
    struct dcm_ds *ds = new_ds();
    put_raw(ds, DCM_TAG(0x0009, 0x1001), DCM_VR_OB, "small", 5);
    put_raw(ds, DCM_TAG(0x0009, 0x1002), DCM_VR_UN, "0123456789", 10);
    put_raw(ds, DCM_TAG(0x0009, 0x1003), DCM_VR_OB, NULL, 0);
    put_str(ds, DCM_TAG(0x0010, 0x0010), DCM_VR_PN, "Not^Binary");
    struct dcm_elem *px;
    assert_int_equal(dcm_ds_put_encaps(ds, DCM_TAG_PIXEL_DATA, DCM_VR_OB, &px), 0);
    assert_int_equal(dcm_encaps_add_frag(ds, px, "\xff\xd8\xff\xd9", 4), 0);
    struct bulk_ctx c = { 0 };
    struct dcm_json_opts o = { .bulk_uri = bulk_cb, .ctx = &c };
    char *text = to_json(ds, &o);
    assert_string_equal(text,
        "{\"00091001\":{\"vr\":\"OB\",\"InlineBinary\":\"c21hbGw=\"},"
        "\"00091002\":{\"vr\":\"UN\",\"BulkDataURI\":\"https://pacs/bulk/00091002\"},"
        "\"00091003\":{\"vr\":\"OB\"},"
        "\"00100010\":{\"vr\":\"PN\",\"Value\":[{\"Alphabetic\":\"Not^Binary\"}]},"
        "\"7FE00010\":{\"vr\":\"OB\",\"BulkDataURI\":\"https://pacs/bulk/7FE00010\"}}");
    /* Called for non-empty binary values only. */
    assert_int_equal(c.calls, 3);

    /* BulkDataURI read back: the element with an empty value. */
    struct dcm_ds *back = from_json(text);
    expect_raw(back, DCM_TAG(0x0009, 0x1002), DCM_VR_UN, "", 0);
    expect_raw(back, DCM_TAG_PIXEL_DATA, DCM_VR_OB, "", 0);
    dcm_ds_free(back);
    free(text);
    dcm_ds_free(ds);
}

static void test_encapsulated_pixel_data(void **state)
{
    (void)state;
    struct dcm_ds *ds = new_ds();
    struct dcm_elem *px;
    assert_int_equal(dcm_ds_put_encaps(ds, DCM_TAG_PIXEL_DATA, DCM_VR_OB, &px), 0);
    assert_int_equal(dcm_encaps_add_frag(ds, px, "\xff\xd8\xff\xd9", 4), 0);
    assert_int_equal(dcm_encaps_add_frag(ds, px, "ab", 2), 0);
    /* The stream pydicom holds: BOT item, fragment items, no delimiter.
     * fe ff 00 e0 00 00 00 00 | fe ff 00 e0 04 00 00 00 ff d8 ff d9 |
     * fe ff 00 e0 02 00 00 00 61 62 */
    expect_json(ds, "{\"7FE00010\":{\"vr\":\"OB\",\"InlineBinary\":"
                    "\"/v8A4AAAAAD+/wDgBAAAAP/Y/9n+/wDgAgAAAGFi\"}}");
    char *text = to_json(ds, NULL);
    struct dcm_ds *back = from_json(text);
    const struct dcm_elem *e = dcm_ds_find(back, DCM_TAG_PIXEL_DATA);
    assert_non_null(e);
    assert_true(e->flags & DCM_EF_ENCAPS);
    assert_int_equal(e->u.frags.n, 3);
    assert_int_equal(e->u.frags.v[0].len, 0);
    assert_int_equal(e->u.frags.v[1].len, 4);
    assert_memory_equal(e->u.frags.v[1].data, "\xff\xd8\xff\xd9", 4);
    assert_int_equal(e->u.frags.v[2].len, 2);
    char *again = to_json(back, NULL);
    assert_string_equal(text, again);
    free(again);
    free(text);
    dcm_ds_free(back);
    dcm_ds_free(ds);

    /* With a Basic Offset Table and a closing delimiter, as a file has it. */
    ds = from_json("{\"7FE00010\":{\"vr\":\"OB\",\"InlineBinary\":"
                   "\"/v8A4AQAAAAAAAAA/v8A4AIAAABhYv7/3eAAAAAA\"}}");
    e = dcm_ds_find(ds, DCM_TAG_PIXEL_DATA);
    assert_true(e->flags & DCM_EF_ENCAPS);
    assert_int_equal(e->u.frags.n, 2);
    assert_int_equal(e->u.frags.v[0].len, 4);
    assert_int_equal(e->u.frags.v[1].len, 2);
    dcm_ds_free(ds);
    /* Native bytes that merely start like an item stay native. */
    ds = from_json("{\"7FE00010\":{\"vr\":\"OB\",\"InlineBinary\":\"/v8A4P////8=\"}}");
    e = dcm_ds_find(ds, DCM_TAG_PIXEL_DATA);
    assert_false(e->flags & DCM_EF_ENCAPS);
    assert_int_equal(e->len, 8);
    dcm_ds_free(ds);
}

/* --- reader ----------------------------------------------------------------- */

static void test_read_values(void **state)
{
    (void)state;
    /* Members in any order; numbers re-encoded; strings for DS/IS kept. */
    struct dcm_ds *ds = from_json(
        "{\"00280030\":{\"vr\":\"DS\",\"Value\":[0.1,1e-7,100,-0.0,0.30000001192092896,"
        "\"007.50\",12345678901234567,null]},"
        "\"00200013\":{\"vr\":\"IS\",\"Value\":[5.0,-12,\"+3\"]},"
        "\"00280010\":{\"vr\":\"US\",\"Value\":[512,2.0]},"
        "\"00280106\":{\"vr\":\"SS\",\"Value\":[-32768]},"
        "\"00280108\":{\"vr\":\"UL\",\"Value\":[4294967295]},"
        "\"00186020\":{\"vr\":\"SL\",\"Value\":[-2147483648]},"
        "\"00111001\":{\"vr\":\"SV\",\"Value\":[-1,\"-9223372036854775808\"]},"
        "\"00111002\":{\"vr\":\"UV\",\"Value\":[1,\"18446744073709551615\"]},"
        "\"00189089\":{\"vr\":\"FL\",\"Value\":[0.5,\"NaN\",\"Infinity\",3]},"
        "\"00189087\":{\"vr\":\"FD\",\"Value\":[0.1,\"-Infinity\"]},"
        "\"00209165\":{\"vr\":\"AT\",\"Value\":[\"7fe00010\",\"00100010\"]},"
        "\"00080018\":{\"vr\":\"UI\",\"Value\":[\"1.2.3\"]}}");
    expect_raw(ds, DCM_TAG(0x0028, 0x0030), DCM_VR_DS,
                 "0.1\\1e-7\\100\\-0.0\\0.30000001192093\\007.50\\1.23456789012e16\\ ", 60);
    expect_raw(ds, DCM_TAG(0x0020, 0x0013), DCM_VR_IS, "5\\-12\\+3", 8);
    expect_raw(ds, DCM_TAG(0x0028, 0x0010), DCM_VR_US, "\x00\x02\x02\x00", 4);
    expect_raw(ds, DCM_TAG(0x0028, 0x0106), DCM_VR_SS, "\x00\x80", 2);
    expect_raw(ds, DCM_TAG(0x0028, 0x0108), DCM_VR_UL, "\xff\xff\xff\xff", 4);
    expect_raw(ds, DCM_TAG(0x0018, 0x6020), DCM_VR_SL, "\x00\x00\x00\x80", 4);
    expect_raw(ds, DCM_TAG(0x0011, 0x1001), DCM_VR_SV,
                 "\xff\xff\xff\xff\xff\xff\xff\xff\0\0\0\0\0\0\0\x80", 16);
    expect_raw(ds, DCM_TAG(0x0011, 0x1002), DCM_VR_UV,
                 "\x01\0\0\0\0\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff", 16);
    expect_raw(ds, DCM_TAG(0x0020, 0x9165), DCM_VR_AT, "\xe0\x7f\x10\x00\x10\x00\x10\x00", 8);
    expect_raw(ds, DCM_TAG(0x0008, 0x0018), DCM_VR_UI, "1.2.3\0", 6);
    const struct dcm_elem *fl = dcm_ds_find(ds, DCM_TAG(0x0018, 0x9089));
    double d;
    assert_int_equal(fl->len, 16);
    assert_int_equal(dcm_elem_double(fl, 0, &d), 0);
    assert_true(d == 0.5);
    assert_int_equal(dcm_elem_double(fl, 1, &d), 0);
    assert_true(isnan(d));
    assert_int_equal(dcm_elem_double(fl, 2, &d), 0);
    assert_true(isinf(d) && d > 0);
    assert_int_equal(dcm_elem_double(fl, 3, &d), 0);
    assert_true(d == 3);
    const struct dcm_elem *fd = dcm_ds_find(ds, DCM_TAG(0x0018, 0x9087));
    assert_int_equal(dcm_elem_double(fd, 0, &d), 0);
    assert_true(d == 0.1);
    assert_int_equal(dcm_elem_double(fd, 1, &d), 0);
    assert_true(isinf(d) && d < 0);
    dcm_ds_free(ds);

    /* Elements come out sorted whatever the input order; group lengths are
     * dropped. */
    ds = from_json("{\"00200010\":{\"vr\":\"SH\",\"Value\":[\"S\"]},"
                   "\"00080000\":{\"vr\":\"UL\",\"Value\":[4]},"
                   "\"00080060\":{\"vr\":\"CS\",\"Value\":[\"CT\"]}}");
    assert_int_equal(ds->n, 2);
    assert_int_equal(ds->el[0].tag, DCM_TAG(0x0008, 0x0060));
    assert_int_equal(ds->el[1].tag, DCM_TAG(0x0020, 0x0010));
    dcm_ds_free(ds);

    /* A one-element array is one data set. */
    ds = from_json("[{\"00100020\":{\"vr\":\"LO\",\"Value\":[\"X\"]}}]");
    expect_raw(ds, DCM_TAG(0x0010, 0x0020), DCM_VR_LO, "X ", 2);
    dcm_ds_free(ds);
    /* "\u0000" survives. */
    ds = from_json("{\"00100020\":{\"vr\":\"LO\",\"Value\":[\"a\\u0000b\"]}}");
    expect_raw(ds, DCM_TAG(0x0010, 0x0020), DCM_VR_LO, "a\0b ", 4);
    dcm_ds_free(ds);
}

static void test_read_errors(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        int code;
        const char *msg;
    } cases[] = {
        { "", PACS_EINVAL, "JSON syntax error" },
        { "{", PACS_EINVAL, "JSON syntax error at line 1" },
        { "{} x", PACS_EINVAL, "JSON syntax error" },
        { "\"str\"", PACS_EINVAL, "JSON syntax error" },
        { "[]", PACS_EINVAL, "expected one data set, got an array of 0" },
        { "[{},{}]", PACS_EINVAL, "expected one data set, got an array of 2" },
        { "[1]", PACS_EINVAL, "[0]: a data set must be a JSON object, not a number" },
        { "{\"0010001\":{\"vr\":\"PN\"}}", PACS_EINVAL,
          "attribute name \"0010001\" is not 8 hexadecimal digits" },
        { "{\"0010001G\":{\"vr\":\"PN\"}}", PACS_EINVAL, "\"0010001G\" is not 8 hexadecimal" },
        { "{\"00100010\":[]}", PACS_EINVAL, "00100010: attribute must be an object, not an array" },
        { "{\"00100010\":{\"Value\":[]}}", PACS_EINVAL, "00100010: \"vr\" is missing" },
        { "{\"00100010\":{\"vr\":5}}", PACS_EINVAL, "00100010: \"vr\" must be a string" },
        { "{\"00100010\":{\"vr\":\"XX\"}}", PACS_EINVAL, "00100010: unknown VR \"XX\"" },
        { "{\"00100010\":{\"vr\":\"pn\"}}", PACS_EINVAL, "unknown VR \"pn\"" },
        { "{\"00100010\":{\"vr\":\"PN\",\"Values\":[]}}", PACS_EINVAL,
          "00100010: unknown member \"Values\"" },
        { "{\"00100010\":{\"vr\":\"PN\",\"Value\":\"x\"}}", PACS_EINVAL,
          "00100010: Value must be an array, not a string" },
        { "{\"00081140\":{\"vr\":\"SQ\",\"Value\":[{\"00081150\":{\"vr\":\"UI\",\"Value\":\"x\"}}]}}",
          PACS_EINVAL, "00081140[0].00081150: Value must be an array" },
        { "{\"00081140\":{\"vr\":\"SQ\",\"Value\":[{},{\"00081150\":{\"vr\":\"UI\",\"Value\":[1]}}]}}",
          PACS_EINVAL, "00081140[1].00081150: Value[0] must be a string or null, not a number" },
        { "{\"00081140\":{\"vr\":\"SQ\",\"Value\":[{},5]}}", PACS_EINVAL,
          "00081140: Value[1] must be an object (a sequence item), not a number" },
        { "{\"00100010\":{\"vr\":\"LO\",\"Value\":[\"a\"],\"InlineBinary\":\"\"}}", PACS_EINVAL,
          "00100010: more than one of Value, InlineBinary and BulkDataURI" },
        { "{\"00280010\":{\"vr\":\"US\",\"Value\":[70000]}}", PACS_EINVAL,
          "00280010: Value[0] = 70000 is out of range for VR US" },
        { "{\"00280010\":{\"vr\":\"US\",\"Value\":[-1]}}", PACS_EINVAL, "out of range for VR US" },
        { "{\"00280106\":{\"vr\":\"SS\",\"Value\":[32768]}}", PACS_EINVAL, "out of range for VR SS" },
        { "{\"00280010\":{\"vr\":\"US\",\"Value\":[1.5]}}", PACS_EINVAL,
          "Value[0] must be an integer, not a fraction or out of range" },
        { "{\"00280010\":{\"vr\":\"US\",\"Value\":[1,\"2\"]}}", PACS_EINVAL,
          "00280010: Value[1] must be an integer, not a string" },
        { "{\"00181310\":{\"vr\":\"US\",\"Value\":[128,null]}}", PACS_EINVAL,
          "00181310: Value[1] is null, but VR US has no empty value" },
        { "{\"00111002\":{\"vr\":\"UV\",\"Value\":[\"18446744073709551616\"]}}", PACS_EINVAL,
          "Value[0] is not a 64-bit unsigned integer" },
        { "{\"00189089\":{\"vr\":\"FL\",\"Value\":[1e39]}}", PACS_EINVAL, "out of range for VR FL" },
        { "{\"00189089\":{\"vr\":\"FL\",\"Value\":[\"nan\"]}}", PACS_EINVAL,
          "Value[0] must be a number, not a string" },
        { "{\"00200013\":{\"vr\":\"IS\",\"Value\":[1.5]}}", PACS_EINVAL,
          "00200013: Value[0] is not an integer (VR IS)" },
        { "{\"00200013\":{\"vr\":\"DS\",\"Value\":[true]}}", PACS_EINVAL,
          "Value[0] must be a number, a string or null, not a boolean" },
        { "{\"00209165\":{\"vr\":\"AT\",\"Value\":[\"0010001\"]}}", PACS_EINVAL,
          "00209165: Value[0] must be a tag as 8 hexadecimal digits" },
        { "{\"00100020\":{\"vr\":\"LO\",\"Value\":[\"a\\\\b\"]}}", PACS_EINVAL,
          "00100020: Value[0] contains a backslash, the value delimiter" },
        { "{\"00104000\":{\"vr\":\"LT\",\"Value\":[\"a\",\"b\"]}}", PACS_EINVAL,
          "00104000: VR LT takes a single value, not 2" },
        { "{\"00080060\":{\"vr\":\"CS\",\"Value\":[\"\xe6\x97\xa5\"]}}", PACS_EINVAL,
          "00080060: Value[0] has a character beyond U+00FF" },
        { "{\"00100010\":{\"vr\":\"PN\",\"Value\":[{\"Alphabetic\":\"A\",\"Kanji\":\"B\"}]}}",
          PACS_EINVAL, "00100010: Value[0] has an unknown member \"Kanji\"" },
        { "{\"00100010\":{\"vr\":\"PN\",\"Value\":[{\"Alphabetic\":5}]}}", PACS_EINVAL,
          "Value[0].Alphabetic must be a string, not a number" },
        { "{\"00100010\":{\"vr\":\"PN\",\"Value\":[{\"Alphabetic\":\"A=B\"}]}}", PACS_EINVAL,
          "Value[0].Alphabetic contains '\\' or '='" },
        { "{\"00100010\":{\"vr\":\"PN\",\"Value\":[[]]}}", PACS_EINVAL,
          "Value[0] must be a Person Name object, not an array" },
        { "{\"7FE00010\":{\"vr\":\"OB\",\"InlineBinary\":\"abc\"}}", PACS_EINVAL,
          "7FE00010: InlineBinary is not base64: length 3" },
        { "{\"7FE00010\":{\"vr\":\"OB\",\"InlineBinary\":\"ab c\"}}", PACS_EINVAL,
          "InlineBinary is not base64: bad character at offset 2" },
        { "{\"7FE00010\":{\"vr\":\"OB\",\"InlineBinary\":\"a===\"}}", PACS_EINVAL,
          "InlineBinary is not base64: bad character at offset 1" },
        { "{\"7FE00010\":{\"vr\":\"OB\",\"InlineBinary\":\"ab=c\"}}", PACS_EINVAL,
          "InlineBinary is not base64" },
        { "{\"7FE00010\":{\"vr\":\"OB\",\"InlineBinary\":\"=AAA\"}}", PACS_EINVAL,
          "InlineBinary is not base64" },
        { "{\"7FE00010\":{\"vr\":\"OB\",\"InlineBinary\":\"TR==\"}}", PACS_EINVAL,
          "non-zero padding bits" },
        { "{\"7FE00010\":{\"vr\":\"OB\",\"InlineBinary\":5}}", PACS_EINVAL,
          "InlineBinary must be a string, not a number" },
        { "{\"7FE00010\":{\"vr\":\"OB\",\"InlineBinary\":[\"AA==\",\"AA==\"]}}", PACS_EINVAL,
          "InlineBinary must be a string, not an array" },
        { "{\"00100010\":{\"vr\":\"PN\",\"InlineBinary\":\"AAAA\"}}", PACS_EINVAL,
          "InlineBinary is not allowed for VR PN" },
        { "{\"7FE00010\":{\"vr\":\"OB\",\"Value\":[1]}}", PACS_EINVAL,
          "Value is not allowed for VR OB (use InlineBinary)" },
        { "{\"7FE00010\":{\"vr\":\"OB\",\"BulkDataURI\":7}}", PACS_EINVAL,
          "BulkDataURI must be a string" },
        { "{\"00081140\":{\"vr\":\"SQ\",\"BulkDataURI\":\"http://x\"}}", PACS_EINVAL,
          "BulkDataURI is not allowed for VR SQ" },
        { "{\"FFFEE000\":{\"vr\":\"UN\"}}", PACS_EINVAL,
          "FFFEE000: item and delimitation tags are not attributes" },
        { "{\"0010001a\":{\"vr\":\"LO\"},\"0010001A\":{\"vr\":\"LO\"}}", PACS_EINVAL,
          "0010001A: duplicate attribute" },
        { "{\"00100010\":{\"vr\":\"PN\"},\"00100010\":{\"vr\":\"PN\"}}", PACS_EINVAL,
          "duplicate object key" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_read_error(cases[i].json, cases[i].code, cases[i].msg);

    /* Embedded NUL in an attribute name (jansson refuses it). */
    struct dcm_ds *ds = NULL;
    struct pacs_err err = { 0 };
    const char nul_key[] = "{\"00100010\\u0000\":{\"vr\":\"PN\"}}";
    assert_int_equal(dcm_json_read(nul_key, sizeof nul_key - 1, &ds, &err), PACS_EINVAL);
    assert_non_null(strstr(err.msg, "JSON syntax error"));
    /* Bytes after a NUL are part of the input (length-delimited). */
    const char nul_tail[] = "{}\0garbage";
    assert_int_equal(dcm_json_read(nul_tail, sizeof nul_tail - 1, &ds, &err), PACS_EINVAL);
    /* NULL text. */
    assert_int_equal(dcm_json_read(NULL, 5, &ds, &err), PACS_EINVAL);
    assert_int_equal(dcm_json_read(NULL, 0, &ds, &err), PACS_EINVAL);
    /* Too long. */
    assert_int_equal(dcm_json_read("{}", (size_t)PACS_MAX_JSON_LEN + 1, &ds, &err), PACS_ELIMIT);
    assert_null(ds);
}

/* {"00081140":{"vr":"SQ","Value":[ ... depth times ... {} ]}} */
static char *nested_json(unsigned depth)
{
    struct dynbuf b;
    dynbuf_init(&b, 0);
    for (unsigned i = 0; i < depth; i++)
        assert_int_equal(dynbuf_puts(&b, "{\"00081140\":{\"vr\":\"SQ\",\"Value\":["), 0);
    assert_int_equal(dynbuf_puts(&b, "{}"), 0);
    for (unsigned i = 0; i < depth; i++)
        assert_int_equal(dynbuf_puts(&b, "]}}"), 0);
    return dynbuf_take(&b, NULL);
}

static void test_deep_nesting(void **state)
{
    (void)state;
    char *ok = nested_json(PACS_MAX_SEQ_DEPTH);
    struct dcm_ds *ds = from_json(ok);
    expect_round_trip(ds);
    dcm_ds_free(ds);
    free(ok);

    char *deep = nested_json(PACS_MAX_SEQ_DEPTH + 1);
    expect_read_error(deep, PACS_ELIMIT, "sequences nested deeper than 32");
    expect_read_error(deep, PACS_ELIMIT, "00081140[0].00081140[0].00081140[0]");
    free(deep);

    /* Far deeper than jansson's own limit: refused, no crash. */
    struct dynbuf b;
    dynbuf_init(&b, 0);
    for (int i = 0; i < 100000; i++)
        assert_int_equal(dynbuf_putc(&b, '['), 0);
    expect_read_error((const char *)b.data, PACS_EINVAL, "JSON syntax error");
    dynbuf_free(&b);

    /* The writer refuses a data set nested deeper than the limit too. */
    ds = new_ds();
    struct dcm_ds *cur = ds;
    for (int i = 0; i < PACS_MAX_SEQ_DEPTH + 1; i++) {
        struct dcm_elem *sq;
        struct dcm_ds *item;
        assert_int_equal(dcm_ds_put_seq(cur, DCM_TAG(0x0008, 0x1140), &sq), 0);
        assert_int_equal(dcm_seq_add_item(cur, sq, &item), 0);
        cur = item;
    }
    struct dynbuf out;
    dynbuf_init(&out, 0);
    assert_int_equal(dynbuf_puts(&out, "keep"), 0);
    struct pacs_err err = { 0 };
    assert_int_equal(dcm_json_write(ds, NULL, &out, &err), PACS_ELIMIT);
    assert_non_null(strstr(err.msg, "sequences nested deeper"));
    assert_int_equal(out.len, 4);
    assert_string_equal((const char *)out.data, "keep");
    dynbuf_free(&out);
    dcm_ds_free(ds);
}

static void test_read_array(void **state)
{
    (void)state;
    struct dcm_ds **v = NULL;
    size_t n = 99;
    struct pacs_err err = { 0 };
    const char *text = "[{\"00100020\":{\"vr\":\"LO\",\"Value\":[\"A\"]}},{},"
                       "{\"00100020\":{\"vr\":\"LO\",\"Value\":[\"C\"]}}]";
    assert_int_equal(dcm_json_read_array(text, strlen(text), &v, &n, &err), 0);
    assert_int_equal(n, 3);
    expect_raw(v[0], DCM_TAG(0x0010, 0x0020), DCM_VR_LO, "A ", 2);
    assert_int_equal(v[1]->n, 0);
    expect_raw(v[2], DCM_TAG(0x0010, 0x0020), DCM_VR_LO, "C ", 2);
    for (size_t i = 0; i < n; i++)
        dcm_ds_free(v[i]);
    free(v);

    assert_int_equal(dcm_json_read_array("[]", 2, &v, &n, &err), 0);
    assert_int_equal(n, 0);
    assert_null(v);
    assert_int_equal(dcm_json_read_array("{}", 2, &v, &n, &err), 0);
    assert_int_equal(n, 1);
    dcm_ds_free(v[0]);
    free(v);

    /* An error in one names its index; nothing leaks (ASan). */
    text = "[{},{\"00081140\":{\"vr\":\"SQ\",\"Value\":[{\"00100010\":{\"vr\":\"PN\",\"Value\":[1]}}]}}]";
    assert_int_equal(dcm_json_read_array(text, strlen(text), &v, &n, &err), PACS_EINVAL);
    assert_null(v);
    assert_int_equal(n, 0);
    assert_non_null(strstr(err.msg, "[1].00081140[0].00100010: Value[0] must be a Person Name"));
    assert_int_equal(dcm_json_read_array("[{},3]", 6, &v, &n, &err), PACS_EINVAL);
    assert_non_null(strstr(err.msg, "[1]: a data set must be a JSON object"));
    assert_int_equal(dcm_json_read_array("5", 1, &v, &n, &err), PACS_EINVAL);
}

static void test_output_limit(void **state)
{
    (void)state;
    struct dcm_ds *ds = new_ds();
    put_str(ds, DCM_TAG(0x0010, 0x0010), DCM_VR_PN, "Doe^John");
    struct dcm_elem *sq;
    struct dcm_ds *item;
    assert_int_equal(dcm_ds_put_seq(ds, DCM_TAG(0x0040, 0xa730), &sq), 0);
    assert_int_equal(dcm_seq_add_item(ds, sq, &item), 0);
    put_str(item, DCM_TAG(0x0040, 0xa160), DCM_VR_UT, "a long enough text to overflow");
    struct dynbuf out;
    dynbuf_init(&out, 120);
    assert_int_equal(dynbuf_puts(&out, "["), 0);
    struct pacs_err err = { 0 };
    assert_int_equal(dcm_json_write(ds, NULL, &out, &err), PACS_ELIMIT);
    assert_non_null(strstr(err.msg, "0040A730[0].0040A160: JSON output exceeds"));
    assert_int_equal(out.len, 1);
    assert_string_equal((const char *)out.data, "[");
    /* Appends after what is there. */
    dynbuf_free(&out);
    dynbuf_init(&out, 0);
    assert_int_equal(dynbuf_puts(&out, "["), 0);
    assert_int_equal(dcm_json_write(ds, NULL, &out, &err), 0);
    assert_int_equal(strncmp((const char *)out.data, "[{\"00100010\"", 12), 0);
    dynbuf_free(&out);
    assert_int_equal(dcm_json_write(NULL, NULL, &out, &err), PACS_EINVAL);
    dcm_ds_free(ds);
}

/* A data set with every VR in one place. */
static void test_round_trip_all_vrs(void **state)
{
    (void)state;
    struct dcm_ds *ds = new_ds();
    put_str(ds, DCM_TAG(0x0008, 0x0005), DCM_VR_CS, "ISO_IR 192");
    put_str(ds, DCM_TAG(0x0008, 0x0008), DCM_VR_CS, "DERIVED\\\\SECONDARY");
    put_str(ds, DCM_TAG(0x0008, 0x0054), DCM_VR_AE, "AET");
    put_str(ds, DCM_TAG(0x0010, 0x1010), DCM_VR_AS, "042Y");
    put_raw(ds, DCM_TAG(0x0020, 0x9165), DCM_VR_AT, "\x10\x00\x10\x00", 4);
    put_str(ds, DCM_TAG(0x0008, 0x0020), DCM_VR_DA, "20240101");
    put_str(ds, DCM_TAG(0x0018, 0x0050), DCM_VR_DS, "0.5\\-1e-05\\3.14159265358979\\1E3");
    put_str(ds, DCM_TAG(0x0008, 0x002a), DCM_VR_DT, "20240101");
    float fl = 1.1f;
    double fd = 2.2;
    put_raw(ds, DCM_TAG(0x0018, 0x9089), DCM_VR_FL, &fl, 4);
    put_raw(ds, DCM_TAG(0x0018, 0x9087), DCM_VR_FD, &fd, 8);
    put_str(ds, DCM_TAG(0x0020, 0x0013), DCM_VR_IS, "-7");
    put_str(ds, DCM_TAG(0x0010, 0x0020), DCM_VR_LO, "\xe6\x97\xa5\xe6\x9c\xac");
    put_str(ds, DCM_TAG(0x0010, 0x4000), DCM_VR_LT, "multi\nline");
    put_raw(ds, DCM_TAG(0x0009, 0x1001), DCM_VR_OB, "\x00\x01\x02\x03", 4);
    put_raw(ds, DCM_TAG(0x0009, 0x1002), DCM_VR_OD, "\0\0\0\0\0\0\xf0\x3f", 8);
    put_raw(ds, DCM_TAG(0x0009, 0x1003), DCM_VR_OF, "\0\0\x80\x3f", 4);
    put_raw(ds, DCM_TAG(0x0009, 0x1004), DCM_VR_OL, "\x01\0\0\0", 4);
    put_raw(ds, DCM_TAG(0x0009, 0x1005), DCM_VR_OV, "\x01\0\0\0\0\0\0\0", 8);
    put_raw(ds, DCM_TAG(0x0009, 0x1006), DCM_VR_OW, "\x01\x02", 2);
    put_str(ds, DCM_TAG(0x0010, 0x0010), DCM_VR_PN, "Doe^J=\xe5\xb1\xb1=\\X");
    put_str(ds, DCM_TAG(0x0008, 0x0050), DCM_VR_SH, "ACC");
    put_raw(ds, DCM_TAG(0x0018, 0x6020), DCM_VR_SL, "\xfe\xff\xff\xff", 4);
    put_raw(ds, DCM_TAG(0x0028, 0x0106), DCM_VR_SS, "\xfe\xff", 2);
    put_str(ds, DCM_TAG(0x0008, 0x0081), DCM_VR_ST, "st");
    int64_t sv = INT64_MIN;
    uint64_t uv = UINT64_MAX;
    put_raw(ds, DCM_TAG(0x0011, 0x1001), DCM_VR_SV, &sv, 8);
    put_raw(ds, DCM_TAG(0x0011, 0x1002), DCM_VR_UV, &uv, 8);
    put_str(ds, DCM_TAG(0x0008, 0x0030), DCM_VR_TM, "120000");
    put_str(ds, DCM_TAG(0x0018, 0x9361), DCM_VR_UC, "uc");
    put_str(ds, DCM_TAG(0x0008, 0x0018), DCM_VR_UI, "1.2.3");
    put_raw(ds, DCM_TAG(0x0028, 0x0108), DCM_VR_UL, "\x01\0\0\0", 4);
    put_raw(ds, DCM_TAG(0x0009, 0x1007), DCM_VR_UN, "\x05", 1);
    put_str(ds, DCM_TAG(0x0008, 0x0120), DCM_VR_UR, "urn:x");
    put_raw(ds, DCM_TAG(0x0028, 0x0010), DCM_VR_US, "\x01\0", 2);
    put_str(ds, DCM_TAG(0x0040, 0xa160), DCM_VR_UT, "ut \"quoted\" \\ /");
    struct dcm_elem *sq;
    struct dcm_ds *item;
    assert_int_equal(dcm_ds_put_seq(ds, DCM_TAG(0x0008, 0x1140), &sq), 0);
    assert_int_equal(dcm_seq_add_item(ds, sq, &item), 0);
    put_str(item, DCM_TAG(0x0008, 0x1150), DCM_VR_UI, "1.2");
    expect_round_trip(ds);
    dcm_ds_free(ds);
}

/* --- real files --------------------------------------------------------------- */

static void test_real_file_ct_small(void **state)
{
    (void)state;
    char path[512];
    int n = snprintf(path, sizeof path, "%s/CT_small.dcm", test_pydicom_dir());
    assert_true(n > 0 && (size_t)n < sizeof path);
    size_t len;
    uint8_t *buf = test_load_file(path, &len);
    if (!buf)
        skip();
    struct dcm_file f;
    struct pacs_err err = { 0 };
    struct dcm_read_opts ro = { 0 };
    if (dcm_read_part10(buf, len, &ro, &f, &err))
        fail_msg("dcm_read_part10: %s", err.msg);
    char *text = to_json(f.ds, NULL);
    static const char *const want[] = {
        "\"00080005\":{\"vr\":\"CS\",\"Value\":[\"ISO_IR 100\"]}",
        "\"00080008\":{\"vr\":\"CS\",\"Value\":[\"ORIGINAL\",\"PRIMARY\",\"AXIAL\"]}",
        "\"00080016\":{\"vr\":\"UI\",\"Value\":[\"1.2.840.10008.5.1.4.1.1.2\"]}",
        "\"00100010\":{\"vr\":\"PN\",\"Value\":[{\"Alphabetic\":\"CompressedSamples^CT1\"}]}",
        "\"00180050\":{\"vr\":\"DS\",\"Value\":[5]}",
        "\"00200013\":{\"vr\":\"IS\",\"Value\":[1]}",
        "\"00200032\":{\"vr\":\"DS\",\"Value\":[-158.135803,-179.035797,-75.699997]}",
        "\"00280010\":{\"vr\":\"US\",\"Value\":[128]}",
        "\"00280030\":{\"vr\":\"DS\",\"Value\":[0.661468,0.661468]}",
        "\"00091001\":{\"vr\":\"LO\",\"Value\":[\"GE_GENESIS_FF\"]}",
        "\"00431012\":{\"vr\":\"SS\",\"Value\":[14,2,3]}",
        "\"7FE00010\":{\"vr\":\"OW\",\"InlineBinary\":\"rwC0AKYAjwCLAJgApwC7ANQA",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(text, want[i]))
            fail_msg("CT_small JSON lacks %s", want[i]);
    /* Group lengths are not written. */
    assert_null(strstr(text, "0000\":"));
    /* Read back and written again: identical (the text is ASCII). */
    struct dcm_ds *back = from_json(text);
    char *again = to_json(back, NULL);
    assert_string_equal(text, again);
    free(again);
    dcm_ds_free(back);
    free(text);
    dcm_file_free(&f);
    free(buf);
}

/* pydicom's own JSON test files. */
static void test_pydicom_json_files(void **state)
{
    (void)state;
    char path[512];
    int n = snprintf(path, sizeof path, "%s/test_PN.json", test_pydicom_dir());
    assert_true(n > 0 && (size_t)n < sizeof path);
    size_t len;
    char *buf = (char *)test_load_file(path, &len);
    if (!buf)
        skip();
    struct dcm_ds *ds = NULL;
    struct pacs_err err = { 0 };
    if (dcm_json_read(buf, len, &ds, &err))
        fail_msg("test_PN.json: %s", err.msg);
    expect_raw(ds, DCM_TAG(0x0010, 0x0010), DCM_VR_PN, "Prostate^Volunteer", 18);
    expect_raw(ds, DCM_TAG(0x0008, 0x0090), DCM_VR_PN, "", 0);
    dcm_ds_free(ds);
    free(buf);

    /* test1.json has a null among US values, which a data set cannot hold. */
    n = snprintf(path, sizeof path, "%s/test1.json", test_pydicom_dir());
    assert_true(n > 0 && (size_t)n < sizeof path);
    buf = (char *)test_load_file(path, &len);
    assert_non_null(buf);
    assert_int_equal(dcm_json_read(buf, len, &ds, &err), PACS_EINVAL);
    assert_non_null(strstr(err.msg, "00181310: Value[4] is null"));
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_string_vrs),
        cmocka_unit_test(test_write_ds_is),
        cmocka_unit_test(test_write_binary_numbers),
        cmocka_unit_test(test_write_binary_vrs),
        cmocka_unit_test(test_pn_groups),
        cmocka_unit_test(test_charset_decode),
        cmocka_unit_test(test_sequences_nested),
        cmocka_unit_test(test_empty_values),
        cmocka_unit_test(test_inline_binary),
        cmocka_unit_test(test_bulk_uri_callback),
        cmocka_unit_test(test_encapsulated_pixel_data),
        cmocka_unit_test(test_read_values),
        cmocka_unit_test(test_read_errors),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_read_array),
        cmocka_unit_test(test_output_limit),
        cmocka_unit_test(test_round_trip_all_vrs),
        cmocka_unit_test(test_real_file_ct_small),
        cmocka_unit_test(test_pydicom_json_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
