/* server.c - the HTTP server over libmicrohttpd. See server.h.
 *
 * A request's life in MHD terms:
 *   on_uri          request line read: allocate the request, start the clock
 *   on_access #1    headers read: request id, route, body checks
 *   on_access #2..  body pieces to the route's body function
 *   on_access last  (*upload_data_size == 0) the handler answers (at once
 *                   after #1 for a request without a body)
 *   on_completed    response sent or connection gone: log, free
 */
#include "http/server.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "http/health.h"
#include "http/routes.h"
#include "util/log.h"
#include "util/metrics.h"

/* The route tables (routes.h), in matching order. */
static const struct http_route *const route_tables[] = {
    http_health_routes, http_metrics_routes, http_stow_routes, http_qido_routes,
    http_wado_routes,   http_wado_uri_routes, http_rest_routes,
};
#define N_ROUTE_TABLES (sizeof route_tables / sizeof route_tables[0])

/* Longest Allow header value: every method of the table fits. */
#define HTTP_ALLOW_MAX 128
/* Longest error message put in an error body. */
#define HTTP_ERROR_MSG_MAX 256

struct http_server {
    const struct pacs_config *cfg;
    struct archive *ar;
    struct MHD_Daemon *d;
    struct http_health *health;
    atomic_bool stopping;
    /* Access-Control-Allow-Origin for every response; NULL: CORS off. */
    const char *cors_origin;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned in_flight; /* requests past their headers, not yet completed */
    /* Open connections (under mu), for the header-timeout watchdog. */
    struct http_conn *conns;
    pthread_t watchdog;
    bool watchdog_running;
    bool watchdog_stop; /* under mu; the watchdog waits on cv */
};

/* Where a connection is between requests, for the watchdog. */
enum conn_phase {
    CONN_WAITING,   /* reading a request line and headers */
    CONN_BUSY,      /* headers read: the request's own limits apply */
    CONN_TIMED_OUT, /* the watchdog answered 408 and shut the socket */
};

/* One open connection (MHD's socket context). */
struct http_conn {
    struct http_conn *prev, *next;
    int fd;
    atomic_int phase;      /* enum conn_phase */
    struct timespec since; /* start of CONN_WAITING, under mu */
};

struct http_param {
    const char *name; /* into the route's template, not terminated */
    size_t name_len;
    const char *value;
};

struct http_request {
    struct http_server *s;
    struct MHD_Connection *conn;
    struct http_conn *hc; /* the connection's watchdog entry, or NULL */
    struct timespec t0;
    bool begun;   /* headers were read: counted in in_flight */
    bool queued;  /* a response was handed to MHD */
    bool has_body;
    const char *method, *path; /* MHD's, valid for the request */
    char *query;               /* raw, after '?' */
    char *segbuf;              /* the path split at '/' */
    const char *segs[HTTP_MAX_PATH_SEGMENTS];
    size_t n_segs;
    const struct http_route *route;
    struct http_param params[HTTP_MAX_PATH_PARAMS];
    size_t n_params;
    uint64_t body_len;
    char id[HTTP_REQUEST_ID_MAX + 1];
    unsigned status;
    struct MHD_Response *resp;
    char *base_url;            /* http_req_base_url, made on first use */
    char *err_body;            /* the last http_respond_error body (JSON) */
    unsigned err_status;
    void *state;
    void (*state_free)(void *);
};

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* --- random ids ------------------------------------------------------------ */

static pthread_once_t seed_once = PTHREAD_ONCE_INIT;
static uint64_t seed;
static atomic_uint_fast64_t seq;

static void seed_init(void)
{
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed) {
        /* No entropy yet (early boot): ids need to be unique, not secret. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)getpid();
    }
}

/* splitmix64: a bijection, so distinct counters give distinct ids. */
static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void http_random_hex16(char out[17])
{
    static const char hex[] = "0123456789abcdef";
    pthread_once(&seed_once, seed_init);
    uint64_t v = mix64(seed + atomic_fetch_add(&seq, 1));
    for (int i = 15; i >= 0; i--, v >>= 4)
        out[i] = hex[v & 15];
    out[16] = '\0';
}

/* A client's id is echoed into a header and the log: a short token only. */
static bool request_id_ok(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (n >= HTTP_REQUEST_ID_MAX ||
            !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == ':'))
            return false;
    }
    return n > 0;
}

/* --- routing --------------------------------------------------------------- */

/* Splits the path (which starts with '/') into r->segs; false if it has
 * more segments than any route could match. "/" is one empty segment. */
static bool split_path(struct http_request *r)
{
    size_t n = strlen(r->path);
    r->segbuf = malloc(n);
    if (!r->segbuf)
        return false;
    memcpy(r->segbuf, r->path + 1, n); /* the text after '/', and the NUL */
    char *p = r->segbuf;
    r->n_segs = 0;
    for (;;) {
        if (r->n_segs == HTTP_MAX_PATH_SEGMENTS)
            return false;
        r->segs[r->n_segs++] = p;
        char *slash = strchr(p, '/');
        if (!slash)
            return true;
        *slash = '\0';
        p = slash + 1;
    }
}

