/* Unit tests: the ingest path and the group committer, on a temporary data
 * directory with the real stores (files + SQLite): pydicom's files fed in
 * random chunks, raw DIMSE data sets, bad input, duplicate policies, index
 * values and metadata, concurrent ingests, and start-up recovery. */
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "archive/archive.h"
#include "archive/archive_priv.h"
#include "archive/ingest.h"
#include "dicom/json.h"
#include "dicom/reader.h"
#include "dicom/writer.h"
#include "testutil.h"
#include "util/log.h"

/* --- environment ---------------------------------------------------------- */

struct env {
    char dir[256];
    struct pacs_config cfg;
    struct archive *a;
    struct archive_startup st;
};

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void env_init(struct env *e, enum config_dup_policy dup)
{
    memset(e, 0, sizeof *e);
    int n = snprintf(e->dir, sizeof e->dir, "/tmp/test_ingest.XXXXXX");
    assert_true(n > 0 && (size_t)n < sizeof e->dir);
    assert_non_null(mkdtemp(e->dir));
    /* data_dir one level down: archive_open must create it. */
    char data[300];
    n = snprintf(data, sizeof data, "%s/data", e->dir);
    assert_true(n > 0 && (size_t)n < sizeof data);
    e->cfg.data_dir = strdup(data);
    assert_non_null(e->cfg.data_dir);
    e->cfg.dicom.duplicates = dup;
}

/* Each test gets a fresh environment; teardown removes it even when the
 * test fails. */
static int setup(void **state)
{
    struct env *e = calloc(1, sizeof *e);
    if (!e)
        return -1;
    env_init(e, CONFIG_DUP_REPLACE);
    *state = e;
    return 0;
}

static void env_free(struct env *e);

static int teardown(void **state)
{
    struct env *e = *state;
    env_free(e);
    free(e);
    return 0;
}

static void env_open(struct env *e)
{
    struct pacs_err err = { 0 };
    int rc = archive_open(&e->cfg, &e->a, &e->st, &err);
    if (rc)
        fail_msg("archive_open: %s", err.msg);
}

static void env_close(struct env *e)
{
    archive_close(e->a);
    e->a = NULL;
}

static void env_free(struct env *e)
{
    if (e->a)
        env_close(e);
    nftw(e->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(e->cfg.data_dir);
}

/* --- helpers -------------------------------------------------------------- */

static size_t chunk_size(unsigned *seed)
{
    unsigned r = (unsigned)rand_r(seed);
    return (r & 3) == 0 ? 1 + (r >> 2) % 16 : 1 + (r >> 2) % 4096;
}

/* Feeds buf in random chunks; returns ingest_finish's code. */
static int ingest_buf(struct archive *a, const struct ingest_source *src, const uint8_t *buf,
                      size_t len, unsigned *seed, struct ingest_result *res)
{
    struct ingest *in = NULL;
    struct pacs_err err = { 0 };
    int rc = ingest_begin(a, src, &in, &err);
    if (rc)
        fail_msg("ingest_begin: %s", err.msg);
    for (size_t off = 0; off < len;) {
        size_t c = chunk_size(seed);
        if (c > len - off)
            c = len - off;
        if (ingest_feed(in, buf + off, c, &err) != 0)
            break;
        off += c;
    }
    return ingest_finish(in, res, &err);
}

static const struct ingest_source part10_src = { .remote_aet = "" };

static void sha256_hex(const uint8_t *p, size_t n, char out[65])
{
    uint8_t md[32];
    unsigned mdlen = 0;
    assert_int_equal(EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL), 1);
    assert_int_equal(mdlen, 32);
    for (unsigned i = 0; i < 32; i++) {
        int k = snprintf(out + 2 * i, 3, "%02x", md[i]);
        assert_int_equal(k, 2);
    }
}

static int count_cb(void *ctx, const char *key)
{
    (void)key;
    (*(unsigned *)ctx)++;
    return 0;
}

static unsigned blob_count(struct archive *a)
{
    unsigned n = 0;
    struct blob_store *bs = archive_blobs(a);
    assert_int_equal(bs->ops->list(bs, count_cb, &n, NULL), 0);
    return n;
}

static uint64_t instance_count(struct archive *a)
{
    struct index_stats s;
    struct index *ix = archive_index(a);
    assert_int_equal(ix->ops->stats(ix, &s, NULL), 0);
    return s.instances;
}

/* An instance row, copied out of the callback. */
struct row {
    int found;
    char key[65], sha[65], ts[65];
    uint64_t size, ds_offset;
    char *meta;
    size_t meta_len;
    char *values[INDEX_MAX_MAIN_TAGS];
};

static void copy_text(char *dst, size_t size, const char *s)
{
    size_t n = s ? strnlen(s, size - 1) : 0;
    if (n)
        memcpy(dst, s, n);
    dst[n] = '\0';
}

static int row_cb(void *ctx, const struct index_row *r)
{
    struct row *out = ctx;
    out->found++;
    copy_text(out->key, sizeof out->key, r->blob_key);
    copy_text(out->sha, sizeof out->sha, r->sha256);
    copy_text(out->ts, sizeof out->ts, r->transfer_syntax);
    out->size = r->size;
    out->ds_offset = r->ds_offset;
    if (r->metadata_json) {
        out->meta = malloc(r->metadata_len + 1);
        assert_non_null(out->meta);
        memcpy(out->meta, r->metadata_json, r->metadata_len);
        out->meta[r->metadata_len] = '\0';
        out->meta_len = r->metadata_len;
    }
    for (size_t i = 0; i < index_n_main_tags; i++)
        out->values[i] = r->values[i] ? strdup(r->values[i]) : NULL;
    return 0;
}

static void row_free(struct row *r)
{
    free(r->meta);
    for (size_t i = 0; i < INDEX_MAX_MAIN_TAGS; i++)
        free(r->values[i]);
    memset(r, 0, sizeof *r);
}

