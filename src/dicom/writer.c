#include "dicom/writer.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "dicom/reader.h"

/* ------------------------------------------------------------------------
 * Sinks
 * ------------------------------------------------------------------------ */

static int dynbuf_write(void *ctx, const void *p, size_t n)
{
    return dynbuf_append(ctx, p, n);
}

struct dcm_sink dcm_sink_dynbuf(struct dynbuf *b)
{
    return (struct dcm_sink){ dynbuf_write, b };
}

/* Compresses what passes through into a downstream sink (raw deflate, no
 * zlib header, as PS3.5 A.5 requires). */
struct deflater {
    z_stream z;
    const struct dcm_sink *down;
    uint64_t total; /* compressed bytes written downstream */
    uint8_t out[64 * 1024];
};

static int deflate_pump(struct deflater *d, int flush)
{
    int zr;
    do {
        d->z.next_out = d->out;
        d->z.avail_out = sizeof d->out;
        zr = deflate(&d->z, flush);
        if (zr == Z_STREAM_ERROR)
            return PACS_EINVAL;
        size_t have = sizeof d->out - d->z.avail_out;
        if (have) {
            int rc = d->down->write(d->down->ctx, d->out, have);
            if (rc)
                return rc;
            d->total += have;
        }
    } while (d->z.avail_out == 0 || (flush == Z_FINISH && zr != Z_STREAM_END));
    return 0;
}

static int deflate_write(void *ctx, const void *p, size_t n)
{
    struct deflater *d = ctx;
    const uint8_t *b = p;
    while (n) {
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        d->z.next_in = (Bytef *)(uintptr_t)b;
        d->z.avail_in = chunk;
        int rc = deflate_pump(d, Z_NO_FLUSH);
        if (rc)
            return rc;
        b += chunk;
        n -= chunk;
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * Encoder
 * ------------------------------------------------------------------------ */

struct wr {
    struct dcm_sink sink;
    bool explicit_vr;
    bool be;
    int rc;
    size_t n;
    uint8_t buf[16 * 1024];
};

static void flush(struct wr *w)
{
    if (w->n && !w->rc)
        w->rc = w->sink.write(w->sink.ctx, w->buf, w->n);
    w->n = 0;
}

static void put(struct wr *w, const void *p, size_t n)
{
    if (w->rc || n == 0)
        return;
    if (n > sizeof w->buf - w->n) {
        flush(w);
        if (n >= sizeof w->buf) {
            if (!w->rc)
                w->rc = w->sink.write(w->sink.ctx, p, n);
            return;
        }
    }
    memcpy(w->buf + w->n, p, n);
    w->n += n;
}

static void put16(struct wr *w, uint16_t v)
{
    uint8_t b[2];
    if (w->be) {
        b[0] = (uint8_t)(v >> 8);
        b[1] = (uint8_t)v;
    } else {
        b[0] = (uint8_t)v;
        b[1] = (uint8_t)(v >> 8);
    }
    put(w, b, 2);
}

static void put32(struct wr *w, uint32_t v)
{
    if (w->be) {
        put16(w, (uint16_t)(v >> 16));
        put16(w, (uint16_t)v);
    } else {
        put16(w, (uint16_t)v);
        put16(w, (uint16_t)(v >> 16));
    }
}

static void put_tag(struct wr *w, uint32_t tag)
{
    put16(w, DCM_GROUP(tag));
    put16(w, DCM_ELEMENT(tag));
}

/* The VR written for an element in Explicit VR: a short-length VR whose
 * value does not fit 16 bits becomes UN (PS3.5 6.2.2). */
static uint16_t out_vr(const struct dcm_elem *e)
{
    if (e->flags & DCM_EF_UN_SEQ)
        return DCM_VR_UN;
    if (e->flags & DCM_EF_SEQ)
        return DCM_VR_SQ;
    if (e->flags & DCM_EF_ENCAPS)
        return e->vr;
    if (e->vr == DCM_VR_NONE)
        return DCM_VR_UN;
    if (dcm_vr_known(e->vr) && !dcm_vr_long_length(e->vr) && e->len > 0xffff)
        return DCM_VR_UN;
    return e->vr;
}

static uint32_t header_len(bool explicit_vr, uint16_t vr)
{
    if (!explicit_vr)
        return 8;
    return (dcm_vr_known(vr) && !dcm_vr_long_length(vr)) ? 8 : 12;
}

static uint64_t ds_len(const struct dcm_ds *ds, bool explicit_vr);

/* Bytes of the items of a sequence, without the element header. */
static uint64_t seq_content_len(const struct dcm_elem *e, bool explicit_vr)
{
    bool inner = (e->flags & DCM_EF_UN_SEQ) ? false : explicit_vr;
    uint64_t n = 0;
    for (uint32_t i = 0; i < e->u.items.n; i++) {
        const struct dcm_ds *it = e->u.items.v[i];
        n += 8 + ds_len(it, inner) + ((it->flags & DCM_EF_UNDEF_LEN) ? 8 : 0);
    }
    if (e->flags & DCM_EF_UNDEF_LEN)
        n += 8;
    return n;
}

static uint64_t elem_len(const struct dcm_elem *e, bool explicit_vr)
{
    uint64_t n = header_len(explicit_vr, out_vr(e));
    if (e->flags & DCM_EF_SEQ)
        return n + seq_content_len(e, explicit_vr);
    if (e->flags & DCM_EF_ENCAPS) {
        for (uint32_t i = 0; i < e->u.frags.n; i++)
            n += 8 + e->u.frags.v[i].len;
        return n + 8;
    }
    return n + e->len;
}

static uint64_t ds_len(const struct dcm_ds *ds, bool explicit_vr)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < ds->n; i++)
        n += elem_len(&ds->el[i], explicit_vr);
    return n;
}

