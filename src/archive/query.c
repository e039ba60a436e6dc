/* query.c - the query model (C-FIND, QIDO-RS, /tools/find) and query_run.
 *
 * A key is classified once, when it is added: its VR (index table, computed
 * attribute, dictionary, or the identifier's own), its source (index column,
 * computed attribute, stored metadata) and its matching kind (PS3.4
 * C.2.2.2). query_run then gives the index every condition it evaluates
 * exactly as match_text() below does, and matches the rest here on each
 * row; both paths use the same normalized key values, so a key gives the
 * same answer whichever path evaluates it. docs/query.md has the rules.
 */
#include "archive/query.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dicom/dict.h"
#include "dicom/json.h"
#include "dicom/vr.h"
#include "util/dynbuf.h"
#include "util/limits.h"
#include "util/metrics.h"

#define TAG_QR_LEVEL DCM_TAG(0x0008, 0x0052)
#define TAG_PATIENT_ID DCM_TAG(0x0010, 0x0020)
#define TAG_STUDY_UID DCM_TAG(0x0020, 0x000d)
#define TAG_SERIES_UID DCM_TAG(0x0020, 0x000e)
#define TAG_SOP_INSTANCE_UID DCM_TAG(0x0008, 0x0018)
#define TAG_QR_VIEW DCM_TAG(0x0008, 0x0053)
#define TAG_TIMEZONE DCM_TAG(0x0008, 0x0201)

/* Longest list condition handed to the index: SQL backends bind one
 * parameter per value and cap their number; longer lists (of main tags) are
 * matched here on the row values instead. */
#define QUERY_INDEX_LIST_MAX 500
/* Most values in one list key (a C-FIND or QIDO value with backslashes). */
#define QUERY_MAX_LIST PACS_MAX_QUERY_LIST

enum qmatch { QM_RETURN, QM_SINGLE, QM_WILDCARD, QM_RANGE, QM_LIST };

enum qcomp {
    QC_NONE,
    QC_PAT_STUDIES,
    QC_PAT_SERIES,
    QC_PAT_INSTANCES,
    QC_STUDY_SERIES,
    QC_STUDY_INSTANCES,
    QC_SERIES_INSTANCES,
    QC_MODALITIES,
    QC_SOP_CLASSES,
    QC_AVAILABILITY,
    QC_RETRIEVE_AET,
};

/* Attributes the archive computes rather than stores. `counts`: the value
 * comes from the index's want_counts. InstanceAvailability and
 * RetrieveAETitle belong to every level (PATIENT is the top). */
static const struct {
    uint32_t tag;
    uint16_t vr;
    enum index_level level;
    enum qcomp id;
    bool counts;
} computed_tags[] = {
    { DCM_TAG(0x0008, 0x0054), DCM_VR_AE, INDEX_PATIENT, QC_RETRIEVE_AET, false },
    { DCM_TAG(0x0008, 0x0056), DCM_VR_CS, INDEX_PATIENT, QC_AVAILABILITY, false },
    { DCM_TAG(0x0008, 0x0061), DCM_VR_CS, INDEX_STUDY, QC_MODALITIES, true },
    { DCM_TAG(0x0008, 0x0062), DCM_VR_UI, INDEX_STUDY, QC_SOP_CLASSES, true },
    { DCM_TAG(0x0020, 0x1200), DCM_VR_IS, INDEX_PATIENT, QC_PAT_STUDIES, true },
    { DCM_TAG(0x0020, 0x1202), DCM_VR_IS, INDEX_PATIENT, QC_PAT_SERIES, true },
    { DCM_TAG(0x0020, 0x1204), DCM_VR_IS, INDEX_PATIENT, QC_PAT_INSTANCES, true },
    { DCM_TAG(0x0020, 0x1206), DCM_VR_IS, INDEX_STUDY, QC_STUDY_SERIES, true },
    { DCM_TAG(0x0020, 0x1208), DCM_VR_IS, INDEX_STUDY, QC_STUDY_INSTANCES, true },
    { DCM_TAG(0x0020, 0x1209), DCM_VR_IS, INDEX_SERIES, QC_SERIES_INSTANCES, true },
};
#define N_COMPUTED (sizeof computed_tags / sizeof computed_tags[0])

/* The unique key of each level (PS3.4 C.6.1.1 / C.6.2.1). */
static const uint32_t unique_tags[4] = { TAG_PATIENT_ID, TAG_STUDY_UID, TAG_SERIES_UID,
                                         TAG_SOP_INSTANCE_UID };

static const char *const level_names[4] = { "PATIENT", "STUDY", "SERIES", "IMAGE" };

struct qkey {
    uint32_t tag;
    uint16_t vr;
    enum qmatch kind;
    int col;          /* index_main_tags position, or -1 */
    int comp;         /* computed_tags position, or -1 */
    bool seq;         /* a sequence: return key only */
    char *value;      /* QM_SINGLE, QM_WILDCARD: normalized, owned */
    char *lo, *hi;    /* QM_RANGE: owned, NULL for an open end */
    char **list;      /* QM_LIST: n_list owned values */
    size_t n_list;
    bool list_wild;   /* some list value holds '*' or '?' */
};

struct query {
    enum index_level level;
    enum query_model model;
    struct qkey *keys;
    size_t n, cap;
    size_t limit, offset;
    bool main_tags;
    bool all;
};

/* --- helpers on text --------------------------------------------------------- */

