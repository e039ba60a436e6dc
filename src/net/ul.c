/* ul.c - the DICOM upper-layer state machine (PS3.8 9.2) over a blocking
 * TCP socket. See ul.h for the contract.
 *
 * The machine is the table `fsm` below: for each state (Sta1..Sta13) and
 * event (Evt1..Evt19) the action PS3.8 Table 9-10 names, as a function with
 * the same name (ae1, dt2, ar8, aa8, ...). Local primitives (accept, send,
 * release, abort) and PDUs from the peer both become events through fire();
 * a cell left empty is a local primitive that is not valid in that state
 * (a caller bug, PACS_EINVAL), never a peer's doing: every peer event has
 * an action in every state where a PDU can arrive.
 */
#include "net/ul.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "dicom/reader.h"
#include "dicom/writer.h"
#include "util/dynbuf.h"

enum ul_state {
    STA1 = 1, /* idle */
    STA2,     /* transport open, awaiting A-ASSOCIATE-RQ */
    STA3,     /* awaiting local A-ASSOCIATE response */
    STA4,     /* awaiting transport connection to open */
    STA5,     /* awaiting A-ASSOCIATE-AC or -RJ */
    STA6,     /* association established, data transfer */
    STA7,     /* awaiting A-RELEASE-RP */
    STA8,     /* awaiting local A-RELEASE response */
    STA9,     /* release collision, requestor: awaiting local response */
    STA10,    /* release collision, acceptor: awaiting A-RELEASE-RP */
    STA11,    /* release collision, requestor: awaiting A-RELEASE-RP */
    STA12,    /* release collision, acceptor: awaiting local response */
    STA13,    /* awaiting transport close */
    N_STATES
};

enum ul_evt {
    EVT1 = 1, /* local A-ASSOCIATE request */
    EVT2,     /* transport connect confirmation */
    EVT3,     /* A-ASSOCIATE-AC received */
    EVT4,     /* A-ASSOCIATE-RJ received */
    EVT5,     /* transport connection indication */
    EVT6,     /* A-ASSOCIATE-RQ received */
    EVT7,     /* local A-ASSOCIATE response (accept) */
    EVT8,     /* local A-ASSOCIATE response (reject) */
    EVT9,     /* local P-DATA request */
    EVT10,    /* P-DATA-TF received */
    EVT11,    /* local A-RELEASE request */
    EVT12,    /* A-RELEASE-RQ received */
    EVT13,    /* A-RELEASE-RP received */
    EVT14,    /* local A-RELEASE response */
    EVT15,    /* local A-ABORT request */
    EVT16,    /* A-ABORT received */
    EVT17,    /* transport connection closed */
    EVT18,    /* ARTIM timer expired */
    EVT19,    /* unrecognized or invalid PDU received */
    N_EVENTS
};

struct ul_assoc {
    int fd;
    enum ul_state state;
    bool requestor;
    uint64_t id;
    char peer[64];
    char calling[PDU_AE_LEN + 1], called[PDU_AE_LEN + 1];
    char impl_uid[PDU_UID_LEN + 1], impl_version[PDU_AE_LEN + 1];
    struct pdu_user_identity identity; /* owned copy */
    struct ul_pc *pcs;
    size_t n_pcs;
    uint32_t our_max, peer_max;
    struct ul_timeouts to;
    struct dynbuf rx; /* body of the PDU being handled */
    uint32_t pdv_pos; /* iterator over rx while a P-DATA-TF is handed out */
    bool in_pdata;
    struct dynbuf tx; /* scratch for encoded PDUs */
};

/* What an event carries in and out of its action. */
struct ul_ctx {
    struct pacs_err *err;
    int rc;                    /* the action's verdict */
    /* local A-ASSOCIATE (requestor): the RQ to send; (acceptor) the AC */
    const struct pdu_assoc *send_assoc;
    /* requestor: the RQ as sent, to map AC contexts back to proposals */
    const struct ul_request *req;
    /* acceptor: the decoded RQ (AE-6) */
    struct pdu_assoc *rq;
    uint8_t rj_result, rj_source, rj_reason;
    /* P-DATA request */
    uint8_t pc_id;
    bool command, last;
    const uint8_t *data;
    size_t n;
    /* outputs */
    struct ul_event *ev;
    bool indicated;            /* an event for the caller was produced */
    uint8_t abort_reason;      /* AA-8: reason to send */
};

typedef void (*ul_action)(struct ul_assoc *a, struct ul_ctx *c);

/* --- socket helpers ------------------------------------------------------ */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for fd to be ready; 0 ready, PACS_EAGAIN on timeout. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return PACS_EAGAIN;
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, left > 0x7fffffff ? 0x7fffffff : (int)left);
        if (r > 0)
            return 0;
        if (r == 0)
            return PACS_EAGAIN;
        if (errno != EINTR)
            return PACS_EIO;
    }
}

