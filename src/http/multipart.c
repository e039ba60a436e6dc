/* multipart.c - multipart/related codec; the contract is in multipart.h. */
#include "http/multipart.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/types.h>

/* --- character classes --------------------------------------------------- */

static bool is_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* RFC 7230 3.2.6 tchar. */
static bool is_tchar(unsigned char c)
{
    return is_alnum(c) || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* RFC 2046 bchars. */
static bool is_bchar(unsigned char c)
{
    return is_alnum(c) || (c != '\0' && strchr("'()+_,-./:=? ", c) != NULL);
}

static bool is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* Control characters other than HT (RFC 7230 field-value excludes them). */
static bool is_ctl(unsigned char c)
{
    return (c < 0x20 && c != '\t') || c == 0x7f;
}

static char to_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* "'x'" for a visible character, "0xNN" otherwise, for messages. */
static const char *char_name(unsigned char c, char out[8])
{
    static const char hex[] = "0123456789abcdef";
    if (c > 0x20 && c < 0x7f) {
        out[0] = '\'';
        out[1] = (char)c;
        out[2] = '\'';
        out[3] = '\0';
    } else {
        out[0] = '0';
        out[1] = 'x';
        out[2] = hex[c >> 4];
        out[3] = hex[c & 15];
        out[4] = '\0';
    }
    return out;
}

/* --- boundary ------------------------------------------------------------ */

static int check_boundary(const char *b, size_t len, size_t max, struct pacs_err *err)
{
    char cn[8];
    if (len == 0)
        return pacs_err_set(err, PACS_EINVAL, "empty multipart boundary");
    if (len > max)
        return pacs_err_set(err, max == MP_BOUNDARY_MAX ? PACS_EINVAL : PACS_ELIMIT,
                            "multipart boundary longer than %zu characters", max);
    for (size_t i = 0; i < len; i++)
        if (!is_bchar((unsigned char)b[i]))
            return pacs_err_set(err, PACS_EINVAL,
                                "multipart boundary contains %s, which RFC 2046 does not allow",
                                char_name((unsigned char)b[i], cn));
    if (b[len - 1] == ' ')
        return pacs_err_set(err, PACS_EINVAL, "multipart boundary ends with a space (RFC 2046)");
    return 0;
}

int mp_check_boundary(const char *boundary, struct pacs_err *err)
{
    if (!boundary)
        return pacs_err_set(err, PACS_EINVAL, "no multipart boundary");
    return check_boundary(boundary, strnlen(boundary, MP_BOUNDARY_ACCEPT_MAX + 1),
                          MP_BOUNDARY_ACCEPT_MAX, err);
}

/* --- Content-Type -------------------------------------------------------- */

enum ct_param { CT_OTHER, CT_BOUNDARY, CT_TYPE, CT_START, CT_TS, CT_NPARAMS };

static const char *const ct_param_names[CT_NPARAMS] = {
    [CT_BOUNDARY] = "boundary",
    [CT_TYPE] = "type",
    [CT_START] = "start",
    [CT_TS] = "transfer-syntax",
};

/* Reads one parameter value at h[*i] (quoted-string or lenient token) into
 * dst (NUL-terminated, at most cap - 1 bytes; dst NULL discards it). */
static int read_param_value(const char *h, size_t *i, char *dst, size_t cap, const char *name,
                            int namelen, size_t *outlen, struct pacs_err *err)
{
    size_t k = *i, len = 0;
    char cn[8];
    bool quoted = h[k] == '"';
    if (quoted) {
        for (k++;; k++) {
            unsigned char c = (unsigned char)h[k];
            if (c == '\0')
                return pacs_err_set(err, PACS_EINVAL,
                                    "unterminated quoted string in Content-Type parameter \"%.*s\"",
                                    namelen, name);
            if (c == '"') {
                k++;
                break;
            }
            if (c == '\\') {
                c = (unsigned char)h[++k];
                if (c == '\0')
                    return pacs_err_set(err, PACS_EINVAL,
                                        "unterminated quoted string in Content-Type parameter \"%.*s\"",
                                        namelen, name);
            }
            if (is_ctl(c))
                return pacs_err_set(err, PACS_EINVAL,
                                    "control character %s in Content-Type parameter \"%.*s\"",
                                    char_name(c, cn), namelen, name);
            if (dst) {
                if (len + 1 >= cap)
                    goto too_long;
                dst[len] = (char)c;
            }
            len++;
        }
    } else {
        for (;; k++) {
            unsigned char c = (unsigned char)h[k];
            if (c == '\0' || c == ';' || is_ows(c))
                break;
            if (c == '"' || c == '\\' || c < 0x21 || c > 0x7e)
                return pacs_err_set(err, PACS_EINVAL,
                                    "invalid character %s in the value of Content-Type parameter "
                                    "\"%.*s\" (character %zu; quote the value)",
                                    char_name(c, cn), namelen, name, k);
            if (dst) {
                if (len + 1 >= cap)
                    goto too_long;
                dst[len] = (char)c;
            }
            len++;
        }
        if (len == 0)
            return pacs_err_set(err, PACS_EINVAL, "Content-Type parameter \"%.*s\" has no value",
                                namelen, name);
    }
    if (dst)
        dst[len] = '\0';
    *i = k;
    *outlen = len;
    return 0;
too_long:
    return pacs_err_set(err, PACS_ELIMIT, "Content-Type parameter \"%.*s\" longer than %zu characters",
                        namelen, name, cap - 1);
}

/* type "/" subtype, both tokens. */
static bool is_media_type(const char *s)
{
    size_t i = 0;
    while (is_tchar((unsigned char)s[i]))
        i++;
    if (i == 0 || s[i] != '/')
        return false;
    size_t j = ++i;
    while (is_tchar((unsigned char)s[i]))
        i++;
    return i > j && s[i] == '\0';
}

int mp_parse_content_type(const char *h, struct mp_content_type *out, struct pacs_err *err)
{
    int rc = 0;
    char cn[8];
    memset(out, 0, sizeof *out);
    if (!h)
        return pacs_err_set(err, PACS_EINVAL, "no Content-Type");
    size_t i = 0;
    while (is_ows((unsigned char)h[i]))
        i++;
    size_t t0 = i;
    while (is_tchar((unsigned char)h[i]))
        i++;
    if (i == t0) {
        rc = h[i] ? pacs_err_set(err, PACS_EINVAL, "Content-Type does not start with a media type "
                                                   "(%s at character %zu)", char_name((unsigned char)h[i], cn), i)
                  : pacs_err_set(err, PACS_EINVAL, "empty Content-Type");
        goto out;
    }
    if (h[i] != '/') {
        rc = pacs_err_set(err, PACS_EINVAL, "media type \"%.*s\" in Content-Type has no subtype",
                          (int)(i - t0 > 64 ? 64 : i - t0), h + t0);
        goto out;
    }
    size_t s0 = ++i;
    while (is_tchar((unsigned char)h[i]))
        i++;
    if (i == s0) {
        rc = pacs_err_set(err, PACS_EINVAL, "media type \"%.*s/\" in Content-Type has no subtype",
                          (int)(s0 - 1 - t0 > 64 ? 64 : s0 - 1 - t0), h + t0);
        goto out;
    }
    if (i - t0 > MP_MEDIA_TYPE_MAX) {
        rc = pacs_err_set(err, PACS_ELIMIT, "media type in Content-Type longer than %d characters",
                          MP_MEDIA_TYPE_MAX);
        goto out;
    }
    for (size_t k = t0; k < i; k++)
        out->media_type[k - t0] = to_lower(h[k]);

    unsigned seen = 0;
    for (;;) {
        while (is_ows((unsigned char)h[i]))
            i++;
        if (h[i] == '\0')
            break;
        if (h[i] != ';') {
            rc = pacs_err_set(err, PACS_EINVAL, "unexpected %s at character %zu of Content-Type "
                                                "(expected ';')", char_name((unsigned char)h[i], cn), i);
            goto out;
        }
        i++;
        while (is_ows((unsigned char)h[i]))
            i++;
        if (h[i] == '\0' || h[i] == ';')
            continue; /* empty parameter: RFC 9110 8.3.1 allows it */
        size_t n0 = i;
        while (is_tchar((unsigned char)h[i]))
            i++;
        if (i == n0) {
            rc = pacs_err_set(err, PACS_EINVAL, "invalid character %s at character %zu of Content-Type "
                                                "(expected a parameter name)",
                              char_name((unsigned char)h[i], cn), i);
            goto out;
        }
        const char *name = h + n0;
        size_t nlen = i - n0;
        int shown = (int)(nlen > 40 ? 40 : nlen);
        while (is_ows((unsigned char)h[i]))
            i++;
        if (h[i] != '=') {
            rc = pacs_err_set(err, PACS_EINVAL, "Content-Type parameter \"%.*s\" has no value",
                              shown, name);
            goto out;
        }
        i++;
        while (is_ows((unsigned char)h[i]))
            i++;
        enum ct_param which = CT_OTHER;
        for (int k = CT_BOUNDARY; k < CT_NPARAMS; k++)
            if (strlen(ct_param_names[k]) == nlen && strncasecmp(name, ct_param_names[k], nlen) == 0)
                which = (enum ct_param)k;
        char *dst = NULL;
        size_t cap = 0;
        switch (which) {
        case CT_BOUNDARY: dst = out->boundary; cap = sizeof out->boundary; break;
        case CT_TYPE: dst = out->type; cap = sizeof out->type; break;
        case CT_START: dst = out->start; cap = sizeof out->start; break;
        case CT_TS: dst = out->transfer_syntax; cap = sizeof out->transfer_syntax; break;
        case CT_OTHER: case CT_NPARAMS: break;
        }
        if (which != CT_OTHER && (seen & (1u << which))) {
            rc = pacs_err_set(err, PACS_EINVAL, "Content-Type has the %s parameter twice",
                              ct_param_names[which]);
            goto out;
        }
        seen |= 1u << which;
        size_t vlen = 0;
        rc = read_param_value(h, &i, dst, cap, name, shown, &vlen, err);
        if (rc == PACS_ELIMIT && which == CT_BOUNDARY)
            rc = pacs_err_set(err, PACS_ELIMIT, "multipart boundary longer than %d characters",
                              MP_BOUNDARY_ACCEPT_MAX);
        if (rc)
            goto out;
        if (which != CT_OTHER && vlen == 0) {
            rc = pacs_err_set(err, PACS_EINVAL, "Content-Type parameter %s is empty",
                              ct_param_names[which]);
            goto out;
        }
        if (which == CT_BOUNDARY) {
            rc = check_boundary(out->boundary, vlen, MP_BOUNDARY_ACCEPT_MAX, err);
            if (rc)
                goto out;
        } else if (which == CT_TYPE) {
            for (size_t k = 0; k < vlen; k++)
                out->type[k] = to_lower(out->type[k]);
            if (!is_media_type(out->type)) {
                rc = pacs_err_set(err, PACS_EINVAL, "type parameter \"%.64s\" is not a media type "
                                                    "(type/subtype)", out->type);
                goto out;
            }
        }
    }
    if (strncmp(out->media_type, "multipart/", 10) == 0 && out->boundary[0] == '\0')
        rc = pacs_err_set(err, PACS_EINVAL, "%s without a boundary", out->media_type);
out:
    if (rc)
        memset(out, 0, sizeof *out);
    return rc;
}

bool mp_is_multipart_related(const struct mp_content_type *ct)
{
    return strcmp(ct->media_type, "multipart/related") == 0;
}

/* --- streaming parser ---------------------------------------------------- */

/* States and edges (convention 7). "Delimiter" is CRLF "--" boundary; the
 * parser starts with a virtual CRLF held back, so a body opening with
 * "--" boundary matches too.
 *
 * state          event                        action, next state
 * PREAMBLE       delimiter                    drop bytes before it; AFTER_BOUNDARY
 * BODY           delimiter                    bytes before it to part_data; AFTER_BOUNDARY
 * PREAMBLE/BODY  possible delimiter start at  keep it (< delimiter length) for the
 *                the end of the input         next feed
 * AFTER_BOUNDARY '-'                          CLOSE_DASH
 *                SP / HT                      PADDING
 *                CR                           BOUNDARY_CR
 *                other                        error
 * CLOSE_DASH     '-'                          end the open part; EPILOGUE
 *                other                        error
 * PADDING        SP / HT                      stay
 *                CR                           BOUNDARY_CR
 *                other                        error
 * BOUNDARY_CR    LF                           end the open part, start a new one; HEADERS
 *                other                        error
 * HEADERS        CRLF-terminated line         check and record it; stay
 *                empty line                   part_begin; BODY
 * EPILOGUE       anything                     ignored
 * FAILED         anything                     the first error again
 */
enum mp_state {
    MP_PREAMBLE,
    MP_BODY,
    MP_AFTER_BOUNDARY,
    MP_CLOSE_DASH,
    MP_PADDING,
    MP_BOUNDARY_CR,
    MP_HEADERS,
    MP_EPILOGUE,
    MP_FAILED,
};

#define MP_DELIM_MAX (4 + MP_BOUNDARY_ACCEPT_MAX)

enum mp_hdr { H_TYPE, H_LENGTH, H_LOCATION, H_ID, H_CTE, H_COUNT };

static const char *const mp_hdr_names[H_COUNT] = {
    "Content-Type", "Content-Length", "Content-Location", "Content-ID",
    "Content-Transfer-Encoding",
};

struct mp_parser {
    enum mp_state state;
    struct mp_limits lim;
    uint8_t delim[MP_DELIM_MAX]; /* CRLF "--" boundary */
    size_t dlen;
    uint8_t held[MP_DELIM_MAX];  /* a proper prefix of delim seen at the end of the last feed */
    size_t hlen;
    uint64_t off;                /* body bytes taken so far: the offset of the next one */
    size_t nparts;               /* parts started */
    bool part_open;              /* part_begin called, part_end not yet */
    uint64_t part_bytes;         /* data bytes of the open part so far */
    uint64_t part_cap;           /* most data bytes it may have; UINT64_MAX = none */
    bool has_len;
    uint64_t want_len;
    /* Header block of the part being started. */
    struct dynbuf hdr;
    uint64_t hdr_off;            /* body offset of hdr.data[0] */
    size_t hcount;               /* header-block bytes seen */
    size_t line_start;           /* offset in hdr of the line being read */
    size_t nheaders;
    bool prev_cr;
    size_t hv[H_COUNT];          /* value offset in hdr + 1; 0 = absent */
    /* Sticky failure. */
    int fail_rc;
    bool fail_by_callback;
    struct pacs_err fail;
};

struct mp_limits mp_limits_default(void)
{
    struct mp_limits l = {
        .max_header_bytes = MP_DEFAULT_MAX_HEADER_BYTES,
        .max_headers = MP_DEFAULT_MAX_HEADERS,
        .max_parts = MP_DEFAULT_MAX_PARTS,
        .max_part_size = 0,
    };
    return l;
}

int mp_parser_new(const char *boundary, const struct mp_limits *lim, struct mp_parser **out,
                  struct pacs_err *err)
{
    *out = NULL;
    int rc = mp_check_boundary(boundary, err);
    if (rc)
        return rc;
    struct mp_limits l = lim ? *lim : mp_limits_default();
    if (l.max_header_bytes == 0 || l.max_headers == 0 || l.max_parts == 0)
        return pacs_err_set(err, PACS_EINVAL,
                            "multipart limits: max_header_bytes, max_headers and max_parts must be > 0");
    struct mp_parser *p = calloc(1, sizeof *p);
    if (!p)
        return pacs_err_set(err, PACS_ENOMEM, "out of memory for a multipart parser");
    p->state = MP_PREAMBLE;
    p->lim = l;
    size_t blen = strlen(boundary);
    memcpy(p->delim, "\r\n--", 4);
    memcpy(p->delim + 4, boundary, blen);
    p->dlen = 4 + blen;
    /* The virtual CRLF: "--boundary" at byte 0 is a delimiter too. */
    memcpy(p->held, "\r\n", 2);
    p->hlen = 2;
    dynbuf_init(&p->hdr, l.max_header_bytes);
    *out = p;
    return 0;
}

void mp_parser_free(struct mp_parser *p)
{
    if (!p)
        return;
    dynbuf_free(&p->hdr);
    free(p);
}

bool mp_done(const struct mp_parser *p)
{
    return p->state == MP_EPILOGUE;
}

size_t mp_part_count(const struct mp_parser *p)
{
    return p->nparts;
}

/* Marks a callback's non-zero return. */
static int cb_stop(struct mp_parser *p, int rc)
{
    p->fail_by_callback = true;
    return rc;
}

/* Hands part data to the caller, enforcing the part's cap (max_part_size
 * or its Content-Length): bytes up to the cap are delivered, then the
 * error, so every split of the input stops at the same byte. at is the
 * body offset of d[0]. Preamble bytes are dropped. */
static int emit(struct mp_parser *p, const uint8_t *d, size_t n, uint64_t at,
                const struct mp_callbacks *cb, void *ctx)
{
    if (n == 0 || p->state != MP_BODY)
        return 0;
    size_t give = n;
    if (n > p->part_cap - p->part_bytes)
        give = (size_t)(p->part_cap - p->part_bytes);
    if (give) {
        p->part_bytes += give;
        if (cb && cb->part_data) {
            int rc = cb->part_data(ctx, d, give);
            if (rc)
                return cb_stop(p, rc);
        }
    }
    if (give == n)
        return 0;
    if (p->has_len && p->want_len == p->part_cap)
        return pacs_err_set(&p->fail, PACS_EINVAL,
                            "part %zu is longer than its Content-Length of %" PRIu64
                            " (byte %" PRIu64 ")", p->nparts, p->want_len, at + give);
    return pacs_err_set(&p->fail, PACS_ELIMIT,
                        "part %zu is larger than the %" PRIu64 "-byte part limit (byte %" PRIu64 ")",
                        p->nparts, p->lim.max_part_size, at + give);
}

/* The first i in the last dlen - 1 bytes of in where a delimiter may start
 * and run past the end (in[i..n) is a prefix of it); n when there is none. */
static size_t partial_start(const struct mp_parser *p, const uint8_t *in, size_t n)
{
    size_t from = n >= p->dlen ? n - p->dlen + 1 : 0;
    for (size_t i = from; i < n; i++)
        if (in[i] == '\r' && memcmp(in + i, p->delim, n - i) == 0)
            return i;
    return n;
}

/* PREAMBLE and BODY: looks for the delimiter in held ++ in[0..n). Sets
 * *used to the input bytes taken and *found when the delimiter (now
 * consumed) was seen; otherwise all input is taken and a possible
 * delimiter start is kept in held. */
static int scan(struct mp_parser *p, const uint8_t *in, size_t n, size_t *used, bool *found,
                const struct mp_callbacks *cb, void *ctx)
{
    const size_t L = p->dlen;
    int rc;
    *found = false;
    if (p->hlen) {
        /* held is a prefix of the delimiter, whose only CR is its first
         * byte (bchars have none), so a delimiter running through held can
         * only start at held[0]. */
        size_t h = p->hlen, need = L - h, m = n < need ? n : need;
        if (memcmp(in, p->delim + h, m) == 0) {
            *used = m;
            if (m == need) {
                p->hlen = 0;
                *found = true;
            } else { /* m == n: still a prefix, wait for more */
                memcpy(p->held + h, in, m);
                p->hlen += m;
            }
            return 0;
        }
        /* Not a delimiter: held was data. Offsets only matter in BODY,
         * where held bytes are real (the virtual CRLF is preamble). */
        rc = emit(p, p->held, h, p->off - h, cb, ctx);
        if (rc)
            return rc;
        p->hlen = 0;
    }
    const uint8_t *hit = memmem(in, n, p->delim, L);
    if (hit) {
        size_t i = (size_t)(hit - in);
        rc = emit(p, in, i, p->off, cb, ctx);
        if (rc)
            return rc;
        *used = i + L;
        *found = true;
        return 0;
    }
    size_t i = partial_start(p, in, n);
    rc = emit(p, in, i, p->off, cb, ctx);
    if (rc)
        return rc;
    memcpy(p->held, in + i, n - i);
    p->hlen = n - i;
    *used = n;
    return 0;
}

/* Closes the open part (if any) after its delimiter line was checked. */
static int end_part(struct mp_parser *p, const struct mp_callbacks *cb, void *ctx)
{
    if (!p->part_open)
        return 0;
    p->part_open = false;
    if (p->has_len && p->part_bytes != p->want_len)
        return pacs_err_set(&p->fail, PACS_EINVAL,
                            "part %zu has %" PRIu64 " bytes but its Content-Length is %" PRIu64,
                            p->nparts, p->part_bytes, p->want_len);
    if (cb && cb->part_end) {
        int rc = cb->part_end(ctx);
        if (rc)
            return cb_stop(p, rc);
    }
    return 0;
}

static int start_part(struct mp_parser *p, uint64_t at)
{
    if (p->nparts >= p->lim.max_parts)
        return pacs_err_set(&p->fail, PACS_ELIMIT,
                            "more than %zu parts in the multipart body (byte %" PRIu64 ")",
                            p->lim.max_parts, at);
    p->nparts++;
    dynbuf_reset(&p->hdr);
    p->hdr_off = at;
    p->hcount = 0;
    p->line_start = 0;
    p->nheaders = 0;
    p->prev_cr = false;
    memset(p->hv, 0, sizeof p->hv);
    p->has_len = false;
    p->want_len = 0;
    return 0;
}

static bool value_is(const char *v, const char *word)
{
    return strcasecmp(v, word) == 0;
}

/* Checks the header line hdr.data[s..e) (CRLF excluded) and records the
 * headers pacsd reads. */
static int header_line(struct mp_parser *p, size_t s, size_t e)
{
    char *d = (char *)p->hdr.data;
    uint64_t at = p->hdr_off + s;
    char cn[8];
    if (p->nheaders >= p->lim.max_headers)
        return pacs_err_set(&p->fail, PACS_ELIMIT,
                            "part %zu has more than %zu header lines (byte %" PRIu64 ")",
                            p->nparts, p->lim.max_headers, at);
    p->nheaders++;
    if (is_ows((unsigned char)d[s]))
        return pacs_err_set(&p->fail, PACS_EINVAL,
                            "obsolete line folding in the headers of part %zu (byte %" PRIu64 ")",
                            p->nparts, at);
    if (e - s >= 2 && d[s] == '-' && d[s + 1] == '-' && e - s - 2 >= p->dlen - 4 &&
        memcmp(d + s + 2, p->delim + 4, p->dlen - 4) == 0)
        return pacs_err_set(&p->fail, PACS_EINVAL,
                            "boundary inside the headers of part %zu (byte %" PRIu64
                            "): no empty line ended them", p->nparts, at);
    const char *colon = memchr(d + s, ':', e - s);
    if (!colon)
        return pacs_err_set(&p->fail, PACS_EINVAL,
                            "header line without a colon in part %zu (byte %" PRIu64 ")",
                            p->nparts, at);
    size_t c = (size_t)(colon - d);
    if (c == s)
        return pacs_err_set(&p->fail, PACS_EINVAL,
                            "empty header name in part %zu (byte %" PRIu64 ")", p->nparts, at);
    for (size_t k = s; k < c; k++)
        if (!is_tchar((unsigned char)d[k]))
            return pacs_err_set(&p->fail, PACS_EINVAL,
                                "invalid character %s in a header name of part %zu (byte %" PRIu64 ")",
                                char_name((unsigned char)d[k], cn), p->nparts, p->hdr_off + k);
    int nlen = (int)(c - s > 40 ? 40 : c - s);
    size_t vs = c + 1, ve = e;
    while (vs < ve && is_ows((unsigned char)d[vs]))
        vs++;
    while (ve > vs && is_ows((unsigned char)d[ve - 1]))
        ve--;
    for (size_t k = vs; k < ve; k++)
        if (is_ctl((unsigned char)d[k]))
            return pacs_err_set(&p->fail, PACS_EINVAL,
                                "control character %s in header %.*s of part %zu (byte %" PRIu64 ")",
                                char_name((unsigned char)d[k], cn), nlen, d + s, p->nparts,
                                p->hdr_off + k);
    /* ve <= e, and d[e] is the line's CR: room for the terminator. */
    d[ve] = '\0';
    int which = -1;
    for (int k = 0; k < H_COUNT; k++)
        if (strlen(mp_hdr_names[k]) == c - s && strncasecmp(d + s, mp_hdr_names[k], c - s) == 0)
            which = k;
    if (which < 0)
        return 0;
    if (p->hv[which])
        return pacs_err_set(&p->fail, PACS_EINVAL,
                            "part %zu has two %s headers (byte %" PRIu64 ")", p->nparts,
                            mp_hdr_names[which], at);
    p->hv[which] = vs + 1;
    const char *v = d + vs;
    if (which == H_LENGTH) {
        uint64_t len = 0;
        bool ok = *v != '\0';
        for (const char *q = v; *q && ok; q++) {
            unsigned dig = (unsigned)(*q - '0');
            if (dig > 9 || len > (UINT64_MAX - dig) / 10)
                ok = false;
            else
                len = len * 10 + dig;
        }
        if (!ok)
            return pacs_err_set(&p->fail, PACS_EINVAL,
                                "invalid Content-Length \"%.32s\" in part %zu (byte %" PRIu64 ")", v,
                                p->nparts, at);
        if (p->lim.max_part_size && len > p->lim.max_part_size)
            return pacs_err_set(&p->fail, PACS_ELIMIT,
                                "part %zu announces %" PRIu64 " bytes, more than the %" PRIu64
                                "-byte part limit (byte %" PRIu64 ")",
                                p->nparts, len, p->lim.max_part_size, at);
        p->has_len = true;
        p->want_len = len;
    } else if (which == H_CTE) {
        if (!value_is(v, "binary") && !value_is(v, "8bit") && !value_is(v, "7bit"))
            return pacs_err_set(&p->fail, PACS_EUNSUPPORTED,
                                "Content-Transfer-Encoding \"%.32s\" of part %zu is not supported "
                                "(only binary, 8bit and 7bit; byte %" PRIu64 ")", v, p->nparts, at);
    }
    return 0;
}

static int begin_part(struct mp_parser *p, const struct mp_callbacks *cb, void *ctx)
{
    const char *d = (const char *)p->hdr.data;
    struct mp_part_headers h = {
        .index = p->nparts - 1,
        .offset = p->hdr_off,
        .content_type = p->hv[H_TYPE] ? d + p->hv[H_TYPE] - 1 : NULL,
        .content_location = p->hv[H_LOCATION] ? d + p->hv[H_LOCATION] - 1 : NULL,
        .content_id = p->hv[H_ID] ? d + p->hv[H_ID] - 1 : NULL,
        .content_transfer_encoding = p->hv[H_CTE] ? d + p->hv[H_CTE] - 1 : NULL,
        .has_content_length = p->has_len,
        .content_length = p->want_len,
    };
    p->state = MP_BODY;
    p->part_open = true;
    p->part_bytes = 0;
    p->part_cap = UINT64_MAX;
    if (p->lim.max_part_size)
        p->part_cap = p->lim.max_part_size;
    if (p->has_len && p->want_len < p->part_cap)
        p->part_cap = p->want_len;
    if (cb && cb->part_begin) {
        int rc = cb->part_begin(ctx, &h);
        if (rc)
            return cb_stop(p, rc);
    }
    return 0;
}

/* HEADERS: reads header bytes up to and including the empty line. */
static int feed_headers(struct mp_parser *p, const uint8_t *in, size_t n, size_t *used,
                        const struct mp_callbacks *cb, void *ctx)
{
    size_t seg = 0; /* first input byte not yet copied to hdr */
    int rc;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = in[i];
        uint64_t at = p->off + i;
        if (p->hcount >= p->lim.max_header_bytes)
            return pacs_err_set(&p->fail, PACS_ELIMIT,
                                "headers of part %zu longer than %zu bytes (byte %" PRIu64 ")",
                                p->nparts, p->lim.max_header_bytes, at);
        p->hcount++;
        if (p->prev_cr && c != '\n')
            return pacs_err_set(&p->fail, PACS_EINVAL,
                                "CR without LF in the headers of part %zu (byte %" PRIu64 ")",
                                p->nparts, at - 1);
        if (c == '\n' && !p->prev_cr)
            return pacs_err_set(&p->fail, PACS_EINVAL,
                                "bare LF in the headers of part %zu (byte %" PRIu64
                                "): multipart lines end in CRLF", p->nparts, at);
        p->prev_cr = c == '\r';
        if (c != '\n')
            continue;
        rc = dynbuf_append(&p->hdr, in + seg, i + 1 - seg);
        if (rc)
            return pacs_err_set(&p->fail, rc, "out of memory for part headers");
        seg = i + 1;
        size_t s = p->line_start, e = p->hdr.len - 2;
        p->line_start = p->hdr.len;
        if (e == s) {
            *used = i + 1;
            return begin_part(p, cb, ctx);
        }
        rc = header_line(p, s, e);
        if (rc)
            return rc;
    }
    rc = dynbuf_append(&p->hdr, in + seg, n - seg);
    if (rc)
        return pacs_err_set(&p->fail, rc, "out of memory for part headers");
    *used = n;
    return 0;
}