static bool vr_is_text(uint16_t vr)
{
    return vr == DCM_VR_LT || vr == DCM_VR_ST || vr == DCM_VR_UT || vr == DCM_VR_UR;
}

/* PS3.4 C.2.2.2.4: the VRs on which '*' and '?' are wild cards. */
static bool vr_wildcards(uint16_t vr)
{
    switch (vr) {
    case DCM_VR_AE: case DCM_VR_CS: case DCM_VR_LO: case DCM_VR_LT: case DCM_VR_PN:
    case DCM_VR_SH: case DCM_VR_ST: case DCM_VR_UC: case DCM_VR_UR: case DCM_VR_UT:
        return true;
    default:
        return false;
    }
}

static bool vr_is_datetime(uint16_t vr)
{
    return vr == DCM_VR_DA || vr == DCM_VR_TM || vr == DCM_VR_DT;
}

/* Trailing spaces and NULs are padding; leading spaces are too, except in
 * the free-text VRs (PS3.5 6.2). */
static void trim(const char **s, size_t *n, uint16_t vr)
{
    const char *p = *s;
    size_t len = *n;
    while (len && (p[len - 1] == ' ' || p[len - 1] == '\0'))
        len--;
    if (!vr_is_text(vr))
        while (len && *p == ' ') {
            p++;
            len--;
        }
    *s = p;
    *n = len;
}

/* Binary numbers, which the index and the matcher see as decimal text. */
static bool vr_is_number(uint16_t vr)
{
    return dcm_vr_num_size(vr) && vr != DCM_VR_AT;
}

static bool vr_multi(uint16_t vr)
{
    return dcm_vr_multivalued(vr) || vr_is_number(vr);
}

/* An element's text as ingest gives it to the index: strings decoded to
 * UTF-8, binary numbers in decimal ("%lld", "%.17g") joined by '\'.
 * PACS_EUNSUPPORTED for other VRs. */
static int elem_text(const struct dcm_ds *ds, const struct dcm_elem *e, struct dynbuf *out,
                     struct pacs_err *err)
{
    if (dcm_vr_is_string(e->vr))
        return dcm_elem_text(ds, e, out, err);
    if (!vr_is_number(e->vr))
        return PACS_EUNSUPPORTED;
    uint32_t vm = dcm_elem_vm(e);
    for (uint32_t k = 0; k < vm; k++) {
        int rc;
        if (e->vr == DCM_VR_FL || e->vr == DCM_VR_FD) {
            double d;
            if (dcm_elem_double(e, k, &d))
                return PACS_EINVAL;
            rc = dynbuf_printf(out, "%s%.17g", k ? "\\" : "", d);
        } else {
            int64_t v;
            if (dcm_elem_int(e, k, &v))
                return PACS_EINVAL;
            rc = dynbuf_printf(out, "%s%lld", k ? "\\" : "", (long long)v);
        }
        if (rc)
            return pacs_err_set(err, rc, "out of memory");
    }
    return 0;
}

static bool has_wild(const char *s, size_t n)
{
    return memchr(s, '*', n) || memchr(s, '?', n);
}

static bool dt_valid(uint16_t vr, const char *s, size_t n)
{
    struct dcm_datetime dt;
    if (vr == DCM_VR_DA)
        return dcm_parse_da(s, n, &dt) == 0;
    if (vr == DCM_VR_TM)
        return dcm_parse_tm(s, n, &dt) == 0;
    return dcm_parse_dt(s, n, &dt) == 0;
}

/* Normalizes one DA or TM value as ingest does for the index: the retired
 * separators go ('.' in YYYY.MM.DD, ':' in HH:MM:SS) when what remains
 * parses; anything else is kept as is. tmp holds at least 64 bytes. */
static void norm_value(uint16_t vr, const char **s, size_t *n, char *tmp)
{
    char sep = vr == DCM_VR_DA ? '.' : vr == DCM_VR_TM ? ':' : 0;
    if (!sep || *n >= 64 || !memchr(*s, sep, *n))
        return;
    size_t k = 0;
    for (size_t i = 0; i < *n; i++)
        if ((*s)[i] != sep)
            tmp[k++] = (*s)[i];
    if (dt_valid(vr, tmp, k)) {
        *s = tmp;
        *n = k;
    }
}

/* A normalized copy of s[0..n). */
static char *norm_dup(const char *s, size_t n, uint16_t vr)
{
    char tmp[64];
    norm_value(vr, &s, &n, tmp);
    return strndup(s, n);
}

static size_t cp_len(const char *s, size_t n)
{
    unsigned char c = (unsigned char)s[0];
    size_t want = c < 0xc0 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    size_t k = 1;
    while (k < want && k < n && ((unsigned char)s[k] & 0xc0) == 0x80)
        k++;
    return k;
}

