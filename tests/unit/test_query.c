/* Unit tests: the query model and query_run (src/archive/query.h), on an
 * archive whose index is filled directly with synthetic records. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "archive/archive.h"
#include "archive/query.h"
#include "dicom/json.h"
#include "store/index.h"
#include "util/config.h"
#include "util/log.h"
#include "archive_fixture.h"

#define T_LEVEL DCM_TAG(0x0008, 0x0052)
#define T_CHARSET DCM_TAG(0x0008, 0x0005)
#define T_SOP_CLASS DCM_TAG(0x0008, 0x0016)
#define T_SOP_UID DCM_TAG(0x0008, 0x0018)
#define T_STUDY_DATE DCM_TAG(0x0008, 0x0020)
#define T_STUDY_TIME DCM_TAG(0x0008, 0x0030)
#define T_ACQ_DT DCM_TAG(0x0008, 0x002a)
#define T_ACCESSION DCM_TAG(0x0008, 0x0050)
#define T_RETRIEVE_AET DCM_TAG(0x0008, 0x0054)
#define T_AVAILABILITY DCM_TAG(0x0008, 0x0056)
#define T_MODALITY DCM_TAG(0x0008, 0x0060)
#define T_MODS_IN_STUDY DCM_TAG(0x0008, 0x0061)
#define T_CLASSES_IN_STUDY DCM_TAG(0x0008, 0x0062)
#define T_IMAGE_TYPE DCM_TAG(0x0008, 0x0008)
#define T_STUDY_DESC DCM_TAG(0x0008, 0x1030)
#define T_MODEL_NAME DCM_TAG(0x0008, 0x1090)
#define T_PAT_NAME DCM_TAG(0x0010, 0x0010)
#define T_PAT_ID DCM_TAG(0x0010, 0x0020)
#define T_BIRTH DCM_TAG(0x0010, 0x0030)
#define T_SEX DCM_TAG(0x0010, 0x0040)
#define T_OTHER_IDS DCM_TAG(0x0010, 0x1000)
#define T_AGE DCM_TAG(0x0010, 0x1010)
#define T_ETHNIC DCM_TAG(0x0010, 0x2160)
#define T_STUDY_UID DCM_TAG(0x0020, 0x000d)
#define T_SERIES_UID DCM_TAG(0x0020, 0x000e)
#define T_SERIES_NUM DCM_TAG(0x0020, 0x0011)
#define T_INST_NUM DCM_TAG(0x0020, 0x0013)
#define T_PAT_STUDIES DCM_TAG(0x0020, 0x1200)
#define T_PAT_SERIES DCM_TAG(0x0020, 0x1202)
#define T_PAT_INSTANCES DCM_TAG(0x0020, 0x1204)
#define T_STUDY_SERIES DCM_TAG(0x0020, 0x1206)
#define T_STUDY_INSTANCES DCM_TAG(0x0020, 0x1208)
#define T_SERIES_INSTANCES DCM_TAG(0x0020, 0x1209)
#define T_REQ_ATTR_SEQ DCM_TAG(0x0040, 0x0275)
#define T_REQ_PROC_ID DCM_TAG(0x0040, 0x1001)
#define T_SLICES DCM_TAG(0x0054, 0x0081)
#define T_ENCAPS_DOC DCM_TAG(0x0042, 0x0011)

#define CT_CLASS "1.2.840.10008.5.1.4.1.1.2"
#define MR_CLASS "1.2.840.10008.5.1.4.1.1.4"
#define CR_CLASS "1.2.840.10008.5.1.4.1.1.1"
#define SR_CLASS "1.2.840.10008.5.1.4.1.1.88.11"

/* One synthetic instance; NULL fields are absent. */
struct inst {
    const char *pid, *pname, *birth, *sex, *other_ids, *age;
    const char *study, *sdate, *stime, *acc, *sdesc;
    const char *series, *modality, *snum, *model;
    const char *sop, *sop_class, *inum, *image_type, *acq_dt;
    uint16_t slices;
    const char *req_proc_id; /* RequestAttributesSequence item */
};

#define ST1 "1.2.826.0.1.3680043.2.1"
#define ST2 "1.2.826.0.1.3680043.2.2"
#define ST3 "1.2.826.0.1.3680043.2.3"
#define ST4 "1.2.826.0.1.3680043.2.4"

static const struct inst insts[] = {
    { "PID1", "Doe^John", "19700101", "M", "X1\\X2", "050Y",
      ST1, "20200115", "101500", "ACC1", "CT Chest",
      ST1 ".1", "CT", "1", "Scanner X",
      ST1 ".1.1", CT_CLASS, "1", "ORIGINAL\\PRIMARY\\AXIAL", "20200115101500.000000+0100", 64, "RP1" },
    { "PID1", "Doe^John", "19700101", "M", "X1\\X2", "050Y",
      ST1, "20200115", "101500", "ACC1", "CT Chest",
      ST1 ".1", "CT", "1", "Scanner X",
      ST1 ".1.2", CT_CLASS, "2", "DERIVED\\SECONDARY", NULL, 64, NULL },
    { "PID1", "Doe^John", "19700101", "M", "X1\\X2", "050Y",
      ST1, "20200115", "101500", "ACC1", "CT Chest",
      ST1 ".2", "SR", "2", NULL,
      ST1 ".2.1", SR_CLASS, "1", NULL, NULL, 0, NULL },
    { "PID1", "Doe^John", "19700101", "M", "X1\\X2", "051Y",
      ST2, "20210310", "083000", "ACC2", "MR Brain",
      ST2 ".1", "MR", "1", "Magnet 3T",
      ST2 ".1.1", MR_CLASS, "1", "ORIGINAL\\PRIMARY", NULL, 0, NULL },
    { "PID1", "Doe^John", "19700101", "M", "X1\\X2", "051Y",
      ST2, "20210310", "083000", "ACC2", "MR Brain",
      ST2 ".1", "MR", "1", "Magnet 3T",
      ST2 ".1.2", MR_CLASS, "2", "ORIGINAL\\PRIMARY", NULL, 0, NULL },
    { "PID2", "M\xc3\xbcller^J\xc3\xbcrgen", "19851224", "M", NULL, "035Y",
      ST3, "20210311", "160000", "ACC3", "R\xc3\xb6ntgen Thorax",
      ST3 ".1", "CR", "1", NULL,
      ST3 ".1.1", CR_CLASS, "1", NULL, NULL, 0, NULL },
    { "PID3", "DOE^JANE", "19900505", "F", "Y7", NULL,
      ST4, "20191231", "235959", "ACC4", "CT Abdomen",
      ST4 ".1", "CT", "3", "Scanner Y",
      ST4 ".1.1", CT_CLASS, "1", "ORIGINAL\\PRIMARY\\AXIAL", NULL, 0, NULL },
};
#define N_INSTS (sizeof insts / sizeof insts[0])

