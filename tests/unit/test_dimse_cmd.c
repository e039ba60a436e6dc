/* Unit tests: DIMSE command set codec (net/dimse_cmd). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/dimse_cmd.h"

#define B(s) (const uint8_t *)(s), sizeof(s) - 1

#define VERIFICATION "1.2.840.10008.1.1"
#define CT_STORAGE "1.2.840.10008.5.1.4.1.1.2"
#define STUDY_FIND "1.2.840.10008.5.1.4.1.2.2.1"
#define STUDY_MOVE "1.2.840.10008.5.1.4.1.2.2.2"
#define STUDY_GET "1.2.840.10008.5.1.4.1.2.2.3"

/* DCMTK echoscu's C-ECHO-RQ command set. */
static const char echo_rq[] =
    "\x00\x00\x00\x00" "\x04\x00\x00\x00" "\x38\x00\x00\x00"
    "\x00\x00\x02\x00" "\x12\x00\x00\x00" "1.2.840.10008.1.1\0"
    "\x00\x00\x00\x01" "\x02\x00\x00\x00" "\x30\x00"
    "\x00\x00\x10\x01" "\x02\x00\x00\x00" "\x01\x00"
    "\x00\x00\x00\x08" "\x02\x00\x00\x00" "\x01\x01";

static void test_decode_echo(void **state)
{
    (void)state;
    struct dimse_cmd c;
    struct pacs_err err = { 0 };
    assert_int_equal(dimse_cmd_decode(B(echo_rq), &c, &err), 0);
    assert_int_equal(c.command_field, DIMSE_C_ECHO_RQ);
    assert_string_equal(c.affected_sop_class, VERIFICATION);
    assert_int_equal(c.message_id, 1);
    assert_int_equal(c.dataset_type, DIMSE_DATASET_NONE);
    assert_int_equal(c.present, DIMSE_HAS_AFFECTED_SOP_CLASS | DIMSE_HAS_COMMAND_FIELD | DIMSE_HAS_MESSAGE_ID |
                                    DIMSE_HAS_DATASET_TYPE);
    /* Encoding gives back DCMTK's bytes exactly. */
    struct dynbuf out;
    dynbuf_init(&out, 0);
    assert_int_equal(dimse_cmd_encode(&c, &out, &err), 0);
    assert_int_equal(out.len, sizeof echo_rq - 1);
    assert_memory_equal(out.data, echo_rq, out.len);
    dynbuf_free(&out);
    assert_string_equal(dimse_command_name(c.command_field), "C-ECHO-RQ");
}

static void cmd_init(struct dimse_cmd *c, uint16_t cf, const char *cls, uint16_t ds)
{
    memset(c, 0, sizeof *c);
    c->command_field = cf;
    c->dataset_type = ds;
    snprintf(c->affected_sop_class, sizeof c->affected_sop_class, "%s", cls);
    c->present = DIMSE_HAS_COMMAND_FIELD | DIMSE_HAS_DATASET_TYPE | DIMSE_HAS_AFFECTED_SOP_CLASS;
    if (dimse_is_response(cf)) {
        c->message_id_responded = 77;
        c->present |= DIMSE_HAS_MESSAGE_ID_RESPONDED | DIMSE_HAS_STATUS;
    } else {
        c->message_id = 77;
        c->present |= DIMSE_HAS_MESSAGE_ID;
    }
}

static void set_counts(struct dimse_cmd *c, uint16_t r, uint16_t k, uint16_t f, uint16_t w)
{
    c->n_remaining = r;
    c->n_completed = k;
    c->n_failed = f;
    c->n_warning = w;
    c->present |= DIMSE_HAS_REMAINING | DIMSE_HAS_COMPLETED | DIMSE_HAS_FAILED | DIMSE_HAS_WARNING;
}

