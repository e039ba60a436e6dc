/* Unit tests: configuration from defaults, file and environment (util/config). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/config.h"
#include "util/dynbuf.h"
#include "util/err.h"

static char *const no_env[] = {NULL};

/* Every key set to something other than its default. */
static const char full_json[] =
    "{\n"
    "  \"data_dir\": \"/var/lib/pacsd\",\n"
    "  \"bind\": \"127.0.0.1\",\n"
    "  \"dicom\": {\n"
    "    \"port\": 11112,\n"
    "    \"aet\": \"  MYPACS  \",\n"
    "    \"check_called_aet\": false,\n"
    "    \"allowed_calling_aets\": [\"CT1\", \" MR 2 \"],\n"
    "    \"modalities\": {\n"
    "      \"STORESCP\": {\"aet\": \"STORE_AE\", \"host\": \"127.0.0.1\", \"port\": 11113},\n"
    "      \"ORTHANC\": {\"host\": \"orthanc.local\", \"port\": 4243}\n"
    "    },\n"
    "    \"max_associations\": 8,\n"
    "    \"max_pdu_length\": 16384,\n"
    "    \"max_message_size\": 1073741824,\n"
    "    \"artim_timeout\": 5,\n"
    "    \"idle_timeout\": 600,\n"
    "    \"read_timeout\": 20,\n"
    "    \"write_timeout\": 25,\n"
    "    \"shutdown_timeout\": 0,\n"
    "    \"duplicates\": \"reject\",\n"
    "    \"find_limit\": 500,\n"
    "    \"storage_sop_classes\": [\"1.2.840.10008.5.1.4.1.1.2\", \"1.2.840.10008.5.1.4.1.1.4\"]\n"
    "  },\n"
    "  \"http\": {\"port\": 8080, \"enabled\": false},\n"
    "  \"log\": {\"level\": \"debug\"}\n"
    "}\n";

/* Writes text to a new temporary file; returns its path (caller unlinks and
 * frees). */
static char *write_tmp(const char *text, size_t n)
{
    char *path = strdup("/tmp/pacsd-test-config-XXXXXX");
    assert_non_null(path);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
    return path;
}

static void drop_tmp(char *path)
{
    unlink(path);
    free(path);
}

/* Loads text as the configuration file with envp; returns the code. */
static int load_text(const char *text, char *const *envp, struct pacs_config **c,
                     struct pacs_err *err)
{
    char *path = write_tmp(text, strlen(text));
    int rc = config_load(path, envp, c, err);
    drop_tmp(path);
    return rc;
}

static char *to_json(const struct pacs_config *c)
{
    struct dynbuf b;
    dynbuf_init(&b, 0);
    struct pacs_err err;
    assert_int_equal(config_to_json(c, &b, &err), 0);
    return dynbuf_take(&b, NULL);
}

static void expect_msg(const struct pacs_err *err, const char *want)
{
    if (!strstr(err->msg, want))
        fail_msg("message \"%s\" does not contain \"%s\"", err->msg, want);
}

static void expect_file_error(const char *text, int code, const char *want)
{
    struct pacs_config *c = (struct pacs_config *)1;
    struct pacs_err err;
    int rc = load_text(text, no_env, &c, &err);
    if (rc != code)
        fail_msg("%s: got %d (%s), want %d", text, rc, err.msg, code);
    assert_null(c);
    assert_int_equal(err.code, code);
    expect_msg(&err, want);
}

static void expect_env_error(const char *var, int code, const char *want)
{
    char *const envp[] = {(char *)var, NULL};
    struct pacs_config *c = (struct pacs_config *)1;
    struct pacs_err err;
    int rc = config_load(NULL, envp, &c, &err);
    if (rc != code)
        fail_msg("%s: got %d (%s), want %d", var, rc, err.msg, code);
    assert_null(c);
    expect_msg(&err, want);
}

