/* ingest.c - from arriving bytes to a durable, indexed instance.
 *
 * Every byte goes to the blob writer and into a SHA-256 as it arrives; the
 * same bytes feed a stream reader until it stops at Pixel Data, so only the
 * elements before the pixels are ever held in memory. The first bytes of
 * the element the reader stopped at are kept (at most 12) to learn whether
 * it is Pixel Data, its VR and its length, without reading the pixels.
 * ingest_finish checks the UIDs, extracts the index values and the metadata
 * JSON, commits the blob and hands the record to the group committer
 * (archive_priv.h). docs/ingest.md tells the whole story.
 */
#include "archive/ingest.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <openssl/evp.h>

#include "archive/archive_priv.h"
#include "dicom/dict.h"
#include "dicom/json.h"
#include "dicom/reader.h"
#include "dicom/writer.h"
#include "util/dynbuf.h"
#include "util/limits.h"
#include "util/log.h"
#include "util/metrics.h"

/* DIMSE statuses (PS3.4 B.2.3, PS3.7 C.5.8). */
#define ST_SUCCESS 0x0000
#define ST_DUPLICATE 0x0111
#define ST_OUT_OF_RESOURCES 0xA700
#define ST_NOT_SOP_CLASS 0xA900
#define ST_CANNOT_UNDERSTAND 0xC000
#define ST_CLASS_NOT_SUPPORTED 0x0122
#define ST_TS_NOT_SUPPORTED 0xC122
/* Every storage SOP class of the standard lives under this root. */
#define STORAGE_CLASS_ROOT "1.2.840.10008.5.1.4.1.1."

/* Binary values longer than this go to the metadata as BulkDataURI. */
#define BULK_INLINE_MAX 1024
/* Bytes of the last chunks kept in case the stop element's tag began in
 * them (the reader may hold up to 7 bytes before it can decide). */
#define TAIL_MAX 16

struct ingest {
    struct archive *a;
    struct blob_store *bs;
    struct blob_writer *w;       /* NULL once committed or aborted */
    struct dcm_stream *st;       /* NULL once stopped or failed */
    struct dcm_file f;           /* valid when have_file */
    bool have_file;
    bool raw;
    EVP_MD_CTX *sha;
    char key[33];
    char ts_uid[65];             /* raw only */
    char cmd_class[65], cmd_inst[65];
    char remote_aet[65];
    char expect_study[65];
    bool have_expect_study;
    bool expect_study_bad;       /* given, but too long to be a UID */
    uint64_t max_size;
    uint64_t in_len;             /* caller's bytes so far */
    uint64_t size;               /* blob bytes so far */
    uint64_t hdr_len;            /* blob bytes before the caller's (raw) */

    /* The first failure: a status for the peer, and whether it is ours. */
    bool failed;
    bool internal;
    int fail_rc;
    uint16_t status;
    char message[256];

    /* Bytes of the element the reader stopped at (input offset stop_off). */
    uint8_t tail[TAIL_MAX];
    size_t tail_len;
    uint64_t tail_off;
    uint64_t stop_off;
    uint8_t px[12];
    size_t px_have;
};

/* --- failures ------------------------------------------------------------ */

/* Records the first failure and drops what is no longer needed (so a bad
 * instance frees its disk space and memory at once). Returns the code. */
