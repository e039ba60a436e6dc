/* charset.c - Specific Character Set decoding (see charset.h for the rules).
 *
 * Design
 * - Value 1 of the Specific Character Set picks a mode: ISO 2022 (all the
 *   single-byte sets and the ISO 2022 multi-byte sets) or one of the
 *   stand-alone encodings (UTF-8, GB18030, GBK), which have no escapes.
 * - ISO 2022 mode is a small state machine over two graphic sets: G0 (bytes
 *   0x21-0x7E) and G1 (bytes 0xA0-0xFF), designated by escape sequences and
 *   reset to value 1's designations at delimiters. Set conversion:
 *     ASCII, JIS X 0201 romaji, ISO 8859-1, JIS X 0201 katakana: arithmetic;
 *     other single-byte sets: 96-entry tables built once from iconv;
 *     two-byte sets: rebuilt as EUC (JIS X 0208/0212 -> EUC-JP) or passed as
 *     they are (KS X 1001 -> EUC-KR, GB 2312 -> EUC-CN, Shift_JIS) to iconv.
 * - UTF-8 is validated here (no iconv); GB18030 and GBK go through iconv.
 * - Output goes to a sink that caps what one call may append.
 */
#include "dicom/charset.h"

#include <errno.h>
#include <iconv.h>
#include <string.h>
#include <threads.h>

#include "dicom/vr.h"
#include "util/limits.h"

#define ESC 0x1b
#define REPLACEMENT_CHAR 0xfffdu
/* Longest escape sequence we accept intermediates for (ESC $ ( D has 2). */
#define ESC_MAX_INTERMEDIATES 3
/* Staging size for iconv output and EUC rebuilt input. */
#define CONV_CHUNK 510

/* Graphic character sets that can sit in G0 or G1. */
enum cset {
    CS_NONE,     /* nothing designated: bytes become U+FFFD */
    CS_ASCII,    /* ISO-IR 6 (G0) */
    CS_ROMAJI,   /* ISO-IR 14, JIS X 0201 romaji (G0), decoded as ASCII */
    CS_JIS0208,  /* ISO-IR 87 (G0, two bytes) */
    CS_JIS0212,  /* ISO-IR 159 (G0, two bytes) */
    CS_LATIN1,   /* ISO-IR 100 (G1) */
    CS_SB_FIRST, /* single-byte G1 sets converted by table: */
    CS_8859_2 = CS_SB_FIRST,
    CS_8859_3,
    CS_8859_4,
    CS_8859_5,
    CS_8859_6,
    CS_8859_7,
    CS_8859_8,
    CS_8859_9,
    CS_8859_15,
    CS_TIS620,
    CS_SB_END,
    CS_KATAKANA = CS_SB_END, /* ISO-IR 13 (G1), plus Shift_JIS pairs */
    CS_KSX1001,              /* ISO-IR 149 (G1, two bytes) */
    CS_GB2312,               /* ISO-IR 58 (G1, two bytes) */
};

#define SB_COUNT (CS_SB_END - CS_SB_FIRST)

/* iconv names of the table-driven sets, in enum cset order. */
static const char *const sb_iconv_name[SB_COUNT] = {
    "ISO-8859-2", "ISO-8859-3", "ISO-8859-4", "ISO-8859-5", "ISO-8859-6",
    "ISO-8859-7", "ISO-8859-8", "ISO-8859-9", "ISO-8859-15", "TIS-620",
};

enum mode { MODE_2022, MODE_UTF8, MODE_GB18030, MODE_GBK };

struct term_def {
    const char *name;
    uint8_t mode;
    uint8_t g0, g1; /* initial designations (MODE_2022) */
    bool std;       /* a Defined Term of PS3.3 (not an accepted alias) */
};

/* The default repertoire's G1 is ISO 8859-1: see charset.h. */
static const struct term_def term_default = {"", MODE_2022, CS_ASCII, CS_LATIN1, true};

