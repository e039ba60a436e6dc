/* metrics_http.c - /metrics routes (being written; the table is empty until then). */
#include "http/routes.h"

const struct http_route http_metrics_routes[] = {
    {NULL, NULL, NULL, NULL, 0},
};
