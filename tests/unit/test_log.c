/* Unit tests: JSON log lines (util/log). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/log.h"

static int pipe_fds[2];

/* All lines written so far, read without blocking. */
static char captured[256 * 1024];

static size_t drain(void)
{
    size_t len = 0;
    for (;;) {
        ssize_t r = read(pipe_fds[0], captured + len, sizeof captured - 1 - len);
        if (r > 0) {
            len += (size_t)r;
            continue;
        }
        assert_true(r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
        break;
    }
    captured[len] = '\0';
    return len;
}

/* Splits the captured text into parsed lines (at most max); returns how many. */
static size_t parse_lines(json_t **out, size_t max)
{
    size_t len = drain(), n = 0;
    char *p = captured;
    while (p < captured + len) {
        char *nl = strchr(p, '\n');
        assert_non_null(nl); /* every line ends in a newline */
        assert_true((size_t)(nl - p) + 1 <= LOG_LINE_MAX);
        json_error_t je;
        json_t *j = json_loadb(p, (size_t)(nl - p), 0, &je);
        if (!j)
            fail_msg("line is not JSON (%s): %.*s", je.text, (int)(nl - p), p);
        assert_true(json_is_object(j));
        assert_true(n < max);
        out[n++] = j;
        p = nl + 1;
    }
    return n;
}

static json_t *one_line(void)
{
    json_t *j[2];
    assert_int_equal(parse_lines(j, 2), 1);
    return j[0];
}

static const char *str_field(json_t *j, const char *key)
{
    json_t *v = json_object_get(j, key);
    if (!json_is_string(v))
        fail_msg("field %s missing or not a string", key);
    return json_string_value(v);
}

static int setup(void **state)
{
    (void)state;
    if (pipe(pipe_fds) != 0)
        return -1;
    /* Room for the thread test's lines without a reader. */
    fcntl(pipe_fds[1], F_SETPIPE_SZ, 1 << 20);
    fcntl(pipe_fds[0], F_SETFL, O_NONBLOCK);
    log_set_fd(pipe_fds[1]);
    log_set_level(CONFIG_LOG_INFO);
    log_set_context(0, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    log_set_fd(2);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    return 0;
}

static void test_fields(void **state)
{
    (void)state;
    log_info("hello %d", 42);
    json_t *j = one_line();
    assert_string_equal(str_field(j, "msg"), "hello 42");
    assert_string_equal(str_field(j, "level"), "info");
    const char *t = str_field(j, "time");
    /* 2026-11-22T12:00:00.123Z */
    assert_int_equal(strlen(t), 24);
    assert_true(t[4] == '-' && t[7] == '-' && t[10] == 'T' && t[13] == ':' && t[16] == ':' &&
                t[19] == '.' && t[23] == 'Z');
    assert_null(json_object_get(j, "assoc"));
    assert_null(json_object_get(j, "peer"));
    assert_int_equal(json_object_size(j), 3);
    json_decref(j);

    /* Field order as documented: time, level, msg. */
    log_error("x");
    drain();
    assert_true(strncmp(captured, "{\"time\":\"", 9) == 0);
    assert_non_null(strstr(captured, "\",\"level\":\"error\",\"msg\":\"x\"}\n"));
}

static void test_escaping(void **state)
{
    (void)state;
    log_info("q\"b\\s\nt\tc\x01 d\x7f e\xff f\xc3\xbc g\xe5\xb1 h%s", "\xf0\x9f\x98\x80");
    json_t *j = one_line();
    /* Invalid bytes became U+FFFD; valid multi-byte characters are kept. */
    assert_string_equal(str_field(j, "msg"),
                        "q\"b\\s\nt\tc\x01 d\x7f e\xef\xbf\xbd f\xc3\xbc g\xef\xbf\xbd\xef\xbf\xbd"
                        " h\xf0\x9f\x98\x80");
    json_decref(j);
}

static void test_levels(void **state)
{
    (void)state;
    log_set_level(CONFIG_LOG_WARN);
    assert_int_equal(log_get_level(), CONFIG_LOG_WARN);
    assert_false(log_enabled(CONFIG_LOG_INFO));
    assert_true(log_enabled(CONFIG_LOG_ERROR));
    log_debug("d");
    log_info("i");
    log_warn("w");
    log_error("e");
    json_t *j[4];
    assert_int_equal(parse_lines(j, 4), 2);
    assert_string_equal(str_field(j[0], "level"), "warn");
    assert_string_equal(str_field(j[0], "msg"), "w");
    assert_string_equal(str_field(j[1], "level"), "error");
    json_decref(j[0]);
    json_decref(j[1]);

    log_set_level(CONFIG_LOG_DEBUG);
    log_debug("d");
    j[0] = one_line();
    assert_string_equal(str_field(j[0], "level"), "debug");
    json_decref(j[0]);
    log_set_level(CONFIG_LOG_INFO);
}

static void test_context(void **state)
{
    (void)state;
    log_set_context(17, "127.0.0.1:5000");
    log_info("in association");
    json_t *j = one_line();
    assert_int_equal(json_integer_value(json_object_get(j, "assoc")), 17);
    assert_string_equal(str_field(j, "peer"), "127.0.0.1:5000");
    json_decref(j);

    /* Peer only; a long peer is cut, not overflowed. */
    char longpeer[200];
    memset(longpeer, 'p', sizeof longpeer - 1);
    longpeer[sizeof longpeer - 1] = '\0';
    log_set_context(0, longpeer);
    log_info("x");
    j = one_line();
    assert_null(json_object_get(j, "assoc"));
    assert_int_equal(strlen(str_field(j, "peer")), LOG_PEER_MAX);
    json_decref(j);

    log_set_context(0, NULL);
    log_info("outside");
    j = one_line();
    assert_null(json_object_get(j, "assoc"));
    assert_null(json_object_get(j, "peer"));
    json_decref(j);
}

static void test_kv(void **state)
{
    (void)state;
    const char *const kv[] = {"sop_instance", "1.2.3.4", "status", "0xA700 \"out\"", NULL};
    log_set_context(3, "h:1");
    log_writef_kv(CONFIG_LOG_WARN, kv, "store failed: %s", "disk full");
    log_set_context(0, NULL);
    json_t *j = one_line();
    assert_string_equal(str_field(j, "msg"), "store failed: disk full");
    assert_string_equal(str_field(j, "sop_instance"), "1.2.3.4");
    assert_string_equal(str_field(j, "status"), "0xA700 \"out\"");
    assert_int_equal(json_integer_value(json_object_get(j, "assoc")), 3);
    json_decref(j);

    log_writef_kv(CONFIG_LOG_INFO, NULL, "no pairs");
    j = one_line();
    assert_int_equal(json_object_size(j), 3);
    json_decref(j);
}

static void test_long_lines(void **state)
{
    (void)state;
    static char big[20000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    log_set_context(99, "peer:1");
    log_info("%s", big);
    json_t *j = one_line();
    const char *msg = str_field(j, "msg");
    assert_true(strlen(msg) < LOG_LINE_MAX);
    assert_true(strlen(msg) > LOG_LINE_MAX / 2);
    assert_string_equal(msg + strlen(msg) - 3, "...");
    assert_int_equal(json_integer_value(json_object_get(j, "assoc")), 99); /* tail kept */
    json_decref(j);

    /* Characters that escape to six bytes, and a multi-byte character at the
     * cut: still one valid line. */
    memset(big, 1, sizeof big - 1);
    log_info("%s", big);
    json_decref(one_line());
    for (size_t i = 0; i + 2 < sizeof big; i += 2)
        memcpy(big + i, "\xc3\xbc", 2);
    big[sizeof big - 2] = '\0';
    log_info("x%s", big);
    j = one_line();
    assert_string_equal(str_field(j, "msg") + strlen(str_field(j, "msg")) - 3, "...");
    json_decref(j);

    /* Extra pairs that do not fit are left off, the line stays valid. */
    const char *const kv[] = {"a", big, "b", "small", NULL};
    log_writef_kv(CONFIG_LOG_INFO, kv, "kv");
    j = one_line();
    assert_null(json_object_get(j, "a"));
    json_decref(j);
    log_set_context(0, NULL);
}

static void test_errno_kept(void **state)
{
    (void)state;
    errno = ENOSPC;
    log_info("x");
    assert_int_equal(errno, ENOSPC);
    drain();
}

#define THREAD_LINES 200

struct worker {
    uint64_t id;
    char peer[32];
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    log_set_context(w->id, w->peer);
    for (int i = 0; i < THREAD_LINES; i++)
        log_info("worker %llu line %d", (unsigned long long)w->id, i);
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    struct worker w[2] = {{1, "10.0.0.1:1001"}, {2, "10.0.0.2:1002"}};
    pthread_t t[2];
    log_set_context(0, NULL);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    log_info("main");

    static json_t *j[2 * THREAD_LINES + 1];
    size_t n = parse_lines(j, 2 * THREAD_LINES + 1);
    assert_int_equal(n, 2 * THREAD_LINES + 1);
    int seen[2] = {0, 0};
    for (size_t i = 0; i < n; i++) {
        json_t *a = json_object_get(j[i], "assoc");
        if (!a) {
            /* The main thread's context is its own, unaffected by the workers. */
            assert_string_equal(str_field(j[i], "msg"), "main");
            assert_null(json_object_get(j[i], "peer"));
        } else {
            json_int_t id = json_integer_value(a);
            assert_true(id == 1 || id == 2);
            assert_string_equal(str_field(j[i], "peer"), w[id - 1].peer);
            char want[64];
            assert_true(snprintf(want, sizeof want, "worker %lld line %d", (long long)id,
                                 seen[id - 1]) < (int)sizeof want);
            assert_string_equal(str_field(j[i], "msg"), want); /* in order per thread */
            seen[id - 1]++;
        }
        json_decref(j[i]);
    }
    assert_int_equal(seen[0], THREAD_LINES);
    assert_int_equal(seen[1], THREAD_LINES);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_levels),
        cmocka_unit_test(test_context),
        cmocka_unit_test(test_kv),
        cmocka_unit_test(test_long_lines),
        cmocka_unit_test(test_errno_kept),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
