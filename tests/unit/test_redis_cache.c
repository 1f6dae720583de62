/* The Redis cache backend against a real redis-server, started here on a free loopback port (never a fixed
 * one) with no persistence. Skips (one passed check and a `skip:` line) when /usr/bin/redis-server is absent. */
#include "harness.h"

#include "cache.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#define REDIS_SERVER "/usr/bin/redis-server"

static char tmpdir[] = "/tmp/nlpd-redis-test-XXXXXX";
static int debug_ok;  /* the server takes DEBUG */
static int debug_opt; /* Redis 7+: DEBUG needs --enable-debug-command yes (older ones reject the option) */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

struct server {
    pid_t pid;
    int port;         /* 0: unix socket only */
    char sock[128];   /* unix socket path, or "" */
    const char *pass; /* requirepass, or NULL */
};

static redisContext *connect_sync(const struct server *sv)
{
    struct timeval tv = {1, 0};
    redisContext *c =
        sv->sock[0] ? redisConnectUnixWithTimeout(sv->sock, tv) : redisConnectWithTimeout("127.0.0.1", sv->port, tv);
    if (!c)
        return NULL;
    if (c->err) {
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, (struct timeval){5, 0});
    if (sv->pass) {
        redisReply *r = redisCommand(c, "AUTH %s", sv->pass);
        freeReplyObject(r);
    }
    return c;
}

static int server_start(struct server *sv)
{
    char port[16];
    snprintf(port, sizeof port, "%d", sv->port);
    const char *argv[24];
    int n = 0;
    argv[n++] = REDIS_SERVER;
    argv[n++] = "--port";
    argv[n++] = port;
    argv[n++] = "--bind";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--save";
    argv[n++] = "";
    argv[n++] = "--appendonly";
    argv[n++] = "no";
    argv[n++] = "--dir";
    argv[n++] = tmpdir;
    if (debug_opt) {
        argv[n++] = "--enable-debug-command";
        argv[n++] = "yes";
    }
    if (sv->pass) {
        argv[n++] = "--requirepass";
        argv[n++] = sv->pass;
    }
    if (sv->sock[0]) {
        argv[n++] = "--unixsocket";
        argv[n++] = sv->sock;
        argv[n++] = "--unixsocketperm";
        argv[n++] = "700";
    }
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open("/dev/null", O_RDWR);
        if (fd >= 0) {
            dup2(fd, 0);
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(REDIS_SERVER, (char *const *)argv);
        _exit(127);
    }
    sv->pid = pid;
    for (int i = 0; i < 100; i++) { /* up to 5 s for it to answer PING */
        redisContext *c = connect_sync(sv);
        if (c) {
            redisReply *r = redisCommand(c, "PING");
            int ok = r && (r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_STRING);
            freeReplyObject(r);
            redisFree(c);
            if (ok)
                return 0;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            sv->pid = 0;
            return -1;
        }
        sleep_ms(50);
    }
    return -1;
}

static void server_stop(struct server *sv, int sig)
{
    if (sv->pid <= 0)
        return;
    kill(sv->pid, sig);
    waitpid(sv->pid, NULL, 0);
    sv->pid = 0;
}

/* A server on a fresh loopback port (a few tries: another process may take the port first). */
static int server_new(struct server *sv, const char *pass, const char *sock_name)
{
    memset(sv, 0, sizeof *sv);
    sv->pass = pass;
    if (sock_name)
        snprintf(sv->sock, sizeof sv->sock, "%s/%s", tmpdir, sock_name);
    for (int tries = 0; tries < 5; tries++) {
        sv->port = sock_name ? 0 : free_port();
        if (sv->port >= 0 && server_start(sv) == 0)
            return 0;
    }
    return -1;
}

static void conf_init(struct nlpd_cache_conf *c, const struct server *sv, char *addr, size_t cap, const char *prefix)
{
    memset(c, 0, sizeof *c);
    if (sv->sock[0])
        snprintf(addr, cap, "%s", sv->sock);
    else
        snprintf(addr, cap, "127.0.0.1:%d", sv->port);
    c->backend = (char *)"redis";
    c->redis = addr;
    c->redis_user = (char *)"";
    c->redis_password = (char *)(sv->pass ? sv->pass : "");
    c->key_prefix = (char *)prefix;
    c->ttl_s = 3600;
    c->max_entries = 1000;
    c->max_bytes = 1 << 20;
    c->timeout_ms = 200;
    c->breaker_failures = 5;
    c->breaker_backoff_ms = 200;
}

