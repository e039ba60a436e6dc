/* resources.h - the archive seen as Orthanc sees it: patients, studies,
 * series and instances named by public ids, with their parents, children,
 * statistics, deletion at every level and the change log. What the REST
 * door (src/http/rest*.c) calls; it never reaches the index itself.
 *
 * Public ids are Orthanc's (index_public_id in store/index.h): the SHA-1
 * of the UID chain, so the same file has the same id in Orthanc and pacsd,
 * and an id can be computed from UIDs without a lookup.
 *
 * Every function is thread-safe. Strings handed to callbacks are valid
 * during the callback only.
 */
#ifndef PACS_RESOURCES_H
#define PACS_RESOURCES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "archive/archive.h"
#include "archive/retrieve.h"
#include "store/index.h"
#include "util/err.h"

#define RES_ID_LEN INDEX_PUBLIC_ID_LEN

/* The public id at level from UIDs (uids[0..level]: PatientID,
 * StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID; NULL = ""). */
int resources_public_id(enum index_level level, const char *const uids[4],
                        char out[RES_ID_LEN + 1]);

/* The level of a REST collection name ("patients", "studies", "series",
 * "instances"); -1 for anything else. */
int resources_level_of(const char *collection);

/* What a get or list fills beyond the main tags. */
enum {
    RES_CHILDREN = 1,   /* children ids (one more indexed query per entity) */
    RES_METADATA = 2,   /* instances: the stored DICOM JSON */
};

struct res_entity {
    enum index_level level;
    const char *id;
    const char *parent_id;           /* NULL for patients */
    const char *const *ids;          /* ids[0..level]: the patient's, the
                                        study's ... down to this one's */
    const char *const *values;       /* aligned with index_main_tags: this
                                        level's and the levels' above; NULL
                                        for absent or empty values */
    int64_t last_update;             /* Unix time of the latest instance */
    const char *const *children;     /* RES_CHILDREN: ids, in arrival order */
    size_t n_children;
    /* Instances only. */
    uint64_t size;
    const char *blob_key;
    const char *transfer_syntax;
    const char *metadata_json;       /* RES_METADATA, else NULL */
    size_t metadata_len;
};
typedef int (*res_entity_cb)(void *ctx, const struct res_entity *e);

/* The entity at level with public id `id`: cb is called once. Errors:
 * PACS_ENOTFOUND, or the index's; a non-zero return of cb is returned. */
int resources_get(struct archive *a, enum index_level level, const char *id, unsigned flags,
                  res_entity_cb cb, void *ctx, struct pacs_err *err);

/* The entities at level in arrival order, skipping `since`, at most `limit`
 * (0: all). */
int resources_list(struct archive *a, enum index_level level, size_t since, size_t limit,
                   unsigned flags, res_entity_cb cb, void *ctx, struct pacs_err *err);

/* The entities whose unique key (PatientID, StudyInstanceUID,
 * SeriesInstanceUID or SOPInstanceUID) equals uid, at every level, patients
 * first. */
int resources_lookup(struct archive *a, const char *uid,
                     int (*cb)(void *ctx, enum index_level level, const char *id), void *ctx,
                     struct pacs_err *err);

/* The instance's stored file, as the retrieve path names it (for
 * retrieve_open). PACS_ENOTFOUND if there is no such instance. */
int resources_instance_item(struct archive *a, const char *id, struct retrieve_item *out,
                            struct pacs_err *err);

/* Deletes the entity, everything below it and each ancestor it leaves
 * empty (one index transaction, which logs a Deleted change per row), then
 * the instances' files. A crash between the commit and the file deletes
 * leaves files no row names: archive_open removes such orphans. On success
 * *ancestor_level is the level of the nearest ancestor left (-1: none) and
 * ancestor_id its id. PACS_ENOTFOUND if there is no such entity; a file
 * that cannot be deleted is logged, not an error (the rows are gone). */
int resources_delete(struct archive *a, enum index_level level, const char *id,
                     int *ancestor_level, char ancestor_id[RES_ID_LEN + 1],
                     struct pacs_err *err);

/* Changes with seq > since, at most limit (1..RES_CHANGES_MAX); *done is
 * true when no change follows the last one given, *last is the seq of the
 * last one given, or the log's latest seq when none was. */
#define RES_CHANGES_MAX 10000
int resources_changes(struct archive *a, int64_t since, size_t limit, index_change_cb cb,
                      void *ctx, bool *done, int64_t *last, struct pacs_err *err);

/* Counts and stored bytes. */
int resources_statistics(struct archive *a, struct index_stats *out, struct pacs_err *err);

/* The index schema version the running pacsd uses. */
int resources_database_version(struct archive *a);

/* Orthanc's names: "Patient", "Study", "Series", "Instance"; and the
 * change types "NewInstance", ..., "Deleted". */
const char *resources_level_name(enum index_level level);
const char *resources_change_name(enum index_change_type type);

#endif
