/* The Redis cache backend (see cache.h): one cache thread owns a libevent base and a hiredis async
 * connection; the worker threads hand it requests through two mutex-guarded queues and a wake-up pipe.
 *
 * mget: a worker enqueues one MGET of its n keys and waits on the request's condition variable until the
 * reply or its deadline (timeout_ms), whichever comes first. The request is reference-counted (the waiter
 * and the cache thread each hold one reference), so a reply arriving after the waiter gave up is dropped
 * safely. The cache thread's tick timer also expires overdue requests and replaces a connection that has
 * owed a reply for far too long (hiredis 0.14 has no timeouts of its own).
 * mset: a worker copies its keys and values into one block, enqueues it and returns; the cache thread
 * pipelines SET key value EX ttl. The queue (plus the SETs still unanswered) is bounded: past the bound a
 * batch is dropped and counted, never waited for.
 * Circuit breaker: breaker_failures consecutive lookup failures (timeouts, error replies, no connection)
 * open it; while open every call is an immediate miss; after breaker_backoff_ms one lookup goes through
 * as a probe (half-open) and its success closes the breaker. The connection is re-made by the tick timer
 * with a growing delay after a loss, and at once for a probe. State changes are logged once each. */
#include "cache.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#define DEFAULT_PORT        6379
#define RECONNECT_MIN_MS    100
#define RECONNECT_MAX_MS    2000
#define STALL_MIN_MS        2000        /* a connection owing a reply this long (or 10 deadlines) is replaced */
#define SET_QUEUE_MAX_BYTES (64u << 20) /* SET payload queued or unanswered */
#define SET_QUEUE_MAX_CMDS  200000u
#define MGET_MAX_KEYS       (1u << 20)

enum breaker_state { BR_CLOSED, BR_OPEN, BR_HALF_OPEN };

/* One MGET. Fields under the backend's mu unless noted. */
struct get_req {
    struct get_req *next; /* the request queue (mu), then the in-flight list (cache thread) */
    int refs;             /* the waiter's and the cache thread's */
    int done;             /* rc is final; the waiter may take res */
    int abandoned;        /* the waiter returned: nobody reads res */
    int settled;          /* the outcome went into the breaker */
    int probe;            /* the half-open probe */
    int rc;
    int64_t deadline_ms, sent_ms;
    pthread_cond_t cond;
    size_t n;
    const char **argv; /* "MGET", prefixed keys (immutable after enqueue) */
    size_t *argvlen;
    struct nlpd_cache_value *res; /* filled by the cache thread before done */
};

/* One mset call: n SETs, keys and values copied into the same allocation. */
struct set_item {
    const char *key, *val;
    size_t klen, vlen;
};
struct set_batch {
    struct set_batch *next;
    size_t n, bytes;
    struct set_item items[];
};

struct rcache {
    /* configuration (immutable) */
    char *host, *unix_path, *user, *password, *prefix, *addr;
    int port;
    size_t prefix_len;
    char ttl[24]; /* "" = no expiry */
    int64_t timeout_ms, backoff_ms, stall_ms;
    long long breaker_failures;
    pthread_condattr_t cattr;

    pthread_t thread;
    int thread_started;
    int wake_fd[2];

    pthread_mutex_t mu;
    struct get_req *gq_head, *gq_tail;
    struct set_batch *sq_head, *sq_tail;
    int wake_pending, stopping;
    enum breaker_state breaker;
    long long fails;
    int64_t open_until;
    char last_error[160];

    atomic_size_t set_bytes, set_cmds; /* queued or unanswered SETs */
    atomic_ullong errors;              /* backend-side: failed lookups, failed or dropped SETs */