/* One step of the delimiter line (AFTER_BOUNDARY .. BOUNDARY_CR). */
static int boundary_byte(struct mp_parser *p, uint8_t c, uint64_t at, const struct mp_callbacks *cb,
                         void *ctx)
{
    char cn[8];
    int rc;
    switch (p->state) {
    case MP_AFTER_BOUNDARY:
    case MP_PADDING:
        if (c == '-' && p->state == MP_AFTER_BOUNDARY) {
            p->state = MP_CLOSE_DASH;
            return 0;
        }
        if (is_ows(c)) {
            p->state = MP_PADDING;
            return 0;
        }
        if (c == '\r') {
            p->state = MP_BOUNDARY_CR;
            return 0;
        }
        return pacs_err_set(&p->fail, PACS_EINVAL,
                            "boundary followed by %s, not CRLF (byte %" PRIu64 ")",
                            char_name(c, cn), at);
    case MP_CLOSE_DASH:
        if (c != '-')
            return pacs_err_set(&p->fail, PACS_EINVAL,
                                "boundary followed by '-' and %s, not CRLF or \"--\" (byte %" PRIu64 ")",
                                char_name(c, cn), at);
        rc = end_part(p, cb, ctx);
        if (rc)
            return rc;
        p->state = MP_EPILOGUE;
        return 0;
    case MP_BOUNDARY_CR:
        if (c != '\n')
            return pacs_err_set(&p->fail, PACS_EINVAL,
                                "CR without LF after a boundary (byte %" PRIu64 ")", at - 1);
        rc = end_part(p, cb, ctx);
        if (rc)
            return rc;
        rc = start_part(p, at + 1);
        if (rc)
            return rc;
        p->state = MP_HEADERS;
        return 0;
    default:
        return pacs_err_set(&p->fail, PACS_EINVAL, "multipart parser in a bad state");
    }
}