static const struct term_def terms[] = {
    {"ISO_IR 6", MODE_2022, CS_ASCII, CS_LATIN1, true},
    {"ISO 2022 IR 6", MODE_2022, CS_ASCII, CS_LATIN1, true},
    {"ISO_IR 100", MODE_2022, CS_ASCII, CS_LATIN1, true},
    {"ISO 2022 IR 100", MODE_2022, CS_ASCII, CS_LATIN1, true},
    {"ISO_IR 101", MODE_2022, CS_ASCII, CS_8859_2, true},
    {"ISO 2022 IR 101", MODE_2022, CS_ASCII, CS_8859_2, true},
    {"ISO_IR 109", MODE_2022, CS_ASCII, CS_8859_3, true},
    {"ISO 2022 IR 109", MODE_2022, CS_ASCII, CS_8859_3, true},
    {"ISO_IR 110", MODE_2022, CS_ASCII, CS_8859_4, true},
    {"ISO 2022 IR 110", MODE_2022, CS_ASCII, CS_8859_4, true},
    {"ISO_IR 144", MODE_2022, CS_ASCII, CS_8859_5, true},
    {"ISO 2022 IR 144", MODE_2022, CS_ASCII, CS_8859_5, true},
    {"ISO_IR 127", MODE_2022, CS_ASCII, CS_8859_6, true},
    {"ISO 2022 IR 127", MODE_2022, CS_ASCII, CS_8859_6, true},
    {"ISO_IR 126", MODE_2022, CS_ASCII, CS_8859_7, true},
    {"ISO 2022 IR 126", MODE_2022, CS_ASCII, CS_8859_7, true},
    {"ISO_IR 138", MODE_2022, CS_ASCII, CS_8859_8, true},
    {"ISO 2022 IR 138", MODE_2022, CS_ASCII, CS_8859_8, true},
    {"ISO_IR 148", MODE_2022, CS_ASCII, CS_8859_9, true},
    {"ISO 2022 IR 148", MODE_2022, CS_ASCII, CS_8859_9, true},
    {"ISO_IR 203", MODE_2022, CS_ASCII, CS_8859_15, true},
    {"ISO 2022 IR 203", MODE_2022, CS_ASCII, CS_8859_15, true},
    {"ISO_IR 166", MODE_2022, CS_ASCII, CS_TIS620, true},
    {"ISO 2022 IR 166", MODE_2022, CS_ASCII, CS_TIS620, true},
    {"ISO_IR 13", MODE_2022, CS_ROMAJI, CS_KATAKANA, true},
    {"ISO 2022 IR 13", MODE_2022, CS_ROMAJI, CS_KATAKANA, true},
    {"ISO 2022 IR 87", MODE_2022, CS_ASCII, CS_NONE, true},
    {"ISO 2022 IR 159", MODE_2022, CS_ASCII, CS_NONE, true},
    {"ISO 2022 IR 149", MODE_2022, CS_ASCII, CS_KSX1001, true},
    {"ISO 2022 IR 58", MODE_2022, CS_ASCII, CS_GB2312, true},
    {"ISO_IR 192", MODE_UTF8, CS_NONE, CS_NONE, true},
    {"GB18030", MODE_GB18030, CS_NONE, CS_NONE, true},
    {"GBK", MODE_GBK, CS_NONE, CS_NONE, true},
    /* Aliases pydicom accepts without a warning (CP 1234 drafts, codec). */
    {"ISO 2022 GBK", MODE_GBK, CS_NONE, CS_NONE, false},
    {"ISO 2022 58", MODE_2022, CS_ASCII, CS_GB2312, false},
    {"UTF-8", MODE_UTF8, CS_NONE, CS_NONE, false},
    {"UTF8", MODE_UTF8, CS_NONE, CS_NONE, false},
};

/* ISO 2022 designations of PS3.3 tables C.12-3 and C.12-4 (bytes after ESC). */
struct esc_def {
    char seq[4];
    uint8_t len;
    uint8_t slot; /* 0 = G0, 1 = G1 */
    uint8_t set;
};

