/* index_sqlite.c - the index in one SQLite database (index.h).
 *
 * Connections: one writer (WAL, synchronous=FULL: a batch is durable when
 * COMMIT returns) behind a mutex, and a pool of reader connections. A find()
 * checks a reader out for its duration and gives it back, so no connection
 * is ever used by two threads at once, a callback may itself query (it gets
 * another connection), and threads that come and go (one per association)
 * leave nothing behind. Each connection caches its prepared statements.
 *
 * The schema is generated from index_main_tags (one TEXT column per main tag,
 * PN columns COLLATE NOCASE so equality and their indexes are
 * case-insensitive). docs/storage.md describes the tables, the versioning
 * and the matching rules.
 */
#include "store/index.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dicom/dict.h"
#include "dicom/vr.h"
#include "util/dynbuf.h"

/* Bump together with a new step in sq_migrations[]. */
#define SQ_SCHEMA_VERSION 2
#define SQ_BUSY_TIMEOUT_MS 10000
#define SQ_STMT_CACHE 48
#define SQ_MAX_IDLE_READERS 64
/* The largest Unicode character in UTF-8: appended to a range's upper bound
 * so values that extend it (TM "1000" -> "100000") are included. */
#define SQ_MAX_CHAR "\xf4\x8f\xbf\xbf"

static const char *const sq_table[4] = {"patients", "studies", "series", "instances"};
static const char *const sq_alias[4] = {"p", "st", "se", "i"};

/* Columns the queries use most, besides the unique keys and parent ids. */
static const uint32_t sq_indexed_tags[] = {
    DCM_TAG(0x0010, 0x0010), /* PatientName */
    DCM_TAG(0x0008, 0x0020), /* StudyDate */
    DCM_TAG(0x0008, 0x0050), /* AccessionNumber */
    DCM_TAG(0x0008, 0x0060), /* Modality */
};
/* The unique key of each level. */
static const uint32_t sq_uid_tag[4] = {
    DCM_TAG(0x0010, 0x0020), /* PatientID */
    DCM_TAG(0x0020, 0x000D), /* StudyInstanceUID */
    DCM_TAG(0x0020, 0x000E), /* SeriesInstanceUID */
    DCM_TAG(0x0008, 0x0018), /* SOPInstanceUID */
};
#define SQ_MODALITY_TAG DCM_TAG(0x0008, 0x0060)
#define SQ_SOP_CLASS_TAG DCM_TAG(0x0008, 0x0016)

/* Instance columns that are not main tags, in insert/update order. */
#define SQ_INST_EXTRA                                                                     \
    "transfer_syntax, blob_key, size, ds_offset, sha256, metadata, remote_aet, received_at"
#define SQ_N_INST_EXTRA 8

struct sq_cached {
    uint64_t hash;
    char *sql;
    sqlite3_stmt *st;
};

struct sq_conn {
    sqlite3 *db;
    struct sq_conn *next;
    struct sq_cached cache[SQ_STMT_CACHE];
    size_t n_cache;
    size_t evict;
};

enum {
    W_BEGIN, W_COMMIT, W_ROLLBACK, W_SAVEPOINT, W_RELEASE, W_ROLLBACK_TO, W_N_TXN
};

struct sq_index {
    struct index base;
    char *path;
    /* Main-tag positions per level, and of each level's unique key. */
    int cols[4][INDEX_MAX_MAIN_TAGS];
    int n_cols[4];
    int uid_col[4];
    int modality_col, sop_class_col;
    char study_counts_sql[1024];

    pthread_mutex_t wmu; /* the writer and everything below */
    sqlite3 *wdb;
    sqlite3_stmt *txn[W_N_TXN];
    sqlite3_stmt *get[4];       /* by unique key -> id, parent_id (, blob_key) */
    sqlite3_stmt *ins[4];
    sqlite3_stmt *upd[4];
    sqlite3_stmt *has_child[3]; /* PATIENT..SERIES */
    sqlite3_stmt *parent_of[4];
    sqlite3_stmt *del[3];
    sqlite3_stmt *chg;          /* append to the change log */
    /* After a study (reid[0], reid[1]) or series (reid[2]) moved to another
     * parent: the public ids of the rows below it, recomputed. */
    sqlite3_stmt *reid[3];
    sqlite3_stmt *pub_of[3];    /* PATIENT..SERIES: a row's public id */

    pthread_mutex_t pool_mu;
    struct sq_conn *idle;
    size_t n_idle;
};

/* --- small helpers ---------------------------------------------------------- */

static int sq_code(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_NOMEM: return PACS_ENOMEM;
    case SQLITE_CONSTRAINT:
    case SQLITE_TOOBIG:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE: return PACS_EINVAL;
    default: return PACS_EIO;
    }
}

static int sq_fail(sqlite3 *db, int rc, struct pacs_err *err, const char *what)
{
    return pacs_err_set(err, sq_code(rc), "index: %s: %s", what,
                        db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
}

/* Steps a statement that returns no rows, then resets it. */
static int sq_run(sqlite3 *db, sqlite3_stmt *st, struct pacs_err *err, const char *what)
{
    int rc = sqlite3_step(st);
    int out = 0;
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        out = sq_fail(db, rc, err, what);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return out;
}

static void sq_release(sqlite3_stmt *st)
{
    if (st) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
}

static int sq_exec(sqlite3 *db, const char *sql, struct pacs_err *err)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    int out = 0;
    if (rc != SQLITE_OK)
        out = pacs_err_set(err, sq_code(rc), "index: %s", msg ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    return out;
}

static int sq_bind_text(sqlite3_stmt *st, int i, const char *s)
{
    return s ? sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC) : sqlite3_bind_null(st, i);
}

/* SQL text built in a dynbuf; the first failure sticks. */
struct sb {
    struct dynbuf b;
    int rc;
};

static void sb_puts(struct sb *s, const char *t)
{
    if (!s->rc)
        s->rc = dynbuf_puts(&s->b, t);
}

static void sb_printf(struct sb *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sb *s, const char *fmt, ...)
{
    va_list ap;
    if (s->rc)
        return;
    va_start(ap, fmt);
    s->rc = dynbuf_vprintf(&s->b, fmt, ap);
    va_end(ap);
}

static const char *sb_str(const struct sb *s) { return (const char *)s->b.data; }

static const char *col_name(int c) { return index_main_tags[c].column; }
static bool col_is_pn(int c) { return index_main_tags[c].vr == DCM_VR_PN; }

/* ", <alias>.c1, <alias>.c2 ..." for the main tags of a level. */
static void sb_cols(struct sb *s, const struct sq_index *ix, int lv, const char *alias)
{
    for (int k = 0; k < ix->n_cols[lv]; k++) {
        if (alias)
            sb_printf(s, ", %s.%s", alias, col_name(ix->cols[lv][k]));
        else
            sb_printf(s, ", %s", col_name(ix->cols[lv][k]));
    }
}

/* Runs the SQL built in s; PACS_ENOMEM if building it ran out of memory. */
static int sq_exec_sb(sqlite3 *db, struct sb *s, struct pacs_err *err)
{
    if (s->rc)
        return pacs_err_set(err, s->rc, "index: out of memory");
    return sq_exec(db, sb_str(s), err);
}

static int sq_prepare(sqlite3 *db, const char *sql, bool persistent, sqlite3_stmt **st,
                      struct pacs_err *err)
{
    int rc = sqlite3_prepare_v3(db, sql, -1, persistent ? SQLITE_PREPARE_PERSISTENT : 0, st,
                                NULL);
    if (rc != SQLITE_OK) {
        *st = NULL;
        return sq_fail(db, rc, err, "prepare");
    }
    return 0;
}

