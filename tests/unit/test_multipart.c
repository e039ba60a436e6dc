/* Unit tests: multipart/related codec (http/multipart). Every body is parsed
 * whole, in every 2-chunk split and one byte at a time, and must give the
 * same callbacks, bytes, result and message each way. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/multipart.h"

#define B(s) (const uint8_t *)(s), sizeof(s) - 1

/* --- recording callbacks ------------------------------------------------- */

/* The trace: part_begin is "{ct=..;len=..;loc=..;id=..;cte=..}" (present
 * headers only), data bytes follow with '{', '}', '|' and '\' escaped by
 * '\', part_end is "|". Adjacent part_data calls merge, which is the point:
 * the split of the input must not show. */
struct rec {
    struct dynbuf t;
    size_t begins, ends;
    bool in_part;
    int stop_begin; /* return -42 from part_begin of this part (1-based) */
    int stop_data;  /* return -43 from the first part_data of this part */
    int stop_end;   /* return -44 from part_end of this part */
};

static int rec_begin(void *ctx, const struct mp_part_headers *h)
{
    struct rec *r = ctx;
    assert_false(r->in_part);
    assert_int_equal(h->index, r->begins);
    r->begins++;
    r->in_part = true;
    assert_int_equal(dynbuf_putc(&r->t, '{'), 0);
    const char *sep = "";
    if (h->content_type) {
        assert_int_equal(dynbuf_printf(&r->t, "%sct=%s", sep, h->content_type), 0);
        sep = ";";
    }
    if (h->has_content_length) {
        assert_int_equal(dynbuf_printf(&r->t, "%slen=%llu", sep, (unsigned long long)h->content_length), 0);
        sep = ";";
    }
    if (h->content_location) {
        assert_int_equal(dynbuf_printf(&r->t, "%sloc=%s", sep, h->content_location), 0);
        sep = ";";
    }
    if (h->content_id) {
        assert_int_equal(dynbuf_printf(&r->t, "%sid=%s", sep, h->content_id), 0);
        sep = ";";
    }
    if (h->content_transfer_encoding)
        assert_int_equal(dynbuf_printf(&r->t, "%scte=%s", sep, h->content_transfer_encoding), 0);
    assert_int_equal(dynbuf_putc(&r->t, '}'), 0);
    return (int)r->begins == r->stop_begin ? -42 : 0;
}

static int rec_data(void *ctx, const uint8_t *p, size_t n)
{
    struct rec *r = ctx;
    assert_true(r->in_part);
    assert_true(n > 0);
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '{' || p[i] == '}' || p[i] == '|' || p[i] == '\\')
            assert_int_equal(dynbuf_putc(&r->t, '\\'), 0);
        assert_int_equal(dynbuf_putc(&r->t, (char)p[i]), 0);
    }
    return (int)r->begins == r->stop_data ? -43 : 0;
}

static int rec_end(void *ctx)
{
    struct rec *r = ctx;
    assert_true(r->in_part);
    r->in_part = false;
    r->ends++;
    assert_int_equal(dynbuf_putc(&r->t, '|'), 0);
    return (int)r->ends == r->stop_end ? -44 : 0;
}

static const struct mp_callbacks rec_cb = { rec_begin, rec_data, rec_end };

struct outcome {
    int rc;
    char msg[256];
    char *trace;
    size_t tlen;
    size_t parts;
};

static void outcome_free(struct outcome *o)
{
    free(o->trace);
    o->trace = NULL;
}

/* Parses body cut at the given offsets (ascending), then mp_finish. */
static struct outcome parse_cuts(const char *boundary, const struct mp_limits *lim,
                                 const struct rec *proto, const uint8_t *body, size_t n,
                                 const size_t *cuts, size_t ncuts)
{
    struct outcome o = { 0 };
    struct mp_parser *p = NULL;
    struct pacs_err err = { 0 };
    assert_int_equal(mp_parser_new(boundary, lim, &p, &err), 0);
    struct rec r = { 0 };
    if (proto) {
        r.stop_begin = proto->stop_begin;
        r.stop_data = proto->stop_data;
        r.stop_end = proto->stop_end;
    }
    dynbuf_init(&r.t, 0);
    size_t from = 0;
    int rc = 0;
    for (size_t k = 0; k <= ncuts && rc == 0; k++) {
        size_t to = k < ncuts ? cuts[k] : n;
        rc = mp_feed(p, body + from, to - from, &rec_cb, &r, &err);
        from = to;
    }
    if (rc == 0)
        rc = mp_finish(p, &err);
    else /* errors are sticky */
        assert_int_equal(mp_finish(p, NULL), rc);
    if (rc == 0)
        assert_true(mp_done(p));
    if (rc < 0 && rc > -40)
        assert_true(err.msg[0] != '\0');
    o.rc = rc;
    memcpy(o.msg, err.msg, sizeof o.msg);
    o.parts = mp_part_count(p);
    o.trace = dynbuf_take(&r.t, &o.tlen);
    assert_non_null(o.trace);
    /* dynbuf_take of a never-grown buffer does not write the NUL it
     * promises; the allocation has room for it. */
    o.trace[o.tlen] = '\0';
    mp_parser_free(p);
    return o;
}

static void assert_same(const struct outcome *a, const struct outcome *b, const char *how, size_t k)
{
    if (a->rc != b->rc || strcmp(a->msg, b->msg) != 0 || a->tlen != b->tlen ||
        memcmp(a->trace, b->trace, a->tlen) != 0 || a->parts != b->parts) {
        print_error("%s %zu differs from the whole parse:\n  whole: rc %d \"%s\" trace \"%s\"\n"
                    "  split: rc %d \"%s\" trace \"%s\"\n", how, k, a->rc, a->msg, a->trace, b->rc,
                    b->msg, b->trace);
        fail();
    }
}

/* Parses whole, in every 2-chunk split, in every 3-chunk split for short
 * bodies, and bytewise; all must agree. Returns the whole parse. */
static struct outcome parse_all(const char *boundary, const struct mp_limits *lim,
                                const struct rec *proto, const uint8_t *body, size_t n)
{
    struct outcome whole = parse_cuts(boundary, lim, proto, body, n, NULL, 0);
    for (size_t k = 0; k <= n; k++) {
        struct outcome o = parse_cuts(boundary, lim, proto, body, n, &k, 1);
        assert_same(&whole, &o, "split at", k);
        outcome_free(&o);
    }
    if (n <= 120)
        for (size_t a = 1; a < n; a++)
            for (size_t b = a + 1; b < n; b++) {
                size_t cuts[2] = { a, b };
                struct outcome o = parse_cuts(boundary, lim, proto, body, n, cuts, 2);
                assert_same(&whole, &o, "3-split at", a * 1000 + b);
                outcome_free(&o);
            }
    size_t *cuts = malloc((n ? n : 1) * sizeof *cuts);
    assert_non_null(cuts);
    for (size_t k = 0; k + 1 < n; k++)
        cuts[k] = k + 1;
    struct outcome o = parse_cuts(boundary, lim, proto, body, n, cuts, n ? n - 1 : 0);
    assert_same(&whole, &o, "bytewise", 0);
    outcome_free(&o);
    free(cuts);
    return whole;
}

