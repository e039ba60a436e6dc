/* scu.h - the requesting side of the DIMSE-C services, used by the
 * command-line tools (pacsd echo/store/find/move/get) and by the server's
 * own C-MOVE and C-GET sub-operations.
 *
 * Each function runs one operation on an established association and
 * returns 0 once the final response arrived (its status in *status), or a
 * negative code on a transport or protocol error (the association is then
 * aborted). Message IDs are the caller's.
 */
#ifndef PACS_NET_SCU_H
#define PACS_NET_SCU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/dimse.h"
#include "net/ul.h"
#include "util/err.h"

#define SCU_UID_VERIFICATION "1.2.840.10008.1.1"
#define SCU_UID_PATIENT_ROOT_FIND "1.2.840.10008.5.1.4.1.2.1.1"
#define SCU_UID_PATIENT_ROOT_MOVE "1.2.840.10008.5.1.4.1.2.1.2"
#define SCU_UID_PATIENT_ROOT_GET "1.2.840.10008.5.1.4.1.2.1.3"
#define SCU_UID_STUDY_ROOT_FIND "1.2.840.10008.5.1.4.1.2.2.1"
#define SCU_UID_STUDY_ROOT_MOVE "1.2.840.10008.5.1.4.1.2.2.2"
#define SCU_UID_STUDY_ROOT_GET "1.2.840.10008.5.1.4.1.2.2.3"

int scu_echo(struct ul_assoc *a, uint16_t msg_id, uint16_t *status, struct pacs_err *err);

/* Where a C-STORE's data set comes from: `size` bytes, read in order. */
struct scu_source {
    int (*read)(void *ctx, void *p, size_t n, size_t *got, struct pacs_err *err);
    void *ctx;
    uint64_t size;
};

struct scu_store_rq {
    uint8_t pc_id;
    const char *sop_class, *sop_instance;
    uint16_t msg_id;
    const char *move_originator_aet; /* C-MOVE sub-operations, else NULL */
    uint16_t move_originator_id;
};

/* Sends a C-STORE-RQ with the data set from src and waits for the
 * response (into *rsp). While waiting, a C-CANCEL-RQ from the peer (C-GET
 * sub-operations share the association) sets *cancelled when cancelled is
 * non-NULL; any other command is a protocol error. */
int scu_store(struct ul_assoc *a, const struct scu_store_rq *rq, const struct scu_source *src,
              struct dimse_cmd *rsp, bool *cancelled, struct pacs_err *err);

/* C-FIND: sends the identifier (already encoded in the context's transfer
 * syntax) and calls on_match for each pending response's identifier; a
 * non-zero return from on_match sends C-CANCEL-RQ (the final status is
 * then 0xFE00 from a conforming SCP). */
int scu_find(struct ul_assoc *a, uint8_t pc_id, uint16_t msg_id, const void *ident, size_t n,
             int (*on_match)(void *ctx, const uint8_t *p, size_t n), void *ctx,
             uint16_t *status, struct pacs_err *err);

/* C-MOVE and C-GET: sends the identifier and reads responses until the
 * final one; on_progress sees every response (pending and final; its data
 * set, the Failed SOP Instance UID List, in p/n when present). For C-GET,
 * on_store handles each incoming C-STORE-RQ: it gets the command, the
 * context's transfer syntax and the data set streamed through
 * begin/write/end, and returns the status to answer. */
struct scu_get_store {
    /* Returns a context for the instance or NULL to refuse it (0xA700). */
    void *(*begin)(void *ctx, const struct dimse_cmd *rq, const char *ts_uid);
    int (*write)(void *inst, const uint8_t *p, size_t n);
    /* Ends the instance; ok is false when the data set was not received
     * whole. Returns the C-STORE status. */
    uint16_t (*end)(void *inst, bool ok);
    void *ctx;
};
int scu_retrieve(struct ul_assoc *a, uint8_t pc_id, uint16_t command_field, uint16_t msg_id,
                 const char *move_destination, const void *ident, size_t n,
                 int (*on_progress)(void *ctx, const struct dimse_cmd *rsp, const uint8_t *p,
                                    size_t n),
                 void *ctx, const struct scu_get_store *store, uint16_t *status,
                 struct pacs_err *err);

#endif