static bool is_group_length(const struct dcm_elem *e)
{
    return DCM_ELEMENT(e->tag) == 0 && e->vr == DCM_VR_UL && e->len == 4 &&
           !(e->flags & (DCM_EF_SEQ | DCM_EF_ENCAPS));
}

static void write_ds(struct wr *w, const struct dcm_ds *ds, bool skip_meta);

static void write_header(struct wr *w, uint32_t tag, uint16_t vr, uint32_t len)
{
    put_tag(w, tag);
    if (!w->explicit_vr) {
        put32(w, len);
        return;
    }
    uint8_t v[2] = { (uint8_t)(vr >> 8), (uint8_t)vr };
    put(w, v, 2);
    if (header_len(true, vr) == 8) {
        put16(w, (uint16_t)len);
    } else {
        put16(w, 0);
        put32(w, len);
    }
}

static uint32_t len32(struct wr *w, uint64_t n)
{
    if (n >= DCM_UNDEFINED_LENGTH) {
        if (!w->rc)
            w->rc = PACS_ELIMIT;
        return 0;
    }
    return (uint32_t)n;
}

static void write_value(struct wr *w, const struct dcm_elem *e)
{
    unsigned unit = w->be ? dcm_vr_swap_unit(e->vr) : 1;
    if (unit == 1) {
        put(w, e->val, e->len);
        return;
    }
    uint8_t tmp[8];
    uint32_t whole = e->len - e->len % unit;
    for (uint32_t i = 0; i < whole && !w->rc; i += unit) {
        for (unsigned k = 0; k < unit; k++)
            tmp[k] = e->val[i + unit - 1 - k];
        put(w, tmp, unit);
    }
    put(w, e->val + whole, e->len - whole);
}