/* Expects success with the given trace. */
static void expect_ok(const char *boundary, const uint8_t *body, size_t n, const char *trace)
{
    struct outcome o = parse_all(boundary, NULL, NULL, body, n);
    if (o.rc != 0)
        print_error("unexpected error %d: %s\n", o.rc, o.msg);
    assert_int_equal(o.rc, 0);
    assert_string_equal(o.trace, trace);
    outcome_free(&o);
}

/* As expect_ok, for traces holding NUL bytes. */
static void expect_ok_mem(const char *boundary, const uint8_t *body, size_t n, const char *trace,
                          size_t tlen)
{
    struct outcome o = parse_all(boundary, NULL, NULL, body, n);
    assert_int_equal(o.rc, 0);
    assert_int_equal(o.tlen, tlen);
    assert_memory_equal(o.trace, trace, tlen);
    outcome_free(&o);
}

/* Expects code with msg containing each of the (NULL-terminated) words. */
static void expect_err_lim(const char *boundary, const struct mp_limits *lim, const uint8_t *body,
                           size_t n, int code, const char *trace, ...)
{
    struct outcome o = parse_all(boundary, lim, NULL, body, n);
    if (o.rc != code)
        print_error("expected %d, got %d: %s\n", code, o.rc, o.msg);
    assert_int_equal(o.rc, code);
    if (trace)
        assert_string_equal(o.trace, trace);
    va_list ap;
    va_start(ap, trace);
    const char *w;
    while ((w = va_arg(ap, const char *)) != NULL)
        if (!strstr(o.msg, w)) {
            print_error("message \"%s\" lacks \"%s\"\n", o.msg, w);
            fail();
        }
    va_end(ap);
    outcome_free(&o);
}

#define expect_err(boundary, body, n, code, trace, ...) \
    expect_err_lim(boundary, NULL, body, n, code, trace, __VA_ARGS__)

/* --- Content-Type -------------------------------------------------------- */

static void test_ct_basic(void **state)
{
    (void)state;
    struct mp_content_type ct;
    struct pacs_err err = { 0 };
    assert_int_equal(mp_parse_content_type("multipart/related; type=\"application/dicom\"; boundary=abc123",
                                           &ct, &err), 0);
    assert_string_equal(ct.media_type, "multipart/related");
    assert_true(mp_is_multipart_related(&ct));
    assert_string_equal(ct.type, "application/dicom");
    assert_string_equal(ct.boundary, "abc123");
    assert_string_equal(ct.start, "");
    assert_string_equal(ct.transfer_syntax, "");

    /* RFC 2387 3.1 (with the semicolons its example forgets). */
    assert_int_equal(mp_parse_content_type("Multipart/Related; boundary=example-1;\r\n"
                                           "\tstart=\"<950120.aaCC@XIson.com>\";\r\n"
                                           "\ttype=\"Application/X-FixedRecord\";\r\n"
                                           "\tstart-info=\"-o ps\"", &ct, &err), PACS_EINVAL);
    /* Folded header values reach us unfolded (libmicrohttpd and RFC 7230
     * replace obs-fold by spaces); the CR LF above is rightly refused. */
    assert_int_equal(mp_parse_content_type("Multipart/Related; boundary=example-1; "
                                           "start=\"<950120.aaCC@XIson.com>\"; "
                                           "type=\"Application/X-FixedRecord\"; start-info=\"-o ps\"",
                                           &ct, &err), 0);
    assert_string_equal(ct.media_type, "multipart/related");
    assert_string_equal(ct.boundary, "example-1");
    assert_string_equal(ct.start, "<950120.aaCC@XIson.com>");
    assert_string_equal(ct.type, "application/x-fixedrecord");

    assert_int_equal(mp_parse_content_type("multipart/related; type=\"application/dicom\"; "
                                           "transfer-syntax=1.2.840.10008.1.2.4.50; boundary=b",
                                           &ct, &err), 0);
    assert_string_equal(ct.transfer_syntax, "1.2.840.10008.1.2.4.50");
    assert_int_equal(mp_parse_content_type("multipart/related; type=\"application/dicom\"; "
                                           "transfer-syntax=*; boundary=b", &ct, &err), 0);
    assert_string_equal(ct.transfer_syntax, "*");
}

static void test_ct_quoted_boundary(void **state)
{
    (void)state;
    struct mp_content_type ct;
    struct pacs_err err = { 0 };
    assert_int_equal(mp_parse_content_type("multipart/related; boundary=\"----=_Part_0_1.2\"", &ct, &err), 0);
    assert_string_equal(ct.boundary, "----=_Part_0_1.2");
    /* fo-dicom's boundary has spaces. */
    assert_int_equal(mp_parse_content_type("multipart/related; type=\"application/dicom\"; "
                                           "boundary=\"DICOM DATA BOUNDARY\"", &ct, &err), 0);
    assert_string_equal(ct.boundary, "DICOM DATA BOUNDARY");
    assert_int_equal(mp_parse_content_type("multipart/related; boundary=\"a(b)c+d_e,f-g.h/i:j=k?l 'm'\"",
                                           &ct, &err), 0);
    assert_string_equal(ct.boundary, "a(b)c+d_e,f-g.h/i:j=k?l 'm'");
    /* Backslash escapes an ordinary character too. */
    assert_int_equal(mp_parse_content_type("multipart/related; boundary=\"a\\bc\"", &ct, &err), 0);
    assert_string_equal(ct.boundary, "abc");
    /* An escaped quote is a '"' in the boundary, which RFC 2046 forbids. */
    assert_int_equal(mp_parse_content_type("multipart/related; boundary=\"a\\\"b\"", &ct, &err), PACS_EINVAL);
    assert_non_null(strstr(err.msg, "'\"'"));
    assert_int_equal(mp_parse_content_type("multipart/related; boundary=\"ends with space \"", &ct, &err),
                     PACS_EINVAL);
    assert_non_null(strstr(err.msg, "ends with a space"));
    /* '/' and '=' need quotes by RFC 7231 but are accepted bare. */
    assert_int_equal(mp_parse_content_type("multipart/related; boundary=a/b=c", &ct, &err), 0);
    assert_string_equal(ct.boundary, "a/b=c");
    /* Token characters outside bchars. */
    assert_int_equal(mp_parse_content_type("multipart/related; boundary=abc!def", &ct, &err), PACS_EINVAL);
    assert_non_null(strstr(err.msg, "'!'"));
    assert_non_null(strstr(err.msg, "RFC 2046"));
    assert_string_equal(ct.boundary, ""); /* cleared on error */
}

static void test_ct_case_whitespace(void **state)
{
    (void)state;
    struct mp_content_type ct;
    struct pacs_err err = { 0 };
    assert_int_equal(mp_parse_content_type("  MULTIPART/Related ;BOUNDARY = XyZ ;\tType= Application/DICOM+JSON ; ;",
                                           &ct, &err), 0);
    assert_string_equal(ct.media_type, "multipart/related");
    assert_string_equal(ct.boundary, "XyZ");
    assert_string_equal(ct.type, "application/dicom+json");
    /* As some clients send it: unquoted type and a trailing ';'. */
    assert_int_equal(mp_parse_content_type("multipart/related; type=application/dicom;", &ct, &err), PACS_EINVAL);
    assert_string_equal(err.msg, "multipart/related without a boundary");
    assert_int_equal(mp_parse_content_type("multipart/related; type=application/dicom; boundary=x;", &ct, &err), 0);
    assert_string_equal(ct.type, "application/dicom");
    /* Unknown parameters, RFC 2231 forms included, are skipped. */
    assert_int_equal(mp_parse_content_type("multipart/related; charset=\"utf-8\"; boundary*=x; "
                                           "boundary=real; x-odd=\"\\\\;\"", &ct, &err), 0);
    assert_string_equal(ct.boundary, "real");
}

