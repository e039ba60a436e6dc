/* Unit tests: DICOM upper-layer PDU codecs (net/pdu). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/pdu.h"

/* Byte arrays from string literals: B("...") gives pointer and length. */
#define B(s) (const uint8_t *)(s), (uint32_t)(sizeof(s) - 1)
#define H(s) (const uint8_t *)(s)

/* What DCMTK 3.6.7 echoscu sends to ANY-SCP: one context (Verification,
 * Implicit VR LE), max PDU 16384, implementation class UID and version. */
static const char echoscu_rq[] =
    "\x01\x00" "\x00\x00\x00\xCD"                 /* A-ASSOCIATE-RQ, 205 bytes */
    "\x00\x01" "\x00\x00"                         /* protocol version 1 */
    "ANY-SCP         "                            /* called */
    "ECHOSCU         "                            /* calling */
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x10\x00\x00\x15" "1.2.840.10008.3.1.1.1"
    "\x20\x00\x00\x2E" "\x01\x00\xFF\x00"         /* PC 1 (reserved byte set) */
    "\x30\x00\x00\x11" "1.2.840.10008.1.1"
    "\x40\x00\x00\x11" "1.2.840.10008.1.2"
    "\x50\x00\x00\x3A"
    "\x51\x00\x00\x04" "\x00\x00\x40\x00"
    "\x52\x00\x00\x1B" "1.2.276.0.7230010.3.0.3.6.7"
    "\x55\x00\x00\x0F" "OFFIS_DCMTK_367";

/* storescp's answer. */
static const char storescp_ac[] =
    "\x02\x00" "\x00\x00\x00\xB8"                 /* 184 bytes */
    "\x00\x01" "\x00\x00"
    "ANY-SCP         "
    "ECHOSCU         "
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x10\x00\x00\x15" "1.2.840.10008.3.1.1.1"
    "\x21\x00\x00\x19" "\x01\x00\x00\x00"
    "\x40\x00\x00\x11" "1.2.840.10008.1.2"
    "\x50\x00\x00\x3A"
    "\x51\x00\x00\x04" "\x00\x00\x40\x00"
    "\x52\x00\x00\x1B" "1.2.276.0.7230010.3.0.3.6.7"
    "\x55\x00\x00\x0F" "OFFIS_DCMTK_367";

/* getscu-style: Study Root GET with three transfer syntaxes, a CT storage
 * context, SCP role selection for CT, user identity (username+passcode),
 * async window, a SOP class extended negotiation item and an unknown
 * sub-item (both skipped). UIDs of odd length are NUL-padded as some
 * implementations do. */
static const char getscu_rq[] =
    "\x01\x00" "\x00\x00\x01\xA6"                 /* 422 */
    "\x00\x01" "\x00\x00"
    "  PACSD  \0\0\0\0\0\0\0"                     /* leading spaces, NUL pad */
    "GETSCU          "
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x10\x00\x00\x15" "1.2.840.10008.3.1.1.1"
    "\x20\x00\x00\x69" "\x01\x00\x00\x00"         /* 105 */
    "\x30\x00\x00\x1C" "1.2.840.10008.5.1.4.1.2.2.3\0"  /* 28 */
    "\x40\x00\x00\x14" "1.2.840.10008.1.2.1\0"          /* 20 */
    "\x40\x00\x00\x14" "1.2.840.10008.1.2.2\0"
    "\x40\x00\x00\x11" "1.2.840.10008.1.2"              /* 17 */
    "\x20\x00\x00\x36" "\x03\x00\x00\x00"         /* 54 */
    "\x30\x00\x00\x19" "1.2.840.10008.5.1.4.1.1.2"      /* 25, unpadded */
    "\x40\x00\x00\x11" "1.2.840.10008.1.2"
    "\x50\x00\x00\x9E"                            /* 158 */
    "\x51\x00\x00\x04" "\x00\x01\x00\x00"                          /* 8 */
    "\x52\x00\x00\x1B" "1.2.276.0.7230010.3.0.3.6.7"               /* 31 */
    "\x53\x00\x00\x04" "\x00\x05\x00\x01"                          /* 8 */
    "\x54\x00\x00\x1D" "\x00\x19" "1.2.840.10008.5.1.4.1.1.2" "\x00\x01" /* 33 */
    "\x55\x00\x00\x0F" "OFFIS_DCMTK_367"                           /* 19 */
    "\x56\x00\x00\x1C" "\x00\x19" "1.2.840.10008.5.1.4.1.1.2" "\x01" /* 32 */
    "\x5F\x00\x00\x02" "\xAB\xCD"                                  /* 6 */
    "\x58\x00\x00\x11" "\x02\x01" "\x00\x05" "alice" "\x00\x06" "secret"; /* 21 */

static struct pdu_assoc *new_assoc(void)
{
    struct pdu_assoc *a = calloc(1, sizeof *a);
    assert_non_null(a);
    return a;
}

static void free_assoc(struct pdu_assoc *a)
{
    pdu_assoc_free(a);
    free(a);
}

/* Header check then body decode of a whole PDU. */
static int decode_whole(const uint8_t *p, uint32_t n, struct pdu_assoc *a, struct pacs_err *err)
{
    uint8_t type;
    uint32_t len;
    int rc = pdu_parse_header(p, 0, &type, &len, err);
    if (rc)
        return rc;
    assert_int_equal(len, n - PDU_HEADER_LEN);
    return pdu_decode_assoc(p + PDU_HEADER_LEN, len, type == PDU_ASSOC_RQ, a, err);
}

