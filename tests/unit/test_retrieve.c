/* Unit tests: the retrieve path (src/archive/retrieve.h), on an archive
 * whose blobs are real Part 10 files and whose index rows are inserted
 * directly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "archive/archive.h"
#include "archive/retrieve.h"
#include "dicom/json.h"
#include "dicom/reader.h"
#include "dicom/writer.h"
#include "store/index.h"
#include "util/config.h"
#include "util/log.h"
#include "archive_fixture.h"

#define T_LEVEL DCM_TAG(0x0008, 0x0052)
#define T_SOP_CLASS DCM_TAG(0x0008, 0x0016)
#define T_SOP_UID DCM_TAG(0x0008, 0x0018)
#define T_MODALITY DCM_TAG(0x0008, 0x0060)
#define T_MODEL_NAME DCM_TAG(0x0008, 0x1090)
#define T_PAT_NAME DCM_TAG(0x0010, 0x0010)
#define T_PAT_ID DCM_TAG(0x0010, 0x0020)
#define T_STUDY_UID DCM_TAG(0x0020, 0x000d)
#define T_SERIES_UID DCM_TAG(0x0020, 0x000e)
#define T_ROWS DCM_TAG(0x0028, 0x0010)

#define CT_CLASS "1.2.840.10008.5.1.4.1.1.2"
#define MR_CLASS "1.2.840.10008.5.1.4.1.1.4"

#define SA "1.2.826.0.1.3680043.9.1"
#define SB "1.2.826.0.1.3680043.9.2"
#define SC "1.2.826.0.1.3680043.9.3"

struct inst {
    const char *pid, *study, *series, *sop, *sop_class, *modality, *model;
};

static const struct inst insts[] = {
    { "PID1", SA, SA ".1", SA ".1.1", CT_CLASS, "CT", "Scanner X" },
    { "PID1", SA, SA ".1", SA ".1.2", CT_CLASS, "CT", "Scanner X" },
    { "PID1", SA, SA ".2", SA ".2.1", CT_CLASS, "CT", "Scanner X" },
    { "PID1", SB, SB ".1", SB ".1.1", MR_CLASS, "MR", "Magnet" },
    { "PID2", SC, SC ".1", SC ".1.1", MR_CLASS, "MR", "Magnet" },
};
#define N_INSTS (sizeof insts / sizeof insts[0])

static char g_dir[] = "/tmp/pacsd-test-retrieve-XXXXXX";
static struct pacs_config *g_cfg;
static struct archive *g_arch;
/* The bytes stored for each instance, and where their data set starts. */
static struct dynbuf g_file[N_INSTS];
static uint64_t g_ds_offset[N_INSTS];

/* --- fixture --------------------------------------------------------------- */

static void put(struct dcm_ds *ds, uint32_t tag, uint16_t vr, const char *s)
{
    assert_int_equal(dcm_ds_put_str(ds, tag, vr, s), 0);
}

static struct dcm_ds *build_ds(const struct inst *in, size_t i)
{
    struct dcm_ds *ds = dcm_ds_new();
    assert_non_null(ds);
    put(ds, T_SOP_CLASS, DCM_VR_UI, in->sop_class);
    put(ds, T_SOP_UID, DCM_VR_UI, in->sop);
    put(ds, T_MODALITY, DCM_VR_CS, in->modality);
    put(ds, T_MODEL_NAME, DCM_VR_LO, in->model);
    put(ds, T_PAT_NAME, DCM_VR_PN, "Test^Patient");
    put(ds, T_PAT_ID, DCM_VR_LO, in->pid);
    put(ds, T_STUDY_UID, DCM_VR_UI, in->study);
    put(ds, T_SERIES_UID, DCM_VR_UI, in->series);
    uint8_t rows[2] = { (uint8_t)(16 + i), 0 };
    assert_int_equal(dcm_ds_put(ds, T_ROWS, DCM_VR_US, rows, 2, NULL), 0);
    /* Some pixel-like bytes so files differ in size and content. */
    uint8_t px[300];
    for (size_t k = 0; k < sizeof px; k++)
        px[k] = (uint8_t)(k * 7 + i);
    assert_int_equal(dcm_ds_put(ds, DCM_TAG_PIXEL_DATA, DCM_VR_OW, px, (uint32_t)(100 + 50 * i), NULL), 0);
    return ds;
}

