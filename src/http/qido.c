/* qido.c - the QIDO-RS query string to an archive query (qido.h).
 *
 * Two passes. The first walks the query string once, decodes each
 * parameter and gathers what it says (attributes with their values, UID
 * repeats joined; includefield tags; limit, offset, flags), so that
 * repeats are known before anything is built. The second builds the query
 * in an order that makes query_add_key's "adding a tag again replaces it"
 * harmless: default return keys, then includefield return keys, then the
 * scope UIDs and the matching keys, which replace a return key of the same
 * tag and are never replaced by one.
 */
#include "http/qido.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dicom/dict.h"
#include "dicom/vr.h"
#include "util/dynbuf.h"
#include "util/limits.h"
#include "util/utf8.h"

#define TAG_CHARSET DCM_TAG(0x0008, 0x0005)
#define TAG_QR_LEVEL DCM_TAG(0x0008, 0x0052)
#define TAG_QR_VIEW DCM_TAG(0x0008, 0x0053)
#define TAG_RETRIEVE_URL DCM_TAG(0x0008, 0x1190)
#define TAG_STUDY_UID DCM_TAG(0x0020, 0x000d)
#define TAG_SERIES_UID DCM_TAG(0x0020, 0x000e)

/* Longest keyword looked up; PS3.6's longest is under 70 characters. */
#define KEYWORD_MAX 128
/* How much of a client's text an error message quotes, bytes. */
#define SHOW_MAX 64

/* PS3.18 Tables 10.6.3-3 to 10.6.3-5, less Retrieve URL (the caller's). */
static const uint32_t study_keys[] = {
    DCM_TAG(0x0008, 0x0020), /* StudyDate */
    DCM_TAG(0x0008, 0x0030), /* StudyTime */
    DCM_TAG(0x0008, 0x0050), /* AccessionNumber */
    DCM_TAG(0x0008, 0x0056), /* InstanceAvailability */
    DCM_TAG(0x0008, 0x0061), /* ModalitiesInStudy */
    DCM_TAG(0x0008, 0x0090), /* ReferringPhysicianName */
    DCM_TAG(0x0008, 0x0201), /* TimezoneOffsetFromUTC */
    DCM_TAG(0x0010, 0x0010), /* PatientName */
    DCM_TAG(0x0010, 0x0020), /* PatientID */
    DCM_TAG(0x0010, 0x0030), /* PatientBirthDate */
    DCM_TAG(0x0010, 0x0040), /* PatientSex */
    DCM_TAG(0x0020, 0x000d), /* StudyInstanceUID */
    DCM_TAG(0x0020, 0x0010), /* StudyID */
    DCM_TAG(0x0020, 0x1206), /* NumberOfStudyRelatedSeries */
    DCM_TAG(0x0020, 0x1208), /* NumberOfStudyRelatedInstances */
};
static const uint32_t series_keys[] = {
    DCM_TAG(0x0008, 0x0060), /* Modality */
    DCM_TAG(0x0008, 0x0201), /* TimezoneOffsetFromUTC */
    DCM_TAG(0x0008, 0x103e), /* SeriesDescription */
    DCM_TAG(0x0020, 0x000e), /* SeriesInstanceUID */
    DCM_TAG(0x0020, 0x0011), /* SeriesNumber */
    DCM_TAG(0x0020, 0x1209), /* NumberOfSeriesRelatedInstances */
    DCM_TAG(0x0040, 0x0244), /* PerformedProcedureStepStartDate */
    DCM_TAG(0x0040, 0x0245), /* PerformedProcedureStepStartTime */
    DCM_TAG(0x0040, 0x0275), /* RequestAttributesSequence */
};
static const uint32_t instance_keys[] = {
    DCM_TAG(0x0008, 0x0016), /* SOPClassUID */
    DCM_TAG(0x0008, 0x0018), /* SOPInstanceUID */
    DCM_TAG(0x0008, 0x0056), /* InstanceAvailability */
    DCM_TAG(0x0008, 0x0201), /* TimezoneOffsetFromUTC */
    DCM_TAG(0x0020, 0x0013), /* InstanceNumber */
    DCM_TAG(0x0028, 0x0010), /* Rows */
    DCM_TAG(0x0028, 0x0011), /* Columns */
    DCM_TAG(0x0028, 0x0100), /* BitsAllocated */
    DCM_TAG(0x0028, 0x0008), /* NumberOfFrames */
};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const char *const level_names[] = { "study", "series", "instance" };