static void test_header(void **state)
{
    (void)state;
    uint8_t type;
    uint32_t len;
    struct pacs_err err = { 0 };
    assert_int_equal(pdu_parse_header(H("\x04\x00\x00\x01\x00\x00"), 65536, &type, &len, &err), 0);
    assert_int_equal(type, PDU_P_DATA);
    assert_int_equal(len, 65536);
    assert_int_equal(pdu_parse_header(H("\x04\x00\x00\x01\x00\x01"), 65536, &type, &len, &err),
                     PACS_ELIMIT);
    assert_int_equal(pdu_parse_header(H("\x04\x00\xFF\xFF\xFF\xFF"), 0, &type, &len, &err), 0);
    assert_int_equal(pdu_parse_header(H("\x08\x00\x00\x00\x00\x04"), 0, &type, &len, &err), PACS_EINVAL);
    assert_int_equal(type, 8); /* filled on error */
    assert_non_null(strstr(err.msg, "unknown PDU type 0x08"));
    assert_int_equal(pdu_parse_header(H("\x00\x00\x00\x00\x00\x04"), 0, &type, &len, &err), PACS_EINVAL);
    assert_int_equal(pdu_parse_header(H("\x01\x00\x00\x00\x00\x43"), 0, &type, &len, &err), PACS_EINVAL);
    assert_int_equal(pdu_parse_header(H("\x01\x00\x00\x00\x00\x44"), 0, &type, &len, &err), 0);
    assert_int_equal(pdu_parse_header(H("\x02\x00\x00\x01\x00\x00"), 0, &type, &len, &err), 0);
    assert_int_equal(pdu_parse_header(H("\x02\x00\x00\x01\x00\x01"), 0, &type, &len, &err), PACS_ELIMIT);
    assert_int_equal(pdu_parse_header(H("\x05\x00\x00\x00\x00\x04"), 0, &type, &len, &err), 0);
    assert_int_equal(pdu_parse_header(H("\x05\x00\x00\x00\x00\x05"), 0, &type, &len, &err), PACS_EINVAL);
    assert_int_equal(pdu_parse_header(H("\x07\x00\x00\x00\x00\x00"), 0, &type, &len, &err), PACS_EINVAL);
    assert_int_equal(pdu_parse_header(H("\x03\x00\x00\x00\x00\x04"), 0, &type, &len, &err), 0);
    assert_int_equal(pdu_parse_header(H("\x06\x00\x00\x00\x00\x04"), 0, &type, &len, &err), 0);
    assert_string_equal(pdu_type_name(PDU_RELEASE_RP), "A-RELEASE-RP");
    assert_string_equal(pdu_type_name(9), "unknown PDU");
}

static void test_decode_echoscu(void **state)
{
    (void)state;
    struct pdu_assoc *a = new_assoc();
    struct pacs_err err = { 0 };
    assert_int_equal(decode_whole(B(echoscu_rq), a, &err), 0);
    assert_int_equal(a->protocol_version, 1);
    assert_string_equal(a->called_aet, "ANY-SCP");
    assert_string_equal(a->calling_aet, "ECHOSCU");
    assert_string_equal(a->app_context, "1.2.840.10008.3.1.1.1");
    assert_int_equal(a->n_pc, 1);
    assert_int_equal(a->pc[0].id, 1);
    assert_int_equal(a->pc[0].result, 0); /* reserved byte in an RQ */
    assert_string_equal(a->pc[0].abstract_syntax, "1.2.840.10008.1.1");
    assert_int_equal(a->pc[0].n_ts, 1);
    assert_string_equal(a->pc[0].ts[0], "1.2.840.10008.1.2");
    assert_int_equal(a->max_pdu_length, 16384);
    assert_string_equal(a->impl_class_uid, "1.2.276.0.7230010.3.0.3.6.7");
    assert_string_equal(a->impl_version, "OFFIS_DCMTK_367");
    assert_false(a->has_async);
    assert_int_equal(a->n_role, 0);
    assert_false(a->user_identity.present);

    /* Our encoder gives back exactly DCMTK's bytes. */
    struct dynbuf out;
    dynbuf_init(&out, 0);
    assert_int_equal(pdu_encode_assoc(a, true, &out, &err), 0);
    assert_int_equal(out.len, sizeof echoscu_rq - 1);
    uint8_t want[sizeof echoscu_rq - 1];
    memcpy(want, echoscu_rq, sizeof want);
    want[6 + 68 + 25 + 6] = 0; /* the reserved byte is written as zero */
    assert_memory_equal(out.data, want, sizeof want);
    dynbuf_free(&out);
    free_assoc(a);
}

static void test_decode_storescp_ac(void **state)
{
    (void)state;
    struct pdu_assoc *a = new_assoc();
    struct pacs_err err = { 0 };
    assert_int_equal(decode_whole(B(storescp_ac), a, &err), 0);
    assert_int_equal(a->n_pc, 1);
    assert_int_equal(a->pc[0].result, PDU_PC_ACCEPTANCE);
    assert_int_equal(a->pc[0].n_ts, 1);
    assert_string_equal(a->pc[0].ts[0], "1.2.840.10008.1.2");
    struct dynbuf out;
    dynbuf_init(&out, 0);
    assert_int_equal(pdu_encode_assoc(a, false, &out, &err), 0);
    assert_int_equal(out.len, sizeof storescp_ac - 1);
    assert_memory_equal(out.data, storescp_ac, out.len);
    dynbuf_free(&out);
    free_assoc(a);
}

