/* parse_bench - in-process cost of reading the meta group and every element
 * up to Pixel Data of one file held in memory: what ingest pays per instance
 * before it stores the bytes. Prints nanoseconds per parse (median of 7
 * rounds). Usage: parse_bench FILE [ITERATIONS] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dicom/reader.h"

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: parse_bench FILE [ITERATIONS]\n");
        return 2;
    }
    long iters = argc > 2 ? strtol(argv[2], NULL, 10) : 200000;
    if (iters <= 0)
        iters = 200000;
    FILE *fp = fopen(argv[1], "rb");
    if (!fp) {
        perror(argv[1]);
        return 1;
    }
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    if (size <= 0) {
        fclose(fp);
        fprintf(stderr, "%s: empty\n", argv[1]);
        return 1;
    }
    unsigned char *buf = malloc((size_t)size);
    if (!buf || fread(buf, 1, (size_t)size, fp) != (size_t)size) {
        fclose(fp);
        free(buf);
        fprintf(stderr, "%s: cannot read\n", argv[1]);
        return 1;
    }
    fclose(fp);

    struct dcm_read_opts o = { .stop_tag = DCM_TAG_PIXEL_DATA };
    struct dcm_file f;
    struct pacs_err err = { 0 };
    if (dcm_read_part10(buf, (size_t)size, &o, &f, &err) != 0) {
        fprintf(stderr, "%s: %s\n", argv[1], err.msg);
        free(buf);
        return 1;
    }
    unsigned elements = f.meta->n + f.ds->n;
    dcm_file_free(&f);

    double rounds[7];
    for (int r = 0; r < 7; r++) {
        double t0 = now_ns();
        for (long i = 0; i < iters; i++) {
            if (dcm_read_part10(buf, (size_t)size, &o, &f, NULL) != 0)
                abort();
            dcm_file_free(&f);
        }
        rounds[r] = (now_ns() - t0) / (double)iters;
    }
    qsort(rounds, 7, sizeof rounds[0], cmp_double);
    printf("parse to Pixel Data: %s (%ld bytes, %u top-level elements): %.0f ns per parse "
           "(median of 7 x %ld; min %.0f, max %.0f)\n",
           argv[1], size, elements, rounds[3], iters, rounds[0], rounds[6]);
    free(buf);
    return 0;
}
