/* test_dict.c - the data dictionary and UID registry (src/dicom/dict.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "dicom/dict.h"
#include "dicom/vr.h"

static void test_known_tags(void **state)
{
    const struct dcm_dict_entry *e;
    (void)state;

    e = dcm_dict_lookup(DCM_TAG(0x0010, 0x0010));
    assert_non_null(e);
    assert_int_equal(e->tag, 0x00100010);
    assert_int_equal(e->mask, 0xffffffffu);
    assert_int_equal(e->vr[0], DCM_VR_PN);
    assert_int_equal(e->vr[1], 0);
    assert_int_equal(e->retired, 0);
    assert_string_equal(e->keyword, "PatientName");
    assert_string_equal(e->name, "Patient's Name");
    assert_string_equal(e->vm, "1");

    e = dcm_dict_lookup(DCM_TAG(0x7fe0, 0x0010));
    assert_non_null(e);
    assert_string_equal(e->keyword, "PixelData");
    assert_int_equal(e->vr[0], DCM_VR_OB);
    assert_int_equal(e->vr[1], DCM_VR_OW);
    assert_int_equal(e->vr[2], 0);

    e = dcm_dict_lookup(DCM_TAG(0x0028, 0x0106));
    assert_non_null(e);
    assert_string_equal(e->keyword, "SmallestImagePixelValue");
    assert_int_equal(e->vr[0], DCM_VR_US);
    assert_int_equal(e->vr[1], DCM_VR_SS);
    assert_int_equal(dcm_dict_vr(DCM_TAG(0x0028, 0x0106)), DCM_VR_US);

    /* Three VRs: "US or SS or OW". */
    e = dcm_dict_lookup(DCM_TAG(0x0028, 0x1200));
    assert_non_null(e);
    assert_int_equal(e->vr[0], DCM_VR_US);
    assert_int_equal(e->vr[1], DCM_VR_SS);
    assert_int_equal(e->vr[2], DCM_VR_OW);

    assert_int_equal(dcm_dict_vr(DCM_TAG(0x0008, 0x0018)), DCM_VR_UI);
    assert_string_equal(dcm_dict_keyword(DCM_TAG(0x0020, 0x000d)), "StudyInstanceUID");
    e = dcm_dict_lookup(DCM_TAG(0x0008, 0x1140));
    assert_non_null(e);
    assert_int_equal(e->vr[0], DCM_VR_SQ);
    assert_string_equal(e->vm, "1");
}

static void test_items_have_no_vr(void **state)
{
    (void)state;
    assert_string_equal(dcm_dict_keyword(0xfffee000), "Item");
    assert_string_equal(dcm_dict_keyword(0xfffee00d), "ItemDelimitationItem");
    assert_string_equal(dcm_dict_keyword(0xfffee0dd), "SequenceDelimitationItem");
    assert_int_equal(dcm_dict_vr(0xfffee000), DCM_VR_NONE);
    assert_int_equal(dcm_dict_vr(0xfffee0dd), DCM_VR_NONE);
}

static void test_retired(void **state)
{
    const struct dcm_dict_entry *e;
    (void)state;

    /* (0008,0010) Recognition Code, retired. */
    e = dcm_dict_lookup(DCM_TAG(0x0008, 0x0010));
    assert_non_null(e);
    assert_int_equal(e->retired, 1);
    assert_string_equal(e->keyword, "RecognitionCode");
    /* (0000,0001) Command Length to End, retired command element. */
    e = dcm_dict_lookup(DCM_TAG(0x0000, 0x0001));
    assert_non_null(e);
    assert_int_equal(e->retired, 1);
    assert_int_equal(dcm_dict_lookup(DCM_TAG(0x0010, 0x0020))->retired, 0);
}

static void test_keyword_both_ways(void **state)
{
    const struct dcm_dict_entry *e;
    (void)state;

    e = dcm_dict_find_keyword("PatientName");
    assert_non_null(e);
    assert_int_equal(e->tag, 0x00100010);
    assert_ptr_equal(e, dcm_dict_lookup(0x00100010));
    assert_string_equal(dcm_dict_keyword(e->tag), "PatientName");

    e = dcm_dict_find_keyword("SOPInstanceUID");
    assert_non_null(e);
    assert_int_equal(e->tag, 0x00080018);

    /* Repeating-group keywords are found too. */
    e = dcm_dict_find_keyword("OverlayData");
    assert_non_null(e);
    assert_int_equal(e->tag, 0x60003000);
    assert_int_equal(e->mask, 0xff00ffffu);

    assert_null(dcm_dict_find_keyword("NoSuchKeyword"));
    assert_null(dcm_dict_find_keyword("patientname"));
    assert_null(dcm_dict_find_keyword("PatientNam"));
    assert_null(dcm_dict_find_keyword("PatientNameX"));
    assert_null(dcm_dict_find_keyword(""));
    assert_null(dcm_dict_find_keyword(NULL));
    assert_null(dcm_dict_find_keyword("GenericGroupLength"));
}

