/* stow.c - STOW-RS routes (being written; the table is empty until then). */
#include "http/routes.h"

const struct http_route http_stow_routes[] = {
    {NULL, NULL, NULL, NULL, 0},
};
