/* Unit tests: the metrics registry and its exposition format
 * (util/metrics.h): exact text, escaping, histogram buckets, the series
 * limit, and updates from several threads at once. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util/dynbuf.h"
#include "util/err.h"
#include "util/metrics.h"

static struct metric t_counter = {
    .name = "t_events_total", .help = "Events.\nSecond line with a \\ backslash.",
    .type = METRIC_COUNTER};
static struct metric t_labelled = {
    .name = "t_requests_total", .help = "Requests.", .type = METRIC_COUNTER, .n_labels = 2,
    .labels = {"route", "code"}};
static struct metric t_gauge = {
    .name = "t_level", .help = "Level.", .type = METRIC_GAUGE};
static struct metric t_hist = {
    .name = "t_duration_seconds", .help = "Durations.", .type = METRIC_HISTOGRAM,
    .n_labels = 1, .labels = {"op"}, .n_buckets = 3, .buckets = {0.1, 0.5, 2.5}};

static char *written(struct metric *m)
{
    struct dynbuf b;
    dynbuf_init(&b, 0);
    assert_int_equal(metric_write(m, &b), 0);
    return dynbuf_take(&b, NULL);
}

static void expect_text(struct metric *m, const char *want)
{
    char *got = written(m);
    assert_string_equal(got, want);
    free(got);
}

static int reset_all(void **state)
{
    (void)state;
    metric_reset(&t_counter);
    metric_reset(&t_labelled);
    metric_reset(&t_gauge);
    metric_reset(&t_hist);
    metric_reset(&metric_dropped_updates);
    return 0;
}

/* A metric without labels shows 0 before any event; HELP is escaped. */
static void test_counter_text(void **state)
{
    (void)state;
    expect_text(&t_counter, "# HELP t_events_total Events.\\nSecond line with a \\\\ backslash.\n"
                            "# TYPE t_events_total counter\n"
                            "t_events_total 0\n");
    metric_inc(&t_counter, NULL);
    metric_add(&t_counter, NULL, 41);
    expect_text(&t_counter, "# HELP t_events_total Events.\\nSecond line with a \\\\ backslash.\n"
                            "# TYPE t_events_total counter\n"
                            "t_events_total 42\n");
    assert_int_equal(metric_value(&t_counter, NULL), 42);
}

/* Series sorted by label values; \, " and newline escaped in values. */
static void test_labels_sorted_and_escaped(void **state)
{
    (void)state;
    expect_text(&t_labelled, "# HELP t_requests_total Requests.\n"
                             "# TYPE t_requests_total counter\n");
    metric_inc(&t_labelled, (const char *const[]){"/b", "200"});
    metric_add(&t_labelled, (const char *const[]){"/a", "404"}, 3);
    metric_inc(&t_labelled, (const char *const[]){"/a", "200"});
    metric_inc(&t_labelled, (const char *const[]){"q\"x\\y\nz", NULL});
    metric_inc(&t_labelled, (const char *const[]){"/b", "200"});
    expect_text(&t_labelled, "# HELP t_requests_total Requests.\n"
                             "# TYPE t_requests_total counter\n"
                             "t_requests_total{route=\"/a\",code=\"200\"} 1\n"
                             "t_requests_total{route=\"/a\",code=\"404\"} 3\n"
                             "t_requests_total{route=\"/b\",code=\"200\"} 2\n"
                             "t_requests_total{route=\"q\\\"x\\\\y\\nz\",code=\"\"} 1\n");
    assert_int_equal(metric_value(&t_labelled, (const char *const[]){"/b", "200"}), 2);
    assert_int_equal(metric_value(&t_labelled, (const char *const[]){"/c", "200"}), 0);
    /* metric_value does not create the series it asks about. */
    char *text = written(&t_labelled);
    assert_null(strstr(text, "/c"));
    free(text);
}

/* Values that differ only in where one ends and the next begins are
 * different series. */
static void test_label_boundaries(void **state)
{
    (void)state;
    metric_inc(&t_labelled, (const char *const[]){"ab", ""});
    metric_add(&t_labelled, (const char *const[]){"a", "b"}, 2);
    assert_int_equal(metric_value(&t_labelled, (const char *const[]){"ab", ""}), 1);
    assert_int_equal(metric_value(&t_labelled, (const char *const[]){"a", "b"}), 2);
}

static void test_gauge(void **state)
{
    (void)state;
    metric_set(&t_gauge, NULL, 5);
    metric_gauge_add(&t_gauge, NULL, -7);
    expect_text(&t_gauge, "# HELP t_level Level.\n# TYPE t_level gauge\nt_level -2\n");
    metric_gauge_add(&t_gauge, NULL, 3);
    assert_int_equal(metric_value(&t_gauge, NULL), 1);
}

