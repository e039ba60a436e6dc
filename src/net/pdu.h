/* pdu.h - DICOM upper-layer PDUs (PS3.8 section 9.3): pure encoders and
 * decoders over buffers, no sockets.
 *
 * Every PDU starts with a 6-byte header: type (1 byte), reserved (1 byte),
 * body length (4 bytes, big endian). The caller reads the header, checks it
 * with pdu_parse_header(), reads exactly `len` more bytes and hands that body
 * to the decoder of the type. Encoders append the whole PDU (header included)
 * to a dynbuf; P-DATA-TF is written as a 12-byte header the caller sends
 * before the data, so data sets are never copied.
 *
 * Errors: PACS_EINVAL for malformed input, PACS_ETRUNC when a structure runs
 * past the end of the body, PACS_ELIMIT past one of the limits below; the
 * message names the item and its byte offset in the PDU (header included,
 * so offsets match a packet capture). Reserved fields are neither checked
 * nor preserved (PS3.8 9.3.1: "shall be ignored when received"); they are
 * written as zero (AE-title reserved fields of an AC: see pdu_encode_assoc).
 *
 * Strictness, where PS3.8 is stricter than deployed peers (each choice
 * follows DCMTK and Orthanc, which must interoperate with us):
 * - the User Information item (0x50) and its Maximum Length sub-item (0x51)
 *   are mandatory in PS3.8, but an RQ/AC without them is accepted:
 *   max_pdu_length is then 0 (= no limit, as PS3.8 D.1 defines 0) and
 *   impl_class_uid is "";
 * - the Implementation Version Name (0x55) is truncated to 16 characters
 *   when a peer sends more, and control characters in it become '?' (it is
 *   informational only and goes to logs);
 * - SCU/SCP role values other than 0/1 are taken as 1;
 * - AE titles: leading and trailing spaces (and trailing NULs) are not
 *   significant; in an RQ an empty or all-space title or one with control
 *   characters is rejected; in an AC the AE-title fields "shall not be
 *   tested" (PS3.8 9.3.3) and are only trimmed;
 * - UIDs: at most 64 characters of digits and '.', trailing NUL or space
 *   padding tolerated;
 * - in an AC, a presentation context that was not accepted (result != 0)
 *   may omit its transfer syntax sub-item or carry any value there; only the
 *   accepted ones are checked;
 * - the protocol version is returned, not checked: rejecting a peer without
 *   bit 0 is the state machine's job (A-ASSOCIATE-RJ 1/2/2);
 * - the application context name is checked to be a UID, not compared with
 *   1.2.840.10008.3.1.1.1 (likewise the caller's choice: RJ 1/1/2);
 * - unknown item types at PDU level or inside a presentation context are
 *   rejected; unknown User Information sub-items, and SOP Class Extended
 *   (0x56) / Common Extended (0x57) negotiation, are skipped after their
 *   length is checked; a singleton sub-item (0x51, 0x52, 0x53, 0x55,
 *   0x58/0x59) given twice is rejected, as are duplicate presentation
 *   context IDs.
 *
 * Thread safety: no global state; every function is reentrant.
 */
#ifndef PACS_NET_PDU_H
#define PACS_NET_PDU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/dynbuf.h"
#include "util/err.h"
#include "util/limits.h"

/* --- limits (protocol sizes; the values on outside input come from
 * util/limits.h) ----------------------------------------------------------- */

/* Most presentation contexts in one association: IDs are odd 1..255, so
 * PS3.8 itself allows no more than 128. Also the most role-selection
 * sub-items accepted. */
#define PDU_MAX_PCS 128
/* Most transfer syntaxes proposed in one presentation context (DCMTK's
 * storescu proposes 3 by default, a few more with its --propose options);
 * a context proposing more is rejected with PACS_ELIMIT. */
#define PDU_MAX_TS_PER_PC 32
/* Largest A-ASSOCIATE-RQ/AC body accepted. 128 contexts of 3 transfer
 * syntaxes (what storescu sends for every storage class) take ~15 KiB. */
#define PDU_MAX_ASSOC_LEN PACS_MAX_ASSOC_PDU_LEN
/* Largest User Identity primary or secondary field (a JWT is a few KiB;
 * signed SAML assertions stay well under this). */
