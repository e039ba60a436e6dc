/* test_resources.c - the archive by public id (archive/resources.h):
 * instances stored through ingest (real files), then get, list, children,
 * lookup, the file item, the change log, statistics and delete at every
 * level (rows, files and Deleted changes). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "archive/ingest.h"
#include "archive/resources.h"
#include "archive/retrieve.h"
#include "dicom/dict.h"
#include "dicom/writer.h"
#include "archive_fixture.h"
#include "testutil.h"

static char g_dir[] = "/tmp/pacsd-test-resources-XXXXXX";
static struct pacs_config *g_cfg;
static struct archive *g_ar;

/* Patient P1: study S1 (series S1.A: 2 instances, S1.B: 1), study S2
 * (series S2.A: 1). */
#define N_INST 4
static const char *const g_uids[N_INST][4] = {
    {"P1", "1.2.3.1", "1.2.3.1.1", "1.2.3.1.1.1"},
    {"P1", "1.2.3.1", "1.2.3.1.1", "1.2.3.1.1.2"},
    {"P1", "1.2.3.1", "1.2.3.1.2", "1.2.3.1.2.1"},
    {"P1", "1.2.3.2", "1.2.3.2.1", "1.2.3.2.1.1"},
};

static void store(const char *const u[4], uint16_t rows)
{
    struct dcm_ds *ds = dcm_ds_new();
    assert_non_null(ds);
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0008, 0x0016), DCM_VR_UI,
                                    "1.2.840.10008.5.1.4.1.1.7"), 0);
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0008, 0x0018), DCM_VR_UI, u[3]), 0);
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0008, 0x0060), DCM_VR_CS, "OT"), 0);
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0010, 0x0010), DCM_VR_PN, "Doe^Jane"), 0);
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0010, 0x0020), DCM_VR_LO, u[0]), 0);
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0020, 0x000D), DCM_VR_UI, u[1]), 0);
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0020, 0x000E), DCM_VR_UI, u[2]), 0);
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0020, 0x0013), DCM_VR_IS, "7"), 0);
    assert_int_equal(dcm_ds_put(ds, DCM_TAG(0x0028, 0x0010), DCM_VR_US, &rows, 2, NULL), 0);
    struct dynbuf b;
    dynbuf_init(&b, 0);
    struct dcm_sink sink = dcm_sink_dynbuf(&b);
    struct dcm_write_opts o = {0};
    struct pacs_err err = {0};
    if (dcm_write_part10(ds, &o, &sink, &err))
        fail_msg("dcm_write_part10: %s", err.msg);
    struct ingest_source src = {.remote_aet = ""};
    struct ingest *in = NULL;
    struct ingest_result res;
    assert_int_equal(ingest_begin(g_ar, &src, &in, &err), 0);
    assert_int_equal(ingest_feed(in, b.data, b.len, &err), 0);
    assert_int_equal(ingest_finish(in, &res, &err), 0);
    assert_int_equal(res.status, 0);
    dynbuf_free(&b);
    dcm_ds_free(ds);
}

static void id_of(int inst, enum index_level lv, char out[RES_ID_LEN + 1])
{
    assert_int_equal(resources_public_id(lv, g_uids[inst], out), 0);
}

static int setup(void **state)
{
    (void)state;
    fixture_open(g_dir, &g_cfg, &g_ar);
    for (int k = 0; k < N_INST; k++)
        store(g_uids[k], (uint16_t)(256 + k));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fixture_close(g_dir, g_cfg, g_ar);
    memcpy(g_dir + strlen(g_dir) - 6, "XXXXXX", 6);
    return 0;
}

/* --- collecting ------------------------------------------------------------- */

struct got {
    size_t n;
    int level;
    char id[16][RES_ID_LEN + 1];
    char parent[RES_ID_LEN + 1];
    size_t n_children;
    char child0[RES_ID_LEN + 1];
    char patient_name[64], rows[16];
    bool has_meta;
    uint64_t size;
    int64_t last_update;
};

static void cpy(char *dst, size_t cap, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    assert_true(n < cap);
    memcpy(dst, s ? s : "", n + 1);
}

