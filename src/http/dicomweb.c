/* dicomweb.c - media type choice and RetrieveURL values. See dicomweb.h. */
#include "http/dicomweb.h"

#include <string.h>
#include <strings.h>

/* Longest part of an Accept value quoted in an error message. */
#define SHOW_MAX 100

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* [s, e) without surrounding spaces. */
static void trim(const char **s, const char **e)
{
    while (*s < *e && is_ows(**s))
        (*s)++;
    while (*e > *s && is_ows((*e)[-1]))
        (*e)--;
}

static bool span_is(const char *s, const char *e, const char *word)
{
    size_t n = strlen(word);
    return (size_t)(e - s) == n && strncasecmp(s, word, n) == 0;
}

/* True when the parameters [s, e) (";a=b;q=0.0") hold a q of zero: the
 * range is then excluded (RFC 9110 12.4.2). Anything else counts as
 * acceptable; a malformed q is not worth refusing a request over. */
static bool q_is_zero(const char *s, const char *e)
{
    while (s < e) {
        const char *semi = memchr(s, ';', (size_t)(e - s));
        const char *pe = semi ? semi : e;
        const char *ps = s, *eq = memchr(ps, '=', (size_t)(pe - ps));
        if (eq) {
            const char *ns = ps, *ne = eq, *vs = eq + 1, *ve = pe;
            trim(&ns, &ne);
            trim(&vs, &ve);
            if (span_is(ns, ne, "q") && vs < ve) {
                bool zero = true;
                for (const char *c = vs; c < ve; c++)
                    zero = zero && (*c == '0' || *c == '.');
                return zero;
            }
        }
        s = semi ? semi + 1 : e;
    }
    return false;
}

int dw_choose_json_type(const char *accept, const char **type, struct pacs_err *err)
{
    bool dicom_json = false, json = false, blank = true;
    *type = DW_MEDIA_DICOM_JSON;
    if (!accept)
        return 0;
    for (const char *s = accept; *s;) {
        const char *comma = strchr(s, ',');
        const char *e = comma ? comma : s + strlen(s);
        const char *semi = memchr(s, ';', (size_t)(e - s));
        const char *ms = s, *me = semi ? semi : e;
        trim(&ms, &me);
        if (ms < me) {
            blank = false;
            if (!(semi && q_is_zero(semi + 1, e))) {
                if (span_is(ms, me, DW_MEDIA_DICOM_JSON) || span_is(ms, me, "application/*") ||
                    span_is(ms, me, "*/*"))
                    dicom_json = true;
                else if (span_is(ms, me, DW_MEDIA_JSON))
                    json = true;
            }
        }
        s = comma ? comma + 1 : e;
    }
    if (blank || dicom_json)
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
