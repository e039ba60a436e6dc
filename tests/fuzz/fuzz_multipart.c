/* libFuzzer target: multipart/related (http/multipart). The input is a
 * Content-Type value, '\n', then the body.
 * Invariants:
 * - the body parsed in one mp_feed, in chunks whose sizes come from the
 *   input, and one byte at a time gives the same result, the same message
 *   and the same callbacks with the same bytes (the streaming invariant);
 * - callbacks come in order (begin, data with n > 0, end), indexes count up;
 * - success means mp_done; every error has a message;
 * - what the writer makes of an accepted body parses back to the same parts,
 *   and an accepted Content-Type written back parses to the same values. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/multipart.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MP_FUZZ_CHECK(cond, ...)                                       \
    do {                                                               \
        if (!(cond)) {                                                 \
            fprintf(stderr, "fuzz invariant broken: " __VA_ARGS__);    \
            fprintf(stderr, "\n");                                     \
            abort();                                                   \
        }                                                              \
    } while (0)

#define FUZZ_MAX_PARTS 64

struct part {
    char *ct, *loc;
    bool has_len;
    uint64_t len;
    size_t data_off, data_len;
};

struct rec {
    struct dynbuf trace; /* events: 0x01 header record, data escaped, 0x02 end */
    struct dynbuf data;  /* every part's bytes, back to back */
    struct part parts[FUZZ_MAX_PARTS];
    size_t nparts;
    bool in_part;
    size_t stop_begin; /* part_begin of this part (1-based) returns -42; 0 = never */
};

static void rec_init(struct rec *r, size_t stop_begin)
{
    memset(r, 0, sizeof *r);
    dynbuf_init(&r->trace, 0);
    dynbuf_init(&r->data, 0);
    r->stop_begin = stop_begin;
}

static void rec_free(struct rec *r)
{
    for (size_t i = 0; i < r->nparts; i++) {
        free(r->parts[i].ct);
        free(r->parts[i].loc);
    }
    dynbuf_free(&r->trace);
    dynbuf_free(&r->data);
}

static char *dup_or_null(const char *s)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    MP_FUZZ_CHECK(d != NULL, "out of memory");
    return d;
}

static void put_str(struct dynbuf *t, const char *s)
{
    /* Header values hold no control characters, so 0x01..0x03 cannot
     * appear: the record is unambiguous. */
    int rc = s ? dynbuf_printf(t, "+%zu:%s", strlen(s), s) : dynbuf_putc(t, '-');
    MP_FUZZ_CHECK(rc == 0, "out of memory");
    for (const char *q = s; q && *q; q++)
        MP_FUZZ_CHECK((unsigned char)*q >= 0x20 || *q == '\t', "control character in a header value");
}

static int rec_begin(void *ctx, const struct mp_part_headers *h)
{
    struct rec *r = ctx;
    MP_FUZZ_CHECK(!r->in_part, "part_begin inside a part");
    MP_FUZZ_CHECK(h->index == r->nparts, "part index %zu, expected %zu", h->index, r->nparts);
    MP_FUZZ_CHECK(r->nparts < FUZZ_MAX_PARTS, "more parts than max_parts");
    MP_FUZZ_CHECK(dynbuf_printf(&r->trace, "\x01%zu@%" PRIu64, h->index, h->offset) == 0, "out of memory");
    put_str(&r->trace, h->content_type);
    put_str(&r->trace, h->content_location);
    put_str(&r->trace, h->content_id);
    put_str(&r->trace, h->content_transfer_encoding);
    if (h->has_content_length)
        MP_FUZZ_CHECK(dynbuf_printf(&r->trace, "L%" PRIu64, h->content_length) == 0, "out of memory");
    struct part *p = &r->parts[r->nparts++];
    p->ct = dup_or_null(h->content_type);
    p->loc = dup_or_null(h->content_location);
    p->has_len = h->has_content_length;
    p->len = h->content_length;
    p->data_off = r->data.len;
    p->data_len = 0;
    r->in_part = true;
    return r->nparts == r->stop_begin ? -42 : 0;
}

static int rec_data(void *ctx, const uint8_t *d, size_t n)
{
    struct rec *r = ctx;
    MP_FUZZ_CHECK(r->in_part, "part_data outside a part");
    MP_FUZZ_CHECK(n > 0, "empty part_data");
    for (size_t i = 0; i < n; i++) {
        if (d[i] >= 1 && d[i] <= 3)
            MP_FUZZ_CHECK(dynbuf_putc(&r->trace, 3) == 0, "out of memory");
        MP_FUZZ_CHECK(dynbuf_putc(&r->trace, (char)d[i]) == 0, "out of memory");
    }
    MP_FUZZ_CHECK(dynbuf_append(&r->data, d, n) == 0, "out of memory");
    r->parts[r->nparts - 1].data_len += n;
    return 0;
}

