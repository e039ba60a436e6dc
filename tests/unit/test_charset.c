/* test_charset.c - Specific Character Set decoding (src/dicom/charset.h).
 *
 * Ground truth is pydicom: charset_vectors.h is generated from pydicom's
 * charset test files and synthetic values by gen_charset_vectors.py. The
 * hand-written tests cover what the vectors cannot: the fast path, limits,
 * notes, threads, and the places where pacsd deliberately differs from
 * pydicom (each says why).
 */
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

#include <cmocka.h>
#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#ifdef TEST_ASAN
/* From ASan's runtime (sanitizer/allocator_interface.h, not always
 * installed). */
size_t __sanitizer_get_current_allocated_bytes(void);
#endif

#include "dicom/charset.h"
#include "dicom/vr.h"
#include "util/limits.h"
#include "util/utf8.h"

struct charset_vector {
    const char *source;
    const char *spec;
    size_t spec_len;
    uint16_t vr;
    const char *raw;
    size_t raw_len;
    const char *expected;
    size_t expected_len;
};

#include "charset_vectors.h"

#define U8(s) ((const uint8_t *)(s))

/* Decodes and returns a malloc'd NUL-terminated copy (length in *len). */
static char *decode(const char *spec, uint16_t vr, const char *raw, size_t n,
                    size_t *len, unsigned *notes)
{
    struct dynbuf out;
    struct pacs_err err;
    dynbuf_init(&out, 0);
    int rc = dcm_charset_decode_ex(U8(spec), spec ? strlen(spec) : 0, vr, U8(raw),
                                   n, &out, notes, &err);
    if (rc)
        fail_msg("decode failed: %d %s", rc, err.msg);
    return dynbuf_take(&out, len);
}

/* Decodes a NUL-terminated raw value and checks the exact UTF-8 result. */
static void check(const char *spec, uint16_t vr, const char *raw, const char *want)
{
    size_t len;
    char *got = decode(spec, vr, raw, strlen(raw), &len, NULL);
    if (len != strlen(want) || memcmp(got, want, len) != 0) {
        print_error("spec '%s' raw '%s': got '%s' want '%s'\n", spec ? spec : "(null)",
                    raw, got, want);
        free(got);
        fail();
    }
    free(got);
}

/* ---- pydicom vectors ---- */

static bool is_text_vr(uint16_t vr)
{
    return vr == DCM_VR_LT || vr == DCM_VR_ST || vr == DCM_VR_UT;
}

static size_t rstrip_pad(const char *s, size_t n)
{
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\0'))
        n--;
    return n;
}

/* pydicom trims what pacsd copies through: trailing spaces/NULs (for PN of
 * the whole value, else per value) and empty trailing PN groups ("A^B=" is
 * "A^B"). Applies that to pacsd's output. */
static void pydicom_view(uint16_t vr, const char *s, size_t n, struct dynbuf *v)
{
    size_t i = 0;
    if (is_text_vr(vr)) {
        assert_int_equal(dynbuf_append(v, s, rstrip_pad(s, n)), 0);
        return;
    }
    if (vr == DCM_VR_PN)
        n = rstrip_pad(s, n);
    for (;;) {
        size_t j = i;
        while (j < n && s[j] != '\\')
            j++;
        size_t k = j - i;
        if (vr == DCM_VR_PN) {
            while (k && s[i + k - 1] == '=')
                k--;
        } else {
            k = rstrip_pad(s + i, k);
        }
        assert_int_equal(dynbuf_append(v, s + i, k), 0);
        if (j >= n)
            break;
        assert_int_equal(dynbuf_putc(v, '\\'), 0);
        i = j + 1;
    }
}

static void print_bytes(const char *label, const char *p, size_t n)
{
    print_error("  %s (%zu):", label, n);
    for (size_t i = 0; i < n; i++)
        print_error(" %02x", (unsigned char)p[i]);
    print_error("\n");
}

