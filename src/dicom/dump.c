#include "dicom/dump.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Tag, VR and value are padded to this width, as dcmdump does. */
#define VALUE_COLUMN 55

static const char *ts_name(const struct dcm_file *f)
{
    if (!f->ts.explicit_vr)
        return "Little Endian Implicit";
    if (f->ts.big_endian)
        return "Big Endian Explicit";
    if (f->ts.deflated)
        return "Deflated Little Endian Explicit";
    if (f->ts.encapsulated) {
        const struct dcm_uid_entry *u = dcm_uid_lookup(f->ts_uid, (unsigned)strlen(f->ts_uid));
        return u ? u->name : f->ts_uid;
    }
    return "Little Endian Explicit";
}

/* Appends printable text, escaping control bytes; stops after max chars
 * of it (the bracket before it does not count: a 64-character UID shows
 * whole, as in dcmdump). */
static int put_text(struct dynbuf *v, const char *s, size_t n, size_t max)
{
    size_t start = v->len;
    for (size_t i = 0; i < n; i++) {
        if (v->len - start >= max)
            return dynbuf_puts(v, "...");
        unsigned char c = (unsigned char)s[i];
        int rc = (c < 0x20 || c == 0x7f) ? dynbuf_printf(v, "\\%02x", c) : dynbuf_putc(v, (char)c);
        if (rc)
            return rc;
    }
    return 0;
}

static int format_number(const struct dcm_elem *e, struct dynbuf *v, size_t max)
{
    unsigned sz = dcm_vr_num_size(e->vr);
    uint32_t count = e->len / sz;
    for (uint32_t i = 0; i < count; i++) {
        if (v->len >= max)
            return dynbuf_puts(v, "...");
        int rc = i ? dynbuf_putc(v, '\\') : 0;
        if (rc)
            return rc;
        if (e->vr == DCM_VR_AT) {
            uint32_t t = 0;
            dcm_elem_tag(e, i, &t);
            rc = dynbuf_printf(v, "(%04x,%04x)", DCM_GROUP(t), DCM_ELEMENT(t));
        } else if (e->vr == DCM_VR_FL || e->vr == DCM_VR_FD) {
            double d = 0;
            dcm_elem_double(e, i, &d);
            rc = dynbuf_printf(v, "%.*g", e->vr == DCM_VR_FL ? 6 : 17, d);
        } else if (e->vr == DCM_VR_SS || e->vr == DCM_VR_SL || e->vr == DCM_VR_SV) {
            int64_t x = 0;
            dcm_elem_int(e, i, &x);
            rc = dynbuf_printf(v, "%" PRId64, x);
        } else {
            uint64_t x = 0;
            dcm_elem_uint(e, i, &x);
            rc = dynbuf_printf(v, "%" PRIu64, x);
        }
        if (rc)
            return rc;
    }
    return 0;
}

static int format_binary(const struct dcm_elem *e, struct dynbuf *v, size_t max)
{
    unsigned unit = dcm_vr_swap_unit(e->vr);
    for (uint32_t i = 0; i + unit <= e->len; i += unit) {
        if (v->len >= max)
            return dynbuf_puts(v, "...");
        int rc = i ? dynbuf_putc(v, '\\') : 0;
        for (unsigned k = unit; k-- > 0 && !rc;)
            rc = dynbuf_printf(v, "%02x", e->val[i + k]);
        if (rc)
            return rc;
    }
    return 0;
}

static int format_value(const struct dcm_ds *ds, const struct dcm_elem *e, struct dynbuf *v,
                        size_t max)
{
    if (e->len == 0)
        return dynbuf_puts(v, "(no value available)");
    if (e->vr == DCM_VR_UI) {
        const struct dcm_uid_entry *u = dcm_uid_lookup((const char *)e->val, e->len);
        if (u && u->keyword[0])
            return dynbuf_printf(v, "=%s", u->keyword);
    }
    if (dcm_vr_is_string(e->vr)) {
        struct dynbuf t;
        dynbuf_init(&t, 0);
        int rc = dcm_elem_text(ds, e, &t, NULL);
        if (rc == 0)
            rc = dynbuf_putc(v, '[');
        if (rc == 0)
            rc = put_text(v, (const char *)t.data, t.len, max);
        if (rc == 0)
            rc = dynbuf_putc(v, ']');
        dynbuf_free(&t);
        return rc;
    }
    if (dcm_vr_num_size(e->vr))
        return format_number(e, v, max);
    return format_binary(e, v, max);
}

static int line(struct dynbuf *out, unsigned depth, uint32_t tag, const char *vr,
                const char *value, const char *len, uint32_t vm, const char *name)
{
    int rc = 0;
    for (unsigned i = 0; i < depth && !rc; i++)
        rc = dynbuf_puts(out, "  ");
    if (rc)
        return rc;
    size_t start = out->len;
    rc = dynbuf_printf(out, "(%04x,%04x) %s %s", DCM_GROUP(tag), DCM_ELEMENT(tag), vr, value);
    size_t width = out->len - start;
    while (!rc && width < VALUE_COLUMN) {
        rc = dynbuf_putc(out, ' ');
        width++;
    }
    if (!rc)
        rc = dynbuf_printf(out, " # %3s, %u %s\n", len, vm, name);
    return rc;
}