/* True if the request's segments match tmpl; the parameters go to r. */
static bool route_match(struct http_request *r, const char *tmpl)
{
    const char *t = tmpl;
    size_t i = 0, np = 0;
    while (*t == '/') {
        t++;
        const char *end = strchr(t, '/');
        size_t tl = end ? (size_t)(end - t) : strlen(t);
        if (i == r->n_segs)
            return false;
        const char *seg = r->segs[i++];
        if (tl >= 2 && t[0] == '{' && t[tl - 1] == '}') {
            if (!seg[0] || np == HTTP_MAX_PATH_PARAMS)
                return false;
            r->params[np].name = t + 1;
            r->params[np].name_len = tl - 2;
            r->params[np].value = seg;
            np++;
        } else if (strlen(seg) != tl || memcmp(seg, t, tl) != 0) {
            return false;
        }
        t += tl;
    }
    if (*t || i != r->n_segs)
        return false;
    r->n_params = np;
    return true;
}

static bool method_matches(const char *route_method, const char *method)
{
    return !strcmp(route_method, method) ||
           (!strcmp(method, "HEAD") && !strcmp(route_method, "GET"));
}

/* Appends m to the comma-separated list in allow unless it is there. */
static void allow_add(char *allow, const char *m)
{
    size_t n = strlen(allow), ml = strlen(m);
    for (const char *p = allow; *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == ml && !memcmp(p, m, ml))
            return;
        p += l;
        while (*p == ',' || *p == ' ')
            p++;
    }
    if (n + (n ? 2 : 0) + ml + 1 > HTTP_ALLOW_MAX)
        return; /* cannot happen with the table's methods */
    if (n) {
        memcpy(allow + n, ", ", 2);
        n += 2;
    }
    memcpy(allow + n, m, ml + 1);
}

/* Finds the route of r. Otherwise answers 404, or 405 with the Allow list
 * of the routes the path matches; returns false then. */
static bool route_find(struct http_request *r)
{
    char allow[HTTP_ALLOW_MAX] = "";
    bool ok = r->path[0] == '/' && split_path(r);
    for (size_t t = 0; ok && t < N_ROUTE_TABLES; t++) {
        for (const struct http_route *rt = route_tables[t]; rt->method; rt++) {
            if (!route_match(r, rt->tmpl))
                continue;
            if (method_matches(rt->method, r->method)) {
                r->route = rt;
                return true;
            }
            allow_add(allow, rt->method);
            if (!strcmp(rt->method, "GET"))
                allow_add(allow, "HEAD");
        }
    }
    r->n_params = 0;
    if (allow[0] && r->s->cors_origin && !strcmp(r->method, "OPTIONS")) {
        /* A CORS preflight: say what the path allows. */
        allow_add(allow, "OPTIONS");
        if (http_respond(r, MHD_HTTP_NO_CONTENT, NULL, "", 0) == 0) {
            http_add_header(r, "Access-Control-Allow-Methods", allow);
            const char *h = http_req_header(r, "Access-Control-Request-Headers");
            if (h && strlen(h) < HTTP_ALLOW_MAX * 4)
                http_add_header(r, "Access-Control-Allow-Headers", h);
            http_add_header(r, "Access-Control-Max-Age", "600");
        }
    } else if (allow[0]) {
        http_respond_error(r, MHD_HTTP_METHOD_NOT_ALLOWED, "method %s is not allowed here",
                           r->method);
        http_add_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    } else {
        http_respond_error(r, MHD_HTTP_NOT_FOUND, "no such resource");
    }
    return false;
}

/* --- responses ------------------------------------------------------------- */

static int set_response(struct http_request *r, unsigned status, struct MHD_Response *resp,
                        const char *content_type)
{
    if (!resp)
        return PACS_ENOMEM;
    if (content_type &&
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) != MHD_YES) {
        MHD_destroy_response(resp);
        return PACS_ENOMEM;
    }
    if (r->resp)
        MHD_destroy_response(r->resp);
    r->resp = resp;
    r->status = status;
    return 0;
}

/* True if the client takes gzip: "gzip" among Accept-Encoding's codings
 * (or "*"), with no q=0. */
static bool accepts_gzip(const struct http_request *r)
{
    const char *ae = http_req_header(r, MHD_HTTP_HEADER_ACCEPT_ENCODING);
    if (!ae)
        return false;
    for (const char *p = ae; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ",;");
        while (n && p[n - 1] == ' ')
            n--;
        bool name = (n == 4 && !strncasecmp(p, "gzip", 4)) || (n == 1 && *p == '*');
        const char *e = p + strcspn(p, ",");
        const char *q = memchr(p, ';', (size_t)(e - p));
        bool zero = false;
        if (q) {
            q++;
            while (*q == ' ')
                q++;
            if ((q[0] == 'q' || q[0] == 'Q') && q[1] == '=') {
                double v = strtod(q + 2, NULL);
                zero = v <= 0.0;
            }
        }
        if (name)
            return !zero;
        p = e;
    }
    return false;
}

