/* Unit tests: the DICOM upper-layer state machine (net/ul).
 *
 * ul_accept and ul_connect talk to each other over loopback TCP, the
 * acceptor (or the side that must answer) in a second thread. Where a case
 * needs bytes ul_connect never sends (another protocol version, user
 * identity, an asynchronous operations window) or a peer that misbehaves
 * on purpose (release collision, an abort instead of the release reply),
 * that side is a raw socket speaking PDUs built with net/pdu.
 *
 * Threads only record what they saw; the main thread asserts after joining
 * (cmocka's asserts are not thread-safe).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dicom/reader.h"
#include "dicom/writer.h"
#include "net/pdu.h"
#include "net/ul.h"
#include "util/dynbuf.h"

#define AS_ECHO "1.2.840.10008.1.1"
#define AS_CT "1.2.840.10008.5.1.4.1.1.2"
#define AS_MR "1.2.840.10008.5.1.4.1.1.4"
#define AS_UNKNOWN "1.2.3.4.5.6"
#define TS_IMPLICIT DCM_UID_IMPLICIT_LE
#define TS_EXPLICIT DCM_UID_EXPLICIT_LE
#define TS_JPEG "1.2.840.10008.1.2.4.50"

#define ACC_MAX 4096u
#define REQ_MAX 8192u
#define BIG (100u * 1024)

/* --- helpers ------------------------------------------------------------- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int listen_loopback(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 8), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static int connect_loopback(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads exactly n bytes within timeout_ms; 0, or -1 on EOF/error/timeout. */
static int read_full(int fd, void *p, size_t n, int timeout_ms)
{
    uint8_t *b = p;
    while (n) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, timeout_ms) <= 0)
            return -1;
        ssize_t k = recv(fd, b, n, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

/* One whole PDU from a raw socket: type and body (into *body, reset first). */
static int read_pdu(int fd, uint8_t *type, struct dynbuf *body, int timeout_ms)
{
    uint8_t h[PDU_HEADER_LEN];
    if (read_full(fd, h, sizeof h, timeout_ms))
        return -1;
    *type = h[0];
    uint32_t len = (uint32_t)h[2] << 24 | (uint32_t)h[3] << 16 | (uint32_t)h[4] << 8 | h[5];
    dynbuf_reset(body);
    if (len > (1u << 20) || dynbuf_reserve(body, len))
        return -1;
    if (read_full(fd, body->data, len, timeout_ms))
        return -1;
    body->len = len;
    return 0;
}

/* True when the peer closes fd within timeout_ms (bytes before are dropped). */
static bool peer_closes(int fd, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    uint8_t sink[1024];
    for (;;) {
        int left = (int)(end - now_ms());
        if (left <= 0)
            return false;
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, left) <= 0)
            return false;
        ssize_t k = recv(fd, sink, sizeof sink, 0);
        if (k <= 0)
            return true;
    }
}

/* The acceptor's policy: unknown abstract syntax -> 3; Explicit VR LE
 * preferred, else Implicit, else 4. */
static int choose_ts(void *ctx, const struct pdu_pc *pc, uint8_t *result)
{
    (void)ctx;
    if (strcmp(pc->abstract_syntax, AS_UNKNOWN) == 0) {
        *result = PDU_PC_ABSTRACT_SYNTAX_NOT_SUPPORTED;
        return -1;
    }
    for (int i = 0; i < pc->n_ts; i++)
        if (strcmp(pc->ts[i], TS_EXPLICIT) == 0)
            return i;
    for (int i = 0; i < pc->n_ts; i++)
        if (strcmp(pc->ts[i], TS_IMPLICIT) == 0)
            return i;
    *result = PDU_PC_TRANSFER_SYNTAXES_NOT_SUPPORTED;
    return -1;
}

/* The SCP role is granted for CT only. */
static bool grant_role(void *ctx, const char *sop_class)
{
    (void)ctx;
    return strcmp(sop_class, AS_CT) == 0;
}

static const char *const allowed_calling[] = {"REQ", "RAWSCU"};

static struct ul_acceptor acceptor_cfg(void)
{
    return (struct ul_acceptor){
        .aet = "ACC",
        .check_called_aet = true,
        .allowed_calling = allowed_calling,
        .n_allowed_calling = 2,
        .max_pdu = ACC_MAX,
        .to = {.artim_ms = 2000, .idle_ms = 2000, .read_ms = 2000, .write_ms = 2000},
        .choose_ts = choose_ts,
        .grant_scp_role = grant_role,
    };
}

static const char *const ts_implicit[] = {TS_IMPLICIT};
static const char *const ts_both[] = {TS_IMPLICIT, TS_EXPLICIT};
static const char *const ts_explicit[] = {TS_EXPLICIT};
static const char *const ts_jpeg[] = {TS_JPEG};

static const struct ul_proposal echo_only[] = {{AS_ECHO, ts_implicit, 1, false}};

static struct ul_request request_cfg(uint16_t port, const struct ul_proposal *p, size_t n)
{
    return (struct ul_request){
        .calling_aet = "REQ",
        .called_aet = "ACC",
        .host = "127.0.0.1",
        .port = port,
        .max_pdu = REQ_MAX,
        .to = {.artim_ms = 2000, .idle_ms = 2000, .read_ms = 2000, .write_ms = 2000},
        .proposals = p,
        .n_proposals = n,
    };
}

/* --- the acceptor thread ------------------------------------------------- */

struct acc_job {
    pthread_t t;
    int lfd;
    struct ul_acceptor acc;
    struct ul_assoc *a;
    int rc;
    struct pacs_err err;
};

static void *acc_main(void *p)
{
    struct acc_job *j = p;
    int fd = accept(j->lfd, NULL, NULL);
    if (fd < 0) {
        j->rc = -100;
        return NULL;
    }
    j->rc = ul_accept(fd, "127.0.0.1:test", 7, &j->acc, &j->a, &j->err);
    return NULL;
}

static void acc_start(struct acc_job *j, int lfd, const struct ul_acceptor *acc)
{
    memset(j, 0, sizeof *j);
    j->lfd = lfd;
    j->acc = *acc;
    assert_int_equal(pthread_create(&j->t, NULL, acc_main, j), 0);
}

static void acc_join(struct acc_job *j)
{
    assert_int_equal(pthread_join(j->t, NULL), 0);
}

/* Establishes an association: *req_a (ul_connect) and *acc_a (ul_accept). */
static void establish(const struct ul_acceptor *acc, const struct ul_proposal *p, size_t n,
                      uint32_t req_max, struct ul_assoc **req_a, struct ul_assoc **acc_a)
{
    uint16_t port;
    int lfd = listen_loopback(&port);
    struct acc_job j;
    acc_start(&j, lfd, acc);
    struct ul_request rq = request_cfg(port, p, n);
    rq.max_pdu = req_max;
    struct pacs_err err = {0};
    int rc = ul_connect(&rq, 1, req_a, &err);
    acc_join(&j);
    close(lfd);
    assert_int_equal(rc, 0);
    assert_int_equal(j.rc, 0);
    assert_non_null(*req_a);
    assert_non_null(j.a);
    *acc_a = j.a;
}

