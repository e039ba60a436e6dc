/* Unit tests: the QIDO-RS query string parser (src/http/qido.h). What a
 * parsed query holds is checked by running it (query_run) on an archive
 * whose index is filled directly with synthetic records, as test_query.c
 * does: matching keys by the answers, return keys by the answers' content. */
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
#include "http/qido.h"
#include "store/index.h"
#include "util/config.h"
#include "util/log.h"
#include "archive_fixture.h"
#include "util/utf8.h"

#define T_CHARSET DCM_TAG(0x0008, 0x0005)
#define T_SOP_CLASS DCM_TAG(0x0008, 0x0016)
#define T_SOP_UID DCM_TAG(0x0008, 0x0018)
#define T_STUDY_DATE DCM_TAG(0x0008, 0x0020)
#define T_ACCESSION DCM_TAG(0x0008, 0x0050)
#define T_AVAILABILITY DCM_TAG(0x0008, 0x0056)
#define T_MODALITY DCM_TAG(0x0008, 0x0060)
#define T_MODS_IN_STUDY DCM_TAG(0x0008, 0x0061)
#define T_TZ DCM_TAG(0x0008, 0x0201)
#define T_STUDY_DESC DCM_TAG(0x0008, 0x1030)
#define T_MODEL_NAME DCM_TAG(0x0008, 0x1090)
#define T_RETRIEVE_URL DCM_TAG(0x0008, 0x1190)
#define T_PAT_NAME DCM_TAG(0x0010, 0x0010)
#define T_PAT_ID DCM_TAG(0x0010, 0x0020)
#define T_AGE DCM_TAG(0x0010, 0x1010)
#define T_STUDY_UID DCM_TAG(0x0020, 0x000d)
#define T_SERIES_UID DCM_TAG(0x0020, 0x000e)
#define T_STUDY_ID DCM_TAG(0x0020, 0x0010)
#define T_SERIES_NUM DCM_TAG(0x0020, 0x0011)
#define T_INST_NUM DCM_TAG(0x0020, 0x0013)
#define T_STUDY_SERIES DCM_TAG(0x0020, 0x1206)
#define T_STUDY_INSTANCES DCM_TAG(0x0020, 0x1208)
#define T_SERIES_INSTANCES DCM_TAG(0x0020, 0x1209)
#define T_ROWS DCM_TAG(0x0028, 0x0010)
#define T_COLUMNS DCM_TAG(0x0028, 0x0011)
#define T_REQ_ATTR_SEQ DCM_TAG(0x0040, 0x0275)
#define T_REQ_PROC_ID DCM_TAG(0x0040, 0x1001)

#define CT_CLASS "1.2.840.10008.5.1.4.1.1.2"
#define MR_CLASS "1.2.840.10008.5.1.4.1.1.4"
#define CR_CLASS "1.2.840.10008.5.1.4.1.1.1"
#define SR_CLASS "1.2.840.10008.5.1.4.1.1.88.11"

#define ST1 "1.2.826.0.1.3680043.2.1"
#define ST2 "1.2.826.0.1.3680043.2.2"
#define ST3 "1.2.826.0.1.3680043.2.3"
#define ST4 "1.2.826.0.1.3680043.2.4"

/* One synthetic instance; NULL fields are absent. */
struct inst {
    const char *pid, *pname, *age;
    const char *study, *sdate, *acc, *sdesc, *tz;
    const char *series, *modality, *snum, *model;
    const char *sop, *sop_class, *inum;
    uint16_t rows;
    const char *req_proc_id; /* RequestAttributesSequence item */
};

static const struct inst insts[] = {
    { "PID1", "Doe^John", "050Y", ST1, "20200115", "ACC1", "CT Chest", "+0100",
      ST1 ".1", "CT", "1", "Scanner X", ST1 ".1.1", CT_CLASS, "1", 512, "RP1" },
    { "PID1", "Doe^John", "050Y", ST1, "20200115", "ACC1", "CT Chest", "+0100",
      ST1 ".1", "CT", "1", "Scanner X", ST1 ".1.2", CT_CLASS, "2", 512, "RP1" },
    { "PID1", "Doe^John", "050Y", ST1, "20200115", "ACC1", "CT Chest", "+0100",
      ST1 ".2", "SR", "2", NULL, ST1 ".2.1", SR_CLASS, "1", 0, NULL },
    { "PID1", "Doe^John", "051Y", ST2, "20210310", "ACC2", "MR Brain", NULL,
      ST2 ".1", "MR", "1", "Magnet 3T", ST2 ".1.1", MR_CLASS, "1", 256, NULL },
    { "PID2", "M\xc3\xbcller^J\xc3\xbcrgen", "035Y", ST3, "20210311", "ACC 3", "R\xc3\xb6ntgen Thorax",
      NULL, ST3 ".1", "CR", "1", NULL, ST3 ".1.1", CR_CLASS, "1", 2048, NULL },
    { "PID3", "DOE^JANE", NULL, ST4, "20191231", "ACC+4", "CT Abdomen", NULL,
      ST4 ".1", "CT", "3", "Scanner Y", ST4 ".1.1", CT_CLASS, "1", 512, NULL },
};
#define N_INSTS (sizeof insts / sizeof insts[0])

static char g_dir[] = "/tmp/pacsd-test-qido-XXXXXX";
static struct pacs_config *g_cfg;
static struct archive *g_arch;

/* --- fixture --------------------------------------------------------------- */

static void put(struct dcm_ds *ds, uint32_t tag, uint16_t vr, const char *s)
{
    if (s)
        assert_int_equal(dcm_ds_put_str(ds, tag, vr, s), 0);
}