/* One attribute parameter; repeats of a UID attribute are joined here. */
struct attr {
    uint32_t path[QIDO_MAX_PATH];
    unsigned depth;
    char *name;          /* decoded, as the client wrote it (for messages) */
    struct dynbuf value; /* decoded; a UID list with '\' between values */
};

struct parser {
    enum qido_resource res;
    struct pacs_err *err;
    struct attr *attrs;
    size_t n_attrs, cap_attrs;
    uint32_t *inc;
    size_t n_inc, cap_inc;
    size_t n_params;
    bool include_all;
    bool seen_limit, seen_offset, seen_fuzzy, seen_evm, seen_mvm;
    size_t limit, offset;
    bool limit_clamped, fuzzy;
    bool has_accept, has_charset;
    struct dynbuf accept, charset;
};

/* --- messages ---------------------------------------------------------------- */

/* Copies s[0..n) into dst (cap > 4) for a message: well-formed UTF-8 kept,
 * other bytes and control characters shown as '?', cut at a character
 * boundary with "..." past SHOW_MAX or the room there is. */
static void show(char *dst, size_t cap, const char *s, size_t n)
{
    size_t room = cap - 4 < SHOW_MAX ? cap - 4 : SHOW_MAX;
    size_t o = 0, i = 0;
    while (i < n) {
        const uint8_t *u = (const uint8_t *)s + i;
        size_t l = utf8_seq_len(u, n - i);
        bool ok = l > 0 && !(l == 1 && (u[0] < 0x20 || u[0] == 0x7f));
        size_t w = ok ? l : 1;
        if (o + w > room) {
            memcpy(dst + o, "...", 3);
            o += 3;
            break;
        }
        if (ok)
            memcpy(dst + o, u, l);
        else
            dst[o] = '?';
        o += w;
        i += ok ? l : 1;
    }
    dst[o] = '\0';
}

/* Makes msg well-formed UTF-8 without control characters in place (it may
 * quote client text that query.c cut at a byte count): the HTTP layer puts
 * it in a JSON string. */
static void msg_clean(char *msg)
{
    size_t n = strlen(msg);
    for (size_t i = 0; i < n;) {
        uint8_t *u = (uint8_t *)msg + i;
        size_t l = utf8_seq_len(u, n - i);
        if (l == 0 || (l == 1 && (u[0] < 0x20 || u[0] == 0x7f))) {
            *u = '?';
            l = 1;
        }
        i += l;
    }
}

/* Sets the error "<name>: <detail>"; returns code. */
__attribute__((format(printf, 5, 6)))
static int fail(struct parser *p, int code, const char *name, size_t name_len, const char *fmt, ...)
{
    if (!p->err)
        return code;
    char shown[SHOW_MAX + 8];
    char detail[sizeof p->err->msg];
    show(shown, sizeof shown, name, name_len);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (n < 0)
        detail[0] = '\0';
    pacs_err_set(p->err, code, "%s: %s", shown, detail);
    msg_clean(p->err->msg);
    return code;
}

static int oom(struct parser *p)
{
    return pacs_err_set(p->err, PACS_ENOMEM, "out of memory");
}

/* query.c's messages start with the tag, "(0008,0020): ..."; the client
 * named the attribute already, so that part goes. */
static const char *strip_tag(const char *msg)
{
    if (strlen(msg) > 13 && msg[0] == '(' && msg[5] == ',' && msg[10] == ')' && msg[11] == ':' &&
        msg[12] == ' ')
        return msg + 13;
    return msg;
}

/* --- decoding ------------------------------------------------------------------ */

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into out (reset first), '+' as a space.
 * PACS_EINVAL for a '%' without two hex digits. */
