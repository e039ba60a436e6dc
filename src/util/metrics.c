/* metrics.c - the metrics registry, the exposition format and pacsd's
 * metric catalog. See metrics.h; docs/metrics.md describes each metric. */
#include "util/metrics.h"

#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "util/err.h"
#include "util/log.h"

/* Longest /proc/self/stat or /proc/stat line read (stat is one line of
 * about 300 bytes; btime sits in the first few KiB of /proc/stat on
 * machines with many CPUs, so more is read there). */
#define METRICS_PROC_STAT_MAX 4096
#define METRICS_PROC_BTIME_MAX 65536

struct metric_series {
    uint64_t hash;
    char *lv[METRIC_MAX_LABELS];
    /* Counter (unsigned, wraps after 2^64) or gauge (two's complement). */
    _Atomic uint64_t value;
    /* Histogram: the sum as the bits of a double, and the count of each
     * bucket (not cumulative; [n_buckets] is +Inf). */
    _Atomic uint64_t sum_bits;
    _Atomic uint64_t counts[];
};

/* --- series lookup --------------------------------------------------------- */

static uint64_t labels_hash(const struct metric *m, const char *const *lv)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < m->n_labels; i++) {
        for (const unsigned char *p = (const unsigned char *)(lv[i] ? lv[i] : ""); *p; p++)
            h = (h ^ *p) * 0x100000001b3ull;
        h = (h ^ 0xff) * 0x100000001b3ull; /* a byte no UTF-8 text has: "a","b" != "ab","" */
    }
    return h;
}

static bool labels_equal(const struct metric *m, const struct metric_series *s,
                         const char *const *lv)
{
    for (size_t i = 0; i < m->n_labels; i++)
        if (strcmp(s->lv[i], lv[i] ? lv[i] : ""))
            return false;
    return true;
}

static void series_free(const struct metric *m, struct metric_series *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < m->n_labels; i++)
        free(s->lv[i]);
    free(s);
}

static struct metric_series *series_new(const struct metric *m, const char *const *lv, uint64_t h)
{
    size_t nc = m->type == METRIC_HISTOGRAM ? m->n_buckets + 1 : 0;
    struct metric_series *s = calloc(1, sizeof *s + nc * sizeof s->counts[0]);
    if (!s)
        return NULL;
    s->hash = h;
    for (size_t i = 0; i < m->n_labels; i++) {
        s->lv[i] = strdup(lv[i] ? lv[i] : "");
        if (!s->lv[i]) {
            series_free(m, s);
            return NULL;
        }
    }
    atomic_init(&s->value, 0);
    atomic_init(&s->sum_bits, 0); /* the bits of +0.0 */
    for (size_t i = 0; i < nc; i++)
        atomic_init(&s->counts[i], 0);
    return s;
}

static void dropped(struct metric *m)
{
    if (m == &metric_dropped_updates)
        return; /* its one label is a metric name: it cannot overflow */
    metric_inc(&metric_dropped_updates, (const char *const[]){m->name});
    if (!atomic_exchange(&m->warned, true))
        log_warn("metrics: %s has %u series (the limit) or no memory: updates of new label "
                 "values are dropped", m->name, atomic_load(&m->n_series));
}

/* The series for lv, created if missing; NULL (counted as dropped) if it
 * cannot be. Lock-free: a new series is published into an empty slot with
 * a compare-and-swap, and a thread that loses the race uses the winner's. */
