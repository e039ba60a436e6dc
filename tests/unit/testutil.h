/* testutil.h - helpers shared by the unit tests that read real files. */
#ifndef PACS_TESTUTIL_H
#define PACS_TESTUTIL_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/dynbuf.h"

/* pydicom's bundled test files (ctest sets PYDICOM_TEST_FILES). */
static inline const char *test_pydicom_dir(void)
{
    const char *d = getenv("PYDICOM_TEST_FILES");
    return d && *d ? d : "/usr/lib/python3/dist-packages/pydicom/data/test_files";
}

/* A whole file in a heap buffer the caller frees; NULL if it cannot be read. */
static inline uint8_t *test_load_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    struct dynbuf b;
    dynbuf_init(&b, 0);
    uint8_t tmp[65536];
    size_t n;
    int rc = 0;
    while (rc == 0 && (n = fread(tmp, 1, sizeof tmp, fp)) > 0)
        rc = dynbuf_append(&b, tmp, n);
    fclose(fp);
    if (rc) {
        dynbuf_free(&b);
        return NULL;
    }
    return (uint8_t *)dynbuf_take(&b, len);
}

/* Calls fn for every *.dcm file of the pydicom test files, loaded in
 * memory; returns how many there were (0 if the directory is missing). */
typedef void (*test_file_fn)(const char *name, const uint8_t *buf, size_t len, void *ctx);

static inline unsigned test_each_pydicom_file(test_file_fn fn, void *ctx)
{
    const char *dir = test_pydicom_dir();
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    unsigned count = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t nl = strlen(de->d_name);
        if (nl < 4 || strcmp(de->d_name + nl - 4, ".dcm") != 0)
            continue;
        char path[1024];
        int pn = snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (pn < 0 || (size_t)pn >= sizeof path)
            continue;
        size_t len = 0;
        uint8_t *buf = test_load_file(path, &len);
        if (!buf)
            continue;
        fn(de->d_name, buf, len, ctx);
        free(buf);
        count++;
    }
    closedir(d);
    return count;
}

#endif
