/* The result cache front (see cache.h) and its in-process LRU backend. The front counts hits, misses,
 * errors and lookup time for every backend, and with an HMAC key signs the values it stores and checks those it
 * reads; the LRU is one mutex-guarded hash table plus a recency list. */
#include "cache.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define TAG_LEN               32 /* HMAC-SHA256 */
#define REJECT_LOG_INTERVAL_S 10.0

const char *const nlpd_cache_reject_names[2] = {"invalid", "unauthenticated"};

struct nlpd_cache {
    const struct nlpd_cache_backend *be; /* NULL: backend "none" */
    void *self;
    unsigned char *mac_key; /* NULL: values are stored as they are */
    size_t mac_key_len;
    pthread_mutex_t lock; /* guards the counters and the reject log's state */
    struct nlpd_cache_stats st;
    double reject_logged_at;
    uint64_t reject_unlogged;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The HMAC key from the config or its file (which others must not be able to read). Never logged. */
static int load_mac_key(struct nlpd_cache *c, const struct nlpd_cache_conf *conf, struct nlpd_error *err)
{
    const char *file = conf->redis_hmac_key_file && *conf->redis_hmac_key_file ? conf->redis_hmac_key_file : NULL;
    const char *inline_key = conf->redis_hmac_key ? conf->redis_hmac_key : "";
    if (file && *inline_key)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "set cache.redis_hmac_key or cache.redis_hmac_key_file, not both");
    if (!file) {
        if (!*inline_key)
            return 0;
        c->mac_key_len = strlen(inline_key);
        c->mac_key = (unsigned char *)strdup(inline_key);
        return c->mac_key ? 0 : nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    }
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        int en = errno;
        if (fd >= 0)
            close(fd);
        return nlpd_error_set(err, NLPD_EINVAL, 0, "cache.redis_hmac_key_file %s: %s", file, strerror(en));
    }
    if (st.st_mode & (S_IROTH | S_IWOTH)) {
        close(fd);
        return nlpd_error_set(err, NLPD_EINVAL, 0,
                              "cache.redis_hmac_key_file %s is readable or writable by others (chmod o-rw %s)", file,
                              file);
    }
    unsigned char buf[4097];
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    if (n < 0 || n == (ssize_t)sizeof buf)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "cache.redis_hmac_key_file %s: %s", file,
                              n < 0 ? "cannot read it" : "longer than 4096 bytes");
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--; /* the line end an editor or echo adds is not part of the key */
    if (n == 0)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "cache.redis_hmac_key_file %s is empty", file);
    c->mac_key = malloc((size_t)n);
    if (!c->mac_key)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    memcpy(c->mac_key, buf, (size_t)n);
    c->mac_key_len = (size_t)n;
    OPENSSL_cleanse(buf, sizeof buf);
    return 0;
}

/* tag = HMAC-SHA256(key, cache key, NUL, value): a value is only valid under the key it was stored for. */
static int mac(const struct nlpd_cache *c, const char *key, const unsigned char *v, size_t len,
               unsigned char tag[TAG_LEN])
{
    size_t klen = strlen(key) + 1;
    unsigned char *msg = malloc(klen + len);
    unsigned int tlen = 0;
    if (!msg)
        return -1;
    memcpy(msg, key, klen);
    memcpy(msg + klen, v, len);
    int ok =
        HMAC(EVP_sha256(), c->mac_key, (int)c->mac_key_len, msg, klen + len, tag, &tlen) != NULL && tlen == TAG_LEN;
    free(msg);
    return ok ? 0 : -1;
}

struct nlpd_cache *nlpd_cache_new(const struct nlpd_cache_conf *conf, struct nlpd_error *err)
{
    struct nlpd_cache *c = calloc(1, sizeof *c);
    if (!c) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&c->lock, NULL);
    if (strcmp(conf->backend, "none") != 0 && load_mac_key(c, conf, err) < 0) {
        nlpd_cache_free(c);
        return NULL;
    }
    if (strcmp(conf->backend, "memory") == 0) {
        c->be = &nlpd_memory_cache;
        c->self = nlpd_memory_cache_new((size_t)conf->max_entries, (size_t)conf->max_bytes);
        if (!c->self)
            nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    } else if (strcmp(conf->backend, "redis") == 0) {
        c->be = &nlpd_redis_cache;
        c->self = nlpd_redis_cache_new(conf, err);
    } else {
        return c; /* "none" */
    }
    if (!c->self) {
        c->be = NULL;
        nlpd_cache_free(c);
        return NULL;
    }
    return c;
}

void nlpd_cache_swap_key(struct nlpd_cache *a, struct nlpd_cache *b)
{
    unsigned char *k = a->mac_key;
    size_t len = a->mac_key_len;
    a->mac_key = b->mac_key;
    a->mac_key_len = b->mac_key_len;
    b->mac_key = k;
    b->mac_key_len = len;
}