static int set_fail(struct ingest *in, uint16_t status, int code, bool internal, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int set_fail(struct ingest *in, uint16_t status, int code, bool internal, const char *fmt, ...)
{
    if (in->failed)
        return in->fail_rc;
    in->failed = true;
    in->internal = internal;
    in->fail_rc = code ? code : PACS_EINVAL;
    in->status = status;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(in->message, sizeof in->message, fmt, ap);
    va_end(ap);
    if (n < 0)
        in->message[0] = '\0'; /* a cut message is still the right message */
    if (in->w) {
        in->bs->ops->put_abort(in->w);
        in->w = NULL;
    }
    if (in->st) {
        dcm_stream_free(in->st);
        in->st = NULL;
    }
    return in->fail_rc;
}

static int report_fail(struct ingest *in, struct pacs_err *err)
{
    return pacs_err_set(err, in->fail_rc, "%s", in->message);
}

/* --- small helpers ------------------------------------------------------- */

/* Copies s without trailing spaces/NULs; false if it does not fit. */
static bool copy_trimmed(char *dst, size_t size, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\0'))
        n--;
    if (n >= size) {
        dst[0] = '\0';
        return false;
    }
    if (n)
        memcpy(dst, s, n);
    dst[n] = '\0';
    return true;
}

/* Writes to the blob and the hash; the caller's bytes and ours alike. */
static int blob_append(struct ingest *in, const void *p, size_t n, struct pacs_err *err)
{
    struct pacs_err e = { 0 };
    int rc = in->bs->ops->put_write(in->w, p, n, &e);
    if (rc)
        return pacs_err_set(err, set_fail(in, ST_OUT_OF_RESOURCES, rc, true, "cannot store: %s", e.msg),
                            "cannot store: %s", e.msg);
    if (EVP_DigestUpdate(in->sha, p, n) != 1)
        return pacs_err_set(err, set_fail(in, ST_OUT_OF_RESOURCES, PACS_ENOMEM, true, "SHA-256 failed"),
                            "SHA-256 failed");
    in->size += n;
    return 0;
}

/* The Part 10 header for a raw data set: preamble, "DICM" and a meta group
 * built by the codec from the command's UIDs. dcm_write_part10 with an
 * empty data set gives exactly that (plus, for Deflated, an empty deflate
 * stream), so the output is cut where the group length says the meta
 * group ends. */
static int build_header(struct ingest *in, struct dynbuf *out, struct pacs_err *err)
{
    struct dcm_ds *empty = dcm_ds_new(), *src_meta = dcm_ds_new();
    int rc = 0;
    if (!empty || !src_meta ||
        dcm_ds_put_str(src_meta, DCM_TAG(0x0002, 0x0002), DCM_VR_UI, in->cmd_class) ||
        dcm_ds_put_str(src_meta, DCM_TAG(0x0002, 0x0003), DCM_VR_UI, in->cmd_inst) ||
        (in->remote_aet[0] &&
         dcm_ds_put_str(src_meta, DCM_TAG(0x0002, 0x0016), DCM_VR_AE, in->remote_aet))) {
        rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
        goto out;
    }
    struct dcm_write_opts o = { .ts_uid = in->ts_uid, .src_meta = src_meta };
    struct dcm_sink sink = dcm_sink_dynbuf(out);
    if ((rc = dcm_write_part10(empty, &o, &sink, err)))
        goto out;
    /* 132: preamble + "DICM"; then (0002,0000) UL, 4-byte value at 140. */
    static const uint8_t gl_hdr[8] = { 0x02, 0x00, 0x00, 0x00, 'U', 'L', 0x04, 0x00 };
    if (out->len < 144 || memcmp(out->data + 132, gl_hdr, sizeof gl_hdr) != 0) {
        rc = pacs_err_set(err, PACS_EINVAL, "meta group written without a group length");
        goto out;
    }
    const uint8_t *g = out->data + 140;
    uint64_t end = 144 + ((uint64_t)g[0] | (uint64_t)g[1] << 8 | (uint64_t)g[2] << 16 |
                          (uint64_t)g[3] << 24);
    if (end > out->len) {
        rc = pacs_err_set(err, PACS_EINVAL, "meta group length is wrong");
        goto out;
    }
    out->len = (size_t)end;
    out->data[out->len] = '\0';
out:
    dcm_ds_free(empty);
    dcm_ds_free(src_meta);
    return rc;
}

/* --- begin ---------------------------------------------------------------- */

bool ingest_class_accepted(const struct pacs_config *cfg, const char *uid)
{
    if (cfg->dicom.n_storage_sop_classes) {
        for (size_t i = 0; i < cfg->dicom.n_storage_sop_classes; i++)
            if (strcmp(cfg->dicom.storage_sop_classes[i], uid) == 0)
                return true;
        return false;
    }
    /* Every storage class lives under this root, including those newer
     * than our dictionary; a few older ones are named "...Storage" only. */
    if (strncmp(uid, STORAGE_CLASS_ROOT, strlen(STORAGE_CLASS_ROOT)) == 0)
        return dcm_uid_valid(uid, strlen(uid));
    const struct dcm_uid_entry *u = dcm_uid_lookup(uid, (unsigned)strlen(uid));
    if (!u || u->type != DCM_UID_SOP_CLASS || !u->keyword)
        return false;
    size_t k = strlen(u->keyword);
    return k > 7 && strcmp(u->keyword + k - 7, "Storage") == 0;
}

bool ingest_ts_accepted(const char *uid)
{
    static const char root[] = "1.2.840.10008.1.2.";
    const struct dcm_uid_entry *u = dcm_uid_lookup(uid, (unsigned)strlen(uid));
    if (u)
        return u->type == DCM_UID_TRANSFER_SYNTAX;
    return strncmp(uid, root, sizeof root - 1) == 0 && dcm_uid_valid(uid, strlen(uid));
}

int ingest_begin(struct archive *a, const struct ingest_source *src, struct ingest **out,
                 struct pacs_err *err)
{
    struct dynbuf hdr;
    dynbuf_init(&hdr, PACS_MAX_META_LEN + 256);
    int rc = 0;
    *out = NULL;
    if (!a || !src)
        return pacs_err_set(err, PACS_EINVAL, "ingest_begin: no archive or source");
    struct ingest *in = calloc(1, sizeof *in);
    if (!in)
        return pacs_err_set(err, PACS_ENOMEM, "out of memory");
    in->a = a;
    in->bs = archive_blobs(a);
    in->raw = src->ts_uid != NULL;
    in->max_size = src->max_size ? src->max_size : PACS_MAX_VALUE_LEN;
    copy_trimmed(in->remote_aet, sizeof in->remote_aet, src->remote_aet);
    if (src->expect_study_uid) {
        in->have_expect_study = true;
        in->expect_study_bad =
            !copy_trimmed(in->expect_study, sizeof in->expect_study, src->expect_study_uid);
    }
    in->sha = EVP_MD_CTX_new();
    if (!in->sha || EVP_DigestInit_ex(in->sha, EVP_sha256(), NULL) != 1) {
        rc = pacs_err_set(err, PACS_ENOMEM, "cannot start SHA-256");
        goto out;
    }
    if ((rc = archive_random_key(in->key, err)))
        goto out;

    if (in->raw) {
        /* Bad command values are the peer's: reported by finish, as a
         * status, like any other bad input. */
        struct dcm_ts ts;
        if (!copy_trimmed(in->ts_uid, sizeof in->ts_uid, src->ts_uid) ||
            dcm_ts_from_uid(in->ts_uid, strlen(in->ts_uid), &ts) != 0) {
            set_fail(in, ST_CANNOT_UNDERSTAND, PACS_EINVAL, false, "malformed transfer syntax UID");
            goto done;
        }
        if (!copy_trimmed(in->cmd_class, sizeof in->cmd_class, src->sop_class_uid) ||
            !in->cmd_class[0]) {
            set_fail(in, ST_NOT_SOP_CLASS, PACS_EINVAL, false,
                     "the command has no valid Affected SOP Class UID");
            goto done;
        }
        if (!copy_trimmed(in->cmd_inst, sizeof in->cmd_inst, src->sop_instance_uid) ||
            !in->cmd_inst[0]) {
            set_fail(in, ST_NOT_SOP_CLASS, PACS_EINVAL, false,
                     "the command has no valid Affected SOP Instance UID");
            goto done;
        }
        struct pacs_err e = { 0 };
        int hrc = build_header(in, &hdr, &e);
        if (hrc == PACS_ENOMEM) {
            rc = pacs_err_set(err, hrc, "%s", e.msg);
            goto out;
        }
        if (hrc) {
            set_fail(in, ST_NOT_SOP_CLASS, hrc, false, "cannot build the file meta group: %s", e.msg);
            goto done;
        }
    }

    struct dcm_read_opts ro = { .stop_tag = DCM_TAG_PIXEL_DATA,
                                .ts_uid = in->raw ? in->ts_uid : NULL };
    in->st = dcm_stream_new(&ro);
    if (!in->st) {
        rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = in->bs->ops->put_begin(in->bs, in->key, &in->w, err)))
        goto out;
    if (hdr.len) {
        if ((rc = blob_append(in, hdr.data, hdr.len, err)))
            goto out;
        in->hdr_len = hdr.len;
    }
done:
    *out = in;
    in = NULL;
out:
    dynbuf_free(&hdr);
    if (in)
        ingest_abort(in);
    return rc;
}