/* Key i's value: binary, with NUL bytes, length varying with i (0 included). */
static size_t make_value(size_t i, unsigned char *out)
{
    size_t len = i % 97;
    for (size_t j = 0; j < len; j++)
        out[j] = (unsigned char)((i * 31 + j * 7) % 5 == 0 ? 0 : (i + j) & 0xff);
    return len;
}

struct kv {
    size_t n;
    char **keys;
    struct nlpd_cache_value *vals;
};

static void kv_make(struct kv *kv, const char *tag, size_t first, size_t n)
{
    kv->n = n;
    kv->keys = calloc(n, sizeof *kv->keys);
    kv->vals = calloc(n, sizeof *kv->vals);
    for (size_t i = 0; i < n; i++) {
        kv->keys[i] = malloc(64);
        snprintf(kv->keys[i], 64, "%s:%zu", tag, first + i);
        kv->vals[i].data = malloc(128);
        kv->vals[i].len = make_value(first + i, kv->vals[i].data);
    }
}

static void kv_free(struct kv *kv)
{
    for (size_t i = 0; i < kv->n; i++) {
        free(kv->keys[i]);
        free(kv->vals[i].data);
    }
    free(kv->keys);
    free(kv->vals);
}

static void vals_free(struct nlpd_cache_value *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].data);
        v[i].data = NULL;
    }
}

/* mget of kv's keys; returns the number of hits whose value is the expected one, -1 when one is wrong. */
static long mget_check(struct nlpd_cache *c, const struct kv *kv, int *rc_out)
{
    struct nlpd_cache_value *got = calloc(kv->n, sizeof *got);
    int rc = nlpd_cache_mget(c, (const char *const *)kv->keys, kv->n, got);
    if (rc_out)
        *rc_out = rc;
    long hits = 0;
    int wrong = 0;
    for (size_t i = 0; i < kv->n; i++) {
        if (!got[i].data)
            continue;
        wrong |= got[i].len != kv->vals[i].len || memcmp(got[i].data, kv->vals[i].data, got[i].len) != 0;
        hits++;
    }
    vals_free(got, kv->n);
    free(got);
    return wrong ? -1 : hits;
}

/* mset is asynchronous: poll until every key hits (or 3 s). */
static long wait_all_hits(struct nlpd_cache *c, const struct kv *kv)
{
    long hits = 0;
    for (int i = 0; i < 300; i++) {
        hits = mget_check(c, kv, NULL);
        if (hits < 0 || (size_t)hits == kv->n)
            break;
        sleep_ms(10);
    }
    return hits;
}

static long long redis_int(redisContext *rc, const char *cmd, const char *arg)
{
    redisReply *r = redisCommand(rc, "%s %s", cmd, arg);
    long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -999;
    freeReplyObject(r);
    return v;
}

/* ---- stderr capture, to count log lines ---- */

static int saved_stderr = -1;
static char capture_path[256];

