/* Unit tests: UTF-8 well-formedness (util/utf8). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "util/utf8.h"

#define U(s) (const uint8_t *)(s), sizeof(s) - 1

static void test_well_formed(void **state)
{
    (void)state;
    assert_true(utf8_valid(U("")));
    assert_true(utf8_valid(U("plain ASCII\n")));
    assert_true(utf8_valid(U("M\xc3\xbcller")));                 /* U+00FC */
    assert_true(utf8_valid(U("\xe5\xb1\xb1\xe7\x94\xb0")));      /* CJK */
    assert_true(utf8_valid(U("\xf0\x9f\x98\x80")));              /* U+1F600 */
    assert_true(utf8_valid(U("\xf4\x8f\xbf\xbf")));              /* U+10FFFF */
    assert_true(utf8_valid(U("\xef\xbf\xbd")));                  /* U+FFFD */
    assert_int_equal(utf8_seq_len(U("\xe5\xb1\xb1")), 3);
    assert_int_equal(utf8_seq_len(U("a\xff")), 1);
}

static void test_ill_formed(void **state)
{
    (void)state;
    assert_false(utf8_valid(U("\x80")));                  /* lone continuation */
    assert_false(utf8_valid(U("\xc0\xaf")));              /* overlong '/' */
    assert_false(utf8_valid(U("\xe0\x80\xaf")));          /* overlong, 3 bytes */
    assert_false(utf8_valid(U("\xf0\x80\x80\xaf")));      /* overlong, 4 bytes */
    assert_false(utf8_valid(U("\xed\xa0\x80")));          /* surrogate U+D800 */
    assert_false(utf8_valid(U("\xf4\x90\x80\x80")));      /* U+110000 */
    assert_false(utf8_valid(U("\xf5\x80\x80\x80")));
    assert_false(utf8_valid(U("\xc3")));                  /* cut off */
    assert_false(utf8_valid(U("ab\xe5\xb1")));            /* cut off at the end */
    assert_false(utf8_valid(U("\xc3\x28")));              /* bad continuation */
    assert_false(utf8_valid(U("\xff")));
    assert_int_equal(utf8_seq_len(U("\xe5\xb1")), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_well_formed),
        cmocka_unit_test(test_ill_formed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
