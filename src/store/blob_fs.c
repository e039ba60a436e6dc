/* blob_fs.c - the blob store on a local filesystem.
 *
 * Layout (docs/storage.md): <dir>/<k0k1>/<key>, temporaries in <dir>/tmp/
 * (same filesystem, so the final rename is atomic). A one-character key
 * pads its directory name with '_', which no key holds, so every key has
 * exactly one place. One level of at most 37^2 directories (256 for the
 * archive's hex keys): they all exist after the first thousand puts, so a
 * put almost never pays for a directory creation.
 *
 * Durability: put_commit creates the directory if needed (fsyncing its
 * parent), renames without replacing, then fsyncs the file; the directory
 * then goes in a dirty set that sync() fsyncs once, so concurrent puts into
 * the same directory share one directory fsync.
 */
#include "store/blob.h"
#include "util/fdio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

/* Directory names are made of 37 symbols ([0-9a-z] and the '_' pad), so a
 * prefix is a number below 37^2 and sets of them are bitmaps. */
#define FS_SYMS 37u
#define FS_PREFIX_LEN 2
#define FS_NPREFIX (FS_SYMS * FS_SYMS)
#define FS_BITMAP_WORDS ((FS_NPREFIX + 63) / 64)
#define FS_TMP_DIR "tmp"
#define FS_DIR_MODE 0750
#define FS_FILE_MODE 0640

struct fs_store {
    struct blob_store base;
    int dirfd;
    int tmpfd;
    atomic_uint_least64_t seq; /* temporary names */
    /* Leaf directories known to exist durably: skips mkdir on the hot path.
     * Written under dir_mu, which is also held across mkdir + parent fsync
     * so nobody sees a directory before its creation is durable. */
    pthread_mutex_t dir_mu;
    uint64_t *ready;
    /* Leaf directories with renames not yet fsynced (dirty_mu). */
    pthread_mutex_t dirty_mu;
    uint64_t *dirty_bits;
    uint32_t *dirty;
    size_t n_dirty, cap_dirty;
    /* Held for a whole sync(), so a sync that finds the set empty knows
     * that any earlier sync which took its directories has finished. */
    pthread_mutex_t sync_mu;
};

struct blob_writer {
    struct fs_store *s;
    int fd;
    bool failed; /* a write failed: the object must not be committed */
    uint64_t written, flushed; /* bytes written; bytes whose writeback started */
    char key[BLOB_KEY_MAX + 1];
    char tmpname[BLOB_KEY_MAX + 48];
};

struct blob_reader {
    int fd;
};

static int fs_errno(struct pacs_err *err, int e, const char *what, const char *name)
{
    char buf[128];
    const char *msg = strerror_r(e, buf, sizeof buf);
    return pacs_err_set(err, PACS_EIO, "blob store: %s %s: %s", what, name, msg);
}

static unsigned fs_sym(char c)
{
    if (c >= '0' && c <= '9')
        return (unsigned)(c - '0');
    if (c >= 'a' && c <= 'z')
        return 10u + (unsigned)(c - 'a');
    return 36u; /* '_' pad */
}

static char fs_sym_char(unsigned v)
{
    if (v < 10)
        return (char)('0' + v);
    if (v < 36)
        return (char)('a' + (v - 10));
    return '_';
}

/* The first FS_PREFIX_LEN key characters, padded with '_'. */
static void fs_prefix_chars(const char *key, char p[FS_PREFIX_LEN])
{
    size_t i = 0;
    for (; i < FS_PREFIX_LEN && key[i]; i++)
        p[i] = key[i];
    for (; i < FS_PREFIX_LEN; i++)
        p[i] = '_';
}

static uint32_t fs_prefix_code(const char *key)
{
    char p[FS_PREFIX_LEN];
    fs_prefix_chars(key, p);
    uint32_t v = 0;
    for (int i = 0; i < FS_PREFIX_LEN; i++)
        v = v * FS_SYMS + fs_sym(p[i]);
    return v;
}

