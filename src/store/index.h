/* index.h - the index of patients, studies, series and instances, behind a
 * table of operations (SQLite today, PostgreSQL later).
 *
 * Model
 * - Four levels; each row holds the "main tags" of its level (the table
 *   index_main_tags[], the same columns for every backend) as UTF-8 text,
 *   as the archive extracted them at ingest. Entities are keyed by their
 *   UID (patients by PatientID; instances with no PatientID share the
 *   patient whose PatientID is empty).
 * - An instance row also holds what retrieve and /metadata need without
 *   opening the file: transfer syntax, blob key, file size, SHA-256, offset
 *   of the data set in the file, and the DICOM JSON of the instance without
 *   bulk data.
 * - Every row also holds its public id (index_public_id: Orthanc's ids,
 *   from the UIDs of the row and its parents), unique and indexed, so a
 *   lookup by id is one indexed query.
 * - A change log (seq, type, level, public id, time) is written in the
 *   same transaction as the inserts and deletes it records: it is exact and
 *   survives restarts. Changes of deleted resources stay in the log.
 * - A schema version is stored in the database; open() migrates an older
 *   schema forward and refuses a newer one (PACS_EUNSUPPORTED).
 *
 * Concurrency: every operation is thread-safe. Writes come in batches (one
 * transaction per insert_batch call, which the archive's group commit
 * fills); queries run concurrently with writes (SQLite: WAL, each running
 * query on a reader connection of its own from a pool, so a find callback
 * may itself call find).
 */
#ifndef PACS_INDEX_H
#define PACS_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

enum index_level { INDEX_PATIENT, INDEX_STUDY, INDEX_SERIES, INDEX_INSTANCE };

/* One main tag: the level that stores it, the tag, its VR (for matching:
 * PN, DA, TM, DT, UI...) and the column name used by every backend. */
struct index_tag {
    enum index_level level;
    uint32_t tag;
    uint16_t vr;
    const char *column;
};
extern const struct index_tag index_main_tags[];
extern const size_t index_n_main_tags;
#define INDEX_MAX_MAIN_TAGS 64
/* The position of tag in index_main_tags, or -1. */
int index_tag_find(uint32_t tag);

/* A public id: SHA-1 (lowercase hex) of the level's UID chain joined by
 * '|' (PatientID | StudyInstanceUID | SeriesInstanceUID | SOPInstanceUID,
 * as far as the level), in 5 groups of 8 digits joined by '-', as Orthanc
 * computes its resource ids. */
#define INDEX_PUBLIC_ID_LEN 44
/* uids[0..level] (NULL is taken as ""); out gets INDEX_PUBLIC_ID_LEN + 1
 * bytes. Returns 0, or PACS_EINVAL (bad level) / PACS_ENOMEM. */
int index_public_id(enum index_level level, const char *const uids[4],
                    char out[INDEX_PUBLIC_ID_LEN + 1]);

enum index_dup_policy { INDEX_DUP_REPLACE, INDEX_DUP_KEEP, INDEX_DUP_REJECT };

/* One instance to insert. values[i] belongs to index_main_tags[i] (NULL:
 * absent; every level's values are given, the index updates the patient,
 * study and series rows from the latest instance). Strings are UTF-8. */
struct index_record {
    const char *values[INDEX_MAX_MAIN_TAGS];
    const char *transfer_syntax;
    const char *blob_key;
    uint64_t size;
    uint64_t ds_offset;          /* where the data set starts in the blob */
    char sha256[65];             /* lowercase hex */
    const char *metadata_json;   /* DICOM JSON, bulk data as BulkDataURI */
    size_t metadata_len;
    const char *remote_aet;      /* who sent it ("" for HTTP) */
    int64_t received_at;         /* Unix time, seconds */
};

enum index_insert_outcome {
    INDEX_INSERTED,   /* new instance */
    INDEX_REPLACED,   /* replaced an existing one: old_blob_key to delete */
    INDEX_KEPT,       /* INDEX_DUP_KEEP and it existed: delete the new blob */
    INDEX_REJECTED,   /* INDEX_DUP_REJECT and it existed: delete the new blob */
    INDEX_FAILED,     /* this record could not be stored (message in err);
                         the rest of the batch is unaffected */
};
struct index_insert_result {
    enum index_insert_outcome outcome;
    char old_blob_key[65];
    struct pacs_err err;
};

/* --- queries ------------------------------------------------------------- */

enum index_match {
    INDEX_MATCH_SINGLE,   /* equal (PN: case-insensitive) */
    INDEX_MATCH_WILDCARD, /* '*' any run, '?' one character (PN: case-insensitive) */
    INDEX_MATCH_RANGE,    /* lo <= v <= hi on the text (DA/TM/DT normalized
                             at ingest so text order is time order); lo or
                             hi NULL = open */
    INDEX_MATCH_LIST,     /* v is one of list[] (UID list matching) */
};
struct index_cond {
    int col;              /* position in index_main_tags */
    enum index_match kind;
    const char *value;    /* SINGLE, WILDCARD */
    const char *lo, *hi;  /* RANGE */
    const char *const *list;
    size_t n_list;        /* LIST */
};
struct index_query {
    enum index_level level;       /* the level of the rows returned */
    const struct index_cond *conds;
    size_t n_conds;               /* conditions on this level or above */
    size_t limit;                 /* 0: no limit */
    size_t offset;
    bool want_counts;             /* fill the computed attributes */
    bool want_metadata;           /* fill metadata_json (one instance's) */
    int64_t since_id;             /* only rows with id > since_id (0: all) */
    const char *public_id;        /* only the row with this public id */
    const char *parent_public_id; /* only children of the row at level - 1
                                     with this public id */
    bool want_last_update;        /* fill last_update (a subquery per row
                                     above the instance level) */
};

