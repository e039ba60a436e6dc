/* libFuzzer target: building queries (src/archive/query.h), not running
 * them (there is no archive here).
 *
 * Input: one flag byte (bits 0-1 the level, bit 2 the model, bits 3-4
 * include_main_tags / include_all), then the rest read two ways:
 * - as a C-FIND identifier (Part 10 or raw data set, encoding detected) for
 *   query_from_identifier, in both models;
 * - as QIDO-like lines "GGGGEEEE=value" (or "GGGGEEEE" for a return key)
 *   for query_new + query_add_key.
 * Invariants: a query comes back exactly on success; every failure has a
 * message and one of the documented codes; a failed add_key leaves the
 * query usable. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "archive/query.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool expected_failure(int rc)
{
    return rc == PACS_EINVAL || rc == PACS_EUNSUPPORTED || rc == PACS_ELIMIT;
}

static void from_identifier(const struct dcm_ds *ds, enum query_model model)
{
    struct query *q = (struct query *)&q; /* must be overwritten */
    struct pacs_err err = { 0 };
    int rc = query_from_identifier(ds, model, &q, &err);
    if (rc == 0) {
        FUZZ_CHECK(q != NULL, "success without a query");
        enum index_level lv = query_level(q);
        FUZZ_CHECK(lv <= INDEX_INSTANCE, "bad level %d", (int)lv);
        FUZZ_CHECK(!(model == QUERY_STUDY_ROOT && lv == INDEX_PATIENT),
                   "patient level in the Study Root model");
        query_set_limit(q, 10, 2);
        query_include_main_tags(q, true);
        query_include_all(q, true);
        query_free(q);
    } else {
        FUZZ_CHECK(q == NULL, "query left behind on error");
        FUZZ_CHECK(expected_failure(rc), "unexpected code %d: %s", rc, err.msg);
        FUZZ_CHECK(err.msg[0] != '\0', "error %d without a message", rc);
    }
}

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void from_lines(enum index_level level, enum query_model model, unsigned flags,
                       const uint8_t *p, size_t n)
{
    struct query *q;
    int rc = query_new(level, model, &q);
    if (model == QUERY_STUDY_ROOT && level == INDEX_PATIENT) {
        FUZZ_CHECK(rc == PACS_EINVAL && q == NULL, "patient level in the Study Root model");
        return;
    }
    FUZZ_CHECK(rc == 0 && q != NULL, "query_new failed: %d", rc);
    query_include_main_tags(q, flags & 8);
    query_include_all(q, flags & 16);
    char *value = malloc(n + 1);
    FUZZ_CHECK(value != NULL, "out of memory");
    const uint8_t *end = p + n;
    while (p < end) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        const uint8_t *lend = nl ? nl : end;
        uint32_t tag = 0;
        size_t i = 0;
        for (; i < 8 && p + i < lend && hexval(p[i]) >= 0; i++)
            tag = (tag << 4) | (uint32_t)hexval(p[i]);
        const char *v = NULL;
        if (p + i < lend && p[i] == '=') {
            size_t vn = (size_t)(lend - (p + i + 1));
            memcpy(value, p + i + 1, vn);
            value[vn] = '\0'; /* a NUL inside ends the value, as in C text */
            v = value;
        }
        struct pacs_err err = { 0 };
        rc = query_add_key(q, tag, v, &err);
        if (rc) {
            FUZZ_CHECK(expected_failure(rc), "add_key: unexpected code %d: %s", rc, err.msg);
            FUZZ_CHECK(err.msg[0] != '\0', "add_key: error %d without a message", rc);
        }
        p = nl ? nl + 1 : end;
    }
    FUZZ_CHECK(query_level(q) == level, "level changed");
    query_set_limit(q, 1, 0);
    free(value);
    query_free(q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned flags = data[0];
    enum index_level level = (enum index_level)(flags & 3);
    enum query_model model = (flags & 4) ? QUERY_STUDY_ROOT : QUERY_PATIENT_ROOT;
    const uint8_t *p = data + 1;
    size_t n = size - 1;

    struct dcm_file f;
    struct pacs_err err = { 0 };
    if (dcm_read_part10(p, n, NULL, &f, &err) == 0) {
        from_identifier(f.ds, QUERY_PATIENT_ROOT);
        from_identifier(f.ds, QUERY_STUDY_ROOT);
        dcm_file_free(&f);
    }
    from_lines(level, model, flags, p, n);
    return 0;
}