static char g_dir[] = "/tmp/pacsd-test-query-XXXXXX";
static struct pacs_config *g_cfg;
static struct archive *g_arch;

/* --- fixture --------------------------------------------------------------- */

static void put(struct dcm_ds *ds, uint32_t tag, uint16_t vr, const char *s)
{
    if (s)
        assert_int_equal(dcm_ds_put_str(ds, tag, vr, s), 0);
}

static bool non_ascii(const char *s)
{
    for (; s && *s; s++)
        if ((unsigned char)*s >= 0x80)
            return true;
    return false;
}

static struct dcm_ds *build_ds(const struct inst *in)
{
    struct dcm_ds *ds = dcm_ds_new();
    assert_non_null(ds);
    if (non_ascii(in->pname) || non_ascii(in->sdesc))
        put(ds, T_CHARSET, DCM_VR_CS, "ISO_IR 192");
    put(ds, T_PAT_ID, DCM_VR_LO, in->pid);
    put(ds, T_PAT_NAME, DCM_VR_PN, in->pname);
    put(ds, T_BIRTH, DCM_VR_DA, in->birth);
    put(ds, T_SEX, DCM_VR_CS, in->sex);
    put(ds, T_OTHER_IDS, DCM_VR_LO, in->other_ids);
    put(ds, T_AGE, DCM_VR_AS, in->age);
    put(ds, T_STUDY_UID, DCM_VR_UI, in->study);
    put(ds, T_STUDY_DATE, DCM_VR_DA, in->sdate);
    put(ds, T_STUDY_TIME, DCM_VR_TM, in->stime);
    put(ds, T_ACCESSION, DCM_VR_SH, in->acc);
    put(ds, T_STUDY_DESC, DCM_VR_LO, in->sdesc);
    put(ds, T_SERIES_UID, DCM_VR_UI, in->series);
    put(ds, T_MODALITY, DCM_VR_CS, in->modality);
    put(ds, T_SERIES_NUM, DCM_VR_IS, in->snum);
    put(ds, T_MODEL_NAME, DCM_VR_LO, in->model);
    put(ds, T_SOP_UID, DCM_VR_UI, in->sop);
    put(ds, T_SOP_CLASS, DCM_VR_UI, in->sop_class);
    put(ds, T_INST_NUM, DCM_VR_IS, in->inum);
    put(ds, T_IMAGE_TYPE, DCM_VR_CS, in->image_type);
    put(ds, T_ACQ_DT, DCM_VR_DT, in->acq_dt);
    if (in->slices) {
        uint8_t v[2] = { (uint8_t)(in->slices & 0xff), (uint8_t)(in->slices >> 8) };
        assert_int_equal(dcm_ds_put(ds, T_SLICES, DCM_VR_US, v, 2, NULL), 0);
    }
    if (in->req_proc_id) {
        struct dcm_elem *seq;
        struct dcm_ds *item;
        assert_int_equal(dcm_ds_put_seq(ds, T_REQ_ATTR_SEQ, &seq), 0);
        assert_int_equal(dcm_seq_add_item(ds, seq, &item), 0);
        put(item, T_REQ_PROC_ID, DCM_VR_SH, in->req_proc_id);
    }
    return ds;
}

static int setup(void **state)
{
    (void)state;
    fixture_open(g_dir, &g_cfg, &g_arch);
    struct dcm_ds *ds[N_INSTS];
    for (size_t i = 0; i < N_INSTS; i++)
        ds[i] = build_ds(&insts[i]);
    fixture_insert_datasets(g_arch, ds, N_INSTS);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fixture_close(g_dir, g_cfg, g_arch);
    return 0;
}

/* --- running queries --------------------------------------------------------- */

#define MAX_ANSWERS 32

struct answers {
    struct dcm_ds *v[MAX_ANSWERS];
    size_t n;
    size_t stop_after; /* return 42 after this many (0: never) */
};

static int collect(void *ctx, struct dcm_ds *ans)
{
    struct answers *a = ctx;
    assert_true(a->n < MAX_ANSWERS);
    a->v[a->n++] = ans;
    return a->stop_after && a->n == a->stop_after ? 42 : 0;
}

static void answers_free(struct answers *a)
{
    for (size_t i = 0; i < a->n; i++)
        dcm_ds_free(a->v[i]);
    a->n = 0;
}

/* Adds "GGGGEEEE=value" keys from a NULL-terminated list. */
static struct query *make_query(enum index_level level, enum query_model model,
                                const char *const *kv)
{
    struct query *q;
    struct pacs_err err = { 0 };
    assert_int_equal(query_new(level, model, &q), 0);
    for (; kv && *kv; kv++) {
        const char *eq = strchr(*kv, '=');
        assert_non_null(eq);
        uint32_t tag = (uint32_t)strtoul(*kv, NULL, 16);
        if (query_add_key(q, tag, eq + 1, &err) != 0)
            fail_msg("query_add_key %s: %s", *kv, err.msg);
    }
    return q;
}

static void run(const struct query *q, struct answers *a)
{
    struct pacs_err err = { 0 };
    int rc = query_run(g_arch, q, collect, a, &err);
    if (rc != 0)
        fail_msg("query_run: %d %s", rc, err.msg);
}

/* Runs a query given as key=value strings; returns the number of answers. */
static size_t run_kv(enum index_level level, enum query_model model, const char *const *kv,
                     struct answers *a)
{
    struct query *q = make_query(level, model, kv);
    run(q, a);
    query_free(q);
    return a->n;
}

/* The first value of tag in ds as a static string; NULL if absent. */
static const char *get(const struct dcm_ds *ds, uint32_t tag)
{
    static char buf[256];
    const struct dcm_elem *e = dcm_ds_find(ds, tag);
    if (!e)
        return NULL;
    if (e->len == 0)
        return "";
    const char *s;
    size_t n;
    assert_int_equal(dcm_elem_str(e, 0, &s, &n), 0);
    assert_true(n < sizeof buf);
    memcpy(buf, s, n);
    buf[n] = '\0';
    return buf;
}