static void test_every_keyword_round_trips(void **state)
{
    const struct dcm_dict_entry *e;
    unsigned n = 0;
    (void)state;

    for (unsigned i = 0; (e = dcm_dict_at(i)) != NULL; i++) {
        if (!e->keyword[0])
            continue;
        assert_ptr_equal(dcm_dict_find_keyword(e->keyword), e);
        n++;
    }
    for (unsigned i = 0; (e = dcm_dict_repeater_at(i)) != NULL; i++)
        assert_ptr_equal(dcm_dict_find_keyword(e->keyword), e);
    assert_true(n > 4000);
}

static void test_repeaters(void **state)
{
    const struct dcm_dict_entry *e;
    (void)state;

    e = dcm_dict_lookup(0x60003000);
    assert_non_null(e);
    assert_string_equal(e->keyword, "OverlayData");
    assert_int_equal(e->tag, 0x60003000);
    assert_int_equal(e->mask, 0xff00ffffu);
    assert_int_equal(e->vr[0], DCM_VR_OB);
    assert_int_equal(e->vr[1], DCM_VR_OW);

    assert_ptr_equal(dcm_dict_lookup(0x60023000), e);
    assert_ptr_equal(dcm_dict_lookup(0x601e3000), e);
    assert_string_equal(dcm_dict_keyword(0x60020010), "OverlayRows");
    assert_int_equal(dcm_dict_vr(0x60020050), DCM_VR_SS);

    /* Odd groups are private, never overlays. */
    assert_null(dcm_dict_lookup(0x60013000));
    assert_int_equal(dcm_dict_vr(0x60013000), DCM_VR_UN);
    /* ... but an odd group's (gggg,0010) is a private creator. */
    assert_int_equal(dcm_dict_vr(0x60010010), DCM_VR_LO);

    e = dcm_dict_lookup(0x50000010);
    assert_non_null(e);
    assert_string_equal(e->keyword, "NumberOfPoints");
    assert_int_equal(e->retired, 1);
    assert_string_equal(dcm_dict_keyword(0x50063000), "CurveData");

    /* Repeating elements: (0020,31xx), (0028,04x0), (1000,xxx1), (1010,xxxx). */
    assert_string_equal(dcm_dict_keyword(0x002031ab), "SourceImageIDs");
    assert_string_equal(dcm_dict_keyword(0x00280470), "RowsForNthOrderCoefficients");
    assert_string_equal(dcm_dict_keyword(0x10000121), "RunLengthTriplet");
    assert_string_equal(dcm_dict_keyword(0x10101234), "ZonalMap");
    /* Variable pixel data (7Fxx,0010) for a group other than 7FE0. */
    assert_string_equal(dcm_dict_keyword(0x7f200010), "VariablePixelData");
    /* The exact table wins: (7FE0,0010) stays Pixel Data. */
    assert_string_equal(dcm_dict_keyword(0x7fe00010), "PixelData");
}

static void test_every_repeater_found(void **state)
{
    const struct dcm_dict_entry *e;
    unsigned n = 0;
    (void)state;

    for (unsigned i = 0; (e = dcm_dict_repeater_at(i)) != NULL; i++, n++) {
        /* Fill the free nibbles with 2s: even group, non-zero element. */
        uint32_t probe = e->tag | (~e->mask & 0x22222222u);
        assert_true((e->tag & e->mask) == e->tag);
        assert_ptr_equal(dcm_dict_lookup(probe), e);
    }
    assert_int_equal(n, 88);
}

static void test_group_length(void **state)
{
    const struct dcm_dict_entry *e;
    (void)state;

    e = dcm_dict_lookup(DCM_TAG(0x0009, 0x0000));
    assert_non_null(e);
    assert_string_equal(e->keyword, "GenericGroupLength");
    assert_int_equal(e->vr[0], DCM_VR_UL);

    assert_ptr_equal(dcm_dict_lookup(DCM_TAG(0x0008, 0x0000)), e);
    assert_int_equal(dcm_dict_vr(DCM_TAG(0x0008, 0x0000)), DCM_VR_UL);
    assert_ptr_equal(dcm_dict_lookup(DCM_TAG(0x6000, 0x0000)), e);
    /* Group length wins over repeaters matching element 0. */
    assert_ptr_equal(dcm_dict_lookup(DCM_TAG(0x1010, 0x0000)), e);
    assert_ptr_equal(dcm_dict_lookup(DCM_TAG(0x1000, 0x0000)), e);

    /* Groups with their own length entry keep it. */
    assert_string_equal(dcm_dict_keyword(0x00000000), "CommandGroupLength");
    assert_string_equal(dcm_dict_keyword(0x00020000), "FileMetaInformationGroupLength");
}

