/* rest_resources.c - /patients, /studies, /series, /instances as Orthanc
 * 1.10 answers them (rest.h, docs/rest.md): lists, details, DELETE, the
 * upload (POST /instances, through the one ingest path) and the stored
 * file (through the one retrieve path). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "archive/ingest.h"
#include "archive/retrieve.h"
#include "dicom/dict.h"
#include "dicom/json.h"
#include "http/rest.h"

/* --- shared helpers ---------------------------------------------------------- */

int rest_fail(struct http_request *r, int rc, const struct pacs_err *err)
{
    const char *msg = err && err->msg[0] ? err->msg : pacs_strerror(rc);
    switch (rc) {
    case PACS_ENOTFOUND: return http_respond_error(r, 404, "%s", msg);
    case PACS_EINVAL:
    case PACS_EUNSUPPORTED: return http_respond_error(r, 400, "%s", msg);
    case PACS_ELIMIT: return http_respond_error(r, 413, "%s", msg);
    default: return http_respond_error(r, 500, "%s", msg);
    }
}

bool rest_query_u64(struct http_request *r, const char *key, uint64_t def, uint64_t max,
                    uint64_t *out)
{
    const char *v = http_req_query(r, key);
    uint64_t n = 0;
    *out = def;
    if (!v)
        return true;
    if (!*v)
        return false;
    for (const char *p = v; *p; p++) {
        if (*p < '0' || *p > '9' || n > (UINT64_MAX - 9) / 10)
            return false;
        n = n * 10 + (uint64_t)(*p - '0');
    }
    if (n > max)
        return false;
    *out = n;
    return true;
}

bool rest_query_flag(struct http_request *r, const char *key)
{
    /* "?expand" has no value, which the parsed parameters cannot tell from
     * no parameter: the raw query string can. */
    const char *q = http_req_query_string(r);
    size_t kl = strlen(key);
    while (q && *q) {
        size_t n = strcspn(q, "&");
        if (n >= kl && strncmp(q, key, kl) == 0 && (n == kl || q[kl] == '=')) {
            const char *v = q + kl + (n > kl);
            size_t vl = n > kl ? n - kl - 1 : 0;
            return !((vl == 5 && strncmp(v, "false", 5) == 0) ||
                     (vl == 1 && v[0] == '0'));
        }
        q += n;
        if (*q == '&')
            q++;
    }
    return false;
}

void rest_format_time(int64_t t, char out[16])
{
    struct tm tm;
    time_t tt = (time_t)t;
    if (!gmtime_r(&tt, &tm) || strftime(out, 16, "%Y%m%dT%H%M%S", &tm) == 0)
        out[0] = '\0';
}

json_t *rest_path(enum index_level level, const char *id)
{
    static const char *const coll[4] = {"patients", "studies", "series", "instances"};
    char p[16 + RES_ID_LEN];
    int n = snprintf(p, sizeof p, "/%s/%s", coll[level], id);
    if (n < 0 || (size_t)n >= sizeof p)
        return NULL;
    return json_string(p);
}

/* The index's main tags that Orthanc 1.10 does not list in MainDicomTags
 * (pacsd keeps them for QIDO-RS and C-FIND). */
static bool orthanc_shows(uint32_t tag)
{
    static const uint32_t hidden[] = {
        DCM_TAG(0x0008, 0x0016), /* SOPClassUID */
        DCM_TAG(0x0008, 0x0023), /* ContentDate */
        DCM_TAG(0x0008, 0x0033), /* ContentTime */
        DCM_TAG(0x0008, 0x0022), /* AcquisitionDate */
        DCM_TAG(0x0008, 0x0032), /* AcquisitionTime */
        DCM_TAG(0x0028, 0x0010), /* Rows */
        DCM_TAG(0x0028, 0x0011), /* Columns */
        DCM_TAG(0x0028, 0x0100), /* BitsAllocated */
        DCM_TAG(0x0008, 0x0201), /* TimezoneOffsetFromUTC */
    };
    for (size_t k = 0; k < sizeof hidden / sizeof hidden[0]; k++) {
        if (hidden[k] == tag)
            return false;
    }
    return true;
}