void nlpd_cache_free(struct nlpd_cache *c)
{
    if (!c)
        return;
    if (c->be)
        c->be->free(c->self);
    if (c->mac_key)
        OPENSSL_cleanse(c->mac_key, c->mac_key_len);
    free(c->mac_key);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* counted_hit: mget already counted the value as a hit; it becomes a miss. */
static void reject(struct nlpd_cache *c, enum nlpd_cache_reject why, const char *key, int counted_hit)
{
    uint64_t n = 0;
    pthread_mutex_lock(&c->lock);
    c->st.rejected[why]++;
    if (counted_hit && c->st.hits) {
        c->st.hits--;
        c->st.misses++;
    }
    c->reject_unlogged++;
    double now = now_s();
    if (c->reject_logged_at == 0 || now - c->reject_logged_at >= REJECT_LOG_INTERVAL_S) {
        n = c->reject_unlogged;
        c->reject_unlogged = 0;
        c->reject_logged_at = now;
    }
    pthread_mutex_unlock(&c->lock);
    if (n)
        nlpd_log(NLPD_LOG_WARNING, "cache",
                 "refused %llu cached value(s) since the last message (this one %s, key %.200s): computed again; "
                 "see nlpd_cache_rejected_total",
                 (unsigned long long)n, nlpd_cache_reject_names[why], key);
}

void nlpd_cache_reject(struct nlpd_cache *c, enum nlpd_cache_reject why, const char *key)
{
    if (c)
        reject(c, why, key, 1);
}

int nlpd_cache_enabled(const struct nlpd_cache *c)
{
    return c && c->be;
}

int nlpd_cache_mget(struct nlpd_cache *c, const char *const *keys, size_t n, struct nlpd_cache_value *vals)
{
    memset(vals, 0, n * sizeof *vals);
    if (!nlpd_cache_enabled(c) || n == 0)
        return 0;
    double t0 = now_s();
    int rc = c->be->mget(c->self, keys, n, vals);
    double dt = now_s() - t0;
    size_t hits = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char tag[TAG_LEN];
        if (vals[i].data && c->mac_key &&
            (vals[i].len < TAG_LEN || mac(c, keys[i], vals[i].data, vals[i].len - TAG_LEN, tag) < 0 ||
             CRYPTO_memcmp(tag, vals[i].data + vals[i].len - TAG_LEN, TAG_LEN) != 0)) {
            free(vals[i].data);
            vals[i].data = NULL;
            vals[i].len = 0;
            reject(c, NLPD_CACHE_REJECT_UNAUTHENTICATED, keys[i], 0);
        } else if (vals[i].data && c->mac_key) {
            vals[i].len -= TAG_LEN;
        }
        hits += vals[i].data != NULL;
    }
    pthread_mutex_lock(&c->lock);
    c->st.lookups++;
    c->st.lookup_seconds += dt;
    c->st.hits += hits;
    c->st.misses += n - hits;
    if (rc < 0)
        c->st.errors++;
    pthread_mutex_unlock(&c->lock);
    return rc;
}

void nlpd_cache_mset(struct nlpd_cache *c, const char *const *keys, const struct nlpd_cache_value *vals, size_t n)
{
    if (!nlpd_cache_enabled(c) || n == 0)
        return;
    struct nlpd_cache_value *signed_vals = NULL;
    if (c->mac_key) {
        signed_vals = calloc(n, sizeof *signed_vals);
        for (size_t i = 0; signed_vals && i < n; i++) {
            unsigned char *v = malloc(vals[i].len + TAG_LEN);
            if (!v || mac(c, keys[i], vals[i].data, vals[i].len, v + vals[i].len) < 0) {
                free(v);
                for (size_t j = 0; j < i; j++)
                    free(signed_vals[j].data);
                free(signed_vals);
                signed_vals = NULL;
                break;
            }
            memcpy(v, vals[i].data, vals[i].len);
            signed_vals[i].data = v;
            signed_vals[i].len = vals[i].len + TAG_LEN;
        }
        if (!signed_vals) { /* never store an unsigned value under a key */
            pthread_mutex_lock(&c->lock);
            c->st.errors++;
            pthread_mutex_unlock(&c->lock);
            return;
        }
        vals = signed_vals;
    }
    int rc = c->be->mset(c->self, keys, vals, n);
    for (size_t i = 0; signed_vals && i < n; i++)
        free(signed_vals[i].data);
    free(signed_vals);
    pthread_mutex_lock(&c->lock);
    if (rc < 0)
        c->st.errors++;
    else
        c->st.sets += n;
    pthread_mutex_unlock(&c->lock);
}

void nlpd_cache_get_stats(struct nlpd_cache *c, struct nlpd_cache_stats *st)
{
    memset(st, 0, sizeof *st);
    if (!c)
        return;
    struct nlpd_cache_stats b = {0};
    if (c->be && c->be->stats)
        c->be->stats(c->self, &b);
    pthread_mutex_lock(&c->lock);
    *st = c->st;
    pthread_mutex_unlock(&c->lock);
    st->errors += b.errors; /* e.g. stores the backend dropped */
    st->breaker_open = b.breaker_open;
    st->entries = b.entries;
    st->bytes = b.bytes;
    st->evictions = b.evictions;
}