/* --- feed ----------------------------------------------------------------- */

/* Keeps the bytes of [stop_off, stop_off + 12) found in the chunk at input
 * offset off. Chunks come in order, so what is kept stays contiguous. */
static void px_capture(struct ingest *in, uint64_t off, const uint8_t *p, size_t n)
{
    uint64_t s = in->stop_off + in->px_have, e = in->stop_off + sizeof in->px;
    uint64_t lo = off > s ? off : s, hi = off + n < e ? off + n : e;
    if (lo != s || hi <= lo)
        return;
    memcpy(in->px + (lo - in->stop_off), p + (lo - off), (size_t)(hi - lo));
    in->px_have = (size_t)(hi - in->stop_off);
}

static void keep_tail(struct ingest *in, uint64_t off, const uint8_t *p, size_t n)
{
    if (n >= TAIL_MAX) {
        memcpy(in->tail, p + n - TAIL_MAX, TAIL_MAX);
        in->tail_len = TAIL_MAX;
    } else {
        size_t keep = in->tail_len + n > TAIL_MAX ? TAIL_MAX - n : in->tail_len;
        memmove(in->tail, in->tail + in->tail_len - keep, keep);
        memcpy(in->tail + keep, p, n);
        in->tail_len = keep + n;
    }
    in->tail_off = off + n - in->tail_len;
}

/* The reader reached Pixel Data (or a later tag): take its result now and
 * start catching the stop element's first bytes. */
