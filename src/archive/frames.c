/* frames.c - the frames and bulk data values of a stored instance (see
 * frames.h). */
#include "archive/frames.h"

#include <stdlib.h>
#include <string.h>

#include "dicom/reader.h"
#include "util/dynbuf.h"
#include "util/limits.h"

/* Bytes per read while parsing the stored file up to Pixel Data. */
#define FRAMES_READ_BLOCK (64u * 1024)

struct frames_instance {
    struct retrieve_reader *r; /* stored file (file mode) */
    uint64_t size;             /* stored file size */
    struct dcm_file f;
    struct dynbuf whole;       /* memory mode: the whole stored file */
    bool memory;
    char ts[65];

    bool has_pixels, encapsulated, located;
    /* Pixel Data value: file mode [px_off, px_off + px_len) of the file,
     * memory mode px_mem. Encapsulated (file mode only): items from px_off. */
    uint64_t px_off, px_len;
    const uint8_t *px_mem;
    struct dcm_pixel_geom geom;
    struct dcm_encaps enc;
    struct dcm_frame_map map;
    /* Realigned 1-bit frames, freed with the instance. */
    uint8_t **extra;
    size_t n_extra;
};

const struct dcm_ds *frames_dataset(const struct frames_instance *fi) { return fi->f.ds; }
const char *frames_transfer_syntax(const struct frames_instance *fi) { return fi->ts; }
bool frames_encapsulated(const struct frames_instance *fi) { return fi->encapsulated; }
uint64_t frames_count(const struct frames_instance *fi) { return fi->geom.frames; }

void frames_close(struct frames_instance *fi)
{
    if (!fi)
        return;
    retrieve_close(fi->r);
    dcm_file_free(&fi->f);
    dynbuf_free(&fi->whole);
    dcm_encaps_free(&fi->enc);
    dcm_frame_map_free(&fi->map);
    for (size_t i = 0; i < fi->n_extra; i++)
        free(fi->extra[i]);
    free(fi->extra);
    free(fi);
}

int frames_read(struct frames_instance *fi, uint64_t pos, void *p, size_t n,
                struct pacs_err *err)
{
    if (fi->memory || !fi->r)
        return pacs_err_set(err, PACS_EINVAL, "no stored file to read");
    if (pos > fi->size || n > fi->size - pos)
        return pacs_err_set(err, PACS_ETRUNC, "read of %zu bytes at %llu past the stored %llu",
                            n, (unsigned long long)pos, (unsigned long long)fi->size);
    uint8_t *d = p;
    while (n) {
        size_t got = 0;
        int rc = retrieve_read_at(fi->r, pos, d, n, &got, err);
        if (rc)
            return rc;
        if (got == 0)
            return pacs_err_set(err, PACS_ETRUNC, "stored file ends at %llu",
                                (unsigned long long)pos);
        d += got;
        pos += got;
        n -= got;
    }
    return 0;
}

static int read_at_cb(void *ctx, uint64_t pos, void *p, size_t n, struct pacs_err *err)
{
    return frames_read(ctx, pos, p, n, err);
}

/* Memory mode: the whole file, decoded by the reader. */
static int open_memory(struct frames_instance *fi, struct pacs_err *err)
{
    int rc = dynbuf_reserve(&fi->whole, fi->size + 1);
    if (rc)
        return pacs_err_set(err, rc, "out of memory for a %llu-byte instance",
                            (unsigned long long)fi->size);
    for (size_t got = 1; got;) {
        rc = retrieve_read(fi->r, fi->whole.data + fi->whole.len,
                           fi->whole.cap - fi->whole.len - 1, &got, err);
        if (rc)
            return rc;
        fi->whole.len += got;
        if (fi->whole.len + 1 == fi->whole.cap)
            break;
    }
    struct dcm_read_opts o = { .copy_values = false };
    rc = dcm_read_part10(fi->whole.data, fi->whole.len, &o, &fi->f, err);
    if (rc)
        return rc;
    fi->memory = true;
    const struct dcm_elem *e = dcm_ds_find(fi->f.ds, DCM_TAG_PIXEL_DATA);
    if (!e)
        return 0;
    if (!dcm_elem_is_value(e))
        return pacs_err_set(err, PACS_EUNSUPPORTED, "encapsulated Pixel Data in %s", fi->ts);
    fi->has_pixels = true;
    fi->px_mem = e->val;
    fi->px_len = e->len;
    return 0;
}

