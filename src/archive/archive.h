/* archive.h - the archive: the index and the blob store opened together,
 * and the group committer that makes ingested instances durable.
 *
 * Contract
 * - archive_open() opens (creating) the store under cfg->data_dir: the
 *   index (data_dir/index.db) and the files (data_dir/files/), runs index
 *   migrations, removes temporary files of puts that never committed and
 *   files that no index row refers to (orphans of a crash between file and
 *   index commit), and starts the committer thread.
 * - archive_close() waits for every queued instance to be committed (or
 *   failed), stops the committer and closes the stores. No ingest, query or
 *   retrieve may be running.
 * - The archive is thread-safe: any number of ingests, queries and
 *   retrieves may run at once.
 */
#ifndef PACS_ARCHIVE_H
#define PACS_ARCHIVE_H

#include <stdint.h>

#include "store/blob.h"
#include "store/index.h"
#include "util/config.h"
#include "util/err.h"

struct archive;

struct archive_startup {
    unsigned temp_removed;    /* temporary files removed */
    unsigned orphans_removed; /* committed files no index row referred to */
};

/* cfg must outlive the archive. `st` may be NULL. */
int archive_open(const struct pacs_config *cfg, struct archive **out,
                 struct archive_startup *st, struct pacs_err *err);
void archive_close(struct archive *a);

/* The stores, for the query and retrieve paths (owned by the archive). */
struct index *archive_index(struct archive *a);
struct blob_store *archive_blobs(struct archive *a);
const struct pacs_config *archive_config(struct archive *a);

/* Readiness checks (health probes): the index answers a one-row query;
 * the store takes a small put, commit and delete, as an ingest would,
 * under a key "healthprobe<16 hex>" (its own directory, "he", which the
 * archive's hex keys never use).
 * 0, or the error that makes the archive unready. */
int archive_check_index(struct archive *a, struct pacs_err *err);
int archive_check_storage(struct archive *a, struct pacs_err *err);

#endif
