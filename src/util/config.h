/* config.h - the effective configuration: defaults, then one JSON file, then
 * environment variables.
 *
 * Every key is optional. A key "k" at the top level is overridden by the
 * environment variable PACSD_K, a key "k" of section "s" by PACSD_S_K
 * (upper case); VAR_FILE names a file whose content (trailing newlines
 * stripped) is the value, for Kubernetes secrets. docs/configuration.md lists
 * every key.
 *
 * Strictness: an unknown key anywhere in the file, a bad value from any
 * source, or both VAR and VAR_FILE set, is an error whose message names the
 * key or the variable. Unknown PACSD_* environment variables are ignored
 * (other tools share the prefix).
 *
 * Ownership: config_load allocates the struct and every string and array in
 * it; config_free releases all of it. Other modules read the struct and never
 * modify it, so it can be shared between threads after loading.
 */
#ifndef PACS_CONFIG_H
#define PACS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/dynbuf.h"
#include "util/err.h"
#include "util/limits.h"

/* Longest AE title (PS3.5 table 6.2-1, AE). */
#define CONFIG_AET_MAX 16
/* Largest configuration file, and largest VAR_FILE, read (bytes). */
#define CONFIG_MAX_FILE_LEN PACS_MAX_CONFIG_FILE_LEN
/* Longest string value (paths, host names), bytes. */
#define CONFIG_MAX_STRING_LEN 4096u
/* Most entries in one list or in dicom.modalities. */
#define CONFIG_MAX_LIST 10000u

enum config_dup_policy { CONFIG_DUP_REPLACE, CONFIG_DUP_KEEP, CONFIG_DUP_REJECT };
enum config_log_level { CONFIG_LOG_DEBUG, CONFIG_LOG_INFO, CONFIG_LOG_WARN, CONFIG_LOG_ERROR };

/* A known remote AE: one member of dicom.modalities. */
struct config_modality {
    char *name;                   /* the JSON key, e.g. "STORESCP" */
    char aet[CONFIG_AET_MAX + 1]; /* "aet", spaces trimmed; default: the name */
    char *host;                   /* "host", required */
    uint16_t port;                /* "port", required, 1..65535 */
};

struct pacs_config {
    char *data_dir; /* "data_dir", default "./pacsd-data" */
    char *bind;     /* "bind", listen address, default "0.0.0.0" */
    struct {
        uint16_t port;                /* "dicom.port", default 4242 */
        char aet[CONFIG_AET_MAX + 1]; /* "dicom.aet", default "PACSD" */
        bool check_called_aet;        /* "dicom.check_called_aet", default true */
        /* "dicom.allowed_calling_aets", default empty = anyone */
        char **allowed_calling_aets;
        size_t n_allowed_calling_aets;
        /* "dicom.modalities", default none */
        struct config_modality *modalities;
        size_t n_modalities;
        unsigned max_associations; /* "dicom.max_associations", default 64 */
        uint32_t max_pdu_length;   /* "dicom.max_pdu_length", default 262144 */
        uint64_t max_message_size; /* "dicom.max_message_size", default 4 GiB - 1 */
        unsigned artim_timeout;    /* seconds, "dicom.artim_timeout", default 30 */
        unsigned idle_timeout;     /* seconds, "dicom.idle_timeout", default 300 */
        unsigned read_timeout;     /* seconds, "dicom.read_timeout", default 60 */
        unsigned write_timeout;    /* seconds, "dicom.write_timeout", default 60 */
        unsigned shutdown_timeout; /* seconds, "dicom.shutdown_timeout", default 30 */
        enum config_dup_policy duplicates; /* "dicom.duplicates", default replace */
        unsigned find_limit;       /* "dicom.find_limit", 0 = no limit (default) */
        /* "dicom.storage_sop_classes", default empty = every storage SOP class */
        char **storage_sop_classes;
        size_t n_storage_sop_classes;
    } dicom;
    struct {
        uint16_t port; /* "http.port", default 8042 */
        bool enabled;  /* "http.enabled", default true */
        /* seconds, "http.header_timeout", default 30: from a connection's
         * start (or the end of its previous response) to the end of the
         * request headers; also the grace before min_upload_rate counts. */
        unsigned header_timeout;
        /* bytes/s, "http.min_upload_rate", default 1024, 0 = off: a request
         * body slower than this on average is cut with 408. */
        uint32_t min_upload_rate;
        /* "http.cors_origin", default "" (CORS off): the value of
         * Access-Control-Allow-Origin, "*" or one origin
         * ("https://viewer.example.org"). */
        char *cors_origin;
        /* "http.public_url", default "": the scheme, host and port clients
         * reach pacsd by ("https://pacs.example.org"), for the absolute URLs
         * of DICOMweb answers (RetrieveURL); "" = from the request's Host
         * header as http://host. */
        char *public_url;
    } http;
    struct {
        enum config_log_level level; /* "log.level", default info */
    } log;
};

/* Loads the defaults, then the file at path (NULL: no file), then the
 * variables of envp (a NULL-terminated "NAME=value" array; NULL = environ).
 * On success *out is a new configuration the caller frees with config_free.
 * On failure *out is NULL and err names the key, the variable or the file:
 *   PACS_EIO (file unreadable), PACS_ELIMIT (file, value or list too large),
 *   PACS_EINVAL (bad JSON, unknown key, bad value), PACS_ENOMEM. */
int config_load(const char *path, char *const *envp, struct pacs_config **out,
                struct pacs_err *err);

/* Releases c and everything it owns. NULL is a no-op. */
void config_free(struct pacs_config *c);

/* Appends the configuration to out as indented JSON in the shape of the file,
 * every key present, followed by a newline. Keys marked secret print as
 * "********" when set. The output loads back to the same configuration.
 * Returns 0, PACS_ENOMEM or PACS_ELIMIT (out's maximum). */
int config_to_json(const struct pacs_config *c, struct dynbuf *out, struct pacs_err *err);

/* The modality whose name (JSON key) is name_or_aet, or else the first whose
 * AE title equals it (leading and trailing spaces ignored, case-sensitive as
 * AE titles are); NULL if none. The pointer lives as long as c. */
const struct config_modality *config_find_modality(const struct pacs_config *c,
                                                   const char *name_or_aet);

/* True if s[0..n) is a valid AE title once leading and trailing spaces are
 * trimmed: 1..16 characters of printable ASCII other than backslash. */
bool config_aet_valid(const char *s, size_t n);

/* "debug", "info", "warn" or "error"; "?" for a value out of range. */
const char *config_log_level_name(enum config_log_level lvl);

/* One key, for listings and documentation checks. Strings are static or
 * live in the struct itself. */
struct config_key_info {
    const char *path;    /* "dicom.port" */
    char env[64];        /* "PACSD_DICOM_PORT" */
    const char *type;    /* "integer", "string", "AE title", ... */
    const char *def;     /* default in environment syntax; "" for none */
    bool secret;         /* masked by config_to_json */
};
/* Fills *out with key i (0-based, in documentation order); false past the
 * last key. */
bool config_key_at(size_t i, struct config_key_info *out);

#endif
