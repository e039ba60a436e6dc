/* Unit tests: the SQLite index (store/index_sqlite.c) and the main-tag table
 * (store/index_tags.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dicom/dict.h"
#include "dicom/vr.h"
#include "store/index.h"

static const struct index_ops *ops = &index_sqlite_ops;

/* snprintf that must not truncate (aborts otherwise: also safe in threads);
 * returns the length. */
static size_t fmt(char *buf, size_t cap, const char *f, ...) __attribute__((format(printf, 3, 4)));
static size_t fmt(char *buf, size_t cap, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(buf, cap, f, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) {
        fprintf(stderr, "fmt: \"%s\" does not fit in %zu bytes\n", f, cap);
        abort();
    }
    return (size_t)n;
}


#define T_PATIENT_ID DCM_TAG(0x0010, 0x0020)
#define T_PATIENT_NAME DCM_TAG(0x0010, 0x0010)
#define T_BIRTH_DATE DCM_TAG(0x0010, 0x0030)
#define T_STUDY_UID DCM_TAG(0x0020, 0x000D)
#define T_STUDY_DATE DCM_TAG(0x0008, 0x0020)
#define T_STUDY_TIME DCM_TAG(0x0008, 0x0030)
#define T_ACCESSION DCM_TAG(0x0008, 0x0050)
#define T_STUDY_DESC DCM_TAG(0x0008, 0x1030)
#define T_REFERRING DCM_TAG(0x0008, 0x0090)
#define T_SERIES_UID DCM_TAG(0x0020, 0x000E)
#define T_MODALITY DCM_TAG(0x0008, 0x0060)
#define T_SERIES_DESC DCM_TAG(0x0008, 0x103E)
#define T_SOP_UID DCM_TAG(0x0008, 0x0018)
#define T_SOP_CLASS DCM_TAG(0x0008, 0x0016)
#define T_INSTANCE_NUMBER DCM_TAG(0x0020, 0x0013)
#define T_CONTENT_TIME DCM_TAG(0x0008, 0x0033)

#define CT "1.2.840.10008.5.1.4.1.1.2"
#define MR "1.2.840.10008.5.1.4.1.1.4"
#define EXPLICIT_LE "1.2.840.10008.1.2.1"

static int col(uint32_t tag)
{
    int c = index_tag_find(tag);
    assert_true(c >= 0);
    return c;
}

/* --- fixture ----------------------------------------------------------------- */

struct fixture {
    char dir[64];
    char path[96];
    struct index *ix;
};