static void test_decode_getscu(void **state)
{
    (void)state;
    struct pdu_assoc *a = new_assoc();
    struct pacs_err err = { 0 };
    int rc = decode_whole(B(getscu_rq), a, &err);
    assert_int_equal(rc, 0);
    assert_string_equal(a->called_aet, "PACSD");
    assert_string_equal(a->calling_aet, "GETSCU");
    assert_int_equal(a->n_pc, 2);
    assert_string_equal(a->pc[0].abstract_syntax, "1.2.840.10008.5.1.4.1.2.2.3");
    assert_int_equal(a->pc[0].n_ts, 3);
    assert_string_equal(a->pc[0].ts[0], "1.2.840.10008.1.2.1");
    assert_string_equal(a->pc[0].ts[1], "1.2.840.10008.1.2.2");
    assert_string_equal(a->pc[0].ts[2], "1.2.840.10008.1.2");
    assert_int_equal(a->pc[1].id, 3);
    assert_string_equal(a->pc[1].abstract_syntax, "1.2.840.10008.5.1.4.1.1.2");
    assert_int_equal(a->max_pdu_length, 65536);
    assert_true(a->has_async);
    assert_int_equal(a->max_ops_invoked, 5);
    assert_int_equal(a->max_ops_performed, 1);
    assert_int_equal(a->n_role, 1);
    assert_string_equal(a->role[0].sop_class, "1.2.840.10008.5.1.4.1.1.2");
    assert_false(a->role[0].scu);
    assert_true(a->role[0].scp);
    assert_true(a->user_identity.present);
    assert_int_equal(a->user_identity.type, PDU_UID_USERNAME_PASSCODE);
    assert_true(a->user_identity.positive_response_requested);
    assert_int_equal(a->user_identity.primary_len, 5);
    assert_memory_equal(a->user_identity.primary, "alice", 5);
    assert_int_equal(a->user_identity.secondary_len, 6);
    assert_memory_equal(a->user_identity.secondary, "secret", 6);
    free_assoc(a);
}

static void fill_full(struct pdu_assoc *a, bool is_rq)
{
    memset(a, 0, sizeof *a);
    a->protocol_version = 1;
    snprintf(a->called_aet, sizeof a->called_aet, "PACSD");
    snprintf(a->calling_aet, sizeof a->calling_aet, "SIXTEEN-CHARS-AE");
    snprintf(a->app_context, sizeof a->app_context, "1.2.840.10008.3.1.1.1");
    a->n_pc = PDU_MAX_PCS;
    for (unsigned i = 0; i < a->n_pc; i++) {
        struct pdu_pc *pc = &a->pc[i];
        pc->id = (uint8_t)(2 * i + 1);
        if (is_rq) {
            snprintf(pc->abstract_syntax, sizeof pc->abstract_syntax, "1.2.840.10008.5.1.4.1.1.%u", i);
            pc->n_ts = (uint8_t)(1 + i % 3);
            for (unsigned k = 0; k < pc->n_ts; k++)
                snprintf(pc->ts[k], sizeof pc->ts[k], "1.2.840.10008.1.2.%u", k);
        } else {
            pc->result = (uint8_t)(i % 5);
            /* Rejected contexts alternate between none and a syntax. */
            pc->n_ts = pc->result == 0 || i % 2;
            if (pc->n_ts)
                snprintf(pc->ts[0], sizeof pc->ts[0], "1.2.840.10008.1.2.1");
        }
    }
    a->max_pdu_length = 0x12345678;
    snprintf(a->impl_class_uid, sizeof a->impl_class_uid, "1.2.826.0.1.3680043.10.1");
    snprintf(a->impl_version, sizeof a->impl_version, "PACSD_0.1.0");
    a->has_async = true;
    a->max_ops_invoked = 0;
    a->max_ops_performed = 7;
    a->n_role = 3;
    for (unsigned i = 0; i < a->n_role; i++) {
        snprintf(a->role[i].sop_class, sizeof a->role[i].sop_class, "1.2.840.10008.5.1.4.1.1.%u", i);
        a->role[i].scu = i & 1;
        a->role[i].scp = (i & 2) != 0 || i == 0;
    }
    struct pdu_user_identity *u = &a->user_identity;
    u->present = true;
    if (is_rq) {
        u->type = PDU_UID_JWT;
        u->positive_response_requested = true;
        u->primary_len = 900;
        u->primary = malloc(900);
        assert_non_null(u->primary);
        for (unsigned i = 0; i < 900; i++)
            u->primary[i] = (uint8_t)('A' + i % 26);
    } else {
        u->primary_len = 3;
        u->primary = malloc(3);
        assert_non_null(u->primary);
        memcpy(u->primary, "ok!", 3);
    }
}