static void find_instance(struct archive *a, const char *sop_uid, struct row *out)
{
    memset(out, 0, sizeof *out);
    struct index_cond c = { .col = index_tag_find(DCM_TAG(0x0008, 0x0018)),
                            .kind = INDEX_MATCH_SINGLE, .value = sop_uid };
    struct index_query q = { .level = INDEX_INSTANCE, .conds = &c, .n_conds = 1,
                             .want_metadata = true };
    struct index *ix = archive_index(a);
    struct pacs_err err = { 0 };
    if (ix->ops->find(ix, &q, row_cb, out, &err))
        fail_msg("index find: %s", err.msg);
}

static const char *row_value(const struct row *r, uint32_t tag)
{
    int i = index_tag_find(tag);
    assert_true(i >= 0);
    return r->values[i];
}

/* The whole stored object. */
static uint8_t *read_blob(struct archive *a, const char *key, size_t *len)
{
    struct blob_store *bs = archive_blobs(a);
    struct blob_reader *r = NULL;
    uint64_t size = 0;
    struct pacs_err err = { 0 };
    if (bs->ops->get_open(bs, key, &r, &size, &err))
        fail_msg("get_open %s: %s", key, err.msg);
    uint8_t *buf = malloc(size + 1);
    assert_non_null(buf);
    size_t at = 0, got;
    while (at < size) {
        assert_int_equal(bs->ops->get_read(r, at, buf + at, size - at, &got, &err), 0);
        assert_true(got > 0);
        at += got;
    }
    bs->ops->get_close(r);
    *len = (size_t)size;
    return buf;
}

static bool blob_exists(struct archive *a, const char *key)
{
    struct blob_store *bs = archive_blobs(a);
    struct blob_reader *r = NULL;
    uint64_t size;
    if (bs->ops->get_open(bs, key, &r, &size, NULL) != 0)
        return false;
    bs->ops->get_close(r);
    return true;
}

/* UTF-8 text of an element, "" if absent. */
static void elem_text(const struct dcm_ds *ds, uint32_t tag, struct dynbuf *out)
{
    dynbuf_reset(out);
    const struct dcm_elem *e = dcm_ds_find(ds, tag);
    if (e && dcm_elem_is_value(e))
        assert_int_equal(dcm_elem_text(ds, e, out, NULL), 0);
}

static uint8_t *load_pydicom(const char *name, size_t *len)
{
    char path[1024];
    int n = snprintf(path, sizeof path, "%s/%s", test_pydicom_dir(), name);
    assert_true(n > 0 && (size_t)n < sizeof path);
    uint8_t *buf = test_load_file(path, len);
    if (!buf)
        fail_msg("cannot read %s", path);
    return buf;
}

/* Writes ds as a Part 10 file in ts (NULL: Explicit VR LE). */
static uint8_t *write_part10(const struct dcm_ds *ds, const char *ts, size_t *len)
{
    struct dynbuf b;
    dynbuf_init(&b, 0);
    struct dcm_sink sink = dcm_sink_dynbuf(&b);
    struct dcm_write_opts o = { .ts_uid = ts };
    struct pacs_err err = { 0 };
    if (dcm_write_part10(ds, &o, &sink, &err))
        fail_msg("dcm_write_part10: %s", err.msg);
    return (uint8_t *)dynbuf_take(&b, len);
}

/* --- Part 10 files from pydicom ------------------------------------------- */

struct corpus_ctx {
    struct archive *a;
    unsigned seed;
    unsigned ok, refused;
    unsigned with_pixels;
};

/* Files that must be refused, and why. */
static const struct {
    const char *name;
    uint16_t status;
} must_refuse[] = {
    { "no_meta.dcm", 0xC000 },               /* no meta group: not Part 10 */
    { "ExplVR_BigEndNoMeta.dcm", 0xC000 },
    { "ExplVR_LitEndNoMeta.dcm", 0xC000 },
    { "MR_truncated.dcm", 0xC000 },          /* ends inside Pixel Data */
    { "rtplan_truncated.dcm", 0xC000 },
    { "rtplan.dcm", 0xA900 },                /* meta and data set disagree */
    { "rtdose.dcm", 0xA900 },
    { "UN_sequence.dcm", 0xA900 },           /* no SOP Class UID */
    { "rtstruct.dcm", 0xC000 },              /* no meta group */
};

/* Files that must be stored. */
static const char *const must_store[] = {
    "CT_small.dcm", "MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm",
    "JPEG2000.dcm", "image_dfl.dcm", "test-SR.dcm", "SC_rgb_rle.dcm",
    "MR_small_RLE.dcm", "JPGExtended.dcm", "SC_rgb_small_odd.dcm", "waveform_ecg.dcm",
};

