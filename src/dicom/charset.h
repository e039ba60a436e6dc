/* charset.h - Specific Character Set (0008,0005) decoding to UTF-8
 * (PS3.3 C.12.1.1.2, PS3.5 6.1).
 *
 * The codec keeps string values as raw bytes; this module turns one raw
 * value (possibly multi-valued) into UTF-8. It never does I/O and never fails
 * on bad text: bytes that cannot be decoded become U+FFFD and decoding goes
 * on. Only bad arguments, limits and allocation failure are errors.
 *
 * Supported Defined Terms (value 1 of the Specific Character Set, and the
 * code-extension sets reached by ISO 2022 escape sequences):
 *   default (empty, ISO_IR 6, ISO 2022 IR 6)       ASCII
 *   ISO_IR / ISO 2022 IR 100 101 109 110           ISO 8859-1 -2 -3 -4
 *   ISO_IR / ISO 2022 IR 144 127 126 138 148 203   ISO 8859-5 -6 -7 -8 -9 -15
 *   ISO_IR / ISO 2022 IR 166                       TIS 620 (Thai)
 *   ISO_IR / ISO 2022 IR 13                        JIS X 0201 (see below)
 *   ISO 2022 IR 87, ISO 2022 IR 159                JIS X 0208, JIS X 0212
 *   ISO 2022 IR 149                                KS X 1001 (Korean)
 *   ISO 2022 IR 58                                 GB 2312
 *   ISO_IR 192, GB18030, GBK                       UTF-8, GB 18030, GBK
 *                                                  (no code extensions)
 *
 * Leniency (pydicom 2.3, the project's reference, does the same unless said;
 * docs/character-sets.md lists the differences):
 * - The default repertoire decodes bytes >= 0x80 as ISO 8859-1, because many
 *   files write Latin-1 without declaring it. So does an unknown value 1.
 * - Terms are matched ignoring case and treating ' ', '_' and '-' alike, so
 *   "ISO IR 100" and "iso_ir_100" mean ISO_IR 100; "UTF-8"/"UTF8" mean
 *   ISO_IR 192; CP 1234's "ISO 2022 GBK" and "ISO 2022 58" are accepted.
 * - ISO_IR 13 also accepts Shift_JIS double-byte characters in G1 (Japanese
 *   devices write them under that term); JIS X 0201 romaji 0x5C and 0x7E stay
 *   '\' and '~' so that the value delimiter survives.
 * - ISO_IR 203 (Latin-9) is decoded; pydicom 2.3 does not know it.
 * - A stand-alone set (ISO_IR 192, GB18030, GBK) as value 1 makes the other
 *   values be ignored; as a later value it is ignored itself.
 * - Bad bytes: UTF-8 gets one U+FFFD per maximal ill-formed subpart (as
 *   Python); GB18030/GBK one per byte iconv rejects, resuming at the next
 *   byte (Python may swallow the next byte); the other sets one per
 *   undefined or half character. In stand-alone sets ESC is plain text.
 * - Every escape sequence of PS3.3 tables C.12-3/C.12-4 is honoured even if
 *   its term is missing from the Specific Character Set (pydicom decodes the
 *   escape bytes as text instead). An unknown escape sequence becomes one
 *   U+FFFD (pydicom keeps its bytes) and the designations return to those
 *   of value 1, as pydicom decodes what follows with value 1.
 *
 * Code-extension state: G0 and G1 start as designated by value 1 and return
 * to that at each value delimiter: for PN at '^', '=' and '\'; for the other
 * VRs except LT, ST and UT at '\'; for every VR at CR, LF, FF and TAB. A
 * delimiter byte met while G0 holds a two-byte set (JIS X 0208/0212) is part
 * of a character, not a delimiter (conformant writers switch back first).
 *
 * Thread safety: all functions may be called from any thread at once. The
 * single-byte tables are built once (call_once) and read-only afterwards.
 * iconv descriptors for the multi-byte sets are cached per thread
 * (_Thread_local), opened on first use, and closed automatically when a
 * thread exits (a C11 tss destructor) or by dcm_charset_thread_cleanup().
 */
