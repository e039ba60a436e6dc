/* json.h - the DICOM JSON Model (PS3.18 Annex F.2), both directions.
 *
 * Pure codec: a data set to JSON text in a dynbuf, and JSON text in memory
 * to a data set. No I/O. docs/dicom-json.md describes the mapping in full;
 * the choices that matter to callers are:
 *
 * Writing
 * - One data set gives one JSON object whose members are the elements in
 *   ascending tag order, keyed "GGGGEEEE" (uppercase hex). Group lengths
 *   (gggg,0000) are left out (F.2.2). Private creators and private elements
 *   are written like any other element.
 * - Every element has "vr". An element with no value (length 0, zero items,
 *   only padding) has no "Value"/"InlineBinary"/"BulkDataURI" (F.2.5); an
 *   empty value inside a multi-valued element is null.
 * - Text is decoded to UTF-8 with the Specific Character Set in effect
 *   (dcm_elem_text); VRs limited to the default repertoire (AE CS DA UI ...)
 *   read bytes >= 0x80 as ISO 8859-1, as pydicom does. Bytes that cannot be
 *   decoded become U+FFFD, so the output is always valid UTF-8 JSON.
 * - PN values are objects with the non-empty "Alphabetic", "Ideographic",
 *   "Phonetic" groups. DS and IS are JSON numbers (a value that is not a
 *   number is written as the JSON string of its text, which F.2.3 allows);
 *   SV and UV beyond +-(2^53 - 1) are JSON strings (F.2.3 note); FL/FD NaN
 *   and infinities are the strings "NaN", "Infinity", "-Infinity".
 * - Binary VRs (OB OD OF OL OV OW UN, and VRs pacsd does not know) are
 *   "InlineBinary" base64 of the Little Endian bytes, or "BulkDataURI" when
 *   the bulk_uri callback says so. Encapsulated pixel data is written, as
 *   pydicom does, as the items of the encapsulated stream (Basic Offset Table
 *   item, then fragment items, each with its (FFFE,E000) tag and length; no
 *   Sequence Delimitation Item).
 * - A UN element that holds a sequence (DCM_EF_SEQ) is written as "SQ".
 *
 * Reading
 * - Strings are stored as UTF-8. When any text in a VR that uses the
 *   Specific Character Set is not ASCII, (0008,0005) becomes "ISO_IR 192"
 *   in the root data set (and in any item that carried its own). Text in the
 *   default-repertoire VRs is stored as ISO 8859-1 (the writer's inverse);
 *   a character above U+00FF there is an error.
 * - DS and IS numbers are re-encoded as decimal strings (DS: the shortest
 *   text that reads back as the same double, at most 16 characters); JSON
 *   strings are accepted for DS, IS, SV and UV and for FL/FD NaN/Infinity.
 *   Binary numbers are stored Little Endian; text values are padded to even
 *   length with the VR's padding byte; InlineBinary bytes are kept as given.
 * - "InlineBinary" (a string, or an array of one string as pydicom accepts)
 *   is strictly base64-decoded. For Pixel Data (7FE0,0010) a value that is a
 *   well-formed sequence of items is stored as encapsulated pixel data.
 * - "BulkDataURI" cannot be resolved here: the element is stored with its VR
 *   and an empty value (as pydicom does without a bulk data handler).
 * - Group lengths in the input are ignored. Unknown members, wrong JSON
 *   types, bad tags or VRs, duplicate tags, a backslash inside a value of a
 *   multi-valued VR, null in a binary number, base64 errors: each is an error
 *   (PACS_EINVAL) whose message starts with the JSON path, e.g.
 *   "00081140[0].00081150: Value must be an array".
 * - Limits: PACS_MAX_JSON_LEN bytes of input, PACS_MAX_SEQ_DEPTH nested
 *   sequences, PACS_MAX_VALUE_LEN per value (PACS_ELIMIT). Memory used is a
 *   small multiple of the input size.
 *
 * Thread safety: none of these functions keeps state; they may run in any
 * number of threads at once on distinct outputs.
 */
#ifndef PACS_DCM_JSON_H
#define PACS_DCM_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include "dicom/dataset.h"
#include "util/dynbuf.h"
#include "util/err.h"

struct dcm_json_opts {
    /* Called for binary-valued elements with a non-empty value (OB OD OF OL
     * OV OW UN, and encapsulated pixel data). Return true after appending a
     * URI to `uri` to emit "BulkDataURI" instead of "InlineBinary"; whatever
     * was appended is discarded when it returns false. `uri` is a scratch
     * buffer owned by the writer, empty on each call. `ds` is the data set
     * (root or item) holding `e`. NULL: always inline. */
    bool (*bulk_uri)(void *ctx, const struct dcm_ds *ds, const struct dcm_elem *e,
                     struct dynbuf *uri);
    void *ctx;
    bool pretty; /* indented output for people (the layout of Python's
                    json.dumps(indent=2)); compact otherwise */
};

/* Writes one data set as one JSON object, appended to `out` (caller-owned).
 * `o` may be NULL (compact, always inline). Returns 0, PACS_ELIMIT when
 * `out` would exceed its maximum or sequences nest deeper than
 * PACS_MAX_SEQ_DEPTH, PACS_ENOMEM; on error `out` is as it was before the
 * call and `err` names the element. */
int dcm_json_write(const struct dcm_ds *ds, const struct dcm_json_opts *o, struct dynbuf *out,
                   struct pacs_err *err);

/* Reads one JSON object (or an array holding exactly one object) of len
 * bytes (no NUL terminator needed) into a new root data set that the caller
 * frees with dcm_ds_free. On error *out is NULL. */
int dcm_json_read(const char *text, size_t len, struct dcm_ds **out, struct pacs_err *err);

/* Reads an array of JSON objects (QIDO-RS results, WADO-RS metadata); a
 * single object is taken as an array of one. On success *out is a malloc'd
 * array of *count new root data sets: the caller frees each with dcm_ds_free
 * and then the array with free(). An empty array gives *count 0 and *out
 * NULL. On error *out is NULL and *count 0; paths in messages start with
 * the index, e.g. "[2].00100010: ...". */
int dcm_json_read_array(const char *text, size_t len, struct dcm_ds ***out, size_t *count,
                        struct pacs_err *err);

#endif