static void check_stored(struct corpus_ctx *c, const char *name, const uint8_t *buf, size_t len,
                         const struct ingest_result *res)
{
    struct row row;
    find_instance(c->a, res->sop_instance_uid, &row);
    if (row.found != 1)
        fail_msg("%s: %d rows for %s", name, row.found, res->sop_instance_uid);

    /* The file, byte for byte, and what the row says of it. */
    size_t slen = 0;
    uint8_t *stored = read_blob(c->a, row.key, &slen);
    assert_int_equal(slen, len);
    assert_memory_equal(stored, buf, len);
    free(stored);
    char sha[65];
    sha256_hex(buf, len, sha);
    assert_string_equal(row.sha, sha);
    assert_int_equal(row.size, len);
    assert_int_equal(res->size, len);

    struct dcm_file f = { 0 };
    struct dcm_read_opts ro = { .stop_tag = 0 };
    assert_int_equal(dcm_read_part10(buf, len, &ro, &f, NULL), 0);
    assert_int_equal(row.ds_offset, f.ds_offset);
    assert_string_equal(row.ts, f.ts_uid);
    assert_string_equal(res->transfer_syntax, f.ts_uid);

    /* Index values: UTF-8 text as the codec decodes it. */
    struct dynbuf t;
    dynbuf_init(&t, 0);
    elem_text(f.ds, DCM_TAG(0x0010, 0x0010), &t);
    const char *pn = row_value(&row, DCM_TAG(0x0010, 0x0010));
    if (t.len)
        assert_string_equal(pn, (const char *)t.data);
    assert_string_equal(row_value(&row, DCM_TAG(0x0008, 0x0018)), res->sop_instance_uid);
    assert_string_equal(row_value(&row, DCM_TAG(0x0020, 0x000D)), res->study_uid);
    assert_string_equal(row_value(&row, DCM_TAG(0x0020, 0x000E)), res->series_uid);

    /* Metadata: valid DICOM JSON with PatientName and, for images, a
     * BulkDataURI for the pixels. */
    assert_non_null(row.meta);
    struct dcm_ds *md = NULL;
    struct pacs_err err = { 0 };
    if (dcm_json_read(row.meta, row.meta_len, &md, &err))
        fail_msg("%s: metadata does not read back: %s", name, err.msg);
    struct dynbuf t2;
    dynbuf_init(&t2, 0);
    elem_text(md, DCM_TAG(0x0010, 0x0010), &t2);
    elem_text(f.ds, DCM_TAG(0x0010, 0x0010), &t);
    assert_string_equal((const char *)t.data ? (const char *)t.data : "",
                        (const char *)t2.data ? (const char *)t2.data : "");
    const struct dcm_elem *px = dcm_ds_find(f.ds, DCM_TAG_PIXEL_DATA);
    if (px) {
        c->with_pixels++;
        assert_non_null(dcm_ds_find(md, DCM_TAG_PIXEL_DATA));
        char want[80];
        char vr[3];
        uint16_t want_vr = (px->flags & DCM_EF_ENCAPS) ? DCM_VR_OB : px->vr;
        if (!f.ts.explicit_vr && !(px->flags & DCM_EF_ENCAPS))
            want_vr = DCM_VR_OW;
        int n = snprintf(want, sizeof want, "\"7FE00010\":{\"vr\":\"%s\",\"BulkDataURI\":\"bulk/7FE00010\"}",
                         dcm_vr_str(want_vr, vr));
        assert_true(n > 0 && (size_t)n < sizeof want);
        if (!strstr(row.meta, want))
            fail_msg("%s: no %s in metadata", name, want);
    } else {
        assert_null(strstr(row.meta, "\"7FE00010\""));
    }
    dcm_ds_free(md);
    dynbuf_free(&t);
    dynbuf_free(&t2);
    dcm_file_free(&f);
    row_free(&row);
}

static void corpus_one(const char *name, const uint8_t *buf, size_t len, void *ctx)
{
    struct corpus_ctx *c = ctx;
    struct ingest_result res;
    unsigned blobs_before = blob_count(c->a);
    int rc = ingest_buf(c->a, &part10_src, buf, len, &c->seed, &res);
    if (getenv("TEST_INGEST_VERBOSE"))
        print_message("%-45s 0x%04X %s\n", name, res.status, res.message);
    for (size_t i = 0; i < sizeof must_refuse / sizeof must_refuse[0]; i++) {
        if (!strcmp(name, must_refuse[i].name) && res.status != must_refuse[i].status)
            fail_msg("%s: status 0x%04X, want 0x%04X", name, res.status, must_refuse[i].status);
    }
    for (size_t i = 0; i < sizeof must_store / sizeof must_store[0]; i++) {
        if (!strcmp(name, must_store[i]) && res.status != 0)
            fail_msg("%s: status 0x%04X: %s", name, res.status, res.message);
    }
    if (res.status == 0) {
        assert_int_equal(rc, 0);
        c->ok++;
        check_stored(c, name, buf, len, &res);
        return;
    }
    /* Bad input is a status, not an internal error, and leaves nothing. */
    assert_int_equal(rc, 0);
    assert_true(res.status == 0xC000 || res.status == 0xA900);
    assert_true(res.message[0] != '\0');
    c->refused++;
    assert_int_equal(blob_count(c->a), blobs_before);
}

static void test_part10_corpus(void **state)
{
    struct env *e = *state;
    env_open(e);
    assert_int_equal(e->st.temp_removed, 0);
    assert_int_equal(e->st.orphans_removed, 0);
    struct corpus_ctx c = { .a = e->a, .seed = 1234 };
    unsigned n = test_each_pydicom_file(corpus_one, &c);
    if (n == 0)
        skip();
    print_message("pydicom files: %u stored, %u refused, %u with pixels\n", c.ok, c.refused,
                  c.with_pixels);
    assert_true(c.ok >= 40);
    assert_true(c.with_pixels >= 30);

    /* Replaced instances' old files are gone once the committer is done. */
    env_close(e);
    env_open(e);
    assert_int_equal(e->st.orphans_removed, 0);
    assert_int_equal(blob_count(e->a), instance_count(e->a));
}

/* --- raw data sets (DIMSE) ------------------------------------------------ */

