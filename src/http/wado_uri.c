/* wado_uri.c - WADO-URI routes (being written; the table is empty until then). */
#include "http/routes.h"

const struct http_route http_wado_uri_routes[] = {
    {NULL, NULL, NULL, NULL, 0},
};
