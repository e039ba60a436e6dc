/* scp.c - the DIMSE-C services pacsd provides. See scp.h. */
#include "net/scp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "archive/ingest.h"
#include "archive/query.h"
#include "archive/retrieve.h"
#include "dicom/dict.h"
#include "dicom/reader.h"
#include "dicom/writer.h"
#include "net/dimse.h"
#include "net/scu.h"
#include "util/limits.h"
#include "util/log.h"
#include "util/metrics.h"

/* Identifiers are small; this bounds what a C-FIND/MOVE/GET may send. */
#define SCP_MAX_IDENTIFIER PACS_MAX_IDENTIFIER_LEN

#define ST_SUCCESS 0x0000
#define ST_PENDING 0xFF00
#define ST_CANCEL 0xFE00
#define ST_OUT_OF_RESOURCES 0xA700
#define ST_SUBOPS_REFUSED 0xA702       /* unable to perform sub-operations */
#define ST_MOVE_DEST_UNKNOWN 0xA801
#define ST_IDENT_MISMATCH 0xA900
#define ST_CANNOT_UNDERSTAND 0xC000
#define ST_SUBOPS_WARNING 0xB000       /* one or more sub-operations failed */
#define ST_SOP_CLASS_NOT_SUPPORTED 0x0122

static const char *const dataset_syntaxes[] = {
    DCM_UID_IMPLICIT_LE, DCM_UID_EXPLICIT_LE, DCM_UID_EXPLICIT_BE, DCM_UID_DEFLATED_LE,
};

enum service { SVC_NONE, SVC_ECHO, SVC_FIND, SVC_MOVE, SVC_GET };

struct qr_class {
    const char *uid;
    enum service svc;
    enum query_model model;
};
static const struct qr_class qr_classes[] = {
    {SCU_UID_VERIFICATION, SVC_ECHO, QUERY_STUDY_ROOT},
    {SCU_UID_PATIENT_ROOT_FIND, SVC_FIND, QUERY_PATIENT_ROOT},
    {SCU_UID_STUDY_ROOT_FIND, SVC_FIND, QUERY_STUDY_ROOT},
    {SCU_UID_PATIENT_ROOT_MOVE, SVC_MOVE, QUERY_PATIENT_ROOT},
    {SCU_UID_STUDY_ROOT_MOVE, SVC_MOVE, QUERY_STUDY_ROOT},
    {SCU_UID_PATIENT_ROOT_GET, SVC_GET, QUERY_PATIENT_ROOT},
    {SCU_UID_STUDY_ROOT_GET, SVC_GET, QUERY_STUDY_ROOT},
};

static const struct qr_class *qr_class(const char *uid)
{
    for (size_t i = 0; i < sizeof qr_classes / sizeof qr_classes[0]; i++)
        if (strcmp(qr_classes[i].uid, uid) == 0)
            return &qr_classes[i];
    return NULL;
}

int scp_choose_ts(void *ctx, const struct pdu_pc *pc, uint8_t *result)
{
    const struct scp_env *env = ctx;
    if (qr_class(pc->abstract_syntax)) {
        /* Commands and identifiers: any syntax the codec reads, in the
         * requestor's order of preference. */
        for (int i = 0; i < pc->n_ts; i++)
            for (size_t j = 0; j < sizeof dataset_syntaxes / sizeof dataset_syntaxes[0]; j++)
                if (strcmp(pc->ts[i], dataset_syntaxes[j]) == 0)
                    return i;
        *result = PDU_PC_TRANSFER_SYNTAXES_NOT_SUPPORTED;
        return -1;
    }
    if (ingest_class_accepted(env->cfg, pc->abstract_syntax)) {
        /* Stored as sent, never transcoded: the requestor's first choice
         * among the syntaxes the standard defines. A private or unknown one
         * is passed over, so the requestor falls back to one we can read. */
        for (int i = 0; i < pc->n_ts; i++)
            if (ingest_ts_accepted(pc->ts[i]))
                return i;
        *result = PDU_PC_TRANSFER_SYNTAXES_NOT_SUPPORTED;
        return -1;
    }
    *result = PDU_PC_ABSTRACT_SYNTAX_NOT_SUPPORTED;
    return -1;
}

