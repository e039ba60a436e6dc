/* health.h - the health probes (Kubernetes liveness, readiness, start-up).
 *
 *   GET /health/live     200 {"status":"ok"} whenever the HTTP server
 *                        answers at all.
 *   GET /health/startup  200 {"status":"started"} once http_set_started was
 *                        called (archive open, listeners up); 503 before.
 *   GET /health/ready    200 {"status":"ready","checks":{...}} when
 *                        - "index": a one-row query on the index succeeds;
 *                        - "storage": a small probe object can be put,
 *                          committed and deleted in the blob store (key
 *                          "healthprobe" + 16 random hex digits; with the
 *                          file store it lands in files/he/, which the
 *                          archive's hex keys never use).
 *                        - under its limits: DICOM associations in use
 *                          (pacsd_dicom_associations_active) below
 *                          dicom.max_associations, and open HTTP
 *                          connections (this probe's included) below
 *                          HTTP_MAX_CONNECTIONS.
 *                        Otherwise 503 with the error body plus "checks",
 *                        each "ok" or "error: <reason>" ("limits" is in
 *                        "checks" only when a limit is reached). 503
 *                        "shutting down" from http_health_shutdown_begun
 *                        (SIGTERM, before the DICOM drain) or while the
 *                        server is stopping; 503 "starting" before
 *                        http_health_set_started.
 *
 * Probes of the index and storage run one at a time and their result is
 * reused for HEALTH_READY_CACHE_MS, so a burst of probes (several kubelets,
 * a load balancer) costs one index query and one fsync per interval. The
 * limits are read at each probe (two counters, no I/O).
 *
 * Thread safety: every function may be called from any thread.
 */
#ifndef PACS_HTTP_HEALTH_H
#define PACS_HTTP_HEALTH_H

#include <stdbool.h>

#include "archive/archive.h"
#include "http/server.h"
#include "util/err.h"

/* How long a readiness result is reused, milliseconds. */
#define HEALTH_READY_CACHE_MS 1000

struct http_health;

/* ar must outlive the result, which http_health_free releases. Returns 0
 * or PACS_ENOMEM. */
int http_health_new(struct archive *ar, struct http_health **out, struct pacs_err *err);
void http_health_free(struct http_health *h);

void http_health_set_started(struct http_health *h);
/* /health/ready answers 503 from now on. */
void http_health_set_stopping(struct http_health *h);
/* The process is shutting down: every /health/ready answers 503 "shutting
 * down" from now on. Process-wide (one flag, no server needed), so it can
 * be called from the DICOM listener's stop hook (net/server.h) before the
 * HTTP server itself is stopped. */
void http_health_shutdown_begun(void);

/* Route handlers (http_health_routes in routes.h). */
int http_health_live(struct http_request *r);
int http_health_startup(struct http_request *r);
int http_health_ready(struct http_request *r);

#endif