#define PDU_MAX_USER_IDENTITY_LEN PACS_MAX_USER_IDENTITY_LEN
/* AE titles are 16 characters; UIDs 64 (PS3.5). */
#define PDU_AE_LEN 16
#define PDU_UID_LEN 64

/* --- header -------------------------------------------------------------- */

enum pdu_type {
    PDU_ASSOC_RQ = 0x01,
    PDU_ASSOC_AC = 0x02,
    PDU_ASSOC_RJ = 0x03,
    PDU_P_DATA = 0x04,
    PDU_RELEASE_RQ = 0x05,
    PDU_RELEASE_RP = 0x06,
    PDU_ABORT = 0x07,
};

#define PDU_HEADER_LEN 6

/* Parses a 6-byte PDU header. *type and *len are always filled (also on
 * error) so the caller can choose the A-ABORT reason. Errors:
 * - unknown type: PACS_EINVAL (A-ABORT reason 1, unrecognized PDU);
 * - P-DATA-TF longer than max_len: PACS_ELIMIT (max_len is the caller's
 *   own Maximum Length as announced in sub-item 0x51, which PS3.8 D.1
 *   applies to P-DATA-TF only; 0 = no limit);
 * - A-ASSOCIATE-RQ/AC longer than PDU_MAX_ASSOC_LEN, or shorter than the
 *   68-byte fixed part: PACS_ELIMIT / PACS_EINVAL;
 * - A-ASSOCIATE-RJ, A-RELEASE-RQ/RP, A-ABORT whose length is not 4:
 *   PACS_EINVAL (A-ABORT reason 6, invalid PDU parameter value).
 * An empty P-DATA-TF (len 0) passes; pdu_next_pdv() then returns 0 at once
 * and the caller decides (PS3.8 wants at least one PDV). */
int pdu_parse_header(const uint8_t h[PDU_HEADER_LEN], uint32_t max_len, uint8_t *type,
                     uint32_t *len, struct pacs_err *err);

/* --- A-ASSOCIATE-RQ / -AC ----------------------------------------------- */

/* Presentation context result/reason (AC item 0x21). */
enum pdu_pc_result {
    PDU_PC_ACCEPTANCE = 0,
    PDU_PC_USER_REJECTION = 1,
    PDU_PC_NO_REASON = 2,
    PDU_PC_ABSTRACT_SYNTAX_NOT_SUPPORTED = 3,
    PDU_PC_TRANSFER_SYNTAXES_NOT_SUPPORTED = 4,
};

/* A presentation context item (0x20 in an RQ, 0x21 in an AC). */
struct pdu_pc {
    uint8_t id;                         /* odd, 1..255 */
    uint8_t result;                     /* AC only: enum pdu_pc_result */
    char abstract_syntax[PDU_UID_LEN + 1]; /* RQ only */
    char ts[PDU_MAX_TS_PER_PC][PDU_UID_LEN + 1]; /* RQ: proposed, in order;
                                           AC: the accepted one in ts[0] */
    uint8_t n_ts;                       /* RQ: >= 1; AC: 1, or 0 when the
                                           context was not accepted and
                                           carried no usable syntax */
};

/* SCP/SCU Role Selection sub-item (0x54, PS3.7 D.3.3.4). */
struct pdu_role {
    char sop_class[PDU_UID_LEN + 1];
    bool scu;
    bool scp;
};

/* User Identity Negotiation (PS3.7 D.3.3.7): sub-item 0x58 in an RQ, 0x59
 * in an AC. */
enum pdu_user_identity_type {
    PDU_UID_USERNAME = 1,
    PDU_UID_USERNAME_PASSCODE = 2,
    PDU_UID_KERBEROS = 3,
    PDU_UID_SAML = 4,
    PDU_UID_JWT = 5,
};
struct pdu_user_identity {
    bool present;                       /* the sub-item was / is to be sent */
    uint8_t type;                       /* RQ: enum pdu_user_identity_type; AC: 0 */
    bool positive_response_requested;   /* RQ only */
    /* RQ: primary field (username, ticket, assertion, token); AC: the
     * server response (may be empty). Heap, owned by the struct pdu_assoc
     * (freed by pdu_assoc_free); NULL when the length is 0. */
    uint8_t *primary;
    uint16_t primary_len;
    /* RQ only: secondary field (passcode for type 2), else NULL/0. Owned
     * likewise. */
    uint8_t *secondary;
    uint16_t secondary_len;
};

