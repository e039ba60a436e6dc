/* wado.c - WADO-RS (PS3.18 10.4): instances, metadata, frames and bulk data
 * of a study, series or instance. docs/wado.md is the user's view.
 *
 * Every answer is decided before its first byte: the instances are listed
 * from the index, the Accept header is matched against every instance's
 * stored transfer syntax (406 if one cannot be served), and only then is
 * the body streamed, part by part, from storage. A response is a list of
 * segments (part headers, stored files, byte ranges of a stored file) that
 * the stream callback walks; at most one stored file is open at a time and
 * only a transcoded instance is held in memory.
 */
#include <stdlib.h>
#include <string.h>

#include "archive/frames.h"
#include "archive/metadata.h"
#include "archive/query.h"
#include "archive/retrieve.h"
#include "dicom/dict.h"
#include "dicom/reader.h"
#include "http/accept.h"
#include "http/dicomweb.h"
#include "http/multipart.h"
#include "http/routes.h"
#include "util/log.h"
#include "util/limits.h"

#define TAG_STUDY_UID DCM_TAG(0x0020, 0x000d)
#define TAG_SERIES_UID DCM_TAG(0x0020, 0x000e)
#define TAG_INSTANCE_UID DCM_TAG(0x0008, 0x0018)

#define MT_DICOM "application/dicom"
#define MT_OCTET "application/octet-stream"
#define MT_DICOM_JSON "application/dicom+json"


/* --- path parameters -------------------------------------------------------- */

/* A UID in a path: 1..64 digits and dots, no empty component. Stricter
 * than what the index could hold would be pointless, and this alone keeps
 * "..", "%2e%2e" (decoded by the server) and any other path trick out. */
static bool uid_param_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 64 || s[0] == '.' || s[n - 1] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.' && s[i + 1] == '.')
            return false;
        if (!(s[i] == '.' || (s[i] >= '0' && s[i] <= '9')))
            return false;
    }
    return true;
}

/* Reads and checks the UIDs the route has (NULL for those it has not);
 * responds 400 and returns false when one is bad. */
static bool get_uids(struct http_request *r, const char **study, const char **series,
                     const char **instance)
{
    static const char *const names[3] = { "study", "series", "instance" };
    const char **dst[3] = { study, series, instance };
    for (int i = 0; i < 3; i++) {
        const char *v = http_req_param(r, names[i]);
        *dst[i] = v;
        if (v && !uid_param_ok(v)) {
            http_respond_error(r, 400, "%s UID '%.80s' is not a UID (1 to 64 digits and dots)",
                               names[i], v);
            return false;
        }
    }
    return true;
}

static int respond_pacs_error(struct http_request *r, int rc, const struct pacs_err *e)
{
    unsigned status = rc == PACS_ENOTFOUND ? 404 : rc == PACS_EINVAL ? 400 : 500;
    if (status == 500)
        log_warn("wado: %s", e->msg);
    return http_respond_error(r, status, "%s", e->msg[0] ? e->msg : pacs_strerror(rc));
}

/* The instances of study / series / instance (NULLs for levels not given).
 * Responds (404, 500) and returns non-zero when there are none. */
static int find_instances(struct http_request *r, const char *study, const char *series,
                          const char *instance, struct retrieve_list *out)
{
    enum index_level level = instance ? INDEX_INSTANCE : series ? INDEX_SERIES : INDEX_STUDY;
    struct query *q = NULL;
    struct pacs_err err = { 0 };
    int rc = query_new(level, QUERY_STUDY_ROOT, &q);
    out->items = NULL;
    out->n = 0;
    if (rc) {
        pacs_err_set(&err, rc, "out of memory");
        goto out;
    }
    if ((rc = query_add_key(q, TAG_STUDY_UID, study, &err)) ||
        (series && (rc = query_add_key(q, TAG_SERIES_UID, series, &err))) ||
        (instance && (rc = query_add_key(q, TAG_INSTANCE_UID, instance, &err))))
        goto out;
    rc = retrieve_from_query(http_req_archive(r), q, out, &err);
out:
    query_free(q);
    if (rc) {
        respond_pacs_error(r, rc == PACS_EINVAL ? PACS_EIO : rc, &err);
        return -1;
    }
    if (out->n == 0) {
        http_respond_error(r, 404, "no such %s", instance ? "instance" : series ? "series"
                                                                               : "study");
        return -1;
    }
    return 0;
}