static void test_private(void **state)
{
    const struct dcm_dict_entry *e;
    (void)state;

    e = dcm_dict_lookup(0x00090010);
    assert_non_null(e);
    assert_string_equal(e->keyword, "PrivateCreator");
    assert_int_equal(e->vr[0], DCM_VR_LO);
    assert_ptr_equal(dcm_dict_lookup(0x002900ff), e);
    assert_int_equal(dcm_dict_vr(0x00290011), DCM_VR_LO);

    assert_null(dcm_dict_lookup(0x00091001));
    assert_int_equal(dcm_dict_vr(0x00091001), DCM_VR_UN);
    assert_string_equal(dcm_dict_keyword(0x00091001), "");
    /* (gggg,0001-000f) and (gggg,0100) of an odd group are not creators. */
    assert_null(dcm_dict_lookup(0x00090001));
    assert_null(dcm_dict_lookup(0x00090100));
    assert_null(dcm_dict_lookup(0xffffffff));
}

static void test_unknown_public(void **state)
{
    (void)state;
    /* Even group, not in the dictionary. */
    assert_null(dcm_dict_lookup(DCM_TAG(0x0010, 0x0011)));
    assert_int_equal(dcm_dict_vr(DCM_TAG(0x0010, 0x0011)), DCM_VR_UN);
    assert_string_equal(dcm_dict_keyword(DCM_TAG(0x0010, 0x0011)), "");
    assert_null(dcm_dict_lookup(DCM_TAG(0x0008, 0x0003)));
    assert_null(dcm_dict_lookup(DCM_TAG(0x0000, 0x0004)));
    /* Retired (0008,0001) Length to End is still in the table. */
    assert_int_equal(dcm_dict_lookup(DCM_TAG(0x0008, 0x0001))->retired, 1);
}

static void test_command_group(void **state)
{
    const struct dcm_dict_entry *e;
    (void)state;

    e = dcm_dict_lookup(DCM_TAG(0x0000, 0x0100));
    assert_non_null(e);
    assert_string_equal(e->keyword, "CommandField");
    assert_int_equal(e->vr[0], DCM_VR_US);
    assert_int_equal(dcm_dict_vr(DCM_TAG(0x0000, 0x0002)), DCM_VR_UI);
    assert_string_equal(dcm_dict_keyword(DCM_TAG(0x0000, 0x0600)), "MoveDestination");
}

static void test_sizes(void **state)
{
    (void)state;
    assert_true(dcm_dict_size() > 4000);
    assert_true(dcm_uid_size() > 400);
    assert_null(dcm_dict_at(dcm_dict_size()));
    assert_non_null(dcm_dict_at(dcm_dict_size() - 1));
    assert_null(dcm_uid_at(dcm_uid_size()));
    assert_non_null(dcm_uid_at(dcm_uid_size() - 1));
}

static void test_every_entry_found(void **state)
{
    uint32_t prev = 0;
    (void)state;

    for (unsigned i = 0; i < dcm_dict_size(); i++) {
        const struct dcm_dict_entry *e = dcm_dict_at(i);
        assert_non_null(e);
        if (i > 0)
            assert_true(e->tag > prev);
        prev = e->tag;
        assert_int_equal(e->mask, 0xffffffffu);
        assert_ptr_equal(dcm_dict_lookup(e->tag), e);
        /* Every VR is a real one, or none at all for items. */
        if (e->vr[0])
            assert_true(dcm_vr_known(e->vr[0]));
        else
            assert_int_equal(DCM_GROUP(e->tag), 0xfffe);
        for (unsigned k = 1; k < 3; k++)
            assert_true(e->vr[k] == 0 || dcm_vr_known(e->vr[k]));
        assert_non_null(e->name);
        assert_non_null(e->vm);
        assert_true(e->vm[0] != '\0');
    }
}

static void test_lookup_mask_invariant(void **state)
{
    static const uint32_t probes[] = {
        0x00000000, 0x00090000, 0x00090010, 0x000900ff, 0x60003000, 0x60023000,
        0x50000010, 0x002031ab, 0x10101234, 0x7f200010, 0x00100010, 0x00191000,
    };
    (void)state;

    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        const struct dcm_dict_entry *e = dcm_dict_lookup(probes[i]);
        if (e)
            assert_int_equal(probes[i] & e->mask, e->tag);
    }
}

