/* resources.c - patients, studies, series and instances by public id
 * (resources.h), on the index's find, delete and change-log operations. */
#include "archive/resources.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dicom/dict.h"
#include "util/log.h"

static const uint32_t res_uid_tag[4] = {
    DCM_TAG(0x0010, 0x0020), /* PatientID */
    DCM_TAG(0x0020, 0x000D), /* StudyInstanceUID */
    DCM_TAG(0x0020, 0x000E), /* SeriesInstanceUID */
    DCM_TAG(0x0008, 0x0018), /* SOPInstanceUID */
};

int resources_public_id(enum index_level level, const char *const uids[4],
                        char out[RES_ID_LEN + 1])
{
    return index_public_id(level, uids, out);
}

int resources_level_of(const char *collection)
{
    static const char *const names[4] = {"patients", "studies", "series", "instances"};
    for (int k = 0; collection && k < 4; k++) {
        if (strcmp(collection, names[k]) == 0)
            return k;
    }
    return -1;
}

const char *resources_level_name(enum index_level level)
{
    static const char *const names[4] = {"Patient", "Study", "Series", "Instance"};
    return (unsigned)level <= INDEX_INSTANCE ? names[level] : "Unknown";
}

const char *resources_change_name(enum index_change_type type)
{
    switch (type) {
    case INDEX_CHANGE_NEW_INSTANCE: return "NewInstance";
    case INDEX_CHANGE_NEW_SERIES: return "NewSeries";
    case INDEX_CHANGE_NEW_STUDY: return "NewStudy";
    case INDEX_CHANGE_NEW_PATIENT: return "NewPatient";
    case INDEX_CHANGE_DELETED: return "Deleted";
    }
    return "Unknown";
}

int resources_database_version(struct archive *a)
{
    return archive_index(a)->ops->schema_version;
}

/* --- get and list ------------------------------------------------------------ */

/* Children ids, collected by a nested find (the index allows it). */
struct res_ids {
    char (*ids)[RES_ID_LEN + 1];
    const char **ptrs;
    size_t n, cap;
    int rc;
};

static int res_ids_cb(void *ctx, const struct index_row *row)
{
    struct res_ids *c = ctx;
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 16;
        char(*ni)[RES_ID_LEN + 1] = realloc(c->ids, nc * sizeof *ni);
        if (!ni)
            return c->rc = PACS_ENOMEM;
        c->ids = ni;
        c->cap = nc;
    }
    const char *id = row->public_ids[row->level];
    size_t n = id ? strnlen(id, RES_ID_LEN) : 0;
    if (n)
        memcpy(c->ids[c->n], id, n);
    c->ids[c->n][n] = '\0';
    c->n++;
    return 0;
}

struct res_walk {
    struct archive *a;
    unsigned flags;
    res_entity_cb cb;
    void *ctx;
    struct pacs_err *err;
    size_t seen;
    int inner_rc; /* an error of the nested query, reported by find's caller */
};

static int res_row_cb(void *ctx, const struct index_row *row)
{
    struct res_walk *w = ctx;
    struct index *ix = archive_index(w->a);
    struct res_ids kids = {0};
    struct res_entity e;
    int L = (int)row->level, rc = 0;
    memset(&e, 0, sizeof e);
    e.level = row->level;
    e.id = row->public_ids[L] ? row->public_ids[L] : "";
    e.parent_id = L > INDEX_PATIENT ? row->public_ids[L - 1] : NULL;
    e.values = row->values;
    e.ids = row->public_ids;
    e.last_update = row->last_update;
    if (L == INDEX_INSTANCE) {
        e.size = row->size;
        e.blob_key = row->blob_key;
        e.transfer_syntax = row->transfer_syntax;
        e.metadata_json = row->metadata_json;
        e.metadata_len = row->metadata_len;
    }
    if ((w->flags & RES_CHILDREN) && L < INDEX_INSTANCE) {
        struct index_query q = {.level = (enum index_level)(L + 1), .parent_public_id = e.id};
        rc = ix->ops->find(ix, &q, res_ids_cb, &kids, w->err);
        if (rc == 0 && kids.rc)
            rc = pacs_err_set(w->err, kids.rc, "resources: out of memory");
        if (rc) {
            w->inner_rc = rc;
            goto out;
        }
        if (kids.n) {
            kids.ptrs = malloc(kids.n * sizeof *kids.ptrs);
            if (!kids.ptrs) {
                rc = w->inner_rc = pacs_err_set(w->err, PACS_ENOMEM, "resources: out of memory");
                goto out;
            }
            for (size_t k = 0; k < kids.n; k++)
                kids.ptrs[k] = kids.ids[k];
        }
        e.children = kids.ptrs;
        e.n_children = kids.n;
    }
    w->seen++;
    rc = w->cb(w->ctx, &e);
out:
    free(kids.ids);
    free(kids.ptrs);
    return rc;
}

