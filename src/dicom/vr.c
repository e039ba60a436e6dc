#include "dicom/vr.h"

#define IDX(a, b) (((a) - 'A') * 26 + ((b) - 'A'))
#define K DCM_VRP_KNOWN
#define S DCM_VRP_STR
#define C DCM_VRP_CHARSET
#define M DCM_VRP_MULTI
#define L DCM_VRP_LONG
#define N DCM_VRP_NUM
#define SW2 (1 << DCM_VRP_SWAP_SHIFT)
#define SW4 (2 << DCM_VRP_SWAP_SHIFT)
#define SW8 (3 << DCM_VRP_SWAP_SHIFT)

/* PS3.5 table 6.2-1. AT swaps in 2-byte units (group, element) but is a
 * 4-byte value: dcm_vr_num_size special-cases it. */
const uint8_t dcm_vr_props[26 * 26] = {
    [IDX('A', 'E')] = K | S | M,
    [IDX('A', 'S')] = K | S | M,
    [IDX('A', 'T')] = K | SW2,
    [IDX('C', 'S')] = K | S | M,
    [IDX('D', 'A')] = K | S | M,
    [IDX('D', 'S')] = K | S | M,
    [IDX('D', 'T')] = K | S | M,
    [IDX('F', 'D')] = K | N | SW8,
    [IDX('F', 'L')] = K | N | SW4,
    [IDX('I', 'S')] = K | S | M,
    [IDX('L', 'O')] = K | S | M | C,
    [IDX('L', 'T')] = K | S | C,
    [IDX('O', 'B')] = K | L,
    [IDX('O', 'D')] = K | L | SW8,
    [IDX('O', 'F')] = K | L | SW4,
    [IDX('O', 'L')] = K | L | SW4,
    [IDX('O', 'V')] = K | L | SW8,
    [IDX('O', 'W')] = K | L | SW2,
    [IDX('P', 'N')] = K | S | M | C,
    [IDX('S', 'H')] = K | S | M | C,
    [IDX('S', 'L')] = K | N | SW4,
    [IDX('S', 'Q')] = K | L,
    [IDX('S', 'S')] = K | N | SW2,
    [IDX('S', 'T')] = K | S | C,
    [IDX('S', 'V')] = K | L | N | SW8,
    [IDX('T', 'M')] = K | S | M,
    [IDX('U', 'C')] = K | S | M | C | L,
    [IDX('U', 'I')] = K | S | M,
    [IDX('U', 'L')] = K | N | SW4,
    [IDX('U', 'N')] = K | L,
    [IDX('U', 'R')] = K | S | L,
    [IDX('U', 'S')] = K | N | SW2,
    [IDX('U', 'T')] = K | S | C | L,
    [IDX('U', 'V')] = K | L | N | SW8,
};

const char *dcm_vr_str(uint16_t vr, char out[3])
{
    char a = (char)(vr >> 8), b = (char)(vr & 0xff);
    if (a < 'A' || a > 'Z' || b < 'A' || b > 'Z')
        a = b = '?';
    out[0] = a;
    out[1] = b;
    out[2] = '\0';
    return out;
}

uint16_t dcm_vr_parse(const char *s)
{
    if (!s || s[0] < 'A' || s[0] > 'Z' || s[1] < 'A' || s[1] > 'Z')
        return DCM_VR_NONE;
    return DCM_VR(s[0], s[1]);
}
