/* config.c - configuration from defaults, a JSON file and the environment.
 *
 * One table of key descriptors (config_keys) drives everything: defaults,
 * file parsing, environment parsing, validation, printing and freeing. Every
 * value goes through one setter, set_value(), which takes a JSON value: the
 * file supplies JSON directly, and environment text (and the defaults, which
 * are written in environment syntax) is first turned into JSON by
 * text_to_json(). So a key is validated by the same code whatever its source.
 * The members of dicom.modalities are described by a second, smaller table
 * (modality_keys) and handled by the same functions.
 */
#include "util/config.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "dicom/dataset.h"
#include "util/utf8.h"

extern char **environ;

enum ktype {
    T_STR,        /* char *, non-empty, no control characters */
    T_AET,        /* char[CONFIG_AET_MAX + 1], trimmed */
    T_BOOL,       /* bool */
    T_INT,        /* unsigned integer of k->size bytes, k->min..k->max */
    T_ENUM,       /* an enum (int-sized): index into k->names */
    T_AETLIST,    /* char ** of AE titles, count at k->off_n */
    T_UIDLIST,    /* char ** of UIDs, count at k->off_n */
    T_MODALITIES, /* struct config_modality *, count at k->off_n */
};

#define K_SECRET 1u   /* masked by config_to_json */
#define K_REQUIRED 2u /* member must be present (modality_keys only) */
#define K_EMPTY_OK 4u /* T_STR: "" is a value (the feature is off) */

struct key {
    const char *path;         /* dotted JSON path; the environment name derives from it */
    enum ktype type;
    size_t off;               /* offset of the field in its struct */
    size_t size;              /* size of the field */
    size_t off_n;             /* lists: offset of the size_t count */
    const char *def;          /* default in environment syntax; NULL: none */
    uint64_t min, max;        /* T_INT */
    const char *const *names; /* T_ENUM: names[i] is enum value i; NULL-terminated */
    unsigned flags;
};

/* Enum values are stored through an int; these hold for GCC and Clang on every
 * target pacsd builds for, and the build fails rather than corrupt memory. */
_Static_assert(sizeof(enum config_dup_policy) == sizeof(int), "enum size");
_Static_assert(sizeof(enum config_log_level) == sizeof(int), "enum size");
_Static_assert(CONFIG_AET_MAX == 16, "messages say 16 characters");

/* Indexed by the enum values. */
static const char *const dup_names[] = {"replace", "keep", "reject", NULL};
static const char *const level_names[] = {"debug", "info", "warn", "error", NULL};

#define CF(f) .off = offsetof(struct pacs_config, f), .size = sizeof(((struct pacs_config *)0)->f)
#define CN(f) .off_n = offsetof(struct pacs_config, f)

static const struct key config_keys[] = {
    {.path = "data_dir", .type = T_STR, CF(data_dir), .def = "./pacsd-data"},
    {.path = "bind", .type = T_STR, CF(bind), .def = "0.0.0.0"},
    {.path = "dicom.port", .type = T_INT, CF(dicom.port), .def = "4242", .min = 1, .max = 65535},
    {.path = "dicom.aet", .type = T_AET, CF(dicom.aet), .def = "PACSD"},
    {.path = "dicom.check_called_aet", .type = T_BOOL, CF(dicom.check_called_aet), .def = "true"},
    {.path = "dicom.allowed_calling_aets", .type = T_AETLIST, CF(dicom.allowed_calling_aets),
     CN(dicom.n_allowed_calling_aets), .def = ""},
    {.path = "dicom.modalities", .type = T_MODALITIES, CF(dicom.modalities),
     CN(dicom.n_modalities), .def = "{}"},
    {.path = "dicom.max_associations", .type = T_INT, CF(dicom.max_associations), .def = "64",
     .min = 1, .max = 10000},
    /* PS3.8 allows any length; below 4 KiB the PDU overhead dominates and
     * above 16 MiB one PDU buffer per association costs too much memory. */
    {.path = "dicom.max_pdu_length", .type = T_INT, CF(dicom.max_pdu_length), .def = "262144",
     .min = 4096, .max = 16777216},
    /* The maximum is JSON's (a signed 64-bit integer in jansson). */
    {.path = "dicom.max_message_size", .type = T_INT, CF(dicom.max_message_size),
     .def = "4294967295", .min = 1, .max = INT64_MAX},
    {.path = "dicom.artim_timeout", .type = T_INT, CF(dicom.artim_timeout), .def = "30",
     .min = 1, .max = 3600},
    {.path = "dicom.idle_timeout", .type = T_INT, CF(dicom.idle_timeout), .def = "300",
     .min = 1, .max = 86400},
    {.path = "dicom.read_timeout", .type = T_INT, CF(dicom.read_timeout), .def = "60",
     .min = 1, .max = 86400},
    {.path = "dicom.write_timeout", .type = T_INT, CF(dicom.write_timeout), .def = "60",
     .min = 1, .max = 86400},
    /* 0 aborts running associations at once. */
    {.path = "dicom.shutdown_timeout", .type = T_INT, CF(dicom.shutdown_timeout), .def = "30",
     .min = 0, .max = 86400},
    {.path = "dicom.duplicates", .type = T_ENUM, CF(dicom.duplicates), .def = "replace",
     .names = dup_names},
    {.path = "dicom.find_limit", .type = T_INT, CF(dicom.find_limit), .def = "0",
     .min = 0, .max = UINT32_MAX},
    {.path = "dicom.storage_sop_classes", .type = T_UIDLIST, CF(dicom.storage_sop_classes),
     CN(dicom.n_storage_sop_classes), .def = ""},
    {.path = "http.port", .type = T_INT, CF(http.port), .def = "8042", .min = 1, .max = 65535},
    {.path = "http.enabled", .type = T_BOOL, CF(http.enabled), .def = "true"},
    {.path = "http.header_timeout", .type = T_INT, CF(http.header_timeout), .def = "30",
     .min = 1, .max = 3600},
    {.path = "http.min_upload_rate", .type = T_INT, CF(http.min_upload_rate), .def = "1024",
     .min = 0, .max = UINT32_MAX},
    {.path = "http.cors_origin", .type = T_STR, CF(http.cors_origin), .def = "",
     .flags = K_EMPTY_OK},
    {.path = "http.public_url", .type = T_STR, CF(http.public_url), .def = "",
     .flags = K_EMPTY_OK},
    {.path = "log.level", .type = T_ENUM, CF(log.level), .def = "info", .names = level_names},
};
#define N_CONFIG_KEYS (sizeof config_keys / sizeof config_keys[0])

