/* Unit tests: the filesystem blob store (store/blob_fs.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/blob.h"

static const struct blob_ops *ops = &blob_fs_ops;

/* snprintf that must not truncate (aborts otherwise: also safe in threads);
 * returns the length. */
static size_t fmt(char *buf, size_t cap, const char *f, ...) __attribute__((format(printf, 3, 4)));
static size_t fmt(char *buf, size_t cap, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(buf, cap, f, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) {
        fprintf(stderr, "fmt: \"%s\" does not fit in %zu bytes\n", f, cap);
        abort();
    }
    return (size_t)n;
}


struct fixture {
    char dir[64];
    struct blob_store *s;
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    struct pacs_err err;
    if (!f)
        return -1;
    memcpy(f->dir, "/tmp/test_blob_fs.XXXXXX", sizeof "/tmp/test_blob_fs.XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    /* A directory below the temporary one: open() creates it. */
    size_t n = strlen(f->dir);
    memcpy(f->dir + n, "/store", sizeof "/store");
    if (ops->open(f->dir, &f->s, &err) != 0) {
        fprintf(stderr, "open: %s\n", err.msg);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    ops->close(f->s);
    f->dir[strlen(f->dir) - sizeof "/store" + 1] = '\0';
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void put_bytes(struct blob_store *s, const char *key, const void *p, size_t n)
{
    struct blob_writer *w = NULL;
    struct pacs_err err;
    assert_int_equal(ops->put_begin(s, key, &w, &err), 0);
    assert_int_equal(ops->put_write(w, p, n, &err), 0);
    assert_int_equal(ops->put_commit(w, &err), 0);
}

/* The whole object in a heap buffer (caller frees). */
static uint8_t *get_bytes(struct blob_store *s, const char *key, size_t *len)
{
    struct blob_reader *r = NULL;
    struct pacs_err err;
    uint64_t size = 0;
    assert_int_equal(ops->get_open(s, key, &r, &size, &err), 0);
    uint8_t *buf = malloc(size + 1);
    assert_non_null(buf);
    uint64_t off = 0;
    for (;;) {
        size_t got = 0;
        size_t want = size + 1 - off < 1000003 ? (size_t)(size + 1 - off) : 1000003;
        assert_int_equal(ops->get_read(r, off, buf + off, want, &got, &err), 0);
        if (got == 0)
            break;
        off += got;
        assert_true(off <= size);
    }
    assert_int_equal(off, size);
    ops->get_close(r);
    *len = (size_t)size;
    return buf;
}

static unsigned count_dir(const char *path)
{
    DIR *d = opendir(path);
    unsigned n = 0;
    struct dirent *e;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    }
    closedir(d);
    return n;
}

static unsigned count_tmp(const struct fixture *f)
{
    char p[128];
    fmt(p, sizeof p, "%s/tmp", f->dir);
    return count_dir(p);
}

static void test_round_trip(void **state)
{
    struct fixture *f = *state;
    struct pacs_err err;
    struct blob_reader *r = NULL;
    uint64_t size = 0;
    size_t len = 0;

    put_bytes(f->s, "0123abcd", "hello, blob", 11);
    assert_int_equal(ops->sync(f->s, &err), 0);
    uint8_t *b = get_bytes(f->s, "0123abcd", &len);
    assert_int_equal(len, 11);
    assert_memory_equal(b, "hello, blob", 11);
    free(b);

    /* The documented layout: <dir>/01/<key>. */
    char p[160];
    struct stat st;
    fmt(p, sizeof p, "%s/01/0123abcd", f->dir);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_size, 11);
    assert_int_equal(st.st_mode & 0777, 0640);

    assert_int_equal(ops->get_open(f->s, "0123abcd", &r, &size, &err), 0);
    assert_true(ops->get_fd(r) >= 0);
    char c[4];
    size_t got = 9;
    assert_int_equal(ops->get_read(r, 7, c, sizeof c, &got, &err), 0);
    assert_int_equal(got, 4);
    assert_memory_equal(c, "blob", 4);
    assert_int_equal(ops->get_read(r, 11, c, sizeof c, &got, &err), 0);
    assert_int_equal(got, 0);
    ops->get_close(r);

    /* Empty objects and short keys (padded directory names). */
    put_bytes(f->s, "z", "", 0);
    b = get_bytes(f->s, "z", &len);
    assert_int_equal(len, 0);
    free(b);
    fmt(p, sizeof p, "%s/z_/z", f->dir);
    assert_int_equal(stat(p, &st), 0);

    assert_int_equal(ops->del(f->s, "0123abcd", &err), 0);
    assert_int_equal(ops->get_open(f->s, "0123abcd", &r, &size, &err), PACS_ENOTFOUND);
    assert_int_equal(err.code, PACS_ENOTFOUND);
    assert_int_equal(ops->del(f->s, "0123abcd", &err), PACS_ENOTFOUND);
}

static void test_large_streamed(void **state)
{
    struct fixture *f = *state;
    struct blob_writer *w = NULL;
    struct pacs_err err;
    const size_t total = 7u * 1024 * 1024 + 12345, chunk = 65521;
    uint8_t *src = malloc(total);
    assert_non_null(src);
    for (size_t i = 0; i < total; i++)
        src[i] = (uint8_t)(i * 2654435761u >> 13);
    assert_int_equal(ops->put_begin(f->s, "ffee0011deadbeef", &w, &err), 0);
    for (size_t off = 0; off < total; off += chunk) {
        size_t n = total - off < chunk ? total - off : chunk;
        assert_int_equal(ops->put_write(w, src + off, n, &err), 0);
    }
    /* Not visible before commit. */
    struct blob_reader *r = NULL;
    uint64_t size;
    assert_int_equal(ops->get_open(f->s, "ffee0011deadbeef", &r, &size, &err), PACS_ENOTFOUND);
    assert_int_equal(ops->put_commit(w, &err), 0);
    assert_int_equal(ops->sync(f->s, &err), 0);
    size_t len = 0;
    uint8_t *b = get_bytes(f->s, "ffee0011deadbeef", &len);
    assert_int_equal(len, total);
    assert_memory_equal(b, src, total);
    free(b);
    free(src);
    assert_int_equal(count_tmp(f), 0);
}

static void test_no_replace(void **state)
{
    struct fixture *f = *state;
    struct blob_writer *w1 = NULL, *w2 = NULL, *w3 = NULL;
    struct pacs_err err;
    size_t len;

    put_bytes(f->s, "aaaa1111", "first", 5);
    assert_int_equal(ops->put_begin(f->s, "aaaa1111", &w1, &err), PACS_EINVAL);
    assert_null(w1);

    /* Two puts of one key racing: the second commit fails, nothing replaced. */
    assert_int_equal(ops->put_begin(f->s, "bbbb2222", &w2, &err), 0);
    assert_int_equal(ops->put_begin(f->s, "bbbb2222", &w3, &err), 0);
    assert_int_equal(ops->put_write(w2, "two", 3, &err), 0);
    assert_int_equal(ops->put_write(w3, "three", 5, &err), 0);
    assert_int_equal(ops->put_commit(w2, &err), 0);
    assert_int_equal(ops->put_commit(w3, &err), PACS_EINVAL);
    uint8_t *b = get_bytes(f->s, "bbbb2222", &len);
    assert_int_equal(len, 3);
    assert_memory_equal(b, "two", 3);
    free(b);
    b = get_bytes(f->s, "aaaa1111", &len);
    assert_memory_equal(b, "first", 5);
    free(b);
    assert_int_equal(count_tmp(f), 0);
}

static int count_cb(void *ctx, const char *key)
{
    (void)key;
    (*(unsigned *)ctx)++;
    return 0;
}

static void test_abort(void **state)
{
    struct fixture *f = *state;
    struct blob_writer *w = NULL;
    struct blob_reader *r = NULL;
    struct pacs_err err;
    uint64_t size;
    unsigned n = 0;

    assert_int_equal(ops->put_begin(f->s, "cafe", &w, &err), 0);
    assert_int_equal(count_tmp(f), 1);
    assert_int_equal(ops->put_write(w, "partial", 7, &err), 0);
    ops->put_abort(w);
    assert_int_equal(count_tmp(f), 0);
    assert_int_equal(ops->get_open(f->s, "cafe", &r, &size, &err), PACS_ENOTFOUND);
    assert_int_equal(ops->list(f->s, count_cb, &n, &err), 0);
    assert_int_equal(n, 0);
    /* The key is still free. */
    put_bytes(f->s, "cafe", "x", 1);
}

struct seen {
    char keys[64][BLOB_KEY_MAX + 1];
    unsigned n;
    unsigned stop_at;
};

static int seen_cb(void *ctx, const char *key)
{
    struct seen *s = ctx;
    if (s->n < 64)
        memcpy(s->keys[s->n], key, strlen(key) + 1);
    s->n++;
    return s->stop_at && s->n == s->stop_at ? 42 : 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(a, b); }

static void test_list(void **state)
{
    struct fixture *f = *state;
    struct pacs_err err;
    static const char *const keys[] = {
        "a", "ab", "abc", "abcd", "abcde", "0000", "00000000000000000000000000000000",
        "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", "9f86d081884c7d65",
    };
    const size_t nk = sizeof keys / sizeof keys[0];
    struct seen s;
    memset(&s, 0, sizeof s);
    for (size_t i = 0; i < nk; i++)
        put_bytes(f->s, keys[i], keys[i], strlen(keys[i]));
    /* An unfinished put is not listed. */
    struct blob_writer *w = NULL;
    assert_int_equal(ops->put_begin(f->s, "1234", &w, &err), 0);

    assert_int_equal(ops->list(f->s, seen_cb, &s, &err), 0);
    assert_int_equal(s.n, nk);
    qsort(s.keys, s.n, sizeof s.keys[0], cmp_str);
    const char *sorted[sizeof keys / sizeof keys[0]];
    memcpy(sorted, keys, sizeof keys);
    for (size_t i = 0; i < nk; i++) {
        for (size_t j = i + 1; j < nk; j++) {
            if (strcmp(sorted[j], sorted[i]) < 0) {
                const char *t = sorted[i];
                sorted[i] = sorted[j];
                sorted[j] = t;
            }
        }
    }
    for (size_t i = 0; i < nk; i++)
        assert_string_equal(s.keys[i], sorted[i]);

    /* A non-zero callback result stops the walk and is returned. */
    memset(&s, 0, sizeof s);
    s.stop_at = 3;
    assert_int_equal(ops->list(f->s, seen_cb, &s, &err), 42);
    assert_int_equal(s.n, 3);
    ops->put_abort(w);
}

static void test_cleanup_temp(void **state)
{
    struct fixture *f = *state;
    struct pacs_err err;
    struct blob_writer *w = NULL;
    unsigned removed = 99, n = 0;
    char p[160];

    put_bytes(f->s, "beef", "kept", 4);
    /* A crash mid-put: an open temporary that is never committed... */
    assert_int_equal(ops->put_begin(f->s, "dead", &w, &err), 0);
    assert_int_equal(ops->put_write(w, "lost", 4, &err), 0);
    /* ...and leftovers of an earlier process. */
    for (int i = 0; i < 3; i++) {
        fmt(p, sizeof p, "%s/tmp/leftover%d.1234.7", f->dir, i);
        int fd = open(p, O_CREAT | O_WRONLY, 0600);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, "junk", 4), 4);
        close(fd);
    }
    assert_int_equal(count_tmp(f), 4);
    assert_int_equal(ops->list(f->s, count_cb, &n, &err), 0);
    assert_int_equal(n, 1);

    assert_int_equal(ops->cleanup_temp(f->s, &removed, &err), 0);
    assert_int_equal(removed, 4);
    assert_int_equal(count_tmp(f), 0);
    size_t len;
    uint8_t *b = get_bytes(f->s, "beef", &len);
    assert_memory_equal(b, "kept", 4);
    free(b);
    assert_int_equal(ops->cleanup_temp(f->s, &removed, &err), 0);
    assert_int_equal(removed, 0);
    /* The simulated crashed writer is only freed here; its file is gone. */
    ops->put_abort(w);
}