/* Opens a connection with the settings every connection shares. */
static int sq_connect(const char *path, bool create, sqlite3 **out, struct pacs_err *err)
{
    sqlite3 *db = NULL;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
    int rc = sqlite3_open_v2(path, &db, flags, NULL);
    *out = NULL;
    if (rc != SQLITE_OK) {
        pacs_err_set(err, sq_code(rc), "index: cannot open %s: %s", path,
                     db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return sq_code(rc);
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, SQ_BUSY_TIMEOUT_MS);
    *out = db;
    return 0;
}

/* --- schema and migrations -------------------------------------------------- */

static bool sq_ident_ok(const char *s)
{
    if (!s || !*s)
        return false;
    for (; *s; s++) {
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    }
    return true;
}

static void sb_col_def(struct sb *s, const struct sq_index *ix, int c, int lv)
{
    sb_printf(s, "%s TEXT", col_name(c));
    if (c == ix->uid_col[lv])
        sb_puts(s, " NOT NULL");
    if (col_is_pn(c))
        sb_puts(s, " COLLATE NOCASE");
}

/* Version 0 -> 1: the four tables and their indexes. */
static int sq_step_create(struct sq_index *ix, sqlite3 *db, struct pacs_err *err)
{
    struct sb s = {0};
    int rc;
    for (int lv = INDEX_PATIENT; lv <= INDEX_INSTANCE; lv++) {
        sb_printf(&s, "CREATE TABLE %s (id INTEGER PRIMARY KEY", sq_table[lv]);
        if (lv > INDEX_PATIENT)
            sb_printf(&s, ", parent_id INTEGER NOT NULL REFERENCES %s(id)", sq_table[lv - 1]);
        for (int k = 0; k < ix->n_cols[lv]; k++) {
            sb_puts(&s, ", ");
            sb_col_def(&s, ix, ix->cols[lv][k], lv);
        }
        if (lv == INDEX_INSTANCE)
            sb_puts(&s, ", transfer_syntax TEXT, blob_key TEXT NOT NULL, size INTEGER NOT NULL,"
                        " ds_offset INTEGER NOT NULL, sha256 TEXT, metadata TEXT,"
                        " remote_aet TEXT, received_at INTEGER");
        sb_puts(&s, ");\n");
        sb_printf(&s, "CREATE UNIQUE INDEX %s_%s ON %s(%s);\n", sq_table[lv],
                  col_name(ix->uid_col[lv]), sq_table[lv], col_name(ix->uid_col[lv]));
    }
    /* Parent indexes carry the column the computed attributes read, so
     * ModalitiesInStudy and SOPClassesInStudy never touch the tables. */
    sb_printf(&s, "CREATE INDEX studies_parent ON studies(parent_id);\n"
                  "CREATE INDEX series_parent ON series(parent_id, %s);\n"
                  "CREATE INDEX instances_parent ON instances(parent_id, %s);\n"
                  "CREATE UNIQUE INDEX instances_blob_key ON instances(blob_key);\n",
              col_name(ix->modality_col), col_name(ix->sop_class_col));
    rc = sq_exec_sb(db, &s, err);
    dynbuf_free(&s.b);
    return rc;
}

/* pacs_public_id(level, patient_id, study_uid, series_uid, sop_uid): the
 * public id, for the migration that fills existing rows. */
static void sq_fn_public_id(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    const char *uids[4] = {NULL, NULL, NULL, NULL};
    char id[INDEX_PUBLIC_ID_LEN + 1];
    int level = sqlite3_value_int(argv[0]);
    for (int k = 1; k < argc && k <= 4; k++)
        uids[k - 1] = (const char *)sqlite3_value_text(argv[k]);
    if (level < INDEX_PATIENT || level > INDEX_INSTANCE ||
        index_public_id((enum index_level)level, uids, id) != 0) {
        sqlite3_result_error(ctx, "pacs_public_id: bad arguments", -1);
        return;
    }
    sqlite3_result_text(ctx, id, -1, SQLITE_TRANSIENT);
}

/* Version 1 -> 2: public ids (computed for the rows there are) and the
 * change log. */
static int sq_step_public_ids(struct sq_index *ix, sqlite3 *db, struct pacs_err *err)
{
    struct sb s = {0};
    int rc;
    for (int lv = INDEX_PATIENT; lv <= INDEX_INSTANCE; lv++)
        sb_printf(&s, "ALTER TABLE %s ADD COLUMN public_id TEXT;\n", sq_table[lv]);
    /* Each level's UID chain: the row's own UID and its ancestors'. */
    for (int lv = INDEX_PATIENT; lv <= INDEX_INSTANCE; lv++) {
        sb_printf(&s, "UPDATE %s SET public_id = (SELECT pacs_public_id(%d", sq_table[lv], lv);
        for (int k = 0; k < 4; k++) {
            if (k <= lv)
                sb_printf(&s, ", %s.%s", sq_alias[k], col_name(ix->uid_col[k]));
            else
                sb_puts(&s, ", NULL");
        }
        sb_printf(&s, ") FROM %s AS %s", sq_table[lv], sq_alias[lv]);
        for (int k = lv - 1; k >= 0; k--)
            sb_printf(&s, " JOIN %s AS %s ON %s.id = %s.parent_id", sq_table[k], sq_alias[k],
                      sq_alias[k], sq_alias[k + 1]);
        sb_printf(&s, " WHERE %s.id = %s.id);\n", sq_alias[lv], sq_table[lv]);
        sb_printf(&s, "CREATE UNIQUE INDEX %s_public_id ON %s(public_id);\n", sq_table[lv],
                  sq_table[lv]);
    }
    /* AUTOINCREMENT: a sequence number is never handed out twice. */
    sb_puts(&s, "CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                " change_type INTEGER NOT NULL, level INTEGER NOT NULL,"
                " public_id TEXT NOT NULL, time INTEGER NOT NULL);\n");
    rc = sq_exec_sb(db, &s, err);
    dynbuf_free(&s.b);
    return rc;
}

struct sq_migration {
    int from; /* the step takes the schema from `from` to from + 1 */
    int (*apply)(struct sq_index *ix, sqlite3 *db, struct pacs_err *err);
};
static const struct sq_migration sq_migrations[] = {
    {0, sq_step_create},
    {1, sq_step_public_ids},
};
_Static_assert(sizeof sq_migrations / sizeof sq_migrations[0] == SQ_SCHEMA_VERSION,
               "one migration step per schema version");

static int sq_has_column(sqlite3 *db, const char *table, const char *col, bool *has,
                         struct pacs_err *err)
{
    sqlite3_stmt *st = NULL;
    int src, rc = sq_prepare(db, "SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2", false,
                             &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, col, -1, SQLITE_STATIC);
    src = sqlite3_step(st);
    *has = src == SQLITE_ROW;
    if (src != SQLITE_ROW && src != SQLITE_DONE)
        rc = sq_fail(db, src, err, "table_info");
    sqlite3_finalize(st);
    return rc;
}

/* A column added to an existing database is filled from the stored DICOM
 * JSON where its text is the JSON value's (strings, UIDs, integers: values
 * joined by '\\'); for an entity above the instance level, from the
 * first of its instances that has the attribute. PN (an object in DICOM
 * JSON), DS (numbers lose their text form) and DA/TM/DT (normalized at
 * ingest) stay NULL for old rows. */
static void sq_fill_from_metadata(struct sb *s, int lv, int c)
{
    static const uint16_t vrs[] = {DCM_VR_US, DCM_VR_SS, DCM_VR_UL, DCM_VR_SL, DCM_VR_IS,
                                   DCM_VR_SH, DCM_VR_LO, DCM_VR_CS, DCM_VR_UI, DCM_VR_LT,
                                   DCM_VR_ST, DCM_VR_AE};
    bool ok = false;
    for (size_t k = 0; k < sizeof vrs / sizeof vrs[0]; k++)
        ok |= vrs[k] == index_main_tags[c].vr;
    if (!ok)
        return;
    char path[32];
    int n = snprintf(path, sizeof path, "$.\"%08X\".Value", (unsigned)index_main_tags[c].tag);
    if (n < 0 || (size_t)n >= sizeof path)
        return;
    sb_printf(s, "UPDATE %s SET %s = (SELECT v FROM (SELECT (SELECT group_concat(j.value, '\\')"
                 " FROM json_each(i.metadata, '%s') AS j) AS v, i.id AS iid FROM instances AS i",
              sq_table[lv], col_name(c), path);
    for (int k = INDEX_INSTANCE - 1; k >= lv; k--)
        sb_printf(s, " JOIN %s AS %s ON %s.id = %s.parent_id", sq_table[k], sq_alias[k],
                  sq_alias[k], k + 1 == INDEX_INSTANCE ? "i" : sq_alias[k + 1]);
    sb_printf(s, " WHERE %s.id = %s.id AND json_valid(i.metadata)) WHERE v IS NOT NULL"
                 " ORDER BY iid LIMIT 1);\n",
              lv == INDEX_INSTANCE ? "i" : sq_alias[lv], sq_table[lv]);
}

/* Main tags added to index_main_tags after a database was created become
 * columns here (empty for existing rows), as do the indexes of
 * sq_indexed_tags: adding a main tag needs no migration step. */
static int sq_reconcile(struct sq_index *ix, sqlite3 *db, struct pacs_err *err)
{
    struct sb s = {0};
    int rc = 0;
    for (int lv = INDEX_PATIENT; lv <= INDEX_INSTANCE; lv++) {
        for (int k = 0; k < ix->n_cols[lv]; k++) {
            int c = ix->cols[lv][k];
            bool has;
            if ((rc = sq_has_column(db, sq_table[lv], col_name(c), &has, err)) != 0)
                goto out;
            if (has)
                continue;
            sb_printf(&s, "ALTER TABLE %s ADD COLUMN %s TEXT%s;\n", sq_table[lv], col_name(c),
                      col_is_pn(c) ? " COLLATE NOCASE" : "");
            sq_fill_from_metadata(&s, lv, c);
        }
    }
    for (size_t k = 0; k < sizeof sq_indexed_tags / sizeof sq_indexed_tags[0]; k++) {
        int c = index_tag_find(sq_indexed_tags[k]);
        if (c < 0)
            continue;
        const char *t = sq_table[index_main_tags[c].level];
        sb_printf(&s, "CREATE INDEX IF NOT EXISTS %s_%s ON %s(%s);\n", t, col_name(c), t,
                  col_name(c));
    }
    if (s.rc || s.b.len)
        rc = sq_exec_sb(db, &s, err);
out:
    dynbuf_free(&s.b);
    return rc;
}

static int sq_user_version(sqlite3 *db, int *v, struct pacs_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = sq_prepare(db, "PRAGMA user_version", false, &st, err);
    if (rc)
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *v = sqlite3_column_int(st, 0);
        rc = 0;
    } else {
        rc = sq_fail(db, rc, err, "read schema version");
    }
    sqlite3_finalize(st);
    return rc;
}

static int sq_migrate(struct sq_index *ix, sqlite3 *db, struct pacs_err *err)
{
    int v = 0, rc;
    char sql[64];
    /* IMMEDIATE: two processes opening a new database do not both migrate. */
    if ((rc = sq_exec(db, "BEGIN IMMEDIATE", err)) != 0)
        return rc;
    if ((rc = sq_user_version(db, &v, err)) != 0)
        goto out;
    if (v > SQ_SCHEMA_VERSION || v < 0) {
        rc = pacs_err_set(err, PACS_EUNSUPPORTED,
                          "index: database schema version %d is %s this pacsd's (%d)", v,
                          v < 0 ? "not" : "newer than", SQ_SCHEMA_VERSION);
        goto out;
    }
    for (size_t k = 0; k < sizeof sq_migrations / sizeof sq_migrations[0]; k++) {
        if (sq_migrations[k].from != v)
            continue;
        if ((rc = sq_migrations[k].apply(ix, db, err)) != 0)
            goto out;
        v++;
        int n = snprintf(sql, sizeof sql, "PRAGMA user_version = %d", v);
        if (n < 0 || (size_t)n >= sizeof sql) {
            rc = pacs_err_set(err, PACS_EINVAL, "index: schema version");
            goto out;
        }
        if ((rc = sq_exec(db, sql, err)) != 0)
            goto out;
    }
    if ((rc = sq_reconcile(ix, db, err)) != 0)
        goto out;
    rc = sq_exec(db, "COMMIT", err);
out:
    if (rc)
        sq_exec(db, "ROLLBACK", NULL);
    return rc;
}

/* --- writer statements ------------------------------------------------------ */

static int sq_prepare_sb(sqlite3 *db, struct sb *s, sqlite3_stmt **st, struct pacs_err *err)
{
    int rc = s->rc ? pacs_err_set(err, s->rc, "index: out of memory")
                   : sq_prepare(db, sb_str(s), true, st, err);
    dynbuf_reset(&s->b);
    s->rc = 0;
    return rc;
}

