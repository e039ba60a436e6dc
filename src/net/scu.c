/* scu.c - the requesting side of the DIMSE-C services. See scu.h. */
#include "net/scu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCU_CHUNK (256u * 1024)

static void set_str(char *dst, size_t size, const char *s)
{
    snprintf(dst, size, "%s", s ? s : "");
}

/* Waits for the response to message msg_id of type rsp_field. */
static int await_response(struct ul_assoc *a, uint16_t rsp_field, uint16_t msg_id,
                          struct dimse_cmd *rsp, uint8_t *pc_id, bool *cancelled,
                          struct pacs_err *err)
{
    for (;;) {
        bool aborted;
        int rc = dimse_recv_command(a, rsp, pc_id, &aborted, err);
        if (rc == 1)
            return pacs_err_set(err, PACS_EIO, "peer %s while awaiting %s",
                                aborted ? "aborted" : "released",
                                dimse_command_name(rsp_field));
        if (rc)
            return rc;
        if (rsp->command_field == DIMSE_C_CANCEL_RQ && cancelled) {
            *cancelled = true;
            continue;
        }
        if (rsp->command_field != rsp_field || rsp->message_id_responded != msg_id) {
            ul_abort(a);
            return pacs_err_set(err, PACS_EINVAL, "expected %s for message %u, got %s (%u)",
                                dimse_command_name(rsp_field), msg_id,
                                dimse_command_name(rsp->command_field),
                                rsp->message_id_responded);
        }
        return 0;
    }
}

int scu_echo(struct ul_assoc *a, uint16_t msg_id, uint16_t *status, struct pacs_err *err)
{
    const struct ul_pc *pc = ul_pc_find(a, SCU_UID_VERIFICATION, NULL);
    if (!pc)
        return pacs_err_set(err, PACS_EUNSUPPORTED, "Verification was not accepted");
    struct dimse_cmd c = {.command_field = DIMSE_C_ECHO_RQ, .message_id = msg_id,
                          .dataset_type = DIMSE_DATASET_NONE,
                          .present = DIMSE_HAS_AFFECTED_SOP_CLASS | DIMSE_HAS_MESSAGE_ID};
    set_str(c.affected_sop_class, sizeof c.affected_sop_class, SCU_UID_VERIFICATION);
    int rc = dimse_send_command(a, pc->id, &c, err);
    if (rc)
        return rc;
    struct dimse_cmd rsp;
    uint8_t id;
    rc = await_response(a, DIMSE_C_ECHO_RSP, msg_id, &rsp, &id, NULL, err);
    if (rc == 0)
        *status = rsp.status;
    return rc;
}

int scu_store(struct ul_assoc *a, const struct scu_store_rq *rq, const struct scu_source *src,
              struct dimse_cmd *rsp, bool *cancelled, struct pacs_err *err)
{
    struct dimse_cmd c = {.command_field = DIMSE_C_STORE_RQ, .message_id = rq->msg_id,
                          .priority = 0, .dataset_type = 0,
                          .present = DIMSE_HAS_AFFECTED_SOP_CLASS | DIMSE_HAS_MESSAGE_ID |
                                     DIMSE_HAS_PRIORITY | DIMSE_HAS_AFFECTED_SOP_INSTANCE};
    set_str(c.affected_sop_class, sizeof c.affected_sop_class, rq->sop_class);
    set_str(c.affected_sop_instance, sizeof c.affected_sop_instance, rq->sop_instance);
    if (rq->move_originator_aet) {
        set_str(c.move_originator_aet, sizeof c.move_originator_aet, rq->move_originator_aet);
        c.move_originator_id = rq->move_originator_id;
        c.present |= DIMSE_HAS_MOVE_ORIGINATOR_AET | DIMSE_HAS_MOVE_ORIGINATOR_ID;
    }
    int rc = dimse_send_command(a, rq->pc_id, &c, err);
    if (rc)
        return rc;
    uint8_t *buf = malloc(SCU_CHUNK);
    if (!buf) {
        ul_abort(a);
        return pacs_err_set(err, PACS_ENOMEM, "out of memory");
    }
    uint64_t left = src->size;
    do {
        size_t want = left < SCU_CHUNK ? (size_t)left : SCU_CHUNK, got = 0;
        while (got < want) {
            size_t k = 0;
            rc = src->read(src->ctx, buf + got, want - got, &k, err);
            if (rc == 0 && k == 0)
                rc = pacs_err_set(err, PACS_ETRUNC, "data set ended %llu bytes early",
                                  (unsigned long long)(left - got));
            if (rc)
                break;
            got += k;
        }
        if (rc) {
            /* The peer has part of a data set: only an abort ends that. */
            ul_abort(a);
            break;
        }
        left -= want;
        rc = ul_send(a, rq->pc_id, false, buf, want, left == 0, err);
    } while (rc == 0 && left > 0);
    free(buf);
    if (rc)
        return rc;
    uint8_t id;
    return await_response(a, DIMSE_C_STORE_RSP, rq->msg_id, rsp, &id, cancelled, err);
}

