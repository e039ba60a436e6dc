/* server.h - the HTTP server: libmicrohttpd (MHD) behind a route table,
 * with the headers, error bodies and request log every route shares.
 *
 * Threads: one per connection (MHD_USE_THREAD_PER_CONNECTION), at most
 * HTTP_MAX_CONNECTIONS. Handlers block: a STOW-RS part waits for its group
 * commit (an fsync), a WADO-RS stream reads files, and neither holds up
 * another connection. An idle keep-alive connection costs a sleeping
 * thread; HTTP_CONNECTION_TIMEOUT_S closes it.
 *
 * Compression: a buffered response (http_respond*, not streams) whose type
 * is text (JSON, DICOM JSON, text/..., XML, JavaScript, SVG) of at least
 * HTTP_GZIP_MIN bytes is gzip-compressed when the client's Accept-Encoding
 * takes gzip; such responses carry Vary: Accept-Encoding.
 *
 * CORS: off unless http.cors_origin is set; then every response carries
 * Access-Control-Allow-Origin (and Vary: Origin), and an OPTIONS request
 * to a path some route serves is a preflight answered 204 with
 * Access-Control-Allow-Methods (the path's methods), -Allow-Headers (what
 * was asked) and -Max-Age.
 *
 * Routing: a request's percent-decoded path is matched against the route
 * table in server.c, the one place routes are added. A template is a path
 * whose segments are literal or "{name}", which matches one non-empty
 * segment (never a '/'). Methods match exactly; a GET route also answers
 * HEAD (MHD sends no body). A path that matches some route but not its
 * method gets 405 with an Allow header; a path that matches none gets 404.
 *
 * Every response carries X-Request-Id (the client's own when it is 1..64
 * characters of [A-Za-z0-9._:-], else 16 generated hex digits),
 * X-Content-Type-Options: nosniff, X-Frame-Options: DENY,
 * Referrer-Policy: no-referrer, Cache-Control: no-store (unless the handler
 * set one) and Server: pacsd. Every 4xx/5xx pacsd produces has the body
 * {"error": "...", "status": N, "request_id": "..."} as application/json.
 * Exception: the few errors MHD answers itself before a request reaches
 * pacsd (431 headers too large, 400 malformed request line, 505) have
 * MHD's small HTML body and none of these headers.
 *
 * Each request is logged as one JSON line when it completes: at debug
 * level, at warn for a 5xx.
 *
 * Limits: the named limits below live here rather than in util/limits.h
 * because they are MHD options, not lengths of parsed input.
 */
#ifndef PACS_HTTP_SERVER_H
#define PACS_HTTP_SERVER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "archive/archive.h"
#include "util/config.h"
#include "util/err.h"

/* Most open connections (each has a thread); more wait in the listen
 * backlog. */
#define HTTP_MAX_CONNECTIONS 512
/* Stack of a connection thread (address space; only touched pages cost). */
#define HTTP_THREAD_STACK (1024u * 1024)
/* Smallest body worth compressing, and the zlib level (1: fastest, JSON
 * still shrinks 5-10x). */
#define HTTP_GZIP_MIN 1024
#define HTTP_GZIP_LEVEL 1
/* A request failed in mid-body is answered, then the client's further
 * bytes are read and dropped for up to this long / this much, so that its
 * TCP stack delivers the answer instead of a reset. */
#define HTTP_LINGER_MS 2000
#define HTTP_LINGER_MAX_BYTES (8u * 1024 * 1024)
/* Size of the blocks a streamed response is read in. */
#define HTTP_STREAM_BLOCK (256u * 1024)
/* A connection with no bytes moving either way for this long is closed.
 * Inactivity, not a deadline: a client trickling a byte every few seconds
 * keeps its connection (it costs a connection slot and at most
 * HTTP_CONNECTION_MEMORY bytes, not a thread). */
#define HTTP_CONNECTION_TIMEOUT_S 60
/* Per-connection memory: request line and headers must fit in it (else MHD
 * answers 431), and it holds the read buffer for request bodies. */
#define HTTP_CONNECTION_MEMORY (64u * 1024)
/* On http_stop, how long running requests get to finish before their
 * connections are closed. */
#define HTTP_DRAIN_TIMEOUT_S 10
/* Longest request id accepted from a client. */
#define HTTP_REQUEST_ID_MAX 64
/* Most path segments a request may have and still match a route. */
#define HTTP_MAX_PATH_SEGMENTS 32
/* Most "{name}" parameters in one template. */
#define HTTP_MAX_PATH_PARAMS 8

struct http_server;
/* One request, owned by the server: valid from the first call of its
 * route's body or handler function until its response has been sent. */
struct http_request;

/* Produces the response (http_respond*) and returns 0, or a negative
 * PACS_E* code. Returning without a response gives a 500. */
typedef int (*http_handler_fn)(struct http_request *r);
/* Receives the request body in pieces, in order, before the handler runs;
 * data is valid during the call only. A non-zero return stops the request
 * at once, the rest of the body unread: the error set by then with
 * http_respond_error is sent (a 500 without one; other responses cannot be
 * sent in mid-body), and the connection is closed after it. */
typedef int (*http_body_fn)(struct http_request *r, const void *data, size_t len);