static int pct_decode(const char *s, size_t n, struct dynbuf *out)
{
    dynbuf_reset(out);
    int rc = dynbuf_reserve(out, n);
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            int hi = i + 2 < n ? hexval((unsigned char)s[i + 1]) : -1;
            int lo = i + 2 < n ? hexval((unsigned char)s[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return PACS_EINVAL;
            c = (unsigned char)(hi << 4 | lo);
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        out->data[out->len++] = c;
    }
    out->data[out->len] = '\0';
    return 0;
}

/* NULL, or why decoded text is refused. */
static const char *text_problem(const struct dynbuf *b)
{
    if (!utf8_valid(b->data, b->len))
        return "is not valid UTF-8";
    for (size_t i = 0; i < b->len; i++)
        if (b->data[i] < 0x20 || b->data[i] == 0x7f)
            return "holds a control character";
    return NULL;
}

static const char *buf_str(const struct dynbuf *b)
{
    return b->len ? (const char *)b->data : "";
}

static bool is_word(const struct dynbuf *b, const char *w)
{
    return b->len == strlen(w) && memcmp(b->data, w, b->len) == 0;
}

/* --- attribute IDs ----------------------------------------------------------- */

static bool not_a_key(uint32_t tag)
{
    uint16_t g = DCM_GROUP(tag);
    return g == 0x0000 || g == 0x0002 || g == 0xfffe || DCM_ELEMENT(tag) == 0 ||
           tag == TAG_QR_LEVEL || tag == TAG_QR_VIEW;
}

/* One component: eight hex digits, or a keyword of the dictionary. */
static bool parse_component(const char *s, size_t n, uint32_t *tag)
{
    if (n == 8) {
        uint32_t t = 0;
        size_t i = 0;
        for (; i < 8 && hexval((unsigned char)s[i]) >= 0; i++)
            t = t << 4 | (uint32_t)hexval((unsigned char)s[i]);
        if (i == 8) {
            *tag = t;
            return true;
        }
    }
    char kw[KEYWORD_MAX];
    if (n == 0 || n >= sizeof kw)
        return false;
    memcpy(kw, s, n);
    kw[n] = '\0';
    const struct dcm_dict_entry *e = dcm_dict_find_keyword(kw);
    if (!e)
        return false;
    *tag = e->tag;
    return true;
}

/* Parses s[0..n), an attribute ID or a dotted path, into path/depth. The
 * error names the parameter (pname); for an includefield item the item
 * leads the detail. */
static int parse_attr_id(struct parser *p, const char *s, size_t n, const char *pname, size_t pn,
                         bool item, uint32_t *path, unsigned *depth)
{
    char it[SHOW_MAX + 8] = "";
    if (item) {
        show(it, sizeof it, s, n);
        size_t l = strlen(it);
        if (l + 2 < sizeof it)
            memcpy(it + l, ": ", 3);
    }
    if (n == 0)
        return fail(p, PACS_EINVAL, pname, pn, "empty attribute");
    unsigned d = 0;
    const char *end = s + n;
    for (const char *c = s;;) {
        const char *dot = memchr(c, '.', (size_t)(end - c));
        const char *cend = dot ? dot : end;
        if (d == QIDO_MAX_PATH)
            return fail(p, PACS_ELIMIT, pname, pn, "%sa path longer than %u attributes", it,
                        (unsigned)QIDO_MAX_PATH);
        uint32_t tag;
        if (!parse_component(c, (size_t)(cend - c), &tag)) {
            if (cend == end && c == s)
                return fail(p, PACS_EINVAL, pname, pn, "%sunknown attribute", it);
            char comp[SHOW_MAX + 8];
            show(comp, sizeof comp, c, (size_t)(cend - c));
            return fail(p, PACS_EINVAL, pname, pn, "%sunknown attribute \"%s\" in the path", it,
                        comp);
        }
        if (not_a_key(tag))
            return fail(p, PACS_EINVAL, pname, pn, "%s(%04X,%04X) is not a query attribute", it,
                        DCM_GROUP(tag), DCM_ELEMENT(tag));
        if (d > 0 && dcm_dict_vr(path[d - 1]) != DCM_VR_SQ)
            return fail(p, PACS_EINVAL, pname, pn, "%s(%04X,%04X) is not a sequence", it,
                        DCM_GROUP(path[d - 1]), DCM_ELEMENT(path[d - 1]));
        path[d++] = tag;
        if (!dot)
            break;
        c = dot + 1;
    }
    *depth = d;
    return 0;
}

/* --- the first pass: gathering ---------------------------------------------------- */

static int add_include(struct parser *p, uint32_t tag)
{
    for (size_t i = 0; i < p->n_inc; i++)
        if (p->inc[i] == tag)
            return 0;
    if (p->n_inc == p->cap_inc) {
        size_t cap = p->cap_inc ? p->cap_inc * 2 : 16;
        uint32_t *n = realloc(p->inc, cap * sizeof *n);
        if (!n)
            return oom(p);
        p->inc = n;
        p->cap_inc = cap;
    }
    p->inc[p->n_inc++] = tag;
    return 0;
}

static int do_includefield(struct parser *p, const struct dynbuf *v)
{
    static const char name[] = "includefield";
    if (v->len == 0)
        return fail(p, PACS_EINVAL, name, sizeof name - 1, "empty value");
    const char *s = (const char *)v->data, *end = s + v->len;
    for (;;) {
        const char *comma = memchr(s, ',', (size_t)(end - s));
        const char *a = s, *b = comma ? comma : end;
        while (a < b && *a == ' ')
            a++;
        while (b > a && b[-1] == ' ')
            b--;
        if (p->n_params++ >= QIDO_MAX_PARAMS)
            return fail(p, PACS_ELIMIT, name, sizeof name - 1, "more than %u parameters",
                        (unsigned)QIDO_MAX_PARAMS);
        if (b == a)
            return fail(p, PACS_EINVAL, name, sizeof name - 1, "empty attribute in the list");
        if (b - a == 3 && memcmp(a, "all", 3) == 0) {
            p->include_all = true;
        } else {
            uint32_t path[QIDO_MAX_PATH];
            unsigned depth;
            int rc = parse_attr_id(p, a, (size_t)(b - a), name, sizeof name - 1, true, path, &depth);
            if (rc == 0)
                rc = add_include(p, path[0]);
            if (rc)
                return rc;
        }
        if (!comma)
            return 0;
        s = comma + 1;
    }
}

/* An unsigned decimal integer; *big when it exceeds max (value then max). */
static bool parse_uint(const struct dynbuf *v, size_t max, size_t *out, bool *big)
{
    if (v->len == 0)
        return false;
    size_t x = 0;
    *big = false;
    for (size_t i = 0; i < v->len; i++) {
        if (v->data[i] < '0' || v->data[i] > '9')
            return false;
        if (!*big) {
            x = x * 10 + (size_t)(v->data[i] - '0');
            if (x > max)
                *big = true;
        }
    }
    *out = *big ? max : x;
    return true;
}

static int parse_bool(struct parser *p, const struct dynbuf *name, const struct dynbuf *v, bool *seen,
                      bool *out)
{
    if (*seen)
        return fail(p, PACS_EINVAL, buf_str(name), name->len, "given more than once");
    *seen = true;
    if (is_word(v, "true"))
        *out = true;
    else if (is_word(v, "false"))
        *out = false;
    else
        return fail(p, PACS_EINVAL, buf_str(name), name->len, "must be true or false");
    return 0;
}

static int join(struct parser *p, struct dynbuf *into, bool *has, const struct dynbuf *v)
{
    int rc = 0;
    if (*has)
        rc = dynbuf_putc(into, ',');
    if (rc == 0)
        rc = dynbuf_append(into, v->data, v->len);
    *has = true;
    return rc ? oom(p) : 0;
}

/* Appends v to a, commas of a UID list turned into backslashes. */
static int append_value(struct attr *a, const struct dynbuf *v, bool uid)
{
    size_t start = a->value.len;
    int rc = dynbuf_append(&a->value, v->data, v->len);
    if (rc == 0 && uid)
        for (size_t i = start; i < a->value.len; i++)
            if (a->value.data[i] == ',')
                a->value.data[i] = '\\';
    return rc;
}

static bool looks_like_attribute(const struct dynbuf *name)
{
    unsigned char c0 = name->data[0];
    if ((c0 >= 'A' && c0 <= 'Z') || (c0 >= '0' && c0 <= '9') || memchr(name->data, '.', name->len))
        return true;
    if (name->len != 8)
        return false;
    for (size_t i = 0; i < 8; i++)
        if (hexval(name->data[i]) < 0)
            return false;
    return true;
}

static int do_attribute(struct parser *p, const struct dynbuf *name, const struct dynbuf *v)
{
    const char *nm = buf_str(name);
    uint32_t path[QIDO_MAX_PATH];
    unsigned depth;
    /* Only what looks like a keyword, a tag or a path can be a misspelt
     * attribute; other names are unknown parameters. */
    if (!looks_like_attribute(name))
        return fail(p, PACS_EINVAL, nm, name->len, "unknown parameter");
    int rc = parse_attr_id(p, nm, name->len, nm, name->len, false, path, &depth);
    if (rc)
        return rc;
    bool uid = depth == 1 && dcm_dict_vr(path[0]) == DCM_VR_UI;
    for (size_t i = 0; i < p->n_attrs; i++) {
        struct attr *a = &p->attrs[i];
        if (a->depth != depth || memcmp(a->path, path, depth * sizeof path[0]) != 0)
            continue;
        if (!uid)
            return fail(p, PACS_EINVAL, nm, name->len,
                        "given more than once (only UID attributes may be repeated)");
        if (dynbuf_putc(&a->value, '\\') || append_value(a, v, true))
            return oom(p);
        return 0;
    }
    if (p->n_attrs == p->cap_attrs) {
        size_t cap = p->cap_attrs ? p->cap_attrs * 2 : 8;
        struct attr *na = realloc(p->attrs, cap * sizeof *na);
        if (!na)
            return oom(p);
        p->attrs = na;
        p->cap_attrs = cap;
    }
    struct attr *a = &p->attrs[p->n_attrs];
    memset(a, 0, sizeof *a);
    memcpy(a->path, path, depth * sizeof path[0]);
    a->depth = depth;
    dynbuf_init(&a->value, 0);
    a->name = malloc(name->len + 1);
    if (!a->name)
        return oom(p);
    memcpy(a->name, nm, name->len + 1);
    p->n_attrs++;
    return append_value(a, v, uid) ? oom(p) : 0;
}

static int do_param(struct parser *p, const struct dynbuf *name, const struct dynbuf *v)
{
    const char *nm = buf_str(name);
    bool big;
    if (is_word(name, "includefield"))
        return do_includefield(p, v);
    if (is_word(name, "limit")) {
        if (p->seen_limit)
            return fail(p, PACS_EINVAL, nm, name->len, "given more than once");
        p->seen_limit = true;
        if (!parse_uint(v, QIDO_MAX_LIMIT, &p->limit, &big))
            return fail(p, PACS_EINVAL, nm, name->len, "must be a non-negative integer");
        p->limit_clamped = big;
        return 0;
    }
    if (is_word(name, "offset")) {
        if (p->seen_offset)
            return fail(p, PACS_EINVAL, nm, name->len, "given more than once");
        p->seen_offset = true;
        if (!parse_uint(v, QIDO_MAX_OFFSET, &p->offset, &big))
            return fail(p, PACS_EINVAL, nm, name->len, "must be a non-negative integer");
        if (big)
            return fail(p, PACS_ELIMIT, nm, name->len, "larger than %u", (unsigned)QIDO_MAX_OFFSET);
        return 0;
    }
    if (is_word(name, "fuzzymatching"))
        return parse_bool(p, name, v, &p->seen_fuzzy, &p->fuzzy);
    if (is_word(name, "emptyvaluematching")) {
        bool on = false;
        int rc = parse_bool(p, name, v, &p->seen_evm, &on);
        if (rc == 0 && on)
            rc = fail(p, PACS_EUNSUPPORTED, nm, name->len,
                      "true is not supported (an empty value matches everything)");
        return rc;
    }
    if (is_word(name, "multiplevaluematching")) {
        bool on;
        return parse_bool(p, name, v, &p->seen_mvm, &on);
    }
    if (is_word(name, "accept"))
        return join(p, &p->accept, &p->has_accept, v);
    if (is_word(name, "charset"))
        return join(p, &p->charset, &p->has_charset, v);
    return do_attribute(p, name, v);
}

static int gather(struct parser *p, const char *qs)
{
    size_t n = strnlen(qs, QIDO_MAX_QUERY_LEN + 1);
    if (n > QIDO_MAX_QUERY_LEN)
        return pacs_err_set(p->err, PACS_ELIMIT, "query string: longer than %u bytes",
                            (unsigned)QIDO_MAX_QUERY_LEN);
    struct dynbuf name, value;
    dynbuf_init(&name, 0);
    dynbuf_init(&value, 0);
    int rc = 0;
    const char *end = qs + n;
    for (const char *s = qs; s < end;) {
        const char *amp = memchr(s, '&', (size_t)(end - s));
        const char *send = amp ? amp : end;
        const char *eq = memchr(s, '=', (size_t)(send - s));
        const char *nend = eq ? eq : send;
        const char *vs = eq ? eq + 1 : send;
        const char *problem;
        if (send == s)
            goto next; /* "a=1&&b=2", a trailing '&' */
        if (p->n_params++ >= QIDO_MAX_PARAMS) {
            rc = pacs_err_set(p->err, PACS_ELIMIT, "query string: more than %u parameters",
                              (unsigned)QIDO_MAX_PARAMS);
            goto out;
        }
        rc = pct_decode(s, (size_t)(nend - s), &name);
        if (rc == PACS_EINVAL) {
            rc = fail(p, rc, s, (size_t)(nend - s), "invalid percent-encoding in the name");
            goto out;
        }
        if (rc) {
            rc = oom(p);
            goto out;
        }
        if ((problem = text_problem(&name)) != NULL) {
            rc = fail(p, PACS_EINVAL, s, (size_t)(nend - s), "the name %s", problem);
            goto out;
        }
        if (name.len == 0) {
            rc = pacs_err_set(p->err, PACS_EINVAL, "query string: a parameter without a name");
            goto out;
        }
        rc = pct_decode(vs, (size_t)(send - vs), &value);
        if (rc == PACS_EINVAL) {
            rc = fail(p, rc, buf_str(&name), name.len, "invalid percent-encoding");
            goto out;
        }
        if (rc) {
            rc = oom(p);
            goto out;
        }
        if ((problem = text_problem(&value)) != NULL) {
            rc = fail(p, PACS_EINVAL, buf_str(&name), name.len, "the value %s", problem);
            goto out;
        }
        rc = do_param(p, &name, &value);
        if (rc)
            goto out;
    next:
        s = amp ? amp + 1 : end;
    }
out:
    dynbuf_free(&name);
    dynbuf_free(&value);
    return rc;
}

/* --- the second pass: building ------------------------------------------------------ */

static int add_defaults(struct parser *p, struct query *q, const uint32_t *tags, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct pacs_err e = { 0 };
        int rc = query_add_key(q, tags[i], NULL, &e);
        if (rc)
            return pacs_err_set(p->err, rc, "default key (%04X,%04X): %s", DCM_GROUP(tags[i]),
                                DCM_ELEMENT(tags[i]), e.msg);
    }
    return 0;
}

