/* retrieve.c - from UIDs (or any query) to the instances, then to their
 * stored bytes.
 *
 * A query at any level is answered in two steps: query_run() gives the
 * unique key of each matching entity (whatever the query needs: index
 * conditions, metadata filters, limits), then the index lists the
 * instances of those entities, a bounded chunk of keys per index query.
 * Only the list lives in memory; bytes are read from the blob store on
 * demand.
 */
#include "archive/retrieve.h"

#include <stdlib.h>
#include <string.h>

#include "dicom/json.h"
#include "dicom/reader.h"
#include "dicom/writer.h"
#include "dicom/vr.h"
#include "util/dynbuf.h"

#define TAG_QR_LEVEL DCM_TAG(0x0008, 0x0052)
#define TAG_SOP_CLASS_UID DCM_TAG(0x0008, 0x0016)

/* Entity keys per index query in the second step: SQL backends bind one
 * parameter per value and cap their number. */
#define RETRIEVE_CHUNK 500

static const uint32_t unique_tags[4] = {
    DCM_TAG(0x0010, 0x0020), /* PatientID */
    DCM_TAG(0x0020, 0x000d), /* StudyInstanceUID */
    DCM_TAG(0x0020, 0x000e), /* SeriesInstanceUID */
    DCM_TAG(0x0008, 0x0018), /* SOPInstanceUID */
};

static const char *const level_names[4] = { "PATIENT", "STUDY", "SERIES", "IMAGE" };

