/* stow.c - STOW-RS (PS3.18 10.5): POST /dicom-web/studies and
 * /dicom-web/studies/{study} with a multipart/related;
 * type="application/dicom" body.
 *
 * The body is parsed as it arrives (multipart.h); each application/dicom
 * part streams into its own ingest (ingest.h, the path C-STORE takes),
 * which is finished (made durable) at the part's end on a thread of its
 * own, up to STOW_MAX_INFLIGHT at once, while the next parts are read.
 * Outcomes are recorded in part order; the answer waits for them all.
 * Memory holds one part's headers and, per part in flight, the elements
 * before its pixels: never a whole instance or body. A part that fails (not DICOM, too large, another study, a
 * duplicate refused) is a FailedSOPSequence item and the next part goes on.
 * A body that breaks the multipart syntax ends the request with 400: the
 * part in progress is aborted (nothing half stored), the parts received
 * whole before it stay stored and the error body lists them.
 *
 * HTTP status (PS3.18 Table 10.5.3-1): 200 every part stored without
 * warning, 202 some stored and some failed or warned, 409 none stored,
 * 400 bad syntax or no parts, 415 a root type other than
 * application/dicom, 406 an Accept that excludes DICOM JSON.
 * docs/dicomweb.md is the user's view.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "archive/ingest.h"
#include "dicom/dataset.h"
#include "http/dicomweb.h"
#include "http/multipart.h"
#include "http/routes.h"
#include "util/dynbuf.h"
#include "util/log.h"

/* DICOM status / FailureReason values (PS3.18 I.2.2, PS3.4 B.2.3). */
#define ST_OUT_OF_RESOURCES 0xA700
#define ST_CANNOT_UNDERSTAND 0xC000

/* Parts of one request being finished at once. ingest_finish returns once
 * the instance is durable (its blob fsynced, its index batch committed);
 * finished one after the other, every part would wait for its own fsyncs.
 * Finished on their own threads while the next parts are read, they share
 * the group commit. Each holds an open blob and its parsed header. */
#define STOW_MAX_INFLIGHT 8
/* Stack of a finishing thread (ingest_finish does not recurse deeper than
 * PACS_MAX_SEQ_DEPTH). */
#define STOW_THREAD_STACK (1024u * 1024)
/* Longest reason kept for a failed part. */
#define STOW_MSG_MAX 320

/* One part's outcome, recorded in part order once known. */
struct part_job {
    size_t part;               /* 1-based */
    struct ingest *in;         /* NULL: failed before ingest (fail_status) */
    bool threaded;             /* finishing on th: join before reading */
    pthread_t th;
    uint16_t fail_status;
    char msg[STOW_MSG_MAX];
    int rc;                    /* ingest_finish's */
    struct ingest_result res;
    struct pacs_err err;
};

struct stow {
    struct mp_parser *mp;
    const char *type;          /* answer media type */
    const char *expect_study;  /* {study} of the path, or NULL */
    uint64_t max_size;         /* dicom.max_message_size */

    struct ingest *in;         /* the part being stored, or NULL */
    bool in_failed;            /* its feed failed: drop the rest of it */
    bool part_dicom;           /* the part in progress is application/dicom */
    char part_type[MP_MEDIA_TYPE_MAX + 1];
    char begin_fail[STOW_MSG_MAX]; /* why its ingest could not begin */

    /* Parts ended but not yet recorded, oldest first (a ring). */
    struct part_job *jobs[STOW_MAX_INFLIGHT];
    size_t jobs_head, jobs_n;

    json_t *referenced;        /* ReferencedSOPSequence items */
    json_t *failed;            /* FailedSOPSequence items */
    json_t *stored_uids;       /* SOP Instance UIDs stored, for a 400 */
    size_t n_warn;
    char study[65];            /* study of the stored instances ... */
    bool many_studies;         /* ... unless they are of several */

    /* A callback's own failure (out of memory): mp_feed returns it. */
    int cb_rc;
    /* Not 0: the HTTP status the request gets instead (see refuse). */
    unsigned refused;
    char refusal[512];
};

/* Waits for a part's finishing thread; its outcome is then in the job. */
static void job_wait(struct part_job *j)
{
    if (j->threaded) {
        pthread_join(j->th, NULL);
        j->threaded = false;
    }
}

