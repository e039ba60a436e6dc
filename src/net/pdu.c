/* pdu.c - DICOM upper-layer PDU codecs (PS3.8 9.3). See pdu.h for the
 * contract and the strictness choices. All multi-byte fields are big endian. */
#include "net/pdu.h"

#include <stdlib.h>
#include <string.h>

/* Item types inside A-ASSOCIATE-RQ/AC (PS3.8 9.3.2, 9.3.3; PS3.7 D.3.3). */
#define ITEM_APP_CONTEXT 0x10
#define ITEM_PC_RQ 0x20
#define ITEM_PC_AC 0x21
#define ITEM_ABSTRACT_SYNTAX 0x30
#define ITEM_TRANSFER_SYNTAX 0x40
#define ITEM_USER_INFO 0x50
#define SUB_MAX_LENGTH 0x51
#define SUB_IMPL_CLASS_UID 0x52
#define SUB_ASYNC_OPS 0x53
#define SUB_ROLE 0x54
#define SUB_IMPL_VERSION 0x55
#define SUB_SOP_EXT_NEG 0x56
#define SUB_SOP_COMMON_EXT_NEG 0x57
#define SUB_USER_IDENTITY_RQ 0x58
#define SUB_USER_IDENTITY_AC 0x59

/* Fixed part of an A-ASSOCIATE-RQ/AC body: protocol version, reserved,
 * called AE, calling AE, 32 reserved bytes. */
#define ASSOC_FIXED_LEN 68

/* Offsets in messages count from the start of the PDU (header included). */
#define AT(off) ((unsigned long)(off) + PDU_HEADER_LEN)

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t rd32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* --- header -------------------------------------------------------------- */

int pdu_parse_header(const uint8_t h[PDU_HEADER_LEN], uint32_t max_len, uint8_t *type,
                     uint32_t *len, struct pacs_err *err)
{
    *type = h[0];
    *len = rd32(h + 2);
    switch (*type) {
    case PDU_ASSOC_RQ:
    case PDU_ASSOC_AC:
        if (*len < ASSOC_FIXED_LEN)
            return pacs_err_set(err, PACS_EINVAL, "%s PDU length %lu is below the %d-byte fixed part",
                                pdu_type_name(*type), (unsigned long)*len, ASSOC_FIXED_LEN);
        if (*len > PDU_MAX_ASSOC_LEN)
            return pacs_err_set(err, PACS_ELIMIT, "%s PDU length %lu exceeds the limit of %u bytes",
                                pdu_type_name(*type), (unsigned long)*len, PDU_MAX_ASSOC_LEN);
        return 0;
    case PDU_P_DATA:
        if (max_len && *len > max_len)
            return pacs_err_set(err, PACS_ELIMIT, "P-DATA-TF PDU length %lu exceeds the maximum of %lu",
                                (unsigned long)*len, (unsigned long)max_len);
        return 0;
    case PDU_ASSOC_RJ:
    case PDU_RELEASE_RQ:
    case PDU_RELEASE_RP:
    case PDU_ABORT:
        if (*len != 4)
            return pacs_err_set(err, PACS_EINVAL, "%s PDU length is %lu, not 4", pdu_type_name(*type),
                                (unsigned long)*len);
        return 0;
    default:
        return pacs_err_set(err, PACS_EINVAL, "unknown PDU type 0x%02X at offset 0", *type);
    }
}

/* --- field parsers ------------------------------------------------------ */

static bool is_pad(uint8_t c)
{
    return c == ' ' || c == '\0';
}

/* A UID field of n bytes at body offset off: trailing NUL/space padding
 * dropped, then 1..64 characters of digits and '.'. */
static int parse_uid(const uint8_t *v, uint32_t n, char dst[PDU_UID_LEN + 1], const char *what,
                     uint32_t off, struct pacs_err *err)
{
    while (n > 0 && is_pad(v[n - 1]))
        n--;
    if (n == 0)
        return pacs_err_set(err, PACS_EINVAL, "%s at offset %lu is empty", what, AT(off));
    if (n > PDU_UID_LEN)
        return pacs_err_set(err, PACS_EINVAL, "%s at offset %lu is %lu characters long, more than %d",
                            what, AT(off), (unsigned long)n, PDU_UID_LEN);
    for (uint32_t i = 0; i < n; i++)
        if (!((v[i] >= '0' && v[i] <= '9') || v[i] == '.'))
            return pacs_err_set(err, PACS_EINVAL, "%s at offset %lu has invalid character 0x%02X",
                                what, AT(off + i), v[i]);
    memcpy(dst, v, n);
    dst[n] = '\0';
    return 0;
}

/* A 16-byte AE title field: leading/trailing spaces (and trailing NULs) are
 * not significant. In an RQ it must be non-empty and free of control
 * characters; an AC's titles "shall not be tested" (PS3.8 9.3.3), so there
 * they are only trimmed, and cut at any embedded NUL. */
