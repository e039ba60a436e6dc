#include "dicom/reader.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "util/dynbuf.h"
#include "util/limits.h"

/* ------------------------------------------------------------------------
 * Transfer syntaxes
 * ------------------------------------------------------------------------ */

static size_t uid_trim(const char *uid, size_t len)
{
    while (len && (uid[len - 1] == '\0' || uid[len - 1] == ' '))
        len--;
    return len;
}

static bool uid_is(const char *uid, size_t len, const char *want)
{
    return strlen(want) == len && memcmp(uid, want, len) == 0;
}

int dcm_ts_from_uid(const char *uid, size_t len, struct dcm_ts *ts)
{
    len = uid_trim(uid, len);
    memset(ts, 0, sizeof *ts);
    if (uid_is(uid, len, DCM_UID_IMPLICIT_LE))
        return 0;
    ts->explicit_vr = true;
    if (uid_is(uid, len, DCM_UID_EXPLICIT_LE))
        return 0;
    if (uid_is(uid, len, DCM_UID_EXPLICIT_BE)) {
        ts->big_endian = true;
        return 0;
    }
    /* Deflated Explicit VR LE, and JPIP Referenced Deflate. */
    if (uid_is(uid, len, DCM_UID_DEFLATED_LE) || uid_is(uid, len, "1.2.840.10008.1.2.4.95")) {
        ts->deflated = true;
        return 0;
    }
    if (!dcm_uid_valid(uid, len))
        return PACS_EINVAL;
    ts->encapsulated = true;
    return 0;
}

/* ------------------------------------------------------------------------
 * The element parser: one buffer, bounds checked at every step.
 * ------------------------------------------------------------------------ */

struct rd {
    const uint8_t *buf;
    size_t len;          /* bytes available in buf */
    size_t pos;
    uint64_t base;       /* offset of buf[0] in the input, for messages */
    bool explicit_vr;
    bool be;
    bool copy;
    bool stopped;
    uint32_t stop_tag;
    struct dcm_ds *root; /* arena owner for copies */
    struct pacs_err *err;
};

__attribute__((format(printf, 4, 5)))
static int fail(const struct rd *r, int code, size_t at, const char *fmt, ...)
{
    if (r->err) {
        char msg[200];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        if (n < 0)
            msg[0] = '\0';
        pacs_err_set(r->err, code, "offset %llu: %s", (unsigned long long)(r->base + at), msg);
    }
    return code;
}