/* Text formats worth compressing. */
static bool compressible(const char *ct)
{
    return ct && (!strncmp(ct, "application/json", 16) ||
                  !strncmp(ct, "application/dicom+json", 22) || !strncmp(ct, "text/", 5) ||
                  !strncmp(ct, "application/javascript", 22) ||
                  !strncmp(ct, "application/xml", 15) || !strncmp(ct, "image/svg+xml", 13));
}

/* body gzip-compressed into a new malloc'd buffer (*out, *out_len), or
 * false (no memory, zlib error): then it goes out as it is. */
static bool gzip_body(const void *body, size_t len, void **out, size_t *out_len)
{
    z_stream z = {0};
    if (deflateInit2(&z, HTTP_GZIP_LEVEL, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return false;
    uLong cap = deflateBound(&z, (uLong)len);
    unsigned char *buf = malloc(cap);
    bool ok = buf != NULL;
    if (ok) {
        z.next_in = (Bytef *)(uintptr_t)body;
        z.avail_in = (uInt)len;
        z.next_out = buf;
        z.avail_out = (uInt)cap;
        ok = deflate(&z, Z_FINISH) == Z_STREAM_END;
    }
    deflateEnd(&z);
    if (!ok) {
        free(buf);
        return false;
    }
    *out = buf;
    *out_len = z.total_out;
    return true;
}

/* A response from a buffer: compressed when the client takes gzip and the
 * body is text of some size. owned: body is malloc'd and passes to the
 * response (freed whatever happens). */
static int respond_buffer(struct http_request *r, unsigned status, const char *content_type,
                          const void *body, size_t len, bool owned)
{
    bool want_gzip = len >= HTTP_GZIP_MIN && len <= UINT32_MAX && compressible(content_type);
    void *z = NULL;
    size_t zlen = 0;
    bool gz = want_gzip && accepts_gzip(r) && gzip_body(body, len, &z, &zlen);
    struct MHD_Response *resp;
    if (gz) {
        if (owned)
            free((void *)body);
        resp = MHD_create_response_from_buffer(zlen, z, MHD_RESPMEM_MUST_FREE);
        if (!resp)
            free(z);
    } else {
        resp = MHD_create_response_from_buffer(len, (void *)body,
                                               owned ? MHD_RESPMEM_MUST_FREE
                                                     : MHD_RESPMEM_MUST_COPY);
        if (!resp && owned)
            free((void *)body);
    }
    int rc = set_response(r, status, resp, content_type);
    if (rc == 0 && gz)
        rc = http_add_header(r, MHD_HTTP_HEADER_CONTENT_ENCODING, "gzip");
    if (rc == 0 && want_gzip)
        rc = http_add_header(r, MHD_HTTP_HEADER_VARY, "Accept-Encoding");
    return rc;
}

int http_respond(struct http_request *r, unsigned status, const char *content_type,
                 const void *body, size_t len)
{
    return respond_buffer(r, status, content_type, body, len, false);
}

int http_respond_json(struct http_request *r, unsigned status, json_t *j)
{
    return http_respond_json_as(r, status, "application/json", j);
}

int http_respond_json_as(struct http_request *r, unsigned status, const char *content_type,
                         json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return PACS_ENOMEM;
    /* jansson allocates with malloc (pacsd sets no other allocator). */
    return respond_buffer(r, status, content_type, text, strlen(text), true);
}

int http_respond_owned(struct http_request *r, unsigned status, const char *content_type,
                       void *body, size_t len)
{
    return respond_buffer(r, status, content_type, body, len, true);
}

struct stream {
    http_stream_fn fn;
    void *ctx;
    void (*free_fn)(void *);
};

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct stream *st = cls;
    ssize_t n = st->fn(st->ctx, pos, buf, max);
    if (n == HTTP_STREAM_END)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (n < 0 || n == 0)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    return n;
}

static void stream_free(void *cls)
{
    struct stream *st = cls;
    if (st->free_fn)
        st->free_fn(st->ctx);
    free(st);
}

int http_respond_stream(struct http_request *r, unsigned status, const char *content_type,
                        uint64_t size, http_stream_fn fn, void *ctx, void (*free_fn)(void *))
{
    struct stream *st = malloc(sizeof *st);
    if (!st) {
        if (free_fn)
            free_fn(ctx);
        return PACS_ENOMEM;
    }
    st->fn = fn;
    st->ctx = ctx;
    st->free_fn = free_fn;
    struct MHD_Response *resp = MHD_create_response_from_callback(
        size == HTTP_SIZE_UNKNOWN ? MHD_SIZE_UNKNOWN : size, HTTP_STREAM_BLOCK, stream_read, st,
        stream_free);
    if (!resp) {
        stream_free(st);
        return PACS_ENOMEM;
    }
    return set_response(r, status, resp, content_type);
}

json_t *http_error_object(const struct http_request *r, unsigned status, const char *msg)
{
    json_t *j = json_pack("{s:s, s:i, s:s}", "error", msg, "status", (int)status,
                          "request_id", r->id);
    if (!j) /* msg was not UTF-8 */
        j = json_pack("{s:s, s:i, s:s}", "error", MHD_get_reason_phrase_for(status), "status",
                      (int)status, "request_id", r->id);
    return j;
}

int http_respond_error(struct http_request *r, unsigned status, const char *fmt, ...)
{
    char msg[HTTP_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* A longer message is cut (vsnprintf terminated it). */
    const char *text = n < 0 ? MHD_get_reason_phrase_for(status) : msg;
    json_t *j = http_error_object(r, status, text);
    char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!body)
        return PACS_ENOMEM;
    free(r->err_body);
    r->err_body = strdup(body); /* for fail_mid_body; NULL is fine there */
    r->err_status = status;
    return respond_buffer(r, status, "application/json", body, strlen(body), true);
}

int http_add_header(struct http_request *r, const char *name, const char *value)
{
    if (!r->resp)
        return PACS_EINVAL;
    return MHD_add_response_header(r->resp, name, value) == MHD_YES ? 0 : PACS_EINVAL;
}

/* Adds what every response carries, unless the handler set it already. */
static bool add_common_headers(struct http_request *r)
{
    static const char *const fixed[][2] = {
        {"X-Content-Type-Options", "nosniff"},
        {"X-Frame-Options", "DENY"},
        {"Referrer-Policy", "no-referrer"},
        {MHD_HTTP_HEADER_CACHE_CONTROL, "no-store"},
        {MHD_HTTP_HEADER_SERVER, "pacsd"},
    };
    struct MHD_Response *resp = r->resp;
    if (MHD_add_response_header(resp, "X-Request-Id", r->id) != MHD_YES)
        return false;
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (!MHD_get_response_header(resp, fixed[i][0]) &&
            MHD_add_response_header(resp, fixed[i][0], fixed[i][1]) != MHD_YES)
            return false;
    if (r->s->cors_origin &&
        (MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->s->cors_origin) !=
             MHD_YES ||
         MHD_add_response_header(resp, "Vary", "Origin") != MHD_YES))
        return false;
    /* While draining, a keep-alive client is told to go elsewhere. */
    if (atomic_load(&r->s->stopping) &&
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close") != MHD_YES)
        return false;
    return true;
}

/* Hands the response to MHD (a 500 if there is none). */
static enum MHD_Result queue(struct http_request *r)
{
    if (!r->resp && http_respond_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal error"))
        return MHD_NO;
    if (!add_common_headers(r))
        return MHD_NO;
    enum MHD_Result ok = MHD_queue_response(r->conn, r->status, r->resp);
    MHD_destroy_response(r->resp);
    r->resp = NULL;
    r->queued = true;
    return ok;
}

static enum MHD_Result run_handler(struct http_request *r)
{
    int rc = r->route->handler(r);
    if (!r->resp) {
        log_error("http: %s %s: handler ended (%s) without a response", r->method, r->path,
                  rc ? pacs_strerror(rc) : "ok");
        http_respond_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal error");
    }
    return queue(r);
}

/* --- MHD callbacks --------------------------------------------------------- */

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct http_request *r = calloc(1, sizeof *r);
    if (!r)
        return NULL; /* on_access closes the connection */
    r->s = cls;
    r->conn = conn;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    r->hc = ci ? ci->socket_context : NULL;
    clock_gettime(CLOCK_MONOTONIC, &r->t0);
    /* Only here does MHD show the query undecoded. */
    const char *q = strchr(uri, '?');
    r->query = strdup(q ? q + 1 : "");
    return r;
}

static uint64_t parse_u64(const char *s, bool *ok)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    *ok = s[0] >= '0' && s[0] <= '9' && !*end && errno == 0;
    return (uint64_t)v;
}

