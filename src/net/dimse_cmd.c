/* dimse_cmd.c - DIMSE command set codec (PS3.7 annex E). See dimse_cmd.h for
 * the rules. Elements are (group, element, 32-bit length, value), little
 * endian, no VR on the wire: the VR of each known tag comes from the table. */
#include "net/dimse_cmd.h"

#include <stddef.h>
#include <string.h>

enum kind { K_US, K_UI, K_AE, K_LO, K_AT };

/* One known command element; the table is in tag order so the encoder
 * writes ascending tags. `off` locates the value in struct dimse_cmd. */
struct field {
    uint16_t elem;
    enum kind kind;
    uint32_t bit;
    size_t off;
    size_t cap; /* string array size (with the NUL) */
    const char *name;
};

#define F_US(e, b, m, n) { e, K_US, b, offsetof(struct dimse_cmd, m), 0, n }
#define F_STR(e, k, b, m, n) { e, k, b, offsetof(struct dimse_cmd, m), sizeof(((struct dimse_cmd *)0)->m), n }

static const struct field fields[] = {
    F_STR(0x0002, K_UI, DIMSE_HAS_AFFECTED_SOP_CLASS, affected_sop_class, "AffectedSOPClassUID"),
    F_STR(0x0003, K_UI, DIMSE_HAS_REQUESTED_SOP_CLASS, requested_sop_class, "RequestedSOPClassUID"),
    F_US(0x0100, DIMSE_HAS_COMMAND_FIELD, command_field, "CommandField"),
    F_US(0x0110, DIMSE_HAS_MESSAGE_ID, message_id, "MessageID"),
    F_US(0x0120, DIMSE_HAS_MESSAGE_ID_RESPONDED, message_id_responded, "MessageIDBeingRespondedTo"),
    F_STR(0x0600, K_AE, DIMSE_HAS_MOVE_DESTINATION, move_destination, "MoveDestination"),
    F_US(0x0700, DIMSE_HAS_PRIORITY, priority, "Priority"),
    F_US(0x0800, DIMSE_HAS_DATASET_TYPE, dataset_type, "CommandDataSetType"),
    F_US(0x0900, DIMSE_HAS_STATUS, status, "Status"),
    { 0x0901, K_AT, DIMSE_HAS_OFFENDING_ELEMENT, 0, 0, "OffendingElement" },
    F_STR(0x0902, K_LO, DIMSE_HAS_ERROR_COMMENT, error_comment, "ErrorComment"),
    F_STR(0x1000, K_UI, DIMSE_HAS_AFFECTED_SOP_INSTANCE, affected_sop_instance, "AffectedSOPInstanceUID"),
    F_STR(0x1001, K_UI, DIMSE_HAS_REQUESTED_SOP_INSTANCE, requested_sop_instance,
          "RequestedSOPInstanceUID"),
    F_US(0x1020, DIMSE_HAS_REMAINING, n_remaining, "NumberOfRemainingSuboperations"),
    F_US(0x1021, DIMSE_HAS_COMPLETED, n_completed, "NumberOfCompletedSuboperations"),
    F_US(0x1022, DIMSE_HAS_FAILED, n_failed, "NumberOfFailedSuboperations"),
    F_US(0x1023, DIMSE_HAS_WARNING, n_warning, "NumberOfWarningSuboperations"),
    F_STR(0x1030, K_AE, DIMSE_HAS_MOVE_ORIGINATOR_AET, move_originator_aet,
          "MoveOriginatorApplicationEntityTitle"),
    F_US(0x1031, DIMSE_HAS_MOVE_ORIGINATOR_ID, move_originator_id, "MoveOriginatorMessageID"),
};
#define N_FIELDS (sizeof fields / sizeof fields[0])

/* Bits that are always written whatever `present` says. */
#define ALWAYS (DIMSE_HAS_COMMAND_FIELD | DIMSE_HAS_DATASET_TYPE)

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static const struct field *find_field(uint16_t elem)
{
    for (size_t i = 0; i < N_FIELDS; i++)
        if (fields[i].elem == elem)
            return &fields[i];
    return NULL;
}