static void stow_free(void *p)
{
    struct stow *st = p;
    if (!st)
        return;
    /* Parts finishing when the request ends (the client went away) still
     * become durable: they were received whole. */
    for (size_t i = 0; i < st->jobs_n; i++) {
        struct part_job *j = st->jobs[(st->jobs_head + i) % STOW_MAX_INFLIGHT];
        job_wait(j);
        ingest_abort(j->in); /* only set if never finished */
        free(j);
    }
    mp_parser_free(st->mp);
    ingest_abort(st->in);
    json_decref(st->referenced);
    json_decref(st->failed);
    json_decref(st->stored_uids);
    free(st);
}

/* --- DICOM JSON items ------------------------------------------------------ */

/* Adds "GGGGEEEE": {"vr": vr, "Value": [value]} to obj; an empty or NULL
 * string value gives the attribute without Value (PS3.18 F.2.5). */
static int put_str(json_t *obj, const char *tag, const char *vr, const char *value)
{
    json_t *a = json_pack("{s:s}", "vr", vr);
    if (!a)
        return PACS_ENOMEM;
    if (value && value[0] && json_object_set_new(a, "Value", json_pack("[s]", value))) {
        json_decref(a);
        return PACS_ENOMEM;
    }
    return json_object_set_new(obj, tag, a) ? PACS_ENOMEM : 0;
}

static int put_us(json_t *obj, const char *tag, unsigned value)
{
    json_t *a = json_pack("{s:s,s:[I]}", "vr", "US", "Value", (json_int_t)value);
    if (!a)
        return PACS_ENOMEM;
    return json_object_set_new(obj, tag, a) ? PACS_ENOMEM : 0;
}

/* An item of the SOP Instance Reference Macro (PS3.3 Table 10-11). */
static json_t *sop_ref(const char *sop_class, const char *sop_inst)
{
    json_t *it = json_object();
    if (!it || put_str(it, "00081150", "UI", sop_class) || put_str(it, "00081155", "UI", sop_inst)) {
        json_decref(it);
        return NULL;
    }
    return it;
}

/* A FailedSOPSequence item. The UIDs are empty when the part was never
 * read that far (not DICOM, malformed); the reason in words goes in
 * ErrorComment (0000,0902), as a DIMSE response would carry it. */
static int add_failure(struct stow *st, const char *sop_class, const char *sop_inst,
                       unsigned reason, const char *msg)
{
    json_t *it = sop_ref(sop_class, sop_inst);
    if (!it || put_us(it, "00081197", reason) ||
        (msg && msg[0] && put_str(it, "00000902", "LO", msg))) {
        json_decref(it);
        return PACS_ENOMEM;
    }
    /* json_array_append_new releases it whatever happens. */
    return json_array_append_new(st->failed, it) ? PACS_ENOMEM : 0;
}

static bool is_warning(uint16_t status)
{
    return status == 0x0001 || (status & 0xF000) == 0xB000;
}

static int add_stored(struct stow *st, struct http_request *r, const struct ingest_result *res)
{
    struct dynbuf url;
    dynbuf_init(&url, 0);
    int rc = dw_retrieve_url(&url, http_req_base_url(r), res->study_uid, res->series_uid,
                             res->sop_instance_uid);
    json_t *it = rc ? NULL : sop_ref(res->sop_class_uid, res->sop_instance_uid);
    if (!it || put_str(it, "00081190", "UR", (const char *)url.data) ||
        (is_warning(res->status) && put_us(it, "00081196", res->status)) ||
        json_array_append(st->referenced, it) ||
        json_array_append_new(st->stored_uids, json_string(res->sop_instance_uid))) {
        rc = PACS_ENOMEM;
        goto out;
    }
    if (is_warning(res->status))
        st->n_warn++;
    if (!st->study[0])
        memcpy(st->study, res->study_uid, sizeof st->study);
    else if (strcmp(st->study, res->study_uid) != 0)
        st->many_studies = true;
out:
    json_decref(it);
    dynbuf_free(&url);
    return rc;
}

/* --- multipart callbacks --------------------------------------------------- */

struct cb_ctx {
    struct stow *st;
    struct http_request *r;
};