static int parse_ae(const uint8_t *v, char dst[PDU_AE_LEN + 1], bool check, const char *what,
                    uint32_t off, struct pacs_err *err)
{
    uint32_t b = 0, e = PDU_AE_LEN;
    while (e > 0 && is_pad(v[e - 1]))
        e--;
    while (b < e && v[b] == ' ')
        b++;
    if (check) {
        if (b == e)
            return pacs_err_set(err, PACS_EINVAL, "%s at offset %lu is empty", what, AT(off));
        for (uint32_t i = b; i < e; i++)
            if (v[i] < 0x20 || v[i] == 0x7f)
                return pacs_err_set(err, PACS_EINVAL, "%s at offset %lu has control character 0x%02X",
                                    what, AT(off + i), v[i]);
    }
    uint32_t n = 0;
    for (uint32_t i = b; i < e && v[i] != '\0'; i++)
        dst[n++] = (char)v[i];
    /* Cut at a NUL, the title may end in spaces again. */
    while (n > 0 && dst[n - 1] == ' ')
        n--;
    dst[n] = '\0';
    return 0;
}

/* Walks the items in [off, end) of body: each is type (1), reserved (1),
 * 16-bit length. Returns 1 with the item, 0 at end, or an error. */
struct item {
    uint8_t type;
    uint32_t off;      /* body offset of the item header */
    const uint8_t *v;  /* value */
    uint32_t len;
};

static int next_item(const uint8_t *body, uint32_t end, uint32_t *pos, const char *where,
                     struct item *it, struct pacs_err *err)
{
    uint32_t p = *pos;
    if (p == end)
        return 0;
    if (end - p < 4)
        return pacs_err_set(err, PACS_ETRUNC, "item header at offset %lu in %s needs 4 bytes, %lu remain",
                            AT(p), where, (unsigned long)(end - p));
    it->type = body[p];
    it->off = p;
    it->len = rd16(body + p + 2);
    if (it->len > end - p - 4)
        return pacs_err_set(err, PACS_ETRUNC,
                            "item 0x%02X at offset %lu in %s has length %lu, only %lu bytes remain",
                            it->type, AT(p), where, (unsigned long)it->len, (unsigned long)(end - p - 4));
    it->v = body + p + 4;
    *pos = p + 4 + it->len;
    return 1;
}

static int parse_pc(const uint8_t *body, const struct item *it, bool is_rq, struct pdu_assoc *a,
                    bool seen[256], struct pacs_err *err)
{
    const char *what = is_rq ? "presentation context item (0x20)" : "presentation context item (0x21)";
    if (it->len < 4)
        return pacs_err_set(err, PACS_EINVAL, "%s at offset %lu has length %lu, less than 4", what,
                            AT(it->off), (unsigned long)it->len);
    if (a->n_pc >= PDU_MAX_PCS)
        return pacs_err_set(err, PACS_ELIMIT, "%s at offset %lu: more than %d presentation contexts",
                            what, AT(it->off), PDU_MAX_PCS);
    uint8_t id = it->v[0];
    if (id == 0 || id % 2 == 0)
        return pacs_err_set(err, PACS_EINVAL, "%s at offset %lu has ID %u, not odd", what, AT(it->off), id);
    if (seen[id])
        return pacs_err_set(err, PACS_EINVAL, "%s at offset %lu repeats ID %u", what, AT(it->off), id);
    seen[id] = true;
    struct pdu_pc *pc = &a->pc[a->n_pc];
    memset(pc, 0, sizeof *pc);
    pc->id = id;
    /* In an RQ byte 2 is reserved; in an AC it is the result/reason. */
    pc->result = is_rq ? 0 : it->v[2];
    bool have_as = false, have_ts = false;
    uint32_t end = it->off + 4 + it->len, pos = it->off + 8;
    struct item sub = {0};
    int rc;
    while ((rc = next_item(body, end, &pos, what, &sub, err)) == 1) {
        if (is_rq && sub.type == ITEM_ABSTRACT_SYNTAX) {
            if (have_as)
                return pacs_err_set(err, PACS_EINVAL, "second abstract syntax sub-item at offset %lu "
                                    "in presentation context %u", AT(sub.off), id);
            have_as = true;
            rc = parse_uid(sub.v, sub.len, pc->abstract_syntax, "abstract syntax sub-item (0x30)",
                           sub.off + 4, err);
            if (rc)
                return rc;
        } else if (sub.type == ITEM_TRANSFER_SYNTAX && is_rq) {
            if (pc->n_ts >= PDU_MAX_TS_PER_PC)
                return pacs_err_set(err, PACS_ELIMIT, "transfer syntax sub-item at offset %lu: "
                                    "presentation context %u proposes more than %d",
                                    AT(sub.off), id, PDU_MAX_TS_PER_PC);
            rc = parse_uid(sub.v, sub.len, pc->ts[pc->n_ts], "transfer syntax sub-item (0x40)",
                           sub.off + 4, err);
            if (rc)
                return rc;
            pc->n_ts++;
        } else if (sub.type == ITEM_TRANSFER_SYNTAX) {
            if (have_ts)
                return pacs_err_set(err, PACS_EINVAL, "second transfer syntax sub-item at offset %lu "
                                    "in presentation context %u", AT(sub.off), id);
            have_ts = true;
            if (pc->result == PDU_PC_ACCEPTANCE) {
                rc = parse_uid(sub.v, sub.len, pc->ts[0], "transfer syntax sub-item (0x40)",
                               sub.off + 4, err);
                if (rc)
                    return rc;
                pc->n_ts = 1;
            } else if (parse_uid(sub.v, sub.len, pc->ts[0], "", 0, NULL) == 0) {
                /* Not significant when not accepted (PS3.8 9.3.3.2): kept
                 * if usable, never an error. */
                pc->n_ts = 1;
            } else {
                pc->ts[0][0] = '\0';
            }
        } else {
            return pacs_err_set(err, PACS_EINVAL, "unexpected sub-item type 0x%02X at offset %lu in "
                                "presentation context %u", sub.type, AT(sub.off), id);
        }
    }
    if (rc < 0)
        return rc;
    if (is_rq && !have_as)
        return pacs_err_set(err, PACS_EINVAL, "%s at offset %lu (ID %u) has no abstract syntax", what,
                            AT(it->off), id);
    if (is_rq && pc->n_ts == 0)
        return pacs_err_set(err, PACS_EINVAL, "%s at offset %lu (ID %u) proposes no transfer syntax",
                            what, AT(it->off), id);
    if (!is_rq && pc->result == PDU_PC_ACCEPTANCE && pc->n_ts == 0)
        return pacs_err_set(err, PACS_EINVAL, "%s at offset %lu (ID %u) is accepted without a transfer "
                            "syntax", what, AT(it->off), id);
    a->n_pc++;
    return 0;
}