static void raw_one(struct env *e, const char *name, unsigned *seed)
{
    size_t len = 0;
    uint8_t *file = load_pydicom(name, &len);
    struct dcm_file f = { 0 };
    struct dcm_read_opts ro = { .stop_tag = DCM_TAG_PIXEL_DATA };
    assert_int_equal(dcm_read_part10(file, len, &ro, &f, NULL), 0);
    char cls[65], inst[65];
    assert_int_equal(dcm_ds_get_str(f.ds, DCM_TAG(0x0008, 0x0016), 0, cls, sizeof cls), 0);
    assert_int_equal(dcm_ds_get_str(f.ds, DCM_TAG(0x0008, 0x0018), 0, inst, sizeof inst), 0);
    const uint8_t *raw = file + f.ds_offset;
    size_t raw_len = len - (size_t)f.ds_offset;

    struct ingest_source src = { .ts_uid = f.ts_uid, .sop_class_uid = cls,
                                 .sop_instance_uid = inst, .remote_aet = "STORESCU" };
    struct ingest_result res;
    assert_int_equal(ingest_buf(e->a, &src, raw, raw_len, seed, &res), 0);
    if (res.status != 0)
        fail_msg("%s raw: 0x%04X %s", name, res.status, res.message);
    assert_string_equal(res.sop_instance_uid, inst);
    assert_string_equal(res.transfer_syntax, f.ts_uid);

    struct row row;
    find_instance(e->a, inst, &row);
    assert_int_equal(row.found, 1);
    size_t slen = 0;
    uint8_t *stored = read_blob(e->a, row.key, &slen);
    assert_int_equal(row.size, slen);
    assert_int_equal(res.size, slen);
    char sha[65];
    sha256_hex(stored, slen, sha);
    assert_string_equal(row.sha, sha);

    /* preamble + "DICM" + meta group, then the input exactly. */
    static const uint8_t zero[128];
    assert_true(slen > 132 + raw_len);
    assert_memory_equal(stored, zero, 128);
    assert_memory_equal(stored + 128, "DICM", 4);
    size_t hdr = slen - raw_len;
    assert_int_equal(row.ds_offset, hdr);
    assert_memory_equal(stored + hdr, raw, raw_len);
    uint32_t gl = (uint32_t)stored[140] | (uint32_t)stored[141] << 8 |
                  (uint32_t)stored[142] << 16 | (uint32_t)stored[143] << 24;
    assert_int_equal(144 + gl, hdr);

    /* The stored file reads as a Part 10 file with the right meta group. */
    struct dcm_file sf = { 0 };
    struct pacs_err err = { 0 };
    if (dcm_read_part10(stored, slen, &ro, &sf, &err))
        fail_msg("%s: stored file unreadable: %s", name, err.msg);
    assert_true(sf.preamble);
    assert_int_equal(sf.ds_offset, hdr);
    assert_string_equal(sf.ts_uid, f.ts_uid);
    char v[80];
    assert_int_equal(dcm_ds_get_str(sf.meta, DCM_TAG(0x0002, 0x0002), 0, v, sizeof v), 0);
    assert_string_equal(v, cls);
    assert_int_equal(dcm_ds_get_str(sf.meta, DCM_TAG(0x0002, 0x0003), 0, v, sizeof v), 0);
    assert_string_equal(v, inst);
    assert_int_equal(dcm_ds_get_str(sf.meta, DCM_TAG(0x0002, 0x0010), 0, v, sizeof v), 0);
    assert_string_equal(v, f.ts_uid);
    assert_int_equal(dcm_ds_get_str(sf.meta, DCM_TAG(0x0002, 0x0012), 0, v, sizeof v), 0);
    assert_string_equal(v, PACSD_IMPLEMENTATION_CLASS_UID);
    assert_int_equal(dcm_ds_get_str(sf.meta, DCM_TAG(0x0002, 0x0013), 0, v, sizeof v), 0);
    assert_string_equal(v, PACSD_IMPLEMENTATION_VERSION);
    assert_int_equal(dcm_ds_get_str(sf.meta, DCM_TAG(0x0002, 0x0016), 0, v, sizeof v), 0);
    assert_string_equal(v, "STORESCU");
    const struct dcm_elem *ver = dcm_ds_find(sf.meta, DCM_TAG(0x0002, 0x0001));
    assert_non_null(ver);
    assert_int_equal(ver->len, 2);
    assert_int_equal(ver->val[0], 0);
    assert_int_equal(ver->val[1], 1);

    dcm_file_free(&sf);
    free(stored);
    row_free(&row);

    /* The command and the data set disagree: 0xA900, nothing kept. */
    unsigned blobs = blob_count(e->a);
    struct ingest_source bad = src;
    bad.sop_instance_uid = "1.2.3.4";
    assert_int_equal(ingest_buf(e->a, &bad, raw, raw_len, seed, &res), 0);
    assert_int_equal(res.status, 0xA900);
    assert_non_null(strstr(res.message, "SOP Instance UID"));
    bad = src;
    bad.sop_class_uid = "1.2.840.10008.5.1.4.1.1.7";
    if (strcmp(cls, bad.sop_class_uid) != 0) {
        assert_int_equal(ingest_buf(e->a, &bad, raw, raw_len, seed, &res), 0);
        assert_int_equal(res.status, 0xA900);
        assert_non_null(strstr(res.message, "SOP Class UID"));
    }
    bad = src;
    bad.sop_class_uid = "";
    assert_int_equal(ingest_buf(e->a, &bad, raw, raw_len, seed, &res), 0);
    assert_int_equal(res.status, 0xA900);
    assert_int_equal(blob_count(e->a), blobs);

    dcm_file_free(&f);
    free(file);
}

static void test_raw(void **state)
{
    struct env *e = *state;
    env_open(e);
    unsigned seed = 99;
    static const char *const files[] = {
        "CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
        "image_dfl.dcm", "JPEG2000.dcm", "rtplan.dcm",
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        raw_one(e, files[i], &seed);
}

/* --- bad input -------------------------------------------------------------- */

static struct dcm_ds *synthetic(const char *inst)
{
    struct dcm_ds *ds = dcm_ds_new();
    assert_non_null(ds);
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0008, 0x0016), DCM_VR_UI, "1.2.840.10008.5.1.4.1.1.7"), 0);
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0008, 0x0018), DCM_VR_UI, inst), 0);
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0020, 0x000D), DCM_VR_UI, "1.2.826.0.1.3680043.10.99.1"), 0);
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0020, 0x000E), DCM_VR_UI, "1.2.826.0.1.3680043.10.99.1.1"), 0);
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0010, 0x0010), DCM_VR_PN, "Doe^John"), 0);
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0010, 0x0020), DCM_VR_LO, "PID1"), 0);
    return ds;
}