static int sq_prepare_writer(struct sq_index *ix, struct pacs_err *err)
{
    static const char *const txn_sql[W_N_TXN] = {
        "BEGIN IMMEDIATE", "COMMIT", "ROLLBACK", "SAVEPOINT rec", "RELEASE rec",
        "ROLLBACK TO rec",
    };
    sqlite3 *db = ix->wdb;
    struct sb s = {0};
    int rc = 0;
    for (int k = 0; k < W_N_TXN; k++) {
        if ((rc = sq_prepare(db, txn_sql[k], true, &ix->txn[k], err)) != 0)
            goto out;
    }
    if ((rc = sq_prepare(db,
                         "INSERT INTO changes (change_type, level, public_id, time)"
                         " VALUES (?1, ?2, ?3, ?4)",
                         true, &ix->chg, err)) != 0)
        goto out;
    for (int lv = INDEX_PATIENT; lv <= INDEX_INSTANCE; lv++) {
        const char *t = sq_table[lv];
        int n = ix->n_cols[lv];
        bool hp = lv > INDEX_PATIENT;

        sb_printf(&s, "SELECT id, %s%s FROM %s WHERE %s = ?1", hp ? "parent_id" : "0",
                  lv == INDEX_INSTANCE ? ", blob_key" : "", t, col_name(ix->uid_col[lv]));
        if ((rc = sq_prepare_sb(db, &s, &ix->get[lv], err)) != 0)
            goto out;

        /* ?1 parent (patients: the id, left NULL so it is assigned), ?2..
         * main tags, then the instance extras. */
        sb_printf(&s, "INSERT INTO %s (%s", t, hp ? "parent_id" : "id");
        sb_cols(&s, ix, lv, NULL);
        if (lv == INDEX_INSTANCE)
            sb_puts(&s, ", " SQ_INST_EXTRA);
        sb_puts(&s, ", public_id) VALUES (?1");
        int np = n + (lv == INDEX_INSTANCE ? SQ_N_INST_EXTRA : 0);
        for (int k = 0; k < np + 1; k++)
            sb_printf(&s, ", ?%d", k + 2);
        sb_puts(&s, ")");
        if ((rc = sq_prepare_sb(db, &s, &ix->ins[lv], err)) != 0)
            goto out;

        /* ?1 parent (unused for patients), ?2.. main tags (, extras), last: id. */
        sb_printf(&s, "UPDATE %s SET ", t);
        const char *sep = "";
        if (hp) {
            sb_puts(&s, "parent_id = ?1");
            sep = ", ";
        }
        if (lv == INDEX_INSTANCE) {
            /* A replaced instance is the new one, absent values included. */
            for (int k = 0; k < n; k++, sep = ", ")
                sb_printf(&s, "%s%s = ?%d", sep, col_name(ix->cols[lv][k]), k + 2);
            static const char *const extra[SQ_N_INST_EXTRA] = {
                "transfer_syntax", "blob_key", "size", "ds_offset", "sha256", "metadata",
                "remote_aet", "received_at",
            };
            for (int k = 0; k < SQ_N_INST_EXTRA; k++)
                sb_printf(&s, ", %s = ?%d", extra[k], n + 2 + k);
            sb_printf(&s, ", public_id = ?%d WHERE id = ?%d", np + 3, np + 2);
        } else {
            /* Entities above take each value the latest instance has, keep
             * the ones it lacks, and are written only when something
             * changes (no WAL churn for the 500 instances of a series). */
            for (int k = 0; k < n; k++, sep = ", ") {
                const char *c = col_name(ix->cols[lv][k]);
                sb_printf(&s, "%s%s = coalesce(?%d, %s)", sep, c, k + 2, c);
            }
            sb_printf(&s, ", public_id = ?%d WHERE id = ?%d AND (public_id IS NOT ?%d OR %s",
                      n + 3, n + 2, n + 3, hp ? "parent_id IS NOT ?1" : "0");
            for (int k = 0; k < n; k++)
                sb_printf(&s, " OR (?%d IS NOT NULL AND %s IS NOT ?%d COLLATE BINARY)", k + 2,
                          col_name(ix->cols[lv][k]), k + 2);
            sb_puts(&s, ")");
        }
        if ((rc = sq_prepare_sb(db, &s, &ix->upd[lv], err)) != 0)
            goto out;

        if (hp) {
            sb_printf(&s, "SELECT parent_id FROM %s WHERE id = ?1", t);
            if ((rc = sq_prepare_sb(db, &s, &ix->parent_of[lv], err)) != 0)
                goto out;
        }
        if (lv < INDEX_INSTANCE) {
            sb_printf(&s, "SELECT 1 FROM %s WHERE parent_id = ?1 LIMIT 1", sq_table[lv + 1]);
            if ((rc = sq_prepare_sb(db, &s, &ix->has_child[lv], err)) != 0)
                goto out;
            sb_printf(&s, "DELETE FROM %s WHERE id = ?1", t);
            if ((rc = sq_prepare_sb(db, &s, &ix->del[lv], err)) != 0)
                goto out;
            sb_printf(&s, "SELECT public_id FROM %s WHERE id = ?1", t);
            if ((rc = sq_prepare_sb(db, &s, &ix->pub_of[lv], err)) != 0)
                goto out;
        }
    }
    const char *pid = col_name(ix->uid_col[INDEX_PATIENT]);
    const char *stu = col_name(ix->uid_col[INDEX_STUDY]);
    const char *seu = col_name(ix->uid_col[INDEX_SERIES]);
    const char *sop = col_name(ix->uid_col[INDEX_INSTANCE]);
    sb_printf(&s,
              "UPDATE series SET public_id = (SELECT pacs_public_id(2, p.%s, st.%s, series.%s,"
              " NULL) FROM studies AS st JOIN patients AS p ON p.id = st.parent_id"
              " WHERE st.id = series.parent_id) WHERE parent_id = ?1",
              pid, stu, seu);
    if ((rc = sq_prepare_sb(db, &s, &ix->reid[0], err)) != 0)
        goto out;
    static const char *const inst_scope[2] = {
        "parent_id IN (SELECT id FROM series WHERE parent_id = ?1)", "parent_id = ?1"};
    for (int k = 0; k < 2; k++) {
        sb_printf(&s,
                  "UPDATE instances SET public_id = (SELECT pacs_public_id(3, p.%s, st.%s, se.%s,"
                  " instances.%s) FROM series AS se JOIN studies AS st ON st.id = se.parent_id"
                  " JOIN patients AS p ON p.id = st.parent_id WHERE se.id = instances.parent_id)"
                  " WHERE %s",
                  pid, stu, seu, sop, inst_scope[k]);
        if ((rc = sq_prepare_sb(db, &s, &ix->reid[1 + k], err)) != 0)
            goto out;
    }
out:
    dynbuf_free(&s.b);
    return rc;
}

/* --- reader pool ------------------------------------------------------------ */

static void sq_conn_free(struct sq_conn *c)
{
    if (!c)
        return;
    for (size_t k = 0; k < c->n_cache; k++) {
        sqlite3_finalize(c->cache[k].st);
        free(c->cache[k].sql);
    }
    sqlite3_close(c->db);
    free(c);
}

static int sq_reader_get(struct sq_index *ix, struct sq_conn **out, struct pacs_err *err)
{
    struct sq_conn *c;
    int rc;
    pthread_mutex_lock(&ix->pool_mu);
    c = ix->idle;
    if (c) {
        ix->idle = c->next;
        ix->n_idle--;
    }
    pthread_mutex_unlock(&ix->pool_mu);
    if (c) {
        *out = c;
        return 0;
    }
    c = calloc(1, sizeof *c);
    if (!c)
        return pacs_err_set(err, PACS_ENOMEM, "index: out of memory");
    if ((rc = sq_connect(ix->path, false, &c->db, err)) != 0)
        goto out;
    rc = sq_exec(c->db, "PRAGMA query_only = ON", err);
out:
    if (rc) {
        sq_conn_free(c);
        c = NULL;
    }
    *out = c;
    return rc;
}

static void sq_reader_put(struct sq_index *ix, struct sq_conn *c)
{
    pthread_mutex_lock(&ix->pool_mu);
    if (ix->n_idle < SQ_MAX_IDLE_READERS) {
        c->next = ix->idle;
        ix->idle = c;
        ix->n_idle++;
        c = NULL;
    }
    pthread_mutex_unlock(&ix->pool_mu);
    sq_conn_free(c);
}

static uint64_t sq_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

/* The connection's statement for sql, prepared on first use. The caller
 * sq_release()s it when done. */
static int sq_cached(struct sq_conn *c, const char *sql, sqlite3_stmt **out,
                     struct pacs_err *err)
{
    uint64_t h = sq_hash(sql);
    struct sq_cached *e;
    sqlite3_stmt *st = NULL;
    char *copy = NULL;
    int rc;
    for (size_t k = 0; k < c->n_cache; k++) {
        e = &c->cache[k];
        if (e->hash == h && strcmp(e->sql, sql) == 0) {
            *out = e->st;
            return 0;
        }
    }
    if ((rc = sq_prepare(c->db, sql, true, &st, err)) != 0)
        return rc;
    size_t n = strlen(sql);
    copy = malloc(n + 1);
    if (!copy) {
        sqlite3_finalize(st);
        return pacs_err_set(err, PACS_ENOMEM, "index: out of memory");
    }
    memcpy(copy, sql, n + 1);
    if (c->n_cache < SQ_STMT_CACHE) {
        e = &c->cache[c->n_cache++];
    } else {
        /* The oldest entry, unless it is running (a query's main statement
         * while its counts are prepared). */
        e = NULL;
        for (size_t k = 0; k < SQ_STMT_CACHE && !e; k++) {
            struct sq_cached *v = &c->cache[c->evict];
            c->evict = (c->evict + 1) % SQ_STMT_CACHE;
            if (!sqlite3_stmt_busy(v->st))
                e = v;
        }
        if (!e) {
            sqlite3_finalize(st);
            free(copy);
            return pacs_err_set(err, PACS_ELIMIT, "index: every cached statement is running");
        }
        sqlite3_finalize(e->st);
        free(e->sql);
    }
    e->hash = h;
    e->sql = copy;
    e->st = st;
    *out = st;
    return 0;
}

/* --- open / close ----------------------------------------------------------- */

static void sq_close(struct index *base)
{
    struct sq_index *ix = (struct sq_index *)base;
    if (!ix)
        return;
    while (ix->idle) {
        struct sq_conn *c = ix->idle;
        ix->idle = c->next;
        sq_conn_free(c);
    }
    for (int k = 0; k < W_N_TXN; k++)
        sqlite3_finalize(ix->txn[k]);
    sqlite3_finalize(ix->chg);
    for (int k = 0; k < 3; k++) {
        sqlite3_finalize(ix->reid[k]);
        sqlite3_finalize(ix->pub_of[k]);
    }
    for (int lv = 0; lv < 4; lv++) {
        sqlite3_finalize(ix->get[lv]);
        sqlite3_finalize(ix->ins[lv]);
        sqlite3_finalize(ix->upd[lv]);
        sqlite3_finalize(ix->parent_of[lv]);
        if (lv < 3) {
            sqlite3_finalize(ix->has_child[lv]);
            sqlite3_finalize(ix->del[lv]);
        }
    }
    /* No PRAGMA optimize: statistics for some tables and not others made
     * the planner scan the query level's table for conditions on a level
     * above (docs/storage.md); SQLite's default estimates plan every query
     * shape well on this schema. */
    sqlite3_close(ix->wdb);
    pthread_mutex_destroy(&ix->wmu);
    pthread_mutex_destroy(&ix->pool_mu);
    free(ix->path);
    free(ix);
}

/* Sorts index_main_tags into levels and checks what the SQL relies on. */
static int sq_layout(struct sq_index *ix, struct pacs_err *err)
{
    if (index_n_main_tags > INDEX_MAX_MAIN_TAGS)
        return pacs_err_set(err, PACS_EINVAL, "index: too many main tags");
    for (size_t c = 0; c < index_n_main_tags; c++) {
        const struct index_tag *t = &index_main_tags[c];
        if ((unsigned)t->level > INDEX_INSTANCE || !sq_ident_ok(t->column))
            return pacs_err_set(err, PACS_EINVAL, "index: bad main tag %zu", c);
        ix->cols[t->level][ix->n_cols[t->level]++] = (int)c;
    }
    for (int lv = 0; lv < 4; lv++) {
        ix->uid_col[lv] = index_tag_find(sq_uid_tag[lv]);
        if (ix->uid_col[lv] < 0 || index_main_tags[ix->uid_col[lv]].level != (unsigned)lv)
            return pacs_err_set(err, PACS_EINVAL, "index: no unique key for level %d", lv);
    }
    ix->modality_col = index_tag_find(SQ_MODALITY_TAG);
    ix->sop_class_col = index_tag_find(SQ_SOP_CLASS_TAG);
    if (ix->modality_col < 0 || ix->sop_class_col < 0)
        return pacs_err_set(err, PACS_EINVAL, "index: Modality or SOPClassUID not a main tag");
    /* The study's computed attributes; the distinct lists are sorted so
     * answers do not depend on insertion order. */
    int n = snprintf(
        ix->study_counts_sql, sizeof ix->study_counts_sql,
        "SELECT (SELECT count(*) FROM series WHERE parent_id = ?1),"
        " (SELECT count(*) FROM instances AS i JOIN series AS se ON i.parent_id = se.id"
        " WHERE se.parent_id = ?1),"
        " (SELECT group_concat(m, '\\') FROM (SELECT DISTINCT %s AS m FROM series"
        " WHERE parent_id = ?1 AND %s <> '' ORDER BY m)),"
        " (SELECT group_concat(u, '\\') FROM (SELECT DISTINCT i.%s AS u FROM instances AS i"
        " JOIN series AS se ON i.parent_id = se.id WHERE se.parent_id = ?1 AND i.%s <> ''"
        " ORDER BY u))",
        col_name(ix->modality_col), col_name(ix->modality_col), col_name(ix->sop_class_col),
        col_name(ix->sop_class_col));
    if (n < 0 || (size_t)n >= sizeof ix->study_counts_sql)
        return pacs_err_set(err, PACS_EINVAL, "index: count query too long");
    return 0;
}

