/* rest.c - Orthanc-compatible REST routes (being written; the table is empty until then). */
#include "http/routes.h"

const struct http_route http_rest_routes[] = {
    {NULL, NULL, NULL, NULL, 0},
};
