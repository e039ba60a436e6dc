/* log.h - structured log lines (one JSON object per line) on stderr.
 *
 * A line looks like
 *   {"time":"2026-11-22T12:00:00.123Z","level":"info","msg":"...","assoc":17,
 *    "peer":"127.0.0.1:5000","key":"value"}
 * "assoc" and "peer" appear only when set for the calling thread with
 * log_set_context; extra string fields come from log_writef_kv. The message is
 * JSON-escaped: control characters escaped, invalid UTF-8 replaced by U+FFFD.
 *
 * Each line is written with one write(2) and is at most LOG_LINE_MAX bytes, so
 * lines from different threads (and processes sharing a pipe) never
 * interleave; a longer message is cut and ends in "...".
 *
 * Thread safety: every function may be called from any thread. Level and fd
 * are process-wide; the context is per thread. Nothing here allocates, and
 * errno is preserved. A failed write is dropped (there is nowhere to report
 * it). The process should ignore SIGPIPE, as a network server does anyway.
 */
#ifndef PACS_LOG_H
#define PACS_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/config.h" /* enum config_log_level */

/* PIPE_BUF on Linux: the most a pipe write keeps atomic. */
#define LOG_LINE_MAX 4096
/* Longest peer text kept by log_set_context ("[v6 address]:port" fits). */
#define LOG_PEER_MAX 63

/* Lines below lvl are dropped. Default CONFIG_LOG_INFO. */
void log_set_level(enum config_log_level lvl);
enum config_log_level log_get_level(void);
/* True if a line at lvl would be written; lets callers skip costly formatting. */
bool log_enabled(enum config_log_level lvl);

/* Where lines go; default 2 (stderr). The fd stays the caller's. */
void log_set_fd(int fd);

/* Sets the calling thread's association id and peer ("host:port"), copied
 * (cut at LOG_PEER_MAX bytes). assoc_id 0 omits "assoc", peer NULL omits
 * "peer"; (0, NULL) clears both. */
void log_set_context(uint64_t assoc_id, const char *peer);

void log_write(enum config_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* As log_write, with extra string fields: kv is a NULL-terminated array of
 * key, value, key, value... (NULL kv: none). Keys should not be time, level,
 * msg, assoc or peer. Pairs that do not fit in the line are left off. */
void log_writef_kv(enum config_log_level lvl, const char *const *kv, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void log_vwrite_kv(enum config_log_level lvl, const char *const *kv, const char *fmt,
                   va_list ap) __attribute__((format(printf, 3, 0)));

#define log_debug(...) log_write(CONFIG_LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_write(CONFIG_LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_write(CONFIG_LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(CONFIG_LOG_ERROR, __VA_ARGS__)

#endif
