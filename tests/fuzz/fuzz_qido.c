/* libFuzzer target: the QIDO-RS query string parser (src/http/qido.h),
 * building queries without running them (there is no archive here).
 *
 * Input: one flag byte, then the query string (a NUL in it ends it, as in
 * the C string the HTTP layer passes). Flag bits 0-1: the resource (3 is
 * out of range, which must be refused); bits 2-3: the scope (none, study,
 * study and series, series alone, the last refused); bit 4: the study UID
 * is the input up to its first '\n' rather than a fixed one.
 * Invariants: success gives a query of the resource's level with limit and
 * offset within their maximums; failure leaves nothing allocated and a
 * documented code with a UTF-8 message free of control characters; the
 * same input gives the same code with or without an error struct. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "http/qido.h"
#include "util/utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool expected_failure(int rc)
{
    return rc == PACS_EINVAL || rc == PACS_EUNSUPPORTED || rc == PACS_ELIMIT;
}

static void check_msg(const char *msg)
{
    size_t n = strlen(msg);
    FUZZ_CHECK(n > 0, "error without a message");
    FUZZ_CHECK(utf8_valid((const uint8_t *)msg, n), "message is not UTF-8: %s", msg);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK((unsigned char)msg[i] >= 0x20 && msg[i] != 0x7f,
                   "control character in the message");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned flags = data[0];
    enum qido_resource res = (enum qido_resource)(flags & 3);
    const uint8_t *p = data + 1;
    size_t n = size - 1;

    char *study = NULL;
    struct qido_scope scope = { NULL, NULL };
    unsigned kind = (flags >> 2) & 3;
    if (kind == 1 || kind == 2)
        scope.study_uid = "1.2.826.0.1.3680043.2.1";
    if (kind >= 2)
        scope.series_uid = "1.2.826.0.1.3680043.2.1.1";
    if ((flags & 16) && scope.study_uid) {
        const uint8_t *nl = memchr(p, '\n', n);
        size_t sl = nl ? (size_t)(nl - p) : n;
        study = malloc(sl + 1);
        FUZZ_CHECK(study != NULL, "out of memory");
        memcpy(study, p, sl);
        study[sl] = '\0';
        scope.study_uid = study;
        p += nl ? sl + 1 : sl;
        n -= nl ? sl + 1 : sl;
    }

    char *qs = malloc(n + 1);
    FUZZ_CHECK(qs != NULL, "out of memory");
    if (n)
        memcpy(qs, p, n);
    qs[n] = '\0';

    struct qido_request r;
    struct pacs_err err = { 0 };
    int rc = qido_parse(res, &scope, qs, &r, &err);
    if (rc == 0) {
        FUZZ_CHECK(r.q != NULL, "success without a query");
        FUZZ_CHECK(r.resource == res, "resource changed");
        FUZZ_CHECK((int)query_level(r.q) == (int)res + 1, "level %d for resource %d",
                   (int)query_level(r.q), (int)res);
        FUZZ_CHECK(r.limit <= QIDO_MAX_LIMIT, "limit %zu", r.limit);
        FUZZ_CHECK(r.offset <= QIDO_MAX_OFFSET, "offset %zu", r.offset);
        FUZZ_CHECK(r.limit_given || r.limit == QIDO_MAX_LIMIT, "default limit %zu", r.limit);
        FUZZ_CHECK(r.n_include <= QIDO_MAX_PARAMS, "%zu includes", r.n_include);
        FUZZ_CHECK(r.n_include == 0 || r.include != NULL, "includes without an array");
        qido_request_free(&r);
        FUZZ_CHECK(r.q == NULL && r.include == NULL, "free left pointers behind");
    } else {
        FUZZ_CHECK(expected_failure(rc), "unexpected code %d: %s", rc, err.msg);
        FUZZ_CHECK(err.code == rc, "err.code %d, returned %d", err.code, rc);
        FUZZ_CHECK(r.q == NULL && r.include == NULL && r.accept == NULL && r.charset == NULL,
                   "something left behind on error");
        check_msg(err.msg);
    }
    /* Deterministic, and err is optional. */
    int rc2 = qido_parse(res, &scope, qs, &r, NULL);
    FUZZ_CHECK(rc2 == rc, "second parse gave %d, first %d", rc2, rc);
    qido_request_free(&r);

    free(qs);
    free(study);
    return 0;
}
