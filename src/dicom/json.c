/* json.c - the DICOM JSON Model (PS3.18 F.2): data set -> JSON by hand into
 * a dynbuf (fast: it serves QIDO-RS and metadata), JSON -> data set with
 * jansson. The mapping and its choices are in json.h and docs/dicom-json.md.
 */
#include "dicom/json.h"

#include <float.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/limits.h"
#include "util/utf8.h"

/* Integers a double (and so every JavaScript client) holds exactly:
 * +-(2^53 - 1). SV, UV and IS beyond are written as strings (F.2.3). */
#define JSON_SAFE_INT 9007199254740991LL
/* DS values are at most 16 bytes (PS3.5 table 6.2-1). */
#define DS_MAX_CHARS 16
/* A DS/IS value longer than this is written as a string without parsing. */
#define NUM_TEXT_MAX 512

/* --- JSON paths for messages -----------------------------------------------
 * "00081140[0].00081150": the tags from the root down, with the item index
 * of each sequence entered; "[2]." in front for an element of an array. */

struct jpath {
    long prefix; /* index in a top-level array, or -1 */
    unsigned n;
    struct {
        uint32_t tag;
        long item; /* -1 while not inside an item */
    } s[PACS_MAX_SEQ_DEPTH + 2];
};

static void path_push(struct jpath *p, uint32_t tag)
{
    if (p->n < sizeof p->s / sizeof p->s[0]) {
        p->s[p->n].tag = tag;
        p->s[p->n].item = -1;
    }
    p->n++;
}

static void path_pop(struct jpath *p)
{
    if (p->n)
        p->n--;
}

static void path_item(struct jpath *p, long item)
{
    if (p->n && p->n <= sizeof p->s / sizeof p->s[0])
        p->s[p->n - 1].item = item;
}

/* Appends to buf[*len..size) with snprintf, checking the result; a message
 * that does not fit is cut short (it is for people). */
static void cat(char *buf, size_t size, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void cat(char *buf, size_t size, size_t *len, const char *fmt, ...)
{
    if (*len >= size - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *len, size - *len, fmt, ap);
    va_end(ap);
    if (n < 0) {
        buf[*len] = '\0';
        return;
    }
    *len = (size_t)n >= size - *len ? size - 1 : *len + (size_t)n;
}

/* The path as text; a long one (deep nesting) keeps its last ~100
 * characters after "...", so the reason still fits in pacs_err. */
static void path_str(const struct jpath *p, char *buf, size_t size)
{
    char full[(PACS_MAX_SEQ_DEPTH + 3) * 32];
    size_t len = 0;
    full[0] = '\0';
    if (p->prefix >= 0)
        cat(full, sizeof full, &len, "[%ld]", p->prefix);
    unsigned n = p->n < sizeof p->s / sizeof p->s[0] ? p->n : sizeof p->s / sizeof p->s[0];
    for (unsigned i = 0; i < n; i++) {
        cat(full, sizeof full, &len, "%s%08X", len ? "." : "", (unsigned)p->s[i].tag);
        if (p->s[i].item >= 0)
            cat(full, sizeof full, &len, "[%ld]", p->s[i].item);
    }
    const char *start = full;
    bool cut = false;
    if (len > 100) {
        start = full + len - 100;
        const char *dot = strchr(start, '.');
        if (dot)
            start = dot + 1;
        cut = true;
    }
    size_t out = 0;
    buf[0] = '\0';
    cat(buf, size, &out, "%s%s", cut ? "..." : "", start);
}

/* Sets err to "PATH: message" (just "message" at the top level). */
static int path_fail(const struct jpath *p, struct pacs_err *err, int code, const char *fmt,
                     va_list ap)
{
    char where[200], what[200];
    path_str(p, where, sizeof where);
    int n = vsnprintf(what, sizeof what, fmt, ap);
    if (n < 0)
        what[0] = '\0';
    if (where[0])
        return pacs_err_set(err, code, "%s: %s", where, what);
    return pacs_err_set(err, code, "%s", what);
}

/* Input text quoted in a message: printable ASCII only, cut at 32 chars. */
static const char *show(const char *s, size_t n, char *buf, size_t size)
{
    size_t j = 0;
    for (size_t i = 0; i < n && j + 4 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i == 32) {
            buf[j++] = '.';
            buf[j++] = '.';
            buf[j++] = '.';
            break;
        }
        buf[j++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    buf[j] = '\0';
    return buf;
}

/* --- numbers shared by writer and reader ------------------------------------ */

static size_t u64_text(uint64_t v, char *buf)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    return n;
}

static size_t i64_text(int64_t v, char *buf)
{
    if (v < 0) {
        buf[0] = '-';
        return 1 + u64_text((uint64_t)0 - (uint64_t)v, buf + 1);
    }
    return u64_text((uint64_t)v, buf);
}

/* A decimal number's value in canonical form: sign, significant digits
 * without leading or trailing zeros, and the power of ten of the first. */
struct decimal {
    bool neg, zero;
    unsigned nd;        /* significant digits (all of them counted) */
    char dig[48];       /* the first 48 */
    long exp;
};

/* Parses the DS syntax of PS3.5 (also JSON's): [+-] digits [. digits]
 * [eE [+-] digits], with at least one mantissa digit. */
static bool decimal_parse(const char *s, size_t n, struct decimal *d)
{
    size_t i = 0;
    memset(d, 0, sizeof *d);
    if (i < n && (s[i] == '+' || s[i] == '-'))
        d->neg = s[i++] == '-';
    long point = 0; /* digits before the point, counting from the first significant */
    bool any = false, seen_point = false, started = false;
    for (; i < n; i++) {
        char c = s[i];
        if (c == '.' && !seen_point) {
            seen_point = true;
            continue;
        }
        if (c < '0' || c > '9')
            break;
        any = true;
        if (!started && c == '0') {
            if (seen_point)
                point--;
            continue;
        }
        started = true;
        if (d->nd < sizeof d->dig)
            d->dig[d->nd] = c;
        if (d->nd < UINT32_MAX)
            d->nd++;
        if (!seen_point && point < LONG_MAX / 2)
            point++;
    }
    if (!any)
        return false;
    long e = 0;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        bool eneg = false;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            eneg = s[i++] == '-';
        bool edig = false;
        for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
            edig = true;
            if (e < 1000000)
                e = e * 10 + (s[i] - '0');
        }
        if (!edig)
            return false;
        if (eneg)
            e = -e;
    }
    if (i != n)
        return false;
    if (d->nd == 0) {
        d->zero = true;
        return true;
    }
    unsigned kept = d->nd < sizeof d->dig ? d->nd : (unsigned)sizeof d->dig;
    if (kept == d->nd)
        while (d->nd > 1 && d->dig[d->nd - 1] == '0')
            d->nd--;
    d->exp = point + e;
    return true;
}

static bool decimal_equal(const struct decimal *a, const struct decimal *b)
{
    if (a->zero || b->zero)
        return a->zero && b->zero;
    return a->neg == b->neg && a->exp == b->exp && a->nd == b->nd &&
           a->nd <= sizeof a->dig && memcmp(a->dig, b->dig, a->nd) == 0;
}

/* Writes the DS text s[0..n) (already known to parse) as a JSON number
 * keeping all its digits: no '+', no leading zeros, digits around '.'.
 * An integer too long for int64 gets ".0" so that parsers read a real. */
static int ds_json_text(const char *s, size_t n, struct dynbuf *b)
{
    size_t i = 0;
    int rc = 0;
    if (s[i] == '+' || s[i] == '-') {
        if (s[i] == '-')
            rc = dynbuf_putc(b, '-');
        i++;
    }
    size_t ib = i;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++;
    size_t ie = i;
    while (ib + 1 < ie && s[ib] == '0')
        ib++;
    if (!rc)
        rc = ib == ie ? dynbuf_putc(b, '0') : dynbuf_append(b, s + ib, ie - ib);
    bool real = false;
    if (!rc && i < n && s[i] == '.') {
        i++;
        size_t fb = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i > fb) {
            rc = dynbuf_putc(b, '.');
            if (!rc)
                rc = dynbuf_append(b, s + fb, i - fb);
            real = true;
        }
    }
    if (!rc && i < n) { /* exponent: JSON takes e, sign and digits as DS has them */
        rc = dynbuf_append(b, s + i, n - i);
        real = true;
    }
    if (!rc && !real && ie - ib > 18)
        rc = dynbuf_append(b, ".0", 2);
    return rc;
}