static int on_stop(struct ingest *in, uint64_t off, const uint8_t *p, size_t n, struct pacs_err *err)
{
    struct pacs_err e = { 0 };
    int rc = dcm_stream_finish(in->st, &in->f, &e);
    dcm_stream_free(in->st);
    in->st = NULL;
    if (rc)
        return pacs_err_set(err, set_fail(in, ST_CANNOT_UNDERSTAND, rc, false, "%s", e.msg), "%s",
                            e.msg);
    in->have_file = true;
    if (!in->f.ts.deflated) {
        in->stop_off = in->f.end_offset;
        px_capture(in, in->tail_off, in->tail, in->tail_len);
        px_capture(in, off, p, n);
    }
    return 0;
}

int ingest_feed(struct ingest *in, const void *p, size_t n, struct pacs_err *err)
{
    if (in->failed)
        return report_fail(in, err);
    if (n == 0)
        return 0;
    if (n > in->max_size - in->in_len)
        return pacs_err_set(err,
                            set_fail(in, ST_OUT_OF_RESOURCES, PACS_ELIMIT, false,
                                     "Out of resources: the instance is larger than the %llu-byte limit",
                                     (unsigned long long)in->max_size),
                            "%s", in->message);
    int rc = blob_append(in, p, n, err);
    if (rc)
        return rc;
    uint64_t off = in->in_len;
    in->in_len += n;
    if (in->st) {
        struct pacs_err e = { 0 };
        rc = dcm_stream_feed(in->st, p, n, NULL, &e);
        if (rc < 0) {
            bool ours = rc == PACS_ENOMEM;
            set_fail(in, ours ? ST_OUT_OF_RESOURCES : ST_CANNOT_UNDERSTAND, rc, ours, "%s", e.msg);
            return report_fail(in, err);
        }
        if (rc == 1)
            return on_stop(in, off, p, n, err);
        keep_tail(in, off, p, n);
    } else if (in->have_file && in->px_have < sizeof in->px) {
        px_capture(in, off, p, n);
    }
    return 0;
}

/* --- finish: checks ------------------------------------------------------- */

/* A required UID of the data set, checked and copied into dst[65]. */
static bool get_uid(const struct dcm_ds *ds, uint32_t tag, char dst[65])
{
    const struct dcm_elem *e = dcm_ds_find(ds, tag);
    const char *s;
    size_t n;
    dst[0] = '\0';
    if (!e || !dcm_elem_is_value(e) || dcm_elem_vm(e) != 1 || dcm_elem_str(e, 0, &s, &n) != 0 ||
        n > 64 || !dcm_uid_valid(s, n))
        return false;
    memcpy(dst, s, n);
    dst[n] = '\0';
    return true;
}

static bool meta_uid_matches(const struct dcm_ds *meta, uint32_t tag, const char *want)
{
    const struct dcm_elem *e = meta ? dcm_ds_find(meta, tag) : NULL;
    const char *s;
    size_t n;
    if (!e)
        return true; /* nothing to contradict */
    if (!dcm_elem_is_value(e) || dcm_elem_str(e, 0, &s, &n) != 0)
        return false;
    return n == strlen(want) && memcmp(s, want, n) == 0;
}

