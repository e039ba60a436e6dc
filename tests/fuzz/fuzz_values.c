/* libFuzzer target: the parsers of single values that read outside bytes -
 * Specific Character Set decoding, DA/TM/DT, person names, UIDs and the
 * numeric accessors. Input: one byte giving the length of a Specific
 * Character Set value, that value, one byte choosing a VR, then the value.
 * Decoded text must always be valid UTF-8. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dicom/charset.h"
#include "dicom/dataset.h"
#include "fuzz_common.h"
#include "util/utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint16_t vrs[] = {
    DCM_VR_PN, DCM_VR_LO, DCM_VR_SH, DCM_VR_LT, DCM_VR_ST, DCM_VR_UT, DCM_VR_UC,
    DCM_VR_CS, DCM_VR_DA, DCM_VR_TM, DCM_VR_DT, DCM_VR_DS, DCM_VR_IS, DCM_VR_UI,
    DCM_VR_US, DCM_VR_SS, DCM_VR_UL, DCM_VR_SL, DCM_VR_FL, DCM_VR_FD, DCM_VR_AT,
    DCM_VR_SV, DCM_VR_UV,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t speclen = data[0];
    if (speclen > size - 2)
        speclen = size - 2;
    const uint8_t *spec = data + 1;
    uint16_t vr = vrs[data[1 + speclen] % (sizeof vrs / sizeof vrs[0])];
    const uint8_t *val = data + 2 + speclen;
    size_t n = size - 2 - speclen;

    struct dynbuf out;
    dynbuf_init(&out, 0);
    struct pacs_err err = { 0 };
    int rc = dcm_charset_decode(spec, speclen, vr, val, n, &out, &err);
    FUZZ_CHECK(rc == 0, "decode failed: %s", err.msg);
    FUZZ_CHECK(utf8_valid(out.data, out.len), "decoded text is not UTF-8");

    struct dcm_pn pn;
    dcm_pn_split((const char *)out.data, out.len, &pn);
    FUZZ_CHECK(pn.ngroups >= 1 && pn.ngroups <= 3, "bad group count");
    struct dcm_datetime dt;
    dcm_parse_da((const char *)val, n, &dt);
    dcm_parse_tm((const char *)val, n, &dt);
    dcm_parse_dt((const char *)val, n, &dt);
    dcm_uid_valid((const char *)val, n);
    dynbuf_free(&out);

    /* The same bytes as an element of that VR, through the accessors. */
    if (n > 0xfffe)
        return 0;
    struct dcm_ds *ds = dcm_ds_new();
    FUZZ_CHECK(ds != NULL, "out of memory");
    if (speclen)
        FUZZ_CHECK(dcm_ds_put(ds, DCM_TAG_SPECIFIC_CHARSET, DCM_VR_CS, spec, (uint32_t)speclen, NULL) == 0, "put");
    struct dcm_elem *e;
    FUZZ_CHECK(dcm_ds_put(ds, DCM_TAG(0x0011, 0x1010), vr, val, (uint32_t)n, &e) == 0, "put");
    uint32_t vm = dcm_elem_vm(e);
    for (uint32_t i = 0; i < vm && i < 64; i++) {
        int64_t iv;
        uint64_t uv;
        double d;
        uint32_t t;
        const char *s;
        size_t sn;
        dcm_elem_int(e, i, &iv);
        dcm_elem_uint(e, i, &uv);
        dcm_elem_double(e, i, &d);
        dcm_elem_tag(e, i, &t);
        if (dcm_elem_str(e, i, &s, &sn) == 0)
            FUZZ_CHECK(s >= (const char *)e->val && s + sn <= (const char *)e->val + e->len, "value out of bounds");
    }
    if (dcm_vr_is_string(vr)) {
        dynbuf_init(&out, 0);
        FUZZ_CHECK(dcm_elem_text(ds, e, &out, &err) == 0, "text failed: %s", err.msg);
        FUZZ_CHECK(utf8_valid(out.data, out.len), "element text is not UTF-8");
        dynbuf_free(&out);
    }
    dcm_ds_free(ds);
    return 0;
}