static void test_defaults(void **state)
{
    (void)state;
    struct pacs_config *c;
    struct pacs_err err;
    assert_int_equal(config_load(NULL, no_env, &c, &err), 0);
    assert_string_equal(c->data_dir, "./pacsd-data");
    assert_string_equal(c->bind, "0.0.0.0");
    assert_int_equal(c->dicom.port, 4242);
    assert_string_equal(c->dicom.aet, "PACSD");
    assert_true(c->dicom.check_called_aet);
    assert_int_equal(c->dicom.n_allowed_calling_aets, 0);
    assert_int_equal(c->dicom.n_modalities, 0);
    assert_int_equal(c->dicom.max_associations, 64);
    assert_int_equal(c->dicom.max_pdu_length, 262144);
    assert_true(c->dicom.max_message_size == 4294967295u);
    assert_int_equal(c->dicom.artim_timeout, 30);
    assert_int_equal(c->dicom.idle_timeout, 300);
    assert_int_equal(c->dicom.read_timeout, 60);
    assert_int_equal(c->dicom.write_timeout, 60);
    assert_int_equal(c->dicom.shutdown_timeout, 30);
    assert_int_equal(c->dicom.duplicates, CONFIG_DUP_REPLACE);
    assert_int_equal(c->dicom.find_limit, 0);
    assert_int_equal(c->dicom.n_storage_sop_classes, 0);
    assert_int_equal(c->http.port, 8042);
    assert_true(c->http.enabled);
    assert_int_equal(c->log.level, CONFIG_LOG_INFO);
    assert_null(config_find_modality(c, "X"));
    config_free(c);
    config_free(NULL);

    /* An empty file object is the defaults too. */
    assert_int_equal(load_text("{}", no_env, &c, &err), 0);
    assert_int_equal(c->dicom.port, 4242);
    config_free(c);
}

static void check_full(const struct pacs_config *c)
{
    assert_string_equal(c->data_dir, "/var/lib/pacsd");
    assert_string_equal(c->bind, "127.0.0.1");
    assert_int_equal(c->dicom.port, 11112);
    assert_string_equal(c->dicom.aet, "MYPACS");
    assert_false(c->dicom.check_called_aet);
    assert_int_equal(c->dicom.n_allowed_calling_aets, 2);
    assert_string_equal(c->dicom.allowed_calling_aets[0], "CT1");
    assert_string_equal(c->dicom.allowed_calling_aets[1], "MR 2");
    assert_int_equal(c->dicom.n_modalities, 2);
    assert_string_equal(c->dicom.modalities[0].name, "STORESCP");
    assert_string_equal(c->dicom.modalities[0].aet, "STORE_AE");
    assert_string_equal(c->dicom.modalities[0].host, "127.0.0.1");
    assert_int_equal(c->dicom.modalities[0].port, 11113);
    assert_string_equal(c->dicom.modalities[1].name, "ORTHANC");
    assert_string_equal(c->dicom.modalities[1].aet, "ORTHANC"); /* from the name */
    assert_string_equal(c->dicom.modalities[1].host, "orthanc.local");
    assert_int_equal(c->dicom.modalities[1].port, 4243);
    assert_int_equal(c->dicom.max_associations, 8);
    assert_int_equal(c->dicom.max_pdu_length, 16384);
    assert_true(c->dicom.max_message_size == 1073741824u);
    assert_int_equal(c->dicom.artim_timeout, 5);
    assert_int_equal(c->dicom.idle_timeout, 600);
    assert_int_equal(c->dicom.read_timeout, 20);
    assert_int_equal(c->dicom.write_timeout, 25);
    assert_int_equal(c->dicom.shutdown_timeout, 0);
    assert_int_equal(c->dicom.duplicates, CONFIG_DUP_REJECT);
    assert_int_equal(c->dicom.find_limit, 500);
    assert_int_equal(c->dicom.n_storage_sop_classes, 2);
    assert_string_equal(c->dicom.storage_sop_classes[0], "1.2.840.10008.5.1.4.1.1.2");
    assert_string_equal(c->dicom.storage_sop_classes[1], "1.2.840.10008.5.1.4.1.1.4");
    assert_int_equal(c->http.port, 8080);
    assert_false(c->http.enabled);
    assert_int_equal(c->log.level, CONFIG_LOG_DEBUG);
}

static void test_file_every_key(void **state)
{
    (void)state;
    struct pacs_config *c;
    struct pacs_err err;
    int rc = load_text(full_json, no_env, &c, &err);
    if (rc)
        fail_msg("%s", err.msg);
    check_full(c);
    config_free(c);

    /* Large values within range. */
    assert_int_equal(load_text("{\"dicom\": {\"max_message_size\": 9223372036854775807,"
                               " \"find_limit\": 4294967295, \"max_pdu_length\": 16777216}}",
                               no_env, &c, &err), 0);
    assert_true(c->dicom.max_message_size == INT64_MAX);
    assert_true(c->dicom.find_limit == 4294967295u);
    assert_int_equal(c->dicom.max_pdu_length, 16777216);
    config_free(c);
}

