/* metadata.c - stored instance metadata for WADO-RS (see metadata.h). */
#include "archive/metadata.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "dicom/dict.h"
#include "store/index.h"

#define TAG_STUDY_UID DCM_TAG(0x0020, 0x000d)
#define TAG_SERIES_UID DCM_TAG(0x0020, 0x000e)
#define TAG_INSTANCE_UID DCM_TAG(0x0008, 0x0018)

/* The end of the JSON string whose opening quote is at s[i]: the index of
 * its closing quote, or len when unterminated. */
static size_t string_end(const char *s, size_t len, size_t i)
{
    for (i++; i < len; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i;
    }
    return len;
}

static size_t skip_ws(const char *s, size_t len, size_t i)
{
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

int metadata_rewrite(const char *json, size_t len, metadata_bulk_fn bulk, void *ctx,
                     const char *study, const char *series, const char *instance,
                     struct dynbuf *out, struct pacs_err *err)
{
    static const char key[] = "BulkDataURI";
    size_t done = 0, i = 0;
    char *rel = NULL;
    int rc = 0;
    while (i < len) {
        if (json[i] != '"') {
            i++;
            continue;
        }
        size_t end = string_end(json, len, i);
        if (end == len) {
            rc = pacs_err_set(err, PACS_EINVAL, "stored metadata: unterminated string at %zu", i);
            goto out;
        }
        bool is_key = bulk && end - i - 1 == sizeof key - 1 &&
                      memcmp(json + i + 1, key, sizeof key - 1) == 0;
        i = end + 1;
        if (!is_key)
            continue;
        /* A member name is followed by ':'; a string value that happens to
         * read BulkDataURI is followed by ',', '}' or ']'. */
        size_t c = skip_ws(json, len, i);
        if (c >= len || json[c] != ':')
            continue;
        size_t v = skip_ws(json, len, c + 1);
        if (v >= len || json[v] != '"')
            continue;
        size_t vend = string_end(json, len, v);
        if (vend == len) {
            rc = pacs_err_set(err, PACS_EINVAL, "stored metadata: unterminated string at %zu", v);
            goto out;
        }
        rel = strndup(json + v + 1, vend - v - 1);
        if (!rel) {
            rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
            goto out;
        }
        if ((rc = dynbuf_append(out, json + done, v + 1 - done)) ||
            (rc = bulk(ctx, study, series, instance, rel, out))) {
            pacs_err_set(err, rc, "cannot rewrite BulkDataURI '%.64s'", rel);
            goto out;
        }
        free(rel);
        rel = NULL;
        done = vend;
        i = vend + 1;
    }
    if ((rc = dynbuf_append(out, json + done, len - done)))
        pacs_err_set(err, rc, "metadata too large");
out:
    free(rel);
    return rc;
}

struct collect {
    metadata_bulk_fn bulk;
    void *ctx;
    struct dynbuf *out;
    size_t count;
    int col_study, col_series, col_instance;
    struct pacs_err err;
};

static int on_row(void *vctx, const struct index_row *row)
{
    struct collect *c = vctx;
    int rc;
    if (!row->metadata_json)
        return pacs_err_set(&c->err, PACS_EIO, "instance %lld has no stored metadata",
                            (long long)row->id);
    if (c->count && (rc = dynbuf_putc(c->out, ',')))
        return pacs_err_set(&c->err, rc, "metadata too large");
    const char *st = row->values[c->col_study], *se = row->values[c->col_series],
               *in = row->values[c->col_instance];
    rc = metadata_rewrite(row->metadata_json, row->metadata_len, c->bulk, c->ctx, st ? st : "",
                          se ? se : "", in ? in : "", c->out, &c->err);
    if (rc)
        return rc;
    c->count++;
    return 0;
}

int metadata_collect(struct archive *a, const char *study, const char *series,
                     const char *instance, metadata_bulk_fn bulk, void *ctx, struct dynbuf *out,
                     size_t *count, struct pacs_err *err)
{
    struct index *ix = archive_index(a);
    struct collect c = {
        .bulk = bulk,
        .ctx = ctx,
        .out = out,
        .col_study = index_tag_find(TAG_STUDY_UID),
        .col_series = index_tag_find(TAG_SERIES_UID),
        .col_instance = index_tag_find(TAG_INSTANCE_UID),
    };
    struct index_cond conds[3];
    size_t n = 0;
    int rc;
    *count = 0;
    if (c.col_study < 0 || c.col_series < 0 || c.col_instance < 0)
        return pacs_err_set(err, PACS_EUNSUPPORTED, "the index lacks a unique key column");
    conds[n++] = (struct index_cond){ .col = c.col_study, .kind = INDEX_MATCH_SINGLE,
                                      .value = study };
    if (series)
        conds[n++] = (struct index_cond){ .col = c.col_series, .kind = INDEX_MATCH_SINGLE,
                                          .value = series };
    if (instance)
        conds[n++] = (struct index_cond){ .col = c.col_instance, .kind = INDEX_MATCH_SINGLE,
                                          .value = instance };
    struct index_query q = {
        .level = INDEX_INSTANCE,
        .conds = conds,
        .n_conds = n,
        .want_metadata = true,
    };
    if ((rc = dynbuf_putc(out, '[')))
        return pacs_err_set(err, rc, "out of memory");
    rc = ix->ops->find(ix, &q, on_row, &c, err);
    if (rc) {
        if (c.err.code && err)
            *err = c.err;
        return rc;
    }
    if ((rc = dynbuf_putc(out, ']')))
        return pacs_err_set(err, rc, "metadata too large");
    *count = c.count;
    return 0;
}