static int send_query(struct ul_assoc *a, uint8_t pc_id, uint16_t field, uint16_t msg_id,
                      const char *move_destination, const void *ident, size_t n,
                      struct pacs_err *err)
{
    const struct ul_pc *pc = ul_pc_by_id(a, pc_id);
    if (!pc)
        return pacs_err_set(err, PACS_EINVAL, "no presentation context %u", pc_id);
    struct dimse_cmd c = {.command_field = field, .message_id = msg_id, .priority = 0,
                          .dataset_type = 0,
                          .present = DIMSE_HAS_AFFECTED_SOP_CLASS | DIMSE_HAS_MESSAGE_ID |
                                     DIMSE_HAS_PRIORITY};
    set_str(c.affected_sop_class, sizeof c.affected_sop_class, pc->abstract_syntax);
    if (move_destination) {
        set_str(c.move_destination, sizeof c.move_destination, move_destination);
        c.present |= DIMSE_HAS_MOVE_DESTINATION;
    }
    int rc = dimse_send_command(a, pc_id, &c, err);
    if (rc == 0)
        rc = dimse_send_dataset(a, pc_id, ident, n, err);
    return rc;
}

static int send_cancel(struct ul_assoc *a, uint8_t pc_id, uint16_t msg_id, struct pacs_err *err)
{
    struct dimse_cmd c = {.command_field = DIMSE_C_CANCEL_RQ, .message_id_responded = msg_id,
                          .dataset_type = DIMSE_DATASET_NONE,
                          .present = DIMSE_HAS_MESSAGE_ID_RESPONDED};
    return dimse_send_command(a, pc_id, &c, err);
}

int scu_find(struct ul_assoc *a, uint8_t pc_id, uint16_t msg_id, const void *ident, size_t n,
             int (*on_match)(void *ctx, const uint8_t *p, size_t n), void *ctx,
             uint16_t *status, struct pacs_err *err)
{
    struct dynbuf ds;
    dynbuf_init(&ds, 64u * 1024 * 1024);
    bool cancel_sent = false;
    int rc = send_query(a, pc_id, DIMSE_C_FIND_RQ, msg_id, NULL, ident, n, err);
    while (rc == 0) {
        struct dimse_cmd rsp;
        uint8_t id;
        rc = await_response(a, DIMSE_C_FIND_RSP, msg_id, &rsp, &id, NULL, err);
        if (rc)
            break;
        dynbuf_reset(&ds);
        if (rsp.dataset_type != DIMSE_DATASET_NONE) {
            bool fatal;
            rc = dimse_recv_dataset_buf(a, id, &ds, &fatal, err);
            if (rc)
                break;
        }
        if (dimse_status_class(rsp.status) != DIMSE_PENDING) {
            *status = rsp.status;
            break;
        }
        if (!cancel_sent && on_match && on_match(ctx, ds.data, ds.len)) {
            cancel_sent = true;
            rc = send_cancel(a, pc_id, msg_id, err);
        }
    }
    dynbuf_free(&ds);
    return rc;
}

