/* server.h - the DICOM listener: accepts TCP connections, runs one thread
 * per association (ul_accept, then scp_serve), enforces the association
 * limit (A-ASSOCIATE-RJ "local limit exceeded" beyond it), and stops
 * cleanly on SIGTERM/SIGINT.
 *
 * Stopping: the listener closes at once; running associations get
 * cfg->dicom.shutdown_timeout seconds to finish; the rest are then cut
 * (their in-flight instances are not acknowledged, so nothing acknowledged
 * is lost). server_run returns when every association thread has ended.
 *
 * Metrics (util/metrics.h): pacsd_dicom_associations_active (slots in use,
 * i.e. threads counted against dicom.max_associations) and
 * pacsd_dicom_associations_total by outcome of the negotiation.
 */
#ifndef PACS_NET_SERVER_H
#define PACS_NET_SERVER_H

#include "archive/archive.h"
#include "util/config.h"
#include "util/err.h"

/* Installs the SIGTERM/SIGINT handlers, binds cfg->bind:cfg->dicom.port
 * and serves until a signal or server_stop(). Returns 0 after a clean
 * stop, or an error if the port cannot be bound. */
int server_run(const struct pacs_config *cfg, struct archive *ar, struct pacs_err *err);

/* Asks a running server to stop (async-signal-safe). */
void server_stop(void);

/* fn(ctx) is called once, on server_run's thread, as soon as a stop is
 * asked (SIGTERM, SIGINT, server_stop) and the listener is closed, before
 * the running associations are waited for: the moment to tell load
 * balancers to send no new work (readiness 503). Set it before
 * server_run; NULL for none. */
void server_set_stop_hook(void (*fn)(void *ctx), void *ctx);

#endif