static int res_find(struct archive *a, const struct index_query *q, unsigned flags,
                    res_entity_cb cb, void *ctx, size_t *seen, struct pacs_err *err)
{
    struct index *ix = archive_index(a);
    struct res_walk w = {.a = a, .flags = flags, .cb = cb, .ctx = ctx, .err = err};
    int rc = ix->ops->find(ix, q, res_row_cb, &w, err);
    if (seen)
        *seen = w.seen;
    return rc;
}

int resources_get(struct archive *a, enum index_level level, const char *id, unsigned flags,
                  res_entity_cb cb, void *ctx, struct pacs_err *err)
{
    size_t seen = 0;
    if ((unsigned)level > INDEX_INSTANCE || !id || !cb)
        return pacs_err_set(err, PACS_EINVAL, "resources: bad request");
    struct index_query q = {.level = level, .public_id = id, .want_last_update = true,
                            .want_metadata = (flags & RES_METADATA) != 0};
    int rc = res_find(a, &q, flags, cb, ctx, &seen, err);
    if (rc == 0 && seen == 0)
        rc = pacs_err_set(err, PACS_ENOTFOUND, "no %s with id %s",
                          resources_level_name(level), id);
    return rc;
}

int resources_list(struct archive *a, enum index_level level, size_t since, size_t limit,
                   unsigned flags, res_entity_cb cb, void *ctx, struct pacs_err *err)
{
    if ((unsigned)level > INDEX_INSTANCE || !cb)
        return pacs_err_set(err, PACS_EINVAL, "resources: bad request");
    struct index_query q = {.level = level, .offset = since, .limit = limit,
                            .want_last_update = (flags & RES_CHILDREN) != 0,
                            .want_metadata = (flags & RES_METADATA) != 0};
    return res_find(a, &q, flags, cb, ctx, NULL, err);
}

/* --- lookup, file ------------------------------------------------------------ */

struct res_lookup {
    enum index_level level;
    int (*cb)(void *ctx, enum index_level level, const char *id);
    void *ctx;
};

static int res_lookup_cb(void *ctx, const struct index_row *row)
{
    struct res_lookup *l = ctx;
    const char *id = row->public_ids[row->level];
    return l->cb(l->ctx, l->level, id ? id : "");
}

int resources_lookup(struct archive *a, const char *uid,
                     int (*cb)(void *ctx, enum index_level level, const char *id), void *ctx,
                     struct pacs_err *err)
{
    struct index *ix = archive_index(a);
    if (!uid || !cb)
        return pacs_err_set(err, PACS_EINVAL, "resources: bad lookup");
    for (int lv = INDEX_PATIENT; lv <= INDEX_INSTANCE; lv++) {
        struct index_cond c = {.col = index_tag_find(res_uid_tag[lv]),
                               .kind = INDEX_MATCH_SINGLE, .value = uid};
        struct index_query q = {.level = (enum index_level)lv, .conds = &c, .n_conds = 1};
        struct res_lookup l = {.level = (enum index_level)lv, .cb = cb, .ctx = ctx};
        if (c.col < 0)
            return pacs_err_set(err, PACS_EINVAL, "resources: no unique key column");
        int rc = ix->ops->find(ix, &q, res_lookup_cb, &l, err);
        if (rc)
            return rc;
    }
    return 0;
}

static void res_copy(char *dst, size_t cap, const char *s)
{
    size_t n = s ? strnlen(s, cap - 1) : 0;
    if (n)
        memcpy(dst, s, n);
    dst[n] = '\0';
}

struct res_item {
    struct retrieve_item *it;
    bool found;
};

