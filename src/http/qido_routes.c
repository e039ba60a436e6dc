/* qido_routes.c - QIDO-RS routes (being written; the table is empty until then). */
#include "http/routes.h"

const struct http_route http_qido_routes[] = {
    {NULL, NULL, NULL, NULL, 0},
};