static void put_blob(const char *key, const struct dynbuf *bytes)
{
    struct blob_store *bs = archive_blobs(g_arch);
    struct blob_writer *w;
    struct pacs_err err = { 0 };
    if (bs->ops->put_begin(bs, key, &w, &err) != 0)
        fail_msg("put_begin: %s", err.msg);
    /* In two writes, as a stream would arrive. */
    size_t half = bytes->len / 2;
    assert_int_equal(bs->ops->put_write(w, bytes->data, half, &err), 0);
    assert_int_equal(bs->ops->put_write(w, bytes->data + half, bytes->len - half, &err), 0);
    if (bs->ops->put_commit(w, &err) != 0)
        fail_msg("put_commit: %s", err.msg);
}

static int setup(void **state)
{
    (void)state;
    struct pacs_err err = { 0 };
    fixture_open(g_dir, &g_cfg, &g_arch);
    struct fixture_rec recs[N_INSTS];
    struct dcm_file f[N_INSTS];
    char keys[N_INSTS][16];
    for (size_t i = 0; i < N_INSTS; i++) {
        struct dcm_ds *ds = build_ds(&insts[i], i);
        dynbuf_init(&g_file[i], 0);
        struct dcm_sink sink = dcm_sink_dynbuf(&g_file[i]);
        if (dcm_write_part10(ds, NULL, &sink, &err) != 0)
            fail_msg("dcm_write_part10: %s", err.msg);
        dcm_ds_free(ds);
        /* Index what ingest would: the file as read back, up to Pixel Data. */
        struct dcm_read_opts ro = { .stop_tag = DCM_TAG_PIXEL_DATA, .copy_values = true };
        if (dcm_read_part10(g_file[i].data, g_file[i].len, &ro, &f[i], &err) != 0)
            fail_msg("dcm_read_part10: %s", err.msg);
        g_ds_offset[i] = f[i].ds_offset;
        int n = snprintf(keys[i], sizeof keys[i], "r%03zu", i);
        assert_true(n > 0 && (size_t)n < sizeof keys[i]);
        put_blob(keys[i], &g_file[i]);
        recs[i] = (struct fixture_rec){ .ds = f[i].ds, .blob_key = keys[i],
                                        .transfer_syntax = DCM_UID_EXPLICIT_LE,
                                        .size = g_file[i].len, .ds_offset = g_ds_offset[i] };
    }
    struct blob_store *bs = archive_blobs(g_arch);
    assert_int_equal(bs->ops->sync(bs, &err), 0);
    fixture_insert(g_arch, recs, N_INSTS);
    for (size_t i = 0; i < N_INSTS; i++)
        dcm_file_free(&f[i]);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fixture_close(g_dir, g_cfg, g_arch);
    for (size_t i = 0; i < N_INSTS; i++)
        dynbuf_free(&g_file[i]);
    return 0;
}

/* --- helpers ------------------------------------------------------------------ */

/* An identifier with the level and up to four (tag, value) pairs. */
static struct dcm_ds *ident(const char *level, uint32_t t1, const char *v1, uint32_t t2,
                            const char *v2, uint32_t t3, const char *v3)
{
    struct dcm_ds *ds = dcm_ds_new();
    assert_non_null(ds);
    if (level)
        put(ds, T_LEVEL, DCM_VR_CS, level);
    uint32_t tags[3] = { t1, t2, t3 };
    const char *vals[3] = { v1, v2, v3 };
    for (int i = 0; i < 3; i++)
        if (tags[i])
            put(ds, tags[i], dcm_dict_vr(tags[i]), vals[i]);
    return ds;
}

static int retrieve(struct dcm_ds *id, enum query_model model, struct retrieve_list *l,
                    struct pacs_err *err)
{
    int rc = retrieve_from_identifier(g_arch, id, model, l, err);
    dcm_ds_free(id);
    if (rc)
        assert_int_equal(l->n, 0);
    return rc;
}

static bool listed(const struct retrieve_list *l, const char *sop)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->items[i].sop_instance_uid, sop) == 0)
            return true;
    return false;
}

static size_t inst_index(const char *sop)
{
    for (size_t i = 0; i < N_INSTS; i++)
        if (strcmp(insts[i].sop, sop) == 0)
            return i;
    fail_msg("unknown instance %s", sop);
    return 0;
}

/* --- tests ----------------------------------------------------------------------- */

