/* The result cache: stage results keyed by a hash of the stage's cache-key material, shared by the
 * worker threads. Backends: "memory" (a bounded in-process LRU), "redis" (redis_cache.c), "none".
 * Lookups never fail the stream: a backend problem is a miss, counted as an error. */
#ifndef NLPD_CACHE_H
#define NLPD_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "nlpd_error.h"

struct nlpd_cache_conf {
    char *backend;
    char *redis;      /* "host:port" or a unix socket path */
    char *redis_user; /* ACL user ("" = none) */
    char *redis_password;
    char *redis_password_file; /* NULL = none; read into redis_password at load (conf_env.c) */
    char *key_prefix;
    long long ttl_s;
    long long max_entries;
    long long max_bytes;
    long long timeout_ms;         /* deadline of one lookup */
    long long breaker_failures;   /* consecutive failures that open the breaker */
    long long breaker_backoff_ms; /* how long it stays open before a probe */
    char *redis_hmac_key;         /* "" = values are not authenticated */
    char *redis_hmac_key_file;    /* NULL = none; a file holding the key */
};

struct nlpd_cache_value {
    unsigned char *data; /* malloc'd; owned by whoever holds the struct */
    size_t len;
};

struct nlpd_cache_stats {
    uint64_t hits, misses, errors, sets, evictions;
    uint64_t lookups;
    double lookup_seconds; /* total time spent in lookups */
    int breaker_open;
    uint64_t entries, bytes; /* memory backend */
    uint64_t rejected[2];    /* values refused, by enum nlpd_cache_reject */
};

/* Why a cached value was refused (then it is a miss: the result is computed again and stored over it). */
enum nlpd_cache_reject {
    NLPD_CACHE_REJECT_INVALID,         /* not a valid encoding of the stage's results */
    NLPD_CACHE_REJECT_UNAUTHENTICATED, /* an HMAC key is set and the value's tag is missing or wrong */
};
extern const char *const nlpd_cache_reject_names[2];

/* A backend: what redis_cache.c and the memory LRU implement. */
struct nlpd_cache_backend {
    const char *name;
    /* Fills vals[i] (data NULL on a miss). Returns 0, or a negative code when the backend failed (all misses). */
    int (*mget)(void *self, const char *const *keys, size_t n, struct nlpd_cache_value *vals);
    /* Stores n values (copies them); failures are reported but never block the caller for long. */
    int (*mset)(void *self, const char *const *keys, const struct nlpd_cache_value *vals, size_t n);
    void (*stats)(void *self, struct nlpd_cache_stats *st);
    void (*free)(void *self);
};

struct nlpd_cache;

/* NULL with err when the backend cannot be set up; a "none" backend gives a cache that always misses. */
struct nlpd_cache *nlpd_cache_new(const struct nlpd_cache_conf *conf, struct nlpd_error *err);
void nlpd_cache_free(struct nlpd_cache *c);
/* Exchanges the HMAC keys of two caches: a cache kept across a reload takes the key just read from
 * redis_hmac_key_file, which may have been rotated while the config text stayed the same. Neither may be in use. */
void nlpd_cache_swap_key(struct nlpd_cache *a, struct nlpd_cache *b);
int nlpd_cache_enabled(const struct nlpd_cache *c);
/* With an HMAC key, values whose tag does not verify come back as misses (and are counted as rejected). */
int nlpd_cache_mget(struct nlpd_cache *c, const char *const *keys, size_t n, struct nlpd_cache_value *vals);
/* Counts a value that mget returned but the caller could not use (why), as a miss; logged rate-limited. */
void nlpd_cache_reject(struct nlpd_cache *c, enum nlpd_cache_reject why, const char *key);
void nlpd_cache_mset(struct nlpd_cache *c, const char *const *keys, const struct nlpd_cache_value *vals, size_t n);
void nlpd_cache_get_stats(struct nlpd_cache *c, struct nlpd_cache_stats *st);

/* The in-process LRU, bounded by entries and bytes (keys + values). */
void *nlpd_memory_cache_new(size_t max_entries, size_t max_bytes);
extern const struct nlpd_cache_backend nlpd_memory_cache;

/* The Redis backend (redis_cache.c). */
void *nlpd_redis_cache_new(const struct nlpd_cache_conf *conf, struct nlpd_error *err);
extern const struct nlpd_cache_backend nlpd_redis_cache;

#endif