static void assert_cmd_equal(const struct dimse_cmd *a, const struct dimse_cmd *b)
{
    assert_int_equal(a->present, b->present);
    assert_int_equal(a->command_field, b->command_field);
    assert_string_equal(a->affected_sop_class, b->affected_sop_class);
    assert_string_equal(a->requested_sop_class, b->requested_sop_class);
    assert_int_equal(a->message_id, b->message_id);
    assert_int_equal(a->message_id_responded, b->message_id_responded);
    assert_string_equal(a->move_destination, b->move_destination);
    assert_int_equal(a->priority, b->priority);
    assert_int_equal(a->dataset_type, b->dataset_type);
    assert_int_equal(a->status, b->status);
    assert_string_equal(a->affected_sop_instance, b->affected_sop_instance);
    assert_string_equal(a->requested_sop_instance, b->requested_sop_instance);
    assert_string_equal(a->error_comment, b->error_comment);
    assert_int_equal(a->offending_element_n, b->offending_element_n);
    for (unsigned i = 0; i < a->offending_element_n; i++)
        assert_int_equal(a->offending_element[i], b->offending_element[i]);
    assert_string_equal(a->move_originator_aet, b->move_originator_aet);
    assert_int_equal(a->move_originator_id, b->move_originator_id);
    assert_int_equal(a->n_remaining, b->n_remaining);
    assert_int_equal(a->n_completed, b->n_completed);
    assert_int_equal(a->n_failed, b->n_failed);
    assert_int_equal(a->n_warning, b->n_warning);
}

/* Encodes, checks the layout (ascending tags, even lengths, group length),
 * decodes, compares. */
static void roundtrip(const struct dimse_cmd *c)
{
    struct dynbuf out;
    struct pacs_err err = { 0 };
    struct dimse_cmd back;
    dynbuf_init(&out, 0);
    assert_int_equal(dimse_cmd_encode(c, &out, &err), 0);
    uint32_t gl = (uint32_t)out.data[8] | (uint32_t)out.data[9] << 8 | (uint32_t)out.data[10] << 16 |
                  (uint32_t)out.data[11] << 24;
    assert_int_equal(gl, out.len - 12);
    uint32_t prev = 0;
    for (size_t p = 12; p < out.len;) {
        uint32_t tag = (uint32_t)out.data[p + 2] | (uint32_t)out.data[p + 3] << 8;
        uint32_t len = (uint32_t)out.data[p + 4] | (uint32_t)out.data[p + 5] << 8;
        assert_true(tag > prev);
        assert_int_equal(len % 2, 0);
        prev = tag;
        p += 8 + len;
    }
    assert_int_equal(dimse_cmd_decode(out.data, out.len, &back, &err), 0);
    assert_cmd_equal(c, &back);
    dynbuf_free(&out);
}

static void test_roundtrip_requests(void **state)
{
    (void)state;
    struct dimse_cmd c;

    cmd_init(&c, DIMSE_C_ECHO_RQ, VERIFICATION, DIMSE_DATASET_NONE);
    roundtrip(&c);

    cmd_init(&c, DIMSE_C_STORE_RQ, CT_STORAGE, DIMSE_DATASET_PRESENT);
    c.priority = DIMSE_PRIORITY_LOW;
    snprintf(c.affected_sop_instance, sizeof c.affected_sop_instance, "1.2.3.4.5.6.7.8.9.10");
    snprintf(c.move_originator_aet, sizeof c.move_originator_aet, "MOVESCU");
    c.move_originator_id = 12;
    c.present |= DIMSE_HAS_PRIORITY | DIMSE_HAS_AFFECTED_SOP_INSTANCE | DIMSE_HAS_MOVE_ORIGINATOR_AET |
                 DIMSE_HAS_MOVE_ORIGINATOR_ID;
    roundtrip(&c);

    cmd_init(&c, DIMSE_C_FIND_RQ, STUDY_FIND, DIMSE_DATASET_PRESENT);
    c.present |= DIMSE_HAS_PRIORITY;
    roundtrip(&c);

    cmd_init(&c, DIMSE_C_GET_RQ, STUDY_GET, DIMSE_DATASET_PRESENT);
    c.priority = DIMSE_PRIORITY_HIGH;
    c.present |= DIMSE_HAS_PRIORITY;
    roundtrip(&c);

    cmd_init(&c, DIMSE_C_MOVE_RQ, STUDY_MOVE, DIMSE_DATASET_PRESENT);
    snprintf(c.move_destination, sizeof c.move_destination, "SIXTEEN-CHARS-AE");
    c.present |= DIMSE_HAS_PRIORITY | DIMSE_HAS_MOVE_DESTINATION;
    roundtrip(&c);

    /* C-CANCEL-RQ: no affected SOP class, a message ID being responded to. */
    memset(&c, 0, sizeof c);
    c.command_field = DIMSE_C_CANCEL_RQ;
    c.dataset_type = DIMSE_DATASET_NONE;
    c.message_id_responded = 5;
    c.present = DIMSE_HAS_COMMAND_FIELD | DIMSE_HAS_DATASET_TYPE | DIMSE_HAS_MESSAGE_ID_RESPONDED;
    roundtrip(&c);
}

