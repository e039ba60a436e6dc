/* fuzz_common.h - checks shared by the Part 10 fuzz targets. Everything
 * here aborts on a broken invariant so libFuzzer (and the corpus replay in
 * the test suite) reports it as a crash. */
#ifndef PACS_FUZZ_COMMON_H
#define PACS_FUZZ_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dicom/dump.h"
#include "dicom/reader.h"
#include "dicom/writer.h"

#define FUZZ_CHECK(cond, ...)                                          \
    do {                                                               \
        if (!(cond)) {                                                 \
            fprintf(stderr, "fuzz invariant broken: " __VA_ARGS__);    \
            fprintf(stderr, "\n");                                     \
            abort();                                                   \
        }                                                              \
    } while (0)

/* The transfer syntax that writes the data set as it was encoded. */
static inline const char *fuzz_own_ts(const struct dcm_file *f)
{
    if (f->ts.encapsulated)
        return f->ts.explicit_vr ? f->ts_uid : NULL;
    if (!f->ts.explicit_vr)
        return DCM_UID_IMPLICIT_LE;
    return f->ts.big_endian ? DCM_UID_EXPLICIT_BE : DCM_UID_EXPLICIT_LE;
}

/* Dumps a data set into a fresh buffer the caller frees. */
static inline void fuzz_dump(const struct dcm_ds *ds, struct dynbuf *out)
{
    dynbuf_init(out, 0);
    FUZZ_CHECK(dcm_dump_ds(ds, NULL, 0, out) == 0, "dump failed");
}

/* Whatever the reader accepted, the writer can encode in the same transfer
 * syntax; reading that back succeeds with as many elements, and writing it
 * again gives the same bytes. (Dumps are not compared: the writer corrects
 * group lengths, which some inputs get wrong.) */
static inline void fuzz_check_rewrite(const struct dcm_file *f)
{
    const char *ts = fuzz_own_ts(f);
    if (!ts)
        return;
    struct dynbuf once, twice;
    dynbuf_init(&once, 0);
    dynbuf_init(&twice, 0);
    struct dcm_sink sink = dcm_sink_dynbuf(&once);
    struct pacs_err err = { 0 };
    int rc = dcm_write_dataset(f->ds, ts, &sink, &err);
    if (rc == PACS_EUNSUPPORTED || rc == PACS_ELIMIT) {
        dynbuf_free(&once);
        return;
    }
    FUZZ_CHECK(rc == 0, "write failed: %s", err.msg);
    struct dcm_file back;
    struct dcm_read_opts o = { .ts_uid = ts };
    rc = dcm_read_part10(once.data, once.len, &o, &back, &err);
    FUZZ_CHECK(rc == 0, "rewritten data set does not read back: %s", err.msg);
    /* Group 0002 elements met after the meta group are data-set elements
     * to the reader but never written in a data set. */
    uint32_t want = 0;
    for (uint32_t i = 0; i < f->ds->n; i++)
        want += DCM_GROUP(f->ds->el[i].tag) != 0x0002;
    FUZZ_CHECK(back.ds->n == want, "rewritten data set has %u elements, not %u", back.ds->n, want);
    sink = dcm_sink_dynbuf(&twice);
    FUZZ_CHECK(dcm_write_dataset(back.ds, ts, &sink, &err) == 0, "second write failed: %s", err.msg);
    FUZZ_CHECK(once.len == twice.len && (once.len == 0 || memcmp(once.data, twice.data, once.len) == 0),
               "writing what was read back gives other bytes");
    dcm_file_free(&back);
    dynbuf_free(&once);
    dynbuf_free(&twice);
}

#endif
