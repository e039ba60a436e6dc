/* cli_net.c - the network tools: pacsd echo, store, find, move and get.
 * See cli_net.h; the user's manual is the "Network tools" section of
 * docs/cli.md.
 *
 * Each tool parses DCMTK-like options, opens an association through
 * net/ul.h and runs one DIMSE operation through net/scu.h. store maps each
 * file, parses only its header (up to Pixel Data) and sends the data set
 * bytes as they are stored; get streams every received instance to disk
 * behind a meta group built by the codec. Nothing holds a whole file, let
 * alone a directory, in memory: store keeps one path and one context index
 * per file.
 */
#include <stdio.h>

#include "cli_net.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dicom/dataset.h"
#include "dicom/dict.h"
#include "dicom/dump.h"
#include "dicom/json.h"
#include "dicom/reader.h"
#include "dicom/writer.h"
#include "net/dimse_cmd.h"
#include "net/pdu.h"
#include "net/scu.h"
#include "net/ul.h"
#include "util/config.h"
#include "util/dynbuf.h"
#include "util/err.h"
#include "util/fdio.h"
#include "util/limits.h"

enum { NET_EXIT_OK = 0, NET_EXIT_FAILED = 1, NET_EXIT_USAGE = 2 };

#define NET_DEFAULT_AET "PACSD"
#define NET_DEFAULT_AEC "ANY-SCP"
#define NET_DEFAULT_TIMEOUT 30  /* seconds: connect, association, release */
#define NET_DEFAULT_IDLE 600    /* seconds between two messages from the peer */
#define NET_MAX_SECONDS 86400
#define NET_DEFAULT_MAX_PDU 262144
#define NET_MIN_MAX_PDU 4096
#define NET_MAX_MAX_PDU (16u * 1024 * 1024)
#define NET_MAX_PARALLEL 64
/* Deepest directory nesting store follows (deeper is reported, not a loop:
 * symbolic links to directories are never followed). */
#define NET_MAX_DIR_DEPTH 64
#define NET_UID_DICOMDIR "1.2.840.10008.1.3.10"

static const char *const net_tools[] = {"echo", "store", "find", "move", "get"};

/* Query identifiers and C-ECHO: both little-endian syntaxes, explicit
 * first (the acceptor picks one; answers then keep their VRs). */
static const char *const ts_query[] = {DCM_UID_EXPLICIT_LE, DCM_UID_IMPLICIT_LE};

/* Transfer syntaxes offered for each storage class of a C-GET: the
 * acceptor picks one per class, and instances stored otherwise need it to
 * transcode. Uncompressed first, so an acceptor that takes the first one
 * it supports sends pixels as they usually are stored. */
static const char *const ts_storage[] = {
    DCM_UID_EXPLICIT_LE,
    DCM_UID_IMPLICIT_LE,
    DCM_UID_DEFLATED_LE,
    DCM_UID_EXPLICIT_BE,
    "1.2.840.10008.1.2.4.50",  /* JPEG Baseline */
    "1.2.840.10008.1.2.4.51",  /* JPEG Extended */
    "1.2.840.10008.1.2.4.57",  /* JPEG Lossless */
    "1.2.840.10008.1.2.4.70",  /* JPEG Lossless SV1 */
    "1.2.840.10008.1.2.4.80",  /* JPEG-LS Lossless */
    "1.2.840.10008.1.2.4.81",  /* JPEG-LS Near-Lossless */
    "1.2.840.10008.1.2.4.90",  /* JPEG 2000 Lossless */
    "1.2.840.10008.1.2.4.91",  /* JPEG 2000 */
    "1.2.840.10008.1.2.4.201", /* HTJ2K Lossless */
    "1.2.840.10008.1.2.4.202", /* HTJ2K Lossless RPCL */
    "1.2.840.10008.1.2.4.203", /* HTJ2K */
    "1.2.840.10008.1.2.5",     /* RLE Lossless */
};

/* Storage classes get offers by default (by keyword, resolved through
 * the UID registry). Every storage class with every syntax would exceed
 * the 128 presentation contexts an association can carry; these are what
 * an archive commonly holds. --sop-class adds others. */
static const char *const get_classes[] = {
    "ComputedRadiographyImageStorage",
    "DigitalXRayImageStorageForPresentation",
    "DigitalXRayImageStorageForProcessing",
    "DigitalMammographyXRayImageStorageForPresentation",
    "DigitalMammographyXRayImageStorageForProcessing",
    "DigitalIntraOralXRayImageStorageForPresentation",
    "CTImageStorage",
    "EnhancedCTImageStorage",
    "LegacyConvertedEnhancedCTImageStorage",
    "MRImageStorage",
    "EnhancedMRImageStorage",
    "MRSpectroscopyStorage",
    "EnhancedMRColorImageStorage",
    "LegacyConvertedEnhancedMRImageStorage",
    "UltrasoundImageStorage",
    "UltrasoundMultiFrameImageStorage",
    "EnhancedUSVolumeStorage",
    "SecondaryCaptureImageStorage",
    "MultiFrameSingleBitSecondaryCaptureImageStorage",
    "MultiFrameGrayscaleByteSecondaryCaptureImageStorage",
    "MultiFrameGrayscaleWordSecondaryCaptureImageStorage",
    "MultiFrameTrueColorSecondaryCaptureImageStorage",
    "NuclearMedicineImageStorage",
    "PositronEmissionTomographyImageStorage",
    "EnhancedPETImageStorage",
    "LegacyConvertedEnhancedPETImageStorage",
    "XRayAngiographicImageStorage",
    "EnhancedXAImageStorage",
    "XRayRadiofluoroscopicImageStorage",
    "EnhancedXRFImageStorage",
    "XRay3DAngiographicImageStorage",
    "BreastTomosynthesisImageStorage",
    "RTImageStorage",
    "RTDoseStorage",
    "RTStructureSetStorage",
    "RTBeamsTreatmentRecordStorage",
    "RTPlanStorage",
    "RTIonPlanStorage",
    "RTTreatmentSummaryRecordStorage",
    "BasicTextSRStorage",
    "EnhancedSRStorage",
    "ComprehensiveSRStorage",
    "Comprehensive3DSRStorage",
    "KeyObjectSelectionDocumentStorage",
    "MammographyCADSRStorage",
    "XRayRadiationDoseSRStorage",
    "EncapsulatedPDFStorage",
    "EncapsulatedCDAStorage",
    "GrayscaleSoftcopyPresentationStateStorage",
    "ColorSoftcopyPresentationStateStorage",
    "SegmentationStorage",
    "SpatialRegistrationStorage",
    "RawDataStorage",
    "ParametricMapStorage",
    "VLEndoscopicImageStorage",
    "VLMicroscopicImageStorage",
    "VLPhotographicImageStorage",
    "VLWholeSlideMicroscopyImageStorage",
    "OphthalmicPhotography8BitImageStorage",
    "OphthalmicTomographyImageStorage",
    "TwelveLeadECGWaveformStorage",
    "GeneralECGWaveformStorage",
};

/* --- common options, messages ------------------------------------------- */

struct net {
    const char *tool;
    char aet[CONFIG_AET_MAX + 1], aec[CONFIG_AET_MAX + 1];
    const char *host;
    uint16_t port;
    unsigned timeout_s, idle_s;
    uint32_t max_pdu;
    bool verbose;
};

/* One line on stderr, "pacsd TOOL: ...", written with one call so lines
 * from store's threads do not interleave. */
__attribute__((format(printf, 2, 3))) static void say(const struct net *n, const char *fmt, ...)
{
    struct dynbuf b;
    dynbuf_init(&b, 0);
    va_list ap;
    va_start(ap, fmt);
    int rc = dynbuf_printf(&b, "pacsd %s: ", n->tool);
    if (rc == 0)
        rc = dynbuf_vprintf(&b, fmt, ap);
    va_end(ap);
    if (rc == 0)
        rc = dynbuf_putc(&b, '\n');
    if (rc == 0)
        fputs((const char *)b.data, stderr);
    dynbuf_free(&b);
}

#define VERBOSE(n, ...)                                                                        \
    do {                                                                                       \
        if ((n)->verbose)                                                                      \
            say((n), __VA_ARGS__);                                                             \
    } while (0)

static bool is_opt(const char *a, const char *one, const char *two)
{
    return !strcmp(a, one) || (two && !strcmp(a, two));
}