static const struct esc_def escapes[] = {
    {"(B", 2, 0, CS_ASCII},    {"(J", 2, 0, CS_ROMAJI},
    {"$B", 2, 0, CS_JIS0208},  {"$(B", 3, 0, CS_JIS0208},
    {"$(D", 3, 0, CS_JIS0212}, {"-A", 2, 1, CS_LATIN1},
    {"-B", 2, 1, CS_8859_2},   {"-C", 2, 1, CS_8859_3},
    {"-D", 2, 1, CS_8859_4},   {"-L", 2, 1, CS_8859_5},
    {"-G", 2, 1, CS_8859_6},   {"-F", 2, 1, CS_8859_7},
    {"-H", 2, 1, CS_8859_8},   {"-M", 2, 1, CS_8859_9},
    {"-b", 2, 1, CS_8859_15},  {"-T", 2, 1, CS_TIS620},
    {")I", 2, 1, CS_KATAKANA}, {"$)C", 3, 1, CS_KSX1001},
    {"$)A", 3, 1, CS_GB2312},
};

/* Delimiters that reset the designations (besides CR LF FF TAB). */
enum { DL_BACKSLASH = 1, DL_PN = 2 };

/* ---- single-byte tables: built once, read-only afterwards ---- */

static uint16_t sb_table[SB_COUNT][96]; /* bytes 0xA0-0xFF; 0 = undefined */
static once_flag sb_once = ONCE_FLAG_INIT;

static void sb_build(void)
{
    for (int k = 0; k < SB_COUNT; k++) {
        iconv_t cd = iconv_open("UTF-32LE", sb_iconv_name[k]);
        if (cd == (iconv_t)-1)
            continue; /* no gconv module: the set decodes to U+FFFD */
        for (int b = 0xa0; b <= 0xff; b++) {
            char inb = (char)b;
            unsigned char outb[8];
            char *ip = &inb, *op = (char *)outb;
            size_t il = 1, ol = sizeof outb;
            iconv(cd, NULL, NULL, NULL, NULL);
            if (iconv(cd, &ip, &il, &op, &ol) == (size_t)-1 || ol != 4)
                continue;
            uint32_t cp = (uint32_t)outb[0] | (uint32_t)outb[1] << 8 |
                          (uint32_t)outb[2] << 16 | (uint32_t)outb[3] << 24;
            if (cp > 0 && cp <= 0xffff)
                sb_table[k][b - 0xa0] = (uint16_t)cp;
        }
        iconv_close(cd);
    }
}

/* ---- per-thread iconv descriptors for the multi-byte sets ---- */

enum { CD_EUCJP, CD_EUCKR, CD_EUCCN, CD_SJIS, CD_GB18030, CD_GBK, CD_COUNT };

static const char *const cd_name[CD_COUNT] = {
    "EUC-JP", "EUC-KR", "EUC-CN", "SHIFT_JIS", "GB18030", "GBK",
};

static _Thread_local iconv_t tl_cd[CD_COUNT];    /* NULL = not opened */
static _Thread_local bool tl_cd_failed[CD_COUNT]; /* iconv_open failed */
static _Thread_local bool tl_cd_any;              /* something to close */

static once_flag tss_once = ONCE_FLAG_INIT;
static tss_t tss_key;
static bool tss_ready; /* written once under tss_once */

static void tss_dtor(void *p)
{
    (void)p;
    dcm_charset_thread_cleanup();
}

static void tss_init(void)
{
    tss_ready = tss_create(&tss_key, tss_dtor) == thrd_success;
}

void dcm_charset_thread_cleanup(void)
{
    if (!tl_cd_any)
        return;
    for (int k = 0; k < CD_COUNT; k++) {
        if (tl_cd[k])
            iconv_close(tl_cd[k]);
        tl_cd[k] = NULL;
        tl_cd_failed[k] = false;
    }
    tl_cd_any = false;
    /* This thread went through tss_once when it opened a descriptor. */
    if (tss_ready)
        tss_set(tss_key, NULL);
}

/* This thread's descriptor converting cd_name[id] to UTF-8, in its initial
 * state, or NULL if iconv cannot open it. */