static inline uint16_t get16(bool be, const uint8_t *p)
{
    return be ? (uint16_t)(p[0] << 8 | p[1]) : (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t get32(bool be, const uint8_t *p)
{
    return be ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
              : (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint32_t get_tag(bool be, const uint8_t *p)
{
    return DCM_TAG(get16(be, p), get16(be, p + 2));
}

static inline bool upper(uint8_t c) { return c >= 'A' && c <= 'Z'; }

/* The VR of an element in Implicit VR: the dictionary's, with the choices
 * the dictionary leaves open made as DCMTK and pydicom make them. */
static uint16_t implicit_vr(uint32_t tag, const struct dcm_ds *ds)
{
    const struct dcm_dict_entry *d = dcm_dict_lookup(tag);
    if (!d || !d->vr[0])
        return DCM_VR_UN;
    if (!d->vr[1])
        return d->vr[0];
    bool ss = false, ow = false;
    for (int i = 0; i < 3 && d->vr[i]; i++) {
        ss |= d->vr[i] == DCM_VR_SS;
        ow |= d->vr[i] == DCM_VR_OW;
    }
    if (ss) {
        const struct dcm_elem *pr = dcm_ds_find(ds, DCM_TAG(0x0028, 0x0103));
        uint64_t v;
        if (pr && dcm_elem_uint(pr, 0, &v) == 0 && v == 1)
            return DCM_VR_SS;
        return DCM_VR_US;
    }
    return ow ? DCM_VR_OW : d->vr[0];
}

/* Length of the element header at p and its VR and value length; 0 if the
 * bytes at p (avail of them) do not hold a whole header. */
static size_t read_header(bool explicit_vr, bool be, const uint8_t *p, size_t avail,
                          uint32_t *tag, uint16_t *vr, uint32_t *len)
{
    if (avail < 8)
        return 0;
    *tag = get_tag(be, p);
    if (!explicit_vr || DCM_GROUP(*tag) == 0xfffe) {
        *vr = DCM_VR_NONE;
        *len = get32(be, p + 4);
        return 8;
    }
    *vr = DCM_VR(p[4], p[5]);
    /* Unknown VRs take the 4-byte length form, as PS3.5 6.2 reserves it
     * for any VR defined in future; bytes that are no VR at all are read
     * with the short form so the parser can name them. */
    if ((dcm_vr_known(*vr) && !dcm_vr_long_length(*vr)) || !upper(p[4]) || !upper(p[5])) {
        *len = get16(be, p + 6);
        return 8;
    }
    if (avail < 12)
        return 0;
    *len = get32(be, p + 8);
    return 12;
}

/* A value: borrowed from the input, or copied (and byte-swapped when the
 * input is Big Endian) into the data set's arena. */
static int take_value(struct rd *r, uint16_t vr, uint32_t len, const uint8_t **out)
{
    const uint8_t *src = r->buf + r->pos;
    unsigned unit = r->be ? dcm_vr_swap_unit(vr) : 1;
    if (!len) {
        *out = NULL;
        return 0;
    }
    if (!r->copy && unit == 1) {
        *out = src;
        return 0;
    }
    uint8_t *v = dcm_ds_alloc(r->root, len);
    if (!v)
        return fail(r, PACS_ENOMEM, r->pos, "out of memory for a %u-byte value", len);
    if (unit == 1) {
        memcpy(v, src, len);
    } else {
        uint32_t whole = len - len % unit;
        for (uint32_t i = 0; i < whole; i += unit)
            for (unsigned k = 0; k < unit; k++)
                v[i + k] = src[i + unit - 1 - k];
        memcpy(v + whole, src + whole, len - whole);
    }
    *out = v;
    return 0;
}

static int parse_dataset(struct rd *r, struct dcm_ds *ds, size_t end, bool delimited,
                         bool top, unsigned depth);

/* `end` bounds the enclosing structure; running past it is truncation when
 * it is the end of the input, corruption otherwise. */
static int overrun(const struct rd *r, size_t at, size_t end, const char *what, uint64_t need)
{
    if (end == r->len)
        return fail(r, PACS_ETRUNC, at, "%s needs %llu bytes, only %llu remain", what,
                    (unsigned long long)need, (unsigned long long)(end - at));
    return fail(r, PACS_EINVAL, at, "%s of %llu bytes overruns its enclosing item (%llu bytes left)",
                what, (unsigned long long)need, (unsigned long long)(end - at));
}

static int parse_items(struct rd *r, struct dcm_ds *ds, struct dcm_elem *e, size_t end,
                       bool delimited, unsigned depth)
{
    if (depth >= PACS_MAX_SEQ_DEPTH)
        return fail(r, PACS_ELIMIT, r->pos, "sequences nested deeper than %d", PACS_MAX_SEQ_DEPTH);
    for (;;) {
        if (!delimited && r->pos == end)
            return 0;
        size_t at = r->pos;
        if (end - at < 8)
            return overrun(r, at, end, "item header", 8);
        uint32_t tag = get_tag(r->be, r->buf + at);
        uint32_t len = get32(r->be, r->buf + at + 4);
        r->pos += 8;
        if (tag == DCM_TAG_SEQ_END) {
            if (!delimited)
                return fail(r, PACS_EINVAL, at, "sequence delimiter inside a sequence of defined length");
            return 0;
        }
        if (tag != DCM_TAG_ITEM)
            return fail(r, PACS_EINVAL, at, "expected an item (FFFE,E000) in sequence (%04X,%04X), found (%04X,%04X)",
                        DCM_GROUP(e->tag), DCM_ELEMENT(e->tag), DCM_GROUP(tag), DCM_ELEMENT(tag));
        struct dcm_ds *item = dcm_ds_new_item(ds);
        if (!item)
            return fail(r, PACS_ENOMEM, at, "out of memory");
        int rc;
        item->len = len;
        if (len == DCM_UNDEFINED_LENGTH) {
            item->flags = DCM_EF_UNDEF_LEN;
            rc = parse_dataset(r, item, end, true, false, depth + 1);
        } else {
            if (len > end - r->pos)
                return overrun(r, r->pos, end, "item", len);
            rc = parse_dataset(r, item, r->pos + len, false, false, depth + 1);
        }
        if (rc)
            return rc;
        rc = dcm_elem_push_item(ds, e, item);
        if (rc)
            return fail(r, rc, at, "too many items in sequence");
    }
}

static int parse_frags(struct rd *r, struct dcm_ds *ds, struct dcm_elem *e, size_t end)
{
    for (;;) {
        size_t at = r->pos;
        if (end - at < 8)
            return overrun(r, at, end, "fragment header", 8);
        uint32_t tag = get_tag(r->be, r->buf + at);
        uint32_t len = get32(r->be, r->buf + at + 4);
        r->pos += 8;
        if (tag == DCM_TAG_SEQ_END)
            return 0;
        if (tag != DCM_TAG_ITEM)
            return fail(r, PACS_EINVAL, at, "expected a fragment item (FFFE,E000) in encapsulated pixel data, found (%04X,%04X)",
                        DCM_GROUP(tag), DCM_ELEMENT(tag));
        if (len == DCM_UNDEFINED_LENGTH)
            return fail(r, PACS_EINVAL, at, "fragment with undefined length");
        if (len > end - r->pos)
            return overrun(r, r->pos, end, "fragment", len);
        const uint8_t *v = NULL;
        if (len) {
            if (r->copy) {
                uint8_t *c = dcm_ds_alloc(ds, len);
                if (!c)
                    return fail(r, PACS_ENOMEM, r->pos, "out of memory");
                memcpy(c, r->buf + r->pos, len);
                v = c;
            } else {
                v = r->buf + r->pos;
            }
        }
        int rc = dcm_elem_push_frag(ds, e, v, len);
        if (rc)
            return fail(r, rc, at, "too many fragments");
        r->pos += len;
    }
}

/* Parses the element at r->pos into ds. */
static int parse_element(struct rd *r, struct dcm_ds *ds, size_t end, unsigned depth)
{
    size_t at = r->pos;
    uint32_t tag, len;
    uint16_t vr;
    size_t hdr = read_header(r->explicit_vr, r->be, r->buf + at, end - at, &tag, &vr, &len);
    if (!hdr)
        return overrun(r, at, end, "element header", r->explicit_vr ? 12 : 8);
    if (DCM_GROUP(tag) == 0xfffe)
        return fail(r, PACS_EINVAL, at, "item or delimiter tag (%04X,%04X) outside a sequence",
                    DCM_GROUP(tag), DCM_ELEMENT(tag));
    if (r->explicit_vr && (!upper((uint8_t)(vr >> 8)) || !upper((uint8_t)vr)))
        return fail(r, PACS_EINVAL, at, "element (%04X,%04X) has invalid VR bytes %02X %02X",
                    DCM_GROUP(tag), DCM_ELEMENT(tag), vr >> 8, vr & 0xff);
    if (!r->explicit_vr)
        vr = implicit_vr(tag, ds);
    r->pos += hdr;

    struct dcm_elem e = { .tag = tag, .vr = vr, .len = len };
    int rc = 0;
    if (len == DCM_UNDEFINED_LENGTH) {
        e.flags = DCM_EF_UNDEF_LEN;
        if (tag == DCM_TAG_PIXEL_DATA && vr != DCM_VR_SQ) {
            e.flags |= DCM_EF_ENCAPS;
            /* PS3.5 A.4: encapsulated pixel data is OB; Implicit VR and UN
             * do not say so on the wire. */
            if (!r->explicit_vr || vr == DCM_VR_UN)
                e.vr = DCM_VR_OB;
            rc = parse_frags(r, ds, &e, end);
        } else if (vr == DCM_VR_SQ || (vr == DCM_VR_UN && !r->explicit_vr)) {
            /* Implicit VR: an unknown (private) tag of undefined length can
             * only be a sequence. */
            e.vr = DCM_VR_SQ;
            rc = parse_items(r, ds, &e, end, true, depth);
        } else if (vr == DCM_VR_UN) {
            /* PS3.5 6.2.2: UN of undefined length holds a sequence encoded
             * in Implicit VR Little Endian, whatever the data set's syntax. */
            bool was_explicit = r->explicit_vr, was_be = r->be;
            e.flags |= DCM_EF_UN_SEQ;
            r->explicit_vr = false;
            r->be = false;
            rc = parse_items(r, ds, &e, end, true, depth);
            r->explicit_vr = was_explicit;
            r->be = was_be;
        } else {
            char s[3];
            return fail(r, PACS_EINVAL, at, "element (%04X,%04X) with VR %s has undefined length",
                        DCM_GROUP(tag), DCM_ELEMENT(tag), dcm_vr_str(vr, s));
        }
        if (rc)
            return rc;
        e.flags |= (e.flags & DCM_EF_ENCAPS) ? 0 : DCM_EF_SEQ;
    } else {
        if (len > end - r->pos)
            return overrun(r, at, end, "element value", len);
        if (len > PACS_MAX_VALUE_LEN)
            return fail(r, PACS_ELIMIT, at, "value of %u bytes exceeds the limit", len);
        if (vr == DCM_VR_SQ) {
            rc = parse_items(r, ds, &e, r->pos + len, false, depth);
            e.flags |= DCM_EF_SEQ;
        } else {
            rc = take_value(r, vr, len, &e.val);
            r->pos += len;
        }
        if (rc)
            return rc;
    }
    rc = dcm_ds_append(ds, &e, NULL);
    if (rc == PACS_EINVAL)
        return fail(r, rc, at, "duplicate element (%04X,%04X)", DCM_GROUP(tag), DCM_ELEMENT(tag));
    if (rc)
        return fail(r, rc, at, "cannot add element (%04X,%04X): %s", DCM_GROUP(tag),
                    DCM_ELEMENT(tag), pacs_strerror(rc));
    return 0;
}

/* The common case, Explicit VR Little Endian elements of the short-header
 * VRs with defined length, appended in ascending order: read here without
 * the general parser's checks for structures they cannot be. Stops at the
 * first element that is anything else and leaves it to parse_element. */
static int fast_explicit_le(struct rd *r, struct dcm_ds *ds, size_t end, bool top)
{
    size_t at = r->pos;
    uint32_t last = ds->n ? ds->el[ds->n - 1].tag : 0;
    uint32_t stop = (top && r->stop_tag) ? r->stop_tag : 0xffffffffu;
    while (end - at >= 8) {
        const uint8_t *p = r->buf + at;
        uint32_t tag = (uint32_t)(p[0] | p[1] << 8) << 16 | (uint32_t)(p[2] | p[3] << 8);
        uint16_t vr = (uint16_t)(p[4] << 8 | p[5]);
        unsigned prop = dcm_vr_prop(vr);
        uint32_t len = (uint32_t)(p[6] | p[7] << 8);
        if (tag >= stop || tag <= last || (prop & (DCM_VRP_KNOWN | DCM_VRP_LONG)) != DCM_VRP_KNOWN ||
            len > end - at - 8 || ds->n == ds->cap || DCM_GROUP(tag) == 0xfffe)
            break;
        struct dcm_elem *e = &ds->el[ds->n];
        const uint8_t *v = len ? p + 8 : NULL;
        if (r->copy && len) {
            uint8_t *c = dcm_ds_alloc(r->root, len);
            if (!c)
                return fail(r, PACS_ENOMEM, at, "out of memory for a %u-byte value", len);
            memcpy(c, v, len);
            v = c;
        }
        e->tag = tag;
        e->vr = vr;
        e->flags = 0;
        e->len = len;
        e->val = v;
        ds->n++;
        last = tag;
        at += 8 + len;
    }
    r->pos = at;
    return 0;
}

static int parse_dataset(struct rd *r, struct dcm_ds *ds, size_t end, bool delimited,
                         bool top, unsigned depth)
{
    for (;;) {
        if (r->explicit_vr && !r->be) {
            int rc = fast_explicit_le(r, ds, end, top);
            if (rc)
                return rc;
        }
        size_t at = r->pos;
        if (!delimited && at >= end)
            return 0;
        if (end - at < 4)
            return overrun(r, at, end, "element tag", 4);
        uint32_t tag = get_tag(r->be, r->buf + at);
        /* Before anything else, as the stream checks it: whatever follows
         * the stop tag is not read, not even to reject it. */
        if (top && r->stop_tag && tag >= r->stop_tag) {
            r->stopped = true;
            return 0;
        }
        if (tag == DCM_TAG_ITEM_END) {
            if (!delimited)
                return fail(r, PACS_EINVAL, at, top ? "item delimiter outside a sequence"
                                                    : "item delimiter inside an item of defined length");
            if (end - at < 8)
                return overrun(r, at, end, "item delimiter", 8);
            r->pos += 8;
            return 0;
        }
        int rc = parse_element(r, ds, end, depth);
        if (rc)
            return rc;
    }
}

/* Some writers label a data set Explicit VR but encode it Implicit, or the
 * reverse; the first element tells (as DCMTK and pydicom check too). */
static bool looks_explicit(const uint8_t *p, size_t avail, bool be)
{
    if (avail < 6)
        return false;
    if (get16(be, p) == 0xfffe)
        return false;
    return upper(p[4]) && upper(p[5]) && dcm_vr_known(DCM_VR(p[4], p[5]));
}

/* The encoding of a raw data set (no meta group) from its first bytes. */
static void detect_ts(const uint8_t *p, size_t avail, struct dcm_ts *ts, char uid[65])
{
    memset(ts, 0, sizeof *ts);
    /* Big Endian puts the high byte of a small group number first. */
    bool be = avail >= 2 && p[0] == 0 && p[1] != 0;
    ts->explicit_vr = looks_explicit(p, avail, be);
    ts->big_endian = be && ts->explicit_vr;
    const char *u = !ts->explicit_vr ? DCM_UID_IMPLICIT_LE
                    : ts->big_endian ? DCM_UID_EXPLICIT_BE : DCM_UID_EXPLICIT_LE;
    snprintf(uid, 65, "%s", u);
}

/* Reads the transfer syntax UID out of the meta group; falls back to
 * detecting it from the data set's first bytes. */
static int meta_ts(struct dcm_file *f, const uint8_t *p, size_t avail, struct pacs_err *err)
{
    const struct dcm_elem *e = dcm_ds_find(f->meta, DCM_TAG_TRANSFER_SYNTAX);
    if (e && !dcm_elem_is_value(e))
        return pacs_err_set(err, PACS_EINVAL, "Transfer Syntax UID in the file meta group is not a UID");
    if (e && e->len) {
        size_t n = uid_trim((const char *)e->val, e->len);
        if (n >= sizeof f->ts_uid || dcm_ts_from_uid((const char *)e->val, n, &f->ts))
            return pacs_err_set(err, PACS_EINVAL, "malformed Transfer Syntax UID in the file meta group");
        memcpy(f->ts_uid, e->val, n);
        f->ts_uid[n] = '\0';
        /* A labelled syntax that the bytes contradict is a writer bug we can
         * read around; deflated and encapsulated data sets are left alone. */
        if (!f->ts.deflated && !f->ts.big_endian && avail >= 6)
            f->ts.explicit_vr = looks_explicit(p, avail, false);
        return 0;
    }
    detect_ts(p, avail, &f->ts, f->ts_uid);
    return 0;
}

static void rd_init(struct rd *r, const uint8_t *buf, size_t len, const struct dcm_read_opts *o,
                    struct dcm_ds *root, struct pacs_err *err)
{
    memset(r, 0, sizeof *r);
    r->buf = buf;
    r->len = len;
    r->copy = o->copy_values;
    r->stop_tag = o->stop_tag;
    r->root = root;
    r->err = err;
}

/* Parses meta group elements (group 0002, Explicit VR Little Endian) at
 * r->pos until another group starts. */
static int parse_meta(struct rd *r, struct dcm_ds *meta)
{
    r->explicit_vr = looks_explicit(r->buf + r->pos, r->len - r->pos, false);
    r->be = false;
    while (r->len - r->pos >= 4 && get16(false, r->buf + r->pos) == 0x0002) {
        int rc = parse_element(r, meta, r->len, 0);
        if (rc)
            return rc;
        if (r->pos > PACS_MAX_META_LEN)
            return fail(r, PACS_ELIMIT, r->pos, "file meta group longer than %u bytes", PACS_MAX_META_LEN);
    }
    return 0;
}

/* Inflates a raw deflate stream (no zlib header) into a new heap buffer.
 * On a corrupt or truncated stream the bytes inflated so far are still
 * handed back with the error: a read that stops at a tag before the damage
 * needs nothing more. */
static int inflate_all(const uint8_t *in, size_t n, uint8_t **out, size_t *outlen,
                       struct pacs_err *err)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, -MAX_WBITS) != Z_OK)
        return pacs_err_set(err, PACS_ENOMEM, "cannot start inflate");
    struct dynbuf b;
    dynbuf_init(&b, PACS_MAX_INFLATED_LEN > SIZE_MAX / 4 ? SIZE_MAX / 4 : (size_t)PACS_MAX_INFLATED_LEN);
    int rc = 0;
    z.next_in = (Bytef *)(uintptr_t)in;
    size_t left = n;
    for (;;) {
        uInt chunk = left > (1u << 30) ? (1u << 30) : (uInt)left;
        z.avail_in = chunk;
        size_t before_in = z.avail_in;
        if (dynbuf_reserve(&b, 64 * 1024)) {
            rc = pacs_err_set(err, PACS_ELIMIT, "inflated data set exceeds %llu bytes",
                              (unsigned long long)PACS_MAX_INFLATED_LEN);
            goto out;
        }
        z.next_out = b.data + b.len;
        z.avail_out = (uInt)(b.cap - b.len - 1);
        size_t before_out = z.avail_out;
        int zr = inflate(&z, Z_NO_FLUSH);
        b.len += before_out - z.avail_out;
        left -= before_in - z.avail_in;
        if (zr == Z_STREAM_END)
            break;
        if (zr != Z_OK && zr != Z_BUF_ERROR) {
            rc = pacs_err_set(err, PACS_EINVAL, "deflated data set is corrupt at inflated offset %zu: %s",
                              b.len, z.msg ? z.msg : "inflate error");
            goto out;
        }
        if (left == 0 && z.avail_out != 0) {
            rc = pacs_err_set(err, PACS_ETRUNC, "deflated data set ends early (inflated %zu bytes)", b.len);
            goto out;
        }
    }
out:
    *outlen = b.len;
    *out = (uint8_t *)dynbuf_take(&b, NULL);
    if (!*out && !rc)
        rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
    inflateEnd(&z);
    dynbuf_free(&b);
    return rc;
}

static bool has_preamble(const uint8_t *buf, size_t len)
{
    return len >= 132 && memcmp(buf + 128, "DICM", 4) == 0;
}

void dcm_file_free(struct dcm_file *f)
{
    if (!f)
        return;
    dcm_ds_free(f->ds);
    free(f->inflated);
    memset(f, 0, sizeof *f);
}

static int file_init(struct dcm_file *f)
{
    memset(f, 0, sizeof *f);
    f->ds = dcm_ds_new();
    if (!f->ds)
        return PACS_ENOMEM;
    f->meta = dcm_ds_new_item(f->ds);
    if (!f->meta) {
        dcm_ds_free(f->ds);
        f->ds = NULL;
        return PACS_ENOMEM;
    }
    f->meta->parent = NULL;
    return 0;
}

/* Determines the data set's encoding for a raw data set or after the meta
 * group. */
static int settle_ts(struct dcm_file *f, const struct dcm_read_opts *o, bool had_meta,
                     const uint8_t *p, size_t avail, struct pacs_err *err)
{
    if (o->ts_uid && !had_meta) {
        size_t n = strlen(o->ts_uid);
        if (n >= sizeof f->ts_uid || dcm_ts_from_uid(o->ts_uid, n, &f->ts))
            return pacs_err_set(err, PACS_EINVAL, "malformed transfer syntax UID '%s'", o->ts_uid);
        memcpy(f->ts_uid, o->ts_uid, n + 1);
        return 0;
    }
    if (had_meta)
        return meta_ts(f, p, avail, err);
    detect_ts(p, avail, &f->ts, f->ts_uid);
    return 0;
}

int dcm_read_part10(const uint8_t *buf, size_t len, const struct dcm_read_opts *opts,
                    struct dcm_file *f, struct pacs_err *err)
{
    static const struct dcm_read_opts defaults;
    static const uint8_t empty[1];
    const struct dcm_read_opts *o = opts ? opts : &defaults;
    if (!buf) /* an empty input may come without a buffer */
        buf = empty;
    int rc = file_init(f);
    if (rc)
        return pacs_err_set(err, rc, "out of memory");
    struct rd r;
    rd_init(&r, buf, len, o, f->ds, err);

    bool had_meta = false;
    if (!o->ts_uid) {
        if (has_preamble(buf, len)) {
            f->preamble = true;
            r.pos = 132;
        } else if (len >= 4 && memcmp(buf, "DICM", 4) == 0) {
            r.pos = 4;
        }
        if (len - r.pos >= 4 && get16(false, buf + r.pos) == 0x0002) {
            rc = parse_meta(&r, f->meta);
            if (rc)
                goto out;
            had_meta = true;
        } else if (f->preamble && len - r.pos >= 4) {
            /* Tolerated like DCMTK: a preamble with no meta group. */
        }
    }
    rc = settle_ts(f, o, had_meta, buf + r.pos, len - r.pos, err);
    if (rc)
        goto out;
    f->ds_offset = r.pos;

    int zrc = 0;
    struct pacs_err zerr = { 0 };
    if (f->ts.deflated) {
        size_t n = 0;
        zrc = inflate_all(buf + r.pos, len - r.pos, &f->inflated, &n, &zerr);
        if (zrc && (!o->stop_tag || !f->inflated)) {
            rc = zrc;
            if (err)
                *err = zerr;
            goto out;
        }
        rd_init(&r, f->inflated, n, o, f->ds, err);
    }
    r.explicit_vr = f->ts.explicit_vr;
    r.be = f->ts.big_endian;
    rc = parse_dataset(&r, f->ds, r.len, false, true, 0);
    /* A damaged deflate stream matters unless reading stopped before it. */
    if (zrc && (rc == PACS_ETRUNC || (rc == 0 && !r.stopped))) {
        rc = zrc;
        if (err)
            *err = zerr;
    }
    if (rc)
        goto out;
    f->stopped = r.stopped;
    f->end_offset = r.pos;
out:
    if (rc)
        dcm_file_free(f);
    return rc;
}

/* ------------------------------------------------------------------------
 * Streaming
 *
 * The stream keeps the bytes of the current top-level element in `buf`. A
 * resumable scanner walks them as they arrive - element headers, lengths,
 * item and sequence delimiters, with a stack for undefined-length nesting -
 * until it has seen the element's last byte; only then does the parser
 * above read the element (once), and its bytes are dropped. So each byte is
 * scanned once and parsed once however the input is chunked.
 * ------------------------------------------------------------------------ */

enum stream_phase { ST_START, ST_META, ST_TS, ST_DATA, ST_STOPPED, ST_FAILED };

enum frame_kind { FR_SEQ, FR_ITEM, FR_FRAGS };

struct scan_frame {
    uint8_t kind;
    bool explicit_vr;
    bool be;
};

/* Most input bytes buffered per step of dcm_stream_feed. */
#define STREAM_SLICE (16u * 1024)

struct dcm_stream {
    struct dcm_read_opts opts;
    enum stream_phase phase;
    struct dcm_file f;
    struct dynbuf buf;      /* unparsed bytes; buf.data[0] is at input offset `base` */
    uint64_t base;
    bool explicit_vr, be;   /* current data set encoding */
    bool had_meta;
    bool meta_checked;      /* Explicit-vs-Implicit check of the meta group done */
    bool z_ended;           /* Deflated: the deflate stream is complete */
    /* scanner */
    size_t scan_pos;        /* offset in buf of the next structure to scan */
    unsigned depth;
    struct scan_frame stack[PACS_MAX_SEQ_DEPTH * 2 + 2];
    /* Deflated input */
    bool inflating;
    z_stream z;
};

struct dcm_stream *dcm_stream_new(const struct dcm_read_opts *opts)
{
    struct dcm_stream *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    if (opts)
        s->opts = *opts;
    s->opts.copy_values = true;
    dynbuf_init(&s->buf, 0);
    if (file_init(&s->f)) {
        free(s);
        return NULL;
    }
    return s;
}

void dcm_stream_free(struct dcm_stream *s)
{
    if (!s)
        return;
    if (s->inflating)
        inflateEnd(&s->z);
    dynbuf_free(&s->buf);
    dcm_file_free(&s->f);
    free(s);
}

static int sfail(struct dcm_stream *s, struct pacs_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int sfail(struct dcm_stream *s, struct pacs_err *err, int code, const char *fmt, ...)
{
    s->phase = ST_FAILED;
    va_list ap;
    va_start(ap, fmt);
    pacs_err_vset(err, code, fmt, ap);
    va_end(ap);
    return code;
}

/* Advances the scanner over buf. Returns 1 when the top-level element that
 * starts at buf[0] is complete (its length is then scan_pos), 0 when more
 * bytes are needed, or an error. */
static int scan(struct dcm_stream *s, struct pacs_err *err)
{
    const uint8_t *b = s->buf.data;
    size_t len = s->buf.len;
    for (;;) {
        size_t at = s->scan_pos;
        size_t avail = len - at;
        struct scan_frame *top = s->depth ? &s->stack[s->depth - 1] : NULL;
        bool ex = top ? top->explicit_vr : s->explicit_vr;
        bool be = top ? top->be : s->be;
        uint32_t tag, vlen;
        uint16_t vr;
        size_t hdr;
        if (top && top->kind != FR_ITEM) {
            /* Inside a delimited sequence or fragment list: item headers. */
            if (avail < 8)
                return 0;
            tag = get_tag(be, b + at);
            vlen = get32(be, b + at + 4);
            if (tag == DCM_TAG_SEQ_END) {
                s->scan_pos = at + 8;
                if (--s->depth == 0)
                    return 1;
                continue;
            }
            if (tag != DCM_TAG_ITEM)
                return sfail(s, err, PACS_EINVAL, "offset %llu: expected an item (FFFE,E000), found (%04X,%04X)",
                             (unsigned long long)(s->base + at), DCM_GROUP(tag), DCM_ELEMENT(tag));
            if (vlen == DCM_UNDEFINED_LENGTH && top->kind == FR_SEQ) {
                if (s->depth >= sizeof s->stack / sizeof s->stack[0])
                    return sfail(s, err, PACS_ELIMIT, "offset %llu: sequences nested too deep",
                                 (unsigned long long)(s->base + at));
                s->stack[s->depth++] = (struct scan_frame){ FR_ITEM, ex, be };
                s->scan_pos = at + 8;
                continue;
            }
            if (vlen == DCM_UNDEFINED_LENGTH)
                return sfail(s, err, PACS_EINVAL, "offset %llu: fragment with undefined length",
                             (unsigned long long)(s->base + at));
            if (avail - 8 < vlen)
                return 0;
            s->scan_pos = at + 8 + vlen;
            continue;
        }
        hdr = read_header(ex, be, b + at, avail, &tag, &vr, &vlen);
        if (!hdr)
            return 0;
        if (top && tag == DCM_TAG_ITEM_END) {
            s->scan_pos = at + 8;
            s->depth--;
            continue;
        }
        if (vlen == DCM_UNDEFINED_LENGTH) {
            if (s->depth + 1 >= sizeof s->stack / sizeof s->stack[0])
                return sfail(s, err, PACS_ELIMIT, "offset %llu: sequences nested too deep",
                             (unsigned long long)(s->base + at));
            struct scan_frame fr = { FR_SEQ, ex, be };
            if (tag == DCM_TAG_PIXEL_DATA && vr != DCM_VR_SQ)
                fr.kind = FR_FRAGS;
            else if (ex && vr == DCM_VR_UN)
                fr.explicit_vr = fr.be = false;
            s->stack[s->depth++] = fr;
            s->scan_pos = at + hdr;
            continue;
        }
        if (vlen > PACS_MAX_VALUE_LEN)
            return sfail(s, err, PACS_ELIMIT, "offset %llu: value of %u bytes exceeds the limit",
                         (unsigned long long)(s->base + at), vlen);
        if (avail - hdr < vlen)
            return 0;
        s->scan_pos = at + hdr + vlen;
        if (!top)
            return 1;
    }
}

/* Parses the complete element at buf[0..n) into ds and drops its bytes. */
static int take_element(struct dcm_stream *s, struct dcm_ds *ds, size_t n, struct pacs_err *err)
{
    struct rd r;
    rd_init(&r, s->buf.data, n, &s->opts, s->f.ds, err);
    r.base = s->base;
    r.explicit_vr = s->explicit_vr;
    r.be = s->be;
    int rc = parse_element(&r, ds, n, 0);
    if (rc == 0 && r.pos != n)
        rc = fail(&r, PACS_EINVAL, r.pos, "element ends before its scanned end");
    if (rc) {
        s->phase = ST_FAILED;
        return rc;
    }
    dynbuf_consume(&s->buf, n);
    s->base += n;
    s->scan_pos = 0;
    return 0;
}

static int start_data(struct dcm_stream *s, struct pacs_err *err)
{
    s->f.ds_offset = s->base;
    s->explicit_vr = s->f.ts.explicit_vr;
    s->be = s->f.ts.big_endian;
    if (!s->f.ts.deflated) {
        s->phase = ST_DATA;
        return 0;
    }
    memset(&s->z, 0, sizeof s->z);
    if (inflateInit2(&s->z, -MAX_WBITS) != Z_OK)
        return sfail(s, err, PACS_ENOMEM, "cannot start inflate");
    s->inflating = true;
    /* Bytes already buffered past the meta group are deflated: move them
     * aside and feed them through inflate. Offsets become inflated ones. */
    struct dynbuf pending = s->buf;
    dynbuf_init(&s->buf, 0);
    s->base = 0;
    s->phase = ST_DATA;
    int rc = 0;
    if (pending.len) {
        size_t used;
        rc = dcm_stream_feed(s, pending.data, pending.len, &used, err);
        rc = rc < 0 ? rc : 0;
    }
    dynbuf_free(&pending);
    return rc;
}

static int inflate_in(struct dcm_stream *s, const uint8_t *p, size_t n, struct pacs_err *err)
{
    if (s->z_ended)
        return 0; /* bytes after the deflate stream are not part of the data set */
    s->z.next_in = (Bytef *)(uintptr_t)p;
    while (n) {
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        s->z.avail_in = chunk;
        while (s->z.avail_in) {
            if (dynbuf_reserve(&s->buf, 64 * 1024))
                return pacs_err_set(err, PACS_ELIMIT, "inflated element too large");
            s->z.next_out = s->buf.data + s->buf.len;
            s->z.avail_out = (uInt)(s->buf.cap - s->buf.len - 1);
            size_t before = s->z.avail_out;
            int zr = inflate(&s->z, Z_NO_FLUSH);
            s->buf.len += before - s->z.avail_out;
            s->buf.data[s->buf.len] = '\0';
            if (zr == Z_STREAM_END) {
                s->z_ended = true;
                s->z.avail_in = 0;
                break;
            }
            if (zr != Z_OK && zr != Z_BUF_ERROR)
                return pacs_err_set(err, PACS_EINVAL, "deflated data set is corrupt: %s",
                             s->z.msg ? s->z.msg : "inflate error");
            if (zr == Z_BUF_ERROR && s->z.avail_out)
                break;
        }
        n -= chunk;
    }
    return 0;
}

/* Runs the state machine over the buffered bytes. */
static int advance(struct dcm_stream *s, bool at_end, struct pacs_err *err)
{
    for (;;) {
        const uint8_t *b = s->buf.data;
        size_t avail = s->buf.len;
        switch (s->phase) {
        case ST_START:
            if (s->opts.ts_uid) {
                s->phase = ST_TS;
                continue;
            }
            if (avail < 132 && !at_end)
                return 0;
            if (has_preamble(b, avail)) {
                s->f.preamble = true;
                dynbuf_consume(&s->buf, 132);
                s->base += 132;
            } else if (avail >= 4 && memcmp(b, "DICM", 4) == 0) {
                dynbuf_consume(&s->buf, 4);
                s->base += 4;
            }
            s->phase = ST_META;
            continue;
        case ST_META: {
            if (avail < 6 && !at_end)
                return 0;
            if (!s->meta_checked) {
                s->explicit_vr = looks_explicit(b, avail, false);
                s->be = false;
                s->meta_checked = true;
            }
            if (avail < 4 || get16(false, b) != 0x0002) {
                s->phase = ST_TS;
                continue;
            }
            s->had_meta = true;
            int rc = scan(s, err);
            if (rc <= 0) {
                if (rc == 0 && at_end)
                    return sfail(s, err, PACS_ETRUNC, "offset %llu: input ends inside the file meta group",
                                 (unsigned long long)s->base);
                return rc;
            }
            if (s->base + s->scan_pos > PACS_MAX_META_LEN)
                return sfail(s, err, PACS_ELIMIT, "file meta group longer than %u bytes", PACS_MAX_META_LEN);
            rc = take_element(s, s->f.meta, s->scan_pos, err);
            if (rc)
                return rc;
            continue;
        }
        case ST_TS: {
            if (avail < 8 && !at_end)
                return 0;
            int rc = settle_ts(&s->f, &s->opts, s->had_meta, b, avail, err);
            if (rc) {
                s->phase = ST_FAILED;
                return rc;
            }
            rc = start_data(s, err);
            if (rc)
                return rc;
            continue;
        }
        case ST_DATA: {
            if (avail == 0)
                return 0;
            if (s->scan_pos == 0 && s->depth == 0) {
                if (avail < 4)
                    return 0;
                uint32_t tag = get_tag(s->be, b);
                if (s->opts.stop_tag && tag >= s->opts.stop_tag) {
                    s->phase = ST_STOPPED;
                    s->f.stopped = true;
                    return 1;
                }
                if (DCM_GROUP(tag) == 0xfffe)
                    return sfail(s, err, PACS_EINVAL, "offset %llu: item or delimiter tag (%04X,%04X) outside a sequence",
                                 (unsigned long long)s->base, DCM_GROUP(tag), DCM_ELEMENT(tag));
            }
            int rc = scan(s, err);
            if (rc <= 0)
                return rc;
            rc = take_element(s, s->f.ds, s->scan_pos, err);
            if (rc)
                return rc;
            continue;
        }
        case ST_STOPPED:
            return 1;
        case ST_FAILED:
            return sfail(s, err, PACS_EINVAL, "stream already failed");
        }
    }
}

int dcm_stream_feed(struct dcm_stream *s, const uint8_t *p, size_t n, size_t *used,
                    struct pacs_err *err)
{
    if (used)
        *used = n;
    if (s->phase == ST_FAILED)
        return sfail(s, err, PACS_EINVAL, "stream already failed");
    if (s->phase == ST_STOPPED) {
        if (used)
            *used = 0;
        return 1;
    }
    int rc, zrc = 0;
    struct pacs_err zerr = { 0 };
    if (s->inflating) {
        /* Inflate what can be; as in dcm_read_part10, damage after the stop
         * tag does not fail the read. */
        zrc = inflate_in(s, p, n, &zerr);
        rc = advance(s, false, err);
        if (zrc && rc == 0) {
            s->phase = ST_FAILED;
            if (err)
                *err = zerr;
            return zrc;
        }
        return rc;
    }
    /* In slices: each element taken moves what follows it to the front of
     * the buffer, so the buffer must not hold a whole large chunk (a 256 KiB
     * PDV of pixels behind a hundred small elements was quadratic). */
    size_t fed = 0;
    do {
        size_t k = n - fed < STREAM_SLICE ? n - fed : STREAM_SLICE;
        if (dynbuf_append(&s->buf, p + fed, k))
            return sfail(s, err, PACS_ENOMEM, "out of memory buffering input");
        fed += k;
        rc = advance(s, false, err);
    } while (rc == 0 && fed < n);
    if (rc == 1 && used) {
        /* Bytes of this call not fed, or still in the buffer, were not
         * needed. */
        size_t unused = s->buf.len < fed ? s->buf.len : fed;
        *used = fed - unused;
    }
    return rc;
}

int dcm_stream_finish(struct dcm_stream *s, struct dcm_file *f, struct pacs_err *err)
{
    memset(f, 0, sizeof *f);
    int rc = advance(s, true, err);
    if (rc < 0)
        return rc;
    if (s->phase != ST_STOPPED) {
        if (s->phase != ST_DATA)
            return sfail(s, err, PACS_ETRUNC, "input ends before the data set");
        if (s->inflating && !s->z_ended)
            return sfail(s, err, PACS_ETRUNC, "deflated data set ends early (inflated %llu bytes)",
                         (unsigned long long)(s->base + s->buf.len));
        if (s->buf.len || s->depth)
            return sfail(s, err, PACS_ETRUNC, "offset %llu: input ends inside an element (%zu bytes pending)",
                         (unsigned long long)s->base, s->buf.len);
    }
    s->f.end_offset = s->base;
    *f = s->f;
    memset(&s->f, 0, sizeof s->f);
    s->phase = ST_FAILED;
    return 0;
}
