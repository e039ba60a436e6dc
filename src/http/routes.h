/* routes.h - the route tables of the HTTP front door, one per module.
 *
 * Each module owns the routes it serves and exports them as an array that
 * ends with an entry whose method is NULL. server.c serves the tables in
 * the order of http_route_tables below (the first matching route wins), so
 * adding a route means editing its module only.
 */
#ifndef PACS_HTTP_ROUTES_H
#define PACS_HTTP_ROUTES_H

#include "http/server.h"

extern const struct http_route http_health_routes[];   /* health.c: /health/... */
extern const struct http_route http_metrics_routes[];  /* metrics_http.c: /metrics */
extern const struct http_route http_stow_routes[];     /* stow.c: STOW-RS */
extern const struct http_route http_qido_routes[];     /* qido_routes.c: QIDO-RS */
extern const struct http_route http_wado_routes[];     /* wado.c: WADO-RS */
extern const struct http_route http_wado_uri_routes[]; /* wado_uri.c: WADO-URI */
extern const struct http_route http_rest_routes[];     /* rest.c: Orthanc-compatible REST */

#endif
