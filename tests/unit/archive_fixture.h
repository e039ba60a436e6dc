/* archive_fixture.h - a temporary archive for the query, retrieve and QIDO
 * unit tests: opened in a fresh directory, filled straight through the
 * index (rows made from data sets as ingest makes them), removed at the
 * end. Include after <cmocka.h>. */
#ifndef PACS_ARCHIVE_FIXTURE_H
#define PACS_ARCHIVE_FIXTURE_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "archive/archive.h"
#include "dicom/json.h"
#include "store/index.h"
#include "util/config.h"
#include "util/log.h"

/* Opens an archive in mkdtemp(dir_template) with the default
 * configuration. */
static inline void fixture_open(char *dir_template, struct pacs_config **cfg,
                                struct archive **ar)
{
    struct pacs_err err = { 0 };
    log_set_level(CONFIG_LOG_WARN);
    assert_non_null(mkdtemp(dir_template));
    char env[128];
    int n = snprintf(env, sizeof env, "PACSD_DATA_DIR=%s", dir_template);
    assert_true(n > 0 && (size_t)n < sizeof env);
    char *envp[] = { env, NULL };
    if (config_load(NULL, envp, cfg, &err) != 0)
        fail_msg("config_load: %s", err.msg);
    if (archive_open(*cfg, ar, NULL, &err) != 0)
        fail_msg("archive_open: %s", err.msg);
}

static inline int fixture_rm_entry(const char *path, const struct stat *sb, int flag,
                                   struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static inline void fixture_close(const char *dir, struct pacs_config *cfg, struct archive *ar)
{
    archive_close(ar);
    config_free(cfg);
    nftw(dir, fixture_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The index text of a main tag, as ingest makes it (strings as UTF-8,
 * binary numbers in decimal); NULL when absent or empty. */
static inline char *fixture_index_value(const struct dcm_ds *ds, uint32_t tag)
{
    const struct dcm_elem *e = dcm_ds_find(ds, tag);
    if (!e || e->len == 0)
        return NULL;
    struct dynbuf b;
    dynbuf_init(&b, 0);
    if (e->vr == DCM_VR_US) {
        uint64_t v;
        assert_int_equal(dcm_elem_uint(e, 0, &v), 0);
        assert_int_equal(dynbuf_printf(&b, "%llu", (unsigned long long)v), 0);
    } else {
        assert_int_equal(dcm_elem_text(ds, e, &b, NULL), 0);
    }
    return dynbuf_take(&b, NULL);
}

/* One instance to index: its data set and where its bytes are said to be. */
struct fixture_rec {
    const struct dcm_ds *ds;
    const char *blob_key;
    const char *transfer_syntax;
    uint64_t size, ds_offset;
};

/* Inserts one row per record in one batch; every one must be new. */
static inline void fixture_insert(struct archive *ar, const struct fixture_rec *in, size_t n)
{
    struct pacs_err err = { 0 };
    struct index_record *recs = calloc(n, sizeof *recs);
    struct index_insert_result *res = calloc(n, sizeof *res);
    struct dynbuf *meta = calloc(n, sizeof *meta);
    assert_true(recs && res && meta);
    for (size_t i = 0; i < n; i++) {
        for (size_t c = 0; c < index_n_main_tags; c++)
            recs[i].values[c] = fixture_index_value(in[i].ds, index_main_tags[c].tag);
        dynbuf_init(&meta[i], 0);
        assert_int_equal(dcm_json_write(in[i].ds, NULL, &meta[i], NULL), 0);
        recs[i].transfer_syntax = in[i].transfer_syntax;
        recs[i].blob_key = in[i].blob_key;
        recs[i].size = in[i].size;
        recs[i].ds_offset = in[i].ds_offset;
        recs[i].metadata_json = (const char *)meta[i].data;
        recs[i].metadata_len = meta[i].len;
        recs[i].remote_aet = "";
    }
    struct index *ix = archive_index(ar);
    if (ix->ops->insert_batch(ix, recs, n, INDEX_DUP_REPLACE, res, &err) != 0)
        fail_msg("insert_batch: %s", err.msg);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(res[i].outcome, INDEX_INSERTED);
        for (size_t c = 0; c < index_n_main_tags; c++)
            free((char *)recs[i].values[c]);
        dynbuf_free(&meta[i]);
    }
    free(recs);
    free(res);
    free(meta);
}

/* Indexes data sets with no files behind them (query tests): keys k000,
 * k001..., Explicit VR LE, made-up sizes. Takes and frees ds[0..n). */
static inline void fixture_insert_datasets(struct archive *ar, struct dcm_ds **ds, size_t n)
{
    struct fixture_rec *recs = calloc(n, sizeof *recs);
    char (*keys)[16] = calloc(n, sizeof *keys);
    assert_true(recs && keys);
    for (size_t i = 0; i < n; i++) {
        int k = snprintf(keys[i], sizeof keys[i], "k%03zu", i);
        assert_true(k > 0 && (size_t)k < sizeof keys[i]);
        recs[i] = (struct fixture_rec){ .ds = ds[i], .blob_key = keys[i],
                                        .transfer_syntax = "1.2.840.10008.1.2.1",
                                        .size = 1000 + i, .ds_offset = 300 };
    }
    fixture_insert(ar, recs, n);
    for (size_t i = 0; i < n; i++)
        dcm_ds_free(ds[i]);
    free(recs);
    free(keys);
}

#endif
