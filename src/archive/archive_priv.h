/* archive_priv.h - the group committer's interface, shared by archive.c and
 * ingest.c only (not a public contract).
 *
 * An ingest hands its index record to archive_commit(), which queues it and
 * blocks until the committer has made the batch holding it durable (blob
 * names synced, then one index transaction) or has failed it. Before waking
 * the waiters the committer deletes the blobs the outcome made obsolete: the
 * replaced instance's old blob (REPLACED), or the new blob (KEPT, REJECTED,
 * FAILED).
 */
#ifndef PACS_ARCHIVE_PRIV_H
#define PACS_ARCHIVE_PRIV_H

#include <stdint.h>

#include "archive/archive.h"
#include "store/index.h"
#include "util/err.h"

/* Most records committed in one transaction. */
#define ARCHIVE_BATCH_MAX 512

/* Commits one record. `rec` (and what it points to) is the caller's and must
 * stay valid until this returns. Returns 0 with *outcome set (INDEX_FAILED
 * with detail in err when the record, or its whole batch, could not be
 * committed), or PACS_EINVAL if the archive is closed. */
int archive_commit(struct archive *a, const struct index_record *rec,
                   enum index_insert_outcome *outcome, struct pacs_err *err);

/* A fresh random blob key: 32 lowercase hex digits. */
int archive_random_key(char key[33], struct pacs_err *err);

/* What the committer has done since open (tests, metrics). */
struct archive_commit_stats {
    uint64_t batches;   /* transactions attempted */
    uint64_t records;   /* records in them */
    uint64_t max_batch; /* largest batch */
    uint64_t failed_batches;
};
void archive_get_commit_stats(struct archive *a, struct archive_commit_stats *out);

#endif
