/* libFuzzer target: the whole-buffer Part 10 reader, with and without a stop
 * tag, plus dump and a write/read-back of whatever it accepts. */
#include <stdint.h>

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