static int fold(int c, bool icase)
{
    return (icase && c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c;
}

static bool text_eq(const char *a, size_t an, const char *b, size_t bn, bool icase)
{
    if (an != bn)
        return false;
    for (size_t i = 0; i < an; i++)
        if (fold((unsigned char)a[i], icase) != fold((unsigned char)b[i], icase))
            return false;
    return true;
}

/* '*' matches any run (also empty), '?' one character (a UTF-8 code
 * point); ASCII letters fold when icase. The last '*' is the only
 * backtracking point needed for this pattern language. */
static bool wild_match(const char *p, size_t pn, const char *s, size_t sn, bool icase)
{
    size_t pi = 0, si = 0, star = (size_t)-1, mark = 0;
    while (si < sn) {
        if (pi < pn && p[pi] == '*') {
            star = ++pi;
            mark = si;
        } else if (pi < pn && p[pi] == '?') {
            pi++;
            si += cp_len(s + si, sn - si);
        } else if (pi < pn && fold((unsigned char)p[pi], icase) == fold((unsigned char)s[si], icase)) {
            pi++;
            si++;
        } else if (star != (size_t)-1) {
            mark += cp_len(s + mark, sn - mark);
            pi = star;
            si = mark;
        } else {
            return false;
        }
    }
    while (pi < pn && p[pi] == '*')
        pi++;
    return pi == pn;
}

/* Byte order, as the index compares text (SQLite BINARY, PostgreSQL "C"). */
static int text_cmp(const char *a, size_t an, const char *b)
{
    size_t bn = strlen(b);
    int c = memcmp(a, b, an < bn ? an : bn);
    if (c)
        return c;
    return an < bn ? -1 : an > bn;
}

/* One attribute value against one key. */
static bool match_one(const struct qkey *k, const char *v, size_t n)
{
    bool icase = k->vr == DCM_VR_PN;
    switch (k->kind) {
    case QM_SINGLE:
        return text_eq(k->value, strlen(k->value), v, n, icase);
    case QM_WILDCARD:
        return wild_match(k->value, strlen(k->value), v, n, icase);
    case QM_RANGE:
        /* A partial upper bound names a whole period ("1030" is 10:30:00
         * to 10:30:59.999999): values it prefixes are in range, as the
         * index has it. */
        return (!k->lo || text_cmp(v, n, k->lo) >= 0) &&
               (!k->hi || text_cmp(v, n, k->hi) <= 0 ||
                (n >= strlen(k->hi) && memcmp(v, k->hi, strlen(k->hi)) == 0));
    case QM_LIST:
        for (size_t i = 0; i < k->n_list; i++) {
            const char *item = k->list[i];
            size_t in = strlen(item);
            if (k->list_wild && has_wild(item, in) ? wild_match(item, in, v, n, icase)
                                                   : text_eq(item, in, v, n, icase))
                return true;
        }
        return false;
    case QM_RETURN:
        return true;
    }
    return false;
}

/* An attribute's whole UTF-8 text against a key: a multi-valued
 * attribute matches if any of its values does. Dates and times are
 * normalized as the key was. */
static bool match_text(const struct qkey *k, const char *s, size_t n)
{
    if (k->kind == QM_RETURN)
        return true;
    if (n == 0)
        return false; /* an empty attribute matches only universal keys */
    char tmp[64];
    const char *end = s + n;
    bool multi = vr_multi(k->vr);
    for (;;) {
        const char *bs = multi ? memchr(s, '\\', (size_t)(end - s)) : NULL;
        const char *vend = bs ? bs : end;
        const char *v = s;
        size_t vn = (size_t)(vend - s);
        trim(&v, &vn, k->vr);
        norm_value(k->vr, &v, &vn, tmp);
        if (vn > 0 && match_one(k, v, vn))
            return true;
        if (!bs)
            return false;
        s = bs + 1;
    }
}

/* --- building a query -------------------------------------------------------- */

static void key_clear(struct qkey *k)
{
    free(k->value);
    free(k->lo);
    free(k->hi);
    for (size_t i = 0; i < k->n_list; i++)
        free(k->list[i]);
    free(k->list);
    k->value = k->lo = k->hi = NULL;
    k->list = NULL;
    k->n_list = 0;
    k->list_wild = false;
    k->kind = QM_RETURN;
}

static int find_computed(uint32_t tag)
{
    for (size_t i = 0; i < N_COMPUTED; i++)
        if (computed_tags[i].tag == tag)
            return (int)i;
    return -1;
}

/* The level a key belongs to, or -1 when only the metadata knows it. In
 * the Study Root model patient attributes are study attributes, which
 * changes nothing here: a PATIENT key is never below a STUDY query. */
static int key_level(const struct qkey *k)
{
    if (k->comp >= 0)
        return (int)computed_tags[k->comp].level;
    if (k->col >= 0)
        return (int)index_main_tags[k->col].level;
    return -1;
}

static int parse_range(struct qkey *k, const char *s, size_t n, struct pacs_err *err)
{
    /* DT values may carry a "-ZZXX" UTC offset: a DT that parses whole is a
     * single value, otherwise the first '-' that leaves two valid (or
     * empty) ends is the separator. DA and TM have exactly one '-'. */
    if (k->vr == DCM_VR_DT && dt_valid(k->vr, s, n)) {
        k->value = norm_dup(s, n, k->vr);
        k->kind = QM_SINGLE;
        return k->value ? 0 : PACS_ENOMEM;
    }
    const char *sep = NULL;
    for (const char *p = s; (p = memchr(p, '-', (size_t)(s + n - p))) != NULL; p++) {
        if (k->vr != DCM_VR_DT) {
            if (sep)
                goto bad;
            sep = p;
            continue;
        }
        const char *a = s, *b = p + 1;
        size_t an = (size_t)(p - s), bn = (size_t)(s + n - b);
        trim(&a, &an, k->vr);
        trim(&b, &bn, k->vr);
        if ((an == 0 || dt_valid(k->vr, a, an)) && (bn == 0 || dt_valid(k->vr, b, bn))) {
            sep = p;
            break;
        }
    }
    if (!sep)
        goto bad;
    const char *a = s, *b = sep + 1;
    size_t an = (size_t)(sep - s), bn = (size_t)(s + n - b);
    trim(&a, &an, k->vr);
    trim(&b, &bn, k->vr);
    if (an == 0 && bn == 0)
        return 0; /* "-": every date, a universal match */
    if (an) {
        k->lo = norm_dup(a, an, k->vr);
        if (!k->lo)
            return PACS_ENOMEM;
        if (!dt_valid(k->vr, k->lo, strlen(k->lo)))
            goto bad;
    }
    if (bn) {
        k->hi = norm_dup(b, bn, k->vr);
        if (!k->hi)
            return PACS_ENOMEM;
        if (!dt_valid(k->vr, k->hi, strlen(k->hi)))
            goto bad;
    }
    k->kind = QM_RANGE;
    return 0;
bad:
    return pacs_err_set(err, PACS_EINVAL, "(%04X,%04X): malformed range \"%.*s\"",
                        DCM_GROUP(k->tag), DCM_ELEMENT(k->tag), (int)(n > 64 ? 64 : n), s);
}

static int parse_list(struct qkey *k, const char *s, size_t n, struct pacs_err *err)
{
    size_t count = 1;
    for (size_t i = 0; i < n; i++)
        count += s[i] == '\\';
    if (count > QUERY_MAX_LIST)
        return pacs_err_set(err, PACS_ELIMIT, "(%04X,%04X): more than %u values",
                            DCM_GROUP(k->tag), DCM_ELEMENT(k->tag), (unsigned)QUERY_MAX_LIST);
    k->list = calloc(count, sizeof *k->list);
    if (!k->list)
        return PACS_ENOMEM;
    const char *end = s + n;
    for (;;) {
        const char *bs = memchr(s, '\\', (size_t)(end - s));
        const char *v = s;
        size_t vn = (size_t)((bs ? bs : end) - s);
        trim(&v, &vn, k->vr);
        if (vn > 0) {
            if (vr_is_datetime(k->vr) && memchr(v, '-', vn))
                return pacs_err_set(err, PACS_EUNSUPPORTED,
                                    "(%04X,%04X): a list of ranges is not supported",
                                    DCM_GROUP(k->tag), DCM_ELEMENT(k->tag));
            char *item = norm_dup(v, vn, k->vr);
            if (!item)
                return PACS_ENOMEM;
            k->list[k->n_list++] = item;
            if (vr_wildcards(k->vr) && has_wild(item, strlen(item)))
                k->list_wild = true;
        }
        if (!bs)
            break;
        s = bs + 1;
    }
    /* Nothing but separators: universal. */
    k->kind = k->n_list ? QM_LIST : QM_RETURN;
    return 0;
}

/* Classifies a key value (UTF-8, not NUL-terminated) per PS3.4 C.2.2.2. */
static int parse_value(struct qkey *k, const char *s, size_t n, struct pacs_err *err)
{
    trim(&s, &n, k->vr);
    size_t stars = 0;
    while (stars < n && s[stars] == '*')
        stars++;
    if (n == 0 || stars == n || k->seq)
        return 0;
    if (!dcm_vr_is_string(k->vr) && !vr_is_number(k->vr))
        return pacs_err_set(err, PACS_EUNSUPPORTED,
                            "(%04X,%04X): matching on a binary value is not supported",
                            DCM_GROUP(k->tag), DCM_ELEMENT(k->tag));
    if (vr_multi(k->vr) && memchr(s, '\\', n))
        return parse_list(k, s, n, err);
    if (vr_is_datetime(k->vr) && memchr(s, '-', n))
        return parse_range(k, s, n, err);
    k->value = norm_dup(s, n, k->vr);
    if (!k->value)
        return PACS_ENOMEM;
    k->kind = vr_wildcards(k->vr) && has_wild(s, n) ? QM_WILDCARD : QM_SINGLE;
    return 0;
}

/* The VR a key is matched and answered with: the index's, the computed
 * attribute's, the dictionary's, or for tags the dictionary does not know
 * the one the identifier gave. */
static uint16_t key_vr(uint32_t tag, int col, int comp, uint16_t hint)
{
    if (comp >= 0)
        return computed_tags[comp].vr;
    if (col >= 0)
        return index_main_tags[col].vr;
    uint16_t vr = dcm_dict_lookup(tag) ? dcm_dict_vr(tag) : DCM_VR_NONE;
    if (vr == DCM_VR_NONE || vr == DCM_VR_UN)
        vr = dcm_vr_known(hint) ? hint : DCM_VR_UN;
    return vr;
}

static int add_key(struct query *q, uint32_t tag, uint16_t vr_hint, bool seq, const char *value,
                   size_t len, struct pacs_err *err)
{
    uint16_t group = DCM_GROUP(tag);
    if (tag == DCM_TAG_SPECIFIC_CHARSET || tag == TAG_QR_LEVEL || tag == TAG_QR_VIEW)
        return 0; /* never matched: they describe the request itself */
    /* Orthanc 1.10 puts empty (0002,0002)/(0002,0003) in its IMAGE-level
     * identifiers and group lengths are harmless: skipped, like DCMTK's
     * SCPs do, rather than failing the whole query. */
    if (group == 0x0002 || DCM_ELEMENT(tag) == 0)
        return 0;
    if (group == 0x0000 || group == 0xfffe)
        return pacs_err_set(err, PACS_EINVAL, "(%04X,%04X) is not a key attribute", group,
                            DCM_ELEMENT(tag));
    struct qkey nk = { .tag = tag, .comp = find_computed(tag), .kind = QM_RETURN };
    nk.col = nk.comp >= 0 ? -1 : index_tag_find(tag);
    nk.vr = key_vr(tag, nk.col, nk.comp, vr_hint);
    nk.seq = seq || nk.vr == DCM_VR_SQ;
    if (nk.seq)
        nk.vr = DCM_VR_SQ;
    int lvl = key_level(&nk);
    if (lvl > (int)q->level)
        return pacs_err_set(err, PACS_EINVAL, "key (%04X,%04X) %s is below the %s level", group,
                            DCM_ELEMENT(tag), dcm_dict_keyword(tag), level_names[q->level]);
    /* Timezone Offset From UTC in a request says how to read its times
     * (PS3.4 C.2.2.2.5), it is no condition: a return key. */
    if (tag == TAG_TIMEZONE)
        value = NULL;
    int rc = parse_value(&nk, value ? value : "", value ? len : 0, err);
    if (rc) {
        key_clear(&nk);
        if (rc == PACS_ENOMEM)
            pacs_err_set(err, rc, "out of memory");
        return rc;
    }
    for (size_t i = 0; i < q->n; i++)
        if (q->keys[i].tag == tag) {
            key_clear(&q->keys[i]);
            q->keys[i] = nk;
            return 0;
        }
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 16;
        struct qkey *k = realloc(q->keys, cap * sizeof *k);
        if (!k) {
            key_clear(&nk);
            return pacs_err_set(err, PACS_ENOMEM, "out of memory");
        }
        q->keys = k;
        q->cap = cap;
    }
    q->keys[q->n++] = nk;
    return 0;
}

