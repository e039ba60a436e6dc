/* rest.c - the Orthanc-compatible REST API (docs/rest.md): its route
 * table, and the routes that are not about one resource: /system,
 * /statistics, /changes, /tools/find, /tools/lookup, /app/explorer.html.
 * Everything goes through the archive (archive/resources.h, query.h). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "archive/query.h"
#include "http/rest.h"
#include "http/routes.h"

#ifndef PACSD_VERSION
#define PACSD_VERSION "unknown"
#endif

/* The Orthanc REST API level pacsd's routes follow (Orthanc 1.10's). */
#define REST_API_VERSION 16

/* --- bodies -------------------------------------------------------------------- */

static void body_free(void *p)
{
    struct dynbuf *b = p;
    if (!b)
        return;
    dynbuf_free(b);
    free(b);
}

int rest_collect_body(struct http_request *r, const void *data, size_t len)
{
    struct dynbuf *b = http_req_state(r);
    if (!b) {
        b = malloc(sizeof *b);
        if (!b) {
            http_respond_error(r, 500, "out of memory");
            return -1;
        }
        dynbuf_init(b, REST_MAX_JSON_BODY);
        http_req_set_state(r, b, body_free);
    }
    int rc = dynbuf_append(b, data, len);
    if (rc) {
        if (rc == PACS_ELIMIT)
            http_respond_error(r, 413, "body larger than %u bytes", REST_MAX_JSON_BODY);
        else
            http_respond_error(r, 500, "out of memory");
        return -1;
    }
    return 0;
}

const char *rest_body(struct http_request *r, size_t *len)
{
    struct dynbuf *b = http_req_state(r);
    *len = b ? b->len : 0;
    return b && b->data ? (const char *)b->data : "";
}

/* --- /system, /statistics ------------------------------------------------------- */

static int rest_system(struct http_request *r)
{
    const struct pacs_config *cfg = http_req_config(r);
    json_t *o = json_pack("{s:i, s:b, s:n, s:i, s:s, s:i, s:i, s:b, s:s, s:b, s:n, s:s}",
                          "ApiVersion", REST_API_VERSION, "CheckRevisions", 0,
                          "DatabaseBackendPlugin", "DatabaseVersion",
                          resources_database_version(http_req_archive(r)), "DicomAet",
                          cfg->dicom.aet, "DicomPort", (int)cfg->dicom.port, "HttpPort",
                          (int)cfg->http.port, "IsHttpServerSecure", 0, "Name", "pacsd",
                          "PluginsEnabled", 0, "StorageAreaPlugin", "Version", PACSD_VERSION);
    if (!o)
        return http_respond_error(r, 500, "out of memory");
    return http_respond_json(r, 200, o);
}

static int rest_statistics(struct http_request *r)
{
    struct pacs_err err = {0};
    struct index_stats st;
    char bytes[24];
    int rc = resources_statistics(http_req_archive(r), &st, &err);
    if (rc)
        return rest_fail(r, rc, &err);
    int n = snprintf(bytes, sizeof bytes, "%llu", (unsigned long long)st.bytes);
    if (n < 0 || (size_t)n >= sizeof bytes)
        return http_respond_error(r, 500, "statistics");
    json_int_t mb = (json_int_t)(st.bytes / (1024 * 1024));
    /* Files are stored as received: the uncompressed size is the size. */
    json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:s, s:I, s:s, s:I}", "CountPatients",
                          (json_int_t)st.patients, "CountStudies", (json_int_t)st.studies,
                          "CountSeries", (json_int_t)st.series, "CountInstances",
                          (json_int_t)st.instances, "TotalDiskSize", bytes, "TotalDiskSizeMB",
                          mb, "TotalUncompressedSize", bytes, "TotalUncompressedSizeMB", mb);
    if (!o)
        return http_respond_error(r, 500, "out of memory");
    return http_respond_json(r, 200, o);
}

/* --- /changes ------------------------------------------------------------------- */