static void expect_refused(struct env *e, const uint8_t *buf, size_t len, uint16_t status,
                           const char *msg_part)
{
    unsigned seed = 7, blobs = blob_count(e->a);
    uint64_t rows = instance_count(e->a);
    struct ingest_result res;
    assert_int_equal(ingest_buf(e->a, &part10_src, buf, len, &seed, &res), 0);
    if (res.status != status)
        fail_msg("%zu bytes: status 0x%04X, want 0x%04X (%s)", len, res.status, status, res.message);
    if (msg_part && !strstr(res.message, msg_part))
        fail_msg("message '%s' does not mention '%s'", res.message, msg_part);
    assert_int_equal(blob_count(e->a), blobs);
    assert_int_equal(instance_count(e->a), rows);
}

static void test_bad_input(void **state)
{
    struct env *e = *state;
    env_open(e);

    /* Each required UID missing in turn, then an invalid one. */
    static const struct {
        uint32_t tag;
        const char *name;
    } req[] = {
        { DCM_TAG(0x0008, 0x0016), "SOP Class UID" },
        { DCM_TAG(0x0008, 0x0018), "SOP Instance UID" },
        { DCM_TAG(0x0020, 0x000D), "Study Instance UID" },
        { DCM_TAG(0x0020, 0x000E), "Series Instance UID" },
    };
    for (size_t i = 0; i < sizeof req / sizeof req[0]; i++) {
        struct dcm_ds *ds = synthetic("1.2.826.0.1.3680043.10.99.1.1.1");
        size_t len;
        /* The writer needs SOP Class/Instance UIDs for the meta group: those
         * two are left empty in the data set and named by the meta only. */
        if (req[i].tag != DCM_TAG(0x0008, 0x0016) && req[i].tag != DCM_TAG(0x0008, 0x0018)) {
            assert_int_equal(dcm_ds_remove(ds, req[i].tag), 0);
            uint8_t *buf = write_part10(ds, NULL, &len);
            expect_refused(e, buf, len, 0xA900, req[i].name);
            free(buf);
        } else {
            /* Empty value: the meta group still names the UIDs. */
            assert_int_equal(dcm_ds_put(ds, req[i].tag, DCM_VR_UI, NULL, 0, NULL), 0);
            struct dcm_ds *meta = dcm_ds_new();
            assert_int_equal(dcm_ds_put_str(meta, DCM_TAG(0x0002, 0x0002), DCM_VR_UI, "1.2.3"), 0);
            assert_int_equal(dcm_ds_put_str(meta, DCM_TAG(0x0002, 0x0003), DCM_VR_UI, "1.2.3.4"), 0);
            struct dynbuf b;
            dynbuf_init(&b, 0);
            struct dcm_sink sink = dcm_sink_dynbuf(&b);
            struct dcm_write_opts o = { .src_meta = meta };
            assert_int_equal(dcm_write_part10(ds, &o, &sink, NULL), 0);
            expect_refused(e, b.data, b.len, 0xA900, req[i].name);
            dynbuf_free(&b);
            dcm_ds_free(meta);
        }
        dcm_ds_free(ds);
    }
    {
        struct dcm_ds *ds = synthetic("1.2.03.4"); /* leading zero */
        size_t len;
        uint8_t *buf = write_part10(ds, NULL, &len);
        expect_refused(e, buf, len, 0xA900, "SOP Instance UID");
        free(buf);
        dcm_ds_free(ds);
    }

    /* Meta group and data set disagree. */
    {
        struct dcm_ds *ds = synthetic("1.2.826.0.1.3680043.10.99.1.1.2");
        size_t len;
        uint8_t *buf = write_part10(ds, NULL, &len);
        /* Patch the meta's SOP Instance UID (same length, last digit). */
        const char *uid = "1.2.826.0.1.3680043.10.99.1.1.2";
        uint8_t *p = memmem(buf, len, uid, strlen(uid));
        assert_non_null(p);
        p[strlen(uid) - 1] = '3';
        expect_refused(e, buf, len, 0xA900, "Media Storage SOP Instance UID");
        free(buf);
        dcm_ds_free(ds);
    }

    /* Garbage, empty input, a truncated file. */
    uint8_t junk[3000];
    unsigned s = 5;
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (uint8_t)rand_r(&s);
    expect_refused(e, junk, sizeof junk, 0xC000, NULL);
    memset(junk, 0, 128);
    memcpy(junk + 128, "DICM", 4);
    expect_refused(e, junk, sizeof junk, 0xC000, NULL);
    expect_refused(e, junk, 0, 0xC000, NULL);
    size_t len;
    uint8_t *ct = load_pydicom("CT_small.dcm", &len);
    expect_refused(e, ct, 700, 0xC000, NULL);        /* inside the header */
    expect_refused(e, ct, len - 500, 0xC000, "Pixel Data");

    /* Larger than the caller's limit: 0xA700, the feed says so at once. */
    struct ingest_source lim = { .remote_aet = "", .max_size = 1000 };
    struct ingest *in = NULL;
    struct ingest_result res;
    struct pacs_err err = { 0 };
    assert_int_equal(ingest_begin(e->a, &lim, &in, &err), 0);
    assert_int_equal(ingest_feed(in, ct, 600, &err), 0);
    assert_int_equal(ingest_feed(in, ct + 600, 600, &err), PACS_ELIMIT);
    assert_int_equal(ingest_feed(in, ct + 1200, 600, &err), PACS_ELIMIT);
    assert_int_equal(ingest_finish(in, &res, &err), 0);
    assert_int_equal(res.status, 0xA700);
    assert_non_null(strstr(res.message, "Out of resources"));

    /* A parse error is reported by the feed; later feeds are refused too. */
    assert_int_equal(ingest_begin(e->a, &part10_src, &in, &err), 0);
    memset(junk, 0, 128);
    memcpy(junk + 128, "DICM", 4);
    /* An element whose length is beyond any limit. */
    static const uint8_t huge[12] = { 0x08, 0x00, 0x10, 0x00, 'U', 'N', 0, 0, 0xf0, 0xff, 0xff, 0xff };
    memcpy(junk + 132, huge, sizeof huge);
    memset(junk + 144, 0, 64);
    int rc = ingest_feed(in, junk, 208, &err);
    assert_true(rc < 0);
    assert_true(ingest_feed(in, junk, 10, &err) < 0);
    assert_int_equal(ingest_finish(in, &res, &err), 0);
    assert_int_equal(res.status, 0xC000);

    /* Abort mid-way leaves nothing either. */
    assert_int_equal(ingest_begin(e->a, &part10_src, &in, &err), 0);
    assert_int_equal(ingest_feed(in, ct, len / 2, &err), 0);
    ingest_abort(in);

    assert_int_equal(blob_count(e->a), 0);
    assert_int_equal(instance_count(e->a), 0);
    free(ct);
}