static void assert_assoc_equal(const struct pdu_assoc *x, const struct pdu_assoc *y, bool is_rq)
{
    assert_int_equal(x->protocol_version, y->protocol_version);
    assert_string_equal(x->called_aet, y->called_aet);
    assert_string_equal(x->calling_aet, y->calling_aet);
    assert_string_equal(x->app_context, y->app_context);
    assert_int_equal(x->n_pc, y->n_pc);
    for (unsigned i = 0; i < x->n_pc; i++) {
        assert_int_equal(x->pc[i].id, y->pc[i].id);
        assert_int_equal(x->pc[i].n_ts, y->pc[i].n_ts);
        if (is_rq)
            assert_string_equal(x->pc[i].abstract_syntax, y->pc[i].abstract_syntax);
        else
            assert_int_equal(x->pc[i].result, y->pc[i].result);
        for (unsigned k = 0; k < x->pc[i].n_ts; k++)
            assert_string_equal(x->pc[i].ts[k], y->pc[i].ts[k]);
    }
    assert_int_equal(x->max_pdu_length, y->max_pdu_length);
    assert_string_equal(x->impl_class_uid, y->impl_class_uid);
    assert_string_equal(x->impl_version, y->impl_version);
    assert_int_equal(x->has_async, y->has_async);
    assert_int_equal(x->max_ops_invoked, y->max_ops_invoked);
    assert_int_equal(x->max_ops_performed, y->max_ops_performed);
    assert_int_equal(x->n_role, y->n_role);
    for (unsigned i = 0; i < x->n_role; i++) {
        assert_string_equal(x->role[i].sop_class, y->role[i].sop_class);
        assert_int_equal(x->role[i].scu, y->role[i].scu);
        assert_int_equal(x->role[i].scp, y->role[i].scp);
    }
    const struct pdu_user_identity *u = &x->user_identity, *v = &y->user_identity;
    assert_int_equal(u->present, v->present);
    assert_int_equal(u->type, v->type);
    assert_int_equal(u->positive_response_requested, v->positive_response_requested);
    assert_int_equal(u->primary_len, v->primary_len);
    assert_int_equal(u->secondary_len, v->secondary_len);
    if (u->primary_len)
        assert_memory_equal(u->primary, v->primary, u->primary_len);
    if (u->secondary_len)
        assert_memory_equal(u->secondary, v->secondary, u->secondary_len);
}

static void roundtrip(bool is_rq)
{
    struct pdu_assoc *a = new_assoc(), *b = new_assoc();
    struct pacs_err err = { 0 };
    struct dynbuf out;
    dynbuf_init(&out, 0);
    fill_full(a, is_rq);
    assert_int_equal(dynbuf_append(&out, "xy", 2), 0); /* appends after existing bytes */
    assert_int_equal(pdu_encode_assoc(a, is_rq, &out, &err), 0);
    assert_int_equal(out.data[2], is_rq ? PDU_ASSOC_RQ : PDU_ASSOC_AC);
    assert_int_equal(decode_whole(out.data + 2, (uint32_t)out.len - 2, b, &err), 0);
    assert_assoc_equal(a, b, is_rq);
    /* Every prefix of the body fails cleanly (and leaks nothing). */
    uint32_t body = (uint32_t)out.len - 2 - PDU_HEADER_LEN;
    for (uint32_t n = 0; n < body; n += 7) {
        struct pdu_assoc *c = new_assoc();
        /* A cut between items may still be a valid PDU. */
        if (pdu_decode_assoc(out.data + 2 + PDU_HEADER_LEN, n, is_rq, c, &err) < 0)
            assert_true(err.msg[0] != '\0' && c->user_identity.primary == NULL);
        free_assoc(c);
    }
    dynbuf_free(&out);
    free_assoc(a);
    free_assoc(b);
}

static void test_roundtrip_rq(void **state)
{
    (void)state;
    roundtrip(true);
}

static void test_roundtrip_ac(void **state)
{
    (void)state;
    roundtrip(false);
}

static void test_ac_rejected_contexts(void **state)
{
    (void)state;
    struct pdu_assoc *a = new_assoc();
    struct pacs_err err = { 0 };
    /* Context 1 rejected (3) without a TS sub-item, context 3 rejected (4)
     * with a garbage one, context 5 accepted; no user information. */
    static const char ac[] =
        "\x00\x01\x00\x00" "RQ              " "CALLER          "
        "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
        "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
        "\x10\x00\x00\x15" "1.2.840.10008.3.1.1.1"
        "\x21\x00\x00\x04" "\x01\x00\x03\x00"
        "\x21\x00\x00\x0B" "\x03\x00\x04\x00" "\x40\x00\x00\x03" "x y"
        "\x21\x00\x00\x19" "\x05\x00\x00\x00" "\x40\x00\x00\x11" "1.2.840.10008.1.2";
    assert_int_equal(pdu_decode_assoc(B(ac), false, a, &err), 0);
    assert_int_equal(a->n_pc, 3);
    assert_int_equal(a->pc[0].result, 3);
    assert_int_equal(a->pc[0].n_ts, 0);
    assert_int_equal(a->pc[1].result, 4);
    assert_int_equal(a->pc[1].n_ts, 0);
    assert_int_equal(a->pc[2].n_ts, 1);
    assert_int_equal(a->max_pdu_length, 0);
    assert_string_equal(a->impl_class_uid, "");
    /* Encoding writes an empty TS sub-item for the rejected ones. */
    struct dynbuf out;
    dynbuf_init(&out, 0);
    assert_int_equal(pdu_encode_assoc(a, false, &out, &err), 0);
    struct pdu_assoc *b = new_assoc();
    assert_int_equal(decode_whole(out.data, (uint32_t)out.len, b, &err), 0);
    assert_assoc_equal(a, b, false);
    free_assoc(b);
    dynbuf_free(&out);
    free_assoc(a);
    assert_string_equal(pdu_pc_result_name(3), "abstract-syntax-not-supported (provider rejection)");
}

/* AE titles of an AC are not tested, only trimmed; an embedded NUL ends
 * them, and the spaces before it are padding too (found by fuzz_pdu). */
static void test_ac_ae_titles(void **state)
{
    (void)state;
    static const char ac[] =
        "\x00\x01\x00\x00" "Y    \0   \x18      " "                "
        "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
        "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
        "\x10\x00\x00\x15" "1.2.840.10008.3.1.1.1";
    struct pdu_assoc *a = new_assoc();
    struct pacs_err err = { 0 };
    assert_int_equal(pdu_decode_assoc(B(ac), false, a, &err), 0);
    assert_string_equal(a->called_aet, "Y");
    assert_string_equal(a->calling_aet, "");
    assert_int_equal(a->n_pc, 0);
    /* The same titles in an RQ are rejected. */
    assert_int_equal(pdu_decode_assoc(B(ac), true, a, &err), PACS_EINVAL);
    assert_non_null(strstr(err.msg, "called AE title at offset 15 has control character 0x00"));
    free_assoc(a);
}