bool scp_grant_scp_role(void *ctx, const char *sop_class)
{
    const struct scp_env *env = ctx;
    return ingest_class_accepted(env->cfg, sop_class);
}

/* --- responses ----------------------------------------------------------- */

struct counts {
    uint16_t remaining, completed, failed, warning;
    bool with_counts, with_remaining;
};

/* Counts an operation in pacsd_dimse_operations_total when its final
 * (not pending) status is sent. */
static void count_operation(uint16_t command_field, uint16_t status)
{
    const char *op;
    switch (command_field) {
    case DIMSE_C_ECHO_RQ: op = "C-ECHO"; break;
    case DIMSE_C_STORE_RQ: op = "C-STORE"; break;
    case DIMSE_C_FIND_RQ: op = "C-FIND"; break;
    case DIMSE_C_MOVE_RQ: op = "C-MOVE"; break;
    case DIMSE_C_GET_RQ: op = "C-GET"; break;
    default: return;
    }
    enum dimse_status_class c = dimse_status_class(status);
    if (c == DIMSE_PENDING)
        return;
    metric_inc(&metric_dimse_operations,
               (const char *const[]){op, dimse_status_class_name(c)});
}

static int send_rsp(struct ul_assoc *a, uint8_t pc_id, const struct dimse_cmd *rq,
                    uint16_t status, const char *comment, const struct counts *n,
                    const struct dynbuf *ds, struct pacs_err *err)
{
    count_operation(rq->command_field, status);
    const struct ul_pc *pc = ul_pc_by_id(a, pc_id);
    struct dimse_cmd c = {.command_field = rq->command_field | 0x8000,
                          .message_id_responded = rq->message_id,
                          .dataset_type = ds && ds->len ? 0 : DIMSE_DATASET_NONE,
                          .status = status,
                          .present = DIMSE_HAS_AFFECTED_SOP_CLASS |
                                     DIMSE_HAS_MESSAGE_ID_RESPONDED | DIMSE_HAS_STATUS};
    snprintf(c.affected_sop_class, sizeof c.affected_sop_class, "%s",
             rq->present & DIMSE_HAS_AFFECTED_SOP_CLASS ? rq->affected_sop_class
                                                        : pc->abstract_syntax);
    if (rq->command_field == DIMSE_C_STORE_RQ) {
        snprintf(c.affected_sop_instance, sizeof c.affected_sop_instance, "%s",
                 rq->affected_sop_instance);
        c.present |= DIMSE_HAS_AFFECTED_SOP_INSTANCE;
    }
    if (comment && *comment && dimse_status_class(status) == DIMSE_FAILURE) {
        /* Error Comment is LO: 64 characters, no backslash. */
        size_t i = 0;
        for (; comment[i] && i < sizeof c.error_comment - 1; i++)
            c.error_comment[i] = comment[i] == '\\' ? '/' : comment[i];
        c.error_comment[i] = 0;
        c.present |= DIMSE_HAS_ERROR_COMMENT;
    }
    if (n && n->with_counts) {
        c.n_completed = n->completed;
        c.n_failed = n->failed;
        c.n_warning = n->warning;
        c.present |= DIMSE_HAS_COMPLETED | DIMSE_HAS_FAILED | DIMSE_HAS_WARNING;
        if (n->with_remaining) {
            c.n_remaining = n->remaining;
            c.present |= DIMSE_HAS_REMAINING;
        }
    }
    int rc = dimse_send_command(a, pc_id, &c, err);
    if (rc == 0 && ds && ds->len)
        rc = dimse_send_dataset(a, pc_id, ds->data, ds->len, err);
    return rc;
}

/* Reads the identifier of a C-FIND/MOVE/GET into *ds. 0, or a DIMSE
 * status (> 0) to answer with, or negative when the association is lost. */
