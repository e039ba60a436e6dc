/* frames.c - where the frames of pixel data are (see frames.h). */
#include "dicom/frames.h"

#include <stdlib.h>
#include <string.h>

#include "util/limits.h"

#define TAG_ROWS DCM_TAG(0x0028, 0x0010)
#define TAG_COLUMNS DCM_TAG(0x0028, 0x0011)
#define TAG_SAMPLES DCM_TAG(0x0028, 0x0002)
#define TAG_BITS_ALLOCATED DCM_TAG(0x0028, 0x0100)
#define TAG_NUMBER_OF_FRAMES DCM_TAG(0x0028, 0x0008)

/* A number from ds: *out = dflt when absent or empty (dflt 0: required). */
static int geom_num(const struct dcm_ds *ds, uint32_t tag, const char *name, uint64_t dflt,
                    uint64_t *out, struct pacs_err *err)
{
    const struct dcm_elem *e = dcm_ds_find(ds, tag);
    if (!e || e->len == 0) {
        if (!dflt)
            return pacs_err_set(err, PACS_EINVAL, "%s is missing", name);
        *out = dflt;
        return 0;
    }
    if (!dcm_elem_is_value(e) || dcm_elem_uint(e, 0, out) != 0)
        return pacs_err_set(err, PACS_EINVAL, "%s is not a number", name);
    return 0;
}

int dcm_pixel_geom_from_ds(const struct dcm_ds *ds, struct dcm_pixel_geom *g,
                           struct pacs_err *err)
{
    uint64_t rows, cols, spp, bits, frames;
    int rc;
    memset(g, 0, sizeof *g);
    if ((rc = geom_num(ds, TAG_ROWS, "Rows (0028,0010)", 0, &rows, err)) ||
        (rc = geom_num(ds, TAG_COLUMNS, "Columns (0028,0011)", 0, &cols, err)) ||
        (rc = geom_num(ds, TAG_SAMPLES, "SamplesPerPixel (0028,0002)", 1, &spp, err)) ||
        (rc = geom_num(ds, TAG_BITS_ALLOCATED, "BitsAllocated (0028,0100)", 0, &bits, err)) ||
        (rc = geom_num(ds, TAG_NUMBER_OF_FRAMES, "NumberOfFrames (0028,0008)", 1, &frames,
                       err)))
        return rc;
    if (frames == 0) /* some writers put 0 in single-frame images */
        frames = 1;
    if (rows == 0 || cols == 0 || spp == 0 || rows > UINT16_MAX || cols > UINT16_MAX ||
        spp > 4)
        return pacs_err_set(err, PACS_EINVAL, "bad image size %llux%llu, %llu samples",
                            (unsigned long long)rows, (unsigned long long)cols,
                            (unsigned long long)spp);
    if (bits != 1 && (bits == 0 || bits % 8 != 0 || bits > 64))
        return pacs_err_set(err, PACS_EINVAL, "BitsAllocated %llu is not 1 or a multiple of 8",
                            (unsigned long long)bits);
    if (frames > PACS_MAX_FRAMES)
        return pacs_err_set(err, PACS_ELIMIT, "NumberOfFrames %llu exceeds the limit %u",
                            (unsigned long long)frames, PACS_MAX_FRAMES);
    g->rows = (uint32_t)rows;
    g->columns = (uint32_t)cols;
    g->samples = (uint32_t)spp;
    g->bits_allocated = (uint32_t)bits;
    g->frames = frames;
    /* At most 2^16 * 2^16 * 4 * 64 = 2^40 bits: no overflow. */
    g->frame_bits = rows * cols * spp * bits;
    /* Native YBR_FULL_422 (PS3.3 C.7.6.3.1.2): two pixels share one Cb
     * and one Cr, so a frame holds two samples per pixel, not three. */
    char pi[32];
    if (spp == 3 && dcm_ds_get_str(ds, DCM_TAG(0x0028, 0x0004), 0, pi, sizeof pi) == 0 &&
        strcmp(pi, "YBR_FULL_422") == 0)
        g->frame_bits = rows * cols * 2 * bits;
    return 0;
}

int dcm_native_frame(const struct dcm_pixel_geom *g, uint64_t value_len, uint64_t index,
                     uint64_t *off, uint64_t *len, unsigned *shift, struct pacs_err *err)
{
    if (index >= g->frames)
        return pacs_err_set(err, PACS_ENOTFOUND, "frame %llu does not exist (%llu frames)",
                            (unsigned long long)index + 1, (unsigned long long)g->frames);
    /* frames <= 2^20 and frame_bits <= 2^40: the products fit in 64 bits. */
    uint64_t start = index * g->frame_bits;
    uint64_t stop = start + g->frame_bits;
    uint64_t need = (g->frames * g->frame_bits + 7) / 8;
    if (need > value_len)
        return pacs_err_set(err, PACS_EINVAL,
                            "Pixel Data holds %llu bytes, %llu frames of %llux%llu need %llu",
                            (unsigned long long)value_len, (unsigned long long)g->frames,
                            (unsigned long long)g->rows, (unsigned long long)g->columns,
                            (unsigned long long)need);
    *off = start / 8;
    *shift = (unsigned)(start % 8);
    *len = (stop + 7) / 8 - *off;
    return 0;
}