/* Copies the echoscu RQ body so a test can patch one byte or field. */
struct rq {
    uint8_t b[1024];
    uint32_t n;
};

static void rq_init(struct rq *r)
{
    r->n = sizeof echoscu_rq - 1 - PDU_HEADER_LEN;
    memcpy(r->b, echoscu_rq + PDU_HEADER_LEN, r->n);
}

/* Replaces the bytes at [at, at+cut) of the body by ins. */
static void rq_splice(struct rq *r, uint32_t at, uint32_t cut, const void *ins, uint32_t n)
{
    assert_true(r->n - cut + n <= sizeof r->b);
    memmove(r->b + at + n, r->b + at + cut, r->n - at - cut);
    memcpy(r->b + at, ins, n);
    r->n = r->n - cut + n;
}

/* Offsets in the echoscu body. */
#define O_APP 68
#define O_PC (68 + 25)
#define O_UI (68 + 25 + 50)

static int rq_decode(struct rq *r, bool is_rq, struct pacs_err *err)
{
    struct pdu_assoc *a = new_assoc();
    int rc = pdu_decode_assoc(r->b, r->n, is_rq, a, err);
    if (rc != 0)
        assert_true(err->msg[0] != '\0');
    free_assoc(a);
    return rc;
}

static void expect(struct rq *r, int code, const char *text)
{
    struct pacs_err err = { 0 };
    int rc = rq_decode(r, true, &err);
    if (rc != code || (text && !strstr(err.msg, text)))
        fail_msg("want %d '%s', got %d '%s'", code, text ? text : "", rc, err.msg);
}