#ifndef PACS_DCM_CHARSET_H
#define PACS_DCM_CHARSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/dynbuf.h"
#include "util/err.h"

/* Bits reported through dcm_charset_decode_ex's `notes` (the equivalents of
 * pydicom's warnings): the text was still decoded. */
enum dcm_charset_note {
    DCM_CS_NOTE_UNKNOWN_TERM = 1,   /* a term is not recognised: value 1
                                       fell back to the default repertoire,
                                       a later one was ignored */
    DCM_CS_NOTE_CORRECTED_TERM = 2, /* a term was recognised only after
                                       ignoring case / ' ' '_' '-' */
    DCM_CS_NOTE_IGNORED_TERM = 4,   /* a term was ignored because of a
                                       stand-alone set (ISO_IR 192 ...) */
    DCM_CS_NOTE_REPLACED = 8,       /* some bytes became U+FFFD */
    DCM_CS_NOTE_UNKNOWN_ESCAPE = 16 /* an unknown escape sequence was met */
};

/* Decodes the raw string value in[0..n) to UTF-8 and appends it to `out`
 * (never resets it; on error `out` is left as it was).
 *
 * spec/spec_len: the raw value of Specific Character Set (backslash-separated
 *   terms, each possibly space/NUL padded; an empty value 1 means ISO 2022
 *   IR 6). NULL or 0 means the default repertoire. The caller resolves
 *   sequence-item inheritance (PS3.5 7.5.3) and passes the effective value.
 * vr: the VR of the value; it chooses the delimiters that reset code
 *   extensions (see above). String VRs that may not use the Specific
 *   Character Set (AE, CS, DA, UI ...) are decoded in the default repertoire
 *   whatever `spec` says. DCM_VR_NONE uses `spec` with the '\' delimiter.
 *
 * Padding, backslashes and '^'/'=' are copied through: the result holds all
 * values and components (PN trailing empty groups included), so callers
 * split and trim on the UTF-8 text. A value with no byte >= 0x80 and no ESC
 * is copied unchanged without looking at `spec` (fast path).
 *
 * Returns 0 (also when bytes were replaced by U+FFFD), PACS_EINVAL for a
 * NULL `out` or a NULL `in` with n > 0, PACS_ELIMIT when the text appended by
 * this call would exceed PACS_MAX_STRING_LEN bytes or `out`'s own maximum,
 * PACS_ENOMEM. `err` (optional) gets the detail. */
int dcm_charset_decode(const uint8_t *spec, size_t spec_len, uint16_t vr,
                       const uint8_t *in, size_t n, struct dynbuf *out,
                       struct pacs_err *err);

/* As dcm_charset_decode; when `notes` is non-NULL it receives a mask of
 * enum dcm_charset_note bits (0 if the value decoded cleanly), so callers can
 * log what pydicom would warn about. With `notes` the spec is always
 * examined, even on the fast path. */
int dcm_charset_decode_ex(const uint8_t *spec, size_t spec_len, uint16_t vr,
                          const uint8_t *in, size_t n, struct dynbuf *out,
                          unsigned *notes, struct pacs_err *err);

/* True if term[0..len), after trimming leading/trailing spaces and NULs, is
 * a Defined Term this module supports, spelled exactly as in PS3.3 table
 * C.12-2/3/4/5 (the empty term counts as ISO 2022 IR 6). For validators: the
 * decoder itself is more lenient (see above). */
bool dcm_charset_known(const uint8_t *term, size_t len);

/* True if `spec` (a whole Specific Character Set value) is fine to decode
 * with: every term is dcm_charset_known and no stand-alone set appears with
 * other terms. */
bool dcm_charset_spec_valid(const uint8_t *spec, size_t spec_len);

/* Closes this thread's cached iconv descriptors. Optional: it also runs at
 * thread exit; call it from threads that outlive their decoding work, or at
 * the end of main() for leak checkers. Decoding afterwards reopens them. */
void dcm_charset_thread_cleanup(void);

#endif
