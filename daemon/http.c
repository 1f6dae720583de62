/* The daemon's HTTP server (see http.h): a small HTTP/1.1 server on bufferevents, written for three GET
 * endpoints. evhttp (libevent 2.1) reads a request body before the handler runs, has no connection cap and only
 * an inactivity timeout, so it could not give these bounds. Every connection holds at most one request head
 * (NLPD_HTTP_MAX_HEAD) and one response; a connection serves its requests one at a time. */
#include "http.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netdb.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"

#define LINGER_MS      1000  /* after a closing response: how long input is discarded before the close */
#define LINGER_BYTES   65536 /* ... and at most this much of it (a refused body is never read further) */
#define BACKOFF_MIN_MS 50    /* accept back-off after EMFILE and the like, doubling up to BACKOFF_MAX_MS */
#define BACKOFF_MAX_MS 1000

enum reject { REJ_LIMIT, REJ_TOO_LARGE, REJ_BAD, REJ_METHOD, REJ_TIMEOUT, REJ_ACCEPT, REJ_N };
static const char *const reject_names[REJ_N] = {"connection_limit", "head_too_large", "bad_request",
                                                "method",           "timeout",        "accept_error"};

struct conn {
    struct nlpd_http *h;
    struct bufferevent *bev;
    struct event *timer; /* idle, request, response or linger deadline: closes the connection */
    struct conn *prev, *next;
    int in_request; /* bytes of a request head arrived: the request timeout runs */
    int closing;    /* the last response is queued: close once it is written */
    int lingering;  /* written and write side shut: discarding input until EOF, LINGER_* or the timer */
    int peer_eof;   /* the client closed its side */
    size_t discarded;
};

struct nlpd_http {
    struct event_base *base;
    struct evconnlistener *lev;
    struct event *backoff_ev;
    int backoff_ms;
    struct nlpd_http_handlers hd;
    struct timeval idle, request;
    size_t max_conns, nconns;
    struct conn *conns;
    uint64_t rejected[REJ_N];
};

/* ---- libevent's own log lines ---- */

static void libevent_log(int severity, const char *msg)
{
    enum nlpd_log_level l = severity >= EVENT_LOG_ERR    ? NLPD_LOG_ERR
                            : severity == EVENT_LOG_WARN ? NLPD_LOG_WARNING
                            : severity == EVENT_LOG_MSG  ? NLPD_LOG_INFO
                                                         : NLPD_LOG_DEBUG;
    nlpd_log(l, "libevent", "%s", msg);
}

/* ---- request heads ---- */

static int is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* The next line of [*p, end) without its CR LF (or LF); advances *p past it. */
static const char *next_line(const char **p, const char *end, size_t *len)
{
    const char *s = *p, *nl = memchr(s, '\n', (size_t)(end - s));
    const char *e = nl ? nl : end;
    *p = nl ? nl + 1 : end;
    if (e > s && e[-1] == '\r')
        e--;
    *len = (size_t)(e - s);
    return s;
}

static int has_token(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok);
    for (size_t i = 0; i < n;) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t j = i;
        while (j < n && v[j] != ',')
            j++;
        size_t k = j;
        while (k > i && (v[k - 1] == ' ' || v[k - 1] == '\t'))
            k--;
        if (k - i == tl && !strncasecmp(v + i, tok, tl))
            return 1;
        i = j;
    }
    return 0;
}