#define MF(f) .off = offsetof(struct config_modality, f), \
              .size = sizeof(((struct config_modality *)0)->f)

/* "aet" has no default here: it defaults to the member's name (set_modality). */
static const struct key modality_keys[] = {
    {.path = "aet", .type = T_AET, MF(aet)},
    {.path = "host", .type = T_STR, MF(host), .flags = K_REQUIRED},
    {.path = "port", .type = T_INT, MF(port), .min = 1, .max = 65535, .flags = K_REQUIRED},
};
#define N_MODALITY_KEYS (sizeof modality_keys / sizeof modality_keys[0])

/* Longest name of a member of dicom.modalities, bytes. */
#define MODALITY_NAME_MAX 64

/* Where a value came from, for error messages: "dicom.port: ..." from the
 * file, "PACSD_DICOM_PORT: ..." or "PACSD_DICOM_MODALITIES: X.port: ..."
 * from the environment. */
struct where {
    const char *var;  /* environment variable, or NULL for the file */
    char path[256];   /* JSON path below var (or from the root), may be "" */
};

static void where_child(struct where *child, const struct where *parent, const char *member)
{
    child->var = parent->var;
    int n = snprintf(child->path, sizeof child->path, "%s%s%s", parent->path,
                     parent->path[0] ? "." : "", member);
    /* A path only appears in messages; cut a pathological one visibly. */
    if (n < 0)
        child->path[0] = '\0';
    else if ((size_t)n >= sizeof child->path)
        memcpy(child->path + sizeof child->path - 4, "...", 4);
}

static int fail(struct pacs_err *err, int code, const struct where *w, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(struct pacs_err *err, int code, const struct where *w, const char *fmt, ...)
{
    char reason[224];
    va_list ap;
    va_start(ap, fmt);
    /* Truncation is acceptable: pacs_err holds 256 bytes anyway. */
    if (vsnprintf(reason, sizeof reason, fmt, ap) < 0)
        reason[0] = '\0';
    va_end(ap);
    if (w->var && w->path[0])
        return pacs_err_set(err, code, "%s: %s: %s", w->var, w->path, reason);
    if (w->var || w->path[0])
        return pacs_err_set(err, code, "%s: %s", w->var ? w->var : w->path, reason);
    return pacs_err_set(err, code, "%s", reason);
}

/* A JSON value as shown in "(got ...)": compact, ASCII, cut at cap. */
static void got_json(const json_t *v, char *buf, size_t cap)
{
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_ENSURE_ASCII);
    if (!s) {
        memcpy(buf, "?", 2);
        return;
    }
    size_t n = strlen(s);
    if (n < cap) {
        memcpy(buf, s, n + 1);
    } else {
        memcpy(buf, s, cap - 4);
        memcpy(buf + cap - 4, "...", 4);
    }
    free(s);
}

/* Raw text (possibly not UTF-8) as shown in "(got ...)": quoted, bytes
 * outside printable ASCII as \xNN, cut at cap (cap >= 8). */
static void got_text(const char *s, size_t n, char *buf, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    buf[o++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[4];
        size_t el;
        if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') {
            esc[0] = (char)ch;
            el = 1;
        } else {
            esc[0] = '\\';
            esc[1] = 'x';
            esc[2] = hex[ch >> 4];
            esc[3] = hex[ch & 15];
            el = 4;
        }
        /* Keep room for "...", the closing quote and the NUL. */
        if (o + el + 5 > cap) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        memcpy(buf + o, esc, el);
        o += el;
    }
    buf[o++] = '"';
    buf[o] = '\0';
}

/* ---- environment names ---------------------------------------------------- */

static bool env_name(const char *path, const char *suffix, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "PACSD_%s%s", path, suffix);
    if (n < 0 || (size_t)n >= cap)
        return false;
    for (char *p = buf; *p; p++) {
        if (*p == '.')
            *p = '_';
        else if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    }
    return true;
}