static int dup_field(const uint8_t *v, uint16_t n, uint8_t **dst, uint32_t off, struct pacs_err *err)
{
    *dst = NULL;
    if (n == 0)
        return 0;
    if (n > PDU_MAX_USER_IDENTITY_LEN)
        return pacs_err_set(err, PACS_ELIMIT, "user identity field at offset %lu is %u bytes, more "
                            "than %u", AT(off), n, PDU_MAX_USER_IDENTITY_LEN);
    *dst = malloc(n);
    if (!*dst)
        return pacs_err_set(err, PACS_ENOMEM, "out of memory for a %u-byte user identity field", n);
    memcpy(*dst, v, n);
    return 0;
}

static int parse_user_identity(const struct item *it, bool is_rq, struct pdu_user_identity *u,
                               struct pacs_err *err)
{
    const uint8_t *v = it->v;
    uint32_t n = it->len, off = it->off + 4;
    int rc;
    u->present = true;
    if (!is_rq) {
        /* AC (0x59): server-response length, server response. */
        if (n < 2 || rd16(v) != n - 2)
            return pacs_err_set(err, PACS_EINVAL, "user identity sub-item (0x59) at offset %lu: "
                                "server response length does not match the sub-item length %lu",
                                AT(it->off), (unsigned long)n);
        u->primary_len = (uint16_t)(n - 2);
        return dup_field(v + 2, u->primary_len, &u->primary, off + 2, err);
    }
    /* RQ (0x58): type, positive-response-requested, primary length,
     * primary, secondary length, secondary. */
    if (n < 6)
        return pacs_err_set(err, PACS_EINVAL, "user identity sub-item (0x58) at offset %lu has length "
                            "%lu, less than 6", AT(it->off), (unsigned long)n);
    u->type = v[0];
    if (u->type < PDU_UID_USERNAME || u->type > PDU_UID_JWT)
        return pacs_err_set(err, PACS_EINVAL, "user identity sub-item (0x58) at offset %lu has unknown "
                            "identity type %u", AT(it->off), u->type);
    u->positive_response_requested = v[1] == 1;
    uint16_t plen = rd16(v + 2);
    if (plen == 0)
        return pacs_err_set(err, PACS_EINVAL, "user identity sub-item (0x58) at offset %lu has an "
                            "empty primary field", AT(it->off));
    if ((uint32_t)plen > n - 6)
        return pacs_err_set(err, PACS_EINVAL, "user identity sub-item (0x58) at offset %lu: primary "
                            "field of %u bytes overruns the sub-item", AT(it->off), plen);
    uint16_t slen = rd16(v + 4 + plen);
    if ((uint32_t)slen != n - 6 - plen)
        return pacs_err_set(err, PACS_EINVAL, "user identity sub-item (0x58) at offset %lu: secondary "
                            "field length %u does not match the sub-item length %lu", AT(it->off),
                            slen, (unsigned long)n);
    u->primary_len = plen;
    rc = dup_field(v + 4, plen, &u->primary, off + 4, err);
    if (rc)
        return rc;
    u->secondary_len = slen;
    return dup_field(v + 6 + plen, slen, &u->secondary, off + 6 + plen, err);
}