int nlpd_http_parse_head(const char *head, size_t len, struct nlpd_http_request *req)
{
    memset(req, 0, sizeof *req);
    const char *p = head, *end = head + len;
    size_t n;
    const char *line = next_line(&p, end, &n), *le = line + n;
    /* request line: METHOD SP target SP HTTP/1.x */
    const char *sp1 = memchr(line, ' ', n);
    if (!sp1 || sp1 == line || sp1 - line > 32)
        return -1;
    for (const char *c = line; c < sp1; c++)
        if (!is_tchar((unsigned char)*c))
            return -1;
    size_t ml = (size_t)(sp1 - line);
    req->method = ml == 3 && !memcmp(line, "GET", 3)    ? NLPD_HTTP_GET
                  : ml == 4 && !memcmp(line, "HEAD", 4) ? NLPD_HTTP_HEAD
                                                        : NLPD_HTTP_OTHER;
    const char *target = sp1 + 1, *sp2 = memchr(target, ' ', (size_t)(le - target));
    if (!sp2 || sp2 == target)
        return -1;
    for (const char *c = target; c < sp2; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f)
            return -1;
    req->path = target;
    req->path_len = strcspn(target, "?# ");
    const char *ver = sp2 + 1;
    if (le - ver != 8 || memcmp(ver, "HTTP/1.", 7) || (ver[7] != '0' && ver[7] != '1'))
        return -1;
    req->keep_alive = ver[7] == '1';
    int conn_close = 0, conn_keep = 0;
    while (p < end) {
        line = next_line(&p, end, &n);
        if (n == 0)
            break; /* the blank line, when the caller passed it */
        const char *colon = memchr(line, ':', n);
        if (!colon || colon == line)
            return -1; /* also obsolete line folding (a line starting with white space) */
        for (const char *c = line; c < colon; c++)
            if (!is_tchar((unsigned char)*c))
                return -1;
        const char *v = colon + 1, *ve = line + n;
        for (const char *c = v; c < ve; c++)
            if (((unsigned char)*c < ' ' && *c != '\t') || *c == 0x7f)
                return -1;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        size_t nl = (size_t)(colon - line), vl = (size_t)(ve - v);
        if (nl == 10 && !strncasecmp(line, "connection", 10)) {
            conn_close |= has_token(v, vl, "close");
            conn_keep |= has_token(v, vl, "keep-alive");
        } else if (nl == 14 && !strncasecmp(line, "content-length", 14)) {
            size_t zeros = 0;
            while (zeros < vl && v[zeros] == '0')
                zeros++;
            if (vl == 0 || zeros < vl)
                req->has_body = 1; /* not read: the connection closes after the answer */
        } else if (nl == 17 && !strncasecmp(line, "transfer-encoding", 17)) {
            req->has_body = 1;
        }
    }
    if (conn_keep && !req->keep_alive)
        req->keep_alive = 1; /* HTTP/1.0 keep-alive */
    if (conn_close || req->has_body || req->method == NLPD_HTTP_OTHER)
        req->keep_alive = 0;
    return 0;
}

/* ---- connections ---- */

static void conn_free(struct conn *c)
{
    struct nlpd_http *h = c->h;
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    h->nconns--;
    event_free(c->timer);
    bufferevent_free(c->bev); /* closes the socket */
    free(c);
}

static void arm(struct conn *c, const struct timeval *tv)
{
    evtimer_add(c->timer, tv);
}

static void respond(struct conn *c, int status, const char *reason, const char *type, const char *extra,
                    const void *body, size_t len, int head_only, int keep_alive)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%sConnection: %s\r\n\r\n",
                        status, reason, type, len, extra ? extra : "", keep_alive ? "keep-alive" : "close");
    if (!head_only && len)
        evbuffer_add(out, body, len);
    c->closing = !keep_alive;
    c->in_request = 0;
    arm(c, &c->h->idle); /* the client has this long to take the answer */
}

static void respond_text(struct conn *c, int status, const char *reason, const char *extra, const char *text,
                         int head_only, int keep_alive)
{
    respond(c, status, reason, "text/plain; charset=utf-8", extra, text, strlen(text), head_only, keep_alive);
}