/* The accept= query parameter when given (PS3.18 8.3.3.1: it replaces the
 * Accept header, for clients that cannot set headers), else the header. */
static const char *accept_of(const struct http_request *r)
{
    const char *q = http_req_query(r, "accept");
    return q ? q : http_req_header(r, "Accept");
}

static bool parse_accept(struct http_request *r, struct http_accept *acc)
{
    struct pacs_err err = { 0 };
    if (http_accept_parse(accept_of(r), acc, &err) != 0) {
        http_respond_error(r, 400, "%s", err.msg);
        return false;
    }
    return true;
}

static bool is_multipart_range(const struct http_media_range *m)
{
    return http_media_covers(m->type, "multipart/related");
}

/* --- the streamed body -------------------------------------------------------- */

enum seg_kind {
    SEG_HDR,  /* bytes of the header buffer */
    SEG_MEM,  /* bytes held by the frames instance */
    SEG_FILE, /* a whole stored instance, or its transcoded form */
    SEG_SRC,  /* bytes of the frames instance's stored file */
};

struct seg {
    enum seg_kind kind;
    uint64_t off, len;
    const uint8_t *mem;
    size_t item;     /* SEG_FILE */
    bool transcode;  /* SEG_FILE: convert to ws->ts */
};

struct wstream {
    struct archive *a;
    struct retrieve_list list;
    struct frames_instance *fi;
    struct dynbuf hdr;
    struct seg *segs;
    size_t n, cap;
    size_t cur;
    uint64_t at; /* position in segs[cur] */
    struct retrieve_reader *rd;
    struct dynbuf tc; /* transcoded segs[cur] */
    bool tc_ready;
    char ts[65];
    char boundary[MP_BOUNDARY_MAX + 1];
    bool failed;
};

static void ws_free(void *p)
{
    struct wstream *ws = p;
    if (!ws)
        return;
    retrieve_list_free(&ws->list);
    frames_close(ws->fi);
    dynbuf_free(&ws->hdr);
    dynbuf_free(&ws->tc);
    retrieve_close(ws->rd);
    free(ws->segs);
    free(ws);
}

static struct wstream *ws_new(struct http_request *r)
{
    struct wstream *ws = calloc(1, sizeof *ws);
    struct pacs_err err = { 0 };
    if (!ws)
        return NULL;
    ws->a = http_req_archive(r);
    dynbuf_init(&ws->hdr, 0);
    dynbuf_init(&ws->tc, 0);
    if (mp_new_boundary(ws->boundary, &err) != 0) {
        ws_free(ws);
        return NULL;
    }
    return ws;
}

static int ws_push(struct wstream *ws, struct seg s)
{
    if (ws->n == ws->cap) {
        size_t cap = ws->cap ? ws->cap * 2 : 16;
        struct seg *v = realloc(ws->segs, cap * sizeof *v);
        if (!v)
            return PACS_ENOMEM;
        ws->segs = v;
        ws->cap = cap;
    }
    ws->segs[ws->n++] = s;
    return 0;
}

/* Appends a part header (or, with content_type NULL, the close delimiter)
 * to the header buffer and a segment for it. */
static int ws_header(struct wstream *ws, const char *content_type, uint64_t length)
{
    struct pacs_err err = { 0 };
    size_t start = ws->hdr.len;
    int rc = content_type ? mp_write_part_header(&ws->hdr, ws->boundary, ws->n == 0,
                                                 content_type, NULL, length, &err)
                          : mp_write_close(&ws->hdr, ws->boundary, &err);
    if (rc)
        return rc;
    return ws_push(ws, (struct seg){ .kind = SEG_HDR, .off = start, .len = ws->hdr.len - start });
}

static uint64_t ws_total(const struct wstream *ws)
{
    uint64_t t = 0;
    for (size_t i = 0; i < ws->n; i++) {
        if (ws->segs[i].kind == SEG_FILE && ws->segs[i].transcode)
            return HTTP_SIZE_UNKNOWN;
        t += ws->segs[i].len;
    }
    return t;
}