static void test_ct_type_param(void **state)
{
    (void)state;
    struct mp_content_type ct;
    struct pacs_err err = { 0 };
    assert_int_equal(mp_parse_content_type("multipart/related; type=\"application/dicom+xml\"; boundary=b", &ct, &err), 0);
    assert_string_equal(ct.type, "application/dicom+xml");
    assert_int_equal(mp_parse_content_type("multipart/related; type=application/octet-stream; boundary=b", &ct, &err), 0);
    assert_string_equal(ct.type, "application/octet-stream");
    assert_int_equal(mp_parse_content_type("multipart/related; type=\"dicom\"; boundary=b", &ct, &err), PACS_EINVAL);
    assert_non_null(strstr(err.msg, "not a media type"));
    assert_int_equal(mp_parse_content_type("multipart/related; type=\"application/dicom; x=1\"; boundary=b", &ct, &err),
                     PACS_EINVAL);
    assert_int_equal(mp_parse_content_type("multipart/related; type=\"\"; boundary=b", &ct, &err), PACS_EINVAL);
    assert_string_equal(err.msg, "Content-Type parameter type is empty");
}

static void test_ct_missing_boundary(void **state)
{
    (void)state;
    struct mp_content_type ct;
    struct pacs_err err = { 0 };
    assert_int_equal(mp_parse_content_type("multipart/related; type=\"application/dicom\"", &ct, &err), PACS_EINVAL);
    assert_string_equal(err.msg, "multipart/related without a boundary");
    assert_int_equal(mp_parse_content_type("multipart/related", &ct, &err), PACS_EINVAL);
    assert_int_equal(mp_parse_content_type("Multipart/Mixed", &ct, &err), PACS_EINVAL);
    assert_string_equal(err.msg, "multipart/mixed without a boundary");
    assert_int_equal(mp_parse_content_type("multipart/related; boundary=\"\"", &ct, &err), PACS_EINVAL);
    assert_int_equal(mp_parse_content_type("multipart/related; boundary=", &ct, &err), PACS_EINVAL);
    assert_non_null(strstr(err.msg, "has no value"));
}

static void test_ct_long_boundary(void **state)
{
    (void)state;
    struct mp_content_type ct;
    struct pacs_err err = { 0 };
    char h[600], b[300];
    for (size_t len = 69; len <= MP_BOUNDARY_ACCEPT_MAX + 1; len++) {
        memset(b, 'x', len);
        b[len] = '\0';
        int n = snprintf(h, sizeof h, "multipart/related; boundary=\"%s\"", b);
        assert_true(n > 0 && (size_t)n < sizeof h);
        int rc = mp_parse_content_type(h, &ct, &err);
        if (len <= MP_BOUNDARY_ACCEPT_MAX) {
            assert_int_equal(rc, 0);
            assert_string_equal(ct.boundary, b);
            assert_int_equal(mp_check_boundary(b, NULL), 0);
        } else {
            assert_int_equal(rc, PACS_ELIMIT);
            assert_string_equal(err.msg, "multipart boundary longer than 256 characters");
            assert_int_equal(mp_check_boundary(b, &err), PACS_ELIMIT);
        }
    }
    /* Orthanc's DICOMweb plugin: two UUIDs, 73 characters, unquoted. */
    const char *orthanc = "multipart/related; type=\"application/dicom\"; "
                          "boundary=0e5ee0ba-5d5c-4bd5-9d4c-3c5b1b0a2c1e-0e5ee0ba-5d5c-4bd5-9d4c-3c5b1b0a2c1e";
    assert_int_equal(mp_parse_content_type(orthanc, &ct, &err), 0);
    assert_int_equal(strlen(ct.boundary), 73);
    /* What we write stays within RFC 2046's 70. */
    struct dynbuf out;
    dynbuf_init(&out, 0);
    memset(b, 'x', 71);
    b[71] = '\0';
    assert_int_equal(mp_write_part_header(&out, b, true, "application/dicom", NULL, MP_NO_LENGTH, &err),
                     PACS_EINVAL);
    assert_string_equal(err.msg, "multipart boundary longer than 70 characters");
    b[70] = '\0';
    assert_int_equal(mp_write_part_header(&out, b, true, "application/dicom", NULL, MP_NO_LENGTH, &err), 0);
    dynbuf_free(&out);
}

static void test_ct_duplicates(void **state)
{
    (void)state;
    struct mp_content_type ct;
    struct pacs_err err = { 0 };
    assert_int_equal(mp_parse_content_type("multipart/related; boundary=a; boundary=a", &ct, &err), PACS_EINVAL);
    assert_string_equal(err.msg, "Content-Type has the boundary parameter twice");
    assert_int_equal(mp_parse_content_type("multipart/related; boundary=a; TYPE=\"a/b\"; type=a/b", &ct, &err),
                     PACS_EINVAL);
    assert_string_equal(err.msg, "Content-Type has the type parameter twice");
    assert_int_equal(mp_parse_content_type("multipart/related; boundary=a; start=<x>; start=<x>", &ct, &err), PACS_EINVAL);
    assert_int_equal(mp_parse_content_type("multipart/related; boundary=a; transfer-syntax=1; Transfer-Syntax=1",
                                           &ct, &err), PACS_EINVAL);
    /* Unknown parameters may repeat. */
    assert_int_equal(mp_parse_content_type("multipart/related; boundary=a; q=1; q=2", &ct, &err), 0);
}

