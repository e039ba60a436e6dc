/* Unit tests: the data set model and its typed accessors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "dicom/dataset.h"

static struct dcm_ds *new_ds(void)
{
    struct dcm_ds *ds = dcm_ds_new();
    assert_non_null(ds);
    return ds;
}

static void test_put_sorted_and_replace(void **state)
{
    (void)state;
    struct dcm_ds *ds = new_ds();
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0010, 0x0020), DCM_VR_LO, "ID1"), 0);
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0008, 0x0060), DCM_VR_CS, "CT"), 0);
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0010, 0x0010), DCM_VR_PN, "Doe^John"), 0);
    assert_int_equal(ds->n, 3);
    assert_int_equal(ds->el[0].tag, DCM_TAG(0x0008, 0x0060));
    assert_int_equal(ds->el[1].tag, DCM_TAG(0x0010, 0x0010));
    assert_int_equal(ds->el[2].tag, DCM_TAG(0x0010, 0x0020));
    /* Odd-length strings are padded with the VR's padding byte. */
    const struct dcm_elem *e = dcm_ds_find(ds, DCM_TAG(0x0010, 0x0020));
    assert_int_equal(e->len, 4);
    assert_memory_equal(e->val, "ID1 ", 4);
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0008, 0x0018), DCM_VR_UI, "1.2.3"), 0);
    e = dcm_ds_find(ds, DCM_TAG(0x0008, 0x0018));
    assert_memory_equal(e->val, "1.2.3\0", 6);
    /* Replace keeps one element. */
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0008, 0x0060), DCM_VR_CS, "MR"), 0);
    assert_int_equal(ds->n, 4);
    char buf[16];
    assert_int_equal(dcm_ds_get_str(ds, DCM_TAG(0x0008, 0x0060), 0, buf, sizeof buf), 0);
    assert_string_equal(buf, "MR");
    assert_int_equal(dcm_ds_remove(ds, DCM_TAG(0x0008, 0x0060)), 0);
    assert_null(dcm_ds_find(ds, DCM_TAG(0x0008, 0x0060)));
    assert_int_equal(dcm_ds_remove(ds, DCM_TAG(0x0008, 0x0060)), 0);
    assert_int_equal(dcm_ds_get_str(ds, DCM_TAG(0x0008, 0x0060), 0, buf, sizeof buf), PACS_ENOTFOUND);
    dcm_ds_free(ds);
}

static void test_many_elements_and_big_values(void **state)
{
    (void)state;
    struct dcm_ds *ds = new_ds();
    /* Insert in reverse order to exercise the sorted insert and growth. */
    for (int i = 2000; i > 0; i--) {
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0011, i), DCM_VR_IS, v), 0);
    }
    assert_int_equal(ds->n, 2000);
    for (uint32_t i = 1; i < ds->n; i++)
        assert_true(ds->el[i - 1].tag < ds->el[i].tag);
    int64_t x;
    assert_int_equal(dcm_elem_int(dcm_ds_find(ds, DCM_TAG(0x0011, 1234)), 0, &x), 0);
    assert_int_equal(x, 1234);
    /* A value larger than an arena chunk. */
    static uint8_t big[200000];
    memset(big, 0xab, sizeof big);
    assert_int_equal(dcm_ds_put(ds, DCM_TAG_PIXEL_DATA, DCM_VR_OB, big, sizeof big, NULL), 0);
    const struct dcm_elem *e = dcm_ds_find(ds, DCM_TAG_PIXEL_DATA);
    assert_int_equal(e->len, sizeof big);
    assert_memory_equal(e->val, big, sizeof big);
    dcm_ds_free(ds);
}