static void own_metrics(struct nlpd_http *h, struct nlpd_buf *out)
{
    nlpd_metric_head(out, "nlpd_http_connections", "gauge", "Open connections to the metrics and health server");
    nlpd_buf_printf(out, "nlpd_http_connections %zu\n", h->nconns);
    nlpd_metric_head(out, "nlpd_http_rejected_total", "counter",
                     "Connections or requests of the metrics and health server refused or closed, by reason");
    for (int r = 0; r < REJ_N; r++)
        nlpd_buf_printf(out, "nlpd_http_rejected_total{reason=\"%s\"} %llu\n", reject_names[r],
                        (unsigned long long)h->rejected[r]);
}

static void serve(struct conn *c, const struct nlpd_http_request *r)
{
    struct nlpd_http *h = c->h;
    size_t pl = r->path_len;
    int head_only = r->method == NLPD_HTTP_HEAD, ka = r->keep_alive;
    int metrics = pl == 8 && !memcmp(r->path, "/metrics", 8), live = pl == 5 && !memcmp(r->path, "/live", 5),
        ready = pl == 6 && !memcmp(r->path, "/ready", 6);
    if (!metrics && !live && !ready) {
        respond_text(c, 404, "Not Found", NULL, "not found\n", head_only, ka);
    } else if (r->method == NLPD_HTTP_OTHER) {
        h->rejected[REJ_METHOD]++;
        respond_text(c, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n", "method not allowed\n", 0, 0);
    } else if (metrics) {
        struct nlpd_buf out = {0};
        if (h->hd.metrics)
            h->hd.metrics(h->hd.arg, &out);
        own_metrics(h, &out);
        if (out.oom)
            respond_text(c, 500, "Internal Server Error", NULL, "out of memory\n", head_only, 0);
        else
            respond(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", NULL, out.data, out.len, head_only, ka);
        nlpd_buf_free(&out);
    } else if (live) {
        respond_text(c, 200, "OK", NULL, "ok\n", head_only, ka); /* the event loop answered: it is responsive */
    } else {
        const char *why = h->hd.not_ready ? h->hd.not_ready(h->hd.arg) : NULL;
        char text[256];
        snprintf(text, sizeof text, "%s\n", why ? why : "ready");
        respond_text(c, why ? 503 : 200, why ? "Service Unavailable" : "OK", NULL, text, head_only, ka);
    }
}

/* Finds the end of the request head in buf[0..n): the offset after its blank line, or 0. *head_len gets the
 * length without the blank line. */
static size_t head_end(const char *buf, size_t n, size_t *head_len)
{
    for (size_t i = 0; i < n; i++) {
        if (buf[i] != '\n')
            continue;
        if (i + 1 < n && buf[i + 1] == '\n') {
            *head_len = i + 1;
            return i + 2;
        }
        if (i + 2 < n && buf[i + 1] == '\r' && buf[i + 2] == '\n') {
            *head_len = i + 1;
            return i + 3;
        }
    }
    return 0;
}

/* Serves the next complete request in the input, if any and no answer is still being written. */
static void process(struct conn *c)
{
    struct nlpd_http *h = c->h;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    if (c->closing || evbuffer_get_length(bufferevent_get_output(c->bev)))
        return; /* one answer at a time; the input waits (bounded by the read watermark) */
    /* empty lines before a request line are allowed (RFC 9112 2.2) */
    for (;;) {
        unsigned char *b = evbuffer_pullup(in, 1);
        if (!b || (*b != '\r' && *b != '\n'))
            break;
        evbuffer_drain(in, 1);
    }
    size_t len = evbuffer_get_length(in);
    if (!len)
        return;
    if (!c->in_request) {
        c->in_request = 1;
        arm(c, &h->request); /* the whole head must arrive within metrics.request_timeout_ms */
    }
    size_t n = len < NLPD_HTTP_MAX_HEAD + 3 ? len : NLPD_HTTP_MAX_HEAD + 3;
    const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
    size_t head_len = 0, end = buf ? head_end(buf, n, &head_len) : 0;
    if (!end || head_len > NLPD_HTTP_MAX_HEAD) {
        if (len > NLPD_HTTP_MAX_HEAD + 2 || (end && head_len > NLPD_HTTP_MAX_HEAD)) {
            h->rejected[REJ_TOO_LARGE]++;
            respond_text(c, 431, "Request Header Fields Too Large", NULL, "request head too large\n", 0, 0);
        }
        return; /* else wait for more */
    }
    struct nlpd_http_request r;
    if (nlpd_http_parse_head(buf, head_len, &r) < 0) {
        h->rejected[REJ_BAD]++;
        respond_text(c, 400, "Bad Request", NULL, "bad request\n", 0, 0);
        return;
    }
    serve(c, &r); /* r points into the input: drained only after */
    evbuffer_drain(in, end);
}

static void linger(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    c->discarded += evbuffer_get_length(in);
    evbuffer_drain(in, evbuffer_get_length(in));
    if (c->peer_eof || c->discarded > LINGER_BYTES) {
        conn_free(c);
        return;
    }
    if (!c->lingering) {
        /* The answer is sent: say so with a FIN, and read what is in flight for a moment, so that closing with
         * unread input (an RST) does not destroy the answer in the client's receive buffer. */
        c->lingering = 1;
        shutdown(bufferevent_getfd(c->bev), SHUT_WR);
        struct timeval tv = {LINGER_MS / 1000, (LINGER_MS % 1000) * 1000};
        if (timercmp(&c->h->idle, &tv, <))
            tv = c->h->idle;
        arm(c, &tv);
    }
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    (void)bev;
    if (c->lingering)
        linger(c);
    else
        process(c);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    (void)bev;
    if (c->closing) {
        linger(c);
        return;
    }
    if (c->peer_eof) {
        conn_free(c);
        return;
    }
    arm(c, &c->h->idle);
    process(c); /* a pipelined request */
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && evbuffer_get_length(bufferevent_get_output(bev))) {
        c->peer_eof = 1; /* half-closed after its request: finish the answer */
        return;
    }
    conn_free(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)fd;
    (void)what;
    if (!c->lingering)
        c->h->rejected[REJ_TIMEOUT]++;
    conn_free(c);
}

/* ---- the listener ---- */

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    struct nlpd_http *h = arg;
    (void)lev;
    (void)sa;
    (void)salen;
    h->backoff_ms = 0;
    if (h->nconns >= h->max_conns) {
        static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        ssize_t w = send(fd, busy, sizeof busy - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        (void)w;
        evutil_closesocket(fd);
        h->rejected[REJ_LIMIT]++;
        nlpd_log(NLPD_LOG_WARNING, "http", "%zu connections open (metrics.max_connections): refusing new ones",
                 h->nconns);
        return;
    }
    struct conn *c = calloc(1, sizeof *c);
    if (c) {
        c->h = h;
        c->bev = bufferevent_socket_new(h->base, fd, BEV_OPT_CLOSE_ON_FREE);
        c->timer = evtimer_new(h->base, on_timer, c);
    }
    if (!c || !c->bev || !c->timer) {
        if (c && c->bev)
            bufferevent_free(c->bev);
        else
            evutil_closesocket(fd);
        if (c && c->timer)
            event_free(c->timer);
        free(c);
        nlpd_log(NLPD_LOG_WARNING, "http", "out of memory: connection closed");
        return;
    }
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    /* reading stops while a whole head's worth waits: memory per connection is bounded */
    bufferevent_setwatermark(c->bev, EV_READ, 0, NLPD_HTTP_MAX_HEAD + 3);
    bufferevent_enable(c->bev, EV_READ);
    c->next = h->conns;
    if (h->conns)
        h->conns->prev = c;
    h->conns = c;
    h->nconns++;
    arm(c, &h->idle);
}

static void on_backoff(evutil_socket_t fd, short what, void *arg)
{
    struct nlpd_http *h = arg;
    (void)fd;
    (void)what;
    evconnlistener_enable(h->lev);
}

/* accept() failed with something other than a transient error (EMFILE, ENFILE, ENOBUFS...): the pending
 * connection stays pending, so retrying at once would spin. Pause accepting, with a growing delay. */
static void on_accept_error(struct evconnlistener *lev, void *arg)
{
    struct nlpd_http *h = arg;
    int e = EVUTIL_SOCKET_ERROR();
    h->rejected[REJ_ACCEPT]++;
    h->backoff_ms = h->backoff_ms ? h->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (h->backoff_ms > BACKOFF_MAX_MS)
        h->backoff_ms = BACKOFF_MAX_MS;
    nlpd_log(NLPD_LOG_WARNING, "http", "cannot accept connections (%s): pausing the metrics server's accepts",
             evutil_socket_error_to_string(e));
    evconnlistener_disable(lev);
    struct timeval tv = {h->backoff_ms / 1000, (h->backoff_ms % 1000) * 1000};
    evtimer_add(h->backoff_ev, &tv);
}

static void ms_to_tv(long long ms, struct timeval *tv)
{
    tv->tv_sec = (time_t)(ms / 1000);
    tv->tv_usec = (suseconds_t)(ms % 1000) * 1000;
}

int nlpd_http_start(struct event_base *base, const struct nlpd_metrics_conf *conf,
                    const struct nlpd_http_handlers *handlers, struct nlpd_http **out, struct nlpd_error *err)
{
    *out = NULL;
    event_set_log_callback(libevent_log);
    const char *listen = conf->listen;
    if (!listen || !*listen)
        return 0;
    char host[256], port[8];
    const char *colon = strrchr(listen, ':');
    long pn = colon ? strtol(colon + 1, NULL, 10) : 0;
    if (!colon || pn <= 0 || pn > 65535 || (size_t)(colon - listen) >= sizeof host)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "metrics.listen \"%s\" is not host:port", listen);
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    if (host[0] == '[' && host[strlen(host) - 1] == ']') { /* [::1]:9464 */
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    snprintf(port, sizeof port, "%ld", pn);

    struct nlpd_http *h = calloc(1, sizeof *h);
    if (!h)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    h->base = base;
    h->hd = *handlers;
    h->max_conns = (size_t)conf->max_connections;
    ms_to_tv(conf->idle_timeout_ms, &h->idle);
    ms_to_tv(conf->request_timeout_ms, &h->request);
    h->backoff_ev = evtimer_new(base, on_backoff, h);
    if (!h->backoff_ev) {
        nlpd_http_free(h);
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    int gai = getaddrinfo(*host ? host : NULL, port, &hints, &ai);
    const char *why = gai ? gai_strerror(gai) : NULL;
    for (struct addrinfo *a = ai; a && !h->lev; a = a->ai_next) {
        h->lev = evconnlistener_new_bind(base, on_accept, h,
                                         LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 128,
                                         a->ai_addr, (int)a->ai_addrlen);
        if (!h->lev)
            why = strerror(errno);
    }
    if (ai)
        freeaddrinfo(ai);
    if (!h->lev) {
        /* Another nlpd (or anything) on the port must not stop the stream: say it loudly and go on. */
        nlpd_log(NLPD_LOG_ERR, "http",
                 "metrics.listen %s: cannot listen (%s): running without metrics and health endpoints", listen,
                 why ? why : "no address");
        nlpd_http_free(h);
        return 0;
    }
    evconnlistener_set_error_cb(h->lev, on_accept_error);
    nlpd_log(NLPD_LOG_INFO, "http", "metrics and health on http://%s/metrics, /live, /ready", listen);
    *out = h;
    return 0;
}

void nlpd_http_free(struct nlpd_http *h)
{
    if (!h)
        return;
    while (h->conns)
        conn_free(h->conns);
    if (h->lev)
        evconnlistener_free(h->lev);
    if (h->backoff_ev)
        event_free(h->backoff_ev);
    free(h);
}