static int got_cb(void *ctx, const struct res_entity *e)
{
    struct got *g = ctx;
    assert_true(g->n < 16);
    cpy(g->id[g->n++], RES_ID_LEN + 1, e->id);
    g->level = (int)e->level;
    cpy(g->parent, sizeof g->parent, e->parent_id);
    g->n_children = e->n_children;
    cpy(g->child0, sizeof g->child0, e->n_children ? e->children[0] : NULL);
    cpy(g->patient_name, sizeof g->patient_name,
        e->values[index_tag_find(DCM_TAG(0x0010, 0x0010))]);
    cpy(g->rows, sizeof g->rows, e->values[index_tag_find(DCM_TAG(0x0028, 0x0010))]);
    g->has_meta = e->metadata_json != NULL;
    g->size = e->size;
    g->last_update = e->last_update;
    return 0;
}

static void test_get_and_children(void **state)
{
    (void)state;
    struct pacs_err err;
    struct got g;
    char id[RES_ID_LEN + 1], want[RES_ID_LEN + 1];

    id_of(0, INDEX_STUDY, id);
    memset(&g, 0, sizeof g);
    assert_int_equal(resources_get(g_ar, INDEX_STUDY, id, RES_CHILDREN, got_cb, &g, &err), 0);
    assert_int_equal(g.n, 1);
    assert_string_equal(g.id[0], id);
    id_of(0, INDEX_PATIENT, want);
    assert_string_equal(g.parent, want);
    assert_int_equal(g.n_children, 2);
    id_of(0, INDEX_SERIES, want);
    assert_string_equal(g.child0, want);
    assert_string_equal(g.patient_name, "Doe^Jane");
    assert_true(g.last_update > 1600000000);

    id_of(1, INDEX_INSTANCE, id);
    memset(&g, 0, sizeof g);
    assert_int_equal(resources_get(g_ar, INDEX_INSTANCE, id, RES_METADATA, got_cb, &g, &err), 0);
    assert_string_equal(g.rows, "257");
    assert_true(g.has_meta);
    assert_true(g.size > 132);
    assert_int_equal(g.n_children, 0);

    /* Unknown ids, and an id of another level. */
    assert_int_equal(resources_get(g_ar, INDEX_INSTANCE, "nope", 0, got_cb, &g, &err),
                     PACS_ENOTFOUND);
    id_of(0, INDEX_SERIES, id);
    assert_int_equal(resources_get(g_ar, INDEX_STUDY, id, 0, got_cb, &g, &err), PACS_ENOTFOUND);
    assert_int_equal(resources_level_of("series"), INDEX_SERIES);
    assert_int_equal(resources_level_of("tools"), -1);
    assert_string_equal(resources_level_name(INDEX_STUDY), "Study");
    assert_string_equal(resources_change_name(INDEX_CHANGE_DELETED), "Deleted");
    assert_int_equal(resources_database_version(g_ar), 2);
}

static void test_list_and_lookup(void **state)
{
    (void)state;
    struct pacs_err err;
    struct got g;
    memset(&g, 0, sizeof g);
    assert_int_equal(resources_list(g_ar, INDEX_SERIES, 0, 0, 0, got_cb, &g, &err), 0);
    assert_int_equal(g.n, 3);
    memset(&g, 0, sizeof g);
    assert_int_equal(resources_list(g_ar, INDEX_INSTANCE, 1, 2, 0, got_cb, &g, &err), 0);
    assert_int_equal(g.n, 2);
    char id[RES_ID_LEN + 1];
    id_of(1, INDEX_INSTANCE, id);
    assert_string_equal(g.id[0], id);

    struct index_stats st;
    assert_int_equal(resources_statistics(g_ar, &st, &err), 0);
    assert_int_equal(st.patients, 1);
    assert_int_equal(st.studies, 2);
    assert_int_equal(st.series, 3);
    assert_int_equal(st.instances, 4);
    assert_true(st.bytes > 4 * 132);

    struct retrieve_item it;
    id_of(2, INDEX_INSTANCE, id);
    assert_int_equal(resources_instance_item(g_ar, id, &it, &err), 0);
    assert_string_equal(it.sop_instance_uid, g_uids[2][3]);
    struct retrieve_reader *r;
    char head[132];
    size_t got;
    assert_int_equal(retrieve_open(g_ar, &it, 0, &r, &err), 0);
    assert_int_equal(retrieve_read(r, head, sizeof head, &got, &err), 0);
    assert_int_equal(got, sizeof head);
    assert_memory_equal(head + 128, "DICM", 4);
    retrieve_close(r);
    assert_int_equal(resources_instance_item(g_ar, "x", &it, &err), PACS_ENOTFOUND);
}