int query_new(enum index_level level, enum query_model model, struct query **out)
{
    *out = NULL;
    if ((unsigned)level > INDEX_INSTANCE || (model != QUERY_PATIENT_ROOT && model != QUERY_STUDY_ROOT))
        return PACS_EINVAL;
    /* The Study Root model has no patient level (PS3.4 C.6.2). */
    if (model == QUERY_STUDY_ROOT && level == INDEX_PATIENT)
        return PACS_EINVAL;
    struct query *q = calloc(1, sizeof *q);
    if (!q)
        return PACS_ENOMEM;
    q->level = level;
    q->model = model;
    *out = q;
    return 0;
}

int query_add_key(struct query *q, uint32_t tag, const char *value, struct pacs_err *err)
{
    return add_key(q, tag, DCM_VR_NONE, false, value, value ? strlen(value) : 0, err);
}

void query_set_limit(struct query *q, size_t limit, size_t offset)
{
    q->limit = limit;
    q->offset = offset;
}

void query_include_main_tags(struct query *q, bool on) { q->main_tags = on; }
void query_include_all(struct query *q, bool on) { q->all = on; }
enum index_level query_level(const struct query *q) { return q->level; }

void query_free(struct query *q)
{
    if (!q)
        return;
    for (size_t i = 0; i < q->n; i++)
        key_clear(&q->keys[i]);
    free(q->keys);
    free(q);
}