static void test_roundtrip_responses(void **state)
{
    (void)state;
    struct dimse_cmd c;

    cmd_init(&c, DIMSE_C_ECHO_RSP, VERIFICATION, DIMSE_DATASET_NONE);
    roundtrip(&c);

    cmd_init(&c, DIMSE_C_STORE_RSP, CT_STORAGE, DIMSE_DATASET_NONE);
    snprintf(c.affected_sop_instance, sizeof c.affected_sop_instance, "1.2.3");
    c.present |= DIMSE_HAS_AFFECTED_SOP_INSTANCE;
    roundtrip(&c);

    /* Failure with every diagnostic field. */
    c.status = 0xA700;
    snprintf(c.error_comment, sizeof c.error_comment, "Out of resources: disk full");
    c.offending_element_n = 2;
    c.offending_element[0] = 0x00100010;
    c.offending_element[1] = 0x7FE00010;
    c.present |= DIMSE_HAS_ERROR_COMMENT | DIMSE_HAS_OFFENDING_ELEMENT;
    roundtrip(&c);

    cmd_init(&c, DIMSE_C_FIND_RSP, STUDY_FIND, DIMSE_DATASET_PRESENT);
    c.status = 0xFF00;
    roundtrip(&c);
    c.status = 0x0000;
    c.dataset_type = DIMSE_DATASET_NONE;
    roundtrip(&c);

    cmd_init(&c, DIMSE_C_GET_RSP, STUDY_GET, DIMSE_DATASET_NONE);
    c.status = 0xFF00;
    set_counts(&c, 10, 3, 1, 0);
    roundtrip(&c);
    c.status = 0xB000;
    c.dataset_type = DIMSE_DATASET_PRESENT; /* failed SOP instance UID list */
    set_counts(&c, 0, 13, 1, 0);
    c.present &= ~DIMSE_HAS_REMAINING;
    roundtrip(&c);

    cmd_init(&c, DIMSE_C_MOVE_RSP, STUDY_MOVE, DIMSE_DATASET_NONE);
    c.status = 0xFE00;
    set_counts(&c, 5, 5, 0, 2);
    roundtrip(&c);

    /* An N-* command with requested UIDs (names only; the fields are shared). */
    memset(&c, 0, sizeof c);
    c.command_field = DIMSE_N_ACTION_RQ;
    c.dataset_type = DIMSE_DATASET_PRESENT;
    c.message_id = 1;
    snprintf(c.requested_sop_class, sizeof c.requested_sop_class, "1.2.840.10008.1.20.1");
    snprintf(c.requested_sop_instance, sizeof c.requested_sop_instance, "1.2.840.10008.1.20.1.1");
    c.present = DIMSE_HAS_COMMAND_FIELD | DIMSE_HAS_DATASET_TYPE | DIMSE_HAS_MESSAGE_ID |
                DIMSE_HAS_REQUESTED_SOP_CLASS | DIMSE_HAS_REQUESTED_SOP_INSTANCE;
    roundtrip(&c);
    assert_string_equal(dimse_command_name(DIMSE_N_ACTION_RQ), "N-ACTION-RQ");
    assert_string_equal(dimse_command_name(DIMSE_C_CANCEL_RQ), "C-CANCEL-RQ");
    assert_string_equal(dimse_command_name(DIMSE_C_MOVE_RSP), "C-MOVE-RSP");
    assert_string_equal(dimse_command_name(0x1234), "unknown command");
}

