/* libFuzzer target: the DICOM JSON reader (dcm_json_read and
 * dcm_json_read_array), and the writer on whatever the reader accepts.
 * Invariants: an error always has a message; what the writer produces from
 * an accepted data set is valid DICOM JSON that the reader accepts again. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "dicom/json.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Takes every other binary element as bulk data, to run both branches. */
static bool fuzz_bulk(void *ctx, const struct dcm_ds *ds, const struct dcm_elem *e,
                      struct dynbuf *uri)
{
    unsigned *n = ctx;
    (void)ds;
    if ((*n)++ % 2)
        return false;
    return dynbuf_printf(uri, "bulk/%08X", (unsigned)e->tag) == 0;
}

static void check_write(const struct dcm_ds *ds)
{
    unsigned calls = 0;
    struct dcm_json_opts pretty = { .pretty = true, .bulk_uri = fuzz_bulk, .ctx = &calls };
    struct pacs_err err = { 0 };
    struct dynbuf out;
    dynbuf_init(&out, 0);
    FUZZ_CHECK(dcm_json_write(ds, &pretty, &out, &err) == 0, "pretty write failed: %s", err.msg);
    dynbuf_reset(&out);
    FUZZ_CHECK(dcm_json_write(ds, NULL, &out, &err) == 0, "write failed: %s", err.msg);
    struct dcm_ds *back = NULL;
    int rc = dcm_json_read((const char *)out.data, out.len, &back, &err);
    FUZZ_CHECK(rc == 0, "own output does not read back: %s\n%s", err.msg, (const char *)out.data);
    dcm_ds_free(back);
    dynbuf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dcm_ds *ds = NULL;
    struct pacs_err err = { 0 };
    const char *text = (const char *)data;
    if (dcm_json_read(text, size, &ds, &err) == 0) {
        check_write(ds);
        dcm_ds_free(ds);
    } else {
        FUZZ_CHECK(ds == NULL, "data set left behind on error");
        FUZZ_CHECK(err.msg[0] != '\0', "error without a message");
    }
    struct dcm_ds **v = NULL;
    size_t n = 0;
    if (dcm_json_read_array(text, size, &v, &n, &err) == 0) {
        for (size_t i = 0; i < n; i++)
            dcm_ds_free(v[i]);
        free(v);
    } else {
        FUZZ_CHECK(v == NULL && n == 0, "array left behind on error");
        FUZZ_CHECK(err.msg[0] != '\0', "error without a message");
    }
    return 0;
}
