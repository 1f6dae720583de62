/* output.routes (see routes.h): parsing with FILE:LINE errors, the deprecated moderation action "route", and
 * matching a record. */
#include "routes.h"

#include <stdlib.h>
#include <string.h>

#include "conf_map.h"
#include "log.h"

#define WHY_MAX 2048

static int add_route(struct nlpd_routes *rs, const char *name, const char *topic, const char *when_text,
                     struct nlpd_when *when, int copy)
{
    struct nlpd_route *r = realloc(rs->r, (rs->n + 1) * sizeof *r);
    if (!r)
        return NLPD_ENOMEM;
    rs->r = r;
    r = &rs->r[rs->n];
    r->name = strdup(name);
    r->topic = strdup(topic);
    r->when_text = strdup(when_text);
    r->when = when;
    r->copy = copy;
    rs->n++;
    if (!r->name || !r->topic || !r->when_text)
        return NLPD_ENOMEM;
    return 0;
}

/* A string member of a route: NULL (with an error unless optional) when absent or not a string. */
static const char *member_string(const config_setting_t *g, const char *key, int optional, const char *path, size_t i,
                                 struct nlpd_diag *diag, int *errors)
{
    const config_setting_t *s = config_setting_get_member(g, key);
    if (!s) {
        if (!optional) {
            nlpd_diag_add(diag, nlpd_conf_file(g, path), config_setting_source_line(g),
                          "output.routes[%zu]: missing '%s'", i, key);
            (*errors)++;
        }
        return NULL;
    }
    if (config_setting_type(s) != CONFIG_TYPE_STRING || !*config_setting_get_string(s)) {
        nlpd_diag_add(diag, nlpd_conf_file(s, path), config_setting_source_line(s),
                      "output.routes[%zu].%s must be a non-empty string", i, key);
        (*errors)++;
        return NULL;
    }
    return config_setting_get_string(s);
}

static int load_list(struct nlpd_routes *rs, const config_setting_t *routes, const char *path, struct nlpd_diag *diag)
{
    int errors = 0;
    if (config_setting_type(routes) != CONFIG_TYPE_LIST) {
        nlpd_diag_add(diag, nlpd_conf_file(routes, path), config_setting_source_line(routes),
                      "output.routes must be a list: ( { when = \"...\"; topic = \"...\"; }, ... )");
        return 1;
    }
    for (unsigned i = 0; i < (unsigned)config_setting_length(routes); i++) {
        const config_setting_t *g = config_setting_get_elem(routes, i);
        if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
            nlpd_diag_add(diag, nlpd_conf_file(g, path), config_setting_source_line(g),
                          "output.routes[%u] must be a group { when = \"...\"; topic = \"...\"; }", i);
            errors++;
            continue;
        }
        for (int k = 0; k < config_setting_length(g); k++) {
            const config_setting_t *m = config_setting_get_elem(g, (unsigned)k);
            const char *key = config_setting_name(m);
            if (strcmp(key, "when") && strcmp(key, "topic") && strcmp(key, "copy") && strcmp(key, "name")) {
                nlpd_diag_add(diag, nlpd_conf_file(m, path), config_setting_source_line(m),
                              "unknown key '%s' in output.routes[%u] (known: when, topic, copy, name)", key, i);
                errors++;
            }
        }
        const char *when_text = member_string(g, "when", 0, path, i, diag, &errors);
        const char *topic = member_string(g, "topic", 0, path, i, diag, &errors);
        const char *name = member_string(g, "name", 1, path, i, diag, &errors);
        int copy = 0;
        const config_setting_t *c = config_setting_get_member(g, "copy");
        if (c && config_setting_type(c) != CONFIG_TYPE_BOOL) {
            nlpd_diag_add(diag, nlpd_conf_file(c, path), config_setting_source_line(c),
                          "output.routes[%u].copy must be true or false", i);
            errors++;
        } else if (c) {
            copy = config_setting_get_bool(c);
        }
        struct nlpd_when *w = NULL;
        if (when_text) {
            char why[WHY_MAX];
            const config_setting_t *ws = config_setting_get_member(g, "when");
            if (!(w = nlpd_when_parse(when_text, why, sizeof why))) {
                nlpd_diag_add(diag, nlpd_conf_file(ws, path), config_setting_source_line(ws),
                              "output.routes[%u].when: %s", i, why);
                errors++;
            }
        }
        if (!when_text || !topic || !w) {
            nlpd_when_free(w);
            continue;
        }
        if (add_route(rs, name ? name : topic, topic, when_text, w, copy) < 0) {
            nlpd_diag_add(diag, path, 0, "output.routes: out of memory");
            return errors + 1;
        }
    }
    return errors;
}

/* The stage group of a moderation stage with action = "route", or NULL. */
static const config_setting_t *legacy_stage(const config_setting_t *pipeline)
{
    for (int i = 0; pipeline && i < config_setting_length(pipeline); i++) {
        const config_setting_t *g = config_setting_get_elem(pipeline, (unsigned)i);
        const char *stage, *action;
        if (config_setting_type(g) == CONFIG_TYPE_GROUP && config_setting_lookup_string(g, "stage", &stage) &&
            strcmp(stage, "moderation") == 0 && config_setting_lookup_string(g, "action", &action) &&
            strcmp(action, "route") == 0)
            return g;
    }
    return NULL;
}

int nlpd_routes_load(struct nlpd_routes *rs, const config_setting_t *routes, const config_setting_t *pipeline,
                     const char *flagged_topic, const char *path, struct nlpd_diag *diag)
{
    memset(rs, 0, sizeof *rs);
    const config_setting_t *legacy = legacy_stage(pipeline);
    if (legacy) {
        const char *file = nlpd_conf_file(legacy, path);
        int line = config_setting_source_line(legacy);
        if (flagged_topic) {
            nlpd_log(NLPD_LOG_WARNING, "config",
                     "%s:%d: moderation action = \"route\" with kafka.flagged_topic is deprecated: it is the route "
                     "{ when = \"moderation.flagged\"; topic = \"%s\"; } (put that in output.routes instead)",
                     file, line, flagged_topic);
            char why[WHY_MAX];
            struct nlpd_when *w = nlpd_when_parse("moderation.flagged", why, sizeof why);
            if (!w || add_route(rs, "moderation.flagged", flagged_topic, "moderation.flagged", w, 0) < 0) {
                nlpd_when_free(w);
                nlpd_diag_add(diag, path, 0, "output.routes: out of memory");
                return 1;
            }
        } else {
            nlpd_log(NLPD_LOG_WARNING, "config",
                     "%s:%d: moderation action = \"route\" is deprecated and kafka.flagged_topic is not set: "
                     "flagged records go to output_topic (use output.routes)",
                     file, line);
        }
    }
    return routes ? load_list(rs, routes, path, diag) : 0;
}

const struct nlpd_route *nlpd_routes_match(const struct nlpd_routes *rs, const struct nlpd_record *rec)
{
    for (size_t i = 0; i < rs->n; i++)
        if (nlpd_when_eval(rs->r[i].when, rec))
            return &rs->r[i];
    return NULL;
}

void nlpd_routes_free(struct nlpd_routes *rs)
{
    for (size_t i = 0; i < rs->n; i++) {
        free(rs->r[i].name);
        free(rs->r[i].topic);
        free(rs->r[i].when_text);
        nlpd_when_free(rs->r[i].when);
    }
    free(rs->r);
    memset(rs, 0, sizeof *rs);
}