static void capture_start(void)
{
    snprintf(capture_path, sizeof capture_path, "%s/stderr.log", tmpdir);
    int fd = open(capture_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    saved_stderr = dup(2);
    dup2(fd, 2);
    close(fd);
}

/* Restores stderr, echoes what was captured, returns it (malloc'd). */
static char *capture_end(void)
{
    dup2(saved_stderr, 2);
    close(saved_stderr);
    FILE *f = fopen(capture_path, "r");
    char *buf = calloc(1, 65536);
    size_t n = f ? fread(buf, 1, 65535, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    fputs(buf, stderr);
    return buf;
}

static int count_lines(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* ---- cases ---- */

static struct server main_sv;

static void roundtrip_binary_1000_keys(void)
{
    char addr[256];
    struct nlpd_cache_conf conf;
    conf_init(&conf, &main_sv, addr, sizeof addr, "t1:");
    struct nlpd_error err = {0};
    struct nlpd_cache *c = nlpd_cache_new(&conf, &err);
    CHECK(c && nlpd_cache_enabled(c));
    if (!c)
        return;
    struct kv kv;
    kv_make(&kv, "rt", 0, 1000);
    nlpd_cache_mset(c, (const char *const *)kv.keys, kv.vals, kv.n);
    CHECK(wait_all_hits(c, &kv) == 1000);

    /* Lookup latency: batches of 1 and of 64 keys, sequential. */
    struct nlpd_cache_value got[64];
    for (size_t bs = 1; bs <= 64; bs *= 64) {
        int iters = 2000, bad = 0;
        double t0 = now_s();
        for (int i = 0; i < iters; i++) {
            if (nlpd_cache_mget(c, (const char *const *)kv.keys + (size_t)(i % 900), bs, got) != 0)
                bad++;
            for (size_t j = 0; j < bs; j++)
                bad += got[j].data == NULL;
            vals_free(got, bs);
        }
        double dt = now_s() - t0;
        CHECK(bad == 0);
        printf("latency: mget of %zu key(s): %.1f us per call (%d calls)\n", bs, dt / iters * 1e6, iters);
    }
    struct nlpd_cache_stats st;
    nlpd_cache_get_stats(c, &st);
    CHECK(st.errors == 0 && st.breaker_open == 0 && st.hits >= 1000);
    nlpd_cache_free(c);
    kv_free(&kv);
}

static void misses_and_empty_values(void)
{
    char addr[256];
    struct nlpd_cache_conf conf;
    conf_init(&conf, &main_sv, addr, sizeof addr, "t2:");
    struct nlpd_cache *c = nlpd_cache_new(&conf, NULL);
    CHECK(c != NULL);
    if (!c)
        return;
    struct kv kv;
    kv_make(&kv, "never", 0, 50);
    int rc = -1;
    CHECK(mget_check(c, &kv, &rc) == 0 && rc == 0);
    /* the same keys under another prefix do not leak across */
    struct kv one;
    kv_make(&one, "never", 97, 1); /* length 0 value */
    nlpd_cache_mset(c, (const char *const *)one.keys, one.vals, 1);
    CHECK(wait_all_hits(c, &one) == 1);
    conf.key_prefix = (char *)"t2b:";
    struct nlpd_cache *c2 = nlpd_cache_new(&conf, NULL);
    CHECK(c2 && mget_check(c2, &one, &rc) == 0 && rc == 0);
    nlpd_cache_free(c2);
    struct nlpd_cache_stats st;
    nlpd_cache_get_stats(c, &st);
    CHECK(st.misses >= 50 && st.errors == 0);
    nlpd_cache_free(c);
    kv_free(&kv);
    kv_free(&one);
}

static void ttl_applied(void)
{
    char addr[256];
    struct nlpd_cache_conf conf;
    conf_init(&conf, &main_sv, addr, sizeof addr, "t3:");
    conf.ttl_s = 120;
    struct nlpd_cache *c = nlpd_cache_new(&conf, NULL);
    CHECK(c != NULL);
    if (!c)
        return;
    struct kv kv;
    kv_make(&kv, "ttl", 1, 3);
    nlpd_cache_mset(c, (const char *const *)kv.keys, kv.vals, kv.n);
    CHECK(wait_all_hits(c, &kv) == 3);
    redisContext *rc = connect_sync(&main_sv);
    CHECK(rc != NULL);
    if (rc) {
        long long ttl = redis_int(rc, "TTL", "t3:ttl:1");
        CHECK(ttl > 100 && ttl <= 120);
        CHECK(redis_int(rc, "EXISTS", "ttl:1") == 0); /* stored under the prefix only */
        redisReply *r = redisCommand(rc, "GET t3:ttl:2");
        CHECK(r && r->type == REDIS_REPLY_STRING && r->len == kv.vals[1].len &&
              memcmp(r->str, kv.vals[1].data, r->len) == 0);
        freeReplyObject(r);
        redisFree(rc);
    }
    nlpd_cache_free(c);
    kv_free(&kv);
}

/* cache.redis_hmac_key: values are stored with an HMAC-SHA256 tag over key and value; whatever was written into
 * Redis by someone else (no tag, a tag of another key, a changed byte, another secret) is a miss, counted as
 * rejected, and logged rate-limited (one line for the burst). */
static void hmac_authenticates_values(void)
{
    char addr[256];
    struct nlpd_cache_conf conf;
    conf_init(&conf, &main_sv, addr, sizeof addr, "t9:");
    conf.redis_hmac_key = (char *)"s3cret";
    struct nlpd_error err = {0};
    struct nlpd_cache *c = nlpd_cache_new(&conf, &err);
    redisContext *rc = connect_sync(&main_sv);
    CHECK(c != NULL && rc != NULL);
    if (!c || !rc) {
        nlpd_cache_free(c);
        if (rc)
            redisFree(rc);
        return;
    }
    struct kv kv;
    kv_make(&kv, "mac", 1, 6);
    nlpd_cache_mset(c, (const char *const *)kv.keys, kv.vals, kv.n);
    CHECK(wait_all_hits(c, &kv) == 6); /* the tag is stripped: the caller gets its value back */
    redisReply *r = redisCommand(rc, "GET t9:mac:2");
    CHECK(r && r->type == REDIS_REPLY_STRING && r->len == kv.vals[1].len + 32);
    freeReplyObject(r);
    /* mac:1 unsigned (as an older nlpd wrote it); mac:2 gets mac:3's signed value; mac:4 one flipped byte. */
    freeReplyObject(redisCommand(rc, "SET t9:mac:1 %b", kv.vals[0].data, kv.vals[0].len));
    freeReplyObject(redisCommand(rc, "COPY t9:mac:3 t9:mac:2 REPLACE"));
    r = redisCommand(rc, "GET t9:mac:4");
    if (r && r->type == REDIS_REPLY_STRING && r->len > 0) {
        r->str[0] ^= 1;
        freeReplyObject(redisCommand(rc, "SET t9:mac:4 %b", r->str, r->len));
    }
    freeReplyObject(r);
    struct nlpd_cache_stats st0, st;
    nlpd_cache_get_stats(c, &st0);
    capture_start();
    long hits = mget_check(c, &kv, NULL);
    char *log = capture_end();
    CHECK(hits == 3);
    nlpd_cache_get_stats(c, &st);
    CHECK(st.rejected[NLPD_CACHE_REJECT_UNAUTHENTICATED] == 3 && st.rejected[NLPD_CACHE_REJECT_INVALID] == 0);
    CHECK(st.hits - st0.hits == 3 && st.misses - st0.misses == 3);
    CHECK(count_lines(log, "refused") == 1 && !strstr(log, "s3cret"));
    free(log);
    /* Another secret authenticates nothing of this one's. */
    conf.redis_hmac_key = (char *)"other";
    struct nlpd_cache *c2 = nlpd_cache_new(&conf, &err);
    CHECK(c2 && mget_check(c2, &kv, NULL) == 0);
    nlpd_cache_free(c2);
    /* The key from a file: one that others can read is refused; 0600 works like the inline key. */
    char keyfile[300];
    snprintf(keyfile, sizeof keyfile, "%s/hmac.key", tmpdir);
    FILE *f = fopen(keyfile, "w");
    fputs("s3cret\n", f);
    fclose(f);
    chmod(keyfile, 0644);
    conf.redis_hmac_key = (char *)"";
    conf.redis_hmac_key_file = keyfile;
    memset(&err, 0, sizeof err);
    CHECK(nlpd_cache_new(&conf, &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "readable or writable by others");
    chmod(keyfile, 0600);
    c2 = nlpd_cache_new(&conf, &err);
    CHECK(c2 && mget_check(c2, &kv, NULL) == 3);
    /* A key rotated in the file while the config text stays: a reload keeps the cache but takes the new key. */
    f = fopen(keyfile, "w");
    fputs("rotated\n", f);
    fclose(f);
    struct nlpd_cache *c3 = nlpd_cache_new(&conf, &err);
    CHECK(c3 != NULL);
    if (c2 && c3) {
        nlpd_cache_swap_key(c2, c3);
        CHECK(mget_check(c2, &kv, NULL) == 0);
    }
    nlpd_cache_free(c3);
    nlpd_cache_free(c2);
    conf.redis_hmac_key = (char *)"s3cret";
    CHECK(nlpd_cache_new(&conf, &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "not both");
    redisFree(rc);
    nlpd_cache_free(c);
    kv_free(&kv);
}

struct worker_arg {
    struct nlpd_cache *c;
    int id;
    long wrong, hits, fails;
};

static void *worker(void *p)
{
    struct worker_arg *a = p;
    for (int it = 0; it < 150; it++) {
        struct kv kv;
        char tag[32];
        snprintf(tag, sizeof tag, "conc%d", (a->id + it) % 4); /* threads share keys */
        kv_make(&kv, tag, (size_t)(it % 10) * 16, 16);
        int rc = 0;
        long h = mget_check(a->c, &kv, &rc);
        if (h < 0)
            a->wrong++;
        else
            a->hits += h;
        if (rc != 0)
            a->fails++;
        nlpd_cache_mset(a->c, (const char *const *)kv.keys, kv.vals, kv.n);
        kv_free(&kv);
    }
    return NULL;
}

static void concurrent_4_threads(void)
{
    char addr[256];
    struct nlpd_cache_conf conf;
    conf_init(&conf, &main_sv, addr, sizeof addr, "t4:");
    conf.timeout_ms = 1000; /* sanitizer builds on 2 cores: no false timeouts */
    struct nlpd_cache *c = nlpd_cache_new(&conf, NULL);
    CHECK(c != NULL);
    if (!c)
        return;
    pthread_t th[4];
    struct worker_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct worker_arg){c, i, 0, 0, 0};
        pthread_create(&th[i], NULL, worker, &args[i]);
    }
    long hits = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(args[i].wrong == 0 && args[i].fails == 0);
        hits += args[i].hits;
    }
    CHECK(hits > 0);
    struct kv kv;
    kv_make(&kv, "conc2", 0, 160);
    CHECK(wait_all_hits(c, &kv) == 160);
    kv_free(&kv);
    nlpd_cache_free(c);
}

static void killed_redis_breaker_and_reconnect(void)
{
    struct server sv;
    CHECK(server_new(&sv, NULL, NULL) == 0);
    if (!sv.pid)
        return;
    char addr[256];
    struct nlpd_cache_conf conf;
    conf_init(&conf, &sv, addr, sizeof addr, "t5:");
    conf.timeout_ms = 100;
    conf.breaker_failures = 3;
    conf.breaker_backoff_ms = 300;
    struct nlpd_cache *c = nlpd_cache_new(&conf, NULL);
    CHECK(c != NULL);
    if (!c) {
        server_stop(&sv, SIGTERM);
        return;
    }
    struct kv kv;
    kv_make(&kv, "k", 0, 20);
    nlpd_cache_mset(c, (const char *const *)kv.keys, kv.vals, kv.n);
    CHECK(wait_all_hits(c, &kv) == 20);

    capture_start();
    server_stop(&sv, SIGKILL);
    double worst = 0;
    int failed = 0;
    for (int i = 0; i < 100; i++) { /* ~1 s of traffic on a dead server */
        double t0 = now_s();
        int rc = 0;
        long h = mget_check(c, &kv, &rc);
        double dt = now_s() - t0;
        worst = dt > worst ? dt : worst;
        failed += rc < 0;
        CHECK(h == 0);
        nlpd_cache_mset(c, (const char *const *)kv.keys, kv.vals, kv.n);
        sleep_ms(10);
    }
    struct nlpd_cache_stats st;
    nlpd_cache_get_stats(c, &st);
    int open_during = st.breaker_open;

    CHECK(server_start(&sv) == 0); /* the same port: empty, no persistence */
    double t_up = now_s(), t_hit = -1;
    for (int i = 0; i < 500 && t_hit < 0; i++) { /* up to ~10 s */
        nlpd_cache_mset(c, (const char *const *)kv.keys, kv.vals, kv.n);
        sleep_ms(20);
        if (mget_check(c, &kv, NULL) == 20)
            t_hit = now_s() - t_up;
    }
    nlpd_cache_get_stats(c, &st);
    char *log = capture_end();
    printf("killed: %d of 100 lookups failed, slowest %.1f ms; hits again %.2f s after the restart\n", failed,
           worst * 1e3, t_hit);
    CHECK(failed >= 95);
    CHECK(worst < 0.1 + 0.15); /* the deadline, plus scheduling slack */
    CHECK(open_during == 1);
    CHECK(count_lines(log, "circuit breaker open") == 1);
    CHECK(count_lines(log, "circuit breaker closed") == 1);
    CHECK(t_hit >= 0);
    CHECK(st.breaker_open == 0);
    free(log);
    nlpd_cache_free(c);
    kv_free(&kv);
    server_stop(&sv, SIGTERM);
}

/* A server that accepts but never answers (SIGSTOP): lookups keep their deadline, the breaker opens, the
 * connection owing replies is replaced after its stall limit, and all is well after SIGCONT. */
static void stalled_redis(void)
{
    struct server sv;
    CHECK(server_new(&sv, NULL, NULL) == 0);
    if (!sv.pid)
        return;
    char addr[256];
    struct nlpd_cache_conf conf;
    conf_init(&conf, &sv, addr, sizeof addr, "t10:");
    conf.timeout_ms = 50;
    conf.breaker_failures = 3;
    conf.breaker_backoff_ms = 200;
    struct nlpd_cache *c = nlpd_cache_new(&conf, NULL);
    CHECK(c != NULL);
    if (!c) {
        server_stop(&sv, SIGTERM);
        return;
    }
    struct kv kv;
    kv_make(&kv, "st", 0, 10);
    nlpd_cache_mset(c, (const char *const *)kv.keys, kv.vals, kv.n);
    CHECK(wait_all_hits(c, &kv) == 10);
    capture_start();
    kill(sv.pid, SIGSTOP);
    double worst = 0, t_end = now_s() + 2.6; /* past the 2 s stall limit */
    while (now_s() < t_end) {
        double t0 = now_s();
        CHECK(mget_check(c, &kv, NULL) == 0);
        double dt = now_s() - t0;
        worst = dt > worst ? dt : worst;
        nlpd_cache_mset(c, (const char *const *)kv.keys, kv.vals, kv.n);
        sleep_ms(20);
    }
    kill(sv.pid, SIGCONT);
    long h = 0;
    for (int i = 0; i < 300 && h != 10; i++) {
        nlpd_cache_mset(c, (const char *const *)kv.keys, kv.vals, kv.n);
        sleep_ms(20);
        h = mget_check(c, &kv, NULL);
    }
    char *log = capture_end();
    printf("stalled: slowest lookup %.1f ms (deadline 50 ms)\n", worst * 1e3);
    CHECK(worst < 0.05 + 0.15);
    CHECK(h == 10);
    CHECK(count_lines(log, "no reply for") == 1);
    CHECK(count_lines(log, "circuit breaker open") == 1);
    free(log);
    nlpd_cache_free(c);
    kv_free(&kv);
    server_stop(&sv, SIGTERM);
}

static void down_at_start_then_up(void)
{
    struct server sv = {0};
    sv.port = free_port();
    char addr[256];
    struct nlpd_cache_conf conf;
    conf_init(&conf, &sv, addr, sizeof addr, "t6:");
    conf.timeout_ms = 50;
    conf.breaker_failures = 2;
    conf.breaker_backoff_ms = 100;
    capture_start();
    struct nlpd_error err = {0};
    struct nlpd_cache *c = nlpd_cache_new(&conf, &err);
    if (!c) {
        free(capture_end());
        CHECK(c != NULL);
        return;
    }
    struct kv kv;
    kv_make(&kv, "d", 0, 5);
    int rc = 0;
    double t0 = now_s();
    CHECK(mget_check(c, &kv, &rc) == 0);
    CHECK(now_s() - t0 < 0.2);
    int started = server_start(&sv) == 0;
    long h = 0;
    for (int i = 0; started && i < 300 && h != 5; i++) {
        nlpd_cache_mset(c, (const char *const *)kv.keys, kv.vals, kv.n);
        sleep_ms(20);
        h = mget_check(c, &kv, NULL);
    }
    free(capture_end());
    CHECK(started && h == 5);
    nlpd_cache_free(c);
    kv_free(&kv);
    server_stop(&sv, SIGTERM);
}

static void *debug_sleep(void *p)
{
    redisContext *rc = p;
    redisReply *r = redisCommand(rc, "DEBUG SLEEP 1");
    freeReplyObject(r);
    return NULL;
}

static void slow_redis_deadline(void)
{
    if (!debug_ok) {
        printf("skip: slow_redis_deadline: this redis-server has no DEBUG command\n");
        return;
    }
    char addr[256];
    struct nlpd_cache_conf conf;
    conf_init(&conf, &main_sv, addr, sizeof addr, "t7:");
    conf.timeout_ms = 100;
    conf.breaker_failures = 100;
    struct nlpd_cache *c = nlpd_cache_new(&conf, NULL);
    CHECK(c != NULL);
    redisContext *side = connect_sync(&main_sv);
    CHECK(side != NULL);
    if (!c || !side) {
        nlpd_cache_free(c);
        if (side)
            redisFree(side);
        return;
    }
    struct kv kv;
    kv_make(&kv, "s", 0, 8);
    nlpd_cache_mset(c, (const char *const *)kv.keys, kv.vals, kv.n);
    CHECK(wait_all_hits(c, &kv) == 8);
    pthread_t th;
    pthread_create(&th, NULL, debug_sleep, side);
    sleep_ms(100); /* the server is asleep now */
    double worst = 0;
    int failed = 0;
    for (int i = 0; i < 3; i++) {
        int rc = 0;
        double t0 = now_s();
        CHECK(mget_check(c, &kv, &rc) == 0);
        double dt = now_s() - t0;
        worst = dt > worst ? dt : worst;
        failed += rc < 0;
    }
    pthread_join(th, NULL);
    redisFree(side);
    printf("slow: 3 lookups during DEBUG SLEEP 1, slowest %.1f ms (deadline 100 ms)\n", worst * 1e3);
    CHECK(failed == 3);
    CHECK(worst < 0.25);
    /* the late replies were dropped; lookups work again */
    CHECK(wait_all_hits(c, &kv) == 8);
    nlpd_cache_free(c);
    kv_free(&kv);
}

static void passwords_and_acl_user(void)
{
    struct server sv;
    CHECK(server_new(&sv, "s3cret", NULL) == 0);
    if (!sv.pid)
        return;
    redisContext *admin = connect_sync(&sv);
    CHECK(admin != NULL);
    if (admin) {
        redisReply *r = redisCommand(admin, "ACL SETUSER nlpd on >pw2 ~t8* +@all");
        CHECK(r && r->type == REDIS_REPLY_STATUS);
        freeReplyObject(r);
        redisFree(admin);
    }
    char addr[256];
    struct nlpd_cache_conf conf;
    conf_init(&conf, &sv, addr, sizeof addr, "t8:");
    struct kv kv;
    kv_make(&kv, "p", 0, 10);

    /* password only */
    struct nlpd_cache *c = nlpd_cache_new(&conf, NULL);
    CHECK(c != NULL);
    if (c) {
        nlpd_cache_mset(c, (const char *const *)kv.keys, kv.vals, kv.n);
        CHECK(wait_all_hits(c, &kv) == 10);
        nlpd_cache_free(c);
    }
    /* ACL user + password */
    conf.redis_user = (char *)"nlpd";
    conf.redis_password = (char *)"pw2";
    c = nlpd_cache_new(&conf, NULL);
    CHECK(c != NULL);
    if (c) {
        CHECK(wait_all_hits(c, &kv) == 10);
        nlpd_cache_free(c);
    }
    /* wrong password: errors counted, no hits, no crash */
    conf.redis_user = (char *)"";
    conf.redis_password = (char *)"wrong";
    conf.timeout_ms = 100;
    capture_start();
    c = nlpd_cache_new(&conf, NULL);
    CHECK(c != NULL);
    if (c) {
        int failed = 0;
        for (int i = 0; i < 20; i++) {
            int rc = 0;
            CHECK(mget_check(c, &kv, &rc) == 0);
            failed += rc < 0;
            nlpd_cache_mset(c, (const char *const *)kv.keys, kv.vals, kv.n);
            sleep_ms(5);
        }
        struct nlpd_cache_stats st;
        nlpd_cache_get_stats(c, &st);
        CHECK(failed == 20 && st.errors >= 20 && st.hits == 0 && st.breaker_open == 1);
        nlpd_cache_free(c);
    }
    char *log = capture_end();
    CHECK(count_lines(log, "AUTH failed: ") >= 1);
    CHECK(count_lines(log, "lookups are misses until it is back") == 1); /* logged once, not per retry */
    free(log);
    /* no credentials against a password-protected server: also errors */
    conf.redis_password = (char *)"";
    c = nlpd_cache_new(&conf, NULL);
    capture_start();
    if (c) {
        int rc = 0;
        CHECK(mget_check(c, &kv, &rc) == 0 && rc < 0);
        nlpd_cache_free(c);
    }
    free(capture_end());
    kv_free(&kv);
    server_stop(&sv, SIGTERM);
}

static void unix_socket(void)
{
    struct server sv;
    CHECK(server_new(&sv, NULL, "redis.sock") == 0);
    if (!sv.pid)
        return;
    char addr[256];
    struct nlpd_cache_conf conf;
    conf_init(&conf, &sv, addr, sizeof addr, "t9:");
    CHECK(addr[0] == '/');
    struct nlpd_cache *c = nlpd_cache_new(&conf, NULL);
    CHECK(c != NULL);
    if (c) {
        struct kv kv;
        kv_make(&kv, "u", 0, 100);
        nlpd_cache_mset(c, (const char *const *)kv.keys, kv.vals, kv.n);
        CHECK(wait_all_hits(c, &kv) == 100);
        kv_free(&kv);
        nlpd_cache_free(c);
    }
    server_stop(&sv, SIGTERM);
}

static void bad_addresses(void)
{
    struct nlpd_cache_conf conf;
    char addr[64];
    conf_init(&conf, &main_sv, addr, sizeof addr, "x:");
    const char *bad[] = {"localhost:", "localhost:0", "localhost:65536", "host:12ab", ":6379", "[::1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        conf.redis = (char *)bad[i];
        struct nlpd_error err = {0};
        void *b = nlpd_redis_cache_new(&conf, &err);
        CHECK(b == NULL && err.code == NLPD_EINVAL);
        if (b)
            nlpd_redis_cache.free(b);
    }
    conf.redis = (char *)"[::1]:1"; /* well-formed; nothing listens: created, lookups miss */
    void *b = nlpd_redis_cache_new(&conf, NULL);
    CHECK(b != NULL);
    if (b) {
        capture_start();
        const char *k = "a";
        struct nlpd_cache_value v;
        CHECK(nlpd_redis_cache.mget(b, &k, 1, &v) < 0 && v.data == NULL);
        free(capture_end());
        nlpd_redis_cache.free(b);
    }
}

static void skipped(void)
{
    printf("skip: test_redis_cache: %s is not installed\n", REDIS_SERVER);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (access(REDIS_SERVER, X_OK) != 0) {
        RUN(skipped);
        return TEST_REPORT();
    }
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    FILE *v = popen(REDIS_SERVER " --version", "r");
    char ver[256] = "";
    if (v) {
        if (!fgets(ver, sizeof ver, v))
            ver[0] = '\0';
        pclose(v);
    }
    const char *vp = strstr(ver, "v=");
    debug_ok = vp != NULL;
    debug_opt = vp && atoi(vp + 2) >= 7;
    if (server_new(&main_sv, NULL, NULL) < 0) {
        fprintf(stderr, "cannot start %s\n", REDIS_SERVER);
        return 1;
    }
    RUN(roundtrip_binary_1000_keys);
    RUN(misses_and_empty_values);
    RUN(ttl_applied);
    RUN(hmac_authenticates_values);
    RUN(concurrent_4_threads);
    RUN(slow_redis_deadline);
    RUN(killed_redis_breaker_and_reconnect);
    RUN(stalled_redis);
    RUN(down_at_start_then_up);
    RUN(passwords_and_acl_user);
    RUN(unix_socket);
    RUN(bad_addresses);
    server_stop(&main_sv, SIGTERM);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", tmpdir);
    return TEST_REPORT();
}