static void test_pydicom_vectors(void **state)
{
    int failures = 0;
    (void)state;
    for (size_t k = 0; k < CHARSET_VECTOR_COUNT; k++) {
        const struct charset_vector *t = &charset_vectors[k];
        struct dynbuf out, view;
        struct pacs_err err;
        dynbuf_init(&out, 0);
        dynbuf_init(&view, 0);
        int rc = dcm_charset_decode(U8(t->spec), t->spec_len, t->vr, U8(t->raw),
                                    t->raw_len, &out, &err);
        assert_int_equal(rc, 0);
        pydicom_view(t->vr, (const char *)out.data, out.len, &view);
        if (view.len != t->expected_len || memcmp(view.data, t->expected, view.len) != 0) {
            print_error("vector %zu (%s) differs from pydicom\n", k, t->source);
            print_bytes("raw", t->raw, t->raw_len);
            print_bytes("got", (const char *)view.data, view.len);
            print_bytes("want", t->expected, t->expected_len);
            failures++;
        }
        dynbuf_free(&out);
        dynbuf_free(&view);
    }
    print_message("%d pydicom vectors, %d differ\n", CHARSET_VECTOR_COUNT, failures);
    assert_int_equal(failures, 0);
}

/* ---- fast path, buffers, arguments ---- */

static void test_ascii_fast_path(void **state)
{
    (void)state;
    /* Copied byte for byte: padding, delimiters, controls, whatever spec. */
    check(NULL, DCM_VR_PN, "Doe^John^^Dr=\\Roe ", "Doe^John^^Dr=\\Roe ");
    check("ISO_IR 192", DCM_VR_LT, "line 1\r\nline 2\t\f", "line 1\r\nline 2\t\f");
    check("GB18030", DCM_VR_LO, "ABC123", "ABC123");
    check("ISO 2022 IR 13\\ISO 2022 IR 87", DCM_VR_SH, "a\\b~", "a\\b~");
    check("NO SUCH SET", DCM_VR_LO, "plain", "plain");

    /* Every length around the 8-byte stride finds a late high byte / ESC. */
    char buf[40];
    for (size_t n = 1; n < sizeof buf; n++) {
        memset(buf, 'a', n);
        buf[n - 1] = (char)0xe9;
        size_t len;
        char *got = decode("ISO_IR 100", DCM_VR_LO, buf, n, &len, NULL);
        assert_int_equal(len, n + 1);
        assert_memory_equal(got + n - 1, "\xc3\xa9", 2);
        free(got);
        buf[n - 1] = 0x1b; /* a lone ESC: unknown sequence */
        got = decode("ISO_IR 100", DCM_VR_LO, buf, n, &len, NULL);
        assert_int_equal(len, n + 2);
        assert_memory_equal(got + n - 1, "\xef\xbf\xbd", 3);
        free(got);
    }
}

static void test_appends_and_empty(void **state)
{
    struct dynbuf out;
    (void)state;
    dynbuf_init(&out, 0);
    assert_int_equal(dcm_charset_decode(NULL, 0, DCM_VR_PN, NULL, 0, &out, NULL), 0);
    assert_int_equal(out.len, 0);
    assert_non_null(out.data);
    assert_string_equal((char *)out.data, "");
    assert_int_equal(dcm_charset_decode(U8("ISO_IR 100"), 10, DCM_VR_PN, U8(""), 0, &out,
                                        NULL), 0);
    assert_int_equal(out.len, 0);
    assert_int_equal(dynbuf_puts(&out, "x="), 0);
    assert_int_equal(dcm_charset_decode(U8("ISO_IR 100"), 10, DCM_VR_PN, U8("\xe9"), 1,
                                        &out, NULL), 0);
    assert_string_equal((char *)out.data, "x=\xc3\xa9");
    dynbuf_free(&out);
}

static void test_bad_arguments(void **state)
{
    struct dynbuf out;
    struct pacs_err err;
    unsigned notes = 99;
    (void)state;
    dynbuf_init(&out, 0);
    assert_int_equal(dcm_charset_decode(NULL, 0, DCM_VR_LO, U8("a"), 1, NULL, &err),
                     PACS_EINVAL);
    assert_int_equal(err.code, PACS_EINVAL);
    assert_int_equal(dcm_charset_decode_ex(NULL, 0, DCM_VR_LO, NULL, 3, &out, &notes, &err),
                     PACS_EINVAL);
    assert_non_null(strstr(err.msg, "NULL"));
    assert_int_equal(notes, 0);
    /* NULL err is fine. */
    assert_int_equal(dcm_charset_decode(NULL, 0, DCM_VR_LO, NULL, 1, &out, NULL),
                     PACS_EINVAL);
    dynbuf_free(&out);
}

