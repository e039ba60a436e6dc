/* rest.h - what the Orthanc-compatible REST modules share (private to
 * src/http/rest*.c; docs/rest.md is the user-facing reference).
 *
 * rest.c           the route table; /system, /statistics, /changes,
 *                  /tools/find, /tools/lookup, /app/explorer.html
 * rest_resources.c /patients, /studies, /series, /instances: lists,
 *                  details, DELETE, POST /instances, /file
 * rest_tags.c      a data set as Orthanc's /tags and /simplified-tags
 * rest_find.c      the /tools/find request (fuzzed: tests/fuzz/fuzz_rest_find.c)
 */
#ifndef PACS_HTTP_REST_H
#define PACS_HTTP_REST_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "archive/query.h"
#include "archive/resources.h"
#include "dicom/dataset.h"
#include "http/server.h"

/* Largest JSON or text body of /tools/find and /tools/lookup. */
#define REST_MAX_JSON_BODY (1024u * 1024)
/* Longer string values are "TooLong" in /tags (null) and left out of
 * MainDicomTags, as Orthanc does (its 256-byte maximum tag length). */
#define REST_MAX_TAG_LENGTH 256
/* Default and largest `limit` of /changes. */
#define REST_CHANGES_DEFAULT 100
/* An entity with no new instance for this long is "IsStable" (Orthanc's
 * StableAge default). */
#define REST_STABLE_AGE_S 60

/* Responds to a failed archive call: PACS_ENOTFOUND 404, PACS_EINVAL 400,
 * PACS_ELIMIT 413, anything else 500; the message is err's. */
int rest_fail(struct http_request *r, int rc, const struct pacs_err *err);

/* Parses a decimal query parameter; absent gives def. false when the
 * value is not a decimal number in [0, max]. */
bool rest_query_u64(struct http_request *r, const char *key, uint64_t def, uint64_t max,
                    uint64_t *out);
/* True when the flag parameter is present and not "false" or "0". */
bool rest_query_flag(struct http_request *r, const char *key);

/* "20261122T142700" (UTC), Orthanc's date format. */
void rest_format_time(int64_t t, char out[16]);

/* "/patients/<id>" and so on. */
json_t *rest_path(enum index_level level, const char *id);

/* The object Orthanc gives for one resource (GET /studies/{id}, ?expand),
 * from an entity read with RES_CHILDREN. NULL on no memory. */
json_t *rest_entity_json(const struct res_entity *e);

/* Orthanc's tags formats of a data set: full ({"0010,0010": {"Name",
 * "Type", "Value"}}) or simplified ({"PatientName": "..."}). Binary values
 * (and bulk data, which the stored metadata holds as references) are Type
 * "Null" / null. NULL on no memory. */
json_t *rest_tags_json(const struct dcm_ds *ds, bool simplify);

/* Body collection for the JSON/text POST routes: appends to a dynbuf kept
 * as the request state, 413 beyond REST_MAX_JSON_BODY (also the route's
 * max_body). */
int rest_collect_body(struct http_request *r, const void *data, size_t len);
/* The collected body, NUL-terminated ("" when there was none). */
const char *rest_body(struct http_request *r, size_t *len);

/* A POST /tools/find body, parsed (rest_find.c): {"Level", "Query",
 * "Expand", "Limit", "Since", "CaseSensitive"} into the shared query
 * model, with the UIDs of the level and above as return keys so each
 * answer can be named by its public id. On success req->q is the caller's
 * (query_free). Errors: PACS_EINVAL with a message for the client (not a
 * JSON object, bad Level, no Query, unknown key, non-string value, bad
 * Limit/Since, a value query_add_key refuses), PACS_ENOMEM. */
struct rest_find {
    enum index_level level;
    bool expand;
    struct query *q;
};
int rest_find_parse(const char *body, size_t len, struct rest_find *req, struct pacs_err *err);
/* The public id of a query answer at level (its UIDs as returned). */
int rest_find_answer_id(const struct dcm_ds *answer, enum index_level level,
                        char id[RES_ID_LEN + 1]);

/* Handlers of rest_resources.c. */
int rest_list(struct http_request *r);
int rest_get(struct http_request *r);
int rest_delete(struct http_request *r);
int rest_instance_file(struct http_request *r);
int rest_instance_tags(struct http_request *r);
int rest_instance_simplified_tags(struct http_request *r);
int rest_upload_body(struct http_request *r, const void *data, size_t len);
int rest_upload(struct http_request *r);

#endif