    /* cache thread only */
    struct event_base *base;
    struct event *wake_ev, *tick_ev;
    redisAsyncContext *ac;
    int connected;     /* ac's connect completed */
    int stopping_loop; /* shutting down: no reconnects, break when the connection is gone */
    int64_t stop_deadline;
    int64_t reconnect_at, reconnect_delay;
    int down_logged, set_err_logged;
    struct get_req *fl_head, *fl_tail; /* MGETs written to ac, in order */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the breaker (under mu) ---- */

static void note_error_locked(struct rcache *s, const char *why)
{
    if (why)
        snprintf(s->last_error, sizeof s->last_error, "%s", why);
}

/* One lookup's outcome. While half-open only the probe counts; while open nothing does. */
static void outcome_locked(struct rcache *s, int ok, int probe, const char *why)
{
    if (!ok)
        note_error_locked(s, why);
    switch (s->breaker) {
    case BR_CLOSED:
        if (ok) {
            s->fails = 0;
        } else if (++s->fails >= s->breaker_failures) {
            s->breaker = BR_OPEN;
            s->open_until = now_ms() + s->backoff_ms;
            nlpd_log(NLPD_LOG_WARNING, "cache",
                     "redis %s: circuit breaker open after %lld consecutive failures (last: %s); lookups are "
                     "misses, probing every %lld ms",
                     s->addr, s->fails, s->last_error, (long long)s->backoff_ms);
        }
        break;
    case BR_HALF_OPEN:
        if (ok) {
            s->breaker = BR_CLOSED;
            s->fails = 0;
            nlpd_log(NLPD_LOG_NOTICE, "cache", "redis %s: circuit breaker closed, lookups resumed", s->addr);
        } else if (probe) {
            s->breaker = BR_OPEN;
            s->open_until = now_ms() + s->backoff_ms;
        }
        break;
    case BR_OPEN: break;
    }
}

/* ---- requests ---- */

static void get_req_free(struct get_req *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->res[i].data);
    pthread_cond_destroy(&r->cond);
    free(r);
}

/* Drops one reference (under mu); returns r when the caller must free it (after unlocking). */
static struct get_req *unref_locked(struct get_req *r)
{
    return --r->refs == 0 ? r : NULL;
}

/* The cache thread's end of a request: final rc (unless the tick timer already gave one), the breaker
 * outcome (unless settled), wake the waiter, drop the thread's reference. */
static void finish_req(struct rcache *s, struct get_req *r, int rc, const char *why)
{
    pthread_mutex_lock(&s->mu);
    if (!r->settled) {
        r->settled = 1;
        outcome_locked(s, rc == 0 || rc == NLPD_ENOMEM, r->probe, why);
    }
    if (!r->done) {
        r->done = 1;
        r->rc = rc;
        pthread_cond_signal(&r->cond);
    }
    struct get_req *dead = unref_locked(r);
    pthread_mutex_unlock(&s->mu);
    if (dead)
        get_req_free(dead);
}

static void fl_remove(struct rcache *s, struct get_req *r)
{
    struct get_req **p = &s->fl_head, *prev = NULL;
    while (*p && *p != r) {
        prev = *p;
        p = &(*p)->next;
    }
    if (!*p)
        return;
    *p = r->next;
    if (s->fl_tail == r)
        s->fl_tail = prev;
    r->next = NULL;
}

/* ---- the connection (cache thread) ---- */

static void note_down(struct rcache *s, const char *why)
{
    pthread_mutex_lock(&s->mu);
    note_error_locked(s, why);
    pthread_mutex_unlock(&s->mu);
    if (!s->down_logged && !s->stopping_loop) {
        s->down_logged = 1;
        nlpd_log(NLPD_LOG_WARNING, "cache", "redis %s: %s; lookups are misses until it is back", s->addr,
                 why ? why : "connection lost");
    }
}

static void note_up(struct rcache *s)
{
    s->reconnect_delay = RECONNECT_MIN_MS;
    if (s->down_logged) {
        s->down_logged = 0;
        nlpd_log(NLPD_LOG_NOTICE, "cache", "redis %s: connected", s->addr);
    }
    /* A fresh, working connection: let the next lookup be the probe rather than wait out the backoff. */
    pthread_mutex_lock(&s->mu);
    if (s->breaker == BR_OPEN)
        s->open_until = now_ms();
    pthread_mutex_unlock(&s->mu);
}

