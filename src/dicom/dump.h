/* dump.h - a data set as text, in the manner of DCMTK's dcmdump: one line
 * per element with tag, VR, value, length, VM and keyword; sequences and
 * items indented. Pure formatting: appends to a dynbuf, no I/O.
 */
#ifndef PACS_DCM_DUMP_H
#define PACS_DCM_DUMP_H

#include "dicom/reader.h"
#include "util/dynbuf.h"

struct dcm_dump_opts {
    unsigned max_value; /* characters of a value shown before "..." (0: 64) */
};

/* Dumps a file read by dcm_read_part10 / dcm_stream: meta group then data
 * set. Returns 0 or PACS_ENOMEM / PACS_ELIMIT from the buffer. */
int dcm_dump_file(const struct dcm_file *f, const struct dcm_dump_opts *o, struct dynbuf *out);
/* Dumps one data set at the given indentation depth. */
int dcm_dump_ds(const struct dcm_ds *ds, const struct dcm_dump_opts *o, unsigned depth,
                struct dynbuf *out);

#endif