/* A matching key's attribute (or the top of its path) as a return key:
 * PACS_EINVAL from query_add_key for a return key means "below the level"
 * (the other PACS_EINVAL causes, groups 0000 and FFFE, are refused before). */
static int add_return(struct parser *p, struct query *q, uint32_t tag, const char *name)
{
    struct pacs_err e = { 0 };
    int rc = query_add_key(q, tag, NULL, &e);
    if (rc == PACS_EINVAL)
        return fail(p, rc, name, strlen(name), "not a key at the %s level", level_names[p->res]);
    if (rc == PACS_ENOMEM)
        return oom(p);
    if (rc)
        return fail(p, rc, name, strlen(name), "%s", strip_tag(e.msg));
    return 0;
}

static int add_match(struct parser *p, struct query *q, const struct attr *a)
{
    uint32_t tag = a->path[0];
    bool has_value = a->value.len > 0;
    if (tag == TAG_RETRIEVE_URL) {
        if (has_value)
            return fail(p, PACS_EINVAL, a->name, strlen(a->name), "cannot be matched");
        return 0;
    }
    if (tag == TAG_CHARSET && has_value)
        return fail(p, PACS_EINVAL, a->name, strlen(a->name),
                    "not a matching key (QIDO-RS values are UTF-8)");
    if (a->depth > 1 && has_value)
        return fail(p, PACS_EUNSUPPORTED, a->name, strlen(a->name),
                    "matching inside a sequence is not supported");
    if (a->depth == 1 && has_value && dcm_dict_vr(tag) == DCM_VR_SQ)
        return fail(p, PACS_EUNSUPPORTED, a->name, strlen(a->name),
                    "a sequence can be returned, not matched (give it no value)");
    int rc = add_return(p, q, tag, a->name);
    if (rc || !has_value || a->depth > 1)
        return rc;
    struct pacs_err e = { 0 };
    rc = query_add_key(q, tag, (const char *)a->value.data, &e);
    if (rc == PACS_ENOMEM)
        return oom(p);
    if (rc)
        return fail(p, rc, a->name, strlen(a->name), "%s", strip_tag(e.msg));
    return 0;
}