static int recv_identifier(struct ul_assoc *a, uint8_t pc_id, const struct dimse_cmd *cmd,
                           struct dynbuf *buf, struct dcm_file *f, struct pacs_err *err)
{
    if (cmd->dataset_type == DIMSE_DATASET_NONE) {
        pacs_err_set(err, PACS_EINVAL, "%s without an identifier",
                     dimse_command_name(cmd->command_field));
        return ST_IDENT_MISMATCH;
    }
    bool fatal;
    int rc = dimse_recv_dataset_buf(a, pc_id, buf, &fatal, err);
    if (fatal)
        return rc;
    if (rc)
        return ST_OUT_OF_RESOURCES;
    const struct ul_pc *pc = ul_pc_by_id(a, pc_id);
    struct dcm_read_opts o = {.ts_uid = pc->ts, .copy_values = true};
    if (dcm_read_part10(buf->data, buf->len, &o, f, err))
        return ST_CANNOT_UNDERSTAND;
    return 0;
}

static int encode(const struct dcm_ds *ds, const char *ts, struct dynbuf *out,
                  struct pacs_err *err)
{
    dynbuf_reset(out);
    struct dcm_sink sink = dcm_sink_dynbuf(out);
    return dcm_write_dataset(ds, ts, &sink, err);
}

/* --- C-ECHO, C-STORE ------------------------------------------------------ */

static int do_echo(struct ul_assoc *a, uint8_t pc_id, const struct dimse_cmd *cmd)
{
    struct pacs_err err = {0};
    int rc = send_rsp(a, pc_id, cmd, ST_SUCCESS, NULL, NULL, NULL, &err);
    if (rc)
        log_warn("C-ECHO response not sent: %s", err.msg);
    return rc;
}

static int ingest_sink(void *ctx, const uint8_t *p, size_t n)
{
    return ingest_feed(ctx, p, n, NULL);
}

static int drop_sink(void *ctx, const uint8_t *p, size_t n)
{
    (void)ctx;
    (void)p;
    (void)n;
    return 0;
}

static int do_store(struct ul_assoc *a, const struct scp_env *env, uint8_t pc_id,
                    const struct dimse_cmd *cmd)
{
    const struct ul_pc *pc = ul_pc_by_id(a, pc_id);
    struct pacs_err err = {0};
    struct ingest_result res = {0};
    struct ingest *in = NULL;
    bool fatal = false;
    struct ingest_source src = {
        .ts_uid = pc->ts,
        .sop_class_uid = cmd->affected_sop_class,
        .sop_instance_uid = cmd->affected_sop_instance,
        .remote_aet = ul_calling_aet(a),
        .max_size = env->cfg->dicom.max_message_size,
    };
    if (cmd->dataset_type == DIMSE_DATASET_NONE) {
        res.status = ST_IDENT_MISMATCH;
        snprintf(res.message, sizeof res.message, "C-STORE-RQ without a data set");
    } else if (strcmp(cmd->affected_sop_class, pc->abstract_syntax) != 0 ||
               !ingest_class_accepted(env->cfg, cmd->affected_sop_class)) {
        res.status = ST_SOP_CLASS_NOT_SUPPORTED;
        snprintf(res.message, sizeof res.message, "SOP class %s is not accepted on this "
                 "presentation context", cmd->affected_sop_class);
    } else if (ingest_begin(env->ar, &src, &in, &err)) {
        res.status = ST_OUT_OF_RESOURCES;
        snprintf(res.message, sizeof res.message, "%s", err.msg);
    }
    if (cmd->dataset_type != DIMSE_DATASET_NONE) {
        int rc = dimse_recv_dataset(a, pc_id, in ? 0 : src.max_size, in ? ingest_sink : drop_sink,
                                    in, &fatal, &err);
        (void)rc; /* ingest remembers what went wrong; finish reports it */
        if (fatal) {
            if (in)
                ingest_abort(in);
            log_warn("C-STORE %s: %s", cmd->affected_sop_instance, err.msg);
            return -1;
        }
    }
    if (in) {
        /* Returns only once the instance is durable (or failed). */
        ingest_finish(in, &res, &err);
        if (res.status != ST_SUCCESS && !res.message[0])
            snprintf(res.message, sizeof res.message, "%s", err.msg);
    }
    if (dimse_status_class(res.status) == DIMSE_FAILURE)
        log_warn("C-STORE %s from %s: status 0x%04X: %s", cmd->affected_sop_instance,
                 ul_calling_aet(a), res.status, res.message);
    else
        log_debug("C-STORE %s stored (%llu bytes)", cmd->affected_sop_instance,
                  (unsigned long long)res.size);
    int rc = send_rsp(a, pc_id, cmd, res.status, res.message, NULL, NULL, &err);
    if (rc)
        log_warn("C-STORE response not sent: %s", err.msg);
    return rc;
}