static json_t *main_tags(enum index_level lv, const char *const *values)
{
    json_t *o = json_object();
    for (size_t c = 0; o && c < index_n_main_tags; c++) {
        const struct index_tag *t = &index_main_tags[c];
        if (t->level != lv || !values[c] || !orthanc_shows(t->tag) ||
            strlen(values[c]) > REST_MAX_TAG_LENGTH)
            continue;
        if (json_object_set_new(o, dcm_dict_keyword(t->tag), json_string(values[c])) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

static json_t *id_array(const char *const *ids, size_t n)
{
    json_t *a = json_array();
    for (size_t k = 0; a && k < n; k++) {
        if (json_array_append_new(a, json_string(ids[k])) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

json_t *rest_entity_json(const struct res_entity *e)
{
    static const char *const child_key[3] = {"Studies", "Series", "Instances"};
    char when[16];
    json_t *o = json_object();
    if (!o)
        return NULL;
    int bad = 0;
    bad |= json_object_set_new(o, "ID", json_string(e->id));
    bad |= json_object_set_new(o, "Type", json_string(resources_level_name(e->level)));
    bad |= json_object_set_new(o, "MainDicomTags", main_tags(e->level, e->values));
    if (e->level == INDEX_INSTANCE) {
        int num = index_tag_find(DCM_TAG(0x0020, 0x0013));
        int img = index_tag_find(DCM_TAG(0x0054, 0x1330));
        const char *idx = num >= 0 && e->values[num] ? e->values[num]
                          : img >= 0 ? e->values[img] : NULL;
        char *end = NULL;
        long long v = idx ? strtoll(idx, &end, 10) : 0;
        bad |= json_object_set_new(o, "FileSize", json_integer((json_int_t)e->size));
        bad |= json_object_set_new(o, "FileUuid", json_string(e->blob_key ? e->blob_key : ""));
        bad |= json_object_set_new(o, "IndexInSeries",
                                   idx && end && end != idx ? json_integer(v) : json_null());
        bad |= json_object_set_new(o, "ParentSeries", json_string(e->parent_id));
        return bad ? (json_decref(o), NULL) : o;
    }
    rest_format_time(e->last_update, when);
    bad |= json_object_set_new(o, "LastUpdate", json_string(when));
    bad |= json_object_set_new(
        o, "IsStable", json_boolean((int64_t)time(NULL) - e->last_update >= REST_STABLE_AGE_S));
    bad |= json_object_set_new(o, child_key[e->level], id_array(e->children, e->n_children));
    if (e->level == INDEX_STUDY) {
        bad |= json_object_set_new(o, "ParentPatient", json_string(e->parent_id));
        bad |= json_object_set_new(o, "PatientMainDicomTags", main_tags(INDEX_PATIENT, e->values));
    } else if (e->level == INDEX_SERIES) {
        bad |= json_object_set_new(o, "ParentStudy", json_string(e->parent_id));
        bad |= json_object_set_new(o, "ExpectedNumberOfInstances", json_null());
        bad |= json_object_set_new(o, "Status", json_string("Unknown"));
    }
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* The level named by the path's first segment. */
static int path_level(struct http_request *r)
{
    const char *p = http_req_path(r);
    char coll[16];
    size_t n = 0;
    if (*p == '/')
        p++;
    while (p[n] && p[n] != '/' && n + 1 < sizeof coll) {
        coll[n] = p[n];
        n++;
    }
    coll[n] = '\0';
    return resources_level_of(coll);
}

/* --- lists and details ---------------------------------------------------------- */

struct collect {
    json_t *out;
    bool expand;
};

static int collect_cb(void *ctx, const struct res_entity *e)
{
    struct collect *c = ctx;
    json_t *v = c->expand ? rest_entity_json(e) : json_string(e->id);
    if (!v || json_array_append_new(c->out, v) != 0)
        return PACS_ENOMEM;
    return 0;
}

int rest_list(struct http_request *r)
{
    struct pacs_err err = {0};
    int lv = path_level(r);
    uint64_t since, limit;
    if (lv < 0)
        return http_respond_error(r, 404, "no such collection");
    if (!rest_query_u64(r, "since", 0, SIZE_MAX, &since) ||
        !rest_query_u64(r, "limit", 0, SIZE_MAX, &limit))
        return http_respond_error(r, 400, "since and limit must be decimal numbers");
    struct collect c = {.out = json_array(), .expand = rest_query_flag(r, "expand")};
    if (!c.out)
        return http_respond_error(r, 500, "out of memory");
    int rc = resources_list(http_req_archive(r), (enum index_level)lv, (size_t)since,
                            (size_t)limit, c.expand ? RES_CHILDREN : 0, collect_cb, &c, &err);
    if (rc) {
        json_decref(c.out);
        return rest_fail(r, rc, &err);
    }
    return http_respond_json(r, 200, c.out);
}

static int one_cb(void *ctx, const struct res_entity *e)
{
    json_t **out = ctx;
    *out = rest_entity_json(e);
    return *out ? 0 : PACS_ENOMEM;
}

int rest_get(struct http_request *r)
{
    struct pacs_err err = {0};
    json_t *o = NULL;
    int lv = path_level(r);
    if (lv < 0)
        return http_respond_error(r, 404, "no such collection");
    int rc = resources_get(http_req_archive(r), (enum index_level)lv, http_req_param(r, "id"),
                           RES_CHILDREN, one_cb, &o, &err);
    if (rc) {
        json_decref(o);
        return rest_fail(r, rc, &err);
    }
    return http_respond_json(r, 200, o);
}

int rest_delete(struct http_request *r)
{
    struct pacs_err err = {0};
    char anc[RES_ID_LEN + 1];
    int al, lv = path_level(r);
    if (lv < 0)
        return http_respond_error(r, 404, "no such collection");
    int rc = resources_delete(http_req_archive(r), (enum index_level)lv,
                              http_req_param(r, "id"), &al, anc, &err);
    if (rc)
        return rest_fail(r, rc, &err);
    json_t *ra = al < 0 ? json_null()
                        : json_pack("{s:s, s:o, s:s}", "ID", anc, "Path",
                                    rest_path((enum index_level)al, anc), "Type",
                                    resources_level_name((enum index_level)al));
    json_t *o = json_pack("{s:o}", "RemainingAncestor", ra);
    if (!o)
        return http_respond_error(r, 500, "out of memory");
    return http_respond_json(r, 200, o);
}

/* --- tags ------------------------------------------------------------------------ */

struct meta {
    struct dcm_ds *ds;
    struct pacs_err *err;
};

static int meta_cb(void *ctx, const struct res_entity *e)
{
    struct meta *m = ctx;
    if (!e->metadata_json)
        return pacs_err_set(m->err, PACS_ENOTFOUND, "no stored metadata for instance %s",
                            e->id);
    return dcm_json_read(e->metadata_json, e->metadata_len, &m->ds, m->err);
}

static int respond_tags(struct http_request *r, bool simplify)
{
    struct pacs_err err = {0};
    struct meta m = {.err = &err};
    int rc = resources_get(http_req_archive(r), INDEX_INSTANCE, http_req_param(r, "id"),
                           RES_METADATA, meta_cb, &m, &err);
    if (rc) {
        dcm_ds_free(m.ds);
        /* Metadata that does not read back is the server's fault. */
        return rc == PACS_EINVAL ? http_respond_error(r, 500, "%s", err.msg)
                                 : rest_fail(r, rc, &err);
    }
    json_t *o = rest_tags_json(m.ds, simplify);
    dcm_ds_free(m.ds);
    if (!o)
        return http_respond_error(r, 500, "out of memory");
    return http_respond_json(r, 200, o);
}

int rest_instance_tags(struct http_request *r)
{
    return respond_tags(r, rest_query_flag(r, "simplify"));
}

int rest_instance_simplified_tags(struct http_request *r) { return respond_tags(r, true); }

/* --- the file ---------------------------------------------------------------------- */

struct file_stream {
    struct retrieve_reader *rd;
    uint64_t pos;
};

static ssize_t file_read(void *ctx, uint64_t pos, char *buf, size_t max)
{
    struct file_stream *f = ctx;
    struct pacs_err err = {0};
    size_t got = 0;
    /* The server asks for the bytes in order. */
    if (pos != f->pos)
        return HTTP_STREAM_ERROR;
    if (retrieve_read(f->rd, buf, max, &got, &err) != 0)
        return HTTP_STREAM_ERROR;
    if (got == 0)
        return HTTP_STREAM_END;
    f->pos += got;
    return (ssize_t)got;
}

static void file_free(void *ctx)
{
    struct file_stream *f = ctx;
    if (!f)
        return;
    retrieve_close(f->rd);
    free(f);
}

int rest_instance_file(struct http_request *r)
{
    struct pacs_err err = {0};
    struct retrieve_item it;
    struct archive *a = http_req_archive(r);
    int rc = resources_instance_item(a, http_req_param(r, "id"), &it, &err);
    if (rc)
        return rest_fail(r, rc, &err);
    struct file_stream *f = calloc(1, sizeof *f);
    if (!f)
        return http_respond_error(r, 500, "out of memory");
    if ((rc = retrieve_open(a, &it, 0, &f->rd, &err)) != 0) {
        free(f);
        return http_respond_error(r, 500, "cannot read the stored file: %s", err.msg);
    }
    return http_respond_stream(r, 200, "application/dicom", it.size, file_read, f, file_free);
}

/* --- upload ------------------------------------------------------------------------ */

struct upload {
    struct ingest *in;
    struct pacs_err err;
};

static void upload_free(void *p)
{
    struct upload *u = p;
    if (!u)
        return;
    if (u->in)
        ingest_abort(u->in);
    free(u);
}

/* A failed ingest's DIMSE status as HTTP. */
static unsigned upload_status(uint16_t st)
{
    if ((st & 0xff00) == 0xa700)
        return 507;
    return 400;
}

int rest_upload_body(struct http_request *r, const void *data, size_t len)
{
    struct upload *u = http_req_state(r);
    if (!u) {
        const struct pacs_config *cfg = http_req_config(r);
        struct ingest_source src = {.ts_uid = NULL, .remote_aet = "",
                                    .max_size = cfg->dicom.max_message_size};
        u = calloc(1, sizeof *u);
        if (!u) {
            http_respond_error(r, 500, "out of memory");
            return -1;
        }
        http_req_set_state(r, u, upload_free);
        if (ingest_begin(http_req_archive(r), &src, &u->in, &u->err) != 0) {
            u->in = NULL;
            rest_fail(r, u->err.code ? u->err.code : PACS_EIO, &u->err);
            return -1;
        }
    }
    if (!u->in)
        return 0;
    if (ingest_feed(u->in, data, len, &u->err) != 0) {
        /* The status (and its message) comes from finish. */
        struct ingest_result res;
        struct pacs_err e = {0};
        memset(&res, 0, sizeof res);
        int rc = ingest_finish(u->in, &res, &e);
        u->in = NULL;
        if (rc == 0 && res.status == 0)
            res.status = 0xC000;
        /* Answered now, the rest of the body unread (server.h). */
        if (u->err.code == PACS_ELIMIT)
            http_respond_error(r, 413, "%s", u->err.msg);
        else
            http_respond_error(r, upload_status(res.status), "not a DICOM file pacsd stores: %s",
                               res.message[0] ? res.message : u->err.msg);
        return -1;
    }
    return 0;
}

struct upload_ids {
    char ids[4][RES_ID_LEN + 1];
    bool found;
};

static int upload_ids_cb(void *ctx, const struct res_entity *e)
{
    struct upload_ids *u = ctx;
    for (int lv = 0; lv <= (int)e->level; lv++) {
        size_t n = e->ids[lv] ? strnlen(e->ids[lv], RES_ID_LEN) : 0;
        memcpy(u->ids[lv], e->ids[lv] ? e->ids[lv] : "", n);
        u->ids[lv][n] = '\0';
    }
    u->found = true;
    return 0;
}

static int upload_lookup_cb(void *ctx, enum index_level level, const char *id)
{
    char *out = ctx;
    if (level == INDEX_INSTANCE) {
        size_t n = strnlen(id, RES_ID_LEN);
        memcpy(out, id, n);
        out[n] = '\0';
    }
    return 0;
}

int rest_upload(struct http_request *r)
{
    struct upload *u = http_req_state(r);
    struct archive *a = http_req_archive(r);
    struct ingest_result res;
    struct pacs_err err = {0};
    char inst[RES_ID_LEN + 1] = "";
    if (!u || !u->in)
        return http_respond_error(r, 400, "the body must be one DICOM Part 10 file");
    memset(&res, 0, sizeof res);
    int rc = ingest_finish(u->in, &res, &err);
    u->in = NULL;
    if (rc)
        return http_respond_error(r, 500, "cannot store: %s", err.msg);
    bool ok = res.status == 0 || (res.status & 0xf000) == 0xb000 || res.duplicate == 3;
    if (!ok)
        return http_respond_error(r, upload_status(res.status),
                                  "not a DICOM file pacsd stores: %s", res.message);
    /* The ids come from the row: the patient's id needs its PatientID. */
    struct upload_ids ids = {0};
    if ((rc = resources_lookup(a, res.sop_instance_uid, upload_lookup_cb, inst, &err)) != 0 ||
        !inst[0] ||
        (rc = resources_get(a, INDEX_INSTANCE, inst, 0, upload_ids_cb, &ids, &err)) != 0)
        return rest_fail(r, rc ? rc : PACS_ENOTFOUND, &err);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:o, s:s}", "ID", ids.ids[INDEX_INSTANCE],
                          "ParentPatient", ids.ids[INDEX_PATIENT], "ParentStudy",
                          ids.ids[INDEX_STUDY], "ParentSeries", ids.ids[INDEX_SERIES], "Path",
                          rest_path(INDEX_INSTANCE, ids.ids[INDEX_INSTANCE]), "Status",
                          res.duplicate >= 2 ? "AlreadyStored" : "Success");
    if (!o)
        return http_respond_error(r, 500, "out of memory");
    return http_respond_json(r, 200, o);
}