static void test_ct_malformed(void **state)
{
    (void)state;
    static const struct {
        const char *h;
        int rc;
        const char *word;
    } cases[] = {
        { "", PACS_EINVAL, "empty Content-Type" },
        { "   ", PACS_EINVAL, "empty Content-Type" },
        { "multipart", PACS_EINVAL, "has no subtype" },
        { "multipart/", PACS_EINVAL, "has no subtype" },
        { "/related", PACS_EINVAL, "does not start with a media type" },
        { "multipart/related boundary=a", PACS_EINVAL, "expected ';'" },
        { "multipart/related; boundary", PACS_EINVAL, "has no value" },
        { "multipart/related; =a", PACS_EINVAL, "expected a parameter name" },
        { "multipart/related; boundary=\"abc", PACS_EINVAL, "unterminated quoted string" },
        { "multipart/related; boundary=\"abc\\", PACS_EINVAL, "unterminated quoted string" },
        { "multipart/related; boundary=\"a\x01\"", PACS_EINVAL, "control character 0x01" },
        { "multipart/related; boundary=a\"b\"", PACS_EINVAL, "quote the value" },
        { "multipart/related; boundary=\"a\"b", PACS_EINVAL, "expected ';'" },
        { "multipart/related; boundary=a\x7f", PACS_EINVAL, "0x7f" },
        { "multipart/related; boundary=a\xc3\xa9", PACS_EINVAL, "0xc3" },
        { "multipart/related; boundary=\"a\xc3\xa9\"", PACS_EINVAL, "RFC 2046" },
        { "multipart/related; bound ary=a", PACS_EINVAL, "has no value" },
        { "multi part/related", PACS_EINVAL, "has no subtype" },
    };
    struct mp_content_type ct;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct pacs_err err = { 0 };
        int rc = mp_parse_content_type(cases[i].h, &ct, &err);
        if (rc != cases[i].rc || !strstr(err.msg, cases[i].word)) {
            print_error("case %zu \"%s\": rc %d \"%s\"\n", i, cases[i].h, rc, err.msg);
            fail();
        }
    }
    struct pacs_err err = { 0 };
    assert_int_equal(mp_parse_content_type(NULL, &ct, &err), PACS_EINVAL);
    /* RFC 6838: 127 characters each side of the '/'. */
    char mt[400];
    memset(mt, 'a', 127);
    mt[127] = '/';
    memset(mt + 128, 'b', 127);
    mt[255] = '\0';
    assert_int_equal(mp_parse_content_type(mt, &ct, &err), 0);
    assert_int_equal(strlen(ct.media_type), 255);
    mt[255] = 'b';
    mt[256] = '\0';
    assert_int_equal(mp_parse_content_type(mt, &ct, &err), PACS_ELIMIT);
    assert_string_equal(err.msg, "media type in Content-Type longer than 255 characters");
    /* ',' is a bchar: accepted bare. */
    assert_int_equal(mp_parse_content_type("multipart/related;boundary=a,b", &ct, &err), 0);
    assert_string_equal(ct.boundary, "a,b");
    /* Long values of parameters pacsd keeps. */
    char h[700];
    char v[300];
    memset(v, '1', 256);
    v[256] = '\0';
    int n = snprintf(h, sizeof h, "multipart/related; boundary=b; transfer-syntax=%s", v);
    assert_true(n > 0 && (size_t)n < sizeof h);
    assert_int_equal(mp_parse_content_type(h, &ct, &err), PACS_ELIMIT);
    assert_non_null(strstr(err.msg, "longer than 255"));
    v[255] = '\0';
    n = snprintf(h, sizeof h, "multipart/related; boundary=b; transfer-syntax=%s", v);
    assert_true(n > 0 && (size_t)n < sizeof h);
    assert_int_equal(mp_parse_content_type(h, &ct, &err), 0);
    /* ...and of those it skips: no limit. */
    n = snprintf(h, sizeof h, "multipart/related; boundary=b; x=%s%s", v, v);
    assert_true(n > 0 && (size_t)n < sizeof h);
    assert_int_equal(mp_parse_content_type(h, &ct, &err), 0);
}

static void test_ct_not_multipart(void **state)
{
    (void)state;
    struct mp_content_type ct;
    struct pacs_err err = { 0 };
    assert_int_equal(mp_parse_content_type("application/dicom; transfer-syntax=1.2.840.10008.1.2.1", &ct, &err), 0);
    assert_false(mp_is_multipart_related(&ct));
    assert_string_equal(ct.media_type, "application/dicom");
    assert_string_equal(ct.transfer_syntax, "1.2.840.10008.1.2.1");
    assert_int_equal(mp_parse_content_type("Application/DICOM+JSON", &ct, &err), 0);
    assert_string_equal(ct.media_type, "application/dicom+json");
    assert_false(mp_is_multipart_related(&ct));
}

/* --- parser: good bodies ------------------------------------------------- */

static void test_zero_parts(void **state)
{
    (void)state;
    expect_ok("b", B("--b--"), "");
    expect_ok("b", B("--b--\r\n"), "");
    expect_ok("b", B("\r\n--b--\r\n"), "");
    expect_ok("b", B("preamble\r\n--b--\r\nepilogue"), "");
}

static void test_one_part(void **state)
{
    (void)state;
    expect_ok("b", B("--b\r\nContent-Type: application/dicom\r\n\r\nDATA\r\n--b--\r\n"),
              "{ct=application/dicom}DATA|");
    /* No headers at all; empty data. */
    expect_ok("b", B("--b\r\n\r\nx\r\n--b--"), "{}x|");
    expect_ok("b", B("--b\r\n\r\n\r\n--b--"), "{}|");
    /* Every header pacsd reads; case-insensitive names; other headers skipped. */
    expect_ok("boundary42",
              B("--boundary42\r\n"
                "content-type:application/dicom;transfer-syntax=1.2.840.10008.1.2.1\r\n"
                "X-Whatever: ignored\r\n"
                "CONTENT-LENGTH:   3  \r\n"
                "Content-Location: http://h/studies/1.2/series/3.4/instances/5.6\r\n"
                "Content-ID: <part1@pacsd>\r\n"
                "Content-Transfer-Encoding: Binary\r\n"
                "Content-Description: has: colons: inside\r\n"
                "\r\n"
                "abc\r\n--boundary42--\r\n"),
              "{ct=application/dicom;transfer-syntax=1.2.840.10008.1.2.1;len=3;"
              "loc=http://h/studies/1.2/series/3.4/instances/5.6;id=<part1@pacsd>;cte=Binary}abc|");
    /* Empty header value. */
    expect_ok("b", B("--b\r\nX-Empty:\r\nContent-ID:\r\n\r\nz\r\n--b--"), "{id=}z|");
}

static void test_three_parts(void **state)
{
    (void)state;
    expect_ok("sep",
              B("--sep\r\nContent-Type: application/dicom\r\n\r\none\r\n"
                "--sep\r\nContent-Type: application/dicom\r\nContent-Length: 3\r\n\r\ntwo\r\n"
                "--sep\r\nContent-Type: application/octet-stream\r\n\r\nthree\r\n"
                "--sep--\r\n"),
              "{ct=application/dicom}one|{ct=application/dicom;len=3}two|"
              "{ct=application/octet-stream}three|");
}

static void test_binary_lookalikes(void **state)
{
    (void)state;
    /* Data holding CRLF "--" not followed by the boundary, the boundary
     * without its CRLF, partial delimiters, lone CR and LF, NULs, and a CR
     * right before the real delimiter. */
    expect_ok("xyz",
              B("--xyz\r\n\r\n"
                "a\r\n--xy\r\n--x\r\n-\r\n--\r\n\r--xyz\n--xyz--xyz\x01\xff\r\r\n-z\r\r"
                "\r\n--xyz\r\n\r\n"
                "\r\n\r\n--xy\r\r"
                "\r\n--xyz--"),
              "{}a\r\n--xy\r\n--x\r\n-\r\n--\r\n\r--xyz\n--xyz--xyz\x01\xff\r\r\n-z\r\r|"
              "{}\r\n\r\n--xy\r\r|");
    /* NUL bytes, and data that is all delimiter prefixes. */
    static const char nul_trace[] = "{}\0\r\n-\0\r\n--xy\0\r|{}\r\n--xy|";
    expect_ok_mem("xyz", B("--xyz\r\n\r\n\0\r\n-\0\r\n--xy\0\r\r\n--xyz\r\n\r\n\r\n--xy\r\n--xyz--"),
                  nul_trace, sizeof nul_trace - 1);
    /* A boundary that is a prefix of a longer line in data is not allowed
     * (RFC 2046: no line in a part starts with the delimiter). */
    expect_err("xyz", B("--xyz\r\n\r\ndata\r\n--xyzz\r\n"), PACS_EINVAL, "{}data",
               "boundary followed by 'z', not CRLF", "byte 20", NULL);
}