/* --- C-FIND -------------------------------------------------------------- */

struct find_ctx {
    struct ul_assoc *a;
    uint8_t pc_id;
    const struct dimse_cmd *cmd;
    const char *ts;
    unsigned limit, sent;
    bool cancelled, limited;
    int fatal;
    struct dynbuf buf;
    struct pacs_err err;
};

/* A C-CANCEL for message msg_id, read if the peer sent something. 1 if
 * cancelled, 0 if nothing came, negative on a protocol error. */
static int poll_cancel(struct ul_assoc *a, uint16_t msg_id, struct pacs_err *err)
{
    if (!dimse_peer_pending(a))
        return 0;
    struct dimse_cmd c;
    uint8_t id;
    bool aborted;
    int rc = dimse_recv_command(a, &c, &id, &aborted, err);
    if (rc == 1)
        return pacs_err_set(err, PACS_EIO, "peer %s during an operation",
                            aborted ? "aborted" : "released");
    if (rc)
        return rc;
    if (c.command_field != DIMSE_C_CANCEL_RQ) {
        ul_abort(a);
        return pacs_err_set(err, PACS_EINVAL, "%s while an operation is running "
                            "(asynchronous operations were not negotiated)",
                            dimse_command_name(c.command_field));
    }
    return c.message_id_responded == msg_id ? 1 : 0;
}

static int find_answer(void *ctx, struct dcm_ds *answer)
{
    struct find_ctx *f = ctx;
    int rc = encode(answer, f->ts, &f->buf, &f->err);
    dcm_ds_free(answer);
    if (rc) {
        f->fatal = 0;
        return rc;
    }
    rc = send_rsp(f->a, f->pc_id, f->cmd, ST_PENDING, NULL, NULL, &f->buf, &f->err);
    if (rc) {
        f->fatal = rc;
        return rc;
    }
    f->sent++;
    rc = poll_cancel(f->a, f->cmd->message_id, &f->err);
    if (rc < 0) {
        f->fatal = rc;
        return rc;
    }
    if (rc == 1) {
        f->cancelled = true;
        return 1;
    }
    if (f->limit && f->sent >= f->limit) {
        f->limited = true;
        return 2;
    }
    return 0;
}

static int do_find(struct ul_assoc *a, const struct scp_env *env, uint8_t pc_id,
                   const struct dimse_cmd *cmd, const struct qr_class *qc)
{
    struct find_ctx f = {.a = a, .pc_id = pc_id, .cmd = cmd,
                         .ts = ul_pc_by_id(a, pc_id)->ts,
                         .limit = env->cfg->dicom.find_limit};
    struct dynbuf in;
    struct dcm_file id = {0};
    struct query *q = NULL;
    uint16_t status = ST_SUCCESS;
    int rc;
    dynbuf_init(&in, SCP_MAX_IDENTIFIER);
    dynbuf_init(&f.buf, 0);
    rc = recv_identifier(a, pc_id, cmd, &in, &id, &f.err);
    if (rc < 0)
        goto out;
    if (rc > 0) {
        status = (uint16_t)rc;
        goto answer;
    }
    rc = query_from_identifier(id.ds, qc->model, &q, &f.err);
    if (rc) {
        status = rc == PACS_EINVAL ? ST_IDENT_MISMATCH : ST_CANNOT_UNDERSTAND;
        goto answer;
    }
    rc = query_run(env->ar, q, find_answer, &f, &f.err);
    if (f.fatal) {
        rc = f.fatal;
        goto out;
    }
    if (f.cancelled)
        status = ST_CANCEL;
    else if (rc < 0)
        status = ST_OUT_OF_RESOURCES;
    if (f.limited)
        log_warn("C-FIND stopped at the configured limit of %u matches", f.limit);
answer:
    if (dimse_status_class(status) == DIMSE_FAILURE)
        log_warn("C-FIND from %s: status 0x%04X: %s", ul_calling_aet(a), status, f.err.msg);
    else
        log_debug("C-FIND: %u matches", f.sent);
    rc = send_rsp(a, pc_id, cmd, status, f.err.msg, NULL, NULL, &f.err);
out:
    query_free(q);
    dcm_file_free(&id);
    dynbuf_free(&in);
    dynbuf_free(&f.buf);
    return rc < 0 ? rc : 0;
}