static int sq_open(const char *location, struct index **out, struct pacs_err *err)
{
    struct sq_index *ix = NULL;
    sqlite3_stmt *st = NULL;
    int rc = 0;
    *out = NULL;
    if (!location || !*location)
        return pacs_err_set(err, PACS_EINVAL, "index: empty location");
    if (!sqlite3_threadsafe())
        return pacs_err_set(err, PACS_EUNSUPPORTED, "index: SQLite built without threads");
    ix = calloc(1, sizeof *ix);
    if (!ix)
        return pacs_err_set(err, PACS_ENOMEM, "index: out of memory");
    ix->base.ops = &index_sqlite_ops;
    pthread_mutex_init(&ix->wmu, NULL);
    pthread_mutex_init(&ix->pool_mu, NULL);
    size_t n = strlen(location);
    ix->path = malloc(n + 1);
    if (!ix->path) {
        rc = pacs_err_set(err, PACS_ENOMEM, "index: out of memory");
        goto out;
    }
    memcpy(ix->path, location, n + 1);
    if ((rc = sq_layout(ix, err)) != 0)
        goto out;
    if ((rc = sq_connect(location, true, &ix->wdb, err)) != 0)
        goto out;
    /* WAL lets readers run beside the writer; FULL fsyncs the WAL at every
     * commit, since the archive acknowledges once insert_batch returns. */
    if ((rc = sq_prepare(ix->wdb, "PRAGMA journal_mode = WAL", false, &st, err)) != 0)
        goto out;
    if (sqlite3_step(st) != SQLITE_ROW ||
        sqlite3_stricmp((const char *)sqlite3_column_text(st, 0), "wal") != 0) {
        rc = pacs_err_set(err, PACS_EUNSUPPORTED, "index: %s cannot use WAL journaling",
                          location);
        goto out;
    }
    sqlite3_finalize(st);
    st = NULL;
    /* Per-record savepoints journal pages: in memory, not in temp files;
     * a batch's pages stay in the cache instead of spilling to the WAL
     * before COMMIT. */
    if ((rc = sq_exec(ix->wdb,
                      "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;"
                      " PRAGMA temp_store = MEMORY; PRAGMA cache_size = -65536",
                      err)) != 0)
        goto out;
    /* The migration to version 2 and the re-identification of moved rows
     * compute public ids in SQL. */
    if (sqlite3_create_function(ix->wdb, "pacs_public_id", 5,
                                SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL, sq_fn_public_id, NULL,
                                NULL) != SQLITE_OK) {
        rc = pacs_err_set(err, PACS_ENOMEM, "index: cannot register pacs_public_id");
        goto out;
    }
    if ((rc = sq_migrate(ix, ix->wdb, err)) != 0)
        goto out;
    if ((rc = sq_prepare_writer(ix, err)) != 0)
        goto out;
    *out = &ix->base;
out:
    sqlite3_finalize(st);
    if (rc)
        sq_close(&ix->base);
    return rc;
}

/* --- insert ----------------------------------------------------------------- */

static int sq_bind_level(struct sq_index *ix, sqlite3_stmt *st, int lv,
                         const struct index_record *r)
{
    int rc = 0;
    for (int k = 0; k < ix->n_cols[lv] && rc == SQLITE_OK; k++) {
        int c = ix->cols[lv][k];
        const char *v = r->values[c];
        if (c == ix->uid_col[INDEX_PATIENT] && !v)
            v = ""; /* instances without PatientID share one patient */
        rc = sq_bind_text(st, k + 2, v);
    }
    return rc;
}

/* Finds the level's row by unique key, then updates it (when something
 * changed) or inserts it. *old_parent is set when the row moved from
 * another parent (0 otherwise). */
static int sq_upsert(struct sq_index *ix, int lv, int64_t parent, const struct index_record *r,
                     const char *public_id, int64_t *id, int64_t *old_parent, bool *inserted,
                     struct pacs_err *err)
{
    sqlite3 *db = ix->wdb;
    sqlite3_stmt *st = ix->get[lv];
    const char *uid = r->values[ix->uid_col[lv]];
    int src, rc = 0;
    *old_parent = 0;
    *inserted = false;
    if (!uid)
        uid = "";
    if ((src = sqlite3_bind_text(st, 1, uid, -1, SQLITE_STATIC)) != SQLITE_OK)
        goto fail;
    src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        int64_t p = sqlite3_column_int64(st, 1);
        if (lv > INDEX_PATIENT && p != parent)
            *old_parent = p;
        sq_release(st);
        st = ix->upd[lv];
        if (lv > INDEX_PATIENT && (src = sqlite3_bind_int64(st, 1, parent)) != SQLITE_OK)
            goto fail;
        if ((src = sq_bind_level(ix, st, lv, r)) != SQLITE_OK)
            goto fail;
        if ((src = sqlite3_bind_int64(st, ix->n_cols[lv] + 2, *id)) != SQLITE_OK ||
            (src = sqlite3_bind_text(st, ix->n_cols[lv] + 3, public_id, -1, SQLITE_STATIC)) !=
                SQLITE_OK)
            goto fail;
        return sq_run(db, st, err, "update");
    }
    if (src != SQLITE_DONE)
        goto fail;
    sq_release(st);
    st = ix->ins[lv];
    if (lv > INDEX_PATIENT && (src = sqlite3_bind_int64(st, 1, parent)) != SQLITE_OK)
        goto fail;
    if ((src = sq_bind_level(ix, st, lv, r)) != SQLITE_OK ||
        (src = sqlite3_bind_text(st, ix->n_cols[lv] + 2, public_id, -1, SQLITE_STATIC)) !=
            SQLITE_OK)
        goto fail;
    if ((rc = sq_run(db, st, err, "insert")) != 0)
        return rc;
    *id = sqlite3_last_insert_rowid(db);
    *inserted = true;
    return 0;
fail:
    rc = sq_fail(db, src, err, "upsert");
    sq_release(st);
    return rc;
}

static int sq_bind_instance(struct sq_index *ix, sqlite3_stmt *st, int64_t parent,
                            const struct index_record *r)
{
    int n = ix->n_cols[INDEX_INSTANCE], p = n + 2, rc;
    size_t sl = strnlen(r->sha256, sizeof r->sha256);
    if ((rc = sqlite3_bind_int64(st, 1, parent)) != SQLITE_OK ||
        (rc = sq_bind_level(ix, st, INDEX_INSTANCE, r)) != SQLITE_OK ||
        (rc = sq_bind_text(st, p, r->transfer_syntax)) != SQLITE_OK ||
        (rc = sq_bind_text(st, p + 1, r->blob_key)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, p + 2, (sqlite3_int64)r->size)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, p + 3, (sqlite3_int64)r->ds_offset)) != SQLITE_OK)
        return rc;
    rc = sl ? sqlite3_bind_text(st, p + 4, r->sha256, (int)sl, SQLITE_STATIC)
            : sqlite3_bind_null(st, p + 4);
    if (rc != SQLITE_OK)
        return rc;
    if (r->metadata_json && r->metadata_len > (size_t)INT32_MAX)
        return SQLITE_TOOBIG;
    rc = r->metadata_json ? sqlite3_bind_text(st, p + 5, r->metadata_json, (int)r->metadata_len,
                                              SQLITE_STATIC)
                          : sqlite3_bind_null(st, p + 5);
    if (rc != SQLITE_OK || (rc = sq_bind_text(st, p + 6, r->remote_aet)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, p + 7, r->received_at)) != SQLITE_OK)
        return rc;
    return SQLITE_OK;
}

/* Recomputes the public ids of the rows below the study or series id. */
static int sq_reid_below(struct sq_index *ix, int lv, int64_t id, struct pacs_err *err)
{
    int first = lv == INDEX_STUDY ? 0 : 2, last = lv == INDEX_STUDY ? 1 : 2, rc = 0;
    for (int k = first; k <= last && rc == 0; k++) {
        sqlite3_stmt *st = ix->reid[k];
        sqlite3_bind_int64(st, 1, id);
        rc = sq_run(ix->wdb, st, err, "re-identify moved rows");
    }
    return rc;
}

static int sq_log_change(struct sq_index *ix, enum index_change_type type, int lv,
                         const char *public_id, int64_t time, struct pacs_err *err)
{
    sqlite3_stmt *st = ix->chg;
    int src;
    if ((src = sqlite3_bind_int(st, 1, (int)type)) != SQLITE_OK ||
        (src = sqlite3_bind_int(st, 2, lv)) != SQLITE_OK ||
        (src = sqlite3_bind_text(st, 3, public_id, -1, SQLITE_STATIC)) != SQLITE_OK ||
        (src = sqlite3_bind_int64(st, 4, time)) != SQLITE_OK) {
        sq_release(st);
        return sq_fail(ix->wdb, src, err, "change log");
    }
    return sq_run(ix->wdb, st, err, "change log");
}

/* Deletes the entity at lv (and then its parents) while it has no children
 * left: after a study, series or instance moved to another parent. */
static int sq_prune(struct sq_index *ix, int lv, int64_t id, struct pacs_err *err)
{
    sqlite3 *db = ix->wdb;
    int src, rc = 0;
    for (; lv >= INDEX_PATIENT && id > 0; lv--) {
        sqlite3_stmt *st = ix->has_child[lv];
        int64_t parent = 0;
        sqlite3_bind_int64(st, 1, id);
        src = sqlite3_step(st);
        sq_release(st);
        if (src == SQLITE_ROW)
            break;
        if (src != SQLITE_DONE)
            return sq_fail(db, src, err, "prune");
        if (lv > INDEX_PATIENT) {
            st = ix->parent_of[lv];
            sqlite3_bind_int64(st, 1, id);
            src = sqlite3_step(st);
            if (src == SQLITE_ROW)
                parent = sqlite3_column_int64(st, 0);
            sq_release(st);
            if (src != SQLITE_ROW && src != SQLITE_DONE)
                return sq_fail(db, src, err, "prune");
        }
        /* Gone without a DELETE request: followers of /changes learn it
         * as they would of one. */
        char pub[INDEX_PUBLIC_ID_LEN + 1] = "";
        st = ix->pub_of[lv];
        sqlite3_bind_int64(st, 1, id);
        if ((src = sqlite3_step(st)) == SQLITE_ROW && sqlite3_column_text(st, 0)) {
            size_t n = strnlen((const char *)sqlite3_column_text(st, 0), INDEX_PUBLIC_ID_LEN);
            memcpy(pub, sqlite3_column_text(st, 0), n);
            pub[n] = '\0';
        }
        sq_release(st);
        if (src != SQLITE_ROW && src != SQLITE_DONE)
            return sq_fail(db, src, err, "prune");
        st = ix->del[lv];
        sqlite3_bind_int64(st, 1, id);
        if ((rc = sq_run(db, st, err, "prune")) != 0)
            return rc;
        if (pub[0] &&
            (rc = sq_log_change(ix, INDEX_CHANGE_DELETED, lv, pub, (int64_t)time(NULL), err)) != 0)
            return rc;
        id = parent;
    }
    return 0;
}