/* Headers are in: id, route, body checks. An error found here is set as
 * the response (r->resp); false if the request cannot go on at all. */
static bool begin(struct http_request *r, const char *url, const char *method)
{
    struct http_server *s = r->s;
    if (r->hc) {
        int waiting = CONN_WAITING;
        if (!atomic_compare_exchange_strong(&r->hc->phase, &waiting, CONN_BUSY) &&
            waiting == CONN_TIMED_OUT)
            return false; /* the watchdog answered already */
    }
    r->begun = true;
    r->method = method;
    r->path = url;
    pthread_mutex_lock(&s->mu);
    s->in_flight++;
    pthread_mutex_unlock(&s->mu);

    const char *id = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Request-Id");
    if (id && request_id_ok(id))
        memcpy(r->id, id, strlen(id) + 1);
    else
        http_random_hex16(r->id);
    if (!r->query)
        return false;

    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_TRANSFER_ENCODING);
    bool cl_ok = true;
    uint64_t declared = cl ? parse_u64(cl, &cl_ok) : 0;
    r->has_body = te != NULL || declared > 0;

    if (!route_find(r))
        return r->resp != NULL; /* no memory for even the 404: close */
    if (r->has_body && !r->route->body)
        http_respond_error(r, MHD_HTTP_CONTENT_TOO_LARGE, "this resource takes no request body");
    else if (r->has_body && r->route->max_body && cl_ok && declared > r->route->max_body)
        http_respond_error(r, MHD_HTTP_CONTENT_TOO_LARGE,
                           "request body over the limit of %" PRIu64 " bytes",
                           r->route->max_body);
    return true;
}

