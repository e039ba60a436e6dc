/* log.c - JSON log lines, each assembled on the stack and written at once. */
#include "util/log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/utf8.h"

static atomic_int log_level = CONFIG_LOG_INFO;
static atomic_int log_fd = 2;

static _Thread_local uint64_t ctx_assoc;
static _Thread_local char ctx_peer[LOG_PEER_MAX + 1];

/* Bytes kept for the fields after the message (assoc, peer, extra pairs):
 * the message gets the rest, and at least half the line. */
#define LOG_TAIL_MAX (LOG_LINE_MAX / 2)

struct line {
    char *p;
    size_t len, cap;
};

static bool put(struct line *l, const char *s, size_t n)
{
    if (n > l->cap - l->len)
        return false;
    memcpy(l->p + l->len, s, n);
    l->len += n;
    return true;
}

static bool puts_(struct line *l, const char *s)
{
    return put(l, s, strlen(s));
}

/* Appends s[0..n) escaped for a JSON string, without quotes. Returns false
 * at the first character that would not fit, which is left out whole. */
static bool put_escaped(struct line *l, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i = 0;
    while (i < n) {
        unsigned char ch = (unsigned char)s[i];
        char esc[6];
        const char *out = esc;
        size_t el, adv = 1;
        if (ch >= 0x80) {
            adv = utf8_seq_len((const uint8_t *)s + i, n - i);
            if (adv == 0) {
                out = "\xef\xbf\xbd"; /* U+FFFD for each ill-formed byte */
                el = 3;
                adv = 1;
            } else {
                out = s + i;
                el = adv;
            }
        } else if (ch == '"' || ch == '\\') {
            esc[0] = '\\';
            esc[1] = (char)ch;
            el = 2;
        } else if (ch == '\n' || ch == '\r' || ch == '\t') {
            esc[0] = '\\';
            esc[1] = ch == '\n' ? 'n' : ch == '\r' ? 'r' : 't';
            el = 2;
        } else if (ch < 0x20 || ch == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[ch >> 4];
            esc[5] = hex[ch & 15];
            el = 6;
        } else {
            esc[0] = (char)ch;
            el = 1;
        }
        if (!put(l, out, el))
            return false;
        i += adv;
    }
    return true;
}

/* Appends ,"key":"value" whole or not at all. */
static bool put_field(struct line *l, const char *key, const char *value)
{
    size_t save = l->len;
    if (put(l, ",\"", 2) && put_escaped(l, key, strlen(key)) && put(l, "\":\"", 3) &&
        put_escaped(l, value, strlen(value)) && put(l, "\"", 1))
        return true;
    l->len = save;
    return false;
}

static void put_time(struct line *l)
{
    struct timespec ts;
    struct tm tm;
    char buf[40];
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0 || !gmtime_r(&ts.tv_sec, &tm)) {
        puts_(l, "1970-01-01T00:00:00.000Z");
        return;
    }
    size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    int m = snprintf(buf + n, sizeof buf - n, ".%03ldZ", (long)(ts.tv_nsec / 1000000));
    if (n == 0 || m < 0 || (size_t)m >= sizeof buf - n) {
        puts_(l, "1970-01-01T00:00:00.000Z");
        return;
    }
    put(l, buf, n + (size_t)m);
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

void log_set_level(enum config_log_level lvl)
{
    atomic_store_explicit(&log_level, (int)lvl, memory_order_relaxed);
}

enum config_log_level log_get_level(void)
{
    return (enum config_log_level)atomic_load_explicit(&log_level, memory_order_relaxed);
}

bool log_enabled(enum config_log_level lvl)
{
    return (int)lvl >= atomic_load_explicit(&log_level, memory_order_relaxed);
}

void log_set_fd(int fd)
{
    atomic_store_explicit(&log_fd, fd, memory_order_relaxed);
}

void log_set_context(uint64_t assoc_id, const char *peer)
{
    ctx_assoc = assoc_id;
    size_t n = peer ? strnlen(peer, LOG_PEER_MAX) : 0;
    if (n)
        memcpy(ctx_peer, peer, n);
    ctx_peer[n] = '\0';
}

void log_vwrite_kv(enum config_log_level lvl, const char *const *kv, const char *fmt,
                   va_list ap)
{
    if (!log_enabled(lvl))
        return;
    int saved_errno = errno;

    char msg[LOG_LINE_MAX];
    bool cut = false;
    int mn = vsnprintf(msg, sizeof msg, fmt, ap);
    if (mn < 0) {
        memcpy(msg, "(bad log format)", sizeof "(bad log format)");
        mn = (int)strlen(msg);
    } else if ((size_t)mn >= sizeof msg) {
        mn = (int)sizeof msg - 1;
        cut = true;
    }

    /* The tail (fields after the message) is built first so the message can
     * be cut to whatever room is left. */
    char tailbuf[LOG_TAIL_MAX];
    struct line tail = {tailbuf, 0, sizeof tailbuf - 2}; /* room for "}\n" */
    put(&tail, "\"", 1);
    if (ctx_assoc) {
        char num[32];
        int n = snprintf(num, sizeof num, ",\"assoc\":%llu", (unsigned long long)ctx_assoc);
        if (n > 0 && (size_t)n < sizeof num)
            put(&tail, num, (size_t)n);
    }
    if (ctx_peer[0])
        put_field(&tail, "peer", ctx_peer);
    for (size_t i = 0; kv && kv[i] && kv[i + 1]; i += 2)
        if (!put_field(&tail, kv[i], kv[i + 1]))
            break;
    tail.cap += 2;
    put(&tail, "}\n", 2);

    char buf[LOG_LINE_MAX];
    const char *level = config_log_level_name(lvl);
    /* Room for the message: the line less the tail and the "..." mark. */
    struct line l = {buf, 0, sizeof buf - tail.len - 3};
    puts_(&l, "{\"time\":\"");
    put_time(&l);
    puts_(&l, "\",\"level\":\"");
    puts_(&l, level);
    puts_(&l, "\",\"msg\":\"");
    if (!put_escaped(&l, msg, (size_t)mn))
        cut = true;
    l.cap = sizeof buf;
    if (cut)
        put(&l, "...", 3);
    put(&l, tail.p, tail.len);
    write_all(atomic_load_explicit(&log_fd, memory_order_relaxed), buf, l.len);
    errno = saved_errno;
}

void log_writef_kv(enum config_log_level lvl, const char *const *kv, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vwrite_kv(lvl, kv, fmt, ap);
    va_end(ap);
}

void log_write(enum config_log_level lvl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vwrite_kv(lvl, NULL, fmt, ap);
    va_end(ap);
}