/* ---- the in-process LRU ---- */

struct entry {
    char *key;
    struct nlpd_cache_value v;
    size_t bytes;
    struct entry *hnext;       /* hash chain */
    struct entry *prev, *next; /* recency list: head = most recent */
};

struct lru {
    pthread_mutex_t lock;
    struct entry **table;
    size_t nbuckets, n, bytes, max_entries, max_bytes;
    uint64_t evictions;
    struct entry *head, *tail;
};

static uint64_t hash_key(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

void *nlpd_memory_cache_new(size_t max_entries, size_t max_bytes)
{
    struct lru *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->nbuckets = 1024;
    while (l->nbuckets < max_entries && l->nbuckets < (1u << 24))
        l->nbuckets *= 2;
    l->table = calloc(l->nbuckets, sizeof *l->table);
    if (!l->table) {
        free(l);
        return NULL;
    }
    l->max_entries = max_entries ? max_entries : 1;
    l->max_bytes = max_bytes ? max_bytes : 1;
    pthread_mutex_init(&l->lock, NULL);
    return l;
}

static void unlink_entry(struct lru *l, struct entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        l->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        l->tail = e->prev;
    e->prev = e->next = NULL;
}

static void push_front(struct lru *l, struct entry *e)
{
    e->next = l->head;
    e->prev = NULL;
    if (l->head)
        l->head->prev = e;
    l->head = e;
    if (!l->tail)
        l->tail = e;
}

static struct entry **find_slot(struct lru *l, const char *key)
{
    struct entry **p = &l->table[hash_key(key) & (l->nbuckets - 1)];
    while (*p && strcmp((*p)->key, key) != 0)
        p = &(*p)->hnext;
    return p;
}

static void remove_entry(struct lru *l, struct entry *e)
{
    struct entry **p = find_slot(l, e->key);
    *p = e->hnext;
    unlink_entry(l, e);
    l->n--;
    l->bytes -= e->bytes;
    free(e->key);
    free(e->v.data);
    free(e);
}

static int lru_mget(void *self, const char *const *keys, size_t n, struct nlpd_cache_value *vals)
{
    struct lru *l = self;
    int rc = 0;
    pthread_mutex_lock(&l->lock);
    for (size_t i = 0; i < n; i++) {
        struct entry *e = *find_slot(l, keys[i]);
        if (!e)
            continue;
        unlink_entry(l, e);
        push_front(l, e);
        vals[i].data = malloc(e->v.len ? e->v.len : 1);
        if (!vals[i].data) {
            rc = NLPD_ENOMEM;
            continue;
        }
        memcpy(vals[i].data, e->v.data, e->v.len);
        vals[i].len = e->v.len;
    }
    pthread_mutex_unlock(&l->lock);
    return rc;
}

static int lru_mset(void *self, const char *const *keys, const struct nlpd_cache_value *vals, size_t n)
{
    struct lru *l = self;
    int rc = 0;
    pthread_mutex_lock(&l->lock);
    for (size_t i = 0; i < n; i++) {
        size_t klen = strlen(keys[i]);
        size_t bytes = klen + 1 + vals[i].len + sizeof(struct entry);
        struct entry *old = *find_slot(l, keys[i]);
        if (old)
            remove_entry(l, old); /* overwrite: e.g. a value that failed to decode */
        if (bytes > l->max_bytes)
            continue; /* never fits */
        while (l->tail && (l->n + 1 > l->max_entries || l->bytes + bytes > l->max_bytes)) {
            remove_entry(l, l->tail);
            l->evictions++;
        }
        struct entry *e = calloc(1, sizeof *e);
        if (!e || !(e->key = strdup(keys[i])) || !(e->v.data = malloc(vals[i].len ? vals[i].len : 1))) {
            if (e)
                free(e->key);
            free(e);
            rc = NLPD_ENOMEM;
            continue;
        }
        memcpy(e->v.data, vals[i].data, vals[i].len);
        e->v.len = vals[i].len;
        e->bytes = bytes;
        struct entry **slot = find_slot(l, keys[i]);
        *slot = e;
        push_front(l, e);
        l->n++;
        l->bytes += bytes;
    }
    pthread_mutex_unlock(&l->lock);
    return rc;
}

static void lru_stats(void *self, struct nlpd_cache_stats *st)
{
    struct lru *l = self;
    pthread_mutex_lock(&l->lock);
    st->entries = l->n;
    st->bytes = l->bytes;
    st->evictions = l->evictions;
    pthread_mutex_unlock(&l->lock);
}

static void lru_free(void *self)
{
    struct lru *l = self;
    while (l->head)
        remove_entry(l, l->head);
    free(l->table);
    pthread_mutex_destroy(&l->lock);
    free(l);
}

const struct nlpd_cache_backend nlpd_memory_cache = {"memory", lru_mget, lru_mset, lru_stats, lru_free};
