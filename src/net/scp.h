/* scp.h - the DIMSE-C services pacsd provides on an accepted association:
 * C-ECHO, C-STORE, C-FIND, C-MOVE and C-GET (PS3.4 annexes A, B, C),
 * over the archive's one ingest, query and retrieve paths.
 *
 * One thread runs scp_serve() per association; it returns when the peer
 * releases or aborts, or on a protocol error (after aborting). Statuses:
 * - C-STORE: whatever ingest says (0x0000, 0xA700, 0xA900, 0xC000, 0x0111);
 *   success is sent only after the instance is durable.
 * - C-FIND: 0xFF00 per match, then 0x0000, 0xFE00 after C-CANCEL, 0xA900
 *   for an identifier that does not fit the model, 0xC000 when it cannot
 *   be parsed, 0xA700 for an internal error.
 * - C-MOVE / C-GET: 0xFF00 after each sub-operation with the counts, then
 *   0x0000, 0xB000 (some failed), 0xA702 (all failed), 0xFE00 (cancelled),
 *   0xA801 (unknown move destination), with the Failed SOP Instance UID
 *   List when anything failed.
 */
#ifndef PACS_NET_SCP_H
#define PACS_NET_SCP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "archive/archive.h"
#include "net/ul.h"
#include "util/config.h"

struct scp_env {
    struct archive *ar;
    const struct pacs_config *cfg;
    atomic_uint_fast64_t *next_assoc_id; /* numbers sub-associations */
};

/* struct ul_acceptor callbacks (ctx = struct scp_env). */
int scp_choose_ts(void *ctx, const struct pdu_pc *pc, uint8_t *result);
bool scp_grant_scp_role(void *ctx, const char *sop_class);

/* Serves the association until it ends; frees nothing (the caller owns a). */
void scp_serve(struct ul_assoc *a, const struct scp_env *env);

#endif