/* --- C-MOVE and C-GET ------------------------------------------------------ */

/* What a sub-operation sends: the stored data set streamed from its
 * blob, or, when the peer took another native syntax, a converted copy. */
struct source {
    const struct retrieve_item *item;
    struct archive *ar;
    struct retrieve_reader *r;
    struct dynbuf mem;
    size_t at;
};

static int source_open(struct source *s, const char *ts, uint64_t *size, struct pacs_err *err)
{
    const struct retrieve_item *it = s->item;
    dynbuf_init(&s->mem, 0);
    if (strcmp(ts, it->transfer_syntax) == 0) {
        *size = it->size - it->ds_offset;
        return retrieve_open(s->ar, it, it->ds_offset, &s->r, err);
    }
    int rc = retrieve_transcode(s->ar, it, ts, &s->mem, err);
    *size = s->mem.len;
    return rc;
}

static int read_src(void *ctx, void *p, size_t n, size_t *got, struct pacs_err *err)
{
    struct source *s = ctx;
    if (s->r)
        return retrieve_read(s->r, p, n, got, err);
    *got = n < s->mem.len - s->at ? n : s->mem.len - s->at;
    memcpy(p, s->mem.data + s->at, *got);
    s->at += *got;
    return 0;
}

static void source_close(struct source *s)
{
    retrieve_close(s->r);
    dynbuf_free(&s->mem);
}

/* The context to send an instance on: one in its stored syntax, else one
 * in a native syntax it can be converted to. C-GET needs contexts whose
 * SCP role the requestor was granted. */
static const struct ul_pc *send_context(const struct ul_assoc *a, const struct retrieve_item *it,
                                        bool is_get)
{
    size_t n;
    const struct ul_pc *pcs = ul_pcs(a, &n), *alt = NULL;
    for (size_t i = 0; i < n; i++) {
        const struct ul_pc *pc = &pcs[i];
        if (pc->result != PDU_PC_ACCEPTANCE || (is_get && !pc->requestor_scp) ||
            strcmp(pc->abstract_syntax, it->sop_class_uid))
            continue;
        if (strcmp(pc->ts, it->transfer_syntax) == 0)
            return pc;
        if (!alt && retrieve_can_transcode(it->transfer_syntax, pc->ts))
            alt = pc;
    }
    return alt;
}

/* Opens the sub-association of a C-MOVE: one context per distinct pair
 * of SOP class and stored transfer syntax, so that what is stored goes out
 * unchanged; and, for a class with native data, one more context offering
 * Explicit and Implicit VR Little Endian for an acceptor that takes neither
 * stored syntax (retrieve_transcode converts to them). */