/* The whole raw value (all values, padding trimmed) as a static string. */
static const char *get_all(const struct dcm_ds *ds, uint32_t tag)
{
    static char buf[512];
    const struct dcm_elem *e = dcm_ds_find(ds, tag);
    if (!e)
        return NULL;
    size_t n = e->len;
    assert_true(n < sizeof buf);
    if (n)
        memcpy(buf, e->val, n);
    while (n && (buf[n - 1] == ' ' || buf[n - 1] == '\0'))
        n--;
    buf[n] = '\0';
    return buf;
}

static bool has(const struct answers *a, uint32_t tag, const char *value)
{
    for (size_t i = 0; i < a->n; i++) {
        const char *v = get(a->v[i], tag);
        if (v && strcmp(v, value) == 0)
            return true;
    }
    return false;
}

static const struct dcm_ds *find_answer(const struct answers *a, uint32_t tag, const char *value)
{
    for (size_t i = 0; i < a->n; i++) {
        const char *v = get(a->v[i], tag);
        if (v && strcmp(v, value) == 0)
            return a->v[i];
    }
    fail_msg("no answer with (%04X,%04X) = %s", DCM_GROUP(tag), DCM_ELEMENT(tag), value);
    return NULL;
}

/* --- levels and models --------------------------------------------------------- */

static void test_patient_level(void **state)
{
    (void)state;
    struct answers a = { 0 };
    const char *kv[] = { "00100010=", NULL };
    assert_int_equal(run_kv(INDEX_PATIENT, QUERY_PATIENT_ROOT, kv, &a), 3);
    assert_true(has(&a, T_PAT_ID, "PID1") && has(&a, T_PAT_ID, "PID2") && has(&a, T_PAT_ID, "PID3"));
    const struct dcm_ds *p1 = find_answer(&a, T_PAT_ID, "PID1");
    assert_string_equal(get(p1, T_LEVEL), "PATIENT");
    assert_string_equal(get(p1, T_PAT_NAME), "Doe^John");
    /* Only what was asked, plus the unique key and the level. */
    assert_null(dcm_ds_find(p1, T_STUDY_UID));
    assert_null(dcm_ds_find(p1, T_BIRTH));
    assert_null(dcm_ds_find(p1, T_CHARSET));
    answers_free(&a);
}

static void test_study_level_both_models(void **state)
{
    (void)state;
    struct answers a = { 0 };
    const char *kv[] = { "00100020=PID1", "00081030=", NULL };
    assert_int_equal(run_kv(INDEX_STUDY, QUERY_PATIENT_ROOT, kv, &a), 2);
    assert_true(has(&a, T_STUDY_UID, ST1) && has(&a, T_STUDY_UID, ST2));
    const struct dcm_ds *s1 = find_answer(&a, T_STUDY_UID, ST1);
    assert_string_equal(get(s1, T_LEVEL), "STUDY");
    assert_string_equal(get(s1, T_STUDY_DESC), "CT Chest");
    assert_string_equal(get(s1, T_PAT_ID), "PID1");
    answers_free(&a);

    /* Study Root: PatientID is a study attribute, not a unique key. */
    const char *kv2[] = { "00080050=ACC4", NULL };
    assert_int_equal(run_kv(INDEX_STUDY, QUERY_STUDY_ROOT, kv2, &a), 1);
    assert_string_equal(get(a.v[0], T_STUDY_UID), ST4);
    assert_null(dcm_ds_find(a.v[0], T_PAT_ID));
    answers_free(&a);

    /* Relational: patient keys in a Study Root study query. */
    const char *kv3[] = { "00100010=DOE^JANE", NULL };
    assert_int_equal(run_kv(INDEX_STUDY, QUERY_STUDY_ROOT, kv3, &a), 1);
    assert_string_equal(get(a.v[0], T_STUDY_UID), ST4);
    assert_string_equal(get(a.v[0], T_PAT_NAME), "DOE^JANE");
    answers_free(&a);
}

static void test_series_level(void **state)
{
    (void)state;
    struct answers a = { 0 };
    const char *kv[] = { "0020000D=" ST1, "00080060=CT", NULL };
    assert_int_equal(run_kv(INDEX_SERIES, QUERY_STUDY_ROOT, kv, &a), 1);
    assert_string_equal(get(a.v[0], T_SERIES_UID), ST1 ".1");
    assert_string_equal(get(a.v[0], T_STUDY_UID), ST1);
    assert_string_equal(get(a.v[0], T_MODALITY), "CT");
    assert_string_equal(get(a.v[0], T_LEVEL), "SERIES");
    assert_null(dcm_ds_find(a.v[0], T_PAT_ID));
    answers_free(&a);

    /* Patient Root without the higher unique keys: relational, allowed. */
    const char *kv2[] = { "00080060=CT", NULL };
    assert_int_equal(run_kv(INDEX_SERIES, QUERY_PATIENT_ROOT, kv2, &a), 2);
    assert_true(has(&a, T_SERIES_UID, ST1 ".1") && has(&a, T_SERIES_UID, ST4 ".1"));
    const struct dcm_ds *s = find_answer(&a, T_SERIES_UID, ST4 ".1");
    assert_string_equal(get(s, T_PAT_ID), "PID3");
    assert_string_equal(get(s, T_STUDY_UID), ST4);
    answers_free(&a);
}

static void test_image_level(void **state)
{
    (void)state;
    struct answers a = { 0 };
    const char *kv[] = { "0020000E=" ST1 ".1", "00200013=", "00080016=", NULL };
    assert_int_equal(run_kv(INDEX_INSTANCE, QUERY_PATIENT_ROOT, kv, &a), 2);
    const struct dcm_ds *i2 = find_answer(&a, T_SOP_UID, ST1 ".1.2");
    assert_string_equal(get(i2, T_LEVEL), "IMAGE");
    assert_string_equal(get(i2, T_INST_NUM), "2");
    assert_string_equal(get(i2, T_SOP_CLASS), CT_CLASS);
    assert_string_equal(get(i2, T_SERIES_UID), ST1 ".1");
    assert_string_equal(get(i2, T_STUDY_UID), ST1);
    assert_string_equal(get(i2, T_PAT_ID), "PID1");
    answers_free(&a);
}