/* --- the other side's work, in a thread ---------------------------------- */

enum side_op {
    OP_RECV_MESSAGE,   /* ul_recv PDVs until one with last set */
    OP_RECV_EVENT,     /* one ul_recv */
    OP_RELEASE_REPLY,  /* ul_recv, expect UL_EV_RELEASE, ul_release_reply */
    OP_RELEASE,        /* ul_release */
};

struct side {
    pthread_t t;
    enum side_op op;
    struct ul_assoc *a;
    int rc, rc2;
    struct pacs_err err;
    enum ul_event_type ev_type;
    /* OP_RECV_MESSAGE */
    struct dynbuf data;
    uint32_t pdv_len[512];
    bool pdv_last[512], pdv_command[512];
    uint8_t pdv_pc[512];
    size_t n_pdv;
    int64_t ms; /* how long the operation took */
};

static void *side_main(void *p)
{
    struct side *s = p;
    struct ul_event ev;
    int64_t t0 = now_ms();
    switch (s->op) {
    case OP_RECV_MESSAGE:
        for (;;) {
            s->rc = ul_recv(s->a, &ev, &s->err);
            if (s->rc || ev.type != UL_EV_PDV) {
                s->ev_type = ev.type;
                break;
            }
            if (s->n_pdv < 512) {
                s->pdv_len[s->n_pdv] = ev.pdv.len;
                s->pdv_last[s->n_pdv] = ev.pdv.last;
                s->pdv_command[s->n_pdv] = ev.pdv.command;
                s->pdv_pc[s->n_pdv] = ev.pdv.pc_id;
            }
            s->n_pdv++;
            dynbuf_append(&s->data, ev.pdv.data, ev.pdv.len);
            if (ev.pdv.last) {
                s->ev_type = UL_EV_PDV;
                break;
            }
        }
        break;
    case OP_RECV_EVENT:
        s->rc = ul_recv(s->a, &ev, &s->err);
        s->ev_type = ev.type;
        break;
    case OP_RELEASE_REPLY:
        s->rc = ul_recv(s->a, &ev, &s->err);
        s->ev_type = ev.type;
        if (s->rc == 0 && ev.type == UL_EV_RELEASE)
            s->rc2 = ul_release_reply(s->a, &s->err);
        break;
    case OP_RELEASE:
        s->rc = ul_release(s->a, &s->err);
        break;
    }
    s->ms = now_ms() - t0;
    return NULL;
}

static struct side *side_start(struct ul_assoc *a, enum side_op op)
{
    struct side *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->a = a;
    s->op = op;
    s->rc = s->rc2 = -99;
    dynbuf_init(&s->data, 0);
    assert_int_equal(pthread_create(&s->t, NULL, side_main, s), 0);
    return s;
}

static void side_join(struct side *s)
{
    assert_int_equal(pthread_join(s->t, NULL), 0);
}

static void side_free(struct side *s)
{
    dynbuf_free(&s->data);
    free(s);
}

/* Requestor releases, acceptor replies; both end in Sta1. */
static void release_pair(struct ul_assoc *req_a, struct ul_assoc *acc_a)
{
    struct side *s = side_start(acc_a, OP_RELEASE_REPLY);
    struct pacs_err err = {0};
    int rc = ul_release(req_a, &err);
    side_join(s);
    assert_int_equal(rc, 0);
    assert_int_equal(s->rc, 0);
    assert_int_equal(s->ev_type, UL_EV_RELEASE);
    assert_int_equal(s->rc2, 0);
    assert_string_equal(ul_state_name(req_a), "Sta1");
    assert_string_equal(ul_state_name(acc_a), "Sta1");
    assert_false(ul_established(req_a));
    assert_false(ul_established(acc_a));
    side_free(s);
}

/* --- raw requestor ------------------------------------------------------- */

static struct pdu_assoc *raw_rq_new(void)
{
    struct pdu_assoc *rq = calloc(1, sizeof *rq);
    assert_non_null(rq);
    rq->protocol_version = 1;
    snprintf(rq->called_aet, sizeof rq->called_aet, "ACC");
    snprintf(rq->calling_aet, sizeof rq->calling_aet, "RAWSCU");
    snprintf(rq->app_context, sizeof rq->app_context, "%s", UL_APP_CONTEXT);
    rq->pc[0].id = 1;
    snprintf(rq->pc[0].abstract_syntax, sizeof rq->pc[0].abstract_syntax, AS_ECHO);
    snprintf(rq->pc[0].ts[0], sizeof rq->pc[0].ts[0], TS_IMPLICIT);
    rq->pc[0].n_ts = 1;
    rq->n_pc = 1;
    rq->max_pdu_length = 16384;
    snprintf(rq->impl_class_uid, sizeof rq->impl_class_uid, "1.2.826.0.1.3680043.10.999.1");
    snprintf(rq->impl_version, sizeof rq->impl_version, "RAW_1");
    return rq;
}

/* Sends rq to an acceptor running in a thread; *answer gets the reply's
 * type and body. Returns the acceptor job (joined) for its rc/assoc. The
 * raw socket is returned in *fd_out (open) when fd_out is given. */
static void raw_exchange(const struct ul_acceptor *acc, const struct pdu_assoc *rq,
                         uint8_t *type, struct dynbuf *answer, struct acc_job *j, int *fd_out)
{
    uint16_t port;
    int lfd = listen_loopback(&port);
    acc_start(j, lfd, acc);
    int fd = connect_loopback(port);
    assert_true(fd >= 0);
    struct dynbuf out;
    dynbuf_init(&out, 0);
    struct pacs_err err = {0};
    assert_int_equal(pdu_encode_assoc(rq, true, &out, &err), 0);
    assert_int_equal(write_all(fd, out.data, out.len), 0);
    dynbuf_free(&out);
    *type = 0;
    int r = read_pdu(fd, type, answer, 5000);
    if (fd_out && r == 0 && *type == PDU_ASSOC_AC) {
        *fd_out = fd;
    } else {
        /* after an RJ the acceptor waits for our close (Sta13) */
        close(fd);
        if (fd_out)
            *fd_out = -1;
    }
    acc_join(j);
    close(lfd);
    assert_int_equal(r, 0);
}

/* Sends rq, expects an A-ASSOCIATE-RJ with these bytes. */
static void expect_rj(const struct ul_acceptor *acc, const struct pdu_assoc *rq, uint8_t result,
                      uint8_t source, uint8_t reason)
{
    struct dynbuf body;
    dynbuf_init(&body, 0);
    struct acc_job j;
    uint8_t type;
    raw_exchange(acc, rq, &type, &body, &j, NULL);
    assert_int_equal(type, PDU_ASSOC_RJ);
    uint8_t r = 0, s = 0, x = 0;
    assert_int_equal(pdu_decode_reject(body.data, (uint32_t)body.len, &r, &s, &x, NULL), 0);
    assert_int_equal(r, result);
    assert_int_equal(s, source);
    assert_int_equal(x, reason);
    assert_int_equal(j.rc, PACS_EUNSUPPORTED);
    assert_null(j.a);
    dynbuf_free(&body);
}

