/* accept.c - the Accept header (see accept.h). */
#include "http/accept.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "dicom/frames.h"

static bool is_tchar(char c)
{
    return c != '\0' && (isalnum((unsigned char)c) || strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* Copies n bytes into dst (size cap), lower-cased if lower. */
static int copy_val(char *dst, size_t cap, const char *s, size_t n, bool lower, const char *what,
                    struct pacs_err *err)
{
    if (n >= cap)
        return pacs_err_set(err, PACS_ELIMIT, "Accept: %s longer than %zu characters", what,
                            cap - 1);
    for (size_t i = 0; i < n; i++)
        dst[i] = lower ? (char)tolower((unsigned char)s[i]) : s[i];
    dst[n] = '\0';
    return 0;
}

/* A parameter value: token (lenient: any visible character but ',', ';',
 * '"' and '\', since clients send type=application/dicom unquoted) or
 * quoted-string. The unescaped value goes to val (cap bytes). */
static int param_value(const char **pp, char *val, size_t cap, struct pacs_err *err)
{
    const char *p = *pp;
    size_t n = 0;
    if (*p == '"') {
        p++;
        while (*p && *p != '"') {
            if (*p == '\\' && p[1])
                p++;
            if ((unsigned char)*p < 0x20 && *p != '\t')
                return pacs_err_set(err, PACS_EINVAL, "Accept: control character in a value");
            if (n + 1 >= cap)
                return pacs_err_set(err, PACS_ELIMIT, "Accept: parameter value too long");
            val[n++] = *p++;
        }
        if (*p != '"')
            return pacs_err_set(err, PACS_EINVAL, "Accept: unterminated quoted string");
        p++;
    } else {
        while (*p > 0x20 && *p < 0x7f && !strchr(",;\"\\", *p)) {
            if (n + 1 >= cap)
                return pacs_err_set(err, PACS_ELIMIT, "Accept: parameter value too long");
            val[n++] = *p++;
        }
    }
    val[n] = '\0';
    *pp = p;
    return 0;
}

/* q = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ), in thousandths. */
static int parse_q(const char *v, unsigned *q, struct pacs_err *err)
{
    unsigned whole, frac = 0, digits = 0;
    if (v[0] != '0' && v[0] != '1')
        goto bad;
    whole = (unsigned)(v[0] - '0');
    const char *p = v + 1;
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9' && digits < 3) {
            frac = frac * 10 + (unsigned)(*p - '0');
            digits++;
            p++;
        }
    }
    if (*p)
        goto bad;
    while (digits++ < 3)
        frac *= 10;
    if (whole == 1 && frac)
        goto bad;
    *q = whole * 1000 + frac;
    return 0;
bad:
    return pacs_err_set(err, PACS_EINVAL, "Accept: bad q value '%.16s'", v);
}

static bool ts_ok(const char *s)
{
    size_t n = strlen(s);
    if (strcmp(s, "*") == 0)
        return true;
    if (n == 0 || n > 64 || s[0] == '.' || s[n - 1] == '.')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(isdigit((unsigned char)s[i]) || (s[i] == '.' && s[i + 1] != '.')))
            return false;
    return true;
}

/* One media range starting at *pp, up to the next top-level ',' or end. */
static int parse_range(const char **pp, struct http_media_range *r, struct pacs_err *err)
{
    const char *p = skip_ws(*pp);
    const char *start = p;
    int rc;
    memset(r, 0, sizeof *r);
    r->q = 1000;
    while (is_tchar(*p))
        p++;
    if (*p != '/' || p == start)
        return pacs_err_set(err, PACS_EINVAL, "Accept: '%.32s' is not a media type", start);
    p++;
    const char *sub = p;
    while (is_tchar(*p))
        p++;
    if (p == sub)
        return pacs_err_set(err, PACS_EINVAL, "Accept: '%.32s' has no subtype", start);
    if ((rc = copy_val(r->type, sizeof r->type, start, (size_t)(p - start), true, "media type",
                       err)))
        return rc;
    if (strncmp(r->type, "*/", 2) == 0 && strcmp(r->type, "*/*") != 0)
        return pacs_err_set(err, PACS_EINVAL, "Accept: '%s' is not a media range", r->type);
    for (;;) {
        p = skip_ws(p);
        if (*p == ',' || *p == '\0')
            break;
        if (*p != ';')
            return pacs_err_set(err, PACS_EINVAL, "Accept: unexpected '%c' after %s", *p,
                                r->type);
        p = skip_ws(p + 1);
        if (*p == ';' || *p == ',' || *p == '\0')
            continue; /* empty parameter */
        const char *name = p;
        while (is_tchar(*p))
            p++;
        size_t nlen = (size_t)(p - name);
        p = skip_ws(p);
        if (nlen == 0 || *p != '=')
            return pacs_err_set(err, PACS_EINVAL, "Accept: parameter without a value in %s",
                                r->type);
        p = skip_ws(p + 1);
        char val[HTTP_MEDIA_TYPE_MAX + 1];
        if ((rc = param_value(&p, val, sizeof val, err)))
            return rc;
        if (nlen == 1 && (name[0] == 'q' || name[0] == 'Q')) {
            if ((rc = parse_q(val, &r->q, err)))
                return rc;
        } else if (nlen == 4 && strncasecmp(name, "type", 4) == 0) {
            if ((rc = copy_val(r->root_type, sizeof r->root_type, val, strlen(val), true,
                               "type parameter", err)))
                return rc;
        } else if (nlen == 15 && strncasecmp(name, "transfer-syntax", 15) == 0) {
            if (!ts_ok(val))
                return pacs_err_set(err, PACS_EINVAL,
                                    "Accept: transfer-syntax '%.64s' is not '*' or a UID", val);
            if ((rc = copy_val(r->transfer_syntax, sizeof r->transfer_syntax, val, strlen(val),
                               false, "transfer-syntax", err)))
                return rc;
        }
    }
    *pp = p;
    return 0;
}