/* The directory name "k0k1" of a prefix code. */
static void fs_leaf_dir(uint32_t code, char out[FS_PREFIX_LEN + 1])
{
    for (int i = FS_PREFIX_LEN - 1; i >= 0; i--) {
        out[i] = fs_sym_char(code % FS_SYMS);
        code /= FS_SYMS;
    }
    out[FS_PREFIX_LEN] = '\0';
}

#define FS_PATH_MAX (FS_PREFIX_LEN + 1 + BLOB_KEY_MAX + 1)

/* "k0k1/key" into out (the key is valid, so it fits). */
static void fs_obj_path(const char *key, char out[FS_PATH_MAX])
{
    fs_leaf_dir(fs_prefix_code(key), out);
    out[FS_PREFIX_LEN] = '/';
    memcpy(out + FS_PREFIX_LEN + 1, key, strlen(key) + 1);
}

static bool bit_get(const uint64_t *b, uint32_t i) { return (b[i / 64] >> (i % 64)) & 1u; }
static void bit_set(uint64_t *b, uint32_t i) { b[i / 64] |= (uint64_t)1 << (i % 64); }
static void bit_clear(uint64_t *b, uint32_t i) { b[i / 64] &= ~((uint64_t)1 << (i % 64)); }

static int fs_fsync_dir(int at, const char *path, struct pacs_err *err)
{
    int fd = openat(at, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return fs_errno(err, errno, "cannot open directory", path);
    int rc = 0;
    if (fsync(fd) != 0)
        rc = fs_errno(err, errno, "cannot fsync directory", path);
    close(fd);
    return rc;
}

/* mkdir that reports whether it created the directory. */
static int fs_mkdir(int at, const char *path, bool *created, struct pacs_err *err)
{
    *created = false;
    if (mkdirat(at, path, FS_DIR_MODE) == 0) {
        *created = true;
        return 0;
    }
    if (errno == EEXIST)
        return 0;
    return fs_errno(err, errno, "cannot create directory", path);
}

static int fs_ensure_leaf(struct fs_store *s, uint32_t code, struct pacs_err *err)
{
    char leaf[FS_PREFIX_LEN + 1];
    int rc = 0;
    bool created;
    fs_leaf_dir(code, leaf);

    pthread_mutex_lock(&s->dir_mu);
    if (bit_get(s->ready, code))
        goto out;
    if ((rc = fs_mkdir(s->dirfd, leaf, &created, err)) != 0)
        goto out;
    if (created && fsync(s->dirfd) != 0) {
        rc = fs_errno(err, errno, "cannot fsync directory", ".");
        goto out;
    }
    bit_set(s->ready, code);
out:
    pthread_mutex_unlock(&s->dir_mu);
    return rc;
}

static int fs_mark_dirty(struct fs_store *s, uint32_t code)
{
    int rc = 0;
    pthread_mutex_lock(&s->dirty_mu);
    if (bit_get(s->dirty_bits, code))
        goto out;
    if (s->n_dirty == s->cap_dirty) {
        size_t cap = s->cap_dirty ? s->cap_dirty * 2 : 256;
        uint32_t *p = realloc(s->dirty, cap * sizeof *p);
        if (!p) {
            rc = PACS_ENOMEM;
            goto out;
        }
        s->dirty = p;
        s->cap_dirty = cap;
    }
    s->dirty[s->n_dirty++] = code;
    bit_set(s->dirty_bits, code);
out:
    pthread_mutex_unlock(&s->dirty_mu);
    return rc;
}

/* mkdir -p: the location's parents may not exist yet on a fresh install. */
static int fs_mkdir_p(const char *path, struct pacs_err *err)
{
    size_t n = strlen(path);
    char *p = malloc(n + 1);
    int rc = 0;
    if (!p)
        return pacs_err_set(err, PACS_ENOMEM, "blob store: out of memory");
    memcpy(p, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != '\0')
            continue;
        char c = p[i];
        p[i] = '\0';
        if (mkdir(p, FS_DIR_MODE) != 0 && errno != EEXIST) {
            rc = fs_errno(err, errno, "cannot create directory", p);
            goto out;
        }
        p[i] = c;
    }
out:
    free(p);
    return rc;
}