/* --- matching kinds ---------------------------------------------------------------- */

static void test_single_pn_case_insensitive(void **state)
{
    (void)state;
    struct answers a = { 0 };
    const char *kv[] = { "00100010=doe^john", NULL };
    assert_int_equal(run_kv(INDEX_PATIENT, QUERY_PATIENT_ROOT, kv, &a), 1);
    assert_string_equal(get(a.v[0], T_PAT_ID), "PID1");
    /* The stored spelling is answered, not the key's. */
    assert_string_equal(get(a.v[0], T_PAT_NAME), "Doe^John");
    answers_free(&a);
    /* Other VRs are case-sensitive. */
    const char *kv2[] = { "00080050=acc1", NULL };
    assert_int_equal(run_kv(INDEX_STUDY, QUERY_STUDY_ROOT, kv2, &a), 0);
}

static void test_wildcards(void **state)
{
    (void)state;
    struct answers a = { 0 };
    const char *kv[] = { "00100010=doe*", NULL };
    assert_int_equal(run_kv(INDEX_PATIENT, QUERY_PATIENT_ROOT, kv, &a), 2);
    assert_true(has(&a, T_PAT_ID, "PID1") && has(&a, T_PAT_ID, "PID3"));
    answers_free(&a);
    const char *kv2[] = { "00080050=AC?1", NULL };
    assert_int_equal(run_kv(INDEX_STUDY, QUERY_STUDY_ROOT, kv2, &a), 1);
    answers_free(&a);
    const char *kv3[] = { "00080050=ACC?", NULL };
    assert_int_equal(run_kv(INDEX_STUDY, QUERY_STUDY_ROOT, kv3, &a), 4);
    answers_free(&a);
    /* '?' is one character, also a multi-byte one. */
    const char *kv4[] = { "00100010=M?ller*", NULL };
    assert_int_equal(run_kv(INDEX_PATIENT, QUERY_PATIENT_ROOT, kv4, &a), 1);
    answers_free(&a);
    /* A lone '*' is universal. */
    const char *kv5[] = { "00081030=*", NULL };
    assert_int_equal(run_kv(INDEX_STUDY, QUERY_STUDY_ROOT, kv5, &a), 4);
    answers_free(&a);
    /* Not a wildcard in a UID: no match rather than everything. */
    const char *kv6[] = { "0020000D=1.2.826.*", NULL };
    assert_int_equal(run_kv(INDEX_STUDY, QUERY_STUDY_ROOT, kv6, &a), 0);
}

static void test_wildcard_on_metadata(void **state)
{
    (void)state;
    struct answers a = { 0 };
    /* ManufacturerModelName is no main tag: matched on the metadata. */
    const char *kv[] = { "00081090=scan*", NULL };
    assert_int_equal(run_kv(INDEX_SERIES, QUERY_STUDY_ROOT, kv, &a), 0);
    const char *kv2[] = { "00081090=Scan*", NULL };
    assert_int_equal(run_kv(INDEX_SERIES, QUERY_STUDY_ROOT, kv2, &a), 2);
    assert_true(has(&a, T_SERIES_UID, ST1 ".1") && has(&a, T_SERIES_UID, ST4 ".1"));
    const struct dcm_ds *s = find_answer(&a, T_SERIES_UID, ST4 ".1");
    assert_string_equal(get(s, T_MODEL_NAME), "Scanner Y");
    answers_free(&a);
    /* A multi-valued attribute matches if any value does. */
    const char *kv3[] = { "00080008=AXIAL", NULL };
    assert_int_equal(run_kv(INDEX_INSTANCE, QUERY_STUDY_ROOT, kv3, &a), 2);
    assert_true(has(&a, T_SOP_UID, ST1 ".1.1") && has(&a, T_SOP_UID, ST4 ".1.1"));
    const struct dcm_ds *i = find_answer(&a, T_SOP_UID, ST1 ".1.1");
    assert_string_equal(get_all(i, T_IMAGE_TYPE), "ORIGINAL\\PRIMARY\\AXIAL");
    answers_free(&a);
    /* Same on a multi-valued main tag, matched on the row values. */
    const char *kv4[] = { "00101000=X2", NULL };
    assert_int_equal(run_kv(INDEX_PATIENT, QUERY_PATIENT_ROOT, kv4, &a), 1);
    assert_string_equal(get(a.v[0], T_PAT_ID), "PID1");
    assert_string_equal(get_all(a.v[0], T_OTHER_IDS), "X1\\X2");
    answers_free(&a);
    /* Patient level, on the first instance's metadata. */
    const char *kv5[] = { "00101010=035Y", NULL };
    assert_int_equal(run_kv(INDEX_PATIENT, QUERY_PATIENT_ROOT, kv5, &a), 1);
    assert_string_equal(get(a.v[0], T_PAT_ID), "PID2");
    answers_free(&a);
}

