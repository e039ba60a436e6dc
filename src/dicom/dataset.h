/* dataset.h - the in-memory DICOM data set: elements, sequences, items and
 * encapsulated pixel data, with typed accessors.
 *
 * Model
 * - A data set is an array of elements kept in ascending tag order (the
 *   order of a conformant encoding). Items of a sequence are data sets too.
 * - Every value is held as raw bytes in Little Endian byte order (the reader
 *   swaps Big Endian input by VR), exactly as encoded otherwise: padding,
 *   odd lengths and private tags are kept verbatim, so a data set read and
 *   written in its own transfer syntax comes out byte-identical.
 * - Memory: a root data set owns an arena from which its elements, items and
 *   copied values are allocated; dcm_ds_free(root) releases all of it at once.
 *   Values can also be borrowed from the reader's input (see reader.h): the
 *   input must then outlive the data set.
 * - Strings are returned as raw bytes in the data set's Specific Character
 *   Set; dcm_elem_text() decodes them to UTF-8.
 *
 * Thread safety: a data set is not locked; share it read-only or not at all.
 */
#ifndef PACS_DCM_DATASET_H
#define PACS_DCM_DATASET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dicom/dict.h"
#include "dicom/vr.h"
#include "util/dynbuf.h"
#include "util/err.h"

#define DCM_UNDEFINED_LENGTH 0xffffffffu

/* Tags with structural meaning. */
#define DCM_TAG_ITEM DCM_TAG(0xfffe, 0xe000)
#define DCM_TAG_ITEM_END DCM_TAG(0xfffe, 0xe00d)
#define DCM_TAG_SEQ_END DCM_TAG(0xfffe, 0xe0dd)
#define DCM_TAG_PIXEL_DATA DCM_TAG(0x7fe0, 0x0010)
#define DCM_TAG_SPECIFIC_CHARSET DCM_TAG(0x0008, 0x0005)
#define DCM_TAG_TRANSFER_SYNTAX DCM_TAG(0x0002, 0x0010)

enum dcm_elem_flags {
    DCM_EF_UNDEF_LEN = 1, /* SQ, item or pixel data encoded with undefined
                             length (delimited) */
    DCM_EF_SEQ = 2,       /* items[] is valid (VR SQ, or UN read as SQ) */
    DCM_EF_ENCAPS = 4,    /* frags[] is valid: encapsulated pixel data */
    DCM_EF_UN_SEQ = 8,    /* VR UN of undefined length: items were encoded
                             in Implicit VR Little Endian (PS3.5 6.2.2) */
};

struct dcm_ds;

/* One fragment of encapsulated pixel data. frags[0] is always the Basic
 * Offset Table item (possibly empty). */
struct dcm_frag {
    const uint8_t *data;
    uint32_t len;
};

struct dcm_elem {
    uint32_t tag;
    uint16_t vr;
    uint16_t flags;         /* enum dcm_elem_flags */
    uint32_t len;           /* value length in bytes; for SQ and encapsulated
                               data the length as read (or undefined) */
    const uint8_t *val;     /* len bytes, Little Endian; NULL if len == 0 or
                               DCM_EF_SEQ / DCM_EF_ENCAPS */
    union {
        struct {
            struct dcm_ds **v;
            uint32_t n;
        } items;            /* DCM_EF_SEQ */
        struct {
            struct dcm_frag *v;
            uint32_t n;
        } frags;            /* DCM_EF_ENCAPS */
    } u;
};

struct dcm_arena;

struct dcm_ds {
    struct dcm_elem *el;
    uint32_t n, cap;
    struct dcm_arena *arena;      /* shared by the root and all its items */
    const struct dcm_ds *parent;  /* the data set holding this item, or NULL */
    uint16_t flags;               /* items: DCM_EF_UNDEF_LEN if delimited */
    uint32_t len;                 /* items: length as read (0 if built) */
    bool is_root;
};

/* --- life cycle ---------------------------------------------------------- */

/* A new empty root data set; NULL on ENOMEM. */
struct dcm_ds *dcm_ds_new(void);
/* Frees a root data set with every item and value it owns. NULL is fine.
 * Items are freed with their root, never on their own. */
void dcm_ds_free(struct dcm_ds *ds);
/* Allocates n bytes from the data set's arena (freed with the root). */
void *dcm_ds_alloc(struct dcm_ds *ds, size_t n);

/* --- lookup and modification ---------------------------------------------- */

/* The element with that tag, or NULL. O(log n). */
const struct dcm_elem *dcm_ds_find(const struct dcm_ds *ds, uint32_t tag);
struct dcm_elem *dcm_ds_find_mut(struct dcm_ds *ds, uint32_t tag);

/* Inserts or replaces an element, copying len bytes of value (Little Endian,
 * stored as given). Returns the element via *out if non-NULL. */
int dcm_ds_put(struct dcm_ds *ds, uint32_t tag, uint16_t vr, const void *val,
               uint32_t len, struct dcm_elem **out);
/* Inserts or replaces a string element; the value is padded to even length
 * with the VR's padding byte. */