/* Writes a complete error response on fd itself, for the two cases where
 * MHD cannot queue one: while it is still reading headers (the watchdog)
 * and in the middle of a request body (MHD 0.9.75 queues responses only
 * after the headers or after the whole body). Best effort: a client that
 * does not read gets the close only. */
static void raw_error(const struct http_server *s, int fd, unsigned status, const char *body,
                      const char *id)
{
    char msg[HTTP_ERROR_MSG_MAX * 4];
    const char *reason = MHD_get_reason_phrase_for(status);
    int n = snprintf(msg, sizeof msg,
                     "HTTP/1.1 %u %s\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                     "X-Request-Id: %s\r\nX-Content-Type-Options: nosniff\r\n"
                     "X-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n"
                     "Cache-Control: no-store\r\nServer: pacsd\r\n%s%s%s\r\n%s",
                     status, reason, strlen(body), id,
                     s->cors_origin ? "Access-Control-Allow-Origin: " : "",
                     s->cors_origin ? s->cors_origin : "", s->cors_origin ? "\r\n" : "", body);
    if (n > 0 && (size_t)n < sizeof msg &&
        send(fd, msg, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
        log_debug("http: writing a %u on a closing connection: %s", status, strerror(errno));
}

/* Ends a request whose body is still arriving with the error response set
 * by http_respond_error (a 500 if none): written on the socket directly
 * (see raw_error), then a lingering close: the write side is shut and what
 * the client still sends is read and dropped for a moment, so that its
 * TCP stack does not reset the connection (losing our answer) because
 * unread data arrived after close. */
static enum MHD_Result fail_mid_body(struct http_request *r)
{
    static const char internal[] = "internal error";
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    unsigned status = r->err_body ? r->err_status : MHD_HTTP_INTERNAL_SERVER_ERROR;
    char fallback[HTTP_ERROR_MSG_MAX];
    const char *body = r->err_body;
    if (!body) {
        int n = snprintf(fallback, sizeof fallback,
                         "{\"error\":\"%s\",\"status\":500,\"request_id\":\"%s\"}", internal,
                         r->id);
        body = n > 0 && (size_t)n < sizeof fallback ? fallback : "{}";
    }
    r->status = status;
    if (!ci)
        return MHD_NO;
    int fd = ci->connect_fd;
    raw_error(r->s, fd, status, body, r->id);
    shutdown(fd, SHUT_WR);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char sink[16384];
    size_t drained = 0;
    while (drained < HTTP_LINGER_MAX_BYTES && seconds_since(&t0) * 1000 < HTTP_LINGER_MS) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        ssize_t got = recv(fd, sink, sizeof sink, MSG_DONTWAIT);
        if (got <= 0)
            break;
        drained += (size_t)got;
    }
    return MHD_NO;
}

/* True once a request body has had http.header_timeout seconds and still
 * averages below http.min_upload_rate (a client trickling bytes to hold a
 * connection). Checked as pieces arrive; a body that stops altogether is
 * cut by the inactivity timeout instead. */
static bool upload_too_slow(const struct http_request *r)
{
    uint32_t rate = r->s->cfg->http.min_upload_rate;
    if (!rate)
        return false;
    double t = seconds_since(&r->t0);
    return t > (double)r->s->cfg->http.header_timeout && (double)r->body_len / t < rate;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version,
                                 const char *upload_data, size_t *upload_data_size,
                                 void **req_cls)
{
    (void)cls;
    (void)conn;
    (void)version;
    struct http_request *r = *req_cls;
    if (!r)
        return MHD_NO;
    if (!r->begun) {
        if (!begin(r, url, method))
            return MHD_NO;
        /* An error with a body on its way is answered now, so the body is
         * never read (MHD closes the connection after the response). A
         * response queued at this point always closes it, so everything
         * else waits for the next call, which comes at once without a body. */
        if (r->resp && r->has_body)
            return queue(r);
        return MHD_YES;
    }
    if (r->queued) {
        /* Answered early; what is left of the body is dropped. */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size == 0)
        return r->resp ? queue(r) : run_handler(r);

    size_t n = *upload_data_size;
    *upload_data_size = 0;
    r->body_len += n;
    if (upload_too_slow(r)) {
        http_respond_error(r, MHD_HTTP_REQUEST_TIMEOUT,
                           "request body slower than %u bytes/s (http.min_upload_rate)",
                           (unsigned)r->s->cfg->http.min_upload_rate);
        return fail_mid_body(r);
    }
    if (r->route->max_body && r->body_len > r->route->max_body) {
        http_respond_error(r, MHD_HTTP_CONTENT_TOO_LARGE,
                           "request body over the limit of %" PRIu64 " bytes",
                           r->route->max_body);
        return fail_mid_body(r);
    }
    if (r->route->body(r, upload_data, n) != 0) {
        if (!r->err_body)
            http_respond_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal error");
        return fail_mid_body(r);
    }
    return MHD_YES;
}

static const char *termination_name(enum MHD_RequestTerminationCode toe)
{
    switch (toe) {
    case MHD_REQUEST_TERMINATED_COMPLETED_OK: return "completed";
    case MHD_REQUEST_TERMINATED_WITH_ERROR: return "error";
    case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED: return "timeout";
    case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN: return "shutdown";
    case MHD_REQUEST_TERMINATED_READ_ERROR: return "read error";
    case MHD_REQUEST_TERMINATED_CLIENT_ABORT: return "client closed";
    }
    return "?";
}

/* "host:port" of the client into out (n >= 2), or "?". */
static void client_name(struct MHD_Connection *conn, char *out, size_t n)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char host[INET6_ADDRSTRLEN], serv[8];
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    socklen_t sl = sa && sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                   : sizeof(struct sockaddr_in);
    int k = -1;
    if (sa && getnameinfo(sa, sl, host, sizeof host, serv, sizeof serv,
                          NI_NUMERICHOST | NI_NUMERICSERV) == 0)
        k = snprintf(out, n, sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, serv);
    if (k < 0 || (size_t)k >= n)
        memcpy(out, "?", 2);
}