/* File mode: the data set up to Pixel Data, then Pixel Data's header. */
static int open_file(struct frames_instance *fi, struct pacs_err *err)
{
    struct dcm_read_opts o = { .stop_tag = DCM_TAG_PIXEL_DATA };
    struct dcm_stream *st = dcm_stream_new(&o);
    uint8_t *buf = malloc(FRAMES_READ_BLOCK);
    int rc = 0;
    if (!st || !buf) {
        rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
        goto out;
    }
    for (;;) {
        size_t got = 0;
        if ((rc = retrieve_read(fi->r, buf, FRAMES_READ_BLOCK, &got, err)))
            goto out;
        if (got == 0)
            break;
        rc = dcm_stream_feed(st, buf, got, NULL, err);
        if (rc < 0)
            goto out;
        if (rc == 1)
            break;
    }
    if ((rc = dcm_stream_finish(st, &fi->f, err)))
        goto out;
    if (!fi->f.stopped)
        goto out;
    /* The element header at end_offset: tag, then (explicit VR) VR, 2
     * reserved bytes and a 4-byte length, or (implicit) the length. */
    uint8_t h[12];
    uint64_t at = fi->f.end_offset;
    size_t hn = fi->f.ts.explicit_vr ? 12 : 8;
    if ((rc = frames_read(fi, at, h, hn, err)))
        goto out;
    uint32_t tag = (uint32_t)(h[0] | h[1] << 8) << 16 | (uint32_t)(h[2] | h[3] << 8);
    if (tag != DCM_TAG_PIXEL_DATA) {
        if (tag > DCM_TAG_PIXEL_DATA)
            goto out; /* stopped after it: no Pixel Data */
        rc = pacs_err_set(err, PACS_EINVAL, "byte %llu: expected Pixel Data, found (%04X,%04X)",
                          (unsigned long long)at, DCM_GROUP(tag), DCM_ELEMENT(tag));
        goto out;
    }
    if (fi->f.ts.explicit_vr && (h[6] || h[7])) {
        rc = pacs_err_set(err, PACS_EINVAL, "byte %llu: Pixel Data with VR %c%c has a short "
                                            "length",
                          (unsigned long long)at, h[4], h[5]);
        goto out;
    }
    const uint8_t *lp = h + hn - 4;
    uint32_t len = (uint32_t)lp[0] | (uint32_t)lp[1] << 8 | (uint32_t)lp[2] << 16 |
                   (uint32_t)lp[3] << 24;
    fi->has_pixels = true;
    fi->px_off = at + hn;
    if (len == DCM_UNDEFINED_LENGTH) {
        fi->encapsulated = true;
        fi->px_len = fi->size - fi->px_off;
    } else if (len > fi->size - fi->px_off) {
        rc = pacs_err_set(err, PACS_ETRUNC, "Pixel Data of %u bytes at %llu runs past the "
                                            "stored %llu",
                          len, (unsigned long long)fi->px_off, (unsigned long long)fi->size);
    } else {
        fi->px_len = len;
    }
out:
    dcm_stream_free(st);
    free(buf);
    return rc;
}