static void test_preamble_epilogue(void **state)
{
    (void)state;
    expect_ok("b",
              B("This is the preamble; --b without CRLF before it is text.\r\n"
                "\r\n--b\r\n\r\npart\r\n--b--\r\nThis is the epilogue.\r\n--b\r\nignored\r\n"),
              "{}part|");
    /* Nothing may follow a boundary on its line but padding, even in the
     * preamble: "--bx" at the start of a line is refused. */
    expect_err("b", B("pre\r\n--bx\r\n--b\r\n\r\np\r\n--b--"), PACS_EINVAL, "",
               "boundary followed by 'x'", "byte 8", NULL);
    /* Epilogue: anything, even without CRLF after the close delimiter. */
    expect_ok("b", B("--b\r\n\r\np\r\n--b--junk--b\r\n"), "{}p|");
    expect_ok("b", B("--b\r\n\r\np\r\n--b--  \r\n\r\n"), "{}p|");
    /* Body starting with CRLF: empty preamble. */
    expect_ok("b", B("\r\n--b\r\n\r\np\r\n--b--"), "{}p|");
    /* Preamble that nearly holds the delimiter at the very start. */
    expect_ok("b", B("-\r\n--b\r\n\r\np\r\n--b--"), "{}p|");
    expect_ok("b", B("\r\r\n--b\r\n\r\np\r\n--b--"), "{}p|");
}

static void test_transport_padding(void **state)
{
    (void)state;
    expect_ok("b", B("--b \t \r\n\r\none\r\n--b\t\r\n\r\ntwo\r\n--b--"), "{}one|{}two|");
    expect_err("b", B("--b \r\n\r\none\r\n--b --\r\n"), PACS_EINVAL, "{}one", "boundary followed by '-'",
               NULL);
}

/* --- parser: truncation -------------------------------------------------- */

static void check_every_prefix(const char *boundary, const uint8_t *body, size_t n, size_t close_end)
{
    for (size_t len = 0; len <= n; len++) {
        struct outcome o = parse_cuts(boundary, NULL, NULL, body, len, NULL, 0);
        if (len >= close_end) {
            assert_int_equal(o.rc, 0);
        } else {
            if (o.rc != PACS_ETRUNC)
                print_error("prefix %zu: rc %d %s\n", len, o.rc, o.msg);
            assert_int_equal(o.rc, PACS_ETRUNC);
        }
        outcome_free(&o);
        /* Also split in two. */
        for (size_t k = 0; k <= len; k += 7) {
            struct outcome s = parse_cuts(boundary, NULL, NULL, body, len, &k, 1);
            struct outcome w = parse_cuts(boundary, NULL, NULL, body, len, NULL, 0);
            assert_same(&w, &s, "truncated split", k);
            outcome_free(&s);
            outcome_free(&w);
        }
    }
}

static void test_truncated(void **state)
{
    (void)state;
    static const char body[] =
        "pre\r\n--bnd\r\nContent-Type: application/dicom\r\nContent-Length: 6\r\n\r\n"
        "a\r\n--b\r\n--bnd  \r\nContent-Type: x/y\r\n\r\nsecond\r\n--bnd--\r\nepi";
    size_t n = sizeof body - 1;
    size_t close_end = (size_t)(strstr(body, "--bnd--") - body) + 7;
    check_every_prefix("bnd", (const uint8_t *)body, n, close_end);

    struct outcome o;
    o = parse_cuts("bnd", NULL, NULL, B(""), NULL, 0);
    assert_int_equal(o.rc, PACS_ETRUNC);
    assert_string_equal(o.msg, "no multipart boundary delimiter in the 0-byte body (is the boundary right?)");
    outcome_free(&o);
    o = parse_cuts("other", NULL, NULL, (const uint8_t *)body, n, NULL, 0);
    assert_int_equal(o.rc, PACS_ETRUNC);
    assert_non_null(strstr(o.msg, "is the boundary right?"));
    outcome_free(&o);
    o = parse_cuts("bnd", NULL, NULL, B("--bnd\r\nContent-Type: x/y\r\n"), NULL, 0);
    assert_int_equal(o.rc, PACS_ETRUNC);
    assert_string_equal(o.msg, "multipart body ended in the headers of part 1 (byte 26)");
    outcome_free(&o);
    o = parse_cuts("bnd", NULL, NULL, B("--bnd\r\n\r\nabc\r\n--bn"), NULL, 0);
    assert_int_equal(o.rc, PACS_ETRUNC);
    assert_string_equal(o.msg, "multipart body ended inside part 1, before its closing boundary (byte 18)");
    assert_string_equal(o.trace, "{}abc"); /* no part_end */
    outcome_free(&o);
    o = parse_cuts("bnd", NULL, NULL, B("--bnd\r\n\r\nabc\r\n--bnd-"), NULL, 0);
    assert_int_equal(o.rc, PACS_ETRUNC);
    assert_non_null(strstr(o.msg, "right after a boundary"));
    outcome_free(&o);
}

/* --- parser: errors ------------------------------------------------------ */

static void test_header_errors(void **state)
{
    (void)state;
    /* Offsets: "--b\r\n" is 5 bytes, so the first header line is at 5. */
    expect_err("b", B("--b\r\nContent-Type application/dicom\r\n\r\nx\r\n--b--"), PACS_EINVAL, "",
               "header line without a colon in part 1 (byte 5)", NULL);
    expect_err("b", B("--b\r\nContent Type: a/b\r\n\r\nx\r\n--b--"), PACS_EINVAL, "",
               "invalid character 0x20 in a header name of part 1 (byte 12)", NULL);
    expect_err("b", B("--b\r\nContent-Type : a/b\r\n\r\nx\r\n--b--"), PACS_EINVAL, "",
               "invalid character 0x20", NULL);
    expect_err("b", B("--b\r\n: a/b\r\n\r\nx\r\n--b--"), PACS_EINVAL, "", "empty header name", NULL);
    expect_err("b", B("--b\r\nContent-Type: a/b;\r\n  x=1\r\n\r\nx\r\n--b--"), PACS_EINVAL, "",
               "obsolete line folding in the headers of part 1 (byte 25)", NULL);
    expect_err("b", B("--b\r\nContent-Type: a/b\nX: y\r\n\r\nx\r\n--b--"), PACS_EINVAL, "",
               "bare LF in the headers of part 1 (byte 22)", "CRLF", NULL);
    expect_err("b", B("--b\r\nContent-Type: a/b\rX: y\r\n\r\nx\r\n--b--"), PACS_EINVAL, "",
               "CR without LF in the headers of part 1 (byte 22)", NULL);
    expect_err("b", B("--b\r\nX: a\x01z\r\n\r\nx\r\n--b--"), PACS_EINVAL, "",
               "control character 0x01 in header X of part 1 (byte 9)", NULL);
    expect_err("b", B("--b\r\nX: a\x00z\r\n\r\nx\r\n--b--"), PACS_EINVAL, "", "control character 0x00", NULL);
    expect_err("b", B("--b\r\nContent-Type: a/b\r\ncontent-type: a/b\r\n\r\nx\r\n--b--"), PACS_EINVAL, "",
               "part 1 has two Content-Type headers (byte 24)", NULL);
    expect_err("b", B("--b\r\nContent-Length: 1x\r\n\r\nx\r\n--b--"), PACS_EINVAL, "",
               "invalid Content-Length \"1x\"", NULL);
    expect_err("b", B("--b\r\nContent-Length: -1\r\n\r\nx\r\n--b--"), PACS_EINVAL, "", "invalid Content-Length", NULL);
    expect_err("b", B("--b\r\nContent-Length:\r\n\r\nx\r\n--b--"), PACS_EINVAL, "", "invalid Content-Length", NULL);
    expect_err("b", B("--b\r\nContent-Length: 18446744073709551616\r\n\r\nx\r\n--b--"), PACS_EINVAL, "",
               "invalid Content-Length", NULL);
    /* A part whose headers never end before the next boundary. */
    expect_err("b", B("--b\r\nContent-Type: a/b\r\n--b\r\n\r\nx\r\n--b--"), PACS_EINVAL, "",
               "boundary inside the headers of part 1 (byte 24)", NULL);
    /* Errors in the second part name it, with its body offset. */
    expect_err("b", B("--b\r\n\r\nok\r\n--b\r\nbad\r\n\r\nx\r\n--b--"), PACS_EINVAL, "{}ok|",
               "part 2 (byte 16)", NULL);
    /* After a boundary: junk, a lone '-', CR without LF, bare LF. */
    expect_err("b", B("--b\r\n\r\nx\r\n--bX\r\n"), PACS_EINVAL, "{}x", "boundary followed by 'X', not CRLF (byte 13)", NULL);
    expect_err("b", B("--b\r\n\r\nx\r\n--b-\r\n"), PACS_EINVAL, "{}x", "not CRLF or \"--\" (byte 14)", NULL);
    expect_err("b", B("--b\r\n\r\nx\r\n--b\rX"), PACS_EINVAL, "{}x", "CR without LF after a boundary (byte 13)", NULL);
    expect_err("b", B("--bX\r\n\r\nx\r\n--b--"), PACS_EINVAL, "", "boundary followed by 'X'", "byte 3", NULL);
    expect_err("b", B("--b\n\r\nx\r\n--b--"), PACS_EINVAL, "", "boundary followed by 0x0a", NULL);
}