static iconv_t cd_get(int id)
{
    if (tl_cd[id]) {
        iconv(tl_cd[id], NULL, NULL, NULL, NULL);
        return tl_cd[id];
    }
    if (tl_cd_failed[id])
        return NULL;
    iconv_t cd = iconv_open("UTF-8", cd_name[id]);
    if (cd == (iconv_t)-1) {
        tl_cd_failed[id] = true;
        return NULL;
    }
    call_once(&tss_once, tss_init);
    if (tss_ready)
        tss_set(tss_key, &tl_cd); /* non-NULL: run tss_dtor at thread exit */
    tl_cd[id] = cd;
    tl_cd_any = true;
    return cd;
}

/* ---- output sink ---- */

struct sink {
    struct dynbuf *out;
    size_t start;   /* out->len on entry: what to restore on error */
    unsigned notes; /* enum dcm_charset_note */
};

static int sink_bytes(struct sink *s, const void *p, size_t n)
{
    size_t used = s->out->len - s->start;
    if (n > PACS_MAX_STRING_LEN - used)
        return PACS_ELIMIT;
    return dynbuf_append(s->out, p, n);
}

/* Writes cp as UTF-8 into b (room for 4); returns the length. */
static size_t utf8_put(uint8_t *b, uint32_t cp)
{
    if (cp < 0x80) {
        b[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        b[0] = (uint8_t)(0xc0 | cp >> 6);
        b[1] = (uint8_t)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        b[0] = (uint8_t)(0xe0 | cp >> 12);
        b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (uint8_t)(0x80 | (cp & 0x3f));
        return 3;
    }
    b[0] = (uint8_t)(0xf0 | cp >> 18);
    b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
    b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
    b[3] = (uint8_t)(0x80 | (cp & 0x3f));
    return 4;
}

static int sink_cp(struct sink *s, uint32_t cp)
{
    uint8_t b[4];
    return sink_bytes(s, b, utf8_put(b, cp));
}

static int sink_bad(struct sink *s)
{
    s->notes |= DCM_CS_NOTE_REPLACED;
    return sink_cp(s, REPLACEMENT_CHAR);
}

/* ---- helpers ---- */

/* True if no byte is >= 0x80 or ESC: the text is its own UTF-8. Eight bytes
 * at a time, since every indexed string passes here. */
static bool is_plain(const uint8_t *p, size_t n)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    const uint64_t escs = ones * ESC;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w, x;
        memcpy(&w, p + i, 8);
        x = w ^ escs; /* a zero byte where w held ESC */
        if ((w | ((x - ones) & ~x)) & highs)
            return false;
    }
    for (; i < n; i++)
        if (p[i] >= 0x80 || p[i] == ESC)
            return false;
    return true;
}

static bool is_pad(uint8_t c) { return c == ' ' || c == '\0'; }

static void trim(const uint8_t **p, size_t *len)
{
    while (*len && is_pad((*p)[0])) {
        (*p)++;
        (*len)--;
    }
    while (*len && is_pad((*p)[*len - 1]))
        (*len)--;
}

/* Lenient spelling: case-insensitive, ' ' '_' '-' alike. */
static uint8_t fold(uint8_t c)
{
    if (c == '_' || c == '-')
        return ' ';
    if (c >= 'a' && c <= 'z')
        return (uint8_t)(c - 'a' + 'A');
    return c;
}

/* The definition of a (trimmed, non-empty) term; *exact tells whether it
 * matched as spelled. NULL if unknown. */
static const struct term_def *term_lookup(const uint8_t *t, size_t len, bool *exact)
{
    size_t count = sizeof terms / sizeof terms[0];
    for (size_t k = 0; k < count; k++) {
        if (strlen(terms[k].name) == len && memcmp(terms[k].name, t, len) == 0) {
            *exact = true;
            return &terms[k];
        }
    }
    for (size_t k = 0; k < count; k++) {
        const char *name = terms[k].name;
        if (strlen(name) != len)
            continue;
        size_t i = 0;
        while (i < len && fold((uint8_t)name[i]) == fold(t[i]))
            i++;
        if (i == len) {
            *exact = false;
            return &terms[k];
        }
    }
    return NULL;
}

