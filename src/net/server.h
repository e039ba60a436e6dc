/* server.h - the DICOM listener: accepts TCP connections, runs one thread
 * per association (ul_accept, then scp_serve), enforces the association
 * limit (A-ASSOCIATE-RJ "local limit exceeded" beyond it), and stops
 * cleanly on SIGTERM/SIGINT.
 *
 * Stopping: the listener closes at once; running associations get
 * cfg->dicom.shutdown_timeout seconds to finish; the rest are then cut
 * (their in-flight instances are not acknowledged, so nothing acknowledged
 * is lost). server_run returns when every association thread has ended.
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

#endif
