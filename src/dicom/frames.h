/* frames.h - where the frames of pixel data are: native (a fixed-size slice
 * of the value per frame) and encapsulated (which fragments make a frame).
 * Pure: the caller reads the bytes (a file, a buffer) through a callback.
 *
 * Native: frame i (0-based) is the bits [i*F, (i+1)*F) of the value, with
 * F = Rows * Columns * SamplesPerPixel * BitsAllocated. When F is a whole
 * number of bytes that is a byte range; with BitsAllocated 1 it may not be
 * (PS3.5 8.1.1: frames are packed back to back, bit 0 of a byte first), and
 * dcm_bits_extract() realigns such a frame to start on bit 0 of its first
 * byte.
 *
 * Encapsulated (PS3.5 A.4): item 0 is the Basic Offset Table, then the
 * fragments. The frames are found, in this order of preference, from
 *  1. an Extended Offset Table (7FE0,0001), or a non-empty Basic Offset
 *     Table: each offset must land exactly on a fragment's item header
 *     (offsets count from the first fragment's item tag), the first must be
 *     0, and they must increase;
 *  2. one frame: every fragment belongs to it;
 *  3. as many fragments as frames: one fragment per frame;
 *  4. otherwise by markers: a frame starts at a fragment that begins with
 *     a JPEG SOI (FFD8) or JPEG 2000 SOC (FF4F) after a fragment that ended
 *     (ignoring one trailing pad byte 00) with EOI/EOC (FFD9); used only if
 *     it gives exactly NumberOfFrames frames. Codecs without such markers
 *     (RLE always has one fragment per frame; MPEG video is one frame
 *     stream) never reach this step in conformant data.
 * Anything else is PACS_EINVAL with the reason: pacsd does not guess.
 *
 * Limits: fragments are counted against PACS_MAX_ITEMS and frames against
 * PACS_MAX_FRAMES before anything is allocated.
 */
#ifndef PACS_DCM_FRAMES_H
#define PACS_DCM_FRAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dicom/dataset.h"
#include "util/err.h"
#include "util/limits.h"


#define DCM_TAG_EXTENDED_OFFSET_TABLE DCM_TAG(0x7fe0, 0x0001)

/* --- native -------------------------------------------------------------- */

struct dcm_pixel_geom {
    uint32_t rows, columns, samples, bits_allocated;
    uint64_t frames;     /* NumberOfFrames, 1 when absent */
    uint64_t frame_bits; /* bits of one frame */
};

/* Reads Rows, Columns, SamplesPerPixel (1 when absent), BitsAllocated,
 * PhotometricInterpretation (native YBR_FULL_422 holds 2 samples a pixel) and
 * NumberOfFrames (1 when absent or 0) from ds. PACS_EINVAL when one is
 * missing, not a number, zero, BitsAllocated not 1 or a multiple of 8, or
 * the frame size overflows; PACS_ELIMIT past PACS_MAX_FRAMES. */
int dcm_pixel_geom_from_ds(const struct dcm_ds *ds, struct dcm_pixel_geom *g,
                           struct pacs_err *err);

/* Where native frame `index` (0-based) is in a value of value_len bytes:
 * bytes [*off, *off + *len) hold it, starting at bit *shift (0..7) of the
 * first byte (0 unless frame_bits is not a multiple of 8). PACS_ENOTFOUND
 * for index >= g->frames; PACS_EINVAL when the value is too short. */
int dcm_native_frame(const struct dcm_pixel_geom *g, uint64_t value_len, uint64_t index,
                     uint64_t *off, uint64_t *len, unsigned *shift, struct pacs_err *err);

/* Copies nbits bits that start at bit `shift` of in[0] to out, starting at
 * bit 0 of out[0]; the unused high bits of the last byte are 0. in must
 * hold (shift + nbits + 7) / 8 bytes, out (nbits + 7) / 8. */
void dcm_bits_extract(const uint8_t *in, unsigned shift, uint64_t nbits, uint8_t *out);

/* --- encapsulated -------------------------------------------------------- */

/* Reads exactly n bytes at pos of the stored value into p: 0, PACS_ETRUNC
 * past the end, or another PACS_E* code. */
typedef int (*dcm_read_at_fn)(void *ctx, uint64_t pos, void *p, size_t n, struct pacs_err *err);

struct dcm_frag_loc {
    uint64_t off;       /* where the fragment's bytes start (after its item header) */
    uint32_t len;
    bool starts_image;  /* begins with FFD8 (JPEG SOI) or FF4F (J2K SOC) */
    bool ends_image;    /* ends with FFD9 (EOI/EOC), a trailing 00 pad aside */
};

struct dcm_encaps {
    struct dcm_frag_loc bot;    /* the Basic Offset Table item (len may be 0) */
    struct dcm_frag_loc *frags; /* the fragments after it */
    size_t n;
};

/* Walks the items of an encapsulated value whose first item header is at
 * `pos`, up to and including the sequence delimiter, without reading the
 * fragments' bytes (but 2 at each end, for the markers). `end` is where the
 * stored bytes end: no item may pass it. Errors: PACS_EINVAL (an item tag
 * that is not (FFFE,E000), a delimiter with a length, an odd-sized or
 * undefined-length item), PACS_ETRUNC (no delimiter before end),
 * PACS_ELIMIT (more than PACS_MAX_ITEMS fragments), PACS_ENOMEM, or the
 * callback's error. On success out->frags is the caller's (dcm_encaps_free). */
int dcm_encaps_scan(dcm_read_at_fn read_at, void *ctx, uint64_t pos, uint64_t end,
                    struct dcm_encaps *out, struct pacs_err *err);
void dcm_encaps_free(struct dcm_encaps *e);

/* Frame f is the fragments frags[first[f]] .. frags[first[f + 1] - 1]
 * (first[frames] == n). */
struct dcm_frame_map {
    uint32_t *first; /* frames + 1 entries */
    uint64_t frames;
};

/* Maps fragments to `frames` frames by the rules above. offsets (n_offsets
 * of them) are the Basic or Extended Offset Table's entries, NULL/0 when
 * both are empty. PACS_EINVAL with the reason when the frames cannot be
 * found; PACS_ELIMIT past PACS_MAX_FRAMES; PACS_ENOMEM. On success
 * out->first is the caller's (dcm_frame_map_free). */
int dcm_encaps_frames(const struct dcm_encaps *e, const uint64_t *offsets, size_t n_offsets,
                      uint64_t frames, struct dcm_frame_map *out, struct pacs_err *err);
void dcm_frame_map_free(struct dcm_frame_map *m);

/* Decodes a Basic Offset Table (little-endian 32-bit offsets; len a
 * multiple of 4) or an Extended Offset Table (64-bit; a multiple of 8)
 * into a new array the caller frees. PACS_EINVAL for a bad length,
 * PACS_ELIMIT past PACS_MAX_FRAMES entries, PACS_ENOMEM. */
int dcm_offset_table(const uint8_t *p, size_t len, unsigned entry_size, uint64_t **out,
                     size_t *n, struct pacs_err *err);

#endif
