/* ingest.h - the one way an instance enters the archive, whatever front
 * door it came through (C-STORE, STOW-RS part, REST upload).
 *
 * Data path: bytes are fed as they arrive; the meta group and every element
 * before Pixel Data are parsed (never the pixels), all bytes go to a blob
 * writer as they come (memory stays bounded by the largest element before
 * the pixels); ingest_finish() commits the blob (fsync), queues the index
 * record for the group committer and returns once the transaction holding
 * it has committed. A return of 0 from ingest_finish() with a success
 * status means the instance is durable: only then may the front door
 * acknowledge.
 *
 * Lifecycle: ingest_begin -> ingest_feed* -> ingest_finish or ingest_abort
 * (exactly one, which frees the ingest). After a failed feed the caller
 * still calls ingest_finish (to learn the status) or ingest_abort.
 */
#ifndef PACS_INGEST_H
#define PACS_INGEST_H

#include <stddef.h>
#include <stdint.h>

#include "archive/archive.h"
#include "util/err.h"

struct ingest;

struct ingest_source {
    /* Raw data set (DIMSE): the negotiated transfer syntax, and the SOP
     * class/instance the command announced (checked against the data set:
     * a mismatch is status 0xA900). The archive writes a Part 10 file with
     * a meta group built from these (Source AE = remote_aet) followed by the
     * data set bytes exactly as received.
     * NULL ts_uid: the bytes are a Part 10 file (HTTP), stored verbatim. */
    const char *ts_uid;
    const char *sop_class_uid;
    const char *sop_instance_uid;
    const char *remote_aet;     /* calling AE title, or "" */
    /* Not NULL: the Study Instance UID the instance must have (STOW-RS to
     * /studies/{study}). Another study is status 0xA900 with a message
     * naming both UIDs, checked before anything is committed, so nothing
     * is stored. */
    const char *expect_study_uid;
    /* Largest accepted input, bytes (0: PACS_MAX_VALUE_LEN). */
    uint64_t max_size;
};

/* What happened, as a DIMSE status (PS3.4 B.2.3) that the HTTP front door
 * maps to its own codes. */
struct ingest_result {
    uint16_t status;            /* 0x0000 stored, 0xB000-range warning
                                   (e.g. 0xB007 data set does not match SOP
                                   class, stored anyway), 0xA700 out of
                                   resources, 0xA900 data set does not match
                                   SOP class, 0xC000 cannot understand,
                                   0xA7xx/0xC0xx per PS3.4 */
    char sop_class_uid[65];
    char sop_instance_uid[65];
    char study_uid[65];
    char series_uid[65];
    char transfer_syntax[65];
    uint64_t size;
    int duplicate;              /* 0 new, 1 replaced, 2 kept the first
                                   (status 0x0000), 3 rejected (status
                                   0x0111 Duplicate SOP Instance, PS3.7
                                   C.5.8, a failure) */
    char message[256];          /* why, for failures (Error Comment) */
};

/* What the archive stores, whatever the front door (C-STORE negotiation
 * asks the same before accepting a presentation context):
 * - a storage SOP class: one of dicom.storage_sop_classes when that list is
 *   set, else any valid UID under 1.2.840.10008.5.1.4.1.1. or a dictionary
 *   SOP class named "...Storage". Otherwise status 0x0122 (SOP Class not
 *   supported; STOW-RS FailureReason 0x0122);
 * - a transfer syntax of the standard: in the dictionary, or a valid UID
 *   under 1.2.840.10008.1.2. (newer syntaxes all use explicit little endian
 *   for the data set). A private or unknown one is status 0xC122 (STOW-RS:
 *   Referenced Transfer Syntax not supported). */
bool ingest_class_accepted(const struct pacs_config *cfg, const char *uid);
bool ingest_ts_accepted(const char *uid);

int ingest_begin(struct archive *a, const struct ingest_source *src, struct ingest **out,
                 struct pacs_err *err);
/* Returns 0, or a negative code once the input is known to be bad (the
 * rest of the input can then be dropped; finish gives the status). */
int ingest_feed(struct ingest *in, const void *p, size_t n, struct pacs_err *err);
/* Ends the input. Returns 0 with res->status filled (success or a DIMSE
 * failure status for bad input), or a negative code for an internal error
 * (res->status is then 0xA700 or 0xC000 too). Frees the ingest. */
int ingest_finish(struct ingest *in, struct ingest_result *res, struct pacs_err *err);
/* Drops the instance (association aborted). Frees the ingest. */
void ingest_abort(struct ingest *in);

#endif
