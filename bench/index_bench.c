/* index_bench - the SQLite index on 100,000 instances (1,000 patients x 2
 * studies x 5 series x 10 instances): time to fill it in batches as the
 * archive's group commit does, then latency of the C-FIND shapes that matter,
 * foremost a study-level query by PatientID with the computed attributes
 * (NumberOfStudyRelated..., ModalitiesInStudy). Prints p50/p99 in
 * microseconds. Usage: index_bench [DIR] [QUERIES]  (DIR: where the database
 * goes, default a fresh directory under /tmp, removed afterwards) */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dicom/dict.h"
#include "store/index.h"

#define N_PATIENTS 1000
#define N_STUDIES 2
#define N_SERIES 5
#define N_INSTANCES 10
#define N_TOTAL (N_PATIENTS * N_STUDIES * N_SERIES * N_INSTANCES)
#define BATCH 500

static const struct index_ops *ops = &index_sqlite_ops;

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


static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* CPU time of this thread: what a query costs whatever else the machine
 * is running (wall-clock p99 on a loaded machine measures the scheduler). */
static double cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Strings of one record, kept while its batch is inserted. */
struct rec_text {
    char pid[16], name[32], study[48], date[16], time[16], acc[16], series[48], sop[64],
        num[8], blob[40], meta[256];
};

static int col(uint32_t tag)
{
    int c = index_tag_find(tag);
    if (c < 0) {
        fprintf(stderr, "index_bench: tag %08x is not a main tag\n", tag);
        exit(1);
    }
    return c;
}

static void make_record(unsigned n, struct rec_text *t, struct index_record *r)
{
    unsigned inst = n % N_INSTANCES, se = n / N_INSTANCES % N_SERIES,
             st = n / (N_INSTANCES * N_SERIES) % N_STUDIES,
             pt = n / (N_INSTANCES * N_SERIES * N_STUDIES);
    static const char *const mods[N_SERIES] = {"CT", "CT", "MR", "SR", "PR"};
    memset(r, 0, sizeof *r);
    fmt(t->pid, sizeof t->pid, "PID%06u", pt);
    fmt(t->name, sizeof t->name, "Patient%u^Test", pt);
    fmt(t->study, sizeof t->study, "2.25.1.%u.%u", pt, st);
    fmt(t->date, sizeof t->date, "2024%02u%02u", 1 + pt % 12, 1 + (pt + st) % 28);
    fmt(t->time, sizeof t->time, "%02u%02u00", pt % 24, st * 7 % 60);
    fmt(t->acc, sizeof t->acc, "ACC%06u%u", pt, st);
    fmt(t->series, sizeof t->series, "2.25.1.%u.%u.%u", pt, st, se);
    fmt(t->sop, sizeof t->sop, "2.25.1.%u.%u.%u.%u", pt, st, se, inst);
    fmt(t->num, sizeof t->num, "%u", inst + 1);
    fmt(t->blob, sizeof t->blob, "%032x", n * 2654435761u);
    size_t ml = fmt(t->meta, sizeof t->meta,
                      "{\"00080018\":{\"vr\":\"UI\",\"Value\":[\"%s\"]},"
                      "\"00100020\":{\"vr\":\"LO\",\"Value\":[\"%s\"]}}",
                      t->sop, t->pid);
    r->values[col(DCM_TAG(0x0010, 0x0020))] = t->pid;
    r->values[col(DCM_TAG(0x0010, 0x0010))] = t->name;
    r->values[col(DCM_TAG(0x0010, 0x0040))] = pt % 2 ? "F" : "M";
    r->values[col(DCM_TAG(0x0020, 0x000D))] = t->study;
    r->values[col(DCM_TAG(0x0008, 0x0020))] = t->date;
    r->values[col(DCM_TAG(0x0008, 0x0030))] = t->time;
    r->values[col(DCM_TAG(0x0008, 0x0050))] = t->acc;
    r->values[col(DCM_TAG(0x0008, 0x1030))] = "Benchmark study";
    r->values[col(DCM_TAG(0x0020, 0x000E))] = t->series;
    r->values[col(DCM_TAG(0x0008, 0x0060))] = mods[se];
    r->values[col(DCM_TAG(0x0008, 0x0018))] = t->sop;
    r->values[col(DCM_TAG(0x0008, 0x0016))] = "1.2.840.10008.5.1.4.1.1.2";
    r->values[col(DCM_TAG(0x0020, 0x0013))] = t->num;
    r->transfer_syntax = "1.2.840.10008.1.2.1";
    r->blob_key = t->blob;
    r->size = 525000;
    r->ds_offset = 132;
    memset(r->sha256, 'e', 64);
    r->metadata_json = t->meta;
    r->metadata_len = ml;
    r->remote_aet = "BENCH";
    r->received_at = 1700000000 + n;
}