/* Strict digits to uint64 (an optional '+'). */
static bool parse_u64(const char *s, size_t n, uint64_t *out)
{
    size_t i = 0;
    if (i < n && s[i] == '+')
        i++;
    if (i == n)
        return false;
    uint64_t v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned dgt = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - dgt) / 10)
            return false;
        v = v * 10 + dgt;
    }
    *out = v;
    return true;
}

/* Strict [+-]digits to int64. */
static bool parse_i64(const char *s, size_t n, int64_t *out)
{
    bool neg = n && s[0] == '-';
    uint64_t v;
    if (!parse_u64(s + neg, n - neg, &v) || (neg && n > 1 && s[1] == '+'))
        return false;
    if (neg ? v > (uint64_t)INT64_MAX + 1 : v > (uint64_t)INT64_MAX)
        return false;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

static bool is_space_pad(unsigned char c) { return c == ' ' || c == '\0'; }

/* ============================================================================
 * Writer
 * ========================================================================= */

/* Appends go through put(): the first failure sticks in w->rc and makes the
 * rest no-ops, so the emitters read as straight-line code (as writer.c). */
struct jw {
    struct dynbuf *out;
    const struct dcm_json_opts *o;
    struct pacs_err *err;
    struct dynbuf text; /* decoded string value */
    struct dynbuf uri;  /* bulk_uri scratch */
    struct jpath path;
    int rc;
};

static void w_fail(struct jw *w, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void w_fail(struct jw *w, int code, const char *fmt, ...)
{
    if (w->rc)
        return;
    va_list ap;
    va_start(ap, fmt);
    w->rc = path_fail(&w->path, w->err, code, fmt, ap);
    va_end(ap);
}

/* An output buffer failure, reported with the element being written. */
static void w_buf_fail(struct jw *w, int rc)
{
    w_fail(w, rc, "%s", rc == PACS_ELIMIT ? "JSON output exceeds the buffer's limit"
                                          : "out of memory writing JSON");
}

static inline void put(struct jw *w, const void *p, size_t n)
{
    struct dynbuf *b = w->out;
    if (w->rc)
        return;
    /* The common case, room in the buffer, without a call per token. */
    if (n < b->cap - b->len && (!b->max || n <= b->max - b->len)) {
        memcpy(b->data + b->len, p, n);
        b->len += n;
        b->data[b->len] = '\0';
        return;
    }
    int rc = dynbuf_append(b, p, n);
    if (rc)
        w_buf_fail(w, rc);
}

static void putc_(struct jw *w, char c) { put(w, &c, 1); }
static void puts_(struct jw *w, const char *s) { put(w, s, strlen(s)); }
#define PUT_LIT(w, lit) put((w), (lit), sizeof(lit) - 1)

/* The '":' after a key, with a space when pretty. */
static void key_end(struct jw *w)
{
    if (w->o->pretty)
        PUT_LIT(w, "\": ");
    else
        PUT_LIT(w, "\":");
}

/* Newline and indentation in pretty mode. */
static void nl(struct jw *w, unsigned level)
{
    static const char spaces[] = "                                                                ";
    if (!w->o->pretty || w->rc)
        return;
    putc_(w, '\n');
    size_t n = (size_t)level * 2;
    while (n) {
        size_t k = n < sizeof spaces - 1 ? n : sizeof spaces - 1;
        put(w, spaces, k);
        n -= k;
    }
}

static void put_key(struct jw *w, const char *key)
{
    putc_(w, '"');
    puts_(w, key);
    key_end(w);
}

/* A JSON string: quotes, escapes for '"', '\\' and control characters,
 * UTF-8 passed through, invalid bytes replaced by U+FFFD. */
static void put_jstr(struct jw *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t run = 0; /* start of bytes not yet copied */
    putc_(w, '"');
    for (size_t i = 0; i < n && !w->rc;) {
        unsigned char c = p[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t l = utf8_seq_len(p + i, n - i);
            if (l) {
                i += l;
                continue;
            }
        }
        put(w, p + run, i - run);
        char esc[6] = { '\\', 0, 0, 0, 0, 0 };
        switch (c) {
        case '"': esc[1] = '"'; put(w, esc, 2); break;
        case '\\': esc[1] = '\\'; put(w, esc, 2); break;
        case '\b': esc[1] = 'b'; put(w, esc, 2); break;
        case '\f': esc[1] = 'f'; put(w, esc, 2); break;
        case '\n': esc[1] = 'n'; put(w, esc, 2); break;
        case '\r': esc[1] = 'r'; put(w, esc, 2); break;
        case '\t': esc[1] = 't'; put(w, esc, 2); break;
        default:
            if (c < 0x20) {
                esc[1] = 'u';
                esc[2] = '0';
                esc[3] = '0';
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 15];
                put(w, esc, 6);
            } else {
                put(w, "\xef\xbf\xbd", 3);
            }
        }
        i++;
        run = i;
    }
    put(w, p + run, n - run);
    putc_(w, '"');
}

/* --- base64, streamed so encapsulated fragments need no concatenation ---- */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

struct b64 {
    uint8_t carry[3];
    unsigned nc;
};

static void b64_block(const uint8_t *in, char *o)
{
    o[0] = b64chars[in[0] >> 2];
    o[1] = b64chars[((in[0] & 3) << 4) | (in[1] >> 4)];
    o[2] = b64chars[((in[1] & 15) << 2) | (in[2] >> 6)];
    o[3] = b64chars[in[2] & 63];
}

static void b64_feed(struct jw *w, struct b64 *st, const uint8_t *p, size_t n)
{
    while (n && st->nc && st->nc < 3) {
        st->carry[st->nc++] = *p++;
        n--;
    }
    if (st->nc == 3) {
        char o[4];
        b64_block(st->carry, o);
        put(w, o, 4);
        st->nc = 0;
    }
    size_t whole = n / 3 * 3;
    if (whole && !w->rc) {
        int rc = dynbuf_reserve(w->out, whole / 3 * 4);
        if (rc) {
            w_buf_fail(w, rc);
            return;
        }
        char *o = (char *)w->out->data + w->out->len;
        for (size_t i = 0; i < whole; i += 3, o += 4)
            b64_block(p + i, o);
        w->out->len += whole / 3 * 4;
        w->out->data[w->out->len] = '\0';
    }
    for (size_t i = whole; i < n; i++)
        st->carry[st->nc++] = p[i];
}

static void b64_finish(struct jw *w, struct b64 *st)
{
    if (!st->nc)
        return;
    uint8_t in[3] = { st->carry[0], st->nc > 1 ? st->carry[1] : 0, 0 };
    char o[4];
    b64_block(in, o);
    if (st->nc == 1)
        o[2] = '=';
    o[3] = '=';
    put(w, o, 4);
    st->nc = 0;
}

/* --- element values ---------------------------------------------------------- */

/* "Value": [ ... ] framing; `level` is the element object's members' level. */
static void value_begin(struct jw *w, unsigned level)
{
    putc_(w, ',');
    nl(w, level);
    put_key(w, "Value");
    putc_(w, '[');
}

static void value_sep(struct jw *w, unsigned level, bool *first)
{
    if (!*first)
        putc_(w, ',');
    *first = false;
    nl(w, level + 1);
}

static void value_end(struct jw *w, unsigned level)
{
    nl(w, level);
    putc_(w, ']');
}

/* Writes a canonical decimal (d->nd <= 17) as JSON the way Python's repr()
 * and "%.17g" do: plain digits for scientific exponents -4..15, else
 * "d.ddde+XX"; zero is "0" or "-0.0". The text depends on the value only,
 * which keeps write -> read -> write stable. */
static size_t format_decimal(const struct decimal *d, char *buf)
{
    size_t j = 0;
    if (d->zero) {
        memcpy(buf, d->neg ? "-0.0" : "0", d->neg ? 5 : 2);
        return d->neg ? 4 : 1;
    }
    if (d->neg)
        buf[j++] = '-';
    long x = d->exp - 1; /* power of ten of the first digit */
    unsigned nd = d->nd;
    if (x >= -4 && x <= 15) {
        if (x < 0) {
            buf[j++] = '0';
            buf[j++] = '.';
            for (long k = -1; k > x; k--)
                buf[j++] = '0';
            memcpy(buf + j, d->dig, nd);
            j += nd;
        } else {
            for (long k = 0; k <= x; k++)
                buf[j++] = (unsigned long)k < nd ? d->dig[k] : '0';
            if (nd > (unsigned long)x + 1) {
                buf[j++] = '.';
                memcpy(buf + j, d->dig + x + 1, nd - (size_t)x - 1);
                j += nd - (size_t)x - 1;
            }
        }
    } else {
        buf[j++] = d->dig[0];
        if (nd > 1) {
            buf[j++] = '.';
            memcpy(buf + j, d->dig + 1, nd - 1);
            j += nd - 1;
        }
        buf[j++] = 'e';
        buf[j++] = x < 0 ? '-' : '+';
        unsigned long ax = (unsigned long)(x < 0 ? -x : x);
        if (ax < 10)
            buf[j++] = '0';
        char tmp[24];
        size_t tn = u64_text(ax, tmp);
        memcpy(buf + j, tmp, tn);
        j += tn;
    }
    buf[j] = '\0';
    return j;
}

/* The shortest decimal that reads back as d (d finite), formatted by
 * format_decimal. Integers below 2^53 print directly; otherwise one "%.16e"
 * gives 17 digits (always enough) and the roundings to 15 and 16 digits are
 * tried first. Negative zero is "-0.0" so JSON parsers keep it a real. */
static int fmt_double(double d, char *buf, size_t size)
{
    struct decimal dec;
    char e[48];
    if (size < 32)
        return -1;
    if (d != 0 && fabs(d) < 9007199254740992.0 && d == (double)(int64_t)d) {
        size_t k = i64_text((int64_t)d, buf);
        buf[k] = '\0';
        return (int)k;
    }
    memset(&dec, 0, sizeof dec);
    if (d == 0) {
        dec.zero = true;
        dec.neg = signbit(d) != 0;
        return (int)format_decimal(&dec, buf);
    }
    int n = snprintf(e, sizeof e, "%.16e", d);
    if (n < 0 || (size_t)n >= sizeof e)
        return -1;
    /* [-]D.DDDDDDDDDDDDDDDDe[+-]X */
    const char *p = e;
    dec.neg = *p == '-';
    if (dec.neg)
        p++;
    char dig[17];
    int nd = 0;
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9' && nd < 17)
            dig[nd++] = *p;
    if (*p != 'e' || nd != 17)
        return -1;
    long x = strtol(p + 1, NULL, 10);
    /* For 15 and 16 digits, both neighbours of the 17-digit text are tried
     * (that text is itself rounded), the nearer one first. */
    for (int keep = 15; keep <= 17; keep++) {
        bool up_first = keep < 17 && dig[keep] >= '5';
        for (int attempt = 0; attempt < (keep < 17 ? 2 : 1); attempt++) {
            bool up = attempt ? !up_first : up_first;
            char r[18];
            long rx = x;
            memcpy(r, dig, (size_t)keep);
            if (up) {
                int i = keep - 1;
                while (i >= 0 && r[i] == '9')
                    r[i--] = '0';
                if (i >= 0) {
                    r[i]++;
                } else { /* 9.99..9 -> 10.0..0 */
                    memmove(r + 1, r, (size_t)keep - 1);
                    r[0] = '1';
                    rx++;
                }
            }
            int k = keep;
            while (k > 1 && r[k - 1] == '0')
                k--;
            memcpy(dec.dig, r, (size_t)k);
            dec.nd = (unsigned)k;
            dec.exp = rx + 1;
            size_t len = format_decimal(&dec, buf);
            if (keep == 17 || strtod(buf, NULL) == d)
                return (int)len;
        }
    }
    return -1;
}

/* One DS value (trimmed text): a JSON number of the same value, or the
 * value's text as a JSON string when it is not a number (F.2.3 allows
 * strings; pydicom fails on such values). */
static void put_ds(struct jw *w, const char *s, size_t n)
{
    struct decimal dv, dr;
    char buf[NUM_TEXT_MAX + 1], r[40], out[64];
    if (n > NUM_TEXT_MAX || !decimal_parse(s, n, &dv)) {
        put_jstr(w, s, n);
        return;
    }
    /* Up to 15 significant digits name one double each: no need to ask
     * strtod which text is the shortest. */
    if (dv.zero || (dv.nd <= 15 && dv.exp > -300 && dv.exp < 300)) {
        put(w, out, format_decimal(&dv, out));
        return;
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    double d = strtod(buf, NULL);
    if (isinf(d) || isnan(d)) {
        put_jstr(w, s, n); /* 1e400: a JSON number no parser reads back */
        return;
    }
    int rn = fmt_double(d, r, sizeof r);
    if (rn > 0 && decimal_parse(r, (size_t)rn, &dr) && decimal_equal(&dv, &dr) &&
        dr.nd <= 17) {
        put(w, out, format_decimal(&dr, out));
        return;
    }
    /* More digits than a double holds: keep them all. */
    if (!w->rc) {
        int rc = ds_json_text(s, n, w->out);
        if (rc)
            w_buf_fail(w, rc);
    }
}

/* One IS value: a JSON number when it is an integer within +-(2^53 - 1)
 * (also "1.0", as pydicom reads it), else its text as a JSON string. */
static void put_is(struct jw *w, const char *s, size_t n)
{
    int64_t v;
    char buf[24];
    if (parse_i64(s, n, &v) && v >= -JSON_SAFE_INT && v <= JSON_SAFE_INT) {
        put(w, buf, i64_text(v, buf));
        return;
    }
    struct decimal dv;
    if (n <= 64 && decimal_parse(s, n, &dv)) {
        char tmp[65];
        memcpy(tmp, s, n);
        tmp[n] = '\0';
        double d = strtod(tmp, NULL);
        if (d == floor(d) && fabs(d) <= (double)JSON_SAFE_INT) {
            put(w, buf, i64_text((int64_t)d, buf));
            return;
        }
    }
    put_jstr(w, s, n);
}

/* One PN value: an object with its non-empty component groups, or null. */
static void put_pn(struct jw *w, const char *s, size_t n, unsigned level)
{
    static const char *const names[3] = { "Alphabetic", "Ideographic", "Phonetic" };
    struct dcm_pn pn;
    dcm_pn_split(s, n, &pn);
    bool any = false;
    for (unsigned g = 0; g < pn.ngroups; g++)
        any |= pn.group[g].n > 0;
    if (!any) {
        PUT_LIT(w, "null");
        return;
    }
    putc_(w, '{');
    bool first = true;
    for (unsigned g = 0; g < pn.ngroups; g++) {
        if (!pn.group[g].n)
            continue;
        if (!first)
            putc_(w, ',');
        first = false;
        nl(w, level + 1);
        put_key(w, names[g]);
        put_jstr(w, pn.group[g].p, pn.group[g].n);
    }
    nl(w, level);
    putc_(w, '}');
}

/* VRs whose values may carry leading spaces as padding (PS3.5 6.2). */
static bool leading_pad(uint16_t vr)
{
    switch (vr) {
    case DCM_VR_AE: case DCM_VR_CS: case DCM_VR_DS: case DCM_VR_IS:
    case DCM_VR_LO: case DCM_VR_SH:
        return true;
    }
    return false;
}

/* Decodes a string element's whole value to UTF-8 into w->text. VRs that
 * use the Specific Character Set go through dcm_elem_text; the others are
 * default repertoire, read as ISO 8859-1 (pydicom's fallback). */
static void decode_text(struct jw *w, const struct dcm_ds *ds, const struct dcm_elem *e)
{
    dynbuf_reset(&w->text);
    if (w->rc)
        return;
    if (dcm_vr_uses_charset(e->vr)) {
        struct pacs_err cerr = { 0 };
        int rc = dcm_elem_text(ds, e, &w->text, &cerr);
        if (rc)
            w_fail(w, rc, "cannot decode text: %s", cerr.msg);
        return;
    }
    size_t n = e->len;
    while (n && is_space_pad(e->val[n - 1]))
        n--;
    if (n > PACS_MAX_STRING_LEN) {
        w_fail(w, PACS_ELIMIT, "value of %zu bytes exceeds the string limit", n);
        return;
    }
    int rc = dynbuf_reserve(&w->text, n * 2);
    for (size_t i = 0; i < n && !rc; i++) {
        uint8_t c = e->val[i];
        if (c < 0x80) {
            w->text.data[w->text.len++] = c;
        } else {
            w->text.data[w->text.len++] = (uint8_t)(0xc0 | (c >> 6));
            w->text.data[w->text.len++] = (uint8_t)(0x80 | (c & 0x3f));
        }
    }
    if (rc)
        w_fail(w, rc, "out of memory decoding text");
    else
        w->text.data[w->text.len] = '\0';
}

static void put_strings(struct jw *w, const struct dcm_ds *ds, const struct dcm_elem *e,
                        unsigned level)
{
    decode_text(w, ds, e);
    if (w->rc)
        return;
    const char *t = (const char *)w->text.data;
    size_t n = w->text.len;
    if (!dcm_vr_multivalued(e->vr)) {
        while (n && is_space_pad((unsigned char)t[n - 1]))
            n--;
        if (!n)
            return;
        value_begin(w, level);
        bool first = true;
        value_sep(w, level, &first);
        put_jstr(w, t, n);
        value_end(w, level);
        return;
    }
    /* Nothing but padding: no value (F.2.5). */
    size_t k = 0;
    while (k < n && is_space_pad((unsigned char)t[k]))
        k++;
    if (k == n)
        return;
    value_begin(w, level);
    bool first = true;
    const char *p = t, *end = t + n;
    for (;;) {
        const char *bs = memchr(p, '\\', (size_t)(end - p));
        const char *ve = bs ? bs : end;
        const char *vb = p;
        if (leading_pad(e->vr))
            while (vb < ve && *vb == ' ')
                vb++;
        while (ve > vb && is_space_pad((unsigned char)ve[-1]))
            ve--;
        size_t vn = (size_t)(ve - vb);
        value_sep(w, level, &first);
        if (!vn)
            PUT_LIT(w, "null");
        else if (e->vr == DCM_VR_DS)
            put_ds(w, vb, vn);
        else if (e->vr == DCM_VR_IS)
            put_is(w, vb, vn);
        else if (e->vr == DCM_VR_PN)
            put_pn(w, vb, vn, level + 1);
        else
            put_jstr(w, vb, vn);
        if (!bs || w->rc)
            break;
        p = bs + 1;
    }
    value_end(w, level);
}

static uint64_t load_le(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void put_float(struct jw *w, double d)
{
    char buf[40];
    if (isnan(d)) {
        puts_(w, "\"NaN\"");
    } else if (isinf(d)) {
        puts_(w, d > 0 ? "\"Infinity\"" : "\"-Infinity\"");
    } else {
        int n = fmt_double(d, buf, sizeof buf);
        if (n < 0)
            w_fail(w, PACS_EINVAL, "cannot format a number");
        else
            put(w, buf, (size_t)n);
    }
}

/* US SS UL SL SV UV FL FD AT: a trailing partial value is ignored. */
static void put_numbers(struct jw *w, const struct dcm_elem *e, unsigned level)
{
    unsigned sz = dcm_vr_num_size(e->vr);
    uint32_t vm = e->len / sz;
    if (!vm)
        return;
    value_begin(w, level);
    bool first = true;
    char buf[32];
    for (uint32_t i = 0; i < vm && !w->rc; i++) {
        const uint8_t *p = e->val + (size_t)i * sz;
        uint64_t u = load_le(p, sz);
        value_sep(w, level, &first);
        switch (e->vr) {
        case DCM_VR_US: case DCM_VR_UL:
            put(w, buf, u64_text(u, buf));
            break;
        case DCM_VR_SS:
            put(w, buf, i64_text((int16_t)(uint16_t)u, buf));
            break;
        case DCM_VR_SL:
            put(w, buf, i64_text((int32_t)(uint32_t)u, buf));
            break;
        case DCM_VR_SV: {
            int64_t v = (int64_t)u;
            bool safe = v >= -JSON_SAFE_INT && v <= JSON_SAFE_INT;
            if (!safe)
                putc_(w, '"');
            put(w, buf, i64_text(v, buf));
            if (!safe)
                putc_(w, '"');
            break;
        }
        case DCM_VR_UV: {
            bool safe = u <= (uint64_t)JSON_SAFE_INT;
            if (!safe)
                putc_(w, '"');
            put(w, buf, u64_text(u, buf));
            if (!safe)
                putc_(w, '"');
            break;
        }
        case DCM_VR_FL: {
            float f;
            uint32_t u32 = (uint32_t)u;
            memcpy(&f, &u32, 4);
            put_float(w, f);
            break;
        }
        case DCM_VR_FD: {
            double d;
            memcpy(&d, &u, 8);
            put_float(w, d);
            break;
        }
        case DCM_VR_AT: {
            static const char hex[] = "0123456789ABCDEF";
            uint32_t tag = DCM_TAG(load_le(p, 2), load_le(p + 2, 2));
            char t[10];
            t[0] = '"';
            for (int k = 0; k < 8; k++)
                t[1 + k] = hex[(tag >> (28 - 4 * k)) & 15];
            t[9] = '"';
            put(w, t, 10);
            break;
        }
        }
    }
    value_end(w, level);
}

/* Asks the bulk_uri callback; true if it gave a URI (then written). */
static bool put_bulk_uri(struct jw *w, const struct dcm_ds *ds, const struct dcm_elem *e,
                         unsigned level)
{
    if (!w->o->bulk_uri || w->rc)
        return false;
    dynbuf_reset(&w->uri);
    if (!w->o->bulk_uri(w->o->ctx, ds, e, &w->uri)) {
        dynbuf_reset(&w->uri);
        return false;
    }
    putc_(w, ',');
    nl(w, level);
    put_key(w, "BulkDataURI");
    put_jstr(w, (const char *)w->uri.data, w->uri.len);
    return true;
}

static void put_binary(struct jw *w, const struct dcm_ds *ds, const struct dcm_elem *e,
                       unsigned level)
{
    bool encaps = (e->flags & DCM_EF_ENCAPS) != 0;
    if (!encaps && (e->len == 0 || !e->val))
        return;
    if (put_bulk_uri(w, ds, e, level))
        return;
    putc_(w, ',');
    nl(w, level);
    put_key(w, "InlineBinary");
    putc_(w, '"');
    struct b64 st = { .nc = 0 };
    if (encaps) {
        for (uint32_t i = 0; i < e->u.frags.n && !w->rc; i++) {
            const struct dcm_frag *f = &e->u.frags.v[i];
            uint8_t hdr[8] = { 0xfe, 0xff, 0x00, 0xe0, (uint8_t)f->len, (uint8_t)(f->len >> 8),
                               (uint8_t)(f->len >> 16), (uint8_t)(f->len >> 24) };
            b64_feed(w, &st, hdr, 8);
            if (f->len)
                b64_feed(w, &st, f->data, f->len);
        }
    } else {
        b64_feed(w, &st, e->val, e->len);
    }
    b64_finish(w, &st);
    putc_(w, '"');
}

static void write_ds(struct jw *w, const struct dcm_ds *ds, unsigned level, unsigned depth);

static void put_items(struct jw *w, const struct dcm_elem *e, unsigned level, unsigned depth)
{
    if (!e->u.items.n)
        return;
    if (depth >= PACS_MAX_SEQ_DEPTH) {
        w_fail(w, PACS_ELIMIT, "sequences nested deeper than %d", PACS_MAX_SEQ_DEPTH);
        return;
    }
    value_begin(w, level);
    bool first = true;
    for (uint32_t i = 0; i < e->u.items.n && !w->rc; i++) {
        value_sep(w, level, &first);
        path_item(&w->path, (long)i);
        write_ds(w, e->u.items.v[i], level + 1, depth + 1);
    }
    path_item(&w->path, -1);
    value_end(w, level);
}

/* The VR written: SQ for anything holding items, UN for unknown codes. */
static uint16_t json_vr(const struct dcm_elem *e)
{
    if (e->flags & DCM_EF_SEQ)
        return DCM_VR_SQ;
    return dcm_vr_known(e->vr) ? e->vr : DCM_VR_UN;
}

static void write_elem(struct jw *w, const struct dcm_ds *ds, const struct dcm_elem *e,
                       unsigned level, unsigned depth)
{
    uint16_t vr = json_vr(e);
    char vs[3];
    putc_(w, '{');
    nl(w, level + 1);
    put_key(w, "vr");
    putc_(w, '"');
    put(w, dcm_vr_str(vr, vs), 2);
    putc_(w, '"');
    if (vr == DCM_VR_SQ) {
        if (e->flags & DCM_EF_SEQ)
            put_items(w, e, level + 1, depth);
    } else if (e->flags & DCM_EF_ENCAPS) {
        put_binary(w, ds, e, level + 1);
    } else if (dcm_vr_is_string(vr)) {
        put_strings(w, ds, e, level + 1);
    } else if (dcm_vr_num_size(vr)) {
        put_numbers(w, e, level + 1);
    } else {
        put_binary(w, ds, e, level + 1);
    }
    nl(w, level);
    putc_(w, '}');
}

static void write_ds(struct jw *w, const struct dcm_ds *ds, unsigned level, unsigned depth)
{
    putc_(w, '{');
    bool first = true;
    for (uint32_t i = 0; i < ds->n && !w->rc; i++) {
        const struct dcm_elem *e = &ds->el[i];
        if (DCM_ELEMENT(e->tag) == 0)
            continue; /* group lengths are not in the JSON model (F.2.2) */
        if (!first)
            putc_(w, ',');
        first = false;
        nl(w, level + 1);
        static const char hex[] = "0123456789ABCDEF";
        char key[8];
        for (int k = 0; k < 8; k++)
            key[k] = hex[(e->tag >> (28 - 4 * k)) & 15];
        putc_(w, '"');
        put(w, key, 8);
        key_end(w);
        path_push(&w->path, e->tag);
        write_elem(w, ds, e, level + 1, depth);
        path_pop(&w->path);
    }
    if (!first)
        nl(w, level);
    putc_(w, '}');
}

int dcm_json_write(const struct dcm_ds *ds, const struct dcm_json_opts *o, struct dynbuf *out,
                   struct pacs_err *err)
{
    static const struct dcm_json_opts defaults;
    if (!ds || !out)
        return pacs_err_set(err, PACS_EINVAL, "dcm_json_write: NULL argument");
    struct jw w = { .out = out, .o = o ? o : &defaults, .err = err };
    w.path.prefix = -1;
    dynbuf_init(&w.text, 0);
    dynbuf_init(&w.uri, 0);
    size_t start = out->len;
    write_ds(&w, ds, 0, 0);
    if (w.rc) {
        out->len = start;
        if (out->data)
            out->data[start] = '\0';
    }
    dynbuf_free(&w.text);
    dynbuf_free(&w.uri);
    return w.rc;
}

/* ============================================================================
 * Reader
 * ========================================================================= */

struct jr {
    struct pacs_err *err;
    struct jpath path;
    struct dynbuf val;  /* the value being built */
    bool non_ascii;     /* text in a Specific Character Set VR is not ASCII */
};

static int r_fail(struct jr *r, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int r_fail(struct jr *r, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = path_fail(&r->path, r->err, code, fmt, ap);
    va_end(ap);
    return rc;
}

static int r_buf_fail(struct jr *r, int rc)
{
    if (rc == PACS_ELIMIT)
        return r_fail(r, rc, "value exceeds %u bytes", (unsigned)PACS_MAX_VALUE_LEN);
    return r_fail(r, rc, "out of memory");
}

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: case JSON_REAL: return "a number";
    case JSON_TRUE: case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Eight hex digits (either case) to a tag. */
static bool parse_tag(const char *s, size_t n, uint32_t *tag)
{
    if (n != 8)
        return false;
    uint32_t t = 0;
    for (size_t i = 0; i < 8; i++) {
        int h = hexval(s[i]);
        if (h < 0)
            return false;
        t = (t << 4) | (uint32_t)h;
    }
    *tag = t;
    return true;
}

static bool binary_vr(uint16_t vr)
{
    switch (vr) {
    case DCM_VR_OB: case DCM_VR_OD: case DCM_VR_OF: case DCM_VR_OL:
    case DCM_VR_OV: case DCM_VR_OW: case DCM_VR_UN:
        return true;
    }
    return false;
}

/* Appends a string value's text to r->val. Specific Character Set VRs keep
 * UTF-8; default-repertoire VRs take ISO 8859-1 (inverse of the writer). */
static int add_text(struct jr *r, uint16_t vr, const char *s, size_t n, size_t idx)
{
    const unsigned char *p = (const unsigned char *)s;
    if (dcm_vr_uses_charset(vr)) {
        for (size_t i = 0; i < n && !r->non_ascii; i++)
            r->non_ascii = p[i] >= 0x80;
        int rc = dynbuf_append(&r->val, s, n);
        return rc ? r_buf_fail(r, rc) : 0;
    }
    int rc = dynbuf_reserve(&r->val, n);
    if (rc)
        return r_buf_fail(r, rc);
    for (size_t i = 0; i < n;) {
        /* jansson hands over valid UTF-8 only. */
        uint32_t cp = p[i];
        size_t l = 1;
        if (cp >= 0x80) {
            l = utf8_seq_len(p + i, n - i);
            if (!l)
                return r_fail(r, PACS_EINVAL, "Value[%zu] is not valid UTF-8", idx);
            cp = l == 2 ? ((p[i] & 0x1fu) << 6) | (p[i + 1] & 0x3fu) : 0x800;
            if (l > 2 || cp > 0xff) {
                char vs[3];
                return r_fail(r, PACS_EINVAL,
                              "Value[%zu] has a character beyond U+00FF, which VR %s "
                              "(default character repertoire) cannot hold",
                              idx, dcm_vr_str(vr, vs));
            }
        }
        r->val.data[r->val.len++] = (uint8_t)cp;
        i += l;
    }
    r->val.data[r->val.len] = '\0';
    return 0;
}

/* The text of a JSON string (NUL bytes allowed), checked for the value
 * delimiter where the VR is multi-valued. */
static int string_text(struct jr *r, uint16_t vr, const json_t *v, size_t idx, const char **s,
                       size_t *n)
{
    *s = json_string_value(v);
    *n = json_string_length(v);
    if (dcm_vr_multivalued(vr) && memchr(*s, '\\', *n))
        return r_fail(r, PACS_EINVAL, "Value[%zu] contains a backslash, the value delimiter", idx);
    return 0;
}

/* Copies "%g" text dropping the exponent's '+' and leading zeros
 * ("1e+05" -> "1e5", "1e-05" -> "1e-5"): DS has only 16 characters. */
static size_t compact_exponent(const char *in, size_t n, char *out)
{
    size_t i = 0, j = 0;
    while (i < n && in[i] != 'e')
        out[j++] = in[i++];
    if (i < n) {
        out[j++] = in[i++];
        if (i < n && (in[i] == '+' || in[i] == '-')) {
            if (in[i] == '-')
                out[j++] = '-';
            i++;
        }
        while (i + 1 < n && in[i] == '0')
            i++;
        while (i < n)
            out[j++] = in[i++];
    }
    out[j] = '\0';
    return j;
}

/* Formats d (finite) as a DS: the shortest text that reads back as d; if
 * that is over 16 characters, the most precise text that fits. */
static int format_ds(double d, char *buf, size_t size)
{
    char tmp[40];
    int n = fmt_double(d, tmp, sizeof tmp);
    for (int prec = 16; n >= 0; prec--) {
        if ((size_t)n < size) {
            size_t j = compact_exponent(tmp, (size_t)n, buf);
            if (j <= DS_MAX_CHARS)
                return (int)j;
        }
        if (prec < 1)
            break;
        n = snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        if (n < 0 || (size_t)n >= sizeof tmp)
            return -1;
    }
    return -1;
}

/* An integral JSON number (integer, or real without fraction) as int64. */
static bool json_int(const json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return true;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d != floor(d) || d < -9223372036854775808.0 || d >= 9223372036854775808.0)
            return false;
        *out = (int64_t)d;
        return true;
    }
    return false;
}

static int put_le(struct jr *r, uint64_t v, unsigned n)
{
    uint8_t b[8];
    for (unsigned i = 0; i < n; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    int rc = dynbuf_append(&r->val, b, n);
    return rc ? r_buf_fail(r, rc) : 0;
}

/* One value of US SS UL SL SV UV FL FD. */
static int number_value(struct jr *r, uint16_t vr, const json_t *v, size_t idx)
{
    char vs[3];
    dcm_vr_str(vr, vs);
    if (json_is_null(v))
        return r_fail(r, PACS_EINVAL, "Value[%zu] is null, but VR %s has no empty value", idx, vs);
    if (vr == DCM_VR_FL || vr == DCM_VR_FD) {
        double d;
        if (json_is_number(v)) {
            d = json_number_value(v);
        } else if (json_is_string(v) && strcmp(json_string_value(v), "NaN") == 0) {
            d = NAN;
        } else if (json_is_string(v) && strcmp(json_string_value(v), "Infinity") == 0) {
            d = INFINITY;
        } else if (json_is_string(v) && strcmp(json_string_value(v), "-Infinity") == 0) {
            d = -INFINITY;
        } else {
            return r_fail(r, PACS_EINVAL, "Value[%zu] must be a number, not %s", idx,
                          json_type_name(v));
        }
        if (vr == DCM_VR_FD) {
            uint64_t u;
            memcpy(&u, &d, 8);
            return put_le(r, u, 8);
        }
        if (isfinite(d) && fabs(d) > FLT_MAX)
            return r_fail(r, PACS_EINVAL, "Value[%zu] is out of range for VR FL", idx);
        float f = (float)d;
        uint32_t u;
        memcpy(&u, &f, 4);
        return put_le(r, u, 4);
    }
    int64_t i = 0;
    uint64_t u = 0;
    bool neg = false;
    if (json_is_string(v) && (vr == DCM_VR_SV || vr == DCM_VR_UV)) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        bool ok = vr == DCM_VR_UV ? parse_u64(s, n, &u) : parse_i64(s, n, &i);
        if (!ok)
            return r_fail(r, PACS_EINVAL, "Value[%zu] is not a %s integer", idx,
                          vr == DCM_VR_UV ? "64-bit unsigned" : "64-bit signed");
        if (vr == DCM_VR_SV)
            u = (uint64_t)i;
        return put_le(r, u, 8);
    }
    if (!json_int(v, &i))
        return r_fail(r, PACS_EINVAL, "Value[%zu] must be an integer, not %s", idx,
                      json_is_number(v) ? "a fraction or out of range" : json_type_name(v));
    neg = i < 0;
    u = (uint64_t)i;
    int64_t lo = 0;
    uint64_t hi = 0;
    unsigned size = 0;
    switch (vr) {
    case DCM_VR_US: lo = 0; hi = 0xffff; size = 2; break;
    case DCM_VR_SS: lo = INT16_MIN; hi = INT16_MAX; size = 2; break;
    case DCM_VR_UL: lo = 0; hi = 0xffffffffu; size = 4; break;
    case DCM_VR_SL: lo = INT32_MIN; hi = INT32_MAX; size = 4; break;
    case DCM_VR_SV: lo = INT64_MIN; hi = INT64_MAX; size = 8; break;
    case DCM_VR_UV: lo = 0; hi = UINT64_MAX; size = 8; break;
    }
    if (i < lo || (!neg && u > hi))
        return r_fail(r, PACS_EINVAL, "Value[%zu] = %" PRId64 " is out of range for VR %s", idx,
                      i, vs);
    return put_le(r, u, size);
}

static int at_value(struct jr *r, const json_t *v, size_t idx)
{
    uint32_t tag;
    if (!json_is_string(v) || !parse_tag(json_string_value(v), json_string_length(v), &tag))
        return r_fail(r, PACS_EINVAL, "Value[%zu] must be a tag as 8 hexadecimal digits", idx);
    uint8_t b[4] = { (uint8_t)(tag >> 16), (uint8_t)(tag >> 24), (uint8_t)tag, (uint8_t)(tag >> 8) };
    int rc = dynbuf_append(&r->val, b, 4);
    return rc ? r_buf_fail(r, rc) : 0;
}

/* One DS or IS value: a number re-encoded, or a string kept as it is. */
static int decimal_value(struct jr *r, uint16_t vr, const json_t *v, size_t idx)
{
    char buf[40];
    int n;
    if (json_is_string(v)) {
        const char *s;
        size_t sn;
        int rc = string_text(r, vr, v, idx, &s, &sn);
        return rc ? rc : add_text(r, vr, s, sn, idx);
    }
    if (json_is_integer(v)) {
        n = (int)i64_text((int64_t)json_integer_value(v), buf);
        if (vr == DCM_VR_DS && n > DS_MAX_CHARS)
            n = format_ds((double)json_integer_value(v), buf, sizeof buf);
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        if (vr == DCM_VR_IS) {
            int64_t i;
            if (!json_int(v, &i))
                return r_fail(r, PACS_EINVAL, "Value[%zu] is not an integer (VR IS)", idx);
            n = (int)i64_text(i, buf);
        } else {
            n = format_ds(d, buf, sizeof buf);
        }
    } else {
        return r_fail(r, PACS_EINVAL, "Value[%zu] must be a number, a string or null, not %s",
                      idx, json_type_name(v));
    }
    if (n < 0)
        return r_fail(r, PACS_EINVAL, "Value[%zu] cannot be written as a decimal string", idx);
    int rc = dynbuf_append(&r->val, buf, (size_t)n);
    return rc ? r_buf_fail(r, rc) : 0;
}

/* One PN value: an object of component groups (or, as some servers send,
 * a plain string). */
static int pn_value(struct jr *r, const json_t *v, size_t idx)
{
    static const char *const names[3] = { "Alphabetic", "Ideographic", "Phonetic" };
    if (json_is_string(v)) {
        const char *s;
        size_t n;
        int rc = string_text(r, DCM_VR_PN, v, idx, &s, &n);
        return rc ? rc : add_text(r, DCM_VR_PN, s, n, idx);
    }
    if (!json_is_object(v))
        return r_fail(r, PACS_EINVAL, "Value[%zu] must be a Person Name object, not %s", idx,
                      json_type_name(v));
    const json_t *g[3] = { NULL, NULL, NULL };
    const char *key;
    size_t klen;
    json_t *m;
    json_object_keylen_foreach((json_t *)v, key, klen, m) {
        int k = -1;
        for (int i = 0; i < 3; i++)
            if (klen == strlen(names[i]) && memcmp(key, names[i], klen) == 0)
                k = i;
        char sb[48];
        if (k < 0)
            return r_fail(r, PACS_EINVAL, "Value[%zu] has an unknown member \"%s\"", idx,
                          show(key, klen, sb, sizeof sb));
        if (!json_is_string(m) && !json_is_null(m))
            return r_fail(r, PACS_EINVAL, "Value[%zu].%s must be a string, not %s", idx,
                          names[k], json_type_name(m));
        g[k] = json_is_string(m) && json_string_length(m) ? m : NULL;
    }
    int last = -1;
    for (int i = 0; i < 3; i++)
        if (g[i])
            last = i;
    for (int i = 0; i <= last; i++) {
        if (i > 0) {
            int rc = dynbuf_putc(&r->val, '=');
            if (rc)
                return r_buf_fail(r, rc);
        }
        if (!g[i])
            continue;
        const char *s = json_string_value(g[i]);
        size_t n = json_string_length(g[i]);
        if (memchr(s, '\\', n) || memchr(s, '=', n))
            return r_fail(r, PACS_EINVAL, "Value[%zu].%s contains '\\' or '=', which delimit "
                          "values and groups", idx, names[i]);
        int rc = add_text(r, DCM_VR_PN, s, n, idx);
        if (rc)
            return rc;
    }
    return 0;
}

/* Stores r->val; text is padded to even length with the VR's padding byte.
 * Binary values are kept exactly as given (the data set model keeps odd
 * lengths verbatim, and so a data set read from a file round-trips). */
static int store_value(struct jr *r, struct dcm_ds *ds, uint32_t tag, uint16_t vr)
{
    if ((r->val.len & 1) && dcm_vr_is_string(vr)) {
        int rc = dynbuf_putc(&r->val, (char)dcm_vr_pad(vr));
        if (rc)
            return r_buf_fail(r, rc);
    }
    if (r->val.len > PACS_MAX_VALUE_LEN)
        return r_buf_fail(r, PACS_ELIMIT);
    int rc = dcm_ds_put(ds, tag, vr, r->val.data, (uint32_t)r->val.len, NULL);
    return rc ? r_fail(r, rc, "cannot store the value (%s)", pacs_strerror(rc)) : 0;
}

static int read_ds(struct jr *r, const json_t *obj, struct dcm_ds *ds, unsigned depth);

static int read_items(struct jr *r, const json_t *arr, struct dcm_ds *ds, uint32_t tag,
                      unsigned depth)
{
    struct dcm_elem *seq;
    int rc = dcm_ds_put_seq(ds, tag, &seq);
    if (rc)
        return r_fail(r, rc, "cannot store the sequence (%s)", pacs_strerror(rc));
    size_t n = json_array_size(arr);
    if (n && depth >= PACS_MAX_SEQ_DEPTH)
        return r_fail(r, PACS_ELIMIT, "sequences nested deeper than %d", PACS_MAX_SEQ_DEPTH);
    for (size_t i = 0; i < n; i++) {
        const json_t *it = json_array_get(arr, i);
        if (!json_is_object(it) && !json_is_null(it))
            return r_fail(r, PACS_EINVAL, "Value[%zu] must be an object (a sequence item), not %s",
                          i, json_type_name(it));
        struct dcm_ds *item;
        rc = dcm_seq_add_item(ds, seq, &item);
        if (rc)
            return r_fail(r, rc, "cannot add item %zu (%s)", i, pacs_strerror(rc));
        if (json_is_null(it))
            continue; /* pydicom reads null as an empty item */
        path_item(&r->path, (long)i);
        rc = read_ds(r, it, item, depth + 1);
        path_item(&r->path, -1);
        if (rc)
            return rc;
    }
    return 0;
}

static int read_value_array(struct jr *r, const json_t *arr, struct dcm_ds *ds, uint32_t tag,
                            uint16_t vr, unsigned depth)
{
    char vs[3];
    if (!json_is_array(arr))
        return r_fail(r, PACS_EINVAL, "Value must be an array, not %s", json_type_name(arr));
    if (vr == DCM_VR_SQ)
        return read_items(r, arr, ds, tag, depth);
    if (binary_vr(vr))
        return r_fail(r, PACS_EINVAL, "Value is not allowed for VR %s (use InlineBinary)",
                      dcm_vr_str(vr, vs));
    size_t n = json_array_size(arr);
    if (n > 1 && dcm_vr_is_string(vr) && !dcm_vr_multivalued(vr))
        return r_fail(r, PACS_EINVAL, "VR %s takes a single value, not %zu",
                      dcm_vr_str(vr, vs), n);
    dynbuf_reset(&r->val);
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_array_get(arr, i);
        int rc = 0;
        if (dcm_vr_is_string(vr) && i > 0) {
            rc = dynbuf_putc(&r->val, '\\');
            if (rc)
                return r_buf_fail(r, rc);
        }
        if (vr == DCM_VR_AT) {
            rc = at_value(r, v, i);
        } else if (!dcm_vr_is_string(vr)) {
            rc = number_value(r, vr, v, i);
        } else if (json_is_null(v)) {
            rc = 0; /* an empty value (F.2.5) */
        } else if (vr == DCM_VR_DS || vr == DCM_VR_IS) {
            rc = decimal_value(r, vr, v, i);
        } else if (vr == DCM_VR_PN) {
            rc = pn_value(r, v, i);
        } else if (json_is_string(v)) {
            const char *s;
            size_t sn;
            rc = string_text(r, vr, v, i, &s, &sn);
            if (!rc)
                rc = add_text(r, vr, s, sn, i);
        } else {
            rc = r_fail(r, PACS_EINVAL, "Value[%zu] must be a string or null, not %s", i,
                        json_type_name(v));
        }
        if (rc)
            return rc;
    }
    return store_value(r, ds, tag, vr);
}

/* "InlineBinary"/"BulkDataURI": a string, or (as pydicom accepts, after the
 * PS3.18 F.4 example) an array holding one string. */
static const json_t *single_string(const json_t *v)
{
    if (json_is_array(v) && json_array_size(v) == 1)
        v = json_array_get(v, 0);
    return json_is_string(v) ? v : NULL;
}

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Strict RFC 4648 base64 (padding required, no whitespace, zero pad bits)
 * into r->val. */
static int b64_decode(struct jr *r, const char *s, size_t n)
{
    if (n % 4)
        return r_fail(r, PACS_EINVAL, "InlineBinary is not base64: length %zu is not a "
                      "multiple of 4", n);
    if (n / 4 * 3 > PACS_MAX_VALUE_LEN)
        return r_buf_fail(r, PACS_ELIMIT);
    int rc = dynbuf_reserve(&r->val, n / 4 * 3);
    if (rc)
        return r_buf_fail(r, rc);
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        unsigned pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)s[i + k];
            if (c == '=' && i + 4 == n && k >= 2 && (k == 3 || s[i + 3] == '=')) {
                v[k] = 0;
                pad++;
                continue;
            }
            v[k] = b64val(c);
            if (v[k] < 0 || pad)
                return r_fail(r, PACS_EINVAL, "InlineBinary is not base64: bad character at "
                              "offset %zu", i + (size_t)k);
        }
        uint32_t q = ((uint32_t)v[0] << 18) | ((uint32_t)v[1] << 12) | ((uint32_t)v[2] << 6) |
                     (uint32_t)v[3];
        if ((pad == 1 && (q & 0xff)) || (pad == 2 && (q & 0xffff)))
            return r_fail(r, PACS_EINVAL, "InlineBinary is not base64: non-zero padding bits "
                          "at the end");
        uint8_t *o = r->val.data + r->val.len;
        o[0] = (uint8_t)(q >> 16);
        if (pad < 2)
            o[1] = (uint8_t)(q >> 8);
        if (pad < 1)
            o[2] = (uint8_t)q;
        r->val.len += 3 - pad;
    }
    r->val.data[r->val.len] = '\0';
    return 0;
}