static int failed(const struct mp_parser *p, struct pacs_err *err)
{
    if (!p->fail_by_callback && err)
        *err = p->fail;
    return p->fail_rc;
}

int mp_feed(struct mp_parser *p, const uint8_t *data, size_t n, const struct mp_callbacks *cb,
            void *ctx, struct pacs_err *err)
{
    if (p->state == MP_FAILED)
        return failed(p, err);
    int rc = 0;
    size_t pos = 0;
    while (pos < n && rc == 0) {
        size_t used = 0;
        bool found = false;
        switch (p->state) {
        case MP_PREAMBLE:
        case MP_BODY:
            rc = scan(p, data + pos, n - pos, &used, &found, cb, ctx);
            if (rc == 0 && found)
                p->state = MP_AFTER_BOUNDARY;
            break;
        case MP_HEADERS:
            rc = feed_headers(p, data + pos, n - pos, &used, cb, ctx);
            break;
        case MP_EPILOGUE:
            used = n - pos;
            break;
        default:
            rc = boundary_byte(p, data[pos], p->off, cb, ctx);
            used = 1;
            break;
        }
        pos += used;
        /* p->off is the body offset of data[pos] when each step starts. */
        p->off += used;
    }
    if (rc) {
        p->state = MP_FAILED;
        p->fail_rc = rc;
        return failed(p, err);
    }
    return 0;
}