/* The patient, study and series the previous record of the batch upserted:
 * a record with the same parent and values (the usual case: a series
 * arrives instance after instance) skips their SELECT and UPDATE. */
struct sq_memo {
    bool valid;
    int64_t id, parent;
    const struct index_record *r;
};

static bool sq_same_str(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static bool sq_memo_hit(const struct sq_index *ix, const struct sq_memo *m, int lv,
                        int64_t parent, const struct index_record *r)
{
    if (!m->valid || m->parent != parent)
        return false;
    for (int k = 0; k < ix->n_cols[lv]; k++) {
        int c = ix->cols[lv][k];
        if (!sq_same_str(m->r->values[c], r->values[c]))
            return false;
    }
    return true;
}

/* Appends one entry to the change log (inside the caller's transaction). */
static int sq_insert_one(struct sq_index *ix, const struct index_record *r,
                         enum index_dup_policy dup, struct sq_memo memo[3],
                         struct index_insert_result *res, struct pacs_err *err)
{
    sqlite3 *db = ix->wdb;
    sqlite3_stmt *st;
    int64_t ids[4] = {0}, moved_from[4] = {0}, inst_id = 0, inst_parent = 0;
    char pub[4][INDEX_PUBLIC_ID_LEN + 1];
    const char *uids[4];
    bool created[4] = {false, false, false, false};
    int src, rc = 0;

    for (int lv = INDEX_STUDY; lv <= INDEX_INSTANCE; lv++) {
        const char *v = r->values[ix->uid_col[lv]];
        if (!v || !*v)
            return pacs_err_set(err, PACS_EINVAL, "index: record without %s",
                                col_name(ix->uid_col[lv]));
    }
    if (!r->blob_key || !*r->blob_key)
        return pacs_err_set(err, PACS_EINVAL, "index: record without blob key");
    if (r->size > (uint64_t)INT64_MAX || r->ds_offset > (uint64_t)INT64_MAX)
        return pacs_err_set(err, PACS_EINVAL, "index: size out of range");
    for (int lv = INDEX_PATIENT; lv <= INDEX_INSTANCE; lv++)
        uids[lv] = r->values[ix->uid_col[lv]];
    for (int lv = INDEX_PATIENT; lv <= INDEX_INSTANCE; lv++) {
        if (index_public_id((enum index_level)lv, uids, pub[lv]) != 0)
            return pacs_err_set(err, PACS_ENOMEM, "index: cannot compute a public id");
    }

    /* The instance first: a kept or rejected duplicate changes nothing. */
    st = ix->get[INDEX_INSTANCE];
    sqlite3_bind_text(st, 1, r->values[ix->uid_col[INDEX_INSTANCE]], -1, SQLITE_STATIC);
    src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        inst_id = sqlite3_column_int64(st, 0);
        inst_parent = sqlite3_column_int64(st, 1);
        const char *k = (const char *)sqlite3_column_text(st, 2);
        /* The same key again would have the archive delete the live blob. */
        if (k && strcmp(k, r->blob_key) != 0) {
            size_t kl = strnlen(k, sizeof res->old_blob_key - 1);
            memcpy(res->old_blob_key, k, kl);
            res->old_blob_key[kl] = '\0';
        }
    }
    sq_release(st);
    if (src != SQLITE_ROW && src != SQLITE_DONE)
        return sq_fail(db, src, err, "find instance");
    if (inst_id && dup != INDEX_DUP_REPLACE) {
        res->outcome = dup == INDEX_DUP_KEEP ? INDEX_KEPT : INDEX_REJECTED;
        res->old_blob_key[0] = '\0';
        return 0;
    }

    /* moved_from[lv]: the old parent (an entity at level lv) of a row that
     * moved to another parent; pruned below if it was left empty. */
    for (int lv = INDEX_PATIENT; lv <= INDEX_SERIES; lv++) {
        int64_t old = 0, parent = lv ? ids[lv - 1] : 0;
        if (sq_memo_hit(ix, &memo[lv], lv, parent, r)) {
            ids[lv] = memo[lv].id;
            continue;
        }
        if ((rc = sq_upsert(ix, lv, parent, r, pub[lv], &ids[lv], &old, &created[lv], err)) !=
            0)
            return rc;
        memo[lv] = (struct sq_memo){.valid = true, .id = ids[lv], .parent = parent, .r = r};
        if (lv > INDEX_PATIENT)
            moved_from[lv - 1] = old;
        /* A study or series under another parent now: the ids below it
         * start with other UIDs (Orthanc's ids hash the whole chain). */
        if (old && (rc = sq_reid_below(ix, lv, ids[lv], err)) != 0)
            return rc;
    }
    st = inst_id ? ix->upd[INDEX_INSTANCE] : ix->ins[INDEX_INSTANCE];
    int np = ix->n_cols[INDEX_INSTANCE] + SQ_N_INST_EXTRA;
    if ((src = sq_bind_instance(ix, st, ids[INDEX_SERIES], r)) != SQLITE_OK ||
        (inst_id && (src = sqlite3_bind_int64(st, np + 2, inst_id)) != SQLITE_OK) ||
        (src = sqlite3_bind_text(st, inst_id ? np + 3 : np + 2, pub[INDEX_INSTANCE], -1,
                                 SQLITE_STATIC)) != SQLITE_OK) {
        rc = sq_fail(db, src, err, "bind instance");
        sq_release(st);
        return rc;
    }
    if ((rc = sq_run(db, st, err, inst_id ? "replace instance" : "insert instance")) != 0)
        return rc;
    if (inst_id && inst_parent != ids[INDEX_SERIES])
        moved_from[INDEX_SERIES] = inst_parent;
    for (int lv = INDEX_SERIES; lv >= INDEX_PATIENT; lv--) {
        if (!moved_from[lv])
            continue;
        /* Pruning may delete what the memo remembers. */
        memset(memo, 0, 3 * sizeof *memo);
        if ((rc = sq_prune(ix, lv, moved_from[lv], err)) != 0)
            return rc;
    }
    /* Orthanc's order: the instance, then the entities it created, from
     * the series up. */
    if ((rc = sq_log_change(ix, INDEX_CHANGE_NEW_INSTANCE, INDEX_INSTANCE, pub[INDEX_INSTANCE],
                            r->received_at, err)) != 0)
        return rc;
    static const enum index_change_type new_type[3] = {
        INDEX_CHANGE_NEW_PATIENT, INDEX_CHANGE_NEW_STUDY, INDEX_CHANGE_NEW_SERIES};
    for (int lv = INDEX_SERIES; lv >= INDEX_PATIENT; lv--) {
        if (created[lv] &&
            (rc = sq_log_change(ix, new_type[lv], lv, pub[lv], r->received_at, err)) != 0)
            return rc;
    }
    res->outcome = inst_id ? INDEX_REPLACED : INDEX_INSERTED;
    return 0;
}

static int sq_txn(struct sq_index *ix, int which, struct pacs_err *err)
{
    return sq_run(ix->wdb, ix->txn[which], err, "transaction");
}

static int sq_insert_batch(struct index *base, const struct index_record *recs, size_t n,
                           enum index_dup_policy dup, struct index_insert_result *results,
                           struct pacs_err *err)
{
    struct sq_index *ix = (struct sq_index *)base;
    struct sq_memo memo[3] = {{0}};
    bool in_txn = false;
    int rc = 0;

    pthread_mutex_lock(&ix->wmu);
    if ((rc = sq_txn(ix, W_BEGIN, err)) != 0)
        goto out;
    in_txn = true;
    for (size_t k = 0; k < n; k++) {
        struct index_insert_result *res = &results[k];
        res->outcome = INDEX_FAILED;
        res->old_blob_key[0] = '\0';
        pacs_err_clear(&res->err);
        if ((rc = sq_txn(ix, W_SAVEPOINT, err)) != 0)
            goto out;
        rc = sq_insert_one(ix, &recs[k], dup, memo, res, &res->err);
        if (rc == 0) {
            if ((rc = sq_txn(ix, W_RELEASE, err)) != 0)
                goto out;
            continue;
        }
        /* Only a bad record (constraint, validation) stays within the
         * record; anything else (I/O, memory, lost transaction) fails the
         * batch. */
        if (rc != PACS_EINVAL || sqlite3_get_autocommit(ix->wdb)) {
            pacs_err_set(err, rc, "%s", res->err.msg);
            goto out;
        }
        res->outcome = INDEX_FAILED;
        res->old_blob_key[0] = '\0';
        memset(memo, 0, sizeof memo); /* its upserts are rolled back */
        if ((rc = sq_txn(ix, W_ROLLBACK_TO, err)) != 0 ||
            (rc = sq_txn(ix, W_RELEASE, err)) != 0)
            goto out;
    }
    rc = sq_txn(ix, W_COMMIT, err);
    if (rc == 0)
        in_txn = false;
out:
    if (in_txn && !sqlite3_get_autocommit(ix->wdb))
        sq_txn(ix, W_ROLLBACK, NULL);
    pthread_mutex_unlock(&ix->wmu);
    return rc;
}

/* --- find ------------------------------------------------------------------- */

/* A value bound to the query, owned when it had to be rewritten. */
struct sq_param {
    const char *s;
    char *owned;
};

struct sq_params {
    struct sq_param *v;
    size_t n, cap;
};

static int sq_param_add(struct sq_params *p, const char *s, char *owned)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        struct sq_param *nv = realloc(p->v, cap * sizeof *nv);
        if (!nv) {
            free(owned);
            return PACS_ENOMEM;
        }
        p->v = nv;
        p->cap = cap;
    }
    p->v[p->n].s = s;
    p->v[p->n].owned = owned;
    p->n++;
    return 0;
}

static void sq_params_free(struct sq_params *p)
{
    for (size_t k = 0; k < p->n; k++)
        free(p->v[k].owned);
    free(p->v);
}

/* DICOM wildcards to GLOB (case-sensitive): '*' and '?' are the same in
 * both; '[' and ']' open GLOB character classes, so each becomes a class
 * holding only itself. */
static char *sq_glob_pattern(const char *v)
{
    size_t n = strlen(v);
    char *out = malloc(n * 3 + 1), *o = out;
    if (!out)
        return NULL;
    for (; *v; v++) {
        if (*v == '[') {
            memcpy(o, "[[]", 3);
            o += 3;
        } else if (*v == ']') {
            memcpy(o, "[]]", 3);
            o += 3;
        } else {
            *o++ = *v;
        }
    }
    *o = '\0';
    return out;
}

