/* Cross-key checks of a loaded configuration (see conf_check.h): what would otherwise fail or misbehave only once
 * records flow. Each problem names the FILE:LINE of the key to change. */
#include "conf_check.h"

#include <hiredis.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "conf_map.h"
#include "nlpd_error.h"

static void add_at(struct nlpd_diag *diag, const struct nlpd_config *c, const char *key, const char *fallback,
                   const char *msg)
{
    const config_setting_t *s = config_lookup(&c->cfg, key);
    if (!s && fallback)
        s = config_lookup(&c->cfg, fallback);
    nlpd_diag_add(diag, nlpd_conf_file(s, c->path), s ? config_setting_source_line(s) : 0, "%s", msg);
}

/* 1 when topic is consumed by the input list (a name, or a ^regex as librdkafka reads it: POSIX extended). */
static int consumed(const struct nlpd_kafka_conf *k, const char *topic, const char **by)
{
    for (size_t i = 0; i < k->input_topics.n; i++) {
        const char *in = k->input_topics.items[i];
        int hit = 0;
        if (in[0] == '^') {
            regex_t re;
            if (regcomp(&re, in, REG_EXTENDED | REG_NOSUB) == 0) {
                hit = regexec(&re, topic, 0, NULL, 0) == 0;
                regfree(&re);
            }
        } else {
            hit = strcmp(in, topic) == 0;
        }
        if (hit) {
            *by = in;
            return 1;
        }
    }
    return 0;
}

static int check_loops(const struct nlpd_config *c, struct nlpd_diag *diag)
{
    const struct nlpd_kafka_conf *k = &c->kafka;
    const struct {
        const char *key, *topic;
    } outs[] = {{"kafka.output_topic", k->output_topic},
                {"kafka.dlq_topic", k->dlq_topic},
                {"kafka.flagged_topic", k->flagged_topic}};
    int errors = 0;
    for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++) {
        const char *by;
        if (!outs[i].topic || !consumed(k, outs[i].topic, &by))
            continue;
        char what[1024];
        snprintf(what, sizeof what,
                 "%s \"%s\" is also an input topic (input_topics has \"%s\"): a feedback loop, nlpd would consume "
                 "its own output",
                 outs[i].key, outs[i].topic, by);
        add_at(diag, c, outs[i].key, "kafka", what);
        errors++;
    }
    return errors;
}

int nlpd_conf_check_listen(const char *listen, char *why, size_t cap)
{
    if (!*listen)
        return 0;
    const char *colon = strrchr(listen, ':');
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : 0;
    if (!colon) {
        snprintf(why, cap,
                 "\"%s\" is not host:port: write \"127.0.0.1:%s\" (this machine only) or \"0.0.0.0:%s\" "
                 "(every interface)",
                 listen, listen, listen);
        return NLPD_EINVAL;
    }
    if (colon == listen) {
        snprintf(why, cap,
                 "\"%s\" has no host: write \"127.0.0.1%s\" (this machine only) or \"0.0.0.0%s\" (every "
                 "interface); nlpd does not guess which",
                 listen, listen, listen);
        return NLPD_EINVAL;
    }
    if (!colon[1] || *end || port < 1 || port > 65535) {
        snprintf(why, cap, "\"%s\": the port must be a number in 1 .. 65535", listen);
        return NLPD_EINVAL;
    }
    if (strchr(listen, ':') != colon && !(listen[0] == '[' && colon[-1] == ']')) {
        snprintf(why, cap, "\"%s\": write an IPv6 address in brackets, e.g. \"[::1]:9464\"", listen);
        return NLPD_EINVAL;
    }
    return 0;
}

/* A moderation stage with action = "route" sends flagged records to kafka.flagged_topic: without it they would
 * only be logged at run time. */
static int check_route(const struct nlpd_config *c, struct nlpd_diag *diag)
{
    if (!c->pipeline || !c->has_kafka || c->kafka.flagged_topic)
        return 0;
    int errors = 0, n = config_setting_length(c->pipeline);
    for (int i = 0; i < n; i++) {
        const config_setting_t *st = config_setting_get_elem(c->pipeline, (unsigned)i);
        const config_setting_t *a = config_setting_get_member(st, "action");
        const char *v = a && config_setting_type(a) == CONFIG_TYPE_STRING ? config_setting_get_string(a) : NULL;
        if (v && strcmp(v, "route") == 0) {
            nlpd_diag_add(diag, nlpd_conf_file(a, c->path), config_setting_source_line(a),
                          "pipeline[%d]: action = \"route\" needs a target: set kafka.flagged_topic", i);
            errors++;
        }
    }
    return errors;
}

int nlpd_conf_check(const struct nlpd_config *c, struct nlpd_diag *diag)
{
    int errors = 0;
    char why[600], msg[700];
    if (c->has_kafka)
        errors += check_loops(c, diag);
    if (c->metrics.listen && nlpd_conf_check_listen(c->metrics.listen, why, sizeof why) < 0) {
        snprintf(msg, sizeof msg, "metrics.listen %s", why);
        add_at(diag, c, "metrics.listen", "metrics", msg);
        errors++;
    }
    errors += check_route(c, diag);
    return errors;
}

void nlpd_conf_check_reach(const struct nlpd_config *c, struct nlpd_diag *diag)
{
    if (strcmp(c->cache.backend, "redis") != 0)
        return;
    const char *addr = c->cache.redis;
    struct timeval tv = {1, 0};
    redisContext *r;
    const char *colon = strrchr(addr, ':');
    if (addr[0] == '/' || !colon) {
        r = redisConnectUnixWithTimeout(addr, tv);
    } else {
        char host[256];
        snprintf(host, sizeof host, "%.*s", (int)(colon - addr), addr);
        r = redisConnectWithTimeout(host, atoi(colon + 1), tv);
    }
    if (!r || r->err) {
        char msg[700];
        snprintf(msg, sizeof msg,
                 "warning: cache.redis %s does not answer now (%s): nlpd would start and run uncached until it does",
                 addr, r ? r->errstr : "out of memory");
        add_at(diag, c, "cache.redis", "cache", msg);
    }
    redisFree(r);
}
