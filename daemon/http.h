/* The daemon's HTTP server (/metrics, /live, /ready) on its event loop, hardened against hostile or broken
 * clients: GET and HEAD only (no request body is ever read), a small request-head limit, idle and request
 * timeouts, a connection cap and accept back-off when the process runs out of descriptors. */
#ifndef NLPD_HTTP_H
#define NLPD_HTTP_H

#include <stddef.h>

#include "buf.h"
#include "config.h"
#include "nlpd_error.h"

struct event_base;
struct nlpd_http;

/* Largest request line plus headers accepted; a longer head is answered 431 and the connection closed. */
#define NLPD_HTTP_MAX_HEAD 8192

struct nlpd_http_handlers {
    void (*metrics)(void *arg, struct nlpd_buf *out); /* appends the Prometheus text of /metrics */
    const char *(*not_ready)(void *arg);              /* why /ready is 503, or NULL when ready */
    void *arg;
};

/* Routes libevent's own log lines through nlpd_log (rate-limited), then, unless conf->listen is "", listens on
 * it. A port that cannot be bound is logged and *out stays NULL (the stream must not stop for it); a malformed
 * address is an error. The handlers run on base's thread. */
int nlpd_http_start(struct event_base *base, const struct nlpd_metrics_conf *conf,
                    const struct nlpd_http_handlers *handlers, struct nlpd_http **out, struct nlpd_error *err);
/* Closes the listener and every connection. NULL is a no-op. */
void nlpd_http_free(struct nlpd_http *h);

/* A parsed request head (exposed for the unit test). */
struct nlpd_http_request {
    int method;       /* NLPD_HTTP_GET, NLPD_HTTP_HEAD or NLPD_HTTP_OTHER */
    const char *path; /* the target up to '?' or '#', not NUL-terminated */
    size_t path_len;
    int keep_alive; /* the client allows another request on this connection */
    int has_body;   /* Content-Length > 0 or Transfer-Encoding: the body is never read */
};
enum { NLPD_HTTP_GET = 1, NLPD_HTTP_HEAD, NLPD_HTTP_OTHER };

/* Parses head[0..len) (request line and headers, without the blank line). Returns 0, or -1 when it is not an
 * HTTP/1.0 or HTTP/1.1 request. */
int nlpd_http_parse_head(const char *head, size_t len, struct nlpd_http_request *req);

#endif