static void fs_close(struct blob_store *bs)
{
    struct fs_store *s = (struct fs_store *)bs;
    if (!s)
        return;
    if (s->dirfd >= 0)
        close(s->dirfd);
    if (s->tmpfd >= 0)
        close(s->tmpfd);
    pthread_mutex_destroy(&s->dir_mu);
    pthread_mutex_destroy(&s->dirty_mu);
    pthread_mutex_destroy(&s->sync_mu);
    free(s->ready);
    free(s->dirty_bits);
    free(s->dirty);
    free(s);
}

static int fs_open(const char *location, struct blob_store **out, struct pacs_err *err)
{
    int rc = 0;
    struct fs_store *s = NULL;
    *out = NULL;
    if (!location || !*location)
        return pacs_err_set(err, PACS_EINVAL, "blob store: empty location");
    if ((rc = fs_mkdir_p(location, err)) != 0)
        return rc;
    s = calloc(1, sizeof *s);
    if (!s)
        return pacs_err_set(err, PACS_ENOMEM, "blob store: out of memory");
    s->base.ops = &blob_fs_ops;
    s->dirfd = s->tmpfd = -1;
    atomic_init(&s->seq, 0);
    pthread_mutex_init(&s->dir_mu, NULL);
    pthread_mutex_init(&s->dirty_mu, NULL);
    pthread_mutex_init(&s->sync_mu, NULL);
    s->ready = calloc(FS_BITMAP_WORDS, sizeof *s->ready);
    s->dirty_bits = calloc(FS_BITMAP_WORDS, sizeof *s->dirty_bits);
    if (!s->ready || !s->dirty_bits) {
        rc = pacs_err_set(err, PACS_ENOMEM, "blob store: out of memory");
        goto out;
    }
    s->dirfd = open(location, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->dirfd < 0) {
        rc = fs_errno(err, errno, "cannot open", location);
        goto out;
    }
    bool created;
    if ((rc = fs_mkdir(s->dirfd, FS_TMP_DIR, &created, err)) != 0)
        goto out;
    s->tmpfd = openat(s->dirfd, FS_TMP_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->tmpfd < 0) {
        rc = fs_errno(err, errno, "cannot open", FS_TMP_DIR);
        goto out;
    }
    *out = &s->base;
out:
    if (rc)
        fs_close(&s->base);
    return rc;
}