static int change_cb(void *ctx, const struct index_change *c)
{
    json_t *a = ctx;
    char when[16];
    rest_format_time(c->time, when);
    json_t *o = json_pack("{s:s, s:s, s:s, s:o, s:s, s:I}", "ChangeType",
                          resources_change_name(c->type), "Date", when, "ID", c->public_id,
                          "Path", rest_path(c->level, c->public_id), "ResourceType",
                          resources_level_name(c->level), "Seq", (json_int_t)c->seq);
    if (!o || json_array_append_new(a, o) != 0)
        return PACS_ENOMEM;
    return 0;
}

static int rest_changes(struct http_request *r)
{
    struct pacs_err err = {0};
    uint64_t since, limit;
    bool done;
    int64_t last;
    if (!rest_query_u64(r, "since", 0, INT64_MAX, &since) ||
        !rest_query_u64(r, "limit", REST_CHANGES_DEFAULT, RES_CHANGES_MAX, &limit) ||
        limit == 0)
        return http_respond_error(r, 400, "since must be a decimal number, limit 1..%d",
                                  RES_CHANGES_MAX);
    json_t *a = json_array();
    if (!a)
        return http_respond_error(r, 500, "out of memory");
    int rc = resources_changes(http_req_archive(r), (int64_t)since, (size_t)limit, change_cb, a,
                               &done, &last, &err);
    if (rc) {
        json_decref(a);
        return rest_fail(r, rc, &err);
    }
    json_t *o = json_pack("{s:o, s:b, s:I}", "Changes", a, "Done", done, "Last",
                          (json_int_t)last);
    if (!o)
        return http_respond_error(r, 500, "out of memory");
    return http_respond_json(r, 200, o);
}

/* --- /tools/lookup -------------------------------------------------------------- */

static int lookup_cb(void *ctx, enum index_level level, const char *id)
{
    json_t *a = ctx;
    json_t *o = json_pack("{s:s, s:o, s:s}", "ID", id, "Path", rest_path(level, id), "Type",
                          resources_level_name(level));
    if (!o || json_array_append_new(a, o) != 0)
        return PACS_ENOMEM;
    return 0;
}

static int rest_lookup(struct http_request *r)
{
    struct pacs_err err = {0};
    size_t len;
    const char *body = rest_body(r, &len);
    char uid[256];
    /* The body is the identifier, maybe with surrounding white space. */
    while (len && isspace((unsigned char)*body)) {
        body++;
        len--;
    }
    while (len && isspace((unsigned char)body[len - 1]))
        len--;
    if (len == 0 || len >= sizeof uid || memchr(body, '\0', len))
        return http_respond_error(r, 400, "the body must be one identifier (1..%zu bytes)",
                                  sizeof uid - 1);
    memcpy(uid, body, len);
    uid[len] = '\0';
    json_t *a = json_array();
    if (!a)
        return http_respond_error(r, 500, "out of memory");
    int rc = resources_lookup(http_req_archive(r), uid, lookup_cb, a, &err);
    if (rc) {
        json_decref(a);
        return rest_fail(r, rc, &err);
    }
    return http_respond_json(r, 200, a);
}

/* --- /tools/find ---------------------------------------------------------------- */

struct find_ctx {
    struct http_request *r;
    enum index_level level;
    bool expand;
    json_t *out;
    struct pacs_err *err;
};

static int find_one_cb(void *ctx, const struct res_entity *e)
{
    json_t **out = ctx;
    *out = rest_entity_json(e);
    return *out ? 0 : PACS_ENOMEM;
}

static int find_cb(void *ctx, struct dcm_ds *answer)
{
    struct find_ctx *f = ctx;
    char id[RES_ID_LEN + 1];
    int rc = rest_find_answer_id(answer, f->level, id);
    dcm_ds_free(answer);
    if (rc)
        return rc;
    json_t *v = NULL;
    if (f->expand) {
        rc = resources_get(http_req_archive(f->r), f->level, id, RES_CHILDREN, find_one_cb, &v,
                           f->err);
        /* Deleted since the query read it: not an answer any more. */
        if (rc == PACS_ENOTFOUND)
            return 0;
        if (rc)
            return rc;
    } else {
        v = json_string(id);
    }
    if (!v || json_array_append_new(f->out, v) != 0)
        return PACS_ENOMEM;
    return 0;
}