static void test_multivalue_strings(void **state)
{
    (void)state;
    struct dcm_ds *ds = new_ds();
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0008, 0x0008), DCM_VR_CS, " ORIGINAL\\PRIMARY \\\\AXIAL"), 0);
    const struct dcm_elem *e = dcm_ds_find(ds, DCM_TAG(0x0008, 0x0008));
    assert_int_equal(dcm_elem_vm(e), 4);
    const char *s;
    size_t n;
    assert_int_equal(dcm_elem_str(e, 0, &s, &n), 0);
    assert_int_equal(n, 8);
    assert_memory_equal(s, "ORIGINAL", 8);
    assert_int_equal(dcm_elem_str(e, 1, &s, &n), 0);
    assert_int_equal(n, 7);
    assert_int_equal(dcm_elem_str(e, 2, &s, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(dcm_elem_str(e, 3, &s, &n), 0);
    assert_memory_equal(s, "AXIAL", 5);
    assert_int_equal(dcm_elem_str(e, 4, &s, &n), PACS_ENOTFOUND);
    /* LT keeps backslashes and leading spaces: one value. */
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0020, 0x4000), DCM_VR_LT, "  a\\b  "), 0);
    e = dcm_ds_find(ds, DCM_TAG(0x0020, 0x4000));
    assert_int_equal(dcm_elem_vm(e), 1);
    assert_int_equal(dcm_elem_str(e, 0, &s, &n), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(s, "  a\\b", 5);
    /* Padding only: VM 0. */
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0008, 0x0050), DCM_VR_SH, "  "), 0);
    assert_int_equal(dcm_elem_vm(dcm_ds_find(ds, DCM_TAG(0x0008, 0x0050))), 0);
    dcm_ds_free(ds);
}

static void test_numbers(void **state)
{
    (void)state;
    struct dcm_ds *ds = new_ds();
    uint8_t us[4] = { 0x00, 0x02, 0xff, 0xff };
    assert_int_equal(dcm_ds_put(ds, DCM_TAG(0x0028, 0x0010), DCM_VR_US, us, 4, NULL), 0);
    assert_int_equal(dcm_ds_put(ds, DCM_TAG(0x0028, 0x0106), DCM_VR_SS, us, 4, NULL), 0);
    const struct dcm_elem *u = dcm_ds_find(ds, DCM_TAG(0x0028, 0x0010));
    const struct dcm_elem *ss = dcm_ds_find(ds, DCM_TAG(0x0028, 0x0106));
    uint64_t uv;
    int64_t iv;
    assert_int_equal(dcm_elem_vm(u), 2);
    assert_int_equal(dcm_elem_uint(u, 0, &uv), 0);
    assert_int_equal(uv, 512);
    assert_int_equal(dcm_elem_uint(u, 1, &uv), 0);
    assert_int_equal(uv, 65535);
    assert_int_equal(dcm_elem_uint(u, 2, &uv), PACS_ENOTFOUND);
    assert_int_equal(dcm_elem_int(ss, 1, &iv), 0);
    assert_int_equal(iv, -1);
    assert_int_equal(dcm_elem_uint(ss, 1, &uv), PACS_EINVAL);

    uint8_t fd[8];
    double pi = 3.25;
    memcpy(fd, &pi, 8); /* the test host is little-endian, as the model is */
    assert_int_equal(dcm_ds_put(ds, DCM_TAG(0x0018, 0x9306), DCM_VR_FD, fd, 8, NULL), 0);
    double d;
    assert_int_equal(dcm_elem_double(dcm_ds_find(ds, DCM_TAG(0x0018, 0x9306)), 0, &d), 0);
    assert_true(d == 3.25);

    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0028, 0x0030), DCM_VR_DS, " 0.5\\1e-3 \\-2"), 0);
    const struct dcm_elem *ds_e = dcm_ds_find(ds, DCM_TAG(0x0028, 0x0030));
    assert_int_equal(dcm_elem_double(ds_e, 0, &d), 0);
    assert_true(d == 0.5);
    assert_int_equal(dcm_elem_double(ds_e, 1, &d), 0);
    assert_true(d == 1e-3);
    assert_int_equal(dcm_elem_int(ds_e, 2, &iv), 0);
    assert_int_equal(iv, -2);
    assert_int_equal(dcm_elem_int(ds_e, 0, &iv), PACS_EINVAL);

    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0020, 0x0013), DCM_VR_IS, "12a"), 0);
    assert_int_equal(dcm_elem_int(dcm_ds_find(ds, DCM_TAG(0x0020, 0x0013)), 0, &iv), PACS_EINVAL);

    uint8_t at[4] = { 0x10, 0x00, 0x20, 0x00 };
    assert_int_equal(dcm_ds_put(ds, DCM_TAG(0x0020, 0x5000), DCM_VR_AT, at, 4, NULL), 0);
    uint32_t tag;
    assert_int_equal(dcm_elem_tag(dcm_ds_find(ds, DCM_TAG(0x0020, 0x5000)), 0, &tag), 0);
    assert_int_equal(tag, DCM_TAG(0x0010, 0x0020));
    dcm_ds_free(ds);
}

