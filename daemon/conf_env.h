/* ${VAR} and ${VAR:-default} in configuration strings, and secrets kept in files (*_file keys). */
#ifndef NLPD_CONF_ENV_H
#define NLPD_CONF_ENV_H

#include <libconfig.h>
#include <stddef.h>

#include "diag.h"

/* Replaces, in every string of the tree under root, ${VAR} by the environment variable VAR and ${VAR:-default} by
 * VAR, or default when VAR is unset or empty; "$${" stands for a literal "${", any other "$" is kept. An unset VAR
 * without a default is an error at the value's FILE:LINE. Returns the number of errors added to diag. */
int nlpd_conf_expand_env(config_setting_t *root, const char *file, struct nlpd_diag *diag);
/* Reads a secret file for key (a name for messages): not readable or writable by others, at most 4096 bytes, not
 * empty, trailing line ends dropped. 0 with *out malloc'ed, or NLPD_EINVAL with why filled. */
int nlpd_conf_read_secret(const char *key, const char *path, char **out, char *why, size_t why_cap);

#endif