static void test_content_length(void **state)
{
    (void)state;
    expect_ok("b", B("--b\r\nContent-Length: 0\r\n\r\n\r\n--b--"), "{len=0}|");
    /* Shorter than announced: found at the delimiter. */
    expect_err("b", B("--b\r\nContent-Length: 5\r\n\r\nabc\r\n--b--"), PACS_EINVAL, "{len=5}abc",
               "part 1 has 3 bytes but its Content-Length is 5", NULL);
    /* Longer: found as soon as the byte past it is known to be data. */
    expect_err("b", B("--b\r\nContent-Length: 2\r\n\r\nabcdef\r\n--b--"), PACS_EINVAL, "{len=2}ab",
               "part 1 is longer than its Content-Length of 2 (byte 28)", NULL);
    /* A CR that may start the delimiter is not counted until it is known. */
    expect_ok("b", B("--b\r\nContent-Length: 3\r\n\r\nab\r\r\n--b--"), "{len=3}ab\r|");
}

static void test_transfer_encoding(void **state)
{
    (void)state;
    expect_ok("b", B("--b\r\nContent-Transfer-Encoding: 8BIT\r\n\r\nx\r\n--b\r\n"
                     "Content-Transfer-Encoding:7bit\r\n\r\ny\r\n--b--"),
              "{cte=8BIT}x|{cte=7bit}y|");
    expect_err("b", B("--b\r\nContent-Transfer-Encoding: base64\r\n\r\neA==\r\n--b--"), PACS_EUNSUPPORTED, "",
               "Content-Transfer-Encoding \"base64\" of part 1 is not supported", NULL);
    expect_err("b", B("--b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nx\r\n--b--"),
               PACS_EUNSUPPORTED, "", "quoted-printable", NULL);
}

static void test_limits(void **state)
{
    (void)state;
    struct mp_limits lim = mp_limits_default();
    assert_int_equal(lim.max_header_bytes, 16384);
    assert_int_equal(lim.max_headers, 64);
    assert_int_equal(lim.max_parts, 100000);
    assert_int_equal(lim.max_part_size, 0);

    /* Header block: "X: 12\r\n\r\n" is 9 bytes. */
    static const char hb[] = "--b\r\nX: 12\r\n\r\nd\r\n--b--";
    lim = mp_limits_default();
    lim.max_header_bytes = 9;
    expect_err_lim("b", &lim, B(hb), 0, "{}d|", NULL);
    lim.max_header_bytes = 8;
    expect_err_lim("b", &lim, B(hb), PACS_ELIMIT, "", "headers of part 1 longer than 8 bytes (byte 13)", NULL);

    /* Header lines. */
    static const char hl[] = "--b\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\nd\r\n--b--";
    lim = mp_limits_default();
    lim.max_headers = 3;
    expect_err_lim("b", &lim, B(hl), 0, "{}d|", NULL);
    lim.max_headers = 2;
    expect_err_lim("b", &lim, B(hl), PACS_ELIMIT, "", "part 1 has more than 2 header lines (byte 17)", NULL);

    /* Parts. */
    static const char pp[] = "--b\r\n\r\n1\r\n--b\r\n\r\n2\r\n--b\r\n\r\n3\r\n--b--";
    lim = mp_limits_default();
    lim.max_parts = 3;
    expect_err_lim("b", &lim, B(pp), 0, "{}1|{}2|{}3|", NULL);
    lim.max_parts = 2;
    expect_err_lim("b", &lim, B(pp), PACS_ELIMIT, "{}1|{}2|", "more than 2 parts in the multipart body (byte 25)",
                   NULL);

    /* Part size: delivered up to the limit, then the error. */
    static const char ps[] = "--b\r\n\r\n12345\r\n--b\r\n\r\n123456\r\n--b--";
    lim = mp_limits_default();
    lim.max_part_size = 6;
    expect_err_lim("b", &lim, B(ps), 0, "{}12345|{}123456|", NULL);
    lim.max_part_size = 5;
    expect_err_lim("b", &lim, B(ps), PACS_ELIMIT, "{}12345|{}12345",
                   "part 2 is larger than the 5-byte part limit (byte 26)", NULL);
    /* A Content-Length over the limit fails at once. */
    expect_err_lim("b", &lim, B("--b\r\nContent-Length: 6\r\n\r\n123456\r\n--b--"), PACS_ELIMIT, "",
                   "part 1 announces 6 bytes, more than the 5-byte part limit", NULL);

    /* Bad limits and boundaries for mp_parser_new. */
    struct mp_parser *p = (struct mp_parser *)1;
    struct pacs_err err = { 0 };
    lim = mp_limits_default();
    lim.max_parts = 0;
    assert_int_equal(mp_parser_new("b", &lim, &p, &err), PACS_EINVAL);
    assert_null(p);
    assert_int_equal(mp_parser_new("", NULL, &p, &err), PACS_EINVAL);
    assert_int_equal(mp_parser_new(NULL, NULL, &p, &err), PACS_EINVAL);
    assert_int_equal(mp_parser_new("a\r\nb", NULL, &p, &err), PACS_EINVAL);
    mp_parser_free(NULL);
}