/* DICOM wildcards to LIKE ... ESCAPE '\' (ASCII case-insensitive). */
static char *sq_like_pattern(const char *v)
{
    size_t n = strlen(v);
    char *out = malloc(n * 2 + 1), *o = out;
    if (!out)
        return NULL;
    for (; *v; v++) {
        switch (*v) {
        case '*': *o++ = '%'; break;
        case '?': *o++ = '_'; break;
        case '%':
        case '_':
        case '\\':
            *o++ = '\\';
            *o++ = *v;
            break;
        default: *o++ = *v;
        }
    }
    *o = '\0';
    return out;
}

static int sq_cond_sql(struct sb *s, struct sq_params *p, const struct index_cond *c,
                       struct pacs_err *err)
{
    const struct index_tag *t = &index_main_tags[c->col];
    const char *a = sq_alias[t->level];
    bool pn = t->vr == DCM_VR_PN;
    char *pat;
    int rc = 0;

    switch (c->kind) {
    case INDEX_MATCH_SINGLE:
        if (!c->value)
            return pacs_err_set(err, PACS_EINVAL, "index: no value for %s", t->column);
        sb_printf(s, " AND %s.%s = ?%s", a, t->column, pn ? " COLLATE NOCASE" : "");
        rc = sq_param_add(p, c->value, NULL);
        break;
    case INDEX_MATCH_WILDCARD:
        if (!c->value)
            return pacs_err_set(err, PACS_EINVAL, "index: no value for %s", t->column);
        pat = pn ? sq_like_pattern(c->value) : sq_glob_pattern(c->value);
        if (!pat)
            return pacs_err_set(err, PACS_ENOMEM, "index: out of memory");
        if (pn)
            sb_printf(s, " AND %s.%s LIKE ? ESCAPE '\\'", a, t->column);
        else
            sb_printf(s, " AND %s.%s GLOB ?", a, t->column);
        rc = sq_param_add(p, pat, pat);
        break;
    case INDEX_MATCH_RANGE:
        if (c->lo) {
            sb_printf(s, " AND %s.%s >= ?", a, t->column);
            if ((rc = sq_param_add(p, c->lo, NULL)) != 0)
                break;
        } else if (c->hi) {
            /* An empty value matches no range ("" sorts first). */
            sb_printf(s, " AND %s.%s > ''", a, t->column);
        }
        if (c->hi) {
            size_t n = strlen(c->hi);
            pat = malloc(n + sizeof SQ_MAX_CHAR);
            if (!pat)
                return pacs_err_set(err, PACS_ENOMEM, "index: out of memory");
            memcpy(pat, c->hi, n);
            memcpy(pat + n, SQ_MAX_CHAR, sizeof SQ_MAX_CHAR);
            sb_printf(s, " AND %s.%s <= ?", a, t->column);
            rc = sq_param_add(p, pat, pat);
        }
        break;
    case INDEX_MATCH_LIST:
        if (c->n_list == 0 || !c->list)
            return pacs_err_set(err, PACS_EINVAL, "index: empty list for %s", t->column);
        sb_printf(s, " AND %s.%s IN (", a, t->column);
        for (size_t k = 0; k < c->n_list && rc == 0; k++) {
            if (!c->list[k])
                return pacs_err_set(err, PACS_EINVAL, "index: NULL in list for %s", t->column);
            sb_puts(s, k ? ", ?" : "?");
            rc = sq_param_add(p, c->list[k], NULL);
        }
        sb_puts(s, ")");
        break;
    default:
        return pacs_err_set(err, PACS_EINVAL, "index: unknown match kind %d", (int)c->kind);
    }
    if (rc)
        return pacs_err_set(err, rc, "index: out of memory");
    return 0;
}

/* Result columns: ids of levels 0..L, main tags of levels 0..L, then (at
 * INSTANCE) the instance extras. */
static int sq_build_find(struct sq_index *ix, const struct index_query *q, struct sb *s,
                         struct sq_params *p, struct pacs_err *err)
{
    int L = (int)q->level, rc;
    sb_puts(s, "SELECT ");
    for (int lv = 0; lv <= L; lv++)
        sb_printf(s, "%s%s.id", lv ? ", " : "", sq_alias[lv]);
    for (int lv = 0; lv <= L; lv++)
        sb_printf(s, ", %s.public_id", sq_alias[lv]);
    if (L == INDEX_INSTANCE)
        sb_puts(s, ", i.received_at");
    else if (!q->want_last_update)
        sb_puts(s, ", 0");
    else if (L == INDEX_SERIES)
        sb_puts(s, ", (SELECT max(x.received_at) FROM instances AS x WHERE x.parent_id = se.id)");
    else if (L == INDEX_STUDY)
        sb_puts(s, ", (SELECT max(x.received_at) FROM instances AS x JOIN series AS y"
                   " ON x.parent_id = y.id WHERE y.parent_id = st.id)");
    else
        sb_puts(s, ", (SELECT max(x.received_at) FROM instances AS x JOIN series AS y"
                   " ON x.parent_id = y.id JOIN studies AS z ON y.parent_id = z.id"
                   " WHERE z.parent_id = p.id)");
    for (int lv = 0; lv <= L; lv++)
        sb_cols(s, ix, lv, sq_alias[lv]);
    if (L == INDEX_INSTANCE)
        sb_printf(s, ", i.transfer_syntax, i.blob_key, i.size, i.ds_offset, i.sha256%s",
                  q->want_metadata ? ", i.metadata" : "");
    /* With conditions only on levels above, the join starts at the lowest
     * of them (CROSS JOIN fixes SQLite's join order) and walks down the
     * parent indexes: without statistics the planner would rather scan the
     * query level's table in id order to save the sort, a full scan of the
     * largest table when the condition cannot use an index ("*smith*"). */
    int drive = -1;
    for (size_t k = 0; k < q->n_conds; k++) {
        int cl = q->conds[k].col;
        if (cl >= 0 && (size_t)cl < index_n_main_tags && (int)index_main_tags[cl].level > drive)
            drive = (int)index_main_tags[cl].level;
    }
    if (drive < 0 || drive > L)
        drive = L;
    const char *join = drive < L ? "CROSS JOIN" : "JOIN";
    sb_printf(s, " FROM %s AS %s", sq_table[drive], sq_alias[drive]);
    for (int lv = drive - 1; lv >= 0; lv--)
        sb_printf(s, " %s %s AS %s ON %s.id = %s.parent_id", join, sq_table[lv], sq_alias[lv],
                  sq_alias[lv], sq_alias[lv + 1]);
    for (int lv = drive + 1; lv <= L; lv++)
        sb_printf(s, " %s %s AS %s ON %s.parent_id = %s.id", join, sq_table[lv], sq_alias[lv],
                  sq_alias[lv], sq_alias[lv - 1]);
    sb_puts(s, " WHERE 1");
    for (size_t k = 0; k < q->n_conds; k++) {
        const struct index_cond *c = &q->conds[k];
        if (c->col < 0 || (size_t)c->col >= index_n_main_tags)
            return pacs_err_set(err, PACS_EINVAL, "index: no main tag %d", c->col);
        if ((int)index_main_tags[c->col].level > L)
            return pacs_err_set(err, PACS_EINVAL, "index: %s is below the query level",
                                index_main_tags[c->col].column);
        if ((rc = sq_cond_sql(s, p, c, err)) != 0)
            return rc;
    }
    if (q->public_id) {
        sb_printf(s, " AND %s.public_id = ?", sq_alias[L]);
        if ((rc = sq_param_add(p, q->public_id, NULL)) != 0)
            return pacs_err_set(err, rc, "index: out of memory");
    }
    if (q->parent_public_id) {
        if (L == INDEX_PATIENT)
            return pacs_err_set(err, PACS_EINVAL, "index: patients have no parent");
        sb_printf(s, " AND %s.public_id = ?", sq_alias[L - 1]);
        if ((rc = sq_param_add(p, q->parent_public_id, NULL)) != 0)
            return pacs_err_set(err, rc, "index: out of memory");
    }
    /* Only when asked: a range on the id can make the planner walk the
     * whole table in id order instead of using the conditions' indexes. */
    if (q->since_id > 0)
        sb_printf(s, " AND %s.id > ?", sq_alias[L]);
    sb_printf(s, " ORDER BY %s.id LIMIT ? OFFSET ?", sq_alias[L]);
    if (s->rc)
        return pacs_err_set(err, s->rc, "index: out of memory");
    return 0;
}

/* Computed attributes and metadata, remembered for the last entity of each
 * level (rows of one study come one after another in a series query). */
/* Counts computed during one find, by entity id. A listing's rows
 * interleave their parents (instances of several studies stored at once),
 * so remembering only the last parent recomputed the counts on most rows.
 * Open addressing on the id; cleared when SQ_COUNT_CACHE_MAX entries are
 * in use, which bounds memory on a listing of many parents. */
#define SQ_COUNT_CACHE_MAX 16384

struct sq_count_entry {
    int64_t id; /* 0: empty slot (row ids start at 1) */
    uint32_t n[3];
    /* Study level: ModalitiesInStudy, SOPClassesInStudy; NULL = absent. */
    char *modalities, *sop_classes;
};

struct sq_count_cache {
    struct sq_count_entry *slots;
    size_t cap, used; /* cap: 0 or a power of two */
};

struct sq_counts {
    struct sq_count_cache lv[3]; /* patient, study, series */
};

static void sq_cc_clear(struct sq_count_cache *cc)
{
    for (size_t i = 0; i < cc->cap; i++) {
        free(cc->slots[i].modalities);
        free(cc->slots[i].sop_classes);
    }
    free(cc->slots);
    cc->slots = NULL;
    cc->cap = cc->used = 0;
}

static size_t sq_cc_hash(int64_t id, size_t cap)
{
    return (size_t)(((uint64_t)id * 0x9e3779b97f4a7c15ull) >> 20) & (cap - 1);
}

static struct sq_count_entry *sq_cc_find(struct sq_count_cache *cc, int64_t id)
{
    if (!cc->cap)
        return NULL;
    for (size_t i = sq_cc_hash(id, cc->cap);; i = (i + 1) & (cc->cap - 1)) {
        if (cc->slots[i].id == id)
            return &cc->slots[i];
        if (cc->slots[i].id == 0)
            return NULL;
    }
}

/* A new zeroed entry for id (not present), or NULL on no memory. */
static struct sq_count_entry *sq_cc_add(struct sq_count_cache *cc, int64_t id)
{
    if (cc->used >= SQ_COUNT_CACHE_MAX)
        sq_cc_clear(cc);
    if (2 * (cc->used + 1) > cc->cap) {
        size_t ncap = cc->cap ? 2 * cc->cap : 64;
        struct sq_count_entry *ns = calloc(ncap, sizeof *ns);
        if (!ns)
            return NULL;
        for (size_t i = 0; i < cc->cap; i++) {
            if (!cc->slots[i].id)
                continue;
            size_t j = sq_cc_hash(cc->slots[i].id, ncap);
            while (ns[j].id)
                j = (j + 1) & (ncap - 1);
            ns[j] = cc->slots[i];
        }
        free(cc->slots);
        cc->slots = ns;
        cc->cap = ncap;
    }
    size_t i = sq_cc_hash(id, cc->cap);
    while (cc->slots[i].id)
        i = (i + 1) & (cc->cap - 1);
    cc->slots[i].id = id;
    cc->used++;
    return &cc->slots[i];
}

static void sq_counts_free(struct sq_counts *k)
{
    for (int i = 0; i < 3; i++)
        sq_cc_clear(&k->lv[i]);
}