/* Builds an element (group 0000) into buf at *n. */
static void el(uint8_t *buf, size_t *n, uint16_t group, uint16_t elem, const void *v, uint32_t len)
{
    uint8_t h[8] = { (uint8_t)group, (uint8_t)(group >> 8), (uint8_t)elem, (uint8_t)(elem >> 8),
                     (uint8_t)len, (uint8_t)(len >> 8), (uint8_t)(len >> 16), (uint8_t)(len >> 24) };
    memcpy(buf + *n, h, 8);
    if (len && v)
        memcpy(buf + *n + 8, v, len);
    *n += 8 + len;
}

/* A minimal valid C-ECHO-RQ body (no group length) to extend. */
static size_t base(uint8_t *buf)
{
    size_t n = 0;
    el(buf, &n, 0, 0x0100, "\x30\x00", 2);
    el(buf, &n, 0, 0x0800, "\x01\x01", 2);
    return n;
}

static void expect(const uint8_t *p, size_t n, int code, const char *text)
{
    struct dimse_cmd c;
    struct pacs_err err = { 0 };
    int rc = dimse_cmd_decode(p, n, &c, &err);
    if (rc != code || (text && !strstr(err.msg, text)))
        fail_msg("want %d '%s', got %d '%s'", code, text ? text : "", rc, err.msg);
    if (rc)
        assert_int_equal(c.present, 0);
}

