/* qido_routes.c - QIDO-RS (PS3.18 10.6): the six search resources under
 * /dicom-web. The query string is parsed by qido.h into the query model
 * C-FIND uses, run by query_run, and each answer is written as DICOM JSON
 * with its RetrieveURL. The answer is built whole in memory (at most
 * QIDO_MAX_LIMIT answers, DW_MAX_JSON_ANSWER bytes) so that an error met
 * while running the query is still a clean error response.
 *
 * No match is 200 with "[]" (not 204): see docs/dicomweb.md for why.
 */
#include <string.h>

#include "archive/query.h"
#include "dicom/dict.h"
#include "dicom/json.h"
#include "http/dicomweb.h"
#include "http/qido.h"
#include "http/routes.h"
#include "util/dynbuf.h"
#include "util/log.h"

#define TAG_QR_LEVEL DCM_TAG(0x0008, 0x0052)
#define TAG_RETRIEVE_URL DCM_TAG(0x0008, 0x1190)
#define TAG_SOP_INSTANCE_UID DCM_TAG(0x0008, 0x0018)
#define TAG_STUDY_UID DCM_TAG(0x0020, 0x000D)
#define TAG_SERIES_UID DCM_TAG(0x0020, 0x000E)

#define WARN_MAX_RESULTS                                                                       \
    "299 pacsd: The number of results exceeded the maximum supported by the server. "          \
    "Additional results can be requested."
#define WARN_FUZZY                                                                             \
    "299 pacsd: The fuzzymatching parameter is not supported. Only literal matching has been " \
    "performed."

struct answers {
    struct dynbuf *out;
    struct dynbuf url;
    const char *base;
    enum qido_resource res;
    size_t n;
    struct pacs_err err;
};

/* One answer: QueryRetrieveLevel out (a C-FIND attribute, not a QIDO-RS
 * one), RetrieveURL of the answer's level in, then its JSON. */
static int on_answer(void *ctx, struct dcm_ds *ans)
{
    struct answers *a = ctx;
    char study[65], series[65], sop[65];
    int rc = dcm_ds_remove(ans, TAG_QR_LEVEL);
    if (rc)
        goto out;
    if (dcm_ds_get_str(ans, TAG_STUDY_UID, 0, study, sizeof study) == 0 && study[0]) {
        bool have_series = a->res != QIDO_STUDIES &&
                           dcm_ds_get_str(ans, TAG_SERIES_UID, 0, series, sizeof series) == 0;
        bool have_sop = have_series && a->res == QIDO_INSTANCES &&
                        dcm_ds_get_str(ans, TAG_SOP_INSTANCE_UID, 0, sop, sizeof sop) == 0;
        /* An answer always has its level's UIDs (they are index keys);
         * without them there is no URL to give rather than a wrong one. */
        if ((a->res == QIDO_STUDIES || have_series) && (a->res != QIDO_INSTANCES || have_sop)) {
            dynbuf_reset(&a->url);
            if ((rc = dw_retrieve_url(&a->url, a->base, study, have_series ? series : NULL,
                                      have_sop ? sop : NULL)) ||
                (rc = dcm_ds_put_str(ans, TAG_RETRIEVE_URL, DCM_VR_UR, (const char *)a->url.data)))
                goto out;
        }
    }
    if (a->n && (rc = dynbuf_putc(a->out, ',')))
        goto out;
    if ((rc = dcm_json_write(ans, NULL, a->out, &a->err)))
        goto out;
    a->n++;
out:
    if (rc && !a->err.code)
        pacs_err_set(&a->err, rc, "%s", rc == PACS_ELIMIT ? "answer too large" : "out of memory");
    dcm_ds_free(ans);
    return rc;
}

static int search(struct http_request *r, enum qido_resource res)
{
    struct qido_request q = { 0 };
    struct qido_scope scope = { http_req_param(r, "study"), http_req_param(r, "series") };
    struct pacs_err err = { 0 };
    struct dynbuf body;
    struct answers a = { .out = &body, .res = res };
    const char *type;
    int rc;
    dynbuf_init(&body, DW_MAX_JSON_ANSWER);
    dynbuf_init(&a.url, 0);

    rc = qido_parse(res, &scope, http_req_query_string(r), &q, &err);
    if (rc) {
        rc = rc == PACS_ENOMEM ? http_respond_error(r, 500, "out of memory")
                               : http_respond_error(r, 400, "%s", err.msg);
        goto out;
    }
    const char *accept = q.accept ? q.accept : http_req_header(r, "Accept");
    if (dw_choose_json_type(accept, &type, &err)) {
        rc = http_respond_error(r, 406, "%s", err.msg);
        goto out;
    }
    if ((rc = dynbuf_putc(&body, '[')))
        goto nomem;
    if (q.limit > 0) {
        a.base = http_req_base_url(r);
        rc = query_run(http_req_archive(r), q.q, on_answer, &a, &err);
        if (rc) {
            const struct pacs_err *e = a.err.code ? &a.err : &err;
            if (rc == PACS_ELIMIT) {
                rc = http_respond_error(r, 400,
                                        "the answer is larger than %u bytes: ask for fewer "
                                        "results with limit and offset, or fewer includefield "
                                        "attributes",
                                        DW_MAX_JSON_ANSWER);
            } else {
                log_error("qido: %s: %s", http_req_path(r), e->msg);
                rc = http_respond_error(r, 500, "query failed: %s", e->msg);
            }
            goto out;
        }
    }
    if ((rc = dynbuf_putc(&body, ']')))
        goto nomem;
    size_t len;
    char *text = dynbuf_take(&body, &len);
    if (!text)
        goto nomem;
    if ((rc = http_respond_owned(r, 200, type, text, len)))
        goto out;
    /* Without limit=, QIDO_MAX_LIMIT answers may be the cap talking. */
    if (q.limit_clamped || (!q.limit_given && a.n == q.limit))
        http_add_header(r, "Warning", WARN_MAX_RESULTS);
    if (q.fuzzy)
        http_add_header(r, "Warning", WARN_FUZZY);
    goto out;
nomem:
    rc = http_respond_error(r, 500, "out of memory");
out:
    qido_request_free(&q);
    dynbuf_free(&body);
    dynbuf_free(&a.url);
    return rc;
}

static int studies(struct http_request *r) { return search(r, QIDO_STUDIES); }
static int series(struct http_request *r) { return search(r, QIDO_SERIES); }
static int instances(struct http_request *r) { return search(r, QIDO_INSTANCES); }

const struct http_route http_qido_routes[] = {
    {"GET", "/dicom-web/studies", studies, NULL, 0},
    {"GET", "/dicom-web/series", series, NULL, 0},
    {"GET", "/dicom-web/instances", instances, NULL, 0},
    {"GET", "/dicom-web/studies/{study}/series", series, NULL, 0},
    {"GET", "/dicom-web/studies/{study}/instances", instances, NULL, 0},
    {"GET", "/dicom-web/studies/{study}/series/{series}/instances", instances, NULL, 0},
    {NULL, NULL, NULL, NULL, 0},
};
