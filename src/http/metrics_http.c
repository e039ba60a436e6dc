/* metrics_http.c - GET /metrics: the registry (util/metrics.h) in the
 * Prometheus text format 0.0.4, plus figures read at scrape time: open
 * HTTP connections, the limits readiness checks against, and the
 * archive's totals (cached METRICS_STORAGE_CACHE_S seconds, since counting
 * them costs a pass over the index). docs/metrics.md lists every metric.
 *
 * The answer is gzip-compressed when the scraper asks (Prometheus does):
 * server.c compresses text/ responses. No authentication: keep the port
 * on a network only scrapers reach, as for the health probes.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "archive/resources.h"
#include "http/health.h"
#include "http/routes.h"
#include "util/log.h"
#include "util/metrics.h"

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
/* How long the archive's totals are reused, seconds. */
#define METRICS_STORAGE_CACHE_S 5.0
/* Largest exposition (a safety bound: a few hundred KiB in practice). */
#define METRICS_MAX_BODY (16u * 1024 * 1024)

static pthread_mutex_t storage_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    bool have;
    double at; /* metrics_now() of the last attempt */
    struct index_stats st;
} storage_cache;

/* The archive's totals, at most METRICS_STORAGE_CACHE_S old; false if the
 * index cannot say (then the storage metrics are left out: a scrape gap is
 * honest, a stale or zero value would not be). */
static bool storage_totals(struct archive *ar, struct index_stats *out)
{
    pthread_mutex_lock(&storage_mu);
    double now = metrics_now();
    if (storage_cache.at == 0 || now - storage_cache.at >= METRICS_STORAGE_CACHE_S) {
        struct pacs_err err = {0};
        struct index_stats st;
        storage_cache.at = now;
        storage_cache.have = resources_statistics(ar, &st, &err) == 0;
        if (storage_cache.have)
            storage_cache.st = st;
        else
            log_warn("metrics: cannot read the archive's totals: %s", err.msg);
    }
    bool have = storage_cache.have;
    if (have)
        *out = storage_cache.st;
    pthread_mutex_unlock(&storage_mu);
    return have;
}

static int gauge(struct dynbuf *out, const char *name, const char *help, double v)
{
    int rc = metric_write_header(out, name, help, METRIC_GAUGE);
    return rc ? rc : metric_write_sample(out, name, 0, NULL, NULL, v);
}

static int write_scrape_time(struct http_request *r, struct dynbuf *out)
{
    const struct pacs_config *cfg = http_req_config(r);
    int rc = gauge(out, "pacsd_http_connections",
                   "HTTP connections open now (this scrape's included).",
                   http_req_connections(r));
    if (rc == 0)
        rc = gauge(out, "pacsd_http_connections_limit",
                   "Most HTTP connections served at once; readiness fails at it.",
                   HTTP_MAX_CONNECTIONS);
    if (rc == 0)
        rc = gauge(out, "pacsd_dicom_associations_limit",
                   "dicom.max_associations: most DICOM associations served at once; "
                   "readiness fails at it.",
                   cfg->dicom.max_associations);
    struct index_stats st;
    if (rc || !storage_totals(http_req_archive(r), &st))
        return rc;
    const struct {
        const char *name, *help;
        uint64_t v;
    } totals[] = {
        {"pacsd_storage_patients", "Patients in the archive.", st.patients},
        {"pacsd_storage_studies", "Studies in the archive.", st.studies},
        {"pacsd_storage_series", "Series in the archive.", st.series},
        {"pacsd_storage_instances", "Instances in the archive.", st.instances},
        {"pacsd_storage_bytes", "Bytes of the stored instance files.", st.bytes},
    };
    for (size_t i = 0; i < sizeof totals / sizeof totals[0] && rc == 0; i++)
        rc = gauge(out, totals[i].name, totals[i].help, (double)totals[i].v);
    return rc;
}

static int metrics_get(struct http_request *r)
{
    struct dynbuf out;
    dynbuf_init(&out, METRICS_MAX_BODY);
    int rc = metrics_write_all(&out);
    if (rc == 0)
        rc = write_scrape_time(r, &out);
    if (rc) {
        dynbuf_free(&out);
        return http_respond_error(r, 500, "cannot write the metrics: %s", pacs_strerror(rc));
    }
    size_t len = 0;
    char *body = dynbuf_take(&out, &len);
    if (!body)
        return PACS_ENOMEM;
    return http_respond_owned(r, 200, METRICS_CONTENT_TYPE, body, len);
}

const struct http_route http_metrics_routes[] = {
    {"GET", "/metrics", metrics_get, NULL, 0},
    {NULL, NULL, NULL, NULL, 0},
};