static bool parse_ulong(const char *s, unsigned long lo, unsigned long hi, unsigned long *out)
{
    if (!s || !isdigit((unsigned char)s[0]))
        return false;
    errno = 0;
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* The value of option argv[*i], advancing *i; NULL (said) when missing. */
static const char *opt_value(const struct net *n, int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        say(n, "option %s needs a value", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

/* A numeric option value in lo..hi; false (said) otherwise. */
static bool opt_number(const struct net *n, int argc, char **argv, int *i, unsigned long lo,
                       unsigned long hi, unsigned long *out)
{
    const char *opt = argv[*i];
    const char *v = opt_value(n, argc, argv, i);
    if (!v)
        return false;
    if (!parse_ulong(v, lo, hi, out)) {
        say(n, "bad value '%s' for %s (%lu..%lu)", v, opt, lo, hi);
        return false;
    }
    return true;
}

/* Copies an AE title without its surrounding spaces; false (said) when
 * it is not a valid AE title. */
static bool set_aet(const struct net *n, const char *v, char out[CONFIG_AET_MAX + 1])
{
    if (!config_aet_valid(v, strlen(v))) {
        say(n, "bad AE title '%s' (1 to 16 printable characters, no backslash)", v);
        return false;
    }
    while (*v == ' ')
        v++;
    size_t len = strlen(v);
    while (len && v[len - 1] == ' ')
        len--;
    memcpy(out, v, len);
    out[len] = 0;
    return true;
}

enum { OPT_NOT_MINE = 0, OPT_TAKEN = 1, OPT_HELP = 2, OPT_BAD = -1 };

/* Options every tool takes. */
static int common_option(struct net *n, int argc, char **argv, int *i)
{
    const char *a = argv[*i], *v;
    unsigned long x;
    bool calling = is_opt(a, "-aet", "--aetitle");
    if (calling || is_opt(a, "-aec", "--call")) {
        if (!(v = opt_value(n, argc, argv, i)))
            return OPT_BAD;
        return set_aet(n, v, calling ? n->aet : n->aec) ? OPT_TAKEN : OPT_BAD;
    }
    if (is_opt(a, "-to", "--timeout")) {
        if (!opt_number(n, argc, argv, i, 1, NET_MAX_SECONDS, &x))
            return OPT_BAD;
        n->timeout_s = (unsigned)x;
        return OPT_TAKEN;
    }
    if (is_opt(a, "-td", "--idle")) {
        if (!opt_number(n, argc, argv, i, 0, NET_MAX_SECONDS, &x))
            return OPT_BAD;
        n->idle_s = (unsigned)x;
        return OPT_TAKEN;
    }
    if (is_opt(a, "-pdu", "--max-pdu")) {
        if (!opt_number(n, argc, argv, i, NET_MIN_MAX_PDU, NET_MAX_MAX_PDU, &x))
            return OPT_BAD;
        n->max_pdu = (uint32_t)x;
        return OPT_TAKEN;
    }
    if (is_opt(a, "-v", "--verbose")) {
        n->verbose = true;
        return OPT_TAKEN;
    }
    if (is_opt(a, "-h", "--help"))
        return OPT_HELP;
    return OPT_NOT_MINE;
}

/* True for an argument that looks like an option ("-" alone does not). */
static bool looks_like_option(const char *a)
{
    return a[0] == '-' && a[1] != 0;
}

/* HOST PORT from the first two positional arguments. */
/* An argument that is not one of the tool's options: a positional one, or
 * an unknown option (said, false). */
static bool positional(struct net *n, char *a, char **pos, int *npos)
{
    if (looks_like_option(a)) {
        say(n, "unknown option '%s'", a);
        return false;
    }
    pos[(*npos)++] = a;
    return true;
}

/* HOST PORT from the positional arguments; more of them only for tools
 * that take some (store's files). */
static bool set_endpoint(struct net *n, char **pos, int npos, bool more)
{
    unsigned long port;
    if (npos > 2 && !more) {
        say(n, "unexpected argument '%s'", pos[2]);
        return false;
    }
    if (npos < 2) {
        say(n, "need HOST and PORT (pacsd %s --help)", n->tool);
        return false;
    }
    if (!parse_ulong(pos[1], 1, 65535, &port)) {
        say(n, "bad port '%s' (1..65535)", pos[1]);
        return false;
    }
    n->host = pos[0];
    n->port = (uint16_t)port;
    return true;
}

static const char *uid_name(const char *uid)
{
    const struct dcm_uid_entry *u = dcm_uid_lookup(uid, (unsigned)strlen(uid));
    return u && u->name[0] ? u->name : uid;
}

/* Statuses worth naming (PS3.4 annexes B, C and PS3.7 annex C) in a
 * response to `field`; others get their class. */
static const char *status_text(uint16_t s, uint16_t field)
{
    switch (s) {
    case 0x0000:
        return "success";
    case 0xFE00:
        return "cancelled";
    case 0x0110:
        return "processing failure";
    case 0x0117:
        return "invalid SOP instance";
    case 0x0122:
        return "SOP class not supported";
    case 0x0124:
        return "refused: not authorized";
    case 0x0211:
        return "unrecognized operation";
    case 0xA700:
        return "refused: out of resources";
    case 0xA701:
        return "refused: out of resources, cannot count matches";
    case 0xA702:
        return "refused: out of resources, cannot perform sub-operations";
    case 0xA801:
        return "refused: move destination unknown";
    case 0xA900:
        return "identifier does not match SOP class";
    case 0xB000:
        return field == DIMSE_C_STORE_RQ ? "warning: coercion of data elements"
                                         : "warning: sub-operations complete, some failed";
    case 0xB006:
        return "warning: elements discarded";
    case 0xB007:
        return "warning: data set does not match SOP class";
    default:
        if (s >= 0xC000 && s <= 0xCFFF)
            return "unable to process";
        return dimse_status_class_name(dimse_status_class(s));
    }
}

/* "status 0xA801 (refused: move destination unknown): comment" into buf. */
static const char *status_line(const struct dimse_cmd *rsp, uint16_t field, char *buf,
                               size_t size)
{
    bool comment = (rsp->present & DIMSE_HAS_ERROR_COMMENT) && rsp->error_comment[0];
    int k = snprintf(buf, size, "status 0x%04X (%s)%s%s", rsp->status,
                     status_text(rsp->status, field), comment ? ": " : "",
                     comment ? rsp->error_comment : "");
    if (k < 0)
        buf[0] = 0;
    return buf;
}

static atomic_ulong assoc_ids;

static int net_connect(const struct net *n, const struct ul_proposal *p, size_t np,
                       struct ul_assoc **a, struct pacs_err *err)
{
    struct ul_request rq = {
        .calling_aet = n->aet,
        .called_aet = n->aec,
        .host = n->host,
        .port = n->port,
        .max_pdu = n->max_pdu,
        .to = {.artim_ms = n->timeout_s * 1000u,
               /* --idle 0: no limit (UINT_MAX ms is 49 days) */
               .idle_ms = n->idle_s ? n->idle_s * 1000u : UINT_MAX,
               .read_ms = n->timeout_s * 1000u,
               .write_ms = n->timeout_s * 1000u},
        .proposals = p,
        .n_proposals = np,
    };
    int rc = ul_connect(&rq, atomic_fetch_add(&assoc_ids, 1) + 1, a, err);
    if (rc || !n->verbose)
        return rc;
    size_t npc, accepted = 0;
    const struct ul_pc *pcs = ul_pcs(*a, &npc);
    for (size_t i = 0; i < npc; i++)
        accepted += pcs[i].result == PDU_PC_ACCEPTANCE;
    say(n, "association %s -> %s at %s:%u: %zu of %zu presentation contexts accepted", n->aet,
        n->aec, n->host, n->port, accepted, npc);
    for (size_t i = 0; i < npc; i++) {
        if (pcs[i].result == PDU_PC_ACCEPTANCE)
            say(n, "  context %u %s: %s%s", pcs[i].id, uid_name(pcs[i].abstract_syntax),
                uid_name(pcs[i].ts), pcs[i].requestor_scp ? " (we are SCP)" : "");
        else
            say(n, "  context %u %s: %s", pcs[i].id, uid_name(pcs[i].abstract_syntax),
                pdu_pc_result_name(pcs[i].result));
    }
    return 0;
}

static void net_release(const struct net *n, struct ul_assoc *a)
{
    struct pacs_err err = {0};
    if (ul_release(a, &err))
        VERBOSE(n, "release: %s", err.msg);
    else
        VERBOSE(n, "association released");
    ul_free(a);
}

static bool uid_chars_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64 || !isdigit((unsigned char)s[0]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]) && s[i] != '.')
            return false;
    return true;
}

static const char common_help[] =
    "common options:\n"
    "  -aet, --aetitle AET   our (calling) AE title; default " NET_DEFAULT_AET "\n"
    "  -aec, --call AET      the peer's (called) AE title; default " NET_DEFAULT_AEC "\n"
    "  -to, --timeout S      connect, association and release timeout, and the\n"
    "                        longest stall inside a PDU, seconds; default 30\n"
    "  -td, --idle S         longest wait for the peer's next message, seconds;\n"
    "                        0: no limit; default 600\n"
    "  -pdu, --max-pdu N     largest PDU we receive, bytes; default 262144\n"
    "  -v, --verbose         report associations and progress on stderr\n"
    "  -h, --help            print this text\n"
    "exit status: 0 success, 1 an operation failed, 2 usage, connection or\n"
    "association error.\n";

static const char query_help[] =
    "query options:\n"
    "  -L, --level LEVEL     PATIENT, STUDY, SERIES or IMAGE (QueryRetrieveLevel)\n"
    "  -S, --study           Study Root information model (default)\n"
    "  -P, --patient         Patient Root information model\n"
    "  -k, --key KEY[=VALUE] a key by keyword (PatientName) or tag (0010,0010),\n"
    "                        empty without a value; sequences as\n"
    "                        Seq[0].Keyword=VALUE; repeat for each key\n";

/* --- query identifiers --------------------------------------------------- */

struct query {
    bool patient_root;
    const char *level;
    const char **keys;
    size_t n_keys;
};