static void test_decode_rules(void **state)
{
    (void)state;
    uint8_t b[512];
    size_t n;
    struct dimse_cmd c;
    struct pacs_err err = { 0 };

    n = base(b);
    expect(b, n, 0, NULL);

    /* Padding stripped; unknown group-0000 tags skipped; a wrong group
     * length value and an empty US accepted. */
    n = 0;
    el(b, &n, 0, 0x0000, "\x99\x00\x00\x00", 4);
    el(b, &n, 0, 0x0002, "1.2.3 \0\0", 8);
    el(b, &n, 0, 0x0100, "\x01\x00", 2);
    el(b, &n, 0, 0x0110, "\x07\x00", 2);
    el(b, &n, 0, 0x0600, "  DEST ", 7);
    el(b, &n, 0, 0x0700, NULL, 0);
    el(b, &n, 0, 0x0800, "\x00\x00", 2);
    el(b, &n, 0, 0x0903, "\x01\x00", 2);       /* Error ID: not kept */
    el(b, &n, 0, 0x1005, "\x10\x00\x10\x00", 4); /* Attribute Identifier List */
    el(b, &n, 0, 0x1000, "1.2.3.4\0", 8);
    assert_int_equal(dimse_cmd_decode(b, n, &c, &err), 0);
    assert_string_equal(c.affected_sop_class, "1.2.3");
    assert_string_equal(c.move_destination, "DEST");
    assert_string_equal(c.affected_sop_instance, "1.2.3.4");
    assert_false(c.present & DIMSE_HAS_PRIORITY);
    assert_int_equal(c.dataset_type, 0);

    /* Error comment: cut at 64, control characters replaced. */
    n = base(b);
    {
        char lo[100];
        memset(lo, 'x', sizeof lo);
        lo[1] = '\n';
        el(b, &n, 0, 0x0902, lo, sizeof lo);
    }
    assert_int_equal(dimse_cmd_decode(b, n, &c, &err), 0);
    assert_int_equal(strlen(c.error_comment), 64);
    assert_int_equal(c.error_comment[1], '?');

    /* AT: first 8 values kept. */
    n = base(b);
    {
        uint8_t at[40];
        for (unsigned i = 0; i < 10; i++) {
            at[4 * i] = 0x10; at[4 * i + 1] = 0x00;
            at[4 * i + 2] = (uint8_t)i; at[4 * i + 3] = 0x00;
        }
        el(b, &n, 0, 0x0901, at, 40);
    }
    assert_int_equal(dimse_cmd_decode(b, n, &c, &err), 0);
    assert_int_equal(c.offending_element_n, 8);
    assert_int_equal(c.offending_element[7], 0x00100007);

    /* Elements past group 0000 end the command set (DCMTK-based SCPs put
     * the Failed SOP Instance UID List there). */
    n = base(b);
    el(b, &n, 0x0008, 0x0058, "1.2\0", 4);
    assert_int_equal(dimse_cmd_decode(b, n, &c, &err), 0);

    /* Rejections. */

    n = base(b);
    expect(b, n - 1, PACS_ETRUNC, "(0000,0800) at offset 10 has length 2, only 1 bytes remain");
    expect(b, 13, PACS_ETRUNC, "element header at offset 10 needs 8 bytes, 3 remain");

    n = base(b);
    el(b, &n, 0, 0x0110, "\x01\x00\x00\x00", 4);
    expect(b, n, PACS_EINVAL, "(0000,0110) MessageID at offset 20 has length 4, not 2");

    n = base(b);
    el(b, &n, 0, 0x0901, "\x10\x00\x10\x00\x00\x00", 6);
    expect(b, n, PACS_EINVAL, "OffendingElement at offset 20 has length 6, not a multiple of 4");

    n = base(b);
    {
        char uid[66];
        memset(uid, '1', sizeof uid);
        el(b, &n, 0, 0x1000, uid, 66);
    }
    expect(b, n, PACS_EINVAL, "(0000,1000) AffectedSOPInstanceUID at offset 20 is 66 characters long");

    n = base(b);
    el(b, &n, 0, 0x0002, "1.2.a", 5);
    expect(b, n, PACS_EINVAL, "(0000,0002) AffectedSOPClassUID at offset 32 has invalid character 0x61");

    n = base(b);
    el(b, &n, 0, 0x0002, "1.2\0.3", 6);
    expect(b, n, PACS_EINVAL, "invalid character 0x00");

    n = base(b);
    el(b, &n, 0, 0x0600, "SEVENTEEN-CHARS-A", 17);
    expect(b, n, PACS_EINVAL, "(0000,0600) MoveDestination at offset 20 is 17 characters long");

    n = base(b);
    el(b, &n, 0, 0x1030, "A\tB", 3);
    expect(b, n, PACS_EINVAL, "MoveOriginatorApplicationEntityTitle at offset 29 has invalid character 0x09");

    n = 0;
    el(b, &n, 0, 0x0800, "\x01\x01", 2);
    expect(b, n, PACS_EINVAL, "no (0000,0100) CommandField");
    n = 0;
    el(b, &n, 0, 0x0100, NULL, 0);
    el(b, &n, 0, 0x0800, "\x01\x01", 2);
    expect(b, n, PACS_EINVAL, "no (0000,0100) CommandField");
    expect(b, 0, PACS_EINVAL, "no (0000,0100) CommandField");

    n = 0;
    el(b, &n, 0, 0x0100, "\x01\x80", 2);
    expect(b, n, PACS_EINVAL, "C-STORE-RSP command set has no (0000,0800) CommandDataSetType");

    n = base(b);
    el(b, &n, 0, 0x0100, "\x01\x00", 2);
    expect(b, n, PACS_EINVAL, "(0000,0100) CommandField at offset 20 appears twice");

    n = base(b);
    el(b, &n, 0, 0x0000, "\x00\x00", 2);
    expect(b, n, PACS_EINVAL, "(0000,0000) CommandGroupLength at offset 20 is not a 4-byte UL");
    n = base(b);
    el(b, &n, 0, 0x0000, "\x00\x00\x00\x00", 4);
    el(b, &n, 0, 0x0000, "\x00\x00\x00\x00", 4);
    expect(b, n, PACS_EINVAL, "appears twice");

    n = base(b);
    el(b, &n, 0, 0x1234, NULL, 0);
    b[n - 4] = b[n - 3] = b[n - 2] = b[n - 1] = 0xFF;
    expect(b, n, PACS_EINVAL, "(0000,1234) at offset 20 has undefined length");

    /* Over the limit, whatever the content. */
    uint8_t *big = calloc(1, DIMSE_MAX_CMD_LEN + 1);
    assert_non_null(big);
    expect(big, DIMSE_MAX_CMD_LEN + 1, PACS_ELIMIT, "exceeds the limit");
    free(big);
}