static void test_ranges(void **state)
{
    (void)state;
    struct answers a = { 0 };
    const char *kv[] = { "00080020=20200101-20201231", NULL };
    assert_int_equal(run_kv(INDEX_STUDY, QUERY_STUDY_ROOT, kv, &a), 1);
    assert_string_equal(get(a.v[0], T_STUDY_UID), ST1);
    answers_free(&a);
    const char *kv2[] = { "00080020=20210101-", NULL };
    assert_int_equal(run_kv(INDEX_STUDY, QUERY_STUDY_ROOT, kv2, &a), 2);
    assert_true(has(&a, T_STUDY_UID, ST2) && has(&a, T_STUDY_UID, ST3));
    answers_free(&a);
    const char *kv3[] = { "00080020=-20200101", NULL };
    assert_int_equal(run_kv(INDEX_STUDY, QUERY_STUDY_ROOT, kv3, &a), 1);
    assert_string_equal(get(a.v[0], T_STUDY_UID), ST4);
    answers_free(&a);
    /* Inclusive ends; the retired YYYY.MM.DD form. */
    const char *kv4[] = { "00080020=2020.01.15-2021.03.10", NULL };
    assert_int_equal(run_kv(INDEX_STUDY, QUERY_STUDY_ROOT, kv4, &a), 2);
    answers_free(&a);
    const char *kv5[] = { "00080020=2020.01.15", NULL };
    assert_int_equal(run_kv(INDEX_STUDY, QUERY_STUDY_ROOT, kv5, &a), 1);
    answers_free(&a);
    /* Times: a partial upper bound covers its whole period, HH:MM allowed. */
    const char *kv6[] = { "00080030=-08:30", NULL };
    assert_int_equal(run_kv(INDEX_STUDY, QUERY_STUDY_ROOT, kv6, &a), 1);
    assert_string_equal(get(a.v[0], T_STUDY_UID), ST2);
    answers_free(&a);
    const char *kv7[] = { "00080030=1600-", NULL };
    assert_int_equal(run_kv(INDEX_STUDY, QUERY_STUDY_ROOT, kv7, &a), 2);
    assert_true(has(&a, T_STUDY_UID, ST3) && has(&a, T_STUDY_UID, ST4));
    answers_free(&a);
    const char *kv8[] = { "00080030=1015-1015", NULL };
    assert_int_equal(run_kv(INDEX_STUDY, QUERY_STUDY_ROOT, kv8, &a), 1);
    assert_string_equal(get(a.v[0], T_STUDY_UID), ST1);
    answers_free(&a);
    /* Combined with a patient key on the same query. */
    const char *kv9[] = { "00080020=20190101-20211231", "00100020=PID1", NULL };
    assert_int_equal(run_kv(INDEX_STUDY, QUERY_PATIENT_ROOT, kv9, &a), 2);
    answers_free(&a);
    /* DT on the metadata, with a UTC offset in the value. */
    const char *kv10[] = { "0008002A=20200115-20200115", NULL };
    assert_int_equal(run_kv(INDEX_INSTANCE, QUERY_STUDY_ROOT, kv10, &a), 1);
    assert_string_equal(get(a.v[0], T_SOP_UID), ST1 ".1.1");
    answers_free(&a);
    const char *kv11[] = { "0008002A=20200115101500.000000+0100", NULL };
    assert_int_equal(run_kv(INDEX_INSTANCE, QUERY_STUDY_ROOT, kv11, &a), 1);
    answers_free(&a);
    const char *kv12[] = { "0008002A=-20200115100000-0500", NULL };
    assert_int_equal(run_kv(INDEX_INSTANCE, QUERY_STUDY_ROOT, kv12, &a), 0);
}

static void test_uid_lists(void **state)
{
    (void)state;
    struct answers a = { 0 };
    const char *kv[] = { "0020000D=" ST1 "\\" ST3 "\\1.2.3.4", NULL };
    assert_int_equal(run_kv(INDEX_STUDY, QUERY_STUDY_ROOT, kv, &a), 2);
    assert_true(has(&a, T_STUDY_UID, ST1) && has(&a, T_STUDY_UID, ST3));
    answers_free(&a);
    const char *kv2[] = { "00080018=" ST1 ".1.2\\" ST2 ".1.1", NULL };
    assert_int_equal(run_kv(INDEX_INSTANCE, QUERY_STUDY_ROOT, kv2, &a), 2);
    answers_free(&a);
    /* Lists of other values, PN case-insensitively (matched here). */
    const char *kv3[] = { "00100010=doe^jane\\M\xc3\x9cLLER^J\xc3\x9cRGEN\\m\xc3\xbcller^j\xc3\xbcrgen", NULL };
    assert_int_equal(run_kv(INDEX_PATIENT, QUERY_PATIENT_ROOT, kv3, &a), 2);
    assert_true(has(&a, T_PAT_ID, "PID2") && has(&a, T_PAT_ID, "PID3"));
    answers_free(&a);
    const char *kv4[] = { "00080060=MR\\CR", NULL };
    assert_int_equal(run_kv(INDEX_SERIES, QUERY_STUDY_ROOT, kv4, &a), 2);
    answers_free(&a);
}

static void test_numeric_main_tag(void **state)
{
    (void)state;
    struct answers a = { 0 };
    const char *kv[] = { "00540081=64", NULL };
    assert_int_equal(run_kv(INDEX_SERIES, QUERY_STUDY_ROOT, kv, &a), 1);
    const struct dcm_elem *e = dcm_ds_find(a.v[0], T_SLICES);
    assert_non_null(e);
    assert_int_equal(e->vr, DCM_VR_US);
    uint64_t v;
    assert_int_equal(dcm_elem_uint(e, 0, &v), 0);
    assert_int_equal(v, 64);
    answers_free(&a);
}

/* --- answers --------------------------------------------------------------------- */

static void test_computed(void **state)
{
    (void)state;
    struct answers a = { 0 };
    const char *kv[] = { "00201206=", "00201208=", "00080061=", "00080062=", "00201200=",
                         "00201202=", "00201204=", "00080056=", "00080054=", NULL };
    assert_int_equal(run_kv(INDEX_STUDY, QUERY_PATIENT_ROOT, kv, &a), 4);
    const struct dcm_ds *s1 = find_answer(&a, T_STUDY_UID, ST1);
    assert_string_equal(get(s1, T_STUDY_SERIES), "2");
    assert_string_equal(get(s1, T_STUDY_INSTANCES), "3");
    const char *mods = get_all(s1, T_MODS_IN_STUDY);
    assert_true(strcmp(mods, "CT\\SR") == 0 || strcmp(mods, "SR\\CT") == 0);
    const char *classes = get_all(s1, T_CLASSES_IN_STUDY);
    assert_non_null(strstr(classes, CT_CLASS));
    assert_non_null(strstr(classes, SR_CLASS));
    assert_string_equal(get(s1, T_PAT_STUDIES), "2");
    assert_string_equal(get(s1, T_PAT_SERIES), "3");
    assert_string_equal(get(s1, T_PAT_INSTANCES), "5");
    assert_string_equal(get(s1, T_AVAILABILITY), "ONLINE");
    assert_string_equal(get(s1, T_RETRIEVE_AET), "PACSD");
    assert_int_equal(dcm_ds_find(s1, T_STUDY_SERIES)->vr, DCM_VR_IS);
    const struct dcm_ds *s3 = find_answer(&a, T_STUDY_UID, ST3);
    assert_string_equal(get(s3, T_STUDY_INSTANCES), "1");
    assert_string_equal(get_all(s3, T_MODS_IN_STUDY), "CR");
    assert_string_equal(get(s3, T_PAT_STUDIES), "1");
    answers_free(&a);

    const char *kv2[] = { "00201209=", "0020000D=" ST2, NULL };
    assert_int_equal(run_kv(INDEX_SERIES, QUERY_STUDY_ROOT, kv2, &a), 1);
    assert_string_equal(get(a.v[0], T_SERIES_INSTANCES), "2");
    answers_free(&a);

    const char *kv3[] = { "00201200=", "00201204=", NULL };
    assert_int_equal(run_kv(INDEX_PATIENT, QUERY_PATIENT_ROOT, kv3, &a), 3);
    assert_string_equal(get(find_answer(&a, T_PAT_ID, "PID1"), T_PAT_INSTANCES), "5");
    assert_string_equal(get(find_answer(&a, T_PAT_ID, "PID3"), T_PAT_STUDIES), "1");
    answers_free(&a);

    /* Matching on a computed attribute: any of the study's modalities. */
    const char *kv4[] = { "00080061=SR", NULL };
    assert_int_equal(run_kv(INDEX_STUDY, QUERY_STUDY_ROOT, kv4, &a), 1);
    assert_string_equal(get(a.v[0], T_STUDY_UID), ST1);
    answers_free(&a);
    const char *kv5[] = { "00080061=CT\\MR", NULL };
    assert_int_equal(run_kv(INDEX_STUDY, QUERY_STUDY_ROOT, kv5, &a), 3);
    assert_false(has(&a, T_STUDY_UID, ST3));
    answers_free(&a);
}