static bool mode_standalone(uint8_t mode) { return mode != MODE_2022; }

/* Resolves the spec to value 1's definition, collecting notes about the
 * other terms (which decoding does not need: every known escape is
 * honoured). */
static const struct term_def *spec_parse(const uint8_t *spec, size_t len, unsigned *notes)
{
    const struct term_def *first = &term_default;
    size_t i = 0;
    unsigned idx = 0;
    if (!spec || !len)
        return first;
    for (;;) {
        size_t j = i;
        while (j < len && spec[j] != '\\')
            j++;
        const uint8_t *t = spec + i;
        size_t tl = j - i;
        trim(&t, &tl);
        if (tl) {
            bool exact = false;
            const struct term_def *d = term_lookup(t, tl, &exact);
            if (!d)
                *notes |= DCM_CS_NOTE_UNKNOWN_TERM;
            else if (!exact)
                *notes |= DCM_CS_NOTE_CORRECTED_TERM;
            if (idx == 0) {
                if (d)
                    first = d;
            } else if (d && (mode_standalone(first->mode) || mode_standalone(d->mode))) {
                *notes |= DCM_CS_NOTE_IGNORED_TERM;
            }
        }
        if (j >= len)
            break;
        i = j + 1;
        idx++;
    }
    return first;
}

/* Parses the escape sequence at p[0] == ESC (ISO 2022: ESC, intermediates
 * 02/00-02/15, a final byte 03/00-07/14). *len gets the bytes it spans (for
 * a malformed one: ESC and its intermediates). NULL if not in our table. */
static const struct esc_def *esc_parse(const uint8_t *p, size_t n, size_t *len)
{
    size_t k = 1;
    while (k < n && k <= ESC_MAX_INTERMEDIATES && p[k] >= 0x20 && p[k] <= 0x2f)
        k++;
    if (k >= n || p[k] < 0x30 || p[k] > 0x7e) {
        *len = k;
        return NULL;
    }
    *len = k + 1;
    for (size_t e = 0; e < sizeof escapes / sizeof escapes[0]; e++)
        if (escapes[e].len == k && memcmp(escapes[e].seq, p + 1, k) == 0)
            return &escapes[e];
    return NULL;
}

/* Bytes one rejected character spans, so decoding can resync after it. */
static size_t bad_char_len(int id, const uint8_t *p, size_t n)
{
    size_t k = 1;
    if (id == CD_EUCJP && p[0] == 0x8f)
        k = 3;
    else if (id == CD_EUCJP || id == CD_EUCKR || id == CD_EUCCN || id == CD_SJIS)
        k = 2;
    return k < n ? k : n;
}

/* Converts in[0..n) with descriptor `id` to UTF-8; a character iconv rejects
 * (or every non-ASCII one, if iconv lacks the set) becomes U+FFFD. */
static int conv_run(struct sink *s, int id, const uint8_t *in, size_t n)
{
    iconv_t cd;
    char *ip = (char *)(uintptr_t)in; /* iconv does not write its input */
    size_t il = n;
    int rc = 0;
    if (!n)
        goto out;
    cd = cd_get(id);
    while (il > 0) {
        char obuf[CONV_CHUNK * 2];
        char *op = obuf;
        size_t ol = sizeof obuf, r = (size_t)-1;
        int e = EILSEQ;
        if (cd) {
            r = iconv(cd, &ip, &il, &op, &ol);
            e = errno;
        } else {
            while (il > 0 && ol > 0 && (uint8_t)*ip < 0x80) {
                *op++ = *ip++;
                il--;
                ol--;
            }
            if (op != obuf)
                r = 0;
        }
        rc = sink_bytes(s, obuf, (size_t)(op - obuf));
        if (rc)
            goto out;
        if (r != (size_t)-1)
            continue;
        if (e == E2BIG && op != obuf)
            continue;
        size_t skip = bad_char_len(id, (const uint8_t *)ip, il);
        ip += skip;
        il -= skip;
        rc = sink_bad(s);
        if (rc)
            goto out;
    }
out:
    return rc;
}