static const char *env_get(char *const *envp, const char *name)
{
    size_t n = strlen(name);
    for (char *const *e = envp; *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return *e + n + 1;
    return NULL;
}

/* ---- field access --------------------------------------------------------- */

static void *field_at(void *base, const struct key *k)
{
    return (unsigned char *)base + k->off;
}

static const void *cfield_at(const void *base, const struct key *k)
{
    return (const unsigned char *)base + k->off;
}

static size_t *count_at(void *base, const struct key *k)
{
    return (size_t *)(void *)((unsigned char *)base + k->off_n);
}

static size_t ccount_at(const void *base, const struct key *k)
{
    size_t n;
    memcpy(&n, (const unsigned char *)base + k->off_n, sizeof n);
    return n;
}

static void write_uint(void *p, size_t size, uint64_t v)
{
    switch (size) {
    case 2: { uint16_t x = (uint16_t)v; memcpy(p, &x, 2); break; }
    case 4: { uint32_t x = (uint32_t)v; memcpy(p, &x, 4); break; }
    case 8: memcpy(p, &v, 8); break;
    default: abort(); /* a table entry with an unsupported field type */
    }
}

static uint64_t read_uint(const void *p, size_t size)
{
    switch (size) {
    case 2: { uint16_t x; memcpy(&x, p, 2); return x; }
    case 4: { uint32_t x; memcpy(&x, p, 4); return x; }
    case 8: { uint64_t x; memcpy(&x, p, 8); return x; }
    default: abort();
    }
}

static void free_list(char **l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(l[i]);
    free(l);
}

static void free_fields(void *base, const struct key *table, size_t ntable);

static void free_modalities(struct config_modality *m, size_t n)
{
    for (size_t i = 0; m && i < n; i++) {
        free(m[i].name);
        free_fields(&m[i], modality_keys, N_MODALITY_KEYS);
    }
    free(m);
}

static void free_fields(void *base, const struct key *table, size_t ntable)
{
    for (size_t i = 0; i < ntable; i++) {
        const struct key *k = &table[i];
        void *f = field_at(base, k);
        switch (k->type) {
        case T_STR:
            free(*(char **)f);
            *(char **)f = NULL;
            break;
        case T_AETLIST:
        case T_UIDLIST:
            free_list(*(char ***)f, *count_at(base, k));
            *(char ***)f = NULL;
            *count_at(base, k) = 0;
            break;
        case T_MODALITIES:
            free_modalities(*(struct config_modality **)f, *count_at(base, k));
            *(struct config_modality **)f = NULL;
            *count_at(base, k) = 0;
            break;
        case T_AET:
        case T_BOOL:
        case T_INT:
        case T_ENUM:
            break;
        }
    }
}

/* ---- validation of single values ----------------------------------------- */

/* NULL if s[0..n) is a valid AE title, with its trimmed extent in
 * *start and *len; otherwise why not. */
static const char *aet_problem(const char *s, size_t n, size_t *start, size_t *len)
{
    size_t a = 0, b = n;
    while (a < b && s[a] == ' ')
        a++;
    while (b > a && s[b - 1] == ' ')
        b--;
    if (a == b)
        return n ? "must not be all spaces" : "must not be empty";
    if (b - a > CONFIG_AET_MAX)
        return "longer than 16 characters";
    for (size_t i = a; i < b; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\\')
            return "must not contain a backslash";
        if (ch < 0x20 || ch > 0x7e)
            return "must be printable ASCII";
    }
    *start = a;
    *len = b - a;
    return NULL;
}

bool config_aet_valid(const char *s, size_t n)
{
    size_t a, l;
    return s && aet_problem(s, n, &a, &l) == NULL;
}

static const char *text_problem(const char *s, size_t n)
{
    if (n == 0)
        return "must not be empty";
    if (n > CONFIG_MAX_STRING_LEN)
        return "too long";
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return "must not contain control characters";
    return NULL;
}

static int enum_index(const char *const *names, const char *s)
{
    for (int i = 0; names[i]; i++)
        if (strcmp(names[i], s) == 0)
            return i;
    return -1;
}

/* "replace", "keep" or "reject" */
static void enum_list(const char *const *names, char *buf, size_t cap)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; names[i]; i++) {
        const char *sep = i == 0 ? "" : names[i + 1] ? ", " : " or ";
        int n = snprintf(buf + o, cap - o, "%s\"%s\"", sep, names[i]);
        if (n < 0 || (size_t)n >= cap - o)
            return; /* cut short; only used in messages */
        o += (size_t)n;
    }
}

static int fail_int(struct pacs_err *err, const struct where *w, const struct key *k,
                    const char *got)
{
    return fail(err, PACS_EINVAL, w, "must be an integer %llu..%llu (got %s)",
                (unsigned long long)k->min, (unsigned long long)k->max, got);
}

/* ---- the setter ------------------------------------------------------------ */

static int apply_object(void *base, const struct key *table, size_t ntable,
                        const char *prefix, json_t *obj, const struct where *w,
                        struct pacs_err *err);