/* --- tests --------------------------------------------------------------- */

static void test_negotiation(void **state)
{
    (void)state;
    const struct ul_proposal props[] = {
        {AS_ECHO, ts_implicit, 1, false},          /* 1: accepted, implicit */
        {AS_CT, ts_both, 2, true},                 /* 3: explicit, SCP role granted */
        {AS_MR, ts_explicit, 1, true},             /* 5: explicit, SCP role denied */
        {AS_UNKNOWN, ts_implicit, 1, false},       /* 7: abstract syntax not supported */
        {AS_CT, ts_jpeg, 1, false},                /* 9: transfer syntax not supported */
    };
    struct ul_acceptor acc = acceptor_cfg();
    struct ul_assoc *rq_a, *ac_a;
    establish(&acc, props, 5, REQ_MAX, &rq_a, &ac_a);

    static const uint8_t want_result[] = {0, 0, 0, 3, 4};
    static const char *const want_ts[] = {TS_IMPLICIT, TS_EXPLICIT, TS_EXPLICIT, NULL, NULL};
    static const bool want_scp[] = {false, true, false, false, false};
    for (int side = 0; side < 2; side++) {
        struct ul_assoc *a = side ? ac_a : rq_a;
        size_t n;
        const struct ul_pc *pcs = ul_pcs(a, &n);
        assert_int_equal(n, 5);
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(pcs[i].id, 2 * i + 1);
            assert_int_equal(pcs[i].result, want_result[i]);
            assert_string_equal(pcs[i].abstract_syntax, props[i].abstract_syntax);
            if (want_ts[i])
                assert_string_equal(pcs[i].ts, want_ts[i]);
            if (want_result[i] == PDU_PC_ACCEPTANCE)
                assert_int_equal(pcs[i].requestor_scp, want_scp[i]);
        }
        assert_string_equal(ul_state_name(a), "Sta6");
        assert_true(ul_established(a));
        assert_string_equal(ul_calling_aet(a), "REQ");
        assert_string_equal(ul_called_aet(a), "ACC");
        const char *ver = NULL;
        assert_string_equal(ul_peer_impl(a, &ver), PACSD_IMPLEMENTATION_CLASS_UID);
        assert_string_equal(ver, PACSD_IMPLEMENTATION_VERSION);
        assert_null(ul_user_identity(a));
        /* lookups */
        assert_ptr_equal(ul_pc_by_id(a, 3), &pcs[1]);
        assert_null(ul_pc_by_id(a, 2));
        assert_ptr_equal(ul_pc_find(a, AS_CT, NULL), &pcs[1]);
        assert_ptr_equal(ul_pc_find(a, AS_CT, TS_EXPLICIT), &pcs[1]);
        assert_null(ul_pc_find(a, AS_CT, TS_JPEG)); /* context 9 was rejected */
        assert_null(ul_pc_find(a, AS_UNKNOWN, NULL));
    }
    assert_int_equal(ul_id(rq_a), 1);
    assert_int_equal(ul_id(ac_a), 7);
    assert_string_equal(ul_peer(ac_a), "127.0.0.1:test");
    release_pair(rq_a, ac_a);
    ul_free(rq_a);
    ul_free(ac_a);
}

/* What the acceptor answers, byte for byte: max PDU, async window, roles,
 * user identity, and the identity passed on to the service layer. */
