/* frames.h - the frames and bulk data values of a stored instance, for
 * WADO-RS /frames and /bulk: where their bytes are in the stored file.
 *
 * frames_open reads the stored file up to Pixel Data (never the pixels) and
 * the Pixel Data element's header; for encapsulated data it walks the item
 * headers (dicom/frames.h) without reading the fragments. The bytes are then
 * read on demand (frames_read), so a frame of a 2 GB cine costs its own
 * size, not the file's. Two stored encodings are read whole into memory
 * instead, since their bytes on disk are not the bytes to send: Deflated
 * (compressed on disk) and Explicit VR Big Endian (multi-byte pixel values
 * must be sent little endian, PS3.18 8.7.3.3.2); the reader decodes both.
 *
 * Threads: one instance is used by one thread at a time.
 */
#ifndef PACS_ARCHIVE_FRAMES_H
#define PACS_ARCHIVE_FRAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "archive/archive.h"
#include "archive/retrieve.h"
#include "dicom/dataset.h"
#include "dicom/frames.h"
#include "util/err.h"

/* Deepest bulk data URI resolved: "bulk/S/i/S/i/.../T" with at most this
 * many sequence steps (the metadata can name deeper values; PS3.18 has no
 * limit, PACS_MAX_SEQ_DEPTH bounds what ingest writes). */
#define FRAMES_MAX_BULK_DEPTH PACS_MAX_SEQ_DEPTH

struct frames_instance;

/* Bytes to send: mem[off, off + len) when mem is set (held by the
 * frames_instance), else the stored file's [off, off + len) read through
 * frames_read. */
struct frames_piece {
    const uint8_t *mem;
    uint64_t off, len;
};

/* Opens item's stored file. Errors: the retrieve errors, PACS_EINVAL for a
 * stored file that does not parse (message says where). *out is the
 * caller's, freed with frames_close. */
int frames_open(struct archive *a, const struct retrieve_item *item,
                struct frames_instance **out, struct pacs_err *err);
void frames_close(struct frames_instance *fi);

/* The stored data set up to (not including) Pixel Data. */
const struct dcm_ds *frames_dataset(const struct frames_instance *fi);
/* Transfer syntax of the stored data set. */
const char *frames_transfer_syntax(const struct frames_instance *fi);

/* Locates the frames: PACS_ENOTFOUND when there is no Pixel Data,
 * PACS_EINVAL when the geometry or the fragments do not say where the
 * frames are (message says why). Idempotent; the other pixel functions
 * call it. */
int frames_locate(struct frames_instance *fi, struct pacs_err *err);
bool frames_encapsulated(const struct frames_instance *fi);
/* NumberOfFrames; 1 for video, whose frames are one stream. */
uint64_t frames_count(const struct frames_instance *fi);

/* The bytes of frame `number` (1-based) as pieces: one for native data,
 * one per fragment for encapsulated data. *pieces is the caller's (free).
 * PACS_ENOTFOUND for a frame that does not exist. */
int frames_frame(struct frames_instance *fi, uint64_t number, struct frames_piece **pieces,
                 size_t *n, struct pacs_err *err);

/* The value a stored bulk data URI names: rel is what follows "bulk/"
 * ("7FE00010", "00540016/0/00181234"). For native Pixel Data the whole
 * value; *encapsulated_pixels is set (and *piece left empty) for
 * encapsulated Pixel Data, whose value is its frames (frames_frame).
 * PACS_EINVAL for a malformed path, PACS_ENOTFOUND for one that names no
 * element, or an element that is a sequence; PACS_EIO when the stored
 * Pixel Data does not fit its attributes. */
int frames_bulk(struct frames_instance *fi, const char *rel, struct frames_piece *piece,
                bool *encapsulated_pixels, struct pacs_err *err);

/* Reads n bytes of the stored file at pos (pieces without mem). */
int frames_read(struct frames_instance *fi, uint64_t pos, void *p, size_t n,
                struct pacs_err *err);

/* The media type of a compressed frame in transfer syntax ts (PS3.18
 * 8.7.3, the media types of compressed pixel data): "image/jpeg", "image/jls", "image/jp2",
 * "image/jphc", "image/dicom-rle", "video/mpeg", "video/mp4", "video/H265";
 * NULL for a transfer syntax with none (native, or unknown). */
const char *frames_media_type(const char *ts);

#endif
