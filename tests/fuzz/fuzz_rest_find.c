/* libFuzzer target: POST /tools/find bodies (src/http/rest_find.c) into
 * the query model, and naming answers by public id (no archive here).
 *
 * Input: the body as sent. Invariants: success gives a query at the level
 * parsed, whose answers (an empty data set stands for one) get a 44-byte
 * id; every failure has a message and is PACS_EINVAL (or PACS_ENOMEM) and
 * leaves no query behind. */
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"
#include "http/rest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rest_find req;
    struct pacs_err err = { 0 };
    int rc = rest_find_parse((const char *)data, size, &req, &err);
    if (rc) {
        FUZZ_CHECK(rc == PACS_EINVAL || rc == PACS_ENOMEM, "unexpected code %d: %s", rc,
                   err.msg);
        FUZZ_CHECK(err.msg[0] != '\0', "error %d without a message", rc);
        FUZZ_CHECK(req.q == NULL, "query left behind on error");
        return 0;
    }
    FUZZ_CHECK(req.q != NULL, "success without a query");
    FUZZ_CHECK(query_level(req.q) == req.level, "level %d, query at %d", (int)req.level,
               (int)query_level(req.q));
    struct dcm_ds *ds = dcm_ds_new();
    FUZZ_CHECK(ds != NULL, "no memory");
    char id[RES_ID_LEN + 1];
    FUZZ_CHECK(rest_find_answer_id(ds, req.level, id) == 0, "no id for an answer");
    FUZZ_CHECK(strlen(id) == RES_ID_LEN && id[8] == '-' && id[35] == '-', "bad id %s", id);
    dcm_ds_free(ds);
    query_free(req.q);
    return 0;
}
