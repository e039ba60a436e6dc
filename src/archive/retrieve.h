/* retrieve.h - the one retrieve path for C-MOVE, C-GET, WADO and REST file
 * downloads: from UIDs to the instances, then to their stored bytes.
 *
 * The list is built from the index alone; each instance's bytes are then
 * streamed from the blob store (never a whole study in memory). The stored
 * file is a Part 10 file; `ds_offset` says where its data set starts, which
 * is what a C-STORE sub-operation sends.
 */
#ifndef PACS_RETRIEVE_H
#define PACS_RETRIEVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "archive/archive.h"
#include "archive/query.h"
#include "dicom/dataset.h"
#include "util/dynbuf.h"
#include "util/err.h"

struct retrieve_item {
    char sop_class_uid[65];
    char sop_instance_uid[65];
    char transfer_syntax[65];
    char study_uid[65];
    char series_uid[65];
    char blob_key[65];
    uint64_t size;
    uint64_t ds_offset;
};

struct retrieve_list {
    struct retrieve_item *items;
    size_t n;
};

/* The instances a C-MOVE/C-GET identifier names (PS3.4 C.4.2.2.1: unique
 * keys at and above the level, UID lists allowed; Patient Root or Study
 * Root). Errors as query_from_identifier. The list is the caller's, freed
 * with retrieve_list_free. */
int retrieve_from_identifier(struct archive *a, const struct dcm_ds *ident,
                             enum query_model model, struct retrieve_list *out,
                             struct pacs_err *err);
/* The instances of a query at any level (WADO-RS, REST). */
int retrieve_from_query(struct archive *a, const struct query *q, struct retrieve_list *out,
                        struct pacs_err *err);
void retrieve_list_free(struct retrieve_list *l);

/* Opens an item's bytes for reading: the reader yields the stored file from
 * `offset` (item->ds_offset for the data set only, 0 for the whole file). */
struct retrieve_reader;
int retrieve_open(struct archive *a, const struct retrieve_item *item, uint64_t offset,
                  struct retrieve_reader **out, struct pacs_err *err);
/* Reads up to n bytes; *got is 0 at the end. */
int retrieve_read(struct retrieve_reader *r, void *p, size_t n, size_t *got,
                  struct pacs_err *err);
void retrieve_close(struct retrieve_reader *r);
/* Reads up to n bytes at pos of the stored file (any position, as often as
 * wanted; retrieve_read's position is not moved). *got is 0 at the end. */
int retrieve_read_at(struct retrieve_reader *r, uint64_t pos, void *p, size_t n, size_t *got,
                     struct pacs_err *err);

/* True if a data set stored in transfer syntax `from` can be sent in `to`
 * by retrieve_transcode: both native (Implicit or Explicit VR Little
 * Endian, Explicit VR Big Endian, Deflated), since pixel data is never
 * decompressed nor compressed. */
bool retrieve_can_transcode(const char *from, const char *to);
/* The item's data set re-encoded in transfer syntax ts_uid, appended to
 * out, for a peer that did not accept the stored syntax (DCMTK's getscu
 * offers Explicit VR LE first, say). The whole instance is read into
 * memory: this is the fallback, the stored syntax streams. */
int retrieve_transcode(struct archive *a, const struct retrieve_item *item, const char *ts_uid,
                       struct dynbuf *out, struct pacs_err *err);

/* As retrieve_transcode, but a whole Part 10 file (preamble, meta group
 * with the new Transfer Syntax UID, the source's AE titles kept): what
 * WADO-RS sends for a transfer syntax other than the stored one. */
int retrieve_transcode_file(struct archive *a, const struct retrieve_item *item,
                            const char *ts_uid, struct dynbuf *out, struct pacs_err *err);

#endif
