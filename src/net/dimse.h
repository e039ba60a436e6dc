/* dimse.h - DIMSE messages over an association (PS3.7 section 9 and
 * annex E): a command set, then an optional data set, each carried in PDVs
 * on one presentation context.
 *
 * Commands are small and gathered whole; data sets are streamed to a sink
 * as their PDVs arrive (a C-STORE never sits whole in memory), or gathered
 * into a dynbuf when small (identifiers). Every fragment is checked: PDVs of
 * one message on one accepted context, command before data set, no command
 * fragment in the middle of a data set; a violation aborts the association
 * (PACS_EINVAL) since the stream can no longer be trusted.
 */
#ifndef PACS_NET_DIMSE_H
#define PACS_NET_DIMSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/dimse_cmd.h"
#include "net/ul.h"
#include "util/dynbuf.h"
#include "util/err.h"

/* Receives the next command. Returns 0 with *cmd and *pc_id; 1 when the
 * peer asked to release (nothing else pending) or aborted (*aborted set);
 * negative on error (the association is then aborted). */
int dimse_recv_command(struct ul_assoc *a, struct dimse_cmd *cmd, uint8_t *pc_id, bool *aborted,
                       struct pacs_err *err);

/* Receives the data set announced by the last command on pc_id, giving each
 * fragment to sink (which returns 0, or a negative code to stop keeping
 * the data: the rest is then read and dropped, and that code is returned
 * once the data set ended, so the association stays usable). More than max
 * bytes (0: no limit) is PACS_ELIMIT, also after reading the rest. A
 * transport or protocol error is returned as soon as it happens, with
 * *fatal set. */
int dimse_recv_dataset(struct ul_assoc *a, uint8_t pc_id, uint64_t max,
                       int (*sink)(void *ctx, const uint8_t *p, size_t n), void *ctx,
                       bool *fatal, struct pacs_err *err);
/* As dimse_recv_dataset, gathering into out (whose own max applies). */
int dimse_recv_dataset_buf(struct ul_assoc *a, uint8_t pc_id, struct dynbuf *out, bool *fatal,
                           struct pacs_err *err);

/* Sends a command (and nothing else). */
int dimse_send_command(struct ul_assoc *a, uint8_t pc_id, const struct dimse_cmd *cmd,
                       struct pacs_err *err);
/* Sends a data set held in memory. */
int dimse_send_dataset(struct ul_assoc *a, uint8_t pc_id, const void *p, size_t n,
                       struct pacs_err *err);

/* True when the peer has sent something not yet read (a C-CANCEL during a
 * C-FIND, say); never blocks. */
bool dimse_peer_pending(struct ul_assoc *a);

#endif