static void test_return_keys(void **state)
{
    (void)state;
    struct answers a = { 0 };
    /* Absent in the data: an empty element of the key's VR. */
    const char *kv[] = { "00102160=", "00100030=", "00400275=", "00101010=", "0020000D=" ST1,
                         NULL };
    assert_int_equal(run_kv(INDEX_STUDY, QUERY_PATIENT_ROOT, kv, &a), 1);
    const struct dcm_elem *e = dcm_ds_find(a.v[0], T_ETHNIC);
    assert_non_null(e);
    assert_int_equal(e->vr, DCM_VR_SH);
    assert_int_equal(e->len, 0);
    assert_string_equal(get(a.v[0], T_BIRTH), "19700101");
    assert_string_equal(get(a.v[0], T_AGE), "050Y");
    /* A sequence from the metadata, items and all. */
    e = dcm_ds_find(a.v[0], T_REQ_ATTR_SEQ);
    assert_non_null(e);
    assert_true(e->flags & DCM_EF_SEQ);
    assert_int_equal(e->u.items.n, 1);
    assert_string_equal(get(e->u.items.v[0], T_REQ_PROC_ID), "RP1");
    answers_free(&a);

    const char *kv2[] = { "00400275=", "00102160=", "0020000D=" ST4, NULL };
    assert_int_equal(run_kv(INDEX_STUDY, QUERY_STUDY_ROOT, kv2, &a), 1);
    e = dcm_ds_find(a.v[0], T_REQ_ATTR_SEQ);
    assert_non_null(e);
    assert_true(e->flags & DCM_EF_SEQ);
    assert_int_equal(e->u.items.n, 0);
    answers_free(&a);

    /* An absent main tag too. */
    const char *kv3[] = { "00101000=", "00100020=PID2", NULL };
    assert_int_equal(run_kv(INDEX_PATIENT, QUERY_PATIENT_ROOT, kv3, &a), 1);
    e = dcm_ds_find(a.v[0], T_OTHER_IDS);
    assert_non_null(e);
    assert_int_equal(e->len, 0);
    assert_int_equal(e->vr, DCM_VR_LO);
    answers_free(&a);
}

static void test_non_ascii_answers(void **state)
{
    (void)state;
    struct answers a = { 0 };
    const char *kv[] = { "00100010=M\xc3\xbcller*", "00081030=", NULL };
    assert_int_equal(run_kv(INDEX_STUDY, QUERY_PATIENT_ROOT, kv, &a), 1);
    assert_string_equal(get(a.v[0], T_CHARSET), "ISO_IR 192");
    assert_string_equal(get(a.v[0], T_PAT_NAME), "M\xc3\xbcller^J\xc3\xbcrgen");
    assert_string_equal(get(a.v[0], T_STUDY_DESC), "R\xc3\xb6ntgen Thorax");
    /* dcm_elem_text reads it back through the declared character set. */
    struct dynbuf b;
    dynbuf_init(&b, 0);
    assert_int_equal(dcm_elem_text(a.v[0], dcm_ds_find(a.v[0], T_PAT_NAME), &b, NULL), 0);
    assert_string_equal((char *)b.data, "M\xc3\xbcller^J\xc3\xbcrgen");
    dynbuf_free(&b);
    answers_free(&a);

    /* A Latin-1 identifier: decoded before matching, answered in UTF-8. */
    struct dcm_ds *id = dcm_ds_new();
    put(id, T_CHARSET, DCM_VR_CS, "ISO_IR 100");
    put(id, T_LEVEL, DCM_VR_CS, "PATIENT");
    put(id, T_PAT_NAME, DCM_VR_PN, "m\xfcller^j\xfcrgen");
    struct query *q;
    struct pacs_err err = { 0 };
    if (query_from_identifier(id, QUERY_PATIENT_ROOT, &q, &err) != 0)
        fail_msg("%s", err.msg);
    dcm_ds_free(id);
    run(q, &a);
    query_free(q);
    /* Case folding is ASCII-only: u-umlaut must match exactly. */
    assert_int_equal(a.n, 1);
    assert_string_equal(get(a.v[0], T_PAT_ID), "PID2");
    assert_string_equal(get(a.v[0], T_CHARSET), "ISO_IR 192");
    answers_free(&a);
}