static void test_limits(void **state)
{
    struct dynbuf out;
    struct pacs_err err;
    (void)state;

    /* The buffer's own maximum: error, and the buffer is left as it was. */
    dynbuf_init(&out, 8);
    assert_int_equal(dynbuf_puts(&out, "ab"), 0);
    assert_int_equal(dcm_charset_decode(U8("ISO_IR 100"), 10, DCM_VR_LO,
                                        U8("\xe9\xe9\xe9\xe9"), 4, &out, &err),
                     PACS_ELIMIT);
    assert_int_equal(err.code, PACS_ELIMIT);
    assert_int_equal(out.len, 2);
    assert_string_equal((char *)out.data, "ab");
    assert_int_equal(dcm_charset_decode(NULL, 0, DCM_VR_LO, U8("0123456789"), 10, &out,
                                        NULL), PACS_ELIMIT);
    assert_string_equal((char *)out.data, "ab");
    dynbuf_free(&out);

    /* PACS_MAX_STRING_LEN bounds what one call appends: Latin-1 doubles. */
    size_t n = PACS_MAX_STRING_LEN / 2 + 1;
    uint8_t *big = malloc(n);
    assert_non_null(big);
    memset(big, 0xe9, n);
    dynbuf_init(&out, 0);
    assert_int_equal(dcm_charset_decode(U8("ISO_IR 100"), 10, DCM_VR_UT, big, n, &out, &err),
                     PACS_ELIMIT);
    assert_int_equal(out.len, 0);
    assert_int_equal(dcm_charset_decode(U8("ISO_IR 100"), 10, DCM_VR_UT, big, n - 2, &out,
                                        &err), 0);
    assert_int_equal(out.len, 2 * (n - 2));
    dynbuf_free(&out);
    free(big);
}

static void test_long_input(void **state)
{
    const size_t n = 1u << 20;
    char *in = malloc(n);
    size_t len;
    (void)state;
    assert_non_null(in);

    /* Long plain text: fast path, exact copy. */
    for (size_t i = 0; i < n; i++)
        in[i] = (char)('a' + i % 26);
    char *got = decode("ISO_IR 100", DCM_VR_UT, in, n, &len, NULL);
    assert_int_equal(len, n);
    assert_memory_equal(got, in, n);
    free(got);

    /* Long Japanese text: runs longer than the conversion chunk. */
    const char pair[] = ";3"; /* JIS X 0208 0x3B33 = U+5C71 */
    memcpy(in, "\x1b$B", 3);
    for (size_t i = 3; i + 2 <= n - 3; i += 2)
        memcpy(in + i, pair, 2);
    size_t body = (n - 6) / 2 * 2;
    memcpy(in + 3 + body, "\x1b(B", 3);
    got = decode("\\ISO 2022 IR 87", DCM_VR_UT, in, 3 + body + 3, &len, NULL);
    assert_int_equal(len, body / 2 * 3);
    for (size_t i = 0; i < len; i += 3)
        assert_memory_equal(got + i, "\xe5\xb1\xb1", 3);
    free(got);

    /* Long GB18030 text through iconv, 0x5C trail bytes included. */
    for (size_t i = 0; i + 2 <= n; i += 2)
        memcpy(in + i, "\x81\x5c", 2);
    got = decode("GB18030", DCM_VR_LT, in, n, &len, NULL);
    assert_int_equal(len, n / 2 * 3);
    assert_memory_equal(got, "\xe4\xb9\x97", 3); /* U+4E57 */
    free(got);
    free(in);
}

/* ---- ISO 2022 rules ---- */