static void log_request(struct http_request *r, enum MHD_RequestTerminationCode toe)
{
    enum config_log_level lvl = r->status >= 500 ? CONFIG_LOG_WARN : CONFIG_LOG_DEBUG;
    if (!log_enabled(lvl))
        return;
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - r->t0.tv_sec) * 1e3 +
                (double)(t1.tv_nsec - r->t0.tv_nsec) / 1e6;
    char status[8], dur[32], client[INET6_ADDRSTRLEN + 16];
    if (snprintf(status, sizeof status, "%u", r->status) >= (int)sizeof status ||
        snprintf(dur, sizeof dur, "%.3f", ms) >= (int)sizeof dur)
        return;
    client_name(r->conn, client, sizeof client);
    const char *kv[] = {"method", r->method, "path", r->path, "status", status,
                        "duration_ms", dur, "request_id", r->id, "client", client,
                        toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? NULL : "outcome",
                        termination_name(toe), NULL};
    log_writef_kv(lvl, kv, "http request");
}

/* Counts the request in pacsd_http_requests_total and its duration. The
 * labels come from small sets: the route's template (never the raw path),
 * a known method or "other" (a client may send any token). */
static void count_request(const struct http_request *r)
{
    static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE",
                                          "OPTIONS", "PATCH"};
    const char *method = "other";
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (r->method && !strcmp(r->method, methods[i]))
            method = methods[i];
    const char *route = r->route ? r->route->tmpl : "unmatched";
    char status[8] = "none"; /* no response was ever set */
    if (r->status && snprintf(status, sizeof status, "%u", r->status) >= (int)sizeof status)
        memcpy(status, "none", sizeof "none");
    metric_inc(&metric_http_requests, (const char *const[]){method, route, status});
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - r->t0.tv_sec) + (double)(t1.tv_nsec - r->t0.tv_nsec) / 1e9;
    metric_observe(&metric_http_request_duration, (const char *const[]){method, route}, s);
}