/* --- index values and metadata ---------------------------------------------- */

static void test_values_and_metadata(void **state)
{
    struct env *e = *state;
    env_open(e);

    const char *inst = "1.2.826.0.1.3680043.10.99.2.1";
    struct dcm_ds *ds = synthetic(inst);
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG_SPECIFIC_CHARSET, DCM_VR_CS, "ISO_IR 100"), 0);
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0010, 0x0010), DCM_VR_PN, "M\xfcller^J\xfcrgen"), 0);
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0008, 0x0020), DCM_VR_DA, "2001.01.02"), 0);
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0008, 0x0030), DCM_VR_TM, "10:30:00.5"), 0);
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0008, 0x0021), DCM_VR_DA, "not a date"), 0);
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0008, 0x0060), DCM_VR_CS, "MR"), 0);
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0020, 0x0032), DCM_VR_DS, "1\\ 2.5\\-3 "), 0);
    uint16_t slices = 12;
    assert_int_equal(dcm_ds_put(ds, DCM_TAG(0x0054, 0x0081), DCM_VR_US, &slices, 2, NULL), 0);
    /* Binary values: a short one inline, long ones as bulk data, nested too. */
    static uint8_t big[2000], small[10];
    memset(big, 0xab, sizeof big);
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0029, 0x0010), DCM_VR_LO, "PACSD TEST"), 0);
    assert_int_equal(dcm_ds_put(ds, DCM_TAG(0x0029, 0x1010), DCM_VR_OB, big, sizeof big, NULL), 0);
    assert_int_equal(dcm_ds_put(ds, DCM_TAG(0x0029, 0x1011), DCM_VR_OB, small, sizeof small, NULL), 0);
    struct dcm_elem *seq;
    struct dcm_ds *item;
    assert_int_equal(dcm_ds_put_seq(ds, DCM_TAG(0x0040, 0x0275), &seq), 0);
    assert_int_equal(dcm_seq_add_item(ds, seq, &item), 0);
    assert_int_equal(dcm_seq_add_item(ds, seq, &item), 0);
    assert_int_equal(dcm_ds_put(item, DCM_TAG(0x0029, 0x0010), DCM_VR_LO, "PACSD TEST", 10, NULL), 0);
    assert_int_equal(dcm_ds_put(item, DCM_TAG(0x0029, 0x1010), DCM_VR_OB, big, sizeof big, NULL), 0);
    /* Native 8-bit pixels. */
    uint16_t rows = 4, bits = 8;
    assert_int_equal(dcm_ds_put(ds, DCM_TAG(0x0028, 0x0010), DCM_VR_US, &rows, 2, NULL), 0);
    assert_int_equal(dcm_ds_put(ds, DCM_TAG(0x0028, 0x0011), DCM_VR_US, &rows, 2, NULL), 0);
    assert_int_equal(dcm_ds_put(ds, DCM_TAG(0x0028, 0x0100), DCM_VR_US, &bits, 2, NULL), 0);
    assert_int_equal(dcm_ds_put(ds, DCM_TAG_PIXEL_DATA, DCM_VR_OB, big, 16, NULL), 0);

    size_t len;
    uint8_t *buf = write_part10(ds, NULL, &len);
    unsigned seed = 3;
    struct ingest_result res;
    assert_int_equal(ingest_buf(e->a, &part10_src, buf, len, &seed, &res), 0);
    if (res.status)
        fail_msg("0x%04X %s", res.status, res.message);
    assert_int_equal(res.duplicate, 0);
    assert_string_equal(res.study_uid, "1.2.826.0.1.3680043.10.99.1");
    assert_string_equal(res.series_uid, "1.2.826.0.1.3680043.10.99.1.1");

    struct row row;
    find_instance(e->a, inst, &row);
    assert_int_equal(row.found, 1);
    assert_string_equal(row_value(&row, DCM_TAG(0x0010, 0x0010)), "M\xc3\xbcller^J\xc3\xbcrgen");
    assert_string_equal(row_value(&row, DCM_TAG(0x0010, 0x0020)), "PID1");
    assert_string_equal(row_value(&row, DCM_TAG(0x0008, 0x0020)), "20010102");
    assert_string_equal(row_value(&row, DCM_TAG(0x0008, 0x0030)), "103000.5");
    assert_string_equal(row_value(&row, DCM_TAG(0x0008, 0x0021)), "not a date");
    assert_string_equal(row_value(&row, DCM_TAG(0x0008, 0x0060)), "MR");
    assert_string_equal(row_value(&row, DCM_TAG(0x0020, 0x0032)), "1\\2.5\\-3");
    assert_string_equal(row_value(&row, DCM_TAG(0x0054, 0x0081)), "12");
    assert_null(row_value(&row, DCM_TAG(0x0008, 0x0050))); /* absent */

    assert_non_null(strstr(row.meta, "\"00291010\":{\"vr\":\"OB\",\"BulkDataURI\":\"bulk/00291010\"}"));
    assert_non_null(strstr(row.meta, "\"00291010\":{\"vr\":\"OB\",\"BulkDataURI\":\"bulk/00400275/1/00291010\"}"));
    assert_non_null(strstr(row.meta, "\"00291011\":{\"vr\":\"OB\",\"InlineBinary\""));
    assert_non_null(strstr(row.meta, "\"7FE00010\":{\"vr\":\"OB\",\"BulkDataURI\":\"bulk/7FE00010\"}"));
    struct dcm_ds *md = NULL;
    assert_int_equal(dcm_json_read(row.meta, row.meta_len, &md, NULL), 0);
    struct dynbuf t;
    dynbuf_init(&t, 0);
    elem_text(md, DCM_TAG(0x0010, 0x0010), &t);
    assert_string_equal((const char *)t.data, "M\xc3\xbcller^J\xc3\xbcrgen");
    dynbuf_free(&t);
    dcm_ds_free(md);
    row_free(&row);
    free(buf);

    /* No pixel data: no Pixel Data member. */
    assert_int_equal(dcm_ds_remove(ds, DCM_TAG_PIXEL_DATA), 0);
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0008, 0x0018), DCM_VR_UI, "1.2.826.0.1.3680043.10.99.2.2"), 0);
    buf = write_part10(ds, DCM_UID_IMPLICIT_LE, &len);
    assert_int_equal(ingest_buf(e->a, &part10_src, buf, len, &seed, &res), 0);
    assert_int_equal(res.status, 0);
    find_instance(e->a, "1.2.826.0.1.3680043.10.99.2.2", &row);
    assert_int_equal(row.found, 1);
    assert_null(strstr(row.meta, "7FE00010"));
    row_free(&row);
    free(buf);
    dcm_ds_free(ds);
}