static const char *keyword(uint32_t tag)
{
    const char *k = dcm_dict_keyword(tag);
    if (k[0])
        return k;
    return (DCM_GROUP(tag) & 1) ? "PrivateTag" : "Unknown Tag & Data";
}

static int dump_elem(const struct dcm_ds *ds, const struct dcm_elem *e,
                     const struct dcm_dump_opts *o, unsigned depth, struct dynbuf *out)
{
    char vr[3], lenbuf[16];
    unsigned max = o && o->max_value ? o->max_value : 64;
    dcm_vr_str(e->vr, vr);
    bool undef = e->flags & DCM_EF_UNDEF_LEN;
    if (undef)
        snprintf(lenbuf, sizeof lenbuf, "u/l");
    else
        snprintf(lenbuf, sizeof lenbuf, "%u", e->len);
    int rc;
    if (e->flags & DCM_EF_SEQ) {
        char desc[64];
        snprintf(desc, sizeof desc, "(Sequence with %s length #=%u)", undef ? "undefined" : "explicit",
                 e->u.items.n);
        rc = line(out, depth, e->tag, vr, desc, lenbuf, e->u.items.n, keyword(e->tag));
        for (uint32_t i = 0; i < e->u.items.n && !rc; i++) {
            const struct dcm_ds *it = e->u.items.v[i];
            bool iu = it->flags & DCM_EF_UNDEF_LEN;
            char ilen[16];
            snprintf(desc, sizeof desc, "(Item with %s length #=%u)", iu ? "undefined" : "explicit", it->n);
            if (iu)
                snprintf(ilen, sizeof ilen, "u/l");
            else
                snprintf(ilen, sizeof ilen, "%u", it->len);
            rc = line(out, depth + 1, DCM_TAG_ITEM, "na", desc, ilen, 1, "Item");
            if (!rc)
                rc = dcm_dump_ds(it, o, depth + 2, out);
            if (!rc && iu)
                rc = line(out, depth + 2, DCM_TAG_ITEM_END, "na", "(ItemDelimitationItem)", "0", 0,
                          "ItemDelimitationItem");
        }
        if (!rc && undef)
            rc = line(out, depth, DCM_TAG_SEQ_END, "na", "(SequenceDelimitationItem)", "0", 0,
                      "SequenceDelimitationItem");
        return rc;
    }
    if (e->flags & DCM_EF_ENCAPS) {
        char desc[48];
        snprintf(desc, sizeof desc, "(PixelSequence #=%u)", e->u.frags.n);
        rc = line(out, depth, e->tag, vr, desc, lenbuf, 1, keyword(e->tag));
        for (uint32_t i = 0; i < e->u.frags.n && !rc; i++) {
            char flen[16], val[48];
            snprintf(flen, sizeof flen, "%u", e->u.frags.v[i].len);
            snprintf(val, sizeof val, "%s", e->u.frags.v[i].len ? "(fragment data)" : "(no value available)");
            rc = line(out, depth + 1, DCM_TAG_ITEM, "pi", val, flen, 1, i ? "Item" : "Item (basic offset table)");
        }
        if (!rc)
            rc = line(out, depth, DCM_TAG_SEQ_END, "na", "(SequenceDelimitationItem)", "0", 0,
                      "SequenceDelimitationItem");
        return rc;
    }
    struct dynbuf v;
    dynbuf_init(&v, 0);
    rc = format_value(ds, e, &v, max);
    if (!rc)
        rc = line(out, depth, e->tag, vr, v.data ? (const char *)v.data : "", lenbuf, dcm_elem_vm(e),
                  keyword(e->tag));
    dynbuf_free(&v);
    return rc;
}

int dcm_dump_ds(const struct dcm_ds *ds, const struct dcm_dump_opts *o, unsigned depth,
                struct dynbuf *out)
{
    for (uint32_t i = 0; i < ds->n; i++) {
        int rc = dump_elem(ds, &ds->el[i], o, depth, out);
        if (rc)
            return rc;
    }
    return 0;
}

int dcm_dump_file(const struct dcm_file *f, const struct dcm_dump_opts *o, struct dynbuf *out)
{
    int rc = 0;
    if (f->meta && f->meta->n) {
        rc = dynbuf_puts(out, "\n# Dicom-File-Format\n\n# Dicom-Meta-Information-Header\n"
                              "# Used TransferSyntax: Little Endian Explicit\n");
        if (!rc)
            rc = dcm_dump_ds(f->meta, o, 0, out);
    }
    if (!rc)
        rc = dynbuf_printf(out, "\n# Dicom-Data-Set\n# Used TransferSyntax: %s\n", ts_name(f));
    if (!rc)
        rc = dcm_dump_ds(f->ds, o, 0, out);
    return rc;
}