static void schedule_reconnect(struct rcache *s)
{
    s->reconnect_at = now_ms() + s->reconnect_delay;
    s->reconnect_delay = s->reconnect_delay * 2 > RECONNECT_MAX_MS ? RECONNECT_MAX_MS : s->reconnect_delay * 2;
}

/* The context is going away (hiredis frees it after the callback returns). */
static void lost_context(struct rcache *s)
{
    s->ac = NULL;
    s->connected = 0;
    if (s->stopping_loop)
        event_base_loopbreak(s->base);
    else
        schedule_reconnect(s);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct rcache *s = ac->data;
    if (status != REDIS_OK) {
        note_down(s, ac->errstr[0] ? ac->errstr : "connect failed");
        lost_context(s);
        return;
    }
    s->connected = 1; /* "up" once the AUTH or PING sent ahead of everything is answered */
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct rcache *s = ac->data;
    if (status != REDIS_OK)
        note_down(s, ac->errstr[0] ? ac->errstr : "connection lost");
    lost_context(s);
}

/* The reply to the AUTH (or PING) pipelined first on every connection. */
static void on_hello(redisAsyncContext *ac, void *reply_, void *priv)
{
    struct rcache *s = priv;
    redisReply *reply = reply_;
    if (!reply)
        return; /* the connection went: on_connect / on_disconnect tell */
    if (reply->type == REDIS_REPLY_ERROR) {
        char why[200];
        snprintf(why, sizeof why, "%s failed: %.*s", s->password[0] ? "AUTH" : "PING",
                 (int)(reply->len > 150 ? 150 : reply->len), reply->str);
        atomic_fetch_add(&s->errors, 1);
        note_down(s, why);
        redisAsyncDisconnect(ac); /* after the replies already owed; reconnects with backoff */
        return;
    }
    note_up(s);
}