static void test_env_precedence(void **state)
{
    (void)state;
    char *const envp[] = {
        "PACSD_DICOM_PORT=2000",
        "PACSD_DATA_DIR=/data",
        "PACSD_DICOM_CHECK_CALLED_AET=yes",
        "PACSD_HTTP_ENABLED=1",
        "PACSD_LOG_LEVEL=warn",
        "PACSD_DICOM_ALLOWED_CALLING_AETS= A , B,,C ",
        "PACSD_DICOM_STORAGE_SOP_CLASSES=",
        "PACSD_DICOM_DUPLICATES=keep",
        "OTHER=1",
        NULL,
    };
    struct pacs_config *c;
    struct pacs_err err;
    int rc = load_text(full_json, envp, &c, &err);
    if (rc)
        fail_msg("%s", err.msg);
    assert_int_equal(c->dicom.port, 2000);         /* env beats file */
    assert_string_equal(c->data_dir, "/data");
    assert_true(c->dicom.check_called_aet);
    assert_true(c->http.enabled);
    assert_int_equal(c->log.level, CONFIG_LOG_WARN);
    assert_int_equal(c->dicom.duplicates, CONFIG_DUP_KEEP);
    assert_int_equal(c->dicom.n_allowed_calling_aets, 3);
    assert_string_equal(c->dicom.allowed_calling_aets[0], "A");
    assert_string_equal(c->dicom.allowed_calling_aets[2], "C");
    assert_int_equal(c->dicom.n_storage_sop_classes, 0); /* empty list replaces the file's */
    assert_int_equal(c->dicom.max_associations, 8);     /* file beats default */
    assert_string_equal(c->bind, "127.0.0.1");
    config_free(c);

    /* Lists as JSON, booleans in other spellings. */
    char *const envp2[] = {
        "PACSD_DICOM_ALLOWED_CALLING_AETS=[\"X Y\", \"Z\"]",
        "PACSD_HTTP_ENABLED=No",
        "PACSD_DICOM_CHECK_CALLED_AET=FALSE",
        NULL,
    };
    assert_int_equal(config_load(NULL, envp2, &c, &err), 0);
    assert_int_equal(c->dicom.n_allowed_calling_aets, 2);
    assert_string_equal(c->dicom.allowed_calling_aets[0], "X Y");
    assert_false(c->http.enabled);
    assert_false(c->dicom.check_called_aet);
    config_free(c);
}

/* Every key, set through its environment variable to the value full_json
 * gives it, yields the same configuration as the file. */
static void test_env_every_key(void **state)
{
    (void)state;
    struct pacs_config *c;
    struct pacs_err err;
    assert_int_equal(load_text(full_json, no_env, &c, &err), 0);
    char *want = to_json(c);
    config_free(c);

    json_t *root = json_loads(want, 0, NULL);
    assert_non_null(root);
    char *envp[64] = {0};
    size_t n = 0;
    struct config_key_info ki;
    for (size_t i = 0; config_key_at(i, &ki); i++) {
        json_t *v = root;
        char part[64];
        const char *p = ki.path, *dot;
        while ((dot = strchr(p, '.'))) {
            memcpy(part, p, (size_t)(dot - p));
            part[dot - p] = '\0';
            v = json_object_get(v, part);
            p = dot + 1;
        }
        v = json_object_get(v, p);
        assert_non_null(v);
        char *text;
        if (json_is_string(v))
            text = strdup(json_string_value(v));
        else
            text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        assert_non_null(text);
        char *var = malloc(strlen(ki.env) + strlen(text) + 2);
        assert_non_null(var);
        memcpy(var, ki.env, strlen(ki.env));
        var[strlen(ki.env)] = '=';
        memcpy(var + strlen(ki.env) + 1, text, strlen(text) + 1);
        free(text);
        assert_true(n < 63);
        envp[n++] = var;
    }
    json_decref(root);

    int rc = config_load(NULL, envp, &c, &err);
    if (rc)
        fail_msg("%s", err.msg);
    check_full(c);
    char *got = to_json(c);
    assert_string_equal(got, want);
    config_free(c);
    free(got);
    free(want);
    for (size_t i = 0; i < n; i++)
        free(envp[i]);
}

