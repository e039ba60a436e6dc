/* ul.h - the DICOM upper layer (PS3.8): one association over one TCP
 * connection, as acceptor or requestor, driven by the state machine of
 * PS3.8 9.2 (states Sta1..Sta13, events Evt1..Evt19, actions AE/DT/AR/AA),
 * which ul.c holds as a table.
 *
 * Model: blocking I/O, one thread per association. The caller drives the
 * association with local primitives (accept, send, release, abort) and
 * ul_recv() turns what the peer sends into events. Every read waits at most
 * a timeout: ARTIM while associating or closing, idle_ms between PDUs in
 * data transfer, read_ms inside a PDU (a peer stalled mid-PDU), write_ms
 * for each write. A timeout, a malformed PDU or a PDU the state does not
 * allow ends the association with A-ABORT as PS3.8 prescribes.
 *
 * Ownership: an association owns its socket and frees everything in
 * ul_free(). Negotiation results are copied into compact ul_pc records, so
 * an association costs a few KB once established.
 */
#ifndef PACS_NET_UL_H
#define PACS_NET_UL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/pdu.h"
#include "util/err.h"

#define UL_APP_CONTEXT "1.2.840.10008.3.1.1.1"

/* A presentation context as negotiated. */
struct ul_pc {
    uint8_t id;
    uint8_t result;                        /* enum pdu_pc_result */
    char abstract_syntax[PDU_UID_LEN + 1];
    char ts[PDU_UID_LEN + 1];              /* the accepted transfer syntax */
    /* SCP/SCU role selection for the abstract syntax (PS3.7 D.3.3.4): the
     * requestor may act as SCP (C-GET: it receives the C-STOREs). */
    bool requestor_scp;
};

struct ul_timeouts {
    unsigned artim_ms, idle_ms, read_ms, write_ms;
};

struct ul_assoc;

/* --- acceptor ------------------------------------------------------------ */

struct ul_acceptor {
    const char *aet;                       /* our AE title */
    bool check_called_aet;                 /* reject other called titles */
    const char *const *allowed_calling;    /* NULL/0: any calling title */
    size_t n_allowed_calling;
    uint32_t max_pdu;                      /* largest P-DATA we accept */
    struct ul_timeouts to;
    bool over_limit;                       /* reject: local limit exceeded */
    /* Decides one proposed context: returns the index of the accepted
     * transfer syntax in pc->ts, or -1 with *result set to a PDU_PC_*
     * rejection. */
    int (*choose_ts)(void *ctx, const struct pdu_pc *pc, uint8_t *result);
    /* Whether to grant the requestor the SCP role it asks for (C-GET). */
    bool (*grant_scp_role)(void *ctx, const char *sop_class);
    void *ctx;
};

/* Reads the A-ASSOCIATE-RQ from a connected socket and answers it. On
 * success the association is established (Sta6) and owns fd. On failure
 * (rejected, aborted, timed out) *out is NULL, fd is closed, and err says
 * what happened; an A-ASSOCIATE-RJ or A-ABORT was sent as PS3.8 says.
 * Codes: PACS_EUNSUPPORTED rejected (RJ sent), PACS_EINVAL / PACS_ETRUNC /
 * PACS_ELIMIT a bad PDU (A-ABORT sent), PACS_EIO closed or timed out.
 * `peer` names the remote end for logs ("host:port"); `id` numbers the
 * association for logs. */
int ul_accept(int fd, const char *peer, uint64_t id, const struct ul_acceptor *acc,
              struct ul_assoc **out, struct pacs_err *err);

/* --- requestor ----------------------------------------------------------- */

struct ul_proposal {
    const char *abstract_syntax;
    const char *const *ts;     /* transfer syntaxes, in order of preference */
    size_t n_ts;
    bool request_scp_role;     /* ask to act as SCP (C-GET storage classes) */
};