/* One result: the entity at q->level with the main tags of its level and
 * of the levels above it (values[] aligned with index_main_tags; NULL for
 * absent and for levels below). Pointers are valid during the callback. */
struct index_row {
    enum index_level level;
    int64_t id;
    const char *values[INDEX_MAX_MAIN_TAGS];
    /* want_counts: NumberOfPatientRelatedStudies/Series/Instances,
     * NumberOfStudyRelatedSeries/Instances, NumberOfSeriesRelatedInstances
     * of this row's entity and its parents; ModalitiesInStudy and
     * SOPClassesInStudy as backslash-separated distinct values. */
    uint32_t n_patient_studies, n_patient_series, n_patient_instances;
    uint32_t n_study_series, n_study_instances, n_series_instances;
    const char *modalities_in_study;
    const char *sop_classes_in_study;
    /* want_metadata: the DICOM JSON of the instance (INSTANCE level) or of
     * one instance of the entity (the one with the lowest id), else NULL. */
    const char *metadata_json;
    size_t metadata_len;
    /* INSTANCE level only. */
    const char *transfer_syntax;
    const char *blob_key;
    uint64_t size;
    uint64_t ds_offset;
    const char *sha256;
    /* The public ids of the row and of its parents ([0..level]). */
    const char *public_ids[4];
    /* want_last_update: when an instance of the entity was last received
     * (Unix time); instances always have it. */
    int64_t last_update;
};
/* Return non-zero to stop the query (that value is returned by find). */
typedef int (*index_row_cb)(void *ctx, const struct index_row *row);

struct index_stats {
    uint64_t patients, studies, series, instances;
    uint64_t bytes; /* sum of instance file sizes */
};

/* One entry of the change log. */
enum index_change_type {
    INDEX_CHANGE_NEW_INSTANCE, INDEX_CHANGE_NEW_SERIES, INDEX_CHANGE_NEW_STUDY,
    INDEX_CHANGE_NEW_PATIENT, INDEX_CHANGE_DELETED,
};
struct index_change {
    int64_t seq;              /* increasing, never reused */
    enum index_change_type type;
    enum index_level level;
    const char *public_id;    /* valid during the callback */
    int64_t time;             /* Unix time */
};
typedef int (*index_change_cb)(void *ctx, const struct index_change *c);

/* What a delete removed: the blob keys of the instances (for the archive
 * to delete after the commit), and the nearest ancestor left standing
 * (level -1 when the whole patient went). Freed with index_deleted_free. */
struct index_deleted {
    char (*blob_keys)[65];
    size_t n_blob_keys;
    int ancestor_level;
    char ancestor_id[INDEX_PUBLIC_ID_LEN + 1];
};
void index_deleted_free(struct index_deleted *d);

struct index;

struct index_ops {
    const char *name; /* "sqlite" */
    int schema_version; /* of the databases this backend writes */
    /* Opens (creating and migrating) the index at location (sqlite: a
     * database file path). */
    int (*open)(const char *location, struct index **out, struct pacs_err *err);
    void (*close)(struct index *ix);
    /* Inserts n records in one transaction. Returns 0 when the transaction
     * committed (each record's outcome in results[i]), or an error when
     * nothing was committed (results undefined). */
    int (*insert_batch)(struct index *ix, const struct index_record *recs, size_t n,
                        enum index_dup_policy dup, struct index_insert_result *results,
                        struct pacs_err *err);
    /* Rows at q->level matching every condition, ordered by id. */
    int (*find)(struct index *ix, const struct index_query *q, index_row_cb cb, void *ctx,
                struct pacs_err *err);
    /* True if some instance row refers to blob key (orphan cleaning). */
    int (*has_blob)(struct index *ix, const char *key, bool *out, struct pacs_err *err);
    int (*stats)(struct index *ix, struct index_stats *out, struct pacs_err *err);
    /* Deletes the entity at level with public id `id`, everything below it,
     * and each ancestor left without children, in one transaction that
     * also logs a Deleted change per removed row (time `now`). On success
     * *out (zeroed first) is the caller's to index_deleted_free. Errors:
     * PACS_ENOTFOUND (no such entity), PACS_EIO, PACS_ENOMEM. */
    int (*delete_entity)(struct index *ix, enum index_level level, const char *id, int64_t now,
                         struct index_deleted *out, struct pacs_err *err);
    /* Changes with seq > since, in order, at most limit (0: no limit). */
    int (*changes)(struct index *ix, int64_t since, size_t limit, index_change_cb cb,
                   void *ctx, struct pacs_err *err);
    /* The highest seq in the log (0 when empty). */
    int (*last_change)(struct index *ix, int64_t *out, struct pacs_err *err);
};

struct index {
    const struct index_ops *ops;
};

extern const struct index_ops index_sqlite_ops;

#endif
