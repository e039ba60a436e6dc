/* index_tags.c - the main tags the index stores per level (index.h).
 *
 * Orthanc's main DICOM tags, so that what a viewer asks of either server is
 * answered from the index. Grouped by level, the level's unique key first;
 * the VR is the dictionary's (test_index_sqlite checks it); the column name
 * is the keyword in snake_case and is part of the schema: renaming one needs
 * a migration (docs/storage.md).
 */
#include "store/index.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "dicom/dict.h"
#include "dicom/vr.h"

#define T(lvl, g, e, vr, col) { INDEX_##lvl, DCM_TAG(g, e), DCM_VR_##vr, col }

const struct index_tag index_main_tags[] = {
    T(PATIENT, 0x0010, 0x0020, LO, "patient_id"),
    T(PATIENT, 0x0010, 0x0010, PN, "patient_name"),
    T(PATIENT, 0x0010, 0x0030, DA, "patient_birth_date"),
    T(PATIENT, 0x0010, 0x0040, CS, "patient_sex"),
    T(PATIENT, 0x0010, 0x1000, LO, "other_patient_ids"),

    T(STUDY, 0x0020, 0x000D, UI, "study_instance_uid"),
    T(STUDY, 0x0008, 0x0020, DA, "study_date"),
    T(STUDY, 0x0008, 0x0030, TM, "study_time"),
    T(STUDY, 0x0008, 0x0050, SH, "accession_number"),
    T(STUDY, 0x0020, 0x0010, SH, "study_id"),
    T(STUDY, 0x0008, 0x1030, LO, "study_description"),
    T(STUDY, 0x0008, 0x0090, PN, "referring_physician_name"),
    T(STUDY, 0x0008, 0x0080, LO, "institution_name"),
    T(STUDY, 0x0032, 0x1060, LO, "requested_procedure_description"),
    T(STUDY, 0x0032, 0x1032, PN, "requesting_physician"),
    T(STUDY, 0x0008, 0x0201, SH, "timezone_offset_from_utc"),

    T(SERIES, 0x0020, 0x000E, UI, "series_instance_uid"),
    T(SERIES, 0x0008, 0x0060, CS, "modality"),
    T(SERIES, 0x0020, 0x0011, IS, "series_number"),
    T(SERIES, 0x0008, 0x103E, LO, "series_description"),
    T(SERIES, 0x0018, 0x0015, CS, "body_part_examined"),
    T(SERIES, 0x0018, 0x1030, LO, "protocol_name"),
    T(SERIES, 0x0008, 0x0021, DA, "series_date"),
    T(SERIES, 0x0008, 0x0031, TM, "series_time"),
    T(SERIES, 0x0008, 0x0070, LO, "manufacturer"),
    T(SERIES, 0x0008, 0x1010, SH, "station_name"),
    T(SERIES, 0x0008, 0x1070, PN, "operators_name"),
    T(SERIES, 0x0040, 0x0254, LO, "performed_procedure_step_description"),
    T(SERIES, 0x0018, 0x0024, SH, "sequence_name"),
    T(SERIES, 0x0018, 0x1090, IS, "cardiac_number_of_images"),
    T(SERIES, 0x0020, 0x1002, IS, "images_in_acquisition"),
    T(SERIES, 0x0020, 0x0105, IS, "number_of_temporal_positions"),
    T(SERIES, 0x0054, 0x0081, US, "number_of_slices"),
    T(SERIES, 0x0054, 0x0101, US, "number_of_time_slices"),
    T(SERIES, 0x0018, 0x0010, LO, "contrast_bolus_agent"),
    T(SERIES, 0x0018, 0x1400, LO, "acquisition_device_processing_description"),

    T(INSTANCE, 0x0008, 0x0018, UI, "sop_instance_uid"),
    T(INSTANCE, 0x0008, 0x0016, UI, "sop_class_uid"),
    T(INSTANCE, 0x0020, 0x0013, IS, "instance_number"),
    T(INSTANCE, 0x0020, 0x0012, IS, "acquisition_number"),
    T(INSTANCE, 0x0028, 0x0008, IS, "number_of_frames"),
    T(INSTANCE, 0x0020, 0x0032, DS, "image_position_patient"),
    T(INSTANCE, 0x0020, 0x0037, DS, "image_orientation_patient"),
    T(INSTANCE, 0x0020, 0x0100, IS, "temporal_position_identifier"),
    T(INSTANCE, 0x0008, 0x0012, DA, "instance_creation_date"),
    T(INSTANCE, 0x0008, 0x0013, TM, "instance_creation_time"),
    T(INSTANCE, 0x0008, 0x0023, DA, "content_date"),
    T(INSTANCE, 0x0008, 0x0033, TM, "content_time"),
    T(INSTANCE, 0x0008, 0x0022, DA, "acquisition_date"),
    T(INSTANCE, 0x0008, 0x0032, TM, "acquisition_time"),
    T(INSTANCE, 0x0020, 0x4000, LT, "image_comments"),
    T(INSTANCE, 0x0054, 0x1330, US, "image_index"),
    T(INSTANCE, 0x0028, 0x0010, US, "rows"),
    T(INSTANCE, 0x0028, 0x0011, US, "columns"),
    T(INSTANCE, 0x0028, 0x0100, US, "bits_allocated"),
};

const size_t index_n_main_tags = sizeof index_main_tags / sizeof index_main_tags[0];

_Static_assert(sizeof index_main_tags / sizeof index_main_tags[0] <= INDEX_MAX_MAIN_TAGS,
               "index_main_tags exceeds INDEX_MAX_MAIN_TAGS");

int index_tag_find(uint32_t tag)
{
    for (size_t i = 0; i < index_n_main_tags; i++) {
        if (index_main_tags[i].tag == tag)
            return (int)i;
    }
    return -1;
}

int index_public_id(enum index_level level, const char *const uids[4],
                    char out[INDEX_PUBLIC_ID_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int rc = 0;
    out[0] = '\0';
    if ((unsigned)level > INDEX_INSTANCE)
        return PACS_EINVAL;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (!c || EVP_DigestInit_ex(c, EVP_sha1(), NULL) != 1) {
        rc = PACS_ENOMEM;
        goto out;
    }
    for (int lv = 0; lv <= (int)level; lv++) {
        const char *u = uids[lv] ? uids[lv] : "";
        if ((lv && EVP_DigestUpdate(c, "|", 1) != 1) || EVP_DigestUpdate(c, u, strlen(u)) != 1) {
            rc = PACS_ENOMEM;
            goto out;
        }
    }
    if (EVP_DigestFinal_ex(c, md, &mdlen) != 1 || mdlen != 20) {
        rc = PACS_ENOMEM;
        goto out;
    }
    size_t o = 0;
    for (unsigned k = 0; k < 20; k++) {
        if (k && k % 4 == 0)
            out[o++] = '-';
        out[o++] = hex[md[k] >> 4];
        out[o++] = hex[md[k] & 15];
    }
    out[o] = '\0';
out:
    EVP_MD_CTX_free(c);
    return rc;
}

void index_deleted_free(struct index_deleted *d)
{
    if (!d)
        return;
    free(d->blob_keys);
    d->blob_keys = NULL;
    d->n_blob_keys = 0;
}
