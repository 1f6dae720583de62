/* The Redis cache backend (hiredis). Placeholder until the backend lands: configuring it is an error. */
#include "cache.h"

void *nlpd_redis_cache_new(const struct nlpd_cache_conf *conf, struct nlpd_error *err)
{
    (void)conf;
    nlpd_error_set(err, NLPD_EINVAL, 0, "cache.backend \"redis\" is not available in this build yet");
    return NULL;
}

static int no_mget(void *self, const char *const *keys, size_t n, struct nlpd_cache_value *vals)
{
    (void)self, (void)keys, (void)n, (void)vals;
    return NLPD_EINVAL;
}

static int no_mset(void *self, const char *const *keys, const struct nlpd_cache_value *vals, size_t n)
{
    (void)self, (void)keys, (void)vals, (void)n;
    return NLPD_EINVAL;
}

static void no_free(void *self)
{
    (void)self;
}

const struct nlpd_cache_backend nlpd_redis_cache = {"redis", no_mget, no_mset, NULL, no_free};
