/* libFuzzer target: the frame locator (dicom/frames), which parses stored
 * Pixel Data, plus the two other parsers WADO-RS runs on outside text: the
 * Accept header (http/accept) and the BulkDataURI rewriting of stored
 * metadata (archive/metadata).
 *
 * Input: byte 0 = NumberOfFrames (1..64), byte 1 = flags (bit 0: use the
 * Basic Offset Table), bytes 2..5 = a native geometry (rows, columns,
 * BitsAllocated choice, frames), the rest = an encapsulated value (items).
 * The rest is also parsed as an Accept header, a Range header (for a value
 * of 7 bytes per input byte), a frame list and metadata JSON.
 * Invariants:
 * - every fragment found lies inside the input, after its item header;
 * - a frame map starts at fragment 0, ends at n, and strictly increases;
 * - every native frame lies inside its value, and 1-bit extraction reads
 *   and writes only the bytes it was given;
 * - an accepted Accept header has 1..PACS_MAX_ACCEPT_RANGES ranges with q in
 *   1..1000 and ordered by q; every error has a message;
 * - a satisfiable range lies inside the value; a frame list has numbers
 *   from 1 to 999999999;
 * - rewriting metadata with an identity hook gives back the input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "archive/metadata.h"
#include "dicom/frames.h"
#include "http/accept.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct mem {
    const uint8_t *p;
    size_t n;
};

static int mem_read(void *ctx, uint64_t pos, void *p, size_t n, struct pacs_err *err)
{
    const struct mem *m = ctx;
    if (pos > m->n || n > m->n - pos)
        return pacs_err_set(err, PACS_ETRUNC, "past the end");
    memcpy(p, m->p + pos, n);
    return 0;
}

static void fuzz_encaps(const uint8_t *v, size_t n, uint64_t frames, bool use_bot)
{
    struct mem m = { v, n };
    struct dcm_encaps e;
    struct pacs_err err = { 0 };
    if (dcm_encaps_scan(mem_read, &m, 0, n, &e, &err) != 0) {
        FUZZ_CHECK(err.msg[0], "scan error without a message");
        return;
    }
    FUZZ_CHECK(e.bot.off >= 8 && e.bot.off + e.bot.len <= n, "BOT outside the input");
    for (size_t k = 0; k < e.n; k++) {
        FUZZ_CHECK(e.frags[k].off >= 8 && e.frags[k].off + e.frags[k].len <= n,
              "fragment %zu outside the input", k);
        FUZZ_CHECK(k == 0 || e.frags[k].off > e.frags[k - 1].off, "fragments out of order");
    }
    uint64_t *offs = NULL;
    size_t n_offs = 0;
    if (use_bot && dcm_offset_table(v + e.bot.off, e.bot.len, 4, &offs, &n_offs, &err) != 0)
        FUZZ_CHECK(err.msg[0], "offset table error without a message");
    struct dcm_frame_map map;
    if (dcm_encaps_frames(&e, offs, n_offs, frames, &map, &err) == 0) {
        FUZZ_CHECK(map.frames == frames, "map of %llu frames", (unsigned long long)map.frames);
        FUZZ_CHECK(map.first[0] == 0 && map.first[frames] == e.n, "map does not cover the fragments");
        for (uint64_t f = 0; f < frames; f++)
            FUZZ_CHECK(map.first[f] < map.first[f + 1], "frame %llu is empty", (unsigned long long)f);
        dcm_frame_map_free(&map);
    } else {
        FUZZ_CHECK(err.msg[0], "frames error without a message");
    }
    free(offs);
    dcm_encaps_free(&e);
}

static void fuzz_native(const uint8_t g4[4], const uint8_t *v, size_t n)
{
    static const uint32_t bits[4] = { 1, 8, 16, 32 };
    struct dcm_pixel_geom g = {
        .rows = g4[0] % 32 + 1,
        .columns = g4[1] % 32 + 1,
        .samples = 1,
        .bits_allocated = bits[g4[2] % 4],
        .frames = g4[3] % 16 + 1,
    };
    struct pacs_err err = { 0 };
    g.frame_bits = (uint64_t)g.rows * g.columns * g.bits_allocated;
    for (uint64_t i = 0; i <= g.frames; i++) {
        uint64_t off, len;
        unsigned shift;
        if (dcm_native_frame(&g, n, i, &off, &len, &shift, &err) != 0) {
            FUZZ_CHECK(err.msg[0], "native error without a message");
            continue;
        }
        FUZZ_CHECK(i < g.frames && off + len <= n && shift < 8, "frame %llu outside the value",
              (unsigned long long)i);
        uint64_t nb = (g.frame_bits + 7) / 8;
        uint8_t *in = malloc(len ? len : 1), *out = malloc(nb);
        FUZZ_CHECK(in && out, "out of memory");
        memcpy(in, v + off, len);
        dcm_bits_extract(in, shift, g.frame_bits, out);
        free(in);
        free(out);
    }
}

static int same_bulk(void *ctx, const char *st, const char *se, const char *in, const char *rel,
                     struct dynbuf *out)
{
    (void)ctx;
    (void)st;
    (void)se;
    (void)in;
    return dynbuf_puts(out, rel);
}

static void fuzz_text(const uint8_t *v, size_t n)
{
    char *s = malloc(n + 1);
    struct http_accept acc;
    struct pacs_err err = { 0 };
    FUZZ_CHECK(s, "out of memory");
    memcpy(s, v, n);
    s[n] = '\0';
    if (http_accept_parse(s, &acc, &err) == 0) {
        FUZZ_CHECK(acc.n <= PACS_MAX_ACCEPT_RANGES, "%zu ranges", acc.n);
        for (size_t i = 0; i < acc.n; i++) {
            FUZZ_CHECK(acc.r[i].q >= 1 && acc.r[i].q <= 1000, "q %u", acc.r[i].q);
            FUZZ_CHECK(strchr(acc.r[i].type, '/'), "type without '/'");
            FUZZ_CHECK(i == 0 || acc.r[i - 1].q >= acc.r[i].q, "not ordered by q");
        }
    } else {
        FUZZ_CHECK(err.msg[0] && acc.n == 0, "accept error without a message");
    }
    uint64_t first, last, vlen = n * 7;
    int rr = http_range_parse(s, vlen, &first, &last);
    FUZZ_CHECK(rr >= -1 && rr <= 1, "range result %d", rr);
    if (rr == 1)
        FUZZ_CHECK(first <= last && last < vlen, "range outside the value");
    uint64_t *list;
    size_t n_list;
    if (http_frame_list_parse(s, &list, &n_list) == 0) {
        FUZZ_CHECK(n_list >= 1, "empty frame list");
        for (size_t i = 0; i < n_list; i++)
            FUZZ_CHECK(list[i] >= 1 && list[i] <= 999999999, "frame number %llu",
                  (unsigned long long)list[i]);
        free(list);
    }
    struct dynbuf out;
    dynbuf_init(&out, 0);
    size_t len = strlen(s);
    if (metadata_rewrite(s, len, same_bulk, NULL, "1", "2", "3", &out, &err) == 0)
        FUZZ_CHECK(out.len == len && memcmp(out.data, s, len) == 0, "identity rewrite changed bytes");
    dynbuf_free(&out);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 6)
        return 0;
    uint64_t frames = data[0] % 64 + 1;
    bool use_bot = data[1] & 1;
    fuzz_encaps(data + 6, size - 6, frames, use_bot);
    fuzz_native(data + 2, data + 6, size - 6);
    fuzz_text(data + 6, size - 6);
    return 0;
}