static void test_patient_level(void **state)
{
    (void)state;
    struct retrieve_list l = { 0 };
    struct pacs_err err = { 0 };
    if (retrieve(ident("PATIENT", T_PAT_ID, "PID1", 0, NULL, 0, NULL), QUERY_PATIENT_ROOT, &l, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(l.n, 4);
    for (size_t i = 0; i < 4; i++)
        assert_true(listed(&l, insts[i].sop));
    /* Every field of an item. */
    for (size_t k = 0; k < l.n; k++) {
        const struct retrieve_item *it = &l.items[k];
        size_t i = inst_index(it->sop_instance_uid);
        assert_string_equal(it->sop_class_uid, insts[i].sop_class);
        assert_string_equal(it->study_uid, insts[i].study);
        assert_string_equal(it->series_uid, insts[i].series);
        assert_string_equal(it->transfer_syntax, DCM_UID_EXPLICIT_LE);
        assert_int_equal(it->size, g_file[i].len);
        assert_int_equal(it->ds_offset, g_ds_offset[i]);
        assert_true(blob_key_valid(it->blob_key));
    }
    retrieve_list_free(&l);
    assert_null(l.items);
    assert_int_equal(l.n, 0);
}

static void test_study_level(void **state)
{
    (void)state;
    struct retrieve_list l = { 0 };
    struct pacs_err err = { 0 };
    /* Study Root, a UID list (with an unknown UID). */
    assert_int_equal(retrieve(ident("STUDY", T_STUDY_UID, SA "\\" SC "\\1.2.3", 0, NULL, 0, NULL),
                              QUERY_STUDY_ROOT, &l, &err), 0);
    assert_int_equal(l.n, 4);
    assert_true(listed(&l, SC ".1.1") && !listed(&l, SB ".1.1"));
    retrieve_list_free(&l);
    /* Patient Root with the patient's unique key. */
    assert_int_equal(retrieve(ident("STUDY", T_PAT_ID, "PID1", T_STUDY_UID, SB, 0, NULL),
                              QUERY_PATIENT_ROOT, &l, &err), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.items[0].sop_instance_uid, SB ".1.1");
    assert_string_equal(l.items[0].sop_class_uid, MR_CLASS);
    retrieve_list_free(&l);
    /* Keys of both levels must hold together. */
    assert_int_equal(retrieve(ident("STUDY", T_PAT_ID, "PID2", T_STUDY_UID, SA, 0, NULL),
                              QUERY_PATIENT_ROOT, &l, &err), 0);
    assert_int_equal(l.n, 0);
    /* Study Root: PatientID is no unique key, so it does not filter. */
    assert_int_equal(retrieve(ident("STUDY", T_PAT_ID, "PID2", T_STUDY_UID, SA, 0, NULL),
                              QUERY_STUDY_ROOT, &l, &err), 0);
    assert_int_equal(l.n, 3);
    retrieve_list_free(&l);
    /* Other attributes in the identifier are ignored. */
    assert_int_equal(retrieve(ident("STUDY", T_STUDY_UID, SA, T_MODALITY, "MR", T_PAT_NAME, "X*"),
                              QUERY_STUDY_ROOT, &l, &err), 0);
    assert_int_equal(l.n, 3);
    retrieve_list_free(&l);
    /* Unknown study: an empty list, not an error. */
    assert_int_equal(retrieve(ident("STUDY", T_STUDY_UID, "1.2.3.4", 0, NULL, 0, NULL),
                              QUERY_STUDY_ROOT, &l, &err), 0);
    assert_int_equal(l.n, 0);
}

static void test_series_level(void **state)
{
    (void)state;
    struct retrieve_list l = { 0 };
    struct pacs_err err = { 0 };
    assert_int_equal(retrieve(ident("SERIES", T_STUDY_UID, SA, T_SERIES_UID, SA ".1", 0, NULL),
                              QUERY_STUDY_ROOT, &l, &err), 0);
    assert_int_equal(l.n, 2);
    assert_true(listed(&l, SA ".1.1") && listed(&l, SA ".1.2"));
    retrieve_list_free(&l);
    /* Without the study's key (lenient), with a list. */
    assert_int_equal(retrieve(ident("SERIES", T_SERIES_UID, SA ".1\\" SB ".1", 0, NULL, 0, NULL),
                              QUERY_PATIENT_ROOT, &l, &err), 0);
    assert_int_equal(l.n, 3);
    assert_true(listed(&l, SB ".1.1"));
    retrieve_list_free(&l);
}

static void test_image_level(void **state)
{
    (void)state;
    struct retrieve_list l = { 0 };
    struct pacs_err err = { 0 };
    assert_int_equal(retrieve(ident("IMAGE", T_SOP_UID, SA ".2.1\\" SC ".1.1", T_STUDY_UID, SA "\\" SC,
                                    0, NULL),
                              QUERY_STUDY_ROOT, &l, &err), 0);
    assert_int_equal(l.n, 2);
    assert_true(listed(&l, SA ".2.1") && listed(&l, SC ".1.1"));
    retrieve_list_free(&l);
    assert_int_equal(retrieve(ident("IMAGE", T_SOP_UID, SB ".1.1", 0, NULL, 0, NULL),
                              QUERY_PATIENT_ROOT, &l, &err), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.items[0].series_uid, SB ".1");
    retrieve_list_free(&l);
}

static void test_errors(void **state)
{
    (void)state;
    struct retrieve_list l = { 0 };
    struct pacs_err err = { 0 };
    assert_int_equal(retrieve(ident(NULL, T_STUDY_UID, SA, 0, NULL, 0, NULL), QUERY_STUDY_ROOT, &l,
                              &err), PACS_EINVAL);
    assert_int_equal(retrieve(ident("WORLD", T_STUDY_UID, SA, 0, NULL, 0, NULL), QUERY_STUDY_ROOT,
                              &l, &err), PACS_EINVAL);
    assert_int_equal(retrieve(ident("PATIENT", T_PAT_ID, "PID1", 0, NULL, 0, NULL), QUERY_STUDY_ROOT,
                              &l, &err), PACS_EINVAL);
    /* No unique key of the level (absent, empty, or only higher ones). */
    assert_int_equal(retrieve(ident("STUDY", T_PAT_ID, "PID1", 0, NULL, 0, NULL), QUERY_PATIENT_ROOT,
                              &l, &err), PACS_EINVAL);
    assert_non_null(strstr(err.msg, "unique key"));
    assert_int_equal(retrieve(ident("STUDY", T_STUDY_UID, "", 0, NULL, 0, NULL), QUERY_STUDY_ROOT,
                              &l, &err), PACS_EINVAL);
    assert_int_equal(retrieve(ident("SERIES", T_STUDY_UID, SA, 0, NULL, 0, NULL), QUERY_STUDY_ROOT,
                              &l, &err), PACS_EINVAL);
    assert_int_equal(retrieve(ident("PATIENT", T_PAT_ID, "", 0, NULL, 0, NULL), QUERY_PATIENT_ROOT,
                              &l, &err), PACS_EINVAL);
    /* A unique key below the level. */
    assert_int_equal(retrieve(ident("STUDY", T_STUDY_UID, SA, T_SOP_UID, SA ".1.1", 0, NULL),
                              QUERY_STUDY_ROOT, &l, &err), PACS_EINVAL);
    /* Wild cards would make a search of a retrieve. */
    assert_int_equal(retrieve(ident("STUDY", T_STUDY_UID, "*", 0, NULL, 0, NULL), QUERY_STUDY_ROOT,
                              &l, &err), PACS_EINVAL);
    assert_int_equal(retrieve(ident("PATIENT", T_PAT_ID, "PID?", 0, NULL, 0, NULL),
                              QUERY_PATIENT_ROOT, &l, &err), PACS_EINVAL);
}

static void test_from_query(void **state)
{
    (void)state;
    struct retrieve_list l = { 0 };
    struct pacs_err err = { 0 };
    struct query *q;
    /* A series-level query matched on the metadata. */
    assert_int_equal(query_new(INDEX_SERIES, QUERY_STUDY_ROOT, &q), 0);
    assert_int_equal(query_add_key(q, T_MODEL_NAME, "Magnet", &err), 0);
    if (retrieve_from_query(g_arch, q, &l, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(l.n, 2);
    assert_true(listed(&l, SB ".1.1") && listed(&l, SC ".1.1"));
    retrieve_list_free(&l);
    query_free(q);
    /* A study-level query on an index column. */
    assert_int_equal(query_new(INDEX_STUDY, QUERY_STUDY_ROOT, &q), 0);
    assert_int_equal(query_add_key(q, T_PAT_ID, "PID1", &err), 0);
    assert_int_equal(retrieve_from_query(g_arch, q, &l, &err), 0);
    assert_int_equal(l.n, 4);
    retrieve_list_free(&l);
    /* The query's limit counts entities, not instances. */
    query_set_limit(q, 1, 0);
    assert_int_equal(retrieve_from_query(g_arch, q, &l, &err), 0);
    assert_int_equal(l.n, 3);
    retrieve_list_free(&l);
    query_free(q);
    /* Instance level: every instance. */
    assert_int_equal(query_new(INDEX_INSTANCE, QUERY_PATIENT_ROOT, &q), 0);
    assert_int_equal(retrieve_from_query(g_arch, q, &l, &err), 0);
    assert_int_equal(l.n, N_INSTS);
    retrieve_list_free(&l);
    query_free(q);
}

/* Reads an item from offset in chunks of `chunk` bytes. */
static void read_all(const struct retrieve_item *it, uint64_t offset, size_t chunk, struct dynbuf *out)
{
    struct retrieve_reader *r;
    struct pacs_err err = { 0 };
    if (retrieve_open(g_arch, it, offset, &r, &err) != 0)
        fail_msg("retrieve_open: %s", err.msg);
    uint8_t buf[4096];
    assert_true(chunk <= sizeof buf);
    for (;;) {
        size_t got;
        if (retrieve_read(r, buf, chunk, &got, &err) != 0)
            fail_msg("retrieve_read: %s", err.msg);
        if (got == 0)
            break;
        assert_true(got <= chunk);
        assert_int_equal(dynbuf_append(out, buf, got), 0);
    }
    retrieve_close(r);
}

static void test_read_bytes(void **state)
{
    (void)state;
    struct retrieve_list l = { 0 };
    struct pacs_err err = { 0 };
    assert_int_equal(retrieve(ident("PATIENT", T_PAT_ID, "PID1\\PID2", 0, NULL, 0, NULL),
                              QUERY_PATIENT_ROOT, &l, &err), 0);
    assert_int_equal(l.n, N_INSTS);
    for (size_t k = 0; k < l.n; k++) {
        const struct retrieve_item *it = &l.items[k];
        size_t i = inst_index(it->sop_instance_uid);
        struct dynbuf got;
        dynbuf_init(&got, 0);
        read_all(it, 0, 7, &got);
        assert_int_equal(got.len, g_file[i].len);
        assert_memory_equal(got.data, g_file[i].data, got.len);
        dynbuf_reset(&got);
        read_all(it, it->ds_offset, 4096, &got);
        assert_int_equal(got.len, g_file[i].len - it->ds_offset);
        assert_memory_equal(got.data, g_file[i].data + it->ds_offset, got.len);
        /* The data set alone reads back as the instance. */
        struct dcm_file f;
        struct dcm_read_opts ro = { .ts_uid = it->transfer_syntax };
        if (dcm_read_part10(got.data, got.len, &ro, &f, &err) != 0)
            fail_msg("data set: %s", err.msg);
        char uid[65];
        assert_int_equal(dcm_ds_get_str(f.ds, T_SOP_UID, 0, uid, sizeof uid), 0);
        assert_string_equal(uid, it->sop_instance_uid);
        dcm_file_free(&f);
        dynbuf_reset(&got);
        /* At the end: nothing to read. */
        read_all(it, it->size, 16, &got);
        assert_int_equal(got.len, 0);
        dynbuf_free(&got);
    }

    /* Past the end, a missing blob, a bad key. */
    struct retrieve_item it = l.items[0];
    struct retrieve_reader *r = (struct retrieve_reader *)&it;
    assert_int_equal(retrieve_open(g_arch, &it, it.size + 1, &r, &err), PACS_EIO);
    assert_null(r);
    memcpy(it.blob_key, "nosuchkey", 10);
    assert_int_equal(retrieve_open(g_arch, &it, 0, &r, &err), PACS_ENOTFOUND);
    assert_null(r);
    memcpy(it.blob_key, "../x", 5);
    assert_int_equal(retrieve_open(g_arch, &it, 0, &r, &err), PACS_EINVAL);
    assert_null(r);
    retrieve_close(NULL);
    retrieve_list_free(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_patient_level),
        cmocka_unit_test(test_study_level),
        cmocka_unit_test(test_series_level),
        cmocka_unit_test(test_image_level),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_from_query),
        cmocka_unit_test(test_read_bytes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