static void ws_next(struct wstream *ws)
{
    retrieve_close(ws->rd);
    ws->rd = NULL;
    dynbuf_free(&ws->tc);
    dynbuf_init(&ws->tc, 0);
    ws->tc_ready = false;
    ws->cur++;
    ws->at = 0;
}

static ssize_t ws_read(void *ctx, uint64_t pos, char *buf, size_t max)
{
    struct wstream *ws = ctx;
    struct pacs_err err = { 0 };
    int rc = 0;
    (void)pos; /* the server asks for the bytes in order */
    if (ws->failed)
        return HTTP_STREAM_ERROR;
    while (ws->cur < ws->n) {
        struct seg *s = &ws->segs[ws->cur];
        const struct retrieve_item *it = s->kind == SEG_FILE ? &ws->list.items[s->item] : NULL;
        if (s->kind == SEG_FILE && s->transcode && !ws->tc_ready) {
            rc = retrieve_transcode_file(ws->a, it, ws->ts, &ws->tc, &err);
            if (rc)
                goto fail;
            ws->tc_ready = true;
            s->len = ws->tc.len;
        }
        if (ws->at >= s->len) {
            ws_next(ws);
            continue;
        }
        uint64_t left = s->len - ws->at;
        size_t k = left < max ? (size_t)left : max;
        size_t got = k;
        switch (s->kind) {
        case SEG_HDR:
            memcpy(buf, ws->hdr.data + s->off + ws->at, k);
            break;
        case SEG_MEM:
            memcpy(buf, s->mem + s->off + ws->at, k);
            break;
        case SEG_FILE:
            if (s->transcode) {
                memcpy(buf, ws->tc.data + ws->at, k);
                break;
            }
            if (!ws->rd && (rc = retrieve_open(ws->a, it, 0, &ws->rd, &err)))
                goto fail;
            if ((rc = retrieve_read_at(ws->rd, ws->at, buf, k, &got, &err)))
                goto fail;
            if (got == 0) {
                pacs_err_set(&err, PACS_ETRUNC, "instance %s: stored file shorter than indexed",
                             it->sop_instance_uid);
                goto fail;
            }
            break;
        case SEG_SRC:
            if ((rc = frames_read(ws->fi, s->off + ws->at, buf, k, &err)))
                goto fail;
            break;
        }
        ws->at += got;
        return (ssize_t)got;
    }
    return HTTP_STREAM_END;
fail:
    log_warn("wado: response cut short: %s", err.msg);
    ws->failed = true;
    return HTTP_STREAM_ERROR;
}

/* Sends ws as a multipart/related response of root type `root`. Takes ws. */
static int ws_respond(struct http_request *r, struct wstream *ws, const char *root,
                      const char *ts)
{
    struct dynbuf ct;
    struct pacs_err err = { 0 };
    int rc;
    dynbuf_init(&ct, 0);
    if ((rc = ws_header(ws, NULL, 0)) ||
        (rc = mp_write_content_type(&ct, root, ws->boundary, ts, &err))) {
        ws_free(ws);
        dynbuf_free(&ct);
        return http_respond_error(r, 500, "cannot build the response");
    }
    rc = http_respond_stream(r, 200, (const char *)ct.data, ws_total(ws), ws_read, ws, ws_free);
    dynbuf_free(&ct);
    return rc;
}

/* --- instances ------------------------------------------------------------------- */

/* Whether every instance can be sent in ts ("" / "*": each as stored).
 * On false, why is in msg. */
static bool all_servable(const struct retrieve_list *l, const char *ts, char *msg, size_t cap)
{
    if (!ts[0] || strcmp(ts, "*") == 0)
        return true;
    for (size_t i = 0; i < l->n; i++) {
        const char *from = l->items[i].transfer_syntax;
        if (strcmp(from, ts) != 0 && !retrieve_can_transcode(from, ts)) {
            int w = snprintf(msg, cap,
                             "instance %s is stored in transfer syntax %s, which pacsd cannot "
                             "convert to %s",
                             l->items[i].sop_instance_uid, from, ts);
            if (w < 0 || (size_t)w >= cap)
                msg[cap - 1] = '\0';
            return false;
        }
    }
    return true;
}

