/* fdio.h - whole writes to a file descriptor.
 *
 * write(2) may write less than asked or be interrupted; every caller that
 * means "all of it" uses this loop instead of its own.
 */
#ifndef PACS_FDIO_H
#define PACS_FDIO_H

#include <stddef.h>

/* Writes all n bytes, retrying short writes and EINTR. 0, or PACS_EIO with
 * errno left as write(2) set it. */
int fd_write_all(int fd, const void *p, size_t n);

#endif