static void write_elem(struct wr *w, const struct dcm_ds *ds, uint32_t idx)
{
    const struct dcm_elem *e = &ds->el[idx];
    uint16_t vr = out_vr(e);
    bool undef = e->flags & DCM_EF_UNDEF_LEN;
    if (e->flags & DCM_EF_SEQ) {
        write_header(w, e->tag, vr, undef ? DCM_UNDEFINED_LENGTH
                                          : len32(w, seq_content_len(e, w->explicit_vr)));
        bool was_explicit = w->explicit_vr, was_be = w->be;
        if (e->flags & DCM_EF_UN_SEQ)
            w->explicit_vr = w->be = false;
        for (uint32_t i = 0; i < e->u.items.n; i++) {
            const struct dcm_ds *it = e->u.items.v[i];
            bool iundef = it->flags & DCM_EF_UNDEF_LEN;
            put_tag(w, DCM_TAG_ITEM);
            put32(w, iundef ? DCM_UNDEFINED_LENGTH : len32(w, ds_len(it, w->explicit_vr)));
            write_ds(w, it, false);
            if (iundef) {
                put_tag(w, DCM_TAG_ITEM_END);
                put32(w, 0);
            }
        }
        if (undef) {
            put_tag(w, DCM_TAG_SEQ_END);
            put32(w, 0);
        }
        w->explicit_vr = was_explicit;
        w->be = was_be;
        return;
    }
    if (e->flags & DCM_EF_ENCAPS) {
        write_header(w, e->tag, vr, DCM_UNDEFINED_LENGTH);
        for (uint32_t i = 0; i < e->u.frags.n; i++) {
            put_tag(w, DCM_TAG_ITEM);
            put32(w, e->u.frags.v[i].len);
            put(w, e->u.frags.v[i].data, e->u.frags.v[i].len);
        }
        put_tag(w, DCM_TAG_SEQ_END);
        put32(w, 0);
        return;
    }
    if (is_group_length(e)) {
        /* Group lengths depend on the encoding: recompute (an unchanged,
         * correct value comes out the same). */
        uint64_t n = 0;
        for (uint32_t i = idx + 1; i < ds->n && DCM_GROUP(ds->el[i].tag) == DCM_GROUP(e->tag); i++)
            n += elem_len(&ds->el[i], w->explicit_vr);
        write_header(w, e->tag, vr, 4);
        put32(w, len32(w, n));
        return;
    }
    write_header(w, e->tag, vr, e->len);
    write_value(w, e);
}

static void write_ds(struct wr *w, const struct dcm_ds *ds, bool skip_meta)
{
    for (uint32_t i = 0; i < ds->n && !w->rc; i++) {
        if (skip_meta && DCM_GROUP(ds->el[i].tag) == 0x0002)
            continue;
        write_elem(w, ds, i);
    }
}

/* Checks the data set can be written in ts: pixel data is never transcoded. */
static int check_pixels(const struct dcm_ds *ds, const struct dcm_ts *ts, const char *uid,
                        struct pacs_err *err)
{
    const struct dcm_elem *px = dcm_ds_find(ds, DCM_TAG_PIXEL_DATA);
    if (!px)
        return 0;
    bool encaps = px->flags & DCM_EF_ENCAPS;
    if (encaps && !ts->encapsulated)
        return pacs_err_set(err, PACS_EUNSUPPORTED,
                            "pixel data is compressed; writing it as %s would need decompression", uid);
    if (!encaps && ts->encapsulated)
        return pacs_err_set(err, PACS_EUNSUPPORTED,
                            "pixel data is not compressed; writing it as %s would need compression", uid);
    return 0;
}

