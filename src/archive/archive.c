/* archive.c - opening the stores, start-up recovery, and the group committer.
 *
 * Durability order, per batch: every blob was fsynced by its own put_commit;
 * the committer then makes the blobs' names durable (blobs->sync) and only
 * then commits the index transaction, so a committed row always names a
 * durable file. Obsolete blobs are deleted after the transaction, so a crash
 * can leave a file without a row (removed at the next start) but never a row
 * without its file.
 */
#include "archive/archive.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "archive/archive_priv.h"
#include "util/dynbuf.h"
#include "util/log.h"

struct commit_req {
    const struct index_record *rec;
    enum index_insert_outcome outcome;
    struct pacs_err err;
    bool done;
    pthread_cond_t cv; /* signalled under archive.mu when done */
    struct commit_req *next;
};

struct archive {
    const struct pacs_config *cfg;
    struct blob_store *blobs;
    struct index *ix;

    pthread_mutex_t mu;
    pthread_cond_t work;          /* the committer waits here for requests */
    struct commit_req *head, *tail;
    bool stopping;                /* archive_close: drain, then exit */
    bool closed;                  /* no committer any more */
    pthread_t thread;
    bool thread_started;
    struct archive_commit_stats stats;

    /* Committer-only scratch, allocated once: the batch's records, their
     * results and the keys to delete afterwards. */
    struct commit_req *batch[ARCHIVE_BATCH_MAX];
    struct index_record *recs;
    struct index_insert_result *results;
};

/* --- start-up ------------------------------------------------------------ */

/* mkdir -p with mode for every directory it creates. */
static int make_dirs(const char *path, mode_t mode, struct pacs_err *err)
{
    char buf[PATH_MAX];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return pacs_err_set(err, PACS_EINVAL, "data_dir '%s': empty or too long", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, mode) != 0 && errno != EEXIST)
            return pacs_err_set(err, PACS_EIO, "cannot create directory '%s': %s", buf,
                                strerror(errno));
        buf[i] = c;
    }
    struct stat sb;
    if (stat(path, &sb) != 0)
        return pacs_err_set(err, PACS_EIO, "data_dir '%s': %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return pacs_err_set(err, PACS_EIO, "data_dir '%s' is not a directory", path);
    return 0;
}

struct orphan_scan {
    struct index *ix;
    struct dynbuf keys; /* orphan keys, NUL-separated */
    unsigned seen;
    int rc;
    struct pacs_err err;
};

static int collect_orphan(void *ctx, const char *key)
{
    struct orphan_scan *o = ctx;
    bool used = false;
    o->seen++;
    int rc = o->ix->ops->has_blob(o->ix, key, &used, &o->err);
    if (rc == 0 && !used)
        rc = dynbuf_append(&o->keys, key, strlen(key) + 1);
    if (rc) {
        if (!o->err.code)
            pacs_err_set(&o->err, rc, "out of memory listing orphan blobs");
        o->rc = rc;
        return rc;
    }
    return 0;
}

/* Deletes blobs no row refers to: the files of puts that committed but
 * whose batch never did (crash), or whose deletion was interrupted.
 * Collected first and deleted after list() so the listing is never walked
 * while it changes. */
static int remove_orphans(struct archive *a, unsigned *removed, struct pacs_err *err)
{
    struct orphan_scan o = { .ix = a->ix };
    dynbuf_init(&o.keys, 0);
    int rc = a->blobs->ops->list(a->blobs, collect_orphan, &o, err);
    if (o.rc) {
        rc = o.rc;
        if (err)
            *err = o.err;
    }
    if (rc)
        goto out;
    for (size_t at = 0; at < o.keys.len;) {
        const char *key = (const char *)o.keys.data + at;
        struct pacs_err derr = { 0 };
        int drc = a->blobs->ops->del(a->blobs, key, &derr);
        if (drc == 0)
            (*removed)++;
        else if (drc != PACS_ENOTFOUND)
            log_warn("archive: cannot remove orphan blob %s: %s", key, derr.msg);
        at += strlen(key) + 1;
    }
    log_info("archive: %u blobs checked, %u orphans removed", o.seen, *removed);
out:
    dynbuf_free(&o.keys);
    return rc;
}

int archive_random_key(char key[33], struct pacs_err *err)
{
    uint8_t r[16];
    size_t got = 0;
    while (got < sizeof r) {
        ssize_t n = getrandom(r + got, sizeof r - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return pacs_err_set(err, PACS_EIO, "getrandom: %s", strerror(errno));
        }
        got += (size_t)n;
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof r; i++) {
        key[2 * i] = hex[r[i] >> 4];
        key[2 * i + 1] = hex[r[i] & 15];
    }
    key[32] = '\0';
    return 0;
}

static int ignore_row(void *ctx, const struct index_row *row)
{
    (void)ctx;
    (void)row;
    return 0;
}