static void test_ac_contents(void **state)
{
    (void)state;
    struct pdu_assoc *rq = raw_rq_new();
    rq->pc[1].id = 3;
    snprintf(rq->pc[1].abstract_syntax, sizeof rq->pc[1].abstract_syntax, AS_CT);
    snprintf(rq->pc[1].ts[0], sizeof rq->pc[1].ts[0], TS_IMPLICIT);
    rq->pc[1].n_ts = 1;
    rq->pc[2].id = 5;
    snprintf(rq->pc[2].abstract_syntax, sizeof rq->pc[2].abstract_syntax, AS_MR);
    snprintf(rq->pc[2].ts[0], sizeof rq->pc[2].ts[0], TS_IMPLICIT);
    rq->pc[2].n_ts = 1;
    rq->n_pc = 3;
    rq->has_async = true;
    rq->max_ops_invoked = 5;
    rq->max_ops_performed = 7;
    snprintf(rq->role[0].sop_class, sizeof rq->role[0].sop_class, AS_CT);
    rq->role[0].scu = rq->role[0].scp = true;
    snprintf(rq->role[1].sop_class, sizeof rq->role[1].sop_class, AS_MR);
    rq->role[1].scu = rq->role[1].scp = true;
    rq->n_role = 2;
    static uint8_t user[] = "alice", pass[] = "s3cret";
    rq->user_identity.present = true;
    rq->user_identity.type = PDU_UID_USERNAME_PASSCODE;
    rq->user_identity.positive_response_requested = true;
    rq->user_identity.primary = user;
    rq->user_identity.primary_len = 5;
    rq->user_identity.secondary = pass;
    rq->user_identity.secondary_len = 6;

    struct ul_acceptor acc = acceptor_cfg();
    struct dynbuf body;
    dynbuf_init(&body, 0);
    struct acc_job j;
    uint8_t type;
    int fd;
    raw_exchange(&acc, rq, &type, &body, &j, &fd);
    assert_int_equal(type, PDU_ASSOC_AC);
    assert_int_equal(j.rc, 0);
    assert_non_null(j.a);

    struct pdu_assoc *ac = calloc(1, sizeof *ac);
    assert_non_null(ac);
    struct pacs_err err = {0};
    assert_int_equal(pdu_decode_assoc(body.data, (uint32_t)body.len, false, ac, &err), 0);
    assert_int_equal(ac->protocol_version & 1, 1);
    assert_string_equal(ac->called_aet, "ACC");
    assert_string_equal(ac->calling_aet, "RAWSCU");
    assert_string_equal(ac->app_context, UL_APP_CONTEXT);
    assert_int_equal(ac->max_pdu_length, ACC_MAX);
    assert_string_equal(ac->impl_class_uid, PACSD_IMPLEMENTATION_CLASS_UID);
    assert_true(ac->has_async);
    assert_int_equal(ac->max_ops_invoked, 1);
    assert_int_equal(ac->max_ops_performed, 1);
    assert_int_equal(ac->n_pc, 3);
    for (unsigned i = 0; i < 3; i++) {
        assert_int_equal(ac->pc[i].id, 2 * i + 1);
        assert_int_equal(ac->pc[i].result, PDU_PC_ACCEPTANCE);
        assert_string_equal(ac->pc[i].ts[0], TS_IMPLICIT);
    }
    assert_int_equal(ac->n_role, 2);
    assert_string_equal(ac->role[0].sop_class, AS_CT);
    assert_true(ac->role[0].scu);
    assert_true(ac->role[0].scp);   /* granted */
    assert_string_equal(ac->role[1].sop_class, AS_MR);
    assert_false(ac->role[1].scp);  /* denied */
    /* positive response requested for username+passcode: empty 0x59 */
    assert_true(ac->user_identity.present);
    assert_int_equal(ac->user_identity.primary_len, 0);
    pdu_assoc_free(ac);
    free(ac);

    /* the identity goes through to the service layer, unchecked */
    const struct pdu_user_identity *id = ul_user_identity(j.a);
    assert_non_null(id);
    assert_int_equal(id->type, PDU_UID_USERNAME_PASSCODE);
    assert_int_equal(id->primary_len, 5);
    assert_memory_equal(id->primary, "alice", 5);
    assert_int_equal(id->secondary_len, 6);
    assert_memory_equal(id->secondary, "s3cret", 6);
    const char *ver = NULL;
    assert_string_equal(ul_peer_impl(j.a, &ver), "1.2.826.0.1.3680043.10.999.1");
    assert_string_equal(ver, "RAW_1");
    assert_true(ul_pc_by_id(j.a, 3)->requestor_scp);
    assert_false(ul_pc_by_id(j.a, 5)->requestor_scp);

    /* The peer's Maximum Length (16384) bounds what the acceptor sends. */
    static uint8_t big[40000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7);
    assert_int_equal(ul_send(j.a, 1, false, big, sizeof big, true, &err), 0);
    size_t got = 0;
    int pdus = 0;
    while (got < sizeof big) {
        assert_int_equal(read_pdu(fd, &type, &body, 5000), 0);
        assert_int_equal(type, PDU_P_DATA);
        assert_true(body.len <= 16384);
        uint32_t pos = 0;
        struct pdu_pdv v;
        while (pdu_next_pdv(body.data, (uint32_t)body.len, &pos, &v, &err) == 1) {
            assert_memory_equal(v.data, big + got, v.len);
            got += v.len;
            assert_int_equal(v.last, got == sizeof big);
        }
        pdus++;
    }
    assert_int_equal(got, sizeof big);
    assert_int_equal(pdus, 3); /* 16378 + 16378 + 7244 */

    /* A JWT with a positive response requested: no server response is
     * made up (only username forms get the empty one). */
    ul_free(j.a); /* aborts: we are still established */
    assert_int_equal(read_pdu(fd, &type, &body, 5000), 0);
    assert_int_equal(type, PDU_ABORT);
    close(fd);

    static uint8_t jwt[] = "eyJhbGciOiJub25lIn0.e30.";
    rq->user_identity.type = PDU_UID_JWT;
    rq->user_identity.primary = jwt;
    rq->user_identity.primary_len = (uint16_t)(sizeof jwt - 1);
    rq->user_identity.secondary = NULL;
    rq->user_identity.secondary_len = 0;
    rq->has_async = false;
    raw_exchange(&acc, rq, &type, &body, &j, &fd);
    assert_int_equal(type, PDU_ASSOC_AC);
    ac = calloc(1, sizeof *ac);
    assert_non_null(ac);
    assert_int_equal(pdu_decode_assoc(body.data, (uint32_t)body.len, false, ac, &err), 0);
    assert_false(ac->has_async);
    assert_false(ac->user_identity.present);
    pdu_assoc_free(ac);
    free(ac);
    id = ul_user_identity(j.a);
    assert_non_null(id);
    assert_int_equal(id->type, PDU_UID_JWT);
    assert_memory_equal(id->primary, jwt, sizeof jwt - 1);
    /* the peer goes away without a word: AA-4, an abort indication */
    close(fd);
    struct ul_event ev;
    assert_int_equal(ul_recv(j.a, &ev, &err), 0);
    assert_int_equal(ev.type, UL_EV_ABORTED);
    assert_string_equal(ul_state_name(j.a), "Sta1");
    assert_true(ul_recv(j.a, &ev, &err) < 0);
    ul_free(j.a);

    rq->user_identity.present = false; /* the buffers are static */
    rq->user_identity.primary = NULL;
    free(rq);
    dynbuf_free(&body);
}

static void test_reject_reasons(void **state)
{
    (void)state;
    struct ul_acceptor acc = acceptor_cfg();
    struct pdu_assoc *rq = raw_rq_new();

    snprintf(rq->called_aet, sizeof rq->called_aet, "OTHER");
    expect_rj(&acc, rq, PDU_RJ_PERMANENT, PDU_RJ_SRC_USER, PDU_RJ_USER_CALLED_AE_NOT_RECOGNIZED);
    /* not checked when check_called_aet is off */
    acc.check_called_aet = false;
    {
        struct dynbuf body;
        dynbuf_init(&body, 0);
        struct acc_job j;
        uint8_t type;
        int fd;
        raw_exchange(&acc, rq, &type, &body, &j, &fd);
        assert_int_equal(type, PDU_ASSOC_AC);
        assert_string_equal(ul_called_aet(j.a), "OTHER");
        close(fd);
        ul_free(j.a);
        dynbuf_free(&body);
    }
    acc.check_called_aet = true;
    snprintf(rq->called_aet, sizeof rq->called_aet, "ACC");

    snprintf(rq->calling_aet, sizeof rq->calling_aet, "STRANGER");
    expect_rj(&acc, rq, PDU_RJ_PERMANENT, PDU_RJ_SRC_USER, PDU_RJ_USER_CALLING_AE_NOT_RECOGNIZED);
    snprintf(rq->calling_aet, sizeof rq->calling_aet, "RAWSCU");

    snprintf(rq->app_context, sizeof rq->app_context, "1.2.840.10008.3.1.1.2");
    expect_rj(&acc, rq, PDU_RJ_PERMANENT, PDU_RJ_SRC_USER, PDU_RJ_USER_APP_CONTEXT_NOT_SUPPORTED);
    snprintf(rq->app_context, sizeof rq->app_context, "%s", UL_APP_CONTEXT);

    rq->protocol_version = 0;
    expect_rj(&acc, rq, PDU_RJ_PERMANENT, PDU_RJ_SRC_ACSE,
              PDU_RJ_ACSE_PROTOCOL_VERSION_NOT_SUPPORTED);
    rq->protocol_version = 2;
    expect_rj(&acc, rq, PDU_RJ_PERMANENT, PDU_RJ_SRC_ACSE,
              PDU_RJ_ACSE_PROTOCOL_VERSION_NOT_SUPPORTED);
    rq->protocol_version = 1;

    snprintf(rq->pc[0].abstract_syntax, sizeof rq->pc[0].abstract_syntax, AS_UNKNOWN);
    expect_rj(&acc, rq, PDU_RJ_PERMANENT, PDU_RJ_SRC_USER, PDU_RJ_USER_NO_REASON);
    snprintf(rq->pc[0].abstract_syntax, sizeof rq->pc[0].abstract_syntax, AS_CT);
    snprintf(rq->pc[0].ts[0], sizeof rq->pc[0].ts[0], TS_JPEG);
    expect_rj(&acc, rq, PDU_RJ_PERMANENT, PDU_RJ_SRC_USER, PDU_RJ_USER_NO_REASON);
    snprintf(rq->pc[0].abstract_syntax, sizeof rq->pc[0].abstract_syntax, AS_ECHO);
    snprintf(rq->pc[0].ts[0], sizeof rq->pc[0].ts[0], TS_IMPLICIT);

    acc.over_limit = true;
    expect_rj(&acc, rq, PDU_RJ_TRANSIENT, PDU_RJ_SRC_PRESENTATION,
              PDU_RJ_PRES_LOCAL_LIMIT_EXCEEDED);
    acc.over_limit = false;
    free(rq);

    /* ul_connect reports a rejection as PACS_EUNSUPPORTED with the reason */
    uint16_t port;
    int lfd = listen_loopback(&port);
    struct acc_job j;
    acc_start(&j, lfd, &acc);
    struct ul_request req = request_cfg(port, echo_only, 1);
    req.called_aet = "NOBODY";
    struct ul_assoc *a = (struct ul_assoc *)&req; /* must be set to NULL */
    struct pacs_err err = {0};
    int rc = ul_connect(&req, 2, &a, &err);
    acc_join(&j);
    close(lfd);
    assert_int_equal(rc, PACS_EUNSUPPORTED);
    assert_null(a);
    assert_non_null(strstr(err.msg, "called-AE-title-not-recognized"));
    assert_int_equal(j.rc, PACS_EUNSUPPORTED);
    assert_null(j.a);

    /* no acceptable context at all, through ul_connect */
    const struct ul_proposal unknown[] = {{AS_UNKNOWN, ts_implicit, 1, false}};
    lfd = listen_loopback(&port);
    acc_start(&j, lfd, &acc);
    req = request_cfg(port, unknown, 1);
    rc = ul_connect(&req, 3, &a, &err);
    acc_join(&j);
    close(lfd);
    assert_int_equal(rc, PACS_EUNSUPPORTED);
    assert_null(a);
    assert_non_null(strstr(err.msg, "permanent"));
}

