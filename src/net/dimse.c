/* dimse.c - DIMSE messages over an association. See dimse.h. */
#include "net/dimse.h"

#include <stdio.h>
#include <string.h>

#include "util/limits.h"

/* A PDV that belongs to this message part on this context, or an error. */
static int check_pdv(const struct ul_event *ev, uint8_t pc_id, bool command,
                     struct pacs_err *err)
{
    if (ev->pdv.pc_id != pc_id)
        return pacs_err_set(err, PACS_EINVAL,
                            "PDV on presentation context %u in a message on context %u",
                            ev->pdv.pc_id, pc_id);
    if (ev->pdv.command != command)
        return pacs_err_set(err, PACS_EINVAL, "%s fragment inside a %s",
                            ev->pdv.command ? "command" : "data set",
                            command ? "command" : "data set");
    return 0;
}

int dimse_recv_command(struct ul_assoc *a, struct dimse_cmd *cmd, uint8_t *pc_id, bool *aborted,
                       struct pacs_err *err)
{
    struct dynbuf buf;
    struct ul_event ev;
    int rc;
    dynbuf_init(&buf, DIMSE_MAX_CMD_LEN);
    *aborted = false;
    *pc_id = 0;
    for (;;) {
        rc = ul_recv(a, &ev, err);
        if (rc)
            goto out;
        if (ev.type == UL_EV_RELEASE && buf.len == 0) {
            rc = 1;
            goto out;
        }
        if (ev.type != UL_EV_PDV) {
            *aborted = ev.type == UL_EV_ABORTED;
            if (!*aborted) {
                rc = pacs_err_set(err, PACS_EINVAL, "release requested inside a command");
                goto fatal;
            }
            rc = 1;
            goto out;
        }
        if (*pc_id == 0) {
            const struct ul_pc *pc = ul_pc_by_id(a, ev.pdv.pc_id);
            if (!pc || pc->result != PDU_PC_ACCEPTANCE) {
                rc = pacs_err_set(err, PACS_EINVAL, "PDV on presentation context %u, which "
                                  "was not accepted", ev.pdv.pc_id);
                goto fatal;
            }
            *pc_id = ev.pdv.pc_id;
            if (!ev.pdv.command) {
                rc = pacs_err_set(err, PACS_EINVAL, "data set fragment where a command "
                                  "was expected");
                goto fatal;
            }
        }
        if ((rc = check_pdv(&ev, *pc_id, true, err)))
            goto fatal;
        if (dynbuf_append(&buf, ev.pdv.data, ev.pdv.len)) {
            rc = pacs_err_set(err, PACS_ELIMIT, "command set longer than %u bytes",
                              DIMSE_MAX_CMD_LEN);
            goto fatal;
        }
        if (ev.pdv.last)
            break;
    }
    rc = dimse_cmd_decode(buf.data, buf.len, cmd, err);
    if (rc)
        goto fatal;
    goto out;
fatal:
    ul_abort(a);
out:
    dynbuf_free(&buf);
    return rc;
}

int dimse_recv_dataset(struct ul_assoc *a, uint8_t pc_id, uint64_t max,
                       int (*sink)(void *ctx, const uint8_t *p, size_t n), void *ctx,
                       bool *fatal, struct pacs_err *err)
{
    struct ul_event ev;
    uint64_t total = 0;
    int kept = 0; /* first error from the sink or the size limit */
    int rc;
    *fatal = false;
    for (;;) {
        rc = ul_recv(a, &ev, err);
        if (rc) {
            *fatal = true;
            return rc;
        }
        if (ev.type != UL_EV_PDV) {
            *fatal = true;
            if (ev.type == UL_EV_RELEASE)
                ul_abort(a);
            return pacs_err_set(err, PACS_EIO, "association %s inside a data set",
                                ev.type == UL_EV_ABORTED ? "aborted" : "released");
        }
        if ((rc = check_pdv(&ev, pc_id, false, err))) {
            *fatal = true;
            ul_abort(a);
            return rc;
        }
        total += ev.pdv.len;
        if (kept == 0 && max && total > max)
            kept = pacs_err_set(err, PACS_ELIMIT, "data set larger than %llu bytes",
                                (unsigned long long)max);
        if (kept == 0 && ev.pdv.len)
            kept = sink(ctx, ev.pdv.data, ev.pdv.len);
        if (ev.pdv.last)
            return kept;
    }
}

static int buf_sink(void *ctx, const uint8_t *p, size_t n)
{
    return dynbuf_append(ctx, p, n);
}

int dimse_recv_dataset_buf(struct ul_assoc *a, uint8_t pc_id, struct dynbuf *out, bool *fatal,
                           struct pacs_err *err)
{
    int rc = dimse_recv_dataset(a, pc_id, 0, buf_sink, out, fatal, err);
    if (rc && !*fatal && err && !err->msg[0])
        pacs_err_set(err, rc, "data set larger than %zu bytes", out->max);
    return rc;
}

int dimse_send_command(struct ul_assoc *a, uint8_t pc_id, const struct dimse_cmd *cmd,
                       struct pacs_err *err)
{
    struct dynbuf buf;
    dynbuf_init(&buf, DIMSE_MAX_CMD_LEN);
    int rc = dimse_cmd_encode(cmd, &buf, err);
    if (rc == 0)
        rc = ul_send(a, pc_id, true, buf.data, buf.len, true, err);
    dynbuf_free(&buf);
    return rc;
}

int dimse_send_dataset(struct ul_assoc *a, uint8_t pc_id, const void *p, size_t n,
                       struct pacs_err *err)
{
    return ul_send(a, pc_id, false, p, n, true, err);
}

bool dimse_peer_pending(struct ul_assoc *a)
{
    return ul_readable(a);
}