static void remove_db(const struct fixture *f)
{
    static const char *const sfx[] = {"", "-wal", "-shm", "-journal"};
    char p[128];
    for (size_t i = 0; i < 4; i++) {
        fmt(p, sizeof p, "%s%s", f->path, sfx[i]);
        unlink(p);
    }
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    struct pacs_err err;
    if (!f)
        return -1;
    memcpy(f->dir, "/tmp/test_index.XXXXXX", sizeof "/tmp/test_index.XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    fmt(f->path, sizeof f->path, "%s/index.db", f->dir);
    if (ops->open(f->path, &f->ix, &err) != 0) {
        fprintf(stderr, "open: %s\n", err.msg);
        remove_db(f);
        rmdir(f->dir);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f->ix)
        ops->close(f->ix);
    remove_db(f);
    rmdir(f->dir);
    free(f);
    return 0;
}

/* --- records ----------------------------------------------------------------- */

/* A record and the strings it points at. */
struct trec {
    struct index_record r;
    char blob[40];
    char meta[128];
};

static void trec_init(struct trec *t, const char *pid, const char *study, const char *series,
                      const char *sop, const char *blob)
{
    memset(t, 0, sizeof *t);
    t->r.values[col(T_PATIENT_ID)] = pid;
    t->r.values[col(T_STUDY_UID)] = study;
    t->r.values[col(T_SERIES_UID)] = series;
    t->r.values[col(T_SOP_UID)] = sop;
    t->r.values[col(T_SOP_CLASS)] = CT;
    t->r.values[col(T_MODALITY)] = "CT";
    t->r.transfer_syntax = EXPLICIT_LE;
    fmt(t->blob, sizeof t->blob, "%s", blob);
    t->r.blob_key = t->blob;
    t->r.size = 1000;
    t->r.ds_offset = 132;
    memset(t->r.sha256, 'a', 64);
    size_t n = fmt(t->meta, sizeof t->meta, "{\"00080018\":{\"vr\":\"UI\",\"Value\":[\"%s\"]}}",
                   sop ? sop : "");
    t->r.metadata_json = t->meta;
    t->r.metadata_len = n;
    t->r.remote_aet = "MODALITY1";
    t->r.received_at = 1700000000;
}

static void set(struct trec *t, uint32_t tag, const char *v) { t->r.values[col(tag)] = v; }

static void insert_one(struct index *ix, struct trec *t, enum index_dup_policy dup,
                       enum index_insert_outcome want)
{
    struct index_insert_result res;
    struct pacs_err err;
    int rc = ops->insert_batch(ix, &t->r, 1, dup, &res, &err);
    if (rc)
        fprintf(stderr, "insert: %s\n", err.msg);
    assert_int_equal(rc, 0);
    if (res.outcome != want)
        fprintf(stderr, "outcome %d: %s\n", res.outcome, res.err.msg);
    assert_int_equal(res.outcome, want);
}

/* --- collecting rows --------------------------------------------------------- */

struct crow {
    int64_t id;
    char val[128];
    bool has_val;
    char parent_val[128]; /* a value of a level above, when asked */
    uint32_t c[6];
    char mods[64], sops[256], meta[256], blob[65], sha[65], ts[65];
    bool has_meta;
    uint64_t size, ds_offset;
};

struct coll {
    int col, parent_col;
    unsigned stop_at;
    size_t n;
    struct crow r[128];
};

static void copy(char *dst, size_t cap, const char *s)
{
    if (!s) {
        dst[0] = '\0';
        return;
    }
    size_t n = strlen(s);
    assert_true(n < cap);
    memcpy(dst, s, n + 1);
}

static int coll_cb(void *ctx, const struct index_row *row)
{
    struct coll *c = ctx;
    assert_true(c->n < 128);
    struct crow *r = &c->r[c->n++];
    memset(r, 0, sizeof *r);
    r->id = row->id;
    if (c->col >= 0) {
        r->has_val = row->values[c->col] != NULL;
        copy(r->val, sizeof r->val, row->values[c->col]);
    }
    if (c->parent_col >= 0)
        copy(r->parent_val, sizeof r->parent_val, row->values[c->parent_col]);
    /* Nothing below the row's level is filled. */
    for (size_t k = 0; k < index_n_main_tags; k++) {
        if (index_main_tags[k].level > row->level)
            assert_null(row->values[k]);
    }
    r->c[0] = row->n_patient_studies;
    r->c[1] = row->n_patient_series;
    r->c[2] = row->n_patient_instances;
    r->c[3] = row->n_study_series;
    r->c[4] = row->n_study_instances;
    r->c[5] = row->n_series_instances;
    copy(r->mods, sizeof r->mods, row->modalities_in_study);
    copy(r->sops, sizeof r->sops, row->sop_classes_in_study);
    r->has_meta = row->metadata_json != NULL;
    if (row->metadata_json) {
        assert_true(row->metadata_len < sizeof r->meta);
        memcpy(r->meta, row->metadata_json, row->metadata_len);
        r->meta[row->metadata_len] = '\0';
    }
    copy(r->blob, sizeof r->blob, row->blob_key);
    copy(r->sha, sizeof r->sha, row->sha256);
    copy(r->ts, sizeof r->ts, row->transfer_syntax);
    r->size = row->size;
    r->ds_offset = row->ds_offset;
    return c->stop_at && c->n == c->stop_at ? 7 : 0;
}

static size_t find_q(struct index *ix, const struct index_query *q, int show_col, struct coll *c)
{
    struct pacs_err err;
    memset(c, 0, sizeof *c);
    c->col = show_col;
    c->parent_col = -1;
    int rc = ops->find(ix, q, coll_cb, c, &err);
    if (rc)
        fprintf(stderr, "find: %s\n", err.msg);
    assert_int_equal(rc, 0);
    return c->n;
}

/* Rows at level matching the conditions; show_col's value is collected. */
static size_t find(struct index *ix, enum index_level level, const struct index_cond *conds,
                   size_t n, int show_col, struct coll *c)
{
    struct index_query q = {.level = level, .conds = conds, .n_conds = n};
    return find_q(ix, &q, show_col, c);
}

static struct index_cond single(uint32_t tag, const char *v)
{
    return (struct index_cond){.col = col(tag), .kind = INDEX_MATCH_SINGLE, .value = v};
}

static struct index_cond wild(uint32_t tag, const char *v)
{
    return (struct index_cond){.col = col(tag), .kind = INDEX_MATCH_WILDCARD, .value = v};
}

static struct index_cond range(uint32_t tag, const char *lo, const char *hi)
{
    return (struct index_cond){.col = col(tag), .kind = INDEX_MATCH_RANGE, .lo = lo, .hi = hi};
}

static size_t count_where(struct index *ix, enum index_level lv, struct index_cond c)
{
    struct coll *k = malloc(sizeof *k);
    assert_non_null(k);
    size_t n = find(ix, lv, &c, 1, -1, k);
    free(k);
    return n;
}

/* --- tests ------------------------------------------------------------------- */

static void test_main_tags(void **state)
{
    (void)state;
    static const uint32_t uid[4] = {T_PATIENT_ID, T_STUDY_UID, T_SERIES_UID, T_SOP_UID};
    assert_true(index_n_main_tags >= 50);
    assert_true(index_n_main_tags <= INDEX_MAX_MAIN_TAGS);
    enum index_level prev = INDEX_PATIENT;
    for (size_t i = 0; i < index_n_main_tags; i++) {
        const struct index_tag *t = &index_main_tags[i];
        /* Grouped by level, the unique key first. */
        assert_true(t->level >= prev);
        if (i == 0 || t->level != prev)
            assert_int_equal(t->tag, uid[t->level]);
        prev = t->level;
        assert_int_equal(t->vr, dcm_dict_vr(t->tag));
        assert_int_equal(index_tag_find(t->tag), (int)i);
        for (const char *p = t->column; *p; p++)
            assert_true((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_');
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(index_main_tags[j].column, t->column);
    }
    assert_int_equal(index_tag_find(DCM_TAG(0x7fe0, 0x0010)), -1);
    assert_int_equal(index_main_tags[col(T_PATIENT_NAME)].vr, DCM_VR_PN);
    assert_string_equal(index_main_tags[col(T_STUDY_UID)].column, "study_instance_uid");
    assert_string_equal(ops->name, "sqlite");
}

static void test_insert_and_find(void **state)
{
    struct fixture *f = *state;
    struct trec t[3];
    struct index_insert_result res[3];
    struct pacs_err err;
    struct coll *c = malloc(sizeof *c);
    assert_non_null(c);

    trec_init(&t[0], "P1", "1.2.1", "1.2.1.1", "1.2.1.1.1", "k1");
    set(&t[0], T_PATIENT_NAME, "Doe^John");
    set(&t[0], T_STUDY_DESC, "Head");
    trec_init(&t[1], "P1", "1.2.1", "1.2.1.1", "1.2.1.1.2", "k2");
    trec_init(&t[2], NULL, "1.2.2", "1.2.2.1", "1.2.2.1.1", "k3");
    assert_int_equal(ops->insert_batch(f->ix, &t[0].r, 1, INDEX_DUP_REJECT, &res[0], &err), 0);
    struct index_record recs[2] = {t[1].r, t[2].r};
    assert_int_equal(ops->insert_batch(f->ix, recs, 2, INDEX_DUP_REJECT, res + 1, &err), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(res[i].outcome, INDEX_INSERTED);
        assert_string_equal(res[i].old_blob_key, "");
    }

    struct index_cond cnd = single(T_SOP_UID, "1.2.1.1.2");
    assert_int_equal(find(f->ix, INDEX_INSTANCE, &cnd, 1, col(T_SOP_UID), c), 1);
    assert_string_equal(c->r[0].val, "1.2.1.1.2");
    assert_string_equal(c->r[0].blob, "k2");
    assert_string_equal(c->r[0].ts, EXPLICIT_LE);
    assert_int_equal(c->r[0].size, 1000);
    assert_int_equal(c->r[0].ds_offset, 132);
    assert_int_equal(strlen(c->r[0].sha), 64);
    assert_false(c->r[0].has_meta); /* not asked */

    /* Values of the levels above come with the row. */
    memset(c, 0, sizeof *c);
    c->col = col(T_PATIENT_NAME);
    c->parent_col = col(T_STUDY_DESC);
    struct index_query q = {.level = INDEX_INSTANCE, .conds = &cnd, .n_conds = 1};
    assert_int_equal(ops->find(f->ix, &q, coll_cb, c, &err), 0);
    assert_int_equal(c->n, 1);
    assert_string_equal(c->r[0].val, "Doe^John");
    assert_string_equal(c->r[0].parent_val, "Head");

    /* No PatientID: the patient whose PatientID is empty. */
    cnd = single(T_PATIENT_ID, "");
    assert_int_equal(find(f->ix, INDEX_STUDY, &cnd, 1, col(T_STUDY_UID), c), 1);
    assert_string_equal(c->r[0].val, "1.2.2");
    assert_int_equal(find(f->ix, INDEX_PATIENT, NULL, 0, col(T_PATIENT_ID), c), 2);
    assert_int_equal(find(f->ix, INDEX_INSTANCE, NULL, 0, -1, c), 3);
    assert_true(c->r[0].id < c->r[1].id && c->r[1].id < c->r[2].id);
    free(c);
}

static void test_dup_policies(void **state)
{
    struct fixture *f = *state;
    struct trec t;
    struct index_insert_result res;
    struct pacs_err err;
    struct coll *c = malloc(sizeof *c);
    struct index_cond cnd = single(T_SOP_UID, "9.9.9");
    bool has;
    assert_non_null(c);

    trec_init(&t, "P1", "9", "9.9", "9.9.9", "first");
    set(&t, T_STUDY_DESC, "original");
    insert_one(f->ix, &t, INDEX_DUP_REJECT, INDEX_INSERTED);

    /* KEEP and REJECT touch nothing, not even the levels above. */
    trec_init(&t, "P1", "9", "9.9", "9.9.9", "second");
    set(&t, T_STUDY_DESC, "changed by a duplicate");
    assert_int_equal(ops->insert_batch(f->ix, &t.r, 1, INDEX_DUP_KEEP, &res, &err), 0);
    assert_int_equal(res.outcome, INDEX_KEPT);
    assert_int_equal(ops->insert_batch(f->ix, &t.r, 1, INDEX_DUP_REJECT, &res, &err), 0);
    assert_int_equal(res.outcome, INDEX_REJECTED);
    assert_int_equal(find(f->ix, INDEX_INSTANCE, &cnd, 1, -1, c), 1);
    assert_string_equal(c->r[0].blob, "first");
    struct index_cond sc = single(T_STUDY_UID, "9");
    assert_int_equal(find(f->ix, INDEX_STUDY, &sc, 1, col(T_STUDY_DESC), c), 1);
    assert_string_equal(c->r[0].val, "original");

    /* REPLACE updates the row in place and names the blob to delete. */
    int64_t id = 0;
    assert_int_equal(find(f->ix, INDEX_INSTANCE, &cnd, 1, -1, c), 1);
    id = c->r[0].id;
    t.r.size = 2222;
    assert_int_equal(ops->insert_batch(f->ix, &t.r, 1, INDEX_DUP_REPLACE, &res, &err), 0);
    assert_int_equal(res.outcome, INDEX_REPLACED);
    assert_string_equal(res.old_blob_key, "first");
    assert_int_equal(find(f->ix, INDEX_INSTANCE, &cnd, 1, -1, c), 1);
    assert_int_equal(c->r[0].id, id);
    assert_string_equal(c->r[0].blob, "second");
    assert_int_equal(c->r[0].size, 2222);
    assert_int_equal(ops->has_blob(f->ix, "first", &has, &err), 0);
    assert_false(has);
    assert_int_equal(ops->has_blob(f->ix, "second", &has, &err), 0);
    assert_true(has);
    assert_int_equal(find(f->ix, INDEX_STUDY, &sc, 1, col(T_STUDY_DESC), c), 1);
    assert_string_equal(c->r[0].val, "changed by a duplicate");

    /* Replacing with the same blob key reports no blob to delete. */
    assert_int_equal(ops->insert_batch(f->ix, &t.r, 1, INDEX_DUP_REPLACE, &res, &err), 0);
    assert_int_equal(res.outcome, INDEX_REPLACED);
    assert_string_equal(res.old_blob_key, "");

    /* A duplicate within one batch follows the policy too. */
    struct trec a, b;
    trec_init(&a, "P1", "9", "9.9", "9.9.10", "k10");
    trec_init(&b, "P1", "9", "9.9", "9.9.10", "k11");
    struct index_record recs[2] = {a.r, b.r};
    struct index_insert_result rs[2];
    assert_int_equal(ops->insert_batch(f->ix, recs, 2, INDEX_DUP_KEEP, rs, &err), 0);
    assert_int_equal(rs[0].outcome, INDEX_INSERTED);
    assert_int_equal(rs[1].outcome, INDEX_KEPT);
    free(c);
}

static void test_failed_record(void **state)
{
    struct fixture *f = *state;
    struct trec t[4];
    struct index_insert_result res[4];
    struct index_stats st;
    struct pacs_err err;

    trec_init(&t[0], "PA", "5", "5.1", "5.1.1", "shared");
    insert_one(f->ix, &t[0], INDEX_DUP_REJECT, INDEX_INSERTED);

    trec_init(&t[0], "PB", "6", "6.1", "6.1.1", "ok1");
    trec_init(&t[1], "PC", "7", "7.1", "7.1.1", "shared"); /* blob key taken */
    trec_init(&t[2], "PD", NULL, "8.1", "8.1.1", "nostudy");
    trec_init(&t[3], "PE", "9", "9.1", "9.1.1", "ok2");
    struct index_record recs[4] = {t[0].r, t[1].r, t[2].r, t[3].r};
    assert_int_equal(ops->insert_batch(f->ix, recs, 4, INDEX_DUP_REJECT, res, &err), 0);
    assert_int_equal(res[0].outcome, INDEX_INSERTED);
    assert_int_equal(res[1].outcome, INDEX_FAILED);
    assert_int_equal(res[1].err.code, PACS_EINVAL);
    assert_true(strlen(res[1].err.msg) > 0);
    assert_int_equal(res[2].outcome, INDEX_FAILED);
    assert_int_equal(res[3].outcome, INDEX_INSERTED);

    /* The failed records left nothing behind, not even their patients. */
    assert_int_equal(ops->stats(f->ix, &st, &err), 0);
    assert_int_equal(st.patients, 3);
    assert_int_equal(st.studies, 3);
    assert_int_equal(st.instances, 3);
    assert_int_equal(count_where(f->ix, INDEX_PATIENT, single(T_PATIENT_ID, "PC")), 0);

    /* An empty batch commits nothing and succeeds. */
    assert_int_equal(ops->insert_batch(f->ix, NULL, 0, INDEX_DUP_REJECT, NULL, &err), 0);
}

/* Patients, studies, series, instances for the matching tests. */
static void load_match_data(struct index *ix)
{
    static const struct {
        const char *pid, *name, *study, *date, *time, *acc, *desc, *series, *mod, *sop,
            *cls, *inum;
    } d[] = {
        {"P1", "Doe^John", "1.1", "20240105", "0930", "A1", "Head [contrast]", "1.1.1", "CT",
         "1.1.1.1", CT, "1"},
        {"P1", "Doe^John", "1.1", "20240105", "0930", "A1", "Head [contrast]", "1.1.2", "MR",
         "1.1.2.1", MR, "2"},
        {"P2", "DOE^JANE", "2.1", "20240210", "1000", "A2", "A[1]", "2.1.1", "CT", "2.1.1.1",
         CT, "1"},
        {"P3", "Smith^A_b%[x]", "3.1", "20240301", "100000", "A3", "A1", "3.1.1", "US",
         "3.1.1.1", CT, "3"},
        {"P3", "Smith^A_b%[x]", "3.2", "20231231", "100100", "A_4", "a1", "3.2.1", "MR",
         "3.2.1.1", MR, "4"},
        {"p3", "Smithers^Axb", "4.1", "20240401", "235959", "A%5", "Chest", "4.1.1", "CT",
         "4.1.1.1", CT, "5"},
    };
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) {
        struct trec t;
        char blob[16];
        fmt(blob, sizeof blob, "m%zu", i);
        trec_init(&t, d[i].pid, d[i].study, d[i].series, d[i].sop, blob);
        set(&t, T_PATIENT_NAME, d[i].name);
        set(&t, T_STUDY_DATE, d[i].date);
        set(&t, T_STUDY_TIME, d[i].time);
        set(&t, T_ACCESSION, d[i].acc);
        set(&t, T_STUDY_DESC, d[i].desc);
        set(&t, T_REFERRING, "Who^Doctor");
        set(&t, T_MODALITY, d[i].mod);
        set(&t, T_SOP_CLASS, d[i].cls);
        set(&t, T_INSTANCE_NUMBER, d[i].inum);
        insert_one(ix, &t, INDEX_DUP_REJECT, INDEX_INSERTED);
    }
}

static void test_match_single(void **state)
{
    struct fixture *f = *state;
    load_match_data(f->ix);
    struct index *ix = f->ix;
    /* PN: case-insensitive; other VRs: exact. */
    assert_int_equal(count_where(ix, INDEX_PATIENT, single(T_PATIENT_NAME, "doe^john")), 1);
    assert_int_equal(count_where(ix, INDEX_PATIENT, single(T_PATIENT_NAME, "DOE^JOHN")), 1);
    assert_int_equal(count_where(ix, INDEX_PATIENT, single(T_PATIENT_NAME, "Doe")), 0);
    assert_int_equal(count_where(ix, INDEX_PATIENT, single(T_PATIENT_ID, "P3")), 1);
    assert_int_equal(count_where(ix, INDEX_PATIENT, single(T_PATIENT_ID, "p3")), 1);
    assert_int_equal(count_where(ix, INDEX_STUDY, single(T_PATIENT_ID, "P3")), 2);
    assert_int_equal(count_where(ix, INDEX_STUDY, single(T_REFERRING, "WHO^doctor")), 5);
    assert_int_equal(count_where(ix, INDEX_STUDY, single(T_STUDY_DESC, "A1")), 1);
    assert_int_equal(count_where(ix, INDEX_STUDY, single(T_ACCESSION, "A_4")), 1);
    assert_int_equal(count_where(ix, INDEX_SERIES, single(T_MODALITY, "MR")), 2);
    assert_int_equal(count_where(ix, INDEX_SERIES, single(T_MODALITY, "mr")), 0);
    assert_int_equal(count_where(ix, INDEX_INSTANCE, single(T_INSTANCE_NUMBER, "1")), 2);
    assert_int_equal(count_where(ix, INDEX_INSTANCE, single(T_PATIENT_NAME, "doe^jane")), 1);

    /* Several conditions on several levels. */
    struct index_cond cs[3] = {single(T_PATIENT_ID, "P1"), single(T_MODALITY, "MR"),
                               single(T_SOP_CLASS, MR)};
    struct coll *c = malloc(sizeof *c);
    assert_non_null(c);
    assert_int_equal(find(ix, INDEX_INSTANCE, cs, 3, col(T_SOP_UID), c), 1);
    assert_string_equal(c->r[0].val, "1.1.2.1");
    assert_int_equal(find(ix, INDEX_SERIES, cs, 2, col(T_SERIES_UID), c), 1);
    assert_string_equal(c->r[0].val, "1.1.2");
    free(c);
}

static void test_match_wildcard(void **state)
{
    struct fixture *f = *state;
    load_match_data(f->ix);
    struct index *ix = f->ix;
    /* PN: LIKE, case-insensitive, with %, _ and [ taken literally. */
    assert_int_equal(count_where(ix, INDEX_PATIENT, wild(T_PATIENT_NAME, "doe*")), 2);
    assert_int_equal(count_where(ix, INDEX_PATIENT, wild(T_PATIENT_NAME, "D?E^J*")), 2);
    assert_int_equal(count_where(ix, INDEX_PATIENT, wild(T_PATIENT_NAME, "*a_b%*")), 1);
    assert_int_equal(count_where(ix, INDEX_PATIENT, wild(T_PATIENT_NAME, "smith*^a?b*")), 2);
    assert_int_equal(count_where(ix, INDEX_PATIENT, wild(T_PATIENT_NAME, "*%[x]")), 1);
    assert_int_equal(count_where(ix, INDEX_PATIENT, wild(T_PATIENT_NAME, "Smith^A_b*")), 1);
    assert_int_equal(count_where(ix, INDEX_PATIENT, wild(T_PATIENT_NAME, "*")), 4);
    /* Other VRs: GLOB, case-sensitive, [ and ] literal. */
    assert_int_equal(count_where(ix, INDEX_STUDY, wild(T_STUDY_DESC, "A[1]")), 1);
    assert_int_equal(count_where(ix, INDEX_STUDY, wild(T_STUDY_DESC, "A?")), 1);
    assert_int_equal(count_where(ix, INDEX_STUDY, wild(T_STUDY_DESC, "A*")), 2);
    assert_int_equal(count_where(ix, INDEX_STUDY, wild(T_STUDY_DESC, "*[contrast]")), 1);
    assert_int_equal(count_where(ix, INDEX_STUDY, wild(T_STUDY_DESC, "head*")), 0);
    assert_int_equal(count_where(ix, INDEX_STUDY, wild(T_STUDY_DESC, "*]*")), 2);
    assert_int_equal(count_where(ix, INDEX_STUDY, wild(T_ACCESSION, "A_*")), 1);
    assert_int_equal(count_where(ix, INDEX_STUDY, wild(T_ACCESSION, "A%?")), 1);
    assert_int_equal(count_where(ix, INDEX_PATIENT, wild(T_PATIENT_ID, "P*")), 3);
    assert_int_equal(count_where(ix, INDEX_SERIES, wild(T_SERIES_UID, "3.*")), 2);
    assert_int_equal(count_where(ix, INDEX_INSTANCE, wild(T_SOP_UID, "1.1.?.1")), 2);
    /* A level above, at a lower query level. */
    assert_int_equal(count_where(ix, INDEX_INSTANCE, wild(T_PATIENT_NAME, "smith*")), 3);
}

static void test_match_range(void **state)
{
    struct fixture *f = *state;
    load_match_data(f->ix);
    struct index *ix = f->ix;
    assert_int_equal(count_where(ix, INDEX_STUDY, range(T_STUDY_DATE, "20240101", "20240229")),
                     2);
    assert_int_equal(count_where(ix, INDEX_STUDY, range(T_STUDY_DATE, "20240210", NULL)), 3);
    assert_int_equal(count_where(ix, INDEX_STUDY, range(T_STUDY_DATE, NULL, "20240105")), 2);
    assert_int_equal(count_where(ix, INDEX_STUDY, range(T_STUDY_DATE, "20240105", "20240105")),
                     1);
    assert_int_equal(count_where(ix, INDEX_STUDY, range(T_STUDY_DATE, "20250101", NULL)), 0);
    /* An upper bound includes the values that extend it: "1000" is the
     * minute 10:00, so 100000 is in and 100100 is not. */
    struct coll *c = malloc(sizeof *c);
    assert_non_null(c);
    struct index_cond cnd = range(T_STUDY_TIME, NULL, "1000");
    assert_int_equal(find(ix, INDEX_STUDY, &cnd, 1, col(T_STUDY_TIME), c), 3);
    assert_string_equal(c->r[0].val, "0930");
    assert_string_equal(c->r[1].val, "1000");
    assert_string_equal(c->r[2].val, "100000");
    assert_int_equal(count_where(ix, INDEX_STUDY, range(T_STUDY_TIME, "1000", "1000")), 2);
    assert_int_equal(count_where(ix, INDEX_STUDY, range(T_STUDY_TIME, "1001", NULL)), 2);
    /* An empty value (the shared patient of instances without PatientID)
     * is in no range. */
    struct trec t;
    trec_init(&t, NULL, "9.1", "9.1.1", "9.1.1.1", "noid");
    insert_one(ix, &t, INDEX_DUP_REJECT, INDEX_INSERTED);
    assert_int_equal(count_where(ix, INDEX_PATIENT, range(T_PATIENT_ID, NULL, "P2")), 2);
    assert_int_equal(count_where(ix, INDEX_PATIENT, range(T_PATIENT_ID, "", "P2")), 3);
    /* At the series and instance levels, on a level above. */
    assert_int_equal(count_where(ix, INDEX_SERIES, range(T_STUDY_DATE, NULL, "20240105")), 3);
    assert_int_equal(count_where(ix, INDEX_INSTANCE, range(T_STUDY_DATE, "20240301", NULL)), 2);
    free(c);
}

static void test_match_list(void **state)
{
    struct fixture *f = *state;
    load_match_data(f->ix);
    struct index *ix = f->ix;
    static const char *const uids[] = {"1.1", "3.2", "none"};
    struct index_cond cnd = {.col = col(T_STUDY_UID), .kind = INDEX_MATCH_LIST, .list = uids,
                             .n_list = 3};
    assert_int_equal(count_where(ix, INDEX_STUDY, cnd), 2);
    assert_int_equal(count_where(ix, INDEX_SERIES, cnd), 3);
    assert_int_equal(count_where(ix, INDEX_INSTANCE, cnd), 3);
    static const char *const sops[] = {"2.1.1.1", "4.1.1.1"};
    cnd = (struct index_cond){.col = col(T_SOP_UID), .kind = INDEX_MATCH_LIST, .list = sops,
                              .n_list = 2};
    assert_int_equal(count_where(ix, INDEX_INSTANCE, cnd), 2);
    static const char *const mods[] = {"US", "MR"};
    cnd = (struct index_cond){.col = col(T_MODALITY), .kind = INDEX_MATCH_LIST, .list = mods,
                              .n_list = 2};
    assert_int_equal(count_where(ix, INDEX_SERIES, cnd), 3);
    static const char *const pids[] = {"P1"};
    cnd = (struct index_cond){.col = col(T_PATIENT_ID), .kind = INDEX_MATCH_LIST, .list = pids,
                              .n_list = 1};
    assert_int_equal(count_where(ix, INDEX_PATIENT, cnd), 1);
}

static void test_bad_queries(void **state)
{
    struct fixture *f = *state;
    struct pacs_err err;
    struct coll *c = malloc(sizeof *c);
    assert_non_null(c);
    /* A condition below the query level. */
    struct index_cond cnd = single(T_MODALITY, "CT");
    struct index_query q = {.level = INDEX_STUDY, .conds = &cnd, .n_conds = 1};
    assert_int_equal(ops->find(f->ix, &q, coll_cb, c, &err), PACS_EINVAL);
    cnd.col = 1000;
    q.level = INDEX_INSTANCE;
    assert_int_equal(ops->find(f->ix, &q, coll_cb, c, &err), PACS_EINVAL);
    cnd = (struct index_cond){.col = col(T_SOP_UID), .kind = INDEX_MATCH_LIST};
    assert_int_equal(ops->find(f->ix, &q, coll_cb, c, &err), PACS_EINVAL);
    cnd = (struct index_cond){.col = col(T_SOP_UID), .kind = INDEX_MATCH_SINGLE};
    assert_int_equal(ops->find(f->ix, &q, coll_cb, c, &err), PACS_EINVAL);
    /* Values are bound, never interpolated. */
    load_match_data(f->ix);
    assert_int_equal(count_where(f->ix, INDEX_PATIENT, single(T_PATIENT_ID, "x' OR '1'='1")), 0);
    assert_int_equal(count_where(f->ix, INDEX_PATIENT, wild(T_PATIENT_NAME, "x' OR 1=1 --")), 0);
    free(c);
}

static void test_limit_offset_since(void **state)
{
    struct fixture *f = *state;
    struct pacs_err err;
    struct coll *c = malloc(sizeof *c);
    assert_non_null(c);
    for (int i = 0; i < 10; i++) {
        struct trec t;
        char study[16], series[16], sop[16], blob[16];
        fmt(study, sizeof study, "10.%d", i);
        fmt(series, sizeof series, "10.%d.1", i);
        fmt(sop, sizeof sop, "10.%d.1.1", i);
        fmt(blob, sizeof blob, "l%d", i);
        trec_init(&t, "PL", study, series, sop, blob);
        insert_one(f->ix, &t, INDEX_DUP_REJECT, INDEX_INSERTED);
    }
    struct index_query q = {.level = INDEX_STUDY};
    assert_int_equal(find_q(f->ix, &q, col(T_STUDY_UID), c), 10);
    int64_t ids[10];
    for (int i = 0; i < 10; i++) {
        ids[i] = c->r[i].id;
        if (i)
            assert_true(ids[i] > ids[i - 1]);
    }
    q.limit = 3;
    assert_int_equal(find_q(f->ix, &q, col(T_STUDY_UID), c), 3);
    assert_string_equal(c->r[0].val, "10.0");
    assert_string_equal(c->r[2].val, "10.2");
    q.offset = 3;
    assert_int_equal(find_q(f->ix, &q, col(T_STUDY_UID), c), 3);
    assert_string_equal(c->r[0].val, "10.3");
    q.offset = 9;
    assert_int_equal(find_q(f->ix, &q, col(T_STUDY_UID), c), 1);
    q.offset = 10;
    assert_int_equal(find_q(f->ix, &q, col(T_STUDY_UID), c), 0);
    q = (struct index_query){.level = INDEX_STUDY, .since_id = ids[4]};
    assert_int_equal(find_q(f->ix, &q, col(T_STUDY_UID), c), 5);
    assert_int_equal(c->r[0].id, ids[5]);
    q.limit = 2;
    q.offset = 1;
    assert_int_equal(find_q(f->ix, &q, col(T_STUDY_UID), c), 2);
    assert_int_equal(c->r[0].id, ids[6]);
    /* A non-zero callback result stops the query and is returned. */
    memset(c, 0, sizeof *c);
    c->col = c->parent_col = -1;
    c->stop_at = 4;
    q = (struct index_query){.level = INDEX_INSTANCE, .want_counts = true, .want_metadata = true};
    assert_int_equal(ops->find(f->ix, &q, coll_cb, c, &err), 7);
    assert_int_equal(c->n, 4);
    free(c);
}

/* Patient A: study S1 (series CT: 3 instances of CT class, series MR: 2 of
 * MR class), study S2 (series CT: 1 instance); patient B: one instance. */
static void load_count_data(struct index *ix)
{
    static const struct {
        const char *pid, *study, *series, *mod, *cls;
    } d[] = {
        {"A", "S1", "S1.1", "CT", CT}, {"A", "S1", "S1.1", "CT", CT}, {"A", "S1", "S1.2", "MR", MR},
        {"A", "S1", "S1.1", "CT", CT}, {"A", "S1", "S1.2", "MR", MR}, {"A", "S2", "S2.1", "CT", CT},
        {"B", "S3", "S3.1", "OT", NULL},
    };
    struct trec t[7];
    struct index_record recs[7];
    struct index_insert_result res[7];
    struct pacs_err err;
    char sops[7][16], blobs[7][16], meta[7][32];
    for (int i = 0; i < 7; i++) {
        fmt(sops[i], sizeof sops[i], "%s.%d", d[i].series, i);
        fmt(blobs[i], sizeof blobs[i], "c%d", i);
        trec_init(&t[i], d[i].pid, d[i].study, d[i].series, sops[i], blobs[i]);
        set(&t[i], T_MODALITY, d[i].mod);
        set(&t[i], T_SOP_CLASS, d[i].cls);
        fmt(meta[i], sizeof meta[i], "{\"n\":%d}", i);
        t[i].r.metadata_json = meta[i];
        t[i].r.metadata_len = strlen(meta[i]);
        recs[i] = t[i].r;
    }
    assert_int_equal(ops->insert_batch(ix, recs, 7, INDEX_DUP_REJECT, res, &err), 0);
    for (int i = 0; i < 7; i++)
        assert_int_equal(res[i].outcome, INDEX_INSERTED);
}

static void test_counts(void **state)
{
    struct fixture *f = *state;
    struct coll *c = malloc(sizeof *c);
    assert_non_null(c);
    load_count_data(f->ix);
    struct index_query q = {.level = INDEX_PATIENT, .want_counts = true};

    assert_int_equal(find_q(f->ix, &q, col(T_PATIENT_ID), c), 2);
    assert_string_equal(c->r[0].val, "A");
    uint32_t pa[6] = {2, 3, 6, 0, 0, 0};
    assert_memory_equal(c->r[0].c, pa, sizeof pa);
    uint32_t pb[6] = {1, 1, 1, 0, 0, 0};
    assert_memory_equal(c->r[1].c, pb, sizeof pb);

    q.level = INDEX_STUDY;
    assert_int_equal(find_q(f->ix, &q, col(T_STUDY_UID), c), 3);
    uint32_t s1[6] = {2, 3, 6, 2, 5, 0}, s2[6] = {2, 3, 6, 1, 1, 0}, s3[6] = {1, 1, 1, 1, 1, 0};
    assert_memory_equal(c->r[0].c, s1, sizeof s1);
    assert_string_equal(c->r[0].mods, "CT\\MR");
    assert_string_equal(c->r[0].sops, CT "\\" MR);
    assert_memory_equal(c->r[1].c, s2, sizeof s2);
    assert_string_equal(c->r[1].mods, "CT");
    assert_string_equal(c->r[1].sops, CT);
    assert_memory_equal(c->r[2].c, s3, sizeof s3);
    assert_string_equal(c->r[2].mods, "OT");
    assert_string_equal(c->r[2].sops, ""); /* no SOP class recorded */

    q.level = INDEX_SERIES;
    assert_int_equal(find_q(f->ix, &q, col(T_SERIES_UID), c), 4);
    assert_string_equal(c->r[0].val, "S1.1");
    uint32_t se[6] = {2, 3, 6, 2, 5, 3};
    assert_memory_equal(c->r[0].c, se, sizeof se);
    assert_string_equal(c->r[1].val, "S1.2");
    assert_int_equal(c->r[1].c[5], 2);
    assert_string_equal(c->r[0].mods, "CT\\MR");

    q.level = INDEX_INSTANCE;
    assert_int_equal(find_q(f->ix, &q, col(T_SOP_UID), c), 7);
    for (int i = 0; i < 5; i++) {
        uint32_t want = strncmp(c->r[i].val, "S1.1", 4) == 0 ? 3 : 2;
        assert_int_equal(c->r[i].c[5], want);
        assert_int_equal(c->r[i].c[4], 5);
        assert_int_equal(c->r[i].c[2], 6);
    }

    /* Counts only when asked. */
    q = (struct index_query){.level = INDEX_STUDY};
    assert_int_equal(find_q(f->ix, &q, -1, c), 3);
    assert_int_equal(c->r[0].c[4], 0);
    assert_string_equal(c->r[0].mods, "");

    /* A query on one patient with counts: the C-FIND benchmark's shape. */
    struct index_cond cnd = single(T_PATIENT_ID, "A");
    q = (struct index_query){.level = INDEX_STUDY, .conds = &cnd, .n_conds = 1,
                             .want_counts = true};
    assert_int_equal(find_q(f->ix, &q, col(T_STUDY_UID), c), 2);
    assert_memory_equal(c->r[1].c, s2, sizeof s2);
    free(c);
}

static void test_metadata(void **state)
{
    struct fixture *f = *state;
    struct coll *c = malloc(sizeof *c);
    assert_non_null(c);
    load_count_data(f->ix);
    struct index_query q = {.level = INDEX_INSTANCE, .want_metadata = true};
    assert_int_equal(find_q(f->ix, &q, -1, c), 7);
    for (int i = 0; i < 7; i++) {
        char want[16];
        fmt(want, sizeof want, "{\"n\":%d}", i);
        assert_string_equal(c->r[i].meta, want);
    }
    /* Above the instance level: the entity's instance with the lowest id. */
    q.level = INDEX_SERIES;
    assert_int_equal(find_q(f->ix, &q, -1, c), 4);
    assert_string_equal(c->r[0].meta, "{\"n\":0}");
    assert_string_equal(c->r[1].meta, "{\"n\":2}");
    assert_string_equal(c->r[2].meta, "{\"n\":5}");
    q.level = INDEX_STUDY;
    assert_int_equal(find_q(f->ix, &q, -1, c), 3);
    assert_string_equal(c->r[0].meta, "{\"n\":0}");
    assert_string_equal(c->r[1].meta, "{\"n\":5}");
    assert_string_equal(c->r[2].meta, "{\"n\":6}");
    q.level = INDEX_PATIENT;
    assert_int_equal(find_q(f->ix, &q, -1, c), 2);
    assert_string_equal(c->r[0].meta, "{\"n\":0}");
    assert_string_equal(c->r[1].meta, "{\"n\":6}");
    q.want_metadata = false;
    assert_int_equal(find_q(f->ix, &q, -1, c), 2);
    assert_false(c->r[0].has_meta);
    free(c);
}

static void test_has_blob_and_stats(void **state)
{
    struct fixture *f = *state;
    struct index_stats st;
    struct pacs_err err;
    bool has = true;
    assert_int_equal(ops->stats(f->ix, &st, &err), 0);
    assert_int_equal(st.patients + st.studies + st.series + st.instances + st.bytes, 0);
    assert_int_equal(ops->has_blob(f->ix, "c3", &has, &err), 0);
    assert_false(has);
    load_count_data(f->ix);
    assert_int_equal(ops->has_blob(f->ix, "c3", &has, &err), 0);
    assert_true(has);
    assert_int_equal(ops->has_blob(f->ix, "c33", &has, &err), 0);
    assert_false(has);
    assert_int_equal(ops->stats(f->ix, &st, &err), 0);
    assert_int_equal(st.patients, 2);
    assert_int_equal(st.studies, 3);
    assert_int_equal(st.series, 4);
    assert_int_equal(st.instances, 7);
    assert_int_equal(st.bytes, 7000);
}

static void test_updates_and_moves(void **state)
{
    struct fixture *f = *state;
    struct coll *c = malloc(sizeof *c);
    struct index_stats st;
    struct pacs_err err;
    struct trec t;
    assert_non_null(c);

    trec_init(&t, "X", "20", "20.1", "20.1.1", "u1");
    set(&t, T_PATIENT_NAME, "Doe^John");
    set(&t, T_STUDY_DESC, "first");
    insert_one(f->ix, &t, INDEX_DUP_REJECT, INDEX_INSERTED);
    /* The latest instance's values win, case included; absent ones are kept. */
    trec_init(&t, "X", "20", "20.1", "20.1.2", "u2");
    set(&t, T_PATIENT_NAME, "DOE^JOHN");
    set(&t, T_BIRTH_DATE, "19700101");
    insert_one(f->ix, &t, INDEX_DUP_REJECT, INDEX_INSERTED);
    struct index_cond cnd = single(T_PATIENT_ID, "X");
    assert_int_equal(find(f->ix, INDEX_STUDY, &cnd, 1, col(T_PATIENT_NAME), c), 1);
    assert_string_equal(c->r[0].val, "DOE^JOHN");
    assert_int_equal(find(f->ix, INDEX_STUDY, &cnd, 1, col(T_STUDY_DESC), c), 1);
    assert_string_equal(c->r[0].val, "first");
    assert_int_equal(find(f->ix, INDEX_PATIENT, &cnd, 1, col(T_BIRTH_DATE), c), 1);
    assert_string_equal(c->r[0].val, "19700101");

    /* The study moves to another patient (PatientID corrected and re-sent):
     * the patient left without studies goes. */
    trec_init(&t, "Y", "20", "20.1", "20.1.1", "u3");
    insert_one(f->ix, &t, INDEX_DUP_REPLACE, INDEX_REPLACED);
    trec_init(&t, "Y", "20", "20.1", "20.1.2", "u4");
    insert_one(f->ix, &t, INDEX_DUP_REPLACE, INDEX_REPLACED);
    assert_int_equal(ops->stats(f->ix, &st, &err), 0);
    assert_int_equal(st.patients, 1);
    assert_int_equal(st.studies, 1);
    assert_int_equal(count_where(f->ix, INDEX_STUDY, single(T_PATIENT_ID, "Y")), 1);

    /* A replaced instance moving to another series prunes the old one. */
    trec_init(&t, "Y", "20", "20.2", "20.1.1", "u5");
    insert_one(f->ix, &t, INDEX_DUP_REPLACE, INDEX_REPLACED);
    assert_int_equal(ops->stats(f->ix, &st, &err), 0);
    assert_int_equal(st.series, 2);
    trec_init(&t, "Y", "20", "20.2", "20.1.2", "u6");
    insert_one(f->ix, &t, INDEX_DUP_REPLACE, INDEX_REPLACED);
    assert_int_equal(ops->stats(f->ix, &st, &err), 0);
    assert_int_equal(st.series, 1);
    assert_int_equal(st.instances, 2);
    free(c);
}

static void test_reopen_and_version(void **state)
{
    struct fixture *f = *state;
    struct index_stats st;
    struct pacs_err err;
    sqlite3 *db;
    load_count_data(f->ix);
    ops->close(f->ix);
    f->ix = NULL;

    assert_int_equal(ops->open(f->path, &f->ix, &err), 0);
    assert_int_equal(ops->stats(f->ix, &st, &err), 0);
    assert_int_equal(st.instances, 7);
    assert_int_equal(count_where(f->ix, INDEX_STUDY, single(T_STUDY_UID, "S2")), 1);
    ops->close(f->ix);
    f->ix = NULL;

    /* The schema version is stored in the database. */
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(s, 0), 2);
    sqlite3_finalize(s);
    /* A database from a newer pacsd is refused, and left as it was. */
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 3", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(ops->open(f->path, &f->ix, &err), PACS_EUNSUPPORTED);
    assert_null(f->ix);
    assert_int_equal(err.code, PACS_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "newer"));

    /* A column for a main tag the database lacks is added at open. */
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "PRAGMA user_version = 2;"
                                  "ALTER TABLE studies DROP COLUMN study_description",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(ops->open(f->path, &f->ix, &err), 0);
    assert_int_equal(count_where(f->ix, INDEX_STUDY, single(T_STUDY_UID, "S2")), 1);
    struct trec t;
    trec_init(&t, "A", "S2", "S2.1", "S2.1.new", "newkey");
    set(&t, T_STUDY_DESC, "back");
    insert_one(f->ix, &t, INDEX_DUP_REJECT, INDEX_INSERTED);
    assert_int_equal(count_where(f->ix, INDEX_STUDY, single(T_STUDY_DESC, "back")), 1);

    /* Not a database at all. */
    struct index *bad = NULL;
    assert_int_equal(ops->open("/proc/version", &bad, &err) < 0, 1);
    assert_null(bad);
}