static void test_callback_stop(void **state)
{
    (void)state;
    static const char body[] = "--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b--";
    struct rec proto = { .stop_begin = 2 };
    struct outcome o = parse_all("b", NULL, &proto, B(body));
    assert_int_equal(o.rc, -42);
    assert_string_equal(o.trace, "{}one|{}");
    outcome_free(&o);
    /* Stopping in part_data shows the split (the first call stops), so
     * this one is parsed whole only. */
    proto = (struct rec){ .stop_data = 1 };
    o = parse_cuts("b", NULL, &proto, B(body), NULL, 0);
    assert_int_equal(o.rc, -43);
    assert_string_equal(o.trace, "{}one");
    outcome_free(&o);
    proto = (struct rec){ .stop_end = 1 };
    o = parse_all("b", NULL, &proto, B(body));
    assert_int_equal(o.rc, -44);
    assert_string_equal(o.trace, "{}one|");
    outcome_free(&o);

    /* The caller's err is left alone, also on the sticky repeat. */
    struct mp_parser *p;
    struct pacs_err err = { 0 };
    assert_int_equal(mp_parser_new("b", NULL, &p, &err), 0);
    struct rec r = { .stop_begin = 1 };
    dynbuf_init(&r.t, 0);
    err.code = 7;
    memcpy(err.msg, "mine", 5);
    assert_int_equal(mp_feed(p, B(body), &rec_cb, &r, &err), -42);
    assert_int_equal(mp_feed(p, B("more"), &rec_cb, &r, &err), -42);
    assert_int_equal(mp_finish(p, &err), -42);
    assert_string_equal(err.msg, "mine");
    dynbuf_free(&r.t);
    mp_parser_free(p);

    /* NULL callbacks are allowed; errors are sticky with their message. */
    assert_int_equal(mp_parser_new("b", NULL, &p, &err), 0);
    assert_int_equal(mp_feed(p, B("--b\r\nbad\r\n"), NULL, NULL, &err), PACS_EINVAL);
    char first[256];
    memcpy(first, err.msg, sizeof first);
    pacs_err_clear(&err);
    assert_int_equal(mp_feed(p, B("x"), NULL, NULL, &err), PACS_EINVAL);
    assert_string_equal(err.msg, first);
    assert_int_equal(mp_finish(p, &err), PACS_EINVAL);
    assert_string_equal(err.msg, first);
    mp_parser_free(p);
}

/* --- writer -------------------------------------------------------------- */

static void test_writer_roundtrip(void **state)
{
    (void)state;
    char boundary[MP_BOUNDARY_MAX + 1];
    struct pacs_err err = { 0 };
    assert_int_equal(mp_new_boundary(boundary, &err), 0);
    struct dynbuf ct, body;
    dynbuf_init(&ct, 0);
    dynbuf_init(&body, 0);
    assert_int_equal(mp_write_content_type(&ct, "application/dicom", boundary, "1.2.840.10008.1.2.1", &err), 0);
    struct mp_content_type parsed;
    assert_int_equal(mp_parse_content_type((const char *)ct.data, &parsed, &err), 0);
    assert_true(mp_is_multipart_related(&parsed));
    assert_string_equal(parsed.type, "application/dicom");
    assert_string_equal(parsed.transfer_syntax, "1.2.840.10008.1.2.1");
    assert_string_equal(parsed.boundary, boundary);

    /* Three parts, binary data with CRLF and dashes, one empty. */
    static const uint8_t d1[] = { 'D', 'I', 'C', 'M', '\r', '\n', '-', '-', 0, 0xff, '\r' };
    assert_int_equal(mp_write_part_header(&body, boundary, true, "application/dicom",
                                          "/studies/1/series/2/instances/3", sizeof d1, &err), 0);
    assert_int_equal(dynbuf_append(&body, d1, sizeof d1), 0);
    assert_int_equal(mp_write_part_header(&body, boundary, false, "application/dicom", NULL, MP_NO_LENGTH, &err), 0);
    assert_int_equal(mp_write_part_header(&body, boundary, false, "application/octet-stream", NULL, 0, &err), 0);
    assert_int_equal(mp_write_close(&body, boundary, &err), 0);

    struct dynbuf want;
    dynbuf_init(&want, 0);
    assert_int_equal(dynbuf_puts(&want, "{ct=application/dicom;len=11;loc=/studies/1/series/2/instances/3}DICM\r\n--"), 0);
    struct outcome o = parse_all(boundary, NULL, NULL, body.data, body.len);
    assert_int_equal(o.rc, 0);
    assert_int_equal(o.parts, 3);
    const char *tail = "\xff\r|{ct=application/dicom}|{ct=application/octet-stream;len=0}|";
    assert_int_equal(o.tlen, want.len + 1 + strlen(tail));
    assert_memory_equal(o.trace, want.data, want.len);
    assert_int_equal(o.trace[want.len], '\0');
    assert_memory_equal(o.trace + want.len + 1, tail, strlen(tail));
    outcome_free(&o);

    /* The exact bytes, for a fixed boundary. */
    dynbuf_reset(&body);
    assert_int_equal(mp_write_part_header(&body, "xyz", true, "application/dicom", "/a", 4, &err), 0);
    assert_int_equal(dynbuf_puts(&body, "DATA"), 0);
    assert_int_equal(mp_write_part_header(&body, "xyz", false, "application/dicom", NULL, MP_NO_LENGTH, &err), 0);
    assert_int_equal(dynbuf_puts(&body, "MORE"), 0);
    assert_int_equal(mp_write_close(&body, "xyz", &err), 0);
    assert_string_equal((const char *)body.data,
                        "--xyz\r\nContent-Type: application/dicom\r\nContent-Location: /a\r\n"
                        "Content-Length: 4\r\n\r\nDATA"
                        "\r\n--xyz\r\nContent-Type: application/dicom\r\n\r\nMORE"
                        "\r\n--xyz--\r\n");
    dynbuf_reset(&ct);
    assert_int_equal(mp_write_content_type(&ct, "application/dicom", "DICOM DATA BOUNDARY", NULL, &err), 0);
    assert_string_equal((const char *)ct.data, "multipart/related; type=\"application/dicom\"; boundary=\"DICOM DATA BOUNDARY\"");
    assert_int_equal(mp_parse_content_type((const char *)ct.data, &parsed, &err), 0);
    assert_string_equal(parsed.boundary, "DICOM DATA BOUNDARY");
    dynbuf_free(&want);
    dynbuf_free(&ct);
    dynbuf_free(&body);
}

static void test_writer_rejects(void **state)
{
    (void)state;
    struct dynbuf out;
    struct pacs_err err = { 0 };
    dynbuf_init(&out, 0);
    assert_int_equal(dynbuf_puts(&out, "keep"), 0);
    assert_int_equal(mp_write_part_header(&out, "b", true, "application/dicom\r\nX-Injected: 1", NULL, 1, &err),
                     PACS_EINVAL);
    assert_non_null(strstr(err.msg, "control character 0x0d"));
    assert_int_equal(mp_write_part_header(&out, "b", true, "a/b", "/x\n", 1, &err), PACS_EINVAL);
    assert_non_null(strstr(err.msg, "Content-Location"));
    assert_int_equal(mp_write_part_header(&out, "b", true, NULL, NULL, 1, &err), PACS_EINVAL);
    assert_int_equal(mp_write_part_header(&out, "b", true, "", NULL, 1, &err), PACS_EINVAL);
    assert_int_equal(mp_write_part_header(&out, "b\"", true, "a/b", NULL, 1, &err), PACS_EINVAL);
    assert_int_equal(mp_write_close(&out, "", &err), PACS_EINVAL);
    assert_int_equal(mp_write_content_type(&out, "dicom", "b", NULL, &err), PACS_EINVAL);
    assert_int_equal(mp_write_content_type(&out, "a/b", "b", "1.2;x", &err), PACS_EINVAL);
    assert_int_equal(mp_write_content_type(&out, "a/b", "b", "", &err), PACS_EINVAL);
    assert_int_equal(mp_write_content_type(&out, "a/b", NULL, NULL, &err), PACS_EINVAL);
    assert_string_equal((const char *)out.data, "keep");
    /* A buffer at its maximum is left as it was. */
    struct dynbuf small;
    dynbuf_init(&small, 20);
    assert_int_equal(dynbuf_puts(&small, "prefix"), 0);
    assert_int_equal(mp_write_part_header(&small, "b", true, "application/dicom", NULL, 1, &err), PACS_ELIMIT);
    assert_int_equal(small.len, 6);
    assert_string_equal((const char *)small.data, "prefix");
    assert_int_equal(mp_write_close(&small, "0123456789", &err), PACS_ELIMIT);
    assert_string_equal((const char *)small.data, "prefix");
    dynbuf_free(&small);
    dynbuf_free(&out);
}