/* --- decode ---------------------------------------------------------------- */

static int decode_string(const struct field *f, const uint8_t *v, uint32_t n, char *dst, size_t at,
                         struct pacs_err *err)
{
    size_t max = f->cap - 1;
    uint32_t b = 0;
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\0'))
        n--;
    if (f->kind == K_AE)
        while (b < n && v[b] == ' ')
            b++;
    if (f->kind == K_LO && n > max)
        n = (uint32_t)max; /* informational: cut, not rejected */
    if (n - b > max)
        return pacs_err_set(err, PACS_EINVAL, "(0000,%04X) %s at offset %zu is %lu characters long, more "
                            "than %zu", f->elem, f->name, at, (unsigned long)(n - b), max);
    size_t k = 0;
    for (uint32_t i = b; i < n; i++) {
        uint8_t c = v[i];
        bool ok = f->kind == K_UI ? ((c >= '0' && c <= '9') || c == '.')
                : f->kind == K_AE ? (c >= 0x20 && c != 0x7f)
                                  : c != '\0';
        if (f->kind == K_LO && !ok)
            break; /* an embedded NUL ends the comment */
        if (f->kind == K_LO && (c < 0x20 || c == 0x7f))
            c = '?'; /* the comment goes to logs: no control characters */
        if (!ok)
            return pacs_err_set(err, PACS_EINVAL, "(0000,%04X) %s at offset %zu has invalid character "
                                "0x%02X", f->elem, f->name, at + 8 + i, c);
        dst[k++] = (char)c;
    }
    /* Trailing spaces may now end the value again (cut LO). */
    while (f->kind == K_LO && k > 0 && dst[k - 1] == ' ')
        k--;
    dst[k] = '\0';
    return 0;
}

int dimse_cmd_decode(const uint8_t *p, size_t n, struct dimse_cmd *out, struct pacs_err *err)
{
    size_t pos = 0;
    int rc = 0;
    memset(out, 0, sizeof *out);
    if (n > DIMSE_MAX_CMD_LEN) {
        rc = pacs_err_set(err, PACS_ELIMIT, "command set of %zu bytes exceeds the limit of %u", n,
                          DIMSE_MAX_CMD_LEN);
        goto out;
    }
    bool have_gl = false;
    while (pos < n) {
        if (n - pos < 8) {
            rc = pacs_err_set(err, PACS_ETRUNC, "element header at offset %zu needs 8 bytes, %zu remain",
                              pos, n - pos);
            goto out;
        }
        uint16_t group = rd16(p + pos), elem = rd16(p + pos + 2);
        uint32_t len = rd32(p + pos + 4);
        const uint8_t *v = p + pos + 8;
        if (group != 0x0000) {
            /* DCMTK-based SCPs (Orthanc among them) append the Failed SOP
             * Instance UID List to a C-MOVE/C-GET response's command set:
             * the command group ends there, the rest is not ours to judge. */
            break;
        }
        if (len == 0xFFFFFFFFu) {
            rc = pacs_err_set(err, PACS_EINVAL, "element (0000,%04X) at offset %zu has undefined length",
                              elem, pos);
            goto out;
        }
        if (len > n - pos - 8) {
            rc = pacs_err_set(err, PACS_ETRUNC, "element (0000,%04X) at offset %zu has length %lu, only "
                              "%zu bytes remain", elem, pos, (unsigned long)len, n - pos - 8);
            goto out;
        }
        if (elem == 0x0000) {
            /* CommandGroupLength: value deliberately not checked (see header). */
            if (have_gl || len != 4) {
                rc = pacs_err_set(err, PACS_EINVAL, "(0000,0000) CommandGroupLength at offset %zu %s", pos,
                                  have_gl ? "appears twice" : "is not a 4-byte UL");
                goto out;
            }
            have_gl = true;
        }
        const struct field *f = find_field(elem);
        if (f && (f->kind != K_US || len != 0)) {
            if (out->present & f->bit) {
                rc = pacs_err_set(err, PACS_EINVAL, "(0000,%04X) %s at offset %zu appears twice", elem,
                                  f->name, pos);
                goto out;
            }
            switch (f->kind) {
            case K_US: {
                if (len != 2) {
                    rc = pacs_err_set(err, PACS_EINVAL, "(0000,%04X) %s at offset %zu has length %lu, "
                                      "not 2 (US)", elem, f->name, pos, (unsigned long)len);
                    goto out;
                }
                uint16_t x = rd16(v);
                memcpy((char *)out + f->off, &x, sizeof x);
                break;
            }
            case K_AT:
                if (len % 4) {
                    rc = pacs_err_set(err, PACS_EINVAL, "(0000,%04X) %s at offset %zu has length %lu, "
                                      "not a multiple of 4 (AT)", elem, f->name, pos, (unsigned long)len);
                    goto out;
                }
                for (uint32_t i = 0; i < len / 4 && i < DIMSE_MAX_OFFENDING; i++)
                    out->offending_element[i] = ((uint32_t)rd16(v + 4 * i) << 16) | rd16(v + 4 * i + 2);
                out->offending_element_n = (uint16_t)(len / 4 < DIMSE_MAX_OFFENDING ? len / 4
                                                                                   : DIMSE_MAX_OFFENDING);
                break;
            default:
                rc = decode_string(f, v, len, (char *)out + f->off, pos, err);
                if (rc)
                    goto out;
                break;
            }
            out->present |= f->bit;
        }
        /* Unknown group-0000 elements are skipped. */
        pos += 8 + (size_t)len;
    }
    if (!(out->present & DIMSE_HAS_COMMAND_FIELD)) {
        rc = pacs_err_set(err, PACS_EINVAL, "command set has no (0000,0100) CommandField");
        goto out;
    }
    if (!(out->present & DIMSE_HAS_DATASET_TYPE)) {
        rc = pacs_err_set(err, PACS_EINVAL, "%s command set has no (0000,0800) CommandDataSetType",
                          dimse_command_name(out->command_field));
        goto out;
    }
out:
    if (rc)
        memset(out, 0, sizeof *out);
    return rc;
}