static void test_file_variant(void **state)
{
    (void)state;
    struct pacs_config *c;
    struct pacs_err err;
    char *aet = write_tmp("SECRET_AE\n", 10);
    char *port = write_tmp("5000\r\n\n", 7);
    char *mods = write_tmp("{\"S\": {\"host\": \"h\", \"port\": 1}}", 31);
    char v1[128], v2[128], v3[128];
    assert_true(snprintf(v1, sizeof v1, "PACSD_DICOM_AET_FILE=%s", aet) < (int)sizeof v1);
    assert_true(snprintf(v2, sizeof v2, "PACSD_DICOM_PORT_FILE=%s", port) < (int)sizeof v2);
    assert_true(snprintf(v3, sizeof v3, "PACSD_DICOM_MODALITIES_FILE=%s", mods) < (int)sizeof v3);
    char *const envp[] = {v1, v2, v3, NULL};
    int rc = load_text("{\"dicom\": {\"aet\": \"FROMFILE\"}}", envp, &c, &err);
    if (rc)
        fail_msg("%s", err.msg);
    assert_string_equal(c->dicom.aet, "SECRET_AE");
    assert_int_equal(c->dicom.port, 5000);
    assert_int_equal(c->dicom.n_modalities, 1);
    assert_string_equal(c->dicom.modalities[0].aet, "S");
    config_free(c);

    /* Both forms set: ambiguous, so refused. */
    char *const both[] = {v2, "PACSD_DICOM_PORT=1", NULL};
    assert_int_equal(config_load(NULL, both, &c, &err), PACS_EINVAL);
    expect_msg(&err, "PACSD_DICOM_PORT and PACSD_DICOM_PORT_FILE are both set");

    /* Errors in the content name the _FILE variable. */
    char *bad = write_tmp("x\n", 2);
    char v4[128];
    assert_true(snprintf(v4, sizeof v4, "PACSD_HTTP_PORT_FILE=%s", bad) < (int)sizeof v4);
    expect_env_error(v4, PACS_EINVAL, "PACSD_HTTP_PORT_FILE: must be an integer 1..65535 (got \"x\")");
    char *nul = write_tmp("AB\0CD", 5);
    assert_true(snprintf(v4, sizeof v4, "PACSD_DICOM_AET_FILE=%s", nul) < (int)sizeof v4);
    expect_env_error(v4, PACS_EINVAL, "PACSD_DICOM_AET_FILE: ");
    expect_env_error("PACSD_DICOM_AET_FILE=/nonexistent/pacsd-secret", PACS_EIO,
                     "PACSD_DICOM_AET_FILE: cannot open /nonexistent/pacsd-secret");

    drop_tmp(aet);
    drop_tmp(port);
    drop_tmp(mods);
    drop_tmp(bad);
    drop_tmp(nul);
}