int mp_finish(struct mp_parser *p, struct pacs_err *err)
{
    int rc;
    switch (p->state) {
    case MP_EPILOGUE:
        return 0;
    case MP_FAILED:
        return failed(p, err);
    case MP_PREAMBLE:
        rc = pacs_err_set(&p->fail, PACS_ETRUNC,
                          "no multipart boundary delimiter in the %" PRIu64 "-byte body "
                          "(is the boundary right?)", p->off);
        break;
    case MP_HEADERS:
        rc = pacs_err_set(&p->fail, PACS_ETRUNC,
                          "multipart body ended in the headers of part %zu (byte %" PRIu64 ")",
                          p->nparts, p->off);
        break;
    case MP_BODY:
        rc = pacs_err_set(&p->fail, PACS_ETRUNC,
                          "multipart body ended inside part %zu, before its closing boundary "
                          "(byte %" PRIu64 ")", p->nparts, p->off);
        break;
    default:
        rc = pacs_err_set(&p->fail, PACS_ETRUNC,
                          "multipart body ended right after a boundary (byte %" PRIu64 ")", p->off);
        break;
    }
    p->state = MP_FAILED;
    p->fail_rc = rc;
    return failed(p, err);
}

/* --- writer -------------------------------------------------------------- */

static int check_header_value(const char *what, const char *v, struct pacs_err *err)
{
    char cn[8];
    for (const char *q = v; *q; q++)
        if (is_ctl((unsigned char)*q))
            return pacs_err_set(err, PACS_EINVAL, "%s holds control character %s", what,
                                char_name((unsigned char)*q, cn));
    return 0;
}

