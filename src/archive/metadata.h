/* metadata.h - the stored metadata (DICOM JSON) of the instances of a
 * study, series or single instance: WADO-RS /metadata. Read from the index
 * alone (ingest stored it), never from the files.
 *
 * The stored JSON names bulk data by relative URIs ("bulk/7FE00010",
 * "bulk/00540016/0/00181234"); a hook rewrites each into what the client
 * can resolve. Everything else is passed through byte for byte.
 */
#ifndef PACS_ARCHIVE_METADATA_H
#define PACS_ARCHIVE_METADATA_H

#include <stddef.h>

#include "archive/archive.h"
#include "util/dynbuf.h"
#include "util/err.h"

/* Appends the replacement for a stored BulkDataURI value to out, as JSON
 * string content (escaped): rel is the stored value (as it appears in the
 * JSON), study/series/instance the UIDs of the instance holding it.
 * Returns 0 or a PACS_E* code that stops the collection. */
typedef int (*metadata_bulk_fn)(void *ctx, const char *study, const char *series,
                                const char *instance, const char *rel, struct dynbuf *out);

/* Appends a JSON array of the stored metadata of every instance of study
 * (series, instance: NULL for all), in index order, to out, and sets *count
 * to the number of instances (0: none matched, "[]" appended). UIDs are
 * matched exactly. bulk may be NULL (URIs left as stored). Errors: index
 * errors, PACS_EIO for an instance without stored metadata, PACS_ENOMEM,
 * PACS_ELIMIT when out's maximum is reached. */
int metadata_collect(struct archive *a, const char *study, const char *series,
                     const char *instance, metadata_bulk_fn bulk, void *ctx, struct dynbuf *out,
                     size_t *count, struct pacs_err *err);

/* Copies one JSON text to out, passing the value of every "BulkDataURI"
 * member to bulk (see above). Exposed for tests. PACS_EINVAL for an
 * unterminated string. */
int metadata_rewrite(const char *json, size_t len, metadata_bulk_fn bulk, void *ctx,
                     const char *study, const char *series, const char *instance,
                     struct dynbuf *out, struct pacs_err *err);

#endif