static int res_item_cb(void *ctx, const struct index_row *row)
{
    struct res_item *r = ctx;
    struct retrieve_item *it = r->it;
    static const uint32_t sop_class = DCM_TAG(0x0008, 0x0016);
    int cc = index_tag_find(sop_class);
    res_copy(it->sop_class_uid, sizeof it->sop_class_uid, cc >= 0 ? row->values[cc] : NULL);
    res_copy(it->sop_instance_uid, sizeof it->sop_instance_uid,
             row->values[index_tag_find(res_uid_tag[INDEX_INSTANCE])]);
    res_copy(it->study_uid, sizeof it->study_uid,
             row->values[index_tag_find(res_uid_tag[INDEX_STUDY])]);
    res_copy(it->series_uid, sizeof it->series_uid,
             row->values[index_tag_find(res_uid_tag[INDEX_SERIES])]);
    res_copy(it->transfer_syntax, sizeof it->transfer_syntax, row->transfer_syntax);
    res_copy(it->blob_key, sizeof it->blob_key, row->blob_key);
    it->size = row->size;
    it->ds_offset = row->ds_offset;
    r->found = true;
    return 0;
}

int resources_instance_item(struct archive *a, const char *id, struct retrieve_item *out,
                            struct pacs_err *err)
{
    struct index *ix = archive_index(a);
    struct res_item r = {.it = out};
    memset(out, 0, sizeof *out);
    if (!id)
        return pacs_err_set(err, PACS_EINVAL, "resources: no id");
    struct index_query q = {.level = INDEX_INSTANCE, .public_id = id};
    int rc = ix->ops->find(ix, &q, res_item_cb, &r, err);
    if (rc == 0 && !r.found)
        rc = pacs_err_set(err, PACS_ENOTFOUND, "no instance with id %s", id);
    return rc;
}

/* --- delete, changes, statistics ---------------------------------------------- */

int resources_delete(struct archive *a, enum index_level level, const char *id,
                     int *ancestor_level, char ancestor_id[RES_ID_LEN + 1],
                     struct pacs_err *err)
{
    struct index *ix = archive_index(a);
    struct blob_store *bs = archive_blobs(a);
    struct index_deleted d;
    *ancestor_level = -1;
    ancestor_id[0] = '\0';
    int rc = ix->ops->delete_entity(ix, level, id, (int64_t)time(NULL), &d, err);
    if (rc)
        return rc;
    /* After the commit: a crash here leaves orphans, which open removes. */
    for (size_t k = 0; k < d.n_blob_keys; k++) {
        struct pacs_err e = {0};
        if (bs->ops->del(bs, d.blob_keys[k], &e) != 0)
            log_warn("resources: cannot delete blob %s: %s", d.blob_keys[k], e.msg);
    }
    *ancestor_level = d.ancestor_level;
    res_copy(ancestor_id, RES_ID_LEN + 1, d.ancestor_id);
    index_deleted_free(&d);
    return 0;
}

struct res_changes {
    size_t limit, n;
    int64_t last;
    bool more;
    index_change_cb cb;
    void *ctx;
};

static int res_change_cb(void *ctx, const struct index_change *c)
{
    struct res_changes *r = ctx;
    if (r->n == r->limit) {
        r->more = true;
        return 1;
    }
    r->n++;
    r->last = c->seq;
    return r->cb(r->ctx, c);
}

int resources_changes(struct archive *a, int64_t since, size_t limit, index_change_cb cb,
                      void *ctx, bool *done, int64_t *last, struct pacs_err *err)
{
    struct index *ix = archive_index(a);
    struct res_changes r = {.limit = limit, .cb = cb, .ctx = ctx};
    *done = true;
    *last = 0;
    if (!cb || limit == 0 || limit > RES_CHANGES_MAX)
        return pacs_err_set(err, PACS_EINVAL, "resources: limit must be 1..%d",
                            RES_CHANGES_MAX);
    /* One more than asked tells whether the log goes on. */
    int rc = ix->ops->changes(ix, since < 0 ? 0 : since, limit + 1, res_change_cb, &r, err);
    if (rc == 1 && r.more)
        rc = 0;
    if (rc)
        return rc;
    *done = !r.more;
    if (r.n) {
        *last = r.last;
        return 0;
    }
    return ix->ops->last_change(ix, last, err);
}

int resources_statistics(struct archive *a, struct index_stats *out, struct pacs_err *err)
{
    struct index *ix = archive_index(a);
    return ix->ops->stats(ix, out, err);
}
