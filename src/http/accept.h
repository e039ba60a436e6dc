/* accept.h - what the retrieve routes parse from a request: the Accept
 * header (RFC 9110 12.5.1) as DICOMweb uses it (PS3.18 8.7: media ranges
 * with q values and the type= and transfer-syntax= parameters of
 * multipart/related), the Range header and WADO-RS frame lists.
 *
 *   Accept: multipart/related; type="application/dicom"; transfer-syntax=*,
 *           application/dicom+json;q=0.5
 *
 * Parsing: comma-separated ranges (commas inside quoted strings are part of
 * the value), each type "/" subtype then ";"-separated parameters, token or
 * quoted-string values. Media types and the type parameter are compared
 * case-insensitively (kept lower case), the transfer syntax as sent. Other
 * parameters are skipped. Ranges with q=0 ("not acceptable") are dropped;
 * the rest are ordered by q, highest first, in the order sent among equal
 * q. Errors (PACS_EINVAL, the message says what): a range without '/', a
 * bad q value, an unterminated quoted string, a transfer-syntax that is
 * neither "*" nor a UID; PACS_ELIMIT for more than PACS_MAX_ACCEPT_RANGES ranges or
 * a value longer than its field.
 */
#ifndef PACS_HTTP_ACCEPT_H
#define PACS_HTTP_ACCEPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"
#include "util/limits.h"

/* Longest media type kept (RFC 6838: 127 each side). */
#define HTTP_MEDIA_TYPE_MAX 255

struct http_media_range {
    char type[HTTP_MEDIA_TYPE_MAX + 1];      /* "multipart/related", "image/jpeg", wildcards */
    char root_type[HTTP_MEDIA_TYPE_MAX + 1]; /* the type= parameter, "" if none */
    char transfer_syntax[65];                /* "" none, "*" any, else a UID */
    unsigned q;                              /* 1..1000 (q=1.0 is 1000) */
};

struct http_accept {
    struct http_media_range r[PACS_MAX_ACCEPT_RANGES]; /* q > 0, by q */
    size_t n;
    /* The media types of the ranges with q=0 ("not this one"), for
     * http_accept_allows. */
    char excluded[PACS_MAX_ACCEPT_RANGES][HTTP_MEDIA_TYPE_MAX + 1];
    size_t n_excluded;
};

/* Parses header; NULL or blank is one range star-slash-star (RFC 9110:
 * no Accept means anything). *out holds no ranges on error. */
int http_accept_parse(const char *header, struct http_accept *out, struct pacs_err *err);

/* True when the concrete type (lower case) is acceptable: the most specific
 * range covering it (type/subtype, then type/ANY, then ANY/ANY; RFC 9110
 * 12.5.1) does not have q=0 ("application/dicom+json;q=0, ANY/ANY" allows
 * everything but DICOM JSON). An exclusion wins over an equally specific
 * range. */
bool http_accept_allows(const struct http_accept *acc, const char *type);

/* True when media range `range` (star-slash-star, "image" slash star,
 * "image/jpeg") covers
 * the concrete type `type` (lower case). */
bool http_media_covers(const char *range, const char *type);

/* One "bytes=" range of a value of len bytes (RFC 9110 14.1.2): "a-b",
 * "a-" or "-n" (the last n bytes); b past the end means the end. Returns 1
 * with [*first, *last] for a satisfiable range, 0 to ignore the header
 * (NULL, another unit, several ranges, b < a, malformed: RFC 9110 lets a
 * server serve the whole value then), -1 when unsatisfiable (a >= len, or
 * "-0"): the caller answers 416. */
int http_range_parse(const char *h, uint64_t len, uint64_t *first, uint64_t *last);

/* A WADO-RS frame list "1,3,5": frame numbers from 1, each 1 to 9 digits,
 * comma-separated, no spaces, repeats allowed. On success *out (n entries,
 * in the order given) is the caller's to free. PACS_EINVAL when malformed,
 * PACS_ELIMIT for more than PACS_MAX_FRAMES numbers, PACS_ENOMEM. */
int http_frame_list_parse(const char *s, uint64_t **out, size_t *n);

#endif