static void test_pn_resets(void **state)
{
    const char *spec = "ISO 2022 IR 100\\ISO 2022 IR 144";
    (void)state;
    /* G1 returns to value 1 (Latin-1) at '=', '^' and '\' in PN. */
    check(spec, DCM_VR_PN, "\x1b-L\xbb=\xbb^\x1b-L\xbb\\\xbb",
          "\xd0\x9b=\xc2\xbb^\xd0\x9b\\\xc2\xbb");
    /* Not in LO: only '\' (and the controls). */
    check(spec, DCM_VR_LO, "\x1b-L\xbb=\xbb^\xbb\\\xbb",
          "\xd0\x9b=\xd0\x9b^\xd0\x9b\\\xc2\xbb");
    /* Not in LT/ST/UT either, where '\' is a character. */
    check(spec, DCM_VR_UT, "\x1b-L\xbb\\\xbb\r\n\xbb",
          "\xd0\x9b\\\xd0\x9b\r\n\xc2\xbb");
    /* ... while every VR resets at CR LF FF TAB, as PS3.5 6.1.2.5.3 asks. */
    check(spec, DCM_VR_PN, "\x1b-L\xbb\t\xbb", "\xd0\x9b\t\xc2\xbb");
    /* G0 two-byte JIS resets at a control; '^' inside it is a byte of a
     * character (0x255E is katakana MA). */
    check("\\ISO 2022 IR 87", DCM_VR_LT, "\x1b$B;3\n;3", "\xe5\xb1\xb1\n;3");
    check("\\ISO 2022 IR 87", DCM_VR_PN, "\x1b$B%^\x1b(B^a", "\xe3\x83\x9e^a");
    /* Multi-valued names keep every value; each starts from value 1. */
    check("\\ISO 2022 IR 149", DCM_VR_PN,
          "\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf\\\xc8\xab",
          "\xed\x99\x8d^\xea\xb8\xb8\xeb\x8f\x99\\\xc3\x88\xc2\xab");
    /* A SPACE in a two-byte G0 is a space. */
    check("\\ISO 2022 IR 87", DCM_VR_LO, "\x1b$B;3 ED\x1b(B", "\xe5\xb1\xb1 \xe7\x94\xb0");
}

static void test_multi_valued(void **state)
{
    (void)state;
    check("ISO_IR 100", DCM_VR_LO, "caf\xe9\\na\xefve\\", "caf\xc3\xa9\\na\xc3\xafve\\");
    check("ISO_IR 192", DCM_VR_SH, "\xc3\xa9\\\xc3\xa8", "\xc3\xa9\\\xc3\xa8");
    check("\\ISO 2022 IR 87", DCM_VR_LO, "\x1b$B;3\x1b(B\\\x1b$BED\x1b(B",
          "\xe5\xb1\xb1\\\xe7\x94\xb0");
}

static void test_bad_bytes(void **state)
{
    unsigned notes = 0;
    size_t len;
    (void)state;
    /* UTF-8: one U+FFFD per maximal ill-formed subpart (as Python). */
    check("ISO_IR 192", DCM_VR_LT, "a\xff" "b\xe2\x82" "c\xed\xa0\x80" "d\xf0\x9f\x98",
          "a\xef\xbf\xbd" "b\xef\xbf\xbd" "c\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
          "d\xef\xbf\xbd");
    char *got = decode("ISO_IR 192", DCM_VR_LT, "ok\xc3", 3, &len, &notes);
    assert_string_equal(got, "ok\xef\xbf\xbd");
    assert_int_equal(notes, DCM_CS_NOTE_REPLACED);
    free(got);
    /* Undefined positions of a single-byte set. */
    check("ISO_IR 127", DCM_VR_LO, "\xa1\xc7", "\xef\xbf\xbd\xd8\xa7");
    /* Half a two-byte character, before an escape and at the end. */
    check("\\ISO 2022 IR 87", DCM_VR_PN, "\x1b$B;\x1b(Ba", "\xef\xbf\xbd" "a");
    check("\\ISO 2022 IR 149", DCM_VR_PN, "\x1b$)C\xc8", "\xef\xbf\xbd");
    check("\\ISO 2022 IR 149", DCM_VR_PN, "\x1b$)C\xc8\xab\x80", "\xed\x99\x8d\xef\xbf\xbd");
    /* GB18030: a cut character, an impossible byte. */
    check("GB18030", DCM_VR_LO, "a\x81", "a\xef\xbf\xbd");
    check("GB18030", DCM_VR_LO, "\xff" "b", "\xef\xbf\xbd" "b");
    /* G1 not designated (value 1 is a G0-only set). */
    check("ISO 2022 IR 87", DCM_VR_LO, "a\xe9", "a\xef\xbf\xbd");
}

