/* libFuzzer target: the Accept header scanner and the RetrieveURL builder
 * of the DICOMweb routes (src/http/dicomweb.h).
 *
 * Input: the Accept value (a NUL in it ends it, as in the C string the
 * HTTP layer passes); the same bytes also serve as a UID for
 * dw_retrieve_url.
 * Invariants: dw_choose_json_type gives 0 with one of the two JSON types,
 * or PACS_EUNSUPPORTED with a non-empty message of printable ASCII (it
 * goes into a JSON error body); a blank value is always accepted. The URL
 * holds only characters that need no escaping in a URL path, and starts
 * with the base. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
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
    free(s);
    return 0;
}