/* An A-ASSOCIATE-RQ or -AC. About 280 KiB (the transfer syntax table):
 * allocate it on the heap. A zeroed struct is a valid empty value. Only
 * user_identity's buffers are heap-allocated; everything else is inline. */
struct pdu_assoc {
    uint16_t protocol_version;          /* bit 0 set = version 1 */
    char called_aet[PDU_AE_LEN + 1];    /* spaces trimmed, NUL-terminated */
    char calling_aet[PDU_AE_LEN + 1];
    char app_context[PDU_UID_LEN + 1];  /* 1.2.840.10008.3.1.1.1 */
    struct pdu_pc pc[PDU_MAX_PCS];
    unsigned n_pc;
    /* User Information (0x50) */
    uint32_t max_pdu_length;            /* 0x51; 0 = no limit (also when absent) */
    char impl_class_uid[PDU_UID_LEN + 1]; /* 0x52; "" if absent */
    char impl_version[PDU_AE_LEN + 1];  /* 0x55; "" if absent */
    bool has_async;                     /* 0x53 */
    uint16_t max_ops_invoked, max_ops_performed;
    struct pdu_role role[PDU_MAX_PCS];  /* 0x54, in order received */
    unsigned n_role;
    struct pdu_user_identity user_identity; /* 0x58 / 0x59 */
};

/* Decodes the body (bytes after the 6-byte header, len of them) of an
 * A-ASSOCIATE-RQ (is_rq) or -AC into *out, which is overwritten (not freed
 * first: pass a zeroed or freed struct). On success the caller owns *out and
 * must pdu_assoc_free() it; on error nothing is left allocated (the other
 * fields of *out are then partly filled: do not use them).
 * RQ: at least one presentation context is required (PS3.8 9.3.2).
 * Errors as described at the top of this file; more than PDU_MAX_PCS
 * contexts or role items, or more than PDU_MAX_TS_PER_PC transfer syntaxes
 * in a context: PACS_ELIMIT. */
int pdu_decode_assoc(const uint8_t *body, uint32_t len, bool is_rq, struct pdu_assoc *out,
                     struct pacs_err *err);

/* Frees user identity buffers and zeroes user_identity. Safe on a zeroed
 * struct; the rest of *a stays valid. */
void pdu_assoc_free(struct pdu_assoc *a);

/* Appends a whole A-ASSOCIATE-RQ (is_rq) or -AC PDU, header included, to
 * *out. AE titles are space-padded to 16 (in an AC they should be copied
 * from the RQ, as PS3.8 asks). Writes items in DCMTK's order: application
 * context, presentation contexts, user information with 0x51 (always),
 * 0x52 and 0x55 (if non-empty), 0x53 (if has_async), 0x54 (each role),
 * 0x58/0x59 (if user_identity.present). An AC context with result != 0
 * and n_ts 0 gets an empty transfer syntax sub-item.
 * PACS_EINVAL if a field does not fit its encoding (string not terminated
 * within its array, n_pc/n_ts/n_role out of range, RQ context without
 * transfer syntax, user information over 65535 bytes); PACS_ELIMIT or
 * PACS_ENOMEM from the dynbuf. On error *out is left as it was before the
 * call (same length). */
int pdu_encode_assoc(const struct pdu_assoc *a, bool is_rq, struct dynbuf *out,
                     struct pacs_err *err);

/* --- A-ASSOCIATE-RJ ------------------------------------------------------ */

enum pdu_rj_result { PDU_RJ_PERMANENT = 1, PDU_RJ_TRANSIENT = 2 };
enum pdu_rj_source {
    PDU_RJ_SRC_USER = 1,         /* DICOM UL service-user */
    PDU_RJ_SRC_ACSE = 2,         /* service-provider (ACSE related) */
    PDU_RJ_SRC_PRESENTATION = 3, /* service-provider (presentation related) */
};
/* Reasons, by source (PS3.8 9.3.4). */
#define PDU_RJ_USER_NO_REASON 1
#define PDU_RJ_USER_APP_CONTEXT_NOT_SUPPORTED 2
#define PDU_RJ_USER_CALLING_AE_NOT_RECOGNIZED 3
#define PDU_RJ_USER_CALLED_AE_NOT_RECOGNIZED 7
#define PDU_RJ_ACSE_NO_REASON 1
#define PDU_RJ_ACSE_PROTOCOL_VERSION_NOT_SUPPORTED 2
#define PDU_RJ_PRES_TEMPORARY_CONGESTION 1
#define PDU_RJ_PRES_LOCAL_LIMIT_EXCEEDED 2