int http_accept_parse(const char *header, struct http_accept *out, struct pacs_err *err)
{
    const char *p = header ? skip_ws(header) : "";
    int rc;
    out->n = 0;
    out->n_excluded = 0;
    if (*p == '\0') {
        memset(&out->r[0], 0, sizeof out->r[0]);
        memcpy(out->r[0].type, "*/*", 4);
        out->r[0].q = 1000;
        out->n = 1;
        return 0;
    }
    size_t n = 0;
    for (;;) {
        p = skip_ws(p);
        if (*p == ',') { /* empty list elements are allowed (RFC 9110 5.6.1) */
            p++;
            continue;
        }
        if (*p == '\0')
            break;
        if (n + out->n_excluded == PACS_MAX_ACCEPT_RANGES) {
            rc = pacs_err_set(err, PACS_ELIMIT, "Accept: more than %d media ranges",
                              PACS_MAX_ACCEPT_RANGES);
            goto fail;
        }
        if ((rc = parse_range(&p, &out->r[n], err)))
            goto fail;
        if (out->r[n].q > 0) {
            n++;
        } else {
            memcpy(out->excluded[out->n_excluded++], out->r[n].type, sizeof out->r[n].type);
        }
    }
    /* Stable insertion sort by q, highest first. */
    for (size_t i = 1; i < n; i++) {
        struct http_media_range t = out->r[i];
        size_t j = i;
        while (j > 0 && out->r[j - 1].q < t.q) {
            out->r[j] = out->r[j - 1];
            j--;
        }
        out->r[j] = t;
    }
    out->n = n;
    return 0;
fail:
    out->n = 0;
    out->n_excluded = 0;
    return rc;
}

/* 2 for type/subtype, 1 for type/ANY, 0 for ANY/ANY. */
static int specificity(const char *range)
{
    if (strcmp(range, "*/*") == 0)
        return 0;
    size_t n = strlen(range);
    return n >= 2 && strcmp(range + n - 2, "/*") == 0 ? 1 : 2;
}

bool http_accept_allows(const struct http_accept *acc, const char *type)
{
    int best_ok = -1, best_no = -1;
    for (size_t i = 0; i < acc->n; i++)
        if (http_media_covers(acc->r[i].type, type) && specificity(acc->r[i].type) > best_ok)
            best_ok = specificity(acc->r[i].type);
    for (size_t i = 0; i < acc->n_excluded; i++)
        if (http_media_covers(acc->excluded[i], type) && specificity(acc->excluded[i]) > best_no)
            best_no = specificity(acc->excluded[i]);
    return best_ok > best_no;
}

bool http_media_covers(const char *range, const char *type)
{
    if (strcmp(range, "*/*") == 0)
        return true;
    size_t rn = strlen(range);
    if (rn >= 2 && strcmp(range + rn - 2, "/*") == 0)
        return strncmp(range, type, rn - 1) == 0;
    return strcasecmp(range, type) == 0;
}

int http_range_parse(const char *h, uint64_t len, uint64_t *first, uint64_t *last)
{
    if (!h)
        return 0;
    while (*h == ' ')
        h++;
    if (strncasecmp(h, "bytes=", 6) != 0)
        return 0;
    const char *p = h + 6;
    if (strchr(p, ','))
        return 0;
    while (*p == ' ')
        p++;
    uint64_t a = 0, b = 0;
    bool has_a = false, has_b = false;
    for (; *p >= '0' && *p <= '9'; p++, has_a = true) {
        if (a > (UINT64_MAX - 9) / 10)
            return 0;
        a = a * 10 + (uint64_t)(*p - '0');
    }
    if (*p != '-')
        return 0;
    p++;
    for (; *p >= '0' && *p <= '9'; p++, has_b = true) {
        if (b > (UINT64_MAX - 9) / 10)
            return 0;
        b = b * 10 + (uint64_t)(*p - '0');
    }
    while (*p == ' ')
        p++;
    if (*p || (!has_a && !has_b))
        return 0;
    if (!has_a) { /* suffix: the last b bytes */
        if (b == 0 || len == 0)
            return -1;
        *first = b >= len ? 0 : len - b;
        *last = len - 1;
        return 1;
    }
    if (has_b && b < a)
        return 0;
    if (a >= len)
        return -1;
    *first = a;
    *last = has_b && b < len ? b : len - 1;
    return 1;
}

int http_frame_list_parse(const char *s, uint64_t **out, size_t *n)
{
    size_t cnt = 1;
    *out = NULL;
    *n = 0;
    for (const char *p = s; *p; p++)
        cnt += *p == ',';
    if (cnt > PACS_MAX_FRAMES)
        return PACS_ELIMIT;
    uint64_t *v = calloc(cnt, sizeof *v);
    if (!v)
        return PACS_ENOMEM;
    const char *p = s;
    for (size_t i = 0; i < cnt; i++) {
        uint64_t x = 0;
        size_t digits = 0;
        while (*p >= '0' && *p <= '9') {
            if (++digits > 9)
                goto bad;
            x = x * 10 + (uint64_t)(*p++ - '0');
        }
        if (digits == 0 || x == 0 || (*p != ',' && *p != '\0'))
            goto bad;
        v[i] = x;
        if (*p == ',')
            p++;
    }
    *out = v;
    *n = cnt;
    return 0;
bad:
    free(v);
    return PACS_EINVAL;
}