int frames_open(struct archive *a, const struct retrieve_item *item,
                struct frames_instance **out, struct pacs_err *err)
{
    struct frames_instance *fi = calloc(1, sizeof *fi);
    struct dcm_ts ts;
    int rc;
    *out = NULL;
    if (!fi)
        return pacs_err_set(err, PACS_ENOMEM, "out of memory");
    memcpy(fi->ts, item->transfer_syntax, sizeof fi->ts);
    fi->ts[sizeof fi->ts - 1] = '\0';
    if ((rc = dcm_ts_from_uid(fi->ts, strlen(fi->ts), &ts))) {
        rc = pacs_err_set(err, PACS_EINVAL, "stored transfer syntax '%s' is malformed", fi->ts);
        goto out;
    }
    if ((rc = retrieve_open(a, item, 0, &fi->r, err)))
        goto out;
    fi->size = item->size;
    rc = ts.deflated || ts.big_endian ? open_memory(fi, err) : open_file(fi, err);
out:
    if (rc)
        frames_close(fi);
    else
        *out = fi;
    return rc;
}

int frames_locate(struct frames_instance *fi, struct pacs_err *err)
{
    uint8_t *bot = NULL;
    uint64_t *offs = NULL;
    size_t n_offs = 0;
    int rc = 0;
    if (fi->located)
        return 0;
    if (!fi->has_pixels)
        return pacs_err_set(err, PACS_ENOTFOUND, "the instance has no Pixel Data");
    if ((rc = dcm_pixel_geom_from_ds(fi->f.ds, &fi->geom, err)))
        goto out;
    if (!fi->encapsulated) {
        uint64_t off, len;
        unsigned shift;
        /* Checks the value holds every frame. */
        rc = dcm_native_frame(&fi->geom, fi->px_len, 0, &off, &len, &shift, err);
        goto out;
    }
    if ((rc = dcm_encaps_scan(read_at_cb, fi, fi->px_off, fi->size, &fi->enc, err)))
        goto out;
    if (fi->enc.bot.len > 0) {
        if (fi->enc.bot.len > 4u * PACS_MAX_FRAMES) {
            rc = pacs_err_set(err, PACS_ELIMIT, "Basic Offset Table of %u bytes",
                              fi->enc.bot.len);
            goto out;
        }
        bot = malloc(fi->enc.bot.len);
        if (!bot) {
            rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
            goto out;
        }
        if ((rc = frames_read(fi, fi->enc.bot.off, bot, fi->enc.bot.len, err)) ||
            (rc = dcm_offset_table(bot, fi->enc.bot.len, 4, &offs, &n_offs, err)))
            goto out;
    } else {
        const struct dcm_elem *eot = dcm_ds_find(fi->f.ds, DCM_TAG_EXTENDED_OFFSET_TABLE);
        if (eot && dcm_elem_is_value(eot) && eot->len > 0 &&
            (rc = dcm_offset_table(eot->val, eot->len, 8, &offs, &n_offs, err)))
            goto out;
    }
    /* Video (MPEG-2, MPEG-4, HEVC) is one stream for all its frames
     * (PS3.5 8.2.5): it is served as a single frame. */
    const char *mt = frames_media_type(fi->ts);
    if (mt && strncmp(mt, "video/", 6) == 0) {
        fi->geom.frames = 1;
        free(offs);
        offs = NULL;
        n_offs = 0;
    }
    rc = dcm_encaps_frames(&fi->enc, offs, n_offs, fi->geom.frames, &fi->map, err);
out:
    free(bot);
    free(offs);
    if (rc == 0)
        fi->located = true;
    return rc;
}

/* Keeps a realigned frame until the instance is closed. */
static int keep_extra(struct frames_instance *fi, uint8_t *p)
{
    uint8_t **v = realloc(fi->extra, (fi->n_extra + 1) * sizeof *v);
    if (!v)
        return PACS_ENOMEM;
    fi->extra = v;
    fi->extra[fi->n_extra++] = p;
    return 0;
}