static int handle_instances(struct http_request *r)
{
    const char *study, *series, *instance;
    struct http_accept acc;
    struct wstream *ws = NULL;
    char why[300] = "";
    int rc;
    if (!get_uids(r, &study, &series, &instance) || !parse_accept(r, &acc))
        return 0;
    if (!(ws = ws_new(r)))
        return http_respond_error(r, 500, "out of memory");
    if (find_instances(r, study, series, instance, &ws->list)) {
        ws_free(ws);
        return 0;
    }
    const char *ts = NULL;
    for (size_t i = 0; i < acc.n && !ts; i++) {
        const struct http_media_range *m = &acc.r[i];
        if (!is_multipart_range(m))
            continue;
        if (m->root_type[0] && !http_media_covers(m->root_type, MT_DICOM))
            continue;
        if (all_servable(&ws->list, m->transfer_syntax, why, sizeof why))
            ts = m->transfer_syntax;
    }
    if (!ts) {
        ws_free(ws);
        return http_respond_error(r, 406, "%s",
                                  why[0] ? why
                                         : "the Accept header asks for no representation of "
                                           "instances pacsd serves (multipart/related; "
                                           "type=\"application/dicom\")");
    }
    bool as_stored = !ts[0] || strcmp(ts, "*") == 0;
    memcpy(ws->ts, ts, strlen(ts) + 1);
    for (size_t i = 0; i < ws->list.n; i++) {
        const struct retrieve_item *it = &ws->list.items[i];
        const char *part_ts = as_stored ? it->transfer_syntax : ts;
        bool tc = strcmp(part_ts, it->transfer_syntax) != 0;
        char ct[128];
        int w = snprintf(ct, sizeof ct, MT_DICOM "; transfer-syntax=%s", part_ts);
        if (w < 0 || (size_t)w >= sizeof ct ||
            (rc = ws_header(ws, ct, tc ? MP_NO_LENGTH : it->size)) ||
            (rc = ws_push(ws, (struct seg){ .kind = SEG_FILE, .item = i, .len = it->size,
                                            .transcode = tc }))) {
            ws_free(ws);
            return http_respond_error(r, 500, "out of memory");
        }
    }
    return ws_respond(r, ws, MT_DICOM, as_stored ? NULL : ts);
}

/* --- metadata --------------------------------------------------------------------- */

/* JSON-escapes s onto out. */
static int json_escaped(struct dynbuf *out, const char *s)
{
    int rc = 0;
    for (; *s && !rc; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            rc = dynbuf_putc(out, '\\') ? PACS_ENOMEM : dynbuf_putc(out, (char)c);
        else if (c < 0x20)
            rc = dynbuf_printf(out, "\\u%04x", c);
        else
            rc = dynbuf_putc(out, (char)c);
    }
    return rc;
}

static int bulk_absolute(void *ctx, const char *study, const char *series, const char *instance,
                         const char *rel, struct dynbuf *out)
{
    struct http_request *r = ctx;
    /* Only pacsd's own relative URIs; anything else is passed through. */
    if (strncmp(rel, "bulk/", 5) != 0)
        return dynbuf_puts(out, rel);
    int rc = json_escaped(out, http_req_base_url(r));
    if (!rc)
        rc = dynbuf_printf(out, "/dicom-web/studies/%s/series/%s/instances/%s/", study, series,
                           instance);
    if (!rc)
        rc = dynbuf_puts(out, rel);
    return rc;
}

static int handle_metadata(struct http_request *r)
{
    const char *study, *series, *instance;
    struct dynbuf out;
    struct pacs_err err = { 0 };
    size_t count = 0;
    if (!get_uids(r, &study, &series, &instance))
        return 0;
    const char *type = NULL;
    int rc = dw_choose_json_type(accept_of(r), &type, &err);
    if (rc)
        return rc == PACS_EUNSUPPORTED ? http_respond_error(r, 406, "%s", err.msg)
                                       : http_respond_error(r, 500, "out of memory");
    dynbuf_init(&out, PACS_MAX_METADATA_ANSWER);
    rc = metadata_collect(http_req_archive(r), study, series, instance, bulk_absolute, r,
                              &out, &count, &err);
    if (rc) {
        dynbuf_free(&out);
        return respond_pacs_error(r, rc == PACS_EINVAL ? PACS_EIO : rc, &err);
    }
    if (count == 0) {
        dynbuf_free(&out);
        return http_respond_error(r, 404, "no such %s", instance ? "instance" : series ? "series"
                                                                                     : "study");
    }
    size_t len;
    char *body = dynbuf_take(&out, &len);
    return http_respond_owned(r, 200, type, body, len);
}

