/* qido.h - the QIDO-RS query string (PS3.18 8.3.4 and 10.6) turned into an
 * archive query (archive/query.h). Pure: no sockets, no HTTP library; the
 * HTTP front door routes the path, calls qido_parse with the raw query
 * string, runs the query and writes DICOM JSON. docs/qido.md is the user's
 * view of every rule below.
 *
 * Syntax. The query string is split on '&' (empty parameters are skipped),
 * each parameter on its first '='. Names and values are percent-decoded;
 * '+' is a space, as in application/x-www-form-urlencoded (what browsers,
 * Python's urlencode and the Java servlet API send, and what Orthanc and
 * dcm4chee decode): a literal '+' (a DT offset such as +0100) must be sent
 * as %2B. A '%' not followed by two hex digits is an error. Decoded text
 * must be UTF-8 without control characters (U+0000-U+001F, U+007F).
 *
 * Parameters.
 * - {attribute}={value}: a matching key. The attribute is a keyword
 *   (PatientName) or eight hex digits (00100010, either case). The value
 *   is in the DICOM query syntax of docs/query.md (wild cards, ranges,
 *   lists); empty is universal matching (a return key). A UI attribute may
 *   list UIDs separated by commas or by repeating the parameter (PS3.18
 *   uid-list-match): both become the backslash-separated UID list of the
 *   query. Repeating any other attribute is an error. A dotted path into a
 *   sequence (ReferencedSeriesSequence.SeriesInstanceUID) with a value is
 *   PACS_EUNSUPPORTED (query.h does no sequence matching); with an empty
 *   value it returns the whole top-level sequence. A sequence with a value
 *   is PACS_EUNSUPPORTED likewise.
 * - includefield={attribute}[,{attribute}...] | all: return keys, the
 *   parameter repeatable. A dotted path returns its top-level sequence.
 *   Attributes of a level below the resource are dropped, not refused
 *   (PS3.18 10.6.3.3: "shall not be returned"; OHIF asks for Modality in
 *   study searches). "all" returns every stored attribute
 *   (query_include_all) and makes the other includefield values moot.
 * - limit, offset: unsigned decimal integers. limit above QIDO_MAX_LIMIT
 *   is clamped to it (PS3.18 8.3.4.4.1: results are the least of limit and
 *   the server's maximum; limit_clamped tells the caller to send the 299
 *   Warning); without limit, QIDO_MAX_LIMIT applies. offset above
 *   QIDO_MAX_OFFSET is an error.
 * - fuzzymatching=true|false: recorded; matching does not change (PN is
 *   always compared ignoring ASCII case, see docs/query.md).
 * - emptyvaluematching=false and multiplevaluematching=true|false are
 *   accepted (pacsd's behaviour); emptyvaluematching=true is
 *   PACS_EUNSUPPORTED.
 * - accept, charset (PS3.18 8.3.3: alternatives to the Accept header):
 *   returned decoded for the caller to negotiate (repeats joined by ',').
 * - Any other name is an error: a misspelt keyword silently ignored would
 *   widen the search to everything (PS3.18 8.3 lets a server ignore
 *   unsupported parameters; pacsd prefers a 400 that names it).
 *
 * Keys. The resource sets the level (studies: STUDY, series: SERIES,
 * instances: IMAGE) in the Study Root model, so patient attributes are
 * study attributes. The scope UIDs from the path become single-value keys;
 * naming the same attribute in the query string too is an error. A
 * matching key of a level below the resource is an error (SOPInstanceUID
 * on /studies); keys of the levels above are fine (relational, as Orthanc
 * allows). Not keys: group lengths and groups 0000, 0002, FFFE,
 * QueryRetrieveLevel and QueryRetrieveView; SpecificCharacterSet may only
 * be returned (values are UTF-8); RetrieveURL is never matched and never
 * put in the query: the caller writes it into every answer.
 *
 * Answers hold (PS3.18 10.6.3.3, Tables 10.6.3-3 to -5) every main tag of
 * the level (query_include_main_tags) and these return keys:
 * - studies: StudyDate, StudyTime, AccessionNumber, InstanceAvailability,
 *   ModalitiesInStudy, ReferringPhysicianName, TimezoneOffsetFromUTC,
 *   PatientName, PatientID, PatientBirthDate, PatientSex,
 *   StudyInstanceUID, StudyID, NumberOfStudyRelatedSeries,
 *   NumberOfStudyRelatedInstances;
 * - series: Modality, TimezoneOffsetFromUTC, SeriesDescription,
 *   SeriesInstanceUID, SeriesNumber, NumberOfSeriesRelatedInstances,
 *   PerformedProcedureStepStartDate, PerformedProcedureStepStartTime,
 *   RequestAttributesSequence; plus the study list for /series;
 * - instances: SOPClassUID, SOPInstanceUID, InstanceAvailability,
 *   TimezoneOffsetFromUTC, InstanceNumber, Rows, Columns, BitsAllocated,
 *   NumberOfFrames; plus the series list for /studies/{s}/instances and
 *   the study and series lists for /instances;
 * and every matching key and includefield attribute. The ones that are not
 * main tags come from the stored metadata of one instance per answer.
 *
 * Errors. Everything but PACS_ENOMEM is the client's fault: answer 400 with
 * err->msg. PACS_EINVAL for syntax, unknown names and attributes, bad
 * values, repeats, keys below the level; PACS_EUNSUPPORTED for what
 * query.h cannot express; PACS_ELIMIT past a QIDO_MAX_* limit or a list of
 * more than PACS_MAX_QUERY_LIST values. The message starts with the
 * parameter as the client named it ("PatientNam: unknown attribute",
 * "limit: must be a non-negative integer") and is valid UTF-8 (it goes into
 * a JSON error body).
 *
 * Threads: qido_parse keeps no state; any number may run at once.
 */