/* --- public ids, change log, delete ------------------------------------------- */

/* Orthanc 1.10's ids for pydicom's CT_small.dcm (read from a real Orthanc:
 * tests/integration/test_rest.py compares them live). */
static void test_public_id_values(void **state)
{
    (void)state;
    const char *uids[4] = {"1CT1", "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322",
                           "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322",
                           "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"};
    static const char *const want[4] = {
        "fa558bce-587a86d3-ad0da9b3-9d043d9d-4f5c5718",
        "8a8cf898-ca27c490-d0c7058c-929d0581-2bbf104d",
        "93034833-163e42c3-bc9a428b-194620cf-2c5799e5",
        "f689ddd2-662f8fe1-8b18180d-ec2a2cee-937917af",
    };
    char id[INDEX_PUBLIC_ID_LEN + 1];
    for (int lv = 0; lv < 4; lv++) {
        assert_int_equal(index_public_id((enum index_level)lv, uids, id), 0);
        assert_string_equal(id, want[lv]);
    }
    assert_int_equal(index_public_id((enum index_level)4, uids, id), PACS_EINVAL);
}

struct pubrow {
    size_t n;
    char ids[16][4][INDEX_PUBLIC_ID_LEN + 1];
    int64_t last_update[16];
};

static int pub_cb(void *ctx, const struct index_row *row)
{
    struct pubrow *p = ctx;
    assert_true(p->n < 16);
    for (int lv = 0; lv <= (int)row->level; lv++)
        copy(p->ids[p->n][lv], sizeof p->ids[p->n][lv], row->public_ids[lv]);
    p->last_update[p->n] = row->last_update;
    p->n++;
    return 0;
}