static int fs_put_begin(struct blob_store *bs, const char *key, struct blob_writer **out,
                        struct pacs_err *err)
{
    struct fs_store *s = (struct fs_store *)bs;
    struct blob_writer *w = NULL;
    char path[FS_PATH_MAX];
    struct stat st;
    int rc = 0;
    *out = NULL;
    if (!blob_key_valid(key))
        return pacs_err_set(err, PACS_EINVAL, "blob store: invalid key");
    /* Early refusal; put_commit still enforces it atomically. */
    fs_obj_path(key, path);
    if (fstatat(s->dirfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0)
        return pacs_err_set(err, PACS_EINVAL, "blob store: key %s exists", key);
    w = calloc(1, sizeof *w);
    if (!w)
        return pacs_err_set(err, PACS_ENOMEM, "blob store: out of memory");
    w->s = s;
    w->fd = -1;
    memcpy(w->key, key, strlen(key) + 1);
    /* pid + sequence keeps names unique across threads and processes; a
     * leftover of a crashed process with a reused pid is skipped by O_EXCL. */
    for (int tries = 0; tries < 100; tries++) {
        uint64_t seq = atomic_fetch_add(&s->seq, 1);
        int n = snprintf(w->tmpname, sizeof w->tmpname, "%s.%ld.%llu", key, (long)getpid(),
                         (unsigned long long)seq);
        if (n < 0 || (size_t)n >= sizeof w->tmpname) {
            rc = pacs_err_set(err, PACS_EINVAL, "blob store: temporary name too long");
            goto out;
        }
        w->fd = openat(s->tmpfd, w->tmpname, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                       FS_FILE_MODE);
        if (w->fd >= 0 || errno != EEXIST)
            break;
    }
    if (w->fd < 0) {
        rc = fs_errno(err, errno, "cannot create temporary", w->tmpname);
        goto out;
    }
    *out = w;
out:
    if (rc)
        free(w);
    return rc;
}

/* Writeback is started (not waited for) every this many bytes, so the
 * fsync in put_commit finds most of a large file already on its way to
 * the disk instead of all of it. */
#define FS_WRITEBACK_STEP (256u * 1024)

static int fs_put_write(struct blob_writer *w, const void *p, size_t n, struct pacs_err *err)
{
    if (fd_write_all(w->fd, p, n) != 0) {
        w->failed = true;
        return fs_errno(err, errno, "cannot write", w->tmpname);
    }
    w->written += n;
    if (w->written - w->flushed >= FS_WRITEBACK_STEP) {
        /* Advisory: a failure here only means the fsync does all the work. */
        (void)sync_file_range(w->fd, (off_t)w->flushed, (off_t)(w->written - w->flushed),
                              SYNC_FILE_RANGE_WRITE);
        w->flushed = w->written;
    }
    return 0;
}

static void fs_put_abort(struct blob_writer *w)
{
    if (!w)
        return;
    if (w->fd >= 0)
        close(w->fd);
    unlinkat(w->s->tmpfd, w->tmpname, 0);
    free(w);
}

/* Moves tmp/<name> to path, failing with EEXIST rather than replacing. */
static int fs_link_noreplace(struct fs_store *s, const char *tmpname, const char *path)
{
#ifdef SYS_renameat2
    if (syscall(SYS_renameat2, s->tmpfd, tmpname, s->dirfd, path, RENAME_NOREPLACE) == 0)
        return 0;
    /* EINVAL/ENOSYS: the filesystem or kernel has no RENAME_NOREPLACE. */
    if (errno != EINVAL && errno != ENOSYS)
        return -1;
#endif
    if (linkat(s->tmpfd, tmpname, s->dirfd, path, 0) != 0)
        return -1;
    unlinkat(s->tmpfd, tmpname, 0);
    return 0;
}

static int fs_put_commit(struct blob_writer *w, struct pacs_err *err)
{
    struct fs_store *s = w->s;
    char path[FS_PATH_MAX];
    uint32_t code = fs_prefix_code(w->key);
    int rc = 0;

    if (w->failed) {
        rc = pacs_err_set(err, PACS_EIO, "blob store: commit of %s after a failed write",
                          w->key);
        goto out;
    }
    /* Rename first, then fsync: on a journalling filesystem the file's
     * fsync then commits its data and its new name together, and the
     * directory fsync in sync() finds nothing left to do. A crash between
     * the two leaves a file no index row refers to (it cannot have one yet:
     * the archive commits the row after sync), removed at start-up. */
    if ((rc = fs_ensure_leaf(s, code, err)) != 0)
        goto out;
    fs_obj_path(w->key, path);
    if (fs_link_noreplace(s, w->tmpname, path) != 0) {
        if (errno == EEXIST)
            rc = pacs_err_set(err, PACS_EINVAL, "blob store: key %s exists", w->key);
        else
            rc = fs_errno(err, errno, "cannot rename to", path);
        goto out;
    }
    w->tmpname[0] = '\0';
    int fd = w->fd;
    w->fd = -1;
    if (fsync(fd) != 0) {
        rc = fs_errno(err, errno, "cannot fsync", path);
        close(fd);
        unlinkat(s->dirfd, path, 0);
        goto out;
    }
    if (close(fd) != 0) {
        rc = fs_errno(err, errno, "cannot close", path);
        unlinkat(s->dirfd, path, 0);
        goto out;
    }
    if (fs_mark_dirty(s, code) != 0) {
        /* Without a place in the dirty set the name must be made durable now. */
        char leaf[FS_PREFIX_LEN + 1];
        fs_leaf_dir(code, leaf);
        rc = fs_fsync_dir(s->dirfd, leaf, err);
    }
out:
    if (w->fd >= 0)
        close(w->fd);
    if (w->tmpname[0])
        unlinkat(s->tmpfd, w->tmpname, 0);
    free(w);
    return rc;
}

static int fs_sync(struct blob_store *bs, struct pacs_err *err)
{
    struct fs_store *s = (struct fs_store *)bs;
    uint32_t *list;
    size_t n, i = 0;
    int rc = 0;

    pthread_mutex_lock(&s->sync_mu);
    pthread_mutex_lock(&s->dirty_mu);
    list = s->dirty;
    n = s->n_dirty;
    s->dirty = NULL;
    s->n_dirty = s->cap_dirty = 0;
    for (size_t k = 0; k < n; k++)
        bit_clear(s->dirty_bits, list[k]);
    pthread_mutex_unlock(&s->dirty_mu);

    for (; i < n; i++) {
        char leaf[FS_PREFIX_LEN + 1];
        fs_leaf_dir(list[i], leaf);
        if ((rc = fs_fsync_dir(s->dirfd, leaf, err)) != 0)
            break;
    }
    /* Keep what was not synced for the next attempt. */
    for (; i < n; i++) {
        if (fs_mark_dirty(s, list[i]) != 0)
            break;
    }
    pthread_mutex_unlock(&s->sync_mu);
    free(list);
    return rc;
}

static int fs_get_open(struct blob_store *bs, const char *key, struct blob_reader **out,
                       uint64_t *size, struct pacs_err *err)
{
    struct fs_store *s = (struct fs_store *)bs;
    char path[FS_PATH_MAX];
    struct stat st;
    int fd = -1, rc = 0;
    *out = NULL;
    if (!blob_key_valid(key))
        return pacs_err_set(err, PACS_EINVAL, "blob store: invalid key");
    fs_obj_path(key, path);
    fd = openat(s->dirfd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return pacs_err_set(err, PACS_ENOTFOUND, "blob store: no key %s", key);
        return fs_errno(err, errno, "cannot open", path);
    }
    if (fstat(fd, &st) != 0) {
        rc = fs_errno(err, errno, "cannot stat", path);
        goto out;
    }
    struct blob_reader *r = malloc(sizeof *r);
    if (!r) {
        rc = pacs_err_set(err, PACS_ENOMEM, "blob store: out of memory");
        goto out;
    }
    r->fd = fd;
    fd = -1;
    if (size)
        *size = (uint64_t)st.st_size;
    *out = r;
out:
    if (fd >= 0)
        close(fd);
    return rc;
}

static int fs_get_read(struct blob_reader *r, uint64_t offset, void *p, size_t n, size_t *got,
                       struct pacs_err *err)
{
    *got = 0;
    if (offset > (uint64_t)INT64_MAX)
        return 0;
    for (;;) {
        ssize_t k = pread(r->fd, p, n, (off_t)offset);
        if (k >= 0) {
            *got = (size_t)k;
            return 0;
        }
        if (errno != EINTR)
            return fs_errno(err, errno, "cannot read", "object");
    }
}

static int fs_get_fd(struct blob_reader *r) { return r->fd; }

static void fs_get_close(struct blob_reader *r)
{
    if (!r)
        return;
    close(r->fd);
    free(r);
}

static int fs_del(struct blob_store *bs, const char *key, struct pacs_err *err)
{
    struct fs_store *s = (struct fs_store *)bs;
    char path[FS_PATH_MAX];
    if (!blob_key_valid(key))
        return pacs_err_set(err, PACS_EINVAL, "blob store: invalid key");
    fs_obj_path(key, path);
    if (unlinkat(s->dirfd, path, 0) != 0) {
        if (errno == ENOENT)
            return pacs_err_set(err, PACS_ENOTFOUND, "blob store: no key %s", key);
        return fs_errno(err, errno, "cannot remove", path);
    }
    return 0;
}

/* Opens directory `name` under `at` for reading; NULL with errno set. */
static DIR *fs_opendir_at(int at, const char *name)
{
    int fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    DIR *d = fdopendir(fd);
    if (!d)
        close(fd);
    return d;
}

static bool fs_dir_name_ok(const char *name)
{
    for (int i = 0; i < FS_PREFIX_LEN; i++) {
        char c = name[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == '_'))
            return false;
    }
    return name[FS_PREFIX_LEN] == '\0';
}