static int set_list(void *base, const struct key *k, json_t *v, const struct where *w,
                    struct pacs_err *err)
{
    char got[64];
    const char *what = k->type == T_AETLIST ? "AE titles" : "UIDs";
    if (!json_is_array(v)) {
        got_json(v, got, sizeof got);
        return fail(err, PACS_EINVAL, w, "must be a list of %s (got %s)", what, got);
    }
    size_t n = json_array_size(v);
    if (n > CONFIG_MAX_LIST)
        return fail(err, PACS_ELIMIT, w, "more than %u entries", CONFIG_MAX_LIST);
    char **list = calloc(n ? n : 1, sizeof *list);
    if (!list)
        return pacs_err_set(err, PACS_ENOMEM, "out of memory");
    int rc = 0;
    size_t done = 0;
    for (; done < n; done++) {
        json_t *e = json_array_get(v, done);
        if (!json_is_string(e)) {
            got_json(e, got, sizeof got);
            rc = fail(err, PACS_EINVAL, w, "item %zu: must be a string (got %s)", done + 1, got);
            goto out;
        }
        const char *s = json_string_value(e);
        size_t len = json_string_length(e), start = 0;
        if (k->type == T_AETLIST) {
            const char *why = aet_problem(s, len, &start, &len);
            if (why) {
                got_json(e, got, sizeof got);
                rc = fail(err, PACS_EINVAL, w, "item %zu: %s (got %s)", done + 1, why, got);
                goto out;
            }
        } else if (!dcm_uid_valid(s, len)) {
            got_json(e, got, sizeof got);
            rc = fail(err, PACS_EINVAL, w, "item %zu: not a valid UID (got %s)", done + 1, got);
            goto out;
        }
        list[done] = strndup(s + start, len);
        if (!list[done]) {
            rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
            goto out;
        }
    }
    char ***slot = field_at(base, k);
    free_list(*slot, *count_at(base, k));
    *slot = list;
    *count_at(base, k) = n;
    list = NULL;
out:
    if (list)
        free_list(list, done);
    return rc;
}

/* Fills *m (zeroed) from one member of dicom.modalities. */
static int set_modality(struct config_modality *m, const char *name, json_t *v,
                        const struct where *w, struct pacs_err *err)
{
    char got[64];
    size_t nlen = strlen(name);
    if (nlen > MODALITY_NAME_MAX || text_problem(name, nlen))
        return fail(err, PACS_EINVAL, w, "a modality name must be 1..%d characters, "
                    "no control characters", MODALITY_NAME_MAX);
    if (!json_is_object(v)) {
        got_json(v, got, sizeof got);
        return fail(err, PACS_EINVAL, w,
                    "must be an object with \"aet\", \"host\" and \"port\" (got %s)", got);
    }
    m->name = strdup(name);
    if (!m->name)
        return pacs_err_set(err, PACS_ENOMEM, "out of memory");
    int rc = apply_object(m, modality_keys, N_MODALITY_KEYS, "", v, w, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < N_MODALITY_KEYS; i++) {
        if ((modality_keys[i].flags & K_REQUIRED) && !json_object_get(v, modality_keys[i].path)) {
            struct where cw;
            where_child(&cw, w, modality_keys[i].path);
            return fail(err, PACS_EINVAL, &cw, "required");
        }
    }
    if (!json_object_get(v, "aet")) {
        /* The name is the AE title unless told otherwise. */
        size_t a, l;
        const char *why = aet_problem(name, nlen, &a, &l);
        if (why) {
            struct where cw;
            where_child(&cw, w, "aet");
            return fail(err, PACS_EINVAL, &cw,
                        "required, as the name is not a valid AE title (%s)", why);
        }
        memcpy(m->aet, name + a, l);
        m->aet[l] = '\0';
    }
    return 0;
}

static int set_modalities(void *base, const struct key *k, json_t *v, const struct where *w,
                          struct pacs_err *err)
{
    char got[64];
    if (!json_is_object(v)) {
        got_json(v, got, sizeof got);
        return fail(err, PACS_EINVAL, w,
                    "must be an object of name: {\"aet\", \"host\", \"port\"} (got %s)", got);
    }
    size_t n = json_object_size(v);
    if (n > CONFIG_MAX_LIST)
        return fail(err, PACS_ELIMIT, w, "more than %u modalities", CONFIG_MAX_LIST);
    struct config_modality *mods = calloc(n ? n : 1, sizeof *mods);
    if (!mods)
        return pacs_err_set(err, PACS_ENOMEM, "out of memory");
    size_t used = 0;
    int rc = 0;
    const char *name;
    json_t *m;
    json_object_foreach(v, name, m) {
        struct where mw;
        where_child(&mw, w, name);
        rc = set_modality(&mods[used++], name, m, &mw, err);
        if (rc)
            goto out;
    }
    struct config_modality **slot = field_at(base, k);
    free_modalities(*slot, *count_at(base, k));
    *slot = mods;
    *count_at(base, k) = n;
    mods = NULL;
out:
    free_modalities(mods, used);
    return rc;
}

/* Validates v for key k and stores it in base, replacing (and freeing) the
 * previous value. On error base is unchanged. */
