/* multipart.h - multipart/related (RFC 2046 5.1, RFC 2387) for DICOMweb:
 * Content-Type parsing, a streaming body parser and a response writer.
 * Pure: no sockets, no HTTP library; the caller moves the bytes.
 *
 * STOW-RS request bodies arrive as multipart/related;
 * type="application/dicom" and are parsed part by part as they arrive
 * (mp_feed), never holding a whole part: the parser keeps at most one
 * delimiter's worth of bytes plus one part's header block. WADO-RS answers
 * are written with mp_write_part_header / mp_write_close.
 *
 * What is accepted, and why (docs/multipart.md has the user's view):
 * - the delimiter is CRLF "--" boundary; the body may also start directly
 *   with "--" boundary (no CRLF before it). Spaces and tabs after the
 *   boundary (RFC 2046 transport padding) are skipped;
 * - a boundary line followed by anything but padding + CRLF, or "--", is an
 *   error: RFC 2046 forbids a line in a part that starts with the
 *   delimiter, so such a body is broken, not data;
 * - lines end in CRLF. A bare LF or CR in part headers is an error that
 *   says so: the delimiter in binary data cannot be found leniently without
 *   ambiguity, and a client that gets header lines wrong gets delimiters
 *   wrong too, so accepting its headers would only move the failure;
 * - the preamble before the first delimiter is ignored, and so is
 *   everything after the close delimiter "--" boundary "--" (the epilogue),
 *   even without the CRLF the grammar puts before it: every part has been
 *   delivered by then, and RFC 2046 says to ignore it;
 * - a body whose only delimiter is the close delimiter has zero parts; that
 *   is not an error here (the caller decides what an empty upload means);
 * - boundaries are 1..MP_BOUNDARY_ACCEPT_MAX RFC 2046 bchars not ending in a
 *   space. RFC 2046 caps them at 70, but Orthanc's DICOMweb plugin sends
 *   two UUIDs joined by '-' (73); what pacsd writes stays within 70;
 * - part headers: Content-Type, Content-Length, Content-Location,
 *   Content-ID and Content-Transfer-Encoding are read (each at most once),
 *   every other header is checked for syntax and skipped. Obsolete line
 *   folding, header names with non-token characters (including a space
 *   before the colon) and control characters in values are errors.
 *   Content-Transfer-Encoding must be binary, 8bit or 7bit
 *   (PACS_EUNSUPPORTED otherwise: base64 and quoted-printable are not
 *   decoded). A Content-Length, when given, must equal the part's size.
 *
 * Errors: PACS_EINVAL for malformed input, PACS_ELIMIT past a limit of
 * struct mp_limits, PACS_ETRUNC from mp_finish when the body ended before
 * the close delimiter, PACS_EUNSUPPORTED for an encoding not handled,
 * PACS_ENOMEM. Messages name the part (1-based, as a person counts) and the
 * byte offset in the body (0-based) where the problem is.
 *
 * Thread safety: no global state; a parser is used by one thread at a time.
 */
#ifndef PACS_HTTP_MULTIPART_H
#define PACS_HTTP_MULTIPART_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/dynbuf.h"
#include "util/err.h"

/* Longest boundary pacsd writes (RFC 2046). */
#define MP_BOUNDARY_MAX 70
/* Longest boundary pacsd accepts (see above: Orthanc sends 73). */
#define MP_BOUNDARY_ACCEPT_MAX 256
/* "type/subtype": RFC 6838 4.2 allows 127 characters on each side. */
#define MP_MEDIA_TYPE_MAX 255
/* Longest value kept for the type, start and transfer-syntax parameters. */
#define MP_PARAM_VALUE_MAX 255

/* Default limits (mp_limits_default). */
#define MP_DEFAULT_MAX_HEADER_BYTES (16u * 1024)
#define MP_DEFAULT_MAX_HEADERS 64u
#define MP_DEFAULT_MAX_PARTS 100000u

/* --- Content-Type -------------------------------------------------------- */

/* A parsed Content-Type value. Absent parameters are "" (an exposed
 * parameter given with an empty value is an error, so "" is unambiguous). */
struct mp_content_type {
    char media_type[MP_MEDIA_TYPE_MAX + 1];    /* "multipart/related", lower case */
    char boundary[MP_BOUNDARY_ACCEPT_MAX + 1]; /* as sent (case matters) */
    char type[MP_PARAM_VALUE_MAX + 1];         /* root part's media type, lower case */
    char start[MP_PARAM_VALUE_MAX + 1];        /* root part's Content-ID, as sent */
    char transfer_syntax[MP_PARAM_VALUE_MAX + 1]; /* as sent */
};

/* Parses a Content-Type header value (RFC 7231 3.1.1.1 / RFC 9110 8.3):
 * type "/" subtype, then ";"-separated parameters, each token "=" (token or
 * quoted-string with backslash escapes). Media type and parameter names are
 * case-insensitive. Leniencies: whitespace around ';' and '=', empty
 * parameters (";;", a trailing ';'), and unquoted values holding any
 * visible ASCII but '"', ';' and '\' (clients send type=application/dicom
 * unquoted although '/' is not a token character). Unknown parameters are
 * skipped; RFC 2231 "name*" forms are unknown parameters. Errors
 * (PACS_EINVAL unless noted): no media type or subtype, a parameter without
 * '=' or value, an unterminated quoted string, control characters, the same
 * exposed parameter twice, a type parameter that is not type/subtype, a
 * bad boundary (see mp_check_boundary), a multipart/ type without a
 * boundary; PACS_ELIMIT for a value longer than the fields above.
 * *out is always initialized (all "" on error). */
int mp_parse_content_type(const char *header, struct mp_content_type *out,
                          struct pacs_err *err);