/* Pixel Data given as an encapsulated stream (items of fragments, as the
 * writer produces and pydicom reads): stored as encapsulated pixel data.
 * Returns 1 if r->val is not such a stream (then it is native data). */
static int try_encapsulated(struct jr *r, struct dcm_ds *ds, uint32_t tag, uint16_t vr)
{
    const uint8_t *p = r->val.data;
    size_t n = r->val.len, off = 0, items = 0;
    while (off < n) {
        if (n - off < 8)
            return 1;
        uint32_t t = DCM_TAG(load_le(p + off, 2), load_le(p + off + 2, 2));
        uint32_t len = (uint32_t)load_le(p + off + 4, 4);
        if (t == DCM_TAG_SEQ_END && len == 0 && off + 8 == n && items)
            break;
        if (t != DCM_TAG_ITEM || len > n - off - 8)
            return 1;
        off += 8 + (size_t)len;
        items++;
    }
    if (!items)
        return 1;
    struct dcm_elem *e;
    int rc = dcm_ds_put_encaps(ds, tag, vr, &e);
    for (off = 0; !rc && off < n;) {
        uint32_t t = DCM_TAG(load_le(p + off, 2), load_le(p + off + 2, 2));
        uint32_t len = (uint32_t)load_le(p + off + 4, 4);
        if (t != DCM_TAG_ITEM)
            break;
        if (off == 0) {
            /* frags[0], the Basic Offset Table, exists already (empty). */
            if (len) {
                uint8_t *bot = dcm_ds_alloc(ds, len);
                if (!bot) {
                    rc = PACS_ENOMEM;
                    break;
                }
                memcpy(bot, p + 8, len);
                e->u.frags.v[0].data = bot;
                e->u.frags.v[0].len = len;
            }
        } else {
            rc = dcm_encaps_add_frag(ds, e, p + off + 8, len);
        }
        off += 8 + (size_t)len;
    }
    return rc ? r_fail(r, rc, "cannot store encapsulated pixel data (%s)", pacs_strerror(rc)) : 0;
}