static struct metric_series *series_get(struct metric *m, const char *const *lv, bool create)
{
    uint64_t h = labels_hash(m, lv);
    struct metric_series *mine = NULL;
    size_t k = (size_t)h & (METRIC_SLOTS - 1);
    for (size_t i = 0; i < METRIC_SLOTS; i++, k = (k + 1) & (METRIC_SLOTS - 1)) {
        struct metric_series *s = atomic_load_explicit(&m->slots[k], memory_order_acquire);
        if (!s) {
            if (!create)
                return NULL;
            if (!mine) {
                if (atomic_fetch_add(&m->n_series, 1) >= METRIC_MAX_SERIES ||
                    !(mine = series_new(m, lv, h))) {
                    atomic_fetch_sub(&m->n_series, 1);
                    dropped(m);
                    return NULL;
                }
            }
            struct metric_series *expected = NULL;
            if (atomic_compare_exchange_strong_explicit(&m->slots[k], &expected, mine,
                                                        memory_order_acq_rel,
                                                        memory_order_acquire))
                return mine;
            s = expected; /* another thread filled the slot first */
        }
        if (s->hash == h && labels_equal(m, s, lv)) {
            if (mine) {
                series_free(m, mine);
                atomic_fetch_sub(&m->n_series, 1);
            }
            return s;
        }
    }
    /* Unreachable: n_series < METRIC_MAX_SERIES < METRIC_SLOTS leaves a
     * free slot on every probe chain. */
    if (mine) {
        series_free(m, mine);
        atomic_fetch_sub(&m->n_series, 1);
    }
    return NULL;
}

/* --- updates --------------------------------------------------------------- */

void metric_add(struct metric *m, const char *const *lv, uint64_t n)
{
    if (m->type != METRIC_COUNTER)
        return;
    struct metric_series *s = series_get(m, lv, true);
    if (s)
        atomic_fetch_add_explicit(&s->value, n, memory_order_relaxed);
}

void metric_set(struct metric *m, const char *const *lv, int64_t v)
{
    if (m->type != METRIC_GAUGE)
        return;
    struct metric_series *s = series_get(m, lv, true);
    if (s)
        atomic_store_explicit(&s->value, (uint64_t)v, memory_order_relaxed);
}

void metric_gauge_add(struct metric *m, const char *const *lv, int64_t d)
{
    if (m->type != METRIC_GAUGE)
        return;
    struct metric_series *s = series_get(m, lv, true);
    if (s)
        atomic_fetch_add_explicit(&s->value, (uint64_t)d, memory_order_relaxed);
}