static int part_begin(void *ctx, const struct mp_part_headers *h)
{
    struct cb_ctx *c = ctx;
    struct stow *st = c->st;
    struct mp_content_type ct;
    struct pacs_err err = { 0 };
    st->in_failed = false;
    st->part_dicom = false;
    st->begin_fail[0] = '\0';
    /* No Content-Type: the type parameter of the request (PS3.18 8.6.1.2),
     * which was checked to be application/dicom. */
    if (!h->content_type) {
        st->part_dicom = true;
    } else if (mp_parse_content_type(h->content_type, &ct, &err) == 0) {
        st->part_dicom = strcmp(ct.media_type, "application/dicom") == 0;
        memcpy(st->part_type, ct.media_type, sizeof st->part_type);
    } else {
        memcpy(st->part_type, "(malformed)", sizeof "(malformed)");
    }
    if (!st->part_dicom)
        return 0;
    struct ingest_source src = {
        .ts_uid = NULL,
        .remote_aet = "",
        .max_size = st->max_size,
        .expect_study_uid = st->expect_study,
    };
    if (ingest_begin(http_req_archive(c->r), &src, &st->in, &err)) {
        /* Ours (no temp file, no memory): this part fails, the rest may not. */
        log_error("stow: part %zu: %s", h->index + 1, err.msg);
        st->in = NULL;
        st->in_failed = true;
        if (snprintf(st->begin_fail, sizeof st->begin_fail, "cannot store: %s", err.msg) < 0)
            st->begin_fail[0] = '\0';
    }
    return 0;
}

static int part_data(void *ctx, const uint8_t *p, size_t n)
{
    struct stow *st = ((struct cb_ctx *)ctx)->st;
    if (!st->in || st->in_failed)
        return 0;
    /* A bad or oversized instance is known now; ingest_finish gives its
     * status, and its remaining bytes are skipped. */
    if (ingest_feed(st->in, p, n, NULL))
        st->in_failed = true;
    return 0;
}

/* Turns a finished part into its response item. */
static int record(struct stow *st, struct http_request *r, struct part_job *j)
{
    if (!j->in && j->fail_status)
        return add_failure(st, NULL, NULL, j->fail_status, j->msg);
    const struct ingest_result *res = &j->res;
    if (j->rc == 0 && (res->status == 0x0000 || is_warning(res->status)))
        return add_stored(st, r, res);
    char msg[STOW_MSG_MAX];
    if (snprintf(msg, sizeof msg, "part %zu: %s", j->part, j->rc ? j->err.msg : res->message) < 0)
        msg[0] = '\0';
    uint16_t reason = res->status ? res->status : ST_OUT_OF_RESOURCES;
    return add_failure(st, res->sop_class_uid, res->sop_instance_uid, reason, msg);
}

/* Waits for the oldest part in flight and records it. */
static int record_oldest(struct stow *st, struct http_request *r)
{
    struct part_job *j = st->jobs[st->jobs_head];
    st->jobs_head = (st->jobs_head + 1) % STOW_MAX_INFLIGHT;
    st->jobs_n--;
    job_wait(j);
    int rc = record(st, r, j);
    free(j);
    return rc;
}

/* Records every part in flight, in order; the first error is returned. */
static int record_all(struct stow *st, struct http_request *r)
{
    int rc = 0;
    while (st->jobs_n) {
        int k = record_oldest(st, r);
        if (!rc)
            rc = k;
    }
    return rc;
}

static void *finish_thread(void *p)
{
    struct part_job *j = p;
    j->rc = ingest_finish(j->in, &j->res, &j->err);
    j->in = NULL;
    return NULL;
}

/* Starts finishing a part: on its own thread, or here when no thread can
 * be had (after the parts before it, so the order holds either way). */
static int start_finish(struct stow *st, struct http_request *r, struct part_job *j)
{
    pthread_attr_t attr;
    bool attr_ok = pthread_attr_init(&attr) == 0;
    if (attr_ok)
        pthread_attr_setstacksize(&attr, STOW_THREAD_STACK);
    if (attr_ok && pthread_create(&j->th, &attr, finish_thread, j) == 0) {
        j->threaded = true;
        pthread_attr_destroy(&attr);
        return 0;
    }
    if (attr_ok)
        pthread_attr_destroy(&attr);
    int rc = record_all(st, r);
    finish_thread(j);
    return rc;
}

