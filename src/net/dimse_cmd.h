/* dimse_cmd.h - DIMSE command sets (PS3.7 section 9 and annex E): a plain
 * struct and its encoding, no sockets, no data set model.
 *
 * A command set is a group-0000 data set, always Implicit VR Little Endian
 * (PS3.7 6.3.1), carried in the command PDVs of one message. The decoder
 * takes the reassembled bytes of those PDVs; the encoder produces them.
 *
 * Decoding rules (and why):
 * - every element's length is checked against the bytes present; undefined
 *   lengths are an error (a command set has no sequences);
 * - US must be 2 bytes and UL 4; a zero-length US is taken as absent (some
 *   peers send empty optional counts); AT is a multiple of 4, the first 8
 *   values are kept;
 * - UI values are at most 64 characters of digits and '.', AE values at
 *   most 16 without control characters; trailing NUL/space padding (and
 *   leading spaces of AE) are stripped; too long: PACS_EINVAL naming the tag.
 *   Error Comment (LO) is informational: cut to 64 characters (and at an
 *   embedded NUL), control characters replaced by '?', never rejected;
 * - CommandGroupLength (0000,0000) is optional and its value is not checked:
 *   the PDVs already delimit the command set, and DCMTK likewise ignores a
 *   wrong value. It must still be a 4-byte UL;
 * - the first element outside group 0000 ends the command set (DCMTK-based
 *   SCPs append the Failed SOP Instance UID List to a C-MOVE/C-GET
 *   response's command); unknown group-0000 elements
 *   (the N-* service ones such as Event Type ID) are skipped; a known
 *   element given twice is an error;
 * - CommandField (0000,0100) and CommandDataSetType (0000,0800) are
 *   required (both are mandatory in every command, and without the second
 *   the receiver cannot tell whether a data set follows). Which other fields
 *   a given command needs is the DIMSE service layer's check, not this one.
 *
 * Thread safety: no global state.
 */
#ifndef PACS_NET_DIMSE_CMD_H
#define PACS_NET_DIMSE_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/dynbuf.h"
#include "util/err.h"
#include "util/limits.h"

/* Largest command set accepted, bytes. A C-MOVE-RQ with every field is
 * under 300 bytes; this leaves room for unknown elements. */
#define DIMSE_MAX_CMD_LEN PACS_MAX_COMMAND_LEN

enum dimse_command_field {
    DIMSE_C_STORE_RQ = 0x0001,
    DIMSE_C_STORE_RSP = 0x8001,
    DIMSE_C_GET_RQ = 0x0010,
    DIMSE_C_GET_RSP = 0x8010,
    DIMSE_C_FIND_RQ = 0x0020,
    DIMSE_C_FIND_RSP = 0x8020,
    DIMSE_C_MOVE_RQ = 0x0021,
    DIMSE_C_MOVE_RSP = 0x8021,
    DIMSE_C_ECHO_RQ = 0x0030,
    DIMSE_C_ECHO_RSP = 0x8030,
    DIMSE_N_EVENT_REPORT_RQ = 0x0100,
    DIMSE_N_EVENT_REPORT_RSP = 0x8100,
    DIMSE_N_GET_RQ = 0x0110,
    DIMSE_N_GET_RSP = 0x8110,
    DIMSE_N_SET_RQ = 0x0120,
    DIMSE_N_SET_RSP = 0x8120,
    DIMSE_N_ACTION_RQ = 0x0130,
    DIMSE_N_ACTION_RSP = 0x8130,
    DIMSE_N_CREATE_RQ = 0x0140,
    DIMSE_N_CREATE_RSP = 0x8140,
    DIMSE_N_DELETE_RQ = 0x0150,
    DIMSE_N_DELETE_RSP = 0x8150,
    DIMSE_C_CANCEL_RQ = 0x0FFF,
};

/* CommandDataSetType: 0x0101 means no data set follows; PS3.7 9.3 lets any
 * other value mean one does (DCMTK sends 0x0000, some peers 0x0102/0xFEFE). */
#define DIMSE_DATASET_NONE 0x0101
#define DIMSE_DATASET_PRESENT 0x0000

/* Priority (0000,0700). */
#define DIMSE_PRIORITY_MEDIUM 0x0000
#define DIMSE_PRIORITY_HIGH 0x0001
#define DIMSE_PRIORITY_LOW 0x0002

/* Bits of struct dimse_cmd.present. CommandField and CommandDataSetType
 * have bits too (set by the decoder) but are always written. */