/* A value equal to a bound falls in that bucket (le: less or equal);
 * buckets are cumulative; _count equals the +Inf bucket. */
static void test_histogram_text(void **state)
{
    (void)state;
    const char *const op[] = {"find"};
    double vals[] = {0.05, 0.1, 0.3, 2.5, 7, 0.5};
    for (size_t i = 0; i < 6; i++)
        metric_observe(&t_hist, op, vals[i]);
    metric_observe(&t_hist, op, NAN); /* ignored */
    expect_text(&t_hist, "# HELP t_duration_seconds Durations.\n"
                         "# TYPE t_duration_seconds histogram\n"
                         "t_duration_seconds_bucket{op=\"find\",le=\"0.1\"} 2\n"
                         "t_duration_seconds_bucket{op=\"find\",le=\"0.5\"} 4\n"
                         "t_duration_seconds_bucket{op=\"find\",le=\"2.5\"} 5\n"
                         "t_duration_seconds_bucket{op=\"find\",le=\"+Inf\"} 6\n"
                         "t_duration_seconds_sum{op=\"find\"} 10.45\n"
                         "t_duration_seconds_count{op=\"find\"} 6\n");
    assert_int_equal(metric_value(&t_hist, op), 6);
}

/* Updates of the wrong kind leave a metric as it was. */
static void test_type_mismatch(void **state)
{
    (void)state;
    metric_observe(&t_counter, NULL, 1.0);
    metric_set(&t_counter, NULL, 9);
    metric_add(&t_gauge, NULL, 4);
    metric_inc(&t_hist, (const char *const[]){"x"});
    assert_int_equal(metric_value(&t_counter, NULL), 0);
    assert_int_equal(metric_value(&t_gauge, NULL), 0);
    assert_int_equal(metric_value(&t_hist, (const char *const[]){"x"}), 0);
}