static uint64_t bits_of(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static double double_of(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

void metric_observe(struct metric *m, const char *const *lv, double v)
{
    if (m->type != METRIC_HISTOGRAM || isnan(v))
        return;
    struct metric_series *s = series_get(m, lv, true);
    if (!s)
        return;
    size_t b = 0;
    while (b < m->n_buckets && v > m->buckets[b])
        b++;
    atomic_fetch_add_explicit(&s->counts[b], 1, memory_order_relaxed);
    uint64_t old = atomic_load_explicit(&s->sum_bits, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&s->sum_bits, &old, bits_of(double_of(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

static uint64_t hist_count(const struct metric *m, struct metric_series *s)
{
    uint64_t n = 0;
    for (size_t i = 0; i <= m->n_buckets; i++)
        n += atomic_load_explicit(&s->counts[i], memory_order_relaxed);
    return n;
}

int64_t metric_value(struct metric *m, const char *const *lv)
{
    struct metric_series *s = series_get(m, lv, false);
    if (!s)
        return 0;
    if (m->type == METRIC_HISTOGRAM)
        return (int64_t)hist_count(m, s);
    return (int64_t)atomic_load_explicit(&s->value, memory_order_relaxed);
}

void metric_touch(struct metric *m, const char *const *lv) { (void)series_get(m, lv, true); }

void metric_reset(struct metric *m)
{
    for (size_t k = 0; k < METRIC_SLOTS; k++) {
        struct metric_series *s = atomic_exchange(&m->slots[k], NULL);
        series_free(m, s);
    }
    atomic_store(&m->n_series, 0);
    atomic_store(&m->warned, false);
}

/* --- exposition ------------------------------------------------------------ */

/* Copies s into buf (n bytes), cut if it must be. */
static void copy_text(char *buf, size_t n, const char *s)
{
    size_t l = strlen(s);
    if (l >= n)
        l = n - 1;
    memcpy(buf, s, l);
    buf[l] = '\0';
}

void metric_format_double(char *buf, size_t n, double v)
{
    if (isnan(v)) {
        copy_text(buf, n, "NaN");
    } else if (isinf(v)) {
        copy_text(buf, n, v > 0 ? "+Inf" : "-Inf");
    } else if (v == floor(v) && fabs(v) < 1e15) {
        /* Exact in a double: no exponent, no fraction; -0 as 0. */
        if (snprintf(buf, n, "%.0f", v == 0 ? 0.0 : v) >= (int)n)
            copy_text(buf, n, "NaN");
    } else {
        for (int p = 1; p <= 17; p++) {
            if (snprintf(buf, n, "%.*g", p, v) >= (int)n) {
                copy_text(buf, n, "NaN");
                break;
            }
            if (strtod(buf, NULL) == v)
                break;
        }
    }
}

int metric_escape_label(struct dynbuf *out, const char *s)
{
    int rc = 0;
    for (const char *p = s; *p && rc == 0; p++) {
        size_t run = strcspn(p, "\\\"\n");
        if (run) {
            rc = dynbuf_append(out, p, run);
            p += run;
            if (!*p || rc)
                break;
        }
        rc = dynbuf_puts(out, *p == '\\' ? "\\\\" : *p == '"' ? "\\\"" : "\\n");
    }
    return rc;
}

static const char *type_name(enum metric_type t)
{
    switch (t) {
    case METRIC_COUNTER: return "counter";
    case METRIC_GAUGE: return "gauge";
    case METRIC_HISTOGRAM: return "histogram";
    }
    return "untyped";
}

int metric_write_header(struct dynbuf *out, const char *name, const char *help,
                        enum metric_type type)
{
    int rc = dynbuf_printf(out, "# HELP %s ", name);
    for (const char *p = help; *p && rc == 0; p++) {
        if (*p == '\\')
            rc = dynbuf_puts(out, "\\\\");
        else if (*p == '\n')
            rc = dynbuf_puts(out, "\\n");
        else
            rc = dynbuf_putc(out, *p);
    }
    if (rc == 0)
        rc = dynbuf_printf(out, "\n# TYPE %s %s\n", name, type_name(type));
    return rc;
}

/* name{a="x",b="y",extra="v"} value\n; extra_name NULL: no extra label. */
static int write_line(struct dynbuf *out, const char *name, const char *suffix, size_t n,
                      const char *const *names, const char *const *values,
                      const char *extra_name, const char *extra_value, const char *value)
{
    int rc = dynbuf_printf(out, "%s%s", name, suffix);
    bool braces = n > 0 || extra_name;
    if (rc == 0 && braces)
        rc = dynbuf_putc(out, '{');
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = dynbuf_printf(out, "%s%s=\"", i ? "," : "", names[i]);
        if (rc == 0)
            rc = metric_escape_label(out, values[i] ? values[i] : "");
        if (rc == 0)
            rc = dynbuf_putc(out, '"');
    }
    if (rc == 0 && extra_name)
        rc = dynbuf_printf(out, "%s%s=\"%s\"", n ? "," : "", extra_name, extra_value);
    if (rc == 0 && braces)
        rc = dynbuf_putc(out, '}');
    if (rc == 0)
        rc = dynbuf_printf(out, " %s\n", value);
    return rc;
}

int metric_write_sample(struct dynbuf *out, const char *name, size_t n,
                        const char *const *label_names, const char *const *label_values,
                        double v)
{
    char num[40];
    metric_format_double(num, sizeof num, v);
    return write_line(out, name, "", n, label_names, label_values, NULL, NULL, num);
}

struct sort_item {
    const struct metric *m;
    struct metric_series *s;
};

static int series_cmp(const void *a, const void *b)
{
    const struct sort_item *x = a, *y = b;
    for (size_t i = 0; i < x->m->n_labels; i++) {
        int c = strcmp(x->s->lv[i], y->s->lv[i]);
        if (c)
            return c;
    }
    return 0;
}

/* v in decimal into buf (at least 22 bytes: a sign and 20 digits). */
static void int_text(char *buf, uint64_t v, bool negative)
{
    char tmp[21];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    size_t k = 0;
    if (negative)
        buf[k++] = '-';
    while (n)
        buf[k++] = tmp[--n];
    buf[k] = '\0';
}

static int write_series(const struct metric *m, struct metric_series *s, struct dynbuf *out)
{
    const char *const *lv = (const char *const *)s->lv;
    char num[40];
    if (m->type != METRIC_HISTOGRAM) {
        uint64_t u = atomic_load_explicit(&s->value, memory_order_relaxed);
        if (m->type == METRIC_GAUGE && (int64_t)u < 0)
            int_text(num, 0 - u, true);
        else
            int_text(num, u, false);
        return write_line(out, m->name, "", m->n_labels, m->labels, lv, NULL, NULL, num);
    }
    uint64_t counts[METRIC_MAX_BUCKETS + 1], total = 0;
    double sum = double_of(atomic_load_explicit(&s->sum_bits, memory_order_relaxed));
    for (size_t i = 0; i <= m->n_buckets; i++)
        counts[i] = atomic_load_explicit(&s->counts[i], memory_order_relaxed);
    int rc = 0;
    for (size_t i = 0; i <= m->n_buckets && rc == 0; i++) {
        char le[40];
        total += counts[i];
        if (i < m->n_buckets)
            metric_format_double(le, sizeof le, m->buckets[i]);
        else
            copy_text(le, sizeof le, "+Inf");
        int_text(num, total, false);
        rc = write_line(out, m->name, "_bucket", m->n_labels, m->labels, lv, "le", le, num);
    }
    if (rc == 0) {
        metric_format_double(num, sizeof num, sum);
        rc = write_line(out, m->name, "_sum", m->n_labels, m->labels, lv, NULL, NULL, num);
    }
    if (rc == 0) {
        int_text(num, total, false);
        rc = write_line(out, m->name, "_count", m->n_labels, m->labels, lv, NULL, NULL, num);
    }
    return rc;
}

int metric_write(struct metric *m, struct dynbuf *out)
{
    if (m->n_labels == 0)
        metric_touch(m, NULL); /* 0 is a value: show it from the start */
    struct sort_item *all = malloc(METRIC_SLOTS * sizeof *all);
    if (!all)
        return PACS_ENOMEM;
    size_t n = 0;
    for (size_t k = 0; k < METRIC_SLOTS; k++) {
        struct metric_series *s = atomic_load_explicit(&m->slots[k], memory_order_acquire);
        if (s)
            all[n++] = (struct sort_item){m, s};
    }
    qsort(all, n, sizeof *all, series_cmp);
    int rc = metric_write_header(out, m->name, m->help, m->type);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = write_series(m, all[i].s, out);
    free(all);
    return rc;
}

/* --- process metrics ------------------------------------------------------- */

/* Reads up to max - 1 bytes of a /proc file, NUL-terminated; length or -1. */
static ssize_t read_small(const char *path, char *buf, size_t max)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = 0;
    while (len < max - 1) {
        ssize_t r = read(fd, buf + len, max - 1 - len);
        if (r < 0) {
            close(fd);
            return -1;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    return (ssize_t)len;
}

/* Boot time (seconds since the epoch), from the btime line of /proc/stat;
 * -1 if it cannot be read. */
static double boot_time(void)
{
    char *buf = malloc(METRICS_PROC_BTIME_MAX);
    double t = -1;
    if (buf && read_small("/proc/stat", buf, METRICS_PROC_BTIME_MAX) > 0) {
        const char *p = strstr(buf, "\nbtime ");
        if (p) {
            char *end;
            unsigned long long v = strtoull(p + 7, &end, 10);
            if (end != p + 7)
                t = (double)v;
        }
    }
    free(buf);
    return t;
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

static int write_one(struct dynbuf *out, const char *name, const char *help,
                     enum metric_type type, double v)
{
    int rc = metric_write_header(out, name, help, type);
    return rc ? rc : metric_write_sample(out, name, 0, NULL, NULL, v);
}

int metrics_write_process(struct dynbuf *out)
{
    char stat[METRICS_PROC_STAT_MAX];
    int rc = 0;
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    /* Fields after "(comm)", which may itself hold spaces and ')': state
     * is field 3; utime 14, stime 15, starttime 22, vsize 23, rss 24. */
    const char *p = NULL;
    if (read_small("/proc/self/stat", stat, sizeof stat) > 0)
        p = strrchr(stat, ')');
    unsigned long long f[25] = {0};
    int nf = 2; /* the last field read: pid 1, comm 2 */
    if (p && tick > 0 && page > 0) {
        p++;
        while (nf < 24 && *p == ' ') {
            p++;
            nf++;
            size_t len = strcspn(p, " \n");
            /* Only unsigned fields are wanted; others (state, priority)
             * are skipped. */
            if (nf >= 14 && len > 0 && p[0] >= '0' && p[0] <= '9')
                f[nf] = strtoull(p, NULL, 10);
            p += len;
        }
    }
    if (nf == 24) {
        rc = write_one(out, "process_cpu_seconds_total",
                       "Total user and system CPU time spent in seconds.", METRIC_COUNTER,
                       (double)(f[14] + f[15]) / (double)tick);
        if (rc == 0)
            rc = write_one(out, "process_virtual_memory_bytes",
                           "Virtual memory size in bytes.", METRIC_GAUGE, (double)f[23]);
        if (rc == 0)
            rc = write_one(out, "process_resident_memory_bytes",
                           "Resident memory size in bytes.", METRIC_GAUGE,
                           (double)f[24] * (double)page);
        double bt = boot_time();
        if (rc == 0 && bt >= 0)
            rc = write_one(out, "process_start_time_seconds",
                           "Start time of the process since unix epoch in seconds.",
                           METRIC_GAUGE, bt + (double)f[22] / (double)tick);
    }
    int fds = count_fds();
    if (rc == 0 && fds >= 0)
        rc = write_one(out, "process_open_fds", "Number of open file descriptors.",
                       METRIC_GAUGE, fds);
    struct rlimit rl;
    if (rc == 0 && getrlimit(RLIMIT_NOFILE, &rl) == 0)
        rc = write_one(out, "process_max_fds", "Maximum number of open file descriptors.",
                       METRIC_GAUGE,
                       rl.rlim_cur == RLIM_INFINITY ? INFINITY : (double)rl.rlim_cur);
    return rc;
}

double metrics_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* --- the catalog ----------------------------------------------------------- */

/* Request latencies: 1 ms (a health probe) to 60 s (a large STOW or WADO). */
#define HTTP_BUCKETS {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
/* Ingest (parse end to durable) and queries: 0.5 ms (a group commit that
 * was already running) to 10-30 s (a disk in trouble, a huge C-FIND). */
#define ARCHIVE_BUCKETS {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

struct metric metric_http_requests = {
    .name = "pacsd_http_requests_total",
    .help = "HTTP requests completed, by method, route template (\"unmatched\" when no route "
            "served the path) and status code.",
    .type = METRIC_COUNTER, .n_labels = 3, .labels = {"method", "route", "status"}};
struct metric metric_http_request_duration = {
    .name = "pacsd_http_request_duration_seconds",
    .help = "HTTP request duration from the request line to the end of the response, by "
            "method and route template.",
    .type = METRIC_HISTOGRAM, .n_labels = 2, .labels = {"method", "route"},
    .n_buckets = 15, .buckets = HTTP_BUCKETS};
struct metric metric_dicom_associations_active = {
    .name = "pacsd_dicom_associations_active",
    .help = "DICOM associations being served now (each holds one of dicom.max_associations).",
    .type = METRIC_GAUGE};
struct metric metric_dicom_associations = {
    .name = "pacsd_dicom_associations_total",
    .help = "DICOM association requests by outcome of the negotiation: accepted, rejected "
            "(A-ASSOCIATE-RJ, including over dicom.max_associations) or aborted.",
    .type = METRIC_COUNTER, .n_labels = 1, .labels = {"outcome"}};
struct metric metric_dicom_associations_ended = {
    .name = "pacsd_dicom_associations_ended_total",
    .help = "Accepted DICOM associations that ended, by how: released, aborted (A-ABORT by "
            "either side) or lost (connection error or timeout).",
    .type = METRIC_COUNTER, .n_labels = 1, .labels = {"how"}};
struct metric metric_dimse_operations = {
    .name = "pacsd_dimse_operations_total",
    .help = "DIMSE operations answered, by operation (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET) "
            "and class of the final status (success, warning, failure, cancel).",
    .type = METRIC_COUNTER, .n_labels = 2, .labels = {"operation", "status"}};
struct metric metric_ingest_instances = {
    .name = "pacsd_ingest_instances_total",
    .help = "Instances received by any front door, by outcome: stored (new or replacing), "
            "duplicate (already stored), refused (bad input) or error (internal).",
    .type = METRIC_COUNTER, .n_labels = 1, .labels = {"outcome"}};
struct metric metric_ingest_bytes = {
    .name = "pacsd_ingest_bytes_total",
    .help = "Bytes of the instances stored (outcome stored).",
    .type = METRIC_COUNTER};
struct metric metric_ingest_duration = {
    .name = "pacsd_ingest_duration_seconds",
    .help = "Time from the end of an instance's input until it is durable (parse, file "
            "commit, index group commit), for stored instances.",
    .type = METRIC_HISTOGRAM, .n_buckets = 15, .buckets = ARCHIVE_BUCKETS};
struct metric metric_query_duration = {
    .name = "pacsd_query_duration_seconds",
    .help = "Query duration (C-FIND, QIDO-RS, REST find) by level, including handing each "
            "match to the front door.",
    .type = METRIC_HISTOGRAM, .n_labels = 1, .labels = {"level"},
    .n_buckets = 15, .buckets = ARCHIVE_BUCKETS};
struct metric metric_dropped_updates = {
    .name = "pacsd_metrics_dropped_updates_total",
    .help = "Metric updates dropped because the metric has too many label combinations.",
    .type = METRIC_COUNTER, .n_labels = 1, .labels = {"metric"}};
struct metric metric_build_info = {
    .name = "pacsd_build_info",
    .help = "Always 1; the version label says which pacsd runs.",
    .type = METRIC_GAUGE, .n_labels = 1, .labels = {"version"}};

static struct metric *const catalog[] = {
    &metric_http_requests,
    &metric_http_request_duration,
    &metric_dicom_associations_active,
    &metric_dicom_associations,
    &metric_dicom_associations_ended,
    &metric_dimse_operations,
    &metric_ingest_instances,
    &metric_ingest_bytes,
    &metric_ingest_duration,
    &metric_query_duration,
    &metric_dropped_updates,
    &metric_build_info,
};

void metrics_init(const char *version)
{
    metric_set(&metric_build_info, (const char *const[]){version}, 1);
    static const char *const outcomes[] = {"accepted", "rejected", "aborted"};
    for (size_t i = 0; i < 3; i++)
        metric_touch(&metric_dicom_associations, &outcomes[i]);
    static const char *const ends[] = {"released", "aborted", "lost"};
    for (size_t i = 0; i < 3; i++)
        metric_touch(&metric_dicom_associations_ended, &ends[i]);
    static const char *const ops[] = {"C-ECHO", "C-STORE", "C-FIND", "C-MOVE", "C-GET"};
    static const char *const classes[] = {"success", "warning", "failure", "cancel"};
    for (size_t i = 0; i < 5; i++)
        for (size_t j = 0; j < 4; j++)
            metric_touch(&metric_dimse_operations, (const char *const[]){ops[i], classes[j]});
    static const char *const ingest[] = {"stored", "duplicate", "refused", "error"};
    for (size_t i = 0; i < 4; i++)
        metric_touch(&metric_ingest_instances, &ingest[i]);
}

int metrics_write_all(struct dynbuf *out)
{
    int rc = 0;
    for (size_t i = 0; i < sizeof catalog / sizeof catalog[0] && rc == 0; i++)
        rc = metric_write(catalog[i], out);
    return rc ? rc : metrics_write_process(out);
}
