/* dict.c - lookups over the generated dictionary tables (dict_data.c) and
 * the rules that no table row spells out: group lengths, private creators and
 * repeating groups. Everything here is read-only; no locks are needed. */
#include "dicom/dict.h"

#include <string.h>

#include "dicom/vr.h"

#define T (&dcm_dict_tables)

/* Longest UID PS3.5 9.1 allows; anything longer cannot be in the registry. */
#define UID_MAX_LEN 64

/* (gggg,0000) of every group, PS3.5 7.2. The element must be 0; any group. */
static const struct dcm_dict_entry group_length = {
    0x00000000u, 0x0000ffffu, {DCM_VR_UL, 0, 0}, 0,
    "GenericGroupLength", "Generic Group Length", "1",
};

/* (gggg,0010-00ff) of odd groups, PS3.5 7.8.1. The mask says "odd group,
 * element below 0x0100"; lookup also requires element >= 0x0010. */
static const struct dcm_dict_entry private_creator = {
    0x00010000u, 0x0001ff00u, {DCM_VR_LO, 0, 0}, 0,
    "PrivateCreator", "Private Creator", "1",
};

/* Index of `tag` in the exact table, or -1. */
static long find_exact(uint32_t tag)
{
    const uint32_t *tags = T->tags;
    unsigned lo = 0, hi = T->count;

    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        if (tags[mid] < tag)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (lo < T->count && tags[lo] == tag) ? (long)lo : -1;
}

static const struct dcm_dict_entry *find_repeater(uint32_t tag)
{
    for (unsigned i = 0; i < T->repeater_count; i++) {
        const struct dcm_dict_entry *e = &T->repeaters[i];
        if ((tag & e->mask) == e->tag)
            return e;
    }
    return NULL;
}

const struct dcm_dict_entry *dcm_dict_lookup(uint32_t tag)
{
    long i = find_exact(tag);
    uint16_t group = DCM_GROUP(tag), elem = DCM_ELEMENT(tag);

    if (i >= 0)
        return &T->entries[i];
    /* Group length wins over repeaters that would also match element 0,
     * such as (1010,xxxx) Zonal Map and (1000,xxx0) Escape Triplet. */
    if (elem == 0)
        return &group_length;
    /* Odd groups are private: this also keeps (60xx), (50xx) and (7Fxx)
     * repeating groups to even groups. */
    if (group & 1)
        return (elem >= 0x0010 && elem <= 0x00ff) ? &private_creator : NULL;
    return find_repeater(tag);
}

/* Binary search of a keyword index; `key_of` gives the keyword of row i. */
static long find_kw(const char *kw, const uint16_t *index, unsigned n,
                    const char *(*key_of)(unsigned))
{
    unsigned lo = 0, hi = n;

    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        int c = strcmp(key_of(index[mid]), kw);
        if (c == 0)
            return index[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

static const char *tag_kw(unsigned i) { return T->entries[i].keyword; }
static const char *uid_kw(unsigned i) { return T->uids[i].keyword; }

const struct dcm_dict_entry *dcm_dict_find_keyword(const char *keyword)
{
    long i;

    if (!keyword || !keyword[0])
        return NULL;
    i = find_kw(keyword, T->kw_index, T->kw_count, tag_kw);
    if (i >= 0)
        return &T->entries[i];
    for (unsigned r = 0; r < T->repeater_count; r++)
        if (strcmp(T->repeaters[r].keyword, keyword) == 0)
            return &T->repeaters[r];
    return NULL;
}

uint16_t dcm_dict_vr(uint32_t tag)
{
    const struct dcm_dict_entry *e = dcm_dict_lookup(tag);
    return e ? e->vr[0] : DCM_VR_UN;
}

const char *dcm_dict_keyword(uint32_t tag)
{
    const struct dcm_dict_entry *e = dcm_dict_lookup(tag);
    return e ? e->keyword : "";
}

unsigned dcm_dict_size(void) { return T->count; }

const struct dcm_dict_entry *dcm_dict_at(unsigned i)
{
    return i < T->count ? &T->entries[i] : NULL;
}

const struct dcm_dict_entry *dcm_dict_repeater_at(unsigned i)
{
    return i < T->repeater_count ? &T->repeaters[i] : NULL;
}

/* strcmp order of entry UID `ent` against the len bytes at `key`, which
 * hold no NUL (checked by the caller), so `ent` is never read past its end:
 * a NUL in `ent` always differs from the key byte at that position. */
static int uid_cmp(const char *ent, const char *key, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char a = (unsigned char)ent[i], b = (unsigned char)key[i];
        if (a != b)
            return a < b ? -1 : 1;
    }
    return ent[len] ? 1 : 0;
}

const struct dcm_uid_entry *dcm_uid_lookup(const char *uid, unsigned len)
{
    size_t n = len;
    unsigned lo = 0, hi = T->uid_count;

    if (!uid)
        return NULL;
    while (n > 0 && (uid[n - 1] == '\0' || uid[n - 1] == ' '))
        n--;
    if (n == 0 || n > UID_MAX_LEN || memchr(uid, '\0', n))
        return NULL;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        int c = uid_cmp(T->uids[mid].uid, uid, n);
        if (c == 0)
            return &T->uids[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const struct dcm_uid_entry *dcm_uid_find_keyword(const char *keyword)
{
    long i;

    if (!keyword || !keyword[0])
        return NULL;
    i = find_kw(keyword, T->uid_kw_index, T->uid_kw_count, uid_kw);
    return i >= 0 ? &T->uids[i] : NULL;
}

unsigned dcm_uid_size(void) { return T->uid_count; }

const struct dcm_uid_entry *dcm_uid_at(unsigned i)
{
    return i < T->uid_count ? &T->uids[i] : NULL;
}