static void test_escapes(void **state)
{
    unsigned notes = 0;
    size_t len;
    (void)state;
    /* Unknown escape: one U+FFFD, designations back to value 1. */
    char *got = decode("\\ISO 2022 IR 87", DCM_VR_LO, "ab\x1b$Zcd\xe9", 8, &len, &notes);
    assert_string_equal(got, "ab\xef\xbf\xbd" "cd\xc3\xa9");
    assert_int_equal(notes, DCM_CS_NOTE_UNKNOWN_ESCAPE | DCM_CS_NOTE_REPLACED);
    free(got);
    check("ISO 2022 IR 100\\ISO 2022 IR 144", DCM_VR_LO, "\x1b-L\xbb\x1b-Z\xbb",
          "\xd0\x9b\xef\xbf\xbd\xc2\xbb");
    /* Truncated escapes. */
    check("\\ISO 2022 IR 87", DCM_VR_LO, "ab\x1b", "ab\xef\xbf\xbd");
    check("\\ISO 2022 IR 87", DCM_VR_LO, "ab\x1b$(", "ab\xef\xbf\xbd");
    check("\\ISO 2022 IR 87", DCM_VR_LO, "ab\x1b\xe9", "ab\xef\xbf\xbd\xc3\xa9");
    /* Stand-alone sets have no escapes: ESC is just a control character. */
    check("ISO_IR 192", DCM_VR_LO, "a\x1b(B\xc3\xa9", "a\x1b(B\xc3\xa9");
    /* JIS X 0201: romaji G0 then back to ASCII; katakana G1. */
    check("ISO 2022 IR 13\\ISO 2022 IR 87", DCM_VR_PN,
          "\x1b(Jab\x1b(Bc\xb1\x1b$B;3\x1b(J", "abc\xef\xbd\xb1\xe5\xb1\xb1");
}

/* Deliberate differences from pydicom 2.3.1, each with its reason. */
static void test_differences_from_pydicom(void **state)
{
    (void)state;
    /* pydicom keeps "ESC $ ) A" in the text (its iso_ir_58 codec does not
     * know escapes); PS3.5 K.2 says this is Zhang XiaoDong. */
    check("\\ISO 2022 IR 58", DCM_VR_PN,
          "Zhang^XiaoDong=\x1b$)A\xd5\xc5^\x1b$)A\xd0\xa1\xb6\xab=",
          "Zhang^XiaoDong=\xe5\xbc\xa0^\xe5\xb0\x8f\xe4\xb8\x9c=");
    /* ISO_IR 203 (Latin-9) is a Defined Term pydicom 2.3 lacks (it falls
     * back to Latin-1, giving "¤½"); pacsd decodes "€œ". */
    check("ISO_IR 203", DCM_VR_PN, "\xa4\xbd", "\xe2\x82\xac\xc5\x93");
    check("ISO 2022 IR 6\\ISO 2022 IR 203", DCM_VR_LO, "a\x1b-b\xa4", "a\xe2\x82\xac");
    /* A known escape whose term is missing from the spec is honoured;
     * pydicom emits the escape bytes as text. */
    check("ISO 2022 IR 100", DCM_VR_PN, "ab\x1b$B;3\x1b(B", "ab\xe5\xb1\xb1");
    /* Stand-alone sets ignore ESC; pydicom strips "ESC ( B" and decodes the
     * rest as Latin-1. */
    check("ISO_IR 192", DCM_VR_LO, "\x1b(B\xc3\xa9", "\x1b(B\xc3\xa9");
    /* A multi-valued GBK name whose trail byte is 0x5C stays one character;
     * pydicom splits the bytes at that backslash first. */
    check("GBK", DCM_VR_PN, "\x81\x5c^a\\b", "\xe4\xb9\x97^a\\b");
    /* Output keeps padding and empty trailing PN groups (byte-faithful);
     * pydicom trims them. */
    check("ISO_IR 192", DCM_VR_PN, "Wang^XiaoDong=\xe7\x8e\x8b= ",
          "Wang^XiaoDong=\xe7\x8e\x8b= ");
}

