/* reader.h - DICOM Part 10 files and raw data sets, from bytes to a data set.
 *
 * Two ways in, one parser:
 * - dcm_read_part10(): the whole input is in memory.
 * - dcm_stream_*(): bytes arrive in chunks (a socket, an HTTP body); the
 *   stream buffers only the current top-level element, so memory stays
 *   bounded by the largest element read (and by nothing when reading stops
 *   at Pixel Data).
 *
 * Encodings: Implicit VR Little Endian, Explicit VR Little Endian, Explicit
 * VR Big Endian, Deflated Explicit VR Little Endian, and every encapsulated
 * transfer syntax (Explicit VR LE with fragments). Data sets may have no
 * preamble, no meta group, or a meta group without a group length; when the
 * caller does not give the transfer syntax of a raw data set it is detected
 * from the first element, as DCMTK and pydicom do.
 *
 * Errors: malformed input returns PACS_EINVAL/PACS_ETRUNC/PACS_ELIMIT with a
 * message that names the byte offset (in the original input; for Deflated,
 * in the inflated data set) and the reason. No input can make the reader
 * crash, loop, or allocate more than a small multiple of the bytes it was
 * given (limits in util/limits.h).
 */
#ifndef PACS_DCM_READER_H
#define PACS_DCM_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dicom/dataset.h"
#include "util/err.h"

#define DCM_UID_IMPLICIT_LE "1.2.840.10008.1.2"
#define DCM_UID_EXPLICIT_LE "1.2.840.10008.1.2.1"
#define DCM_UID_DEFLATED_LE "1.2.840.10008.1.2.1.99"
#define DCM_UID_EXPLICIT_BE "1.2.840.10008.1.2.2"

/* How a transfer syntax encodes the data set. */
struct dcm_ts {
    bool explicit_vr;
    bool big_endian;
    bool deflated;
    bool encapsulated; /* pixel data in fragments (compressed syntaxes) */
};

/* Fills *ts for a transfer syntax UID (padding ignored). Unknown but valid
 * UIDs are taken as encapsulated Explicit VR Little Endian, the encoding every
 * transfer syntax since 1997 uses; PACS_EINVAL for a malformed UID. */
int dcm_ts_from_uid(const char *uid, size_t len, struct dcm_ts *ts);

struct dcm_read_opts {
    /* 0: read the whole data set. Otherwise stop before the first top-level
     * element whose tag is >= stop_tag (DCM_TAG_PIXEL_DATA: read everything
     * an index needs, never the pixels). */
    uint32_t stop_tag;
    /* Copy values into the data set's arena. When false, values point into
     * the caller's input, which must then outlive the result. The stream
     * always copies. */
    bool copy_values;
    /* A raw data set (no preamble, no meta group) in this transfer syntax.
     * NULL: a Part 10 file, or a raw data set whose encoding is detected. */
    const char *ts_uid;
};

/* The result of a read. Owns everything it points to: release it with
 * dcm_file_free(). Values of meta and ds may borrow from the caller's input
 * (see copy_values) or from `inflated`. */
struct dcm_file {
    struct dcm_ds *ds;    /* the data set (a root data set) */
    struct dcm_ds *meta;  /* file meta group (0002,xxxx); shares ds's
                             memory, empty when the input had none */
    char ts_uid[65];      /* transfer syntax of the data set */
    struct dcm_ts ts;
    bool preamble;        /* 128-byte preamble and "DICM" present */
    bool stopped;         /* reading stopped at opts->stop_tag */
    uint64_t ds_offset;   /* offset of the data set in the input */
    uint64_t end_offset;  /* offset where reading stopped (== input length
                             unless stopped); for Deflated, in inflated bytes */
    uint8_t *inflated;    /* Deflated: the inflated data set (owned) */
};

/* Reads a whole buffer. On error *f is left empty (nothing to free). */
int dcm_read_part10(const uint8_t *buf, size_t len, const struct dcm_read_opts *opts,
                    struct dcm_file *f, struct pacs_err *err);
/* Releases what a dcm_file holds and zeroes it. Safe on a zeroed struct. */
void dcm_file_free(struct dcm_file *f);

/* --- streaming ----------------------------------------------------------- */

struct dcm_stream;

/* Creates a stream reader; opts as for dcm_read_part10 (copy_values is
 * implied). Returns NULL on ENOMEM. */
struct dcm_stream *dcm_stream_new(const struct dcm_read_opts *opts);
/* Gives the next n bytes. Returns 0 when more input is welcome, 1 when the
 * stop tag was reached (the rest of the input is not needed, and `*used`
 * says how many of these n bytes were taken), or a negative error, after
 * which the stream only fails. `used` may be NULL. A call that returned 0
 * may have taken up to 3 bytes of the stopping element's tag (too few to
 * see it); the result's end_offset is the exact input offset of the stop.
 * For Deflated input `*used` is always n. */
int dcm_stream_feed(struct dcm_stream *s, const uint8_t *p, size_t n, size_t *used,
                    struct pacs_err *err);
/* Ends the input and moves the result into *f (which the caller then owns
 * and frees with dcm_file_free). PACS_ETRUNC if the input stopped inside an
 * element. */
int dcm_stream_finish(struct dcm_stream *s, struct dcm_file *f, struct pacs_err *err);
void dcm_stream_free(struct dcm_stream *s);

#endif