/* --- duplicates ------------------------------------------------------------- */

static void dup_case(struct env *e, enum config_dup_policy pol)
{
    e->cfg.dicom.duplicates = pol;
    env_open(e);
    size_t len;
    uint8_t *file = load_pydicom("CT_small.dcm", &len);
    struct dcm_file f = { 0 };
    struct dcm_read_opts ro = { .stop_tag = DCM_TAG_PIXEL_DATA };
    assert_int_equal(dcm_read_part10(file, len, &ro, &f, NULL), 0);
    char cls[65], inst[65];
    assert_int_equal(dcm_ds_get_str(f.ds, DCM_TAG(0x0008, 0x0016), 0, cls, sizeof cls), 0);
    assert_int_equal(dcm_ds_get_str(f.ds, DCM_TAG(0x0008, 0x0018), 0, inst, sizeof inst), 0);
    unsigned seed = 11;
    struct ingest_result r1, r2;

    /* First as a file, then the same instance raw (a different file). */
    assert_int_equal(ingest_buf(e->a, &part10_src, file, len, &seed, &r1), 0);
    assert_int_equal(r1.status, 0);
    assert_int_equal(r1.duplicate, 0);
    struct ingest_source raw = { .ts_uid = f.ts_uid, .sop_class_uid = cls,
                                 .sop_instance_uid = inst, .remote_aet = "MOD" };
    int rc = ingest_buf(e->a, &raw, file + f.ds_offset, len - (size_t)f.ds_offset, &seed, &r2);
    assert_int_equal(rc, 0);
    assert_int_not_equal(r1.size, r2.size);

    struct row row;
    find_instance(e->a, inst, &row);
    assert_int_equal(row.found, 1);
    switch (pol) {
    case CONFIG_DUP_REPLACE:
        assert_int_equal(r2.status, 0);
        assert_int_equal(r2.duplicate, 1);
        assert_int_equal(row.size, r2.size);
        break;
    case CONFIG_DUP_KEEP:
        assert_int_equal(r2.status, 0);
        assert_int_equal(r2.duplicate, 2);
        assert_int_equal(row.size, r1.size);
        break;
    case CONFIG_DUP_REJECT:
        assert_int_equal(r2.status, 0x0111);
        assert_int_equal(r2.duplicate, 3);
        assert_true(r2.message[0]);
        assert_int_equal(row.size, r1.size);
        break;
    }
    char key[65];
    copy_text(key, sizeof key, row.key);
    row_free(&row);

    /* Once the committer is done (close drains it), only the row's file is
     * left, and a restart finds nothing to clean. */
    env_close(e);
    env_open(e);
    assert_int_equal(e->st.orphans_removed, 0);
    assert_int_equal(instance_count(e->a), 1);
    assert_int_equal(blob_count(e->a), 1);
    assert_true(blob_exists(e->a, key));

    dcm_file_free(&f);
    free(file);
}

static void test_dup_replace(void **state)
{
    dup_case(*state, CONFIG_DUP_REPLACE);
}

static void test_dup_keep(void **state)
{
    dup_case(*state, CONFIG_DUP_KEEP);
}

static void test_dup_reject(void **state)
{
    dup_case(*state, CONFIG_DUP_REJECT);
}

/* --- concurrency ------------------------------------------------------------ */

#define N_THREADS 8
#define PER_THREAD 30