struct lk {
    size_t n;
    int level[8];
    char id[8][RES_ID_LEN + 1];
};

static int lk_cb(void *ctx, enum index_level level, const char *id)
{
    struct lk *l = ctx;
    assert_true(l->n < 8);
    l->level[l->n] = (int)level;
    cpy(l->id[l->n++], RES_ID_LEN + 1, id);
    return 0;
}

static void test_lookup(void **state)
{
    (void)state;
    struct pacs_err err;
    struct lk l = {0};
    char id[RES_ID_LEN + 1];
    assert_int_equal(resources_lookup(g_ar, "1.2.3.1.2", lk_cb, &l, &err), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.level[0], INDEX_SERIES);
    id_of(2, INDEX_SERIES, id);
    assert_string_equal(l.id[0], id);
    memset(&l, 0, sizeof l);
    assert_int_equal(resources_lookup(g_ar, "P1", lk_cb, &l, &err), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.level[0], INDEX_PATIENT);
    memset(&l, 0, sizeof l);
    assert_int_equal(resources_lookup(g_ar, "1.2.3.*", lk_cb, &l, &err), 0);
    assert_int_equal(l.n, 0);
}

struct ch {
    size_t n;
    int type[64];
    int64_t seq[64];
};

static int ch_cb(void *ctx, const struct index_change *c)
{
    struct ch *h = ctx;
    assert_true(h->n < 64);
    h->type[h->n] = (int)c->type;
    h->seq[h->n++] = c->seq;
    return 0;
}

static int count_cb(void *ctx, const char *key)
{
    (void)key;
    (*(unsigned *)ctx)++;
    return 0;
}

static unsigned count_files(void)
{
    struct blob_store *bs = archive_blobs(g_ar);
    unsigned n = 0;
    struct pacs_err err;
    assert_int_equal(bs->ops->list(bs, count_cb, &n, &err), 0);
    return n;
}

static void test_changes_and_delete(void **state)
{
    (void)state;
    struct pacs_err err;
    struct ch h = {0};
    bool done;
    int64_t last;
    /* 4 instances, 3 series, 2 studies, 1 patient. */
    assert_int_equal(resources_changes(g_ar, 0, 100, ch_cb, &h, &done, &last, &err), 0);
    assert_int_equal(h.n, 10);
    assert_true(done);
    assert_int_equal(last, h.seq[9]);
    memset(&h, 0, sizeof h);
    assert_int_equal(resources_changes(g_ar, 0, 3, ch_cb, &h, &done, &last, &err), 0);
    assert_int_equal(h.n, 3);
    assert_false(done);
    assert_int_equal(last, h.seq[2]);
    memset(&h, 0, sizeof h);
    assert_int_equal(resources_changes(g_ar, 1000, 3, ch_cb, &h, &done, &last, &err), 0);
    assert_int_equal(h.n, 0);
    assert_true(done);
    assert_int_equal(last, 10);
    assert_int_equal(resources_changes(g_ar, 0, 0, ch_cb, &h, &done, &last, &err), PACS_EINVAL);
    assert_int_equal(resources_changes(g_ar, 0, RES_CHANGES_MAX + 1, ch_cb, &h, &done, &last,
                                       &err),
                     PACS_EINVAL);

    assert_int_equal(count_files(), 4);
    char id[RES_ID_LEN + 1], anc[RES_ID_LEN + 1], want[RES_ID_LEN + 1];
    int al;
    /* A series with two instances: both files go, the study remains. */
    id_of(0, INDEX_SERIES, id);
    assert_int_equal(resources_delete(g_ar, INDEX_SERIES, id, &al, anc, &err), 0);
    assert_int_equal(al, INDEX_STUDY);
    id_of(0, INDEX_STUDY, want);
    assert_string_equal(anc, want);
    assert_int_equal(count_files(), 2);
    assert_int_equal(resources_delete(g_ar, INDEX_SERIES, id, &al, anc, &err), PACS_ENOTFOUND);
    memset(&h, 0, sizeof h);
    assert_int_equal(resources_changes(g_ar, 10, 100, ch_cb, &h, &done, &last, &err), 0);
    assert_int_equal(h.n, 3);
    for (size_t k = 0; k < h.n; k++)
        assert_int_equal(h.type[k], INDEX_CHANGE_DELETED);

    /* The patient: everything. */
    id_of(0, INDEX_PATIENT, id);
    assert_int_equal(resources_delete(g_ar, INDEX_PATIENT, id, &al, anc, &err), 0);
    assert_int_equal(al, -1);
    assert_string_equal(anc, "");
    assert_int_equal(count_files(), 0);
    struct index_stats st;
    assert_int_equal(resources_statistics(g_ar, &st, &err), 0);
    assert_int_equal(st.instances + st.series + st.studies + st.patients, 0);
}