static size_t find_pub(struct index *ix, enum index_level lv, const char *id, const char *parent,
                       struct pubrow *p)
{
    struct pacs_err err;
    struct index_query q = {.level = lv, .public_id = id, .parent_public_id = parent,
                            .want_last_update = true};
    memset(p, 0, sizeof *p);
    assert_int_equal(ops->find(ix, &q, pub_cb, p, &err), 0);
    return p->n;
}

struct chlog {
    size_t n;
    int64_t seq[64];
    int type[64], level[64];
    char id[64][INDEX_PUBLIC_ID_LEN + 1];
};

static int ch_cb(void *ctx, const struct index_change *c)
{
    struct chlog *l = ctx;
    assert_true(l->n < 64);
    l->seq[l->n] = c->seq;
    l->type[l->n] = (int)c->type;
    l->level[l->n] = (int)c->level;
    copy(l->id[l->n], sizeof l->id[l->n], c->public_id);
    l->n++;
    return 0;
}

static size_t changes(struct index *ix, int64_t since, size_t limit, struct chlog *l)
{
    struct pacs_err err;
    memset(l, 0, sizeof *l);
    assert_int_equal(ops->changes(ix, since, limit, ch_cb, l, &err), 0);
    return l->n;
}

static void test_public_ids_and_changes(void **state)
{
    struct fixture *f = *state;
    struct pacs_err err;
    struct trec t;
    struct pubrow p;
    struct chlog l;
    char want[4][INDEX_PUBLIC_ID_LEN + 1];
    const char *uids[4] = {"P1", "S1", "S1.1", "S1.1.1"};
    for (int lv = 0; lv < 4; lv++)
        assert_int_equal(index_public_id((enum index_level)lv, uids, want[lv]), 0);

    trec_init(&t, "P1", "S1", "S1.1", "S1.1.1", "k1");
    insert_one(f->ix, &t, INDEX_DUP_REPLACE, INDEX_INSERTED);
    /* Every level's row holds its id and its parents'. */
    for (int lv = 0; lv < 4; lv++) {
        assert_int_equal(find_pub(f->ix, (enum index_level)lv, want[lv], NULL, &p), 1);
        for (int k = 0; k <= lv; k++)
            assert_string_equal(p.ids[0][k], want[k]);
        assert_int_equal(p.last_update[0], 1700000000);
    }
    assert_int_equal(find_pub(f->ix, INDEX_STUDY, "nope", NULL, &p), 0);
    /* Children by the parent's id. */
    trec_init(&t, "P1", "S1", "S1.1", "S1.1.2", "k2");
    t.r.received_at = 1700000100;
    insert_one(f->ix, &t, INDEX_DUP_REPLACE, INDEX_INSERTED);
    assert_int_equal(find_pub(f->ix, INDEX_INSTANCE, NULL, want[INDEX_SERIES], &p), 2);
    assert_int_equal(find_pub(f->ix, INDEX_SERIES, NULL, want[INDEX_STUDY], &p), 1);
    assert_int_equal(p.last_update[0], 1700000100);
    assert_int_equal(find_pub(f->ix, INDEX_STUDY, NULL, want[INDEX_INSTANCE], &p), 0);
    struct index_query bad = {.level = INDEX_PATIENT, .parent_public_id = "x"};
    assert_int_equal(ops->find(f->ix, &bad, pub_cb, &p, &err), PACS_EINVAL);

    /* The log: NewInstance, NewSeries, NewStudy, NewPatient; then only
     * NewInstance; a replace is a NewInstance too; a kept duplicate is
     * nothing. */
    assert_int_equal(changes(f->ix, 0, 0, &l), 5);
    int types[5] = {INDEX_CHANGE_NEW_INSTANCE, INDEX_CHANGE_NEW_SERIES, INDEX_CHANGE_NEW_STUDY,
                    INDEX_CHANGE_NEW_PATIENT, INDEX_CHANGE_NEW_INSTANCE};
    for (int k = 0; k < 5; k++) {
        assert_int_equal(l.type[k], types[k]);
        if (k)
            assert_true(l.seq[k] > l.seq[k - 1]);
    }
    assert_string_equal(l.id[0], want[INDEX_INSTANCE]);
    assert_int_equal(l.level[3], INDEX_PATIENT);
    assert_string_equal(l.id[3], want[INDEX_PATIENT]);
    trec_init(&t, "P1", "S1", "S1.1", "S1.1.1", "k3");
    insert_one(f->ix, &t, INDEX_DUP_KEEP, INDEX_KEPT);
    insert_one(f->ix, &t, INDEX_DUP_REPLACE, INDEX_REPLACED);
    assert_int_equal(changes(f->ix, 0, 0, &l), 6);
    assert_int_equal(l.type[5], INDEX_CHANGE_NEW_INSTANCE);
    assert_int_equal(changes(f->ix, l.seq[3], 0, &l), 2);
    assert_int_equal(changes(f->ix, 0, 3, &l), 3);
    int64_t last;
    assert_int_equal(ops->last_change(f->ix, &last, &err), 0);
    assert_int_equal(changes(f->ix, last - 1, 0, &l), 1);
    assert_int_equal(l.seq[0], last);
}

