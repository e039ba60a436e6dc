/* writer.h - a data set to bytes: Part 10 files and raw data sets.
 *
 * Output goes to a sink (a write callback) so a caller can stream to a file,
 * a socket or a buffer; dcm_sink_dynbuf() gives a sink over a dynbuf.
 *
 * Encodings written: Implicit VR Little Endian, Explicit VR Little Endian,
 * Explicit VR Big Endian, Deflated Explicit VR Little Endian, and the
 * encapsulated syntaxes (Explicit VR LE) for data sets whose pixel data is
 * already encapsulated. Pixel data is never transcoded: native pixel data
 * cannot be written in an encapsulated syntax nor the reverse
 * (PACS_EUNSUPPORTED).
 *
 * Fidelity: values are written as held (padding, odd lengths, private
 * elements); sequences and items keep their defined or undefined length
 * form, defined lengths being recomputed; so a data set read and written in
 * its own transfer syntax is byte-identical apart from the meta group
 * (for Deflated: identical once inflated).
 */
#ifndef PACS_DCM_WRITER_H
#define PACS_DCM_WRITER_H

#include <stddef.h>

#include "dicom/dataset.h"
#include "util/dynbuf.h"
#include "util/err.h"

/* pacsd's implementation identity, written in every meta group. */
#define PACSD_IMPLEMENTATION_CLASS_UID "2.25.74960482908700044557044491141079752636"
#define PACSD_IMPLEMENTATION_VERSION "PACSD_" PACSD_VERSION

struct dcm_sink {
    /* Writes n bytes; returns 0 or a negative PACS_E* code. */
    int (*write)(void *ctx, const void *p, size_t n);
    void *ctx;
};

/* A sink that appends to b (which the caller owns). */
struct dcm_sink dcm_sink_dynbuf(struct dynbuf *b);

struct dcm_write_opts {
    const char *ts_uid;           /* NULL: Explicit VR Little Endian */
    /* The meta group the data set came with, or NULL. Its Source / Sending /
     * Receiving AE titles and private information are kept; everything else
     * in the meta group is rebuilt from the data set. */
    const struct dcm_ds *src_meta;
    int deflate_level;            /* Deflated only: 0 = zlib default */
};

/* Writes preamble, "DICM", meta group and the data set. SOP Class UID and
 * SOP Instance UID come from the data set (0008,0016/0018) or, failing that,
 * from o->src_meta (0002,0002/0003); PACS_EINVAL when neither has them.
 * A DICOMDIR is refused (PACS_EUNSUPPORTED): its offsets would be wrong. */
int dcm_write_part10(const struct dcm_ds *ds, const struct dcm_write_opts *o,
                     const struct dcm_sink *sink, struct pacs_err *err);

/* Writes only the data set (as DIMSE and raw storage need), in ts_uid. */
int dcm_write_dataset(const struct dcm_ds *ds, const char *ts_uid,
                      const struct dcm_sink *sink, struct pacs_err *err);

#endif