#ifndef PACS_HTTP_QIDO_H
#define PACS_HTTP_QIDO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "archive/query.h"
#include "util/err.h"

/* Longest query string accepted, bytes: the HTTP server's whole request
 * line and headers fit in 64 KiB (docs/http.md), so this never bites there;
 * it bounds callers that take a query from elsewhere. */
#define QIDO_MAX_QUERY_LEN (64u * 1024)
/* Most parameters in one query string, each includefield item counting
 * as one: bounds the work per request (keys are looked up linearly). */
#define QIDO_MAX_PARAMS 1024
/* Most answers in one response; also the limit when the client gives none. */
#define QIDO_MAX_LIMIT 10000
/* Largest offset accepted (the index binds it as a 64-bit integer). */
#define QIDO_MAX_OFFSET 1000000000u
/* Longest dotted attribute path (components), e.g. A.B.C is 3. */
#define QIDO_MAX_PATH 8

/* The level of the results. */
enum qido_resource { QIDO_STUDIES, QIDO_SERIES, QIDO_INSTANCES };

/* The UIDs of the request path, NULL when absent:
 *   /studies                              (NULL, NULL)     QIDO_STUDIES
 *   /series, /studies/{s}/series          (NULL|s, NULL)   QIDO_SERIES
 *   /instances, /studies/{s}/instances    (NULL|s, NULL)   QIDO_INSTANCES
 *   /studies/{s}/series/{se}/instances    (s, se)          QIDO_INSTANCES
 * Already URL-decoded by the caller; each 1-64 bytes of printable ASCII
 * without '\' or ',' (anything else is PACS_EINVAL, as no UID can match). */
struct qido_scope {
    const char *study_uid, *series_uid;
};

struct qido_request {
    struct query *q;      /* owned: run it with query_run */
    enum qido_resource resource;
    /* What the client asked for; the limit and offset are already in q.
     * limit == 0 (PS3.18: no results) means answering 200 [] without running
     * q (q is then limited to one answer so a slip stays cheap). */
    size_t limit;         /* 0..QIDO_MAX_LIMIT */
    size_t offset;
    bool limit_given;     /* limit= was in the query string */
    bool limit_clamped;   /* it asked for more than QIDO_MAX_LIMIT: Warning 299 */
    bool fuzzy;           /* fuzzymatching=true */
    bool include_all;     /* includefield=all */
    /* includefield attributes in order of first appearance, without
     * repeats (for a dotted path, its top-level sequence), including
     * those dropped as below the level. Owned. */
    uint32_t *include;
    size_t n_include;
    char *accept;         /* accept= / charset= decoded, or NULL. Owned. */
    char *charset;
};

/* Parses query_string (the raw text after '?', not decoded; NULL or "" for
 * none) of a QIDO-RS request for `res` within `scope` (NULL: no UIDs) and
 * builds out->q. On success *out is filled and owned by the caller (free
 * with qido_request_free); on failure *out is zeroed and nothing is
 * allocated. err may be NULL. */
int qido_parse(enum qido_resource res, const struct qido_scope *scope,
               const char *query_string, struct qido_request *out, struct pacs_err *err);

/* Frees what qido_parse allocated and zeroes *r; NULL or a zeroed request
 * are fine, and so is freeing twice. */
void qido_request_free(struct qido_request *r);

#endif