/* Which singleton sub-items were seen, by type 0x50..0x5F. */
static int parse_user_info(const uint8_t *body, const struct item *ui, bool is_rq,
                           struct pdu_assoc *a, struct pacs_err *err)
{
    bool seen[16] = { false };
    uint32_t end = ui->off + 4 + ui->len, pos = ui->off + 4;
    struct item it = {0};
    int rc;
    while ((rc = next_item(body, end, &pos, "user information item (0x50)", &it, err)) == 1) {
        bool singleton = it.type == SUB_MAX_LENGTH || it.type == SUB_IMPL_CLASS_UID ||
                         it.type == SUB_ASYNC_OPS || it.type == SUB_IMPL_VERSION ||
                         it.type == (is_rq ? SUB_USER_IDENTITY_RQ : SUB_USER_IDENTITY_AC);
        if (singleton) {
            if (seen[it.type - 0x50])
                return pacs_err_set(err, PACS_EINVAL, "user information sub-item 0x%02X at offset %lu "
                                    "appears twice", it.type, AT(it.off));
            seen[it.type - 0x50] = true;
        }
        switch (it.type) {
        case SUB_MAX_LENGTH:
            if (it.len != 4)
                return pacs_err_set(err, PACS_EINVAL, "maximum length sub-item (0x51) at offset %lu has "
                                    "length %lu, not 4", AT(it.off), (unsigned long)it.len);
            a->max_pdu_length = rd32(it.v);
            break;
        case SUB_IMPL_CLASS_UID:
            rc = parse_uid(it.v, it.len, a->impl_class_uid, "implementation class UID sub-item (0x52)",
                           it.off + 4, err);
            if (rc)
                return rc;
            break;
        case SUB_ASYNC_OPS:
            if (it.len != 4)
                return pacs_err_set(err, PACS_EINVAL, "asynchronous operations window sub-item (0x53) "
                                    "at offset %lu has length %lu, not 4", AT(it.off),
                                    (unsigned long)it.len);
            a->has_async = true;
            a->max_ops_invoked = rd16(it.v);
            a->max_ops_performed = rd16(it.v + 2);
            break;
        case SUB_ROLE: {
            if (a->n_role >= PDU_MAX_PCS)
                return pacs_err_set(err, PACS_ELIMIT, "role selection sub-item (0x54) at offset %lu: "
                                    "more than %d", AT(it.off), PDU_MAX_PCS);
            uint32_t ulen = it.len >= 2 ? rd16(it.v) : 0;
            if (it.len < 4 || ulen != it.len - 4u)
                return pacs_err_set(err, PACS_EINVAL, "role selection sub-item (0x54) at offset %lu: "
                                    "UID length does not match the sub-item length %lu", AT(it.off),
                                    (unsigned long)it.len);
            struct pdu_role *r = &a->role[a->n_role];
            memset(r, 0, sizeof *r);
            rc = parse_uid(it.v + 2, ulen, r->sop_class, "role selection sub-item (0x54) SOP class UID",
                           it.off + 6, err);
            if (rc)
                return rc;
            r->scu = it.v[2 + ulen] != 0;
            r->scp = it.v[3 + ulen] != 0;
            a->n_role++;
            break;
        }
        case SUB_IMPL_VERSION: {
            uint32_t n = it.len < PDU_AE_LEN ? it.len : PDU_AE_LEN;
            while (n > 0 && is_pad(it.v[n - 1]))
                n--;
            uint32_t k = 0;
            for (; k < n && it.v[k] != '\0'; k++)
                a->impl_version[k] = (it.v[k] < 0x20 || it.v[k] == 0x7f) ? '?' : (char)it.v[k];
            a->impl_version[k] = '\0';
            /* An embedded NUL ends the name; drop the padding before it too. */
            while (k > 0 && a->impl_version[k - 1] == ' ')
                a->impl_version[--k] = '\0';
            break;
        }
        case SUB_USER_IDENTITY_RQ:
        case SUB_USER_IDENTITY_AC:
            if (it.type == (is_rq ? SUB_USER_IDENTITY_RQ : SUB_USER_IDENTITY_AC)) {
                rc = parse_user_identity(&it, is_rq, &a->user_identity, err);
                if (rc)
                    return rc;
            }
            /* The other direction's item in this PDU is unknown: skipped. */
            break;
        default:
            /* 0x56, 0x57 and unknown sub-items: skipped (PS3.7 D.3.3). */
            break;
        }
    }
    return rc;
}