struct counter {
    size_t rows;
    uint32_t instances;
};

static int count_cb(void *ctx, const struct index_row *row)
{
    struct counter *c = ctx;
    c->rows++;
    c->instances += row->n_study_instances;
    return 0;
}

/* Runs n queries built by mk(i), prints p50/p99; returns non-zero on error. */
static int run_queries(struct index *ix, const char *label, int n,
                       void (*mk)(int i, char *buf, size_t cap, struct index_query *q,
                                  struct index_cond *c),
                       size_t want_rows)
{
    double *lat = malloc(sizeof *lat * (size_t)n), *cpu = malloc(sizeof *cpu * (size_t)n);
    struct pacs_err err;
    int rc = 0;
    if (!lat || !cpu) {
        free(lat);
        free(cpu);
        return 1;
    }
    for (int i = 0; i < n; i++) {
        char buf[64];
        struct index_cond c[2];
        struct index_query q;
        struct counter k = {0};
        mk(i, buf, sizeof buf, &q, c);
        double t0 = now_us(), c0 = cpu_us();
        if (ops->find(ix, &q, count_cb, &k, &err) != 0) {
            fprintf(stderr, "index_bench: %s: %s\n", label, err.msg);
            rc = 1;
            break;
        }
        lat[i] = now_us() - t0;
        cpu[i] = cpu_us() - c0;
        if (want_rows && k.rows != want_rows) {
            fprintf(stderr, "index_bench: %s: %zu rows, expected %zu\n", label, k.rows,
                    want_rows);
            rc = 1;
            break;
        }
    }
    if (rc == 0) {
        qsort(lat, (size_t)n, sizeof *lat, cmp_double);
        qsort(cpu, (size_t)n, sizeof *cpu, cmp_double);
        printf("%-48s wall p50 %7.1f us p99 %7.1f us | cpu p50 %7.1f us p99 %7.1f us"
               " (%d queries)\n",
               label, lat[n / 2], lat[(size_t)n * 99 / 100], cpu[n / 2],
               cpu[(size_t)n * 99 / 100], n);
    }
    free(lat);
    free(cpu);
    return rc;
}

static void mk_patient_studies(int i, char *buf, size_t cap, struct index_query *q,
                               struct index_cond *c)
{
    fmt(buf, cap, "PID%06u", (unsigned)(i * 7919) % N_PATIENTS);
    c[0] = (struct index_cond){.col = col(DCM_TAG(0x0010, 0x0020)),
                               .kind = INDEX_MATCH_SINGLE, .value = buf};
    *q = (struct index_query){.level = INDEX_STUDY, .conds = c, .n_conds = 1,
                              .want_counts = true};
}

static void mk_study_series(int i, char *buf, size_t cap, struct index_query *q,
                            struct index_cond *c)
{
    fmt(buf, cap, "2.25.1.%u.%u", (unsigned)(i * 7919) % N_PATIENTS, (unsigned)i % 2);
    c[0] = (struct index_cond){.col = col(DCM_TAG(0x0020, 0x000D)),
                               .kind = INDEX_MATCH_SINGLE, .value = buf};
    *q = (struct index_query){.level = INDEX_SERIES, .conds = c, .n_conds = 1,
                              .want_counts = true};
}

static void mk_name_wildcard(int i, char *buf, size_t cap, struct index_query *q,
                             struct index_cond *c)
{
    fmt(buf, cap, "patient%u^*", (unsigned)(i * 7919) % N_PATIENTS);
    c[0] = (struct index_cond){.col = col(DCM_TAG(0x0010, 0x0010)),
                               .kind = INDEX_MATCH_WILDCARD, .value = buf};
    *q = (struct index_query){.level = INDEX_STUDY, .conds = c, .n_conds = 1,
                              .want_counts = true};
}

