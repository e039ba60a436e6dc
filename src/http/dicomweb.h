/* dicomweb.h - what the DICOMweb routes share: choosing the JSON media
 * type of an answer from Accept (or the accept= parameter, PS3.18 8.3.3),
 * and building RetrieveURL values. Pure: no HTTP library, no I/O.
 * (WADO-RS /metadata uses the same choice.)
 * docs/dicomweb.md is the user's view.
 */
#ifndef PACS_HTTP_DICOMWEB_H
#define PACS_HTTP_DICOMWEB_H

#include <stdbool.h>
#include <stddef.h>

#include "util/dynbuf.h"
#include "util/err.h"

#define DW_MEDIA_DICOM_JSON "application/dicom+json"
#define DW_MEDIA_JSON "application/json"

/* Largest DICOM JSON answer built in memory (QIDO-RS, STOW-RS), bytes: a
 * client that needs more pages with limit/offset. */
#define DW_MAX_JSON_ANSWER (256u * 1024 * 1024)

/* Picks the media type of a DICOM JSON answer. `accept` is the accept=
 * query parameter when the request had one (it then replaces the header,
 * PS3.18 8.3.3.1), else the Accept header; NULL or blank: anything goes.
 * The value is parsed by http_accept_parse (http/accept.h); q=0 excludes
 * a range. application/dicom+json and the wildcards (application/ANY,
 * ANY/ANY) give application/dicom+json; application/json (alone among the
 * acceptable ones) gives application/json. *type is a static string.
 * PACS_EUNSUPPORTED (answer 406) when none is acceptable or the value is
 * malformed, with a message quoting what was asked; PACS_ENOMEM. */
int dw_choose_json_type(const char *accept, const char **type, struct pacs_err *err);

/* Appends base "/dicom-web/studies/" study ["/series/" series
 * ["/instances/" sop]] to out: series and sop may be NULL (a study or
 * series URL). Bytes of a UID outside [0-9A-Za-z.-_~] are percent-encoded
 * (UIDs never have them; a stored value might). PACS_ENOMEM / PACS_ELIMIT
 * from the dynbuf; out is unchanged on error. */
int dw_retrieve_url(struct dynbuf *out, const char *base, const char *study, const char *series,
                    const char *sop);

#endif