static struct dcm_ds *build_ds(const struct inst *in)
{
    struct dcm_ds *ds = dcm_ds_new();
    assert_non_null(ds);
    put(ds, T_CHARSET, DCM_VR_CS, "ISO_IR 192");
    put(ds, T_PAT_ID, DCM_VR_LO, in->pid);
    put(ds, T_PAT_NAME, DCM_VR_PN, in->pname);
    put(ds, T_AGE, DCM_VR_AS, in->age);
    put(ds, T_STUDY_UID, DCM_VR_UI, in->study);
    put(ds, T_STUDY_DATE, DCM_VR_DA, in->sdate);
    put(ds, T_ACCESSION, DCM_VR_SH, in->acc);
    put(ds, T_STUDY_DESC, DCM_VR_LO, in->sdesc);
    put(ds, T_TZ, DCM_VR_SH, in->tz);
    put(ds, T_SERIES_UID, DCM_VR_UI, in->series);
    put(ds, T_MODALITY, DCM_VR_CS, in->modality);
    put(ds, T_SERIES_NUM, DCM_VR_IS, in->snum);
    put(ds, T_MODEL_NAME, DCM_VR_LO, in->model);
    put(ds, T_SOP_UID, DCM_VR_UI, in->sop);
    put(ds, T_SOP_CLASS, DCM_VR_UI, in->sop_class);
    put(ds, T_INST_NUM, DCM_VR_IS, in->inum);
    if (in->rows) {
        uint8_t v[2] = { (uint8_t)(in->rows & 0xff), (uint8_t)(in->rows >> 8) };
        assert_int_equal(dcm_ds_put(ds, T_ROWS, DCM_VR_US, v, 2, NULL), 0);
        assert_int_equal(dcm_ds_put(ds, T_COLUMNS, DCM_VR_US, v, 2, NULL), 0);
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

/* --- helpers ------------------------------------------------------------------- */

#define MAX_ANSWERS 32

struct answers {
    struct dcm_ds *v[MAX_ANSWERS];
    size_t n;
};

static int collect(void *ctx, struct dcm_ds *ans)
{
    struct answers *a = ctx;
    assert_true(a->n < MAX_ANSWERS);
    a->v[a->n++] = ans;
    return 0;
}

static void answers_free(struct answers *a)
{
    for (size_t i = 0; i < a->n; i++)
        dcm_ds_free(a->v[i]);
    a->n = 0;
}

static const struct qido_scope no_scope = { NULL, NULL };

/* Parses qs, which must succeed. */
static void parse_ok(enum qido_resource res, const struct qido_scope *scope, const char *qs,
                     struct qido_request *r)
{
    struct pacs_err err = { 0 };
    int rc = qido_parse(res, scope, qs, r, &err);
    if (rc != 0)
        fail_msg("qido_parse(\"%s\"): %d %s", qs ? qs : "(null)", rc, err.msg);
    assert_non_null(r->q);
}

/* Parses and runs qs; returns the number of answers (kept in *a). */
static size_t run(enum qido_resource res, const struct qido_scope *scope, const char *qs,
                  struct answers *a)
{
    struct qido_request r;
    struct pacs_err err = { 0 };
    parse_ok(res, scope, qs, &r);
    int rc = query_run(g_arch, r.q, collect, a, &err);
    if (rc != 0)
        fail_msg("query_run(\"%s\"): %d %s", qs, rc, err.msg);
    qido_request_free(&r);
    return a->n;
}

static size_t count(enum qido_resource res, const char *qs)
{
    struct answers a = { 0 };
    size_t n = run(res, &no_scope, qs, &a);
    answers_free(&a);
    return n;
}

/* Parses qs, which must fail with `code` and exactly `msg` (NULL: any). */
static void parse_fails(enum qido_resource res, const struct qido_scope *scope, const char *qs,
                        int code, const char *msg)
{
    struct qido_request r;
    memset(&r, 0xa5, sizeof r);
    struct pacs_err err = { 0 };
    int rc = qido_parse(res, scope, qs, &r, &err);
    if (rc != code)
        fail_msg("qido_parse(\"%.80s\"): %d (%s), expected %d", qs, rc, err.msg, code);
    assert_int_equal(err.code, code);
    assert_true(err.msg[0] != '\0');
    assert_true(utf8_valid((const uint8_t *)err.msg, strlen(err.msg)));
    if (msg && strcmp(err.msg, msg) != 0)
        fail_msg("qido_parse(\"%.80s\"): message \"%s\", expected \"%s\"", qs, err.msg, msg);
    assert_null(r.q);
    assert_null(r.include);
    assert_null(r.accept);
    assert_null(r.charset);
    qido_request_free(&r);
}

static void bad(const char *qs, int code, const char *msg)
{
    parse_fails(QIDO_STUDIES, NULL, qs, code, msg);
}

/* The first value of tag in ds as a static string; NULL if absent, "" if empty. */
static const char *get(const struct dcm_ds *ds, uint32_t tag)
{
    static char buf[256];
    const struct dcm_elem *e = dcm_ds_find(ds, tag);
    if (!e)
        return NULL;
    if (e->len == 0)
        return "";
    if (e->vr == DCM_VR_US) {
        uint64_t v;
        assert_int_equal(dcm_elem_uint(e, 0, &v), 0);
        int n = snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
        assert_true(n > 0 && (size_t)n < sizeof buf);
        return buf;
    }
    const char *s;
    size_t n;
    assert_int_equal(dcm_elem_str(e, 0, &s, &n), 0);
    assert_true(n < sizeof buf);
    memcpy(buf, s, n);
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

/* --- no parameters: the defaults --------------------------------------------- */

static void test_empty_and_defaults(void **state)
{
    (void)state;
    struct qido_request r;
    parse_ok(QIDO_STUDIES, NULL, NULL, &r);
    assert_int_equal(r.resource, QIDO_STUDIES);
    assert_int_equal(r.limit, QIDO_MAX_LIMIT);
    assert_int_equal(r.offset, 0);
    assert_false(r.limit_given);
    assert_false(r.limit_clamped);
    assert_false(r.fuzzy);
    assert_false(r.include_all);
    assert_int_equal(r.n_include, 0);
    assert_null(r.accept);
    assert_null(r.charset);
    qido_request_free(&r);
    qido_request_free(&r); /* twice is fine */
    qido_request_free(NULL);

    /* "" and stray '&' are no parameters at all. */
    assert_int_equal(count(QIDO_STUDIES, ""), 4);
    assert_int_equal(count(QIDO_STUDIES, "&&"), 4);

    /* Table 10.6.3-3 at the study level. */
    struct answers a = { 0 };
    assert_int_equal(run(QIDO_STUDIES, &no_scope, NULL, &a), 4);
    const struct dcm_ds *s1 = find_answer(&a, T_STUDY_UID, ST1);
    assert_string_equal(get(s1, T_STUDY_DATE), "20200115");
    assert_string_equal(get(s1, T_ACCESSION), "ACC1");
    assert_string_equal(get(s1, T_AVAILABILITY), "ONLINE");
    assert_string_equal(get(s1, T_MODS_IN_STUDY), "CT");
    assert_string_equal(get(s1, T_TZ), "+0100");
    assert_string_equal(get(s1, T_PAT_NAME), "Doe^John");
    assert_string_equal(get(s1, T_PAT_ID), "PID1");
    assert_string_equal(get(s1, T_STUDY_SERIES), "2");
    assert_string_equal(get(s1, T_STUDY_INSTANCES), "3");
    assert_non_null(dcm_ds_find(s1, T_STUDY_ID));
    assert_string_equal(get(s1, T_STUDY_DESC), "CT Chest"); /* a main tag */
    assert_null(dcm_ds_find(s1, T_MODALITY));
    assert_null(dcm_ds_find(s1, T_RETRIEVE_URL)); /* the HTTP layer's */
    assert_null(dcm_ds_find(s1, T_AGE));
    answers_free(&a);

    /* All series: the series table and the study table. */
    assert_int_equal(run(QIDO_SERIES, &no_scope, NULL, &a), 5);
    const struct dcm_ds *se = find_answer(&a, T_SERIES_UID, ST1 ".1");
    assert_string_equal(get(se, T_MODALITY), "CT");
    assert_string_equal(get(se, T_SERIES_NUM), "1");
    assert_string_equal(get(se, T_SERIES_INSTANCES), "2");
    assert_string_equal(get(se, T_TZ), "+0100");
    assert_non_null(dcm_ds_find(se, T_REQ_ATTR_SEQ));
    assert_string_equal(get(se, T_STUDY_DATE), "20200115");
    assert_string_equal(get(se, T_STUDY_SERIES), "2");
    answers_free(&a);

    /* A study's series: the study table is not repeated. */
    struct qido_scope sc = { ST1, NULL };
    assert_int_equal(run(QIDO_SERIES, &sc, NULL, &a), 2);
    se = find_answer(&a, T_SERIES_UID, ST1 ".2");
    assert_string_equal(get(se, T_MODALITY), "SR");
    assert_null(dcm_ds_find(se, T_STUDY_DATE));
    answers_free(&a);

    /* Instances of a series: Rows etc. from the metadata. */
    struct qido_scope sc2 = { ST1, ST1 ".1" };
    assert_int_equal(run(QIDO_INSTANCES, &sc2, NULL, &a), 2);
    const struct dcm_ds *in = find_answer(&a, T_SOP_UID, ST1 ".1.2");
    assert_string_equal(get(in, T_SOP_CLASS), CT_CLASS);
    assert_string_equal(get(in, T_INST_NUM), "2");
    assert_string_equal(get(in, T_ROWS), "512");
    assert_string_equal(get(in, T_COLUMNS), "512");
    assert_string_equal(get(in, T_AVAILABILITY), "ONLINE");
    assert_null(dcm_ds_find(in, T_MODALITY));
    assert_null(dcm_ds_find(in, T_STUDY_DATE));
    answers_free(&a);

    /* All instances: study, series and instance tables. */
    assert_int_equal(run(QIDO_INSTANCES, &no_scope, NULL, &a), 6);
    in = find_answer(&a, T_SOP_UID, ST3 ".1.1");
    assert_string_equal(get(in, T_MODALITY), "CR");
    assert_string_equal(get(in, T_STUDY_DATE), "20210311");
    assert_string_equal(get(in, T_ROWS), "2048");
    in = find_answer(&a, T_SOP_UID, ST1 ".2.1");
    assert_string_equal(get(in, T_ROWS), ""); /* asked for, not known */
    answers_free(&a);
}

/* --- attribute IDs and values ---------------------------------------------------- */

static void test_keyword_and_tag(void **state)
{
    (void)state;
    assert_int_equal(count(QIDO_STUDIES, "PatientID=PID1"), 2);
    assert_int_equal(count(QIDO_STUDIES, "00100020=PID1"), 2);
    assert_int_equal(count(QIDO_STUDIES, "0020000d=" ST3), 1); /* hex in either case */
    assert_int_equal(count(QIDO_STUDIES, "0020000D=" ST3), 1);
    assert_int_equal(count(QIDO_STUDIES, "PatientID=PID1&StudyDate=20210310"), 1);
    assert_int_equal(count(QIDO_STUDIES, "PatientID=NOBODY"), 0);
    /* An empty value is universal matching: a return key. */
    struct answers a = { 0 };
    assert_int_equal(run(QIDO_STUDIES, &no_scope, "PatientAge=", &a), 4);
    assert_string_equal(get(find_answer(&a, T_STUDY_UID, ST1), T_AGE), "050Y");
    answers_free(&a);
    /* Matching on the stored metadata (not a main tag). */
    assert_int_equal(count(QIDO_STUDIES, "PatientAge=035Y"), 1);
    /* Keywords are case-sensitive, as PS3.6 spells them. */
    bad("Patientid=PID1", PACS_EINVAL, "Patientid: unknown attribute");
}

static void test_percent_decoding(void **state)
{
    (void)state;
    /* UTF-8 names, with wild cards; PN ignores ASCII case. */
    assert_int_equal(count(QIDO_STUDIES, "PatientName=M%C3%BCller*"), 1);
    assert_int_equal(count(QIDO_STUDIES, "PatientName=m%C3%BCller%5Ej%C3%BCrgen"), 1);
    assert_int_equal(count(QIDO_STUDIES, "StudyDescription=R%C3%B6ntgen*"), 1);
    /* '+' is a space, %2B a plus. */
    assert_int_equal(count(QIDO_STUDIES, "StudyDescription=CT+Chest"), 1);
    assert_int_equal(count(QIDO_STUDIES, "StudyDescription=CT%20Chest"), 1);
    assert_int_equal(count(QIDO_STUDIES, "AccessionNumber=ACC+3"), 1);
    assert_int_equal(count(QIDO_STUDIES, "AccessionNumber=ACC%2B4"), 1);
    assert_int_equal(count(QIDO_STUDIES, "AccessionNumber=ACC+4"), 0);
    /* Names are decoded too; so is '=' inside a value. */
    assert_int_equal(count(QIDO_STUDIES, "%50atient%49D=PID2"), 1);
    assert_int_equal(count(QIDO_STUDIES, "StudyDescription=a=b"), 0);

    bad("PatientName=%", PACS_EINVAL, "PatientName: invalid percent-encoding");
    bad("PatientName=%4", PACS_EINVAL, "PatientName: invalid percent-encoding");
    bad("PatientName=ab%G1", PACS_EINVAL, "PatientName: invalid percent-encoding");
    bad("PatientName=%%41", PACS_EINVAL, "PatientName: invalid percent-encoding");
    bad("Patient%G1=x", PACS_EINVAL, "Patient%G1: invalid percent-encoding in the name");
    bad("PatientName=%C3", PACS_EINVAL, "PatientName: the value is not valid UTF-8");
    bad("PatientName=%C0%AF", PACS_EINVAL, "PatientName: the value is not valid UTF-8");
    bad("PatientName=%ED%A0%80", PACS_EINVAL, "PatientName: the value is not valid UTF-8");
    bad("PatientName=a%00b", PACS_EINVAL, "PatientName: the value holds a control character");
    bad("PatientName=a%0Ab", PACS_EINVAL, "PatientName: the value holds a control character");
    bad("PatientName=a%7F", PACS_EINVAL, "PatientName: the value holds a control character");
    bad("Pat%FF=1", PACS_EINVAL, "Pat%FF: the name is not valid UTF-8");
    bad("PatientName=\xff", PACS_EINVAL, "PatientName: the value is not valid UTF-8");
    /* Raw bytes that are not UTF-8 never reach the message. */
    bad("Pat\xff\x01=1", PACS_EINVAL, "Pat??: the name is not valid UTF-8");
    /* A decoded UTF-8 name is quoted as such. */
    bad("PatientNam%C3%BC=1", PACS_EINVAL, "PatientNam\xc3\xbc: unknown attribute");
}

static void test_wildcard_and_range(void **state)
{
    (void)state;
    struct answers a = { 0 };
    assert_int_equal(run(QIDO_STUDIES, &no_scope, "PatientName=doe*", &a), 3);
    assert_true(has(&a, T_PAT_NAME, "Doe^John") && has(&a, T_PAT_NAME, "DOE^JANE"));
    answers_free(&a);
    assert_int_equal(count(QIDO_STUDIES, "PatientName=doe%5Ej*"), 3);
    assert_int_equal(count(QIDO_STUDIES, "PatientName=DOE%5EJ?NE"), 1);
    assert_int_equal(count(QIDO_STUDIES, "PatientName=*"), 4);
    assert_int_equal(count(QIDO_STUDIES, "StudyDate=20210101-"), 2);
    assert_int_equal(count(QIDO_STUDIES, "StudyDate=-20200115"), 2);
    assert_int_equal(count(QIDO_STUDIES, "StudyDate=20200101-20201231"), 1);
    assert_int_equal(count(QIDO_STUDIES, "StudyDate=-"), 4);
    assert_int_equal(count(QIDO_STUDIES, "ModalitiesInStudy=CT"), 2);
    assert_int_equal(count(QIDO_STUDIES, "ModalitiesInStudy=SR%5CMR"), 2);
    bad("StudyDate=2020-", PACS_EINVAL, "StudyDate: malformed range \"2020-\"");
    bad("00080020=2020-2021-2022", PACS_EINVAL, "00080020: malformed range \"2020-2021-2022\"");
}

/* --- includefield -------------------------------------------------------------- */

static void test_includefield(void **state)
{
    (void)state;
    struct answers a = { 0 };
    struct qido_request r;

    parse_ok(QIDO_STUDIES, NULL, "includefield=PatientAge,00081090&includefield=StudyID", &r);
    assert_false(r.include_all);
    assert_int_equal(r.n_include, 3);
    assert_int_equal(r.include[0], T_AGE);
    assert_int_equal(r.include[1], T_MODEL_NAME);
    assert_int_equal(r.include[2], T_STUDY_ID);
    qido_request_free(&r);

    assert_int_equal(run(QIDO_STUDIES, &no_scope, "includefield=PatientAge&includefield=00081090", &a), 4);
    const struct dcm_ds *s1 = find_answer(&a, T_STUDY_UID, ST1);
    assert_string_equal(get(s1, T_AGE), "050Y");
    assert_string_equal(get(s1, T_MODEL_NAME), "Scanner X");
    answers_free(&a);

    /* Spaces around the items, encoded commas, repeats of one attribute. */
    parse_ok(QIDO_STUDIES, NULL, "includefield=PatientAge,+StudyID+%2CPatientAge", &r);
    assert_int_equal(r.n_include, 2);
    qido_request_free(&r);

    /* A lower level's attribute is dropped, not refused (OHIF asks for
     * Modality in study searches). */
    parse_ok(QIDO_STUDIES, NULL, "includefield=00081030,00080060", &r);
    assert_int_equal(r.n_include, 2);
    qido_request_free(&r);
    assert_int_equal(run(QIDO_STUDIES, &no_scope, "includefield=00081030,00080060,SOPInstanceUID", &a), 4);
    assert_null(dcm_ds_find(a.v[0], T_MODALITY));
    assert_null(dcm_ds_find(a.v[0], T_SOP_UID));
    answers_free(&a);
    assert_int_equal(count(QIDO_STUDIES, "includefield=NumberOfSeriesRelatedInstances"), 4);

    /* An includefield does not undo a matching key of the same attribute,
     * whichever comes first. */
    assert_int_equal(count(QIDO_STUDIES, "PatientID=PID2&includefield=PatientID"), 1);
    assert_int_equal(count(QIDO_STUDIES, "includefield=PatientID&PatientID=PID2"), 1);
    assert_int_equal(count(QIDO_STUDIES, "ModalitiesInStudy=MR"), 1); /* also a default key */

    /* all */
    parse_ok(QIDO_STUDIES, NULL, "includefield=all", &r);
    assert_true(r.include_all);
    assert_int_equal(r.n_include, 0);
    qido_request_free(&r);
    assert_int_equal(run(QIDO_STUDIES, &no_scope, "includefield=all&PatientID=PID2", &a), 1);
    assert_string_equal(get(a.v[0], T_AGE), "035Y");
    answers_free(&a);
    parse_ok(QIDO_STUDIES, NULL, "includefield=StudyID,all", &r);
    assert_true(r.include_all);
    qido_request_free(&r);

    /* A path returns its top-level sequence; RetrieveURL is the caller's. */
    assert_int_equal(run(QIDO_SERIES, &no_scope,
                         "includefield=RequestAttributesSequence.RequestedProcedureID,RetrieveURL&"
                         "SeriesInstanceUID=" ST1 ".1", &a), 1);
    assert_non_null(dcm_ds_find(a.v[0], T_REQ_ATTR_SEQ));
    assert_null(dcm_ds_find(a.v[0], T_RETRIEVE_URL));
    answers_free(&a);

    bad("includefield=", PACS_EINVAL, "includefield: empty value");
    bad("includefield", PACS_EINVAL, "includefield: empty value");
    bad("includefield=PatientName,,StudyDate", PACS_EINVAL, "includefield: empty attribute in the list");
    bad("includefield=PatientName,", PACS_EINVAL, "includefield: empty attribute in the list");
    bad("includefield=PatientNam", PACS_EINVAL, "includefield: PatientNam: unknown attribute");
    bad("includefield=ALL", PACS_EINVAL, "includefield: ALL: unknown attribute");
    bad("includefield=PatientName.PatientID", PACS_EINVAL,
        "includefield: PatientName.PatientID: (0010,0010) is not a sequence");
    bad("includefield=00020010", PACS_EINVAL,
        "includefield: 00020010: (0002,0010) is not a query attribute");
}

/* --- limit, offset, flags ---------------------------------------------------------- */

static void test_limit_offset(void **state)
{
    (void)state;
    struct qido_request r;
    parse_ok(QIDO_STUDIES, NULL, "limit=2&offset=1", &r);
    assert_int_equal(r.limit, 2);
    assert_int_equal(r.offset, 1);
    assert_true(r.limit_given);
    assert_false(r.limit_clamped);
    qido_request_free(&r);
    assert_int_equal(count(QIDO_STUDIES, "limit=2"), 2);
    assert_int_equal(count(QIDO_STUDIES, "limit=2&offset=3"), 1);
    assert_int_equal(count(QIDO_STUDIES, "offset=4"), 0);
    assert_int_equal(count(QIDO_STUDIES, "offset=0&limit=10"), 4);
    assert_int_equal(count(QIDO_INSTANCES, "limit=5&PatientID=PID1"), 4);

    /* limit=0: no results, the caller answers 204; q stays cheap. */
    parse_ok(QIDO_STUDIES, NULL, "limit=0", &r);
    assert_int_equal(r.limit, 0);
    assert_true(r.limit_given);
    qido_request_free(&r);
    assert_int_equal(count(QIDO_STUDIES, "limit=0"), 1);

    /* Past the maximum: clamped. */
    parse_ok(QIDO_STUDIES, NULL, "limit=10001", &r);
    assert_int_equal(r.limit, QIDO_MAX_LIMIT);
    assert_true(r.limit_clamped);
    qido_request_free(&r);
    parse_ok(QIDO_STUDIES, NULL, "limit=10000", &r);
    assert_int_equal(r.limit, QIDO_MAX_LIMIT);
    assert_false(r.limit_clamped);
    qido_request_free(&r);
    parse_ok(QIDO_STUDIES, NULL, "limit=99999999999999999999999999999", &r);
    assert_int_equal(r.limit, QIDO_MAX_LIMIT);
    assert_true(r.limit_clamped);
    qido_request_free(&r);
    parse_ok(QIDO_STUDIES, NULL, "offset=1000000000&limit=007", &r);
    assert_int_equal(r.offset, QIDO_MAX_OFFSET);
    assert_int_equal(r.limit, 7);
    qido_request_free(&r);

    bad("limit=-1", PACS_EINVAL, "limit: must be a non-negative integer");
    bad("limit=abc", PACS_EINVAL, "limit: must be a non-negative integer");
    bad("limit=", PACS_EINVAL, "limit: must be a non-negative integer");
    bad("limit", PACS_EINVAL, "limit: must be a non-negative integer");
    bad("limit=1.5", PACS_EINVAL, "limit: must be a non-negative integer");
    bad("limit=+1", PACS_EINVAL, "limit: must be a non-negative integer");
    bad("limit=0x10", PACS_EINVAL, "limit: must be a non-negative integer");
    bad("limit=1&limit=2", PACS_EINVAL, "limit: given more than once");
    bad("offset=-3", PACS_EINVAL, "offset: must be a non-negative integer");
    bad("offset=1000000001", PACS_ELIMIT, "offset: larger than 1000000000");
    bad("offset=99999999999999999999999", PACS_ELIMIT, "offset: larger than 1000000000");
    bad("offset=1&offset=1", PACS_EINVAL, "offset: given more than once");
}

static void test_flags(void **state)
{
    (void)state;
    struct qido_request r;
    parse_ok(QIDO_STUDIES, NULL, "fuzzymatching=true", &r);
    assert_true(r.fuzzy);
    qido_request_free(&r);
    parse_ok(QIDO_STUDIES, NULL, "fuzzymatching=false", &r);
    assert_false(r.fuzzy);
    qido_request_free(&r);
    /* Matching is the same either way. */
    assert_int_equal(count(QIDO_STUDIES, "fuzzymatching=true&PatientName=doe*"), 3);
    bad("fuzzymatching=yes", PACS_EINVAL, "fuzzymatching: must be true or false");
    bad("fuzzymatching=TRUE", PACS_EINVAL, "fuzzymatching: must be true or false");
    bad("fuzzymatching", PACS_EINVAL, "fuzzymatching: must be true or false");
    bad("fuzzymatching=true&fuzzymatching=true", PACS_EINVAL, "fuzzymatching: given more than once");

    parse_ok(QIDO_STUDIES, NULL, "emptyvaluematching=false&multiplevaluematching=true", &r);
    qido_request_free(&r);
    parse_ok(QIDO_STUDIES, NULL, "multiplevaluematching=false", &r);
    qido_request_free(&r);
    bad("emptyvaluematching=true", PACS_EUNSUPPORTED,
        "emptyvaluematching: true is not supported (an empty value matches everything)");
    bad("multiplevaluematching=1", PACS_EINVAL, "multiplevaluematching: must be true or false");

    parse_ok(QIDO_STUDIES, NULL, "accept=application%2Fdicom%2Bjson&charset=utf-8&accept=*/*", &r);
    assert_string_equal(r.accept, "application/dicom+json,*/*");
    assert_string_equal(r.charset, "utf-8");
    qido_request_free(&r);
    parse_ok(QIDO_STUDIES, NULL, "accept=", &r);
    assert_string_equal(r.accept, "");
    qido_request_free(&r);
}

/* --- errors: names, levels, repeats, limits ---------------------------------------- */

static void test_unknown_params(void **state)
{
    (void)state;
    bad("PatientNam=x", PACS_EINVAL, "PatientNam: unknown attribute");
    bad("0010001G=x", PACS_EINVAL, "0010001G: unknown attribute");
    bad("001000100=x", PACS_EINVAL, "001000100: unknown attribute");
    bad("foo=1", PACS_EINVAL, "foo: unknown parameter");
    bad("patientName=x", PACS_EINVAL, "patientName: unknown parameter");
    bad("includeField=PatientName", PACS_EINVAL, "includeField: unknown parameter");
    bad("_=12345", PACS_EINVAL, "_: unknown parameter");
    bad("PatientID=1&=x", PACS_EINVAL, "query string: a parameter without a name");
    bad("=", PACS_EINVAL, "query string: a parameter without a name");
    bad("ReferencedSeriesSequence.Bogus=", PACS_EINVAL,
        "ReferencedSeriesSequence.Bogus: unknown attribute \"Bogus\" in the path");
    bad("PatientName.=", PACS_EINVAL,
        "PatientName.: unknown attribute \"\" in the path");
    /* Not query attributes. */
    bad("00020010=1.2", PACS_EINVAL, "00020010: (0002,0010) is not a query attribute");
    bad("00100000=", PACS_EINVAL, "00100000: (0010,0000) is not a query attribute");
    bad("FFFEE000=", PACS_EINVAL, "FFFEE000: (FFFE,E000) is not a query attribute");
    bad("fffee000=", PACS_EINVAL, "fffee000: (FFFE,E000) is not a query attribute");
    bad("fffee00g=", PACS_EINVAL, "fffee00g: unknown parameter");
    bad("QueryRetrieveLevel=STUDY", PACS_EINVAL,
        "QueryRetrieveLevel: (0008,0052) is not a query attribute");
    bad("SpecificCharacterSet=ISO_IR+100", PACS_EINVAL,
        "SpecificCharacterSet: not a matching key (QIDO-RS values are UTF-8)");
    bad("RetrieveURL=http://x", PACS_EINVAL, "RetrieveURL: cannot be matched");
    assert_int_equal(count(QIDO_STUDIES, "RetrieveURL=&SpecificCharacterSet="), 4);
    /* A private tag may be returned, not matched (its VR is unknown). */
    assert_int_equal(count(QIDO_STUDIES, "00091001="), 4);
    bad("00091001=x", PACS_EUNSUPPORTED, NULL);
}

static void test_below_level(void **state)
{
    (void)state;
    bad("SOPInstanceUID=1.2.3", PACS_EINVAL, "SOPInstanceUID: not a key at the study level");
    bad("Modality=CT", PACS_EINVAL, "Modality: not a key at the study level");
    bad("00080060=", PACS_EINVAL, "00080060: not a key at the study level");
    bad("NumberOfSeriesRelatedInstances=1", PACS_EINVAL,
        "NumberOfSeriesRelatedInstances: not a key at the study level");
    parse_fails(QIDO_SERIES, NULL, "SOPInstanceUID=", PACS_EINVAL,
                "SOPInstanceUID: not a key at the series level");
    parse_fails(QIDO_SERIES, NULL, "InstanceNumber=1", PACS_EINVAL,
                "InstanceNumber: not a key at the series level");
    /* Keys of the levels above are fine (relational). */
    assert_int_equal(count(QIDO_SERIES, "PatientName=doe*"), 4);
    assert_int_equal(count(QIDO_SERIES, "PatientID=PID1&Modality=CT"), 1);
    assert_int_equal(count(QIDO_INSTANCES, "PatientID=PID1"), 4);
    assert_int_equal(count(QIDO_INSTANCES, "StudyDate=20200115&Modality=CT"), 2);
    assert_int_equal(count(QIDO_INSTANCES, "ModalitiesInStudy=CT"), 4);
    /* Attributes only the metadata knows belong to any level. */
    assert_int_equal(count(QIDO_STUDIES, "ManufacturerModelName=Scanner*"), 2);
}

static void test_repeats_and_uid_lists(void **state)
{
    (void)state;
    /* Comma-separated, repeated, both, and encoded commas. */
    assert_int_equal(count(QIDO_STUDIES, "StudyInstanceUID=" ST1 "," ST3), 2);
    assert_int_equal(count(QIDO_STUDIES, "StudyInstanceUID=" ST1 "&StudyInstanceUID=" ST4), 2);
    assert_int_equal(count(QIDO_STUDIES, "StudyInstanceUID=" ST1 "," ST2 "&0020000D=" ST4), 3);
    assert_int_equal(count(QIDO_STUDIES, "StudyInstanceUID=" ST1 "%2C" ST3), 2);
    assert_int_equal(count(QIDO_STUDIES, "StudyInstanceUID=" ST1 "%5C" ST3), 2);
    assert_int_equal(count(QIDO_STUDIES, "StudyInstanceUID=" ST1 ",,"), 1);
    assert_int_equal(count(QIDO_STUDIES, "StudyInstanceUID=&StudyInstanceUID="), 4);
    assert_int_equal(count(QIDO_INSTANCES, "SOPInstanceUID=" ST1 ".1.1," ST4 ".1.1,9.9"), 2);
    assert_int_equal(count(QIDO_SERIES, "SeriesInstanceUID=" ST1 ".1&SeriesInstanceUID=" ST1 ".2"), 2);
    /* Only UID attributes may repeat; a comma elsewhere is a character. */
    bad("PatientID=PID1&PatientID=PID2", PACS_EINVAL,
        "PatientID: given more than once (only UID attributes may be repeated)");
    bad("PatientID=PID1&00100020=PID2", PACS_EINVAL,
        "00100020: given more than once (only UID attributes may be repeated)");
    bad("PatientName=a&PatientName=", PACS_EINVAL, NULL);
    assert_int_equal(count(QIDO_STUDIES, "PatientID=PID1,PID2"), 0);
}

static void test_scopes(void **state)
{
    (void)state;
    struct answers a = { 0 };
    struct qido_scope st1 = { ST1, NULL };
    assert_int_equal(run(QIDO_SERIES, &st1, NULL, &a), 2);
    assert_true(has(&a, T_SERIES_UID, ST1 ".1") && has(&a, T_SERIES_UID, ST1 ".2"));
    answers_free(&a);
    assert_int_equal(run(QIDO_SERIES, &st1, "Modality=SR", &a), 1);
    answers_free(&a);
    assert_int_equal(run(QIDO_INSTANCES, &st1, NULL, &a), 3);
    answers_free(&a);
    assert_int_equal(run(QIDO_INSTANCES, &st1, "InstanceNumber=1", &a), 2);
    answers_free(&a);
    struct qido_scope se = { ST1, ST1 ".1" };
    assert_int_equal(run(QIDO_INSTANCES, &se, NULL, &a), 2);
    answers_free(&a);
    struct qido_scope other = { ST2, ST1 ".1" }; /* a series of another study */
    assert_int_equal(run(QIDO_INSTANCES, &other, NULL, &a), 0);
    struct qido_scope none = { "9.9.9", NULL };
    assert_int_equal(run(QIDO_SERIES, &none, NULL, &a), 0);

    /* The path fixes the UID: not again in the query string. */
    parse_fails(QIDO_SERIES, &st1, "StudyInstanceUID=" ST1, PACS_EINVAL,
                "StudyInstanceUID: already given by the path");
    parse_fails(QIDO_INSTANCES, &se, "0020000E=", PACS_EINVAL,
                "0020000E: already given by the path");
    /* Scopes that no route makes. */
    parse_fails(QIDO_STUDIES, &st1, NULL, PACS_EINVAL, NULL);
    parse_fails(QIDO_SERIES, &se, NULL, PACS_EINVAL, NULL);
    struct qido_scope orphan = { NULL, ST1 ".1" };
    parse_fails(QIDO_INSTANCES, &orphan, NULL, PACS_EINVAL, NULL);
    parse_fails((enum qido_resource)7, NULL, NULL, PACS_EINVAL, NULL);
    /* UIDs that cannot be a UID. */
    struct qido_scope s_empty = { "", NULL };
    parse_fails(QIDO_SERIES, &s_empty, NULL, PACS_EINVAL, "study UID in the path: not a valid UID");
    struct qido_scope s_list = { ST1 "\\" ST2, NULL };
    parse_fails(QIDO_SERIES, &s_list, NULL, PACS_EINVAL, NULL);
    struct qido_scope s_comma = { ST1 "," ST2, NULL };
    parse_fails(QIDO_SERIES, &s_comma, NULL, PACS_EINVAL, NULL);
    struct qido_scope s_long = { "1.2345678901234567890123456789012345678901234567890123456789012345", NULL };
    parse_fails(QIDO_SERIES, &s_long, NULL, PACS_EINVAL, NULL);
    struct qido_scope s_series = { ST1, "1 2" };
    parse_fails(QIDO_INSTANCES, &s_series, NULL, PACS_EINVAL,
                "series UID in the path: not a valid UID");
}

static void test_sequences(void **state)
{
    (void)state;
    struct answers a = { 0 };
    parse_fails(QIDO_SERIES, NULL, "RequestAttributesSequence.RequestedProcedureID=RP1",
                PACS_EUNSUPPORTED,
                "RequestAttributesSequence.RequestedProcedureID: matching inside a sequence is not supported");
    parse_fails(QIDO_SERIES, NULL, "00400275.00401001=RP1", PACS_EUNSUPPORTED, NULL);
    parse_fails(QIDO_SERIES, NULL, "RequestAttributesSequence=RP1", PACS_EUNSUPPORTED,
                "RequestAttributesSequence: a sequence can be returned, not matched (give it no value)");
    /* Without a value: the whole sequence comes back. */
    assert_int_equal(run(QIDO_STUDIES, &no_scope,
                         "ReferencedStudySequence.ReferencedSOPInstanceUID=&PatientID=PID2", &a), 1);
    assert_non_null(dcm_ds_find(a.v[0], DCM_TAG(0x0008, 0x1110)));
    answers_free(&a);
    bad("PatientName.PatientID=", PACS_EINVAL,
        "PatientName.PatientID: (0010,0010) is not a sequence");
    bad("ReferencedStudySequence.ReferencedStudySequence.ReferencedStudySequence."
        "ReferencedStudySequence.ReferencedStudySequence.ReferencedStudySequence."
        "ReferencedStudySequence.ReferencedStudySequence.PatientID=",
        PACS_ELIMIT, NULL);
}

static void test_size_limits(void **state)
{
    (void)state;
    size_t n = QIDO_MAX_QUERY_LEN + 1;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memcpy(big, "PatientID=", 10);
    memset(big + 10, 'x', n - 10);
    big[n] = '\0';
    bad(big, PACS_ELIMIT, "query string: longer than 65536 bytes");
    big[n - 1] = '\0'; /* exactly the limit: fine */
    struct qido_request r;
    parse_ok(QIDO_STUDIES, NULL, big, &r);
    qido_request_free(&r);

    /* Too many parameters, counted before anything is looked up. */
    size_t o = 0;
    for (unsigned i = 0; i <= QIDO_MAX_PARAMS; i++) {
        memcpy(big + o, "StudyInstanceUID=1&", 19);
        o += 19;
    }
    big[o] = '\0';
    bad(big, PACS_ELIMIT, "query string: more than 1024 parameters");
    /* includefield items count too. */
    o = 0;
    memcpy(big + o, "includefield=", 13);
    o += 13;
    for (unsigned i = 0; i <= QIDO_MAX_PARAMS; i++) {
        memcpy(big + o, "StudyID,", 8);
        o += 8;
    }
    big[o - 1] = '\0';
    bad(big, PACS_ELIMIT, "includefield: more than 1024 parameters");
    /* A UID list of 1000 values by repetition is fine. */
    o = 0;
    for (unsigned i = 0; i < 1000; i++) {
        int k = snprintf(big + o, n + 1 - o, "StudyInstanceUID=1.2.%u&", i);
        assert_true(k > 0 && (size_t)k < n + 1 - o);
        o += (size_t)k;
    }
    int k = snprintf(big + o, n + 1 - o, "StudyInstanceUID=" ST2);
    assert_true(k > 0 && (size_t)k < n + 1 - o);
    assert_int_equal(count(QIDO_STUDIES, big), 1);
    free(big);
}

static void test_messages(void **state)
{
    (void)state;
    /* Long names are cut (at a character boundary) in the message. */
    char name[300];
    size_t o = 0;
    for (; o + 2 < 200; o += 2)
        memcpy(name + o, "\xc3\xa9", 2);
    memcpy(name + o, "=1", 3);
    struct qido_request r;
    struct pacs_err err = { 0 };
    assert_int_equal(qido_parse(QIDO_STUDIES, NULL, name, &r, &err), PACS_EINVAL);
    assert_true(utf8_valid((const uint8_t *)err.msg, strlen(err.msg)));
    assert_non_null(strstr(err.msg, "...: unknown parameter"));
    assert_true(strlen(err.msg) < 100);
    /* A malformed range quoting UTF-8 past query.c's cut stays UTF-8. */
    char qs[400];
    o = 0;
    memcpy(qs, "StudyDate=1", 11); /* odd: query.c's 64-byte cut splits a character */
    o = 11;
    for (int i = 0; i < 60; i++) {
        memcpy(qs + o, "%C3%A9", 6);
        o += 6;
    }
    memcpy(qs + o, "-", 2);
    assert_int_equal(qido_parse(QIDO_STUDIES, NULL, qs, &r, &err), PACS_EINVAL);
    assert_true(utf8_valid((const uint8_t *)err.msg, strlen(err.msg)));
    assert_true(strncmp(err.msg, "StudyDate: malformed range", 26) == 0);
    /* err may be NULL. */
    assert_int_equal(qido_parse(QIDO_STUDIES, NULL, "foo=1", &r, NULL), PACS_EINVAL);
    assert_null(r.q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_and_defaults),
        cmocka_unit_test(test_keyword_and_tag),
        cmocka_unit_test(test_percent_decoding),
        cmocka_unit_test(test_wildcard_and_range),
        cmocka_unit_test(test_includefield),
        cmocka_unit_test(test_limit_offset),
        cmocka_unit_test(test_flags),
        cmocka_unit_test(test_unknown_params),
        cmocka_unit_test(test_below_level),
        cmocka_unit_test(test_repeats_and_uid_lists),
        cmocka_unit_test(test_scopes),
        cmocka_unit_test(test_sequences),
        cmocka_unit_test(test_size_limits),
        cmocka_unit_test(test_messages),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