static int open_move_target(const struct scp_env *env, const struct config_modality *m,
                            const struct retrieve_list *l, struct ul_assoc **out,
                            struct pacs_err *err)
{
    static const char *const fallback[] = {DCM_UID_EXPLICIT_LE, DCM_UID_IMPLICIT_LE};
    struct ul_proposal *p = calloc(PDU_MAX_PCS, sizeof *p);
    const char **ts = calloc(PDU_MAX_PCS, sizeof *ts);
    size_t n = 0;
    int rc;
    if (!p || !ts) {
        rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < l->n && n < PDU_MAX_PCS; i++) {
        const struct retrieve_item *it = &l->items[i];
        bool have_pair = false, have_fallback = false;
        for (size_t j = 0; j < n; j++) {
            if (strcmp(p[j].abstract_syntax, it->sop_class_uid))
                continue;
            have_pair |= p[j].ts == &ts[j] && !strcmp(ts[j], it->transfer_syntax);
            have_fallback |= p[j].ts == fallback;
        }
        if (!have_pair) {
            ts[n] = it->transfer_syntax;
            p[n] = (struct ul_proposal){.abstract_syntax = it->sop_class_uid, .ts = &ts[n],
                                        .n_ts = 1};
            n++;
        }
        if (!have_fallback && n < PDU_MAX_PCS &&
            retrieve_can_transcode(it->transfer_syntax, DCM_UID_EXPLICIT_LE))
            p[n++] = (struct ul_proposal){.abstract_syntax = it->sop_class_uid, .ts = fallback,
                                          .n_ts = 2};
    }
    const struct pacs_config *cfg = env->cfg;
    struct ul_request rq = {
        .calling_aet = cfg->dicom.aet,
        .called_aet = m->aet,
        .host = m->host,
        .port = m->port,
        .max_pdu = cfg->dicom.max_pdu_length,
        .to = {.artim_ms = cfg->dicom.artim_timeout * 1000u,
               .idle_ms = cfg->dicom.idle_timeout * 1000u,
               .read_ms = cfg->dicom.read_timeout * 1000u,
               .write_ms = cfg->dicom.write_timeout * 1000u},
        .proposals = p,
        .n_proposals = n,
    };
    rc = ul_connect(&rq, atomic_fetch_add(env->next_assoc_id, 1), out, err);
out:
    free(p);
    free(ts);
    return rc;
}

static int add_failed(struct dynbuf *uids, const char *uid)
{
    if (uids->len && dynbuf_putc(uids, '\\'))
        return PACS_ENOMEM;
    return dynbuf_puts(uids, uid);
}

static uint16_t final_status(const struct counts *n, bool cancelled)
{
    if (cancelled)
        return ST_CANCEL;
    if (n->failed == 0)
        return ST_SUCCESS;
    return n->completed + n->warning ? ST_SUBOPS_WARNING : ST_SUBOPS_REFUSED;
}