static int part_end(void *ctx)
{
    struct cb_ctx *c = ctx;
    struct stow *st = c->st;
    int rc = 0;
    if (st->jobs_n == STOW_MAX_INFLIGHT && (rc = record_oldest(st, c->r)))
        return st->cb_rc = rc;
    struct part_job *j = calloc(1, sizeof *j);
    if (!j)
        return st->cb_rc = PACS_ENOMEM;
    j->part = mp_part_count(st->mp);
    int n = 0;
    if (!st->part_dicom) {
        j->fail_status = ST_CANNOT_UNDERSTAND;
        n = snprintf(j->msg, sizeof j->msg, "part %zu: Content-Type %s is not application/dicom",
                     j->part, st->part_type);
    } else if (!st->in) {
        j->fail_status = ST_OUT_OF_RESOURCES;
        n = snprintf(j->msg, sizeof j->msg, "part %zu: %s", j->part, st->begin_fail);
    } else {
        j->in = st->in;
        st->in = NULL;
        rc = start_finish(st, c->r, j);
    }
    if (n < 0)
        j->msg[0] = '\0'; /* a cut message is still the message */
    st->jobs[(st->jobs_head + st->jobs_n) % STOW_MAX_INFLIGHT] = j;
    st->jobs_n++;
    return rc ? (st->cb_rc = rc) : 0;
}

static const struct mp_callbacks callbacks = { part_begin, part_data, part_end };

/* --- request ---------------------------------------------------------------- */

/* Why the request is refused (status 0: it is not), found from its
 * headers or while reading its body. The answer waits for the end of the
 * body: libmicrohttpd (0.9.75) cannot queue a response while a body is
 * being received, and the client, still sending, would not read it. What
 * is left of a refused body is read and dropped. */