static void test_new_boundary(void **state)
{
    (void)state;
    char a[MP_BOUNDARY_MAX + 1], b[MP_BOUNDARY_MAX + 1];
    assert_int_equal(mp_new_boundary(a, NULL), 0);
    assert_int_equal(mp_new_boundary(b, NULL), 0);
    assert_int_equal(strlen(a), 38);
    assert_memory_equal(a, "pacsd-", 6);
    assert_string_not_equal(a, b);
    assert_int_equal(mp_check_boundary(a, NULL), 0);
    for (size_t i = 6; i < 38; i++)
        assert_non_null(strchr("0123456789abcdef", a[i]));
}

/* --- bodies as clients send them ----------------------------------------- */

static void test_real_clients(void **state)
{
    (void)state;
    /* dicomweb-client (JS) storeInstances: every part opens with CRLF, the
     * close delimiter ends the body with no CRLF. */
    expect_ok("1f2e3d4c-5b6a-7980-1a2b-3c4d5e6f7a8b",
              B("\r\n--1f2e3d4c-5b6a-7980-1a2b-3c4d5e6f7a8b\r\nContent-Type: application/dicom\r\n\r\n"
                "DICOM-1"
                "\r\n--1f2e3d4c-5b6a-7980-1a2b-3c4d5e6f7a8b\r\nContent-Type: application/dicom\r\n\r\n"
                "DICOM-2"
                "\r\n--1f2e3d4c-5b6a-7980-1a2b-3c4d5e6f7a8b--"),
              "{ct=application/dicom}DICOM-1|{ct=application/dicom}DICOM-2|");
    /* Orthanc's DICOMweb plugin STOW client: a 73-character boundary,
     * Content-Length on every part, data followed by CRLF, the close
     * delimiter without a CRLF. */
    struct mp_content_type ct;
    struct pacs_err err = { 0 };
    assert_int_equal(mp_parse_content_type("multipart/related; type=\"application/dicom\"; boundary="
                                           "9b2c7c4e-32d4-4c2f-9f0e-5d1b6a7f8e90-9b2c7c4e-32d4-4c2f-9f0e-5d1b6a7f8e90",
                                           &ct, &err), 0);
    expect_ok(ct.boundary,
              B("--9b2c7c4e-32d4-4c2f-9f0e-5d1b6a7f8e90-9b2c7c4e-32d4-4c2f-9f0e-5d1b6a7f8e90\r\n"
                "Content-Type: application/dicom\r\nContent-Length: 9\r\n\r\nINSTANCE1\r\n"
                "--9b2c7c4e-32d4-4c2f-9f0e-5d1b6a7f8e90-9b2c7c4e-32d4-4c2f-9f0e-5d1b6a7f8e90\r\n"
                "Content-Type: application/dicom\r\nContent-Length: 9\r\n\r\nINSTANCE2\r\n"
                "--9b2c7c4e-32d4-4c2f-9f0e-5d1b6a7f8e90-9b2c7c4e-32d4-4c2f-9f0e-5d1b6a7f8e90--"),
              "{ct=application/dicom;len=9}INSTANCE1|{ct=application/dicom;len=9}INSTANCE2|");
    /* curl --data-binary @body with a hand-made body (the layout of the
     * PS3.18 STOW-RS examples), quoted boundary with spaces as fo-dicom
     * uses, transfer-syntax on the part. */
    assert_int_equal(mp_parse_content_type("multipart/related; type=\"application/dicom\"; "
                                           "boundary=\"DICOM DATA BOUNDARY\"", &ct, &err), 0);
    static const char fo_trace[] = "{ct=application/dicom; transfer-syntax=1.2.840.10008.1.2.1}"
                                   "\0\x01\x02\x03|";
    expect_ok_mem(ct.boundary,
                  B("--DICOM DATA BOUNDARY\r\n"
                    "Content-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1\r\n\r\n"
                    "\0\x01\x02\x03"
                    "\r\n--DICOM DATA BOUNDARY--\r\n"),
                  fo_trace, sizeof fo_trace - 1);
    /* RFC 2387 3.1: the second part is base64, which pacsd refuses after
     * delivering the first. */
    assert_int_equal(mp_parse_content_type("Multipart/Related; boundary=example-1; "
                                           "start=\"<950120.aaCC@XIson.com>\"; "
                                           "type=\"Application/X-FixedRecord\"; start-info=\"-o ps\"",
                                           &ct, &err), 0);
    expect_err(ct.boundary,
               B("--example-1\r\n"
                 "Content-Type: Application/X-FixedRecord\r\n"
                 "Content-ID: <950120.aaCC@XIson.com>\r\n"
                 "\r\n"
                 "25\r\n10\r\n34\r\n10\r\n25\r\n21\r\n26\r\n10\r\n"
                 "--example-1\r\n"
                 "Content-Type: Application/octet-stream\r\n"
                 "Content-Description: The fixed length records\r\n"
                 "Content-Transfer-Encoding: base64\r\n"
                 "Content-ID: <950120.aaCB@XIson.com>\r\n"
                 "\r\n"
                 "T2xkIE1hY0RvbmFsZCBoYWQgYSBmYXJtCkUgSS\r\n"
                 "--example-1--\r\n"),
               PACS_EUNSUPPORTED,
               "{ct=Application/X-FixedRecord;id=<950120.aaCC@XIson.com>}25\r\n10\r\n34\r\n10\r\n25\r\n21\r\n26\r\n10|",
               "base64", "part 2", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ct_basic),
        cmocka_unit_test(test_ct_quoted_boundary),
        cmocka_unit_test(test_ct_case_whitespace),
        cmocka_unit_test(test_ct_type_param),
        cmocka_unit_test(test_ct_missing_boundary),
        cmocka_unit_test(test_ct_long_boundary),
        cmocka_unit_test(test_ct_duplicates),
        cmocka_unit_test(test_ct_malformed),
        cmocka_unit_test(test_ct_not_multipart),
        cmocka_unit_test(test_zero_parts),
        cmocka_unit_test(test_one_part),
        cmocka_unit_test(test_three_parts),
        cmocka_unit_test(test_binary_lookalikes),
        cmocka_unit_test(test_preamble_epilogue),
        cmocka_unit_test(test_transport_padding),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_header_errors),
        cmocka_unit_test(test_content_length),
        cmocka_unit_test(test_transfer_encoding),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_callback_stop),
        cmocka_unit_test(test_writer_roundtrip),
        cmocka_unit_test(test_writer_rejects),
        cmocka_unit_test(test_new_boundary),
        cmocka_unit_test(test_real_clients),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