static int check_uids(struct ingest *in, struct ingest_result *res)
{
    static const struct {
        uint32_t tag;
        const char *name;
        size_t off;
    } req[] = {
        { DCM_TAG(0x0008, 0x0016), "SOP Class UID (0008,0016)", offsetof(struct ingest_result, sop_class_uid) },
        { DCM_TAG(0x0008, 0x0018), "SOP Instance UID (0008,0018)", offsetof(struct ingest_result, sop_instance_uid) },
        { DCM_TAG(0x0020, 0x000D), "Study Instance UID (0020,000D)", offsetof(struct ingest_result, study_uid) },
        { DCM_TAG(0x0020, 0x000E), "Series Instance UID (0020,000E)", offsetof(struct ingest_result, series_uid) },
    };
    for (size_t i = 0; i < sizeof req / sizeof req[0]; i++) {
        if (!get_uid(in->f.ds, req[i].tag, (char *)res + req[i].off))
            return set_fail(in, ST_NOT_SOP_CLASS, PACS_EINVAL, false,
                            "the data set has no valid %s", req[i].name);
    }
    if (!ingest_class_accepted(archive_config(in->a), res->sop_class_uid))
        return set_fail(in, ST_CLASS_NOT_SUPPORTED, PACS_EUNSUPPORTED, false,
                        "SOP class %s is not one pacsd stores (dicom.storage_sop_classes)",
                        res->sop_class_uid);
    if (!in->raw && !ingest_ts_accepted(in->f.ts_uid))
        return set_fail(in, ST_TS_NOT_SUPPORTED, PACS_EUNSUPPORTED, false,
                        "transfer syntax %s is not a transfer syntax of the standard",
                        in->f.ts_uid);
    if (in->have_expect_study && (in->expect_study_bad || strcmp(in->expect_study, res->study_uid) != 0))
        return set_fail(in, ST_NOT_SOP_CLASS, PACS_EINVAL, false,
                        "the instance belongs to study %s, not to the study %.64s of the request",
                        res->study_uid, in->expect_study_bad ? "(too long)" : in->expect_study);
    if (in->raw) {
        if (strcmp(in->cmd_class, res->sop_class_uid) != 0)
            return set_fail(in, ST_NOT_SOP_CLASS, PACS_EINVAL, false,
                            "the command's SOP Class UID %s differs from the data set's %s",
                            in->cmd_class, res->sop_class_uid);
        if (strcmp(in->cmd_inst, res->sop_instance_uid) != 0)
            return set_fail(in, ST_NOT_SOP_CLASS, PACS_EINVAL, false,
                            "the command's SOP Instance UID %s differs from the data set's %s",
                            in->cmd_inst, res->sop_instance_uid);
    } else {
        if (!meta_uid_matches(in->f.meta, DCM_TAG(0x0002, 0x0002), res->sop_class_uid))
            return set_fail(in, ST_NOT_SOP_CLASS, PACS_EINVAL, false,
                            "Media Storage SOP Class UID (0002,0002) differs from the data set's SOP Class UID %s",
                            res->sop_class_uid);
        if (!meta_uid_matches(in->f.meta, DCM_TAG(0x0002, 0x0003), res->sop_instance_uid))
            return set_fail(in, ST_NOT_SOP_CLASS, PACS_EINVAL, false,
                            "Media Storage SOP Instance UID (0002,0003) differs from the data set's SOP Instance UID %s",
                            res->sop_instance_uid);
    }
    return 0;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t load32(bool be, const uint8_t *p)
{
    return be ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3] : le32(p);
}

static uint16_t load16(bool be, const uint8_t *p)
{
    return be ? (uint16_t)(p[0] << 8 | p[1]) : (uint16_t)(p[0] | p[1] << 8);
}

/* Native pixel data's VR when the encoding does not say: OW, as PS3.5 A.1
 * gives for Implicit VR; OB for 8-bit data in the explicit syntaxes. */
static uint16_t native_vr(const struct ingest *in)
{
    if (!in->f.ts.explicit_vr)
        return DCM_VR_OW;
    const struct dcm_elem *ba = dcm_ds_find(in->f.ds, DCM_TAG(0x0028, 0x0100));
    uint64_t bits = 16;
    if (ba && dcm_elem_uint(ba, 0, &bits) != 0)
        bits = 16;
    return bits > 8 ? DCM_VR_OW : DCM_VR_OB;
}

/* Whether the reader stopped at Pixel Data, and its VR for the metadata.
 * Also fails an input that ends inside native pixel data. */
static int pixel_data(struct ingest *in, uint16_t *vr)
{
    *vr = DCM_VR_NONE;
    if (!in->f.stopped)
        return 0;
    if (in->f.ts.deflated) {
        /* The stop element lies in the inflated stream, which the reader
         * does not show: an image (Rows present) is taken to have pixels. */
        if (dcm_ds_find(in->f.ds, DCM_TAG(0x0028, 0x0010)))
            *vr = native_vr(in);
        return 0;
    }
    bool be = in->f.ts.big_endian;
    if (in->px_have < 4)
        return set_fail(in, ST_CANNOT_UNDERSTAND, PACS_ETRUNC, false,
                        "offset %llu: input ends inside an element tag",
                        (unsigned long long)in->stop_off);
    uint32_t tag = (uint32_t)load16(be, in->px) << 16 | load16(be, in->px + 2);
    if (tag != DCM_TAG_PIXEL_DATA)
        return 0;
    uint32_t len;
    size_t hlen = 8;
    uint16_t evr = DCM_VR_OW;
    if (in->f.ts.explicit_vr) {
        if (in->px_have < 8)
            goto truncated;
        evr = (uint16_t)(in->px[4] << 8 | in->px[5]);
        if (dcm_vr_long_length(evr)) {
            if (in->px_have < 12)
                goto truncated;
            len = load32(be, in->px + 8);
            hlen = 12;
        } else {
            len = load16(be, in->px + 6);
        }
    } else {
        if (in->px_have < 8)
            goto truncated;
        len = load32(be, in->px + 4);
    }
    if (len == DCM_UNDEFINED_LENGTH) {
        *vr = DCM_VR_OB; /* encapsulated */
        return 0;
    }
    if (in->stop_off + hlen + len > in->in_len)
        return set_fail(in, ST_CANNOT_UNDERSTAND, PACS_ETRUNC, false,
                        "offset %llu: input ends inside Pixel Data (%u bytes announced, %llu present)",
                        (unsigned long long)in->stop_off, len,
                        (unsigned long long)(in->in_len - in->stop_off - hlen));
    *vr = (in->f.ts.explicit_vr && (evr == DCM_VR_OB || evr == DCM_VR_OW)) ? evr : native_vr(in);
    return 0;
truncated:
    return set_fail(in, ST_CANNOT_UNDERSTAND, PACS_ETRUNC, false,
                    "offset %llu: input ends inside the Pixel Data header",
                    (unsigned long long)in->stop_off);
}