void retrieve_list_free(struct retrieve_list *l)
{
    if (!l)
        return;
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

/* --- step 1: the keys of the matching entities -------------------------------- */

struct keys {
    char **v;
    size_t n, cap;
    uint32_t tag;
    int rc;
};

static int collect_key(void *ctx, struct dcm_ds *answer)
{
    struct keys *k = ctx;
    const struct dcm_elem *e = dcm_ds_find(answer, k->tag);
    const char *s = "";
    size_t n = 0;
    int rc = 0;
    /* An empty value has no bytes to point at: never hand it to dcm_elem_str. */
    if (e && e->len > 0 && dcm_elem_str(e, 0, &s, &n) != 0) {
        s = "";
        n = 0;
    }
    if (k->n == k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 64;
        char **v = realloc(k->v, cap * sizeof *v);
        if (!v) {
            rc = PACS_ENOMEM;
            goto out;
        }
        k->v = v;
        k->cap = cap;
    }
    /* The answer holds the index's UTF-8 text, which the index matches. */
    char *d = strndup(s, n);
    if (!d) {
        rc = PACS_ENOMEM;
        goto out;
    }
    k->v[k->n++] = d;
out:
    dcm_ds_free(answer);
    k->rc = rc;
    return rc;
}

static void keys_free(struct keys *k)
{
    for (size_t i = 0; i < k->n; i++)
        free(k->v[i]);
    free(k->v);
}

/* --- step 2: the instances of those entities ------------------------------------ */

struct collect {
    struct retrieve_list *out;
    size_t cap;
    int col_class, col_instance, col_study, col_series;
    int rc;
    struct pacs_err err;
};

static int copy_field(char dst[65], const char *src, const char *what, struct pacs_err *err)
{
    size_t n = src ? strlen(src) : 0;
    if (n > 64)
        return pacs_err_set(err, PACS_EIO, "index holds a %s of %zu characters", what, n);
    if (n)
        memcpy(dst, src, n);
    dst[n] = '\0';
    return 0;
}

/* SOPClassUID from the stored metadata, for an index that does not keep it
 * as a main tag. */
static int class_from_meta(const struct index_row *row, char dst[65], struct pacs_err *err)
{
    struct dcm_ds *meta = NULL;
    struct pacs_err jerr = { 0 };
    dst[0] = '\0';
    if (!row->metadata_json)
        return 0;
    if (dcm_json_read(row->metadata_json, row->metadata_len, &meta, &jerr) != 0)
        return pacs_err_set(err, PACS_EIO, "stored metadata of instance %lld unreadable: %s",
                            (long long)row->id, jerr.msg);
    const struct dcm_elem *e = dcm_ds_find(meta, TAG_SOP_CLASS_UID);
    if (!e || e->len == 0 || dcm_ds_get_str(meta, TAG_SOP_CLASS_UID, 0, dst, 65) != 0)
        dst[0] = '\0';
    dcm_ds_free(meta);
    return 0;
}

static int on_instance(void *ctx, const struct index_row *row)
{
    struct collect *c = ctx;
    struct retrieve_list *l = c->out;
    int rc = 0;
    if (l->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        struct retrieve_item *v = realloc(l->items, cap * sizeof *v);
        if (!v) {
            rc = pacs_err_set(&c->err, PACS_ENOMEM, "out of memory");
            goto out;
        }
        l->items = v;
        c->cap = cap;
    }
    struct retrieve_item *it = &l->items[l->n];
    memset(it, 0, sizeof *it);
    if (!row->blob_key || !blob_key_valid(row->blob_key)) {
        rc = pacs_err_set(&c->err, PACS_EIO, "instance %lld has no valid blob key",
                          (long long)row->id);
        goto out;
    }
    if (c->col_class >= 0)
        rc = copy_field(it->sop_class_uid, row->values[c->col_class], "SOP class UID", &c->err);
    else
        rc = class_from_meta(row, it->sop_class_uid, &c->err);
    if (!rc)
        rc = copy_field(it->sop_instance_uid, row->values[c->col_instance], "SOP instance UID",
                        &c->err);
    if (!rc)
        rc = copy_field(it->study_uid, row->values[c->col_study], "study UID", &c->err);
    if (!rc)
        rc = copy_field(it->series_uid, row->values[c->col_series], "series UID", &c->err);
    if (!rc)
        rc = copy_field(it->transfer_syntax, row->transfer_syntax, "transfer syntax", &c->err);
    if (!rc)
        rc = copy_field(it->blob_key, row->blob_key, "blob key", &c->err);
    if (rc)
        goto out;
    it->size = row->size;
    it->ds_offset = row->ds_offset;
    l->n++;
out:
    c->rc = rc;
    return rc;
}

int retrieve_from_query(struct archive *a, const struct query *q, struct retrieve_list *out,
                        struct pacs_err *err)
{
    struct keys keys = { 0 };
    struct collect c = { .out = out };
    struct index *ix = archive_index(a);
    enum index_level level = query_level(q);
    int rc;
    out->items = NULL;
    out->n = 0;
    keys.tag = unique_tags[level];
    rc = query_run(a, q, collect_key, &keys, err);
    if (rc) {
        if (keys.rc)
            pacs_err_set(err, keys.rc, "out of memory");
        goto out;
    }
    int col_key = index_tag_find(keys.tag);
    c.col_class = index_tag_find(TAG_SOP_CLASS_UID);
    c.col_instance = index_tag_find(unique_tags[INDEX_INSTANCE]);
    c.col_study = index_tag_find(unique_tags[INDEX_STUDY]);
    c.col_series = index_tag_find(unique_tags[INDEX_SERIES]);
    if (col_key < 0 || c.col_instance < 0 || c.col_study < 0 || c.col_series < 0) {
        rc = pacs_err_set(err, PACS_EUNSUPPORTED, "the index lacks a unique key column");
        goto out;
    }
    for (size_t off = 0; off < keys.n; off += RETRIEVE_CHUNK) {
        size_t n = keys.n - off < RETRIEVE_CHUNK ? keys.n - off : RETRIEVE_CHUNK;
        struct index_cond cond = {
            .col = col_key,
            .kind = INDEX_MATCH_LIST,
            .list = (const char *const *)keys.v + off,
            .n_list = n,
        };
        struct index_query iq = {
            .level = INDEX_INSTANCE,
            .conds = &cond,
            .n_conds = 1,
            .want_metadata = c.col_class < 0,
        };
        rc = ix->ops->find(ix, &iq, on_instance, &c, err);
        if (rc) {
            if (c.rc && err)
                *err = c.err;
            goto out;
        }
    }
out:
    keys_free(&keys);
    if (rc)
        retrieve_list_free(out);
    return rc;
}

/* --- C-MOVE / C-GET identifiers ----------------------------------------------------- */

int retrieve_from_identifier(struct archive *a, const struct dcm_ds *ident,
                             enum query_model model, struct retrieve_list *out,
                             struct pacs_err *err)
{
    struct query *q = NULL;
    struct dynbuf text;
    dynbuf_init(&text, 0);
    out->items = NULL;
    out->n = 0;
    int rc = 0;
    const struct dcm_elem *e = dcm_ds_find(ident, TAG_QR_LEVEL);
    const char *s;
    size_t n;
    int level = -1;
    if (e && dcm_elem_is_value(e) && e->len > 0 && dcm_elem_str(e, 0, &s, &n) == 0)
        for (int i = 0; i < 4; i++)
            if (n == strlen(level_names[i]) && memcmp(s, level_names[i], n) == 0)
                level = i;
    if (level < 0) {
        rc = pacs_err_set(err, PACS_EINVAL, "QueryRetrieveLevel (0008,0052) missing or bad");
        goto out;
    }
    rc = query_new((enum index_level)level, model, &q);
    if (rc) {
        pacs_err_set(err, rc, rc == PACS_EINVAL ? "level PATIENT does not exist in the Study Root model"
                                                : "out of memory");
        goto out;
    }
    /* PS3.4 C.4.2.2.1: only unique keys, at the level and above; other
     * attributes are ignored, as DCMTK and Orthanc do. */
    bool have_own = false;
    for (int lv = 0; lv < 4; lv++) {
        e = dcm_ds_find(ident, unique_tags[lv]);
        if (!e)
            continue;
        if (!dcm_elem_is_value(e) || !dcm_vr_is_string(e->vr)) {
            rc = pacs_err_set(err, PACS_EINVAL, "unique key (%04X,%04X) is not a string",
                              DCM_GROUP(e->tag), DCM_ELEMENT(e->tag));
            goto out;
        }
        dynbuf_reset(&text);
        rc = dcm_elem_text(ident, e, &text, err);
        if (rc)
            goto out;
        const char *v = (const char *)text.data;
        size_t vn = text.len;
        while (vn && (v[vn - 1] == ' ' || v[vn - 1] == '\\'))
            vn--;
        while (vn && (*v == ' ' || *v == '\\')) {
            v++;
            vn--;
        }
        if (vn == 0)
            continue;
        if (lv > level) {
            rc = pacs_err_set(err, PACS_EINVAL, "unique key (%04X,%04X) is below the %s level",
                              DCM_GROUP(e->tag), DCM_ELEMENT(e->tag), level_names[level]);
            goto out;
        }
        /* In the Study Root model PatientID is no unique key. */
        if (model == QUERY_STUDY_ROOT && lv == INDEX_PATIENT)
            continue;
        /* Wild cards would turn a retrieve into a search (and a lone '*'
         * into "everything"). */
        if (memchr(v, '*', vn) || memchr(v, '?', vn)) {
            rc = pacs_err_set(err, PACS_EINVAL, "unique key (%04X,%04X) holds a wild card",
                              DCM_GROUP(e->tag), DCM_ELEMENT(e->tag));
            goto out;
        }
        ((char *)text.data)[(v - (const char *)text.data) + vn] = '\0';
        rc = query_add_key(q, e->tag, v, err);
        if (rc)
            goto out;
        if (lv == level)
            have_own = true;
    }
    if (!have_own) {
        rc = pacs_err_set(err, PACS_EINVAL, "no unique key (%04X,%04X) for the %s level",
                          DCM_GROUP(unique_tags[level]), DCM_ELEMENT(unique_tags[level]),
                          level_names[level]);
        goto out;
    }
    rc = retrieve_from_query(a, q, out, err);
out:
    query_free(q);
    dynbuf_free(&text);
    return rc;
}

/* --- reading the bytes ---------------------------------------------------------- */

struct retrieve_reader {
    struct blob_store *store;
    struct blob_reader *br;
    uint64_t pos, size;
};

int retrieve_open(struct archive *a, const struct retrieve_item *item, uint64_t offset,
                  struct retrieve_reader **out, struct pacs_err *err)
{
    struct retrieve_reader *r = NULL;
    int rc = 0;
    *out = NULL;
    if (!blob_key_valid(item->blob_key)) {
        rc = pacs_err_set(err, PACS_EINVAL, "bad blob key");
        goto out;
    }
    r = calloc(1, sizeof *r);
    if (!r) {
        rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
        goto out;
    }
    r->store = archive_blobs(a);
    rc = r->store->ops->get_open(r->store, item->blob_key, &r->br, &r->size, err);
    if (rc) {
        r->br = NULL;
        goto out;
    }
    if (offset > r->size) {
        rc = pacs_err_set(err, PACS_EIO, "instance %s: offset %llu past the stored %llu bytes",
                          item->sop_instance_uid, (unsigned long long)offset,
                          (unsigned long long)r->size);
        goto out;
    }
    r->pos = offset;
    *out = r;
    r = NULL;
out:
    retrieve_close(r);
    return rc;
}

int retrieve_read(struct retrieve_reader *r, void *p, size_t n, size_t *got, struct pacs_err *err)
{
    *got = 0;
    if (n == 0 || r->pos >= r->size)
        return 0;
    int rc = r->store->ops->get_read(r->br, r->pos, p, n, got, err);
    if (rc)
        return rc;
    r->pos += *got;
    return 0;
}

void retrieve_close(struct retrieve_reader *r)
{
    if (!r)
        return;
    if (r->br)
        r->store->ops->get_close(r->br);
    free(r);
}

static bool native_ts(const char *uid)
{
    struct dcm_ts ts;
    const struct dcm_uid_entry *u = dcm_uid_lookup(uid, (unsigned)strlen(uid));
    return u && u->type == DCM_UID_TRANSFER_SYNTAX &&
           dcm_ts_from_uid(uid, strlen(uid), &ts) == 0 && !ts.encapsulated;
}

bool retrieve_can_transcode(const char *from, const char *to)
{
    return native_ts(from) && native_ts(to);
}

/* Reads the item's whole stored file into file and parses it into f (whose
 * values borrow from file). */
static int read_stored(struct archive *a, const struct retrieve_item *item, struct dynbuf *file,
                       struct dcm_file *f, struct pacs_err *err)
{
    struct retrieve_reader *r = NULL;
    int rc = retrieve_open(a, item, 0, &r, err);
    if (rc)
        goto out;
    rc = dynbuf_reserve(file, item->size);
    for (size_t got = 1; rc == 0 && got;) {
        rc = retrieve_read(r, file->data + file->len, file->cap - file->len - 1, &got, err);
        file->len += got;
        if (rc == 0 && file->len + 1 == file->cap)
            rc = dynbuf_reserve(file, 64 * 1024);
    }
    if (rc)
        goto out;
    struct dcm_read_opts o = {.copy_values = false};
    rc = dcm_read_part10(file->data, file->len, &o, f, err);
out:
    retrieve_close(r);
    return rc;
}

/* The stored item re-encoded in ts_uid: its data set only, or (part10) a
 * whole file with the meta group rewritten. */
static int transcode(struct archive *a, const struct retrieve_item *item, const char *ts_uid,
                     bool part10, struct dynbuf *out, struct pacs_err *err)
{
    struct dynbuf file;
    struct dcm_file f = {0};
    int rc;
    dynbuf_init(&file, 0);
    if (!retrieve_can_transcode(item->transfer_syntax, ts_uid))
        return pacs_err_set(err, PACS_EUNSUPPORTED, "cannot convert %s to %s",
                            item->transfer_syntax, ts_uid);
    rc = read_stored(a, item, &file, &f, err);
    if (rc == 0) {
        struct dcm_sink sink = dcm_sink_dynbuf(out);
        struct dcm_write_opts o = {.ts_uid = ts_uid, .src_meta = f.meta};
        rc = part10 ? dcm_write_part10(f.ds, &o, &sink, err)
                    : dcm_write_dataset(f.ds, ts_uid, &sink, err);
    }
    dcm_file_free(&f);
    dynbuf_free(&file);
    return rc;
}

int retrieve_transcode(struct archive *a, const struct retrieve_item *item, const char *ts_uid,
                       struct dynbuf *out, struct pacs_err *err)
{
    return transcode(a, item, ts_uid, false, out, err);
}

int retrieve_transcode_file(struct archive *a, const struct retrieve_item *item,
                            const char *ts_uid, struct dynbuf *out, struct pacs_err *err)
{
    return transcode(a, item, ts_uid, true, out, err);
}

int retrieve_read_at(struct retrieve_reader *r, uint64_t pos, void *p, size_t n, size_t *got,
                     struct pacs_err *err)
{
    *got = 0;
    if (n == 0 || pos >= r->size)
        return 0;
    if (n > r->size - pos)
        n = (size_t)(r->size - pos);
    return r->store->ops->get_read(r->br, pos, p, n, got, err);
}