static void test_rq_rejections(void **state)
{
    (void)state;
    struct rq r;

    rq_init(&r);
    expect(&r, 0, NULL);

    rq_init(&r);
    memset(r.b + 4, ' ', 16);
    expect(&r, PACS_EINVAL, "called AE title at offset 10 is empty");

    rq_init(&r);
    r.b[20 + 2] = '\n';
    expect(&r, PACS_EINVAL, "calling AE title at offset 28 has control character 0x0A");

    rq_init(&r);
    memset(r.b + 4, 0, 16);
    expect(&r, PACS_EINVAL, "empty");

    rq_init(&r); /* no application context */
    rq_splice(&r, O_APP, 25, "", 0);
    expect(&r, PACS_EINVAL, "no application context");

    rq_init(&r); /* two application contexts */
    rq_splice(&r, O_APP, 0, r.b + O_APP, 25);
    expect(&r, PACS_EINVAL, "second application context item (0x10) at offset 99");

    rq_init(&r); /* no presentation context */
    rq_splice(&r, O_PC, 50, "", 0);
    expect(&r, PACS_EINVAL, "no presentation context");

    rq_init(&r);
    r.b[O_PC + 4] = 2;
    expect(&r, PACS_EINVAL, "ID 2, not odd");

    rq_init(&r);
    r.b[O_PC + 4] = 0;
    expect(&r, PACS_EINVAL, "ID 0, not odd");

    rq_init(&r); /* duplicate ID */
    rq_splice(&r, O_PC, 0, r.b + O_PC, 50);
    expect(&r, PACS_EINVAL, "repeats ID 1");

    rq_init(&r); /* a second distinct context is fine */
    rq_splice(&r, O_PC, 0, r.b + O_PC, 50);
    r.b[O_PC + 4] = 3;
    expect(&r, 0, NULL);

    rq_init(&r); /* PC without abstract syntax */
    rq_splice(&r, O_PC + 8, 21, "", 0);
    r.b[O_PC + 3] = 0x2E - 21;
    expect(&r, PACS_EINVAL, "has no abstract syntax");

    rq_init(&r); /* PC without transfer syntax */
    rq_splice(&r, O_PC + 29, 21, "", 0);
    r.b[O_PC + 3] = 0x2E - 21;
    expect(&r, PACS_EINVAL, "proposes no transfer syntax");

    rq_init(&r); /* two abstract syntaxes */
    rq_splice(&r, O_PC + 8, 0, r.b + O_PC + 8, 21);
    r.b[O_PC + 3] = 0x2E + 21;
    expect(&r, PACS_EINVAL, "second abstract syntax");

    rq_init(&r);
    r.b[O_PC + 29 + 4 + 3] = 'x';
    expect(&r, PACS_EINVAL, "transfer syntax sub-item (0x40) at offset 135 has invalid character 0x78");

    rq_init(&r); /* unknown sub-item in a PC */
    r.b[O_PC + 29] = 0x41;
    expect(&r, PACS_EINVAL, "unexpected sub-item type 0x41");

    rq_init(&r); /* AC item in an RQ */
    r.b[O_PC] = 0x21;
    expect(&r, PACS_EINVAL, "unexpected item type 0x21 at offset 99");

    rq_init(&r); /* item running past the end */
    r.b[O_UI + 3] = 0x3B;
    expect(&r, PACS_ETRUNC, "item 0x50 at offset 149 in A-ASSOCIATE-RQ has length 59, only 58 bytes remain");

    rq_init(&r); /* trailing garbage shorter than an item header */
    rq_splice(&r, r.n, 0, "\x50\x00", 2);
    expect(&r, PACS_ETRUNC, "needs 4 bytes");

    rq_init(&r); /* 65-character UID */
    {
        char uid[70];
        memset(uid, '1', 65);
        uint8_t item[4] = { 0x10, 0, 0, 65 };
        rq_splice(&r, O_APP, 25, item, 4);
        rq_splice(&r, O_APP + 4, 0, uid, 65);
        expect(&r, PACS_EINVAL, "more than 64");
    }

    rq_init(&r); /* UID with NUL padding and spaces is fine, empty is not */
    {
        uint8_t item[8] = { 0x10, 0, 0, 4, ' ', '\0', ' ', '\0' };
        rq_splice(&r, O_APP, 25, item, 8);
        expect(&r, PACS_EINVAL, "application context item (0x10) at offset 78 is empty");
    }

    rq_init(&r);
    r.b[O_UI + 4 + 3] = 3; /* max length sub-item length 3 */
    expect(&r, PACS_EINVAL, "maximum length sub-item (0x51) at offset 153 has length 3, not 4");

    rq_init(&r); /* duplicate max length sub-item */
    rq_splice(&r, O_UI + 4, 0, r.b + O_UI + 4, 8);
    r.b[O_UI + 3] += 8;
    expect(&r, PACS_EINVAL, "sub-item 0x51 at offset 161 appears twice");

    rq_init(&r); /* user information without max length: accepted, 0 */
    rq_splice(&r, O_UI + 4, 8, "", 0);
    r.b[O_UI + 3] -= 8;
    expect(&r, 0, NULL);

    rq_init(&r); /* no user information at all: accepted */
    rq_splice(&r, O_UI, 62, "", 0);
    expect(&r, 0, NULL);

    rq_init(&r); /* two user information items */
    rq_splice(&r, O_UI, 0, r.b + O_UI, 62);
    expect(&r, PACS_EINVAL, "second user information item");

    struct {
        const char *sub;
        uint32_t n;
        int code;
        const char *text;
    } subs[] = {
        { "\x54\x00\x00\x05" "\x00\x02" "1." "\x01", 9, PACS_EINVAL, "role selection sub-item (0x54) at offset 211: UID length" },
        { "\x54\x00\x00\x05" "\x00\x01" "1" "\x01\x01", 9, 0, NULL },
        { "\x54\x00\x00\x04" "\x00\x00" "\x01\x01", 8, PACS_EINVAL, "SOP class UID at offset 217 is empty" },
        { "\x54\x00\x00\x01" "\x00", 5, PACS_EINVAL, "UID length" },
        { "\x53\x00\x00\x02" "\x00\x01", 6, PACS_EINVAL, "(0x53) at offset 211 has length 2" },
        { "\x58\x00\x00\x07" "\x09\x00" "\x00\x01" "a" "\x00\x00", 11, PACS_EINVAL, "unknown identity type 9" },
        { "\x58\x00\x00\x06" "\x01\x00" "\x00\x00" "\x00\x00", 10, PACS_EINVAL, "empty primary field" },
        { "\x58\x00\x00\x07" "\x01\x00" "\x00\x02" "a" "\x00\x00", 11, PACS_EINVAL, "overruns" },
        { "\x58\x00\x00\x08" "\x01\x00" "\x00\x01" "a" "\x00\x00" "z", 12, PACS_EINVAL, "secondary field length 0" },
        { "\x58\x00\x00\x05" "\x01\x00" "\x00\x01" "a", 9, PACS_EINVAL, "less than 6" },
        { "\x58\x00\x00\x07" "\x01\x00" "\x00\x01" "a" "\x00\x00", 11, 0, NULL },
        { "\x59\x00\x00\x01" "\x00", 5, 0, NULL },       /* AC item in an RQ: skipped */
        { "\x57\x00\x00\x00", 4, 0, NULL },              /* common extended: skipped */
        { "\x52\x00\x00\x01" "1", 5, PACS_EINVAL, "appears twice" },
        { "\x55\x00\x00\x14" "ABCDEFGHIJKLMNOPQRST", 24, PACS_EINVAL, "appears twice" },
    };
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        rq_init(&r);
        rq_splice(&r, r.n, 0, subs[i].sub, subs[i].n);
        r.b[O_UI + 3] = (uint8_t)(r.b[O_UI + 3] + subs[i].n);
        expect(&r, subs[i].code, subs[i].text);
    }

    rq_init(&r); /* long version name: truncated, control characters replaced */
    {
        static const char v[] = "\x55\x00\x00\x14" "AB\tDEFGHIJKLMNOPQRST";
        struct pdu_assoc *a = new_assoc();
        struct pacs_err err = { 0 };
        rq_splice(&r, O_UI + 4 + 8 + 31, 19, v, sizeof v - 1);
        r.b[O_UI + 3] = (uint8_t)(r.b[O_UI + 3] + 5);
        assert_int_equal(pdu_decode_assoc(r.b, r.n, true, a, &err), 0);
        assert_string_equal(a->impl_version, "AB?DEFGHIJKLMNOP");
        free_assoc(a);
    }

    rq_init(&r); /* user identity field over the limit */
    {
        uint32_t big = PDU_MAX_USER_IDENTITY_LEN + 1;
        uint8_t *buf = calloc(1, big + 200);
        assert_non_null(buf);
        memcpy(buf, r.b, O_UI);
        uint32_t n = O_UI;
        uint8_t ui[4] = { 0x50, 0, (uint8_t)((big + 10) >> 8), (uint8_t)(big + 10) };
        memcpy(buf + n, ui, 4);
        n += 4;
        uint8_t sub[8] = { 0x58, 0, (uint8_t)((big + 6) >> 8), (uint8_t)(big + 6), 1, 0,
                           (uint8_t)(big >> 8), (uint8_t)big };
        memcpy(buf + n, sub, 8);
        n += 8 + big + 2;
        struct pdu_assoc *a = new_assoc();
        struct pacs_err err = { 0 };
        assert_int_equal(pdu_decode_assoc(buf, n, true, a, &err), PACS_ELIMIT);
        assert_non_null(strstr(err.msg, "user identity field"));
        free_assoc(a);
        free(buf);
    }

    rq_init(&r); /* too short, too long */
    {
        struct pacs_err err = { 0 };
        struct pdu_assoc *a = new_assoc();
        assert_int_equal(pdu_decode_assoc(r.b, 67, true, a, &err), PACS_ETRUNC);
        assert_int_equal(pdu_decode_assoc(r.b, PDU_MAX_ASSOC_LEN + 1, true, a, &err), PACS_ELIMIT);
        free_assoc(a);
    }
}