int pdu_decode_assoc(const uint8_t *body, uint32_t len, bool is_rq, struct pdu_assoc *out,
                     struct pacs_err *err)
{
    const char *name = is_rq ? "A-ASSOCIATE-RQ" : "A-ASSOCIATE-AC";
    bool seen_pc[256] = { false };
    bool have_app = false, have_ui = false;
    int rc;
    memset(out, 0, sizeof *out);
    if (len > PDU_MAX_ASSOC_LEN) {
        rc = pacs_err_set(err, PACS_ELIMIT, "%s of %lu bytes exceeds the limit of %u", name,
                          (unsigned long)len, PDU_MAX_ASSOC_LEN);
        goto out;
    }
    if (len < ASSOC_FIXED_LEN) {
        rc = pacs_err_set(err, PACS_ETRUNC, "%s of %lu bytes is shorter than its %d-byte fixed part",
                          name, (unsigned long)len, ASSOC_FIXED_LEN);
        goto out;
    }
    out->protocol_version = rd16(body);
    rc = parse_ae(body + 4, out->called_aet, is_rq, "called AE title", 4, err);
    if (rc)
        goto out;
    rc = parse_ae(body + 20, out->calling_aet, is_rq, "calling AE title", 20, err);
    if (rc)
        goto out;
    uint32_t pos = ASSOC_FIXED_LEN;
    struct item it = {0};
    while ((rc = next_item(body, len, &pos, name, &it, err)) == 1) {
        if (it.type == ITEM_APP_CONTEXT) {
            if (have_app) {
                rc = pacs_err_set(err, PACS_EINVAL, "second application context item (0x10) at offset %lu",
                                  AT(it.off));
                goto out;
            }
            have_app = true;
            rc = parse_uid(it.v, it.len, out->app_context, "application context item (0x10)",
                           it.off + 4, err);
        } else if (it.type == (is_rq ? ITEM_PC_RQ : ITEM_PC_AC)) {
            rc = parse_pc(body, &it, is_rq, out, seen_pc, err);
        } else if (it.type == ITEM_USER_INFO) {
            if (have_ui) {
                rc = pacs_err_set(err, PACS_EINVAL, "second user information item (0x50) at offset %lu",
                                  AT(it.off));
                goto out;
            }
            have_ui = true;
            rc = parse_user_info(body, &it, is_rq, out, err);
        } else {
            rc = pacs_err_set(err, PACS_EINVAL, "unexpected item type 0x%02X at offset %lu in %s", it.type,
                              AT(it.off), name);
        }
        if (rc)
            goto out;
    }
    if (rc < 0)
        goto out;
    if (!have_app) {
        rc = pacs_err_set(err, PACS_EINVAL, "%s has no application context item (0x10)", name);
        goto out;
    }
    if (is_rq && out->n_pc == 0) {
        rc = pacs_err_set(err, PACS_EINVAL, "%s has no presentation context item (0x20)", name);
        goto out;
    }
    rc = 0;
out:
    if (rc)
        pdu_assoc_free(out);
    return rc;
}

void pdu_assoc_free(struct pdu_assoc *a)
{
    free(a->user_identity.primary);
    free(a->user_identity.secondary);
    memset(&a->user_identity, 0, sizeof a->user_identity);
}

/* --- encoders ------------------------------------------------------------ */

static int put(struct dynbuf *b, const void *p, size_t n)
{
    return dynbuf_append(b, p, n);
}

static int put_item_hdr(struct dynbuf *b, uint8_t type, uint16_t len)
{
    uint8_t h[4] = { type, 0, 0, 0 };
    wr16(h + 2, len);
    return put(b, h, 4);
}

/* Length of a NUL-terminated string held in an array of cap bytes, or -1
 * if it is not terminated there. */
static long str_len(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    return n < cap ? (long)n : -1;
}

static int put_string_item(struct dynbuf *b, uint8_t type, const char *s, size_t cap, const char *what,
                           struct pacs_err *err)
{
    long n = str_len(s, cap);
    if (n < 0)
        return pacs_err_set(err, PACS_EINVAL, "%s is not NUL-terminated", what);
    int rc = put_item_hdr(b, type, (uint16_t)n);
    return rc ? rc : put(b, s, (size_t)n);
}

static int put_ae(struct dynbuf *b, const char *ae, const char *what, struct pacs_err *err)
{
    long n = str_len(ae, PDU_AE_LEN + 1);
    if (n < 0)
        return pacs_err_set(err, PACS_EINVAL, "%s is longer than %d characters", what, PDU_AE_LEN);
    uint8_t f[PDU_AE_LEN];
    memset(f, ' ', sizeof f);
    memcpy(f, ae, (size_t)n);
    return put(b, f, sizeof f);
}

/* Patches the 16-bit length of the item whose header starts at `at`. */
static int patch16(struct dynbuf *b, size_t at, const char *what, struct pacs_err *err)
{
    size_t n = b->len - at - 4;
    if (n > UINT16_MAX)
        return pacs_err_set(err, PACS_EINVAL, "%s would be %zu bytes, more than 65535", what, n);
    wr16(b->data + at + 2, (uint16_t)n);
    return 0;
}