/* ul_send cuts a large message into P-DATA-TF PDUs within the peer's
 * Maximum Length; the other side sees each PDV with its flags. */
static void check_fragments(struct side *s, const uint8_t *data, size_t n, uint32_t peer_max,
                            uint8_t pc_id, bool command)
{
    assert_int_equal(s->rc, 0);
    assert_int_equal(s->ev_type, UL_EV_PDV);
    assert_int_equal(s->data.len, n);
    assert_memory_equal(s->data.data, data, n);
    size_t room = peer_max - 6, want = (n + room - 1) / room;
    assert_int_equal(s->n_pdv, want);
    for (size_t i = 0; i < s->n_pdv; i++) {
        assert_int_equal(s->pdv_len[i], i + 1 < want ? room : n - room * (want - 1));
        assert_int_equal(s->pdv_last[i], i + 1 == want);
        assert_int_equal(s->pdv_command[i], command);
        assert_int_equal(s->pdv_pc[i], pc_id);
    }
}

static void test_fragmentation(void **state)
{
    (void)state;
    struct ul_acceptor acc = acceptor_cfg();
    const struct ul_proposal props[] = {{AS_ECHO, ts_implicit, 1, false},
                                        {AS_CT, ts_both, 2, false}};
    struct ul_assoc *rq_a, *ac_a;
    establish(&acc, props, 2, REQ_MAX, &rq_a, &ac_a);
    uint8_t *big = malloc(BIG);
    assert_non_null(big);
    for (size_t i = 0; i < BIG; i++)
        big[i] = (uint8_t)(i * 31 + (i >> 8));
    struct pacs_err err = {0};

    /* requestor -> acceptor, acceptor's maximum 4096 */
    struct side *s = side_start(ac_a, OP_RECV_MESSAGE);
    assert_int_equal(ul_send(rq_a, 3, false, big, BIG, true, &err), 0);
    side_join(s);
    check_fragments(s, big, BIG, ACC_MAX, 3, false);
    side_free(s);

    /* acceptor -> requestor, requestor's maximum 8192 */
    s = side_start(rq_a, OP_RECV_MESSAGE);
    assert_int_equal(ul_send(ac_a, 1, true, big, BIG, true, &err), 0);
    side_join(s);
    check_fragments(s, big, BIG, REQ_MAX, 1, true);
    side_free(s);

    /* one message over several calls: last only on the final fragment */
    s = side_start(ac_a, OP_RECV_MESSAGE);
    assert_int_equal(ul_send(rq_a, 3, false, big, 5000, false, &err), 0);
    assert_int_equal(ul_send(rq_a, 3, false, big + 5000, 10, false, &err), 0);
    assert_int_equal(ul_send(rq_a, 3, false, big + 5010, 3000, true, &err), 0);
    side_join(s);
    assert_int_equal(s->rc, 0);
    assert_int_equal(s->data.len, 8010);
    assert_memory_equal(s->data.data, big, 8010);
    assert_int_equal(s->n_pdv, 4); /* 4090 + 910, 10, 3000 */
    assert_int_equal(s->pdv_len[0], 4090);
    assert_int_equal(s->pdv_len[1], 910);
    assert_int_equal(s->pdv_len[2], 10);
    assert_int_equal(s->pdv_len[3], 3000);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(s->pdv_last[i], i == 3);
    side_free(s);

    /* an empty last fragment is one empty PDV */
    s = side_start(ac_a, OP_RECV_MESSAGE);
    assert_int_equal(ul_send(rq_a, 1, true, big, 0, true, &err), 0);
    side_join(s);
    assert_int_equal(s->rc, 0);
    assert_int_equal(s->n_pdv, 1);
    assert_int_equal(s->pdv_len[0], 0);
    assert_true(s->pdv_last[0]);
    side_free(s);

    /* exactly one PDU's worth: one PDV */
    s = side_start(ac_a, OP_RECV_MESSAGE);
    assert_int_equal(ul_send(rq_a, 1, false, big, ACC_MAX - 6, true, &err), 0);
    side_join(s);
    check_fragments(s, big, ACC_MAX - 6, ACC_MAX, 1, false);
    side_free(s);

    assert_true(ul_readable(ac_a) == false);
    release_pair(rq_a, ac_a);
    /* nothing can be sent once released */
    assert_true(ul_send(rq_a, 1, false, big, 10, true, &err) < 0);
    free(big);
    ul_free(rq_a);
    ul_free(ac_a);
}

/* A P-DATA-TF longer than the receiver's Maximum Length is an invalid PDU:
 * A-ABORT (provider, invalid-PDU-parameter value). */
