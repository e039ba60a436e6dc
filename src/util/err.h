/* err.h - error codes and error detail shared by every pacsd module.
 *
 * Contract: functions return 0 on success or a negative PACS_E* code. When the
 * caller passes a non-NULL struct pacs_err, the failing function fills it with
 * the same code and a one-line human-readable message (no trailing newline).
 * The struct is caller-owned, fixed size, and never needs freeing.
 */
#ifndef PACS_ERR_H
#define PACS_ERR_H

#include <stdarg.h>
#include <stddef.h>

enum pacs_errcode {
    PACS_OK = 0,
    PACS_EINVAL = -1,       /* malformed input or bad argument */
    PACS_ENOMEM = -2,       /* allocation failed */
    PACS_EIO = -3,          /* operating-system I/O error */
    PACS_ETRUNC = -4,       /* input ended before the structure did */
    PACS_ELIMIT = -5,       /* input exceeds a named limit (util/limits.h) */
    PACS_EUNSUPPORTED = -6, /* valid input that pacsd does not handle */
    PACS_ENOTFOUND = -7,    /* the requested item does not exist */
    PACS_EAGAIN = -8,       /* streaming: more bytes are needed */
};

struct pacs_err {
    int code;
    char msg[256];
};

/* Fills *e (if non-NULL) with code and a printf-style message; returns code so
 * callers can write `return pacs_err_set(e, PACS_EINVAL, "...")`. */
int pacs_err_set(struct pacs_err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* As pacs_err_set with a va_list. */
int pacs_err_vset(struct pacs_err *e, int code, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Clears *e (if non-NULL) to PACS_OK and an empty message. */
void pacs_err_clear(struct pacs_err *e);

/* Short name of a code ("invalid input", "truncated", ...). Never NULL. */
const char *pacs_strerror(int code);

#endif