static void test_limits(void **state)
{
    (void)state;
    struct pdu_assoc *a = new_assoc();
    struct pacs_err err = { 0 };
    struct dynbuf out;
    dynbuf_init(&out, 0);
    fill_full(a, true);
    a->pc[5].n_ts = PDU_MAX_TS_PER_PC;
    for (unsigned k = 0; k < PDU_MAX_TS_PER_PC; k++)
        snprintf(a->pc[5].ts[k], sizeof a->pc[5].ts[k], "1.2.3.%u", k);
    assert_int_equal(pdu_encode_assoc(a, true, &out, &err), 0);
    struct pdu_assoc *b = new_assoc();
    assert_int_equal(decode_whole(out.data, (uint32_t)out.len, b, &err), 0);
    assert_assoc_equal(a, b, true);
    free_assoc(b);

    /* The encoder refuses one transfer syntax more than the limit. */
    a->pc[5].n_ts = PDU_MAX_TS_PER_PC + 1;
    dynbuf_reset(&out);
    assert_int_equal(pdu_encode_assoc(a, true, &out, &err), PACS_EINVAL);
    assert_int_equal(out.len, 0);
    a->pc[5].n_ts = 1;

    /* Decoder: 33 TS sub-items in one context. */
    {
        struct rq r;
        rq_init(&r);
        uint8_t ts[21];
        memcpy(ts, r.b + O_PC + 29, 21);
        for (int i = 0; i < PDU_MAX_TS_PER_PC; i++)
            rq_splice(&r, O_PC + 29, 0, ts, 21);
        uint16_t l = (uint16_t)(0x2E + 21 * PDU_MAX_TS_PER_PC);
        r.b[O_PC + 2] = (uint8_t)(l >> 8);
        r.b[O_PC + 3] = (uint8_t)l;
        expect(&r, PACS_ELIMIT, "proposes more than 32");
    }

    /* Encoder argument checks. */
    a->n_pc = PDU_MAX_PCS + 1;
    assert_int_equal(pdu_encode_assoc(a, true, &out, &err), PACS_EINVAL);
    a->n_pc = 2;
    a->pc[1].id = 4;
    assert_int_equal(pdu_encode_assoc(a, true, &out, &err), PACS_EINVAL);
    assert_non_null(strstr(err.msg, "not odd"));
    a->pc[1].id = 3;
    memset(a->called_aet, 'A', sizeof a->called_aet);
    assert_int_equal(pdu_encode_assoc(a, true, &out, &err), PACS_EINVAL);
    snprintf(a->called_aet, sizeof a->called_aet, "X");
    a->user_identity.type = 0;
    assert_int_equal(pdu_encode_assoc(a, true, &out, &err), PACS_EINVAL);
    a->user_identity.type = 1;
    /* A limited dynbuf reports its limit and keeps its bytes. */
    struct dynbuf small;
    dynbuf_init(&small, 100);
    assert_int_equal(dynbuf_append(&small, "abc", 3), 0);
    assert_int_equal(pdu_encode_assoc(a, true, &small, &err), PACS_ELIMIT);
    assert_int_equal(small.len, 3);
    assert_true(err.msg[0] != '\0');
    dynbuf_free(&small);
    assert_int_equal(pdu_encode_assoc(a, true, &out, &err), 0);
    dynbuf_free(&out);
    free_assoc(a);
}

static void test_short_pdus(void **state)
{
    (void)state;
    struct dynbuf out;
    struct pacs_err err = { 0 };
    uint8_t type, a, b, c;
    uint32_t len;
    dynbuf_init(&out, 0);

    assert_int_equal(pdu_encode_reject(PDU_RJ_PERMANENT, PDU_RJ_SRC_USER, PDU_RJ_USER_CALLED_AE_NOT_RECOGNIZED,
                                       &out), 0);
    assert_int_equal(out.len, 10);
    assert_memory_equal(out.data, "\x03\x00\x00\x00\x00\x04\x00\x01\x01\x07", 10);
    assert_int_equal(pdu_parse_header(out.data, 0, &type, &len, &err), 0);
    assert_int_equal(pdu_decode_reject(out.data + 6, len, &a, &b, &c, &err), 0);
    assert_int_equal(a, 1);
    assert_int_equal(b, 1);
    assert_int_equal(c, 7);
    assert_string_equal(pdu_reject_reason_name(b, c), "called-AE-title-not-recognized");
    assert_string_equal(pdu_reject_reason_name(2, 2), "protocol-version-not-supported");
    assert_string_equal(pdu_reject_reason_name(3, 2), "local-limit-exceeded");
    assert_int_equal(pdu_decode_reject(out.data + 6, 3, &a, &b, &c, &err), PACS_EINVAL);

    dynbuf_reset(&out);
    assert_int_equal(pdu_encode_abort(PDU_ABORT_SRC_PROVIDER, PDU_ABORT_UNEXPECTED_PDU, &out), 0);
    assert_memory_equal(out.data, "\x07\x00\x00\x00\x00\x04\x00\x00\x02\x02", 10);
    assert_int_equal(pdu_decode_abort(out.data + 6, 4, &b, &c, &err), 0);
    assert_int_equal(b, 2);
    assert_int_equal(c, 2);
    assert_string_equal(pdu_abort_reason_name(b, c), "unexpected-PDU");
    assert_string_equal(pdu_abort_reason_name(0, 0), "service-user abort");
    assert_int_equal(pdu_decode_abort(out.data + 6, 5, &b, &c, &err), PACS_EINVAL);
    /* Reserved bytes are not checked. */
    assert_int_equal(pdu_decode_abort(B("\xFF\xFF\x00\x00"), &b, &c, &err), 0);

    dynbuf_reset(&out);
    assert_int_equal(pdu_encode_release(true, &out), 0);
    assert_int_equal(pdu_encode_release(false, &out), 0);
    assert_memory_equal(out.data, "\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"
                                  "\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00", 20);
    assert_int_equal(pdu_decode_release(out.data + 6, 4, &err), 0);
    assert_int_equal(pdu_decode_release(out.data + 6, 0, &err), PACS_EINVAL);
    assert_non_null(strstr(err.msg, "A-RELEASE"));
    dynbuf_free(&out);
}