static int parse_level(const struct dcm_ds *ident, enum index_level *level, struct pacs_err *err)
{
    const struct dcm_elem *e = dcm_ds_find(ident, TAG_QR_LEVEL);
    const char *s;
    size_t n;
    /* An empty value has no bytes to point at: never hand it to dcm_elem_str. */
    if (!e || !dcm_elem_is_value(e) || e->len == 0 || dcm_elem_str(e, 0, &s, &n) != 0 || n == 0)
        return pacs_err_set(err, PACS_EINVAL, "QueryRetrieveLevel (0008,0052) missing");
    for (unsigned i = 0; i < 4; i++)
        if (n == strlen(level_names[i]) && memcmp(s, level_names[i], n) == 0) {
            *level = (enum index_level)i;
            return 0;
        }
    return pacs_err_set(err, PACS_EINVAL, "bad QueryRetrieveLevel \"%.*s\"", (int)(n > 16 ? 16 : n), s);
}

int query_from_identifier(const struct dcm_ds *ident, enum query_model model,
                          struct query **out, struct pacs_err *err)
{
    struct query *q = NULL;
    struct dynbuf text;
    enum index_level level;
    dynbuf_init(&text, 0);
    *out = NULL;
    int rc = parse_level(ident, &level, err);
    if (rc)
        goto out;
    rc = query_new(level, model, &q);
    if (rc) {
        if (rc == PACS_EINVAL)
            pacs_err_set(err, rc, "level %s does not exist in the Study Root model",
                         level_names[level]);
        else
            pacs_err_set(err, rc, "out of memory");
        goto out;
    }
    for (uint32_t i = 0; i < ident->n; i++) {
        struct dcm_elem el = ident->el[i];
        const struct dcm_elem *e = &el;
        if (DCM_ELEMENT(e->tag) == 0x0000)
            continue; /* group lengths are encoding, not keys */
        bool seq = (e->flags & DCM_EF_SEQ) || e->vr == DCM_VR_SQ;
        /* A standard tag sent as UN is read as its VR, as ingest does: UN
         * keeps the Little Endian bytes that VR would have. */
        if (!seq && e->vr == DCM_VR_UN && dcm_elem_is_value(e)) {
            uint16_t vr = dcm_dict_vr(e->tag);
            if (vr != DCM_VR_UN && vr != DCM_VR_SQ && (dcm_vr_is_string(vr) || vr_is_number(vr)))
                el.vr = vr;
        }
        dynbuf_reset(&text);
        if (!seq && dcm_elem_is_value(e) && e->len > 0) {
            rc = elem_text(ident, e, &text, err);
            if (rc == PACS_EUNSUPPORTED || rc == PACS_EINVAL)
                pacs_err_set(err, rc, "(%04X,%04X): cannot match on this %s value",
                             DCM_GROUP(e->tag), DCM_ELEMENT(e->tag),
                             dcm_vr_str(e->vr, (char[3]){ 0 }));
            if (rc)
                goto out;
        } else if (!seq && !dcm_elem_is_value(e)) {
            rc = pacs_err_set(err, PACS_EINVAL, "(%04X,%04X): pixel data is not a key",
                              DCM_GROUP(e->tag), DCM_ELEMENT(e->tag));
            goto out;
        }
        rc = add_key(q, e->tag, e->vr, seq, (const char *)text.data, text.len, err);
        if (rc)
            goto out;
    }
    *out = q;
    q = NULL;
out:
    query_free(q);
    dynbuf_free(&text);
    return rc;
}

