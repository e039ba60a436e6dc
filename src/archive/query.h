/* query.h - the query model shared by C-FIND, QIDO-RS and /tools/find, and
 * the one query function that answers it.
 *
 * A query has a level, a model (Patient Root or Study Root: which levels
 * above the query level may carry keys), matching keys and return keys.
 * Matching follows PS3.4 C.2.2.2: universal (empty value), single value,
 * wildcard (* and ?), range (DA, TM, DT: "a-b", "a-", "-b"), list of UIDs
 * (backslash-separated), and PN with case-insensitive comparison (as
 * Orthanc does by default). Keys on main tags (store/index.h) are matched
 * by the index; other keys are matched on the stored metadata of the
 * entity's first instance. Sequence keys are return keys only.
 *
 * Answers are data sets holding the requested keys (values from the index,
 * the computed attributes such as NumberOfStudyRelatedInstances and
 * ModalitiesInStudy, or the stored metadata), QueryRetrieveLevel, and
 * Specific Character Set "ISO_IR 192" when any value is not ASCII (the
 * index holds UTF-8).
 */
#ifndef PACS_QUERY_H
#define PACS_QUERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "archive/archive.h"
#include "dicom/dataset.h"
#include "store/index.h"
#include "util/err.h"

enum query_model { QUERY_PATIENT_ROOT, QUERY_STUDY_ROOT };

struct query;

/* Builds a query from a C-FIND identifier. The identifier is decoded with
 * its own Specific Character Set. PACS_EINVAL (DIMSE 0xA900 "identifier
 * does not match SOP class") for a missing or bad QueryRetrieveLevel, a key
 * below the level, a key of a level above the model's root, or a malformed
 * range; PACS_EUNSUPPORTED (0xC000) otherwise unanswerable. The identifier
 * is not kept: it may be freed after this returns. */
int query_from_identifier(const struct dcm_ds *ident, enum query_model model,
                          struct query **out, struct pacs_err *err);

/* Builds a query from parts: level, then keys one by one (for QIDO-RS).
 * `value` is UTF-8 text in the DICOM query syntax; empty = return key only.
 * query_add_key for a tag that is already there replaces it. */
int query_new(enum index_level level, enum query_model model, struct query **out);
int query_add_key(struct query *q, uint32_t tag, const char *value, struct pacs_err *err);
void query_set_limit(struct query *q, size_t limit, size_t offset);
/* Also return every main tag of the level (QIDO default and includefield=all
 * of the levels; C-FIND returns only what was asked). */
void query_include_main_tags(struct query *q, bool on);
/* Every key with a value in the metadata (includefield=all). */
void query_include_all(struct query *q, bool on);

enum index_level query_level(const struct query *q);
void query_free(struct query *q);

/* Runs the query. For each match builds a root data set (the caller's to
 * free with dcm_ds_free, in the callback or later) and calls cb; a non-zero
 * return from cb stops the query (C-CANCEL) and is returned. Its duration,
 * callbacks included, goes to pacsd_query_duration_seconds{level}. */
int query_run(struct archive *a, const struct query *q,
              int (*cb)(void *ctx, struct dcm_ds *answer), void *ctx, struct pacs_err *err);

#endif