static int do_retrieve(struct ul_assoc *a, const struct scp_env *env, uint8_t pc_id,
                       const struct dimse_cmd *cmd, const struct qr_class *qc)
{
    bool is_get = qc->svc == SVC_GET;
    const char *main_ts = ul_pc_by_id(a, pc_id)->ts;
    struct dynbuf in, failed, out;
    struct dcm_file id = {0};
    struct retrieve_list list = {0};
    struct ul_assoc *sub = NULL;
    struct pacs_err err = {0};
    struct counts n = {.with_counts = true, .with_remaining = true};
    struct dcm_ds *fl = NULL;
    bool cancelled = false;
    uint16_t status = ST_SUCCESS;
    int rc;
    dynbuf_init(&in, SCP_MAX_IDENTIFIER);
    dynbuf_init(&failed, 0);
    dynbuf_init(&out, 0);

    rc = recv_identifier(a, pc_id, cmd, &in, &id, &err);
    if (rc < 0)
        goto out;
    if (rc > 0) {
        status = (uint16_t)rc;
        n.with_counts = false;
        goto answer;
    }
    const struct config_modality *dest = NULL;
    if (!is_get) {
        dest = config_find_modality(env->cfg, cmd->move_destination);
        if (!dest) {
            status = ST_MOVE_DEST_UNKNOWN;
            n.with_counts = false;
            pacs_err_set(&err, PACS_ENOTFOUND, "move destination %s is not a known modality",
                         cmd->move_destination);
            goto answer;
        }
    }
    /* Orthanc sends its patient-level C-MOVE on the Study Root context;
     * its PatientID names the instances just as well in Patient Root. */
    enum query_model model = qc->model;
    char level[16];
    if (model == QUERY_STUDY_ROOT &&
        dcm_ds_get_str(id.ds, DCM_TAG(0x0008, 0x0052), 0, level, sizeof level) == 0 &&
        strcmp(level, "PATIENT") == 0)
        model = QUERY_PATIENT_ROOT;
    rc = retrieve_from_identifier(env->ar, id.ds, model, &list, &err);
    if (rc) {
        status = rc == PACS_EINVAL ? ST_IDENT_MISMATCH : ST_OUT_OF_RESOURCES;
        n.with_counts = false;
        goto answer;
    }
    if (list.n > 0xffff) {
        status = ST_OUT_OF_RESOURCES;
        n.with_counts = false;
        pacs_err_set(&err, PACS_ELIMIT, "%zu instances match; at most 65535 per operation",
                     list.n);
        goto answer;
    }
    if (!is_get && list.n && open_move_target(env, dest, &list, &sub, &err)) {
        log_warn("C-MOVE to %s (%s:%u): %s", dest->aet, dest->host, dest->port, err.msg);
        /* Every sub-operation failed; the counts and the list say so. */
        for (size_t i = 0; i < list.n; i++)
            add_failed(&failed, list.items[i].sop_instance_uid);
        n.failed = (uint16_t)list.n;
        n.with_remaining = false;
        status = ST_SUBOPS_REFUSED;
        goto answer;
    }
    struct ul_assoc *target = is_get ? a : sub;
    for (size_t i = 0; i < list.n; i++) {
        const struct retrieve_item *it = &list.items[i];
        n.remaining = (uint16_t)(list.n - i);
        if (!cancelled && !is_get) {
            rc = poll_cancel(a, cmd->message_id, &err);
            if (rc < 0)
                goto out;
            cancelled = rc == 1;
        }
        if (cancelled)
            break;
        const struct ul_pc *pc = send_context(target, it, is_get);
        if (!pc) {
            n.failed++;
            add_failed(&failed, it->sop_instance_uid);
            log_warn("%s: no accepted context for %s in %s", is_get ? "C-GET" : "C-MOVE",
                     it->sop_class_uid, it->transfer_syntax);
        } else {
            struct source s = {.item = it, .ar = env->ar};
            struct dimse_cmd rsp;
            struct scu_store_rq srq = {
                .pc_id = pc->id,
                .sop_class = it->sop_class_uid,
                .sop_instance = it->sop_instance_uid,
                .msg_id = (uint16_t)(i + 1),
                .move_originator_aet = is_get ? NULL : ul_calling_aet(a),
                .move_originator_id = cmd->message_id,
            };
            struct scu_source src = {.read = read_src, .ctx = &s};
            rc = source_open(&s, pc->ts, &src.size, &err);
            if (rc == 0)
                rc = scu_store(target, &srq, &src, &rsp, is_get ? &cancelled : NULL, &err);
            source_close(&s);
            if (rc) {
                log_warn("sub-operation %s: %s", it->sop_instance_uid, err.msg);
                n.failed++;
                add_failed(&failed, it->sop_instance_uid);
                if (ul_established(target))
                    continue;
                if (is_get)
                    goto out; /* the requestor's own association is gone */
                /* The destination went away: the rest fail too. */
                for (size_t j = i + 1; j < list.n; j++) {
                    n.failed++;
                    add_failed(&failed, list.items[j].sop_instance_uid);
                }
                n.remaining = 0;
                break;
            }
            switch (dimse_status_class(rsp.status)) {
            case DIMSE_SUCCESS:
                n.completed++;
                break;
            case DIMSE_WARNING:
                n.warning++;
                break;
            default:
                n.failed++;
                add_failed(&failed, it->sop_instance_uid);
                break;
            }
        }
        n.remaining = (uint16_t)(list.n - i - 1);
        if (n.remaining && !cancelled) {
            rc = send_rsp(a, pc_id, cmd, ST_PENDING, NULL, &n, NULL, &err);
            if (rc)
                goto out;
        }
    }
    status = final_status(&n, cancelled);
    n.with_remaining = cancelled;
answer:
    if (sub) {
        struct pacs_err e2 = {0};
        ul_release(sub, &e2);
    }
    if (failed.len) {
        fl = dcm_ds_new();
        /* put_str pads the UI value to even length, as PS3.5 requires. */
        if (!fl || dcm_ds_put_str(fl, DCM_TAG(0x0008, 0x0058), DCM_VR_UI,
                                  (const char *)failed.data) ||
            encode(fl, main_ts, &out, &err))
            dynbuf_reset(&out);
    }
    if (dimse_status_class(status) == DIMSE_FAILURE)
        log_warn("%s from %s: status 0x%04X: %s", is_get ? "C-GET" : "C-MOVE", ul_calling_aet(a),
                 status, err.msg);
    else
        log_info("%s: %u completed, %u failed, %u warning", is_get ? "C-GET" : "C-MOVE",
                 n.completed, n.failed, n.warning);
    rc = send_rsp(a, pc_id, cmd, status, err.msg, &n, &out, &err);
out:
    ul_free(sub);
    dcm_ds_free(fl);
    retrieve_list_free(&list);
    dcm_file_free(&id);
    dynbuf_free(&in);
    dynbuf_free(&failed);
    dynbuf_free(&out);
    return rc < 0 ? rc : 0;
}

