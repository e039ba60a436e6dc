/* rest_tags.c - a data set in Orthanc's two tag formats (rest.h): what
 * /instances/{id}/tags and /simplified-tags answer, from the DICOM JSON the
 * index stored at ingest (never the file). */
#include <stdio.h>
#include <string.h>

#include "http/rest.h"
#include "util/limits.h"

/* The value of a non-sequence element as Orthanc's text: strings decoded
 * (values joined by '\'), binary numbers in decimal. false: a binary value
 * Orthanc shows as null (OB, OW, UN..., and bulk data). */
static bool value_text(const struct dcm_ds *ds, const struct dcm_elem *e, struct dynbuf *b,
                       int *rc)
{
    *rc = 0;
    if (e->flags & DCM_EF_ENCAPS)
        return false;
    if (dcm_vr_is_string(e->vr)) {
        *rc = dcm_elem_text(ds, e, b, NULL);
        return true;
    }
    unsigned sz = dcm_vr_num_size(e->vr);
    if (!sz)
        return false;
    for (uint32_t k = 0; k < e->len / sz && *rc == 0; k++) {
        if (k && (*rc = dynbuf_putc(b, '\\')) != 0)
            break;
        switch (e->vr) {
        case DCM_VR_FL:
        case DCM_VR_FD: {
            double d = 0;
            if (dcm_elem_double(e, k, &d) == 0)
                *rc = dynbuf_printf(b, e->vr == DCM_VR_FL ? "%.9g" : "%.17g", d);
            break;
        }
        case DCM_VR_SS:
        case DCM_VR_SL:
        case DCM_VR_SV: {
            int64_t v = 0;
            if (dcm_elem_int(e, k, &v) == 0)
                *rc = dynbuf_printf(b, "%lld", (long long)v);
            break;
        }
        case DCM_VR_AT: {
            uint32_t t = 0;
            if (dcm_elem_tag(e, k, &t) == 0)
                *rc = dynbuf_printf(b, "%04x,%04x", (unsigned)(t >> 16), (unsigned)(t & 0xffff));
            break;
        }
        default: {
            uint64_t v = 0;
            if (dcm_elem_uint(e, k, &v) == 0)
                *rc = dynbuf_printf(b, "%llu", (unsigned long long)v);
            break;
        }
        }
    }
    return true;
}

static json_t *tags_of(const struct dcm_ds *ds, bool simplify, unsigned depth);

static json_t *element_value(const struct dcm_ds *ds, const struct dcm_elem *e, bool simplify,
                             unsigned depth, const char **type)
{
    if (e->flags & DCM_EF_SEQ) {
        json_t *a = json_array();
        *type = "Sequence";
        for (uint32_t k = 0; a && k < e->u.items.n; k++) {
            json_t *item = tags_of(e->u.items.v[k], simplify, depth + 1);
            if (!item || json_array_append_new(a, item) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    struct dynbuf b;
    int rc;
    dynbuf_init(&b, 0);
    if (!value_text(ds, e, &b, &rc)) {
        dynbuf_free(&b);
        *type = "Null";
        return json_null();
    }
    if (rc == 0 && b.len > REST_MAX_TAG_LENGTH) {
        dynbuf_free(&b);
        *type = "TooLong";
        return json_null();
    }
    json_t *s = rc ? NULL : json_stringn(b.data ? (const char *)b.data : "", b.len);
    dynbuf_free(&b);
    *type = "String";
    return s;
}

static json_t *tags_of(const struct dcm_ds *ds, bool simplify, unsigned depth)
{
    json_t *o = json_object();
    if (!o || depth > PACS_MAX_SEQ_DEPTH)
        return o;
    for (uint32_t k = 0; k < ds->n; k++) {
        const struct dcm_elem *e = &ds->el[k];
        char key[16];
        const char *kw = dcm_dict_keyword(e->tag);
        const char *type = "Null";
        /* The file meta group is not part of the data set. */
        if ((e->tag >> 16) == 0x0002)
            continue;
        json_t *v = element_value(ds, e, simplify, depth, &type);
        if (!v)
            goto fail;
        int n = snprintf(key, sizeof key, "%04x,%04x", (unsigned)(e->tag >> 16),
                         (unsigned)(e->tag & 0xffff));
        if (n < 0 || (size_t)n >= sizeof key) {
            json_decref(v);
            goto fail;
        }
        if (simplify) {
            if (json_object_set_new(o, *kw ? kw : key, v) != 0)
                goto fail;
            continue;
        }
        json_t *entry = json_pack("{s:s, s:s, s:o}", "Name", *kw ? kw : "Unknown Tag & Data",
                                  "Type", type, "Value", v);
        if (!entry || json_object_set_new(o, key, entry) != 0)
            goto fail;
    }
    return o;
fail:
    json_decref(o);
    return NULL;
}

json_t *rest_tags_json(const struct dcm_ds *ds, bool simplify)
{
    return tags_of(ds, simplify, 0);
}