static void test_file_errors(void **state)
{
    (void)state;
    expect_file_error("{\"dicom\": {\"port\": \"x\"}}", PACS_EINVAL,
                      "dicom.port: must be an integer 1..65535 (got \"x\")");
    expect_file_error("{\"dicom\": {\"port\": 0}}", PACS_EINVAL, "dicom.port: must be an integer 1..65535 (got 0)");
    expect_file_error("{\"dicom\": {\"port\": 65536}}", PACS_EINVAL, "dicom.port: ");
    expect_file_error("{\"dicom\": {\"port\": 11.5}}", PACS_EINVAL, "dicom.port: ");
    expect_file_error("{\"dicom\": {\"port\": -1}}", PACS_EINVAL, "dicom.port: ");
    expect_file_error("{\"dicom\": {\"max_pdu_length\": 1000}}", PACS_EINVAL,
                      "dicom.max_pdu_length: must be an integer 4096..16777216 (got 1000)");
    expect_file_error("{\"dicom\": {\"artim_timeout\": 0}}", PACS_EINVAL, "dicom.artim_timeout: ");
    expect_file_error("{\"http\": {\"port\": true}}", PACS_EINVAL, "http.port: ");
    expect_file_error("{\"dicom\": {\"aet\": \"ABCDEFGHIJKLMNOPQ\"}}", PACS_EINVAL,
                      "dicom.aet: longer than 16 characters");
    expect_file_error("{\"dicom\": {\"aet\": \"   \"}}", PACS_EINVAL, "dicom.aet: must not be all spaces");
    expect_file_error("{\"dicom\": {\"aet\": \"\"}}", PACS_EINVAL, "dicom.aet: must not be empty");
    expect_file_error("{\"dicom\": {\"aet\": \"A\\\\B\"}}", PACS_EINVAL, "dicom.aet: must not contain a backslash");
    expect_file_error("{\"dicom\": {\"aet\": \"M\\u00fcller\"}}", PACS_EINVAL, "dicom.aet: must be printable ASCII");
    expect_file_error("{\"dicom\": {\"aet\": 5}}", PACS_EINVAL, "dicom.aet: ");
    expect_file_error("{\"dicom\": {\"check_called_aet\": \"yes\"}}", PACS_EINVAL,
                      "dicom.check_called_aet: must be true or false (got \"yes\")");
    expect_file_error("{\"dicom\": {\"duplicates\": \"drop\"}}", PACS_EINVAL,
                      "dicom.duplicates: must be one of \"replace\", \"keep\" or \"reject\" (got \"drop\")");
    expect_file_error("{\"log\": {\"level\": \"trace\"}}", PACS_EINVAL, "log.level: must be one of");
    expect_file_error("{\"data_dir\": \"\"}", PACS_EINVAL, "data_dir: must not be empty");
    expect_file_error("{\"bind\": \"a\\nb\"}", PACS_EINVAL, "bind: must not contain control characters");
    expect_file_error("{\"bind\": null}", PACS_EINVAL, "bind: must be a string (got null)");
    expect_file_error("{\"dicom\": {\"allowed_calling_aets\": \"A\"}}", PACS_EINVAL,
                      "dicom.allowed_calling_aets: must be a list of AE titles (got \"A\")");
    expect_file_error("{\"dicom\": {\"allowed_calling_aets\": [\"A\", \"BBBBBBBBBBBBBBBBB\"]}}",
                      PACS_EINVAL, "dicom.allowed_calling_aets: item 2: longer than 16 characters");
    expect_file_error("{\"dicom\": {\"allowed_calling_aets\": [1]}}", PACS_EINVAL,
                      "dicom.allowed_calling_aets: item 1: must be a string");
    expect_file_error("{\"dicom\": {\"storage_sop_classes\": [\"1.2.840.abc\"]}}", PACS_EINVAL,
                      "dicom.storage_sop_classes: item 1: not a valid UID (got \"1.2.840.abc\")");
    expect_file_error("{\"dicom\": {\"storage_sop_classes\": [\"1.02\"]}}", PACS_EINVAL,
                      "dicom.storage_sop_classes: item 1: not a valid UID");
    expect_file_error("{\"dicom\": 5}", PACS_EINVAL, "dicom: must be an object (got 5)");
    expect_file_error("{\"dicom\": {\"modalities\": []}}", PACS_EINVAL, "dicom.modalities: must be an object");
    expect_file_error("{\"dicom\": {\"modalities\": {\"STORESCP\": "
                      "{\"aet\": \"ABCDEFGHIJKLMNOPQRS\", \"host\": \"h\", \"port\": 1}}}}",
                      PACS_EINVAL, "dicom.modalities.STORESCP.aet: longer than 16 characters");
    expect_file_error("{\"dicom\": {\"modalities\": {\"S\": {\"port\": 1}}}}", PACS_EINVAL,
                      "dicom.modalities.S.host: required");
    expect_file_error("{\"dicom\": {\"modalities\": {\"S\": {\"host\": \"h\"}}}}", PACS_EINVAL,
                      "dicom.modalities.S.port: required");
    expect_file_error("{\"dicom\": {\"modalities\": {\"S\": {\"host\": \"h\", \"port\": \"x\"}}}}",
                      PACS_EINVAL, "dicom.modalities.S.port: must be an integer 1..65535 (got \"x\")");
    expect_file_error("{\"dicom\": {\"modalities\": {\"S\": [\"S\", \"h\", 1]}}}", PACS_EINVAL,
                      "dicom.modalities.S: must be an object with \"aet\", \"host\" and \"port\"");
    expect_file_error("{\"dicom\": {\"modalities\": {\"A NAME LONGER THAN 16\": {\"host\": \"h\", \"port\": 1}}}}",
                      PACS_EINVAL, "dicom.modalities.A NAME LONGER THAN 16.aet: required, as the name is not a valid AE title");
    expect_file_error("{\"dicom\": {\"port\": 8042}}", PACS_EINVAL, "http.port: same as dicom.port (8042)");
    /* The file itself. */
    expect_file_error("{\"dicom\": {\"port\": 1,}}", PACS_EINVAL, ":1:");
    expect_file_error("[1]", PACS_EINVAL, "must hold a JSON object");
    expect_file_error("{\"bind\": \"a\", \"bind\": \"b\"}", PACS_EINVAL, "duplicate");
    expect_file_error("", PACS_EINVAL, "");

    struct pacs_config *c = (struct pacs_config *)1;
    struct pacs_err err;
    assert_int_equal(config_load("/nonexistent/pacsd.json", no_env, &c, &err), PACS_EIO);
    assert_null(c);
    expect_msg(&err, "cannot open /nonexistent/pacsd.json");

    /* A disabled HTTP server may share the DICOM port number. */
    assert_int_equal(load_text("{\"dicom\": {\"port\": 8042}, \"http\": {\"enabled\": false}}",
                               no_env, &c, &err), 0);
    config_free(c);
}