static int check_out_boundary(const char *b, struct pacs_err *err)
{
    if (!b)
        return pacs_err_set(err, PACS_EINVAL, "no multipart boundary");
    return check_boundary(b, strnlen(b, MP_BOUNDARY_MAX + 1), MP_BOUNDARY_MAX, err);
}

/* Undoes a partial append after a failure. */
static int write_failed(struct dynbuf *out, size_t len0, int rc, struct pacs_err *err)
{
    out->len = len0;
    if (out->data)
        out->data[len0] = '\0';
    return pacs_err_set(err, rc, "cannot write multipart headers: %s", pacs_strerror(rc));
}

int mp_write_part_header(struct dynbuf *out, const char *boundary, bool first,
                         const char *content_type, const char *content_location,
                         uint64_t content_length, struct pacs_err *err)
{
    int rc = check_out_boundary(boundary, err);
    if (rc)
        return rc;
    if (!content_type || !*content_type)
        return pacs_err_set(err, PACS_EINVAL, "multipart part without a Content-Type");
    rc = check_header_value("Content-Type", content_type, err);
    if (rc == 0 && content_location)
        rc = check_header_value("Content-Location", content_location, err);
    if (rc)
        return rc;
    size_t len0 = out->len;
    rc = dynbuf_printf(out, "%s--%s\r\nContent-Type: %s\r\n", first ? "" : "\r\n", boundary,
                       content_type);
    if (rc == 0 && content_location)
        rc = dynbuf_printf(out, "Content-Location: %s\r\n", content_location);
    if (rc == 0 && content_length != MP_NO_LENGTH)
        rc = dynbuf_printf(out, "Content-Length: %" PRIu64 "\r\n", content_length);
    if (rc == 0)
        rc = dynbuf_puts(out, "\r\n");
    if (rc)
        return write_failed(out, len0, rc, err);
    return 0;
}

