/* Unit tests: the helpers STOW-RS and QIDO-RS share (http/dicomweb.h):
 * the JSON media type chosen from Accept, and RetrieveURL values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/dicomweb.h"
#include "util/err.h"

static const char *choose(const char *accept)
{
    const char *type = NULL;
    struct pacs_err err = { 0 };
    int rc = dw_choose_json_type(accept, &type, &err);
    if (rc) {
        assert_int_equal(rc, PACS_EUNSUPPORTED);
        assert_non_null(strstr(err.msg, "application/dicom+json"));
        return NULL;
    }
    return type;
}

/* What DICOMweb clients, browsers and curl send. */
static void test_accept_acceptable(void **state)
{
    (void)state;
    assert_string_equal(choose(NULL), DW_MEDIA_DICOM_JSON);
    assert_string_equal(choose(""), DW_MEDIA_DICOM_JSON);
    assert_string_equal(choose(" , "), DW_MEDIA_DICOM_JSON);
    assert_string_equal(choose("*/*"), DW_MEDIA_DICOM_JSON);
    assert_string_equal(choose("application/dicom+json"), DW_MEDIA_DICOM_JSON);
    assert_string_equal(choose("Application/DICOM+JSON; charset=utf-8"), DW_MEDIA_DICOM_JSON);
    assert_string_equal(choose("application/*"), DW_MEDIA_DICOM_JSON);
    assert_string_equal(choose("text/html,application/xhtml+xml,*/*;q=0.8"), DW_MEDIA_DICOM_JSON);
    assert_string_equal(choose("application/json"), DW_MEDIA_JSON);
    /* A specific exclusion beats a wildcard (RFC 9110 12.5.1). */
    assert_string_equal(choose("application/dicom+json;q=0, */*"), DW_MEDIA_JSON);
    assert_string_equal(choose("application/dicom+json;q=0, application/*"), DW_MEDIA_JSON);
    assert_string_equal(choose("text/html, application/json ;q=0.5"), DW_MEDIA_JSON);
    /* Both: the DICOM type wins whatever the order. */
    assert_string_equal(choose("application/json, application/dicom+json"), DW_MEDIA_DICOM_JSON);
}

/* Lists that exclude JSON, q=0 included. */
static void test_accept_refused(void **state)
{
    (void)state;
    assert_null(choose("application/dicom+xml"));
    assert_null(choose("multipart/related; type=\"application/dicom\""));
    assert_null(choose("text/html"));
    assert_null(choose("application/dicom+json;q=0"));
    assert_null(choose("application/dicom+json; q=0.000, application/json;q=0"));
    assert_null(choose("*/*;q=0"));
    assert_null(choose("application/*;q=0, */*"));
    /* A media type that only starts like ours is another type. */
    assert_null(choose("application/dicom+jsonx"));
    assert_null(choose("application/jso"));
}

/* The refusal quotes the request in printable ASCII, cut when long. */
static void test_accept_message(void **state)
{
    (void)state;
    const char *type;
    struct pacs_err err = { 0 };
    char big[400];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    big[0] = '\x01';
    assert_int_equal(dw_choose_json_type(big, &type, &err), PACS_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "(?xxx"));
    assert_non_null(strstr(err.msg, "x...)"));
    for (const char *c = err.msg; *c; c++)
        assert_true(*c >= 0x20 && *c < 0x7f);
}

static void test_retrieve_url(void **state)
{
    (void)state;
    struct dynbuf b;
    dynbuf_init(&b, 0);
    assert_int_equal(dw_retrieve_url(&b, "http://h:8042", "1.2", NULL, NULL), 0);
    assert_string_equal((char *)b.data, "http://h:8042/dicom-web/studies/1.2");
    dynbuf_reset(&b);
    assert_int_equal(dw_retrieve_url(&b, "https://x/p", "1.2", "1.3", "1.4"), 0);
    assert_string_equal((char *)b.data,
                        "https://x/p/dicom-web/studies/1.2/series/1.3/instances/1.4");
    dynbuf_reset(&b);
    /* The sop UID needs a series; characters no UID has are escaped. */
    assert_int_equal(dw_retrieve_url(&b, "http://h", "a/b c", NULL, "9"), 0);
    assert_string_equal((char *)b.data, "http://h/dicom-web/studies/a%2Fb%20c");
    dynbuf_free(&b);

    /* Past the buffer's maximum: an error, and the buffer as it was. */
    dynbuf_init(&b, 40);
    assert_int_equal(dynbuf_puts(&b, "keep"), 0);
    assert_int_equal(dw_retrieve_url(&b, "http://h:8042", "1.2.3.4.5.6.7.8.9", NULL, NULL),
                     PACS_ELIMIT);
    assert_int_equal(b.len, 4);
    assert_string_equal((char *)b.data, "keep");
    dynbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_acceptable),
        cmocka_unit_test(test_accept_refused),
        cmocka_unit_test(test_accept_message),
        cmocka_unit_test(test_retrieve_url),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