static int read_inline_binary(struct jr *r, const json_t *v, struct dcm_ds *ds, uint32_t tag,
                              uint16_t vr)
{
    char vs[3];
    dcm_vr_str(vr, vs);
    if (!binary_vr(vr))
        return r_fail(r, PACS_EINVAL, "InlineBinary is not allowed for VR %s", vs);
    const json_t *s = single_string(v);
    if (!s)
        return r_fail(r, PACS_EINVAL, "InlineBinary must be a string, not %s", json_type_name(v));
    dynbuf_reset(&r->val);
    int rc = b64_decode(r, json_string_value(s), json_string_length(s));
    if (rc)
        return rc;
    /* A length that is not a multiple of the VR's unit is kept verbatim, as
     * the Part 10 reader keeps it: what pacsd serves, it reads back. */
    if (tag == DCM_TAG_PIXEL_DATA && vr == DCM_VR_OB) {
        rc = try_encapsulated(r, ds, tag, vr);
        if (rc <= 0)
            return rc;
    }
    return store_value(r, ds, tag, vr);
}

static int read_elem(struct jr *r, const json_t *obj, struct dcm_ds *ds, uint32_t tag,
                     unsigned depth)
{
    char sb[48];
    if (!json_is_object(obj))
        return r_fail(r, PACS_EINVAL, "attribute must be an object, not %s", json_type_name(obj));
    const json_t *jvr = json_object_get(obj, "vr");
    if (!jvr)
        return r_fail(r, PACS_EINVAL, "\"vr\" is missing");
    if (!json_is_string(jvr))
        return r_fail(r, PACS_EINVAL, "\"vr\" must be a string, not %s", json_type_name(jvr));
    const char *vrs = json_string_value(jvr);
    size_t vrn = json_string_length(jvr);
    uint16_t vr = vrn == 2 ? dcm_vr_parse(vrs) : DCM_VR_NONE;
    if (!dcm_vr_known(vr))
        return r_fail(r, PACS_EINVAL, "unknown VR \"%s\"", show(vrs, vrn, sb, sizeof sb));
    const json_t *value = NULL;
    const char *which = NULL;
    unsigned count = 0;
    const char *key;
    size_t klen;
    json_t *m;
    json_object_keylen_foreach((json_t *)obj, key, klen, m) {
        if (klen == 2 && memcmp(key, "vr", 2) == 0)
            continue;
        if ((klen == 5 && memcmp(key, "Value", 5) == 0) ||
            (klen == 12 && memcmp(key, "InlineBinary", 12) == 0) ||
            (klen == 11 && memcmp(key, "BulkDataURI", 11) == 0)) {
            count++;
            value = m;
            which = key;
            continue;
        }
        return r_fail(r, PACS_EINVAL, "unknown member \"%s\"", show(key, klen, sb, sizeof sb));
    }
    if (count > 1)
        return r_fail(r, PACS_EINVAL, "more than one of Value, InlineBinary and BulkDataURI");
    if (!value) {
        if (vr == DCM_VR_SQ) {
            int rc = dcm_ds_put_seq(ds, tag, NULL);
            return rc ? r_fail(r, rc, "cannot store the sequence (%s)", pacs_strerror(rc)) : 0;
        }
        dynbuf_reset(&r->val);
        return store_value(r, ds, tag, vr);
    }
    if (which[0] == 'V')
        return read_value_array(r, value, ds, tag, vr, depth);
    if (which[0] == 'I')
        return read_inline_binary(r, value, ds, tag, vr);
    /* BulkDataURI: the data set cannot hold a reference, so the element is
     * kept with an empty value, as pydicom does without a handler. */
    if (!single_string(value))
        return r_fail(r, PACS_EINVAL, "BulkDataURI must be a string, not %s",
                      json_type_name(value));
    if (vr == DCM_VR_SQ)
        return r_fail(r, PACS_EINVAL, "BulkDataURI is not allowed for VR SQ");
    dynbuf_reset(&r->val);
    return store_value(r, ds, tag, vr);
}