static int encode_pc(const struct pdu_pc *pc, bool is_rq, struct dynbuf *b, struct pacs_err *err)
{
    if (pc->id == 0 || pc->id % 2 == 0)
        return pacs_err_set(err, PACS_EINVAL, "presentation context ID %u is not odd", pc->id);
    if (is_rq ? (pc->n_ts == 0 || pc->n_ts > PDU_MAX_TS_PER_PC)
              : (pc->n_ts > 1 || (pc->n_ts == 0 && pc->result == PDU_PC_ACCEPTANCE)))
        return pacs_err_set(err, PACS_EINVAL, "presentation context %u has %u transfer syntaxes", pc->id,
                            pc->n_ts);
    size_t at = b->len;
    uint8_t h[8] = { is_rq ? ITEM_PC_RQ : ITEM_PC_AC, 0, 0, 0, pc->id, 0, is_rq ? 0 : pc->result, 0 };
    int rc = put(b, h, sizeof h);
    if (rc)
        return rc;
    if (is_rq) {
        rc = put_string_item(b, ITEM_ABSTRACT_SYNTAX, pc->abstract_syntax, sizeof pc->abstract_syntax,
                             "abstract syntax", err);
        for (unsigned i = 0; rc == 0 && i < pc->n_ts; i++)
            rc = put_string_item(b, ITEM_TRANSFER_SYNTAX, pc->ts[i], sizeof pc->ts[i], "transfer syntax",
                                 err);
    } else {
        rc = put_string_item(b, ITEM_TRANSFER_SYNTAX, pc->n_ts ? pc->ts[0] : "", sizeof pc->ts[0],
                             "transfer syntax", err);
    }
    return rc ? rc : patch16(b, at, "presentation context item", err);
}

static int encode_user_info(const struct pdu_assoc *a, bool is_rq, struct dynbuf *b, struct pacs_err *err)
{
    size_t at = b->len;
    int rc = put_item_hdr(b, ITEM_USER_INFO, 0);
    uint8_t v[4];
    if (rc)
        return rc;
    wr32(v, a->max_pdu_length);
    if ((rc = put_item_hdr(b, SUB_MAX_LENGTH, 4)) || (rc = put(b, v, 4)))
        return rc;
    if (a->impl_class_uid[0] &&
        (rc = put_string_item(b, SUB_IMPL_CLASS_UID, a->impl_class_uid, sizeof a->impl_class_uid,
                              "implementation class UID", err)))
        return rc;
    if (a->has_async) {
        wr16(v, a->max_ops_invoked);
        wr16(v + 2, a->max_ops_performed);
        if ((rc = put_item_hdr(b, SUB_ASYNC_OPS, 4)) || (rc = put(b, v, 4)))
            return rc;
    }
    if (a->n_role > PDU_MAX_PCS)
        return pacs_err_set(err, PACS_EINVAL, "%u role selection items, more than %d", a->n_role,
                            PDU_MAX_PCS);
    for (unsigned i = 0; i < a->n_role; i++) {
        const struct pdu_role *r = &a->role[i];
        long n = str_len(r->sop_class, sizeof r->sop_class);
        if (n < 0)
            return pacs_err_set(err, PACS_EINVAL, "role selection SOP class UID is not NUL-terminated");
        wr16(v, (uint16_t)n);
        uint8_t flags[2] = { r->scu, r->scp };
        if ((rc = put_item_hdr(b, SUB_ROLE, (uint16_t)(n + 4))) || (rc = put(b, v, 2)) ||
            (rc = put(b, r->sop_class, (size_t)n)) || (rc = put(b, flags, 2)))
            return rc;
    }
    if (a->impl_version[0] &&
        (rc = put_string_item(b, SUB_IMPL_VERSION, a->impl_version, sizeof a->impl_version,
                              "implementation version name", err)))
        return rc;
    const struct pdu_user_identity *u = &a->user_identity;
    if (u->present) {
        size_t uat = b->len;
        if (is_rq) {
            if (u->type < PDU_UID_USERNAME || u->type > PDU_UID_JWT || u->primary_len == 0)
                return pacs_err_set(err, PACS_EINVAL, "user identity of type %u with a %u-byte primary "
                                    "field cannot be sent", u->type, u->primary_len);
            uint8_t h[4] = { u->type, u->positive_response_requested, 0, 0 };
            wr16(h + 2, u->primary_len);
            wr16(v, u->secondary_len);
            if ((rc = put_item_hdr(b, SUB_USER_IDENTITY_RQ, 0)) || (rc = put(b, h, 4)) ||
                (rc = put(b, u->primary, u->primary_len)) || (rc = put(b, v, 2)) ||
                (rc = put(b, u->secondary, u->secondary_len)))
                return rc;
        } else {
            wr16(v, u->primary_len);
            if ((rc = put_item_hdr(b, SUB_USER_IDENTITY_AC, 0)) || (rc = put(b, v, 2)) ||
                (rc = put(b, u->primary, u->primary_len)))
                return rc;
        }
        if ((rc = patch16(b, uat, "user identity sub-item", err)))
            return rc;
    }
    return patch16(b, at, "user information item", err);
}

