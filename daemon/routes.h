/* Content routing (output.routes): which topic each enriched record goes to, chosen by `when` conditions parsed
 * once at config load. The first matching route wins; a record no route matches goes to kafka.output_topic; a
 * route with copy = true sends the record to its topic and to output_topic. */
#ifndef NLPD_ROUTES_H
#define NLPD_ROUTES_H

#include <libconfig.h>
#include <stddef.h>

#include "diag.h"
#include "nlpd_stage.h"
#include "when.h"

struct nlpd_route {
    char *name; /* the `route` label of nlpd_routed_records_total (default: the topic) */
    char *topic;
    char *when_text;
    struct nlpd_when *when;
    int copy; /* also to output_topic */
};

struct nlpd_routes {
    size_t n;
    struct nlpd_route *r;
};

/* Reads output.routes (routes may be NULL: none) with FILE:LINE errors in diag, then the deprecated moderation
 * action "route" (a route `moderation.flagged` to flagged_topic, ahead of the others, with one warning line).
 * pipeline is the config's stage list (may be NULL). Returns the number of errors added. */
int nlpd_routes_load(struct nlpd_routes *rs, const config_setting_t *routes, const config_setting_t *pipeline,
                     const char *flagged_topic, const char *path, struct nlpd_diag *diag);
/* The first route whose condition holds for rec, or NULL. */
const struct nlpd_route *nlpd_routes_match(const struct nlpd_routes *rs, const struct nlpd_record *rec);
void nlpd_routes_free(struct nlpd_routes *rs);

#endif