static int read_ds(struct jr *r, const json_t *obj, struct dcm_ds *ds, unsigned depth)
{
    const char *key;
    size_t klen;
    json_t *v;
    char sb[48];
    json_object_keylen_foreach((json_t *)obj, key, klen, v) {
        uint32_t tag;
        if (!parse_tag(key, klen, &tag))
            return r_fail(r, PACS_EINVAL, "attribute name \"%s\" is not 8 hexadecimal digits",
                          show(key, klen, sb, sizeof sb));
        path_push(&r->path, tag);
        int rc = 0;
        if (DCM_GROUP(tag) == 0xfffe)
            rc = r_fail(r, PACS_EINVAL, "item and delimitation tags are not attributes");
        else if (dcm_ds_find(ds, tag))
            rc = r_fail(r, PACS_EINVAL, "duplicate attribute");
        else if (DCM_ELEMENT(tag) != 0) /* group lengths are ignored (F.2.2) */
            rc = read_elem(r, v, ds, tag, depth);
        if (rc)
            return rc;
        path_pop(&r->path);
    }
    return 0;
}

/* Text was stored as UTF-8: say so in the root and in every item that
 * declares its own Specific Character Set. */
static int mark_utf8(struct dcm_ds *ds, bool root, unsigned depth)
{
    if (root || dcm_ds_find(ds, DCM_TAG_SPECIFIC_CHARSET)) {
        int rc = dcm_ds_put_str(ds, DCM_TAG_SPECIFIC_CHARSET, DCM_VR_CS, "ISO_IR 192");
        if (rc)
            return rc;
    }
    if (depth > PACS_MAX_SEQ_DEPTH)
        return 0;
    for (uint32_t i = 0; i < ds->n; i++) {
        const struct dcm_elem *e = &ds->el[i];
        if (!(e->flags & DCM_EF_SEQ))
            continue;
        for (uint32_t k = 0; k < e->u.items.n; k++) {
            int rc = mark_utf8(e->u.items.v[k], false, depth + 1);
            if (rc)
                return rc;
        }
    }
    return 0;
}