static void test_env_errors(void **state)
{
    (void)state;
    expect_env_error("PACSD_DICOM_PORT=x", PACS_EINVAL,
                     "PACSD_DICOM_PORT: must be an integer 1..65535 (got \"x\")");
    expect_env_error("PACSD_DICOM_PORT= 42", PACS_EINVAL, "PACSD_DICOM_PORT: ");
    expect_env_error("PACSD_DICOM_PORT=", PACS_EINVAL, "PACSD_DICOM_PORT: must be an integer 1..65535 (got \"\")");
    expect_env_error("PACSD_DICOM_PORT=99999999999999999999999", PACS_EINVAL, "PACSD_DICOM_PORT: ");
    expect_env_error("PACSD_DICOM_MAX_ASSOCIATIONS=0", PACS_EINVAL,
                     "PACSD_DICOM_MAX_ASSOCIATIONS: must be an integer 1..10000 (got 0)");
    expect_env_error("PACSD_HTTP_ENABLED=maybe", PACS_EINVAL,
                     "PACSD_HTTP_ENABLED: must be true, false, yes, no, 1 or 0 (got \"maybe\")");
    expect_env_error("PACSD_DICOM_AET=\x01\xff", PACS_EINVAL, "PACSD_DICOM_AET: not valid UTF-8");
    expect_env_error("PACSD_DICOM_AET=ABCDEFGHIJKLMNOPQ", PACS_EINVAL,
                     "PACSD_DICOM_AET: longer than 16 characters");
    expect_env_error("PACSD_LOG_LEVEL=loud", PACS_EINVAL, "PACSD_LOG_LEVEL: must be one of");
    expect_env_error("PACSD_DATA_DIR=", PACS_EINVAL, "PACSD_DATA_DIR: must not be empty");
    expect_env_error("PACSD_DICOM_ALLOWED_CALLING_AETS=A,BBBBBBBBBBBBBBBBBBBB", PACS_EINVAL,
                     "PACSD_DICOM_ALLOWED_CALLING_AETS: item 2: longer than 16 characters");
    expect_env_error("PACSD_DICOM_ALLOWED_CALLING_AETS=[\"A\"", PACS_EINVAL,
                     "PACSD_DICOM_ALLOWED_CALLING_AETS: invalid JSON");
    expect_env_error("PACSD_DICOM_STORAGE_SOP_CLASSES=1.2.3,x", PACS_EINVAL,
                     "PACSD_DICOM_STORAGE_SOP_CLASSES: item 2: not a valid UID");
    expect_env_error("PACSD_DICOM_MODALITIES={bad", PACS_EINVAL, "PACSD_DICOM_MODALITIES: invalid JSON");
    expect_env_error("PACSD_DICOM_MODALITIES=", PACS_EINVAL, "PACSD_DICOM_MODALITIES: invalid JSON");
    expect_env_error("PACSD_DICOM_MODALITIES=[]", PACS_EINVAL, "PACSD_DICOM_MODALITIES: must be an object");
    expect_env_error("PACSD_DICOM_MODALITIES={\"X\": {\"aet\": \"TOOLONGAETITLE1234\", \"host\": \"h\", \"port\": 1}}",
                     PACS_EINVAL, "PACSD_DICOM_MODALITIES: X.aet: longer than 16 characters");
    expect_env_error("PACSD_HTTP_PORT=4242", PACS_EINVAL, "http.port: same as dicom.port (4242)");
}