int archive_check_index(struct archive *a, struct pacs_err *err)
{
    /* At most one row: the cost does not grow with the archive (stats()
     * counts every row). */
    struct index_query q = {.level = INDEX_PATIENT, .limit = 1};
    return a->ix->ops->find(a->ix, &q, ignore_row, NULL, err);
}

int archive_check_storage(struct archive *a, struct pacs_err *err)
{
    static const char data[] = "pacsd storage probe\n";
    char rnd[33], key[64];
    struct blob_writer *w = NULL;
    struct blob_store *bs = a->blobs;
    int rc = archive_random_key(rnd, err);
    if (rc)
        return rc;
    /* Not hex: a probe key never shares a directory with an instance. */
    snprintf(key, sizeof key, "healthprobe%.16s", rnd);
    if ((rc = bs->ops->put_begin(bs, key, &w, err)) != 0)
        return rc;
    if ((rc = bs->ops->put_write(w, data, sizeof data - 1, err)) != 0) {
        bs->ops->put_abort(w);
        return rc;
    }
    if ((rc = bs->ops->put_commit(w, err)) != 0)
        return rc;
    return bs->ops->del(bs, key, err);
}

/* --- the committer ------------------------------------------------------- */

static void delete_blob(struct archive *a, const char *key)
{
    struct pacs_err e = { 0 };
    int rc = a->blobs->ops->del(a->blobs, key, &e);
    /* A leftover is only wasted space: the next start removes it. */
    if (rc && rc != PACS_ENOTFOUND)
        log_warn("archive: cannot delete obsolete blob %s: %s", key, e.msg);
}

/* One batch: sync names, one transaction, outcomes, then deletions. */
static void commit_batch(struct archive *a, size_t n)
{
    struct pacs_err err = { 0 };
    for (size_t i = 0; i < n; i++)
        a->recs[i] = *a->batch[i]->rec;

    static const enum index_dup_policy dup_map[] = {
        [CONFIG_DUP_REPLACE] = INDEX_DUP_REPLACE,
        [CONFIG_DUP_KEEP] = INDEX_DUP_KEEP,
        [CONFIG_DUP_REJECT] = INDEX_DUP_REJECT,
    };
    enum config_dup_policy p = a->cfg->dicom.duplicates;
    enum index_dup_policy dup = (unsigned)p < sizeof dup_map / sizeof dup_map[0]
                                    ? dup_map[p] : INDEX_DUP_REPLACE;

    int rc = a->blobs->ops->sync(a->blobs, &err);
    if (rc == 0)
        rc = a->ix->ops->insert_batch(a->ix, a->recs, n, dup, a->results, &err);
    if (rc) {
        log_error("archive: batch of %zu instances not committed: %s", n, err.msg);
        for (size_t i = 0; i < n; i++) {
            a->results[i].outcome = INDEX_FAILED;
            a->results[i].old_blob_key[0] = '\0';
            a->results[i].err = err;
        }
    }

    /* Obsolete blobs go before the waiters wake (their records hold the
     * keys, and a caller then sees the store as the outcome left it): only
     * after the commit, so no row ever lacks its file. */
    for (size_t i = 0; i < n; i++) {
        enum index_insert_outcome o = a->results[i].outcome;
        if (o == INDEX_INSERTED)
            continue;
        if (o != INDEX_REPLACED)
            delete_blob(a, a->recs[i].blob_key);
        else if (a->results[i].old_blob_key[0])
            delete_blob(a, a->results[i].old_blob_key);
    }

    pthread_mutex_lock(&a->mu);
    a->stats.batches++;
    a->stats.records += n;
    if (n > a->stats.max_batch)
        a->stats.max_batch = n;
    if (rc)
        a->stats.failed_batches++;
    for (size_t i = 0; i < n; i++) {
        struct commit_req *r = a->batch[i];
        r->outcome = a->results[i].outcome;
        r->err = a->results[i].err;
        if (r->outcome == INDEX_FAILED && !r->err.code)
            pacs_err_set(&r->err, PACS_EIO, "index refused the instance");
        r->done = true;
        pthread_cond_signal(&r->cv);
    }
    pthread_mutex_unlock(&a->mu);
}

static void *committer(void *arg)
{
    struct archive *a = arg;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->head && !a->stopping)
            pthread_cond_wait(&a->work, &a->mu);
        if (!a->head)
            break; /* stopping and drained */
        /* Everything queued so far goes into this batch; what arrives while
         * it commits waits for the next one. */
        size_t n = 0;
        while (a->head && n < ARCHIVE_BATCH_MAX) {
            a->batch[n++] = a->head;
            a->head = a->head->next;
        }
        if (!a->head)
            a->tail = NULL;
        pthread_mutex_unlock(&a->mu);
        commit_batch(a, n);
        pthread_mutex_lock(&a->mu);
    }
    a->closed = true;
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