static int rest_find(struct http_request *r)
{
    struct pacs_err err = {0};
    struct rest_find req;
    size_t len;
    const char *body = rest_body(r, &len);
    int rc = rest_find_parse(body, len, &req, &err);
    if (rc)
        return rc == PACS_ENOMEM ? http_respond_error(r, 500, "out of memory")
                                 : http_respond_error(r, 400, "%s", err.msg);
    struct find_ctx f = {.r = r, .level = req.level, .expand = req.expand, .out = json_array(),
                         .err = &err};
    if (!f.out) {
        query_free(req.q);
        return http_respond_error(r, 500, "out of memory");
    }
    rc = query_run(http_req_archive(r), req.q, find_cb, &f, &err);
    query_free(req.q);
    if (rc) {
        json_decref(f.out);
        return rest_fail(r, rc, &err);
    }
    return http_respond_json(r, 200, f.out);
}

/* --- /app/explorer.html --------------------------------------------------------- */

static const char EXPLORER_HTML[] =
    "<!DOCTYPE html>\n"
    "<html lang=\"en\"><head><meta charset=\"utf-8\"><title>pacsd</title></head>\n"
    "<body>\n"
    "<h1>pacsd</h1>\n"
    "<p>This is pacsd, not Orthanc. Its browser interface is not there yet; the\n"
    "Orthanc-compatible REST API and DICOMweb are.</p>\n"
    "<ul>\n"
    "<li>GET /system, /statistics, /changes</li>\n"
    "<li>GET /patients, /studies, /series, /instances (?expand, since, limit)</li>\n"
    "<li>GET, DELETE /patients/{id}, /studies/{id}, /series/{id}, /instances/{id}</li>\n"
    "<li>POST /instances (a DICOM file)</li>\n"
    "<li>GET /instances/{id}/file, /instances/{id}/tags, /instances/{id}/simplified-tags</li>\n"
    "<li>POST /tools/find, /tools/lookup</li>\n"
    "<li>DICOMweb under /dicom-web</li>\n"
    "</ul>\n"
    "</body></html>\n";

static int rest_explorer(struct http_request *r)
{
    int rc = http_respond(r, 200, "text/html; charset=utf-8", EXPLORER_HTML,
                          sizeof EXPLORER_HTML - 1);
    if (rc == 0)
        rc = http_add_header(r, "Content-Security-Policy",
                             "default-src 'none'; style-src 'self'; img-src 'self'; "
                             "frame-ancestors 'none'");
    return rc;
}

/* --- the table -------------------------------------------------------------------- */

const struct http_route http_rest_routes[] = {
    {"GET", "/system", rest_system, NULL, 0},
    {"GET", "/statistics", rest_statistics, NULL, 0},
    {"GET", "/changes", rest_changes, NULL, 0},
    {"GET", "/app/explorer.html", rest_explorer, NULL, 0},
    {"POST", "/tools/find", rest_find, rest_collect_body, REST_MAX_JSON_BODY},
    {"POST", "/tools/lookup", rest_lookup, rest_collect_body, REST_MAX_JSON_BODY},
    /* The bound is dicom.max_message_size, which ingest enforces. */
    {"POST", "/instances", rest_upload, rest_upload_body, 0},
    {"GET", "/patients", rest_list, NULL, 0},
    {"GET", "/studies", rest_list, NULL, 0},
    {"GET", "/series", rest_list, NULL, 0},
    {"GET", "/instances", rest_list, NULL, 0},
    {"GET", "/patients/{id}", rest_get, NULL, 0},
    {"GET", "/studies/{id}", rest_get, NULL, 0},
    {"GET", "/series/{id}", rest_get, NULL, 0},
    {"GET", "/instances/{id}", rest_get, NULL, 0},
    {"DELETE", "/patients/{id}", rest_delete, NULL, 0},
    {"DELETE", "/studies/{id}", rest_delete, NULL, 0},
    {"DELETE", "/series/{id}", rest_delete, NULL, 0},
    {"DELETE", "/instances/{id}", rest_delete, NULL, 0},
    {"GET", "/instances/{id}/file", rest_instance_file, NULL, 0},
    {"GET", "/instances/{id}/tags", rest_instance_tags, NULL, 0},
    {"GET", "/instances/{id}/simplified-tags", rest_instance_simplified_tags, NULL, 0},
    {NULL, NULL, NULL, NULL, 0},
};