static const char SQ_PATIENT_COUNTS[] =
    "SELECT (SELECT count(*) FROM studies WHERE parent_id = ?1),"
    " (SELECT count(*) FROM series AS se JOIN studies AS st ON se.parent_id = st.id"
    " WHERE st.parent_id = ?1),"
    " (SELECT count(*) FROM instances AS i JOIN series AS se ON i.parent_id = se.id"
    " JOIN studies AS st ON se.parent_id = st.id WHERE st.parent_id = ?1)";

static uint32_t sq_u32(sqlite3_stmt *st, int col)
{
    sqlite3_int64 v = sqlite3_column_int64(st, col);
    return v < 0 ? 0 : v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

/* A copy of a text column, NULL for SQL NULL; false on no memory. */
static bool sq_dup_text(sqlite3_stmt *st, int col, char **out)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    *out = t ? strndup((const char *)t, (size_t)sqlite3_column_bytes(st, col)) : NULL;
    return !t || *out;
}

/* The cache entry of entity `id` at count level lv (0 patient, 1 study,
 * 2 series), computing it with sql on a miss. */
static int sq_count_entry(struct sq_conn *c, struct sq_counts *k, int lv, int64_t id,
                          const char *sql, struct sq_count_entry **out, struct pacs_err *err)
{
    static const int ncols[3] = {3, 2, 1};
    struct sq_count_entry *e = sq_cc_find(&k->lv[lv], id);
    sqlite3_stmt *st;
    int src, rc;
    if (e) {
        *out = e;
        return 0;
    }
    if ((rc = sq_cached(c, sql, &st, err)) != 0)
        return rc;
    sqlite3_bind_int64(st, 1, id);
    if ((src = sqlite3_step(st)) != SQLITE_ROW) {
        rc = sq_fail(c->db, src, err, "count");
    } else if (!(e = sq_cc_add(&k->lv[lv], id))) {
        rc = pacs_err_set(err, PACS_ENOMEM, "index: out of memory");
    } else {
        for (int j = 0; j < ncols[lv]; j++)
            e->n[j] = sq_u32(st, j);
        if (lv == 1 && (!sq_dup_text(st, 2, &e->modalities) ||
                        !sq_dup_text(st, 3, &e->sop_classes)))
            rc = pacs_err_set(err, PACS_ENOMEM, "index: out of memory");
    }
    sq_release(st);
    *out = e;
    return rc;
}

static int sq_fill_counts(struct sq_index *ix, struct sq_conn *c, const int64_t ids[4], int L,
                          struct sq_counts *k, struct index_row *row, struct pacs_err *err)
{
    struct sq_count_entry *e;
    int rc = sq_count_entry(c, k, 0, ids[INDEX_PATIENT], SQ_PATIENT_COUNTS, &e, err);
    if (rc)
        return rc;
    row->n_patient_studies = e->n[0];
    row->n_patient_series = e->n[1];
    row->n_patient_instances = e->n[2];
    if (L >= INDEX_STUDY) {
        if ((rc = sq_count_entry(c, k, 1, ids[INDEX_STUDY], ix->study_counts_sql, &e, err)) != 0)
            return rc;
        row->n_study_series = e->n[0];
        row->n_study_instances = e->n[1];
        /* Empty when the study has none: the attribute is present but empty. */
        row->modalities_in_study = e->modalities ? e->modalities : "";
        row->sop_classes_in_study = e->sop_classes ? e->sop_classes : "";
    }
    if (L >= INDEX_SERIES) {
        if ((rc = sq_count_entry(c, k, 2, ids[INDEX_SERIES],
                                 "SELECT count(*) FROM instances WHERE parent_id = ?1", &e,
                                 err)) != 0)
            return rc;
        row->n_series_instances = e->n[0];
    }
    return 0;
}

/* The metadata of the entity's first instance; *stp stays stepped (its text
 * is what row points at) until the caller releases it after the callback. */
static int sq_fill_metadata(struct sq_conn *c, int L, int64_t id, struct index_row *row,
                            sqlite3_stmt **stp, struct pacs_err *err)
{
    static const char by_patient[] =
        "SELECT i.metadata FROM instances AS i JOIN series AS se ON i.parent_id = se.id"
        " JOIN studies AS st ON se.parent_id = st.id WHERE st.parent_id = ?1"
        " ORDER BY i.id LIMIT 1";
    static const char by_study[] =
        "SELECT i.metadata FROM instances AS i JOIN series AS se ON i.parent_id = se.id"
        " WHERE se.parent_id = ?1 ORDER BY i.id LIMIT 1";
    static const char by_series[] =
        "SELECT metadata FROM instances WHERE parent_id = ?1 ORDER BY id LIMIT 1";
    const char *sql = L == INDEX_PATIENT ? by_patient : L == INDEX_STUDY ? by_study : by_series;
    sqlite3_stmt *st;
    int src, rc;
    if ((rc = sq_cached(c, sql, &st, err)) != 0)
        return rc;
    *stp = st;
    sqlite3_bind_int64(st, 1, id);
    src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        row->metadata_json = (const char *)sqlite3_column_text(st, 0);
        row->metadata_len = row->metadata_json ? (size_t)sqlite3_column_bytes(st, 0) : 0;
        return 0;
    }
    if (src == SQLITE_DONE)
        return 0;
    return sq_fail(c->db, src, err, "metadata");
}

static int sq_find(struct index *base, const struct index_query *q, index_row_cb cb, void *ctx,
                   struct pacs_err *err)
{
    struct sq_index *ix = (struct sq_index *)base;
    struct sq_conn *c = NULL;
    struct sb s = {0};
    struct sq_params p = {0};
    struct sq_counts k = {0};
    sqlite3_stmt *st = NULL, *begin = NULL, *meta = NULL;
    bool in_txn = false;
    int L, src, rc = 0, b = 1;
    sqlite3_int64 lim, off;

    if (!q || !cb || (unsigned)q->level > INDEX_INSTANCE || (q->n_conds && !q->conds))
        return pacs_err_set(err, PACS_EINVAL, "index: bad query");
    L = (int)q->level;
    if ((rc = sq_build_find(ix, q, &s, &p, err)) != 0)
        goto out;
    if ((rc = sq_reader_get(ix, &c, err)) != 0)
        goto out;
    if (p.n + 3 > (size_t)sqlite3_limit(c->db, SQLITE_LIMIT_VARIABLE_NUMBER, -1)) {
        rc = pacs_err_set(err, PACS_ELIMIT, "index: too many values in the query (%zu)", p.n);
        goto out;
    }
    /* One read transaction: rows and counts from the same snapshot. */
    if ((rc = sq_cached(c, "BEGIN", &begin, err)) != 0)
        goto out;
    if ((rc = sq_run(c->db, begin, err, "begin")) != 0)
        goto out;
    in_txn = true;
    if ((rc = sq_cached(c, sb_str(&s), &st, err)) != 0)
        goto out;
    for (size_t j = 0; j < p.n; j++, b++) {
        if ((src = sqlite3_bind_text(st, b, p.v[j].s, -1, SQLITE_STATIC)) != SQLITE_OK)
            goto sqlfail;
    }
    if (q->since_id > 0 && (src = sqlite3_bind_int64(st, b++, q->since_id)) != SQLITE_OK)
        goto sqlfail;
    lim = q->limit == 0 || q->limit > (size_t)INT64_MAX ? -1 : (sqlite3_int64)q->limit;
    off = q->offset > (size_t)INT64_MAX ? INT64_MAX : (sqlite3_int64)q->offset;
    if ((src = sqlite3_bind_int64(st, b++, lim)) != SQLITE_OK ||
        (src = sqlite3_bind_int64(st, b++, off)) != SQLITE_OK)
        goto sqlfail;

    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        struct index_row row;
        int64_t ids[4] = {0};
        int col = 2 * (L + 1) + 1;
        memset(&row, 0, sizeof row);
        row.level = q->level;
        for (int lv = 0; lv <= L; lv++) {
            ids[lv] = sqlite3_column_int64(st, lv);
            row.public_ids[lv] = (const char *)sqlite3_column_text(st, L + 1 + lv);
        }
        row.last_update = sqlite3_column_int64(st, 2 * (L + 1));
        row.id = ids[L];
        for (int lv = 0; lv <= L; lv++) {
            for (int j = 0; j < ix->n_cols[lv]; j++, col++)
                row.values[ix->cols[lv][j]] = (const char *)sqlite3_column_text(st, col);
        }
        if (L == INDEX_INSTANCE) {
            row.transfer_syntax = (const char *)sqlite3_column_text(st, col);
            row.blob_key = (const char *)sqlite3_column_text(st, col + 1);
            row.size = (uint64_t)sqlite3_column_int64(st, col + 2);
            row.ds_offset = (uint64_t)sqlite3_column_int64(st, col + 3);
            row.sha256 = (const char *)sqlite3_column_text(st, col + 4);
            if (q->want_metadata) {
                row.metadata_json = (const char *)sqlite3_column_text(st, col + 5);
                row.metadata_len =
                    row.metadata_json ? (size_t)sqlite3_column_bytes(st, col + 5) : 0;
            }
        }
        if (q->want_counts && (rc = sq_fill_counts(ix, c, ids, L, &k, &row, err)) != 0)
            goto out;
        if (q->want_metadata && L != INDEX_INSTANCE &&
            (rc = sq_fill_metadata(c, L, ids[L], &row, &meta, err)) != 0)
            goto out;
        rc = cb(ctx, &row);
        sq_release(meta);
        meta = NULL;
        if (rc)
            goto out;
    }
    if (src != SQLITE_DONE)
        goto sqlfail;
    goto out;
sqlfail:
    rc = sq_fail(c->db, src, err, "query");
out:
    sq_release(meta);
    sq_release(st);
    if (in_txn) {
        sqlite3_stmt *end = NULL;
        if (sq_cached(c, "COMMIT", &end, NULL) != 0 || sq_run(c->db, end, NULL, "end") != 0)
            sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    }
    if (c) {
        /* A connection left inside a transaction would pin an old snapshot. */
        if (!sqlite3_get_autocommit(c->db)) {
            sq_conn_free(c);
        } else {
            sq_reader_put(ix, c);
        }
    }
    sq_counts_free(&k);
    dynbuf_free(&s.b);
    sq_params_free(&p);
    return rc;
}

static int sq_has_blob(struct index *base, const char *key, bool *out, struct pacs_err *err)
{
    struct sq_index *ix = (struct sq_index *)base;
    struct sq_conn *c = NULL;
    sqlite3_stmt *st = NULL;
    int src, rc;
    *out = false;
    if (!key)
        return pacs_err_set(err, PACS_EINVAL, "index: no blob key");
    if ((rc = sq_reader_get(ix, &c, err)) != 0)
        return rc;
    if ((rc = sq_cached(c, "SELECT 1 FROM instances WHERE blob_key = ?1", &st, err)) != 0)
        goto out;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    src = sqlite3_step(st);
    if (src == SQLITE_ROW)
        *out = true;
    else if (src != SQLITE_DONE)
        rc = sq_fail(c->db, src, err, "has_blob");
out:
    sq_release(st);
    sq_reader_put(ix, c);
    return rc;
}