/* ---- decoders ---- */

/* UTF-8: valid sequences are copied; each maximal ill-formed subpart
 * (Unicode ch. 3 "U+FFFD substitution of maximal subparts", as Python does)
 * becomes one U+FFFD. Surrogates and overlongs are ill-formed. */
static int dec_utf8(struct sink *s, const uint8_t *in, size_t n)
{
    size_t i = 0, run = 0;
    int rc = 0;
    while (i < n) {
        uint8_t c = in[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need = 0, k = 0;
        uint8_t lo = 0x80, hi = 0xbf; /* range of the second byte */
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            lo = c == 0xe0 ? 0xa0 : 0x80;
            hi = c == 0xed ? 0x9f : 0xbf;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            lo = c == 0xf0 ? 0x90 : 0x80;
            hi = c == 0xf4 ? 0x8f : 0xbf;
        }
        if (need && i + 1 < n && in[i + 1] >= lo && in[i + 1] <= hi) {
            k = 1;
            while (k < need && i + 1 + k < n && (in[i + 1 + k] & 0xc0) == 0x80)
                k++;
        }
        if (need && k == need) {
            i += 1 + need;
            continue;
        }
        rc = sink_bytes(s, in + run, i - run);
        if (rc)
            goto out;
        rc = sink_bad(s);
        if (rc)
            goto out;
        i += 1 + k;
        run = i;
    }
    rc = sink_bytes(s, in + run, n - run);
out:
    return rc;
}

static bool sjis_lead(uint8_t c) { return (c >= 0x81 && c <= 0x9f) || (c >= 0xe0 && c <= 0xfc); }
static bool sjis_trail(uint8_t c) { return c >= 0x40 && c <= 0xfc && c != 0x7f; }
static bool gr94(uint8_t c) { return c >= 0xa1 && c <= 0xfe; }
static bool gl94(uint8_t c) { return c >= 0x21 && c <= 0x7e; }

/* Characters from G1 (a byte >= 0x80) at in[*pi]: one, or a run of the
 * same set; advances *pi. */
static int dec_g1(struct sink *s, uint8_t g1, const uint8_t *in, size_t n, size_t *pi)
{
    size_t i = *pi;
    uint8_t c = in[i];
    int rc;
    if (g1 == CS_LATIN1 || (g1 >= CS_SB_FIRST && g1 < CS_SB_END)) {
        /* A run of single-byte characters, staged. 0x80-0x9F are the C1
         * controls in every ISO 8859 set (and in pydicom's TIS-620). */
        const uint16_t *tab = g1 == CS_LATIN1 ? NULL : sb_table[g1 - CS_SB_FIRST];
        uint8_t buf[CONV_CHUNK];
        size_t bl = 0;
        while (i < n && in[i] >= 0x80 && bl + 3 <= sizeof buf) {
            uint32_t cp = in[i++];
            if (tab && cp >= 0xa0)
                cp = tab[cp - 0xa0];
            if (!cp) {
                cp = REPLACEMENT_CHAR;
                s->notes |= DCM_CS_NOTE_REPLACED;
            }
            bl += utf8_put(buf + bl, cp);
        }
        rc = sink_bytes(s, buf, bl);
    } else if (g1 == CS_KATAKANA) {
        if (c >= 0xa1 && c <= 0xdf) {
            rc = sink_cp(s, 0xff61u + (c - 0xa1u));
            i++;
        } else if (sjis_lead(c) && i + 1 < n && sjis_trail(in[i + 1])) {
            rc = conv_run(s, CD_SJIS, in + i, 2);
            i += 2;
        } else {
            rc = sink_bad(s);
            i++;
        }
    } else if (g1 == CS_KSX1001 || g1 == CS_GB2312) {
        size_t j = i;
        while (j + 1 < n && gr94(in[j]) && gr94(in[j + 1]))
            j += 2;
        if (j > i) {
            rc = conv_run(s, g1 == CS_KSX1001 ? CD_EUCKR : CD_EUCCN, in + i, j - i);
            i = j;
        } else {
            rc = sink_bad(s);
            i++;
        }
    } else {
        rc = sink_bad(s);
        i++;
    }
    *pi = i;
    return rc;
}