static int drop_bytes(void *ctx, const uint8_t *p, size_t n)
{
    (void)ctx;
    (void)p;
    (void)n;
    return 0;
}

/* An incoming C-STORE-RQ during a C-GET (or, unasked, during anything
 * else: refused with 0xA700 once its data set has been read). */
static int get_store(struct ul_assoc *a, const struct dimse_cmd *rq, uint8_t pc_id,
                     const struct scu_get_store *store, struct pacs_err *err)
{
    const struct ul_pc *pc = ul_pc_by_id(a, pc_id);
    void *inst = store ? store->begin(store->ctx, rq, pc ? pc->ts : "") : NULL;
    bool fatal = false;
    int rc = 0;
    uint16_t status = 0xA700;
    if (rq->dataset_type != DIMSE_DATASET_NONE)
        rc = dimse_recv_dataset(a, pc_id, 0, inst ? store->write : drop_bytes, inst, &fatal,
                                err);
    if (inst)
        status = store->end(inst, rc == 0);
    if (fatal)
        return rc;
    struct dimse_cmd c = {.command_field = DIMSE_C_STORE_RSP,
                          .message_id_responded = rq->message_id,
                          .dataset_type = DIMSE_DATASET_NONE, .status = status,
                          .present = DIMSE_HAS_AFFECTED_SOP_CLASS |
                                     DIMSE_HAS_MESSAGE_ID_RESPONDED | DIMSE_HAS_STATUS |
                                     DIMSE_HAS_AFFECTED_SOP_INSTANCE};
    set_str(c.affected_sop_class, sizeof c.affected_sop_class, rq->affected_sop_class);
    set_str(c.affected_sop_instance, sizeof c.affected_sop_instance, rq->affected_sop_instance);
    return dimse_send_command(a, pc_id, &c, err);
}

int scu_retrieve(struct ul_assoc *a, uint8_t pc_id, uint16_t command_field, uint16_t msg_id,
                 const char *move_destination, const void *ident, size_t n,
                 int (*on_progress)(void *ctx, const struct dimse_cmd *rsp, const uint8_t *p,
                                    size_t n),
                 void *ctx, const struct scu_get_store *store, uint16_t *status,
                 struct pacs_err *err)
{
    uint16_t rsp_field = command_field | 0x8000;
    struct dynbuf ds;
    dynbuf_init(&ds, 64u * 1024 * 1024);
    int rc = send_query(a, pc_id, command_field, msg_id, move_destination, ident, n, err);
    bool cancel_sent = false;
    while (rc == 0) {
        struct dimse_cmd rsp;
        uint8_t id;
        bool aborted;
        rc = dimse_recv_command(a, &rsp, &id, &aborted, err);
        if (rc == 1) {
            rc = pacs_err_set(err, PACS_EIO, "peer %s during %s",
                              aborted ? "aborted" : "released", dimse_command_name(command_field));
            break;
        }
        if (rc)
            break;
        if (rsp.command_field == DIMSE_C_STORE_RQ) {
            rc = get_store(a, &rsp, id, store, err);
            continue;
        }
        if (rsp.command_field != rsp_field || rsp.message_id_responded != msg_id) {
            ul_abort(a);
            rc = pacs_err_set(err, PACS_EINVAL, "unexpected %s during %s",
                              dimse_command_name(rsp.command_field),
                              dimse_command_name(command_field));
            break;
        }
        dynbuf_reset(&ds);
        if (rsp.dataset_type != DIMSE_DATASET_NONE) {
            bool fatal;
            rc = dimse_recv_dataset_buf(a, id, &ds, &fatal, err);
            if (rc)
                break;
        }
        bool final = dimse_status_class(rsp.status) != DIMSE_PENDING;
        if (on_progress && on_progress(ctx, &rsp, ds.data, ds.len) && !final && !cancel_sent) {
            cancel_sent = true;
            rc = send_cancel(a, pc_id, msg_id, err);
        }
        if (final) {
            *status = rsp.status;
            break;
        }
    }
    dynbuf_free(&ds);
    return rc;
}
