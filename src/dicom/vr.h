/* vr.h - DICOM value representations (PS3.5 6.2): codes and properties.
 *
 * A VR is two ASCII letters packed big-endian into a uint16_t, so the code
 * for "PN" is ('P' << 8) | 'N' and it reads the same in a hex dump. 0 means
 * "no VR known".
 */
#ifndef PACS_DCM_VR_H
#define PACS_DCM_VR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DCM_VR(a, b) ((uint16_t)(((unsigned)(a) << 8) | (unsigned)(b)))

enum {
    DCM_VR_NONE = 0,
    DCM_VR_AE = DCM_VR('A', 'E'), DCM_VR_AS = DCM_VR('A', 'S'),
    DCM_VR_AT = DCM_VR('A', 'T'), DCM_VR_CS = DCM_VR('C', 'S'),
    DCM_VR_DA = DCM_VR('D', 'A'), DCM_VR_DS = DCM_VR('D', 'S'),
    DCM_VR_DT = DCM_VR('D', 'T'), DCM_VR_FD = DCM_VR('F', 'D'),
    DCM_VR_FL = DCM_VR('F', 'L'), DCM_VR_IS = DCM_VR('I', 'S'),
    DCM_VR_LO = DCM_VR('L', 'O'), DCM_VR_LT = DCM_VR('L', 'T'),
    DCM_VR_OB = DCM_VR('O', 'B'), DCM_VR_OD = DCM_VR('O', 'D'),
    DCM_VR_OF = DCM_VR('O', 'F'), DCM_VR_OL = DCM_VR('O', 'L'),
    DCM_VR_OV = DCM_VR('O', 'V'), DCM_VR_OW = DCM_VR('O', 'W'),
    DCM_VR_PN = DCM_VR('P', 'N'), DCM_VR_SH = DCM_VR('S', 'H'),
    DCM_VR_SL = DCM_VR('S', 'L'), DCM_VR_SQ = DCM_VR('S', 'Q'),
    DCM_VR_SS = DCM_VR('S', 'S'), DCM_VR_ST = DCM_VR('S', 'T'),
    DCM_VR_SV = DCM_VR('S', 'V'), DCM_VR_TM = DCM_VR('T', 'M'),
    DCM_VR_UC = DCM_VR('U', 'C'), DCM_VR_UI = DCM_VR('U', 'I'),
    DCM_VR_UL = DCM_VR('U', 'L'), DCM_VR_UN = DCM_VR('U', 'N'),
    DCM_VR_UR = DCM_VR('U', 'R'), DCM_VR_US = DCM_VR('U', 'S'),
    DCM_VR_UT = DCM_VR('U', 'T'), DCM_VR_UV = DCM_VR('U', 'V'),
};

/* Properties of each VR, indexed by dcm_vr_index(); one byte each so the
 * parser's per-element questions cost a table load (see vr.c). */
enum {
    DCM_VRP_KNOWN = 0x80,
    DCM_VRP_STR = 0x01,     /* character string */
    DCM_VRP_CHARSET = 0x02, /* uses Specific Character Set */
    DCM_VRP_MULTI = 0x04,   /* backslash multi-valued string */
    DCM_VRP_LONG = 0x08,    /* explicit VR: 2 reserved bytes + 4-byte length */
    DCM_VRP_NUM = 0x40,     /* fixed-size binary numbers (size = swap unit) */
    DCM_VRP_SWAP_SHIFT = 4, /* bits 4-5: log2 of the byte-swap unit */
};
extern const uint8_t dcm_vr_props[26 * 26];

static inline unsigned dcm_vr_prop(uint16_t vr)
{
    unsigned a = (unsigned)(vr >> 8) - 'A', b = (unsigned)(vr & 0xff) - 'A';
    return (a < 26 && b < 26) ? dcm_vr_props[a * 26 + b] : 0;
}

/* True for the 34 VRs of PS3.5 table 6.2-1. */
static inline bool dcm_vr_known(uint16_t vr) { return dcm_vr_prop(vr) & DCM_VRP_KNOWN; }
/* Writes the two letters and a NUL into out[3]; "??" for unprintable codes. */
const char *dcm_vr_str(uint16_t vr, char out[3]);
/* Parses two letters; returns DCM_VR_NONE unless both are A-Z. */
uint16_t dcm_vr_parse(const char *s);
/* Explicit VR encodings with a 2-byte reserved field and a 4-byte length. */
static inline bool dcm_vr_long_length(uint16_t vr) { return dcm_vr_prop(vr) & DCM_VRP_LONG; }
/* Character-string VRs (AE AS CS DA DS DT IS LO LT PN SH ST TM UC UI UR UT). */
static inline bool dcm_vr_is_string(uint16_t vr) { return dcm_vr_prop(vr) & DCM_VRP_STR; }
/* String VRs whose text may use the Specific Character Set (LO LT PN SH ST
 * UC UT): the rest are restricted to the default repertoire. */
static inline bool dcm_vr_uses_charset(uint16_t vr) { return dcm_vr_prop(vr) & DCM_VRP_CHARSET; }
/* String VRs that are multi-valued with backslash (not LT ST UT UR). */
static inline bool dcm_vr_multivalued(uint16_t vr) { return dcm_vr_prop(vr) & DCM_VRP_MULTI; }
/* Byte-swap unit for big-endian conversion: 1 (none), 2, 4 or 8. AT is 2. */
static inline unsigned dcm_vr_swap_unit(uint16_t vr)
{
    return 1u << ((dcm_vr_prop(vr) >> DCM_VRP_SWAP_SHIFT) & 3);
}
/* Fixed size of one binary number (US 2, UL 4, FD 8, AT 4 ...), 0 for others. */
static inline unsigned dcm_vr_num_size(uint16_t vr)
{
    if (vr == DCM_VR_AT)
        return 4;
    return (dcm_vr_prop(vr) & DCM_VRP_NUM) ? dcm_vr_swap_unit(vr) : 0;
}
/* Padding byte for an odd-length value: NUL for UI and binary VRs, space
 * for other strings. */
static inline uint8_t dcm_vr_pad(uint16_t vr)
{
    return (vr != DCM_VR_UI && dcm_vr_is_string(vr)) ? ' ' : 0;
}

#endif