static void test_delete_levels(void **state)
{
    struct fixture *f = *state;
    struct pacs_err err;
    struct index_deleted d;
    struct index_stats st;
    struct trec t;
    struct pubrow p;
    struct chlog l;
    char sop[8][16], key[8][16];
    /* P1: study S1 (series A: 2 instances, series B: 1), study S2 (1). */
    const char *study[4] = {"S1", "S1", "S1", "S2"};
    const char *series[4] = {"S1.A", "S1.A", "S1.B", "S2.A"};
    for (int k = 0; k < 4; k++) {
        fmt(sop[k], sizeof sop[k], "I%d", k);
        fmt(key[k], sizeof key[k], "key%d", k);
        trec_init(&t, "P1", study[k], series[k], sop[k], key[k]);
        insert_one(f->ix, &t, INDEX_DUP_REPLACE, INDEX_INSERTED);
    }
    char id[INDEX_PUBLIC_ID_LEN + 1];
    const char *u[4] = {"P1", "S1", "S1.A", "I0"};
    int64_t last0;
    assert_int_equal(ops->last_change(f->ix, &last0, &err), 0);

    /* An instance with a sibling: the series remains. */
    assert_int_equal(index_public_id(INDEX_INSTANCE, u, id), 0);
    assert_int_equal(ops->delete_entity(f->ix, INDEX_INSTANCE, id, 1800000000, &d, &err), 0);
    assert_int_equal(d.n_blob_keys, 1);
    assert_string_equal(d.blob_keys[0], "key0");
    assert_int_equal(d.ancestor_level, INDEX_SERIES);
    char want[INDEX_PUBLIC_ID_LEN + 1];
    assert_int_equal(index_public_id(INDEX_SERIES, u, want), 0);
    assert_string_equal(d.ancestor_id, want);
    index_deleted_free(&d);
    assert_int_equal(changes(f->ix, last0, 0, &l), 1);
    assert_int_equal(l.type[0], INDEX_CHANGE_DELETED);
    assert_string_equal(l.id[0], id);
    /* Again: not found, nothing changed. */
    assert_int_equal(ops->delete_entity(f->ix, INDEX_INSTANCE, id, 1800000000, &d, &err),
                     PACS_ENOTFOUND);
    assert_null(d.blob_keys);

    /* The last instance of series A: the series goes, the study remains. */
    u[3] = "I1";
    assert_int_equal(index_public_id(INDEX_INSTANCE, u, id), 0);
    assert_int_equal(ops->delete_entity(f->ix, INDEX_INSTANCE, id, 1800000000, &d, &err), 0);
    assert_int_equal(d.ancestor_level, INDEX_STUDY);
    index_deleted_free(&d);
    assert_int_equal(index_public_id(INDEX_SERIES, u, id), 0);
    assert_int_equal(find_pub(f->ix, INDEX_SERIES, id, NULL, &p), 0);

    /* A study with a series and an instance: both below go, with it. */
    assert_int_equal(index_public_id(INDEX_STUDY, u, id), 0);
    assert_int_equal(ops->last_change(f->ix, &last0, &err), 0);
    assert_int_equal(ops->delete_entity(f->ix, INDEX_STUDY, id, 1800000000, &d, &err), 0);
    assert_int_equal(d.n_blob_keys, 1);
    assert_string_equal(d.blob_keys[0], "key2");
    assert_int_equal(d.ancestor_level, INDEX_PATIENT);
    index_deleted_free(&d);
    assert_int_equal(changes(f->ix, last0, 0, &l), 3);
    assert_int_equal(l.level[0], INDEX_INSTANCE);
    assert_int_equal(l.level[1], INDEX_SERIES);
    assert_int_equal(l.level[2], INDEX_STUDY);

    /* The patient: everything; no ancestor remains. */
    assert_int_equal(index_public_id(INDEX_PATIENT, u, id), 0);
    assert_int_equal(ops->delete_entity(f->ix, INDEX_PATIENT, id, 1800000000, &d, &err), 0);
    assert_int_equal(d.n_blob_keys, 1);
    assert_string_equal(d.blob_keys[0], "key3");
    assert_int_equal(d.ancestor_level, -1);
    index_deleted_free(&d);
    assert_int_equal(ops->stats(f->ix, &st, &err), 0);
    assert_int_equal(st.patients + st.studies + st.series + st.instances, 0);

    /* The series as the top of a delete that empties the patient too. */
    trec_init(&t, "P2", "T1", "T1.A", "J0", "kj0");
    insert_one(f->ix, &t, INDEX_DUP_REPLACE, INDEX_INSERTED);
    const char *v[4] = {"P2", "T1", "T1.A", NULL};
    assert_int_equal(index_public_id(INDEX_SERIES, v, id), 0);
    assert_int_equal(ops->last_change(f->ix, &last0, &err), 0);
    assert_int_equal(ops->delete_entity(f->ix, INDEX_SERIES, id, 1800000000, &d, &err), 0);
    assert_int_equal(d.ancestor_level, -1);
    index_deleted_free(&d);
    assert_int_equal(changes(f->ix, last0, 0, &l), 4);
    assert_int_equal(ops->stats(f->ix, &st, &err), 0);
    assert_int_equal(st.patients, 0);
}