static void test_invalid_keys(void **state)
{
    struct fixture *f = *state;
    struct pacs_err err;
    struct blob_writer *w = NULL;
    struct blob_reader *r = NULL;
    uint64_t size;
    char k65[66], k64[65];
    memset(k65, 'a', 65);
    k65[65] = '\0';
    memset(k64, '7', 64);
    k64[64] = '\0';

    static const char *const bad[] = {"../x", "", "ABC", "abC", "a/b", "a b", ".", "..",
                                      "tmp/x", "a-b", "a_b", "\xc3\xa9"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_false(blob_key_valid(bad[i]));
        assert_int_equal(ops->put_begin(f->s, bad[i], &w, &err), PACS_EINVAL);
        assert_null(w);
        assert_int_equal(ops->get_open(f->s, bad[i], &r, &size, &err), PACS_EINVAL);
        assert_int_equal(ops->del(f->s, bad[i], &err), PACS_EINVAL);
    }
    assert_false(blob_key_valid(NULL));
    assert_false(blob_key_valid(k65));
    assert_int_equal(ops->put_begin(f->s, k65, &w, &err), PACS_EINVAL);
    assert_true(blob_key_valid(k64));
    assert_true(blob_key_valid("0"));
    put_bytes(f->s, k64, "64", 2);
    size_t len;
    uint8_t *b = get_bytes(f->s, k64, &len);
    assert_int_equal(len, 2);
    free(b);
}

