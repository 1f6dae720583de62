/* `when` conditions, for pipeline stages and output routes: comparisons of record fields combined with
 * and / or / not and parentheses, e.g.
 *   lang.code != 'en'      lang.code in ('de', 'fr')      lang.score >= 0.5 and sentiment.label == 'negative'
 *   moderation.flagged or (moderation.categories.hate and not source.topic == 'trusted')
 *   'PER' in entities.groups      entities.count > 2      translation
 * The fields are those of the result table (results.c) plus source.topic. A comparison of a field that is not set
 * (its stage did not run) is false. The older forms (`&&`, `in [...]`) keep working. Parsed once at start. */
#ifndef NLPD_WHEN_H
#define NLPD_WHEN_H

#include <stddef.h>

#include "nlpd_stage.h"

struct nlpd_when;

/* Returns NULL and writes a reason (with the column) into why on a syntax error. */
struct nlpd_when *nlpd_when_parse(const char *text, char *why, size_t why_len);
int nlpd_when_eval(const struct nlpd_when *w, const struct nlpd_record *rec);
void nlpd_when_free(struct nlpd_when *w);

#endif