int pdu_encode_assoc(const struct pdu_assoc *a, bool is_rq, struct dynbuf *out, struct pacs_err *err)
{
    size_t start = out->len;
    uint8_t fixed[PDU_HEADER_LEN + 4] = { is_rq ? PDU_ASSOC_RQ : PDU_ASSOC_AC, 0 };
    uint8_t reserved[32] = { 0 };
    int rc;
    pacs_err_clear(err);
    wr16(fixed + PDU_HEADER_LEN, a->protocol_version);
    if (a->n_pc > PDU_MAX_PCS) {
        rc = pacs_err_set(err, PACS_EINVAL, "%u presentation contexts, more than %d", a->n_pc, PDU_MAX_PCS);
        goto out;
    }
    if ((rc = put(out, fixed, sizeof fixed)) || (rc = put_ae(out, a->called_aet, "called AE title", err)) ||
        (rc = put_ae(out, a->calling_aet, "calling AE title", err)) ||
        (rc = put(out, reserved, sizeof reserved)))
        goto out;
    rc = put_string_item(out, ITEM_APP_CONTEXT, a->app_context, sizeof a->app_context,
                         "application context name", err);
    for (unsigned i = 0; rc == 0 && i < a->n_pc; i++)
        rc = encode_pc(&a->pc[i], is_rq, out, err);
    if (rc == 0)
        rc = encode_user_info(a, is_rq, out, err);
    if (rc)
        goto out;
    size_t body = out->len - start - PDU_HEADER_LEN;
    if (body > UINT32_MAX) {
        rc = pacs_err_set(err, PACS_EINVAL, "A-ASSOCIATE PDU too long");
        goto out;
    }
    wr32(out->data + start + 2, (uint32_t)body);
out:
    if (rc) {
        /* Leave no partial PDU behind. */
        out->len = start;
        if (out->data)
            out->data[start] = '\0';
        if (err && err->code == 0)
            pacs_err_set(err, rc, "A-ASSOCIATE encoding: %s", pacs_strerror(rc));
    }
    return rc;
}

/* A 10-byte PDU with a 4-byte body. */
static int encode_short(uint8_t type, uint8_t b1, uint8_t b2, uint8_t b3, struct dynbuf *out)
{
    uint8_t p[PDU_HEADER_LEN + 4] = { type, 0, 0, 0, 0, 4, 0, b1, b2, b3 };
    return dynbuf_append(out, p, sizeof p);
}

static int check_short(const char *name, uint32_t len, struct pacs_err *err)
{
    if (len != 4)
        return pacs_err_set(err, PACS_EINVAL, "%s body is %lu bytes, not 4", name, (unsigned long)len);
    return 0;
}

int pdu_decode_reject(const uint8_t *body, uint32_t len, uint8_t *result, uint8_t *source,
                      uint8_t *reason, struct pacs_err *err)
{
    int rc = check_short("A-ASSOCIATE-RJ", len, err);
    if (rc)
        return rc;
    *result = body[1];
    *source = body[2];
    *reason = body[3];
    return 0;
}

int pdu_encode_reject(uint8_t result, uint8_t source, uint8_t reason, struct dynbuf *out)
{
    return encode_short(PDU_ASSOC_RJ, result, source, reason, out);
}

int pdu_decode_abort(const uint8_t *body, uint32_t len, uint8_t *source, uint8_t *reason,
                     struct pacs_err *err)
{
    int rc = check_short("A-ABORT", len, err);
    if (rc)
        return rc;
    *source = body[2];
    *reason = body[3];
    return 0;
}

int pdu_encode_abort(uint8_t source, uint8_t reason, struct dynbuf *out)
{
    return encode_short(PDU_ABORT, 0, source, reason, out);
}

int pdu_encode_release(bool is_rq, struct dynbuf *out)
{
    return encode_short(is_rq ? PDU_RELEASE_RQ : PDU_RELEASE_RP, 0, 0, 0, out);
}

int pdu_decode_release(const uint8_t *body, uint32_t len, struct pacs_err *err)
{
    (void)body;
    return check_short("A-RELEASE", len, err);
}

/* --- P-DATA-TF ------------------------------------------------------------ */

int pdu_next_pdv(const uint8_t *body, uint32_t len, uint32_t *pos, struct pdu_pdv *out,
                 struct pacs_err *err)
{
    uint32_t p = *pos;
    if (p == len)
        return 0;
    if (p > len)
        return pacs_err_set(err, PACS_EINVAL, "PDV position %lu is past the %lu-byte P-DATA-TF body",
                            (unsigned long)p, (unsigned long)len);
    if (len - p < 4)
        return pacs_err_set(err, PACS_ETRUNC, "PDV item at offset %lu needs a 4-byte length, %lu bytes "
                            "remain", AT(p), (unsigned long)(len - p));
    uint32_t n = rd32(body + p);
    if (n < 2)
        return pacs_err_set(err, PACS_EINVAL, "PDV item at offset %lu has length %lu, less than 2", AT(p),
                            (unsigned long)n);
    if (n > len - p - 4)
        return pacs_err_set(err, PACS_ETRUNC, "PDV item at offset %lu has length %lu, only %lu bytes "
                            "remain", AT(p), (unsigned long)n, (unsigned long)(len - p - 4));
    uint8_t id = body[p + 4], mch = body[p + 5];
    if (id == 0 || id % 2 == 0)
        return pacs_err_set(err, PACS_EINVAL, "PDV item at offset %lu has presentation context ID %u, "
                            "not odd", AT(p), id);
    out->pc_id = id;
    out->command = mch & 1;
    out->last = (mch >> 1) & 1;
    out->data = body + p + 6;
    out->len = n - 2;
    *pos = p + 4 + n;
    return 1;
}