static int fs_list(struct blob_store *bs, int (*cb)(void *ctx, const char *key), void *ctx,
                   struct pacs_err *err)
{
    struct fs_store *s = (struct fs_store *)bs;
    DIR *top = NULL, *leaf = NULL;
    struct dirent *a, *c;
    int rc = 0;

    top = fs_opendir_at(s->dirfd, ".");
    if (!top)
        return fs_errno(err, errno, "cannot list", ".");
    while ((a = readdir(top)) != NULL) {
        if (!fs_dir_name_ok(a->d_name))
            continue; /* also skips tmp/ */
        leaf = fs_opendir_at(dirfd(top), a->d_name);
        if (!leaf) {
            if (errno == ENOTDIR || errno == ENOENT)
                continue;
            rc = fs_errno(err, errno, "cannot list", a->d_name);
            goto out;
        }
        while ((c = readdir(leaf)) != NULL) {
            char p[FS_PREFIX_LEN];
            if (!blob_key_valid(c->d_name))
                continue;
            fs_prefix_chars(c->d_name, p);
            if (memcmp(p, a->d_name, FS_PREFIX_LEN) != 0)
                continue;
            if ((rc = cb(ctx, c->d_name)) != 0)
                goto out;
        }
        closedir(leaf);
        leaf = NULL;
    }
out:
    if (leaf)
        closedir(leaf);
    closedir(top);
    return rc;
}