static void test_format_double(void **state)
{
    (void)state;
    struct {
        double v;
        const char *want;
    } cases[] = {
        {0, "0"}, {-0.0, "0"}, {42, "42"}, {-3, "-3"}, {0.1, "0.1"}, {0.005, "0.005"},
        {2.5, "2.5"}, {1e-9, "1e-09"}, {1e20, "1e+20"}, {1.0 / 3, "0.3333333333333333"},
        {INFINITY, "+Inf"}, {-INFINITY, "-Inf"}, {NAN, "NaN"}, {123456789012345, "123456789012345"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[40];
        metric_format_double(buf, sizeof buf, cases[i].v);
        assert_string_equal(buf, cases[i].want);
    }
}

static void test_write_sample(void **state)
{
    (void)state;
    struct dynbuf b;
    dynbuf_init(&b, 0);
    assert_int_equal(metric_write_header(&b, "x_bytes", "Bytes.", METRIC_GAUGE), 0);
    assert_int_equal(metric_write_sample(&b, "x_bytes", 0, NULL, NULL, 1536), 0);
    assert_int_equal(metric_write_sample(&b, "x_bytes", 1, (const char *const[]){"k"},
                                         (const char *const[]){"a\"b"}, 0.25),
                     0);
    assert_string_equal((char *)b.data, "# HELP x_bytes Bytes.\n# TYPE x_bytes gauge\n"
                                        "x_bytes 1536\nx_bytes{k=\"a\\\"b\"} 0.25\n");
    dynbuf_free(&b);
}

/* Past METRIC_MAX_SERIES combinations, updates are dropped and counted. */
static void test_series_limit(void **state)
{
    (void)state;
    for (unsigned i = 0; i < METRIC_MAX_SERIES + 10; i++) {
        char v[16];
        assert_true(snprintf(v, sizeof v, "v%u", i) < (int)sizeof v);
        metric_inc(&t_labelled, (const char *const[]){v, "x"});
    }
    assert_int_equal(metric_value(&t_labelled, (const char *const[]){"v0", "x"}), 1);
    char last[16];
    assert_true(snprintf(last, sizeof last, "v%u", METRIC_MAX_SERIES - 1) < (int)sizeof last);
    assert_int_equal(metric_value(&t_labelled, (const char *const[]){last, "x"}), 1);
    assert_int_equal(metric_value(&t_labelled, (const char *const[]){"v770", "x"}), 0);
    assert_int_equal(metric_value(&metric_dropped_updates,
                                  (const char *const[]){"t_requests_total"}), 10);
    /* Existing series still count. */
    metric_inc(&t_labelled, (const char *const[]){"v5", "x"});
    assert_int_equal(metric_value(&t_labelled, (const char *const[]){"v5", "x"}), 2);
    char *text = written(&t_labelled);
    size_t lines = 0;
    for (const char *p = text; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 2 + METRIC_MAX_SERIES);
    free(text);
}

#define THREADS 8
#define ROUNDS 20000

static void *hammer(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    static const char *const routes[] = {"/a", "/b", "/c", "/d"};
    for (unsigned i = 0; i < ROUNDS; i++) {
        /* Every thread makes the same new series at the same time. */
        metric_inc(&t_labelled, (const char *const[]){routes[i % 4], "200"});
        metric_inc(&t_counter, NULL);
        metric_gauge_add(&t_gauge, NULL, (id & 1) ? 1 : -1);
        metric_observe(&t_hist, (const char *const[]){routes[(i + id) % 4]},
                       (double)(i % 8) * 0.25);
    }
    return NULL;
}

/* Several threads updating the same series: nothing is lost. */
static void test_threads(void **state)
{
    (void)state;
    pthread_t t[THREADS];
    for (unsigned i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, (void *)(uintptr_t)i), 0);
    /* A scrape while they run is well-formed: each histogram's _count
     * equals its +Inf bucket. */
    for (int k = 0; k < 20; k++) {
        char *text = written(&t_hist);
        const char *p = text;
        while ((p = strstr(p, "le=\"+Inf\"} "))) {
            unsigned long long inf = strtoull(p + 11, NULL, 10);
            const char *c = strstr(p, "_count{");
            assert_non_null(c);
            c = strchr(c, '}');
            assert_int_equal(strtoull(c + 2, NULL, 10), inf);
            p = c;
        }
        free(text);
    }
    for (unsigned i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(metric_value(&t_counter, NULL), THREADS * ROUNDS);
    assert_int_equal(metric_value(&t_gauge, NULL), 0);
    static const char *const routes[] = {"/a", "/b", "/c", "/d"};
    int64_t hist_total = 0;
    for (int r = 0; r < 4; r++) {
        assert_int_equal(metric_value(&t_labelled, (const char *const[]){routes[r], "200"}),
                         THREADS * ROUNDS / 4);
        hist_total += metric_value(&t_hist, &routes[r]);
    }
    assert_int_equal(hist_total, THREADS * ROUNDS);
    /* The sums: each thread observes 0, 0.25, ..., 1.75 ROUNDS/8 times
     * (exact in binary, so the total is exact). */
    char *text = written(&t_hist);
    double sum = 0;
    for (const char *p = text; (p = strstr(p, "_sum{"));) {
        p = strchr(p, '}');
        sum += strtod(p + 2, NULL);
    }
    free(text);
    assert_true(fabs(sum - THREADS * (ROUNDS / 8) * 7.0) < 1e-6);
}

/* The catalog and the process figures, as /metrics writes them. */
static void test_catalog_and_process(void **state)
{
    (void)state;
    metrics_init("9.8.7-test");
    struct dynbuf b;
    dynbuf_init(&b, 0);
    assert_int_equal(metrics_write_all(&b), 0);
    const char *t = (const char *)b.data;
    assert_non_null(strstr(t, "\npacsd_build_info{version=\"9.8.7-test\"} 1\n"));
    assert_non_null(strstr(t, "\n# TYPE pacsd_dicom_associations_active gauge\n"
                              "pacsd_dicom_associations_active 0\n"));
    assert_non_null(strstr(
        t, "\npacsd_dimse_operations_total{operation=\"C-STORE\",status=\"success\"} 0\n"));
    assert_non_null(strstr(t, "\npacsd_ingest_instances_total{outcome=\"stored\"} 0\n"));
    assert_non_null(strstr(t, "\n# TYPE process_cpu_seconds_total counter\n"));
    assert_non_null(strstr(t, "\n# TYPE process_resident_memory_bytes gauge\n"));
    assert_non_null(strstr(t, "\n# TYPE process_start_time_seconds gauge\n"));
    const char *fds = strstr(t, "\nprocess_open_fds ");
    assert_non_null(fds);
    assert_true(strtod(fds + 18, NULL) >= 3); /* stdin, stdout, stderr */
    const char *rss = strstr(t, "\nprocess_resident_memory_bytes ");
    assert_non_null(rss);
    assert_true(strtod(rss + 31, NULL) > 1e5);
    /* Every line ends in a newline and the text ends with one. */
    assert_int_equal(t[b.len - 1], '\n');
    dynbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_counter_text, reset_all),
        cmocka_unit_test_setup(test_labels_sorted_and_escaped, reset_all),
        cmocka_unit_test_setup(test_label_boundaries, reset_all),
        cmocka_unit_test_setup(test_gauge, reset_all),
        cmocka_unit_test_setup(test_histogram_text, reset_all),
        cmocka_unit_test_setup(test_type_mismatch, reset_all),
        cmocka_unit_test(test_format_double),
        cmocka_unit_test(test_write_sample),
        cmocka_unit_test_setup(test_series_limit, reset_all),
        cmocka_unit_test_setup(test_threads, reset_all),
        cmocka_unit_test(test_catalog_and_process),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    reset_all(NULL);
    return rc;
}