/* Writes every byte of iov or fails (write timeout per call). */
static int write_iov(struct ul_assoc *a, struct iovec *iov, int n, struct pacs_err *err)
{
    int64_t deadline = now_ms() + a->to.write_ms;
    while (n > 0) {
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(a->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                int r = wait_fd(a->fd, POLLOUT, deadline);
                if (r == PACS_EAGAIN)
                    return pacs_err_set(err, PACS_EIO, "write timed out after %u ms",
                                        a->to.write_ms);
                if (r)
                    return pacs_err_set(err, PACS_EIO, "poll: %s", strerror(errno));
                continue;
            }
            return pacs_err_set(err, PACS_EIO, "write: %s", strerror(errno));
        }
        size_t left = (size_t)w;
        while (n > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return 0;
}

static int write_buf(struct ul_assoc *a, const void *p, size_t n, struct pacs_err *err)
{
    struct iovec v = {.iov_base = (void *)p, .iov_len = n};
    return write_iov(a, &v, 1, err);
}

/* Reads exactly n bytes. The first byte may take up to first_ms (idle or
 * ARTIM), the rest up to read_ms each wait; no wait goes past `cap` (an
 * absolute time, 0 for none: ARTIM bounds a whole PDU). Returns 0,
 * PACS_EAGAIN on a timeout, PACS_ETRUNC on EOF (at_eof set when no byte
 * came at all). */
static int read_exact(struct ul_assoc *a, uint8_t *p, size_t n, unsigned first_ms, int64_t cap,
                      bool *at_eof)
{
    size_t got = 0;
    *at_eof = false;
    while (got < n) {
        int64_t deadline = now_ms() + (got == 0 ? first_ms : a->to.read_ms);
        if (cap && deadline > cap)
            deadline = cap;
        int r = wait_fd(a->fd, POLLIN, deadline);
        if (r)
            return r;
        ssize_t k = recv(a->fd, p + got, n - got, MSG_DONTWAIT);
        if (k < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            return PACS_EIO;
        }
        if (k == 0) {
            *at_eof = got == 0;
            return PACS_ETRUNC;
        }
        got += (size_t)k;
    }
    return 0;
}

static void set_socket_options(int fd)
{
    int one = 1;
    /* Without TCP_NODELAY a peer's delayed ACK holds each small PDU ~40 ms. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
}

static void close_fd(struct ul_assoc *a)
{
    if (a->fd >= 0) {
        close(a->fd);
        a->fd = -1;
    }
}

/* Sta13: the peer is expected to close; wait up to ARTIM, then close. */
static void await_close(struct ul_assoc *a)
{
    if (a->fd < 0)
        return;
    shutdown(a->fd, SHUT_WR);
    int64_t deadline = now_ms() + a->to.artim_ms;
    uint8_t sink[4096];
    while (wait_fd(a->fd, POLLIN, deadline) == 0) {
        ssize_t k = recv(a->fd, sink, sizeof sink, MSG_DONTWAIT);
        if (k == 0 || (k < 0 && errno != EINTR && errno != EAGAIN))
            break;
    }
    close_fd(a);
    a->state = STA1;
}

/* --- actions (PS3.8 Table 9-6 .. 9-9) ------------------------------------ */

/* Marks the event as a protocol error (PACS_EINVAL), keeping the reason
 * read_event gave (an unknown PDU type, a length over the limit...). */
static void protocol_error(struct ul_ctx *c, const char *what)
{
    if (c->rc)
        return;
    if (c->err && c->err->msg[0]) {
        struct pacs_err why = *c->err;
        c->rc = pacs_err_set(c->err, PACS_EINVAL, "%s: %s", what, why.msg);
    } else {
        c->rc = pacs_err_set(c->err, PACS_EINVAL, "%s: protocol error", what);
    }
}

static void send_abort(struct ul_assoc *a, uint8_t source, uint8_t reason)
{
    dynbuf_reset(&a->tx);
    if (a->fd >= 0 && pdu_encode_abort(source, reason, &a->tx) == 0)
        (void)write_buf(a, a->tx.data, a->tx.len, NULL);
}

/* AE-1: issue a transport connect request (done by ul_connect). */
static void ae1(struct ul_assoc *a, struct ul_ctx *c)
{
    (void)c;
    a->state = STA4;
}

/* AE-2: send the A-ASSOCIATE-RQ. */
static void ae2(struct ul_assoc *a, struct ul_ctx *c)
{
    dynbuf_reset(&a->tx);
    c->rc = pdu_encode_assoc(c->send_assoc, true, &a->tx, c->err);
    if (c->rc == 0)
        c->rc = write_buf(a, a->tx.data, a->tx.len, c->err);
    a->state = STA5;
}

/* AE-3: A-ASSOCIATE-AC received: the association is established. */
static void ae3(struct ul_assoc *a, struct ul_ctx *c)
{
    struct pdu_assoc *ac = calloc(1, sizeof *ac);
    if (!ac) {
        c->rc = pacs_err_set(c->err, PACS_ENOMEM, "out of memory");
        return;
    }
    c->rc = pdu_decode_assoc(a->rx.data, (uint32_t)a->rx.len, false, ac, c->err);
    if (c->rc) {
        /* A malformed AC is an invalid PDU: AA-8. */
        free(ac);
        send_abort(a, PDU_ABORT_SRC_PROVIDER, PDU_ABORT_INVALID_PARAM);
        close_fd(a);
        a->state = STA1;
        return;
    }
    a->peer_max = ac->max_pdu_length;
    snprintf(a->impl_uid, sizeof a->impl_uid, "%s", ac->impl_class_uid);
    snprintf(a->impl_version, sizeof a->impl_version, "%s", ac->impl_version);
    for (size_t i = 0; i < a->n_pcs; i++) {
        struct ul_pc *pc = &a->pcs[i];
        pc->result = PDU_PC_NO_REASON;
        for (unsigned j = 0; j < ac->n_pc; j++) {
            if (ac->pc[j].id != pc->id)
                continue;
            pc->result = ac->pc[j].result;
            if (pc->result == PDU_PC_ACCEPTANCE && ac->pc[j].n_ts == 1)
                snprintf(pc->ts, sizeof pc->ts, "%s", ac->pc[j].ts[0]);
            else if (pc->result == PDU_PC_ACCEPTANCE)
                pc->result = PDU_PC_NO_REASON;
        }
        /* The acceptor grants the SCP role only by answering it (D.3.3.4). */
        bool asked = pc->requestor_scp;
        pc->requestor_scp = false;
        for (unsigned j = 0; asked && j < ac->n_role; j++)
            if (strcmp(ac->role[j].sop_class, pc->abstract_syntax) == 0)
                pc->requestor_scp = ac->role[j].scp;
    }
    pdu_assoc_free(ac);
    free(ac);
    a->state = STA6;
}

/* AE-4: A-ASSOCIATE-RJ received: close. */
static void ae4(struct ul_assoc *a, struct ul_ctx *c)
{
    uint8_t result = 0, source = 0, reason = 0;
    if (pdu_decode_reject(a->rx.data, (uint32_t)a->rx.len, &result, &source, &reason, c->err) ==
        0)
        c->rc = pacs_err_set(c->err, PACS_EUNSUPPORTED,
                             "association rejected (%s, %s)",
                             result == PDU_RJ_PERMANENT ? "permanent" : "transient",
                             pdu_reject_reason_name(source, reason));
    else
        c->rc = PACS_EINVAL;
    close_fd(a);
    a->state = STA1;
}

/* AE-5: transport connection accepted: start ARTIM (the read deadline). */
static void ae5(struct ul_assoc *a, struct ul_ctx *c)
{
    (void)c;
    a->state = STA2;
}

/* AE-6: A-ASSOCIATE-RQ received: decode it and indicate it to the user. */
static void ae6(struct ul_assoc *a, struct ul_ctx *c)
{
    c->rq = calloc(1, sizeof *c->rq);
    if (!c->rq) {
        c->rc = pacs_err_set(c->err, PACS_ENOMEM, "out of memory");
        send_abort(a, PDU_ABORT_SRC_PROVIDER, PDU_ABORT_NOT_SPECIFIED);
        await_close(a);
        return;
    }
    c->rc = pdu_decode_assoc(a->rx.data, (uint32_t)a->rx.len, true, c->rq, c->err);
    if (c->rc) {
        free(c->rq);
        c->rq = NULL;
        /* An RQ we cannot parse: A-ABORT, as for any invalid PDU. */
        send_abort(a, PDU_ABORT_SRC_PROVIDER, PDU_ABORT_INVALID_PARAM);
        await_close(a);
        return;
    }
    a->state = STA3;
}

/* AE-7: send the A-ASSOCIATE-AC. */
static void ae7(struct ul_assoc *a, struct ul_ctx *c)
{
    dynbuf_reset(&a->tx);
    c->rc = pdu_encode_assoc(c->send_assoc, false, &a->tx, c->err);
    if (c->rc == 0)
        c->rc = write_buf(a, a->tx.data, a->tx.len, c->err);
    a->state = STA6;
}

/* AE-8: send the A-ASSOCIATE-RJ and wait for the peer to close. */
static void ae8(struct ul_assoc *a, struct ul_ctx *c)
{
    dynbuf_reset(&a->tx);
    if (pdu_encode_reject(c->rj_result, c->rj_source, c->rj_reason, &a->tx) == 0)
        (void)write_buf(a, a->tx.data, a->tx.len, NULL);
    a->state = STA13;
    await_close(a);
}

/* DT-1 / AR-7: send P-DATA-TF PDUs, each within the peer's maximum. */
static void send_pdata(struct ul_assoc *a, struct ul_ctx *c)
{
    size_t chunk = a->peer_max > 6 + 1 ? a->peer_max - 6 : (1u << 20);
    if (a->peer_max == 0)
        chunk = 1u << 20;
    const uint8_t *p = c->data;
    size_t n = c->n;
    do {
        size_t k = n < chunk ? n : chunk;
        uint8_t hdr[PDU_PDV_HEADER_LEN];
        pdu_pdv_header(hdr, c->pc_id, c->command, c->last && k == n, (uint32_t)k);
        struct iovec v[2] = {{.iov_base = hdr, .iov_len = sizeof hdr},
                             {.iov_base = (void *)p, .iov_len = k}};
        c->rc = write_iov(a, v, k ? 2 : 1, c->err);
        if (c->rc)
            return;
        p += k;
        n -= k;
    } while (n > 0);
}

static void dt1(struct ul_assoc *a, struct ul_ctx *c)
{
    send_pdata(a, c);
}

/* DT-2 / AR-6: P-DATA-TF received: check every PDV, then hand them out. */
static void dt2(struct ul_assoc *a, struct ul_ctx *c)
{
    (void)c;
    a->in_pdata = true;
    a->pdv_pos = 0;
}

/* AR-1: send A-RELEASE-RQ. */
static void ar1(struct ul_assoc *a, struct ul_ctx *c)
{
    dynbuf_reset(&a->tx);
    c->rc = pdu_encode_release(true, &a->tx);
    if (c->rc == 0)
        c->rc = write_buf(a, a->tx.data, a->tx.len, c->err);
    a->state = STA7;
}

/* AR-2: A-RELEASE-RQ received: indicate it. */
static void ar2(struct ul_assoc *a, struct ul_ctx *c)
{
    if (c->ev)
        c->ev->type = UL_EV_RELEASE;
    c->indicated = true;
    a->state = STA8;
}

/* AR-3: A-RELEASE-RP received: release confirmed, close. */
static void ar3(struct ul_assoc *a, struct ul_ctx *c)
{
    (void)c;
    close_fd(a);
    a->state = STA1;
}

/* AR-4: send A-RELEASE-RP, then wait (ARTIM) for the peer to close. */
static void ar4(struct ul_assoc *a, struct ul_ctx *c)
{
    dynbuf_reset(&a->tx);
    c->rc = pdu_encode_release(false, &a->tx);
    if (c->rc == 0)
        c->rc = write_buf(a, a->tx.data, a->tx.len, c->err);
    a->state = STA13;
    await_close(a);
}

/* AR-5: transport closed in Sta13. */
static void ar5(struct ul_assoc *a, struct ul_ctx *c)
{
    (void)c;
    close_fd(a);
    a->state = STA1;
}

/* AR-6: P-DATA while awaiting the release reply: still delivered. */
static void ar6(struct ul_assoc *a, struct ul_ctx *c)
{
    dt2(a, c);
}

/* AR-7: P-DATA request while awaiting the local release response. */
static void ar7(struct ul_assoc *a, struct ul_ctx *c)
{
    send_pdata(a, c);
}

/* AR-8: release collision. */
static void ar8(struct ul_assoc *a, struct ul_ctx *c)
{
    (void)c;
    a->state = a->requestor ? STA9 : STA10;
}

/* AR-9: collision, requestor: send A-RELEASE-RP. */
static void ar9(struct ul_assoc *a, struct ul_ctx *c)
{
    dynbuf_reset(&a->tx);
    c->rc = pdu_encode_release(false, &a->tx);
    if (c->rc == 0)
        c->rc = write_buf(a, a->tx.data, a->tx.len, c->err);
    a->state = STA11;
}

/* AR-10: collision, acceptor: A-RELEASE-RP received, confirm. */
static void ar10(struct ul_assoc *a, struct ul_ctx *c)
{
    (void)c;
    a->state = STA12;
}

/* AA-1: send A-ABORT (service-user for a local abort, service-provider
 * for a protocol error in Sta2), then close. */
static void aa1(struct ul_assoc *a, struct ul_ctx *c)
{
    bool local = a->state != STA2;
    send_abort(a, local ? PDU_ABORT_SRC_USER : PDU_ABORT_SRC_PROVIDER,
               local ? PDU_ABORT_NOT_SPECIFIED : PDU_ABORT_UNEXPECTED_PDU);
    if (!local)
        protocol_error(c, "unexpected PDU while awaiting A-ASSOCIATE-RQ");
    /* Sta13: the peer received our abort; nothing more is owed to it. */
    close_fd(a);
    a->state = STA1;
}

/* AA-2: ARTIM expired or A-ABORT received in Sta2/Sta13: close. */
static void aa2(struct ul_assoc *a, struct ul_ctx *c)
{
    (void)c;
    close_fd(a);
    a->state = STA1;
}

/* AA-3: A-ABORT received: indicate it, close. */
static void aa3(struct ul_assoc *a, struct ul_ctx *c)
{
    if (c->ev)
        c->ev->type = UL_EV_ABORTED;
    c->indicated = true;
    close_fd(a);
    a->state = STA1;
}

/* AA-4: transport closed unexpectedly: indicate A-P-ABORT. */
static void aa4(struct ul_assoc *a, struct ul_ctx *c)
{
    aa3(a, c);
}

/* AA-5: transport closed in Sta2. */
static void aa5(struct ul_assoc *a, struct ul_ctx *c)
{
    aa2(a, c);
}

/* AA-6: PDU received in Sta13: ignored. */
static void aa6(struct ul_assoc *a, struct ul_ctx *c)
{
    (void)a;
    (void)c;
}

/* AA-7: A-ASSOCIATE-RQ or invalid PDU in Sta13: send A-ABORT. */
static void aa7(struct ul_assoc *a, struct ul_ctx *c)
{
    (void)c;
    send_abort(a, PDU_ABORT_SRC_PROVIDER, PDU_ABORT_UNEXPECTED_PDU);
}

/* AA-8: unrecognized or unexpected PDU: send A-ABORT (service-provider),
 * indicate A-P-ABORT, close. */
static void aa8(struct ul_assoc *a, struct ul_ctx *c)
{
    send_abort(a, PDU_ABORT_SRC_PROVIDER,
               c->abort_reason ? c->abort_reason : PDU_ABORT_UNEXPECTED_PDU);
    protocol_error(c, ul_state_name(a));
    close_fd(a);
    a->state = STA1;
}

/* PS3.8 Table 9-10. Rows: states; columns: events. In Sta3..Sta12 each
 * PDU event has its own cell (PEER_ROW names them in event order: AC, RJ,
 * RQ, P-DATA, RELEASE-RQ, RELEASE-RP); a local abort, a received abort, a
 * closed connection and an invalid PDU are handled alike in all of them. */
#define PEER_ROW(st, e3, e4, e6, e10, e12, e13)                                              \
    [st][EVT3] = e3, [st][EVT4] = e4, [st][EVT6] = e6, [st][EVT10] = e10,                    \
    [st][EVT12] = e12, [st][EVT13] = e13, [st][EVT15] = aa1, [st][EVT16] = aa3,              \
    [st][EVT17] = aa4, [st][EVT19] = aa8

static const ul_action fsm[N_STATES][N_EVENTS] = {
    [STA1][EVT1] = ae1,
    [STA1][EVT5] = ae5,

    [STA2][EVT3] = aa1, [STA2][EVT4] = aa1, [STA2][EVT6] = ae6, [STA2][EVT10] = aa1,
    [STA2][EVT12] = aa1, [STA2][EVT13] = aa1, [STA2][EVT16] = aa2, [STA2][EVT17] = aa5,
    [STA2][EVT18] = aa2, [STA2][EVT19] = aa1,

    PEER_ROW(STA3, aa8, aa8, aa8, aa8, aa8, aa8),
    [STA3][EVT7] = ae7, [STA3][EVT8] = ae8,

    [STA4][EVT2] = ae2, [STA4][EVT15] = aa2, [STA4][EVT17] = aa4,

    PEER_ROW(STA5, ae3, ae4, aa8, aa8, aa8, aa8),
    PEER_ROW(STA6, aa8, aa8, aa8, dt2, ar2, aa8),
    [STA6][EVT9] = dt1, [STA6][EVT11] = ar1,
    PEER_ROW(STA7, aa8, aa8, aa8, ar6, ar8, ar3),
    PEER_ROW(STA8, aa8, aa8, aa8, aa8, aa8, aa8),
    [STA8][EVT9] = ar7, [STA8][EVT14] = ar4,
    PEER_ROW(STA9, aa8, aa8, aa8, aa8, aa8, aa8),
    [STA9][EVT14] = ar9,
    PEER_ROW(STA10, aa8, aa8, aa8, aa8, aa8, ar10),
    PEER_ROW(STA11, aa8, aa8, aa8, aa8, aa8, ar3),
    PEER_ROW(STA12, aa8, aa8, aa8, aa8, aa8, aa8),
    [STA12][EVT14] = ar4,

    [STA13][EVT3] = aa6, [STA13][EVT4] = aa6, [STA13][EVT6] = aa7, [STA13][EVT10] = aa6,
    [STA13][EVT12] = aa6, [STA13][EVT13] = aa6, [STA13][EVT16] = aa2, [STA13][EVT17] = ar5,
    [STA13][EVT18] = aa2, [STA13][EVT19] = aa7,
};

static int fire(struct ul_assoc *a, enum ul_evt evt, struct ul_ctx *c)
{
    ul_action act = a->state < N_STATES ? fsm[a->state][evt] : NULL;
    if (!act)
        return pacs_err_set(c->err, PACS_EINVAL, "Evt%d is not valid in %s", (int)evt,
                            ul_state_name(a));
    act(a, c);
    return c->rc;
}

/* Reads one PDU into a->rx and maps it to an event: EVT3..EVT19. A
 * timeout gives EVT18 in the ARTIM states and a local abort (EVT15) in
 * data transfer, where the idle and read timeouts are ours, not PS3.8's. */
static enum ul_evt read_event(struct ul_assoc *a, unsigned first_ms, struct ul_ctx *c)
{
    uint8_t h[PDU_HEADER_LEN];
    bool eof;
    /* Acknowledge at once: a peer with Nagle on (DCMTK without TCP_NODELAY)
     * otherwise waits for our delayed ACK, ~40 ms per message. The flag
     * does not stick, so it is set before each PDU. */
    int one = 1;
    setsockopt(a->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
    /* In Sta2 and Sta13 ARTIM bounds the whole PDU, not each wait: a peer
     * trickling its A-ASSOCIATE-RQ must not hold a slot (PS3.8 9.2, AE-5). */
    int64_t cap = a->state == STA2 || a->state == STA13 ? now_ms() + first_ms : 0;
    int r = read_exact(a, h, sizeof h, first_ms, cap, &eof);
    if (r == PACS_EAGAIN) {
        pacs_err_set(c->err, PACS_EIO, "no PDU within %u ms", first_ms);
        return a->state == STA2 || a->state == STA13 ? EVT18 : EVT15;
    }
    if (r) {
        pacs_err_set(c->err, PACS_EIO, "connection closed by peer");
        return EVT17;
    }
    uint8_t type;
    uint32_t len;
    /* Checks the type, P-DATA against our maximum (PS3.8 D.1) and the
     * fixed or bounded lengths of the other types. */
    if (pdu_parse_header(h, a->our_max, &type, &len, c->err)) {
        c->abort_reason = type >= PDU_ASSOC_RQ && type <= PDU_ABORT ? PDU_ABORT_INVALID_PARAM
                                                                    : PDU_ABORT_UNRECOGNIZED_PDU;
        return EVT19;
    }
    dynbuf_reset(&a->rx);
    if (dynbuf_reserve(&a->rx, len)) {
        pacs_err_set(c->err, PACS_ENOMEM, "out of memory for a %u-byte PDU", len);
        return EVT15;
    }
    r = read_exact(a, a->rx.data, len, a->to.read_ms, cap, &eof);
    if (r == PACS_EAGAIN) {
        pacs_err_set(c->err, PACS_EIO, "peer stalled inside a %s (%u ms)", pdu_type_name(type),
                     a->to.read_ms);
        return a->state == STA2 || a->state == STA13 ? EVT18 : EVT15;
    }
    if (r) {
        pacs_err_set(c->err, PACS_EIO, "connection closed inside a %s", pdu_type_name(type));
        return EVT17;
    }
    a->rx.len = len;
    switch (type) {
    case PDU_ASSOC_RQ:
        return EVT6;
    case PDU_ASSOC_AC:
        return EVT3;
    case PDU_ASSOC_RJ:
        return EVT4;
    case PDU_P_DATA: {
        /* Check every PDV now, so a malformed P-DATA is EVT19 as a whole. */
        uint32_t pos = 0;
        struct pdu_pdv pdv;
        int k, count = 0;
        while ((k = pdu_next_pdv(a->rx.data, len, &pos, &pdv, c->err)) == 1)
            count++;
        if (k < 0 || count == 0) {
            if (count == 0 && k == 0)
                pacs_err_set(c->err, PACS_EINVAL, "P-DATA-TF without a PDV");
            c->abort_reason = PDU_ABORT_INVALID_PARAM;
            return EVT19;
        }
        return EVT10;
    }
    case PDU_RELEASE_RQ:
    case PDU_RELEASE_RP:
        if (pdu_decode_release(a->rx.data, len, c->err)) {
            c->abort_reason = PDU_ABORT_INVALID_PARAM;
            return EVT19;
        }
        return type == PDU_RELEASE_RQ ? EVT12 : EVT13;
    case PDU_ABORT:
        return EVT16;
    default:
        c->abort_reason = PDU_ABORT_UNRECOGNIZED_PDU;
        return EVT19;
    }
}

/* --- life cycle ---------------------------------------------------------- */

static struct ul_assoc *assoc_new(int fd, uint64_t id, const struct ul_timeouts *to)
{
    struct ul_assoc *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->fd = fd;
    a->state = STA1;
    a->id = id;
    a->to = *to;
    dynbuf_init(&a->rx, 0);
    dynbuf_init(&a->tx, 0);
    return a;
}

void ul_free(struct ul_assoc *a)
{
    if (!a)
        return;
    if (a->fd >= 0 && a->state >= STA3 && a->state <= STA12)
        send_abort(a, PDU_ABORT_SRC_USER, PDU_ABORT_NOT_SPECIFIED);
    close_fd(a);
    free(a->identity.primary);
    free(a->identity.secondary);
    free(a->pcs);
    dynbuf_free(&a->rx);
    dynbuf_free(&a->tx);
    free(a);
}

static bool aet_allowed(const struct ul_acceptor *acc, const char *calling)
{
    if (!acc->n_allowed_calling)
        return true;
    for (size_t i = 0; i < acc->n_allowed_calling; i++)
        if (strcmp(acc->allowed_calling[i], calling) == 0)
            return true;
    return false;
}

/* Decides the RQ: fills the AC (and a->pcs), or the RJ fields of c. */
static bool negotiate(struct ul_assoc *a, const struct ul_acceptor *acc, const struct pdu_assoc *rq,
                      struct pdu_assoc *ac, struct ul_ctx *c)
{
    c->rj_result = PDU_RJ_PERMANENT;
    c->rj_source = PDU_RJ_SRC_USER;
    if (!(rq->protocol_version & 1)) {
        c->rj_source = PDU_RJ_SRC_ACSE;
        c->rj_reason = PDU_RJ_ACSE_PROTOCOL_VERSION_NOT_SUPPORTED;
        return false;
    }
    if (strcmp(rq->app_context, UL_APP_CONTEXT) != 0) {
        c->rj_reason = PDU_RJ_USER_APP_CONTEXT_NOT_SUPPORTED;
        return false;
    }
    if (acc->check_called_aet && strcmp(rq->called_aet, acc->aet) != 0) {
        c->rj_reason = PDU_RJ_USER_CALLED_AE_NOT_RECOGNIZED;
        return false;
    }
    if (!aet_allowed(acc, rq->calling_aet)) {
        c->rj_reason = PDU_RJ_USER_CALLING_AE_NOT_RECOGNIZED;
        return false;
    }
    if (acc->over_limit) {
        c->rj_result = PDU_RJ_TRANSIENT;
        c->rj_source = PDU_RJ_SRC_PRESENTATION;
        c->rj_reason = PDU_RJ_PRES_LOCAL_LIMIT_EXCEEDED;
        return false;
    }

    a->pcs = calloc(rq->n_pc, sizeof *a->pcs);
    if (!a->pcs) {
        c->rj_result = PDU_RJ_TRANSIENT;
        c->rj_source = PDU_RJ_SRC_PRESENTATION;
        c->rj_reason = PDU_RJ_PRES_TEMPORARY_CONGESTION;
        return false;
    }
    a->n_pcs = rq->n_pc;
    unsigned accepted = 0;
    for (unsigned i = 0; i < rq->n_pc; i++) {
        const struct pdu_pc *in = &rq->pc[i];
        struct ul_pc *pc = &a->pcs[i];
        struct pdu_pc *out = &ac->pc[i];
        pc->id = out->id = in->id;
        snprintf(pc->abstract_syntax, sizeof pc->abstract_syntax, "%s", in->abstract_syntax);
        uint8_t result = PDU_PC_ABSTRACT_SYNTAX_NOT_SUPPORTED;
        int k = acc->choose_ts(acc->ctx, in, &result);
        if (k >= 0 && k < in->n_ts) {
            pc->result = out->result = PDU_PC_ACCEPTANCE;
            snprintf(pc->ts, sizeof pc->ts, "%s", in->ts[k]);
            snprintf(out->ts[0], sizeof out->ts[0], "%s", in->ts[k]);
            out->n_ts = 1;
            accepted++;
        } else {
            pc->result = out->result = result;
            /* PS3.8 9.3.3.2: the syntax sub-item is present but not tested. */
            snprintf(out->ts[0], sizeof out->ts[0], "%s", DCM_UID_IMPLICIT_LE);
            out->n_ts = 1;
        }
    }
    ac->n_pc = rq->n_pc;
    if (!accepted) {
        c->rj_reason = PDU_RJ_USER_NO_REASON;
        return false;
    }

    /* Role selection: the requestor keeps the SCU role it asks for; the SCP
     * role only where the service grants it (C-GET storage classes). */
    for (unsigned i = 0; i < rq->n_role && ac->n_role < PDU_MAX_PCS; i++) {
        const struct pdu_role *r = &rq->role[i];
        bool scp = r->scp && acc->grant_scp_role && acc->grant_scp_role(acc->ctx, r->sop_class);
        struct pdu_role *o = &ac->role[ac->n_role++];
        *o = *r;
        o->scp = scp;
        for (size_t j = 0; j < a->n_pcs; j++)
            if (strcmp(a->pcs[j].abstract_syntax, r->sop_class) == 0)
                a->pcs[j].requestor_scp = scp;
    }
    return true;
}

int ul_accept(int fd, const char *peer, uint64_t id, const struct ul_acceptor *acc,
              struct ul_assoc **out, struct pacs_err *err)
{
    struct ul_ctx c = {.err = err};
    struct pdu_assoc *ac = NULL;
    int rc;
    *out = NULL;
    struct ul_assoc *a = assoc_new(fd, id, &acc->to);
    if (!a) {
        close(fd);
        return pacs_err_set(err, PACS_ENOMEM, "out of memory");
    }
    snprintf(a->peer, sizeof a->peer, "%s", peer ? peer : "");
    a->our_max = acc->max_pdu;
    set_socket_options(fd);

    fire(a, EVT5, &c);
    enum ul_evt e = read_event(a, a->to.artim_ms, &c);
    rc = fire(a, e, &c);
    if (a->state != STA3) {
        /* Aborted, closed or timed out before a valid RQ. */
        if (rc == 0) {
            struct pacs_err why = err ? *err : (struct pacs_err){0};
            rc = pacs_err_set(err, PACS_EIO, "no A-ASSOCIATE-RQ: %s",
                              why.msg[0] ? why.msg : "closed");
        }
        goto out;
    }

    snprintf(a->calling, sizeof a->calling, "%s", c.rq->calling_aet);
    snprintf(a->called, sizeof a->called, "%s", c.rq->called_aet);
    snprintf(a->impl_uid, sizeof a->impl_uid, "%s", c.rq->impl_class_uid);
    snprintf(a->impl_version, sizeof a->impl_version, "%s", c.rq->impl_version);
    a->peer_max = c.rq->max_pdu_length;
    /* Take the identity buffers over: the RQ is freed below. */
    a->identity = c.rq->user_identity;
    memset(&c.rq->user_identity, 0, sizeof c.rq->user_identity);

    ac = calloc(1, sizeof *ac);
    if (!ac) {
        rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
        c.rj_result = PDU_RJ_TRANSIENT;
        c.rj_source = PDU_RJ_SRC_PRESENTATION;
        c.rj_reason = PDU_RJ_PRES_TEMPORARY_CONGESTION;
        fire(a, EVT8, &c);
        goto out;
    }
    ac->protocol_version = 1;
    snprintf(ac->called_aet, sizeof ac->called_aet, "%s", c.rq->called_aet);
    snprintf(ac->calling_aet, sizeof ac->calling_aet, "%s", c.rq->calling_aet);
    snprintf(ac->app_context, sizeof ac->app_context, "%s", UL_APP_CONTEXT);
    ac->max_pdu_length = acc->max_pdu;
    snprintf(ac->impl_class_uid, sizeof ac->impl_class_uid, "%s", PACSD_IMPLEMENTATION_CLASS_UID);
    snprintf(ac->impl_version, sizeof ac->impl_version, "%s", PACSD_IMPLEMENTATION_VERSION);
    if (c.rq->has_async) {
        /* One operation at a time each way: what we implement. */
        ac->has_async = true;
        ac->max_ops_invoked = ac->max_ops_performed = 1;
    }
    if (a->identity.present && a->identity.positive_response_requested &&
        a->identity.type <= PDU_UID_USERNAME_PASSCODE)
        ac->user_identity.present = true; /* empty server response (D.3.3.7) */

    if (!negotiate(a, acc, c.rq, ac, &c)) {
        fire(a, EVT8, &c);
        rc = pacs_err_set(err, PACS_EUNSUPPORTED, "rejected %s -> %s: %s", c.rq->calling_aet,
                          c.rq->called_aet, pdu_reject_reason_name(c.rj_source, c.rj_reason));
        goto out;
    }
    c.send_assoc = ac;
    rc = fire(a, EVT7, &c);
    if (rc)
        goto out;
    *out = a;
    a = NULL;
out:
    if (c.rq) {
        pdu_assoc_free(c.rq);
        free(c.rq);
    }
    free(ac);
    ul_free(a);
    return rc;
}

static int tcp_connect(const struct ul_request *req, struct pacs_err *err)
{
    char port[8];
    snprintf(port, sizeof port, "%u", req->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int r = getaddrinfo(req->host, port, &hints, &res);
    if (r)
        return pacs_err_set(err, PACS_EIO, "%s: %s", req->host, gai_strerror(r));
    int fd = -1;
    int rc = PACS_EIO;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
            continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS) {
            int so = 0;
            socklen_t sl = sizeof so;
            if (wait_fd(fd, POLLOUT, now_ms() + req->to.artim_ms) == 0 &&
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl) == 0 && so == 0) {
                rc = 0;
                break;
            }
            errno = so ? so : ETIMEDOUT;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (rc)
        return pacs_err_set(err, PACS_EIO, "cannot connect to %s:%u: %s", req->host, req->port,
                            strerror(errno));
    /* Back to blocking mode: reads and writes use poll() deadlines anyway. */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    set_socket_options(fd);
    return fd;
}

int ul_connect(const struct ul_request *req, uint64_t id, struct ul_assoc **out,
               struct pacs_err *err)
{
    struct ul_ctx c = {.err = err, .req = req};
    struct pdu_assoc *rq = NULL;
    int rc;
    *out = NULL;
    if (req->n_proposals == 0 || req->n_proposals > PDU_MAX_PCS)
        return pacs_err_set(err, PACS_EINVAL, "%zu presentation contexts (1..%d)",
                            req->n_proposals, PDU_MAX_PCS);
    struct ul_assoc *a = assoc_new(-1, id, &req->to);
    rq = calloc(1, sizeof *rq);
    if (!a || !rq || !(a->pcs = calloc(req->n_proposals, sizeof *a->pcs))) {
        rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
        goto out;
    }
    a->requestor = true;
    a->our_max = req->max_pdu;
    snprintf(a->peer, sizeof a->peer, "%s:%u", req->host, req->port);
    snprintf(a->calling, sizeof a->calling, "%s", req->calling_aet);
    snprintf(a->called, sizeof a->called, "%s", req->called_aet);

    rq->protocol_version = 1;
    snprintf(rq->called_aet, sizeof rq->called_aet, "%s", req->called_aet);
    snprintf(rq->calling_aet, sizeof rq->calling_aet, "%s", req->calling_aet);
    snprintf(rq->app_context, sizeof rq->app_context, "%s", UL_APP_CONTEXT);
    rq->max_pdu_length = req->max_pdu;
    snprintf(rq->impl_class_uid, sizeof rq->impl_class_uid, "%s", PACSD_IMPLEMENTATION_CLASS_UID);
    snprintf(rq->impl_version, sizeof rq->impl_version, "%s", PACSD_IMPLEMENTATION_VERSION);
    for (size_t i = 0; i < req->n_proposals; i++) {
        const struct ul_proposal *p = &req->proposals[i];
        struct pdu_pc *pc = &rq->pc[i];
        pc->id = (uint8_t)(2 * i + 1);
        snprintf(pc->abstract_syntax, sizeof pc->abstract_syntax, "%s", p->abstract_syntax);
        for (size_t j = 0; j < p->n_ts && j < PDU_MAX_TS_PER_PC; j++)
            snprintf(pc->ts[pc->n_ts++], sizeof pc->ts[0], "%s", p->ts[j]);
        a->pcs[i].id = pc->id;
        snprintf(a->pcs[i].abstract_syntax, sizeof a->pcs[i].abstract_syntax, "%s",
                 p->abstract_syntax);
        a->pcs[i].requestor_scp = p->request_scp_role;
        if (p->request_scp_role && rq->n_role < PDU_MAX_PCS) {
            struct pdu_role *r = &rq->role[rq->n_role++];
            snprintf(r->sop_class, sizeof r->sop_class, "%s", p->abstract_syntax);
            r->scu = true;
            r->scp = true;
        }
    }
    rq->n_pc = (unsigned)req->n_proposals;
    a->n_pcs = req->n_proposals;

    fire(a, EVT1, &c);
    int fd = tcp_connect(req, err);
    if (fd < 0) {
        rc = fd;
        goto out;
    }
    a->fd = fd;
    c.send_assoc = rq;
    rc = fire(a, EVT2, &c);
    if (rc)
        goto out;
    enum ul_evt e = read_event(a, a->to.artim_ms, &c);
    if (e == EVT15)
        e = EVT17; /* no answer within ARTIM: give up (AA-4 path) */
    rc = fire(a, e, &c);
    if (a->state != STA6) {
        if (rc == 0) {
            struct pacs_err why = err ? *err : (struct pacs_err){0};
            rc = pacs_err_set(err, PACS_EIO, "association not established: %s",
                              why.msg[0] ? why.msg : "closed");
        }
        goto out;
    }
    *out = a;
    a = NULL;
out:
    free(rq);
    ul_free(a);
    return rc;
}

/* --- established association --------------------------------------------- */

const struct ul_pc *ul_pcs(const struct ul_assoc *a, size_t *n)
{
    *n = a->n_pcs;
    return a->pcs;
}

const struct ul_pc *ul_pc_by_id(const struct ul_assoc *a, uint8_t id)
{
    for (size_t i = 0; i < a->n_pcs; i++)
        if (a->pcs[i].id == id)
            return &a->pcs[i];
    return NULL;
}

const struct ul_pc *ul_pc_find(const struct ul_assoc *a, const char *abstract_syntax,
                               const char *ts)
{
    const struct ul_pc *any = NULL;
    for (size_t i = 0; i < a->n_pcs; i++) {
        const struct ul_pc *pc = &a->pcs[i];
        if (pc->result != PDU_PC_ACCEPTANCE || strcmp(pc->abstract_syntax, abstract_syntax))
            continue;
        if (!ts || strcmp(pc->ts, ts) == 0)
            return pc;
        if (!any)
            any = pc;
    }
    return ts ? NULL : any;
}

const char *ul_calling_aet(const struct ul_assoc *a) { return a->calling; }
const char *ul_called_aet(const struct ul_assoc *a) { return a->called; }
const char *ul_peer(const struct ul_assoc *a) { return a->peer; }
uint64_t ul_id(const struct ul_assoc *a) { return a->id; }

const char *ul_peer_impl(const struct ul_assoc *a, const char **version)
{
    if (version)
        *version = a->impl_version;
    return a->impl_uid;
}

const struct pdu_user_identity *ul_user_identity(const struct ul_assoc *a)
{
    return a->identity.present ? &a->identity : NULL;
}

int ul_recv(struct ul_assoc *a, struct ul_event *ev, struct pacs_err *err)
{
    memset(ev, 0, sizeof *ev);
    for (;;) {
        if (a->in_pdata) {
            int k = pdu_next_pdv(a->rx.data, (uint32_t)a->rx.len, &a->pdv_pos, &ev->pdv, err);
            if (k == 1) {
                ev->type = UL_EV_PDV;
                return 0;
            }
            a->in_pdata = false;
        }
        if (a->state != STA6 && a->state != STA7)
            return pacs_err_set(err, PACS_EIO, "association is over (%s)", ul_state_name(a));
        struct ul_ctx c = {.err = err, .ev = ev};
        enum ul_evt e = read_event(a, a->state == STA6 ? a->to.idle_ms : a->to.artim_ms, &c);
        struct pacs_err why = err ? *err : (struct pacs_err){0};
        int rc = fire(a, e, &c);
        if (e == EVT15) /* our timeout: report why we aborted */
            return pacs_err_set(err, PACS_EIO, "%s: aborted", why.msg);
        if (rc)
            return rc;
        if (c.indicated)
            return 0;
    }
}

bool ul_established(const struct ul_assoc *a)
{
    return a->fd >= 0 && a->state >= STA6 && a->state <= STA12;
}

bool ul_readable(struct ul_assoc *a)
{
    if (a->in_pdata && a->pdv_pos < a->rx.len)
        return true;
    if (a->fd < 0)
        return false;
    struct pollfd p = {.fd = a->fd, .events = POLLIN};
    return poll(&p, 1, 0) > 0;
}

int ul_send(struct ul_assoc *a, uint8_t pc_id, bool command, const void *p, size_t n,
            bool last, struct pacs_err *err)
{
    struct ul_ctx c = {.err = err, .pc_id = pc_id, .command = command, .last = last,
                       .data = p, .n = n};
    int rc = fire(a, EVT9, &c);
    if (rc && a->fd >= 0 && a->state >= STA6) {
        /* A failed write leaves the stream unusable: abort. */
        close_fd(a);
        a->state = STA1;
    }
    return rc;
}

int ul_release(struct ul_assoc *a, struct pacs_err *err)
{
    struct ul_ctx c = {.err = err};
    int rc = fire(a, EVT11, &c);
    while (rc == 0 && a->state != STA1) {
        if (a->state == STA9 || a->state == STA12) {
            /* Release collision: our local release response (AR-9/AR-4). */
            rc = fire(a, EVT14, &c);
            if (a->state == STA13)
                await_close(a);
            continue;
        }
        struct ul_event ev = {0};
        c.ev = &ev;
        c.indicated = false;
        enum ul_evt e = read_event(a, a->to.artim_ms, &c);
        bool timed_out = e == EVT15 || e == EVT18;
        if (timed_out)
            e = EVT17; /* no RP within ARTIM: close (AA-4) */
        rc = fire(a, e, &c);
        a->in_pdata = false; /* P-DATA during release is dropped (AR-6) */
        if (rc == 0 && (timed_out || (c.indicated && ev.type == UL_EV_ABORTED)))
            rc = pacs_err_set(err, PACS_EIO, "release not confirmed: %s",
                              timed_out ? "no A-RELEASE-RP within ARTIM" : "aborted by peer");
    }
    return rc;
}

int ul_release_reply(struct ul_assoc *a, struct pacs_err *err)
{
    struct ul_ctx c = {.err = err};
    return fire(a, EVT14, &c);
}

void ul_abort(struct ul_assoc *a)
{
    struct ul_ctx c = {0};
    if (a->state >= STA3 && a->state <= STA12)
        fire(a, EVT15, &c);
    close_fd(a);
    a->state = STA1;
}

const char *ul_state_name(const struct ul_assoc *a)
{
    static const char *const names[N_STATES] = {
        "?",    "Sta1", "Sta2", "Sta3",  "Sta4",  "Sta5",  "Sta6",
        "Sta7", "Sta8", "Sta9", "Sta10", "Sta11", "Sta12", "Sta13",
    };
    return a->state < N_STATES ? names[a->state] : "?";
}