struct worker {
    struct archive *a;
    uint8_t *bufs[PER_THREAD];
    size_t lens[PER_THREAD];
    unsigned seed;
    unsigned ok;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        struct ingest *in = NULL;
        struct ingest_result res;
        if (ingest_begin(w->a, &part10_src, &in, NULL))
            continue;
        for (size_t off = 0; off < w->lens[i];) {
            size_t c = chunk_size(&w->seed);
            if (c > w->lens[i] - off)
                c = w->lens[i] - off;
            if (ingest_feed(in, w->bufs[i] + off, c, NULL))
                break;
            off += c;
        }
        if (ingest_finish(in, &res, NULL) == 0 && res.status == 0 && res.duplicate == 0)
            w->ok++;
    }
    return NULL;
}

static void test_concurrent(void **state)
{
    struct env *e = *state;
    env_open(e);
    size_t len;
    uint8_t *file = load_pydicom("CT_small.dcm", &len);
    struct dcm_file f = { 0 };
    struct dcm_read_opts ro = { .copy_values = true };
    assert_int_equal(dcm_read_part10(file, len, &ro, &f, NULL), 0);

    static struct worker w[N_THREADS];
    for (int t = 0; t < N_THREADS; t++) {
        w[t] = (struct worker){ .a = e->a, .seed = 100u + (unsigned)t };
        for (int i = 0; i < PER_THREAD; i++) {
            char uid[65];
            int n = snprintf(uid, sizeof uid, "1.2.826.0.1.3680043.10.99.3.%d.%d", t + 1, i + 1);
            assert_true(n > 0 && (size_t)n < sizeof uid);
            assert_int_equal(dcm_ds_put_str(f.ds, DCM_TAG(0x0008, 0x0018), DCM_VR_UI, uid), 0);
            w[t].bufs[i] = write_part10(f.ds, f.ts_uid, &w[t].lens[i]);
        }
    }
    struct archive_commit_stats before, after;
    archive_get_commit_stats(e->a, &before);
    pthread_t th[N_THREADS];
    for (int t = 0; t < N_THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, worker_main, &w[t]), 0);
    for (int t = 0; t < N_THREADS; t++)
        assert_int_equal(pthread_join(th[t], NULL), 0);
    archive_get_commit_stats(e->a, &after);

    unsigned ok = 0;
    for (int t = 0; t < N_THREADS; t++) {
        ok += w[t].ok;
        for (int i = 0; i < PER_THREAD; i++)
            free(w[t].bufs[i]);
    }
    uint64_t batches = after.batches - before.batches, recs = after.records - before.records;
    print_message("%llu instances in %llu batches (largest %llu)\n", (unsigned long long)recs,
                  (unsigned long long)batches, (unsigned long long)after.max_batch);
    assert_int_equal(ok, N_THREADS * PER_THREAD);
    assert_int_equal(recs, N_THREADS * PER_THREAD);
    assert_true(batches < recs);   /* stores shared transactions */
    assert_true(after.max_batch > 1);
    assert_int_equal(after.failed_batches, 0);
    assert_int_equal(instance_count(e->a), N_THREADS * PER_THREAD);
    assert_int_equal(blob_count(e->a), N_THREADS * PER_THREAD);

    dcm_file_free(&f);
    free(file);
}

/* --- start-up recovery ------------------------------------------------------ */

static void test_reopen_recovery(void **state)
{
    struct env *e = *state;
    env_open(e);
    size_t len;
    uint8_t *file = load_pydicom("MR_small.dcm", &len);
    unsigned seed = 5;
    struct ingest_result res;
    assert_int_equal(ingest_buf(e->a, &part10_src, file, len, &seed, &res), 0);
    assert_int_equal(res.status, 0);
    struct row row;
    find_instance(e->a, res.sop_instance_uid, &row);
    assert_int_equal(row.found, 1);
    char key[65];
    copy_text(key, sizeof key, row.key);
    row_free(&row);
    env_close(e);

    /* A crash after a put committed but before its row did, and one in the
     * middle of a put. */
    char files[600];
    int n = snprintf(files, sizeof files, "%s/files", e->cfg.data_dir);
    assert_true(n > 0 && (size_t)n < sizeof files);
    struct blob_store *bs = NULL;
    struct blob_writer *bw = NULL;
    assert_int_equal(blob_fs_ops.open(files, &bs, NULL), 0);
    assert_int_equal(bs->ops->put_begin(bs, "0123456789abcdef0123456789abcdef", &bw, NULL), 0);
    assert_int_equal(bs->ops->put_write(bw, "orphan", 6, NULL), 0);
    assert_int_equal(bs->ops->put_commit(bw, NULL), 0);
    assert_int_equal(bs->ops->sync(bs, NULL), 0);
    bs->ops->close(bs);
    char tmp[700];
    n = snprintf(tmp, sizeof tmp, "%s/tmp/fedcba9876543210.1.1", files);
    assert_true(n > 0 && (size_t)n < sizeof tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0640);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "partial", 7), 7);
    close(fd);

    env_open(e);
    assert_int_equal(e->st.temp_removed, 1);
    assert_int_equal(e->st.orphans_removed, 1);
    assert_int_equal(access(tmp, F_OK), -1);
    assert_false(blob_exists(e->a, "0123456789abcdef0123456789abcdef"));
    assert_true(blob_exists(e->a, key));
    assert_int_equal(instance_count(e->a), 1);
    size_t slen;
    uint8_t *stored = read_blob(e->a, key, &slen);
    assert_int_equal(slen, len);
    assert_memory_equal(stored, file, len);
    free(stored);

    /* A third start has nothing to do. */
    env_close(e);
    env_open(e);
    assert_int_equal(e->st.temp_removed, 0);
    assert_int_equal(e->st.orphans_removed, 0);
    free(file);
}

int main(void)
{
    log_set_level(CONFIG_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_part10_corpus, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_values_and_metadata, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dup_replace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dup_keep, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dup_reject, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_recovery, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
