/* fdio.c - whole writes to a file descriptor. See fdio.h. */
#include "util/fdio.h"

#include <errno.h>
#include <stdint.h>
#include <unistd.h>

#include "util/err.h"

int fd_write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return PACS_EIO;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}
