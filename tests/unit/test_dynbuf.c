/* Unit tests: the growable buffer's contract (util/dynbuf.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util/dynbuf.h"
#include "util/err.h"

/* An empty buffer handed over is an allocated empty string. */
static void test_take_empty(void **state)
{
    (void)state;
    struct dynbuf b;
    dynbuf_init(&b, 0);
    size_t len = 99;
    char *s = dynbuf_take(&b, &len);
    assert_non_null(s);
    assert_int_equal(len, 0);
    assert_string_equal(s, "");
    free(s);
}

/* The data is NUL-terminated after every operation, reserve included. */
static void test_always_terminated(void **state)
{
    (void)state;
    struct dynbuf b;
    dynbuf_init(&b, 0);
    assert_int_equal(dynbuf_reserve(&b, 100), 0);
    assert_int_equal(b.data[0], 0);
    assert_int_equal(dynbuf_puts(&b, "abc"), 0);
    assert_string_equal((char *)b.data, "abc");
    assert_int_equal(dynbuf_printf(&b, "%d", 42), 0);
    assert_string_equal((char *)b.data, "abc42");
    dynbuf_consume(&b, 2);
    assert_string_equal((char *)b.data, "c42");
    dynbuf_free(&b);
}

/* Past the maximum: PACS_ELIMIT and the buffer as it was. */
static void test_max(void **state)
{
    (void)state;
    struct dynbuf b;
    dynbuf_init(&b, 4);
    assert_int_equal(dynbuf_append(&b, "abcd", 4), 0);
    assert_int_equal(dynbuf_append(&b, "e", 1), PACS_ELIMIT);
    assert_int_equal(b.len, 4);
    assert_memory_equal(b.data, "abcd", 4);
    dynbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_take_empty),
        cmocka_unit_test(test_always_terminated),
        cmocka_unit_test(test_max),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