static void test_oversized_pdu(void **state)
{
    (void)state;
    struct ul_acceptor acc = acceptor_cfg();
    struct pdu_assoc *rq = raw_rq_new();
    struct dynbuf body;
    dynbuf_init(&body, 0);
    struct acc_job j;
    uint8_t type;
    int fd;
    raw_exchange(&acc, rq, &type, &body, &j, &fd);
    assert_int_equal(type, PDU_ASSOC_AC);
    uint8_t hdr[PDU_PDV_HEADER_LEN];
    pdu_pdv_header(hdr, 1, true, true, ACC_MAX); /* PDU length ACC_MAX + 6 */
    assert_int_equal(write_all(fd, hdr, sizeof hdr), 0);
    struct side *s = side_start(j.a, OP_RECV_EVENT);
    side_join(s);
    assert_true(s->rc < 0);
    assert_int_equal(read_pdu(fd, &type, &body, 5000), 0);
    assert_int_equal(type, PDU_ABORT);
    uint8_t src = 9, reason = 9;
    assert_int_equal(pdu_decode_abort(body.data, (uint32_t)body.len, &src, &reason, NULL), 0);
    assert_int_equal(src, PDU_ABORT_SRC_PROVIDER);
    assert_int_equal(reason, PDU_ABORT_INVALID_PARAM);
    assert_true(peer_closes(fd, 2000));
    assert_string_equal(ul_state_name(j.a), "Sta1");
    side_free(s);
    close(fd);
    ul_free(j.a);
    free(rq);
    dynbuf_free(&body);
}

static void test_release_by_acceptor(void **state)
{
    (void)state;
    struct ul_acceptor acc = acceptor_cfg();
    struct ul_assoc *rq_a, *ac_a;
    establish(&acc, echo_only, 1, REQ_MAX, &rq_a, &ac_a);
    struct side *s = side_start(rq_a, OP_RELEASE_REPLY);
    struct pacs_err err = {0};
    int rc = ul_release(ac_a, &err);
    side_join(s);
    assert_int_equal(rc, 0);
    assert_int_equal(s->rc, 0);
    assert_int_equal(s->ev_type, UL_EV_RELEASE);
    assert_int_equal(s->rc2, 0);
    assert_string_equal(ul_state_name(rq_a), "Sta1");
    assert_string_equal(ul_state_name(ac_a), "Sta1");
    side_free(s);
    ul_free(rq_a);
    ul_free(ac_a);
}

static void test_abort(void **state)
{
    (void)state;
    struct ul_acceptor acc = acceptor_cfg();
    struct ul_assoc *rq_a, *ac_a;
    struct pacs_err err = {0};
    struct ul_event ev;

    /* requestor aborts: the acceptor gets an abort indication */
    establish(&acc, echo_only, 1, REQ_MAX, &rq_a, &ac_a);
    struct side *s = side_start(ac_a, OP_RECV_EVENT);
    ul_abort(rq_a);
    side_join(s);
    assert_int_equal(s->rc, 0);
    assert_int_equal(s->ev_type, UL_EV_ABORTED);
    assert_string_equal(ul_state_name(rq_a), "Sta1");
    assert_string_equal(ul_state_name(ac_a), "Sta1");
    assert_true(ul_recv(ac_a, &ev, &err) < 0);
    assert_true(ul_send(ac_a, 1, true, "x", 1, true, &err) < 0);
    ul_abort(rq_a); /* again: harmless */
    side_free(s);
    ul_free(rq_a);
    ul_free(ac_a);

    /* acceptor aborts: the requestor gets it */
    establish(&acc, echo_only, 1, REQ_MAX, &rq_a, &ac_a);
    s = side_start(rq_a, OP_RECV_EVENT);
    ul_abort(ac_a);
    side_join(s);
    assert_int_equal(s->rc, 0);
    assert_int_equal(s->ev_type, UL_EV_ABORTED);
    side_free(s);
    ul_free(rq_a);
    ul_free(ac_a);

    /* ul_free on an established association aborts it */
    establish(&acc, echo_only, 1, REQ_MAX, &rq_a, &ac_a);
    s = side_start(ac_a, OP_RECV_EVENT);
    ul_free(rq_a);
    side_join(s);
    assert_int_equal(s->rc, 0);
    assert_int_equal(s->ev_type, UL_EV_ABORTED);
    side_free(s);
    ul_free(ac_a);
    ul_free(NULL);
}

/* Release collision, requestor side (PS3.8 9.2.3 / Table 9-10): in Sta7 the
 * requestor gets an A-RELEASE-RQ (Sta9), answers A-RELEASE-RP (Sta11), then
 * gets the acceptor's A-RELEASE-RP and closes (Sta1). The acceptor here is
 * a raw socket that collides on purpose. */
struct raw_acceptor {
    pthread_t t;
    int lfd;
    enum { RAW_COLLIDE, RAW_ABORT_ON_RELEASE, RAW_SILENT_ON_RELEASE, RAW_NO_ANSWER } mode;
    uint8_t seen[8];
    int n_seen;
    bool closed_by_peer;
    int fail;
};

static void *raw_acceptor_main(void *p)
{
    struct raw_acceptor *r = p;
    struct dynbuf body;
    dynbuf_init(&body, 0);
    uint8_t type;
    struct pdu_assoc *rq = calloc(1, sizeof *rq);
    int fd = accept(r->lfd, NULL, NULL);
    if (fd < 0 || !rq || read_pdu(fd, &type, &body, 5000) || type != PDU_ASSOC_RQ ||
        pdu_decode_assoc(body.data, (uint32_t)body.len, true, rq, NULL)) {
        r->fail = 1;
        goto out;
    }
    if (r->mode == RAW_NO_ANSWER) {
        r->closed_by_peer = peer_closes(fd, 10000);
        goto out;
    }
    /* accept every context in its first transfer syntax */
    for (unsigned i = 0; i < rq->n_pc; i++) {
        rq->pc[i].result = PDU_PC_ACCEPTANCE;
        rq->pc[i].n_ts = 1;
    }
    rq->n_role = 0;
    pdu_assoc_free(rq);
    rq->max_pdu_length = 16384;
    dynbuf_reset(&body);
    if (pdu_encode_assoc(rq, false, &body, NULL) || write_all(fd, body.data, body.len)) {
        r->fail = 2;
        goto out;
    }
    if (read_pdu(fd, &type, &body, 5000)) {
        r->fail = 3;
        goto out;
    }
    r->seen[r->n_seen++] = type; /* the A-RELEASE-RQ */
    dynbuf_reset(&body);
    switch (r->mode) {
    case RAW_COLLIDE:
        pdu_encode_release(true, &body);
        write_all(fd, body.data, body.len);
        if (read_pdu(fd, &type, &body, 5000) == 0)
            r->seen[r->n_seen++] = type; /* the requestor's A-RELEASE-RP */
        dynbuf_reset(&body);
        pdu_encode_release(false, &body);
        write_all(fd, body.data, body.len);
        break;
    case RAW_ABORT_ON_RELEASE:
        pdu_encode_abort(PDU_ABORT_SRC_USER, 0, &body);
        write_all(fd, body.data, body.len);
        break;
    default:
        break;
    }
    r->closed_by_peer = peer_closes(fd, 10000);
out:
    if (fd >= 0)
        close(fd);
    if (rq) {
        pdu_assoc_free(rq);
        free(rq);
    }
    dynbuf_free(&body);
    return NULL;
}