static int rec_end(void *ctx)
{
    struct rec *r = ctx;
    MP_FUZZ_CHECK(r->in_part, "part_end outside a part");
    r->in_part = false;
    const struct part *p = &r->parts[r->nparts - 1];
    MP_FUZZ_CHECK(!p->has_len || p->len == p->data_len, "part ended with %zu bytes, Content-Length %" PRIu64,
                  p->data_len, p->len);
    MP_FUZZ_CHECK(dynbuf_putc(&r->trace, 2) == 0, "out of memory");
    return 0;
}

static const struct mp_callbacks rec_cb = { rec_begin, rec_data, rec_end };

struct run {
    int rc;
    struct pacs_err err;
    size_t count;
    bool done;
};

/* mode 0: whole; 1: chunk sizes from an LCG seeded with seed; 2: bytewise. */
static struct run run_parser(const char *boundary, const struct mp_limits *lim, const uint8_t *body,
                             size_t n, int mode, uint32_t seed, struct rec *r)
{
    struct run out = { 0 };
    struct mp_parser *p = NULL;
    int rc = mp_parser_new(boundary, lim, &p, &out.err);
    MP_FUZZ_CHECK(rc == 0, "parser_new refused an accepted boundary: %s", out.err.msg);
    size_t off = 0;
    uint32_t x = seed | 1;
    unsigned spread = 1 + seed % 97;
    while (off < n && rc == 0) {
        size_t chunk = n - off;
        if (mode == 1) {
            x = x * 1103515245u + 12345u;
            chunk = 1 + (x >> 16) % spread;
        } else if (mode == 2) {
            chunk = 1;
        }
        if (chunk > n - off)
            chunk = n - off;
        rc = mp_feed(p, body + off, chunk, &rec_cb, r, &out.err);
        off += chunk;
    }
    if (mode == 1 && rc == 0)
        rc = mp_feed(p, body + n, 0, &rec_cb, r, &out.err); /* empty feeds are harmless */
    if (rc == 0)
        rc = mp_finish(p, &out.err);
    else
        MP_FUZZ_CHECK(mp_finish(p, NULL) == rc, "error not sticky");
    out.rc = rc;
    out.count = mp_part_count(p);
    out.done = mp_done(p);
    if (rc == 0)
        MP_FUZZ_CHECK(out.done, "success without the close delimiter");
    if (rc != 0 && rc != -42)
        MP_FUZZ_CHECK(out.err.msg[0] != '\0', "error %d without a message", rc);
    mp_parser_free(p);
    return out;
}

static void same(const struct run *a, const struct rec *ra, const struct run *b, const struct rec *rb,
                 const char *how)
{
    MP_FUZZ_CHECK(a->rc == b->rc, "%s: rc %d (%s) vs whole %d (%s)", how, b->rc, b->err.msg, a->rc, a->err.msg);
    if (a->rc != -42)
        MP_FUZZ_CHECK(strcmp(a->err.msg, b->err.msg) == 0, "%s: message \"%s\" vs whole \"%s\"", how,
                      b->err.msg, a->err.msg);
    MP_FUZZ_CHECK(a->count == b->count && a->done == b->done, "%s: part count or done differs", how);
    MP_FUZZ_CHECK(ra->trace.len == rb->trace.len &&
                  (ra->trace.len == 0 || memcmp(ra->trace.data, rb->trace.data, ra->trace.len) == 0),
                  "%s: callbacks or bytes differ", how);
}

static bool streq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Writes the parts back with the writer and parses the result. */
static void check_rewrite(const struct rec *r)
{
    for (size_t i = 0; i < r->nparts; i++)
        if (!r->parts[i].ct || !*r->parts[i].ct)
            return; /* the writer requires a Content-Type */
    /* A boundary that occurs in no part: deterministic, unlike a random one. */
    char boundary[32];
    for (unsigned k = 0;; k++) {
        int len = snprintf(boundary, sizeof boundary, "rewrite%u", k);
        MP_FUZZ_CHECK(len > 0 && (size_t)len < sizeof boundary, "boundary");
        char delim[40];
        len = snprintf(delim, sizeof delim, "\r\n--%s", boundary);
        MP_FUZZ_CHECK(len > 0 && (size_t)len < sizeof delim, "delimiter");
        bool clash = false;
        for (size_t i = 0; i < r->nparts && !clash; i++)
            clash = r->parts[i].data_len &&
                    memmem(r->data.data + r->parts[i].data_off, r->parts[i].data_len, delim, (size_t)len);
        if (!clash)
            break;
    }
    struct dynbuf body;
    struct pacs_err err = { 0 };
    dynbuf_init(&body, 0);
    for (size_t i = 0; i < r->nparts; i++) {
        const struct part *p = &r->parts[i];
        int rc = mp_write_part_header(&body, boundary, i == 0, p->ct, p->loc,
                                      p->has_len ? p->len : MP_NO_LENGTH, &err);
        MP_FUZZ_CHECK(rc == 0, "writer refused parsed headers: %s", err.msg);
        if (p->data_len) /* r->data.data is NULL while every part is empty */
            MP_FUZZ_CHECK(dynbuf_append(&body, r->data.data + p->data_off, p->data_len) == 0,
                          "out of memory");
    }
    MP_FUZZ_CHECK(mp_write_close(&body, boundary, &err) == 0, "close: %s", err.msg);
    struct rec back;
    rec_init(&back, 0);
    struct mp_limits lim = mp_limits_default();
    lim.max_parts = FUZZ_MAX_PARTS;
    struct run res = run_parser(boundary, &lim, body.data, body.len, 0, 0, &back);
    MP_FUZZ_CHECK(res.rc == 0, "rewritten body does not parse: %s", res.err.msg);
    MP_FUZZ_CHECK(back.nparts == r->nparts, "rewritten body has %zu parts, not %zu", back.nparts, r->nparts);
    for (size_t i = 0; i < r->nparts; i++) {
        const struct part *a = &r->parts[i], *b = &back.parts[i];
        MP_FUZZ_CHECK(streq(a->ct, b->ct) && streq(a->loc, b->loc) && a->has_len == b->has_len &&
                      a->len == b->len && a->data_len == b->data_len &&
                      (a->data_len == 0 || memcmp(r->data.data + a->data_off, back.data.data + b->data_off,
                                                  a->data_len) == 0),
                      "rewritten part %zu differs", i);
    }
    rec_free(&back);
    dynbuf_free(&body);
}

