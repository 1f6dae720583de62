/* `when` conditions of pipeline stages: comparisons of result fields joined by &&, e.g.
 *   lang.code != 'en'      lang.code in ['de', 'fr']      lang.score >= 0.5 && sentiment.label == 'negative'
 * Fields: lang.code, lang.score, sentiment.label, sentiment.score, moderation.flagged (== true/false).
 * A field that an earlier stage did not set makes the condition false. */
#ifndef NLPD_WHEN_H
#define NLPD_WHEN_H

#include <stddef.h>

#include "nlpd_stage.h"

struct nlpd_when;

/* Returns NULL and writes a reason into why on a syntax error. */
struct nlpd_when *nlpd_when_parse(const char *text, char *why, size_t why_len);
int nlpd_when_eval(const struct nlpd_when *w, const struct nlpd_record *rec);
void nlpd_when_free(struct nlpd_when *w);

#endif