static void test_unknown_keys(void **state)
{
    (void)state;
    expect_file_error("{\"dicom\": {\"prot\": 4242}}", PACS_EINVAL,
                      "unknown key \"dicom.prot\" (did you mean \"dicom.port\"?)");
    expect_file_error("{\"foo\": 1}", PACS_EINVAL, "unknown key \"foo\"");
    expect_file_error("{\"dicom\": {\"ports\": {\"x\": 1}}}", PACS_EINVAL, "unknown key \"dicom.ports\"");
    expect_file_error("{\"dicm\": {}}", PACS_EINVAL, "unknown key \"dicm\" (did you mean \"dicom\"?)");
    expect_file_error("{\"log\": {\"lvl\": \"x\"}}", PACS_EINVAL, "unknown key \"log.lvl\"");
    expect_file_error("{\"http\": {\"port\": 8080, \"enabled\": true, \"tls\": {}}}", PACS_EINVAL,
                      "unknown key \"http.tls\"");
    expect_file_error("{\"dicom\": {\"modalities\": {\"S\": {\"host\": \"h\", \"port\": 1, \"prot\": 2}}}}",
                      PACS_EINVAL, "unknown key \"dicom.modalities.S.prot\" (did you mean \"dicom.modalities.S.port\"?)");
    expect_file_error("{\"port\": 1}", PACS_EINVAL, "unknown key \"port\"");
    expect_env_error("PACSD_DICOM_MODALITIES={\"S\": {\"host\": \"h\", \"port\": 1, \"hots\": 2}}",
                     PACS_EINVAL, "PACSD_DICOM_MODALITIES: unknown key \"S.hots\" (did you mean \"S.host\"?)");

    /* Unknown variables under the prefix belong to someone else. */
    char *const envp[] = {"PACSD_DICOM_PROT=5", "PACSD_CONFIG=/x", "PACSD_=1", "PACSD", NULL};
    struct pacs_config *c;
    struct pacs_err err;
    assert_int_equal(config_load(NULL, envp, &c, &err), 0);
    config_free(c);
}

static void test_env_modalities(void **state)
{
    (void)state;
    char *const envp[] = {
        "PACSD_DICOM_MODALITIES={\"STORESCP\": {\"aet\": \" STORE \", \"host\": \"10.0.0.5\", \"port\": 104},"
        " \"ORTHANC\": {\"host\": \"orthanc\", \"port\": 4242}, \"CT\": {\"aet\": \"CT_1\", \"host\": \"ct\", \"port\": 11112}}",
        NULL,
    };
    struct pacs_config *c;
    struct pacs_err err;
    /* The environment's object replaces the file's whole. */
    int rc = load_text(full_json, envp, &c, &err);
    if (rc)
        fail_msg("%s", err.msg);
    assert_int_equal(c->dicom.n_modalities, 3);
    const struct config_modality *m = config_find_modality(c, "STORESCP");
    assert_non_null(m);
    assert_string_equal(m->aet, "STORE");
    assert_string_equal(m->host, "10.0.0.5");
    assert_int_equal(m->port, 104);
    assert_ptr_equal(config_find_modality(c, "STORE"), m);      /* by AE title */
    assert_ptr_equal(config_find_modality(c, "STORE   "), m);   /* padded as on the wire */
    m = config_find_modality(c, "ORTHANC");
    assert_non_null(m);
    assert_string_equal(m->aet, "ORTHANC");
    m = config_find_modality(c, "CT_1");
    assert_non_null(m);
    assert_string_equal(m->name, "CT");
    assert_null(config_find_modality(c, "store"));              /* AE titles are case-sensitive */
    assert_null(config_find_modality(c, "NOPE"));
    assert_null(config_find_modality(c, NULL));
    config_free(c);

    /* "{}" empties the list. */
    char *const none[] = {"PACSD_DICOM_MODALITIES={}", NULL};
    assert_int_equal(load_text(full_json, none, &c, &err), 0);
    assert_int_equal(c->dicom.n_modalities, 0);
    config_free(c);
}

static void round_trip(const char *text, char *const *envp)
{
    struct pacs_config *c;
    struct pacs_err err;
    int rc = text ? load_text(text, envp, &c, &err) : config_load(NULL, envp, &c, &err);
    if (rc)
        fail_msg("%s", err.msg);
    char *first = to_json(c);
    config_free(c);

    rc = load_text(first, no_env, &c, &err);
    if (rc)
        fail_msg("%s\n%s", err.msg, first);
    char *second = to_json(c);
    config_free(c);
    assert_string_equal(first, second);
    free(first);
    free(second);
}

