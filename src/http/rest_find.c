/* rest_find.c - a POST /tools/find body into the query model (rest.h).
 * Kept apart from the route so the fuzz target can run it without a
 * server or an archive. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "dicom/dict.h"
#include "http/rest.h"

static const uint32_t find_uid_tag[4] = {
    DCM_TAG(0x0010, 0x0020), /* PatientID */
    DCM_TAG(0x0020, 0x000D), /* StudyInstanceUID */
    DCM_TAG(0x0020, 0x000E), /* SeriesInstanceUID */
    DCM_TAG(0x0008, 0x0018), /* SOPInstanceUID */
};

static int level_from_name(const char *s)
{
    static const char *const names[4] = {"patient", "study", "series", "instance"};
    for (int k = 0; s && k < 4; k++) {
        if (strcasecmp(s, names[k]) == 0)
            return k;
    }
    return -1;
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        char c = s[k];
        int d = c >= '0' && c <= '9' ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + (unsigned)d;
    }
    *out = v;
    return 0;
}

/* A Query key: a keyword ("PatientName") or "gggg,eeee". */
static bool key_tag(const char *key, uint32_t *tag)
{
    unsigned g, e;
    if (strlen(key) == 9 && key[4] == ',' && hex4(key, &g) == 0 && hex4(key + 5, &e) == 0) {
        *tag = DCM_TAG(g, e);
        return true;
    }
    const struct dcm_dict_entry *d = dcm_dict_find_keyword(key);
    if (!d)
        return false;
    *tag = d->tag;
    return true;
}

static bool count_ok(const json_t *v)
{
    return !v || (json_is_integer(v) && json_integer_value(v) >= 0);
}

int rest_find_parse(const char *body, size_t len, struct rest_find *req, struct pacs_err *err)
{
    json_error_t jerr;
    struct query *q = NULL;
    json_t *v;
    const char *key;
    int rc = 0, lv;
    memset(req, 0, sizeof *req);
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!j || !json_is_object(j)) {
        rc = pacs_err_set(err, PACS_EINVAL, "the body must be a JSON object");
        goto out;
    }
    json_t *query = json_object_get(j, "Query");
    json_t *jlimit = json_object_get(j, "Limit"), *jsince = json_object_get(j, "Since");
    json_t *jexpand = json_object_get(j, "Expand"), *jcase = json_object_get(j, "CaseSensitive");
    lv = level_from_name(json_string_value(json_object_get(j, "Level")));
    if (lv < 0 || !json_is_object(query)) {
        rc = pacs_err_set(err, PACS_EINVAL, "Level (Patient, Study, Series, Instance) and "
                                            "Query (an object) are required");
        goto out;
    }
    if (!count_ok(jlimit) || !count_ok(jsince) || (jexpand && !json_is_boolean(jexpand)) ||
        (jcase && !json_is_boolean(jcase))) {
        rc = pacs_err_set(err, PACS_EINVAL, "Limit and Since must be numbers >= 0, Expand and "
                                            "CaseSensitive booleans");
        goto out;
    }
    if ((rc = query_new((enum index_level)lv, QUERY_PATIENT_ROOT, &q)) != 0) {
        rc = pacs_err_set(err, rc, "out of memory");
        goto out;
    }
    /* The UIDs first: a Query key on the same tag replaces its return key. */
    for (int k = 0; k <= lv; k++) {
        if ((rc = query_add_key(q, find_uid_tag[k], "", err)) != 0)
            goto out;
    }
    json_object_foreach(query, key, v) {
        uint32_t tag;
        if (!json_is_string(v)) {
            rc = pacs_err_set(err, PACS_EINVAL, "Query value of %s is not a string", key);
            goto out;
        }
        if (!key_tag(key, &tag)) {
            rc = pacs_err_set(err, PACS_EINVAL, "unknown tag in Query: %s", key);
            goto out;
        }
        struct pacs_err e = {0};
        if ((rc = query_add_key(q, tag, json_string_value(v), &e)) != 0) {
            rc = pacs_err_set(err, rc == PACS_ENOMEM ? rc : PACS_EINVAL, "Query %s: %s", key,
                              e.msg);
            goto out;
        }
    }
    query_set_limit(q, jlimit ? (size_t)json_integer_value(jlimit) : 0,
                    jsince ? (size_t)json_integer_value(jsince) : 0);
    req->level = (enum index_level)lv;
    req->expand = jexpand && json_is_true(jexpand);
    req->q = q;
    q = NULL;
out:
    query_free(q);
    json_decref(j);
    return rc;
}

int rest_find_answer_id(const struct dcm_ds *answer, enum index_level level,
                        char id[RES_ID_LEN + 1])
{
    char uids[4][512]; /* LO: 64 characters, up to 4 bytes each in UTF-8 */
    const char *u[4] = {NULL, NULL, NULL, NULL};
    if ((unsigned)level > INDEX_INSTANCE)
        return PACS_EINVAL;
    for (int lv = 0; lv <= (int)level; lv++) {
        /* An absent or empty PatientID is the patient "" of the index. */
        if (dcm_ds_get_str(answer, find_uid_tag[lv], 0, uids[lv], sizeof uids[lv]) != 0)
            uids[lv][0] = '\0';
        u[lv] = uids[lv];
    }
    return resources_public_id(level, u, id);
}
