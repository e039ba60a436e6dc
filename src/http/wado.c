/* wado.c - WADO-RS routes (being written; the table is empty until then). */
#include "http/routes.h"

const struct http_route http_wado_routes[] = {
    {NULL, NULL, NULL, NULL, 0},
};