unsigned http_req_connections(const struct http_request *r)
{
    const union MHD_DaemonInfo *di =
        MHD_get_daemon_info(r->s->d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    return di ? di->num_connections : 0;
}

static void request_free(struct http_request *r)
{
    if (r->state_free)
        r->state_free(r->state);
    if (r->resp)
        MHD_destroy_response(r->resp);
    free(r->query);
    free(r->segbuf);
    free(r->base_url);
    free(r->err_body);
    free(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct http_server *s = cls;
    struct http_request *r = *req_cls;
    (void)conn;
    if (!r)
        return;
    *req_cls = NULL;
    if (r->hc) {
        pthread_mutex_lock(&s->mu);
        clock_gettime(CLOCK_MONOTONIC, &r->hc->since);
        int busy = CONN_BUSY;
        atomic_compare_exchange_strong(&r->hc->phase, &busy, CONN_WAITING);
        pthread_mutex_unlock(&s->mu);
    }
    if (r->begun) {
        log_request(r, toe);
        count_request(r);
        pthread_mutex_lock(&s->mu);
        s->in_flight--;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
    request_free(r);
}

/* --- header timeout ---------------------------------------------------------
 * MHD's timeout counts inactivity only, so a client sending its headers a
 * byte at a time would hold a connection (and its thread) for ever. The
 * watchdog gives every connection http.header_timeout seconds from its
 * start, or from the end of its previous response, to finish a request's
 * headers; past that it writes a 408 itself (MHD has sent nothing on the
 * connection at that point) and shuts the socket, which ends MHD's read. */

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct http_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct http_conn *c = ci ? calloc(1, sizeof *c) : NULL;
        if (!c)
            return; /* unwatched: MHD's inactivity timeout still applies */
        c->fd = ci->connect_fd;
        atomic_init(&c->phase, CONN_WAITING);
        pthread_mutex_lock(&s->mu);
        clock_gettime(CLOCK_MONOTONIC, &c->since);
        c->next = s->conns;
        if (s->conns)
            s->conns->prev = c;
        s->conns = c;
        pthread_mutex_unlock(&s->mu);
        *socket_context = c;
        return;
    }
    /* MHD_CONNECTION_NOTIFY_CLOSED comes before MHD closes the socket, so
     * the watchdog (which holds mu) never touches a reused descriptor. */
    struct http_conn *c = *socket_context;
    if (!c)
        return;
    pthread_mutex_lock(&s->mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&s->mu);
    free(c);
    *socket_context = NULL;
}

/* Answers 408 on a connection MHD is still reading headers from. */
static void time_out(const struct http_server *s, struct http_conn *c, unsigned secs)
{
    char id[17], body[256];
    http_random_hex16(id);
    int bl = snprintf(body, sizeof body,
                      "{\"error\":\"request headers not complete within %u s "
                      "(http.header_timeout)\",\"status\":408,\"request_id\":\"%s\"}",
                      secs, id);
    if (bl > 0 && (size_t)bl < sizeof body)
        raw_error(s, c->fd, MHD_HTTP_REQUEST_TIMEOUT, body, id);
    shutdown(c->fd, SHUT_RDWR);
    log_info("http: connection cut: request headers not complete within %u s", secs);
}

static void *watchdog_main(void *arg)
{
    struct http_server *s = arg;
    unsigned limit = s->cfg->http.header_timeout;
    pthread_mutex_lock(&s->mu);
    while (!s->watchdog_stop) {
        for (struct http_conn *c = s->conns; c; c = c->next) {
            int waiting = CONN_WAITING;
            if (seconds_since(&c->since) > (double)limit &&
                atomic_compare_exchange_strong(&c->phase, &waiting, CONN_TIMED_OUT))
                time_out(s, c, limit);
        }
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        t.tv_sec += 1;
        pthread_cond_timedwait(&s->cv, &s->mu, &t);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* MHD's own error messages: one per line, ending in a newline. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[LOG_LINE_MAX / 2];
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    if (n < 0)
        return;
    size_t len = strnlen(msg, sizeof msg);
    while (len && (msg[len - 1] == '\n' || msg[len - 1] == '\r'))
        msg[--len] = '\0';
    log_warn("http: %s", msg);
}

/* --- accessors ------------------------------------------------------------- */

const char *http_req_method(const struct http_request *r) { return r->method; }
const char *http_req_path(const struct http_request *r) { return r->path; }
const char *http_req_query_string(const struct http_request *r) { return r->query; }
const char *http_req_id(const struct http_request *r) { return r->id; }
struct archive *http_req_archive(const struct http_request *r) { return r->s->ar; }
const struct pacs_config *http_req_config(const struct http_request *r) { return r->s->cfg; }
struct http_health *http_req_health(const struct http_request *r) { return r->s->health; }
void *http_req_state(const struct http_request *r) { return r->state; }

const char *http_req_query(const struct http_request *r, const char *key)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *http_req_header(const struct http_request *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *http_req_param(const struct http_request *r, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < r->n_params; i++)
        if (r->params[i].name_len == n && !memcmp(r->params[i].name, name, n))
            return r->params[i].value;
    return NULL;
}

/* A Host header is echoed into URLs: host name or address characters and
 * a port only. */
static bool host_ok(const char *h)
{
    size_t n = strlen(h);
    if (n == 0 || n > 255)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == ':' || c == '[' || c == ']' || c == '_'))
            return false;
    }
    return true;
}

const char *http_req_base_url(struct http_request *r)
{
    if (r->base_url)
        return r->base_url;
    const char *pub = r->s->cfg->http.public_url;
    if (pub && *pub) {
        r->base_url = strdup(pub);
    } else {
        const char *host = http_req_header(r, MHD_HTTP_HEADER_HOST);
        char dflt[64];
        if (!host || !host_ok(host)) {
            snprintf(dflt, sizeof dflt, "localhost:%u", r->s->cfg->http.port);
            host = dflt;
        }
        size_t n = strlen(host) + sizeof "http://";
        r->base_url = malloc(n);
        if (r->base_url)
            snprintf(r->base_url, n, "http://%s", host);
    }
    return r->base_url ? r->base_url : "";
}

void http_req_set_state(struct http_request *r, void *state, void (*free_fn)(void *))
{
    r->state = state;
    r->state_free = free_fn;
}

/* --- start and stop -------------------------------------------------------- */

/* The listening socket, made here rather than by MHD so that a failure
 * says why (address in use, permission) as the DICOM listener does. */