/* Body must be 4 bytes (reserved, result, source, reason). Values are
 * returned unchecked (they are only logged). */
int pdu_decode_reject(const uint8_t *body, uint32_t len, uint8_t *result, uint8_t *source,
                      uint8_t *reason, struct pacs_err *err);
/* Appends the 10-byte PDU. PACS_ELIMIT/PACS_ENOMEM from the dynbuf. */
int pdu_encode_reject(uint8_t result, uint8_t source, uint8_t reason, struct dynbuf *out);

/* --- A-ABORT -------------------------------------------------------------- */

#define PDU_ABORT_SRC_USER 0     /* DICOM UL service-user */
#define PDU_ABORT_SRC_PROVIDER 2 /* DICOM UL service-provider */
/* Reasons when the source is the provider (PS3.8 9.3.8). */
#define PDU_ABORT_NOT_SPECIFIED 0
#define PDU_ABORT_UNRECOGNIZED_PDU 1
#define PDU_ABORT_UNEXPECTED_PDU 2
#define PDU_ABORT_UNRECOGNIZED_PARAM 4
#define PDU_ABORT_UNEXPECTED_PARAM 5
#define PDU_ABORT_INVALID_PARAM 6

/* Body must be 4 bytes (reserved, reserved, source, reason); unchecked
 * values. */
int pdu_decode_abort(const uint8_t *body, uint32_t len, uint8_t *source, uint8_t *reason,
                     struct pacs_err *err);
int pdu_encode_abort(uint8_t source, uint8_t reason, struct dynbuf *out);

/* --- A-RELEASE-RQ / -RP -------------------------------------------------- */

/* Appends A-RELEASE-RQ (is_rq) or A-RELEASE-RP, 10 bytes. */
int pdu_encode_release(bool is_rq, struct dynbuf *out);
/* Body must be 4 reserved bytes. */
int pdu_decode_release(const uint8_t *body, uint32_t len, struct pacs_err *err);

/* --- P-DATA-TF ------------------------------------------------------------ */

/* One Presentation Data Value item. data points into the body given to
 * pdu_next_pdv (borrowed; valid while that buffer is). */
struct pdu_pdv {
    uint8_t pc_id;
    bool command;    /* message control header bit 0: command, else data set */
    bool last;       /* bit 1: last fragment of the command / data set */
    const uint8_t *data;
    uint32_t len;    /* may be 0 */
};

/* Iterates the PDVs of a P-DATA-TF body (len bytes after the PDU header).
 * *pos starts at 0 and is advanced past each PDV. Returns 1 with *out
 * filled, 0 at the end of the body, or a negative error (PDV item length
 * < 2 or running past the body, fewer than 4 bytes left for an item
 * length, presentation context ID 0 or even); after an error the rest of
 * the body is unusable. */
int pdu_next_pdv(const uint8_t *body, uint32_t len, uint32_t *pos, struct pdu_pdv *out,
                 struct pacs_err *err);

#define PDU_PDV_HEADER_LEN 12
/* Writes the header of a P-DATA-TF PDU holding one PDV of data_len bytes:
 * 6-byte PDU header, 4-byte PDV length, context ID, message control header.
 * The caller sends hdr then the data_len bytes. data_len must be at most
 * UINT32_MAX - 6 (in practice the peer's Maximum Length minus 6). */
void pdu_pdv_header(uint8_t hdr[PDU_PDV_HEADER_LEN], uint8_t pc_id, bool command, bool last,
                    uint32_t data_len);

/* --- names for logs (static strings, never NULL) ------------------------- */

/* "A-ASSOCIATE-RQ", ..., "P-DATA-TF", "unknown PDU". */
const char *pdu_type_name(uint8_t type);
/* "acceptance", "user-rejection", ... for enum pdu_pc_result. */
const char *pdu_pc_result_name(uint8_t result);
/* PS3.8 wording of an A-ASSOCIATE-RJ source/reason ("called-AE-title-not-
 * recognized", ...). */
const char *pdu_reject_reason_name(uint8_t source, uint8_t reason);
/* PS3.8 wording of an A-ABORT source/reason ("unexpected-PDU", ...). */
const char *pdu_abort_reason_name(uint8_t source, uint8_t reason);

#endif
