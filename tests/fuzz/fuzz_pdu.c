/* libFuzzer target: the upper-layer PDU codecs (net/pdu). The input is a
 * byte stream of PDUs as a socket would deliver it; each is checked with
 * pdu_parse_header and handed to the decoder of its type.
 * Invariants: an error has a message and leaves nothing allocated; what a
 * decoder accepts, the encoder writes, and decoding that gives the same
 * values; encoding those again gives the same bytes (the encoding is
 * canonical). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/pdu.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Our own check macro: fuzz_common.h pulls in the Part 10 reader. */
#define CHECK(cond, ...)                                               \
    do {                                                               \
        if (!(cond)) {                                                 \
            fprintf(stderr, "fuzz invariant broken: " __VA_ARGS__);    \
            fprintf(stderr, "\n");                                     \
            abort();                                                   \
        }                                                              \
    } while (0)

/* Largest P-DATA-TF the target accepts (a receiver's Maximum Length). */
#define FUZZ_MAX_PDATA (1u << 20)

static bool same_assoc(const struct pdu_assoc *x, const struct pdu_assoc *y, bool is_rq)
{
    if (x->protocol_version != y->protocol_version || strcmp(x->called_aet, y->called_aet) ||
        strcmp(x->calling_aet, y->calling_aet) || strcmp(x->app_context, y->app_context) ||
        x->n_pc != y->n_pc || x->max_pdu_length != y->max_pdu_length ||
        strcmp(x->impl_class_uid, y->impl_class_uid) || strcmp(x->impl_version, y->impl_version) ||
        x->has_async != y->has_async || x->max_ops_invoked != y->max_ops_invoked ||
        x->max_ops_performed != y->max_ops_performed || x->n_role != y->n_role)
        return false;
    for (unsigned i = 0; i < x->n_pc; i++) {
        const struct pdu_pc *a = &x->pc[i], *b = &y->pc[i];
        if (a->id != b->id || a->result != b->result || a->n_ts != b->n_ts ||
            (is_rq && strcmp(a->abstract_syntax, b->abstract_syntax)))
            return false;
        for (unsigned k = 0; k < a->n_ts; k++)
            if (strcmp(a->ts[k], b->ts[k]))
                return false;
    }
    for (unsigned i = 0; i < x->n_role; i++)
        if (strcmp(x->role[i].sop_class, y->role[i].sop_class) || x->role[i].scu != y->role[i].scu ||
            x->role[i].scp != y->role[i].scp)
            return false;
    const struct pdu_user_identity *u = &x->user_identity, *v = &y->user_identity;
    return u->present == v->present && u->type == v->type &&
           u->positive_response_requested == v->positive_response_requested &&
           u->primary_len == v->primary_len && u->secondary_len == v->secondary_len &&
           (u->primary_len == 0 || memcmp(u->primary, v->primary, u->primary_len) == 0) &&
           (u->secondary_len == 0 || memcmp(u->secondary, v->secondary, u->secondary_len) == 0);
}

static void check_assoc(const uint8_t *body, uint32_t len, bool is_rq, struct pdu_assoc *a,
                        struct pdu_assoc *b)
{
    struct pacs_err err = { 0 };
    if (pdu_decode_assoc(body, len, is_rq, a, &err) != 0) {
        CHECK(err.msg[0] != '\0', "error without a message");
        CHECK(a->user_identity.primary == NULL && a->user_identity.secondary == NULL,
              "user identity left behind on error");
        return;
    }
    CHECK(!is_rq || a->n_pc > 0, "RQ without presentation contexts accepted");
    struct dynbuf once, twice;
    dynbuf_init(&once, 0);
    dynbuf_init(&twice, 0);
    int rc = pdu_encode_assoc(a, is_rq, &once, &err);
    CHECK(rc == 0, "encoding what was decoded failed: %s", err.msg);
    uint8_t type;
    uint32_t blen;
    rc = pdu_parse_header(once.data, 0, &type, &blen, &err);
    /* Canonical encoding may be longer than the input (an AC context
     * without a transfer syntax sub-item gets an empty one). */
    if (rc == PACS_ELIMIT)
        goto out;
    CHECK(rc == 0, "own header rejected: %s", err.msg);
    CHECK(type == (is_rq ? PDU_ASSOC_RQ : PDU_ASSOC_AC) && blen == once.len - PDU_HEADER_LEN,
          "own header wrong");
    rc = pdu_decode_assoc(once.data + PDU_HEADER_LEN, blen, is_rq, b, &err);
    CHECK(rc == 0, "own encoding does not decode: %s", err.msg);
    CHECK(same_assoc(a, b, is_rq), "decode(encode(x)) differs from x");
    CHECK(pdu_encode_assoc(b, is_rq, &twice, &err) == 0, "second encode failed: %s", err.msg);
    CHECK(once.len == twice.len && memcmp(once.data, twice.data, once.len) == 0,
          "encoding is not canonical");
    pdu_assoc_free(b);
out:
    pdu_assoc_free(a);
    dynbuf_free(&once);
    dynbuf_free(&twice);
}