/* A run of JIS X 0208/0212 characters from G0 at in[*pi] (in[*pi] is
 * 0x21-0x7E); rebuilt as EUC-JP for iconv. Advances *pi past the run. */
static int dec_jis(struct sink *s, uint8_t g0, const uint8_t *in, size_t n, size_t *pi)
{
    uint8_t buf[CONV_CHUNK];
    size_t bl = 0, i = *pi;
    int rc = 0;
    while (i < n && gl94(in[i])) {
        if (i + 1 >= n || !gl94(in[i + 1])) {
            rc = conv_run(s, CD_EUCJP, buf, bl);
            bl = 0;
            if (rc)
                goto out;
            rc = sink_bad(s);
            if (rc)
                goto out;
            i++;
            continue;
        }
        if (g0 == CS_JIS0212)
            buf[bl++] = 0x8f;
        buf[bl++] = (uint8_t)(in[i] | 0x80);
        buf[bl++] = (uint8_t)(in[i + 1] | 0x80);
        i += 2;
        if (bl + 3 > sizeof buf) {
            rc = conv_run(s, CD_EUCJP, buf, bl);
            bl = 0;
            if (rc)
                goto out;
        }
    }
    rc = conv_run(s, CD_EUCJP, buf, bl);
out:
    *pi = i;
    return rc;
}

static bool is_double_g0(uint8_t g0) { return g0 == CS_JIS0208 || g0 == CS_JIS0212; }

/* ISO 2022 code extensions (PS3.5 6.1.2.5): G0/G1 start as value 1 sets
 * them and return there after each delimiter of `dl` and CR LF FF TAB. */
static int dec_2022(struct sink *s, const struct term_def *first, unsigned dl,
                    const uint8_t *in, size_t n)
{
    uint8_t g0 = first->g0, g1 = first->g1;
    size_t i = 0;
    int rc = 0;
    call_once(&sb_once, sb_build);
    while (i < n) {
        uint8_t c = in[i];
        bool reset = false;
        if (c == ESC) {
            size_t len;
            const struct esc_def *e = esc_parse(in + i, n - i, &len);
            i += len;
            if (e) {
                if (e->slot == 0)
                    g0 = e->set;
                else
                    g1 = e->set;
                continue;
            }
            /* pydicom decodes what follows an unknown escape with value 1 */
            s->notes |= DCM_CS_NOTE_UNKNOWN_ESCAPE;
            rc = sink_bad(s);
            reset = true;
        } else if (c >= 0x80) {
            rc = dec_g1(s, g1, in, n, &i);
        } else if (c < 0x20 || c == 0x7f) {
            rc = sink_bytes(s, &c, 1);
            i++;
            reset = c == '\r' || c == '\n' || c == '\f' || c == '\t';
        } else if (is_double_g0(g0) && c != ' ') {
            rc = dec_jis(s, g0, in, n, &i);
        } else {
            /* A run in a single-byte G0 (ASCII, romaji), up to and including
             * a delimiter; in a two-byte G0 only the SPACE gets here. */
            size_t j = i;
            while (j < n && in[j] >= 0x20 && in[j] < 0x7f) {
                uint8_t d = in[j++];
                if ((d == '\\' && (dl & DL_BACKSLASH)) ||
                    ((d == '^' || d == '=') && (dl & DL_PN))) {
                    reset = true;
                    break;
                }
                if (is_double_g0(g0))
                    break;
            }
            rc = sink_bytes(s, in + i, j - i);
            i = j;
        }
        if (rc)
            goto out;
        if (reset) {
            g0 = first->g0;
            g1 = first->g1;
        }
    }
out:
    return rc;
}