static void test_uid_lookup(void **state)
{
    const struct dcm_uid_entry *u;
    (void)state;

    u = dcm_uid_lookup("1.2.840.10008.1.2.1", 19);
    assert_non_null(u);
    assert_string_equal(u->uid, "1.2.840.10008.1.2.1");
    assert_string_equal(u->keyword, "ExplicitVRLittleEndian");
    assert_string_equal(u->name, "Explicit VR Little Endian");
    assert_int_equal(u->type, DCM_UID_TRANSFER_SYNTAX);
    assert_int_equal(u->retired, 0);

    u = dcm_uid_lookup("1.2.840.10008.5.1.4.1.1.2", 25);
    assert_non_null(u);
    assert_string_equal(u->keyword, "CTImageStorage");
    assert_string_equal(u->name, "CT Image Storage");
    assert_int_equal(u->type, DCM_UID_SOP_CLASS);

    /* Padding: a UI value is NUL-padded to even length. */
    u = dcm_uid_lookup("1.2.840.10008.1.2\0", 18);
    assert_non_null(u);
    assert_string_equal(u->keyword, "ImplicitVRLittleEndian");
    assert_ptr_equal(dcm_uid_lookup("1.2.840.10008.1.2  ", 19), u);
    /* Only `len` bytes count: a prefix of a longer string. */
    assert_ptr_equal(dcm_uid_lookup("1.2.840.10008.1.2.1", 17), u);

    u = dcm_uid_lookup("1.2.840.10008.1.2.2", 19);
    assert_non_null(u);
    assert_int_equal(u->retired, 1);
    assert_string_equal(u->keyword, "ExplicitVRBigEndian");

    assert_int_equal(dcm_uid_lookup("1.2.840.10008.1.1", 17)->type, DCM_UID_SOP_CLASS);
    assert_int_equal(dcm_uid_lookup("1.2.840.10008.3.1.1.1", 21)->type,
                     DCM_UID_APPLICATION_CONTEXT);
    assert_int_equal(dcm_uid_lookup("1.2.840.10008.5.1.1.9", 21)->type,
                     DCM_UID_META_SOP_CLASS);
    assert_int_equal(dcm_uid_lookup("1.2.840.10008.1.20.1.1", 22)->type,
                     DCM_UID_WELL_KNOWN_INSTANCE);
    assert_int_equal(dcm_uid_lookup("1.2.840.10008.2.16.4", 20)->type,
                     DCM_UID_CODING_SCHEME);

    assert_null(dcm_uid_lookup("1.2.840.10008.1.2.1.", 20));
    assert_null(dcm_uid_lookup("1.2.840.10008.1.", 16));
    assert_null(dcm_uid_lookup("1.2.3.4", 7));
    assert_null(dcm_uid_lookup("", 0));
    assert_null(dcm_uid_lookup("\0\0", 2));
    assert_null(dcm_uid_lookup("1.2.840\0.10008.1.2", 18));
    assert_null(dcm_uid_lookup(NULL, 0));
}

static void test_uid_keywords_and_order(void **state)
{
    const struct dcm_uid_entry *u, *prev = NULL;
    (void)state;

    u = dcm_uid_find_keyword("CTImageStorage");
    assert_non_null(u);
    assert_string_equal(u->uid, "1.2.840.10008.5.1.4.1.1.2");
    assert_null(dcm_uid_find_keyword("NoSuchUID"));
    assert_null(dcm_uid_find_keyword(""));
    assert_null(dcm_uid_find_keyword(NULL));

    for (unsigned i = 0; (u = dcm_uid_at(i)) != NULL; i++) {
        if (prev)
            assert_true(strcmp(prev->uid, u->uid) < 0);
        prev = u;
        assert_ptr_equal(dcm_uid_lookup(u->uid, (unsigned)strlen(u->uid)), u);
        if (u->keyword[0])
            assert_ptr_equal(dcm_uid_find_keyword(u->keyword), u);
        assert_true(u->type <= DCM_UID_APPLICATION_CONTEXT);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_tags),
        cmocka_unit_test(test_items_have_no_vr),
        cmocka_unit_test(test_retired),
        cmocka_unit_test(test_keyword_both_ways),
        cmocka_unit_test(test_every_keyword_round_trips),
        cmocka_unit_test(test_repeaters),
        cmocka_unit_test(test_every_repeater_found),
        cmocka_unit_test(test_group_length),
        cmocka_unit_test(test_private),
        cmocka_unit_test(test_unknown_public),
        cmocka_unit_test(test_command_group),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_every_entry_found),
        cmocka_unit_test(test_lookup_mask_invariant),
        cmocka_unit_test(test_uid_lookup),
        cmocka_unit_test(test_uid_keywords_and_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