static void check_pdata(const uint8_t *body, uint32_t len)
{
    struct pacs_err err = { 0 };
    struct pdu_pdv v;
    uint32_t pos = 0, prev = 0;
    int rc;
    while ((rc = pdu_next_pdv(body, len, &pos, &v, &err)) == 1) {
        CHECK(pos > prev && pos <= len, "PDV iteration did not advance");
        CHECK(v.data >= body && v.data + v.len == body + pos, "PDV data outside its item");
        CHECK(v.pc_id % 2 == 1, "even context ID accepted");
        uint8_t hdr[PDU_PDV_HEADER_LEN];
        pdu_pdv_header(hdr, v.pc_id, v.command, v.last, v.len);
        /* The rewritten PDV header matches the item (but for reserved bits). */
        CHECK(memcmp(hdr + 6, body + prev, 5) == 0 && ((hdr[11] ^ body[prev + 5]) & 3) == 0,
              "PDV header does not round-trip");
        prev = pos;
    }
    if (rc < 0)
        CHECK(err.msg[0] != '\0', "PDV error without a message");
    else
        CHECK(pos == len, "PDV iteration ended early");
}

static void check_short(uint8_t type, const uint8_t *body, uint32_t len)
{
    struct pacs_err err = { 0 };
    struct dynbuf out;
    uint8_t a = 0, b = 0, c = 0;
    int rc;
    dynbuf_init(&out, 0);
    if (type == PDU_ASSOC_RJ) {
        rc = pdu_decode_reject(body, len, &a, &b, &c, &err);
        if (rc == 0) {
            CHECK(pdu_encode_reject(a, b, c, &out) == 0, "RJ encode failed");
            CHECK(memcmp(out.data + 7, body + 1, 3) == 0, "RJ does not round-trip");
            (void)pdu_reject_reason_name(b, c);
        }
    } else if (type == PDU_ABORT) {
        rc = pdu_decode_abort(body, len, &b, &c, &err);
        if (rc == 0) {
            CHECK(pdu_encode_abort(b, c, &out) == 0, "abort encode failed");
            CHECK(memcmp(out.data + 8, body + 2, 2) == 0, "abort does not round-trip");
            (void)pdu_abort_reason_name(b, c);
        }
    } else {
        rc = pdu_decode_release(body, len, &err);
        if (rc == 0) {
            CHECK(pdu_encode_release(type == PDU_RELEASE_RQ, &out) == 0, "release encode failed");
            CHECK(out.data[0] == type && out.len == 10, "release does not round-trip");
        }
    }
    if (rc)
        CHECK(err.msg[0] != '\0', "error without a message");
    dynbuf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct pdu_assoc *a, *b; /* 280 KiB each: allocated once */
    if (!a) {
        a = calloc(1, sizeof *a);
        b = calloc(1, sizeof *b);
        if (!a || !b)
            abort();
    }
    size_t pos = 0;
    while (size - pos >= PDU_HEADER_LEN) {
        struct pacs_err err = { 0 };
        uint8_t type;
        uint32_t len;
        int rc = pdu_parse_header(data + pos, FUZZ_MAX_PDATA, &type, &len, &err);
        (void)pdu_type_name(type);
        if (rc) {
            CHECK(err.msg[0] != '\0', "header error without a message");
            break;
        }
        pos += PDU_HEADER_LEN;
        if (len > size - pos)
            break;
        const uint8_t *body = data + pos;
        pos += len;
        switch (type) {
        case PDU_ASSOC_RQ:
        case PDU_ASSOC_AC:
            check_assoc(body, len, type == PDU_ASSOC_RQ, a, b);
            break;
        case PDU_P_DATA:
            check_pdata(body, len);
            break;
        default:
            check_short(type, body, len);
            break;
        }
    }
    return 0;
}