static void test_spec_handling(void **state)
{
    unsigned notes = 0;
    size_t len;
    char *got;
    (void)state;
    /* Padding (spaces, NUL) and the empty value 1. */
    struct dynbuf out;
    dynbuf_init(&out, 0);
    assert_int_equal(dcm_charset_decode(U8(" ISO_IR 144\0"), 12, DCM_VR_PN, U8("\xbb"), 1,
                                        &out, NULL), 0);
    assert_string_equal((char *)out.data, "\xd0\x9b");
    dynbuf_free(&out);
    check("\\ISO 2022 IR 149 ", DCM_VR_PN, "\x1b$)C\xc8\xab", "\xed\x99\x8d");

    /* Unknown value 1: default repertoire (Latin-1 high bytes), noted. */
    got = decode("ISO_IR 999", DCM_VR_PN, "J\xe9", 2, &len, &notes);
    assert_string_equal(got, "J\xc3\xa9");
    assert_int_equal(notes, DCM_CS_NOTE_UNKNOWN_TERM);
    free(got);
    /* Noted on the fast path too when notes are asked for. */
    got = decode("KLINGON", DCM_VR_PN, "Jay", 3, &len, &notes);
    assert_string_equal(got, "Jay");
    assert_int_equal(notes, DCM_CS_NOTE_UNKNOWN_TERM);
    free(got);
    /* Misspelled but recognised. */
    got = decode("iso-ir-144", DCM_VR_PN, "\xbb", 1, &len, &notes);
    assert_string_equal(got, "\xd0\x9b");
    assert_int_equal(notes, DCM_CS_NOTE_CORRECTED_TERM);
    free(got);
    got = decode("UTF-8", DCM_VR_PN, "\xc3\xa9", 2, &len, &notes);
    assert_string_equal(got, "\xc3\xa9");
    assert_int_equal(notes, 0);
    free(got);
    /* Stand-alone with extensions: the extras are ignored. */
    got = decode("ISO_IR 192\\ISO 2022 IR 100", DCM_VR_PN, "\xc3\xa9", 2, &len, &notes);
    assert_string_equal(got, "\xc3\xa9");
    assert_int_equal(notes, DCM_CS_NOTE_IGNORED_TERM);
    free(got);
    got = decode("ISO 2022 IR 100\\GB18030", DCM_VR_PN, "\xe9", 1, &len, &notes);
    assert_string_equal(got, "\xc3\xa9");
    assert_int_equal(notes, DCM_CS_NOTE_IGNORED_TERM);
    free(got);
    /* Unknown later term: noted, decoding unaffected. */
    got = decode("\\ISO 2022 IR 999", DCM_VR_PN, "\xe9", 1, &len, &notes);
    assert_string_equal(got, "\xc3\xa9");
    assert_int_equal(notes, DCM_CS_NOTE_UNKNOWN_TERM);
    free(got);
    /* VRs limited to the default repertoire ignore the spec. */
    check("ISO_IR 144", DCM_VR_CS, "\xbb", "\xc2\xbb");
    check("ISO_IR 144", DCM_VR_NONE, "\xbb", "\xd0\x9b");
}

static void test_known_and_valid(void **state)
{
    (void)state;
    static const char *const good[] = {
        "", "ISO_IR 6", "ISO_IR 100", "ISO_IR 101", "ISO_IR 109", "ISO_IR 110",
        "ISO_IR 144", "ISO_IR 127", "ISO_IR 126", "ISO_IR 138", "ISO_IR 148",
        "ISO_IR 203", "ISO_IR 166", "ISO_IR 13", "ISO_IR 192", "GB18030", "GBK",
        "ISO 2022 IR 6", "ISO 2022 IR 100", "ISO 2022 IR 203", "ISO 2022 IR 13",
        "ISO 2022 IR 87", "ISO 2022 IR 159", "ISO 2022 IR 149", "ISO 2022 IR 58",
        "ISO_IR 100 ",
    };
    static const char *const bad[] = {
        "ISO IR 100", "iso_ir 100", "UTF-8", "ISO 2022 GBK", "ISO_IR 87", "LATIN1",
        "ISO_IR 1000",
    };
    for (size_t k = 0; k < sizeof good / sizeof good[0]; k++)
        assert_true(dcm_charset_known(U8(good[k]), strlen(good[k])));
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
        assert_false(dcm_charset_known(U8(bad[k]), strlen(bad[k])));
    assert_true(dcm_charset_known(NULL, 0));

#define VALID(s) dcm_charset_spec_valid(U8(s), sizeof(s) - 1)
    assert_true(dcm_charset_spec_valid(NULL, 0));
    assert_true(VALID("ISO_IR 100"));
    assert_true(VALID("ISO_IR 192 "));
    assert_true(VALID("\\ISO 2022 IR 87"));
    assert_true(VALID("ISO 2022 IR 13\\ISO 2022 IR 87\\ISO 2022 IR 159"));
    assert_false(VALID("ISO_IR 100\\ISO 2022 IR 87"));
    assert_false(VALID("ISO_IR 192\\ISO 2022 IR 100"));
    assert_false(VALID("ISO 2022 IR 6\\GB18030"));
    assert_false(VALID("ISO 2022 IR 6\\\\ISO 2022 IR 87"));
    assert_false(VALID("ISO IR 100"));
#undef VALID
}