static const struct attr *find_attr(const struct parser *p, uint32_t tag)
{
    for (size_t i = 0; i < p->n_attrs; i++)
        if (p->attrs[i].depth == 1 && p->attrs[i].path[0] == tag)
            return &p->attrs[i];
    return NULL;
}

static int add_scope_uid(struct parser *p, struct query *q, uint32_t tag, const char *uid,
                         const char *what)
{
    size_t n = strnlen(uid, 65);
    bool ok = n >= 1 && n <= 64;
    for (size_t i = 0; ok && i < n; i++)
        ok = uid[i] > 0x20 && uid[i] < 0x7f && uid[i] != '\\' && uid[i] != ',';
    if (!ok)
        return fail(p, PACS_EINVAL, what, strlen(what), "not a valid UID");
    const struct attr *a = find_attr(p, tag);
    if (a)
        return fail(p, PACS_EINVAL, a->name, strlen(a->name), "already given by the path");
    struct pacs_err e = { 0 };
    int rc = query_add_key(q, tag, uid, &e);
    if (rc == PACS_ENOMEM)
        return oom(p);
    if (rc)
        return fail(p, rc, what, strlen(what), "%s", strip_tag(e.msg));
    return 0;
}

static int build(struct parser *p, const struct qido_scope *scope, struct query **out)
{
    static const enum index_level levels[] = { INDEX_STUDY, INDEX_SERIES, INDEX_INSTANCE };
    struct query *q = NULL;
    int rc = query_new(levels[p->res], QUERY_STUDY_ROOT, &q);
    if (rc) {
        rc = oom(p);
        goto out;
    }
    query_include_main_tags(q, true);
    query_include_all(q, p->include_all);

    /* Defaults (PS3.18 10.6.3.3): the level's table, and the tables of the
     * levels above that the path does not fix. */
    bool study = scope && scope->study_uid;
    if (p->res == QIDO_STUDIES || !study)
        rc = add_defaults(p, q, study_keys, COUNT(study_keys));
    if (rc == 0 && (p->res == QIDO_SERIES || (p->res == QIDO_INSTANCES && !(scope && scope->series_uid))))
        rc = add_defaults(p, q, series_keys, COUNT(series_keys));
    if (rc == 0 && p->res == QIDO_INSTANCES)
        rc = add_defaults(p, q, instance_keys, COUNT(instance_keys));
    if (rc)
        goto out;

    for (size_t i = 0; i < p->n_inc; i++) {
        if (p->inc[i] == TAG_RETRIEVE_URL)
            continue;
        struct pacs_err e = { 0 };
        rc = query_add_key(q, p->inc[i], NULL, &e);
        if (rc == PACS_EINVAL) {
            rc = 0; /* below the level: PS3.18 10.6.3.3 drops it */
            continue;
        }
        if (rc) {
            rc = rc == PACS_ENOMEM ? oom(p)
                                   : fail(p, rc, "includefield", 12, "%s", strip_tag(e.msg));
            goto out;
        }
    }

    if (scope && scope->study_uid)
        rc = add_scope_uid(p, q, TAG_STUDY_UID, scope->study_uid, "study UID in the path");
    if (rc == 0 && scope && scope->series_uid)
        rc = add_scope_uid(p, q, TAG_SERIES_UID, scope->series_uid, "series UID in the path");
    for (size_t i = 0; rc == 0 && i < p->n_attrs; i++)
        rc = add_match(p, q, &p->attrs[i]);
    if (rc)
        goto out;

    query_set_limit(q, p->limit ? p->limit : 1, p->offset);
    *out = q;
    q = NULL;
out:
    query_free(q);
    return rc;
}

