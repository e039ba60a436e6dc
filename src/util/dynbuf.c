#include "util/dynbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"

#define DYNBUF_HARD_MAX (SIZE_MAX / 2)

void dynbuf_init(struct dynbuf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void dynbuf_free(struct dynbuf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void dynbuf_reset(struct dynbuf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

int dynbuf_reserve(struct dynbuf *b, size_t extra)
{
    size_t max = b->max ? b->max : DYNBUF_HARD_MAX;
    if (extra > max || b->len > max - extra)
        return PACS_ELIMIT;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    size_t ncap = b->cap ? b->cap : 64;
    while (ncap < need)
        ncap = ncap > DYNBUF_HARD_MAX / 2 ? need : ncap * 2;
    uint8_t *p = realloc(b->data, ncap);
    if (!p)
        return PACS_ENOMEM;
    b->data = p;
    b->cap = ncap;
    b->data[b->len] = '\0'; /* a fresh allocation is a valid C string too */
    return 0;
}

int dynbuf_append(struct dynbuf *b, const void *p, size_t n)
{
    int rc = dynbuf_reserve(b, n);
    if (rc)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int dynbuf_putc(struct dynbuf *b, char c)
{
    return dynbuf_append(b, &c, 1);
}

int dynbuf_puts(struct dynbuf *b, const char *s)
{
    return dynbuf_append(b, s, strlen(s));
}

int dynbuf_vprintf(struct dynbuf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return PACS_EINVAL;
    if ((size_t)n < sizeof small)
        return dynbuf_append(b, small, (size_t)n);
    int rc = dynbuf_reserve(b, (size_t)n);
    if (rc)
        return rc;
    int m = vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    if (m != n)
        return PACS_EINVAL;
    b->len += (size_t)n;
    return 0;
}

int dynbuf_printf(struct dynbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = dynbuf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void dynbuf_consume(struct dynbuf *b, size_t n)
{
    if (n >= b->len) {
        dynbuf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

char *dynbuf_take(struct dynbuf *b, size_t *len)
{
    if (!b->data && dynbuf_reserve(b, 0))
        return NULL;
    char *p = (char *)b->data;
    if (len)
        *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}