struct deleted {
    size_t n;
    int level[16];
    char id[16][RES_ID_LEN + 1];
};

static int deleted_cb(void *ctx, const struct index_change *c)
{
    struct deleted *d = ctx;
    if (c->type == INDEX_CHANGE_DELETED && d->n < 16) {
        d->level[d->n] = (int)c->level;
        cpy(d->id[d->n++], sizeof d->id[0], c->public_id);
    }
    return 0;
}

/* A study stored again under another PatientID (a corrected patient):
 * every row below it gets the id of its new UID chain, as Orthanc
 * computes it; the patient left empty is pruned with a Deleted change. */
static void test_moved_study(void **state)
{
    (void)state;
    struct pacs_err err = {0};
    char id[RES_ID_LEN + 1], old_inst[RES_ID_LEN + 1], old_patient[RES_ID_LEN + 1];
    struct got g;
    id_of(2, INDEX_INSTANCE, old_inst);
    id_of(0, INDEX_PATIENT, old_patient);
    static const char *const moved[4] = {"P2", "1.2.3.1", "1.2.3.1.1", "1.2.3.1.1.9"};
    store(moved, 300);
    /* Instance 1.2.3.1.2.1 was not sent again: its ids follow the study. */
    static const char *const now_u[4] = {"P2", "1.2.3.1", "1.2.3.1.2", "1.2.3.1.2.1"};
    for (int lv = INDEX_STUDY; lv <= INDEX_INSTANCE; lv++) {
        assert_int_equal(resources_public_id((enum index_level)lv, now_u, id), 0);
        memset(&g, 0, sizeof g);
        assert_int_equal(resources_get(g_ar, (enum index_level)lv, id, 0, got_cb, &g, &err), 0);
        assert_int_equal(g.n, 1);
    }
    memset(&g, 0, sizeof g);
    assert_int_equal(resources_get(g_ar, INDEX_INSTANCE, old_inst, 0, got_cb, &g, &err),
                     PACS_ENOTFOUND);

    /* The other study of P1 moves too: P1 is left empty and pruned. */
    static const char *const moved2[4] = {"P2", "1.2.3.2", "1.2.3.2.1", "1.2.3.2.1.1"};
    store(moved2, 301);
    struct deleted d = {0};
    bool done;
    int64_t last;
    assert_int_equal(resources_changes(g_ar, 0, 100, deleted_cb, &d, &done, &last, &err), 0);
    assert_int_equal(d.n, 1);
    assert_int_equal(d.level[0], INDEX_PATIENT);
    assert_string_equal(d.id[0], old_patient);
    struct index_stats st;
    assert_int_equal(resources_statistics(g_ar, &st, &err), 0);
    assert_int_equal(st.patients, 1);
    assert_int_equal(st.studies, 2);
    assert_int_equal(st.instances, 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get_and_children, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_and_lookup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lookup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes_and_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_moved_study, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