/* --- running a query ---------------------------------------------------------- */

struct run {
    struct archive *a;
    const struct query *q;
    int (*cb)(void *ctx, struct dcm_ds *answer);
    void *ctx;
    const struct qkey **local;  /* keys matched here, on each row */
    size_t n_local;
    bool meta;                  /* rows carry metadata that we need */
    bool counting;              /* offset/limit applied here */
    size_t skip, left;
    bool limit_hit;
    int user_rc;                /* what cb returned to stop */
    int rc;                     /* our own failure, detail in err */
    struct pacs_err err;
    struct dynbuf text;
};

/* Whether the index evaluates key k exactly as match_text() would. */
static bool index_can_match(const struct qkey *k)
{
    if (k->col < 0 || k->comp >= 0 || k->kind == QM_RETURN)
        return false;
    /* The index compares a column's whole text; a multi-valued attribute
     * matches on any one value, which only match_text() does. */
    const struct dcm_dict_entry *d = dcm_dict_lookup(k->tag);
    if (d && strcmp(d->vm, "1") != 0)
        return false;
    if (k->kind == QM_LIST)
        return !k->list_wild && k->vr != DCM_VR_PN && k->n_list <= QUERY_INDEX_LIST_MAX;
    return true;
}

/* Keys that are neither main tags nor computed come from the metadata. */
static bool key_needs_meta(const struct qkey *k)
{
    return k->col < 0 && k->comp < 0;
}

static int put_text(struct dcm_ds *ds, uint32_t tag, uint16_t vr, const char *s)
{
    if (!s)
        return vr == DCM_VR_SQ ? dcm_ds_put_seq(ds, tag, NULL) : dcm_ds_put(ds, tag, vr, NULL, 0, NULL);
    return dcm_ds_put_str(ds, tag, vr, s);
}

/* The value of a computed attribute as text in r->text; NULL if the row
 * has none. */
static const char *computed_text(struct run *r, int comp, const struct index_row *row)
{
    uint32_t v;
    switch (computed_tags[comp].id) {
    case QC_PAT_STUDIES: v = row->n_patient_studies; break;
    case QC_PAT_SERIES: v = row->n_patient_series; break;
    case QC_PAT_INSTANCES: v = row->n_patient_instances; break;
    case QC_STUDY_SERIES: v = row->n_study_series; break;
    case QC_STUDY_INSTANCES: v = row->n_study_instances; break;
    case QC_SERIES_INSTANCES: v = row->n_series_instances; break;
    case QC_MODALITIES: return row->modalities_in_study;
    case QC_SOP_CLASSES: return row->sop_classes_in_study;
    case QC_AVAILABILITY: return "ONLINE";
    case QC_RETRIEVE_AET: {
        const struct pacs_config *cfg = archive_config(r->a);
        return cfg ? cfg->dicom.aet : NULL;
    }
    default: return NULL;
    }
    dynbuf_reset(&r->text);
    if (dynbuf_printf(&r->text, "%u", (unsigned)v) != 0)
        return NULL;
    return (const char *)r->text.data;
}

/* Whether the row passes key k (one of r->local). */
static int key_matches(struct run *r, const struct qkey *k, const struct index_row *row,
                       const struct dcm_ds *meta, bool *ok)
{
    const char *s = NULL;
    size_t n = 0;
    *ok = false;
    if (k->col >= 0) {
        s = row->values[k->col];
    } else if (k->comp >= 0) {
        s = computed_text(r, k->comp, row);
    } else {
        const struct dcm_elem *e = meta ? dcm_ds_find(meta, k->tag) : NULL;
        if (!e || !dcm_elem_is_value(e))
            return 0;
        dynbuf_reset(&r->text);
        int rc = elem_text(meta, e, &r->text, &r->err);
        if (rc == PACS_EUNSUPPORTED || rc == PACS_EINVAL)
            return 0; /* a value that is no text or number matches nothing */
        if (rc)
            return rc;
        s = (const char *)r->text.data;
        n = r->text.len;
    }
    if (!s)
        return 0;
    if (k->col >= 0 || k->comp >= 0)
        n = strlen(s);
    *ok = match_text(k, s, n);
    return 0;
}