/* A version-1 database (no public ids, no change log, no Rows column) is
 * migrated: ids computed for its rows, Rows filled from the metadata. */
static void test_migrate_from_v1(void **state)
{
    struct fixture *f = *state;
    struct trec t;
    struct pubrow p;
    struct chlog l;
    sqlite3 *db;
    trec_init(&t, "P1", "S1", "S1.1", "S1.1.1", "k1");
    fmt(t.meta, sizeof t.meta, "{\"00280010\":{\"vr\":\"US\",\"Value\":[512]}}");
    t.r.metadata_len = strlen(t.meta);
    insert_one(f->ix, &t, INDEX_DUP_REPLACE, INDEX_INSERTED);
    ops->close(f->ix);
    f->ix = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    const char *down =
        "DROP INDEX patients_public_id; DROP INDEX studies_public_id;"
        " DROP INDEX series_public_id; DROP INDEX instances_public_id;"
        " ALTER TABLE patients DROP COLUMN public_id; ALTER TABLE studies DROP COLUMN public_id;"
        " ALTER TABLE series DROP COLUMN public_id; ALTER TABLE instances DROP COLUMN public_id;"
        " ALTER TABLE instances DROP COLUMN rows; DROP TABLE changes;"
        " PRAGMA user_version = 1";
    char *msg = NULL;
    int src = sqlite3_exec(db, down, NULL, NULL, &msg);
    if (src != SQLITE_OK)
        fprintf(stderr, "downgrade: %s\n", msg);
    sqlite3_free(msg);
    sqlite3_close(db);
    assert_int_equal(src, SQLITE_OK);

    struct pacs_err err;
    assert_int_equal(ops->open(f->path, &f->ix, &err), 0);
    const char *uids[4] = {"P1", "S1", "S1.1", "S1.1.1"};
    char id[INDEX_PUBLIC_ID_LEN + 1];
    assert_int_equal(index_public_id(INDEX_INSTANCE, uids, id), 0);
    assert_int_equal(find_pub(f->ix, INDEX_INSTANCE, id, NULL, &p), 1);
    assert_int_equal(index_public_id(INDEX_STUDY, uids, id), 0);
    assert_int_equal(find_pub(f->ix, INDEX_STUDY, id, NULL, &p), 1);
    struct coll *c = calloc(1, sizeof *c);
    assert_non_null(c);
    assert_int_equal(find(f->ix, INDEX_INSTANCE, NULL, 0, col(DCM_TAG(0x0028, 0x0010)), c), 1);
    assert_string_equal(c->r[0].val, "512");
    free(c);
    /* The log starts empty and works. */
    assert_int_equal(changes(f->ix, 0, 0, &l), 0);
    trec_init(&t, "P1", "S1", "S1.1", "S1.1.2", "k2");
    insert_one(f->ix, &t, INDEX_DUP_REPLACE, INDEX_INSERTED);
    assert_int_equal(changes(f->ix, 0, 0, &l), 1);
}