static int set_value(void *base, const struct key *k, json_t *v, const struct where *w,
                     struct pacs_err *err)
{
    char got[64];
    void *f = field_at(base, k);
    switch (k->type) {
    case T_STR: {
        if (!json_is_string(v)) {
            got_json(v, got, sizeof got);
            return fail(err, PACS_EINVAL, w, "must be a string (got %s)", got);
        }
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        const char *why = n == 0 && (k->flags & K_EMPTY_OK) ? NULL : text_problem(s, n);
        if (why)
            return fail(err, n > CONFIG_MAX_STRING_LEN ? PACS_ELIMIT : PACS_EINVAL, w, "%s", why);
        char *copy = strndup(s, n);
        if (!copy)
            return pacs_err_set(err, PACS_ENOMEM, "out of memory");
        free(*(char **)f);
        *(char **)f = copy;
        return 0;
    }
    case T_AET: {
        if (!json_is_string(v)) {
            got_json(v, got, sizeof got);
            return fail(err, PACS_EINVAL, w, "must be an AE title string (got %s)", got);
        }
        size_t start, len;
        const char *why = aet_problem(json_string_value(v), json_string_length(v), &start, &len);
        if (why) {
            got_json(v, got, sizeof got);
            return fail(err, PACS_EINVAL, w, "%s (got %s)", why, got);
        }
        memcpy(f, json_string_value(v) + start, len);
        ((char *)f)[len] = '\0';
        return 0;
    }
    case T_BOOL:
        if (!json_is_boolean(v)) {
            got_json(v, got, sizeof got);
            return fail(err, PACS_EINVAL, w, "must be true or false (got %s)", got);
        }
        *(bool *)f = json_is_true(v);
        return 0;
    case T_INT: {
        json_int_t x = json_is_integer(v) ? json_integer_value(v) : -1;
        if (x < 0 || (uint64_t)x < k->min || (uint64_t)x > k->max) {
            got_json(v, got, sizeof got);
            return fail_int(err, w, k, got);
        }
        write_uint(f, k->size, (uint64_t)x);
        return 0;
    }
    case T_ENUM: {
        int i = json_is_string(v) ? enum_index(k->names, json_string_value(v)) : -1;
        if (i < 0) {
            char list[96];
            enum_list(k->names, list, sizeof list);
            got_json(v, got, sizeof got);
            return fail(err, PACS_EINVAL, w, "must be one of %s (got %s)", list, got);
        }
        memcpy(f, &i, sizeof i);
        return 0;
    }
    case T_AETLIST:
    case T_UIDLIST:
        return set_list(base, k, v, w, err);
    case T_MODALITIES:
        return set_modalities(base, k, v, w, err);
    }
    return pacs_err_set(err, PACS_EINVAL, "%s: unhandled key type", k->path);
}

/* ---- objects: the file, and each modality --------------------------------- */

/* The key whose path is prefix + member, or NULL. */
static const struct key *find_key(const struct key *table, size_t ntable, const char *prefix,
                                  const char *member)
{
    size_t plen = strlen(prefix);
    for (size_t i = 0; i < ntable; i++)
        if (strncmp(table[i].path, prefix, plen) == 0 && strcmp(table[i].path + plen, member) == 0)
            return &table[i];
    return NULL;
}