static void test_round_trip(void **state)
{
    (void)state;
    round_trip(NULL, no_env);
    round_trip(full_json, no_env);
    char *const envp[] = {"PACSD_BIND=::1", "PACSD_DICOM_AET=A B", NULL};
    round_trip(full_json, envp);

    /* The printed shape is the file's, every key present. */
    struct pacs_config *c;
    struct pacs_err err;
    assert_int_equal(config_load(NULL, no_env, &c, &err), 0);
    char *text = to_json(c);
    config_free(c);
    json_t *root = json_loads(text, 0, NULL);
    assert_non_null(root);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(root, "dicom"), "port")), 4242);
    assert_string_equal(json_string_value(json_object_get(json_object_get(root, "log"), "level")), "info");
    assert_true(json_is_object(json_object_get(json_object_get(root, "dicom"), "modalities")));
    struct config_key_info ki;
    size_t nkeys = 0;
    for (size_t i = 0; config_key_at(i, &ki); i++)
        nkeys++;
    size_t nprinted = 0;
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v)
        nprinted += json_is_object(v) ? json_object_size(v) : 1; /* sections hold keys */
    assert_int_equal(nprinted, nkeys);
    json_decref(root);
    free(text);
}

static void test_aet_valid(void **state)
{
    (void)state;
    assert_true(config_aet_valid("PACSD", 5));
    assert_true(config_aet_valid("  PACSD  ", 9));
    assert_true(config_aet_valid("A B", 3));
    assert_true(config_aet_valid("0123456789ABCDEF", 16));
    assert_true(config_aet_valid("0123456789ABCDEF  ", 18)); /* padding is not content */
    assert_true(config_aet_valid("~!@#$%^&*()_+{}|", 16));
    assert_false(config_aet_valid("0123456789ABCDEFG", 17));
    assert_false(config_aet_valid("", 0));
    assert_false(config_aet_valid("    ", 4));
    assert_false(config_aet_valid("A\\B", 3));
    assert_false(config_aet_valid("A\tB", 3));
    assert_false(config_aet_valid("A\nB", 3));
    assert_false(config_aet_valid("\xc3\xbc", 2));
    assert_false(config_aet_valid("A\0B", 3));
    assert_false(config_aet_valid(NULL, 0));
}

static void test_key_table(void **state)
{
    (void)state;
    struct config_key_info a, b;
    char fa[80];
    for (size_t i = 0; config_key_at(i, &a); i++) {
        assert_true(strncmp(a.env, "PACSD_", 6) == 0);
        assert_non_null(a.type);
        assert_false(a.secret);
        assert_true(snprintf(fa, sizeof fa, "%s_FILE", a.env) < (int)sizeof fa);
        for (size_t j = 0; config_key_at(j, &b); j++) {
            if (i == j)
                continue;
            assert_string_not_equal(a.env, b.env);
            assert_string_not_equal(fa, b.env);
        }
    }
    assert_false(config_key_at(1000, &a));
    assert_string_equal(config_log_level_name(CONFIG_LOG_DEBUG), "debug");
    assert_string_equal(config_log_level_name(CONFIG_LOG_ERROR), "error");
    assert_string_equal(config_log_level_name((enum config_log_level)42), "?");
}

/* docs/configuration.md names every key and its variable. */
static void test_documented(void **state)
{
    (void)state;
    const char *self = __FILE__;
    const char *tail = strstr(self, "tests/unit/test_config.c");
    if (!tail)
        skip();
    char path[1024];
    int n = snprintf(path, sizeof path, "%.*sdocs/configuration.md", (int)(tail - self), self);
    assert_true(n > 0 && (size_t)n < sizeof path);
    FILE *f = fopen(path, "r");
    if (!f)
        skip();
    static char doc[256 * 1024];
    size_t len = fread(doc, 1, sizeof doc - 1, f);
    fclose(f);
    doc[len] = '\0';
    struct config_key_info ki;
    for (size_t i = 0; config_key_at(i, &ki); i++) {
        char quoted[96];
        assert_true(snprintf(quoted, sizeof quoted, "`%s`", ki.path) < (int)sizeof quoted);
        if (!strstr(doc, quoted))
            fail_msg("%s does not document %s", path, quoted);
        assert_true(snprintf(quoted, sizeof quoted, "`%s`", ki.env) < (int)sizeof quoted);
        if (!strstr(doc, quoted))
            fail_msg("%s does not document %s", path, quoted);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_file_every_key),
        cmocka_unit_test(test_env_precedence),
        cmocka_unit_test(test_env_every_key),
        cmocka_unit_test(test_file_variant),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_env_errors),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_env_modalities),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_aet_valid),
        cmocka_unit_test(test_key_table),
        cmocka_unit_test(test_documented),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