/* --- finish: index values -------------------------------------------------- */

static bool is_space(char c)
{
    return c == ' ' || c == '\0';
}

/* One value (one of a multi-valued element), trimmed and normalized so that
 * text order is time order: legacy "2001.01.02" dates and "10:30:00" times
 * lose their separators; anything that then does not parse is kept as is. */
static int put_value(struct dynbuf *out, uint16_t vr, const char *s, size_t n)
{
    while (n && is_space(*s)) {
        s++;
        n--;
    }
    while (n && is_space(s[n - 1]))
        n--;
    char sep = vr == DCM_VR_DA ? '.' : vr == DCM_VR_TM ? ':' : 0;
    if (sep && n < 64 && memchr(s, sep, n)) {
        char tmp[64];
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (s[i] != sep)
                tmp[k++] = s[i];
        }
        struct dcm_datetime dt;
        int ok = vr == DCM_VR_DA ? dcm_parse_da(tmp, k, &dt) : dcm_parse_tm(tmp, k, &dt);
        if (ok == 0)
            return dynbuf_append(out, tmp, k);
    }
    return dynbuf_append(out, s, n);
}

/* Appends the element's index text to out (UTF-8, values joined by '\').
 * Values that cannot be read are left out: the index is a cache of the
 * file, and a bad optional value must not refuse the instance. */
static int index_text(const struct dcm_ds *ds, const struct dcm_elem *e0, uint16_t want_vr,
                      struct dynbuf *scratch, struct dynbuf *out)
{
    struct dcm_elem e = *e0;
    if (e.vr == DCM_VR_UN)
        e.vr = want_vr; /* a standard tag sent as UN: read it as its VR */
    if (dcm_vr_is_string(e.vr)) {
        dynbuf_reset(scratch);
        struct pacs_err perr = { 0 };
        int rc = dcm_elem_text(ds, &e, scratch, &perr);
        if (rc)
            return rc == PACS_ENOMEM ? rc : 0;
        const char *s = (const char *)scratch->data;
        size_t n = scratch->len;
        if (!dcm_vr_multivalued(e.vr)) {
            while (n && s[n - 1] == ' ')
                n--;
            return dynbuf_append(out, s, n);
        }
        for (;;) {
            const char *bs = memchr(s, '\\', n);
            size_t vn = bs ? (size_t)(bs - s) : n;
            if ((rc = put_value(out, e.vr, s, vn)))
                return rc;
            if (!bs)
                return 0;
            if ((rc = dynbuf_putc(out, '\\')))
                return rc;
            s = bs + 1;
            n -= vn + 1;
        }
    }
    if (dcm_vr_num_size(e.vr) && e.vr != DCM_VR_AT) {
        uint32_t vm = dcm_elem_vm(&e);
        for (uint32_t k = 0; k < vm; k++) {
            int rc;
            if (e.vr == DCM_VR_FL || e.vr == DCM_VR_FD) {
                double d;
                if (dcm_elem_double(&e, k, &d))
                    return 0;
                rc = dynbuf_printf(out, "%s%.17g", k ? "\\" : "", d);
            } else {
                int64_t v;
                if (dcm_elem_int(&e, k, &v))
                    return 0;
                rc = dynbuf_printf(out, "%s%lld", k ? "\\" : "", (long long)v);
            }
            if (rc)
                return rc;
        }
    }
    return 0;
}

/* Fills vals with one NUL-terminated string per present main tag and
 * offs[i] with its offset (SIZE_MAX: absent or empty). */
static int extract_values(const struct dcm_ds *ds, struct dynbuf *vals, size_t *offs)
{
    struct dynbuf scratch;
    dynbuf_init(&scratch, PACS_MAX_STRING_LEN);
    int rc = 0;
    for (size_t i = 0; i < index_n_main_tags && i < INDEX_MAX_MAIN_TAGS; i++) {
        offs[i] = SIZE_MAX;
        const struct dcm_elem *e = dcm_ds_find(ds, index_main_tags[i].tag);
        if (!e || !dcm_elem_is_value(e) || e->len == 0)
            continue;
        size_t start = vals->len;
        if ((rc = index_text(ds, e, index_main_tags[i].vr, &scratch, vals)))
            break;
        if (vals->len == start)
            continue;
        if ((rc = dynbuf_putc(vals, '\0')))
            break;
        offs[i] = start;
    }
    dynbuf_free(&scratch);
    return rc;
}

