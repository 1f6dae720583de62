/* Small helpers every layer shares: a capped whole-file reader and the loader of a model folder's JSON files.
 * common/ is the lowest layer (it includes nothing of nlpd but nlpd_error.h), so daemon, stages, models and
 * kernels may all use it. */
#ifndef NLPD_UTIL_H
#define NLPD_UTIL_H

#include <jansson.h>
#include <stddef.h>

#include "nlpd_error.h"

/* Reads path whole into *out (malloc'd, NUL-terminated, the caller frees) and its length into *len. A missing
 * file is NLPD_ENOTFOUND, one over max bytes NLPD_ERANGE, other failures NLPD_EIO or NLPD_ENOMEM; on error *out
 * is NULL and err says which file. */
int nlpd_util_read_file(const char *path, size_t max, char **out, size_t *len, struct nlpd_error *err);

/* The largest model-folder JSON file read (tokenizer.json of large vocabularies is tens of MB). */
#define NLPD_UTIL_JSON_MAX ((size_t)512 << 20)

enum {
    NLPD_UTIL_JSON_OPTIONAL = 1, /* an absent file is no error: 0 with *out NULL */
};

/* Loads dir/name, whose root must be a JSON object, into *out (the caller json_decref's it). Returns 0 or a
 * negative NLPD_E* with err set (a missing file is NLPD_ENOTFOUND unless NLPD_UTIL_JSON_OPTIONAL). */
int nlpd_util_load_json(const char *dir, const char *name, unsigned flags, json_t **out, struct nlpd_error *err);

#endif