/* --- frames ----------------------------------------------------------------------- */

/* Opens the one instance of the route, responding on failure. */
static struct wstream *open_instance(struct http_request *r)
{
    const char *study, *series, *instance;
    struct pacs_err err = { 0 };
    struct wstream *ws;
    if (!get_uids(r, &study, &series, &instance))
        return NULL;
    if (!(ws = ws_new(r))) {
        http_respond_error(r, 500, "out of memory");
        return NULL;
    }
    if (find_instances(r, study, series, instance, &ws->list))
        goto fail;
    int rc = frames_open(ws->a, &ws->list.items[0], &ws->fi, &err);
    if (rc) {
        log_warn("wado: instance %s: %s", instance, err.msg);
        http_respond_error(r, 500, "the stored instance cannot be read: %s", err.msg);
        goto fail;
    }
    return ws;
fail:
    ws_free(ws);
    return NULL;
}

static bool native_le_ts(const char *ts)
{
    return strcmp(ts, DCM_UID_EXPLICIT_LE) == 0 || strcmp(ts, DCM_UID_IMPLICIT_LE) == 0;
}

/* Chooses the frames' media type (*type) and transfer syntax (*ts) from the
 * Accept header; false when none can be served. */
static bool negotiate_frames(const struct http_accept *acc, bool encapsulated,
                             const char *stored_ts, const char **type, const char **ts)
{
    const char *mt = encapsulated ? frames_media_type(stored_ts) : NULL;
    for (size_t i = 0; i < acc->n; i++) {
        const struct http_media_range *m = &acc->r[i];
        const char *want = m->transfer_syntax;
        bool any = !want[0] || strcmp(want, "*") == 0;
        if (!is_multipart_range(m))
            continue;
        const char *root = m->root_type;
        if (!encapsulated) {
            /* Native frames are little-endian bytes: the same in every
             * native little-endian syntax. */
            if ((root[0] && !http_media_covers(root, MT_OCTET)) ||
                !(any || native_le_ts(want)))
                continue;
            *type = MT_OCTET;
            *ts = any ? DCM_UID_EXPLICIT_LE : want;
            return true;
        }
        if (!(any || strcmp(want, stored_ts) == 0))
            continue;
        if (mt && (!root[0] || (http_media_covers(root, mt) && strcmp(root, "*/*") != 0))) {
            *type = mt;
            *ts = stored_ts;
            return true;
        }
        /* RLE by its name before PS3.18 registered image/dicom-rle, which
         * dicomweb-client and older viewers still ask for: answered in
         * the type asked. */
        if (mt && !strcmp(mt, "image/dicom-rle") && !strcmp(root, "image/x-dicom-rle")) {
            *type = "image/x-dicom-rle";
            *ts = stored_ts;
            return true;
        }
        /* The compressed bytes as octet-stream: only when the client says
         * it takes any transfer syntax (or this one); without one,
         * application/octet-stream means uncompressed (PS3.18 8.7.3.3). */
        if ((!root[0] || http_media_covers(root, MT_OCTET)) && want[0]) {
            *type = MT_OCTET;
            *ts = stored_ts;
            return true;
        }
        if (!root[0] && !mt) {
            *type = MT_OCTET;
            *ts = stored_ts;
            return true;
        }
    }
    return false;
}