/* --- concurrency ------------------------------------------------------------- */

#define W_BATCHES 40
#define W_PER_BATCH 25

struct shared {
    struct index *ix;
    atomic_int done;
    atomic_int failures;
    atomic_int queries;
};

static void *writer_main(void *arg)
{
    struct shared *sh = arg;
    struct pacs_err err;
    for (int b = 0; b < W_BATCHES; b++) {
        struct trec t[W_PER_BATCH];
        struct index_record recs[W_PER_BATCH];
        struct index_insert_result res[W_PER_BATCH];
        char s[W_PER_BATCH][4][32];
        for (int i = 0; i < W_PER_BATCH; i++) {
            int n = b * W_PER_BATCH + i;
            fmt(s[i][0], 32, "PT%d", n % 10);
            fmt(s[i][1], 32, "50.%d", n % 30);
            fmt(s[i][2], 32, "50.%d.%d", n % 30, n / 30 % 3);
            fmt(s[i][3], 32, "50.%d.%d.%d", n % 30, n / 30 % 3, n);
            char blob[32];
            fmt(blob, sizeof blob, "w%d", n);
            trec_init(&t[i], s[i][0], s[i][1], s[i][2], s[i][3], blob);
            recs[i] = t[i].r;
        }
        if (ops->insert_batch(sh->ix, recs, W_PER_BATCH, INDEX_DUP_REJECT, res, &err) != 0)
            atomic_fetch_add(&sh->failures, 1);
        for (int i = 0; i < W_PER_BATCH; i++) {
            if (res[i].outcome != INDEX_INSERTED)
                atomic_fetch_add(&sh->failures, 1);
        }
    }
    atomic_store(&sh->done, 1);
    return NULL;
}