static void start_connect(struct rcache *s)
{
    if (s->ac || s->stopping_loop)
        return;
    redisAsyncContext *ac = s->unix_path ? redisAsyncConnectUnix(s->unix_path) : redisAsyncConnect(s->host, s->port);
    if (!ac) {
        note_down(s, "out of memory");
        schedule_reconnect(s);
        return;
    }
    if (ac->err) {
        char why[160];
        snprintf(why, sizeof why, "%s", ac->errstr);
        redisAsyncFree(ac);
        note_down(s, why);
        schedule_reconnect(s);
        return;
    }
    ac->data = s;
    if (redisLibeventAttach(ac, s->base) != REDIS_OK) {
        redisAsyncFree(ac);
        note_down(s, "cannot attach to the event loop");
        schedule_reconnect(s);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    s->ac = ac;
    s->connected = 0;
    if (s->password[0]) { /* pipelined ahead of everything else: AUTH [user] password */
        const char *argv[3] = {"AUTH", s->user, s->password};
        size_t lens[3] = {4, strlen(s->user), strlen(s->password)};
        int argc = 3;
        if (!s->user[0]) {
            argv[1] = argv[2];
            lens[1] = lens[2];
            argc = 2;
        }
        redisAsyncCommandArgv(ac, on_hello, s, argc, argv, lens);
    } else {
        redisAsyncCommand(ac, on_hello, s, "PING");
    }
}

/* Drops the connection now (not from inside a hiredis callback): owed callbacks run with no reply. */
static void drop_context(struct rcache *s)
{
    redisAsyncContext *ac = s->ac;
    if (!ac)
        return;
    int was_connected = s->connected;
    redisAsyncFree(ac); /* a connected context calls on_disconnect, which calls lost_context */
    if (!was_connected)
        lost_context(s);
}

/* ---- replies ---- */

static void on_mget(redisAsyncContext *ac, void *reply_, void *priv)
{
    struct get_req *r = priv;
    struct rcache *s = ac->data;
    redisReply *reply = reply_;
    fl_remove(s, r);
    if (!reply) {
        finish_req(s, r, NLPD_EIO, ac->errstr[0] ? ac->errstr : "connection lost");
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        char why[160];
        snprintf(why, sizeof why, "%.*s", (int)(reply->len > 150 ? 150 : reply->len), reply->str);
        finish_req(s, r, NLPD_EIO, why);
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != r->n) {
        finish_req(s, r, NLPD_EFORMAT, "unexpected MGET reply");
        return;
    }
    pthread_mutex_lock(&s->mu);
    int wanted = !r->done && !r->abandoned;
    pthread_mutex_unlock(&s->mu);
    int rc = 0;
    for (size_t i = 0; wanted && i < r->n; i++) {
        const redisReply *e = reply->element[i];
        if (e->type != REDIS_REPLY_STRING)
            continue; /* nil: a miss */
        unsigned char *d = malloc(e->len ? e->len : 1);
        if (!d) {
            rc = NLPD_ENOMEM;
            continue;
        }
        memcpy(d, e->str, e->len);
        r->res[i].data = d;
        r->res[i].len = e->len;
    }
    finish_req(s, r, rc, NULL);
}

static void on_set(redisAsyncContext *ac, void *reply_, void *priv)
{
    struct rcache *s = ac->data;
    redisReply *reply = reply_;
    atomic_fetch_sub(&s->set_bytes, (size_t)(uintptr_t)priv);
    atomic_fetch_sub(&s->set_cmds, 1);
    if (!reply) {
        atomic_fetch_add(&s->errors, 1);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        atomic_fetch_add(&s->errors, 1);
        if (!s->set_err_logged) {
            s->set_err_logged = 1;
            nlpd_log(NLPD_LOG_WARNING, "cache", "redis %s: SET failed: %.*s", s->addr,
                     (int)(reply->len > 150 ? 150 : reply->len), reply->str);
        }
    } else if (s->set_err_logged) {
        s->set_err_logged = 0;
        nlpd_log(NLPD_LOG_NOTICE, "cache", "redis %s: SETs succeed again", s->addr);
    }
}

/* ---- the cache thread's queues ---- */

static void send_gets(struct rcache *s, struct get_req *r)
{
    while (r) {
        struct get_req *next = r->next;
        r->next = NULL;
        pthread_mutex_lock(&s->mu);
        int skip = r->abandoned || r->done;
        struct get_req *dead = skip ? unref_locked(r) : NULL;
        pthread_mutex_unlock(&s->mu);
        if (skip) {
            if (dead)
                get_req_free(dead);
        } else {
            if (!s->ac && (r->probe || now_ms() >= s->reconnect_at))
                start_connect(s);
            if (!s->ac || s->stopping_loop) {
                finish_req(s, r, NLPD_EAGAIN, NULL); /* last_error says why */
            } else if (redisAsyncCommandArgv(s->ac, on_mget, r, (int)r->n + 1, r->argv, r->argvlen) != REDIS_OK) {
                finish_req(s, r, NLPD_EIO, "cannot send MGET");
            } else {
                r->sent_ms = now_ms();
                if (s->fl_tail)
                    s->fl_tail->next = r;
                else
                    s->fl_head = r;
                s->fl_tail = r;
            }
        }
        r = next;
    }
}

static void send_sets(struct rcache *s, struct set_batch *b)
{
    while (b) {
        struct set_batch *next = b->next;
        size_t i = 0;
        for (; s->ac && i < b->n; i++) {
            const struct set_item *it = &b->items[i];
            const char *argv[5] = {"SET", it->key, it->val, "EX", s->ttl};
            size_t lens[5] = {3, it->klen, it->vlen, 2, strlen(s->ttl)};
            size_t bytes = it->klen + it->vlen;
            if (redisAsyncCommandArgv(s->ac, on_set, (void *)(uintptr_t)bytes, s->ttl[0] ? 5 : 3, argv, lens) !=
                REDIS_OK)
                break;
        }
        for (size_t j = i; j < b->n; j++) { /* not connected: dropped */
            atomic_fetch_sub(&s->set_bytes, b->items[j].klen + b->items[j].vlen);
            atomic_fetch_sub(&s->set_cmds, 1);
            atomic_fetch_add(&s->errors, 1);
        }
        free(b);
        b = next;
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct rcache *s = arg;
    char buf[64];
    while (read(fd, buf, sizeof buf) > 0)
        ;
    pthread_mutex_lock(&s->mu);
    s->wake_pending = 0;
    struct get_req *gq = s->gq_head;
    struct set_batch *sq = s->sq_head;
    s->gq_head = s->gq_tail = NULL;
    s->sq_head = s->sq_tail = NULL;
    int stopping = s->stopping;
    pthread_mutex_unlock(&s->mu);
    send_gets(s, gq);
    send_sets(s, sq);
    if (stopping && !s->stopping_loop) {
        /* Flush what is written, wait a little for the replies owed, then go. */
        s->stopping_loop = 1;
        s->stop_deadline = now_ms() + (s->timeout_ms * 4 < 200    ? 200
                                       : s->timeout_ms * 4 > 2000 ? 2000
                                                                  : s->timeout_ms * 4);
        if (!s->ac)
            event_base_loopbreak(s->base);
        else if (!s->connected)
            drop_context(s);
        else
            redisAsyncDisconnect(s->ac); /* on_disconnect (maybe right now) breaks the loop */
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct rcache *s = arg;
    int64_t now = now_ms();
    if (s->stopping_loop) {
        if (now >= s->stop_deadline) {
            drop_context(s);
            event_base_loopbreak(s->base);
        }
        return;
    }
    /* Overdue lookups: the waiter is told now (it also watches its own deadline); the reply, if it comes, is
     * dropped. */
    for (struct get_req *r = s->fl_head; r && r->deadline_ms <= now; r = r->next) {
        pthread_mutex_lock(&s->mu);
        if (!r->settled) {
            r->settled = 1;
            outcome_locked(s, 0, r->probe, "timeout");
        }
        if (!r->done) {
            r->done = 1;
            r->rc = NLPD_EAGAIN;
            pthread_cond_signal(&r->cond);
        }
        pthread_mutex_unlock(&s->mu);
    }
    if (s->fl_head && now - s->fl_head->sent_ms > s->stall_ms) {
        char why[96];
        snprintf(why, sizeof why, "no reply for %lld ms, reconnecting", (long long)(now - s->fl_head->sent_ms));
        note_down(s, why);
        drop_context(s);
    }
    if (!s->ac && now >= s->reconnect_at)
        start_connect(s);
}

static void *cache_thread(void *arg)
{
    struct rcache *s = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE); /* hiredis writes with write(2): a dead peer must be EPIPE, not a signal */
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    start_connect(s);
    event_base_dispatch(s->base);

    /* Shutting down: nothing owed survives. */
    s->stopping_loop = 1;
    drop_context(s);
    pthread_mutex_lock(&s->mu);
    struct get_req *gq = s->gq_head;
    struct set_batch *sq = s->sq_head;
    s->gq_head = s->gq_tail = NULL;
    s->sq_head = s->sq_tail = NULL;
    pthread_mutex_unlock(&s->mu);
    send_gets(s, gq); /* not connected now: each finishes as a miss */
    send_sets(s, sq);
    return NULL;
}

/* ---- the worker side ---- */

static void wake_locked(struct rcache *s)
{
    if (s->wake_pending)
        return;
    s->wake_pending = 1;
    char b = 1;
    ssize_t w = write(s->wake_fd[1], &b, 1);
    (void)w; /* a full pipe already wakes the thread */
}

static int rc_mget(void *self, const char *const *keys, size_t n, struct nlpd_cache_value *vals)
{
    struct rcache *s = self;
    memset(vals, 0, n * sizeof *vals);
    if (n == 0)
        return 0;
    if (n > MGET_MAX_KEYS)
        return NLPD_ERANGE;

    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    int64_t t0 = (int64_t)until.tv_sec * 1000 + until.tv_nsec / 1000000;

    pthread_mutex_lock(&s->mu);
    int probe = 0;
    if (s->stopping || s->breaker == BR_HALF_OPEN || (s->breaker == BR_OPEN && t0 < s->open_until)) {
        pthread_mutex_unlock(&s->mu);
        return NLPD_EAGAIN;
    }
    if (s->breaker == BR_OPEN) {
        s->breaker = BR_HALF_OPEN;
        probe = 1;
    }
    pthread_mutex_unlock(&s->mu);

    size_t keybytes = 0;
    for (size_t i = 0; i < n; i++)
        keybytes += s->prefix_len + strlen(keys[i]);
    size_t hdr = (sizeof(struct get_req) + 15) & ~(size_t)15;
    size_t sz = hdr + (n + 1) * (sizeof(char *) + sizeof(size_t)) + n * sizeof(struct nlpd_cache_value) + keybytes + 4;
    struct get_req *r = calloc(1, sz);
    if (!r) {
        pthread_mutex_lock(&s->mu);
        if (probe)
            s->breaker = BR_OPEN; /* no probe went: the next call tries */
        pthread_mutex_unlock(&s->mu);
        return NLPD_ENOMEM;
    }
    char *p = (char *)r + hdr;
    r->res = (struct nlpd_cache_value *)p;
    p += n * sizeof(struct nlpd_cache_value);
    r->argv = (const char **)p;
    p += (n + 1) * sizeof(char *);
    r->argvlen = (size_t *)p;
    p += (n + 1) * sizeof(size_t);
    r->argv[0] = "MGET";
    r->argvlen[0] = 4;
    for (size_t i = 0; i < n; i++) {
        size_t kl = strlen(keys[i]);
        memcpy(p, s->prefix, s->prefix_len);
        memcpy(p + s->prefix_len, keys[i], kl);
        r->argv[i + 1] = p;
        r->argvlen[i + 1] = s->prefix_len + kl;
        p += s->prefix_len + kl;
    }
    r->n = n;
    r->refs = 2;
    r->probe = probe;
    r->deadline_ms = t0 + s->timeout_ms;
    pthread_cond_init(&r->cond, &s->cattr);
    until.tv_sec += (time_t)(s->timeout_ms / 1000);
    until.tv_nsec += (long)(s->timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }

    pthread_mutex_lock(&s->mu);
    if (s->gq_tail)
        s->gq_tail->next = r;
    else
        s->gq_head = r;
    s->gq_tail = r;
    wake_locked(s);
    while (!r->done)
        if (pthread_cond_timedwait(&r->cond, &s->mu, &until) == ETIMEDOUT)
            break;
    int rc;
    if (r->done) {
        rc = r->rc;
        if (rc == 0 || rc == NLPD_ENOMEM)
            for (size_t i = 0; i < n; i++) {
                vals[i] = r->res[i];
                r->res[i].data = NULL;
            }
    } else {
        rc = NLPD_EAGAIN;
        if (!r->settled) {
            r->settled = 1;
            outcome_locked(s, 0, r->probe, "timeout");
        }
    }
    r->abandoned = 1;
    struct get_req *dead = unref_locked(r);
    pthread_mutex_unlock(&s->mu);
    if (dead)
        get_req_free(dead);
    return rc;
}

static int rc_mset(void *self, const char *const *keys, const struct nlpd_cache_value *vals, size_t n)
{
    struct rcache *s = self;
    if (n == 0)
        return 0;
    pthread_mutex_lock(&s->mu);
    int closed = s->breaker == BR_CLOSED && !s->stopping;
    pthread_mutex_unlock(&s->mu);
    if (!closed)
        return NLPD_EAGAIN;

    size_t payload = 0;
    for (size_t i = 0; i < n; i++)
        payload += s->prefix_len + strlen(keys[i]) + vals[i].len;
    /* Reserve room in the bounded queue first: a full queue drops the batch. */
    size_t before = atomic_fetch_add(&s->set_bytes, payload);
    size_t cmds = atomic_fetch_add(&s->set_cmds, n);
    if (before + payload > SET_QUEUE_MAX_BYTES || cmds + n > SET_QUEUE_MAX_CMDS) {
        atomic_fetch_sub(&s->set_bytes, payload);
        atomic_fetch_sub(&s->set_cmds, n);
        atomic_fetch_add(&s->errors, n);
        return NLPD_EAGAIN;
    }
    struct set_batch *b = malloc(sizeof *b + n * sizeof(struct set_item) + payload + 1);
    if (!b) {
        atomic_fetch_sub(&s->set_bytes, payload);
        atomic_fetch_sub(&s->set_cmds, n);
        atomic_fetch_add(&s->errors, n);
        return NLPD_ENOMEM;
    }
    b->next = NULL;
    b->n = n;
    b->bytes = payload;
    char *p = (char *)&b->items[n];
    for (size_t i = 0; i < n; i++) {
        size_t kl = strlen(keys[i]);
        struct set_item *it = &b->items[i];
        memcpy(p, s->prefix, s->prefix_len);
        memcpy(p + s->prefix_len, keys[i], kl);
        it->key = p;
        it->klen = s->prefix_len + kl;
        p += it->klen;
        if (vals[i].len)
            memcpy(p, vals[i].data, vals[i].len);
        it->val = p;
        it->vlen = vals[i].len;
        p += vals[i].len;
    }
    pthread_mutex_lock(&s->mu);
    if (s->sq_tail)
        s->sq_tail->next = b;
    else
        s->sq_head = b;
    s->sq_tail = b;
    wake_locked(s);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static void rc_stats(void *self, struct nlpd_cache_stats *st)
{
    struct rcache *s = self;
    pthread_mutex_lock(&s->mu);
    st->breaker_open = s->breaker != BR_CLOSED;
    pthread_mutex_unlock(&s->mu);
    st->errors = atomic_load(&s->errors);
}

/* ---- set-up and tear-down ---- */

static void rc_destroy(struct rcache *s)
{
    if (s->wake_ev)
        event_free(s->wake_ev);
    if (s->tick_ev)
        event_free(s->tick_ev);
    if (s->base)
        event_base_free(s->base);
    for (int i = 0; i < 2; i++)
        if (s->wake_fd[i] >= 0)
            close(s->wake_fd[i]);
    pthread_condattr_destroy(&s->cattr);
    pthread_mutex_destroy(&s->mu);
    free(s->host);
    free(s->unix_path);
    free(s->user);
    free(s->password);
    free(s->prefix);
    free(s->addr);
    free(s);
}

static void rc_free(void *self)
{
    struct rcache *s = self;
    if (!s)
        return;
    if (s->thread_started) {
        pthread_mutex_lock(&s->mu);
        s->stopping = 1;
        wake_locked(s);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
    }
    rc_destroy(s);
}

/* "host:port", "[v6]:port", "host" (port 6379) or "/path/to/socket". */
static int parse_addr(struct rcache *s, const char *a, struct nlpd_error *err)
{
    if (!a || !*a)
        a = "127.0.0.1:6379";
    if (a[0] == '/') {
        s->unix_path = strdup(a);
        return s->unix_path ? 0 : nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    }
    const char *host = a, *port = NULL;
    size_t hlen;
    if (a[0] == '[') {
        const char *close_br = strchr(a, ']');
        if (!close_br || (close_br[1] && close_br[1] != ':'))
            return nlpd_error_set(err, NLPD_EINVAL, 0, "cache.redis \"%s\": expected \"[address]:port\"", a);
        host = a + 1;
        hlen = (size_t)(close_br - host);
        port = close_br[1] ? close_br + 2 : NULL;
    } else {
        const char *colon = strrchr(a, ':');
        if (colon && strchr(a, ':') != colon)
            colon = NULL; /* a bare IPv6 address */
        hlen = colon ? (size_t)(colon - a) : strlen(a);
        port = colon ? colon + 1 : NULL;
    }
    s->port = DEFAULT_PORT;
    if (port) {
        char *end;
        errno = 0;
        long v = strtol(port, &end, 10);
        if (!*port || *end || errno || v < 1 || v > 65535)
            return nlpd_error_set(err, NLPD_EINVAL, 0,
                                  "cache.redis \"%s\": bad port (expected host:port or a "
                                  "unix socket path)",
                                  a);
        s->port = (int)v;
    }
    if (hlen == 0)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "cache.redis \"%s\": no host", a);
    s->host = strndup(host, hlen);
    return s->host ? 0 : nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
}

void *nlpd_redis_cache_new(const struct nlpd_cache_conf *conf, struct nlpd_error *err)
{
    struct rcache *s = calloc(1, sizeof *s);
    if (!s) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        return NULL;
    }
    s->wake_fd[0] = s->wake_fd[1] = -1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_init(&s->cattr);
    pthread_condattr_setclock(&s->cattr, CLOCK_MONOTONIC);
    atomic_init(&s->set_bytes, 0);
    atomic_init(&s->set_cmds, 0);
    atomic_init(&s->errors, 0);
    if (parse_addr(s, conf->redis, err) < 0) {
        rc_destroy(s);
        return NULL;
    }
    s->user = strdup(conf->redis_user ? conf->redis_user : "");
    s->password = strdup(conf->redis_password ? conf->redis_password : "");
    s->prefix = strdup(conf->key_prefix ? conf->key_prefix : "");
    char addr[300];
    if (s->unix_path)
        snprintf(addr, sizeof addr, "%s", s->unix_path);
    else
        snprintf(addr, sizeof addr, strchr(s->host, ':') ? "[%s]:%d" : "%s:%d", s->host, s->port);
    s->addr = strdup(addr);
    if (!s->user || !s->password || !s->prefix || !s->addr) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        rc_destroy(s);
        return NULL;
    }
    if (s->user[0] && !s->password[0]) {
        nlpd_error_set(err, NLPD_EINVAL, 0, "cache.redis_user \"%s\" needs cache.redis_password", s->user);
        rc_destroy(s);
        return NULL;
    }
    s->prefix_len = strlen(s->prefix);
    if (conf->ttl_s > 0)
        snprintf(s->ttl, sizeof s->ttl, "%lld", conf->ttl_s);
    s->timeout_ms = conf->timeout_ms > 0 ? conf->timeout_ms : 20;
    s->backoff_ms = conf->breaker_backoff_ms > 0 ? conf->breaker_backoff_ms : 5000;
    s->breaker_failures = conf->breaker_failures > 0 ? conf->breaker_failures : 5;
    s->stall_ms = s->timeout_ms * 10 > STALL_MIN_MS ? s->timeout_ms * 10 : STALL_MIN_MS;
    s->reconnect_delay = RECONNECT_MIN_MS;

    int64_t tick = s->timeout_ms / 2;
    tick = tick < 5 ? 5 : tick > 50 ? 50 : tick;
    struct timeval tv = {(time_t)(tick / 1000), (suseconds_t)(tick % 1000) * 1000};
    if (pipe2(s->wake_fd, O_NONBLOCK | O_CLOEXEC) < 0 || !(s->base = event_base_new()) ||
        !(s->wake_ev = event_new(s->base, s->wake_fd[0], EV_READ | EV_PERSIST, on_wake, s)) ||
        !(s->tick_ev = event_new(s->base, -1, EV_PERSIST, on_tick, s)) || event_add(s->wake_ev, NULL) < 0 ||
        event_add(s->tick_ev, &tv) < 0) {
        nlpd_error_set(err, NLPD_EIO, 0, "redis cache: cannot set up the event loop: %s", strerror(errno));
        rc_destroy(s);
        return NULL;
    }
    int e = pthread_create(&s->thread, NULL, cache_thread, s);
    if (e) {
        nlpd_error_set(err, NLPD_EIO, 0, "redis cache: cannot start its thread: %s", strerror(e));
        rc_destroy(s);
        return NULL;
    }
    s->thread_started = 1;
    return s;
}

const struct nlpd_cache_backend nlpd_redis_cache = {"redis", rc_mget, rc_mset, rc_stats, rc_free};