/* ---- public ---- */

int dcm_charset_decode_ex(const uint8_t *spec, size_t spec_len, uint16_t vr,
                          const uint8_t *in, size_t n, struct dynbuf *out,
                          unsigned *notes, struct pacs_err *err)
{
    struct sink s = {out, 0, 0};
    const struct term_def *first = &term_default;
    unsigned spec_notes = 0, dl = DL_BACKSLASH;
    int rc = 0;

    if (notes)
        *notes = 0;
    if (!out || (!in && n))
        return pacs_err_set(err, PACS_EINVAL, "charset decode: NULL %s",
                            out ? "input" : "output buffer");
    s.start = out->len;
    if (n > PACS_MAX_STRING_LEN) {
        rc = PACS_ELIMIT;
        goto out;
    }

    bool plain = is_plain(in, n);
    if (plain && !notes) {
        rc = sink_bytes(&s, in, n);
        goto out;
    }
    /* AE, CS, DA, UI ... are restricted to the default repertoire. */
    if (!dcm_vr_is_string(vr) || dcm_vr_uses_charset(vr))
        first = spec_parse(spec, spec_len, &spec_notes);
    if (plain) {
        rc = sink_bytes(&s, in, n);
        goto out;
    }
    if (vr == DCM_VR_PN)
        dl = DL_BACKSLASH | DL_PN;
    else if (vr == DCM_VR_LT || vr == DCM_VR_ST || vr == DCM_VR_UT)
        dl = 0;

    switch (first->mode) {
    case MODE_UTF8:
        rc = dec_utf8(&s, in, n);
        break;
    case MODE_GB18030:
        rc = conv_run(&s, CD_GB18030, in, n);
        break;
    case MODE_GBK:
        rc = conv_run(&s, CD_GBK, in, n);
        break;
    default:
        rc = dec_2022(&s, first, dl, in, n);
        break;
    }

out:
    if (rc) {
        out->len = s.start;
        if (out->data)
            out->data[out->len] = '\0';
        if (rc == PACS_ELIMIT)
            pacs_err_set(err, rc,
                         "decoded text exceeds %u bytes or the buffer maximum",
                         (unsigned)PACS_MAX_STRING_LEN);
        else
            pacs_err_set(err, rc, "charset decode: out of memory");
    } else if (notes) {
        *notes = spec_notes | s.notes;
    }
    return rc;
}

int dcm_charset_decode(const uint8_t *spec, size_t spec_len, uint16_t vr,
                       const uint8_t *in, size_t n, struct dynbuf *out,
                       struct pacs_err *err)
{
    return dcm_charset_decode_ex(spec, spec_len, vr, in, n, out, NULL, err);
}

bool dcm_charset_known(const uint8_t *term, size_t len)
{
    bool exact = false;
    const struct term_def *d;
    if (!term)
        return len == 0;
    trim(&term, &len);
    if (!len)
        return true;
    d = term_lookup(term, len, &exact);
    return d && exact && d->std;
}

bool dcm_charset_spec_valid(const uint8_t *spec, size_t len)
{
    size_t i = 0, nterms = 0;
    bool standalone = false, plain_form = false, later_empty = false;
    if (!spec || !len)
        return true;
    for (;;) {
        size_t j = i;
        while (j < len && spec[j] != '\\')
            j++;
        const uint8_t *t = spec + i;
        size_t tl = j - i;
        trim(&t, &tl);
        if (!tl) {
            later_empty |= nterms > 0;
        } else {
            bool exact = false;
            const struct term_def *d = term_lookup(t, tl, &exact);
            if (!d || !exact || !d->std)
                return false;
            standalone |= mode_standalone(d->mode);
            plain_form |= strncmp(d->name, "ISO 2022 ", 9) != 0;
        }
        nterms++;
        if (j >= len)
            break;
        i = j + 1;
    }
    /* Code extensions need the ISO 2022 forms (PS3.3 C.12.1.1.2). */
    return nterms == 1 || !(standalone || plain_form || later_empty);
}