/* --- finish: metadata ------------------------------------------------------ */

/* Which sequence of `parent` holds `item`, and at which index. */
static bool find_item(const struct dcm_ds *parent, const struct dcm_ds *item, uint32_t *tag,
                      uint32_t *idx)
{
    for (uint32_t i = 0; i < parent->n; i++) {
        const struct dcm_elem *e = &parent->el[i];
        if (!(e->flags & DCM_EF_SEQ))
            continue;
        for (uint32_t k = 0; k < e->u.items.n; k++) {
            if (e->u.items.v[k] == item) {
                *tag = e->tag;
                *idx = k;
                return true;
            }
        }
    }
    return false;
}

/* Large binary values become "bulk/GGGGEEEE", nested ones
 * "bulk/SSSSSSSS/i/.../GGGGEEEE" (sequence tag, 0-based item index): a
 * path into the stored file that the bulk data retrieve resolves. */
static bool bulk_uri(void *ctx, const struct dcm_ds *ds, const struct dcm_elem *e,
                     struct dynbuf *uri)
{
    (void)ctx;
    if (!(e->flags & DCM_EF_ENCAPS) && e->len <= BULK_INLINE_MAX)
        return false;
    struct {
        uint32_t tag, idx;
    } path[PACS_MAX_SEQ_DEPTH + 1];
    size_t depth = 0;
    for (const struct dcm_ds *cur = ds; cur->parent; cur = cur->parent) {
        if (depth == sizeof path / sizeof path[0] ||
            !find_item(cur->parent, cur, &path[depth].tag, &path[depth].idx))
            return false;
        depth++;
    }
    if (dynbuf_puts(uri, "bulk"))
        return false;
    while (depth--) {
        if (dynbuf_printf(uri, "/%08X/%u", (unsigned)path[depth].tag, (unsigned)path[depth].idx))
            return false;
    }
    return dynbuf_printf(uri, "/%08X", (unsigned)e->tag) == 0;
}

/* The data set as read (up to Pixel Data) in DICOM JSON, and Pixel Data,
 * which was never read, as a BulkDataURI member. It sorts after every
 * element read, so it goes last, just before the closing brace. */
static int metadata_json(const struct dcm_ds *ds, uint16_t px_vr, struct dynbuf *out,
                         struct pacs_err *err)
{
    struct dcm_json_opts o = { .bulk_uri = bulk_uri };
    int rc = dcm_json_write(ds, &o, out, err);
    if (rc || px_vr == DCM_VR_NONE)
        return rc;
    while (out->len && out->data[out->len - 1] != '}')
        out->len--;
    if (out->len == 0)
        return pacs_err_set(err, PACS_EINVAL, "metadata is not a JSON object");
    out->len--;
    size_t body = out->len;
    while (body && (out->data[body - 1] == ' ' || out->data[body - 1] == '\n'))
        body--;
    bool empty = body && out->data[body - 1] == '{';
    char vr[3];
    rc = dynbuf_printf(out, "%s\"7FE00010\":{\"vr\":\"%s\",\"BulkDataURI\":\"bulk/7FE00010\"}}",
                       empty ? "" : ",", dcm_vr_str(px_vr, vr));
    if (rc)
        return pacs_err_set(err, rc, "metadata too large");
    return 0;
}

/* --- finish ---------------------------------------------------------------- */

static void copy_str(char *dst, size_t size, const char *s)
{
    size_t n = strnlen(s, size - 1);
    memcpy(dst, s, n);
    dst[n] = '\0';
}