int frames_frame(struct frames_instance *fi, uint64_t number, struct frames_piece **pieces,
                 size_t *n, struct pacs_err *err)
{
    struct frames_piece *v = NULL;
    uint8_t *in = NULL, *bits = NULL;
    int rc;
    *pieces = NULL;
    *n = 0;
    if ((rc = frames_locate(fi, err)))
        return rc;
    if (number == 0 || number > fi->geom.frames)
        return pacs_err_set(err, PACS_ENOTFOUND, "frame %llu does not exist (%llu frames)",
                            (unsigned long long)number, (unsigned long long)fi->geom.frames);
    if (fi->encapsulated) {
        uint32_t a = fi->map.first[number - 1], b = fi->map.first[number];
        v = calloc(b - a, sizeof *v);
        if (!v)
            return pacs_err_set(err, PACS_ENOMEM, "out of memory");
        for (uint32_t k = a; k < b; k++) {
            v[k - a].off = fi->enc.frags[k].off;
            v[k - a].len = fi->enc.frags[k].len;
        }
        *pieces = v;
        *n = b - a;
        return 0;
    }
    uint64_t off, len;
    unsigned shift;
    if ((rc = dcm_native_frame(&fi->geom, fi->px_len, number - 1, &off, &len, &shift, err)))
        return rc;
    v = calloc(1, sizeof *v);
    if (!v)
        return pacs_err_set(err, PACS_ENOMEM, "out of memory");
    if (shift == 0 && fi->geom.frame_bits % 8 == 0) {
        v->mem = fi->px_mem;
        v->off = fi->memory ? off : fi->px_off + off;
        v->len = len;
        goto done;
    }
    /* 1-bit frames that do not start on a byte: realigned in memory (a
     * 1-bit frame is an eighth of the pixels' count in bytes). */
    uint64_t nbytes = (fi->geom.frame_bits + 7) / 8;
    bits = malloc(nbytes);
    if (!bits) {
        rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
        goto out;
    }
    const uint8_t *src = fi->memory ? fi->px_mem + off : NULL;
    if (!src) {
        in = malloc(len);
        if (!in) {
            rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
            goto out;
        }
        if ((rc = frames_read(fi, fi->px_off + off, in, len, err)))
            goto out;
        src = in;
    }
    dcm_bits_extract(src, shift, fi->geom.frame_bits, bits);
    if ((rc = keep_extra(fi, bits))) {
        pacs_err_set(err, rc, "out of memory");
        goto out;
    }
    v->mem = bits;
    v->off = 0;
    v->len = nbytes;
    bits = NULL;
done:
    *pieces = v;
    *n = 1;
    v = NULL;
out:
    free(v);
    free(in);
    free(bits);
    return rc;
}