static int listen_on(const struct pacs_config *cfg, bool *v6, struct pacs_err *err)
{
    char port[8];
    int fd = -1, e = 0;
    if (snprintf(port, sizeof port, "%u", cfg->http.port) >= (int)sizeof port)
        return pacs_err_set(err, PACS_EINVAL, "bad HTTP port");
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int r = getaddrinfo(cfg->bind, port, &hints, &res);
    if (r)
        return pacs_err_set(err, PACS_EINVAL, "bind address %s: %s", cfg->bind, gai_strerror(r));
    *v6 = res->ai_family == AF_INET6;
    int one = 1, zero = 0;
    /* Non-blocking: the pool's threads all wait on it, and the losers of
     * a race for a connection must not block in accept. */
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        /* "::" means every address, IPv4 ones too. */
        (*v6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero)) ||
        bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, SOMAXCONN)) {
        e = errno;
        if (fd >= 0)
            close(fd);
        fd = pacs_err_set(err, PACS_EIO, "cannot listen on %s:%u (HTTP): %s", cfg->bind,
                          cfg->http.port, strerror(e));
    }
    freeaddrinfo(res);
    return fd;
}

static void server_free(struct http_server *s)
{
    http_health_free(s->health);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int http_start(const struct pacs_config *cfg, struct archive *ar, struct http_server **out,
               struct pacs_err *err)
{
    struct http_server *s = NULL;
    int rc = 0, lfd = -1;
    bool v6 = false;
    *out = NULL;
    s = calloc(1, sizeof *s);
    if (!s)
        return pacs_err_set(err, PACS_ENOMEM, "out of memory");
    s->cfg = cfg;
    s->ar = ar;
    s->cors_origin = cfg->http.cors_origin && *cfg->http.cors_origin ? cfg->http.cors_origin
                                                                      : NULL;
    atomic_init(&s->stopping, false);
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    if ((rc = http_health_new(ar, &s->health, err)) != 0)
        goto out;
    if ((lfd = listen_on(cfg, &v6, err)) < 0) {
        rc = lfd;
        goto out;
    }
    /* A thread per connection (see server.h); MHD_USE_ITC is what
     * MHD_quiesce_daemon needs. No per-IP limit: behind an ingress or a
     * load balancer every client has the same address. */
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_AUTO | MHD_USE_ITC | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
    s->d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_access, s,
        /* First, or MHD prints what the options below say to stderr. */
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)lfd,
        MHD_OPTION_THREAD_STACK_SIZE, (size_t)HTTP_THREAD_STACK,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_MAX_CONNECTIONS,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_CONNECTION_TIMEOUT_S,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONNECTION_MEMORY,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, s,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_SIGPIPE_HANDLED_BY_APP, 1, /* pacsd ignores SIGPIPE */
        MHD_OPTION_END);
    if (!s->d) {
        rc = pacs_err_set(err, PACS_EIO, "cannot start the HTTP server on %s:%u", cfg->bind,
                          cfg->http.port);
        goto out;
    }
    if (pthread_create(&s->watchdog, NULL, watchdog_main, s) != 0) {
        MHD_stop_daemon(s->d);
        lfd = -1; /* MHD closed it */
        rc = pacs_err_set(err, PACS_ENOMEM, "cannot start the HTTP watchdog thread");
        goto out;
    }
    s->watchdog_running = true;
    log_info("HTTP listening on %s:%u", cfg->bind, cfg->http.port);
    *out = s;
out:
    if (rc) {
        if (lfd >= 0)
            close(lfd);
        server_free(s);
    }
    return rc;
}

void http_set_started(struct http_server *s)
{
    if (s)
        http_health_set_started(s->health);
}

void http_stop(struct http_server *s)
{
    if (!s)
        return;
    atomic_store(&s->stopping, true);
    http_health_set_stopping(s->health);
    MHD_socket lfd = MHD_quiesce_daemon(s->d);

    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += HTTP_DRAIN_TIMEOUT_S;
    pthread_mutex_lock(&s->mu);
    if (s->in_flight)
        log_info("HTTP stopping: waiting up to %d s for %u request(s)", HTTP_DRAIN_TIMEOUT_S,
                 s->in_flight);
    while (s->in_flight > 0)
        if (pthread_cond_timedwait(&s->cv, &s->mu, &deadline) == ETIMEDOUT)
            break;
    unsigned left = s->in_flight;
    pthread_mutex_unlock(&s->mu);
    if (left)
        log_warn("HTTP stopping: cutting %u request(s) still running", left);

    /* Closes idle keep-alive connections and whatever did not finish. */
    MHD_stop_daemon(s->d);
    if (s->watchdog_running) {
        pthread_mutex_lock(&s->mu);
        s->watchdog_stop = true;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->watchdog, NULL);
    }
    /* Quiesced, the listening socket is ours to close; else MHD closed it. */
    if (lfd != MHD_INVALID_SOCKET)
        close(lfd);
    server_free(s);
}