static int encode(const struct dcm_ds *ds, const struct dcm_ts *ts, const struct dcm_sink *sink,
                  int level, struct pacs_err *err)
{
    struct wr *w = malloc(sizeof *w);
    struct deflater *d = NULL;
    int rc = 0;
    if (!w)
        return pacs_err_set(err, PACS_ENOMEM, "out of memory");
    w->sink = *sink;
    w->explicit_vr = ts->explicit_vr;
    w->be = ts->big_endian;
    w->rc = 0;
    w->n = 0;
    if (ts->deflated) {
        d = malloc(sizeof *d);
        if (!d) {
            rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
            goto out;
        }
        memset(&d->z, 0, sizeof d->z);
        d->total = 0;
        if (deflateInit2(&d->z, level ? level : Z_DEFAULT_COMPRESSION, Z_DEFLATED, -MAX_WBITS, 8,
                         Z_DEFAULT_STRATEGY) != Z_OK) {
            free(d);
            d = NULL;
            rc = pacs_err_set(err, PACS_ENOMEM, "cannot start deflate");
            goto out;
        }
        d->down = sink;
        w->sink = (struct dcm_sink){ deflate_write, d };
    }
    write_ds(w, ds, true);
    flush(w);
    if (!w->rc && d)
        w->rc = deflate_pump(d, Z_FINISH);
    /* PS3.5 A.5: an odd-length deflated stream gets one trailing NUL, so
     * the data set can travel in PDVs and files of even length. */
    if (!w->rc && d && (d->total & 1))
        w->rc = sink->write(sink->ctx, "", 1);
    if (w->rc)
        rc = pacs_err_set(err, w->rc, "cannot write data set: %s", pacs_strerror(w->rc));
out:
    if (d) {
        deflateEnd(&d->z);
        free(d);
    }
    free(w);
    return rc;
}

int dcm_write_dataset(const struct dcm_ds *ds, const char *ts_uid, const struct dcm_sink *sink,
                      struct pacs_err *err)
{
    struct dcm_ts ts;
    if (!ts_uid)
        ts_uid = DCM_UID_EXPLICIT_LE;
    if (dcm_ts_from_uid(ts_uid, strlen(ts_uid), &ts))
        return pacs_err_set(err, PACS_EINVAL, "malformed transfer syntax UID '%s'", ts_uid);
    int rc = check_pixels(ds, &ts, ts_uid, err);
    if (rc)
        return rc;
    return encode(ds, &ts, sink, 0, err);
}

/* Copies an element of the source meta group into the new one, if present. */
static int keep_meta(struct dcm_ds *meta, const struct dcm_ds *src, uint32_t tag)
{
    const struct dcm_elem *e = src ? dcm_ds_find(src, tag) : NULL;
    if (!e || !dcm_elem_is_value(e))
        return 0;
    return dcm_ds_put(meta, tag, e->vr, e->val, e->len, NULL);
}

static bool has_value(const struct dcm_elem *e)
{
    return e && e->len && dcm_elem_is_value(e);
}

/* The meta group's SOP Class/Instance UID `to` comes from the data set's
 * `from` or, for a data set that lacks it, from the source meta group. */
static int copy_uid(struct dcm_ds *meta, uint32_t to, const struct dcm_ds *ds, uint32_t from,
                    const struct dcm_ds *src_meta, const char *what, struct pacs_err *err)
{
    const struct dcm_elem *e = dcm_ds_find(ds, from);
    if (!has_value(e) && src_meta)
        e = dcm_ds_find(src_meta, to);
    if (!has_value(e))
        return pacs_err_set(err, PACS_EINVAL, "data set has no %s (%04X,%04X) and no meta group names one",
                            what, DCM_GROUP(from), DCM_ELEMENT(from));
    if (dcm_ds_put(meta, to, DCM_VR_UI, e->val, e->len, NULL))
        return pacs_err_set(err, PACS_ENOMEM, "out of memory");
    return 0;
}