static void test_pdv(void **state)
{
    (void)state;
    struct pacs_err err = { 0 };
    struct pdu_pdv v;
    uint32_t pos = 0;
    /* Command (last), then a data set in two fragments, one of them empty. */
    static const char body[] =
        "\x00\x00\x00\x06" "\x01\x03" "CMDS"
        "\x00\x00\x00\x05" "\x03\x00" "abc"
        "\x00\x00\x00\x02" "\x03\x02";
    assert_int_equal(pdu_next_pdv(B(body), &pos, &v, &err), 1);
    assert_int_equal(v.pc_id, 1);
    assert_true(v.command);
    assert_true(v.last);
    assert_int_equal(v.len, 4);
    assert_memory_equal(v.data, "CMDS", 4);
    assert_int_equal(pdu_next_pdv(B(body), &pos, &v, &err), 1);
    assert_int_equal(v.pc_id, 3);
    assert_false(v.command);
    assert_false(v.last);
    assert_int_equal(v.len, 3);
    assert_int_equal(pdu_next_pdv(B(body), &pos, &v, &err), 1);
    assert_false(v.command);
    assert_true(v.last);
    assert_int_equal(v.len, 0);
    assert_int_equal(pdu_next_pdv(B(body), &pos, &v, &err), 0);
    assert_int_equal(pos, sizeof body - 1);

    struct {
        const char *b;
        uint32_t n;
        int code;
        const char *text;
    } bad[] = {
        { "\x00\x00\x00\x01" "\x01", 5, PACS_EINVAL, "PDV item at offset 6 has length 1, less than 2" },
        { "\x00\x00\x00\x05" "\x01\x00" "ab", 8, PACS_ETRUNC, "has length 5, only 4 bytes remain" },
        { "\x00\x00\x00\x02" "\x02\x00", 6, PACS_EINVAL, "presentation context ID 2" },
        { "\x00\x00\x00\x02" "\x00\x00", 6, PACS_EINVAL, "presentation context ID 0" },
        { "\x00\x00\x00\x02" "\x01\x00" "\x00\x00\x00", 9, PACS_ETRUNC, "offset 12 needs a 4-byte length" },
        { "\xFF\xFF\xFF\xFF" "\x01\x00", 6, PACS_ETRUNC, "only 2 bytes remain" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc;
        pos = 0;
        while ((rc = pdu_next_pdv((const uint8_t *)bad[i].b, bad[i].n, &pos, &v, &err)) == 1)
            ;
        if (rc != bad[i].code || !strstr(err.msg, bad[i].text))
            fail_msg("case %zu: got %d '%s'", i, rc, err.msg);
    }
    pos = 0;
    assert_int_equal(pdu_next_pdv(NULL, 0, &pos, &v, &err), 0);
    pos = sizeof body;
    assert_int_equal(pdu_next_pdv(B(body), &pos, &v, &err), PACS_EINVAL);

    uint8_t hdr[PDU_PDV_HEADER_LEN];
    pdu_pdv_header(hdr, 5, true, true, 0x01020304);
    assert_memory_equal(hdr, "\x04\x00\x01\x02\x03\x0A\x01\x02\x03\x06\x05\x03", 12);
    pdu_pdv_header(hdr, 7, false, false, 0);
    assert_memory_equal(hdr, "\x04\x00\x00\x00\x00\x06\x00\x00\x00\x02\x07\x00", 12);
    uint8_t type;
    uint32_t len;
    assert_int_equal(pdu_parse_header(hdr, 16384, &type, &len, &err), 0);
    pos = 0;
    assert_int_equal(pdu_next_pdv(hdr + 6, len, &pos, &v, &err), 1);
    assert_int_equal(v.pc_id, 7);
    assert_int_equal(v.len, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header),
        cmocka_unit_test(test_decode_echoscu),
        cmocka_unit_test(test_decode_storescp_ac),
        cmocka_unit_test(test_decode_getscu),
        cmocka_unit_test(test_roundtrip_rq),
        cmocka_unit_test(test_roundtrip_ac),
        cmocka_unit_test(test_ac_rejected_contexts),
        cmocka_unit_test(test_ac_ae_titles),
        cmocka_unit_test(test_rq_rejections),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_short_pdus),
        cmocka_unit_test(test_pdv),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