/* --- encode ---------------------------------------------------------------- */

static int put_elem(struct dynbuf *b, uint16_t elem, const void *v, uint32_t len, uint8_t pad)
{
    uint8_t h[8];
    uint32_t padded = len + (len & 1);
    wr16(h, 0x0000);
    wr16(h + 2, elem);
    wr32(h + 4, padded);
    int rc = dynbuf_append(b, h, sizeof h);
    if (rc == 0)
        rc = dynbuf_append(b, v, len);
    if (rc == 0 && (len & 1))
        rc = dynbuf_append(b, &pad, 1);
    return rc;
}

int dimse_cmd_encode(const struct dimse_cmd *c, struct dynbuf *out, struct pacs_err *err)
{
    size_t start = out->len;
    uint32_t gl = 0;
    int rc;
    pacs_err_clear(err);
    rc = put_elem(out, 0x0000, &gl, 4, 0);
    for (size_t i = 0; rc == 0 && i < N_FIELDS; i++) {
        const struct field *f = &fields[i];
        if (!((c->present | ALWAYS) & f->bit))
            continue;
        const char *base = (const char *)c + f->off;
        switch (f->kind) {
        case K_US: {
            uint8_t v[2];
            uint16_t x;
            memcpy(&x, base, sizeof x);
            wr16(v, x);
            rc = put_elem(out, f->elem, v, 2, 0);
            break;
        }
        case K_AT: {
            uint8_t v[4 * DIMSE_MAX_OFFENDING];
            if (c->offending_element_n > DIMSE_MAX_OFFENDING) {
                rc = pacs_err_set(err, PACS_EINVAL, "%u offending elements, more than %d",
                                  c->offending_element_n, DIMSE_MAX_OFFENDING);
                break;
            }
            for (unsigned k = 0; k < c->offending_element_n; k++) {
                wr16(v + 4 * k, (uint16_t)(c->offending_element[k] >> 16));
                wr16(v + 4 * k + 2, (uint16_t)c->offending_element[k]);
            }
            rc = put_elem(out, f->elem, v, 4u * c->offending_element_n, 0);
            break;
        }
        default: {
            size_t n = strnlen(base, f->cap);
            if (n == f->cap) {
                rc = pacs_err_set(err, PACS_EINVAL, "(0000,%04X) %s is not NUL-terminated", f->elem,
                                  f->name);
                break;
            }
            rc = put_elem(out, f->elem, base, (uint32_t)n, f->kind == K_UI ? '\0' : ' ');
            break;
        }
        }
    }
    if (rc)
        goto out;
    /* Group length counts the bytes after its own 12-byte element. */
    wr32(out->data + start + 8, (uint32_t)(out->len - start - 12));
out:
    if (rc) {
        out->len = start;
        if (out->data)
            out->data[start] = '\0';
        if (err && err->code == 0)
            pacs_err_set(err, rc, "command set encoding: %s", pacs_strerror(rc));
    }
    return rc;
}