int dcm_write_part10(const struct dcm_ds *ds, const struct dcm_write_opts *o,
                     const struct dcm_sink *sink, struct pacs_err *err)
{
    static const struct dcm_write_opts defaults;
    if (!o)
        o = &defaults;
    const char *ts_uid = o->ts_uid ? o->ts_uid : DCM_UID_EXPLICIT_LE;
    struct dcm_ts ts;
    if (dcm_ts_from_uid(ts_uid, strlen(ts_uid), &ts))
        return pacs_err_set(err, PACS_EINVAL, "malformed transfer syntax UID '%s'", ts_uid);
    int rc = check_pixels(ds, &ts, ts_uid, err);
    if (rc)
        return rc;

    struct dcm_ds *meta = dcm_ds_new();
    if (!meta)
        return pacs_err_set(err, PACS_ENOMEM, "out of memory");
    static const uint8_t version[2] = { 0, 1 };
    uint32_t zero = 0;
    if ((rc = copy_uid(meta, DCM_TAG(0x0002, 0x0002), ds, DCM_TAG(0x0008, 0x0016), o->src_meta,
                       "SOP Class UID", err)) ||
        (rc = copy_uid(meta, DCM_TAG(0x0002, 0x0003), ds, DCM_TAG(0x0008, 0x0018), o->src_meta,
                       "SOP Instance UID", err)))
        goto out;
    const struct dcm_elem *cls = dcm_ds_find(meta, DCM_TAG(0x0002, 0x0002));
    const struct dcm_uid_entry *u = dcm_uid_lookup((const char *)cls->val, cls->len);
    if (u && !strcmp(u->uid, "1.2.840.10008.1.3.10")) {
        /* Directory records hold offsets from the file's first byte, which
         * a new meta group would move. */
        rc = pacs_err_set(err, PACS_EUNSUPPORTED,
                          "a DICOMDIR cannot be rewritten: its records hold byte offsets into the file");
        goto out;
    }
    if (dcm_ds_put(meta, DCM_TAG(0x0002, 0x0000), DCM_VR_UL, &zero, 4, NULL) ||
        dcm_ds_put(meta, DCM_TAG(0x0002, 0x0001), DCM_VR_OB, version, 2, NULL) ||
        dcm_ds_put_str(meta, DCM_TAG_TRANSFER_SYNTAX, DCM_VR_UI, ts_uid) ||
        dcm_ds_put_str(meta, DCM_TAG(0x0002, 0x0012), DCM_VR_UI, PACSD_IMPLEMENTATION_CLASS_UID) ||
        dcm_ds_put_str(meta, DCM_TAG(0x0002, 0x0013), DCM_VR_SH, PACSD_IMPLEMENTATION_VERSION) ||
        keep_meta(meta, o->src_meta, DCM_TAG(0x0002, 0x0016)) ||
        keep_meta(meta, o->src_meta, DCM_TAG(0x0002, 0x0017)) ||
        keep_meta(meta, o->src_meta, DCM_TAG(0x0002, 0x0018)) ||
        keep_meta(meta, o->src_meta, DCM_TAG(0x0002, 0x0100)) ||
        keep_meta(meta, o->src_meta, DCM_TAG(0x0002, 0x0102))) {
        rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
        goto out;
    }

    uint8_t preamble[132] = { 0 };
    memcpy(preamble + 128, "DICM", 4);
    rc = sink->write(sink->ctx, preamble, sizeof preamble);
    if (rc) {
        rc = pacs_err_set(err, rc, "cannot write preamble: %s", pacs_strerror(rc));
        goto out;
    }
    /* The meta group is always Explicit VR Little Endian; its group length
     * is recomputed by the encoder. */
    static const struct dcm_ts meta_ts = { .explicit_vr = true };
    struct wr *w = malloc(sizeof *w);
    if (!w) {
        rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
        goto out;
    }
    w->sink = *sink;
    w->explicit_vr = meta_ts.explicit_vr;
    w->be = false;
    w->rc = 0;
    w->n = 0;
    write_ds(w, meta, false);
    flush(w);
    rc = w->rc;
    free(w);
    if (rc) {
        rc = pacs_err_set(err, rc, "cannot write meta group: %s", pacs_strerror(rc));
        goto out;
    }
    rc = encode(ds, &ts, sink, o->deflate_level, err);
out:
    dcm_ds_free(meta);
    return rc;
}