static void test_include_main_and_all(void **state)
{
    (void)state;
    struct answers a = { 0 };
    struct query *q = make_query(INDEX_STUDY, QUERY_STUDY_ROOT,
                                 (const char *const[]){ "0020000D=" ST1, NULL });
    query_include_main_tags(q, true);
    run(q, &a);
    assert_int_equal(a.n, 1);
    assert_string_equal(get(a.v[0], T_STUDY_DATE), "20200115");
    assert_string_equal(get(a.v[0], T_ACCESSION), "ACC1");
    assert_string_equal(get(a.v[0], T_PAT_NAME), "Doe^John"); /* Study Root */
    assert_null(dcm_ds_find(a.v[0], T_MODALITY));
    assert_null(dcm_ds_find(a.v[0], T_MODEL_NAME));
    answers_free(&a);
    query_include_all(q, true);
    run(q, &a);
    assert_int_equal(a.n, 1);
    assert_string_equal(get(a.v[0], T_MODEL_NAME), "Scanner X");
    assert_string_equal(get(a.v[0], T_AGE), "050Y");
    /* Main tags of lower levels stay out. */
    assert_null(dcm_ds_find(a.v[0], T_MODALITY));
    assert_null(dcm_ds_find(a.v[0], T_SOP_UID));
    answers_free(&a);
    query_free(q);
}

/* --- limits, cancel, errors -------------------------------------------------------- */

static void test_limit_offset(void **state)
{
    (void)state;
    struct answers a = { 0 };
    struct query *q = make_query(INDEX_INSTANCE, QUERY_STUDY_ROOT, NULL);
    query_set_limit(q, 3, 0);
    run(q, &a);
    assert_int_equal(a.n, 3);
    assert_string_equal(get(a.v[0], T_SOP_UID), ST1 ".1.1");
    answers_free(&a);
    query_set_limit(q, 2, 5);
    run(q, &a);
    assert_int_equal(a.n, 2);
    assert_string_equal(get(a.v[0], T_SOP_UID), ST3 ".1.1");
    answers_free(&a);
    query_free(q);

    /* With a key matched on the metadata the limit counts matches. */
    q = make_query(INDEX_INSTANCE, QUERY_STUDY_ROOT, (const char *const[]){ "00080008=ORIGINAL", NULL });
    run(q, &a);
    assert_int_equal(a.n, 4);
    answers_free(&a);
    query_set_limit(q, 2, 1);
    run(q, &a);
    assert_int_equal(a.n, 2);
    assert_string_equal(get(a.v[0], T_SOP_UID), ST2 ".1.1");
    assert_string_equal(get(a.v[1], T_SOP_UID), ST2 ".1.2");
    answers_free(&a);
    query_set_limit(q, 10, 3);
    run(q, &a);
    assert_int_equal(a.n, 1);
    assert_string_equal(get(a.v[0], T_SOP_UID), ST4 ".1.1");
    answers_free(&a);
    query_free(q);
}

static void test_cancel(void **state)
{
    (void)state;
    struct answers a = { .stop_after = 2 };
    struct query *q = make_query(INDEX_INSTANCE, QUERY_STUDY_ROOT, NULL);
    assert_int_equal(query_run(g_arch, q, collect, &a, NULL), 42);
    assert_int_equal(a.n, 2);
    answers_free(&a);
    query_free(q);
    /* Also when matching on the metadata. */
    a.stop_after = 1;
    q = make_query(INDEX_INSTANCE, QUERY_STUDY_ROOT, (const char *const[]){ "00080008=ORIGINAL", NULL });
    assert_int_equal(query_run(g_arch, q, collect, &a, NULL), 42);
    assert_int_equal(a.n, 1);
    answers_free(&a);
    query_free(q);
}

static int ident_query(const char *level, enum query_model model, uint32_t tag, uint16_t vr,
                       const char *value, struct pacs_err *err)
{
    struct dcm_ds *id = dcm_ds_new();
    if (level)
        put(id, T_LEVEL, DCM_VR_CS, level);
    if (tag)
        put(id, tag, vr, value);
    struct query *q = NULL;
    int rc = query_from_identifier(id, model, &q, err);
    if (rc == 0)
        assert_non_null(q);
    else
        assert_null(q);
    query_free(q);
    dcm_ds_free(id);
    return rc;
}

static void test_identifier_errors(void **state)
{
    (void)state;
    struct pacs_err err = { 0 };
    assert_int_equal(ident_query(NULL, QUERY_PATIENT_ROOT, T_PAT_ID, DCM_VR_LO, "", &err), PACS_EINVAL);
    assert_int_equal(ident_query("FOO", QUERY_PATIENT_ROOT, 0, 0, NULL, &err), PACS_EINVAL);
    assert_int_equal(ident_query("PATIENT", QUERY_STUDY_ROOT, 0, 0, NULL, &err), PACS_EINVAL);
    assert_int_equal(ident_query("STUDY ", QUERY_STUDY_ROOT, 0, 0, NULL, &err), 0);
    assert_int_equal(ident_query("STUDY", QUERY_STUDY_ROOT, T_MODALITY, DCM_VR_CS, "CT", &err),
                     PACS_EINVAL);
    assert_non_null(strstr(err.msg, "below"));
    assert_int_equal(ident_query("STUDY", QUERY_STUDY_ROOT, T_MODALITY, DCM_VR_CS, "", &err),
                     PACS_EINVAL);
    assert_int_equal(ident_query("SERIES", QUERY_STUDY_ROOT, T_SOP_UID, DCM_VR_UI, "", &err),
                     PACS_EINVAL);
    assert_int_equal(ident_query("PATIENT", QUERY_PATIENT_ROOT, T_STUDY_DATE, DCM_VR_DA, "", &err),
                     PACS_EINVAL);
    assert_int_equal(ident_query("PATIENT", QUERY_PATIENT_ROOT, T_SERIES_INSTANCES, DCM_VR_IS, "",
                                 &err), PACS_EINVAL);
    assert_int_equal(ident_query("STUDY", QUERY_STUDY_ROOT, T_STUDY_DATE, DCM_VR_DA,
                                 "2020-2021-2022", &err), PACS_EINVAL);
    assert_int_equal(ident_query("STUDY", QUERY_STUDY_ROOT, T_STUDY_DATE, DCM_VR_DA, "abc-", &err),
                     PACS_EINVAL);
    assert_int_equal(ident_query("STUDY", QUERY_STUDY_ROOT, T_STUDY_TIME, DCM_VR_TM, "25-", &err),
                     PACS_EINVAL);
    assert_int_equal(ident_query("STUDY", QUERY_STUDY_ROOT, T_STUDY_DATE, DCM_VR_DA, "-", &err), 0);
    assert_int_equal(ident_query("STUDY", QUERY_STUDY_ROOT, T_STUDY_DATE, DCM_VR_DA,
                                 "20200101-20200102\\20210101", &err), PACS_EUNSUPPORTED);
    /* Matching on a binary value cannot be answered. */
    struct dcm_ds *id = dcm_ds_new();
    put(id, T_LEVEL, DCM_VR_CS, "IMAGE");
    assert_int_equal(dcm_ds_put(id, T_ENCAPS_DOC, DCM_VR_OB, "ab", 2, NULL), 0);
    struct query *q = NULL;
    assert_int_equal(query_from_identifier(id, QUERY_STUDY_ROOT, &q, &err), PACS_EUNSUPPORTED);
    assert_null(q);
    dcm_ds_free(id);
}