void pdu_pdv_header(uint8_t hdr[PDU_PDV_HEADER_LEN], uint8_t pc_id, bool command, bool last,
                    uint32_t data_len)
{
    hdr[0] = PDU_P_DATA;
    hdr[1] = 0;
    wr32(hdr + 2, data_len + 6);
    wr32(hdr + 6, data_len + 2);
    hdr[10] = pc_id;
    hdr[11] = (uint8_t)((command ? 1 : 0) | (last ? 2 : 0));
}

/* --- names ---------------------------------------------------------------- */

const char *pdu_type_name(uint8_t type)
{
    switch (type) {
    case PDU_ASSOC_RQ: return "A-ASSOCIATE-RQ";
    case PDU_ASSOC_AC: return "A-ASSOCIATE-AC";
    case PDU_ASSOC_RJ: return "A-ASSOCIATE-RJ";
    case PDU_P_DATA: return "P-DATA-TF";
    case PDU_RELEASE_RQ: return "A-RELEASE-RQ";
    case PDU_RELEASE_RP: return "A-RELEASE-RP";
    case PDU_ABORT: return "A-ABORT";
    default: return "unknown PDU";
    }
}

const char *pdu_pc_result_name(uint8_t result)
{
    switch (result) {
    case PDU_PC_ACCEPTANCE: return "acceptance";
    case PDU_PC_USER_REJECTION: return "user-rejection";
    case PDU_PC_NO_REASON: return "no-reason (provider rejection)";
    case PDU_PC_ABSTRACT_SYNTAX_NOT_SUPPORTED: return "abstract-syntax-not-supported (provider rejection)";
    case PDU_PC_TRANSFER_SYNTAXES_NOT_SUPPORTED:
        return "transfer-syntaxes-not-supported (provider rejection)";
    default: return "unknown result";
    }
}

const char *pdu_reject_reason_name(uint8_t source, uint8_t reason)
{
    switch (source) {
    case PDU_RJ_SRC_USER:
        switch (reason) {
        case PDU_RJ_USER_NO_REASON: return "no-reason-given";
        case PDU_RJ_USER_APP_CONTEXT_NOT_SUPPORTED: return "application-context-name-not-supported";
        case PDU_RJ_USER_CALLING_AE_NOT_RECOGNIZED: return "calling-AE-title-not-recognized";
        case PDU_RJ_USER_CALLED_AE_NOT_RECOGNIZED: return "called-AE-title-not-recognized";
        default: return "unknown reason (service-user)";
        }
    case PDU_RJ_SRC_ACSE:
        switch (reason) {
        case PDU_RJ_ACSE_NO_REASON: return "no-reason-given (ACSE)";
        case PDU_RJ_ACSE_PROTOCOL_VERSION_NOT_SUPPORTED: return "protocol-version-not-supported";
        default: return "unknown reason (ACSE)";
        }
    case PDU_RJ_SRC_PRESENTATION:
        switch (reason) {
        case PDU_RJ_PRES_TEMPORARY_CONGESTION: return "temporary-congestion";
        case PDU_RJ_PRES_LOCAL_LIMIT_EXCEEDED: return "local-limit-exceeded";
        default: return "unknown reason (presentation)";
        }
    default:
        return "unknown source";
    }
}

const char *pdu_abort_reason_name(uint8_t source, uint8_t reason)
{
    if (source == PDU_ABORT_SRC_USER)
        return "service-user abort";
    if (source != PDU_ABORT_SRC_PROVIDER)
        return "abort from unknown source";
    switch (reason) {
    case PDU_ABORT_NOT_SPECIFIED: return "reason-not-specified";
    case PDU_ABORT_UNRECOGNIZED_PDU: return "unrecognized-PDU";
    case PDU_ABORT_UNEXPECTED_PDU: return "unexpected-PDU";
    case PDU_ABORT_UNRECOGNIZED_PARAM: return "unrecognized-PDU-parameter";
    case PDU_ABORT_UNEXPECTED_PARAM: return "unexpected-PDU-parameter";
    case PDU_ABORT_INVALID_PARAM: return "invalid-PDU-parameter-value";
    default: return "unknown reason (service-provider)";
    }
}