/* Adds frames list[0..n) as parts; responds and returns non-zero on error. */
static int add_frames(struct http_request *r, struct wstream *ws, const uint64_t *list, size_t n,
                      const char *type, const char *ts)
{
    struct pacs_err err = { 0 };
    char ct[160];
    int w = snprintf(ct, sizeof ct, "%s; transfer-syntax=%s", type, ts);
    if (w < 0 || (size_t)w >= sizeof ct) {
        http_respond_error(r, 500, "media type too long");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (list[i] > frames_count(ws->fi)) {
            http_respond_error(r, 404, "frame %llu does not exist: the instance has %llu",
                               (unsigned long long)list[i],
                               (unsigned long long)frames_count(ws->fi));
            return -1;
        }
    }
    for (size_t i = 0; i < n; i++) {
        struct frames_piece *p = NULL;
        size_t np = 0;
        int rc = frames_frame(ws->fi, list[i], &p, &np, &err);
        if (rc) {
            respond_pacs_error(r, rc == PACS_EINVAL ? PACS_EIO : rc, &err);
            return -1;
        }
        uint64_t len = 0;
        for (size_t k = 0; k < np; k++)
            len += p[k].len;
        rc = ws_header(ws, ct, len);
        for (size_t k = 0; k < np && !rc; k++)
            rc = ws_push(ws, (struct seg){ .kind = p[k].mem ? SEG_MEM : SEG_SRC, .mem = p[k].mem,
                                           .off = p[k].off, .len = p[k].len });
        free(p);
        if (rc) {
            http_respond_error(r, 500, "out of memory");
            return -1;
        }
    }
    return 0;
}

/* Frames list (or all frames when list is NULL) of the open instance. Takes ws. */
static int respond_frames(struct http_request *r, struct wstream *ws, const uint64_t *list,
                          size_t n, const struct http_accept *acc)
{
    struct pacs_err err = { 0 };
    uint64_t *all = NULL;
    const char *type = NULL, *ts = NULL;
    int rc = frames_locate(ws->fi, &err);
    if (rc) {
        ws_free(ws);
        if (rc == PACS_ENOTFOUND)
            return http_respond_error(r, 404, "%s", err.msg);
        log_warn("wado: frames: %s", err.msg);
        return http_respond_error(r, 500, "the frames cannot be located: %s", err.msg);
    }
    if (!negotiate_frames(acc, frames_encapsulated(ws->fi), frames_transfer_syntax(ws->fi), &type,
                          &ts)) {
        char why[200];
        int w = snprintf(why, sizeof why, "the frames are %s (transfer syntax %s)%s",
                         frames_encapsulated(ws->fi) ? "compressed" : "uncompressed",
                         frames_transfer_syntax(ws->fi),
                         frames_encapsulated(ws->fi)
                             ? "; ask for their media type or application/octet-stream with "
                               "transfer-syntax=*"
                             : "; ask for multipart/related; type=\"application/octet-stream\"");
        ws_free(ws);
        return http_respond_error(r, 406, "%s", w > 0 ? why : "not acceptable");
    }
    if (!list) {
        n = frames_count(ws->fi);
        all = malloc(n * sizeof *all);
        if (!all) {
            ws_free(ws);
            return http_respond_error(r, 500, "out of memory");
        }
        for (size_t i = 0; i < n; i++)
            all[i] = i + 1;
        list = all;
    }
    rc = add_frames(r, ws, list, n, type, ts);
    free(all);
    if (rc) {
        ws_free(ws);
        return 0;
    }
    return ws_respond(r, ws, type, NULL);
}

static int handle_frames(struct http_request *r)
{
    struct http_accept acc;
    uint64_t *list = NULL;
    size_t n = 0;
    const char *study, *series, *instance;
    if (!get_uids(r, &study, &series, &instance) || !parse_accept(r, &acc))
        return 0;
    int rc = http_frame_list_parse(http_req_param(r, "frames"), &list, &n);
    if (rc == PACS_ENOMEM)
        return http_respond_error(r, 500, "out of memory");
    if (rc)
        return http_respond_error(r, 400,
                                  "frame list '%.80s' is not a comma-separated list of frame "
                                  "numbers from 1",
                                  http_req_param(r, "frames"));
    struct wstream *ws = open_instance(r);
    if (!ws) {
        free(list);
        return 0;
    }
    rc = respond_frames(r, ws, list, n, &acc);
    free(list);
    return rc;
}

/* --- bulk data -------------------------------------------------------------------- */