/* Parses 8 hex digits into a tag. */
static bool parse_tag(const char *s, size_t n, uint32_t *tag)
{
    uint32_t t = 0;
    if (n != 8)
        return false;
    for (size_t i = 0; i < 8; i++) {
        char c = s[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else
            return false;
        t = t << 4 | d;
    }
    *tag = t;
    return true;
}

static bool parse_index(const char *s, size_t n, uint32_t *idx)
{
    uint64_t v = 0;
    if (n == 0 || n > 9 || (n > 1 && s[0] == '0'))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *idx = (uint32_t)v;
    return true;
}

int frames_bulk(struct frames_instance *fi, const char *rel, struct frames_piece *piece,
                bool *encapsulated_pixels, struct pacs_err *err)
{
    const struct dcm_ds *ds = fi->f.ds;
    const char *p = rel;
    unsigned depth = 0;
    memset(piece, 0, sizeof *piece);
    *encapsulated_pixels = false;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        uint32_t tag, idx;
        if (!parse_tag(p, n, &tag))
            return pacs_err_set(err, PACS_EINVAL, "bulk data path '%s': '%.*s' is not a tag",
                                rel, (int)(n < 16 ? n : 16), p);
        if (!slash) {
            if (depth == 0 && tag == DCM_TAG_PIXEL_DATA && !fi->memory) {
                int rc = frames_locate(fi, err);
                if (rc) /* the stored file, not the path, is at fault */
                    return rc == PACS_EINVAL ? PACS_EIO : rc;
                if (fi->encapsulated) {
                    *encapsulated_pixels = true;
                    return 0;
                }
                piece->off = fi->px_off;
                piece->len = fi->px_len;
                return 0;
            }
            const struct dcm_elem *e = dcm_ds_find(ds, tag);
            if (!e)
                return pacs_err_set(err, PACS_ENOTFOUND, "no element %s", rel);
            if (e->flags & DCM_EF_SEQ)
                return pacs_err_set(err, PACS_ENOTFOUND, "%s is a sequence, not bulk data", rel);
            if (e->flags & DCM_EF_ENCAPS)
                return pacs_err_set(err, PACS_EUNSUPPORTED,
                                    "%s is encapsulated pixel data inside a sequence", rel);
            piece->mem = e->val;
            piece->off = 0;
            piece->len = e->len;
            return 0;
        }
        if (++depth > FRAMES_MAX_BULK_DEPTH)
            return pacs_err_set(err, PACS_EINVAL, "bulk data path '%s' is too deep", rel);
        const char *ip = slash + 1;
        const char *slash2 = strchr(ip, '/');
        if (!slash2 || !parse_index(ip, (size_t)(slash2 - ip), &idx))
            return pacs_err_set(err, PACS_EINVAL, "bulk data path '%s': bad item index", rel);
        const struct dcm_elem *e = dcm_ds_find(ds, tag);
        if (!e || !(e->flags & DCM_EF_SEQ) || idx >= e->u.items.n)
            return pacs_err_set(err, PACS_ENOTFOUND, "no item %u of sequence %08X", idx, tag);
        ds = e->u.items.v[idx];
        p = slash2 + 1;
    }
}

struct media_entry {
    const char *ts;
    const char *type;
};

static const struct media_entry media_types[] = {
    {"1.2.840.10008.1.2.4.50", "image/jpeg"},  {"1.2.840.10008.1.2.4.51", "image/jpeg"},
    {"1.2.840.10008.1.2.4.57", "image/jpeg"},  {"1.2.840.10008.1.2.4.70", "image/jpeg"},
    {"1.2.840.10008.1.2.4.80", "image/jls"},   {"1.2.840.10008.1.2.4.81", "image/jls"},
    {"1.2.840.10008.1.2.4.90", "image/jp2"},   {"1.2.840.10008.1.2.4.91", "image/jp2"},
    {"1.2.840.10008.1.2.4.92", "image/jpx"},   {"1.2.840.10008.1.2.4.93", "image/jpx"},
    {"1.2.840.10008.1.2.4.201", "image/jphc"}, {"1.2.840.10008.1.2.4.202", "image/jphc"},
    {"1.2.840.10008.1.2.4.203", "image/jphc"}, {"1.2.840.10008.1.2.5", "image/dicom-rle"},
    {"1.2.840.10008.1.2.4.100", "video/mpeg"}, {"1.2.840.10008.1.2.4.101", "video/mpeg"},
    {"1.2.840.10008.1.2.4.102", "video/mp4"},  {"1.2.840.10008.1.2.4.103", "video/mp4"},
    {"1.2.840.10008.1.2.4.104", "video/mp4"},  {"1.2.840.10008.1.2.4.105", "video/mp4"},
    {"1.2.840.10008.1.2.4.106", "video/mp4"},  {"1.2.840.10008.1.2.4.107", "video/H265"},
    {"1.2.840.10008.1.2.4.108", "video/H265"}, {"1.2.840.10008.1.2.4.110", "image/jxl"},
    {"1.2.840.10008.1.2.4.111", "image/jxl"},  {"1.2.840.10008.1.2.4.112", "image/jxl"},
};

const char *frames_media_type(const char *ts)
{
    for (size_t i = 0; i < sizeof media_types / sizeof media_types[0]; i++)
        if (strcmp(media_types[i].ts, ts) == 0)
            return media_types[i].type;
    return NULL;
}