static int connect_to_raw(struct raw_acceptor *r, unsigned artim_ms, struct ul_assoc **a,
                          struct pacs_err *err)
{
    uint16_t port;
    r->lfd = listen_loopback(&port);
    assert_int_equal(pthread_create(&r->t, NULL, raw_acceptor_main, r), 0);
    struct ul_request req = request_cfg(port, echo_only, 1);
    req.to.artim_ms = artim_ms;
    return ul_connect(&req, 4, a, err);
}

static void finish_raw(struct raw_acceptor *r)
{
    assert_int_equal(pthread_join(r->t, NULL), 0);
    close(r->lfd);
}

static void test_release_collision(void **state)
{
    (void)state;
    struct raw_acceptor r = {.mode = RAW_COLLIDE};
    struct ul_assoc *a = NULL;
    struct pacs_err err = {0};
    assert_int_equal(connect_to_raw(&r, 3000, &a, &err), 0);
    int64_t t0 = now_ms();
    int rc = ul_release(a, &err);
    int64_t ms = now_ms() - t0;
    finish_raw(&r);
    assert_int_equal(r.fail, 0);
    assert_int_equal(rc, 0);
    assert_string_equal(ul_state_name(a), "Sta1");
    assert_int_equal(r.n_seen, 2);
    assert_int_equal(r.seen[0], PDU_RELEASE_RQ);
    assert_int_equal(r.seen[1], PDU_RELEASE_RP);
    assert_true(r.closed_by_peer);
    assert_true(ms < 1500); /* no timer involved */
    ul_free(a);
}

/* Both ends release at once with pacsd's own code on both sides: the
 * acceptor ends in Sta10 -> Sta12 and must then send its A-RELEASE-RP
 * (Evt14, AR-4), or both wait for ARTIM. */
static void test_release_collision_both(void **state)
{
    (void)state;
    struct ul_acceptor acc = acceptor_cfg();
    acc.to.artim_ms = 3000;
    struct ul_assoc *rq_a, *ac_a;
    establish(&acc, echo_only, 1, REQ_MAX, &rq_a, &ac_a);
    struct side *s = side_start(ac_a, OP_RELEASE);
    struct pacs_err err = {0};
    int64_t t0 = now_ms();
    int rc = ul_release(rq_a, &err);
    int64_t ms = now_ms() - t0;
    side_join(s);
    bool both_sta1 = strcmp(ul_state_name(rq_a), "Sta1") == 0 &&
                     strcmp(ul_state_name(ac_a), "Sta1") == 0;
    int acc_rc = s->rc;
    int64_t acc_ms = s->ms;
    side_free(s);
    ul_free(rq_a);
    ul_free(ac_a);
    assert_int_equal(rc, 0);
    assert_int_equal(acc_rc, 0);
    assert_true(both_sta1);
    assert_true(ms < 1500);
    assert_true(acc_ms < 1500);
}

/* ul_release must not report success when no A-RELEASE-RP came. */
static void test_release_not_confirmed(void **state)
{
    (void)state;
    struct pacs_err err = {0};
    struct ul_assoc *a = NULL;

    struct raw_acceptor r = {.mode = RAW_ABORT_ON_RELEASE};
    assert_int_equal(connect_to_raw(&r, 2000, &a, &err), 0);
    int rc1 = ul_release(a, &err);
    finish_raw(&r);
    bool sta1 = strcmp(ul_state_name(a), "Sta1") == 0;
    ul_free(a);
    assert_int_equal(r.fail, 0);
    assert_true(sta1);

    struct raw_acceptor q = {.mode = RAW_SILENT_ON_RELEASE};
    assert_int_equal(connect_to_raw(&q, 500, &a, &err), 0);
    int64_t t0 = now_ms();
    int rc2 = ul_release(a, &err);
    int64_t ms = now_ms() - t0;
    finish_raw(&q);
    sta1 = strcmp(ul_state_name(a), "Sta1") == 0;
    ul_free(a);
    assert_true(sta1);
    assert_true(ms >= 400 && ms < 3000);
    assert_true(q.closed_by_peer);
    assert_true(rc1 < 0); /* aborted by the peer, not released */
    assert_true(rc2 < 0); /* ARTIM expired without an A-RELEASE-RP */
}

static void test_timeouts(void **state)
{
    (void)state;
    struct pacs_err err = {0};
    struct ul_event ev;

    /* idle: the acceptor aborts after idle_ms without a PDU */
    struct ul_acceptor acc = acceptor_cfg();
    acc.to.idle_ms = 300;
    struct ul_assoc *rq_a, *ac_a;
    establish(&acc, echo_only, 1, REQ_MAX, &rq_a, &ac_a);
    int64_t t0 = now_ms();
    int rc = ul_recv(ac_a, &ev, &err);
    int64_t ms = now_ms() - t0;
    assert_true(rc < 0);
    assert_true(ms >= 250 && ms < 2000);
    assert_non_null(strstr(err.msg, "300 ms"));
    assert_string_equal(ul_state_name(ac_a), "Sta1");
    assert_false(ul_established(ac_a));
    /* ... and the requestor receives that A-ABORT */
    assert_int_equal(ul_recv(rq_a, &ev, &err), 0);
    assert_int_equal(ev.type, UL_EV_ABORTED);
    ul_free(rq_a);
    ul_free(ac_a);

    /* stalled inside a PDU: read_ms */
    acc = acceptor_cfg();
    acc.to.read_ms = 300;
    struct pdu_assoc *rq = raw_rq_new();
    struct dynbuf body;
    dynbuf_init(&body, 0);
    struct acc_job j;
    uint8_t type;
    int fd;
    raw_exchange(&acc, rq, &type, &body, &j, &fd);
    assert_int_equal(type, PDU_ASSOC_AC);
    uint8_t hdr[PDU_PDV_HEADER_LEN];
    pdu_pdv_header(hdr, 1, true, true, 100);
    assert_int_equal(write_all(fd, hdr, sizeof hdr), 0); /* and no data */
    t0 = now_ms();
    rc = ul_recv(j.a, &ev, &err);
    ms = now_ms() - t0;
    assert_true(rc < 0);
    assert_true(ms >= 250 && ms < 2000);
    assert_int_equal(read_pdu(fd, &type, &body, 2000), 0);
    assert_int_equal(type, PDU_ABORT);
    close(fd);
    ul_free(j.a);

    /* ARTIM: a connection that never sends an A-ASSOCIATE-RQ */
    acc = acceptor_cfg();
    acc.to.artim_ms = 300;
    uint16_t port;
    int lfd = listen_loopback(&port);
    acc_start(&j, lfd, &acc);
    fd = connect_loopback(port);
    assert_true(fd >= 0);
    t0 = now_ms();
    assert_true(peer_closes(fd, 3000)); /* closed, nothing sent */
    ms = now_ms() - t0;
    acc_join(&j);
    assert_true(j.rc < 0);
    assert_null(j.a);
    assert_true(ms >= 250 && ms < 2000);
    close(fd);
    close(lfd);

    /* ul_connect: an acceptor that never answers -> error after ARTIM */
    struct raw_acceptor r = {.mode = RAW_NO_ANSWER};
    struct ul_assoc *a = (struct ul_assoc *)&r;
    t0 = now_ms();
    rc = connect_to_raw(&r, 300, &a, &err);
    ms = now_ms() - t0;
    finish_raw(&r);
    assert_true(rc < 0);
    assert_null(a);
    assert_true(ms >= 250 && ms < 2000);
    assert_true(r.closed_by_peer);

    /* ul_connect: nobody listening */
    lfd = listen_loopback(&port);
    close(lfd);
    struct ul_request req = request_cfg(port, echo_only, 1);
    rc = ul_connect(&req, 5, &a, &err);
    assert_int_equal(rc, PACS_EIO);
    assert_null(a);
    /* and a bad request */
    req.n_proposals = 0;
    assert_int_equal(ul_connect(&req, 6, &a, &err), PACS_EINVAL);

    free(rq);
    dynbuf_free(&body);
}