#define N_THREADS 8
#define PUTS_PER_THREAD 40

struct worker {
    struct blob_store *s;
    int id;
    int failures;
};

static void worker_key(int t, int i, char out[33])
{
    fmt(out, 33, "%02x%04x%026x", (unsigned)t, (unsigned)i, (unsigned)(t * 1000 + i));
}

static void *put_worker(void *arg)
{
    struct worker *wk = arg;
    struct pacs_err err;
    for (int i = 0; i < PUTS_PER_THREAD; i++) {
        char key[33], body[64];
        struct blob_writer *w = NULL;
        worker_key(wk->id, i, key);
        size_t n = fmt(body, sizeof body, "body of %s", key);
        if (ops->put_begin(wk->s, key, &w, &err) != 0 ||
            ops->put_write(w, body, n, &err) != 0 || ops->put_commit(w, &err) != 0) {
            wk->failures++;
            continue;
        }
        /* Every few puts a sync, as the archive's group commit does. */
        if (i % 8 == 7 && ops->sync(wk->s, &err) != 0)
            wk->failures++;
    }
    return NULL;
}

static void test_concurrent_puts(void **state)
{
    struct fixture *f = *state;
    struct pacs_err err;
    pthread_t th[N_THREADS];
    struct worker wk[N_THREADS];
    unsigned n = 0;

    for (int t = 0; t < N_THREADS; t++) {
        wk[t] = (struct worker){.s = f->s, .id = t};
        assert_int_equal(pthread_create(&th[t], NULL, put_worker, &wk[t]), 0);
    }
    for (int t = 0; t < N_THREADS; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(wk[t].failures, 0);
    }
    assert_int_equal(ops->sync(f->s, &err), 0);
    assert_int_equal(ops->sync(f->s, &err), 0); /* nothing dirty: a no-op */
    assert_int_equal(ops->list(f->s, count_cb, &n, &err), 0);
    assert_int_equal(n, N_THREADS * PUTS_PER_THREAD);
    for (int t = 0; t < N_THREADS; t++) {
        for (int i = 0; i < PUTS_PER_THREAD; i++) {
            char key[33], body[64];
            size_t len;
            worker_key(t, i, key);
            size_t k = fmt(body, sizeof body, "body of %s", key);
            uint8_t *b = get_bytes(f->s, key, &len);
            assert_int_equal(len, k);
            assert_memory_equal(b, body, len);
            free(b);
        }
    }
    assert_int_equal(count_tmp(f), 0);
}

static void test_reopen(void **state)
{
    struct fixture *f = *state;
    struct pacs_err err;
    size_t len;
    put_bytes(f->s, "0a0b0c", "persist", 7);
    assert_int_equal(ops->sync(f->s, &err), 0);
    ops->close(f->s);
    f->s = NULL;
    assert_int_equal(ops->open(f->dir, &f->s, &err), 0);
    uint8_t *b = get_bytes(f->s, "0a0b0c", &len);
    assert_int_equal(len, 7);
    free(b);
    assert_string_equal(ops->name, "fs");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_streamed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_replace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cleanup_temp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_puts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
