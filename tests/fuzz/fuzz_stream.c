/* libFuzzer target: the streaming reader, fed in chunks whose sizes come
 * from the input's first bytes, must agree with the whole-buffer reader:
 * both accept or both reject, and accepted data sets dump identically. */
#include <stdint.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int stream_read(const uint8_t *p, size_t n, unsigned chunk_seed, uint32_t stop,
                       struct dcm_file *f)
{
    struct dcm_read_opts o = { .stop_tag = stop };
    struct dcm_stream *s = dcm_stream_new(&o);
    FUZZ_CHECK(s != NULL, "out of memory");
    struct pacs_err err = { 0 };
    int rc = 0;
    size_t off = 0;
    unsigned x = chunk_seed | 1;
    while (off < n) {
        x = x * 1103515245u + 12345u;
        size_t chunk = 1 + (x >> 16) % 97;
        if (chunk > n - off)
            chunk = n - off;
        size_t used = 0;
        rc = dcm_stream_feed(s, p + off, chunk, &used, &err);
        FUZZ_CHECK(used <= chunk, "used more than given");
        if (rc != 0)
            break;
        off += chunk;
    }
    if (rc >= 0)
        rc = dcm_stream_finish(s, f, &err);
    if (rc < 0)
        FUZZ_CHECK(err.msg[0] != '\0', "stream error without a message");
    dcm_stream_free(s);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned seed = data[0];
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    uint32_t stops[2] = { 0, DCM_TAG_PIXEL_DATA };
    for (int k = 0; k < 2; k++) {
        struct dcm_file whole, streamed;
        struct pacs_err err = { 0 };
        struct dcm_read_opts o = { .stop_tag = stops[k] };
        int a = dcm_read_part10(p, n, &o, &whole, &err);
        int b = stream_read(p, n, seed, stops[k], &streamed);
        FUZZ_CHECK((a == 0) == (b == 0), "whole read %s (%s) but streamed read %s",
                   a ? "failed" : "succeeded", err.msg, b ? "failed" : "succeeded");
        if (a == 0) {
            struct dynbuf x, y;
            fuzz_dump(whole.meta, &x);
            fuzz_dump(streamed.meta, &y);
            FUZZ_CHECK(x.len == y.len && (x.len == 0 || memcmp(x.data, y.data, x.len) == 0), "meta differs");
            dynbuf_free(&x);
            dynbuf_free(&y);
            fuzz_dump(whole.ds, &x);
            fuzz_dump(streamed.ds, &y);
            FUZZ_CHECK(x.len == y.len && (x.len == 0 || memcmp(x.data, y.data, x.len) == 0), "data set differs");
            FUZZ_CHECK(whole.stopped == streamed.stopped, "stopped differs");
            dynbuf_free(&x);
            dynbuf_free(&y);
            dcm_file_free(&whole);
            dcm_file_free(&streamed);
        }
    }
    return 0;
}