static void refuse(struct stow *st, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void refuse(struct stow *st, unsigned status, const char *fmt, ...)
{
    if (st->refused)
        return;
    st->refused = status;
    va_list ap;
    va_start(ap, fmt);
    if (vsnprintf(st->refusal, sizeof st->refusal, fmt, ap) < 0)
        st->refusal[0] = '\0'; /* a cut message is still the message */
    va_end(ap);
    ingest_abort(st->in); /* nothing half stored */
    st->in = NULL;
}

/* Checks the request's headers into a new state: the Accept (406), the
 * Content-Type (415, or 400 for a multipart/related without a usable
 * boundary). */
static void check_headers(struct http_request *r, struct stow *st)
{
    struct pacs_err err = { 0 };
    struct mp_content_type ct;
    const char *hdr = http_req_header(r, "Content-Type");
    if (dw_choose_json_type(http_req_header(r, "Accept"), &st->type, &err)) {
        refuse(st, 406, "%s", err.msg);
        return;
    }
    /* No instance can belong to a study whose UID is not a UID; and the
     * value would reach the answer's JSON. */
    if (st->expect_study && !dcm_uid_valid(st->expect_study, strlen(st->expect_study))) {
        refuse(st, 400, "{study}: not a valid UID");
        return;
    }
    if (!hdr) {
        refuse(st, 415, "no Content-Type: STOW-RS takes multipart/related; "
                        "type=\"application/dicom\"");
        return;
    }
    int rc = mp_parse_content_type(hdr, &ct, &err);
    /* A multipart/related whose boundary is missing or bad is a malformed
     * request (400); any other media type is one pacsd does not take (415). */
    if (rc && strncasecmp(hdr, "multipart/related", strlen("multipart/related")) == 0) {
        refuse(st, 400, "Content-Type: %s", err.msg);
        return;
    }
    if (rc || !mp_is_multipart_related(&ct)) {
        refuse(st, 415, "Content-Type %s%s: STOW-RS takes multipart/related; "
                        "type=\"application/dicom\"",
               rc ? "is malformed, " : "", rc ? err.msg : ct.media_type);
        return;
    }
    if (!ct.type[0]) {
        refuse(st, 415, "Content-Type has no type parameter: STOW-RS takes "
                        "multipart/related; type=\"application/dicom\"");
        return;
    }
    if (strcmp(ct.type, "application/dicom") != 0) {
        refuse(st, 415, "type=\"%s\" is not supported: pacsd stores application/dicom "
                        "parts (PS3.10 files), not metadata and bulk data", ct.type);
        return;
    }
    rc = mp_parser_new(ct.boundary, NULL, &st->mp, &err);
    if (rc)
        refuse(st, rc == PACS_ENOMEM ? 500 : 400, "Content-Type: %s", err.msg);
}

/* The state of the request, made at its first body piece (or by the
 * handler for a request without a body); NULL only when out of memory. */
static struct stow *stow_get(struct http_request *r)
{
    struct stow *st = http_req_state(r);
    if (st)
        return st;
    st = calloc(1, sizeof *st);
    if (!st || !(st->referenced = json_array()) || !(st->failed = json_array()) ||
        !(st->stored_uids = json_array())) {
        stow_free(st);
        return NULL;
    }
    st->expect_study = http_req_param(r, "study");
    st->max_size = http_req_config(r)->dicom.max_message_size;
    check_headers(r, st);
    http_req_set_state(r, st, stow_free);
    return st;
}

static int stow_body(struct http_request *r, const void *data, size_t len)
{
    struct stow *st = stow_get(r);
    if (!st)
        return PACS_ENOMEM;
    if (st->refused)
        return 0;
    struct cb_ctx c = { st, r };
    struct pacs_err err = { 0 };
    int rc = mp_feed(st->mp, data, len, &callbacks, &c, &err);
    if (rc && st->cb_rc)
        refuse(st, 500, "out of memory");
    else if (rc)
        refuse(st, 400, "%s", err.msg);
    return 0;
}

/* The error answer of a refused request. For a body found malformed after
 * some parts were stored, those stay stored (each was durable before the
 * next began; PS3.18 has no way to take them back) and the body lists
 * them. */
static int respond_refusal(struct http_request *r, struct stow *st)
{
    json_t *j = http_error_object(r, st->refused, st->refusal);
    if (!j)
        return http_respond_error(r, 500, "out of memory");
    if (st->refused == 400 && st->mp &&
        (json_object_set_new(j, "stored",
                             json_integer((json_int_t)json_array_size(st->stored_uids))) ||
         json_object_set(j, "stored_instances", st->stored_uids))) {
        json_decref(j);
        return http_respond_error(r, 500, "out of memory");
    }
    return http_respond_json(r, st->refused, j);
}

static int stow_handler(struct http_request *r)
{
    struct stow *st = stow_get(r);
    if (!st)
        return http_respond_error(r, 500, "out of memory");
    struct pacs_err err = { 0 };
    if (!st->refused && mp_finish(st->mp, &err))
        refuse(st, 400, "%s", err.msg);
    /* Whatever the answer, it tells what was stored: wait for it all. */
    if (record_all(st, r))
        refuse(st, 500, "out of memory");
    if (st->refused)
        return respond_refusal(r, st);
    size_t n_ok = json_array_size(st->referenced), n_bad = json_array_size(st->failed);
    if (n_ok + n_bad == 0)
        return http_respond_error(r, 400, "the body has no parts: nothing to store");

    json_t *ans = json_object();
    if (!ans)
        goto nomem;
    /* RetrieveURL of the study (Type 2): empty unless what was stored is
     * of one study. */
    const char *study = st->expect_study ? st->expect_study
                        : (st->study[0] && !st->many_studies) ? st->study : NULL;
    struct dynbuf url;
    dynbuf_init(&url, 0);
    int rc = study ? dw_retrieve_url(&url, http_req_base_url(r), study, NULL, NULL) : 0;
    rc = rc || put_str(ans, "00081190", "UR", study ? (const char *)url.data : NULL);
    dynbuf_free(&url);
    if (rc)
        goto nomem;
    if (n_bad && json_object_set_new(ans, "00081198",
                                     json_pack("{s:s,s:O}", "vr", "SQ", "Value", st->failed)))
        goto nomem;
    if (n_ok && json_object_set_new(ans, "00081199",
                                    json_pack("{s:s,s:O}", "vr", "SQ", "Value", st->referenced)))
        goto nomem;
    unsigned status = n_ok == 0 ? 409 : (n_bad || st->n_warn) ? 202 : 200;
    return http_respond_json_as(r, status, st->type, ans);
nomem:
    json_decref(ans);
    return http_respond_error(r, 500, "out of memory");
}

const struct http_route http_stow_routes[] = {
    /* No body limit: the body streams, and each instance is bounded by
     * dicom.max_message_size. */
    {"POST", "/dicom-web/studies", stow_handler, stow_body, 0},
    {"POST", "/dicom-web/studies/{study}", stow_handler, stow_body, 0},
    {NULL, NULL, NULL, NULL, 0},
};