/* One top-level object to a new root data set. */
static int read_root(struct jr *r, const json_t *obj, struct dcm_ds **out)
{
    *out = NULL;
    if (!json_is_object(obj))
        return r_fail(r, PACS_EINVAL, "a data set must be a JSON object, not %s",
                      json_type_name(obj));
    struct dcm_ds *ds = dcm_ds_new();
    if (!ds)
        return r_fail(r, PACS_ENOMEM, "out of memory");
    r->non_ascii = false;
    r->path.n = 0;
    int rc = read_ds(r, obj, ds, 0);
    if (!rc && r->non_ascii) {
        rc = mark_utf8(ds, true, 0);
        if (rc)
            rc = r_fail(r, rc, "cannot set the Specific Character Set (%s)", pacs_strerror(rc));
    }
    if (rc) {
        dcm_ds_free(ds);
        return rc;
    }
    *out = ds;
    return 0;
}

static int parse(const char *text, size_t len, json_t **root, struct pacs_err *err)
{
    *root = NULL;
    if (!text && len)
        return pacs_err_set(err, PACS_EINVAL, "NULL JSON text");
    if (len > PACS_MAX_JSON_LEN)
        return pacs_err_set(err, PACS_ELIMIT, "JSON document of %zu bytes exceeds the limit of "
                            "%u bytes", len, (unsigned)PACS_MAX_JSON_LEN);
    json_error_t je;
    *root = json_loadb(text ? text : "", len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!*root)
        return pacs_err_set(err, PACS_EINVAL, "JSON syntax error at line %d, column %d: %s",
                            je.line, je.column, je.text);
    return 0;
}