/* --- the service loop ----------------------------------------------------- */

static void count_end(const char *how)
{
    metric_inc(&metric_dicom_associations_ended, &how);
}

void scp_serve(struct ul_assoc *a, const struct scp_env *env)
{
    for (;;) {
        struct dimse_cmd cmd;
        struct pacs_err err = {0};
        uint8_t pc_id;
        bool aborted;
        int rc = dimse_recv_command(a, &cmd, &pc_id, &aborted, &err);
        if (rc == 1) {
            if (aborted) {
                log_info("association aborted by the peer");
            } else {
                ul_release_reply(a, &err);
                log_info("association released");
            }
            count_end(aborted ? "aborted" : "released");
            return;
        }
        if (rc) {
            log_warn("association ended: %s", err.msg);
            count_end("lost");
            return;
        }
        const struct ul_pc *pc = ul_pc_by_id(a, pc_id);
        const struct qr_class *qc = qr_class(pc->abstract_syntax);
        switch (cmd.command_field) {
        case DIMSE_C_ECHO_RQ:
            if (!qc || qc->svc != SVC_ECHO) {
                log_warn("C-ECHO-RQ on a %s context: aborted", pc->abstract_syntax);
                ul_abort(a);
                count_end("aborted");
                return;
            }
            rc = do_echo(a, pc_id, &cmd);
            break;
        case DIMSE_C_STORE_RQ:
            rc = do_store(a, env, pc_id, &cmd);
            break;
        case DIMSE_C_FIND_RQ:
        case DIMSE_C_MOVE_RQ:
        case DIMSE_C_GET_RQ: {
            enum service want = cmd.command_field == DIMSE_C_FIND_RQ   ? SVC_FIND
                                : cmd.command_field == DIMSE_C_MOVE_RQ ? SVC_MOVE
                                                                       : SVC_GET;
            if (!qc || qc->svc != want) {
                log_warn("%s on a %s context: aborted", dimse_command_name(cmd.command_field),
                         pc->abstract_syntax);
                ul_abort(a);
                count_end("aborted");
                return;
            }
            rc = want == SVC_FIND ? do_find(a, env, pc_id, &cmd, qc)
                                  : do_retrieve(a, env, pc_id, &cmd, qc);
            break;
        }
        case DIMSE_C_CANCEL_RQ:
            /* The operation it names already ended (PS3.7 9.3.2.3): ignore. */
            break;
        default:
            log_warn("unsupported %s (0x%04X): aborted", dimse_command_name(cmd.command_field),
                     cmd.command_field);
            ul_abort(a);
            count_end("aborted");
            return;
        }
        if (rc) {
            count_end("lost");
            return;
        }
    }
}
