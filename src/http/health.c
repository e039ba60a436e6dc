/* health.c - /health/live, /health/startup, /health/ready. See health.h. */
#include "http/health.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/log.h"
#include "util/metrics.h"

/* Longest failure reason kept per check. */
#define HEALTH_MSG_MAX 256
/* Key prefix of storage probes: not hex, so never an archive key. */

struct health_check {
    bool ok;
    char msg[HEALTH_MSG_MAX]; /* "ok" or "error: ..." */
};

struct http_health {
    struct archive *ar;
    atomic_bool started;
    atomic_bool stopping;
    /* Held across a probe: one probe at a time, and those waiting for it
     * use its result. Guards everything below. */
    pthread_mutex_t mu;
    bool have_result;
    int64_t probed_ms; /* CLOCK_MONOTONIC */
    struct health_check index, storage;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int http_health_new(struct archive *ar, struct http_health **out, struct pacs_err *err)
{
    struct http_health *h = calloc(1, sizeof *h);
    *out = NULL;
    if (!h)
        return pacs_err_set(err, PACS_ENOMEM, "out of memory");
    h->ar = ar;
    atomic_init(&h->started, false);
    atomic_init(&h->stopping, false);
    pthread_mutex_init(&h->mu, NULL);
    *out = h;
    return 0;
}

void http_health_free(struct http_health *h)
{
    if (!h)
        return;
    pthread_mutex_destroy(&h->mu);
    free(h);
}

/* Set once by http_health_shutdown_begun, never cleared. */
static atomic_bool shutdown_begun;

void http_health_set_started(struct http_health *h) { atomic_store(&h->started, true); }
void http_health_set_stopping(struct http_health *h) { atomic_store(&h->stopping, true); }

void http_health_shutdown_begun(void)
{
    if (!atomic_exchange(&shutdown_begun, true))
        log_info("shutting down: /health/ready answers 503");
}

/* The limits check: "" when under them, else the reason in msg. */
static void limits_check(struct http_request *r, char *msg, size_t n)
{
    const struct pacs_config *cfg = http_req_config(r);
    int64_t assoc = metric_value(&metric_dicom_associations_active, NULL);
    unsigned conns = http_req_connections(r);
    int k = 0;
    msg[0] = '\0';
    if (assoc >= (int64_t)cfg->dicom.max_associations)
        k = snprintf(msg, n, "DICOM associations at the limit: %lld in use of "
                     "dicom.max_associations %u", (long long)assoc, cfg->dicom.max_associations);
    else if (conns >= HTTP_MAX_CONNECTIONS)
        k = snprintf(msg, n, "HTTP connections at the limit: %u open of %u", conns,
                     (unsigned)HTTP_MAX_CONNECTIONS);
    if (k < 0 && n > sizeof "at a limit")
        memcpy(msg, "at a limit", sizeof "at a limit");
}

static void check_set(struct health_check *c, int rc, const struct pacs_err *err)
{
    c->ok = rc == 0;
    if (c->ok) {
        memcpy(c->msg, "ok", sizeof "ok");
        return;
    }
    /* A reason cut at HEALTH_MSG_MAX is still a reason. */
    if (snprintf(c->msg, sizeof c->msg, "error: %s",
                 err->msg[0] ? err->msg : pacs_strerror(rc)) < 0)
        memcpy(c->msg, "error", sizeof "error");
}

/* Runs the probes unless a result younger than HEALTH_READY_CACHE_MS
 * exists; copies the result out. */
static void ready_checks(struct http_health *h, struct health_check *index,
                         struct health_check *storage)
{
    pthread_mutex_lock(&h->mu);
    int64_t t = now_ms();
    if (!h->have_result || t - h->probed_ms >= HEALTH_READY_CACHE_MS) {
        struct pacs_err err = {0};
        int rc = archive_check_index(h->ar, &err);
        check_set(&h->index, rc, &err);
        pacs_err_clear(&err);
        rc = archive_check_storage(h->ar, &err);
        check_set(&h->storage, rc, &err);
        if (!h->index.ok || !h->storage.ok)
            log_warn("not ready: index %s, storage %s", h->index.msg, h->storage.msg);
        h->have_result = true;
        h->probed_ms = now_ms();
    }
    *index = h->index;
    *storage = h->storage;
    pthread_mutex_unlock(&h->mu);
}

static int respond_status(struct http_request *r, const char *status)
{
    return http_respond_json(r, 200, json_pack("{s:s}", "status", status));
}

int http_health_live(struct http_request *r) { return respond_status(r, "ok"); }

int http_health_startup(struct http_request *r)
{
    struct http_health *h = http_req_health(r);
    if (!atomic_load(&h->started))
        return http_respond_error(r, 503, "starting");
    return respond_status(r, "started");
}

int http_health_ready(struct http_request *r)
{
    struct http_health *h = http_req_health(r);
    struct health_check index, storage;
    if (atomic_load(&h->stopping) || atomic_load(&shutdown_begun))
        return http_respond_error(r, 503, "shutting down");
    if (!atomic_load(&h->started))
        return http_respond_error(r, 503, "starting");
    ready_checks(h, &index, &storage);
    char limits[HEALTH_MSG_MAX];
    limits_check(r, limits, sizeof limits);
    json_t *checks = json_pack("{s:s, s:s}", "index", index.msg, "storage", storage.msg);
    if (!checks) /* a reason that is not UTF-8 (a file name) */
        checks = json_pack("{s:s, s:s}", "index", index.ok ? "ok" : "error",
                           "storage", storage.ok ? "ok" : "error");
    if (index.ok && storage.ok && !limits[0])
        return http_respond_json(r, 200, json_pack("{s:s, s:o}", "status", "ready",
                                                   "checks", checks));
    if (limits[0] && checks) {
        char item[HEALTH_MSG_MAX + 8];
        if (snprintf(item, sizeof item, "error: %s", limits) < 0)
            memcpy(item, "error", sizeof "error");
        json_object_set_new(checks, "limits", json_string(item));
    }
    char msg[3 * HEALTH_MSG_MAX + 48]; /* every reason fits */
    if (snprintf(msg, sizeof msg, "not ready:%s%s%s%s%s%s", index.ok ? "" : " index ",
                 index.ok ? "" : index.msg, storage.ok ? "" : " storage ",
                 storage.ok ? "" : storage.msg, limits[0] ? " limits: " : "", limits) < 0)
        memcpy(msg, "not ready", sizeof "not ready");
    json_t *j = http_error_object(r, 503, msg);
    if (j && checks && json_object_set_new(j, "checks", checks) == 0)
        checks = NULL;
    json_decref(checks);
    return http_respond_json(r, 503, j);
}

const struct http_route http_health_routes[] = {
    {"GET", "/health/live", http_health_live, NULL, 0},
    {"GET", "/health/startup", http_health_startup, NULL, 0},
    {"GET", "/health/ready", http_health_ready, NULL, 0},
    {NULL, NULL, NULL, NULL, 0},
};
