/* Applies a conf_map table (nlpd_stage.h) to a libconfig group: type checks, ranges, choices,
 * defaults, unknown-key detection, model files that must exist. Shared by the daemon's own
 * sections and by every stage, so all of them validate and document the same way. */
#ifndef NLPD_CONF_MAP_H
#define NLPD_CONF_MAP_H

#include <libconfig.h>
#include <stdio.h>

#include "diag.h"
#include "nlpd_stage.h"

/* Fills base (at each entry's offset) from group (may be NULL: all defaults). Keys of group that are
 * neither in map nor in extra_keys (NULL-terminated, may be NULL) are errors. Returns the number of
 * errors added to diag. section names the group in messages. */
int nlpd_conf_apply(const struct nlpd_conf_entry *map, const config_setting_t *group, void *base,
                    const char *const *extra_keys, const char *section, const char *file, struct nlpd_diag *diag);
/* Frees what nlpd_conf_apply allocated in base. */
void nlpd_conf_release(const struct nlpd_conf_entry *map, void *base);
/* 1 when entry e holds the same value in a and b (two structs filled from the same table). */
int nlpd_conf_equal(const struct nlpd_conf_entry *e, const void *a, const void *b);
/* Writes the table as documentation (key, type, default, doc), for `nlpd config-doc`. */
void nlpd_conf_doc(const struct nlpd_conf_entry *map, const char *section, FILE *out);

/* The candidate closest to an unknown key (at most 2 edits, and about a third of the key), or NULL: the
 * "did you mean" of unknown-key messages. */
const char *nlpd_conf_suggest(const char *key, const char *const *candidates, size_t n);

/* File of a setting, for messages: the main config's path, or an @include'd file's path made
 * openable from the working directory. The result is valid until the next call in this thread. */
const char *nlpd_conf_file(const config_setting_t *s, const char *fallback);
/* An @include path (relative to the main config's folder) as a path from the working directory. */
const char *nlpd_conf_path_of(const char *file, const char *main_path);

#endif
