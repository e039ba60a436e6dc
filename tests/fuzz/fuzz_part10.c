/* libFuzzer target: the whole-buffer Part 10 reader, with and without a stop
 * tag, plus dump, DICOM JSON (written and read back) and a write/read-back
 * of whatever it accepts. */
#include <stdint.h>

#include "dicom/json.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dcm_file f;
    struct pacs_err err = { 0 };
    struct dcm_read_opts all = { 0 };
    if (dcm_read_part10(data, size, &all, &f, &err) == 0) {
        struct dynbuf d;
        dynbuf_init(&d, 0);
        FUZZ_CHECK(dcm_dump_file(&f, NULL, &d) == 0, "dump failed");
        dynbuf_free(&d);
        /* Whatever is read can be served as DICOM JSON, and that JSON reads. */
        dynbuf_init(&d, 0);
        struct dcm_json_opts jo = { 0 };
        if (dcm_json_write(f.ds, &jo, &d, &err) == 0) {
            struct dcm_ds *back = NULL;
            FUZZ_CHECK(dcm_json_read((const char *)d.data, d.len, &back, &err) == 0,
                       "JSON written from a data set does not read back: %s", err.msg);
            dcm_ds_free(back);
        } else {
            FUZZ_CHECK(err.msg[0] != '\0', "JSON error without a message");
        }
        dynbuf_free(&d);
        fuzz_check_rewrite(&f);
        dcm_file_free(&f);
    } else {
        FUZZ_CHECK(err.msg[0] != '\0', "error without a message");
    }
    struct dcm_read_opts head = { .stop_tag = DCM_TAG_PIXEL_DATA, .copy_values = true };
    if (dcm_read_part10(data, size, &head, &f, &err) == 0)
        dcm_file_free(&f);
    return 0;
}
