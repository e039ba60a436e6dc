/* libFuzzer target: the request-header parsers of the DICOMweb routes:
 * Accept (http/accept.h, and the JSON type choice of http/dicomweb.h on
 * top of it), Range and WADO-RS frame lists; and the RetrieveURL builder.
 *
 * Input: the Accept value (a NUL in it ends it, as in the C string the
 * HTTP layer passes); the same bytes also serve as a UID for
 * dw_retrieve_url.
 * Invariants: dw_choose_json_type gives 0 with one of the two JSON types,
 * or PACS_EUNSUPPORTED with a non-empty message of printable ASCII (it
 * goes into a JSON error body); a blank value is always accepted. The URL
 * holds only characters that need no escaping in a URL path, and starts
 * with the base. http_accept_parse gives 0 with at most PACS_MAX_ACCEPT_RANGES
 * ranges (none when all had q=0) ordered by q, each with a '/' in its type, or an error with a
 * message; http_range_parse's range lies inside the value; a frame list
 * gives frame numbers from 1. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "http/accept.h"
#include "http/dicomweb.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool url_char(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           c == '.' || c == '-' || c == '_' || c == '~' || c == '/' || c == ':' || c == '%';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';

    const char *type = NULL;
    struct pacs_err err = { 0 };
    int rc = dw_choose_json_type(s, &type, &err);
    if (rc == 0) {
        FUZZ_CHECK(strcmp(type, DW_MEDIA_DICOM_JSON) == 0 || strcmp(type, DW_MEDIA_JSON) == 0,
                   "unexpected type %s", type);
    } else {
        FUZZ_CHECK(rc == PACS_EUNSUPPORTED, "unexpected code %d", rc);
        size_t n = strlen(err.msg);
        FUZZ_CHECK(n > 0, "refusal without a message");
        for (size_t i = 0; i < n; i++)
            FUZZ_CHECK(err.msg[i] >= 0x20 && err.msg[i] < 0x7f, "non-printable byte in message");
        bool blank = true;
        for (const char *c = s; *c; c++)
            blank = blank && (*c == ' ' || *c == '\t' || *c == ',');
        FUZZ_CHECK(!blank, "a blank Accept was refused");
    }

    struct dynbuf url;
    dynbuf_init(&url, 0);
    static const char base[] = "http://h:1";
    rc = dw_retrieve_url(&url, base, s, size % 2 ? s : NULL, size % 4 == 3 ? s : NULL);
    if (rc == 0) {
        FUZZ_CHECK(url.len > sizeof base && memcmp(url.data, base, sizeof base - 1) == 0,
                   "URL does not start with the base");
        for (size_t i = 0; i < url.len; i++)
            FUZZ_CHECK(url_char(url.data[i]), "unescaped byte 0x%02x in the URL", url.data[i]);
    }
    dynbuf_free(&url);

    struct http_accept *acc = malloc(sizeof *acc);
    struct pacs_err aerr = { 0 };
    if (acc && http_accept_parse(s, acc, &aerr) == 0) {
        FUZZ_CHECK(acc->n <= PACS_MAX_ACCEPT_RANGES, "%zu ranges", acc->n);
        for (size_t i = 0; i < acc->n; i++) {
            FUZZ_CHECK(strchr(acc->r[i].type, '/') != NULL, "range without '/'");
            FUZZ_CHECK(acc->r[i].q >= 1 && acc->r[i].q <= 1000, "q %u", acc->r[i].q);
            FUZZ_CHECK(i == 0 || acc->r[i - 1].q >= acc->r[i].q, "ranges not ordered by q");
        }
    } else if (acc) {
        FUZZ_CHECK(aerr.msg[0] != '\0', "accept error without a message");
    }
    free(acc);

    uint64_t first = 0, last = 0, len = size * 7 + 3;
    if (http_range_parse(s, len, &first, &last) == 1)
        FUZZ_CHECK(first <= last && last < len, "range %llu-%llu outside %llu",
                   (unsigned long long)first, (unsigned long long)last, (unsigned long long)len);

    uint64_t *frames = NULL;
    size_t nf = 0;
    if (http_frame_list_parse(s, &frames, &nf) == 0) {
        FUZZ_CHECK(nf >= 1, "empty frame list accepted");
        for (size_t i = 0; i < nf; i++)
            FUZZ_CHECK(frames[i] >= 1, "frame number 0");
    }
    free(frames);
    free(s);
    return 0;
}