int ingest_finish(struct ingest *in, struct ingest_result *res, struct pacs_err *err)
{
    struct dynbuf vals, json;
    size_t offs[INDEX_MAX_MAIN_TAGS];
    struct pacs_err e = { 0 };
    int rc = 0;
    double t0 = metrics_now();
    dynbuf_init(&vals, 0);
    dynbuf_init(&json, PACS_MAX_JSON_LEN);
    memset(res, 0, sizeof *res);
    if (in->failed)
        goto failed;

    if (!in->have_file) {
        rc = dcm_stream_finish(in->st, &in->f, &e);
        dcm_stream_free(in->st);
        in->st = NULL;
        if (rc) {
            bool ours = rc == PACS_ENOMEM;
            set_fail(in, ours ? ST_OUT_OF_RESOURCES : ST_CANNOT_UNDERSTAND, rc, ours, "%s", e.msg);
            goto failed;
        }
        in->have_file = true;
    }
    copy_str(res->transfer_syntax, sizeof res->transfer_syntax, in->f.ts_uid);
    res->size = in->size;
    if (!in->raw && (!in->f.meta || in->f.meta->n == 0)) {
        set_fail(in, ST_CANNOT_UNDERSTAND, PACS_EINVAL, false,
                 "not a DICOM Part 10 file: no file meta information (0002,xxxx)");
        goto failed;
    }
    if (check_uids(in, res))
        goto failed;
    uint16_t px_vr;
    if (pixel_data(in, &px_vr))
        goto failed;

    if ((rc = extract_values(in->f.ds, &vals, offs))) {
        set_fail(in, ST_OUT_OF_RESOURCES, rc, true, "out of memory extracting index values");
        goto failed;
    }
    if ((rc = metadata_json(in->f.ds, px_vr, &json, &e))) {
        bool ours = rc == PACS_ENOMEM;
        set_fail(in, ST_OUT_OF_RESOURCES, rc, ours, "cannot build the metadata: %s", e.msg);
        goto failed;
    }

    struct index_record rec = {
        .transfer_syntax = in->f.ts_uid,
        .blob_key = in->key,
        .size = in->size,
        .ds_offset = in->raw ? in->hdr_len : in->f.ds_offset,
        .metadata_json = (const char *)json.data,
        .metadata_len = json.len,
        .remote_aet = in->remote_aet,
        .received_at = (int64_t)time(NULL),
    };
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (EVP_DigestFinal_ex(in->sha, md, &mdlen) != 1 || mdlen != 32) {
        set_fail(in, ST_OUT_OF_RESOURCES, PACS_ENOMEM, true, "SHA-256 failed");
        goto failed;
    }
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        rec.sha256[2 * i] = hex[md[i] >> 4];
        rec.sha256[2 * i + 1] = hex[md[i] & 15];
    }
    rec.sha256[64] = '\0';
    for (size_t i = 0; i < index_n_main_tags && i < INDEX_MAX_MAIN_TAGS; i++)
        rec.values[i] = offs[i] == SIZE_MAX ? NULL : (const char *)vals.data + offs[i];

    /* The file's bytes are durable from here; its name at the next sync. */
    rc = in->bs->ops->put_commit(in->w, &e);
    in->w = NULL;
    if (rc) {
        set_fail(in, ST_OUT_OF_RESOURCES, rc, true, "cannot store: %s", e.msg);
        goto failed;
    }

    enum index_insert_outcome outcome = INDEX_FAILED;
    rc = archive_commit(in->a, &rec, &outcome, &e);
    if (rc) {
        /* Never queued: the blob is ours to remove. */
        in->bs->ops->del(in->bs, in->key, NULL);
        set_fail(in, ST_OUT_OF_RESOURCES, rc, true, "cannot store: %s", e.msg);
        goto failed;
    }
    switch (outcome) {
    case INDEX_INSERTED:
    case INDEX_REPLACED:
    case INDEX_KEPT:
        res->status = ST_SUCCESS;
        res->duplicate = outcome == INDEX_INSERTED ? 0 : outcome == INDEX_REPLACED ? 1 : 2;
        break;
    case INDEX_REJECTED:
        res->status = ST_DUPLICATE;
        res->duplicate = 3;
        if (snprintf(res->message, sizeof res->message, "Duplicate SOP Instance: %s is already stored",
                     res->sop_instance_uid) < 0)
            res->message[0] = '\0';
        break;
    case INDEX_FAILED:
    default:
        set_fail(in, ST_OUT_OF_RESOURCES, e.code ? e.code : PACS_EIO, true, "cannot store: %s",
                 e.msg);
        goto failed;
    }
    goto out;

failed:
    res->status = in->status;
    copy_str(res->message, sizeof res->message, in->message);
    if (in->internal) {
        rc = in->fail_rc;
        pacs_err_set(err, rc, "%s", in->message);
        log_error("ingest: %s", in->message);
    } else {
        rc = 0;
        log_info("ingest: refused an instance from '%s' (status 0x%04X): %s", in->remote_aet,
                 (unsigned)in->status, in->message);
    }
out:
    dynbuf_free(&vals);
    dynbuf_free(&json);
    ingest_abort(in);
    /* Metrics: docs/metrics.md. */
    bool stored = rc == 0 && res->status == ST_SUCCESS && res->duplicate < 2;
    const char *how = rc ? "error" : stored ? "stored" : res->duplicate >= 2 ? "duplicate"
                                                                            : "refused";
    metric_inc(&metric_ingest_instances, &how);
    if (stored) {
        metric_add(&metric_ingest_bytes, NULL, res->size);
        metric_observe(&metric_ingest_duration, NULL, metrics_now() - t0);
    }
    return rc;
}

void ingest_abort(struct ingest *in)
{
    if (!in)
        return;
    if (in->w)
        in->bs->ops->put_abort(in->w);
    dcm_stream_free(in->st);
    dcm_file_free(&in->f);
    EVP_MD_CTX_free(in->sha);
    free(in);
}