int mp_write_close(struct dynbuf *out, const char *boundary, struct pacs_err *err)
{
    int rc = check_out_boundary(boundary, err);
    if (rc)
        return rc;
    size_t len0 = out->len;
    rc = dynbuf_printf(out, "\r\n--%s--\r\n", boundary);
    if (rc)
        return write_failed(out, len0, rc, err);
    return 0;
}

int mp_write_content_type(struct dynbuf *out, const char *root_type, const char *boundary,
                          const char *transfer_syntax, struct pacs_err *err)
{
    int rc = check_out_boundary(boundary, err);
    if (rc)
        return rc;
    if (!root_type || !is_media_type(root_type))
        return pacs_err_set(err, PACS_EINVAL, "multipart root type is not type/subtype");
    if (transfer_syntax) {
        for (const char *q = transfer_syntax; *q; q++)
            if (!is_tchar((unsigned char)*q))
                return pacs_err_set(err, PACS_EINVAL, "transfer syntax \"%.64s\" is not a token",
                                    transfer_syntax);
        if (!*transfer_syntax)
            return pacs_err_set(err, PACS_EINVAL, "empty transfer syntax");
    }
    bool plain = true;
    for (const char *q = boundary; *q; q++)
        plain = plain && is_tchar((unsigned char)*q);
    size_t len0 = out->len;
    rc = dynbuf_printf(out, "multipart/related; type=\"%s\"", root_type);
    if (rc == 0 && transfer_syntax)
        rc = dynbuf_printf(out, "; transfer-syntax=%s", transfer_syntax);
    /* bchars hold no '"' or '\', so quoting needs no escapes. */
    if (rc == 0 && plain)
        rc = dynbuf_printf(out, "; boundary=%s", boundary);
    else if (rc == 0)
        rc = dynbuf_printf(out, "; boundary=\"%s\"", boundary);
    if (rc)
        return write_failed(out, len0, rc, err);
    return 0;
}

int mp_new_boundary(char out[MP_BOUNDARY_MAX + 1], struct pacs_err *err)
{
    static const char hex[] = "0123456789abcdef";
    static const char prefix[] = "pacsd-";
    uint8_t r[16];
    size_t got = 0;
    while (got < sizeof r) {
        ssize_t n = getrandom(r + got, sizeof r - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return pacs_err_set(err, PACS_EIO, "getrandom: %s", strerror(errno));
        }
        got += (size_t)n;
    }
    memcpy(out, prefix, sizeof prefix - 1);
    char *q = out + sizeof prefix - 1;
    for (size_t i = 0; i < sizeof r; i++) {
        *q++ = hex[r[i] >> 4];
        *q++ = hex[r[i] & 15];
    }
    *q = '\0';
    return 0;
}