struct rcheck {
    int bad;
    size_t rows;
};

static int check_cb(void *ctx, const struct index_row *row)
{
    struct rcheck *r = ctx;
    r->rows++;
    /* One snapshot: a study never has more instances than its patient. */
    if (row->n_study_instances > row->n_patient_instances ||
        row->n_study_series > row->n_patient_series || row->n_study_instances == 0)
        r->bad++;
    return 0;
}

static void *reader_main(void *arg)
{
    struct shared *sh = arg;
    struct pacs_err err;
    unsigned i = 0;
    while (!atomic_load(&sh->done) || i < 20) {
        char pid[16];
        fmt(pid, sizeof pid, "PT%u", i % 10);
        struct index_cond cnd = {.col = index_tag_find(T_PATIENT_ID),
                                 .kind = INDEX_MATCH_SINGLE, .value = pid};
        struct index_query q = {.level = INDEX_STUDY, .conds = &cnd, .n_conds = 1,
                                .want_counts = true, .want_metadata = (i & 1) != 0};
        struct rcheck rc = {0};
        if (ops->find(sh->ix, &q, check_cb, &rc, &err) != 0 || rc.bad)
            atomic_fetch_add(&sh->failures, 1);
        struct index_stats st;
        if (i % 16 == 0 && ops->stats(sh->ix, &st, &err) != 0)
            atomic_fetch_add(&sh->failures, 1);
        atomic_fetch_add(&sh->queries, 1);
        i++;
    }
    return NULL;
}

static void test_concurrent_readers(void **state)
{
    struct fixture *f = *state;
    struct shared sh = {.ix = f->ix};
    pthread_t w, r[4];
    struct index_stats st;
    struct pacs_err err;
    assert_int_equal(pthread_create(&w, NULL, writer_main, &sh), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&r[i], NULL, reader_main, &sh), 0);
    pthread_join(w, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(r[i], NULL);
    assert_int_equal(atomic_load(&sh.failures), 0);
    assert_true(atomic_load(&sh.queries) >= 80);
    assert_int_equal(ops->stats(f->ix, &st, &err), 0);
    assert_int_equal(st.instances, W_BATCHES * W_PER_BATCH);
    assert_int_equal(st.studies, 30);
    assert_int_equal(st.series, 90);
    assert_int_equal(st.patients, 10);
}

/* A callback may query the index again (it gets its own connection). */
static int nested_cb(void *ctx, const struct index_row *row)
{
    struct index *ix = ctx;
    struct coll *c = malloc(sizeof *c);
    struct index_cond cnd = single(T_STUDY_UID, row->values[col(T_STUDY_UID)]);
    size_t n = find(ix, INDEX_SERIES, &cnd, 1, -1, c);
    free(c);
    return n == 0 ? -100 : 0;
}

static void test_nested_query(void **state)
{
    struct fixture *f = *state;
    struct pacs_err err;
    load_count_data(f->ix);
    struct index_query q = {.level = INDEX_STUDY, .want_counts = true};
    assert_int_equal(ops->find(f->ix, &q, nested_cb, f->ix, &err), 0);
}

/* Many query shapes on one connection: its statement cache fills up and
 * replaces statements while a query's own statements are running. */
static void test_statement_cache_churn(void **state)
{
    struct fixture *f = *state;
    struct coll *c = malloc(sizeof *c);
    static const char *const uids[] = {
        "S1.1", "S1.2", "S2.1", "S3.1", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9",
        "x10", "x11", "x12", "x13", "x14", "x15", "x16", "x17", "x18", "x19", "x20", "x21",
        "x22", "x23", "x24", "x25", "x26", "x27", "x28", "x29", "x30", "x31", "x32", "x33",
        "x34", "x35", "x36", "x37", "x38", "x39", "x40", "x41", "x42", "x43", "x44", "x45",
        "x46", "x47", "x48", "x49", "x50", "x51", "x52", "x53", "x54", "x55", "x56",
    };
    assert_non_null(c);
    load_count_data(f->ix);
    for (int round = 0; round < 3; round++) {
        for (size_t n = 1; n <= sizeof uids / sizeof uids[0]; n++) {
            struct index_cond cnd = {.col = col(T_SERIES_UID), .kind = INDEX_MATCH_LIST,
                                     .list = uids, .n_list = n};
            struct index_query q = {.level = INDEX_SERIES, .conds = &cnd, .n_conds = 1,
                                    .want_counts = true, .want_metadata = true};
            size_t want = n < 4 ? n : 4;
            assert_int_equal(find_q(f->ix, &q, -1, c), want);
            assert_int_equal(c->r[0].c[5], 3);
            assert_string_equal(c->r[0].meta, "{\"n\":0}");
        }
    }
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_main_tags),
        cmocka_unit_test_setup_teardown(test_insert_and_find, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dup_policies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_record, setup, teardown),
        cmocka_unit_test_setup_teardown(test_match_single, setup, teardown),
        cmocka_unit_test_setup_teardown(test_match_wildcard, setup, teardown),
        cmocka_unit_test_setup_teardown(test_match_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_match_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_queries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limit_offset_since, setup, teardown),
        cmocka_unit_test_setup_teardown(test_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metadata, setup, teardown),
        cmocka_unit_test_setup_teardown(test_has_blob_and_stats, setup, teardown),
        cmocka_unit_test_setup_teardown(test_updates_and_moves, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_and_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_readers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nested_query, setup, teardown),
        cmocka_unit_test_setup_teardown(test_statement_cache_churn, setup, teardown),
        cmocka_unit_test(test_public_id_values),
        cmocka_unit_test_setup_teardown(test_public_ids_and_changes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_levels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_from_v1, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
