/* metrics.h - the metrics registry: counters, gauges and histograms with a
 * small fixed set of label names, written in the Prometheus text exposition
 * format 0.0.4 (GET /metrics, http/metrics_http.c). docs/metrics.md lists
 * every metric pacsd exports.
 *
 * A metric (one "family" in Prometheus terms) is a static struct metric
 * with its name, help, type, label names and, for a histogram, its bucket
 * bounds. Its series (one per combination of label values) are created on
 * first use and live until metric_reset. pacsd's own metrics are the
 * metric_* objects declared at the end of this file (the catalog, defined
 * in metrics.c): one place, mirrored by docs/metrics.md.
 *
 * Cost and threads: every update (add, set, observe) is lock-free: a hash
 * of the label values finds the series in an open-addressed table of
 * atomic pointers (a new series is published with a compare-and-swap),
 * then the value is changed with atomic operations (a histogram: one
 * fetch-add on its bucket, a compare-and-swap loop on its sum). No global
 * lock is taken, so many threads may update the same metric at once.
 * Writing the exposition reads the atomics without stopping writers: a
 * scrape during updates may see a histogram's _sum a few observations
 * apart from its _count, as with Prometheus' own client libraries. Its
 * _count always equals its +Inf bucket (both come from the same reads).
 *
 * Cardinality: label values must come from small sets (a route template,
 * never a raw path; a status code; a fixed list of names). A metric holds
 * at most METRIC_MAX_SERIES series; updates of further combinations are
 * dropped (counted in pacsd_metrics_dropped_updates_total and logged once
 * per metric).
 *
 * Labels: `lv` arguments are arrays of exactly m->n_labels label values, in
 * the order of m->labels (NULL for a metric without labels); values are
 * copied when their series is created. A NULL value is taken as "".
 */
#ifndef PACS_METRICS_H
#define PACS_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "util/dynbuf.h"

#define METRIC_MAX_LABELS 4
/* Histogram bucket bounds (the +Inf bucket comes on top). */
#define METRIC_MAX_BUCKETS 16
/* Slots of a metric's series table: a power of two. */
#define METRIC_SLOTS 1024
/* Most series per metric: 3/4 of the slots keep probe chains short. */
#define METRIC_MAX_SERIES 768

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

struct metric_series;

struct metric {
    /* Set by the definition. */
    const char *name; /* [a-zA-Z_:][a-zA-Z0-9_:]* */
    const char *help;
    enum metric_type type;
    size_t n_labels;
    const char *labels[METRIC_MAX_LABELS]; /* names; never "le" */
    size_t n_buckets;                      /* histograms: 1..METRIC_MAX_BUCKETS */
    double buckets[METRIC_MAX_BUCKETS];    /* upper bounds, increasing */
    /* Runtime state: zero in a static definition. */
    atomic_uint n_series;
    atomic_bool warned;
    _Atomic(struct metric_series *) slots[METRIC_SLOTS];
};

/* Counter: adds n. No-op on another type or when the series cannot be
 * made (no memory, METRIC_MAX_SERIES reached). */
void metric_add(struct metric *m, const char *const *lv, uint64_t n);
static inline void metric_inc(struct metric *m, const char *const *lv) { metric_add(m, lv, 1); }
/* Gauge: sets v / adds d (negative to subtract). No-op on another type. */
void metric_set(struct metric *m, const char *const *lv, int64_t v);
void metric_gauge_add(struct metric *m, const char *const *lv, int64_t d);
/* Histogram: counts v in the first bucket whose bound is >= v (the +Inf
 * bucket if none) and adds it to the sum. NaN is ignored. No-op on
 * another type. */
void metric_observe(struct metric *m, const char *const *lv, double v);

/* The current value of a counter or gauge series (0 if it does not exist
 * yet); for a histogram, its count. */
int64_t metric_value(struct metric *m, const char *const *lv);

/* Creates the series for lv (at zero) if it does not exist, so that it is
 * exported before its first event (rate() needs a starting point). */
void metric_touch(struct metric *m, const char *const *lv);

/* Appends the family in exposition format: # HELP, # TYPE, then each
 * series sorted by label values (a histogram as _bucket{le=...} lines,
 * cumulative, then _sum and _count). A metric without labels always has
 * its one series (0 before the first event). Returns 0, PACS_ENOMEM or
 * PACS_ELIMIT (out's maximum). */
int metric_write(struct metric *m, struct dynbuf *out);

/* Frees every series of m (its values restart at zero). Not safe while
 * other threads use m: for tests and the end of the process. */
void metric_reset(struct metric *m);

/* --- writing values that are not in the registry (read at scrape time) -- */

/* "# HELP name help\n# TYPE name type\n", help escaped (\\ and \n). */
int metric_write_header(struct dynbuf *out, const char *name, const char *help,
                        enum metric_type type);
/* One sample line: name{label="value",...} v. n may be 0 (no braces). Label
 * values are escaped (\\, \" and \n). */
int metric_write_sample(struct dynbuf *out, const char *name, size_t n,
                        const char *const *label_names, const char *const *label_values,
                        double v);
/* v as the exposition format writes it: an integer without a fraction,
 * else the shortest decimal that reads back as v; "+Inf", "-Inf", "NaN".
 * buf of at least 32 bytes. */
void metric_format_double(char *buf, size_t n, double v);
/* Appends s with \\, \" and \n escaped, as a label value. */
int metric_escape_label(struct dynbuf *out, const char *s);

/* --- pacsd's metrics ---------------------------------------------------- */

/* Records the version (pacsd_build_info) and creates the series that should
 * exist from the start (outcomes, DIMSE operations at zero). Call once at
 * start-up, before the servers start. */
void metrics_init(const char *version);

/* Appends every catalog metric below, then the process metrics. */
int metrics_write_all(struct dynbuf *out);

/* The standard process metrics, read from /proc/self at the call:
 * process_cpu_seconds_total, process_resident_memory_bytes,
 * process_virtual_memory_bytes, process_open_fds, process_max_fds,
 * process_start_time_seconds. A figure that cannot be read is left out. */
int metrics_write_process(struct dynbuf *out);

/* Wall-clock seconds for durations (CLOCK_MONOTONIC). */
double metrics_now(void);

/* HTTP (http/server.c, on each request's completion). */
extern struct metric metric_http_requests;          /* counter {method, route, status} */
extern struct metric metric_http_request_duration;  /* histogram {method, route} */
/* DICOM (net/server.c, net/scp.c). */
extern struct metric metric_dicom_associations_active; /* gauge */
extern struct metric metric_dicom_associations;     /* counter {outcome} */
extern struct metric metric_dicom_associations_ended; /* counter {how} */
extern struct metric metric_dimse_operations;       /* counter {operation, status} */
/* Archive (archive/ingest.c, archive/query.c). */
extern struct metric metric_ingest_instances;       /* counter {outcome} */
extern struct metric metric_ingest_bytes;           /* counter */
extern struct metric metric_ingest_duration;        /* histogram */
extern struct metric metric_query_duration;         /* histogram {level} */
/* The registry itself and the build. */
extern struct metric metric_dropped_updates;        /* counter {metric} */
extern struct metric metric_build_info;             /* gauge {version} = 1 */

#endif