struct ul_request {
    const char *calling_aet, *called_aet;
    const char *host;
    uint16_t port;
    uint32_t max_pdu;          /* largest P-DATA we accept */
    struct ul_timeouts to;     /* artim_ms also bounds connect() */
    const struct ul_proposal *proposals;
    size_t n_proposals;        /* 1..PDU_MAX_PCS; ids 1, 3, 5... in order */
};

/* Connects, proposes and waits for the answer. 0: established, *out owns
 * the connection (some contexts may be rejected: see ul_pcs). A rejection
 * gives PACS_EUNSUPPORTED with the reason in err; a failure to connect or a
 * protocol error PACS_EIO / PACS_EINVAL. */
int ul_connect(const struct ul_request *req, uint64_t id, struct ul_assoc **out,
               struct pacs_err *err);

/* --- established association --------------------------------------------- */

const struct ul_pc *ul_pcs(const struct ul_assoc *a, size_t *n);
const struct ul_pc *ul_pc_by_id(const struct ul_assoc *a, uint8_t id);
/* The accepted context for an abstract syntax, preferring transfer syntax
 * ts when given (NULL: the first accepted); NULL if none. */
const struct ul_pc *ul_pc_find(const struct ul_assoc *a, const char *abstract_syntax,
                               const char *ts);
const char *ul_calling_aet(const struct ul_assoc *a);
const char *ul_called_aet(const struct ul_assoc *a);
const char *ul_peer(const struct ul_assoc *a);
uint64_t ul_id(const struct ul_assoc *a);
/* The peer's implementation class UID and version name ("" if absent). */
const char *ul_peer_impl(const struct ul_assoc *a, const char **version);
/* User identity the requestor sent (NULL if none): passed on to the
 * service layer, not checked here. */
const struct pdu_user_identity *ul_user_identity(const struct ul_assoc *a);

enum ul_event_type {
    UL_EV_PDV,       /* ev->pdv holds one PDV, valid until the next ul_recv */
    UL_EV_RELEASE,   /* the peer asked to release: answer with
                        ul_release_reply() (after finishing any reply) */
    UL_EV_ABORTED,   /* the peer aborted or closed: the association is over */
};
struct ul_event {
    enum ul_event_type type;
    struct pdu_pdv pdv;
};

/* The next event from the peer. Errors (timeout, malformed or unexpected
 * PDU) abort the association and return a negative code; afterwards every
 * call fails. */
int ul_recv(struct ul_assoc *a, struct ul_event *ev, struct pacs_err *err);

/* True while the association is established (data may be exchanged). */
bool ul_established(const struct ul_assoc *a);

/* True when an event is waiting: a PDV already received but not handed
 * out, or bytes on the socket. Never blocks. */
bool ul_readable(struct ul_assoc *a);

/* Sends n bytes of a command or data set on context pc_id as P-DATA-TF
 * PDUs no larger than the peer accepts. `last` marks the final fragment of
 * the command or data set (a message part may be sent over several calls,
 * only the final one with last = true). */
int ul_send(struct ul_assoc *a, uint8_t pc_id, bool command, const void *p, size_t n,
            bool last, struct pacs_err *err);

/* Requestor: A-RELEASE-RQ, waits for the RP (answering a release collision
 * as PS3.8 says), closes. */
int ul_release(struct ul_assoc *a, struct pacs_err *err);
/* Acceptor, after UL_EV_RELEASE: A-RELEASE-RP, then waits (ARTIM) for the
 * peer to close. */
int ul_release_reply(struct ul_assoc *a, struct pacs_err *err);
/* A-ABORT (source: service-user) and close. Safe in any state. */
void ul_abort(struct ul_assoc *a);
/* Closes (aborting if still established) and frees. NULL is fine. */
void ul_free(struct ul_assoc *a);

/* Name of a state, "Sta1".."Sta13", for logs and tests. */
const char *ul_state_name(const struct ul_assoc *a);

#endif
