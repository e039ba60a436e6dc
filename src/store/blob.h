/* blob.h - where instance files live: a byte store addressed by key, behind
 * a table of operations (files on local disk today, S3 later).
 *
 * Contract
 * - Keys are chosen by the caller: 1..64 characters of [0-9a-z] (the archive
 *   uses 32 random hex digits), so no key can name a path outside the store.
 * - A put is streamed: put_begin, put_write as often as needed, then
 *   put_commit or put_abort (exactly one of them, which frees the writer).
 *   After put_commit returns 0 the bytes are durable (fsynced) and visible
 *   under the key; the key's *name* becomes durable at the next sync (the
 *   filesystem store defers directory fsyncs so that concurrent puts share
 *   them: group commit). A put never replaces an existing key (PACS_EINVAL).
 *   A crash before put_commit leaves at most a temporary object that list()
 *   does not show and cleanup_temp() removes; a crash inside put_commit may
 *   leave the key listed with incomplete bytes, which is why the archive
 *   refers to a key only after put_commit and sync returned, and removes
 *   keys nothing refers to at start-up.
 * - get_open gives a reader over the whole object; readers and writers may
 *   be used from any thread, one thread per reader/writer at a time; the
 *   store itself is thread-safe.
 * - Errors: PACS_ENOTFOUND for a missing key, PACS_EIO with errno text.
 */
#ifndef PACS_BLOB_H
#define PACS_BLOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define BLOB_KEY_MAX 64

struct blob_store;
struct blob_writer;
struct blob_reader;

struct blob_ops {
    const char *name; /* "fs" */
    /* Opens (creating it if needed) the store at `location` (fs: a directory). */
    int (*open)(const char *location, struct blob_store **out, struct pacs_err *err);
    void (*close)(struct blob_store *s);

    int (*put_begin)(struct blob_store *s, const char *key, struct blob_writer **out,
                     struct pacs_err *err);
    int (*put_write)(struct blob_writer *w, const void *p, size_t n, struct pacs_err *err);
    int (*put_commit)(struct blob_writer *w, struct pacs_err *err);
    void (*put_abort)(struct blob_writer *w);
    /* Makes the names of every put committed so far durable. */
    int (*sync)(struct blob_store *s, struct pacs_err *err);

    int (*get_open)(struct blob_store *s, const char *key, struct blob_reader **out,
                    uint64_t *size, struct pacs_err *err);
    /* Reads up to n bytes at `offset`; *got is 0 only at the end. */
    int (*get_read)(struct blob_reader *r, uint64_t offset, void *p, size_t n, size_t *got,
                    struct pacs_err *err);
    /* A file descriptor for sendfile(2), or -1 when the store has none. */
    int (*get_fd)(struct blob_reader *r);
    void (*get_close)(struct blob_reader *r);

    /* Removes the object; PACS_ENOTFOUND if absent. */
    int (*del)(struct blob_store *s, const char *key, struct pacs_err *err);
    /* Calls cb for every committed key (any order) until it returns
     * non-zero, which list() then returns. */
    int (*list)(struct blob_store *s, int (*cb)(void *ctx, const char *key), void *ctx,
                struct pacs_err *err);
    /* Removes temporary objects left by puts that never committed (start-up
     * only: no put may be running). *removed counts them. */
    int (*cleanup_temp)(struct blob_store *s, unsigned *removed, struct pacs_err *err);
};

/* Every store holds its ops first, so callers can write s->ops->... */
struct blob_store {
    const struct blob_ops *ops;
};

extern const struct blob_ops blob_fs_ops;

/* True if key is a valid blob key (see above). */
bool blob_key_valid(const char *key);

#endif