/* Any bytes, under any spec and VR, give valid UTF-8 and no error. */
static void test_random_input_gives_utf8(void **state)
{
    static const char *const specs[] = {
        NULL, "ISO_IR 100", "ISO_IR 127", "ISO_IR 166", "ISO_IR 13", "ISO_IR 192",
        "GB18030", "GBK", "\\ISO 2022 IR 87\\ISO 2022 IR 159",
        "ISO 2022 IR 13\\ISO 2022 IR 87", "\\ISO 2022 IR 149", "\\ISO 2022 IR 58",
        "ISO 2022 IR 100\\ISO 2022 IR 144\\ISO 2022 IR 203", "ISO 2022 IR 87",
    };
    static const uint16_t vrs[] = {DCM_VR_PN, DCM_VR_LO, DCM_VR_UT, DCM_VR_NONE};
    /* Bytes that steer the decoder: ESC, escape intermediates and finals,
     * delimiters, controls, GL pair bytes, GR bytes. */
    static const uint8_t alphabet[] = {0x1b, 0x1b, '$', '(', ')', '-', 'B', 'J', 'D', 'I',
                                       'A', 'C', 'L', 'b', '^', '=', '\\', '\r', '\n',
                                       '\t', ' ', 0x00, ';', '3', 0x7f, 0x80, 0x81, 0x5c,
                                       0xa1, 0xc8, 0xab, 0xdf, 0xe9, 0xfe, 0xff};
    uint32_t seed = 12345;
    uint8_t in[64];
    (void)state;
    for (int iter = 0; iter < 20000; iter++) {
        seed = seed * 1103515245u + 12345u;
        size_t n = (seed >> 16) % sizeof in;
        for (size_t k = 0; k < n; k++) {
            seed = seed * 1103515245u + 12345u;
            uint32_t r = seed >> 16;
            in[k] = (r & 0x100) ? alphabet[r % sizeof alphabet] : (uint8_t)r;
        }
        const char *spec = specs[iter % (sizeof specs / sizeof specs[0])];
        uint16_t vr = vrs[(iter / 16) % 4];
        struct dynbuf out;
        dynbuf_init(&out, 0);
        assert_int_equal(dcm_charset_decode(U8(spec), spec ? strlen(spec) : 0, vr, in, n,
                                            &out, NULL), 0);
        if (!utf8_valid(out.data, out.len)) {
            print_error("spec '%s' iteration %d\n", spec ? spec : "(null)", iter);
            print_bytes("raw", (const char *)in, n);
            print_bytes("got", (const char *)out.data, out.len);
            fail();
        }
        dynbuf_free(&out);
    }
}

/* ---- threads ---- */

static int thread_main(void *arg)
{
    int bad = 0;
    (void)arg;
    for (int round = 0; round < 40; round++) {
        for (size_t k = 0; k < CHARSET_VECTOR_COUNT; k++) {
            const struct charset_vector *t = &charset_vectors[k];
            struct dynbuf out, view;
            dynbuf_init(&out, 0);
            dynbuf_init(&view, 0);
            if (dcm_charset_decode(U8(t->spec), t->spec_len, t->vr, U8(t->raw),
                                   t->raw_len, &out, NULL) != 0)
                bad++;
            pydicom_view(t->vr, (const char *)out.data, out.len, &view);
            if (view.len != t->expected_len || memcmp(view.data, t->expected, view.len))
                bad++;
            dynbuf_free(&out);
            dynbuf_free(&view);
        }
        if (round == 20)
            dcm_charset_thread_cleanup(); /* decoding afterwards reopens */
    }
    /* No cleanup call: the thread-exit destructor must close the cache, or
     * LeakSanitizer reports it. */
    return bad;
}