/* True when ct is multipart/related (DICOMweb's only multipart type). */
bool mp_is_multipart_related(const struct mp_content_type *ct);

/* Checks a boundary as received: 1..MP_BOUNDARY_ACCEPT_MAX characters from
 * RFC 2046 bchars (letters, digits, '()+_,-./:=? and space), not ending
 * with a space. PACS_EINVAL / PACS_ELIMIT with the reason. */
int mp_check_boundary(const char *boundary, struct pacs_err *err);

/* --- streaming parser ---------------------------------------------------- */

struct mp_limits {
    size_t max_header_bytes; /* one part's header block, blank line included */
    size_t max_headers;      /* header lines in one part */
    size_t max_parts;        /* parts in the body */
    uint64_t max_part_size;  /* bytes of one part's data; 0 = no limit (the
                                caller bounds the whole body) */
};

/* 16 KiB of headers, 64 header lines, 100,000 parts, no part size limit. */
struct mp_limits mp_limits_default(void);

/* Headers of one part, passed to part_begin. The strings point into the
 * parser and are valid only during that call (copy what you keep); NULL
 * when the header is absent. Values are trimmed of surrounding spaces and
 * tabs, otherwise as sent. A part without Content-Type is text/plain to
 * RFC 2046; STOW-RS callers take the type parameter of the request. */
struct mp_part_headers {
    size_t index;       /* 0 for the first part */
    uint64_t offset;    /* body offset of the part's first header byte */
    const char *content_type;
    const char *content_location;
    const char *content_id;
    const char *content_transfer_encoding;
    bool has_content_length;
    uint64_t content_length; /* checked: <= max_part_size when that is set */
};

/* Each callback may be NULL. A non-zero return stops the parse: mp_feed
 * returns that value (and so does every later mp_feed/mp_finish), leaving
 * *err untouched, so a callback reports its own detail through ctx. For
 * one part the calls are part_begin, part_data zero or more times (n > 0,
 * the bytes in order, split wherever the input was), then part_end once
 * the delimiter after the part has been checked. After an error, the part
 * in progress gets no part_end: the caller discards it. */
struct mp_callbacks {
    int (*part_begin)(void *ctx, const struct mp_part_headers *h);
    int (*part_data)(void *ctx, const uint8_t *p, size_t n);
    int (*part_end)(void *ctx);
};

struct mp_parser;

/* Creates a parser for one body. boundary is the Content-Type parameter
 * (without the leading "--"; copied); lim NULL means mp_limits_default().
 * Errors: a bad boundary (mp_check_boundary), a zero max_header_bytes,
 * max_headers or max_parts (PACS_EINVAL), PACS_ENOMEM. The caller frees
 * *out with mp_parser_free. */
int mp_parser_new(const char *boundary, const struct mp_limits *lim, struct mp_parser **out,
                  struct pacs_err *err);

/* Feeds the next n bytes of the body (any split: one byte at a time gives
 * the same callbacks and bytes as the whole body at once). Returns 0 when
 * all n bytes were taken, a negative PACS_E* code, or a callback's
 * non-zero value. Errors are sticky: once failed, every later call returns
 * the same code and message. */
int mp_feed(struct mp_parser *p, const uint8_t *data, size_t n, const struct mp_callbacks *cb,
            void *ctx, struct pacs_err *err);

/* Ends the body. 0 when the close delimiter was seen; PACS_ETRUNC (the
 * message says where the body stopped: before any delimiter, in the headers
 * of part N, inside part N) otherwise; or the sticky error. */
int mp_finish(struct mp_parser *p, struct pacs_err *err);

/* True once the close delimiter has been seen (the rest is epilogue). */
bool mp_done(const struct mp_parser *p);

/* Parts started so far (including one whose headers are being read). */
size_t mp_part_count(const struct mp_parser *p);

/* Frees the parser; NULL is a no-op. */
void mp_parser_free(struct mp_parser *p);

/* --- writer -------------------------------------------------------------- */

/* Content-Length value that means "write no Content-Length header". */
#define MP_NO_LENGTH UINT64_MAX

/* Appends the delimiter and headers that open a part:
 *   [CRLF unless first] "--" boundary CRLF
 *   "Content-Type: " content_type CRLF
 *   ["Content-Location: " content_location CRLF]
 *   ["Content-Length: " content_length CRLF]
 *   CRLF
 * The part's bytes follow, written by the caller. content_type is
 * required; content_location may be NULL; content_length MP_NO_LENGTH
 * omits it (0 is a real, empty part). The boundary must satisfy
 * mp_check_boundary and be at most MP_BOUNDARY_MAX long; header values
 * must not hold control characters (no header injection). On error out is
 * left as it was. */
int mp_write_part_header(struct dynbuf *out, const char *boundary, bool first,
                         const char *content_type, const char *content_location,
                         uint64_t content_length, struct pacs_err *err);

/* Appends the close delimiter CRLF "--" boundary "--" CRLF. */
int mp_write_close(struct dynbuf *out, const char *boundary, struct pacs_err *err);

/* Appends the Content-Type value of a multipart/related response:
 * multipart/related; type="<root_type>"[; transfer-syntax=<ts>]; boundary=<b>
 * (the boundary quoted only if it needs it). transfer_syntax may be NULL. */
int mp_write_content_type(struct dynbuf *out, const char *root_type, const char *boundary,
                          const char *transfer_syntax, struct pacs_err *err);

/* Fills out with a fresh random boundary ("pacsd-" and 32 hex digits, from
 * getrandom(2)): 128 random bits, so it occurs in no instance by chance.
 * PACS_EIO if the kernel gives no randomness. */
int mp_new_boundary(char out[MP_BOUNDARY_MAX + 1], struct pacs_err *err);

#endif