/* --- the entry points ---------------------------------------------------------------- */

static void parser_free(struct parser *p)
{
    for (size_t i = 0; i < p->n_attrs; i++) {
        free(p->attrs[i].name);
        dynbuf_free(&p->attrs[i].value);
    }
    free(p->attrs);
    free(p->inc);
    dynbuf_free(&p->accept);
    dynbuf_free(&p->charset);
}

static int check_args(enum qido_resource res, const struct qido_scope *scope, struct parser *p)
{
    if ((unsigned)res > QIDO_INSTANCES)
        return pacs_err_set(p->err, PACS_EINVAL, "bad QIDO-RS resource %d", (int)res);
    if (!scope)
        return 0;
    if (scope->series_uid && (res != QIDO_INSTANCES || !scope->study_uid))
        return pacs_err_set(p->err, PACS_EINVAL, "a series UID in the path needs a study UID "
                                                 "and an instances search");
    if (scope->study_uid && res == QIDO_STUDIES)
        return pacs_err_set(p->err, PACS_EINVAL, "a study UID in the path of a studies search");
    return 0;
}

int qido_parse(enum qido_resource res, const struct qido_scope *scope, const char *query_string,
               struct qido_request *out, struct pacs_err *err)
{
    struct parser p = { .res = res, .err = err, .limit = QIDO_MAX_LIMIT };
    struct query *q = NULL;
    memset(out, 0, sizeof *out);
    pacs_err_clear(err);
    dynbuf_init(&p.accept, 0);
    dynbuf_init(&p.charset, 0);
    int rc = check_args(res, scope, &p);
    if (rc == 0 && query_string)
        rc = gather(&p, query_string);
    if (rc == 0)
        rc = build(&p, scope, &q);
    if (rc)
        goto out;
    if (p.has_accept && (out->accept = dynbuf_take(&p.accept, NULL)) == NULL)
        goto nomem;
    if (p.has_charset && (out->charset = dynbuf_take(&p.charset, NULL)) == NULL)
        goto nomem;
    out->q = q;
    q = NULL;
    out->resource = res;
    out->limit = p.limit;
    out->offset = p.offset;
    out->limit_given = p.seen_limit;
    out->limit_clamped = p.limit_clamped;
    out->fuzzy = p.fuzzy;
    out->include_all = p.include_all;
    out->include = p.inc;
    out->n_include = p.n_inc;
    p.inc = NULL;
    goto out;
nomem:
    rc = oom(&p);
    qido_request_free(out);
out:
    query_free(q);
    parser_free(&p);
    return rc;
}

void qido_request_free(struct qido_request *r)
{
    if (!r)
        return;
    query_free(r->q);
    free(r->include);
    free(r->accept);
    free(r->charset);
    memset(r, 0, sizeof *r);
}