static int hex_digits(const char *s, size_t n, uint32_t *out)
{
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            return -1;
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

/* "(gggg,eeee)", "gggg,eeee" or "ggggeeee". */
static bool parse_tag_text(const char *s, size_t n, uint32_t *tag)
{
    if (n >= 2 && s[0] == '(' && s[n - 1] == ')') {
        s++;
        n -= 2;
    }
    uint32_t g, e;
    if (n == 9 && s[4] == ',' && hex_digits(s, 4, &g) == 0 && hex_digits(s + 5, 4, &e) == 0) {
        *tag = DCM_TAG(g, e);
        return true;
    }
    if (n == 8 && hex_digits(s, 8, &g) == 0) {
        *tag = g;
        return true;
    }
    return false;
}

/* One segment of a key path: a keyword or tag, and an optional "[n]". */
static int parse_segment(const char *s, size_t n, uint32_t *tag, long *item, struct pacs_err *err)
{
    *item = -1;
    const char *br = memchr(s, '[', n);
    size_t name_len = br ? (size_t)(br - s) : n;
    if (br) {
        unsigned long idx;
        char num[16];
        size_t k = n - name_len;
        if (k < 3 || s[n - 1] != ']' || k - 2 >= sizeof num)
            return pacs_err_set(err, PACS_EINVAL, "bad item index in '%.*s'", (int)n, s);
        memcpy(num, br + 1, k - 2);
        num[k - 2] = 0;
        if (!parse_ulong(num, 0, PACS_MAX_ITEMS - 1, &idx))
            return pacs_err_set(err, PACS_EINVAL, "bad item index in '%.*s'", (int)n, s);
        *item = (long)idx;
    }
    if (parse_tag_text(s, name_len, tag))
        return 0;
    char kw[128];
    if (name_len == 0 || name_len >= sizeof kw)
        return pacs_err_set(err, PACS_EINVAL, "bad key '%.*s'", (int)n, s);
    memcpy(kw, s, name_len);
    kw[name_len] = 0;
    const struct dcm_dict_entry *e = dcm_dict_find_keyword(kw);
    if (!e)
        return pacs_err_set(err, PACS_EINVAL, "unknown keyword '%s'", kw);
    if (e->mask != 0xffffffffu)
        return pacs_err_set(err, PACS_EINVAL, "'%s' stands for a group of tags: give the tag",
                            kw);
    *tag = e->tag;
    return 0;
}

static void put_le(uint8_t *p, uint64_t v, unsigned size)
{
    for (unsigned i = 0; i < size; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Encodes one binary number of VR vr from text into p (dcm_vr_num_size
 * bytes, little endian). */
static int parse_binary(uint16_t vr, const char *s, uint8_t *p)
{
    char *end = NULL;
    errno = 0;
    switch (vr) {
    case DCM_VR_US:
    case DCM_VR_UL:
    case DCM_VR_UV: {
        if (!isdigit((unsigned char)s[0]))
            return PACS_EINVAL;
        unsigned long long v = strtoull(s, &end, 10);
        unsigned size = dcm_vr_num_size(vr);
        if (errno || *end || (size < 8 && v >> (8 * size)))
            return PACS_EINVAL;
        put_le(p, v, size);
        return 0;
    }
    case DCM_VR_SS:
    case DCM_VR_SL:
    case DCM_VR_SV: {
        long long v = strtoll(s, &end, 10);
        unsigned size = dcm_vr_num_size(vr);
        long long lim = size == 8 ? LLONG_MAX : (1LL << (8 * size - 1)) - 1;
        if (errno || end == s || *end || v > lim || v < -lim - 1)
            return PACS_EINVAL;
        put_le(p, (uint64_t)v, size);
        return 0;
    }
    case DCM_VR_FL: {
        float f = strtof(s, &end);
        uint32_t u;
        if (errno || end == s || *end)
            return PACS_EINVAL;
        memcpy(&u, &f, 4);
        put_le(p, u, 4);
        return 0;
    }
    case DCM_VR_FD: {
        double d = strtod(s, &end);
        uint64_t u;
        if (errno || end == s || *end)
            return PACS_EINVAL;
        memcpy(&u, &d, 8);
        put_le(p, u, 8);
        return 0;
    }
    case DCM_VR_AT: {
        uint32_t t;
        if (!parse_tag_text(s, strlen(s), &t))
            return PACS_EINVAL;
        put_le(p, DCM_GROUP(t), 2);
        put_le(p + 2, DCM_ELEMENT(t), 2);
        return 0;
    }
    default:
        return PACS_EUNSUPPORTED;
    }
}

/* Puts the value text v (possibly empty) of an element of VR vr. */
static int put_value(struct dcm_ds *ds, uint32_t tag, uint16_t vr, const char *v,
                     struct pacs_err *err)
{
    char vrs[3];
    if (dcm_vr_is_string(vr)) {
        if (dcm_ds_put_str(ds, tag, vr, v))
            return pacs_err_set(err, PACS_ENOMEM, "out of memory");
        return 0;
    }
    if (!*v) {
        if (dcm_ds_put(ds, tag, vr, NULL, 0, NULL))
            return pacs_err_set(err, PACS_ENOMEM, "out of memory");
        return 0;
    }
    unsigned size = dcm_vr_num_size(vr);
    if (!size || (vr != DCM_VR_AT && dcm_vr_swap_unit(vr) == 1) || vr == DCM_VR_OD ||
        vr == DCM_VR_OF || vr == DCM_VR_OL || vr == DCM_VR_OV || vr == DCM_VR_OW)
        return pacs_err_set(err, PACS_EUNSUPPORTED,
                            "(%04X,%04X): values of VR %s cannot be given on the command line",
                            DCM_GROUP(tag), DCM_ELEMENT(tag), dcm_vr_str(vr, vrs));
    size_t count = 1;
    for (const char *c = v; *c; c++)
        count += *c == '\\';
    size_t len = strlen(v);
    uint8_t *buf = malloc(count * size);
    char *copy = malloc(len + 1);
    int rc = 0;
    if (!buf || !copy || count * size > UINT32_MAX) {
        rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
        goto out;
    }
    memcpy(copy, v, len + 1);
    char *tok = copy;
    for (size_t i = 0; i < count; i++) {
        char *bs = strchr(tok, '\\');
        if (bs)
            *bs = 0;
        if (parse_binary(vr, tok, buf + i * size)) {
            rc = pacs_err_set(err, PACS_EINVAL, "(%04X,%04X): '%s' is not a valid %s value",
                              DCM_GROUP(tag), DCM_ELEMENT(tag), tok, dcm_vr_str(vr, vrs));
            goto out;
        }
        tok = bs ? bs + 1 : tok + strlen(tok);
    }
    if (dcm_ds_put(ds, tag, vr, buf, (uint32_t)(count * size), NULL))
        rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
out:
    free(buf);
    free(copy);
    return rc;
}

/* The sequence element `tag` of ds, created empty when absent. */
static int get_seq(struct dcm_ds *ds, uint32_t tag, struct dcm_elem **seq, struct pacs_err *err)
{
    struct dcm_elem *e = dcm_ds_find_mut(ds, tag);
    if (!e || !(e->flags & DCM_EF_SEQ)) {
        if (dcm_ds_put_seq(ds, tag, &e))
            return pacs_err_set(err, PACS_ENOMEM, "out of memory");
    }
    *seq = e;
    return 0;
}

/* Item idx of sequence seq in ds; idx may be the next one (appended). */
static int get_item(struct dcm_ds *ds, struct dcm_elem *seq, unsigned long idx,
                    struct dcm_ds **item, struct pacs_err *err)
{
    if (idx < seq->u.items.n) {
        *item = seq->u.items.v[idx];
        return 0;
    }
    if (idx > seq->u.items.n)
        return pacs_err_set(err, PACS_EINVAL, "item %lu given before item %u", idx,
                            seq->u.items.n);
    if (dcm_seq_add_item(ds, seq, item))
        return pacs_err_set(err, PACS_ENOMEM, "out of memory");
    return 0;
}

/* Applies one -k KEY[=VALUE]: a path of segments separated by '.', each a
 * keyword or tag with an optional [item] (DCMTK's findscu syntax). */
static int apply_key(struct dcm_ds *root, const char *key, struct pacs_err *err)
{
    const char *eq = strchr(key, '=');
    size_t plen = eq ? (size_t)(eq - key) : strlen(key);
    const char *value = eq ? eq + 1 : "";
    struct dcm_ds *ds = root;
    size_t pos = 0;
    unsigned depth = 0;
    char vrs[3];
    for (;;) {
        const char *seg = key + pos;
        const char *dot = memchr(seg, '.', plen - pos);
        size_t slen = dot ? (size_t)(dot - seg) : plen - pos;
        uint32_t tag;
        long item;
        int rc = parse_segment(seg, slen, &tag, &item, err);
        if (rc)
            return rc;
        uint16_t vr = dcm_dict_vr(tag);
        struct dcm_elem *seq = NULL;
        if (dot) {
            if (vr != DCM_VR_SQ)
                return pacs_err_set(err, PACS_EINVAL, "'%.*s' is not a sequence (VR %s)",
                                    (int)slen, seg, dcm_vr_str(vr, vrs));
            if (++depth > PACS_MAX_SEQ_DEPTH)
                return pacs_err_set(err, PACS_ELIMIT, "sequences nested deeper than %d",
                                    PACS_MAX_SEQ_DEPTH);
            if ((rc = get_seq(ds, tag, &seq, err)) ||
                (rc = get_item(ds, seq, item < 0 ? 0 : (unsigned long)item, &ds, err)))
                return rc;
            pos += slen + 1;
            continue;
        }
        if (vr == DCM_VR_SQ) {
            if (*value)
                return pacs_err_set(err, PACS_EINVAL,
                                    "'%.*s' is a sequence: give keys of its items "
                                    "(Seq[0].Keyword=VALUE)",
                                    (int)slen, seg);
            struct dcm_ds *it;
            if ((rc = get_seq(ds, tag, &seq, err)))
                return rc;
            return item < 0 ? 0 : get_item(ds, seq, (unsigned long)item, &it, err);
        }
        if (item >= 0)
            return pacs_err_set(err, PACS_EINVAL, "'%.*s' is not a sequence: no item index",
                                (int)slen, seg);
        return put_value(ds, tag, vr, value, err);
    }
}

static int build_identifier(const struct query *q, struct dcm_ds **out, struct pacs_err *err)
{
    struct dcm_ds *ds = dcm_ds_new();
    int rc = 0;
    bool utf8 = false;
    *out = NULL;
    if (!ds)
        return pacs_err_set(err, PACS_ENOMEM, "out of memory");
    if (q->level && dcm_ds_put_str(ds, DCM_TAG(0x0008, 0x0052), DCM_VR_CS, q->level)) {
        rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < q->n_keys; i++) {
        if ((rc = apply_key(ds, q->keys[i], err))) {
            struct pacs_err why = *err;
            rc = pacs_err_set(err, rc, "-k %s: %s", q->keys[i], why.msg);
            goto out;
        }
        for (const char *c = q->keys[i]; *c; c++)
            utf8 |= (unsigned char)*c >= 0x80;
    }
    const struct dcm_elem *lvl = dcm_ds_find(ds, DCM_TAG(0x0008, 0x0052));
    if (!lvl || !lvl->len) {
        rc = pacs_err_set(err, PACS_EINVAL, "no query level: give -L PATIENT|STUDY|SERIES|IMAGE");
        goto out;
    }
    /* The command line is taken as UTF-8, which the identifier must then
     * declare. */
    if (utf8 && !dcm_ds_find(ds, DCM_TAG_SPECIFIC_CHARSET) &&
        dcm_ds_put_str(ds, DCM_TAG_SPECIFIC_CHARSET, DCM_VR_CS, "ISO_IR 192")) {
        rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
        goto out;
    }
    *out = ds;
    ds = NULL;
out:
    dcm_ds_free(ds);
    return rc;
}

static int query_option(struct net *n, struct query *q, int argc, char **argv, int *i)
{
    const char *a = argv[*i], *v;
    if (is_opt(a, "-L", "--level")) {
        static const char *const levels[] = {"PATIENT", "STUDY", "SERIES", "IMAGE"};
        if (!(v = opt_value(n, argc, argv, i)))
            return OPT_BAD;
        q->level = NULL;
        for (size_t k = 0; k < sizeof levels / sizeof levels[0]; k++)
            if (!strcasecmp(v, levels[k]))
                q->level = levels[k];
        if (!strcasecmp(v, "INSTANCE"))
            q->level = "IMAGE";
        if (!q->level) {
            say(n, "bad level '%s' (PATIENT, STUDY, SERIES or IMAGE)", v);
            return OPT_BAD;
        }
        return OPT_TAKEN;
    }
    if (is_opt(a, "-P", "--patient")) {
        q->patient_root = true;
        return OPT_TAKEN;
    }
    if (is_opt(a, "-S", "--study")) {
        q->patient_root = false;
        return OPT_TAKEN;
    }
    if (is_opt(a, "-k", "--key")) {
        if (!(v = opt_value(n, argc, argv, i)))
            return OPT_BAD;
        q->keys[q->n_keys++] = v;
        return OPT_TAKEN;
    }
    return OPT_NOT_MINE;
}

/* Builds and encodes the identifier in the context's transfer syntax.
 * In verbose mode it is also dumped. */
static int encode_identifier(const struct net *n, const struct query *q, const char *ts,
                             struct dynbuf *out, struct pacs_err *err)
{
    struct dcm_ds *ds;
    int rc = build_identifier(q, &ds, err);
    if (rc)
        return rc;
    struct dcm_sink sink = dcm_sink_dynbuf(out);
    rc = dcm_write_dataset(ds, ts, &sink, err);
    if (rc == 0 && n->verbose) {
        struct dynbuf d;
        dynbuf_init(&d, 0);
        if (dcm_dump_ds(ds, NULL, 0, &d) == 0)
            fprintf(stderr, "pacsd %s: identifier:\n%s", n->tool, d.data ? (char *)d.data : "");
        dynbuf_free(&d);
    }
    dcm_ds_free(ds);
    return rc;
}

/* Checks the identifier is buildable before connecting, so a bad key is a
 * usage error, not a half-made association. */
static bool check_identifier(const struct net *n, const struct query *q)
{
    struct dcm_ds *ds;
    struct pacs_err err = {0};
    if (build_identifier(q, &ds, &err)) {
        say(n, "%s", err.msg);
        return false;
    }
    dcm_ds_free(ds);
    return true;
}

/* --- echo ------------------------------------------------------------------ */

static int tool_echo(struct net *n, int argc, char **argv)
{
    unsigned long repeat = 1;
    char **pos = calloc((size_t)argc + 1, sizeof *pos);
    int npos = 0;
    if (!pos) {
        say(n, "out of memory");
        return NET_EXIT_FAILED;
    }
    int code = NET_EXIT_USAGE;
    for (int i = 0; i < argc; i++) {
        int r = common_option(n, argc, argv, &i);
        if (r == OPT_HELP) {
            printf("usage: pacsd echo [OPTIONS] HOST PORT\n"
                   "Verifies a DICOM peer with C-ECHO. Prints nothing on success.\n"
                   "  -r, --repeat N        send N C-ECHOs on the association; default 1\n"
                   "%s",
                   common_help);
            code = NET_EXIT_OK;
            goto out;
        }
        if (r == OPT_BAD)
            goto out;
        if (r == OPT_TAKEN)
            continue;
        if (is_opt(argv[i], "-r", "--repeat")) {
            if (!opt_number(n, argc, argv, &i, 1, 1000000, &repeat))
                goto out;
        } else if (!positional(n, argv[i], pos, &npos)) {
            goto out;
        }
    }
    if (!set_endpoint(n, pos, npos, false))
        goto out;
    struct ul_proposal prop = {.abstract_syntax = SCU_UID_VERIFICATION, .ts = ts_query,
                               .n_ts = sizeof ts_query / sizeof ts_query[0]};
    struct ul_assoc *a;
    struct pacs_err err = {0};
    if (net_connect(n, &prop, 1, &a, &err)) {
        say(n, "%s", err.msg);
        goto out;
    }
    if (!ul_pc_find(a, SCU_UID_VERIFICATION, NULL)) {
        say(n, "%s:%u did not accept the Verification service", n->host, n->port);
        ul_abort(a);
        ul_free(a);
        goto out;
    }
    code = NET_EXIT_OK;
    for (unsigned long k = 0; k < repeat; k++) {
        uint16_t status;
        if (scu_echo(a, (uint16_t)(k % 65535 + 1), &status, &err)) {
            say(n, "C-ECHO: %s", err.msg);
            ul_free(a);
            code = NET_EXIT_USAGE;
            goto out;
        }
        struct dimse_cmd rsp = {.status = status};
        char line[160];
        if (status != 0x0000) {
            say(n, "C-ECHO: %s", status_line(&rsp, DIMSE_C_ECHO_RQ, line, sizeof line));
            code = NET_EXIT_FAILED;
            break;
        }
        VERBOSE(n, "C-ECHO %lu: %s", k + 1, status_line(&rsp, DIMSE_C_ECHO_RQ, line, sizeof line));
    }
    net_release(n, a);
out:
    free(pos);
    return code;
}

/* --- files: mapping and headers --------------------------------------------- */

struct mapped {
    int fd;
    uint8_t *p;
    size_t len;
};

static int map_file(const char *path, struct mapped *m, struct pacs_err *err)
{
    m->p = NULL;
    m->len = 0;
    m->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (m->fd < 0)
        return pacs_err_set(err, PACS_EIO, "cannot open: %s", strerror(errno));
    struct stat st;
    int rc = 0;
    if (fstat(m->fd, &st) != 0) {
        rc = pacs_err_set(err, PACS_EIO, "cannot stat: %s", strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = pacs_err_set(err, PACS_EINVAL, "not a regular file");
        goto out;
    }
    if (st.st_size == 0) {
        rc = pacs_err_set(err, PACS_ETRUNC, "empty file");
        goto out;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, m->fd, 0);
    if (p == MAP_FAILED) {
        rc = pacs_err_set(err, PACS_EIO, "cannot map: %s", strerror(errno));
        goto out;
    }
    m->p = p;
    m->len = (size_t)st.st_size;
out:
    if (rc) {
        close(m->fd);
        m->fd = -1;
    }
    return rc;
}

static void unmap_file(struct mapped *m)
{
    if (m->p)
        munmap(m->p, m->len);
    if (m->fd >= 0)
        close(m->fd);
    m->p = NULL;
    m->fd = -1;
}

/* What store needs from a file. */
struct file_info {
    char cls[65], inst[65], ts[65];
    uint64_t ds_offset;
};

/* A UID from the data set, or failing that from the meta group. */
static bool file_uid(const struct dcm_file *f, uint32_t ds_tag, uint32_t meta_tag, char *out,
                     size_t size)
{
    if (dcm_ds_get_str(f->ds, ds_tag, 0, out, size) == 0 && out[0])
        return true;
    return f->meta && dcm_ds_get_str(f->meta, meta_tag, 0, out, size) == 0 && out[0];
}

/* Reads the header of a mapped file (never the pixel data). */
static int inspect(const struct mapped *m, struct file_info *fi, struct pacs_err *err)
{
    struct dcm_read_opts o = {.stop_tag = DCM_TAG_PIXEL_DATA};
    struct dcm_file f;
    int rc = dcm_read_part10(m->p, m->len, &o, &f, err);
    if (rc)
        return rc;
    if (!file_uid(&f, DCM_TAG(0x0008, 0x0016), DCM_TAG(0x0002, 0x0002), fi->cls, sizeof fi->cls))
        rc = pacs_err_set(err, PACS_EINVAL, "no SOP Class UID");
    else if (!file_uid(&f, DCM_TAG(0x0008, 0x0018), DCM_TAG(0x0002, 0x0003), fi->inst,
                       sizeof fi->inst))
        rc = pacs_err_set(err, PACS_EINVAL, "no SOP Instance UID");
    else if (!uid_chars_ok(fi->cls) || !uid_chars_ok(fi->inst))
        rc = pacs_err_set(err, PACS_EINVAL, "malformed SOP Class or Instance UID");
    else if (!strcmp(fi->cls, NET_UID_DICOMDIR))
        rc = pacs_err_set(err, PACS_EUNSUPPORTED, "a DICOMDIR is a media index, not an instance");
    if (rc == 0) {
        int k = snprintf(fi->ts, sizeof fi->ts, "%s", f.ts_uid);
        if (k < 0 || (size_t)k >= sizeof fi->ts || !uid_chars_ok(fi->ts))
            rc = pacs_err_set(err, PACS_EINVAL, "malformed transfer syntax UID");
        fi->ds_offset = f.ds_offset;
    }
    dcm_file_free(&f);
    return rc;
}

/* --- store ----------------------------------------------------------------- */

struct store_pair {
    char cls[65], ts[65];
};

struct store_file {
    size_t path;   /* offset of the NUL-terminated path in job.paths */
    uint32_t pair; /* its (SOP class, transfer syntax) */
};

struct store_job {
    struct net *n;
    bool recurse;
    unsigned parallel;
    struct dynbuf paths;
    struct store_file *files;
    size_t n_files, cap_files;
    struct store_pair *pairs;
    size_t n_pairs, cap_pairs;
    /* the batch being sent: its contexts and the files left */
    struct ul_proposal *props;
    size_t n_props;
    size_t next, end;
    pthread_mutex_t mu;
    unsigned long stored, warnings, failed;
    bool connected;       /* some association was established */
    bool batch_connected; /* ... for the batch being sent */
    bool conn_reported;   /* the batch's connection error was said */
};

static void store_count(struct store_job *j, unsigned long *counter)
{
    pthread_mutex_lock(&j->mu);
    ++*counter;
    pthread_mutex_unlock(&j->mu);
}

static int store_add(struct store_job *j, const char *path, const struct file_info *fi)
{
    size_t p;
    for (p = 0; p < j->n_pairs; p++)
        if (!strcmp(j->pairs[p].cls, fi->cls) && !strcmp(j->pairs[p].ts, fi->ts))
            break;
    if (p == j->n_pairs) {
        if (j->n_pairs == j->cap_pairs) {
            size_t cap = j->cap_pairs ? 2 * j->cap_pairs : 16;
            void *v = realloc(j->pairs, cap * sizeof *j->pairs);
            if (!v)
                return PACS_ENOMEM;
            j->pairs = v;
            j->cap_pairs = cap;
        }
        memcpy(j->pairs[p].cls, fi->cls, sizeof fi->cls);
        memcpy(j->pairs[p].ts, fi->ts, sizeof fi->ts);
        j->n_pairs++;
    }
    if (j->n_files == j->cap_files) {
        size_t cap = j->cap_files ? 2 * j->cap_files : 256;
        void *v = realloc(j->files, cap * sizeof *j->files);
        if (!v)
            return PACS_ENOMEM;
        j->files = v;
        j->cap_files = cap;
    }
    size_t off = j->paths.len;
    if (dynbuf_append(&j->paths, path, strlen(path) + 1))
        return PACS_ENOMEM;
    j->files[j->n_files++] = (struct store_file){.path = off, .pair = (uint32_t)p};
    return 0;
}

/* Reads a file's header to learn its class and syntax. A file named on
 * the command line that is not a sendable instance is a failure; one met
 * in a directory is skipped with a note. */
static int store_probe(struct store_job *j, const char *path, bool named)
{
    struct mapped m;
    struct file_info fi;
    struct pacs_err err = {0};
    int rc = map_file(path, &m, &err);
    if (rc == 0) {
        rc = inspect(&m, &fi, &err);
        unmap_file(&m);
    }
    if (rc) {
        if (named) {
            say(j->n, "%s: %s", path, err.msg);
            j->failed++;
        } else {
            say(j->n, "%s: skipped: %s", path, err.msg);
        }
        return 0;
    }
    if (store_add(j, path, &fi)) {
        say(j->n, "out of memory");
        return PACS_ENOMEM;
    }
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds the files under dir, in name order. Symbolic links to files are
 * followed, to directories not (they could loop). */
static int store_walk(struct store_job *j, const char *dir, unsigned depth)
{
    if (depth > NET_MAX_DIR_DEPTH) {
        say(j->n, "%s: skipped: more than %d directories deep", dir, NET_MAX_DIR_DEPTH);
        return 0;
    }
    DIR *d = opendir(dir);
    if (!d) {
        say(j->n, "%s: cannot open directory: %s", dir, strerror(errno));
        j->failed++;
        return 0;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (n == cap) {
            size_t c = cap ? 2 * cap : 64;
            void *v = realloc(names, c * sizeof *names);
            if (!v) {
                rc = PACS_ENOMEM;
                break;
            }
            names = v;
            cap = c;
        }
        if (!(names[n] = strdup(de->d_name))) {
            rc = PACS_ENOMEM;
            break;
        }
        n++;
    }
    closedir(d);
    if (rc == 0)
        qsort(names, n, sizeof *names, cmp_names);
    struct dynbuf path;
    dynbuf_init(&path, 0);
    size_t dlen = strlen(dir);
    while (dlen > 1 && dir[dlen - 1] == '/')
        dlen--;
    for (size_t i = 0; i < n && rc == 0; i++) {
        dynbuf_reset(&path);
        if (dynbuf_append(&path, dir, dlen) || dynbuf_putc(&path, '/') ||
            dynbuf_puts(&path, names[i])) {
            rc = PACS_ENOMEM;
            break;
        }
        const char *p = (const char *)path.data;
        struct stat st;
        if (lstat(p, &st) != 0) {
            say(j->n, "%s: %s", p, strerror(errno));
            j->failed++;
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            if (j->recurse)
                rc = store_walk(j, p, depth + 1);
            continue;
        }
        if (S_ISLNK(st.st_mode) && (stat(p, &st) != 0 || !S_ISREG(st.st_mode))) {
            VERBOSE(j->n, "%s: skipped: a link to something other than a file", p);
            continue;
        }
        if (S_ISREG(st.st_mode))
            rc = store_probe(j, p, false);
    }
    dynbuf_free(&path);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (rc == PACS_ENOMEM)
        say(j->n, "out of memory");
    return rc;
}

struct fd_source {
    int fd;
    uint64_t off, end;
    bool pad; /* one NUL to send after `end` */
};

/* Streams the data set from the file with pread: a file cut short while
 * being sent gives a clean error instead of SIGBUS on the mapping. */
static int fd_read(void *ctx, void *p, size_t n, size_t *got, struct pacs_err *err)
{
    struct fd_source *s = ctx;
    if (s->off >= s->end && s->pad) {
        *(uint8_t *)p = 0;
        s->pad = false;
        *got = 1;
        return 0;
    }
    if (n > s->end - s->off)
        n = (size_t)(s->end - s->off);
    for (;;) {
        ssize_t k = pread(s->fd, p, n, (off_t)s->off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return pacs_err_set(err, PACS_EIO, "read: %s", strerror(errno));
        s->off += (uint64_t)k;
        *got = (size_t)k;
        return 0;
    }
}

/* Sends file idx. *dead when the association is lost. */
static void store_send(struct store_job *j, struct ul_assoc *a, size_t idx, uint16_t *msg_id,
                       bool *dead)
{
    const struct net *n = j->n;
    const char *path = (const char *)j->paths.data + j->files[idx].path;
    struct mapped m;
    struct file_info fi;
    struct pacs_err err = {0};
    char line[160];
    int rc = map_file(path, &m, &err);
    if (rc) {
        say(n, "%s: %s", path, err.msg);
        store_count(j, &j->failed);
        return;
    }
    if ((rc = inspect(&m, &fi, &err))) {
        say(n, "%s: %s", path, err.msg);
        store_count(j, &j->failed);
        goto out;
    }
    const struct ul_pc *pc = ul_pc_find(a, fi.cls, fi.ts);
    if (!pc) {
        const struct ul_pc *other = ul_pc_find(a, fi.cls, NULL);
        if (other)
            say(n, "%s: the peer accepts %s only as %s, not as the file's %s (store does not "
                   "transcode)",
                path, uid_name(fi.cls), uid_name(other->ts), uid_name(fi.ts));
        else
            say(n, "%s: the peer did not accept %s in %s", path, uid_name(fi.cls),
                uid_name(fi.ts));
        store_count(j, &j->failed);
        goto out;
    }
    if (++*msg_id == 0)
        *msg_id = 1;
    /* A Deflated data set may have an odd length in a file; on the wire it
     * must be even, padded with a NUL after the deflate stream (PS3.5 A.5),
     * or the peer rejects it (DCMTK: "Odd Fragment Length"). */
    uint64_t size = m.len - fi.ds_offset;
    struct fd_source fs = {.fd = m.fd, .off = fi.ds_offset, .end = m.len,
                           .pad = (size & 1) && !strcmp(fi.ts, DCM_UID_DEFLATED_LE)};
    struct scu_source src = {.read = fd_read, .ctx = &fs, .size = size + fs.pad};
    struct scu_store_rq rq = {.pc_id = pc->id, .sop_class = fi.cls, .sop_instance = fi.inst,
                              .msg_id = *msg_id};
    struct dimse_cmd rsp;
    if (scu_store(a, &rq, &src, &rsp, NULL, &err)) {
        say(n, "%s: %s", path, err.msg);
        *dead = true;
        store_count(j, &j->failed);
        goto out;
    }
    switch (dimse_status_class(rsp.status)) {
    case DIMSE_SUCCESS:
        VERBOSE(n, "%s: stored", path);
        store_count(j, &j->stored);
        break;
    case DIMSE_WARNING:
        say(n, "%s: stored with a warning: %s", path,
            status_line(&rsp, DIMSE_C_STORE_RQ, line, sizeof line));
        pthread_mutex_lock(&j->mu);
        j->stored++;
        j->warnings++;
        pthread_mutex_unlock(&j->mu);
        break;
    default:
        say(n, "%s: failed: %s", path, status_line(&rsp, DIMSE_C_STORE_RQ, line, sizeof line));
        store_count(j, &j->failed);
        break;
    }
out:
    unmap_file(&m);
}

/* One association (re-opened after a loss) taking files of the batch until
 * none is left. */
static void *store_worker(void *arg)
{
    struct store_job *j = arg;
    struct ul_assoc *a = NULL;
    uint16_t msg_id = 0;
    for (;;) {
        if (!a) {
            struct pacs_err err = {0};
            if (net_connect(j->n, j->props, j->n_props, &a, &err)) {
                pthread_mutex_lock(&j->mu);
                bool first = !j->conn_reported;
                j->conn_reported = true;
                pthread_mutex_unlock(&j->mu);
                if (first)
                    say(j->n, "%s", err.msg);
                a = NULL;
                break;
            }
            pthread_mutex_lock(&j->mu);
            j->connected = j->batch_connected = true;
            pthread_mutex_unlock(&j->mu);
            msg_id = 0;
        }
        pthread_mutex_lock(&j->mu);
        bool have = j->next < j->end;
        size_t idx = j->next;
        if (have)
            j->next++;
        pthread_mutex_unlock(&j->mu);
        if (!have)
            break;
        bool dead = false;
        store_send(j, a, idx, &msg_id, &dead);
        if (dead) {
            ul_free(a);
            a = NULL;
        }
    }
    if (a)
        net_release(j->n, a);
    return NULL;
}

static int cmp_files(const void *a, const void *b)
{
    const struct store_file *x = a, *y = b;
    if (x->pair != y->pair)
        return x->pair < y->pair ? -1 : 1;
    return x->path < y->path ? -1 : x->path > y->path;
}

/* Sends files [begin, end), whose pairs are [p0, p1), over `parallel`
 * associations. Returns how many files were left unsent. */
static size_t store_batch(struct store_job *j, size_t begin, size_t end, size_t p0, size_t p1)
{
    size_t left = end - begin;
    const char **ts = malloc((p1 - p0) * sizeof *ts);
    j->props = calloc(p1 - p0, sizeof *j->props);
    if (!ts || !j->props) {
        say(j->n, "out of memory");
        goto out;
    }
    for (size_t p = p0; p < p1; p++) {
        ts[p - p0] = j->pairs[p].ts;
        j->props[p - p0] = (struct ul_proposal){.abstract_syntax = j->pairs[p].cls,
                                                .ts = &ts[p - p0], .n_ts = 1};
    }
    j->n_props = p1 - p0;
    j->next = begin;
    j->end = end;
    j->conn_reported = false;
    j->batch_connected = false;
    VERBOSE(j->n, "sending %zu files over %zu presentation contexts", end - begin, p1 - p0);
    size_t nthreads = j->parallel < end - begin ? j->parallel : end - begin;
    pthread_t th[NET_MAX_PARALLEL];
    size_t started = 0;
    for (size_t t = 0; nthreads > 1 && t < nthreads; t++) {
        if (pthread_create(&th[t], NULL, store_worker, j) != 0)
            break;
        started++;
    }
    if (started == 0)
        store_worker(j);
    for (size_t t = 0; t < started; t++)
        pthread_join(th[t], NULL);
    left = j->end - j->next;
out:
    free(ts);
    free(j->props);
    j->props = NULL;
    return left;
}

static int tool_store(struct net *n, int argc, char **argv)
{
    struct store_job j = {.n = n, .recurse = true, .parallel = 1};
    char **pos = calloc((size_t)argc + 1, sizeof *pos);
    int npos = 0, code = NET_EXIT_USAGE;
    unsigned long x;
    dynbuf_init(&j.paths, 0);
    pthread_mutex_init(&j.mu, NULL);
    if (!pos) {
        say(n, "out of memory");
        goto out;
    }
    for (int i = 0; i < argc; i++) {
        int r = common_option(n, argc, argv, &i);
        if (r == OPT_HELP) {
            printf("usage: pacsd store [OPTIONS] HOST PORT FILE|DIR...\n"
                   "Sends DICOM files with C-STORE, each in its own transfer syntax, its\n"
                   "data set bytes exactly as stored. Directories are searched recursively;\n"
                   "files in them that are not DICOM are skipped with a note.\n"
                   "  --no-recurse          only the files directly in each DIR\n"
                   "  -j, --parallel N      N associations at once (1..%d); default 1\n"
                   "%s",
                   NET_MAX_PARALLEL, common_help);
            code = NET_EXIT_OK;
            goto out;
        }
        if (r == OPT_BAD)
            goto out;
        if (r == OPT_TAKEN)
            continue;
        if (is_opt(argv[i], "--no-recurse", NULL)) {
            j.recurse = false;
        } else if (is_opt(argv[i], "-j", "--parallel")) {
            if (!opt_number(n, argc, argv, &i, 1, NET_MAX_PARALLEL, &x))
                goto out;
            j.parallel = (unsigned)x;
        } else if (!positional(n, argv[i], pos, &npos)) {
            goto out;
        }
    }
    if (!set_endpoint(n, pos, npos, true))
        goto out;
    if (npos < 3) {
        say(n, "no FILE or DIR given");
        goto out;
    }
    code = NET_EXIT_FAILED;
    for (int i = 2; i < npos; i++) {
        struct stat st;
        int rc = 0;
        if (stat(pos[i], &st) != 0) {
            say(n, "%s: %s", pos[i], strerror(errno));
            j.failed++;
        } else if (S_ISDIR(st.st_mode)) {
            rc = store_walk(&j, pos[i], 0);
        } else if (S_ISREG(st.st_mode)) {
            rc = store_probe(&j, pos[i], true);
        } else {
            say(n, "%s: not a file or directory", pos[i]);
            j.failed++;
        }
        if (rc)
            goto out;
    }
    if (j.n_files == 0) {
        if (j.failed == 0)
            say(n, "no DICOM files to send");
        fprintf(stderr, "0 stored, 0 warnings, %lu failed\n", j.failed);
        goto out;
    }
    /* An association carries at most 128 contexts: with more distinct
     * (class, syntax) pairs, files are grouped by pair and sent in batches,
     * one association (per thread) each. */
    if (j.n_pairs > PDU_MAX_PCS)
        qsort(j.files, j.n_files, sizeof *j.files, cmp_files);
    size_t unsent = 0;
    for (size_t begin = 0; begin < j.n_files;) {
        size_t p0 = j.n_pairs > PDU_MAX_PCS ? j.files[begin].pair : 0;
        size_t p1 = j.n_pairs - p0 > PDU_MAX_PCS ? p0 + PDU_MAX_PCS : j.n_pairs;
        size_t end = begin;
        while (end < j.n_files && j.files[end].pair >= p0 && j.files[end].pair < p1)
            end++;
        unsent += store_batch(&j, begin, end, p0, p1);
        begin = end;
        /* A peer that took no association for this batch will not for the
         * next one either. */
        if (!j.batch_connected) {
            unsent += j.n_files - end;
            break;
        }
    }
    if (unsent) {
        say(n, "%zu file%s not sent", unsent, unsent == 1 ? "" : "s");
        j.failed += (unsigned long)unsent;
    }
    fprintf(stderr, "%lu stored, %lu warnings, %lu failed\n", j.stored, j.warnings, j.failed);
    code = !j.connected ? NET_EXIT_USAGE : j.failed ? NET_EXIT_FAILED : NET_EXIT_OK;
out:
    pthread_mutex_destroy(&j.mu);
    dynbuf_free(&j.paths);
    free(j.files);
    free(j.pairs);
    free(pos);
    return code;
}

/* --- find ------------------------------------------------------------------ */

struct find_ctx {
    const struct net *n;
    const char *ts;
    bool json;
    unsigned long answers, cancel_after;
    bool bad;     /* an answer could not be decoded or printed */
    struct dynbuf out;
};

static int on_find_match(void *ctx, const uint8_t *p, size_t len)
{
    struct find_ctx *f = ctx;
    f->answers++;
    VERBOSE(f->n, "answer %lu (%zu bytes)", f->answers, len);
    if (p && len) {
        struct dcm_file file;
        struct pacs_err err = {0};
        struct dcm_read_opts o = {.ts_uid = f->ts};
        int rc = dcm_read_part10(p, len, &o, &file, &err);
        if (rc == 0) {
            dynbuf_reset(&f->out);
            if (f->json) {
                rc = dynbuf_puts(&f->out, f->answers == 1 ? "[\n" : ",\n");
                if (rc == 0)
                    rc = dcm_json_write(file.ds, NULL, &f->out, &err);
            } else {
                rc = dcm_dump_file(&file, NULL, &f->out);
            }
            if (rc == 0 && fwrite(f->out.data, 1, f->out.len, stdout) != f->out.len)
                rc = pacs_err_set(&err, PACS_EIO, "cannot write the output: %s",
                                  strerror(errno));
            dcm_file_free(&file);
        }
        if (rc) {
            say(f->n, "answer %lu: %s", f->answers, err.msg[0] ? err.msg : pacs_strerror(rc));
            f->bad = true;
        }
    }
    return f->cancel_after && f->answers >= f->cancel_after;
}

static const char *model_uid(bool patient_root, uint16_t field)
{
    switch (field) {
    case DIMSE_C_FIND_RQ:
        return patient_root ? SCU_UID_PATIENT_ROOT_FIND : SCU_UID_STUDY_ROOT_FIND;
    case DIMSE_C_MOVE_RQ:
        return patient_root ? SCU_UID_PATIENT_ROOT_MOVE : SCU_UID_STUDY_ROOT_MOVE;
    default:
        return patient_root ? SCU_UID_PATIENT_ROOT_GET : SCU_UID_STUDY_ROOT_GET;
    }
}

/* The accepted context of the Q/R model, or NULL (said, association
 * aborted and freed). */
static const struct ul_pc *model_context(const struct net *n, struct ul_assoc *a,
                                         const char *uid)
{
    const struct ul_pc *pc = ul_pc_find(a, uid, NULL);
    if (!pc) {
        say(n, "%s:%u did not accept %s", n->host, n->port, uid_name(uid));
        ul_abort(a);
        ul_free(a);
    }
    return pc;
}

static int tool_find(struct net *n, int argc, char **argv)
{
    struct query q = {0};
    struct find_ctx f = {.n = n};
    char **pos = calloc((size_t)argc + 1, sizeof *pos);
    int npos = 0, code = NET_EXIT_USAGE;
    struct dynbuf ident;
    dynbuf_init(&ident, 0);
    dynbuf_init(&f.out, 0);
    q.keys = calloc((size_t)argc + 1, sizeof *q.keys);
    if (!pos || !q.keys) {
        say(n, "out of memory");
        goto out;
    }
    for (int i = 0; i < argc; i++) {
        int r = common_option(n, argc, argv, &i);
        if (r == OPT_NOT_MINE)
            r = query_option(n, &q, argc, argv, &i);
        if (r == OPT_HELP) {
            printf("usage: pacsd find [OPTIONS] HOST PORT -L LEVEL [-S|-P] -k KEY[=VALUE]...\n"
                   "Queries a peer with C-FIND and prints each answer as `pacsd dump` does.\n"
                   "%s"
                   "  --json                print the answers as one DICOM JSON array\n"
                   "  --cancel-after N      send C-CANCEL after N answers\n"
                   "%s",
                   query_help, common_help);
            code = NET_EXIT_OK;
            goto out;
        }
        if (r == OPT_BAD)
            goto out;
        if (r == OPT_TAKEN)
            continue;
        if (is_opt(argv[i], "--json", NULL)) {
            f.json = true;
        } else if (is_opt(argv[i], "--cancel-after", NULL)) {
            if (!opt_number(n, argc, argv, &i, 1, ULONG_MAX, &f.cancel_after))
                goto out;
        } else if (!positional(n, argv[i], pos, &npos)) {
            goto out;
        }
    }
    if (!set_endpoint(n, pos, npos, false))
        goto out;
    if (!check_identifier(n, &q))
        goto out;
    const char *uid = model_uid(q.patient_root, DIMSE_C_FIND_RQ);
    struct ul_proposal prop = {.abstract_syntax = uid, .ts = ts_query,
                               .n_ts = sizeof ts_query / sizeof ts_query[0]};
    struct ul_assoc *a;
    struct pacs_err err = {0};
    if (net_connect(n, &prop, 1, &a, &err)) {
        say(n, "%s", err.msg);
        goto out;
    }
    const struct ul_pc *pc = model_context(n, a, uid);
    if (!pc)
        goto out;
    f.ts = pc->ts;
    if (encode_identifier(n, &q, pc->ts, &ident, &err)) {
        say(n, "%s", err.msg);
        ul_abort(a);
        ul_free(a);
        goto out;
    }
    uint16_t status = 0;
    int rc = scu_find(a, pc->id, 1, ident.data, ident.len, on_find_match, &f, &status, &err);
    if (f.json)
        fputs(f.answers ? "\n]\n" : "[]\n", stdout);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        say(n, "cannot write the output");
        f.bad = true;
    }
    if (rc) {
        say(n, "C-FIND: %s", err.msg);
        ul_free(a);
        goto out;
    }
    struct dimse_cmd rsp = {.status = status};
    char line[160];
    enum dimse_status_class cls = dimse_status_class(status);
    if (cls == DIMSE_FAILURE) {
        say(n, "C-FIND failed: %s", status_line(&rsp, DIMSE_C_FIND_RQ, line, sizeof line));
        code = NET_EXIT_FAILED;
    } else {
        if (cls == DIMSE_WARNING)
            say(n, "C-FIND: %s", status_line(&rsp, DIMSE_C_FIND_RQ, line, sizeof line));
        else
            VERBOSE(n, "C-FIND: %s, %lu answer%s",
                status_line(&rsp, DIMSE_C_FIND_RQ, line, sizeof line),
                    f.answers, f.answers == 1 ? "" : "s");
        code = f.bad ? NET_EXIT_FAILED : NET_EXIT_OK;
    }
    net_release(n, a);
out:
    dynbuf_free(&ident);
    dynbuf_free(&f.out);
    free(q.keys);
    free(pos);
    return code;
}

/* --- move and get ---------------------------------------------------------- */

struct retrieve_ctx {
    const struct net *n;
    const char *ts;
    uint16_t remaining, completed, failed, warning;
    bool has_counts;
    unsigned long failed_uids;
    /* get: where and what we received */
    const char *dir;
    const char *peer_aet;
    unsigned long received, refused;
};

static void print_failed_uids(struct retrieve_ctx *r, const uint8_t *p, size_t len)
{
    struct dcm_file file;
    struct pacs_err err = {0};
    struct dcm_read_opts o = {.ts_uid = r->ts};
    if (dcm_read_part10(p, len, &o, &file, &err)) {
        say(r->n, "response data set: %s", err.msg);
        return;
    }
    const struct dcm_elem *e = dcm_ds_find(file.ds, DCM_TAG(0x0008, 0x0058));
    if (e && dcm_elem_is_value(e)) {
        uint32_t vm = dcm_elem_vm(e);
        for (uint32_t i = 0; i < vm; i++) {
            const char *s;
            size_t n;
            if (dcm_elem_str(e, i, &s, &n) == 0 && n) {
                say(r->n, "failed: %.*s", (int)n, s);
                r->failed_uids++;
            }
        }
    }
    dcm_file_free(&file);
}

static int on_retrieve_progress(void *ctx, const struct dimse_cmd *rsp, const uint8_t *p,
                                size_t len)
{
    struct retrieve_ctx *r = ctx;
    if (rsp->present & DIMSE_HAS_REMAINING)
        r->remaining = rsp->n_remaining;
    if (rsp->present & DIMSE_HAS_COMPLETED)
        r->completed = rsp->n_completed, r->has_counts = true;
    if (rsp->present & DIMSE_HAS_FAILED)
        r->failed = rsp->n_failed, r->has_counts = true;
    if (rsp->present & DIMSE_HAS_WARNING)
        r->warning = rsp->n_warning, r->has_counts = true;
    if (dimse_status_class(rsp->status) == DIMSE_PENDING)
        VERBOSE(r->n, "pending: remaining %u, completed %u, failed %u, warning %u",
                r->remaining, r->completed, r->failed, r->warning);
    if (p && len)
        print_failed_uids(r, p, len);
    return 0;
}

/* C-GET: one instance being written to DIR/.<uid>.part, renamed to
 * DIR/<uid>.dcm once whole. */
struct get_inst {
    struct retrieve_ctx *r;
    int fd;
    int error; /* errno of the first failed write, or -1 for other failures */
    char uid[65];
    struct dynbuf tmp, final;
};

/* The Part 10 header (preamble, "DICM", meta group) of an instance: the
 * codec writes it for an empty data set, which is then cut off (Deflated
 * would append an empty deflate stream). */
static int make_meta(const char *cls, const char *inst, const char *ts, const char *src_aet,
                     struct dynbuf *out, struct pacs_err *err)
{
    struct dcm_ds *ds = dcm_ds_new(), *meta = dcm_ds_new();
    int rc = 0;
    if (!ds || !meta || dcm_ds_put_str(meta, DCM_TAG(0x0002, 0x0002), DCM_VR_UI, cls) ||
        dcm_ds_put_str(meta, DCM_TAG(0x0002, 0x0003), DCM_VR_UI, inst) ||
        (src_aet[0] && dcm_ds_put_str(meta, DCM_TAG(0x0002, 0x0016), DCM_VR_AE, src_aet))) {
        rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
        goto out;
    }
    struct dcm_write_opts o = {.ts_uid = ts, .src_meta = meta};
    struct dcm_sink sink = dcm_sink_dynbuf(out);
    if ((rc = dcm_write_part10(ds, &o, &sink, err)))
        goto out;
    /* 132 bytes of preamble and magic, then (0002,0000) UL, 4, its value. */
    static const uint8_t gl[8] = {0x02, 0x00, 0x00, 0x00, 'U', 'L', 0x04, 0x00};
    if (out->len < 144 || memcmp(out->data + 132, gl, sizeof gl)) {
        rc = pacs_err_set(err, PACS_EINVAL, "meta group does not start with its length");
        goto out;
    }
    const uint8_t *v = out->data + 140;
    uint32_t len = (uint32_t)v[0] | (uint32_t)v[1] << 8 | (uint32_t)v[2] << 16 |
                   (uint32_t)v[3] << 24;
    if (len > out->len - 144) {
        rc = pacs_err_set(err, PACS_EINVAL, "meta group length %u exceeds the output", len);
        goto out;
    }
    out->len = 144 + (size_t)len;
out:
    dcm_ds_free(ds);
    dcm_ds_free(meta);
    return rc;
}

static void get_inst_free(struct get_inst *g)
{
    if (g->fd >= 0) {
        close(g->fd);
        unlink((const char *)g->tmp.data);
    }
    dynbuf_free(&g->tmp);
    dynbuf_free(&g->final);
    free(g);
}

static void *get_begin(void *ctx, const struct dimse_cmd *rq, const char *ts_uid)
{
    struct retrieve_ctx *r = ctx;
    struct pacs_err err = {0};
    struct dynbuf meta;
    const char *uid = rq->affected_sop_instance;
    dynbuf_init(&meta, 0);
    struct get_inst *g = calloc(1, sizeof *g);
    if (!g) {
        say(r->n, "out of memory");
        r->refused++;
        return NULL;
    }
    g->r = r;
    g->fd = -1;
    dynbuf_init(&g->tmp, 0);
    dynbuf_init(&g->final, 0);
    /* The UID names the file: only digits and dots may reach the path. */
    if (!(rq->present & DIMSE_HAS_AFFECTED_SOP_INSTANCE) || !uid_chars_ok(uid) ||
        !uid_chars_ok(rq->affected_sop_class)) {
        say(r->n, "refused a C-STORE without a valid SOP Class and Instance UID");
        goto fail;
    }
    memcpy(g->uid, uid, strlen(uid) + 1);
    if (make_meta(rq->affected_sop_class, uid, ts_uid, r->peer_aet, &meta, &err)) {
        say(r->n, "%s: %s", uid, err.msg);
        goto fail;
    }
    if (dynbuf_printf(&g->tmp, "%s/.%s.part", r->dir, uid) ||
        dynbuf_printf(&g->final, "%s/%s.dcm", r->dir, uid)) {
        say(r->n, "out of memory");
        goto fail;
    }
    g->fd = open((const char *)g->tmp.data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (g->fd < 0) {
        say(r->n, "%s: cannot create: %s", (const char *)g->tmp.data, strerror(errno));
        goto fail;
    }
    if (fd_write_all(g->fd, meta.data, meta.len)) {
        say(r->n, "%s: cannot write: %s", (const char *)g->tmp.data, strerror(errno));
        goto fail;
    }
    dynbuf_free(&meta);
    return g;
fail:
    dynbuf_free(&meta);
    get_inst_free(g);
    r->refused++;
    return NULL;
}

static void *refuse_begin(void *ctx, const struct dimse_cmd *rq, const char *ts_uid)
{
    struct retrieve_ctx *r = ctx;
    (void)ts_uid;
    say(r->n, "refused a C-STORE-RQ for %s: this is a C-MOVE", rq->affected_sop_instance);
    r->refused++;
    return NULL;
}

static int get_write(void *inst, const uint8_t *p, size_t n)
{
    struct get_inst *g = inst;
    /* scu.c also calls the sink for an instance begin refused (NULL):
     * refusing the bytes makes it read and drop the rest. */
    if (!g)
        return PACS_EINVAL;
    if (g->error)
        return PACS_EIO;
    if (fd_write_all(g->fd, p, n)) {
        g->error = errno ? errno : EIO;
        return PACS_EIO;
    }
    return 0;
}

static uint16_t get_end(void *inst, bool ok)
{
    struct get_inst *g = inst;
    struct retrieve_ctx *r = g->r;
    uint16_t status = 0x0000;
    if (g->error) {
        say(r->n, "%s: cannot write: %s", (const char *)g->tmp.data, strerror(g->error));
        status = 0xA700;
    } else if (!ok) {
        say(r->n, "%s: data set not received whole", g->uid);
        status = 0xC000;
    } else if (close(g->fd) != 0) {
        g->fd = -1;
        unlink((const char *)g->tmp.data);
        say(r->n, "%s: cannot write: %s", (const char *)g->tmp.data, strerror(errno));
        status = 0xA700;
    } else {
        g->fd = -1;
        if (rename((const char *)g->tmp.data, (const char *)g->final.data) != 0) {
            say(r->n, "%s: cannot rename: %s", (const char *)g->final.data, strerror(errno));
            unlink((const char *)g->tmp.data);
            status = 0xA700;
        }
    }
    if (status == 0x0000) {
        r->received++;
        VERBOSE(r->n, "received %s", (const char *)g->final.data);
    } else {
        r->refused++;
    }
    get_inst_free(g);
    return status;
}

/* Adds a proposal for a storage class (UID or keyword) unless present. */
static int add_storage(struct ul_proposal *props, size_t *n, size_t max, const char *cls,
                       const char *const *ts, size_t n_ts)
{
    if (!uid_chars_ok(cls)) {
        const struct dcm_uid_entry *u = dcm_uid_find_keyword(cls);
        if (!u)
            return PACS_ENOTFOUND;
        cls = u->uid;
    }
    for (size_t i = 0; i < *n; i++)
        if (!strcmp(props[i].abstract_syntax, cls))
            return 0;
    if (*n == max)
        return PACS_ELIMIT;
    props[(*n)++] = (struct ul_proposal){.abstract_syntax = cls, .ts = ts, .n_ts = n_ts,
                                         .request_scp_role = true};
    return 0;
}

static int tool_retrieve(struct net *n, uint16_t field, int argc, char **argv)
{
    bool get = field == DIMSE_C_GET_RQ;
    struct query q = {0};
    struct retrieve_ctx r = {.n = n};
    char dest[CONFIG_AET_MAX + 1] = "";
    char **pos = calloc((size_t)argc + 1, sizeof *pos);
    const char **classes = calloc((size_t)argc + 1, sizeof *classes);
    const char **tss = calloc((size_t)argc + 1, sizeof *tss);
    size_t n_classes = 0, n_tss = 0;
    int npos = 0, code = NET_EXIT_USAGE;
    struct dynbuf ident;
    dynbuf_init(&ident, 0);
    q.keys = calloc((size_t)argc + 1, sizeof *q.keys);
    if (!pos || !q.keys || !classes || !tss) {
        say(n, "out of memory");
        goto out;
    }
    for (int i = 0; i < argc; i++) {
        int r2 = common_option(n, argc, argv, &i);
        if (r2 == OPT_NOT_MINE)
            r2 = query_option(n, &q, argc, argv, &i);
        if (r2 == OPT_HELP) {
            if (get)
                printf("usage: pacsd get [OPTIONS] HOST PORT --out DIR -L LEVEL [-S|-P] "
                       "-k KEY[=VALUE]...\n"
                       "Retrieves instances with C-GET into DIR/<SOPInstanceUID>.dcm.\n"
                       "%s"
                       "  -od, --out DIR        where to write the instances (created if "
                       "missing)\n"
                       "  --sop-class UID       also accept this storage class (UID or\n"
                       "                        keyword); repeatable\n"
                       "  --ts UID              offer only these transfer syntaxes for "
                       "storage;\n"
                       "                        repeatable; default: uncompressed and the\n"
                       "                        common compressed ones\n"
                       "%s",
                       query_help, common_help);
            else
                printf("usage: pacsd move [OPTIONS] HOST PORT --dest AET -L LEVEL [-S|-P] "
                       "-k KEY[=VALUE]...\n"
                       "Asks the peer to send instances to AET with C-MOVE.\n"
                       "%s"
                       "  -aem, --dest AET      the move destination\n"
                       "%s",
                       query_help, common_help);
            code = NET_EXIT_OK;
            goto out;
        }
        if (r2 == OPT_BAD)
            goto out;
        if (r2 == OPT_TAKEN)
            continue;
        const char *a = argv[i], *v;
        if (!get && is_opt(a, "-aem", "--dest")) {
            if (!(v = opt_value(n, argc, argv, &i)) || !set_aet(n, v, dest))
                goto out;
        } else if (get && is_opt(a, "-od", "--out")) {
            if (!(r.dir = opt_value(n, argc, argv, &i)))
                goto out;
        } else if (get && is_opt(a, "--sop-class", NULL)) {
            if (!(classes[n_classes++] = opt_value(n, argc, argv, &i)))
                goto out;
        } else if (get && is_opt(a, "--ts", NULL)) {
            if (!(v = opt_value(n, argc, argv, &i)))
                goto out;
            if (!uid_chars_ok(v)) {
                say(n, "bad transfer syntax UID '%s'", v);
                goto out;
            }
            tss[n_tss++] = v;
        } else if (!positional(n, argv[i], pos, &npos)) {
            goto out;
        }
    }
    if (!set_endpoint(n, pos, npos, false))
        goto out;
    if (!get && !dest[0]) {
        say(n, "no move destination: give --dest AET");
        goto out;
    }
    if (get && !r.dir) {
        say(n, "no output directory: give --out DIR");
        goto out;
    }
    if (n_tss > PDU_MAX_TS_PER_PC) {
        say(n, "at most %d --ts", PDU_MAX_TS_PER_PC);
        goto out;
    }
    if (!check_identifier(n, &q))
        goto out;

    struct ul_proposal props[PDU_MAX_PCS];
    size_t n_props = 1;
    const char *uid = model_uid(q.patient_root, field);
    props[0] = (struct ul_proposal){.abstract_syntax = uid, .ts = ts_query,
                                    .n_ts = sizeof ts_query / sizeof ts_query[0]};
    if (get) {
        const char *const *sts = n_tss ? tss : ts_storage;
        size_t n_sts = n_tss ? n_tss : sizeof ts_storage / sizeof ts_storage[0];
        for (size_t k = 0; k < n_classes; k++) {
            int rc = add_storage(props, &n_props, PDU_MAX_PCS, classes[k], sts, n_sts);
            if (rc == PACS_ENOTFOUND) {
                say(n, "--sop-class %s: not a UID nor a known keyword", classes[k]);
                goto out;
            }
            if (rc) {
                say(n, "more than %d presentation contexts", PDU_MAX_PCS);
                goto out;
            }
        }
        /* Defaults fill what room is left after the explicit classes. */
        for (size_t k = 0; k < sizeof get_classes / sizeof get_classes[0]; k++)
            if (add_storage(props, &n_props, PDU_MAX_PCS, get_classes[k], sts, n_sts) ==
                PACS_ENOTFOUND)
                VERBOSE(n, "storage class %s is not in the dictionary", get_classes[k]);
        struct stat st;
        if (mkdir(r.dir, 0755) != 0 && (errno != EEXIST || stat(r.dir, &st) != 0 ||
                                        !S_ISDIR(st.st_mode))) {
            say(n, "%s: cannot create directory: %s", r.dir,
                errno == EEXIST ? "not a directory" : strerror(errno));
            goto out;
        }
    }
    struct ul_assoc *a;
    struct pacs_err err = {0};
    if (net_connect(n, props, n_props, &a, &err)) {
        say(n, "%s", err.msg);
        goto out;
    }
    const struct ul_pc *pc = model_context(n, a, uid);
    if (!pc)
        goto out;
    if (get) {
        size_t npc, granted = 0;
        const struct ul_pc *pcs = ul_pcs(a, &npc);
        for (size_t k = 0; k < npc; k++)
            granted += pcs[k].result == PDU_PC_ACCEPTANCE && pcs[k].requestor_scp;
        if (!granted)
            say(n, "warning: the peer accepted no storage class with us as SCP: it cannot "
                   "send instances");
    }
    r.ts = pc->ts;
    r.peer_aet = n->aec;
    if (encode_identifier(n, &q, pc->ts, &ident, &err)) {
        say(n, "%s", err.msg);
        ul_abort(a);
        ul_free(a);
        goto out;
    }
    /* C-MOVE: a C-STORE-RQ on this association would be the peer's error;
     * it is refused (scu.c needs a store either way). */
    struct scu_get_store store = {.begin = get ? get_begin : refuse_begin, .write = get_write,
                                  .end = get_end, .ctx = &r};
    uint16_t status = 0;
    int rc = scu_retrieve(a, pc->id, field, 1, get ? NULL : dest, ident.data, ident.len,
                          on_retrieve_progress, &r, &store, &status, &err);
    if (rc) {
        say(n, "%s: %s", get ? "C-GET" : "C-MOVE", err.msg);
        ul_free(a);
        if (get)
            fprintf(stderr, "received %lu, refused %lu\n", r.received, r.refused);
        goto out;
    }
    net_release(n, a);
    struct dimse_cmd rsp = {.status = status};
    char line[160];
    const char *op = get ? "C-GET" : "C-MOVE";
    const char *st = status_line(&rsp, field, line, sizeof line);
    enum dimse_status_class cls = dimse_status_class(status);
    if (cls == DIMSE_FAILURE)
        say(n, "%s failed: %s", op, st);
    else if (cls != DIMSE_SUCCESS)
        say(n, "%s: %s", op, st);
    else
        VERBOSE(n, "%s: %s", op, st);
    fprintf(stderr, "completed %u, failed %u, warning %u\n", r.completed, r.failed, r.warning);
    if (get)
        fprintf(stderr, "received %lu into %s, refused %lu\n", r.received, r.dir, r.refused);
    code = cls == DIMSE_FAILURE || r.failed || r.failed_uids || r.refused ? NET_EXIT_FAILED
                                                                          : NET_EXIT_OK;
out:
    dynbuf_free(&ident);
    free(q.keys);
    free(classes);
    free(tss);
    free(pos);
    return code;
}

/* --- entry points ------------------------------------------------------------ */

int cli_net_is_tool(const char *cmd)
{
    for (size_t i = 0; i < sizeof net_tools / sizeof net_tools[0]; i++)
        if (!strcmp(cmd, net_tools[i]))
            return 1;
    return 0;
}

int cli_net_main(const char *cmd, int argc, char **argv)
{
    struct net n = {.tool = cmd, .aet = NET_DEFAULT_AET, .aec = NET_DEFAULT_AEC,
                    .timeout_s = NET_DEFAULT_TIMEOUT, .idle_s = NET_DEFAULT_IDLE,
                    .max_pdu = NET_DEFAULT_MAX_PDU};
    if (!strcmp(cmd, "echo"))
        return tool_echo(&n, argc, argv);
    if (!strcmp(cmd, "store"))
        return tool_store(&n, argc, argv);
    if (!strcmp(cmd, "find"))
        return tool_find(&n, argc, argv);
    if (!strcmp(cmd, "move"))
        return tool_retrieve(&n, DIMSE_C_MOVE_RQ, argc, argv);
    if (!strcmp(cmd, "get"))
        return tool_retrieve(&n, DIMSE_C_GET_RQ, argc, argv);
    fprintf(stderr, "pacsd: '%s' is not a network tool\n", cmd);
    return NET_EXIT_USAGE;
}

void cli_net_usage(FILE *to)
{
    fprintf(to,
            "\n"
            "network tools (DICOM clients for any peer; pacsd TOOL --help for options):\n"
            "  echo HOST PORT                           verify a peer (C-ECHO)\n"
            "  store HOST PORT FILE|DIR...              send files (C-STORE)\n"
            "  find HOST PORT -L LEVEL -k KEY[=VALUE]...\n"
            "                                           query (C-FIND), print the answers\n"
            "  move HOST PORT --dest AET -L LEVEL -k KEY[=VALUE]...\n"
            "                                           have the peer send to AET (C-MOVE)\n"
            "  get HOST PORT --out DIR -L LEVEL -k KEY[=VALUE]...\n"
            "                                           retrieve into DIR (C-GET)\n"
            "  common options: -aet AET (default " NET_DEFAULT_AET "), -aec AET (default "
            NET_DEFAULT_AEC "),\n"
            "  --timeout S, --idle S, --max-pdu N, -v\n");
}