static void test_sequences(void **state)
{
    (void)state;
    struct dcm_ds *ds = new_ds();
    struct dcm_elem *seq;
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG_SPECIFIC_CHARSET, DCM_VR_CS, "ISO_IR 192"), 0);
    assert_int_equal(dcm_ds_put_seq(ds, DCM_TAG(0x0008, 0x1140), &seq), 0);
    for (int i = 0; i < 10; i++) {
        struct dcm_ds *item;
        assert_int_equal(dcm_seq_add_item(ds, seq, &item), 0);
        assert_int_equal(dcm_ds_put_str(item, DCM_TAG(0x0008, 0x1150), DCM_VR_UI, "1.2.840.10008.5.1.4.1.1.2"), 0);
        /* Items see the character set of the data set that holds them. */
        assert_ptr_equal(dcm_ds_charset(item), dcm_ds_find(ds, DCM_TAG_SPECIFIC_CHARSET));
    }
    /* seq may have moved when the data set grew: look it up again. */
    const struct dcm_elem *e = dcm_ds_find(ds, DCM_TAG(0x0008, 0x1140));
    assert_int_equal(dcm_elem_vm(e), 10);
    assert_int_equal(e->u.items.v[9]->n, 1);
    assert_int_equal(dcm_seq_add_item(ds, dcm_ds_find_mut(ds, DCM_TAG_SPECIFIC_CHARSET), NULL), PACS_EINVAL);

    struct dcm_elem *px;
    assert_int_equal(dcm_ds_put_encaps(ds, DCM_TAG_PIXEL_DATA, DCM_VR_OB, &px), 0);
    assert_int_equal(dcm_encaps_add_frag(ds, px, "\xff\xd8\xff\xd9", 4), 0);
    assert_int_equal(px->u.frags.n, 2);
    assert_int_equal(px->u.frags.v[0].len, 0);
    assert_int_equal(px->u.frags.v[1].len, 4);
    dcm_ds_free(ds);
}

static void test_text_and_pn(void **state)
{
    (void)state;
    struct dcm_ds *ds = new_ds();
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG_SPECIFIC_CHARSET, DCM_VR_CS, "ISO_IR 100"), 0);
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0010, 0x0010), DCM_VR_PN, "M\xfcller^J\xfcrgen"), 0);
    struct dynbuf t;
    dynbuf_init(&t, 0);
    assert_int_equal(dcm_elem_text(ds, dcm_ds_find(ds, DCM_TAG(0x0010, 0x0010)), &t, NULL), 0);
    assert_string_equal((char *)t.data, "M\xc3\xbcller^J\xc3\xbcrgen");
    dynbuf_free(&t);
    /* A CS value ignores the character set but still comes out as UTF-8. */
    assert_int_equal(dcm_ds_put_str(ds, DCM_TAG(0x0008, 0x0060), DCM_VR_CS, "\xe9T"), 0);
    dynbuf_init(&t, 0);
    assert_int_equal(dcm_elem_text(ds, dcm_ds_find(ds, DCM_TAG(0x0008, 0x0060)), &t, NULL), 0);
    assert_string_equal((char *)t.data, "\xc3\xa9T");
    dynbuf_free(&t);

    struct dcm_pn pn;
    const char *name = "Yamada^Tarou=\xe5\xb1\xb1\xe7\x94\xb0^\xe5\xa4\xaa\xe9\x83\x8e=\xe3\x82\x84\xe3\x81\xbe\xe3\x81\x9f\xe3\x82\x99^";
    dcm_pn_split(name, strlen(name), &pn);
    assert_int_equal(pn.ngroups, 3);
    assert_int_equal(pn.comp[0][0].n, 6);
    assert_memory_equal(pn.comp[0][0].p, "Yamada", 6);
    assert_int_equal(pn.comp[0][1].n, 5);
    assert_int_equal(pn.comp[0][2].n, 0);
    assert_int_equal(pn.comp[1][0].n, 6);
    assert_int_equal(pn.comp[2][1].n, 0);
    dcm_pn_split("A^B^C^D^E^F", 11, &pn);
    assert_int_equal(pn.ngroups, 1);
    assert_int_equal(pn.comp[0][4].n, 3); /* the fifth component keeps the rest */
    dcm_pn_split("", 0, &pn);
    assert_int_equal(pn.ngroups, 1);
    assert_int_equal(pn.group[0].n, 0);
    dcm_ds_free(ds);
}