void dcm_bits_extract(const uint8_t *in, unsigned shift, uint64_t nbits, uint8_t *out)
{
    uint64_t nbytes = (nbits + 7) / 8;
    uint64_t in_bytes = (shift + nbits + 7) / 8;
    for (uint64_t k = 0; k < nbytes; k++) {
        unsigned v = in[k] >> shift;
        if (shift && k + 1 < in_bytes)
            v |= (unsigned)in[k + 1] << (8 - shift);
        out[k] = (uint8_t)v;
    }
    if (nbits % 8)
        out[nbytes - 1] &= (uint8_t)((1u << (nbits % 8)) - 1);
}

/* --- encapsulated -------------------------------------------------------- */

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void dcm_encaps_free(struct dcm_encaps *e)
{
    if (!e)
        return;
    free(e->frags);
    memset(e, 0, sizeof *e);
}

/* Reads the two bytes at each end of a fragment for the marker checks. */
static int frag_markers(dcm_read_at_fn read_at, void *ctx, struct dcm_frag_loc *f,
                        struct pacs_err *err)
{
    uint8_t head[2], tail[3];
    int rc;
    f->starts_image = f->ends_image = false;
    if (f->len < 2)
        return 0;
    if ((rc = read_at(ctx, f->off, head, 2, err)))
        return rc;
    f->starts_image = head[0] == 0xff && (head[1] == 0xd8 || head[1] == 0x4f);
    size_t tn = f->len >= 3 ? 3 : 2;
    if ((rc = read_at(ctx, f->off + f->len - tn, tail, tn, err)))
        return rc;
    const uint8_t *t = tail + tn - 2;
    if (t[0] == 0xff && t[1] == 0xd9)
        f->ends_image = true;
    else if (tn == 3 && t[1] == 0x00 && tail[0] == 0xff && tail[1] == 0xd9)
        f->ends_image = true; /* one pad byte after EOI, to make the length even */
    return 0;
}

int dcm_encaps_scan(dcm_read_at_fn read_at, void *ctx, uint64_t pos, uint64_t end,
                    struct dcm_encaps *out, struct pacs_err *err)
{
    size_t cap = 0;
    bool have_bot = false;
    int rc = 0;
    memset(out, 0, sizeof *out);
    for (;;) {
        uint8_t h[8];
        if (end < 8 || pos > end - 8) {
            rc = pacs_err_set(err, PACS_ETRUNC,
                              "encapsulated Pixel Data ends at byte %llu without a sequence "
                              "delimiter",
                              (unsigned long long)end);
            goto out;
        }
        if ((rc = read_at(ctx, pos, h, 8, err)))
            goto out;
        uint16_t group = (uint16_t)(h[0] | h[1] << 8), elem = (uint16_t)(h[2] | h[3] << 8);
        uint32_t len = le32(h + 4);
        if (group == 0xfffe && elem == 0xe0dd) {
            if (len != 0) {
                rc = pacs_err_set(err, PACS_EINVAL,
                                  "sequence delimiter at byte %llu has length %u",
                                  (unsigned long long)pos, len);
                goto out;
            }
            break;
        }
        if (group != 0xfffe || elem != 0xe000) {
            rc = pacs_err_set(err, PACS_EINVAL,
                              "byte %llu: (%04X,%04X) where a fragment item should be",
                              (unsigned long long)pos, group, elem);
            goto out;
        }
        if (len == DCM_UNDEFINED_LENGTH || len > end - pos - 8) {
            rc = pacs_err_set(err, PACS_ETRUNC,
                              "byte %llu: fragment of %u bytes runs past the end (%llu)",
                              (unsigned long long)pos, len, (unsigned long long)end);
            goto out;
        }
        struct dcm_frag_loc f = { .off = pos + 8, .len = len };
        if (!have_bot) {
            out->bot = f;
            have_bot = true;
        } else {
            if (out->n == PACS_MAX_ITEMS) {
                rc = pacs_err_set(err, PACS_ELIMIT, "more than %u fragments", PACS_MAX_ITEMS);
                goto out;
            }
            if ((rc = frag_markers(read_at, ctx, &f, err)))
                goto out;
            if (out->n == cap) {
                size_t ncap = cap ? cap * 2 : 16;
                struct dcm_frag_loc *v = realloc(out->frags, ncap * sizeof *v);
                if (!v) {
                    rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
                    goto out;
                }
                out->frags = v;
                cap = ncap;
            }
            out->frags[out->n++] = f;
        }
        pos += 8 + (uint64_t)len;
    }
    if (!have_bot)
        rc = pacs_err_set(err, PACS_EINVAL, "encapsulated Pixel Data has no Basic Offset Table "
                                            "item");
out:
    if (rc)
        dcm_encaps_free(out);
    return rc;
}