#define DIMSE_HAS_AFFECTED_SOP_CLASS (1u << 0)    /* (0000,0002) */
#define DIMSE_HAS_REQUESTED_SOP_CLASS (1u << 1)   /* (0000,0003) */
#define DIMSE_HAS_COMMAND_FIELD (1u << 2)         /* (0000,0100) */
#define DIMSE_HAS_MESSAGE_ID (1u << 3)            /* (0000,0110) */
#define DIMSE_HAS_MESSAGE_ID_RESPONDED (1u << 4)  /* (0000,0120) */
#define DIMSE_HAS_MOVE_DESTINATION (1u << 5)      /* (0000,0600) */
#define DIMSE_HAS_PRIORITY (1u << 6)              /* (0000,0700) */
#define DIMSE_HAS_DATASET_TYPE (1u << 7)          /* (0000,0800) */
#define DIMSE_HAS_STATUS (1u << 8)                /* (0000,0900) */
#define DIMSE_HAS_OFFENDING_ELEMENT (1u << 9)     /* (0000,0901) */
#define DIMSE_HAS_ERROR_COMMENT (1u << 10)        /* (0000,0902) */
#define DIMSE_HAS_AFFECTED_SOP_INSTANCE (1u << 11) /* (0000,1000) */
#define DIMSE_HAS_REQUESTED_SOP_INSTANCE (1u << 12) /* (0000,1001) */
#define DIMSE_HAS_REMAINING (1u << 13)            /* (0000,1020) */
#define DIMSE_HAS_COMPLETED (1u << 14)            /* (0000,1021) */
#define DIMSE_HAS_FAILED (1u << 15)               /* (0000,1022) */
#define DIMSE_HAS_WARNING (1u << 16)              /* (0000,1023) */
#define DIMSE_HAS_MOVE_ORIGINATOR_AET (1u << 17)  /* (0000,1030) */
#define DIMSE_HAS_MOVE_ORIGINATOR_ID (1u << 18)   /* (0000,1031) */

#define DIMSE_MAX_OFFENDING 8

/* A command set. Everything is inline: no ownership, copy freely. Strings
 * are NUL-terminated, without padding. A field counts only if its bit is in
 * `present`. */
struct dimse_cmd {
    uint16_t command_field;          /* (0000,0100) enum dimse_command_field */
    char affected_sop_class[65];     /* (0000,0002) */
    char requested_sop_class[65];    /* (0000,0003) */
    uint16_t message_id;             /* (0000,0110) */
    uint16_t message_id_responded;   /* (0000,0120) */
    char move_destination[17];       /* (0000,0600) */
    uint16_t priority;               /* (0000,0700) */
    uint16_t dataset_type;           /* (0000,0800); DIMSE_DATASET_NONE = no data set */
    uint16_t status;                 /* (0000,0900) */
    char affected_sop_instance[65];  /* (0000,1000) */
    char requested_sop_instance[65]; /* (0000,1001) */
    char error_comment[65];          /* (0000,0902) */
    uint16_t offending_element_n;    /* (0000,0901) AT, tags as 0xGGGGEEEE */
    uint32_t offending_element[DIMSE_MAX_OFFENDING];
    char move_originator_aet[17];    /* (0000,1030) */
    uint16_t move_originator_id;     /* (0000,1031) */
    uint16_t n_remaining, n_completed, n_failed, n_warning; /* (0000,1020..1023) */
    uint32_t present;                /* DIMSE_HAS_* */
};

/* Decodes a command set of n bytes (Implicit VR LE) into *out, which is
 * zeroed first. PACS_ELIMIT above DIMSE_MAX_CMD_LEN; PACS_ETRUNC when an
 * element overruns the input; PACS_EINVAL otherwise (rules at the top).
 * Messages name the tag and byte offset. Nothing to free. */
int dimse_cmd_decode(const uint8_t *p, size_t n, struct dimse_cmd *out, struct pacs_err *err);

/* Appends the command set to *out: CommandGroupLength (computed), then, in
 * tag order, CommandField and CommandDataSetType (always) and every other
 * field whose DIMSE_HAS_* bit is set. UIs are padded to even length with
 * NUL, AE/LO with a space. PACS_EINVAL if a string is not NUL-terminated
 * within its array or offending_element_n > DIMSE_MAX_OFFENDING;
 * PACS_ELIMIT/PACS_ENOMEM from the dynbuf. On error *out keeps its previous
 * length. */
int dimse_cmd_encode(const struct dimse_cmd *c, struct dynbuf *out, struct pacs_err *err);

/* "C-STORE-RQ", "N-ACTION-RSP", "C-CANCEL-RQ", or "unknown command".
 * Static, never NULL. */
const char *dimse_command_name(uint16_t command_field);

/* True for a response command field (bit 15 set). */
bool dimse_is_response(uint16_t command_field);

/* Status classes per PS3.7 annex C: success 0x0000; pending 0xFF00/0xFF01;
 * cancel 0xFE00; warning 0x0001, 0x0107, 0x0116, 0xB000-0xBFFF; failure
 * otherwise. */
enum dimse_status_class { DIMSE_SUCCESS, DIMSE_PENDING, DIMSE_CANCEL, DIMSE_WARNING, DIMSE_FAILURE };
enum dimse_status_class dimse_status_class(uint16_t status);
/* "success", "pending", "cancel", "warning", "failure". */
const char *dimse_status_class_name(enum dimse_status_class c);

#endif