static void test_threads(void **state)
{
    thrd_t th[4];
    (void)state;
    for (int k = 0; k < 4; k++)
        assert_int_equal(thrd_create(&th[k], thread_main, NULL), thrd_success);
    for (int k = 0; k < 4; k++) {
        int res = -1;
        assert_int_equal(thrd_join(th[k], &res), thrd_success);
        assert_int_equal(res, 0);
    }
}

/* Heap bytes in use, to see whether exited threads left iconv state behind
 * (LeakSanitizer cannot: glibc keeps exited threads' TLS in its stack
 * cache, so the lost pointers still look reachable). */
static size_t heap_in_use(void)
{
#ifdef TEST_ASAN
    return __sanitizer_get_current_allocated_bytes();
#else
    return mallinfo2().uordblks;
#endif
}

static int open_all_and_exit(void *arg)
{
    static const char *const specs[] = {"\\ISO 2022 IR 87", "\\ISO 2022 IR 149",
                                        "\\ISO 2022 IR 58", "ISO_IR 13", "GB18030", "GBK"};
    static const char *const raws[] = {"\x1b$B;3\x1b(B", "\x1b$)C\xc8\xab",
                                       "\x1b$)A\xd5\xc5", "\x88\x9f", "\xcd\xf5",
                                       "\xcd\xf5"};
    (void)arg;
    for (size_t k = 0; k < 6; k++) {
        struct dynbuf out;
        dynbuf_init(&out, 0);
        if (dcm_charset_decode(U8(specs[k]), strlen(specs[k]), DCM_VR_PN, U8(raws[k]),
                               strlen(raws[k]), &out, NULL) != 0 ||
            memchr(out.data, 0xef, out.len)) /* no U+FFFD: iconv was used */
            return 1;
        dynbuf_free(&out);
    }
    return 0;
}

static void test_thread_exit_closes_cache(void **state)
{
    thrd_t th;
    int res = -1;
    (void)state;
    /* Warm up: gconv modules and glibc's own caches load once. */
    for (int k = 0; k < 2; k++) {
        assert_int_equal(thrd_create(&th, open_all_and_exit, NULL), thrd_success);
        assert_int_equal(thrd_join(th, &res), thrd_success);
        assert_int_equal(res, 0);
    }
    size_t before = heap_in_use();
    for (int k = 0; k < 40; k++) {
        assert_int_equal(thrd_create(&th, open_all_and_exit, NULL), thrd_success);
        assert_int_equal(thrd_join(th, &res), thrd_success);
        assert_int_equal(res, 0);
    }
    size_t after = heap_in_use();
    /* Without the thread-exit destructor this grows by ~60 KiB a thread. */
    print_message("heap before %zu after %zu\n", before, after);
    assert_true(after < before + 64 * 1024);
}

static int teardown(void **state)
{
    (void)state;
    dcm_charset_thread_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_pydicom_vectors, teardown),
        cmocka_unit_test_teardown(test_ascii_fast_path, teardown),
        cmocka_unit_test_teardown(test_appends_and_empty, teardown),
        cmocka_unit_test_teardown(test_bad_arguments, teardown),
        cmocka_unit_test_teardown(test_limits, teardown),
        cmocka_unit_test_teardown(test_long_input, teardown),
        cmocka_unit_test_teardown(test_pn_resets, teardown),
        cmocka_unit_test_teardown(test_multi_valued, teardown),
        cmocka_unit_test_teardown(test_bad_bytes, teardown),
        cmocka_unit_test_teardown(test_escapes, teardown),
        cmocka_unit_test_teardown(test_differences_from_pydicom, teardown),
        cmocka_unit_test_teardown(test_spec_handling, teardown),
        cmocka_unit_test_teardown(test_known_and_valid, teardown),
        cmocka_unit_test_teardown(test_random_input_gives_utf8, teardown),
        cmocka_unit_test_teardown(test_threads, teardown),
        cmocka_unit_test_teardown(test_thread_exit_closes_cache, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