static void test_identifier_keys(void **state)
{
    (void)state;
    /* A full C-FIND identifier: charset, level, keys, an empty sequence, a
     * group length and a binary number. */
    struct dcm_ds *id = dcm_ds_new();
    uint8_t gl[4] = { 0 };
    assert_int_equal(dcm_ds_put(id, DCM_TAG(0x0008, 0x0000), DCM_VR_UL, gl, 4, NULL), 0);
    put(id, T_CHARSET, DCM_VR_CS, "ISO_IR 100");
    put(id, T_LEVEL, DCM_VR_CS, "SERIES");
    put(id, T_STUDY_UID, DCM_VR_UI, ST1);
    put(id, T_MODALITY, DCM_VR_CS, "");
    put(id, T_SERIES_NUM, DCM_VR_IS, "1 ");
    assert_int_equal(dcm_ds_put_seq(id, T_REQ_ATTR_SEQ, NULL), 0);
    uint8_t slices[2] = { 64, 0 };
    assert_int_equal(dcm_ds_put(id, T_SLICES, DCM_VR_US, slices, 2, NULL), 0);
    /* A standard tag sent as UN is read as its VR. */
    assert_int_equal(dcm_ds_put(id, T_PAT_NAME, DCM_VR_UN, "doe^john", 8, NULL), 0);
    /* Neither of these is a condition. */
    put(id, DCM_TAG(0x0008, 0x0053), DCM_VR_CS, "CLASSIC");
    put(id, DCM_TAG(0x0008, 0x0201), DCM_VR_SH, "+0100");
    struct query *q;
    struct pacs_err err = { 0 };
    if (query_from_identifier(id, QUERY_STUDY_ROOT, &q, &err) != 0)
        fail_msg("%s", err.msg);
    dcm_ds_free(id);
    assert_int_equal(query_level(q), INDEX_SERIES);
    struct answers a = { 0 };
    run(q, &a);
    query_free(q);
    assert_int_equal(a.n, 1);
    assert_string_equal(get(a.v[0], T_SERIES_UID), ST1 ".1");
    assert_string_equal(get(a.v[0], T_MODALITY), "CT");
    assert_string_equal(get(a.v[0], T_PAT_NAME), "Doe^John");
    assert_int_equal(dcm_ds_find(a.v[0], T_PAT_NAME)->vr, DCM_VR_PN);
    assert_null(dcm_ds_find(a.v[0], DCM_TAG(0x0008, 0x0053)));
    assert_non_null(dcm_ds_find(a.v[0], DCM_TAG(0x0008, 0x0201)));
    assert_null(dcm_ds_find(a.v[0], T_CHARSET));
    const struct dcm_elem *e = dcm_ds_find(a.v[0], T_REQ_ATTR_SEQ);
    assert_non_null(e);
    assert_int_equal(e->u.items.n, 1);
    answers_free(&a);
}

static void test_add_key(void **state)
{
    (void)state;
    struct query *q;
    struct pacs_err err = { 0 };
    assert_int_equal(query_new(INDEX_PATIENT, QUERY_STUDY_ROOT, &q), PACS_EINVAL);
    assert_null(q);
    assert_int_equal(query_new(INDEX_STUDY, QUERY_STUDY_ROOT, &q), 0);
    assert_int_equal(query_level(q), INDEX_STUDY);
    /* Replacing a key. */
    assert_int_equal(query_add_key(q, T_ACCESSION, "ACC1", &err), 0);
    assert_int_equal(query_add_key(q, T_ACCESSION, "ACC3", &err), 0);
    /* (0008,0005) and the level are no keys; NULL is a return key. */
    assert_int_equal(query_add_key(q, T_CHARSET, "ISO_IR 100", &err), 0);
    assert_int_equal(query_add_key(q, T_LEVEL, "PATIENT", &err), 0);
    assert_int_equal(query_add_key(q, T_STUDY_DESC, NULL, &err), 0);
    /* Group 0002 (Orthanc sends it) and group lengths are ignored; command
     * and item tags are not keys. */
    assert_int_equal(query_add_key(q, DCM_TAG(0x0002, 0x0010), "x", &err), 0);
    assert_int_equal(query_add_key(q, DCM_TAG(0x0010, 0x0000), "", &err), 0);
    assert_int_equal(query_add_key(q, DCM_TAG(0x0000, 0x0100), "1", &err), PACS_EINVAL);
    assert_int_equal(query_add_key(q, T_SOP_UID, "1.2", &err), PACS_EINVAL);
    assert_int_equal(query_add_key(q, T_STUDY_DATE, "x-y", &err), PACS_EINVAL);
    struct answers a = { 0 };
    run(q, &a);
    assert_int_equal(a.n, 1);
    assert_string_equal(get(a.v[0], T_STUDY_UID), ST3);
    assert_string_equal(get(a.v[0], T_STUDY_DESC), "R\xc3\xb6ntgen Thorax");
    assert_string_equal(get(a.v[0], T_LEVEL), "STUDY");
    answers_free(&a);
    query_free(q);
    query_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_patient_level),
        cmocka_unit_test(test_study_level_both_models),
        cmocka_unit_test(test_series_level),
        cmocka_unit_test(test_image_level),
        cmocka_unit_test(test_single_pn_case_insensitive),
        cmocka_unit_test(test_wildcards),
        cmocka_unit_test(test_wildcard_on_metadata),
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_uid_lists),
        cmocka_unit_test(test_numeric_main_tag),
        cmocka_unit_test(test_computed),
        cmocka_unit_test(test_return_keys),
        cmocka_unit_test(test_non_ascii_answers),
        cmocka_unit_test(test_include_main_and_all),
        cmocka_unit_test(test_limit_offset),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_identifier_errors),
        cmocka_unit_test(test_identifier_keys),
        cmocka_unit_test(test_add_key),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