/* --- names and status ------------------------------------------------------- */

const char *dimse_command_name(uint16_t command_field)
{
    switch (command_field) {
    case DIMSE_C_STORE_RQ: return "C-STORE-RQ";
    case DIMSE_C_STORE_RSP: return "C-STORE-RSP";
    case DIMSE_C_GET_RQ: return "C-GET-RQ";
    case DIMSE_C_GET_RSP: return "C-GET-RSP";
    case DIMSE_C_FIND_RQ: return "C-FIND-RQ";
    case DIMSE_C_FIND_RSP: return "C-FIND-RSP";
    case DIMSE_C_MOVE_RQ: return "C-MOVE-RQ";
    case DIMSE_C_MOVE_RSP: return "C-MOVE-RSP";
    case DIMSE_C_ECHO_RQ: return "C-ECHO-RQ";
    case DIMSE_C_ECHO_RSP: return "C-ECHO-RSP";
    case DIMSE_N_EVENT_REPORT_RQ: return "N-EVENT-REPORT-RQ";
    case DIMSE_N_EVENT_REPORT_RSP: return "N-EVENT-REPORT-RSP";
    case DIMSE_N_GET_RQ: return "N-GET-RQ";
    case DIMSE_N_GET_RSP: return "N-GET-RSP";
    case DIMSE_N_SET_RQ: return "N-SET-RQ";
    case DIMSE_N_SET_RSP: return "N-SET-RSP";
    case DIMSE_N_ACTION_RQ: return "N-ACTION-RQ";
    case DIMSE_N_ACTION_RSP: return "N-ACTION-RSP";
    case DIMSE_N_CREATE_RQ: return "N-CREATE-RQ";
    case DIMSE_N_CREATE_RSP: return "N-CREATE-RSP";
    case DIMSE_N_DELETE_RQ: return "N-DELETE-RQ";
    case DIMSE_N_DELETE_RSP: return "N-DELETE-RSP";
    case DIMSE_C_CANCEL_RQ: return "C-CANCEL-RQ";
    default: return "unknown command";
    }
}

bool dimse_is_response(uint16_t command_field)
{
    return (command_field & 0x8000) != 0;
}

enum dimse_status_class dimse_status_class(uint16_t status)
{
    if (status == 0x0000)
        return DIMSE_SUCCESS;
    if (status == 0xFF00 || status == 0xFF01)
        return DIMSE_PENDING;
    if (status == 0xFE00)
        return DIMSE_CANCEL;
    if (status == 0x0001 || status == 0x0107 || status == 0x0116 || (status >= 0xB000 && status <= 0xBFFF))
        return DIMSE_WARNING;
    return DIMSE_FAILURE;
}

const char *dimse_status_class_name(enum dimse_status_class c)
{
    switch (c) {
    case DIMSE_SUCCESS: return "success";
    case DIMSE_PENDING: return "pending";
    case DIMSE_CANCEL: return "cancel";
    case DIMSE_WARNING: return "warning";
    default: return "failure";
    }
}
