/* Checks across keys of a loaded configuration that no single key's table entry can make: feedback loops between
 * output and input topics, the metrics address, a routing stage without a target; and, for `nlpd check` only,
 * whether the services the config names answer now (warnings). */
#ifndef NLPD_CONF_CHECK_H
#define NLPD_CONF_CHECK_H

#include <stddef.h>

#include "config.h"

/* Errors (each with FILE:LINE) added to diag; returns their count. */
int nlpd_conf_check(const struct nlpd_config *c, struct nlpd_diag *diag);
/* metrics.listen: "" (off), "host:port" or "[v6]:port". "9477" and ":9477" are refused: nlpd does not guess
 * between this machine and every interface. 0, or NLPD_EINVAL with why filled. */
int nlpd_conf_check_listen(const char *listen, char *why, size_t cap);
/* Warnings (messages start with "warning:") for services that do not answer: a Redis cache. Never an error: the
 * daemon starts without them. */
void nlpd_conf_check_reach(const struct nlpd_config *c, struct nlpd_diag *diag);

#endif