/* True if prefix + member + "." starts some key's path (a section). */
static bool is_section(const struct key *table, size_t ntable, const char *prefix,
                       const char *member)
{
    size_t plen = strlen(prefix), mlen = strlen(member);
    for (size_t i = 0; i < ntable; i++) {
        const char *p = table[i].path;
        if (strncmp(p, prefix, plen) == 0 && strncmp(p + plen, member, mlen) == 0 &&
            p[plen + mlen] == '.')
            return true;
    }
    return false;
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[33];
    if (la > 32 || lb > 32)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* `unknown key "dicom.prot" (did you mean "dicom.port"?)`: the suggestion is
 * the closest sibling within two edits, as a typo is the usual cause. */
static int fail_unknown(struct pacs_err *err, const struct where *parent, const char *member,
                        const struct key *table, size_t ntable, const char *prefix)
{
    struct where cw;
    where_child(&cw, parent, member);
    size_t plen = strlen(prefix), best = 3;
    char cand[64], pick[64] = "";
    for (size_t i = 0; i < ntable; i++) {
        const char *p = table[i].path;
        if (strncmp(p, prefix, plen) != 0)
            continue;
        size_t len = strcspn(p + plen, ".");
        if (len >= sizeof cand)
            continue;
        memcpy(cand, p + plen, len);
        cand[len] = '\0';
        size_t d = edit_distance(member, cand);
        if (d < best && d < strlen(member)) {
            best = d;
            memcpy(pick, cand, len + 1);
        }
    }
    char hint[300] = "";
    if (pick[0]) {
        struct where sw;
        where_child(&sw, parent, pick);
        if (snprintf(hint, sizeof hint, " (did you mean \"%s\"?)", sw.path) < 0)
            hint[0] = '\0';
    }
    if (cw.var)
        return pacs_err_set(err, PACS_EINVAL, "%s: unknown key \"%s\"%s", cw.var, cw.path, hint);
    return pacs_err_set(err, PACS_EINVAL, "unknown key \"%s\"%s", cw.path, hint);
}

/* Sets every member of obj, which sits at `prefix` within table (and at w
 * for messages). Members that are neither keys nor sections are errors. */
static int apply_object(void *base, const struct key *table, size_t ntable,
                        const char *prefix, json_t *obj, const struct where *w,
                        struct pacs_err *err)
{
    const char *member;
    json_t *val;
    json_object_foreach(obj, member, val) {
        struct where cw;
        where_child(&cw, w, member);
        const struct key *k = find_key(table, ntable, prefix, member);
        if (k) {
            int rc = set_value(base, k, val, &cw, err);
            if (rc)
                return rc;
            continue;
        }
        if (!is_section(table, ntable, prefix, member))
            return fail_unknown(err, w, member, table, ntable, prefix);
        if (!json_is_object(val)) {
            char got[64];
            got_json(val, got, sizeof got);
            return fail(err, PACS_EINVAL, &cw, "must be an object (got %s)", got);
        }
        char sub[64];
        int n = snprintf(sub, sizeof sub, "%s%s.", prefix, member);
        if (n < 0 || (size_t)n >= sizeof sub) /* section names come from the table */
            return fail(err, PACS_EINVAL, &cw, "nesting too deep");
        int rc = apply_object(base, table, ntable, sub, val, &cw, err);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- environment syntax ---------------------------------------------------- */

static bool parse_decimal(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static bool word_is(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(s, word, n) == 0;
}

static int parse_json_text(const char *s, size_t n, const struct where *w, json_t **out,
                           struct pacs_err *err)
{
    json_error_t je;
    *out = json_loadb(s, n, JSON_REJECT_DUPLICATES, &je);
    if (!*out)
        return fail(err, PACS_EINVAL, w, "invalid JSON at character %d: %s", je.position, je.text);
    return 0;
}

/* "A, B,C" -> ["A","B","C"]; spaces around items dropped, empty items skipped. */
static int split_list(const char *s, size_t n, const struct where *w, json_t **out,
                      struct pacs_err *err)
{
    json_t *arr = json_array();
    if (!arr)
        return pacs_err_set(err, PACS_ENOMEM, "out of memory");
    size_t i = 0;
    while (i < n) {
        size_t end = i;
        while (end < n && s[end] != ',')
            end++;
        size_t a = i, b = end;
        while (a < b && (s[a] == ' ' || s[a] == '\t'))
            a++;
        while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t'))
            b--;
        if (b > a) {
            json_t *item = json_stringn(s + a, b - a);
            if (!item || json_array_append_new(arr, item)) {
                json_decref(arr);
                if (!utf8_valid((const uint8_t *)s + a, b - a))
                    return fail(err, PACS_EINVAL, w, "not valid UTF-8");
                return pacs_err_set(err, PACS_ENOMEM, "out of memory");
            }
        }
        i = end + 1;
    }
    *out = arr;
    return 0;
}

/* Turns environment text (or a default) into the JSON value set_value takes. */
static int text_to_json(const struct key *k, const char *s, size_t n, const struct where *w,
                        json_t **out, struct pacs_err *err)
{
    char got[64];
    *out = NULL;
    switch (k->type) {
    case T_STR:
    case T_AET:
    case T_ENUM:
        if (!utf8_valid((const uint8_t *)s, n))
            return fail(err, PACS_EINVAL, w, "not valid UTF-8");
        *out = json_stringn(s, n);
        break;
    case T_BOOL:
        if (word_is(s, n, "true") || word_is(s, n, "yes") || word_is(s, n, "1")) {
            *out = json_true();
        } else if (word_is(s, n, "false") || word_is(s, n, "no") || word_is(s, n, "0")) {
            *out = json_false();
        } else {
            got_text(s, n, got, sizeof got);
            return fail(err, PACS_EINVAL, w, "must be true, false, yes, no, 1 or 0 (got %s)", got);
        }
        break;
    case T_INT: {
        uint64_t v;
        if (!parse_decimal(s, n, &v) || v > INT64_MAX) {
            got_text(s, n, got, sizeof got);
            return fail_int(err, w, k, got);
        }
        *out = json_integer((json_int_t)v);
        break;
    }
    case T_AETLIST:
    case T_UIDLIST: {
        size_t i = 0;
        while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n'))
            i++;
        if (i < n && s[i] == '[')
            return parse_json_text(s, n, w, out, err);
        return split_list(s, n, w, out, err);
    }
    case T_MODALITIES:
        return parse_json_text(s, n, w, out, err);
    }
    if (!*out)
        return pacs_err_set(err, PACS_ENOMEM, "out of memory");
    return 0;
}

/* ---- files ----------------------------------------------------------------- */

/* Reads at most CONFIG_MAX_FILE_LEN bytes of path into *out (NUL-terminated,
 * caller frees). label prefixes error messages. */
static int read_small_file(const char *path, const char *label, char **out, size_t *len,
                           struct pacs_err *err)
{
    struct dynbuf b;
    dynbuf_init(&b, CONFIG_MAX_FILE_LEN);
    *out = NULL;
    int rc = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = pacs_err_set(err, PACS_EIO, "%s: cannot open %s: %s", label, path, strerror(errno));
        goto out;
    }
    for (;;) {
        char chunk[4096];
        ssize_t r = read(fd, chunk, sizeof chunk);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = pacs_err_set(err, PACS_EIO, "%s: cannot read %s: %s", label, path,
                              strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        rc = dynbuf_append(&b, chunk, (size_t)r);
        if (rc) {
            rc = rc == PACS_ELIMIT
                     ? pacs_err_set(err, rc, "%s: %s is larger than %u bytes", label, path,
                                    CONFIG_MAX_FILE_LEN)
                     : pacs_err_set(err, rc, "out of memory");
            goto out;
        }
    }
    *out = dynbuf_take(&b, len);
    if (!*out)
        rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
out:
    if (fd >= 0)
        close(fd);
    dynbuf_free(&b);
    return rc;
}

static int apply_file(struct pacs_config *c, const char *path, struct pacs_err *err)
{
    char *text = NULL;
    size_t len = 0;
    json_t *root = NULL;
    int rc = read_small_file(path, "configuration file", &text, &len, err);
    if (rc)
        goto out;
    json_error_t je;
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        rc = pacs_err_set(err, PACS_EINVAL, "%s:%d:%d: %s", path, je.line, je.column, je.text);
        goto out;
    }
    if (!json_is_object(root)) {
        rc = pacs_err_set(err, PACS_EINVAL, "%s: must hold a JSON object", path);
        goto out;
    }
    struct where w = {.var = NULL, .path = ""};
    rc = apply_object(c, config_keys, N_CONFIG_KEYS, "", root, &w, err);
out:
    json_decref(root);
    free(text);
    return rc;
}

/* ---- layers ---------------------------------------------------------------- */

static int apply_defaults(struct pacs_config *c, struct pacs_err *err)
{
    for (size_t i = 0; i < N_CONFIG_KEYS; i++) {
        const struct key *k = &config_keys[i];
        struct where root = {.var = NULL, .path = ""}, w;
        where_child(&w, &root, k->path);
        json_t *v;
        int rc = text_to_json(k, k->def, strlen(k->def), &w, &v, err);
        if (!rc)
            rc = set_value(c, k, v, &w, err);
        json_decref(v);
        if (rc)
            return rc;
    }
    return 0;
}

static int apply_env_key(struct pacs_config *c, const struct key *k, char *const *envp,
                         struct pacs_err *err)
{
    char name[64], name_file[72];
    if (!env_name(k->path, "", name, sizeof name) ||
        !env_name(k->path, "_FILE", name_file, sizeof name_file))
        return pacs_err_set(err, PACS_EINVAL, "%s: key too long", k->path);
    const char *val = env_get(envp, name);
    const char *fpath = env_get(envp, name_file);
    if (!val && !fpath)
        return 0;
    if (val && fpath)
        return pacs_err_set(err, PACS_EINVAL, "%s and %s are both set; set only one", name,
                            name_file);
    struct where w = {.var = val ? name : name_file, .path = ""};
    char *content = NULL;
    json_t *j = NULL;
    size_t n;
    int rc = 0;
    if (fpath) {
        rc = read_small_file(fpath, name_file, &content, &n, err);
        if (rc)
            goto out;
        /* Secrets files usually end in a newline that is not part of the value. */
        while (n > 0 && (content[n - 1] == '\n' || content[n - 1] == '\r'))
            n--;
        if (memchr(content, '\0', n)) {
            rc = fail(err, PACS_EINVAL, &w, "%s contains a NUL byte", fpath);
            goto out;
        }
        val = content;
    } else {
        n = strlen(val);
    }
    rc = text_to_json(k, val, n, &w, &j, err);
    if (!rc)
        rc = set_value(c, k, j, &w, err);
out:
    json_decref(j);
    free(content);
    return rc;
}

/* Rules that involve more than one key. */
static int check_combined(const struct pacs_config *c, struct pacs_err *err)
{
    if (c->http.enabled && c->http.port == c->dicom.port)
        return pacs_err_set(err, PACS_EINVAL,
                            "http.port: same as dicom.port (%u); both listen on bind",
                            (unsigned)c->dicom.port);
    const char *u = c->http.public_url;
    if (u && *u) {
        size_t n = strlen(u);
        bool scheme = !strncmp(u, "http://", 7) || !strncmp(u, "https://", 8);
        if (!scheme || u[n - 1] == '/' || strpbrk(u, " ?#\\"))
            return pacs_err_set(err, PACS_EINVAL,
                                "http.public_url: must be http://host[:port][/prefix] or "
                                "https://..., without a trailing '/' (got \"%s\")", u);
    }
    return 0;
}

int config_load(const char *path, char *const *envp, struct pacs_config **out,
                struct pacs_err *err)
{
    *out = NULL;
    struct pacs_config *c = calloc(1, sizeof *c);
    if (!c)
        return pacs_err_set(err, PACS_ENOMEM, "out of memory");
    int rc = apply_defaults(c, err);
    if (rc)
        goto out;
    if (path) {
        rc = apply_file(c, path, err);
        if (rc)
            goto out;
    }
    if (!envp)
        envp = environ;
    for (size_t i = 0; i < N_CONFIG_KEYS; i++) {
        rc = apply_env_key(c, &config_keys[i], envp, err);
        if (rc)
            goto out;
    }
    rc = check_combined(c, err);
    if (!rc)
        pacs_err_clear(err);
out:
    if (rc)
        config_free(c);
    else
        *out = c;
    return rc;
}

void config_free(struct pacs_config *c)
{
    if (!c)
        return;
    free_fields(c, config_keys, N_CONFIG_KEYS);
    free(c);
}

/* ---- printing -------------------------------------------------------------- */

static json_t *object_of(const void *base, const struct key *table, size_t ntable);

static json_t *get_value(const void *base, const struct key *k)
{
    const void *f = cfield_at(base, k);
    switch (k->type) {
    case T_STR: {
        const char *s = *(char *const *)f;
        if (!s)
            s = "";
        return json_string((k->flags & K_SECRET) && *s ? "********" : s);
    }
    case T_AET:
        return json_string((const char *)f);
    case T_BOOL:
        return json_boolean(*(const bool *)f);
    case T_INT:
        return json_integer((json_int_t)read_uint(f, k->size));
    case T_ENUM: {
        int i;
        memcpy(&i, f, sizeof i);
        for (int j = 0; k->names[j]; j++)
            if (j == i)
                return json_string(k->names[j]);
        return json_string("?");
    }
    case T_AETLIST:
    case T_UIDLIST: {
        char *const *l = *(char **const *)f;
        size_t n = ccount_at(base, k);
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++) {
            if (json_array_append_new(arr, json_string(l[i]))) {
                json_decref(arr);
                return NULL;
            }
        }
        return arr;
    }
    case T_MODALITIES: {
        const struct config_modality *m = *(struct config_modality *const *)f;
        size_t n = ccount_at(base, k);
        json_t *obj = json_object();
        for (size_t i = 0; obj && i < n; i++) {
            if (json_object_set_new(obj, m[i].name,
                                    object_of(&m[i], modality_keys, N_MODALITY_KEYS))) {
                json_decref(obj);
                return NULL;
            }
        }
        return obj;
    }
    }
    return NULL;
}

/* The fields of base as nested JSON objects following the dotted paths. */
static json_t *object_of(const void *base, const struct key *table, size_t ntable)
{
    json_t *root = json_object();
    for (size_t i = 0; root && i < ntable; i++) {
        json_t *parent = root;
        const char *p = table[i].path, *dot;
        while (parent && (dot = strchr(p, '.'))) {
            json_t *o = json_object_getn(parent, p, (size_t)(dot - p));
            if (!o) {
                o = json_object();
                if (json_object_setn_new(parent, p, (size_t)(dot - p), o))
                    o = NULL;
            }
            parent = o;
            p = dot + 1;
        }
        if (!parent || json_object_set_new(parent, p, get_value(base, &table[i]))) {
            json_decref(root);
            return NULL;
        }
    }
    return root;
}

int config_to_json(const struct pacs_config *c, struct dynbuf *out, struct pacs_err *err)
{
    char *text = NULL;
    int rc = 0;
    json_t *root = object_of(c, config_keys, N_CONFIG_KEYS);
    if (root)
        text = json_dumps(root, JSON_INDENT(2));
    if (!text) {
        rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
        goto out;
    }
    rc = dynbuf_puts(out, text);
    if (!rc)
        rc = dynbuf_putc(out, '\n');
    if (rc)
        pacs_err_set(err, rc, "configuration text: %s", pacs_strerror(rc));
out:
    free(text);
    json_decref(root);
    return rc;
}

/* ---- look-ups -------------------------------------------------------------- */

const struct config_modality *config_find_modality(const struct pacs_config *c,
                                                   const char *name_or_aet)
{
    if (!c || !name_or_aet)
        return NULL;
    for (size_t i = 0; i < c->dicom.n_modalities; i++)
        if (strcmp(c->dicom.modalities[i].name, name_or_aet) == 0)
            return &c->dicom.modalities[i];
    size_t a = 0, b = strlen(name_or_aet);
    while (a < b && name_or_aet[a] == ' ')
        a++;
    while (b > a && name_or_aet[b - 1] == ' ')
        b--;
    for (size_t i = 0; i < c->dicom.n_modalities; i++) {
        const char *aet = c->dicom.modalities[i].aet;
        if (strlen(aet) == b - a && memcmp(aet, name_or_aet + a, b - a) == 0)
            return &c->dicom.modalities[i];
    }
    return NULL;
}

const char *config_log_level_name(enum config_log_level lvl)
{
    if ((int)lvl < 0 || (size_t)lvl >= sizeof level_names / sizeof level_names[0] - 1)
        return "?";
    return level_names[lvl];
}

bool config_key_at(size_t i, struct config_key_info *out)
{
    static const char *const type_names[] = {
        [T_STR] = "string",
        [T_AET] = "AE title",
        [T_BOOL] = "boolean",
        [T_INT] = "integer",
        [T_ENUM] = "enum",
        [T_AETLIST] = "list of AE titles",
        [T_UIDLIST] = "list of UIDs",
        [T_MODALITIES] = "object",
    };
    if (i >= N_CONFIG_KEYS)
        return false;
    const struct key *k = &config_keys[i];
    out->path = k->path;
    if (!env_name(k->path, "", out->env, sizeof out->env))
        out->env[0] = '\0';
    out->type = type_names[k->type];
    out->def = k->def ? k->def : "";
    out->secret = (k->flags & K_SECRET) != 0;
    return true;
}