static void test_encode_errors(void **state)
{
    (void)state;
    struct dimse_cmd c;
    struct dynbuf out;
    struct pacs_err err = { 0 };
    dynbuf_init(&out, 0);
    assert_int_equal(dynbuf_append(&out, "abc", 3), 0);
    cmd_init(&c, DIMSE_C_STORE_RSP, CT_STORAGE, DIMSE_DATASET_NONE);
    c.offending_element_n = 9;
    c.present |= DIMSE_HAS_OFFENDING_ELEMENT;
    assert_int_equal(dimse_cmd_encode(&c, &out, &err), PACS_EINVAL);
    assert_non_null(strstr(err.msg, "offending"));
    assert_int_equal(out.len, 3);
    c.offending_element_n = 0;
    memset(c.move_destination, 'A', sizeof c.move_destination);
    c.present |= DIMSE_HAS_MOVE_DESTINATION;
    assert_int_equal(dimse_cmd_encode(&c, &out, &err), PACS_EINVAL);
    assert_non_null(strstr(err.msg, "(0000,0600) MoveDestination is not NUL-terminated"));
    c.present &= ~DIMSE_HAS_MOVE_DESTINATION; /* not written, not checked */
    assert_int_equal(dimse_cmd_encode(&c, &out, &err), 0);
    /* An odd-length AE is space-padded, an odd UID NUL-padded. */
    dynbuf_reset(&out);
    memset(&c, 0, sizeof c);
    c.command_field = DIMSE_C_MOVE_RQ;
    snprintf(c.move_destination, sizeof c.move_destination, "ABC");
    snprintf(c.affected_sop_class, sizeof c.affected_sop_class, "1.2.3");
    c.present = DIMSE_HAS_MOVE_DESTINATION | DIMSE_HAS_AFFECTED_SOP_CLASS;
    assert_int_equal(dimse_cmd_encode(&c, &out, &err), 0);
    assert_memory_equal(out.data + 12, "\x00\x00\x02\x00\x06\x00\x00\x00" "1.2.3\0", 14);
    assert_non_null(memmem(out.data, out.len, "ABC ", 4));
    /* A limited buffer: PACS_ELIMIT, nothing left behind. */
    struct dynbuf small;
    dynbuf_init(&small, 20);
    assert_int_equal(dimse_cmd_encode(&c, &small, &err), PACS_ELIMIT);
    assert_int_equal(small.len, 0);
    assert_true(err.msg[0] != '\0');
    dynbuf_free(&small);
    dynbuf_free(&out);
}

static void test_status_class(void **state)
{
    (void)state;
    assert_int_equal(dimse_status_class(0x0000), DIMSE_SUCCESS);
    assert_int_equal(dimse_status_class(0xFF00), DIMSE_PENDING);
    assert_int_equal(dimse_status_class(0xFF01), DIMSE_PENDING);
    assert_int_equal(dimse_status_class(0xFE00), DIMSE_CANCEL);
    assert_int_equal(dimse_status_class(0x0001), DIMSE_WARNING);
    assert_int_equal(dimse_status_class(0x0107), DIMSE_WARNING);
    assert_int_equal(dimse_status_class(0x0116), DIMSE_WARNING);
    assert_int_equal(dimse_status_class(0xB000), DIMSE_WARNING);
    assert_int_equal(dimse_status_class(0xB007), DIMSE_WARNING);
    assert_int_equal(dimse_status_class(0xBFFF), DIMSE_WARNING);
    assert_int_equal(dimse_status_class(0xA700), DIMSE_FAILURE);
    assert_int_equal(dimse_status_class(0xA900), DIMSE_FAILURE);
    assert_int_equal(dimse_status_class(0xC000), DIMSE_FAILURE);
    assert_int_equal(dimse_status_class(0x0122), DIMSE_FAILURE);
    assert_int_equal(dimse_status_class(0xFF02), DIMSE_FAILURE);
    assert_int_equal(dimse_status_class(0xAFFF), DIMSE_FAILURE);
    assert_string_equal(dimse_status_class_name(DIMSE_PENDING), "pending");
    assert_string_equal(dimse_status_class_name(DIMSE_FAILURE), "failure");
    assert_true(dimse_is_response(DIMSE_C_FIND_RSP));
    assert_false(dimse_is_response(DIMSE_C_CANCEL_RQ));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_echo),
        cmocka_unit_test(test_roundtrip_requests),
        cmocka_unit_test(test_roundtrip_responses),
        cmocka_unit_test(test_decode_rules),
        cmocka_unit_test(test_encode_errors),
        cmocka_unit_test(test_status_class),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