/* Deep copy of one element of the metadata into an answer (or an item). */
static int copy_elem(struct dcm_ds *dst, const struct dcm_elem *e)
{
    if (e->flags & DCM_EF_SEQ) {
        struct dcm_elem *seq;
        int rc = dcm_ds_put_seq(dst, e->tag, &seq);
        for (uint32_t i = 0; rc == 0 && i < e->u.items.n; i++) {
            struct dcm_ds *item;
            const struct dcm_ds *src = e->u.items.v[i];
            rc = dcm_seq_add_item(dst, seq, &item);
            for (uint32_t j = 0; rc == 0 && j < src->n; j++)
                rc = copy_elem(item, &src->el[j]);
        }
        return rc;
    }
    if (e->flags & DCM_EF_ENCAPS)
        return dcm_ds_put(dst, e->tag, e->vr, NULL, 0, NULL);
    return dcm_ds_put(dst, e->tag, e->vr, e->val, e->len, NULL);
}

static bool ds_non_ascii(const struct dcm_ds *ds)
{
    for (uint32_t i = 0; i < ds->n; i++) {
        const struct dcm_elem *e = &ds->el[i];
        if (e->flags & DCM_EF_SEQ) {
            for (uint32_t j = 0; j < e->u.items.n; j++)
                if (ds_non_ascii(e->u.items.v[j]))
                    return true;
        } else if (dcm_elem_is_value(e) && dcm_vr_is_string(e->vr) &&
                   e->tag != DCM_TAG_SPECIFIC_CHARSET) {
            for (uint32_t j = 0; j < e->len; j++)
                if (e->val[j] >= 0x80)
                    return true;
        }
    }
    return false;
}

/* Whether a metadata element belongs in an includefield=all answer. */
static bool meta_elem_wanted(const struct query *q, const struct dcm_elem *e)
{
    uint16_t g = DCM_GROUP(e->tag);
    if (g == 0x0002 || DCM_ELEMENT(e->tag) == 0 || e->tag == DCM_TAG_SPECIFIC_CHARSET ||
        e->tag == TAG_QR_LEVEL || e->tag == DCM_TAG_PIXEL_DATA)
        return false;
    int col = index_tag_find(e->tag);
    if (col >= 0 && index_main_tags[col].level > q->level)
        return false;
    if (e->flags & DCM_EF_SEQ)
        return e->u.items.n > 0;
    return dcm_elem_is_value(e) && e->len > 0;
}

/* Binary numbers from their index text; a value that does not parse ends
 * the list (the index text came from a binary value, so only a damaged
 * index has one). */
static int put_number(struct dcm_ds *ds, uint32_t tag, uint16_t vr, const char *s)
{
    uint8_t buf[64 * 8];
    unsigned size = dcm_vr_num_size(vr);
    uint32_t len = 0;
    while (*s && len + size <= sizeof buf) {
        char *end;
        uint64_t bits;
        if (vr == DCM_VR_FL || vr == DCM_VR_FD) {
            double d = strtod(s, &end);
            if (vr == DCM_VR_FL) {
                /* Out of float's range the conversion is undefined. */
                float f = d > FLT_MAX ? INFINITY : d < -FLT_MAX ? -INFINITY : (float)d;
                uint32_t b32;
                memcpy(&b32, &f, 4);
                bits = b32;
            } else {
                memcpy(&bits, &d, 8);
            }
        } else {
            bits = (uint64_t)strtoll(s, &end, 10);
        }
        if (end == s || (*end && *end != '\\'))
            break;
        for (unsigned b = 0; b < size; b++) /* Little Endian, as dataset.h keeps values */
            buf[len + b] = (uint8_t)(bits >> (8 * b));
        len += size;
        s = *end ? end + 1 : end;
    }
    return dcm_ds_put(ds, tag, vr, len ? buf : NULL, len, NULL);
}

static int put_main(struct dcm_ds *ans, int col, const struct index_row *row)
{
    const struct index_tag *t = &index_main_tags[col];
    if (row->values[col] && vr_is_number(t->vr))
        return put_number(ans, t->tag, t->vr, row->values[col]);
    return put_text(ans, t->tag, t->vr, row->values[col]);
}