int dcm_json_read(const char *text, size_t len, struct dcm_ds **out, struct pacs_err *err)
{
    json_t *root;
    struct jr r = { .err = err };
    r.path.prefix = -1;
    dynbuf_init(&r.val, PACS_MAX_VALUE_LEN);
    *out = NULL;
    int rc = parse(text, len, &root, err);
    if (rc)
        goto out;
    const json_t *obj = root;
    if (json_is_array(root)) {
        if (json_array_size(root) != 1) {
            rc = pacs_err_set(err, PACS_EINVAL, "expected one data set, got an array of %zu",
                              json_array_size(root));
            goto out;
        }
        obj = json_array_get(root, 0);
        r.path.prefix = 0;
    }
    rc = read_root(&r, obj, out);
out:
    json_decref(root);
    dynbuf_free(&r.val);
    return rc;
}

int dcm_json_read_array(const char *text, size_t len, struct dcm_ds ***out, size_t *count,
                        struct pacs_err *err)
{
    json_t *root;
    struct jr r = { .err = err };
    struct dcm_ds **v = NULL;
    size_t n = 0, done = 0;
    r.path.prefix = -1;
    dynbuf_init(&r.val, PACS_MAX_VALUE_LEN);
    *out = NULL;
    *count = 0;
    int rc = parse(text, len, &root, err);
    if (rc)
        goto out;
    if (json_is_object(root)) {
        n = 1;
    } else {
        n = json_array_size(root);
    }
    if (n) {
        v = calloc(n, sizeof *v);
        if (!v) {
            rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
            goto out;
        }
    }
    for (done = 0; done < n; done++) {
        const json_t *obj = json_is_object(root) ? root : json_array_get(root, done);
        r.path.prefix = json_is_object(root) ? -1 : (long)done;
        rc = read_root(&r, obj, &v[done]);
        if (rc)
            goto out;
    }
    *out = v;
    *count = n;
    v = NULL;
out:
    if (v) {
        for (size_t i = 0; i < done; i++)
            dcm_ds_free(v[i]);
        free(v);
    }
    json_decref(root);
    dynbuf_free(&r.val);
    return rc;
}