static int sq_stats(struct index *base, struct index_stats *out, struct pacs_err *err)
{
    struct sq_index *ix = (struct sq_index *)base;
    struct sq_conn *c = NULL;
    sqlite3_stmt *st = NULL;
    int src, rc;
    memset(out, 0, sizeof *out);
    if ((rc = sq_reader_get(ix, &c, err)) != 0)
        return rc;
    if ((rc = sq_cached(c,
                        "SELECT (SELECT count(*) FROM patients), (SELECT count(*) FROM studies),"
                        " (SELECT count(*) FROM series), (SELECT count(*) FROM instances),"
                        " (SELECT coalesce(sum(size), 0) FROM instances)",
                        &st, err)) != 0)
        goto out;
    src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        out->patients = (uint64_t)sqlite3_column_int64(st, 0);
        out->studies = (uint64_t)sqlite3_column_int64(st, 1);
        out->series = (uint64_t)sqlite3_column_int64(st, 2);
        out->instances = (uint64_t)sqlite3_column_int64(st, 3);
        out->bytes = (uint64_t)sqlite3_column_int64(st, 4);
    } else {
        rc = sq_fail(c->db, src, err, "stats");
    }
out:
    sq_release(st);
    sq_reader_put(ix, c);
    return rc;
}

/* --- delete and the change log ---------------------------------------------- */

/* " FROM <level from> AS a JOIN ... <level to>": the descendants at `to` of
 * the entity at `from`, whose id is the statement's ?1. */
static void sb_chain(struct sb *s, int from, int to)
{
    sb_printf(s, " FROM %s AS %s", sq_table[from], sq_alias[from]);
    for (int lv = from + 1; lv <= to; lv++)
        sb_printf(s, " JOIN %s AS %s ON %s.parent_id = %s.id", sq_table[lv], sq_alias[lv],
                  sq_alias[lv], sq_alias[lv - 1]);
    sb_printf(s, " WHERE %s.id = ?1", sq_alias[from]);
}

static int sq_keys_add(struct index_deleted *d, size_t *cap, const char *key)
{
    if (d->n_blob_keys == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        char(*nk)[65] = realloc(d->blob_keys, nc * sizeof *nk);
        if (!nk)
            return PACS_ENOMEM;
        d->blob_keys = nk;
        *cap = nc;
    }
    size_t n = strnlen(key, 64);
    memcpy(d->blob_keys[d->n_blob_keys], key, n);
    d->blob_keys[d->n_blob_keys][n] = '\0';
    d->n_blob_keys++;
    return 0;
}

/* One statement, run to completion with ?1 = id (an ad hoc statement:
 * deletes are rare, their SQL is not worth caching). */
static int sq_exec_id(sqlite3 *db, struct sb *s, int64_t id, struct pacs_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = sq_prepare_sb(db, s, &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, id);
    rc = sq_run(db, st, err, "delete");
    sqlite3_finalize(st);
    return rc;
}

static int sq_delete_locked(struct sq_index *ix, int L, const char *public_id, int64_t now,
                            struct index_deleted *out, struct pacs_err *err)
{
    sqlite3 *db = ix->wdb;
    sqlite3_stmt *st = NULL;
    struct sb s = {0};
    int64_t id = 0, parent = 0;
    size_t cap = 0;
    int src, rc = 0;

    sb_printf(&s, "SELECT id, %s FROM %s WHERE public_id = ?1",
              L > INDEX_PATIENT ? "parent_id" : "0", sq_table[L]);
    if ((rc = sq_prepare_sb(db, &s, &st, err)) != 0)
        goto out;
    sqlite3_bind_text(st, 1, public_id, -1, SQLITE_STATIC);
    src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        id = sqlite3_column_int64(st, 0);
        parent = sqlite3_column_int64(st, 1);
    } else if (src == SQLITE_DONE) {
        rc = pacs_err_set(err, PACS_ENOTFOUND, "no %s with id %s",
                          sq_table[L], public_id);
        goto out;
    } else {
        rc = sq_fail(db, src, err, "delete");
        goto out;
    }
    sqlite3_finalize(st);
    st = NULL;

    /* Deleted changes and blob keys, from the instances up to the entity. */
    for (int M = INDEX_INSTANCE; M >= L; M--) {
        sb_printf(&s, "SELECT %s.public_id%s", sq_alias[M], M == INDEX_INSTANCE ? ", i.blob_key" : "");
        sb_chain(&s, L, M);
        sb_printf(&s, " ORDER BY %s.id", sq_alias[M]);
        if ((rc = sq_prepare_sb(db, &s, &st, err)) != 0)
            goto out;
        sqlite3_bind_int64(st, 1, id);
        while ((src = sqlite3_step(st)) == SQLITE_ROW) {
            const char *pid = (const char *)sqlite3_column_text(st, 0);
            if ((rc = sq_log_change(ix, INDEX_CHANGE_DELETED, M, pid ? pid : "", now, err)) != 0)
                goto out;
            const char *key = (const char *)sqlite3_column_text(st, 1);
            if (M == INDEX_INSTANCE && key && (rc = sq_keys_add(out, &cap, key)) != 0) {
                pacs_err_set(err, rc, "index: out of memory");
                goto out;
            }
        }
        if (src != SQLITE_DONE) {
            rc = sq_fail(db, src, err, "delete");
            goto out;
        }
        sqlite3_finalize(st);
        st = NULL;
    }
    /* Rows, children first (foreign keys). */
    for (int M = INDEX_INSTANCE; M > L; M--) {
        sb_printf(&s, "DELETE FROM %s WHERE id IN (SELECT %s.id", sq_table[M], sq_alias[M]);
        sb_chain(&s, L, M);
        sb_puts(&s, ")");
        if ((rc = sq_exec_id(db, &s, id, err)) != 0)
            goto out;
    }
    sb_printf(&s, "DELETE FROM %s WHERE id = ?1", sq_table[L]);
    if ((rc = sq_exec_id(db, &s, id, err)) != 0)
        goto out;

    /* Ancestors left empty go too; the first one with children remains. */
    out->ancestor_level = -1;
    for (int lv = L - 1; lv >= INDEX_PATIENT; lv--) {
        sb_printf(&s, "SELECT public_id, %s, EXISTS (SELECT 1 FROM %s WHERE parent_id = ?1)"
                      " FROM %s WHERE id = ?1",
                  lv > INDEX_PATIENT ? "parent_id" : "0", sq_table[lv + 1], sq_table[lv]);
        if ((rc = sq_prepare_sb(db, &s, &st, err)) != 0)
            goto out;
        sqlite3_bind_int64(st, 1, parent);
        src = sqlite3_step(st);
        if (src != SQLITE_ROW) {
            rc = sq_fail(db, src == SQLITE_DONE ? SQLITE_CORRUPT : src, err, "delete parent");
            goto out;
        }
        const char *pid = (const char *)sqlite3_column_text(st, 0);
        int64_t up = sqlite3_column_int64(st, 1);
        if (sqlite3_column_int(st, 2)) {
            size_t n = pid ? strnlen(pid, INDEX_PUBLIC_ID_LEN) : 0;
            if (n)
                memcpy(out->ancestor_id, pid, n);
            out->ancestor_id[n] = '\0';
            out->ancestor_level = lv;
            break;
        }
        if ((rc = sq_log_change(ix, INDEX_CHANGE_DELETED, lv, pid ? pid : "", now, err)) != 0)
            goto out;
        sqlite3_finalize(st);
        st = NULL;
        sb_printf(&s, "DELETE FROM %s WHERE id = ?1", sq_table[lv]);
        if ((rc = sq_exec_id(db, &s, parent, err)) != 0)
            goto out;
        parent = up;
    }
out:
    sqlite3_finalize(st);
    dynbuf_free(&s.b);
    return rc;
}

static int sq_delete_entity(struct index *base, enum index_level level, const char *id,
                            int64_t now, struct index_deleted *out, struct pacs_err *err)
{
    struct sq_index *ix = (struct sq_index *)base;
    int rc;
    memset(out, 0, sizeof *out);
    out->ancestor_level = -1;
    if ((unsigned)level > INDEX_INSTANCE || !id)
        return pacs_err_set(err, PACS_EINVAL, "index: bad delete");
    pthread_mutex_lock(&ix->wmu);
    if ((rc = sq_txn(ix, W_BEGIN, err)) == 0) {
        rc = sq_delete_locked(ix, (int)level, id, now, out, err);
        if (rc == 0)
            rc = sq_txn(ix, W_COMMIT, err);
        if (rc && !sqlite3_get_autocommit(ix->wdb))
            sq_txn(ix, W_ROLLBACK, NULL);
    }
    pthread_mutex_unlock(&ix->wmu);
    if (rc) {
        index_deleted_free(out);
        out->ancestor_level = -1;
        out->ancestor_id[0] = '\0';
    }
    return rc;
}

static int sq_changes(struct index *base, int64_t since, size_t limit, index_change_cb cb,
                      void *ctx, struct pacs_err *err)
{
    struct sq_index *ix = (struct sq_index *)base;
    struct sq_conn *c = NULL;
    sqlite3_stmt *st = NULL;
    int src, rc;
    if (!cb)
        return pacs_err_set(err, PACS_EINVAL, "index: no callback");
    if ((rc = sq_reader_get(ix, &c, err)) != 0)
        return rc;
    if ((rc = sq_cached(c,
                        "SELECT seq, change_type, level, public_id, time FROM changes"
                        " WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                        &st, err)) != 0)
        goto out;
    sqlite3_bind_int64(st, 1, since);
    sqlite3_bind_int64(st, 2, limit == 0 || limit > (size_t)INT64_MAX ? -1 : (int64_t)limit);
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        struct index_change ch = {
            .seq = sqlite3_column_int64(st, 0),
            .type = (enum index_change_type)sqlite3_column_int(st, 1),
            .level = (enum index_level)sqlite3_column_int(st, 2),
            .public_id = (const char *)sqlite3_column_text(st, 3),
            .time = sqlite3_column_int64(st, 4),
        };
        if (!ch.public_id)
            ch.public_id = "";
        if ((rc = cb(ctx, &ch)) != 0)
            goto out;
    }
    if (src != SQLITE_DONE)
        rc = sq_fail(c->db, src, err, "changes");
out:
    sq_release(st);
    sq_reader_put(ix, c);
    return rc;
}

static int sq_last_change(struct index *base, int64_t *out, struct pacs_err *err)
{
    struct sq_index *ix = (struct sq_index *)base;
    struct sq_conn *c = NULL;
    sqlite3_stmt *st = NULL;
    int src, rc;
    *out = 0;
    if ((rc = sq_reader_get(ix, &c, err)) != 0)
        return rc;
    if ((rc = sq_cached(c, "SELECT coalesce(max(seq), 0) FROM changes", &st, err)) != 0)
        goto out;
    src = sqlite3_step(st);
    if (src == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    else
        rc = sq_fail(c->db, src, err, "last change");
out:
    sq_release(st);
    sq_reader_put(ix, c);
    return rc;
}

const struct index_ops index_sqlite_ops = {
    .name = "sqlite",
    .schema_version = SQ_SCHEMA_VERSION,
    .open = sq_open,
    .close = sq_close,
    .insert_batch = sq_insert_batch,
    .find = sq_find,
    .has_blob = sq_has_blob,
    .stats = sq_stats,
    .delete_entity = sq_delete_entity,
    .changes = sq_changes,
    .last_change = sq_last_change,
};