static int build_answer(struct run *r, const struct index_row *row, const struct dcm_ds *meta,
                        struct dcm_ds **out)
{
    const struct query *q = r->q;
    struct dcm_ds *ans = dcm_ds_new();
    int rc = 0;
    *out = NULL;
    if (!ans)
        return PACS_ENOMEM;
    if (q->all && meta)
        for (uint32_t i = 0; rc == 0 && i < meta->n; i++)
            if (meta_elem_wanted(q, &meta->el[i]))
                rc = copy_elem(ans, &meta->el[i]);
    if (q->main_tags)
        for (size_t i = 0; rc == 0 && i < index_n_main_tags; i++) {
            enum index_level lv = index_main_tags[i].level;
            /* Study Root studies carry their patient's attributes. */
            if (lv == q->level || (q->model == QUERY_STUDY_ROOT && q->level == INDEX_STUDY &&
                                   lv == INDEX_PATIENT))
                rc = put_main(ans, (int)i, row);
        }
    for (size_t i = 0; rc == 0 && i < q->n; i++) {
        const struct qkey *k = &q->keys[i];
        if (k->comp >= 0) {
            rc = put_text(ans, k->tag, k->vr, computed_text(r, k->comp, row));
        } else if (k->col >= 0) {
            rc = put_main(ans, k->col, row);
        } else {
            const struct dcm_elem *e = meta ? dcm_ds_find(meta, k->tag) : NULL;
            rc = e ? copy_elem(ans, e) : put_text(ans, k->tag, k->vr, NULL);
        }
    }
    /* PS3.4 C.4.1.2.2: the unique keys of the level and the levels above. */
    for (int lv = 0; rc == 0 && lv <= (int)q->level; lv++) {
        if (q->model == QUERY_STUDY_ROOT && lv == INDEX_PATIENT)
            continue;
        int col = index_tag_find(unique_tags[lv]);
        if (col >= 0)
            rc = put_main(ans, col, row);
    }
    if (rc == 0)
        rc = dcm_ds_put_str(ans, TAG_QR_LEVEL, DCM_VR_CS, level_names[q->level]);
    if (rc == 0 && ds_non_ascii(ans))
        rc = dcm_ds_put_str(ans, DCM_TAG_SPECIFIC_CHARSET, DCM_VR_CS, "ISO_IR 192");
    if (rc) {
        dcm_ds_free(ans);
        return rc;
    }
    *out = ans;
    return 0;
}

static int on_row(void *ctx, const struct index_row *row)
{
    struct run *r = ctx;
    struct dcm_ds *meta = NULL, *ans = NULL;
    int rc = 0;
    if (r->meta && row->metadata_json) {
        struct pacs_err jerr = { 0 };
        rc = dcm_json_read(row->metadata_json, row->metadata_len, &meta, &jerr);
        if (rc) {
            rc = pacs_err_set(&r->err, PACS_EIO, "stored metadata of entity %lld unreadable: %s",
                              (long long)row->id, jerr.msg);
            goto out;
        }
    }
    for (size_t i = 0; i < r->n_local; i++) {
        bool ok;
        rc = key_matches(r, r->local[i], row, meta, &ok);
        if (rc || !ok)
            goto out;
    }
    if (r->counting && r->skip) {
        r->skip--;
        goto out;
    }
    rc = build_answer(r, row, meta, &ans);
    if (rc) {
        pacs_err_set(&r->err, rc, "building the answer: %s", pacs_strerror(rc));
        goto out;
    }
    int urc = r->cb(r->ctx, ans); /* the answer is the callback's now */
    if (urc) {
        r->user_rc = urc;
        dcm_ds_free(meta);
        return urc;
    }
    if (r->counting && r->q->limit && --r->left == 0) {
        r->limit_hit = true;
        dcm_ds_free(meta);
        return 1;
    }
out:
    dcm_ds_free(meta);
    if (rc)
        r->rc = rc;
    return rc;
}

int query_run(struct archive *a, const struct query *q,
              int (*cb)(void *ctx, struct dcm_ds *answer), void *ctx, struct pacs_err *err)
{
    struct index *ix = archive_index(a);
    struct index_cond *conds = NULL;
    struct run r = { .a = a, .q = q, .cb = cb, .ctx = ctx };
    struct index_query iq = { .level = q->level };
    int rc = 0;
    double t0 = metrics_now();
    dynbuf_init(&r.text, PACS_MAX_STRING_LEN);
    if (q->n) {
        conds = calloc(q->n, sizeof *conds);
        r.local = calloc(q->n, sizeof *r.local);
        if (!conds || !r.local) {
            rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
            goto out;
        }
    }
    r.meta = q->all;
    for (size_t i = 0; i < q->n; i++) {
        const struct qkey *k = &q->keys[i];
        if (k->comp >= 0 && computed_tags[k->comp].counts)
            iq.want_counts = true;
        if (key_needs_meta(k))
            r.meta = true;
        if (index_can_match(k)) {
            struct index_cond *c = &conds[iq.n_conds++];
            c->col = k->col;
            switch (k->kind) {
            case QM_SINGLE: c->kind = INDEX_MATCH_SINGLE; c->value = k->value; break;
            case QM_WILDCARD: c->kind = INDEX_MATCH_WILDCARD; c->value = k->value; break;
            case QM_RANGE: c->kind = INDEX_MATCH_RANGE; c->lo = k->lo; c->hi = k->hi; break;
            default:
                c->kind = INDEX_MATCH_LIST;
                c->list = (const char *const *)k->list;
                c->n_list = k->n_list;
                break;
            }
        } else if (k->kind != QM_RETURN) {
            r.local[r.n_local++] = k;
        }
    }
    iq.conds = conds;
    iq.want_metadata = r.meta;
    if (r.n_local == 0) {
        iq.limit = q->limit;
        iq.offset = q->offset;
    } else {
        /* Rows the index returns may still fail a local key: count here. */
        r.counting = true;
        r.skip = q->offset;
        r.left = q->limit;
    }
    rc = ix->ops->find(ix, &iq, on_row, &r, err);
    if (r.user_rc) {
        rc = r.user_rc;
    } else if (r.rc) {
        rc = r.rc;
        if (err)
            *err = r.err;
    } else if (r.limit_hit) {
        rc = 0;
    }
out:
    free(conds);
    free(r.local);
    dynbuf_free(&r.text);
    static const char *const levels[] = {"patient", "study", "series", "instance"};
    if ((unsigned)q->level < 4)
        metric_observe(&metric_query_duration, &levels[q->level], metrics_now() - t0);
    return rc;
}