struct http_route {
    const char *method;   /* "GET", "POST", ... */
    const char *tmpl;     /* "/health/live", "/dicom-web/studies/{study}/series" */
    http_handler_fn handler;
    /* NULL: the route takes no body, and a request with one gets 413. */
    http_body_fn body;
    /* With a body function: most body bytes accepted (413 beyond, checked
     * against Content-Length up front and against the bytes received);
     * 0 = no limit. */
    uint64_t max_body;
};

/* Binds cfg->bind:cfg->http.port and starts serving. cfg and ar must
 * outlive the server. On success *out is the running server, stopped and
 * freed by http_stop. Errors: PACS_EINVAL (bad bind address), PACS_EIO
 * (cannot listen, cannot start MHD), PACS_ENOMEM. */
int http_start(const struct pacs_config *cfg, struct archive *ar, struct http_server **out,
               struct pacs_err *err);

/* Marks start-up complete (archive open, listeners up): /health/startup
 * answers 200 from then on. NULL is a no-op. */
void http_set_started(struct http_server *s);

/* Stops accepting connections, marks the server not ready, lets running
 * requests finish for up to HTTP_DRAIN_TIMEOUT_S (their responses ask the
 * client to close), then closes every connection and frees s. NULL is a
 * no-op. */
void http_stop(struct http_server *s);

/* --- for handlers --------------------------------------------------------
 * Strings returned below live as long as the request. */

const char *http_req_method(const struct http_request *r);
/* The percent-decoded path, without the query. */
const char *http_req_path(const struct http_request *r);
/* The raw query string after '?', not decoded ("" for none). */
const char *http_req_query_string(const struct http_request *r);
/* The first value of query parameter key, decoded; NULL if absent. */
const char *http_req_query(const struct http_request *r, const char *key);
/* The value of request header name (case-insensitive); NULL if absent. */
const char *http_req_header(const struct http_request *r, const char *name);
/* The value of template parameter name ("study" for "{study}"); NULL if the
 * route has no such parameter. */
const char *http_req_param(const struct http_request *r, const char *name);
const char *http_req_id(const struct http_request *r);
struct archive *http_req_archive(const struct http_request *r);
const struct pacs_config *http_req_config(const struct http_request *r);
/* Open HTTP connections of the server r came in on (r's included), for
 * readiness and /metrics. */
unsigned http_req_connections(const struct http_request *r);
/* Where clients reach the server, for absolute URLs in answers, without a
 * trailing '/': http.public_url when set, else "http://" + the Host header
 * (when it is a plain host[:port]; else localhost and http.port). */
const char *http_req_base_url(struct http_request *r);
struct http_health *http_req_health(const struct http_request *r);

/* Per-request state of a route (a STOW parser between body pieces); free_fn,
 * if not NULL, is called on it when the request ends, however it ends. */
void http_req_set_state(struct http_request *r, void *state, void (*free_fn)(void *));
void *http_req_state(const struct http_request *r);

/* Sets the response: status, Content-Type (NULL: none) and body, copied.
 * A later call replaces an earlier one. Returns 0 or PACS_ENOMEM. */
int http_respond(struct http_request *r, unsigned status, const char *content_type,
                 const void *body, size_t len);
/* As http_respond with j serialized compactly as application/json; takes
 * j (decref'd whatever happens). */
int http_respond_json(struct http_request *r, unsigned status, json_t *j);
/* The error object {"error": msg, "status": status, "request_id": id}, new
 * (the caller owns it), for a handler that adds members before
 * http_respond_json; NULL on no memory. */
json_t *http_error_object(const struct http_request *r, unsigned status, const char *msg);
/* Responds status with the error body; the message is printf-formatted. */
int http_respond_error(struct http_request *r, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* As http_respond_json with another Content-Type (application/dicom+json). */
int http_respond_json_as(struct http_request *r, unsigned status, const char *content_type,
                         json_t *j);
/* As http_respond, taking a malloc'd body (freed whatever happens). */
int http_respond_owned(struct http_request *r, unsigned status, const char *content_type,
                       void *body, size_t len);

/* A streamed response body: fn is called on the connection's thread for
 * the bytes from `pos` on, and writes at most max of them into buf. It
 * returns how many it wrote (> 0), HTTP_STREAM_END when there are no more,
 * or HTTP_STREAM_ERROR (the connection is closed: the client sees a
 * truncated body, which is all HTTP/1.1 allows once the status is sent).
 * It may block (reading storage). */
typedef ssize_t (*http_stream_fn)(void *ctx, uint64_t pos, char *buf, size_t max);
#define HTTP_STREAM_END ((ssize_t)-1)
#define HTTP_STREAM_ERROR ((ssize_t)-2)
/* Unknown length: the body goes out chunked. */
#define HTTP_SIZE_UNKNOWN UINT64_MAX
/* Sets a streamed response of `size` bytes (or HTTP_SIZE_UNKNOWN). free_fn
 * (may be NULL) is called on ctx once the response is done with, however
 * it ends, and also when this call fails. Returns 0 or PACS_ENOMEM. */
int http_respond_stream(struct http_request *r, unsigned status, const char *content_type,
                        uint64_t size, http_stream_fn fn, void *ctx, void (*free_fn)(void *));

/* Adds a header to the response set by http_respond* (copied). Returns 0,
 * PACS_EINVAL (no response yet, or a header MHD refuses), PACS_ENOMEM. */
int http_add_header(struct http_request *r, const char *name, const char *value);

/* 16 lowercase hex digits, random (seeded once from getrandom), into out
 * (NUL-terminated): request ids and probe keys. */
void http_random_hex16(char out[17]);

#endif