int archive_commit(struct archive *a, const struct index_record *rec,
                   enum index_insert_outcome *outcome, struct pacs_err *err)
{
    struct commit_req r = { .rec = rec };
    if (pthread_cond_init(&r.cv, NULL) != 0)
        return pacs_err_set(err, PACS_ENOMEM, "cannot create a condition variable");
    int rc = 0;
    pthread_mutex_lock(&a->mu);
    if (a->closed || a->stopping) {
        pthread_mutex_unlock(&a->mu);
        rc = pacs_err_set(err, PACS_EINVAL, "archive is closing");
        goto out;
    }
    if (a->tail)
        a->tail->next = &r;
    else
        a->head = &r;
    a->tail = &r;
    pthread_cond_signal(&a->work);
    while (!r.done)
        pthread_cond_wait(&r.cv, &a->mu);
    pthread_mutex_unlock(&a->mu);
    *outcome = r.outcome;
    if (err)
        *err = r.err;
out:
    pthread_cond_destroy(&r.cv);
    return rc;
}

void archive_get_commit_stats(struct archive *a, struct archive_commit_stats *out)
{
    pthread_mutex_lock(&a->mu);
    *out = a->stats;
    pthread_mutex_unlock(&a->mu);
}

/* --- open / close -------------------------------------------------------- */

static void free_archive(struct archive *a)
{
    if (a->ix)
        a->ix->ops->close(a->ix);
    if (a->blobs)
        a->blobs->ops->close(a->blobs);
    free(a->recs);
    free(a->results);
    pthread_cond_destroy(&a->work);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

int archive_open(const struct pacs_config *cfg, struct archive **out,
                 struct archive_startup *st, struct pacs_err *err)
{
    struct archive_startup local = { 0 };
    char path[PATH_MAX];
    int rc, pn;
    *out = NULL;
    if (!st)
        st = &local;
    memset(st, 0, sizeof *st);
    if (!cfg || !cfg->data_dir)
        return pacs_err_set(err, PACS_EINVAL, "archive_open: no data_dir");

    struct archive *a = calloc(1, sizeof *a);
    if (!a)
        return pacs_err_set(err, PACS_ENOMEM, "out of memory");
    a->cfg = cfg;
    if (pthread_mutex_init(&a->mu, NULL) != 0) {
        free(a);
        return pacs_err_set(err, PACS_ENOMEM, "cannot create a mutex");
    }
    if (pthread_cond_init(&a->work, NULL) != 0) {
        pthread_mutex_destroy(&a->mu);
        free(a);
        return pacs_err_set(err, PACS_ENOMEM, "cannot create a condition variable");
    }
    a->recs = calloc(ARCHIVE_BATCH_MAX, sizeof *a->recs);
    a->results = calloc(ARCHIVE_BATCH_MAX, sizeof *a->results);
    if (!a->recs || !a->results) {
        rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
        goto out;
    }

    if ((rc = make_dirs(cfg->data_dir, 0750, err)))
        goto out;
    pn = snprintf(path, sizeof path, "%s/files", cfg->data_dir);
    if (pn < 0 || (size_t)pn >= sizeof path) {
        rc = pacs_err_set(err, PACS_EINVAL, "data_dir '%s' is too long", cfg->data_dir);
        goto out;
    }
    if ((rc = blob_fs_ops.open(path, &a->blobs, err)))
        goto out;
    pn = snprintf(path, sizeof path, "%s/index.db", cfg->data_dir);
    if (pn < 0 || (size_t)pn >= sizeof path) {
        rc = pacs_err_set(err, PACS_EINVAL, "data_dir '%s' is too long", cfg->data_dir);
        goto out;
    }
    if ((rc = index_sqlite_ops.open(path, &a->ix, err)))
        goto out;

    if ((rc = a->blobs->ops->cleanup_temp(a->blobs, &st->temp_removed, err)))
        goto out;
    if (st->temp_removed)
        log_info("archive: removed %u temporary files of unfinished stores", st->temp_removed);
    if ((rc = remove_orphans(a, &st->orphans_removed, err)))
        goto out;

    if (pthread_create(&a->thread, NULL, committer, a) != 0) {
        rc = pacs_err_set(err, PACS_ENOMEM, "cannot start the committer thread");
        goto out;
    }
    a->thread_started = true;
    log_info("archive: open at %s", cfg->data_dir);
    *out = a;
    a = NULL;
out:
    if (a)
        free_archive(a);
    return rc;
}

void archive_close(struct archive *a)
{
    if (!a)
        return;
    if (a->thread_started) {
        pthread_mutex_lock(&a->mu);
        a->stopping = true;
        pthread_cond_signal(&a->work);
        pthread_mutex_unlock(&a->mu);
        pthread_join(a->thread, NULL);
    }
    free_archive(a);
}

struct index *archive_index(struct archive *a)
{
    return a->ix;
}

struct blob_store *archive_blobs(struct archive *a)
{
    return a->blobs;
}

const struct pacs_config *archive_config(struct archive *a)
{
    return a->cfg;
}
