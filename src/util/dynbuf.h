/* dynbuf.h - a growable byte buffer that carries its length, capacity and a
 * hard maximum.
 *
 * Contract: the buffer owns b->data (heap); dynbuf_free releases it. The data
 * is always NUL-terminated after b->len bytes (the NUL is not counted) so it
 * can be used as a C string when it holds text. Appending past b->max fails
 * with PACS_ELIMIT and leaves the buffer as it was. A zeroed struct is a valid
 * empty buffer with no maximum other than SIZE_MAX/2.
 */
#ifndef PACS_DYNBUF_H
#define PACS_DYNBUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

struct dynbuf {
    uint8_t *data;
    size_t len;
    size_t cap;
    size_t max; /* 0 = no limit beyond SIZE_MAX/2 */
};

void dynbuf_init(struct dynbuf *b, size_t max);
void dynbuf_free(struct dynbuf *b);
/* Sets len to 0, keeps the allocation. */
void dynbuf_reset(struct dynbuf *b);
/* Ensures room for `extra` more bytes (plus the NUL). */
int dynbuf_reserve(struct dynbuf *b, size_t extra);
int dynbuf_append(struct dynbuf *b, const void *p, size_t n);
int dynbuf_putc(struct dynbuf *b, char c);
int dynbuf_puts(struct dynbuf *b, const char *s);
int dynbuf_printf(struct dynbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int dynbuf_vprintf(struct dynbuf *b, const char *fmt, va_list ap);
/* Removes the first n bytes (n <= len). */
void dynbuf_consume(struct dynbuf *b, size_t n);
/* Hands the allocation to the caller (free() it); the buffer becomes empty.
 * Returns an allocated empty string for an empty buffer, NULL on ENOMEM. */
char *dynbuf_take(struct dynbuf *b, size_t *len);

#endif