void dcm_frame_map_free(struct dcm_frame_map *m)
{
    if (!m)
        return;
    free(m->first);
    m->first = NULL;
    m->frames = 0;
}

int dcm_offset_table(const uint8_t *p, size_t len, unsigned entry_size, uint64_t **out,
                     size_t *n, struct pacs_err *err)
{
    *out = NULL;
    *n = 0;
    if ((entry_size != 4 && entry_size != 8) || len % entry_size)
        return pacs_err_set(err, PACS_EINVAL, "offset table of %zu bytes is not a multiple of %u",
                            len, entry_size);
    size_t cnt = len / entry_size;
    if (cnt > PACS_MAX_FRAMES)
        return pacs_err_set(err, PACS_ELIMIT, "offset table of %zu entries exceeds the limit %u",
                            cnt, PACS_MAX_FRAMES);
    if (cnt == 0)
        return 0;
    uint64_t *v = malloc(cnt * sizeof *v);
    if (!v)
        return pacs_err_set(err, PACS_ENOMEM, "out of memory");
    for (size_t i = 0; i < cnt; i++) {
        const uint8_t *q = p + i * entry_size;
        v[i] = le32(q);
        if (entry_size == 8)
            v[i] |= (uint64_t)le32(q + 4) << 32;
    }
    *out = v;
    *n = cnt;
    return 0;
}

/* Rule 1: offsets into the fragment items. */
static int map_offsets(const struct dcm_encaps *e, const uint64_t *offsets, size_t n_offsets,
                       uint32_t *first, struct pacs_err *err)
{
    uint64_t at = 0; /* offset of fragment k's item header from the first's */
    size_t k = 0;
    for (size_t f = 0; f < n_offsets; f++) {
        if (f > 0 && offsets[f] <= offsets[f - 1])
            return pacs_err_set(err, PACS_EINVAL, "offset table entry %zu does not increase", f);
        while (k < e->n && at < offsets[f]) {
            at += 8 + (uint64_t)e->frags[k].len;
            k++;
        }
        if (k == e->n || at != offsets[f])
            return pacs_err_set(err, PACS_EINVAL,
                                "offset table entry %zu (%llu) is not at a fragment", f,
                                (unsigned long long)offsets[f]);
        first[f] = (uint32_t)k;
    }
    if (first[0] != 0)
        return pacs_err_set(err, PACS_EINVAL, "offset table does not start at 0");
    return 0;
}

int dcm_encaps_frames(const struct dcm_encaps *e, const uint64_t *offsets, size_t n_offsets,
                      uint64_t frames, struct dcm_frame_map *out, struct pacs_err *err)
{
    int rc = 0;
    out->first = NULL;
    out->frames = 0;
    if (frames == 0 || frames > PACS_MAX_FRAMES)
        return pacs_err_set(err, frames ? PACS_ELIMIT : PACS_EINVAL, "%llu frames",
                            (unsigned long long)frames);
    if (e->n < frames)
        return pacs_err_set(err, PACS_EINVAL, "%llu frames but only %zu fragments",
                            (unsigned long long)frames, e->n);
    uint32_t *first = calloc(frames + 1, sizeof *first);
    if (!first)
        return pacs_err_set(err, PACS_ENOMEM, "out of memory");
    first[frames] = (uint32_t)e->n;
    if (n_offsets > 0) {
        if (n_offsets != frames) {
            rc = pacs_err_set(err, PACS_EINVAL, "offset table has %zu entries for %llu frames",
                              n_offsets, (unsigned long long)frames);
            goto out;
        }
        rc = map_offsets(e, offsets, n_offsets, first, err);
        goto out;
    }
    if (frames == 1)
        goto out; /* first[0] = 0: every fragment */
    if (e->n == frames) {
        for (uint64_t f = 0; f < frames; f++)
            first[f] = (uint32_t)f;
        goto out;
    }
    uint64_t f = 1;
    for (size_t k = 1; k < e->n; k++) {
        if (!(e->frags[k - 1].ends_image && e->frags[k].starts_image))
            continue;
        if (f == frames) {
            f++;
            break;
        }
        first[f++] = (uint32_t)k;
    }
    if (f != frames)
        rc = pacs_err_set(err, PACS_EINVAL,
                          "cannot tell the %llu frames apart in %zu fragments: no offset table "
                          "and the JPEG markers give %s%llu",
                          (unsigned long long)frames, e->n, f > frames ? "more than " : "",
                          (unsigned long long)(f > frames ? frames : f));
out:
    if (rc)
        free(first);
    else {
        out->first = first;
        out->frames = frames;
    }
    return rc;
}