static void mk_date_range(int i, char *buf, size_t cap, struct index_query *q,
                          struct index_cond *c)
{
    fmt(buf, cap, "2024%02u%02u", 1 + i % 12, 1 + i % 28);
    c[0] = (struct index_cond){.col = col(DCM_TAG(0x0008, 0x0020)), .kind = INDEX_MATCH_RANGE,
                               .lo = buf, .hi = buf};
    *q = (struct index_query){.level = INDEX_STUDY, .conds = c, .n_conds = 1, .limit = 100,
                              .want_counts = true};
}

static void mk_series_instances(int i, char *buf, size_t cap, struct index_query *q,
                                struct index_cond *c)
{
    fmt(buf, cap, "2.25.1.%u.%u.%u", (unsigned)(i * 7919) % N_PATIENTS, (unsigned)i % 2,
             (unsigned)i % 5);
    c[0] = (struct index_cond){.col = col(DCM_TAG(0x0020, 0x000E)),
                               .kind = INDEX_MATCH_SINGLE, .value = buf};
    *q = (struct index_query){.level = INDEX_INSTANCE, .conds = c, .n_conds = 1,
                              .want_metadata = true};
}

int main(int argc, char **argv)
{
    char dir[256], path[320] = "";
    struct index *ix = NULL;
    struct pacs_err err;
    int nq = argc > 2 ? (int)strtol(argv[2], NULL, 10) : 1000;
    int rc = 1;
    bool made_dir = false;
    struct rec_text *txt = calloc(BATCH, sizeof *txt);
    struct index_record *recs = calloc(BATCH, sizeof *recs);
    struct index_insert_result *res = calloc(BATCH, sizeof *res);
    if (!txt || !recs || !res)
        goto out;
    if (nq <= 0)
        nq = 1000;
    if (argc > 1) {
        fmt(dir, sizeof dir, "%s", argv[1]);
    } else {
        memcpy(dir, "/tmp/index_bench.XXXXXX", sizeof "/tmp/index_bench.XXXXXX");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            goto out;
        }
        made_dir = true;
    }
    fmt(path, sizeof path, "%s/index.db", dir);
    unlink(path);
    if (ops->open(path, &ix, &err) != 0) {
        fprintf(stderr, "index_bench: %s\n", err.msg);
        goto out;
    }

    double t0 = now_us();
    for (unsigned base = 0; base < N_TOTAL; base += BATCH) {
        for (unsigned k = 0; k < BATCH; k++)
            make_record(base + k, &txt[k], &recs[k]);
        if (ops->insert_batch(ix, recs, BATCH, INDEX_DUP_REJECT, res, &err) != 0) {
            fprintf(stderr, "index_bench: insert: %s\n", err.msg);
            goto out;
        }
        for (unsigned k = 0; k < BATCH; k++) {
            if (res[k].outcome != INDEX_INSERTED) {
                fprintf(stderr, "index_bench: record %u: %s\n", base + k, res[k].err.msg);
                goto out;
            }
        }
    }
    double fill = now_us() - t0;
    printf("fill: %d instances in batches of %d: %.2f s (%.0f instances/s)\n", N_TOTAL, BATCH,
           fill / 1e6, N_TOTAL / (fill / 1e6));

    if (run_queries(ix, "STUDY by PatientID, counts", nq, mk_patient_studies, N_STUDIES) ||
        run_queries(ix, "SERIES by StudyInstanceUID, counts", nq, mk_study_series, N_SERIES) ||
        run_queries(ix, "INSTANCE by SeriesInstanceUID, metadata", nq, mk_series_instances,
                    N_INSTANCES) ||
        run_queries(ix, "STUDY by PatientName wildcard, counts", nq, mk_name_wildcard, 0) ||
        run_queries(ix, "STUDY by StudyDate (one day), counts, limit 100", nq, mk_date_range,
                    0))
        goto out;
    rc = 0;
out:
    if (ix)
        ops->close(ix);
    if (made_dir) {
        static const char *const sfx[] = {"", "-wal", "-shm"};
        for (int k = 0; k < 3; k++) {
            char p[340];
            fmt(p, sizeof p, "%s%s", path, sfx[k]);
            unlink(p);
        }
        rmdir(dir);
    }
    free(txt);
    free(recs);
    free(res);
    return rc;
}
