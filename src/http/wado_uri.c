/* wado_uri.c - WADO-URI (PS3.18 9): GET /wado?requestType=WADO&studyUID=
 * &seriesUID=&objectUID=, answering one instance as application/dicom.
 * docs/wado.md is the user's view.
 *
 * pacsd renders no images, so the only content type served is
 * application/dicom; a request without contentType gets it too (PS3.18's
 * default for images, image/jpeg, would need a renderer, and answering the
 * object in the one form pacsd has is more useful than refusing).
 */
#include <stdlib.h>
#include <string.h>

#include "archive/query.h"
#include "archive/retrieve.h"
#include "dicom/dict.h"
#include "http/accept.h"
#include "http/routes.h"
#include "util/log.h"

#define MT_DICOM "application/dicom"

struct uri_stream {
    struct archive *a;
    struct retrieve_list list;
    struct retrieve_reader *rd;
};

static void us_free(void *p)
{
    struct uri_stream *us = p;
    if (!us)
        return;
    retrieve_close(us->rd);
    retrieve_list_free(&us->list);
    free(us);
}

static ssize_t us_read(void *ctx, uint64_t pos, char *buf, size_t max)
{
    struct uri_stream *us = ctx;
    struct pacs_err err = { 0 };
    size_t got = 0;
    if (pos >= us->list.items[0].size)
        return HTTP_STREAM_END;
    if (!us->rd && retrieve_open(us->a, &us->list.items[0], 0, &us->rd, &err) != 0)
        goto fail;
    if (retrieve_read_at(us->rd, pos, buf, max, &got, &err) != 0)
        goto fail;
    if (got == 0) {
        pacs_err_set(&err, PACS_ETRUNC, "stored file shorter than indexed");
        goto fail;
    }
    return (ssize_t)got;
fail:
    log_warn("wado-uri: response cut short: %s", err.msg);
    return HTTP_STREAM_ERROR;
}

/* A UID parameter: 1..64 digits and dots, no empty component. */
static bool uid_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64 || s[0] == '.' || s[n - 1] == '.')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] == '.' && s[i + 1] != '.')))
            return false;
    return true;
}

static int handle_wado(struct http_request *r)
{
    static const char *const names[3] = { "studyUID", "seriesUID", "objectUID" };
    static const uint32_t tags[3] = { DCM_TAG(0x0020, 0x000d), DCM_TAG(0x0020, 0x000e),
                                      DCM_TAG(0x0008, 0x0018) };
    const char *uids[3];
    struct pacs_err err = { 0 };
    struct query *q = NULL;
    struct uri_stream *us = NULL;
    struct dynbuf tc;
    int rc;
    dynbuf_init(&tc, 0);

    const char *rt = http_req_query(r, "requestType");
    if (!rt || strcmp(rt, "WADO") != 0)
        return http_respond_error(r, 400, "requestType must be WADO");
    for (int i = 0; i < 3; i++) {
        uids[i] = http_req_query(r, names[i]);
        if (!uids[i])
            return http_respond_error(r, 400, "%s is missing", names[i]);
        if (!uid_ok(uids[i]))
            return http_respond_error(r, 400, "%s '%.80s' is not a UID", names[i], uids[i]);
    }
    const char *anon = http_req_query(r, "anonymize");
    if (anon)
        return http_respond_error(r, 400, "anonymize is not supported");
    const char *ct = http_req_query(r, "contentType");
    if (ct) {
        /* A list of media types with q values, as an Accept header. */
        struct http_accept acc;
        bool ok = false;
        if (http_accept_parse(ct, &acc, &err) != 0)
            return http_respond_error(r, 400, "contentType: %s", err.msg);
        for (size_t i = 0; i < acc.n && !ok; i++)
            ok = http_media_covers(acc.r[i].type, MT_DICOM);
        if (!ok)
            return http_respond_error(r, 406,
                                      "contentType '%.80s': pacsd serves only " MT_DICOM
                                      " (it renders no images)",
                                      ct);
    }
    const char *ts = http_req_query(r, "transferSyntax");
    if (ts && !uid_ok(ts))
        return http_respond_error(r, 400, "transferSyntax '%.80s' is not a UID", ts);

    if (!(us = calloc(1, sizeof *us)))
        return http_respond_error(r, 500, "out of memory");
    us->a = http_req_archive(r);
    if ((rc = query_new(INDEX_INSTANCE, QUERY_STUDY_ROOT, &q))) {
        rc = http_respond_error(r, 500, "out of memory");
        goto out;
    }
    for (int i = 0; i < 3 && rc == 0; i++)
        rc = query_add_key(q, tags[i], uids[i], &err);
    if (rc == 0)
        rc = retrieve_from_query(us->a, q, &us->list, &err);
    if (rc) {
        log_warn("wado-uri: %s", err.msg);
        rc = http_respond_error(r, 500, "%s", err.msg);
        goto out;
    }
    if (us->list.n == 0) {
        rc = http_respond_error(r, 404, "no such object");
        goto out;
    }
    const struct retrieve_item *it = &us->list.items[0];
    if (ts && strcmp(ts, it->transfer_syntax) != 0) {
        if (!retrieve_can_transcode(it->transfer_syntax, ts)) {
            rc = http_respond_error(r, 406,
                                    "the object is stored in transfer syntax %s, which pacsd "
                                    "cannot convert to %s",
                                    it->transfer_syntax, ts);
            goto out;
        }
        if ((rc = retrieve_transcode_file(us->a, it, ts, &tc, &err))) {
            log_warn("wado-uri: %s", err.msg);
            rc = http_respond_error(r, 500, "%s", err.msg);
            goto out;
        }
        size_t len;
        char *body = (char *)dynbuf_take(&tc, &len);
        rc = http_respond_owned(r, 200, MT_DICOM, body, len);
        goto out;
    }
    rc = http_respond_stream(r, 200, MT_DICOM, it->size, us_read, us, us_free);
    us = NULL;
out:
    query_free(q);
    us_free(us);
    dynbuf_free(&tc);
    return rc;
}

const struct http_route http_wado_uri_routes[] = {
    {"GET", "/wado", handle_wado, NULL, 0},
    {NULL, NULL, NULL, NULL, 0},
};