static void test_dates(void **state)
{
    (void)state;
    struct dcm_datetime d;
    assert_int_equal(dcm_parse_da("20240229", 8, &d), 0);
    assert_int_equal(d.year, 2024);
    assert_int_equal(d.month, 2);
    assert_int_equal(d.day, 29);
    assert_int_equal(dcm_parse_da("20230229", 8, &d), PACS_EINVAL);
    assert_int_equal(dcm_parse_da("2024.01.31", 10, &d), 0);
    assert_int_equal(dcm_parse_da("202401", 6, &d), PACS_EINVAL);
    assert_int_equal(dcm_parse_da("2024013X", 8, &d), PACS_EINVAL);
    assert_int_equal(dcm_parse_tm("0709", 4, &d), 0);
    assert_int_equal(d.hour, 7);
    assert_int_equal(d.minute, 9);
    assert_int_equal(d.second, -1);
    assert_int_equal(dcm_parse_tm("235959.5 ", 9, &d), 0);
    assert_int_equal(d.usec, 500000);
    assert_int_equal(dcm_parse_tm("07:09:30", 8, &d), 0);
    assert_int_equal(d.second, 30);
    assert_int_equal(dcm_parse_tm("2500", 4, &d), PACS_EINVAL);
    assert_int_equal(dcm_parse_tm("12.5", 4, &d), PACS_EINVAL);
    assert_int_equal(dcm_parse_dt("20240131123000.123456-0500", 26, &d), 0);
    assert_int_equal(d.second, 0);
    assert_int_equal(d.usec, 123456);
    assert_true(d.has_tz);
    assert_int_equal(d.tz_minutes, -300);
    assert_int_equal(dcm_parse_dt("2024", 4, &d), 0);
    assert_int_equal(d.month, -1);
    assert_int_equal(dcm_parse_dt("2024+0100", 9, &d), 0);
    assert_int_equal(d.tz_minutes, 60);
    assert_int_equal(dcm_parse_dt("20241301", 8, &d), PACS_EINVAL);
}

static void test_uid_valid(void **state)
{
    (void)state;
    assert_true(dcm_uid_valid("1.2.840.10008.1.2.1", 19));
    assert_true(dcm_uid_valid("0", 1));
    assert_true(dcm_uid_valid("2.25.0", 6));
    assert_false(dcm_uid_valid("", 0));
    assert_false(dcm_uid_valid("1..2", 4));
    assert_false(dcm_uid_valid("1.02", 4));
    assert_false(dcm_uid_valid("1.2.", 4));
    assert_false(dcm_uid_valid("1.2a", 4));
    char longuid[70];
    memset(longuid, '1', sizeof longuid);
    assert_true(dcm_uid_valid(longuid, 64));
    assert_false(dcm_uid_valid(longuid, 65));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_sorted_and_replace),
        cmocka_unit_test(test_many_elements_and_big_values),
        cmocka_unit_test(test_multivalue_strings),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_sequences),
        cmocka_unit_test(test_text_and_pn),
        cmocka_unit_test(test_dates),
        cmocka_unit_test(test_uid_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