/* Peer PDUs the state does not allow: A-ABORT (provider, unexpected-PDU). */
/* ARTIM bounds the whole A-ASSOCIATE-RQ, not only its first byte: a peer
 * trickling it is cut when ARTIM expires (PS3.8 AE-5 starts ARTIM on the
 * transport connection, AE-6 stops it when the RQ has been received). */
static void test_artim_trickle(void **state)
{
    (void)state;
    struct ul_acceptor acc = acceptor_cfg();
    acc.to.artim_ms = 300;
    struct pdu_assoc *rq = raw_rq_new();
    struct dynbuf body;
    dynbuf_init(&body, 0);
    struct pacs_err err = {0};
    assert_int_equal(pdu_encode_assoc(rq, true, &body, &err), 0);
    uint16_t port;
    int lfd = listen_loopback(&port);
    struct acc_job j;
    acc_start(&j, lfd, &acc);
    int fd = connect_loopback(port);
    assert_true(fd >= 0);
    int64_t t0 = now_ms();
    bool closed = false;
    for (size_t i = 0; i < body.len && now_ms() - t0 < 3000; i++) {
        if (write_all(fd, body.data + i, 1) || peer_closes(fd, 100)) {
            closed = true;
            break;
        }
    }
    int64_t ms = now_ms() - t0;
    close(fd);
    acc_join(&j);
    close(lfd);
    ul_free(j.a);
    free(rq);
    dynbuf_free(&body);
    assert_true(closed);
    assert_true(ms < 1500);
}

static void test_unexpected_pdus(void **state)
{
    (void)state;
    static const struct {
        uint8_t type;
        uint8_t reason;
    } cases[] = {
        {PDU_ASSOC_RQ, PDU_ABORT_UNEXPECTED_PDU},
        {PDU_ASSOC_AC, PDU_ABORT_UNEXPECTED_PDU},
        {PDU_ASSOC_RJ, PDU_ABORT_UNEXPECTED_PDU},
        {PDU_RELEASE_RP, PDU_ABORT_UNEXPECTED_PDU},
        {0x0A, PDU_ABORT_UNRECOGNIZED_PDU},
    };
    struct ul_acceptor acc = acceptor_cfg();
    struct pdu_assoc *rq = raw_rq_new();
    struct dynbuf body, out;
    dynbuf_init(&body, 0);
    dynbuf_init(&out, 0);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        struct acc_job j;
        uint8_t type;
        int fd;
        raw_exchange(&acc, rq, &type, &body, &j, &fd);
        assert_int_equal(type, PDU_ASSOC_AC);
        dynbuf_reset(&out);
        switch (cases[k].type) {
        case PDU_ASSOC_RQ:
        case PDU_ASSOC_AC:
            assert_int_equal(pdu_encode_assoc(rq, cases[k].type == PDU_ASSOC_RQ, &out, NULL), 0);
            break;
        case PDU_ASSOC_RJ:
            pdu_encode_reject(1, 1, 1, &out);
            break;
        case PDU_RELEASE_RP:
            pdu_encode_release(false, &out);
            break;
        default:
            dynbuf_append(&out, "\x0A\x00\x00\x00\x00\x04\x00\x00\x00\x00", 10);
        }
        assert_int_equal(write_all(fd, out.data, out.len), 0);
        struct ul_event ev;
        struct pacs_err err = {0};
        assert_true(ul_recv(j.a, &ev, &err) < 0);
        assert_string_equal(ul_state_name(j.a), "Sta1");
        assert_int_equal(read_pdu(fd, &type, &body, 2000), 0);
        assert_int_equal(type, PDU_ABORT);
        uint8_t src = 9, reason = 9;
        assert_int_equal(pdu_decode_abort(body.data, (uint32_t)body.len, &src, &reason, NULL), 0);
        assert_int_equal(src, PDU_ABORT_SRC_PROVIDER);
        assert_int_equal(reason, cases[k].reason);
        close(fd);
        ul_free(j.a);
    }
    free(rq);
    dynbuf_free(&body);
    dynbuf_free(&out);
}

static void test_state_names(void **state)
{
    (void)state;
    struct ul_acceptor acc = acceptor_cfg();
    struct ul_assoc *rq_a, *ac_a;
    establish(&acc, echo_only, 1, REQ_MAX, &rq_a, &ac_a);
    assert_string_equal(ul_state_name(rq_a), "Sta6");
    assert_string_equal(ul_state_name(ac_a), "Sta6");
    /* the acceptor got a release request: Sta8 until it answers */
    struct pacs_err err = {0};
    struct side *s = side_start(rq_a, OP_RELEASE);
    struct ul_event ev;
    assert_int_equal(ul_recv(ac_a, &ev, &err), 0);
    assert_int_equal(ev.type, UL_EV_RELEASE);
    assert_string_equal(ul_state_name(ac_a), "Sta8");
    assert_true(ul_established(ac_a));
    /* P-DATA may still go out in Sta8 (AR-7), and is delivered in Sta7 */
    assert_int_equal(ul_send(ac_a, 1, true, "abc", 3, true, &err), 0);
    assert_int_equal(ul_release_reply(ac_a, &err), 0);
    side_join(s);
    assert_int_equal(s->rc, 0);
    assert_string_equal(ul_state_name(ac_a), "Sta1");
    assert_string_equal(ul_state_name(rq_a), "Sta1");
    /* local primitives that the state does not allow are refused */
    assert_int_equal(ul_release_reply(ac_a, &err), PACS_EINVAL);
    assert_int_equal(ul_release(rq_a, &err), PACS_EINVAL);
    side_free(s);
    ul_free(rq_a);
    ul_free(ac_a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_negotiation),
        cmocka_unit_test(test_ac_contents),
        cmocka_unit_test(test_reject_reasons),
        cmocka_unit_test(test_fragmentation),
        cmocka_unit_test(test_oversized_pdu),
        cmocka_unit_test(test_release_by_acceptor),
        cmocka_unit_test(test_abort),
        cmocka_unit_test(test_release_collision),
        cmocka_unit_test(test_release_collision_both),
        cmocka_unit_test(test_release_not_confirmed),
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_artim_trickle),
        cmocka_unit_test(test_unexpected_pdus),
        cmocka_unit_test(test_state_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