static int fs_cleanup_temp(struct blob_store *bs, unsigned *removed, struct pacs_err *err)
{
    struct fs_store *s = (struct fs_store *)bs;
    struct dirent *e;
    unsigned count = 0;
    int rc = 0;
    DIR *d = fs_opendir_at(s->tmpfd, ".");
    if (!d) {
        rc = fs_errno(err, errno, "cannot list", FS_TMP_DIR);
        goto out;
    }
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (unlinkat(s->tmpfd, e->d_name, 0) != 0) {
            if (errno == ENOENT)
                continue;
            rc = fs_errno(err, errno, "cannot remove temporary", e->d_name);
            goto out;
        }
        count++;
    }
out:
    if (d)
        closedir(d);
    if (removed)
        *removed = count;
    return rc;
}

const struct blob_ops blob_fs_ops = {
    .name = "fs",
    .open = fs_open,
    .close = fs_close,
    .put_begin = fs_put_begin,
    .put_write = fs_put_write,
    .put_commit = fs_put_commit,
    .put_abort = fs_put_abort,
    .sync = fs_sync,
    .get_open = fs_get_open,
    .get_read = fs_get_read,
    .get_fd = fs_get_fd,
    .get_close = fs_get_close,
    .del = fs_del,
    .list = fs_list,
    .cleanup_temp = fs_cleanup_temp,
};
