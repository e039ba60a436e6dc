/* dicomweb.c - media type choice and RetrieveURL values. See dicomweb.h. */
#include "http/dicomweb.h"

#include <stdlib.h>
#include <string.h>

#include "http/accept.h"

/* Longest part of an Accept value quoted in an error message. */
#define SHOW_MAX 100

int dw_choose_json_type(const char *accept, const char **type, struct pacs_err *err)
{
    *type = DW_MEDIA_DICOM_JSON;
    /* No Accept, or an empty list (" , "): anything goes (RFC 9110). */
    if (!accept || !accept[strspn(accept, " \t,")])
        return 0;
    struct http_accept *acc = malloc(sizeof *acc);
    if (!acc)
        return pacs_err_set(err, PACS_ENOMEM, "out of memory");
    bool dicom_json = false, json = false;
    /* A malformed Accept is refused like one that names nothing we have:
     * either way no acceptable type can be found in it. */
    if (http_accept_parse(accept, acc, NULL) == 0) {
        dicom_json = http_accept_allows(acc, DW_MEDIA_DICOM_JSON);
        json = http_accept_allows(acc, DW_MEDIA_JSON);
    }
    free(acc);
    if (dicom_json)
        return 0;
    if (json) {
        *type = DW_MEDIA_JSON;
        return 0;
    }
    /* The message goes into a JSON body: quote printable ASCII only. */
    char show[SHOW_MAX + 4];
    size_t n = 0;
    for (const char *c = accept; *c && n < SHOW_MAX; c++)
        show[n++] = *c >= 0x20 && *c < 0x7f ? *c : '?';
    if (accept[n]) {
        memcpy(show + n, "...", 3);
        n += 3;
    }
    show[n] = '\0';
    return pacs_err_set(err, PACS_EUNSUPPORTED,
                        "none of the accepted media types (%s) can be given: this resource "
                        "answers application/dicom+json or application/json",
                        show);
}

static int put_uid(struct dynbuf *out, const char *uid)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)uid; *p; p++) {
        int rc;
        if ((*p >= '0' && *p <= '9') || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
            *p == '.' || *p == '-' || *p == '_' || *p == '~') {
            rc = dynbuf_putc(out, (char)*p);
        } else {
            char esc[3] = { '%', hex[*p >> 4], hex[*p & 15] };
            rc = dynbuf_append(out, esc, sizeof esc);
        }
        if (rc)
            return rc;
    }
    return 0;
}

int dw_retrieve_url(struct dynbuf *out, const char *base, const char *study, const char *series,
                    const char *sop)
{
    size_t len0 = out->len;
    int rc = dynbuf_puts(out, base);
    if (!rc)
        rc = dynbuf_puts(out, "/dicom-web/studies/");
    if (!rc)
        rc = put_uid(out, study);
    if (!rc && series) {
        rc = dynbuf_puts(out, "/series/");
        if (!rc)
            rc = put_uid(out, series);
        if (!rc && sop) {
            rc = dynbuf_puts(out, "/instances/");
            if (!rc)
                rc = put_uid(out, sop);
        }
    }
    if (rc) {
        out->len = len0;
        if (out->data)
            out->data[len0] = '\0';
    }
    return rc;
}
