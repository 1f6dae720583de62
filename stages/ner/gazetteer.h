/* A name list for the ner stage: a TSV of names (the "name" column, else the first) in a hash set, and a
 * scan for whole-word, case-sensitive, longest-first matches in a text. Read-only after loading. */
#ifndef NLPD_NER_GAZETTEER_H
#define NLPD_NER_GAZETTEER_H

#include <stddef.h>
#include <stdint.h>

#include "nlpd_error.h"

#define NLPD_GAZ_NAME_MAX 128 /* longer names (bytes) are skipped */

struct nlpd_gazetteer;

/* Loads a TSV file; NULL with err on failure. */
struct nlpd_gazetteer *nlpd_gazetteer_load(const char *path, struct nlpd_error *err);
/* The same from memory (len bytes); name is for messages. */
struct nlpd_gazetteer *nlpd_gazetteer_load_mem(const char *data, size_t len, const char *name, struct nlpd_error *err);
void nlpd_gazetteer_free(struct nlpd_gazetteer *g);
size_t nlpd_gazetteer_size(const struct nlpd_gazetteer *g);
int nlpd_gazetteer_contains(const struct nlpd_gazetteer *g, const char *s, size_t len);

/* Calls fn for every match, left to right, the longest at each word start, matches not overlapping:
 * bytes [b0, b1) and code points [c0, c1) of text. fn returning nonzero stops the scan with that value. */
typedef int (*nlpd_gazetteer_fn)(void *ctx, size_t b0, size_t b1, int32_t c0, int32_t c1);
int nlpd_gazetteer_scan(const struct nlpd_gazetteer *g, const char *text, size_t len, nlpd_gazetteer_fn fn, void *ctx);

#endif