static int handle_bulk(struct http_request *r)
{
    struct http_accept acc;
    struct pacs_err err = { 0 };
    struct frames_piece piece;
    bool encaps = false;
    if (!parse_accept(r, &acc))
        return 0;
    const char *path = http_req_path(r);
    const char *rel = strstr(path, "/bulk/");
    struct wstream *ws = open_instance(r);
    if (!ws)
        return 0;
    int rc = frames_bulk(ws->fi, rel + 6, &piece, &encaps, &err);
    if (rc) {
        ws_free(ws);
        if (rc == PACS_EUNSUPPORTED)
            return http_respond_error(r, 406, "%s", err.msg);
        return respond_pacs_error(r, rc, &err);
    }
    if (encaps)
        return respond_frames(r, ws, NULL, 0, &acc);
    bool multipart = false, single = false;
    for (size_t i = 0; i < acc.n && !multipart && !single; i++) {
        const struct http_media_range *m = &acc.r[i];
        if (http_media_covers(m->type, MT_OCTET))
            single = true;
        else if (is_multipart_range(m) &&
                 (!m->root_type[0] || http_media_covers(m->root_type, MT_OCTET)))
            multipart = true;
    }
    if (!single && !multipart) {
        ws_free(ws);
        return http_respond_error(r, 406, "bulk data is served as " MT_OCTET
                                          " or multipart/related; type=\"" MT_OCTET "\"");
    }
    struct seg s = { .kind = piece.mem ? SEG_MEM : SEG_SRC, .mem = piece.mem, .off = piece.off,
                     .len = piece.len };
    if (multipart) {
        if ((rc = ws_header(ws, MT_OCTET, piece.len)) || (rc = ws_push(ws, s))) {
            ws_free(ws);
            return http_respond_error(r, 500, "out of memory");
        }
        return ws_respond(r, ws, MT_OCTET, NULL);
    }
    uint64_t first = 0, last = 0;
    unsigned status = 200;
    char cr[80];
    int range = http_range_parse(http_req_header(r, "Range"), piece.len, &first, &last);
    if (range < 0) {
        ws_free(ws);
        json_t *j = http_error_object(r, 416, "range not satisfiable");
        int w = snprintf(cr, sizeof cr, "bytes */%llu", (unsigned long long)piece.len);
        rc = http_respond_json(r, 416, j);
        if (rc == 0 && w > 0 && (size_t)w < sizeof cr)
            rc = http_add_header(r, "Content-Range", cr);
        return rc;
    }
    if (range > 0) {
        status = 206;
        s.off += first;
        s.len = last - first + 1;
    }
    if ((rc = ws_push(ws, s))) {
        ws_free(ws);
        return http_respond_error(r, 500, "out of memory");
    }
    rc = http_respond_stream(r, status, MT_OCTET, s.len, ws_read, ws, ws_free);
    if (rc == 0)
        rc = http_add_header(r, "Accept-Ranges", "bytes");
    if (rc == 0 && range > 0) {
        int w = snprintf(cr, sizeof cr, "bytes %llu-%llu/%llu", (unsigned long long)first,
                         (unsigned long long)last, (unsigned long long)piece.len);
        rc = w > 0 && (size_t)w < sizeof cr ? http_add_header(r, "Content-Range", cr)
                                            : PACS_EINVAL;
    }
    return rc;
}

#define I "/dicom-web/studies/{study}/series/{series}/instances/{instance}"

const struct http_route http_wado_routes[] = {
    {"GET", "/dicom-web/studies/{study}", handle_instances, NULL, 0},
    {"GET", "/dicom-web/studies/{study}/series/{series}", handle_instances, NULL, 0},
    {"GET", I, handle_instances, NULL, 0},
    {"GET", "/dicom-web/studies/{study}/metadata", handle_metadata, NULL, 0},
    {"GET", "/dicom-web/studies/{study}/series/{series}/metadata", handle_metadata, NULL, 0},
    {"GET", I "/metadata", handle_metadata, NULL, 0},
    {"GET", I "/frames/{frames}", handle_frames, NULL, 0},
    /* Stored bulk data URIs: "bulk/T", and "bulk/S/i/T" etc. for values in
     * sequences, as deep as a template's parameters allow
     * (HTTP_MAX_PATH_PARAMS: 3 UIDs + 5 segments = two sequence levels). */
    {"GET", I "/bulk/{b1}", handle_bulk, NULL, 0},
    {"GET", I "/bulk/{b1}/{b2}/{b3}", handle_bulk, NULL, 0},
    {"GET", I "/bulk/{b1}/{b2}/{b3}/{b4}/{b5}", handle_bulk, NULL, 0},
    {NULL, NULL, NULL, NULL, 0},
};
