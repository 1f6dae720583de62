/* `nlpd demo` on the embedded broker (see demo.c). */
#ifndef NLPD_DEMO_H
#define NLPD_DEMO_H

#include "config.h"
#include "pipeline.h"

/* Runs the daemon on cfg (whose kafka section names the embedded broker), produces each line of
 * records to the input topic, prints what comes back, then a summary on stderr. Returns the exit status. */
int nlpd_demo_kafka(const struct nlpd_config *cfg, struct nlpd_pipeline *p, const char *records);

#endif
