#include "util/err.h"

#include <stdarg.h>
#include <stdio.h>

int pacs_err_vset(struct pacs_err *e, int code, const char *fmt, va_list ap)
{
    if (e) {
        if (vsnprintf(e->msg, sizeof e->msg, fmt, ap) < 0)
            e->msg[0] = '\0';
        e->code = code;
    }
    return code;
}

int pacs_err_set(struct pacs_err *e, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pacs_err_vset(e, code, fmt, ap);
    va_end(ap);
    return code;
}

void pacs_err_clear(struct pacs_err *e)
{
    if (e) {
        e->code = PACS_OK;
        e->msg[0] = '\0';
    }
}

const char *pacs_strerror(int code)
{
    switch (code) {
    case PACS_OK: return "ok";
    case PACS_EINVAL: return "invalid input";
    case PACS_ENOMEM: return "out of memory";
    case PACS_EIO: return "I/O error";
    case PACS_ETRUNC: return "truncated input";
    case PACS_ELIMIT: return "limit exceeded";
    case PACS_EUNSUPPORTED: return "unsupported";
    case PACS_ENOTFOUND: return "not found";
    case PACS_EAGAIN: return "more input needed";
    }
    return "unknown error";
}