static void check_content_type(const struct mp_content_type *ct)
{
    for (const char *q = ct->media_type; *q; q++)
        MP_FUZZ_CHECK(!(*q >= 'A' && *q <= 'Z'), "media type not lower case");
    if (ct->boundary[0])
        MP_FUZZ_CHECK(mp_check_boundary(ct->boundary, NULL) == 0, "accepted boundary fails mp_check_boundary");
    if (!ct->boundary[0] || strlen(ct->boundary) > MP_BOUNDARY_MAX)
        return;
    struct dynbuf out;
    struct pacs_err err = { 0 };
    dynbuf_init(&out, 0);
    const char *type = ct->type[0] ? ct->type : "application/dicom";
    const char *ts = ct->transfer_syntax[0] ? ct->transfer_syntax : NULL;
    if (mp_write_content_type(&out, type, ct->boundary, ts, &err) == 0) {
        struct mp_content_type back;
        MP_FUZZ_CHECK(mp_parse_content_type((const char *)out.data, &back, &err) == 0,
                      "written Content-Type does not parse: %s", err.msg);
        MP_FUZZ_CHECK(strcmp(back.boundary, ct->boundary) == 0 && strcmp(back.type, type) == 0 &&
                      strcmp(back.transfer_syntax, ts ? ts : "") == 0 && mp_is_multipart_related(&back),
                      "written Content-Type reads back differently");
    } else {
        MP_FUZZ_CHECK(err.msg[0] != '\0', "writer error without a message");
    }
    dynbuf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    if (!nl)
        return 0;
    size_t hlen = (size_t)(nl - data);
    char *header = malloc(hlen + 1);
    MP_FUZZ_CHECK(header != NULL, "out of memory");
    memcpy(header, data, hlen);
    header[hlen] = '\0';
    const uint8_t *body = nl + 1;
    size_t n = size - hlen - 1;

    struct mp_content_type ct;
    struct pacs_err err = { 0 };
    if (mp_parse_content_type(header, &ct, &err) != 0) {
        MP_FUZZ_CHECK(err.msg[0] != '\0', "Content-Type error without a message");
        MP_FUZZ_CHECK(ct.boundary[0] == '\0' && ct.media_type[0] == '\0', "Content-Type left filled on error");
        goto out;
    }
    check_content_type(&ct);
    if (!ct.boundary[0])
        goto out;

    /* FNV-1a of the header line picks the limits and the chunking, so a
     * mutation of the body keeps them and one of the header moves them. */
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < hlen; i++)
        h = (h ^ data[i]) * 16777619u;
    struct mp_limits lim = mp_limits_default();
    lim.max_parts = FUZZ_MAX_PARTS;
    if (h % 4 == 0) {
        lim.max_header_bytes = 1 + (h >> 2) % 256;
        lim.max_headers = 1 + (h >> 10) % 8;
        lim.max_parts = 1 + (h >> 13) % 8;
        lim.max_part_size = (h >> 16) % 2 ? 1 + (h >> 17) % 64 : 0;
    }
    size_t stop_begin = h % 16 == 5 ? 2 : 0;

    struct rec whole, chunked, bytewise;
    rec_init(&whole, stop_begin);
    rec_init(&chunked, stop_begin);
    rec_init(&bytewise, stop_begin);
    struct run a = run_parser(ct.boundary, &lim, body, n, 0, 0, &whole);
    struct run b = run_parser(ct.boundary, &lim, body, n, 1, h, &chunked);
    same(&a, &whole, &b, &chunked, "chunked");
    struct run c = run_parser(ct.boundary, &lim, body, n, 2, 0, &bytewise);
    same(&a, &whole, &c, &bytewise, "bytewise");
    if (a.rc == 0)
        check_rewrite(&whole);
    rec_free(&whole);
    rec_free(&chunked);
    rec_free(&bytewise);
out:
    free(header);
    return 0;
}