int dcm_ds_put_str(struct dcm_ds *ds, uint32_t tag, uint16_t vr, const char *s);
/* Inserts or replaces an empty sequence element (VR SQ, undefined length). */
int dcm_ds_put_seq(struct dcm_ds *ds, uint32_t tag, struct dcm_elem **out);
/* Appends a new empty item to sequence element `seq` of `ds`; returns it. */
int dcm_seq_add_item(struct dcm_ds *ds, struct dcm_elem *seq, struct dcm_ds **item);
/* Inserts or replaces an encapsulated pixel data element with an empty basic
 * offset table; fragments are added with dcm_encaps_add_frag. */
int dcm_ds_put_encaps(struct dcm_ds *ds, uint32_t tag, uint16_t vr, struct dcm_elem **out);
int dcm_encaps_add_frag(struct dcm_ds *ds, struct dcm_elem *e, const void *data, uint32_t len);
/* Removes the element if present (0 either way). */
int dcm_ds_remove(struct dcm_ds *ds, uint32_t tag);

/* Low-level append used by the reader: the tag must be greater than the last
 * one's (PACS_EINVAL otherwise). The value is borrowed, not copied. */
int dcm_ds_append(struct dcm_ds *ds, const struct dcm_elem *e, struct dcm_elem **out);
/* A new empty item whose parent is `parent`, allocated in its arena. */
struct dcm_ds *dcm_ds_new_item(struct dcm_ds *parent);
/* Grows an element's items or frags array by one slot (reader use). */
int dcm_elem_push_item(struct dcm_ds *ds, struct dcm_elem *e, struct dcm_ds *item);
int dcm_elem_push_frag(struct dcm_ds *ds, struct dcm_elem *e, const uint8_t *data, uint32_t len);

/* --- accessors ----------------------------------------------------------- */

/* True if e holds a plain value in val/len (not a sequence, not
 * encapsulated pixel data). Any element read from outside may be either:
 * check before reading val, whatever the tag is supposed to hold. */
static inline bool dcm_elem_is_value(const struct dcm_elem *e)
{
    return !(e->flags & (DCM_EF_SEQ | DCM_EF_ENCAPS));
}

/* Value multiplicity: backslash-separated count for multi-valued string VRs,
 * len / size for binary numbers, items for SQ, 1 for other non-empty values,
 * 0 for empty values. */
uint32_t dcm_elem_vm(const struct dcm_elem *e);

/* The idx-th value of a string element, as raw bytes (no copy, not NUL
 * terminated), with trailing padding (spaces, NULs) removed and, for VRs
 * other than LT ST UT UR, leading spaces too. Whole value for LT ST UT UR. */
int dcm_elem_str(const struct dcm_elem *e, uint32_t idx, const char **s, size_t *n);
/* Copies the idx-th string value into buf (NUL-terminated). PACS_ELIMIT if it
 * does not fit, PACS_ENOTFOUND if absent. */
int dcm_ds_get_str(const struct dcm_ds *ds, uint32_t tag, uint32_t idx, char *buf, size_t size);

/* The idx-th value as a number: from US SS UL SL SV UV (binary) and IS DS
 * (decimal strings); FL FD for dcm_elem_double. PACS_EINVAL for a value that
 * is not a number, PACS_ENOTFOUND past the last value. */
int dcm_elem_int(const struct dcm_elem *e, uint32_t idx, int64_t *out);
int dcm_elem_uint(const struct dcm_elem *e, uint32_t idx, uint64_t *out);
int dcm_elem_double(const struct dcm_elem *e, uint32_t idx, double *out);
/* AT: the idx-th tag. */
int dcm_elem_tag(const struct dcm_elem *e, uint32_t idx, uint32_t *out);

/* The Specific Character Set in effect for ds: its own (0008,0005) or the
 * nearest parent's (one that is not a plain value is ignored); NULL for the
 * default repertoire. */
const struct dcm_elem *dcm_ds_charset(const struct dcm_ds *ds);
/* The whole value of a string element decoded to UTF-8 with the character
 * set in effect for ds, trailing padding removed; appended to out. */
int dcm_elem_text(const struct dcm_ds *ds, const struct dcm_elem *e, struct dynbuf *out,
                  struct pacs_err *err);

/* Person name: one (UTF-8 or raw) PN value split into its component groups
 * (alphabetic, ideographic, phonetic, separated by '=') and each group into
 * its five components (family, given, middle, prefix, suffix; by '^'). */
struct dcm_span {
    const char *p;
    size_t n;
};
struct dcm_pn {
    struct dcm_span group[3];
    struct dcm_span comp[3][5];
    unsigned ngroups;
};
void dcm_pn_split(const char *s, size_t n, struct dcm_pn *pn);

/* Dates and times: DA (YYYYMMDD), TM (HHMMSS.FFFFFF, with the shorter forms
 * the standard allows) and DT (both, with an optional &ZZXX offset). Fields
 * not present are -1; `precision` counts the components present. */
struct dcm_datetime {
    int year, month, day;
    int hour, minute, second, usec;
    int tz_minutes;         /* offset east of UTC, when has_tz */
    bool has_tz;
};
int dcm_parse_da(const char *s, size_t n, struct dcm_datetime *out);
int dcm_parse_tm(const char *s, size_t n, struct dcm_datetime *out);
int dcm_parse_dt(const char *s, size_t n, struct dcm_datetime *out);

/* Checks a UID: 1-64 chars of digits and dots, no empty or leading-zero
 * components (PS3.5 9.1). */
bool dcm_uid_valid(const char *s, size_t n);

#endif
