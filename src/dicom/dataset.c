#include "dicom/dataset.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#include "dicom/charset.h"
#include "util/limits.h"

/* --- arena ----------------------------------------------------------------
 * A chunked bump allocator. Parsing a typical instance allocates only from
 * the first chunk, which shares one malloc with the arena and the root data
 * set, so reading a header costs one allocation. */

struct arena_chunk {
    struct arena_chunk *next;
    size_t used, cap;
    alignas(max_align_t) unsigned char data[];
};

struct dcm_arena {
    struct arena_chunk *head;
};

#define ARENA_FIRST_CHUNK (16u * 1024)
#define ARENA_MIN_CHUNK (32u * 1024)
#define ARENA_ALIGN (alignof(max_align_t))

struct ds_block {
    struct dcm_ds root;
    struct dcm_arena arena;
    struct arena_chunk chunk; /* flexible data follows */
};

static void *arena_alloc(struct dcm_arena *a, size_t n)
{
    if (n > SIZE_MAX / 2)
        return NULL;
    n = (n + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
    struct arena_chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > ARENA_MIN_CHUNK ? n : ARENA_MIN_CHUNK;
        struct arena_chunk *nc = malloc(sizeof *nc + cap);
        if (!nc)
            return NULL;
        nc->used = 0;
        nc->cap = cap;
        /* A large one-off allocation goes behind the current chunk so the
         * current chunk's free space stays usable. */
        if (c && cap == n && c->cap - c->used > ARENA_ALIGN * 8) {
            nc->next = c->next;
            c->next = nc;
        } else {
            nc->next = c;
            a->head = nc;
        }
        c = nc;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

struct dcm_ds *dcm_ds_new(void)
{
    struct ds_block *b = malloc(sizeof *b + ARENA_FIRST_CHUNK);
    if (!b)
        return NULL;
    memset(&b->root, 0, sizeof b->root);
    b->chunk.next = NULL;
    b->chunk.used = 0;
    b->chunk.cap = ARENA_FIRST_CHUNK;
    b->arena.head = &b->chunk;
    b->root.arena = &b->arena;
    b->root.is_root = true;
    return &b->root;
}

void dcm_ds_free(struct dcm_ds *ds)
{
    if (!ds || !ds->is_root)
        return;
    struct ds_block *b = (struct ds_block *)ds;
    struct arena_chunk *c = b->arena.head;
    while (c) {
        struct arena_chunk *next = c->next;
        if (c != &b->chunk)
            free(c);
        c = next;
    }
    free(b);
}

void *dcm_ds_alloc(struct dcm_ds *ds, size_t n)
{
    return arena_alloc(ds->arena, n);
}

struct dcm_ds *dcm_ds_new_item(struct dcm_ds *parent)
{
    struct dcm_ds *it = arena_alloc(parent->arena, sizeof *it);
    if (!it)
        return NULL;
    memset(it, 0, sizeof *it);
    it->arena = parent->arena;
    it->parent = parent;
    return it;
}

/* --- element array ------------------------------------------------------- */

/* Index of the first element with tag >= `tag`. */
static uint32_t lower_bound(const struct dcm_ds *ds, uint32_t tag)
{
    uint32_t lo = 0, hi = ds->n;
    /* Appending in order is the common case: check the end first. */
    if (hi && ds->el[hi - 1].tag < tag)
        return hi;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (ds->el[mid].tag < tag)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

const struct dcm_elem *dcm_ds_find(const struct dcm_ds *ds, uint32_t tag)
{
    if (!ds)
        return NULL;
    uint32_t i = lower_bound(ds, tag);
    return (i < ds->n && ds->el[i].tag == tag) ? &ds->el[i] : NULL;
}

struct dcm_elem *dcm_ds_find_mut(struct dcm_ds *ds, uint32_t tag)
{
    return (struct dcm_elem *)dcm_ds_find(ds, tag);
}

static int grow(struct dcm_ds *ds)
{
    if (ds->n < ds->cap)
        return 0;
    if (ds->cap >= PACS_MAX_ELEMENTS)
        return PACS_ELIMIT;
    uint32_t ncap = ds->cap ? ds->cap * 2 : (ds->is_root ? 64 : 8);
    struct dcm_elem *nel = arena_alloc(ds->arena, (size_t)ncap * sizeof *nel);
    if (!nel)
        return PACS_ENOMEM;
    if (ds->n)
        memcpy(nel, ds->el, (size_t)ds->n * sizeof *nel);
    ds->el = nel;
    ds->cap = ncap;
    return 0;
}

/* Opens a slot for `tag` at its sorted position; *existing tells whether an
 * element with that tag was already there (the slot is then that element). */
static int slot_for(struct dcm_ds *ds, uint32_t tag, struct dcm_elem **slot, bool *existing)
{
    uint32_t i = lower_bound(ds, tag);
    if (i < ds->n && ds->el[i].tag == tag) {
        *existing = true;
        *slot = &ds->el[i];
        return 0;
    }
    int rc = grow(ds);
    if (rc)
        return rc;
    if (i < ds->n)
        memmove(&ds->el[i + 1], &ds->el[i], (size_t)(ds->n - i) * sizeof *ds->el);
    ds->n++;
    *existing = false;
    *slot = &ds->el[i];
    return 0;
}

int dcm_ds_append(struct dcm_ds *ds, const struct dcm_elem *e, struct dcm_elem **out)
{
    struct dcm_elem *slot;
    if (ds->n < ds->cap && (ds->n == 0 || ds->el[ds->n - 1].tag < e->tag)) {
        slot = &ds->el[ds->n++];
    } else {
        bool existing;
        int rc = slot_for(ds, e->tag, &slot, &existing);
        if (rc)
            return rc;
        if (existing)
            return PACS_EINVAL;
    }
    *slot = *e;
    if (out)
        *out = slot;
    return 0;
}

int dcm_ds_put(struct dcm_ds *ds, uint32_t tag, uint16_t vr, const void *val, uint32_t len,
               struct dcm_elem **out)
{
    uint8_t *copy = NULL;
    if (len) {
        copy = arena_alloc(ds->arena, len);
        if (!copy)
            return PACS_ENOMEM;
        memcpy(copy, val, len);
    }
    struct dcm_elem *slot;
    bool existing;
    int rc = slot_for(ds, tag, &slot, &existing);
    if (rc)
        return rc;
    memset(slot, 0, sizeof *slot);
    slot->tag = tag;
    slot->vr = vr;
    slot->len = len;
    slot->val = copy;
    if (out)
        *out = slot;
    return 0;
}

int dcm_ds_put_str(struct dcm_ds *ds, uint32_t tag, uint16_t vr, const char *s)
{
    size_t n = strlen(s);
    if (n >= UINT32_MAX - 1)
        return PACS_ELIMIT;
    struct dcm_elem *e;
    int rc = dcm_ds_put(ds, tag, vr, NULL, 0, &e);
    if (rc)
        return rc;
    uint32_t len = (uint32_t)(n + (n & 1));
    if (len) {
        uint8_t *v = arena_alloc(ds->arena, len);
        if (!v)
            return PACS_ENOMEM;
        memcpy(v, s, n);
        if (n & 1)
            v[n] = dcm_vr_pad(vr);
        e->val = v;
        e->len = len;
    }
    return 0;
}

int dcm_ds_put_seq(struct dcm_ds *ds, uint32_t tag, struct dcm_elem **out)
{
    struct dcm_elem *e;
    int rc = dcm_ds_put(ds, tag, DCM_VR_SQ, NULL, 0, &e);
    if (rc)
        return rc;
    e->flags = DCM_EF_SEQ | DCM_EF_UNDEF_LEN;
    e->len = DCM_UNDEFINED_LENGTH;
    if (out)
        *out = e;
    return 0;
}

/* Grows a pointer-or-struct array held in the arena by one; arrays double. */
static void *push_slot(struct dcm_ds *ds, void *arr, uint32_t n, size_t size)
{
    if (n >= PACS_MAX_ITEMS)
        return NULL;
    /* Capacity is implicit: powers of two from 4. */
    bool full = n >= 4 ? (n & (n - 1)) == 0 : n == 0;
    if (!full)
        return arr;
    uint32_t ncap = n < 4 ? 4 : n * 2;
    void *na = arena_alloc(ds->arena, (size_t)ncap * size);
    if (!na)
        return NULL;
    if (n)
        memcpy(na, arr, (size_t)n * size);
    return na;
}

int dcm_elem_push_item(struct dcm_ds *ds, struct dcm_elem *e, struct dcm_ds *item)
{
    struct dcm_ds **v = push_slot(ds, e->u.items.v, e->u.items.n, sizeof *v);
    if (!v)
        return e->u.items.n >= PACS_MAX_ITEMS ? PACS_ELIMIT : PACS_ENOMEM;
    v[e->u.items.n++] = item;
    e->u.items.v = v;
    return 0;
}

int dcm_elem_push_frag(struct dcm_ds *ds, struct dcm_elem *e, const uint8_t *data, uint32_t len)
{
    struct dcm_frag *v = push_slot(ds, e->u.frags.v, e->u.frags.n, sizeof *v);
    if (!v)
        return e->u.frags.n >= PACS_MAX_ITEMS ? PACS_ELIMIT : PACS_ENOMEM;
    v[e->u.frags.n].data = data;
    v[e->u.frags.n].len = len;
    e->u.frags.n++;
    e->u.frags.v = v;
    return 0;
}

int dcm_seq_add_item(struct dcm_ds *ds, struct dcm_elem *seq, struct dcm_ds **item)
{
    if (!(seq->flags & DCM_EF_SEQ))
        return PACS_EINVAL;
    struct dcm_ds *it = dcm_ds_new_item(ds);
    if (!it)
        return PACS_ENOMEM;
    it->flags = DCM_EF_UNDEF_LEN;
    int rc = dcm_elem_push_item(ds, seq, it);
    if (rc)
        return rc;
    if (item)
        *item = it;
    return 0;
}

int dcm_ds_put_encaps(struct dcm_ds *ds, uint32_t tag, uint16_t vr, struct dcm_elem **out)
{
    struct dcm_elem *e;
    int rc = dcm_ds_put(ds, tag, vr, NULL, 0, &e);
    if (rc)
        return rc;
    e->flags = DCM_EF_ENCAPS | DCM_EF_UNDEF_LEN;
    e->len = DCM_UNDEFINED_LENGTH;
    rc = dcm_elem_push_frag(ds, e, NULL, 0);
    if (rc)
        return rc;
    if (out)
        *out = e;
    return 0;
}

int dcm_encaps_add_frag(struct dcm_ds *ds, struct dcm_elem *e, const void *data, uint32_t len)
{
    if (!(e->flags & DCM_EF_ENCAPS))
        return PACS_EINVAL;
    uint8_t *copy = NULL;
    if (len) {
        copy = arena_alloc(ds->arena, len);
        if (!copy)
            return PACS_ENOMEM;
        memcpy(copy, data, len);
    }
    return dcm_elem_push_frag(ds, e, copy, len);
}

int dcm_ds_remove(struct dcm_ds *ds, uint32_t tag)
{
    uint32_t i = lower_bound(ds, tag);
    if (i < ds->n && ds->el[i].tag == tag) {
        memmove(&ds->el[i], &ds->el[i + 1], (size_t)(ds->n - i - 1) * sizeof *ds->el);
        ds->n--;
    }
    return 0;
}

/* --- accessors ----------------------------------------------------------- */

static bool is_pad(uint8_t c) { return c == ' ' || c == '\0'; }

uint32_t dcm_elem_vm(const struct dcm_elem *e)
{
    if (e->flags & DCM_EF_SEQ)
        return e->u.items.n;
    if (e->flags & DCM_EF_ENCAPS)
        return 1;
    if (e->len == 0)
        return 0;
    if (dcm_vr_is_string(e->vr)) {
        if (!dcm_vr_multivalued(e->vr))
            return 1;
        uint32_t vm = 1;
        for (uint32_t i = 0; i < e->len; i++)
            vm += e->val[i] == '\\';
        /* A value that is nothing but padding has VM 0. */
        uint32_t k = 0;
        while (k < e->len && is_pad(e->val[k]))
            k++;
        return k == e->len ? 0 : vm;
    }
    unsigned sz = dcm_vr_num_size(e->vr);
    return sz ? e->len / sz : 1;
}

int dcm_elem_str(const struct dcm_elem *e, uint32_t idx, const char **s, size_t *n)
{
    if (!e || !dcm_vr_is_string(e->vr) || (e->flags & (DCM_EF_SEQ | DCM_EF_ENCAPS)))
        return PACS_EINVAL;
    const char *p = (const char *)e->val, *end;
    if (!p)
        p = end = ""; /* no arithmetic on a NULL value (empty element) */
    else
        end = p + e->len;
    if (dcm_vr_multivalued(e->vr)) {
        for (uint32_t i = 0; i < idx; i++) {
            const char *bs = memchr(p, '\\', (size_t)(end - p));
            if (!bs)
                return PACS_ENOTFOUND;
            p = bs + 1;
        }
        const char *bs = memchr(p, '\\', (size_t)(end - p));
        if (bs)
            end = bs;
        while (p < end && *p == ' ')
            p++;
    } else if (idx > 0) {
        return PACS_ENOTFOUND;
    }
    while (end > p && is_pad((uint8_t)end[-1]))
        end--;
    *s = p;
    *n = (size_t)(end - p);
    return 0;
}

int dcm_ds_get_str(const struct dcm_ds *ds, uint32_t tag, uint32_t idx, char *buf, size_t size)
{
    const struct dcm_elem *e = dcm_ds_find(ds, tag);
    if (!e)
        return PACS_ENOTFOUND;
    const char *s;
    size_t n;
    int rc = dcm_elem_str(e, idx, &s, &n);
    if (rc)
        return rc;
    if (n >= size)
        return PACS_ELIMIT;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return 0;
}

static uint64_t load_le(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Copies a decimal string value into a NUL-terminated buffer for strto*. */
static int number_text(const struct dcm_elem *e, uint32_t idx, char *buf, size_t size)
{
    const char *s;
    size_t n;
    int rc = dcm_elem_str(e, idx, &s, &n);
    if (rc)
        return rc;
    if (n == 0 || n >= size)
        return PACS_EINVAL;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return 0;
}

int dcm_elem_int(const struct dcm_elem *e, uint32_t idx, int64_t *out)
{
    if (!dcm_elem_is_value(e))
        return PACS_EINVAL;
    unsigned sz = dcm_vr_num_size(e->vr);
    switch (e->vr) {
    case DCM_VR_US: case DCM_VR_UL: case DCM_VR_UV: {
        uint64_t u;
        int rc = dcm_elem_uint(e, idx, &u);
        if (rc)
            return rc;
        if (u > INT64_MAX)
            return PACS_EINVAL;
        *out = (int64_t)u;
        return 0;
    }
    case DCM_VR_SS: case DCM_VR_SL: case DCM_VR_SV: {
        if ((uint64_t)idx * sz + sz > e->len)
            return PACS_ENOTFOUND;
        uint64_t v = load_le(e->val + (size_t)idx * sz, sz);
        unsigned shift = 64 - 8 * sz;
        /* Sign-extend through an unsigned shift to avoid UB. */
        *out = (int64_t)(v << shift) >> shift;
        return 0;
    }
    case DCM_VR_IS: case DCM_VR_DS: {
        char buf[32];
        int rc = number_text(e, idx, buf, sizeof buf);
        if (rc)
            return rc;
        char *endp;
        errno = 0;
        long long v = strtoll(buf, &endp, 10);
        if (*endp == '\0' && errno == 0) {
            *out = v;
            return 0;
        }
        if (e->vr == DCM_VR_DS) {
            double d = strtod(buf, &endp);
            if (*endp == '\0' && d == floor(d) && fabs(d) < 9.2e18) {
                *out = (int64_t)d;
                return 0;
            }
        }
        return PACS_EINVAL;
    }
    }
    return PACS_EINVAL;
}

int dcm_elem_uint(const struct dcm_elem *e, uint32_t idx, uint64_t *out)
{
    if (!dcm_elem_is_value(e))
        return PACS_EINVAL;
    unsigned sz = dcm_vr_num_size(e->vr);
    switch (e->vr) {
    case DCM_VR_US: case DCM_VR_UL: case DCM_VR_UV:
        if ((uint64_t)idx * sz + sz > e->len)
            return PACS_ENOTFOUND;
        *out = load_le(e->val + (size_t)idx * sz, sz);
        return 0;
    default: {
        int64_t v;
        int rc = dcm_elem_int(e, idx, &v);
        if (rc)
            return rc;
        if (v < 0)
            return PACS_EINVAL;
        *out = (uint64_t)v;
        return 0;
    }
    }
}

int dcm_elem_double(const struct dcm_elem *e, uint32_t idx, double *out)
{
    if (!dcm_elem_is_value(e))
        return PACS_EINVAL;
    switch (e->vr) {
    case DCM_VR_FL: case DCM_VR_OF: {
        if ((uint64_t)idx * 4 + 4 > e->len)
            return PACS_ENOTFOUND;
        uint32_t u = (uint32_t)load_le(e->val + (size_t)idx * 4, 4);
        float f;
        memcpy(&f, &u, 4);
        *out = f;
        return 0;
    }
    case DCM_VR_FD: case DCM_VR_OD: {
        if ((uint64_t)idx * 8 + 8 > e->len)
            return PACS_ENOTFOUND;
        uint64_t u = load_le(e->val + (size_t)idx * 8, 8);
        memcpy(out, &u, 8);
        return 0;
    }
    case DCM_VR_DS: case DCM_VR_IS: {
        char buf[32];
        int rc = number_text(e, idx, buf, sizeof buf);
        if (rc)
            return rc;
        char *endp;
        errno = 0;
        double d = strtod(buf, &endp);
        if (*endp != '\0' || errno == ERANGE || isnan(d))
            return PACS_EINVAL;
        *out = d;
        return 0;
    }
    default: {
        int64_t v;
        int rc = dcm_elem_int(e, idx, &v);
        if (rc)
            return rc;
        *out = (double)v;
        return 0;
    }
    }
}

int dcm_elem_tag(const struct dcm_elem *e, uint32_t idx, uint32_t *out)
{
    if (e->vr != DCM_VR_AT || !dcm_elem_is_value(e))
        return PACS_EINVAL;
    if ((uint64_t)idx * 4 + 4 > e->len)
        return PACS_ENOTFOUND;
    const uint8_t *p = e->val + (size_t)idx * 4;
    *out = DCM_TAG(load_le(p, 2), load_le(p + 2, 2));
    return 0;
}

const struct dcm_elem *dcm_ds_charset(const struct dcm_ds *ds)
{
    for (; ds; ds = ds->parent) {
        const struct dcm_elem *e = dcm_ds_find(ds, DCM_TAG_SPECIFIC_CHARSET);
        if (e && dcm_elem_is_value(e))
            return e;
    }
    return NULL;
}

int dcm_elem_text(const struct dcm_ds *ds, const struct dcm_elem *e, struct dynbuf *out,
                  struct pacs_err *err)
{
    if (!dcm_vr_is_string(e->vr) || (e->flags & (DCM_EF_SEQ | DCM_EF_ENCAPS)))
        return pacs_err_set(err, PACS_EINVAL, "element (%04X,%04X) is not a string",
                            DCM_GROUP(e->tag), DCM_ELEMENT(e->tag));
    size_t n = e->len;
    while (n && is_pad(e->val[n - 1]))
        n--;
    /* VRs restricted to the default repertoire ignore (0008,0005), but the
     * bytes >= 0x80 that occur in them anyway still become valid UTF-8. */
    const struct dcm_elem *cs = dcm_vr_uses_charset(e->vr) ? dcm_ds_charset(ds) : NULL;
    return dcm_charset_decode(cs ? cs->val : NULL, cs ? cs->len : 0, e->vr, e->val, n, out, err);
}

/* --- person names -------------------------------------------------------- */

void dcm_pn_split(const char *s, size_t n, struct dcm_pn *pn)
{
    memset(pn, 0, sizeof *pn);
    if (!s) /* an empty buffer may have no storage */
        s = "";
    const char *p = s, *end = s + n;
    unsigned g = 0;
    for (;;) {
        const char *eq = memchr(p, '=', (size_t)(end - p));
        const char *gend = eq ? eq : end;
        pn->group[g].p = p;
        pn->group[g].n = (size_t)(gend - p);
        const char *c = p;
        for (unsigned k = 0; k < 5; k++) {
            const char *caret = memchr(c, '^', (size_t)(gend - c));
            const char *cend = (caret && k < 4) ? caret : gend;
            pn->comp[g][k].p = c;
            pn->comp[g][k].n = (size_t)(cend - c);
            if (cend == gend) {
                for (unsigned r = k + 1; r < 5; r++) {
                    pn->comp[g][r].p = gend;
                    pn->comp[g][r].n = 0;
                }
                break;
            }
            c = cend + 1;
        }
        pn->ngroups = g + 1;
        if (!eq || g == 2)
            break;
        p = eq + 1;
        g++;
    }
}

/* --- dates and times ----------------------------------------------------- */

/* Reads exactly `digits` decimal digits at *p; advances. */
static bool read_digits(const char **p, const char *end, int digits, int *out)
{
    if (end - *p < digits)
        return false;
    int v = 0;
    for (int i = 0; i < digits; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    *p += digits;
    *out = v;
    return true;
}

static void dt_clear(struct dcm_datetime *d)
{
    d->year = d->month = d->day = -1;
    d->hour = d->minute = d->second = d->usec = -1;
    d->tz_minutes = 0;
    d->has_tz = false;
}

static const char *trim(const char *s, size_t *n)
{
    while (*n && (s[*n - 1] == ' ' || s[*n - 1] == '\0'))
        (*n)--;
    while (*n && *s == ' ') {
        s++;
        (*n)--;
    }
    return s;
}

static int days_in_month(int y, int m)
{
    static const int d[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return d[m - 1];
}

/* Parses YYYY[MM[DD]] (DT allows the shorter forms; DA requires all 8). */
static int parse_date_part(const char **p, const char *end, struct dcm_datetime *d, bool partial)
{
    if (!read_digits(p, end, 4, &d->year))
        return PACS_EINVAL;
    if (*p == end || !(**p >= '0' && **p <= '9'))
        return partial ? 0 : PACS_EINVAL;
    if (!read_digits(p, end, 2, &d->month) || d->month < 1 || d->month > 12)
        return PACS_EINVAL;
    if (*p == end || !(**p >= '0' && **p <= '9'))
        return partial ? 0 : PACS_EINVAL;
    if (!read_digits(p, end, 2, &d->day) || d->day < 1 || d->day > days_in_month(d->year, d->month))
        return PACS_EINVAL;
    return 0;
}

/* Parses HH[MM[SS[.F{1,6}]]]; TM also tolerates the retired HH:MM:SS form. */
static int parse_time_part(const char **p, const char *end, struct dcm_datetime *d, bool colons)
{
    if (!read_digits(p, end, 2, &d->hour) || d->hour > 23)
        return PACS_EINVAL;
    if (colons && *p < end && **p == ':')
        (*p)++;
    if (*p == end || !(**p >= '0' && **p <= '9'))
        return 0;
    if (!read_digits(p, end, 2, &d->minute) || d->minute > 59)
        return PACS_EINVAL;
    if (colons && *p < end && **p == ':')
        (*p)++;
    if (*p == end || !(**p >= '0' && **p <= '9'))
        return 0;
    if (!read_digits(p, end, 2, &d->second) || d->second > 60)
        return PACS_EINVAL;
    if (*p < end && **p == '.') {
        (*p)++;
        int us = 0, k = 0;
        while (*p < end && **p >= '0' && **p <= '9' && k < 6) {
            us = us * 10 + (**p - '0');
            (*p)++;
            k++;
        }
        if (k == 0)
            return PACS_EINVAL;
        for (; k < 6; k++)
            us *= 10;
        d->usec = us;
    }
    return 0;
}

int dcm_parse_da(const char *s, size_t n, struct dcm_datetime *out)
{
    dt_clear(out);
    s = trim(s, &n);
    const char *p = s, *end = s + n;
    /* The retired form YYYY.MM.DD is still found in old files. */
    char tmp[8];
    if (n == 10 && s[4] == '.' && s[7] == '.') {
        memcpy(tmp, s, 4);
        memcpy(tmp + 4, s + 5, 2);
        memcpy(tmp + 6, s + 8, 2);
        p = tmp;
        end = tmp + 8;
    }
    int rc = parse_date_part(&p, end, out, false);
    if (rc == 0 && p != end)
        rc = PACS_EINVAL;
    return rc;
}

int dcm_parse_tm(const char *s, size_t n, struct dcm_datetime *out)
{
    dt_clear(out);
    s = trim(s, &n);
    const char *p = s, *end = s + n;
    int rc = parse_time_part(&p, end, out, true);
    if (rc == 0 && p != end)
        rc = PACS_EINVAL;
    return rc;
}

int dcm_parse_dt(const char *s, size_t n, struct dcm_datetime *out)
{
    dt_clear(out);
    s = trim(s, &n);
    const char *p = s, *end = s + n;
    int rc = parse_date_part(&p, end, out, true);
    if (rc)
        return rc;
    if (out->day >= 0 && p < end && *p >= '0' && *p <= '9') {
        rc = parse_time_part(&p, end, out, false);
        if (rc)
            return rc;
    }
    if (p < end && (*p == '+' || *p == '-')) {
        int sign = *p == '-' ? -1 : 1, hh, mm;
        p++;
        if (!read_digits(&p, end, 2, &hh) || !read_digits(&p, end, 2, &mm) || hh > 14 || mm > 59)
            return PACS_EINVAL;
        out->tz_minutes = sign * (hh * 60 + mm);
        out->has_tz = true;
    }
    return p == end ? 0 : PACS_EINVAL;
}

bool dcm_uid_valid(const char *s, size_t n)
{
    if (n == 0 || n > 64)
        return false;
    size_t comp_start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '.') {
            size_t len = i - comp_start;
            if (len == 0)
                return false;
            if (len > 1 && s[comp_start] == '0')
                return false;
            comp_start = i + 1;
        } else if (s[i] < '0' || s[i] > '9') {
            return false;
        }
    }
    return true;
}
